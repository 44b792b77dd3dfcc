"""What drift tests need to know about one column, small enough to keep without the data.

A numeric column keeps exact counts and moments (merged with Chan's parallel update, so chunks add
up to the one-shot numbers), and a uniform sample of its values, sorted: the reference side of
Kolmogorov-Smirnov, Wasserstein and Anderson-Darling, and the source of the quantile bins of PSI
and Jensen-Shannon. With at most :data:`DISTINCT_MAX` distinct values it also keeps their exact
counts (a flag, a rating): such columns are binned by value. A categorical column keeps the count
of each category.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

DISTINCT_MAX = 20
"""Numeric columns with at most this many distinct values keep exact counts per value and are
binned by value, not by quantile (Evidently does the same)."""

_EMPTY = np.empty(0, dtype=np.float64)
_EMPTY_COUNTS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class NumericSummary:
    """A numeric column. Missing means NaN, None, infinity, or a value that is not a number.

    Attributes:
        count: finite values.
        missing: rows without a finite value (``non_numeric`` included).
        non_numeric: rows holding something that is not a number (a string, say).
        mean: mean of the finite values (NaN when there are none).
        m2: sum of squared deviations from the mean.
        min: smallest finite value (NaN when there are none).
        max: largest finite value.
        sample: sorted finite values: all of them when ``exact``, else a uniform sample.
        exact: ``sample`` holds every value.
        values: the distinct values, sorted, when there are at most :data:`DISTINCT_MAX`.
        value_counts: how often each of ``values`` occurs.
    """

    kind: ClassVar[Literal["numeric"]] = "numeric"

    count: int
    missing: int
    non_numeric: int
    mean: float
    m2: float
    min: float
    max: float
    sample: np.ndarray
    exact: bool
    values: np.ndarray | None
    value_counts: np.ndarray | None

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation (``ddof=0``, as ``numpy.std``)."""
        return math.sqrt(self.m2 / self.count) if self.count else math.nan

    @classmethod
    def from_values(
        cls,
        values: np.ndarray,
        *,
        non_numeric: int = 0,
        sample_size: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> NumericSummary:
        """Summarise a float array (NaN and infinities are missing).

        Args:
            values: 1-D float64 values.
            non_numeric: how many of the NaNs stand for values that were not numbers.
            sample_size: keep at most this many values (``None``: keep them all).
            rng: draws the sample (a fixed seed makes the summary reproducible).
        """
        finite = np.isfinite(values)
        kept = values if finite.all() else values[finite]
        count = int(kept.size)
        missing = int(values.size) - count
        if count == 0:
            return cls.empty(missing, non_numeric)
        mean = float(kept.mean())
        deviations = kept - mean
        m2 = float(deviations @ deviations)
        if sample_size is None or count <= sample_size:
            sample, exact = np.sort(kept), True
        else:
            rng = rng if rng is not None else np.random.default_rng(0)
            sample = np.sort(kept[rng.choice(count, size=sample_size, replace=False)])
            exact = False
        distinct = _distinct_sorted(sample)
        if distinct is not None and not exact:  # the sample may have missed rare values
            keys, counts = np.unique(kept, return_counts=True)
            distinct = (keys, counts) if keys.size <= DISTINCT_MAX else None
        low, high = (sample[0], sample[-1]) if exact else (kept.min(), kept.max())
        return cls(
            count=count,
            missing=missing,
            non_numeric=non_numeric,
            mean=mean,
            m2=m2,
            min=float(low),
            max=float(high),
            sample=sample,
            exact=exact,
            values=distinct[0] if distinct is not None else None,
            value_counts=distinct[1] if distinct is not None else None,
        )

    @classmethod
    def empty(cls, missing: int = 0, non_numeric: int = 0) -> NumericSummary:
        return cls(
            count=0,
            missing=missing,
            non_numeric=non_numeric,
            mean=math.nan,
            m2=0.0,
            min=math.nan,
            max=math.nan,
            sample=_EMPTY,
            exact=True,
            values=_EMPTY,
            value_counts=_EMPTY_COUNTS,
        )

    def merge(
        self, other: NumericSummary, *, sample_size: int | None, rng: np.random.Generator
    ) -> NumericSummary:
        """The summary of both columns' rows together.

        Counts and moments are exact (Chan et al.'s pairwise update). The merged sample takes
        from each side a share proportional to its count, drawn without replacement, so it stays
        a uniform sample of the union.
        """
        if self.count == 0 or other.count == 0:
            full, none = (other, self) if self.count == 0 else (self, other)
            sample, exact = full.sample, full.exact
            if sample_size is not None and sample.size > sample_size:
                sample = np.sort(rng.choice(sample, size=sample_size, replace=False))
                exact = False
            return dataclasses.replace(
                full,
                missing=full.missing + none.missing,
                non_numeric=full.non_numeric + none.non_numeric,
                sample=sample,
                exact=exact,
            )
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / n)
        if self.exact and other.exact and (sample_size is None or n <= sample_size):
            sample, exact = np.sort(np.concatenate((self.sample, other.sample))), True
        else:
            target = n if sample_size is None else min(sample_size, n)
            from_self = min(round(target * self.count / n), self.sample.size)
            from_other = min(target - from_self, other.sample.size)
            from_self = min(target - from_other, self.sample.size)
            picked = (
                rng.choice(self.sample, size=from_self, replace=False),
                rng.choice(other.sample, size=from_other, replace=False),
            )
            sample, exact = np.sort(np.concatenate(picked)), False
        return NumericSummary(
            count=n,
            missing=self.missing + other.missing,
            non_numeric=self.non_numeric + other.non_numeric,
            mean=mean,
            m2=m2,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            sample=sample,
            exact=exact,
            **_merge_distinct(self, other),
        )


@dataclass(frozen=True, eq=False)
class CategoricalSummary:
    """A categorical column: how often each category label occurs, and missing values."""

    kind: ClassVar[Literal["categorical"]] = "categorical"

    counts: dict[str, int]
    missing: int

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        counts = dict(self.counts)
        for key, n in other.counts.items():
            counts[key] = counts.get(key, 0) + n
        return CategoricalSummary(counts, self.missing + other.missing)


Summary = NumericSummary | CategoricalSummary


def _distinct_sorted(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Distinct values and their counts of a sorted array, if there are few enough."""
    if sorted_values.size == 0:
        return _EMPTY, _EMPTY_COUNTS
    changed = sorted_values[1:] != sorted_values[:-1]
    if np.count_nonzero(changed) + 1 > DISTINCT_MAX:
        return None
    changes = np.flatnonzero(changed)
    starts = np.concatenate(([0], changes + 1))
    counts = np.diff(np.concatenate((starts, [sorted_values.size])))
    return sorted_values[starts], counts.astype(np.int64)


def _merge_distinct(a: NumericSummary, b: NumericSummary) -> dict[str, np.ndarray | None]:
    if a.values is None or b.values is None or a.value_counts is None or b.value_counts is None:
        return {"values": None, "value_counts": None}
    keys = np.union1d(a.values, b.values)
    if keys.size > DISTINCT_MAX:
        return {"values": None, "value_counts": None}
    counts = np.zeros(keys.size, dtype=np.int64)
    counts[np.searchsorted(keys, a.values)] += a.value_counts
    counts[np.searchsorted(keys, b.values)] += b.value_counts
    return {"values": keys, "value_counts": counts}
