"""LightGBM with mlobs: up to fifty boosting rounds, each an epoch, with early stopping.

MLOBS_DIR=/tmp/mlobs-demo python examples/lightgbm_example.py
"""

from __future__ import annotations

import lightgbm
import numpy as np
from _show import show_runs

from mlobs.instrument.integrations.lightgbm import mlobs_callback


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 5))
    y = (x[:, 0] - x[:, 1] + 0.5 * rng.normal(size=1000) > 0).astype(int)
    train_set = lightgbm.Dataset(x[:800], label=y[:800])
    val_set = lightgbm.Dataset(x[800:], label=y[800:], reference=train_set)
    lightgbm.train(
        {"objective": "binary", "num_leaves": 7, "learning_rate": 0.2, "verbose": -1},
        train_set,
        num_boost_round=50,
        valid_sets=[train_set, val_set],
        valid_names=["train", "val"],  # the names become the splits
        callbacks=[
            mlobs_callback(run_name="lightgbm-churn"),
            lightgbm.early_stopping(5, verbose=False),
        ],
    )
    show_runs()


if __name__ == "__main__":
    main()
