"""Grafana dashboards for mlobs' series, built with grafanalib (the ``dashboards`` extra).

``build(metrics)`` returns every dashboard as JSON data, keyed by uid: training runs, GPUs, drift
and model quality, pipeline and serving, telemetry health for Prometheus, and training and
drift for InfluxDB (InfluxQL). The committed ones in ``dashboards/`` are ``build()`` with the
default metrics; ``mlobs dashboards generate --metric NAME ...`` builds them for your own.
Panels pick their datasource through the ``datasource`` variable, so they work in any Grafana.
"""

from __future__ import annotations

try:
    import grafanalib  # noqa: F401  (checked first, for a clear message)
except ImportError as exc:
    raise ImportError("mlobs.dashboards needs grafanalib: pip install 'mlobs[dashboards]'") from exc

from mlobs.dashboards.generate import (
    DATASOURCES,
    DEFAULT_METRICS,
    DEFAULT_UID_PREFIX,
    build,
    differences,
    render,
    uid_of,
    write,
)
from mlobs.dashboards.grafana import DATASOURCE_UIDS

__all__ = [
    "DATASOURCES",
    "DATASOURCE_UIDS",
    "DEFAULT_METRICS",
    "DEFAULT_UID_PREFIX",
    "build",
    "differences",
    "render",
    "uid_of",
    "write",
]
