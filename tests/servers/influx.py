"""InfluxDB 1.6 as a test server, and the test-owned /api/v2/write translation proxy in front
of it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .base import HOST, BackendError, Server, _get_json, find_binary, free_port, http

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
