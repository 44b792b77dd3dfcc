"""Regression KPIs: hand-computed answers, scikit-learn on random data, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlobs.quality import RegressionQuality, regression_quality


def test_known_answers() -> None:
    # errors 0.5, 0, -1, 1 against y_true 1, 2, 3, 4 (mean 2.5, total sum of squares 5)
    r = regression_quality([1, 2, 3, 4], [1.5, 2, 2, 5])
    assert r.n == 4
    assert r.mae == pytest.approx(2.5 / 4)
    assert r.rmse == pytest.approx(math.sqrt(2.25 / 4))
    assert r.mape == pytest.approx((0.5 / 1 + 0 + 1 / 3 + 1 / 4) / 4)
    assert r.r2 == pytest.approx(1 - 2.25 / 5)
    assert r.reasons == []


def test_nan_rows_are_dropped_and_counted() -> None:
    r = regression_quality([1.0, math.nan, 3.0, 4.0], [2.0, 1.0, math.nan, 4.0])
    assert r.n == 2
    assert r.mae == pytest.approx(0.5)
    assert "2 rows with NaN left out" in r.reasons


def test_zero_true_values_are_left_out_of_mape_only() -> None:
    r = regression_quality([0, 2, 4], [1, 3, 4])
    assert r.n == 3
    assert r.mae == pytest.approx(2 / 3)
    assert r.mape == pytest.approx((1 / 2 + 0) / 2)
    assert "1 row with y_true == 0 left out of MAPE" in r.reasons
    all_zero = regression_quality([0, 0], [1, 2])
    assert all_zero.mape is None
    assert any("every y_true is 0" in s for s in all_zero.reasons)


def test_constant_y_true_has_no_r2() -> None:
    r = regression_quality([3, 3, 3], [2, 3, 4])
    assert r.r2 is None
    assert r.mae == pytest.approx(2 / 3)
    assert any("constant" in s for s in r.reasons)
    assert regression_quality([5], [4]).r2 is None


@pytest.mark.parametrize(
    ("y_true", "y_pred"), [([], []), (np.array([]), np.array([])), ([math.nan], [1.0])]
)
def test_empty_input_gives_an_empty_report(y_true: object, y_pred: object) -> None:
    r = regression_quality(y_true, y_pred)
    assert r == RegressionQuality(0, None, None, None, None, r.reasons)
    assert any("no rows" in s for s in r.reasons)


def test_unusable_input_gives_a_report_not_an_exception() -> None:
    assert "3 rows" in regression_quality([1, 2, 3], [1, 2]).reasons[-1]
    assert regression_quality(["a", "b"], [1, 2]).n == 0
    assert "shape" in regression_quality(np.ones((3, 2)), np.ones((3, 2))).reasons[-1]


def test_column_vectors_and_integers_are_accepted() -> None:
    r = regression_quality(np.array([[1], [2], [3]]), [1, 2, 4])
    assert r.n == 3
    assert r.mae == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_sklearn(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y_true = rng.normal(10.0, 3.0, 1000)
    y_pred = y_true + rng.normal(0.0, 1.5, 1000)
    r = regression_quality(y_true, y_pred)
    assert r.mae == pytest.approx(metrics.mean_absolute_error(y_true, y_pred))
    assert r.rmse == pytest.approx(math.sqrt(metrics.mean_squared_error(y_true, y_pred)))
    assert r.mape == pytest.approx(metrics.mean_absolute_percentage_error(y_true, y_pred))
    assert r.r2 == pytest.approx(metrics.r2_score(y_true, y_pred))
