"""Ship what spool files hold to sinks after the fact: offline runs, crashed runs, and sinks that
were down until the recording process exited.

Each sink ships from its own cursor in each file, exactly as a live shipper would, so a replay
after a partial shipment sends only the rest, and running it twice sends nothing twice. Files of
processes still alive on this host are left to their own shippers (two shippers on one cursor
would send batches twice).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.export.shipper import Backoff
from mlobs.spool.store import SpoolReader, connect, spool_files


@dataclass
class FileReplay:
    """One spool file and what each sink still has to ship from it."""

    path: Path
    pending: dict[str, int] = field(default_factory=dict)
    """Sink name to records past its cursor."""
    skipped: str | None = None
    """Why the file is not replayed (a live process owns it, or it cannot be read)."""


@dataclass
class ReplayOutcome:
    shipped: dict[str, int] = field(default_factory=dict)
    """Sink name to records shipped."""
    skipped_old: dict[str, int] = field(default_factory=dict)
    """Sink name to records older than ``since`` (passed over, the cursor moved past them)."""
    failed: dict[str, str] = field(default_factory=dict)
    """``file: sink`` to the reason it stopped early; its records stay for a later replay."""


def owner_alive(path: Path) -> bool:
    """Whether the process that wrote this spool file still runs on this host.

    Spool files are named ``spool-HOST-PID-STARTNS.db``; a file from another host is never live
    here. A reused PID makes a dead file look live: replay then skips it, the safe mistake.
    """
    parts = path.stem.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid = parts[0].removeprefix("spool-"), int(parts[1])
    if host != socket.gethostname().replace(os.sep, "_") or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plan(
    directory: str | Path, sinks: Iterable[str], *, include_live: bool = False
) -> list[FileReplay]:
    """Every spool file under ``directory`` with each sink's backlog in it."""
    names = list(sinks)
    files = []
    for path in spool_files(directory):
        item = FileReplay(path)
        files.append(item)
        if not include_live and owner_alive(path):
            item.skipped = "its process is still running (it ships this file itself)"
            continue
        try:
            reader = SpoolReader.open(path)
            try:
                last = reader.last_seq()
                item.pending = {name: max(0, last - reader.cursor(name)) for name in names}
            finally:
                reader.close()
        except Exception as exc:  # a damaged or foreign file must not stop the others
            item.skipped = f"unreadable: {type(exc).__name__}: {exc}"
    return files


def replay(
    files: Iterable[FileReplay],
    exporters: Iterable[Exporter],
    *,
    since_ns: int | None = None,
    batch_size: int = 5_000,
    attempts: int = 5,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayOutcome:
    """Ship each file's backlog to each exporter, from the exporter's cursor in that file.

    A failed export is retried ``attempts`` times with backoff; then that sink stops for that
    file (its cursor stays where it got to) and the replay goes on with the others.
    ``on_progress(n)`` is called with each batch's record count, shipped or passed over.
    """
    outcome = ReplayOutcome()
    sinks = list(exporters)
    for item in files:
        if item.skipped is not None:
            continue
        reader = SpoolReader(connect(item.path))
        try:
            for exporter in sinks:
                error = _replay_one(
                    reader,
                    item.path.name,
                    exporter,
                    since_ns,
                    batch_size,
                    attempts,
                    outcome,
                    on_progress,
                )
                if error is not None:
                    outcome.failed[f"{item.path.name}: {exporter.name}"] = error
        finally:
            reader.close()
    return outcome


def _replay_one(
    reader: SpoolReader,
    source: str,
    exporter: Exporter,
    since_ns: int | None,
    batch_size: int,
    attempts: int,
    outcome: ReplayOutcome,
    on_progress: Callable[[int], None] | None,
) -> str | None:
    name = exporter.name
    cursor = reader.cursor(name)
    backoff = Backoff(base=0.2, cap=5.0)
    while True:
        records = reader.records_after(cursor, batch_size)
        if not records:
            return None
        wanted = records if since_ns is None else [r for r in records if r.ts_ns >= since_ns]
        if wanted:
            runs = reader.runs({r.run_id for r in wanted if r.run_id})
            for attempt in range(1, attempts + 1):
                try:
                    result = exporter.export(Batch(wanted, runs, source))
                except Exception as exc:  # an exporter bug must not end the whole replay
                    result, reason = ExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
                else:
                    reason = "the backend did not accept the batch"
                if result is ExportResult.SUCCESS:
                    break
                if attempt == attempts:
                    return f"{reason} ({attempts} attempts); {len(records)}+ records left"
                time.sleep(backoff.next_delay())
            backoff.reset()
        outcome.shipped[name] = outcome.shipped.get(name, 0) + len(wanted)
        if len(wanted) < len(records):
            outcome.skipped_old[name] = (
                outcome.skipped_old.get(name, 0) + len(records) - len(wanted)
            )
        cursor = records[-1].seq
        reader.set_cursor(name, cursor)
        if on_progress is not None:
            on_progress(len(records))
