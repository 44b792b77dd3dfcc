"""scikit-learn: observe_fit, observe_predict and instrument around real estimators."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed")

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import mlobs
from mlobs.instrument.integrations.sklearn import instrument, observe_fit, observe_predict
from mlobs.testing import recording
from tests.test_integration_shape import (
    FitShape,
    fit_shape,
    no_run_left_current,  # noqa: F401  (an autouse fixture)
)


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    return x, (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)


def fit_tiny(tmp_path: Path, *, fail: bool = False) -> FitShape:
    """Fit a classifier with mlobs recording; the uniform test uses it."""
    x, y = _data()
    if fail:
        y = np.zeros_like(y)  # one class: LogisticRegression refuses to fit
    with recording(dir=tmp_path / "spool") as sink:
        if fail:
            with pytest.raises(ValueError, match="class"):
                observe_fit(LogisticRegression(C=0.5), x, y)
        else:
            observe_fit(LogisticRegression(C=0.5), x, y)
    return fit_shape(sink)


def test_fit_and_predict_record_timing_and_quality(tmp_path: Path) -> None:
    x, y = _data()
    with recording(dir=tmp_path / "spool") as sink:
        model = observe_fit(LogisticRegression(C=0.5), x[:150], y[:150])
        y_pred = observe_predict(model, x[150:], y[150:], split="val")
    assert y_pred.shape == (50,)
    shape = fit_shape(sink)
    assert shape.runs == [("LogisticRegression", "finished"), ("LogisticRegression", "finished")]
    assert shape.params["C"] == 0.5
    assert shape.tags == {"framework": "sklearn", "stage": "fit"}
    assert {"fit_seconds", "fit_rows_per_second"} <= {n for n, _, _ in shape.metrics}
    assert shape.splits("predict_seconds") == {"val"}
    accuracy = sink.metrics("quality_accuracy")
    assert len(accuracy) == 1 and accuracy[0].attrs == {"split": "val"}
    assert accuracy[0].value is not None and accuracy[0].value > 0.8
    assert sink.values("quality_roc_auc")  # scores from predict_proba
    assert [s.name for s in sink.spans() if s.attrs["span_kind"] == "step"] == ["fit", "predict"]


def test_regressor_pipeline_inside_a_run_via_instrument(tmp_path: Path) -> None:
    x, _ = _data()
    target = x @ np.array([1.0, -2.0, 0.5, 0.0])
    with recording(dir=tmp_path / "spool") as sink, mlobs.run("pipeline"):
        model = instrument(make_pipeline(StandardScaler(), LinearRegression()))
        model.fit(x[:150], target[:150])
        model.predict(x[150:], target[150:])
        assert model.score(x[150:], target[150:]) > 0.99  # the estimator's own methods
    shape = fit_shape(sink)
    assert shape.runs == [("pipeline", "finished")]
    r2 = sink.values("quality_r2")
    assert len(r2) == 1 and r2[0] is not None and r2[0] > 0.99
    assert not sink.metrics("quality_accuracy")


def test_failing_fit_fails_its_run(tmp_path: Path) -> None:
    shape = fit_tiny(tmp_path, fail=True)
    assert shape.runs == [("LogisticRegression", "failed")]
    assert shape.error_types == ["builtins.ValueError"]
    failed = [s for s in shape.metrics if s[0] == "fit_seconds"]
    assert failed == []  # no timing for a fit that did not finish
