"""Handlers that answer at once or later: a plain function's response goes out without a
task, a Deferred's when it is completed (by another connection's request), in order."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from broker.deferred import Deferred
from broker.server import BrokerServer
from client.connection import BrokerConnection
from protocol.apis import (
    ApiKey,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
    MetadataRequest,
    MetadataResponse,
    ProduceRequest,
    ProduceResponse,
)
from protocol.errors import NetworkError
from protocol.framing import RequestHeader

_parked: list[Deferred[FetchResponse]] = []


def fetch(header: RequestHeader, request: FetchRequest) -> Deferred[FetchResponse]:
    deferred: Deferred[FetchResponse] = Deferred(on_cancel=lambda: None)
    _parked.append(deferred)
    return deferred


def produce(header: RequestHeader, request: ProduceRequest) -> ProduceResponse:
    for deferred in _parked:  # completes the parked fetches inside this request's call
        deferred.resolve(FetchResponse(topics=[FetchTopicResponse(topic="woken")]))
    _parked.clear()
    return ProduceResponse()


def metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    return MetadataResponse(cluster_id="sync")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    _parked.clear()
    srv = BrokerServer({ApiKey.FETCH: fetch, ApiKey.PRODUCE: produce, ApiKey.METADATA: metadata})
    yield await srv.start()
    await srv.stop(timeout_s=1)


async def test_a_deferred_response_is_sent_when_another_request_completes_it(port: int) -> None:
    consumer, producer = BrokerConnection("127.0.0.1", port), BrokerConnection("127.0.0.1", port)
    await consumer.connect()
    await producer.connect()
    try:
        waiting = consumer.request(ApiKey.FETCH, FetchRequest(max_wait_ms=30_000, min_bytes=1))
        later = consumer.request(ApiKey.METADATA, MetadataRequest())  # queued behind it
        fetch_task = asyncio.ensure_future(waiting)
        meta_task = asyncio.ensure_future(later)
        for _ in range(100):
            if _parked:
                break
            await asyncio.sleep(0.01)
        assert _parked and not fetch_task.done() and not meta_task.done()
        await producer.request(ApiKey.PRODUCE, ProduceRequest(acks=1, timeout_ms=1000))
        response = await asyncio.wait_for(fetch_task, 5)
        assert response.topics[0].topic == "woken"
        assert (await asyncio.wait_for(meta_task, 5)).cluster_id == "sync"
    finally:
        consumer.close()
        producer.close()


async def test_closing_cancels_a_parked_deferred(port: int) -> None:
    consumer = BrokerConnection("127.0.0.1", port)
    await consumer.connect()
    pending = asyncio.ensure_future(
        consumer.request(ApiKey.FETCH, FetchRequest(max_wait_ms=30_000, min_bytes=1))
    )
    for _ in range(100):
        if _parked:
            break
        await asyncio.sleep(0.01)
    deferred = _parked[0]
    consumer.close()
    with contextlib.suppress(NetworkError):
        await pending
    for _ in range(100):
        if deferred.cancelled:
            break
        await asyncio.sleep(0.01)
    assert deferred.cancelled
