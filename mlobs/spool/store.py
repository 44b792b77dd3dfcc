"""The durable spool: one SQLite file (WAL mode) per process under ``MLOBS_DIR``.

One file per process means ranks and forked workers never contend for a write lock; readers (the
CLI, sinks, replay) open the files they need with their own connections. Records are stored in
chunks (see :mod:`mlobs.spool.codec`), each row holding a run of consecutive records; a record's
``seq`` is its position in the file, strictly increasing and never reused after deletions, and is
every sink's cursor.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from mlobs.record.columns import ATTRS, KIND, RUN_ID, TS, Columns
from mlobs.record.types import Kind, Record, clock_offset_ns, wall_ns
from mlobs.spool import codec

SPOOL_SUFFIX = ".db"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_seq INTEGER NOT NULL,   -- seq of the chunk's first record
    last_seq INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    kinds INTEGER NOT NULL,       -- bit (1 << kind) for each kind present
    run_ids TEXT NOT NULL,        -- JSON array of the run ids present
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_last_seq ON chunks (last_seq);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    last_progress_ns INTEGER,
    error TEXT,
    resource TEXT NOT NULL,
    params TEXT NOT NULL,
    tags TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_INSERT = (
    "INSERT INTO chunks (first_seq, last_seq, first_ts, last_ts, kinds, run_ids, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_KINDS = {int(k): k for k in Kind}

RUN_START = "run_start"
RUN_END = "run_end"
HEARTBEAT = "heartbeat"
RECORDS_DROPPED = "records_dropped"


@dataclass(frozen=True)
class RunInfo:
    """A run as the spool knows it: identity, lineage, status and progress."""

    run_id: str
    name: str
    status: str
    start_ns: int
    end_ns: int | None = None
    last_progress_ns: int | None = None
    error: str | None = None
    resource: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        end = self.end_ns or self.last_progress_ns
        return None if end is None else (end - self.start_ns) / 1e9


def _hostname() -> str:
    import socket  # imported when a spool is opened, not by ``import mlobs`` (7 ms)

    return socket.gethostname()


def spool_filename(pid: int | None = None) -> str:
    """A name unique to this host, process and start time."""
    host = _hostname().replace(os.sep, "_")
    return f"spool-{host}-{pid or os.getpid()}-{time.time_ns()}{SPOOL_SUFFIX}"


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a spool file with the pragmas every user of it needs."""
    if readonly:
        conn = sqlite3.connect(
            f"{Path(path).resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=10.0,
            check_same_thread=False,
        )
    else:
        conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
        # synchronous is per connection: a sink's cursor updates want the writer's NORMAL too
        # (see Spool), not the default FULL, which fsyncs the WAL on every batch shipped
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


_EVENT = int(Kind.EVENT)


def _encode_attrs(attrs: dict[str, Any] | None) -> str | None:
    if not attrs:
        return None
    return json.dumps(attrs, separators=(",", ":"), default=str, allow_nan=True)


_SPAN = int(Kind.SPAN)
_ID_WIDTHS = (("trace_id", "032x"), ("span_id", "016x"), ("parent_span_id", "016x"))


def _hex_ids(attrs: dict[str, Any]) -> dict[str, Any]:
    """Span ids are buffered as integers (formatting costs more than the whole step record) and
    read back in W3C hex, as OpenTelemetry and log records write them."""
    out = dict(attrs)
    for key, width in _ID_WIDTHS:
        value = out.get(key)
        if type(value) is int:
            out[key] = format(value, width)
    return out


_NO_ATTRS: dict[str, Any] = {}
"""The attributes of every record recorded without any (shared: never mutate a record's attrs)."""


def decode_chunk(first_seq: int, payload: bytes, after: int = 0) -> list[Record]:
    """The records of one chunk with ``seq > after``. Records that shared an attribute dict when
    recorded share it again, and records without attributes share one empty dict: treat
    ``Record.attrs`` as read-only.

    Sinks read every record through here, so it works a column at a time and builds each record
    in C: ``zip`` of the columns and ``tuple.__new__(Record, ...)`` (``Record(...)`` and
    ``Record._make`` are Python-level). A fresh empty dict per record would be one more object for
    the garbage collector to track.
    """
    count, stored, clock_offset = codec.decode(payload)
    start = max(0, after + 1 - first_seq)
    n = count - start
    if n <= 0:
        return []
    columns: list[Iterable[Any]] = [
        repeat(column[0], n) if type(column) is tuple else column[start:] for column in stored
    ]
    kinds, stamps, attrs = stored[KIND], columns[TS], stored[ATTRS]
    columns[KIND] = map(_KINDS.__getitem__, columns[KIND])
    # mlobs.log's monotonic seconds (see mlobs.record.types)
    columns[TS] = [int(t * 1e9) + clock_offset if type(t) is float else t for t in stamps]
    if type(attrs) is tuple:
        columns[ATTRS] = repeat(_NO_ATTRS if attrs[0] is None else attrs[0], n)
    else:
        columns[ATTRS] = [_NO_ATTRS if a is None else a for a in columns[ATTRS]]
    if _SPAN in kinds:  # a constant column is a 1-tuple: ``in`` works for both
        kind_values = repeat(kinds[0], n) if type(kinds) is tuple else kinds[start:]
        columns[ATTRS] = [
            _hex_ids(a) if k == _SPAN and a is not _NO_ATTRS else a
            for k, a in zip(kind_values, columns[ATTRS], strict=True)
        ]
    seqs = range(first_seq + start, first_seq + count)
    return list(map(_new_record, zip(seqs, *columns, strict=True)))


