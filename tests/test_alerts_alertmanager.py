"""alerting/alertmanager.yml and alerting/templates/mlobs.tmpl.

amtool validates the configuration and its routing tree; then a real Alertmanager runs a test
copy of the committed configuration and delivers to two test-owned stand-ins on 127.0.0.1 (an
SMTP server and an HTTP server recording Slack webhook payloads): a critical alert of a run is
emailed and posted to Slack with the run, the model, the value and both links, a warning of the
same run is inhibited, and a warning of another run is posted to Slack only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlobs.alerts import (
    AlertmanagerParams,
    ParamError,
    apply_overrides,
    build_alertmanager,
    split_overrides,
)

from .servers.alertmanager import AlertmanagerServer, SlackRecorder, SmtpRecorder
from .servers.base import assert_ok, fail_or_skip, run_tool

ALERTING = Path(__file__).resolve().parents[1] / "alerting"
CONFIG = ALERTING / "alertmanager.yml"
RUNBOOK = "https://github.com/mlobs/mlobs/blob/main/alerting/runbook.md"
DASHBOARDS = "http://localhost:3000/d"


def _committed() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return config


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


# --- the configuration --------------------------------------------------------------------------


@pytest.mark.slow
def test_amtool_accepts_the_configuration_and_its_templates() -> None:
    result = run_tool("amtool", "check-config", str(CONFIG))
    assert_ok(result)
    assert "SUCCESS" in result.stdout
    assert "1 templates" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (("team=ml", "severity=critical"), "ml-email-slack"),
        (("team=ml", "severity=warning"), "ml-slack"),
        (("team=ml", "severity=info"), "ml-slack"),
        (("team=platform", "severity=critical"), "platform-email-slack"),
        (("team=platform", "severity=warning"), "platform-slack"),
        (("team=data", "severity=critical"), "platform-slack"),
    ],
)
def test_routes_by_team_and_severity(labels: tuple[str, ...], receiver: str) -> None:
    result = run_tool("amtool", "config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert_ok(result)
    assert result.stdout.strip() == receiver


def test_no_secret_is_in_the_configuration() -> None:
    config = _committed()
    secret_dir = AlertmanagerParams().secrets_dir
    files = []
    for path, value in _walk(config):
        key = path.rsplit(".", 1)[-1]
        assert key not in ("smtp_auth_password", "auth_password", "api_url", "slack_api_url"), path
        assert "hooks.slack" not in str(value), path
        if key.endswith("_file"):
            assert str(value).startswith(secret_dir + "/"), path
            files.append(Path(value).name)
    assert sorted(set(files)) == ["slack-api-url-ml", "slack-api-url-platform", "smtp-password"]


def test_grouping_by_run_and_inhibition_within_a_run() -> None:
    config = _committed()
    assert config["route"]["group_by"] == ["alertname", "run_id"]
    by_run = config["inhibit_rules"][0]
    assert by_run == {
        "source_matchers": ['severity="critical"', 'run_id=~".+"'],
        "target_matchers": ['severity=~"warning|info"', 'run_id=~".+"'],
        "equal": ["run_id"],
    }
    assert config == build_alertmanager()  # the committed file is the default generation


@pytest.mark.slow
def test_parameters_add_teams_and_drop_smtp_auth(tmp_path: Path) -> None:
    rules, am = split_overrides(
        [
            "teams=ml,platform,data",
            "email_to=ml:ml@example.org,platform:ops@example.org,data:data@example.org",
            "slack_channel=ml:#ml,platform:#ops,data:#data",
            "smtp_auth_username=",
            "secrets_dir=/run/secrets/alertmanager",
        ]
    )
    assert not rules
    config = build_alertmanager(apply_overrides(AlertmanagerParams(), am))
    assert "smtp_auth_username" not in config["global"]
    assert "smtp_auth_password_file" not in config["global"]
    names = [r["name"] for r in config["receivers"]]
    assert names[-2:] == ["data-email-slack", "data-slack"]
    data = config["receivers"][-2]
    assert data["email_configs"][0]["to"] == "data@example.org"
    assert (
        data["slack_configs"][0]["api_url_file"] == "/run/secrets/alertmanager/slack-api-url-data"
    )
    path = tmp_path / "alertmanager.yml"
    config["templates"] = [str(ALERTING / "templates" / "*.tmpl")]
    path.write_text(json.dumps(config))
    result = run_tool("amtool", "check-config", str(path))
    assert_ok(result)
    labels = ("team=data", "severity=critical")
    routed = run_tool("amtool", "config", "routes", "test", f"--config.file={path}", *labels)
    assert routed.stdout.strip() == "data-email-slack"
    with pytest.raises(ParamError, match="email_to has no entry for team"):
        apply_overrides(AlertmanagerParams(), {"teams": "ml,platform,data"})


# --- a real Alertmanager ------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpRecorder]:
    try:
        import aiosmtpd  # noqa: F401 (the stand-in's SMTP server)
    except ImportError:
        fail_or_skip("PyPI aiosmtpd missing; pip install -e '.[dev]'")
    server = SmtpRecorder()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def slack() -> Iterator[SlackRecorder]:
    server = SlackRecorder()
    server.start()
    yield server
    server.stop()


def _test_copy(tmp_path: Path, smtp: SmtpRecorder, slack: SlackRecorder) -> dict[str, Any]:
    """The committed configuration, pointed at the stand-ins and with short timers."""
    config = _committed()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    glob = config["global"]
    glob["smtp_smarthost"] = smtp.address
    glob["smtp_require_tls"] = False
    glob.pop("smtp_auth_username")  # the stand-in has no AUTH
    glob.pop("smtp_auth_password_file")
    config["templates"] = [str(ALERTING / name) for name in config["templates"]]
    config["route"].update({"group_wait": "1s", "group_interval": "1s"})
    for receiver in config["receivers"]:
        for slack_config in receiver.get("slack_configs", []):
            name = Path(slack_config["api_url_file"]).name  # slack-api-url-<team>
            team = name.removeprefix("slack-api-url-")
            (secrets / name).write_text(f"{slack.url}/slack/{team}")
            slack_config["api_url_file"] = str(secrets / name)
    return config


def _alert(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "labels": labels,
        "annotations": annotations,
        "generatorURL": "http://prometheus.invalid/graph",
    }


RUN_1 = {"run_id": "4f1c9a", "run_name": "resnet50-baseline", "experiment": "imagenet", "rank": "0"}
RUN_2 = {"run_id": "77d0e3", "run_name": "vit-small", "experiment": "imagenet", "rank": "0"}

NAN_LOSS = _alert(
    {"alertname": "MlobsLossNotFinite", "severity": "critical", "team": "ml", **RUN_1},
    {
        "summary": "Loss is NaN in run resnet50-baseline",
        "description": "mlobs_loss of run resnet50-baseline (4f1c9a, experiment imagenet, rank 0) "
        "is NaN: the optimisation has diverged and every further step is wasted.",
        "value": "NaN",
        "model": "resnet50 (version 3)",
        "runbook_url": f"{RUNBOOK}#mlobslossnotfinite",
        "dashboard_url": f"{DASHBOARDS}/mlobs-training?var-run_id=4f1c9a",
    },
)
IDLE_GPU_SAME_RUN = _alert(
    {
        "alertname": "MlobsGpuIdleDuringRun",
        "severity": "warning",
        "team": "platform",
        "gpu": "0",
        "uuid": "GPU-0a",
        "host": "node-a",
        **RUN_1,
    },
    {
        "summary": "GPU 0 (NVIDIA H100 80GB HBM3) on node-a idle during run resnet50-baseline",
        "description": "GPU 0 was busy only 1% of the time over the last 10m.",
        "value": "1%",
        "model": "resnet50 (version 3)",
        "runbook_url": f"{RUNBOOK}#mlobsgpuidleduringrun",
        "dashboard_url": f"{DASHBOARDS}/mlobs-gpu?var-host=node-a&var-gpu=0",
    },
)
DIVERGING_OTHER_RUN = _alert(
    {"alertname": "MlobsLossDiverging", "severity": "warning", "team": "ml", **RUN_2},
    {
        "summary": "Loss of run vit-small is 1.5, far above its best",
        "description": "mlobs_loss of run vit-small is 1.5: it has stayed more than 100% above "
        "its best value of the last 6h for 10m.",
        "value": "1.5",
        "model": "vit-s16",
        "runbook_url": f"{RUNBOOK}#mlobslossdiverging",
        "dashboard_url": f"{DASHBOARDS}/mlobs-training?var-run_id=77d0e3",
    },
)


def _state(alerts: list[dict[str, Any]], alertname: str) -> dict[str, Any]:
    (found,) = [a for a in alerts if a["labels"]["alertname"] == alertname]
    status: dict[str, Any] = found["status"]
    return status


@pytest.mark.slow
def test_alertmanager_delivers_readable_email_and_slack_and_inhibits_within_a_run(
    alertmanager_server: Callable[..., AlertmanagerServer],
    smtp: SmtpRecorder,
    slack: SlackRecorder,
    tmp_path: Path,
) -> None:
    server = alertmanager_server(_test_copy(tmp_path, smtp, slack))
    server.post_alerts([NAN_LOSS, IDLE_GPU_SAME_RUN, DIVERGING_OTHER_RUN])

    # the critical alert: one email to the ml team and one Slack message in its channel
    (mail,) = smtp.wait_for(1)
    assert mail.rcpt_tos == ("ml-oncall@example.org",)
    assert mail.mail_from == "mlobs-alerts@example.org"
    assert mail.subject == "[FIRING:1] Loss is NaN in run resnet50-baseline"
    text = mail.body("plain")
    for expected in (
        "CRITICAL: Loss is NaN in run resnet50-baseline",
        "Run:        resnet50-baseline",
        "Run id:     4f1c9a",
        "Model:      resnet50 (version 3)",
        "Value:      NaN",
        f"Dashboard:  {DASHBOARDS}/mlobs-training?var-run_id=4f1c9a",
        f"Runbook:    {RUNBOOK}#mlobslossnotfinite",
        "the optimisation has diverged",
    ):
        assert expected in text, f"{expected!r} not in the email:\n{text}"
    html = mail.body("html")
    assert f'href="{DASHBOARDS}/mlobs-training?var-run_id=4f1c9a"' in html
    assert f'href="{RUNBOOK}#mlobslossnotfinite"' in html
    assert "resnet50 (version 3)" in html
    assert "<b>NaN</b>" in html

    posted = slack.wait_for("/slack/ml", 2)
    by_title = {p["attachments"][0]["title"]: p for p in posted}
    critical = by_title["[FIRING:1] Loss is NaN in run resnet50-baseline"]
    assert critical["channel"] == "#ml-alerts"
    attachment = critical["attachments"][0]
    assert attachment["color"] == "danger"
    assert attachment["title_link"] == f"{DASHBOARDS}/mlobs-training?var-run_id=4f1c9a"
    for expected in (
        "*CRITICAL* Loss is NaN in run resnet50-baseline",
        "*Run:* resnet50-baseline",
        "*Run id:* `4f1c9a`",
        "*Model:* resnet50 (version 3)",
        "*Value:* NaN",
        f"<{DASHBOARDS}/mlobs-training?var-run_id=4f1c9a|Dashboard>",
        f"<{RUNBOOK}#mlobslossnotfinite|Runbook>",
    ):
        assert expected in attachment["text"], f"{expected!r} not in: {attachment['text']}"

    # the warning of another run: Slack only, not inhibited
    other = by_title["[FIRING:1] Loss of run vit-small is 1.5, far above its best"]
    assert other["attachments"][0]["color"] == "warning"
    assert "*Model:* vit-s16" in other["attachments"][0]["text"]
    assert "*Value:* 1.5" in other["attachments"][0]["text"]

    # the warning of the run with a critical alert is inhibited and never delivered
    alerts = server.wait_for_alerts(
        lambda found: len(found) == 3 and _state(found, "MlobsGpuIdleDuringRun")["inhibitedBy"]
    )
    assert _state(alerts, "MlobsGpuIdleDuringRun")["state"] == "suppressed"
    assert _state(alerts, "MlobsLossDiverging")["state"] == "active"
    assert _state(alerts, "MlobsLossNotFinite")["state"] == "active"
    # its group was due with the others (group_wait 1s); give a late delivery time to show up
    with pytest.raises(TimeoutError):
        slack.wait_for("/slack/platform", 1, timeout=1.5)
    assert len(smtp.messages()) == 1
