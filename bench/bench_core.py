"""Core benchmarks of issue #2: the ``mlobs.log`` hot path, spool throughput and memory, import
time, and ``@mlobs.step`` overhead.

Run from the repository root::

    python bench/bench_core.py            # full run, prints the tables
    python bench/bench_core.py --quick    # small sizes, a smoke test (cannot --write)
    python bench/bench_core.py --write    # full run, rewrites the core block of BENCHMARKS.md
    python bench/bench_core.py --only log,step

Honesty rules kept here: ratio pairs are timed in the same process, repeats of A and B are
interleaved (order rotated each repeat), everything is warmed up first, the garbage collector and
mlobs' background flusher stay on, and nothing is subtracted from a timing (the empty-loop
baseline is reported beside it).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _report import Stats, maxrss_mb, measured_line, rss_mb, table, verdict, write_section

import mlobs

PEERS = ("prometheus-client", "opentelemetry-sdk")
TARGET_VS_PROM = 0.5
TARGET_VS_OTEL = 0.1
TARGET_SPOOL_RSS_MB = 100.0
TARGET_IMPORT_RATIO = 1.2
TARGET_STEP_US = 10.0

_VALUES = 4096  # a power of two: the loops index values with ``i & mask``


def _values() -> list[float]:
    rng = random.Random(2)
    return [rng.random() for _ in range(_VALUES)]


def _quiet_gc() -> None:
    """Collect before a timed loop so one loop's garbage is not collected inside the next."""
    gc.collect()


# -- 1. mlobs.log vs prometheus-client and opentelemetry-sdk -------------------------------------


def _loop_empty(n: int, values: list[float]) -> float:
    mask = len(values) - 1
    t0 = time.perf_counter()
    for i in range(n):
        x = values[i & mask]
    t1 = time.perf_counter()
    del x
    return t1 - t0


def _loop_mlobs(n: int, values: list[float]) -> float:
    log = mlobs.log
    mask = len(values) - 1
    t0 = time.perf_counter()
    for i in range(n):
        log(loss=values[i & mask])
    return time.perf_counter() - t0


def _loop_prom(n: int, values: list[float], gauge: Any) -> float:
    labels = gauge.labels
    mask = len(values) - 1
    t0 = time.perf_counter()
    for i in range(n):
        labels("train", "resnet50", "0").set(values[i & mask])
    return time.perf_counter() - t0


def _loop_otel(n: int, values: list[float], histogram: Any, attrs: dict[str, str]) -> float:
    record = histogram.record
    mask = len(values) - 1
    t0 = time.perf_counter()
    for i in range(n):
        record(values[i & mask], attrs)
    return time.perf_counter() - t0


def _flush_seconds() -> float:
    t0 = time.perf_counter()
    mlobs.flush()
    return time.perf_counter() - t0


@dataclass
class LogResult:
    n: int
    ns: dict[str, list[float]] = field(default_factory=dict)
    """Per-call nanoseconds for each case, one entry per repeat."""

    def stats(self, case: str) -> Stats:
        return Stats.of(self.ns[case])

    def ratio(self, a: str, b: str) -> Stats:
        return Stats.of([x / y for x, y in zip(self.ns[a], self.ns[b], strict=True)])


