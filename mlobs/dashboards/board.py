"""A dashboard's layout, template variables and the dashboard itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grafanalib.core as G

from mlobs.dashboards.grafana import (
    DATASOURCE_UIDS,
    DATASOURCE_VAR,
    Json,
    Panel,
    datasource_ref,
    drop_nulls,
    panel_json,
    to_plain,
)

SCHEMA_VERSION = 39
"""Grafana 10.4 / 11's dashboard schema: no migration runs when a current Grafana loads it."""
GRID_WIDTH = 24

# Keys grafanalib writes on dashboards and variables that Grafana's current model has no place for.
_LEGACY_DASHBOARD_KEYS = ("__inputs", "hideControls", "rows", "sharedCrosshair", "style")
_LEGACY_VARIABLE_KEYS = ("useTags", "tagsQuery", "tagValuesQuery", "auto", "auto_min", "auto_count")


# -- layout --------------------------------------------------------------------------------------


@dataclass
class Section:
    """A titled row of the dashboard and the panels under it, laid out left to right."""

    title: str
    panels: list[Panel]


def layout(sections: Sequence[Section]) -> list[Json]:
    """Row panels and panels with grid positions and ids (1, 2, ... in reading order)."""
    out: list[Json] = []
    y = 0
    next_id = 1
    for section in sections:
        row = G.RowPanel(title=section.title, collapsed=False, panels=[])
        row_json = {
            k: v
            for k, v in drop_nulls(to_plain(row)).items()
            if k in ("collapsed", "panels", "title", "type")
        }
        out.append(
            {**row_json, "id": next_id, "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}}
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in section.panels:
            if x + panel.width > GRID_WIDTH:
                y += line_height
                x, line_height = 0, 0
            grid = {"h": panel.height, "w": panel.width, "x": x, "y": y}
            out.append(panel_json(panel, next_id, grid))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return out


# -- variables -----------------------------------------------------------------------------------


def datasource_variable(kind: str) -> Json:
    """The ``datasource`` variable: every datasource of ``kind``, the provisioned one first."""
    uid = DATASOURCE_UIDS[kind]
    template = G.Template(
        name=DATASOURCE_VAR,
        label="Data source",
        query=kind,
        type="datasource",
        default=uid,
        hide=G.SHOW,
    )
    data = _variable_json(template)
    data["current"] = {"text": uid, "value": uid}
    data["options"] = []
    data["refresh"] = 1
    data["regex"] = ""
    return data


def query_variable(
    name: str,
    label: str,
    query: str,
    kind: str,
    *,
    multi: bool = True,
    hide: bool = False,
    description: str = "",
) -> Json:
    """A variable whose values a query returns, refreshed when the time range changes.

    With ``multi`` it also offers All (every value: ``.*`` as a regex).
    """
    template = G.Template(
        name=name,
        label=label,
        query=query,
        dataSource=datasource_ref(kind),
        includeAll=multi,
        multi=multi,
        allValue=".*" if multi else None,
        refresh=G.REFRESH_ON_TIME_RANGE_CHANGE,
        sort=G.SORT_ALPHA_ASC,
        hide=G.HIDE_VARIABLE if hide else G.SHOW,
    )
    data = _variable_json(template)
    data["current"] = {"text": ["All"], "value": ["$__all"]} if multi else {"text": "", "value": ""}
    data["options"] = []
    data["regex"] = ""
    if description:
        data["description"] = description
    return data


def custom_variable(
    name: str, label: str, options: Sequence[tuple[str, str]], description: str
) -> Json:
    """A multi-value variable over fixed ``(text, value)`` pairs, all selected at first."""

    def item(text: str, value: str) -> str:  # Grafana splits the query on unescaped commas
        pair = text if text == value else f"{text} : {value}"
        return pair.replace(",", "\\,")

    query = ",".join(item(text, value) for text, value in options)
    listed = [{"selected": True, "text": t, "value": v} for t, v in options]
    template = G.Template(
        name=name,
        label=label,
        query=query,
        type="custom",
        includeAll=True,
        multi=True,
        options=listed,
    )
    data = _variable_json(template)
    data["current"] = {"text": [t for t, _ in options], "value": [v for _, v in options]}
    data["options"] = listed
    data["description"] = description
    return data


def _variable_json(template: Any) -> Json:
    data = drop_nulls(to_plain(template))
    for key in _LEGACY_VARIABLE_KEYS:
        data.pop(key, None)
    return dict(data)


# -- dashboards ----------------------------------------------------------------------------------


def dashboard_json(
    *,
    uid: str,
    title: str,
    description: str,
    tags: Sequence[str],
    variables: Sequence[Json],
    sections: Sequence[Section],
    time_from: str = "now-6h",
) -> Json:
    """A whole dashboard: variables, a link menu to the other mlobs dashboards, the panels."""
    links = [
        G.DashboardLink(
            title="mlobs dashboards",
            type="dashboards",
            tags=["mlobs"],
            asDropdown=True,
            includeVars=False,
            keepTime=True,
        )
    ]
    board = G.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=list(tags),
        timezone="browser",
        refresh="30s",
        time=G.Time(time_from, "now"),
        graphTooltip=G.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        schemaVersion=SCHEMA_VERSION,
        links=links,
        templating=G.Templating(list=list(variables)),
    )
    data = drop_nulls(to_plain(board))
    for key in _LEGACY_DASHBOARD_KEYS:
        data.pop(key, None)
    data["panels"] = layout(sections)
    data["timepicker"] = {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "1h"]}
    data["annotations"] = {"list": [_builtin_annotation()]}
    data["fiscalYearStartMonth"] = 0
    data["liveNow"] = False
    data["weekStart"] = ""
    data.pop("id", None)
    return dict(data)


def _builtin_annotation() -> Json:
    """Grafana's own annotations (the ones users add by hand), as Grafana itself writes them."""
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
