"""Span records to the OTel SDK's ``ReadableSpan``, with the ids mlobs recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.export.otlp_resource import Resources, hex_id, mlobs_scope, put
from mlobs.record.types import Kind, Record
from mlobs.spool.store import RunInfo

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

# Span record attributes (see mlobs.instrument.tracing.span_attrs) that are not plain attributes,
# and the names of those that are.
_NOT_ATTRIBUTES = frozenset(("trace_id", "span_id", "parent_span_id", "status", "attributes"))
_RENAMES = {
    "span_kind": "mlobs.span.kind",
    "rank": "mlobs.rank",
    "error_type": "error.type",
    "error": "mlobs.error",
    "attempt": "mlobs.step.attempt",
    "retried": "mlobs.step.retried",
}


class SpansBuilder:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._scope = mlobs_scope()

    def build(self, records: Sequence[Record], runs: Mapping[str, RunInfo]) -> list[ReadableSpan]:
        """The batch's spans; a record that cannot be one is reported and left out."""
        out = []
        for record in records:
            if record.kind is Kind.SPAN:
                try:
                    out.append(self._span(record, runs))
                except Exception as exc:
                    safety.report("export.otlp.span", exc)
        return out

    def _span(self, record: Record, runs: Mapping[str, RunInfo]) -> ReadableSpan:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

        sampled = TraceFlags(TraceFlags.SAMPLED)
        attrs = record.attrs
        trace_id, span_id = hex_id(attrs.get("trace_id")), hex_id(attrs.get("span_id"))
        if not trace_id or not span_id:
            raise ValueError(f"span record {record.name!r} has no valid trace and span ids")
        parent_id = hex_id(attrs.get("parent_span_id"))
        parent = SpanContext(trace_id, parent_id, False, sampled) if parent_id else None
        attributes: dict[str, Any] = {}
        for key, value in attrs.items():
            if key not in _NOT_ATTRIBUTES:
                put(attributes, _RENAMES.get(key, key), value)
        own = attrs.get("attributes")  # an SDK span's attributes
        if isinstance(own, Mapping):
            for key, value in own.items():
                put(attributes, str(key), value)
        if record.step is not None:
            attributes["mlobs.step"] = record.step
        if record.epoch is not None:
            attributes["mlobs.epoch"] = record.epoch
        status = Status(StatusCode.UNSET)
        if attrs.get("status") == "error":
            status = Status(StatusCode.ERROR, str(attrs.get("error") or "") or None)
        duration_ns = max(0, round((record.value or 0.0) * 1e9))
        return ReadableSpan(
            record.name,
            SpanContext(trace_id, span_id, False, sampled),
            parent,
            self.resources.get(record.run_id, runs),
            attributes,
            status=status,
            start_time=record.ts_ns,
            end_time=record.ts_ns + duration_ns,
            instrumentation_scope=self._scope,
        )
