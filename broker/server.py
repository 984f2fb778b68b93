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

Handlers are ``handler(header, request)`` returning the response, None (send nothing:
acks=0), a coroutine (``async def`` handlers: run as a task) or a
:class:`~broker.deferred.Deferred` (a parked request that an event completes). A handler
raising :class:`CloseConnection` has the connection closed once the responses before it are
written: how an acks=0 producer learns its write failed (it gets no answer to read an
error from), as in Kafka.

Latency: a plain function's response (produce with acks=1, a fetch that finds data) is
encoded and written inside ``buffer_updated``, in the loop iteration that read the request,
when nothing is ahead of it; a Deferred's response is written inside the call that
completes it (a leader append completing a parked fetch), not some iterations later.
Small file ranges (up to ``_INLINE_FILE_BYTES``) are read with ``pread`` and sent in the
same ``writelines`` as the frame header: one syscall and one TCP segment instead of a
header segment and a ``sendfile``, which costs the reader a second wake-up.

Writing: a response's record data may be a :class:`~protocol.framing.FileRegion` (a range
of a segment file). A large one goes by the writer task, which waits until the transport
has sent everything before it, then ``os.sendfile``s the range straight to the socket: the
bytes never enter Python.
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
import ssl
import time
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from broker.connection_quotas import ConnectionQuotas
from broker.deferred import Deferred
from broker.principal import certificate_principal
from broker.sasl import Authenticator, SaslListener
from broker.stall import DISARMED, StallGuard
from broker.zk import ZkUnavailable
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
    IllegalSaslStateError,
    MalformedFrameError,
    MalformedMessageError,
    RequestTimedOutError,
    UnsupportedRequestError,
    UnsupportedVersionError,
)
from protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    Buffer,
    FileRegion,
    FrameDecoder,
    FramePool,
    Part,
    RequestHeader,
)
from protocol.kafka import wire as kafka_wire

__all__ = [
    "MUTE",
    "PEER_CLIENT_ID",
    "PEER_HOST",
    "PEER_LOGIN",
    "PEER_PRINCIPAL",
    "BrokerServer",
    "CloseConnection",
    "Handler",
]

Handler = Callable[[RequestHeader, Any], Awaitable[Any] | Deferred[Any] | Any]
"""Returns the response (None: send nothing), a coroutine, or a Deferred response."""

_READ_BUFFER_BYTES = 256 * 1024
_FRAME_POOL_BYTES = 64 * 1024 * 1024
"""The most a listener's pool keeps of the buffers large frames arrived in (each reused
once nothing refers to it): a few dozen 1 MiB produce requests in flight; more are copied."""
_FRAME_POOL_TRIM_S = 60.0
"""How often the frame pool lets go of buffers no frame had since the last time."""
_AFTER_LARGE_READ_BYTES = 4096
"""The read after a large frame: short, so that if another large frame follows, only its
head is copied out of the read buffer and its body goes straight into its own."""
_INLINE_FILE_BYTES = 16 * 1024
"""A response's file ranges, up to this many bytes in all, are read and sent with its
frame's header (one syscall, one segment); the rest are ``sendfile``d."""
_HANDSHAKE_S = 10.0  # a TLS client that does not finish its handshake is dropped then
_TOLD_MAX = 10_000  # addresses remembered for tell_throttled's rate limit
_EARLY_MAX_BYTES = 64 * 1024  # read of a connection waiting its turn, at most
_COPY_CHUNK_BYTES = 256 * 1024
"""Over TLS, a file range goes in reads of this size, each read from the page cache on
the loop (as the inlined small ranges) once the TLS transport has taken the one before
(the socket below it may still hold its own buffer's worth)."""


class CloseConnection(Exception):
    """Raised by a handler: answer nothing, close this connection (with ``reason`` logged)."""


_CLOSE: list[Part] = []  # the writer's marker for "close here"

PEER_HOST: contextvars.ContextVar[str] = contextvars.ContextVar("peer_host", default="")
"""The address of the client whose request a handler is serving (DescribeGroups shows
each member's host, as Kafka does; the handler signature need not carry it)."""
PEER_CLIENT_ID: contextvars.ContextVar[str] = contextvars.ContextVar("peer_client_id", default="")
"""The client id a connection's ApiVersions named (for quotas)."""
MUTE: contextvars.ContextVar[Callable[[int], None]] = contextvars.ContextVar(
    "mute", default=lambda _ms: None
)
"""Mutes the connection being served for so many ms (a throttle with no answer to carry
it: an acks=0 produce)."""
PEER_PRINCIPAL: contextvars.ContextVar[str] = contextvars.ContextVar("peer_principal", default="")
"""``User:<name>`` of a connection logged in with SASL or a client certificate ("" if not)."""
PEER_LOGIN: contextvars.ContextVar[str] = contextvars.ContextVar("peer_login", default="")
"""How the connection logged in: ``sasl`` (a password or an OAuth token), ``token`` (a
delegation token, KIP-48), ``certificate`` (a TLS client certificate), or "" (none)."""
ON_CLOSE: contextvars.ContextVar[Callable[[Callable[[], None]], None] | None] = (
    contextvars.ContextVar("on_close", default=None)
)
"""Registers a callback run once when the connection being served closes (a share
session ends with its connection, as Kafka's)."""
_log = structlog.get_logger("headwater.server")


async def _api_versions(header: RequestHeader, request: Any) -> ApiVersionsResponse:
    return ApiVersionsResponse(api_keys=supported_versions())


def _no_sasl(header: RequestHeader, request: Any) -> Any:
    # on a SASL listener these reach the handlers only once authenticated
    raise IllegalSaslStateError(
        "this connection is already authenticated"
        if PEER_PRINCIPAL.get()
        else "this listener does not use SASL (its security protocol is PLAINTEXT or SSL)"
    )


