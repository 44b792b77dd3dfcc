"""The Fluentd sink: records over the Fluentd forward protocol, one tag per kind of record.

Tags are ``PREFIX.log`` (stdlib logging records), ``PREFIX.event`` (run start and end,
heartbeats, dropped records), ``PREFIX.span`` (runs, epochs, steps) and ``PREFIX.metric``
(metric points), ``PREFIX`` being ``MLOBS_FLUENTD_TAG``, so a Fluentd ``<match mlobs.log>``
routes each kind on its own. Each record is a flat map: ``run_id``, ``run_name``,
``experiment``, ``step``, ``epoch``, ``seq`` (its position in the process's spool file), then by
kind ``logger``/``level``/``message``/``trace_id``/``span_id`` (logs), ``name``/``kind``/``value``
(metrics), ``name``/``duration_s``/``trace_id``/``span_id``/``parent_span_id``/``status``/
``span_kind`` (spans), ``name``/``value`` (events), then the record's other attributes. The event
time is the record's own timestamp with nanosecond precision (``EventTime``, msgpack extension
type 0).

Transport. fluent-logger's ``FluentSender`` sends one Message per record; after a failed send it
keeps a pending buffer that it drops past ``bufmax`` (1 MiB), it reads the socket after every
write (which would swallow an ack), and it cannot ask for acks. Spool records must never sit in
such a buffer: the spool is the buffer, and the shipper retries a failed batch from its cursor.
So this module writes PackedForward frames (one per tag, at most ~1 MiB of entries each) with
msgpack over a socket of its own and reads ``{"ack": chunk}`` itself; the tests check its bytes
against fluent-logger's encoding and drive the same test server with ``FluentSender``. Every
connect, write and ack wait is bounded by ``timeout``; any failure closes the connection and
returns ``FAILURE``. All of it runs on the sink's shipper thread, never on the training thread.

Delivery. With ``ack``, a frame counts as delivered once Fluentd acknowledged its chunk: at least
once (a frame whose ack was lost is sent again). Without it, a frame counts as delivered once
written to the socket: what a Fluentd that dies had not yet read is lost (at most once for the
frames in flight), though a connection found closed right after a write fails the batch, which is
then sent again. In both modes the frames of a batch delivered before a later frame failed are
not sent again when the shipper offers the batch anew.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from math import isfinite
from typing import Any

import msgpack

from mlobs import safety
from mlobs.config import Config
from mlobs.export.base import Batch, Exporter, ExportResult
from mlobs.record.types import Kind, Record
from mlobs.spool.store import RunInfo

MAX_FRAME_BYTES = 1 << 20
"""Packed entries per frame: well under Fluentd's and Fluent Bit's forward input limits."""

_TAGS: dict[Kind, str] = {
    Kind.LOG: "log",
    Kind.EVENT: "event",
    Kind.SPAN: "span",
    Kind.GAUGE: "metric",
    Kind.COUNTER: "metric",
    Kind.HISTOGRAM: "metric",
}
_METRIC_KIND_NAMES = {Kind.GAUGE: "gauge", Kind.COUNTER: "counter", Kind.HISTOGRAM: "histogram"}

# An entry [time, record] starts with a 2-element array header, then the time as fixext 8 of
# type 0 (seconds and nanoseconds, big endian): byte for byte what msgpack makes of fluent-logger's
# EventTime (the tests check it), written directly because building that ExtType object costs
# three times the packing of the whole record.
_ENTRY_HEAD = b"\x92\xd7\x00"
_SECONDS_NANOS = struct.Struct(">II")


class ForwardProtocolError(OSError):
    """The peer answered something that is not the ack we wait for."""


def run_fields(run_id: str, run: RunInfo | None) -> dict[str, Any]:
    """The fields every record of a run carries."""
    out: dict[str, Any] = {"run_id": run_id}
    if run is not None:
        out["run_name"] = run.name
        experiment = run.resource.get("experiment")
        if experiment is not None:
            out["experiment"] = experiment
    return out


def record_map(record: Record, base: Mapping[str, Any]) -> dict[str, Any]:
    """The flat map Fluentd receives for one record (see the module docstring), starting from
    its run's :func:`run_fields`."""
    out = dict(base)
    kind = record.kind
    if kind is Kind.LOG:
        out["logger"] = record.name  # the value is the level number; the attrs hold its name
    else:
        out["name"] = record.name
        metric_kind = _METRIC_KIND_NAMES.get(kind)
        if metric_kind is not None:
            out["kind"] = metric_kind
        value = record.value
        if value is not None:
            if not isfinite(value):  # as the JSON-lines sink writes them: JSON has no NaN
                value = str(value)  # type: ignore[assignment]
            out["duration_s" if kind is Kind.SPAN else "value"] = value
    if record.step is not None:
        out["step"] = record.step
    if record.epoch is not None:
        out["epoch"] = record.epoch
    out["seq"] = record.seq
    for key, attr in record.attrs.items():
        if key not in out:
            out[key] = attr
        elif out[key] != attr:  # an attribute named like a field: kept, under another name
            out[f"attr.{key}"] = attr
    return out


