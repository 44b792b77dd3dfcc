"""VictoriaMetrics single-node and vmagent as test servers."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import (
    HOST,
    BackendError,
    Server,
    _poll,
    find_binary,
    free_port,
    http,
    prom_query,
)

# --- VictoriaMetrics ------------------------------------------------------------------------------


class VictoriaMetricsServer(Server):
    """Single-node VictoriaMetrics (Prometheus-compatible query API, many write protocols).

    InfluxDB line protocol sent to ``/api/v2/write`` (or ``/write``) becomes one series per field,
    named ``{measurement}_{field}`` (``train,run=r1 loss=0.5,acc=0.9`` -> ``train_loss{run="r1"}``
    and ``train_acc{run="r1"}``), tags as labels, timestamps trimmed to milliseconds. The v2
    ``bucket``/``org`` are not stored; a v1 ``/write?db=x`` adds the label ``db="x"``.
    Ingestion is asynchronous (about 0.5 s): use ``wait_for``/``wait_for_export`` rather than a
    single ``query``/``export`` right after a write. Caches and the search latency offset are
    off."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        argv = [
            find_binary("victoria-metrics"),
            f"-httpListenAddr={HOST}:{port}",
            f"-storageDataPath={workdir / 'data'}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]
        super().__init__("victoria-metrics", argv, port, workdir, "/health")

    def flush(self) -> None:
        """Make recent writes visible to queries (``/internal/force_flush``)."""
        status, body = http("GET", self.url + "/internal/force_flush")
        if status != 200:
            raise BackendError(f"victoria-metrics force_flush -> {status}: {body[:300]!r}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query (``/api/v1/query``); returns ``data.result``."""
        return prom_query(self.url, promql, "victoria-metrics")

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        def attempt() -> list[dict[str, Any]]:
            self.flush()
            return self.query(promql)

        return _poll(attempt, predicate, timeout, f"victoria-metrics {promql!r}")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Raw samples (``/api/v1/export``): one ``{"metric", "values", "timestamps"}`` per
        series; timestamps in milliseconds."""
        self.flush()
        status, body = http(
            "GET", f"{self.url}/api/v1/export?{urllib.parse.urlencode({'match[]': match})}"
        )
        if status != 200:
            raise BackendError(f"victoria-metrics export {match!r} -> {status}: {body[:500]!r}")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def wait_for_export(
        self,
        match: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``export(match)`` until ``predicate(result)``."""
        return _poll(lambda: self.export(match), predicate, timeout, f"victoria-metrics {match!r}")


class VmagentServer(Server):
    """vmagent receiving OTLP/HTTP protobuf metrics at ``otlp_metrics_url`` and remote-writing
    them (with Prometheus naming: ``_total`` suffixes, units) to ``remote_write_url``."""

    def __init__(self, workdir: Path, remote_write_url: str) -> None:
        port = free_port()
        self.remote_write_url = remote_write_url
        argv = [
            find_binary("vmagent"),
            f"-httpListenAddr={HOST}:{port}",
            f"-remoteWrite.url={remote_write_url}",
            f"-remoteWrite.tmpDataPath={workdir / 'queue'}",
            "-remoteWrite.flushInterval=200ms",
            "-remoteWrite.retryMinInterval=200ms",
            "-opentelemetry.usePrometheusNaming",
            "-loggerLevel=WARN",
        ]
        super().__init__("vmagent", argv, port, workdir, "/health")

    @property
    def otlp_metrics_url(self) -> str:
        return self.url + "/opentelemetry/v1/metrics"
