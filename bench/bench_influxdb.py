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

PEERS = ("influxdb-client",)
TARGET_VS_CLIENT = 0.8
BUCKET = "bench"
LABELS = {
    "mlobs": "mlobs: `mlobs.log` × B, `mlobs.flush()`",
    "client_point": "influxdb-client alone, B `Point`s per write",
    "client_str": "influxdb-client alone, B f-string lines per write",
}
RATIOS = (
    Ratio("mlobs", "client_point", "mlobs / client with `Point`s", TARGET_VS_CLIENT),
    Ratio("mlobs", "client_str", "mlobs / client with f-string lines"),
)


# -- 1. end to end ---------------------------------------------------------------------------------


def _client_case(write_api: Any, n: int, batch: int, tag: str, use_points: bool) -> Timing:
    from influxdb_client import Point, WritePrecision

    run_id = f"client-{use_points}-{tag}"
    tags = {"experiment": "default", "kind": "gauge", "rank": "0", "run_id": run_id}
    tags["run_name"] = run_id
    prefix = "mlobs_metrics," + ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
    ns = WritePrecision.NS
    now = time.time_ns

    def body() -> None:
        for chunk in chunks(n, batch):
            records: list[Any] = []
            append = records.append
            for i in chunk:
                if use_points:
                    point = Point("mlobs_metrics")
                    for key, value in tags.items():
                        point.tag(key, value)
                    append(point.field("loss", i * 0.001).field("step", i).time(now(), ns))
                else:
                    append(f"{prefix} loss={i * 0.001!r},step={i}i {now()}")
            write_api.write(bucket=BUCKET, org="-", record=records, write_precision=ns)

    return timed(body)


def bench_throughput(url: str, load: Load) -> Throughput:
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS

    tmp = tempfile.mkdtemp(prefix="mlobs-bench-influx-")
    client = InfluxDBClient(url=url, token="", org="-", timeout=30_000)
    write_api = client.write_api(write_options=SYNCHRONOUS)
    n = load.points
    cases: dict[str, Case] = {
        "mlobs": lambda b, tag: mlobs_batches(n, b, tag, "influxdb"),
        "client_point": lambda b, tag: _client_case(write_api, n, b, tag, True),
        "client_str": lambda b, tag: _client_case(write_api, n, b, tag, False),
    }
    try:
        mlobs.configure(dir=tmp, influxdb_url=url, influxdb_bucket=BUCKET)
        return interleave(load, cases)
    finally:
        mlobs.shutdown()
        write_api.close()
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)


def report(r: Throughput) -> tuple[str, bool]:
    return report_throughput(
        r,
        "### 1. End to end: `mlobs.log` to points acknowledged by the server",
        ". Server: VictoriaMetrics `/api/v2/write` on loopback (see the script's docstring for "
        "why not InfluxDB 1.6 behind the tests' proxy).",
        LABELS,
        RATIOS,
    )


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
    result = Encoding(n, per_unit(cases, repeats, n, 1e6))
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
    load: Load
    encode_n: int
    encode_repeats: int


FULL = Sizes(FULL_LOAD, 50_000, 7)
QUICK = Sizes(QUICK_LOAD, 10_000, 3)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, "influxdb", argv)
    sizes = QUICK if args.quick else FULL
    with stage("encoding"):
        encoding = report_encoding(bench_encoding(sizes.encode_n, sizes.encode_repeats))
    with stage("throughput"), victoria_metrics() as server:
        throughput, ok = report(bench_throughput(server.url, sizes.load))
    return finish(
        args,
        "influxdb",
        "## InfluxDB sink (issue #3)",
        PEERS,
        [("end-to-end throughput vs client", ok)],
        [throughput, encoding],
    )


if __name__ == "__main__":
    sys.exit(main())
