"""Prometheus alert rules over the series mlobs serves, one rule group per area.

:func:`build_rules` turns :class:`~mlobs.alerts.params.RuleParams` into one rule-file document per
area (training, gpu, drift, quality, serving, telemetry). Every alert carries the labels
``severity`` (critical, warning or info) and ``team``, and the annotations ``summary``,
``description``, ``value`` (the number that fired, readable), ``model`` (the run's model from
``mlobs_run_info``, or the served model), ``runbook_url`` (a section of alerting/runbook.md) and
``dashboard_url`` (the area's generated Grafana dashboard, filtered to the run, GPU or model).

Decisions worth knowing (the runbook says the same per alert):

- Series of finished runs stay on ``/metrics`` with their last values, so alerts about a run in
  progress (loss, stall, idle GPU) also require ``mlobs_run_status{status="running"} == 1``.
- A stalled run is one whose heartbeat is older than N times its median epoch duration (with a
  floor, and a fixed timeout before the first epoch ends). ``last_over_time`` keeps watching a
  run whose process died, since its series vanish from the scrape without a final status.
- Model quality is compared with its own best over a lookback by default; a fixed baseline per
  KPI is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlobs.alerts.params import AREAS, DASHBOARD_UIDS, RuleParams
from mlobs.alerts.promql import any_of, duration, number, percent, seconds, series
from mlobs.drift import names as drift_names
from mlobs.gpu import names as gpu
from mlobs.serving import names as serving_names

SEVERITIES = ("critical", "warning", "info")

# Series mlobs renders itself (mlobs/export/prom_names.py); repeated here so that generating
# rules does not import the Prometheus client. tests/test_alerts_rules.py keeps them in step.
RUN_INFO = "mlobs_run_info"
RUN_STATUS = "mlobs_run_status"
RUN_START = "mlobs_run_start_time_seconds"
RUN_END = "mlobs_run_end_time_seconds"
RUN_PROGRESS = "mlobs_run_last_progress_timestamp_seconds"
STEP_EXECUTIONS = "mlobs_step_executions_total"
SPOOL_BACKLOG = "mlobs_spool_backlog_records"
SPOOL_OLDEST_AGE = "mlobs_spool_oldest_unshipped_age_seconds"
FAILURES_IN_ROW = "mlobs_export_consecutive_failures"
RECORDS_DROPPED = "mlobs_records_dropped_total"
INTERNAL_ERRORS = "mlobs_internal_errors_total"
PREFIX = "mlobs_"  # a name recorded through mlobs.log / log_labeled is served as mlobs_<name>

_RUN_KEYS = "run_id, run_name, experiment, rank"

# --- annotation templates (Prometheus alert templating: Go text/template) ---------------------

_RUN = (
    "run {{ $labels.run_name }} ({{ $labels.run_id }}, experiment {{ $labels.experiment }}, "
    "rank {{ $labels.rank }})"
)
_RUN_UPPER = "R" + _RUN[1:]
_IN_RUN = "{{ with $labels.run_name }} in run {{ . }}{{ end }}"
_GPU = "GPU {{ $labels.gpu }} ({{ $labels.model }}) on {{ $labels.host }}"
_SERVED = "{{ $labels.model }}{{ with $labels.model_version }} (version {{ . }}){{ end }}"
_RUN_MODEL = (
    '{{ if $labels.run_id }}{{ with printf "mlobs_run_info{run_id=%q}" $labels.run_id | query }}'
    '{{ with . | first }}{{ label "model_name" . }}'
    '{{ with label "model_version" . }} (version {{ . }}){{ end }}{{ end }}{{ end }}{{ end }}'
)
_HUMANIZE = "{{ $value | humanize }}"
_NUMBER = '{{ printf "%.4g" $value }}'  # a loss or a KPI: 0.85, not humanize's 850m
_PERCENT = "{{ $value | humanizePercentage }}"
_DURATION = "{{ $value | humanizeDuration }}"

_DASHBOARD_VARS = {
    "training": "var-run_id={{ $labels.run_id | urlquery }}",
    "gpu": "var-host={{ $labels.host | urlquery }}&var-gpu={{ $labels.gpu | urlquery }}",
    "drift": "var-monitor={{ $labels.monitor | urlquery }}",
    "quality": "var-run_id={{ $labels.run_id | urlquery }}",
    "serving": "var-model={{ $labels.model | urlquery }}",
    "telemetry": "var-instance={{ $labels.instance | urlquery }}",
}
"""Grafana template variables each area's dashboard link sets (``var-<name>=<value>``)."""


