"""A quota's throttle in the listener (Kafka's KIP-219): the throttled answer goes out at
once and nothing more is read from that connection for ``throttle_time_ms``, including
requests read along with it and after an acks=0 produce; then reading resumes. From a
review: on uvloop a timer may fire a hair before its time, and a connection stayed muted
for good."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import AsyncIterator

import pytest

from broker.server import MUTE, BrokerServer
from client.connection import BrokerConnection
from protocol.apis import (
    APIS,
    ApiKey,
    MetadataRequest,
    MetadataResponse,
    ProduceRequest,
    decode_response,
    encode_request,
)
from protocol.framing import RequestHeader, parse_response_header


def _metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    # the throttle a test asks for, in the topic name: "throttle-<ms>". Not a coroutine,
    # as the broker's produce and fetch handlers: the answer, and so the throttle, is
    # known while the frames read with the request are still being handled
    name = (request.topics or ["throttle-0"])[0]
    response = MetadataResponse(cluster_id=name)
    response.throttle_time_ms = int(name.rsplit("-", 1)[1])  # type: ignore[attr-defined]
    return response


def _produce(header: RequestHeader, request: ProduceRequest) -> None:
    MUTE.get()(request.timeout_ms)  # acks=0: no answer, muted all the same


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = BrokerServer({ApiKey.METADATA: _metadata, ApiKey.PRODUCE: _produce})
    yield await server.start()
    await server.stop()


async def test_many_short_throttles_never_leave_the_connection_muted(port: int) -> None:
    async with BrokerConnection("127.0.0.1", port, request_timeout_ms=5000) as conn:
        for _ in range(300):
            throttle = random.randint(1, 20)
            answer = await conn.request(
                ApiKey.METADATA, MetadataRequest(topics=[f"throttle-{throttle}"])
            )
            assert answer.cluster_id == f"throttle-{throttle}"


async def test_requests_read_with_a_throttled_one_wait_for_its_end(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = [
        encode_request(ApiKey.METADATA, 0, 1, MetadataRequest(topics=["throttle-300"])),
        encode_request(ApiKey.METADATA, 0, 2, MetadataRequest(topics=["throttle-0"])),
    ]
    writer.writelines([part for frame in frames for part in frame])  # one write
    times = []
    for _ in range(2):
        (size,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
        correlation, body = parse_response_header(memoryview(await reader.readexactly(size)))
        decode_response(APIS[ApiKey.METADATA], 0, body)
        times.append((correlation, time.monotonic()))
    assert [c for c, _ in times] == [1, 2]
    assert times[1][1] - times[0][1] >= 0.29  # held until the throttle ended
    writer.close()


async def test_an_acks_0_produce_mutes_without_an_answer(port: int) -> None:
    async with BrokerConnection("127.0.0.1", port) as conn:
        started = time.monotonic()
        await conn.request(
            ApiKey.PRODUCE,
            ProduceRequest(acks=0, timeout_ms=300, topics=[]),
            expect_response=False,
        )
        await conn.request(ApiKey.METADATA, MetadataRequest(topics=["throttle-0"]))
        assert time.monotonic() - started >= 0.29
