"""The in-memory buffer every record is appended to on the caller's thread.

Appending is one ``deque.append`` (atomic under the GIL, never blocks); the flusher thread drains
the deque with ``popleft`` so a record appended while a drain is under way is never lost.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import repeat
from operator import call

from mlobs.record.types import BufferedRecord


class Recorder:
    """Append-only buffer with a wake-up event for the flusher.

    Args:
        flush_max_records: buffer length at which the flusher writes before its interval ends.
    """

    def __init__(self, flush_max_records: int = 10_000) -> None:
        self.buffer: deque[BufferedRecord] = deque()
        """The records themselves; producers may read its length, only :meth:`drain` removes."""
        self.append = self.buffer.append
        """Append one buffered record; bound once so the hot path skips an attribute lookup."""
        self.flush_max_records = flush_max_records
        self.wake = threading.Event()

    def __len__(self) -> int:
        return len(self.buffer)

    def drain(self, max_records: int | None = None) -> list[BufferedRecord]:
        """Remove and return up to ``max_records`` of the oldest buffered records."""
        buffer = self.buffer
        count = len(buffer) if max_records is None else min(len(buffer), max_records)
        # popleft, count times, looped in C: this runs on the flusher thread with the GIL held.
        return list(map(call, repeat(buffer.popleft, count)))

    def after_fork_in_child(self) -> None:
        """Forget what the parent buffered (the parent flushes it) and replace the lock-holding
        event, which may have been held by a parent thread at the moment of the fork."""
        self.buffer.clear()
        self.wake = threading.Event()
