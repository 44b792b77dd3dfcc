"""Training runs: user metrics by run, epochs, run status, step failures, heartbeat age.

Two builds of the same dashboard: PromQL over the series of the Prometheus sinks (``/metrics``
or the Pushgateway), and InfluxQL over the InfluxDB sink's measurements. Gauges are taken
``max without (instance, job)``, so one run reaching Prometheus by two paths (a scrape of
``/metrics`` and the Pushgateway) draws one line, not two.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlobs.dashboards import board, panels
from mlobs.dashboards import grafana as g
from mlobs.dashboards.names import influx_field, influxql_identifier, prometheus_names

RUN_FILTER = 'experiment=~"$experiment", run_name=~"$run_name", run_id=~"$run_id"'
"""Label matchers of the run variables (each is ``.*`` when All is selected)."""

STALL_STEPS = (("green", None), ("yellow", 120.0), ("red", 600.0))
"""Heartbeat age colours, seconds: a run silent for 10 minutes is probably stuck."""


def run_variables(kind: str, source: str) -> list[g.Json]:
    """``experiment``, ``run_name`` and ``run_id``, each narrowing the next.

    ``source`` is a Prometheus series or an InfluxDB measurement that carries all three.
    """
    if kind == g.PROMETHEUS:
        queries = (
            f"label_values({source}, experiment)",
            f'label_values({source}{{experiment=~"$experiment"}}, run_name)',
            f'label_values({source}{{experiment=~"$experiment", run_name=~"$run_name"}}, run_id)',
        )
    else:
        show = f'SHOW TAG VALUES FROM "{source}" WITH KEY = '
        queries = (
            show + '"experiment"',
            show + '"run_name" WHERE "experiment" =~ /^$experiment$/',
            show + '"run_id" WHERE "experiment" =~ /^$experiment$/ AND "run_name" =~ /^$run_name$/',
        )
    return [
        board.query_variable("experiment", "Experiment", queries[0], kind),
        board.query_variable("run_name", "Run", queries[1], kind),
        board.query_variable(
            "run_id",
            "Run id",
            queries[2],
            kind,
            description="Runs of the same name are told apart by their id.",
        ),
    ]


def metric_variable(texts: Sequence[str], values: Sequence[str]) -> g.Json:
    return board.custom_variable(
        "metric",
        "Metric",
        list(zip(texts, values, strict=True)),
        "Metrics logged with mlobs.log; one panel each (mlobs dashboards generate --metric NAME).",
    )


def _epochs_section(*, metric: object, duration: object, throughput: object) -> board.Section:
    """Metrics per epoch, from one target each: ``metric`` repeats per selected metric."""
    return board.Section(
        "Metrics per epoch",
        [
            panels.timeseries(
                "${metric:text}",
                [metric],
                description="The last value logged in each epoch, by run and split "
                "(one panel per selected metric).",
                points="always",
                repeat="metric",
            ),
            panels.timeseries(
                "Epoch duration",
                [duration],
                description="Wall time of each epoch (mlobs.epoch).",
                unit="s",
                points="always",
            ),
            panels.timeseries(
                "Throughput",
                [throughput],
                description="Samples per second of each epoch (mlobs.epoch(samples=...)).",
                unit="suffix: samples/s",
                points="always",
            ),
        ],
    )


# -- Prometheus ----------------------------------------------------------------------------------


def prometheus(metrics: Sequence[str], uid: str) -> g.Json:
    """The training dashboard over Prometheus, with a panel per metric in ``metrics``."""
    families = prometheus_names(metrics)
    runs = _prom_runs_section()
    epochs = _epochs_section(
        metric=g.prom(
            f'max without (instance, job) ({{__name__="${{metric:raw}}", {RUN_FILTER}}})',
            "{{run_name}} {{split}} ({{run_id}})",
        ),
        duration=g.prom(
            f"max without (instance, job) (mlobs_epoch_duration_seconds{{{RUN_FILTER}}})",
            "{{run_name}} ({{run_id}})",
        ),
        throughput=g.prom(
            f"max without (instance, job) (mlobs_epoch_samples_per_second{{{RUN_FILTER}}})",
            "{{run_name}} ({{run_id}})",
        ),
    )
    health = board.Section(
        "Run health",
        [
            panels.timeseries(
                "Heartbeat age",
                [
                    g.prom(
                        "time() - max by (run_name, run_id) "
                        f"(mlobs_run_last_progress_timestamp_seconds{{{RUN_FILTER}}})",
                        "{{run_name}} ({{run_id}})",
                    )
                ],
                description="Seconds since each run last made progress (a value, an epoch or "
                "step end, a heartbeat). A running run whose line keeps rising has stalled; a "
                "finished run's line rises by definition.",
                unit="s",
                steps=STALL_STEPS,
                show_thresholds=True,
                legend_calcs=("lastNotNull",),
            ),
            panels.timeseries(
                "Failed step executions",
                [
                    g.prom(
                        "sum by (run_name, run_id, step) (max without (instance, job) "
                        f'(mlobs_step_executions_total{{status!="ok", {RUN_FILTER}}}))',
                        "{{run_name}} {{step}} ({{run_id}})",
                    )
                ],
                description="Failed executions of each pipeline step in the run so far "
                "(mlobs.step; retried attempts count).",
                draw="bars",
                fill=80,
                legend_calcs=("lastNotNull",),
                steps=(("green", None), ("red", 1.0)),
            ),
            panels.timeseries(
                "Warnings and errors logged",
                [
                    g.prom(
                        "sum by (run_name, run_id, level) (max without (instance, job) "
                        '(mlobs_log_records_total{level=~"warning|error|critical", '
                        f"{RUN_FILTER}}}))",
                        "{{run_name}} {{level}} ({{run_id}})",
                    )
                ],
                description="Log records at WARNING and above captured in each run so far.",
                legend_calcs=("lastNotNull",),
            ),
            panels.timeseries(
                "Epoch and step",
                [
                    g.prom(
                        f"max by (run_name, run_id) (mlobs_run_epoch{{{RUN_FILTER}}})",
                        "epoch {{run_name}} ({{run_id}})",
                    ),
                    g.prom(
                        f"max by (run_name, run_id) (mlobs_run_step{{{RUN_FILTER}}})",
                        "step {{run_name}} ({{run_id}})",
                    ),
                ],
                description="Each run's last epoch number and global step.",
                legend_calcs=("lastNotNull",),
                overrides=[_right_axis("/^step /")],
            ),
        ],
    )
    return board.dashboard_json(
        uid=uid,
        title="mlobs · Training runs",
        description="Training runs recorded with mlobs: metrics per epoch, epoch duration and "
        "throughput, run status, step failures and heartbeat age (Prometheus).",
        tags=["mlobs", "training", "prometheus"],
        variables=[
            board.datasource_variable(g.PROMETHEUS),
            *run_variables(g.PROMETHEUS, "mlobs_run_info"),
            metric_variable(metrics, families),
        ],
        sections=[runs, epochs, health],
    )


def _prom_runs_section() -> board.Section:
    by_run = "run_name, run_id"
    return board.Section(
        "Runs",
        [
            panels.table(
                "Runs",
                [
                    g.prom(
                        f"max by (experiment, {by_run}, status) "
                        f"(mlobs_run_status{{{RUN_FILTER}}} == 1)",
                        instant=True,
                        table=True,
                    ),
                    g.prom(
                        f"max by ({by_run}) (mlobs_run_epoch{{{RUN_FILTER}}})",
                        instant=True,
                        table=True,
                    ),
                    g.prom(
                        f"max by ({by_run}) (mlobs_run_step{{{RUN_FILTER}}})",
                        instant=True,
                        table=True,
                    ),
                    g.prom(
                        f"time() - max by ({by_run}) "
                        f"(mlobs_run_last_progress_timestamp_seconds{{{RUN_FILTER}}})",
                        instant=True,
                        table=True,
                    ),
                ],
                description="Each run's status (running, finished, failed), last epoch and "
                "step, and the seconds since it last made progress.",
                transformations=[
                    {"id": "merge", "options": {}},
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True, "Value #A": True},
                            "indexByName": {
                                "experiment": 0,
                                "run_name": 1,
                                "run_id": 2,
                                "status": 3,
                                "Value #B": 4,
                                "Value #C": 5,
                                "Value #D": 6,
                            },
                            "renameByName": {
                                "experiment": "Experiment",
                                "run_name": "Run",
                                "run_id": "Run id",
                                "status": "Status",
                                "Value #B": "Epoch",
                                "Value #C": "Step",
                                "Value #D": "Heartbeat age",
                            },
                        },
                    },
                ],
                overrides=[
                    {
                        "matcher": {"id": "byName", "options": "Heartbeat age"},
                        "properties": [
                            {"id": "unit", "value": "s"},
                            {"id": "thresholds", "value": g.thresholds(*STALL_STEPS)},
                            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        ],
                    },
                    _status_override(),
                ],
                height=7,
                sort_by="Run",
            ),
        ],
    )


def _status_override() -> g.Json:
    """The Runs tables' override colouring the Status column by value."""
    colours = {
        "type": "value",
        "options": {
            "running": {"color": "blue", "index": 0},
            "finished": {"color": "green", "index": 1},
            "failed": {"color": "red", "index": 2},
        },
    }
    return {
        "matcher": {"id": "byName", "options": "Status"},
        "properties": [
            {"id": "mappings", "value": [colours]},
            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
        ],
    }


