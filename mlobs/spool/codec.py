"""Encoding of a batch of buffered records into one spool chunk.

The spool stores records in chunks, one SQLite row per flush, because a row per record costs
4-7 µs of SQLite work on a small machine, mostly with the GIL held, which a training loop logging
a million values cannot afford. A chunk is the batch's list of tuples in Python's ``marshal``
format, version 4 (stable since Python 3.4, pinned here): written and read in C at well under a
microsecond per record, shared objects (a run id, a split's attribute dict) stored once.

``marshal`` takes only built-in types. A log record's ``extra=`` may carry anything, so a batch
that does not marshal is encoded again with such attribute values turned into strings.
``marshal`` is not hardened against malicious input: spool files are the local user's own data.
"""

from __future__ import annotations

import marshal
from collections.abc import Sequence
from typing import Any

from mlobs.record.types import BufferedRecord

MAGIC = b"MLC1"
MARSHAL_VERSION = 4


def encode(batch: Sequence[BufferedRecord]) -> bytes:
    """Pack buffered records into one chunk."""
    records = batch if isinstance(batch, list) else list(batch)
    try:
        return MAGIC + marshal.dumps(records, MARSHAL_VERSION)
    except ValueError:  # an attribute value of a type marshal does not know
        cleaned = [(*r[:7], _plain(r[7])) for r in records]
        return MAGIC + marshal.dumps(cleaned, MARSHAL_VERSION)


def _plain(value: Any) -> Any:
    """``value`` with everything but None, bool, int, float and str made a string."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def decode(payload: bytes) -> list[BufferedRecord]:
    """The records of a chunk, as they were buffered."""
    if payload[:4] != MAGIC:
        raise ValueError(f"not an mlobs spool chunk (starts with {payload[:4]!r})")
    records: list[BufferedRecord] = marshal.loads(payload[4:])
    return records
