"""Fetching from the closest replica (KIP-392) without a cluster: which replica a leader
names for a consumer's rack, and how long a consumer keeps to it."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from broker.log import Log, LogConfig
from broker.replica.manager import preferred_replica
from broker.replica.partition import FollowerState, Partition
from client import Consumer
from client.cluster import Broker, ClusterMetadata, PartitionMetadata, TopicMetadata
from client.fetcher import FetchPosition, ReadReplicas
from client.types import TopicPartition
from protocol.apis import (
    FetchPartitionData,
    FetchResponse,
    FetchTopicResponse,
    UpdateMetadataBroker,
)
from protocol.errors import OffsetOutOfRangeError

RACKS = {1: "a", 2: "b", 3: "b", 4: "c"}
BROKERS = {b: UpdateMetadataBroker(id=b, host="h", port=b, rack=r) for b, r in RACKS.items()}


def _leader(tmp_path: Path, followers: dict[int, FollowerState]) -> Partition:
    log = Log.open(tmp_path / "t-0", LogConfig())
    return Partition(
        topic="t",
        index=0,
        log=log,
        local_broker_id=1,
        leader_id=1,
        isr=[1, *followers],
        replicas=[1, *followers],
        followers=followers,
    )


def test_the_leader_names_the_furthest_replica_in_the_consumers_rack(tmp_path: Path) -> None:
    partition = _leader(
        tmp_path,
        {
            2: FollowerState(log_end_offset=90, last_caught_up_ms=5, log_start_offset=0),
            3: FollowerState(log_end_offset=100, last_caught_up_ms=1, log_start_offset=0),
            4: FollowerState(log_end_offset=100, last_caught_up_ms=9, log_start_offset=0),
        },
    )
    try:
        assert preferred_replica(partition, "b", 50, BROKERS) == 3  # furthest along
        assert preferred_replica(partition, "b", 95, BROKERS) == 3  # 2 does not have 95
        assert preferred_replica(partition, "b", 101, BROKERS) is None  # nobody has it yet
        assert preferred_replica(partition, "c", 50, BROKERS) == 4
        assert preferred_replica(partition, "a", 50, BROKERS) is None  # the leader's rack
        assert preferred_replica(partition, "z", 50, BROKERS) is None  # no replica there
        assert preferred_replica(partition, "", 50, BROKERS) is None  # no rack said
        gone = {b: m for b, m in BROKERS.items() if b != 3}  # broker 3 not live
        assert preferred_replica(partition, "b", 50, gone) == 2
        partition.followers[2] = FollowerState(
            log_end_offset=100, last_caught_up_ms=7, log_start_offset=60
        )
        assert preferred_replica(partition, "b", 50, gone) is None  # 2 deleted offset 50
        partition.followers[2] = FollowerState(
            log_end_offset=100, last_caught_up_ms=7, log_start_offset=0
        )
        assert preferred_replica(partition, "b", 50, gone) == 2
        partition.isr.remove(2)  # found in review: a lagging replica would hold it back
        assert preferred_replica(partition, "b", 50, gone) is None
        partition.leader_id = 2  # not the leader here: it names nobody
        assert preferred_replica(partition, "b", 50, BROKERS) is None
    finally:
        partition.log.close()


def test_a_consumer_keeps_to_the_named_replica_until_it_fails_or_ages() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    leaders = {a: 1, b: 1}
    replicas = ReadReplicas("b", 1000)
    assert replicas.targets(leaders, {1, 2, 3}, 0) is leaders  # nothing named: the leaders
    replicas.prefer(a, 3, now_ms=0)
    targets = replicas.targets(leaders, {1, 2, 3}, 10)
    assert targets == {a: 3, b: 1}
    assert replicas.targets(leaders, {1, 2, 3}, 20) is targets  # the same until a change
    assert replicas.targets(leaders, {1, 2}, 20) is targets  # (cached: one metadata view)
    newer = {a: 2, b: 2}  # a new metadata view: made again, a named replica not live skipped
    assert replicas.targets(newer, {1, 2}, 30) == {a: 2, b: 2}
    assert replicas.targets(newer, {1, 2, 3}, 30) is not targets
    assert not replicas.forget(a, 2)  # an error from another broker: not the one named
    assert replicas.forget(a, 3)  # from the one named: back to the leader
    assert replicas.targets(leaders, {1, 2, 3}, 40) is leaders
    replicas.prefer(b, 2, now_ms=100)
    assert replicas.targets(leaders, {1, 2, 3}, 1099) == {a: 1, b: 2}
    assert replicas.targets(leaders, {1, 2, 3}, 1100) is leaders  # aged: the leader again


def test_an_offset_the_named_replica_lacks_sends_the_consumer_back_to_its_leader() -> None:
    """Out of range at a follower means it is behind (or its log start is ahead), not
    that the position is bad: the leader decides, and nothing is reset (Kafka's too)."""
    tp = TopicPartition("t", 0)
    consumer = Consumer(bootstrap_servers="127.0.0.1:1", client_rack="b")
    subscription = consumer._subscription
    subscription.assign([tp])
    subscription.seek(tp, 5)
    state = subscription.states[tp]
    asked = FetchPosition(tp, 5, state.generation)
    consumer._read_replicas.prefer(tp, 3)
    assert not consumer._on_partition_error(asked, OffsetOutOfRangeError("behind"), 3)
    assert subscription.needs_position() == [] and state.position == 5
    assert consumer._read_replicas.targets({tp: 1}, {1, 3}, 0) == {tp: 1}
    # the same from the leader: the position is out of the partition's range
    assert not consumer._on_partition_error(asked, OffsetOutOfRangeError("gone"), 1)
    assert subscription.needs_position() == [tp]


def test_a_replica_missing_from_the_consumers_metadata_refreshes_it() -> None:
    """Found in review: the leader names broker 3, which this consumer's metadata does not
    list (it was down at the last refresh): the consumer stays on the leader, which
    answered every Fetch at once with the same redirect, in a tight loop. Kafka's consumer
    asks for new metadata; so does this one, and waits retry_backoff_ms."""
    tp = TopicPartition("t", 0)
    consumer = Consumer(bootstrap_servers="127.0.0.1:1", client_rack="b")
    cluster = consumer._cluster
    cluster.metadata = ClusterMetadata(
        brokers=MappingProxyType({1: Broker(1, "h", 1, "a"), 2: Broker(2, "h", 2, "b")}),
        topics=MappingProxyType(
            {
                "t": TopicMetadata(
                    "t", MappingProxyType({0: PartitionMetadata(0, 1, replicas=(1, 2, 3))})
                )
            }
        ),
    )
    refreshes: list[int] = []
    cluster.request_refresh = lambda: refreshes.append(1)  # type: ignore[method-assign]
    subscription = consumer._subscription
    subscription.assign([tp])
    subscription.seek(tp, 5)
    asked = FetchPosition(tp, 5, subscription.states[tp].generation)
    redirect = FetchResponse(
        topics=[
            FetchTopicResponse(
                topic="t",
                partitions=[
                    FetchPartitionData(
                        partition_index=0, high_watermark=9, preferred_read_replica=3
                    )
                ],
            )
        ]
    )
    consumer._on_fetched(1, {tp: asked}, redirect)
    assert consumer._targets(0) == {tp: 1}  # still the leader until the metadata has 3
    assert refreshes
    assert subscription.states[tp].retry_at_ms > 0  # and not asked again at once
