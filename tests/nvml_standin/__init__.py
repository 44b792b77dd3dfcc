"""A STAND-IN for NVIDIA's NVML library, for tests only: no GPU, no driver, not NVIDIA's code.

``fake_nvml.c`` is a small C library exporting the NVML functions that the real ``nvidia-ml-py``
(``import pynvml``) calls, compiled by :func:`build` with gcc against the real ``nvml.h`` (from
the PyPI package ``nvidia-nvml-dev``) into ``libnvidia-ml.so.1``. Loaded through
``LD_LIBRARY_PATH`` (subprocesses, :attr:`FakeNvml.env`) or handed to pynvml in-process
(:meth:`FakeNvml.load_in_process`), it lets the real pynvml run unmodified.

Its devices, values and faults come from a config file (path in ``MLOBS_FAKE_NVML_CONFIG``) that
the library re-reads whenever it changes, so a test can change values or inject faults mid-run.
:meth:`FakeNvml.write` takes a dict::

    {
        "driver_version": "550.54.15",
        "no_driver": False,                 # nvmlInit -> NVML_ERROR_DRIVER_NOT_LOADED
        "not_supported": ["nvmlDeviceGetFanSpeed"],   # for every device
        "devices": [
            {
                "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-...",
                "mem_total": 80 << 30, "mem_used": 1 << 30, "mem_reserved": 0,
                "util_gpu": 50, "util_mem": 20, "enc_util": 0, "dec_util": 0,
                "temp": 40, "power_mw": 100_000, "power_limit_mw": 700_000,
                "mem_temp": 45,             # NVML_FI_DEV_MEMORY_TEMP field value; unset: that
                                            # entry NOT_SUPPORTED (no memory sensor)
                "energy_mj": 123_456,
                "clock_graphics": 1500, "clock_sm": 1500, "clock_mem": 2600, "clock_video": 1300,
                "max_clock_graphics": ..., "max_clock_sm": ..., "max_clock_mem": ...,
                "max_clock_video": ...,
                "fan": 30, "pcie_tx_kbs": 1000, "pcie_rx_kbs": 2000, "pcie_replay": 0,
                "ecc_corrected": 0, "ecc_uncorrected": 0, "pstate": 0,
                "throttle_reasons": 0, "supported_events": ...,
                "remapped_corr": 0, "remapped_unc": 0, "remapped_pending": 0,
                "remapped_failure": 0,
                "lost": False,              # every call on it -> NVML_ERROR_GPU_IS_LOST
                "not_supported": ["nvmlDeviceGetPowerUsage"],   # this device only
                "processes": [{"pid": 1234, "used_memory": 1 << 30}],
                "gpm": False,               # nvmlGpm* support (Hopper and later); whole-device
                                            # GPM samples report util_gpu
                "mig_mode": None,           # default: on when "mig" is non-empty
                "mig": [{"uuid": "MIG-...", "name": "...", "mem_total": ..., "mem_used": ...,
                         "util": 40,        # GPM graphics/SM utilization percent
                         "processes": [...]}],
            },
        ],
        # XID events, each delivered once per process by nvmlEventSetWait to an event set on
        # which the device registered nvmlEventTypeXidCriticalError; "id" defaults to the
        # position in the list (give ids when rewriting the list so delivered ones stay so).
        "events": [{"device": 0, "xid": 79, "id": 0}],
    }

Unset device fields are 0 (name and UUID get defaults). On MIG device handles only name, UUID,
memory, index, processes, ``nvmlDeviceIsMigDeviceHandle`` and GPM answer; the rest are
NOT_SUPPORTED, as with the real library (field values: every entry NOT_SUPPORTED).

A MIG device's GPU instance id (``gpuInstanceId`` in process infos, ``nvmlGpmMigSampleGet``) is
its position in ``"mig"``. A GPM sample keeps the configured utilization of its device or
instance when it is taken; ``nvmlGpmMetricsGet`` returns the later sample's value for
``NVML_GPM_METRIC_GRAPHICS_UTIL`` and ``NVML_GPM_METRIC_SM_UTIL`` (other metrics NOT_SUPPORTED
per entry) and fails with INVALID_ARGUMENT when the two samples come from different devices or
instances. The library also exports ``fakeNvmlGpmSamplesInUse()`` (not NVML): the number of GPM
samples allocated and not yet freed, for leak checks.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

CONFIG_ENV = "MLOBS_FAKE_NVML_CONFIG"
LIBRARY_NAME = "libnvidia-ml.so.1"
SOURCE = Path(__file__).with_name("fake_nvml.c")

__all__ = [
    "CONFIG_ENV",
    "FakeNvml",
    "StandinUnavailable",
    "build",
    "built_library",
    "device",
    "nvml_include_dir",
]


class StandinUnavailable(RuntimeError):
    """gcc or the NVML headers (PyPI ``nvidia-nvml-dev``) are missing."""


def nvml_include_dir() -> Path:
    """The directory holding ``nvml.h`` inside the installed ``nvidia-nvml-dev`` package."""
    try:
        files = metadata.distribution("nvidia-nvml-dev").files or []
    except metadata.PackageNotFoundError as exc:
        raise StandinUnavailable("PyPI package nvidia-nvml-dev (nvml.h) is not installed") from exc
    for f in files:
        if f.name == "nvml.h":
            return Path(str(f.locate())).resolve().parent
    raise StandinUnavailable("nvml.h not found in the installed nvidia-nvml-dev package")


def build(out_dir: Path) -> Path:
    """Compile the stand-in into ``out_dir/libnvidia-ml.so.1`` and return that path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise StandinUnavailable("gcc is not installed")
    include = nvml_include_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / LIBRARY_NAME
    tmp = out_dir / f".{LIBRARY_NAME}.{os.getpid()}.tmp"
    cmd = [gcc, "-shared", "-fPIC", "-O1", "-Wno-deprecated-declarations", f"-I{include}"]
    cmd += ["-o", str(tmp), str(SOURCE), "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building the NVML stand-in failed:\n{proc.stderr}")
    os.replace(tmp, target)
    return target


