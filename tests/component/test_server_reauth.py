"""Re-authentication (Kafka's KIP-368, connections.max.reauth.ms) on an in-process SASL
listener: the session's end is told at login, the client logs in again on the same
connection before it (its requests made meanwhile held, then answered), a connection that
does not is closed at its next request (the monotonic clock decides: a wall clock stepped
back does not lengthen a session), and a re-authentication may change neither the
principal nor the mechanism. Without sessions that end, or within a second of the last
login, a SaslHandshake is an ordinary request, refused (Kafka's rules).

Sessions here are 600 ms, so the broker's one-second minimum between logins is lowered
for these tests (one test keeps it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import broker.sasl
from broker.sasl import Authenticator, SaslListener
from broker.server import PEER_PRINCIPAL, BrokerServer
from client.connection import BrokerConnection
from client.security import SaslLogin
from protocol.apis import (
    ApiKey,
    ApiVersionsRequest,
    MetadataRequest,
    MetadataResponse,
    SaslHandshakeRequest,
)
from protocol.errors import IllegalSaslStateError, NetworkError, SaslAuthenticationFailedError
from protocol.framing import RequestHeader
from tests.component.test_server_sasl import _Store

_SESSION_MS = 600
BOB = SaslLogin("PLAIN", "bob", "bob-pw")


async def _metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    return MetadataResponse(cluster_id=PEER_PRINCIPAL.get())


@pytest.fixture(autouse=True)
def quick_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker.sasl, "_MIN_REAUTH_INTERVAL_MS", 0)


async def _listening(session_ms: int) -> BrokerServer:
    listener = SaslListener(
        "SASL_PLAINTEXT",
        ("PLAIN", "SCRAM-SHA-256"),
        {"bob": "bob-pw", "carol": "carol-pw"},
        _Store(),  # type: ignore[arg-type]
        0.0,
        None,
        session_ms,
    )
    return BrokerServer({ApiKey.METADATA: _metadata}, sasl=listener)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = await _listening(_SESSION_MS)
    yield await server.start()
    await server.stop()


@pytest.fixture
def logins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each login the listener took (first ones and re-authentications)."""
    taken: list[str] = []
    real = Authenticator._in

    def counted(self: Authenticator, username: str, *args: Any) -> None:
        real(self, username, *args)
        taken.append(username)

    monkeypatch.setattr(Authenticator, "_in", counted)
    return taken


async def test_a_client_logs_in_again_before_its_session_ends_and_carries_on(
    port: int, logins: list[str]
) -> None:
    async with BrokerConnection("127.0.0.1", port, login=BOB) as conn:
        loop = asyncio.get_running_loop()
        assert conn._reauth_at is not None  # told at login: 85-95% of the session
        assert 0.8 * _SESSION_MS / 1000 < conn._reauth_at - loop.time() <= _SESSION_MS / 1000
        answered: list[str] = []
        end = loop.time() + 3 * _SESSION_MS / 1000
        while loop.time() < end:  # a burst of pipelined requests now and then
            burst = [conn.request(ApiKey.METADATA, MetadataRequest()) for _ in range(10)]
            answered += [r.cluster_id for r in await asyncio.gather(*burst)]
            await asyncio.sleep(0.05)
        assert set(answered) == {"User:bob"}
        assert conn.connected
    assert len(logins) >= 3 and set(logins) == {"bob"}


async def test_a_connection_that_does_not_log_in_again_is_closed_at_its_next_request(
    port: int,
) -> None:
    for late in (ApiKey.METADATA, ApiKey.API_VERSIONS):  # any request but a login
        async with BrokerConnection("127.0.0.1", port, login=BOB) as conn:
            conn._reauth_at = None  # a client without KIP-368 (Kafka's SaslAuthenticate v0)
            await conn.request(ApiKey.METADATA, MetadataRequest())
            await asyncio.sleep(_SESSION_MS / 1000 + 0.1)
            with pytest.raises(NetworkError):
                asked = MetadataRequest() if late == ApiKey.METADATA else ApiVersionsRequest()
                await conn.request(late, asked)
    async with BrokerConnection("127.0.0.1", port, login=BOB) as conn:  # the listener serves on
        assert (await conn.request(ApiKey.METADATA, MetadataRequest())).cluster_id == "User:bob"


@pytest.mark.parametrize(
    ("again", "error", "why"),
    [
        (
            SaslLogin("PLAIN", "carol", "carol-pw"),
            SaslAuthenticationFailedError,
            "keeps its principal",
        ),
        (
            SaslLogin("SCRAM-SHA-256", "alice", "alice-pw"),
            IllegalSaslStateError,
            "mechanism of the first login \\(PLAIN\\)",
        ),
        (SaslLogin("PLAIN", "bob", "wrong"), SaslAuthenticationFailedError, "invalid credentials"),
    ],
)
async def test_a_re_authentication_that_changes_who_or_how_closes_the_connection(
    port: int, again: SaslLogin, error: type, why: str
) -> None:
    async with BrokerConnection("127.0.0.1", port, login=BOB) as conn:
        with pytest.raises(error, match=why):
            await conn._authenticate(again)
        with pytest.raises(NetworkError):
            await conn.request(ApiKey.METADATA, MetadataRequest())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
async def test_a_broker_logs_in_again_to_another(
    port: int, logins: list[str], mechanism: str
) -> None:
    """The inter-broker side (PeerConnection: followers' fetchers, the controller's
    channel): one connection kept over several sessions."""
    from broker.network import PeerConnection, PeerLogin

    user, password = ("bob", "bob-pw") if mechanism == "PLAIN" else ("alice", "alice-pw")
    peer = PeerConnection("127.0.0.1", port, login=PeerLogin(mechanism, user, password))
    try:
        for _ in range(12):
            answer = await peer.request(ApiKey.METADATA, MetadataRequest())
            assert answer.cluster_id == f"User:{user}"
            await asyncio.sleep(_SESSION_MS / 4000)
    finally:
        peer.close()
    assert len(logins) >= 3 and set(logins) == {user}


async def test_a_wall_clock_stepped_back_does_not_lengthen_a_session(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with BrokerConnection("127.0.0.1", port, login=BOB) as conn:
        conn._reauth_at = None  # a client that does not re-authenticate
        real = broker.sasl._wall_ms
        monkeypatch.setattr(broker.sasl, "_wall_ms", lambda: real() - 3_600_000)
        await asyncio.sleep(_SESSION_MS / 1000 + 0.2)
        with pytest.raises(NetworkError):
            await conn.request(ApiKey.METADATA, MetadataRequest())


@pytest.mark.parametrize(("session_ms", "min_interval_ms"), [(0, 0), (60_000, 1000)])
async def test_a_handshake_that_may_not_start_a_re_authentication_is_refused_and_harmless(
    monkeypatch: pytest.MonkeyPatch, session_ms: int, min_interval_ms: int
) -> None:
    # sessions that do not end (Kafka's default), or a login less than a second ago
    monkeypatch.setattr(broker.sasl, "_MIN_REAUTH_INTERVAL_MS", min_interval_ms)
    server = await _listening(session_ms)
    port = await server.start()
    try:
        async with BrokerConnection("127.0.0.1", port, login=BOB) as conn:
            with pytest.raises(IllegalSaslStateError, match="already authenticated"):
                await conn.request(ApiKey.SASL_HANDSHAKE, SaslHandshakeRequest(mechanism="PLAIN"))
            answer = await conn.request(ApiKey.METADATA, MetadataRequest())  # still open
            assert answer.cluster_id == "User:bob"
    finally:
        await server.stop()
