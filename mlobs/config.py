"""Every setting mlobs reads, in one place.

Precedence is argument to :func:`mlobs.configure` > environment variable > default. A value that
cannot be parsed warns once and falls back to the next source, so a typo in a job file never stops
a training run.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

# Environment variable names: the documented interface. The README table mirrors this list.
MLOBS_DIR = "MLOBS_DIR"
"""Directory holding the spool (one SQLite file per process). Default ``.mlobs``."""
MLOBS_FLUSH_INTERVAL = "MLOBS_FLUSH_INTERVAL"
"""Seconds between background flushes to the spool; a SIGKILL loses at most this much. Default 1."""
MLOBS_FLUSH_MAX_RECORDS = "MLOBS_FLUSH_MAX_RECORDS"
"""Buffered records that wake the flusher before its interval ends. Default 10000."""
MLOBS_SPOOL_MAX_BYTES = "MLOBS_SPOOL_MAX_BYTES"
"""Disk budget of the spool directory; past it the oldest records are dropped and counted."""
MLOBS_BUFFER_MAX_RECORDS = "MLOBS_BUFFER_MAX_RECORDS"
"""Records held in memory while the spool cannot be written; past it the oldest are dropped."""
MLOBS_STRICT = "MLOBS_STRICT"
"""``1`` makes mlobs' own failures raise instead of being logged and counted (for tests)."""
MLOBS_JSONL = "MLOBS_JSONL"
"""Path of a JSON-lines sink file, or ``-`` for standard error. Unset: no JSON-lines sink."""
MLOBS_CAPTURE_LOGS = "MLOBS_CAPTURE_LOGS"
"""``1`` (default) records stdlib ``logging`` records into the spool once mlobs is started."""
MLOBS_LOG_LEVEL = "MLOBS_LOG_LEVEL"
"""Lowest level of captured log records. Default ``INFO``."""
MLOBS_LOG_ALL_RANKS = "MLOBS_LOG_ALL_RANKS"
"""``1`` records ``mlobs.log`` metrics on every rank; by default only rank 0 records them."""
MLOBS_HEARTBEAT_INTERVAL = "MLOBS_HEARTBEAT_INTERVAL"
"""Seconds between heartbeat points of a running run. Default 10."""
MLOBS_RUN_ID = "MLOBS_RUN_ID"
"""Run id to use, so that every rank of a distributed job shares one run."""
MLOBS_EXPERIMENT = "MLOBS_EXPERIMENT"
"""Experiment name recorded with each run. Default ``default``."""
MLOBS_GIT = "MLOBS_GIT"
"""``0`` skips looking up the git commit of the working directory."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(f"must be > 0: {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"must be > 0: {raw!r}")
    return value


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"not a log level: {raw!r}")
    return level


def _text(raw: str) -> str:
    return raw


@dataclasses.dataclass(frozen=True)
class Setting:
    field: str
    env: str
    default: Any
    parse: Callable[[str], Any]


SETTINGS: tuple[Setting, ...] = (
    Setting("dir", MLOBS_DIR, ".mlobs", _text),
    Setting("flush_interval", MLOBS_FLUSH_INTERVAL, 1.0, _positive_float),
    Setting("flush_max_records", MLOBS_FLUSH_MAX_RECORDS, 10_000, _positive_int),
    Setting("spool_max_bytes", MLOBS_SPOOL_MAX_BYTES, 2 * 1024**3, _positive_int),
    Setting("buffer_max_records", MLOBS_BUFFER_MAX_RECORDS, 2_000_000, _positive_int),
    Setting("strict", MLOBS_STRICT, False, _parse_bool),
    Setting("jsonl", MLOBS_JSONL, None, _text),
    Setting("capture_logs", MLOBS_CAPTURE_LOGS, True, _parse_bool),
    Setting("log_level", MLOBS_LOG_LEVEL, "INFO", _log_level),
    Setting("log_all_ranks", MLOBS_LOG_ALL_RANKS, False, _parse_bool),
    Setting("heartbeat_interval", MLOBS_HEARTBEAT_INTERVAL, 10.0, _positive_float),
    Setting("run_id", MLOBS_RUN_ID, None, _text),
    Setting("experiment", MLOBS_EXPERIMENT, "default", _text),
    Setting("git", MLOBS_GIT, True, _parse_bool),
)
_BY_FIELD = {s.field: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Config:
    """The configuration in force. Build it with :func:`resolve`; fields mirror ``SETTINGS``."""

    dir: str = ".mlobs"
    flush_interval: float = 1.0
    flush_max_records: int = 10_000
    spool_max_bytes: int = 2 * 1024**3
    buffer_max_records: int = 2_000_000
    strict: bool = False
    jsonl: str | None = None
    capture_logs: bool = True
    log_level: str = "INFO"
    log_all_ranks: bool = False
    heartbeat_interval: float = 10.0
    run_id: str | None = None
    experiment: str = "default"
    git: bool = True
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    """Where each field's value came from: ``argument``, ``env`` or ``default``."""


def resolve(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Combine arguments, environment and defaults into a :class:`Config`.

    Args:
        overrides: values passed to ``mlobs.configure``; unknown names raise ``TypeError``
            (a programming error, caught at configuration time rather than on the hot path).
        environ: the environment to read, ``os.environ`` by default.
    """
    overrides = dict(overrides or {})
    env = os.environ if environ is None else environ
    unknown = sorted(set(overrides) - set(_BY_FIELD))
    if unknown:
        raise TypeError(f"mlobs.configure() got unknown settings: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if overrides.get(setting.field) is not None:
            arg = overrides[setting.field]
            try:
                values[setting.field] = setting.parse(str(arg))
                sources[setting.field] = "argument"
                continue
            except ValueError as exc:
                warnings.warn(
                    f"mlobs: ignoring {setting.field}={arg!r} ({exc})", RuntimeWarning, stacklevel=3
                )
        raw = env.get(setting.env)
        if raw is not None and raw != "":
            try:
                values[setting.field] = setting.parse(raw)
                sources[setting.field] = "env"
                continue
            except ValueError as exc:
                warnings.warn(
                    f"mlobs: ignoring {setting.env}={raw!r} ({exc}); using {setting.default!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        values[setting.field] = setting.default
        sources[setting.field] = "default"
    return Config(**values, sources=sources)
