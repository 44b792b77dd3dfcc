"""The read-only catalog over a spool directory: runs merged across files, records in time order,
summaries, tailing, and reading files a live process is still writing."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlobs
from mlobs.record.columns import Columns
from mlobs.record.types import Kind
from mlobs.spool.catalog import AmbiguousRun, Catalog, NoSpoolDirectory, RunNotFound
from mlobs.spool.store import HEARTBEAT, RUN_END, RUN_START, Spool

log = logging.getLogger("tests.catalog")


class Diverged(Exception):
    pass


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "spool"
    mlobs.configure(dir=str(directory), flush_interval=0.05, strict=True, git=False)
    log.setLevel(logging.INFO)
    yield directory
    mlobs.shutdown()
    log.setLevel(logging.NOTSET)


def _train(name: str = "train", epochs: int = 3, fail: bool = False) -> str:
    """A run with two points per metric per epoch (the later one is the epoch's value)."""
    with mlobs.run(name, params={"lr": 0.1}, model=("mlp", "2")) as run:
        for e in range(epochs):
            with mlobs.epoch(e):
                mlobs.log(loss=9.0, split="train")
                mlobs.log(loss=1.0 / (e + 1), accuracy=0.5 + 0.1 * e, split="train")
                mlobs.log(loss=2.0 / (e + 1), split="val")
        if fail:
            raise Diverged("loss is nan")
    return run.run_id


def test_runs_are_merged_and_listed_newest_first(spool: Path) -> None:
    first = _train("first")
    with pytest.raises(Diverged):
        _train("second", fail=True)
    mlobs.flush()
    with Catalog(spool) as catalog:
        runs = catalog.runs()
        assert [r.name for r in runs] == ["second", "first"]
        assert [r.status for r in runs] == ["failed", "finished"]
        assert runs[0].error == "Diverged: loss is nan"
        assert runs[1].run_id == first and runs[1].params == {"lr": 0.1}
        assert runs[1].resource["model_name"] == "mlp"


def test_find_run_by_id_prefix_and_name(spool: Path) -> None:
    with mlobs.run("a", run_id="abc111"), mlobs.run("b", run_id="abc222"):
        pass
    with mlobs.run("a", run_id="fff333"):
        pass
    mlobs.flush()
    with Catalog(spool) as catalog:
        assert catalog.find_run("abc111").name == "a"
        assert catalog.find_run("abc2").run_id == "abc222"
        assert catalog.find_run("a").run_id == "fff333"  # the latest run of that name
        with pytest.raises(AmbiguousRun, match="matches 2 runs"):
            catalog.find_run("abc")
        with pytest.raises(RunNotFound):
            catalog.find_run("zzz")


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NoSpoolDirectory):
        Catalog(tmp_path / "nothing-here")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NoSpoolDirectory, match="not a directory"):
        Catalog(tmp_path / "file")


def test_summary_has_last_value_per_epoch_steps_and_errors(spool: Path) -> None:
    calls = []

    @mlobs.step("fetch", retries=1)
    def fetch() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("slow server")

    with pytest.raises(Diverged), mlobs.run("full"):
        fetch()
        with mlobs.epoch(0):
            mlobs.log(loss=3.0, split="train")
            mlobs.log(loss=2.0, split="train")
        log.error("gradient exploded")
        raise Diverged("stop")
    mlobs.flush()
    with Catalog(spool) as catalog:
        summary = catalog.summarize(catalog.find_run("full"))
    assert summary.epochs == [0]
    assert summary.epoch_metrics[0]["train/loss"] == 2.0
    assert summary.metric_names == ["train/loss", "epoch_duration_seconds"]
    assert summary.last_metrics["train/loss"] == 2.0
    fetch_stats = summary.steps["fetch"]
    assert (fetch_stats.count, fetch_stats.failures, fetch_stats.retries) == (2, 1, 1)
    assert fetch_stats.max_s >= fetch_stats.p50_s >= 0
    kinds = [(p.kind, p.error_type, p.message) for p in summary.errors]
    assert ("step", "TimeoutError", "slow server") in kinds
    assert ("log", None, "gradient exploded") in kinds
    assert ("run", f"{__name__}.Diverged", "Diverged: stop") in kinds
    assert summary.error_type == f"{__name__}.Diverged"


