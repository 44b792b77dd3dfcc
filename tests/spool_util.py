"""Reading spool directories back in tests."""

from __future__ import annotations

from pathlib import Path

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
