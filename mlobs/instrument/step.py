"""``mlobs.step``: pipeline steps with duration, outcome, nesting and optional retries.

Each execution of a step is one span record (see :mod:`mlobs.instrument.tracing` for why steps
do not go through the SDK tracer). Sinks and the CLI derive step counts, failure counts and
duration distributions from these records.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar, overload

from mlobs import runtime, safety
from mlobs.context import SpanRef, current_run, current_span
from mlobs.instrument.tracing import current_rank, new_span_id, new_trace_id, span_attrs
from mlobs.record.types import Kind

F = TypeVar("F", bound=Callable[..., Any])

_SPAN = int(Kind.SPAN)


def _record(
    name: str,
    ref: SpanRef,
    parent: SpanRef | None,
    start_ns: int,
    end_ns: int,
    exc: BaseException | None,
    attempt: int,
    will_retry: bool,
) -> None:
    try:
        run = current_run.get()
        attrs = span_attrs(
            ref[0],
            ref[1],
            parent[1] if parent is not None else None,
            "ok" if exc is None else "error",
            "step",
            current_rank(),
        )
        if exc is not None:
            attrs["error_type"] = type(exc).__name__
            attrs["error"] = str(exc)[:500]
        if attempt > 1 or will_retry:
            attrs["attempt"] = attempt
            attrs["retried"] = will_retry
        if run is None:
            append = runtime.get().recorder.append
            append((_SPAN, start_ns, "", name, (end_ns - start_ns) / 1e9, None, None, attrs))
        else:
            run.append(
                (
                    _SPAN,
                    start_ns,
                    run.run_id,
                    name,
                    (end_ns - start_ns) / 1e9,
                    run.step,
                    run.epoch,
                    attrs,
                )
            )
            run.last_progress_ns = end_ns
    except safety.MlobsError:
        raise
    except Exception as report_exc:
        safety.report("step.record", report_exc)


class Step:
    """Decorator and context manager for a pipeline step. Create it with :func:`mlobs.step`."""

    def __init__(
        self,
        name: str | None = None,
        *,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        retry_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.retries = max(0, int(retries))
        self.retry_on = retry_on
        self.retry_delay = retry_delay
        self._entered: list[tuple[SpanRef, SpanRef | None, Token[SpanRef | None], int]] = []

    def __call__(self, fn: F) -> F:
        name = self.name or fn.__name__
        retries, retry_on, retry_delay = self.retries, self.retry_on, self.retry_delay

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            attempt = 0
            while True:
                attempt += 1
                parent = current_span.get()
                ref = (parent[0] if parent is not None else new_trace_id(), new_span_id(), name)
                token = current_span.set(ref)
                start = time.time_ns()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    end = time.time_ns()
                    current_span.reset(token)
                    again = attempt <= retries and isinstance(exc, retry_on)
                    _record(name, ref, parent, start, end, exc, attempt, again)
                    if not again:
                        raise
                    if retry_delay:
                        time.sleep(retry_delay * 2 ** (attempt - 1))
                    continue
                end = time.time_ns()
                current_span.reset(token)
                _record(name, ref, parent, start, end, None, attempt, False)
                return result

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> Step:
        parent = current_span.get()
        name = self.name or "step"
        ref = (parent[0] if parent is not None else new_trace_id(), new_span_id(), name)
        self._entered.append((ref, parent, current_span.set(ref), time.time_ns()))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = time.time_ns()
        if not self._entered:
            return
        ref, parent, token, start = self._entered.pop()
        try:
            current_span.reset(token)
        except ValueError:  # exited in another context than entered: keep the record anyway
            pass
        _record(ref[2], ref, parent, start, end, exc, 1, False)


@overload
def step(name: F) -> F: ...
@overload
def step(
    name: str | None = None,
    *,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    retry_delay: float = 0.0,
) -> Step: ...
def step(name: Any = None, **kwargs: Any) -> Any:
    """A pipeline step: ``@mlobs.step``, ``@mlobs.step("x", retries=2)``, ``with mlobs.step("x")``.

    Args:
        name: the step's name (the function's name by default).
        retries: (decorator only) run the function again up to this many times when it raises one
            of ``retry_on``; each failed attempt is recorded, the last exception propagates.
        retry_on: exception types that are retried.
        retry_delay: seconds before the first retry, doubling after each failure.
    """
    if callable(name):
        return Step(name.__name__)(name)
    return Step(name, **kwargs)