def test_a_run_spread_over_two_files_reads_as_one(spool: Path) -> None:
    with mlobs.run("spread") as run:
        with mlobs.epoch(0):
            mlobs.log(loss=1.0)
        # Rebuilding the pipeline mid-run opens a second spool file: the run's row and start
        # event stay in the first, its end in the second.
        mlobs.configure(dir=str(spool), flush_interval=0.05, strict=True, git=False)
        with mlobs.epoch(1):
            mlobs.log(loss=0.5)
    mlobs.flush()
    with Catalog(spool) as catalog:
        assert len(catalog.files()) == 2
        info = catalog.find_run(run.run_id)
        assert info.status == "finished" and info.end_ns is not None
        records = list(catalog.records(run.run_id))
        assert [r.ts_ns for r in records] == sorted(r.ts_ns for r in records)
        assert [r.value for r in records if r.name == "loss"] == [1.0, 0.5]
        assert catalog.summarize(info).series("loss") == [1.0, 0.5]


def test_rows_of_one_run_id_in_several_files_prefer_the_final_one(tmp_path: Path) -> None:
    rank0 = Spool(tmp_path / "spool-rank0.db")
    rank1 = Spool(tmp_path / "spool-rank1.db")
    start = {"run_name": "ddp", "resource": {"rank": 0}}
    rank0.write(
        Columns.of(
            [
                (int(Kind.EVENT), 100, "r1", RUN_START, None, None, None, start),
                (int(Kind.EVENT), 900, "r1", HEARTBEAT, 0.000_000_9, None, None, None),
            ]
        )
    )
    rank1.write(
        Columns.of(
            [
                (int(Kind.EVENT), 50, "r1", RUN_START, None, None, None, start),
                (int(Kind.EVENT), 500, "r1", RUN_END, None, None, None, {"status": "finished"}),
            ]
        )
    )
    try:
        with Catalog(tmp_path) as catalog:
            (info,) = catalog.runs()
    finally:
        rank0.close()
        rank1.close()
    assert info.status == "finished" and info.end_ns == 500
    assert info.start_ns == 50 and info.last_progress_ns == 900


def test_live_files_are_readable_and_tail_follows_them(spool: Path) -> None:
    with mlobs.run("live") as run:
        log.info("first")
        log.info("second")
        mlobs.flush()  # the writer keeps its connection open: the reader goes through the WAL
        with Catalog(spool) as catalog:
            assert catalog.find_run("live").status == "running"
            tail = catalog.tail(run.run_id)
            assert [r.attrs["message"] for r in tail.backlog(1)] == ["second"]
            assert tail.poll() == []
            log.info("third")
            mlobs.log(ignored=1.0)  # not a log record: not tailed
            mlobs.flush()
            assert [r.attrs["message"] for r in tail.poll()] == ["third"]
            # A file that appears later (a new process) is read from its start.
            mlobs.configure(dir=str(spool), flush_interval=0.05, strict=True, git=False)
            log.info("fourth")
            mlobs.flush()
            assert [r.attrs["message"] for r in tail.poll()] == ["fourth"]
            metrics = catalog.tail(run.run_id, (Kind.GAUGE,))
            assert [r.name for r in metrics.backlog(5)] == ["ignored"]


def test_last_metrics_of_several_runs(spool: Path) -> None:
    a, b = _train("a", epochs=2), _train("b", epochs=3)
    mlobs.flush()
    with Catalog(spool) as catalog:
        last = catalog.last_metrics([a, b])
    assert last[a]["train/loss"] == 0.5 and last[a]["val/loss"] == 1.0
    assert math.isclose(last[b]["train/accuracy"], 0.7)
    assert "epoch_duration_seconds" in last[b]


def test_stats_count_records_dropped_and_unreadable_files(spool: Path) -> None:
    _train("a", epochs=1)
    mlobs.shutdown()
    with Catalog(spool) as catalog:
        before = catalog.stats().records
    writer = Spool(next(iter(spool.glob("spool-*.db"))))
    dropped = writer.drop_oldest(1)  # whole chunks go, so at least one record
    writer.close()
    (spool / "spool-garbage.db").write_bytes(b"this is not sqlite" * 100)
    with Catalog(spool) as catalog:
        stats = catalog.stats()
        assert [r.name for r in catalog.runs()] == ["a"]  # the runs table outlives its records
    assert stats.files == 2 and stats.runs == 1 and stats.bytes > 0
    assert stats.dropped == dropped >= 1 and stats.records == before - dropped
    assert "spool-garbage.db" in stats.unreadable
