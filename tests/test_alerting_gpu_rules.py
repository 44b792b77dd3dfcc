"""The dcgm-exporter compatibility rules (alerting/gpu-dcgm-compat.rules.yml).

promtool checks the rule file and runs its unit tests (alerting/tests/); the other tests keep the
rules in step with mlobs/gpu/names.py, so renaming a GPU series or a throttle reason cannot
silently leave a DCGM name without data.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlobs.gpu.names import METRICS, THROTTLE_REASONS

from .servers.base import assert_ok, run_tool

ALERTING = Path(__file__).resolve().parents[1] / "alerting"
RULES = ALERTING / "gpu-dcgm-compat.rules.yml"
RULE_TESTS = ALERTING / "tests" / "gpu-dcgm-compat.test.yml"

_KEY = re.compile(r"^(?P<indent>\s*)(?P<dash>-\s+)?(?P<key>[A-Za-z_]+):\s*(?P<value>.*?)\s*$")


def _values(path: Path, key: str) -> list[str]:
    """Every value of ``key`` in a rule or promtool test file.

    Reads the YAML these files use (no YAML library is a project dependency): a plain or quoted
    scalar on the key's line, or a ``|`` / ``>`` block in the lines indented deeper than the key.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    values: list[str] = []
    for number, line in enumerate(lines):
        match = _KEY.match(line)
        if match is None or match["key"] != key:
            continue
        value = match["value"]
        if value[:1] not in ("|", ">"):
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values.append(value)
            continue
        column = len(match["indent"]) + len(match["dash"] or "")
        block: list[str] = []
        for following in lines[number + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= column:
                break
            block.append(following.strip())
        values.append("\n".join(block).strip())
    return values


@pytest.mark.slow
def test_promtool_check_rules_passes() -> None:
    assert_ok(run_tool("promtool", "check", "rules", str(RULES)))


@pytest.mark.slow
def test_promtool_unit_tests_pass() -> None:
    assert_ok(run_tool("promtool", "test", "rules", str(RULE_TESTS)))


def test_reader_sees_one_expression_per_rule() -> None:
    records = _values(RULES, "record")
    expressions = _values(RULES, "expr")
    assert records, f"no record: found in {RULES}"
    assert len(expressions) == len(records)
    assert all(expressions)
    assert len(set(records)) == len(records), "a DCGM name is recorded twice"


def test_rules_read_only_gpu_series_that_names_py_defines() -> None:
    used = {name for expr in _values(RULES, "expr") for name in re.findall(r"mlobs_gpu_\w+", expr)}
    assert used, "the rules read no mlobs_gpu_* series"
    unknown = sorted(used - METRICS.keys())
    assert not unknown, f"the rules read series that mlobs/gpu/names.py does not define: {unknown}"


def test_every_recorded_name_has_a_unit_test() -> None:
    tested = "\n".join(_values(RULE_TESTS, "expr"))
    untested = [
        record
        for record in _values(RULES, "record")
        if re.search(rf"\b{re.escape(record)}\b", tested) is None
    ]
    assert not untested, f"no promql_expr_test reads {untested}"


def test_throttle_bitmask_uses_the_nvml_bits_in_names_py() -> None:
    records = _values(RULES, "record")
    expr = _values(RULES, "expr")[records.index("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS")]
    terms = re.findall(
        r'mlobs_gpu_throttle_reason\{reason="(\w+)"\}\s*\*\s*(0x[0-9a-fA-F]+|\d+)', expr
    )
    assert {reason: int(bit, 0) for reason, bit in terms} == {
        reason: bit for bit, reason in THROTTLE_REASONS.items()
    }
    assert len(terms) == len(THROTTLE_REASONS), "a throttle reason appears twice"
