"""Committed offsets on real brokers, over the raw protocol: FindCoordinator creates the
replicated offsets topic, commits are answered by the group's coordinator only, and they
survive the coordinator's broker being killed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from client import (
    Admin,
    ConfigurationError,
    Consumer,
    NewTopic,
    OffsetAndMetadata,
    Producer,
    TopicPartition,
)
from protocol.apis import (
    ApiKey,
    FindCoordinatorRequest,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetFetchRequest,
    OffsetFetchRequestTopic,
    SyncGroupRequest,
    SyncGroupRequestAssignment,
)
from protocol.errors import (
    ApiError,
    IllegalGenerationError,
    NotCoordinatorError,
    OffsetMetadataTooLargeError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_replication import FAST_ISR
from tests.integration.test_topics import _metadata, _ready_cluster, _request

pytestmark = pytest.mark.timeout(120)


async def _make_orders(cluster: Cluster, partitions: int = 4) -> None:
    """The topic the raw commits here name, known to every broker: a coordinator refuses
    offsets of a topic its broker has no metadata for (UNKNOWN_TOPIC_OR_PARTITION, as
    Kafka's)."""
    replicas = min(3, len(cluster.brokers))
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("orders", partitions, replicas)])
    for broker in cluster.brokers.values():
        await _until(
            lambda port=broker.port: _metadata(port, ["orders"]),
            lambda m: len(m.topics[0].partitions) == partitions,
        )


async def _find(port: int, group: str) -> Any:
    """The coordinator's answer, retried while it is being set up (retriable errors)."""
    request = FindCoordinatorRequest(key=group)
    return await _until(
        lambda: _retrying(_request(port, ApiKey.FIND_COORDINATOR, request)),
        lambda r: r is not None,
    )


def _commit(group: str, offsets: dict[int, int], **kw: Any) -> OffsetCommitRequest:
    return OffsetCommitRequest(
        group_id=group,
        topics=[
            OffsetCommitRequestTopic(
                name="orders",
                partitions=[
                    OffsetCommitRequestPartition(
                        partition_index=p, committed_offset=o, committed_metadata=f"m{o}"
                    )
                    for p, o in offsets.items()
                ],
            )
        ],
        **kw,
    )


async def _fetch_offsets(port: int, group: str, partitions: list[int]) -> dict[int, int]:
    request = OffsetFetchRequest(
        group_id=group,
        topics=[OffsetFetchRequestTopic(name="orders", partition_indexes=partitions)],
    )
    response = await _request(port, ApiKey.OFFSET_FETCH, request)
    return {p.partition_index: p.committed_offset for p in response.topics[0].partitions}


def _codes(response: Any) -> set[int]:
    return {p.error_code for t in response.topics for p in t.partitions}


