"""OffsetDelete at the coordinator: a commit still being written when the delete comes
is deleted too, and the members' subscriptions are read from Kafka's ConsumerProtocol
bytes of any version."""

from __future__ import annotations

import asyncio

from broker.coordinator.coordinator import GroupCoordinator, _subscribed_topics
from broker.coordinator.group import Group, Member
from client.assignors import Subscription, encode_subscription
from protocol.apis import (
    OffsetDeleteRequest,
    OffsetDeleteRequestPartition,
    OffsetDeleteRequestTopic,
    OffsetFetchRequest,
    OffsetFetchRequestTopic,
)
from tests.unit.test_coordinator_groups import OURS, _commit, _coordinator


def _delete(group: str, partitions: list[int]) -> OffsetDeleteRequest:
    return OffsetDeleteRequest(
        group_id=group,
        topics=[
            OffsetDeleteRequestTopic(
                name="t",
                partitions=[OffsetDeleteRequestPartition(partition_index=p) for p in partitions],
            )
        ],
    )


async def _committed(coordinator: GroupCoordinator, group: str) -> int:
    request = OffsetFetchRequest(
        group_id=group, topics=[OffsetFetchRequestTopic(name="t", partition_indexes=[0])]
    )
    return (await coordinator.offset_fetch(request)).topics[0].partitions[0].committed_offset


async def test_a_commit_being_written_is_deleted_too() -> None:
    """From a review: a first commit still being replicated was not in the offsets yet,
    so the delete answered 'deleted' and the commit landed after it."""
    coordinator, replicas = _coordinator()
    await coordinator.offset_commit(_commit(OURS, {1: 3}))  # the group exists
    replicas.gate = asyncio.get_running_loop().create_future()
    commit = asyncio.create_task(coordinator.offset_commit(_commit(OURS, {0: 7})))
    await asyncio.sleep(0)
    deleting = asyncio.create_task(coordinator.delete_offsets(_delete(OURS, [0])))
    await asyncio.sleep(0)
    replicas.gate.set_result(None)
    await commit
    answer = await deleting
    assert answer.topics[0].partitions[0].error_code == 0
    assert await _committed(coordinator, OURS) == -1  # in memory
    assert ("t", 0) not in replicas.reload().get(OURS)  # and in the log


def test_subscriptions_of_every_version_and_an_unreadable_one() -> None:
    group = Group("g", lambda: 0)
    group.protocol_name = "range"
    for version in (0, 1, 3):
        data = encode_subscription(Subscription(["a", "bb"], b"", []))
        data = version.to_bytes(2, "big") + data[2:]
        group.members = {
            "m": Member("m", None, "", 1000, 1000, "consumer", [("range", data)], 0, "", b"")
        }
        assert _subscribed_topics(group) == {"a", "bb"}
    null = b"\x00\x00\xff\xff\xff\xff"  # a null topic list: every topic counts as subscribed
    group.members["m"] = Member(
        "m", None, "", 1000, 1000, "consumer", [("range", null)], 0, "", b""
    )
    assert _subscribed_topics(group) is None
