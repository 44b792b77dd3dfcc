"""Panel builders: one grafanalib panel each, with the options Grafana would otherwise fill in.

Every option a panel plugin's schema requires is stated, so a dashboard looks the same in every
Grafana version that loads it, and each panel's options type-check against its plugin's schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grafanalib.core as G

from mlobs.dashboards.grafana import Json, Panel, thresholds

_NO_THRESHOLDS = (("green", None),)


def _legend(placement: str = "bottom", calcs: Sequence[str] = (), table: bool = False) -> Json:
    return {
        "calcs": list(calcs),
        "displayMode": "table" if table else "list",
        "placement": placement,
        "showLegend": True,
    }


def _tooltip(mode: str = "multi") -> Json:
    return {"mode": mode, "sort": "desc" if mode == "multi" else "none"}


def _panel(
    obj: Any,
    width: int,
    height: int,
    options: Json,
    *,
    description: str,
    unit: str = "",
    steps: Iterable[tuple[str, float | None]] = _NO_THRESHOLDS,
    overrides: Sequence[Json] = (),
    mappings: Sequence[Json] = (),
    decimals: int | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    no_value: str | None = None,
    custom: Json | None = None,
    color: Json | None = None,
) -> Panel:
    """``obj`` with its grid size, description, plugin ``options`` and field defaults."""
    defaults: Json = {"unit": unit or "none", "thresholds": thresholds(*steps)}
    if mappings:
        defaults["mappings"] = list(mappings)
    if decimals is not None:
        defaults["decimals"] = decimals
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    if no_value is not None:
        defaults["noValue"] = no_value
    if custom is not None:
        defaults["custom"] = custom
    if color is not None:
        defaults["color"] = color
    extra = {
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": options,
    }
    return Panel(obj, width, height, extra)


def timeseries(
    title: str,
    targets: Sequence[Any],
    *,
    description: str,
    unit: str = "",
    width: int = 12,
    height: int = 8,
    draw: str = "line",
    points: str = "auto",
    fill: int = 10,
    stack: bool = False,
    legend_calcs: Sequence[str] = ("lastNotNull", "max"),
    steps: Iterable[tuple[str, float | None]] = _NO_THRESHOLDS,
    show_thresholds: bool = False,
    overrides: Sequence[Json] = (),
    min_value: float | None = None,
    max_value: float | None = None,
    log_scale: bool = False,
    repeat: str | None = None,
) -> Panel:
    """A time series panel; the legend is a table with ``legend_calcs`` when there are any."""
    obj = G.TimeSeries(
        title=title,
        targets=list(targets),
        unit=unit or "none",
        drawStyle=draw,
        showPoints=points,
        fillOpacity=fill,
        lineWidth=1,
        stacking={"mode": "normal", "group": "A"} if stack else {"mode": "none", "group": "A"},
        spanNulls=True,
        thresholdsStyleMode="line" if show_thresholds else "off",
        scaleDistributionType="log" if log_scale else "linear",
        scaleDistributionLog=10 if log_scale else 2,
        legendDisplayMode="table" if legend_calcs else "list",
        legendCalcs=list(legend_calcs),
        tooltipMode="multi",
        tooltipSort="desc",
        repeat=G.Repeat(direction="h", variable=repeat, maxPerRow=2) if repeat else G.Repeat(),
        maxDataPoints=500,
    )
    options = {
        "legend": _legend(calcs=legend_calcs, table=bool(legend_calcs)),
        "tooltip": _tooltip(),
    }
    return _panel(
        obj,
        width,
        height,
        options,
        description=description,
        unit=unit,
        steps=steps,
        overrides=overrides,
        min_value=min_value,
        max_value=max_value,
        custom={"barWidthFactor": 0.6, "insertNulls": False, "axisCenteredZero": False},
    )


def stat(
    title: str,
    targets: Sequence[Any],
    *,
    description: str,
    unit: str = "",
    width: int = 6,
    height: int = 5,
    reduce: str = "lastNotNull",
    steps: Iterable[tuple[str, float | None]] = _NO_THRESHOLDS,
    mappings: Sequence[Json] = (),
    decimals: int | None = None,
    color_mode: str = "value",
    graph: bool = True,
    text_mode: str = "auto",
    no_value: str | None = None,
) -> Panel:
    """A stat panel reducing each series to one value."""
    obj = G.Stat(
        title=title,
        targets=list(targets),
        reduceCalc=reduce,
        graphMode="area" if graph else "none",
        colorMode=color_mode,
        textMode=text_mode,
        format=unit or "none",
        noValue=no_value,
        maxDataPoints=200,
    )
    options = {
        "reduceOptions": {"calcs": [reduce], "fields": "", "values": False},
        "showPercentChange": False,
        "percentChangeColorMode": "standard",
        "wideLayout": True,
    }
    return _panel(
        obj,
        width,
        height,
        options,
        description=description,
        unit=unit,
        steps=steps,
        mappings=mappings,
        decimals=decimals,
        no_value=no_value,
    )


def bargauge(
    title: str,
    targets: Sequence[Any],
    *,
    description: str,
    unit: str = "",
    width: int = 12,
    height: int = 8,
    reduce: str = "lastNotNull",
    steps: Iterable[tuple[str, float | None]] = _NO_THRESHOLDS,
    min_value: float | None = 0,
    max_value: float | None = None,
) -> Panel:
    """Horizontal bars, one per series, reduced to one value each."""
    obj = G.BarGauge(title=title, targets=list(targets), maxDataPoints=200)
    options = {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": [reduce], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "auto",
        "sizing": "auto",
        "minVizHeight": 16,
        "minVizWidth": 8,
        "maxVizHeight": 300,
        "legend": _legend(),
    }
    return _panel(
        obj,
        width,
        height,
        options,
        description=description,
        unit=unit,
        steps=steps,
        min_value=min_value,
        max_value=max_value,
    )


def table(
    title: str,
    targets: Sequence[Any],
    *,
    description: str,
    transformations: Sequence[Json] = (),
    overrides: Sequence[Json] = (),
    width: int = 24,
    height: int = 8,
    sort_by: str | None = None,
) -> Panel:
    """A table of instant query results (one row per series)."""
    obj = G.Table(
        title=title,
        targets=list(targets),
        transformations=list(transformations),
        filterable=True,
    )
    options: Json = {
        "showHeader": True,
        "cellHeight": "sm",
        "frameIndex": 0,
        "sortBy": [{"displayName": sort_by, "desc": False}] if sort_by else [],
    }
    return _panel(
        obj,
        width,
        height,
        options,
        description=description,
        overrides=overrides,
        custom={"cellOptions": {"type": "auto"}, "inspect": False},
    )


def state_timeline(
    title: str,
    targets: Sequence[Any],
    *,
    description: str,
    mappings: Sequence[Json],
    steps: Iterable[tuple[str, float | None]],
    width: int = 12,
    height: int = 8,
) -> Panel:
    """One band per series, coloured by value (0/1 flags and states)."""
    obj = G.StateTimeline(
        title=title,
        targets=list(targets),
        mappings=list(mappings),
        rowHeight=0.9,
        showValue="never",
        maxDataPoints=300,
    )
    options = {
        "legend": _legend(),
        "tooltip": _tooltip("single"),
        "mergeValues": True,
        "alignValue": "left",
        "rowHeight": 0.9,
        "showValue": "never",
    }
    return _panel(
        obj,
        width,
        height,
        options,
        description=description,
        steps=steps,
        mappings=mappings,
        color={"mode": "thresholds"},
    )


def flag_timeline(
    title: str,
    targets: Sequence[Any],
    *,
    description: str,
    zero: tuple[str, str],
    one: tuple[str, str],
    width: int = 12,
    height: int = 8,
) -> Panel:
    """A :func:`state_timeline` of 0/1 series; ``zero`` and ``one`` are each value's text and
    colour, e.g. ``("closed", "green"), ("open", "red")``."""
    mapping = {
        "type": "value",
        "options": {
            "0": {"text": zero[0], "color": zero[1], "index": 0},
            "1": {"text": one[0], "color": one[1], "index": 1},
        },
    }
    return state_timeline(
        title,
        targets,
        description=description,
        mappings=[mapping],
        steps=((zero[1], None), (one[1], 1.0)),
        width=width,
        height=height,
    )


def heatmap(
    title: str,
    targets: Sequence[Any],
    *,
    description: str,
    unit: str = "",
    width: int = 24,
    height: int = 9,
) -> Panel:
    """Rows of a heatmap from series (one row per series name), no bucketing of values."""
    obj = G.Heatmap(title=title, targets=list(targets), maxDataPoints=200)
    options = {
        "calculate": False,
        "cellGap": 1,
        "cellValues": {"unit": unit or "none"},
        "color": {
            "mode": "scheme",
            "scheme": "Oranges",
            "fill": "dark-orange",
            "scale": "exponential",
            "exponent": 0.5,
            "steps": 64,
            "reverse": False,
        },
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto", "value": title},
        "showValue": "never",
        "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": True},
        "yAxis": {"axisPlacement": "left", "reverse": False},
    }
    custom = {
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "scaleDistribution": {"type": "linear"},
    }
    return _panel(obj, width, height, options, description=description, custom=custom)