@dataclass(frozen=True)
class Alert:
    """One alerting rule before rendering."""

    name: str
    severity: str
    expr: str
    for_: str
    summary: str
    description: str
    value: str
    """Go template of the ``value`` annotation (``{{ $value | humanize }}``)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels of the rule besides severity and team (``kpi``)."""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.name}: severity {self.severity!r}")

    def rule(self, area: str, params: RuleParams) -> dict[str, Any]:
        """The rule as Prometheus reads it."""
        model = _SERVED if area == "serving" else _RUN_MODEL
        dashboard = f"{params.dashboard_base_url.rstrip('/')}/{DASHBOARD_UIDS[area]}"
        return {
            "alert": self.name,
            "expr": self.expr.strip() + "\n",
            "for": self.for_,
            "labels": {"severity": self.severity, "team": params.team(area), **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "value": self.value,
                "model": model,
                "runbook_url": f"{params.runbook_base_url}#{anchor(self.name)}",
                "dashboard_url": f"{dashboard}?{_DASHBOARD_VARS[area]}",
            },
        }


def anchor(alert_name: str) -> str:
    """The runbook anchor of an alert: its heading (the alert name) as GitHub slugs it."""
    return alert_name.lower()


def _running(p: RuleParams) -> str:
    return series(RUN_STATUS, p.training_selector, 'status="running"')


def _unless_finished(expr: str, p: RuleParams) -> str:
    """``expr`` without the series of runs that are over. A finished run's series stay on
    ``/metrics`` with their last values; series outside any run (no ``run_id``) are kept."""
    inner = "\n".join("  " + line for line in expr.strip().splitlines())
    return f"(\n{inner}\n)\nunless on (run_id, rank)\n  ({_running(p)} == 0)\n"


# --- training ----------------------------------------------------------------------------------


def training_alerts(p: RuleParams) -> list[Alert]:
    sel = p.training_selector
    loss = series(p.loss_metric, sel)
    best = f"min_over_time({loss}[{p.loss_divergence_lookback}])"
    progress = f"last_over_time({series(RUN_PROGRESS, sel)}[{p.stall_lookback}])"
    epoch = series(p.epoch_duration_metric, sel)
    end = series(RUN_END, sel)
    steps_failed = series(STEP_EXECUTIONS, sel, 'status="error"')
    steps = series(STEP_EXECUTIONS, sel)
    window = p.step_failure_window
    return [
        Alert(
            "MlobsLossNotFinite",
            "critical",
            f"""
(
  {loss}
  unless
  ({loss} - {loss} == 0)
)
and on (run_id, rank)
  ({_running(p)} == 1)
""",
            p.loss_not_finite_for,
            "Loss is {{ $value }} in run {{ $labels.run_name }}",
            f"{p.loss_metric}{{{{ with $labels.split }}}} ({{{{ . }}}}){{{{ end }}}} of {_RUN} "
            "is {{ $value }}: the optimisation has diverged and every further step is wasted.",
            "{{ $value }}",
        ),
        Alert(
            "MlobsLossDiverging",
            "warning",
            f"""
(
  {loss}
  > {best} + {number(p.loss_divergence_ratio)} * abs({best})
)
and on (run_id, rank)
  ({_running(p)} == 1)
""",
            p.loss_divergence_for,
            f"Loss of run {{{{ $labels.run_name }}}} is {_NUMBER}, far above its best",
            f"{p.loss_metric}{{{{ with $labels.split }}}} ({{{{ . }}}}){{{{ end }}}} of {_RUN} "
            f"is {_NUMBER}: it has stayed more than {percent(p.loss_divergence_ratio)} above "
            f"its best value of the last {p.loss_divergence_lookback} for "
            f"{p.loss_divergence_for}. Training is diverging (learning rate, bad batch, "
            "numerical trouble).",
            _NUMBER,
        ),
        Alert(
            "MlobsRunStalled",
            "warning",
            f"""
(
  time() - max by ({_RUN_KEYS}) ({progress})
)
> on (run_id, rank) group_left ()
(
  max by (run_id, rank) (
    clamp_min(
      {number(p.stall_epoch_multiple)} * quantile_over_time(0.5, {epoch}[{p.stall_lookback}]),
      {number(p.stall_min_seconds)}
    )
  )
  or on (run_id, rank)
  max by (run_id, rank) (0 * {progress} + {number(p.stall_default_seconds)})
)
and on (run_id, rank)
(
  max by (run_id, rank) (last_over_time({_running(p)}[{p.stall_lookback}])) == 1
)
""",
            p.stall_for,
            f"Run {{{{ $labels.run_name }}}} made no progress for {_DURATION}",
            f"{_RUN_UPPER} is running but has made no progress (no step, epoch or log) "
            f"for {_DURATION}: more than {number(p.stall_epoch_multiple)} times its median "
            f"epoch duration (at least {duration(p.stall_min_seconds)}; "
            f"{duration(p.stall_default_seconds)} before its first epoch ends). "
            "It may be hung, deadlocked, or its process may have died.",
            _DURATION,
        ),
        Alert(
            "MlobsRunFailed",
            "critical",
            f"""
(
  {end} - {series(RUN_START, sel)}
)
and on (run_id, rank)
  ({series(RUN_STATUS, sel, 'status="failed"')} == 1)
and on (run_id, rank)
  (time() - {end} < {number(seconds(p.run_failed_window))})
""",
            p.run_failed_for,
            f"Run {{{{ $labels.run_name }}}} failed after {_DURATION}",
            f"{_RUN_UPPER} ended with status failed after {_DURATION}. "
            f"This alert stays active for {p.run_failed_window} after the run ended.",
            _DURATION,
        ),
        Alert(
            "MlobsStepFailureRateHigh",
            "warning",
            f"""
sum by ({_RUN_KEYS}, step) (rate({steps_failed}[{window}]))
/
sum by ({_RUN_KEYS}, step) (rate({steps}[{window}]))
> {number(p.step_failure_ratio)}
""",
            p.step_failure_for,
            f"Step {{{{ $labels.step }}}} of run {{{{ $labels.run_name }}}} fails {_PERCENT} "
            "of the time",
            f"{_PERCENT} of the executions of step {{{{ $labels.step }}}} in {_RUN} raised an "
            f"exception over the last {window} (threshold {percent(p.step_failure_ratio)}).",
            _PERCENT,
        ),
    ]


