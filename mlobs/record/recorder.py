"""The in-memory buffer every record is appended to on the caller's thread.

The buffer is one flat list holding the fields of each record in turn (``FIELDS`` per record), and
appending a record is ``list.extend(record_tuple)``: one C call, atomic under the GIL, never
blocking. The record's tuple is freed at once, so the buffer holds only the field values (floats,
ints, strings, shared dicts). A tuple per record kept alive in a deque cost twice the memory and a
young-generation garbage collection every few hundred calls, and draining it took a ``popleft``
per record. Here the flusher slices the buffer's first records into column batches and deletes
them with one ``del``; producers only ever append at the end, so a record appended meanwhile stays
in the buffer for the next pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mlobs.record.columns import Columns
from mlobs.record.types import FIELDS, BufferedRecord


class Recorder:
    """Append-only buffer with a wake-up event for the flusher.

    Args:
        flush_max_records: buffer length, in records, at which the flusher writes before its
            interval ends.
    """

    def __init__(self, flush_max_records: int = 10_000) -> None:
        self.buffer: list[Any] = []
        """The records' fields, flat; producers may read its length, only :meth:`drain` removes."""
        self.append: Callable[[BufferedRecord], None] = self.buffer.extend
        """Append one buffered record (a tuple of exactly ``FIELDS`` values); bound once so the
        hot path skips an attribute lookup."""
        self.flush_max_records = flush_max_records
        self.wake = threading.Event()

    def __len__(self) -> int:
        """Records buffered."""
        return len(self.buffer) // FIELDS

    def drain(self, batch_records: int) -> list[Columns]:
        """Remove every buffered record, returned in batches of at most ``batch_records``."""
        buffer = self.buffer
        end = len(buffer)  # whole records: each append adds one, atomically
        step = batch_records * FIELDS
        batches = [Columns.from_flat(buffer, i, min(i + step, end)) for i in range(0, end, step)]
        del buffer[:end]  # only what was taken: appends since then stay
        return batches

    def after_fork_in_child(self) -> None:
        """Forget what the parent buffered (the parent flushes it) and replace the lock-holding
        event, which may have been held by a parent thread at the moment of the fork."""
        self.buffer.clear()
        self.wake = threading.Event()
