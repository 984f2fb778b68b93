"""``request_percentage`` quotas (Kafka's KIP-124) in the listener: each request's time on
the broker's loop (a coroutine's steps, not its waits) is counted against its client's
quota, and a client over it is told the throttle and not read from for as long; the login
and the cluster's own requests, and a follower's fetches, are not counted."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Callable

import pytest

from broker.config import load_config
from broker.quotas import QuotaManager
from broker.server import PEER_CLIENT_ID, BrokerServer, _Timed
from client.connection import BrokerConnection
from protocol.apis import ApiKey, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse
from protocol.framing import RequestHeader
from protocol.quotas import CLIENT


def _busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def _metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    _busy(20)  # 20 ms of the loop's time per request
    return MetadataResponse(cluster_id=PEER_CLIENT_ID.get())


async def _slow_metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    await asyncio.sleep(0.05)  # waiting (another broker, ZooKeeper): not the loop's time
    _busy(20)
    return MetadataResponse()


def _fetch(header: RequestHeader, request: FetchRequest) -> FetchResponse:
    _busy(20)
    return FetchResponse()


def _quotas(percent: float, windows: int = 2) -> QuotaManager:
    """``percent`` for client id "greedy", measured over ``windows`` 1 s samples (two
    here: Kafka's eleven would spread a first burst over 10 s, and the tests with it)."""
    overrides = ["broker.id=1", f"quota.window.num={windows}"]
    manager = QuotaManager(None, load_config(env={}, overrides=overrides))
    manager._quotas = {((CLIENT, "greedy"),): {"request_percentage": percent}}
    manager.times_requests = True  # (what a reload from ZooKeeper sets)
    return manager


@pytest.fixture
async def serving() -> AsyncIterator[Callable[[Callable[..., object]], asyncio.Future[int]]]:
    servers: list[BrokerServer] = []

    async def start(metadata: Callable[..., object]) -> int:
        server = BrokerServer(
            {ApiKey.METADATA: metadata, ApiKey.FETCH: _fetch}, request_quotas=_quotas(5)
        )
        servers.append(server)
        return await server.start()

    yield start  # type: ignore[misc]
    for server in servers:
        await server.stop()


async def _throttles(port: int, client_id: str, count: int, **fetch: int) -> list[int]:
    async with BrokerConnection("127.0.0.1", port, client_id=client_id) as conn:
        out = []
        for _ in range(count):
            if fetch:
                asked = FetchRequest(max_wait_ms=0, min_bytes=0, **fetch)
                out.append((await conn.request(ApiKey.FETCH, asked)).throttle_time_ms)
            else:
                out.append(
                    (await conn.request(ApiKey.METADATA, MetadataRequest())).throttle_time_ms
                )
        return out


async def test_a_client_over_its_share_of_the_brokers_time_is_throttled(serving) -> None:  # type: ignore[no-untyped-def]
    # 5% of one thread: 50 ms a second; each request takes 20 ms of the loop
    port = await serving(_metadata)
    started = time.monotonic()
    greedy = await _throttles(port, "greedy", 8)
    assert greedy[0] == 0 and max(greedy) > 0  # told, once over
    assert time.monotonic() - started >= max(greedy) / 1000 * 0.9  # not read meanwhile
    assert set(await _throttles(port, "modest", 5)) == {0}  # no quota for this client


async def test_only_a_coroutines_own_steps_count(serving) -> None:  # type: ignore[no-untyped-def]
    port = await serving(_slow_metadata)
    assert max(await _throttles(port, "greedy", 8)) > 0  # its 20 ms steps count
    stepped = _Timed(_wait_then_work())
    started = time.perf_counter_ns()
    assert await stepped == "done"
    assert stepped.ns < (time.perf_counter_ns() - started) / 2  # the 100 ms wait did not


async def _wait_then_work() -> str:
    await asyncio.sleep(0.1)
    _busy(10)
    return "done"


async def test_a_followers_fetches_are_replication_not_counted(serving) -> None:  # type: ignore[no-untyped-def]
    port = await serving(_metadata)
    assert set(await _throttles(port, "greedy", 8, replica_id=2)) == {0}
    assert max(await _throttles(port, "greedy", 8, replica_id=-1)) > 0  # a consumer's are


async def test_a_coroutine_raising_or_cancelled_through_the_timer_behaves_as_itself() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("its own error")

    with pytest.raises(ValueError, match="its own error"):
        await _Timed(fails())
    waiting = asyncio.ensure_future(_Timed(asyncio.sleep(10)))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


def test_the_meter_counts_a_share_of_one_threads_time() -> None:
    manager = _quotas(5, windows=11)  # Kafka's default samples

    def spend(nanoseconds: int) -> int:
        def run() -> int:
            PEER_CLIENT_ID.set("greedy")
            return manager.request_meter()(nanoseconds)

        return contextvars.copy_context().run(run)

    # 5%: 50 ms a second, over 11 windows of a second; a first burst spread over 10 s
    assert spend(400_000_000) == 0  # 400 ms: 4% of the 10 s
    assert spend(200_000_000) > 0  # 600 ms: over