async def test_commits_are_kept_by_the_coordinator_and_survive_its_death(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, {**FAST_ISR, "offsets.topic.num.partitions": "6"})
    ports = await _ready_cluster(cluster)
    await _make_orders(cluster)
    found = await _find(ports[1], "billing")
    meta = await _metadata(ports[1], ["__consumer_offsets"])
    offsets_topic = meta.topics[0]
    assert len(offsets_topic.partitions) == 6 and offsets_topic.is_internal
    assert all(len(p.replica_nodes) == 3 for p in offsets_topic.partitions)
    coordinator = found.node_id

    async def commit(port: int, request: OffsetCommitRequest) -> Any:
        return await _request(port, ApiKey.OFFSET_COMMIT, request)

    done = await _until(
        lambda: commit(ports[coordinator], _commit("billing", {0: 10, 1: 20, 2: 30})),
        lambda r: _codes(r) == {0},  # the new coordinator may still be loading
    )
    assert _codes(done) == {0}
    assert await _fetch_offsets(ports[coordinator], "billing", [0, 1, 2, 3]) == {
        0: 10,
        1: 20,
        2: 30,
        3: -1,  # never committed
    }
    other = next(b for b in ports if b != coordinator)
    assert _codes(await commit(ports[other], _commit("billing", {0: 11}))) == {
        NotCoordinatorError.code
    }
    stale = _commit("billing", {0: 99}, generation_id=4, member_id="zombie")
    assert _codes(await commit(ports[coordinator], stale)) == {UnknownMemberIdError.code}
    too_big = OffsetCommitRequest(
        group_id="billing",
        topics=[
            OffsetCommitRequestTopic(
                name="orders",
                partitions=[
                    OffsetCommitRequestPartition(
                        partition_index=0, committed_offset=12, committed_metadata="x" * 5000
                    )
                ],
            )
        ],
    )
    assert _codes(await commit(ports[coordinator], too_big)) == {OffsetMetadataTooLargeError.code}
    await commit(ports[coordinator], _commit("billing", {1: 21}))  # later commits win

    cluster.brokers[coordinator].kill()
    survivor = ports[other]
    moved = await _until(
        lambda: _find(survivor, "billing"), lambda r: r.node_id not in (-1, coordinator)
    )

    fetched = await _until(  # loading, or not yet the coordinator: as a client, retry
        lambda: _retrying(_fetch_offsets(ports[moved.node_id], "billing", [0, 1, 2])),
        lambda r: r is not None,
    )
    assert fetched == {0: 10, 1: 21, 2: 30}


async def test_a_consumer_commits_and_the_next_one_resumes_there(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, {**FAST_ISR, "offsets.topic.num.partitions": "3"})
    ports = await _ready_cluster(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("orders", 2, 3, {"min.insync.replicas": "2"})])
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        for i in range(100):
            await producer.send("orders", b"%d" % i, partition=i % 2)
    tps = [TopicPartition("orders", 0), TopicPartition("orders", 1)]
    async with Consumer(
        bootstrap_servers=cluster.bootstrap, group_id="app", auto_offset_reset="earliest"
    ) as consumer:
        consumer.assign(tps)
        seen = 0
        while seen < 40:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10)
            seen += sum(len(records) for records in batch.values())
        positions = {tp: await consumer.position(tp) for tp in tps}
        await consumer.commit()  # the positions of everything assigned
        assert {tp: await consumer.committed(tp) for tp in tps} == positions
        # each with the leader epoch of the records before it (KIP-320), no metadata
        found = await consumer.committed_offsets(tps)
        assert {tp: (at.offset, at.metadata) for tp, at in found.items() if at} == {
            tp: (offset, "") for tp, offset in positions.items()
        }
        read = [tp for tp in tps if positions[tp] > 0]  # (one may not have been read yet)
        assert read and all((at := found[tp]) and at.leader_epoch >= 0 for tp in read)
        # a string of the committer's own beside an offset (aiokafka's and Kafka's)
        await consumer.commit({tps[0]: OffsetAndMetadata(positions[tps[0]], "batch 7 ✓")})
        (kept,) = (await consumer.committed_offsets([tps[0]])).values()
        assert kept == OffsetAndMetadata(positions[tps[0]], "batch 7 ✓", -1)
        with pytest.raises(OffsetMetadataTooLargeError):  # offset.metadata.max.bytes
            await consumer.commit({tps[0]: OffsetAndMetadata(1, "é" * 2_049)})
        assert await consumer.committed(tps[0]) == positions[tps[0]]  # nothing changed
    assert sum(positions.values()) >= 40

    # the coordinator's broker dies; a new consumer of the group starts where it stopped
    coordinator = (await _find(ports[1], "app")).node_id
    cluster.brokers[coordinator].kill()
    async with Consumer(
        bootstrap_servers=cluster.bootstrap, group_id="app", auto_offset_reset="earliest"
    ) as consumer:
        consumer.assign(tps)
        first: dict[TopicPartition, int] = {}
        while len(first) < 2:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                first.setdefault(tp, records[0].offset)
        assert first == positions
        assert await consumer.committed(tps[0]) == positions[tps[0]]
    async with Consumer(bootstrap_servers=cluster.bootstrap) as no_group:
        with pytest.raises(ConfigurationError, match="group_id"):
            await no_group.commit({tps[0]: 1})


