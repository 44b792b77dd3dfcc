"""The OTLP sink: metrics through a real vmagent into a real Prometheus, logs and spans into a real
OTLP receiver (oteltap), and OTLP/gRPC into a test-owned STAND-IN receiver
(``tests/otlp_grpc_standin.py``: no real gRPC OTLP receiver runs on these machines, and neither
vmagent nor oteltap shows resource attributes of logs and spans, or request headers).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

import mlobs
from mlobs import config, safety
from mlobs.export import sinks
from mlobs.export.base import Batch, ExportResult
from mlobs.export.memory import InMemoryExporter
from mlobs.export.otlp import (
    WRITES_REJECTED,
    OtlpExporter,
    from_config,
    signal_endpoints,
)
from mlobs.export.otlp_logs import severity_number
from mlobs.export.otlp_metrics import EPOCH_METRIC, STEP_METRIC, metric_name, metric_unit
from mlobs.export.shipper import EXPORT_FAILURES
from mlobs.record.types import Kind
from mlobs.spool.store import HEARTBEAT, RUN_START, RunInfo, SpoolReader, spool_files

from .backends import OtelTapReceiver, PrometheusServer, VmagentServer
from .otlp_grpc_standin import OtlpStandin, Received, attributes
from .spool_util import TS, make_record

SECOND = 1_000_000_000
RUN = RunInfo(
    "r1",
    "resnet run",
    "running",
    TS - 5_000_000_000,
    resource={"experiment": "exp", "rank": 2, "model_name": "resnet50", "host": "h", "pid": 7},
    tags={"team": "vision"},
)
# vmagent sends its blocks over concurrent connections, so Prometheus may get a later block of a
# series before an earlier one: let it take samples out of order, as a receiver behind vmagent must.
OUT_OF_ORDER = {"storage": {"tsdb": {"out_of_order_time_window": "1h"}}}
TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
PARENT = "00f067aa0ba902b7"


class FakeExporter:
    """An SDK exporter that answers with the given results in turn (then success) and keeps what
    it was handed: for the exporter's own logic, apart from any receiver."""

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.calls: list[Any] = []

    def export(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(data)
        return self.results.pop(0) if self.results else MetricExportResult.SUCCESS

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        pass


def _points(data: Any) -> dict[str, list[Any]]:
    """metric name -> data points, from an SDK ``MetricsData``."""
    out: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


# -- configuration (no server) -------------------------------------------------------------------


def test_general_endpoint_gets_signal_paths_for_http_but_not_for_grpc() -> None:
    http = config.resolve({"otlp_endpoint": "http://collector:4318/"})
    assert signal_endpoints(http) == {
        "metrics": ("http/protobuf", "http://collector:4318/v1/metrics"),
        "traces": ("http/protobuf", "http://collector:4318/v1/traces"),
        "logs": ("http/protobuf", "http://collector:4318/v1/logs"),
    }
    grpc = config.resolve({"otlp_endpoint": "http://collector:4317", "otlp_protocol": "grpc"})
    assert set(signal_endpoints(grpc).values()) == {("grpc", "http://collector:4317")}


def test_per_signal_variables_are_used_as_they_are_and_only_known_signals_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://vm:8429/opentelemetry/m")
    cfg = config.resolve()
    assert sinks.otlp_enabled(cfg)
    assert signal_endpoints(cfg) == {"metrics": ("http/protobuf", "http://vm:8429/opentelemetry/m")}
    exporter = from_config(cfg)
    assert exporter.metrics is not None and exporter.traces is None and exporter.logs is None
    exporter.shutdown()

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")  # not spoken: warned
    endpoints = signal_endpoints(config.resolve())
    assert endpoints["metrics"] == ("http/protobuf", "http://vm:8429/opentelemetry/m")
    assert endpoints["logs"] == ("grpc", "http://collector:4318")
    assert endpoints["traces"] == ("http/protobuf", "http://collector:4318/v1/traces")
    # an argument beats the per-signal protocol variable
    forced = config.resolve({"otlp_protocol": "http/protobuf"})
    assert signal_endpoints(forced)["logs"] == ("http/protobuf", "http://collector:4318/v1/logs")


def test_the_registry_builds_the_sink_from_a_per_signal_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://127.0.0.1:9/v1/logs")
    built = sinks.build_sinks(config.resolve())
    assert [type(e) for e in built] == [OtlpExporter]
    otlp = built[0]
    assert isinstance(otlp, OtlpExporter) and otlp.logs is not None and otlp.metrics is None
    otlp.shutdown()


def test_names_units_and_severities() -> None:
    assert metric_name("val/loss") == "val/loss"
    assert metric_name("train.acc-top5") == "train.acc-top5"
    assert metric_name("val loss (%)") == "val_loss____"
    assert metric_name("1st") == "metric_1st"
    assert metric_unit("epoch_duration_seconds") == "s"
    assert metric_unit("gpu_memory_used_bytes") == "By"
    assert metric_unit("loss") == ""
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    assert [severity_number(level) for level in levels] == [5, 9, 13, 17, 21]
    assert severity_number(25) == 12 and severity_number(None) == 0


# -- conversion and delivery logic (SDK exporters stand in for receivers) ----------------------


def test_points_keep_their_own_timestamps_and_step_and_epoch_are_gauges() -> None:
    metrics = FakeExporter()
    exporter = OtlpExporter(metrics=metrics)
    split = {"split": "val"}
    records = [
        make_record(1, Kind.GAUGE, "val/loss", 0.5, ts=TS, step=10, epoch=0, attrs=split),
        make_record(2, Kind.GAUGE, "val/acc", 0.7, ts=TS, step=10, epoch=0, attrs=split),
        make_record(
            3, Kind.GAUGE, "val/loss", 0.4, ts=TS + 1_000_001, step=20, epoch=1, attrs=split
        ),
        make_record(
            4, Kind.GAUGE, "epoch_duration_seconds", 12.5, ts=TS + 2_000_003, step=20, epoch=1
        ),
        make_record(5, Kind.EVENT, HEARTBEAT, (TS + 3) / 1e9, ts=TS + 3_000_000),
        make_record(6, Kind.GAUGE, "val/loss", 0.3, ts=TS + SECOND, step=30, epoch=1, attrs=split),
        make_record(
            7, Kind.GAUGE, "val/loss", 0.2, ts=TS + SECOND + 1, step=31, epoch=1, attrs=split
        ),
    ]
    assert exporter.export(Batch(records, {"r1": RUN})) is ExportResult.SUCCESS
    (data,) = metrics.calls
    points = _points(data)
    loss = points["val/loss"]
    assert [(p.time_unix_nano, p.value) for p in loss] == [
        (TS, 0.5),
        (TS + 1_000_001, 0.4),
        (TS + SECOND, 0.3),
        (TS + SECOND + 1, 0.2),
    ]
    assert dict(loss[0].attributes) == {"split": "val", "rank": 2}
    # a step point at a change, at most once a second; an epoch point at every change
    assert [(p.time_unix_nano, p.value) for p in points[STEP_METRIC]] == [
        (TS, 10),
        (TS + SECOND, 30),
    ]
    assert [p.value for p in points[EPOCH_METRIC]] == [0, 1]
    assert dict(points[STEP_METRIC][0].attributes) == {"rank": 2}
    assert points["mlobs.run.last_progress"][0].value == pytest.approx(TS / 1e9)
    units = {m.name: m.unit for m in data.resource_metrics[0].scope_metrics[0].metrics}
    assert units["epoch_duration_seconds"] == "s" and units["val/loss"] == ""
    resource = dict(data.resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "mlobs"
    assert resource["mlobs.run.id"] == resource["service.instance.id"] == "r1"
    assert resource["mlobs.run.name"] == "resnet run"
    assert resource["mlobs.model.name"] == "resnet50"
    assert resource["host.name"] == "h" and resource["process.pid"] == 7
    assert resource["mlobs.tag.team"] == "vision"
    assert "mlobs.rank" not in resource and "rank" not in resource


def test_step_and_epoch_points_go_on_from_the_last_acknowledged_batch() -> None:
    metrics = FakeExporter(MetricExportResult.FAILURE)
    exporter = OtlpExporter(metrics=metrics)
    ms = 1_000_000
    first = Batch(
        [
            make_record(1, Kind.GAUGE, "loss", 1.0, ts=TS, step=1, epoch=0),
            # a new epoch within the same millisecond: Prometheus would refuse a second value
            make_record(2, Kind.GAUGE, "epoch_duration_seconds", 9.0, ts=TS + 1, step=1, epoch=1),
        ],
        {"r1": RUN},
    )
    assert exporter.export(first) is ExportResult.FAILURE
    assert exporter.export(first) is ExportResult.SUCCESS
    failed, sent = (_points(call) for call in metrics.calls)
    for points in (failed, sent):  # not acknowledged: the same points again
        assert [(p.time_unix_nano, p.value) for p in points[EPOCH_METRIC]] == [(TS, 0)]
        assert [(p.time_unix_nano, p.value) for p in points[STEP_METRIC]] == [(TS, 1)]
    second = Batch(
        [
            make_record(3, Kind.GAUGE, "loss", 0.9, ts=TS + ms, step=2, epoch=1),
            make_record(4, Kind.GAUGE, "loss", 0.8, ts=TS + 2 * ms, step=3, epoch=1),
        ],
        {"r1": RUN},
    )
    assert exporter.export(second) is ExportResult.SUCCESS
    points = _points(metrics.calls[-1])
    assert [(p.time_unix_nano, p.value) for p in points[EPOCH_METRIC]] == [(TS + ms, 1)]
    assert STEP_METRIC not in points  # the last step point is less than a second old


def test_service_name_and_resource_attributes_from_the_environment_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "trainer")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
    metrics = FakeExporter()
    OtlpExporter(metrics=metrics).export(Batch([make_record(1, Kind.GAUGE, "x", 1.0)], {"r1": RUN}))
    resource = dict(metrics.calls[0].resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "trainer"
    assert resource["deployment.environment"] == "ci"
    assert resource["mlobs.run.id"] == "r1"


def test_counters_and_histograms_are_cumulative_and_move_only_on_acknowledgement() -> None:
    metrics = FakeExporter(MetricExportResult.FAILURE)
    exporter = OtlpExporter(metrics=metrics)
    batch = Batch(
        [
            make_record(1, Kind.COUNTER, "samples_total", 5.0, ts=TS),
            make_record(2, Kind.COUNTER, "samples_total", 3.0, ts=TS + 10),
            make_record(3, Kind.HISTOGRAM, "latency_seconds", 0.02, ts=TS + 20),
            make_record(4, Kind.HISTOGRAM, "latency_seconds", 3.0, ts=TS + 30),
        ],
        {"r1": RUN},
    )
    assert exporter.export(batch) is ExportResult.FAILURE
    assert exporter.export(batch) is ExportResult.SUCCESS
    first, again = (_points(call) for call in metrics.calls)
    for points in (first, again):  # the same batch offered again: the same points
        (total,) = points["samples_total"]
        assert (total.value, total.time_unix_nano, total.start_time_unix_nano) == (
            8.0,
            TS + 10,
            RUN.start_ns,
        )
        (hist,) = points["latency_seconds"]
        assert (hist.count, hist.sum, hist.min, hist.max) == (2, 3.02, 0.02, 3.0)
        assert sum(hist.bucket_counts) == 2 and hist.explicit_bounds[0] == 0.005
    later = Batch([make_record(5, Kind.COUNTER, "samples_total", 2.0, ts=TS + 40)], {"r1": RUN})
    assert exporter.export(later) is ExportResult.SUCCESS
    assert [p.value for p in _points(metrics.calls[-1])["samples_total"]] == [10.0]


def test_a_signal_already_delivered_is_not_sent_again_when_another_failed() -> None:
    metrics = FakeExporter()
    traces = FakeExporter(SpanExportResult.SUCCESS)
    logs = FakeExporter(LogRecordExportResult.FAILURE, LogRecordExportResult.SUCCESS)
    exporter = OtlpExporter(metrics=metrics, traces=traces, logs=logs)
    span = {"trace_id": TRACE, "span_id": SPAN, "status": "ok", "span_kind": "step", "rank": 0}
    records = [
        make_record(1, Kind.GAUGE, "loss", 1.0),
        make_record(2, Kind.SPAN, "fwd", 0.25, attrs=span),
        make_record(3, Kind.LOG, "user", 20.0, attrs={"message": "hi", "level": "INFO"}),
    ]
    assert exporter.export(Batch(records, {"r1": RUN}, "a.db")) is ExportResult.FAILURE
    grown = [*records, make_record(4, Kind.GAUGE, "loss", 0.9, ts=TS + 1)]
    assert exporter.export(Batch(grown, {"r1": RUN}, "a.db")) is ExportResult.SUCCESS
    assert len(traces.calls) == 1 and len(logs.calls) == 2
    assert [[p.value for p in _points(call)["loss"]] for call in metrics.calls] == [[1.0], [0.9]]
    # after a whole success, a new batch goes to every signal again
    more = [make_record(5, Kind.SPAN, "fwd", 0.1, attrs=span)]
    assert exporter.export(Batch(more, {"r1": RUN}, "a.db")) is ExportResult.SUCCESS
    assert len(traces.calls) == 2


def test_spans_and_logs_keep_ids_status_and_fields() -> None:
    traces, logs = (
        FakeExporter(SpanExportResult.SUCCESS),
        FakeExporter(LogRecordExportResult.SUCCESS),
    )
    exporter = OtlpExporter(traces=traces, logs=logs)
    span_attrs = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "parent_span_id": PARENT,
        "status": "error",
        "span_kind": "step",
        "rank": 1,
        "error_type": "ValueError",
        "error": "bad batch",
        "attempt": 2,
        "attributes": {"http.method": "GET", "nested": {"a": 1}},
    }
    log_attrs = {
        "message": "loss went up",
        "level": "WARNING",
        "trace_id": TRACE,
        "span_id": SPAN,
        "rank": 1,
        "batch": [1, 2],
        "exception_type": "ValueError",
        "big": 2**70,
    }
    records = [
        make_record(1, Kind.SPAN, "train_step", 0.5, step=3, epoch=1, attrs=span_attrs),
        make_record(2, Kind.LOG, "trainer", 30.0, ts=TS + 5, step=3, attrs=log_attrs),
        make_record(3, Kind.EVENT, RUN_START, None, attrs={"run_name": "x", "params": {"lr": 0.1}}),
        make_record(4, Kind.EVENT, HEARTBEAT, 1.0),
    ]
    assert exporter.export(Batch(records, {"r1": RUN})) is ExportResult.SUCCESS
    (span,) = traces.calls[0]
    assert format(span.context.trace_id, "032x") == TRACE
    assert format(span.context.span_id, "016x") == SPAN
    assert format(span.parent.span_id, "016x") == PARENT
    assert (span.start_time, span.end_time) == (TS, TS + 500_000_000)
    assert span.status.status_code.name == "ERROR" and span.status.description == "bad batch"
    assert span.attributes["mlobs.span.kind"] == "step"
    assert span.attributes["error.type"] == "ValueError"
    assert span.attributes["mlobs.step.attempt"] == 2
    assert span.attributes["http.method"] == "GET"
    assert span.attributes["nested"] == '{"a":1}'
    assert (span.attributes["mlobs.step"], span.attributes["mlobs.epoch"]) == (3, 1)
    assert span.resource.attributes["mlobs.run.id"] == "r1"
    log, event = logs.calls[0]  # the heartbeat is a metric, not a log record
    record = log.log_record
    assert (record.body, record.severity_text, record.severity_number.value) == (
        "loss went up",
        "WARNING",
        13,
    )
    assert (record.timestamp, record.observed_timestamp) == (TS + 5, TS + 5)
    assert format(record.trace_id, "032x") == TRACE and format(record.span_id, "016x") == SPAN
    assert record.attributes["batch"] == [1, 2]
    assert record.attributes["exception.type"] == "ValueError"
    assert record.attributes["big"] == str(2**70)
    assert record.attributes["mlobs.rank"] == 1 and record.attributes["mlobs.step"] == 3
    assert log.instrumentation_scope.name == "trainer"
    assert event.log_record.event_name == "mlobs.run_start"
    assert event.log_record.attributes["params"] == {"lr": 0.1}
    assert event.log_record.trace_id == 0


def test_bad_values_are_exported_or_left_out_never_raised() -> None:
    metrics, traces = FakeExporter(), FakeExporter(SpanExportResult.SUCCESS)
    exporter = OtlpExporter(metrics=metrics, traces=traces)
    odd = {"split": None, "weird": {"deep": [1, "a"]}, "huge": 2**64, "seq": [1, "mixed"]}
    records = [
        make_record(1, Kind.GAUGE, "loss", math.nan, attrs=odd),
        make_record(2, Kind.GAUGE, "grad norm ∞", math.inf),
        make_record(3, Kind.GAUGE, "no value", None),
        make_record(4, Kind.SPAN, "no ids", 0.1, attrs={"trace_id": "zz"}),
        make_record(5, Kind.GAUGE, "orphan", 1.0, run_id="unknown-run"),
        make_record(6, Kind.GAUGE, "outside a run", 1.0, run_id=""),
    ]
    assert exporter.export(Batch(records, {"r1": RUN})) is ExportResult.SUCCESS
    points = _points(metrics.calls[0])
    assert math.isnan(points["loss"][0].value)
    assert dict(points["loss"][0].attributes) == {
        "weird": '{"deep":[1,"a"]}',
        "huge": str(2**64),
        "seq": '[1,"mixed"]',
        "rank": 2,
    }
    assert points["grad_norm__"][0].value == math.inf
    assert "no value" not in points
    assert traces.calls == []  # the span without ids is reported and left out
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "export.otlp.span") == 1
    by_run = {
        dict(rm.resource.attributes).get("mlobs.run.id", ""): rm
        for rm in metrics.calls[0].resource_metrics
    }
    assert set(by_run) == {"r1", "unknown-run", ""}


