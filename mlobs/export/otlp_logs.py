"""Log records and lifecycle events to the OTel SDK's ``ReadableLogRecord``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.export.otlp_resource import Resources, any_value, hex_id, mlobs_scope
from mlobs.record.types import Kind, Record
from mlobs.spool.store import HEARTBEAT, RunInfo

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

# Log record attributes (see mlobs.logs.processors.structure) that are fields of an OTel record,
# and the names of those that stay attributes.
_FIELDS = frozenset(("message", "level", "trace_id", "span_id"))
_RENAMES = {
    "rank": "mlobs.rank",
    "step_name": "mlobs.step.name",
    "exception": "exception.stacktrace",
    "exception_type": "exception.type",
}
_INFO, _ERROR = 9, 17


def severity_number(levelno: float | None) -> int:
    """A stdlib level number as an OTel severity number: DEBUG 5, INFO 9, WARNING 13, ERROR 17,
    CRITICAL 21, levels in between on the steps in between."""
    if levelno is None or levelno != levelno:
        return 0
    level = int(levelno)
    if level < 10:
        return 1 if level > 0 else 0
    if level >= 50:
        return 21
    return 5 + 4 * (level // 10 - 1) + min(3, level % 10)


class LogsBuilder:
    """Log records keep the logger's name as their instrumentation scope (as the SDK's logging
    handler does); events (run start and end, ...) are log records of scope ``mlobs`` with an
    ``event_name`` of ``mlobs.<event>``. Heartbeats are a metric, not logs."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._scope = mlobs_scope()
        self._scopes: dict[str, InstrumentationScope] = {}

    def build(
        self, records: Sequence[Record], runs: Mapping[str, RunInfo]
    ) -> list[ReadableLogRecord]:
        out = []
        for record in records:
            kind = record.kind
            if kind is Kind.LOG or (kind is Kind.EVENT and record.name != HEARTBEAT):
                try:
                    out.append(self._log(record, runs))
                except Exception as exc:
                    safety.report("export.otlp.log", exc)
        return out

    def _log(self, record: Record, runs: Mapping[str, RunInfo]) -> ReadableLogRecord:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import TraceFlags

        attrs = record.attrs
        attributes: dict[str, Any] = {}
        trace_id = span_id = 0
        if record.kind is Kind.LOG:
            for key, value in attrs.items():
                if key not in _FIELDS and value is not None:
                    attributes[_RENAMES.get(key, key)] = any_value(value)
            body: Any = any_value(attrs.get("message", ""))
            severity = severity_number(record.value)
            level = attrs.get("level")
            severity_text = None if level is None else str(level)
            event_name = None
            scope = self._scopes.get(record.name)
            if scope is None:
                scope = self._scopes[record.name] = InstrumentationScope(record.name or "root")
            trace_id = hex_id(attrs.get("trace_id", 0))
            span_id = hex_id(attrs.get("span_id", 0)) if trace_id else 0
        else:
            for key, value in attrs.items():
                if value is not None:
                    attributes[key] = any_value(value)
            if record.value is not None:
                attributes["mlobs.value"] = record.value
            body = record.name
            failed = attrs.get("status") == "failed"
            severity = _ERROR if failed else _INFO
            severity_text = "ERROR" if failed else "INFO"
            event_name = f"mlobs.{record.name}"
            scope = self._scope
        if record.step is not None:
            attributes["mlobs.step"] = record.step
        if record.epoch is not None:
            attributes["mlobs.epoch"] = record.epoch
        log = LogRecord(
            timestamp=record.ts_ns,
            observed_timestamp=record.ts_ns,  # the same on every attempt: a retry is identical
            severity_text=severity_text,
            severity_number=SeverityNumber(severity),
            body=body,
            attributes=attributes,
            event_name=event_name,
        )
        # the ids of the span the record was emitted in, not of the shipper's own context
        log.trace_id, log.span_id = trace_id, span_id
        log.trace_flags = TraceFlags(TraceFlags.SAMPLED if trace_id else TraceFlags.DEFAULT)
        return ReadableLogRecord(log, self.resources.get(record.run_id, runs), scope)
