"""Regression quality: MAE, RMSE, MAPE and R².

A pure function over arrays. Data problems never raise: a value that can't be computed is
``None`` and ``reasons`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlobs import safety
from mlobs.quality._arrays import Unusable, column, rows, same_length


@dataclass(frozen=True)
class RegressionQuality:
    """The quality of one set of regression predictions.

    Attributes:
        n: rows evaluated (rows where either value is NaN are left out).
        mae: mean absolute error.
        rmse: root mean squared error.
        mape: mean absolute percentage error as a fraction (0.05 is 5 %), over rows whose true
            value is not 0; ``None`` when there are none.
        r2: coefficient of determination; ``None`` when the true values are constant.
        reasons: why a value is ``None``, and which rows were left out.
    """

    n: int
    mae: float | None
    rmse: float | None
    mape: float | None
    r2: float | None
    reasons: list[str] = field(default_factory=list)


def regression_quality(y_true: Any, y_pred: Any) -> RegressionQuality:
    """Compute regression KPIs of predictions against ground truth.

    Args:
        y_true: the true value of each row; NaN marks a row whose value is missing.
        y_pred: the predicted value of each row.

    Returns:
        A :class:`RegressionQuality`. Nothing here raises for bad data: a report with ``n == 0``
        and the reason comes back instead.
    """
    reasons: list[str] = []
    try:
        yt = column(y_true, "y_true", dtype=float)
        yp = column(y_pred, "y_pred", dtype=float)
        same_length(yt, yp)
    except Unusable as exc:
        safety.warn("quality-input", "mlobs: regression_quality: %s", exc)
        return RegressionQuality(0, None, None, None, None, [str(exc)])
    keep = ~(np.isnan(yt) | np.isnan(yp))
    if not keep.all():
        reasons.append(f"{rows(int((~keep).sum()))} with NaN left out")
        yt, yp = yt[keep], yp[keep]
    n = len(yt)
    if n == 0:
        return RegressionQuality(0, None, None, None, None, [*reasons, "no rows to evaluate"])

    error = yp - yt
    mae = float(np.abs(error).mean())
    rmse = float(np.sqrt(np.square(error).mean()))

    nonzero = yt != 0.0
    mape = None
    if not nonzero.all():
        reasons.append(f"{rows(int((~nonzero).sum()))} with y_true == 0 left out of MAPE")
    if nonzero.any():
        mape = float(np.abs(error[nonzero] / yt[nonzero]).mean())
    else:
        reasons.append("MAPE undefined: every y_true is 0")

    total = float(np.square(yt - yt.mean()).sum())
    r2 = None
    if total > 0.0 and np.isfinite(total):
        r2 = 1.0 - float(np.square(error).sum()) / total
    elif total == 0.0:
        reasons.append("R² undefined: y_true is constant")
    else:
        reasons.append("R² undefined: y_true has infinite values")

    return RegressionQuality(n, mae, rmse, mape, r2, reasons)
