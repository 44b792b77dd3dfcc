"""Every query of every committed dashboard, run against real backends after ``mlobs demo``.

Prometheus scrapes a Pushgateway (the demo run's series, ``honor_labels``) and the demo
process's own ``/metrics`` (mlobs' self-metrics, which are never pushed); InfluxDB 1.6 takes
the demo's writes through ``influx_v2_proxy``, the tests' STAND-IN /api/v2 translation (InfluxDB
1.6 has no v2 write API). GPU series come from the NVML STAND-IN library loaded into the demo
through LD_LIBRARY_PATH, with two devices, an active throttle reason and one XID event. A JSON-
lines sink pointed at a folder fails on every export, so the telemetry-health panels have
export failures, an open circuit, a backlog and internal errors to show.

Then each panel target is run as Grafana would run it: template variables resolved by their own
queries (All as ``.*``, else the first value; repeated panels once per value), ``$__interval``,
``$__rate_interval``, ``$__range`` and ``$timeFilter`` replaced, a range query over the test's
window (an instant query for instant targets). Every target must return at least one series, and
every series, label, field and tag a query names must exist in the backend, so that an ``or``
fallback or a ``.*`` matcher cannot hide a misspelt name.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends import (
    InfluxDBServer,
    InfluxV2Proxy,
    PrometheusServer,
    PushgatewayServer,
    free_port,
)
from tests.nvml_standin import FakeNvml, device
from tests.servers.base import _get_json

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "dashboards"
DB = "mlobs"
RATE_INTERVAL = "1m"
INFLUX_INTERVAL = "10s"
TIME_FILTER = "time > now() - 1h"
STEP = "0.1"
"""Range-query resolution, seconds: the demo's own /metrics lives about a second, and its series
are visible only between its first scrape and the staleness marker after it exits."""

WRITTEN_SOMETIMES = {"field error": "mlobs_runs has an error field only once a run has failed"}
"""Names a query may use that the demo's data lacks for a reason of its own."""


@dataclass
class Outcome:
    where: str
    query: str
    series: int
    error: str = ""
    unknown: tuple[str, ...] = ()
    """Names the query uses that the backend does not have (a series, a label, a field, a tag):
    a typo an ``or`` fallback or a ``.*`` matcher would otherwise hide."""


# -- running the demo against the backends ---------------------------------------------------------


