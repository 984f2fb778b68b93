"""Length-prefixed frames and request/response headers.

Wire format (big-endian)::

    frame            = length:u32 | payload            (length counts the payload only)
    request payload  = api_key:u16 | api_version:u16 | correlation_id:i32 | body
    response payload = correlation_id:i32 | body

A frame is checked against the maximum before any of it is buffered, so a peer cannot make
us allocate what it claims. :class:`FrameDecoder` takes bytes as TCP delivers them (any
chunking) and returns whole frame payloads; it never copies a frame more than once.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from protocol.errors import FrameTooLargeError, MalformedFrameError, TruncatedFrameError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "LENGTH_SIZE",
    "REQUEST_HEADER_SIZE",
    "RESPONSE_HEADER_SIZE",
    "FileRegion",
    "FrameDecoder",
    "RequestHeader",
    "frame",
    "parse_request_header",
    "parse_response_header",
]

DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024
"""Kafka's ``socket.request.max.bytes`` default (100 MiB)."""

_LENGTH = struct.Struct(">I")
_REQUEST_HEADER = struct.Struct(">HHi")
_RESPONSE_HEADER = struct.Struct(">i")

LENGTH_SIZE = _LENGTH.size
REQUEST_HEADER_SIZE = _REQUEST_HEADER.size
RESPONSE_HEADER_SIZE = _RESPONSE_HEADER.size

Buffer = bytes | bytearray | memoryview


class FileRegion:
    """A byte range of an open file that travels where a :data:`Buffer` would.

    The broker answers a fetch with record bytes straight from its segment files; a frame
    part of this type tells the writer to ``sendfile`` them instead of copying them into
    Python. Nothing here touches the file: ``fd`` is just a number. A subclass may make
    ``fd`` a property that turns -1 once the file is closed, so the writer can refuse to
    send from a descriptor that might have been reused.
    """

    __slots__ = ("_fd", "position", "size")

    def __init__(self, fd: int, position: int, size: int) -> None:
        self._fd = fd
        self.position = position
        self.size = size

    @property
    def fd(self) -> int:
        return self._fd

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"FileRegion(fd={self.fd}, position={self.position}, size={self.size})"


Part = Buffer | FileRegion
"""One piece of an outgoing frame."""


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int

    def pack(self) -> bytes:
        return _REQUEST_HEADER.pack(self.api_key, self.api_version, self.correlation_id)


def frame(header: bytes, parts: Sequence[Part]) -> list[Part]:
    """Prefix ``header + parts`` with their total length; returns buffers for ``writelines``.

    The parts are not joined: record data stays where it is (zero copy up to the socket).
    """
    total = len(header) + sum(len(p) for p in parts)
    return [_LENGTH.pack(total) + header, *parts]


def pack_response_header(correlation_id: int) -> bytes:
    return _RESPONSE_HEADER.pack(correlation_id)


def parse_request_header(payload: memoryview) -> tuple[RequestHeader, memoryview]:
    """Split a request frame payload into its header and body."""
    if len(payload) < REQUEST_HEADER_SIZE:
        raise MalformedFrameError(
            f"request frame of {len(payload)} bytes is shorter than its "
            f"{REQUEST_HEADER_SIZE}-byte header"
        )
    header = RequestHeader._make(_REQUEST_HEADER.unpack_from(payload))
    return header, payload[REQUEST_HEADER_SIZE:]


def parse_response_header(payload: memoryview) -> tuple[int, memoryview]:
    """Split a response frame payload into its correlation id and body."""
    if len(payload) < RESPONSE_HEADER_SIZE:
        raise MalformedFrameError(
            f"response frame of {len(payload)} bytes is shorter than its "
            f"{RESPONSE_HEADER_SIZE}-byte header"
        )
    (correlation_id,) = _RESPONSE_HEADER.unpack_from(payload)
    return correlation_id, payload[RESPONSE_HEADER_SIZE:]


class FrameDecoder:
    """Turns a byte stream into frame payloads.

    ``feed`` accepts chunks of any size and returns the payloads completed by them, each a
    ``memoryview`` over its own buffer (later feeds never change it). A declared length over
    ``max_frame_bytes`` raises :class:`FrameTooLargeError` before anything is buffered; after
    any error the decoder is unusable (the stream has lost its framing), as is the connection.
    ``close`` raises :class:`TruncatedFrameError` if the stream ended inside a frame.

    Not thread-safe; one decoder per connection.
    """

    __slots__ = ("_failed", "_max", "_need", "_pending")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 0:
            raise ValueError("max_frame_bytes must be >= 0")
        self._max = max_frame_bytes
        self._pending = bytearray()  # the partial frame (length prefix included)
        self._need = -1  # payload length of the partial frame, -1 while its prefix is short
        self._failed = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._pending)

    def feed(self, data: Buffer) -> list[memoryview]:
        if self._failed:
            raise MalformedFrameError("the stream lost its framing after an earlier error")
        view = memoryview(data).cast("B")
        frames: list[memoryview] = []
        pos = 0
        if self._pending:
            pos = self._fill_pending(view, frames)
        end = len(view)
        # Fast path: whole frames straight from the chunk, one copy each.
        while end - pos >= LENGTH_SIZE:
            (length,) = _LENGTH.unpack_from(view, pos)
            self._check_length(length)
            stop = pos + LENGTH_SIZE + length
            if stop > end:
                break
            frames.append(memoryview(bytes(view[pos + LENGTH_SIZE : stop])))
            pos = stop
        if pos < end:
            self._pending += view[pos:]
            self._update_need()
        return frames

    def close(self) -> None:
        """Declare the end of the stream."""
        if self._pending:
            have = len(self._pending)
            self._pending = bytearray()
            raise TruncatedFrameError(f"the stream ended {have} bytes into a frame")

    def _fill_pending(self, view: memoryview, frames: list[memoryview]) -> int:
        """Complete the partial frame from ``view``; returns how much of ``view`` it used."""
        pos = 0
        if self._need < 0:
            take = min(LENGTH_SIZE - len(self._pending), len(view))
            self._pending += view[:take]
            pos = take
            self._update_need()
            if self._need < 0:
                return pos
        missing = LENGTH_SIZE + self._need - len(self._pending)
        take = min(missing, len(view) - pos)
        self._pending += view[pos : pos + take]
        pos += take
        if take == missing:
            frames.append(memoryview(self._pending)[LENGTH_SIZE:])
            self._pending = bytearray()
            self._need = -1
        return pos

    def _update_need(self) -> None:
        if len(self._pending) >= LENGTH_SIZE:
            (length,) = _LENGTH.unpack_from(self._pending)
            self._check_length(length)
            self._need = length

    def _check_length(self, length: int) -> None:
        if length > self._max:
            self._failed = True
            raise FrameTooLargeError(
                f"frame of {length} bytes is over the maximum of {self._max} "
                f"(socket.request.max.bytes)"
            )
