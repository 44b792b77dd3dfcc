"""Drift tests as pure functions: agreement with direct scipy calls, known answers, scale
awareness, Benjamini-Hochberg, and edge cases that explain themselves instead of raising."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from mlobs import drift
from mlobs.drift import decide, kernels

NUMERIC = (drift.ks, drift.wasserstein, drift.psi, drift.jensen_shannon, drift.anderson)
CATEGORICAL = (
    drift.chi_square,
    drift.psi_categorical,
    drift.jensen_shannon_categorical,
    drift.total_variation,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _close(a: float | None, b: float, rel: float = 1e-12) -> bool:
    assert a is not None
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


# -- agreement with scipy --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "m", "rounded"),
    [
        (5, 7, False),
        (300, 200, False),
        (300, 200, True),
        (2_000, 2_000, True),
        (20_000, 15_000, False),
    ],
)
def test_ks_equals_scipy(n: int, m: int, rounded: bool) -> None:
    rng = _rng(n + m)
    a, b = rng.normal(size=n), rng.normal(0.1, 1.1, size=m)
    if rounded:  # ties
        a, b = np.round(a, 1), np.round(b, 1)
    ours, theirs = drift.ks(a, b), stats.ks_2samp(a, b)
    assert _close(ours.statistic, theirs.statistic)
    assert _close(ours.p_value, theirs.pvalue)
    assert ours.effect_size == ours.statistic
    assert ours.decided_by == "p_value"
    assert ours.drifted == (theirs.pvalue < 0.05)
    assert (ours.n_reference, ours.n_current) == (n, m)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (3, 1000), (100, 37), (1000, 999), (5000, 20_000)])
def test_wasserstein_equals_scipy_normalised_by_reference_std(n: int, m: int) -> None:
    rng = _rng(n * m)
    a, b = rng.normal(3.0, 2.0, size=n), rng.exponential(2.0, size=m)
    if n > 1:
        a[::7] = np.round(a[::7])  # some ties between the samples
        b[::5] = np.round(b[::5])
    ours, w = drift.wasserstein(a, b), stats.wasserstein_distance(a, b)
    assert _close(ours.statistic, w)
    if n > 1:
        assert _close(ours.effect_size, w / np.std(a))
        assert ours.drifted == (w / np.std(a) >= 0.1)
    assert ours.p_value is None


def test_anderson_equals_scipy() -> None:
    rng = _rng(3)
    a, b = rng.normal(size=400), rng.normal(0.15, 1.0, size=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs = stats.anderson_ksamp([a, b], variant="midrank")
        except TypeError:  # older scipy
            theirs = stats.anderson_ksamp([a, b])
    ours = drift.anderson(a, b)
    assert _close(ours.statistic, theirs.statistic)
    assert _close(ours.p_value, theirs.pvalue)
    assert ours.drifted == (theirs.pvalue < 0.1)


def test_chi_square_equals_scipy_contingency_with_cramers_v() -> None:
    rng = _rng(4)
    ref = rng.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2], size=2_000)
    cur = rng.choice(["a", "b", "c", "d"], p=[0.45, 0.3, 0.2, 0.05], size=1_500)
    table = np.array([[np.sum(ref == k) for k in "abcd"], [np.sum(cur == k) for k in "abcd"]])
    stat, p, _, _ = stats.chi2_contingency(table, correction=False)
    ours = drift.chi_square(ref, cur)
    assert _close(ours.statistic, stat)
    assert _close(ours.p_value, p)
    assert _close(ours.effect_size, math.sqrt(stat / table.sum()))
    assert ours.drifted


def test_categorical_distances_equal_their_formulas() -> None:
    ref = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    cur = ["a"] * 40 + ["b"] * 30 + ["c"] * 10 + ["d"] * 20
    p = np.array([0.5, 0.3, 0.2, 0.0])
    q = np.array([0.4, 0.3, 0.1, 0.2])
    assert _close(
        drift.jensen_shannon_categorical(ref, cur).statistic, distance.jensenshannon(p, q)
    )
    assert _close(drift.total_variation(ref, cur).statistic, 0.5 * np.abs(p - q).sum())
    filled = np.where(p > 0, p, 1e-4)  # the empty bin gets 0.0001, as in Evidently
    assert _close(
        drift.psi_categorical(ref, cur).statistic, float(((q - filled) * np.log(q / filled)).sum())
    )


def test_numeric_histograms_use_reference_quantile_bins() -> None:
    rng = _rng(5)
    ref, cur = rng.normal(size=5_000), rng.normal(0.5, 1.0, size=4_000)
    edges = np.quantile(ref, np.arange(1, 10) / 10)
    p = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=10) / ref.size
    q = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=10) / cur.size
    assert _close(drift.jensen_shannon(ref, cur).statistic, distance.jensenshannon(p, q))
    assert _close(drift.psi(ref, cur).statistic, float(((q - p) * np.log(q / p)).sum()))
    assert drift.psi(ref, cur).drifted and drift.jensen_shannon(ref, cur).drifted


def test_vectorised_kernels_match_one_row_at_a_time() -> None:
    rng = _rng(6)
    rows_p = [rng.integers(0, 50, size=k) for k in (3, 10, 7)]
    rows_q = [rng.integers(0, 50, size=k) for k in (3, 10, 7)]
    for kernel in (kernels.psi_rows, kernels.js_rows, kernels.tv_rows):
        together = kernel(kernels.pad(rows_p), kernels.pad(rows_q))
        alone = [kernel(p[None, :], q[None, :])[0] for p, q in zip(rows_p, rows_q, strict=True)]
        np.testing.assert_allclose(together, alone, rtol=1e-12)


# -- known answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("test", NUMERIC)
def test_identical_numeric_data_never_drifts(test: object) -> None:
    values = _rng(7).normal(size=3_000)
    result = test(values, values.copy())  # type: ignore[operator]
    assert not result.drifted
    assert result.effect_size == pytest.approx(0.0, abs=1e-12) or result.test == "anderson"


@pytest.mark.parametrize("test", CATEGORICAL)
def test_identical_categorical_data_never_drifts(test: object) -> None:
    labels = list(_rng(8).choice(["x", "y", "z"], size=2_000))
    result = test(labels, list(labels))  # type: ignore[operator]
    assert not result.drifted
    assert result.effect_size == pytest.approx(0.0, abs=1e-12)


def test_half_sigma_shift_drifts_that_feature_only() -> None:
    rng = _rng(9)
    reference = rng.normal(size=(5_000, 4))
    current = rng.normal(size=(5_000, 4))
    current[:, 2] += 0.5
    report = drift.compare(reference, current, names=["a", "b", "c", "d"])
    assert report.drifted_columns == ["c"]
    assert report["c"].result.test == "wasserstein"
    assert report["c"].result.effect_size == pytest.approx(0.5, abs=0.05)
    assert report.share_drifted == 0.25 and not report.drifted


def test_new_category_drifts_and_is_named() -> None:
    rng = _rng(10)
    reference = {"colour": rng.choice(["red", "green", "blue"], size=3_000)}
    current = {
        "colour": np.concatenate(
            (rng.choice(["red", "green", "blue"], size=2_400), ["mauve"] * 600)
        )
    }
    feature = drift.compare(reference, current)["colour"]
    assert feature.drifted and feature.result.test == "jensen_shannon"
    assert feature.result.reason is not None and "'mauve'" in feature.result.reason
    chi = feature.others["chi_square"]
    assert chi.p_value is not None and chi.p_value < 1e-10


# -- scale awareness -------------------------------------------------------------------------


def test_trivial_shift_on_a_million_rows_is_significant_but_not_drift() -> None:
    rng = _rng(11)
    reference = rng.normal(size=1_000_000)
    current = rng.normal(0.01, 1.0, size=1_000_000)
    feature = drift.compare({"x": reference}, {"x": current})["x"]
    assert feature.p_value is not None and feature.p_value < 0.05
    assert feature.others["ks"].drifted  # the KS test alone would call it drift
    assert feature.result.effect_size < 0.02
    assert not feature.drifted


# -- Benjamini-Hochberg ----------------------------------------------------------------------


def test_benjamini_hochberg_against_a_hand_computed_answer() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    # ranks 1..5 of the sorted values 0.005, 0.01, 0.03, 0.04, 0.2: p * 5 / rank =
    # 0.025, 0.025, 0.05, 0.05, 0.2; a running minimum from the largest changes nothing
    expected = [0.025, 0.05, 0.05, 0.025, 0.2]
    np.testing.assert_allclose(drift.benjamini_hochberg(p), expected, rtol=1e-12)
    np.testing.assert_allclose(decide._benjamini_hochberg(np.array(p)), expected, rtol=1e-12)
    monotone = [0.01, 0.02, 0.021]  # 0.03, 0.03, 0.021 -> running minimum 0.021 everywhere
    np.testing.assert_allclose(drift.benjamini_hochberg(monotone), [0.021] * 3, rtol=1e-12)
    assert drift.benjamini_hochberg([]).size == 0


def test_p_value_policy_corrects_across_features() -> None:
    rng = _rng(12)
    reference = rng.normal(size=(400, 10))
    current = reference.copy()  # nine columns identical: p = 1
    current[:, 0] = rng.normal(0.2, 1.0, size=400)
    raw = drift.ks(reference[:, 0], current[:, 0]).p_value
    assert raw is not None and 0.005 < raw < 0.05  # drift alone, not after x10 / rank 1
    uncorrected = drift.compare(reference, current, policy="p_value", correction="none")
    corrected = drift.compare(reference, current, policy="p_value")
    assert uncorrected.drifted_columns == ["0"]
    assert corrected.drifted_columns == []
    assert corrected["0"].p_value_adjusted == pytest.approx(raw * 10)
    assert corrected["0"].result.test == "ks" and corrected["0"].result.decided_by == "p_value"


# -- edge cases: a reason, never an exception ------------------------------------------------


@pytest.mark.parametrize("empty", [[], [np.nan, np.nan], [None, None, float("inf")]])
@pytest.mark.parametrize("test", NUMERIC)
def test_numeric_tests_explain_an_empty_side(test: object, empty: list[object]) -> None:
    result = test(empty, [1.0, 2.0, 3.0])  # type: ignore[operator]
    assert result.decided_by == "none" and not result.drifted
    assert result.reason == "no values in the reference"
    assert math.isnan(result.effect_size)
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("test", CATEGORICAL)
def test_categorical_tests_explain_an_all_missing_side(test: object) -> None:
    result = test(["a", "b"], [None, float("nan")])  # type: ignore[operator]
    assert result.decided_by == "none" and result.reason == "no values in the current"


@pytest.mark.parametrize("test", NUMERIC)
@pytest.mark.parametrize(("ref", "cur"), [([1.0], [2.0]), ([1.0], [1.0, 2.0]), ([1.0, 1.0], [1.0])])
def test_a_value_or_two_never_raises(test: object, ref: list[float], cur: list[float]) -> None:
    result = test(ref, cur)  # type: ignore[operator]
    assert result.reason is not None and "tiny sample" in result.reason
    json.dumps(result.to_dict(), allow_nan=False)


def test_tiny_samples_are_tested_and_flagged() -> None:
    result = drift.ks([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0, 6.0])
    assert result.p_value is not None and result.decided_by == "p_value"
    assert result.reason is not None and result.reason.startswith("tiny sample: 4 reference and 5")


def test_constant_reference() -> None:
    same = drift.wasserstein([2.0] * 100, [2.0] * 80)
    assert not same.drifted and same.effect_size == 0.0
    moved = drift.wasserstein([2.0] * 100, [2.0] * 70 + [3.0] * 30)
    assert moved.drifted and moved.effect_size == pytest.approx(0.3)
    assert moved.reason is not None and "constant reference (2)" in moved.reason
    assert not drift.ks([2.0] * 100, [2.0] * 80).drifted
    assert drift.psi([2.0] * 100, [2.0] * 70 + [3.0] * 30).drifted  # binned by value
    assert not drift.anderson([2.0] * 50, [2.0] * 50).drifted


def test_values_unseen_by_a_discrete_reference_are_named() -> None:
    result = drift.jensen_shannon([0, 1] * 500, [0, 1] * 400 + [7] * 200)
    assert result.drifted
    assert result.reason == "values not in the reference: 7"


def test_non_numeric_values_in_a_numeric_column() -> None:
    current: list[object] = [*np.linspace(0, 1, 100).tolist(), "n/a", "oops"]
    result = drift.ks(np.linspace(0, 1, 100), current)
    assert result.n_current == 100
    assert result.reason == "2 non-numeric current values ignored"


def test_missing_share_is_its_own_signal() -> None:
    rng = _rng(13)
    values = rng.normal(size=2_000)
    current = rng.normal(size=2_000)
    current[:600] = np.nan  # 0% -> 30% missing, the rest as before
    feature = drift.compare({"x": values}, {"x": current})["x"]
    assert not feature.result.drifted
    assert feature.missing_reference == 0.0 and feature.missing_current == pytest.approx(0.3)
    assert feature.missing_drifted and feature.drifted
    off = drift.compare({"x": values}, {"x": current}, missing_threshold=None)["x"]
    assert not off.drifted


# -- the report ------------------------------------------------------------------------------


def test_report_is_json_safe_and_tabulates() -> None:
    rng = _rng(14)
    reference = {"n": rng.normal(size=500), "c": rng.choice(["a", "b"], size=500), "t": ["x"] * 500}
    current = {"n": rng.normal(1.0, 1.0, size=300), "c": [None] * 300, "extra": [1] * 300}
    report = drift.compare(reference, current)
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["skipped"] == {
        "t": "not in the current data",
        "extra": "not in the reference",
    }
    rows = {row["column"]: row for row in report.table_rows()}
    assert set(rows) == {"n", "c", "t", "extra"}
    assert rows["n"]["drifted"] == "yes" and rows["n"]["test"] == "wasserstein"
    assert rows["c"]["drifted"] == "yes (missing)" and rows["c"]["missing"] == "0.0% → 100.0%"
    assert rows["t"]["drifted"] == "skipped"
    assert report.share_drifted == 1.0 and report.drifted


def test_few_distinct_numeric_values_are_compared_by_value() -> None:
    rng = _rng(15)
    reference = {"flag": rng.integers(0, 2, size=3_000).astype(float)}
    current = {"flag": (rng.random(3_000) < 0.8).astype(float)}
    feature = drift.compare(reference, current)["flag"]
    assert feature.result.test == "jensen_shannon" and feature.drifted  # Evidently's choice too
    assert (
        drift.compare(reference, current, numeric_test="wasserstein")["flag"].result.test
        == "wasserstein"
    )


def test_tests_and_thresholds_by_name() -> None:
    rng = _rng(16)
    reference = {"n": rng.normal(size=1_000), "c": rng.choice(["a", "b", "c"], size=1_000)}
    current = {"n": rng.normal(0.3, 1.0, size=1_000), "c": rng.choice(["a", "b", "c"], size=1_000)}
    report = drift.compare(
        reference, current, numeric_test="psi", categorical_test="total_variation"
    )
    assert report["n"].result.test == "psi" and report["c"].result.test == "total_variation"
    assert set(report["n"].others) == {"ks"} and set(report["c"].others) == {"chi_square"}
    lenient = drift.compare(reference, current, numeric_test="psi", thresholds={"psi": 10.0})
    assert lenient["n"].result.threshold == 10.0 and not lenient["n"].result.drifted
    with pytest.raises(ValueError, match="numeric_test"):
        drift.compare(reference, current, numeric_test="chi_square")
    with pytest.raises(ValueError, match="policy"):
        drift.compare(reference, current, policy="vibes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown tests"):
        drift.compare(reference, current, thresholds={"kss": 0.1})
