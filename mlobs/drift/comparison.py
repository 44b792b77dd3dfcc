"""Compare current data with a reference: one test per column, then the dataset's verdict.

The reference is a :class:`~mlobs.drift.Profile` (no training data needed) or data; the current side
is data (or a profile). Every current row counts: each numeric column is sorted once (about 20 ms
per million values) and Kolmogorov-Smirnov, Wasserstein and the bin counts of PSI and
Jensen-Shannon are read off the sorted array in linear time; categorical columns are counted.
Only Anderson-Darling subsamples (200,000 values a side). Histogram distances of all columns go
through one vectorised call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mlobs.drift.columns import as_float, count_categories, to_table
from mlobs.drift.decide import (
    DRIFT_SHARE,
    MISSING_THRESHOLD,
    Correction,
    DatasetDrift,
    FeatureDrift,
    decide,
)
from mlobs.drift.profiles import Profile, build_profile
from mlobs.drift.stats import (
    BINS,
    CATEGORICAL_TESTS,
    DEFAULT_THRESHOLDS,
    NUMERIC_TESTS,
    P_VALUE_TESTS,
    HistogramPair,
    TestResult,
    anderson,
    category_histograms,
    chi_square,
    histogram_results,
    ks,
    numeric_histograms,
    wasserstein,
)
from mlobs.drift.summary import CategoricalSummary, NumericSummary, Summary

Policy = Literal["effect_size", "p_value"]
DEFAULT_TESTS: dict[str, tuple[str, str]] = {
    "effect_size": ("wasserstein", "jensen_shannon"),
    "p_value": ("ks", "chi_square"),
}
"""(numeric, categorical) test of each policy when none is named."""
FEW_VALUES = 5
"""Under the effect-size policy, a numeric column with at most this many distinct values on both
sides together (a flag, a small count) is compared by Jensen-Shannon over its values, as
Evidently's automatic choice does."""
_KS_EXACT_MAX_PRODUCT = 1_000_000  # exact KS p-values only up to 1,000 x 1,000 values: cheap


@dataclass
class _Options:
    policy: Policy
    numeric_test: str | None
    categorical_test: str | None
    thresholds: dict[str, float]
    bins: int
    missing_threshold: float | None


@dataclass
class _Row:
    column: str
    kind: str
    test: str
    outcome: TestResult | HistogramPair
    others: dict[str, TestResult] = field(default_factory=dict)
    missing: tuple[float, float] = (0.0, 0.0)


