"""ASGI and WSGI middleware recording every request of a model-serving app (see
:mod:`mlobs.serving.names` for what is recorded).

Routes are labelled by their template (``/predict/{model_id}``), never the raw path: FastAPI's
matched route, or Starlette's route whose endpoint handled the request, or Flask's URL rule;
otherwise the path with id-like segments replaced by ``{id}``. Past ``max_routes`` templates,
requests are labelled ``other``, so a scanner cannot blow up the number of series.

With ``drift=`` a :class:`mlobs.serving.drift_feed.DriftFeed` receives each request's and
response's JSON bodies (up to ``max_body_bytes``) for online drift monitoring.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.serving.recorder import RequestRecorder, template_path

if TYPE_CHECKING:
    from mlobs.serving.drift_feed import DriftFeed

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1 << 20
"""Bodies larger than this are not handed to a drift feed (they are still served)."""
SKIP_PATHS = ("/metrics", "/health", "/healthz", "/livez", "/readyz")
"""Paths not recorded by default: the metrics endpoint and health checks."""


class MlobsASGIMiddleware:
    """ASGI middleware: ``app = MlobsASGIMiddleware(app, model="resnet", model_version="3")``,
    or with FastAPI/Starlette ``app.add_middleware(MlobsASGIMiddleware, model="resnet")``.

    Args:
        app: the ASGI application.
        model: the ``model`` label of every series.
        model_version: the ``model_version`` label.
        max_routes: distinct route templates before the rest are labelled ``other``.
        skip_paths: paths not recorded (health checks, the metrics endpoint).
        drift: a feed that receives request and response bodies for drift monitoring.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        model: str = "",
        model_version: str = "",
        max_routes: int = 200,
        skip_paths: Iterable[str] = SKIP_PATHS,
        drift: DriftFeed | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.recorder = RequestRecorder(model, model_version, max_routes)
        self.skip_paths = frozenset(skip_paths)
        self.drift = drift
        self.max_body_bytes = max_body_bytes
        self._endpoint_routes: dict[Any, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.skip_paths:
            await self.app(scope, receive, send)
            return
        recorder = self.recorder
        start = recorder.started()
        status: list[int] = []
        sent = [0]
        request_body: list[bytes] | None = [] if self.drift is not None else None
        response_body: list[bytes] | None = [] if self.drift is not None else None
        limit = self.max_body_bytes

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                sent[0] += len(body)
                if response_body is not None and sent[0] <= limit:
                    response_body.append(body)
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if request_body is not None and message["type"] == "http.request":
                request_body.append(message.get("body", b""))
            return message

        raised = False
        try:
            await self.app(
                scope, receive_wrapper if request_body is not None else receive, send_wrapper
            )
        except BaseException:
            raised = True
            raise
        finally:
            recorder.finished(
                start,
                self._route(scope),
                str(scope.get("method", "")),
                status[0] if status else None,
                raised,
                _content_length(scope),
                sent[0],
            )
            fed = not raised and status and status[0] < 400 and sent[0] <= limit
            if fed and self.drift is not None and request_body is not None and response_body:
                self.drift.feed(b"".join(request_body), b"".join(response_body))

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")  # FastAPI puts the matched route here
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        endpoint = scope.get("endpoint")  # Starlette: find the route of the endpoint that ran
        if endpoint is not None:
            found = self._endpoint_routes.get(endpoint)
            if found is None:
                found = _starlette_route(scope.get("app"), endpoint) or ""
                self._endpoint_routes[endpoint] = found
            if found:
                return found
        return template_path(str(scope.get("path", "")))


def _starlette_route(app: Any, endpoint: Any) -> str | None:
    for route in getattr(app, "routes", ()) or ():
        if getattr(route, "endpoint", None) is endpoint:
            path = getattr(route, "path", None)
            return path if isinstance(path, str) else None
    return None


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers") or ():
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MlobsWSGIMiddleware:
    """WSGI middleware: ``app.wsgi_app = MlobsWSGIMiddleware(app.wsgi_app, model="resnet")`` for
    Flask, or around any WSGI callable. Arguments as for :class:`MlobsASGIMiddleware`, plus
    ``route_for(environ) -> str | None`` for frameworks whose route template mlobs cannot find.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        model: str = "",
        model_version: str = "",
        max_routes: int = 200,
        skip_paths: Iterable[str] = SKIP_PATHS,
        route_for: Callable[[dict[str, Any]], str | None] | None = None,
        drift: DriftFeed | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.recorder = RequestRecorder(model, model_version, max_routes)
        self.skip_paths = frozenset(skip_paths)
        self.route_for = route_for
        self.drift = drift
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") in self.skip_paths:
            return self.app(environ, start_response)
        recorder = self.recorder
        start = recorder.started()
        status: list[int] = []

        def start_wrapper(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            try:
                status.append(int(status_line.split(" ", 1)[0]))
            except ValueError:
                status.append(500)
            return start_response(status_line, headers, exc_info)

        request_body = self._capture_request(environ) if self.drift is not None else None
        try:
            chunks = self.app(environ, start_wrapper)
        except BaseException:
            self._finish(environ, start, status, True, 0)
            raise
        capture = self.drift is not None and request_body is not None

        def done(size: int, raised: bool, response: bytes | None) -> None:
            self._finish(environ, start, status, raised, size)
            fed = not raised and status and status[0] < 400
            if fed and self.drift is not None and request_body is not None and response:
                self.drift.feed(request_body, response)

        return _CountedBody(chunks, done, self.max_body_bytes if capture else 0)

    def _capture_request(self, environ: dict[str, Any]) -> bytes | None:
        """Read the request body for the drift feed and put it back for the app."""
        import io

        length = environ.get("CONTENT_LENGTH")
        try:
            size = int(length) if length else 0
        except ValueError:
            return None
        if size <= 0 or size > self.max_body_bytes:
            return None
        data: bytes = environ["wsgi.input"].read(size)
        environ["wsgi.input"] = io.BytesIO(data)
        return data

    def _finish(
        self, environ: dict[str, Any], start: float, status: list[int], raised: bool, size: int
    ) -> None:
        try:
            route = self._route(environ)
        except Exception as exc:
            safety.report("serving.route", exc)
            route = template_path(str(environ.get("PATH_INFO", "")))
        length = environ.get("CONTENT_LENGTH")
        request_bytes = int(length) if length and str(length).isdigit() else None
        self.recorder.finished(
            start,
            route,
            str(environ.get("REQUEST_METHOD", "")),
            status[0] if status else None,
            raised,
            request_bytes,
            size,
        )

    def _route(self, environ: dict[str, Any]) -> str:
        if self.route_for is not None:
            found = self.route_for(environ)
            if found:
                return found
        rule = _flask_rule(self.app, environ)
        if rule:
            return rule
        return template_path(str(environ.get("PATH_INFO", "")))


class _CountedBody:
    """The app's response iterable, counting bytes as the server sends them. The request is
    recorded once: when the last chunk has been handed to the server, or when the server closes
    the iterable (the end of a WSGI request) if that comes first, streaming or not."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        done: Callable[[int, bool, bytes | None], None],
        capture_bytes: int,
    ) -> None:
        self._chunks = chunks
        self._done = done
        self._capture = capture_bytes
        self._kept: list[bytes] = []
        self._size = 0
        self._raised = False
        self._recorded = False
        self._closed = False

    def __iter__(self) -> Any:
        try:
            for chunk in self._chunks:
                self._size += len(chunk)
                if self._capture and self._size <= self._capture:
                    self._kept.append(chunk)
                yield chunk
        except GeneratorExit:  # the server stopped iterating (a client gone): close() records
            raise
        except BaseException:
            self._raised = True
            self._record()
            raise
        self._record()

    def _record(self) -> None:
        if self._recorded:
            return
        self._recorded = True
        kept = b"".join(self._kept) if self._capture and self._size <= self._capture else None
        self._done(self._size, self._raised, kept)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._record()


def _flask_rule(app: Any, environ: dict[str, Any]) -> str | None:
    """The URL rule a werkzeug-routed app (Flask) matches for this request: the wrapped callable
    is ``flask_app.wsgi_app``, whose owner holds the ``url_map``."""
    owner = getattr(app, "__self__", app)
    url_map = getattr(owner, "url_map", None)
    if url_map is None:
        return None
    try:
        rule, _ = url_map.bind_to_environ(environ).match(return_rule=True)
    except Exception:  # no rule matched (404, 405): the caller templates the raw path
        return None
    text = getattr(rule, "rule", None)
    return text if isinstance(text, str) else None
