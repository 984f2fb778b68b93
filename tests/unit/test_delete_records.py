"""DeleteRecords at a leader, without sockets: the answer waits for the in-sync
followers' own log starts (what their fetches say), and fails when they do not come in
time or when the leadership goes. (tests/integration has it between real brokers.)"""

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
from tests.unit.test_replica_fetch_wake import _leader_state, _produce

TP = TopicPartition("t", 0)


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[ReplicaManager]:
    """Broker 1 leads t-0 with follower 2 in sync; 10 records, all replicated."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    await manager.become_leader_or_follower([_leader_state(isr=[1, 2])])
    for _ in range(10):
        manager.produce(_produce())
    _follower_fetch(manager, 10, log_start=0)  # it has them all, from offset 0
    assert manager.partitions[TP].high_watermark == 10
    yield manager
    await manager.shutdown()
    logs.shutdown()


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
    assert result.low_watermark == 0 and "reached 0, not 10" in (result.error_message or "")
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
