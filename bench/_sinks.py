"""Shared pieces of the sink benchmarks (``bench_influxdb``, ``bench_otlp``, ``bench_prometheus``,
``bench_fluentd``): servers on loopback, timing, the interleaved repeats, throughput figures and
their tables, and the section each script prints (and writes with ``--write``).

Methodology kept here for all of them: every case is warmed up first, then each repeat runs every
case once per batch size with the order of the cases rotated by one each repeat; the garbage
collector and mlobs' background threads stay on; a case is timed as wall time and as this
process's user + system CPU time (every thread; servers are other processes and are not counted);
ratios are taken per repeat, between the runs of the same repeat, then summarised.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from _report import ROOT, Stats, measured_line, table, verdict, write_section

import mlobs

Timing = tuple[float, float]
"""Wall and CPU seconds of one timed body."""

Case = Callable[[int, str], Timing]
"""One case of a throughput benchmark: ``(batch, tag) -> timing``; ``tag`` names what it sends
(``"warmup"`` or ``"{batch}-{repeat}"``), for run names and ids that do not repeat."""

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback HTTP without any proxy from the environment."""


def get(url: str, timeout: float = 30) -> bytes:
    """The body of a GET of ``url``."""
    with OPENER.open(url, timeout=timeout) as reply:
        body: bytes = reply.read()
        return body


# -- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server binary as a child process on 127.0.0.1 (a free port), data and log in a temp dir,
    ready when ``ready`` answers 200, stopped by PID. Also a context manager that stops it.

    ``args(address, dir)`` gives the command line after the binary; the binary is the first of
    ``binaries`` (default: ``name``) on PATH or in ``.backends/bin`` (``scripts/backends.sh``).
    """

    def __init__(
        self,
        name: str,
        args: Callable[[str, str], list[str]],
        ready: str = "/health",
        binaries: Sequence[str] = (),
    ) -> None:
        binary = _find_binary(binaries or (name,))
        if binary is None:
            sys.exit(f"{name} missing: run scripts/backends.sh")
        self.dir = tempfile.mkdtemp(prefix=f"mlobs-bench-{name}-")
        address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{address}"
        self._log = open(Path(self.dir) / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [binary, *args(address, self.dir)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with OPENER.open(self.url + ready, timeout=1) as reply:
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

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _find_binary(names: Sequence[str]) -> str | None:
    for name in names:
        binary = shutil.which(name) or str(ROOT / ".backends/bin" / name)
        if os.access(binary, os.X_OK):
            return binary
    return None


def victoria_metrics() -> Server:
    """A VictoriaMetrics single node (InfluxDB line protocol on ``/api/v2/write``, Prometheus
    remote write on ``/api/v1/write``), keeping any timestamp."""
    return Server(
        "victoria-metrics",
        lambda address, data: [
            f"-httpListenAddr={address}",
            f"-storageDataPath={data}/data",
            "-retentionPeriod=100y",
            "-loggerLevel=WARN",
        ],
    )


# -- timing ----------------------------------------------------------------------------------------


def timed(body: Callable[[], None]) -> Timing:
    """Wall and CPU seconds of ``body``, after a collection so that earlier garbage is not
    collected inside it."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    body()
    return time.perf_counter() - t0, time.process_time() - c0


def chunks(n: int, batch: int) -> Iterator[range]:
    """``range(n)`` in consecutive pieces of ``batch``."""
    for start in range(0, n, batch):
        yield range(start, min(n, start + batch))


def mlobs_batches(
    n: int, batch: int, tag: str, sink: str, after_flush: Callable[[], object] | None = None
) -> Timing:
    """The mlobs case: in a run, ``batch`` calls of ``mlobs.log(loss=x)`` then ``mlobs.flush()``
    (which returns once the sink has had every record acknowledged), until ``n`` points; with
    ``after_flush`` called after each flush. ``mlobs.configure`` is the caller's."""
    log = mlobs.log

    def body() -> None:
        with mlobs.run(f"bench-{tag}"):
            for chunk in chunks(n, batch):
                for i in chunk:
                    log(loss=i * 0.001)
                if not mlobs.flush(60):
                    raise RuntimeError(f"the {sink} sink did not catch up")
                if after_flush is not None:
                    after_flush()

    return timed(body)


def rotated(names: Sequence[str], rep: int) -> list[str]:
    """``names`` rotated left by ``rep`` (for two names: alternating order)."""
    shift = rep % len(names)
    return [*names[shift:], *names[:shift]]