@functools.cache
def built_library() -> Path:
    """The stand-in, built once per source and header into a cache directory under the system
    temporary directory (``os.replace`` keeps concurrent builders safe)."""
    include = nvml_include_dir()
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update((include / "nvml.h").read_bytes())
    out_dir = Path(tempfile.gettempdir()) / f"mlobs-nvml-standin-{digest.hexdigest()[:16]}"
    target = out_dir / LIBRARY_NAME
    if target.is_file():
        return target
    return build(out_dir)


def device(index: int, **overrides: Any) -> dict[str, Any]:
    """A plausible device config for ``index`` (H100-like values), with ``overrides`` applied."""
    dev: dict[str, Any] = {
        "name": "NVIDIA H100 80GB HBM3 (stand-in)",
        "uuid": f"GPU-5fa1e0c2-0000-4000-8000-{index:012d}",
        "mem_total": 80 * 1024**3,
        "mem_used": (index + 1) * 1024**3,
        "util_gpu": 10 + index,
        "util_mem": 5 + index,
        "temp": 40 + index,
        "power_mw": 100_000 + index * 1000,
        "power_limit_mw": 700_000,
        "energy_mj": 1_000_000 + index,
        "clock_graphics": 1500,
        "clock_sm": 1500,
        "clock_mem": 2619,
        "clock_video": 1300,
        "max_clock_graphics": 1980,
        "max_clock_sm": 1980,
        "max_clock_mem": 2619,
        "max_clock_video": 1545,
        "fan": 30,
        "pcie_tx_kbs": 1000,
        "pcie_rx_kbs": 2000,
        "pstate": 0,
    }
    dev.update(overrides)
    return dev


def _flatten(prefix: str, value: Any, out: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, Mapping) for v in value) and value:
        out.append(f"{prefix}.count={len(value)}")
        for i, v in enumerate(value):
            _flatten(f"{prefix}.{i}", v, out)
    elif isinstance(value, (list, tuple)):
        if prefix.endswith(("devices", "processes", "mig", "events")):
            out.append(f"{prefix}.count=0")
        else:
            out.append(f"{prefix}={','.join(str(v) for v in value)}")
    elif isinstance(value, bool):
        out.append(f"{prefix}={int(value)}")
    else:
        text = str(value)
        if "\n" in text or "=" in prefix:
            raise ValueError(f"cannot encode {prefix}={text!r}")
        out.append(f"{prefix}={text}")


