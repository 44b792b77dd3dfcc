"""Which sinks the settings turn on. Each sink module is imported only when its setting is set,
so a sink that is not used costs no import time and its client library need not be installed.

Every sink module exposes ``from_config(config) -> Exporter``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass

from mlobs import safety
from mlobs.config import Config
from mlobs.export.base import Exporter

_OTLP_SIGNAL_ENDPOINTS = tuple(
    f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT" for signal in ("METRICS", "LOGS", "TRACES")
)


def otlp_enabled(config: Config) -> bool:
    """On when the endpoint is set, for all signals or for any one of them."""
    return bool(config.otlp_endpoint) or any(os.environ.get(v) for v in _OTLP_SIGNAL_ENDPOINTS)


@dataclass(frozen=True)
class SinkSpec:
    name: str
    module: str
    extra: str
    """The ``pip install 'mlobs[EXTRA]'`` extra holding the sink's client library."""
    enabled: Callable[[Config], bool]


SINKS: tuple[SinkSpec, ...] = (
    SinkSpec("jsonl", "mlobs.export.jsonl", "", lambda c: bool(c.jsonl)),
    SinkSpec(
        "prometheus",
        "mlobs.export.prometheus",
        "prometheus",
        lambda c: c.prometheus_port is not None,
    ),
    SinkSpec(
        "pushgateway", "mlobs.export.pushgateway", "prometheus", lambda c: bool(c.pushgateway_url)
    ),
    SinkSpec("influxdb", "mlobs.export.influxdb", "influxdb", lambda c: bool(c.influxdb_url)),
    SinkSpec("otlp", "mlobs.export.otlp", "otlp", otlp_enabled),
    SinkSpec("fluentd", "mlobs.export.fluentd", "fluentd", lambda c: bool(c.fluentd_host)),
)


def build_sinks(config: Config, only: Collection[str] | None = None) -> list[Exporter]:
    """The exporters the configuration turns on (of the sinks named in ``only``, when given).

    A sink that cannot be built is reported and left out; the others, and the spool, keep
    working (records wait there for ``mlobs replay``).
    """
    exporters: list[Exporter] = []
    for spec in SINKS:
        if not spec.enabled(config) or (only is not None and spec.name not in only):
            continue
        try:
            module = importlib.import_module(spec.module)
            exporters.append(module.from_config(config))
        except ImportError as exc:
            safety.report(
                f"sink.{spec.name}",
                exc,
                f"sink {spec.name} is configured but its library is missing ({exc}); "
                f"install it with: pip install 'mlobs[{spec.extra}]'",
            )
        except Exception as exc:
            safety.report(f"sink.{spec.name}", exc, f"sink {spec.name} could not start: {exc}")
    return exporters
