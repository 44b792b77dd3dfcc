"""Every example under examples/ runs as a script and leaves a finished run in the spool.

An example whose framework is not installed is skipped, except in CI (``CI=true``), where every
one must run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlobs.spool.catalog import Catalog

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NEEDS = {
    "lightning_example.py": ["lightning", "torch"],
    "keras_example.py": ["keras", "torch"],
    "transformers_example.py": ["transformers", "torch", "accelerate"],
    "xgboost_example.py": ["xgboost"],
    "lightgbm_example.py": ["lightgbm"],
    "sklearn_example.py": ["sklearn"],
    "serving_fastapi.py": ["fastapi", "httpx", "numpy", "scipy"],
    "drift_batch.py": ["numpy", "scipy"],
}
TIMEOUT_S = 120


def test_every_example_is_listed() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(NEEDS)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(NEEDS))
def test_example_runs_and_records_a_finished_run(script: str, tmp_path: Path) -> None:
    missing = [m for m in NEEDS[script] if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{script} needs {', '.join(missing)}, which CI must install")
        pytest.skip(f"{script} needs {', '.join(missing)}")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLOBS_", "OTEL_"))},
        "MLOBS_DIR": str(tmp_path / "spool"),
        "MLOBS_GPU": "off",
        "MLOBS_GIT": "0",
        "KERAS_HOME": str(tmp_path / "keras"),  # Keras writes its config file there
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[finished]" in done.stdout  # it printed what it recorded
    with Catalog(tmp_path / "spool") as catalog:
        runs = catalog.runs()
    assert runs and all(run.status == "finished" for run in runs)
