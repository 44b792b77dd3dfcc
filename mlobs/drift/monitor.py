"""``DriftMonitor``: drift of incoming data against a reference profile, window by window.

Rows (and, optionally, the model's predictions) are handed to :meth:`DriftMonitor.update` as
they arrive, in batches of any size and any of the shapes :func:`mlobs.drift.profile` reads.
When a window is full (``window`` rows, or ``window_seconds`` after its first row) it is compared
with the reference on a background thread, so a serving request never waits for the statistics,
and the result is recorded into the active run (or with no run) as metrics and one event (names
in :mod:`mlobs.drift.names`):

- per column: ``drift_score{monitor, feature, test}`` (the deciding test's effect size),
  ``drift_p_value{monitor, feature, test}``, ``drift_detected{monitor, feature}`` (0/1) and
  ``drift_missing_share{monitor, feature}``;
- per window: ``drift_share_drifted{monitor}``, ``drift_dataset_detected{monitor}``,
  ``drift_window_rows{monitor}``, and for predictions ``drift_prediction_score{monitor, test}``
  and ``drift_prediction_detected{monitor}``;
- the event ``drift.window`` with every column's result (``DatasetDrift.to_dict()``).

Nothing here raises into the caller (``MLOBS_STRICT=1`` aside): rows that cannot be read are
counted in ``mlobs_values_rejected_total{reason="drift_rows"}``, and windows that pile up
behind a slow evaluation are dropped oldest first and counted in
``mlobs_records_dropped_total{reason="drift_window"}``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mlobs import safety
from mlobs.drift import names as n
from mlobs.drift.columns import CATEGORICAL, as_float, to_table
from mlobs.drift.comparison import compare
from mlobs.drift.decide import DatasetDrift
from mlobs.drift.profiles import Profile, profile
from mlobs.instrument.active import log_labeled
from mlobs.record.types import Kind

PREDICTION = "prediction"
"""The column name predictions are compared under."""
MAX_QUEUED_WINDOWS = 8


class _Window:
    """Rows gathered for one window, column by column."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        self.kinds = kinds
        self.columns: dict[str, list[Any]] = {name: [] for name in kinds}
        self.predictions: list[Any] = []
        self.rows = 0
        self.started = 0.0

    def add(self, data: Any, names: list[str] | None) -> int:
        table = to_table(data, kinds=self.kinds, select=self.kinds, names=names)  # type: ignore[arg-type]
        for name, column in table.columns.items():
            if self.kinds[name] == CATEGORICAL:
                self.columns[name].append(list(column.values))
            else:
                self.columns[name].append(as_float(column.values)[0])
        # a column absent from this batch is missing in each of its rows
        for name in self.kinds:
            if name not in table.columns and table.rows:
                filler: Any = [None] * table.rows
                if self.kinds[name] != CATEGORICAL:
                    filler = np.full(table.rows, np.nan)
                self.columns[name].append(filler)
        self.rows += table.rows
        return table.rows

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, parts in self.columns.items():
            if self.kinds[name] == CATEGORICAL:
                out[name] = [v for part in parts for v in part]
            else:
                out[name] = np.concatenate(parts) if parts else np.empty(0)
        return out


