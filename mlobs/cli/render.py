"""How the CLI shows things: tables, sparklines and compact numbers, times and statuses.

Every string that comes from the spool (names, messages, tags) is wrapped in ``rich.text.Text``
so that a ``[bold]`` in a log message is printed, not interpreted as markup.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

BLOCKS = "▁▂▃▄▅▆▇█"
MISSING = "·"
STATUS_STYLES = {"finished": "green", "failed": "bold red", "running": "yellow"}
LEVEL_STYLES = {
    "DEBUG": "dim",
    "INFO": "",
    "WARNING": "yellow",
    "ERROR": "red",
    "CRITICAL": "bold red",
    "METRIC": "cyan",
}
Cell = str | Text


def console(*, stderr: bool = False) -> Console:
    """A console that does not squeeze tables into 80 columns when output is piped."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, highlight=False, width=160)
    return out


def sparkline(values: Iterable[float | None]) -> str:
    """One block character per value, scaled between the finite minimum and maximum.

    NaN, infinities and ``None`` show as ``·``; a constant series sits at mid height.
    """
    points = [v if v is not None and math.isfinite(v) else None for v in values]
    finite = [v for v in points if v is not None]
    if not finite:
        return MISSING * len(points)
    low, high = min(finite), max(finite)
    span = high - low
    out = []
    for v in points:
        if v is None:
            out.append(MISSING)
        elif span == 0:
            out.append(BLOCKS[len(BLOCKS) // 2 - 1])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int((v - low) / span * len(BLOCKS)))])
    return "".join(out)


def number(value: float | None) -> str:
    """Four significant digits, integers as integers: what fits in a table cell."""
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    if 1e4 <= abs(value) < 1e12:
        return f"{value:.0f}"
    return f"{value:.4g}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.3g}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def age(ts_ns: int | None, now_ns: int | None = None) -> str:
    if ts_ns is None:
        return ""
    seconds = ((now_ns or time.time_ns()) - ts_ns) / 1e9
    return "just now" if seconds < 1 else f"{duration(seconds)} ago"


def timestamp(ts_ns: int | None) -> str:
    """Local date and time to the second."""
    if ts_ns is None:
        return ""
    return datetime.fromtimestamp(ts_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def clock(ts_ns: int) -> str:
    """Local time of day to the millisecond, for log lines."""
    return datetime.fromtimestamp(ts_ns / 1e9).strftime("%H:%M:%S.%f")[:-3]


def short_id(run_id: str) -> str:
    return run_id[:8]


def status(value: str) -> Text:
    return Text(value, style=STATUS_STYLES.get(value, ""))


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    title: str | None = None,
    numeric: Iterable[str] = (),
) -> Table:
    """A table whose cells are taken literally; ``numeric`` columns are right-aligned."""
    right = set(numeric)
    out = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for name in columns:
        out.add_column(name, justify="right" if name in right else "left", overflow="fold")
    for row in rows:
        out.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in row))
    return out


def key_values(pairs: Iterable[tuple[str, Cell]]) -> Table:
    """A borderless two-column grid for headers: label, value."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in pairs:
        grid.add_row(label, value if isinstance(value, Text) else Text(str(value)))
    return grid


def json_safe(value: Any) -> Any:
    """Recursively replace NaN and infinities (which JSON cannot carry) with strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(json_safe(value), indent=indent, default=str, allow_nan=False)
