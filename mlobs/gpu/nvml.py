"""NVML through nvidia-ml-py: initialisation with backoff, and errors sorted by what they mean.

Every query the collectors make goes through :meth:`Nvml.query`, which isolates it: an
unsupported function gives ``None`` (one series is missing, the sample goes on), a lost GPU raises
:class:`GpuLost` for the caller to mark that device, and anything else is counted and logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mlobs import safety

logger = logging.getLogger("mlobs")
T = TypeVar("T")

QUERY_ERRORS = "mlobs_gpu_query_errors_total"
"""NVML calls that failed other than by being unsupported, by function."""

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0


class NvmlUnavailable(RuntimeError):
    """No NVML library, no driver, or no GPU: the sampler stays off."""


class GpuLost(RuntimeError):
    """NVML_ERROR_GPU_IS_LOST: the device fell off the bus or stopped answering."""


def load_pynvml() -> Any:
    """The ``pynvml`` module of nvidia-ml-py (the ``gpu`` extra)."""
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install 'mlobs[gpu]')") from exc
    return pynvml


class Nvml:
    """One process's use of NVML.

    Args:
        module: the ``pynvml`` module (a parameter so that tests and the exporter share it).
        clock: monotonic clock, for the re-initialisation backoff.
    """

    def __init__(self, module: Any | None = None, clock: Callable[[], float] = time.monotonic):
        self.nvml = module if module is not None else load_pynvml()
        self._clock = clock
        self._lock = threading.Lock()
        self.initialised = False
        self._backoff = BACKOFF_START_S
        self._next_try = 0.0
        self.inits = 0
        """Successful initialisations: more than one means NVML was re-initialised after errors."""
        self.driver_version = ""

    # -- lifecycle ------------------------------------------------------------------------
    def init(self) -> None:
        """Initialise NVML; raises :class:`NvmlUnavailable` when there is no driver or library."""
        nvml = self.nvml
        with self._lock:
            if self.initialised:
                return
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                raise NvmlUnavailable(f"NVML did not initialise: {exc}") from exc
            except OSError as exc:  # the shared library itself is missing
                raise NvmlUnavailable(f"NVML library not found: {exc}") from exc
            self.initialised = True
            self.inits += 1
            self.driver_version = as_text(self.query(nvml.nvmlSystemGetDriverVersion) or "")

    def shutdown(self) -> None:
        with self._lock:
            if not self.initialised:
                return
            self.initialised = False
            try:
                self.nvml.nvmlShutdown()
            except Exception as exc:  # shutting down after a fault may fail too
                logger.debug("mlobs: nvmlShutdown failed: %s", exc)

    def reinit_due(self) -> bool:
        """Whether a re-initialisation may be tried now (exponential backoff since the last)."""
        return self._clock() >= self._next_try

    def reinit(self) -> bool:
        """Shut NVML down and initialise it again, at most once per backoff period."""
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        self.shutdown()
        try:
            self.init()
        except NvmlUnavailable as exc:
            safety.report("gpu.reinit", exc, f"mlobs: NVML re-initialisation failed: {exc}")
            return False
        logger.info("mlobs: NVML re-initialised")
        return True

    def healthy(self) -> None:
        """A sample went through without faults: the next fault retries after the shortest
        backoff again."""
        self._backoff = BACKOFF_START_S

    # -- queries --------------------------------------------------------------------------
    def query(self, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)``; ``None`` when unsupported or failed, :class:`GpuLost` when lost."""
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            self.failed(fn, exc)
            return None

    def failed(self, fn: Callable[..., Any], exc: BaseException) -> None:
        """Handle a failed query: nothing for an unsupported function, :class:`GpuLost` raised
        for a device that fell off the bus, otherwise counted and logged once."""
        nvml = self.nvml
        code = getattr(exc, "value", None)
        if code == nvml.NVML_ERROR_NOT_SUPPORTED or code == nvml.NVML_ERROR_FUNCTION_NOT_FOUND:
            return
        if code == nvml.NVML_ERROR_GPU_IS_LOST:
            raise GpuLost(str(exc)) from exc
        where = getattr(fn, "__name__", "nvml")
        safety.self_metrics.inc(QUERY_ERRORS, where)
        safety.warn(f"gpu.query:{where}:{code}", "mlobs: NVML %s failed: %s", where, exc)


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
