"""A broker's own connection to another broker (DESIGN.md: a broker never imports client).

Used by the controller's channels and by follower fetchers. One request at a time per
connection (the callers serialise), each bounded by a timeout; any failure closes the
connection and is raised as :class:`PeerError`, and the next request reconnects.

Inter-broker requests are sent at this build's highest version of each API, without an
ApiVersions exchange: brokers of one build speak the same versions (Kafka's
``inter.broker.protocol.version`` plays this part once mixed builds exist).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.apis import (
    APIS,
    ApiKey,
    Request,
    SaslAuthenticateRequest,
    SaslHandshakeRequest,
    decode_response,
    encode_request,
)
from protocol.errors import HeadwaterError, MalformedFrameError, MalformedMessageError
from protocol.framing import LENGTH_SIZE, parse_response_header
from protocol.sasl import SaslError, ScramClient, plain_message

__all__ = ["PeerConnection", "PeerError", "PeerKerberos", "PeerLogin", "PeerPool", "PeerTls"]

_MAX_RESPONSE_BYTES = 100 * 1024 * 1024


class PeerError(HeadwaterError):
    """A request to another broker failed (connection, timeout, or a garbled answer)."""


PeerTls = Callable[[], ssl.SSLContext | None]
"""What a connection to another broker's SSL listener speaks TLS with, asked at each
connect: the inter-broker keystore and truststore are dynamic (broker.tls.TlsContexts)."""


class PeerKerberos(Protocol):
    """This broker's GSSAPI login to others (:class:`broker.kerberos.GssapiPeerLogin`)."""

    async def start(self, host: str) -> tuple[Any, bytes]: ...

    async def step(self, machine: Any, answer: bytes) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class PeerLogin:
    """How this broker logs in to another broker's SASL listener."""

    mechanism: str
    username: str
    password: str
    kerberos: PeerKerberos | None = None
    """GSSAPI: this broker's own principal and keytab (no username or password)."""

    def __repr__(self) -> str:  # never the password, in a log or a traceback
        return f"PeerLogin({self.mechanism}, {self.username!r})"


