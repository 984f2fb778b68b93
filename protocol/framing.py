"""Length-prefixed frames and request/response headers.

Wire format (big-endian)::

    frame            = length:u32 | payload            (length counts the payload only)
    request payload  = api_key:u16 | api_version:u16 | correlation_id:i32 | body
    response payload = correlation_id:i32 | body

A frame is checked against the maximum before any of it is buffered, so a peer cannot make
us allocate what it claims. :class:`FrameDecoder` takes bytes as TCP delivers them (any
chunking) and returns whole frame payloads; it never copies a frame more than once. Given a
:class:`FramePool`, it copies a large frame not at all: once its length is known, the rest of
it is read straight into a buffer of its own (``read_into`` / ``filled``).
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
    "FramePool",
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

    __slots__ = ("_failed", "_frame", "_have", "_max", "_need", "_pending", "_pool", "_rest")

    def __init__(
        self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, pool: FramePool | None = None
    ) -> None:
        if max_frame_bytes < 0:
            raise ValueError("max_frame_bytes must be >= 0")
        self._max = max_frame_bytes
        self._pending = bytearray()  # the partial frame (length prefix included)
        self._need = -1  # payload length of the partial frame, -1 while its prefix is short
        self._failed = False
        self._pool = pool
        # a large partial frame in a buffer of its own (from the pool): its payload so far
        # is _frame[:_have], and _rest is where the next read goes
        self._frame: memoryview | None = None
        self._have = 0
        self._rest: memoryview | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for a frame not yet complete."""
        if self._frame is not None:
            return LENGTH_SIZE + self._have
        return len(self._pending)

    def read_into(self) -> memoryview | None:
        """Where the next read should go when the frame in progress has a buffer of its own:
        the rest of that frame (then call :meth:`filled`); None: read into your own buffer
        and :meth:`feed` it."""
        return self._rest

    def filled(self, nbytes: int) -> list[memoryview]:
        """``nbytes`` were read into :meth:`read_into`'s buffer: the frame, once complete."""
        rest = self._rest
        if rest is None or not 0 < nbytes <= len(rest):
            raise ValueError(f"filled({nbytes}) with {0 if rest is None else len(rest)} expected")
        self._have += nbytes
        if self._have < self._need:
            self._rest = rest[nbytes:]
            return []
        payload = self._frame[: self._need]  # type: ignore[index]
        self._frame = self._rest = None
        self._need = -1
        return [payload]

    def feed(self, data: Buffer) -> list[memoryview]:
        if self._failed:
            raise MalformedFrameError("the stream lost its framing after an earlier error")
        if self._rest is not None:
            raise ValueError("feed() while a frame is read into its own buffer: use filled()")
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
        if pos < end and not self._own_buffer(view[pos:]):
            self._pending += view[pos:]
            self._update_need()
        return frames

    def close(self) -> None:
        """Declare the end of the stream."""
        have = self.buffered_bytes
        if have:
            self._pending = bytearray()
            self._frame = self._rest = None
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
            if self._own_buffer(memoryview(self._pending)):
                # the rest of what came goes to the frame's own buffer (one copy, as here)
                take = min(len(self._rest), len(view) - pos)  # type: ignore[arg-type]
                if take:
                    self._rest[:take] = view[pos : pos + take]  # type: ignore[index]
                    frames += self.filled(take)
                return pos + take
        missing = LENGTH_SIZE + self._need - len(self._pending)
        take = min(missing, len(view) - pos)
        self._pending += view[pos : pos + take]
        pos += take
        if take == missing:
            frames.append(memoryview(self._pending)[LENGTH_SIZE:])
            self._pending = bytearray()
            self._need = -1
        return pos

    def _own_buffer(self, partial: memoryview) -> bool:
        """Put a large partial frame (its length prefix checked and included) into a pooled
        buffer of its own, so that the rest of it is read there; False: not done."""
        pool = self._pool
        if pool is None or len(partial) < LENGTH_SIZE:
            return False
        (length,) = _LENGTH.unpack_from(partial)
        have = len(partial) - LENGTH_SIZE
        if length - have < pool.min_read_bytes:
            return False
        buffer = pool.take(length)
        if buffer is None:
            return False
        buffer[:have] = partial[LENGTH_SIZE:]
        self._pending = bytearray()
        self._frame, self._have, self._need = buffer, have, length
        self._rest = buffer[have:length]
        return True

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


class FramePool:
    """Buffers for large frames, reused: a frame read into one costs no copy, and a reused
    one not even the zeroing a new ``bytearray`` pays.

    A buffer goes out as the memory under a frame's payload and is never handed back
    explicitly: it is taken again only once nothing refers to its bytes any more. That is
    asked of the buffer itself: a ``bytearray`` cannot change size while a ``memoryview``
    (or any other export) of it is alive, so whatever kept a view of a frame (a handler, a
    queued write, a record set) keeps the buffer out of the pool. Holding at most
    ``budget_bytes``; a frame it cannot serve is buffered as before, so a flood of large
    frames costs memory only as their bytes arrive, as without a pool.
    """

    __slots__ = ("_buffers", "_held", "budget_bytes", "min_read_bytes")

    def __init__(self, budget_bytes: int, min_read_bytes: int = 64 * 1024) -> None:
        self.budget_bytes = budget_bytes
        self.min_read_bytes = min_read_bytes
        """Frames with less than this left to read are copied (a read of their own would
        cost more than the copy)."""
        self._buffers: list[bytearray] = []
        self._held = 0

    @property
    def held_bytes(self) -> int:
        return self._held

    def take(self, size: int) -> memoryview | None:
        """A view of a buffer of at least ``size`` bytes that nothing else refers to, or
        None. The buffer stays out of the pool for as long as this view, or any view of it,
        is alive."""
        spare: list[bytearray] = []
        for buffer in self._buffers:
            if _unshared(buffer):
                if size <= len(buffer) <= 2 * size:
                    return memoryview(buffer)
                spare.append(buffer)
        if size > self.budget_bytes:
            return None
        spare.sort(key=len, reverse=True)  # the biggest idle ones make room first
        while self._held + size > self.budget_bytes and spare:
            gone = spare.pop(0)
            self._buffers.remove(gone)
            self._held -= len(gone)
        if self._held + size > self.budget_bytes:
            return None
        buffer = bytearray(size + 1)
        del buffer[size:]  # capacity for one more byte: _unshared's test never reallocates
        self._buffers.append(buffer)
        self._held += size
        return memoryview(buffer)


def _unshared(buffer: bytearray) -> bool:
    """Nothing refers to ``buffer``'s bytes: it can change size, so it has no exports."""
    try:
        buffer.append(0)
    except BufferError:
        return False
    del buffer[-1]
    return True
