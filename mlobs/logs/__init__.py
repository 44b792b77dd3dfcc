"""Structured logging: the stdlib bridge, JSON lines, processors and redaction."""

from mlobs.logs.handler import JsonFormatter, SpoolHandler, install, uninstall
from mlobs.logs.processors import PROCESSORS, process, redact, structure
from mlobs.logs.redact import REDACTED, redact_mapping, redact_text

__all__ = [
    "PROCESSORS",
    "REDACTED",
    "JsonFormatter",
    "SpoolHandler",
    "install",
    "process",
    "redact",
    "redact_mapping",
    "redact_text",
    "structure",
    "uninstall",
]
