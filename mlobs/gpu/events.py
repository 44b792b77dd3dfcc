"""XID errors through NVML's event API: registered once, polled without waiting at each sample."""

from __future__ import annotations

import logging
from typing import Any

from mlobs.gpu.devices import Device
from mlobs.gpu.nvml import GpuLost, Nvml, as_text

logger = logging.getLogger("mlobs")

MAX_EVENTS_PER_POLL = 256
"""A storm of XIDs is drained over several samples rather than stalling one."""


class XidWatcher:
    """An NVML event set with every device that supports critical-XID events registered.

    Devices without event support (NOT_SUPPORTED, common in VMs and on MIG-enabled GPUs) are left
    out; :attr:`watched` says which are in.
    """

    def __init__(self, nvml: Nvml, devices: list[Device]) -> None:
        self.nvml = nvml
        self.watched: set[str] = set()
        self._by_uuid = {d.uuid: d for d in devices}
        lib = nvml.nvml
        self._event_set: Any = None
        try:
            self._event_set = lib.nvmlEventSetCreate()
        except lib.NVMLError as exc:
            logger.info("mlobs: no NVML event set, XID errors are not watched: %s", exc)
            return
        xid = lib.nvmlEventTypeXidCriticalError
        for device in devices:
            try:
                supported = nvml.query(lib.nvmlDeviceGetSupportedEventTypes, device.handle)
                if not supported or not supported & xid:
                    continue
                lib.nvmlDeviceRegisterEvents(device.handle, xid, self._event_set)
                self.watched.add(device.uuid)
            except (GpuLost, lib.NVMLError) as exc:
                logger.info("mlobs: XID events of GPU %d are not watched: %s", device.index, exc)

    def poll(self) -> list[tuple[Device | None, int]]:
        """The XID events waiting now: ``(device, xid)``, device ``None`` when unknown."""
        if self._event_set is None or not self.watched:
            return []
        lib = self.nvml.nvml
        found: list[tuple[Device | None, int]] = []
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                data = lib.nvmlEventSetWait(self._event_set, 0)
            except lib.NVMLError as exc:
                if getattr(exc, "value", None) != lib.NVML_ERROR_TIMEOUT:
                    logger.debug("mlobs: NVML event wait failed: %s", exc)
                break
            if not data.eventType & lib.nvmlEventTypeXidCriticalError:
                continue
            try:
                uuid = as_text(lib.nvmlDeviceGetUUID(data.device))
            except lib.NVMLError:
                uuid = ""
            found.append((self._by_uuid.get(uuid), int(data.eventData)))
        return found

    def close(self) -> None:
        if self._event_set is not None:
            try:
                self.nvml.nvml.nvmlEventSetFree(self._event_set)
            except Exception as exc:  # after a driver fault the set may be gone already
                logger.debug("mlobs: freeing the NVML event set failed: %s", exc)
            self._event_set = None
