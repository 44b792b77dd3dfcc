"""The state of a run while it is active, and the metric hot path that writes into it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.context import current_run
from mlobs.record.types import BufferedRecord, Kind

if TYPE_CHECKING:
    from mlobs.record.recorder import Recorder

_GAUGE = int(Kind.GAUGE)
_time_ns = time.time_ns
_monotonic = time.monotonic
_get_run = current_run.get
_SPLIT_CACHE_MAX = 1024
_SYSTEM_ATTRS: dict[str, Any] = {"scope": "system"}


class ActiveRun:
    """One run in progress. Returned by ``with mlobs.run(...) as run``.

    Attributes:
        run_id: the run's id (32 hex characters, or ``MLOBS_RUN_ID``).
        name: the run's name.
        step: the last global step recorded; ``mlobs.log`` without ``step=`` uses ``step + 1``.
        epoch: the epoch in progress, or ``None`` between epochs.
    """

    __slots__ = (
        "_progress_ns",
        "_progress_step",
        "_split_attrs",
        "append",
        "epoch",
        "heartbeat_sent_ns",
        "last_epoch",
        "name",
        "recorder",
        "records_metrics",
        "run_id",
        "status",
        "step",
    )

    def __init__(
        self, run_id: str, name: str, recorder: Recorder, *, records_metrics: bool = True
    ) -> None:
        self.run_id = run_id
        self.name = name
        self.records_metrics = records_metrics
        self.step = 0
        self.epoch: int | None = None
        self.last_epoch = -1
        self._progress_ns = time.time_ns()
        self._progress_step = 0
        self.heartbeat_sent_ns = 0
        self.status = "running"
        self._split_attrs: dict[str, dict[str, Any]] = {}
        self.bind(recorder)

    def bind(self, recorder: Recorder) -> None:
        """Point this run at a recorder (again, when ``mlobs.configure`` rebuilds the pipeline)."""
        self.recorder = recorder
        self.append: Callable[[BufferedRecord], None] = recorder.append

    @property
    def last_progress_ns(self) -> int:
        """When the run last made progress: a step, an epoch end, a heartbeat, or a move of
        :attr:`step`. ``mlobs.log`` only moves the step (reading the wall clock there too would
        cost the hot path), so its progress is stamped when it is first looked at, by the
        flusher's heartbeat pass within a flush interval."""
        step = self.step
        if step != self._progress_step:
            self._progress_step = step
            self._progress_ns = max(self._progress_ns, time.time_ns())
        return self._progress_ns

    @last_progress_ns.setter
    def last_progress_ns(self, ns: int) -> None:
        self._progress_step = self.step
        self._progress_ns = ns

    def split_attrs(self, split: str) -> dict[str, Any]:
        """The attributes of a point with this split: one shared dict per split and run, which
        the spool stores once per chunk."""
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
        log(metrics, self, step=step, split=split, **kwargs)

    def __repr__(self) -> str:
        return f"ActiveRun(run_id={self.run_id!r}, name={self.name!r}, status={self.status!r})"


def _run_for_this_thread(outside_run_is_normal: bool = False) -> ActiveRun:
    from mlobs import runtime  # the runtime imports this module

    rt = runtime.get()
    run = rt.latest_run()
    if run is not None or outside_run_is_normal:
        return run or rt.no_run
    safety.self_metrics.inc(safety.OUTSIDE_RUN, "log")
    safety.warn(
        "log-outside-run",
        "mlobs: mlobs.log() called outside a run; values are recorded with an empty run id",
    )
    return rt.no_run


