"""``mlobs.run`` as decorator and context manager: status, params, tags and lineage in the spool;
``mlobs.log`` steps and splits; progress and heartbeats; ``flush`` and ``shutdown``."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mlobs
from mlobs import runtime, safety
from mlobs.export.memory import InMemoryExporter
from mlobs.record.types import Kind, Record
from mlobs.spool.catalog import Catalog
from mlobs.spool.store import HEARTBEAT, RUN_START, RunInfo, spool_files

from .spool_util import metric_values, read_all


class DataLoaderCrash(RuntimeError):
    pass


def _runs(directory: Path) -> dict[str, RunInfo]:
    """The runs a separate reader of the spool directory sees."""
    with Catalog(directory) as catalog:
        return {info.run_id: info for info in catalog.runs()}


def _gauges(directory: Path, run_id: str) -> list[Record]:
    with Catalog(directory) as catalog:
        return catalog.records(run_id, kinds=[Kind.GAUGE])


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _steps(sink: InMemoryExporter, name: str) -> list[tuple[float | None, int | None]]:
    return [(r.value, r.step) for r in sorted(sink.metrics(name), key=lambda r: r.seq)]


# -- decorator and context manager ----------------------------------------------------------


def test_bare_decorator_records_one_finished_run_per_call(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    inside: list[mlobs.ActiveRun | None] = []

    @mlobs.run
    def train_model(x: int) -> int:
        inside.append(mlobs.active_run())
        return x * 2

    assert train_model(21) == 42
    assert train_model(1) == 2
    assert mlobs.active_run() is None
    assert mlobs.flush()
    runs = _runs(spool_dir)
    first, second = inside
    assert first is not None and second is not None
    assert first.run_id != second.run_id
    assert set(runs) == {first.run_id, second.run_id}
    for info in runs.values():
        assert info.name == "train_model"
        assert info.status == "finished"
        assert info.error is None
        assert info.end_ns is not None and info.end_ns >= info.start_ns
    assert {r.status for r in sink.runs.values()} == {"finished"}


def test_decorator_with_arguments_stores_params_tags_and_lineage(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    @mlobs.run(
        name="finetune",
        model=("resnet50", "3"),
        dataset=("imagenet", "2024-05"),
        params={"lr": 3e-4, "layers": [64, 128], "optimizer": "adam"},
        tags={"team": "vision", "purpose": "baseline"},
        experiment="exp-a",
    )
    def train() -> str:
        active = mlobs.active_run()
        assert active is not None
        return active.run_id

    run_id = train()
    assert mlobs.flush()
    info = _runs(spool_dir)[run_id]
    assert info.name == "finetune"
    assert info.status == "finished"
    assert info.params == {"lr": 3e-4, "layers": [64, 128], "optimizer": "adam"}
    assert info.tags == {"team": "vision", "purpose": "baseline"}
    res = info.resource
    assert (res["model_name"], res["model_version"]) == ("resnet50", "3")
    assert (res["dataset_name"], res["dataset_version"]) == ("imagenet", "2024-05")
    assert res["experiment"] == "exp-a"
    assert res["host"] == socket.gethostname()
    assert res["pid"] == os.getpid()
    assert (res["rank"], res["local_rank"], res["world_size"]) == (0, 0, 1)
    assert sink.runs[run_id].params == info.params  # the sink gets the same picture


def test_a_model_without_a_version_has_no_version(sink: InMemoryExporter, spool_dir: Path) -> None:
    with mlobs.run("r", model=("mlp", None), dataset={"name": "mnist"}) as run:
        pass
    assert mlobs.flush()
    res = _runs(spool_dir)[run.run_id].resource
    assert res["model_name"] == "mlp" and res.get("model_version") is None
    assert res["dataset_name"] == "mnist" and res.get("dataset_version") is None


def test_decorator_with_empty_parentheses_uses_the_function_name(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    @mlobs.run()
    def evaluate() -> None:
        pass

    evaluate()
    assert mlobs.flush()
    (info,) = _runs(spool_dir).values()
    assert (info.name, info.status) == ("evaluate", "finished")
    assert info.resource["experiment"] == "default"
    assert info.params == {} and info.tags == {}


def test_model_and_dataset_versions_given_separately(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    with mlobs.run("versions", model="bert", model_version="base-2", dataset="wiki") as run:
        pass
    with mlobs.run("dict-form", dataset={"name": "c4", "version": "en-3"}) as other:
        pass
    assert mlobs.flush()
    runs = _runs(spool_dir)
    res = runs[run.run_id].resource
    assert (res["model_name"], res["model_version"]) == ("bert", "base-2")
    assert res["dataset_name"] == "wiki"
    assert "dataset_version" not in res  # no version given: none invented
    other_res = runs[other.run_id].resource
    assert (other_res["dataset_name"], other_res["dataset_version"]) == ("c4", "en-3")
    assert "model_name" not in other_res and "model_version" not in other_res


def test_context_manager_is_running_inside_and_finished_after(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    with mlobs.run("cm", params={"batch_size": 32}) as run:
        assert isinstance(run, mlobs.ActiveRun)
        assert mlobs.active_run() is run
        assert run.status == "running"
        assert mlobs.flush()
        live = _runs(spool_dir)[run.run_id]
        assert live.status == "running"
        assert live.end_ns is None
        assert live.params == {"batch_size": 32}
        (start,) = sink.events(RUN_START)
        assert start.run_id == run.run_id and start.attrs["run_name"] == "cm"
        assert sink.runs[run.run_id].status == "running"
    assert run.status == "finished"
    assert mlobs.active_run() is None
    assert mlobs.flush()
    done = _runs(spool_dir)[run.run_id]
    assert done.status == "finished"
    assert done.end_ns is not None and done.end_ns >= live.start_ns
    assert done.start_ns == live.start_ns
    assert sink.runs[run.run_id].status == "finished"


def test_raising_body_fails_the_run_with_the_exception_type(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    error = DataLoaderCrash("shard 3 unreadable")
    with pytest.raises(DataLoaderCrash) as info, mlobs.run("crashes") as run:
        mlobs.log(loss=1.0)
        raise error
    assert info.value is error
    assert run.status == "failed"
    assert mlobs.flush()
    failed = _runs(spool_dir)[run.run_id]
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.startswith("DataLoaderCrash")
    assert "shard 3 unreadable" in failed.error
    (end,) = sink.events("run_end")
    assert end.attrs["status"] == "failed"
    assert end.attrs["error_type"] == f"{__name__}.DataLoaderCrash"


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (KeyboardInterrupt(), "failed"),
        (SystemExit(2), "failed"),
        (SystemExit(0), "finished"),
        (SystemExit(None), "finished"),
    ],
    ids=["ctrl-c", "exit-2", "exit-0", "exit-none"],
)
def test_base_exceptions_end_the_run_and_propagate(
    sink: InMemoryExporter, spool_dir: Path, exc: BaseException, status: str
) -> None:
    @mlobs.run("exits")
    def main() -> None:
        raise exc

    with pytest.raises(type(exc)) as info:
        main()
    assert info.value is exc
    assert mlobs.flush()
    (run,) = _runs(spool_dir).values()
    assert run.status == status
    assert (run.error is None) == (status == "finished")


def test_nested_run_records_its_parent_and_restores_the_outer_run(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    with mlobs.run("sweep") as outer:
        with mlobs.run("trial") as inner:
            assert mlobs.active_run() is inner
        assert mlobs.active_run() is outer
        mlobs.log(best=0.9)
    assert mlobs.flush()
    runs = _runs(spool_dir)
    assert runs[inner.run_id].resource["parent_run_id"] == outer.run_id
    assert "parent_run_id" not in runs[outer.run_id].resource
    assert [r.run_id for r in sink.metrics("best")] == [outer.run_id]


# -- git lineage ----------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(repo.parent), GIT_CONFIG_NOSYSTEM="1")
    out = subprocess.run(
        [
            "git",
            "-c",
            "user.name=mlobs tests",
            "-c",
            "user.email=tests@example.invalid",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> Iterator[Path]:
    """A repository with two commits, the second one checked out."""
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH")
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print('v1')\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "first")
    (repo / "train.py").write_text("print('v2')\n")
    _git(repo, "commit", "-q", "-a", "-m", "second")
    yield repo


def _git_commit_of_a_run(spool_dir: Path) -> str | None:
    mlobs.configure(dir=str(spool_dir))
    with mlobs.run("lineage") as run:
        pass
    assert mlobs.flush()
    commit = _runs(spool_dir)[run.run_id].resource.get("git_commit")
    return None if commit is None else str(commit)


@pytest.mark.parametrize("refs", ["loose", "packed", "detached"])
def test_git_commit_of_the_working_directory_is_recorded(
    git_repo: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch, refs: str
) -> None:
    head = _git(git_repo, "rev-parse", "HEAD")
    first = _git(git_repo, "rev-parse", "HEAD~1")
    expected = head
    if refs == "packed":
        _git(git_repo, "pack-refs", "--all")
    elif refs == "detached":
        _git(git_repo, "checkout", "-q", "--detach", first)
        expected = first
    monkeypatch.chdir(git_repo / "src")  # a subdirectory: the repository is found above it
    assert _git_commit_of_a_run(spool_dir) == expected


def test_git_commit_of_a_worktree_is_its_own_head(
    git_repo: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _git(git_repo, "rev-parse", "HEAD~1")
    worktree = git_repo.parent / "wt"
    _git(git_repo, "worktree", "add", "-q", "-b", "old", str(worktree), first)
    monkeypatch.chdir(worktree)
    assert _git_commit_of_a_run(spool_dir) == first


def test_no_git_commit_with_mlobs_git_0(
    git_repo: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(git_repo)
    monkeypatch.setenv("MLOBS_GIT", "0")
    assert _git_commit_of_a_run(spool_dir) is None


def test_no_git_commit_outside_a_repository(
    tmp_path: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    if any((d / ".git").exists() for d in (plain, *plain.parents)):
        pytest.skip("the temporary directory is itself inside a git repository")
    monkeypatch.chdir(plain)
    assert _git_commit_of_a_run(spool_dir) is None


# -- mlobs.log ------------------------------------------------------------------------------


def test_implicit_step_is_last_step_plus_one_and_explicit_step_moves_it(
    sink: InMemoryExporter,
) -> None:
    with mlobs.run("steps") as run:
        mlobs.log(a=1.0)
        mlobs.log(a=2.0)
        mlobs.log(a=3.0, step=10)
        mlobs.log(a=4.0)
        mlobs.log(a=5.0, step=5)  # backwards too: the counter follows the caller
        mlobs.log(a=6.0)
        mlobs.log(b=7.0, c=8.0)  # one call, one step for all its values
        assert run.step == 7
    assert mlobs.flush()
    assert _steps(sink, "a") == [(1.0, 1), (2.0, 2), (3.0, 10), (4.0, 11), (5.0, 5), (6.0, 6)]
    assert _steps(sink, "b") == [(7.0, 7)]
    assert _steps(sink, "c") == [(8.0, 7)]


def test_each_run_counts_its_own_steps(sink: InMemoryExporter) -> None:
    with mlobs.run("first"):
        mlobs.log(x=1.0, step=100)
    with mlobs.run("second"):
        mlobs.log(x=2.0)
    assert mlobs.flush()
    assert _steps(sink, "x") == [(1.0, 100), (2.0, 1)]


def test_split_is_an_attribute_and_the_mapping_form_takes_any_name(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    with mlobs.run("splits") as run:
        mlobs.log(loss=0.5, split="train")
        mlobs.log({"val/loss": 0.3, "top-1 acc": 0.9}, split="val")
        mlobs.log({"lr": 0.01}, momentum=0.9)
    assert mlobs.flush()
    by_name = {r.name: r for r in _gauges(spool_dir, run.run_id)}
    assert set(by_name) == {"loss", "val/loss", "top-1 acc", "lr", "momentum"}
    assert by_name["loss"].attrs == {"split": "train"}
    assert by_name["val/loss"].attrs == {"split": "val"}
    assert by_name["top-1 acc"].attrs == {"split": "val"}
    assert by_name["lr"].attrs == {} and by_name["momentum"].attrs == {}
    assert (by_name["val/loss"].value, by_name["val/loss"].step) == (0.3, 2)
    assert by_name["lr"].step == by_name["momentum"].step == 3
    assert by_name["lr"].value == 0.01 and by_name["momentum"].value == 0.9


def test_run_log_records_into_its_own_run(sink: InMemoryExporter) -> None:
    with mlobs.run("outer") as outer:
        outer.log(loss=1.0)
        with mlobs.run("inner") as inner:
            outer.log({"val/acc": 0.5}, split="val")  # not the current run: still outer's
            inner.log(loss=9.0)
        from_thread = threading.Thread(target=lambda: outer.log(loss=0.5, step=20))
        from_thread.start()
        from_thread.join()
    assert mlobs.flush()
    points = sorted(sink.metrics(), key=lambda r: r.seq)
    assert [(p.run_id, p.name, p.value, p.step) for p in points] == [
        (outer.run_id, "loss", 1.0, 1),
        (outer.run_id, "val/acc", 0.5, 2),
        (inner.run_id, "loss", 9.0, 1),
        (outer.run_id, "loss", 0.5, 20),
    ]
    assert points[1].attrs == {"split": "val"}
    assert outer.step == 20


# -- progress and heartbeats ----------------------------------------------------------------


def test_log_heartbeat_step_and_epoch_move_the_last_progress_time(
    sink: InMemoryExporter,
) -> None:
    @mlobs.step
    def a_step() -> None:
        pass

    def an_epoch() -> None:
        with mlobs.epoch():
            pass

    with mlobs.run("progress") as run:
        marks: list[Callable[[], object]] = [
            lambda: mlobs.log(loss=1.0),
            mlobs.heartbeat,
            a_step,
            an_epoch,
            lambda: run.log(acc=0.5),
        ]
        seen = [run.last_progress_ns]
        for mark in marks:
            time.sleep(0.002)
            mark()
            seen.append(run.last_progress_ns)
        time.sleep(0.002)
        mlobs.active_run()  # reading state is not progress
        assert run.last_progress_ns == seen[-1]
    assert all(later > earlier for earlier, later in itertools.pairwise(seen)), seen


def test_heartbeats_reach_the_spool_while_the_run_is_running(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), heartbeat_interval=0.05, flush_interval=0.05)
    with mlobs.run("long-eval") as run:
        assert mlobs.flush()
        started = _runs(spool_dir)[run.run_id]
        time.sleep(0.1)
        mlobs.heartbeat()
        progress = run.last_progress_ns
        assert progress > (started.last_progress_ns or 0)

        def stored_progress() -> int:
            return _runs(spool_dir)[run.run_id].last_progress_ns or 0

        # No mlobs.flush() here: the background flusher emits and writes the heartbeat.
        assert _wait_for(lambda: abs(stored_progress() - progress) < 10_000, timeout=5), (
            stored_progress(),
            progress,
        )
        assert _runs(spool_dir)[run.run_id].status == "running"
        beats = [e for e in read_all(spool_dir, Kind.EVENT) if e.name == HEARTBEAT]
        assert beats and {b.run_id for b in beats} == {run.run_id}
        assert max(b.value or 0.0 for b in beats) == pytest.approx(progress / 1e9, abs=1e-5)


def test_heartbeat_records_are_spaced_by_the_interval(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), heartbeat_interval=3600, flush_interval=3600)
    with mlobs.run("throttled") as run:
        for i in range(5):
            mlobs.log(loss=float(i))
            mlobs.heartbeat()
            assert mlobs.flush()
            time.sleep(0.002)
        beats = [e for e in read_all(spool_dir, Kind.EVENT) if e.name == HEARTBEAT]
        assert len(beats) <= 1  # five flushes with progress in between, one interval
        last = run.last_progress_ns
    assert mlobs.flush()
    final = _runs(spool_dir)[run.run_id]
    assert final.status == "finished"
    assert (final.last_progress_ns or 0) >= last  # the end of the run is progress too


# -- flush and shutdown ---------------------------------------------------------------------


def test_flush_makes_records_visible_to_a_reader_of_the_directory(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), flush_interval=3600)
    with mlobs.run("visible", params={"lr": 0.1}) as run:
        for i in range(3):
            mlobs.log(loss=1.0 / (i + 1))
        time.sleep(0.2)  # several flusher wake-ups, none of them due
        assert _runs(spool_dir) == {}
        assert metric_values(spool_dir, "loss") == []
        assert mlobs.flush() is True
        assert _runs(spool_dir)[run.run_id].status == "running"
        assert [p.value for p in _gauges(spool_dir, run.run_id)] == [1.0, 0.5, 1 / 3]


def test_flush_returns_true_once_every_sink_caught_up(
    sink: InMemoryExporter, spool_dir: Path
) -> None:
    with mlobs.run("shipped") as run:
        for i in range(100):
            mlobs.log(v=float(i))
        assert mlobs.flush() is True
        assert sink.values("v") == [float(i) for i in range(100)]
        assert run.run_id in sink.runs


def test_shutdown_twice_is_harmless_and_a_new_record_starts_a_new_pipeline(
    spool_dir: Path,
) -> None:
    assert mlobs.flush() is True  # nothing started yet: nothing to wait for
    memory = InMemoryExporter()
    mlobs.configure(dir=str(spool_dir), exporters=[memory], flush_interval=3600)
    with mlobs.run("before") as before:
        mlobs.log(x=1.0)
    mlobs.shutdown()
    assert runtime.current() is None
    mlobs.shutdown()
    mlobs.shutdown(timeout=0.1)
    assert runtime.current() is None
    assert mlobs.flush() is True
    assert memory.values("x") == [1.0]  # shutdown flushed and shipped
    with mlobs.run("after") as after:  # the configuration of the first pipeline still holds
        mlobs.log(x=2.0)
    assert runtime.current() is not None
    assert mlobs.flush()
    mlobs.shutdown()
    assert len(spool_files(spool_dir)) == 2  # one file per pipeline
    runs = _runs(spool_dir)
    assert runs[before.run_id].status == runs[after.run_id].status == "finished"
    assert metric_values(spool_dir, "x") == [1.0, 2.0]


def test_log_labeled_records_one_point_with_labels_and_keeps_the_step(
    sink: InMemoryExporter,
) -> None:
    with mlobs.run("eval") as run:
        mlobs.log(loss=1.0, step=7)
        mlobs.log_labeled("quality_f1", 0.5, {"class": 3, "window": None})
        mlobs.log_labeled("quality_f1", "bad", {"class": 4})  # rejected and counted
        mlobs.log_labeled("quality_f1", 0.25, {"class": 4}, step=9, epoch=2)
    mlobs.flush()
    points = sink.metrics("quality_f1")
    assert [(p.value, p.attrs, p.step, p.epoch) for p in points] == [
        (0.5, {"class": "3"}, 7, None),
        (0.25, {"class": "4"}, 9, 2),
    ]
    assert run.step == 7
    assert safety.self_metrics.get(safety.VALUES_REJECTED, "type") == 1
