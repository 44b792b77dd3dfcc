"""``mlobs.epoch``: per-epoch duration, throughput and an epoch span."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from mlobs import runtime, safety
from mlobs.context import current_run
from mlobs.instrument import tracing
from mlobs.instrument.active import ActiveRun
from mlobs.record.types import Kind

F = TypeVar("F", bound=Callable[..., Any])

EPOCH_DURATION = "epoch_duration_seconds"
EPOCH_THROUGHPUT = "epoch_samples_per_second"


class Epoch:
    """Context manager (and decorator) for one epoch. Create it with :func:`mlobs.epoch`.

    Inside the block, ``mlobs.log`` records carry the epoch number, and ``add_samples`` counts
    samples for the throughput metric. At the end the epoch's duration (and throughput) are
    recorded and the flusher is woken, so a finished epoch reaches the spool promptly.
    """

    def __init__(self, n: int | None = None, *, samples: int | None = None) -> None:
        self.n = n
        self.samples = samples
        self.duration_s: float | None = None
        self._run: ActiveRun | None = None
        self._previous_epoch: int | None = None
        self._start_ns = 0
        self._t0 = 0.0
        self._span: tracing.CurrentSpan | None = None
        self._energy_start_j: float | None = None
        self.energy_j: float | None = None
        """Joules the run's GPUs used in this epoch (``None`` without GPU sampling)."""

    def add_samples(self, count: int) -> None:
        """Count ``count`` more samples processed in this epoch."""
        self.samples = (self.samples or 0) + int(count)

    def __call__(self, fn: F) -> F:
        n, samples = self.n, self.samples

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Epoch(n, samples=samples):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> Epoch:
        self._t0 = time.perf_counter()
        self._start_ns = time.time_ns()
        try:
            run = current_run.get() or runtime.get().latest_run()
            if run is None:
                safety.self_metrics.inc(safety.OUTSIDE_RUN, "epoch")
                safety.warn(
                    "epoch-outside-run", "mlobs: mlobs.epoch() outside a run is not recorded"
                )
                return self
            self._run = run
            if self.n is None:
                self.n = run.last_epoch + 1
            self._previous_epoch = run.epoch
            run.epoch = self.n
            run.last_epoch = max(run.last_epoch, self.n)
            self._start_span(run)
            gpu = runtime.get().gpu_if_started()
            if gpu is not None:
                self._energy_start_j = gpu.energy_now(run)
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("epoch.start", exc)
        return self

    def _start_span(self, run: ActiveRun) -> None:
        self._span = tracing.CurrentSpan(
            f"epoch {self.n}",
            "epoch",
            {tracing.RUN_ID_ATTR: run.run_id, tracing.EPOCH_ATTR: int(self.n or 0)},
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.duration_s = time.perf_counter() - self._t0
        run = self._run
        if run is None:
            return
        try:
            if self._span is not None:
                self._span.end(None if exc is None else f"{type(exc).__name__}: {exc}")
                self._span = None
            now = time.time_ns()
            run.last_progress_ns = now
            if run.records_metrics:
                run.append(
                    (
                        int(Kind.GAUGE),
                        now,
                        run.run_id,
                        EPOCH_DURATION,
                        self.duration_s,
                        run.step,
                        self.n,
                        None,
                    )
                )
                if self.samples and self.duration_s > 0:
                    run.append(
                        (
                            int(Kind.GAUGE),
                            now,
                            run.run_id,
                            EPOCH_THROUGHPUT,
                            self.samples / self.duration_s,
                            run.step,
                            self.n,
                            None,
                        )
                    )
            gpu = runtime.get().gpu_if_started()
            if gpu is not None and self._energy_start_j is not None:
                self.energy_j = gpu.epoch_finished(run, self.n, self._energy_start_j)
            run.epoch = self._previous_epoch
            run.recorder.wake.set()
        except safety.MlobsError:
            raise
        except Exception as report_exc:
            safety.report("epoch.finish", report_exc)


def epoch(n: int | None = None, *, samples: int | None = None) -> Epoch:
    """One epoch: ``with mlobs.epoch(n) as ep:`` or ``@mlobs.epoch()`` on an epoch function.

    Args:
        n: the epoch number; the run's previous epoch + 1 when omitted (0 for the first).
        samples: samples processed in the epoch, for ``epoch_samples_per_second``; or call
            ``ep.add_samples(k)`` inside the block.
    """
    return Epoch(n, samples=samples)
