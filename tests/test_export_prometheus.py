"""The Prometheus sinks: ``/metrics`` scraped by a real Prometheus, pushes to a real Pushgateway.

Servers are real binaries on 127.0.0.1 (tests/backends.py); nothing is mocked. The https scrape
uses a self-signed certificate made with ``openssl`` in the test's temp dir, and basic auth is
checked against a Pushgateway started with ``--web.config.file`` (a bcrypt hash).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import mlobs
from mlobs import runtime, safety
from mlobs.export import prom_names
from mlobs.export.base import Batch, ExportResult
from mlobs.export.prom_state import PromState, StateCollector
from mlobs.export.prometheus import PrometheusExporter, from_config
from mlobs.export.pushgateway import PushgatewayExporter
from mlobs.export.shipper import Backoff
from mlobs.record.types import Kind, Record
from mlobs.spool.store import HEARTBEAT, RUN_END, RUN_START, RunInfo

from .backends import PrometheusServer, PushgatewayServer, find_binary, free_port, http

TS = 1_700_000_000_000_000_000
RUN = RunInfo(
    "r1",
    "resnet run",
    "running",
    TS,
    resource={"experiment": "exp1", "rank": 0, "world_size": 1, "model_name": "resnet50"},
    tags={"team": "vision"},
)


def _rec(
    seq: int,
    kind: Kind,
    name: str,
    value: float | None,
    *,
    run_id: str = "r1",
    step: int | None = None,
    epoch: int | None = None,
    attrs: dict[str, Any] | None = None,
    ts: int = TS,
) -> Record:
    return Record(seq, kind, ts, run_id, name, value, step, epoch, attrs or {})


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and label set."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(text: str, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels`` (None if absent)."""
    found = [
        v for (n, ls), v in _samples(text).items() if n == name and set(labels.items()) <= set(ls)
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def _render(state: PromState) -> str:
    registry = CollectorRegistry()
    registry.register(StateCollector(state))
    return generate_latest(registry).decode()


def _promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _get(url: str, context: ssl.SSLContext | None = None) -> str:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(url, timeout=10) as response:
        return str(response.read().decode())


def _exporter() -> PrometheusExporter:
    rt = runtime.get()
    found = [s.exporter for s in rt.shippers if isinstance(s.exporter, PrometheusExporter)]
    assert found, "no prometheus sink configured"
    return found[0]


def _wait(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout} s: {what}")
        time.sleep(0.05)


def _flush_until_caught_up(timeout: float = 30.0) -> None:
    """``mlobs.flush()`` skips a sink whose circuit is open (its own thread probes it); wait for
    the probe to close it, then flush."""
    _wait(lambda: mlobs.flush(timeout=5), timeout, "every sink caught up")


# -- names (no server) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("loss", "gauge", "mlobs_loss"),
        ("val/loss", "gauge", "mlobs_val_loss"),
        ("valLoss", "gauge", "mlobs_val_loss"),
        ("stepTime_ms", "gauge", "mlobs_step_timems"),
        ("gpu memory (MB)", "gauge", "mlobs_gpu_memorymb"),
        ("time_milliseconds", "gauge", "mlobs_timemilliseconds"),
        ("tokens_total", "gauge", "mlobs_tokenstotal"),
        ("tokens_total", "counter", "mlobs_tokens_total"),
        ("tokens", "counter", "mlobs_tokens_total"),
        ("latency_seconds", "histogram", "mlobs_latency_seconds"),
        ("loss_gauge", "gauge", "mlobs_lossgauge"),
        ("s", "gauge", "mlobs_svalue"),
        ("1cycle:lr", "gauge", "mlobs_n1cycle_lr"),
        ("///", "gauge", "mlobs_value"),
        ("epoch_duration_seconds", "gauge", "mlobs_epoch_duration_seconds"),
    ],
)
def test_metric_names_follow_prometheus_conventions(name: str, kind: str, expected: str) -> None:
    assert prom_names.metric_base(name, kind) == expected


