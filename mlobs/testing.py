"""Helpers for testing code instrumented with mlobs: an in-memory sink and log capture.

Example::

    from mlobs.testing import recording

    def test_training_logs_loss(tmp_path):
        with recording(dir=tmp_path) as sink:
            train()
        assert sink.values("loss")[-1] < 1.0
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlobs import runtime
from mlobs.export.memory import InMemoryExporter
from mlobs.logs.processors import process, structure

__all__ = ["InMemoryExporter", "LogCapture", "capture_logs", "recording"]


@contextmanager
def recording(strict: bool = True, **settings: Any) -> Iterator[InMemoryExporter]:
    """Run the block with a fresh pipeline that ships to an :class:`InMemoryExporter`.

    Args:
        strict: raise on mlobs' own failures (the default here, unlike in production).
        **settings: other :func:`mlobs.configure` settings, such as ``dir=tmp_path``.

    On exit everything is flushed into the exporter and the pipeline is shut down.
    """
    sink = InMemoryExporter()
    runtime.configure(exporters=[sink], strict=strict, **settings)
    try:
        yield sink
    finally:
        runtime.flush()
        runtime.shutdown()
        runtime.forget_configuration()


class LogCapture(logging.Handler):
    """Keeps every structured, redacted log event emitted while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(process(structure(record)))


@contextmanager
def capture_logs(logger: str = "", level: int = logging.DEBUG) -> Iterator[list[dict[str, Any]]]:
    """Collect structured log events (as mlobs would ship them) from ``logger`` and below."""
    target = logging.getLogger(logger)
    handler = LogCapture()
    old_level = target.level
    target.addHandler(handler)
    target.setLevel(level)
    try:
        yield handler.events
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
