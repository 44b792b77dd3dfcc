"""Isolation for every test: a private spool directory, no inherited MLOBS_* settings, fresh
self-metrics, and the pipeline shut down afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlobs
from mlobs import runtime, safety
from mlobs.distributed import LAUNCHER_VARS
from mlobs.export.memory import InMemoryExporter
from tests.clock import FakeClock

pytest_plugins = ["tests.backends", "tests.nvml_standin.fixture"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        # every launcher variable mlobs reads: a test run inside a torchrun, SLURM or MPI job
        # must not make the tests a non-main rank
        if name.startswith(("MLOBS_", "OTEL_", "INFLUXDB_V2_")) or name in LAUNCHER_VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLOBS_DIR", str(tmp_path / "default-spool"))
    # no GPU sampling unless a test asks for it (a developer's GPU must not change other tests)
    monkeypatch.setenv("MLOBS_GPU", "off")
    safety.self_metrics.reset()
    safety._last_logged.clear()
    yield
    mlobs.shutdown()
    runtime.forget_configuration()
    safety.set_strict(False)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def sink(spool_dir: Path) -> InMemoryExporter:
    """A pipeline writing to ``spool_dir`` and shipping to an in-memory exporter."""
    memory = InMemoryExporter()
    mlobs.configure(dir=str(spool_dir), exporters=[memory], flush_interval=0.05)
    return memory


@pytest.fixture
def clock() -> FakeClock:
    """A clock at 1000 s that the test moves: ``clock.now += 30``."""
    return FakeClock()
