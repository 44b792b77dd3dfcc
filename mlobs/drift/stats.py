"""Statistical drift tests as pure functions: reference and current values in, a
:class:`TestResult` out.

Each function takes two 1-D inputs: arrays or lists (numeric: NaN, None and infinities are missing
and left out; categorical: labels, with None and NaN missing), or the column's summary from a
:class:`~mlobs.drift.Profile` for the reference side. Problems with the data (an empty column, a
constant one, a handful of values, categories the reference never saw, strings in a numeric column)
are explained in ``reason``; they never raise.

A test decides the way it is defined: distances (``wasserstein``, ``psi``, ``jensen_shannon``,
``total_variation``) when the effect size reaches the threshold, hypothesis tests (``ks``,
``anderson``, ``chi_square``) when the p-value is below it. Default thresholds are Evidently's, so
that verdicts agree with its DataDriftPreset.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import stats as _scipy

from mlobs.drift import kernels
from mlobs.drift.columns import as_float, count_categories
from mlobs.drift.summary import CategoricalSummary, NumericSummary

KS_ALPHA = 0.05
"""Kolmogorov-Smirnov: drift when p < 0.05 (Evidently's ``ks``)."""
WASSERSTEIN_THRESHOLD = 0.1
"""Wasserstein distance over the reference's standard deviation: drift at 0.1 (Evidently)."""
PSI_THRESHOLD = 0.1
"""PSI: drift at 0.1 (Evidently); by convention 0.1-0.2 is a moderate shift, over 0.2 major."""
JS_THRESHOLD = 0.1
"""Jensen-Shannon distance (natural log, as scipy's default and Evidently): drift at 0.1."""
ANDERSON_ALPHA = 0.1
"""Anderson-Darling k-sample: drift when p < 0.1 (Evidently's ``anderson``)."""
CHI_SQUARE_ALPHA = 0.05
"""Chi-square: drift when p < 0.05 (Evidently's ``chisquare``)."""
TV_THRESHOLD = 0.1
"""Total variation distance: drift at 0.1 (the same scale as Jensen-Shannon's)."""

MIN_VALUES = 20
"""Fewer values than this on either side: still tested, with a "tiny sample" reason."""
BINS = 10
"""Equal-frequency bins on the reference's quantiles for numeric PSI and Jensen-Shannon."""
ANDERSON_MAX_VALUES = 200_000
"""Anderson-Darling (scipy's is O(n log n) with a large constant) subsamples larger sides."""
_EXACT_KS_MAX = 10_000  # scipy's "auto": the exact distribution up to this many values a side
_UNSEEN_BINS_MAX = 100  # a numeric column's values not in the reference: one bin each up to this
_LISTED = 5  # unseen categories named in a reason

Numeric = Sequence[Any] | np.ndarray | NumericSummary
Categorical = Sequence[Any] | np.ndarray | CategoricalSummary
Decision = Literal["effect_size", "p_value", "none"]


@dataclass(frozen=True)
class TestResult:
    """The outcome of one drift test on one column.

    Attributes:
        test: the test's name (``ks``, ``wasserstein``, ``psi``, ``jensen_shannon``, ``anderson``,
            ``chi_square``, ``total_variation``).
        statistic: the test's own statistic (KS D, raw W1, PSI, ...); NaN when not computed.
        p_value: the p-value, for tests that have one.
        effect_size: a measure of how far apart the distributions are that does not grow with the
            sample size: KS D, W1 / std(reference), PSI, Jensen-Shannon distance, total variation,
            Cramér's V for chi-square; for Anderson-Darling, its normalised statistic (which does
            grow with n).
        threshold: the value ``drifted`` was decided against (a distance or a significance level).
        drifted: whether the column drifted by this test.
        decided_by: ``effect_size``, ``p_value``, or ``none`` when nothing could be computed.
        reason: why the result is unusual (empty or tiny sample, unseen categories, ...), or None.
        n_reference: reference values the test used (a profile's sample, when it tests a sample).
        n_current: current values the test used.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class despite the name

    test: str
    statistic: float
    p_value: float | None
    effect_size: float
    threshold: float
    drifted: bool
    decided_by: Decision
    reason: str | None
    n_reference: int
    n_current: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become None)."""
        out = asdict(self)
        for key in ("statistic", "p_value", "effect_size", "threshold"):
            out[key] = json_float(out[key])
        return out


def json_float(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# -- numeric tests ---------------------------------------------------------------------------


def ks(
    reference: Numeric,
    current: Numeric,
    *,
    threshold: float = KS_ALPHA,
    method: Literal["auto", "exact", "asymp"] = "auto",
) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test (two-sided).

    Args:
        threshold: significance level; drift when p < threshold.
        method: p-value method, as in ``scipy.stats.ks_2samp``: ``auto`` takes the exact
            distribution when both samples have at most 10,000 values, else the asymptotic one.

    Effect size: D, the largest distance between the two empirical CDFs.
    """
    ref, cur = numeric_summary(reference), numeric_summary(current)
    checked = _check_numeric("ks", ref, cur, threshold)
    if isinstance(checked, TestResult):
        return checked
    a, b = ref.sample, cur.sample
    d = kernels.ks_statistic(a, b)
    p = _ks_p_value(a, b, d, method)
    return _result("ks", d, p, d, threshold, "p_value", checked, a.size, b.size)


def wasserstein(
    reference: Numeric, current: Numeric, *, threshold: float = WASSERSTEIN_THRESHOLD
) -> TestResult:
    """First Wasserstein (earth mover's) distance, normalised by the reference's standard
    deviation: drift when W1 / std >= threshold.

    A constant reference has no spread to normalise by: the effect size is then the share of
    current values that differ from the constant (0 when the current is the same constant).
    """
    ref, cur = numeric_summary(reference), numeric_summary(current)
    checked = _check_numeric("wasserstein", ref, cur, threshold)
    if isinstance(checked, TestResult):
        return checked
    w = kernels.wasserstein_sorted(ref.sample, cur.sample)
    std = ref.std
    if ref.min < ref.max and std > 0:
        effect = w / std
    else:
        constant = ref.min
        effect = float(np.count_nonzero(cur.sample != constant)) / cur.sample.size
        checked.append(
            f"constant reference ({constant:g}): effect size is the share of current values "
            "that differ from it"
        )
    return _result(
        "wasserstein",
        w,
        None,
        effect,
        threshold,
        "effect_size",
        checked,
        ref.sample.size,
        cur.sample.size,
    )


def psi(
    reference: Numeric, current: Numeric, *, threshold: float = PSI_THRESHOLD, bins: int = BINS
) -> TestResult:
    """Population Stability Index on ``bins`` equal-frequency bins of the reference (by value
    when it has at most 20 distinct values): drift when PSI >= threshold."""
    pair = numeric_histograms(
        "psi", numeric_summary(reference), numeric_summary(current), bins, threshold
    )
    return histogram_results("psi", [pair], threshold)[0]


def jensen_shannon(
    reference: Numeric, current: Numeric, *, threshold: float = JS_THRESHOLD, bins: int = BINS
) -> TestResult:
    """Jensen-Shannon distance (natural log) on the same bins as :func:`psi`."""
    pair = numeric_histograms(
        "jensen_shannon", numeric_summary(reference), numeric_summary(current), bins, threshold
    )
    return histogram_results("jensen_shannon", [pair], threshold)[0]


def anderson(
    reference: Numeric,
    current: Numeric,
    *,
    threshold: float = ANDERSON_ALPHA,
    max_values: int | None = ANDERSON_MAX_VALUES,
    seed: int = 0,
) -> TestResult:
    """Anderson-Darling k-sample test (``scipy.stats.anderson_ksamp``, midrank variant).

    Args:
        threshold: significance level; drift when p < threshold.
        max_values: a side with more values is subsampled to this many (seeded); None: all.
        seed: seed of that subsample.

    scipy interpolates the p-value in a table and clips it to [0.001, 0.25]; a clipped p-value is
    said in ``reason``. The effect size is the normalised statistic, which grows with n.
    """
    ref, cur = numeric_summary(reference), numeric_summary(current)
    checked = _check_numeric("anderson", ref, cur, threshold)
    if isinstance(checked, TestResult):
        return checked
    rng = np.random.default_rng(seed)
    sides = []
    for name, values in (("reference", ref.sample), ("current", cur.sample)):
        if max_values is not None and values.size > max_values:
            values = rng.choice(values, size=max_values, replace=False)
            checked.append(f"{name} subsampled to {max_values:,} values")
        sides.append(values)
    a, b = sides
    if a.min() == a.max() == b.min() == b.max():
        checked.append("every value is the same: nothing to test")
        return _result("anderson", 0.0, 1.0, 0.0, threshold, "none", checked, a.size, b.size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "p-value capped/floored": said in reason instead
            res = _anderson_ksamp([a, b])
    except (ValueError, IndexError, ArithmeticError) as exc:  # scipy's limits: a few values
        checked.append(f"Anderson-Darling is undefined for these samples ({exc})")
        return _result(
            "anderson", math.nan, None, math.nan, threshold, "none", checked, a.size, b.size
        )
    statistic, p = float(res.statistic), float(res.pvalue)
    if not (math.isfinite(statistic) and math.isfinite(p)):
        checked.append("Anderson-Darling is undefined for these samples")
        return _result(
            "anderson", math.nan, None, math.nan, threshold, "none", checked, a.size, b.size
        )
    if p <= 0.001 or p >= 0.25:
        checked.append("p-value clipped to scipy's table range [0.001, 0.25]")
    return _result(
        "anderson", statistic, p, statistic, threshold, "p_value", checked, a.size, b.size
    )


# -- categorical tests -----------------------------------------------------------------------


def chi_square(
    reference: Categorical, current: Categorical, *, threshold: float = CHI_SQUARE_ALPHA
) -> TestResult:
    """Chi-square test of homogeneity on the 2 x k table of category counts
    (``scipy.stats.chi2_contingency``, no continuity correction): drift when p < threshold.

    Categories seen on one side only are columns of the table like any other. Effect size:
    Cramér's V, sqrt(chi2 / n) for two rows, in [0, 1].
    """
    pair = category_histograms(
        "chi_square", categorical_summary(reference), categorical_summary(current), threshold
    )
    if isinstance(pair, TestResult):
        return pair
    table = np.vstack((pair.reference, pair.current))
    table = table[:, table.sum(axis=0) > 0]
    reasons = list(pair.reasons)
    if table.shape[1] < 2:
        reasons.append("a single category on both sides: nothing to test")
        return _result("chi_square", 0.0, 1.0, 0.0, threshold, "none", reasons, *pair.sizes)
    res = _scipy.chi2_contingency(table, correction=False)
    statistic, p = float(res[0]), float(res[1])
    v = math.sqrt(statistic / table.sum())
    return _result("chi_square", statistic, p, v, threshold, "p_value", reasons, *pair.sizes)


def psi_categorical(
    reference: Categorical, current: Categorical, *, threshold: float = PSI_THRESHOLD
) -> TestResult:
    """PSI over the categories of both sides: drift when PSI >= threshold."""
    return _category_test("psi", reference, current, threshold)


def jensen_shannon_categorical(
    reference: Categorical, current: Categorical, *, threshold: float = JS_THRESHOLD
) -> TestResult:
    """Jensen-Shannon distance (natural log) over the categories of both sides."""
    return _category_test("jensen_shannon", reference, current, threshold)


def total_variation(
    reference: Categorical, current: Categorical, *, threshold: float = TV_THRESHOLD
) -> TestResult:
    """Total variation distance: the share of probability mass that moved between categories."""
    return _category_test("total_variation", reference, current, threshold)


NUMERIC_TESTS: dict[str, Callable[..., TestResult]] = {
    "ks": ks,
    "wasserstein": wasserstein,
    "psi": psi,
    "jensen_shannon": jensen_shannon,
    "anderson": anderson,
}
"""Numeric tests by name."""
CATEGORICAL_TESTS: dict[str, Callable[..., TestResult]] = {
    "chi_square": chi_square,
    "psi": psi_categorical,
    "jensen_shannon": jensen_shannon_categorical,
    "total_variation": total_variation,
}
"""Categorical tests by name."""
P_VALUE_TESTS = frozenset(("ks", "anderson", "chi_square"))
"""Tests that decide by p-value; the others decide by effect size."""
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": KS_ALPHA,
    "wasserstein": WASSERSTEIN_THRESHOLD,
    "psi": PSI_THRESHOLD,
    "jensen_shannon": JS_THRESHOLD,
    "anderson": ANDERSON_ALPHA,
    "chi_square": CHI_SQUARE_ALPHA,
    "total_variation": TV_THRESHOLD,
}


# -- histograms: many features through one kernel call ----------------------------------------


@dataclass(frozen=True)
class HistogramPair:
    """Reference and current counts over the same bins (arrays of one length), with what is
    unusual about them."""

    reference: np.ndarray
    current: np.ndarray
    reasons: tuple[str, ...]
    sizes: tuple[int, int]


_HISTOGRAM_KERNELS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "psi": kernels.psi_rows,
    "jensen_shannon": kernels.js_rows,
    "total_variation": kernels.tv_rows,
}


def histogram_results(
    test: str, pairs: Sequence[HistogramPair | TestResult], threshold: float
) -> list[TestResult]:
    """Run a histogram distance (``psi``, ``jensen_shannon``, ``total_variation``) over many
    columns in one vectorised call; entries that are already results (empty columns) pass
    through."""
    hist = [pair for pair in pairs if isinstance(pair, HistogramPair)]
    computed: list[float] = []
    if hist:
        kernel = _HISTOGRAM_KERNELS[test]
        reference = kernels.pad([pair.reference for pair in hist])
        current = kernels.pad([pair.current for pair in hist])
        computed = kernel(reference, current).tolist()
    values = iter(computed)
    results: list[TestResult] = []
    for pair in pairs:
        if isinstance(pair, TestResult):
            results.append(pair)
        else:
            value = next(values)
            results.append(
                _result(
                    test, value, None, value, threshold, "effect_size", pair.reasons, *pair.sizes
                )
            )
    return results


def numeric_histograms(
    test: str, ref: NumericSummary, cur: NumericSummary, bins: int, threshold: float
) -> HistogramPair | TestResult:
    """The bins of a numeric column for a histogram test: by value when the reference has few
    distinct values (current values it never saw get bins of their own), else on the reference's
    quantiles. The result instead when a side has no values."""
    checked = _check_numeric(test, ref, cur, threshold)
    if isinstance(checked, TestResult):
        return checked
    if ref.values is not None and ref.value_counts is not None:  # few distinct values: by value
        seen = kernels.value_counts_at(cur.sample, ref.values)
        current = [seen]
        unseen_total = cur.sample.size - int(seen.sum())
        if unseen_total:
            present = np.isin(cur.sample, ref.values)
            unseen, counts = np.unique(cur.sample[~present], return_counts=True)
            checked.append(_unseen("values", [f"{v:g}" for v in unseen[:_LISTED]], unseen.size))
            current.append(counts if unseen.size <= _UNSEEN_BINS_MAX else np.array([unseen_total]))
        counts = np.concatenate(current)
        reference = np.zeros_like(counts)
        reference[: ref.value_counts.size] = ref.value_counts
        return HistogramPair(reference, counts, tuple(checked), (ref.count, cur.sample.size))
    edges = kernels.quantile_edges(ref.sample, bins)
    return HistogramPair(
        kernels.bin_counts(ref.sample, edges),
        kernels.bin_counts(cur.sample, edges),
        tuple(checked),
        (ref.sample.size, cur.sample.size),
    )


def category_histograms(
    test: str, ref: CategoricalSummary, cur: CategoricalSummary, threshold: float
) -> HistogramPair | TestResult:
    """Counts over the categories of both sides (the reference's first), or the result when one
    side has no values."""
    reasons: list[str] = []
    n_ref, n_cur = ref.count, cur.count
    if n_ref == 0 or n_cur == 0:
        return _undecided(test, threshold, _empty_reason(n_ref, n_cur), n_ref, n_cur)
    if min(n_ref, n_cur) < MIN_VALUES:
        reasons.append(_tiny(n_ref, n_cur))
    unseen = [key for key in cur.counts if key not in ref.counts]
    if unseen:
        reasons.append(_unseen("categories", [repr(k) for k in unseen[:_LISTED]], len(unseen)))
    keys = [*ref.counts, *unseen]
    return HistogramPair(
        np.fromiter((ref.counts.get(k, 0) for k in keys), dtype=np.int64, count=len(keys)),
        np.fromiter((cur.counts.get(k, 0) for k in keys), dtype=np.int64, count=len(keys)),
        tuple(reasons),
        (n_ref, n_cur),
    )


def _category_test(
    test: str, reference: Categorical, current: Categorical, threshold: float
) -> TestResult:
    pair = category_histograms(
        test, categorical_summary(reference), categorical_summary(current), threshold
    )
    return histogram_results(test, [pair], threshold)[0]


# -- inputs ----------------------------------------------------------------------------------


def numeric_summary(values: Numeric) -> NumericSummary:
    """A numeric input as a summary that keeps every value (a summary passes through)."""
    if isinstance(values, NumericSummary):
        return values
    floats, non_numeric = as_float(values)
    return NumericSummary.from_values(floats, non_numeric=non_numeric)


def categorical_summary(values: Categorical) -> CategoricalSummary:
    """A categorical input as category counts (a summary passes through)."""
    if isinstance(values, CategoricalSummary):
        return values
    if isinstance(values, str):
        values = [values]
    counts, missing = count_categories(values)
    return CategoricalSummary(counts, missing)


# -- helpers ---------------------------------------------------------------------------------


def _check_numeric(
    test: str, ref: NumericSummary, cur: NumericSummary, threshold: float
) -> list[str] | TestResult:
    """Reasons to attach, or the result itself when a side has no values."""
    reasons = [
        f"{s.non_numeric:,} non-numeric {side} values ignored"
        for side, s in (("reference", ref), ("current", cur))
        if s.non_numeric
    ]
    if ref.count == 0 or cur.count == 0:
        reasons.append(_empty_reason(ref.count, cur.count))
        return _undecided(test, threshold, reasons, ref.count, cur.count)
    if min(ref.count, cur.count) < MIN_VALUES:
        reasons.append(_tiny(ref.count, cur.count))
    return reasons


def _empty_reason(n_ref: int, n_cur: int) -> str:
    sides = [side for side, n in (("reference", n_ref), ("current", n_cur)) if n == 0]
    return f"no values in the {' or the '.join(sides)}"


def _tiny(n_ref: int, n_cur: int) -> str:
    return f"tiny sample: {n_ref} reference and {n_cur} current values (fewer than {MIN_VALUES})"


def _unseen(what: str, listed: list[str], total: int) -> str:
    more = f" (+{total - len(listed)} more)" if total > len(listed) else ""
    return f"{what} not in the reference: {', '.join(listed)}{more}"


def _join(reasons: Sequence[str]) -> str | None:
    return "; ".join(reasons) if reasons else None


def _undecided(
    test: str, threshold: float, reasons: Sequence[str] | str, n_ref: int, n_cur: int
) -> TestResult:
    listed = [reasons] if isinstance(reasons, str) else reasons
    return _result(test, math.nan, None, math.nan, threshold, "none", listed, n_ref, n_cur)


def _result(
    test: str,
    statistic: float,
    p: float | None,
    effect: float,
    threshold: float,
    decided_by: Decision,
    reasons: Sequence[str],
    n_ref: int,
    n_cur: int,
) -> TestResult:
    if decided_by == "effect_size":
        drifted = effect >= threshold
    elif decided_by == "p_value":
        drifted = p is not None and p < threshold
    else:
        drifted = False
    return TestResult(
        test, statistic, p, effect, threshold, drifted, decided_by, _join(reasons), n_ref, n_cur
    )


def _ks_p_value(a: np.ndarray, b: np.ndarray, d: float, method: str) -> float:
    if method == "exact" or (method == "auto" and max(a.size, b.size) <= _EXACT_KS_MAX):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy falls back to asymp itself when it must
            return float(_scipy.ks_2samp(a, b, method=method).pvalue)
    n, m = sorted((float(a.size), float(b.size)))
    en = m * n / (m + n)
    return float(np.clip(_scipy.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _anderson_ksamp(samples: list[np.ndarray]) -> Any:
    try:
        return _scipy.anderson_ksamp(samples, variant="midrank")
    except TypeError:  # scipy < 1.17 has no variant; midrank is its default there
        return _scipy.anderson_ksamp(samples)