def bench_log(n: int, repeats: int) -> LogResult:
    """Per-call time of ``mlobs.log(loss=x)`` against a prometheus gauge and an OTel histogram."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, Gauge

    values = _values()
    gauge = Gauge("bench_loss", "Loss.", ["split", "model", "rank"], registry=CollectorRegistry())
    attrs = {"split": "train", "model": "resnet50", "rank": "0"}
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = provider.get_meter("bench").create_histogram("bench_loss")
    bare_histogram = MeterProvider().get_meter("bench").create_histogram("bench_loss")

    cases: dict[str, Callable[[int], float]] = {
        "empty": lambda k: _loop_empty(k, values),
        "mlobs": lambda k: _loop_mlobs(k, values),
        "prom": lambda k: _loop_prom(k, values, gauge),
        "otel": lambda k: _loop_otel(k, values, histogram, attrs),
        "otel_noreader": lambda k: _loop_otel(k, values, bare_histogram, attrs),
    }
    result = LogResult(n, {name: [] for name in [*cases, "mlobs_drain"]})
    tmp = tempfile.mkdtemp(prefix="mlobs-bench-log-")
    try:
        mlobs.configure(dir=tmp)
        with mlobs.run("bench-log"), mlobs.epoch(0):
            for fn in cases.values():  # warm-up, not counted
                fn(max(1000, n // 10))
            mlobs.flush()
            order = list(cases)
            for rep in range(repeats):
                shift = rep % len(order)
                for name in order[shift:] + order[:shift]:
                    _quiet_gc()
                    seconds = cases[name](n)
                    result.ns[name].append(seconds / n * 1e9)
                    if name == "mlobs":
                        # Drain what the loop left buffered before timing a peer, so mlobs' flusher
                        # never runs inside a peer's loop; the drain is reported on its own.
                        drain = _flush_seconds()
                        result.ns["mlobs_drain"].append((seconds + drain) / n * 1e9)
                reader.get_metrics_data()  # the reader's collect, outside the timings
    finally:
        mlobs.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def report_log(r: LogResult) -> tuple[str, bool]:
    vs_prom = r.ratio("mlobs", "prom")
    vs_otel = r.ratio("mlobs", "otel")
    ok_prom = vs_prom.median <= TARGET_VS_PROM
    ok_otel = vs_otel.median <= TARGET_VS_OTEL
    labels = {
        "empty": "empty loop (`x = values[i & mask]`): baseline",
        "mlobs": "`mlobs.log(loss=x)` in a run and epoch",
        "mlobs_drain": "… plus the `mlobs.flush()` that drains what it left buffered",
        "prom": "prometheus `Gauge.labels(a, b, c).set(x)`",
        "otel": "OTel `Histogram.record(x, attrs)`, InMemoryMetricReader",
        "otel_noreader": "OTel `Histogram.record(x, attrs)`, no reader",
    }
    rows = [[labels[k], r.stats(k).fmt(".0f")] for k in labels]
    ratios = [
        [
            "mlobs.log / prometheus",
            vs_prom.fmt(".2f"),
            f"≤ {TARGET_VS_PROM}",
            verdict(ok_prom),
        ],
        [
            "mlobs.log / OTel (InMemoryMetricReader)",
            vs_otel.fmt(".2f"),
            f"≤ {TARGET_VS_OTEL}",
            verdict(ok_otel),
        ],
        ["mlobs.log / OTel (no reader)", r.ratio("mlobs", "otel_noreader").fmt(".2f"), "", ""],
        [
            "(mlobs.log + drain) / prometheus",
            r.ratio("mlobs_drain", "prom").fmt(".2f"),
            "",
            "",
        ],
    ]
    text = "\n\n".join(
        [
            "### 1. `mlobs.log` hot path",
            f"{r.n:,} calls per loop, {len(r.ns['mlobs'])} repeats after a warm-up, the cases "
            "interleaved (order rotated each repeat), values cycling through 4,096 random floats. "
            "`mlobs.configure(dir=<tmp>)`: default flush interval and size trigger, background "
            "flusher on, log capture on, GC on. Prometheus: a `Gauge` with 3 label names in its "
            "own `CollectorRegistry`. OTel: a `MeterProvider` with an `InMemoryMetricReader` "
            "(the target peer) and, for reference, one with no reader; 3 attributes.",
            "Per call, ns: median (min–max) over repeats; nothing subtracted.",
            table(["case", "ns per call"], rows),
            "Ratios are taken per repeat (both loops of the same repeat), then summarised.",
            table(["ratio", "median (min–max)", "target", "result"], ratios),
        ]
    )
    return text, ok_prom and ok_otel


# -- 2. one million values to the spool ----------------------------------------------------------


def count_spool_rows(directory: str | Path, name: str) -> dict[str, Any]:
    """Gauge records across every ``spool-*.db`` in ``directory``, read back through
    ``SpoolReader`` as the sinks read them: all of them, and those of one metric (count, distinct
    steps, sum of values)."""
    from mlobs.record.types import Kind
    from mlobs.spool.store import SpoolReader, spool_files

    gauges = rows = 0
    steps: set[int | None] = set()
    total = 0.0
    for path in spool_files(directory):
        reader = SpoolReader.open(path)
        try:
            for record in reader.iter_records(kinds=[Kind.GAUGE]):
                gauges += 1
                if record.name == name:
                    rows += 1
                    steps.add(record.step)
                    total += record.value or 0.0
        finally:
            reader.close()
    return {"gauge_rows": gauges, "rows": rows, "distinct_steps": len(steps), "value_sum": total}


def spool_child(n: int) -> dict[str, Any]:
    """Run in a fresh interpreter: log ``n`` values in a tight loop, flush, count the spool."""
    tmp = tempfile.mkdtemp(prefix="mlobs-bench-spool-")
    try:
        mlobs.configure(dir=tmp)
        recorder = mlobs.runtime.get().recorder
        peak = [0]
        done = threading.Event()

        def sample() -> None:  # 20 looks a second at the buffer: negligible next to the loop
            while not done.wait(0.05):
                peak[0] = max(peak[0], len(recorder))

        sampler = threading.Thread(target=sample, daemon=True)
        log = mlobs.log
        with mlobs.run("bench-spool"), mlobs.epoch(0):
            gc.collect()
            rss_now0 = rss_mb()
            rss0 = maxrss_mb()
            sampler.start()
            t0 = time.perf_counter()
            for i in range(n):
                log(loss=i * 0.001)
            t1 = time.perf_counter()
            mlobs.flush()
            t2 = time.perf_counter()
            done.set()
            rss1 = maxrss_mb()
        sampler.join()
        mlobs.shutdown()
        counts = count_spool_rows(tmp, "loss")
        return {
            "n": n,
            "loop_s": t1 - t0,
            "flush_s": t2 - t1,
            "rss_before_mb": rss_now0,
            "maxrss_growth_mb": rss1 - rss0,
            "rss_growth_mb": rss1 - rss_now0,
            "peak_buffered": peak[0],
            "expected_sum": 0.001 * n * (n - 1) / 2,
            **counts,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class SpoolResult:
    n: int
    runs: list[dict[str, Any]]

    def stats(self, key: str) -> Stats:
        return Stats.of([float(r[key]) for r in self.runs])

    def rate(self, key: str) -> Stats:
        return Stats.of([self.n / r[key] for r in self.runs])


def bench_spool(n: int, repeats: int) -> SpoolResult:
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, __file__, "--child-spool", str(n)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tempfile.gettempdir(),
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for r in runs:
        r["total_s"] = r["loop_s"] + r["flush_s"]
    return SpoolResult(n, runs)


def report_spool(r: SpoolResult) -> tuple[str, bool]:
    complete = all(
        x["rows"] == r.n
        and x["distinct_steps"] == r.n
        and abs(x["value_sum"] - x["expected_sum"]) <= 1e-9 * x["expected_sum"]
        for x in r.runs
    )
    growth = r.stats("rss_growth_mb")
    ok_rss = growth.median <= TARGET_SPOOL_RSS_MB and growth.max <= TARGET_SPOOL_RSS_MB
    rows = [
        [
            "`loss` records in the spool (per run)",
            r.stats("rows").fmt(".0f"),
            f"= {r.n:,}",
            verdict(complete),
        ],
        [
            "all gauge records (incl. the epoch's duration)",
            r.stats("gauge_rows").fmt(".0f"),
            "",
            "",
        ],
        ["distinct steps / value sum exact", "yes" if complete else "no", "", ""],
        ["RSS just before the loop, MB", r.stats("rss_before_mb").fmt(".1f"), "", ""],
        [
            "`ru_maxrss` after − `ru_maxrss` before, MB",
            r.stats("maxrss_growth_mb").fmt(".1f"),
            "",
            "",
        ],
        [
            "peak RSS growth: `ru_maxrss` after − RSS before, MB",
            growth.fmt(".1f"),
            f"< {TARGET_SPOOL_RSS_MB:.0f}",
            verdict(ok_rss),
        ],
        ["peak records held in the buffer", r.stats("peak_buffered").fmt(".0f"), "", ""],
        ["logging loop, s", r.stats("loop_s").fmt(".2f"), "", ""],
        ["final `mlobs.flush()`, s", r.stats("flush_s").fmt(".2f"), "", ""],
        ["wall time loop + flush, s", r.stats("total_s").fmt(".2f"), "", ""],
        ["points/s into the buffer (loop)", r.rate("loop_s").fmt(",.0f"), "", ""],
        ["points/s end to end (into the spool)", r.rate("total_s").fmt(",.0f"), "", ""],
    ]
    text = "\n\n".join(
        [
            f"### 2. {r.n:,} values to the spool",
            f"{len(r.runs)} fresh interpreters, each: `mlobs.configure(dir=<tmp>)`, a run and an "
            f"epoch, then `mlobs.log(loss=i * 0.001)` for i in range({r.n:,}) in a tight loop, "
            "then `mlobs.flush()`. Gauge records with name `loss` counted across `spool-*.db` "
            "by reading them back with `SpoolReader`, as sinks do; distinct steps and the exact "
            "sum of values checked too. "
            "Peak RSS growth is `ru_maxrss` after the flush minus the resident set just before "
            "the loop (imports, configure and run start excluded; `ru_maxrss` before the loop "
            "can sit above the resident set, hiding part of the growth, so its own difference is "
            "shown too and the stricter figure is the one judged). The buffer is sampled 20 "
            "times a second by a side thread. Median (min–max) over processes.",
            table(["figure", "median (min–max)", "target", "result"], rows),
        ]
    )
    return text, complete and ok_rss


# -- 3. import time ------------------------------------------------------------------------------


def _time_process(cmd: Sequence[str]) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


@dataclass
class ImportResult:
    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    top_cumulative: list[tuple[str, float, float]]
    by_package: list[tuple[str, float]]
    mlobs_total_us: float
    profile_runs: int


def _importtime_tree(stderr: str) -> list[tuple[int, int, int, str]]:
    """``(self_us, cumulative_us, depth, module)`` per line of ``-X importtime`` output."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, cum_us, name = line.split(":", 1)[1].split("|")
        stripped = name.lstrip(" ")
        depth = (len(name) - len(stripped) - 1) // 2
        entries.append((int(self_us), int(cum_us), depth, stripped))
    return entries


