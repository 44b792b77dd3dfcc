"""The checks ``mlobs doctor`` runs: settings, the spool directory, and one per sink.

A sink adds its check with ``@sink_check("name")``: a function of the configuration (and the
spool catalog, for its shipping backlog) returning a :class:`Check`, or ``None`` when that sink is
not configured. A check that raises is reported as failed, never as a traceback.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from mlobs.config import Config, resolve
from mlobs.spool.catalog import Catalog


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str


SinkCheck = Callable[[Config, Catalog | None], Check | None]
SINK_CHECKS: dict[str, SinkCheck] = {}


def sink_check(name: str) -> Callable[[SinkCheck], SinkCheck]:
    """Register the check of sink ``name``."""

    def register(fn: SinkCheck) -> SinkCheck:
        SINK_CHECKS[name] = fn
        return fn

    return register


def resolve_recording(overrides: dict[str, str] | None) -> tuple[Config, list[Check]]:
    """The configuration in force, and a failed check for each value that could not be parsed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = resolve(overrides)
    problems = [Check("setting", False, str(w.message)) for w in caught]
    return config, problems


def writable_dir(path: Path) -> tuple[bool, str]:
    """Whether files can be created in ``path`` (or, if it does not exist yet, in the directory
    it would be created in), found out by creating and removing a file: permission bits lie for
    root, read-only mounts and full disks."""
    target = path
    while not target.exists():
        if target.parent == target:
            return False, f"no existing parent of {path}"
        target = target.parent
    if not target.is_dir():
        return False, f"{target} is a file, not a directory"
    try:
        fd, name = tempfile.mkstemp(prefix=".mlobs-doctor-", dir=target)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return False, f"cannot create a file in {target}: {exc.strerror or exc}"
    return True, "writable" if target == path else f"will be created (in writable {target})"


def spool_checks(config: Config, catalog: Catalog | None) -> list[Check]:
    directory = Path(config.dir)
    ok, detail = writable_dir(directory)
    checks = [Check("spool directory", ok, f"{directory.resolve()}: {detail}")]
    if catalog is None:
        return checks
    stats = catalog.stats()
    detail = (
        f"{stats.files} files, {stats.bytes:,} bytes, {stats.records:,} records, "
        f"{stats.runs} runs, {stats.dropped:,} dropped by the disk budget "
        f"({config.spool_max_bytes:,} bytes)"
    )
    checks.append(Check("spool contents", True, detail))
    for name, why in sorted(stats.unreadable.items()):
        checks.append(Check("spool file", False, f"{name} cannot be read: {why}"))
    return checks


def sink_checks(config: Config, catalog: Catalog | None) -> list[Check]:
    checks: list[Check] = []
    for name, fn in SINK_CHECKS.items():
        try:
            result = fn(config, catalog)
        except Exception as exc:  # a broken check is a finding, not a crash of the doctor
            result = Check(f"sink {name}", False, f"check failed: {type(exc).__name__}: {exc}")
        if result is not None:
            checks.append(result)
    if not checks:
        checks.append(Check("sinks", True, "none configured: records stay in the local spool"))
    return checks


def _backlog(catalog: Catalog | None, cursor: str) -> str:
    behind = catalog.backlog(cursor) if catalog is not None else None
    return "" if behind is None else f"; {behind:,} spooled records not shipped yet"


@sink_check("jsonl")
def jsonl_check(config: Config, catalog: Catalog | None) -> Check | None:
    if not config.jsonl:
        return None
    if config.jsonl == "-":
        return Check("sink jsonl", True, "standard error" + _backlog(catalog, "jsonl"))
    path = Path(config.jsonl)
    backlog = _backlog(catalog, f"jsonl:{path.name}")
    if path.is_dir():
        return Check("sink jsonl", False, f"{path} is a directory")
    if path.exists():
        try:
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            return Check("sink jsonl", False, f"{path}: cannot append: {exc.strerror or exc}")
        return Check("sink jsonl", True, f"{path}: writable{backlog}")
    ok, detail = writable_dir(path.parent)
    return Check("sink jsonl", ok, f"{path}: {detail if not ok else 'will be created'}{backlog}")
