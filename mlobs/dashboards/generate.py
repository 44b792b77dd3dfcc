"""Every dashboard for a set of metric names and datasources, written as stable JSON files."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from mlobs.dashboards import drift, gpu, serving, telemetry, training
from mlobs.dashboards.grafana import INFLUXDB, PROMETHEUS, Json

DEFAULT_METRICS = ("loss", "accuracy")
"""The metrics of the committed dashboards (``dashboards/``): what ``mlobs demo`` logs."""
DATASOURCES = (PROMETHEUS, INFLUXDB)
DEFAULT_UID_PREFIX = "mlobs"
MAX_UID = 40
"""Grafana refuses longer dashboard uids."""

_UID_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

Builder = Callable[[Sequence[str], str], Json]
BUILDERS: dict[str, dict[str, Builder]] = {
    PROMETHEUS: {
        "training": training.prometheus,
        "gpu": lambda _metrics, uid: gpu.prometheus(uid),
        "drift": lambda _metrics, uid: drift.build(PROMETHEUS, uid),
        "serving": lambda _metrics, uid: serving.prometheus(uid),
        "telemetry": lambda _metrics, uid: telemetry.prometheus(uid),
    },
    INFLUXDB: {
        "training": training.influxdb,
        "drift": lambda _metrics, uid: drift.build(INFLUXDB, uid),
    },
}
"""Dashboard builders per datasource kind and dashboard name."""


def uid_of(name: str, datasource: str, prefix: str = DEFAULT_UID_PREFIX) -> str:
    """``mlobs-training`` for Prometheus, ``mlobs-training-influxdb`` for InfluxDB."""
    return f"{prefix}-{name}" + ("" if datasource == PROMETHEUS else f"-{datasource}")


def build(
    metrics: Sequence[str] = DEFAULT_METRICS,
    datasources: Sequence[str] = DATASOURCES,
    uid_prefix: str = DEFAULT_UID_PREFIX,
) -> dict[str, Json]:
    """The dashboards by uid.

    Args:
        metrics: names given to ``mlobs.log`` that the training dashboards show, in order.
        datasources: ``prometheus`` and/or ``influxdb``.
        uid_prefix: start of every dashboard uid (letters, digits, ``-`` and ``_``).

    Raises:
        ValueError: no metric, a repeated or empty one, an unknown datasource, a bad prefix.
    """
    names = list(metrics)
    if not names:
        raise ValueError("give at least one metric name")
    if any(not m.strip() for m in names):
        raise ValueError("metric names must not be empty")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise ValueError(f"metric named more than once: {', '.join(repeated)}")
    unknown = [d for d in datasources if d not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown datasource {unknown[0]!r}; choose from {', '.join(BUILDERS)}")
    if not _UID_PREFIX.match(uid_prefix):
        raise ValueError(f"uid prefix {uid_prefix!r}: use letters, digits, '-' and '_'")
    out: dict[str, Json] = {}
    for datasource in dict.fromkeys(datasources):
        for name, builder in BUILDERS[datasource].items():
            uid = uid_of(name, datasource, uid_prefix)
            if len(uid) > MAX_UID:
                raise ValueError(f"dashboard uid {uid!r} is over {MAX_UID} characters")
            out[uid] = builder(names, uid)
    return out


def render(dashboard: Json) -> str:
    """The file text of a dashboard: sorted keys, two-space indent, a final newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path, dashboards: dict[str, Json]) -> list[Path]:
    """Write ``<uid>.json`` per dashboard into ``directory`` (created); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for uid, dashboard in dashboards.items():
        path = directory / f"{uid}.json"
        text = render(dashboard)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def differences(directory: Path, dashboards: dict[str, Json], uid_prefix: str) -> list[str]:
    """What differs between ``directory`` and a fresh generation: missing, changed and stale
    ``<uid_prefix>-*.json`` files, one line each."""
    lines = []
    for uid, dashboard in dashboards.items():
        path = directory / f"{uid}.json"
        if not path.is_file():
            lines.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != render(dashboard):
            lines.append(f"out of date: {path}")
    for path in sorted(directory.glob(f"{uid_prefix}-*.json")):
        if path.stem not in dashboards:
            lines.append(f"not generated any more: {path}")
    return lines
