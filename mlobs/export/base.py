"""The contract between the spool and every sink."""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlobs.record.types import Record
from mlobs.spool.store import RunInfo

WRITES_REJECTED = "mlobs_export_writes_rejected_total"
"""Writes a backend refused as malformed (HTTP 400, gRPC INVALID_ARGUMENT); label: the sink.

Such a write is counted, logged and passed over rather than retried: the backend would refuse
the same bytes forever and hold up everything behind them (the OTLP specification says not to
retry them). The records stay in the spool file, readable with ``mlobs export``.
"""


class ExportResult(enum.Enum):
    SUCCESS = "success"
    """The backend acknowledged the whole batch: the sink's cursor moves past it."""
    FAILURE = "failure"
    """Nothing may be assumed delivered: the same batch is offered again after a backoff."""


@dataclass(frozen=True)
class Batch:
    """Records in spool order, with the runs they belong to (for resource attributes and tags)."""

    records: Sequence[Record]
    runs: Mapping[str, RunInfo]
    source: str = ""
    """The spool file the records come from."""


class Exporter(abc.ABC):
    """A sink. ``export`` is never called concurrently for one exporter and may block (it runs on
    the sink's own thread); it must be idempotent for a batch offered again after a failure
    wherever the backend allows."""

    name: str = "exporter"
    """The cursor name in the spool: stable across restarts, unique among configured sinks."""

    @abc.abstractmethod
    def export(self, batch: Batch) -> ExportResult: ...

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Push out anything the exporter itself buffers; ``True`` when done in time."""
        return True

    def shutdown(self, timeout: float = 10.0) -> None:  # noqa: B027 (optional hook, no-op default)
        """Release connections; called once, after the last export."""
