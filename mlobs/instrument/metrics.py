"""``mlobs.log``: free-form metric values into the current run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlobs import runtime, safety
from mlobs.context import current_run
from mlobs.instrument.active import ActiveRun, checked_names, record_metrics

_get_run = current_run.get


def _run_for_this_thread() -> ActiveRun:
    rt = runtime.get()
    run = rt.latest_run()
    if run is not None:
        return run
    safety.self_metrics.inc(safety.OUTSIDE_RUN, "log")
    safety.warn(
        "log-outside-run",
        "mlobs: mlobs.log() called outside a run; values are recorded with an empty run id",
    )
    return rt.no_run


def log(
    metrics: Mapping[str, Any] | None = None,
    /,
    *,
    step: int | None = None,
    split: str | None = None,
    **values: Any,
) -> None:
    """Record metric values: ``mlobs.log(loss=0.3, accuracy=0.9, split="val")``.

    Args:
        metrics: a mapping, for names that are not Python identifiers (``{"val/loss": 0.3}``).
        step: the global step; one more than the run's last step when omitted.
        split: ``train``, ``val``, ``test`` or any label, recorded as an attribute.
        **values: metric names and numbers. ``int``, ``bool``, numpy scalars and 0-d tensors
            are accepted; NaN and infinity are recorded and counted; strings and ``None`` are
            dropped with a warning and counted. Nothing here ever raises (unless
            ``MLOBS_STRICT=1``).

    Inside an epoch the points carry the epoch number. Only rank 0 records unless
    ``MLOBS_LOG_ALL_RANKS=1``.
    """
    try:
        run = _get_run() or _run_for_this_thread()
        if metrics:
            values = {**checked_names(metrics), **values}
        record_metrics(run, values, step, split)
    except safety.MlobsError:
        raise
    except Exception as exc:
        safety.report("log", exc)
