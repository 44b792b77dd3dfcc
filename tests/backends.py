"""Pytest plugin: fixtures that run real observability backends for integration tests.

Each server is a real binary started as a child process on 127.0.0.1 on a free port, with its data
and its log in the test's temporary directory; it is stopped by PID in the fixture's finalizer.
``scripts/backends.sh`` installs the binaries (apt packages, Debian trixie .debs unpacked into
``.backends/``, and PyPI ``oteltap``). A missing binary skips the test, or fails it when
``CI=true``.

Servers can be stopped and started again on the same port and data directory (``stop()`` then
``start()``) to simulate an outage. When a test fails, the tails of the logs of the servers it used
are added to its report.

The server classes live in ``tests/servers/`` (one module per backend); this module is the
pytest plugin that starts them. Fixtures (all function-scoped):

- ``prometheus_server(scrape_targets=(), scrape_interval="1s", remote_write_receiver=True,
  extra_config=None) -> PrometheusServer`` (factory)
- ``pushgateway -> PushgatewayServer``
- ``influxdb -> InfluxDBServer`` (InfluxDB 1.6, v1 API only)
- ``influx_v2_proxy -> InfluxV2Proxy`` (test-owned /api/v2 translation, see below)
- ``victoria_metrics -> VictoriaMetricsServer``
- ``vmagent(prometheus) -> VmagentServer`` (factory; OTLP/HTTP metrics in, remote write out)
- ``oteltap -> OtelTapReceiver`` (OTLP/HTTP protobuf receiver for traces, logs and metrics)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .servers.alertmanager import AlertmanagerServer
from .servers.base import (
    INSTALL_HINT,
    BackendError,
    Server,
    _unique_dir,
    find_binary,
    free_port,
    http,
)
from .servers.influx import InfluxDBServer, InfluxV2Proxy
from .servers.oteltap import OtelTapReceiver
from .servers.prometheus import PrometheusServer, PushgatewayServer
from .servers.victoria import VictoriaMetricsServer, VmagentServer

_servers_key = pytest.StashKey[list[Server | OtelTapReceiver]]()

# --- pytest wiring ------------------------------------------------------------------------------


def _register(request: pytest.FixtureRequest, server: Server | OtelTapReceiver) -> None:
    servers = request.node.stash.setdefault(_servers_key, [])
    servers.append(server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for server in item.stash.get(_servers_key, []):
            report.sections.append((f"{server.name} log tail ({server.url})", server.log_tail()))
    return report


def _start(request: pytest.FixtureRequest, server: Server) -> Server:
    _register(request, server)
    request.addfinalizer(server.stop)
    server.start()
    return server


@pytest.fixture
def prometheus_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[..., PrometheusServer]:
    """Factory: ``prometheus_server(scrape_targets=(), scrape_interval="1s",
    remote_write_receiver=True, extra_config=None, scrape_self=False)`` starts a Prometheus and
    returns it. ``scrape_self`` adds a job ``prometheus`` scraping the server itself."""

    def factory(
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        remote_write_receiver: bool = True,
        extra_config: dict[str, Any] | None = None,
        scrape_self: bool = False,
    ) -> PrometheusServer:
        server = PrometheusServer(
            _unique_dir(tmp_path, "prometheus"),
            scrape_targets,
            scrape_interval,
            remote_write_receiver,
            extra_config,
            scrape_self,
        )
        _start(request, server)
        return server

    return factory


@pytest.fixture
def alertmanager_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[..., AlertmanagerServer]:
    """Factory: ``alertmanager_server(config)`` starts an Alertmanager (clustering off) with
    ``config`` (a document, or the path of a file) and returns it."""

    def factory(config: dict[str, Any] | Path) -> AlertmanagerServer:
        server = AlertmanagerServer(_unique_dir(tmp_path, "alertmanager"), config)
        _start(request, server)
        return server

    return factory


@pytest.fixture
def pushgateway(request: pytest.FixtureRequest, tmp_path: Path) -> PushgatewayServer:
    server = PushgatewayServer(_unique_dir(tmp_path, "pushgateway"))
    _start(request, server)
    return server


@pytest.fixture
def influxdb(request: pytest.FixtureRequest, tmp_path: Path) -> InfluxDBServer:
    server = InfluxDBServer(_unique_dir(tmp_path, "influxdb"))
    _start(request, server)
    return server


@pytest.fixture
def influx_v2_proxy(influxdb: InfluxDBServer) -> Iterator[InfluxV2Proxy]:
    """Test-owned /api/v2/write -> /write translation in front of ``influxdb`` (not InfluxDB)."""
    proxy = InfluxV2Proxy(influxdb)
    yield proxy
    proxy.close()


@pytest.fixture
def victoria_metrics(request: pytest.FixtureRequest, tmp_path: Path) -> VictoriaMetricsServer:
    server = VictoriaMetricsServer(_unique_dir(tmp_path, "victoria-metrics"))
    _start(request, server)
    return server


@pytest.fixture
def vmagent(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., VmagentServer]:
    """Factory: ``vmagent(prometheus)`` (a PrometheusServer with the remote-write receiver, or a
    remote-write URL) starts a vmagent forwarding OTLP metrics there."""

    def factory(prometheus: PrometheusServer | str) -> VmagentServer:
        url = prometheus if isinstance(prometheus, str) else prometheus.remote_write_url
        server = VmagentServer(_unique_dir(tmp_path, "vmagent"), url)
        _start(request, server)
        return server

    return factory


@pytest.fixture
def oteltap(request: pytest.FixtureRequest) -> Iterator[OtelTapReceiver]:
    try:
        import oteltap as _oteltap  # noqa: F401
    except ImportError:
        message = f"PyPI oteltap missing; {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    receiver = OtelTapReceiver()
    _register(request, receiver)
    try:
        receiver.start()
        yield receiver
    finally:
        receiver.close()


__all__ = [
    "BackendError",
    "InfluxDBServer",
    "InfluxV2Proxy",
    "OtelTapReceiver",
    "PrometheusServer",
    "PushgatewayServer",
    "Server",
    "VictoriaMetricsServer",
    "VmagentServer",
    "find_binary",
    "free_port",
    "http",
]
