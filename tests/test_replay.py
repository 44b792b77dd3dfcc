"""``mlobs replay``: offline and crashed runs shipped later, from each sink's cursor, once.

The sink here is the JSON-lines file sink: it needs no server, and every record it wrote can be
read back. Replays into the network sinks are tested with their real servers in test_export_*.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import mlobs
from mlobs.cli.main import cli
from mlobs.cli.replay import parse_since
from mlobs.spool.replay import owner_alive
from mlobs.spool.store import spool_files

from .backends import InfluxDBServer, InfluxV2Proxy
from .spool_util import metric_values


def replay(spool_dir: Path, *args: str, jsonl: Path | None = None) -> Result:
    env = {"MLOBS_DIR": str(spool_dir), "COLUMNS": "200"}
    if jsonl is not None:
        env["MLOBS_JSONL"] = str(jsonl)
    return CliRunner().invoke(cli, ["replay", *args], env=env)


def shipped(jsonl: Path, name: str) -> list[float]:
    if not jsonl.exists():
        return []
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return [r["value"] for r in rows if r["kind"] == "gauge" and r["name"] == name]


def record_offline(spool_dir: Path, points: int) -> None:
    """A run recorded with no sink at all, as on an air-gapped machine."""
    mlobs.configure(dir=str(spool_dir), git=False)
    with mlobs.run("offline"):
        for i in range(points):
            mlobs.log(loss=float(i))
    mlobs.shutdown()


def test_an_offline_run_is_shipped_once_however_often_replay_runs(
    spool_dir: Path, tmp_path: Path
) -> None:
    record_offline(spool_dir, 12_000)
    out = tmp_path / "sink.jsonl"

    first = replay(spool_dir, jsonl=out)
    assert first.exit_code == 0, first.output
    assert shipped(out, "loss") == [float(i) for i in range(12_000)]
    assert "records shipped" in first.output

    again = replay(spool_dir, jsonl=out)
    assert again.exit_code == 0, again.output
    assert "0 records to ship" in again.output
    assert len(shipped(out, "loss")) == 12_000


def test_dry_run_ships_nothing(spool_dir: Path, tmp_path: Path) -> None:
    record_offline(spool_dir, 100)
    out = tmp_path / "sink.jsonl"
    result = replay(spool_dir, "--dry-run", jsonl=out)
    assert result.exit_code == 0, result.output
    assert "records to ship from 1 spool files" in result.output
    assert not out.exists()


def test_since_passes_over_older_records(spool_dir: Path, tmp_path: Path) -> None:
    mlobs.configure(dir=str(spool_dir), git=False)
    with mlobs.run("two-phases"):
        mlobs.log(old=1.0)
        mlobs.flush()
        time.sleep(0.3)
        cut = time.time()
        mlobs.log(new=2.0)
    mlobs.shutdown()
    out = tmp_path / "sink.jsonl"
    result = replay(spool_dir, "--since", f"{time.time() - cut + 0.1:.2f}s", jsonl=out)
    assert result.exit_code == 0, result.output
    assert shipped(out, "new") == [2.0]
    assert shipped(out, "old") == []
    assert "older ones passed over" in result.output


def test_a_sink_that_fails_keeps_its_cursor_and_exits_1(spool_dir: Path, tmp_path: Path) -> None:
    record_offline(spool_dir, 50)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the sink wants a directory")
    failed = replay(spool_dir, jsonl=blocker / "sink.jsonl")
    assert failed.exit_code == 1, failed.output
    assert "records left" in " ".join(failed.output.split())

    out = tmp_path / "sink.jsonl"  # same sink name ("jsonl:sink.jsonl"), now writable
    fixed = replay(spool_dir, jsonl=out)
    assert fixed.exit_code == 0, fixed.output
    assert shipped(out, "loss") == [float(i) for i in range(50)]


def test_no_configured_sink_is_bad_input(spool_dir: Path) -> None:
    record_offline(spool_dir, 1)
    result = replay(spool_dir)
    assert result.exit_code == 2
    assert "no sink is configured" in result.output


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("30m", now) == int((now - 1800) * 1e9)
    assert parse_since("2h", now) == int((now - 7200) * 1e9)
    assert parse_since("2026-01-02T00:00:00+00:00") == 1_767_312_000 * 10**9
    with pytest.raises(Exception, match="use 30m"):
        parse_since("yesterday")


TRAINER = """
    import time, mlobs
    with mlobs.run("crashing"):
        i = 0
        while True:
            mlobs.log(i=float(i))
            if i % 500 == 0:
                print(i, flush=True)
            i += 1
            time.sleep(0.0002)