def test_colliding_and_reserved_names_get_a_stable_suffix() -> None:
    table = prom_names.NameTable()
    first = table.family("val/loss", "gauge")
    second = table.family("val.loss", "gauge")
    assert first == "mlobs_val_loss"
    assert second.startswith("mlobs_val_loss_") and second != first
    assert table.family("val.loss", "gauge") == second  # stable within the table
    assert prom_names.NameTable().family("run_step", "gauge") != prom_names.RUN_STEP
    # a histogram owns its _count series; a gauge named like it goes elsewhere
    hist = table.family("lat", "histogram")
    assert table.family("lat", "gauge") not in (hist, hist + "_count")
    # the same digest in another process: the suffix depends on the name only
    other = prom_names.NameTable()
    other.family("val_loss", "gauge")
    assert other.family("val.loss", "gauge") == second


# -- state (no server) ---------------------------------------------------------------------------


def _batch(records: list[Record], source: str = "spool-a.db") -> Batch:
    return Batch(records, {"r1": RUN}, source)


def test_every_kind_maps_to_its_series() -> None:
    state = PromState()
    records = [
        _rec(1, Kind.EVENT, RUN_START, None, attrs={"run_name": "resnet run"}),
        _rec(2, Kind.GAUGE, "loss", 0.5, step=1, epoch=0, attrs={"split": "train"}),
        _rec(3, Kind.GAUGE, "loss", 0.25, step=2, epoch=0, attrs={"split": "train"}),
        _rec(4, Kind.GAUGE, "loss", 0.75, step=2, epoch=0, attrs={"split": "val"}),
        _rec(5, Kind.COUNTER, "samples", 32.0, step=2),
        _rec(6, Kind.COUNTER, "samples", 32.0, step=3),
        _rec(7, Kind.HISTOGRAM, "latency_seconds", 0.2, step=3),
        _rec(8, Kind.HISTOGRAM, "latency_seconds", 7.0, step=3),
        _rec(9, Kind.SPAN, "train", 0.02, attrs={"span_kind": "step", "status": "ok"}),
        _rec(10, Kind.SPAN, "train", 0.03, attrs={"span_kind": "step", "status": "error"}),
        _rec(11, Kind.SPAN, "epoch 0", 3.0, attrs={"span_kind": "epoch"}),
        _rec(12, Kind.LOG, "user", 30.0, attrs={"level": "WARNING", "message": "m"}),
        _rec(13, Kind.EVENT, HEARTBEAT, TS / 1e9 + 7),
        _rec(14, Kind.EVENT, RUN_END, None, step=3, attrs={"status": "failed"}, ts=TS + 10**10),
    ]
    state.apply(_batch(records))
    text = _render(state)
    run = {"run_id": "r1", "run_name": "resnet run", "experiment": "exp1", "rank": "0"}
    assert _value(text, "mlobs_loss", split="train", **run) == 0.25
    assert _value(text, "mlobs_loss", split="val") == 0.75
    assert _value(text, "mlobs_samples_total", **run) == 64.0
    assert _value(text, "mlobs_latency_seconds_count", **run) == 2
    assert _value(text, "mlobs_latency_seconds_bucket", le="0.25") == 1
    assert _value(text, "mlobs_latency_seconds_bucket", le="+Inf") == 2
    assert _value(text, "mlobs_latency_seconds_sum") == pytest.approx(7.2)
    assert _value(text, "mlobs_step_duration_seconds_count", step="train") == 2
    assert _value(text, "mlobs_step_executions_total", step="train", status="error") == 1
    assert _value(text, "mlobs_log_records_total", level="warning") == 1
    assert _value(text, "mlobs_run_step", **run) == 3
    assert _value(text, "mlobs_run_epoch", **run) == 0
    assert _value(text, "mlobs_run_status", status="failed", **run) == 1
    assert _value(text, "mlobs_run_status", status="running", **run) == 0
    assert _value(text, "mlobs_run_start_time_seconds") == TS / 1e9
    assert _value(text, "mlobs_run_end_time_seconds") == TS / 1e9 + 10
    assert _value(text, "mlobs_run_last_progress_timestamp_seconds") == TS / 1e9 + 10
    info = _value(text, "mlobs_run_info", model_name="resnet50", tag_team="vision", **run)
    assert info == 1
    assert "step=" not in text.replace('step="train"', "")  # the step is never a label


