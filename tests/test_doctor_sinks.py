"""``mlobs doctor`` asks each configured network sink, against the real servers."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlobs.cli.main import cli

from .backends import InfluxDBServer, PushgatewayServer, free_port


def doctor(tmp_path: Path, **env: str) -> tuple[Result, dict[str, dict[str, object]]]:
    result = CliRunner().invoke(
        cli, ["--dir", str(tmp_path / "spool"), "doctor", "--json"], env={"COLUMNS": "250", **env}
    )
    report = json.loads(result.output)
    checks = {c["name"]: c for c in report["checks"] if str(c["name"]).startswith("sink ")}
    return result, checks


@pytest.mark.slow
def test_doctor_reports_live_and_dead_sinks(
    tmp_path: Path, pushgateway: PushgatewayServer, influxdb: InfluxDBServer
) -> None:
    nobody = free_port()  # nothing listens here
    env = {
        "MLOBS_PUSHGATEWAY_URL": pushgateway.url,
        "MLOBS_PUSHGATEWAY_USERNAME": "trainer",
        "MLOBS_PUSHGATEWAY_PASSWORD": "hunter2-secret",
        "MLOBS_INFLUXDB_URL": influxdb.url,
        "MLOBS_FLUENTD_HOST": "127.0.0.1",
        "MLOBS_FLUENTD_PORT": str(nobody),
    }
    result, checks = doctor(tmp_path, **env)
    assert checks["sink pushgateway"]["ok"] is True, checks
    assert checks["sink influxdb"]["ok"] is True
    assert "1.6" in str(checks["sink influxdb"]["detail"])  # the version influxd answered with
    assert checks["sink fluentd"]["ok"] is False
    assert str(nobody) in str(checks["sink fluentd"]["detail"])
    assert result.exit_code == 1
    assert "hunter2-secret" not in result.output

    pushgateway.stop()
    result, checks = doctor(tmp_path, **{**env, "MLOBS_FLUENTD_HOST": ""})
    assert checks["sink pushgateway"]["ok"] is False
    assert "sink fluentd" not in checks
    assert result.exit_code == 1


def test_doctor_says_when_the_metrics_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result, checks = doctor(tmp_path, MLOBS_PROMETHEUS_PORT=str(port))
    assert checks["sink prometheus"]["ok"] is False
    assert result.exit_code == 1
    free = free_port()
    result, checks = doctor(tmp_path, MLOBS_PROMETHEUS_PORT=str(free))
    assert checks["sink prometheus"]["ok"] is True, checks
    assert result.exit_code == 0
