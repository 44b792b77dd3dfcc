"""From per-column tests to verdicts: Benjamini-Hochberg across the columns whose tests decide by
p-value, the missing-share signal, and dataset drift as the share of drifted columns."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mlobs.drift.stats import TestResult, json_float

DRIFT_SHARE = 0.5
"""The dataset drifted when at least this share of its columns did (Evidently's default)."""
MISSING_THRESHOLD = 0.05
"""A column drifted when its share of missing values moved by more than this (absolute)."""

Correction = Literal["bh", "none"]


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values: reject where adjusted p < alpha to keep the false
    discovery rate at alpha. ``scipy.stats.false_discovery_control`` where scipy has it (1.11+)."""
    ps = np.asarray(p_values, dtype=np.float64)
    if ps.size == 0:
        return ps
    try:
        from scipy.stats import false_discovery_control
    except ImportError:  # scipy < 1.11
        return _benjamini_hochberg(ps)
    return np.asarray(false_discovery_control(ps, method="bh"), dtype=np.float64)


def _benjamini_hochberg(ps: np.ndarray) -> np.ndarray:
    n = ps.size
    order = np.argsort(ps)[::-1]  # largest first: adjusted_i = min over j >= i of p_j n / j
    scaled = ps[order] * n / np.arange(n, 0, -1)
    out = np.empty(n, dtype=np.float64)
    out[order] = np.minimum(np.minimum.accumulate(scaled), 1.0)
    return out


@dataclass(frozen=True)
class FeatureDrift:
    """One column's drift.

    Attributes:
        column: the column's name.
        kind: ``numeric`` or ``categorical``.
        result: the test that decides, with its verdict (after Benjamini-Hochberg when it decides
            by p-value).
        others: tests reported beside it, by name: the Kolmogorov-Smirnov or chi-square p-value
            next to a distance.
        missing_reference: share of the reference's rows missing a value.
        missing_current: share of the current rows missing a value.
        missing_drifted: the missing share moved by more than the threshold (its own signal).
        p_value_adjusted: the Benjamini-Hochberg adjusted p-value, where the p-value decides.
    """

    column: str
    kind: str
    result: TestResult
    others: dict[str, TestResult] = field(default_factory=dict)
    missing_reference: float = 0.0
    missing_current: float = 0.0
    missing_drifted: bool = False
    p_value_adjusted: float | None = None

    @property
    def drifted(self) -> bool:
        """The test's verdict, or the missing share's."""
        return self.result.drifted or self.missing_drifted

    @property
    def p_value(self) -> float | None:
        """The deciding test's p-value, else the first one reported beside it."""
        if self.result.p_value is not None:
            return self.result.p_value
        return next((r.p_value for r in self.others.values() if r.p_value is not None), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "column": self.column,
            "kind": self.kind,
            "drifted": self.drifted,
            "result": self.result.to_dict(),
            "others": {name: r.to_dict() for name, r in self.others.items()},
            "p_value": json_float(self.p_value),
            "p_value_adjusted": json_float(self.p_value_adjusted),
            "missing_reference": self.missing_reference,
            "missing_current": self.missing_current,
            "missing_drifted": self.missing_drifted,
        }


TABLE_COLUMNS = (
    "column",
    "kind",
    "test",
    "effect size",
    "threshold",
    "p-value",
    "missing",
    "drifted",
    "reason",
)


@dataclass(frozen=True)
class DatasetDrift:
    """Drift of every column compared, and of the dataset as a whole.

    Attributes:
        features: each compared column's drift, in the reference's column order.
        share_drifted: drifted columns over compared columns.
        threshold: the share at which the dataset counts as drifted.
        drifted: ``share_drifted >= threshold``.
        skipped: columns not compared, with why (absent on one side, unsupported type).
    """

    features: dict[str, FeatureDrift]
    share_drifted: float
    threshold: float
    drifted: bool
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, feature in self.features.items() if feature.drifted]

    def __getitem__(self, column: str) -> FeatureDrift:
        return self.features[column]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``json.dumps`` takes it as it is)."""
        return {
            "drifted": self.drifted,
            "share_drifted": self.share_drifted,
            "threshold": self.threshold,
            "columns": len(self.features),
            "drifted_columns": self.drifted_columns,
            "features": {name: feature.to_dict() for name, feature in self.features.items()},
            "skipped": dict(self.skipped),
        }

    def table_rows(self) -> list[dict[str, str]]:
        """One row of display strings per column, keyed by :data:`TABLE_COLUMNS`."""
        rows = []
        for feature in self.features.values():
            result = feature.result
            p = (
                feature.p_value_adjusted
                if feature.p_value_adjusted is not None
                else feature.p_value
            )
            verdict = "yes" if result.drifted else "no"
            if feature.missing_drifted:
                verdict = "yes (missing)" if not result.drifted else "yes (+ missing)"
            rows.append(
                {
                    "column": feature.column,
                    "kind": feature.kind,
                    "test": result.test,
                    "effect size": _number(result.effect_size),
                    "threshold": _number(result.threshold),
                    "p-value": _number(p),
                    "missing": (f"{feature.missing_reference:.1%} → {feature.missing_current:.1%}"),
                    "drifted": verdict,
                    "reason": result.reason or "",
                }
            )
        for column, why in self.skipped.items():
            row = dict.fromkeys(TABLE_COLUMNS, "")
            row.update(column=column, drifted="skipped", reason=why)
            rows.append(row)
        return rows


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4f}"


def decide(
    features: Iterable[FeatureDrift],
    *,
    drift_share: float = DRIFT_SHARE,
    correction: Correction = "bh",
    skipped: Mapping[str, str] | None = None,
) -> DatasetDrift:
    """Apply the multiple-testing correction and the dataset rule.

    Args:
        features: each column's drift as its tests decided it.
        drift_share: the dataset drifted when at least this share of columns drifted.
        correction: ``bh`` adjusts the p-values of the columns whose tests decide by p-value
            (Benjamini-Hochberg) and decides on the adjusted ones; ``none`` leaves them as they are.
        skipped: columns not compared, with why.
    """
    listed = list(features)
    by_p = [k for k, f in enumerate(listed) if f.result.decided_by == "p_value"]
    if correction == "bh" and by_p:
        raw = [listed[k].result.p_value for k in by_p]
        adjusted = benjamini_hochberg([p if p is not None else 1.0 for p in raw]).tolist()
        for k, q in zip(by_p, adjusted, strict=True):
            feature = listed[k]
            verdict = q < feature.result.threshold
            listed[k] = dataclasses.replace(
                feature,
                result=dataclasses.replace(feature.result, drifted=verdict),
                p_value_adjusted=q,
            )
    drifted = sum(1 for f in listed if f.drifted)
    share = drifted / len(listed) if listed else 0.0
    return DatasetDrift(
        features={f.column: f for f in listed},
        share_drifted=share,
        threshold=drift_share,
        drifted=bool(listed) and share >= drift_share,
        skipped=dict(skipped or {}),
    )
