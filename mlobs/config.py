"""Every setting mlobs reads, in one place.

Precedence is argument to :func:`mlobs.configure` > environment variable > default. A value that
cannot be parsed warns once and falls back to the next source, so a typo in a job file never stops
a training run.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

# Environment variable names: the documented interface. The README table mirrors this list.
MLOBS_DIR = "MLOBS_DIR"
"""Directory holding the spool (one SQLite file per process). Default ``.mlobs``."""
MLOBS_FLUSH_INTERVAL = "MLOBS_FLUSH_INTERVAL"
"""Seconds between background flushes to the spool; a SIGKILL loses at most this much. Default 1."""
MLOBS_FLUSH_MAX_RECORDS = "MLOBS_FLUSH_MAX_RECORDS"
"""Buffered records that wake the flusher before its interval ends. Default 10000."""
MLOBS_SPOOL_MAX_BYTES = "MLOBS_SPOOL_MAX_BYTES"
"""Disk budget of the spool directory; past it the oldest records are dropped and counted."""
MLOBS_BUFFER_MAX_RECORDS = "MLOBS_BUFFER_MAX_RECORDS"
"""Records held in memory while the spool cannot be written; past it the oldest are dropped."""
MLOBS_STRICT = "MLOBS_STRICT"
"""``1`` makes mlobs' own failures raise instead of being logged and counted (for tests)."""
MLOBS_JSONL = "MLOBS_JSONL"
"""Path of a JSON-lines sink file, or ``-`` for standard error. Unset: no JSON-lines sink."""
MLOBS_CAPTURE_LOGS = "MLOBS_CAPTURE_LOGS"
"""``1`` (default) records stdlib ``logging`` records into the spool once mlobs is started."""
MLOBS_LOG_LEVEL = "MLOBS_LOG_LEVEL"
"""Lowest level of captured log records. Default ``INFO``."""
MLOBS_LOG_ALL_RANKS = "MLOBS_LOG_ALL_RANKS"
"""``1`` records ``mlobs.log`` metrics on every rank; by default only rank 0 records them."""
MLOBS_HEARTBEAT_INTERVAL = "MLOBS_HEARTBEAT_INTERVAL"
"""Seconds between heartbeat points of a running run. Default 10."""
MLOBS_RUN_ID = "MLOBS_RUN_ID"
"""Run id to use, so that every rank of a distributed job shares one run."""
MLOBS_EXPERIMENT = "MLOBS_EXPERIMENT"
"""Experiment name recorded with each run. Default ``default``."""
MLOBS_GIT = "MLOBS_GIT"
"""``0`` skips looking up the git commit of the working directory."""
MLOBS_GPU = "MLOBS_GPU"
"""GPU sampling in runs: ``auto`` (default: on when NVML finds a GPU), ``off``, or ``all`` for
every GPU on the host instead of only those in ``CUDA_VISIBLE_DEVICES``."""
MLOBS_GPU_INTERVAL = "MLOBS_GPU_INTERVAL"
"""Seconds between GPU samples inside a run. Default 5."""
MLOBS_ENERGY_PRICE_PER_KWH = "MLOBS_ENERGY_PRICE_PER_KWH"
"""Price of one kWh, for the energy cost of each epoch and run. Unset: no cost metric."""
MLOBS_GRID_INTENSITY_G_PER_KWH = "MLOBS_GRID_INTENSITY_G_PER_KWH"
"""Grams of CO2-equivalent per kWh of the grid, for emissions per epoch and run. Unset: none."""

