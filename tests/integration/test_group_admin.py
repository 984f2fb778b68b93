"""Group administration and static membership on real brokers, over the raw protocol:
ListGroups asked of every broker, DescribeGroups and DeleteGroups at the coordinator, a
deleted group's offsets staying gone when its coordinator is killed, a static member
(KIP-345) that restarts without a rebalance, and a group undisturbed when a broker that
only follows its offsets partition is killed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from protocol.apis import (
    ApiKey,
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    LeaveGroupRequest,
    ListGroupsRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
    SyncGroupRequestAssignment,
)
from protocol.errors import (
    FencedInstanceIdError,
    GroupIdNotFoundError,
    NonEmptyGroupError,
    NotCoordinatorError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)
from protocol.group_log import OFFSETS_TOPIC, partition_for
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_offsets import _codes, _commit, _find, _make_orders, _retrying
from tests.integration.test_replication import FAST_ISR
from tests.integration.test_topics import _metadata, _ready_cluster, _request

pytestmark = pytest.mark.timeout(120)

GROUP_SETTINGS = {
    **FAST_ISR,
    "offsets.topic.num.partitions": "3",
    "group.min.session.timeout.ms": "200",
    "group.initial.rebalance.delay.ms": "0",
}


def _join(group: str, member_id: str = "", instance: str | None = None) -> JoinGroupRequest:
    return JoinGroupRequest(
        group_id=group,
        session_timeout_ms=10_000,
        member_id=member_id,
        group_instance_id=instance,
        protocol_type="consumer",
        protocols=[JoinGroupRequestProtocol(name="range", metadata=b"orders")],
    )


def _sync(group: str, generation: int, member_id: str, assignments: dict[str, bytes]) -> Any:
    return SyncGroupRequest(
        group_id=group,
        generation_id=generation,
        member_id=member_id,
        assignments=[
            SyncGroupRequestAssignment(member_id=m, assignment=a) for m, a in assignments.items()
        ],
    )


async def _listed(ports: dict[int, int], states: list[str] | None = None) -> dict[str, str]:
    """Every broker's groups, merged (as the admin client does): group -> state."""
    merged: dict[str, str] = {}
    for port in ports.values():
        response = await _request(
            port, ApiKey.LIST_GROUPS, ListGroupsRequest(states_filter=states or [])
        )
        merged.update({g.group_id: g.group_state for g in response.groups})
    return merged


async def _coordinator_port(ports: dict[int, int], group: str) -> int:
    return ports[(await _find(next(iter(ports.values())), group)).node_id]


async def test_list_describe_delete_and_a_deleted_group_stays_deleted_after_failover(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_SETTINGS)
    ports = await _ready_cluster(cluster)
    await _make_orders(cluster)
    workers = await _coordinator_port(ports, "workers")
    archive = await _coordinator_port(ports, "archive")

    joined = await _until(
        lambda: _retrying(_request(workers, ApiKey.JOIN_GROUP, _join("workers"))),
        lambda r: r is not None,
    )
    me = joined.member_id
    await _request(workers, ApiKey.SYNC_GROUP, _sync("workers", 1, me, {me: b"p0"}))
    committed = await _until(  # the coordinator may still be loading its partition
        lambda: _request(archive, ApiKey.OFFSET_COMMIT, _commit("archive", {0: 10, 1: 20})),
        lambda r: _codes(r) == {0},
    )
    assert _codes(committed) == {0}

    assert await _listed(ports) == {"workers": "Stable", "archive": "Empty"}
    assert await _listed(ports, ["Stable"]) == {"workers": "Stable"}
    described = await _request(
        workers, ApiKey.DESCRIBE_GROUPS, DescribeGroupsRequest(groups=["workers", "nobody"])
    )
    group, unknown = described.groups
    if unknown.error_code:  # "nobody" is placed on another broker
        assert unknown.error_code == NotCoordinatorError.code
    else:
        assert (unknown.group_state, unknown.members) == ("Dead", [])
    assert (group.group_state, group.protocol_type, group.protocol_data) == (
        "Stable",
        "consumer",
        "range",
    )
    assert (group.generation_id, group.leader) == (1, me)
    assert [(m.member_id, m.member_metadata, m.member_assignment) for m in group.members] == [
        (me, b"orders", b"p0")
    ]
    elsewhere = next(p for p in ports.values() if p != workers)
    away = await _request(
        elsewhere, ApiKey.DESCRIBE_GROUPS, DescribeGroupsRequest(groups=["workers"])
    )
    assert away.groups[0].error_code == NotCoordinatorError.code

    async def delete(port: int, name: str) -> int:
        response = await _request(
            port, ApiKey.DELETE_GROUPS, DeleteGroupsRequest(groups_names=[name])
        )
        return int(response.results[0].error_code)

    assert await delete(workers, "workers") == NonEmptyGroupError.code
    await _request(workers, ApiKey.LEAVE_GROUP, LeaveGroupRequest(group_id="workers", member_id=me))
    assert await delete(workers, "workers") == 0
    assert await delete(archive, "archive") == 0
    assert await delete(archive, "archive") == GroupIdNotFoundError.code
    assert await _listed(ports) == {}

    # the archive's coordinator dies: the new one loads the partition, tombstones included
    dead = next(b for b, p in ports.items() if p == archive)
    cluster.brokers[dead].kill()
    survivors = {b: p for b, p in ports.items() if b != dead}
    moved = await _until(
        lambda: _find(survivors[min(survivors)], "archive"),
        lambda r: r.node_id not in (-1, dead),
    )
    fetched = await _until(  # loading, or not the coordinator yet: as a client, retry
        lambda: _retrying(
            _request(
                survivors[moved.node_id],
                ApiKey.OFFSET_FETCH,
                OffsetFetchRequest(group_id="archive"),
            )
        ),
        lambda r: r is not None,
    )
    assert fetched.topics == []  # every committed offset stays deleted
    assert "archive" not in await _listed(survivors)


