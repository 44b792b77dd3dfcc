"""JSON lines to a file or to standard error: the sink that needs no server."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import TextIO

from mlobs.config import Config
from mlobs.export.base import Batch, Exporter, ExportResult


class JsonLinesExporter(Exporter):
    """Writes one JSON object per record, with the run's name added for readability.

    Args:
        path: a file to append to, or ``"-"`` for standard error.
    """

    def __init__(self, path: str | Path = "-") -> None:
        self.path = str(path)
        self.name = "jsonl" if self.path == "-" else f"jsonl:{Path(self.path).name}"
        self._lock = threading.Lock()
        self._stream: TextIO | None = None

    def _open(self) -> TextIO:
        if self._stream is None:
            if self.path == "-":
                self._stream = sys.stderr
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        return self._stream

    def export(self, batch: Batch) -> ExportResult:
        lines = []
        for record in batch.records:
            obj = record.to_json_dict()
            run = batch.runs.get(record.run_id)
            if run is not None:
                obj["run_name"] = run.name
            lines.append(json.dumps(obj, separators=(",", ":"), default=str))
        with self._lock:
            stream = self._open()
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        return ExportResult.SUCCESS

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._lock:
            if self._stream is not None and self._stream is not sys.stderr:
                self._stream.close()
            self._stream = None


def from_config(config: Config) -> JsonLinesExporter:
    return JsonLinesExporter(config.jsonl or "-")
