"""Targets and panels over grafanalib, written as Grafana's current dashboard JSON.

grafanalib 0.7 still writes some keys of Grafana's pre-8 JSON model (``span``, ``editable`` on
panels, a table's top-level ``columns``, the old heatmap's ``cards`` and ``xAxis``, a bar gauge's
``fieldOptions``, ...) and a ``null`` for every option left unset. :func:`panel_json` here and
:func:`mlobs.dashboards.board.dashboard_json` drop those, so the output type-checks against
``@grafana/schema`` (see ``scripts/dashboards-typecheck``). The panel builders are in
:mod:`mlobs.dashboards.panels`, the layout and variables in :mod:`mlobs.dashboards.board`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grafanalib.core as G
from grafanalib.influxdb import InfluxDBTarget

Json = dict[str, Any]

PROMETHEUS = "prometheus"
INFLUXDB = "influxdb"
DATASOURCE_VAR = "datasource"
DATASOURCE_UIDS = {PROMETHEUS: "mlobs-prometheus", INFLUXDB: "mlobs-influxdb"}
"""The uids of the provisioned datasources (``dashboards/provisioning/datasources.yml``) that the
``datasource`` variable selects first; any other datasource of the type can be picked."""

# Keys grafanalib writes on panels that Grafana's current model has no place for.
_LEGACY_PANEL_KEYS = ("editable", "error", "height", "minSpan", "span")
_LEGACY_BY_TYPE = {
    "table": ("color", "columns", "fontSize", "mappings"),
    "heatmap": (
        "cards",
        "color",
        "dataFormat",
        "heatmap",
        "hideZeroBuckets",
        "highlightCards",
        "legend",
        "reverseYBuckets",
        "tooltip",
        "xAxis",
        "xBucketNumber",
        "xBucketSize",
        "yAxis",
        "yBucketBound",
        "yBucketNumber",
        "yBucketSize",
    ),
}
_LEGACY_OPTION_KEYS = {"bargauge": ("fieldOptions", "showThresholdLabels", "showThresholdMarkers")}
_PROM_TARGET_KEYS = ("refId", "expr", "legendFormat", "format", "instant", "datasource")
_INFLUX_TARGET_KEYS = ("refId", "query", "rawQuery", "resultFormat", "alias", "datasource")


def datasource_ref(kind: str) -> Json:
    """A panel's or target's datasource: whatever the dashboard's ``datasource`` variable holds."""
    return {"type": kind, "uid": "${" + DATASOURCE_VAR + "}"}


def drop_nulls(value: Any) -> Any:
    """``value`` without the ``None`` entries of its mappings, recursively (lists keep order)."""
    if isinstance(value, Mapping):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [drop_nulls(v) for v in value]
    return value


def to_plain(obj: Any) -> Any:
    """A grafanalib object (or a structure holding some) as plain JSON data."""
    if hasattr(obj, "to_json_data"):
        return to_plain(obj.to_json_data())
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj


def deep_merge(base: Json, extra: Mapping[str, Any]) -> Json:
    """``base`` updated with ``extra``: mappings merge key by key, anything else replaces."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


# -- queries -------------------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Any:
    """A PromQL target (``refId`` is set when the panel is built)."""
    return G.Target(
        expr=expr,
        legendFormat=legend,
        instant=instant,
        format="table" if table else "time_series",
        datasource=datasource_ref(PROMETHEUS),
        refId="?",
    )


def influxql(query: str, alias: str = "", *, table: bool = False) -> Any:
    """A raw InfluxQL target; ``alias`` may use ``$tag_<key>`` and ``$col``."""
    return InfluxDBTarget(
        query=query,
        alias=alias,
        format="table" if table else "time_series",
        datasource=datasource_ref(INFLUXDB),
        rawQuery=True,
        refId="?",
    )


def _target_json(target: Any, ref_id: str) -> Json:
    data = drop_nulls(to_plain(target))
    data["refId"] = ref_id
    if "expr" in data:  # Prometheus: grafanalib adds Graphite and pre-7 keys (intervalFactor 2!)
        out = {k: data[k] for k in _PROM_TARGET_KEYS if k in data}
        out["range"] = not out.get("instant", False)
        out["editorMode"] = "code"
        if not out.get("legendFormat"):
            out.pop("legendFormat", None)
        return out
    out = {k: data[k] for k in _INFLUX_TARGET_KEYS if k in data}
    if not out.get("alias"):
        out.pop("alias", None)
    return out


# -- panels --------------------------------------------------------------------------------------


def thresholds(*steps: tuple[str, float | None]) -> Json:
    """Absolute thresholds: ``("green", None), ("red", 80)``; the first step has no value."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


@dataclass
class Panel:
    """One panel as grafanalib built it, with the size it takes in the grid."""

    obj: Any
    width: int = 12
    height: int = 8
    extra: Json = field(default_factory=dict)


def panel_json(panel: Panel, panel_id: int, grid: Json) -> Json:
    """The panel's JSON in Grafana's current model, with its id, grid position and refIds."""
    data: Json = drop_nulls(to_plain(panel.obj))
    kind = data["type"]
    for key in (*_LEGACY_PANEL_KEYS, *_LEGACY_BY_TYPE.get(kind, ())):
        data.pop(key, None)
    for key in _LEGACY_OPTION_KEYS.get(kind, ()):
        data.get("options", {}).pop(key, None)
    # the pre-8 panel-level thresholds; the field defaults' thresholds (from ``extra``) replace them
    data.pop("thresholds", None)
    data.pop("thresholdType", None)
    deep_merge(data, panel.extra)
    data["targets"] = [_target_json(t, chr(ord("A") + i)) for i, t in enumerate(panel.obj.targets)]
    data["datasource"] = data["targets"][0]["datasource"]
    data["id"] = panel_id
    data["gridPos"] = grid
    if not data.get("description"):
        data.pop("description", None)
    if not data.get("links"):
        data.pop("links", None)
    if not data.get("repeat"):
        for key in ("repeat", "repeatDirection", "maxPerRow"):
            data.pop(key, None)
    return data
