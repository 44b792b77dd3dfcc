"""PyTorch Lightning: a callback for the run's lifecycle and a logger for its metrics.

::

    from mlobs.instrument.integrations.lightning import MlobsCallback, MlobsLogger

    trainer = L.Trainer(max_epochs=3, callbacks=[MlobsCallback()], logger=MlobsLogger())
    trainer.fit(model, train_loader, val_loader)

``MlobsCallback`` opens one run per ``fit`` / ``validate`` / ``test`` / ``predict`` (unless a run
is active: then it records into that one), named after the LightningModule, with its
``hparams`` as params. Each training epoch is an ``mlobs.epoch``; it ends when the next one
starts or training ends, so it holds the epoch's validation and the metrics Lightning logs at its
end. Validation, sanity check, test and predict loops are spans. A fit that raises is ``failed``
(``on_exception``); the exception propagates unchanged.

``MlobsLogger`` records what ``self.log(...)`` logs, at the trainer's global step:
``val_loss`` becomes ``loss`` with split ``val`` (likewise ``train_``, ``test_``, ``val/``...);
names without such a prefix have no split. Used alone, it opens the run itself (no epochs, then).
The callback used alone records ``trainer.callback_metrics`` at each epoch's end instead.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

import mlobs
from mlobs.instrument.integrations._lifecycle import FitScope, guard, log_metrics

__all__ = ["MlobsCallback", "MlobsLogger"]

_SKIP = frozenset(("epoch",))  # Lightning adds the epoch number to every dict it logs


class MlobsLogger(Logger):  # type: ignore[misc]  # Any to mypy: see pyproject
    """A Lightning logger writing metrics to mlobs (see the module doc).

    Args:
        run_name: the run's name when this logger opens the run itself.
        params: hyperparameters recorded with such a run, over the module's.
        **run_options: further :func:`mlobs.run` arguments (``model``, ``tags``...).
    """

    def __init__(
        self,
        run_name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        **run_options: Any,
    ) -> None:
        super().__init__()
        self._scope = FitScope("lightning", run_name, params, run_options)

    @property
    def name(self) -> str:
        return "mlobs"

    @property
    def version(self) -> str:
        run = mlobs.active_run()
        return run.run_id if run is not None else "0"

    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kw: Any) -> None:
        with guard("integrations.lightning.log_hyperparams"):
            if mlobs.active_run() is None:  # else the run already holds them (or is the user's)
                values = vars(params) if isinstance(params, Namespace) else dict(params)
                self._scope.begin(self._scope.run_name or "lightning", values)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        with guard("integrations.lightning.log_metrics"):
            if mlobs.active_run() is None:
                self._scope.begin(self._scope.run_name or "lightning")
            log_metrics(metrics, step=step, skip=_SKIP)

    def finalize(self, status: str) -> None:
        # Lightning says "success" after every trainer entry point, "failed" after an exception
        with guard("integrations.lightning.finalize"):
            if status == "failed":
                self._scope.abandon()
            else:
                self._scope.end()


class MlobsCallback(Callback):  # type: ignore[misc]  # Any to mypy: see pyproject
    """A Lightning callback recording runs, epochs, loop spans and the outcome (see the module doc).

    Args:
        run_name: the run's name; the LightningModule's class name by default.
        params: hyperparameters recorded with the run, over the module's ``hparams``.
        **run_options: further :func:`mlobs.run` arguments (``model``, ``dataset``, ``tags``...).
    """

    def __init__(
        self,
        run_name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        **run_options: Any,
    ) -> None:
        super().__init__()
        self._scope = FitScope("lightning", run_name, params, run_options)
        self._record_metrics = True
        self._phases: list[str] = []

    # -- the run --------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        with guard("integrations.lightning.setup"):
            self._record_metrics = not any(isinstance(lg, MlobsLogger) for lg in trainer.loggers)
            self._scope.begin(
                type(pl_module).__name__, _hyperparameters(trainer, pl_module), {"stage": stage}
            )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        with guard("integrations.lightning.teardown"):
            self._scope.end()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        with guard("integrations.lightning.on_exception"):
            self._scope.end(exception)

    # -- epochs ---------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with guard("integrations.lightning.on_train_epoch_start"):
            self._scope.epoch_begin(trainer.current_epoch)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        with guard("integrations.lightning.on_train_batch_end"):
            rows = _batch_rows(batch)
            if rows:
                self._scope.add_samples(rows)
            mlobs.heartbeat()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with guard("integrations.lightning.on_train_epoch_end"):
            if self._record_metrics:
                log_metrics(trainer.callback_metrics, step=trainer.global_step, skip=_SKIP)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with guard("integrations.lightning.on_train_end"):
            self._scope.epoch_end()

    # -- loops other than training ----------------------------------------------------------
    def _phase_begin(self, name: str) -> None:
        with guard("integrations.lightning.phase"):
            self._phases.append(name)
            self._scope.phase_begin(name)

    def _phase_end(self, trainer: pl.Trainer, default_split: str | None) -> None:
        with guard("integrations.lightning.phase"):
            if not self._phases:
                return
            name = self._phases.pop()
            self._scope.phase_end(name)
            fitting = trainer.state.fn == "fit"
            if self._record_metrics and not fitting and name != "sanity_check":
                metrics = trainer.callback_metrics
                log_metrics(metrics, default_split=default_split, skip=_SKIP)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase_begin("sanity_check" if trainer.sanity_checking else "validation")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase_end(trainer, "val")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase_begin("test")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase_end(trainer, "test")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase_begin("predict")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase_end(trainer, None)


def _hyperparameters(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """What Lightning itself would hand a logger: the module's and the datamodule's hparams."""
    params: dict[str, Any] = {}
    datamodule = getattr(trainer, "datamodule", None)
    for owner in (datamodule, pl_module):
        hparams = getattr(owner, "hparams", None) if owner is not None else None
        if isinstance(hparams, Mapping):
            params.update(hparams)
    params.setdefault("max_epochs", trainer.max_epochs)
    return params


def _batch_rows(batch: Any) -> int | None:
    """Rows in a batch: a tensor's first dimension, or that of the first tensor inside a tuple,
    list or dict (the usual ``(x, y)`` and ``{"input_ids": ...}`` shapes)."""
    if isinstance(batch, list | tuple) and batch:
        batch = batch[0]
    elif isinstance(batch, Mapping) and batch:
        batch = next(iter(batch.values()))
    shape = getattr(batch, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    return None
