"""What every framework integration shares: one run per fit, one epoch at a time, phase spans,
metric names split from their split prefix, and a run that always ends.

A framework calls its callbacks at points of its own choosing; :class:`FitScope` turns those calls
into mlobs' run, epoch and step context managers, entered in one hook and left in another, always
in nesting order (steps, then the epoch, then the run). Nothing here raises into the framework:
mlobs' own failures are reported through :mod:`mlobs.safety` (and raised only in strict mode).

Some frameworks do not tell their callbacks when a fit raised (Keras, transformers, XGBoost,
LightGBM). Where the integration can reach the code that trains (a model's training step, a
booster's update), :meth:`FitScope.watch` wraps it, so that its exception fails the run at once.
A run whose fit ended any other way without the end hook is closed when the same callback
starts its next fit, or at interpreter exit, as ``failed``: with the exception that ended the
program when there is one, else with :class:`UnobservedFailure`. LightGBM's early stopping ends
training without a word to the callbacks either; ``ended_quietly`` tells such fits apart, and
they are ``finished``.
"""

from __future__ import annotations

import atexit
import functools
import math
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlobs
from mlobs import safety
from mlobs.instrument.epoch import Epoch
from mlobs.instrument.run import Run
from mlobs.instrument.step import Step

SPLIT_PREFIXES = frozenset(("train", "training", "val", "valid", "validation", "eval", "test"))
"""Name prefixes (before ``_`` or ``/``) read as a split: ``val_loss`` is ``loss`` in ``val``."""

MAX_PARAM_CHARS = 500
"""Longer parameter values (lists, reprs of objects) are cut to this many characters."""


class UnobservedFailure(RuntimeError):
    """The status of a fit whose framework ended it without calling the callback's end hook, and
    without showing the callback the exception (it had one: the end hook is skipped only when
    the fit raises). The user's own exception still propagated unchanged."""


@contextmanager
def guard(where: str) -> Iterator[None]:
    """Report mlobs' own failures inside a callback hook instead of raising into the framework."""
    try:
        yield
    except safety.MlobsError:
        raise
    except Exception as exc:
        safety.report(where, exc)


def split_metric(name: str, default: str | None = None) -> tuple[str, str | None]:
    """``("val_loss", d)`` → ``("loss", "val")``; a name with no split prefix keeps ``d``."""
    for sep in ("_", "/"):
        head, found, rest = name.partition(sep)
        if found and rest and head.lower() in SPLIT_PREFIXES:
            return rest, head
    return name, default


def number(value: Any) -> float | None:
    """A metric value as a float, or ``None`` for what is not a scalar number (strings, lists,
    tensors of several elements): frameworks mix such things into their logs."""
    if isinstance(value, bool | int | float):
        return float(value)
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        return None


def flat_params(params: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as one level (``optimizer.lr``), values JSON-friendly."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, name + "."))
        elif value is None or isinstance(value, bool | int):
            out[name] = value
        elif isinstance(value, float):
            out[name] = value if math.isfinite(value) else str(value)
        elif not isinstance(value, str) and (num := number(value)) is not None:
            out[name] = num if math.isfinite(num) else str(num)  # numpy and 0-d tensor scalars
        else:
            text = str(value)
            out[name] = text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS] + "..."
    return out


def log_metrics(
    metrics: Mapping[str, Any],
    *,
    default_split: str | None = None,
    step: int | None = None,
    skip: frozenset[str] = frozenset(),
    split_names: bool = True,
) -> None:
    """Record a framework's metrics: each name loses its split prefix, which becomes ``split``
    (unless ``split_names`` is false: the caller knows the split, it is ``default_split``).

    All values of one call share one step: ``step`` when given, else the run's next step.
    """
    groups: dict[str | None, dict[str, float]] = {}
    for key, raw in metrics.items():
        if key in skip:
            continue
        value = number(raw)
        if value is None:
            continue
        if split_names:
            name, split = split_metric(str(key), default_split)
        else:
            name, split = str(key), default_split
        groups.setdefault(split, {})[name] = value
    for split, values in groups.items():
        mlobs.log(values, step=step, split=split)
        if step is None:
            run = mlobs.active_run()
            step = run.step if run is not None else None


