"""What broker/heap.py's thaw threshold rests on: partitions that stop being replicas here
leave no cyclic garbage behind, whatever side they were on. A leader and a follower
replica manager in one process, the follower fetching over a real connection (its
fetcher task, fetch session and peer connection), their objects frozen as a settle
freezes them; after a StopReplica that deletes them, a thaw's collection finds nothing
(``DEBUG_SAVEALL`` keeps whatever it would have freed)."""

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.deferred import Deferred
from broker.log import LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from broker.server import BrokerServer
from protocol.apis import (
    ApiKey,
    FetchPartition,
    FetchRequest,
    FetchTopic,
    LeaderAndIsrLiveLeader,
    LeaderAndIsrPartitionState,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
    StopReplicaPartition,
)
from protocol.records import encode_batch

COUNT = 32


class _Pair:
    def __init__(self, leader: ReplicaManager, follower: ReplicaManager) -> None:
        self.leader = leader
        self.follower = follower


def _serving(call: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda header, request: call(request)


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """What a collection found unreachable, kept for the test to look at."""
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.unfreeze()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[_Pair]:
    async def load(topic: str) -> LogConfig:
        return LogConfig()

    leader_logs = LogManager([tmp_path / "leader"], broker_id=2, cluster_id="c")
    follower_logs = LogManager([tmp_path / "follower"], broker_id=1, cluster_id="c")
    leader_logs.startup()
    follower_logs.startup()
    leader = ReplicaManager(2, leader_logs, MetadataCache(), load)
    follower = ReplicaManager(1, follower_logs, MetadataCache(), load)
    server = BrokerServer(
        {
            ApiKey.FETCH: _serving(leader.fetch),
            ApiKey.LIST_OFFSETS: _serving(leader.list_offsets),
            ApiKey.OFFSET_FOR_LEADER_EPOCH: _serving(leader.offsets_for_leader_epoch),
        }
    )
    port = await server.start()
    live = [LeaderAndIsrLiveLeader(broker_id=2, host_name="127.0.0.1", port=port)]
    states = [
        LeaderAndIsrPartitionState(
            topic_name="t",
            partition_index=p,
            controller_epoch=1,
            leader=2,
            leader_epoch=1,
            isr=[2, 1],
            replicas=[2, 1],
        )
        for p in range(COUNT)
    ]
    await leader.become_leader_or_follower(states, live)
    await follower.become_leader_or_follower(states, live)
    batch = encode_batch([(None, b"x" * 100, None, 1000)])
    records = [ProducePartition(index=p, records=batch) for p in range(COUNT)]
    leader.produce(
        ProduceRequest(acks=1, timeout_ms=1000, topics=[ProduceTopic(name="t", partitions=records)])
    )
    for _ in range(200):  # the follower has every record: its fetches are parked now
        await asyncio.sleep(0.01)
        ends = {
            follower.partitions[TopicPartition("t", p)].log.log_end_offset for p in range(COUNT)
        }
        if ends == {1}:
            break
    assert ends == {1}
    try:
        yield _Pair(leader, follower)
    finally:
        await follower.shutdown()
        await leader.shutdown()
        await server.stop(1)
        leader_logs.shutdown()
        follower_logs.shutdown()


async def _delete_frozen(manager: ReplicaManager, garbage: list[Any]) -> int:
    """Freeze everything, delete the partitions, let the fetchers go on a while, thaw:
    returns how many frozen objects reference counting freed."""
    gc.collect()
    gc.freeze()
    before = gc.get_freeze_count()
    stop = [StopReplicaPartition(topic_name="t", partition_index=p) for p in range(COUNT)]
    errors = await manager.stop_replicas(stop, delete=True)
    assert not any(e.error_code for e in errors)
    await asyncio.sleep(0.5)  # fetch rounds after the deletion
    freed = before - gc.get_freeze_count()
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    return freed


async def test_deleted_follower_partitions_leave_no_cycle(
    pair: _Pair, saved_garbage: list[Any]
) -> None:
    freed = await _delete_frozen(pair.follower, saved_garbage)
    assert freed >= COUNT * 15  # each partition's objects, by reference counting
    assert saved_garbage == []


async def test_deleted_leader_partitions_leave_no_cycle(
    pair: _Pair, saved_garbage: list[Any]
) -> None:
    """With a follower's fetch and a consumer's fetch parked on them."""
    wanted = [
        FetchPartition(partition=p, fetch_offset=1, partition_max_bytes=1 << 20)
        for p in range(COUNT)
    ]
    parked = pair.leader.fetch(
        FetchRequest(
            replica_id=-1,
            max_wait_ms=60_000,
            min_bytes=1,
            topics=[FetchTopic(topic="t", partitions=wanted)],
        )
    )
    assert isinstance(parked, Deferred)
    freed = await _delete_frozen(pair.leader, saved_garbage)
    assert parked.done  # answered: not the leader any more
    assert freed >= COUNT * 15
    assert saved_garbage == []
