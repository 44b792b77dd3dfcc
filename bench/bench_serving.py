"""Serving middleware benchmark of issue #8: the per-request cost of mlobs' ASGI middleware on a
FastAPI app, against the same app bare and instrumented by prometheus-fastapi-instrumentator, in
the same run.

Run from the repository root::

    python bench/bench_serving.py            # full run, prints the tables
    python bench/bench_serving.py --quick    # fewer requests, a smoke test (cannot --write)
    python bench/bench_serving.py --write    # full run, rewrites the serving block of BENCHMARKS.md

Each app is called in-process through the ASGI interface (no socket, no HTTP parsing), so the
difference between the cases is the instrumentation itself and not network noise: a request is
one ``await app(scope, receive, send)`` of a GET with a path parameter or a POST with a small JSON
body, alternating. mlobs records into its spool with the flusher running; the instrumentator
updates its prometheus-client metrics. Cases are interleaved (order rotated each repeat) after a
warm-up; garbage collection stays on.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _report import table, verdict
from _sinks import finish, parse_args, rotated, stage
from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator

import mlobs
from mlobs.serving.middleware import MlobsASGIMiddleware

PEERS = ("fastapi", "starlette", "prometheus-fastapi-instrumentator", "prometheus-client")
CASES = ("bare", "mlobs", "instrumentator")
LABELS = {
    "bare": "FastAPI app alone",
    "mlobs": "+ mlobs `MlobsASGIMiddleware`",
    "instrumentator": "+ `Instrumentator().instrument(app)`",
}
TARGET_OVERHEAD_VS_INSTRUMENTATOR = 1.0
BODY = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]}).encode()


def make_app(case: str) -> Any:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/predict")
    async def predict(body: dict[str, Any]) -> dict[str, Any]:
        return {"predictions": [sum(row) for row in body["instances"]]}

    if case == "mlobs":
        app.add_middleware(MlobsASGIMiddleware, model="bench", model_version="1")
    elif case == "instrumentator":
        Instrumentator().instrument(app)
    return app


def _scope(i: int) -> dict[str, Any]:
    post = i % 2 == 1
    path = "/predict" if post else f"/items/{i}"
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    if post:
        headers.append((b"content-length", str(len(BODY)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST" if post else "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _drive(app: Any, n: int) -> float:
    """Seconds for ``n`` requests, one after another."""

    async def send(message: dict[str, Any]) -> None:
        return None

    start = time.perf_counter()
    for i in range(n):
        body = BODY if i % 2 else b""

        async def receive(body: bytes = body) -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        await app(_scope(i), receive, send)
    return time.perf_counter() - start


@dataclass
class Result:
    n: int
    us: dict[str, list[float]]
    """Microseconds per request, one value per repeat, by case."""

    def overhead(self, case: str) -> list[float]:
        return [c - b for c, b in zip(self.us[case], self.us["bare"], strict=True)]


def bench(n: int, repeats: int) -> Result:
    apps = {case: make_app(case) for case in CASES}
    loop = asyncio.new_event_loop()
    try:
        for case in CASES:  # warm-up: routes compiled, metrics created, caches filled
            loop.run_until_complete(_drive(apps[case], min(n, 2000)))
        us: dict[str, list[float]] = {case: [] for case in CASES}
        for rep in range(repeats):
            for case in rotated(CASES, rep):
                seconds = loop.run_until_complete(_drive(apps[case], n))
                us[case].append(seconds / n * 1e6)
    finally:
        loop.close()
    return Result(n, us)


def _fmt(values: Sequence[float], spec: str = ".1f") -> str:
    med = statistics.median(values)
    return f"{med:{spec}} ({min(values):{spec}}–{max(values):{spec}})"


def report(result: Result) -> tuple[str, bool]:
    rows = []
    for case in CASES:
        overhead = "" if case == "bare" else _fmt(result.overhead(case))
        rows.append([LABELS[case], _fmt(result.us[case]), overhead])
    ratios = [
        m / i
        for m, i in zip(result.overhead("mlobs"), result.overhead("instrumentator"), strict=True)
        if i > 0
    ]
    ok = bool(ratios) and statistics.median(ratios) <= TARGET_OVERHEAD_VS_INSTRUMENTATOR
    text = "\n\n".join(
        [
            "### Per-request cost, in-process ASGI",
            f"{result.n:,} requests per repeat (GET with a path parameter and POST with a JSON "
            f"body, alternating), {len(result.us['bare'])} repeats, cases interleaved after a "
            "warm-up. Microseconds per request; the overhead is the case minus the bare app in "
            "the same repeat. Median (min–max).",
            table(["case", "µs per request", "overhead over bare, µs"], rows),
            table(
                [
                    "mlobs overhead / instrumentator overhead (per repeat)",
                    f"≤ {TARGET_OVERHEAD_VS_INSTRUMENTATOR}",
                ],
                [[_fmt(ratios, ".2f") if ratios else "n/a", verdict(ok)]],
            ),
        ]
    )
    return text, ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, "serving", argv, quick_help="fewer requests, a smoke test")
    n, repeats = (2_000, 3) if args.quick else (20_000, 7)
    with tempfile.TemporaryDirectory() as spool:
        mlobs.configure(dir=spool, gpu="off", capture_logs=False)
        try:
            with stage(f"serving N={n:,}"):
                result = bench(n, repeats)
        finally:
            mlobs.shutdown()
    body, ok = report(result)
    return finish(
        args,
        "serving",
        "## Serving middleware (issue #8)",
        PEERS,
        [("mlobs middleware overhead vs the instrumentator's", ok)],
        [body],
        quick_note="too few requests to quote",
    )


if __name__ == "__main__":
    sys.exit(main())
