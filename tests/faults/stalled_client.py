"""A hostile gRPC client that opens streams and never reads them, built on the h2 library.

It speaks HTTP/2 on one TCP connection, opens server streams, answers the gateway's PINGs (so
keepalive does not save the gateway) but never sends a WINDOW_UPDATE: after the first 64 KiB
the gateway can send nothing more on the connection, and whatever it wants to send stays queued
in the gateway. What the gateway tells each stream (trailers: grpc-status, grpc-message) is
recorded as it arrives: HEADERS frames are not flow-controlled.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass
class StreamEnd:
    status: int | None
    message: str
    headers: dict[str, str]


@dataclass
class StalledClient:
    """Open `Watch` calls that are never read. Use as a context manager."""

    addr: str
    token: str
    ended: dict[int, StreamEnd] = field(default_factory=dict)
    data_bytes: int = 0
    _sock: socket.socket | None = None
    _conn: h2.connection.H2Connection | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _closed: bool = False
    _reading: bool = False
    _unacked: dict[int, int] = field(default_factory=dict)

    def __enter__(self) -> StalledClient:
        host, port = self.addr.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)), timeout=10)
        self._sock.settimeout(None)
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._conn.initiate_connection()
        self._flush()
        self._thread = threading.Thread(target=self._read, name="stalled-client", daemon=True)
        self._thread.start()
        return self

    def open(self, method: str, request: bytes) -> int:
        """Start one call of `method` (e.g. /latchkey.v1.Config/Watch); return its stream id."""
        assert self._conn is not None
        with self._lock:
            stream_id = self._conn.get_next_available_stream_id()
            self._conn.send_headers(
                stream_id,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", method),
                    (":authority", self.addr),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("authorization", f"Bearer {self.token}"),
                ],
            )
            frame = struct.pack(">BI", 0, len(request)) + request
            self._conn.send_data(stream_id, frame, end_stream=True)
            self._flush_locked()
        return stream_id

    def _flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        assert self._conn is not None
        assert self._sock is not None
        data = self._conn.data_to_send()
        if data:
            self._sock.sendall(data)

    def _read(self) -> None:
        assert self._sock is not None
        assert self._conn is not None
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                events = self._conn.receive_data(data)
                for event in events:
                    if isinstance(event, h2.events.DataReceived):
                        self.data_bytes += len(event.data)
                        if self._reading:
                            self._ack(event.stream_id, event.flow_controlled_length)
                        else:  # not acknowledged: the gateway's window stays used up
                            self._unacked[event.stream_id] = (
                                self._unacked.get(event.stream_id, 0) + event.flow_controlled_length
                            )
                    elif isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                        headers = {str(k): str(v) for k, v in event.headers}
                        if "grpc-status" in headers:
                            self.ended[event.stream_id] = StreamEnd(
                                int(headers["grpc-status"]),
                                urllib.parse.unquote(headers.get("grpc-message", "")),
                                headers,
                            )
                    elif isinstance(event, h2.events.StreamReset):
                        self.ended.setdefault(event.stream_id, StreamEnd(None, "reset", {}))
                self._flush_locked()

    def resume_reading(self) -> None:
        """Start reading after all: acknowledge everything received, and from now on."""
        with self._lock:
            self._reading = True
            unacked, self._unacked = self._unacked, {}
            for stream_id, size in unacked.items():
                self._ack(stream_id, size)
            self._flush_locked()

    def _ack(self, stream_id: int, size: int) -> None:
        assert self._conn is not None
        try:
            self._conn.acknowledge_received_data(size, stream_id)
        except h2.exceptions.StreamClosedError:
            self._conn.increment_flow_control_window(size)  # the connection's share

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
