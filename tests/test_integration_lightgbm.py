"""LightGBM: mlobs_callback around a tiny real booster on the CPU (native and sklearn APIs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

lightgbm = pytest.importorskip("lightgbm", reason="the frameworks extra is not installed")

import numpy as np  # noqa: E402

import mlobs  # noqa: E402
from mlobs.instrument.integrations.lightgbm import mlobs_callback  # noqa: E402
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
PARAMS = {
    "objective": "binary",
    "num_leaves": 4,
    "learning_rate": 0.5,
    "min_data_in_leaf": 5,
    "num_threads": 1,
    "verbose": -1,
}


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    return x, (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)


def fit_tiny(tmp_path: Path, *, fail: bool = False) -> FitShape:
    """Boost ROUNDS rounds with mlobs recording; the uniform test uses it."""
    x, y = _data()
    train_set = lightgbm.Dataset(x[:150], label=y[:150])
    val_set = lightgbm.Dataset(x[150:], label=y[150:], reference=train_set)
    rounds = [0]

    def objective(preds: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
        rounds[0] += 1
        if rounds[0] == 2:
            raise Boom("diverged")
        p = 1.0 / (1.0 + np.exp(-preds))
        return p - data.get_label(), p * (1.0 - p)

    params = {**PARAMS, "objective": objective} if fail else PARAMS
    with recording(dir=tmp_path / "spool") as sink:
        train = lambda: lightgbm.train(  # noqa: E731
            params,
            train_set,
            num_boost_round=ROUNDS,
            valid_sets=[train_set, val_set],
            valid_names=["train", "val"],
            callbacks=[mlobs_callback()],
        )
        fit_or_fail(train, fail, raised_in="objective")
    return fit_shape(sink)


def test_rounds_are_epochs_with_split_metrics(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path)
    assert shape.runs == [("lightgbm", "finished")]
    assert shape.epochs == list(range(ROUNDS))
    assert shape.epochs_of("binary_logloss", "train") == list(range(ROUNDS))
    assert shape.epochs_of("binary_logloss", "val") == list(range(ROUNDS))
    assert shape.params["num_leaves"] == 4 and shape.params["learning_rate"] == 0.5
    assert shape.tags == {"framework": "lightgbm"}


def test_failing_objective_fails_the_run(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path, fail=True)
    assert shape.runs == [("lightgbm", "failed")]
    assert shape.error_types == [BOOM]
    assert shape.epochs == [0, 1]


@pytest.mark.filterwarnings("ignore:The argument 'eval_set' is deprecated")
def test_early_stopping_in_the_sklearn_api_ends_the_run(tmp_path: Path) -> None:
    x, y = _data()
    callback = mlobs_callback(run_name="gbm")
    with recording(dir=tmp_path / "spool") as sink:
        model = lightgbm.LGBMClassifier(
            n_estimators=60,
            num_leaves=4,
            learning_rate=0.5,
            min_child_samples=5,
            n_jobs=1,
            verbose=-1,
        )
        for _ in range(2):
            model.fit(
                x[:150],
                y[:150],
                eval_set=[(x[150:], y[150:])],
                callbacks=[callback, lightgbm.early_stopping(2, verbose=False)],
            )
        rounds_run = model.best_iteration_ + 2  # the best round, then two without progress
        with mlobs.run("outer"):
            model.fit(x[:150], y[:150], callbacks=[callback])  # no evaluation: no metrics
        assert not any(a in vars(model.booster_) for a in ("update", "eval_valid"))
        assert mlobs.active_run() is None  # every run ended with its training
    shape = fit_shape(sink)
    assert shape.runs == [("gbm", "finished"), ("gbm", "finished"), ("outer", "finished")]
    assert rounds_run < 60
    assert shape.splits("binary_logloss") == {"valid_0"}
    runs = sorted(sink.runs.values(), key=lambda r: r.start_ns)
    first = [r.epoch for r in sink.metrics("epoch_duration_seconds") if r.run_id == runs[0].run_id]
    assert first == list(range(rounds_run))


def test_keep_training_booster_ends_at_the_next_training(tmp_path: Path) -> None:
    x, y = _data()
    callback = mlobs_callback()
    with recording(dir=tmp_path / "spool") as sink:
        for _ in range(2):
            lightgbm.train(
                PARAMS,
                lightgbm.Dataset(x, label=y),
                num_boost_round=2,
                keep_training_booster=True,  # nothing says the training is over...
                callbacks=[callback],
            )
        assert mlobs.active_run() is not None  # ...so the second run is still open
        callback._scope.abandon()  # what the next training (or the exit) does
    shape = fit_shape(sink)
    assert shape.runs == [("lightgbm", "finished"), ("lightgbm", "finished")]
    assert shape.epochs == [0, 1, 0, 1]
