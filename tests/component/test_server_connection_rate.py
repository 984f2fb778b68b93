"""Connection rates in the listener (KIP-612), on real sockets: past
``max.connection.creation.rate`` a new connection is accepted but not read until its turn,
and the ones after it wait behind it, in order; none is refused. An address over its
``connection_creation_rate`` quota gets no answer and is closed after its throttle time,
while the connections it already has, and other clients, are served throughout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker.config import base_of
from broker.connection_quotas import NO_RATE, ConnectionQuotas
from broker.server import BrokerServer
from client.connection import BrokerConnection
from protocol.apis import ApiKey, MetadataRequest, MetadataResponse
from protocol.errors import NetworkError
from protocol.framing import RequestHeader


def _metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    return MetadataResponse(cluster_id="served")


class _Settings(dict[str, Any]):
    """The settings by name; a listener's own limit not set is none (BrokerConfig's)."""

    def __missing__(self, name: str) -> Any:
        base = base_of(name)  # a listener's own limit not set: the broker-wide one's,
        if base is not None:  # none for the inter-broker listener (BrokerConfig's)
            return NO_RATE if name.startswith("listener.name.internal.") else self[base]
        raise KeyError(name)


def _config(**settings: Any) -> dict[str, Any]:
    return _Settings(
        {
            "max.connections": NO_RATE,
            "max.connections.per.ip": NO_RATE,
            "max.connections.per.ip.overrides": "",
            "max.connection.creation.rate": NO_RATE,
            # two one-second windows: a burst of one second's worth, then the rate
            "quota.window.num": 2,
            "quota.window.size.seconds": 1,
            **settings,
        }
    )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[BrokerServer] = []

    async def start(config: dict[str, Any], ip_rates: dict[str, float] | None = None) -> int:
        rates = ip_rates or {}
        quotas = ConnectionQuotas(config.__getitem__, "INTERNAL", ip_rate=rates.get)
        server = BrokerServer({ApiKey.METADATA: _metadata}, quotas=quotas)
        servers.append(server)
        return await server.start(listener="EXTERNAL")

    yield start
    for server in servers:
        await server.stop()


async def _served(port: int) -> float:
    """Connect, ask once; when the answer came (monotonic)."""
    async with BrokerConnection("127.0.0.1", port, request_timeout_ms=20_000) as conn:
        answer = await conn.request(ApiKey.METADATA, MetadataRequest(topics=[]))
        assert answer.cluster_id == "served"
        return time.monotonic()


async def test_connections_past_the_broker_rate_wait_their_turn_and_are_all_served(
    serve: Callable[..., Any],
) -> None:
    """max.connection.creation.rate=2: two go at once (the burst of the first window),
    the third waits half a second, the fourth behind it; each is served in the end."""
    port = await serve(_config(**{"max.connection.creation.rate": 2}))
    started = time.monotonic()
    first = await asyncio.gather(_served(port), _served(port))
    later = [asyncio.create_task(_served(port)) for _ in range(2)]
    done, _ = await asyncio.wait(later, timeout=0.3)
    assert not done  # accepted, but not read yet
    answered = sorted(await asyncio.gather(*later))
    assert max(first) - started < answered[0] - started
    assert answered[0] - started >= 0.45  # (3/1 s - 2) / 2 * 1 s: half a second
    assert answered[1] - started >= 0.9  # taken after the third's wait: its own too


async def test_an_address_over_its_quota_is_closed_unanswered_and_others_are_served(
    serve: Callable[..., Any],
) -> None:
    """connection_creation_rate=1 for 127.0.0.1: its first connection is served; its
    second is held (no answer) and closed after its throttle time; the first stays
    served meanwhile."""
    port = await serve(_config(), {"127.0.0.1": 1})
    async with BrokerConnection("127.0.0.1", port, request_timeout_ms=20_000) as kept:
        assert (await kept.request(ApiKey.METADATA, MetadataRequest(topics=[]))).cluster_id
        started = time.monotonic()
        held = asyncio.create_task(_served(port))
        done, _ = await asyncio.wait([held], timeout=0.3)
        assert not done
        # the connection it has is served while its new one is held
        assert (await kept.request(ApiKey.METADATA, MetadataRequest(topics=[]))).cluster_id
        with pytest.raises(NetworkError):
            await held  # closed, never answered
        assert time.monotonic() - started >= 0.45  # (2/1 s - 1) / 1 * 1 s, capped at 1 s


async def test_stop_closes_the_connection_the_acceptor_waits_with_and_those_behind(
    serve: Callable[..., Any],
) -> None:
    """From a review: the connection the acceptor held in its wait was left open, unread,
    by a stopped listener (and its transport leaked)."""
    config = _config(**{"max.connection.creation.rate": 1})
    server = BrokerServer(
        {ApiKey.METADATA: _metadata}, quotas=ConnectionQuotas(config.__getitem__, "INTERNAL")
    )
    port = await server.start(listener="EXTERNAL")
    assert await _served(port)  # the first: at once
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await asyncio.sleep(0.1)  # the acceptor waits with the first, the second behind it
    await server.stop(timeout_s=1.0)
    await _all_closed(held)  # a stopped listener closes what it accepted


async def test_a_connection_whose_accept_fails_is_lost_alone(serve: Callable[..., Any]) -> None:
    """From a review: one accept raising stalled the listener's queue for good (every
    later connection queued, unread). Only that connection is lost now."""
    config = _config(**{"max.connection.creation.rate": 1})
    failures = iter([None, None, RuntimeError("injected")])  # the third one's accept fails

    def ip_rate(ip: str) -> float | None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return None

    await _the_third_is_lost_alone(
        ConnectionQuotas(config.__getitem__, "INTERNAL", ip_rate=ip_rate)
    )


async def test_past_the_backlog_waiting_connections_are_closed_as_they_come(
    serve: Callable[..., Any],
) -> None:
    """socket.listen.backlog.size bounds the connections waiting their turn (Kafka's
    acceptor leaves them in a backlog of that size): one more is closed at once, not
    held; those waiting are served in turn."""
    config = _config(**{"max.connection.creation.rate": 1})
    server = BrokerServer(
        {ApiKey.METADATA: _metadata},
        quotas=ConnectionQuotas(config.__getitem__, "INTERNAL"),
        backlog=2,
    )
    port = await server.start(listener="EXTERNAL")
    try:
        assert await _served(port)
        waiting = [asyncio.create_task(_served(port)) for _ in range(3)]  # 1 taken, 2 behind
        await asyncio.sleep(0.2)
        with pytest.raises(NetworkError):  # the backlog is full
            await asyncio.wait_for(_served(port), 10)
        assert all(await asyncio.wait_for(asyncio.gather(*waiting), 15))
    finally:
        await server.stop(timeout_s=0.1)


@pytest.mark.parametrize(("rate", "ip_rate"), [(2, None), (1000, 1), (3, 2)])
async def test_stop_leaves_no_connection_open_whatever_its_state(
    rate: int, ip_rate: int | None
) -> None:
    """From review 89: 40 connections, some closed by their clients, in every state the
    rates make (served, taken late, waiting, held, past the backlog): a stopped listener
    leaves none open, no timer pending, and takes no more."""
    config = _config(**{"max.connection.creation.rate": rate})
    rates = {"127.0.0.1": ip_rate} if ip_rate is not None else {}
    quotas = ConnectionQuotas(config.__getitem__, "INTERNAL", ip_rate=rates.get)
    server = BrokerServer({ApiKey.METADATA: _metadata}, quotas=quotas, backlog=10)
    port = await server.start(listener="EXTERNAL")
    opened = []
    for i in range(40):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x00\x00\x00\x20abc")  # a frame's start, never finished
        opened.append((reader, writer))
        if i % 7 == 0:
            writer.close()
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)
    await server.stop(timeout_s=0.5)
    await _all_closed([(r, w) for r, w in opened if not w.is_closing()])
    assert not server.holding and not server._waiting and server._taking is None
    with pytest.raises((OSError, NetworkError)):
        await asyncio.wait_for(_served(port), 5)


async def test_a_failing_turn_of_the_acceptor_is_lost_alone() -> None:
    """From review 89: the acceptor's own step (the rate's take) raising for a queued
    connection stalled the queue behind it, as a failing accept once did."""
    config = _config(**{"max.connection.creation.rate": 1})
    quotas = ConnectionQuotas(config.__getitem__, "INTERNAL")
    real_take = quotas.take
    calls = iter(range(100))

    def take(listener: str, now_ms: int | None = None) -> int:
        if next(calls) == 2:  # the third connection's turn
            raise RuntimeError("injected")
        return real_take(listener, now_ms)

    quotas.take = take  # type: ignore[method-assign]
    await _the_third_is_lost_alone(quotas)


async def _the_third_is_lost_alone(quotas: ConnectionQuotas) -> None:
    """Four connections at max.connection.creation.rate=1 (``quotas`` fails the third's
    turn): the acceptor waits with the second, the third is lost, the fourth is served
    in its turn."""
    server = BrokerServer({ApiKey.METADATA: _metadata}, quotas=quotas)
    port = await server.start(listener="EXTERNAL")
    try:
        assert await _served(port)
        second = asyncio.create_task(_served(port))  # the acceptor waits with it
        await asyncio.sleep(0.1)
        third = asyncio.create_task(_served(port))  # queued; its turn fails
        await asyncio.sleep(0.1)
        fourth = asyncio.create_task(_served(port))  # queued behind it
        assert await asyncio.wait_for(second, 10)
        with pytest.raises(NetworkError):
            await asyncio.wait_for(third, 10)
        assert await asyncio.wait_for(fourth, 10)  # taken in its turn
    finally:
        await server.stop(timeout_s=0.1)


async def _all_closed(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    """Each connection reads EOF (or a reset) from the broker: it was closed."""
    for reader, writer in connections:
        try:
            data = await asyncio.wait_for(reader.read(), 3.0)
        except ConnectionError:
            data = b""
        assert data == b""
        writer.close()


async def test_a_connection_waiting_its_turn_keeps_a_bounded_read() -> None:
    """From review 89: uvloop reads a connection before its turn (once: then it pauses
    it), and a full backlog of such reads of 256 KiB each would be 256 MB. One that has
    sent more than 64 KiB before its first answer is closed; the rest keep what they sent."""
    config = _config(**{"max.connection.creation.rate": 1})
    server = BrokerServer(
        {ApiKey.METADATA: _metadata}, quotas=ConnectionQuotas(config.__getitem__, "INTERNAL")
    )
    port = await server.start(listener="EXTERNAL")
    writers = []
    try:
        assert await _served(port)
        for size in (100, 200_000, 200_000):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write((size + 8).to_bytes(4, "big") + b"x" * size)
            writers.append(writer)
        await asyncio.sleep(0.3)
        waiting = [c for c, _ in server._waiting]
        assert all(sum(map(len, c._early)) <= 64 * 1024 for c in waiting)
    finally:
        for writer in writers:
            writer.close()
        await server.stop(timeout_s=0.1)