def test_a_batch_offered_again_is_not_counted_twice() -> None:
    state = PromState()
    first = [_rec(i, Kind.COUNTER, "samples", 1.0, step=i) for i in range(1, 101)]
    state.apply(_batch(first))
    state.apply(_batch(first))  # the same batch after a failure
    more = [_rec(i, Kind.COUNTER, "samples", 1.0, step=i) for i in range(51, 151)]
    state.apply(_batch(more))  # overlaps the first: only seq 101..150 are new
    state.apply(_batch(first, source="spool-b.db"))  # another spool file counts on its own
    assert _value(_render(state), "mlobs_samples_total") == 250


def test_a_record_that_cannot_be_folded_in_is_skipped_and_counted() -> None:
    state = PromState()
    records = [
        _rec(1, Kind.COUNTER, "samples", 1.0),
        _rec(2, Kind.LOG, "user", math.nan),  # no level attribute, and no level number either
        _rec(3, Kind.COUNTER, "samples", 1.0),
    ]
    state.apply(_batch(records))
    state.apply(_batch(records))
    assert _value(_render(state), "mlobs_samples_total") == 2
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "export.prometheus.record") == 1


def test_finished_runs_beyond_the_limit_are_dropped_oldest_first() -> None:
    state = PromState(keep_finished_runs=3)
    seq = 0
    runs = {}
    for n in range(6):
        run_id = f"run{n}"
        runs[run_id] = RunInfo(run_id, run_id, "running", TS, resource={"experiment": "e"})
        for name, kind in ((RUN_START, Kind.EVENT), ("loss", Kind.GAUGE), (RUN_END, Kind.EVENT)):
            seq += 1
            state.apply(Batch([_rec(seq, kind, name, 1.0, run_id=run_id)], runs))
    state.apply(Batch([_rec(seq + 1, Kind.GAUGE, "loss", 1.0, run_id="live")], {}))
    state.evict()
    assert sorted(state.run_ids()) == ["live", "run3", "run4", "run5"]
    # a late record of a dropped run does not bring back a partial run
    state.apply(Batch([_rec(seq + 2, Kind.GAUGE, "loss", 2.0, run_id="run0")], runs))
    assert "run0" not in state.run_ids()


@pytest.mark.slow
def test_promtool_finds_nothing_to_report_on_awkward_names() -> None:
    state = PromState()
    names = ["val/loss", "val.loss", "lossGauge", "time_s", "mem_MB", "x_count", "y_bucket"]
    names += ["z_sum", "w_total", "run_step", "internal_errors", "kilobytes", "m", "1st", "le"]
    records = [
        _rec(i + 1, Kind.GAUGE, name, 1.0, step=i, attrs={"split": "val", "le": "x", "myAttr": 1})
        for i, name in enumerate(names)
    ]
    n = len(records)
    records += [_rec(n + 1, Kind.COUNTER, "requests", 1.0), _rec(n + 2, Kind.COUNTER, "ms", 1.0)]
    records += [_rec(n + 3, Kind.HISTOGRAM, "latency", 0.1), _rec(n + 4, Kind.HISTOGRAM, "h", 1)]
    records.append(_rec(n + 5, Kind.SPAN, "s", 0.1, attrs={"span_kind": "step", "status": "ok"}))
    state.apply(_batch(records))
    result = _promtool_check(_render(state))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# -- /metrics --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_prometheus_scrapes_an_instrumented_run(
    spool_dir: Path, prometheus_server: Callable[..., PrometheusServer]
) -> None:
    mlobs.configure(dir=str(spool_dir), prometheus_port=0, flush_interval=0.05)
    exporter = _exporter()
    assert exporter.port and exporter.port > 0
    prometheus = prometheus_server(scrape_targets=[f"127.0.0.1:{exporter.port}"])
    with mlobs.run("scraped", experiment="exp-scrape", model="resnet") as run:
        for i in range(200):
            mlobs.log({"val/loss": 1.0 / (i + 1)}, split="val")
        mlobs.flush()
        match = f'run_id="{run.run_id}"'
        result = prometheus.wait_for(
            f'mlobs_val_loss{{{match},split="val"}}',
            lambda r: bool(r) and float(r[0]["value"][1]) == pytest.approx(1 / 200),
        )
        labels = result[0]["metric"]
        assert labels["run_name"] == "scraped" and labels["experiment"] == "exp-scrape"
        assert "step" not in labels
        prometheus.wait_for(f'mlobs_run_status{{{match},status="running"}} == 1', bool, timeout=30)
        prometheus.wait_for(f"mlobs_run_step{{{match}}} == 200", bool)
    mlobs.flush()
    prometheus.wait_for(f'mlobs_run_status{{{match},status="finished"}} == 1', bool)
    prometheus.wait_for(f'mlobs_run_info{{{match},model_name="resnet"}} == 1', bool)
    up = prometheus.query('up{job="mlobs"}')
    assert [float(s["value"][1]) for s in up] == [1.0]


