"""A read-only view over every spool file of a directory: what the CLI (and replay) read.

A run's records may be spread over several files (forked workers, ranks sharing a run id, a
pipeline rebuilt by ``mlobs.configure`` mid-run), each with its own ``seq``. The catalog merges
them back into one picture per run. It only ever opens files read-only (a live process may be
writing them; WAL lets both proceed) and never prints: callers decide how to show what it finds.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from mlobs.gpu import names as gpu_names
from mlobs.instrument.epoch import EPOCH_DURATION, EPOCH_THROUGHPUT
from mlobs.record.types import METRIC_KINDS, Kind, Record
from mlobs.spool.store import (
    HEARTBEAT,
    RUN_END,
    RunInfo,
    SpoolReader,
    directory_bytes,
    spool_files,
)

T = TypeVar("T")

FINAL_STATUSES = ("finished", "failed")
EPOCH_METRICS = (EPOCH_DURATION, EPOCH_THROUGHPUT)
ERROR_LEVEL = 40  # logging.ERROR: ERROR and CRITICAL records count as errors


class CatalogError(Exception):
    """A question the spool cannot answer; the message is meant for a person."""


class NoSpoolDirectory(CatalogError):
    pass


class RunNotFound(CatalogError):
    pass


class AmbiguousRun(CatalogError):
    pass


def metric_key(record: Record) -> str:
    """``split/name`` for a point with a split attribute, else the bare name; other labels
    follow in braces (``drift_score{feature=age,test=psi}``) so labelled series stay apart."""
    attrs = record.attrs
    if not attrs:
        return record.name
    labels = sorted(f"{k}={v}" for k, v in attrs.items() if k not in _NOT_IN_KEY)
    name = f"{record.name}{{{','.join(labels)}}}" if labels else record.name
    split = attrs.get("split")
    return f"{split}/{name}" if split else name


_NOT_IN_KEY = frozenset(("split", "scope"))


@dataclass
class StepStats:
    """Executions of one step name: each attempt of a retried step counts once."""

    name: str
    count: int = 0
    failures: int = 0
    retries: int = 0
    durations: list[float] = field(default_factory=list)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.durations) if self.durations else math.nan

    @property
    def p50_s(self) -> float:
        return statistics.median(self.durations) if self.durations else math.nan

    @property
    def max_s(self) -> float:
        return max(self.durations) if self.durations else math.nan


@dataclass(frozen=True)
class Problem:
    """Something that went wrong in a run: a failed span, an error log, the run's own failure."""

    kind: str
    """``step``, ``epoch`` (failed spans), ``log`` or ``run``."""
    ts_ns: int
    source: str
    """The step or epoch name, the logger, or the run name."""
    error_type: str | None
    message: str
    epoch: int | None = None
    step: int | None = None
    attempt: int | None = None
    retried: bool = False


