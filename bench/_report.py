"""Shared helpers for the benchmarks: summary statistics, machine facts, and BENCHMARKS.md sections.

BENCHMARKS.md is a header (machine, how to rerun) followed by one block per benchmark script, each
between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` markers, so every script
rewrites its own block and leaves the others alone.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

_TITLE = "# mlobs benchmarks"


@dataclass(frozen=True)
class Stats:
    """Minimum, median and maximum of a list of repeats."""

    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no values")
        return cls(min(values), statistics.median(values), max(values), len(values))

    def fmt(self, spec: str = ".3g", scale: float = 1.0) -> str:
        """``median (min-max)``, each value multiplied by ``scale``."""
        med, lo, hi = (format(v * scale, spec) for v in (self.median, self.min, self.max))
        return f"{med} ({lo}–{hi})"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what the platform module knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def maxrss_mb() -> float:
    """Peak resident set of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def rss_mb() -> float:
    """Resident set of this process now, MB (``ru_maxrss`` may be above it, from earlier work)."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def versions(*dists: str) -> str:
    """``name version`` for each installed distribution, comma separated."""
    out = []
    for dist in dists:
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def machine_line() -> str:
    """One line naming the machine and interpreter the figures come from."""
    return (
        f"{os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), {cpu_model()}, "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}"
    )


def measured_line(*dists: str) -> str:
    """When, where and against which peer versions a section was measured."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    line = f"Measured {stamp} on {machine_line()}."
    if dists:
        line += f" Peers: {versions(*dists)}."
    return line


def header() -> str:
    """The file header: what the numbers are and how to reproduce them."""
    return "\n".join(
        [
            _TITLE,
            "",
            "Figures from the scripts under `bench/`, run by hand on the machine named in each "
            "section. Each section is rewritten by its own script; ratios are taken within one "
            "process (or one interleaved series of processes) so that they hold when the "
            "machine's speed drifts. Quote medians and ratios, not single absolute times.",
            "",
            f"Last written on: {machine_line()}.",
            "",
            "Rerun (from the repository root, with the dev environment):",
            "",
            "```",
            "nproc; grep -m1 'model name' /proc/cpuinfo; python -VV",
            "python bench/bench_core.py           # full run, prints the tables (minutes)",
            "python bench/bench_core.py --quick   # smoke run, small sizes",
            "python bench/bench_core.py --write   # full run, rewrites its section below",
            "python bench/bench_gpu.py --write    # GPU sampler (NVML stand-in when no GPU)",
            "python bench/bench_drift.py --write  # drift against Evidently and scipy (~10 min)",
            "# the sinks: each starts its real server on loopback (scripts/backends.sh)",
            "python bench/bench_influxdb.py --write",
            "python bench/bench_prometheus.py --write",
            "python bench/bench_otlp.py --write",
            "python bench/bench_fluentd.py --write",
            "python bench/bench_serving.py --write   # serving middleware (issue 8)",
            "```",
        ]
    )


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the ``name`` block of BENCHMARKS.md and refresh the header."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    head_start, head_end = _markers("header")
    head_block = f"{head_start}\n{header()}\n{head_end}"
    if head_start in text:
        text = re.sub(
            re.escape(head_start) + ".*?" + re.escape(head_end),
            lambda _m: head_block,
            text,
            flags=re.S,
        )
    else:
        text = head_block + "\n" + text
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _m: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text.rstrip() + "\n", encoding="utf-8")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (also readable as plain text)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"
