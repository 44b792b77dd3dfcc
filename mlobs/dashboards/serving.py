"""Pipeline and serving: step durations and failures; request rate, latency percentiles, errors.

Steps come from ``@mlobs.step`` (``mlobs_step_duration_seconds``, ``mlobs_step_executions_total``);
requests from the serving middleware (:mod:`mlobs.serving.names`).
"""

from __future__ import annotations

from mlobs.dashboards import board, panels
from mlobs.dashboards import grafana as g

STEP_FILTER = 'run_name=~"$run_name", step=~"$step"'
HTTP_FILTER = 'model=~"$model", route=~"$route"'


def _quantile(q: float, by: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, {by}) "
        f"(rate(mlobs_http_server_request_duration_seconds_bucket{{{HTTP_FILTER}}}"
        "[$__rate_interval])))"
    )


def prometheus(uid: str) -> g.Json:
    """The pipeline and serving dashboard over Prometheus."""
    duration = "mlobs_step_duration_seconds"
    steps = board.Section(
        "Pipeline steps",
        [
            panels.bargauge(
                "Mean step duration per run",
                [
                    g.prom(
                        f"sum by (run_name, step) (max without (instance, job) "
                        f"({duration}_sum{{{STEP_FILTER}}})) / sum by (run_name, step) "
                        f"(max without (instance, job) ({duration}_count{{{STEP_FILTER}}}))",
                        "{{run_name}} · {{step}}",
                    )
                ],
                description="Mean duration of each step's executions in each run (batch "
                "pipelines: the run's whole history).",
                unit="s",
                min_value=None,
            ),
            panels.timeseries(
                "Step duration p50 and p95",
                [
                    g.prom(
                        "histogram_quantile(0.5, sum by (le, step) "
                        f"(rate({duration}_bucket{{{STEP_FILTER}}}[$__rate_interval])))",
                        "p50 {{step}}",
                    ),
                    g.prom(
                        "histogram_quantile(0.95, sum by (le, step) "
                        f"(rate({duration}_bucket{{{STEP_FILTER}}}[$__rate_interval])))",
                        "p95 {{step}}",
                    ),
                ],
                description="Percentiles of step durations over the rate window, for steps "
                "that run continuously (a service, a long training loop).",
                unit="s",
            ),
            panels.timeseries(
                "Step executions by outcome",
                [
                    g.prom(
                        "sum by (step, status) (increase(mlobs_step_executions_total"
                        f"{{{STEP_FILTER}}}[$__rate_interval]))",
                        "{{step}} {{status}}",
                    )
                ],
                description="Executions per step and outcome (ok, error) in each interval.",
                draw="bars",
                fill=80,
                stack=True,
                legend_calcs=("sum",),
                overrides=[_red("/ error$/")],
            ),
            panels.bargauge(
                "Failed executions per run",
                [
                    g.prom(
                        "sum by (run_name, step) (max without (instance, job) "
                        f'(mlobs_step_executions_total{{status!="ok", {STEP_FILTER}}}))',
                        "{{run_name}} · {{step}}",
                    )
                ],
                description="Failed executions of each step in each run so far (retried "
                "attempts count).",
                steps=(("green", None), ("red", 1.0)),
            ),
        ],
    )
    requests = "mlobs_http_server_requests_total"
    serving = board.Section(
        "Serving",
        [
            panels.timeseries(
                "Request rate",
                [
                    g.prom(
                        f"sum by (model, route, code) (rate({requests}{{{HTTP_FILTER}}}"
                        "[$__rate_interval]))",
                        "{{model}} {{route}} {{code}}",
                    )
                ],
                description="Requests finished per second, by model, route template and HTTP "
                "status code.",
                unit="reqps",
                stack=True,
                fill=30,
            ),
            panels.timeseries(
                "Latency p50, p95, p99",
                [
                    g.prom(_quantile(0.5, "model"), "p50 {{model}}"),
                    g.prom(_quantile(0.95, "model"), "p95 {{model}}"),
                    g.prom(_quantile(0.99, "model"), "p99 {{model}}"),
                ],
                description="Request latency percentiles from the middleware's histogram "
                "(1 ms to 5 min buckets).",
                unit="s",
            ),
            panels.timeseries(
                "Errors by class",
                [
                    g.prom(
                        "sum by (model, error_class) (rate(mlobs_http_server_errors_total"
                        f"{{{HTTP_FILTER}}}[$__rate_interval]))",
                        "{{model}} {{error_class}}",
                    )
                ],
                description="Failed requests per second: client (4xx), server (5xx), "
                "exception (the app raised).",
                unit="reqps",
                draw="bars",
                fill=80,
                stack=True,
                width=8,
            ),
            panels.stat(
                "Server error ratio",
                [
                    g.prom(
                        f'(sum by (model) (rate({requests}{{code=~"5..", {HTTP_FILTER}}}'
                        f"[$__rate_interval])) or sum by (model) (rate({requests}"
                        f"{{{HTTP_FILTER}}}[$__rate_interval])) * 0) / sum by (model) "
                        f"(rate({requests}{{{HTTP_FILTER}}}[$__rate_interval]))",
                        "{{model}}",
                    )
                ],
                description="Share of requests answered with a 5xx (an exception in the app "
                "counts as 500), over the rate window.",
                unit="percentunit",
                decimals=2,
                steps=(("green", None), ("yellow", 0.01), ("red", 0.05)),
                width=8,
                height=8,
            ),
            panels.timeseries(
                "Requests in flight",
                [
                    g.prom(
                        "sum by (model) (max without (instance, job) "
                        '(mlobs_http_server_active_requests{model=~"$model"}))',
                        "{{model}}",
                    )
                ],
                description="Requests being served (sampled at most every 0.1 s).",
                width=8,
            ),
        ],
    )
    return board.dashboard_json(
        uid=uid,
        title="mlobs · Pipeline and serving",
        description="Pipeline steps (mlobs.step) and model serving (mlobs serving middleware): "
        "step durations and failures, request rate, latency percentiles, errors (Prometheus).",
        tags=["mlobs", "pipeline", "serving", "prometheus"],
        variables=[
            board.datasource_variable(g.PROMETHEUS),
            board.query_variable(
                "run_name",
                "Run",
                "label_values(mlobs_step_executions_total, run_name)",
                g.PROMETHEUS,
            ),
            board.query_variable(
                "step",
                "Step",
                'label_values(mlobs_step_executions_total{run_name=~"$run_name"}, step)',
                g.PROMETHEUS,
            ),
            board.query_variable(
                "model", "Model", f"label_values({requests}, model)", g.PROMETHEUS
            ),
            board.query_variable(
                "route",
                "Route",
                f'label_values({requests}{{model=~"$model"}}, route)',
                g.PROMETHEUS,
            ),
        ],
        sections=[steps, serving],
        time_from="now-3h",
    )


def _red(regex: str) -> g.Json:
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}],
    }
