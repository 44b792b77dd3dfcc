"""A stand-in for Fluentd's forward input (``in_forward``), for tests and benchmarks.

It is not Fluentd: no Fluentd can be installed on these machines (see BACKENDS.md), so the tests
of the Fluentd sink talk to this test-owned server instead. It speaks the receiving side of the
Fluentd forward protocol (v1) over TCP on 127.0.0.1: msgpack streams in Message
``[tag, time, record, option?]``, Forward ``[tag, [[time, record], ...], option?]``,
PackedForward ``[tag, bin|str of concatenated entries, option?]`` and CompressedPackedForward
(``option.compressed == "gzip"``) modes, times as integer seconds or ``EventTime`` (msgpack
extension type 0: seconds and nanoseconds, big endian), and ``{"ack": chunk}`` answers when the
option carries a ``chunk``. It keeps every event it received for assertions.

Test knobs: ``answer_acks=False`` receives and keeps events but never acks (ack timeouts);
``stop()``/``start()`` take the server down and up again on the same port (outages). A stop is
graceful, as Fluentd's own shutdown: the listener closes, each connection is half-closed (the
client sees end of stream), and what clients already wrote is still read for a short grace
period. An event is kept exactly when its frame was acked or needed no ack: a frame asking for
an ack that can no longer be sent is dropped unkept, as a client will send it again.

Run as a program (``python -m tests.fluent_standin``) it serves on a free port in a process of
its own, prints ``PORT <n>``, and answers ``count`` (events received), ``count TAG``, ``reset``
and ``quit`` lines on standard input: benchmarks use it so that its CPU time is not theirs.
"""

from __future__ import annotations

import gzip
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack


class EventTimeNs(int):
    """A time that arrived as an ``EventTime``: nanoseconds since the epoch."""


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        seconds, nanos = struct.unpack(">II", data)
        return EventTimeNs(seconds * 1_000_000_000 + nanos)
    return msgpack.ExtType(code, data)


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(
        raw=False,
        ext_hook=_ext_hook,
        strict_map_key=False,
        unicode_errors="surrogateescape",  # PackedForward entries may come as str
        max_buffer_size=256 * 1024 * 1024,
    )


@dataclass(frozen=True)
class Event:
    """One event as received."""

    tag: str
    time_ns: int
    record: dict[str, Any]
    mode: str
    """``message``, ``forward``, ``packed`` or ``compressed``."""
    event_time: bool
    """Whether the time came as an ``EventTime`` (nanoseconds) rather than integer seconds."""
    chunk: str | None


class ForwardError(ValueError):
    """A message that is not valid forward protocol."""


def _time_ns(value: Any) -> tuple[int, bool]:
    if isinstance(value, EventTimeNs):
        return int(value), True
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1_000_000_000, False
    if isinstance(value, float):  # not in the spec, but some old clients send it
        return int(value * 1e9), False
    raise ForwardError(f"bad event time: {value!r}")


def decode_message(msg: Any) -> tuple[list[Event], dict[str, Any]]:
    """The events of one forward-protocol message, and its option map."""
    if not isinstance(msg, (list, tuple)) or len(msg) < 2 or not isinstance(msg[0], str):
        raise ForwardError(f"not a forward message: {msg!r:.100}")
    tag, body = msg[0], msg[1]
    if isinstance(body, (list, tuple)):  # Forward
        option = msg[2] if len(msg) > 2 else None
        pairs, mode = body, "forward"
    elif isinstance(body, (bytes, str)):  # PackedForward, maybe compressed
        option = msg[2] if len(msg) > 2 else None
        data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
        mode = "packed"
        if isinstance(option, dict) and option.get("compressed") == "gzip":
            data, mode = gzip.decompress(data), "compressed"
        inner = _unpacker()
        inner.feed(data)
        pairs = list(inner)
    else:  # Message
        if len(msg) < 3:
            raise ForwardError(f"message without a record: {msg!r:.100}")
        option = msg[3] if len(msg) > 3 else None
        pairs, mode = [(body, msg[2])], "message"
    if option is None:
        option = {}
    if not isinstance(option, dict):
        raise ForwardError(f"option is not a map: {option!r:.100}")
    chunk = option.get("chunk")
    events = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[1], dict):
            raise ForwardError(f"not an entry [time, record]: {pair!r:.100}")
        ns, event_time = _time_ns(pair[0])
        events.append(Event(tag, ns, pair[1], mode, event_time, chunk))
    size = option.get("size")
    if size is not None and size != len(events):
        raise ForwardError(f"option size {size} but {len(events)} entries")
    return events, option


