"""The durable spool: one SQLite file (WAL mode) per process under ``MLOBS_DIR``.

One file per process means ranks and forked workers never contend for a write lock; readers (the
CLI, sinks, replay) open the files they need with their own connections. Records get a strictly
increasing ``seq`` (AUTOINCREMENT, never reused after deletions) that is every sink's cursor.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlobs.record.types import METRIC_KINDS, BufferedRecord, Kind, Record

SPOOL_SUFFIX = ".db"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    step INTEGER,
    epoch INTEGER,
    attrs TEXT
);
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
    "INSERT INTO records (kind, ts_ns, run_id, name, value, step, epoch, attrs) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = "SELECT seq, kind, ts_ns, run_id, name, value, step, epoch, attrs FROM records"

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


def spool_filename(pid: int | None = None) -> str:
    """A name unique to this host, process and start time."""
    host = socket.gethostname().replace(os.sep, "_")
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
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _encode_attrs(attrs: dict[str, Any] | None) -> str | None:
    if not attrs:
        return None
    return json.dumps(attrs, separators=(",", ":"), default=str, allow_nan=True)


def row_to_record(row: Sequence[Any]) -> Record:
    seq, kind, ts_ns, run_id, name, value, step, epoch, attrs = row
    kind = Kind(kind)
    if value is None and kind in METRIC_KINDS:
        # SQLite stores NaN as NULL; a metric value is never None when recorded.
        value = float("nan")
    return Record(
        seq, kind, ts_ns, run_id, name, value, step, epoch, json.loads(attrs) if attrs else {}
    )


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
        with self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema", SCHEMA_VERSION),
                    ("pid", str(os.getpid())),
                    ("host", socket.gethostname()),
                    ("created_ns", str(time.time_ns())),
                    ("dropped", "0"),
                ],
            )

    def open_reader(self) -> sqlite3.Connection:
        """A second connection to this spool, for a sink thread."""
        if self.path is None:
            return sqlite3.connect(self.uri, uri=True, check_same_thread=False)
        return connect(self.path)

    def write(self, batch: Sequence[BufferedRecord]) -> None:
        """Append a batch in one transaction and apply run lifecycle events to the runs table."""
        rows = [
            (k, ts, run, name, value, step, epoch, _encode_attrs(attrs))
            for k, ts, run, name, value, step, epoch, attrs in batch
        ]
        with self._conn:
            self._conn.executemany(_INSERT, rows)
            for kind, ts, run_id, name, value, _step, _epoch, attrs in batch:
                if kind == Kind.EVENT:
                    self._apply_event(run_id, name, ts, value, attrs or {})

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
        """Delete the ``count`` oldest records; returns how many went. Counted in ``meta``."""
        with self._conn:
            cur = self._conn.execute(
                "DELETE FROM records WHERE seq IN (SELECT seq FROM records ORDER BY seq LIMIT ?)",
                (count,),
            )
            dropped = cur.rowcount
            self._conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'dropped'",
                (dropped,),
            )
        return dropped

    def record_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()


class SpoolReader:
    """Read side of one spool file: records after a cursor, runs, and per-sink cursors."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = True) -> SpoolReader:
        return cls(connect(path, readonly=readonly))

    def records_after(self, seq: int, limit: int = 10_000) -> list[Record]:
        rows = self.conn.execute(f"{_SELECT} WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [row_to_record(r) for r in rows]

    def iter_records(
        self, *, run_id: str | None = None, kinds: Iterable[Kind] | None = None, after: int = 0
    ) -> Iterator[Record]:
        clauses, args = ["seq > ?"], [after]
        if run_id is not None:
            clauses.append("run_id = ?")
            args.append(run_id)  # type: ignore[arg-type]
        if kinds is not None:
            ks = [int(k) for k in kinds]
            clauses.append(f"kind IN ({','.join('?' * len(ks))})")
            args.extend(ks)
        query = f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY seq"
        for row in self.conn.execute(query, args):
            yield row_to_record(row)

    def last_seq(self) -> int:
        row = self.conn.execute("SELECT MAX(seq) FROM records").fetchone()
        return int(row[0] or 0)

    def first_unshipped_ts(self, seq: int) -> int | None:
        row = self.conn.execute(
            "SELECT ts_ns FROM records WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
        ).fetchone()
        return None if row is None else int(row[0])

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
