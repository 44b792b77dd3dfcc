"""Hugging Face transformers: a ``TrainerCallback`` recording each ``Trainer.train`` as a run.

::

    from mlobs.instrument.integrations.transformers import MlobsCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[MlobsCallback()])
    trainer.train()

One run per ``train`` (or the active run, inside ``with mlobs.run(...)``), named after the
model's class, with the ``TrainingArguments`` as params (those that are set). Each epoch is an
``mlobs.epoch``; it ends when the next one starts or training ends, so it holds the evaluation,
logging and checkpointing the Trainer does at the epoch's end. What the Trainer logs becomes
metrics at its global step: ``loss``, ``grad_norm`` and ``learning_rate`` in split ``train``,
``eval_loss`` as ``loss`` in split ``eval``; the closing summary is recorded after the last
epoch under its own names (``train_runtime``, ``train_loss``: the mean loss of the training...).
``evaluate`` alone is a run of its own.

The Trainer does not tell callbacks that training raised. The callback finds the Trainer that
called it and watches its ``training_step`` (forward and backward), so an exception there fails
the run with that exception; one from elsewhere fails it when this callback starts its next
training, or at exit (see :mod:`mlobs.instrument.integrations`). The exception propagates unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

import transformers

import mlobs
from mlobs.instrument.integrations._lifecycle import FitScope, guard, log_metrics

__all__ = ["MlobsCallback"]

_SKIP = frozenset(("epoch", "step", "total_flos"))
_SUMMARY_KEY = "train_runtime"  # only in the Trainer's closing summary of a training
_FRAMES_TO_TRAINER = 8  # our hook <- CallbackHandler.call_event <- on_... <- the Trainer


class MlobsCallback(transformers.TrainerCallback):  # type: ignore[misc]  # see pyproject
    """Records ``Trainer.train`` as a run, its epochs and what the Trainer logs (see the
    module doc).

    Args:
        run_name: the run's name; the model's class name by default.
        params: hyperparameters recorded with the run, over the ``TrainingArguments``.
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
        self._scope = FitScope("transformers", run_name, params, run_options)
        self._training = False

    def on_train_begin(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        with guard("integrations.transformers.on_train_begin"):
            self._training = True
            self._scope.begin(_model_name(kwargs.get("model")), _arguments(args))
            trainer = _calling_trainer()
            if trainer is not None:
                self._scope.watch(trainer, "training_step")

    def on_epoch_begin(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        with guard("integrations.transformers.on_epoch_begin"):
            self._scope.epoch_begin(round(state.epoch or 0))

    def on_step_end(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        with guard("integrations.transformers.on_step_end"):
            mlobs.heartbeat()

    def on_log(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with guard("integrations.transformers.on_log"):
            logs = logs or {}
            if self._training:
                if _SUMMARY_KEY in logs:
                    # the summary is about the whole training: kept apart from the epochs, and
                    # under its own names (its train_loss is the mean loss of the training)
                    self._scope.epoch_end()
                    log_metrics(logs, step=state.global_step, skip=_SKIP, split_names=False)
                else:
                    log_metrics(logs, default_split="train", step=state.global_step, skip=_SKIP)
                return
            # evaluate() (or predict()) outside training: a run of its own
            self._scope.begin(_model_name(kwargs.get("model")), _arguments(args))
            log_metrics(logs, default_split="eval", step=state.global_step, skip=_SKIP)
            self._scope.end()

    def on_evaluate(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        # the metrics came through on_log already
        with guard("integrations.transformers.on_evaluate"):
            mlobs.heartbeat()

    def on_train_end(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        with guard("integrations.transformers.on_train_end"):
            self._training = False
            self._scope.end()


def _model_name(model: Any) -> str:
    return type(model).__name__ if model is not None else "transformers"


def _arguments(args: transformers.TrainingArguments) -> dict[str, Any]:
    """The training arguments that are set (the rest are ``None``)."""
    settings: dict[str, Any] = args.to_dict()
    return {k: v for k, v in settings.items() if v is not None and v != ""}


def _calling_trainer() -> transformers.Trainer | None:
    """The Trainer whose callback handler called this hook: the Trainer does not pass itself."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_FRAMES_TO_TRAINER):
        if frame is None:
            break
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, transformers.Trainer):
            return candidate
        frame = frame.f_back
    return None
