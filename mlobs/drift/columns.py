"""Tabular input as named columns: numpy arrays, pandas DataFrames, lists of dicts, dicts of
columns.

Nothing here copies a column it does not have to: a DataFrame's column stays a pandas Series and a
2-D array's column a view, until :func:`as_float` or :func:`count_categories` reads it. pandas is
never imported by mlobs; its objects are recognised by their type's module and used through their
own methods.
"""

from __future__ import annotations

import numbers
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ColumnKind = Literal["numeric", "categorical"]
NUMERIC: ColumnKind = "numeric"
CATEGORICAL: ColumnKind = "categorical"

_NUMBER_TYPES = (int, float, np.integer, np.floating)
_MISSING_TYPE_NAMES = frozenset(("NAType", "NaTType"))


@dataclass(frozen=True)
class Column:
    """One column of the input, not yet converted.

    Attributes:
        name: the column's name (always a string; positions of a 2-D array become "0", "1", ...).
        kind: ``numeric`` or ``categorical``.
        values: a 1-D numpy array, a pandas Series or a list, as the input held it.
    """

    name: str
    kind: ColumnKind
    values: Any

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Table:
    """Columns by name, the columns left out (name -> why) and the number of rows."""

    columns: dict[str, Column]
    rows: int
    skipped: dict[str, str] = field(default_factory=dict)
    unselected: list[str] = field(default_factory=list)
    """Columns left out because they were not asked for."""


def is_pandas(obj: object, name: str) -> bool:
    """``obj`` is a pandas ``DataFrame`` or ``Series`` (``name``), without importing pandas."""
    cls = type(obj)
    return cls.__module__.startswith("pandas") and any(c.__name__ == name for c in cls.__mro__)


def to_table(
    data: Any,
    *,
    categorical: Iterable[str] | None = None,
    names: Sequence[str] | None = None,
    kinds: Mapping[str, ColumnKind] | None = None,
    select: Collection[str] | None = None,
) -> Table:
    """Read ``data`` into named columns with a kind each.

    Args:
        data: a pandas DataFrame, a numpy array (1-D: one column; 2-D: rows x columns; or a
            structured array), a mapping of column name to values, or a sequence of row dicts.
        categorical: column names to treat as categorical whatever their type.
        names: column names for a plain numpy array (default "0", "1", ...).
        kinds: known kinds by column name (a reference profile's), not inferred again.
        select: read only these columns (the others are listed in ``unselected``).

    Other kinds are inferred: numbers (not booleans) are numeric; strings, booleans, pandas
    categories and mixed objects are categorical; datetimes and complex numbers are skipped with
    a reason.

    Raises:
        TypeError: ``data`` is none of the above.
    """
    forced = frozenset(categorical or ())
    known = kinds or {}
    raw: dict[str, Any]
    if is_pandas(data, "DataFrame"):
        raw = {str(name): data[name] for name in data.columns}
    elif is_pandas(data, "Series"):
        raw = {str(data.name if data.name is not None else "0"): data}
    elif isinstance(data, np.ndarray):
        raw = _array_columns(data, names)
    elif isinstance(data, Mapping):
        raw = {str(name): values for name, values in data.items()}
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        raw = _row_columns(data)
    else:
        raise TypeError(
            "drift data must be a pandas DataFrame, a numpy array, a dict of columns or a "
            f"list of row dicts, not {type(data).__name__}"
        )
    columns: dict[str, Column] = {}
    skipped: dict[str, str] = {}
    rows = 0
    unselected = []
    for name, values in raw.items():
        if select is not None and name not in select:
            unselected.append(name)
            continue
        if not is_pandas(values, "Series") and not isinstance(values, np.ndarray):
            values = values if isinstance(values, list) else list(values)
        rows = max(rows, len(values))
        kind = CATEGORICAL if name in forced else known.get(name) or _infer_kind(values)
        if kind is None:
            skipped[name] = f"unsupported type {_dtype_name(values)}"
        else:
            columns[name] = Column(name, kind, values)
    return Table(columns, rows, skipped, unselected)