# Sinks: setting the first variable of a sink turns it on.
MLOBS_PROMETHEUS_PORT = "MLOBS_PROMETHEUS_PORT"
"""Port of a ``/metrics`` endpoint serving the latest values (0 picks a free port)."""
MLOBS_PROMETHEUS_ADDR = "MLOBS_PROMETHEUS_ADDR"
"""Address the ``/metrics`` endpoint binds. Default ``127.0.0.1``; ``0.0.0.0`` to be scraped."""
MLOBS_PROMETHEUS_CERTFILE = "MLOBS_PROMETHEUS_CERTFILE"
"""TLS certificate for the ``/metrics`` endpoint (with ``MLOBS_PROMETHEUS_KEYFILE``)."""
MLOBS_PROMETHEUS_KEYFILE = "MLOBS_PROMETHEUS_KEYFILE"
"""TLS private key for the ``/metrics`` endpoint."""
MLOBS_PUSHGATEWAY_URL = "MLOBS_PUSHGATEWAY_URL"
"""Pushgateway to push each run's values to, grouped by job and run (for batch jobs)."""
MLOBS_PUSHGATEWAY_USERNAME = "MLOBS_PUSHGATEWAY_USERNAME"
"""Basic-auth user for the Pushgateway."""
MLOBS_PUSHGATEWAY_PASSWORD = "MLOBS_PUSHGATEWAY_PASSWORD"
"""Basic-auth password for the Pushgateway."""
MLOBS_PUSHGATEWAY_DELETE = "MLOBS_PUSHGATEWAY_DELETE"
"""``1`` deletes a run's group from the Pushgateway once the run has finished and shipped."""
MLOBS_INFLUXDB_URL = "MLOBS_INFLUXDB_URL"
"""InfluxDB URL (``INFLUXDB_V2_URL`` is read too)."""
MLOBS_INFLUXDB_TOKEN = "MLOBS_INFLUXDB_TOKEN"
"""InfluxDB token (``INFLUXDB_V2_TOKEN``); ``user:password`` for InfluxDB 1.x."""
MLOBS_INFLUXDB_ORG = "MLOBS_INFLUXDB_ORG"
"""InfluxDB organisation (``INFLUXDB_V2_ORG``); ignored by 1.x."""
MLOBS_INFLUXDB_BUCKET = "MLOBS_INFLUXDB_BUCKET"
"""InfluxDB bucket, or ``database/retention-policy`` for 1.x. Default ``mlobs``."""
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""OTLP endpoint for metrics, logs and traces; the per-signal variables work too."""
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
"""``http/protobuf`` (default) or ``grpc``."""
MLOBS_FLUENTD_HOST = "MLOBS_FLUENTD_HOST"
"""Fluentd (or Fluent Bit) forward input to send log records and events to."""
MLOBS_FLUENTD_PORT = "MLOBS_FLUENTD_PORT"
"""Port of the forward input. Default 24224."""
MLOBS_FLUENTD_TAG = "MLOBS_FLUENTD_TAG"
"""Tag prefix; records go out as ``PREFIX.log``, ``PREFIX.event``, ... Default ``mlobs``."""
MLOBS_FLUENTD_ACK = "MLOBS_FLUENTD_ACK"
"""``1`` asks Fluentd to acknowledge each chunk (at-least-once delivery)."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


# An interval longer than a day is a typo, and inf or nan would overflow the timers that use it.
_MAX_INTERVAL_S = 86_400.0


def _interval(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= _MAX_INTERVAL_S:
        raise ValueError(f"must be > 0 and at most {_MAX_INTERVAL_S:g} seconds: {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        # sizes are often written 1e9 or come from configure(spool_max_bytes=1e9) as "1000000000.0"
        number = float(raw)
        if not number.is_integer():
            raise ValueError(f"not a whole number: {raw!r}") from None
        value = int(number)
    if value <= 0:
        raise ValueError(f"must be > 0: {raw!r}")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"not a port: {raw!r}")
    return value


def _otlp_protocol(raw: str) -> str:
    protocol = raw.strip().lower()
    if protocol not in ("http/protobuf", "grpc"):
        raise ValueError(f"not an OTLP protocol mlobs speaks (http/protobuf, grpc): {raw!r}")
    return protocol


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"not a log level: {raw!r}")
    return level


