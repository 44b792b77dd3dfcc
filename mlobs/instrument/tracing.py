"""Spans for runs, epochs and steps.

Runs and epochs are OpenTelemetry SDK spans, made current in the OpenTelemetry context so that a
user's own spans (an HTTP call, a data-loader span) nest under them. A finished SDK span is
appended to the recorder by :class:`SpoolSpanProcessor`, like any other record.

Steps are far more frequent, and an SDK span costs ~45 µs on a 2-core machine against a 10 µs
budget for ``@mlobs.step``; a step therefore records the same span record directly: W3C ids from
the same generator scheme, parented to the innermost run, epoch or step span.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

from mlobs.context import current_span
from mlobs.record.types import Kind

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Span, Tracer

    from mlobs.context import SpanRef
    from mlobs.record.recorder import Recorder

RUN_ID_ATTR = "mlobs.run_id"
SPAN_KIND_ATTR = "mlobs.span"
EPOCH_ATTR = "mlobs.epoch"
RANK_ATTR = "mlobs.rank"

_tracer: Tracer | None = None  # opentelemetry.trace.Tracer: what the SDK provider hands out
_tracer_lock = threading.Lock()
_recorder_ref: list[Recorder] = []


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def new_trace_id() -> int:
    return random.getrandbits(128) or 1


def bind_recorder(recorder: Recorder) -> None:
    """Send finished SDK spans to ``recorder`` (called whenever the runtime is rebuilt)."""
    _recorder_ref[:] = [recorder]


def tracer() -> Tracer:
    """The SDK tracer, created on first use so that ``import mlobs`` stays light."""
    global _tracer
    if _tracer is None:
        with _tracer_lock:
            if _tracer is None:
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

                class SpoolSpanProcessor(SpanProcessor):
                    """Appends each finished SDK span to the recorder."""

                    def on_end(self, span: ReadableSpan) -> None:
                        append_finished_span(span)

                provider = TracerProvider(resource=Resource.create({"service.name": "mlobs"}))
                provider.add_span_processor(SpoolSpanProcessor())
                _tracer = provider.get_tracer("mlobs")
    return _tracer


class CurrentSpan:
    """An SDK span for a run or an epoch, current in both the OpenTelemetry context (so users'
    spans nest under it) and mlobs' own (so log records and steps find it) until :meth:`end`."""

    __slots__ = ("_otel_token", "_ref_token", "span")

    def __init__(self, name: str, kind: str, attributes: dict[str, Any]) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        attributes[SPAN_KIND_ATTR] = kind
        attributes[RANK_ATTR] = current_rank()
        self.span: Span = tracer().start_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        )
        self._otel_token: object = otel_context.attach(trace.set_span_in_context(self.span))
        ctx = self.span.get_span_context()
        self._ref_token: Token[SpanRef | None] = current_span.set((ctx.trace_id, ctx.span_id, kind))

    def end(self, error: str | None = None) -> None:
        """End the span (with an error status when ``error`` is given) and make its parent
        current again."""
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        current_span.reset(self._ref_token)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()
        otel_context.detach(self._otel_token)  # type: ignore[arg-type]


def current_rank() -> int:
    """This process's rank, stamped on every span as it is on log records."""
    from mlobs import runtime  # the runtime imports this module

    rt = runtime.current()
    return rt.rank.rank if rt is not None else 0


def span_attrs(
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    status: str,
    kind: str,
    rank: int,
    **extra: Any,
) -> dict[str, Any]:
    """A span record's attributes. Ids stay integers here; the spool reads them back in hex."""
    attrs: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "status": status,
        "span_kind": kind,
        "rank": rank,
    }
    if parent_id:
        attrs["parent_span_id"] = parent_id
    attrs.update(extra)
    return attrs


def append_finished_span(span: ReadableSpan) -> None:
    """Append a finished SDK span to the recorder as a :data:`Kind.SPAN` record."""
    if not _recorder_ref or span.start_time is None or span.end_time is None:
        return
    ctx = span.get_span_context()
    if ctx is None:
        return
    attributes = dict(span.attributes or {})
    run_id = str(attributes.pop(RUN_ID_ATTR, ""))
    kind = str(attributes.pop(SPAN_KIND_ATTR, "span"))
    epoch = attributes.pop(EPOCH_ATTR, None)
    rank = attributes.pop(RANK_ATTR, 0)
    ok = span.status.is_ok
    extra: dict[str, Any] = {}
    if not ok and span.status.description:
        extra["error"] = span.status.description
    if attributes:
        extra["attributes"] = attributes
    record = (
        int(Kind.SPAN),
        span.start_time,
        run_id,
        span.name,
        (span.end_time - span.start_time) / 1e9,
        None,
        epoch if isinstance(epoch, int) else None,
        span_attrs(
            ctx.trace_id,
            ctx.span_id,
            span.parent.span_id if span.parent else None,
            "ok" if ok else "error",
            kind,
            rank if isinstance(rank, int) else 0,
            **extra,
        ),
    )
    _recorder_ref[0].append(record)
