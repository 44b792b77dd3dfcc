"""An Alertmanager webhook receiver that runs a configured command for chosen alerts.

Alertmanager POSTs a notification (webhook payload version 4) for a group of alerts. Each alert is
checked against the configured rules; a matching rule queues its command (an argv list, never a
shell string) with the alert's facts in ``MLOBS_ALERT_*`` environment variables. Commands run on
background worker threads, so the HTTP answer is immediate.

This module is the HTTP side: :class:`AlertWebhook` (the server, its shared-secret check and its
defaults) and :func:`read_secret_file`. The rules file is read by
:mod:`mlobs.alerts.webhook_config`, the request body by :mod:`mlobs.alerts.notification`;
:mod:`mlobs.alerts.actions` decides, with cooldown and de-duplication, runs the commands and
records every decision.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from mlobs import runtime, safety
from mlobs.alerts.actions import KILL_GRACE_S, ActionRunner, report_failure
from mlobs.alerts.notification import parse_notification
from mlobs.alerts.webhook_config import WebhookConfig

logger = logging.getLogger("mlobs.alerts")

REJECTED_TOTAL = "mlobs_alert_webhook_requests_rejected_total"
STATE_FILENAME = "alert-webhook-state.json"
DEFAULT_ADDR = "127.0.0.1"
DEFAULT_PORT = 9095
MAX_BODY_BYTES = 1 << 20


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    webhook: AlertWebhook

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hung up or timed out: not worth a traceback on stderr
        logger.debug("alert webhook: error serving %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "mlobs-alert-webhook"
    timeout = 30  # seconds a client may take to send its request

    def do_GET(self) -> None:
        if self.path in ("/-/healthy", "/-/ready"):
            self._reply(HTTPStatus.OK, {"status": "ok"})
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "POST notifications to /"})

    def do_POST(self) -> None:
        webhook = cast(_Server, self.server).webhook
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else -1
        except ValueError:
            length = -1
        if self.path.split("?", 1)[0] != "/":
            self._reject(HTTPStatus.NOT_FOUND, "not_found", "POST notifications to /", length)
        elif not webhook.authorized(self.headers.get("Authorization")):
            self._reject(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or wrong secret", length)
        elif length < 0:
            self._reject(HTTPStatus.LENGTH_REQUIRED, "bad_request", "Content-Length needed", 0)
        elif length > MAX_BODY_BYTES:
            self._reject(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "too_large",
                f"body over {MAX_BODY_BYTES} bytes",
                length,
            )
        else:
            try:
                alerts = parse_notification(json.loads(self.rfile.read(length)))
            except (ValueError, RecursionError) as exc:  # PayloadError is a ValueError
                self._reject(HTTPStatus.BAD_REQUEST, "bad_request", str(exc), 0)
                return
            try:
                summary = webhook.runner.handle(alerts)
            except Exception as exc:  # Alertmanager retries on a 5xx
                report_failure("alert_webhook.handle", exc)
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
                return
            self._reply(HTTPStatus.OK, summary)

    def _reject(self, status: HTTPStatus, reason: str, message: str, unread: int) -> None:
        safety.self_metrics.inc(REJECTED_TOTAL, reason)
        if status == HTTPStatus.UNAUTHORIZED:
            safety.warn(
                "alert_webhook.unauthorized",
                "mlobs: alert webhook refused a request from %s: %s",
                self.client_address[0],
                message,
            )
        # Read what the client is sending (up to a bound) so it gets the answer, not a reset.
        remaining = min(unread, 4 * MAX_BODY_BYTES)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        self._reply(status, {"error": message})

    def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="mlobs-alert-webhook"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("alert webhook %s: " + format, self.client_address[0], *args)


class AlertWebhook:
    """The receiver: an HTTP server on ``addr:port`` in front of an :class:`ActionRunner`.

    Args:
        config: the rules.
        secret: the shared secret Alertmanager sends as ``Authorization: Bearer <secret>``;
            ``None`` accepts every request (only for ``--insecure-no-secret``).
        addr: address to bind; loopback by default.
        port: port to bind; 0 picks a free one (see :attr:`url`).
        state_path: cooldown state file; by default the config's ``state_file``, else
            ``alert-webhook-state.json`` in the spool directory.
        clock: wall-clock seconds, for tests.
    """

    def __init__(
        self,
        config: WebhookConfig,
        secret: str | None,
        addr: str = DEFAULT_ADDR,
        port: int = DEFAULT_PORT,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret is not None and not secret:
            raise ValueError("the shared secret is empty")
        self._secret = secret.encode() if secret is not None else None
        if state_path is None:
            state_path = _default_state_path(config)
        self.runner = ActionRunner(config, state_path, clock)
        server_class = _Server6 if ":" in addr else _Server
        self._server = server_class((addr, port), _Handler)
        self._server.webhook = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def authorized(self, header: str | None) -> bool:
        if self._secret is None:
            return True
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self._secret)

    def start(self) -> AlertWebhook:
        self.runner.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long stop() waits for the loop to notice
            name="mlobs-alert-webhook",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = KILL_GRACE_S + 5.0) -> None:
        """Stop answering, then stop the commands (see :meth:`ActionRunner.stop`)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout)
            self._thread = None
        self._server.server_close()
        self.runner.stop(timeout)

    def __enter__(self) -> AlertWebhook:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _default_state_path(config: WebhookConfig) -> Path | None:
    if config.state_file == "":
        return None
    if config.state_file is not None:
        return Path(config.state_file)
    return Path(runtime.get().config.dir) / STATE_FILENAME


def read_secret_file(path: str | Path) -> str:
    """The secret in ``path``, without surrounding whitespace. Raises ``ValueError``."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc.strerror or exc}") from None
    if not secret:
        raise ValueError(f"the secret file {path} is empty")
    return secret
