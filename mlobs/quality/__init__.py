"""Model-quality KPIs: classification and regression reports, recorded as labeled metrics.

``classification_quality`` and ``regression_quality`` are pure functions over arrays;
``log_quality`` and ``log_feature_importance`` record their results in the active run;
``LateLabels`` joins predictions with ground truth that arrives later and evaluates them per
window. Needs numpy (the ``drift`` extra has it); ``import mlobs`` does not load this package.
"""

from __future__ import annotations

try:
    import numpy  # noqa: F401  (checked first, for a clear message)
except ImportError as exc:  # pragma: no cover - numpy is in the drift and demo extras
    raise ImportError("mlobs.quality needs numpy: pip install 'mlobs[drift]' or numpy") from exc

from mlobs.quality.classification import (
    ClassificationQuality,
    ClassScores,
    classification_quality,
)
from mlobs.quality.late import LateLabels
from mlobs.quality.log import log_feature_importance, log_quality
from mlobs.quality.regression import RegressionQuality, regression_quality

__all__ = [
    "ClassScores",
    "ClassificationQuality",
    "LateLabels",
    "RegressionQuality",
    "classification_quality",
    "log_feature_importance",
    "log_quality",
    "regression_quality",
]
