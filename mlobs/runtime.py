"""The process-wide pipeline: recorder → flusher → spool → shippers → exporters.

Built lazily on first use from the environment (so mlobs works with nothing configured), rebuilt by
:func:`configure`, flushed and stopped at exit, and rebuilt in a forked child with its own spool
file (a child never writes through its parent's SQLite connection).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlobs import safety
from mlobs.config import Config, resolve
from mlobs.distributed import RankInfo, rank_info
from mlobs.export.base import Exporter
from mlobs.export.shipper import Shipper, SinkStatus
from mlobs.export.sinks import build_sinks
from mlobs.instrument import tracing
from mlobs.instrument.active import ActiveRun
from mlobs.record.recorder import Recorder
from mlobs.record.types import Kind
from mlobs.spool.flusher import Flusher
from mlobs.spool.store import HEARTBEAT, Spool, spool_filename

if TYPE_CHECKING:
    from mlobs.gpu.monitor import RunGpuMonitor

logger = logging.getLogger("mlobs")

_EVENT = int(Kind.EVENT)


class Runtime:
    """One pipeline. Everything but :meth:`start` is safe to call from any thread."""

    def __init__(self, config: Config, exporters: Iterable[Exporter] = ()) -> None:
        self.config = config
        self.rank: RankInfo = rank_info()
        self.records_metrics = self.rank.is_main or config.log_all_ranks
        self.recorder = Recorder(config.flush_max_records)
        self.exporters = list(exporters)
        self._runs_lock = threading.Lock()
        self._runs: list[ActiveRun] = []
        self.spool = self._open_spool()
        self.flusher = Flusher(
            self.recorder,
            self.spool,
            interval=config.flush_interval,
            max_bytes=config.spool_max_bytes,
            buffer_max_records=config.buffer_max_records,
            before_flush=self._emit_heartbeats,
            after_write=self._notify_shippers,
        )
        self.shippers = [self._shipper(e) for e in self.exporters]
        self.log_handler: logging.Handler | None = None
        self.no_run = ActiveRun("", "", self.recorder, records_metrics=self.records_metrics)
        """Where ``mlobs.log`` outside any run records (with an empty run id)."""
        self._gpu: RunGpuMonitor | None = None

    def gpu(self) -> RunGpuMonitor:
        """GPU sampling for runs, imported on first use (NVML is not needed to import mlobs)."""
        if self._gpu is None:
            from mlobs.gpu.monitor import RunGpuMonitor

            self._gpu = RunGpuMonitor(self)
        return self._gpu

    def gpu_if_started(self) -> RunGpuMonitor | None:
        """GPU sampling for runs, if a run has asked for it (so epochs never import it)."""
        return self._gpu

    def _open_spool(self) -> Spool:
        directory = Path(self.config.dir)
        try:
            return Spool(directory / spool_filename())
        except Exception as exc:
            safety.report(
                "spool.open",
                exc,
                f"cannot write the spool under {directory}: {exc}; "
                "keeping records in memory for this process",
            )
            return Spool(None)

    def _shipper(self, exporter: Exporter) -> Shipper:
        name = self.spool.path.name if self.spool.path else "memory"
        return Shipper(
            exporter, self.spool.open_reader, source=name, interval=self.config.flush_interval
        )

    def start(self) -> Runtime:
        tracing.bind_recorder(self.recorder)
        self.flusher.start()
        for shipper in self.shippers:
            shipper.start()
        if self.config.capture_logs:
            from mlobs.logs.handler import install

            self.log_handler = install(self.config.log_level)
        return self

    # -- runs -----------------------------------------------------------------------------
    def register_run(self, run: ActiveRun) -> None:
        with self._runs_lock:
            self._runs.append(run)

    def unregister_run(self, run: ActiveRun) -> None:
        with self._runs_lock:
            if run in self._runs:
                self._runs.remove(run)
        self._emit_heartbeat(run, time.time_ns(), force=True)

    def latest_run(self) -> ActiveRun | None:
        """The most recently started run still active: the run of threads that did not inherit a
        context (data-loader threads, callbacks on a framework's own threads)."""
        runs = self._runs
        return runs[-1] if runs else None

    def active_runs(self) -> list[ActiveRun]:
        with self._runs_lock:
            return list(self._runs)

    def _emit_heartbeats(self) -> None:
        now = time.time_ns()
        for run in self.active_runs():
            self._emit_heartbeat(run, now)

    def _emit_heartbeat(self, run: ActiveRun, now: int, force: bool = False) -> None:
        interval_ns = int(self.config.heartbeat_interval * 1e9)
        progress = run.last_progress_ns
        if progress == run.heartbeat_sent_ns:
            return
        if not force and now - run.heartbeat_sent_ns < interval_ns:
            return
        run.heartbeat_sent_ns = progress
        self.recorder.append(
            (_EVENT, now, run.run_id, HEARTBEAT, progress / 1e9, run.step, run.epoch, None)
        )

    # -- flushing -------------------------------------------------------------------------
    def _notify_shippers(self) -> None:
        for shipper in self.shippers:
            shipper.notify()

    def sink_status(self) -> list[SinkStatus]:
        """Each sink's cursor, backlog and circuit state."""
        statuses = []
        for shipper in self.shippers:
            try:
                statuses.append(shipper.status())
            except Exception as exc:
                safety.report(f"status.{shipper.exporter.name}", exc)
        return statuses

    def flush_spool(self) -> None:
        """Write the buffer to the spool now, on the calling thread."""
        self.flusher.flush()

    def flush(self, timeout: float = 10.0) -> bool:
        """Write the buffer to the spool and ship it to every sink; ``True`` if all caught up."""
        deadline = time.monotonic() + timeout
        self.flusher.flush(wake_sinks=False)  # shipped below, on this thread
        ok = True
        for shipper in self.shippers:
            ok = shipper.ship_available(deadline) and ok
            ok = shipper.exporter.force_flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def shutdown(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        if self.log_handler is not None:
            from mlobs.logs.handler import uninstall

            uninstall(self.log_handler)
            self.log_handler = None
        if self._gpu is not None:
            self._gpu.stop()
        self.flusher.stop(timeout=max(0.1, deadline - time.monotonic()))
        for shipper in self.shippers:
            shipper.stop(timeout=max(0.1, deadline - time.monotonic()))
        self.spool.close()

    def after_fork_in_child(self) -> None:
        """Give the child its own spool file and threads; the parent keeps the old ones."""
        _abandoned.append(self.spool)  # never closed here: it belongs to the parent
        self.recorder.after_fork_in_child()
        self._runs_lock = threading.Lock()
        self.rank = rank_info()
        if self._gpu is not None:
            self._gpu.forget_after_fork()
        self.spool = self._open_spool()
        self.flusher.spool = self.spool
        self.flusher.after_fork_in_child()
        self.shippers = [self._shipper(e) for e in self.exporters]
        self.flusher.start()
        for shipper in self.shippers:
            shipper.start()


_abandoned: list[Spool] = []
_runtime: Runtime | None = None
_lock = threading.RLock()
_pending_overrides: dict[str, Any] = {}
_pending_exporters: list[Exporter] = []


def get() -> Runtime:
    """The running pipeline, started from the environment on first use."""
    rt = _runtime
    if rt is not None:
        return rt
    with _lock:
        if _runtime is None:
            _start(resolve(_pending_overrides), list(_pending_exporters))
        assert _runtime is not None
        return _runtime


def current() -> Runtime | None:
    """The running pipeline, or ``None`` if nothing has been recorded yet."""
    return _runtime


def _start(config: Config, exporters: list[Exporter]) -> None:
    global _runtime
    safety.set_strict(config.strict)
    _runtime = Runtime(config, [*build_sinks(config), *exporters]).start()


def configure(*, exporters: Iterable[Exporter] | None = None, **settings: Any) -> Config:
    """Set up (or rebuild) the pipeline. Arguments beat ``MLOBS_*`` variables, which beat defaults.

    Args:
        exporters: extra sinks (for example ``mlobs.testing.InMemoryExporter()``), added to the
            ones the settings turn on.
        **settings: any field of :class:`mlobs.config.Config` (``dir``, ``flush_interval``,
            ``jsonl``, ``strict``, ...). Unknown names raise ``TypeError``.

    Returns:
        The configuration now in force.
    """
    global _runtime
    config = resolve(settings)  # raises TypeError on unknown names, before anything changes
    with _lock:
        _pending_overrides.clear()
        _pending_overrides.update(settings)
        _pending_exporters[:] = list(exporters or ())
        old = _runtime
        active = old.active_runs() if old is not None else []
        if old is not None:
            _runtime = None
            old.shutdown()
        _start(config, list(_pending_exporters))
        assert _runtime is not None
        old_gpu = old.gpu_if_started() if old is not None else None
        gpu_modes = dict(old_gpu.modes) if old_gpu is not None else {}
        for run in active:  # runs already in progress keep recording, into the new pipeline
            run.bind(_runtime.recorder)
            _runtime.register_run(run)
            if run.run_id in gpu_modes:  # and keep their GPU sampling
                _runtime.gpu().attach(run, gpu_modes[run.run_id])
        return _runtime.config


def flush(timeout: float = 10.0) -> bool:
    """Write buffered records to the spool and ship them to every sink.

    Returns:
        ``True`` when every sink caught up within ``timeout`` seconds.
    """
    rt = _runtime
    if rt is None:
        return True
    try:
        return rt.flush(timeout)
    except safety.MlobsError:
        raise
    except Exception as exc:
        safety.report("flush", exc)
        return False


def shutdown(timeout: float = 10.0) -> None:
    """Flush and stop the pipeline; the next record starts a new one."""
    global _runtime
    with _lock:
        rt, _runtime = _runtime, None
    if rt is not None:
        try:
            rt.shutdown(timeout)
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("shutdown", exc)


def forget_configuration() -> None:
    """Drop what :func:`configure` set, so the next pipeline starts from the environment."""
    with _lock:
        _pending_overrides.clear()
        _pending_exporters.clear()


def settings_in_force() -> Mapping[str, Any]:
    """The pending ``configure`` arguments (for ``mlobs doctor``)."""
    return dict(_pending_overrides)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()
    rt = _runtime
    if rt is not None:
        try:
            rt.after_fork_in_child()
        except Exception as exc:
            safety.report("fork", exc)


def _at_exit() -> None:
    try:
        shutdown(timeout=10.0)
    except Exception:  # the interpreter is going away: nothing useful left to do
        pass


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