def _text(raw: str) -> str:
    return raw


def _gpu_mode(raw: str) -> str:
    mode = raw.strip().lower()
    aliases = {"1": "auto", "true": "auto", "on": "auto", "0": "off", "false": "off", "no": "off"}
    mode = aliases.get(mode, mode)
    if mode not in ("auto", "off", "all"):
        raise ValueError(f"not a GPU mode (auto, off, all): {raw!r}")
    return mode


def _non_negative(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):
        raise ValueError(f"must be a finite number >= 0: {raw!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Setting:
    field: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    aliases: tuple[str, ...] = ()
    """Other variables read when ``env`` is unset (a client library's own names)."""
    secret: bool = False
    """Never printed (``mlobs doctor`` shows only whether it is set)."""


SETTINGS: tuple[Setting, ...] = (
    Setting("dir", MLOBS_DIR, ".mlobs", _text),
    Setting("flush_interval", MLOBS_FLUSH_INTERVAL, 1.0, _interval),
    Setting("flush_max_records", MLOBS_FLUSH_MAX_RECORDS, 10_000, _positive_int),
    Setting("spool_max_bytes", MLOBS_SPOOL_MAX_BYTES, 2 * 1024**3, _positive_int),
    Setting("buffer_max_records", MLOBS_BUFFER_MAX_RECORDS, 2_000_000, _positive_int),
    Setting("strict", MLOBS_STRICT, False, _parse_bool),
    Setting("jsonl", MLOBS_JSONL, None, _text),
    Setting("capture_logs", MLOBS_CAPTURE_LOGS, True, _parse_bool),
    Setting("log_level", MLOBS_LOG_LEVEL, "INFO", _log_level),
    Setting("log_all_ranks", MLOBS_LOG_ALL_RANKS, False, _parse_bool),
    Setting("heartbeat_interval", MLOBS_HEARTBEAT_INTERVAL, 10.0, _interval),
    Setting("run_id", MLOBS_RUN_ID, None, _text),
    Setting("experiment", MLOBS_EXPERIMENT, "default", _text),
    Setting("git", MLOBS_GIT, True, _parse_bool),
    Setting("gpu", MLOBS_GPU, "auto", _gpu_mode),
    Setting("gpu_interval", MLOBS_GPU_INTERVAL, 5.0, _interval),
    Setting("energy_price_per_kwh", MLOBS_ENERGY_PRICE_PER_KWH, None, _non_negative),
    Setting("grid_intensity_g_per_kwh", MLOBS_GRID_INTENSITY_G_PER_KWH, None, _non_negative),
    Setting("prometheus_port", MLOBS_PROMETHEUS_PORT, None, _port),
    Setting("prometheus_addr", MLOBS_PROMETHEUS_ADDR, "127.0.0.1", _text),
    Setting("prometheus_certfile", MLOBS_PROMETHEUS_CERTFILE, None, _text),
    Setting("prometheus_keyfile", MLOBS_PROMETHEUS_KEYFILE, None, _text),
    Setting("pushgateway_url", MLOBS_PUSHGATEWAY_URL, None, _text),
    Setting("pushgateway_username", MLOBS_PUSHGATEWAY_USERNAME, None, _text),
    Setting("pushgateway_password", MLOBS_PUSHGATEWAY_PASSWORD, None, _text, secret=True),
    Setting("pushgateway_delete", MLOBS_PUSHGATEWAY_DELETE, False, _parse_bool),
    Setting("influxdb_url", MLOBS_INFLUXDB_URL, None, _text, ("INFLUXDB_V2_URL",)),
    Setting(
        "influxdb_token", MLOBS_INFLUXDB_TOKEN, None, _text, ("INFLUXDB_V2_TOKEN",), secret=True
    ),
    Setting("influxdb_org", MLOBS_INFLUXDB_ORG, None, _text, ("INFLUXDB_V2_ORG",)),
    Setting("influxdb_bucket", MLOBS_INFLUXDB_BUCKET, "mlobs", _text),
    Setting("otlp_endpoint", OTEL_EXPORTER_OTLP_ENDPOINT, None, _text),
    Setting("otlp_protocol", OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf", _otlp_protocol),
    Setting("fluentd_host", MLOBS_FLUENTD_HOST, None, _text),
    Setting("fluentd_port", MLOBS_FLUENTD_PORT, 24224, _port),
    Setting("fluentd_tag", MLOBS_FLUENTD_TAG, "mlobs", _text),
    Setting("fluentd_ack", MLOBS_FLUENTD_ACK, False, _parse_bool),
)
_BY_FIELD = {s.field: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Config:
    """The configuration in force. Build it with :func:`resolve`; fields mirror ``SETTINGS``."""

    dir: str = ".mlobs"
    flush_interval: float = 1.0
    flush_max_records: int = 10_000
    spool_max_bytes: int = 2 * 1024**3
    buffer_max_records: int = 2_000_000
    strict: bool = False
    jsonl: str | None = None
    capture_logs: bool = True
    log_level: str = "INFO"
    log_all_ranks: bool = False
    heartbeat_interval: float = 10.0
    run_id: str | None = None
    experiment: str = "default"
    git: bool = True
    gpu: str = "auto"
    gpu_interval: float = 5.0
    energy_price_per_kwh: float | None = None
    grid_intensity_g_per_kwh: float | None = None
    prometheus_port: int | None = None
    prometheus_addr: str = "127.0.0.1"
    prometheus_certfile: str | None = None
    prometheus_keyfile: str | None = None
    pushgateway_url: str | None = None
    pushgateway_username: str | None = None
    pushgateway_password: str | None = dataclasses.field(default=None, repr=False)
    pushgateway_delete: bool = False
    influxdb_url: str | None = None
    influxdb_token: str | None = dataclasses.field(default=None, repr=False)
    influxdb_org: str | None = None
    influxdb_bucket: str = "mlobs"
    otlp_endpoint: str | None = None
    otlp_protocol: str = "http/protobuf"
    fluentd_host: str | None = None
    fluentd_port: int = 24224
    fluentd_tag: str = "mlobs"
    fluentd_ack: bool = False
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    """Where each field's value came from: ``argument``, ``env`` or ``default``."""


def resolve(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Combine arguments, environment and defaults into a :class:`Config`.

    Args:
        overrides: values passed to ``mlobs.configure``; unknown names raise ``TypeError``
            (a programming error, caught at configuration time rather than on the hot path).
        environ: the environment to read, ``os.environ`` by default.
    """
    overrides = dict(overrides or {})
    env = os.environ if environ is None else environ
    unknown = sorted(set(overrides) - set(_BY_FIELD))
    if unknown:
        raise TypeError(f"mlobs.configure() got unknown settings: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if overrides.get(setting.field) is not None:
            arg = overrides[setting.field]
            try:
                values[setting.field] = setting.parse(str(arg))
                sources[setting.field] = "argument"
                continue
            except ValueError as exc:
                warnings.warn(
                    f"mlobs: ignoring {setting.field}={arg!r} ({exc})", RuntimeWarning, stacklevel=3
                )
        name = next((n for n in (setting.env, *setting.aliases) if env.get(n)), setting.env)
        raw = env.get(name)
        if raw is not None and raw != "":
            try:
                values[setting.field] = setting.parse(raw)
                sources[setting.field] = "env" if name == setting.env else f"env {name}"
                continue
            except ValueError as exc:
                shown = "***" if setting.secret else repr(raw)
                warnings.warn(
                    f"mlobs: ignoring {name}={shown} ({exc}); using {setting.default!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        values[setting.field] = setting.default
        sources[setting.field] = "default"
    return Config(**values, sources=sources)