def _array_columns(data: np.ndarray, names: Sequence[str] | None) -> dict[str, Any]:
    if data.dtype.names:  # a structured array: one field per column
        return {str(name): data[name] for name in data.dtype.names}
    if data.ndim == 1:
        data = data.reshape(-1, 1)
    if data.ndim != 2:
        raise TypeError(f"a drift array must be 1-D or 2-D, not {data.ndim}-D")
    labels = (
        [str(n) for n in names] if names is not None else [str(i) for i in range(data.shape[1])]
    )
    if len(labels) != data.shape[1]:
        raise TypeError(f"{len(labels)} names given for {data.shape[1]} columns")
    return {label: data[:, i] for i, label in enumerate(labels)}


def _row_columns(rows: Iterable[Any]) -> dict[str, list[Any]]:
    records = rows if isinstance(rows, Sequence) else list(rows)
    keys: dict[str, None] = {}
    for record in records:
        if not isinstance(record, Mapping):
            raise TypeError(f"rows must be dicts, not {type(record).__name__}")
        for key in record:
            keys.setdefault(key, None)
    return {str(key): [record.get(key) for record in records] for key in keys}


def _dtype_name(values: Any) -> str:
    return str(getattr(values, "dtype", type(values).__name__))


def _infer_kind(values: Any) -> ColumnKind | None:
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        return _infer_objects(values)
    if is_pandas(values, "Series") and type(dtype).__name__ == "CategoricalDtype":
        return CATEGORICAL
    kind = getattr(dtype, "kind", "O")
    if kind == "b":
        return CATEGORICAL
    if kind in "iuf":
        return NUMERIC
    if kind in "OUST":
        return _infer_objects(values) if kind == "O" else CATEGORICAL
    return None  # datetimes, durations, complex numbers, raw bytes


def _infer_objects(values: Any) -> ColumnKind:
    """Numeric when every value that is there is a number (``bool`` is not), else categorical."""
    items = values.tolist() if hasattr(values, "tolist") else values
    for value in items:
        if isinstance(value, (bool, np.bool_)):
            return CATEGORICAL
        if not isinstance(value, _NUMBER_TYPES) and label(value) is not None:
            return CATEGORICAL
    return NUMERIC


def as_float(values: Any) -> tuple[np.ndarray, int]:
    """A float64 array with NaN for every missing value, and the number of values that were
    there but not numbers (also NaN in the array).

    A view, not a copy, when the values already are a float64 array.
    """
    if is_pandas(values, "Series"):
        if getattr(values.dtype, "kind", "O") in "iufb":
            return values.to_numpy(dtype=np.float64, na_value=np.nan), 0
        values = values.to_numpy(dtype=object)
    array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if array.dtype.kind in "iufb":
        return np.asarray(array, dtype=np.float64), 0
    out = np.empty(len(array), dtype=np.float64)
    bad = 0
    for i, value in enumerate(array.tolist()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[i] = value
        elif label(value) is None:
            out[i] = np.nan
        else:
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                out[i] = np.nan
                bad += 1
    return out, bad


def label(value: object) -> str | None:
    """The category label of a value, or ``None`` for a missing one (None, NaN, pandas NA, NaT).

    Labels are strings so that a profile saved to a file compares with fresh data: ``1``,
    ``1.0`` and ``"1"`` are one category (pandas turns integer columns with gaps into floats).
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if number != number:
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if type(value).__name__ in _MISSING_TYPE_NAMES:
        return None
    return str(value)


def count_categories(values: Any) -> tuple[dict[str, int], int]:
    """Count each category label of a column; returns (counts, missing values)."""
    raw: Mapping[Any, int]
    missing = 0
    if is_pandas(values, "Series"):  # NaN, None and NA are counted as one key, folded below
        raw = {key: int(n) for key, n in values.value_counts(dropna=False).items() if n}
    elif isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        if values.dtype.kind == "f":
            present = ~np.isnan(values)
            missing = int(values.size - np.count_nonzero(present))
            values = values[present]
        keys, counts = np.unique(values, return_counts=True)
        raw = dict(zip(keys.tolist(), counts.tolist(), strict=True))
    else:
        items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        try:
            raw = Counter(items)
        except TypeError:  # unhashable values (lists, dicts): count their labels instead
            raw = Counter(label(item) for item in items)
    counts_by_label: dict[str, int] = {}
    for key, n in raw.items():
        name = label(key)
        if name is None:
            missing += n
        else:
            counts_by_label[name] = counts_by_label.get(name, 0) + n
    return counts_by_label, missing
