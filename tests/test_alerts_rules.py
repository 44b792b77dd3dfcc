"""The generated alert rules (alerting/*.rules.yml): fresh, valid, documented, unit-tested.

The committed files must equal a fresh ``mlobs alerts generate`` with the default parameters;
promtool checks each rule file and runs its unit tests in alerting/tests/; every alert has its
labels, annotations, runbook section and tests on both sides of its ``for:`` window; the series
the rules read are the names mlobs serves.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlobs import safety
from mlobs.alerts import (
    AREAS,
    AlertmanagerParams,
    ParamError,
    RuleParams,
    apply_overrides,
    differences,
    render_all,
    split_overrides,
)
from mlobs.alerts import rules as alert_rules
from mlobs.alerts.files import rule_file
from mlobs.alerts.params import DASHBOARD_UIDS
from mlobs.alerts.promql import seconds
from mlobs.cli.main import cli
from mlobs.drift import names as drift_names
from mlobs.export import prom_names
from mlobs.serving import names as serving_names

from .servers.base import assert_ok, run_tool

ALERTING = Path(__file__).resolve().parents[1] / "alerting"
RUNBOOK = ALERTING / "runbook.md"
REQUIRED_ANNOTATIONS = ("summary", "description", "value", "model", "runbook_url", "dashboard_url")


def _rules(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _committed_alerts() -> list[tuple[str, dict[str, Any]]]:
    return [(area, rule) for area in AREAS for rule in _rules(ALERTING / rule_file(area))]


def _slug(heading: str) -> str:
    """A Markdown heading as GitHub makes its anchor."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _runbook_anchors() -> dict[str, str]:
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    return {_slug(h): h for h in headings}


# --- the committed files ------------------------------------------------------------------------


def test_committed_files_equal_a_fresh_generation() -> None:
    files = render_all()
    stale = differences(ALERTING, files)
    report = []
    for relative in stale:
        path = ALERTING / relative
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        diff = difflib.unified_diff(
            current.splitlines(), files[relative].splitlines(), relative, "fresh", lineterm=""
        )
        report.append("\n".join(list(diff)[:40]))
    assert not stale, (
        "alerting/ is out of date with mlobs/alerts; run `mlobs alerts generate --out alerting` "
        "and commit the result:\n" + "\n".join(report)
    )


@pytest.mark.slow
@pytest.mark.parametrize("area", AREAS)
def test_promtool_check_rules(area: str) -> None:
    assert_ok(run_tool("promtool", "check", "rules", str(ALERTING / rule_file(area))))


@pytest.mark.slow
@pytest.mark.parametrize("area", AREAS)
def test_promtool_unit_tests(area: str) -> None:
    assert_ok(run_tool("promtool", "test", "rules", str(ALERTING / "tests" / f"{area}.test.yml")))


def test_every_alert_has_severity_team_and_annotations() -> None:
    alerts = _committed_alerts()
    assert len({rule["alert"] for _, rule in alerts}) == 23
    for area, rule in alerts:
        name = rule["alert"]
        assert rule["labels"]["severity"] in alert_rules.SEVERITIES, name
        assert rule["labels"]["team"] == RuleParams().team(area), name
        assert set(rule["annotations"]) == set(REQUIRED_ANNOTATIONS), name
        assert rule["for"] not in ("0s", "0m"), f"{name}: a `for:` window gives pending a test"
        dashboard = rule["annotations"]["dashboard_url"]
        assert dashboard.startswith(f"http://localhost:3000/d/{DASHBOARD_UIDS[area]}?"), name


def test_every_runbook_url_points_at_a_section_of_the_runbook() -> None:
    anchors = _runbook_anchors()
    base = RuleParams().runbook_base_url
    for _, rule in _committed_alerts():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == base
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in alerting/runbook.md"


