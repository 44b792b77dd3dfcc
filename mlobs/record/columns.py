"""A batch of buffered records as columns: what the flusher takes from the recorder and writes
as one spool chunk."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mlobs.record.types import FIELDS, BufferedRecord

KIND, TS, RUN_ID, NAME, VALUE, STEP, EPOCH, ATTRS = range(FIELDS)
"""Positions of a record's fields."""


class Columns:
    """A batch of records as columns, one list per field.

    The columns should hold the only references to the records' values: ``marshal`` looks every
    object that has another reference up in a table, to write it once, which nearly doubles the
    cost of a chunk. The recorder slices its buffer into batches and then lets go of the slices'
    records, so a batch owns them.
    """

    __slots__ = ("columns",)

    def __init__(self, columns: list[list[Any]]) -> None:
        self.columns = columns

    @classmethod
    def from_flat(cls, flat: list[Any], start: int, stop: int) -> Columns:
        """The records of ``flat[start:stop]``, ``FIELDS`` values per record, ``start`` and
        ``stop`` on record boundaries."""
        return cls([flat[start + field : stop : FIELDS] for field in range(FIELDS)])

    @classmethod
    def of(cls, records: Iterable[BufferedRecord]) -> Columns:
        """A batch of record tuples (tests, and records written by the flusher itself)."""
        columns = [list(column) for column in zip(*records, strict=True)]
        return cls(columns or [[] for _ in range(FIELDS)])

    def __len__(self) -> int:
        return len(self.columns[KIND])

    def records(self) -> list[BufferedRecord]:
        return list(zip(*self.columns, strict=True))

    def distinct(self, position: int) -> set[Any]:
        """The values of one field (hashable ones: kinds and run ids)."""
        column = self.columns[position]
        return {column[0]} if column_is_constant(column) else set(column)

    def drop_oldest(self, count: int) -> None:
        for column in self.columns:
            del column[:count]


def column_is_constant(column: list[Any]) -> bool:
    """Whether every value of a non-empty column equals the first."""
    first = column[0]
    # The last value first: a varying column (log records' attributes) usually fails there without
    # comparing every value. list.count takes an identical object as equal without calling __eq__.
    return bool(column[-1] == first) and column.count(first) == len(column)
