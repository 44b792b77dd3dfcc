"""Sinks: one small :class:`Exporter` interface, one module per backend, one shipper per sink."""

from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.export.jsonl import JsonLinesExporter
from mlobs.export.memory import InMemoryExporter

__all__ = ["Batch", "ExportResult", "Exporter", "InMemoryExporter", "JsonLinesExporter"]
