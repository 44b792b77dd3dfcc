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

import argparse
import gc
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _report import ROOT, Stats, measured_line, table, verdict, write_section
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


@dataclass
class Timing:
    wall: float
    cpu: float


def _timed(body: Callable[[], None]) -> Timing:
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    body()
    return Timing(time.perf_counter() - w0, time.process_time() - c0)


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

                timing = _timed(body)
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

        return _timed(body)

    def close(self) -> None:
        self.sender.close()


CASES = ("mlobs_ack", "mlobs", "bare")
LABELS = {
    "mlobs_ack": "mlobs, `MLOBS_FLUENTD_ACK=1` (until every chunk is acked)",
    "mlobs": "mlobs, no ack (until the server has decoded them)",
    "bare": "fluent-logger `FluentSender.emit_with_time` (until decoded)",
}


@dataclass
class Result:
    n: int
    timings: dict[str, list[Timing]] = field(default_factory=dict)

    def rate(self, case: str) -> Stats:
        return Stats.of([self.n / t.wall for t in self.timings[case]])

    def cpu_per_million(self, case: str) -> Stats:
        return Stats.of([t.cpu / self.n * 1e6 for t in self.timings[case]])

    def ratio(self, case: str) -> Stats:
        pairs = zip(self.timings["bare"], self.timings[case], strict=True)
        return Stats.of([bare.wall / own.wall for bare, own in pairs])


def bench(n: int, repeats: int, server: StandIn) -> Result:
    values = _values(n)
    cases: dict[str, MlobsCase | BareCase] = {
        "mlobs_ack": MlobsCase(server, ack=True),
        "mlobs": MlobsCase(server, ack=False),
        "bare": BareCase(server),
    }
    result = Result(n, {name: [] for name in cases})
    try:
        for case in cases.values():  # warm-up, not counted
            case.run(values[: max(100, n // 10)])
        order = list(cases)
        for rep in range(repeats):
            shift = rep % len(order)
            for name in order[shift:] + order[:shift]:
                result.timings[name].append(cases[name].run(values))
    finally:
        for case in cases.values():
            case.close()
    return result


def report(results: Sequence[Result]) -> tuple[str, bool]:
    rows = []
    ok = True
    for r in results:
        for case in CASES:
            passed = ""
            ratio = ""
            if case != "bare":
                stats = r.ratio(case)
                ratio = stats.fmt(".2f")
                good = stats.median >= TARGET_VS_BARE
                ok = ok and good
                passed = verdict(good)
            rows.append(
                [
                    f"{r.n:,}",
                    LABELS[case],
                    r.rate(case).fmt(",.0f"),
                    r.cpu_per_million(case).fmt(".1f"),
                    ratio,
                    passed,
                ]
            )
    repeats = len(results[0].timings["bare"])
    text = "\n\n".join(
        [
            "### End to end, `mlobs.log` to the forward server",
            f"Bursts of N points, {repeats} repeats of each case after a warm-up, the cases "
            "interleaved (order rotated each repeat). mlobs: `mlobs.configure(dir=<tmp>, "
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a smoke test")
    parser.add_argument("--write", action="store_true", help="rewrite the fluentd block")
    args = parser.parse_args(argv)
    if args.write and args.quick:
        parser.error("--write needs a full run (no --quick)")
    sizes = QUICK if args.quick else FULL
    server = StandIn()
    try:
        results = []
        for n in sizes.bursts:
            t0 = time.perf_counter()
            print(f"[bench] fluentd N={n:,} ...", file=sys.stderr, flush=True)
            results.append(bench(n, sizes.repeats, server))
            print(f"[bench] {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        server.close()
    body, ok = report(results)
    section = "\n\n".join(
        [
            "## Fluentd sink (issue #3)",
            measured_line(*PEERS)
            + (" **Quick run: too few repeats to quote.**" if args.quick else ""),
            "Rerun: `python bench/bench_fluentd.py --write`.",
            table(["benchmark", "result"], [["fluentd end to end", verdict(ok)]]),
            body,
        ]
    )
    print(section)
    if args.write:
        write_section("fluentd", section)
        print(f"\n[bench] wrote the fluentd block of {Path('BENCHMARKS.md')}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
