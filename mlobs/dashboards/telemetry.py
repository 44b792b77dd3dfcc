"""Telemetry health: mlobs' own pipeline, from the self-metrics on a process's ``/metrics``.

Spool backlog and the age of the oldest unshipped record per sink, export failures and the
circuit breaker, records dropped and mlobs' internal errors. These series belong to a process
(``instance``), not to a run, and are not pushed to the Pushgateway: they need
``MLOBS_PROMETHEUS_PORT`` and a scrape.
"""

from __future__ import annotations

from mlobs.dashboards import board, panels
from mlobs.dashboards import grafana as g

FILTER = 'job=~"$job", instance=~"$instance"'
AGE_STEPS = (("green", None), ("yellow", 60.0), ("red", 600.0))


def _increase(metric: str, by: str, window: str = "$__rate_interval") -> str:
    return f"sum by ({by}) (increase({metric}{{{FILTER}}}[{window}]))"


def prometheus(uid: str) -> g.Json:
    """The telemetry-health dashboard over Prometheus."""
    overview = board.Section(
        "Overview",
        [
            panels.stat(
                "Records waiting",
                [g.prom(f"sum(mlobs_spool_backlog_records{{{FILTER}}})", "backlog")],
                description="Records in the spools not yet shipped, summed over sinks and "
                "processes.",
                steps=(("green", None), ("yellow", 10_000.0), ("red", 1_000_000.0)),
            ),
            panels.stat(
                "Open circuits",
                [g.prom(f"sum(mlobs_export_circuit_open{{{FILTER}}})", "open")],
                description="Sinks whose circuit breaker is open (3 failed exports in a row): "
                "their records wait in the spool.",
                steps=(("green", None), ("red", 1.0)),
                graph=False,
            ),
            panels.stat(
                "Records dropped in range",
                [
                    g.prom(
                        f"sum(increase(mlobs_records_dropped_total{{{FILTER}}}[$__range]))",
                        "dropped",
                    )
                ],
                description="Records lost before shipping (disk budget, full buffer) over the "
                "dashboard's time range.",
                steps=(("green", None), ("red", 1.0)),
                decimals=0,
                graph=False,
            ),
            panels.stat(
                "Internal errors in range",
                [
                    g.prom(
                        f"sum(increase(mlobs_internal_errors_total{{{FILTER}}}[$__range]))",
                        "errors",
                    )
                ],
                description="mlobs' own failures over the time range; none of them reached "
                "user code. No data: none since the processes started.",
                steps=(("green", None), ("red", 1.0)),
                decimals=0,
                graph=False,
                no_value="0",
            ),
        ],
    )
    shipping = board.Section(
        "Shipping",
        [
            panels.timeseries(
                "Spool backlog per sink",
                [
                    g.prom(
                        f"sum by (instance, sink) (mlobs_spool_backlog_records{{{FILTER}}})",
                        "{{instance}} {{sink}}",
                    )
                ],
                description="Records a sink has not shipped yet. A backlog that only grows "
                "means the backend is down or slower than the records come.",
            ),
            panels.timeseries(
                "Oldest unshipped record",
                [
                    g.prom(
                        "max by (instance, sink) "
                        f"(mlobs_spool_oldest_unshipped_age_seconds{{{FILTER}}})",
                        "{{instance}} {{sink}}",
                    )
                ],
                description="Age of the oldest record each sink still has to ship: how late "
                "its backend's view is. 0 when caught up.",
                unit="s",
                steps=AGE_STEPS,
                show_thresholds=True,
            ),
            panels.timeseries(
                "Export failures per sink",
                [
                    g.prom(
                        _increase("mlobs_export_failures_total", "instance, sink"),
                        "{{instance}} {{sink}}",
                    )
                ],
                description="Failed export attempts per interval; the batch is retried with "
                "backoff, nothing is lost while the spool has room.",
                draw="bars",
                fill=80,
                legend_calcs=("sum",),
                width=8,
            ),
            panels.flag_timeline(
                "Circuit breaker",
                [
                    g.prom(
                        f"max by (instance, sink) (mlobs_export_circuit_open{{{FILTER}}})",
                        "{{instance}} {{sink}}",
                    )
                ],
                description="open: the sink failed 3 times in a row; only its own thread "
                "probes the backend, flushes skip it.",
                zero=("closed", "green"),
                one=("open", "red"),
                width=8,
            ),
            panels.timeseries(
                "Records exported per sink",
                [
                    g.prom(
                        f"sum by (instance, sink) (rate(mlobs_records_exported_total{{{FILTER}}}"
                        "[$__rate_interval]))",
                        "{{instance}} {{sink}}",
                    )
                ],
                description="Records acknowledged by each backend per second.",
                unit="suffix: records/s",
                width=8,
            ),
        ],
    )
    losses = board.Section(
        "Losses and errors",
        [
            panels.timeseries(
                "Records dropped",
                [
                    g.prom(
                        _increase("mlobs_records_dropped_total", "instance, reason"),
                        "{{instance}} {{reason}}",
                    )
                ],
                description="Records removed before shipping per interval: disk_budget (the "
                "spool passed MLOBS_SPOOL_MAX_BYTES, oldest first), buffer_full (the spool "
                "could not be written and memory ran out), quality_unjoined (late labels).",
                draw="bars",
                fill=80,
                legend_calcs=("sum",),
            ),
            panels.timeseries(
                "Internal errors",
                [
                    g.prom(
                        _increase("mlobs_internal_errors_total", "instance, where"),
                        "{{instance}} {{where}}",
                    )
                ],
                description="mlobs' own failures per interval, by place (each is logged once a "
                "minute); none of them reached user code.",
                draw="bars",
                fill=80,
                legend_calcs=("sum",),
            ),
        ],
    )
    return board.dashboard_json(
        uid=uid,
        title="mlobs · Telemetry health",
        description="mlobs' own pipeline: spool backlog, export failures and circuit breakers "
        "per sink, dropped records and internal errors (Prometheus; needs the processes' "
        "/metrics scraped, MLOBS_PROMETHEUS_PORT).",
        tags=["mlobs", "telemetry", "prometheus"],
        variables=[
            board.datasource_variable(g.PROMETHEUS),
            board.query_variable(
                "job", "Job", "label_values(mlobs_spool_backlog_records, job)", g.PROMETHEUS
            ),
            board.query_variable(
                "instance",
                "Instance",
                'label_values(mlobs_spool_backlog_records{job=~"$job"}, instance)',
                g.PROMETHEUS,
            ),
        ],
        sections=[overview, shipping, losses],
        time_from="now-3h",
    )
