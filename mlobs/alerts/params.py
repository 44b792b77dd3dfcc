"""The parameters of the generated alert rules and Alertmanager configuration.

Every selector, threshold, ``for:`` duration, team and link is a field here, so nothing in a rule
is hard-coded; ``mlobs alerts generate --param KEY=VALUE`` overrides any of them
(:func:`apply_overrides`). Bad values fail here, at generation time, with one clear message.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from mlobs.gpu.names import THROTTLE_REASONS

AREAS = ("training", "gpu", "drift", "quality", "serving", "telemetry")
"""The rule files, one per area, in this order."""

DASHBOARD_UIDS: dict[str, str] = {
    "training": "mlobs-training",
    "gpu": "mlobs-gpu",
    "drift": "mlobs-drift",
    "quality": "mlobs-drift",  # model quality sits beside drift on the drift dashboard
    "serving": "mlobs-serving",
    "telemetry": "mlobs-telemetry",
}
"""The uid of the generated Grafana dashboard each area's alerts link to."""

_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_TEAM = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_MATCHER = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*$')


class ParamError(ValueError):
    """A parameter has a value the generator cannot use."""


@dataclass(frozen=True)
class RuleParams:
    """Selectors, thresholds, ``for:`` durations, teams and links of the alert rules.

    A selector is a comma-separated list of PromQL label matchers (``job="train", env="prod"``)
    ANDed into every series selector of its area; empty selects everything. Durations are
    Prometheus durations (``90s``, ``1h30m``). Ratios are 0..1.
    """

    # --- where to look ---------------------------------------------------------------------
    training_selector: str = 'run_id!=""'
    """Training series: the default keeps series that belong to a run."""
    gpu_selector: str = ""
    """GPU series from runs and from ``mlobs gpu-exporter`` alike (``run_id=""``: exporter only)."""
    drift_selector: str = ""
    quality_selector: str = ""
    serving_selector: str = ""
    telemetry_selector: str = ""
    """mlobs' self-metrics (export, spool, internal errors)."""
    scrape_selector: str = 'job=~"mlobs.*"'
    """The ``up`` series of the scrape jobs that collect mlobs' endpoints."""

    # --- who and where ---------------------------------------------------------------------
    training_team: str = "ml"
    gpu_team: str = "platform"
    drift_team: str = "ml"
    quality_team: str = "ml"
    serving_team: str = "platform"
    telemetry_team: str = "platform"
    runbook_base_url: str = "https://github.com/mlobs/mlobs/blob/main/alerting/runbook.md"
    """Each alert's ``runbook_url`` is this + ``#`` + the alert name in lower case."""
    dashboard_base_url: str = "http://localhost:3000/d"
    """Grafana's ``/d`` path; each alert links to ``<this>/<uid>`` (see DASHBOARD_UIDS)."""

    # --- training --------------------------------------------------------------------------
    loss_metric: str = "mlobs_loss"
    epoch_duration_metric: str = "mlobs_epoch_duration_seconds"
    loss_not_finite_for: str = "1m"
    loss_divergence_ratio: float = 1.0
    """Fire when loss - best > ratio * |best| (1.0: a positive loss doubled its best)."""
    loss_divergence_lookback: str = "6h"
    loss_divergence_for: str = "10m"
    stall_epoch_multiple: float = 3.0
    """A run is stalled after this many median epoch durations without progress ..."""
    stall_min_seconds: float = 600.0
    """... and never before this many seconds ..."""
    stall_default_seconds: float = 3600.0
    """... or after this many seconds while no epoch has finished yet."""
    stall_lookback: str = "6h"
    """Window of the median epoch duration, and how long a run whose series vanished (its
    process died) is still watched."""
    stall_for: str = "5m"
    run_failed_window: str = "1h"
    """RunFailed fires for this long after the run ended (the status itself stays forever)."""
    run_failed_for: str = "1m"
    step_failure_ratio: float = 0.1
    step_failure_window: str = "10m"
    step_failure_for: str = "5m"

    # --- GPU -------------------------------------------------------------------------------
    gpu_temperature_celsius: float = 85.0
    gpu_temperature_for: str = "5m"
    gpu_thermal_reasons: tuple[str, ...] = (
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_slowdown",
    )
    gpu_thermal_for: str = "5m"
    gpu_power_reasons: tuple[str, ...] = ("sw_power_cap", "hw_power_brake_slowdown")
    gpu_power_for: str = "15m"
    gpu_ecc_window: str = "10m"
    gpu_ecc_for: str = "1m"
    gpu_xid_window: str = "10m"
    gpu_xid_for: str = "1m"
    gpu_xid_critical: tuple[str, ...] = (
        "48",
        "61",
        "62",
        "63",
        "64",
        "74",
        "79",
        "92",
        "94",
        "95",
        "119",
        "120",
    )
    """XID codes that mean broken hardware or a lost GPU (critical); other codes, usually an
    application fault, are warnings."""
    gpu_memory_used_ratio: float = 0.95
    gpu_memory_for: str = "15m"
    gpu_idle_ratio: float = 0.05
    gpu_idle_window: str = "10m"
    gpu_idle_for: str = "15m"
    gpu_lost_for: str = "1m"

    # --- drift -----------------------------------------------------------------------------
    drift_share_threshold: float = 0.5
    drift_share_for: str = "10m"
    drift_window: str = "1h"
    """How often the drift monitors evaluate a window."""
    drift_persistent_windows: int = 3
    """FeatureDriftPersistent fires once a feature stayed drifted this many windows long."""

    # --- quality ---------------------------------------------------------------------------
    quality_prefix: str = "mlobs_quality_"
    quality_higher_is_better: tuple[str, ...] = ("accuracy", "f1_macro", "roc_auc")
    quality_lower_is_better: tuple[str, ...] = ("rmse", "mae")
    quality_baselines: Mapping[str, float] = field(default_factory=dict)
    """A fixed baseline per KPI (``accuracy:0.92``); a KPI not named here is compared with its
    own best over ``quality_lookback``."""
    quality_tolerance: float = 0.05
    """Relative drop (or rise, for errors) past the baseline that fires."""
    quality_lookback: str = "7d"
    quality_ignore_labels: tuple[str, ...] = ("window", "model_version")
    """Labels left out of the best-over-lookback baseline: every evaluation window and every
    model version is compared with the best of all of them."""
    quality_for: str = "30m"

    # --- serving ---------------------------------------------------------------------------
    serving_latency_quantile: float = 0.99
    serving_latency_seconds: float = 0.5
    serving_window: str = "5m"
    serving_latency_for: str = "10m"
    serving_error_ratio: float = 0.05
    serving_error_classes: tuple[str, ...] = ("server", "exception")
    serving_error_for: str = "5m"

    # --- telemetry -------------------------------------------------------------------------
    exporter_failures_in_row: int = 3
    exporter_failing_for: str = "10m"
    spool_backlog_age_seconds: float = 900.0
    spool_backlog_window: str = "15m"
    spool_backlog_for: str = "15m"
    records_dropped_reasons: tuple[str, ...] = ("disk_budget", "buffer_full")
    records_dropped_window: str = "15m"
    records_dropped_for: str = "1m"
    internal_errors_window: str = "15m"
    internal_errors_for: str = "15m"
    scrape_down_for: str = "5m"

    def __post_init__(self) -> None:
        _validate(self)
        unknown = [r for r in (*self.gpu_thermal_reasons, *self.gpu_power_reasons)]
        unknown = [r for r in unknown if r not in THROTTLE_REASONS.values()]
        if unknown:
            raise ParamError(f"unknown throttle reason(s) {', '.join(unknown)}")
        if not all(code.isdigit() for code in self.gpu_xid_critical):
            raise ParamError("gpu_xid_critical: XID codes are numbers")
        kpis = (*self.quality_higher_is_better, *self.quality_lower_is_better)
        for kpi in (*kpis, *self.quality_baselines):
            if not _NAME.match(self.quality_prefix + kpi):
                raise ParamError(f"quality KPI {kpi!r} does not make a metric name")
        stray = [k for k in self.quality_baselines if k not in kpis]
        if stray:
            raise ParamError(f"quality_baselines: {', '.join(stray)} is in neither KPI list")

    def team(self, area: str) -> str:
        team: str = getattr(self, f"{area}_team")
        return team

    def selector(self, area: str) -> str:
        selector: str = getattr(self, f"{area}_selector")
        return selector


