"""Running real server binaries for tests: free ports, binary lookup, start and stop by PID,
readiness waits, and small HTTP helpers. See tests/backends.py for the fixtures."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run scripts/backends.sh"
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0

# Requests to the loopback servers never go through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_running: set[Server] = set()


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
    fail_or_skip(f"{' / '.join(names)} missing; {INSTALL_HINT}")


def run_tool(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A backend's command-line tool (promtool, amtool, ...: :func:`find_binary`) with ``args``,
    its output captured as text."""
    return subprocess.run(
        [find_binary(name), *args], capture_output=True, text=True, timeout=timeout
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    """``result`` exited 0; if not, the assertion shows the command and its output."""
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def fail_or_skip(message: str) -> NoReturn:
    """Something a test needs is missing: fail the test when ``CI=true``, otherwise skip it."""
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


def prom_query(url: str, promql: str, server: str) -> list[dict[str, Any]]:
    """An instant query through the Prometheus HTTP API (Prometheus and VictoriaMetrics alike);
    returns ``data.result``."""
    data = _get_json(url + "/api/v1/query", {"query": promql})
    if data.get("status") != "success":
        raise BackendError(f"{server} query {promql!r}: {data}")
    result: list[dict[str, Any]] = data["data"]["result"]
    return result
