"""What every command shares: the spool directory, the bad-input error, run views as data,
and for the long-running servers, logging to stderr and stopping on a signal."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from mlobs.config import Config, resolve
from mlobs.instrument.epoch import EPOCH_DURATION, EPOCH_THROUGHPUT
from mlobs.spool.catalog import Catalog
from mlobs.spool.store import RunInfo

_SKIP_IN_HEADLINE = (EPOCH_DURATION, EPOCH_THROUGHPUT)
_SPLIT_ORDER = ("val", "valid", "validation", "eval", "test", "train")


class BadInput(click.ClickException):
    """Something the user asked for does not exist or is ambiguous: one line, exit code 2."""

    exit_code = 2


def settings(ctx: click.Context) -> Config:
    """The configuration the CLI reads from: ``--dir`` beats ``MLOBS_DIR`` beats ``.mlobs``.

    Bad values of unrelated variables are ``mlobs doctor``'s business, so their warnings are
    silenced here.
    """
    directory = ctx.find_root().params.get("directory")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resolve({"dir": str(directory)} if directory is not None else None)


def spool_dir(ctx: click.Context) -> Path:
    return Path(settings(ctx).dir)


def open_catalog(ctx: click.Context) -> Catalog:
    """The catalog of the spool directory; a missing directory is bad input (exit 2)."""
    return Catalog(spool_dir(ctx))


def run_dict(info: RunInfo, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """A run as plain data, for ``--json`` output."""
    out: dict[str, Any] = {
        "run_id": info.run_id,
        "name": info.name,
        "status": info.status,
        "start_ns": info.start_ns,
        "end_ns": info.end_ns,
        "last_progress_ns": info.last_progress_ns,
        "duration_s": info.duration_s,
        "error": info.error,
        "resource": info.resource,
        "params": info.params,
        "tags": info.tags,
    }
    if metrics is not None:
        out["last_metrics"] = metrics
    return out


def headline_metrics(metrics: dict[str, float], count: int = 3) -> list[tuple[str, float]]:
    """The few metrics worth a glance: validation before test before train, timings left out."""

    def rank(key: str) -> tuple[int, str]:
        split = key.split("/", 1)[0] if "/" in key else ""
        order = _SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else len(_SPLIT_ORDER)
        return order, key

    keys = [k for k in metrics if k.rsplit("/", 1)[-1] not in _SKIP_IN_HEADLINE]
    return [(k, metrics[k]) for k in sorted(keys, key=rank)[:count]]


def log_to_stderr() -> None:
    """mlobs' INFO lines on stderr, one per line with time and level, unless the process already
    configured logging."""
    mlobs_logger = logging.getLogger("mlobs")
    if mlobs_logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    mlobs_logger.addHandler(handler)
    mlobs_logger.setLevel(logging.INFO)


@contextmanager
def stop_on_signal() -> Iterator[threading.Event]:
    """An event that SIGTERM or SIGINT sets while the block runs (instead of ending the process);
    the previous handlers are back afterwards."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
