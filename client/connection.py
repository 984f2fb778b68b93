"""One connection to one broker: version negotiation, pipelined requests, ordered answers.

Every connection starts with ApiVersions (v0, which every broker speaks) and then uses,
per API, the highest version both sides speak. Requests may be pipelined; the broker
answers in order, so responses are matched to the oldest request in flight, and a
correlation id that does not match closes the connection (the stream can no longer be
trusted). Closing fails every request still waiting, with the cause attached.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from typing import Any, NamedTuple

from protocol.apis import (
    APIS,
    Api,
    ApiKey,
    ApiVersionRange,
    ApiVersionsRequest,
    decode_response,
    encode_request,
    negotiate,
)
from protocol.errors import (
    ApiError,
    FrameTooLargeError,
    NetworkError,
    RequestTimedOutError,
    UnsupportedVersionError,
    error_for_code,
)
from protocol.framing import DEFAULT_MAX_FRAME_BYTES, LENGTH_SIZE, parse_response_header

__all__ = ["BrokerConnection"]

CLIENT_SOFTWARE = "headwater-python"
CLIENT_VERSION = "0.1.0"


_DRAIN_ABOVE = 64 * 1024
"""Bytes queued in the transport past which a request waits for them to drain (asyncio's
default high-water mark): below it a drain() would only cost a task and a loop turn."""


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _InFlight(NamedTuple):
    correlation_id: int
    api: Api
    version: int
    future: asyncio.Future[Any]


class BrokerConnection:
    """Open with :meth:`connect`; :meth:`request` sends one request and awaits its answer."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        request_timeout_ms: int = 30_000,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.request_timeout_ms = request_timeout_ms
        self.max_frame_bytes = max_frame_bytes
        self.versions: dict[int, ApiVersionRange] = {}
        self._ids = itertools.count(1)
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None

    def __repr__(self) -> str:
        return f"BrokerConnection({self.host}:{self.port})"

    @property
    def connected(self) -> bool:
        return self._writer is not None and self._closed is None

    async def connect(self, timeout_s: float = 10.0) -> None:
        try:
            # asyncio.timeout, not wait_for: on 3.11, wait_for cancelled just as the
            # connection completes drops the new stream without closing it
            async with asyncio.timeout(timeout_s):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise NetworkError(
                f"cannot connect to broker {self.host}:{self.port} ({exc or 'timed out'}); "
                f"check --bootstrap-server and that the broker is running"
            ) from None
        self._read_task = asyncio.get_running_loop().create_task(self._read_responses())
        response = await self._send(
            APIS[ApiKey.API_VERSIONS],
            0,
            ApiVersionsRequest(
                client_software_name=CLIENT_SOFTWARE, client_software_version=CLIENT_VERSION
            ),
        )
        self.versions = {r.api_key: r for r in response.api_keys}

    def version_for(self, api_key: ApiKey) -> int:
        theirs = self.versions.get(api_key)
        if theirs is None:
            raise UnsupportedVersionError(
                f"broker {self.host}:{self.port} does not serve {APIS[api_key].name}"
            )
        return negotiate(APIS[api_key], theirs)

    async def request(
        self,
        api_key: ApiKey,
        request: Any,
        *,
        expect_response: bool = True,
        timeout_ms: int | None = None,
    ) -> Any:
        """Send ``request`` at the negotiated version; raise the request-level error, if any.

        With ``expect_response`` false (Produce with acks=0) nothing is awaited but the send.
        ``timeout_ms`` replaces ``request_timeout_ms`` for a request the broker holds on
        purpose (a JoinGroup waits for the whole group, as Kafka's client allows for).
        """
        return await self._send(
            APIS[api_key],
            self.version_for(api_key),
            request,
            expect_response=expect_response,
            timeout_ms=timeout_ms,
        )

    async def _send(
        self,
        api: Api,
        version: int,
        request: Any,
        *,
        expect_response: bool = True,
        timeout_ms: int | None = None,
    ) -> Any:
        # the frame is queued whole before the first await: a caller cancelled at any
        # await leaves no half request behind (Cluster relies on it: no task per request)
        if self._closed is not None or self._writer is None:
            raise NetworkError(f"connection to {self.host}:{self.port} is closed") from self._closed
        correlation_id = next(self._ids) & 0x7FFFFFFF
        parts = encode_request(api.key, version, correlation_id, request)
        loop = asyncio.get_running_loop()
        timeout_ms = self.request_timeout_ms if timeout_ms is None else timeout_ms
        deadline = loop.time() + timeout_ms / 1000  # the write counts too
        future: asyncio.Future[Any] | None = None
        if expect_response:
            future = loop.create_future()
            self._in_flight.append(_InFlight(correlation_id, api, version, future))
        writer = self._writer
        writer.writelines(parts)
        try:
            if writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                # a broker that stops reading must not hold us in drain() forever
                await asyncio.wait_for(writer.drain(), max(deadline - loop.time(), 0))
            if future is None:
                return None
            # one timer, not wait_for's task and callbacks: this is every request's path
            timer = loop.call_at(deadline, _time_out, future)
            try:
                response = await future
            finally:
                timer.cancel()
        except TimeoutError:
            # the answer may still come: the stream position is unknown, so start over
            self.close(RequestTimedOutError(f"no answer from {self.host}:{self.port}"))
            raise RequestTimedOutError(
                f"{api.name} to {self.host}:{self.port} got no answer within "
                f"{timeout_ms} ms (request.timeout.ms)"
            ) from None
        if response.error_code:
            raise error_for_code(response.error_code, response.error_message)
        return response

    async def _read_responses(self) -> None:
        assert self._reader is not None
        try:
            while True:
                prefix = await self._reader.readexactly(LENGTH_SIZE)
                size = int.from_bytes(prefix, "big")
                if size > self.max_frame_bytes:
                    raise FrameTooLargeError(f"response of {size} bytes from {self}")
                payload = memoryview(await self._reader.readexactly(size))
                correlation_id, body = parse_response_header(payload)
                if not self._in_flight:
                    raise NetworkError(f"{self} sent a response nobody asked for")
                head = self._in_flight.popleft()
                if head.correlation_id != correlation_id:
                    raise NetworkError(
                        f"{self} answered correlation id {correlation_id}, "
                        f"expected {head.correlation_id}"
                    )
                try:
                    response = decode_response(head.api, head.version, body)
                except ApiError as exc:
                    if not head.future.done():
                        head.future.set_exception(exc)
                    continue
                # a caller that gave up (cancelled) still had its answer read off the wire
                if not head.future.done():
                    head.future.set_result(response)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close(NetworkError(f"{self} closed the connection ({type(exc).__name__})"))
        except ApiError as exc:
            self.close(exc)
        except Exception as exc:  # anything else ends the stream too: never a silent reader
            self.close(NetworkError(f"{self}: reading failed ({exc!r})"))

    def close(self, cause: BaseException | None = None) -> None:
        """Close; every request still waiting fails with ``cause`` (or NETWORK_EXCEPTION)."""
        if self._closed is not None:
            return
        self._closed = cause or NetworkError(f"connection to {self.host}:{self.port} closed")
        while self._in_flight:
            pending = self._in_flight.popleft().future
            if not pending.done():
                pending.set_exception(
                    NetworkError(f"{self}: {self._closed}") if cause is None else cause
                )
                pending.exception()  # its caller may be gone (cancelled): nothing to log
        if self._writer is not None:
            if cause is None:
                self._writer.close()  # ours to end: what is buffered still goes out
            else:
                # a failure: bytes a stalled peer will never read must not keep the
                # transport (and anyone draining it) waiting
                self._writer.transport.abort()
        if self._read_task is not None and self._read_task is not asyncio.current_task():
            self._read_task.cancel()

    async def __aenter__(self) -> BrokerConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(self._writer.wait_closed(), 5)