async def test_a_static_member_restarts_without_a_rebalance(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_SETTINGS)
    ports = await _ready_cluster(cluster)
    await _make_orders(cluster)  # what the stale commit names (an unknown topic is refused first)
    port = await _coordinator_port(ports, "static")

    async def call(api: ApiKey, request: Any) -> Any:
        return await _request(port, api, request)

    def heartbeat(member_id: str, generation: int, instance: str | None = None) -> Any:
        request = HeartbeatRequest(
            group_id="static",
            generation_id=generation,
            member_id=member_id,
            group_instance_id=instance,
        )
        return call(ApiKey.HEARTBEAT, request)

    a = await _until(
        lambda: _retrying(call(ApiKey.JOIN_GROUP, _join("static", instance="host-a"))),
        lambda r: r is not None,
    )
    await call(ApiKey.SYNC_GROUP, _sync("static", 1, a.member_id, {a.member_id: b"all"}))
    b_joining = asyncio.ensure_future(call(ApiKey.JOIN_GROUP, _join("static", instance="host-b")))
    with pytest.raises(RebalanceInProgressError):  # b has arrived: a must rejoin
        await _until(lambda: heartbeat(a.member_id, 1, "host-a"), lambda _: False)
    a2 = await call(ApiKey.JOIN_GROUP, _join("static", a.member_id, "host-a"))
    b = await b_joining
    assert a2.generation_id == b.generation_id == 2 and a2.leader == a.member_id
    b_sync = asyncio.ensure_future(call(ApiKey.SYNC_GROUP, _sync("static", 2, b.member_id, {})))
    plan = {a.member_id: b"p0", b.member_id: b"p1"}
    assert (await call(ApiKey.SYNC_GROUP, _sync("static", 2, a.member_id, plan))).assignment == (
        b"p0"
    )
    assert (await b_sync).assignment == b"p1"

    # host-a restarts: it joins without its member id, within its session timeout
    restarted = await call(ApiKey.JOIN_GROUP, _join("static", instance="host-a"))
    assert restarted.generation_id == 2 and restarted.member_id != a.member_id
    assert restarted.leader == a.member_id  # the old id: the restarted leader does not assign
    await heartbeat(b.member_id, 2)  # no rebalance: b carries on
    again = await call(ApiKey.SYNC_GROUP, _sync("static", 2, restarted.member_id, {}))
    assert again.assignment == b"p0"  # its assignment from before the restart
    with pytest.raises(FencedInstanceIdError):
        await heartbeat(a.member_id, 2, "host-a")  # the old process, if it still runs
    with pytest.raises(UnknownMemberIdError):
        await heartbeat(a.member_id, 2)
    stale = OffsetCommitRequest(
        group_id="static",
        generation_id=2,
        member_id=a.member_id,
        group_instance_id="host-a",
        topics=_commit("static", {0: 1}).topics,
    )
    assert _codes(await call(ApiKey.OFFSET_COMMIT, stale)) == {FencedInstanceIdError.code}

    described = await call(ApiKey.DESCRIBE_GROUPS, DescribeGroupsRequest(groups=["static"]))
    members = {m.group_instance_id: m.member_id for m in described.groups[0].members}
    assert members == {"host-a": restarted.member_id, "host-b": b.member_id}

    # an administrator removes host-a by its instance id: now the group rebalances
    await call(ApiKey.LEAVE_GROUP, LeaveGroupRequest(group_id="static", group_instance_id="host-a"))
    with pytest.raises(RebalanceInProgressError):
        await heartbeat(b.member_id, 2)
    alone = await call(ApiKey.JOIN_GROUP, _join("static", b.member_id, "host-b"))
    assert alone.generation_id == 3 and [m.member_id for m in alone.members] == [b.member_id]


