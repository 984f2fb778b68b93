"""A consumer finds its partition's log cut under it (KIP-320), on real brokers.

Records only the old leader had are lost when an out-of-sync replica takes over (an
unclean leader election), and the new leader writes new records at their offsets. A
consumer that read the lost ones must not go on from its position as if nothing
happened: it would skip the new records that took their offsets. It asks the new
leader where the epoch of what it read ended (OffsetsForLeaderEpoch), and:

- with ``auto_offset_reset`` set, reads on from the first offset that may differ: every
  new record, none twice;
- with ``auto_offset_reset='none'``, raises LogTruncationError naming that offset, also
  when it resumes from a group's committed offset (committed with its leader epoch);
  a seek there reads the new records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from client import Admin, Consumer, ConsumerRecord, NewTopic, Producer, TopicPartition
from client.errors import LogTruncationError
from protocol.apis import (
    ApiKey,
    CreatableReplicaAssignment,
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
)
from protocol.errors import UnknownTopicOrPartitionError
from protocol.topic_id import format_topic_id
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_topics import _metadata, _ready_cluster, _request

pytestmark = pytest.mark.timeout(150)

SETTINGS = {"replica.lag.time.max.ms": "2000"}
TOPIC = "cut"
TP = TopicPartition(TOPIC, 0)


_NOT_YET = SimpleNamespace(leader_id=-1, leader_epoch=-1, isr_nodes=[])


def _partition(meta: Any) -> Any:
    """Partition 0's metadata; no leader while the broker asked has not heard of the topic
    yet (it hears a moment after CreateTopics answers: CI failed once on that)."""
    partitions = meta.topics[0].partitions if meta.topics else []
    return partitions[0] if partitions else _NOT_YET


async def _produce(bootstrap: str, values: list[str]) -> list[int]:
    async with Producer(bootstrap_servers=bootstrap, acks="all") as producer:
        futures = [await producer.send(TOPIC, v.encode(), partition=0) for v in values]
        return [(await f).offset for f in futures]


async def _read(consumer: Consumer, count: int, timeout_s: float = 60) -> list[ConsumerRecord]:
    got: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} records: {got}"
        batch = await consumer.getmany(TP, timeout_ms=500, max_records=count - len(got))
        got += batch.get(TP, [])
    return got


def _seen(records: list[ConsumerRecord]) -> list[tuple[int, bytes | None]]:
    return [(r.offset, r.value) for r in records]


async def test_a_consumer_reads_on_from_where_an_unclean_election_cut_the_log(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, SETTINGS)
    ports = await _ready_cluster(cluster)
    bootstrap = f"127.0.0.1:{ports[3]}"  # broker 3 stays up throughout
    request = CreateTopicsRequest(
        topics=[
            CreatableTopic(
                name=TOPIC,
                assignments=[CreatableReplicaAssignment(partition_index=0, broker_ids=[1, 2])],
                configs=[
                    CreatableTopicConfig(name="unclean.leader.election.enable", value="true"),
                    CreatableTopicConfig(name="min.insync.replicas", value="1"),
                ],
            )
        ]
    )
    assert (await _request(ports[3], ApiKey.CREATE_TOPICS, request)).topics[0].error_code == 0
    await _until(lambda: _metadata(ports[3], [TOPIC]), lambda m: _partition(m).isr_nodes == [1, 2])
    assert await _produce(bootstrap, [f"kept-{i}" for i in range(20)]) == list(range(20))
    cluster.brokers[2].kill()  # the follower goes: broker 1 alone has what comes next
    await _until(lambda: _metadata(ports[3], [TOPIC]), lambda m: _partition(m).isr_nodes == [1])
    assert await _produce(bootstrap, [f"lost-{i}" for i in range(20, 50)]) == list(range(20, 50))

    reader = Consumer(
        bootstrap_servers=bootstrap,
        group_id="readers",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=1000,
    )
    strict = Consumer(
        bootstrap_servers=bootstrap,
        group_id="readers",
        enable_auto_commit=False,
        auto_offset_reset="none",
    )
    await reader.start()
    try:
        reader.assign([TP])
        read = await _read(reader, 50)
        assert [r.value for r in read[20:]] == [f"lost-{i}".encode() for i in range(20, 50)]
        await reader.commit()  # offset 50, with the leader epoch of what was read

        cluster.brokers[1].kill()  # the last in-sync replica: the records 20-49 go with it
        cluster.start_broker(2)  # out of sync, and its topic allows it to lead
        await _until(lambda: _metadata(ports[3], [TOPIC]), lambda m: _partition(m).leader_id == 2)
        new = [f"new-{i}" for i in range(20, 30)]
        assert await _produce(bootstrap, new) == list(range(20, 30))

        # the running consumer, at 50: on from 20, where broker 2's log parts from it
        after = await _read(reader, 10)
        assert _seen(after) == [(20 + i, v.encode()) for i, v in enumerate(new)]
        assert await reader.position(TP) == 30

        # a consumer resuming from the group's commit (50) with no reset allowed is told
        await strict.start()
        strict.assign([TP])
        deadline = time.monotonic() + 30
        with pytest.raises(LogTruncationError) as caught:
            while time.monotonic() < deadline:
                assert not await strict.getmany(timeout_ms=500)
        assert caught.value.divergent_offsets == {TP: 20}
        assert "seek() to 20" in str(caught.value)
        with pytest.raises(LogTruncationError):  # again, until the user moves
            await asyncio.wait_for(strict.getmany(timeout_ms=5_000), 10)
        strict.seek(TP, 20)
        assert _seen(await _read(strict, 10)) == [(20 + i, v.encode()) for i, v in enumerate(new)]
    finally:
        await reader.stop()
        await strict.stop()


async def test_a_consumer_follows_a_topic_made_again_under_its_name(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A topic deleted and made again starts its leader epochs over; a consumer that read
    the old one under a later epoch is told UNKNOWN_LEADER_EPOCH by the new leader, and
    then follows the metadata's lower epoch, not stuck retrying: its position is out of
    the new log's range, and it reads the new topic by its auto_offset_reset. (With no
    topic ids, as in Kafka before them, a position inside the new log reads on there.)"""
    cluster = make_cluster(3, SETTINGS)
    ports = await _ready_cluster(cluster)
    bootstrap = cluster.bootstrap  # all three: the leader is stopped for a while
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 1, 3)])
        created = await _until(
            lambda: _metadata(ports[3], [TOPIC]), lambda m: _partition(m).leader_id >= 0
        )
        first = _partition(created).leader_id
        up = next(p for b, p in ports.items() if b != first)
        await _produce(bootstrap, [f"old-{i}" for i in range(20)])
        reader = Consumer(
            bootstrap_servers=bootstrap, auto_offset_reset="earliest", metadata_max_age_ms=500
        )
        await reader.start()
        try:
            reader.assign([TP])
            assert len(await _read(reader, 10)) == 10
            cluster.brokers[first].kill()  # a leader change: the reader sees epoch 1 or more
            moved = await _until(
                lambda: _metadata(up, [TOPIC]), lambda m: _partition(m).leader_id != first
            )
            assert _partition(moved).leader_epoch >= 1
            assert _seen(await _read(reader, 10)) == [
                (i, f"old-{i}".encode()) for i in range(10, 20)
            ]
            cluster.start_broker(first)
            await _ready_cluster(cluster)

            await admin.delete_topics([TOPIC])
            await admin.create_topics([NewTopic(TOPIC, 1, 3)])
            made = await _until(
                lambda: _metadata(up, [TOPIC]), lambda m: _partition(m).leader_id >= 0
            )
            assert _partition(made).leader_epoch == 0
            await _produce(bootstrap, [f"new-{i}" for i in range(5)])
            got: list[ConsumerRecord] = []
            deadline = time.monotonic() + 60
            while len(got) < 5:
                assert time.monotonic() < deadline, f"stuck: {_seen(got)}"
                try:
                    got += (await reader.getmany(TP, timeout_ms=500)).get(TP, [])
                except UnknownTopicOrPartitionError:
                    continue  # the moment between the deletion and the new topic
            # position 20 is past the new log's end: auto_offset_reset, as for any offset
            # out of range
            assert _seen(got) == [(i, f"new-{i}".encode()) for i in range(5)]
        finally:
            await reader.stop()


