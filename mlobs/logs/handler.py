"""The stdlib ``logging`` bridge: log records into the spool, and JSON lines for any handler."""

from __future__ import annotations

import json
import logging
from typing import Any

from mlobs import safety
from mlobs.logs.processors import process, structure
from mlobs.record.types import Kind

_LOG = int(Kind.LOG)
# Fields that become columns of the spool record rather than attributes.
_COLUMNS = ("ts_ns", "run_id", "logger", "step", "epoch")


class SpoolHandler(logging.Handler):
    """Appends each log record, structured and redacted, to the mlobs pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "mlobs" or record.name.startswith("mlobs."):
            return  # mlobs' own warnings: never fed back into the pipeline they describe
        try:
            from mlobs import runtime

            event = process(structure(record))
            attrs = {k: v for k, v in event.items() if k not in _COLUMNS}
            runtime.get().recorder.append(
                (
                    _LOG,
                    event["ts_ns"],
                    event.get("run_id", ""),
                    record.name,
                    float(record.levelno),
                    event.get("step"),
                    event.get("epoch"),
                    attrs,
                )
            )
        except safety.MlobsError:
            raise
        except Exception as exc:
            safety.report("logs.emit", exc)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with run, epoch, step, rank and trace context, redacted.

    Use it on any handler: ``handler.setFormatter(mlobs.logs.JsonFormatter())``.
    """

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = process(structure(record))
        return json.dumps(event, default=str, separators=(",", ":"))


_added_last_resort = False


def install(level: str | int = "INFO") -> SpoolHandler:
    """Attach a :class:`SpoolHandler` to the root logger.

    A root logger without handlers prints warnings through ``logging.lastResort``; any handler
    stops that, so when the root had none, ``lastResort`` is attached too and the program's
    console output stays as it was.
    """
    global _added_last_resort
    root = logging.getLogger()
    handler = SpoolHandler(level)
    if not root.handlers and logging.lastResort is not None:
        root.addHandler(logging.lastResort)
        _added_last_resort = True
    root.addHandler(handler)
    return handler


def uninstall(handler: logging.Handler) -> None:
    global _added_last_resort
    root = logging.getLogger()
    root.removeHandler(handler)
    if _added_last_resort and logging.lastResort is not None:
        root.removeHandler(logging.lastResort)
        _added_last_resort = False