def _sanitize(obj: Any) -> Any:
    """What msgpack can pack: integers past 64 bits and unknown types become strings."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (float, str, bytes)):
        return obj
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**64 else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return str(obj)


def _chunk_id() -> str:
    # Unique per frame, as Fluentd's own out_forward makes them.
    return base64.b64encode(os.urandom(16)).decode("ascii")


class FluentdExporter(Exporter):
    """Ships records to a Fluentd (or Fluent Bit) forward input.

    Args:
        host: host name or address of the forward input, or ``unix:///path`` for a Unix socket.
        port: its TCP port.
        tag: tag prefix; records go out as ``TAG.log``, ``TAG.event``, ``TAG.span``,
            ``TAG.metric``.
        ack: ask for an ack of each chunk and count a frame delivered only once it came.
        timeout: seconds each connect, write and ack wait may take.
        metrics: also ship metric points (``TAG.metric``); off when Fluentd should carry only
            logs, spans and events and metrics go to a metrics backend.
        name: the cursor name in the spool.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 24224,
        tag: str = "mlobs",
        *,
        ack: bool = False,
        timeout: float = 3.0,
        metrics: bool = True,
        name: str = "fluentd",
    ) -> None:
        self.host = host
        self.port = port
        self.ack = ack
        self.timeout = timeout
        self.name = name
        prefix = tag.rstrip(".")
        self.tags = {
            kind: f"{prefix}.{suffix}" if prefix else suffix
            for kind, suffix in _TAGS.items()
            if metrics or suffix != "metric"
        }
        self._sock: socket.socket | None = None
        self._packer = msgpack.Packer(use_bin_type=True)
        # Seqs delivered from a batch that then failed, per spool file: skipped when the shipper
        # offers the batch again, forgotten once the whole batch went through.
        self._delivered: dict[str, set[int]] = {}
        _live.add(self)

    # -- export ---------------------------------------------------------------------------
    def export(self, batch: Batch) -> ExportResult:
        delivered = self._delivered.setdefault(batch.source, set())
        by_tag: dict[str, list[Record]] = {}
        tags = self.tags
        for record in batch.records:
            tag = tags.get(record.kind)
            if tag is not None and record.seq not in delivered:
                by_tag.setdefault(tag, []).append(record)
        try:
            for tag, records in by_tag.items():
                for frame_records, frame, chunk in self._frames(tag, records, batch.runs):
                    self._send(frame, chunk)
                    delivered.update(r.seq for r in frame_records)
        except (OSError, ValueError) as exc:  # ValueError: msgpack could not decode the answer
            self._close()
            safety.warn(
                f"fluentd:{self.name}",
                "mlobs: fluentd sink %s at %s: %s; records wait in the spool and are retried",
                self.name,
                self._address(),
                exc,
            )
            return ExportResult.FAILURE
        except BaseException:
            self._close()  # the stream may hold half a frame: never write after it
            raise
        del self._delivered[batch.source]
        return ExportResult.SUCCESS

    def _frames(
        self, tag: str, records: Sequence[Record], runs: Mapping[str, RunInfo]
    ) -> Iterator[tuple[Sequence[Record], bytes, str | None]]:
        """PackedForward frames ``[tag, entries, option]`` of at most ~MAX_FRAME_BYTES entries."""
        pack = self._packer.pack
        time_bytes = _SECONDS_NANOS.pack
        entries: list[bytes] = []
        size = start = 0
        bases: dict[str, dict[str, Any]] = {}
        for i, record in enumerate(records):
            base = bases.get(record.run_id)
            if base is None:
                base = bases[record.run_id] = run_fields(record.run_id, runs.get(record.run_id))
            fields = record_map(record, base)
            try:
                packed_fields = pack(fields)
            except (TypeError, ValueError, OverflowError):
                self._packer.reset()
                packed_fields = pack(_sanitize(fields))
            packed = _ENTRY_HEAD + time_bytes(*divmod(record.ts_ns, 1_000_000_000)) + packed_fields
            entries.append(packed)
            size += len(packed)
            if size >= MAX_FRAME_BYTES:
                yield records[start : i + 1], *self._frame(tag, entries)
                entries, size, start = [], 0, i + 1
        if entries:
            yield records[start:], *self._frame(tag, entries)

    def _frame(self, tag: str, entries: list[bytes]) -> tuple[bytes, str | None]:
        option: dict[str, Any] = {"size": len(entries)}
        chunk = _chunk_id() if self.ack else None
        if chunk is not None:
            option["chunk"] = chunk
        return self._packer.pack([tag, b"".join(entries), option]), chunk

    # -- transport ------------------------------------------------------------------------
    def _address(self) -> str:
        return self.host if self.host.startswith("unix://") else f"{self.host}:{self.port}"

    def _connect(self) -> socket.socket:
        sock = self._sock
        if sock is not None and not self._peer_closed(sock):
            return sock
        self._close()
        if self.host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.host[len("unix://") :])
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            # Small frames and acks must not wait on Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        return sock

    def _peer_closed(self, sock: socket.socket) -> bool:
        """Whether Fluentd closed the connection since we last used it (a restart does), so that
        the next frame goes to a fresh connection rather than into a dead one. Anything else
        waiting on the socket (nothing should) also calls for a fresh connection."""
        try:
            sock.setblocking(False)
            try:
                sock.recv(1)
                return True
            finally:
                sock.settimeout(self.timeout)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _send(self, frame: bytes, chunk: str | None) -> None:
        sock = self._connect()
        sock.sendall(frame)  # the timeout bounds the whole call
        if chunk is None:
            if self._peer_closed(sock):
                raise ConnectionResetError("fluentd closed the connection after a write")
            return
        self._await_ack(sock, chunk)

    def _await_ack(self, sock: socket.socket, chunk: str) -> None:
        deadline = time.monotonic() + self.timeout
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no ack within {self.timeout:g} s")
            sock.settimeout(remaining)
            data = sock.recv(4096)
            if not data:
                raise ConnectionResetError("fluentd closed the connection before its ack")
            unpacker.feed(data)
            for answer in unpacker:
                if isinstance(answer, dict) and answer.get("ack") == chunk:
                    sock.settimeout(self.timeout)
                    return
                raise ForwardProtocolError(f"unexpected answer instead of an ack: {answer!r:.80}")

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass  # already gone: nothing left to release

    def shutdown(self, timeout: float = 10.0) -> None:
        self._close()
        _live.discard(self)


_live: weakref.WeakSet[FluentdExporter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child must not write into its parent's connection: closing its copy of the descriptor
    # leaves the parent's connection open. The child connects again on its first export.
    for exporter in list(_live):
        exporter._close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def from_config(config: Config) -> FluentdExporter:
    return FluentdExporter(
        config.fluentd_host or "localhost",
        config.fluentd_port,
        config.fluentd_tag,
        ack=config.fluentd_ack,
    )
