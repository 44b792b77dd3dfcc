"""Moves records from a spool file to one exporter, from that exporter's own cursor.

One shipper thread per sink: a slow or dead backend delays only its own sink. The cursor advances
only after ``ExportResult.SUCCESS``; a failure is retried after an exponential backoff with full
jitter, so order within the spool (and within each run) is preserved.

After a few failures in a row the sink's circuit opens: only the shipper thread keeps probing the
backend (once per backoff delay), and ``mlobs.flush()`` or the exit of the program skip that sink
at once instead of waiting on a dead backend. The records stay in the spool until it answers, or
until ``mlobs replay`` ships them.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

from mlobs import safety
from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.spool.store import SpoolReader

_run_id = attrgetter("run_id")

EXPORTED = "mlobs_records_exported_total"
EXPORT_FAILURES = "mlobs_export_failures_total"
CIRCUIT_OPENED = "mlobs_export_circuit_opened_total"


class Backoff:
    """Exponential backoff with full jitter: a delay in ``[0, min(cap, base * 2**n)]``."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


class CircuitBreaker:
    """Open after ``threshold`` failed exports in a row, closed again by the next success."""

    def __init__(self, threshold: int = 3) -> None:
        self.threshold = threshold
        self.failures_in_row = 0

    @property
    def open(self) -> bool:
        return self.failures_in_row >= self.threshold

    def record(self, ok: bool) -> bool:
        """Count an outcome; ``True`` when this failure is the one that opened the circuit."""
        if ok:
            self.failures_in_row = 0
            return False
        self.failures_in_row += 1
        return self.failures_in_row == self.threshold


@dataclass(frozen=True)
class SinkStatus:
    """One sink's shipping state, for self-metrics and ``mlobs doctor``."""

    sink: str
    cursor: int
    backlog: int
    """Records in the spool past the sink's cursor."""
    oldest_unshipped_ns: int | None
    """Timestamp of the first record the sink has not shipped yet."""
    circuit_open: bool
    failures_in_row: int


class Shipper:
    """Ships one spool file to one exporter.

    Args:
        exporter: the sink.
        open_connection: opens a connection to the spool file for this shipper's own use.
        source: the spool file's name, passed on in each :class:`Batch`.
        batch_size: records per export call.
        interval: seconds between checks for new records when nobody calls :meth:`notify`.
    """

    def __init__(
        self,
        exporter: Exporter,
        open_connection: Callable[[], sqlite3.Connection],
        *,
        source: str = "",
        batch_size: int = 5_000,
        interval: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.exporter = exporter
        self._open_connection = open_connection
        self.source = source
        self.batch_size = batch_size
        self.interval = interval
        self.backoff = backoff or Backoff()
        self.breaker = CircuitBreaker()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: SpoolReader | None = None
        self._cursor: int | None = None
        self._export_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._status_reader: SpoolReader | None = None

    def reader(self) -> SpoolReader:
        if self._reader is None:
            self._reader = SpoolReader(self._open_connection())
        return self._reader

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"mlobs-ship-{self.exporter.name}", daemon=True
        )
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        delay = 0.0
        while not self._stopping.is_set():
            if delay:
                # Backing off: sleep the whole delay, new records or not.
                self._stopping.wait(delay)
            else:
                self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                caught_up = self.ship_available(probe=True)
            except Exception as exc:
                safety.report(f"export.{self.exporter.name}", exc)
                caught_up = False
            delay = 0.0 if caught_up else self.backoff.next_delay()

    def ship_available(self, deadline: float | None = None, *, probe: bool = False) -> bool:
        """Export batches until the spool is drained (``True``) or an export fails (``False``).

        While the circuit is open only the shipper thread (``probe=True``) tries the backend;
        other callers get ``False`` at once.
        """
        if self.breaker.open and not probe:
            return False
        with self._export_lock:
            reader = self.reader()
            name = self.exporter.name
            # only this shipper moves its cursor in this file, so the last one it set is current
            cursor = self._cursor if self._cursor is not None else reader.cursor(name)
            while deadline is None or time.monotonic() < deadline:
                records = reader.records_after(cursor, self.batch_size)
                if not records:
                    return True
                run_ids = set(map(_run_id, records))  # in C: a batch is thousands of records
                run_ids.discard("")
                runs = reader.runs(run_ids)
                try:
                    result = self.exporter.export(Batch(records, runs, self.source))
                except Exception as exc:
                    safety.report(f"export.{name}", exc)
                    result = ExportResult.FAILURE
                if result is not ExportResult.SUCCESS:
                    safety.self_metrics.inc(EXPORT_FAILURES, name)
                    if self.breaker.record(ok=False):
                        safety.self_metrics.inc(CIRCUIT_OPENED, name)
                        safety.warn(
                            f"circuit:{name}",
                            "mlobs: sink %s failed %d times in a row; records wait in the spool "
                            "and are retried in the background",
                            name,
                            self.breaker.failures_in_row,
                        )
                    return False
                cursor = self._cursor = records[-1].seq
                reader.set_cursor(name, cursor)
                safety.self_metrics.inc(EXPORTED, name, len(records))
                self.breaker.record(ok=True)
                self.backoff.reset()
                if len(records) < self.batch_size:
                    return True  # a short batch: the spool held nothing more when it was read
            return False

    def status(self) -> SinkStatus:
        """Where this sink stands. Reads through a connection of its own, so that a scrape of
        the self-metrics never waits on an export blocked by a slow backend."""
        with self._status_lock:
            if self._status_reader is None:
                self._status_reader = SpoolReader(self._open_connection())
            reader = self._status_reader
            cursor = reader.cursor(self.exporter.name)
            return SinkStatus(
                sink=self.exporter.name,
                cursor=cursor,
                backlog=max(0, reader.last_seq() - cursor),
                oldest_unshipped_ns=reader.first_unshipped_ts(cursor),
                circuit_open=self.breaker.open,
                failures_in_row=self.breaker.failures_in_row,
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, then try to ship what is left until ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        try:
            if not self.ship_available(deadline):
                safety.warn(
                    f"shutdown:{self.exporter.name}",
                    "mlobs: sink %s did not catch up before shutdown; the rest stays in the "
                    "spool (`mlobs replay` ships it)",
                    self.exporter.name,
                )
        except Exception as exc:
            safety.report(f"export.{self.exporter.name}", exc)
        try:
            self.exporter.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            safety.report(f"export.{self.exporter.name}.shutdown", exc)
        for reader in (self._reader, self._status_reader):
            if reader is not None:
                reader.close()
        self._reader = self._status_reader = None
