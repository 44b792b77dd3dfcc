"""XGBoost with mlobs: twenty boosting rounds, each an epoch, on synthetic data.

MLOBS_DIR=/tmp/mlobs-demo python examples/xgboost_example.py
"""

from __future__ import annotations

import numpy as np
import xgboost
from _show import show_runs

from mlobs.instrument.integrations.xgboost import MlobsCallback


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 5))
    y = (x[:, 0] - x[:, 1] + 0.5 * rng.normal(size=1000) > 0).astype(int)
    dtrain = xgboost.DMatrix(x[:800], label=y[:800])
    dval = xgboost.DMatrix(x[800:], label=y[800:])
    xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "eval_metric": "logloss"},
        dtrain,
        num_boost_round=20,
        evals=[(dtrain, "train"), (dval, "val")],  # the names become the splits
        early_stopping_rounds=5,
        verbose_eval=False,
        callbacks=[MlobsCallback(run_name="xgboost-churn")],
    )
    show_runs()


if __name__ == "__main__":
    main()
