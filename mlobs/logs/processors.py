"""Structured log records as a chain of small processors over a dict.

:func:`structure` turns a stdlib ``LogRecord`` into a dict carrying the run id, epoch, step, rank,
trace and span ids; the processors in :data:`PROCESSORS` then run in order (redaction last, so
nothing a processor adds escapes it). Users may append their own processors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mlobs.context import current_run, current_span
from mlobs.logs.redact import redact_mapping, redact_text

Processor = Callable[[dict[str, Any]], dict[str, Any]]

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is kept.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def structure(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of one log record, with the mlobs context it was emitted in."""
    event: dict[str, Any] = {
        "ts_ns": int(record.created * 1e9),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    run = current_run.get()
    if run is None:
        from mlobs import runtime

        rt = runtime.current()
        run = rt.latest_run() if rt is not None else None
    if run is not None:
        event["run_id"] = run.run_id
        event["step"] = run.step
        if run.epoch is not None:
            event["epoch"] = run.epoch
    span = current_span.get()
    if span is not None:
        trace_id, span_id, name = span
        event["trace_id"] = format(trace_id, "032x")
        event["span_id"] = format(span_id, "016x")
        if name not in ("run", "epoch"):
            event["step_name"] = name
    else:
        _otel_ids(event)
    from mlobs import runtime

    rt = runtime.current()
    if rt is not None:
        event["rank"] = rt.rank.rank
    if record.exc_info and record.exc_info[0] is not None:
        event["exception"] = logging.Formatter().formatException(record.exc_info)
        event["exception_type"] = record.exc_info[0].__name__
    for key, value in vars(record).items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            event[key] = value
    return event


def _otel_ids(event: dict[str, Any]) -> None:
    """Ids of a user's own OpenTelemetry span, when one is current and the API is loaded."""
    import sys

    trace_mod = sys.modules.get("opentelemetry.trace")
    if trace_mod is None:
        return
    ctx = trace_mod.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")


def redact(event: dict[str, Any]) -> dict[str, Any]:
    """Replace secret-named fields and credential-looking text anywhere in the event."""
    message = event.get("message")
    out = redact_mapping({k: v for k, v in event.items() if k != "message"})
    if isinstance(message, str):
        out["message"] = redact_text(message)
    if "exception" in out and isinstance(out["exception"], str):
        out["exception"] = redact_text(out["exception"])
    return out


PROCESSORS: list[Processor] = [redact]
"""Applied in order to every structured log record; keep ``redact`` last."""


def process(event: dict[str, Any]) -> dict[str, Any]:
    for processor in PROCESSORS:
        event = processor(event)
    return event
