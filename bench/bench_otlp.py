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

import argparse
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _report import ROOT, Stats, measured_line, table, verdict, write_section

import mlobs

PEERS = ("opentelemetry-exporter-otlp-proto-http", "opentelemetry-sdk")
TARGET_VS_EXPORTER = 0.8
CASES = ("mlobs", "exporter")
LABELS = {
    "mlobs": "mlobs: `mlobs.log` × B, `mlobs.flush()`",
    "exporter": "`OTLPMetricExporter` alone, B points per export",
}


# -- the servers -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A child process on 127.0.0.1, data in a temp dir, ready when ``/health`` answers 200,
    stopped by PID."""

    def __init__(self, name: str, args: Callable[[str, str], list[str]]) -> None:
        binary = shutil.which(name) or str(ROOT / ".backends/bin" / name)
        if not os.access(binary, os.X_OK):
            sys.exit(f"{name} missing: run scripts/backends.sh")
        self.dir = tempfile.mkdtemp(prefix=f"mlobs-bench-{name}-")
        address = f"127.0.0.1:{_free_port()}"
        self.url = f"http://{address}"
        self._log = open(Path(self.dir) / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [binary, *args(address, self.dir)], stdout=self._log, stderr=subprocess.STDOUT
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        while True:
            try:
                with opener.open(self.url + "/health", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                sys.exit(f"{name} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_servers() -> tuple[Server, Server]:
    storage = Server(
        "victoria-metrics",
        lambda addr, d: [
            f"-httpListenAddr={addr}",
            f"-storageDataPath={d}/data",
            "-retentionPeriod=100y",
            "-loggerLevel=WARN",
        ],
    )
    agent = Server(
        "vmagent",
        lambda addr, d: [
            f"-httpListenAddr={addr}",
            f"-remoteWrite.url={storage.url}/api/v1/write",
            f"-remoteWrite.tmpDataPath={d}/queue",
            "-opentelemetry.usePrometheusNaming",
            "-loggerLevel=WARN",
        ],
    )
    return storage, agent


# -- the cases -------------------------------------------------------------------------------------


def _timed(body: Callable[[], None]) -> tuple[float, float]:
    """Wall and CPU seconds of ``body``."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    body()
    return time.perf_counter() - t0, time.process_time() - c0


def _mlobs_case(n: int, batch: int, rep: int) -> tuple[float, float]:
    log = mlobs.log

    def body() -> None:
        with mlobs.run(f"bench-{batch}-{rep}"):
            for start in range(0, n, batch):
                for i in range(start, min(n, start + batch)):
                    log(loss=i * 0.001)
                if not mlobs.flush(60):
                    raise RuntimeError("the otlp sink did not catch up")

    return _timed(body)


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


