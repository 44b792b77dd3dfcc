"""``mlobs doctor`` checks of the network sinks: what each configured backend answers.

Each check asks the backend the cheapest question that proves it is there (a readiness endpoint,
a ping, or a TCP connection where the protocol has nothing lighter), with a short timeout.
"""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from mlobs.cli.checks import Check, _backlog, sink_check
from mlobs.config import Config
from mlobs.export.sinks import otlp_enabled
from mlobs.spool.catalog import Catalog

TIMEOUT_S = 3.0


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[bool, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            version = response.headers.get("X-Influxdb-Version")
            return True, f"HTTP {response.status}" + (f", version {version}" if version else "")
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code} from {url}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"


def _connect(host: str, port: int) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return True, f"{host}:{port} accepts connections"
    except OSError as exc:
        return False, f"{host}:{port}: {exc.strerror or exc}"


@sink_check("prometheus")
def prometheus_check(config: Config, catalog: Catalog | None) -> Check | None:
    if config.prometheus_port is None:
        return None
    addr, port = config.prometheus_addr, config.prometheus_port
    if port == 0:
        return Check("sink prometheus", True, f"/metrics on {addr}, a free port picked at start")
    try:
        with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET) as probe:
            probe.bind((addr, port))
    except OSError as exc:
        return Check("sink prometheus", False, f"cannot bind {addr}:{port}: {exc.strerror or exc}")
    tls = " over TLS" if config.prometheus_certfile else ""
    return Check("sink prometheus", True, f"/metrics{tls} can be served on {addr}:{port}")


@sink_check("pushgateway")
def pushgateway_check(config: Config, catalog: Catalog | None) -> Check | None:
    if not config.pushgateway_url:
        return None
    headers = {}
    if config.pushgateway_username:
        pair = f"{config.pushgateway_username}:{config.pushgateway_password or ''}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    ok, detail = _get(config.pushgateway_url.rstrip("/") + "/-/ready", headers)
    return Check("sink pushgateway", ok, detail + _backlog(catalog, "pushgateway"))


@sink_check("influxdb")
def influxdb_check(config: Config, catalog: Catalog | None) -> Check | None:
    if not config.influxdb_url:
        return None
    ok, detail = _get(config.influxdb_url.rstrip("/") + "/ping")
    return Check("sink influxdb", ok, detail + _backlog(catalog, "influxdb"))


@sink_check("otlp")
def otlp_check(config: Config, catalog: Catalog | None) -> Check | None:
    if not otlp_enabled(config):
        return None
    if not config.otlp_endpoint:
        return Check("sink otlp", True, "per-signal endpoints set" + _backlog(catalog, "otlp"))
    parts = urlsplit(config.otlp_endpoint)
    default_port = 4317 if config.otlp_protocol == "grpc" else 4318
    ok, detail = _connect(parts.hostname or "localhost", parts.port or default_port)
    return Check("sink otlp", ok, f"{config.otlp_protocol}: {detail}" + _backlog(catalog, "otlp"))


@sink_check("fluentd")
def fluentd_check(config: Config, catalog: Catalog | None) -> Check | None:
    if not config.fluentd_host:
        return None
    ok, detail = _connect(config.fluentd_host, config.fluentd_port)
    return Check("sink fluentd", ok, detail + _backlog(catalog, "fluentd"))
