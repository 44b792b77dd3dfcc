"""Alertmanager as a test server, and the two receivers it delivers to in tests.

:class:`AlertmanagerServer` runs the real ``alertmanager`` binary (Debian names it
``prometheus-alertmanager``) on 127.0.0.1 with clustering off. Its receivers in tests are
test-owned stand-ins, not the real services:

- :class:`SmtpRecorder` is an SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it is
  given; it relays nothing and needs ``smtp_require_tls: false``.
- :class:`SlackRecorder` is an HTTP server on 127.0.0.1 that answers like a Slack incoming
  webhook (``200 ok``) and keeps every JSON payload posted to it, by path.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from .base import HOST, BackendError, Server, _get_json, find_binary, free_port, http

T = TypeVar("T")


def _wait(read: Callable[[], T], predicate: Callable[[T], bool], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: condition not met after {timeout:.0f} s; last: {value}")
        time.sleep(0.05)


# --- Alertmanager --------------------------------------------------------------------------------


class AlertmanagerServer(Server):
    """Alertmanager 0.25+ on 127.0.0.1:port with its data in ``workdir``.

    ``config`` is a configuration document (written as JSON, which is YAML) or the path of a
    configuration file. ``--cluster.listen-address=`` (empty) turns clustering off, so
    notifications go out without waiting for peers."""

    def __init__(self, workdir: Path, config: dict[str, Any] | Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        if isinstance(config, Path):
            self.config_path = config
        else:
            self.config_path = workdir / "alertmanager.yml"
            self.config_path.write_text(json.dumps(config, indent=2))
        argv = [
            find_binary("alertmanager", "prometheus-alertmanager"),
            f"--config.file={self.config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ]
        super().__init__("alertmanager", argv, port, workdir, "/-/ready")

    def post_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        """POST alerts to ``/api/v2/alerts`` (each: ``labels``, ``annotations``, optional
        ``startsAt``, ``endsAt``, ``generatorURL``), as Prometheus sends them."""
        status, body = http(
            "POST",
            self.url + "/api/v2/alerts",
            json.dumps(list(alerts)).encode(),
            {"Content-Type": "application/json"},
        )
        if status != 200:
            raise BackendError(f"alertmanager POST /api/v2/alerts -> {status}: {body[:500]!r}")

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: every alert with its ``status`` (``state``, ``inhibitedBy``,
        ``silencedBy``), computed at the time of the request."""
        result: list[dict[str, Any]] = _get_json(self.url + "/api/v2/alerts")
        return result

    def wait_for_alerts(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        return _wait(self.alerts, predicate, timeout, "alertmanager alerts")


# --- stand-ins for the receivers -----------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the test-owned SMTP server received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def body(self, subtype: str) -> str:
        """The decoded ``text/<subtype>`` part (``plain`` or ``html``)."""
        part = self.message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            raise AssertionError(f"no text/{subtype} part in: {self.message}")
        text: str = part.get_content()
        return text


class SmtpRecorder:
    """A test-owned SMTP server on 127.0.0.1 that records what it receives (not a mail relay).

    Uses aiosmtpd's controller (its own thread and event loop); no TLS, no authentication."""

    name = "smtp-recorder"

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.url = f"smtp://{HOST}:{self.port}"
        self._lock = threading.Lock()
        self._mail: list[ReceivedMail] = []
        self._controller = Controller(self, hostname=HOST, port=self.port)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # aiosmtpd calls handle_<VERB> hooks on the handler object by name
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = ReceivedMail(str(envelope.mail_from), tuple(envelope.rcpt_tos), message)
        with self._lock:
            self._mail.append(mail)
        return "250 Message accepted"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mail)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[ReceivedMail]:
        """Wait until at least ``count`` messages arrived; returns them all."""
        return _wait(self.messages, lambda m: len(m) >= count, timeout, "smtp recorder")

    def log_tail(self) -> str:
        return "\n".join(f"{m.rcpt_tos}: {m.subject}" for m in self.messages()) or "(no mail)"


class SlackRecorder:
    """A test-owned HTTP server on 127.0.0.1 standing in for Slack's incoming webhooks: it
    answers ``200 ok`` to every POST and keeps the JSON payloads by request path."""

    name = "slack-recorder"

    def __init__(self) -> None:
        recorder = self
        self._lock = threading.Lock()
        self._payloads: list[tuple[str, dict[str, Any]]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsed": body.decode("utf-8", "replace")}
                with recorder._lock:
                    recorder._payloads.append((self.path, payload))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slack-recorder", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def payloads(self, path: str | None = None) -> list[dict[str, Any]]:
        """Payloads received (at ``path`` only, when given), oldest first."""
        with self._lock:
            return [p for where, p in self._payloads if path is None or where == path]

    def wait_for(self, path: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` payloads arrived at ``path``; returns them."""
        return _wait(
            lambda: self.payloads(path), lambda p: len(p) >= count, timeout, f"slack {path}"
        )

    def log_tail(self) -> str:
        with self._lock:
            return "\n".join(f"{where}: {json.dumps(p)[:500]}" for where, p in self._payloads)
