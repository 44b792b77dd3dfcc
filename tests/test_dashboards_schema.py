"""Every dashboard type-checks against npm @grafana/schema with ``tsc --strict``, and the check
can fail: dashboards broken on purpose are rejected, each for its own fault.

The checker is ``scripts/dashboards-typecheck/check.mjs`` (node 20 and the packages pinned in its
package-lock.json, installed by ``scripts/backends.sh``). Without node or the packages the tests
skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.servers.base import fail_or_skip

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO / "scripts" / "dashboards-typecheck"
COMMITTED = REPO / "dashboards"


def _checker() -> list[str]:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed (node 20: apt-get install nodejs npm)"
    elif not (CHECKER / "node_modules" / "typescript").is_dir():
        problem = f"the type-check packages are not installed in {CHECKER}: run scripts/backends.sh"
    if problem:
        fail_or_skip(problem)
    assert node is not None
    return [node, str(CHECKER / "check.mjs")]


def _check(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [*_checker(), *map(str, paths)]
    before = set(CHECKER.glob(".check-*"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    left = set(CHECKER.glob(".check-*")) - before
    assert not left, f"the checker left its generated files behind: {left}"
    return result


def test_committed_and_custom_dashboards_pass_tsc_strict(tmp_path: Path) -> None:
    if os.environ.get("CI") != "true":
        pytest.importorskip("grafanalib", reason="pip install 'mlobs[dashboards]'")
    from mlobs import dashboards

    custom = tmp_path / "custom"
    metrics = ["val/loss", "f1,macro", "step", 'odd "name"']
    dashboards.write(custom, dashboards.build(metrics, uid_prefix="team"))
    result = _check(COMMITTED, custom)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "14 dashboard(s) pass tsc --strict" in result.stdout


def _first(board: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for p in board["panels"] if p["type"] == kind)


def _breakages(board: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Broken copies of ``board`` by name, with the tsc error code each must raise."""

    def broken(change: Any) -> dict[str, Any]:
        copied = copy.deepcopy(board)
        change(copied)
        return copied

    return {
        "unknown-key": (
            broken(lambda b: _first(b, "timeseries").update(gridpos={"x": 0})),
            "TS2353",
        ),
        "bad-enum-value": (
            broken(
                lambda b: _first(b, "timeseries")["fieldConfig"]["defaults"].update(
                    color={"mode": "palette-classical"}
                )
            ),
            "TS2820",
        ),
        "missing-schema-version": (broken(lambda b: b.pop("schemaVersion")), "TS2741"),
        "unknown-panel-type": (
            broken(lambda b: _first(b, "timeseries").update(type="graph")),
            "TS2344",
        ),
        "bad-option": (
            broken(lambda b: _first(b, "timeseries")["options"]["legend"].update(placement="top")),
            "TS2322",
        ),
        "query-without-expr": (
            broken(lambda b: _first(b, "timeseries")["targets"][0].pop("expr")),
            "TS2741",
        ),
        "wrong-type": (broken(lambda b: b.update(refresh=30)), "TS2322"),
    }


def test_broken_dashboards_fail_each_for_its_fault(tmp_path: Path) -> None:
    board = json.loads((COMMITTED / "mlobs-training.json").read_text())
    cases = _breakages(board)
    for name, (broken, _code) in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(broken, indent=2))
    result = _check(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    for name, (_broken, code) in cases.items():
        lines = [line for line in result.stdout.splitlines() if f"{name}.json:" in line]
        assert lines, f"{name}: no error reported\n{result.stdout}"
        assert any(code in line for line in lines), f"{name}: expected {code}\n" + "\n".join(lines)
    # errors name the panel they are in
    assert "(options): error TS2322" in result.stdout


def test_not_json_is_a_setup_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{nope")
    result = _check(tmp_path / "x.json")
    assert result.returncode == 2 and "not JSON" in result.stderr
