"""The background thread that moves buffered records into the spool.

It wakes on its interval, when the buffer passes its size trigger, at epoch end and on
``mlobs.flush()``; each pass drains the buffer in chunks and writes each chunk in one transaction.
A failed write keeps the records in memory for the next pass (bounded; the oldest are dropped and
counted past the bound), so a full disk delays data instead of crashing training.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mlobs import safety
from mlobs.record.columns import Columns
from mlobs.record.recorder import Recorder
from mlobs.record.types import BufferedRecord, Kind
from mlobs.spool.store import RECORDS_DROPPED, Spool, directory_bytes

logger = logging.getLogger("mlobs")

CHUNK = 20_000
SIZE_POLL = 0.05
BUDGET_MAX_ROUNDS = 20
BUDGET_RECHECK_S = 5.0
"""Longest time between two looks at the directory's size (other processes' files grow too)."""


class Flusher:
    """Drains a :class:`Recorder` into a :class:`Spool` on a daemon thread.

    Args:
        recorder: the buffer to drain.
        spool: the spool to write.
        interval: seconds between passes.
        max_bytes: disk budget of the spool directory.
        buffer_max_records: records kept in memory while writes fail.
        before_flush: called at the start of each pass (heartbeats are emitted there).
        after_write: called after records were committed (sinks are woken there).
    """

    def __init__(
        self,
        recorder: Recorder,
        spool: Spool,
        *,
        interval: float,
        max_bytes: int,
        buffer_max_records: int,
        before_flush: Callable[[], None] = lambda: None,
        after_write: Callable[[], None] = lambda: None,
    ) -> None:
        self.recorder = recorder
        self.spool = spool
        self.interval = interval
        self.max_bytes = max_bytes
        self.buffer_max_records = buffer_max_records
        self._before_flush = before_flush
        self._after_write = after_write
        # Measuring the directory costs a scan and three PRAGMAs, ~0.2 ms: a real cost for a
        # training loop that flushes small batches. Between two measurements the budget is
        # known to hold while this file has grown by less than half the headroom left.
        self._headroom = 0
        self._written_at_check = 0
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._pending: list[Columns] = []
        """Batches whose write failed, written first at the next pass."""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mlobs-flusher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # The size trigger is polled here rather than checked on every append: the hot path
        # then does nothing but append, and a poll every SIZE_POLL seconds costs nothing.
        recorder = self.recorder
        last = time.monotonic()
        while not self._stopping.is_set():
            woken = recorder.wake.wait(min(self.interval, SIZE_POLL))
            due = time.monotonic() - last >= self.interval
            if not (woken or due or len(recorder) >= recorder.flush_max_records):
                continue
            recorder.wake.clear()
            last = time.monotonic()
            try:
                self.flush()
            except Exception as exc:  # never let the thread die: the next pass retries
                safety.report("spool.flusher", exc)

    def flush(self, *, wake_sinks: bool = True) -> int:
        """Write everything buffered so far; returns the number of records committed.

        ``wake_sinks=False`` skips the ``after_write`` call, for a caller that ships the records
        itself right after (waking the sinks' threads too would only hand the work over to them).
        """
        with self._lock:
            try:
                self._before_flush()
            except Exception as exc:
                safety.report("spool.before_flush", exc)
            written = self._write_buffered()
            if written:
                self.written += written
                self._enforce_budget()
            if written and wake_sinks:
                try:
                    self._after_write()
                except Exception as exc:
                    safety.report("spool.after_write", exc)
            return written

    def _write_buffered(self) -> int:
        """Write what is buffered (and what gets buffered meanwhile) in chunks of at most
        ``CHUNK`` records; returns the number of records committed."""
        written = 0
        while True:
            batches = self._pending or self.recorder.drain(CHUNK)
            self._pending = []
            if not batches:
                return written
            for i, batch in enumerate(batches):
                try:
                    self.spool.write(batch)
                except (sqlite3.Error, OSError) as exc:
                    self._keep_pending(batches[i:])
                    safety.report("spool.write", exc)
                    return written
                written += len(batch)

    def _keep_pending(self, batches: list[Columns]) -> None:
        # Take the rest of the buffer in as well so the bound below covers everything in memory.
        pending = batches + self.recorder.drain(CHUNK)
        overflow = sum(map(len, pending)) - self.buffer_max_records
        if overflow > 0:
            left = overflow
            while pending and len(pending[0]) <= left:
                left -= len(pending.pop(0))
            if left:
                pending[0].drop_oldest(left)
            safety.self_metrics.inc(safety.RECORDS_DROPPED, "buffer_full", overflow)
            logger.warning(
                "mlobs: spool unwritable, dropped the %d oldest buffered records", overflow
            )
        self._pending = pending

    def _enforce_budget(self) -> None:
        if self.spool.path is None:
            return
        grown = self.spool.bytes_written - self._written_at_check
        if 2 * grown < self._headroom and time.monotonic() < self._next_check:
            return
        others = directory_bytes(self.spool.path.parent, exclude=self.spool.path)
        dropped = 0
        for _ in range(BUDGET_MAX_ROUNDS):
            own = self.spool.live_bytes()
            excess = others + own - self.max_bytes
            if excess <= 0:
                self._headroom = -excess
                self._written_at_check = self.spool.bytes_written
                self._next_check = time.monotonic() + BUDGET_RECHECK_S
                break
            rows = self.spool.record_count()
            if rows == 0:
                break
            # Drop a share of rows proportional to the excess, plus a margin so this runs rarely.
            share = min(1.0, excess / own + 0.05)
            n = self.spool.drop_oldest(max(1, int(rows * share)))
            if n == 0:
                break
            dropped += n
        if dropped:
            safety.self_metrics.inc(safety.RECORDS_DROPPED, "disk_budget", dropped)
            safety.warn(
                "disk_budget",
                "mlobs: spool over its %d-byte disk budget in %s: dropped the %d oldest records "
                "(further drops in the next minute are only counted)",
                self.max_bytes,
                Path(self.spool.path).parent,
                dropped,
            )
            marker: BufferedRecord = (
                int(Kind.EVENT),
                time.time_ns(),
                "",
                RECORDS_DROPPED,
                float(dropped),
                None,
                None,
                {"reason": "disk_budget"},
            )
            self.spool.write(Columns.of([marker]))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread after one last pass."""
        self._stopping.set()
        self.recorder.wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.flush()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._pending = []
        self._next_check = 0.0  # the child's own file: measure the directory at its first flush
        self._thread = None
        self._stopping = threading.Event()
