"""The OTLP sink: metrics, logs and spans through the OpenTelemetry OTLP exporters.

Records are not replayed through an SDK ``MeterProvider`` or ``LoggerProvider``: a provider would
stamp each point with its collection time and aggregate it away. The spool already holds finished
points, log records and spans, so each batch is turned into the SDK's export data types
(``MetricsData``, ``ReadableSpan``, ``ReadableLogRecord``) and handed to ``OTLPMetricExporter``,
``OTLPSpanExporter`` and ``OTLPLogExporter`` (``http/protobuf`` or ``grpc``) directly.

How records map:

- Every run becomes one ``Resource``: ``service.name`` (``mlobs`` unless ``OTEL_SERVICE_NAME`` or
  ``OTEL_RESOURCE_ATTRIBUTES`` say otherwise), ``service.instance.id`` and ``mlobs.run.id`` (the
  run id), ``mlobs.run.name``, ``mlobs.experiment``, ``mlobs.model.name``/``version``,
  ``mlobs.dataset.name``/``version``, ``host.name``, ``process.pid``, ``process.command``,
  ``process.runtime.version``, ``vcs.ref.head.revision`` (git commit), ``mlobs.world_size``,
  ``mlobs.local_rank``, and the run's tags as ``mlobs.tag.<name>``.
- Gauge values (``mlobs.log``, epoch durations, system metrics) are gauge points with the time
  they were recorded, under the user's metric name. Their attributes are the record's own
  (``split``, ``scope``) and ``rank``. The step and the epoch are not attributes (a new series per
  step would be unbounded cardinality in Prometheus): they are the gauges ``mlobs.run.epoch``, with
  a point at each change, and ``mlobs.run.step``, with a point at a change at most once a second
  (progress and steps per second, without a second point for every value). Names ending in
  ``_seconds`` get the unit ``s`` and ``_bytes`` the unit ``By``. (Prometheus keeps
  milliseconds: two values of one series logged within one millisecond collide there.)
- Counter increments become a cumulative monotonic sum, histogram observations a cumulative
  explicit-bucket histogram (one point per series and batch, at its last observation); their
  running totals move only when the backend acknowledged them.
- Heartbeats become the gauge ``mlobs.run.last_progress`` (seconds since the epoch), so a stalled
  run can be alerted on; other lifecycle events (run start and end, dropped records) become log
  records with an ``event_name`` of ``mlobs.<event>``.
- Log records keep their severity, message (body), trace and span ids and ``extra=`` fields;
  span records keep their W3C ids, parent, timing and status.

Delivery: an export call returns ``FAILURE`` (the shipper offers the batch again later) when any
signal's exporter fails, after the exporter's own retries, within ``DEFAULT_TIMEOUT_S`` or
``OTEL_EXPORTER_OTLP_[SIGNAL_]TIMEOUT``. A batch offered again re-sends the same points with the
same timestamps; Prometheus (behind vmagent or a collector) keeps a sample it already holds once,
so metrics arrive once. A signal that was acknowledged is not sent again when another signal of the
same batch failed. A request refused as malformed (HTTP 400, gRPC ``INVALID_ARGUMENT``: the OTLP
specification forbids retrying it) is counted in ``mlobs_export_writes_rejected_total`` and passed
over rather than holding back everything behind it.

Configuration: ``otlp_endpoint`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` and ``otlp_protocol`` /
``OTEL_EXPORTER_OTLP_PROTOCOL``, and the per-signal ``OTEL_EXPORTER_OTLP_{METRICS,LOGS,TRACES}_*``
variables (see :func:`signal_endpoints`); headers, compression, certificates and timeouts come
from the standard variables, which the OTel exporters read themselves.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.config import Config
from mlobs.export.base import WRITES_REJECTED, Batch, Exporter, ExportResult
from mlobs.export.otlp_logs import LogsBuilder
from mlobs.export.otlp_metrics import MetricsBuilder
from mlobs.export.otlp_resource import Resources
from mlobs.export.otlp_spans import SpansBuilder
from mlobs.record.types import Record
from mlobs.spool.store import RunInfo

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter

METRICS, TRACES, LOGS = "metrics", "traces", "logs"
SIGNALS = (METRICS, TRACES, LOGS)
DEFAULT_TIMEOUT_S = 5.0
"""Each export call, the exporter's own retries included, ends within about this long (unless
``OTEL_EXPORTER_OTLP_TIMEOUT`` or a per-signal timeout variable says otherwise)."""


# -- the exporters' own log records -------------------------------------------------------------

_in_export = threading.local()


class _ExportLogFilter(logging.Filter):
    """The OTel exporters log each retry and failure. Emitted while mlobs exports, such records
    would go into the spool and out to the very backend that is failing; they become one
    rate-limited mlobs warning instead (mlobs' own logger is never captured). A failure's record
    also says whether the receiver refused the request as malformed (see :func:`_refused`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(_in_export, "active", False):
            return True
        if record.levelno >= logging.ERROR:
            if _refused(record.args):
                _in_export.refused = True
            safety.warn(f"otlp:{record.name}", "mlobs: otlp sink: %s", record.getMessage())
        return False


def _refused(args: object) -> bool:
    """Whether a failure's log arguments carry the status of a malformed request: HTTP 400 or
    gRPC ``INVALID_ARGUMENT``, which the OTLP specification says must not be retried. Anything
    else (timeouts, refused connections, 5xx, authentication) is retried."""
    for arg in args if isinstance(args, tuple) else ():
        if type(arg) is int and arg == 400:
            return True
        if type(arg).__module__.startswith("grpc") and getattr(arg, "name", "") == (
            "INVALID_ARGUMENT"
        ):
            return True
    return False


_LOG_FILTER = _ExportLogFilter()
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.common._internal",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)


def _quiet_loggers(exporters: Sequence[object]) -> None:
    for name in {*_EXPORTER_LOGGERS, *(type(e).__module__ for e in exporters)}:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            # first: the log exporter's logger has a filter that drops repeated messages
            logger.filters.insert(0, _LOG_FILTER)


# -- the sink -----------------------------------------------------------------------------------


class OtlpExporter(Exporter):
    """Ships metrics, spans and logs to one exporter each; a signal without one is not sent.

    Args:
        metrics, traces, logs: the SDK's exporters (the OTLP ones, from :func:`from_config`).
        base_resource: attributes every run's resource starts from (see
            :class:`~mlobs.export.otlp_resource.Resources`).
        rebuild: makes new exporters (``signal -> exporter``) for a forked child.
    """

    name = "otlp"

    def __init__(
        self,
        *,
        metrics: MetricExporter | None = None,
        traces: SpanExporter | None = None,
        logs: LogRecordExporter | None = None,
        base_resource: Resource | None = None,
        rebuild: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.metrics, self.traces, self.logs = metrics, traces, logs
        self._rebuild = rebuild
        resources = Resources(base_resource)
        self._metrics = MetricsBuilder(resources)
        self._spans = SpansBuilder(resources)
        self._logs = LogsBuilder(resources)
        self._acked: dict[tuple[str, str], int] = {}
        """(spool file, signal) -> last seq of a batch that signal delivered while another
        signal of the batch failed: not sent again when the batch is offered again."""
        self._lock = threading.Lock()
        _quiet_loggers([e for e in (metrics, traces, logs) if e is not None])
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(me))

    def after_fork_in_child(self) -> None:
        """A forked child ships its own spool file through this exporter: it must not share the
        parent's connections (``rebuild`` makes new exporters), nor a lock the parent's shipper
        may have held at the fork."""
        self._lock = threading.Lock()
        self._acked.clear()
        if self._rebuild is not None:
            built = self._rebuild()
            self.metrics, self.traces, self.logs = (built.get(s) for s in SIGNALS)

    def export(self, batch: Batch) -> ExportResult:
        with self._lock:
            _in_export.active = True
            try:
                return self._export(batch)
            finally:
                _in_export.active = False

    def _export(self, batch: Batch) -> ExportResult:
        records = batch.records
        if not records:
            return ExportResult.SUCCESS
        last_seq = records[-1].seq
        for signal in SIGNALS:
            done = self._acked.get((batch.source, signal), 0)
            todo = records if done < records[0].seq else [r for r in records if r.seq > done]
            # stop at the first failure: the whole batch comes again, and each call may
            # already have waited for its timeout
            if not self._send(signal, todo, batch.runs):
                return ExportResult.FAILURE
            self._acked[(batch.source, signal)] = last_seq
        for signal in SIGNALS:
            del self._acked[(batch.source, signal)]
        return ExportResult.SUCCESS

    def _send(self, signal: str, records: Sequence[Record], runs: Mapping[str, RunInfo]) -> bool:
        """Convert and send one signal's records; ``True`` when acknowledged or nothing to send."""
        if signal == METRICS:
            if self.metrics is None:
                return True
            data, pending = self._metrics.build(records, runs)
            ok = data is None or _call(signal, self.metrics.export, data)
            if ok:
                self._metrics.commit(pending)
            return ok
        if signal == TRACES:
            if self.traces is None:
                return True
            spans = self._spans.build(records, runs)
            return not spans or _call(signal, self.traces.export, spans)
        if self.logs is None:
            return True
        logs = self._logs.build(records, runs)
        return not logs or _call(signal, self.logs.export, logs)

    def force_flush(self, timeout: float = 10.0) -> bool:
        return True  # nothing is buffered here: each export call waits for its answer

    def shutdown(self, timeout: float = 10.0) -> None:
        for exporter in (self.metrics, self.traces, self.logs):
            if exporter is not None:
                try:
                    exporter.shutdown()
                except Exception as exc:
                    safety.report("export.otlp.shutdown", exc)


def _after_fork(ref: weakref.ref[OtlpExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        try:
            exporter.after_fork_in_child()
        except Exception as exc:
            safety.report("export.otlp.fork", exc)


def _call(signal: str, export: Any, data: Any) -> bool:
    """One exporter call (the OTel exporters retry inside it until their timeout); ``True`` when
    acknowledged, or when the receiver refused the request as malformed."""
    _in_export.refused = False
    try:
        result = export(data)
    except Exception as exc:
        safety.report("export.otlp", exc)
        return False
    if getattr(result, "name", "") == "SUCCESS":
        return True
    if _in_export.refused:
        safety.self_metrics.inc(WRITES_REJECTED, OtlpExporter.name)
        safety.warn(
            f"otlp:refused:{signal}",
            "mlobs: otlp sink: the %s receiver refused a request as malformed; its records are "
            "passed over (counted in %s)",
            signal,
            WRITES_REJECTED,
        )
        return True
    return False


# -- configuration ------------------------------------------------------------------------------


def _signal_env(signal: str, what: str) -> str | None:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{what}") or None


def signal_endpoints(config: Config) -> dict[str, tuple[str, str]]:
    """``signal -> (protocol, endpoint)`` for each signal whose endpoint is known.

    A per-signal variable (``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``, ...) is used as it is, as the
    specification says; the general endpoint (``otlp_endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``)
    gets ``/v1/metrics``, ``/v1/logs`` or ``/v1/traces`` appended for http/protobuf. A per-signal
    ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`` applies unless ``otlp_protocol`` was an argument.
    """
    out: dict[str, tuple[str, str]] = {}
    from_argument = config.sources.get("otlp_protocol") == "argument"
    for signal in SIGNALS:
        protocol = config.otlp_protocol
        own = _signal_env(signal, "PROTOCOL")
        if own and not from_argument:
            if own.strip().lower() in ("http/protobuf", "grpc"):
                protocol = own.strip().lower()
            else:
                safety.warn(
                    f"otlp-protocol-{signal}",
                    "mlobs: ignoring OTEL_EXPORTER_OTLP_%s_PROTOCOL=%r (mlobs speaks "
                    "http/protobuf and grpc); using %s",
                    signal.upper(),
                    own,
                    protocol,
                )
        endpoint = _signal_env(signal, "ENDPOINT")
        if endpoint is None and config.otlp_endpoint:
            endpoint = config.otlp_endpoint
            if protocol == "http/protobuf":
                endpoint = f"{endpoint.rstrip('/')}/v1/{signal}"
        if endpoint:
            out[signal] = (protocol, endpoint)
    return out


def _timeout(signal: str) -> float | None:
    """``None`` lets the exporter read ``OTEL_EXPORTER_OTLP_[SIGNAL_]TIMEOUT`` itself."""
    if _signal_env(signal, "TIMEOUT") or os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT"):
        return None
    return DEFAULT_TIMEOUT_S


def _build(signal: str, protocol: str, endpoint: str) -> Any:
    """The OTel exporter for one signal; headers, compression and certificates come from the
    standard variables, which the exporter reads itself."""
    timeout = _timeout(signal)
    if protocol == "grpc":
        if signal == METRICS:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetrics,
            )

            return GrpcMetrics(endpoint=endpoint, timeout=timeout)
        if signal == TRACES:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpans,
            )

            return GrpcSpans(endpoint=endpoint, timeout=timeout)
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogs,
        )

        return GrpcLogs(endpoint=endpoint, timeout=timeout)
    if signal == METRICS:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, timeout=timeout)
    if signal == TRACES:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=endpoint, timeout=timeout)


def from_config(config: Config) -> OtlpExporter:
    """The OTLP sink, with an exporter for each signal whose endpoint is configured."""
    endpoints = signal_endpoints(config)

    def build() -> dict[str, Any]:
        return {signal: _build(signal, *where) for signal, where in endpoints.items()}

    built = build()
    return OtlpExporter(
        metrics=built.get(METRICS), traces=built.get(TRACES), logs=built.get(LOGS), rebuild=build
    )
