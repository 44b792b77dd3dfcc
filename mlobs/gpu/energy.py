"""Energy used by a process's GPUs: NVML's energy counter where the GPU has one, power integrated
over time where it does not; and what that energy costs in money and CO2e."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from mlobs.gpu import names as n

JOULES_PER_KWH = 3.6e6


@dataclass
class _DeviceEnergy:
    uses_counter: bool
    counter_j: float = 0.0
    first_counter_j: float = 0.0
    integrated_j: float = 0.0
    power_w: float | None = None
    at: float | None = None

    def joules(self) -> float:
        """Energy since this device was first seen."""
        if self.uses_counter:
            return self.counter_j - self.first_counter_j
        return self.integrated_j


class EnergyMeter:
    """Total energy of a set of GPUs since they were first seen; thread-safe.

    Each device keeps the method it started with: the counter when its first reading had one,
    otherwise the trapezoidal integral of its power readings.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, _DeviceEnergy] = {}

    def update(self, uuid: str, now: float, energy_j: float | None, power_w: float | None) -> None:
        """One reading of device ``uuid`` at monotonic time ``now`` (either value may be
        missing)."""
        with self._lock:
            dev = self._devices.get(uuid)
            if dev is None:
                if energy_j is None and power_w is None:
                    return
                dev = self._devices[uuid] = _DeviceEnergy(uses_counter=energy_j is not None)
                if energy_j is not None:
                    dev.counter_j = dev.first_counter_j = energy_j
            elif dev.uses_counter and energy_j is not None:
                if energy_j < dev.counter_j:  # the driver was reloaded: the counter restarted
                    # keep the energy counted so far: shift the origin by what was used
                    dev.first_counter_j = energy_j - (dev.counter_j - dev.first_counter_j)
                dev.counter_j = energy_j
            if power_w is not None:
                if dev.power_w is not None and dev.at is not None and now > dev.at:
                    dev.integrated_j += (dev.power_w + power_w) / 2.0 * (now - dev.at)
                dev.power_w, dev.at = power_w, now

    def total_joules(self) -> float:
        with self._lock:
            return sum(d.joules() for d in self._devices.values())

    def devices(self) -> int:
        with self._lock:
            return len(self._devices)


def energy_metrics(
    joules: float, prefix: str, price_per_kwh: float | None, grid_g_per_kwh: float | None
) -> dict[str, float]:
    """The energy metrics of an epoch (``prefix="epoch"``) or a run (``"run"``): joules and kWh,
    plus cost and gCO2e when their rates are configured."""
    kwh = joules / JOULES_PER_KWH
    names = {
        "epoch": (n.EPOCH_ENERGY, n.EPOCH_ENERGY_KWH, n.EPOCH_COST, n.EPOCH_CO2),
        "run": (n.RUN_ENERGY, n.RUN_ENERGY_KWH, n.RUN_COST, n.RUN_CO2),
    }[prefix]
    out = {names[0]: joules, names[1]: kwh}
    if price_per_kwh is not None:
        out[names[2]] = kwh * price_per_kwh
    if grid_g_per_kwh is not None:
        out[names[3]] = kwh * grid_g_per_kwh
    return out
