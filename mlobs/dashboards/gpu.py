"""GPUs: utilization, memory, temperature, power, energy and cost per epoch, throttling, errors.

Over the ``mlobs_gpu_*`` series (:mod:`mlobs.gpu.names`) of runs and of ``mlobs gpu-exporter``.
The exporter's series carry no run labels; ``run_name=~".*"`` (All) matches them too.
"""

from __future__ import annotations

from mlobs.dashboards import board, panels
from mlobs.dashboards import grafana as g

GPU_FILTER = 'host=~"$host", gpu=~"$gpu", run_name=~"$run_name"'
LEGEND = "{{host}} GPU {{gpu}}"
"""Series are drawn per host and GPU index; a run's name is in the tooltip's labels."""


def _gpu(metric: str, extra: str = "") -> str:
    """A GPU series with the dashboard's filters, one line per device (runs sampling the same
    device, and the Pushgateway next to a scrape, would otherwise draw duplicates)."""
    matchers = f"{extra}, {GPU_FILTER}" if extra else GPU_FILTER
    return f"max by (host, gpu, uuid) ({metric}{{{matchers}}})"


def prometheus(uid: str) -> g.Json:
    """The GPU dashboard over Prometheus."""
    usage = board.Section(
        "Utilization and memory",
        [
            panels.timeseries(
                "GPU utilization",
                [g.prom(_gpu("mlobs_gpu_utilization_ratio"), LEGEND)],
                description="Share of time a kernel was running on the GPU (NVML).",
                unit="percentunit",
                min_value=0,
                max_value=1,
                legend_calcs=("mean", "max"),
            ),
            panels.timeseries(
                "Memory bandwidth utilization",
                [g.prom(_gpu("mlobs_gpu_memory_bandwidth_utilization_ratio"), LEGEND)],
                description="Share of time device memory was being read or written.",
                unit="percentunit",
                min_value=0,
                max_value=1,
                legend_calcs=("mean", "max"),
            ),
            panels.timeseries(
                "Memory used",
                [
                    g.prom(_gpu("mlobs_gpu_memory_used_bytes"), LEGEND + " used"),
                    g.prom(_gpu("mlobs_gpu_memory_total_bytes"), LEGEND + " total"),
                ],
                description="Device memory in use, and the device's size (dashed).",
                unit="bytes",
                min_value=0,
                overrides=[_dashed("/ total$/")],
            ),
            panels.timeseries(
                "Memory used (share)",
                [g.prom(_gpu("mlobs_gpu_memory_used_ratio"), LEGEND)],
                description="Share of device memory in use.",
                unit="percentunit",
                min_value=0,
                max_value=1,
                steps=(("green", None), ("yellow", 0.9), ("red", 0.97)),
                show_thresholds=True,
            ),
        ],
    )
    thermal = board.Section(
        "Temperature and power",
        [
            panels.timeseries(
                "Temperature",
                [
                    g.prom(
                        "max by (host, gpu, uuid, sensor) "
                        f"(mlobs_gpu_temperature_celsius{{{GPU_FILTER}}})",
                        LEGEND + " {{sensor}}",
                    )
                ],
                description="GPU die temperature, and memory temperature where the GPU has "
                "that sensor.",
                unit="celsius",
                steps=(("green", None), ("yellow", 80.0), ("red", 90.0)),
                show_thresholds=True,
            ),
            panels.timeseries(
                "Power",
                [
                    g.prom(_gpu("mlobs_gpu_power_watts"), LEGEND + " draw"),
                    g.prom(_gpu("mlobs_gpu_power_limit_watts"), LEGEND + " limit"),
                ],
                description="Power draw, and the enforced power limit (dashed).",
                unit="watt",
                min_value=0,
                overrides=[_dashed("/ limit$/")],
            ),
            panels.timeseries(
                "SM clock",
                [g.prom(_gpu("mlobs_gpu_clock_hertz", 'clock="sm"'), LEGEND)],
                description="Streaming-multiprocessor clock; it drops while the GPU throttles.",
                unit="hertz",
            ),
            panels.timeseries(
                "Active throttle reasons",
                [
                    g.prom(
                        "max by (host, gpu, uuid, reason) "
                        f"(mlobs_gpu_throttle_reason{{{GPU_FILTER}}}) == 1",
                        LEGEND + " {{reason}}",
                    )
                ],
                description="Clock throttle reasons while active (NVML clocks event reasons: "
                "gpu_idle, sw_power_cap, hw_slowdown, sw_thermal_slowdown, ...).",
                draw="points",
                points="always",
                legend_calcs=(),
                min_value=0,
                max_value=1,
            ),
        ],
    )
    energy_filter = 'run_name=~"$run_name"'
    energy = board.Section(
        "Energy per epoch",
        [
            panels.timeseries(
                "Energy per epoch",
                [
                    g.prom(
                        f"max by (run_name, run_id) (mlobs_epoch_energy_joules{{{energy_filter}}})",
                        "{{run_name}} ({{run_id}})",
                    )
                ],
                description="GPU energy of each epoch, summed over the run's GPUs (NVML's "
                "energy counter, or power integrated where a GPU has none).",
                unit="joule",
                points="always",
                width=8,
            ),
            panels.timeseries(
                "Energy cost per epoch",
                [
                    g.prom(
                        f"max by (run_name, run_id) (mlobs_epoch_energy_cost{{{energy_filter}}})",
                        "{{run_name}} ({{run_id}})",
                    )
                ],
                description="Energy of each epoch times MLOBS_ENERGY_PRICE_PER_KWH (in that "
                "price's currency).",
                points="always",
                legend_calcs=("lastNotNull", "sum"),
                width=8,
            ),
            panels.timeseries(
                "Emissions per epoch",
                [
                    g.prom(
                        f"max by (run_name, run_id) (mlobs_epoch_co2e_grams{{{energy_filter}}})",
                        "{{run_name}} ({{run_id}})",
                    )
                ],
                description="Energy of each epoch times MLOBS_GRID_INTENSITY_G_PER_KWH, grams "
                "of CO2e.",
                unit="massg",
                points="always",
                legend_calcs=("lastNotNull", "sum"),
                width=8,
            ),
        ],
    )
    errors = board.Section(
        "Health and errors",
        [
            panels.flag_timeline(
                "GPU state",
                [g.prom(_gpu("mlobs_gpu_status", 'state="ok"'), LEGEND)],
                description="ok while NVML answers for the GPU; failed after it fell off the "
                "bus (NVML_ERROR_GPU_IS_LOST) until it answers again.",
                zero=("failed", "red"),
                one=("ok", "green"),
                width=8,
            ),
            panels.timeseries(
                "ECC errors",
                [
                    g.prom(
                        "max by (host, gpu, uuid, type) "
                        f'(mlobs_gpu_ecc_errors_total{{counter="volatile", {GPU_FILTER}}})',
                        LEGEND + " {{type}}",
                    )
                ],
                description="ECC errors since the driver was loaded (volatile counters), "
                "corrected and uncorrected. Any uncorrected error calls for a look.",
                legend_calcs=("lastNotNull",),
                width=8,
            ),
            panels.timeseries(
                "XID errors",
                [
                    g.prom(
                        "max by (host, gpu, uuid, xid) "
                        f"(mlobs_gpu_xid_errors_total{{{GPU_FILTER}}})",
                        LEGEND + " XID {{xid}}",
                    )
                ],
                description="XID errors reported by the driver while sampled, by code "
                "(48: double-bit ECC, 79: fallen off the bus, ...).",
                draw="bars",
                fill=80,
                legend_calcs=("lastNotNull",),
                width=8,
            ),
        ],
    )
    return board.dashboard_json(
        uid=uid,
        title="mlobs · GPUs",
        description="NVML GPU telemetry from mlobs runs and mlobs gpu-exporter: utilization, "
        "memory, temperature, power, energy and cost per epoch, throttling, ECC and XID "
        "errors (Prometheus).",
        tags=["mlobs", "gpu", "prometheus"],
        variables=[
            board.datasource_variable(g.PROMETHEUS),
            board.query_variable(
                "host", "Host", "label_values(mlobs_gpu_utilization_ratio, host)", g.PROMETHEUS
            ),
            board.query_variable(
                "gpu",
                "GPU",
                'label_values(mlobs_gpu_utilization_ratio{host=~"$host"}, gpu)',
                g.PROMETHEUS,
            ),
            board.query_variable(
                "run_name",
                "Run",
                'label_values(mlobs_gpu_utilization_ratio{host=~"$host"}, run_name)',
                g.PROMETHEUS,
                description="All includes the GPU exporter's series, which belong to no run.",
            ),
        ],
        sections=[usage, thermal, energy, errors],
        time_from="now-3h",
    )


def _dashed(regex: str) -> g.Json:
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }
