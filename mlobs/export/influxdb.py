"""InfluxDB sink: records as line protocol, written with ``influxdb-client`` to ``/api/v2/write``.

That is the write API of InfluxDB 2 and later, of InfluxDB 1.8+ (bucket
``database/retention-policy``, token ``user:password``, org ignored: ``-`` when unset) and of other
servers (VictoriaMetrics). Timestamps are the records' own, in nanoseconds.

Schema (one measurement per record kind; tags are the things dashboards group by, kept to low
cardinality: never a step, a timestamp or an id that changes per point):

``mlobs_metrics``: values from ``mlobs.log``, epochs, system collectors.
    Tags ``run_id``, ``run_name``, ``experiment``, ``rank``, ``kind`` (``gauge``; ``counter``:
    the value is an increment, sum it; ``histogram``: one observation), and every attribute of
    the point (``split``, ``scope``, ...; mlobs' own tags win a clash). Fields: one float field
    per metric name, plus integer fields ``step`` and ``epoch``. The values of one
    ``mlobs.log(loss=.., acc=..)`` call share a timestamp and tags and form one point. A metric
    whose name is taken (``time``, ``step``, ``epoch``, or one of the tag keys above) is written
    with a trailing ``_`` (``step_``). InfluxDB cannot store NaN or infinity: such values are
    left out and counted in ``mlobs_export_values_skipped_total{sink="influxdb"}``.
``mlobs_logs``: tags ``run_id``, ``level``, ``logger``, ``rank``. Fields ``message``,
    ``trace_id``, ``span_id``, ``step_name``, ``exception``, ``exception_type``, integer ``step``
    and ``epoch``, and ``attributes`` (the record's ``extra=`` fields as a JSON object).
``mlobs_spans``: tags ``run_id``, ``span`` (its name), ``span_kind`` (``run``, ``epoch``,
    ``step``), ``status`` (``ok``, ``error``), ``rank``. Fields ``duration_seconds``, ``trace_id``,
    ``span_id``, ``parent_span_id``, ``error``, ``error_type``, ``attempt``, ``retried``,
    ``step``, ``epoch``, ``attributes`` (JSON). The timestamp is the span's start.
``mlobs_events``: tags ``run_id``, ``event`` (``run_start``, ``run_end``, ``heartbeat``, ...).
    Fields ``value``, ``step``, ``epoch``, ``attributes`` (JSON).
``mlobs_runs``: one series per run, a point when it starts and one when it ends, so
    ``SELECT last(status) FROM mlobs_runs GROUP BY run_id`` lists runs and their state. Tags
    ``run_id``, ``run_name``, ``experiment``, ``rank``, ``model_name``, ``model_version``,
    ``dataset_name``, ``dataset_version`` (those set). Fields ``status``, ``duration_seconds``,
    ``error``, ``git_commit``, ``host``, ``params`` and ``tags`` (JSON).

Delivery: a batch is acknowledged only after the server answered 2xx to every write of it. A batch
offered again overwrites the same points (same measurement, tags and timestamp), so re-sending
after a crash or an outage adds nothing twice. The one exception to "retry until acknowledged" is
HTTP 400: the server found malformed points (a field type conflict with older data, say), stored
the others, and would refuse the same bytes forever; the write is counted in
``mlobs_export_writes_rejected_total{sink="influxdb"}``, logged, and shipping goes on.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision

from mlobs import safety
from mlobs.config import Config
from mlobs.export.base import WRITES_REJECTED, Batch, Exporter, ExportResult
from mlobs.record.types import METRIC_KINDS, Kind, Record
from mlobs.spool.store import RUN_END, RUN_START, RunInfo

METRICS = "mlobs_metrics"
LOGS = "mlobs_logs"
SPANS = "mlobs_spans"
EVENTS = "mlobs_events"
RUNS = "mlobs_runs"

VALUES_SKIPPED = "mlobs_export_values_skipped_total"
"""Values the backend cannot store (NaN, infinity), left out of their point; label: the sink."""

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_LINES = 5_000
MAX_STRING_CHARS = 16_000
"""Longer string fields (a log message, a traceback) are cut: InfluxDB refuses a string over
64 KiB, and 16,000 characters stay under it in UTF-8 whatever they are."""

_KIND_NAMES = {k: k.name.lower() for k in Kind}
# Field names of a metric point that a user's metric must not overwrite (InfluxDB 1.x refuses a
# field called ``time``; the others are mlobs' own fields and tags).
_RESERVED = frozenset(
    ("time", "step", "epoch", "run_id", "run_name", "experiment", "rank", "kind", "split", "scope")
)
_LOG_FIELDS = ("message", "trace_id", "span_id", "step_name", "exception", "exception_type")
_LOG_OWN = frozenset((*_LOG_FIELDS, "level", "rank"))
_SPAN_STR_FIELDS = ("trace_id", "span_id", "parent_span_id", "error", "error_type")
_SPAN_OWN = frozenset((*_SPAN_STR_FIELDS, "status", "span_kind", "rank", "attempt", "retried"))
_RUN_TAGS = ("model_name", "model_version", "dataset_name", "dataset_version")
_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}

_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
)
# InfluxDB 1.x reads a backslash before a comma, an equals sign or a space as an escape, and has no
# way to write one at the end of a tag value; such backslashes become slashes.
_BAD_BACKSLASH = re.compile(r"\\+(?=[,= ]|$)")


def escape_key(text: str) -> str:
    """A measurement, tag key, tag value or field key as line protocol writes it."""
    if "\\" in text:
        text = _BAD_BACKSLASH.sub(lambda m: "/" * len(m.group()), text)
    return text.translate(_ESCAPE_KEY)


def string_field(text: str) -> str:
    """A string field value, quoted, and cut to fit InfluxDB's 64 KiB limit."""
    if len(text) > MAX_STRING_CHARS:
        text = text[:MAX_STRING_CHARS] + " [truncated by mlobs]"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _float_field(name: str, value: float | None) -> list[str]:
    """``[name=value]`` for a finite number, else nothing (InfluxDB stores no NaN or infinity)."""
    if value is None or not math.isfinite(value):
        return []
    return [f"{name}={float(value)!r}"]


