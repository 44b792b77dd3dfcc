"""Reference profiles: chunks merge into the one-shot profile, files round-trip and stay small,
every input shape gives the same profile, a run stores its profile, and drift from a profile needs
no training data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlobs
from mlobs import drift, safety
from mlobs.drift.profiles import FORMAT, PROFILE_EVENT
from mlobs.drift.summary import CategoricalSummary, NumericSummary
from mlobs.record.types import Kind
from mlobs.testing import InMemoryExporter

COLOURS = np.array(["red", "green", "blue", "mauve"], dtype=object)


def _frame(rows: int, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + shift, 10, size=rows)
    age[rng.random(rows) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "age": age,
            "income": rng.lognormal(10, 1, size=rows),
            "clicks": rng.poisson(3, size=rows).astype(np.int64),
            "colour": COLOURS[rng.integers(0, 4, size=rows)],
        }
    )


def _numeric(profile: drift.Profile, column: str) -> NumericSummary:
    summary = profile[column]
    assert isinstance(summary, NumericSummary)
    return summary


def test_merged_chunks_equal_the_one_shot_profile() -> None:
    data = _frame(60_000)
    whole = drift.profile(data, sample_size=5_000)
    chunks = [
        drift.profile(data.iloc[k : k + 15_000], sample_size=5_000)
        for k in range(0, 60_000, 15_000)
    ]
    merged = drift.merge_profiles(chunks)
    assert merged.rows == whole.rows == 60_000
    for column in ("age", "income", "clicks"):
        a, b = _numeric(merged, column), _numeric(whole, column)
        assert (a.count, a.missing, a.min, a.max) == (b.count, b.missing, b.min, b.max)
        assert a.mean == pytest.approx(b.mean, rel=1e-12)
        assert a.m2 == pytest.approx(b.m2, rel=1e-12)
        assert a.sample.size == b.sample.size == 5_000 and not a.exact
        deciles = np.arange(1, 10) / 10
        spread = b.std
        np.testing.assert_allclose(
            np.quantile(a.sample, deciles), np.quantile(b.sample, deciles), atol=0.1 * spread
        )
    assert _numeric(merged, "income").values is None  # more than 20 distinct values
    clicks, clicks_whole = _numeric(merged, "clicks"), _numeric(whole, "clicks")  # 14 distinct
    assert clicks.values is not None and clicks.value_counts is not None
    np.testing.assert_array_equal(clicks.values, clicks_whole.values)  # type: ignore[arg-type]
    np.testing.assert_array_equal(clicks.value_counts, clicks_whole.value_counts)  # type: ignore[arg-type]
    colour = merged["colour"]
    assert isinstance(colour, CategoricalSummary)
    assert colour.counts == whole["colour"].counts  # type: ignore[union-attr]


def test_merging_keeps_exact_value_counts_of_few_valued_columns() -> None:
    rng = np.random.default_rng(1)
    flags = rng.integers(0, 3, size=9_000).astype(float)
    chunks = [drift.profile({"f": part}, sample_size=1_000) for part in np.array_split(flags, 3)]
    merged = _numeric(drift.merge_profiles(chunks), "f")
    assert merged.values is not None and merged.value_counts is not None
    assert merged.values.tolist() == [0.0, 1.0, 2.0]
    assert merged.value_counts.tolist() == np.bincount(flags.astype(int)).tolist()


def test_small_chunks_merge_exactly() -> None:
    values = np.arange(100.0)
    merged = drift.profile({"x": values[:30]}).merge(drift.profile({"x": values[30:]}))
    summary = _numeric(merged, "x")
    assert summary.exact and summary.sample.tolist() == values.tolist()


def test_merge_refuses_a_column_that_changes_kind() -> None:
    with pytest.raises(ValueError, match="numeric in one profile"):
        drift.profile({"x": [1.0, 2.0]}).merge(drift.profile({"x": ["a", "b"]}))
    with pytest.raises(ValueError, match="at least one"):
        drift.merge_profiles([])


def test_a_column_missing_from_a_chunk_counts_as_missing() -> None:
    merged = drift.profile({"x": [1.0, 2.0], "y": ["a", "b"]}).merge(drift.profile({"x": [3.0]}))
    assert merged["y"].missing == 1 and merged["y"].rows == 3
    assert _numeric(merged, "x").count == 3


def test_save_load_round_trip(tmp_path: Path) -> None:
    original = drift.profile(_frame(30_000), name="train", sample_size=2_000, seed=7)
    path = original.save(tmp_path / "train.npz")
    loaded = drift.Profile.load(path)
    assert (loaded.name, loaded.rows, loaded.sample_size, loaded.seed) == (
        "train",
        30_000,
        2_000,
        7,
    )
    assert list(loaded) == list(original)
    for column in original.numeric:
        a, b = _numeric(original, column), _numeric(loaded, column)
        assert (a.count, a.missing, a.mean, a.m2, a.min, a.max, a.exact) == (
            b.count,
            b.missing,
            b.mean,
            b.m2,
            b.min,
            b.max,
            b.exact,
        )
        np.testing.assert_array_equal(a.sample, b.sample)
    assert loaded["colour"].counts == original["colour"].counts  # type: ignore[union-attr]
    current = _frame(20_000, seed=1, shift=5.0)
    assert drift.compare(loaded, current).to_dict() == drift.compare(original, current).to_dict()


def test_profile_file_of_25_columns_is_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    labels = np.array([f"category_{k}" for k in range(20)], dtype=object)
    data: dict[str, np.ndarray] = {f"n{k}": rng.normal(size=20_000) for k in range(20)}
    data.update({f"c{k}": labels[rng.integers(0, 20, size=20_000)] for k in range(5)})
    path = drift.profile(data).save(tmp_path / "wide.npz")
    # 20 samples of 10,000 float64 values (~75 KB each, random doubles barely compress) + counts
    assert path.stat().st_size < 1_700_000
    float32 = {k: v.astype(np.float32) for k, v in data.items() if k.startswith("n")}
    assert drift.profile(float32).save(tmp_path / "narrow.npz").stat().st_size < 900_000


def test_loading_what_is_not_a_profile_raises_a_clear_value_error(tmp_path: Path) -> None:
    good = drift.profile({"x": [1.0, 2.0, 3.0]}).save(tmp_path / "good.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:60])
    for path in (junk, truncated):
        with pytest.raises(drift.ProfileError, match="not a readable drift profile"):
            drift.Profile.load(path)
    future = tmp_path / "future.npz"
    with zipfile.ZipFile(good) as archive, zipfile.ZipFile(future, "w") as out:
        for item in archive.namelist():
            payload = archive.read(item)
            if item == "header.npy":
                header = np.load(good)["header"][()]
                patched = str(header).replace('"version": 1', '"version": 99')
                np.save(tmp_path / "h.npy", np.array(patched))
                payload = (tmp_path / "h.npy").read_bytes()
            out.writestr(item, payload)
    with pytest.raises(ValueError, match="format version 99"):
        drift.Profile.load(future)
    with pytest.raises(FileNotFoundError):
        drift.Profile.load(tmp_path / "absent.npz")
    assert json.loads(str(np.load(good)["header"][()]))["format"] == FORMAT


def test_numpy_pandas_and_row_dicts_give_the_same_profile() -> None:
    rng = np.random.default_rng(3)
    numbers = rng.normal(size=(3_000, 2))
    colours = COLOURS[rng.integers(0, 4, size=3_000)]
    colours[::50] = None
    frame = pd.DataFrame({"a": numbers[:, 0], "b": numbers[:, 1], "colour": colours})
    rows = [
        {"a": a, "b": b, "colour": c}
        for a, b, c in zip(numbers[:, 0], numbers[:, 1], colours, strict=True)
    ]
    columns = {"a": numbers[:, 0], "b": numbers[:, 1], "colour": colours}
    profiles = [
        drift.profile(frame, sample_size=500),
        drift.profile(rows, sample_size=500),
        drift.profile(columns, sample_size=500),
    ]
    from_array = drift.profile(numbers, names=["a", "b"], sample_size=500)
    for other in [*profiles[1:], from_array]:
        for column in ("a", "b"):
            a, b = _numeric(profiles[0], column), _numeric(other, column)
            assert (a.count, a.mean, a.m2) == (b.count, b.mean, b.m2)
            np.testing.assert_array_equal(a.sample, b.sample)
    for other in profiles[1:]:
        assert other["colour"].counts == profiles[0]["colour"].counts  # type: ignore[union-attr]
        assert other["colour"].missing == 60
    assert profiles[0].categorical == ["colour"]


def test_kinds_are_inferred_and_can_be_overridden() -> None:
    frame = pd.DataFrame(
        {
            "n": [1.5, 2.5, None],
            "i": pd.array([1, None, 3], dtype="Int64"),
            "flag": [True, False, True],
            "cat": pd.Categorical(["x", "y", "x"]),
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
            "zip": [2134, 2135, 2134],
        }
    )
    built = drift.profile(frame, categorical=["zip"])
    assert built.numeric == ["n", "i"]
    assert built.categorical == ["flag", "cat", "zip"]
    assert built["zip"].counts == {"2134": 2, "2135": 1}  # type: ignore[union-attr]
    assert built["flag"].counts == {"True": 2, "False": 1}  # type: ignore[union-attr]
    assert "when" in built.skipped and "when" not in built
    assert _numeric(built, "i").missing == 1
    rows = drift.profile([{"x": 1, "y": "a"}, {"x": 2.5}, {"y": None, "x": None}])
    assert rows.numeric == ["x"] and rows.categorical == ["y"]
    assert rows["y"].missing == 2


def test_same_seed_same_sample() -> None:
    values = {"x": np.random.default_rng(4).normal(size=50_000)}
    a, b, c = drift.profile(values), drift.profile(values), drift.profile(values, seed=1)
    np.testing.assert_array_equal(_numeric(a, "x").sample, _numeric(b, "x").sample)
    assert not np.array_equal(_numeric(a, "x").sample, _numeric(c, "x").sample)


def test_drift_from_a_profile_alone(tmp_path: Path) -> None:
    path = drift.profile(_frame(50_000)).save(tmp_path / "reference.npz")
    current = _frame(50_000, seed=1)
    current["age"] += 6.0  # 0.6 standard deviations
    current.loc[current.index[:25_000], "colour"] = "mauve"
    report = drift.compare(drift.Profile.load(path), current)
    assert report.drifted_columns == ["age", "colour"]
    assert "'mauve'" not in (report["colour"].result.reason or "")  # mauve was in the reference
    assert report.share_drifted == 0.5 and report.drifted
    quiet = drift.compare(drift.Profile.load(path), _frame(50_000, seed=2))
    assert quiet.drifted_columns == []


def test_profile_inside_a_run_is_stored_with_it(tmp_path: Path) -> None:
    memory = InMemoryExporter()
    mlobs.configure(dir=str(tmp_path / "spool"), exporters=[memory], flush_interval=0.05)
    with mlobs.run(name="train") as run:
        built = drift.profile(_frame(2_000), name="train set")
    mlobs.flush()
    path = tmp_path / "spool" / "profiles" / f"{run.run_id}-train_set.npz"
    assert drift.Profile.load(path).rows == built.rows == 2_000
    events = [r for r in memory.of_kind(Kind.EVENT) if r.name == PROFILE_EVENT]
    assert len(events) == 1 and events[0].run_id == run.run_id
    assert events[0].attrs == {"path": str(path), "name": "train set", "columns": 4, "rows": 2_000}


def test_profile_outside_a_run_stores_nothing(tmp_path: Path) -> None:
    mlobs.configure(dir=str(tmp_path / "spool"))
    drift.profile({"x": [1.0, 2.0]})
    assert not (tmp_path / "spool" / "profiles").exists()


def test_a_failure_to_store_never_reaches_the_caller(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    mlobs.configure(dir=str(spool))
    spool.mkdir(exist_ok=True)
    (spool / "profiles").write_text("a file where the folder should be")
    with mlobs.run(name="train"):
        built = drift.profile({"x": [1.0, 2.0]})
    assert built.rows == 2
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "drift.profile") == 1


def test_import_mlobs_does_not_load_drift_nor_names_scipy() -> None:
    code = (
        "import sys, mlobs; "
        "assert 'mlobs.drift' not in sys.modules and 'scipy' not in sys.modules; "
        "from mlobs.drift import names; assert 'scipy' not in sys.modules; "
        "from mlobs import drift; assert callable(drift.profile) and callable(drift.compare); "
        "assert 'scipy' in sys.modules and isinstance(drift.Profile, type)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
