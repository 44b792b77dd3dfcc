"""Fluentd sink benchmark of issue #3: end-to-end points/s from ``mlobs.log`` to the forward
server, and CPU seconds per million points, against fluent-logger's ``FluentSender`` sending the
same points to the same server in the same run.

Run from the repository root::

    python bench/bench_fluentd.py            # full run, prints the table
    python bench/bench_fluentd.py --quick    # fewer repeats, a smoke test (cannot --write)
    python bench/bench_fluentd.py --write    # full run, rewrites the fluentd block of BENCHMARKS.md

The server is the test suite's forward-protocol stand-in (tests/fluent_standin.py; no Fluentd can
be installed here), run in a process of its own so that its CPU time is not counted, counting
the events it decodes. Cases are interleaved (order rotated each repeat) after a warm-up; the
garbage collector and mlobs' background threads stay on; nothing is subtracted.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from _report import ROOT, table, verdict
from _sinks import (
    Case,
    Load,
    Throughput,
    Timing,
    case_row,
    finish,
    interleave,
    parse_args,
    stage,
    timed,
)
from fluent.sender import EventTime, FluentSender

import mlobs

PEERS = ("fluent-logger", "msgpack")
TARGET_VS_BARE = 0.8
TAG = "mlobs.metric"


class StandIn:
    """The forward-protocol stand-in in a child process, asked for counts over a pipe."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fluent_standin"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError(f"stand-in did not start: {line}")
        self.port = int(line[1])

    def count(self, tag: str = TAG) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"count {tag}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait_count(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"stand-in has {self.count()} of {n} events")
            time.sleep(0.001)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(10)


def _values(n: int) -> list[float]:
    rng = random.Random(3)
    return [rng.random() for _ in range(n)]


class MlobsCase:
    """``mlobs.log(loss=x)`` N times in a run, then until the stand-in has them: with ack,
    ``mlobs.flush()`` returns once every frame is acknowledged; without, the count is polled."""

    def __init__(self, server: StandIn, ack: bool) -> None:
        self.server = server
        self.ack = ack
        self.tmp = tempfile.mkdtemp(prefix="mlobs-bench-fluentd-")

    def run(self, values: list[float]) -> Timing:
        mlobs.configure(
            dir=self.tmp,
            fluentd_host="127.0.0.1",
            fluentd_port=self.server.port,
            fluentd_ack=self.ack,
            capture_logs=False,
        )
        log, flush, server = mlobs.log, mlobs.flush, self.server
        try:
            with mlobs.run("bench-fluentd"):
                log(loss=0.0)
                if not flush(30):
                    raise RuntimeError("warm-up not delivered")
                target = server.count() + len(values)

                def body() -> None:
                    for x in values:
                        log(loss=x)
                    if not flush(60):
                        raise RuntimeError("not delivered")
                    if not self.ack:
                        server.wait_count(target)

                timing = timed(body)
                if server.count() < target:
                    raise RuntimeError("acknowledged but not received")
                return timing
        finally:
            mlobs.shutdown()

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class BareCase:
    """The same points through fluent-logger alone: ``FluentSender.emit_with_time`` of the same
    map (run id, name, kind, value, step, seq) with a nanosecond ``EventTime``, then the count
    polled. fluent-logger cannot ask for acks."""

    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.sender = FluentSender("mlobs", "127.0.0.1", server.port, nanosecond_precision=True)
        self.seq = 0

    def run(self, values: list[float]) -> Timing:
        server, emit = self.server, self.sender.emit_with_time
        target = server.count() + len(values)
        now, from_ns = time.time_ns, EventTime.from_unix_nano
        base = {"run_id": "0123456789abcdef0123456789abcdef", "run_name": "bench-fluentd"}
        base["experiment"] = "default"

        def body() -> None:
            for x in values:
                self.seq += 1
                record = {**base, "name": "loss", "kind": "gauge", "value": x}
                record["step"] = record["seq"] = self.seq
                if not emit("metric", from_ns(now()), record):
                    raise RuntimeError(f"fluent-logger failed: {self.sender.last_error}")
            server.wait_count(target)

        return timed(body)

    def close(self) -> None:
        self.sender.close()