class DriftMonitor:
    """Windows of incoming data compared with a reference.

    Args:
        reference: a :class:`~mlobs.drift.Profile`, or training data to profile now.
        name: the ``monitor`` label, to tell several monitors apart.
        window: rows per window.
        window_seconds: also close a window this long after its first row (``None``: by count
            only).
        prediction_reference: the model's outputs on reference data (an array, or a profile of
            one column), to watch the prediction distribution too.
        background: evaluate windows on a worker thread (default); ``False`` evaluates in
            :meth:`update` itself (batch jobs, tests).
        on_window: called with each window's result (on the worker thread).
        **compare_options: passed to :func:`mlobs.drift.compare` (``policy``, ``thresholds``, ...).
    """

    def __init__(
        self,
        reference: Profile | Any,
        *,
        name: str = "default",
        window: int = 1000,
        window_seconds: float | None = None,
        prediction_reference: Profile | Any = None,
        background: bool = True,
        on_window: Callable[[DatasetDrift], None] | None = None,
        names: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **compare_options: Any,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 row, not {window}")
        if window_seconds is not None and not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, not {window_seconds}")
        self.reference = reference if isinstance(reference, Profile) else profile(reference)
        self.prediction_reference: Profile | None = None
        if prediction_reference is not None:
            self.prediction_reference = (
                prediction_reference
                if isinstance(prediction_reference, Profile)
                else profile({PREDICTION: _flat(prediction_reference)}, name="predictions")
            )
        compare(self.reference, {}, **compare_options)  # bad options fail here, not in a window
        self.name = name
        self.window = window
        self.window_seconds = window_seconds
        self.names = names
        self.on_window = on_window
        self.compare_options = compare_options
        self.clock = clock
        self.last: DatasetDrift | None = None
        self.last_prediction: DatasetDrift | None = None
        self.windows = 0
        self._kinds = {c: s.kind for c, s in self.reference.columns.items()}
        self._lock = threading.Lock()
        self._current = _Window(self._kinds)
        self._queue: queue.Queue[_Window | None] | None = None
        self._worker: threading.Thread | None = None
        if background:
            self._queue = queue.Queue()
            self._worker = threading.Thread(
                target=self._work, name=f"mlobs-drift-{name}", daemon=True
            )
            self._worker.start()

    # -- input ----------------------------------------------------------------------------
    def update(self, rows: Any, predictions: Any = None) -> None:
        """Add rows (and the predictions made for them) to the current window."""
        try:
            with self._lock:
                current = self._current
                if current.rows == 0:
                    current.started = self.clock()
                added = current.add(rows, self.names)
                if predictions is not None:
                    current.predictions.extend(_flat(predictions))
                if added == 0:
                    return
                full = current.rows >= self.window
                late = (
                    self.window_seconds is not None
                    and self.clock() - current.started >= self.window_seconds
                )
                if not (full or late):
                    return
                self._current = _Window(self._kinds)
            self._hand_over(current)
        except (TypeError, ValueError) as exc:
            safety.reject("drift_rows", "drift monitor %r cannot read rows: %s", self.name, exc)
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("drift.update", exc)

    def evaluate(self) -> DatasetDrift | None:
        """Evaluate what the current window holds now, on this thread (``None`` if empty)."""
        with self._lock:
            current, self._current = self._current, _Window(self._kinds)
        if current.rows == 0:
            return None
        return self._evaluate(current)

    def close(self, timeout: float = 10.0) -> None:
        """Evaluate the windows handed over, then stop the worker (the partial window is left:
        call :meth:`evaluate` first to include it)."""
        if self._queue is not None and self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout)
            self._queue = None

    def __enter__(self) -> DriftMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.evaluate()
        self.close()

    # -- evaluation -----------------------------------------------------------------------
    def _hand_over(self, window: _Window) -> None:
        q = self._queue
        if q is None:
            self._evaluate(window)
            return
        while q.qsize() >= MAX_QUEUED_WINDOWS:  # the evaluations fall behind: drop the oldest
            try:
                q.get_nowait()
            except queue.Empty:
                break
            safety.self_metrics.inc(safety.RECORDS_DROPPED, "drift_window")
        q.put(window)

    def _work(self) -> None:
        q = self._queue
        assert q is not None
        while True:
            window = q.get()
            if window is None:
                return
            try:
                self._evaluate(window)
            except Exception as exc:  # strict mode's raise must not kill the worker silently
                safety.report("drift.window", exc)

    def _evaluate(self, window: _Window) -> DatasetDrift | None:
        try:
            report = compare(self.reference, window.data(), **self.compare_options)
            prediction = None
            if self.prediction_reference is not None and window.predictions:
                prediction = compare(
                    self.prediction_reference,
                    {PREDICTION: window.predictions},
                    **self.compare_options,
                )
            self.last, self.windows = report, self.windows + 1
            if prediction is not None:
                self.last_prediction = prediction
            self._record(report, prediction, window.rows)
            if self.on_window is not None:
                self.on_window(report)
            return report
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("drift.evaluate", exc)
            return None

    def _record(self, report: DatasetDrift, prediction: DatasetDrift | None, rows: int) -> None:
        monitor = self.name
        for column, feature in report.features.items():
            result = feature.result
            log_labeled(
                n.SCORE,
                result.effect_size,
                {"monitor": monitor, "feature": column, "test": result.test},
            )
            p_test = next(
                (t for t in (result, *feature.others.values()) if t.p_value is not None), None
            )
            if p_test is not None and p_test.p_value is not None:
                labels = {"monitor": monitor, "feature": column, "test": p_test.test}
                log_labeled(n.P_VALUE, p_test.p_value, labels)
            labels = {"monitor": monitor, "feature": column}
            log_labeled(n.DETECTED, float(feature.drifted), labels)
            log_labeled(n.MISSING_SHARE, feature.missing_current, labels)
        log_labeled(n.SHARE_DRIFTED, report.share_drifted, {"monitor": monitor})
        log_labeled(n.DATASET_DETECTED, float(report.drifted), {"monitor": monitor})
        log_labeled(n.WINDOW_ROWS, float(rows), {"monitor": monitor})
        if prediction is not None and PREDICTION in prediction.features:
            feature = prediction[PREDICTION]
            labels = {"monitor": monitor, "test": feature.result.test}
            log_labeled(n.PREDICTION_SCORE, feature.result.effect_size, labels)
            log_labeled(n.PREDICTION_DETECTED, float(feature.drifted), {"monitor": monitor})
        _record_event(
            {
                "monitor": monitor,
                "rows": rows,
                "window": self.windows,
                "result": report.to_dict(),
                "prediction": None if prediction is None else prediction.to_dict(),
            }
        )


def _flat(values: Any) -> list[Any]:
    """Predictions as a flat list (a column vector or a list of one-element rows included)."""
    array = np.asarray(values, dtype=object)
    if array.ndim > 1 and array.shape[-1] == 1:
        array = array.reshape(-1)
    return list(array.reshape(-1)) if array.ndim <= 1 else [tuple(r) for r in array]


def _record_event(attrs: dict[str, Any]) -> None:
    from mlobs import runtime

    rt = runtime.get()
    run = rt.latest_run() or rt.no_run
    rt.recorder.append(
        (
            int(Kind.EVENT),
            time.time_ns(),
            run.run_id,
            n.WINDOW_EVENT,
            None,
            run.step,
            run.epoch,
            attrs,
        )
    )
