"""The Prometheus sink: an adapter over a ``CollectorRegistry``, optionally served on ``/metrics``.

``export(batch)`` folds records into per-run state; a custom collector renders that state at
scrape time. The same state feeds the Pushgateway sink (:mod:`mlobs.export.pushgateway`).

Records become series as follows (names through :mod:`mlobs.export.prom_names`; every series of a
run carries the labels ``run_id``, ``run_name``, ``experiment`` and ``rank``; never the step):

=========================================  =====================================================
record                                     series
=========================================  =====================================================
gauge point (``mlobs.log(loss=...)``)      gauge ``mlobs_loss``: the last value; point attributes
                                           (``split``, ``scope``, ...) become labels
counter point                              counter ``mlobs_<name>_total``: increments summed
histogram point                            histogram ``mlobs_<name>``
any metric point's step and epoch          ``mlobs_run_step``, ``mlobs_run_epoch``
step span (``@mlobs.step``)                histogram ``mlobs_step_duration_seconds{step}``,
                                           ``mlobs_step_executions_total{step, status}``
log record                                 ``mlobs_log_records_total{level}``
run start / end                            ``mlobs_run_info{model_name, dataset_name, ...} 1``,
                                           ``mlobs_run_status{status}`` (1 for the current one),
                                           ``mlobs_run_start_time_seconds``,
                                           ``mlobs_run_end_time_seconds``
heartbeat                                  ``mlobs_run_last_progress_timestamp_seconds``
=========================================  =====================================================

Epoch duration and throughput are ordinary gauges (``mlobs_epoch_duration_seconds``,
``mlobs_epoch_samples_per_second``). Histograms use the bounds in
:data:`mlobs.export.prom_state.BUCKETS` (1 ms to 5 min). Outside any run, points carry no run
labels.

The ``/metrics`` endpoint adds mlobs' self-metrics, read at scrape time: the counters of
:data:`mlobs.safety.self_metrics` (``mlobs_internal_errors_total{where}``,
``mlobs_records_dropped_total{reason}``, ``mlobs_records_exported_total{sink}``,
``mlobs_export_failures_total{sink}``, ...) and, per sink, ``mlobs_spool_backlog_records``,
``mlobs_spool_oldest_unshipped_age_seconds``, ``mlobs_export_circuit_open`` and
``mlobs_export_consecutive_failures``.

State (:mod:`mlobs.export.prom_state`) is kept for active runs and the last
``keep_finished_runs`` finished ones. A batch offered again is not counted twice (the last applied
``seq`` of each spool file is kept), but counters and histograms start from zero in a new
exporter: after a restart or ``mlobs replay`` they count what was shipped from then on. A forked
child's records are not served: the server belongs to the parent.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from mlobs import safety
from mlobs.config import Config
from mlobs.export import prom_names as pn
from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.export.prom_state import PromState, StateCollector
from mlobs.export.shipper import CIRCUIT_OPENED, EXPORT_FAILURES, EXPORTED, SinkStatus

__all__ = ["PromState", "PrometheusExporter", "SelfMetricsCollector", "StateCollector"]

logger = logging.getLogger("mlobs")

# -- self-metrics ---------------------------------------------------------------------------

_ZERO_LABELS = {safety.RECORDS_DROPPED: ("disk_budget", "buffer_full")}
_PER_SINK = (EXPORTED, EXPORT_FAILURES, CIRCUIT_OPENED)


class SelfMetricsCollector:
    """mlobs' own health, read at scrape time: counters from :data:`mlobs.safety.self_metrics`
    and each sink's shipping state from the running pipeline."""

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        try:
            return self._collect()
        except Exception as exc:  # a scrape is not the user's program: never raise from here
            safety.self_metrics.inc(safety.INTERNAL_ERRORS, "prometheus.collect")
            safety.warn("prometheus.collect", "mlobs: self-metrics scrape failed: %r", exc)
            return ()

    def _collect(self) -> list[Metric]:
        statuses = _sink_statuses()
        sinks = [s.sink for s in statuses]
        counts: dict[str, dict[str, float]] = {name: {} for name in pn.SELF_COUNTERS}
        for name in _PER_SINK:
            counts[name].update(dict.fromkeys(sinks, 0.0))
        for name, reasons in _ZERO_LABELS.items():
            counts[name].update(dict.fromkeys(reasons, 0.0))
        for (name, label), count in safety.self_metrics.snapshot().items():
            by_name = counts.setdefault(name, {})
            by_name[label] = by_name.get(label, 0.0) + count
        out = []
        for name, by_label in counts.items():
            known = pn.SELF_COUNTERS.get(name)
            if known is None:
                if not (name.startswith(pn.PREFIX) and name.endswith("_total")):
                    continue
                if pn.snake(name) != name:
                    continue
                per_sink = name.startswith("mlobs_export_")
                known = ("sink" if per_sink else "key", "mlobs self-metric.")
            label, doc = known
            metric = Metric(name[: -len("_total")], doc, "counter")
            for value_label, value in sorted(by_label.items()):
                metric.add_sample(name, {label: value_label} if value_label else {}, value)
            out.append(metric)
        out.extend(_sink_gauges(statuses))
        return out


