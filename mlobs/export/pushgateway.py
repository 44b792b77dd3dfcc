"""The Pushgateway sink, for batch jobs that end before Prometheus would scrape them.

Each run is one group on the Pushgateway, keyed by ``job`` (the run's experiment) and ``run_id``
(plus ``rank`` when the job has several ranks, so ranks do not overwrite each other's group).
Every export folds the batch into the same per-run state as the ``/metrics`` sink (see
:mod:`mlobs.export.prometheus` for the series) and replaces (HTTP PUT) the group of each run the
batch touched with that run's complete state, so a push offered again after a failure sends the
same totals, never double counts. Records outside any run go to the group ``run_id=""``.

With ``delete_on_finish`` a run's group is deleted once its end has been pushed: the gateway
keeps no stale groups, but Prometheus sees the final values only if it scraped in between.
Self-metrics are not pushed (they belong to the process, not to a run): serve them with
``MLOBS_PROMETHEUS_PORT``.
"""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Callable
from typing import Any

from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    delete_from_gateway,
    push_to_gateway,
)

from mlobs import safety
from mlobs.config import Config
from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.export.prom_state import PromState, StateCollector

logger = logging.getLogger("mlobs")

DEFAULT_JOB = "mlobs"
Handler = Callable[..., Callable[[], None]]


class PushgatewayExporter(Exporter):
    """Pushes each run's series to a Pushgateway.

    Args:
        url: the Pushgateway (``http://host:9091``; https works with the system's CAs).
        username: basic-auth user; with ``password``, sent through prometheus-client's
            ``basic_auth_handler``.
        password: basic-auth password.
        delete_on_finish: delete a run's group once its end has been pushed.
        timeout: seconds allowed for each HTTP request.
        keep_finished_runs: finished runs whose state stays in memory.
        name: the sink's cursor name.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        delete_on_finish: bool = False,
        timeout: float = 5.0,
        keep_finished_runs: int = 50,
        name: str = "pushgateway",
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.delete_on_finish = delete_on_finish
        self.timeout = timeout
        self.state = PromState(keep_finished_runs)
        self._handler: Handler = _auth_handler(username, password) if username else default_handler
        self._to_push: set[str] = set()
        """Runs whose latest state the gateway has not acknowledged yet."""
        self._to_delete: set[str] = set()
        self.pushes = 0
        """Successful pushes (for tests and benchmarks)."""

    def grouping_key(self, run_id: str) -> tuple[str, dict[str, str]]:
        """The job and grouping key of a run's group."""
        facts = self.state.run_facts(run_id)
        experiment, rank = facts if facts is not None else ("", "0")
        key = {"run_id": run_id}
        if run_id and self.state.world_size(run_id) > 1:
            key["rank"] = rank
        return (experiment or DEFAULT_JOB), key

    def export(self, batch: Batch) -> ExportResult:
        self._to_push |= self.state.apply(batch)
        for run_id in sorted(self._to_push):
            if not self._push(run_id):
                return ExportResult.FAILURE
            self._to_push.discard(run_id)
            if self.delete_on_finish and self.state.has_ended(run_id):
                self._to_delete.add(run_id)
        for run_id in sorted(self._to_delete):
            if not self._delete(run_id):
                return ExportResult.FAILURE
            self._to_delete.discard(run_id)
            self.state.forget(run_id)
        self.state.evict(keep=self._to_push | self._to_delete)
        return ExportResult.SUCCESS

    def _push(self, run_id: str) -> bool:
        job, key = self.grouping_key(run_id)
        try:
            push_to_gateway(
                self.url,
                job=job,
                registry=StateCollector(self.state, [run_id]),
                grouping_key=key,
                timeout=self.timeout,
                handler=self._handler,
            )
        except Exception as exc:
            self._failed("push", exc)
            return False
        self.pushes += 1
        return True

    def _delete(self, run_id: str) -> bool:
        job, key = self.grouping_key(run_id)
        try:
            delete_from_gateway(
                self.url, job=job, grouping_key=key, timeout=self.timeout, handler=self._handler
            )
        except Exception as exc:
            self._failed("delete", exc)
            return False
        return True

    def _failed(self, what: str, exc: Exception) -> None:
        # A gateway that is down or slow only delays data (the shipper retries from its cursor).
        # One that rejects the payload points at a bug here: count it as an internal error too.
        if isinstance(exc, urllib.error.HTTPError) and exc.code == 400:
            safety.self_metrics.inc(safety.INTERNAL_ERRORS, f"export.{self.name}.rejected")
        safety.warn(
            f"{self.name}.{what}",
            "mlobs: %s to the Pushgateway at %s failed (%s); retrying in the background",
            what,
            self.url,
            _describe(exc),
        )

    def force_flush(self, timeout: float = 10.0) -> bool:
        return not self._to_push and not self._to_delete


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return repr(exc)


def _auth_handler(username: str, password: str | None) -> Handler:
    def handler(
        url: str, method: str, timeout: float | None, headers: list[Any], data: bytes
    ) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username, password or "")

    return handler


def from_config(config: Config) -> PushgatewayExporter:
    if not config.pushgateway_url:
        raise ValueError("pushgateway_url is not set")
    return PushgatewayExporter(
        config.pushgateway_url,
        username=config.pushgateway_username,
        password=config.pushgateway_password,
        delete_on_finish=config.pushgateway_delete,
    )
