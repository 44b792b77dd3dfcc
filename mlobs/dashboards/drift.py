"""Drift and model quality: per-feature drift over time, share drifted, prediction drift, KPIs.

Over the points of :mod:`mlobs.drift.names` and :func:`mlobs.quality.log_quality`, recorded with
``mlobs.log_labeled``: on Prometheus ``mlobs_drift_score{monitor, feature, test}``, ...; in
InfluxDB fields of ``mlobs_metrics`` with those labels as tags. Both builds share the panels;
each query is written once per language.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlobs.dashboards import board, panels
from mlobs.dashboards import grafana as g

DRIFT_PROM = 'monitor=~"$monitor", run_id=~"$run_id"'
QUALITY_PROM = 'run_id=~"$run_id"'
DRIFT_INFLUX = '"monitor" =~ /^$monitor$/ AND "run_id" =~ /^$run_id$/'
QUALITY_INFLUX = '"run_id" =~ /^$run_id$/'
NO_DRIFT, DRIFTED = ("no drift", "green"), ("drifted", "red")
"""Text and colour of a drift verdict's 0 and 1."""


@dataclass(frozen=True)
class Query:
    """One query of a panel in both languages: PromQL with its legend, InfluxQL with its alias."""

    promql: str
    legend: str
    influxql: str
    alias: str

    def target(self, kind: str) -> object:
        if kind == g.PROMETHEUS:
            return g.prom(self.promql, self.legend)
        return g.influxql(self.influxql, self.alias)


def _series(field: str, by: tuple[str, ...], where: str, agg: str = "last") -> str:
    """InfluxQL: ``agg(field)`` per interval, grouped by the tags ``by``."""
    tags = ", ".join(f'"{t}"' for t in by)
    return (
        f'SELECT {agg}("{field}") FROM "mlobs_metrics" WHERE {where} AND $timeFilter '
        f"GROUP BY time($__interval), {tags} fill(none)"
    )


def drift(
    name: str, by: tuple[str, ...], legend: str, *, agg: str = "max", influx_agg: str = "max"
) -> Query:
    """A drift series (``drift_<name>``) per ``by`` labels, both languages; per-feature series
    follow the ``feature`` variable too."""
    labels = ", ".join(by)
    metric = f"mlobs_drift_{name}"
    prom_filter, influx_filter = DRIFT_PROM, DRIFT_INFLUX
    if "feature" in by:  # series of the whole dataset have no feature to filter on
        prom_filter += ', feature=~"$feature"'
        influx_filter += ' AND "feature" =~ /^$feature$/'
    return Query(
        f"{agg} by ({labels}) ({metric}{{{prom_filter}}})",
        legend,
        _series(f"drift_{name}", by, influx_filter, influx_agg),
        legend.replace("{{", "$tag_").replace("}}", ""),
    )


def quality(name: str, legend: str, by: tuple[str, ...] = ("split",)) -> Query:
    """A quality KPI (``quality_<name>``) per ``by`` labels, both languages."""
    labels = ", ".join(("run_name", "run_id", *by))
    return Query(
        f"max by ({labels}) (mlobs_quality_{name}{{{QUALITY_PROM}}})",
        legend,
        _series(f"quality_{name}", ("run_name", "run_id", *by), QUALITY_INFLUX),
        legend.replace("{{", "$tag_").replace("}}", ""),
    )