class FluentStandIn:
    """The server. Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        port: 0 picks a free port on the first start; later starts reuse it.
        answer_acks: answer ``{"ack": chunk}`` to frames that ask for one.
        keep: keep the events (``False``: count them only, for benchmarks).
        grace: seconds a stopping server still reads what clients wrote.
    """

    host = "127.0.0.1"

    def __init__(
        self, port: int = 0, *, answer_acks: bool = True, keep: bool = True, grace: float = 0.5
    ) -> None:
        self.port = port
        self.answer_acks = answer_acks
        self.keep = keep
        self.grace = grace
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._count = 0
        self._tags: Counter[str] = Counter()
        self.frames = 0
        self.acks_sent = 0
        self.connections = 0
        self.errors: list[str] = []
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._handlers: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FluentStandIn:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping = threading.Event()
        self._accepting = threading.Thread(
            target=self._accept_loop, args=(listener, self._stopping), daemon=True
        )
        self._accepting.start()
        return self

    def stop(self) -> None:
        """Stop accepting, half-close every connection (pending ones included), read on for
        ``grace`` seconds, close."""
        with self._lock:  # no ack is written after this
            self._stopping.set()
            for conn in self._conns:
                self._half_close(conn)
        if self._accepting is not None:
            self._accepting.join(5)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.setblocking(False)
            while True:  # connections the kernel accepted but we had not: clients wrote there
                try:
                    conn, _ = listener.accept()
                except OSError:
                    break
                self._adopt(conn, self._stopping)
            listener.close()
        for thread in self._handlers:
            thread.join(self.grace + 5)
        self._handlers = []

    @staticmethod
    def _half_close(conn: socket.socket) -> None:
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client is gone already

    def __enter__(self) -> FluentStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.host, self.port

    # -- what arrived ---------------------------------------------------------------------
    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def count(self, tag: str | None = None) -> int:
        with self._lock:
            return self._count if tag is None else self._tags[tag]

    def records(self, tag: str) -> list[dict[str, Any]]:
        return [e.record for e in self.events if e.tag == tag]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
            self._count = 0
            self._tags.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def wait_count(self, n: int, tag: str | None = None, timeout: float = 10.0) -> bool:
        return self.wait_for(lambda: self.count(tag) >= n, timeout)

    # -- serving --------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._adopt(conn, stopping)

    def _adopt(self, conn: socket.socket, stopping: threading.Event) -> None:
        conn.settimeout(0.05)
        with self._lock:
            self._conns.add(conn)
            self.connections += 1
            if stopping.is_set():
                self._half_close(conn)
        thread = threading.Thread(target=self._serve, args=(conn, stopping), daemon=True)
        self._handlers.append(thread)
        thread.start()

    def _serve(self, conn: socket.socket, stopping: threading.Event) -> None:
        unpacker = _unpacker()
        quiet_since: float | None = None
        try:
            while True:
                try:
                    data = conn.recv(1 << 16)
                except TimeoutError:
                    if stopping.is_set():
                        now = time.monotonic()
                        quiet_since = quiet_since or now
                        if now - quiet_since >= self.grace:
                            return
                    continue
                except OSError:
                    return
                if not data:
                    return
                quiet_since = None
                unpacker.feed(data)
                for msg in unpacker:
                    self._handle(conn, msg, stopping)
        except (ForwardError, ValueError, msgpack.UnpackException, OSError) as exc:
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _handle(self, conn: socket.socket, msg: Any, stopping: threading.Event) -> None:
        events, option = decode_message(msg)
        chunk = option.get("chunk")
        with self._lock:
            self.frames += 1
            if chunk is not None and self.answer_acks:
                if stopping.is_set():
                    return  # cannot ack any more: the client sends it again
                conn.settimeout(5)
                conn.sendall(msgpack.packb({"ack": chunk}))
                conn.settimeout(0.05)
                self.acks_sent += 1
            self._keep(events)

    def _keep(self, events: Iterable[Event]) -> None:
        events = list(events)
        self._count += len(events)
        for event in events:
            self._tags[event.tag] += 1
        if self.keep:
            self._events.extend(events)


class BlackHole:
    """A peer that accepts TCP connections and never reads from them nor answers: what a hung
    Fluentd looks like to a client."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self._held:
            conn.close()


def main() -> int:
    server = FluentStandIn(keep=False).start()
    print(f"PORT {server.port}", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "count":
            print(server.count(arg or None), flush=True)
        elif command == "reset":
            server.clear()
            print("ok", flush=True)
        elif command == "quit":
            break
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
