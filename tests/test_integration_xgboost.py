"""XGBoost: MlobsCallback around a tiny real booster on the CPU (native and sklearn APIs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

xgboost = pytest.importorskip("xgboost", reason="the frameworks extra is not installed")

import numpy as np  # noqa: E402

import mlobs  # noqa: E402
from mlobs.instrument.integrations.xgboost import MlobsCallback  # noqa: E402
from mlobs.testing import recording  # noqa: E402
from tests.test_integration_shape import (  # noqa: E402
    BOOM,
    Boom,
    FitShape,
    fit_or_fail,
    fit_shape,
    no_run_left_current,  # noqa: F401  (an autouse fixture)
)

ROUNDS = 3


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    return x, (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)


def fit_tiny(tmp_path: Path, *, fail: bool = False) -> FitShape:
    """Boost ROUNDS rounds with mlobs recording; the uniform test uses it."""
    x, y = _data()
    dtrain = xgboost.DMatrix(x[:150], label=y[:150])
    dval = xgboost.DMatrix(x[150:], label=y[150:])
    rounds = [0]

    def objective(predt: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
        rounds[0] += 1
        if rounds[0] == 2:
            raise Boom("diverged")
        p = 1.0 / (1.0 + np.exp(-predt))
        return p - data.get_label(), p * (1.0 - p)

    params = {"max_depth": 2, "eta": 0.5, "objective": "binary:logistic", "nthread": 1}
    with recording(dir=tmp_path / "spool") as sink:
        train = lambda: xgboost.train(  # noqa: E731
            params,
            dtrain,
            num_boost_round=ROUNDS,
            evals=[(dtrain, "train"), (dval, "val")],
            obj=objective if fail else None,
            verbose_eval=False,
            callbacks=[MlobsCallback()],
        )
        fit_or_fail(train, fail, raised_in="objective")
    return fit_shape(sink)


def test_rounds_are_epochs_with_split_metrics(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path)
    assert shape.runs == [("xgboost", "finished")]
    assert shape.epochs == list(range(ROUNDS))
    assert shape.epochs_of("logloss", "train") == list(range(ROUNDS))
    assert shape.epochs_of("logloss", "val") == list(range(ROUNDS))
    assert shape.params["max_depth"] == 2 and shape.params["eta"] == 0.5
    assert shape.params["objective"] == "binary:logistic"
    assert shape.tags == {"framework": "xgboost"}


def test_failing_objective_fails_the_run(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path, fail=True)
    assert shape.runs == [("xgboost", "failed")]
    assert shape.error_types == [BOOM]
    assert shape.epochs == [0, 1]


def test_sklearn_api_early_stopping_and_an_active_run(tmp_path: Path) -> None:
    x, y = _data()
    with recording(dir=tmp_path / "spool") as sink:
        with mlobs.run("outer", params={"mine": 1}):
            model = xgboost.XGBClassifier(
                n_estimators=50,
                max_depth=2,
                n_jobs=1,
                early_stopping_rounds=2,
                callbacks=[MlobsCallback(run_name="ignored")],
            )
            model.fit(x[:150], y[:150], eval_set=[(x[150:], y[150:])], verbose=False)
        booster = model.get_booster()
        assert booster.update.__func__ is xgboost.Booster.update  # the watch was taken off
    shape = fit_shape(sink)
    assert shape.runs == [("outer", "finished")]
    assert shape.splits("logloss") == {"validation_0"}
    assert shape.epochs == list(range(booster.num_boosted_rounds()))
    assert len(shape.epochs) < 50
