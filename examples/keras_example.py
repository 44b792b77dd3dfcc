"""Keras 3 with mlobs, on the torch backend: a tiny classifier, three epochs on the CPU.

MLOBS_DIR=/tmp/mlobs-demo python examples/keras_example.py
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported; no TensorFlow needed

import keras
import numpy as np
from _show import show_runs

from mlobs.instrument.integrations.keras import MlobsCallback


def main() -> None:
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # loss and accuracy in split "train", val_loss and val_accuracy as loss/accuracy in "val"
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=32,
        validation_split=0.25,
        verbose=0,
        callbacks=[MlobsCallback(batch_size=32)],
    )
    show_runs()


if __name__ == "__main__":
    main()
