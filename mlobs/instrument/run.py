"""``mlobs.run``: a decorator and context manager around one training or evaluation run."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar, overload

from mlobs import runtime, safety
from mlobs.context import current_run
from mlobs.instrument import tracing
from mlobs.instrument.active import ActiveRun
from mlobs.instrument.lineage import git_commit, host_facts, split_name_version
from mlobs.logs.redact import redact_mapping
from mlobs.record.recorder import Recorder
from mlobs.record.types import Kind
from mlobs.spool.store import RUN_END, RUN_START

F = TypeVar("F", bound=Callable[..., Any])


class _Scope:
    """Per-entry state, so one ``Run`` object can be entered again (or by several threads)."""

    __slots__ = ("active", "run_token", "span")

    def __init__(self) -> None:
        self.active: ActiveRun | None = None
        self.run_token: Token[ActiveRun | None] | None = None
        self.span: tracing.CurrentSpan | None = None


class Run:
    """Decorator and context manager for a run. Create it with :func:`mlobs.run`."""

    def __init__(
        self,
        name: str | None = None,
        *,
        model: Any = None,
        model_version: str | None = None,
        dataset: Any = None,
        dataset_version: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        experiment: str | None = None,
        run_id: str | None = None,
        gpu: bool | str | None = None,
    ) -> None:
        self.name = name
        self.gpu = gpu
        self.model = split_name_version(model, model_version)
        self.dataset = split_name_version(dataset, dataset_version)
        self.params = dict(params or {})
        self.tags = dict(tags or {})
        self.experiment = experiment
        self.run_id = run_id
        self._scopes: list[_Scope] = []

    # -- decorator ------------------------------------------------------------------------
    def __call__(self, fn: F) -> F:
        if self.name is None:
            self.name = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = _Scope()
            self._start(scope)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._finish(scope, exc)
                raise
            self._finish(scope, None)
            return result

        return wrapper  # type: ignore[return-value]

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> ActiveRun:
        scope = _Scope()
        self._scopes.append(scope)
        self._start(scope)
        if scope.active is None:
            # mlobs failed to start the run (already reported): hand back a detached run so the
            # user's `run.log(...)` calls still work; they go nowhere.
            return ActiveRun(_new_run_id(), self.name or "run", Recorder())
        return scope.active

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self._scopes.pop() if self._scopes else _Scope()
        self._finish(scope, exc)
        # Returning None lets the user's exception propagate unchanged.

    # -- lifecycle ------------------------------------------------------------------------
    def _start(self, scope: _Scope) -> None:
        try:
            rt = runtime.get()
            cfg = rt.config
            run_id = self.run_id or cfg.run_id or _new_run_id()
            name = self.name or "run"
            active = ActiveRun(run_id, name, rt.recorder, records_metrics=rt.records_metrics)
            parent = current_run.get()
            resource: dict[str, Any] = {
                "experiment": self.experiment or cfg.experiment,
                "rank": rt.rank.rank,
                "local_rank": rt.rank.local_rank,
                "world_size": rt.rank.world_size,
                **host_facts(),
            }
            for prefix, (n, v) in (("model", self.model), ("dataset", self.dataset)):
                if n is not None:
                    resource[f"{prefix}_name"] = n
                if v is not None:
                    resource[f"{prefix}_version"] = v
            if cfg.git:
                commit = git_commit()
                if commit:
                    resource["git_commit"] = commit
            if parent is not None:
                resource["parent_run_id"] = parent.run_id
            rt.recorder.append(
                (
                    int(Kind.EVENT),
                    time.time_ns(),
                    run_id,
                    RUN_START,
                    None,
                    None,
                    None,
                    {
                        "run_name": name,
                        "resource": resource,
                        "params": redact_mapping(self.params),
                        "tags": redact_mapping(self.tags),
                    },
                )
            )
            scope.active = active
            scope.run_token = current_run.set(active)
            scope.span = tracing.CurrentSpan(
                f"run {active.name}", "run", {tracing.RUN_ID_ATTR: active.run_id}
            )
            rt.register_run(active)
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("run.start", exc)
            return
        if self.gpu is not False:
            try:
                rt.gpu().attach(active, self.gpu)
            except safety.MlobsError:
                raise
            except Exception as exc:
                safety.report("run.gpu", exc)

    def _finish(self, scope: _Scope, exc: BaseException | None) -> None:
        active = scope.active
        if active is None:
            return
        try:
            status = "finished" if exc is None or _is_clean_exit(exc) else "failed"
            error = None if status == "finished" else f"{type(exc).__name__}: {exc}"
            active.status = status
            if scope.span is not None:
                scope.span.end(error)
            if scope.run_token is not None:
                current_run.reset(scope.run_token)
            rt = runtime.get()
            gpu = rt.gpu() if self.gpu is not False else None
            if gpu is not None:
                gpu.detach(active)
            rt.unregister_run(active)
            attrs: dict[str, Any] = {"status": status}
            if exc is not None and status == "failed":
                attrs["error"] = error
                attrs["error_type"] = f"{type(exc).__module__}.{type(exc).__qualname__}"
            rt.recorder.append(
                (
                    int(Kind.EVENT),
                    time.time_ns(),
                    active.run_id,
                    RUN_END,
                    None,
                    active.step,
                    active.epoch,
                    attrs,
                )
            )
            rt.flush_spool()
        except safety.MlobsError:
            raise
        except Exception as report_exc:
            safety.report("run.finish", report_exc)


def _is_clean_exit(exc: BaseException) -> bool:
    return isinstance(exc, SystemExit) and exc.code in (None, 0)


@overload
def run(name: F) -> F: ...
@overload
def run(
    name: str | None = None,
    *,
    model: Any = None,
    model_version: str | None = None,
    dataset: Any = None,
    dataset_version: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    run_id: str | None = None,
    gpu: bool | str | None = None,
) -> Run: ...
def run(name: Any = None, **kwargs: Any) -> Any:
    """Start a run: ``@mlobs.run``, ``@mlobs.run(name=...)`` or ``with mlobs.run(...) as run``.

    Args:
        name: the run's name (the decorated function's name by default).
        model: model name, or ``(name, version)``; ``model_version`` sets the version alone.
        dataset: dataset name, or ``(name, version)``; ``dataset_version`` likewise.
        params: hyperparameters, stored once with the run (secrets redacted).
        tags: free-form labels, stored once with the run (secrets redacted).
        experiment: groups runs; ``MLOBS_EXPERIMENT`` by default.
        run_id: reuse a run id (every rank of a distributed job); ``MLOBS_RUN_ID`` by default.
        gpu: sample the GPUs this process can use (``CUDA_VISIBLE_DEVICES``) while the run is
            active: on by default when NVML finds one (``MLOBS_GPU``); ``False`` turns it off,
            ``"all"`` samples every GPU of the host.

    The run is ``finished`` when the body returns and ``failed`` (with the exception's type) when
    it raises; the exception itself propagates unchanged.
    """
    if callable(name):
        return Run(name.__name__)(name)
    return Run(name, **kwargs)


def _new_run_id() -> str:
    import uuid  # imported at the first run, not by ``import mlobs`` (9 ms)

    return uuid.uuid4().hex