class RequestQuotas(typing.Protocol):
    """What times requests against ``request_percentage`` quotas (the QuotaManager)."""

    @property
    def times_requests(self) -> bool: ...

    def request_meter(self) -> Callable[[int], int]: ...


_UNTIMED = frozenset(
    {
        ApiKey.API_VERSIONS,
        ApiKey.SASL_HANDSHAKE,
        ApiKey.SASL_AUTHENTICATE,
        ApiKey.LEADER_AND_ISR,
        ApiKey.STOP_REPLICA,
        ApiKey.UPDATE_METADATA,
        ApiKey.CONTROLLED_SHUTDOWN,
        ApiKey.WRITE_TXN_MARKERS,
    }
)
"""Not counted against request quotas (Kafka's exempt ones: the login, and the cluster's
own requests)."""


class _Timed:
    """Awaits a coroutine, adding up the time of each of its steps (not its waits)."""

    __slots__ = ("_coro", "ns")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self.ns = 0

    def __await__(self) -> typing.Generator[Any, Any, Any]:
        steps = self._coro.__await__()
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            started = time.perf_counter_ns()
            try:
                waiting = steps.throw(thrown) if thrown is not None else steps.send(sent)
            except StopIteration as done:
                self.ns += time.perf_counter_ns() - started
                return done.value
            except BaseException:
                self.ns += time.perf_counter_ns() - started
                raise
            self.ns += time.perf_counter_ns() - started
            try:
                sent, thrown = (yield waiting), None
            except BaseException as exc:  # (a cancellation: passed in)
                sent, thrown = None, exc


def _exempt(key: ApiKey, request: Any) -> bool:
    """Not held to request quotas, as in Kafka: a follower's fetch (replication), and an
    acks=0 produce (no answer would say the throttle)."""
    if key == ApiKey.FETCH:
        return bool(request.replica_id >= 0)
    return key == ApiKey.PRODUCE and request.acks == 0


def _stamp(done: Deferred[Any], throttle_ms: int) -> None:
    with contextlib.suppress(Exception):  # a failed request: an error answer
        answer = done.result()
        if hasattr(answer, "throttle_time_ms"):
            answer.throttle_time_ms = max(answer.throttle_time_ms, throttle_ms)


_HELD_DURING_LOGIN = 16
"""Requests a client may pipeline behind a SASL step still being answered."""
_BEFORE_AUTHENTICATION = (ApiKey.API_VERSIONS, ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE)


class _Slot:
    """One request's place in the response order: its frame once known."""

    __slots__ = ("parts", "ready", "waiting")

    def __init__(self, parts: list[Part] | None = None, *, ready: bool = True) -> None:
        self.parts = parts  # None: nothing to send (acks=0); _CLOSE: close here
        self.ready = ready
        self.waiting: asyncio.Task[list[Part] | None] | Deferred[Any] | None = None
        """What produces the response, cancelled if the connection closes first."""


