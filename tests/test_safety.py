"""Telemetry never breaks training: user exceptions pass through, mlobs' own failures are counted
and logged but never raised (unless MLOBS_STRICT=1)."""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mlobs
from mlobs import runtime, safety
from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.export.memory import InMemoryExporter
from mlobs.record.types import Kind
from mlobs.spool import flusher

from .spool_util import metric_values, read_all


class UserError(Exception):
    pass


def _user_training_function() -> None:
    raise UserError("boom")


def test_user_exception_propagates_unchanged_from_decorated_run(sink: InMemoryExporter) -> None:
    @mlobs.run("train")
    def train() -> None:
        with mlobs.epoch(0), mlobs.step("forward"):
            _user_training_function()

    with pytest.raises(UserError) as info:
        train()
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "_user_training_function" in frames and "train" in frames
    assert str(info.value) == "boom"
    mlobs.flush()
    (run,) = sink.runs.values()
    assert run.status == "failed"
    (end,) = sink.events("run_end")
    assert end.attrs["error_type"].endswith("UserError")


def test_user_exception_is_the_same_object_through_context_managers(sink: InMemoryExporter) -> None:
    error = UserError("same")
    with pytest.raises(UserError) as info, mlobs.run("cm"), mlobs.epoch(), mlobs.step("s"):
        raise error
    assert info.value is error


def test_unwritable_spool_directory_keeps_recording_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    memory = InMemoryExporter()
    mlobs.configure(dir=str(blocker / "spool"), exporters=[memory])
    with mlobs.run("r"):
        mlobs.log(loss=1.0)
    assert mlobs.flush()
    assert memory.values("loss") == [1.0]
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "spool.open") == 1


@contextlib.contextmanager
def full_spool() -> Iterator[Callable[[], None]]:
    """Inside a run, a spool that refuses writes with SQLite's own "database or disk is full"
    (the file capped at its current size); yields the flush that then fails, and lifts the cap
    on leaving."""
    rt = runtime.get()
    conn = rt.spool._conn
    mlobs.log(warmup=0.0)
    rt.flush_spool()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    try:
        yield rt.flush_spool
    finally:
        conn.execute("PRAGMA max_page_count = 1073741823")


def test_full_spool_delays_records_and_loses_none(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), flush_interval=60)
    with mlobs.run("r"), full_spool() as flush_spool:
        for i in range(5000):
            mlobs.log(x=float(i))
        flush_spool()  # fails: the spool is full
        assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "spool.write") >= 1
    mlobs.flush()
    assert metric_values(spool_dir, "x") == [float(i) for i in range(5000)]


def test_records_held_while_the_spool_is_full_are_bounded_oldest_dropped_first(
    spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flusher, "CHUNK", 1000)  # several batches per pass, each bigger than 500
    mlobs.configure(dir=str(spool_dir), flush_interval=60, buffer_max_records=2500)
    with mlobs.run("r"), full_spool() as flush_spool:
        for i in range(3000):
            mlobs.log(x=float(i))
        flush_spool()  # fails: 3,000 held, the oldest 500 dropped (part of a batch)
        for i in range(3000, 4500):
            mlobs.log(x=float(i))
        flush_spool()  # fails again: 4,000 held, two whole batches dropped
    mlobs.flush()
    assert metric_values(spool_dir, "x") == [float(i) for i in range(2000, 4500)]
    assert safety.self_metrics.get(safety.RECORDS_DROPPED, "buffer_full") == 2000


class RaisingExporter(Exporter):
    name = "raising"

    def export(self, batch: Batch) -> ExportResult:
        raise ConnectionError("backend exploded")


def test_a_raising_sink_costs_the_user_nothing(spool_dir: Path) -> None:
    healthy = InMemoryExporter()
    mlobs.configure(dir=str(spool_dir), exporters=[RaisingExporter(), healthy])
    with mlobs.run("r"):
        for i in range(10):
            mlobs.log(loss=float(i))
    assert mlobs.flush() is False  # the raising sink did not catch up, and says so
    assert healthy.values("loss") == [float(i) for i in range(10)]
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "export.raising") >= 1


