"""LightGBM: a callback recording each training as a run, one epoch per boosting round.

::

    from mlobs.instrument.integrations.lightgbm import mlobs_callback

    booster = lightgbm.train(params, train_set, num_boost_round=50,
                             valid_sets=[train_set, val_set], valid_names=["train", "val"],
                             callbacks=[mlobs_callback()])
    # or the sklearn API: LGBMClassifier().fit(X, y, eval_set=[...], callbacks=[mlobs_callback()])

One run per training (or the active run, inside ``with mlobs.run(...)``), with LightGBM's
parameters as params. Round ``i`` is ``mlobs.epoch(i)``, from the start of the round to the
end of its evaluation (or to the next round, without evaluation); each evaluation result is
recorded under the metric's name with the dataset's name as split (``binary_logloss`` in split
``val``), at step ``i``.

LightGBM tells its callbacks neither that training ended (early stopping ends it from inside
another callback) nor that it raised. This callback runs before each round and watches the
booster: it takes the evaluation results as LightGBM computes them, and ends the run when
``lightgbm.train`` saves the finished model, which it does after the last round or an early
stop (unless ``keep_training_booster=True``: such a run ends as ``finished`` when this callback
starts its next training, or at exit). An exception from the booster's ``update`` (a custom
objective) fails the run at once; one from elsewhere fails it when this callback starts its
next training, or at exit (see :mod:`mlobs.instrument.integrations`). The exception propagates
unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import lightgbm

from mlobs.instrument.integrations._lifecycle import FitScope, guard, log_metrics

__all__ = ["MlobsCallback", "mlobs_callback"]


class MlobsCallback:
    """A LightGBM callback (run before each round) recording runs, rounds as epochs and
    evaluation metrics. Create it with :func:`mlobs_callback`.

    Attributes:
        order: where LightGBM runs it among the callbacks of its kind: first (LightGBM numbers
            callbacks that have no order from ``-len(callbacks)``).
        before_iteration: ``True``: LightGBM calls it before each round.
    """

    before_iteration = True

    def __init__(
        self,
        run_name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        order: int = -1000,
        **run_options: Any,
    ) -> None:
        self.order = order
        self._booster: Any = None
        self._round = 0
        self._scope = FitScope(
            "lightgbm", run_name, params, run_options, ended_quietly=self._ended_normally
        )

    def __call__(self, env: lightgbm.callback.CallbackEnv) -> None:
        with guard("integrations.lightgbm.callback"):
            model = env.model
            if model is not self._booster:  # a new training
                self._scope.begin("lightgbm", env.params)
                self._booster = model
                self._scope.watch(model, "update")
                self._scope.watch(model, "eval_train", self._evaluated)
                self._scope.watch(model, "eval_valid", self._evaluated_round)
                self._scope.watch(model, "model_to_string", self._saved)
            self._round = env.iteration
            self._scope.epoch_begin(env.iteration)

    def _evaluated(self, results: Sequence[Any]) -> None:
        by_split: dict[str, dict[str, Any]] = {}
        for item in results or ():
            # (dataset name, metric name, value, is_higher_better): lightgbm.train's shape
            if isinstance(item, tuple) and len(item) >= 3 and isinstance(item[0], str):
                by_split.setdefault(item[0], {})[str(item[1])] = item[2]
        for split, values in by_split.items():
            log_metrics(values, default_split=split, step=self._round, split_names=False)

    def _evaluated_round(self, results: Sequence[Any]) -> None:
        # LightGBM evaluates the validation sets last: the round is over
        self._evaluated(results)
        self._scope.epoch_end()

    def _saved(self, model_string: Any) -> None:
        # lightgbm.train saves the model once its loop is over (after setting best_score)
        if self._ended_normally():
            self._scope.end()

    def _ended_normally(self) -> bool:
        """Whether the training finished its loop (all rounds, or an early stop):
        ``lightgbm.train`` sets ``best_score`` only then, ``best_iteration`` on an early stop."""
        booster = self._booster
        return isinstance(getattr(booster, "best_score", None), defaultdict) or (
            getattr(booster, "best_iteration", 0) > 0
        )


def mlobs_callback(
    run_name: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    **run_options: Any,
) -> MlobsCallback:
    """A LightGBM callback recording the training in mlobs (see the module doc).

    Args:
        run_name: the run's name; ``lightgbm`` by default.
        params: hyperparameters recorded with the run, over LightGBM's parameters.
        **run_options: further :func:`mlobs.run` arguments (``model``, ``dataset``, ``tags``...).
    """
    return MlobsCallback(run_name, params=params, **run_options)
