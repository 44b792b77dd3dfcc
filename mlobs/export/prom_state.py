"""Per-run series built from spool records: the state behind both Prometheus sinks.

:class:`PromState` folds batches in (``apply``) and renders metric families for some or all runs
(``render``); the mapping from records to series is documented in :mod:`mlobs.export.prometheus`.
One lock guards the state: the shipper thread applies, a scrape or a push renders.
"""

from __future__ import annotations

import logging
import math
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from prometheus_client.metrics_core import Metric

from mlobs import safety
from mlobs.export import prom_names as pn
from mlobs.export.base import Batch
from mlobs.gpu.names import METRICS as GPU_METRICS
from mlobs.record.types import Kind, Record
from mlobs.spool.store import HEARTBEAT, RUN_END, RUN_START, RunInfo

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Histogram upper bounds, seconds-friendly: steps of ML pipelines run from milliseconds to
minutes. ``+Inf`` is implied."""
_LE = (*(str(float(b)) for b in BUCKETS), "+Inf")

STATUSES = ("running", "finished", "failed")
_RUN_LABELS = ("run_id", "run_name", "experiment", "rank")
_INFO_KEYS = (
    "world_size",
    "model_name",
    "model_version",
    "dataset_name",
    "dataset_version",
    "git_commit",
    "host",
    "parent_run_id",
)
_MAX_TAG_LABELS = 20
_MAX_LABEL_VALUE = 200
# Attributes that identify one record, not a series: never labels.
_NOT_LABELS = frozenset(
    {"trace_id", "span_id", "parent_span_id", "step", "epoch", "ts", "ts_ns", "message"}
)
# Label names an attribute may not take (Prometheus', the histogram's, and the run's own).
_TAKEN_LABELS = frozenset({*_RUN_LABELS, "le", "quantile", "job", "instance", "status", "level"})

_GAUGE, _COUNTER, _HISTOGRAM = Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM
_USER_KINDS = {
    _GAUGE: ("gauge", "Last value of"),
    _COUNTER: ("counter", "Total of increments of"),
    _HISTOGRAM: ("histogram", "Observations of"),
}
_LOG, _SPAN, _EVENT = Kind.LOG, Kind.SPAN, Kind.EVENT

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        if value != value:  # NaN fits no bucket; +Inf and -Inf do
            return
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.sum += value


class _Run:
    """Everything one run contributes to the exposition."""

    __slots__ = (
        "counters",
        "end_s",
        "ended",
        "epoch",
        "gauges",
        "histograms",
        "info",
        "labels",
        "logs",
        "progress_s",
        "run_id",
        "start_s",
        "status",
        "step",
        "step_durations",
        "step_executions",
    )

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.labels: Labels = (("run_id", run_id),) if run_id else ()
        self.info: Labels = ()
        self.status = "running"
        self.ended = False
        self.start_s: float | None = None
        self.end_s: float | None = None
        self.progress_s: float | None = None
        self.step: int | None = None
        self.epoch: int | None = None
        self.gauges: dict[tuple[str, Labels], float] = {}
        self.counters: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], _Histogram] = {}
        self.step_durations: dict[str, _Histogram] = {}
        self.step_executions: dict[tuple[str, str], int] = {}
        self.logs: dict[str, int] = {}

    def set_info(self, info: RunInfo) -> None:
        resource = info.resource
        self.labels = (
            ("run_id", self.run_id),
            ("run_name", _value(info.name)),
            ("experiment", _value(resource.get("experiment", ""))),
            ("rank", _value(resource.get("rank", 0))),
        )
        extra = [(k, _value(resource[k])) for k in _INFO_KEYS if resource.get(k) is not None]
        for key, value in list(info.tags.items())[:_MAX_TAG_LABELS]:
            extra.append(("tag_" + pn.label_name(str(key)), _value(value)))
        self.info = tuple(extra)
        if self.start_s is None:
            self.start_s = info.start_ns / 1e9
        if info.last_progress_ns is not None:
            self.progress_s = max(self.progress_s or 0.0, info.last_progress_ns / 1e9)


def _value(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text[:_MAX_LABEL_VALUE]


def attr_labels(attrs: Mapping[str, Any]) -> Labels:
    """The labels of a metric point's attributes: scalar values only, names made valid."""
    out: dict[str, str] = {}
    for key, value in attrs.items():
        if key in _NOT_LABELS or not isinstance(value, (str, int, float, bool)):
            continue
        name = pn.label_name(key)
        if name in _TAKEN_LABELS:
            name = "attr_" + name
        out[name] = _value(value)
    return tuple(sorted(out.items()))