def build(kind: str, uid: str) -> g.Json:
    """The drift and model-quality dashboard for ``kind`` (``prometheus`` or ``influxdb``)."""

    def targets(*queries: Query) -> list[object]:
        return [q.target(kind) for q in queries]

    drift_section = board.Section(
        "Data drift",
        [
            panels.heatmap(
                "Drift score per feature",
                targets(drift("score", ("feature",), "{{feature}}")),
                description="Effect size of each feature's drift test per window (normalised "
                "Wasserstein, PSI, Jensen-Shannon distance, ...: the monitor's choice per "
                "column); darker is further from the reference.",
            ),
            panels.timeseries(
                "Share of features drifted",
                targets(drift("share_drifted", ("monitor",), "{{monitor}}")),
                description="Share of the monitored features that drifted in each window.",
                unit="percentunit",
                min_value=0,
                max_value=1,
                points="always",
                width=8,
            ),
            panels.flag_timeline(
                "Dataset drift",
                targets(drift("dataset_detected", ("monitor",), "{{monitor}}")),
                description="Whether the share drifted passed the monitor's dataset threshold.",
                zero=NO_DRIFT,
                one=DRIFTED,
                width=8,
            ),
            panels.flag_timeline(
                "Features drifted",
                targets(drift("detected", ("feature",), "{{feature}}")),
                description="Each feature's verdict per window.",
                zero=NO_DRIFT,
                one=DRIFTED,
                width=8,
            ),
            panels.timeseries(
                "Drift test p-values",
                targets(
                    drift(
                        "p_value",
                        ("feature", "test"),
                        "{{feature}} {{test}}",
                        agg="min",
                        influx_agg="min",
                    )
                ),
                description="p-value of each feature's test, where the test has one (log "
                "scale; small means the window differs from the reference).",
                unit="none",
                log_scale=True,
                points="always",
                legend_calcs=("lastNotNull", "min"),
            ),
            panels.timeseries(
                "Prediction drift",
                targets(drift("prediction_score", ("monitor", "test"), "{{monitor}} {{test}}")),
                description="Drift of the model's output distribution against the reference "
                "predictions (the monitor's prediction test).",
                points="always",
            ),
        ],
    )
    kpis = [
        ("Accuracy", "accuracy", "percentunit"),
        ("F1 (macro)", "f1_macro", "percentunit"),
        ("ROC AUC", "roc_auc", "none"),
        ("Calibration error (ECE)", "ece", "none"),
    ]
    quality_section = board.Section(
        "Model quality",
        [
            *(
                panels.stat(
                    title,
                    targets(quality(name, "{{run_name}} {{split}}")),
                    description=f"Last {title} recorded with log_quality, per run and split.",
                    unit=unit,
                    decimals=3,
                )
                for title, name, unit in kpis
            ),
            panels.timeseries(
                "Classification KPIs",
                targets(
                    quality("accuracy", "accuracy {{run_name}} {{split}}"),
                    quality("f1_macro", "F1 macro {{run_name}} {{split}}"),
                    quality("precision_macro", "precision macro {{run_name}} {{split}}"),
                    quality("recall_macro", "recall macro {{run_name}} {{split}}"),
                    quality("roc_auc", "ROC AUC {{run_name}} {{split}}"),
                ),
                description="Classification KPIs per evaluation (log_quality; LateLabels "
                "windows as they close).",
                unit="percentunit",
                points="always",
                min_value=0,
                max_value=1,
            ),
            panels.bargauge(
                "F1 per class",
                targets(quality("f1", "{{class}} {{split}}", ("split", "class"))),
                description="Last F1 of each class: a class the model fails on shows here "
                "before it moves the macro average.",
                unit="percentunit",
                max_value=1,
                steps=(("red", None), ("yellow", 0.5), ("green", 0.8)),
            ),
            panels.timeseries(
                "Regression errors",
                targets(
                    quality("mae", "MAE {{run_name}} {{split}}"),
                    quality("rmse", "RMSE {{run_name}} {{split}}"),
                ),
                description="Mean absolute and root-mean-square error per evaluation (in the "
                "target's unit).",
                points="always",
            ),
            panels.timeseries(
                "R²",
                targets(quality("r2", "{{run_name}} {{split}}")),
                description="Coefficient of determination per evaluation (1 is perfect; "
                "below 0 is worse than predicting the mean).",
                points="always",
            ),
        ],
    )
    monitor_var, feature_var, run_var = _variables(kind)
    suffix = "" if kind == g.PROMETHEUS else " (InfluxDB)"
    return board.dashboard_json(
        uid=uid,
        title="mlobs · Drift and model quality" + suffix,
        description="Data and prediction drift per monitor and feature, and model-quality KPIs "
        f"recorded with mlobs ({'Prometheus' if kind == g.PROMETHEUS else 'InfluxDB, InfluxQL'}).",
        tags=["mlobs", "drift", "quality", kind],
        variables=[board.datasource_variable(kind), monitor_var, feature_var, run_var],
        sections=[drift_section, quality_section],
        time_from="now-24h",
    )


def _variables(kind: str) -> tuple[g.Json, g.Json, g.Json]:
    make: Callable[..., g.Json] = board.query_variable
    if kind == g.PROMETHEUS:
        queries = (
            "label_values(mlobs_drift_share_drifted, monitor)",
            'label_values(mlobs_drift_score{monitor=~"$monitor"}, feature)',
            'label_values({__name__=~"mlobs_quality_samples|mlobs_drift_window_rows"}, run_id)',
        )
    else:
        show = 'SHOW TAG VALUES FROM "mlobs_metrics" WITH KEY = '
        queries = (
            show + '"monitor"',
            show + '"feature" WHERE "monitor" =~ /^$monitor$/',
            show + '"run_id"',
        )
    return (
        make("monitor", "Monitor", queries[0], kind),
        make("feature", "Feature", queries[1], kind),
        make(
            "run_id",
            "Run id",
            queries[2],
            kind,
            description="Runs that recorded drift or quality; All also shows monitors "
            "outside any run (a serving app's).",
        ),
    )
