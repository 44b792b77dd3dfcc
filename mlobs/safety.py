"""Telemetry never breaks training: mlobs' own failures are counted and logged, never raised.

Every internal failure goes through :func:`report`, which bumps a self-metric, logs at most once
per key and interval, and re-raises only under ``MLOBS_STRICT=1``. User exceptions never pass
through here: instrumentation code re-raises them untouched.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

logger = logging.getLogger("mlobs")

P = ParamSpec("P")
R = TypeVar("R")

LOG_EVERY_SECONDS = 60.0


class MlobsError(RuntimeError):
    """Raised in strict mode for a problem mlobs would otherwise only log and count."""


class SelfMetrics:
    """Counters describing mlobs itself, keyed by (metric name, label value).

    One lock guards the dict; readers take a copy under it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def inc(self, name: str, label: str = "", amount: int = 1) -> None:
        key = (name, label)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def get(self, name: str, label: str | None = None) -> int:
        with self._lock:
            if label is not None:
                return self._counts.get((name, label), 0)
            return sum(v for (n, _), v in self._counts.items() if n == name)

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


self_metrics = SelfMetrics()
"""Process-wide self-metrics. Names follow Prometheus conventions; labels are reasons or sinks."""

INTERNAL_ERRORS = "mlobs_internal_errors_total"
VALUES_REJECTED = "mlobs_values_rejected_total"
NONFINITE_VALUES = "mlobs_nonfinite_values_total"
RECORDS_DROPPED = "mlobs_records_dropped_total"
OUTSIDE_RUN = "mlobs_calls_outside_run_total"

_strict = False
_last_logged: dict[str, float] = {}
_log_lock = threading.Lock()


def set_strict(strict: bool) -> None:
    global _strict
    _strict = strict


def is_strict() -> bool:
    return _strict


def _should_log(key: str) -> bool:
    now = time.monotonic()
    with _log_lock:
        last = _last_logged.get(key)
        if last is not None and now - last < LOG_EVERY_SECONDS:
            return False
        _last_logged[key] = now
        return True


def warn(key: str, message: str, *args: object) -> None:
    """Log a warning about user input at most once per ``key`` and minute."""
    if _should_log(key):
        logger.warning(message, *args)


def report(where: str, exc: BaseException | None = None, message: str = "") -> None:
    """Count an internal failure at ``where``, log it (rate-limited), raise only in strict mode."""
    self_metrics.inc(INTERNAL_ERRORS, where)
    if _strict:
        if exc is not None:
            raise MlobsError(f"mlobs failure in {where}: {message or exc!r}") from exc
        raise MlobsError(f"mlobs failure in {where}: {message}")
    if _should_log(where):
        logger.warning(
            "mlobs: internal error in %s: %s (further ones in the next minute are only counted)",
            where,
            message or repr(exc),
            exc_info=exc is not None and logger.isEnabledFor(logging.DEBUG),
        )


def reject(reason: str, message: str, *args: object) -> None:
    """Count a value mlobs refused to record and warn (rate-limited); raise in strict mode."""
    self_metrics.inc(VALUES_REJECTED, reason)
    if _strict:
        raise MlobsError(message % args if args else message)
    warn("reject:" + reason, "mlobs: " + message + " (value dropped and counted)", *args)


def guarded(where: str, default: Any = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an mlobs entry point so that its own exceptions are reported, not raised."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                report(where, exc)
                return default  # type: ignore[no-any-return]

        return wrapper

    return decorate