# -- throughput ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What an end-to-end benchmark sends: ``points`` per case and repeat, in each of the batch
    sizes ``batches``, ``repeats`` rounds after the warm-up."""

    points: int
    batches: tuple[int, ...]
    repeats: int


FULL_LOAD = Load(200_000, (1_000, 10_000), 7)
QUICK_LOAD = Load(20_000, (1_000, 10_000), 2)


@dataclass
class Throughput:
    """Wall and CPU seconds per repeat of each case at each batch size; every timed call of a
    case sends ``n`` points."""

    n: int
    batches: Sequence[int]
    wall: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def add(self, case: str, batch: int, timing: Timing) -> None:
        wall, cpu = timing
        self.wall.setdefault((case, batch), []).append(wall)
        self.cpu.setdefault((case, batch), []).append(cpu)

    def repeats(self) -> int:
        return len(next(iter(self.wall.values())))

    def rate(self, case: str, batch: int) -> Stats:
        """Points per second."""
        return Stats.of([self.n / w for w in self.wall[case, batch]])

    def cpu_per_million(self, case: str, batch: int) -> Stats:
        """CPU seconds per million points."""
        return Stats.of([c / self.n * 1e6 for c in self.cpu[case, batch]])

    def ratio(self, case: str, peer: str, batch: int) -> Stats:
        """Throughput of ``case`` over that of ``peer``, per repeat."""
        pairs = zip(self.wall[peer, batch], self.wall[case, batch], strict=True)
        return Stats.of([p / c for p, c in pairs])  # throughput ratio = inverse time ratio


def interleave(load: Load, cases: Mapping[str, Case], warmup: int | None = None) -> Throughput:
    """Run every case once as a warm-up (batch ``warmup``, default the smallest; connections,
    imports, caches), then ``load.repeats`` rounds of every case at every batch size, the order of
    the cases rotated each round."""
    result = Throughput(load.points, load.batches)
    for case in cases.values():
        case(min(load.batches) if warmup is None else warmup, "warmup")
    for rep in range(load.repeats):
        for batch in result.batches:
            for name in rotated(list(cases), rep):
                result.add(name, batch, cases[name](batch, f"{batch}-{rep}"))
    return result


def per_unit(
    cases: Mapping[str, Callable[[], object]],
    repeats: int,
    units: int,
    scale: float,
    warm: bool = True,
) -> dict[str, list[float]]:
    """Time of one call of each case divided by ``units``, times ``scale`` (1e6 for µs), one entry
    per repeat; a warm-up call of each first (unless ``warm`` is false), the order rotated each
    repeat, a collection before each call."""
    if warm:
        for fn in cases.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in cases}
    for rep in range(repeats):
        for name in rotated(list(cases), rep):
            gc.collect()
            t0 = time.perf_counter()
            cases[name]()
            out[name].append((time.perf_counter() - t0) / units * scale)
    return out


# -- reports ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """A row of the ratio table: throughput of ``case`` over that of ``peer``, judged against
    ``target`` (a minimum) when there is one."""

    case: str
    peer: str
    label: str
    target: float | None = None


def case_row(r: Throughput, batch: int, case: str, label: str, cpu_spec: str) -> list[str]:
    """``batch``, the case's label, points/s and CPU seconds per million points."""
    return [
        f"{batch:,}",
        label,
        r.rate(case, batch).fmt(",.0f"),
        r.cpu_per_million(case, batch).fmt(cpu_spec),
    ]


def report_throughput(
    r: Throughput,
    title: str,
    about: str,
    labels: Mapping[str, str],
    ratios: Sequence[Ratio],
    cpu_spec: str = ".2f",
) -> tuple[str, bool]:
    """The end-to-end block: a table of points/s and CPU per million points of every case (in the
    order of ``labels``) at every batch size, then the table of ``ratios``; true when every ratio
    with a target meets it. ``about`` ends the sentence on the method (it starts with ``.`` or
    ``;``)."""
    rows: list[list[str]] = []
    ratio_rows: list[list[str]] = []
    ok = True
    for batch in r.batches:
        rows.extend(case_row(r, batch, case, label, cpu_spec) for case, label in labels.items())
        for ratio in ratios:
            stats = r.ratio(ratio.case, ratio.peer, batch)
            verdict_cells = ["", ""]
            if ratio.target is not None:
                passed = stats.median >= ratio.target
                ok = ok and passed
                verdict_cells = [f"≥ {ratio.target}", verdict(passed)]
            ratio_rows.append([f"{batch:,}", ratio.label, stats.fmt(".2f"), *verdict_cells])
    text = "\n\n".join(
        [
            title,
            f"{r.n:,} points per case and repeat, in batches of B, {r.repeats()} repeats after a "
            f"warm-up, cases interleaved (order rotated each repeat){about} Throughput in "
            "points/s and CPU seconds of this process per million points: median (min–max).",
            table(["B", "case", "points/s", "CPU s per 1M points"], rows),
            "Throughput ratios, taken per repeat:",
            table(["B", "ratio", "median (min–max)", "target", "result"], ratio_rows),
        ]
    )
    return text, ok


# -- driver ----------------------------------------------------------------------------------------


def parse_args(
    doc: str | None,
    block: str,
    argv: Sequence[str] | None,
    quick_help: str = "small sizes, a smoke test",
) -> argparse.Namespace:
    """``--quick`` and ``--write`` (which rewrites the ``block`` block of BENCHMARKS.md and needs a
    full run)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--write", action="store_true", help=f"rewrite the {block} block of BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    if args.write and args.quick:
        parser.error("--write needs a full run (no --quick)")
    return args


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Say on stderr that ``name`` runs, and how long it took."""
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def finish(
    args: argparse.Namespace,
    block: str,
    heading: str,
    peers: Sequence[str],
    results: Sequence[tuple[str, bool]],
    parts: Sequence[str],
    quick_note: str = "sizes too small to quote",
) -> int:
    """Print the section (heading, where and when, how to rerun, the results, ``parts``), write it
    to BENCHMARKS.md with ``--write``; the exit status: 0 when every result passed."""
    section = "\n\n".join(
        [
            heading,
            measured_line(*peers) + (f" **Quick run: {quick_note}.**" if args.quick else ""),
            f"Rerun: `python bench/bench_{block}.py --write`.",
            table(["benchmark", "result"], [[name, verdict(ok)] for name, ok in results]),
            *parts,
        ]
    )
    print(section)
    if args.write:
        write_section(block, section)
        print(f"\n[bench] wrote the {block} block of BENCHMARKS.md", file=sys.stderr)
    return 0 if all(ok for _, ok in results) else 1