def test_every_runbook_alert_section_names_an_alert() -> None:
    names = {rule["alert"] for _, rule in _committed_alerts()}
    sections = re.findall(r"^### (\S+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(sections) == sorted(names)


def test_every_alert_is_tested_on_both_sides_of_its_for_window() -> None:
    """Each alert name has, in its area's promtool tests, an evaluation inside its ``for:``
    window where it must not fire yet (pending) and the evaluation where it fires, in the same
    test case; each severity of an alert name fires in some test, with all its annotations."""
    for area in AREAS:
        tests = yaml.safe_load((ALERTING / "tests" / f"{area}.test.yml").read_text())
        assert tests["rule_files"] == [f"../{rule_file(area)}"]
        windows = {
            rule["alert"]: seconds(rule["for"]) for rule in _rules(ALERTING / rule_file(area))
        }
        both_sides: set[str] = set()
        severities: set[tuple[str, str]] = set()
        for case in tests["tests"]:
            quiet: dict[str, list[float]] = {}
            firing: dict[str, list[float]] = {}
            for check in case.get("alert_rule_test", []):
                name, when = check["alertname"], seconds(str(check["eval_time"]))
                expected = check.get("exp_alerts") or []
                (firing if expected else quiet).setdefault(name, []).append(when)
                for alert in expected:
                    severities.add((name, alert["exp_labels"]["severity"]))
                    assert set(alert["exp_annotations"]) == set(REQUIRED_ANNOTATIONS), name
            for name, fired in firing.items():
                first = min(fired)
                if any(first - windows[name] <= q < first for q in quiet.get(name, [])):
                    both_sides.add(name)
        for rule in _rules(ALERTING / rule_file(area)):
            name = rule["alert"]
            assert name in both_sides, (
                f"{area}: no test where {name} is pending (within its for: window) then fires"
            )
            assert (name, rule["labels"]["severity"]) in severities, (
                f"{area}: {name} never fires with severity {rule['labels']['severity']}"
            )


# --- the series the rules read --------------------------------------------------------------------


def test_rules_read_the_names_mlobs_serves() -> None:
    assert alert_rules.RUN_INFO == prom_names.RUN_INFO
    assert alert_rules.RUN_STATUS == prom_names.RUN_STATUS
    assert alert_rules.RUN_START == prom_names.RUN_START
    assert alert_rules.RUN_END == prom_names.RUN_END
    assert alert_rules.RUN_PROGRESS == prom_names.RUN_PROGRESS
    assert alert_rules.STEP_EXECUTIONS == prom_names.STEP_EXECUTIONS
    assert alert_rules.SPOOL_BACKLOG == prom_names.SPOOL_BACKLOG
    assert alert_rules.SPOOL_OLDEST_AGE == prom_names.SPOOL_OLDEST_AGE
    assert alert_rules.FAILURES_IN_ROW == prom_names.FAILURES_IN_ROW
    assert alert_rules.RECORDS_DROPPED == safety.RECORDS_DROPPED
    assert alert_rules.INTERNAL_ERRORS == safety.INTERNAL_ERRORS
    # user-named series (serving, drift, quality) are served under prom_names' mapping
    served = {
        (serving_names.REQUESTS, "counter"),
        (serving_names.ERRORS, "counter"),
        (serving_names.DURATION, "histogram"),
        (drift_names.SHARE_DRIFTED, "gauge"),
        (drift_names.DETECTED, "gauge"),
    }
    for name, kind in served:
        assert prom_names.metric_base(name, kind) == alert_rules.PREFIX + name
    params = RuleParams()
    for kpi in (*params.quality_higher_is_better, *params.quality_lower_is_better):
        assert prom_names.metric_base(f"quality_{kpi}", "gauge") == params.quality_prefix + kpi
    assert prom_names.metric_base("loss", "gauge") == params.loss_metric
    assert prom_names.metric_base("epoch_duration_seconds", "gauge") == (
        params.epoch_duration_metric
    )


# --- parameters ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_parameters_reach_every_rule_and_promtool_accepts_them(tmp_path: Path) -> None:
    params = apply_overrides(
        RuleParams(),
        {
            "training_selector": 'job="train", env=~"prod|staging"',
            "gpu_selector": 'run_id=""',
            "serving_selector": 'namespace="serving"',
            "gpu_temperature_celsius": "80",
            "quality_baselines": "accuracy:0.9",
            "quality_ignore_labels": "",
            "gpu_team": "infra",
            "runbook_base_url": "https://wiki.example.org/mlobs-runbook",
        },
    )
    files = render_all(params)
    for area in AREAS:
        path = tmp_path / rule_file(area)
        path.write_text(files[rule_file(area)])
        assert_ok(run_tool("promtool", "check", "rules", str(path)))
    training = _rules(tmp_path / rule_file("training"))
    for rule in training:
        assert 'job="train", env=~"prod|staging"' in rule["expr"], rule["alert"]
    gpu = {rule["alert"]: rule for rule in _rules(tmp_path / rule_file("gpu"))}
    assert 'sensor="gpu", run_id=""} > 80' in gpu["MlobsGpuTemperatureHigh"]["expr"]
    assert all(rule["labels"]["team"] == "infra" for rule in gpu.values())
    assert gpu["MlobsGpuLost"]["annotations"]["runbook_url"] == (
        "https://wiki.example.org/mlobs-runbook#mlobsgpulost"
    )
    quality = {rule["labels"]["kpi"]: rule for rule in _rules(tmp_path / rule_file("quality"))}
    assert "mlobs_quality_accuracy < 0.855" in quality["accuracy"]["expr"]
    assert "its baseline 0.9" in quality["accuracy"]["annotations"]["description"]
    assert "ignoring" not in quality["rmse"]["expr"]
    for rule in _rules(tmp_path / rule_file("serving")):
        assert rule["expr"].count('namespace="serving"') == rule["expr"].count("mlobs_http")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("stall_for", "5 minutes", "not a Prometheus duration"),
        ("training_selector", "job=train", "not a label matcher"),
        ("training_selector", 'job="a",', "not a label matcher"),
        ("gpu_thermal_reasons", "too_hot", "unknown throttle reason"),
        ("gpu_memory_used_ratio", "95", "not a ratio"),
        ("gpu_xid_critical", "79,GPU", "XID codes are numbers"),
        ("quality_baselines", "auc:0.9", "in neither KPI list"),
        ("loss_metric", "val/loss", "not a metric name"),
        ("stall_epoch_multiple", "-1", "negative"),
        ("gpu_temperature_celsius", "hot", "could not convert"),
    ],
)
def test_bad_parameters_fail_at_generation(key: str, value: str, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        apply_overrides(RuleParams(), {key: value})


def test_overrides_are_sorted_between_rules_and_alertmanager() -> None:
    rules, am = split_overrides(["gpu_team=infra", "group_wait=10s", "smtp_require_tls=false"])
    assert rules == {"gpu_team": "infra"}
    assert am == {"group_wait": "10s", "smtp_require_tls": "false"}
    assert apply_overrides(AlertmanagerParams(), am).smtp_require_tls is False
    with pytest.raises(ParamError, match="unknown parameter 'nope'"):
        split_overrides(["nope=1"])
    with pytest.raises(ParamError, match="not KEY=VALUE"):
        split_overrides(["gpu_team"])


def test_cli_generates_checks_and_reports_stale_files(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "alerting"
    result = runner.invoke(cli, ["alerts", "generate", "--out", str(out), "--param", "gpu_team=x"])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        render_all()
    )
    assert "team: x" in (out / "gpu.rules.yml").read_text()
    check = ["alerts", "generate", "--out", str(out), "--check", "--param", "gpu_team=x"]
    assert runner.invoke(cli, check).exit_code == 0
    (out / "drift.rules.yml").write_text("groups: []\n")
    stale = runner.invoke(cli, check)
    assert stale.exit_code == 1
    assert "drift.rules.yml" in stale.output
    bad = runner.invoke(cli, ["alerts", "generate", "--out", str(out), "--param", "x=1"])
    assert bad.exit_code == 2
    assert "unknown parameter 'x'" in bad.output