def _mlobs_subtree(entries: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
    """The lines that ``import mlobs`` itself caused (site's imports left out)."""
    end = max(i for i, e in enumerate(entries) if e[2] == 0 and e[3] == "mlobs")
    start = end
    while start > 0 and entries[start - 1][2] > 0:
        start -= 1
    return entries[start : end + 1]


def importtime_profile(
    runs: int,
) -> tuple[list[tuple[str, float, float]], list[tuple[str, float]], float]:
    """Median ``-X importtime`` figures over ``runs`` interpreters: the modules with the largest
    cumulative time, self time summed by top-level package, and the total."""
    cum: dict[str, list[int]] = {}
    own: dict[str, list[int]] = {}
    packages: dict[str, list[int]] = {}
    totals = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import mlobs"],
            capture_output=True,
            text=True,
            check=True,
        )
        tree = _mlobs_subtree(_importtime_tree(proc.stderr))
        totals.append(tree[-1][1])
        per_package: dict[str, int] = {}
        for self_us, cum_us, _depth, module in tree:
            cum.setdefault(module, []).append(cum_us)
            own.setdefault(module, []).append(self_us)
            root = module.split(".")[0]
            per_package[root] = per_package.get(root, 0) + self_us
        for root, us in per_package.items():
            packages.setdefault(root, []).append(us)
    top = sorted(
        ((m, statistics.median(c), statistics.median(own[m])) for m, c in cum.items()),
        key=lambda t: -t[1],
    )
    by_pkg = sorted(((p, statistics.median(v)) for p, v in packages.items()), key=lambda t: -t[1])
    return top, by_pkg, statistics.median(totals)


