"""Drift verdicts against Evidently's on the same data, for the tests both offer.

Evidently (a dev extra; it needs pandas < 3) runs its ``DataDriftPreset`` through a ``Report`` on
``Dataset.from_pandas`` frames with the column kinds declared; each column's verdict is the status
of its "Value Drift" test and the dataset's that of the drifted-columns share test. mlobs runs
:func:`mlobs.drift.compare` on the same frames (or on a profile of the reference).

Where the two differ by design, and how the comparisons here allow for it:

- Automatic choice. With more than 1,000 reference rows both take Wasserstein distance over the
  reference's standard deviation for numeric columns (Jensen-Shannon over the values when both
  sides together hold at most 5 distinct values) and Jensen-Shannon for categorical ones. With
  1,000 rows or fewer Evidently switches to p-values (Kolmogorov-Smirnov; chi-square, or a
  two-proportion z-test for two categories); mlobs does not switch by size, so those cases run
  with ``policy="p_value"``. There a numeric column of at most 5 distinct values gets Evidently's
  chi-square but mlobs' KS: left out here.
- Missing values. Evidently drops them; mlobs also flags a column whose missing share moved by
  more than ``missing_threshold``: passed as ``None``.
- Multiple testing. Evidently does not correct p-values; mlobs applies Benjamini-Hochberg by
  default: ``correction="none"`` wherever p-values decide.
- Kolmogorov-Smirnov. Both call scipy's p-value; Evidently the exact one up to 10,000 values a
  side, mlobs only while the product of the sizes is at most 1,000,000, so the data here has
  20,000 rows a side (asymptotic on both) or 800 (exact on both): the p-values are then the same
  number. Evidently drifts at p <= 0.05, mlobs at p < 0.05.
- Wasserstein: the same W1 / std(reference) (``ddof=0``) on the same data. They differ only for a
  constant reference (Evidently floors the deviation at 0.001; mlobs takes the share of current
  values that differ from the constant), not tested here.
- PSI. Over categories (and over the values of a column with few of them) the same formula with
  the same share for an empty bin: the same number. Numeric columns: mlobs bins on 10 quantiles of
  the reference, Evidently on Sturges equal-width bins over both samples together, so the values
  differ and only clear cases' verdicts are compared.
- Jensen-Shannon. Both take ``scipy.spatial.distance.jensenshannon``'s natural log (mlobs used
  base 2 until this comparison showed that verdicts then differ for distances in [0.083, 0.1)):
  the same number over categories, with the same threshold 0.1. Numeric columns are binned as for
  PSI.
- Chi-square. Evidently's is a goodness-of-fit test of the current counts against the reference's
  proportions taken as exact (a category the reference never saw gives p = 0); mlobs' is the
  2 x k contingency test of homogeneity, with both samples counted as samples, so its p-values
  are larger. With a reference the size of the current, Evidently's test flags an unchanged
  column of 6 categories about 35% of the time at 0.05 (mlobs': 5%); ``_frames(20_000, seed=2)``
  gives ``c_same`` p-values of 0.029 (Evidently) and 0.28 (mlobs). Only clear cases are compared:
  the seed used gives 0.82 and 0.95. For two categories Evidently's pooled z-test and mlobs'
  2 x 2 chi-square without continuity correction are the same test (z^2 = chi2): the same p-value.
- Dataset: drifted on both when the share of drifted columns is at least 0.5.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("evidently")

from evidently import DataDefinition, Dataset, Report  # noqa: E402 (after the skip)
from evidently.presets import DataDriftPreset  # noqa: E402 (after the skip)

from mlobs import drift  # noqa: E402

pytestmark = pytest.mark.slow  # each Evidently report takes seconds

NUMERIC = ["same", "small", "half", "scale", "flag"]
CATEGORICAL = ["c_same", "c_new", "c_reweighted"]
CATEGORIES = [f"k{i}" for i in range(6)]
UNIFORM = np.full(6, 1 / 6)
REWEIGHTED = np.array([0.35, 0.25, 0.1, 0.1, 0.1, 0.1])
SQRT_LN2 = math.sqrt(math.log(2))


@dataclass(frozen=True)
class Verdicts:
    """Per column: (test, score, drifted), the score a p-value where one decides, else the
    distance; and the dataset's share and verdict."""

    columns: dict[str, tuple[str, float, bool]]
    share: float
    drifted: bool


