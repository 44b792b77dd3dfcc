"""GPU records from a run (NVML STAND-IN: tests/nvml_standin, no GPU involved) as each backend
names them: Prometheus conventions on ``/metrics`` (clean under ``promtool check metrics``) and the
OpenTelemetry hardware semantic conventions on OTLP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import mlobs
from mlobs.export.base import Batch
from mlobs.export.otlp import OtlpExporter
from mlobs.export.prom_state import PromState
from mlobs.gpu import names as n
from mlobs.record.types import Record
from mlobs.testing import InMemoryExporter
from tests.nvml_standin import FakeNvml, device

from .test_export_otlp import FakeExporter
from .test_export_prometheus import _promtool_check, _render, _value

pytest.importorskip("pynvml")

MIG = "MIG-1b2c3d4e-0000-4000-8000-00000000000a"


def gpu_run(fake: FakeNvml, spool_dir: Path) -> tuple[list[Record], Batch]:
    """One run's records with one GPU sample of two GPUs (one with a MIG device)."""
    fake.write(
        {
            "driver_version": "550.54.15",
            "devices": [
                device(0, util_gpu=75, enc_util=5, power_mw=250_000, pcie_tx_kbs=10),
                device(1, mig=[{"uuid": MIG, "name": "1g.10gb", "mem_total": 10 << 30}]),
            ],
            "events": [{"device": 0, "xid": 48}],
        }
    )
    fake.load_in_process()
    memory = InMemoryExporter()
    mlobs.configure(
        dir=str(spool_dir), exporters=[memory], flush_interval=3600, gpu="auto", gpu_interval=3600
    )
    with mlobs.run("train"):
        deadline = time.monotonic() + 5
        while mlobs.flush() and not memory.metrics(n.STATUS):
            assert time.monotonic() < deadline, "no GPU sample within 5 s"
            time.sleep(0.01)
    records = memory.records
    return records, Batch(records, memory.runs, "spool-gpu.db")


def test_prometheus_names_and_labels(fake_nvml: FakeNvml, spool_dir: Path) -> None:
    _, batch = gpu_run(fake_nvml, spool_dir)
    state = PromState()
    state.apply(batch)
    text = _render(state)
    uuid0 = device(0)["uuid"]
    assert _value(text, "mlobs_gpu_utilization_ratio", gpu="0", uuid=uuid0) == 0.75
    assert _value(text, "mlobs_gpu_power_watts", gpu="0", host=mlobs_host(batch)) == 250.0
    assert _value(text, "mlobs_gpu_energy_joules_total", gpu="0") == 1000.0
    assert _value(text, "mlobs_gpu_xid_errors_total", gpu="0", xid="48") == 1.0
    assert _value(text, "mlobs_gpu_mig_memory_total_bytes", mig_uuid=MIG) == 10 << 30
    assert _value(text, "mlobs_gpu_status", gpu="1", state="ok") == 1.0
    # the run's labels are on every GPU series, as on the user's metrics
    run_id = next(iter(batch.runs))
    assert _value(text, "mlobs_gpu_temperature_celsius", gpu="1", run_id=run_id, rank="0") == 41
    assert 'model="NVIDIA H100 80GB HBM3 (stand-in)"' in text
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["mlobs_gpu_energy_joules"] == "counter"
    assert types["mlobs_gpu_power_watts"] == "gauge"
    result = _promtool_check(text)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def mlobs_host(batch: Batch) -> str:
    return str(next(r for r in batch.records if r.name == n.POWER).attrs["host"])


def test_a_user_metric_cannot_take_a_gpu_name() -> None:
    state = PromState()
    assert state.names.family("gpu/utilization_ratio", "gauge") != n.UTILIZATION
    assert state.names.family("mlobs_gpu_utilization_ratio", "gauge").startswith("mlobs_mlobs_gpu")


def otlp_points(data: Any) -> dict[str, list[tuple[dict[str, Any], float, str]]]:
    """OTel metric name -> [(attributes, value, unit)] across resources."""
    out: dict[str, list[tuple[dict[str, Any], float, str]]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            names = [m.name for m in sm.metrics]
            assert len(names) == len(set(names)), "one metric per OTel name"
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    entry = (dict(p.attributes), p.value, metric.unit)
                    out.setdefault(metric.name, []).append(entry)
    return out


def test_otlp_uses_the_hardware_semantic_conventions(fake_nvml: FakeNvml, spool_dir: Path) -> None:
    _, batch = gpu_run(fake_nvml, spool_dir)
    metrics = FakeExporter()
    OtlpExporter(metrics=metrics).export(batch)
    points = otlp_points(metrics.calls[0])
    uuid0 = device(0)["uuid"]
    util = {(a["hw.id"], a["hw.gpu.task"]): (v, u) for a, v, u in points["hw.gpu.utilization"]}
    assert util[(uuid0, "general")] == (0.75, "1")
    assert util[(uuid0, "encoder")] == (0.05, "1")
    attrs, value, unit = next(p for p in points["hw.power"] if p[0]["hw.id"] == uuid0)
    assert (value, unit) == (250.0, "W")
    assert attrs["hw.type"] == "gpu" and attrs["hw.vendor"] == "NVIDIA"
    assert attrs["hw.model"] == device(0)["name"] and attrs["hw.driver_version"] == "550.54.15"
    assert attrs["hw.name"] == "gpu0" and "host.name" in attrs and "scope" not in attrs
    energy = {a["hw.id"]: (v, u) for a, v, u in points["hw.energy"]}
    assert energy[uuid0] == (1000.0, "J")
    io = {(a["hw.id"], a["network.io.direction"]) for a, _, _ in points["hw.gpu.io"]}
    assert (uuid0, "transmit") in io and (uuid0, "receive") in io
    errors = {a.get("error.type") for a, _, _ in points["hw.errors"]}
    assert {"xid", "corrected", "uncorrected"} <= errors
    status = {(a["hw.id"], a["hw.state"]): v for a, v, _ in points["hw.status"]}
    assert status[(uuid0, "ok")] == 1.0 and status[(uuid0, "failed")] == 0.0
    mig = next(a for a, _, _ in points["hw.gpu.memory.limit"] if a["hw.id"] == MIG)
    assert mig["hw.parent"] == device(1)["uuid"] and mig["hw.name"] == "1g.10gb"
    assert {"hw.gpu.memory.usage", "hw.gpu.memory.utilization", "hw.temperature"} <= set(points)