def bench_import(repeats: int, profile_runs: int) -> ImportResult:
    exe = sys.executable
    cmds = {
        "pass": [exe, "-c", "pass"],
        "mlobs": [exe, "-c", "import mlobs"],
        "prom": [exe, "-c", "import prometheus_client"],
    }
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    order = list(cmds)
    for _ in range(2):  # warm-up: page cache and bytecode caches
        for cmd in cmds.values():
            _time_process(cmd)
    for rep in range(repeats):
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            w, c = _time_process(cmds[name])
            wall[name].append(w)
            cpu[name].append(c)
    top, by_pkg, total = importtime_profile(profile_runs)
    return ImportResult(wall, cpu, top, by_pkg, total, profile_runs)


def report_import(r: ImportResult) -> tuple[str, bool]:
    def ratio(a: str, b: str, d: dict[str, list[float]]) -> Stats:
        return Stats.of([x / y for x, y in zip(d[a], d[b], strict=True)])

    def net(d: dict[str, list[float]]) -> Stats:
        return Stats.of(
            [(m - p) / (q - p) for m, q, p in zip(d["mlobs"], d["prom"], d["pass"], strict=True)]
        )

    vs = ratio("mlobs", "prom", r.wall)
    ok = vs.median <= TARGET_IMPORT_RATIO
    rows = [
        [
            "`python -c pass`",
            Stats.of(r.wall["pass"]).fmt(".1f", 1e3),
            Stats.of(r.cpu["pass"]).fmt(".1f", 1e3),
        ],
        [
            "`python -c 'import mlobs'`",
            Stats.of(r.wall["mlobs"]).fmt(".1f", 1e3),
            Stats.of(r.cpu["mlobs"]).fmt(".1f", 1e3),
        ],
        [
            "`python -c 'import prometheus_client'`",
            Stats.of(r.wall["prom"]).fmt(".1f", 1e3),
            Stats.of(r.cpu["prom"]).fmt(".1f", 1e3),
        ],
    ]
    ratios = [
        ["mlobs / prometheus_client, wall", vs.fmt(".2f"), f"≤ {TARGET_IMPORT_RATIO}", verdict(ok)],
        ["mlobs / prometheus_client, cpu", ratio("mlobs", "prom", r.cpu).fmt(".2f"), "", ""],
        ["(mlobs − pass) / (prometheus_client − pass), wall", net(r.wall).fmt(".2f"), "", ""],
    ]
    top = [[f"`{m}`", f"{c / 1e3:.1f}", f"{s / 1e3:.1f}"] for m, c, s in r.top_cumulative[:15]]
    pkgs = [[f"`{p}`", f"{us / 1e3:.1f}"] for p, us in r.by_package[:12]]
    n = len(r.wall["mlobs"])
    text = "\n\n".join(
        [
            "### 3. `import mlobs`",
            f"Whole fresh interpreters (the same venv Python), {n} repeats of each after 2 warm-up "
            "rounds, the three commands interleaved (order rotated each repeat); wall time around "
            "the process and its user + sys CPU. Median (min–max), ms.",
            table(["command", "wall ms", "cpu ms"], rows),
            table(["ratio (per repeat)", "median (min–max)", "target", "result"], ratios),
            f"`python -X importtime -c 'import mlobs'`: what `import mlobs` itself imports "
            f"(site's imports excluded; -X importtime inflates times), median of "
            f"{r.profile_runs} runs; total {r.mlobs_total_us / 1e3:.1f} ms. "
            "Largest cumulative times:",
            table(["module", "cumulative ms", "self ms"], top),
            "Self time summed by top-level package:",
            table(["package", "self ms"], pkgs),
        ]
    )
    return text, ok


