"""mlobs: observability for machine-learning training and inference.

Instrument code with :func:`run`, :func:`epoch`, :func:`step` and :func:`log`; everything goes to
a durable local spool under ``.mlobs/`` and from there to the sinks you turn on. Nothing here ever
raises into your program because of mlobs itself (set ``MLOBS_STRICT=1`` in tests to change that).
"""

from __future__ import annotations

import time

from mlobs.config import Config
from mlobs.context import current_run as _current_run
from mlobs.instrument.active import ActiveRun, log, log_labeled, log_system
from mlobs.instrument.epoch import Epoch, epoch
from mlobs.instrument.run import Run, run
from mlobs.instrument.step import Step, step
from mlobs.runtime import configure, flush, shutdown

__version__ = "0.1.0"

__all__ = [
    "ActiveRun",
    "Config",
    "Epoch",
    "Run",
    "Step",
    "__version__",
    "active_run",
    "configure",
    "epoch",
    "flush",
    "heartbeat",
    "log",
    "log_labeled",
    "log_system",
    "run",
    "shutdown",
    "step",
]


def active_run() -> ActiveRun | None:
    """The run of the current context (or the latest run started in this process), if any."""
    from mlobs import runtime

    run_ = _current_run.get()
    if run_ is not None:
        return run_
    rt = runtime.current()
    return rt.latest_run() if rt is not None else None


def heartbeat() -> None:
    """Mark progress of the active run without logging a value (a long evaluation, say).

    ``mlobs.log``, epoch ends and step ends already count as progress.
    """
    run_ = active_run()
    if run_ is not None:
        run_.last_progress_ns = time.time_ns()
