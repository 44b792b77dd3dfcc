"""Delivery from the spool to a sink: cursor, order, backoff and the circuit breaker.

The sink here is a test exporter whose backend can be made slow or dead at will; the network
sinks are tested against real servers in test_export_*.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import mlobs
from mlobs import runtime, safety
from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.export.shipper import CIRCUIT_OPENED, Backoff


class FlakyBackend(Exporter):
    """Every export takes ``latency`` seconds (a timeout against a dead peer, say) and fails
    while ``down`` is set."""

    name = "flaky"

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.down = threading.Event()
        self.values: list[float] = []
        self.calls = 0

    def export(self, batch: Batch) -> ExportResult:
        self.calls += 1
        time.sleep(self.latency)
        if self.down.is_set():
            return ExportResult.FAILURE
        self.values.extend(r.value for r in batch.records if r.name == "x" and r.value is not None)
        return ExportResult.SUCCESS


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_dead_sink_opens_its_circuit_and_costs_flush_and_exit_nothing(tmp_path: Path) -> None:
    backend = FlakyBackend(latency=0.3)
    backend.down.set()
    mlobs.configure(dir=str(tmp_path / "spool"), exporters=[backend], flush_interval=0.05)
    (shipper,) = runtime.get().shippers
    shipper.backoff = Backoff(base=0.01, cap=0.05)
    with mlobs.run("outage"):
        for i in range(100):
            mlobs.log(x=float(i))
        assert _wait(lambda: shipper.breaker.open)
        assert safety.self_metrics.get(CIRCUIT_OPENED, "flaky") == 1

        t0 = time.perf_counter()
        assert mlobs.flush() is False  # the spool has the records; the sink is skipped
        assert time.perf_counter() - t0 < 0.25  # less than one export against the dead peer
        status = runtime.get().sink_status()[0]
        assert status.circuit_open and status.backlog >= 100
        assert status.oldest_unshipped_ns is not None

        backend.down.clear()  # the backend comes back: the shipper thread's probe closes it
        assert _wait(lambda: not shipper.breaker.open)
        for i in range(100, 200):
            mlobs.log(x=float(i))
        assert mlobs.flush()
    assert backend.values == [float(i) for i in range(200)]  # all of it, once, in order
    assert mlobs.flush()  # the run's end records too
    assert runtime.get().sink_status()[0].backlog == 0


def test_exit_does_not_wait_on_a_sink_whose_circuit_is_open(tmp_path: Path) -> None:
    backend = FlakyBackend(latency=1.0)
    backend.down.set()
    mlobs.configure(dir=str(tmp_path / "spool"), exporters=[backend], flush_interval=0.05)
    (shipper,) = runtime.get().shippers
    shipper.backoff = Backoff(base=0.01, cap=0.02)
    shipper.breaker.failures_in_row = shipper.breaker.threshold  # as after three failures
    with mlobs.run("exit"):
        mlobs.log(x=1.0)
    calls = backend.calls
    t0 = time.perf_counter()
    mlobs.shutdown()
    # at most the export already under way on the shipper thread finishes; none is started
    assert time.perf_counter() - t0 < 1.5
    assert backend.calls <= calls + 1
