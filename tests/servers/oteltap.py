"""The oteltap OTLP/HTTP receiver, run in the test process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from .base import HOST, READY_TIMEOUT, BackendError, free_port

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