_new_record = functools.partial(tuple.__new__, Record)


def row_to_run(row: Sequence[Any]) -> RunInfo:
    run_id, name, status, start_ns, end_ns, progress, error, resource, params, tags = row
    return RunInfo(
        run_id,
        name,
        status,
        start_ns,
        end_ns,
        progress,
        error,
        json.loads(resource),
        json.loads(params),
        json.loads(tags),
    )


class Spool:
    """Writer side of one process's spool file. Used by the flusher thread only.

    Args:
        path: the file to create or reopen, or ``None`` for a process-private in-memory spool
            (the fallback when the directory cannot be written).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is None:
            # A named shared-cache memory database, so sink threads can open it too.
            self.uri = f"file:mlobs-{os.getpid()}-{time.time_ns()}?mode=memory&cache=shared"
            self._conn = sqlite3.connect(self.uri, uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.uri = str(path)
            self._conn = connect(path)
            self._conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable against a crash of this process (the WAL is on disk); only an OS
            # crash can lose the last transactions, which FULL would cost an fsync per flush for.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA journal_size_limit = 67108864")
        self._conn.executescript(_SCHEMA)
        row = self._conn.execute("SELECT MAX(last_seq) FROM chunks").fetchone()
        self._next_seq = int(row[0] or 0) + 1
        self.bytes_written = 0
        """Chunk bytes this process has written here (the flusher paces its budget checks by it)."""
        with self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema", SCHEMA_VERSION),
                    ("pid", str(os.getpid())),
                    ("host", _hostname()),
                    ("created_ns", str(time.time_ns())),
                    ("dropped", "0"),
                ],
            )

    def open_reader(self) -> sqlite3.Connection:
        """A second connection to this spool, for a sink thread."""
        if self.path is None:
            return sqlite3.connect(self.uri, uri=True, check_same_thread=False)
        return connect(self.path)

    def write(self, batch: Columns) -> None:
        """Append a batch as one chunk, in one transaction with its effect on the runs table."""
        count = len(batch)
        if not count:
            return
        if any(len(column) != count for column in batch.columns):
            # a record of the wrong size was buffered: refuse rather than write an unreadable chunk
            raise ValueError(f"columns of unequal lengths: {list(map(len, batch.columns))}")
        clock_offset = clock_offset_ns()
        payload = codec.encode(batch, clock_offset)
        self.bytes_written += len(payload)
        present = batch.distinct(KIND)
        kinds = 0
        for kind in present:
            kinds |= 1 << kind
        run_ids = json.dumps(sorted(batch.distinct(RUN_ID)))
        stamps = batch.columns[TS]
        first = self._next_seq
        last = first + count - 1
        first_ts, last_ts = wall_ns(stamps[0], clock_offset), wall_ns(stamps[-1], clock_offset)
        with self._conn:
            self._conn.execute(_INSERT, (first, last, first_ts, last_ts, kinds, run_ids, payload))
            if _EVENT in present:
                for kind, ts, run_id, name, value, _step, _epoch, attrs in batch.records():
                    if kind == _EVENT:
                        ts = wall_ns(ts, clock_offset)
                        self._apply_event(run_id, name, ts, value, attrs or {})
        self._next_seq = last + 1

    def _apply_event(
        self, run_id: str, name: str, ts: int, value: float | None, attrs: dict[str, Any]
    ) -> None:
        if name == RUN_START:
            self._conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, 'running', ?, NULL, ?, NULL, ?, ?, ?)",
                (
                    run_id,
                    attrs.get("run_name", run_id),
                    ts,
                    ts,
                    _encode_attrs(attrs.get("resource")) or "{}",
                    _encode_attrs(attrs.get("params")) or "{}",
                    _encode_attrs(attrs.get("tags")) or "{}",
                ),
            )
        elif name == RUN_END:
            self._conn.execute(
                "UPDATE runs SET status = ?, end_ns = ?, last_progress_ns = ?, error = ? "
                "WHERE run_id = ?",
                (attrs.get("status", "finished"), ts, ts, attrs.get("error"), run_id),
            )
        elif name == HEARTBEAT and value is not None:
            self._conn.execute(
                "UPDATE runs SET last_progress_ns = ? WHERE run_id = ?", (int(value * 1e9), run_id)
            )

    def live_bytes(self) -> int:
        """Bytes in live pages: deleting rows frees pages for reuse but does not shrink the file."""
        page_size, pages, free = (
            self._conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_size", "page_count", "freelist_count")
        )
        return int(page_size * (pages - free))

    def drop_oldest(self, count: int) -> int:
        """Delete the oldest chunks holding at least ``count`` records; returns how many records
        went. The total is kept in ``meta`` so the file itself says what it lost."""
        with self._conn:
            rows = self._conn.execute(
                "SELECT id, last_seq - first_seq + 1 FROM chunks ORDER BY id"
            ).fetchall()
            doomed, dropped = [], 0
            for chunk_id, size in rows:
                if dropped >= count:
                    break
                doomed.append((chunk_id,))
                dropped += size
            self._conn.executemany("DELETE FROM chunks WHERE id = ?", doomed)
            self._conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'dropped'",
                (dropped,),
            )
        return dropped

    def record_count(self) -> int:
        row = self._conn.execute("SELECT SUM(last_seq - first_seq + 1) FROM chunks").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()


class SpoolReader:
    """Read side of one spool file: records after a cursor, runs, and per-sink cursors."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # The last chunk decoded by records_after: a sink's batch usually ends inside a chunk,
        # and its next batch starts there, so the chunk is decoded once, not once per batch.
        self._chunk: list[Record] = []

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = True) -> SpoolReader:
        return cls(connect(path, readonly=readonly))

    def records_after(self, seq: int, limit: int = 10_000) -> list[Record]:
        """Up to ``limit`` records with ``seq`` greater than the given one, in order."""
        out: list[Record] = []
        cached = self._chunk  # seqs within a chunk are consecutive
        if cached and cached[0].seq <= seq + 1 <= cached[-1].seq:
            out.extend(cached[seq + 1 - cached[0].seq :])
            seq = cached[-1].seq
            if len(out) >= limit:
                return out[:limit]
        rows = self.conn.execute(
            "SELECT first_seq, payload FROM chunks WHERE last_seq > ? ORDER BY first_seq", (seq,)
        )
        for first, payload in rows:
            records = self._chunk = decode_chunk(first, payload)
            out.extend(records[max(0, seq + 1 - first) :])
            if len(out) >= limit:
                return out[:limit]
        return out

    def iter_records(
        self, *, run_id: str | None = None, kinds: Iterable[Kind] | None = None, after: int = 0
    ) -> Iterator[Record]:
        """Records in ``seq`` order, optionally of one run and of some kinds only."""
        clauses, args = ["last_seq > ?"], [after]
        wanted: frozenset[Kind] | None = None
        if run_id is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(run_ids) WHERE value = ?)")
            args.append(run_id)  # type: ignore[arg-type]
        if kinds is not None:
            wanted = frozenset(kinds)
            mask = sum(1 << int(k) for k in wanted)
            clauses.append("kinds & ? != 0")
            args.append(mask)
        query = (
            f"SELECT first_seq, payload FROM chunks WHERE {' AND '.join(clauses)} "
            "ORDER BY first_seq"
        )
        for first, payload in self.conn.execute(query, args):
            for record in decode_chunk(first, payload, after):
                if (run_id is None or record.run_id == run_id) and (
                    wanted is None or record.kind in wanted
                ):
                    yield record

    def last_seq(self) -> int:
        row = self.conn.execute("SELECT MAX(last_seq) FROM chunks").fetchone()
        return int(row[0] or 0)

    def record_count(self) -> int:
        row = self.conn.execute("SELECT SUM(last_seq - first_seq + 1) FROM chunks").fetchone()
        return int(row[0] or 0)

    def first_unshipped_ts(self, seq: int) -> int | None:
        """Timestamp of the oldest record after ``seq`` (the age of a sink's backlog)."""
        records = self.records_after(seq, 1)
        return records[0].ts_ns if records else None

    def runs(self, run_ids: Iterable[str] | None = None) -> dict[str, RunInfo]:
        query = "SELECT * FROM runs"
        args: list[str] = []
        if run_ids is not None:
            args = sorted(set(run_ids))
            query += f" WHERE run_id IN ({','.join('?' * len(args))})"
        return {row[0]: row_to_run(row) for row in self.conn.execute(query, args)}

    def cursor(self, sink: str) -> int:
        row = self.conn.execute("SELECT seq FROM cursors WHERE sink = ?", (sink,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_cursor(self, sink: str, seq: int) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO cursors (sink, seq, updated_ns) VALUES (?, ?, ?) ON CONFLICT(sink) "
                "DO UPDATE SET seq = excluded.seq, updated_ns = excluded.updated_ns",
                (sink, seq, time.time_ns()),
            )

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        self.conn.close()


def spool_files(directory: str | Path) -> list[Path]:
    """Every spool file in ``directory``, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    files = [p for p in root.iterdir() if p.name.startswith("spool-") and p.suffix == SPOOL_SUFFIX]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def directory_bytes(directory: str | Path, exclude: Path | None = None) -> int:
    """Bytes on disk of the spool files in ``directory`` (with their WAL), ``exclude`` left out."""
    total = 0
    root = Path(directory)
    if not root.is_dir():
        return 0
    for entry in os.scandir(root):
        if not entry.name.startswith("spool-"):
            continue
        if exclude is not None and entry.name.startswith(exclude.name):
            continue
        try:
            total += entry.stat().st_size
        except OSError:
            continue
    return total