class PeerConnection:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        request_timeout_ms: int = 30_000,
        tls: PeerTls | None = None,
        login: PeerLogin | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._tls = tls  # the inter-broker listener is SSL: its client side
        self._login = login  # the inter-broker listener is SASL: our own login to it
        self._timeout_s = request_timeout_ms / 1000
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._correlation = itertools.count(1)
        self._reauth_at: float | None = None
        """When (loop time) to log in again: the other broker said the session ends
        (KIP-368, connections.max.reauth.ms)."""

    async def request(self, api_key: ApiKey, request: Request, version: int | None = None) -> Any:
        """``request`` at ``version`` (default: this build's highest of the API)."""
        try:
            # asyncio.timeout, not wait_for: no task (and loop passes) per request, which a
            # follower's fetch loop and so every acks=all write would pay
            async with asyncio.timeout(self._timeout_s):
                return await self._exchange(api_key, request, version)
        except (
            OSError,
            TimeoutError,
            EOFError,
            MalformedFrameError,
            MalformedMessageError,
            SaslError,
        ) as exc:
            self.close()
            raise PeerError(f"{APIS[api_key].name} to {self.host}:{self.port}: {exc!r}") from exc
        except BaseException:  # cancelled mid-exchange: its answer would reach the next one
            self.close()
            raise

    async def _exchange(self, api_key: ApiKey, request: Request, version: int | None) -> Any:
        if self._writer is None:
            tls = self._tls() if self._tls is not None else None
            self._reader, self._writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=tls,
                server_hostname=self.host if tls is not None else None,
            )
            if self._login is not None:
                await self._authenticate(self._login)
        elif self._reauth_at is not None and asyncio.get_running_loop().time() >= self._reauth_at:
            assert self._login is not None  # (one request at a time: nothing in between)
            await self._authenticate(self._login)
        return await self._roundtrip(api_key, request, version)

    async def _authenticate(self, login: PeerLogin) -> None:
        """Kafka's SASL exchange, before any other request on the connection."""
        handshake = await self._roundtrip(
            ApiKey.SASL_HANDSHAKE, SaslHandshakeRequest(mechanism=login.mechanism), None
        )
        _check(handshake, f"SaslHandshake ({login.mechanism})")
        self._reauth_at = None
        if login.mechanism == "PLAIN":
            final = await self._sasl(plain_message(login.username, login.password))
            _check(final, "PLAIN")
        elif login.kerberos is not None:
            machine, first = await login.kerberos.start(self.host)
            message: bytes | None = first
            while message is not None:
                final = await self._sasl(message)
                _check(final, "GSSAPI")
                message = await login.kerberos.step(machine, bytes(final.auth_bytes))
        else:
            scram = ScramClient(login.mechanism, login.username, login.password)
            first = await self._sasl(scram.first())
            _check(first, login.mechanism)
            # PBKDF2 (a few ms) in a worker thread: not on the loop that replicates
            proof = await asyncio.to_thread(scram.final, bytes(first.auth_bytes))
            final = await self._sasl(proof)
            _check(final, login.mechanism)
            scram.verify(bytes(final.auth_bytes))
        if final.session_lifetime_ms > 0:  # log in again at 85-95% of it, as Kafka's clients
            self._reauth_at = asyncio.get_running_loop().time() + (
                final.session_lifetime_ms / 1000 * (0.85 + 0.1 * random.random())
            )

    async def _sasl(self, message: bytes) -> Any:
        return await self._roundtrip(
            ApiKey.SASL_AUTHENTICATE, SaslAuthenticateRequest(auth_bytes=message), None
        )

    async def _roundtrip(self, api_key: ApiKey, request: Request, version: int | None) -> Any:
        assert self._reader is not None and self._writer is not None
        correlation_id = next(self._correlation)
        if version is None:
            version = APIS[api_key].max_version
        self._writer.writelines(encode_request(api_key, version, correlation_id, request))
        await self._writer.drain()
        size = int.from_bytes(await self._reader.readexactly(LENGTH_SIZE), "big")
        if size > _MAX_RESPONSE_BYTES:
            raise MalformedFrameError(f"a {size}-byte response")
        payload = memoryview(await self._reader.readexactly(size))
        got, body = parse_response_header(payload)
        if got != correlation_id:
            raise MalformedFrameError(f"correlation id {got}, expected {correlation_id}")
        return decode_response(APIS[api_key], version, body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class PeerPool:
    """One connection per peer broker, used by one request at a time. Each kind of
    traffic has its own pool (the transaction markers, KIP-890's checks): a check must
    not wait behind a marker write, which waits for its replicas."""

    def __init__(
        self,
        address_of: Callable[[int], tuple[str, int] | None],
        *,
        request_timeout_ms: int = 30_000,
        tls: PeerTls | None = None,
        login: PeerLogin | None = None,
    ) -> None:
        self._address_of = address_of  # a broker's inter-broker listener, if known
        self._timeout_ms = request_timeout_ms
        self._tls = tls
        self._login = login
        self._peers: dict[tuple[str, int], tuple[PeerConnection, asyncio.Lock]] = {}

    async def request(self, broker_id: int, api_key: ApiKey, request: Request) -> Any:
        address = self._address_of(broker_id)
        if address is None:
            raise PeerError(f"broker {broker_id} has no inter-broker listener known")
        peer = self._peers.get(address)
        if peer is None:
            connection = PeerConnection(
                *address, request_timeout_ms=self._timeout_ms, tls=self._tls, login=self._login
            )
            peer = self._peers[address] = (connection, asyncio.Lock())
        async with peer[1]:
            return await peer[0].request(api_key, request)

    def close(self) -> None:
        for peer, _ in self._peers.values():
            peer.close()
        self._peers.clear()


def _check(response: Any, what: str) -> None:
    if response.error_code:
        raise SaslError(
            f"SASL login ({what}) refused: {response.error_message or response.error_code}; "
            "check this broker's username/password in sasl.jaas.config"
        )
