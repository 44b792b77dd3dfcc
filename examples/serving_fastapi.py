"""Serving with mlobs: a FastAPI model endpoint behind the ASGI middleware, its requests
feeding a drift monitor. Requests are sent in-process (no server is started).

    MLOBS_DIR=/tmp/mlobs-demo python examples/serving_fastapi.py
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _show import show_runs
from fastapi import FastAPI
from fastapi.testclient import TestClient

import mlobs
from mlobs.drift import DriftMonitor
from mlobs.serving.drift_feed import DriftFeed
from mlobs.serving.middleware import MlobsASGIMiddleware

COLUMNS = ["age", "income"]


def make_app(monitor: DriftMonitor) -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        rows = body["instances"]
        return {"predictions": [float(row["income"] > 50_000) for row in rows]}

    # request and response series per route, and the bodies fed to the drift monitor
    app.add_middleware(
        MlobsASGIMiddleware, model="churn", model_version="3", drift=DriftFeed(monitor)
    )
    return app


def main() -> None:
    rng = np.random.default_rng(0)
    training = {"age": rng.normal(40, 10, 5000), "income": rng.normal(50_000, 15_000, 5000)}
    with mlobs.run("serving-churn"):
        monitor = DriftMonitor(mlobs.drift.profile(training), window=200, name="churn")
        client = TestClient(make_app(monitor))
        for shift in (0.0, 0.0, 15.0):  # the third window's ages drift
            rows = [
                {
                    "age": float(rng.normal(40 + shift, 10)),
                    "income": float(rng.normal(50_000, 15_000)),
                }
                for _ in range(200)
            ]
            assert client.post("/predict", json={"instances": rows}).status_code == 200
        monitor.close()  # waits for the windows still being compared
        print(
            "drifted columns of the last window:",
            monitor.last.drifted_columns if monitor.last else None,
        )
    show_runs()


if __name__ == "__main__":
    main()