# -- real receivers ------------------------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[OtlpStandin]:
    receiver = OtlpStandin().start()
    yield receiver
    receiver.close()


def _run_a_little_training(name: str = "otlp-run") -> str:
    """Three epochs of logged values, a step span and a log record in each; returns the run id."""
    with mlobs.run(name, model=("resnet50", "v3"), dataset=("imagenet", "2012")) as run:
        for epoch in range(3):
            with mlobs.epoch(epoch):
                with mlobs.step("train_step"):
                    logging.getLogger("trainer").warning("epoch %d done", epoch, extra={"lr": 0.1})
                mlobs.log({"val/loss": 1.0 / (epoch + 1)}, split="val")
                time.sleep(0.01)  # epochs apart in Prometheus' millisecond timestamps
        return run.run_id


def _prom_samples(prom: PrometheusServer, selector: str) -> list[tuple[int, float]]:
    """(timestamp in ms, value) of every sample of one series in the last 15 minutes."""
    (series,) = prom.query(f"{selector}[15m]")
    return [(round(float(ts) * 1000), float(v)) for ts, v in series["values"]]


@pytest.mark.slow
def test_metrics_reach_prometheus_through_vmagent_with_their_own_timestamps(
    prometheus_server: Callable[..., PrometheusServer],
    vmagent: Callable[..., VmagentServer],
    tmp_path: Path,
) -> None:
    prom = prometheus_server(extra_config=OUT_OF_ORDER)
    agent = vmagent(prom)
    memory = InMemoryExporter()
    # the general endpoint: /v1/metrics is appended. vmagent takes metrics only and refuses
    # logs and spans as malformed requests (HTTP 400): they are counted and passed over.
    mlobs.configure(
        dir=str(tmp_path / "spool"),
        otlp_endpoint=agent.url + "/opentelemetry",
        exporters=[memory],
        flush_interval=0.05,
    )
    run_id = _run_a_little_training()
    assert mlobs.flush(30)
    assert safety.self_metrics.get(WRITES_REJECTED, "otlp") >= 1

    run = f'mlobs_run_id="{run_id}"'
    prom.wait_for(
        f"count_over_time(epoch_duration_seconds{{{run}}}[15m])",
        lambda r: bool(r) and r[0]["value"][1] == "3",
        timeout=30,
    )
    prom.wait_for(f"count_over_time(val_loss{{{run}}}[15m])", lambda r: bool(r), timeout=30)
    recorded = [(r.ts_ns // 1_000_000, r.value) for r in memory.metrics("val/loss")]
    assert _prom_samples(prom, f"val_loss{{{run}}}") == recorded
    durations = [(r.ts_ns // 1_000_000, r.value) for r in memory.metrics("epoch_duration_seconds")]
    assert _prom_samples(prom, f"epoch_duration_seconds{{{run}}}") == durations
    # the epoch and the step are gauges of their own, sampled at values' timestamps
    epoch_at = dict(_prom_samples(prom, f"mlobs_run_epoch{{{run}}}"))
    assert len(epoch_at) == 3
    for record in memory.metrics("val/loss"):  # the first value of each epoch
        assert epoch_at[record.ts_ns // 1_000_000] == record.epoch
    steps = _prom_samples(prom, f"mlobs_run_step{{{run}}}")
    assert steps
    assert set(steps) <= {(r.ts_ns // 1_000_000, r.step) for r in memory.metrics()}
    (last,) = prom.query(f"timestamp(val_loss{{{run}}})")
    assert round(float(last["value"][1]) * 1000) == recorded[-1][0]

    (labels,) = prom.series(f"val_loss{{{run}}}")
    assert labels["split"] == "val" and labels["rank"] == "0"
    assert labels["service_name"] == "mlobs"
    assert labels["mlobs_run_name"] == "otlp-run"
    assert (labels["mlobs_model_name"], labels["mlobs_model_version"]) == ("resnet50", "v3")
    assert (labels["mlobs_dataset_name"], labels["mlobs_dataset_version"]) == ("imagenet", "2012")
    assert labels["host_name"] and labels["process_pid"]
    assert "step" not in labels and "epoch" not in labels

    # a batch offered again (an acknowledgement lost on the way) is stored once
    exporter = from_config(config.resolve({"otlp_endpoint": agent.url + "/opentelemetry"}))
    now = time.time_ns()
    points = [make_record(i + 1, Kind.GAUGE, "resent", i, ts=now + i * 10**6) for i in range(3)]
    batch = Batch(points, {"r1": RUN})
    assert exporter.export(batch) is ExportResult.SUCCESS
    assert exporter.export(batch) is ExportResult.SUCCESS
    exporter.shutdown()
    query = 'count_over_time(resent{mlobs_run_id="r1"}[15m])'
    prom.wait_for(query, lambda r: bool(r) and r[0]["value"][1] == "3", timeout=30)
    time.sleep(1.0)  # vmagent forwards every 200 ms: give a duplicate time to show up
    assert prom.query(query)[0]["value"][1] == "3"


@pytest.mark.slow
def test_logs_and_spans_reach_oteltap_with_the_recorded_ids(
    oteltap: OtelTapReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", oteltap.logs_url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", oteltap.traces_url)
    memory = InMemoryExporter()
    mlobs.configure(dir=str(tmp_path / "spool"), exporters=[memory], flush_interval=0.05)
    _run_a_little_training()
    assert mlobs.flush(30)

    recorded_spans = memory.spans()
    spans = oteltap.wait_for_spans(len(recorded_spans))
    assert len(spans) == len(recorded_spans) == 7  # a run, 3 epochs, 3 steps
    got = {(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name) for s in spans}
    want = {
        (r.attrs["trace_id"], r.attrs["span_id"], r.attrs.get("parent_span_id", ""), r.name)
        for r in recorded_spans
    }
    assert got == want
    by_id = {s.span_id.hex(): s for s in spans}
    for record in recorded_spans:
        span = by_id[record.attrs["span_id"]]
        assert span.start_time_unix_nano == record.ts_ns
        assert span.end_time_unix_nano - span.start_time_unix_nano == round(record.value * 1e9)
        assert attributes(span.attributes)["mlobs.span.kind"] == record.attrs["span_kind"]

    recorded_logs = [r for r in memory.logs() if r.name == "trainer"]
    logs = oteltap.wait_for_logs(len(recorded_logs) + 2)  # and the run's start and end events
    user_logs = {log.time_unix_nano: log for log in logs if not log.event_name}
    assert len(user_logs) == 3
    for record in recorded_logs:
        log = user_logs[record.ts_ns]
        assert log.body.string_value == record.attrs["message"]
        assert (log.severity_number, log.severity_text) == (13, "WARNING")
        assert log.trace_id.hex() == record.attrs["trace_id"]
        assert log.span_id.hex() == record.attrs["span_id"]
        attrs = attributes(log.attributes)
        assert attrs["lr"] == 0.1 and attrs["mlobs.step.name"] == "train_step"
        assert attrs["mlobs.epoch"] == record.epoch
    events = sorted(log.event_name for log in logs if log.event_name)
    assert events == ["mlobs.run_end", "mlobs.run_start"]


def _signal_items(received: list[Received], signal: str) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, item) for every metric, span or log record of a signal."""
    out = []
    for item in received:
        if item.signal != signal:
            continue
        resources, scopes, items = {
            "metrics": ("resource_metrics", "scope_metrics", "metrics"),
            "traces": ("resource_spans", "scope_spans", "spans"),
            "logs": ("resource_logs", "scope_logs", "log_records"),
        }[signal]
        for resource in getattr(item.request, resources):
            attrs = attributes(resource.resource.attributes)
            for scope in getattr(resource, scopes):
                out.extend((attrs, x) for x in getattr(scope, items))
    return out


def test_grpc_delivers_every_signal_with_timestamps_and_resource(
    standin: OtlpStandin, tmp_path: Path
) -> None:
    memory = InMemoryExporter()
    mlobs.configure(
        dir=str(tmp_path / "spool"),
        otlp_endpoint=standin.grpc_endpoint,
        otlp_protocol="grpc",
        exporters=[memory],
        flush_interval=0.05,
    )
    run_id = _run_a_little_training("grpc-run")
    assert mlobs.flush(30)
    assert {r.transport for r in standin.received} == {"grpc"}

    metrics = _signal_items(standin.received, "metrics")
    loss = [p for _, m in metrics if m.name == "val/loss" for p in m.gauge.data_points]
    assert [(p.time_unix_nano, p.as_double) for p in loss] == [
        (r.ts_ns, r.value) for r in memory.metrics("val/loss")
    ]
    spans = _signal_items(standin.received, "traces")
    assert {s.span_id.hex() for _, s in spans} == {r.attrs["span_id"] for r in memory.spans()}
    logs = _signal_items(standin.received, "logs")
    assert len([x for _, x in logs if x.body.string_value.startswith("epoch ")]) == 3
    for signal, items in (("metrics", metrics), ("traces", spans), ("logs", logs)):
        resources = {tuple(sorted(attrs.items())) for attrs, _ in items}
        assert len(resources) == 1, signal
        attrs = dict(next(iter(resources)))
        assert attrs["mlobs.run.id"] == run_id and attrs["mlobs.run.name"] == "grpc-run", signal
        assert attrs["mlobs.model.name"] == "resnet50" and attrs["mlobs.experiment"] == "default"
        assert attrs["service.name"] == "mlobs" and attrs["host.name"], signal


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_headers_from_the_standard_variables_reach_the_receiver(
    standin: OtlpStandin, protocol: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cr3t,x-tenant=vision"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-signal=metrics")
    endpoint = standin.grpc_endpoint if protocol == "grpc" else standin.http_endpoint
    mlobs.configure(
        dir=str(tmp_path / "spool"),
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        flush_interval=0.05,
    )
    _run_a_little_training()
    assert mlobs.flush(30)
    transport = "grpc" if protocol == "grpc" else "http"
    for signal in ("logs", "traces"):
        requests = standin.requests(signal, transport)
        assert requests, signal
        for request in requests:
            assert request.headers["authorization"] == "Bearer s3cr3t"
            assert request.headers["x-tenant"] == "vision"
    for request in standin.requests("metrics", transport):
        # the per-signal variable replaces the general one, as the specification says
        assert request.headers["x-signal"] == "metrics"
        assert "x-tenant" not in request.headers


@pytest.mark.parametrize(("protocol", "refusal"), [("grpc", 3), ("http/protobuf", 400)])
def test_a_malformed_request_refusal_is_counted_and_passed_over_other_failures_retried(
    standin: OtlpStandin, protocol: str, refusal: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    endpoint = standin.grpc_endpoint if protocol == "grpc" else standin.http_endpoint
    exporter = from_config(config.resolve({"otlp_endpoint": endpoint, "otlp_protocol": protocol}))
    batch = Batch([make_record(1, Kind.GAUGE, "loss", 1.0)], {"r1": RUN})
    try:
        standin.fail_with = 14 if protocol == "grpc" else 503  # unavailable: try again later
        assert exporter.export(batch) is ExportResult.FAILURE
        assert safety.self_metrics.get(WRITES_REJECTED) == 0
        standin.fail_with = refusal
        assert exporter.export(batch) is ExportResult.SUCCESS
        assert safety.self_metrics.get(WRITES_REJECTED, "otlp") == 1
        standin.fail_with = None
        later = Batch([make_record(2, Kind.GAUGE, "loss", 0.5, ts=TS + 1)], {"r1": RUN})
        assert exporter.export(later) is ExportResult.SUCCESS
        (received,) = standin.requests("metrics")
        (metric,) = [m for _, m in _signal_items([received], "metrics") if m.name == "loss"]
        assert [p.as_double for p in metric.gauge.data_points] == [0.5]
    finally:
        exporter.shutdown()


def test_a_forked_child_ships_through_connections_of_its_own(standin: OtlpStandin) -> None:
    exporter = from_config(config.resolve({"otlp_endpoint": standin.http_endpoint}))
    batch = Batch([make_record(1, Kind.GAUGE, "from_parent", 1.0)], {"r1": RUN})
    assert exporter.export(batch) is ExportResult.SUCCESS  # a pooled keep-alive connection
    parent_metrics = exporter.metrics
    with exporter._lock:  # as if the parent's shipper were exporting when the child forks
        pid = os.fork()
        if pid == 0:  # the child: no pytest machinery from here on, only an exit code
            code = 1
            try:
                child = Batch([make_record(1, Kind.GAUGE, "from_child", 2.0)], {"r1": RUN}, "c.db")
                if exporter.metrics is not parent_metrics:
                    code = 0 if exporter.export(child) is ExportResult.SUCCESS else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    names = {m.name for _, m in _signal_items(standin.received, "metrics")}
    assert {"from_parent", "from_child"} <= names
    assert exporter.export(batch) is ExportResult.SUCCESS  # the parent's connection still works
    exporter.shutdown()


def test_a_dead_endpoint_never_raises_keeps_records_and_logs_nothing_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    memory = InMemoryExporter()
    spool = tmp_path / "spool"
    mlobs.configure(
        dir=str(spool),
        otlp_endpoint="http://127.0.0.1:9",  # discard port: nothing listens
        exporters=[memory],
        flush_interval=0.05,
    )
    t0 = time.monotonic()
    with mlobs.run("dead-endpoint"):
        for i in range(200):
            mlobs.log(loss=float(i))
        logging.getLogger("trainer").warning("still training")
    assert time.monotonic() - t0 < 1.0  # the training thread never waits on the backend
    assert mlobs.flush(timeout=2) is False
    assert safety.self_metrics.get(EXPORT_FAILURES, "otlp") >= 1
    # the exporters' retry and failure messages are not fed back into the pipeline
    assert not [r for r in memory.logs() if r.name.startswith("opentelemetry")]
    assert len(memory.metrics("loss")) == 200
    mlobs.shutdown(timeout=1)
    (path,) = spool_files(spool)
    reader = SpoolReader.open(path)
    try:
        assert reader.cursor("otlp") == 0 and reader.last_seq() > 200
    finally:
        reader.close()

    # an endpoint that cannot even be parsed turns the sink off, not the program
    mlobs.configure(dir=str(tmp_path / "spool2"), otlp_endpoint="http://[::1")
    with mlobs.run("unparsable"):
        mlobs.log(loss=1.0)


def _work() -> float:
    """A fixed slice of pure-Python work: the training step of the outage test."""
    return sum(k * k for k in range(1500)) * 1e-9


@pytest.mark.slow
def test_an_outage_of_the_receiver_loses_nothing_and_does_not_slow_training(
    prometheus_server: Callable[..., PrometheusServer],
    vmagent: Callable[..., VmagentServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    prom = prometheus_server(extra_config=OUT_OF_ORDER)
    agent = vmagent(prom)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", agent.otlp_metrics_url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    mlobs.configure(dir=str(tmp_path / "spool"), flush_interval=0.05)
    n = 10_000
    stop_at, start_at = n // 3, 2 * n // 3
    step_s: dict[str, list[float]] = {"before": [], "outage": [], "after": []}
    failures_at_restart = 0
    with mlobs.run("outage") as run:
        last_ms = 0
        for i in range(n):
            if i == stop_at:
                agent.stop()
            elif i == start_at:
                failures_at_restart = safety.self_metrics.get(EXPORT_FAILURES, "otlp")
                agent.start()  # the same port and queue directory
            phase = "before" if i < stop_at else "outage" if i < start_at else "after"
            # Prometheus keeps milliseconds: at most one value of the series per millisecond
            while time.time_ns() // 1_000_000 <= last_ms:
                pass
            t0 = time.perf_counter()
            _work()
            mlobs.log(outage_value=float(i))
            step_s[phase].append(time.perf_counter() - t0)
            last_ms = time.time_ns() // 1_000_000
        run_id = run.run_id
    assert failures_at_restart >= 1, "the sink never noticed the outage"

    selector = f'outage_value{{mlobs_run_id="{run_id}"}}'
    prom.wait_for(
        f"count_over_time({selector}[15m])",
        lambda r: bool(r) and r[0]["value"][1] == str(n),
        timeout=60,
    )
    (total,) = prom.query(f"sum_over_time({selector}[15m])")
    assert float(total["value"][1]) == sum(range(n))
    normal = statistics.median(step_s["before"])
    during = statistics.median(step_s["outage"])
    print(f"median step: {normal * 1e6:.0f} µs normal, {during * 1e6:.0f} µs during the outage")
    assert during < 1.5 * normal  # the target is 1.2x; the machine is shared and noisy
