"""PyTorch Lightning: MlobsCallback and MlobsLogger around a tiny real model on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning", reason="the frameworks extra is not installed")

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import mlobs
from mlobs.instrument.integrations.lightning import MlobsCallback, MlobsLogger
from mlobs.testing import recording
from tests.test_integration_shape import (
    BOOM,
    Boom,
    FitShape,
    fit_or_fail,
    fit_shape,
    no_run_left_current,  # noqa: F401  (an autouse fixture)
)

# Lightning's own warnings: a deprecation inside it, and advice for real trainings
pytestmark = [
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
    pytest.mark.filterwarnings("ignore:The number of training batches"),
]

EPOCHS = 3


class TinyClassifier(pl.LightningModule):
    def __init__(self, lr: float = 0.1, hidden: int = 8, fail_at_epoch: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
        )

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hparams.fail_at_epoch == self.current_epoch:
            raise Boom("diverged")
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _loader() -> DataLoader[Any]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _trainer(tmp_path: Path, callbacks: list[Any], logger: Any) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        callbacks=callbacks,
        logger=logger,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )


def fit_tiny(
    tmp_path: Path, *, fail: bool = False, logger: bool = True, callback: bool = True
) -> FitShape:
    """Train the tiny model for EPOCHS epochs with mlobs recording; the uniform test uses it."""
    model = TinyClassifier(fail_at_epoch=1 if fail else None)
    with recording(dir=tmp_path / "spool") as sink:
        trainer = _trainer(
            tmp_path,
            [MlobsCallback()] if callback else [],
            MlobsLogger() if logger else False,
        )
        fit_or_fail(
            lambda: trainer.fit(model, _loader(), _loader()), fail, raised_in="training_step"
        )
    return fit_shape(sink)


def test_fit_records_run_epochs_and_split_metrics(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path)
    assert shape.runs == [("TinyClassifier", "finished")]
    assert shape.epochs == list(range(EPOCHS))
    assert shape.epochs_of("loss", "train") == list(range(EPOCHS))
    assert shape.epochs_of("loss", "val") == list(range(EPOCHS))
    assert shape.params["lr"] == 0.1 and shape.params["hidden"] == 8
    assert shape.params["max_epochs"] == EPOCHS
    assert shape.tags == {"framework": "lightning", "stage": "fit"}
    assert ("epoch", None, 0) not in shape.metrics  # Lightning's own epoch key is not a metric


def test_loops_are_spans_and_throughput_counts_rows(tmp_path: Path) -> None:
    model = TinyClassifier()
    with recording(dir=tmp_path / "spool") as sink:
        trainer = _trainer(tmp_path, [MlobsCallback()], MlobsLogger())
        trainer.fit(model, _loader(), _loader())
        trainer.test(model, _loader())
    names = [s.name for s in sink.spans() if s.attrs["span_kind"] == "step"]
    assert names.count("validation") == EPOCHS and names.count("sanity_check") == 1
    assert names.count("test") == 1
    assert all(v is not None and v > 0 for v in sink.values("epoch_samples_per_second"))
    shape = fit_shape(sink)
    # one run per trainer entry point: fit, then test
    assert shape.runs == [("TinyClassifier", "finished"), ("TinyClassifier", "finished")]
    assert ("loss", "test", None) in shape.metrics


def test_failing_fit_is_failed_and_the_exception_propagates(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path, fail=True)
    assert shape.runs == [("TinyClassifier", "failed")]
    assert shape.error_types == [BOOM]
    assert shape.epochs == [0, 1]


def test_logger_alone_and_callback_alone(tmp_path: Path) -> None:
    alone = fit_tiny(tmp_path / "logger", callback=False)
    assert alone.runs == [("lightning", "finished")]
    assert alone.epochs == []  # epochs need the callback
    assert {"train", "val"} <= alone.splits("loss")
    assert alone.params["lr"] == 0.1

    callback_only = fit_tiny(tmp_path / "callback", logger=False)
    assert callback_only.runs == [("TinyClassifier", "finished")]
    assert callback_only.epochs_of("loss", "train") == list(range(EPOCHS))
    assert callback_only.epochs_of("loss", "val") == list(range(EPOCHS))


def test_inside_an_active_run(tmp_path: Path) -> None:
    with recording(dir=tmp_path / "spool") as sink, mlobs.run("outer"):
        trainer = _trainer(tmp_path, [MlobsCallback()], MlobsLogger())
        trainer.fit(TinyClassifier(), _loader(), _loader())
    shape = fit_shape(sink)
    assert shape.runs == [("outer", "finished")]
    assert shape.epochs == list(range(EPOCHS))
