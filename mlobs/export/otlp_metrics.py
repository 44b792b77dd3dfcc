"""Metric records to the OTel SDK's ``MetricsData``, each point with its own timestamp (see
:mod:`mlobs.export.otlp` for the mapping)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.export.otlp_resource import Resources, mlobs_scope, put
from mlobs.gpu.names import METRICS as GPU_METRICS
from mlobs.gpu.names import otel_attributes as gpu_otel_attributes
from mlobs.record.types import Kind, Record
from mlobs.spool.store import HEARTBEAT, RunInfo

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, MetricsData, NumberDataPoint

STEP_METRIC = "mlobs.run.step"
EPOCH_METRIC = "mlobs.run.epoch"
PROGRESS_METRIC = "mlobs.run.last_progress"
STEP_EVERY_NS = 1_000_000_000
"""At most one ``mlobs.run.step`` point per run and second: enough for progress and steps per
second, and not a second point for every ``mlobs.log`` call."""

_GAUGE, _COUNTER, _HISTOGRAM, _EVENT = Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM, Kind.EVENT
_UNSET: Any = object()
_VALID_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]{0,254}\Z")
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DEFAULT_BUCKETS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)


def metric_name(name: str) -> str:
    """The user's name where OTel allows it; otherwise invalid characters become ``_``."""
    if _VALID_NAME.match(name):
        return name
    cleaned = _INVALID_CHARS.sub("_", name)[:255]
    return cleaned if cleaned[:1].isalpha() else ("metric_" + cleaned)[:255]


def metric_unit(name: str) -> str:
    """The unit a Prometheus-style suffix names (so that OTLP-to-Prometheus naming keeps it)."""
    if name.endswith("_seconds"):
        return "s"
    if name.endswith("_bytes"):
        return "By"
    return ""


@dataclass
class Cumulative:
    """A counter's or histogram's running state for one series."""

    start_ns: int
    total: float = 0.0
    count: int = 0
    buckets: list[int] | None = None
    bounds: tuple[float, ...] = ()
    min: float = math.inf
    max: float = -math.inf

    def copy(self) -> Cumulative:
        buckets = None if self.buckets is None else list(self.buckets)
        return Cumulative(
            self.start_ns, self.total, self.count, buckets, self.bounds, self.min, self.max
        )


SeriesKey = tuple[str, str, tuple[tuple[str, Any], ...]]
"""(run id, metric name, sorted attributes)"""

Progress = tuple[Any, int, Any, int]
"""A run's last step point (value, earliest time of the next one) and last epoch point (value,
its millisecond): the next batch goes on from there, so that these gauges never get two values
within one millisecond (which Prometheus refuses)."""


@dataclass
class Pending:
    """What a batch's points leave behind, kept by :meth:`MetricsBuilder.commit` once they are
    acknowledged."""

    cumulative: dict[SeriesKey, Cumulative]
    progress: dict[str, Progress]


