"""Distributed jobs: rank, local rank and world size from the launcher's variables; metrics on
rank 0 only (unless asked), system metrics, logs and spans on every rank, rank and world size
stored with each run."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlobs
from mlobs import runtime, safety
from mlobs.distributed import RankInfo, rank_info
from mlobs.export.memory import InMemoryExporter
from mlobs.record.types import Kind
from mlobs.spool.catalog import Catalog
from mlobs.testing import recording

from .spool_util import read_all


@pytest.fixture(autouse=True)
def _no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOBS_GIT", "0")


@pytest.fixture
def rank1(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process is rank 1 of 2 (set before the pipeline is built, which reads it)."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")


@pytest.fixture
def user_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.distributed")
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(logging.NOTSET)


def _triple(info: RankInfo) -> tuple[int, int, int]:
    return info.rank, info.local_rank, info.world_size


# -- rank_info ------------------------------------------------------------------------------


def test_torchrun_variables() -> None:
    info = rank_info({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"})
    assert _triple(info) == (3, 1, 8)
    assert info.is_main is False


def test_slurm_variables_are_the_fallback() -> None:
    slurm = {"SLURM_PROCID": "5", "SLURM_LOCALID": "2", "SLURM_NTASKS": "16"}
    assert _triple(rank_info(slurm)) == (5, 2, 16)
    torchrun = {"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}
    assert _triple(rank_info({**slurm, **torchrun})) == (1, 0, 4)  # torchrun wins
    # Each of the three falls back on its own.
    assert _triple(rank_info({**slurm, "RANK": "7"})) == (7, 2, 16)


def test_open_mpi_variables_come_after_slurm() -> None:
    ompi = {
        "OMPI_COMM_WORLD_RANK": "6",
        "OMPI_COMM_WORLD_LOCAL_RANK": "3",
        "OMPI_COMM_WORLD_SIZE": "12",
    }
    assert _triple(rank_info(ompi)) == (6, 3, 12)
    assert _triple(rank_info({**ompi, "SLURM_PROCID": "4"})) == (4, 3, 12)


def test_without_a_launcher_the_process_is_rank_0_of_1(monkeypatch: pytest.MonkeyPatch) -> None:
    info = rank_info({})
    assert _triple(info) == (0, 0, 1) and info.is_main
    assert _triple(rank_info()) == (0, 0, 1)  # the (cleared) process environment
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert _triple(rank_info()) == (2, 0, 3)  # and it is the process environment that is read


JUNK = ["", " ", "abc", "1.5", "0x2", "two", "3a", "1e3", "None"]


@pytest.mark.parametrize("junk", JUNK, ids=[repr(j) for j in JUNK])
def test_junk_values_are_ignored(junk: str) -> None:
    assert _triple(rank_info({"RANK": junk, "LOCAL_RANK": junk, "WORLD_SIZE": junk})) == (0, 0, 1)
    fallback = {"SLURM_PROCID": "4", "SLURM_LOCALID": "1", "SLURM_NTASKS": "6"}
    env = {"RANK": junk, "LOCAL_RANK": junk, "WORLD_SIZE": junk, **fallback}
    assert _triple(rank_info(env)) == (4, 1, 6)


@pytest.mark.parametrize("malformed", ["--1", "²"])
def test_malformed_numbers_are_ignored_and_do_not_break_configure(
    malformed: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert _triple(rank_info({"RANK": malformed, "SLURM_PROCID": "2"})) == (2, 0, 1)
    monkeypatch.setenv("RANK", malformed)
    mlobs.configure(dir=str(tmp_path / "spool"))  # telemetry must not break the program
    assert runtime.get().rank.rank == 0


def test_negative_ranks_and_empty_worlds_are_ignored() -> None:
    assert _triple(rank_info({"RANK": "-1", "LOCAL_RANK": "-1", "WORLD_SIZE": "0"})) == (0, 0, 1)
    assert _triple(rank_info({"WORLD_SIZE": "-4", "SLURM_NTASKS": "4"})) == (0, 0, 4)


def test_spaces_around_a_number_are_tolerated() -> None:
    assert _triple(rank_info({"RANK": " 2 ", "WORLD_SIZE": "4\n"})) == (2, 0, 4)


# -- what each rank records -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rank", "env_all_ranks", "arg_all_ranks", "recorded"),
    [
        ("0", None, None, True),
        ("1", None, None, False),
        ("1", "1", None, True),
        ("1", None, True, True),
        ("1", "1", False, False),  # the argument beats the variable
    ],
    ids=["rank0", "rank1", "rank1-env", "rank1-configure", "rank1-env-overridden"],
)
def test_metrics_are_recorded_on_rank_0_unless_all_ranks_are_asked_for(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rank: str,
    env_all_ranks: str | None,
    arg_all_ranks: bool | None,
    recorded: bool,
) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    if env_all_ranks is not None:
        monkeypatch.setenv("MLOBS_LOG_ALL_RANKS", env_all_ranks)
    settings = {} if arg_all_ranks is None else {"log_all_ranks": arg_all_ranks}
    spool = tmp_path / "spool"
    with recording(dir=spool, **settings) as sink, mlobs.run("ddp") as run:
        with mlobs.epoch(0, samples=64):
            mlobs.log(loss=0.5, split="train")
            mlobs.log({"val/acc": 0.75})
            run.log(lr=0.1)
        with mlobs.epoch(1):
            pass
    names = {r.name for r in sink.metrics()}
    in_spool = {r.name for r in read_all(spool, Kind.GAUGE)}
    expected = {
        "loss",
        "val/acc",
        "lr",
        "epoch_duration_seconds",
        "epoch_samples_per_second",
    }
    assert names == in_spool == (expected if recorded else set())
    # Whatever the rank, the run and its epochs are there.
    assert {s.name for s in sink.spans()} == {"run ddp", "epoch 0", "epoch 1"}
    assert sink.runs[run.run_id].status == "finished"


@pytest.mark.usefixtures("rank1")
def test_system_metrics_are_recorded_on_every_rank(tmp_path: Path) -> None:
    with recording(dir=tmp_path / "spool") as sink, mlobs.run("ddp") as run:
        mlobs.log(loss=1.0)  # not recorded on rank 1
        mlobs.log_system(gpu_util=0.5)
        with mlobs.epoch(2):
            mlobs.log_system({"gpu/mem_used_bytes": 2**30})
    assert sink.values("loss") == []
    (util,) = sink.metrics("gpu_util")
    (mem,) = sink.metrics("gpu/mem_used_bytes")
    assert (util.value, util.run_id, util.attrs) == (0.5, run.run_id, {"scope": "system"})
    assert (mem.value, mem.epoch, mem.attrs) == (float(2**30), 2, {"scope": "system"})
    assert util.kind is Kind.GAUGE and util.epoch is None


def test_system_metrics_do_not_move_the_step(tmp_path: Path) -> None:
    with recording(dir=tmp_path / "spool") as sink, mlobs.run("single") as run:
        mlobs.log(loss=1.0)
        mlobs.log(loss=0.9)
        mlobs.log_system(gpu_util=0.4, gpu_temp_c=61)
        mlobs.log_system(gpu_util=0.6)
        assert run.step == 2
        mlobs.log(loss=0.8)
    steps = {(r.name, r.value): r.step for r in sink.metrics()}
    assert steps == {
        ("loss", 1.0): 1,
        ("loss", 0.9): 2,
        ("gpu_util", 0.4): 2,
        ("gpu_temp_c", 61.0): 2,
        ("gpu_util", 0.6): 2,
        ("loss", 0.8): 3,
    }
    assert [r.attrs for r in sink.metrics("loss")] == [{}, {}, {}]


def test_system_metrics_outside_a_run_are_recorded_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="mlobs"),
        recording(dir=tmp_path / "spool", strict=False) as sink,
    ):
        mlobs.log_system(cpu_util=0.25)
        mlobs.log_system(bad="not a number")  # rejected and counted
    (point,) = sink.metrics()
    assert (point.name, point.value, point.run_id) == ("cpu_util", 0.25, "")
    assert point.attrs == {"scope": "system"}
    assert safety.self_metrics.get(safety.OUTSIDE_RUN) == 0
    assert safety.self_metrics.get(safety.VALUES_REJECTED, "type") == 1
    assert not [r for r in caplog.records if "outside a run" in r.getMessage()]


@pytest.mark.usefixtures("rank1")
def test_logs_and_steps_are_recorded_on_every_rank_with_the_rank(
    tmp_path: Path, user_log: logging.Logger
) -> None:
    with recording(dir=tmp_path / "spool") as sink, mlobs.run("ddp") as run:
        with mlobs.step("all_reduce"):
            user_log.info("synchronised gradients")
        user_log.warning("slow rank")
    by_message = {r.attrs["message"]: r for r in sink.logs()}
    assert set(by_message) >= {"synchronised gradients", "slow rank"}
    for message in ("synchronised gradients", "slow rank"):
        record = by_message[message]
        assert record.attrs["rank"] == 1
        assert record.run_id == run.run_id
    (step,) = sink.spans("all_reduce")
    assert step.run_id == run.run_id and step.attrs["status"] == "ok"
    assert by_message["synchronised gradients"].attrs["span_id"] == step.attrs["span_id"]


@pytest.mark.usefixtures("rank1")
def test_runs_record_rank_local_rank_and_world_size(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with recording(dir=spool) as sink, mlobs.run("ddp") as run:
        pass
    resource = sink.runs[run.run_id].resource
    assert (resource["rank"], resource["local_rank"], resource["world_size"]) == (1, 1, 2)
    with Catalog(spool) as catalog:
        stored = catalog.find_run(run.run_id).resource
    assert (stored["rank"], stored["local_rank"], stored["world_size"]) == (1, 1, 2)


def test_slurm_rank_reaches_the_run_and_the_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_log: logging.Logger
) -> None:
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    with recording(dir=tmp_path / "spool") as sink, mlobs.run("slurm") as run:
        mlobs.log(loss=1.0)
        user_log.warning("hello from rank 3")
    resource = sink.runs[run.run_id].resource
    assert (resource["rank"], resource["local_rank"], resource["world_size"]) == (3, 0, 4)
    assert [r.attrs["rank"] for r in sink.logs()] == [3]
    assert sink.metrics() == []


def test_every_rank_shares_the_run_id_from_mlobs_run_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOBS_RUN_ID", "job-1234")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        with recording(dir=tmp_path / "spool") as sink, mlobs.run("ddp") as run:
            mlobs.log_system(gpu_util=0.5)
        assert run.run_id == "job-1234"
        assert [r.run_id for r in sink.metrics("gpu_util")] == ["job-1234"]
        assert sink.runs["job-1234"].resource["rank"] == int(rank)
    with Catalog(tmp_path / "spool") as catalog:
        (merged,) = catalog.runs()  # two files, one run
        assert len(catalog.files()) == 2
    assert (merged.run_id, merged.status) == ("job-1234", "finished")


def test_the_rank_is_read_when_the_pipeline_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    memory = InMemoryExporter()
    mlobs.configure(dir=str(spool), exporters=[memory])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with mlobs.run("built-at-rank-0"):
        mlobs.log(loss=1.0)
    mlobs.configure(dir=str(spool), exporters=[memory])  # rebuilt: now rank 1
    with mlobs.run("built-at-rank-1"):
        mlobs.log(loss=2.0)
    assert mlobs.flush()
    assert memory.values("loss") == [1.0]
    assert {info.name: info.resource["rank"] for info in memory.runs.values()} == {
        "built-at-rank-0": 0,
        "built-at-rank-1": 1,
    }


# -- non-main ranks: the step counter and progress ------------------------------------------


@pytest.mark.usefixtures("rank1")
def test_the_step_counter_moves_on_every_rank(tmp_path: Path, user_log: logging.Logger) -> None:
    with recording(dir=tmp_path / "spool") as sink, mlobs.run("ddp") as run:
        for _ in range(3):
            mlobs.log(loss=1.0)
        mlobs.log(loss=1.0, step=10)
        mlobs.log_system(gpu_util=0.5)
        user_log.warning("after step 10")
        step_on_rank_1 = run.step
    assert step_on_rank_1 == 10
    assert [r.step for r in sink.metrics("gpu_util")] == [10]
    assert [r.step for r in sink.logs()] == [10]


@pytest.mark.usefixtures("rank1")
def test_log_and_epoch_end_count_as_progress_on_every_rank(tmp_path: Path) -> None:
    with recording(dir=tmp_path / "spool"), mlobs.run("ddp") as run:
        before = run.last_progress_ns
        time.sleep(0.002)
        mlobs.log(loss=1.0)
        after_log = run.last_progress_ns
        time.sleep(0.002)
        with mlobs.epoch(0):
            pass
        after_epoch = run.last_progress_ns
    assert after_log > before
    assert after_epoch > after_log


@pytest.mark.usefixtures("rank1")
def test_spans_carry_the_rank(tmp_path: Path) -> None:
    with (
        recording(dir=tmp_path / "spool") as sink,
        mlobs.run("ddp"),
        mlobs.epoch(0),
        mlobs.step("forward"),
    ):
        pass
    spans = sink.spans()
    assert len(spans) == 3
    for span in spans:
        nested = span.attrs.get("attributes") or {}
        assert span.attrs.get("rank", nested.get("rank")) == 1, span