def compare(
    reference: Profile | Any,
    current: Any,
    *,
    columns: Sequence[str] | None = None,
    categorical: Iterable[str] | None = None,
    names: Sequence[str] | None = None,
    policy: Policy = "effect_size",
    numeric_test: str | None = None,
    categorical_test: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    correction: Correction = "bh",
    drift_share: float = DRIFT_SHARE,
    missing_threshold: float | None = MISSING_THRESHOLD,
    bins: int = BINS,
) -> DatasetDrift:
    """Test every column of ``current`` against ``reference``.

    Args:
        reference: a :class:`Profile` (from :func:`mlobs.drift.profile` or ``Profile.load``), or
            data: a pandas DataFrame, a numpy array, a dict of columns or a list of row dicts.
        current: data of the same shape, or a profile.
        columns: the columns to compare (default: all of the reference's).
        categorical: columns to treat as categorical (when the reference is data).
        names: column names for plain numpy arrays.
        policy: ``effect_size`` (default): numeric columns by Wasserstein distance over the
            reference's standard deviation, categorical ones by Jensen-Shannon distance, each with
            the KS or chi-square p-value reported beside it. ``p_value``: KS and chi-square decide,
            with the Benjamini-Hochberg correction across columns.
        numeric_test: ``ks``, ``wasserstein``, ``psi``, ``jensen_shannon`` or ``anderson``
            instead of the policy's.
        categorical_test: ``chi_square``, ``psi``, ``jensen_shannon`` or ``total_variation``.
        thresholds: thresholds by test name, replacing the defaults (``{"psi": 0.2}``).
        correction: ``bh`` (Benjamini-Hochberg over the columns whose test decides by p-value)
            or ``none``.
        drift_share: the dataset drifted when at least this share of the columns drifted.
        missing_threshold: a column also drifted when its share of missing values moved by more
            than this; ``None`` turns that off.
        bins: equal-frequency bins for numeric PSI and Jensen-Shannon.

    Raises:
        ValueError: an unknown policy, test name or correction, or a share outside (0, 1].
        TypeError: data of a type mlobs cannot read.
    """
    options = _options(
        policy,
        numeric_test,
        categorical_test,
        thresholds,
        correction,
        drift_share,
        bins,
        missing_threshold,
    )
    if not isinstance(reference, Profile):
        reference = build_profile(reference, categorical=categorical, names=names, sample_size=None)
    wanted = list(columns) if columns is not None else list(reference.columns)
    skipped = {c: why for c, why in reference.skipped.items() if c in wanted}
    skipped.update({c: "not in the reference" for c in wanted if c not in reference.columns})
    wanted = [c for c in wanted if c in reference.columns]

    summaries = _current_summaries(reference, current, wanted, names, skipped, columns is None)
    rows: list[_Row] = []
    for column, cur in summaries:
        ref = reference.columns[column]
        if isinstance(ref, NumericSummary) and isinstance(cur, NumericSummary):
            rows.append(_numeric_row(column, ref, cur, options))
        elif isinstance(ref, CategoricalSummary) and isinstance(cur, CategoricalSummary):
            rows.append(_categorical_row(column, ref, cur, options))
        else:
            skipped[column] = f"{ref.kind} in the reference, {cur.kind} in the current"
    return decide(
        _features(rows, options), drift_share=drift_share, correction=correction, skipped=skipped
    )