@dataclass(frozen=True)
class AlertmanagerParams:
    """Receivers, routing timers and secret file paths of ``alertmanager.yml``.

    No secret is ever a value here: the SMTP password and the Slack webhook URLs are read by
    Alertmanager from files under ``secrets_dir`` (``smtp-password``, ``slack-api-url-<team>``),
    which the deployment mounts from its secret store or writes from environment variables.
    """

    teams: tuple[str, ...] = ("ml", "platform")
    default_team: str = "platform"
    """Receives alerts whose team has no receiver of its own."""
    email_to: Mapping[str, str] = field(
        default_factory=lambda: {
            "ml": "ml-oncall@example.org",
            "platform": "platform-oncall@example.org",
        }
    )
    slack_channel: Mapping[str, str] = field(
        default_factory=lambda: {"ml": "#ml-alerts", "platform": "#platform-alerts"}
    )
    smtp_smarthost: str = "smtp.example.org:587"
    smtp_from: str = "mlobs-alerts@example.org"
    smtp_auth_username: str = "mlobs-alerts@example.org"
    """Empty: no SMTP authentication (and no password file)."""
    smtp_require_tls: bool = True
    secrets_dir: str = "/etc/alertmanager/secrets"
    templates: tuple[str, ...] = ("templates/*.tmpl",)
    """Template globs, relative to the directory of alertmanager.yml."""
    group_by: tuple[str, ...] = ("alertname", "run_id")
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    critical_repeat_interval: str = "1h"
    info_repeat_interval: str = "24h"
    resolve_timeout: str = "5m"

    def __post_init__(self) -> None:
        _validate(self)
        for team in self.teams:
            if not _TEAM.match(team):
                raise ParamError(f"team {team!r}: use lower-case letters, digits, - and _")
        if self.default_team not in self.teams:
            raise ParamError(f"default_team {self.default_team!r} is not one of teams")
        for mapping in ("email_to", "slack_channel"):
            missing = [t for t in self.teams if t not in getattr(self, mapping)]
            if missing:
                raise ParamError(f"{mapping} has no entry for team(s) {', '.join(missing)}")


