"""Prometheus names for free-form mlobs names, shared by the ``/metrics`` and Pushgateway sinks.

Users name metrics freely (``val/loss``, ``stepTime_ms``); Prometheus wants
``[a-zA-Z_:][a-zA-Z0-9_:]*`` and its conventions, which ``promtool check metrics`` enforces. A user
name becomes ``mlobs_`` + the name in snake case with every other character turned into ``_``
(colons too: they belong to recording rules). Words the linter rejects as a standalone ``_word``
are glued to the word before them rather than dropped, so the name keeps saying what it meant
while the value stays in the user's unit: unit abbreviations (``step_time_ms`` becomes
``mlobs_step_timems``), non-base units (``minutes``), type names (``gauge``) and the suffixes
reserved for counters and histograms (``_total``, ``_count``, ``_sum``, ``_bucket``). The original
name is always in the metric's HELP text.

Two names that map to the same Prometheus name (``val/loss`` and ``val.loss``), or a user name
that maps onto one of mlobs' own series, are told apart by a stable suffix of 6 hex digits of the
original name: the first name seen keeps the plain form.
"""

from __future__ import annotations

import hashlib
import re
import threading

from mlobs import safety
from mlobs.export.shipper import CIRCUIT_OPENED, EXPORT_FAILURES, EXPORTED
from mlobs.gpu.names import METRICS as GPU_METRICS

PREFIX = "mlobs_"

# Names mlobs renders itself; a user metric never takes one of these.
RUN_STEP = "mlobs_run_step"
RUN_EPOCH = "mlobs_run_epoch"
RUN_INFO = "mlobs_run_info"
RUN_STATUS = "mlobs_run_status"
RUN_START = "mlobs_run_start_time_seconds"
RUN_END = "mlobs_run_end_time_seconds"
RUN_PROGRESS = "mlobs_run_last_progress_timestamp_seconds"
STEP_DURATION = "mlobs_step_duration_seconds"
STEP_EXECUTIONS = "mlobs_step_executions_total"
LOG_RECORDS = "mlobs_log_records_total"
SPOOL_BACKLOG = "mlobs_spool_backlog_records"
SPOOL_OLDEST_AGE = "mlobs_spool_oldest_unshipped_age_seconds"
CIRCUIT_OPEN = "mlobs_export_circuit_open"
FAILURES_IN_ROW = "mlobs_export_consecutive_failures"

RESERVED: dict[str, str] = {
    RUN_STEP: "gauge",
    RUN_EPOCH: "gauge",
    RUN_INFO: "gauge",
    RUN_STATUS: "gauge",
    RUN_START: "gauge",
    RUN_END: "gauge",
    RUN_PROGRESS: "gauge",
    STEP_DURATION: "histogram",
    STEP_EXECUTIONS: "counter",
    LOG_RECORDS: "counter",
    SPOOL_BACKLOG: "gauge",
    SPOOL_OLDEST_AGE: "gauge",
    CIRCUIT_OPEN: "gauge",
    FAILURES_IN_ROW: "gauge",
}
"""Family names (and types) of mlobs' own series."""

SELF_COUNTERS: dict[str, tuple[str, str]] = {
    safety.INTERNAL_ERRORS: ("where", "Failures inside mlobs, by place; never raised."),
    safety.VALUES_REJECTED: ("reason", "Values mlobs refused to record, by reason."),
    safety.NONFINITE_VALUES: ("kind", "NaN and infinite values recorded as they are."),
    safety.RECORDS_DROPPED: ("reason", "Records removed before shipping, by reason."),
    safety.OUTSIDE_RUN: ("call", "mlobs.log or mlobs.epoch calls made outside a run."),
    EXPORTED: ("sink", "Records acknowledged by each sink."),
    EXPORT_FAILURES: ("sink", "Failed export attempts per sink; the batch is retried."),
    CIRCUIT_OPENED: ("sink", "Times a sink's circuit breaker opened."),
    # the InfluxDB and OTLP sinks' own (their modules import optional libraries: names repeated)
    "mlobs_export_values_skipped_total": ("sink", "Values a sink's backend cannot store, skipped."),
    "mlobs_export_writes_rejected_total": ("sink", "Writes a backend refused as malformed."),
    # the alert webhook's (mlobs.alerts.actions, mlobs.alerts.webhook)
    "mlobs_alert_webhook_actions_total": ("decision", "What the alert webhook did, by decision."),
    "mlobs_alert_webhook_requests_rejected_total": ("reason", "Webhook requests refused."),
    # the GPU sampler's
    "mlobs_gpu_query_errors_total": ("function", "NVML calls that failed, not as unsupported."),
    "mlobs_gpu_samples_total": ("outcome", "GPU samples taken, by outcome."),
    "mlobs_gpu_lost_total": ("uuid", "GPUs that stopped answering, by UUID."),
}
"""Counters of :data:`mlobs.safety.self_metrics` served on ``/metrics``: label name and HELP.
Other ``mlobs_..._total`` counters are served too, labelled ``sink`` when named
``mlobs_export_...`` and ``key`` otherwise."""

