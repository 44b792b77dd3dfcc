"""Recording quality reports and feature importance as labeled metric points.

Each KPI becomes one point through :func:`mlobs.log_labeled`; classes, confusion-matrix cells and
features are labels, so one metric name covers them all (``quality_f1{class="cat"}``). Dashboards
and alert rules rely on these names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mlobs import safety
from mlobs.instrument.active import log_labeled
from mlobs.quality.classification import ClassificationQuality
from mlobs.quality.regression import RegressionQuality

MAX_CONFUSION_CLASSES = 50
"""Past this many classes the confusion matrix (classes² points) is not recorded."""

_Point = tuple[str, Any, dict[str, str]]


def log_quality(
    report: ClassificationQuality | RegressionQuality,
    *,
    prefix: str = "quality",
    step: int | None = None,
    epoch: int | None = None,
    labels: Mapping[str, Any] | None = None,
) -> None:
    """Record every KPI of a report as a metric point.

    Args:
        report: from :func:`classification_quality` or :func:`regression_quality`.
        prefix: start of every metric name (``quality_accuracy``, ``quality_f1``, ...).
        step: the step of the points; the run's current step when omitted (not moved).
        epoch: the epoch of the points; the run's epoch in progress when omitted.
        labels: labels added to every point, such as ``{"window": "2024-06-01T10:00"}``.

    Values that are ``None`` in the report are not recorded; ``{prefix}_samples`` always is, so
    an evaluation that found no rows shows as 0. Nothing here raises (unless ``MLOBS_STRICT=1``).
    """
    try:
        common = {str(k): v for k, v in (labels or {}).items()}
        if isinstance(report, ClassificationQuality):
            points = _classification_points(report, prefix)
        elif isinstance(report, RegressionQuality):
            points = _regression_points(report, prefix)
        else:
            raise TypeError(f"not a quality report: {type(report).__name__}")
        for name, value, own in points:
            if value is not None:
                log_labeled(name, value, {**common, **own}, step=step, epoch=epoch)
    except safety.MlobsError:
        raise
    except Exception as exc:
        safety.report("log_quality", exc)


def _classification_points(report: ClassificationQuality, prefix: str) -> Iterator[_Point]:
    yield f"{prefix}_samples", report.n, {}
    yield f"{prefix}_accuracy", report.accuracy, {}
    for label, scores in report.per_class.items():
        cls = {"class": str(label)}
        yield f"{prefix}_precision", scores.precision, cls
        yield f"{prefix}_recall", scores.recall, cls
        yield f"{prefix}_f1", scores.f1, cls
        yield f"{prefix}_support", scores.support, cls
    yield f"{prefix}_precision_macro", report.precision_macro, {}
    yield f"{prefix}_recall_macro", report.recall_macro, {}
    yield f"{prefix}_f1_macro", report.f1_macro, {}
    yield f"{prefix}_f1_weighted", report.f1_weighted, {}
    yield f"{prefix}_roc_auc", report.roc_auc, {}
    yield f"{prefix}_ece", report.ece, {}
    if len(report.labels) > MAX_CONFUSION_CLASSES:
        safety.warn(
            "quality-confusion",
            "mlobs: %d classes: the confusion matrix is not recorded past %d",
            len(report.labels),
            MAX_CONFUSION_CLASSES,
        )
        return
    names = [str(label) for label in report.labels]
    for actual, row in zip(names, report.confusion, strict=False):
        for predicted, count in zip(names, row, strict=False):
            yield f"{prefix}_confusion", count, {"actual": actual, "predicted": predicted}


def _regression_points(report: RegressionQuality, prefix: str) -> Iterator[_Point]:
    yield f"{prefix}_samples", report.n, {}
    yield f"{prefix}_mae", report.mae, {}
    yield f"{prefix}_rmse", report.rmse, {}
    yield f"{prefix}_mape", report.mape, {}
    yield f"{prefix}_r2", report.r2, {}


def log_feature_importance(
    importance: Mapping[str, float] | tuple[Any, Any],
    *,
    prefix: str = "quality",
    step: int | None = None,
    epoch: int | None = None,
    labels: Mapping[str, Any] | None = None,
) -> None:
    """Record one ``{prefix}_feature_importance{feature=...}`` point per feature.

    Args:
        importance: ``{feature: value}``, or a pair ``(names, values)`` of equal lengths, such as
            ``(model.feature_names_in_, model.feature_importances_)``.
        prefix: start of the metric name.
        step: the step of the points; the run's current step when omitted (not moved).
        epoch: the epoch of the points; the run's epoch in progress when omitted.
        labels: labels added to every point.

    Nothing here raises (unless ``MLOBS_STRICT=1``).
    """
    try:
        common = {str(k): v for k, v in (labels or {}).items()}
        if isinstance(importance, Mapping):
            pairs = list(importance.items())
        else:
            names, values = importance
            names, values = list(names), list(values)
            if len(names) != len(values):
                raise ValueError(f"{len(names)} feature names and {len(values)} values")
            pairs = list(zip(names, values, strict=True))
        name = f"{prefix}_feature_importance"
        for feature, value in pairs:
            log_labeled(name, value, {**common, "feature": str(feature)}, step=step, epoch=epoch)
    except safety.MlobsError:
        raise
    except Exception as exc:
        safety.report("log_feature_importance", exc)
