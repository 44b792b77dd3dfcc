"""What a user's metric is called on each backend, so a dashboard can query it by that name."""

from __future__ import annotations

from collections.abc import Sequence

from mlobs.export.prom_names import NameTable

INFLUX_RESERVED = frozenset(
    ("time", "step", "epoch", "run_id", "run_name", "experiment", "rank", "kind", "split", "scope")
)
"""Field names the InfluxDB sink writes with a trailing ``_`` (its own fields and tags, and the
``time`` InfluxDB 1.x refuses); kept equal to the sink's list by a test."""


def prometheus_names(metrics: Sequence[str]) -> list[str]:
    """The Prometheus families of gauges logged as ``metrics`` (``val/loss`` -> ``mlobs_val_loss``).

    Two names that map to one family are told apart the way the sinks do it, the first one
    keeping the plain name: that holds when the run logs them first in the same order.
    """
    table = NameTable()
    return [table.family(name, "gauge") for name in metrics]


def influx_field(metric: str) -> str:
    """The ``mlobs_metrics`` field of a metric in InfluxDB."""
    return metric + "_" if metric in INFLUX_RESERVED else metric


def influxql_identifier(name: str) -> str:
    """``name`` as a double-quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
