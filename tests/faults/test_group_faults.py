"""A group of Kafka's new consumer protocol (KIP-848) under kill -9 of its coordinator:
two librdkafka consumers with ``group.protocol=consumer`` go on under the new
coordinator, which loads the group from ``__consumer_offsets`` as it was (the same
members at the same epoch: no rebalance), every record is read (at least once: what was
read since the last commit may be read again), and the group ends with every partition
assigned once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer as RdConsumer

from client import Admin, NewTopic
from client.types import GroupDescription
from protocol.group_log import OFFSETS_TOPIC, partition_for
from tests.integration.conftest import Cluster
from tests.integration.test_kafka_protocol import KAFKA_LISTENER, _rd_produce, kafka_bootstrap

pytestmark = pytest.mark.timeout(240)

GROUP = "kip848-faults"
TOPIC = "kf"
SETTINGS = {
    **KAFKA_LISTENER,
    "group.consumer.heartbeat.interval.ms": "300",
    "group.consumer.session.timeout.ms": "6000",
    "offsets.topic.num.partitions": "3",
}


def _consumer(bootstrap: str) -> RdConsumer:
    made = RdConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 200,
        }
    )
    made.subscribe([TOPIC])
    return made


def _poll_until(
    consumers: list[RdConsumer], seen: set[bytes], done: Callable[[], bool], limit_s: float = 90
) -> None:
    deadline = time.monotonic() + limit_s
    while not done() and time.monotonic() < deadline:
        for c in consumers:
            message = c.poll(0.05)
            if message is not None and message.error() is None:
                seen.add(message.value())


def _member_ids(group: GroupDescription) -> set[str]:
    return {m.member_id for m in group.members}


async def _settled(admin: Admin, consumers: list[RdConsumer], seen: set[bytes]) -> GroupDescription:
    """The group once it is Stable with just ``consumers``' members (polling them)."""
    deadline = time.monotonic() + 30
    while True:
        (group,) = await admin.describe_groups([GROUP])
        if group.state == "Stable" and len(group.members) == len(consumers):
            return group
        assert time.monotonic() < deadline, group
        await asyncio.to_thread(_poll_until, consumers, seen, lambda: False, 0.3)


async def test_a_new_protocol_group_goes_on_after_its_coordinator_is_killed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, SETTINGS)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 6, 3)])
    bootstrap = kafka_bootstrap(cluster)
    await asyncio.to_thread(_rd_produce, bootstrap, TOPIC, 0, 600)
    consumers = [_consumer(bootstrap), _consumer(bootstrap)]
    seen: set[bytes] = set()

    def both_assigned() -> bool:
        return all(c.assignment() for c in consumers) and len(seen) == 600

    try:
        await asyncio.to_thread(_poll_until, consumers, seen, both_assigned)
        assert both_assigned()
        # a third comes and goes: the group's epoch is past what a group formed again
        # from nothing would reach (2)
        third = _consumer(bootstrap)
        await asyncio.to_thread(third.poll, 3)
        await asyncio.to_thread(third.close)
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            (offsets,) = await admin.describe_topics([OFFSETS_TOPIC])
            before = await _settled(admin, consumers, seen)
        assert before.generation >= 3
        index = partition_for(GROUP, 3)
        coordinator = next(p.leader for p in offsets.partitions if p.partition == index)
        cluster.brokers[coordinator].kill()  # kill -9
        await asyncio.to_thread(_rd_produce, kafka_bootstrap(cluster), TOPIC, 600, 600)

        def everything_and_settled() -> bool:
            owned = [{tp.partition for tp in c.assignment()} for c in consumers]
            return (
                len(seen) == 1200
                and all(owned)
                and not owned[0] & owned[1]
                and owned[0] | owned[1] == set(range(6))
            )

        await asyncio.to_thread(_poll_until, consumers, seen, everything_and_settled)
        assert seen == {f"r{i}".encode() for i in range(1200)}  # none lost
        assert everything_and_settled()
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            after = (await admin.describe_groups([GROUP]))[0]
        # the new coordinator has the group as it was: the same members, the same epoch
        assert after.coordinator is not None and after.coordinator.node_id != coordinator
        assert (after.generation, _member_ids(after)) == (before.generation, _member_ids(before))
    finally:
        for c in consumers:
            await asyncio.to_thread(c.close)