def _frames(n: int, seed: int, shifted: bool = True) -> tuple[Any, Any]:
    """Reference and current frames of ``n`` rows. Shifted: ``small`` moves by 0.05 sigma,
    ``half`` by 0.5 sigma, ``scale`` spreads 1.5 times, ``c_new`` gains a category in a fifth of
    its rows, ``c_reweighted`` changes its proportions; ``same``, ``flag`` (values 0, 1, 2) and
    ``c_same`` stay, ``same`` losing a tenth of its values to NaN."""
    rng = np.random.default_rng(seed)

    def side(current: bool) -> Any:
        moved = current and shifted
        new = rng.choice(CATEGORIES, size=n, p=UNIFORM).astype(object)
        if moved:
            new[rng.random(n) < 0.2] = "k_new"
        frame = pd.DataFrame(
            {
                "same": rng.normal(size=n),
                "small": rng.normal(size=n) + (0.05 if moved else 0.0),
                "half": rng.normal(size=n) + (0.5 if moved else 0.0),
                "scale": rng.normal(size=n) * (1.5 if moved else 1.0),
                "flag": rng.integers(0, 3, size=n).astype(float),
                "c_same": rng.choice(CATEGORIES, size=n, p=UNIFORM),
                "c_new": new,
                "c_reweighted": rng.choice(CATEGORIES, size=n, p=REWEIGHTED if moved else UNIFORM),
            }
        )
        if current:
            frame.loc[rng.random(n) < 0.1, "same"] = np.nan
        return frame

    return side(False), side(True)