"""


@pytest.mark.slow
def test_a_crashed_run_is_replayed_completely(spool_dir: Path, tmp_path: Path) -> None:
    """SIGKILL a training process whose sink is down; replay ships every flushed point, once."""
    blocker = tmp_path / "down"
    blocker.write_text("a file where the sink wants a directory: the sink fails while training")
    out = tmp_path / "sink.jsonl"  # the same sink (cursor "jsonl:sink.jsonl"), now reachable
    env = {
        **os.environ,
        "MLOBS_DIR": str(spool_dir),
        "MLOBS_JSONL": str(blocker / out.name),
        "MLOBS_FLUSH_INTERVAL": "0.1",
        "MLOBS_GIT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TRAINER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= 3_000:
            break
    (spool_file,) = spool_files(spool_dir)
    assert owner_alive(spool_file)
    live = replay(spool_dir, jsonl=out)
    assert "its process is still running" in live.output
    assert not out.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert not owner_alive(spool_file)

    flushed = metric_values(spool_dir, "i")
    result = replay(spool_dir, jsonl=out)
    assert result.exit_code == 0, result.output
    after = shipped(out, "i")
    print(f"crash: {len(flushed)} points flushed before SIGKILL, {len(after)} shipped by replay")
    assert len(flushed) >= 1_000
    assert after == flushed


@pytest.mark.slow
def test_a_run_killed_while_shipping_to_influxdb_is_completed_by_replay_exactly_once(
    spool_dir: Path, influxdb: InfluxDBServer, influx_v2_proxy: InfluxV2Proxy
) -> None:
    """SIGKILL a process that ships live to InfluxDB (1.6.7, behind the test's v2-write proxy);
    ``mlobs replay`` sends the rest. Re-sent points overwrite themselves, so InfluxDB's count is
    exactly what the spool holds."""
    influxdb.create_database("train")
    sink_env = {
        "MLOBS_INFLUXDB_URL": influx_v2_proxy.url,
        "MLOBS_INFLUXDB_BUCKET": "train/autogen",
        "MLOBS_INFLUXDB_ORG": "-",
    }
    env = {
        **os.environ,
        **sink_env,
        "MLOBS_DIR": str(spool_dir),
        "MLOBS_FLUSH_INTERVAL": "0.1",
        "MLOBS_GIT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TRAINER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None

    def count() -> int:
        rows = influxdb.values("SELECT count(i) FROM mlobs_metrics", "train")
        return int(rows[0]["count"]) if rows else 0

    for line in proc.stdout:
        if int(line) >= 4_000 and count() > 0:  # it is shipping live
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    live = count()
    flushed = metric_values(spool_dir, "i")

    result = CliRunner().invoke(
        cli, ["replay"], env={"MLOBS_DIR": str(spool_dir), "COLUMNS": "200", **sink_env}
    )
    assert result.exit_code == 0, result.output
    print(f"influxdb crash: {len(flushed)} flushed, {live} shipped live, {count()} after replay")
    assert 0 < live <= len(flushed)
    assert count() == len(flushed)
    rows = influxdb.values("SELECT max(i), min(i) FROM mlobs_metrics", "train")
    assert (rows[0]["min"], rows[0]["max"]) == (0.0, float(len(flushed) - 1))