# --- GPU ---------------------------------------------------------------------------------------


def gpu_alerts(p: RuleParams) -> list[Alert]:
    sel = p.gpu_selector
    critical_xids = f'xid=~"{any_of(p.gpu_xid_critical)}"'
    other_xids = f'xid!~"{any_of(p.gpu_xid_critical)}"'
    utilization = series(gpu.UTILIZATION, sel, 'run_id!=""')
    temperature = series(gpu.TEMPERATURE, sel, 'sensor="gpu"')
    thermal = series(gpu.THROTTLE, sel, f'reason=~"{any_of(p.gpu_thermal_reasons)}"')
    power = series(gpu.THROTTLE, sel, f'reason=~"{any_of(p.gpu_power_reasons)}"')
    ecc = series(gpu.ECC_ERRORS, sel, 'type="uncorrected"', 'counter="volatile"')
    lost = series(gpu.STATUS, sel, 'state="failed"')

    def xid_expr(matcher: str) -> str:
        xid = series(gpu.XID_ERRORS, sel, matcher)
        return f"""
(
  increase({xid}[{p.gpu_xid_window}]) > 0
)
or
(
  {xid} unless {xid} offset {p.gpu_xid_window}
)
"""

    xid_summary = f"XID {{{{ $labels.xid }}}} on {_GPU}"
    xid_description = (
        f"The driver reported XID error {{{{ $labels.xid }}}} on {_GPU}{_IN_RUN}: "
        f"{_HUMANIZE} in the last {p.gpu_xid_window}."
    )
    return [
        Alert(
            "MlobsGpuTemperatureHigh",
            "warning",
            _unless_finished(f"{temperature} > {number(p.gpu_temperature_celsius)}", p),
            p.gpu_temperature_for,
            f"{_GPU} at {_HUMANIZE}°C",
            f"{_GPU}{_IN_RUN} has been at {_HUMANIZE}°C, above "
            f"{number(p.gpu_temperature_celsius)}°C, for {p.gpu_temperature_for}.",
            f"{_HUMANIZE}°C",
        ),
        Alert(
            "MlobsGpuThermalThrottling",
            "warning",
            _unless_finished(f"{thermal} == 1", p),
            p.gpu_thermal_for,
            f"{_GPU} slowed down: {{{{ $labels.reason }}}}",
            f"{_GPU}{_IN_RUN} has been throttled by {{{{ $labels.reason }}}} for "
            f"{p.gpu_thermal_for}: it is too hot and runs at reduced clocks.",
            "{{ $labels.reason }}",
        ),
        Alert(
            "MlobsGpuPowerThrottling",
            "info",
            _unless_finished(f"{power} == 1", p),
            p.gpu_power_for,
            f"{_GPU} power-capped: {{{{ $labels.reason }}}}",
            f"{_GPU}{_IN_RUN} has been throttled by {{{{ $labels.reason }}}} for "
            f"{p.gpu_power_for}: its clocks are held down to stay within its power limit.",
            "{{ $labels.reason }}",
        ),
        Alert(
            "MlobsGpuEccUncorrected",
            "critical",
            _unless_finished(f"increase({ecc}[{p.gpu_ecc_window}]) > 0", p),
            p.gpu_ecc_for,
            f"Uncorrected ECC errors on {_GPU}",
            f"{_GPU}{_IN_RUN} reported {_HUMANIZE} uncorrected ECC memory errors in the last "
            f"{p.gpu_ecc_window}: data in GPU memory was corrupted and the work on it is suspect.",
            _HUMANIZE,
        ),
        Alert(
            "MlobsGpuXidError",
            "critical",
            _unless_finished(xid_expr(critical_xids), p),
            p.gpu_xid_for,
            xid_summary,
            xid_description + " This code means a hardware fault or a GPU off the bus.",
            _HUMANIZE,
        ),
        Alert(
            "MlobsGpuXidError",
            "warning",
            _unless_finished(xid_expr(other_xids), p),
            p.gpu_xid_for,
            xid_summary,
            xid_description + " This code is usually an application fault (bad memory access, "
            "illegal instruction) rather than hardware.",
            _HUMANIZE,
        ),
        Alert(
            "MlobsGpuMemoryNearFull",
            "warning",
            _unless_finished(
                f"{series(gpu.MEMORY_USED_RATIO, sel)} > {number(p.gpu_memory_used_ratio)}", p
            ),
            p.gpu_memory_for,
            f"{_GPU} memory {_PERCENT} full",
            f"{_GPU}{_IN_RUN} has had {_PERCENT} of its memory in use, above "
            f"{percent(p.gpu_memory_used_ratio)}, for {p.gpu_memory_for}: the next allocation "
            "may fail with out-of-memory.",
            _PERCENT,
        ),
        Alert(
            "MlobsGpuIdleDuringRun",
            "warning",
            f"""
avg_over_time({utilization}[{p.gpu_idle_window}]) < {number(p.gpu_idle_ratio)}
and on (run_id, rank)
  ({_running(p)} == 1)
""",
            p.gpu_idle_for,
            f"{_GPU} idle during run {{{{ $labels.run_name }}}}",
            f"{_GPU} was busy only {_PERCENT} of the time over the last {p.gpu_idle_window} "
            f"while {_RUN} is running: the run is starved (data loading, CPU, I/O) or does "
            "not use this GPU.",
            _PERCENT,
        ),
        Alert(
            "MlobsGpuLost",
            "critical",
            _unless_finished(f"{lost} == 1", p),
            p.gpu_lost_for,
            f"{_GPU} fell off the bus",
            f"NVML reports {_GPU}{_IN_RUN} as lost (GPU_IS_LOST): it no longer answers and "
            "needs a reset or a reboot of the node.",
            "lost",
        ),
    ]