def _right_axis(regex: str) -> g.Json:
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [{"id": "custom.axisPlacement", "value": "right"}],
    }


# -- InfluxDB ------------------------------------------------------------------------------------

INFLUX_RUN_FILTER = (
    '"experiment" =~ /^$experiment$/ AND "run_name" =~ /^$run_name$/ AND "run_id" =~ /^$run_id$/'
)


def _influx_series(field: str, *, group: str = '"run_name", "run_id"') -> str:
    return (
        f'SELECT last({field}) FROM "mlobs_metrics" WHERE {INFLUX_RUN_FILTER} AND $timeFilter '
        f"GROUP BY time($__interval), {group} fill(none)"
    )


def influxdb(metrics: Sequence[str], uid: str) -> g.Json:
    """The training dashboard over InfluxDB (InfluxQL), with a panel per metric in ``metrics``."""
    values = [influxql_identifier(influx_field(m)) for m in metrics]
    run_only = 'WHERE "run_id" =~ /^$run_id$/'
    runs = board.Section(
        "Runs",
        [
            panels.table(
                "Runs",
                [
                    g.influxql(
                        'SELECT last("status") AS "status", last("duration_seconds") AS '
                        '"duration", last("error") AS "error" FROM "mlobs_runs" WHERE '
                        f'{INFLUX_RUN_FILTER} GROUP BY "experiment", "run_name", "run_id"',
                        table=True,
                    ),
                ],
                description="Each run's last status (running, finished, failed), duration "
                "once ended and error; the whole history, not only the time range.",
                transformations=[
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True},
                            "renameByName": {
                                "experiment": "Experiment",
                                "run_name": "Run",
                                "run_id": "Run id",
                                "status": "Status",
                                "duration": "Duration",
                                "error": "Error",
                            },
                        },
                    }
                ],
                overrides=[
                    {
                        "matcher": {"id": "byName", "options": "Duration"},
                        "properties": [{"id": "unit", "value": "s"}],
                    },
                    _status_override(),
                ],
                height=7,
                sort_by="Run",
            ),
        ],
    )
    epochs = _epochs_section(
        metric=g.influxql(
            _influx_series("${metric:raw}", group='"run_name", "run_id", "split"'),
            "$tag_run_name $tag_split ($tag_run_id)",
        ),
        duration=g.influxql(
            _influx_series('"epoch_duration_seconds"'), "$tag_run_name ($tag_run_id)"
        ),
        throughput=g.influxql(
            _influx_series('"epoch_samples_per_second"'), "$tag_run_name ($tag_run_id)"
        ),
    )
    health = board.Section(
        "Run health",
        [
            panels.table(
                "Last progress",
                [
                    g.influxql(
                        'SELECT last("value") * 1000 AS "last_progress" FROM "mlobs_events" '
                        f'{run_only} AND "event" = \'heartbeat\' GROUP BY "run_id"',
                        table=True,
                    )
                ],
                description="When each run last made progress, from its heartbeat events "
                "(written every MLOBS_HEARTBEAT_INTERVAL while it progresses, and at its end).",
                transformations=[
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True},
                            "renameByName": {"run_id": "Run id", "last_progress": "Last progress"},
                        },
                    }
                ],
                overrides=[
                    {
                        "matcher": {"id": "byName", "options": "Last progress"},
                        "properties": [{"id": "unit", "value": "dateTimeFromNow"}],
                    }
                ],
                width=8,
            ),
            panels.timeseries(
                "Failed step executions",
                [
                    g.influxql(
                        'SELECT count("duration_seconds") FROM "mlobs_spans" '
                        f"{run_only} AND \"span_kind\" = 'step' AND \"status\" <> 'ok' "
                        'AND $timeFilter GROUP BY time($__interval), "span", "run_id" fill(none)',
                        "$tag_span ($tag_run_id)",
                    )
                ],
                description="Failed executions of each pipeline step (mlobs.step; retried "
                "attempts count), per interval.",
                draw="bars",
                fill=80,
                legend_calcs=("sum",),
                width=8,
            ),
            panels.timeseries(
                "Warnings and errors logged",
                [
                    g.influxql(
                        'SELECT count("message") FROM "mlobs_logs" '
                        f'{run_only} AND "level" =~ /^(WARNING|ERROR|CRITICAL)$/ AND $timeFilter '
                        'GROUP BY time($__interval), "level", "run_id" fill(none)',
                        "$tag_level ($tag_run_id)",
                    )
                ],
                description="Log records at WARNING and above, per interval.",
                draw="bars",
                fill=80,
                legend_calcs=("sum",),
                width=8,
            ),
        ],
    )
    return board.dashboard_json(
        uid=uid,
        title="mlobs · Training runs (InfluxDB)",
        description="Training runs recorded with mlobs: metrics per epoch, epoch duration and "
        "throughput, run status, step failures and last progress (InfluxDB, InfluxQL).",
        tags=["mlobs", "training", "influxdb"],
        variables=[
            board.datasource_variable(g.INFLUXDB),
            *run_variables(g.INFLUXDB, "mlobs_metrics"),
            metric_variable(metrics, values),
        ],
        sections=[runs, epochs, health],
    )
