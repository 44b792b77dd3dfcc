"""Smoke tests of the backend fixtures in tests/backends.py: each starts the real server and
asserts on what the server returns to a query."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.backends import (
    InfluxDBServer,
    InfluxV2Proxy,
    OtelTapReceiver,
    PrometheusServer,
    PushgatewayServer,
    VictoriaMetricsServer,
    VmagentServer,
    http,
)

pytestmark = pytest.mark.slow


def test_prometheus_scrapes_itself(prometheus_server: Callable[..., PrometheusServer]) -> None:
    prometheus = prometheus_server(scrape_self=True)
    result = prometheus.wait_for('up{job="prometheus"}')
    assert result[0]["value"][1] == "1"
    assert result[0]["metric"]["instance"] == prometheus.address
    assert prometheus.query('up{job="mlobs"}') == []


def test_pushgateway_pushed_group_reaches_prometheus(
    pushgateway: PushgatewayServer, prometheus_server: Callable[..., PrometheusServer]
) -> None:
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    prometheus = prometheus_server([pushgateway.address])
    registry = CollectorRegistry()
    Gauge("mlobs_smoke_value", "smoke", ["run"], registry=registry).labels("r1").set(42)
    push_to_gateway(pushgateway.address, job="smoke", registry=registry)

    assert 'mlobs_smoke_value{instance="",job="smoke",run="r1"} 42' in pushgateway.metrics_text()
    result = prometheus.wait_for('mlobs_smoke_value{job="smoke"}')
    assert result[0]["metric"]["run"] == "r1"  # honor_labels keeps the pushed labels
    assert result[0]["value"][1] == "42"

    # The pushed group survives a Pushgateway restart on the same port.
    pushgateway.stop()
    pushgateway.start()
    assert "mlobs_smoke_value" in pushgateway.metrics_text()


def test_influxdb_write_query_and_restart(influxdb: InfluxDBServer) -> None:
    influxdb.create_database("mlobs")
    influxdb.write("train,run=r1 loss=0.25,step=3i 1700000000000000000\n", db="mlobs")
    rows = influxdb.values("SELECT loss, step, run FROM train", db="mlobs")
    assert rows == [{"time": 1700000000000000000, "loss": 0.25, "step": 3, "run": "r1"}]

    port = influxdb.port
    influxdb.stop()
    with pytest.raises(OSError):
        http("GET", influxdb.url + "/ping", timeout=2)
    influxdb.start()
    assert influxdb.port == port
    assert influxdb.values("SELECT loss FROM train", db="mlobs")[0]["loss"] == 0.25


def test_influxdb_client_writes_through_v2_proxy(
    influxdb: InfluxDBServer, influx_v2_proxy: InfluxV2Proxy
) -> None:
    # influx_v2_proxy is a test-owned /api/v2/write -> /write translation, not part of InfluxDB.
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    influxdb.create_database("db")
    with InfluxDBClient(url=influx_v2_proxy.url, token="user:pass", org="-") as client:
        assert client.ping()
        write_api = client.write_api(write_options=SYNCHRONOUS)
        write_api.write(
            bucket="db/autogen",
            record="gpu,device=0 util=0.75 1700000000000000000",
            write_precision="ns",
        )
        write_api.write(bucket="db", record="gpu,device=1 util=0.5 1700000000", write_precision="s")
        rows = influxdb.values("SELECT util, device FROM gpu ORDER BY time", db="db")
        assert [(row["device"], row["util"]) for row in rows] == [("0", 0.75), ("1", 0.5)]

        influxdb.stop()
        with pytest.raises(ApiException) as raised:
            write_api.write(
                bucket="db", record="gpu,device=2 util=1 1700000001", write_precision="s"
            )
        assert raised.value.status == 503
        influxdb.start()
        write_api.write(bucket="db", record="gpu,device=2 util=1 1700000001", write_precision="s")
    assert len(influxdb.values("SELECT util FROM gpu", db="db")) == 3


def test_victoria_metrics_accepts_influx_v2_write(victoria_metrics: VictoriaMetricsServer) -> None:
    now_ns = time.time_ns()
    status, _ = http(
        "POST",
        f"{victoria_metrics.url}/api/v2/write?org=o&bucket=b&precision=ns",
        f"train,run=r1 loss=0.5,acc=0.9 {now_ns}\n".encode(),
    )
    assert status == 204
    exported = victoria_metrics.wait_for_export('{__name__=~"train_.*"}', lambda r: len(r) == 2)
    assert {series["metric"]["__name__"] for series in exported} == {"train_loss", "train_acc"}
    assert all(series["timestamps"] == [now_ns // 1_000_000] for series in exported)
    result = victoria_metrics.wait_for('train_loss{run="r1"}')
    assert float(result[0]["value"][1]) == 0.5


def test_vmagent_forwards_otlp_metrics_to_prometheus(
    prometheus_server: Callable[..., PrometheusServer],
    vmagent: Callable[[PrometheusServer], VmagentServer],
) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    prometheus = prometheus_server()
    agent = vmagent(prometheus)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=agent.otlp_metrics_url), export_interval_millis=60_000
    )
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "mlobs-smoke"})
    )
    counter = provider.get_meter("smoke").create_counter("mlobs.smoke.samples")
    counter.add(5, {"run": "r1"})
    provider.shutdown()  # exports once

    result = prometheus.wait_for('mlobs_smoke_samples_total{run="r1"}')
    assert result[0]["value"][1] == "5"


def test_oteltap_receives_spans_and_restarts(oteltap: OtelTapReceiver) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    exporter = OTLPSpanExporter(endpoint=oteltap.traces_url, timeout=2)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("smoke")
    with tracer.start_as_current_span("epoch", attributes={"mlobs.epoch": 1}):
        pass
    spans = oteltap.wait_for_spans(1)
    assert spans[0].name == "epoch"
    assert spans[0].attributes[0].key == "mlobs.epoch"
    assert spans[0].attributes[0].value.int_value == 1

    # An outage: the port is closed, exports fail; after start() on the same port they arrive.
    oteltap.stop()
    lost = TracerProvider().get_tracer("smoke").start_span("lost")
    lost.end()
    assert exporter.export([lost]) == SpanExportResult.FAILURE  # type: ignore[list-item]
    oteltap.start()
    with tracer.start_as_current_span("after-restart"):
        pass
    names = [span.name for span in oteltap.wait_for_spans(2)]
    assert names == ["epoch", "after-restart"]
    provider.shutdown()
