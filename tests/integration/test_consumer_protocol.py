"""Headwater's own consumer on Kafka 4's consumer group protocol (KIP-848,
``group_protocol="consumer"``), with real broker processes: the brokers assign, two
consumers share a topic's partitions (never one at once), the one that stays takes the
other's when it closes, every record is read, and the group's committed offsets are
where they stopped. Beside them, a librdkafka consumer of the same protocol in the same
group gets its share too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from client import Admin, Consumer, NewTopic, OffsetSpec, Producer, TopicPartition
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.timeout(120)

TOPIC = "kip848-own"
GROUP = "own-new-protocol"
SETTINGS = {"group.consumer.heartbeat.interval.ms": "300"}


async def _produce(cluster: Cluster, first: int, count: int) -> None:
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        futures = [
            await producer.send(TOPIC, b"r%d" % i, key=b"%d" % i)
            for i in range(first, first + count)
        ]
        await asyncio.gather(*futures)


def _consumer(cluster: Cluster) -> Consumer:
    return Consumer(
        TOPIC,
        bootstrap_servers=cluster.bootstrap,
        group_id=GROUP,
        group_protocol="consumer",
        auto_offset_reset="earliest",
        auto_commit_interval_ms=200,
    )


async def _read(
    consumers: dict[str, Consumer],
    seen: dict[str, list[tuple[int, int, bytes]]],
    done: Callable[[], bool],
    overlaps: list[set[TopicPartition]],
) -> None:
    """Poll every consumer in turn until ``done`` (or a minute), noting any partition two
    of them hold at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not done() and loop.time() < deadline:
        for name, consumer in consumers.items():
            batch = await consumer.getmany(timeout_ms=50)
            for tp, records in batch.items():
                seen[name] += [(tp.partition, r.offset, r.value) for r in records]
        held = [c.assignment() for c in consumers.values()]
        if len(held) == 2 and held[0] & held[1]:
            overlaps.append(held[0] & held[1])


async def test_headwater_consumers_of_the_new_protocol_share_and_hand_over(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, SETTINGS)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 6, 1)])
    await _produce(cluster, 0, 300)
    seen: dict[str, list[tuple[int, int, bytes]]] = {"a": [], "b": []}
    overlaps: list[set[TopicPartition]] = []
    a, b = _consumer(cluster), _consumer(cluster)
    await a.start()
    try:
        await _read({"a": a}, seen, lambda: len(seen["a"]) >= 300, overlaps)
        assert len(a.assignment()) == 6
        await b.start()

        def shared() -> bool:
            return len(a.assignment()) == 3 and len(b.assignment()) == 3

        await _read({"a": a, "b": b}, seen, shared, overlaps)
        assert shared() and not overlaps  # three each, never the same one at once
        await _produce(cluster, 300, 300)
        await _read({"a": a, "b": b}, seen, lambda: sum(map(len, seen.values())) >= 600, overlaps)
        await a.stop()  # commits what it read, gives its partitions up, leaves
        await _produce(cluster, 600, 300)
        await _read(
            {"b": b},
            seen,
            lambda: (
                len(b.assignment()) == 6 and len({v for s in seen.values() for *_, v in s}) == 900
            ),
            overlaps,
        )
        assert len(b.assignment()) == 6
    finally:
        await a.stop()
        await b.stop()
    values = {v for s in seen.values() for *_, v in s}
    assert values == {b"r%d" % i for i in range(900)}  # every record read
    for records in seen.values():  # each consumer: each partition in order, nothing twice
        by_partition: dict[int, list[int]] = {}
        for p, o, _ in records:
            by_partition.setdefault(p, []).append(o)
        assert all(offsets == sorted(set(offsets)) for offsets in by_partition.values())
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        committed = await admin.list_group_offsets(GROUP)
        ends = await admin.list_offsets(
            {TopicPartition(TOPIC, p): OffsetSpec.latest() for p in range(6)}
        )
        (group,) = await admin.describe_groups([GROUP])
    assert committed == {tp: at.offset for tp, at in ends.items()}
    assert (group.protocol_type, group.state) == ("consumer", "Empty")


async def test_headwater_consumers_move_a_group_to_the_new_protocol_and_back(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Kafka's online migration with Headwater's own consumers: a classic one reads; one
    of the new protocol joins the same group (the group moves to the new protocol, the
    classic one is assigned by the broker through JoinGroup and SyncGroup): they share
    the topic, never a partition at once; the new one stops (back to classic) and the
    classic one takes everything. Every record read, the offsets where they stopped."""
    cluster = make_cluster(1, SETTINGS)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 6, 1)])
    await _produce(cluster, 0, 300)
    seen: dict[str, list[tuple[int, int, bytes]]] = {"classic": [], "new": []}
    overlaps: list[set[TopicPartition]] = []
    classic = Consumer(
        TOPIC,
        bootstrap_servers=cluster.bootstrap,
        group_id=GROUP,
        auto_offset_reset="earliest",
        auto_commit_interval_ms=200,
        heartbeat_interval_ms=300,
    )
    new = _consumer(cluster)
    await classic.start()
    try:
        await _read({"classic": classic}, seen, lambda: len(seen["classic"]) >= 300, overlaps)
        await new.start()

        def shared() -> bool:
            held = classic.assignment(), new.assignment()
            return all(held) and len(held[0] | held[1]) == 6

        await _read({"classic": classic, "new": new}, seen, shared, overlaps)
        assert shared() and not overlaps
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            (mixed,) = await admin.describe_groups([GROUP])
        assert mixed.protocol_type == "consumer" and len(mixed.members) == 2
        await _produce(cluster, 300, 300)
        await _read(
            {"classic": classic, "new": new},
            seen,
            lambda: len({v for s in seen.values() for *_, v in s}) >= 600,
            overlaps,
        )
        await new.stop()  # the last member of the new protocol leaves: back to classic
        await _produce(cluster, 600, 300)
        await _read(
            {"classic": classic},
            seen,
            lambda: (
                len(classic.assignment()) == 6
                and len({v for s in seen.values() for *_, v in s}) == 900
            ),
            overlaps,
        )
        assert len(classic.assignment()) == 6 and not overlaps
    finally:
        await new.stop()
        await classic.stop()
    assert {v for s in seen.values() for *_, v in s} == {b"r%d" % i for i in range(900)}
    (broker,) = cluster.brokers.values()
    events = [json.loads(line).get("event") for line in broker.log_path.read_text().splitlines()]
    assert "group.upgraded" in events and "group.downgraded" in events
