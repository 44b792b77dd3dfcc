"""Turning what users pass (lists, numpy arrays, pandas series, CPU tensors) into 1-D arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


class Unusable(ValueError):
    """Input that cannot be evaluated at all; the report says why instead of raising."""


def column(values: Any, name: str, dtype: Any = None) -> NDArray[Any]:
    """One value per row: a sequence, a 1-D array or an ``(n, 1)`` column."""
    try:
        arr = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise Unusable(f"{name} can't be read as an array: {exc}") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    elif arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise Unusable(f"{name} has shape {arr.shape}; expected one value per row")
    return arr


def same_length(y_true: NDArray[Any], y_pred: NDArray[Any]) -> None:
    if len(y_true) != len(y_pred):
        raise Unusable(f"y_true has {len(y_true)} rows and y_pred {len(y_pred)}: nothing evaluated")


def rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"
