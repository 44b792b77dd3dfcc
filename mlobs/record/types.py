"""The records that flow from instrumentation through the spool to the sinks."""

from __future__ import annotations

import enum
import time
from typing import Any, NamedTuple


class Kind(enum.IntEnum):
    """What a record is. Stored as an integer in the spool; never renumber."""

    GAUGE = 1
    """A metric value that can go up and down (loss, accuracy, an epoch's duration)."""
    COUNTER = 2
    """A metric increment; sinks accumulate increments into a monotonic total."""
    HISTOGRAM = 3
    """One observation of a distribution (a request's latency)."""
    LOG = 4
    """A structured log record: ``name`` is the logger, ``value`` the level number."""
    SPAN = 5
    """A finished span: ``ts_ns`` its start, ``value`` its duration in seconds."""
    EVENT = 6
    """A lifecycle event: run start and end, heartbeat, drift window, dropped records."""


METRIC_KINDS = frozenset((Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM))

# Field order of a buffered record, as appended on the hot path: a plain tuple is the cheapest
# thing to build (see mlobs.record.recorder for what the buffer keeps of it).
BufferedRecord = tuple[
    int,
    "int | float",
    str,
    str,
    "float | None",
    "int | None",
    "int | None",
    "dict[str, Any] | None",
]
FIELDS = 8
"""Fields per buffered record. The buffer holds records flat, field after field; the flusher
writes them as columns (mlobs.record.columns)."""

# The timestamp of a buffered record is wall-clock nanoseconds (``time.time_ns()``), except on
# mlobs.log's hot path, which stamps ``time.monotonic()`` seconds: a float is cheaper to make and
# several times cheaper for the flusher to write than a 61-bit int. The spool turns such a stamp
# into wall-clock nanoseconds with the offset between the two clocks measured when it writes the
# chunk, a second or so later; a wall-clock step (NTP, a suspend) in between shifts those records
# by the step, as if it had happened before they were logged.


def clock_offset_ns() -> int:
    """Wall-clock minus monotonic time, in nanoseconds, now."""
    return time.time_ns() - time.monotonic_ns()


def wall_ns(ts: int | float, offset_ns: int) -> int:
    """A buffered record's timestamp in wall-clock nanoseconds (see ``clock_offset_ns``)."""
    return int(ts * 1e9) + offset_ns if type(ts) is float else int(ts)


class Record(NamedTuple):
    """One record as read back from the spool and handed to an exporter."""

    seq: int
    """Position in its spool file: strictly increasing, the cursor unit of every sink."""
    kind: Kind
    ts_ns: int
    """Wall-clock time in nanoseconds since the epoch."""
    run_id: str
    """The run this record belongs to; empty when recorded outside a run."""
    name: str
    value: float | None
    step: int | None
    epoch: int | None
    attrs: dict[str, Any]

    @property
    def is_metric(self) -> bool:
        return self.kind in METRIC_KINDS

    def to_json_dict(self) -> dict[str, Any]:
        """A flat, JSON-safe view used by the JSON-lines sink and ``mlobs export``."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "kind": self.kind.name.lower(),
            "ts_ns": self.ts_ns,
            "run_id": self.run_id,
            "name": self.name,
        }
        if self.value is not None:
            out["value"] = _json_number(self.value)
        if self.step is not None:
            out["step"] = self.step
        if self.epoch is not None:
            out["epoch"] = self.epoch
        if self.attrs:
            out["attrs"] = self.attrs
        return out


def _json_number(value: float) -> float | str:
    # JSON has no NaN or infinity; keep them visible as strings rather than emit invalid JSON.
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return value
