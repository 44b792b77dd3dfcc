"""The GPU metrics mlobs records, and their names on each backend.

A GPU record is named by its Prometheus family (``mlobs_gpu_...``, base units) so the spool, the
JSON-lines sink, InfluxDB and ``mlobs show`` all read the same name. The ``/metrics`` and
Pushgateway sinks use that name as it is; the OTLP sink renames it to the OpenTelemetry hardware
semantic conventions (``hw.gpu.*``, ``hw.power``, ``hw.energy``, ...) with ``hw.*`` attributes, and
names the series the conventions do not cover ``mlobs.gpu.*``. Recording rules in
``alerting/gpu-dcgm-compat.rules.yml`` give the dcgm-exporter names on top.

Every GPU record carries the attributes ``gpu`` (index), ``uuid``, ``model``, ``host`` and
``driver_version``, plus ``scope="system"``; the rows below add their own (``clock``, ``reason``,
...). MIG records carry the parent's and add ``mig_uuid``, ``mig_profile`` and ``gpu_instance``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GAUGE = "gauge"
COUNTER = "counter"


@dataclass(frozen=True)
class GpuMetric:
    """One GPU series: its record / Prometheus name and its OpenTelemetry rendering."""

    name: str
    """The record name and the Prometheus family (counters end in ``_total``)."""
    kind: str
    """``gauge`` or ``counter`` (recorded as increments; the total is NVML's own counter)."""
    help: str
    otel_name: str
    otel_unit: str
    otel_attrs: dict[str, str] = field(default_factory=dict)
    """Fixed OpenTelemetry attributes of the series (``hw.gpu.task``, ...)."""
    otel_rename: dict[str, str] = field(default_factory=dict)
    """mlobs attribute name -> OpenTelemetry attribute name, for this series' own attributes."""
    otel_values: dict[str, dict[str, str]] = field(default_factory=dict)
    """Attribute values renamed for OpenTelemetry (``direction``: ``tx`` -> ``transmit``)."""


UTILIZATION = "mlobs_gpu_utilization_ratio"
ENCODER_UTILIZATION = "mlobs_gpu_encoder_utilization_ratio"
DECODER_UTILIZATION = "mlobs_gpu_decoder_utilization_ratio"
MEMORY_ACTIVITY = "mlobs_gpu_memory_bandwidth_utilization_ratio"
MEMORY_USED = "mlobs_gpu_memory_used_bytes"
MEMORY_FREE = "mlobs_gpu_memory_free_bytes"
MEMORY_TOTAL = "mlobs_gpu_memory_total_bytes"
MEMORY_RESERVED = "mlobs_gpu_memory_reserved_bytes"
MEMORY_USED_RATIO = "mlobs_gpu_memory_used_ratio"
TEMPERATURE = "mlobs_gpu_temperature_celsius"
POWER = "mlobs_gpu_power_watts"
POWER_LIMIT = "mlobs_gpu_power_limit_watts"
ENERGY = "mlobs_gpu_energy_joules_total"
CLOCK = "mlobs_gpu_clock_hertz"
CLOCK_MAX = "mlobs_gpu_clock_max_hertz"
FAN = "mlobs_gpu_fan_speed_ratio"
PCIE_IO = "mlobs_gpu_pcie_io_bytes_total"
PCIE_REPLAYS = "mlobs_gpu_pcie_replays_total"
ECC_ERRORS = "mlobs_gpu_ecc_errors_total"
REMAPPED_ROWS = "mlobs_gpu_remapped_rows"
REMAP_PENDING = "mlobs_gpu_row_remap_pending"
REMAP_FAILED = "mlobs_gpu_row_remap_failed"
THROTTLE = "mlobs_gpu_throttle_reason"
PSTATE = "mlobs_gpu_performance_state"
XID_ERRORS = "mlobs_gpu_xid_errors_total"
PROCESS_MEMORY = "mlobs_gpu_process_memory_used_bytes"
STATUS = "mlobs_gpu_status"
MIG_MEMORY_USED = "mlobs_gpu_mig_memory_used_bytes"
MIG_MEMORY_TOTAL = "mlobs_gpu_mig_memory_total_bytes"
MIG_UTILIZATION = "mlobs_gpu_mig_utilization_ratio"

_DIRECTION = {"direction": {"tx": "transmit", "rx": "receive"}}

METRICS: dict[str, GpuMetric] = {
    m.name: m
    for m in (
        GpuMetric(
            UTILIZATION,
            GAUGE,
            "Share of time a kernel was running.",
            "hw.gpu.utilization",
            "1",
            {"hw.gpu.task": "general"},
        ),
        GpuMetric(
            ENCODER_UTILIZATION,
            GAUGE,
            "Video encoder utilization.",
            "hw.gpu.utilization",
            "1",
            {"hw.gpu.task": "encoder"},
        ),
        GpuMetric(
            DECODER_UTILIZATION,
            GAUGE,
            "Video decoder utilization.",
            "hw.gpu.utilization",
            "1",
            {"hw.gpu.task": "decoder"},
        ),
        GpuMetric(
            MEMORY_ACTIVITY,
            GAUGE,
            "Share of time device memory was read or written.",
            "mlobs.gpu.memory.bandwidth.utilization",
            "1",
        ),
        GpuMetric(MEMORY_USED, GAUGE, "Device memory in use.", "hw.gpu.memory.usage", "By"),
        GpuMetric(MEMORY_FREE, GAUGE, "Device memory free.", "mlobs.gpu.memory.free", "By"),
        GpuMetric(MEMORY_TOTAL, GAUGE, "Device memory size.", "hw.gpu.memory.limit", "By"),
        GpuMetric(
            MEMORY_RESERVED,
            GAUGE,
            "Device memory reserved by the driver.",
            "mlobs.gpu.memory.reserved",
            "By",
        ),
        GpuMetric(
            MEMORY_USED_RATIO,
            GAUGE,
            "Share of device memory in use.",
            "hw.gpu.memory.utilization",
            "1",
        ),
        GpuMetric(
            TEMPERATURE,
            GAUGE,
            "Temperature by sensor (gpu, memory).",
            "hw.temperature",
            "Cel",
            otel_rename={"sensor": "mlobs.gpu.sensor"},
        ),
        GpuMetric(POWER, GAUGE, "Power draw.", "hw.power", "W"),
        GpuMetric(POWER_LIMIT, GAUGE, "Enforced power limit.", "mlobs.gpu.power.limit", "W"),
        GpuMetric(ENERGY, COUNTER, "Energy used since the driver was loaded.", "hw.energy", "J"),
        GpuMetric(
            CLOCK,
            GAUGE,
            "Current clock by domain (sm, memory, graphics, video).",
            "mlobs.gpu.clock",
            "Hz",
            otel_rename={"clock": "mlobs.gpu.clock.domain"},
        ),
        GpuMetric(
            CLOCK_MAX,
            GAUGE,
            "Maximum clock by domain.",
            "mlobs.gpu.clock.max",
            "Hz",
            otel_rename={"clock": "mlobs.gpu.clock.domain"},
        ),
        GpuMetric(FAN, GAUGE, "Fan speed as a share of its maximum.", "mlobs.gpu.fan.speed", "1"),
        GpuMetric(
            PCIE_IO,
            COUNTER,
            "PCIe bytes by direction, integrated from NVML's throughput.",
            "hw.gpu.io",
            "By",
            otel_rename={"direction": "network.io.direction"},
            otel_values=_DIRECTION,
        ),
        GpuMetric(
            PCIE_REPLAYS,
            COUNTER,
            "PCIe replays since the driver was loaded.",
            "mlobs.gpu.pcie.replays",
            "{replay}",
        ),
        GpuMetric(
            ECC_ERRORS,
            COUNTER,
            "ECC errors by type (corrected, uncorrected) and counter (volatile, aggregate).",
            "hw.errors",
            "{error}",
            otel_rename={"type": "error.type", "counter": "mlobs.gpu.ecc.counter"},
        ),
        GpuMetric(
            REMAPPED_ROWS,
            GAUGE,
            "Memory rows remapped, by cause (correctable, uncorrectable).",
            "mlobs.gpu.memory.remapped_rows",
            "{row}",
            otel_rename={"cause": "mlobs.gpu.remap.cause"},
        ),
        GpuMetric(
            REMAP_PENDING,
            GAUGE,
            "1 while a row remapping waits for a GPU reset.",
            "mlobs.gpu.memory.remap.pending",
            "1",
        ),
        GpuMetric(
            REMAP_FAILED,
            GAUGE,
            "1 after a row remapping failed.",
            "mlobs.gpu.memory.remap.failed",
            "1",
        ),
        GpuMetric(
            THROTTLE,
            GAUGE,
            "1 while this clock throttle reason is active, else 0.",
            "mlobs.gpu.throttle",
            "1",
            otel_rename={"reason": "mlobs.gpu.throttle.reason"},
        ),
        GpuMetric(
            PSTATE,
            GAUGE,
            "Performance state (0 is the fastest, 15 the slowest).",
            "mlobs.gpu.performance_state",
            "1",
        ),
        GpuMetric(
            XID_ERRORS,
            COUNTER,
            "XID errors reported by the driver, by code.",
            "hw.errors",
            "{error}",
            otel_attrs={"error.type": "xid"},
            otel_rename={"xid": "mlobs.gpu.xid"},
        ),
        GpuMetric(
            PROCESS_MEMORY,
            GAUGE,
            "Device memory per process; this_run is true for this process and its children.",
            "mlobs.gpu.process.memory.usage",
            "By",
            otel_rename={"pid": "process.pid", "this_run": "mlobs.gpu.process.this_run"},
        ),
        GpuMetric(
            STATUS,
            GAUGE,
            "1 for the GPU's current state (ok, failed), 0 for the others.",
            "hw.status",
            "1",
            otel_rename={"state": "hw.state"},
        ),
        GpuMetric(MIG_MEMORY_USED, GAUGE, "MIG device memory in use.", "hw.gpu.memory.usage", "By"),
        GpuMetric(MIG_MEMORY_TOTAL, GAUGE, "MIG device memory size.", "hw.gpu.memory.limit", "By"),
        GpuMetric(
            MIG_UTILIZATION,
            GAUGE,
            "MIG device graphics-engine activity (GPM, Hopper and later).",
            "hw.gpu.utilization",
            "1",
            {"hw.gpu.task": "general"},
        ),
    )
}
"""Every GPU series by its record name."""

DEVICE_ATTRS = ("gpu", "uuid", "model", "host", "driver_version")
"""Attributes on every GPU record."""

OTEL_DEVICE_ATTRS = {
    "uuid": "hw.id",
    "model": "hw.model",
    "driver_version": "hw.driver_version",
    "gpu": "mlobs.gpu.index",
    "host": "host.name",
    "mig_uuid": "hw.id",
    "mig_profile": "hw.name",
    "gpu_instance": "mlobs.gpu.instance",
}
"""Device attributes renamed for OpenTelemetry (a MIG record's ``hw.id`` is its MIG UUID and its
``hw.parent`` the GPU's UUID)."""

THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
"""NVML's clock throttle ("clocks event") reason bits, as ``reason`` label values."""

EPOCH_ENERGY = "epoch_energy_joules"
EPOCH_ENERGY_KWH = "epoch_energy_kwh"
EPOCH_COST = "epoch_energy_cost"
EPOCH_CO2 = "epoch_co2e_grams"
RUN_ENERGY = "run_energy_joules"
RUN_ENERGY_KWH = "run_energy_kwh"
RUN_COST = "run_energy_cost"
RUN_CO2 = "run_co2e_grams"
XID_EVENT = "gpu.xid"
LOST_EVENT = "gpu.lost"


def otel_attributes(name: str, attrs: dict[str, object]) -> dict[str, object]:
    """The OpenTelemetry attributes of a GPU record named ``name`` with mlobs ``attrs``."""
    metric = METRICS[name]
    out: dict[str, object] = {"hw.type": "gpu", "hw.vendor": "NVIDIA", **metric.otel_attrs}
    mig = "mig_uuid" in attrs
    if not mig and "gpu" in attrs:
        out["hw.name"] = f"gpu{attrs['gpu']}"
    for key, value in attrs.items():
        if key == "scope":
            continue
        if key in metric.otel_rename:
            out[metric.otel_rename[key]] = metric.otel_values.get(key, {}).get(str(value), value)
        elif key == "uuid" and mig:
            out["hw.parent"] = value
        else:
            out[OTEL_DEVICE_ATTRS.get(key, "mlobs.gpu." + key)] = value
    return out
