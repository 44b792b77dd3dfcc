"""The state of a run while it is active, and the metric hot path that writes into it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.record.types import BufferedRecord, Kind

if TYPE_CHECKING:
    from mlobs.record.recorder import Recorder

_GAUGE = int(Kind.GAUGE)
_SPLIT_CACHE_MAX = 1024


class ActiveRun:
    """One run in progress. Returned by ``with mlobs.run(...) as run``.

    Attributes:
        run_id: the run's id (32 hex characters, or ``MLOBS_RUN_ID``).
        name: the run's name.
        step: the last global step recorded; ``mlobs.log`` without ``step=`` uses ``step + 1``.
        epoch: the epoch in progress, or ``None`` between epochs.
    """

    def __init__(
        self, run_id: str, name: str, recorder: Recorder, *, records_metrics: bool = True
    ) -> None:
        self.run_id = run_id
        self.name = name
        self.records_metrics = records_metrics
        self.step = 0
        self.epoch: int | None = None
        self.last_epoch = -1
        self.last_progress_ns = time.time_ns()
        self.heartbeat_sent_ns = 0
        self.status = "running"
        self._split_attrs: dict[str, dict[str, Any]] = {}
        self.bind(recorder)

    def bind(self, recorder: Recorder) -> None:
        """Point this run at a recorder (again, when ``mlobs.configure`` rebuilds the pipeline)."""
        self.recorder = recorder
        self.append: Callable[[BufferedRecord], None] = recorder.append

    def split_attrs(self, split: str) -> dict[str, Any]:
        attrs = self._split_attrs.get(split)
        if attrs is None:
            attrs = {"split": str(split)}
            if len(self._split_attrs) < _SPLIT_CACHE_MAX:
                self._split_attrs[split] = attrs
        return attrs

    def log(
        self,
        metrics: Mapping[str, Any] | None = None,
        /,
        *,
        step: int | None = None,
        split: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Record metric values in this run; see :func:`mlobs.log`."""
        try:
            if metrics:
                kwargs = {**checked_names(metrics), **kwargs}
            record_metrics(self, kwargs, step, split)
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("log", exc)

    def __repr__(self) -> str:
        return f"ActiveRun(run_id={self.run_id!r}, name={self.name!r}, status={self.status!r})"


def record_metrics(
    run: ActiveRun, metrics: Mapping[str, Any], step: int | None, split: str | None
) -> None:
    """The hot path: validate and append one gauge point per metric. No I/O, no locks."""
    if not run.records_metrics:
        return
    ts = time.time_ns()
    if step is None:
        step = run.step = run.step + 1
    elif type(step) is int:
        run.step = step
    else:
        step = run.step = _coerce_step(step, run)
    attrs = None if split is None else run.split_attrs(split)
    epoch = run.epoch
    run_id = run.run_id
    append = run.append
    for name, value in metrics.items():
        if type(value) is not float:
            value = _coerce_value(name, value)
            if value is None:
                continue
        if value - value != 0.0:  # NaN or infinity: recorded (alerts want to see it), counted
            _nonfinite(name, value)
        append((_GAUGE, ts, run_id, name, value, step, epoch, attrs))
    run.last_progress_ns = ts
    recorder = run.recorder
    if len(recorder) >= recorder.flush_max_records:
        recorder.maybe_wake()


def checked_names(metrics: Mapping[Any, Any]) -> dict[str, Any]:
    """The entries of a mapping whose names are non-empty strings; others are rejected.

    Keyword arguments are always such names, so only the mapping form pays for this check.
    """
    good = {k: v for k, v in metrics.items() if type(k) is str and k}
    if len(good) != len(metrics):
        for key in metrics:
            if type(key) is not str or not key:
                safety.reject("name", "metric name %r is not a non-empty string", key)
    return good


def _coerce_value(name: str, value: Any) -> float | None:
    if type(value) is int or type(value) is bool:
        return float(value)
    if value is None or isinstance(value, (str, bytes)):
        safety.reject("type", "metric %r has a %s value, not a number", name, type(value).__name__)
        return None
    try:
        return float(value)  # numpy scalars, 0-d tensors, Decimal, Fraction
    except (TypeError, ValueError, OverflowError):
        safety.reject(
            "type", "metric %r has a value %s can't turn into a number", name, type(value).__name__
        )
        return None


def _coerce_step(step: Any, run: ActiveRun) -> int:
    try:
        return int(step)
    except (TypeError, ValueError, OverflowError):
        safety.reject("step", "step %r is not an integer; using the implicit step", step)
        return run.step + 1


def _nonfinite(name: str, value: float) -> None:
    safety.self_metrics.inc(safety.NONFINITE_VALUES, "nan" if math.isnan(value) else "inf")
    safety.warn("nonfinite:" + name, "mlobs: metric %r is %s (recorded as is)", name, value)
