"""Alert rules for Prometheus and an Alertmanager configuration, generated from parameters.

``mlobs alerts generate --out DIR`` writes what :func:`render_all` returns: one rule file per area
(training, gpu, drift, quality, serving, telemetry), ``alertmanager.yml`` and
``templates/mlobs.tmpl``. The repository's ``alerting/`` folder is that output with the default
parameters; alerting/runbook.md has a section per alert.
"""

from __future__ import annotations

from mlobs.alerts.alertmanager import build_alertmanager
from mlobs.alerts.files import differences, render_all, write
from mlobs.alerts.params import (
    AREAS,
    AlertmanagerParams,
    ParamError,
    RuleParams,
    apply_overrides,
    split_overrides,
)
from mlobs.alerts.rules import build_rules

__all__ = [
    "AREAS",
    "AlertmanagerParams",
    "ParamError",
    "RuleParams",
    "apply_overrides",
    "build_alertmanager",
    "build_rules",
    "differences",
    "render_all",
    "split_overrides",
    "write",
]
