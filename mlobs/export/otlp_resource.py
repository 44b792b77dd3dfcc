"""Run resources and attribute values for the OTLP sink (see :mod:`mlobs.export.otlp`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlobs import __version__
from mlobs.spool.store import RunInfo

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

_INT64 = 2**63

# Run resource keys (see mlobs.instrument.run) and their semantic-convention names; keys not
# listed become ``mlobs.<key>``.
RESOURCE_KEYS: dict[str, str | None] = {
    "experiment": "mlobs.experiment",
    "model_name": "mlobs.model.name",
    "model_version": "mlobs.model.version",
    "dataset_name": "mlobs.dataset.name",
    "dataset_version": "mlobs.dataset.version",
    "host": "host.name",
    "pid": "process.pid",
    "argv0": "process.command",
    "python": "process.runtime.version",
    "git_commit": "vcs.ref.head.revision",
    "world_size": "mlobs.world_size",
    "local_rank": "mlobs.local_rank",
    "parent_run_id": "mlobs.run.parent_id",
    "rank": None,  # a point attribute of metrics, a record attribute of logs and spans
}


def attr_value(value: Any) -> Any:
    """An OTel attribute value: a primitive or a homogeneous tuple of them; anything else as JSON
    text. ``None`` for a value that has no place in an attribute."""
    kind = type(value)
    if kind is str or kind is bool or kind is float:
        return value
    if kind is int:
        return value if -_INT64 <= value < _INT64 else str(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        items = [attr_value(v) for v in value]
        if items and len({type(v) for v in items}) == 1 and type(items[0]) in _PRIMITIVES:
            return tuple(items)
    elif isinstance(value, (int, float)):
        return value  # subclasses such as IntEnum
    return json.dumps(value, default=str, separators=(",", ":"))


_PRIMITIVES = (str, bool, int, float)


def any_value(value: Any) -> Any:
    """A log body or attribute may nest (OTLP ``AnyValue``): mappings and lists are kept."""
    if isinstance(value, Mapping):
        return {str(k): any_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [any_value(v) for v in value]
    if value is None or type(value) in (str, bool, float, bytes):
        return value
    return attr_value(value)


def put(out: dict[str, Any], key: str, value: Any) -> None:
    """Set ``out[key]`` to the attribute form of ``value``, unless it has none."""
    value = attr_value(value)
    if value is not None:
        out[key] = value


def hex_id(value: Any) -> int:
    """A W3C trace or span id from its hex text (as the spool reads them back); 0 if invalid."""
    if type(value) is int:
        return value
    try:
        return int(str(value), 16)
    except ValueError:
        return 0


def mlobs_scope() -> InstrumentationScope:
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    return InstrumentationScope("mlobs", __version__)


class Resources:
    """One ``Resource`` per run, built from what the spool knows of the run.

    Args:
        base: attributes every run's resource starts from; by default the SDK's, with
            ``service.name`` ``mlobs`` unless ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES``
            name the service.
    """

    def __init__(self, base: Resource | None = None) -> None:
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource

        if base is None:
            base = Resource.create({"service.name": "mlobs"}).merge(OTELResourceDetector().detect())
        self.base = base
        self._cache: dict[str, Resource] = {}

    def get(self, run_id: str, runs: Mapping[str, RunInfo]) -> Resource:
        """The resource of a run; cached once the run's facts are known."""
        cached = self._cache.get(run_id)
        if cached is not None:
            return cached
        from opentelemetry.sdk.resources import Resource

        attrs: dict[str, Any] = {}
        run = runs.get(run_id)
        if run_id:
            attrs["service.instance.id"] = run_id
            attrs["mlobs.run.id"] = run_id
        if run is not None:
            attrs["mlobs.run.name"] = run.name
            for key, value in run.resource.items():
                target = RESOURCE_KEYS.get(key, f"mlobs.{key}")
                if target is not None:
                    put(attrs, target, value)
            for key, value in run.tags.items():
                put(attrs, f"mlobs.tag.{key}", value)
        resource = self.base.merge(Resource(attrs))
        if run is not None or not run_id:
            self._cache[run_id] = resource
        return resource