P = TypeVar("P", RuleParams, AlertmanagerParams)


def _validate(params: RuleParams | AlertmanagerParams) -> None:
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        name = f.name
        if isinstance(value, str) and _is_duration_field(name):
            if not _DURATION.match(value):
                raise ParamError(f"{name}: {value!r} is not a Prometheus duration (like 5m)")
        elif name.endswith("_selector"):
            check_selector(name, value)
        elif name.endswith("_metric") or name == "quality_prefix":
            if not _NAME.match(value):
                raise ParamError(f"{name}: {value!r} is not a metric name")
        elif (
            name.endswith(("_ratio", "_tolerance", "_quantile", "_threshold"))
            and name != "loss_divergence_ratio"
            and not 0.0 <= value <= 1.0
        ):
            raise ParamError(f"{name}: {value!r} is not a ratio between 0 and 1")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ParamError(f"{name}: {value!r} is negative")
        if isinstance(value, tuple) and not value and name != "quality_ignore_labels":
            raise ParamError(f"{name} is empty")


def _is_duration_field(name: str) -> bool:
    return name.endswith(("_for", "_window", "_lookback", "_interval", "_wait", "_timeout"))


def check_selector(name: str, selector: str) -> None:
    """Raise :class:`ParamError` unless ``selector`` is empty or label matchers, comma-separated."""
    for matcher in split_matchers(selector):
        if not _MATCHER.match(matcher):
            raise ParamError(f'{name}: {matcher!r} is not a label matcher like job="mlobs"')


def split_matchers(selector: str) -> list[str]:
    """The matchers of a selector, split on the commas outside quoted values."""
    if not selector.strip():
        return []
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in selector:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


# --- overrides from the command line ---------------------------------------------------------


def field_names(cls: type[RuleParams] | type[AlertmanagerParams]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def apply_overrides(params: P, overrides: Mapping[str, str]) -> P:
    """A copy of ``params`` with the fields named in ``overrides`` parsed from text.

    Tuples are comma-separated (``a,b``); mappings are ``key:value`` pairs, comma-separated
    (``ml:#ml-alerts,platform:#infra``); booleans are ``true`` or ``false``.
    """
    hints = get_type_hints(type(params))
    changes: dict[str, Any] = {}
    for key, text in overrides.items():
        if key not in hints:
            raise ParamError(f"unknown parameter {key!r}")
        changes[key] = _parse(key, text, hints[key])
    try:
        return dataclasses.replace(params, **changes)
    except ParamError:
        raise
    except (TypeError, ValueError) as exc:
        raise ParamError(str(exc)) from None


def split_overrides(
    pairs: Iterable[str],
) -> tuple[dict[str, str], dict[str, str]]:
    """``KEY=VALUE`` strings, sorted into rule parameters and Alertmanager parameters."""
    rule_keys = set(field_names(RuleParams))
    am_keys = set(field_names(AlertmanagerParams))
    rules: dict[str, str] = {}
    am: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParamError(f"{pair!r} is not KEY=VALUE")
        if key in rule_keys:
            rules[key] = value
        elif key in am_keys:
            am[key] = value
        else:
            raise ParamError(f"unknown parameter {key!r}")
    return rules, am


def _parse(key: str, text: str, hint: Any) -> Any:
    origin = get_origin(hint)
    try:
        if hint is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError("expected true or false")
            return lowered == "true"
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if hint is str:
            return text
        if origin is tuple:
            return tuple(p.strip() for p in text.split(",") if p.strip())
        if origin in (Mapping, dict) or (isinstance(origin, type) and issubclass(origin, Mapping)):
            value_type = get_args(hint)[1]
            out: dict[str, Any] = {}
            for item in (p for p in text.split(",") if p.strip()):
                name, sep, value = item.partition(":")
                if not sep:
                    raise ValueError(f"{item!r} is not key:value")
                out[name.strip()] = value_type(value.strip())
            return types.MappingProxyType(out)
    except ValueError as exc:
        raise ParamError(f"{key}: {text!r}: {exc}") from None
    raise ParamError(f"{key}: cannot be set from the command line")