class PromState:
    """Per-run series built from spool records; shared by the pull and push sinks.

    Args:
        keep_finished_runs: finished runs whose series are kept (the oldest go first).
    """

    def __init__(self, keep_finished_runs: int = 50) -> None:
        self.keep_finished_runs = keep_finished_runs
        self.names = pn.NameTable()
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._forgotten: OrderedDict[str, None] = OrderedDict()
        self._applied: dict[str, int] = {}
        self._help: dict[str, tuple[str, str]] = {}
        """Family name -> (type, HELP text) of the user metrics seen."""
        self._families: dict[Kind, dict[str, str]] = {kind: {} for kind in _USER_KINDS}

    # -- folding records in ---------------------------------------------------------------
    def _family(self, name: str, kind: Kind) -> str:
        """The family of a user metric; cached per kind (this runs for every point)."""
        type_name, what = _USER_KINDS[kind]
        gpu = GPU_METRICS.get(name)
        if gpu is not None and gpu.kind == type_name:  # mlobs' own GPU series keep their names
            self._help[name] = (type_name, "GPU: " + gpu.help)
            self._families[kind][name] = name
            return name
        family = self.names.family(name, type_name)
        if family not in self._help:
            self._help[family] = (type_name, f'{what} "{name}" recorded with mlobs.')
        self._families[kind][name] = family
        return family

    def _run(self, run_id: str, runs: Mapping[str, RunInfo]) -> _Run | None:
        run = self._runs.get(run_id)
        if run is None:
            if run_id in self._forgotten:
                return None  # a late record of a run already dropped: do not resurrect it
            run = self._runs[run_id] = _Run(run_id)
            info = runs.get(run_id)
            if info is not None:
                run.set_info(info)
        return run

    def apply(self, batch: Batch) -> set[str]:
        """Fold in the records not applied yet; returns the ids of the runs they touched."""
        records = batch.records
        touched: set[str] = set()
        with self._lock:
            last = self._applied.get(batch.source, 0)
            if not records or records[-1].seq <= last:
                return touched
            for run_id, info in batch.runs.items():
                known = self._runs.get(run_id)
                if known is not None:
                    known.set_info(info)
            labels_of: dict[int, Labels] = {}  # attribute dicts are shared within a batch
            fold = self._fold
            current_id: str | None = None
            run: _Run | None = None
            done = last
            try:
                for record in records:
                    seq = record[0]
                    if seq <= last:
                        continue
                    run_id = record[3]
                    if run_id != current_id:
                        current_id = run_id
                        run = self._run(run_id, batch.runs)
                        if run is not None:
                            touched.add(run_id)
                    if run is not None:
                        try:
                            fold(run, record, labels_of)
                        except Exception as exc:  # one bad record is skipped, not retried forever
                            safety.report("export.prometheus.record", exc)
                    done = seq
            finally:
                # what was folded in stays folded in, even if strict mode raised mid-batch
                self._applied[batch.source] = done
        return touched

    def _fold(self, run: _Run, record: Record, labels_of: dict[int, Labels]) -> None:
        _seq, kind, ts, _run_id, name, value, step, epoch, attrs = record
        if kind is _GAUGE or kind is _COUNTER or kind is _HISTOGRAM:
            if attrs:
                labels = labels_of.get(id(attrs))
                if labels is None:
                    labels = labels_of[id(attrs)] = attr_labels(attrs)
            else:
                labels = ()
            number = math.nan if value is None else value
            key = (self._families[kind].get(name) or self._family(name, kind), labels)
            if kind is _GAUGE:
                run.gauges[key] = number
            elif kind is _COUNTER:
                if number >= 0 and number != math.inf:  # a counter only goes up
                    run.counters[key] = run.counters.get(key, 0.0) + number
            else:
                hist = run.histograms.get(key)
                if hist is None:
                    hist = run.histograms[key] = _Histogram()
                hist.observe(number)
            if step is not None:
                run.step = step
            if epoch is not None:
                run.epoch = epoch
        elif kind is _SPAN:
            if attrs.get("span_kind") == "step" and value is not None:
                hist = run.step_durations.get(name)
                if hist is None:
                    hist = run.step_durations[name] = _Histogram()
                hist.observe(value)
                outcome = (name, str(attrs.get("status", "ok")))
                run.step_executions[outcome] = run.step_executions.get(outcome, 0) + 1
        elif kind is _LOG:
            level = str(attrs.get("level") or logging.getLevelName(int(value or 0))).lower()
            run.logs[level] = run.logs.get(level, 0) + 1
        elif kind is _EVENT:
            self._apply_event(run, name, ts, value, step, attrs)

    def _apply_event(
        self,
        run: _Run,
        name: str,
        ts: int,
        value: float | None,
        step: int | None,
        attrs: Mapping[str, Any],
    ) -> None:
        if name == RUN_START:
            run.status, run.ended, run.end_s = "running", False, None
            run.start_s = ts / 1e9
            run.progress_s = max(run.progress_s or 0.0, ts / 1e9)
        elif name == RUN_END:
            run.status = str(attrs.get("status", "finished"))
            run.ended = True
            run.end_s = ts / 1e9
            run.progress_s = max(run.progress_s or 0.0, ts / 1e9)
            if step is not None:
                run.step = step
            self._finished[run.run_id] = None
        elif name == HEARTBEAT and value is not None:
            run.progress_s = max(run.progress_s or 0.0, value)

    def evict(self, keep: Collection[str] = ()) -> list[str]:
        """Drop the oldest finished runs past ``keep_finished_runs`` (never those in ``keep``)."""
        dropped: list[str] = []
        with self._lock:
            excess = len(self._finished) - self.keep_finished_runs
            for run_id in list(self._finished):
                if excess <= 0:
                    break
                if run_id in keep:
                    continue
                self._forget(run_id)
                dropped.append(run_id)
                excess -= 1
        return dropped

    def forget(self, run_id: str) -> None:
        """Drop a run's series; later records of it are ignored."""
        with self._lock:
            self._forget(run_id)

    def _forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        self._finished.pop(run_id, None)
        self._forgotten[run_id] = None
        while len(self._forgotten) > 10_000:
            self._forgotten.popitem(last=False)

    # -- reading --------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def has_ended(self, run_id: str) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            return run is not None and run.ended

    def run_facts(self, run_id: str) -> tuple[str, str] | None:
        """``(experiment, rank)`` of a known run, or ``None``."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            labels = dict(run.labels)
            return labels.get("experiment", ""), labels.get("rank", "0")

    def world_size(self, run_id: str) -> int:
        with self._lock:
            run = self._runs.get(run_id)
            size = dict(run.info).get("world_size", "1") if run is not None else "1"
        try:
            return int(size)
        except ValueError:
            return 1

    def render(self, run_ids: Iterable[str] | None = None) -> list[Metric]:
        """The metric families of some runs (all by default)."""
        with self._lock:
            if run_ids is None:
                runs = list(self._runs.values())
            else:
                runs = [self._runs[r] for r in run_ids if r in self._runs]
            return _Renderer(self._help).render(runs)


_RUN_HELP = {
    pn.RUN_INFO: "Facts about a run (model, dataset, commit, host, tags); always 1.",
    pn.RUN_STATUS: "1 for the run's current status (running, finished, failed), else 0.",
    pn.RUN_START: "Start time of the run, seconds since the epoch.",
    pn.RUN_END: "End time of the run, seconds since the epoch.",
    pn.RUN_PROGRESS: "Last time the run made progress (a value, a step, an epoch end).",
    pn.RUN_STEP: "The run's last global step.",
    pn.RUN_EPOCH: "The run's last epoch number.",
    pn.STEP_DURATION: "Duration of pipeline steps (mlobs.step), seconds.",
    pn.STEP_EXECUTIONS: "Executions of pipeline steps (mlobs.step), by outcome.",
    pn.LOG_RECORDS: "Log records captured by mlobs, by level.",
}


class _Renderer:
    """Builds metric families from run state; runs under the state's lock."""

    def __init__(self, user_help: Mapping[str, tuple[str, str]]) -> None:
        self.user_help = user_help
        self.families: dict[str, Metric] = {}

    def family(self, name: str, kind: str, doc: str) -> Metric:
        metric = self.families.get(name)
        if metric is None:
            bare = name[: -len("_total")] if kind == "counter" else name
            metric = self.families[name] = Metric(bare, doc, kind)
        return metric

    def own(self, name: str, kind: str) -> Metric:
        return self.family(name, kind, _RUN_HELP[name])

    def histogram(self, metric: Metric, labels: dict[str, str], hist: _Histogram) -> None:
        name = metric.name
        total = 0
        for le, count in zip(_LE, hist.counts, strict=True):
            total += count
            metric.add_sample(name + "_bucket", {**labels, "le": le}, float(total))
        metric.add_sample(name + "_count", labels, float(total))
        metric.add_sample(name + "_sum", labels, hist.sum)

    def render(self, runs: Iterable[_Run]) -> list[Metric]:
        for run in runs:
            base = dict(run.labels)
            if run.run_id:
                self.own(pn.RUN_INFO, "gauge").add_sample(
                    pn.RUN_INFO, {**base, **dict(run.info)}, 1.0
                )
                statuses = STATUSES if run.status in STATUSES else (*STATUSES, run.status)
                status = self.own(pn.RUN_STATUS, "gauge")
                for s in statuses:
                    status.add_sample(pn.RUN_STATUS, {**base, "status": s}, float(s == run.status))
                for name, seconds in (
                    (pn.RUN_START, run.start_s),
                    (pn.RUN_END, run.end_s),
                    (pn.RUN_PROGRESS, run.progress_s),
                ):
                    if seconds is not None:
                        self.own(name, "gauge").add_sample(name, base, seconds)
            for name, number in ((pn.RUN_STEP, run.step), (pn.RUN_EPOCH, run.epoch)):
                if number is not None:
                    self.own(name, "gauge").add_sample(name, base, float(number))
            for (family, labels), value in run.gauges.items():
                kind, doc = self.user_help[family]
                self.family(family, kind, doc).add_sample(family, {**base, **dict(labels)}, value)
            for (family, labels), value in run.counters.items():
                kind, doc = self.user_help[family]
                self.family(family, kind, doc).add_sample(family, {**base, **dict(labels)}, value)
            for (family, labels), hist in run.histograms.items():
                kind, doc = self.user_help[family]
                self.histogram(self.family(family, kind, doc), {**base, **dict(labels)}, hist)
            for step_name, hist in run.step_durations.items():
                metric = self.own(pn.STEP_DURATION, "histogram")
                self.histogram(metric, {**base, "step": step_name}, hist)
            for (step_name, outcome), count in run.step_executions.items():
                self.own(pn.STEP_EXECUTIONS, "counter").add_sample(
                    pn.STEP_EXECUTIONS, {**base, "step": step_name, "status": outcome}, count
                )
            for level, count in run.logs.items():
                self.own(pn.LOG_RECORDS, "counter").add_sample(
                    pn.LOG_RECORDS, {**base, "level": level}, float(count)
                )
        return list(self.families.values())


class StateCollector:
    """A collector over (some runs of) a :class:`PromState`, for a registry or a push."""

    def __init__(self, state: PromState, run_ids: Iterable[str] | None = None) -> None:
        self.state = state
        self.run_ids = None if run_ids is None else list(run_ids)

    def collect(self) -> Iterable[Metric]:
        return self.state.render(self.run_ids)

    def describe(self) -> Iterable[Metric]:
        return ()  # names depend on what users log: no up-front registration
