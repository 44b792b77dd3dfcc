"""The lifecycle every framework integration shares (mlobs.instrument.integrations._lifecycle), and
``FitShape``: what a fit left in the records, compared across frameworks by the other
``test_integration_*`` modules."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import mlobs
from mlobs.context import current_run
from mlobs.export.memory import InMemoryExporter
from mlobs.instrument.epoch import EPOCH_DURATION
from mlobs.instrument.integrations import UnobservedFailure
from mlobs.instrument.integrations._lifecycle import (
    FitScope,
    _close_at_exit,
    flat_params,
    log_metrics,
    number,
    split_metric,
)
from mlobs.testing import recording


class Boom(RuntimeError):
    """The failure the integration tests inject into a framework's training code."""


BOOM = f"{__name__}.Boom"
"""How a run that ``Boom`` failed records its error type."""


def fit_or_fail(fit: Callable[[], object], fail: bool, raised_in: str) -> None:
    """Run ``fit``; with ``fail``, expect ``Boom`` to come out of it unchanged, its traceback
    ending in ``raised_in`` (the user's code that raised it, not the integration)."""
    if not fail:
        fit()
        return
    with pytest.raises(Boom, match="diverged") as info:
        fit()
    assert info.traceback[-1].name == raised_in


@dataclass
class FitShape:
    """The framework-independent outline of one fit's records."""

    runs: list[tuple[str, str]]
    """(name, status) of each run."""
    error_types: list[str]
    """``error_type`` of each failed run's end event."""
    epochs: list[int]
    """Epochs with an ``epoch_duration_seconds`` point, in order."""
    metrics: set[tuple[str, str | None, int | None]] = field(default_factory=set)
    """(name, split, epoch) of every metric point but mlobs' own epoch metrics."""
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)

    def splits(self, name: str) -> set[str | None]:
        return {split for n, split, _ in self.metrics if n == name}

    def epochs_of(self, name: str, split: str | None) -> list[int]:
        return sorted({e for n, s, e in self.metrics if n == name and s == split and e is not None})


def fit_shape(sink: InMemoryExporter) -> FitShape:
    runs = sorted(sink.runs.values(), key=lambda r: r.start_ns)
    ends = sink.events("run_end")
    metrics = {
        (r.name, r.attrs.get("split"), r.epoch)
        for r in sink.metrics()
        if not r.name.startswith("epoch_") and r.attrs.get("scope") != "system"
    }
    return FitShape(
        runs=[(r.name, r.status) for r in runs],
        error_types=[e.attrs["error_type"] for e in ends if e.attrs.get("status") == "failed"],
        epochs=[r.epoch for r in sink.metrics(EPOCH_DURATION) if r.epoch is not None],
        metrics=metrics,
        params=dict(runs[0].params) if runs else {},
        tags=dict(runs[0].tags) if runs else {},
    )


@pytest.fixture(autouse=True)
def no_run_left_current() -> Iterator[None]:
    """Fails a test that leaves a run current in the test's context (an integration that did
    not unwind what it entered), and clears it so the next test starts clean. Framework test
    modules import it to use it too."""
    yield
    left = current_run.get()
    if left is not None:
        current_run.set(None)
        pytest.fail(f"the test left run {left.name!r} current")


# -- the shared lifecycle ------------------------------------------------------------------


def test_split_metric_reads_split_prefixes() -> None:
    assert split_metric("val_loss") == ("loss", "val")
    assert split_metric("eval_loss", "train") == ("loss", "eval")
    assert split_metric("val/acc") == ("acc", "val")
    assert split_metric("train_loss_epoch") == ("loss_epoch", "train")
    assert split_metric("loss", "train") == ("loss", "train")
    assert split_metric("validation_0") == ("0", "validation")
    assert split_metric("learning_rate", "train") == ("learning_rate", "train")
    assert split_metric("val_") == ("val_", None)


def test_number_and_flat_params() -> None:
    assert number(3) == 3.0 and number(True) == 1.0
    assert number("0.5") is None and number(None) is None and number([1.0]) is None
    flat = flat_params({"optim": {"lr": 0.1, "betas": (0.9, 0.99)}, "n": 2, "x": float("nan")})
    assert flat == {"optim.lr": 0.1, "optim.betas": "(0.9, 0.99)", "n": 2, "x": "nan"}
    assert len(flat_params({"long": "y" * 10_000})["long"]) < 600


def test_scope_opens_a_run_and_epochs_with_split_metrics(tmp_path: Path) -> None:
    with recording(dir=tmp_path) as sink:
        scope = FitScope("toy", params={"lr": 0.1})
        scope.begin("Toy", {"depth": 3, "lr": 1.0})
        for n in range(2):
            scope.epoch_begin(n)
            scope.phase_begin("validation")
            log_metrics(
                {"loss": 1.0 / (n + 1), "val_loss": 2.0, "note": "text"}, default_split="train"
            )
            scope.phase_end("validation")
            scope.epoch_end()
        scope.end()
    shape = fit_shape(sink)
    assert shape.runs == [("Toy", "finished")]
    assert shape.params == {"depth": 3, "lr": 0.1}
    assert shape.tags == {"framework": "toy"}
    assert shape.epochs == [0, 1]
    assert shape.epochs_of("loss", "train") == [0, 1] == shape.epochs_of("loss", "val")
    assert len(sink.spans("validation")) == 2
    # the values of one call share a step
    steps = {r.step for r in sink.metrics("loss") if r.epoch == 0}
    assert len(steps) == 1


def test_scope_records_into_the_active_run(tmp_path: Path) -> None:
    with recording(dir=tmp_path) as sink, mlobs.run("mine"):
        scope = FitScope("toy")
        scope.begin("Toy")
        scope.epoch_begin(0)
        scope.end()
    assert fit_shape(sink).runs == [("mine", "finished")]


def test_scope_failure_and_abandoned_fits(tmp_path: Path) -> None:
    with recording(dir=tmp_path) as sink:
        scope = FitScope("toy")
        scope.begin("First")
        scope.epoch_begin(0)
        scope.end(KeyError("boom"))
        scope.begin("Second")
        scope.epoch_begin(0)
        scope.begin("Third")  # the second never ended: it raised where the scope could not see
        scope.end()
        stopped_early = [True]
        quiet = FitScope("toy", ended_quietly=lambda: stopped_early[0])
        quiet.begin("Quiet")
        quiet.begin("Quiet again")  # early stopping ends fits silently: finished
        stopped_early[0] = False
        quiet.begin("Quiet no more")  # this one raised
        quiet.end()
    shape = fit_shape(sink)
    assert shape.runs == [
        ("First", "failed"),
        ("Second", "failed"),
        ("Third", "finished"),
        ("Quiet", "finished"),
        ("Quiet again", "failed"),
        ("Quiet no more", "finished"),
    ]
    unobserved = f"{UnobservedFailure.__module__}.UnobservedFailure"
    assert shape.error_types == ["builtins.KeyError", unobserved, unobserved]


def test_runs_left_open_close_at_exit_with_the_uncaught_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with recording(dir=tmp_path) as sink:
        scope = FitScope("toy")
        scope.begin("Dies")
        scope.epoch_begin(0)
        monkeypatch.setattr(sys, "last_value", MemoryError("out of memory"), raising=False)
        _close_at_exit()  # what atexit runs
    shape = fit_shape(sink)
    assert shape.runs == [("Dies", "failed")]
    assert shape.error_types == ["builtins.MemoryError"]
    assert shape.epochs == [0]
