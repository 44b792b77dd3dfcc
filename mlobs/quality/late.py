"""Ground truth that arrives after the prediction: join by prediction id, evaluate per window.

A served model predicts now and learns the true outcome minutes or days later (a click, a
chargeback, a delivery time). :class:`LateLabels` keeps predictions and labels pending until both
halves of a prediction id are there, and evaluates each window of joined pairs with
:func:`classification_quality` or :func:`regression_quality`, recording it with
:func:`log_quality`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Literal

from mlobs import safety
from mlobs.quality.classification import ClassificationQuality, Label, classification_quality
from mlobs.quality.log import log_quality
from mlobs.quality.regression import RegressionQuality, regression_quality

Report = ClassificationQuality | RegressionQuality

DROP_REASON = "quality_unjoined"
"""The ``reason`` of ``mlobs_records_dropped_total`` for predictions and labels never joined."""

_NO_SCORE = object()


class LateLabels:
    """Joins predictions and late ground truth by prediction id and evaluates them per window.

    Args:
        task: ``"classification"`` or ``"regression"``.
        window: joined pairs per evaluation; ``None`` to evaluate by time only.
        window_seconds: also evaluate once this many seconds have passed since the window's first
            join (checked on every call).
        max_pending: predictions and labels waiting for their other half, together; past it the
            oldest are dropped and counted.
        ttl_seconds: a pending prediction or label older than this is dropped and counted.
        labels: labels added to every point recorded, such as ``{"model_version": "3"}``.
        clock: monotonic seconds; tests pass a fake one.
        classes: classification only: the classes and their order (see ``labels`` of
            :func:`classification_quality`).
        prefix: start of every metric name.

    Each evaluation is recorded by :func:`log_quality` with the window's number (from 0) as its
    step: a label would make a new series per window. Dropped entries count in
    ``mlobs_records_dropped_total{reason="quality_unjoined"}``. Safe to call from several threads;
    nothing here raises (unless ``MLOBS_STRICT=1``).
    """

    def __init__(
        self,
        task: Literal["classification", "regression"] = "classification",
        *,
        window: int | None = 1000,
        window_seconds: float | None = None,
        max_pending: int = 100_000,
        ttl_seconds: float = 86_400,
        labels: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        classes: Iterable[Label] | None = None,
        prefix: str = "quality",
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', not {task!r}")
        if window is None and window_seconds is None:
            raise ValueError("give window, window_seconds or both")
        if window is not None and window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        if window_seconds is not None and window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, not {window_seconds}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self.task = task
        self.window = window
        self.window_seconds = window_seconds
        self.max_pending = max_pending
        self.ttl_seconds = ttl_seconds
        self.labels = dict(labels or {})
        self.classes = None if classes is None else tuple(classes)
        self.prefix = prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        # id -> (sequence number, arrival time, value): insertion order is arrival order
        self._predictions: OrderedDict[Hashable, tuple[int, float, Any]] = OrderedDict()
        self._truths: OrderedDict[Hashable, tuple[int, float, Any]] = OrderedDict()
        self._joined: list[tuple[Any, Any, Any]] = []  # (y_true, y_pred, y_score)
        self._window_started: float | None = None
        self._windows = 0
        self._dropped = 0

    def predicted(self, prediction_id: Hashable, y_pred: Any, y_score: Any = None) -> Report | None:
        """A prediction was made. Returns the report if this call closed a window."""
        return self._arrive(
            prediction_id, (y_pred, _NO_SCORE if y_score is None else y_score), False
        )

    def observed(self, prediction_id: Hashable, y_true: Any) -> Report | None:
        """The ground truth of a prediction arrived (before or after the prediction itself).
        Returns the report if this call closed a window."""
        return self._arrive(prediction_id, y_true, True)

    def flush(self) -> Report | None:
        """Evaluate and record the pairs joined so far; ``None`` when there are none."""
        try:
            with self._lock:
                self._expire(self._clock())
                batch = self._take() if self._joined else None
            return None if batch is None else self._evaluate(*batch)
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("late_labels", exc)
            return None

    @property
    def pending_predictions(self) -> int:
        """Predictions waiting for their label."""
        with self._lock:
            return len(self._predictions)

    @property
    def pending_labels(self) -> int:
        """Labels waiting for their prediction."""
        with self._lock:
            return len(self._truths)

    @property
    def joined(self) -> int:
        """Pairs joined in the window in progress."""
        with self._lock:
            return len(self._joined)

    @property
    def dropped(self) -> int:
        """Predictions and labels dropped unjoined (too old, or past ``max_pending``)."""
        with self._lock:
            return self._dropped

    @property
    def windows(self) -> int:
        """Windows evaluated so far."""
        with self._lock:
            return self._windows

    def _arrive(self, prediction_id: Hashable, value: Any, is_label: bool) -> Report | None:
        try:
            with self._lock:
                now = self._clock()
                self._expire(now)
                if is_label:
                    mine, other = self._truths, self._predictions
                else:
                    mine, other = self._predictions, self._truths
                match = other.pop(prediction_id, None)
                if match is None:
                    mine.pop(prediction_id, None)  # a repeated id: the latest value wins
                    self._seq += 1
                    mine[prediction_id] = (self._seq, now, value)
                    self._bound()
                else:
                    truth, (y_pred, y_score) = (value, match[2]) if is_label else (match[2], value)
                    if not self._joined:
                        self._window_started = now
                    self._joined.append((truth, y_pred, y_score))
                batch = self._take() if self._due(now) else None
            return None if batch is None else self._evaluate(*batch)
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("late_labels", exc)
            return None

    def _expire(self, now: float) -> None:
        """Drop pending entries older than the ttl (under the lock)."""
        dropped = 0
        for pending in (self._predictions, self._truths):
            while pending:
                _, (_, arrived, _) = next(iter(pending.items()))
                if now - arrived <= self.ttl_seconds:
                    break
                pending.popitem(last=False)
                dropped += 1
        self._count_dropped(dropped)

    def _bound(self) -> None:
        """Drop the oldest pending entries past ``max_pending`` (under the lock)."""
        dropped = 0
        while len(self._predictions) + len(self._truths) > self.max_pending:
            oldest_prediction = next(iter(self._predictions.values()), None)
            oldest_truth = next(iter(self._truths.values()), None)
            if oldest_truth is None or (
                oldest_prediction is not None and oldest_prediction[0] < oldest_truth[0]
            ):
                self._predictions.popitem(last=False)
            else:
                self._truths.popitem(last=False)
            dropped += 1
        self._count_dropped(dropped)

    def _count_dropped(self, dropped: int) -> None:
        if dropped:
            self._dropped += dropped
            safety.self_metrics.inc(safety.RECORDS_DROPPED, DROP_REASON, dropped)

    def _due(self, now: float) -> bool:
        if not self._joined:
            return False
        if self.window is not None and len(self._joined) >= self.window:
            return True
        started = self._window_started
        return (
            self.window_seconds is not None
            and started is not None
            and now - started >= self.window_seconds
        )

    def _take(self) -> tuple[int, list[tuple[Any, Any, Any]]]:
        """The joined pairs and the window's number; starts the next window (under the lock)."""
        batch, self._joined = self._joined, []
        self._window_started = None
        index = self._windows
        self._windows += 1
        return index, batch

    def _evaluate(self, index: int, batch: list[tuple[Any, Any, Any]]) -> Report:
        """Compute and record one window's report (outside the lock: no I/O under it)."""
        y_true = [row[0] for row in batch]
        y_pred = [row[1] for row in batch]
        report: Report
        if self.task == "regression":
            report = regression_quality(y_true, y_pred)
        else:
            scores = [row[2] for row in batch]
            missing = sum(1 for s in scores if s is _NO_SCORE)
            report = classification_quality(
                y_true,
                y_pred,
                y_score=None if missing else scores,
                labels=self.classes,
            )
            if 0 < missing < len(scores):
                note = f"{missing} of {len(scores)} predictions had no score: no ROC-AUC or ECE"
                report = dataclasses.replace(report, reasons=[*report.reasons, note])
        log_quality(report, prefix=self.prefix, step=index, labels=self.labels or None)
        return report
