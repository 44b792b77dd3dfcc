"""Encoding of a batch of buffered records into one spool chunk.

The spool stores records in chunks, one SQLite row per flush, because a row per record costs
4-7 µs of SQLite work on a small machine, mostly with the GIL held, which a training loop logging
a million values cannot afford. A chunk holds its records as columns, one per field, in Python's
``marshal`` format, version 4 (stable since Python 3.4, pinned here), written and read in C. A
column whose every value is the same (the kind, run id, metric name, epoch or split of a stretch of
``mlobs.log`` calls) is stored once, so a chunk of metric values costs little more than its
timestamps, values and steps; objects shared between records (a split's attribute dict) are stored
once too. Before the columns, the header holds the wall-clock minus monotonic offset of the
write, for the records stamped with monotonic time (see mlobs.record.types).

``marshal`` takes only built-in types. A log record's ``extra=`` may carry anything, so a batch
that does not marshal is encoded again with such attribute values turned into strings.
``marshal`` is not hardened against malicious input: spool files are the local user's own data.

Chunks written before the columns (``MLC1``: a list of record tuples) still decode.
"""

from __future__ import annotations

import marshal
import struct
from typing import Any

from mlobs.record.columns import ATTRS, EPOCH, KIND, NAME, RUN_ID, STEP, Columns, column_is_constant
from mlobs.record.types import BufferedRecord

MAGIC = b"MLC2"
MAGIC_TUPLES = b"MLC1"
MARSHAL_VERSION = 4
_OFFSET = struct.Struct("<q")

_SHAREABLE = (KIND, RUN_ID, NAME, STEP, EPOCH, ATTRS)
"""Columns stored once when all their values are equal. Not the timestamp (an int and a float
stamp must not merge) nor the value (0.0 and -0.0 compare equal)."""


def encode(batch: Columns, clock_offset_ns: int) -> bytes:
    """Pack a non-empty batch into one chunk, with the clock offset that turns its monotonic
    timestamps into wall-clock ones (see mlobs.record.types)."""
    columns: list[Any] = list(batch.columns)
    for position in _SHAREABLE:
        column = columns[position]
        if column_is_constant(column):
            columns[position] = (column[0],)  # a tuple: stored once (a column is a list)
    header = MAGIC + _OFFSET.pack(clock_offset_ns)
    try:
        return header + marshal.dumps((len(batch), columns), MARSHAL_VERSION)
    except ValueError:  # an attribute value of a type marshal does not know
        attrs = columns[ATTRS]
        columns[ATTRS] = type(attrs)(_plain(a) for a in attrs)
        return header + marshal.dumps((len(batch), columns), MARSHAL_VERSION)


def _plain(value: Any) -> Any:
    """``value`` with everything but None, bool, int, float and str made a string."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def decode(payload: bytes) -> tuple[int, list[Any], int]:
    """A chunk's record count, its columns as stored (a list of values, or a 1-tuple holding the
    value of every record), and its clock offset in nanoseconds."""
    magic = payload[:4]
    if magic == MAGIC:
        (offset,) = _OFFSET.unpack_from(payload, 4)
        count, columns = marshal.loads(payload[4 + _OFFSET.size :])
        return count, columns, offset
    if magic == MAGIC_TUPLES:
        tuples: list[BufferedRecord] = marshal.loads(payload[4:])
        return len(tuples), [list(column) for column in zip(*tuples, strict=True)], 0
    raise ValueError(f"not an mlobs spool chunk (starts with {magic!r})")
