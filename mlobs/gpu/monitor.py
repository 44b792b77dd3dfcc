"""GPU sampling inside runs: one sampler per process, started by the first run that wants it and
stopped with the last, writing into the spool; energy, cost and CO2e per epoch and per run."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.gpu import names as n
from mlobs.gpu.collect import Reading
from mlobs.gpu.energy import energy_metrics
from mlobs.gpu.sampler import GpuSampler
from mlobs.record.types import Kind

if TYPE_CHECKING:
    from mlobs.instrument.active import ActiveRun
    from mlobs.runtime import Runtime

logger = logging.getLogger("mlobs")

_GAUGE, _COUNTER, _EVENT = int(Kind.GAUGE), int(Kind.COUNTER), int(Kind.EVENT)
_SYSTEM: dict[str, Any] = {"scope": "system"}


class RunGpuMonitor:
    """The runtime's GPU sampling for runs.

    ``gpu`` per run: ``None`` follows ``MLOBS_GPU`` (``auto`` by default: on when NVML finds a
    GPU this process can use), ``True`` the same, ``False`` off, ``"all"`` every GPU of the host.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sampler: GpuSampler | None = None
        self.unavailable = False
        """NVML or a GPU was missing once: not asked again in this process."""
        self._lock = threading.Lock()
        self._runs: dict[str, float] = {}
        """Runs sampling now -> the sampler's energy reading when they started."""
        self.modes: dict[str, bool | str | None] = {}
        """Runs sampling now -> the ``gpu`` argument they asked with (for a rebuilt pipeline)."""
        self._last_totals: dict[tuple[str, int], float] = {}
        self._totals_run = ""

    # -- runs -----------------------------------------------------------------------------
    def attach(self, run: ActiveRun, gpu: bool | str | None) -> None:
        configured = self.runtime.config.gpu
        if gpu is None:
            mode = configured
        elif gpu is True:  # an explicit yes beats MLOBS_GPU=off
            mode = "all" if configured == "all" else "auto"
        else:
            mode = str(gpu)
        if mode not in ("auto", "all") or self.unavailable:
            return
        with self._lock:
            sampler = self.sampler
            if sampler is None:
                sampler = GpuSampler(
                    self._on_sample,
                    interval=self.runtime.config.gpu_interval,
                    scope="all" if mode == "all" else "run",
                    on_event=self._on_event,
                )
                if not sampler.start():
                    self.unavailable = True
                    return
                self.sampler = sampler
            self._runs[run.run_id] = sampler.read_energy()
            self.modes[run.run_id] = gpu

    def detach(self, run: ActiveRun) -> None:
        with self._lock:
            start = self._runs.pop(run.run_id, None)
            self.modes.pop(run.run_id, None)
            sampler = self.sampler
            if start is None or sampler is None:
                return
            joules = sampler.read_energy() - start
            if not self._runs:
                self.sampler = None
        self._record_energy(run, joules, "run", run.epoch)
        if not self._runs and sampler is not None:
            sampler.stop()

    def energy_now(self, run: ActiveRun) -> float | None:
        """The energy reading at an epoch's start (``None`` when this run is not sampled)."""
        sampler = self.sampler
        if sampler is None or run.run_id not in self._runs:
            return None
        return sampler.read_energy()

    def epoch_finished(self, run: ActiveRun, epoch: int | None, start_j: float) -> float | None:
        """Record the energy of an epoch that began at reading ``start_j``; returns joules."""
        sampler = self.sampler
        if sampler is None:
            return None
        joules = sampler.read_energy() - start_j
        self._record_energy(run, joules, "epoch", epoch)
        return joules

    def _record_energy(self, run: ActiveRun, joules: float, prefix: str, epoch: int | None) -> None:
        cfg = self.runtime.config
        ts = time.time_ns()
        metrics = energy_metrics(
            joules, prefix, cfg.energy_price_per_kwh, cfg.grid_intensity_g_per_kwh
        )
        for name, value in metrics.items():
            run.append((_GAUGE, ts, run.run_id, name, value, run.step, epoch, _SYSTEM))

    def stop(self) -> None:
        with self._lock:
            sampler, self.sampler = self.sampler, None
            self._runs.clear()
        if sampler is not None:
            sampler.stop()

    def forget_after_fork(self) -> None:
        """In a forked child: the sampler thread did not survive and NVML handles must not be
        reused; a run in the child starts its own sampler."""
        self._lock = threading.Lock()
        self.sampler = None
        self._runs.clear()
        self.modes.clear()

    # -- the sampler's callbacks (its thread) ---------------------------------------------
    def _on_sample(self, readings: list[Reading], ts: int) -> None:
        run = self.runtime.latest_run() or self.runtime.no_run
        run_id, step, epoch = run.run_id, run.step, run.epoch
        if run_id != self._totals_run:
            # a run's counters start at NVML's own totals, as dcgm-exporter's do
            self._last_totals.clear()
            self._totals_run = run_id
        last = self._last_totals
        append = self.runtime.recorder.append
        for name, value, attrs in readings:
            if name in _COUNTERS:
                key = (name, id(attrs))
                before = last.get(key)
                last[key] = value
                # the first total, or one after a reset, counts whole
                increment = value if before is None or value < before else value - before
                if increment or before is None:
                    append((_COUNTER, ts, run_id, name, increment, step, epoch, attrs))
            else:
                append((_GAUGE, ts, run_id, name, value, step, epoch, attrs))

    def _on_event(self, name: str, attrs: dict[str, Any]) -> None:
        run = self.runtime.latest_run() or self.runtime.no_run
        self.runtime.recorder.append(
            (_EVENT, time.time_ns(), run.run_id, name, None, run.step, run.epoch, attrs)
        )
        if name == n.LOST_EVENT:
            safety.self_metrics.inc("mlobs_gpu_lost_total", str(attrs.get("uuid", "")))
        self.runtime.recorder.wake.set()


_COUNTERS = frozenset(name for name, m in n.METRICS.items() if m.kind == n.COUNTER)