def _tag_text(value: Any) -> str | None:
    """A tag value, or ``None`` for what cannot be one (an empty string, ``None``, a container)."""
    if isinstance(value, str):
        return escape_key(value) if value else None
    if isinstance(value, bool | int | float):
        return escape_key(str(value))
    return None


def _tags(pairs: Iterable[tuple[str, Any]]) -> str:
    """``,k=v,k=v`` sorted by key (the order InfluxDB stores series keys in). A key given twice
    keeps its last value (InfluxDB refuses a line with a duplicate tag); InfluxDB 1.x refuses the
    tag key ``time``, written ``time_``."""
    merged = {("time_" if key == "time" else key): value for key, value in pairs if key}
    out = []
    for key in sorted(merged):
        text = _tag_text(merged[key])
        if text is not None:
            out.append(f",{escape_key(key)}={text}")
    return "".join(out)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, sort_keys=True)


def _point(head: str, fields: list[str], record: Record) -> str:
    """One line: measurement and tags, fields with the record's step and epoch, timestamp."""
    return f"{head} {','.join(fields)}{_step_fields(record.step, record.epoch)} {record.ts_ns}"


def _step_fields(step: int | None, epoch: int | None) -> str:
    if step is None:
        return "" if epoch is None else f",epoch={epoch}i"
    return f",step={step}i" if epoch is None else f",epoch={epoch}i,step={step}i"


