"""Pytest plugin: fixtures that run real observability backends for integration tests.

Each server is a real binary started as a child process on 127.0.0.1 on a free port, with its data
and its log in the test's temporary directory; it is stopped by PID in the fixture's finalizer.
``scripts/backends.sh`` installs the binaries (apt packages, Debian trixie .debs unpacked into
``.backends/``, and PyPI ``oteltap``). A missing binary skips the test, or fails it when
``CI=true``.

Servers can be stopped and started again on the same port and data directory (``stop()`` then
``start()``) to simulate an outage. When a test fails, the tails of the logs of the servers it used
are added to its report.

Fixtures (all function-scoped):

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

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL_HINT = "run scripts/backends.sh"
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0

# Requests to the loopback servers never go through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_running: set[Server] = set()
_servers_key = pytest.StashKey[list["Server | OtelTapReceiver"]]()


class BackendError(RuntimeError):
    """A backend answered an API call with an error."""


# --- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(*names: str) -> str:
    """The first of ``names`` found on PATH, in /usr/bin or in <repo>/.backends/bin.

    Missing: fails the test when ``CI=true``, otherwise skips it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for folder in (Path("/usr/bin"), REPO / ".backends" / "bin"):
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    message = f"{' / '.join(names)} missing; {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) for any HTTP status, raises OSError when the
    server cannot be reached."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _get_json(url: str, params: dict[str, str] | None = None, method: str = "GET") -> Any:
    query = urllib.parse.urlencode(params or {})
    if method == "GET":
        status, body = http("GET", f"{url}?{query}" if query else url)
    else:
        status, body = http(
            method,
            url,
            query.encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
    try:
        data = json.loads(body)
    except ValueError as error:
        raise BackendError(f"{method} {url} -> {status}: {body[:500]!r}") from error
    if status >= 400:
        raise BackendError(f"{method} {url} -> {status}: {data}")
    return data


# --- processes ----------------------------------------------------------------------------------


class Server:
    """A real server binary run as a child process on 127.0.0.1:port, data in a temp dir.

    ``start()`` (re)starts it on the same port and data dir and waits until ``ready_path``
    answers one of ``ready_status``; ``stop()`` sends SIGTERM by PID, then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        workdir: Path,
        ready_path: str = "/-/ready",
        ready_status: Sequence[int] = (200,),
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.ready_path = ready_path
        self.ready_status = tuple(ready_status)
        self.ready_timeout = ready_timeout
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as a scrape target or push address."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== mlobs tests: start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        _running.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = process.returncode if process else None
                raise BackendError(
                    f"{self.name} exited (code {code}) before it was ready\n{self.log_tail()}"
                )
            try:
                status, body = http("GET", self.url + self.ready_path, timeout=2)
                if status in self.ready_status:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except OSError as error:
                last = repr(error)
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{self.name} not ready on {self.url}{self.ready_path} after "
                    f"{self.ready_timeout:.0f} s ({last})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        process = self._process
        _running.discard(self)
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self._process = None

    def log_tail(self, n: int = 50) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(lines[-n:])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.url} running={self.running}>"


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_running):
        server.stop(timeout=2)


def _unique_dir(base: Path, name: str) -> Path:
    for index in range(1000):
        path = base / (name if index == 0 else f"{name}-{index}")
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise RuntimeError(f"no free directory name for {name} in {base}")


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
        data = _get_json(self.url + "/api/v1/query", {"query": promql})
        if data.get("status") != "success":
            raise BackendError(f"prometheus query {promql!r}: {data}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

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


# --- InfluxDB -----------------------------------------------------------------------------------


class InfluxDBServer(Server):
    """InfluxDB 1.6 (v1 API: ``/write``, ``/query`` InfluxQL, ``/ping``; no ``/api/v2``).

    Data is on disk in the temp dir, so a stop/start keeps it."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.rpc_port = free_port()
        self.config_path = workdir / "influxdb.conf"
        data = workdir / "data"
        self.config_path.write_text(
            f"""reporting-disabled = true
bind-address = "{HOST}:{self.rpc_port}"

[meta]
  dir = "{data / "meta"}"

[data]
  dir = "{data / "data"}"
  wal-dir = "{data / "wal"}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{port}"
  auth-enabled = false
  log-enabled = false

[continuous_queries]
  enabled = false

[monitor]
  store-enabled = false
"""
        )
        argv = [find_binary("influxd"), "-config", str(self.config_path)]
        super().__init__("influxdb", argv, port, workdir, "/ping", ready_status=(204,))

    def query(
        self, influxql: str, db: str | None = None, epoch: str | None = "ns"
    ) -> list[dict[str, Any]]:
        """Run InfluxQL (POST /query); returns the ``series`` of the first result, [] if none.

        Each series is ``{"name", "columns", "values", "tags"?}``; with ``epoch`` times are
        integers in that unit (``None``: RFC 3339 strings)."""
        params = {"q": influxql}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        data = _get_json(self.url + "/query", params, method="POST")
        if "error" in data:
            raise BackendError(f"influxdb query {influxql!r}: {data['error']}")
        results = data.get("results") or [{}]
        first = results[0]
        if "error" in first:
            raise BackendError(f"influxdb query {influxql!r}: {first['error']}")
        series: list[dict[str, Any]] = first.get("series", [])
        return series

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def write(self, lines: str, db: str, rp: str | None = None, precision: str = "ns") -> None:
        """Write line protocol through ``/write`` (the v1 API)."""
        params = {"db": db, "precision": precision}
        if rp:
            params["rp"] = rp
        url = f"{self.url}/write?{urllib.parse.urlencode(params)}"
        status, body = http("POST", url, lines.encode())
        if status != 204:
            raise BackendError(f"influxdb write -> {status}: {body[:500]!r}")

    def values(self, influxql: str, db: str) -> list[dict[str, Any]]:
        """``query()`` flattened to one dict per row (column name -> value, tags included)."""
        rows = []
        for series in self.query(influxql, db):
            for value in series.get("values", []):
                row = dict(zip(series["columns"], value, strict=True))
                row.update(series.get("tags") or {})
                rows.append(row)
        return rows


class InfluxV2Proxy:
    """A STAND-IN translation layer, not part of InfluxDB: a small HTTP proxy owned by the tests.

    InfluxDB 1.6 (the one installable here) has no ``/api/v2/write``; this proxy lets
    ``influxdb-client`` (which speaks only the v2 API) write to it by translating
    ``/api/v2/write?org=..&bucket=db/rp&precision=p`` to ``/write?db=db&rp=rp&precision=p``
    (bucket without "/": db only). The body and its Content-Encoding go through untouched; the
    Authorization header is dropped (auth is off). ``/health`` and ``/ping`` answer from the
    upstream's ``/ping``. Any other path is forwarded as is. When influxd is down (connection
    refused), every request gets 503, so clients see the outage."""

    def __init__(self, upstream: InfluxDBServer) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status returned)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="influx-v2-proxy", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        # Stand-in translation layer owned by the tests (InfluxDB 1.6 has no /api/v2): this is
        # not InfluxDB's code or behaviour beyond what the upstream influxd answers.
        parsed = urllib.parse.urlsplit(handler.path)
        params = dict(urllib.parse.parse_qsl(parsed.query))
        body = _read_body(handler)
        headers = {
            k: v
            for k, v in handler.headers.items()
            if k.lower() in ("content-type", "content-encoding", "accept", "accept-encoding")
        }
        try:
            if parsed.path in ("/health", "/ping"):
                status, _ = http("GET", self.upstream.url + "/ping", timeout=5)
                if parsed.path == "/ping":
                    self._reply(handler, status, b"", {})
                else:
                    health: dict[str, Any] = {
                        "name": "influxdb",
                        "message": "ready for queries and writes"
                        if status == 204
                        else f"upstream /ping answered {status}",
                        "status": "pass" if status == 204 else "fail",
                        "checks": [],
                        "version": "1.6.7 (via test proxy)",
                    }
                    self._reply_json(handler, 200 if status == 204 else 503, health)
                return
            if parsed.path == "/api/v2/write" and handler.command == "POST":
                bucket = params.get("bucket", "")
                db, _, rp = bucket.partition("/")
                precision = params.get("precision") or "ns"
                v1 = {"db": db, "precision": {"us": "u"}.get(precision, precision)}
                if rp:
                    v1["rp"] = rp
                target = f"{self.upstream.url}/write?{urllib.parse.urlencode(v1)}"
                status, reply = http("POST", target, body, headers, timeout=30)
                if status >= 400:
                    self._reply_json(handler, status, _v2_error(status, reply))
                else:
                    self._reply(handler, status, reply, {})
                return
            target = self.upstream.url + handler.path
            status, reply = http(handler.command, target, body or None, headers, timeout=30)
            self._reply(handler, status, reply, {"Content-Type": "application/json"})
        except OSError as error:
            message = f"upstream influxdb unavailable: {error}"
            self._reply_json(handler, 503, {"code": "unavailable", "message": message})

    def _reply_json(self, handler: BaseHTTPRequestHandler, status: int, data: Any) -> None:
        self._reply(
            handler, status, json.dumps(data).encode(), {"Content-Type": "application/json"}
        )

    def _reply(
        self, handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        self.requests.append((handler.command, handler.path, status))
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if body and status not in (204, 304):
            handler.wfile.write(body)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _v2_error(status: int, reply: bytes) -> dict[str, str]:
    try:
        message = str(json.loads(reply).get("error", reply.decode(errors="replace")))
    except ValueError:
        message = reply.decode(errors="replace")
    code = "invalid" if status < 500 else "internal error"
    if status == 404:
        code = "not found"
    return {"code": code, "message": message}


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
        data = _get_json(self.url + "/api/v1/query", {"query": promql})
        if data.get("status") != "success":
            raise BackendError(f"victoria-metrics query {promql!r}: {data}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

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


# --- oteltap ------------------------------------------------------------------------------------


class OtelTapReceiver:
    """PyPI ``oteltap``: an OTLP/HTTP protobuf receiver (Rust core, in this test process) on
    127.0.0.1:port. It runs on its own asyncio loop in a background thread; everything received is
    kept (across restarts) as decoded protobuf messages: ``opentelemetry.proto`` ``Span``,
    ``LogRecord`` and ``Metric``. oteltap hands over the items only, without their resource and
    scope. ``stop()`` closes the port (clients get connection refused), ``start()`` listens
    again on the same port."""

    def __init__(self) -> None:
        from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
        from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
        from opentelemetry.proto.trace.v1.trace_pb2 import Span

        self.name = "oteltap"
        self.port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.url = self.endpoint
        self._spans: list[Span] = []
        self._logs: list[LogRecord] = []
        self._metrics: list[Metric] = []
        self._changed = threading.Condition()
        self._receiver: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="oteltap", daemon=True)
        self._thread.start()

    @property
    def traces_url(self) -> str:
        return self.endpoint + "/v1/traces"

    @property
    def logs_url(self) -> str:
        return self.endpoint + "/v1/logs"

    @property
    def metrics_url(self) -> str:
        return self.endpoint + "/v1/metrics"

    @property
    def running(self) -> bool:
        return self._receiver is not None

    def _run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> None:
        if self.running:
            return
        self._run(self._start())
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError as error:
                if time.monotonic() > deadline:
                    raise BackendError(f"oteltap not listening on {self.endpoint}") from error
                time.sleep(0.05)

    async def _start(self) -> None:
        from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

        receiver = OtelTapHttpProtobufReceiver(
            OtelTapHttpProtobufReceiverSettings(http_port=self.port)
        )
        await receiver.start()
        self._receiver = receiver
        self._tasks = [
            asyncio.create_task(self._collect(receiver.stream_traces(), self._spans)),
            asyncio.create_task(self._collect(receiver.stream_logs(), self._logs)),
            asyncio.create_task(self._collect(receiver.stream_metrics(), self._metrics)),
        ]
        await asyncio.sleep(0)  # let the collectors subscribe before anything can arrive

    async def _collect(self, stream: Any, into: list[Any]) -> None:
        async for item in stream:
            with self._changed:
                into.append(item)
                self._changed.notify_all()

    def stop(self) -> None:
        if self._receiver is None:
            return
        receiver, self._receiver = self._receiver, None
        self._run(self._stop(receiver))

    async def _stop(self, receiver: Any) -> None:
        await receiver.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def spans(self) -> list[Any]:
        with self._changed:
            return list(self._spans)

    def logs(self) -> list[Any]:
        with self._changed:
            return list(self._logs)

    def metrics(self) -> list[Any]:
        with self._changed:
            return list(self._metrics)

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()
            self._logs.clear()
            self._metrics.clear()

    def _wait(self, items: list[Any], n: int, timeout: float, what: str) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(items) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"oteltap: {len(items)} {what} received, wanted {n}")
                self._changed.wait(left)
            return list(items)

    def wait_for_spans(self, n: int = 1, timeout: float = 10.0) -> list[Any]:
        """All spans received so far, once there are at least ``n``."""
        return self._wait(self._spans, n, timeout, "spans")

    def wait_for_logs(self, n: int = 1, timeout: float = 10.0) -> list[Any]:
        return self._wait(self._logs, n, timeout, "log records")

    def wait_for_metrics(self, n: int = 1, timeout: float = 10.0) -> list[Any]:
        return self._wait(self._metrics, n, timeout, "metrics")

    def log_tail(self, n: int = 50) -> str:
        return (
            f"(oteltap runs in-process; received {len(self._spans)} spans, "
            f"{len(self._logs)} logs, {len(self._metrics)} metrics)"
        )


def _poll(
    attempt: Callable[[], list[dict[str, Any]]],
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    what: str,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if predicate(result):
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: condition not met after {timeout:.0f} s; last: {result}")
        time.sleep(0.2)


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
