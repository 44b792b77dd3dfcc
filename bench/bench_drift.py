"""Drift benchmark of issue #5: drift of every column of a million rows against a stored profile,
wall time and peak memory beside Evidently's ``DataDriftPreset`` and beside direct scipy calls on
the same data in the same run; and the cost per feature from 25 to 100 features.

Run from the repository root::

    python bench/bench_drift.py            # full run, prints the tables (about 10 minutes)
    python bench/bench_drift.py --quick    # small sizes, a smoke test (cannot --write)
    python bench/bench_drift.py --write    # full run, rewrites the drift block of BENCHMARKS.md

Every timed case runs in a fresh interpreter of its own, so that its peak resident set is its
own: imports and a warm-up on 2,000 rows first, then the data is generated (seeded, the same in
every case), then the case is timed once. Peak RSS is ``ru_maxrss`` at the end; its increment is
that minus the resident set once the data is in memory. The cases are interleaved, their order
rotated each repeat; ratios are taken between the runs of one repeat. The reference profile is
built and saved once beforehand, in a process of its own, and not timed with the cases.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _report import Stats, maxrss_mb, rss_mb, table, verdict
from _sinks import finish, parse_args, rotated, stage

PEERS = ("evidently", "scipy", "numpy", "pandas")
TARGET_TIME_VS_EVIDENTLY = 0.05
"""mlobs' wall time over Evidently's, at most (20 times faster)."""
TARGET_MEMORY_VS_EVIDENTLY = 1.0
"""mlobs' peak RSS (and its increment) over Evidently's, below this."""
TARGET_LINEAR = 1.25
"""Time per feature with the most features over that with the fewest, at most."""
WARMUP_ROWS = 2_000
REFERENCE_SEED = 1
CURRENT_SEED = 2
DRIFT_THRESHOLD = 0.1  # Wasserstein over std and Jensen-Shannon: mlobs' defaults (Evidently's)


# -- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Rows, numeric columns, categorical columns and categories per categorical column."""

    rows: int
    numeric: int
    categorical: int
    categories: int = 20

    @property
    def features(self) -> int:
        return self.numeric + self.categorical

    def label(self) -> str:
        text = f"{self.rows:,} rows × {self.numeric} numeric"
        if self.categorical:
            text += f" + {self.categorical} categorical ({self.categories} categories)"
        return text

    def small(self) -> Shape:
        return Shape(WARMUP_ROWS, self.numeric, self.categorical, self.categories)


SHIFTED = {"n00": "mean + 0.5 sd", "n01": "sd × 1.5", "n02": "mean + 0.05 sd (not drift)"}
SHIFTED_CATEGORICAL = {"c00": "proportions changed", "c01": "a new category in 20% of rows"}


