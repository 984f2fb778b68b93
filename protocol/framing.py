"""Length-prefixed frames and request/response headers.

Wire format (big-endian)::

    frame            = length:u32 | payload            (length counts the payload only)
    request payload  = api_key:u16 | api_version:u16 | correlation_id:i32 | body
    response payload = correlation_id:i32 | body

A frame is checked against the maximum before any of it is buffered, so a peer cannot make
us allocate what it claims. :class:`FrameDecoder` takes bytes as TCP delivers them (any
chunking) and returns whole frame payloads; it never copies a frame more than once. Given a
:class:`FramePool` with a buffer free, it copies only the first piece of a large frame: once
its length is known, the rest is read straight into that buffer (``read_into`` / ``filled``).
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

    With a :class:`FramePool`, a large frame whose length is known is finished in a buffer
    of its own when the pool has one free: :meth:`read_into` says where the next read
    should go (then :meth:`filled`), so the rest of its bytes are not copied. ``feed``
    still works then (it copies).

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
        # a large partial frame in a pooled buffer of its own: the frame (length prefix
        # included) so far is _frame[:_have], and _rest is where the next read goes
        self._frame: memoryview | None = None
        self._have = 0
        self._rest: memoryview | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for a frame not yet complete."""
        if self._frame is not None:
            return self._have
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
        if nbytes < len(rest):
            self._rest = rest[nbytes:]
            return []
        payload = self._frame[LENGTH_SIZE : self._have]  # type: ignore[index]
        self._frame = self._rest = None
        self._need = -1
        return [payload]

    def feed(self, data: Buffer) -> list[memoryview]:
        if self._failed:
            raise MalformedFrameError("the stream lost its framing after an earlier error")
        view = memoryview(data).cast("B")
        frames: list[memoryview] = []
        pos = 0
        if self._rest is not None:
            pos = self._fill_own(view, frames)
        elif self._pending:
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

    def discard(self) -> None:
        """Drop a frame in progress (the connection is gone): its pooled buffer, if it
        had one, can be taken again."""
        self._pending = bytearray()
        self._frame = self._rest = None
        self._need = -1

    def close(self) -> None:
        """Declare the end of the stream."""
        have = self.buffered_bytes
        self.discard()
        if have:
            raise TruncatedFrameError(f"the stream ended {have} bytes into a frame")

    def _fill_own(self, view: memoryview, frames: list[memoryview]) -> int:
        """Copy what ``view`` holds of the frame in its own buffer there."""
        take = min(len(self._rest), len(view))  # type: ignore[arg-type]
        if take:
            self._rest[:take] = view[:take]  # type: ignore[index]
            frames += self.filled(take)
        return take

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
                return pos + self._fill_own(view[pos:], frames)
        missing = LENGTH_SIZE + self._need - len(self._pending)
        take = min(missing, len(view) - pos)
        self._pending += view[pos : pos + take]
        pos += take
        if take == missing:
            frames.append(memoryview(self._pending)[LENGTH_SIZE:])
            if self._pool is not None and self._need >= self._pool.min_read_bytes:
                # its memory came as its bytes did: the pool may keep it for the next ones
                self._pool.adopt(self._pending)
            self._pending = bytearray()
            self._need = -1
        return pos

    def _own_buffer(self, partial: memoryview) -> bool:
        """Put a large partial frame (its length prefix checked and included) into a free
        pooled buffer of its own, so that the rest of it is read there; False: not done."""
        pool = self._pool
        if pool is None or len(partial) < LENGTH_SIZE:
            return False
        (length,) = _LENGTH.unpack_from(partial)
        if LENGTH_SIZE + length - len(partial) < pool.min_read_bytes:
            return False
        buffer = pool.take(LENGTH_SIZE + length)
        if buffer is None:
            return False
        have = len(partial)
        buffer[:have] = partial
        self._pending = bytearray()
        self._frame, self._have, self._need = buffer, have, length
        self._rest = buffer[have : LENGTH_SIZE + length]
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
    """Buffers of large frames, reused: a frame read into one is not copied at all.

    The pool never allocates: it keeps the buffers large frames were assembled in the
    usual way (as their bytes arrived, ``adopt``), so a peer costs memory only with bytes
    it sent, as without a pool; a length prefix alone gets nothing. A buffer goes out as
    the memory under a frame and is never handed back explicitly: it is taken again only
    once nothing refers to its bytes any more. That is asked of the buffer itself: a
    ``bytearray`` cannot change size while a ``memoryview`` (or any other export) of it is
    alive, so whatever kept a view of a frame (a handler, a queued write, a record set)
    keeps the buffer out of the pool. It holds at most ``budget_bytes``, and lets go of
    buffers a period went by without (:meth:`trim`): a burst of large frames does not
    hold its memory for good.
    """

    __slots__ = ("_buffers", "_held", "_used", "budget_bytes", "min_read_bytes")

    def __init__(self, budget_bytes: int, min_read_bytes: int = 64 * 1024) -> None:
        if min_read_bytes < 1:
            raise ValueError("min_read_bytes must be >= 1")
        self.budget_bytes = budget_bytes
        self.min_read_bytes = min_read_bytes
        """Frames with less than this left to read are copied (a read of their own would
        cost more than the copy), and smaller ones are not kept."""
        self._buffers: list[bytearray] = []
        self._held = 0
        self._used: set[int] = set()  # the buffers taken or adopted since the last trim

    @property
    def held_bytes(self) -> int:
        return self._held

    def take(self, size: int) -> memoryview | None:
        """A view of a buffer of ``size`` to ``2 * size`` bytes that nothing else refers
        to, or None. The buffer stays out of the pool while this view, or any view of it,
        is alive."""
        for buffer in self._buffers:
            if size <= len(buffer) <= 2 * size and _unshared(buffer):
                self._used.add(id(buffer))
                return memoryview(buffer)
        return None

    def trim(self) -> int:
        """Let go of the idle buffers no frame has had since the last trim (called every
        few tens of seconds: what a steady load uses stays, a burst's goes). Returns the
        bytes let go."""
        kept: list[bytearray] = []
        freed = 0
        for buffer in self._buffers:
            if id(buffer) in self._used or not _unshared(buffer):
                kept.append(buffer)
            else:
                freed += len(buffer)
        self._buffers = kept
        self._held -= freed
        self._used = {id(b) for b in kept if not _unshared(b)}  # (in use now: used)
        return freed

    def adopt(self, buffer: bytearray) -> None:
        """Keep ``buffer`` (a frame's, perhaps still in use) for later frames, if it fits in
        the budget once idle buffers of other sizes make room; the oldest go first."""
        size = len(buffer)
        if size > self.budget_bytes:
            return
        if self._held + size > self.budget_bytes:
            kept: list[bytearray] = []  # (by identity: equal bytes are not the same buffer)
            for held in self._buffers:
                if self._held + size > self.budget_bytes and _unshared(held):
                    self._held -= len(held)
                else:
                    kept.append(held)
            self._buffers = kept
        if self._held + size <= self.budget_bytes:
            self._buffers.append(buffer)
            self._held += size
            self._used.add(id(buffer))


def _unshared(buffer: bytearray) -> bool:
    """Nothing refers to ``buffer``'s bytes: it can change size, so it has no exports."""
    try:
        buffer.append(0)
    except BufferError:
        return False
    del buffer[-1]
    return True
