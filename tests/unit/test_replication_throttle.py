"""Replication throttles without a cluster: which replicas a topic throttles, the rate a
broker measures them at, and what a reassignment plan throttles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.deferred import Deferred
from broker.log import Log, LogConfig
from broker.log.manager import LogManager
from broker.metadata import MetadataCache
from broker.replica.fetcher import ReplicaFetcher, _Followed
from broker.replica.manager import ReplicaManager
from broker.replica.partition import Partition
from broker.replica.throttle import UNLIMITED, ReplicationQuota
from client.reassign import throttled_brokers, throttled_replicas
from client.types import TopicPartition
from protocol.apis import (
    FINAL_EPOCH,
    INVALID_SESSION_ID,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    LeaderAndIsrPartitionState,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
)
from protocol.records import encode_batch


def test_a_topic_names_its_throttled_replicas_or_all_of_them() -> None:
    config = LogConfig.from_properties(
        {
            "leader.replication.throttled.replicas": "0:1, 1:2",
            "follower.replication.throttled.replicas": "*",
        }
    )
    assert config.leader_throttled(0, 1) and config.leader_throttled(1, 2)
    assert not config.leader_throttled(0, 2) and not config.leader_throttled(2, 1)
    assert config.follower_throttled(7, 9)  # "*": every replica of the topic
    assert not LogConfig().leader_throttled(0, 1) and not LogConfig().follower_throttled(0, 1)
    for bad in ("0-1", "0:x", "*,0:1", ":1"):
        with pytest.raises(ValueError, match="partition:broker pairs"):
            LogConfig.from_properties({"leader.replication.throttled.replicas": bad})


def test_the_rate_holds_back_once_over_and_lets_go_as_the_windows_pass() -> None:
    now = [1000.0]
    bound = [100_000]
    quota = ReplicationQuota(lambda: bound[0], clock=lambda: now[0])
    assert quota.active and not quota.exceeded()
    quota.record(1_000_000)  # a first burst counts over the 10 s the rate spans at least
    assert not quota.exceeded()
    quota.record(1)
    assert quota.exceeded()  # 1,000,001 bytes over 10 s: just over 100,000 per second
    now[0] += 12  # every window with it in has passed
    assert not quota.exceeded()
    bound[0] = UNLIMITED  # the rate deleted (a dynamic config): nothing counted, none held
    quota.record(10**12)
    assert not quota.active and not quota.exceeded() and quota.per_second() == 0


def test_a_plan_throttles_the_replicas_that_copy_and_the_brokers_they_are_on() -> None:
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    current = {a0: [1, 2], a1: [2, 3], b0: [1]}
    plan = {a0: [2, 4], a1: [2, 3], b0: [1, 3]}  # a-1 does not move
    assert throttled_replicas(current, plan) == {
        "a": {
            "leader.replication.throttled.replicas": "0:1,0:2",  # any of them may lead
            "follower.replication.throttled.replicas": "0:4",  # the one it gains
        },
        "b": {
            "leader.replication.throttled.replicas": "0:1",
            "follower.replication.throttled.replicas": "0:3",
        },
    }
    assert throttled_brokers(current, plan) == [1, 2, 3, 4]
    assert throttled_replicas(current, {a1: [2, 3]}) == {}


FOLLOWER = 2


# --- the follower's side -------------------------------------------------------------


@pytest.mark.parametrize("lagging", [False, True])
async def test_a_follower_caught_up_with_its_leader_is_not_held_back(
    tmp_path: Path, lagging: bool
) -> None:
    """Found in review: a follower decided "in sync" by its ISR list, which only a
    LeaderAndIsr updates (an ISR expansion reaches it as UpdateMetadata): caught up and
    back in the leader's ISR, it was still held back, and dropped again. As Kafka's, it
    goes by its lag behind the leader's high watermark; one behind is held back."""
    quota = ReplicationQuota(lambda: 1000)
    quota.record(10**6)  # other throttled partitions copied: over the rate
    assert quota.exceeded()
    fetcher = ReplicaFetcher(FOLLOWER, 1, "127.0.0.1", 9, quota=quota)
    fetcher._task.cancel()  # this test makes the fetches itself
    log = Log.open(tmp_path / "t-0", LogConfig(follower_replication_throttled_replicas="*"))
    log.append(encode_batch([(None, b"v", None, 1000)]), leader_epoch=1)
    partition = Partition(
        topic="t",
        index=0,
        log=log,
        local_broker_id=FOLLOWER,
        leader_id=1,
        leader_epoch=1,
        isr=[1],  # as its last LeaderAndIsr said; the leader's ISR is [1, 2] now
        high_watermark=1,  # = the leader's high watermark = our log end: no lag at all
    )
    sent: list[FetchRequest] = []

    async def leader(api_key: object, request: FetchRequest, version: object = None) -> object:
        sent.append(request)
        return FetchResponse(session_id=7)

    fetcher._peer.request = leader  # type: ignore[method-assign]
    tp = TopicPartition("t", 0)
    followed = fetcher._followed[tp] = _Followed(partition, 1, truncated=True)
    followed.leader_high_watermark = 2 if lagging else 1  # as the leader's last answer said
    fetcher._stale.add(tp)
    try:
        await asyncio.wait_for(fetcher._fetch(), 5)
        if lagging:
            assert not sent and tp in fetcher._held  # until the rate comes down
        else:
            assert sent and [p.partition for t in sent[0].topics for p in t.partitions] == [0]
    finally:
        fetcher._followed.clear()
        await fetcher.close()
        log.close()


