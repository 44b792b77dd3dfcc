"""What one served request leaves in the spool, shared by the ASGI and WSGI middleware.

A request is four or five records appended to the recorder on the request's own thread (no I/O,
no lock): a count, a latency observation, payload sizes, and an error count when it failed; the
in-flight gauge is written at most every ``IN_FLIGHT_EVERY_S`` seconds. Label sets are built once
per (route, method, status) and shared, so the sinks see few distinct attribute dicts.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlobs import runtime, safety
from mlobs.record.types import BufferedRecord, Kind
from mlobs.serving import names as n

if TYPE_CHECKING:
    from mlobs.instrument.active import ActiveRun

OTHER_ROUTE = "other"
"""The route label of requests beyond ``max_routes`` distinct templates."""
IN_FLIGHT_EVERY_S = 0.1

_COUNTER, _HISTOGRAM, _GAUGE = int(Kind.COUNTER), int(Kind.HISTOGRAM), int(Kind.GAUGE)
# path segments that are ids rather than names: numbers, UUIDs, long hex strings
_ID_SEGMENT = re.compile(
    r"^(\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,})$"
)


def template_path(path: str) -> str:
    """A route template for a raw path when the framework has none: id-like segments become
    ``{id}`` (``/users/42/orders`` → ``/users/{id}/orders``)."""
    parts = path.split("/")
    return "/".join("{id}" if _ID_SEGMENT.match(p) else p for p in parts) or "/"


def error_class(status: int | None, raised: bool) -> str | None:
    """``exception`` when the app raised, ``server`` for 5xx, ``client`` for 4xx, else None."""
    if raised:
        return "exception"
    if status is None:
        return "exception"
    if status >= 500:
        return "server"
    if status >= 400:
        return "client"
    return None


class RequestRecorder:
    """Records requests of one app (one model name and version).

    Args:
        model: the ``model`` label (``""`` when not given).
        model_version: the ``model_version`` label.
        max_routes: distinct route labels kept; later ones are recorded as ``other``.
    """

    def __init__(self, model: str = "", model_version: str = "", max_routes: int = 200) -> None:
        self.model = model
        self.model_version = model_version
        self.max_routes = max_routes
        self._labels: dict[tuple[str, ...], dict[str, Any]] = {}
        self._routes: set[str] = set()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._in_flight_at = 0.0
        self._base = {"model": model, "model_version": model_version}

    def route(self, template: str) -> str:
        """``template``, or ``other`` once ``max_routes`` distinct ones have been seen."""
        if template in self._routes:
            return template
        with self._lock:
            if len(self._routes) < self.max_routes:
                self._routes.add(template)
                return template
        return OTHER_ROUTE

    def _attrs(self, *key: str) -> dict[str, Any]:
        found = self._labels.get(key)
        if found is None:
            names = ("route", "method", "code", "error_class")
            found = {**self._base, **{k: v for k, v in zip(names, key, strict=False) if v}}
            self._labels[key] = found
        return found

    def started(self) -> float:
        """Count a request in flight; returns its start time (``perf_counter``)."""
        with self._lock:
            self._in_flight += 1
            value = self._in_flight
        if time.monotonic() - self._in_flight_at >= IN_FLIGHT_EVERY_S:
            try:
                rt = runtime.get()
                self._write_in_flight(rt.recorder.append, rt.latest_run() or rt.no_run, value)
            except safety.MlobsError:
                raise
            except Exception as exc:
                safety.report("serving.in_flight", exc)
        return time.perf_counter()

    def finished(
        self,
        start: float,
        route: str,
        method: str,
        status: int | None,
        raised: bool,
        request_bytes: int | None,
        response_bytes: int,
    ) -> None:
        """Record one finished request; never raises into the app."""
        seconds = time.perf_counter() - start
        with self._lock:
            self._in_flight -= 1
            value = self._in_flight
        try:
            rt = runtime.get()
            run = rt.latest_run() or rt.no_run
            append = rt.recorder.append
            ts = time.time_ns()
            run_id = run.run_id
            route = self.route(route)
            # an app that raised before answering is answered 500 by the server around it
            code = "500" if status is None else str(status)
            append(
                (
                    _COUNTER,
                    ts,
                    run_id,
                    n.REQUESTS,
                    1.0,
                    None,
                    None,
                    self._attrs(route, method, code),
                )
            )
            timing = self._attrs(route, method)
            append((_HISTOGRAM, ts, run_id, n.DURATION, seconds, None, None, timing))
            sized = self._attrs(route)
            if request_bytes is not None:
                append(
                    (
                        _HISTOGRAM,
                        ts,
                        run_id,
                        n.REQUEST_SIZE,
                        float(request_bytes),
                        None,
                        None,
                        sized,
                    )
                )
            append(
                (_HISTOGRAM, ts, run_id, n.RESPONSE_SIZE, float(response_bytes), None, None, sized)
            )
            failure = error_class(status, raised)
            if failure is not None:
                attrs = self._attrs(route, "", "", failure)
                append((_COUNTER, ts, run_id, n.ERRORS, 1.0, None, None, attrs))
            if value == 0 or time.monotonic() - self._in_flight_at >= IN_FLIGHT_EVERY_S:
                self._write_in_flight(append, run, value)
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("serving.record", exc)

    def _write_in_flight(
        self, append: Callable[[BufferedRecord], None], run: ActiveRun, value: int
    ) -> None:
        self._in_flight_at = time.monotonic()
        append(
            (_GAUGE, time.time_ns(), run.run_id, n.IN_FLIGHT, float(value), None, None, self._base)
        )