# --- drift -------------------------------------------------------------------------------------


def drift_alerts(p: RuleParams) -> list[Alert]:
    sel = p.drift_selector
    persistent_for = duration(seconds(p.drift_window) * p.drift_persistent_windows)
    monitor = "monitor {{ $labels.monitor }}"
    return [
        Alert(
            "MlobsDriftShareHigh",
            "warning",
            _unless_finished(
                f"{series(PREFIX + drift_names.SHARE_DRIFTED, sel)} > "
                f"{number(p.drift_share_threshold)}",
                p,
            ),
            p.drift_share_for,
            f"{_PERCENT} of the features drifted ({monitor})",
            f"Drift {monitor}{_IN_RUN} found {_PERCENT} of its features drifted, more than "
            f"{percent(p.drift_share_threshold)}: the data the model sees no longer looks like "
            "its reference.",
            _PERCENT,
        ),
        Alert(
            "MlobsFeatureDriftPersistent",
            "warning",
            _unless_finished(f"{series(PREFIX + drift_names.DETECTED, sel)} == 1", p),
            persistent_for,
            "Feature {{ $labels.feature }} drifted for "
            f"{p.drift_persistent_windows} windows ({monitor})",
            f"Feature {{{{ $labels.feature }}}} has been drifted in every window of drift "
            f"{monitor}{_IN_RUN} for {persistent_for} ({p.drift_persistent_windows} windows of "
            f"{p.drift_window}): a lasting change, not noise.",
            "drifted",
        ),
    ]