# What promtool's linter (client_golang promlint) rejects as a whole ``_word`` of a metric name.
_ABBREVIATIONS = frozenset(
    {"s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"}
)
_BASE_UNITS = frozenset(
    {"amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres", "seconds"}
    | {"volts"}
)
_OTHER_UNITS = frozenset(
    {"minutes", "hours", "days", "weeks", "kelvins", "fahrenheit", "rankine", "inches", "yards"}
    | {"miles", "bits", "calories", "pounds", "ounces"}
)
_UNIT_PREFIXES = (
    *("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi"),
    *("mega", "mibi", "mebi", "giga", "gibi", "tera", "tebi", "peta", "pebi"),
)
_TYPE_WORDS = frozenset({"counter", "gauge", "histogram", "summary", "untyped", "info", "stateset"})
_TYPE_SUFFIXES = {
    "gauge": frozenset({"total", "count", "sum", "bucket", "created"}),
    "counter": frozenset({"count", "sum", "bucket", "created"}),
    "histogram": frozenset({"total", "count", "sum", "bucket", "created"}),
}

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_INVALID = re.compile(r"[^a-z0-9_]+")


def _is_unit_word(word: str) -> bool:
    """A unit promlint recognises that is not a base unit (``minutes``, ``milliseconds``)."""
    if word in _OTHER_UNITS:
        return True
    for prefix in _UNIT_PREFIXES:
        if word.startswith(prefix):
            rest = word[len(prefix) :]
            if rest in _BASE_UNITS or rest in _OTHER_UNITS:
                return True
    return False


def _rejected(word: str) -> bool:
    return word in _ABBREVIATIONS or word in _TYPE_WORDS or _is_unit_word(word)


def snake(name: str) -> str:
    """Lower snake case with only ``[a-z0-9_]``, no doubled, leading or trailing ``_``."""
    text = _CAMEL.sub(r"\1_\2", name).lower()
    return "_".join(w for w in _INVALID.sub("_", text).split("_") if w)


def _glue(words: list[str], reserved_suffixes: frozenset[str]) -> list[str]:
    """Merge each word the linter would reject into its neighbour until none is left."""
    words = list(words)
    changed = True
    while changed:
        changed = False
        for i, word in enumerate(words):
            last = i == len(words) - 1
            if not (_rejected(word) or (last and word in reserved_suffixes)):
                continue
            if i > 0:
                words[i - 1 : i + 1] = [words[i - 1] + word]
            elif len(words) > 1:
                words[0:2] = [word + words[1]]
            else:
                words = [word + "value"]
            changed = True
            break
    return words


def metric_base(name: str, kind: str) -> str:
    """The Prometheus family name of a user metric of ``kind`` (``gauge``, ``counter``,
    ``histogram``), before collisions are resolved. Counters end in ``_total``."""
    words = snake(name).split("_") if snake(name) else []
    if kind == "counter" and words and words[-1] == "total":
        words = words[:-1]
    words = _glue(words, _TYPE_SUFFIXES.get(kind, frozenset())) if words else ["value"]
    if words[0][0].isdigit():
        words[0] = "n" + words[0]
    base = PREFIX + "_".join(words)
    return base + "_total" if kind == "counter" else base


def label_name(key: str) -> str:
    """A label name for a free-form attribute key: snake case, never ``__``-prefixed, never
    starting with a digit."""
    text = snake(key)
    if not text:
        return "attr"
    return "n" + text if text[0].isdigit() else text


def _suffix(name: str) -> str:
    return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=3).hexdigest()


class NameTable:
    """Maps ``(user name, kind)`` to a unique family name, stable for the table's lifetime.

    Thread-safe: the exporter thread adds names while a scrape reads them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set()
        for family, kind in RESERVED.items():
            self._claim(family, kind)
        for family in SELF_COUNTERS:
            self._claim(family, "counter")
        for family, metric in GPU_METRICS.items():
            self._claim(family, metric.kind)

    def reserve(self, family: str, kind: str) -> None:
        """Keep ``family`` (one of mlobs' own names, of type ``kind``) away from user metrics."""
        with self._lock:
            self._claim(family, kind)

    def family(self, name: str, kind: str) -> str:
        key = (name, kind)
        found = self._by_key.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._by_key.get(key)
            if found is not None:
                return found
            base = metric_base(name, kind)
            candidate = base
            if self._clashes(candidate, kind):
                stem = base[: -len("_total")] if kind == "counter" else base
                tail = "_total" if kind == "counter" else ""
                candidate = f"{stem}_{_suffix(name)}{tail}"
                n = 1
                while self._clashes(candidate, kind):  # two names with the same 24-bit digest
                    candidate = f"{stem}_{_suffix(name)}_{n}{tail}"
                    n += 1
            self._claim(candidate, kind)
            self._by_key[key] = candidate
            return candidate

    @staticmethod
    def _series_names(family: str, kind: str) -> tuple[str, ...]:
        if kind == "histogram":
            return (family, *(family + s for s in ("_bucket", "_count", "_sum", "_created")))
        if kind == "counter":
            return (family, family[: -len("_total")], family[: -len("_total")] + "_created")
        return (family,)

    def _clashes(self, family: str, kind: str) -> bool:
        return any(name in self._taken for name in self._series_names(family, kind))

    def _claim(self, family: str, kind: str) -> None:
        # a histogram owns its _bucket/_count/_sum series, and a counter its bare name
        self._taken.update(self._series_names(family, kind))
