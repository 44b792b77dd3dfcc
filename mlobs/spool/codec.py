"""Encoding of a batch of buffered records into one spool chunk.

The spool stores records in chunks, one SQLite row per flush, because a row per record costs
4-7 µs of SQLite work on a small machine, mostly with the GIL held, which a training loop logging
a million values cannot afford. A chunk is the batch's fields, flat as the recorder buffers them
(``FIELDS`` per record), in Python's ``marshal`` format, version 4 (stable since Python 3.4, pinned
here): written and read in C at a few hundred nanoseconds per record, shared objects (a run id, a
split's attribute dict) stored once.

``marshal`` takes only built-in types. A log record's ``extra=`` may carry anything, so a batch
that does not marshal is encoded again with such attribute values turned into strings.
``marshal`` is not hardened against malicious input: spool files are the local user's own data.

Chunks written before the flat layout (``MLC1``: a list of record tuples) still decode.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterable
from typing import Any

from mlobs.record.types import FIELDS, BufferedRecord

MAGIC = b"MLC2"
MAGIC_TUPLES = b"MLC1"
MARSHAL_VERSION = 4
ATTRS = 7
"""Position of the attribute dict within a record."""


def encode(flat: list[Any]) -> bytes:
    """Pack records, flat (``FIELDS`` values per record), into one chunk."""
    try:
        return MAGIC + marshal.dumps(flat, MARSHAL_VERSION)
    except ValueError:  # an attribute value of a type marshal does not know
        cleaned = flat[:]
        cleaned[ATTRS::FIELDS] = [_plain(attrs) for attrs in flat[ATTRS::FIELDS]]
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
    magic = payload[:4]
    if magic == MAGIC:
        return records(marshal.loads(payload[4:]))
    if magic == MAGIC_TUPLES:
        tuples: list[BufferedRecord] = marshal.loads(payload[4:])
        return tuples
    raise ValueError(f"not an mlobs spool chunk (starts with {magic!r})")


def flatten(records: Iterable[BufferedRecord]) -> list[Any]:
    """Record tuples laid out flat, as the recorder buffers them and the spool writes them."""
    return [field for record in records for field in record]


def records(flat: list[Any]) -> list[BufferedRecord]:
    """Flat fields regrouped into one tuple per record (in C: ``zip`` of one iterator)."""
    return list(zip(*[iter(flat)] * FIELDS, strict=True))
