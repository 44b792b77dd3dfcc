"""Keras 3 on the torch backend: MlobsCallback around a tiny real model on the CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 without TensorFlow
keras = pytest.importorskip("keras", reason="the frameworks extra is not installed")

import numpy as np  # noqa: E402

import mlobs  # noqa: E402
from mlobs.instrument.integrations.keras import MlobsCallback  # noqa: E402
from mlobs.testing import recording  # noqa: E402
from tests.test_integration_shape import (  # noqa: E402
    BOOM,
    Boom,
    FitShape,
    fit_or_fail,
    fit_shape,
    no_run_left_current,  # noqa: F401  (an autouse fixture)
)

# Keras' own numpy 2 deprecation warnings, not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

EPOCHS = 3
ROWS, BATCH = 64, 16


class FailingLayer(keras.layers.Layer):  # type: ignore[misc]
    """Passes its input through; raises on its ``fail_at``-th training call (a model that
    breaks)."""

    def __init__(self, fail_at: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_at = fail_at
        self.calls = 0

    def call(self, x: Any, training: bool | None = None) -> Any:
        self.calls += bool(training)
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise Boom("diverged")
        return x


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64")


def _model(fail_at: int | None = None) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            FailingLayer(fail_at),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def fit_tiny(tmp_path: Path, *, fail: bool = False) -> FitShape:
    """Fit the tiny model for EPOCHS epochs with mlobs recording; the uniform test uses it."""
    x, y = _data()
    # the training batches of epoch 0, plus two: the failure comes in epoch 1
    model = _model(fail_at=(ROWS * 3 // 4) // BATCH + 2 if fail else None)
    with recording(dir=tmp_path / "spool") as sink:
        fit = lambda: model.fit(  # noqa: E731
            x,
            y,
            epochs=EPOCHS,
            batch_size=BATCH,
            validation_split=0.25,
            shuffle=False,
            verbose=0,
            callbacks=[MlobsCallback(batch_size=BATCH)],
        )
        fit_or_fail(fit, fail, raised_in="call")
    return fit_shape(sink)


def test_fit_records_run_epochs_and_split_metrics(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path)
    assert shape.runs == [("Sequential", "finished")]
    assert shape.epochs == list(range(EPOCHS))
    assert shape.epochs_of("loss", "train") == list(range(EPOCHS))
    assert shape.epochs_of("loss", "val") == list(range(EPOCHS))
    assert shape.params["epochs"] == EPOCHS
    assert shape.params["optimizer.name"] == "sgd"
    assert shape.params["optimizer.learning_rate"] == pytest.approx(0.1)
    assert shape.tags == {"framework": "keras"}


def test_failing_fit_is_failed_and_the_exception_propagates(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path, fail=True)
    assert shape.runs == [("Sequential", "failed")]
    assert shape.error_types == [BOOM]
    assert shape.epochs == [0, 1]


def test_spans_throughput_evaluate_and_an_active_run(tmp_path: Path) -> None:
    x, y = _data()
    model = _model()
    with recording(dir=tmp_path / "spool") as sink:
        with mlobs.run("outer"):
            model.fit(
                x,
                y,
                epochs=2,
                batch_size=BATCH,
                validation_data=(x, y),
                verbose=0,
                callbacks=[MlobsCallback(batch_size=BATCH)],
            )
        model.evaluate(x, y, batch_size=BATCH, verbose=0, callbacks=[MlobsCallback()])
    shape = fit_shape(sink)
    assert shape.runs == [("outer", "finished"), ("Sequential", "finished")]
    assert [s.name for s in sink.spans() if s.attrs["span_kind"] == "step"] == [
        "validation",
        "validation",
        "test",
    ]
    rates = sink.values("epoch_samples_per_second")
    assert len(rates) == 2 and all(r is not None and r > 0 for r in rates)
    assert ("loss", "test", None) in shape.metrics
