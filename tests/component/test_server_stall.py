"""The stall guard in the listener (broker/stall.py): requests read after the loop stalled
past the threshold wait until the guard's check says the ZooKeeper session is known, then
are answered in order; a shorter stall holds nothing; ZooKeeper that never answers holds
them no longer than ``hold_max_s``.

A stall here is the test blocking the loop it shares with the server (``time.sleep``, on
purpose): requests written before it wait in the socket, as a paused broker's do."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import pytest

from broker.server import BrokerServer
from broker.stall import StallGuard
from protocol.apis import (
    APIS,
    ApiKey,
    MetadataRequest,
    MetadataResponse,
    decode_response,
    encode_request,
)
from protocol.framing import RequestHeader, parse_response_header

# well over what a loaded 2-core machine delays this test's own loop (0.3 s could be hit
# by a stall of 0.2 s on top of the 0.1-s one that must trip nothing)
THRESHOLD_S = 0.5
_LISTENERS: dict[int, BrokerServer] = {}  # the fixture's, by port


class Check:
    """The guard's check: answers when the test says the session is known."""

    def __init__(self) -> None:
        self.calls = 0
        self.known = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        await self.known.wait()
        return "known"


def _metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    name = (request.topics or ["-"])[0]
    # "throttle": the answer carries a throttle, so the connection is muted (KIP-219)
    return MetadataResponse(cluster_id=name, throttle_time_ms=200 if name == "throttle" else 0)


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, StallGuard, Check]]:
    check = Check()
    guard = StallGuard(check, threshold_s=THRESHOLD_S, hold_max_s=3.0, tick_s=0.02)
    server = BrokerServer({ApiKey.METADATA: _metadata})
    server.stall = guard
    port = await server.start()
    _LISTENERS[port] = server
    guard.start()
    yield port, guard, check
    guard.stop()
    await server.stop()
    del _LISTENERS[port]


def _frame(correlation: int, name: str) -> list[bytes]:
    request = MetadataRequest(topics=[name])
    return [bytes(p) for p in encode_request(ApiKey.METADATA, 0, correlation, request)]


def _stall_loop(seconds: float) -> None:
    """Block the event loop, on purpose: the stall under test."""
    time.sleep(seconds)


async def _answer(reader: asyncio.StreamReader, timeout_s: float = 5) -> tuple[int, str]:
    (size,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), timeout_s))
    correlation, body = parse_response_header(memoryview(await reader.readexactly(size)))
    return correlation, decode_response(APIS[ApiKey.METADATA], 0, body).cluster_id


async def _connected(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.writelines(_frame(0, "warm"))
    assert await _answer(reader) == (0, "warm")  # accepted and served before the stall
    return reader, writer


async def _one_held(
    port: int, guard: StallGuard
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose request (correlation 1, "a") a stall's hold keeps."""
    reader, writer = await _connected(port)
    writer.writelines(_frame(1, "a"))
    await writer.drain()
    _stall_loop(THRESHOLD_S * 2)
    await asyncio.sleep(0.1)
    assert guard.holding
    return reader, writer


async def test_requests_read_after_a_stall_wait_until_the_session_is_known(
    served: tuple[int, StallGuard, Check],
) -> None:
    port, guard, check = served
    reader, writer = await _connected(port)
    writer.writelines([*_frame(1, "a"), *_frame(2, "b")])
    await writer.drain()
    _stall_loop(THRESHOLD_S * 2)  # the loop stalls with both requests in the socket
    await asyncio.sleep(0.2)
    assert guard.holding and check.calls == 1
    # a connection made during the hold is held too, and a request written later
    other_reader, other_writer = await asyncio.open_connection("127.0.0.1", port)
    other_writer.writelines(_frame(3, "c"))
    writer.writelines(_frame(4, "d"))
    with pytest.raises(asyncio.TimeoutError):
        await _answer(reader, timeout_s=0.3)
    with pytest.raises(asyncio.TimeoutError):
        await _answer(other_reader, timeout_s=0.1)
    check.known.set()
    assert [await _answer(reader) for _ in range(3)] == [(1, "a"), (2, "b"), (4, "d")]
    assert await _answer(other_reader) == (3, "c")
    assert not guard.holding and guard.stalls == 1
    # served as usual afterwards, the guard armed again
    writer.writelines(_frame(5, "e"))
    assert await _answer(reader) == (5, "e")
    for w in (writer, other_writer):
        w.close()


async def test_a_stall_below_the_threshold_holds_nothing(
    served: tuple[int, StallGuard, Check],
) -> None:
    port, guard, check = served
    reader, writer = await _connected(port)
    for correlation in range(1, 4):
        writer.writelines(_frame(correlation, "x"))
        await writer.drain()
        _stall_loop(THRESHOLD_S / 3)  # shorter than the threshold, with the tick's slack
        assert await _answer(reader) == (correlation, "x")
    assert check.calls == 0 and guard.stalls == 0
    writer.close()


async def test_a_check_that_never_answers_holds_for_hold_max_at_most() -> None:
    check = Check()  # never told
    guard = StallGuard(check, threshold_s=THRESHOLD_S, hold_max_s=0.5, tick_s=0.02)
    server = BrokerServer({ApiKey.METADATA: _metadata})
    server.stall = guard
    port = await server.start()
    guard.start()
    try:
        reader, writer = await _connected(port)
        writer.writelines(_frame(1, "a"))
        await writer.drain()
        _stall_loop(THRESHOLD_S * 2)
        started = time.monotonic()
        assert await _answer(reader) == (1, "a")
        assert time.monotonic() - started >= 0.4  # held, then served from what it has
        assert not guard.holding
        writer.close()
    finally:
        guard.stop()
        await server.stop()


async def test_a_request_a_throttle_held_is_held_on_if_the_throttle_ends_in_a_stall(
    served: tuple[int, StallGuard, Check],
) -> None:
    """From a review: a request held by a throttle (or a SASL step) before the stall was
    let go when the throttle ended, during the hold, and served from the state in doubt."""
    port, guard, check = served
    reader, writer = await _connected(port)
    # one read: the first is answered and mutes the connection for 200 ms, the second
    # (read with it) is held by the throttle
    writer.writelines([*_frame(1, "throttle"), *_frame(2, "a")])
    await writer.drain()
    assert await _answer(reader) == (1, "throttle")
    _stall_loop(THRESHOLD_S * 2)  # past the threshold and the throttle
    await asyncio.sleep(0.05)
    assert guard.holding
    with pytest.raises(asyncio.TimeoutError):
        await _answer(reader, timeout_s=0.3)
    check.known.set()
    assert await _answer(reader) == (2, "a")
    writer.close()


async def test_a_listener_stopping_closes_what_a_stall_holds_unanswered(
    served: tuple[int, StallGuard, Check],
) -> None:
    """A broker stopping (SIGTERM after the pause) closes its listeners before it stops
    the guard: what the hold kept is never served from the state in doubt."""
    port, guard, _ = served
    reader, writer = await _one_held(port, guard)
    await _LISTENERS[port].stop(timeout_s=1)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
    guard.stop()
    writer.close()


async def test_stopping_the_guard_lets_what_it_holds_go(
    served: tuple[int, StallGuard, Check],
) -> None:
    port, guard, _ = served
    reader, writer = await _one_held(port, guard)
    guard.stop()  # the broker stopping
    assert await _answer(reader) == (1, "a")
    writer.close()
