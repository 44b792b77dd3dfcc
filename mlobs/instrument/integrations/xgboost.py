"""XGBoost: a training callback recording each boosting run, one epoch per boosting round.

::

    from mlobs.instrument.integrations.xgboost import MlobsCallback

    booster = xgboost.train(params, dtrain, num_boost_round=50,
                            evals=[(dtrain, "train"), (dval, "val")],
                            callbacks=[MlobsCallback()])
    # or the sklearn API: XGBClassifier(callbacks=[MlobsCallback()]).fit(X, y, eval_set=[...])

One run per training (or the active run, inside ``with mlobs.run(...)``), with the booster's
configuration as params (the learner's settings and, for tree boosters, the tree parameters).
Round ``i`` is ``mlobs.epoch(i)``; each evaluation set's metrics are recorded under the
metric's own name with the set's name as split: ``validation_0-logloss`` becomes ``logloss``
in split ``validation_0``, at step ``i``. Early stopping ends the run as ``finished``.

XGBoost does not tell callbacks that training raised; the callback watches the booster's
``update``, so an exception there (a custom objective, the booster itself) fails the run with
that exception, and one raised elsewhere fails it when this callback starts its next training,
or at exit (see :mod:`mlobs.instrument.integrations`). The exception propagates unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import xgboost

from mlobs.instrument.integrations._lifecycle import FitScope, guard, log_metrics

__all__ = ["MlobsCallback"]


class MlobsCallback(xgboost.callback.TrainingCallback):  # type: ignore[misc]  # see pyproject
    """Records a boosting run, its rounds as epochs and the evaluation metrics (see the
    module doc).

    Args:
        run_name: the run's name; ``xgboost`` by default.
        params: hyperparameters recorded with the run, over the booster's configuration.
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
        self._scope = FitScope("xgboost", run_name, params, run_options)

    def before_training(self, model: Any) -> Any:
        with guard("integrations.xgboost.before_training"):
            self._scope.begin("xgboost", _configuration(model))
            self._scope.watch(model, "update")
        return model

    def before_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        with guard("integrations.xgboost.before_iteration"):
            self._scope.epoch_begin(epoch)
        return False

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        with guard("integrations.xgboost.after_iteration"):
            for data, metrics in (evals_log or {}).items():
                latest = {name: _mean(values[-1]) for name, values in metrics.items() if values}
                log_metrics(latest, default_split=str(data), step=epoch, split_names=False)
            self._scope.epoch_end()
        return False

    def after_training(self, model: Any) -> Any:
        with guard("integrations.xgboost.after_training"):
            self._scope.end()
        return model


def _mean(value: Any) -> Any:
    # xgboost.cv logs (mean, standard deviation) pairs
    return value[0] if isinstance(value, tuple) else value


def _configuration(model: Any) -> dict[str, Any]:
    """The settings a booster trains with, from its JSON configuration."""
    save_config = getattr(model, "save_config", None)
    if save_config is None:  # xgboost.cv's packed boosters
        return {}
    learner = json.loads(save_config()).get("learner", {})
    params: dict[str, Any] = {}
    params.update(learner.get("learner_train_param", {}))
    params.update(learner.get("gradient_booster", {}).get("tree_train_param", {}))
    model_param = learner.get("learner_model_param", {})
    for key in ("num_feature", "num_class"):
        if key in model_param:
            params[key] = model_param[key]
    return {key: _parsed(value) for key, value in params.items()}


def _parsed(value: Any) -> Any:
    """XGBoost writes every setting as a string: numbers become numbers again (float32 ones
    rounded back to what was asked for: ``0.300000012`` is 0.3)."""
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(f"{float(value):.7g}")
    except ValueError:
        return value
