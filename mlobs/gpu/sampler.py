"""The GPU sampler: a background thread reading every selected GPU at an interval.

It hands each sample to a callback (the spool inside a run, a snapshot in the exporter), turns a
lost GPU into an event and a ``failed`` status while the others keep sampling, watches XID errors,
and re-initialises NVML with backoff after faults.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mlobs import safety
from mlobs.gpu import names as n
from mlobs.gpu.collect import DeviceReader, Reading
from mlobs.gpu.devices import Device, discover, mig_devices
from mlobs.gpu.energy import EnergyMeter
from mlobs.gpu.events import XidWatcher
from mlobs.gpu.gpm import MigUtilization
from mlobs.gpu.nvml import GpuLost, Nvml, NvmlUnavailable, as_text

logger = logging.getLogger("mlobs")

SampleCallback = Callable[[list[Reading], int], None]
"""Called with a sample's readings and its wall-clock time in nanoseconds."""
EventCallback = Callable[[str, dict[str, Any]], None]
"""Called with an event name (:data:`mlobs.gpu.names.XID_EVENT`, ``LOST_EVENT``) and its
attributes."""

SAMPLES = "mlobs_gpu_samples_total"
"""Samples taken, by outcome (``ok``, ``error``)."""


class GpuSampler:
    """Samples the GPUs of this process (``scope="run"``) or of the host (``scope="all"``).

    Args:
        on_sample: receives each sample's readings.
        interval: seconds between samples.
        scope: ``run`` for the devices in ``CUDA_VISIBLE_DEVICES``, ``all`` for every GPU.
        on_event: receives XID errors and lost GPUs.
        nvml: the NVML session (a new one over ``pynvml`` by default).
        env: the environment to read ``CUDA_VISIBLE_DEVICES`` from (``os.environ``).
    """

    def __init__(
        self,
        on_sample: SampleCallback,
        *,
        interval: float = 5.0,
        scope: str = "run",
        on_event: EventCallback | None = None,
        nvml: Nvml | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.on_sample = on_sample
        self.on_event = on_event
        self.interval = interval
        self.scope = scope
        self._nvml = nvml
        self._env = env
        self.devices: list[Device] = []
        self.readers: list[DeviceReader] = []
        self.energy = EnergyMeter()
        self._xid: XidWatcher | None = None
        self._mig_util: MigUtilization | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_sample_seconds = 0.0
        """How long the last sample took (for the exporter's health metrics)."""

    @property
    def nvml(self) -> Nvml:
        if self._nvml is None:
            self._nvml = Nvml()
        return self._nvml

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> bool:
        """Initialise NVML and find the devices; ``False`` (after one info line) when there is
        no driver, no library or no visible GPU."""
        try:
            nvml = self.nvml
            nvml.init()
        except NvmlUnavailable as exc:
            logger.info("mlobs: GPU sampling is off: %s", exc)
            return False
        self.devices = discover(nvml, self.scope, self._env)
        if not self.devices:
            logger.info("mlobs: GPU sampling is off: no GPU visible to this process")
            nvml.shutdown()
            return False
        if any(d.mig for d in self.devices):
            self._mig_util = MigUtilization(nvml.nvml)
        self.readers = [DeviceReader(nvml, d, mig_utilization=self._mig_util) for d in self.devices]
        self._xid = XidWatcher(nvml, self.devices)
        return True

    def start(self) -> bool:
        """:meth:`open`, then sample now and every ``interval`` seconds on a daemon thread."""
        if not self.open():
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mlobs-gpu-sampler", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        with self._lock:
            if self._xid is not None:
                self._xid.close()
                self._xid = None
            if self._mig_util is not None:
                self._mig_util.close()
                self._mig_util = None
            if self._nvml is not None:
                self._nvml.shutdown()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                readings = self.sample_once()
                self.on_sample(readings, time.time_ns())
                safety.self_metrics.inc(SAMPLES, "ok")
            except safety.MlobsError:
                raise
            except Exception as exc:
                safety.self_metrics.inc(SAMPLES, "error")
                safety.report("gpu.sample", exc)
            self.last_sample_seconds = time.monotonic() - started
            self._stop.wait(max(0.0, self.interval - self.last_sample_seconds))

    # -- sampling -------------------------------------------------------------------------
    def sample_once(self) -> list[Reading]:
        """Read every device now; a lost device gives its ``failed`` status only."""
        with self._lock:
            now = time.monotonic()
            readings: list[Reading] = []
            faulty = False
            for reader in self.readers:
                device = reader.device
                if not device.lost:
                    try:
                        got = reader.read(now)
                    except GpuLost as exc:
                        self._lost(reader, exc)
                    else:
                        readings.extend(got)
                        self.energy.update(device.uuid, now, reader.energy_j, reader.power_w)
                        faulty = faulty or reader.answered == 0
                        continue
                faulty = True
                readings.extend(reader.failed())
            if self._xid is not None:
                for source, xid in self._xid.poll():
                    owner = next((r for r in self.readers if r.device is source), None)
                    if owner is not None and source is not None:
                        owner.count_xid(xid)
                        self._event(n.XID_EVENT, {**source.attrs, "xid": xid})
            for reader in self.readers:
                readings.extend(reader.xid_readings())
            if not faulty:
                self.nvml.healthy()
            elif self.nvml.reinit_due():
                self._recover()
            return readings

    def read_energy(self) -> float:
        """Joules used by the sampled GPUs since sampling began, read now (at an epoch's
        boundary, so it does not wait for the next sample)."""
        with self._lock:
            now = time.monotonic()
            for reader in self.readers:
                if reader.device.lost:
                    continue
                try:
                    energy_j, power_w = reader.read_energy()
                except GpuLost:
                    continue  # the next sample reports it
                self.energy.update(reader.device.uuid, now, energy_j, power_w)
        return self.energy.total_joules()

    def _lost(self, reader: DeviceReader, exc: BaseException) -> None:
        device = reader.device
        device.lost = True
        logger.warning("mlobs: GPU %d (%s) is lost: %s", device.index, device.uuid, exc)
        self._event(n.LOST_EVENT, {**device.attrs, "error": str(exc)})

    def _event(self, name: str, attrs: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, attrs)
            except Exception as exc:
                safety.report("gpu.event", exc)

    def _recover(self) -> None:
        """Re-initialise NVML and look every device up again by UUID (a device that answers
        again is sampled again)."""
        nvml = self.nvml
        if not nvml.reinit():
            return
        lib = nvml.nvml
        for reader in self.readers:
            device = reader.device
            try:
                handle = lib.nvmlDeviceGetHandleByUUID(device.uuid)
                as_text(lib.nvmlDeviceGetUUID(handle))
            except lib.NVMLError as exc:
                logger.info("mlobs: GPU %s still does not answer: %s", device.uuid, exc)
                continue
            device.handle = handle
            if device.mig:  # MIG handles are stale too: look them up again, keeping the same set
                wanted = {m.uuid for m in device.mig}
                device.mig = [m for m in mig_devices(nvml, device) if m.uuid in wanted]
            if device.lost:
                logger.info("mlobs: GPU %d (%s) answers again", device.index, device.uuid)
            device.lost = False
        if self._xid is not None:
            self._xid.close()
        self._xid = XidWatcher(nvml, [r.device for r in self.readers if not r.device.lost])
