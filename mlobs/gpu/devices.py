"""Which GPUs a process samples: the ones it can use (``CUDA_VISIBLE_DEVICES``), or all of them.

``CUDA_VISIBLE_DEVICES`` is read the way the CUDA runtime reads it: a comma-separated list of
indices, GPU UUIDs (``GPU-...``, a unique prefix is enough) or MIG UUIDs (``MIG-...``); the list
ends at the first entry that names no device; an empty value, or ``-1``, hides every GPU. Unset,
every GPU is visible.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlobs.gpu.nvml import GpuLost, Nvml, as_text

logger = logging.getLogger("mlobs")

ALL = "all"


@dataclass
class MigDevice:
    """A MIG device (a GPU instance's compute slice) on its parent GPU."""

    handle: Any
    uuid: str
    profile: str
    gpu_instance: int
    attrs: dict[str, Any] = field(default_factory=dict)
    """Its records' attributes (the parent's plus its own), shared by every record of it."""


@dataclass
class Device:
    """A physical GPU and the MIG devices of it this process samples."""

    index: int
    handle: Any
    uuid: str
    model: str
    mig: list[MigDevice] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    lost: bool = False


@dataclass(frozen=True)
class Visible:
    """What ``CUDA_VISIBLE_DEVICES`` allows: ``None`` fields mean "no limit"."""

    indices: frozenset[int] | None = None
    uuid_prefixes: tuple[str, ...] | None = None
    mig_uuids: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        return self.indices is None and self.uuid_prefixes is None


def parse_visible(value: str | None) -> Visible:
    """The devices ``CUDA_VISIBLE_DEVICES`` (``value``) leaves visible."""
    if value is None:
        return Visible()
    indices: set[int] = set()
    prefixes: list[str] = []
    migs: set[str] = set()
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            number = int(entry)
            if number < 0:
                break
            indices.add(number)
        elif entry.startswith("MIG-"):
            migs.add(entry)
        elif entry.startswith("GPU-"):
            prefixes.append(entry)
        else:
            break  # CUDA stops at the first entry it cannot read
    return Visible(frozenset(indices), tuple(prefixes), frozenset(migs))


def discover(nvml: Nvml, scope: str = "run", env: Mapping[str, str] | None = None) -> list[Device]:
    """The devices to sample: those visible to this process (``scope="run"``) or every GPU on
    the host (``scope="all"``). Devices that fail to answer are skipped with a warning."""
    lib = nvml.nvml
    environ = os.environ if env is None else env
    visible = Visible() if scope == ALL else parse_visible(environ.get("CUDA_VISIBLE_DEVICES"))
    count = nvml.query(lib.nvmlDeviceGetCount) or 0
    # in a Kubernetes pod the hostname is the pod's: the chart passes the node's as NODE_NAME
    host = environ.get("NODE_NAME") or socket.gethostname()
    found: list[tuple[Device, list[MigDevice]]] = []
    for index in range(count):
        try:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            uuid = as_text(lib.nvmlDeviceGetUUID(handle))
            model = as_text(nvml.query(lib.nvmlDeviceGetName, handle) or "unknown")
            device = Device(index, handle, uuid, model)
            device.attrs = {
                "scope": "system",
                "gpu": str(index),
                "uuid": uuid,
                "model": model,
                "host": host,
                "driver_version": nvml.driver_version,
            }
            mig = mig_devices(nvml, device)
        except (GpuLost, lib.NVMLError) as exc:
            logger.warning("mlobs: GPU %d did not answer and is not sampled: %s", index, exc)
            continue
        found.append((device, mig))
    # like CUDA, a UUID prefix must name one device; an ambiguous one names none
    prefixes = [
        p for p in visible.uuid_prefixes or () if sum(d.uuid.startswith(p) for d, _ in found) == 1
    ]
    devices: list[Device] = []
    for device, mig in found:
        whole = (
            visible.everything
            or device.index in (visible.indices or ())
            or any(device.uuid.startswith(p) for p in prefixes)
        )
        chosen = [m for m in mig if m.uuid in visible.mig_uuids]
        if whole:
            device.mig = mig
        elif chosen:
            device.mig = chosen
        else:
            continue
        devices.append(device)
    return devices


def mig_devices(nvml: Nvml, device: Device) -> list[MigDevice]:
    lib = nvml.nvml
    mode = nvml.query(lib.nvmlDeviceGetMigMode, device.handle)
    if not mode or not mode[0]:
        return []
    slots = nvml.query(lib.nvmlDeviceGetMaxMigDeviceCount, device.handle) or 0
    found = []
    for slot in range(slots):
        try:
            handle = lib.nvmlDeviceGetMigDeviceHandleByIndex(device.handle, slot)
        except lib.NVMLError:
            continue  # an empty slot
        uuid = as_text(lib.nvmlDeviceGetUUID(handle))
        profile = as_text(nvml.query(lib.nvmlDeviceGetName, handle) or "")
        instance = nvml.query(lib.nvmlDeviceGetGpuInstanceId, handle)
        gpu_instance = slot if instance is None else int(instance)
        attrs = {
            **device.attrs,
            "mig_uuid": uuid,
            "mig_profile": profile,
            "gpu_instance": str(gpu_instance),
        }
        found.append(MigDevice(handle, uuid, profile, gpu_instance, attrs))
    return found