# --- quality -----------------------------------------------------------------------------------


def quality_alerts(p: RuleParams) -> list[Alert]:
    sel = p.quality_selector
    ignore = ", ".join(p.quality_ignore_labels)
    alerts = []
    kpis = [(k, True) for k in p.quality_higher_is_better]
    kpis += [(k, False) for k in p.quality_lower_is_better]
    who = "{{ with $labels.run_name }}run {{ . }}{{ else }}the model{{ end }}"
    for kpi, higher in kpis:
        metric = series(p.quality_prefix + kpi, sel)
        op, word, verb = ("<", "below", "fell") if higher else (">", "above", "rose")
        factor = 1 - p.quality_tolerance if higher else 1 + p.quality_tolerance
        fixed = p.quality_baselines.get(kpi)
        if fixed is not None:
            expr = f"{metric} {op} {number(round(fixed * factor, 12))}"
            baseline = f"its baseline {number(fixed)}"
        else:
            best = "max" if higher else "min"
            inner = f"{best}_over_time({metric}[{p.quality_lookback}])"
            if ignore:
                expr = (
                    f"{metric}\n{op} ignoring ({ignore}) group_left ()\n"
                    f"  ({number(factor)} * {best} without ({ignore}) ({inner}))"
                )
            else:
                expr = f"{metric}\n{op} ({number(factor)} * {inner})"
            baseline = f"its best of the last {p.quality_lookback}"
        alerts.append(
            Alert(
                "MlobsModelQualityDrop",
                "warning",
                _unless_finished(expr, p),
                p.quality_for,
                f"{kpi} of {who} {verb} to {_NUMBER}",
                f"{kpi} of {who}{{{{ with $labels.model_version }}}} (model version "
                f"{{{{ . }}}}){{{{ end }}}}{{{{ with $labels.window }}}} in window {{{{ . }}}}"
                f"{{{{ end }}}} is {_NUMBER}, more than "
                f"{percent(p.quality_tolerance)} {word} {baseline}, for {p.quality_for}.",
                _NUMBER,
                {"kpi": kpi},
            )
        )
    return alerts


# --- serving -----------------------------------------------------------------------------------


def serving_alerts(p: RuleParams) -> list[Alert]:
    sel = p.serving_selector
    window = p.serving_window
    buckets = series(PREFIX + serving_names.DURATION + "_bucket", sel)
    errors = series(
        PREFIX + serving_names.ERRORS, sel, f'error_class=~"{any_of(p.serving_error_classes)}"'
    )
    requests = series(PREFIX + serving_names.REQUESTS, sel)
    q = number(p.serving_latency_quantile)
    p_name = f"p{number(round(p.serving_latency_quantile * 100, 6))}"
    return [
        Alert(
            "MlobsServingLatencyHigh",
            "warning",
            f"""
histogram_quantile(
  {q},
  sum by (model, model_version, route, le) (rate({buckets}[{window}]))
)
> {number(p.serving_latency_seconds)}
""",
            p.serving_latency_for,
            f"{p_name} latency of {_SERVED} on {{{{ $labels.route }}}} is {_DURATION}",
            f"The {p_name} latency of {_SERVED} on route {{{{ $labels.route }}}} over the last "
            f"{window} is {_DURATION}, above the objective of "
            f"{number(p.serving_latency_seconds)}s, for {p.serving_latency_for}.",
            _DURATION,
        ),
        Alert(
            "MlobsServingErrorRateHigh",
            "critical",
            f"""
sum by (model, model_version) (rate({errors}[{window}]))
/
sum by (model, model_version) (rate({requests}[{window}]))
> {number(p.serving_error_ratio)}
""",
            p.serving_error_for,
            f"{_SERVED} fails {_PERCENT} of requests",
            f"{_PERCENT} of the requests to {_SERVED} failed over the last {window} "
            f"({', '.join(p.serving_error_classes)} errors), above the objective of "
            f"{percent(p.serving_error_ratio)}, for {p.serving_error_for}.",
            _PERCENT,
        ),
    ]


