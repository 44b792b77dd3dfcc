"""Record types and the in-memory buffer they are appended to. No I/O happens here."""

from mlobs.record.recorder import Recorder
from mlobs.record.types import Kind, Record

__all__ = ["Kind", "Record", "Recorder"]
