"""Keras 3 (any backend): a callback recording each ``fit`` as a run.

::

    from mlobs.instrument.integrations.keras import MlobsCallback

    model.fit(x, y, epochs=3, validation_split=0.2, callbacks=[MlobsCallback()])

One run per ``fit`` (or the active run, inside ``with mlobs.run(...)``), named after the model's
class, with ``fit``'s settings and the optimizer's config as params. Each epoch is an
``mlobs.epoch``; the logs Keras hands ``on_epoch_end`` become its metrics, ``loss`` in split
``train`` and ``val_loss`` as ``loss`` in split ``val``. Validation inside ``fit`` is a
``validation`` span; ``evaluate`` alone is a run of its own with its metrics in split ``test``.

Keras does not tell callbacks that ``fit`` raised. The callback watches the model's training
function, so an exception from the model, its loss or its optimizer fails the run with that
exception; one raised elsewhere (another callback, the data) fails it when this callback starts
its next fit, or at exit (see :mod:`mlobs.instrument.integrations`). The exception propagates
unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

import mlobs
from mlobs.instrument.integrations._lifecycle import FitScope, guard, log_metrics

__all__ = ["MlobsCallback"]


class MlobsCallback(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
    """Records ``fit`` as a run, its epochs and their metrics (see the module doc).

    Args:
        run_name: the run's name; the model's class name by default.
        params: hyperparameters recorded with the run, over what Keras reports.
        batch_size: samples per batch, to record ``epoch_samples_per_second`` (Keras does not
            tell callbacks its batch size).
        **run_options: further :func:`mlobs.run` arguments (``model``, ``dataset``, ``tags``...).
    """

    def __init__(
        self,
        run_name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        **run_options: Any,
    ) -> None:
        super().__init__()
        self._scope = FitScope("keras", run_name, params, run_options)
        self._batch_size = batch_size
        self._fitting = False
        self._evaluating_alone = False

    # -- fit --------------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_train_begin"):
            self._fitting = True
            self._scope.begin(type(self.model).__name__, self._hyperparameters())
            self._scope.watch(self.model, "train_function")

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_epoch_begin"):
            self._scope.epoch_begin(epoch)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_train_batch_end"):
            if self._batch_size:
                self._scope.add_samples(self._batch_size)
            mlobs.heartbeat()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_epoch_end"):
            log_metrics(logs or {}, default_split="train")
            self._scope.epoch_end()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_train_end"):
            self._fitting = False
            self._scope.end()

    # -- evaluate and predict ---------------------------------------------------------------
    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_test_begin"):
            if self._fitting:
                self._scope.phase_begin("validation")
                return
            self._evaluating_alone = True
            self._scope.begin(type(self.model).__name__, tags={"stage": "evaluate"})
            self._scope.watch(self.model, "test_function")
            self._scope.phase_begin("test")

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_test_end"):
            if not self._evaluating_alone:
                self._scope.phase_end("validation")  # fit's on_epoch_end has the val_ logs
                return
            self._evaluating_alone = False
            self._scope.phase_end("test")
            log_metrics(logs or {}, default_split="test")
            self._scope.end()

    def on_predict_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_predict_begin"):
            self._scope.phase_begin("predict")

    def on_predict_end(self, logs: Mapping[str, Any] | None = None) -> None:
        with guard("integrations.keras.on_predict_end"):
            self._scope.phase_end("predict")

    def _hyperparameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {k: v for k, v in (self.params or {}).items() if k != "verbose"}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            params["optimizer"] = optimizer.get_config()
        return params
