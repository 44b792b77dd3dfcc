"""Reading spool directories back in tests, and making records by hand for exporter tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlobs.record.types import Kind, Record
from mlobs.spool.store import SpoolReader, spool_files


def read_all(directory: Path, kind: Kind | None = None) -> list[Record]:
    out: list[Record] = []
    for path in spool_files(directory):
        reader = SpoolReader.open(path)
        try:
            out.extend(reader.iter_records(kinds=None if kind is None else [kind]))
        finally:
            reader.close()
    return out


def metric_values(directory: Path, name: str) -> list[float | None]:
    return [r.value for r in read_all(directory, Kind.GAUGE) if r.name == name]


TS = 1_700_000_000_123_456_789
"""A timestamp in nanoseconds whose last digits show whether a sink keeps them."""


def make_record(
    seq: int,
    kind: Kind,
    name: str,
    value: float | None,
    *,
    ts: int = TS,
    run_id: str = "r1",
    step: int | None = None,
    epoch: int | None = None,
    attrs: dict[str, Any] | None = None,
) -> Record:
    """A record as a sink receives it from the spool."""
    return Record(seq, kind, ts, run_id, name, value, step, epoch, attrs or {})
