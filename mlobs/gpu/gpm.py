"""Graphics-engine utilization of MIG GPU instances through NVML GPM.

NVML's plain utilization query (``nvmlDeviceGetUtilizationRates``) answers NOT_SUPPORTED on MIG
device handles, so per-instance utilization has to come from GPM (GPU Performance Monitoring,
Hopper and later): take a counter sample of the GPU instance now and again later, and let NVML
compute the metric over the interval between the two samples.

:class:`MigUtilization` keeps the previous sample of each (GPU, instance) pair, so each
:meth:`MigUtilization.read` reports the utilization since the previous read of that instance.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TypeAlias

logger = logging.getLogger("mlobs")

_DeviceKey: TypeAlias = str | int
_NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED
_FUNCTION_NOT_FOUND = 13  # NVML_ERROR_FUNCTION_NOT_FOUND: a driver older than GPM


class MigUtilization:
    """Reads the graphics-engine utilization of MIG GPU instances, one GPM sample per read.

    Never raises: a device without GPM, a NOT_SUPPORTED answer or any other NVML error makes
    :meth:`read` return None (errors other than NOT_SUPPORTED are logged once each at debug
    level). A device found not to support GPM is remembered and not asked again.

    Call :meth:`close` before ``nvmlShutdown`` to free the samples it holds.

    Args:
        nvml: the ``pynvml`` module (or an object with the same functions), already initialised.
    """

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._lock = threading.Lock()
        self._supported: dict[_DeviceKey, bool] = {}
        self._previous: dict[tuple[_DeviceKey, int], Any] = {}
        self._logged: set[tuple[str, object]] = set()

    def read(self, parent_handle: Any, gpu_instance_id: int) -> float | None:
        """Utilization (0..1) of one MIG GPU instance since the previous read of that instance.

        Args:
            parent_handle: the NVML handle of the physical GPU (not a MIG device handle).
            gpu_instance_id: the MIG GPU instance id on that GPU.

        Returns:
            The ratio of time the graphics engine was busy, or None on the first read of an
            instance, when the GPU does not support GPM, or on any NVML error.
        """
        with self._lock:
            try:
                return self._read(parent_handle, gpu_instance_id)
            except Exception as exc:  # telemetry never raises into the caller
                self._note("read", exc)
                return None

    def close(self) -> None:
        """Free every sample held. The object stays usable: later reads start afresh."""
        with self._lock:
            samples = list(self._previous.values())
            self._previous.clear()
            for sample in samples:
                self._free(sample)

    def _read(self, handle: Any, gpu_instance_id: int) -> float | None:
        nvml = self._nvml
        device = self._device_key(handle)
        if not self._is_supported(device, handle):
            return None
        key = (device, gpu_instance_id)
        try:
            sample = nvml.nvmlGpmSampleAlloc()
        except nvml.NVMLError as exc:
            self._note("nvmlGpmSampleAlloc", exc)
            return None
        try:
            nvml.nvmlGpmMigSampleGet(handle, gpu_instance_id, sample)
        except Exception as exc:  # any failure: the new sample must not leak
            self._free(sample)
            self._note("nvmlGpmMigSampleGet", exc)
            return None
        previous = self._previous.get(key)
        self._previous[key] = sample
        if previous is None:
            return None
        try:
            return self._graphics_util(previous, sample)
        finally:
            self._free(previous)

    def _graphics_util(self, older: Any, newer: Any) -> float | None:
        nvml = self._nvml
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 1
        request.sample1 = older
        request.sample2 = newer
        request.metrics[0].metricId = nvml.NVML_GPM_METRIC_GRAPHICS_UTIL
        try:
            nvml.nvmlGpmMetricsGet(request)
        except nvml.NVMLError as exc:
            self._note("nvmlGpmMetricsGet", exc)
            return None
        metric = request.metrics[0]
        if metric.nvmlReturn != nvml.NVML_SUCCESS:
            self._note("NVML_GPM_METRIC_GRAPHICS_UTIL", nvml.NVMLError(metric.nvmlReturn))
            return None
        percent = float(metric.value)
        return min(max(percent / 100.0, 0.0), 1.0)

    def _device_key(self, handle: Any) -> _DeviceKey:
        """The GPU's UUID; the handle's identity when NVML cannot say it."""
        nvml = self._nvml
        try:
            uuid = nvml.nvmlDeviceGetUUID(handle)
        except nvml.NVMLError:
            return id(handle)
        return uuid.decode() if isinstance(uuid, bytes) else str(uuid)

    def _is_supported(self, device: _DeviceKey, handle: Any) -> bool:
        known = self._supported.get(device)
        if known is not None:
            return known
        nvml = self._nvml
        try:
            supported = bool(nvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) not in (_NOT_SUPPORTED, _FUNCTION_NOT_FOUND):
                self._note("nvmlGpmQueryDeviceSupport", exc)
                return False  # not remembered: a transient error may clear
            supported = False
        self._supported[device] = supported
        return supported

    def _free(self, sample: Any) -> None:
        nvml = self._nvml
        try:
            nvml.nvmlGpmSampleFree(sample)
        except Exception as exc:  # freeing is best effort
            self._note("nvmlGpmSampleFree", exc)

    def _note(self, where: str, exc: BaseException) -> None:
        """Log an error once per (call, error code); NOT_SUPPORTED stays silent."""
        if getattr(exc, "value", None) == _NOT_SUPPORTED:
            return
        key = (where, getattr(exc, "value", type(exc).__name__))
        if key in self._logged:
            return
        self._logged.add(key)
        logger.debug("GPM MIG utilization: %s failed: %r", where, exc)
