"""An exporter that keeps what it receives in memory, for tests (users' and ours)."""

from __future__ import annotations

import threading

from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.record.types import Kind, Record
from mlobs.spool.store import RunInfo


class InMemoryExporter(Exporter):
    """Collects exported records. ``fail_next`` makes the next N exports fail (retry tests).

    Args:
        name: cursor name; give two instances different names to use both at once.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._runs: dict[str, RunInfo] = {}
        self.fail_next = 0
        self.calls = 0

    def export(self, batch: Batch) -> ExportResult:
        with self._lock:
            self.calls += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return ExportResult.FAILURE
            self._records.extend(batch.records)
            self._runs.update(batch.runs)
            return ExportResult.SUCCESS

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    @property
    def runs(self) -> dict[str, RunInfo]:
        with self._lock:
            return dict(self._runs)

    def of_kind(self, *kinds: Kind) -> list[Record]:
        return [r for r in self.records if r.kind in kinds]

    def metrics(self, name: str | None = None) -> list[Record]:
        return [r for r in self.records if r.is_metric and (name is None or r.name == name)]

    def values(self, name: str) -> list[float | None]:
        return [r.value for r in self.metrics(name)]

    def logs(self) -> list[Record]:
        return self.of_kind(Kind.LOG)

    def spans(self, name: str | None = None) -> list[Record]:
        return [r for r in self.of_kind(Kind.SPAN) if name is None or r.name == name]

    def events(self, name: str | None = None) -> list[Record]:
        return [r for r in self.of_kind(Kind.EVENT) if name is None or r.name == name]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._runs.clear()