def _exporter_case(exporter: Any, n: int, batch: int, rep: int) -> tuple[float, float]:
    from opentelemetry.sdk.metrics.export import (
        Gauge,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    resource = _run_resource(f"exporter-{batch}-{rep}")
    scope = InstrumentationScope("bench", "0")
    attrs = {"rank": 0}
    now = time.time_ns

    def body() -> None:
        for start in range(0, n, batch):
            points = [
                NumberDataPoint(attrs, 0, now(), i * 0.001)
                for i in range(start, min(n, start + batch))
            ]
            data = MetricsData(
                [
                    ResourceMetrics(
                        resource,
                        [ScopeMetrics(scope, [Metric("loss", "", "", Gauge(points))], "")],
                        "",
                    )
                ]
            )
            if exporter.export(data).name != "SUCCESS":
                raise RuntimeError("the exporter's export failed")

    return _timed(body)


@dataclass
class Throughput:
    n: int
    batches: Sequence[int]
    wall: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def rate(self, case: str, batch: int) -> Stats:
        return Stats.of([self.n / w for w in self.wall[case, batch]])

    def cpu_per_million(self, case: str, batch: int) -> Stats:
        return Stats.of([c / self.n * 1e6 for c in self.cpu[case, batch]])

    def ratio(self, case: str, peer: str, batch: int) -> Stats:
        pairs = zip(self.wall[peer, batch], self.wall[case, batch], strict=True)
        return Stats.of([p / c for p, c in pairs])  # throughput ratio = inverse time ratio


def bench_throughput(metrics_url: str, n: int, batches: Sequence[int], repeats: int) -> Throughput:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    result = Throughput(n, batches)
    tmp = tempfile.mkdtemp(prefix="mlobs-bench-otlp-")
    exporter = OTLPMetricExporter(endpoint=metrics_url, timeout=30)
    cases: dict[str, Callable[[int, int], tuple[float, float]]] = {
        "mlobs": lambda b, r: _mlobs_case(n, b, r),
        "exporter": lambda b, r: _exporter_case(exporter, n, b, r),
    }
    os.environ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = metrics_url
    try:
        mlobs.configure(dir=tmp, capture_logs=False)
        for case in cases.values():  # warm-up: connections, imports, caches
            case(min(batches), -1)
        order = list(cases)
        for rep in range(repeats):
            for batch in batches:
                shift = rep % len(order)
                for name in order[shift:] + order[:shift]:
                    wall, cpu = cases[name](batch, rep)
                    result.wall.setdefault((name, batch), []).append(wall)
                    result.cpu.setdefault((name, batch), []).append(cpu)
    finally:
        mlobs.shutdown()
        exporter.shutdown()
        os.environ.pop("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", None)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def report_throughput(r: Throughput) -> tuple[str, bool]:
    rows = []
    ratios = []
    ok = True
    for batch in r.batches:
        for case in CASES:
            rows.append(
                [
                    f"{batch:,}",
                    LABELS[case],
                    r.rate(case, batch).fmt(",.0f"),
                    r.cpu_per_million(case, batch).fmt(".1f"),
                ]
            )
        vs_exporter = r.ratio("mlobs", "exporter", batch)
        passed = vs_exporter.median >= TARGET_VS_EXPORTER
        ok = ok and passed
        ratios.append(
            [
                f"{batch:,}",
                "mlobs / `OTLPMetricExporter` alone",
                vs_exporter.fmt(".2f"),
                f"≥ {TARGET_VS_EXPORTER}",
                verdict(passed),
            ]
        )
    n_rep = len(r.wall["mlobs", r.batches[0]])
    text = "\n\n".join(
        [
            "### 1. End to end: `mlobs.log` to points acknowledged by vmagent",
            f"{r.n:,} points per case and repeat, in batches of B, {n_rep} repeats after a "
            "warm-up, cases interleaved (order rotated each repeat). Receiver: vmagent's OTLP/HTTP "
            "endpoint on loopback, forwarding to VictoriaMetrics (see the script's docstring). "
            "Throughput in points/s and CPU seconds of this process per million points: median "
            "(min–max).",
            table(["B", "case", "points/s", "CPU s per 1M points"], rows),
            "Throughput ratios, taken per repeat:",
            table(["B", "ratio", "median (min–max)", "target", "result"], ratios),
        ]
    )
    return text, ok


# -- 2. where the time goes: conversion and encoding ---------------------------------------------


@dataclass
class Stages:
    n: int
    us: dict[str, list[float]] = field(default_factory=dict)


def bench_stages(n: int, repeats: int) -> Stages:
    """Microseconds per point: spool records to ``MetricsData`` (mlobs' conversion) against
    building the same ``MetricsData`` by hand, and the exporter's protobuf encoding of it."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics.export import (
        Gauge,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from mlobs.export.otlp_metrics import MetricsBuilder
    from mlobs.export.otlp_resource import Resources
    from mlobs.record.types import Kind, Record
    from mlobs.spool.store import RunInfo

    ts0 = 1_700_000_000_000_000_000
    records = [Record(i, Kind.GAUGE, ts0 + i, "r1", "loss", i * 0.001, i, 0, {}) for i in range(n)]
    runs = {"r1": RunInfo("r1", "bench", "running", ts0, resource={"rank": 0, "host": "h"})}
    builder = MetricsBuilder(Resources())
    resource = _run_resource("r1")
    scope = InstrumentationScope("bench", "0")

    def by_hand() -> Any:
        attrs = {"rank": 0}
        points = [NumberDataPoint(attrs, 0, r.ts_ns, r.value) for r in records]
        metric = Metric("loss", "", "", Gauge(points))
        return MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, [metric], "")], "")])

    data = by_hand()
    cases: dict[str, Callable[[], Any]] = {
        "mlobs": lambda: builder.build(records, runs),
        "by_hand": by_hand,
        "encode": lambda: encode_metrics(data).SerializeToString(),
    }
    result = Stages(n, {k: [] for k in cases})
    for fn in cases.values():
        fn()
    for rep in range(repeats):
        order = list(cases)
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            gc.collect()
            t0 = time.perf_counter()
            cases[name]()
            result.us[name].append((time.perf_counter() - t0) / n * 1e6)
    return result


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
    points: int
    batches: tuple[int, ...]
    repeats: int
    stage_n: int
    stage_repeats: int


FULL = Sizes(200_000, (1_000, 10_000), 7, 50_000, 7)
QUICK = Sizes(20_000, (1_000, 10_000), 2, 10_000, 3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument(
        "--write", action="store_true", help="rewrite the otlp block of BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    if args.write and args.quick:
        parser.error("--write needs a full run (no --quick)")
    sizes = QUICK if args.quick else FULL

    print("[bench] stages ...", file=sys.stderr, flush=True)
    stages = report_stages(bench_stages(sizes.stage_n, sizes.stage_repeats))
    print("[bench] throughput ...", file=sys.stderr, flush=True)
    storage, agent = start_servers()
    try:
        t0 = time.perf_counter()
        throughput, ok = report_throughput(
            bench_throughput(
                agent.url + "/opentelemetry/v1/metrics", sizes.points, sizes.batches, sizes.repeats
            )
        )
        print(f"[bench] throughput: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        agent.stop()
        storage.stop()
    section = "\n\n".join(
        [
            "## OTLP sink (issue #3)",
            measured_line(*PEERS)
            + (" **Quick run: sizes too small to quote.**" if args.quick else ""),
            "Rerun: `python bench/bench_otlp.py --write`.",
            table(["benchmark", "result"], [["end-to-end throughput vs exporter", verdict(ok)]]),
            throughput,
            stages,
        ]
    )
    print(section)
    if args.write:
        write_section("otlp", section)
        print("\n[bench] wrote the otlp block of BENCHMARKS.md", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
