"""scikit-learn: fit and predict timed as steps, with model quality when the truth is known.

::

    from mlobs.instrument.integrations.sklearn import observe_fit, observe_predict

    model = observe_fit(RandomForestClassifier(), X_train, y_train)   # a run of its own...
    with mlobs.run("churn"):                                          # ...or the active one
        observe_fit(model, X_train, y_train)
        y_pred = observe_predict(model, X_test, y_test)               # quality in split "test"

``observe_fit`` records the fit as a ``fit`` step and the metrics ``fit_seconds`` and
``fit_rows_per_second``, in the active run or in a run of its own named after the estimator's
class, with its ``get_params()`` as params. ``observe_predict`` likewise records a ``predict``
step, ``predict_seconds`` and ``predict_rows_per_second`` (with ``split``), and, given
``y_true``, the quality KPIs of :mod:`mlobs.quality` (classifiers, with ``predict_proba`` scores
when there are, or regressors, told apart by scikit-learn). ``instrument(estimator)`` wraps an
estimator so that its ``fit`` and ``predict`` do the same. The estimator's exceptions propagate
unchanged, and the run they happen in is ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sklearn.base

import mlobs
from mlobs.instrument.integrations._lifecycle import flat_params, guard

__all__ = ["ObservedEstimator", "instrument", "observe_fit", "observe_predict"]


def observe_fit(
    estimator: Any,
    X: Any,
    y: Any = None,
    *,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    **fit_params: Any,
) -> Any:
    """Fit ``estimator`` on ``X`` (and ``y``), recording the fit; returns what ``fit`` returns.

    Args:
        run_name: the name of the run opened when none is active; the class name by default.
        params: hyperparameters recorded with such a run, over ``estimator.get_params()``.
        **fit_params: passed to ``estimator.fit``.
    """
    with _run_for(estimator, run_name, params, "fit"):
        start = time.perf_counter()
        with mlobs.step("fit"):
            fitted = estimator.fit(X, y, **fit_params)
        seconds = time.perf_counter() - start
        _log_timing("fit", seconds, X, None)
    return fitted


def observe_predict(
    estimator: Any,
    X: Any,
    y_true: Any = None,
    *,
    split: str = "test",
    run_name: str | None = None,
) -> Any:
    """Predict with ``estimator``, recording the time taken and, given ``y_true``, the quality.

    Args:
        y_true: the truth for ``X``; its quality KPIs are recorded when given.
        split: the ``split`` of the points recorded (``test``, ``val``...).
        run_name: the name of the run opened when none is active; the class name by default.

    Returns the predictions.
    """
    with _run_for(estimator, run_name, None, "predict"):
        start = time.perf_counter()
        with mlobs.step("predict"):
            y_pred = estimator.predict(X)
        _log_timing("predict", time.perf_counter() - start, X, split)
        if y_true is not None:
            with guard("integrations.sklearn.quality"):
                _log_quality(estimator, X, y_true, y_pred, split)
    return y_pred


class ObservedEstimator:
    """An estimator whose ``fit`` and ``predict`` are observed; anything else is the estimator's.
    Create it with :func:`instrument`."""

    def __init__(self, estimator: Any, run_name: str | None = None) -> None:
        self.estimator = estimator
        self.run_name = run_name

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> ObservedEstimator:
        observe_fit(self.estimator, X, y, run_name=self.run_name, **fit_params)
        return self

    def predict(self, X: Any, y_true: Any = None, *, split: str = "test") -> Any:
        return observe_predict(self.estimator, X, y_true, split=split, run_name=self.run_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.estimator, name)


def instrument(estimator: Any, *, run_name: str | None = None) -> ObservedEstimator:
    """Wrap ``estimator``: its ``fit`` and ``predict`` are recorded as :func:`observe_fit` and
    :func:`observe_predict` record them (``predict`` also takes ``y_true`` and ``split``)."""
    return ObservedEstimator(estimator, run_name)


@contextmanager
def _run_for(
    estimator: Any, run_name: str | None, params: Mapping[str, Any] | None, stage: str
) -> Iterator[None]:
    if mlobs.active_run() is not None:
        yield
        return
    with mlobs.run(
        run_name or type(estimator).__name__,
        params={**_estimator_params(estimator), **flat_params(params)},
        tags={"framework": "sklearn", "stage": stage},
    ):
        yield


def _estimator_params(estimator: Any) -> dict[str, Any]:
    with guard("integrations.sklearn.params"):
        params = estimator.get_params(deep=True)
        # a pipeline's steps are estimators themselves: their own parameters are listed too
        return flat_params({k: v for k, v in params.items() if not hasattr(v, "get_params")})
    return {}


def _rows(X: Any) -> int | None:
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        return None


def _log_timing(what: str, seconds: float, X: Any, split: str | None) -> None:
    values = {f"{what}_seconds": seconds}
    rows = _rows(X)
    if rows and seconds > 0:
        values[f"{what}_rows_per_second"] = rows / seconds
    mlobs.log(values, split=split)


def _log_quality(estimator: Any, X: Any, y_true: Any, y_pred: Any, split: str) -> None:
    from mlobs.quality import classification_quality, log_quality, regression_quality

    if sklearn.base.is_classifier(estimator):
        scores = None
        classes = getattr(estimator, "classes_", None)
        if hasattr(estimator, "predict_proba"):
            try:
                scores = estimator.predict_proba(X)
            except (AttributeError, NotImplementedError):  # e.g. SVC(probability=False)
                scores = None
        labels = list(classes) if classes is not None else None
        log_quality(
            classification_quality(y_true, y_pred, y_score=scores, labels=labels),
            labels={"split": split},
        )
    elif sklearn.base.is_regressor(estimator):
        log_quality(regression_quality(y_true, y_pred), labels={"split": split})