async def test_a_position_inside_a_topic_made_again_is_chosen_again_by_its_id(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The new topic has grown past the reader's position by the time it fetches again
    (the reader paused meanwhile): its metadata's new topic id says the position is the
    old topic's, and auto_offset_reset reads the new topic from its start. Before, and in
    Kafka's consumer, it read on from the old position, past the new first records."""
    cluster = make_cluster(1)
    bootstrap = cluster.bootstrap
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
        await _produce(bootstrap, [f"old-{i}" for i in range(10)])
        reader = Consumer(
            bootstrap_servers=bootstrap, auto_offset_reset="earliest", metadata_max_age_ms=300
        )
        await reader.start()
        try:
            reader.assign([TP])
            assert len(await _read(reader, 10)) == 10
            reader.pause(TP)
            await admin.delete_topics([TOPIC])
            await admin.create_topics([NewTopic(TOPIC, 1, 1)])
            made = (await admin.describe_topics([TOPIC]))[0].topic_id
            await _produce(bootstrap, [f"new-{i}" for i in range(15)])
            # (its metadata, refreshed every 300 ms, has the new topic's id)
            await _until(
                lambda: asyncio.sleep(0.1, reader._cluster.metadata.topics.get(TOPIC)),
                lambda t: t is not None and format_topic_id(t.topic_id) == made,
            )
            reader.resume(TP)
            got = await _read(reader, 15)
        finally:
            await reader.stop()
    assert _seen(got) == [(i, f"new-{i}".encode()) for i in range(15)]