@pytest.fixture
def shipped(
    prometheus_server: Callable[..., PrometheusServer],
    pushgateway: PushgatewayServer,
    influxdb: InfluxDBServer,
    influx_v2_proxy: InfluxV2Proxy,
    fake_nvml: FakeNvml,
    tmp_path: Path,
) -> tuple[PrometheusServer, InfluxDBServer, float]:
    """Run ``mlobs demo`` with every sink on; returns the servers and when the demo started."""
    fake_nvml.write(
        {
            "devices": [device(0, throttle_reasons=0x4), device(1)],
            "events": [{"device": 0, "xid": 79, "id": 0}],
        }
    )
    metrics_port = free_port()
    prometheus = prometheus_server(
        scrape_targets=[pushgateway.address, f"127.0.0.1:{metrics_port}"],
        scrape_interval="100ms",
    )
    influxdb.create_database(DB)
    # Prometheus starts scraping a few seconds after it is ready; the demo lives about as long,
    # so wait until the scrape loop runs (the demo's target is down until the demo listens).
    deadline = time.monotonic() + 20
    while not any(t.get("health") == "up" for t in prometheus.targets()):
        assert time.monotonic() < deadline, "Prometheus never scraped the Pushgateway"
        time.sleep(0.1)
    failing_sink = tmp_path / "jsonl-target-is-a-folder"
    failing_sink.mkdir()
    env = {
        **fake_nvml.subprocess_env(),
        "PYTHONFAULTHANDLER": "1",  # a crash of the demo prints every thread's stack
        "MLOBS_GPU": "auto",
        "MLOBS_GPU_INTERVAL": "0.2",
        "MLOBS_FLUSH_INTERVAL": "0.2",
        "MLOBS_PUSHGATEWAY_URL": pushgateway.url,
        "MLOBS_PROMETHEUS_PORT": str(metrics_port),
        "MLOBS_INFLUXDB_URL": influx_v2_proxy.url,
        "MLOBS_INFLUXDB_BUCKET": DB,
        "MLOBS_ENERGY_PRICE_PER_KWH": "0.30",
        "MLOBS_GRID_INTENSITY_G_PER_KWH": "400",
        "MLOBS_JSONL": str(failing_sink),
    }
    started = time.time()
    command = [sys.executable, "-m", "mlobs.cli.main", "demo", "--epochs", "3"]
    demo = subprocess.run(
        [*command, "--dir", str(tmp_path / "spool")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert demo.returncode == 0, f"mlobs demo failed:\n{demo.stdout}\n{demo.stderr}"
    # the run's final state reaches Prometheus through the Pushgateway
    prometheus.wait_for('mlobs_run_status{status="finished"} == 1', timeout=15)
    scraped = _range(prometheus, "mlobs_spool_backlog_records", started - 5, time.time())
    assert scraped, (
        "Prometheus never scraped the demo's /metrics while it ran (self-metrics missing)"
    )
    return prometheus, influxdb, started


# -- resolving variables and running targets -------------------------------------------------------


def _range(prometheus: PrometheusServer, expr: str, start: float, end: float) -> list[Any]:
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": STEP}
    data = _get_json(prometheus.url + "/api/v1/query_range", params)
    if data.get("status") != "success":
        raise RuntimeError(str(data))
    return list(data["data"]["result"])


def _instant(prometheus: PrometheusServer, expr: str, at: float) -> list[Any]:
    data = _get_json(prometheus.url + "/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
    if data.get("status") != "success":
        raise RuntimeError(str(data))
    return list(data["data"]["result"])


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def substitute(text: str, values: dict[str, str], builtins: dict[str, str]) -> str:
    """Grafana's interpolation, for the forms the dashboards use: ``$name``, ``${name}``,
    ``${name:raw}`` (``${name:text}`` only appears in titles)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name in builtins:
            return builtins[name]
        if name in values:
            return values[name]
        raise KeyError(f"no value for ${name} in {text!r}")

    return _VARIABLE.sub(replace, text)


_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")
_PROM_METRIC = re.compile(r"\b(mlobs_[a-z0-9_]+)\b(?!\s*\()")
_PROM_NAME_MATCHER = re.compile(r'__name__="([a-z0-9_]+)"')
_PROM_LABELS = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)|[{,]\s*(\w+)\s*(?:=~|!~|!=|=)")
_INFLUX_FROM = re.compile(r'FROM "(\w+)"')
_INFLUX_FIELD = re.compile(r'\b(?:last|max|min|count|mean|sum)\("([^"]+)"\)')
_INFLUX_TAG = re.compile(r'"(\w+)" (?:=~|!~|=|<>)|GROUP BY ([^;]*?)(?: fill\(|$)')


class Backends:
    def __init__(self, prometheus: PrometheusServer, influxdb: InfluxDBServer, start: float):
        self.prometheus = prometheus
        self.influxdb = influxdb
        self.start = start - 5
        self.end = time.time() + 1
        self.prom_builtins = {
            "__rate_interval": RATE_INTERVAL,
            "__interval": "1s",
            "__range": f"{int(self.end - self.start)}s",
        }
        self.influx_builtins = {"timeFilter": TIME_FILTER, "__interval": INFLUX_INTERVAL}

    def variable_values(self, kind: str, query: str, values: dict[str, str]) -> list[str]:
        if kind == "prometheus":
            match = _LABEL_VALUES.match(substitute(query, values, self.prom_builtins))
            assert match, f"variable query not of the form label_values(series, label): {query}"
            selector, label = match.groups()
            data = _get_json(
                self.prometheus.url + "/api/v1/series",
                {"match[]": selector, "start": f"{self.start:.0f}", "end": f"{self.end:.0f}"},
            )
            return sorted({s[label] for s in data["data"] if s.get(label)})
        series = self.influxdb.query(substitute(query, values, self.influx_builtins), DB)
        return sorted({row[1] for s in series for row in s.get("values", [])})

    def prom_labels(self, metric: str) -> set[str] | None:
        """Every label name on the series of ``metric``; ``None`` when it has no series."""
        data = _get_json(
            self.prometheus.url + "/api/v1/series",
            {"match[]": metric, "start": f"{self.start:.0f}", "end": f"{self.end:.0f}"},
        )
        if not data["data"]:
            return None
        return {name for series in data["data"] for name in series}

    def unknown_names(self, kind: str, query: str) -> list[str]:
        """Series, labels, fields and tags the query names that the backend does not have."""
        if kind == "prometheus":
            metrics = set(_PROM_METRIC.findall(query)) | set(_PROM_NAME_MATCHER.findall(query))
            known: set[str] = {"le", "instance", "job", "__name__"}
            missing = []
            for metric in sorted(metrics):
                labels = self.prom_labels(metric)
                if labels is None:
                    missing.append(f"series {metric}")
                else:
                    known |= labels
            used = set()
            for group, matcher in _PROM_LABELS.findall(query):
                used |= {n.strip() for n in group.split(",") if n.strip()} if group else {matcher}
            return missing + [f"label {n}" for n in sorted(used - known)]
        measurement = _INFLUX_FROM.search(query)
        if measurement is None:
            return []
        name = measurement.group(1)
        fields = {
            row[0]
            for s in self.influxdb.query(f'SHOW FIELD KEYS FROM "{name}"', DB)
            for row in s.get("values", [])
        }
        tags = {
            row[0]
            for s in self.influxdb.query(f'SHOW TAG KEYS FROM "{name}"', DB)
            for row in s.get("values", [])
        }
        missing = [f"field {f}" for f in _INFLUX_FIELD.findall(query) if f not in fields]
        for tag, group in _INFLUX_TAG.findall(query):
            names = [tag] if tag else re.findall(r'"(\w+)"', group)
            missing += [f"tag {t}" for t in names if t not in tags and t not in fields]
        return missing

    def expand(self, kind: str, text: str, values: dict[str, str]) -> str:
        builtins = self.prom_builtins if kind == "prometheus" else self.influx_builtins
        return substitute(text, values, builtins)

    def run(self, kind: str, query: str, instant: bool) -> int:
        """Series returned by a query whose variables are already substituted."""
        if kind == "prometheus":
            if instant:
                return len(_instant(self.prometheus, query, self.end))
            return len(_range(self.prometheus, query, self.start, self.end))
        return len(self.influxdb.query(query, DB))


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def run_dashboard(backends: Backends, dashboard: dict[str, Any]) -> list[Outcome]:
    """Every target of every panel (each repetition of a repeated one)."""
    uid = dashboard["uid"]
    outcomes: list[Outcome] = []
    values: dict[str, str] = {}
    options: dict[str, list[str]] = {}
    kind = ""
    for variable in dashboard["templating"]["list"]:
        name = variable["name"]
        if variable["type"] == "datasource":
            kind = variable["query"]
            continue
        if variable["type"] == "custom":
            options[name] = [o["value"] for o in variable["options"]]
            values[name] = options[name][0]
            continue
        found = backends.variable_values(kind, variable["query"], values)
        if not found:
            outcomes.append(Outcome(f"{uid} variable ${name}", variable["query"], 0))
        values[name] = ".*" if variable.get("includeAll") else (found[0] if found else "")
    for panel in _panels(dashboard):
        repeat = panel.get("repeat")
        for value in options[repeat] if repeat else [None]:
            scoped = dict(values, **({repeat: value} if repeat and value is not None else {}))
            for target in panel["targets"]:
                where = f"{uid} / {panel['title']} [{target['refId']}]"
                if repeat:
                    where += f" ({repeat}={value})"
                query = target.get("expr") or target.get("query", "")
                kind = target["datasource"]["type"]
                try:
                    query = backends.expand(kind, query, scoped)
                    count = backends.run(kind, query, bool(target.get("instant")))
                    unknown = tuple(
                        n for n in backends.unknown_names(kind, query) if n not in WRITTEN_SOMETIMES
                    )
                    outcomes.append(Outcome(where, query, count, unknown=unknown))
                except Exception as exc:
                    outcomes.append(Outcome(where, query, 0, repr(exc)))
    return outcomes


def test_every_panel_query_returns_series_after_the_demo(
    shipped: tuple[PrometheusServer, InfluxDBServer, float],
) -> None:
    prometheus, influxdb, started = shipped
    backends = Backends(prometheus, influxdb, started)
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, f"no dashboards in {DASHBOARDS}"
    outcomes: list[Outcome] = []
    for path in files:
        outcomes += run_dashboard(backends, json.loads(path.read_text()))

    failed = [o for o in outcomes if o.series == 0 or o.unknown]
    report = []
    for o in failed:
        what = "no series" if o.series == 0 else f"{o.series} series"
        if o.error:
            what += f" ({o.error})"
        if o.unknown:
            what += f"; unknown: {', '.join(o.unknown)}"
        report.append(f"{o.where}: {what}\n    {o.query}")
    print(f"{len(outcomes)} targets run; {sum(o.series > 0 for o in outcomes)} with series")
    assert not report, "\n".join(report)
