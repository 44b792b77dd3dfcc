"""Feeding served requests to a drift monitor: inputs from the request body, predictions from the
response body, both JSON.

By default the shapes of the common serving protocols are understood: ``{"instances": [...]}``
and ``{"inputs": [...]}`` (TensorFlow Serving, KServe v1), ``{"features": ...}``, a bare list of
rows, or one row as an object; predictions from ``{"predictions": [...]}``, ``{"prediction": x}``
or a bare list. Other shapes: pass ``inputs=`` and ``predictions=`` functions of the decoded JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from mlobs import safety

FEED_ERRORS = "serving_drift"
"""The ``reason`` label under which bodies that could not be fed are counted as rejected."""


class Monitor(Protocol):
    """What a feed needs of a drift monitor (:class:`mlobs.drift.DriftMonitor` is one)."""

    def update(self, rows: Any, predictions: Any = None) -> None: ...


def default_inputs(body: Any) -> list[Any] | None:
    if isinstance(body, dict):
        for key in ("instances", "inputs", "features", "data"):
            if key in body:
                value = body[key]
                return value if isinstance(value, list) else [value]
        return [body]
    if isinstance(body, list):
        return body
    return None


def default_predictions(body: Any) -> list[Any] | None:
    if isinstance(body, dict):
        for key in ("predictions", "prediction", "outputs", "output"):
            if key in body:
                value = body[key]
                return value if isinstance(value, list) else [value]
        return None
    if isinstance(body, list):
        return body
    return None


class DriftFeed:
    """Decodes each request/response pair and hands rows and predictions to ``monitor``.

    Never raises into the request: a body that is not JSON, or has no rows, is counted
    (``mlobs_values_rejected_total{reason="serving_drift"}``) and skipped.
    """

    def __init__(
        self,
        monitor: Monitor,
        *,
        inputs: Callable[[Any], Any] = default_inputs,
        predictions: Callable[[Any], Any] = default_predictions,
    ) -> None:
        self.monitor = monitor
        self.inputs = inputs
        self.predictions = predictions

    def feed(self, request_body: bytes, response_body: bytes) -> None:
        try:
            rows = self.inputs(json.loads(request_body)) if request_body else None
            if not rows:
                safety.reject(FEED_ERRORS, "a request had no input rows to monitor")
                return
            preds = self.predictions(json.loads(response_body)) if response_body else None
            self.monitor.update(rows, preds)
        except ValueError:
            safety.reject(FEED_ERRORS, "a request or response body is not JSON")
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("serving.drift_feed", exc)
