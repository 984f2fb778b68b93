"""DeleteRecords at a leader, without sockets: the answer waits for the in-sync
followers' own log starts (what their fetches say), and fails when they do not come in
time or when the leadership goes. (tests/integration has it between real brokers.)"""

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.deferred import Deferred
from broker.log import LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import (
    DeleteRecordsPartition,
    DeleteRecordsRequest,
    DeleteRecordsTopic,
    FetchPartition,
    FetchRequest,
    FetchTopic,
)
from protocol.errors import NotLeaderOrFollowerError, RequestTimedOutError
from tests.unit.test_replica_fetch_wake import _Isr, _leader_state, _produce

TP = TopicPartition("t", 0)


Leading = Callable[..., Awaitable[ReplicaManager]]


@pytest.fixture
async def leading(tmp_path: Path) -> AsyncIterator[Leading]:
    """``leading(in_sync, **settings)``: broker 1 leads t-0 with that ISR and holds 10
    records; stopped at the end."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()
    made: list[ReplicaManager] = []

    async def make(in_sync: list[int], **settings: Any) -> ReplicaManager:
        async def load(topic: str) -> LogConfig:
            return LogConfig()

        manager = ReplicaManager(1, logs, MetadataCache(), load, **settings)
        made.append(manager)
        await manager.become_leader_or_follower([_leader_state(isr=in_sync)])
        for _ in range(10):
            manager.produce(_produce())
        return manager

    yield make
    for manager in made:
        await manager.shutdown()
    logs.shutdown()


@pytest.fixture
async def leader(leading: Leading) -> ReplicaManager:
    """Broker 1 leads t-0 with follower 2 in sync; 10 records, all replicated."""
    manager = await leading([1, 2])
    _follower_fetch(manager, 10, log_start=0)  # it has them all, from offset 0
    assert manager.partitions[TP].high_watermark == 10
    return manager


def _follower_fetch(manager: ReplicaManager, offset: int, *, log_start: int) -> None:
    partition = FetchPartition(
        partition=0, fetch_offset=offset, log_start_offset=log_start, partition_max_bytes=1 << 20
    )
    manager.fetch(
        FetchRequest(
            replica_id=2,
            max_wait_ms=0,
            min_bytes=1,
            topics=[FetchTopic(topic="t", partitions=[partition])],
        )
    )


def _delete(offset: int, timeout_ms: int = 5_000) -> DeleteRecordsRequest:
    return DeleteRecordsRequest(
        topics=[
            DeleteRecordsTopic(
                name="t", partitions=[DeleteRecordsPartition(partition_index=0, offset=offset)]
            )
        ],
        timeout_ms=timeout_ms,
    )


async def test_the_answer_waits_for_the_in_sync_followers_log_start(
    leader: ReplicaManager,
) -> None:
    deleting = asyncio.ensure_future(leader.delete_records(_delete(4)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not deleting.done()  # follower 2 still starts at 0
    assert leader.partitions[TP].log.log_start_offset == 4  # the leader's moved at once
    _follower_fetch(leader, 10, log_start=4)  # it learned the new start and says so
    (result,) = (await asyncio.wait_for(deleting, 5)).topics[0].partitions
    assert (result.error_code, result.low_watermark) == (0, 4)


async def test_followers_not_in_time_make_it_time_out_with_the_low_watermark_reached(
    leader: ReplicaManager,
) -> None:
    response = await leader.delete_records(_delete(-1, timeout_ms=50))
    (result,) = response.topics[0].partitions
    assert result.error_code == RequestTimedOutError.code
    assert result.low_watermark == 0 and "at 0, not yet 10" in (result.error_message or "")
    assert leader._deletes == {}  # nothing left waiting


async def test_losing_the_leadership_fails_the_wait(leader: ReplicaManager) -> None:
    deleting = asyncio.ensure_future(leader.delete_records(_delete(4)))
    for _ in range(500):  # past its checkpoint (a worker thread), waiting for follower 2
        if TP in leader._deletes:
            break
        await asyncio.sleep(0.01)
    follower = dataclasses.replace(_leader_state(isr=[1, 2]), leader=2, leader_epoch=2)
    await leader.become_leader_or_follower([follower])
    (result,) = (await asyncio.wait_for(deleting, 5)).topics[0].partitions
    assert result.error_code == NotLeaderOrFollowerError.code
    assert "lost its leadership" in (result.error_message or "")


async def test_a_parked_follower_fetch_hears_of_the_new_start_at_once(
    leader: ReplicaManager,
) -> None:
    """From a review: the follower's fetch, parked for records, must be answered when the
    log start moves (it has no record to wait for); else it heard of it only when its
    wait expired (500 ms by default), and every DeleteRecords took that long."""
    partition = FetchPartition(
        partition=0, fetch_offset=10, log_start_offset=0, partition_max_bytes=1 << 20
    )
    parked = leader.fetch(
        FetchRequest(
            replica_id=2,
            max_wait_ms=30_000,
            min_bytes=1,
            topics=[FetchTopic(topic="t", partitions=[partition])],
        )
    )
    assert isinstance(parked, Deferred) and not parked.done
    deleting = asyncio.ensure_future(leader.delete_records(_delete(4)))
    for _ in range(500):
        if parked.done:
            break
        await asyncio.sleep(0.01)
    (answered,) = parked.result().topics[0].partitions
    assert answered.log_start_offset == 4 and answered.records is None
    _follower_fetch(leader, 10, log_start=4)  # the follower moved its own
    (result,) = (await asyncio.wait_for(deleting, 5)).topics[0].partitions
    assert (result.error_code, result.low_watermark) == (0, 4)


async def test_an_in_sync_follower_that_never_said_its_start_is_waited_for(
    leading: Leading,
) -> None:
    """From a review: a follower whose start is not known yet (a new leader, before the
    follower's first fetch) was left out, and the deletion answered at once while that
    replica, which could lead next, still held the records."""
    manager = await leading([1])
    # follower 2 joins the ISR by the controller's word, and has not fetched since
    await manager.become_leader_or_follower(
        [dataclasses.replace(_leader_state(isr=[1, 2]), leader_epoch=2)]
    )
    (result,) = (await manager.delete_records(_delete(4, timeout_ms=50))).topics[0].partitions
    assert (result.error_code, result.low_watermark) == (RequestTimedOutError.code, -1)


async def test_an_isr_shrink_completes_a_waiting_deletion(leading: Leading) -> None:
    """From a review: only a follower's fetch completed a waiting DeleteRecords, so one
    left out of the ISR (it stopped fetching) made it wait out its whole timeout."""
    manager = await leading([1, 2], isr=_Isr(), replica_lag_time_max_ms=50)
    _follower_fetch(manager, 10, log_start=0)
    deleting = asyncio.ensure_future(manager.delete_records(_delete(4, timeout_ms=30_000)))
    await asyncio.sleep(0.2)  # follower 2 fetches no more: it lags past the 50 ms allowed
    manager.shrink_isrs()
    (result,) = (await asyncio.wait_for(deleting, 5)).topics[0].partitions
    assert manager.partitions[TP].isr == [1]
    assert (result.error_code, result.low_watermark) == (0, 4)
