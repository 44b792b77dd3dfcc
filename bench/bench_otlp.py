"""OTLP sink benchmarks of issue #3: end-to-end throughput from ``mlobs.log`` to points
acknowledged by a real OTLP receiver, and CPU per million points, against the OTel
``OTLPMetricExporter`` alone sending the same points.

The receiver is vmagent (``/opentelemetry/v1/metrics``, OTLP/HTTP protobuf), as in the tests; it
answers once the points are in its queue, and forwards them to a VictoriaMetrics single node.
Not to Prometheus as the tests do: Prometheus keeps milliseconds and refuses a second value of a
series within one millisecond, and at these rates thousands of points of the one series share a
millisecond (what vmagent acknowledges does not depend on what is behind it). Both binaries come
from ``scripts/backends.sh`` (``.backends/bin``).

Run from the repository root::

    python bench/bench_otlp.py            # full run, prints the tables
    python bench/bench_otlp.py --quick    # small sizes, a smoke test (cannot --write)
    python bench/bench_otlp.py --write    # full run, rewrites its block of BENCHMARKS.md

Cases, interleaved (order rotated each repeat), each sending N gauge points of one metric (``loss``
with ``rank`` as attribute, its own nanosecond timestamp, the resource attributes of a run) in
batches of B points:

- mlobs: B calls of ``mlobs.log(loss=x)`` in a run, then ``mlobs.flush()``, which returns once the
  sink's shipper has had every record acknowledged (recorder, SQLite spool, shipper, conversion
  to ``MetricsData``, ``OTLPMetricExporter``). The run's step gauge adds a point a second.
- exporter alone: the same B points built as the SDK's ``NumberDataPoint`` / ``Metric`` /
  ``MetricsData`` by hand and handed to an ``OTLPMetricExporter`` of its own (the target peer).

CPU is the process's user + system time over the case (every thread; the servers are other
processes and are not counted).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from _report import Stats, table
from _sinks import (
    FULL_LOAD,
    QUICK_LOAD,
    Case,
    Load,
    Ratio,
    Server,
    Throughput,
    Timing,
    chunks,
    finish,
    interleave,
    mlobs_batches,
    parse_args,
    per_unit,
    report_throughput,
    stage,
    timed,
    victoria_metrics,
)

import mlobs

PEERS = ("opentelemetry-exporter-otlp-proto-http", "opentelemetry-sdk")
TARGET_VS_EXPORTER = 0.8
LABELS = {
    "mlobs": "mlobs: `mlobs.log` × B, `mlobs.flush()`",
    "exporter": "`OTLPMetricExporter` alone, B points per export",
}
RATIOS = (Ratio("mlobs", "exporter", "mlobs / `OTLPMetricExporter` alone", TARGET_VS_EXPORTER),)


def vmagent(storage: Server) -> Server:
    """vmagent receiving OTLP/HTTP, forwarding to ``storage`` by remote write."""
    return Server(
        "vmagent",
        lambda address, data: [
            f"-httpListenAddr={address}",
            f"-remoteWrite.url={storage.url}/api/v1/write",
            f"-remoteWrite.tmpDataPath={data}/queue",
            "-opentelemetry.usePrometheusNaming",
            "-loggerLevel=WARN",
        ],
    )


# -- 1. end to end ---------------------------------------------------------------------------------


def _run_resource(run_id: str) -> Any:
    """The attributes mlobs gives a run's resource (see ``mlobs.export.otlp_resource``)."""
    from opentelemetry.sdk.resources import Resource

    from mlobs.instrument.lineage import host_facts

    facts = host_facts()
    return Resource.create(
        {
            "service.name": "mlobs",
            "service.instance.id": run_id,
            "mlobs.run.id": run_id,
            "mlobs.run.name": run_id,
            "mlobs.experiment": "default",
            "mlobs.local_rank": 0,
            "mlobs.world_size": 1,
            "host.name": facts["host"],
            "process.pid": facts["pid"],
            "process.runtime.version": facts["python"],
            "process.command": facts["argv0"],
        }
    )


def _loss_metrics(run_id: str) -> Callable[[list[Any]], Any]:
    """``points -> MetricsData``: one gauge ``loss`` holding those points, in the resource mlobs
    gives run ``run_id``, under a scope of the bench's own."""
    from opentelemetry.sdk.metrics.export import (
        Gauge,
        Metric,
        MetricsData,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    resource = _run_resource(run_id)
    scope = InstrumentationScope("bench", "0")

    def build(points: list[Any]) -> Any:
        metric = Metric("loss", "", "", Gauge(points))
        return MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, [metric], "")], "")])

    return build