@pytest.mark.slow
def test_promtool_check_metrics_on_the_endpoint_reports_nothing(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), prometheus_port=0, flush_interval=0.05)
    with mlobs.run("lint", model=("m", "1"), dataset="d", tags={"Team Name": "x"}):
        with mlobs.epoch(0, samples=64):
            for _ in range(3):
                with mlobs.step("train"):
                    mlobs.log({"train/loss": 0.5, "stepTime_ms": 3, "gpu.mem_gb": 1}, split="t")
        mlobs.log_system(gpu_utilization_ratio=0.5)
        import logging

        logging.getLogger("user.code").warning("a warning")
    mlobs.log(outside_run=1.0)
    safety.report("test.where", message="an internal error")  # counted, logged, not raised
    safety.self_metrics.inc("mlobs_export_writes_rejected_total", "otlp")
    safety.self_metrics.inc("mlobs_gpu_query_errors_total", "nvmlDeviceGetFanSpeed")
    safety.self_metrics.inc("mlobs_feature_x_errors_total", "y")  # one no table lists
    safety.self_metrics.inc("not a metric name", "x")
    mlobs.flush()
    text = _get(_exporter().url or "")
    assert _value(text, "mlobs_train_loss", split="t") == 0.5
    assert _value(text, "mlobs_outside_run") == 1.0
    assert _value(text, "mlobs_internal_errors_total", where="test.where") == 1
    assert _value(text, "mlobs_export_writes_rejected_total", sink="otlp") == 1
    assert _value(text, "mlobs_gpu_query_errors_total", function="nvmlDeviceGetFanSpeed") == 1
    assert _value(text, "mlobs_feature_x_errors_total", key="y") == 1
    assert _value(text, "mlobs_calls_outside_run_total", call="log") == 1
    assert _value(text, "mlobs_records_exported_total", sink="prometheus") > 0
    assert _value(text, "mlobs_spool_backlog_records", sink="prometheus") is not None
    assert "not a metric" not in text
    result = _promtool_check(text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_port_in_use_is_reported_and_the_run_goes_on(spool_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        mlobs.configure(dir=str(spool_dir), prometheus_port=port, flush_interval=0.05)
        exporter = _exporter()
        assert exporter.port is None
        assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "sink.prometheus") == 1
        with mlobs.run("goes on"):
            mlobs.log(loss=1.0)
        assert mlobs.flush()
        assert _value(_render(exporter.state), "mlobs_loss") == 1.0


def test_a_registry_passed_in_is_adapted_not_replaced(spool_dir: Path) -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry, self_metrics=False)
    mlobs.configure(dir=str(spool_dir), exporters=[exporter], flush_interval=0.05)
    with mlobs.run("mine"):
        mlobs.log(acc=0.5)
    assert mlobs.flush()
    assert _value(generate_latest(registry).decode(), "mlobs_acc") == 0.5
    mlobs.shutdown()
    assert "mlobs_acc" not in generate_latest(registry).decode()  # collectors unregistered
    assert from_config(mlobs.config.resolve({})).port is None


