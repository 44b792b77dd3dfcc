"""A test-owned OTLP receiver: a STAND-IN, not a real collector.

No real OTLP/gRPC receiver can run on the test machines (vmagent and oteltap speak OTLP/HTTP
only), so :class:`OtlpStandin` serves the OTLP services itself: gRPC on ``grpc_endpoint`` (grpcio
with the service stubs of ``opentelemetry-proto``) and HTTP/protobuf on ``http_endpoint``
(``/v1/metrics``, ``/v1/logs``, ``/v1/traces``). It answers every request with success and keeps
each one whole, decoded, with the gRPC metadata or HTTP headers it came with, so that tests can
check what no real receiver here shows: resource attributes of logs and spans, and headers.

``fail_with`` makes it answer with an error (a gRPC status code, or an HTTP status) instead.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

HOST = "127.0.0.1"

_REQUESTS = {
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "traces": trace_service_pb2.ExportTraceServiceRequest,
}
_RESPONSES = {
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
    "traces": trace_service_pb2.ExportTraceServiceResponse,
}


@dataclass
class Received:
    signal: str
    """``metrics``, ``logs`` or ``traces``."""
    transport: str
    """``grpc`` or ``http``."""
    request: Any
    """The decoded ``Export*ServiceRequest``."""
    headers: dict[str, str] = field(default_factory=dict)
    """gRPC metadata or HTTP headers, names in lower case."""


def value_of(value: AnyValue) -> Any:
    """A Python value from an OTLP ``AnyValue``."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    """A dict from repeated ``KeyValue``."""
    out: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        out[pair.key] = value_of(pair.value)
    return out


class OtlpStandin:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail_with: int | None = None
        """A gRPC ``StatusCode`` value or an HTTP status to answer with instead of success."""
        self._changed = threading.Condition()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _Servicer(self, "metrics"), self._grpc
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Servicer(self, "logs"), self._grpc)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _Servicer(self, "traces"), self._grpc
        )
        self.grpc_port = self._grpc.add_insecure_port(f"{HOST}:0")
        self.grpc_endpoint = f"http://{HOST}:{self.grpc_port}"
        self._http = ThreadingHTTPServer((HOST, 0), _http_handler(self))
        self.http_port = self._http.server_address[1]
        self.http_endpoint = f"http://{HOST}:{self.http_port}"
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="otlp-standin-http", daemon=True
        )

    def start(self) -> OtlpStandin:
        self._grpc.start()
        self._http_thread.start()
        return self

    def close(self) -> None:
        self._grpc.stop(grace=None)
        self._http.shutdown()
        self._http.server_close()

    def add(self, item: Received) -> None:
        with self._changed:
            self.received.append(item)
            self._changed.notify_all()

    def requests(self, signal: str, transport: str | None = None) -> list[Received]:
        with self._changed:
            return [
                r
                for r in self.received
                if r.signal == signal and (transport is None or r.transport == transport)
            ]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 15.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self.received)):
                left = deadline - time.monotonic()
                if left <= 0:
                    signals = [(r.signal, r.transport) for r in self.received]
                    raise TimeoutError(f"stand-in: condition not met; received {signals}")
                self._changed.wait(left)
            return list(self.received)


class _Servicer:
    """One OTLP gRPC service (metrics, logs or traces): ``Export`` records the request."""

    def __init__(self, standin: OtlpStandin, signal: str) -> None:
        self.standin = standin
        self.signal = signal

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.standin.fail_with is not None:
            context.abort(_grpc_status(self.standin.fail_with), "stand-in failure")
        headers = {k.lower(): str(v) for k, v in context.invocation_metadata()}
        self.standin.add(Received(self.signal, "grpc", request, headers))
        return _RESPONSES[self.signal]()


def _grpc_status(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


def _http_handler(standin: OtlpStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            signal = self.path.rstrip("/").rsplit("/", 1)[-1]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if signal not in _REQUESTS:
                self._reply(404, b"")
                return
            if standin.fail_with is not None:
                self._reply(standin.fail_with, b"stand-in failure")
                return
            request = _REQUESTS[signal].FromString(body)
            headers = {k.lower(): v for k, v in self.headers.items()}
            standin.add(Received(signal, "http", request, headers))
            self._reply(200, _RESPONSES[signal]().SerializeToString())

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def running_standin() -> Iterator[OtlpStandin]:
    standin = OtlpStandin().start()
    try:
        yield standin
    finally:
        standin.close()