def encode(config: Mapping[str, Any]) -> str:
    """The stand-in's ``key=value`` line format for ``config``."""
    lines: list[str] = []
    _flatten("", config, lines)
    return "\n".join(lines) + "\n"


class FakeNvml:
    """One stand-in NVML configuration: a config file in ``directory`` plus the built library."""

    def __init__(self, directory: Path, library: Path | None = None) -> None:
        self.library = library if library is not None else built_library()
        self.config_path = directory / "fake-nvml.conf"
        self.config: dict[str, Any] = {}
        self._pynvml: ModuleType | None = None
        self.write({"devices": []})

    def write(self, config: Mapping[str, Any]) -> None:
        """Replace the configuration; the library picks it up on its next call (atomic rename,
        so a new inode: no reliance on mtime granularity)."""
        self.config = dict(config)
        tmp = self.config_path.with_name(self.config_path.name + ".tmp")
        tmp.write_text(encode(config))
        os.replace(tmp, self.config_path)

    def update_device(self, index: int, **fields: Any) -> None:
        """Change fields of device ``index`` in the current configuration and rewrite it."""
        config = dict(self.config)
        devices = [dict(d) for d in config.get("devices", [])]
        devices[index].update(fields)
        config["devices"] = devices
        self.write(config)

    @property
    def env(self) -> dict[str, str]:
        """Environment additions for a subprocess that should load the stand-in."""
        ld = os.environ.get("LD_LIBRARY_PATH", "")
        lib_dir = str(self.library.parent)
        return {
            "LD_LIBRARY_PATH": f"{lib_dir}{os.pathsep}{ld}" if ld else lib_dir,
            CONFIG_ENV: str(self.config_path),
        }

    def subprocess_env(self) -> dict[str, str]:
        """``os.environ`` plus :attr:`env`, ready for ``subprocess.run(env=...)``."""
        return {**os.environ, **self.env}

    def load_in_process(self) -> Any:
        """Point this process's pynvml at the stand-in and return the module.

        pynvml loads ``libnvidia-ml.so.1`` once into its module global ``nvmlLib`` (and caches
        function pointers), and LD_LIBRARY_PATH is only read at process start, so the library is
        handed over as a ``ctypes.CDLL`` before ``nvmlInit``. Sets ``MLOBS_FAKE_NVML_CONFIG`` in
        ``os.environ`` (the library reads it with getenv). :meth:`unload_in_process` undoes it.
        """
        pynvml: Any = importlib.import_module("pynvml")
        os.environ[CONFIG_ENV] = str(self.config_path)
        with pynvml.libLoadLock:
            pynvml.nvmlLib = ctypes.CDLL(str(self.library))
            pynvml._nvmlGetFunctionPointer_cache.clear()
        self._pynvml = pynvml
        return pynvml

    def gpm_samples_in_use(self) -> int:
        """GPM samples allocated and not yet freed in this process (the library's own counter,
        ``fakeNvmlGpmSamplesInUse``); for leak checks after :meth:`load_in_process`."""
        counter = ctypes.CDLL(str(self.library)).fakeNvmlGpmSamplesInUse
        counter.restype = ctypes.c_uint
        counter.argtypes = []
        return int(counter())

    def unload_in_process(self) -> None:
        """Shut pynvml down (all outstanding nvmlInit calls) and forget the stand-in."""
        pynvml: Any = self._pynvml
        if pynvml is None:
            return
        self._pynvml = None
        while pynvml._nvmlLib_refcount > 0:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                break
        with pynvml.libLoadLock:
            pynvml.nvmlLib = None
            pynvml._nvmlLib_refcount = 0
            pynvml._nvmlGetFunctionPointer_cache.clear()
        if os.environ.get(CONFIG_ENV) == str(self.config_path):
            del os.environ[CONFIG_ENV]
