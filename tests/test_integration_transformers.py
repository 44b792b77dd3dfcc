"""Hugging Face transformers: MlobsCallback around a tiny BERT built from a config (no
downloads), trained on random token ids on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers", reason="the frameworks extra is not installed")
torch = pytest.importorskip("torch", reason="the frameworks extra is not installed")

import mlobs  # noqa: E402
from mlobs.instrument.integrations.transformers import MlobsCallback  # noqa: E402
from mlobs.testing import recording  # noqa: E402
from tests.test_integration_shape import (  # noqa: E402
    BOOM,
    Boom,
    FitShape,
    fit_or_fail,
    fit_shape,
    no_run_left_current,  # noqa: F401  (an autouse fixture)
)

EPOCHS = 3
ROWS, BATCH, SEQ = 32, 8, 8


class TinyBert(transformers.BertForSequenceClassification):  # type: ignore[misc]
    """A BERT classifier whose forward raises on its ``fail_at``-th training call."""

    fail_at: int | None = None
    calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.training:
            self.calls += 1
            if self.fail_at is not None and self.calls >= self.fail_at:
                raise Boom("diverged")
        return super().forward(*args, **kwargs)


class Tokens(torch.utils.data.Dataset):  # type: ignore[misc]
    def __init__(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (ROWS, SEQ), generator=gen)
        self.labels = (self.ids[:, 0] > 25).long()

    def __len__(self) -> int:
        return ROWS

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _model(fail_at: int | None = None) -> TinyBert:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=SEQ,
        num_labels=2,
    )
    model = TinyBert(config)
    model.fail_at = fail_at
    return model


def _trainer(tmp_path: Path, model: TinyBert, epochs: int = EPOCHS) -> Any:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=epochs,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        learning_rate=1e-3,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        # TinyBert.forward takes **kwargs: keep every column, and say which one holds labels
        remove_unused_columns=False,
        label_names=["labels"],
        seed=0,
    )
    return transformers.Trainer(
        model=model,
        args=args,
        train_dataset=Tokens(0),
        eval_dataset=Tokens(1),
        callbacks=[MlobsCallback()],
    )


def fit_tiny(tmp_path: Path, *, fail: bool = False) -> FitShape:
    """Train the tiny BERT for EPOCHS epochs with mlobs recording; the uniform test uses it."""
    # the steps of epoch 0, plus two: the failure comes in epoch 1
    model = _model(fail_at=ROWS // BATCH + 2 if fail else None)
    with recording(dir=tmp_path / "spool") as sink:
        trainer = _trainer(tmp_path, model)
        fit_or_fail(trainer.train, fail, raised_in="forward")
    return fit_shape(sink)


def test_train_records_run_epochs_and_split_metrics(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path)
    assert shape.runs == [("TinyBert", "finished")]
    assert shape.epochs == list(range(EPOCHS))
    assert shape.epochs_of("loss", "train") == list(range(EPOCHS))
    assert shape.epochs_of("loss", "eval") == list(range(EPOCHS))
    # the closing summary: after the epochs, under its own names
    assert {("train_runtime", None, None), ("train_loss", None, None)} <= shape.metrics
    assert shape.params["num_train_epochs"] == EPOCHS
    assert shape.params["learning_rate"] == 1e-3
    assert shape.tags == {"framework": "transformers"}


def test_failing_training_step_fails_the_run(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path, fail=True)
    assert shape.runs == [("TinyBert", "failed")]
    assert shape.error_types == [BOOM]
    assert shape.epochs == [0, 1]


def test_evaluate_alone_and_training_in_an_active_run(tmp_path: Path) -> None:
    with recording(dir=tmp_path / "spool") as sink:
        trainer = _trainer(tmp_path, _model(), epochs=1)
        with mlobs.run("outer"):
            trainer.train()
        assert "training_step" not in vars(trainer)  # the watch was taken off
        trainer.evaluate()
    shape = fit_shape(sink)
    assert shape.runs == [("outer", "finished"), ("TinyBert", "finished")]
    assert shape.epochs == [0]
    assert shape.epochs_of("loss", "eval") == [0]
    assert ("loss", "eval", None) in shape.metrics  # evaluate() alone
