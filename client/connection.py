"""One connection to one broker: version negotiation, pipelined requests, ordered answers.

Every connection starts with ApiVersions (v0, which every broker speaks) and then uses,
per API, the highest version both sides speak. Requests may be pipelined; the broker
answers in order, so responses are matched to the oldest request in flight, and a
correlation id that does not match closes the connection (the stream can no longer be
trusted). Closing fails every request still waiting, with the cause attached.

Answers are read by a :class:`asyncio.BufferedProtocol` (no reader task): the socket is
read into one buffer per connection, :class:`~protocol.framing.FrameDecoder` cuts the
frames, and each answer settles its request's future inside the read callback (a
StreamReader copied a 1 MB Fetch answer twice more and cost two more loop passes).

Two ways to send: ``await request(...)``, and ``send_now(..., on_answer)``, which writes
at once and calls ``on_answer`` from that read callback. The producer and the consumer's
fetches use the second: no task and no awaiting frame per request, and the caller's
follow-up (a retry, the next Fetch, waking the user) runs in the pass that read the answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

from client.errors import TlsError
from client.kerberos import GssapiClient
from client.security import SaslLogin, TokenProvider
from protocol.apis import (
    APIS,
    Api,
    ApiKey,
    ApiVersionRange,
    ApiVersionsRequest,
    SaslAuthenticateRequest,
    SaslHandshakeRequest,
    decode_response,
    encode_request,
    negotiate,
)
from protocol.errors import (
    ApiError,
    IllegalSaslStateError,
    NetworkError,
    RequestTimedOutError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
    UnsupportedVersionError,
    error_for_code,
)
from protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    FramePool,
    parse_response_header,
)
from protocol.kerberos import GSSAPI
from protocol.oauthbearer import KVSEP, bearer_message
from protocol.sasl import SaslError, ScramClient, plain_message

__all__ = ["BrokerConnection", "OnAnswer"]

_log = logging.getLogger("headwater.client.connection")

OnAnswer = Callable[[Any, BaseException | None], None]
"""``on_answer(response, None)`` or ``on_answer(None, error)``: see ``send_now``."""

CLIENT_SOFTWARE = "headwater-python"
CLIENT_VERSION = "0.1.0"


_READ_BUFFER_BYTES = 256 * 1024
_FRAME_POOL_BYTES = 16 * 1024 * 1024
"""The most a connection's pool keeps of the buffers large responses arrived in (each
reused once nothing refers to it): a few fetch responses of a few MiB; more are copied."""
_FRAME_POOL_TRIM_S = 60.0
"""How often a connection's pool lets go of buffers no frame had since the last time (a
burst of large fetch responses does not hold its memory for as long as the connection
lives)."""
_AFTER_LARGE_READ_BYTES = 4096
"""The read after a large frame: short, so that if another large frame follows, only its
head is copied out of the read buffer and its body goes straight into its own."""


class _Protocol(asyncio.BufferedProtocol):
    """The connection's transport callbacks: reads go to :meth:`BrokerConnection._received`,
    writability (the transport's high-water mark) to ``writable``."""

    def __init__(self, connection: BrokerConnection) -> None:
        self._connection = connection
        self._buffer = memoryview(bytearray(_READ_BUFFER_BYTES))
        self._direct: memoryview | None = None
        self._after_large = False  # a read finished a large frame: the next one is short
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        # a large response (a fetch): the rest of it straight into a buffer of its own
        self._direct = self._connection._decoder.read_into()
        if self._direct is not None:
            return self._direct
        if self._after_large:  # most likely another: its head, then its body straight in
            self._after_large = False
            return self._buffer[:_AFTER_LARGE_READ_BYTES]
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct is not None:
            self._direct = None
            self._after_large = self._connection._filled(nbytes)
        else:
            self._connection._received(self._buffer[:nbytes])

    def eof_received(self) -> bool:
        return False  # the broker closed its side: close ours (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()  # nobody waits on a dead connection
        if not self.lost.done():
            self.lost.set_result(None)
        self._connection._lost(exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _InFlight:
    """A request waiting for its answer: an awaiting caller's future, or a callback."""

    __slots__ = ("api", "correlation_id", "future", "on_answer", "sent_at", "timer", "version")

    def __init__(
        self,
        correlation_id: int,
        api: Api,
        version: int,
        future: asyncio.Future[Any] | None,
        on_answer: OnAnswer | None = None,
        *,
        sent_at: float = 0.0,
    ) -> None:
        self.correlation_id = correlation_id
        self.api = api
        self.version = version
        self.future = future
        self.on_answer = on_answer
        self.sent_at = sent_at  # the loop's time
        self.timer: asyncio.TimerHandle | None = None

    def settle(self, response: Any, error: BaseException | None) -> None:
        """Hand the outcome over; a callback's own failure is logged, never raised into
        the reading (one caller's bug must not end everybody's connection)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.on_answer is not None:
            try:
                self.on_answer(response, error)
            except Exception:
                _log.exception("the callback of a %s request failed", self.api.name)
            return
        future = self.future
        assert future is not None
        if future.done():  # a caller that gave up (cancelled): its answer was still read
            return
        if error is not None:
            future.set_exception(error)
            future.exception()  # its caller may be gone (cancelled): nothing to log
        else:
            future.set_result(response)


class BrokerConnection:
    """Open with :meth:`connect`; :meth:`request` sends one request and awaits its answer."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        request_timeout_ms: int = 30_000,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        tls: ssl.SSLContext | None = None,
        login: SaslLogin | None = None,
        client_id: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id  # named once, at ApiVersions (the broker's quotas use it)
        self.tls = tls  # an SSL listener: TLS, the broker's certificate checked
        self.login = login  # a SASL listener: logged in before any other request
        self.request_timeout_ms = request_timeout_ms
        self.max_frame_bytes = max_frame_bytes
        self.versions: dict[int, ApiVersionRange] = {}
        self._ids = itertools.count(1)
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        self._reauth_at: float | None = None
        """When (loop time) to log in again: the broker said the session ends (KIP-368)."""
        self._held: list[tuple[list[Any], _InFlight | None]] | None = None
        """Requests made while a re-authentication is under way: written after it (the
        broker closes a connection sending anything else in its middle)."""
        self._reauthenticating: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._pool = FramePool(_FRAME_POOL_BYTES)
        self._decoder = FrameDecoder(max_frame_bytes, self._pool)
        self._trimming: asyncio.TimerHandle | None = None  # while the pool holds buffers
        self._closed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"BrokerConnection({self.host}:{self.port})"

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._closed is None

    def waiting_since(self) -> float | None:
        """When (the loop's time) the oldest request still unanswered was sent; None if
        every request is answered. A broker that stops answering (paused, overloaded)
        shows here long before its requests time out."""
        return self._in_flight[0].sent_at if self._in_flight else None

    @property
    def writable(self) -> bool:
        """Whether the transport is below its high-water mark (``send_now`` does not wait
        for it: a caller that expects no answer checks it)."""
        return self._protocol is not None and self._protocol.writable.is_set()

    async def connect(self, timeout_s: float = 10.0) -> None:
        try:
            # asyncio.timeout, not wait_for: on 3.11, wait_for cancelled just as the
            # connection completes drops the new stream without closing it
            async with asyncio.timeout(timeout_s):
                transport, protocol = await asyncio.get_running_loop().create_connection(
                    lambda: _Protocol(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                )
        except ssl.SSLError as exc:
            raise TlsError(
                f"TLS with broker {self.host}:{self.port} failed ({exc.reason or exc}); check "
                "that it is an SSL listener, that the CA of the ssl_context signed its "
                "certificate and that the certificate names the host connected to"
            ) from None
        except (OSError, TimeoutError) as exc:
            raise NetworkError(
                f"cannot connect to broker {self.host}:{self.port} ({exc or 'timed out'}); "
                f"check --bootstrap-server and that the broker is running"
            ) from None
        self._transport = transport
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        try:
            response = await self._send(
                APIS[ApiKey.API_VERSIONS],
                0,
                ApiVersionsRequest(
                    client_software_name=CLIENT_SOFTWARE,
                    client_software_version=CLIENT_VERSION,
                    client_id=self.client_id,
                ),
            )
        except TlsError as exc:
            # the peer's TLS ended it: a listener that requires client certificates says
            # so (an alert) to a client without one, once the handshake is done
            raise TlsError(
                f"{exc.message}; if the listener requires client certificates "
                "(ssl.client.auth), give the ssl_context one (create_ssl_context(certfile=...))"
            ) from None
        except NetworkError as exc:
            # a TLS listener drops a plaintext hello at once, and one that requires client
            # certificates may drop a client without one; so may a broker going down: a
            # hint, still a retriable NetworkError
            hint = (
                "if the listener requires client certificates (ssl.client.auth), give the "
                "ssl_context one (create_ssl_context(certfile=...))"
                if self.tls is not None
                else f"if {self.host}:{self.port} is an SSL listener, connect with "
                "security_protocol='SSL' and an ssl_context"
            )
            hinted = NetworkError(f"{exc.message}; {hint}")
            hinted.tls_hint = True  # type: ignore[attr-defined]
            raise hinted from None
        self.versions = {r.api_key: r for r in response.api_keys}
        if self.login is not None:
            await self._authenticate(self.login)

    async def _authenticate(self, login: SaslLogin) -> None:
        """Kafka's SASL exchange: SaslHandshake naming the mechanism, then its messages in
        SaslAuthenticate requests. A refusal is not retriable (the broker closes the
        connection after it); a connection lost on the way is a NetworkError."""
        where = f"broker {self.host}:{self.port}"
        if ApiKey.SASL_HANDSHAKE not in self.versions:
            raise UnsupportedSaslMechanismError(f"{where} does not speak SASL")
        try:
            await self._login_request(
                ApiKey.SASL_HANDSHAKE, SaslHandshakeRequest(mechanism=login.mechanism)
            )
            if login.mechanism == "PLAIN":
                await self._sasl(plain_message(login.username, login.password))
            elif login.token_provider is not None:
                await self._bearer(login.token_provider)
            elif login.mechanism == GSSAPI:
                await self._kerberos(login)
            else:
                scram = ScramClient(
                    login.mechanism,
                    login.username,
                    login.password,
                    extensions={"tokenauth": "true"} if login.token_auth else None,
                )
                challenge = await self._sasl(scram.first())
                # PBKDF2 (a few ms) in a worker thread, not on the application's loop
                proof = await asyncio.to_thread(scram.final, challenge)
                scram.verify(await self._sasl(proof))
        except UnsupportedSaslMechanismError as exc:
            raise UnsupportedSaslMechanismError(
                f"{where}: {exc.message}; set sasl_mechanism to one it offers"
            ) from None
        except SaslAuthenticationFailedError as exc:
            check = (
                "the token sasl_oauth_token_provider gives"
                if login.token_provider is not None
                else "the Kerberos credentials and the brokers' principal"
                if login.mechanism == GSSAPI
                else "sasl_plain_username and sasl_plain_password"
            )
            raise SaslAuthenticationFailedError(f"{where}: {exc.message}; check {check}") from None
        except IllegalSaslStateError as exc:
            raise IllegalSaslStateError(
                f"{where}: {exc.message}; is it a SASL listener (SASL_PLAINTEXT, SASL_SSL)?"
            ) from None
        except SaslError as exc:
            self.close()
            raise SaslAuthenticationFailedError(f"{where}: {exc}") from None

    async def _bearer(self, provider: TokenProvider) -> None:
        """OAUTHBEARER: the provider's token; a broker refusing it answers with an error
        challenge (RFC 7628), acknowledged, and its refusal then says why."""
        try:
            token = await provider.token()
        except Exception as exc:  # its own failure (an identity provider down): said so
            raise SaslError(
                f"sasl_oauth_token_provider.token() failed: {type(exc).__name__}: {exc}"
            ) from None
        extensions = getattr(provider, "extensions", None)
        message = bearer_message(token, extensions=extensions() if extensions else None)
        challenge = await self._sasl(message)
        if challenge:
            await self._sasl(KVSEP)  # the broker's refusal (SASL_AUTHENTICATION_FAILED)
            raise SaslError(f"the broker refused the token: {challenge.decode(errors='replace')}")

    async def _kerberos(self, login: SaslLogin) -> None:
        """GSSAPI: the context tokens, then the security layer (none); the GSS-API calls
        in a worker thread (they may ask the KDC for the broker's ticket)."""
        gss = await asyncio.to_thread(
            GssapiClient,
            login.kerberos_service_name,
            login.kerberos_domain_name or self.host,
            login.kerberos_keytab,
            login.kerberos_principal,
        )
        message: bytes | None = await asyncio.to_thread(gss.first)
        while message is not None:
            answer = await self._sasl(message)
            message = await asyncio.to_thread(gss.step, answer)

    async def _sasl(self, message: bytes) -> bytes:
        response = await self._login_request(
            ApiKey.SASL_AUTHENTICATE, SaslAuthenticateRequest(auth_bytes=message)
        )
        if response.session_lifetime_ms > 0:  # the last step's: when the session ends
            assert self._loop is not None
            # at 85-95% of it (Kafka's clients: not every connection at once)
            self._reauth_at = self._loop.time() + response.session_lifetime_ms / 1000 * (
                0.85 + 0.1 * random.random()
            )
        return bytes(response.auth_bytes)

    async def _login_request(self, api_key: ApiKey, request: Any) -> Any:
        """A SASL step: written now, even during a re-authentication (its own steps)."""
        return await self._send(APIS[api_key], self.version_for(api_key), request, login=True)

    def _reauthenticate(self) -> None:
        """The session is about to end: log in again on this connection (KIP-368), the
        requests made meanwhile held until it is done; a failure closes the connection
        (its requests fail as on any close, and are retried on a new one)."""
        assert self.login is not None and self._loop is not None
        self._reauth_at = None
        self._held = []

        async def again() -> None:
            try:
                await self._authenticate(self.login)  # type: ignore[arg-type]
            except Exception as exc:  # the held fail with it (close settles them)
                if self._closed is not None:
                    return  # closed meanwhile, for its own reason: that is the story
                _log.warning("re-authentication to %s:%s failed: %s", self.host, self.port, exc)
                self.close(exc if isinstance(exc, ApiError) else NetworkError(f"{self}: {exc!r}"))
                return
            held, self._held = self._held or [], None
            if self._closed is not None or self._transport is None:
                return  # close() failed what was in flight; the held were never sent
            for parts, waiting in held:
                self._write(parts, waiting)

        self._reauthenticating = self._loop.create_task(again())

    def _write(self, parts: list[Any], waiting: _InFlight | None, *, login: bool = False) -> None:
        """Write a request (its answer awaited by ``waiting``, if any); during a
        re-authentication, after it, unless it is one of its steps."""
        if not login:
            if self._reauth_at is not None and self._held is None:
                assert self._loop is not None
                if self._loop.time() >= self._reauth_at:
                    self._reauthenticate()
            if self._held is not None:
                self._held.append((parts, waiting))
                return
        assert self._transport is not None
        # written first: a transport already gone raises here, with nothing left waiting
        # (nothing can be answered before this returns)
        self._transport.writelines(parts)
        if waiting is not None:
            self._in_flight.append(waiting)

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

    def send_now(
        self,
        api_key: ApiKey,
        request: Any,
        on_answer: OnAnswer | None,
        *,
        timeout_ms: int | None = None,
    ) -> None:
        """Write ``request`` now, with no await and no task; ``on_answer`` runs inside the
        read callback that brings the answer (a request-level error code comes as the
        error), when the connection closes (with its cause), or after ``timeout_ms``
        (request.timeout.ms by default; the connection is closed then, as in
        :meth:`request`). With ``on_answer`` None no answer is expected (acks=0).

        One loop pass less each way than :meth:`request`: the producer's and the
        consumer's hot paths. The transport's high-water mark is not waited for; the
        caller bounds what it has in flight. Raises :class:`NetworkError` if closed.
        """
        if self._closed is not None or self._transport is None or self._loop is None:
            raise NetworkError(f"connection to {self.host}:{self.port} is closed") from self._closed
        version = self.version_for(api_key)
        api = APIS[api_key]
        correlation_id = next(self._ids) & 0x7FFFFFFF
        parts = encode_request(api.key, version, correlation_id, request)
        waiting = None
        if on_answer is not None:  # nothing can be answered before this returns
            waiting = _InFlight(
                correlation_id, api, version, None, on_answer, sent_at=self._loop.time()
            )
            timeout_ms = self.request_timeout_ms if timeout_ms is None else timeout_ms
            waiting.timer = self._loop.call_later(
                timeout_ms / 1000, self._timed_out, waiting, timeout_ms
            )
        try:
            self._write(parts, waiting)
        except (OSError, RuntimeError) as exc:  # the transport went before we heard of it
            if waiting is not None and waiting.timer is not None:
                waiting.timer.cancel()  # the raise below is its one outcome
            error = NetworkError(f"lost the connection to {self.host}:{self.port} ({exc})")
            self.close(error)
            raise error from None

    def _timed_out(self, waiting: _InFlight, timeout_ms: int) -> None:
        waiting.timer = None
        # the answer may still come: the stream position is unknown, so start over
        self.close(
            RequestTimedOutError(
                f"{waiting.api.name} to {self.host}:{self.port} got no answer within "
                f"{timeout_ms} ms (request.timeout.ms)"
            )
        )

    async def _send(
        self,
        api: Api,
        version: int,
        request: Any,
        *,
        expect_response: bool = True,
        timeout_ms: int | None = None,
        login: bool = False,
    ) -> Any:
        # the frame is queued whole before the first await: a caller cancelled at any
        # await leaves no half request behind (Cluster relies on it: no task per request)
        if self._closed is not None or self._transport is None:
            raise NetworkError(f"connection to {self.host}:{self.port} is closed") from self._closed
        correlation_id = next(self._ids) & 0x7FFFFFFF
        parts = encode_request(api.key, version, correlation_id, request)
        loop = asyncio.get_running_loop()
        timeout_ms = self.request_timeout_ms if timeout_ms is None else timeout_ms
        now = loop.time()
        deadline = now + timeout_ms / 1000  # the write counts too
        future: asyncio.Future[Any] | None = None
        waiting = None
        if expect_response:
            future = loop.create_future()
            waiting = _InFlight(correlation_id, api, version, future, sent_at=now)
        self._write(parts, waiting, login=login)
        assert self._protocol is not None
        writable = self._protocol.writable
        try:
            if not writable.is_set():
                # past the transport's high-water mark: wait for the broker to read, but
                # a broker that stops reading must not hold us here forever
                async with asyncio.timeout(max(deadline - loop.time(), 0)):
                    await writable.wait()
                if self._closed is not None:
                    raise NetworkError(f"{self}: {self._closed}") from self._closed
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

    # --- reading (from _Protocol) ------------------------------------------------------

    def _received(self, data: memoryview) -> None:
        self._answers(self._decoder.feed, data)

    def _filled(self, nbytes: int) -> bool:
        """``nbytes`` read into the large frame's own buffer; True: that finished it."""
        return self._answers(self._decoder.filled, nbytes)

    def _answers(self, read: Callable[[Any], list[memoryview]], data: Any) -> bool:
        try:
            payloads = read(data)
            for payload in payloads:
                if self._closed is not None:
                    break
                self._answer(payload)
            if self._trimming is None and self._pool.held_bytes and self._loop is not None:
                self._trimming = self._loop.call_later(_FRAME_POOL_TRIM_S, self._trim_pool)
            return bool(payloads)
        except ApiError as exc:  # a frame over max_frame_bytes, a broken stream
            self.close(exc)
        except Exception as exc:  # anything else ends the stream too: never a silent reader
            self.close(NetworkError(f"{self}: reading failed ({exc!r})"))
        return False

    def _answer(self, payload: memoryview) -> None:
        correlation_id, body = parse_response_header(payload)
        if not self._in_flight:
            raise NetworkError(f"{self} sent a response nobody asked for")
        head = self._in_flight[0]
        if head.correlation_id != correlation_id:  # raised while queued: close() settles it
            raise NetworkError(
                f"{self} answered correlation id {correlation_id}, expected {head.correlation_id}"
            )
        self._in_flight.popleft()
        try:
            response = decode_response(head.api, head.version, body)
        except ApiError as exc:
            head.settle(None, exc)
            return
        except Exception as exc:  # the stream cannot be trusted: this request fails too
            head.settle(None, NetworkError(f"{self}: an answer did not decode ({exc!r})"))
            raise
        if head.on_answer is not None and response.error_code:
            head.settle(None, error_for_code(response.error_code, response.error_message))
        else:
            head.settle(response, None)

    def _trim_pool(self) -> None:
        """Let go of the pooled buffers no frame had since the last trim; again later
        while it holds any (what a steady stream of large answers uses stays)."""
        self._trimming = None
        if self._closed is None:
            self._pool.trim()
            if self._pool.held_bytes and self._loop is not None:
                self._trimming = self._loop.call_later(_FRAME_POOL_TRIM_S, self._trim_pool)

    def _lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ssl.SSLError):  # the peer's TLS refused us (an alert)
            self.close(TlsError(f"{self} ended TLS: {exc.reason or exc}"))
            return
        why = type(exc).__name__ if exc is not None else "EOF"
        self.close(NetworkError(f"{self} closed the connection ({why})"))

    def close(self, cause: BaseException | None = None) -> None:
        """Close; every request still waiting fails with ``cause`` (or NETWORK_EXCEPTION)."""
        if self._closed is not None:
            return
        self._closed = cause or NetworkError(f"connection to {self.host}:{self.port} closed")
        self._decoder.discard()  # (a response cut off by the close)
        if self._trimming is not None:
            self._trimming.cancel()  # (its callback would keep the connection alive)
            self._trimming = None
        held, self._held = self._held or [], None
        waiting = [*self._in_flight, *(w for _parts, w in held if w is not None)]
        self._in_flight.clear()
        for each in waiting:
            each.settle(None, NetworkError(f"{self}: {self._closed}") if cause is None else cause)
        if self._transport is not None:
            if cause is None:
                self._transport.close()  # ours to end: what is buffered still goes out
            else:
                # a failure: bytes a stalled peer will never read must not keep the
                # transport (and anyone waiting to write) waiting
                self._transport.abort()

    async def __aenter__(self) -> BrokerConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        if self._protocol is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.shield(self._protocol.lost)