class InfluxDBExporter(Exporter):
    """Writes records to InfluxDB as line protocol, one synchronous write per ``max_lines``.

    Args:
        url: server URL, e.g. ``http://127.0.0.1:8086``.
        token: API token; ``user:password`` for InfluxDB 1.8 with authentication.
        org: organisation; InfluxDB 1.x and VictoriaMetrics ignore it (``-`` when unset).
        bucket: bucket, or ``database/retention-policy`` for InfluxDB 1.x.
        timeout: seconds one write may take, connecting included.
        max_lines: points per write request.
    """

    name = "influxdb"

    def __init__(
        self,
        url: str,
        token: str | None = None,
        org: str | None = None,
        bucket: str = "mlobs",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_lines: int = DEFAULT_MAX_LINES,
    ) -> None:
        self.url = url
        self.bucket = bucket
        self.org = org or "-"
        self.max_lines = max(1, max_lines)
        self._token = token or ""
        self._timeout_ms = int(timeout * 1000)
        self._connect()
        self._field_keys: dict[str, str] = {}

    def _connect(self) -> None:
        self._pid = os.getpid()
        # retries=False: one export is one bounded attempt per write. Retrying is the shipper's
        # job: it re-offers the batch from its cursor after a backoff.
        self._client = InfluxDBClient(
            url=self.url, token=self._token, org=self.org, timeout=self._timeout_ms, retries=False
        )
        # SYNCHRONOUS, not the client's batching mode: that mode answers at once and posts later
        # from a thread of its own, so a write could fail after the shipper had moved its cursor
        # past the records. The batching here is the shipper's (up to 5,000 records a batch).
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    # -- line protocol -------------------------------------------------------------------------
    def _field_key(self, name: str) -> str:
        key = self._field_keys.get(name)
        if key is None:
            key = escape_key(name + "_" if name in _RESERVED else name)
            if len(self._field_keys) < 100_000:
                self._field_keys[name] = key
        return key

    def lines(self, batch: Batch) -> list[str]:
        """The batch as line protocol, one string per point."""
        out: list[str] = []
        runs = batch.runs
        metric_kinds = METRIC_KINDS
        field_keys = self._field_keys
        prefixes: dict[tuple[str, Kind, int], str] = {}
        skipped = 0
        # The metric point being built: the values of one log call (same time, tags, step and
        # epoch, recorded one after the other) go into one point.
        prefix = fields = tail = ""
        ts = step = epoch = None
        for record in batch.records:
            _seq, kind, r_ts, run_id, name, value, r_step, r_epoch, attrs = record
            if kind not in metric_kinds:
                try:
                    out.extend(self._other_lines(record, runs))
                except Exception as exc:
                    # a record that cannot be encoded must not hold back every record behind it
                    safety.report(f"export.{self.name}.encode", exc)
                continue
            if type(value) is not float:
                try:
                    value = float(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    value = math.nan  # None, or not a number: the spool never holds one
            if value - value != 0.0:  # NaN or infinity
                skipped += 1
                continue
            cache_key = (run_id, kind, id(attrs) if attrs else 0)
            r_prefix = prefixes.get(cache_key)
            if r_prefix is None:
                own = [*_run_tag_pairs(run_id, runs), ("kind", _KIND_NAMES[kind])]
                r_prefix = prefixes[cache_key] = METRICS + _tags([*attrs.items(), *own])
            key = field_keys.get(name) or self._field_key(name)
            if r_ts == ts and r_prefix is prefix and r_step == step and r_epoch == epoch:
                fields += f",{key}={value!r}"
                continue
            if prefix:
                out.append(f"{prefix} {fields}{tail} {ts}")
            prefix, fields, ts, step, epoch = r_prefix, f"{key}={value!r}", r_ts, r_step, r_epoch
            tail = _step_fields(r_step, r_epoch)
        if prefix:
            out.append(f"{prefix} {fields}{tail} {ts}")
        if skipped:
            safety.self_metrics.inc(VALUES_SKIPPED, self.name, skipped)
            safety.warn(
                f"{self.name}:nonfinite",
                "mlobs: InfluxDB cannot store NaN or infinite values; %d left out (counted in %s)",
                skipped,
                VALUES_SKIPPED,
            )
        return out

    def _other_lines(self, record: Record, runs: Mapping[str, RunInfo]) -> list[str]:
        if record.kind is Kind.LOG:
            return [self._log_line(record)]
        if record.kind is Kind.SPAN:
            return [self._span_line(record)]
        if record.name in (RUN_START, RUN_END) and record.run_id:
            return [self._event_line(record), self._run_line(record, runs)]
        return [self._event_line(record)]

    def _log_line(self, record: Record) -> str:
        attrs = record.attrs
        level = attrs.get("level") or _LEVELS.get(int(record.value or 0), str(record.value))
        tags = _tags(
            [
                ("run_id", record.run_id),
                ("level", level),
                ("logger", record.name),
                ("rank", attrs.get("rank")),
            ]
        )
        fields = [
            f"{name}={string_field(str(attrs[name]))}" for name in _LOG_FIELDS if name in attrs
        ]
        extra = {k: v for k, v in attrs.items() if k not in _LOG_OWN}
        if extra:
            fields.append(f"attributes={string_field(_json(extra))}")
        if not fields:
            fields.append('message=""')
        return _point(LOGS + tags, fields, record)

    def _span_line(self, record: Record) -> str:
        attrs = record.attrs
        tags = _tags(
            [
                ("run_id", record.run_id),
                ("span", record.name),
                ("span_kind", attrs.get("span_kind")),
                ("status", attrs.get("status")),
                ("rank", attrs.get("rank")),
            ]
        )
        fields = [
            f"{name}={string_field(str(attrs[name]))}"
            for name in _SPAN_STR_FIELDS
            if attrs.get(name) is not None
        ]
        fields += _float_field("duration_seconds", record.value)
        if isinstance(attrs.get("attempt"), int):
            fields.append(f"attempt={attrs['attempt']}i")
        if isinstance(attrs.get("retried"), bool):
            fields.append(f"retried={'true' if attrs['retried'] else 'false'}")
        extra = {k: v for k, v in attrs.items() if k not in _SPAN_OWN}
        if extra:
            fields.append(f"attributes={string_field(_json(extra))}")
        if not fields:
            fields.append('trace_id=""')
        return _point(SPANS + tags, fields, record)

    def _event_line(self, record: Record) -> str:
        tags = _tags([("run_id", record.run_id), ("event", record.name)])
        fields = [f"attributes={string_field(_json(record.attrs or {}))}"]
        fields += _float_field("value", record.value)
        return _point(EVENTS + tags, fields, record)

    def _run_line(self, record: Record, runs: Mapping[str, RunInfo]) -> str:
        """A point of the run's own series. Built from the event itself and the run's stored
        start, which do not change, so a re-sent batch writes the same point again."""
        run = runs.get(record.run_id)
        attrs = record.attrs
        if record.name == RUN_START:
            resource = attrs.get("resource") or {}
            name = attrs.get("run_name")
            fields = {"status": "running", "params": attrs.get("params"), "tags": attrs.get("tags")}
        else:
            resource = run.resource if run is not None else {}
            name = run.name if run is not None else None
            fields = {"status": attrs.get("status", "finished"), "error": attrs.get("error")}
        pairs = [
            ("run_id", record.run_id),
            ("run_name", name),
            ("experiment", resource.get("experiment")),
            ("rank", resource.get("rank")),
            *((key, resource.get(key)) for key in _RUN_TAGS),
        ]
        fields["git_commit"] = resource.get("git_commit")
        fields["host"] = resource.get("host")
        parts = []
        for key, value in sorted(fields.items()):
            if value is None or value == {}:
                continue
            text = value if isinstance(value, str) else _json(value)
            parts.append(f"{key}={string_field(text)}")
        if record.name == RUN_END and run is not None and record.ts_ns >= run.start_ns:
            parts.append(f"duration_seconds={(record.ts_ns - run.start_ns) / 1e9!r}")
        return f"{RUNS}{_tags(pairs)} {','.join(parts)} {record.ts_ns}"

    # -- Exporter ------------------------------------------------------------------------------
    def export(self, batch: Batch) -> ExportResult:
        try:
            lines = self.lines(batch)
        except Exception as exc:
            safety.report(f"export.{self.name}.encode", exc)
            return ExportResult.FAILURE
        if self._pid != os.getpid():
            # A forked child: its pooled connections are the parent's sockets. Leave them to the
            # parent (closing them here could cut its requests) and open new ones.
            self._connect()
        for start in range(0, len(lines), self.max_lines):
            body = "\n".join(lines[start : start + self.max_lines]).encode("utf-8")
            try:
                self._write_api.write(
                    bucket=self.bucket,
                    org=self.org,
                    record=body,
                    # the client annotates the parameter with the class of its str constants
                    write_precision=WritePrecision.NS,  # type: ignore[arg-type]
                )
            except Exception as exc:
                if getattr(exc, "status", None) == 400:
                    # The server refused part of the body as malformed and stored the rest (a
                    # "partial write"): sending the same bytes again can never succeed, and
                    # retrying forever would hold back everything behind them.
                    self._rejected(exc)
                    continue
                safety.warn(
                    f"{self.name}:write",
                    "mlobs: InfluxDB write to %s failed (%s); retrying in the background",
                    self.url,
                    _describe(exc),
                )
                return ExportResult.FAILURE
        return ExportResult.SUCCESS

    def _rejected(self, exc: Exception) -> None:
        safety.self_metrics.inc(WRITES_REJECTED, self.name)
        safety.warn(
            f"{self.name}:rejected",
            "mlobs: InfluxDB at %s refused part of a write as malformed: %s",
            self.url,
            _describe(exc),
        )

    def shutdown(self, timeout: float = 10.0) -> None:
        self._write_api.close()  # type: ignore[no-untyped-call]  # the client is partly typed
        self._client.close()  # type: ignore[no-untyped-call]


def _run_tag_pairs(run_id: str, runs: Mapping[str, RunInfo]) -> list[tuple[str, Any]]:
    if not run_id:
        return []
    run = runs.get(run_id)
    if run is None:
        return [("run_id", run_id)]
    resource = run.resource
    return [
        ("run_id", run_id),
        ("run_name", run.name),
        ("experiment", resource.get("experiment")),
        ("rank", resource.get("rank")),
    ]


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    if status is not None:
        return f"HTTP {status} {body or getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def from_config(config: Config) -> InfluxDBExporter:
    if not config.influxdb_url:
        raise ValueError("influxdb_url is not set")
    return InfluxDBExporter(
        config.influxdb_url,
        token=config.influxdb_token,
        org=config.influxdb_org,
        bucket=config.influxdb_bucket,
    )