# --- the leader's side ---------------------------------------------------------------


@pytest.fixture
async def throttled_leader(tmp_path: Path) -> AsyncIterator[ReplicaManager]:
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig(leader_replication_throttled_replicas="*")

    manager = ReplicaManager(
        1, logs, MetadataCache(), load, leader_quota=ReplicationQuota(lambda: 10**12)
    )
    await manager.become_leader_or_follower(
        [
            LeaderAndIsrPartitionState(
                topic_name="t",
                partition_index=0,
                controller_epoch=1,
                leader=1,
                leader_epoch=1,
                isr=[1],
                replicas=[1, FOLLOWER],
            )
        ]
    )
    yield manager
    await manager.shutdown()
    logs.shutdown()


def _produce(manager: ReplicaManager) -> None:
    batch = encode_batch([(None, b"v" * 100, None, 1000)])
    manager.produce(
        ProduceRequest(
            acks=1,
            timeout_ms=1000,
            topics=[ProduceTopic(name="t", partitions=[ProducePartition(index=0, records=batch)])],
        )
    )


async def test_the_leader_counts_the_bytes_it_sends_once(throttled_leader: ReplicaManager) -> None:
    """Found in review: a follower fetch that parks (replica.fetch.min.bytes > 1, as a
    Kafka follower may be set) recorded the same bytes on every re-read. Kafka records
    the response's throttled bytes once, when it is sent."""
    manager = throttled_leader
    _produce(manager)
    request = FetchRequest(
        replica_id=FOLLOWER,
        max_wait_ms=200,
        min_bytes=100_000,
        session_id=INVALID_SESSION_ID,
        session_epoch=FINAL_EPOCH,  # sessionless
        topics=[
            FetchTopic(
                topic="t",
                partitions=[
                    FetchPartition(
                        partition=0,
                        current_leader_epoch=1,
                        fetch_offset=0,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
    )
    parked = manager.fetch(request)
    assert isinstance(parked, Deferred)
    for _ in range(3):  # more records, still under min_bytes: re-read, parked again
        _produce(manager)
        await asyncio.sleep(0.01)
    for _ in range(50):
        if parked.done:
            break
        await asyncio.sleep(0.05)
    response = parked.result()
    sent = sum(len(p.records or b"") for t in response.topics for p in t.partitions)
    recorded = sum(manager.leader_quota._rate._totals)
    assert recorded == sent, (recorded, sent)