def test_bad_values_are_counted_not_raised(sink: InMemoryExporter) -> None:
    with mlobs.run("r"):
        mlobs.log(nan=float("nan"), inf=float("inf"), text="0.5", nothing=None, ok=1)  # type: ignore[arg-type]
        mlobs.log({"": 1.0, 3: 2.0})  # type: ignore[dict-item]
        mlobs.log(loss=2.0, step="not-a-step")  # type: ignore[arg-type]
    mlobs.flush()
    assert math.isnan(sink.values("nan")[0] or 0.0)
    assert sink.values("inf") == [math.inf]
    assert sink.values("ok") == [1.0]
    assert sink.values("loss") == [2.0]
    assert sink.values("text") == [] and sink.values("nothing") == []
    assert safety.self_metrics.get(safety.VALUES_REJECTED, "type") == 2
    assert safety.self_metrics.get(safety.VALUES_REJECTED, "name") == 2
    assert safety.self_metrics.get(safety.VALUES_REJECTED, "step") == 1
    assert safety.self_metrics.get(safety.NONFINITE_VALUES) == 2


def test_warnings_about_bad_values_are_rate_limited(
    sink: InMemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mlobs"), mlobs.run("r"):
        for _ in range(100):
            mlobs.log(text="x")  # type: ignore[arg-type]
    assert safety.self_metrics.get(safety.VALUES_REJECTED, "type") == 100
    assert len([r for r in caplog.records if "text" in r.getMessage()]) == 1


def test_odd_metric_names_are_recorded_as_given(sink: InMemoryExporter) -> None:
    names = ["val/loss", "top-1 acc", "λ", "a.b.c", "x" * 300, "1st", "loss{bad}"]
    with mlobs.run("r"):
        mlobs.log(dict.fromkeys(names, 1.0))
    mlobs.flush()
    assert sorted(r.name for r in sink.metrics()) == sorted(names)


def test_ten_thousand_distinct_label_values(sink: InMemoryExporter) -> None:
    with mlobs.run("r"):
        for i in range(10_000):
            mlobs.log(loss=float(i), split=f"shard-{i}")
    mlobs.flush()
    splits = {r.attrs["split"] for r in sink.metrics("loss")}
    assert len(splits) == 10_000


def test_calls_before_configure_and_outside_a_run(tmp_path: Path) -> None:
    assert runtime.current() is None
    mlobs.log(orphan=1.0)
    with mlobs.epoch(0), mlobs.step("lonely"):
        pass
    mlobs.heartbeat()
    assert mlobs.flush()
    directory = Path(runtime.get().config.dir)
    assert directory == tmp_path / "default-spool"  # from MLOBS_DIR: nothing was configured
    (point,) = [r for r in read_all(directory, Kind.GAUGE) if r.name == "orphan"]
    assert point.run_id == ""
    assert [r.name for r in read_all(directory, Kind.SPAN)] == ["lonely"]
    assert safety.self_metrics.get(safety.OUTSIDE_RUN, "log") == 1
    assert safety.self_metrics.get(safety.OUTSIDE_RUN, "epoch") == 1


def test_strict_mode_raises_for_mlobs_failures(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), strict=True)
    with mlobs.run("r"), pytest.raises(safety.MlobsError):
        mlobs.log(text="x")  # type: ignore[arg-type]


def test_internal_failure_in_the_run_machinery_is_contained(
    sink: InMemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("simulated failure inside mlobs")

    monkeypatch.setattr("mlobs.instrument.run.git_commit", broken)
    ran = []
    with mlobs.run("r") as run:
        run.log(loss=1.0)
        ran.append(True)
    assert ran == [True]
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "run.start") == 1