def _options(
    policy: str,
    numeric_test: str | None,
    categorical_test: str | None,
    thresholds: Mapping[str, float] | None,
    correction: str,
    drift_share: float,
    bins: int,
    missing_threshold: float | None,
) -> _Options:
    if policy not in DEFAULT_TESTS:
        raise ValueError(f"policy must be 'effect_size' or 'p_value', not {policy!r}")
    if numeric_test is not None and numeric_test not in NUMERIC_TESTS:
        raise ValueError(
            f"numeric_test must be one of {sorted(NUMERIC_TESTS)}, not {numeric_test!r}"
        )
    if categorical_test is not None and categorical_test not in CATEGORICAL_TESTS:
        raise ValueError(
            f"categorical_test must be one of {sorted(CATEGORICAL_TESTS)}, not {categorical_test!r}"
        )
    unknown = sorted(set(thresholds or ()) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(
            f"thresholds for unknown tests {unknown}; known: {sorted(DEFAULT_THRESHOLDS)}"
        )
    if correction not in ("bh", "none"):
        raise ValueError(f"correction must be 'bh' or 'none', not {correction!r}")
    if not 0 < drift_share <= 1:
        raise ValueError(f"drift_share must be in (0, 1], not {drift_share}")
    if bins < 2:
        raise ValueError(f"bins must be at least 2, not {bins}")
    return _Options(
        "p_value" if policy == "p_value" else "effect_size",
        numeric_test,
        categorical_test,
        {**DEFAULT_THRESHOLDS, **(thresholds or {})},
        bins,
        missing_threshold,
    )


def _current_summaries(
    reference: Profile,
    current: Any,
    wanted: list[str],
    names: Sequence[str] | None,
    skipped: dict[str, str],
    note_extra: bool,
) -> Iterable[tuple[str, Summary]]:
    """Each wanted column's current summary, one at a time (a sorted copy of one column at a
    time is all the memory this takes beyond the data)."""
    if isinstance(current, Profile):
        if note_extra:
            skipped.update({c: "not in the reference" for c in current if c not in reference})
        for column in wanted:
            if column in current:
                yield column, current[column]
            else:
                skipped[column] = "not in the current data"
        return
    kinds = {c: reference.columns[c].kind for c in wanted}
    table = to_table(current, names=names, kinds=kinds, select=set(wanted))
    if note_extra:
        skipped.update({c: "not in the reference" for c in table.unselected})
    for column in wanted:
        source = table.columns.get(column)
        if source is None:
            skipped[column] = table.skipped.get(column, "not in the current data")
        elif source.kind == "numeric":
            values, non_numeric = as_float(source.values)
            yield column, NumericSummary.from_values(values, non_numeric=non_numeric)
        else:
            counts, missing = count_categories(source.values)
            yield column, CategoricalSummary(counts, missing)


def _numeric_row(column: str, ref: NumericSummary, cur: NumericSummary, options: _Options) -> _Row:
    test = options.numeric_test or DEFAULT_TESTS[options.policy][0]
    if options.numeric_test is None and options.policy == "effect_size" and _few_values(ref, cur):
        test = "jensen_shannon"
    threshold = options.thresholds[test]
    method = _ks_method(ref, cur)
    outcome: TestResult | HistogramPair
    if test in ("psi", "jensen_shannon"):
        outcome = numeric_histograms(test, ref, cur, options.bins, threshold)
    elif test == "ks":
        outcome = ks(ref, cur, threshold=threshold, method=method)
    elif test == "wasserstein":
        outcome = wasserstein(ref, cur, threshold=threshold)
    else:
        outcome = anderson(ref, cur, threshold=threshold)
    others = {} if test in P_VALUE_TESTS else {"ks": ks(ref, cur, method=method)}
    return _Row(column, "numeric", test, outcome, others, (ref.missing_share, cur.missing_share))


def _categorical_row(
    column: str, ref: CategoricalSummary, cur: CategoricalSummary, options: _Options
) -> _Row:
    test = options.categorical_test or DEFAULT_TESTS[options.policy][1]
    threshold = options.thresholds[test]
    outcome: TestResult | HistogramPair
    if test == "chi_square":
        outcome = chi_square(ref, cur, threshold=threshold)
    else:
        outcome = category_histograms(test, ref, cur, threshold)
    others = {} if test in P_VALUE_TESTS else {"chi_square": chi_square(ref, cur)}
    return _Row(
        column, "categorical", test, outcome, others, (ref.missing_share, cur.missing_share)
    )


def _features(rows: list[_Row], options: _Options) -> list[FeatureDrift]:
    """Run the histogram distances of all columns, one vectorised call per test."""
    results: list[TestResult | None] = [
        row.outcome if isinstance(row.outcome, TestResult) else None for row in rows
    ]
    for test in {row.test for row in rows if isinstance(row.outcome, HistogramPair)}:
        picked = [k for k, row in enumerate(rows) if row.test == test]
        computed = histogram_results(
            test, [rows[k].outcome for k in picked], options.thresholds[test]
        )
        for k, done in zip(picked, computed, strict=True):
            results[k] = done
    features = []
    for row, result in zip(rows, results, strict=True):
        assert result is not None
        missing_ref, missing_cur = row.missing
        moved = abs(missing_cur - missing_ref)
        features.append(
            FeatureDrift(
                column=row.column,
                kind=row.kind,
                result=result,
                others=row.others,
                missing_reference=missing_ref,
                missing_current=missing_cur,
                missing_drifted=options.missing_threshold is not None
                and moved > options.missing_threshold,
            )
        )
    return features


def _few_values(ref: NumericSummary, cur: NumericSummary) -> bool:
    if ref.values is None or cur.values is None:
        return False
    return int(np.union1d(ref.values, cur.values).size) <= FEW_VALUES


def _ks_method(ref: NumericSummary, cur: NumericSummary) -> Literal["auto", "asymp"]:
    product = ref.sample.size * cur.sample.size
    return "auto" if product <= _KS_EXACT_MAX_PRODUCT else "asymp"
