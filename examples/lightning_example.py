"""PyTorch Lightning with mlobs: a tiny classifier, three epochs on the CPU.

MLOBS_DIR=/tmp/mlobs-demo python examples/lightning_example.py
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from _show import show_runs
from torch.utils.data import DataLoader, TensorDataset

from mlobs.instrument.integrations.lightning import MlobsCallback, MlobsLogger


class Classifier(pl.LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()  # recorded as the run's params
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)  # loss, split "train"
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))  # split "val"

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        callbacks=[MlobsCallback()],  # the run, its epochs and loop spans, failure status
        logger=MlobsLogger(),  # what self.log records, at the trainer's step
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Classifier(), DataLoader(data, batch_size=32), DataLoader(data, batch_size=64))
    show_runs()


if __name__ == "__main__":
    main()