def frame(shape: Shape, seed: int, current: bool) -> Any:
    """A DataFrame of ``shape``: float64 columns ``n00``... of N(0, 1), object columns ``c00``...
    of labels ``v00``... (references to one string object per label). The current
    side moves the columns of :data:`SHIFTED` and :data:`SHIFTED_CATEGORICAL`. Built without a
    transient copy of the data: the numeric block is the frame's own storage."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    block = rng.standard_normal((shape.numeric, shape.rows))  # one row per column: no copy below
    if current:  # as SHIFTED says: (column, scale, shift)
        for k, scale, shift in ((0, 1.0, 0.5), (1, 1.5, 0.0), (2, 1.0, 0.05))[: shape.numeric]:
            block[k] *= scale
            block[k] += shift
    data = pd.DataFrame(block.T, columns=[f"n{k:02d}" for k in range(shape.numeric)], copy=False)
    labels = np.array([f"v{k:02d}" for k in range(shape.categories + 1)], dtype=object)
    uniform = np.full(shape.categories, 1 / shape.categories)
    for k in range(shape.categorical):
        weights = uniform
        if current and k == 0:  # the first half of the categories twice as likely
            weights = np.where(np.arange(shape.categories) < shape.categories // 2, 2.0, 1.0)
            weights /= weights.sum()
        codes = rng.choice(shape.categories, size=shape.rows, p=weights)
        if current and k == 1:
            codes[rng.random(shape.rows) < 0.2] = shape.categories  # a label never seen
        data[f"c{k:02d}"] = labels[codes]
    return data


# -- the cases, each in a child process ----------------------------------------------------------


def _mlobs_case(shape: Shape, profile_path: str) -> dict[str, Any]:
    """``compare(Profile.load(path), current)`` with the defaults."""
    import mlobs.drift
    from mlobs.drift import Profile, compare

    small = mlobs.drift.profile(frame(shape.small(), REFERENCE_SEED, current=False))
    compare(small, frame(shape.small(), CURRENT_SEED, current=True))  # warm-up
    current = frame(shape, CURRENT_SEED, current=True)

    def body() -> list[str]:
        return compare(Profile.load(profile_path), current).drifted_columns

    return _measure(body)


def _evidently_case(shape: Shape) -> dict[str, Any]:
    """``Report([DataDriftPreset()]).run(current, reference)``: Evidently's defaults."""
    from evidently import Report  # type: ignore[import-untyped]  # ships no type hints
    from evidently.presets import DataDriftPreset  # type: ignore[import-untyped]

    def run(reference: Any, current: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Report([DataDriftPreset()]).run(current, reference)

    run(frame(shape.small(), REFERENCE_SEED, False), frame(shape.small(), CURRENT_SEED, True))
    reference = frame(shape, REFERENCE_SEED, current=False)
    current = frame(shape, CURRENT_SEED, current=True)
    snapshot: list[Any] = []

    def body() -> list[str]:
        snapshot.append(run(reference, current))
        return []

    measured = _measure(body)
    drifted = []
    for metric in snapshot[0].dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            value, threshold = float(metric["value"]), float(config["threshold"])
            by_p = "p_value" in config["method"]
            if (value < threshold) if by_p else (value >= threshold):
                drifted.append(config["column"])
    measured["drifted"] = drifted
    measured["methods"] = sorted(
        {m["config"]["method"] for m in snapshot[0].dict()["metrics"] if "method" in m["config"]}
    )
    return measured


def _scipy_case(shape: Shape) -> dict[str, Any]:
    """By hand on the full raw columns, the computations ``compare`` makes by default: per numeric
    column ``wasserstein_distance / std(reference)`` and ``ks_2samp``; per categorical column
    ``value_counts`` of each side, then ``jensenshannon`` (base 2) of the shares and
    ``chi2_contingency`` of the counts."""
    from scipy import stats
    from scipy.spatial import distance

    def by_hand(reference: Any, current: Any) -> list[str]:
        drifted = []
        for column in reference.columns:
            a, b = reference[column], current[column]
            if a.dtype.kind == "f":
                x, y = a.to_numpy(), b.to_numpy()
                effect = stats.wasserstein_distance(x, y) / np.std(x)
                stats.ks_2samp(x, y)
            else:
                ref_counts, cur_counts = a.value_counts(), b.value_counts()
                keys = ref_counts.index.union(cur_counts.index)
                counts = np.vstack(
                    [
                        ref_counts.reindex(keys, fill_value=0).to_numpy(),
                        cur_counts.reindex(keys, fill_value=0).to_numpy(),
                    ]
                )
                shares = counts / counts.sum(axis=1, keepdims=True)
                effect = distance.jensenshannon(shares[0], shares[1], base=2)
                stats.chi2_contingency(counts, correction=False)
            if effect >= DRIFT_THRESHOLD:
                drifted.append(column)
        return drifted

    by_hand(frame(shape.small(), REFERENCE_SEED, False), frame(shape.small(), CURRENT_SEED, True))
    reference = frame(shape, REFERENCE_SEED, current=False)
    current = frame(shape, CURRENT_SEED, current=True)
    return _measure(lambda: by_hand(reference, current))


def _profile_case(shape: Shape, profile_path: str) -> dict[str, Any]:
    """Build the reference's profile (the defaults) and save it: timed, for the record."""
    import mlobs.drift

    mlobs.drift.profile(frame(shape.small(), REFERENCE_SEED, current=False))  # warm-up
    reference = frame(shape, REFERENCE_SEED, current=False)

    def body() -> list[str]:
        mlobs.drift.profile(reference).save(profile_path)
        return []

    measured = _measure(body)
    measured["bytes"] = Path(profile_path).stat().st_size
    return measured


def _measure(body: Callable[[], list[str]]) -> dict[str, Any]:
    gc.collect()
    rss_data = rss_mb()
    t0 = time.perf_counter()
    drifted = body()
    wall = time.perf_counter() - t0
    peak = maxrss_mb()
    return {
        "wall_s": wall,
        "rss_data_mb": rss_data,
        "peak_mb": peak,
        "growth_mb": peak - rss_data,
        "drifted": drifted,
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    shape = Shape(**spec["shape"])
    case = spec["case"]
    if case == "mlobs":
        return _mlobs_case(shape, spec["profile"])
    if case == "evidently":
        return _evidently_case(shape)
    if case == "scipy":
        return _scipy_case(shape)
    if case == "profile":
        return _profile_case(shape, spec["profile"])
    raise ValueError(f"unknown case {case!r}")


def run_child(case: str, shape: Shape, profile: str | None = None) -> dict[str, Any]:
    """Run ``case`` in a fresh interpreter; its figures, read from the last line it prints."""
    spec = {"case": case, "shape": shape.__dict__, "profile": profile}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "PYTHONPATH": _pythonpath()},
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"the {case} case failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _pythonpath() -> str:
    """The repository root first, so that the child imports this checkout's mlobs."""
    root = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


# -- 1. versus Evidently and scipy ---------------------------------------------------------------


CASES = ("mlobs", "evidently", "scipy")
LABELS = {
    "mlobs": "mlobs `compare(Profile.load(path), current)`",
    "evidently": "Evidently `Report([DataDriftPreset()]).run(current, reference)`",
    "scipy": "scipy by hand on the raw columns",
}


@dataclass
class Versus:
    shape: Shape
    profile: dict[str, Any]
    runs: dict[str, list[dict[str, Any]]]

    def stats(self, case: str, key: str) -> Stats:
        return Stats.of([float(r[key]) for r in self.runs[case]])

    def ratio(self, case: str, peer: str, key: str) -> Stats:
        pairs = zip(self.runs[case], self.runs[peer], strict=True)
        return Stats.of([float(c[key]) / float(p[key]) for c, p in pairs])


def bench_versus(shape: Shape, repeats: int, directory: str) -> Versus:
    path = str(Path(directory) / "reference.npz")
    with stage("drift: profile the reference"):
        built = run_child("profile", shape, path)
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    for rep in range(repeats):
        for case in rotated(CASES, rep):
            with stage(f"drift: {case}, repeat {rep + 1}/{repeats}"):
                runs[case].append(run_child(case, shape, path))
    return Versus(shape, built, runs)


def report_versus(r: Versus) -> tuple[str, bool, bool]:
    rows = []
    for case in CASES:
        drifted = sorted({c for run in r.runs[case] for c in run["drifted"]})
        rows.append(
            [
                LABELS[case],
                r.stats(case, "wall_s").fmt(".3g"),
                r.stats(case, "peak_mb").fmt(".0f"),
                r.stats(case, "rss_data_mb").fmt(".0f"),
                r.stats(case, "growth_mb").fmt(".0f"),
                ", ".join(drifted) or "none",
            ]
        )
    time_ratio = r.ratio("mlobs", "evidently", "wall_s")
    peak_ratio = r.ratio("mlobs", "evidently", "peak_mb")
    growth_ratio = r.ratio("mlobs", "evidently", "growth_mb")
    ok_time = time_ratio.median <= TARGET_TIME_VS_EVIDENTLY
    ok_memory = max(peak_ratio.median, growth_ratio.median) < TARGET_MEMORY_VS_EVIDENTLY
    ratios = [
        [
            "wall time, mlobs / Evidently",
            time_ratio.fmt(".3f"),
            f"≤ {TARGET_TIME_VS_EVIDENTLY}",
            verdict(ok_time),
        ],
        [
            "peak RSS, mlobs / Evidently",
            peak_ratio.fmt(".2f"),
            f"< {TARGET_MEMORY_VS_EVIDENTLY:g}",
            verdict(peak_ratio.median < TARGET_MEMORY_VS_EVIDENTLY),
        ],
        [
            "peak RSS increment, mlobs / Evidently",
            growth_ratio.fmt(".2f"),
            f"< {TARGET_MEMORY_VS_EVIDENTLY:g}",
            verdict(growth_ratio.median < TARGET_MEMORY_VS_EVIDENTLY),
        ],
        ["wall time, mlobs / scipy", r.ratio("mlobs", "scipy", "wall_s").fmt(".3f"), "", ""],
        ["peak RSS, mlobs / scipy", r.ratio("mlobs", "scipy", "peak_mb").fmt(".2f"), "", ""],
        [
            "peak RSS increment, mlobs / scipy",
            r.ratio("mlobs", "scipy", "growth_mb").fmt(".2f"),
            "",
            "",
        ],
    ]
    agree = len({tuple(sorted(run["drifted"])) for runs in r.runs.values() for run in runs}) == 1
    methods = sorted({m for run in r.runs["evidently"] for m in run.get("methods", [])})
    moved = [f"`{c}` {how}" for c, how in {**SHIFTED, **SHIFTED_CATEGORICAL}.items()]
    text = "\n\n".join(
        [
            f"### 1. Drift of every column, {r.shape.label()}",
            f"Reference and current each {r.shape.label()}, pandas DataFrames (float64 columns, "
            "object columns of shared label strings), seeded; the current side moves "
            + ", ".join(moved)
            + f". Each case in a fresh interpreter, {_repeats(len(r.runs['mlobs']))}, the cases "
            "interleaved (order rotated each repeat); imports and a warm-up on "
            f"{WARMUP_ROWS:,} rows before the data is generated; wall time of the one call, "
            "median (min–max). Peak RSS is `ru_maxrss` at the end of the process; the increment "
            "is that minus the resident set once the data is in memory (the mlobs case holds "
            "only the current data: its reference is the stored profile, loaded inside the timed "
            "call). mlobs: the defaults (Wasserstein over the reference's deviation and the KS "
            "p-value per numeric column, Jensen-Shannon and the chi-square p-value per "
            "categorical one, every current row; the reference as a 10,000-value sample per "
            "column). Evidently: `DataDriftPreset()` with its defaults on the two DataFrames, "
            f"column kinds inferred (it chose: {', '.join(methods) or '?'}). scipy: per numeric "
            "column `wasserstein_distance(ref, cur) / np.std(ref)` and `ks_2samp(ref, cur)` on the "
            "full columns, per categorical one `value_counts` of each side, `jensenshannon` of "
            "the shares (base 2) and `chi2_contingency` of the counts.",
            f"The profile, built once beforehand in its own process (not timed above): "
            f"{r.profile['wall_s']:.2f} s to build and save, "
            f"{r.profile['bytes'] / 2**20:.2f} MB on disk.",
            table(
                [
                    "case",
                    "wall s",
                    "peak RSS MB",
                    "RSS with the data MB",
                    "peak − data MB",
                    "drifted columns",
                ],
                rows,
            ),
            "Drifted columns "
            + ("agree across the cases." if agree else "**differ** between the cases (above)."),
            "Ratios, taken per repeat:",
            table(["ratio", "median (min–max)", "target", "result"], ratios),
        ]
    )
    return text, ok_time, ok_memory


def _repeats(n: int) -> str:
    return f"{n} repeat" if n == 1 else f"{n} repeats"


# -- 2. cost per feature -------------------------------------------------------------------------


@dataclass
class Linear:
    shapes: tuple[Shape, ...]
    runs: dict[int, list[dict[str, Any]]]

    def per_feature_ms(self, shape: Shape) -> list[float]:
        return [r["wall_s"] / shape.features * 1e3 for r in self.runs[shape.features]]


def bench_linear(shapes: tuple[Shape, ...], repeats: int, directory: str) -> Linear:
    paths = {s.features: str(Path(directory) / f"linear-{s.features}.npz") for s in shapes}
    for s in shapes:
        with stage(f"drift: profile {s.features} features"):
            run_child("profile", s, paths[s.features])
    runs: dict[int, list[dict[str, Any]]] = {s.features: [] for s in shapes}
    by_name = {str(s.features): s for s in shapes}
    for rep in range(repeats):
        for s in (by_name[name] for name in rotated(list(by_name), rep)):
            with stage(f"drift: mlobs on {s.features} features, repeat {rep + 1}/{repeats}"):
                runs[s.features].append(run_child("mlobs", s, paths[s.features]))
    return Linear(shapes, runs)


def report_linear(r: Linear) -> tuple[str, bool]:
    rows = []
    for s in r.shapes:
        runs = r.runs[s.features]
        rows.append(
            [
                s.label(),
                Stats.of([x["wall_s"] for x in runs]).fmt(".3g"),
                Stats.of(r.per_feature_ms(s)).fmt(".3g"),
                Stats.of([x["growth_mb"] for x in runs]).fmt(".0f"),
            ]
        )
    fewest, most = r.shapes[0], r.shapes[-1]
    pairs = zip(r.per_feature_ms(most), r.per_feature_ms(fewest), strict=True)
    ratio = Stats.of([a / b for a, b in pairs])
    ok = ratio.median <= TARGET_LINEAR
    text = "\n\n".join(
        [
            "### 2. Cost per feature",
            "mlobs `compare(Profile.load(path), current)` as above, numeric columns only, "
            f"{_repeats(len(r.runs[fewest.features]))} in fresh interpreters, the two sizes "
            "interleaved. Wall time and time per feature: median (min–max).",
            table(["data", "wall s", "ms per feature", "peak − data MB"], rows),
            table(
                ["ratio", "median (min–max)", "target", "result"],
                [
                    [
                        f"ms per feature, {most.features} / {fewest.features} features",
                        ratio.fmt(".2f"),
                        f"≤ {TARGET_LINEAR}",
                        verdict(ok),
                    ]
                ],
            ),
        ]
    )
    return text, ok


# -- driver --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    versus: Shape
    repeats: int
    linear: tuple[Shape, ...]
    linear_repeats: int


FULL = Sizes(Shape(1_000_000, 20, 5), 3, (Shape(200_000, 25, 0), Shape(200_000, 100, 0)), 3)
QUICK = Sizes(Shape(100_000, 20, 5), 1, (Shape(20_000, 25, 0), Shape(20_000, 100, 0)), 1)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(child(json.loads(argv[1]))))
        return 0
    args = parse_args(__doc__, "drift", argv)
    sizes = QUICK if args.quick else FULL
    directory = tempfile.mkdtemp(prefix="mlobs-bench-drift-")
    try:
        versus = bench_versus(sizes.versus, sizes.repeats, directory)
        linear = bench_linear(sizes.linear, sizes.linear_repeats, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    versus_text, ok_time, ok_memory = report_versus(versus)
    linear_text, ok_linear = report_linear(linear)
    return finish(
        args,
        "drift",
        "## Drift (issue #5)",
        PEERS,
        [
            ("drift: ≥ 20× faster than Evidently", ok_time),
            ("drift: less peak memory than Evidently", ok_memory),
            ("drift: cost linear in features", ok_linear),
        ],
        [versus_text, linear_text],
    )


if __name__ == "__main__":
    sys.exit(main())