async def test_a_stable_group_keeps_its_generation_when_its_coordinator_is_killed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_SETTINGS)
    ports = await _ready_cluster(cluster)
    port = await _coordinator_port(ports, "steady")
    a = await _until(
        lambda: _retrying(_request(port, ApiKey.JOIN_GROUP, _join("steady", instance="host-a"))),
        lambda r: r is not None,
    )
    plan = {a.member_id: b"p0,p1"}
    synced = await _request(port, ApiKey.SYNC_GROUP, _sync("steady", 1, a.member_id, plan))
    assert synced.assignment == b"p0,p1"  # answered once the generation is replicated

    dead = next(b for b, p in ports.items() if p == port)
    cluster.brokers[dead].kill()
    survivors = {b: p for b, p in ports.items() if b != dead}
    moved = await _until(
        lambda: _find(survivors[min(survivors)], "steady"), lambda r: r.node_id not in (-1, dead)
    )
    beat = HeartbeatRequest(
        group_id="steady", generation_id=1, member_id=a.member_id, group_instance_id="host-a"
    )
    assert await _until(  # loading, or not the coordinator yet: retry, as a member does
        lambda: _retrying(_request(survivors[moved.node_id], ApiKey.HEARTBEAT, beat)),
        lambda r: r is not None,
    )
    described = await _request(
        survivors[moved.node_id], ApiKey.DESCRIBE_GROUPS, DescribeGroupsRequest(groups=["steady"])
    )
    group = described.groups[0]
    assert (group.group_state, group.generation_id, group.leader) == ("Stable", 1, a.member_id)
    assert [(m.group_instance_id, m.member_assignment) for m in group.members] == [
        ("host-a", b"p0,p1")
    ]