@pytest.mark.slow
def test_a_forked_child_exits_cleanly_and_the_parent_keeps_serving(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), prometheus_port=0, flush_interval=0.05)
    url = _exporter().url or ""
    with mlobs.run("parent"):
        mlobs.log(loss=1.0)
        pid = os.fork()
        if pid == 0:  # the child: record, then shut down as at exit (the server is the parent's)
            code = 1
            try:
                mlobs.log(loss=2.0)
                mlobs.shutdown(timeout=5)
                code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on shutdown")
        assert os.waitstatus_to_exitcode(done[1]) == 0
        mlobs.log(loss=3.0)
    assert mlobs.flush()
    assert _value(_get(url), "mlobs_loss") == 3.0


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        message = "openssl missing: apt-get install -y openssl"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.mark.slow
def test_tls_scrape_with_the_self_signed_certificate_as_ca(
    tmp_path: Path, spool_dir: Path, prometheus_server: Callable[..., PrometheusServer]
) -> None:
    cert, key = _self_signed(tmp_path)
    mlobs.configure(
        dir=str(spool_dir),
        prometheus_port=0,
        prometheus_certfile=str(cert),
        prometheus_keyfile=str(key),
        flush_interval=0.05,
    )
    exporter = _exporter()
    assert exporter.url and exporter.url.startswith("https://127.0.0.1:")
    with pytest.raises(OSError):  # plain http is not served, nor unverified https accepted
        _get(exporter.url)
    with mlobs.run("tls"):
        mlobs.log(loss=0.125)
    mlobs.flush()
    assert _value(_get(exporter.url, ssl.create_default_context(cafile=str(cert))), "mlobs_loss")
    job = {
        "job_name": "mlobs_tls",
        "scheme": "https",
        "tls_config": {"ca_file": str(cert)},
        "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
    }
    prometheus = prometheus_server(extra_config={"scrape_configs": [job]})
    result = prometheus.wait_for('mlobs_loss{job="mlobs_tls"}')
    assert float(result[0]["value"][1]) == 0.125


# -- Pushgateway -----------------------------------------------------------------------------------


def _pushed(pushgateway: PushgatewayServer) -> str:
    return pushgateway.metrics_text()


@pytest.mark.slow
def test_pushgateway_receives_a_batch_job_and_prometheus_scrapes_it(
    spool_dir: Path,
    pushgateway: PushgatewayServer,
    prometheus_server: Callable[..., PrometheusServer],
) -> None:
    mlobs.configure(dir=str(spool_dir), pushgateway_url=pushgateway.url, flush_interval=0.05)
    with mlobs.run("batch job", experiment="nightly") as run, mlobs.epoch(0):
        for i in range(1, 101):
            mlobs.log(loss=1.0 / i, split="train")
    assert mlobs.flush()
    text = _pushed(pushgateway)
    group = {"job": "nightly", "run_id": run.run_id}
    assert _value(text, "mlobs_loss", split="train", **group) == 0.01
    assert _value(text, "mlobs_run_status", status="finished", **group) == 1
    assert _value(text, "mlobs_run_step", **group) == 100
    prometheus = prometheus_server(scrape_targets=[pushgateway.address])
    result = prometheus.wait_for(f'mlobs_loss{{run_id="{run.run_id}"}}')
    labels = result[0]["metric"]
    assert (labels["job"], labels["run_name"], float(result[0]["value"][1])) == (
        "nightly",
        "batch job",
        0.01,
    )


@pytest.mark.slow
def test_pushgateway_group_is_deleted_when_the_run_finishes(
    spool_dir: Path, pushgateway: PushgatewayServer
) -> None:
    mlobs.configure(
        dir=str(spool_dir),
        pushgateway_url=pushgateway.url,
        pushgateway_delete=True,
        flush_interval=0.05,
    )
    with mlobs.run("short", experiment="cleanup") as run:
        mlobs.log(loss=0.5)
        assert mlobs.flush()
        assert _value(_pushed(pushgateway), "mlobs_loss", run_id=run.run_id) == 0.5
        mlobs.log(loss=0.25)
    assert mlobs.flush()
    assert f'run_id="{run.run_id}"' not in _pushed(pushgateway)
    with mlobs.run("kept", experiment="cleanup") as other:
        mlobs.log(loss=1.0)
        assert mlobs.flush()
        assert _value(_pushed(pushgateway), "mlobs_loss", run_id=other.run_id) == 1.0