class FitScope:
    """The run, epoch and phase spans of one framework's fits, driven by its callbacks.

    Args:
        framework: names the framework in tags and in mlobs' self-metrics.
        run_name: the run's name; the model's class name by default.
        params: hyperparameters of the user's, merged over what the framework reports.
        run_options: further arguments of :func:`mlobs.run` (``model``, ``dataset``, ``tags``,
            ``experiment``, ``gpu``).
        ended_quietly: for a framework that may end a fit normally without calling the end hook
            (LightGBM's early stopping): tells whether the fit left open did, so that its run
            is ``finished`` rather than ``failed``.
    """

    def __init__(
        self,
        framework: str,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        run_options: Mapping[str, Any] | None = None,
        *,
        ended_quietly: Callable[[], bool] | None = None,
    ) -> None:
        self.framework = framework
        self.run_name = run_name
        self.params = dict(params or {})
        self.run_options = dict(run_options or {})
        self.ended_quietly = ended_quietly
        self._run: Run | None = None
        self._epoch: Epoch | None = None
        self._steps: list[Step] = []
        self._watched: list[tuple[Any, str, Any, bool]] = []
        self._lock = threading.Lock()

    # -- run ------------------------------------------------------------------------------
    def begin(
        self,
        default_name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Start recording a fit: into the active run when there is one, else a new run."""
        if self._run is not None or self._epoch is not None or self._steps:
            self.abandon()  # the previous fit of this callback never reached its end hook
        if mlobs.active_run() is not None:
            return
        options = dict(self.run_options)
        all_tags = {"framework": self.framework, **(tags or {}), **options.pop("tags", {})}
        run = mlobs.run(
            self.run_name or default_name,
            params={**flat_params(params), **flat_params(self.params)},
            tags=all_tags,
            **options,
        )
        run.__enter__()
        self._run = run
        with _open_lock:
            _open_scopes.add(self)

    def end(self, exc: BaseException | None = None) -> None:
        """Close the phase spans, the epoch and (if this scope opened it) the run; ``exc`` makes
        them failed. The exception itself is the framework's to propagate."""
        self.unwatch()
        with self._lock:
            steps, self._steps = self._steps, []
            epoch, self._epoch = self._epoch, None
            run, self._run = self._run, None
        exc_info = (None, None, None) if exc is None else (type(exc), exc, exc.__traceback__)
        for step in reversed(steps):
            with guard(f"integrations.{self.framework}.step"):
                step.__exit__(*exc_info)
        if epoch is not None:
            with guard(f"integrations.{self.framework}.epoch"):
                epoch.__exit__(*exc_info)
        if run is not None:
            with _open_lock:
                _open_scopes.discard(self)
            with guard(f"integrations.{self.framework}.run"):
                run.__exit__(*exc_info)

    def abandon(self, exc: BaseException | None = None) -> None:
        """End a fit the framework left without calling the end hook (see the module doc):
        ``finished`` if it ended quietly, else ``failed`` with ``exc`` if given."""
        quiet = False
        if self.ended_quietly is not None and self._run is not None:
            with guard(f"integrations.{self.framework}.ended_quietly"):
                quiet = bool(self.ended_quietly())
        if quiet:
            self.end()
            return
        self.end(
            exc
            or UnobservedFailure(
                f"the {self.framework} fit ended without reaching its end hook (it raised)"
            )
        )

    def watch(self, owner: Any, attribute: str, after: Callable[[Any], None] | None = None) -> None:
        """Wrap the callable ``owner.attribute`` (a model's training step, a booster's update)
        until the fit ends, so that an exception escaping it fails the run with that exception,
        for frameworks that do not show their callbacks the exceptions of a fit. The exception
        propagates unchanged. ``after`` receives each result (and must not raise)."""
        original = getattr(owner, attribute, None)
        if not callable(original):
            return
        scope = self
        where = f"integrations.{self.framework}.{attribute}"

        @functools.wraps(original)
        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                result = original(*args, **kwargs)
            except BaseException as exc:
                scope.end(exc)
                raise
            if after is not None:
                with guard(where):
                    after(result)
            return result

        own = attribute in getattr(owner, "__dict__", {})
        setattr(owner, attribute, watched)
        self._watched.append((owner, attribute, original, own))

    def unwatch(self) -> None:
        """Put back what :meth:`watch` wrapped."""
        watched, self._watched = self._watched, []
        for owner, attribute, original, own in reversed(watched):
            with guard(f"integrations.{self.framework}.unwatch"):
                if own:
                    setattr(owner, attribute, original)
                else:  # it was the class's method: drop the instance's wrapper
                    delattr(owner, attribute)

    # -- epochs and phases ----------------------------------------------------------------
    def epoch_begin(self, n: int, samples: int | None = None) -> None:
        """Start epoch ``n`` (ending the one in progress, if any)."""
        self.epoch_end()
        epoch = mlobs.epoch(int(n), samples=samples)
        epoch.__enter__()
        self._epoch = epoch

    def add_samples(self, count: int) -> None:
        if self._epoch is not None:
            self._epoch.add_samples(count)

    def epoch_end(self) -> None:
        """End the epoch in progress, if any (closing phase spans left open inside it)."""
        epoch, self._epoch = self._epoch, None
        if epoch is None:
            return
        while self._steps:
            self._steps.pop().__exit__(None, None, None)
        epoch.__exit__(None, None, None)

    def phase_begin(self, name: str) -> None:
        """Open a span for a phase of the fit (``validation``, ``test``)."""
        step = mlobs.step(name)
        step.__enter__()
        self._steps.append(step)

    def phase_end(self, name: str) -> None:
        """Close the span of phase ``name`` (and any opened inside it)."""
        if not any(step.name == name for step in self._steps):
            return
        while self._steps:
            step = self._steps.pop()
            step.__exit__(None, None, None)
            if step.name == name:
                return


_open_scopes: set[FitScope] = set()
_open_lock = threading.Lock()


def _close_at_exit() -> None:
    """Close runs left open by fits that raised: the exception that ends the program (if one
    does) is the run's error. Registered after mlobs' own exit hook, so it runs before it."""
    with _open_lock:
        scopes = list(_open_scopes)
    uncaught = getattr(sys, "last_value", None)
    for scope in scopes:
        try:
            scope.abandon(uncaught if isinstance(uncaught, BaseException) else None)
        except Exception:  # the interpreter is going away: nothing useful left to do
            pass


atexit.register(_close_at_exit)
