"""The ``mlobs doctor`` line about GPUs: what a run in this environment would sample."""

from __future__ import annotations

from mlobs.cli.checks import Check
from mlobs.config import Config


def gpu_check(config: Config) -> Check:
    """Never a failure: no GPU is a normal place to run; the line says what sampling would do."""
    if config.gpu == "off":
        return Check("gpu", True, "sampling off (MLOBS_GPU=off)")
    from mlobs.gpu.devices import discover
    from mlobs.gpu.nvml import Nvml, NvmlUnavailable

    try:
        nvml = Nvml()
        nvml.init()
    except NvmlUnavailable as exc:
        return Check("gpu", True, f"no NVML ({exc}): runs record no GPU metrics")
    try:
        devices = discover(nvml, config.gpu if config.gpu == "all" else "run")
    finally:
        nvml.shutdown()
    if not devices:
        return Check("gpu", True, f"driver {nvml.driver_version}: no GPU visible to this process")
    names = ", ".join(
        f"{d.index}: {d.model}" + (f" ({len(d.mig)} MIG)" if d.mig else "") for d in devices
    )
    return Check(
        "gpu",
        True,
        f"driver {nvml.driver_version}: runs sample {len(devices)} GPU(s) every "
        f"{config.gpu_interval:g} s: {names}",
    )
