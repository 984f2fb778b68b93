"""The broker's listener: connections, framing, dispatch to handlers, ordered responses.

Per connection (an ``asyncio.BufferedProtocol``): bytes go into a preallocated buffer, the
:class:`~protocol.framing.FrameDecoder` cuts frames, each request is decoded and handed to
its API's handler as a task, and one writer sends responses strictly in request order,
whatever order the handlers finish in. At most ``max_in_flight`` requests run per
connection; past that, reading pauses (backpressure instead of unbounded memory).

Bad input, as DESIGN.md "The wire" says: an unknown API key or version gets an
UNSUPPORTED_VERSION response (ApiVersions answers with its v0 body and the versions it
speaks, as Kafka does) and the connection stays usable; a body that does not decode gets
INVALID_REQUEST and the connection stays usable; a frame that breaks the framing (too
large, too short for a header) closes that connection only. A handler's unexpected
exception is logged and answered as UNKNOWN_SERVER_ERROR.

Handlers are ``async def handler(header, request) -> response | None``; None sends nothing
(acks=0). A handler raising :class:`CloseConnection` has the connection closed once the
responses before it are written: how an acks=0 producer learns its write failed (it
gets no answer to read an error from), as in Kafka.

Writing: a response's record data may be a :class:`~protocol.framing.FileRegion` (a range
of a segment file). The writer waits until the transport has sent everything before it,
then ``os.sendfile``s the range straight to the socket: the bytes never enter Python.
uvloop has no ``loop.sendfile``, so writability is awaited on a duplicate of the socket's
descriptor (the transport owns the original). The transport's high-water mark is zero:
the writer never runs ahead of a slow reader by more than one response, so a client that
stops reading costs us one response of memory, not an unbounded queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import os
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from protocol.apis import (
    APIS,
    ApiKey,
    ApiVersionsResponse,
    decode_request,
    encode_error_response,
    encode_response,
    supported_versions,
)
from protocol.errors import (
    ApiError,
    MalformedFrameError,
    MalformedMessageError,
    UnsupportedRequestError,
)
from protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    Buffer,
    FileRegion,
    FrameDecoder,
    Part,
    RequestHeader,
)

__all__ = ["PEER_HOST", "BrokerServer", "CloseConnection", "Handler"]

Handler = Callable[[RequestHeader, Any], Awaitable[Any]]

_READ_BUFFER_BYTES = 256 * 1024


class CloseConnection(Exception):
    """Raised by a handler: answer nothing, close this connection (with ``reason`` logged)."""


_CLOSE: list[Part] = []  # the writer's marker for "close here"

PEER_HOST: contextvars.ContextVar[str] = contextvars.ContextVar("peer_host", default="")
"""The address of the client whose request a handler is serving (DescribeGroups shows
each member's host, as Kafka does; the handler signature need not carry it)."""
_log = structlog.get_logger("headwater.server")


async def _api_versions(header: RequestHeader, request: Any) -> ApiVersionsResponse:
    return ApiVersionsResponse(api_keys=supported_versions())


class _Connection(asyncio.BufferedProtocol):
    def __init__(self, server: BrokerServer) -> None:
        self._server = server
        self._decoder = FrameDecoder(server.max_frame_bytes)
        self._queue: collections.deque[asyncio.Future[list[Part] | None]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing is queued
        self._drained.set()
        self._transport: asyncio.Transport | None = None
        self._writer: asyncio.Task[None] | None = None
        self._context = contextvars.copy_context()
        self._paused = False
        self._closed = False
        self._drained_out = asyncio.Event()  # the transport holds nothing unsent
        self._drained_out.set()
        self._dup_fd = -1  # for awaiting writability around sendfile (see the module doc)
        self.last_active = asyncio.get_running_loop().time()
        self._log = _log

    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._context = contextvars.copy_context()  # what handlers of this connection see
        self._context.run(PEER_HOST.set, str(peer[0]) if peer else "")
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self._transport = typing.cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=0, low=0)
        self._log = _log.bind(peer=f"{peer[0]}:{peer[1]}" if peer else "?")
        self._server.connections.add(self)
        self._writer = asyncio.get_running_loop().create_task(self._write_responses())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = asyncio.get_running_loop().time()
        try:
            frames = self._decoder.feed(self._server.read_buffer[:nbytes])
        except MalformedFrameError as exc:
            self._abort(str(exc))
            return
        for payload in frames:
            self._dispatch(payload)

    def eof_received(self) -> bool | None:
        if self._decoder.buffered_bytes:
            self._log.info("connection.truncated", pending_bytes=self._decoder.buffered_bytes)
        return None  # close our side too; responses still queued are dropped

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        self._wakeup.set()
        self._drained.set()
        self._drained_out.set()
        if self._dup_fd >= 0:
            with contextlib.suppress(OSError, RuntimeError):
                asyncio.get_running_loop().remove_writer(self._dup_fd)
            os.close(self._dup_fd)
            self._dup_fd = -1

    def pause_writing(self) -> None:
        self._drained_out.clear()

    def resume_writing(self) -> None:
        self._drained_out.set()

    # requests

    def _dispatch(self, payload: memoryview) -> None:
        loop = asyncio.get_running_loop()
        try:
            header, api, request = decode_request(payload)
        except UnsupportedRequestError as exc:
            self._queue.append(_done(loop, self._unsupported(exc)))
        except MalformedMessageError as exc:
            correlation_id = _correlation_id(payload)
            self._log.info("request.malformed", error=str(exc))
            self._queue.append(_done(loop, encode_error_response(correlation_id, exc)))
        except MalformedFrameError as exc:
            self._abort(str(exc))
            return
        else:
            handling = self._handle(header, api.key, request)
            self._queue.append(loop.create_task(handling, context=self._context.copy()))
        self._drained.clear()
        self._wakeup.set()
        if len(self._queue) >= self._server.max_in_flight and not self._paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True

    def _unsupported(self, exc: UnsupportedRequestError) -> list[Part]:
        header: RequestHeader = exc.header
        self._log.info("request.unsupported", api_key=header.api_key, version=header.api_version)
        if header.api_key == ApiKey.API_VERSIONS:
            # Kafka's rule: answer in v0 with the versions we speak, so the client can pick.
            body = ApiVersionsResponse(
                error_code=exc.code, error_message=exc.message, api_keys=supported_versions()
            )
            return encode_response(header.correlation_id, 0, body)
        return encode_error_response(header.correlation_id, exc)

    async def _handle(self, header: RequestHeader, key: ApiKey, request: Any) -> list[Part] | None:
        handler = self._server.handlers.get(key)
        try:
            if handler is None:
                raise UnsupportedRequestError(f"{APIS[key].name} is not served by this broker")
            response = await handler(header, request)
        except CloseConnection as exc:
            self._log.info("connection.closed_by_handler", reason=str(exc))
            return _CLOSE
        except ApiError as exc:
            return encode_error_response(header.correlation_id, exc)
        except Exception as exc:
            self._log.exception("request.failed", api_key=int(key), error=repr(exc))
            return encode_error_response(header.correlation_id, exc)
        if response is None:
            return None
        return encode_response(header.correlation_id, header.api_version, response)

    async def _write_responses(self) -> None:
        while not self._closed:
            if not self._queue:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            parts = await self._queue[0]
            self._queue.popleft()
            if self._closed:
                break
            if parts is _CLOSE:
                self.close()
                break
            if parts is not None:
                await self._write(parts)
            self.last_active = asyncio.get_running_loop().time()
            if self._paused and len(self._queue) < self._server.max_in_flight // 2:
                assert self._transport is not None
                self._transport.resume_reading()
                self._paused = False
        for pending in self._queue:
            pending.cancel()

    async def _write(self, parts: list[Part]) -> None:
        assert self._transport is not None
        buffers: list[Buffer] = []
        for part in parts:
            if isinstance(part, FileRegion):
                if buffers:
                    self._transport.writelines(buffers)
                    buffers = []
                if not await self._sendfile(part):
                    return
            else:
                buffers.append(part)
        if buffers:
            self._transport.writelines(buffers)
        await self._drained_out.wait()  # backpressure: one response ahead of the reader

    async def _sendfile(self, region: FileRegion) -> bool:
        """Send ``region`` from its file to the socket; False if the connection is gone."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        position, remaining = region.position, region.size
        while remaining:
            await self._drained_out.wait()  # raw writes must not overtake buffered bytes
            if self._closed:
                return False
            fd = region.fd  # re-read after every await: the segment may have been closed
            if fd < 0:
                self._abort("the segment was deleted while its bytes were being sent")
                return False
            socket_fd = self._transport.get_extra_info("socket").fileno()
            try:
                sent = os.sendfile(socket_fd, fd, position, remaining)
            except BlockingIOError:
                sent = -1
            except OSError as exc:
                self._abort(f"sendfile failed: {exc}")
                return False
            if sent == 0:  # the file is shorter than the frame promised
                self._abort("a segment file ended before the range being sent")
                return False
            if sent > 0:
                position += sent
                remaining -= sent
                continue
            if self._dup_fd < 0:
                self._dup_fd = os.dup(socket_fd)
            writable = loop.create_future()
            loop.add_writer(self._dup_fd, _set_once, writable)
            try:
                await writable
            finally:
                if self._dup_fd >= 0:
                    loop.remove_writer(self._dup_fd)
        return True

    @property
    def idle(self) -> bool:
        """Nothing in flight (a half-received frame that stopped arriving counts as idle)."""
        return not self._queue

    async def drain(self) -> None:
        """Wait until every request received so far has been answered (or we closed)."""
        await self._drained.wait()

    def _abort(self, reason: str) -> None:
        self._log.warning("connection.closed_bad_frame", reason=reason)
        if self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_idle(self) -> None:
        self._log.info("connection.closed_idle")
        self.close()


def _done(loop: asyncio.AbstractEventLoop, parts: list[Part]) -> asyncio.Future[list[Part] | None]:
    future: asyncio.Future[list[Part] | None] = loop.create_future()
    future.set_result(parts)
    return future


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _correlation_id(payload: memoryview) -> int:
    return int.from_bytes(payload[4:8], "big", signed=True)


class BrokerServer:
    """Listens on one address and serves requests with ``handlers`` (by API key)."""

    def __init__(
        self,
        handlers: dict[ApiKey, Handler],
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_in_flight: int = 100,
        max_idle_ms: int = 600_000,
    ) -> None:
        self.handlers: dict[ApiKey, Handler] = {ApiKey.API_VERSIONS: _api_versions, **handlers}
        self.max_frame_bytes = max_frame_bytes
        self.max_in_flight = max_in_flight
        self.max_idle_s = max_idle_ms / 1000
        self.connections: set[_Connection] = set()
        self.read_buffer = memoryview(bytearray(_READ_BUFFER_BYTES))
        """Every connection reads into this one buffer: the loop hands a connection the
        buffer, reads into it and calls buffer_updated in one step, and the frame decoder
        copies what it keeps, so nothing refers to it between reads. One per connection
        cost 256 KiB each (268 MB for 1,000 idle connections)."""
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        bound = int(self._server.sockets[0].getsockname()[1])
        self._reaper = loop.create_task(self._close_idle())
        _log.info("server.listening", host=host, port=bound)
        return bound

    async def _close_idle(self) -> None:
        """Close connections silent for ``connections.max.idle.ms`` (Kafka's rule), so
        clients that connect and vanish without a FIN do not hold memory forever."""
        loop = asyncio.get_running_loop()
        period_s = min(max(self.max_idle_s / 10, 0.05), 30.0)
        while True:
            await asyncio.sleep(period_s)
            cutoff = loop.time() - self.max_idle_s
            for connection in list(self.connections):
                if connection.idle and connection.last_active < cutoff:
                    connection.close_idle()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, answer what is in flight (up to ``timeout_s``), close."""
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        connections = list(self.connections)
        try:
            await asyncio.wait_for(asyncio.gather(*(c.drain() for c in connections)), timeout_s)
        except TimeoutError:
            _log.warning("server.stop_timeout", pending_connections=len(connections))
        for connection in connections:
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