def _bcrypt(password: str) -> str:
    """A bcrypt hash, which is all the Pushgateway's web config accepts: from the standard
    library's ``crypt`` (libxcrypt; gone in Python 3.13), else from PyPI ``bcrypt``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt

            if crypt.METHOD_BLOWFISH in crypt.methods:
                return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
        except ImportError:
            pass
    try:
        import bcrypt  # type: ignore[import-not-found]
    except ImportError:
        message = "no bcrypt implementation for the Pushgateway's web config; pip install bcrypt"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode())


@pytest.fixture
def pushgateway_with_auth(tmp_path: Path) -> Iterator[PushgatewayServer]:
    """A Pushgateway that requires basic auth (``--web.config.file`` with a bcrypt hash)."""
    hashed = _bcrypt("s3cret")
    workdir = tmp_path / "pushgateway-auth"
    workdir.mkdir()
    web_config = workdir / "web.yml"
    web_config.write_text(json.dumps({"basic_auth_users": {"trainer": hashed}}))
    server = PushgatewayServer(workdir)
    server.argv.append(f"--web.config.file={web_config}")
    server.ready_status = (200, 401)  # the readiness probe carries no credentials
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_pushgateway_basic_auth(spool_dir: Path, pushgateway_with_auth: PushgatewayServer) -> None:
    url = pushgateway_with_auth.url
    status, _ = http("GET", url + "/metrics")
    assert status == 401  # the gateway really requires it
    records = [_rec(1, Kind.GAUGE, "loss", 0.5)]
    wrong = PushgatewayExporter(url, username="trainer", password="nope")
    assert wrong.export(_batch(records)) is ExportResult.FAILURE
    anonymous = PushgatewayExporter(url)
    assert anonymous.export(_batch(records)) is ExportResult.FAILURE
    mlobs.configure(
        dir=str(spool_dir),
        pushgateway_url=url,
        pushgateway_username="trainer",
        pushgateway_password="s3cret",
        flush_interval=0.05,
    )
    with mlobs.run("authed") as run:
        mlobs.log(loss=0.5)
    assert mlobs.flush()
    auth = {"Authorization": "Basic dHJhaW5lcjpzM2NyZXQ="}  # trainer:s3cret
    status, body = http("GET", url + "/metrics", headers=auth)
    assert status == 200
    assert _value(body.decode(), "mlobs_loss", run_id=run.run_id) == 0.5


def test_a_dead_or_silent_pushgateway_fails_the_export_within_the_timeout() -> None:
    batch = _batch([_rec(1, Kind.GAUGE, "loss", 0.5)])
    dead = PushgatewayExporter(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    assert dead.export(batch) is ExportResult.FAILURE
    assert dead.force_flush() is False  # the run's state is still waiting to be pushed
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = PushgatewayExporter(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1.0)
        started = time.monotonic()
        assert hung.export(batch) is ExportResult.FAILURE
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 5


@pytest.mark.slow
def test_only_the_runs_a_batch_touched_are_pushed(pushgateway: PushgatewayServer) -> None:
    exporter = PushgatewayExporter(pushgateway.url)
    runs = {
        run_id: RunInfo(run_id, run_id, "running", TS, resource={"experiment": "e"})
        for run_id in ("a", "b")
    }
    both = [
        _rec(1, Kind.GAUGE, "loss", 1.0, run_id="a"),
        _rec(2, Kind.GAUGE, "loss", 1.0, run_id="b"),
    ]
    assert exporter.export(Batch(both, runs, "s")) is ExportResult.SUCCESS
    assert exporter.pushes == 2
    pushed_a = _value(_pushed(pushgateway), "push_time_seconds", run_id="a")
    only_b = [_rec(3, Kind.GAUGE, "loss", 2.0, run_id="b")]
    assert exporter.export(Batch(only_b, {"b": runs["b"]}, "s")) is ExportResult.SUCCESS
    assert exporter.pushes == 3
    text = _pushed(pushgateway)
    assert _value(text, "push_time_seconds", run_id="a") == pushed_a
    assert _value(text, "mlobs_loss", run_id="a") == 1.0
    assert _value(text, "mlobs_loss", run_id="b") == 2.0
    assert exporter.export(Batch(only_b, {"b": runs["b"]}, "s")) is ExportResult.SUCCESS
    assert exporter.pushes == 3  # nothing new: nothing pushed


def _fast_retries() -> None:
    """Retry a failed sink every 50-200 ms instead of up to 30 s, so the test's wait after the
    outage measures mlobs, not the backoff's cap."""
    for shipper in runtime.get().shippers:
        shipper.backoff = Backoff(base=0.05, cap=0.2)


