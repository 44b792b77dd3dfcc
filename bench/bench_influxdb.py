"""InfluxDB sink benchmarks of issue #3: end-to-end throughput from ``mlobs.log`` to points
acknowledged by a real server, and CPU per million points, against influxdb-client alone.

The server is VictoriaMetrics' ``/api/v2/write`` (InfluxDB line protocol, answered once the points
are accepted), not InfluxDB 1.6.7: 1.6 has no ``/api/v2/write``, so it would need the tests'
Python translating proxy in the path, and the proxy (one Python thread re-sending each body) would
be the bottleneck measured, for both sides alike. VictoriaMetrics comes from ``scripts/backends.sh``
(``.backends/bin/victoria-metrics``).

Run from the repository root::

    python bench/bench_influxdb.py            # full run, prints the tables
    python bench/bench_influxdb.py --quick    # small sizes, a smoke test (cannot --write)
    python bench/bench_influxdb.py --write    # full run, rewrites its block of BENCHMARKS.md

Cases, interleaved (order rotated each repeat), each sending the same points (measurement
``mlobs_metrics``, tags run_id, run_name, experiment, rank, kind; fields ``loss`` and ``step``,
nanosecond timestamps) in batches of B points:

- mlobs: B calls of ``mlobs.log(loss=x)`` in a run, then ``mlobs.flush()``, which returns once the
  sink's shipper has had every record acknowledged (recorder, SQLite spool, shipper, exporter).
- client, Point: influxdb-client alone, SYNCHRONOUS write of B ``Point`` objects (the usual way to
  use it; the target peer).
- client, strings: influxdb-client alone, SYNCHRONOUS write of B line-protocol strings built with
  an f-string (the cheapest possible use of the client; for reference).

CPU is the process's user + system time over the case (every thread; the server is another
process and is not counted).
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

PEERS = ("influxdb-client",)
TARGET_VS_CLIENT = 0.8
BUCKET = "bench"
CASES = ("mlobs", "client_point", "client_str")
LABELS = {
    "mlobs": "mlobs: `mlobs.log` × B, `mlobs.flush()`",
    "client_point": "influxdb-client alone, B `Point`s per write",
    "client_str": "influxdb-client alone, B f-string lines per write",
}


# -- the server ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class VictoriaMetrics:
    """A VictoriaMetrics child process on 127.0.0.1, data in a temp dir, stopped by PID."""

    def __init__(self) -> None:
        binary = shutil.which("victoria-metrics") or str(ROOT / ".backends/bin/victoria-metrics")
        if not os.access(binary, os.X_OK):
            sys.exit("victoria-metrics missing: run scripts/backends.sh")
        self.dir = tempfile.mkdtemp(prefix="mlobs-bench-vm-")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(Path(self.dir) / "vm.log", "wb")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [
                binary,
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={self.dir}/data",
                "-retentionPeriod=100y",
                "-loggerLevel=WARN",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
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
                sys.exit("victoria-metrics did not start")
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
                    raise RuntimeError("the influxdb sink did not catch up")

    return _timed(body)


def _client_case(
    write_api: Any, n: int, batch: int, rep: int, use_points: bool
) -> tuple[float, float]:
    from influxdb_client import Point, WritePrecision

    run_id = f"client-{use_points}-{batch}-{rep}"
    tags = {"experiment": "default", "kind": "gauge", "rank": "0", "run_id": run_id}
    tags["run_name"] = run_id
    prefix = "mlobs_metrics," + ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
    ns = WritePrecision.NS
    now = time.time_ns

    def body() -> None:
        for start in range(0, n, batch):
            records: list[Any] = []
            append = records.append
            for i in range(start, min(n, start + batch)):
                if use_points:
                    point = Point("mlobs_metrics")
                    for key, value in tags.items():
                        point.tag(key, value)
                    append(point.field("loss", i * 0.001).field("step", i).time(now(), ns))
                else:
                    append(f"{prefix} loss={i * 0.001!r},step={i}i {now()}")
            write_api.write(bucket=BUCKET, org="-", record=records, write_precision=ns)

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


def bench_throughput(url: str, n: int, batches: Sequence[int], repeats: int) -> Throughput:
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS

    result = Throughput(n, batches)
    tmp = tempfile.mkdtemp(prefix="mlobs-bench-influx-")
    client = InfluxDBClient(url=url, token="", org="-", timeout=30_000)
    write_api = client.write_api(write_options=SYNCHRONOUS)
    cases: dict[str, Callable[[int, int], tuple[float, float]]] = {
        "mlobs": lambda b, r: _mlobs_case(n, b, r),
        "client_point": lambda b, r: _client_case(write_api, n, b, r, True),
        "client_str": lambda b, r: _client_case(write_api, n, b, r, False),
    }
    try:
        mlobs.configure(dir=tmp, influxdb_url=url, influxdb_bucket=BUCKET)
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
        write_api.close()
        client.close()
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
                    r.cpu_per_million(case, batch).fmt(".2f"),
                ]
            )
        vs_point = r.ratio("mlobs", "client_point", batch)
        passed = vs_point.median >= TARGET_VS_CLIENT
        ok = ok and passed
        ratios.append(
            [
                f"{batch:,}",
                "mlobs / client with `Point`s",
                vs_point.fmt(".2f"),
                f"≥ {TARGET_VS_CLIENT}",
                verdict(passed),
            ]
        )
        ratios.append(
            [
                f"{batch:,}",
                "mlobs / client with f-string lines",
                r.ratio("mlobs", "client_str", batch).fmt(".2f"),
                "",
                "",
            ]
        )
    n_rep = len(r.wall["mlobs", r.batches[0]])
    text = "\n\n".join(
        [
            "### 1. End to end: `mlobs.log` to points acknowledged by the server",
            f"{r.n:,} points per case and repeat, in batches of B, {n_rep} repeats after a "
            "warm-up, cases interleaved (order rotated each repeat). Server: VictoriaMetrics "
            "`/api/v2/write` on loopback (see the script's docstring for why not InfluxDB 1.6 "
            "behind the tests' proxy). Throughput in points/s and CPU seconds of this process "
            "per million points: median (min–max).",
            table(["B", "case", "points/s", "CPU s per 1M points"], rows),
            "Throughput ratios, taken per repeat:",
            table(["B", "ratio", "median (min–max)", "target", "result"], ratios),
        ]
    )
    return text, ok


# -- 2. encoding alone: the exporter's strings vs influxdb-client Points --------------------------


@dataclass
class Encoding:
    n: int
    us: dict[str, list[float]] = field(default_factory=dict)


def bench_encoding(n: int, repeats: int) -> Encoding:
    """Microseconds per point to turn spool records into line protocol."""
    from influxdb_client import Point, WritePrecision

    from mlobs.export.base import Batch
    from mlobs.export.influxdb import InfluxDBExporter
    from mlobs.record.types import Kind, Record
    from mlobs.spool.store import RunInfo

    split = {"split": "train"}
    records = [
        Record(i, Kind.GAUGE, 1_700_000_000_000_000_000 + i, "r1", "loss", i * 0.001, i, 0, split)
        for i in range(n)
    ]
    run = RunInfo("r1", "bench", "running", 0, resource={"experiment": "default", "rank": 0})
    batch = Batch(records, {"r1": run})
    exporter = InfluxDBExporter("http://127.0.0.1:9")

    def with_points() -> None:
        out = []
        for rec in records:
            info = batch.runs[rec.run_id]
            point = (
                Point("mlobs_metrics")
                .tag("experiment", info.resource["experiment"])
                .tag("kind", "gauge")
                .tag("rank", info.resource["rank"])
                .tag("run_id", rec.run_id)
                .tag("run_name", info.name)
            )
            for key, value in rec.attrs.items():
                point.tag(key, value)
            point.field(rec.name, rec.value).field("step", rec.step).field("epoch", rec.epoch)
            out.append(point.time(rec.ts_ns, WritePrecision.NS).to_line_protocol())

    cases: dict[str, Callable[[], Any]] = {
        "strings": lambda: exporter.lines(batch),
        "points": with_points,
    }
    result = Encoding(n, {k: [] for k in cases})
    for fn in cases.values():
        fn()
    for rep in range(repeats):
        order = list(cases) if rep % 2 == 0 else list(reversed(cases))
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            cases[name]()
            result.us[name].append((time.perf_counter() - t0) / n * 1e6)
    exporter.shutdown()
    return result


def report_encoding(r: Encoding) -> str:
    rows = [
        [
            "the exporter's f-strings (`InfluxDBExporter.lines`)",
            Stats.of(r.us["strings"]).fmt(".2f"),
        ],
        ["influxdb-client `Point(...).to_line_protocol()`", Stats.of(r.us["points"]).fmt(".2f")],
    ]
    ratio = Stats.of([p / s for p, s in zip(r.us["points"], r.us["strings"], strict=True)])
    return "\n\n".join(
        [
            "### 2. Encoding spool records as line protocol",
            f"{r.n:,} metric records (one value each, a split attribute, step and epoch), "
            f"{len(r.us['strings'])} repeats, alternating order. µs per point, median (min–max). "
            f"Points cost {ratio.fmt('.1f')}× the exporter's strings, which is why the exporter "
            "writes its own (escaped) line protocol and hands the client bytes.",
            table(["encoder", "µs per point"], rows),
        ]
    )


# -- driver --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    points: int
    batches: tuple[int, ...]
    repeats: int
    encode_n: int
    encode_repeats: int


FULL = Sizes(200_000, (1_000, 10_000), 7, 50_000, 7)
QUICK = Sizes(20_000, (1_000, 10_000), 2, 10_000, 3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument(
        "--write", action="store_true", help="rewrite the influxdb block of BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    if args.write and args.quick:
        parser.error("--write needs a full run (no --quick)")
    sizes = QUICK if args.quick else FULL

    print("[bench] encoding ...", file=sys.stderr, flush=True)
    encoding = report_encoding(bench_encoding(sizes.encode_n, sizes.encode_repeats))
    print("[bench] throughput ...", file=sys.stderr, flush=True)
    server = VictoriaMetrics()
    try:
        t0 = time.perf_counter()
        throughput, ok = report_throughput(
            bench_throughput(server.url, sizes.points, sizes.batches, sizes.repeats)
        )
        print(f"[bench] throughput: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        server.stop()
    section = "\n\n".join(
        [
            "## InfluxDB sink (issue #3)",
            measured_line(*PEERS)
            + (" **Quick run: sizes too small to quote.**" if args.quick else ""),
            "Rerun: `python bench/bench_influxdb.py --write`.",
            table(["benchmark", "result"], [["end-to-end throughput vs client", verdict(ok)]]),
            throughput,
            encoding,
        ]
    )
    print(section)
    if args.write:
        write_section("influxdb", section)
        print("\n[bench] wrote the influxdb block of BENCHMARKS.md", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