def _exporter_case(exporter: Any, n: int, batch: int, tag: str) -> Timing:
    from opentelemetry.sdk.metrics.export import NumberDataPoint

    loss_metrics = _loss_metrics(f"exporter-{tag}")
    attrs = {"rank": 0}
    now = time.time_ns

    def body() -> None:
        for chunk in chunks(n, batch):
            points = [NumberDataPoint(attrs, 0, now(), i * 0.001) for i in chunk]
            if exporter.export(loss_metrics(points)).name != "SUCCESS":
                raise RuntimeError("the exporter's export failed")

    return timed(body)


def bench_throughput(metrics_url: str, load: Load) -> Throughput:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    tmp = tempfile.mkdtemp(prefix="mlobs-bench-otlp-")
    exporter = OTLPMetricExporter(endpoint=metrics_url, timeout=30)
    n = load.points
    cases: dict[str, Case] = {
        "mlobs": lambda b, tag: mlobs_batches(n, b, tag, "otlp"),
        "exporter": lambda b, tag: _exporter_case(exporter, n, b, tag),
    }
    os.environ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = metrics_url
    try:
        mlobs.configure(dir=tmp, capture_logs=False)
        return interleave(load, cases)
    finally:
        mlobs.shutdown()
        exporter.shutdown()
        os.environ.pop("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", None)
        shutil.rmtree(tmp, ignore_errors=True)


def report(r: Throughput) -> tuple[str, bool]:
    return report_throughput(
        r,
        "### 1. End to end: `mlobs.log` to points acknowledged by vmagent",
        ". Receiver: vmagent's OTLP/HTTP endpoint on loopback, forwarding to VictoriaMetrics "
        "(see the script's docstring).",
        LABELS,
        RATIOS,
        cpu_spec=".1f",
    )


# -- 2. where the time goes: conversion and encoding ---------------------------------------------


@dataclass
class Stages:
    n: int
    us: dict[str, list[float]] = field(default_factory=dict)


def bench_stages(n: int, repeats: int) -> Stages:
    """Microseconds per point: spool records to ``MetricsData`` (mlobs' conversion) against
    building the same ``MetricsData`` by hand, and the exporter's protobuf encoding of it."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics.export import NumberDataPoint

    from mlobs.export.otlp_metrics import MetricsBuilder
    from mlobs.export.otlp_resource import Resources
    from mlobs.record.types import Kind, Record
    from mlobs.spool.store import RunInfo

    ts0 = 1_700_000_000_000_000_000
    records = [Record(i, Kind.GAUGE, ts0 + i, "r1", "loss", i * 0.001, i, 0, {}) for i in range(n)]
    runs = {"r1": RunInfo("r1", "bench", "running", ts0, resource={"rank": 0, "host": "h"})}
    builder = MetricsBuilder(Resources())
    loss_metrics = _loss_metrics("r1")

    def by_hand() -> Any:
        attrs = {"rank": 0}
        return loss_metrics([NumberDataPoint(attrs, 0, r.ts_ns, r.value) for r in records])

    data = by_hand()
    cases: dict[str, Callable[[], Any]] = {
        "mlobs": lambda: builder.build(records, runs),
        "by_hand": by_hand,
        "encode": lambda: encode_metrics(data).SerializeToString(),
    }
    return Stages(n, per_unit(cases, repeats, n, 1e6))


def report_stages(r: Stages) -> str:
    rows = [
        ["mlobs: spool records to `MetricsData` (`MetricsBuilder.build`)", "mlobs"],
        ["the same `MetricsData` built by hand", "by_hand"],
        ["the exporter's protobuf encoding and serialisation of it", "encode"],
    ]
    return "\n\n".join(
        [
            "### 2. Where the time goes",
            f"{r.n:,} metric records (one value each, step, epoch), {len(r.us['mlobs'])} repeats, "
            "order rotated. µs per point, median (min–max). Encoding, which both sides pay, "
            "weighs more than building the SDK objects.",
            table(
                ["stage", "µs per point"],
                [[label, Stats.of(r.us[k]).fmt(".2f")] for label, k in rows],
            ),
        ]
    )


# -- driver --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    load: Load
    stage_n: int
    stage_repeats: int


FULL = Sizes(FULL_LOAD, 50_000, 7)
QUICK = Sizes(QUICK_LOAD, 10_000, 3)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, "otlp", argv)
    sizes = QUICK if args.quick else FULL
    with stage("stages"):
        stages = report_stages(bench_stages(sizes.stage_n, sizes.stage_repeats))
    with stage("throughput"), victoria_metrics() as storage, vmagent(storage) as agent:
        throughput, ok = report(
            bench_throughput(agent.url + "/opentelemetry/v1/metrics", sizes.load)
        )
    return finish(
        args,
        "otlp",
        "## OTLP sink (issue #3)",
        PEERS,
        [("end-to-end throughput vs exporter", ok)],
        [throughput, stages],
    )


if __name__ == "__main__":
    sys.exit(main())
