"""Small builders for the PromQL text of the alert rules: selectors, durations, numbers."""

from __future__ import annotations

import re

from mlobs.alerts.params import split_matchers

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")


def series(metric: str, selector: str, *matchers: str) -> str:
    """``metric{matchers..., selector...}``; the bare name when there is no matcher.

    Args:
        metric: the metric name.
        selector: the area's selector (comma-separated matchers, possibly empty).
        matchers: the rule's own matchers, written first.
    """
    parts = [*matchers, *split_matchers(selector)]
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def any_of(values: tuple[str, ...]) -> str:
    """A regular expression for a label matcher matching exactly one of ``values``."""
    return "|".join(re.escape(v) for v in values)


def seconds(duration: str) -> float:
    """A Prometheus duration (``1h30m``) in seconds."""
    return sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(duration))


def duration(total: float) -> str:
    """Seconds as a Prometheus duration, largest units first (``10800`` -> ``3h``)."""
    left = round(total)
    if left <= 0:
        return "0s"
    out = []
    for unit in ("w", "d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if left >= size:
            out.append(f"{left // size}{unit}")
            left %= size
    return "".join(out)


def number(value: float) -> str:
    """A number as PromQL and people read it: ``0.95``, ``600``, ``1e-05``."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def percent(ratio: float) -> str:
    """A ratio as a percentage for prose: ``0.05`` -> ``5%``."""
    return f"{number(round(ratio * 100, 6))}%"
