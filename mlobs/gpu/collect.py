"""One sample of one GPU: every NVML query isolated, readings named as in :mod:`mlobs.gpu.names`.

A reading is ``(name, value, attrs)``. Counters are totals (NVML's own counters, or PCIe bytes
integrated from its throughput); the sampler turns them into increments for the spool. ``attrs``
dicts are built once per series and reused, so sinks that cache by attribute dict see few.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from mlobs.gpu import names as n
from mlobs.gpu.devices import Device
from mlobs.gpu.gpm import MigUtilization
from mlobs.gpu.nvml import Nvml

Reading = tuple[str, float, dict[str, Any]]

_CLOCKS = (
    ("sm", "NVML_CLOCK_SM"),
    ("memory", "NVML_CLOCK_MEM"),
    ("graphics", "NVML_CLOCK_GRAPHICS"),
    ("video", "NVML_CLOCK_VIDEO"),
)
_ECC = (
    ("corrected", "NVML_MEMORY_ERROR_TYPE_CORRECTED"),
    ("uncorrected", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED"),
)
_ECC_COUNTERS = (("volatile", "NVML_VOLATILE_ECC"), ("aggregate", "NVML_AGGREGATE_ECC"))


class DeviceReader:
    """Reads one device (and its MIG devices) through ``nvml``.

    Args:
        nvml: the NVML session.
        device: the device, as :func:`mlobs.gpu.devices.discover` found it.
        own_pid: the process whose GPU memory (with its children's) counts as this run's.
        mig_utilization: GPM reader for MIG utilization, shared by the devices of a sampler.
    """

    def __init__(
        self,
        nvml: Nvml,
        device: Device,
        own_pid: int | None = None,
        mig_utilization: MigUtilization | None = None,
    ) -> None:
        self.nvml = nvml
        self.device = device
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.mig_utilization = mig_utilization
        self._attrs: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        self._pcie_total = {"tx": 0.0, "rx": 0.0}
        self._pcie_at: float | None = None
        self._ancestry: dict[int, bool] = {}
        lib = nvml.nvml
        self._nvml_error: type[Exception] = lib.NVMLError
        # the series with fixed extra labels, with their attribute dicts built once
        self._clocks_ids = [
            (getattr(lib, const), self.attrs(clock=name)) for name, const in _CLOCKS
        ]
        self._ecc_ids = [
            (getattr(lib, tc), getattr(lib, cc), self.attrs(type=t, counter=c))
            for t, tc in _ECC
            for c, cc in _ECC_COUNTERS
        ]
        self._throttle_attrs = [
            (bit, self.attrs(reason=reason)) for bit, reason in n.THROTTLE_REASONS.items()
        ]
        self.answered = 0
        """Queries that answered in the last :meth:`read`: none at all means NVML is in trouble."""
        self.energy_j: float | None = None
        """The energy counter in the last :meth:`read` (``None``: unsupported)."""
        self.power_w: float | None = None
        """The power draw in the last :meth:`read` (``None``: unsupported)."""
        self._xids: dict[int, int] = {}

    def attrs(self, **extra: str) -> dict[str, Any]:
        """The device's attributes plus ``extra``, one dict per combination."""
        key = tuple(extra.items())  # each call site passes its keywords in one order
        found = self._attrs.get(key)
        if found is None:
            found = self._attrs[key] = {**self.device.attrs, **extra}
        return found

    def read(self, now: float) -> list[Reading]:
        """One sample at monotonic time ``now``; raises :class:`mlobs.gpu.nvml.GpuLost`."""
        out: list[Reading] = []
        base = self.attrs()
        self.answered = 0
        self.energy_j = self.power_w = None
        for part in (
            self._utilization,
            self._memory,
            self._thermal_power,
            self._clocks,
            self._pcie,
            self._errors,
            self._throttle,
            self._processes,
        ):
            part(out, base, now)
        out.append((n.STATUS, 1.0, self.attrs(state="ok")))
        out.append((n.STATUS, 0.0, self.attrs(state="failed")))
        for mig in self.device.mig:
            self._mig(out, mig)
        return out

    def failed(self) -> list[Reading]:
        """The readings of a device that stopped answering: its status, nothing else."""
        return [
            (n.STATUS, 0.0, self.attrs(state="ok")),
            (n.STATUS, 1.0, self.attrs(state="failed")),
        ]

    def read_energy(self) -> tuple[float | None, float | None]:
        """The energy counter (J) and power draw (W) alone, read now."""
        lib, h = self.nvml.nvml, self.device.handle
        energy = self._q(lib.nvmlDeviceGetTotalEnergyConsumption, h)
        power = self._q(lib.nvmlDeviceGetPowerUsage, h)
        return (
            None if energy is None else energy / 1000.0,
            None if power is None else power / 1000.0,
        )

    def count_xid(self, xid: int) -> None:
        """One more XID error ``xid`` on this device."""
        self._xids[xid] = self._xids.get(xid, 0) + 1

    def xid_readings(self) -> list[Reading]:
        """The XID error totals seen so far, one series per code."""
        return [(n.XID_ERRORS, float(c), self.attrs(xid=str(x))) for x, c in self._xids.items()]

    # -- the queries, grouped -------------------------------------------------------------
    def _q(self, fn: Callable[..., Any], *args: Any) -> Any:
        # the hot path of a sample (about 30 calls per GPU): one try, no further call layers
        try:
            value = fn(*args)
        except self._nvml_error as exc:
            self.nvml.failed(fn, exc)
            return None
        self.answered += 1
        return value

    def _utilization(self, out: list[Reading], base: dict[str, Any], now: float) -> None:
        lib, h = self.nvml.nvml, self.device.handle
        util = self._q(lib.nvmlDeviceGetUtilizationRates, h)
        if util is not None:
            out.append((n.UTILIZATION, util.gpu / 100.0, base))
            out.append((n.MEMORY_ACTIVITY, util.memory / 100.0, base))
        enc = self._q(lib.nvmlDeviceGetEncoderUtilization, h)
        if enc is not None:
            out.append((n.ENCODER_UTILIZATION, enc[0] / 100.0, base))
        dec = self._q(lib.nvmlDeviceGetDecoderUtilization, h)
        if dec is not None:
            out.append((n.DECODER_UTILIZATION, dec[0] / 100.0, base))

    def _memory(self, out: list[Reading], base: dict[str, Any], now: float) -> None:
        lib, h = self.nvml.nvml, self.device.handle
        mem = self._q(lib.nvmlDeviceGetMemoryInfo, h, lib.nvmlMemory_v2)
        if mem is None:  # drivers before r510 only have the first version
            mem = self._q(lib.nvmlDeviceGetMemoryInfo, h)
        if mem is None:
            return
        out.append((n.MEMORY_USED, float(mem.used), base))
        out.append((n.MEMORY_FREE, float(mem.free), base))
        out.append((n.MEMORY_TOTAL, float(mem.total), base))
        reserved = getattr(mem, "reserved", None)
        if reserved is not None:
            out.append((n.MEMORY_RESERVED, float(reserved), base))
        if mem.total:
            out.append((n.MEMORY_USED_RATIO, mem.used / mem.total, base))

    def _thermal_power(self, out: list[Reading], base: dict[str, Any], now: float) -> None:
        lib, h = self.nvml.nvml, self.device.handle
        temp = self._q(lib.nvmlDeviceGetTemperature, h, lib.NVML_TEMPERATURE_GPU)
        if temp is not None:
            out.append((n.TEMPERATURE, float(temp), self.attrs(sensor="gpu")))
        mem_temp = self._field(lib.NVML_FI_DEV_MEMORY_TEMP)
        if mem_temp is not None:
            out.append((n.TEMPERATURE, mem_temp, self.attrs(sensor="memory")))
        power = self._q(lib.nvmlDeviceGetPowerUsage, h)
        if power is not None:
            self.power_w = power / 1000.0
            out.append((n.POWER, self.power_w, base))
        limit = self._q(lib.nvmlDeviceGetEnforcedPowerLimit, h)
        if limit is not None:
            out.append((n.POWER_LIMIT, limit / 1000.0, base))
        energy = self._q(lib.nvmlDeviceGetTotalEnergyConsumption, h)
        if energy is not None:
            self.energy_j = energy / 1000.0
            out.append((n.ENERGY, self.energy_j, base))
        fan = self._q(lib.nvmlDeviceGetFanSpeed, h)
        if fan is not None:
            out.append((n.FAN, fan / 100.0, base))
        pstate = self._q(lib.nvmlDeviceGetPerformanceState, h)
        if pstate is not None and pstate != getattr(lib, "NVML_PSTATE_UNKNOWN", 32):
            out.append((n.PSTATE, float(pstate), base))

    def _field(self, field_id: int) -> float | None:
        """One NVML field value, ``None`` when the device lacks it."""
        lib = self.nvml.nvml
        values = self._q(lib.nvmlDeviceGetFieldValues, self.device.handle, [field_id])
        if not values or values[0].nvmlReturn != lib.NVML_SUCCESS:
            return None
        entry = values[0]
        kind = entry.valueType
        if kind == lib.NVML_VALUE_TYPE_DOUBLE:
            return float(entry.value.dVal)
        if kind == lib.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
            return float(entry.value.ullVal)
        if kind == lib.NVML_VALUE_TYPE_SIGNED_LONG_LONG:
            return float(entry.value.sllVal)
        if kind == lib.NVML_VALUE_TYPE_SIGNED_INT:
            return float(entry.value.siVal)
        return float(entry.value.uiVal)

    def _clocks(self, out: list[Reading], base: dict[str, Any], now: float) -> None:
        lib, h = self.nvml.nvml, self.device.handle
        for clock_id, attrs in self._clocks_ids:
            mhz = self._q(lib.nvmlDeviceGetClockInfo, h, clock_id)
            if mhz is not None:
                out.append((n.CLOCK, mhz * 1e6, attrs))
            max_mhz = self._q(lib.nvmlDeviceGetMaxClockInfo, h, clock_id)
            if max_mhz is not None:
                out.append((n.CLOCK_MAX, max_mhz * 1e6, attrs))

    def _pcie(self, out: list[Reading], base: dict[str, Any], now: float) -> None:
        lib, h = self.nvml.nvml, self.device.handle
        elapsed = 0.0 if self._pcie_at is None else now - self._pcie_at
        self._pcie_at = now
        for direction, counter in (
            ("tx", lib.NVML_PCIE_UTIL_TX_BYTES),
            ("rx", lib.NVML_PCIE_UTIL_RX_BYTES),
        ):
            kb_per_s = self._q(lib.nvmlDeviceGetPcieThroughput, h, counter)
            if kb_per_s is None:
                continue
            # NVML gives the rate over its last ~20 ms window: the integral is an estimate
            self._pcie_total[direction] += kb_per_s * 1024.0 * elapsed
            out.append((n.PCIE_IO, self._pcie_total[direction], self.attrs(direction=direction)))
        replays = self._q(lib.nvmlDeviceGetPcieReplayCounter, h)
        if replays is not None:
            out.append((n.PCIE_REPLAYS, float(replays), base))

    def _errors(self, out: list[Reading], base: dict[str, Any], now: float) -> None:
        lib, h = self.nvml.nvml, self.device.handle
        for type_id, counter_id, attrs in self._ecc_ids:
            count = self._q(lib.nvmlDeviceGetTotalEccErrors, h, type_id, counter_id)
            if count is not None:
                out.append((n.ECC_ERRORS, float(count), attrs))
        rows = self._q(lib.nvmlDeviceGetRemappedRows, h)
        if rows is not None:
            corrected, uncorrected, pending, failure = rows
            out.append((n.REMAPPED_ROWS, float(corrected), self.attrs(cause="correctable")))
            out.append((n.REMAPPED_ROWS, float(uncorrected), self.attrs(cause="uncorrectable")))
            out.append((n.REMAP_PENDING, float(bool(pending)), base))
            out.append((n.REMAP_FAILED, float(bool(failure)), base))

    def _throttle(self, out: list[Reading], base: dict[str, Any], now: float) -> None:
        lib, h = self.nvml.nvml, self.device.handle
        get = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None)
        mask = self._q(get, h) if get is not None else None
        if mask is None:
            mask = self._q(lib.nvmlDeviceGetCurrentClocksThrottleReasons, h)
        if mask is None:
            return
        for bit, attrs in self._throttle_attrs:
            out.append((n.THROTTLE, float(bool(mask & bit)), attrs))

    def _processes(self, out: list[Reading], base: dict[str, Any], now: float) -> None:
        lib, h = self.nvml.nvml, self.device.handle
        procs = self._q(lib.nvmlDeviceGetComputeRunningProcesses, h)
        for proc in procs or ():
            used = proc.usedGpuMemory
            if used is None:  # hidden from unprivileged users on some systems
                continue
            mine = "true" if self._is_ours(proc.pid) else "false"
            attrs = self.attrs(pid=str(proc.pid), this_run=mine)
            out.append((n.PROCESS_MEMORY, float(used), attrs))

    def _is_ours(self, pid: int) -> bool:
        """``pid`` is this process or a descendant (NVML gives host PIDs: in a container with
        its own PID namespace they match nothing, and none is marked)."""
        known = self._ancestry.get(pid)
        if known is None:
            known = self._ancestry[pid] = _descends_from(pid, self.own_pid)
        return known

    def _mig(self, out: list[Reading], mig: Any) -> None:
        lib = self.nvml.nvml
        mem = self._q(lib.nvmlDeviceGetMemoryInfo, mig.handle)
        if mem is not None:
            out.append((n.MIG_MEMORY_USED, float(mem.used), mig.attrs))
            out.append((n.MIG_MEMORY_TOTAL, float(mem.total), mig.attrs))
        if self.mig_utilization is not None:
            util = self.mig_utilization.read(self.device.handle, mig.gpu_instance)
            if util is not None:
                out.append((n.MIG_UTILIZATION, util, mig.attrs))


def _descends_from(pid: int, ancestor: int, max_depth: int = 64) -> bool:
    for _ in range(max_depth):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        # the command name may hold spaces and parentheses: the fields follow the last ')'
        pid = int(stat[stat.rindex(b")") + 2 :].split()[1])
    return False
