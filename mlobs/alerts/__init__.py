"""Alert rules for Prometheus and an Alertmanager configuration, generated from parameters.

``mlobs alerts generate --out DIR`` writes what :func:`render_all` returns: one rule file per area
(training, gpu, drift, quality, serving, telemetry), ``alertmanager.yml`` and
``templates/mlobs.tmpl``. The repository's ``alerting/`` folder is that output with the default
parameters; alerting/runbook.md has a section per alert.

The Alertmanager webhook receiver behind ``mlobs alert-webhook`` lives beside them
(:mod:`mlobs.alerts.webhook`, :mod:`mlobs.alerts.actions`), imported from its own modules. The
names here load on first use, so importing the receiver does not build the rule generator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "AREAS": "params",
    "AlertmanagerParams": "params",
    "ParamError": "params",
    "RuleParams": "params",
    "apply_overrides": "params",
    "split_overrides": "params",
    "build_alertmanager": "alertmanager",
    "build_rules": "rules",
    "differences": "files",
    "render_all": "files",
    "write": "files",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mlobs.alerts' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mlobs.alerts.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