class _Connection(asyncio.BufferedProtocol):
    def __init__(self, server: BrokerServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder(server.max_frame_bytes, server.frame_pool)
        self._direct = False  # the last read went into a frame's own buffer
        self._after_large = False  # ... and finished a frame: the next read is short
        self._queue: collections.deque[_Slot] = collections.deque()
        self._busy = False  # the writer task is sending a response (the queue waits)
        self._drained = asyncio.Event()  # set while nothing is queued or being written
        self._drained.set()
        self._transport: asyncio.Transport | None = None
        self._writer: asyncio.Task[None] | None = None
        self._context = contextvars.copy_context()
        self._paused = False
        self._closed = False
        self._ending = False  # a request asked to close: nothing read after it is handled
        self._drained_out = asyncio.Event()  # the transport holds nothing unsent
        self._drained_out.set()
        self._dup_fd = -1  # for awaiting writability around sendfile (see the module doc)
        self.last_active = self._loop.time()
        self._log = _log
        self._auth: Authenticator | None = None  # a SASL listener: who this connection is
        self._authenticated = False  # its login succeeded (and PEER_PRINCIPAL says who)
        self._auth_busy = False  # a SASL step is being answered: later frames wait
        self._held: list[bytes] = []  # ... here, copied (the read buffer is shared)
        self._muted = False  # throttled by a quota: not read until the time is up
        self._stalled = False  # read after a stall: not served until the session is known
        self._unmute_at = 0.0
        self._unmute_timer: asyncio.TimerHandle | None = None
        self.ip = ""
        self.waited = False  # its reading paused while it waited its turn (a rate)
        self._raw: asyncio.Transport | None = None  # ... its transport meanwhile
        self._early: list[bytes] = []  # ... and what was read of it before the pause
        self._refused = False  # not counted: waiting its turn, or refused by a limit or rate
        self._close_timer: asyncio.TimerHandle | None = None  # ... closed when it fires
        self._kafka_client_id: str | None = None  # a Kafka-protocol client's, last said
        self._closing: list[Callable[[], None]] = []  # see ON_CLOSE

    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        raw = typing.cast(asyncio.Transport, transport)
        if self._server.quotas is None:
            self.accept(raw)
            return
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        self._refused = True  # counted once accepted
        self._raw = raw
        self._server.arrive(self, raw)

    def accept(self, transport: asyncio.Transport) -> None:
        """Taken by the listener's acceptor (at once without a connection rate, else in
        its turn: see :meth:`BrokerServer.arrive`): checked against its address's rate and
        the connection limits, then served."""
        peer = transport.get_extra_info("peername")
        quotas = self._server.quotas
        if quotas is not None:
            if self._closed:  # gone while it waited its turn
                return
            held_ms = quotas.held(self.ip, self._server.listener)
            if held_ms:
                self._hold_and_close(transport, held_ms)
                return
            refused = quotas.admit(self.ip, self._server.listener)
            if refused is not None:
                _log.info("connection.refused", peer=self.ip, reason=refused)
                self._closed = True
                transport.abort()
                return
            self._refused = False
        self._context = contextvars.copy_context()  # what handlers of this connection see
        self._context.run(PEER_HOST.set, str(peer[0]) if peer else "")
        self._transport = transport
        # a TLS transport pauses its writer when what it holds is *at least* the mark: at
        # 0 it would pause for good (nothing held is "at least 0"), so 1 there
        tls = self._server.ssl is not None
        self._transport.set_write_buffer_limits(high=1 if tls else 0, low=0)
        self._log = _log.bind(peer=f"{peer[0]}:{peer[1]}" if peer else "?")
        self._context.run(MUTE.set, self._mute)
        self._context.run(ON_CLOSE.set, self._closing.append)
        if self._server.sasl is not None:
            self._auth = Authenticator(self._server.sasl, f"{peer[0]}:{peer[1]}" if peer else "?")
        elif self._server.ssl is not None:
            # a client certificate names the connection, as Kafka's default SSL principal
            tls = transport.get_extra_info("ssl_object")
            named = certificate_principal(tls.getpeercert(binary_form=True) if tls else None)
            if named is not None:
                self._context.run(PEER_PRINCIPAL.set, named)
                self._context.run(PEER_LOGIN.set, "certificate")
        self._server.connections.add(self)
        self._raw = None
        if self.waited:
            self.waited = False
            transport.resume_reading()
        early, self._early = self._early, []
        for data in early:
            self._received(memoryview(data))

    @property
    def gone(self) -> bool:
        """Closed (by its client, or refused) before it was served."""
        return self._closed

    @gone.setter
    def gone(self, value: bool) -> None:
        self._closed = value

    def _hold_and_close(self, transport: asyncio.Transport, hold_ms: int) -> None:
        """An address over its connection_creation_rate: nothing is read, and the
        connection is closed after its throttle time (Kafka's ConnectionThrottledException:
        a client reconnecting at once is slowed to the rate, not spun)."""
        self._closed = True
        if not self.waited:
            transport.pause_reading()
        self._server.holding.add(transport)
        self._close_timer = self._loop.call_later(hold_ms / 1000, self._close_held, transport)
        self._server.tell_throttled(self.ip, "connection.throttled", close_in_ms=hold_ms)

    def _close_held(self, transport: asyncio.Transport) -> None:
        self._close_timer = None
        self._server.holding.discard(transport)
        transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        rest = self._decoder.read_into()  # a large frame: the rest of it straight to its buffer
        self._direct = rest is not None
        if rest is not None:
            return rest
        if self._after_large:
            # after a large frame most likely another: a short read takes its head, and
            # its body follows straight into its own buffer (not copied from this one)
            self._after_large = False
            return self._server.read_buffer[:_AFTER_LARGE_READ_BYTES]
        return self._server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            self.last_active = self._loop.time()
            frames = self._decoder.filled(nbytes)
            self._after_large = bool(frames)
            self._frames(frames)
        elif self._transport is None:
            self._read_early(nbytes)
        else:
            self._received(self._server.read_buffer[:nbytes])

    def _read_early(self, nbytes: int) -> None:
        """Bytes of a connection not taken yet (uvloop starts reading after
        ``connection_made`` even if it paused): kept for :meth:`accept`, and reading paused
        again. One held to be closed keeps none."""
        if self._raw is None:
            return
        if not self._closed:  # (one held to be closed: its bytes are not wanted)
            self._early.append(bytes(self._server.read_buffer[:nbytes]))
            if sum(map(len, self._early)) > _EARLY_MAX_BYTES:
                # a client sends a request or two before its first answer; more is not
                # one to keep waiting (a full backlog of them must not cost 256 MB)
                self._closed = True
                self._early.clear()
                self._raw.abort()
                return
        self._raw.pause_reading()

    def _received(self, data: memoryview) -> None:
        self.last_active = self._loop.time()
        try:
            frames = self._decoder.feed(data)
        except MalformedFrameError as exc:
            self._abort(str(exc))
            return
        self._frames(frames)

    def _frames(self, frames: list[memoryview]) -> None:
        if self.last_active > self._server.stall.deadline and not self._stalled:
            self._stall(self.last_active)
        for payload in frames:
            if self._ending or self._closed:
                # a request before these asked to close the connection: requests read
                # with it (pipelined) are not acted on, as none of them will be answered
                return
            if self._muted or self._stalled:
                # throttled, or the broker's state is in doubt after a stall (see
                # broker/stall.py): what was read waits too
                self._held.append(bytes(payload))
                continue
            if self._auth_busy:
                # one SASL step at a time, and nothing decided before the last one is
                # (Kafka mutes the channel the same way)
                if len(self._held) >= _HELD_DURING_LOGIN:
                    self._abort("too many requests pipelined during a SASL login")
                    return
                self._held.append(bytes(payload))
                continue
            self._dispatch(payload)

    def eof_received(self) -> bool | None:
        if self._decoder.buffered_bytes:
            self._log.info("connection.truncated", pending_bytes=self._decoder.buffered_bytes)
        return None  # close our side too; responses still queued are dropped

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            self._closed = True  # (one waiting its turn is passed over)
            if self._close_timer is not None:  # it went first
                self._close_timer.cancel()
                self._close_timer = None
                if self._raw is not None:
                    self._server.holding.discard(self._raw)
            return  # never counted, never served
        self._closed = True
        # a frame cut off by the close: its pooled buffer goes back now, not when the
        # collector frees this connection (the broker freezes long-lived objects)
        self._decoder.discard()
        self._server.connections.discard(self)
        if self._server.quotas is not None:
            self._server.quotas.release(self.ip, self._server.listener)
        queued = list(self._queue)
        self._queue.clear()
        for slot in queued:
            if slot.waiting is not None:
                slot.waiting.cancel()
        if self._writer is not None:
            self._writer.cancel()
        self._drained.set()
        self._drained_out.set()
        closing, self._closing = self._closing, []
        for callback in closing:
            try:
                callback()
            except Exception:  # one failing must not keep the others from running
                self._log.exception("connection.close_callback_failed")
        if self._dup_fd >= 0:
            with contextlib.suppress(OSError, RuntimeError):
                self._loop.remove_writer(self._dup_fd)
            os.close(self._dup_fd)
            self._dup_fd = -1

    def pause_writing(self) -> None:
        self._drained_out.clear()

    def resume_writing(self) -> None:
        self._drained_out.set()

    # requests

    def _dispatch(self, payload: memoryview) -> None:
        if self._server.kafka_protocol:
            self._dispatch_kafka(payload)
            return
        try:
            header, api, request = decode_request(payload)
        except UnsupportedRequestError as exc:
            slot = _Slot(self._unsupported(exc))
        except MalformedMessageError as exc:
            correlation_id = _correlation_id(payload)
            self._log.info("request.malformed", error=str(exc))
            slot = _Slot(encode_error_response(correlation_id, exc))
        except MalformedFrameError as exc:
            self._abort(str(exc))
            return
        else:
            if api.key == ApiKey.API_VERSIONS and request.client_id:
                self._context.run(PEER_CLIENT_ID.set, request.client_id)
            if (
                self._auth is not None
                and not self._authenticated
                and api.key != ApiKey.API_VERSIONS
            ):
                if api.key not in _BEFORE_AUTHENTICATION:
                    # Kafka's rule: nothing but the SASL exchange before it succeeds; the
                    # answer says so before the close, so the client can say what to do
                    self._log.warning("connection.unauthenticated_request", api=api.name)
                    refusal = IllegalSaslStateError(
                        f"this listener ({self._server.sasl.name}) requires SASL "  # type: ignore[union-attr]
                        f"authentication before {api.name}: connect with "
                        "security_protocol='SASL_PLAINTEXT' (or 'SASL_SSL'), sasl_mechanism, "
                        "sasl_plain_username and sasl_plain_password"
                    )
                    self._end_reading()
                    refused = _Slot(encode_error_response(header.correlation_id, refusal))
                    self._enqueue(refused, _Slot(_CLOSE))
                    return
                self._authenticate(header, api.key, request)
                return
            if self._auth is not None and self._logged_in_again(header, api.key, request):
                return
            slot = self._call(header, api.key, request)
            if slot.parts is _CLOSE:
                self._end_reading()
        self._enqueue(slot)

    def _dispatch_kafka(self, payload: memoryview) -> None:
        """A request in Kafka's encoding (a Kafka-protocol listener): served by the same
        handlers, answered in Kafka's encoding at the request's version."""
        try:
            header, api, request = kafka_wire.decode_request(payload)
        except UnsupportedRequestError as exc:
            asked = exc.header
            if asked is not None and asked.api_key == ApiKey.API_VERSIONS:
                slot = _Slot(kafka_wire.api_versions_response(asked, UnsupportedVersionError.code))
                self._enqueue(slot)
                return
            self._close_after_answers("connection.unsupported_request", error=str(exc))
            return
        except (MalformedMessageError, MalformedFrameError) as exc:
            self._close_after_answers("connection.malformed_kafka_request", error=str(exc))
            return
        if header.client_id and header.client_id != self._kafka_client_id:
            # Kafka carries it in every header; quotas and logs read it per connection
            self._kafka_client_id = header.client_id
            self._context.run(PEER_CLIENT_ID.set, header.client_id)
        if api.key == ApiKey.API_VERSIONS:
            if not (  # (a session ended: closed, as for any other request)
                self._auth is not None
                and self._authenticated
                and self._logged_in_again(header, api.key, request)  # type: ignore[arg-type]
            ):
                self._enqueue(_Slot(kafka_wire.api_versions_response(header)))
            return
        if self._auth is not None and self._kafka_sasl(header, api.key, request):  # type: ignore[arg-type]
            return
        slot = self._call(header, api.served_by or api.key, request)  # type: ignore[arg-type]
        if slot.parts is _CLOSE:
            self._end_reading()
        self._enqueue(slot)

    def _kafka_sasl(self, header: RequestHeader, key: ApiKey, request: Any) -> bool:
        """A Kafka client's request on a SASL listener: True if the login's (or a
        re-authentication's) business, handled here."""
        if self._authenticated:
            return self._logged_in_again(header, key, request)
        if key not in _BEFORE_AUTHENTICATION:
            # as Kafka's brokers: nothing but the SASL exchange before it succeeds
            self._close_after_answers("connection.unauthenticated_request", api=key.name)
        else:
            self._authenticate(header, key, request)
        return True

    def _logged_in_again(self, header: RequestHeader, key: ApiKey, request: Any) -> bool:
        """An authenticated SASL connection's request: True if it is a re-authentication's
        step (KIP-368), the authenticator's, or it closes the connection: a request of a
        session that has ended, or one sent in the middle of a re-authentication (Kafka's
        rule: nothing else until it is done)."""
        auth = self._auth
        assert auth is not None
        if (key == ApiKey.SASL_HANDSHAKE and auth.may_reauthenticate()) or (
            key == ApiKey.SASL_AUTHENTICATE and auth.reauthenticating
        ):
            self._authenticate(header, key, request)
            return True
        if auth.reauthenticating:
            self._close_after_answers("connection.request_during_reauthentication", api=key.name)
            return True
        if key == ApiKey.SASL_HANDSHAKE and not auth.expired():
            return False  # (not starting a re-authentication: ILLEGAL_SASL_STATE)
        if auth.expired():
            self._close_after_answers(
                "connection.session_expired",
                api=key.name,
                hint="the client did not re-authenticate within connections.max.reauth.ms "
                "(or its token's lifetime)",
            )
            return True
        return False

    def _close_after_answers(self, event: str, **why: Any) -> None:
        """A Kafka client's request that cannot be answered: Kafka's answers share no error
        field, so, as Kafka does, the connection closes after the answers before it, and
        the log says why."""
        self._log.warning(event, **why)
        self._end_reading()
        self._enqueue(_Slot(_CLOSE))

    def _enqueue(self, *slots: _Slot) -> None:
        self._queue.extend(slots)
        self._drained.clear()
        self._pump()
        if len(self._queue) >= self._server.max_in_flight and not self._paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True

    def _authenticate(self, header: RequestHeader, key: ApiKey, request: Any) -> None:
        """A SaslHandshake or SaslAuthenticate before authentication: answered by this
        connection's authenticator, and the connection closed after the answer if it
        failed."""
        auth = self._auth
        assert auth is not None
        slot, gate = _Slot(ready=False), _Slot(ready=False)
        self._auth_busy = True
        task = self._loop.create_task(auth.handle(key, request))
        slot.waiting = task

        def done(finished: asyncio.Task[Any]) -> None:
            if finished.cancelled():
                return  # the connection closed
            failed = auth.failed
            try:
                response = finished.result()
            except Exception as exc:
                slot.parts, failed = self._failure(header, key, exc), True
            else:
                slot.parts = self._encode(header, key, response)
            if auth.done and not failed:
                # in the same step as the frames held meanwhile are let go
                self._context.run(PEER_PRINCIPAL.set, auth.principal or "")
                self._context.run(PEER_LOGIN.set, "token" if auth.by_token else "sasl")
                self._log = self._log.bind(principal=auth.principal)
                self._authenticated = True
            self._auth_busy = False
            slot.ready, slot.waiting = True, None
            gate.parts, gate.ready = (_CLOSE if failed else None), True
            if failed:
                self._held.clear()
                self._end_reading()
            self._pump()
            self._release_held()

        task.add_done_callback(done)
        self._enqueue(slot, gate)

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

    def _call(self, header: RequestHeader, key: ApiKey, request: Any) -> _Slot:
        """Run the handler; its slot, ready at once unless it has to wait."""
        timed = self._server.request_quotas
        if (
            timed is not None
            and timed.times_requests
            and key not in _UNTIMED
            and not _exempt(key, request)
        ):
            return self._timed_call(header, key, request, timed)
        context = self._context.copy()  # each request sees the connection's, changes its own
        try:
            result = context.run(self._handler(key), header, request)
        except Exception as exc:
            return _Slot(self._failure(header, key, exc))
        return self._slot(header, key, result, context)

    def _slot(
        self, header: RequestHeader, key: ApiKey, result: Any, context: contextvars.Context
    ) -> _Slot:
        """The handler's result as a slot: ready now, or once its Deferred or coroutine
        is answered."""
        if isinstance(result, Deferred):
            slot = _Slot(ready=False)
            slot.waiting = result
            result.add_listener(lambda done: self._deferred_done(slot, header, key, done))
            return slot
        if isinstance(result, Coroutine):
            slot = _Slot(ready=False)
            task = self._loop.create_task(self._run(header, key, result), context=context)
            slot.waiting = task
            task.add_done_callback(lambda done: self._task_done(slot, done))
            return slot
        return _Slot(self._encode(header, key, result))

    def _handler(self, key: ApiKey) -> Handler:
        handler = self._server.handlers.get(key)
        if handler is None:
            raise UnsupportedRequestError(f"{APIS[key].name} is not served by this broker")
        return handler

    def _timed_call(
        self, header: RequestHeader, key: ApiKey, request: Any, quotas: RequestQuotas
    ) -> _Slot:
        """:meth:`_call`, its time on this loop counted against the client's
        ``request_percentage`` quota (KIP-124): the handler's own steps, a coroutine's
        included, not what it awaits (another broker, ZooKeeper, a parked fetch's wait).
        Over the quota, the answer says the throttle and nothing more is read from the
        client for as long, as with the byte quotas."""
        context = self._context.copy()
        meter = context.run(quotas.request_meter)  # the principal and client id asking
        started = time.perf_counter_ns()
        try:
            result = context.run(self._handler(key), header, request)
        except Exception as exc:
            self._throttle_request(meter(time.perf_counter_ns() - started), None)
            return _Slot(self._failure(header, key, exc))
        spent = time.perf_counter_ns() - started
        if isinstance(result, Coroutine):
            stepped = _Timed(result)

            async def measured() -> Any:
                response = None
                try:
                    response = await stepped
                    return response
                finally:  # (an error answer counts too, as Kafka's)
                    self._throttle_request(meter(spent + stepped.ns), response)

            return self._slot(header, key, measured(), context)
        throttle = meter(spent)
        if isinstance(result, Deferred):
            self._throttle_request(throttle, None)
            if throttle:  # stamped once answered, before the server's own listener
                result.add_listener(lambda done: _stamp(done, throttle))
        else:
            self._throttle_request(throttle, result)
        return self._slot(header, key, result, context)

    def _throttle_request(self, throttle_ms: int, response: Any) -> None:
        if throttle_ms <= 0:
            return
        if response is not None and hasattr(response, "throttle_time_ms"):
            response.throttle_time_ms = max(response.throttle_time_ms, throttle_ms)
        self._mute(throttle_ms)

    async def _run(
        self, header: RequestHeader, key: ApiKey, handling: Coroutine[Any, Any, Any]
    ) -> list[Part] | None:
        try:
            response = await handling
        except asyncio.CancelledError:
            if self._closed:
                raise  # the connection went: nobody to answer
            # the handler let a CancelledError of its own out: an error answer, or its
            # slot would never be ready and the connection would stop answering
            self._log.error("request.cancelled_inside", api_key=int(key))
            return self._failure(header, key, RuntimeError("the request's handler was cancelled"))
        except Exception as exc:
            return self._failure(header, key, exc)
        return self._encode(header, key, response)

    def _task_done(self, slot: _Slot, task: asyncio.Task[list[Part] | None]) -> None:
        if task.cancelled():
            return  # the connection closed
        slot.parts, slot.ready, slot.waiting = task.result(), True, None
        if slot.parts is _CLOSE:
            self._end_reading()  # requests already read stay queued; no new ones
        self._pump()

    def _end_reading(self) -> None:
        self._ending = True
        if self._transport is not None and not self._paused:
            self._transport.pause_reading()
            self._paused = True

    def _deferred_done(
        self, slot: _Slot, header: RequestHeader, key: ApiKey, done: Deferred[Any]
    ) -> None:
        # runs inside whatever completed it (another connection's append): never raise there
        try:
            try:
                response = done.result()
            except Exception as exc:
                slot.parts = self._failure(header, key, exc)
            else:
                slot.parts = self._encode(header, key, response)
            slot.ready, slot.waiting = True, None
            if slot.parts is _CLOSE:
                self._end_reading()  # as _task_done: requests already read stay queued
            self._pump()
        except Exception as exc:
            self._log.exception("response.failed", api_key=int(key), error=repr(exc))
            self.close()

    def _failure(self, header: RequestHeader, key: ApiKey, exc: Exception) -> list[Part]:
        if isinstance(exc, CloseConnection):
            self._log.info("connection.closed_by_handler", reason=str(exc))
            return _CLOSE
        if isinstance(exc, ZkUnavailable):  # an outage, not a bug: retriable, no traceback
            self._log.warning("request.zookeeper_unavailable", api_key=int(key), error=str(exc))
            exc = RequestTimedOutError(
                f"this broker could not reach ZooKeeper ({exc}); the request may or may not "
                "have been done: check, or try again"
            )
        if not isinstance(exc, ApiError):
            self._log.exception("request.failed", api_key=int(key), error=repr(exc))
        if isinstance(header, kafka_wire.KafkaHeader):
            return kafka_wire.encode_error_response(header, exc)
        return encode_error_response(header.correlation_id, exc)

    def _encode(self, header: RequestHeader, key: ApiKey, response: Any) -> list[Part] | None:
        if response is None:
            return None
        throttled = getattr(response, "throttle_time_ms", 0)
        if throttled > 0:
            self._mute(throttled)
        try:
            if isinstance(header, kafka_wire.KafkaHeader):
                return kafka_wire.encode_response(header, response)
            return encode_response(header.correlation_id, header.api_version, response)
        except Exception as exc:
            return self._failure(header, key, exc)

    # responses

    def _pump(self) -> None:
        """Send the responses at the head of the queue that are ready, in order: right now
        if the transport can take them, else by the writer task."""
        if self._busy or self._closed:
            return
        assert self._transport is not None
        queue = self._queue
        while queue and queue[0].ready:
            if self._transport.is_closing():
                return  # aborted: connection_lost follows and drops the rest
            parts = queue.popleft().parts
            if parts is _CLOSE:
                self.close()
                return
            if parts is None:
                continue
            rest = self._write_now(parts) if self._drained_out.is_set() else parts
            if rest:
                self._busy = True
                self._writer = self._loop.create_task(self._write_later(rest))
                return
        self.last_active = self._loop.time()
        if not queue:
            self._drained.set()
        # at least one below the limit: with max_in_flight 1, "half" would be 0 and
        # reading would never resume
        if (
            self._paused
            and not self._ending
            and not self._muted
            and not self._stalled
            and len(queue) < max(self._server.max_in_flight // 2, 1)
        ):
            assert self._transport is not None
            self._transport.resume_reading()
            self._paused = False

    def _release_held(self) -> None:
        """Handle the frames held back (read during a SASL step or a throttle), in order,
        until one holds the rest again."""
        if self._held and not self._stalled:
            # frames held before a stall, let go during its hold: held on (the state they
            # would be served from is in doubt too)
            now = self._loop.time()
            if now > self._server.stall.deadline:
                self._stall(now)
        while self._held and not (
            self._auth_busy or self._muted or self._stalled or self._ending or self._closed
        ):
            self._dispatch(memoryview(self._held.pop(0)))

    def _mute(self, throttle_ms: int) -> None:
        """A quota's throttle (Kafka's KIP-219): the answer goes out now, and nothing more
        is read from this client for ``throttle_ms``."""
        if self._transport is None or self._closed:
            return
        if not self._paused:
            self._transport.pause_reading()
            self._paused = True
        self._muted = True
        until = self._loop.time() + throttle_ms / 1000
        if until > self._unmute_at:
            # one timer, moved to the latest end (a timer may fire a hair before its time
            # on uvloop, so the time is not compared again when it does)
            self._unmute_at = until
            if self._unmute_timer is not None:
                self._unmute_timer.cancel()
            self._unmute_timer = self._loop.call_at(until, self._unmute)

    def _unmute(self) -> None:
        self._unmute_timer = None
        self._muted = False
        self._read_again()

    def _stall(self, now: float) -> None:
        """Frames read (or let go) after the broker's loop stalled: held, with nothing more
        read, until the guard knows the broker's ZooKeeper session (broker/stall.py)."""
        if not self._server.stall.hold(now, self._unstall):
            return
        self._stalled = True
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def _unstall(self) -> None:
        self._stalled = False
        self._read_again()

    def _read_again(self) -> None:
        """What was held, served; reading resumed unless something still holds it."""
        if self._closed or self._ending or self._transport is None:
            return
        self._release_held()
        if (
            self._paused
            and not self._muted
            and not self._stalled
            and len(self._queue) < max(self._server.max_in_flight // 2, 1)
        ):
            self._transport.resume_reading()
            self._paused = False

    def _write_now(self, parts: list[Part]) -> list[Part]:
        """Write ``parts`` up to the first file range that is not inlined (the response's
        ranges are, while they add up to at most ``_INLINE_FILE_BYTES``); returns what is
        left."""
        assert self._transport is not None
        buffers: list[Buffer] = []
        inlined = 0
        for i, part in enumerate(parts):
            if not isinstance(part, FileRegion):
                buffers.append(part)
            elif inlined + part.size <= _INLINE_FILE_BYTES:
                data = self._read_region(part)
                if data is None:
                    return []
                inlined += part.size
                buffers.append(data)
            else:
                if buffers:
                    self._transport.writelines(buffers)
                return parts[i:]
        self._transport.writelines(buffers)
        return []

    def _read_region(
        self, region: FileRegion, position: int | None = None, size: int | None = None
    ) -> bytes | None:
        """The bytes of ``region`` (or of its ``size`` bytes at ``position``), read now."""
        fd = region.fd  # re-read: the segment may have been closed since
        if fd < 0:
            self._abort("the segment was deleted while its bytes were being sent")
            return None
        size = region.size if size is None else size
        try:
            data = os.pread(fd, size, region.position if position is None else position)
        except OSError as exc:
            self._abort(f"reading a segment failed: {exc}")
            return None
        if len(data) != size:
            self._abort("a segment file ended before the range being sent")
            return None
        return data

    async def _write_later(self, parts: list[Part]) -> None:
        try:
            await self._write(parts)
        finally:
            self._busy = False
            self._writer = None
        self._pump()

    async def _write(self, parts: list[Part]) -> None:
        assert self._transport is not None
        await self._drained_out.wait()  # backpressure: one response ahead of the reader
        buffers: list[Buffer] = []
        for part in parts:
            if self._closed:
                return
            if isinstance(part, FileRegion):
                if buffers:
                    self._transport.writelines(buffers)
                    buffers = []
                send = self._send_copy if self._server.ssl is not None else self._sendfile
                if not await send(part):
                    return
            else:
                buffers.append(part)
        if buffers and not self._closed:
            self._transport.writelines(buffers)

    async def _send_copy(self, region: FileRegion) -> bool:
        """Send ``region`` over TLS, which must see the bytes to encrypt them (as Kafka's
        SSL listeners, no sendfile): read in chunks, each written once the transport has
        sent the one before; False if the connection is gone."""
        assert self._transport is not None
        position, remaining = region.position, region.size
        while remaining:
            await self._drained_out.wait()
            if self._closed:
                return False
            size = min(remaining, _COPY_CHUNK_BYTES)
            data = self._read_region(region, position, size)
            if data is None:
                return False
            self._transport.write(data)
            position += size
            remaining -= size
        return True

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
        return not self._queue and not self._busy

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
        sasl: SaslListener | None = None,
        quotas: ConnectionQuotas | None = None,
        kafka_protocol: bool = False,
        request_quotas: RequestQuotas | None = None,
        backlog: int = 1024,
    ) -> None:
        self.handlers: dict[ApiKey, Handler] = {
            ApiKey.API_VERSIONS: _api_versions,
            ApiKey.SASL_HANDSHAKE: _no_sasl,
            ApiKey.SASL_AUTHENTICATE: _no_sasl,
            **handlers,
        }
        self.sasl = sasl
        """A SASL listener's settings: every connection authenticates first."""
        self.quotas = quotas
        """The broker's connection limits, shared by its listeners (None: no limits)."""
        self.request_quotas = request_quotas
        """``request_percentage`` quotas (KIP-124): requests timed while one is set."""
        self.listener = "PLAINTEXT"
        self.kafka_protocol = kafka_protocol
        """Requests and answers in Kafka's encoding (a Kafka-protocol listener)."""
        self.max_frame_bytes = max_frame_bytes
        self.max_in_flight = max_in_flight
        self.max_idle_s = max_idle_ms / 1000
        self.stall: StallGuard = DISARMED
        """The broker's stall guard, shared by its listeners (broker/stall.py)."""
        self.connections: set[_Connection] = set()
        self.read_buffer = memoryview(bytearray(_READ_BUFFER_BYTES))
        """Every connection reads into this one buffer: the loop hands a connection the
        buffer, reads into it and calls buffer_updated in one step, and the frame decoder
        copies what it keeps, so nothing refers to it between reads. One per connection
        cost 256 KiB each (268 MB for 1,000 idle connections)."""
        self.frame_pool = FramePool(_FRAME_POOL_BYTES)
        """Large frames (a produce of big batches) are read into buffers of their own from
        this pool, shared by the listener's connections: no copy out of ``read_buffer``."""
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.ssl: ssl.SSLContext | None = None
        self._told: dict[tuple[str, str], float] = {}  # (address, event) -> logged at
        self._waiting: collections.deque[tuple[_Connection, asyncio.Transport]] = (
            collections.deque()
        )
        """Connections accepted while this listener's acceptor waits out the connection
        rate: taken in turn (Kafka's acceptor leaves them in the socket's backlog
        meanwhile), at most ``backlog`` of them (past it, closed as they come, as the
        kernel drops a full backlog's connections)."""
        self.backlog = backlog
        self._acceptor: asyncio.TimerHandle | None = None  # set while the acceptor waits
        self._taking: asyncio.Transport | None = None  # ... with this connection in hand
        self.holding: set[asyncio.Transport] = set()
        """Connections of addresses over their rate, held until they are closed."""
        self._stopping = False

    def arrive(self, connection: _Connection, transport: asyncio.Transport) -> None:
        """A new connection, with connection limits set: taken now, or when its turn in
        :attr:`_waiting` comes (unread meanwhile)."""
        if self._stopping:
            transport.abort()
            return
        if self._acceptor is not None or self._waiting:
            if len(self._waiting) >= self.backlog:
                self.tell_throttled(connection.ip, "connection.backlog_full")
                connection.gone = True
                transport.abort()
                return
            connection.waited = True
            transport.pause_reading()
            self._waiting.append((connection, transport))
            return
        self._take(connection, transport)

    def _take(self, connection: _Connection, transport: asyncio.Transport) -> None:
        assert self.quotas is not None
        try:
            wait_ms = self.quotas.take(self.listener)
        except Exception:  # (lost alone: the queue behind it goes on)
            _log.exception("connection.accept_failed", peer=connection.ip)
            connection.gone = True
            transport.abort()
            return
        if not wait_ms:
            self._accept(connection, transport)
            return
        # past max.connection.creation.rate: this one and those after it wait (Kafka's
        # acceptor sleeps with it in hand)
        if not connection.waited:
            connection.waited = True
            transport.pause_reading()
        self.tell_throttled(connection.ip, "connection.delayed", wait_ms=wait_ms)
        self._taking = transport
        self._acceptor = asyncio.get_running_loop().call_later(
            wait_ms / 1000, self._taken, connection, transport
        )

    def _taken(self, connection: _Connection, transport: asyncio.Transport) -> None:
        self._acceptor = self._taking = None
        self._accept(connection, transport)
        while self._waiting and self._acceptor is None:
            following, its_transport = self._waiting.popleft()
            if not following.gone:
                self._take(following, its_transport)

    def _accept(self, connection: _Connection, transport: asyncio.Transport) -> None:
        """One connection's accept; a failure of its own loses it alone, never the
        listener's queue behind it."""
        try:
            connection.accept(transport)
        except Exception:
            _log.exception("connection.accept_failed", peer=connection.ip)
            connection.gone = True
            transport.abort()

    def tell_throttled(self, ip: str, event: str, **fields: int) -> None:
        """Log a connection slowed or refused by a rate, at most once a second per address
        and event: a reconnect storm must not become a log storm."""
        now = time.monotonic()
        if now - self._told.get((ip, event), -2.0) < 1.0:
            return
        if len(self._told) > _TOLD_MAX:  # many addresses: forget the old ones
            self._told = {k: t for k, t in self._told.items() if now - t < 1.0}
        self._told[(ip, event)] = now
        _log.info(event, peer=ip, listener=self.listener, **fields)

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: ssl.SSLContext | None = None,
        listener: str = "PLAINTEXT",
    ) -> int:
        """Listen (with ``tls``: an SSL listener); returns the bound port (port 0: any)."""
        loop = asyncio.get_running_loop()
        self.ssl = tls
        self.listener = listener
        self._server = await loop.create_server(
            lambda: _Connection(self),
            host,
            port,
            ssl=tls,
            ssl_handshake_timeout=_HANDSHAKE_S if tls is not None else None,
            backlog=self.backlog,
        )
        bound = int(self._server.sockets[0].getsockname()[1])
        self._reaper = loop.create_task(self._close_idle())
        _log.info(
            "server.listening",
            host=host,
            port=bound,
            listener=listener,
            tls=tls is not None,
            sasl=list(self.sasl.mechanisms) if self.sasl is not None else None,
        )
        return bound

    async def _close_idle(self) -> None:
        """Close connections silent for ``connections.max.idle.ms`` (Kafka's rule), so
        clients that connect and vanish without a FIN do not hold memory forever."""
        loop = asyncio.get_running_loop()
        period_s = min(max(self.max_idle_s / 10, 0.05), 30.0)
        trimmed_at = loop.time()
        while True:
            await asyncio.sleep(period_s)
            cutoff = loop.time() - self.max_idle_s
            for connection in list(self.connections):
                if connection.idle and connection.last_active < cutoff:
                    connection.close_idle()
            if loop.time() - trimmed_at >= _FRAME_POOL_TRIM_S:
                # the buffers of a burst of large frames, unused since: back to the system
                trimmed_at = loop.time()
                freed = self.frame_pool.trim()
                if freed:
                    _log.debug("listener.frame_pool_trimmed", freed_bytes=freed)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, answer what is in flight (up to ``timeout_s``), close."""
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        self._stopping = True
        if self._acceptor is not None:
            self._acceptor.cancel()
            self._acceptor = None
        # never served: closed with the listener (the one the acceptor holds, those
        # waiting behind it, those held to be closed)
        unserved = [self._taking, *(t for _, t in self._waiting), *self.holding]
        self._taking = None
        self._waiting.clear()
        self.holding.clear()
        for transport in unserved:
            if transport is not None:
                transport.abort()
        connections = list(self.connections)
        try:
            await asyncio.wait_for(asyncio.gather(*(c.drain() for c in connections)), timeout_s)
        except TimeoutError:
            _log.warning("server.stop_timeout", pending_connections=len(connections))
        for connection in connections:
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
