"""The demo's second half: the trained model served over WSGI, with drift and quality watched.

A small WSGI app answers ``POST /predict`` with the model's predictions, wrapped in mlobs'
middleware; requests are made in-process (no port is opened). Half-way through, the incoming data
shifts on one feature, so the drift monitor has something to find. Ground truth for each served
prediction "arrives" a little later and is joined by prediction id into quality windows. A few
malformed requests and a missing route show up as errors.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.util import setup_testing_defaults

import numpy as np

from mlobs.drift import DriftMonitor, Profile
from mlobs.quality import LateLabels
from mlobs.serving.drift_feed import DriftFeed
from mlobs.serving.middleware import MlobsWSGIMiddleware

REQUESTS = 400
ROWS_PER_REQUEST = 10
WINDOW_ROWS = 1000
"""Rows per drift window: below about a thousand rows the sampling noise of a distance alone
nears its threshold (0.1), and windows drift by chance."""
SHIFTED_FEATURE = "f0"
LABEL_LAG = 40
"""Requests between a prediction and its ground truth."""


@dataclass
class ServingResult:
    requests: int = 0
    errors: int = 0
    drift_windows: int = 0
    drifted_windows: int = 0
    drifted_features: tuple[str, ...] = ()
    quality_windows: int = 0
    last_accuracy: float | None = None


def feature_names(count: int) -> list[str]:
    return [f"f{i}" for i in range(count)]


def make_app(predict: Callable[[np.ndarray], np.ndarray]) -> Callable[..., Iterable[bytes]]:
    """``POST /predict`` with ``{"instances": [[x0, x1, ...], ...]}`` → ``{"predictions": [...]}``;
    any other path is a 404, a body that is not JSON a 400."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/predict":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        size = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = json.loads(environ["wsgi.input"].read(size))
            rows = np.asarray(body["instances"], dtype=float)
        except (ValueError, KeyError, TypeError):
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b'expected {"instances": [[...], ...]}']
        answer = json.dumps({"predictions": predict(rows).tolist()}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [answer]

    return app


def call(app: Callable[..., Iterable[bytes]], path: str, body: bytes) -> int:
    """One in-process request through the WSGI stack; returns the status code."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    status: list[int] = []
    response = app(environ, lambda line, headers, exc=None: status.append(int(line[:3])))
    try:
        for _ in response:
            pass
    finally:
        close = getattr(response, "close", None)
        if close is not None:
            close()
    return status[0]


def serve(
    predict: Callable[[np.ndarray], np.ndarray],
    reference: Profile,
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    reference_predictions: np.ndarray | None = None,
    seed: int = 11,
) -> ServingResult:
    """Serve ``REQUESTS`` requests drawn from ``x_pool``; the second half shifted on one feature.
    Records go to the active run."""
    rng = np.random.default_rng(seed)
    names = feature_names(x_pool.shape[1])
    result = ServingResult()
    windows: list[Any] = []
    monitor = DriftMonitor(
        reference,
        name="demo-serving",
        window=WINDOW_ROWS,
        background=False,  # the demo waits for every window anyway
        on_window=windows.append,
        prediction_reference=reference_predictions,
    )

    def rows_as_dicts(body: Any) -> list[dict[str, float]]:
        return [dict(zip(names, row, strict=True)) for row in body["instances"]]

    app = MlobsWSGIMiddleware(
        make_app(predict),
        model="softmax-regression",
        model_version="1.0",
        drift=DriftFeed(monitor, inputs=rows_as_dicts),
    )
    late = LateLabels("classification", window=WINDOW_ROWS)
    truth: list[tuple[str, int]] = []
    quality: list[Any] = []
    shift = 1.5 * float(x_pool[:, 0].std())
    for i in range(REQUESTS):
        idx = rng.integers(0, len(y_pool), ROWS_PER_REQUEST)
        x = x_pool[idx].copy()
        if i >= REQUESTS // 2:
            x[:, 0] += shift  # the world changed under the model
        body = json.dumps({"instances": x.tolist()}).encode()
        status = call(app, "/predict", body)
        result.requests += 1
        if status >= 400:
            result.errors += 1
            continue
        for j, (row_pred, row_true) in enumerate(zip(predict(x), y_pool[idx], strict=True)):
            prediction_id = f"{i}-{j}"
            late.predicted(prediction_id, int(row_pred))
            truth.append((prediction_id, int(row_true)))
        while len(truth) > LABEL_LAG * ROWS_PER_REQUEST:  # labels arrive some requests later
            quality.append(late.observed(*truth.pop(0)))
    for prediction_id, label in truth:
        quality.append(late.observed(prediction_id, label))
    for path, body in (("/predict", b"{not json"), ("/predict", b"{}"), ("/v2/predict", b"{}")):
        result.requests += 1
        result.errors += call(app, path, body) >= 400
    monitor.evaluate()
    quality.append(late.flush())
    reports = [q for q in quality if q is not None]
    result.drift_windows = len(windows)
    result.drifted_windows = sum(1 for w in windows if w.drifted_columns)
    result.drifted_features = tuple(sorted({c for w in windows for c in w.drifted_columns}))
    result.quality_windows = len(reports)
    result.last_accuracy = getattr(reports[-1], "accuracy", None) if reports else None
    return result