async def test_membership_generations_and_a_zombies_commit_refused(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        3,
        {
            **FAST_ISR,
            "offsets.topic.num.partitions": "3",
            "group.min.session.timeout.ms": "200",
            "group.initial.rebalance.delay.ms": "0",
        },
    )
    ports = await _ready_cluster(cluster)
    await _make_orders(cluster)
    port = ports[(await _find(ports[1], "workers")).node_id]

    async def call(api: ApiKey, request: Any) -> Any:
        return await _request(port, api, request)

    def join(member_id: str = "", session_ms: int = 3000) -> Any:
        return call(
            ApiKey.JOIN_GROUP,
            JoinGroupRequest(
                group_id="workers",
                session_timeout_ms=session_ms,
                member_id=member_id,
                protocol_type="consumer",
                protocols=[JoinGroupRequestProtocol(name="range", metadata=b"orders")],
            ),
        )

    a = await _until(lambda: _retrying(join()), lambda r: r is not None)
    assert (a.generation_id, a.leader) == (1, a.member_id)
    assert [(m.member_id, m.metadata) for m in a.members] == [(a.member_id, b"orders")]
    synced = await call(
        ApiKey.SYNC_GROUP,
        SyncGroupRequest(
            group_id="workers",
            generation_id=1,
            member_id=a.member_id,
            assignments=[SyncGroupRequestAssignment(member_id=a.member_id, assignment=b"p0,p1")],
        ),
    )
    assert synced.assignment == b"p0,p1"

    b_joining = asyncio.ensure_future(join(session_ms=1000))  # a second member: rebalance
    with pytest.raises(RebalanceInProgressError):
        await _until(
            lambda: call(
                ApiKey.HEARTBEAT,
                HeartbeatRequest(group_id="workers", generation_id=1, member_id=a.member_id),
            ),
            lambda _: False,
        )
    a2, b = await asyncio.gather(join(a.member_id), b_joining)
    assert a2.generation_id == b.generation_id == 2 and a2.leader == a.member_id
    stale = _commit("workers", {0: 5}, generation_id=1, member_id=a.member_id)
    assert _codes(await call(ApiKey.OFFSET_COMMIT, stale)) == {IllegalGenerationError.code}
    fresh = _commit("workers", {0: 5}, generation_id=2, member_id=a.member_id)
    # the generation formed but waits for its assignment: not yet (Kafka's rule)
    assert _codes(await call(ApiKey.OFFSET_COMMIT, fresh)) == {RebalanceInProgressError.code}
    await call(
        ApiKey.SYNC_GROUP,
        SyncGroupRequest(group_id="workers", generation_id=2, member_id=a.member_id),
    )
    assert _codes(await call(ApiKey.OFFSET_COMMIT, fresh)) == {0}
    outsider = _commit("workers", {0: 6})  # generation -1 while the group has members
    assert _codes(await call(ApiKey.OFFSET_COMMIT, outsider)) == {UnknownMemberIdError.code}

    # b goes silent past its session: it is dropped, and a is told to rejoin
    with pytest.raises(RebalanceInProgressError):
        await _until(
            lambda: call(
                ApiKey.HEARTBEAT,
                HeartbeatRequest(group_id="workers", generation_id=2, member_id=a.member_id),
            ),
            lambda _: False,
        )
    a3 = await join(a.member_id)
    assert a3.generation_id == 3 and [m.member_id for m in a3.members] == [a.member_id]
    zombie = _commit("workers", {1: 9}, generation_id=2, member_id=b.member_id)
    assert _codes(await call(ApiKey.OFFSET_COMMIT, zombie)) == {UnknownMemberIdError.code}
    assert await _fetch_offsets(port, "workers", [0, 1]) == {0: 5, 1: -1}


async def _retrying(call: Any) -> Any:
    try:
        return await call
    except ApiError as exc:
        if not exc.retriable:
            raise
        return None
