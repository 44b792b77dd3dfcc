"""Prometheus and the Pushgateway as test servers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .base import (
    HOST,
    BackendError,
    Server,
    _get_json,
    _poll,
    find_binary,
    free_port,
    http,
    prom_query,
)

# --- Prometheus, Pushgateway ---------------------------------------------------------------------


class PrometheusServer(Server):
    """Prometheus 2.x with a job ``mlobs`` scraping ``scrape_targets`` (``honor_labels: true``).

    The configuration is written as JSON (valid YAML) to ``config_path``; ``extra_config`` keys are
    merged into its top level (``global`` is merged key by key; ``scrape_configs`` are appended
    after the ``mlobs`` job), e.g. ``{"rule_files": [...], "alerting": {...}}``."""

    def __init__(
        self,
        workdir: Path,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        remote_write_receiver: bool = True,
        extra_config: dict[str, Any] | None = None,
        scrape_self: bool = False,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.config_path = workdir / "prometheus.yml"
        self.scrape_self = scrape_self
        self.scrape_interval = scrape_interval
        self.extra_config = dict(extra_config or {})
        self.scrape_targets = list(scrape_targets)
        argv = [
            find_binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]
        if remote_write_receiver:
            argv.append("--web.enable-remote-write-receiver")
        super().__init__("prometheus", argv, port, workdir, "/-/ready")
        self._write_config()

    def _write_config(self) -> None:
        extra = dict(self.extra_config)
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "mlobs",
                    "honor_labels": True,
                    "static_configs": [{"targets": self.scrape_targets}],
                },
                *extra.pop("scrape_configs", []),
            ],
        }
        if self.scrape_self:
            config["scrape_configs"].append(
                {"job_name": "prometheus", "static_configs": [{"targets": [self.address]}]}
            )
        config["global"].update(extra.pop("global", {}))
        config.update(extra)
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def remote_write_url(self) -> str:
        return self.url + "/api/v1/write"

    def set_scrape_targets(self, targets: Sequence[str], timeout: float = 10.0) -> None:
        """Rewrite the ``mlobs`` job's targets and reload; waits until Prometheus has them.

        Slow (about 5 s: Prometheus applies target changes at most every 5 s); prefer passing the
        targets to the factory."""
        self.scrape_targets = list(targets)
        self._write_config()
        if not self.running:
            return
        status, body = http("POST", self.url + "/-/reload")
        if status != 200:
            raise BackendError(f"prometheus reload -> {status}: {body[:500]!r}")
        wanted = set(self.scrape_targets)
        deadline = time.monotonic() + timeout
        while True:
            active = {
                t["labels"].get("instance")
                for t in self.targets()
                if t.get("scrapePool") == "mlobs"
            }
            if active == wanted:
                return
            if time.monotonic() > deadline:
                raise BackendError(f"prometheus targets {active} != {wanted} after reload")
            time.sleep(0.1)

    def targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets`` activeTargets."""
        data = _get_json(self.url + "/api/v1/targets")
        return list(data["data"]["activeTargets"])

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result`` (a list for vector results)."""
        return prom_query(self.url, promql, "prometheus")

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``query(promql)`` until ``predicate(result)``; raises TimeoutError with the last
        result."""
        return _poll(lambda: self.query(promql), predicate, timeout, f"prometheus {promql!r}")

    def series(self, match: str) -> list[dict[str, str]]:
        """``/api/v1/series?match[]=match``: label sets of the matching series."""
        data = _get_json(self.url + "/api/v1/series", {"match[]": match})
        if data.get("status") != "success":
            raise BackendError(f"prometheus series {match!r}: {data}")
        result: list[dict[str, str]] = data["data"]
        return result


class PushgatewayServer(Server):
    """Prometheus Pushgateway 1.x. Pushed groups are persisted to a file in the temp dir (every
    second and on shutdown), so a stop/start keeps what was pushed before."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        argv = [
            find_binary("pushgateway", "prometheus-pushgateway"),
            f"--web.listen-address={HOST}:{port}",
            f"--persistence.file={workdir / 'pushgateway.data'}",
            "--persistence.interval=1s",
        ]
        super().__init__("pushgateway", argv, port, workdir, "/-/ready")

    def metrics_text(self) -> str:
        """The Pushgateway's own ``/metrics`` exposition (includes every pushed group)."""
        status, body = http("GET", self.url + "/metrics")
        if status != 200:
            raise BackendError(f"pushgateway /metrics -> {status}")
        return body.decode()
