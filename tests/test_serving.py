"""Serving middleware under real HTTP servers on loopback: a FastAPI app under uvicorn (ASGI) and a
Flask app under werkzeug's server (WSGI), driven by real HTTP clients, a few thousand requests."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import mlobs
from mlobs.serving import names as n
from mlobs.serving.drift_feed import DriftFeed
from mlobs.serving.middleware import MlobsASGIMiddleware, MlobsWSGIMiddleware
from mlobs.serving.recorder import template_path
from mlobs.testing import InMemoryExporter

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
flask = pytest.importorskip("flask")


class Rows:
    """A drift monitor's stand-in: keeps what the feed hands it."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.predictions: list[Any] = []
        self.lock = threading.Lock()

    def update(self, rows: Any, predictions: Any = None) -> None:
        with self.lock:
            self.rows.extend(rows)
            self.predictions.extend(predictions or [])


def fastapi_app(monitor: Rows, max_routes: int = 200) -> Any:
    app = fastapi.FastAPI()

    @app.post("/predict/{model_id}")
    def predict(model_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return {"predictions": [sum(row.values()) for row in body["instances"]]}

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        if item_id == 13:
            raise RuntimeError("unlucky")
        if item_id == 7:
            raise fastapi.HTTPException(status_code=503, detail="warming up")
        return {"id": item_id}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(
        MlobsASGIMiddleware,
        model="fraud",
        model_version="3",
        max_routes=max_routes,
        drift=DriftFeed(monitor),
    )
    return app


@pytest.fixture
def served(sink: InMemoryExporter) -> Iterator[tuple[str, Rows]]:
    monitor = Rows()
    config = uvicorn.Config(
        fastapi_app(monitor, max_routes=4), host="127.0.0.1", port=0, log_level="critical"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", monitor
    server.should_exit = True
    thread.join(10)


def call(url: str, body: dict[str, Any] | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if body else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_recorded(sink: InMemoryExporter, total: int) -> None:
    """Wait until ``total`` requests are in the sink: a request is recorded when the app's
    call returns, which can be just after the client has its response."""
    deadline = time.monotonic() + 10
    while mlobs.flush() and len(sink.metrics(n.REQUESTS)) < total:
        assert time.monotonic() < deadline, len(sink.metrics(n.REQUESTS))
        time.sleep(0.01)


def counts(sink: InMemoryExporter, name: str) -> Counter[tuple[tuple[str, str], ...]]:
    out: Counter[tuple[tuple[str, str], ...]] = Counter()
    for r in sink.metrics(name):
        out[tuple(sorted(r.attrs.items()))] += int(r.value or 0)
    return out


def test_fastapi_under_uvicorn(served: tuple[str, Rows], sink: InMemoryExporter) -> None:
    base, monitor = served
    urls = [f"{base}/items/{i}" for i in range(20, 2015)] + [f"{base}/items/13"] * 5
    urls += [f"{base}/items/7"] * 3 + [f"{base}/nowhere/{i}" for i in range(10)]
    urls += [f"{base}/health"] * 50
    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(pool.map(call, urls))
        posted = list(
            pool.map(
                lambda i: call(f"{base}/predict/{i}", {"instances": [{"a": i, "b": 1}]}),
                range(500),
            )
        )
    assert set(posted) == {200}
    assert statuses[200] == 1995 + 50 and statuses[500] == 5 and statuses[503] == 3
    wait_recorded(sink, 2513)
    requests = counts(sink, n.REQUESTS)
    base_labels = (("model", "fraud"), ("model_version", "3"))

    def key(**labels: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*base_labels, *labels.items())))

    # route templates, never raw paths; ids past the 2,000th are all one series
    assert requests[key(route="/items/{item_id}", method="GET", code="200")] == 1995
    assert requests[key(route="/items/{item_id}", method="GET", code="500")] == 5
    assert requests[key(route="/items/{item_id}", method="GET", code="503")] == 3
    assert requests[key(route="/predict/{model_id}", method="POST", code="200")] == 500
    assert requests[key(route="/nowhere/{id}", method="GET", code="404")] == 10
    assert sum(requests.values()) == 2513  # the health checks are not recorded
    errors = counts(sink, n.ERRORS)
    assert errors[key(route="/items/{item_id}", error_class="server")] == 3
    assert errors[key(route="/items/{item_id}", error_class="exception")] == 5
    assert errors[key(route="/nowhere/{id}", error_class="client")] == 10
    durations = [r.value for r in sink.metrics(n.DURATION)]
    assert len(durations) == 2513 and all(0 < d < 10 for d in durations if d is not None)
    sizes = [r.value for r in sink.metrics(n.REQUEST_SIZE)]
    assert len(sizes) == 500  # the POSTs had a body
    in_flight = sink.metrics(n.IN_FLIGHT)
    assert in_flight and in_flight[-1].value == 0.0
    # the drift feed got every input row and every prediction
    assert len(monitor.rows) == 500 and sorted(monitor.predictions) == list(range(1, 501))


def test_route_cardinality_is_capped() -> None:
    from mlobs.serving.recorder import OTHER_ROUTE, RequestRecorder

    recorder = RequestRecorder(max_routes=3)
    seen = [recorder.route(f"/r{i}") for i in range(10)]
    assert seen[:3] == ["/r0", "/r1", "/r2"] and set(seen[3:]) == {OTHER_ROUTE}
    assert recorder.route("/r1") == "/r1"
    assert template_path("/users/42/orders/9f1c2b3a-1111-4222-8333-444455556666") == (
        "/users/{id}/orders/{id}"
    )


@pytest.fixture
def flask_served(sink: InMemoryExporter) -> Iterator[tuple[str, Rows]]:
    from werkzeug.serving import make_server

    monitor = Rows()
    app = flask.Flask("served")

    @app.post("/predict")
    def predict() -> Any:
        rows = flask.request.get_json()["instances"]
        return {"predictions": [len(r) for r in rows]}

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> Any:
        if user_id == 0:
            raise ValueError("no user 0")
        return {"id": user_id}

    @app.get("/stream")
    def stream() -> Any:
        return flask.Response((b"x" * 100 for _ in range(10)), mimetype="text/plain")

    app.wsgi_app = MlobsWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, model="churn", drift=DriftFeed(monitor)
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", monitor
    server.shutdown()
    thread.join(10)


def test_flask_under_werkzeug(flask_served: tuple[str, Rows], sink: InMemoryExporter) -> None:
    base, monitor = flask_served
    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(pool.map(call, [f"{base}/users/{i}" for i in range(1000)]))
        posts = list(
            pool.map(lambda i: call(f"{base}/predict", {"instances": [[1, 2], [3]]}), range(200))
        )
    assert statuses == Counter({200: 999, 500: 1}) and set(posts) == {200}
    assert call(f"{base}/stream") == 200
    # the server closes the body (which records the request) after the client has read it
    wait_recorded(sink, 1201)
    requests = counts(sink, n.REQUESTS)
    assert (
        requests[
            (
                ("code", "200"),
                ("method", "GET"),
                ("model", "churn"),
                ("model_version", ""),
                ("route", "/users/<int:user_id>"),
            )
        ]
        == 999
    )
    routes = {dict(k)["route"] for k in requests}
    assert routes == {"/users/<int:user_id>", "/predict", "/stream"}
    errors = counts(sink, n.ERRORS)
    assert sum(errors.values()) == 1 and dict(next(iter(errors)))["error_class"] == "server"
    streamed = [r.value for r in sink.metrics(n.RESPONSE_SIZE) if r.attrs["route"] == "/stream"]
    assert streamed == [1000.0]  # counted as the server sent it, chunk by chunk
    assert len(monitor.rows) == 400 and monitor.predictions.count(2) == 200


def test_a_body_that_is_not_json_is_counted_not_raised(sink: InMemoryExporter) -> None:
    from mlobs import safety

    monitor = Rows()
    feed = DriftFeed(monitor)
    mlobs.configure(strict=False)
    feed.feed(b"not json", b"{}")
    feed.feed(b"{}", b"{}")  # no rows: an object is one row; predictions missing is fine
    assert safety.self_metrics.get(safety.VALUES_REJECTED, "serving_drift") == 1
    assert monitor.rows == [{}]
