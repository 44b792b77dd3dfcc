"""The ``mlobs`` command over real spools: runs, show, tail, export, doctor and demo."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import mlobs
from mlobs.cli.main import cli
from mlobs.cli.render import sparkline
from mlobs.record.types import Kind
from mlobs.spool.catalog import Catalog

log = logging.getLogger("tests.cli")
EPOCHS = 4
LOSSES = [1.0, 0.5, 0.25, 0.125]
ACCURACIES = [0.5, 0.625, 0.75, 0.875]
VAL_LOSSES = [1.5, 0.75, 0.375, 0.1875]


class Diverged(Exception):
    pass


def mlobs_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_GIT"] = "0"
    return env


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "spool"
    mlobs.configure(dir=str(directory), flush_interval=0.05, strict=True, git=False)
    log.setLevel(logging.INFO)
    yield directory
    mlobs.shutdown()
    log.setLevel(logging.NOTSET)


@pytest.fixture
def trained(spool: Path) -> str:
    """A finished run: four epochs of train and val metrics, log lines, one step."""
    with mlobs.run("mnist-mlp", model=("mlp", "3"), params={"lr": 0.01}, tags={"team": "cv"}) as r:
        with mlobs.step("load"):
            log.info("loading data")
        for e in range(EPOCHS):
            with mlobs.epoch(e):
                mlobs.log(loss=LOSSES[e], accuracy=ACCURACIES[e], split="train")
                mlobs.log(loss=VAL_LOSSES[e], split="val")
                log.info("epoch %d done", e)
    mlobs.shutdown()
    return r.run_id


def _metric_points_logged() -> int:
    return EPOCHS * (3 + 1)  # three values per epoch, plus epoch_duration_seconds


def test_runs_lists_runs_with_their_status(spool: Path, trained: str) -> None:
    mlobs.configure(dir=str(spool), flush_interval=0.05, strict=True, git=False)
    with pytest.raises(Diverged), mlobs.run("broken"):
        raise Diverged("nan loss")
    mlobs.shutdown()
    result = mlobs_cli("--dir", str(spool), "runs")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    broken = next(line for line in lines if "broken" in line)
    good = next(line for line in lines if "mnist-mlp" in line)
    assert "failed" in broken and "finished" in good and trained[:8] in good
    assert "val/loss=0.1875" in good
    assert lines.index(broken) < lines.index(good)  # newest first

    listed = json.loads(mlobs_cli("--dir", str(spool), "runs", "--json", "--limit", "1").output)
    assert [r["name"] for r in listed] == ["broken"] and listed[0]["status"] == "failed"


def test_show_prints_per_epoch_values_and_sparklines(spool: Path, trained: str) -> None:
    result = mlobs_cli("--dir", str(spool), "show", trained[:8])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "mnist-mlp" in out and "finished" in out and "mlp:3" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    for e in range(EPOCHS):
        cells = [float(c) for c in rows[str(e)].split("│")[1:-1]]
        assert cells[:4] == [e, LOSSES[e], ACCURACIES[e], VAL_LOSSES[e]]
    assert "█▄▂▁" in rows["trend"] and sparkline(LOSSES) == "█▄▂▁"  # falling loss
    assert "▁▃▆█" in rows["trend"]  # rising accuracy
    assert "lr" in out and "team" in out and "load" in out

    data = json.loads(mlobs_cli("--dir", str(spool), "show", "mnist-mlp", "--json").output)
    assert [e["metrics"]["train/loss"] for e in data["epochs"]] == LOSSES
    assert data["steps"][0]["name"] == "load" and data["steps"][0]["count"] == 1
    assert data["errors"] == []


def test_show_failed_run_names_the_exception(spool: Path) -> None:
    @mlobs.step("save", retries=1)
    def save() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError), mlobs.run("doomed"):
        save()
    mlobs.shutdown()
    result = mlobs_cli("--dir", str(spool), "show", "doomed")
    assert result.exit_code == 0, result.output
    assert "failed" in result.output and "OSError: disk full" in result.output
    data = json.loads(mlobs_cli("--dir", str(spool), "show", "doomed", "--json").output)
    assert data["status"] == "failed" and data["error_type"] == "builtins.OSError"
    assert [(e["kind"], e["attempt"]) for e in data["errors"]] == [
        ("step", 1),
        ("step", 2),
        ("run", None),
    ]


def test_export_csv_has_one_row_per_metric_point(spool: Path, trained: str) -> None:
    result = mlobs_cli("--dir", str(spool), "export", trained, "--kind", "metric")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == _metric_points_logged()
    train_loss = [float(r["value"]) for r in rows if r["name"] == "loss" and r["split"] == "train"]
    assert train_loss == LOSSES
    assert list(rows[0]) == [
        "seq",
        "kind",
        "ts_ns",
        "run_id",
        "name",
        "value",
        "step",
        "epoch",
        "split",
        "attrs",
    ]

    everything = list(
        csv.DictReader(io.StringIO(mlobs_cli("--dir", str(spool), "export", trained).stdout))
    )
    assert {r["kind"] for r in everything} >= {"gauge", "log", "span", "event"}


def test_export_jsonl_to_a_file(spool: Path, trained: str, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    result = mlobs_cli(
        "--dir", str(spool), "export", "mnist-mlp", "--format", "jsonl", "--output", str(target)
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    with Catalog(spool) as catalog:
        expected = [r.to_json_dict() for r in catalog.records(trained)]
    assert lines == expected
    assert f"wrote {len(lines)} records" in result.stderr


def test_tail_prints_the_last_log_lines(spool: Path, trained: str) -> None:
    result = mlobs_cli("--dir", str(spool), "tail", trained, "-n", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("epoch 2 done") and lines[1].endswith("epoch 3 done")
    assert "INFO" in lines[1] and "tests.cli" in lines[1] and f"[{trained[:8]}/3/" in lines[1]

    raw = mlobs_cli("--dir", str(spool), "tail", "-n", "3", "--metrics", "--json").output
    records = [json.loads(line) for line in raw.splitlines()]
    assert [(r["kind"], r["name"]) for r in records] == [
        ("gauge", "loss"),
        ("log", "tests.cli"),
        ("gauge", "epoch_duration_seconds"),
    ]
    assert records[1]["attrs"]["message"] == "epoch 3 done"


@pytest.mark.slow
def test_tail_follow_prints_new_lines_until_interrupted(spool: Path) -> None:
    with mlobs.run("follow") as run:
        log.info("before")
        mlobs.flush()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlobs.cli.main",
                "--dir",
                str(spool),
                "tail",
                run.run_id,
                "-f",
                "-n",
                "1",
                "--interval",
                "0.05",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
        try:
            assert lines.get(timeout=30).rstrip().endswith("before")
            log.info("after")
            mlobs.flush()
            assert lines.get(timeout=10).rstrip().endswith("after")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def test_doctor_passes_on_a_good_directory(spool: Path, trained: str, tmp_path: Path) -> None:
    sink = tmp_path / "logs" / "mlobs.jsonl"
    result = CliRunner().invoke(
        cli, ["--dir", str(spool), "doctor"], env={"COLUMNS": "250", "MLOBS_JSONL": str(sink)}
    )
    assert result.exit_code == 0, result.output
    assert "MLOBS_FLUSH_INTERVAL" in result.output and "argument" in result.output
    assert "1 runs" in result.output and "sink jsonl" in result.output
    report = json.loads(mlobs_cli("--dir", str(spool), "doctor", "--json").output)
    assert report["ok"] and {s["name"] for s in report["settings"]} >= {"dir", "jsonl", "strict"}
    assert not list(spool.glob(".mlobs-doctor-*"))  # the probe file is gone


def test_doctor_fails_when_the_spool_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    result = mlobs_cli("--dir", str(blocker), "doctor")
    assert result.exit_code == 1
    assert "FAIL" in result.output and "not a directory" in result.output


def test_doctor_fails_on_an_unparsable_setting(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["--dir", str(tmp_path), "doctor"],
        env={"COLUMNS": "250", "MLOBS_FLUSH_INTERVAL": "soon"},
    )
    assert result.exit_code == 1 and "MLOBS_FLUSH_INTERVAL='soon'" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "0123456789abcdef"], "no run '0123456789abcdef'"),
        (["export", "nope"], "no run 'nope'"),
        (["tail", "nope"], "no run 'nope'"),
    ],
)
def test_unknown_run_exits_2_with_a_message(
    spool: Path, trained: str, args: list[str], message: str
) -> None:
    result = mlobs_cli("--dir", str(spool), *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_ambiguous_prefix_and_missing_directory_exit_2(spool: Path, tmp_path: Path) -> None:
    for run_id in ("aaaa1111", "aaaa2222"):
        with mlobs.run("r", run_id=run_id):
            pass
    mlobs.shutdown()
    result = mlobs_cli("--dir", str(spool), "show", "aaaa")
    assert result.exit_code == 2 and "matches 2 runs" in result.stderr
    result = mlobs_cli("--dir", str(tmp_path / "missing"), "runs")
    assert result.exit_code == 2 and "no spool directory" in result.stderr


def test_sparkline() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0.0, float("nan"), 1.0]) == "▁·█"
    assert sparkline([2.0, 2.0]) == "▄▄"
    assert sparkline([None, float("inf")]) == "··"
    assert sparkline([]) == ""


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlobs.cli.main", "--dir", str(tmp_path), "demo", "--epochs", "3"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mlobs --dir" in proc.stdout and "doctor" in proc.stdout
    assert "(2 with a secret redacted)" in " ".join(proc.stdout.split())
    with Catalog(tmp_path) as catalog:
        info = catalog.find_run("demo-softmax")
        assert info.status == "finished" and info.run_id in proc.stdout
        spans = [r for r in catalog.records(info.run_id, [Kind.SPAN]) if r.name == "load_data"]
        assert [(s.attrs["status"], s.attrs["attempt"], s.attrs["retried"]) for s in spans] == [
            ("error", 1, True),
            ("ok", 2, False),
        ]
        summary = catalog.summarize(info)
        logs = [r.attrs["message"] for r in catalog.records(info.run_id, [Kind.LOG])]
    assert summary.epochs == [0, 1, 2]
    assert {"train/loss", "val/accuracy", "epoch_samples_per_second"} <= set(summary.metric_names)
    assert summary.steps["train_epoch"].count == 3
    assert any("[REDACTED]" in m for m in logs) and not any("sk-demo" in m for m in logs)
    assert info.tags["store_api_key"] == "[REDACTED]"