def log(
    metrics: Mapping[str, Any] | None = None,
    _run: ActiveRun | None = None,
    /,
    *,
    step: int | None = None,
    split: str | None = None,
    **values: Any,
) -> None:
    """Record metric values: ``mlobs.log(loss=0.3, accuracy=0.9, split="val")``.

    Args:
        metrics: a mapping, for names that are not Python identifiers (``{"val/loss": 0.3}``).
        step: the global step; one more than the run's last step when omitted.
        split: ``train``, ``val``, ``test`` or any label, recorded as an attribute.
        **values: metric names and numbers. ``int``, ``bool``, numpy scalars and 0-d tensors
            are accepted; NaN and infinity are recorded and counted; strings and ``None`` are
            dropped with a warning and counted. Nothing here ever raises (unless
            ``MLOBS_STRICT=1``).

    Inside an epoch the points carry the epoch number. Only rank 0 records unless
    ``MLOBS_LOG_ALL_RANKS=1``. This is the hot path: validation and one tuple appended per value,
    no I/O, no locks (``_run`` is how :meth:`ActiveRun.log` shares it).
    """
    try:
        run = _run or _get_run() or _run_for_this_thread()
        if metrics:
            values = {**checked_names(metrics), **values}
        ts = _monotonic()  # seconds, cheaper than time_ns() end to end (mlobs.record.types)
        if step is None:
            step = run.step = run.step + 1
        elif type(step) is int:
            run.step = step
        else:
            step = run.step = _coerce_step(step, run)
        # the step moves on every rank (logs, system metrics and progress read it); only the
        # values themselves are for the recording ranks
        if not run.records_metrics:
            return
        attrs = None if split is None else run.split_attrs(split)
        epoch = run.epoch
        run_id = run.run_id
        append = run.append
        for name, value in values.items():
            if type(value) is not float:
                value = _coerce_value(name, value)
                if value is None:
                    continue
            if value - value != 0.0:  # NaN or infinity: recorded (alerts want them), counted
                _nonfinite(name, value)
            append((_GAUGE, ts, run_id, name, value, step, epoch, attrs))
    except safety.MlobsError:
        raise
    except Exception as exc:
        safety.report("log", exc)


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


def log_system(metrics: Mapping[str, Any] | None = None, /, **values: Any) -> None:
    """Record system metrics (GPU, host, process) on every rank.

    Unlike :func:`log`, these are recorded whatever the rank (each rank watches its own devices),
    carry the attribute ``scope="system"`` and do not move the run's step: they are stamped with
    the step the run is at. Collectors use this; bad values are rejected and counted as in
    :func:`log`.
    """
    try:
        # a GPU sampler may well run with no training run: not worth a warning
        run = _get_run() or _run_for_this_thread(outside_run_is_normal=True)
        if metrics:
            values = {**checked_names(metrics), **values}
        ts = _time_ns()
        for name, value in values.items():
            if type(value) is not float:
                value = _coerce_value(name, value)
                if value is None:
                    continue
            if value - value != 0.0:
                _nonfinite(name, value)
            run.append((_GAUGE, ts, run.run_id, name, value, run.step, run.epoch, _SYSTEM_ATTRS))
    except safety.MlobsError:
        raise
    except Exception as exc:
        safety.report("log_system", exc)


def log_labeled(
    name: str,
    value: Any,
    labels: Mapping[str, Any],
    *,
    step: int | None = None,
    epoch: int | None = None,
    every_rank: bool = False,
) -> None:
    """Record one metric point with labels (``drift_score{feature="age"}``): for collectors such
    as drift monitors and quality reports whose points differ by more than their name.

    Label values become strings; a label whose value is ``None`` is left out. The point takes the
    run's step unless ``step`` is given (it does not move the step) and the run's epoch unless
    ``epoch`` is given. Like :func:`log`, only rank 0 records unless ``every_rank``; bad values
    are rejected and counted, and nothing raises.
    """
    try:
        run = _get_run() or _run_for_this_thread(outside_run_is_normal=True)
        if not (every_rank or run.records_metrics):
            return
        if type(name) is not str or not name:
            safety.reject("name", "metric name %r is not a non-empty string", name)
            return
        if type(value) is not float:
            value = _coerce_value(name, value)
            if value is None:
                return
        if value - value != 0.0:
            _nonfinite(name, value)
        attrs = {str(k): str(v) for k, v in labels.items() if v is not None}
        run.append(
            (
                _GAUGE,
                _time_ns(),
                run.run_id,
                name,
                value,
                run.step if step is None else int(step),
                run.epoch if epoch is None else int(epoch),
                attrs or None,
            )
        )
    except safety.MlobsError:
        raise
    except Exception as exc:
        safety.report("log_labeled", exc)
