"""DriftMonitor: windows by count and by time, per-feature and dataset verdicts, prediction drift,
metrics and one event per window in the spool, bad input counted and never raised."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlobs
from mlobs import safety
from mlobs.drift import DriftMonitor, names, profile
from mlobs.testing import InMemoryExporter

pytest.importorskip("scipy")


def frame(n: int, rng: np.random.Generator, shift: float = 0.0) -> dict[str, Any]:
    return {
        "age": rng.normal(40 + shift * 10, 10, n),
        "income": rng.normal(0, 1, n),
        "city": rng.choice(["a", "b", "c"], n).tolist(),
    }


def by_feature(sink: InMemoryExporter, name: str) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {}
    for r in sink.metrics(name):
        out.setdefault(r.attrs.get("feature", ""), []).append(r.value)
    return out


def test_windows_by_count_flag_the_feature_that_moved(sink: InMemoryExporter) -> None:
    rng = np.random.default_rng(1)
    reference = profile(frame(20_000, rng))
    with mlobs.run("serve"):
        monitor = DriftMonitor(reference, name="fraud", window=2000, background=False)
        monitor.update(frame(2000, rng))  # the same distribution
        for _ in range(4):  # half a standard deviation on age, in batches
            monitor.update(frame(500, rng, shift=0.5))
    mlobs.flush()
    assert monitor.windows == 2
    detected = by_feature(sink, names.DETECTED)
    assert detected == {"age": [0.0, 1.0], "income": [0.0, 0.0], "city": [0.0, 0.0]}
    scores = sink.metrics(names.SCORE)
    assert {(r.attrs["feature"], r.attrs["test"]) for r in scores} == {
        ("age", "wasserstein"),
        ("income", "wasserstein"),
        ("city", "jensen_shannon"),
    }
    assert all(r.attrs["monitor"] == "fraud" for r in scores)
    p_values = {r.attrs["test"] for r in sink.metrics(names.P_VALUE)}
    assert p_values == {"ks", "chi_square"}
    assert sink.values(names.SHARE_DRIFTED) == [0.0, pytest.approx(1 / 3)]
    assert sink.values(names.DATASET_DETECTED) == [0.0, 0.0]
    assert sink.values(names.WINDOW_ROWS) == [2000.0, 2000.0]
    events = sink.events(names.WINDOW_EVENT)
    assert len(events) == 2
    assert events[1].attrs["result"]["drifted_columns"] == ["age"]
    assert events[1].attrs["monitor"] == "fraud" and events[1].attrs["rows"] == 2000


def test_windows_by_time_on_a_worker_thread(sink: InMemoryExporter) -> None:
    rng = np.random.default_rng(2)
    now = [0.0]
    reports: list[Any] = []
    monitor = DriftMonitor(
        frame(5000, rng),
        window=10_000,
        window_seconds=60,
        clock=lambda: now[0],
        on_window=reports.append,
    )
    rows = [
        dict(zip(("age", "income", "city"), r, strict=True))
        for r in zip(*frame(300, rng).values(), strict=True)
    ]
    monitor.update(rows[:100])
    now[0] = 30
    monitor.update(rows[100:200])
    now[0] = 61  # the window began at 0: this batch closes it
    monitor.update(rows[200:])
    monitor.update(rows[:50])  # starts the next window
    monitor.close()
    assert len(reports) == 1 and monitor.windows == 1
    mlobs.flush()
    assert sink.values(names.WINDOW_ROWS) == [300.0]
    assert monitor.evaluate() is not None  # the 50 rows of the open window
    assert monitor.windows == 2


def test_prediction_drift(sink: InMemoryExporter) -> None:
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(
        frame(5000, rng),
        window=1000,
        prediction_reference=rng.binomial(1, 0.1, 5000),
        background=False,
    )
    monitor.update(frame(1000, rng), rng.binomial(1, 0.1, 1000))
    monitor.update(frame(1000, rng), rng.binomial(1, 0.6, 1000).reshape(-1, 1))
    mlobs.flush()
    assert sink.values(names.PREDICTION_DETECTED) == [0.0, 1.0]
    assert {r.attrs["test"] for r in sink.metrics(names.PREDICTION_SCORE)} == {"jensen_shannon"}
    assert monitor.last_prediction is not None and monitor.last_prediction.drifted


def test_missing_columns_and_bad_rows_are_signals_not_crashes(sink: InMemoryExporter) -> None:
    rng = np.random.default_rng(4)
    monitor = DriftMonitor(frame(5000, rng), window=400, background=False)
    data = frame(400, rng)
    del data["income"]  # a client stopped sending a feature
    monitor.update(data)
    monitor.update(42)  # not rows at all
    mlobs.flush()
    missing = by_feature(sink, names.MISSING_SHARE)
    assert missing["income"] == [1.0] and missing["age"] == [0.0]
    assert by_feature(sink, names.DETECTED)["income"] == [1.0]
    assert safety.self_metrics.get(safety.VALUES_REJECTED, "drift_rows") == 1


def test_bad_options_fail_when_the_monitor_is_made() -> None:
    reference = profile({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError):
        DriftMonitor(reference, policy="vibes")
    with pytest.raises(ValueError):
        DriftMonitor(reference, window=0)