# --- telemetry ---------------------------------------------------------------------------------


def telemetry_alerts(p: RuleParams) -> list[Alert]:
    sel = p.telemetry_selector
    where = "{{ $labels.instance }}"
    dropped = series(RECORDS_DROPPED, sel, f'reason=~"{any_of(p.records_dropped_reasons)}"')
    return [
        Alert(
            "MlobsExporterFailing",
            "warning",
            f"{series(FAILURES_IN_ROW, sel)} >= {number(p.exporter_failures_in_row)}",
            p.exporter_failing_for,
            f"Sink {{{{ $labels.sink }}}} of {where} keeps failing",
            f"The {{{{ $labels.sink }}}} sink of {where} has failed {_HUMANIZE} exports in a "
            f"row for {p.exporter_failing_for}; its circuit is open. Records wait in the spool "
            "and are shipped when the backend answers again.",
            _HUMANIZE,
        ),
        Alert(
            "MlobsSpoolBacklogGrowing",
            "warning",
            f"""
{series(SPOOL_OLDEST_AGE, sel)} > {number(p.spool_backlog_age_seconds)}
and
  deriv({series(SPOOL_BACKLOG, sel)}[{p.spool_backlog_window}]) > 0
""",
            p.spool_backlog_for,
            f"Spool backlog of sink {{{{ $labels.sink }}}} on {where} is {_DURATION} old "
            "and growing",
            f"The oldest record the {{{{ $labels.sink }}}} sink of {where} has not shipped is "
            f"{_DURATION} old (more than {duration(p.spool_backlog_age_seconds)}) and the "
            f"backlog grew over the last {p.spool_backlog_window}: the sink ships slower than "
            "records arrive, and the spool's disk budget will drop the oldest.",
            _DURATION,
        ),
        Alert(
            "MlobsRecordsDropped",
            "warning",
            f"increase({dropped}[{p.records_dropped_window}]) > 0",
            p.records_dropped_for,
            f"{where} dropped {_HUMANIZE} telemetry records ({{{{ $labels.reason }}}})",
            f"mlobs on {where} dropped {_HUMANIZE} records in the last "
            f"{p.records_dropped_window} because of {{{{ $labels.reason }}}}: this telemetry "
            "is lost for good.",
            _HUMANIZE,
        ),
        Alert(
            "MlobsInternalErrors",
            "info",
            f"increase({series(INTERNAL_ERRORS, sel)}[{p.internal_errors_window}]) > 0",
            p.internal_errors_for,
            f"mlobs internal errors in {{{{ $labels.where }}}} on {where}",
            f"mlobs on {where} counted {_HUMANIZE} of its own failures in "
            f"{{{{ $labels.where }}}} over the last {p.internal_errors_window}. Training is not "
            "affected, but some telemetry may be missing.",
            _HUMANIZE,
        ),
        Alert(
            "MlobsScrapeTargetDown",
            "warning",
            f"{series('up', p.scrape_selector)} == 0",
            p.scrape_down_for,
            f"Prometheus cannot scrape {where} (job {{{{ $labels.job }}}})",
            f"The scrape target {where} of job {{{{ $labels.job }}}} has been down for "
            f"{p.scrape_down_for}: its process is gone or unreachable, and its series are "
            "going stale.",
            "down",
        ),
    ]


_BUILDERS = {
    "training": training_alerts,
    "gpu": gpu_alerts,
    "drift": drift_alerts,
    "quality": quality_alerts,
    "serving": serving_alerts,
    "telemetry": telemetry_alerts,
}


def alerts(area: str, params: RuleParams) -> list[Alert]:
    """The alerts of one area."""
    return _BUILDERS[area](params)


def build_rules(params: RuleParams | None = None) -> dict[str, dict[str, Any]]:
    """One Prometheus rule-file document per area, keyed by area name (see AREAS)."""
    params = params or RuleParams()
    documents: dict[str, dict[str, Any]] = {}
    for area in AREAS:
        rules = [a.rule(area, params) for a in alerts(area, params)]
        documents[area] = {"groups": [{"name": f"mlobs-{area}", "rules": rules}]}
    return documents