class MetricsBuilder:
    """Builds the points of a batch. Counter and histogram totals, and the step and epoch gauges'
    state, move only through :meth:`commit`, once the backend has acknowledged the points that
    carry them: a batch offered again gives the same points."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._scope = mlobs_scope()
        self._names: dict[str, tuple[str, str]] = {}
        self._cumulative: dict[SeriesKey, Cumulative] = {}
        self._progress: dict[str, Progress] = {}

    def commit(self, pending: Pending) -> None:
        self._cumulative.update(pending.cumulative)
        self._progress.update(pending.progress)

    def build(
        self, records: Sequence[Record], runs: Mapping[str, RunInfo]
    ) -> tuple[MetricsData | None, Pending]:
        """The batch's metric points (``None`` without any), and the state they leave behind."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Gauge,
            Histogram,
            Metric,
            MetricsData,
            NumberDataPoint,
            ResourceMetrics,
            ScopeMetrics,
            Sum,
        )

        gauges: dict[str, dict[str, list[NumberDataPoint]]] = {}
        state: dict[SeriesKey, Cumulative] = {}
        touched: dict[SeriesKey, tuple[int, Mapping[str, Any]]] = {}
        point_attrs: dict[tuple[int, str, str], Mapping[str, Any]] = {}
        run_attrs: dict[str, Mapping[str, Any]] = {}

        def attrs_of(record: Record) -> Mapping[str, Any]:
            base = run_attrs.get(record.run_id)
            if base is None:
                base = run_attrs[record.run_id] = _run_point_attrs(record.run_id, runs)
            if not record.attrs:
                return base
            # records that shared an attribute dict when recorded share it again (a GPU
            # record's attributes depend on its metric too)
            gpu = record.name in GPU_METRICS
            key = (id(record.attrs), record.run_id, record.name if gpu else "")
            found = point_attrs.get(key)
            if found is None:
                merged: dict[str, Any] = {}
                attrs = gpu_otel_attributes(record.name, record.attrs) if gpu else record.attrs
                for name, value in attrs.items():
                    put(merged, name, value)
                merged.update(base)
                found = point_attrs[key] = merged
            return found

        # The common case, plain values of one run, costs a few comparisons per record: the
        # current run's state is kept in locals, other runs' in ``progress``.
        unset = _UNSET
        progress = dict(self._progress)
        cur_run: Any = unset
        last_step: Any = unset  # the value of the run's last step point
        next_step_ns = 0  # the earliest time of its next step point
        last_epoch: Any = unset  # the value of the run's last epoch point
        epoch_ms = 0  # its millisecond
        series: dict[str, list[NumberDataPoint]] = {}
        base: Mapping[str, Any] = {}
        for record in records:
            _, kind, ts, run_id, name, value, step, epoch, attrs = record
            if kind is _GAUGE:
                if value is None:
                    continue
                if run_id != cur_run:
                    if cur_run is not unset:
                        progress[cur_run] = (last_step, next_step_ns, last_epoch, epoch_ms)
                    cur_run = run_id
                    last_step, next_step_ns, last_epoch, epoch_ms = progress.get(
                        run_id, (unset, 0, unset, 0)
                    )
                    series = gauges.setdefault(run_id, {})
                    attrs_of(record)  # fills run_attrs
                    base = run_attrs[run_id]
                points = series.get(name)
                if points is None:
                    points = series[name] = []
                points.append(NumberDataPoint(attrs_of(record) if attrs else base, 0, ts, value))
                if step != last_step and ts >= next_step_ns and step is not None:
                    last_step, next_step_ns = step, ts + STEP_EVERY_NS
                    point = NumberDataPoint(base, 0, ts, step)
                    series.setdefault(STEP_METRIC, []).append(point)
                if epoch != last_epoch and epoch is not None and ts // 1_000_000 > epoch_ms:
                    last_epoch, epoch_ms = epoch, ts // 1_000_000
                    point = NumberDataPoint(base, 0, ts, epoch)
                    series.setdefault(EPOCH_METRIC, []).append(point)
            elif kind is _EVENT:
                if name == HEARTBEAT and value is not None:
                    point = NumberDataPoint(_run_point_attrs(run_id, runs), 0, ts, value)
                    gauges.setdefault(run_id, {}).setdefault(PROGRESS_METRIC, []).append(point)
            elif (kind is _COUNTER or kind is _HISTOGRAM) and value is not None:
                try:
                    self._accumulate(record, attrs_of(record), runs, state, touched)
                except Exception as exc:  # one bad value must not block the sink
                    safety.report("export.otlp.point", exc)

        if cur_run is not unset:
            progress[cur_run] = (last_step, next_step_ns, last_epoch, epoch_ms)

        by_run: dict[str, list[Metric]] = {}
        for run_id, series in gauges.items():
            # several records may share an OTel name (GPU utilization by task): one metric each
            merged_points: dict[tuple[str, str], list[NumberDataPoint]] = {}
            for name, points in series.items():
                merged_points.setdefault(self._name(name), []).extend(points)
            by_run[run_id] = [
                Metric(otel_name, "", unit, Gauge(points))
                for (otel_name, unit), points in merged_points.items()
            ]
        sums: dict[tuple[str, str], list[NumberDataPoint]] = {}
        hists: dict[tuple[str, str], list[HistogramDataPoint]] = {}
        for key, (last_ts, series_attrs) in touched.items():
            run_id, name, _ = key
            acc = state[key]
            if acc.buckets is None:
                point = NumberDataPoint(series_attrs, acc.start_ns, last_ts, acc.total)
                sums.setdefault((run_id, name), []).append(point)
            else:
                hpoint = _histogram_point(acc, series_attrs, last_ts)
                hists.setdefault((run_id, name), []).append(hpoint)
        cumulative = AggregationTemporality.CUMULATIVE
        merged_sums: dict[tuple[str, str, str], list[NumberDataPoint]] = {}
        for (run_id, name), points in sums.items():
            merged_sums.setdefault((run_id, *self._name(name)), []).extend(points)
        for (run_id, otel_name, unit), points in merged_sums.items():
            data = Sum(points, cumulative, True)
            by_run.setdefault(run_id, []).append(Metric(otel_name, "", unit, data))
        for (run_id, name), hpoints in hists.items():
            otel_name, unit = self._name(name)
            hdata = Histogram(hpoints, cumulative)
            by_run.setdefault(run_id, []).append(Metric(otel_name, "", unit, hdata))
        pending = Pending(state, progress)
        if not by_run:
            return None, pending
        resource_metrics = [
            ResourceMetrics(
                self.resources.get(run_id, runs), [ScopeMetrics(self._scope, metrics, "")], ""
            )
            for run_id, metrics in by_run.items()
        ]
        return MetricsData(resource_metrics), pending

    def _name(self, name: str) -> tuple[str, str]:
        found = self._names.get(name)
        if found is None:
            gpu = GPU_METRICS.get(name)
            if gpu is not None:
                found = self._names[name] = (gpu.otel_name, gpu.otel_unit)
            else:
                found = self._names[name] = (metric_name(name), metric_unit(name))
        return found

    def _accumulate(
        self,
        record: Record,
        attrs: Mapping[str, Any],
        runs: Mapping[str, RunInfo],
        state: dict[SeriesKey, Cumulative],
        touched: dict[SeriesKey, tuple[int, Mapping[str, Any]]],
    ) -> None:
        value = float(record.value or 0.0)
        key: SeriesKey = (record.run_id, record.name, tuple(sorted(attrs.items())))
        acc = state.get(key)
        if acc is None:
            committed = self._cumulative.get(key)
            if committed is not None:
                acc = committed.copy()
            else:
                run = runs.get(record.run_id)
                acc = Cumulative(record.ts_ns if run is None else min(run.start_ns, record.ts_ns))
                if record.kind is _HISTOGRAM:
                    seconds = record.name.endswith("_seconds")
                    acc.bounds = _SECONDS_BUCKETS if seconds else _DEFAULT_BUCKETS
                    acc.buckets = [0] * (len(acc.bounds) + 1)
            state[key] = acc
        acc.total += value
        acc.count += 1
        if acc.buckets is not None:
            index = next((i for i, b in enumerate(acc.bounds) if value <= b), len(acc.bounds))
            acc.buckets[index] += 1
            acc.min = min(acc.min, value)
            acc.max = max(acc.max, value)
        touched[key] = (record.ts_ns, attrs)


def _run_point_attrs(run_id: str, runs: Mapping[str, RunInfo]) -> Mapping[str, Any]:
    """The attributes every point of a run carries: its rank (a resource fact, but a label that
    must survive pipelines that keep resource attributes off the series)."""
    run = runs.get(run_id)
    rank = None if run is None else run.resource.get("rank")
    return {} if rank is None else {"rank": rank}


def _histogram_point(acc: Cumulative, attrs: Mapping[str, Any], ts: int) -> HistogramDataPoint:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    return HistogramDataPoint(
        attrs,
        acc.start_ns,
        ts,
        acc.count,
        acc.total,
        list(acc.buckets or ()),
        list(acc.bounds),
        acc.min,
        acc.max,
    )