async def test_a_dead_follower_of_the_offsets_partition_disturbs_no_member(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A broker that only follows the group's offsets partition is killed: the controller
    takes it out of the ISR with a new leader epoch, the leader staying. The coordinator
    keeps the group as it is: a member waiting in JoinGroup still gets its generation
    (it used to be told UNKNOWN_MEMBER_ID, the group reloaded from the log)."""
    # the leader must not shrink the ISR itself first (that keeps the epoch): only the
    # controller's removal of a dead broker is under test
    cluster = make_cluster(3, {**GROUP_SETTINGS, "replica.lag.time.max.ms": "120000"})
    ports = await _ready_cluster(cluster)
    port = await _coordinator_port(ports, "calm")

    def join(member_id: str = "") -> JoinGroupRequest:
        return dataclasses.replace(_join("calm", member_id), rebalance_timeout_ms=60_000)

    a = await _until(
        lambda: _retrying(_request(port, ApiKey.JOIN_GROUP, join())), lambda r: r is not None
    )
    await _request(port, ApiKey.SYNC_GROUP, _sync("calm", 1, a.member_id, {a.member_id: b"p0"}))
    b_joining = asyncio.ensure_future(_request(port, ApiKey.JOIN_GROUP, join()))

    def offsets_partition(meta: Any) -> Any:
        index = partition_for("calm", int(GROUP_SETTINGS["offsets.topic.num.partitions"]))
        return next(p for p in meta.topics[0].partitions if p.partition_index == index)

    meta = await _metadata(port, [OFFSETS_TOPIC])
    before = offsets_partition(meta)
    follower = next(
        r for r in before.replica_nodes if r not in (before.leader_id, meta.controller_id)
    )
    cluster.brokers[follower].kill()
    after = offsets_partition(  # the coordinator had the LeaderAndIsr before this metadata
        await _until(
            lambda: _metadata(port, [OFFSETS_TOPIC]),
            lambda m: follower not in offsets_partition(m).isr_nodes,
        )
    )
    assert after.leader_id == before.leader_id and after.leader_epoch > before.leader_epoch
    assert not b_joining.done()  # still waiting for a to rejoin
    a2 = await _request(port, ApiKey.JOIN_GROUP, join(a.member_id))
    b = await b_joining
    assert a2.generation_id == b.generation_id == 2 and a2.leader == a.member_id
    assert {m.member_id for m in a2.members} == {a.member_id, b.member_id}


async def test_a_groups_offsets_deleted_except_of_topics_a_member_subscribes_to(
    make_cluster: Callable[..., Cluster],
) -> None:
    """OffsetDelete (kafka-consumer-groups --delete-offsets): while a member subscribes
    to topic a, a's offsets stay (GROUP_SUBSCRIBED_TO_TOPIC) and b's go; once the member
    has left, a's go too; the group then starts a by its auto.offset.reset."""
    cluster = make_cluster(1, GROUP_SETTINGS)
    await _ready_cluster(cluster)
    a, b = TopicPartition("a", 0), TopicPartition("b", 0)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("a", 1, 1), NewTopic("b", 1, 1)])
        async with Producer(bootstrap_servers=cluster.bootstrap) as producer:
            for i in range(10):
                await producer.send_and_wait("a", b"%d" % i)
                await producer.send_and_wait("b", b"%d" % i)
        await admin.alter_group_offsets("g", {a: 5, b: 7})
        member = Consumer(
            "a", bootstrap_servers=cluster.bootstrap, group_id="g", enable_auto_commit=False
        )
        async with member:
            await _until(member.assignment, lambda tps: tps == {a})
            outcome = await admin.delete_consumer_group_offsets("g", [a, b])
            assert outcome[b] is None
            assert type(outcome[a]).__name__ == "GroupSubscribedToTopicError"
            assert "subscribes to 'a'" in str(outcome[a])
            assert await admin.list_group_offsets("g") == {a: 5}
        assert await admin.delete_consumer_group_offsets("g", [a]) == {a: None}
        assert await admin.list_group_offsets("g") == {}
        with pytest.raises(GroupIdNotFoundError):
            await admin.delete_consumer_group_offsets("nobody", [a])
    again = Consumer(
        "a", bootstrap_servers=cluster.bootstrap, group_id="g", auto_offset_reset="earliest"
    )
    async with again:
        first = await again.getone()
    assert first.offset == 0  # no committed offset: auto_offset_reset


async def test_a_deleted_topics_offsets_leave_every_group(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Kafka's handleDeletedPartitions: when a topic's deletion finishes, the groups'
    committed offsets of it go. Before, a topic made again under the name started its
    groups at the old topic's offset: here 7, inside the new 10 records, so the group
    silently skipped the first 7."""
    cluster = make_cluster(1, GROUP_SETTINGS)
    await _ready_cluster(cluster)
    t0 = TopicPartition("again", 0)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("again", 1, 1)])
        await admin.alter_group_offsets("g", {t0: 7})
        await admin.delete_topics(["again"])
        await _until(lambda: admin.list_group_offsets("g"), lambda offsets: offsets == {})
        # a commit of it now (a consumer that has not seen the deletion yet) is refused
        # as Kafka's is, at once (the client looks it up), and keeps nothing
        with pytest.raises(UnknownTopicOrPartitionError, match="no topic 'again'"):
            await admin.alter_group_offsets("g", {t0: 7})
        assert await admin.list_group_offsets("g") == {}
        await admin.create_topics([NewTopic("again", 1, 1)])
        async with Producer(bootstrap_servers=cluster.bootstrap) as producer:
            for i in range(10):
                await producer.send_and_wait("again", b"%d" % i)
    consumer = Consumer(
        "again", bootstrap_servers=cluster.bootstrap, group_id="g", auto_offset_reset="earliest"
    )
    async with consumer:
        first = await consumer.getone()
    assert (first.offset, first.value) == (0, b"0")