# -- 4. @mlobs.step overhead ---------------------------------------------------------------------


def _plain() -> None:
    pass


def _stepped() -> None:
    pass


def _loop_call(n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


@dataclass
class StepResult:
    n: int
    plain: list[float]
    decorated: list[float]
    drained: list[float]

    def overhead(self) -> Stats:
        return Stats.of([d - p for d, p in zip(self.decorated, self.plain, strict=True)])


def bench_step(n: int, repeats: int) -> StepResult:
    """Per-call overhead of ``@mlobs.step`` on an empty function, inside an active run."""
    decorated = mlobs.step(_stepped)
    tmp = tempfile.mkdtemp(prefix="mlobs-bench-step-")
    plain: list[float] = []
    dec: list[float] = []
    drained: list[float] = []
    try:
        mlobs.configure(dir=tmp)
        with mlobs.run("bench-step"):
            _loop_call(max(1000, n // 10), _plain)
            _loop_call(max(1000, n // 10), decorated)
            mlobs.flush()
            for rep in range(repeats):
                pair: list[tuple[str, Callable[[], None]]] = [
                    ("plain", _plain),
                    ("decorated", decorated),
                ]
                if rep % 2:
                    pair.reverse()
                for name, fn in pair:
                    _quiet_gc()
                    seconds = _loop_call(n, fn)
                    if name == "plain":
                        plain.append(seconds / n * 1e6)
                    else:
                        dec.append(seconds / n * 1e6)
                        drained.append((seconds + _flush_seconds()) / n * 1e6)
    finally:
        mlobs.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return StepResult(n, plain, dec, drained)


def report_step(r: StepResult) -> tuple[str, bool]:
    over = r.overhead()
    ok = over.median <= TARGET_STEP_US
    rows = [
        ["plain call of an empty function", Stats.of(r.plain).fmt(".3f"), "", ""],
        ["`@mlobs.step`-decorated call", Stats.of(r.decorated).fmt(".2f"), "", ""],
        [
            "overhead (decorated − plain, per repeat)",
            over.fmt(".2f"),
            f"≤ {TARGET_STEP_US:.0f}",
            verdict(ok),
        ],
        [
            "decorated call + the `mlobs.flush()` that writes its span record",
            Stats.of(r.drained).fmt(".2f"),
            "",
            "",
        ],
    ]
    text = "\n\n".join(
        [
            "### 4. `@mlobs.step` overhead",
            f"{r.n:,} calls per loop inside `mlobs.run(...)` (`mlobs.configure(dir=<tmp>)`, "
            f"flusher on), {len(r.plain)} repeats after a warm-up, plain and decorated loops "
            "alternating in order. µs per call, median (min–max).",
            table(["figure", "µs per call", "target", "result"], rows),
        ]
    )
    return text, ok


# -- driver --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    log_n: int
    log_repeats: int
    spool_n: int
    spool_repeats: int
    import_repeats: int
    importtime_runs: int
    step_n: int
    step_repeats: int


FULL = Sizes(200_000, 7, 1_000_000, 5, 21, 5, 100_000, 9)
QUICK = Sizes(20_000, 3, 100_000, 1, 5, 1, 10_000, 3)
BENCHMARKS = ("log", "spool", "import", "step")


def run_all(sizes: Sizes, only: Sequence[str]) -> tuple[str, dict[str, bool]]:
    sections: list[str] = []
    results: dict[str, bool] = {}
    for name in only:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        if name == "log":
            text, ok = report_log(bench_log(sizes.log_n, sizes.log_repeats))
        elif name == "spool":
            text, ok = report_spool(bench_spool(sizes.spool_n, sizes.spool_repeats))
        elif name == "import":
            text, ok = report_import(bench_import(sizes.import_repeats, sizes.importtime_runs))
        else:
            text, ok = report_step(bench_step(sizes.step_n, sizes.step_repeats))
        print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        sections.append(text)
        results[name] = ok
    return "\n\n".join(sections), results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument(
        "--write",
        action="store_true",
        help="rewrite the core block of BENCHMARKS.md (full runs of every benchmark only)",
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {','.join(BENCHMARKS)}",
    )
    parser.add_argument("--child-spool", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_spool:
        print(json.dumps(spool_child(args.child_spool)))
        return 0

    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if args.write and (args.quick or set(only) != set(BENCHMARKS)):
        parser.error("--write needs a full run of every benchmark (no --quick, no --only)")

    body, results = run_all(QUICK if args.quick else FULL, only)
    summary = table(["benchmark", "result"], [[name, verdict(ok)] for name, ok in results.items()])
    section = "\n\n".join(
        [
            "## Core (issue #2)",
            measured_line(*PEERS)
            + (" **Quick run: sizes too small to quote.**" if args.quick else ""),
            "Rerun: `python bench/bench_core.py --write`.",
            summary,
            body,
        ]
    )
    print(section)
    if args.write:
        write_section("core", section)
        print(f"\n[bench] wrote the core block of {Path('BENCHMARKS.md')}", file=sys.stderr)
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