@pytest.mark.slow
def test_pushgateway_outage_loses_nothing_and_does_not_slow_the_loop(
    spool_dir: Path, pushgateway: PushgatewayServer
) -> None:
    mlobs.configure(
        dir=str(spool_dir), pushgateway_url=pushgateway.url, flush_interval=0.05, git=False
    )
    _fast_retries()
    n, down_at, up_at = 10_000, 3_000, 7_000
    train = mlobs.step("train")
    per_step: list[float] = []
    with mlobs.run("outage", experiment="outage") as run:
        for i in range(1, n + 1):
            if i == down_at:
                pushgateway.stop()
            elif i == up_at:
                pushgateway.start()
            t0 = time.perf_counter()
            with train:
                mlobs.log(loss=1.0 / i, step=i)
            per_step.append(time.perf_counter() - t0)
            time.sleep(0.0002)  # a training step does some work: the outage spans many flushes
        failures = safety.self_metrics.get("mlobs_export_failures_total", "pushgateway")
    _flush_until_caught_up()
    text = _pushed(pushgateway)
    assert _value(text, "mlobs_run_step", run_id=run.run_id) == n
    assert _value(text, "mlobs_loss", run_id=run.run_id) == 1.0 / n
    assert _value(text, "mlobs_step_executions_total", run_id=run.run_id, step="train") == n
    assert _value(text, "mlobs_run_status", run_id=run.run_id, status="finished") == 1
    assert failures > 0  # the outage was seen by the sink
    normal = statistics.median(per_step[: down_at - 1] + per_step[up_at:])
    outage = statistics.median(per_step[down_at - 1 : up_at - 1])
    print(
        f"\nper step: normal {normal * 1e6:.1f} us, during the outage {outage * 1e6:.1f} us "
        f"(x{outage / normal:.2f}); {failures} failed pushes"
    )
    assert outage < 3 * normal


@pytest.mark.slow
def test_backlog_grows_while_the_pushgateway_is_down_and_drains_after(
    spool_dir: Path,
    pushgateway: PushgatewayServer,
    prometheus_server: Callable[..., PrometheusServer],
) -> None:
    mlobs.configure(
        dir=str(spool_dir),
        pushgateway_url=pushgateway.url,
        prometheus_port=0,
        flush_interval=0.05,
    )
    _fast_retries()
    exporter = _exporter()
    prometheus = prometheus_server(scrape_targets=[f"127.0.0.1:{exporter.port}"])
    backlog = 'mlobs_spool_backlog_records{sink="pushgateway"}'
    prometheus.wait_for(f"{backlog} == 0", bool)
    pushgateway.stop()
    with mlobs.run("backlog") as run:
        for i in range(200):
            mlobs.log(loss=float(i))
            if i % 50 == 49:
                mlobs.flush(timeout=1)
                time.sleep(0.1)
        mlobs.flush(timeout=1)
        result = prometheus.wait_for(f"{backlog} >= 200", bool)
        assert float(result[0]["value"][1]) >= 200
        age = prometheus.query('mlobs_spool_oldest_unshipped_age_seconds{sink="pushgateway"}')
        assert float(age[0]["value"][1]) > 0
        failed = prometheus.query('mlobs_export_failures_total{sink="pushgateway"}')
        assert float(failed[0]["value"][1]) > 0
        pushgateway.start()
    _flush_until_caught_up()
    prometheus.wait_for(f"{backlog} == 0", bool)
    prometheus.wait_for('mlobs_spool_backlog_records{sink="prometheus"} == 0', bool)
    assert _value(_pushed(pushgateway), "mlobs_loss", run_id=run.run_id) == 199.0
    assert math.isclose(
        float(prometheus.query(f'mlobs_loss{{run_id="{run.run_id}"}}')[0]["value"][1]), 199.0
    )