CASES = ("mlobs_ack", "mlobs", "bare")
LABELS = {
    "mlobs_ack": "mlobs, `MLOBS_FLUENTD_ACK=1` (until every chunk is acked)",
    "mlobs": "mlobs, no ack (until the server has decoded them)",
    "bare": "fluent-logger `FluentSender.emit_with_time` (until decoded)",
}


def bench(n: int, repeats: int, server: StandIn) -> Throughput:
    """Every case sends bursts of ``n`` points (a warm-up burst of a tenth of that first)."""
    values = _values(n)
    runners: dict[str, MlobsCase | BareCase] = {
        "mlobs_ack": MlobsCase(server, ack=True),
        "mlobs": MlobsCase(server, ack=False),
        "bare": BareCase(server),
    }

    def case(runner: MlobsCase | BareCase) -> Case:
        return lambda size, _tag: runner.run(values[:size])

    try:
        cases = {name: case(runner) for name, runner in runners.items()}
        return interleave(Load(n, (n,), repeats), cases, warmup=max(100, n // 10))
    finally:
        for runner in runners.values():
            runner.close()


def report(results: Sequence[Throughput]) -> tuple[str, bool]:
    rows = []
    ok = True
    for r in results:
        for case in CASES:
            passed = ""
            ratio = ""
            if case != "bare":
                stats = r.ratio(case, "bare", r.n)
                ratio = stats.fmt(".2f")
                good = stats.median >= TARGET_VS_BARE
                ok = ok and good
                passed = verdict(good)
            rows.append([*case_row(r, r.n, case, LABELS[case], ".1f"), ratio, passed])
    text = "\n\n".join(
        [
            "### End to end, `mlobs.log` to the forward server",
            f"Bursts of N points, {results[0].repeats()} repeats of each case after a warm-up, the "
            "cases interleaved (order rotated each repeat). mlobs: `mlobs.configure(dir=<tmp>, "
            "fluentd_host=..., fluentd_port=...)` (default flush interval, log capture off), "
            "`mlobs.log(loss=x)` N times inside a run, then `mlobs.flush()`: the clock stops "
            "when every PackedForward chunk is acknowledged (ack) or when the server has "
            "decoded all N events (no ack). Bare: `FluentSender(nanosecond_precision=True)`, "
            "one `emit_with_time` (Message mode) per point of the same map, the clock stops "
            "when the server has decoded all N. The server is tests/fluent_standin.py in its "
            "own process (a stand-in: no Fluentd can be installed here), counting events. "
            "CPU is this process's user + sys time (all its threads: flusher, shipper), scaled "
            "to one million points. Median (min–max).",
            table(
                [
                    "N",
                    "case",
                    "points/s",
                    "CPU s per 1M points",
                    "throughput / bare (per repeat)",
                    f"≥ {TARGET_VS_BARE}",
                ],
                rows,
            ),
        ]
    )
    return text, ok


@dataclass(frozen=True)
class Sizes:
    bursts: tuple[int, ...]
    repeats: int


FULL = Sizes((1_000, 10_000), 9)
QUICK = Sizes((1_000, 10_000), 2)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, "fluentd", argv, quick_help="fewer repeats, a smoke test")
    sizes = QUICK if args.quick else FULL
    server = StandIn()
    try:
        results = []
        for n in sizes.bursts:
            with stage(f"fluentd N={n:,}"):
                results.append(bench(n, sizes.repeats, server))
    finally:
        server.close()
    body, ok = report(results)
    return finish(
        args,
        "fluentd",
        "## Fluentd sink (issue #3)",
        PEERS,
        [("fluentd end to end", ok)],
        [body],
        quick_note="too few repeats to quote",
    )


if __name__ == "__main__":
    sys.exit(main())