@dataclass
class GpuStats:
    """One GPU's samples in a run, for ``mlobs show``: means and peaks, not every point."""

    model: str = ""
    utilization: list[float] = field(default_factory=list)
    memory_used_max: float = 0.0
    power: list[float] = field(default_factory=list)
    temperature_max: float | None = None
    failed: bool = False

    def add(self, record: Record) -> None:
        name, value = record.name, record.value
        if value is None or value != value:
            return
        self.model = str(record.attrs.get("model", self.model))
        if name == gpu_names.UTILIZATION:
            self.utilization.append(value)
        elif name == gpu_names.MEMORY_USED:
            self.memory_used_max = max(self.memory_used_max, value)
        elif name == gpu_names.POWER:
            self.power.append(value)
        elif name == gpu_names.TEMPERATURE and record.attrs.get("sensor") == "gpu":
            self.temperature_max = max(self.temperature_max or value, value)
        elif name == gpu_names.STATUS and record.attrs.get("state") == "failed" and value:
            self.failed = True

    def as_dict(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        return {
            "model": self.model,
            "utilization_mean": mean(self.utilization),
            "memory_used_max_bytes": self.memory_used_max,
            "power_mean_watts": mean(self.power),
            "temperature_max_celsius": self.temperature_max,
            "failed": self.failed,
        }


@dataclass
class RunSummary:
    """Everything ``mlobs show`` says about a run, computed in one pass over its records."""

    run: RunInfo
    error_type: str | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    epoch_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    steps: dict[str, StepStats] = field(default_factory=dict)
    errors: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    """Records of each kind (``gauge``, ``log``, ``span``...)."""
    gpus: dict[str, GpuStats] = field(default_factory=dict)
    """GPU samples by GPU (index, or ``index/MIG UUID``); kept out of the metric tables."""

    @property
    def epochs(self) -> list[int]:
        return sorted(self.epoch_metrics)

    @property
    def metric_names(self) -> list[str]:
        """Per-epoch metric columns: user metrics in first-seen order, epoch timings last."""
        names: dict[str, None] = {}
        for values in self.epoch_metrics.values():
            names.update(dict.fromkeys(values))
        user = [n for n in names if n not in EPOCH_METRICS]
        return user + [n for n in EPOCH_METRICS if n in names]

    def series(self, name: str) -> list[float]:
        """One value per epoch (NaN where the metric was not recorded in that epoch)."""
        return [self.epoch_metrics[e].get(name, math.nan) for e in self.epochs]


@dataclass(frozen=True)
class SpoolStats:
    files: int
    bytes: int
    records: int
    runs: int
    dropped: int
    """Records the disk budget dropped, summed over the files' ``meta``."""
    unreadable: dict[str, str]
    """File name to the reason it could not be read."""


def _merge_runs(rows: list[RunInfo]) -> RunInfo:
    # Prefer a final status (a failed rank fails the run), then the latest progress; the run
    # started when its earliest rank did.
    def rank(info: RunInfo) -> tuple[bool, bool, int]:
        progress = info.end_ns or info.last_progress_ns or info.start_ns
        return info.status in FINAL_STATUSES, info.status == "failed", progress

    best = max(rows, key=rank)
    progress = max((r.last_progress_ns or 0) for r in rows) or None
    return replace(best, start_ns=min(r.start_ns for r in rows), last_progress_ns=progress)


class Catalog:
    """Every spool file under ``directory``, each opened read-only on first use.

    Goes through :class:`SpoolReader` only, so it follows the file format wherever the store
    takes it. A file that cannot be read (not a spool, half-created, corrupt) is skipped and
    listed in :attr:`unreadable` instead of failing the whole view.

    Args:
        directory: the spool directory (``MLOBS_DIR``).
        must_exist: raise :class:`NoSpoolDirectory` when it is not a directory.
    """

    def __init__(self, directory: str | Path, *, must_exist: bool = True) -> None:
        self.directory = Path(directory)
        if must_exist and not self.directory.is_dir():
            what = "not a directory" if self.directory.exists() else "no spool directory"
            raise NoSpoolDirectory(f"{what}: {self.directory} (set --dir or MLOBS_DIR)")
        self._readers: dict[Path, SpoolReader] = {}
        self.unreadable: dict[str, str] = {}
        """File name to the reason it could not be read."""

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def files(self) -> list[Path]:
        return spool_files(self.directory)

    def read(self, path: Path, query: Callable[[SpoolReader], T], default: T) -> T:
        """``query(reader)`` on one file, or ``default`` (noted in :attr:`unreadable`) if the
        file cannot be read."""
        try:
            reader = self._readers.get(path)
            if reader is None:
                reader = self._readers[path] = SpoolReader.open(path)
            return query(reader)
        except Exception as exc:  # any file on disk may be damaged, half-written
            # or from another version; one bad file must not hide the others)
            self.unreadable[path.name] = f"{type(exc).__name__}: {exc}"
            return default

    def _each(self, query: Callable[[SpoolReader], list[T]]) -> Iterator[T]:
        for path in self.files():
            nothing: list[T] = []
            yield from self.read(path, query, nothing)

    # -- runs -----------------------------------------------------------------------------
    def runs(self) -> list[RunInfo]:
        """Every run, merged across files, newest first."""
        found: dict[str, list[RunInfo]] = {}
        homes: dict[str, set[Path]] = {}
        files = self.files()
        for path in files:
            no_rows: list[RunInfo] = []
            for info in self.read(path, _run_rows, no_rows):
                found.setdefault(info.run_id, []).append(info)
                homes.setdefault(info.run_id, set()).add(path)
        runs = {run_id: _merge_runs(rows) for run_id, rows in found.items()}
        # A file's runs table only sees the lifecycle events written to that file. The end or
        # the heartbeats of a run that its rows say is running may sit in another file (the
        # pipeline was rebuilt mid-run): look for them there, and only there.
        events: list[Record] = []
        for run_id, info in runs.items():
            if info.status not in FINAL_STATUSES:
                for path in files:
                    if path not in homes[run_id]:
                        events += self.read(path, partial(_lifecycle_events, run_id=run_id), [])
        for event in sorted(events, key=_ts):
            _apply_event(runs, event)
        return sorted(runs.values(), key=lambda r: r.start_ns, reverse=True)

    def find_run(self, ref: str) -> RunInfo:
        """A run by full id, by name (the latest of that name), or by a unique id prefix."""
        runs = self.runs()
        ref = ref.strip()
        if ref:
            for info in runs:
                if info.run_id == ref:
                    return info
            for info in runs:  # newest first: the latest run of that name
                if info.name == ref:
                    return info
            matches = [info for info in runs if info.run_id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if matches:
                ids = ", ".join(m.run_id[:12] for m in matches[:5])
                raise AmbiguousRun(
                    f"run id prefix {ref!r} matches {len(matches)} runs ({ids}); give more of it"
                )
        raise RunNotFound(f"no run {ref!r} in {self.directory} (`mlobs runs` lists them)")

    # -- records --------------------------------------------------------------------------
    def records(self, run_id: str, kinds: Iterable[Kind] | None = None) -> list[Record]:
        """A run's records from every file, in timestamp order (spans by their start).

        A list, not a stream: within a file records are in append order, which is not time
        order (a span is appended when it ends), so each file has to be sorted anyway.
        """
        wanted = None if kinds is None else list(kinds)
        out = list(self._each(lambda r: list(r.iter_records(run_id=run_id, kinds=wanted))))
        out.sort(key=_ts)  # stable: ties keep file, then seq, order
        return out

    def last_metrics(
        self, run_ids: Sequence[str], *, recent: int | None = None
    ) -> dict[str, dict[str, float]]:
        """The last value of each metric (``split/name``) of each run; counters are summed.

        Args:
            run_ids: the runs to look at.
            recent: only read each file's last ``recent`` records (all of a run's records where
                those hold none of its points). A listing of long runs stays fast; a metric last
                logged long ago is then left out.
        """
        out: dict[str, dict[str, float]] = {}
        for run_id in run_ids:
            points: list[Record] = []
            for path in self.files():
                query = partial(_metric_points, run_id=run_id, recent=recent)
                points += self.read(path, query, [])
            values = out[run_id] = {}
            for point in sorted(points, key=_ts):
                if point.name not in gpu_names.METRICS:  # per-GPU series: see mlobs show
                    _update(values, metric_key(point), point)
        return out

    def summarize(self, run: RunInfo) -> RunSummary:
        """Last metrics, per-epoch values, step statistics and errors of one run."""
        summary = RunSummary(run)
        for record in self.records(run.run_id):
            kind = record.kind.name.lower()
            summary.counts[kind] = summary.counts.get(kind, 0) + 1
            if record.is_metric and record.name in gpu_names.METRICS:
                gpu = str(record.attrs.get("gpu", "?"))
                summary.gpus.setdefault(gpu, GpuStats()).add(record)
            elif record.is_metric:
                key = metric_key(record)
                _update(summary.last_metrics, key, record)
                if record.epoch is not None:
                    _update(summary.epoch_metrics.setdefault(record.epoch, {}), key, record)
            elif record.kind is Kind.SPAN:
                _add_span(summary, record)
            elif record.kind is Kind.LOG and (record.value or 0) >= ERROR_LEVEL:
                attrs = record.attrs
                summary.errors.append(
                    Problem(
                        "log",
                        record.ts_ns,
                        record.name,
                        attrs.get("exception_type"),
                        str(attrs.get("message", "")),
                        record.epoch,
                        record.step,
                    )
                )
            elif (
                record.kind is Kind.EVENT
                and record.name == RUN_END
                and record.attrs.get("status") == "failed"
            ):
                summary.error_type = record.attrs.get("error_type")
                summary.errors.append(
                    Problem(
                        "run",
                        record.ts_ns,
                        run.name,
                        summary.error_type,
                        str(record.attrs.get("error", "")),
                        record.epoch,
                        record.step,
                    )
                )
        return summary

    # -- following ------------------------------------------------------------------------
    def tail(self, run_id: str | None = None, kinds: Iterable[Kind] = (Kind.LOG,)) -> Tail:
        return Tail(self, run_id, tuple(kinds))

    # -- the directory as a whole ---------------------------------------------------------
    def stats(self) -> SpoolStats:
        files = self.files()
        records = sum(self.read(p, lambda r: r.record_count(), 0) for p in files)
        dropped = sum(self.read(p, lambda r: int(r.meta().get("dropped", 0)), 0) for p in files)
        runs = len(self.runs())
        return SpoolStats(
            len(files),
            directory_bytes(self.directory),
            records,
            runs,
            dropped,
            dict(self.unreadable),
        )

    def backlog(self, sink: str) -> int | None:
        """Records not yet shipped to ``sink`` in the files it has shipped from (``None`` when
        it never shipped from any: those files were written without that sink)."""
        total: int | None = None
        for path in self.files():
            cursor = self.read(path, lambda r: r.cursor(sink), 0)
            if cursor > 0:
                total = (total or 0) + max(0, self.read(path, lambda r: r.last_seq(), 0) - cursor)
        return total


def _ts(record: Record) -> int:
    return record.ts_ns


def _run_rows(reader: SpoolReader) -> list[RunInfo]:
    return list(reader.runs().values())


def _lifecycle_events(reader: SpoolReader, run_id: str) -> list[Record]:
    events = reader.iter_records(run_id=run_id, kinds=[Kind.EVENT])
    return [e for e in events if e.name in (RUN_END, HEARTBEAT)]


def _metric_points(reader: SpoolReader, run_id: str, recent: int | None) -> list[Record]:
    after = max(0, reader.last_seq() - recent) if recent else 0
    points = list(reader.iter_records(run_id=run_id, kinds=METRIC_KINDS, after=after))
    if not points and after:
        points = list(reader.iter_records(run_id=run_id, kinds=METRIC_KINDS))
    return points


def _apply_event(runs: dict[str, RunInfo], event: Record) -> None:
    info = runs[event.run_id]
    if event.name == RUN_END and info.status not in FINAL_STATUSES:
        attrs = event.attrs
        runs[event.run_id] = replace(
            info,
            status=attrs.get("status", "finished"),
            end_ns=event.ts_ns,
            error=attrs.get("error"),
            last_progress_ns=max(event.ts_ns, info.last_progress_ns or 0),
        )
    elif event.name == HEARTBEAT and event.value is not None:
        progress = int(event.value * 1e9)
        if progress > (info.last_progress_ns or 0):
            runs[event.run_id] = replace(info, last_progress_ns=progress)


def _update(values: dict[str, float], key: str, point: Record) -> None:
    value = math.nan if point.value is None else float(point.value)
    if point.kind is Kind.COUNTER:  # increments: the total is what a person wants to see
        value += values.get(key, 0.0)
    values[key] = value


def _add_span(summary: RunSummary, record: Record) -> None:
    attrs = record.attrs
    span_kind = str(attrs.get("span_kind", "span"))
    failed = attrs.get("status") == "error"
    if span_kind == "step":
        stats = summary.steps.get(record.name)
        if stats is None:
            stats = summary.steps[record.name] = StepStats(record.name)
        stats.count += 1
        stats.failures += failed
        stats.retries += bool(attrs.get("retried"))
        if record.value is not None and not math.isnan(record.value):
            stats.durations.append(float(record.value))
    if failed and span_kind != "run":  # the run's own failure comes from its run_end event
        error = str(attrs.get("error", ""))
        error_type = attrs.get("error_type")
        if error_type is None and ": " in error:  # SDK spans keep "Type: message"
            error_type, error = error.split(": ", 1)
        attempt = attrs.get("attempt")
        summary.errors.append(
            Problem(
                span_kind,
                record.ts_ns,
                record.name,
                error_type,
                error,
                record.epoch,
                record.step,
                attempt if isinstance(attempt, int) else None,
                bool(attrs.get("retried")),
            )
        )


class Tail:
    """New records as they arrive, remembering the last ``seq`` read from each file.

    Files that appear later (a new process, a forked worker) are read from their start.
    """

    def __init__(self, catalog: Catalog, run_id: str | None, kinds: tuple[Kind, ...]) -> None:
        self.catalog = catalog
        self.run_id = run_id
        self.kinds = kinds
        self._after: dict[Path, int] = {}

    def _read(self, path: Path, keep: int | None = None) -> list[Record]:
        # The upper bound is read first: records committed while reading wait for the next poll
        # instead of being skipped.
        after = self._after.get(path, 0)

        def query(reader: SpoolReader) -> list[Record]:
            high = reader.last_seq()
            if high <= after:
                return []
            found = (
                r
                for r in reader.iter_records(run_id=self.run_id, kinds=self.kinds, after=after)
                if r.seq <= high
            )
            out = list(found if keep is None else deque(found, maxlen=keep))
            self._after[path] = high
            return out

        return self.catalog.read(path, query, [])

    def backlog(self, last: int) -> list[Record]:
        """The ``last`` newest matching records, oldest first; following starts after them."""
        out: list[Record] = []
        for path in self.catalog.files():
            out.extend(self._read(path, keep=last))
        out.sort(key=_ts)
        return out[-last:] if last > 0 else []

    def poll(self) -> list[Record]:
        """Matching records written since the previous call, in timestamp order."""
        out: list[Record] = []
        for path in self.catalog.files():
            out.extend(self._read(path))
        out.sort(key=_ts)
        return out