def _sink_statuses() -> list[SinkStatus]:
    from mlobs import runtime  # the runtime builds this module's exporter: import when used

    rt = runtime.current()
    return rt.sink_status() if rt is not None else []


def _sink_gauges(statuses: list[SinkStatus]) -> list[Metric]:
    backlog = Metric(pn.SPOOL_BACKLOG, "Records in the spool a sink has not shipped yet.", "gauge")
    age = Metric(
        pn.SPOOL_OLDEST_AGE,
        "Age of the oldest record a sink has not shipped yet, seconds; 0 when caught up.",
        "gauge",
    )
    circuit = Metric(pn.CIRCUIT_OPEN, "1 while a sink's circuit breaker is open.", "gauge")
    in_row = Metric(pn.FAILURES_IN_ROW, "Failed exports in a row per sink.", "gauge")
    now_ns = time.time_ns()
    for status in statuses:
        labels = {"sink": status.sink}
        backlog.add_sample(pn.SPOOL_BACKLOG, labels, float(status.backlog))
        oldest = status.oldest_unshipped_ns
        seconds = 0.0 if oldest is None else max(0.0, (now_ns - oldest) / 1e9)
        age.add_sample(pn.SPOOL_OLDEST_AGE, labels, seconds)
        circuit.add_sample(pn.CIRCUIT_OPEN, labels, float(status.circuit_open))
        in_row.add_sample(pn.FAILURES_IN_ROW, labels, float(status.failures_in_row))
    return [backlog, age, circuit, in_row]


# -- the exporter ---------------------------------------------------------------------------


class PrometheusExporter(Exporter):
    """Keeps the latest values of each run in a registry, served on ``/metrics`` when a port is
    given. Pass a registry of your own (even ``prometheus_client.REGISTRY``) to serve it yourself.

    Args:
        registry: where the collectors are registered; a fresh one by default.
        port: serve ``registry`` on this port (0: a free one, see :attr:`port`); ``None``: no
            server.
        addr: the address the server binds.
        certfile: TLS certificate (with ``keyfile``): the server speaks https only.
        keyfile: TLS private key.
        self_metrics: also expose mlobs' own health (spool backlog, exports, errors).
        keep_finished_runs: finished runs whose series stay exposed.
        name: the sink's cursor name.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        port: int | None = None,
        addr: str = "127.0.0.1",
        certfile: str | None = None,
        keyfile: str | None = None,
        self_metrics: bool = True,
        keep_finished_runs: int = 50,
        name: str = "prometheus",
    ) -> None:
        self.name = name
        self.registry = registry if registry is not None else CollectorRegistry()
        self.state = PromState(keep_finished_runs)
        self._collectors: list[Any] = [StateCollector(self.state)]
        if self_metrics:
            self._collectors.append(SelfMetricsCollector())
        for collector in self._collectors:
            self.registry.register(collector)
        self.port: int | None = None
        """The port ``/metrics`` is served on, once serving (the bound one when asked for 0)."""
        self.url: str | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._server_pid = 0
        if port is not None:
            self._serve(port, addr, certfile, keyfile)

    def _serve(self, port: int, addr: str, certfile: str | None, keyfile: str | None) -> None:
        if bool(certfile) != bool(keyfile):
            safety.report(
                "sink.prometheus",
                message="TLS needs both a certificate and a key file; /metrics is not served",
            )
            return
        try:
            if certfile and keyfile:  # fail before binding the port, with the file's own error
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
            self._server, self._thread = start_http_server(
                port, addr, self.registry, certfile=certfile, keyfile=keyfile
            )
        except Exception as exc:
            safety.report(
                "sink.prometheus",
                exc,
                f"cannot serve /metrics on {addr}:{port}: {exc}; the run goes on and its records "
                "are kept in the spool",
            )
            return
        self._server_pid = os.getpid()
        self.port = int(self._server.server_port)
        self.url = metrics_url(addr, self.port, tls=bool(certfile))
        logger.info("mlobs: serving Prometheus metrics on %s", self.url)

    def export(self, batch: Batch) -> ExportResult:
        self.state.apply(batch)
        self.state.evict()
        return ExportResult.SUCCESS

    def shutdown(self, timeout: float = 10.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            # A forked child has a copy of the server but not its thread: shutdown() would wait
            # for a serve loop that does not exist there. Close the child's socket only.
            if os.getpid() == self._server_pid:
                server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        unregister(self.registry, self._collectors)
        self._collectors = []


def metrics_url(addr: str, port: int, *, tls: bool) -> str:
    """The ``/metrics`` URL of a server bound to ``addr`` and ``port`` (IPv6 in brackets)."""
    host = f"[{addr}]" if ":" in addr else addr
    return f"{'https' if tls else 'http'}://{host}:{port}/metrics"


def unregister(registry: CollectorRegistry, collectors: Iterable[Any]) -> None:
    """Take ``collectors`` off ``registry``, skipping any already gone."""
    for collector in collectors:
        try:
            registry.unregister(collector)
        except KeyError:
            pass


def from_config(config: Config) -> PrometheusExporter:
    return PrometheusExporter(
        port=config.prometheus_port,
        addr=config.prometheus_addr,
        certfile=config.prometheus_certfile,
        keyfile=config.prometheus_keyfile,
    )
