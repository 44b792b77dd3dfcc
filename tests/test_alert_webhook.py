"""``mlobs alert-webhook``: an Alertmanager webhook receiver that runs commands for alerts.

The receiver runs in-process on 127.0.0.1, port 0, and is spoken to with real HTTP requests; the
commands are small Python scripts run with ``sys.executable``. One test runs the CLI as a
subprocess (signal and exit path) and one puts a real Alertmanager in front of it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mlobs
from mlobs import safety
from mlobs.alerts.actions import ACTIONS_TOTAL, EVENT_NAME, SECRET_ENV
from mlobs.alerts.webhook import MAX_BODY_BYTES, REJECTED_TOTAL, AlertWebhook
from mlobs.alerts.webhook_config import ConfigError, load_config, parse_config
from mlobs.cli.main import cli
from mlobs.record.types import Kind
from mlobs.spool.catalog import Catalog
from tests.clock import FakeClock
from tests.servers.base import Server, find_binary, free_port, http

SECRET = "s3cret-for-tests"
REPO = Path(__file__).resolve().parents[1]

# Appends the MLOBS_ALERT_* variables it was given to the file named by its first argument.
RECORD_ENV = """\
import json, os, sys
seen = {k: v for k, v in os.environ.items() if k.startswith("MLOBS_ALERT")}
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(seen) + "\\n")
print("retraining", seen.get("MLOBS_ALERT_RUN_ID"))
"""


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    mlobs.configure(dir=str(directory), flush_interval=0.05)
    return directory


@pytest.fixture
def record_env(tmp_path: Path) -> tuple[list[str], Path]:
    """A command that records its alert environment, and the file it writes."""
    script = tmp_path / "record_env.py"
    script.write_text(RECORD_ENV)
    out = tmp_path / "env.jsonl"
    return [sys.executable, str(script), str(out)], out


@pytest.fixture
def serve(spool: Path, tmp_path: Path) -> Iterator[Callable[..., AlertWebhook]]:
    """Start receivers for config dicts; all are stopped at the end of the test."""
    started: list[AlertWebhook] = []

    def start(
        config: dict[str, Any], secret: str | None = SECRET, clock: Any = None
    ) -> AlertWebhook:
        extra = {"clock": clock} if clock is not None else {}
        webhook = AlertWebhook(
            parse_config(config),
            secret,
            addr="127.0.0.1",
            port=0,
            state_path=tmp_path / "state.json",
            **extra,
        )
        started.append(webhook.start())
        return webhook

    yield start
    for webhook in started:
        webhook.stop()


def alert(
    name: str = "ModelDrift", run_id: str = "r1", status: str = "firing", **labels: str
) -> Any:
    all_labels = {"alertname": name, **({"run_id": run_id} if run_id else {}), **labels}
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": f"{name} on {run_id}"},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.invalid/graph",
        "fingerprint": f"fp-{name}-{run_id}-{sorted(labels.items())}",
    }


def notification(*alerts: Any) -> dict[str, Any]:
    """An Alertmanager webhook payload, version 4."""
    return {
        "version": "4",
        "receiver": "retrain",
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "groupKey": "{}:{alertname=" + json.dumps(alerts[0]["labels"]["alertname"]) + "}",
        "truncatedAlerts": 0,
    }


def post(
    webhook: AlertWebhook, payload: Any = None, secret: str | None = SECRET, body: bytes = b""
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    data = body or json.dumps(payload).encode()
    status, answer = http("POST", webhook.url, data, headers)
    return status, json.loads(answer)


def decisions(reply: Any) -> list[str]:
    return [a["decision"] for a in reply["actions"]]


def recorded(spool: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The attrs of the ``alert.action`` events in the spool, once there are ``count``."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        if spool.exists():
            with Catalog(spool) as catalog:
                events = catalog.tail(None, kinds=(Kind.EVENT,)).backlog(10_000)
                found = [{"run_id": e.run_id, **e.attrs} for e in events if e.name == EVENT_NAME]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def env_lines(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the shared secret ---------------------------------------------------------------------------


def test_a_missing_or_wrong_secret_is_401_and_runs_nothing(
    serve: Callable[..., AlertWebhook], spool: Path, record_env: tuple[list[str], Path]
) -> None:
    command, out = record_env
    webhook = serve({"rules": [{"alertname": "ModelDrift", "command": command}]})
    payload = notification(alert())
    for secret in (None, "wrong", SECRET + "x", ""):
        status, reply = post(webhook, payload, secret=secret)
        assert status == 401, secret
        assert reply == {"error": "missing or wrong secret"}
    headers = {"Authorization": f"Basic {SECRET}"}  # right secret, wrong scheme
    assert http("POST", webhook.url, json.dumps(payload).encode(), headers)[0] == 401
    time.sleep(0.3)
    assert not out.exists()
    assert recorded(spool, 1, timeout=0.2) == []
    assert safety.self_metrics.get(REJECTED_TOTAL, "unauthorized") == 5


# --- running the command -------------------------------------------------------------------------


def test_a_matching_firing_alert_runs_the_command_with_the_alert_in_its_environment(
    serve: Callable[..., AlertWebhook],
    spool: Path,
    record_env: tuple[list[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)  # must not reach the command
    command, out = record_env
    webhook = serve({"rules": [{"name": "retrain", "alertname": "ModelDrift", "command": command}]})
    status, reply = post(webhook, notification(alert(run_id="r1", model="resnet")))
    assert status == 200
    assert reply["received"] == 1
    assert reply["unmatched"] == 0
    assert reply["actions"] == [
        {
            "rule": "retrain",
            "alertname": "ModelDrift",
            "run_id": "r1",
            "fingerprint": alert(model="resnet")["fingerprint"],
            "status": "firing",
            "decision": "queued",
        }
    ]
    (event,) = recorded(spool, 1)
    assert event["decision"] == "ran"
    assert event["exit_code"] == 0
    assert event["run_id"] == "r1"
    assert event["rule"] == "retrain"
    assert event["command"] == command
    assert event["dedup_key"] == "alertname=ModelDrift,run_id=r1"
    assert 0 < event["duration_s"] < 10
    assert "retraining r1" in event["output_tail"]
    (env,) = env_lines(out)
    assert SECRET_ENV not in env
    assert env["MLOBS_ALERT_NAME"] == "ModelDrift"
    assert env["MLOBS_ALERT_RUN_ID"] == "r1"
    assert env["MLOBS_ALERT_STATUS"] == "firing"
    assert env["MLOBS_ALERT_RULE"] == "retrain"
    assert env["MLOBS_ALERT_FINGERPRINT"] == alert(model="resnet")["fingerprint"]
    assert env["MLOBS_ALERT_STARTS_AT"] == "2024-05-01T10:00:00Z"
    assert env["MLOBS_ALERT_RECEIVER"] == "retrain"
    assert env["MLOBS_ALERT_GROUP_KEY"] == '{}:{alertname="ModelDrift"}'
    assert json.loads(env["MLOBS_ALERT_LABELS"]) == {
        "alertname": "ModelDrift",
        "run_id": "r1",
        "model": "resnet",
    }
    assert json.loads(env["MLOBS_ALERT_ANNOTATIONS"]) == {"summary": "ModelDrift on r1"}
    assert safety.self_metrics.get(ACTIONS_TOTAL, "ran") == 1


def test_cooldown_skips_a_repeat_but_not_another_run_and_ends_after_its_time(
    serve: Callable[..., AlertWebhook], spool: Path, record_env: tuple[list[str], Path]
) -> None:
    command, out = record_env
    clock = FakeClock(1_700_000_000.0)
    rule = {"alertname": "ModelDrift", "command": command, "cooldown": 600}
    webhook = serve({"rules": [rule]}, clock=clock)
    assert decisions(post(webhook, notification(alert(run_id="r1")))[1]) == ["queued"]
    recorded(spool, 1)
    clock.now += 599
    reply = post(webhook, notification(alert(run_id="r1")))[1]
    assert decisions(reply) == ["skipped_cooldown"]
    assert decisions(post(webhook, notification(alert(run_id="r2")))[1]) == ["queued"]
    events = recorded(spool, 3)
    by_run = {(e["run_id"], e["decision"]) for e in events}
    assert by_run == {("r1", "ran"), ("r1", "skipped_cooldown"), ("r2", "ran")}
    skipped = next(e for e in events if e["decision"] == "skipped_cooldown")
    assert skipped["cooldown_left_s"] == pytest.approx(1.0)
    assert skipped["exit_code"] is None
    clock.now += 2  # the cooldown is over
    assert decisions(post(webhook, notification(alert(run_id="r1")))[1]) == ["queued"]
    recorded(spool, 4)
    assert sorted(e["MLOBS_ALERT_RUN_ID"] for e in env_lines(out)) == ["r1", "r1", "r2"]
    assert safety.self_metrics.get(ACTIONS_TOTAL, "skipped_cooldown") == 1


def test_an_alert_whose_command_is_still_queued_or_running_is_a_duplicate(
    serve: Callable[..., AlertWebhook], spool: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    wait_for_release = (
        f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.01)"
    )
    command = [sys.executable, "-c", wait_for_release]
    webhook = serve({"rules": [{"alertname": "ModelDrift", "command": command, "cooldown": 0}]})
    # two replicas of one alert in one notification (they differ only in a label not in dedup_by)
    both = notification(alert(instance="a"), alert(instance="b"))
    assert decisions(post(webhook, both)[1]) == ["queued", "skipped_duplicate"]
    assert decisions(post(webhook, notification(alert()))[1]) == ["skipped_duplicate"]
    release.touch()
    events = recorded(spool, 3)
    assert sorted(e["decision"] for e in events) == ["ran"] + ["skipped_duplicate"] * 2
    # finished, and a cooldown of 0: the next notification runs it again
    assert decisions(post(webhook, notification(alert()))[1]) == ["queued"]
    assert recorded(spool, 4)[-1]["decision"] == "ran"


def test_resolved_alerts_are_ignored_unless_the_rule_asks_for_them(
    serve: Callable[..., AlertWebhook], spool: Path, record_env: tuple[list[str], Path]
) -> None:
    command, out = record_env
    rules = [
        {"alertname": "ModelDrift", "command": command},
        {"alertname": "GpuIdle", "command": command, "on_resolved": True},
    ]
    webhook = serve({"rules": rules})
    reply = post(webhook, notification(alert(status="resolved")))[1]
    assert decisions(reply) == ["ignored_resolved"]
    firing = post(webhook, notification(alert("GpuIdle")))[1]
    resolved = post(webhook, notification(alert("GpuIdle", status="resolved")))[1]
    # firing and resolved are different keys: the resolution is not held back by the cooldown
    assert decisions(firing) == decisions(resolved) == ["queued"]
    events = recorded(spool, 2)
    assert [e["decision"] for e in events] == ["ran", "ran"]
    assert sorted(e["status"] for e in events) == ["firing", "resolved"]
    time.sleep(0.2)
    assert len(recorded(spool, 3, timeout=0)) == 2  # the ignored one is not recorded
    assert sorted(e["MLOBS_ALERT_STATUS"] for e in env_lines(out)) == ["firing", "resolved"]


def test_alerts_no_rule_matches_are_left_alone(
    serve: Callable[..., AlertWebhook], spool: Path, record_env: tuple[list[str], Path]
) -> None:
    command, out = record_env
    rule = {"alertname": "ModelDrift", "match": {"severity": "critical"}, "command": command}
    webhook = serve({"rules": [rule]})
    reply = post(
        webhook,
        notification(alert("HighLatency", severity="critical"), alert(severity="warning")),
    )[1]
    assert reply == {"received": 2, "unmatched": 2, "actions": []}
    assert decisions(post(webhook, notification(alert(severity="critical")))[1]) == ["queued"]
    assert [e["decision"] for e in recorded(spool, 1)] == ["ran"]
    assert len(env_lines(out)) == 1


def test_failing_timing_out_and_missing_commands_are_recorded_as_such(
    serve: Callable[..., AlertWebhook], spool: Path, tmp_path: Path
) -> None:
    rules = [
        {
            "alertname": "Fails",
            "command": [sys.executable, "-c", "print('boom: token=abc123'); raise SystemExit(3)"],
        },
        {
            "alertname": "Hangs",
            "command": [sys.executable, "-c", "import time; time.sleep(60)"],
            "timeout": 0.5,
        },
        {"alertname": "Missing", "command": [str(tmp_path / "no-such-program")]},
    ]
    webhook = serve({"rules": rules, "max_concurrent": 3})
    payload = notification(alert("Fails"), alert("Hangs"), alert("Missing"))
    assert decisions(post(webhook, payload)[1]) == ["queued"] * 3
    events = {e["alertname"]: e for e in recorded(spool, 3)}
    assert events["Fails"]["decision"] == "failed"
    assert events["Fails"]["exit_code"] == 3
    assert "boom" in events["Fails"]["output_tail"]
    assert "abc123" not in events["Fails"]["output_tail"]  # output is redacted like logs
    assert events["Hangs"]["decision"] == "timed_out"
    assert events["Hangs"]["exit_code"] == -signal.SIGTERM
    assert 0.4 < events["Hangs"]["duration_s"] < 5
    assert events["Missing"]["decision"] == "failed"
    assert events["Missing"]["exit_code"] is None
    assert "cannot start" in events["Missing"]["output_tail"]
    assert safety.self_metrics.get(ACTIONS_TOTAL, "failed") == 2
    assert safety.self_metrics.get(ACTIONS_TOTAL, "timed_out") == 1


def test_stopping_interrupts_the_running_command_and_cancels_the_queued_one(
    serve: Callable[..., AlertWebhook], spool: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    sleeper = f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(60)"
    rule = {"alertname": "ModelDrift", "command": [sys.executable, "-c", sleeper]}
    webhook = serve({"rules": [rule]})
    payload = notification(alert(run_id="r1"), alert(run_id="r2"))
    assert decisions(post(webhook, payload)[1]) == ["queued", "queued"]
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    webhook.stop()
    assert time.monotonic() - t0 < 5
    events = {e["run_id"]: e["decision"] for e in recorded(spool, 2)}
    assert events == {"r1": "interrupted", "r2": "cancelled"}
    # the cancelled one never ran: it holds no cooldown after a restart, the interrupted one does
    again = serve({"rules": [rule]})
    assert decisions(post(again, payload)[1]) == ["skipped_cooldown", "queued"]


def test_cooldowns_survive_a_restart(
    serve: Callable[..., AlertWebhook], spool: Path, record_env: tuple[list[str], Path]
) -> None:
    command, _ = record_env
    config = {"rules": [{"alertname": "ModelDrift", "command": command}]}
    first = serve(config)
    assert decisions(post(first, notification(alert()))[1]) == ["queued"]
    recorded(spool, 1)
    first.stop()
    second = serve(config)
    assert decisions(post(second, notification(alert()))[1]) == ["skipped_cooldown"]


# --- bad requests --------------------------------------------------------------------------------


def test_bad_json_is_400_an_oversized_body_413_and_other_paths_404(
    serve: Callable[..., AlertWebhook], spool: Path, record_env: tuple[list[str], Path]
) -> None:
    command, out = record_env
    webhook = serve({"rules": [{"alertname": "ModelDrift", "command": command}]})
    assert post(webhook, body=b"{not json")[0] == 400
    assert post(webhook, body=b"\xff\xfe")[0] == 400
    assert post(webhook, {"status": "firing"})[0] == 400
    status, reply = post(webhook, {"alerts": [{"labels": "ModelDrift"}]})
    assert (status, reply) == (400, {"error": "alerts[0]: not an alert with a 'labels' object"})
    assert post(webhook, body=b"[" * 200_000)[0] == 400
    assert post(webhook, body=b" " * (MAX_BODY_BYTES + 1))[0] == 413
    headers = {"Authorization": f"Bearer {SECRET}"}
    assert http("POST", webhook.url + "other", b"{}", headers)[0] == 404
    assert http("GET", webhook.url + "-/healthy")[0] == 200
    time.sleep(0.2)
    assert not out.exists()
    assert safety.self_metrics.get(REJECTED_TOTAL, "bad_request") == 5
    assert safety.self_metrics.get(REJECTED_TOTAL, "too_large") == 1


def test_without_a_secret_every_request_is_accepted(
    serve: Callable[..., AlertWebhook], spool: Path, record_env: tuple[list[str], Path]
) -> None:
    command, _ = record_env
    webhook = serve({"rules": [{"alertname": "ModelDrift", "command": command}]}, secret=None)
    assert post(webhook, notification(alert()), secret=None)[0] == 200


# --- configuration -------------------------------------------------------------------------------

GOOD_RULE = {"alertname": "ModelDrift", "command": ["retrain"]}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([GOOD_RULE], "must be a mapping with a 'rules' list"),
        ({"rules": []}, "'rules' must be a non-empty list"),
        ({"rules": [GOOD_RULE], "extra": 1}, "unknown key(s) extra"),
        ({"rules": [{"command": ["x"]}]}, "rules[0]: give 'alertname' or a 'match'"),
        ({"rules": [{**GOOD_RULE, "command": "retrain --now"}]}, "not a shell string"),
        ({"rules": [{**GOOD_RULE, "command": []}]}, "rules[0] (ModelDrift).command"),
        ({"rules": [{**GOOD_RULE, "cooldown": -1}]}, "cooldown: must be ≥ 0"),
        ({"rules": [{**GOOD_RULE, "cooldown": "1h"}]}, "cooldown: must be a number of seconds"),
        ({"rules": [{**GOOD_RULE, "timeout": 0}]}, "timeout: must be > 0"),
        ({"rules": [{**GOOD_RULE, "dedup_by": "run_id"}]}, "dedup_by: must be a list"),
        ({"rules": [{**GOOD_RULE, "on_resolved": "yes"}]}, "on_resolved: must be true or false"),
        ({"rules": [{**GOOD_RULE, "match": {"severity": 2}}]}, "match: must map label names"),
        ({"rules": [{**GOOD_RULE, "comand": ["x"]}]}, "unknown key(s) comand"),
        ({"rules": [GOOD_RULE, GOOD_RULE]}, "rule name 'ModelDrift' is used twice"),
        ({"rules": [GOOD_RULE], "max_concurrent": 0}, "'max_concurrent' must be an integer"),
        (
            {"rules": [{**GOOD_RULE, "match": {"alertname": "Other"}}]},
            "'alertname' and 'match.alertname' disagree",
        ),
    ],
)
def test_invalid_configurations_are_refused_with_the_reason(config: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(config)
    assert message in str(error.value)


def test_configuration_loads_from_yaml_and_json(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    yaml_file = tmp_path / "hooks.yaml"
    yaml_file.write_text(
        "max_concurrent: 2\n"
        "rules:\n"
        "  - name: retrain\n"
        "    match: {alertname: ModelDrift, severity: critical}\n"
        "    command: [python, -m, retrain]\n"
        "    cooldown: 7200\n"
        "    dedup_by: [alertname, model]\n"
    )
    config = load_config(yaml_file)
    assert config.max_concurrent == 2
    (rule,) = config.rules
    assert rule.name == "retrain"
    assert rule.command == ("python", "-m", "retrain")
    assert rule.cooldown == 7200
    assert rule.dedup_by == ("alertname", "model")
    assert rule.timeout == 3600 and rule.on_resolved is False
    json_file = tmp_path / "hooks.json"
    json_file.write_text(json.dumps({"rules": [GOOD_RULE]}))
    assert load_config(json_file).rules[0].dedup_by == ("alertname", "run_id")
    (tmp_path / "bad.json").write_text("{rules: [")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


# --- the command line ----------------------------------------------------------------------------


def test_the_cli_refuses_to_start_without_a_secret_or_with_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "hooks.json"
    config.write_text(json.dumps({"rules": [GOOD_RULE]}))
    runner = CliRunner()
    result = runner.invoke(cli, ["alert-webhook", "--config", str(config)])
    assert result.exit_code == 2
    assert f"give --secret-file or set {SECRET_ENV}" in result.output
    config.write_text(json.dumps({"rules": [{"command": ["x"]}]}))
    result = runner.invoke(cli, ["alert-webhook", "--config", str(config), "--insecure-no-secret"])
    assert result.exit_code == 2
    assert "give 'alertname' or a 'match'" in result.output
    empty = tmp_path / "secret"
    empty.write_text("\n")
    config.write_text(json.dumps({"rules": [GOOD_RULE]}))
    result = runner.invoke(
        cli, ["alert-webhook", "--config", str(config), "--secret-file", str(empty)]
    )
    assert result.exit_code == 2
    assert "is empty" in result.output


@contextmanager
def cli_webhook(tmp_path: Path, config: dict[str, Any]) -> Iterator[tuple[str, Path, Any]]:
    """``mlobs alert-webhook`` as a subprocess on a free port; yields (url, spool dir, process)."""
    config_file = tmp_path / "hooks.json"
    config_file.write_text(json.dumps(config))
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    spool_dir = tmp_path / "cli-spool"
    argv = [sys.executable, "-m", "mlobs.cli.main", "--dir", str(spool_dir), "alert-webhook"]
    argv += ["--config", str(config_file), "--port", "0", "--secret-file", str(secret_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            stderr.append(line)
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        prefix = "mlobs alert-webhook: listening on "
        while True:
            line = lines.get(timeout=15)
            if line.startswith(prefix):
                break
        yield line[len(prefix) :].strip(), spool_dir, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(5)
        print("".join(stderr))


def test_the_cli_serves_until_sigterm_and_exits_0(
    tmp_path: Path, record_env: tuple[list[str], Path]
) -> None:
    command, out = record_env
    config = {"rules": [{"alertname": "ModelDrift", "command": command}]}
    with cli_webhook(tmp_path, config) as (url, spool_dir, process):
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        body = json.dumps(notification(alert(run_id="cli-run"))).encode()
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
        status, reply = http("POST", url, body, headers)
        assert status == 200, reply
        assert http("POST", url, body, {})[0] == 401
        deadline = time.monotonic() + 10
        while not env_lines(out) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert env_lines(out)[0]["MLOBS_ALERT_RUN_ID"] == "cli-run"
        recorded(spool_dir, 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    (event,) = recorded(spool_dir, 1)
    assert (event["run_id"], event["decision"]) == ("cli-run", "ran")


# --- a real Alertmanager -------------------------------------------------------------------------


def test_alertmanager_notifies_the_receiver_and_the_command_runs(
    serve: Callable[..., AlertWebhook],
    spool: Path,
    tmp_path: Path,
    record_env: tuple[list[str], Path],
) -> None:
    binary = find_binary("alertmanager", "prometheus-alertmanager")
    command, out = record_env
    webhook = serve({"rules": [{"alertname": "ModelDrift", "command": command}]})
    secret_file = tmp_path / "am-secret"
    secret_file.write_text(SECRET)
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    config = workdir / "alertmanager.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "route": {
                    "receiver": "retrain",
                    "group_by": ["alertname", "run_id"],
                    "group_wait": "0s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "retrain",
                        "webhook_configs": [
                            {
                                "url": webhook.url,
                                "send_resolved": False,
                                "http_config": {
                                    "authorization": {
                                        "type": "Bearer",
                                        "credentials_file": str(secret_file),
                                    }
                                },
                            }
                        ],
                    }
                ],
            }
        )
    )
    port = free_port()
    server = Server(
        "alertmanager",
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        port,
        workdir,
    )
    server.start()
    try:
        posted = [{"labels": {"alertname": "ModelDrift", "run_id": "am-run", "severity": "page"}}]
        status, answer = http(
            "POST",
            server.url + "/api/v2/alerts",
            json.dumps(posted).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, answer
        (event,) = recorded(spool, 1, timeout=15)
        assert (event["run_id"], event["decision"]) == ("am-run", "ran"), server.log_tail()
        (env,) = env_lines(out)
        assert env["MLOBS_ALERT_RECEIVER"] == "retrain"
        assert len(env["MLOBS_ALERT_FINGERPRINT"]) == 16
        assert json.loads(env["MLOBS_ALERT_LABELS"])["severity"] == "page"
    finally:
        server.stop()
