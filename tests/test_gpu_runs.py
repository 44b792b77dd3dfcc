"""GPU sampling inside runs, against the NVML STAND-IN (tests/nvml_standin; no GPU involved):
records in the spool carry the run, counters start at NVML's totals, energy and cost per epoch
and per run, ``gpu=False`` / ``MLOBS_GPU=off``, and what ``mlobs show`` prints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import mlobs
from mlobs.cli.main import cli
from mlobs.gpu import names as n
from mlobs.gpu.energy import EnergyMeter, energy_metrics
from mlobs.record.types import Kind
from mlobs.testing import InMemoryExporter
from tests.nvml_standin import FakeNvml, device

pytest.importorskip("pynvml")


def start(fake: FakeNvml, spool_dir: Path, **settings: object) -> InMemoryExporter:
    fake.load_in_process()
    memory = InMemoryExporter()
    mlobs.configure(
        dir=str(spool_dir),
        exporters=[memory],
        flush_interval=3600,
        gpu="auto",
        gpu_interval=3600,  # the first sample is taken at once; the test takes no others
        **settings,
    )
    return memory


def test_gpu_series_carry_the_run_and_counters_start_at_nvml_totals(
    fake_nvml: FakeNvml, spool_dir: Path
) -> None:
    fake_nvml.write({"devices": [device(0, energy_mj=7_000_000), device(1)]})
    memory = start(fake_nvml, spool_dir)
    with mlobs.run("train") as run:
        wait_for(memory, n.UTILIZATION)
    mlobs.flush()
    util = memory.metrics(n.UTILIZATION)
    assert {r.attrs["gpu"] for r in util} == {"0", "1"}
    assert all(r.run_id == run.run_id and r.kind is Kind.GAUGE for r in util)
    energy = [r for r in memory.metrics(n.ENERGY) if r.attrs["gpu"] == "0"]
    assert energy[0].kind is Kind.COUNTER and energy[0].value == 7000.0
    # zero-valued counters are there from the first sample (alerts need the series)
    assert len([r for r in memory.metrics(n.ECC_ERRORS) if r.attrs["gpu"] == "1"]) == 4


def test_energy_cost_and_co2_per_epoch_and_per_run(fake_nvml: FakeNvml, spool_dir: Path) -> None:
    fake_nvml.write({"devices": [device(0, energy_mj=1_000_000), device(1, energy_mj=2_000_000)]})
    memory = start(fake_nvml, spool_dir, energy_price_per_kwh=0.30, grid_intensity_g_per_kwh=400.0)
    with mlobs.run("train"):
        for epoch, used_j in enumerate((36_000.0, 72_000.0)):
            with mlobs.epoch() as ep:
                # each GPU uses ``used_j / 2`` joules in this epoch
                for i in (0, 1):
                    before = fake_nvml.config["devices"][i]["energy_mj"]
                    fake_nvml.update_device(i, energy_mj=before + int(used_j / 2 * 1000))
            assert ep.energy_j == pytest.approx(used_j)
            del epoch
    mlobs.flush()
    by_epoch = {r.epoch: r.value for r in memory.metrics(n.EPOCH_ENERGY)}
    assert by_epoch == {0: pytest.approx(36_000.0), 1: pytest.approx(72_000.0)}
    kwh = {r.epoch: r.value for r in memory.metrics(n.EPOCH_ENERGY_KWH)}
    assert kwh[1] == pytest.approx(0.02)
    assert {r.epoch: r.value for r in memory.metrics(n.EPOCH_COST)}[1] == pytest.approx(0.006)
    assert {r.epoch: r.value for r in memory.metrics(n.EPOCH_CO2)}[1] == pytest.approx(8.0)
    assert memory.values(n.RUN_ENERGY) == [pytest.approx(108_000.0)]
    assert memory.values(n.RUN_COST) == [pytest.approx(0.009)]
    assert all(r.attrs.get("scope") == "system" for r in memory.metrics(n.RUN_ENERGY))


def test_energy_is_integrated_from_power_without_the_counter(fake_nvml: FakeNvml) -> None:
    meter = EnergyMeter()
    meter.update("a", 0.0, None, 100.0)
    meter.update("a", 10.0, None, 300.0)  # trapezoid: 10 s at a mean of 200 W
    assert meter.total_joules() == pytest.approx(2000.0)
    meter.update("b", 0.0, 50.0, 999.0)  # counter devices ignore power
    meter.update("b", 10.0, 80.0, 999.0)
    assert meter.total_joules() == pytest.approx(2030.0)
    meter.update("b", 20.0, 5.0, 999.0)  # the counter restarted (driver reload): nothing lost
    assert meter.total_joules() == pytest.approx(2030.0)
    meter.update("b", 30.0, 15.0, 999.0)
    assert meter.total_joules() == pytest.approx(2040.0)
    assert energy_metrics(3.6e6, "run", None, None) == {n.RUN_ENERGY: 3.6e6, n.RUN_ENERGY_KWH: 1.0}


@pytest.mark.parametrize("how", ["argument", "env"])
def test_gpu_sampling_can_be_turned_off(
    fake_nvml: FakeNvml, spool_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    fake_nvml.write({"devices": [device(0)]})
    fake_nvml.load_in_process()
    memory = InMemoryExporter()
    if how == "env":
        monkeypatch.setenv("MLOBS_GPU", "off")
        mlobs.configure(dir=str(spool_dir), exporters=[memory], flush_interval=3600)
        run = mlobs.run("train")
    else:
        mlobs.configure(dir=str(spool_dir), exporters=[memory], flush_interval=3600, gpu="auto")
        run = mlobs.run("train", gpu=False)
    with run, mlobs.epoch() as ep:
        mlobs.log(loss=1.0)
    mlobs.flush()
    assert memory.values("loss") == [1.0]
    assert not [r for r in memory.records if r.name.startswith("mlobs_gpu_")]
    assert ep.energy_j is None


def test_mlobs_show_has_energy_per_epoch_and_a_gpu_table(
    fake_nvml: FakeNvml, spool_dir: Path
) -> None:
    fake_nvml.write({"devices": [device(0, util_gpu=90, temp=66)]})
    start(fake_nvml, spool_dir, energy_price_per_kwh=0.25)
    with mlobs.run("train") as run, mlobs.epoch():
        fake_nvml.update_device(0, energy_mj=1_000_000 + 7_200_000)
        mlobs.log(loss=0.5)
    mlobs.shutdown()
    runner = CliRunner()
    shown = runner.invoke(
        cli, ["--dir", str(spool_dir), "show", run.run_id], env={"COLUMNS": "200"}
    )
    assert shown.exit_code == 0, shown.output
    assert "epoch_energy_joules" in shown.output and "epoch_energy_cost" in shown.output
    assert "GPUs" in shown.output and "NVIDIA H100" in shown.output
    assert "mlobs_gpu_" not in shown.output  # per-GPU series stay out of the metric tables
    data = json.loads(
        runner.invoke(cli, ["--dir", str(spool_dir), "show", run.run_id, "--json"]).output
    )
    assert data["epochs"][0]["metrics"]["epoch_energy_joules"] == pytest.approx(7200.0)
    assert data["gpus"]["0"]["utilization_mean"] == pytest.approx(0.9)
    assert data["gpus"]["0"]["temperature_max_celsius"] == 66


def test_sampling_is_on_by_default_when_a_gpu_is_visible_and_survives_configure(
    fake_nvml: FakeNvml, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLOBS_GPU")  # the tests turn it off; the default is "auto"
    fake_nvml.write({"devices": [device(0)]})
    fake_nvml.load_in_process()
    memory = InMemoryExporter()
    mlobs.configure(dir=str(spool_dir), exporters=[memory], flush_interval=3600, gpu_interval=0.05)
    with mlobs.run("train") as run:
        wait_for(memory, n.UTILIZATION)
        # a rebuilt pipeline keeps sampling the runs in progress
        mlobs.configure(
            dir=str(spool_dir), exporters=[memory], flush_interval=3600, gpu_interval=0.05
        )
        memory.clear()
        wait_for(memory, n.UTILIZATION)
    assert {r.run_id for r in memory.metrics(n.UTILIZATION)} == {run.run_id}


def wait_for(memory: InMemoryExporter, name: str) -> None:
    deadline = time.monotonic() + 5
    while mlobs.flush() and not memory.metrics(name):
        assert time.monotonic() < deadline, f"no {name} within 5 s"
        time.sleep(0.01)


def test_doctor_says_what_a_run_would_sample(
    fake_nvml: FakeNvml, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml.write({"driver_version": "550.54.15", "devices": [device(0), device(1)]})
    fake_nvml.load_in_process()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    runner = CliRunner()
    for mode, expected in (("auto", "sample 1 GPU(s)"), ("all", "sample 2 GPU(s)"), ("off", "off")):
        monkeypatch.setenv("MLOBS_GPU", mode)
        result = runner.invoke(cli, ["--dir", str(spool_dir), "doctor", "--json"])
        assert result.exit_code == 0, result.output
        (gpu,) = [c for c in json.loads(result.output)["checks"] if c["name"] == "gpu"]
        assert gpu["ok"] and expected in gpu["detail"], gpu
    fake_nvml.write({"no_driver": True})
    monkeypatch.setenv("MLOBS_GPU", "auto")
    result = runner.invoke(cli, ["--dir", str(spool_dir), "doctor", "--json"])
    (gpu,) = [c for c in json.loads(result.output)["checks"] if c["name"] == "gpu"]
    assert gpu["ok"] and "no NVML" in gpu["detail"]