def _evidently(reference: Any, current: Any, **preset: Any) -> Verdicts:
    """Evidently's DataDriftPreset on the frames (numeric and categorical columns declared)."""
    numeric = [c for c in reference.columns if c in NUMERIC]
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=[c for c in reference.columns if c not in numeric],
    )
    report = Report([DataDriftPreset(**preset)], include_tests=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its chi-square divides by the zero expected count
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    result = snapshot.dict()
    scores: dict[str, tuple[str, float]] = {}
    share = math.nan
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = (config["method"], float(metric["value"]))
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    failed: dict[str, bool] = {}
    dataset = None
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith(":ValueDrift"):
            failed[params["column"]] = test["status"] == "FAIL"
        elif params["type"].endswith(":DriftedColumnsCount"):
            dataset = test["status"] == "FAIL"
    assert dataset is not None and set(failed) == set(scores)
    columns = {c: (method, score, failed[c]) for c, (method, score) in scores.items()}
    return Verdicts(columns, share, dataset)


def _mlobs(reference: Any, current: Any, **options: Any) -> Verdicts:
    report = drift.compare(
        reference,
        current,
        categorical=[c for c in current.columns if c not in NUMERIC],
        missing_threshold=None,
        **options,
    )
    columns = {}
    for name, feature in report.features.items():
        result = feature.result
        score = result.p_value if result.decided_by == "p_value" else result.effect_size
        assert score is not None
        columns[name] = (result.test, score, feature.drifted)
    return Verdicts(columns, report.share_drifted, report.drifted)


def _assert_same(ours: Verdicts, theirs: Verdicts) -> None:
    assert set(ours.columns) == set(theirs.columns)
    differ = {
        column: (ours.columns[column], theirs.columns[column])
        for column in ours.columns
        if ours.columns[column][2] != theirs.columns[column][2]
    }
    assert not differ, f"verdicts differ (mlobs, Evidently): {differ}"
    assert ours.share == pytest.approx(theirs.share)
    assert ours.drifted == theirs.drifted


@pytest.fixture(scope="module")
def frames() -> tuple[Any, Any]:
    """20,000 rows a side: Evidently's automatic choice is Wasserstein and Jensen-Shannon."""
    return _frames(20_000, seed=4)


# -- Evidently's defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("reference_as", ["data", "profile"])
def test_default_preset_same_verdicts(frames: tuple[Any, Any], reference_as: str) -> None:
    reference, current = frames
    theirs = _evidently(reference, current)
    assert {c: v[0] for c, v in theirs.columns.items()} == {
        **dict.fromkeys(["same", "small", "half", "scale"], "Wasserstein distance (normed)"),
        **dict.fromkeys(["flag", *CATEGORICAL], "Jensen-Shannon distance"),
    }
    ref: Any = reference
    if reference_as == "profile":  # the stored-profile path: a 10,000-value sample per column
        ref = drift.profile(reference, categorical=CATEGORICAL)
    ours = _mlobs(ref, current)
    assert {c: v[0] for c, v in ours.columns.items()} == {
        **dict.fromkeys(["same", "small", "half", "scale"], "wasserstein"),
        **dict.fromkeys(["flag", *CATEGORICAL], "jensen_shannon"),
    }
    _assert_same(ours, theirs)
    assert sorted(c for c, v in ours.columns.items() if v[2]) == [
        "c_new",
        "c_reweighted",
        "half",
        "scale",
    ]
    assert ours.share == 0.5 and ours.drifted  # the dataset rule's edge: a share of 0.5 drifts
    # mlobs' own missing-share signal (off above) flags what Evidently cannot see
    assert drift.compare(reference, current, categorical=CATEGORICAL)["same"].missing_drifted


def test_default_preset_no_drift() -> None:
    reference, current = _frames(20_000, seed=2, shifted=False)
    theirs = _evidently(reference, current)
    ours = _mlobs(reference, current)
    _assert_same(ours, theirs)
    assert not any(v[2] for v in ours.columns.values()) and not ours.drifted


# -- each test both offer, named on both sides ------------------------------------------------


def test_ks_same_p_values(frames: tuple[Any, Any]) -> None:
    reference, current = frames
    theirs = _evidently(reference, current, num_method="ks")
    ours = _mlobs(reference, current, numeric_test="ks", correction="none")
    _assert_same(ours, theirs)
    for column in NUMERIC:
        assert theirs.columns[column][0] == "ks"
        p, their_p = ours.columns[column][1], theirs.columns[column][1]
        assert math.isclose(p, their_p, rel_tol=1e-9, abs_tol=1e-300), (column, p, their_p)
    assert [c for c in NUMERIC if ours.columns[c][2]] == ["small", "half", "scale"]


def test_wasserstein_same_distance(frames: tuple[Any, Any]) -> None:
    reference, current = frames
    theirs = _evidently(reference, current, num_method="wasserstein")
    ours = _mlobs(reference, current, numeric_test="wasserstein")
    _assert_same(ours, theirs)
    for column in NUMERIC:
        assert ours.columns[column][1] == pytest.approx(theirs.columns[column][1], rel=1e-9)


def test_psi_same_verdicts(frames: tuple[Any, Any]) -> None:
    reference, current = frames
    theirs = _evidently(reference, current, num_method="psi", cat_method="psi")
    ours = _mlobs(reference, current, numeric_test="psi", categorical_test="psi")
    _assert_same(ours, theirs)
    for column in ["flag", *CATEGORICAL]:  # by category or by value: the same number
        assert ours.columns[column][1] == pytest.approx(theirs.columns[column][1], rel=1e-9)
    assert sorted(c for c, v in ours.columns.items() if v[2]) == [
        "c_new",
        "c_reweighted",
        "half",
        "scale",
    ]


def test_jensen_shannon_same_verdicts(frames: tuple[Any, Any]) -> None:
    reference, current = frames
    theirs = _evidently(reference, current, num_method="jensenshannon", cat_method="jensenshannon")
    ours = _mlobs(
        reference, current, numeric_test="jensen_shannon", categorical_test="jensen_shannon"
    )
    _assert_same(ours, theirs)
    for column in ["flag", *CATEGORICAL]:
        assert ours.columns[column][1] == pytest.approx(theirs.columns[column][1], rel=1e-9)


def test_chi_square_same_verdicts(frames: tuple[Any, Any]) -> None:
    reference, current = frames
    theirs = _evidently(reference, current, cat_method="chisquare")
    ours = _mlobs(reference, current, categorical_test="chi_square", correction="none")
    _assert_same(ours, theirs)
    assert {c: theirs.columns[c][0] for c in CATEGORICAL} == dict.fromkeys(CATEGORICAL, "chisquare")
    assert [c for c in CATEGORICAL if ours.columns[c][2]] == ["c_new", "c_reweighted"]


def test_jensen_shannon_near_the_threshold_agrees() -> None:
    """A distance of about 0.09 under the natural log (0.105 in base 2): no drift on both sides."""
    rng = np.random.default_rng(3)
    moved = np.array([0.25, 0.2, 0.15, 0.15, 0.125, 0.125])
    reference = pd.DataFrame({"c": rng.choice(CATEGORIES, size=20_000, p=UNIFORM)})
    current = pd.DataFrame({"c": rng.choice(CATEGORIES, size=20_000, p=moved)})
    theirs = _evidently(reference, current)
    ours = _mlobs(reference, current)
    assert theirs.columns["c"][0] == "Jensen-Shannon distance"
    assert 0.1 * SQRT_LN2 < theirs.columns["c"][1] < 0.1
    assert ours.columns["c"][1] == pytest.approx(theirs.columns["c"][1], rel=1e-9)
    _assert_same(ours, theirs)


# -- small references: Evidently's p-values ---------------------------------------------------


def test_small_reference_p_values() -> None:
    """800 rows: Evidently takes KS, chi-square and (two categories) the z-test; mlobs' p-value
    policy KS and chi-square, uncorrected."""
    reference, current = _frames(800, seed=1)
    rng = np.random.default_rng(4)
    for frame in (reference, current):
        frame["c_binary"] = rng.choice(["yes", "no"], size=len(frame), p=[0.3, 0.7])
    keep = ["same", "small", "half", "scale", *CATEGORICAL, "c_binary"]
    reference, current = reference[keep], current[keep]
    theirs = _evidently(reference, current)
    assert {c: v[0] for c, v in theirs.columns.items()} == {
        **dict.fromkeys(["same", "small", "half", "scale"], "K-S p_value"),
        **dict.fromkeys(CATEGORICAL, "chi-square p_value"),
        "c_binary": "Z-test p_value",
    }
    ours = _mlobs(reference, current, policy="p_value", correction="none")
    _assert_same(ours, theirs)
    assert sorted(c for c, v in ours.columns.items() if v[2]) == [
        "c_new",
        "c_reweighted",
        "half",
        "scale",
    ]
    # scipy's exact KS on both sides; and z^2 = chi2 on a 2 x 2 table
    for column in ["same", "small", "half", "scale", "c_binary"]:
        p, their_p = ours.columns[column][1], theirs.columns[column][1]
        assert math.isclose(p, their_p, rel_tol=1e-9, abs_tol=1e-300), (column, p, their_p)
