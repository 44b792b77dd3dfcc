"""``mlobs drift profile`` and ``mlobs drift compare`` on CSV and Parquet files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlobs.cli.drift import _read_csv
from mlobs.cli.main import cli

pd = pytest.importorskip("pandas")
pytest.importorskip("scipy")


def write(path: Path, n: int, seed: int, shift: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40 + 10 * shift, 10, n),
            "income": rng.lognormal(10, 1, n),
            "plan": rng.choice(["free", "pro", "team"], n),
        }
    )
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def test_profile_then_compare_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    runner = CliRunner()
    train = write(tmp_path / "train.csv", 5000, 1)
    made = runner.invoke(cli, ["drift", "profile", str(train)])
    assert made.exit_code == 0, made.output
    profile_file = tmp_path / "train.profile.npz"
    assert profile_file.is_file() and "5,000 rows" in made.output
    today = write(tmp_path / "today.parquet", 3000, 2, shift=0.5)
    compared = runner.invoke(
        cli, ["drift", "compare", str(profile_file), str(today)], env={"COLUMNS": "200"}
    )
    assert compared.exit_code == 0, compared.output
    for word in ("age", "income", "plan", "wasserstein", "jensen_shannon", "p-value"):
        assert word in compared.output
    report = json.loads((tmp_path / "today.drift.json").read_text())
    assert report["drifted_columns"] == ["age"]
    assert report["features"]["age"]["result"]["test"] == "wasserstein"
    assert report["features"]["income"]["p_value"] is not None
    failing = runner.invoke(
        cli,
        [
            "drift",
            "compare",
            str(profile_file),
            str(today),
            "--fail-on-drift",
            "--numeric-test",
            "psi",
            "-o",
            str(tmp_path / "r.json"),
        ],
    )
    assert failing.exit_code == 0  # one column of three: the dataset did not drift
    assert (
        json.loads((tmp_path / "r.json").read_text())["features"]["age"]["result"]["test"] == "psi"
    )


def test_bad_input_is_a_one_line_error(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["drift", "profile", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    (tmp_path / "bad.npz").write_bytes(b"not a profile")
    data = write(tmp_path / "d.csv", 100, 3)
    bad = runner.invoke(cli, ["drift", "compare", str(tmp_path / "bad.npz"), str(data)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    wrong_test = runner.invoke(cli, ["drift", "profile", str(data), "-o", str(tmp_path / "p.npz")])
    assert wrong_test.exit_code == 0
    odd = runner.invoke(
        cli, ["drift", "compare", str(tmp_path / "p.npz"), str(data), "--numeric-test", "vibes"]
    )
    assert odd.exit_code == 2 and "vibes" in odd.output


def test_csv_without_pandas_reads_numbers_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n,y\n2.5,z\n")
    assert _read_csv(path) == {"a": [1.0, None, 2.5], "b": ["x", "y", "z"]}
