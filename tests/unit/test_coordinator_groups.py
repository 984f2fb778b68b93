"""The coordinator's group administration (ListGroups, DescribeGroups, DeleteGroups) and
its writes to __consumer_offsets, over a fake replica manager whose "log" is a list: what
a reload would read back is exactly what was appended."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from broker.config import BrokerConfig
from broker.coordinator import coordinator as coordinator_module
from broker.coordinator import doubt as doubt_module
from broker.coordinator.coordinator import GroupCoordinator
from broker.coordinator.offsets import OffsetStore
from broker.log import Log
from broker.log.manager import TopicPartition
from broker.metadata import MetadataCache
from protocol.acls import ResourceType
from protocol.apis import (
    UPDATE_METADATA_FULL,
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    LeaveGroupMember,
    LeaveGroupRequest,
    ListGroupsRequest,
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetFetchRequest,
    OffsetFetchRequestTopic,
    ProducePartitionResponse,
    SyncGroupRequest,
    SyncGroupRequestAssignment,
    TxnOffsetCommitRequest,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)
from protocol.errors import (
    ApiError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupIdNotFoundError,
    GroupMaxSizeReachedError,
    InconsistentGroupProtocolError,
    InvalidTxnStateError,
    NonEmptyGroupError,
    NotCoordinatorError,
    NotLeaderOrFollowerError,
    UnknownMemberIdError,
)
from protocol.group_log import (
    OFFSETS_TOPIC,
    OffsetAndMetadata,
    decode_value,
    encode_group_key,
    encode_key,
    encode_value,
    partition_for,
)
from protocol.records import decode_batches, encode_batch

PARTITIONS = 2


def _named(prefix: str, partition: int) -> str:
    """A group name that lands in ``partition`` of the offsets topic."""
    return next(f"{prefix}{i}" for i in range(100) if partition_for(f"{prefix}{i}", 2) == partition)


OURS, OTHER, KEEP, NOBODY = (_named(p, 0) for p in ("g", "h", "keep", "nobody"))
NOT_OURS = _named("x", 1)


class FakeReplicas:
    """Appends to a list; ``gate`` (when set) holds every append's replication wait."""

    def __init__(self) -> None:
        self.log: list[tuple[bytes | None, bytes | None]] = []
        self.gate: asyncio.Future[None] | None = None
        self.fail_code = 0
        self.refuse_txn: ApiError | None = None  # what KIP-890's check answers

    async def check_txn_write(self, *args: object) -> ApiError | None:
        return self.refuse_txn

    def on_role_change(self, callback: Any) -> None:
        pass

    def on_txn_marker(self, callback: Any) -> None:
        self.marker_listener = callback

    async def append_records(
        self, topic: str, index: int, records: bytes, *, timeout_ms: int
    ) -> ProducePartitionResponse:
        if self.fail_code:
            return ProducePartitionResponse(index=index, error_code=self.fail_code)
        base = len(self.log)
        self.log.extend((r.key, r.value) for batch in decode_batches(records) for r in batch)
        if self.gate is not None:
            await self.gate
        return ProducePartitionResponse(index=index, base_offset=base)

    def reload(self) -> OffsetStore:
        """What a coordinator that loads the partition after a failover would hold."""
        store = OffsetStore()
        for key, value in self.log:
            store.apply(key, value)
        return store


def _new_coordinator(replicas: FakeReplicas) -> GroupCoordinator:
    config = BrokerConfig(
        {
            "offsets.topic.num.partitions": PARTITIONS,
            "group.min.session.timeout.ms": 100,
            "group.max.session.timeout.ms": 60_000,
            "group.initial.rebalance.delay.ms": 0,
            "offsets.retention.minutes": 7 * 24 * 60,
            "group.max.size": 2**31 - 1,
            "offsets.retention.check.interval.ms": 600_000,
            "group.consumer.session.timeout.ms": 45_000,
            "group.consumer.heartbeat.interval.ms": 5_000,
            "group.consumer.max.size": 2**31 - 1,
            "group.consumer.assignors": ["uniform", "range"],
            "group.share.enable": True,
            "group.share.session.timeout.ms": 45_000,
            "group.share.heartbeat.interval.ms": 5_000,
            "group.share.max.size": 200,
            "group.consumer.migration.policy": "bidirectional",
        },
        {},
    )
    return GroupCoordinator(1, config, _knowing("t"), replicas, None)  # type: ignore[arg-type]


def _knowing(*topics: str, partitions: int = 8) -> MetadataCache:
    """A broker's metadata that has ``topics``, each with ``partitions`` partitions."""
    metadata = MetadataCache()
    metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_FULL,
            partition_states=[
                UpdateMetadataPartitionState(
                    topic_name=t,
                    partition_index=p,
                    controller_epoch=1,
                    leader=1,
                    leader_epoch=0,
                    isr=[1],
                    replicas=[1],
                )
                for t in topics
                for p in range(partitions)
            ],
        )
    )
    return metadata


def _coordinator(replicas: FakeReplicas | None = None) -> tuple[GroupCoordinator, FakeReplicas]:
    """A coordinator that has loaded partition 0 (from ``replicas``' log, if given: a
    failover to a broker that has the same log); partition 1 is coordinated elsewhere."""
    loaded = OffsetStore() if replicas is None else replicas.reload()
    replicas = replicas or FakeReplicas()
    coordinator = _new_coordinator(replicas)
    coordinator._loaded(0, loaded)
    return coordinator, replicas


def _commit(group: str, offsets: dict[int, int], **kw: Any) -> OffsetCommitRequest:
    return OffsetCommitRequest(
        group_id=group,
        topics=[
            OffsetCommitRequestTopic(
                name="t",
                partitions=[
                    OffsetCommitRequestPartition(partition_index=p, committed_offset=o)
                    for p, o in offsets.items()
                ],
            )
        ],
        **kw,
    )


async def _stable_member(coordinator: GroupCoordinator, group: str) -> str:
    joined = await coordinator.join_group(
        JoinGroupRequest(
            group_id=group,
            session_timeout_ms=10_000,
            group_instance_id="host-1",
            protocol_type="consumer",
            protocols=[
                JoinGroupRequestProtocol(name="range", metadata=b"sub-range"),
                JoinGroupRequestProtocol(name="sticky", metadata=b"sub-sticky"),
            ],
        )
    )
    await coordinator.sync_group(
        SyncGroupRequest(
            group_id=group,
            generation_id=joined.generation_id,
            member_id=joined.member_id,
            assignments=[SyncGroupRequestAssignment(member_id=joined.member_id, assignment=b"p0")],
        )
    )
    return joined.member_id


async def test_list_and_describe_the_groups_this_broker_coordinates() -> None:
    coordinator, replicas = _coordinator()
    member = await _stable_member(coordinator, OURS)
    assert [key for key, _ in replicas.log] == [encode_group_key(OURS)]  # the generation
    coordinator.stores[0].apply(
        *coordinator.stores[0].commit(OTHER, [("t", 0, OffsetAndMetadata(5))])[0]
    )

    listed = await coordinator.list_groups(ListGroupsRequest())
    assert [(g.group_id, g.protocol_type, g.group_state) for g in listed.groups] == sorted(
        [(OURS, "consumer", "Stable"), (OTHER, "", "Empty")]  # OTHER only has offsets
    )
    only_empty = await coordinator.list_groups(ListGroupsRequest(states_filter=["empty"]))
    assert [g.group_id for g in only_empty.groups] == [OTHER]

    described = await coordinator.describe_groups(
        DescribeGroupsRequest(groups=[OURS, OTHER, NOBODY, NOT_OURS, ""])
    )
    stable, offsets_only, unknown, elsewhere, invalid = described.groups
    assert (stable.error_code, stable.group_state, stable.protocol_type) == (
        0,
        "Stable",
        "consumer",
    )
    assert (stable.protocol_data, stable.generation_id, stable.leader) == ("range", 1, member)
    [m] = stable.members
    assert (m.member_id, m.group_instance_id) == (member, "host-1")
    assert (m.member_metadata, m.member_assignment) == (b"sub-range", b"p0")  # the chosen one
    assert (m.client_id, m.client_host) == ("", "")  # not known to the coordinator
    assert (offsets_only.group_state, offsets_only.members) == ("Empty", [])
    assert (unknown.error_code, unknown.group_state, unknown.members) == (0, "Dead", [])
    assert elsewhere.error_code == NotCoordinatorError.code
    assert invalid.error_code == 24  # INVALID_GROUP_ID

    coordinator._loading[1] = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
    loading = await coordinator.describe_groups(DescribeGroupsRequest(groups=[NOT_OURS]))
    assert loading.groups[0].error_code == CoordinatorLoadInProgressError.code
    listed = await coordinator.list_groups(ListGroupsRequest())
    assert listed.error_code == CoordinatorLoadInProgressError.code and len(listed.groups) == 2
    assert len(replicas.log) == 1  # reading writes nothing


async def test_delete_writes_tombstones_that_a_reload_honours() -> None:
    coordinator, replicas = _coordinator()
    await _stable_member(coordinator, OURS)
    await coordinator.offset_commit(_commit(OTHER, {0: 10, 1: 20}))
    await coordinator.offset_commit(_commit(KEEP, {0: 7}))

    response = await coordinator.delete_groups(
        DeleteGroupsRequest(groups_names=[OURS, OTHER, NOBODY, NOT_OURS])
    )
    codes = {r.group_id: r.error_code for r in response.results}
    assert codes == {
        OURS: NonEmptyGroupError.code,
        OTHER: 0,
        NOBODY: GroupIdNotFoundError.code,
        NOT_OURS: NotCoordinatorError.code,
    }
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OTHER))
    assert fetched.topics == []
    assert OTHER not in coordinator.groups
    listed = await coordinator.list_groups(ListGroupsRequest())
    assert OTHER not in {g.group_id for g in listed.groups}
    tombstones = [(encode_key(OTHER, "t", p), None) for p in (0, 1)]
    assert replicas.log[-3:] == [*tombstones, (encode_group_key(OTHER), None)]
    reloaded = replicas.reload()
    assert reloaded.get(OTHER) == {}
    assert {tp: v.offset for tp, v in reloaded.get(KEEP).items()} == {("t", 0): 7}
    again = await coordinator.delete_groups(DeleteGroupsRequest(groups_names=[OTHER]))
    assert again.results[0].error_code == GroupIdNotFoundError.code


async def test_a_commit_in_flight_when_the_group_is_deleted_stays_deleted() -> None:
    coordinator, replicas = _coordinator()
    replicas.gate = asyncio.get_running_loop().create_future()
    commit = asyncio.ensure_future(coordinator.offset_commit(_commit(OTHER, {3: 30})))
    await asyncio.sleep(0)  # its record is in the log; it waits for the replicas
    delete = asyncio.ensure_future(
        coordinator.delete_groups(DeleteGroupsRequest(groups_names=[OTHER]))
    )
    for _ in range(10):  # until its tombstones wait for the replicas
        if coordinator.groups[OTHER].state == "Dead":
            break
        await asyncio.sleep(0)
    late = await coordinator.offset_commit(_commit(OTHER, {4: 40}))  # the group is Dead now
    assert late.topics[0].partitions[0].error_code == 15  # COORDINATOR_NOT_AVAILABLE: retry
    replicas.gate.set_result(None)
    assert (await commit).topics[0].partitions[0].error_code == 0
    assert (await delete).results[0].error_code == 0
    assert coordinator.stores[0].get(OTHER) == {} and replicas.reload().get(OTHER) == {}


async def test_a_delete_that_could_not_be_written_leaves_the_group() -> None:
    coordinator, replicas = _coordinator()
    await coordinator.offset_commit(_commit(OTHER, {0: 1}))
    replicas.fail_code = 6  # NOT_LEADER_OR_FOLLOWER: the leadership moved
    response = await coordinator.delete_groups(DeleteGroupsRequest(groups_names=[OTHER]))
    assert response.results[0].error_code == NotCoordinatorError.code
    assert coordinator.groups[OTHER].state == "Empty"
    assert coordinator.stores[0].get(OTHER) != {}


@pytest.mark.parametrize("members", [0, 1])
async def test_an_empty_group_is_deleted_with_its_metadata(members: int) -> None:
    coordinator, replicas = _coordinator()
    if members:
        member = await _stable_member(coordinator, OURS)
        coordinator.groups[OURS].leave(member)  # Empty: stored as such (Kafka's storeGroup)
        await asyncio.wait(coordinator._group_writes.values())
        assert replicas.reload().group_metadata[OURS].members == []
    else:
        coordinator._group(OURS)
    response = await coordinator.delete_groups(DeleteGroupsRequest(groups_names=[OURS]))
    assert response.results[0].error_code == 0 and OURS not in coordinator.groups
    assert replicas.log[-1] == (encode_group_key(OURS), None)  # always, as Kafka's
    assert OURS not in replicas.reload().group_metadata


# --- group metadata in the log: a failover keeps the generation ----------------------------


def _join(group: str, member_id: str = "", instance: str | None = None) -> JoinGroupRequest:
    return JoinGroupRequest(
        group_id=group,
        session_timeout_ms=10_000,
        member_id=member_id,
        group_instance_id=instance,
        protocol_type="consumer",
        protocols=[
            JoinGroupRequestProtocol(name="range", metadata=(instance or "dynamic").encode())
        ],
    )


async def _two_members(coordinator: GroupCoordinator) -> tuple[str, str]:
    """Generation 2 of OURS: static host-a (the leader, p0) and dynamic b (p1)."""
    a = await coordinator.join_group(_join(OURS, instance="host-a"))
    await coordinator.sync_group(
        SyncGroupRequest(group_id=OURS, generation_id=1, member_id=a.member_id)
    )
    b_joining = asyncio.ensure_future(coordinator.join_group(_join(OURS)))
    await asyncio.sleep(0)
    a2 = await coordinator.join_group(_join(OURS, a.member_id, "host-a"))
    b = await b_joining
    assert a2.generation_id == b.generation_id == 2 and a2.leader == a.member_id
    b_sync = asyncio.ensure_future(
        coordinator.sync_group(
            SyncGroupRequest(group_id=OURS, generation_id=2, member_id=b.member_id)
        )
    )
    plan = {a.member_id: b"p0", b.member_id: b"p1"}
    await coordinator.sync_group(
        SyncGroupRequest(
            group_id=OURS,
            generation_id=2,
            member_id=a.member_id,
            assignments=[
                SyncGroupRequestAssignment(member_id=m, assignment=p) for m, p in plan.items()
            ],
        )
    )
    assert (await b_sync).assignment == b"p1"
    return a.member_id, b.member_id


async def test_a_stable_group_keeps_its_generation_across_a_coordinator_failover() -> None:
    old, replicas = _coordinator()
    a, b = await _two_members(old)
    new, _ = _coordinator(replicas)  # the partition's new leader loads the same log

    await new.heartbeat(
        HeartbeatRequest(group_id=OURS, generation_id=2, member_id=a, group_instance_id="host-a")
    )
    await new.heartbeat(HeartbeatRequest(group_id=OURS, generation_id=2, member_id=b))
    synced = await new.sync_group(SyncGroupRequest(group_id=OURS, generation_id=2, member_id=b))
    assert synced.assignment == b"p1"
    committed = await new.offset_commit(_commit(OURS, {0: 5}, generation_id=2, member_id=b))
    assert committed.topics[0].partitions[0].error_code == 0
    [described] = (await new.describe_groups(DescribeGroupsRequest(groups=[OURS]))).groups
    assert (described.group_state, described.generation_id, described.leader) == ("Stable", 2, a)
    assert described.protocol_data == "range"
    assert [
        (m.member_id, m.group_instance_id, m.member_metadata, m.member_assignment)
        for m in described.members
    ] == [
        (a, "host-a", b"host-a", b"p0"),
        (b, None, b"dynamic", b"p1"),
    ]

    # host-a restarts against the new coordinator: no rebalance, and its new member id is
    # stored before it is answered, so a second failover knows it too
    restarted = await new.join_group(_join(OURS, instance="host-a"))
    assert restarted.generation_id == 2 and restarted.member_id != a
    newer, _ = _coordinator(replicas)
    await newer.heartbeat(
        HeartbeatRequest(
            group_id=OURS,
            generation_id=2,
            member_id=restarted.member_id,
            group_instance_id="host-a",
        )
    )
    with pytest.raises(FencedInstanceIdError):
        await newer.heartbeat(
            HeartbeatRequest(
                group_id=OURS, generation_id=2, member_id=a, group_instance_id="host-a"
            )
        )
    assert (
        await newer.sync_group(
            SyncGroupRequest(group_id=OURS, generation_id=2, member_id=restarted.member_id)
        )
    ).assignment == b"p0"


async def test_an_emptied_group_is_stored_and_its_generations_go_on() -> None:
    old, replicas = _coordinator()
    _, b = await _two_members(old)
    await old.leave_group(LeaveGroupRequest(group_id=OURS, group_instance_id="host-a"))
    await old.leave_group(LeaveGroupRequest(group_id=OURS, member_id=b))
    await asyncio.wait(old._group_writes.values())
    new, _ = _coordinator(replicas)
    listed = await new.list_groups(ListGroupsRequest())
    assert [(g.group_id, g.protocol_type, g.group_state) for g in listed.groups] == [
        (OURS, "consumer", "Empty")
    ]
    with pytest.raises(UnknownMemberIdError):
        await new.heartbeat(HeartbeatRequest(group_id=OURS, generation_id=2, member_id=b))
    again = await new.join_group(_join(OURS))
    assert again.generation_id == 4  # 2, then 3 when it emptied: numbers are not reused


async def test_a_group_store_that_fails_is_refused_and_costs_only_a_rebalance() -> None:
    old, replicas = _coordinator()
    replicas.fail_code = 7  # REQUEST_TIMED_OUT (not appended, in this fake)
    a = await old.join_group(_join(OURS, instance="host-a"))
    with pytest.raises(CoordinatorNotAvailableError):  # retriable: the member joins again
        await old.sync_group(
            SyncGroupRequest(
                group_id=OURS,
                generation_id=1,
                member_id=a.member_id,
                assignments=[SyncGroupRequestAssignment(member_id=a.member_id, assignment=b"p0")],
            )
        )
    assert old.groups[OURS].state == "PreparingRebalance"
    new, _ = _coordinator(replicas)
    with pytest.raises(UnknownMemberIdError):  # ...and after a failover, as a new member
        await new.heartbeat(HeartbeatRequest(group_id=OURS, generation_id=1, member_id=a.member_id))


# --- a generation is handed out only once it is written -------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The coordinator's clock, for the groups it creates from now on."""
    fake = Clock()
    monkeypatch.setattr(doubt_module, "_monotonic_ms", fake)
    return fake


def _sync(member_id: str, generation: int, plan: dict[str, bytes] | None = None) -> Any:
    return SyncGroupRequest(
        group_id=OURS,
        generation_id=generation,
        member_id=member_id,
        assignments=[
            SyncGroupRequestAssignment(member_id=m, assignment=p) for m, p in (plan or {}).items()
        ],
    )


async def _without_z(coordinator: GroupCoordinator, clock: Clock) -> tuple[str, str, str]:
    """Generation 2 (host-a and z) is stored; then c arrives, host-a rejoins, z is silent
    past its session: generation 3 (host-a, c) forms. Returns the three member ids."""
    a, z = await _two_members(coordinator)
    c_joining = asyncio.ensure_future(coordinator.join_group(_join(OURS)))
    await asyncio.sleep(0)
    a_joining = asyncio.ensure_future(coordinator.join_group(_join(OURS, a, "host-a")))
    await asyncio.sleep(0)
    clock.now += 10_001  # z's session (and the rebalance timeout) ran out
    coordinator.groups[OURS].tick()
    a3, c = await asyncio.gather(a_joining, c_joining)
    assert a3.generation_id == c.generation_id == 3 and a3.leader == a
    assert z not in coordinator.groups[OURS].members
    return a, z, c.member_id


async def test_no_member_gets_a_generation_whose_write_failed(clock: Clock) -> None:
    """The reviewer's scenario: generation 3 drops z; were c given z's partition before the
    write, a failed write would leave the log at generation 2, z's, and a new coordinator
    would take z's commits again while c consumes z's partition."""
    coordinator, replicas = _coordinator()
    a, z, c = await _without_z(coordinator, clock)
    c_sync = asyncio.ensure_future(coordinator.sync_group(_sync(c, 3)))
    await asyncio.sleep(0)
    replicas.fail_code = 19  # NOT_ENOUGH_REPLICAS
    with pytest.raises(CoordinatorNotAvailableError):
        await coordinator.sync_group(_sync(a, 3, {a: b"p0", c: b"p1"}))
    with pytest.raises(CoordinatorNotAvailableError):  # not p1: z may still consume it
        await c_sync
    group = coordinator.groups[OURS]
    assert group.state == "PreparingRebalance" and group.generation_id == 3
    stored = replicas.reload().group_metadata[OURS]
    assert stored.generation == 2 and [m.member_id for m in stored.members] == [a, z]

    replicas.fail_code = 0  # the members join again, with their member ids
    a4, c4 = await asyncio.gather(
        coordinator.join_group(_join(OURS, a, "host-a")), coordinator.join_group(_join(OURS, c))
    )
    assert a4.generation_id == c4.generation_id == 4
    c_sync = asyncio.ensure_future(coordinator.sync_group(_sync(c, 4)))
    await coordinator.sync_group(_sync(a, 4, {a: b"p0", c: b"p1"}))
    assert (await c_sync).assignment == b"p1"
    assert replicas.reload().group_metadata[OURS].generation == 4


async def test_a_coordinator_that_moves_before_the_write_ends_hands_out_nothing(
    clock: Clock,
) -> None:
    coordinator, replicas = _coordinator()
    a, _z, c = await _without_z(coordinator, clock)
    c_sync = asyncio.ensure_future(coordinator.sync_group(_sync(c, 3)))
    replicas.gate = asyncio.get_running_loop().create_future()  # replication is slow
    a_sync = asyncio.ensure_future(coordinator.sync_group(_sync(a, 3, {a: b"p0", c: b"p1"})))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not a_sync.done() and not c_sync.done()
    coordinator._on_role_change(TopicPartition(OFFSETS_TOPIC, 0), None)  # the broker dies
    for sync in (a_sync, c_sync):  # retriable: the members find the new coordinator
        with pytest.raises(NotCoordinatorError):
            await sync
    replicas.gate.set_result(None)


async def test_a_static_restart_that_could_not_be_written_keeps_the_old_member_id() -> None:
    old, replicas = _coordinator()
    a, b = await _two_members(old)
    replicas.fail_code = 19  # NOT_ENOUGH_REPLICAS
    with pytest.raises(CoordinatorNotAvailableError):
        await old.join_group(_join(OURS, instance="host-a"))  # host-a restarts
    # nothing changed: the old member id holds the instance, here as in the log
    await old.heartbeat(
        HeartbeatRequest(group_id=OURS, generation_id=2, member_id=a, group_instance_id="host-a")
    )
    assert list(old.groups[OURS].members) == [a, b] and old.groups[OURS].state == "Stable"
    replicas.fail_code = 0
    again = await old.join_group(_join(OURS, instance="host-a"))  # its retry
    assert again.generation_id == 2 and again.member_id not in (a, b)
    new, _ = _coordinator(replicas)
    await new.heartbeat(
        HeartbeatRequest(
            group_id=OURS, generation_id=2, member_id=again.member_id, group_instance_id="host-a"
        )
    )


# --- which offsets partitions are ours: role changes and loads ------------------------------

TP = TopicPartition(OFFSETS_TOPIC, 0)


class FakeLog:
    """What ``_load`` reads: the fake replicas' records; ``failures`` reads raise first."""

    log_start_offset = 0

    def __init__(self, replicas: FakeReplicas) -> None:
        self.replicas = replicas
        self.failures = 0

    @property
    def log_end_offset(self) -> int:
        return len(self.replicas.log)

    def read(self, offset: int, max_bytes: int, *, max_offset: int) -> Any:
        if self.failures:
            self.failures -= 1
            raise OSError("the disk went away")
        records = [(k, v, None, 0) for k, v in self.replicas.log[offset:max_offset]]
        data = encode_batch(records, base_offset=offset)
        return SimpleNamespace(read=lambda: data)


@dataclass
class FakePartition:
    log: FakeLog
    leader_id: int = 1
    leader_epoch: int = 1

    @property
    def is_leader(self) -> bool:
        return self.leader_id == 1  # the coordinator is broker 1


async def _leading(replicas: FakeReplicas) -> tuple[GroupCoordinator, FakePartition]:
    """A coordinator that became leader of partition 0 and loaded it."""
    coordinator = _new_coordinator(replicas)
    partition = FakePartition(FakeLog(replicas))
    coordinator._on_role_change(TP, partition)  # type: ignore[arg-type]
    await coordinator._loading[0]
    assert 0 in coordinator.stores and not coordinator._loading
    return coordinator, partition


async def test_a_new_epoch_of_a_partition_it_leads_disturbs_no_member() -> None:
    """A follower of the offsets partition dies: the controller bumps the leader epoch of
    a partition whose leader stays. The coordinator keeps its groups and their waiters."""
    coordinator, partition = await _leading(FakeReplicas())
    a = await coordinator.join_group(_join(OURS))
    await coordinator.sync_group(_sync(a.member_id, 1, {a.member_id: b"p0"}))
    group = coordinator.groups[OURS]
    b_joining = asyncio.ensure_future(coordinator.join_group(_join(OURS)))
    await asyncio.sleep(0)

    partition.leader_epoch = 2
    coordinator._on_role_change(TP, partition)  # type: ignore[arg-type]
    assert coordinator.groups[OURS] is group and not coordinator._loading
    a2 = await coordinator.join_group(_join(OURS, a.member_id))
    b = await b_joining  # still waiting, not told UNKNOWN_MEMBER_ID
    assert a2.generation_id == b.generation_id == 2

    # a real move: this broker follows now. Waiters are told NOT_COORDINATOR (retriable:
    # they keep their member ids for the new coordinator), not UNKNOWN_MEMBER_ID
    b_sync = asyncio.ensure_future(coordinator.sync_group(_sync(b.member_id, 2)))
    await asyncio.sleep(0)
    partition.leader_id, partition.leader_epoch = 2, 3
    coordinator._on_role_change(TP, partition)  # type: ignore[arg-type]
    with pytest.raises(NotCoordinatorError):
        await b_sync
    with pytest.raises(NotCoordinatorError):
        await coordinator.heartbeat(
            HeartbeatRequest(group_id=OURS, generation_id=2, member_id=a.member_id)
        )
    assert OURS not in coordinator.groups and group.state == "Dead"


async def test_unloading_a_group_mid_rebalance_past_its_deadline(clock: Clock) -> None:
    """Removing one member could complete the rebalance and drop the others: unloading
    must not run the state machine (it used to raise, and the load never started)."""
    coordinator, _ = _coordinator()
    coordinator._initial_delay_ms = 100  # a, y and z form generation 1 together
    joins = [asyncio.ensure_future(coordinator.join_group(_join(OURS))) for _ in range(3)]
    await asyncio.sleep(0)
    clock.now += 100
    coordinator.groups[OURS].tick()
    a, _y, _z = await asyncio.gather(*joins)
    await coordinator.sync_group(_sync(a.member_id, 1))
    c_joining = asyncio.ensure_future(coordinator.join_group(_join(OURS)))
    a_joining = asyncio.ensure_future(coordinator.join_group(_join(OURS, a.member_id)))
    await asyncio.sleep(0)
    clock.now += 10_001  # y and z did not rejoin; nobody has ticked yet
    coordinator._on_role_change(TP, None)
    for joining in (c_joining, a_joining):
        with pytest.raises(NotCoordinatorError):
            await joining
    assert not coordinator.groups and not coordinator.stores


async def test_a_failed_load_is_retried_while_leader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "_LOAD_RETRY_S", 0.05)
    writer, replicas = _coordinator()
    await writer.offset_commit(_commit(OTHER, {0: 42}))
    coordinator = _new_coordinator(replicas)
    partition = FakePartition(FakeLog(replicas))
    partition.log.failures = 2
    with structlog.testing.capture_logs() as logs:
        coordinator._on_role_change(TP, partition)  # type: ignore[arg-type]
        await asyncio.wait([coordinator._loading[0]])
        # between attempts: not loading (no LOAD_IN_PROGRESS for ever), not ours yet
        assert not coordinator._loading and 0 in coordinator._load_retries
        assert (await coordinator.list_groups(ListGroupsRequest())).error_code == 0
        with pytest.raises(NotCoordinatorError):
            await coordinator.offset_fetch(OffsetFetchRequest(group_id=OTHER))
        for _ in range(100):
            if 0 in coordinator.stores:
                break
            await asyncio.sleep(0.02)
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OTHER))
    assert fetched.topics[0].partitions[0].committed_offset == 42
    failed = [e for e in logs if e["event"] == "coordinator.load_failed"]
    assert [e["attempt"] for e in failed] == [1, 2]
    assert not coordinator._loading and not coordinator._load_retries


async def test_a_load_retry_stops_when_the_leadership_does() -> None:
    writer, replicas = _coordinator()
    await writer.offset_commit(_commit(OTHER, {0: 42}))
    coordinator = _new_coordinator(replicas)
    partition = FakePartition(FakeLog(replicas))
    partition.log.failures = 1
    coordinator._on_role_change(TP, partition)  # type: ignore[arg-type]
    await asyncio.wait([coordinator._loading[0]])
    retry = coordinator._load_retries[0]
    partition.leader_id = 2
    coordinator._on_role_change(TP, partition)  # type: ignore[arg-type]
    assert retry.cancelled() and not coordinator._load_retries and not coordinator._loading


# --- a transaction's offsets (TxnOffsetCommit) ------------------------------------------


def _txn_commit(group: str, offsets: dict[int, int], producer_id: int) -> TxnOffsetCommitRequest:
    request = _commit(group, offsets)
    return TxnOffsetCommitRequest(
        transactional_id="tx",
        group_id=group,
        producer_id=producer_id,
        producer_epoch=0,
        topics=request.topics,
    )


async def test_a_transactions_offsets_count_at_its_commit_marker_and_go_at_its_abort() -> None:
    coordinator, replicas = _coordinator()
    await coordinator.offset_commit(_commit(OURS, {0: 5}))
    answer = await coordinator.txn_offset_commit(_txn_commit(OURS, {0: 9, 1: 4}, producer_id=7))
    assert all(p.error_code == 0 for t in answer.topics for p in t.partitions)
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OURS))
    assert {p.partition_index: p.committed_offset for p in fetched.topics[0].partitions} == {0: 5}
    stable = await coordinator.offset_fetch(
        OffsetFetchRequest(
            group_id=OURS,
            topics=[OffsetFetchRequestTopic(name="t", partition_indexes=[0, 1, 2])],
            require_stable=True,  # KIP-447: a read_committed consumer waits for it
        )
    )
    assert [p.error_code for p in stable.topics[0].partitions] == [88, 88, 0]
    replicas.marker_listener(OFFSETS_TOPIC, 0, 7, True)  # the COMMIT marker, written here
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OURS))
    assert {p.partition_index: p.committed_offset for p in fetched.topics[0].partitions} == {
        0: 9,
        1: 4,
    }
    await coordinator.txn_offset_commit(_txn_commit(OURS, {0: 100}, producer_id=8))
    replicas.marker_listener(OFFSETS_TOPIC, 0, 8, False)  # ABORT: they never count
    replicas.marker_listener(OFFSETS_TOPIC, 0, 8, True)  # a stray later marker: nothing held
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OURS))
    assert {p.partition_index: p.committed_offset for p in fetched.topics[0].partitions}[0] == 9


async def test_a_load_holds_a_transactions_offsets_until_its_marker(tmp_path: Any) -> None:
    log = Log.open(tmp_path / "__consumer_offsets-0")
    key = encode_key(OURS, "t", 0)

    def offsets(value: int, producer_id: int) -> bytes:
        record = (key, encode_value(OffsetAndMetadata(value, -1, None, 0)), None, 0)
        return encode_batch(
            [record], producer_id=producer_id, producer_epoch=0, is_transactional=True
        )

    log.append(offsets(42, 3), coordinator=True)
    log.append_marker(producer_id=3, producer_epoch=0, committed=True, coordinator_epoch=0)
    log.append(offsets(50, 4), coordinator=True)
    log.append_marker(producer_id=4, producer_epoch=0, committed=False, coordinator_epoch=0)
    log.append(offsets(60, 5), coordinator=True)  # still open when the coordinator loads
    coordinator = _new_coordinator(FakeReplicas())
    coordinator._start_load(0, SimpleNamespace(log=log, is_leader=True))  # type: ignore[arg-type]
    await coordinator._loading[0]
    store = coordinator.stores[0]
    assert store.get(OURS)[("t", 0)].offset == 42  # 50 aborted, 60 not yet committed
    coordinator._on_txn_marker(OFFSETS_TOPIC, 0, 5, True)
    assert store.get(OURS)[("t", 0)].offset == 60
    log.close()


async def test_a_marker_written_while_the_partition_loads_is_not_lost(tmp_path: Any) -> None:
    log = Log.open(tmp_path / "__consumer_offsets-0")
    record = (encode_key(OURS, "t", 0), encode_value(OffsetAndMetadata(60, -1, None, 0)), None, 0)
    txn = encode_batch([record], producer_id=5, producer_epoch=0, is_transactional=True)
    log.append(txn, coordinator=True)
    coordinator = _new_coordinator(FakeReplicas())
    coordinator._start_load(0, SimpleNamespace(log=log, is_leader=True))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the load has begun...
    log.append_marker(producer_id=5, producer_epoch=0, committed=True, coordinator_epoch=0)
    coordinator._on_txn_marker(OFFSETS_TOPIC, 0, 5, True)  # ...its listener finds no store
    await coordinator._loading[0]
    assert coordinator.stores[0].get(OURS)[("t", 0)].offset == 60
    log.close()


async def test_a_later_plain_commit_beats_an_earlier_transactions_offset() -> None:
    coordinator, replicas = _coordinator()
    await coordinator.txn_offset_commit(_txn_commit(OURS, {0: 9}, producer_id=7))
    await coordinator.offset_commit(_commit(OURS, {0: 20}))  # written after it
    replicas.marker_listener(OFFSETS_TOPIC, 0, 7, True)
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OURS))
    assert {p.partition_index: p.committed_offset for p in fetched.topics[0].partitions}[0] == 20


async def test_a_transactions_offsets_need_write_on_its_transactional_id() -> None:
    replicas = FakeReplicas()
    coordinator = _new_coordinator(replicas)
    coordinator._loaded(0, OffsetStore())

    class NoTransactions:
        def allowed(self, operation: Any, kind: Any, name: str) -> bool:
            return kind != ResourceType.TRANSACTIONAL_ID

    coordinator._acl = NoTransactions()  # type: ignore[assignment]
    answer = await coordinator.txn_offset_commit(_txn_commit(OURS, {0: 9}, producer_id=7))
    assert {p.error_code for t in answer.topics for p in t.partitions} == {53}
    assert replicas.log == []  # nothing written


async def test_a_transactions_offsets_the_check_refuses_are_neither_written_nor_held() -> None:
    """KIP-890: a TxnOffsetCommit read after its transaction ended would open one in the
    offsets partition that no marker ends (its offsets held, require_stable fetches
    refused, for good)."""
    coordinator, replicas = _coordinator()
    replicas.refuse_txn = InvalidTxnStateError("not in an ongoing transaction")
    answer = await coordinator.txn_offset_commit(_txn_commit(OURS, {0: 9}, producer_id=7))
    assert {p.error_code for t in answer.topics for p in t.partitions} == {
        InvalidTxnStateError.code
    }
    assert replicas.log == [] and not coordinator.stores[0].pending


async def test_several_members_leaving_an_unknown_group_are_each_told() -> None:
    # Kafka's LeaveGroup v3+ (an administrator's "remove members"): for a group the
    # coordinator does not have, the request succeeds and each member is UNKNOWN_MEMBER_ID
    coordinator, _ = _coordinator()
    request = LeaveGroupRequest(
        group_id=OURS,
        members=[
            LeaveGroupMember(group_instance_id="a"),
            LeaveGroupMember(group_instance_id="b"),
        ],
    )
    response = await coordinator.leave_group(request)
    assert response.error_code == 0
    assert [(m.group_instance_id, m.error_code) for m in response.members] == [
        ("a", UnknownMemberIdError.code),
        ("b", UnknownMemberIdError.code),
    ]


async def test_sync_checks_the_protocol_a_member_says_it_joined_with() -> None:
    # Kafka's SyncGroup v5: a protocol type or name that is not the group's is
    # INCONSISTENT_GROUP_PROTOCOL; the answer says the group's
    coordinator, _ = _coordinator()
    member = await _stable_member(coordinator, OURS)  # "consumer", "range" chosen

    def sync(protocol_type: str | None, protocol_name: str | None) -> Any:
        return coordinator.sync_group(
            SyncGroupRequest(
                group_id=OURS,
                generation_id=1,
                member_id=member,
                group_instance_id="host-1",
                protocol_type=protocol_type,
                protocol_name=protocol_name,
            )
        )

    for wrong in (("connect", None), (None, "sticky"), ("consumer", "roundrobin")):
        with pytest.raises(InconsistentGroupProtocolError):
            await sync(*wrong)
    for right in (("consumer", "range"), (None, None), ("consumer", None)):
        answer = await sync(*right)
        assert (answer.protocol_type, answer.protocol_name) == ("consumer", "range")
        assert answer.assignment == b"p0"


# --- offsets.retention.minutes (KIP-211) ----------------------------------------------------

_DAY_MS = 24 * 3600 * 1000
_WEEK_MS = 7 * _DAY_MS  # offsets.retention.minutes' default


async def test_expired_offsets_and_empty_groups_without_any_go_and_stay_gone() -> None:
    coordinator, replicas = _coordinator()
    now = int(time.time() * 1000)
    await coordinator.offset_commit(_commit(OTHER, {0: 10, 1: 20}))  # no members ever
    member = await _stable_member(coordinator, OURS)  # a consumer group, subscribed to "t"
    await coordinator.offset_commit(_commit(OURS, {0: 5}, generation_id=1, member_id=member))
    assert await coordinator._expire_in(0, coordinator.stores[0], now + _WEEK_MS - 60_000) == 0
    written = len(replicas.log)

    # a week on: the memberless group's offsets go (from their commit), then the group;
    # the group with a member keeps its offsets of the topic it consumes
    assert await coordinator._expire_in(0, coordinator.stores[0], now + _WEEK_MS + 60_000) == 3
    assert replicas.log[written:] == [
        (encode_key(OTHER, "t", 0), None),
        (encode_key(OTHER, "t", 1), None),
        (encode_group_key(OTHER), None),
    ]
    assert OTHER not in coordinator.groups
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OURS))
    assert [(t.name, [p.committed_offset for p in t.partitions]) for t in fetched.topics] == [
        ("t", [5])
    ]

    # the member leaves: the group is empty from now, and its offsets go a week after that
    await coordinator.leave_group(
        LeaveGroupRequest(group_id=OURS, member_id=member, group_instance_id="host-1")
    )
    emptied = coordinator.groups[OURS].emptied_at_ms
    assert emptied >= now
    if (writing := coordinator._group_writes.get(OURS)) is not None:
        await writing  # (an expiry leaves a group whose metadata is being written)
    store = coordinator.stores[0]
    assert await coordinator._expire_in(0, store, emptied + _WEEK_MS - 60_000) == 0
    assert await coordinator._expire_in(0, store, emptied + _WEEK_MS) == 2
    assert OURS not in coordinator.groups
    listed = await coordinator.list_groups(ListGroupsRequest())
    assert {g.group_id for g in listed.groups} == set()
    reloaded = replicas.reload()  # and a coordinator loading the log has none of them
    assert reloaded.groups == {} and reloaded.group_metadata == {}


async def test_an_expiry_that_cannot_be_written_deletes_nothing() -> None:
    coordinator, replicas = _coordinator()
    now = int(time.time() * 1000)
    await coordinator.offset_commit(_commit(OTHER, {0: 10}))
    replicas.fail_code = NotLeaderOrFollowerError.code
    assert await coordinator._expire_in(0, coordinator.stores[0], now + 2 * _WEEK_MS) == 0
    assert coordinator.groups[OTHER].state == "Empty"  # not Dead: retried next round
    assert coordinator.stores[0].get(OTHER)
    replicas.fail_code = 0
    assert await coordinator._expire_in(0, coordinator.stores[0], now + 2 * _WEEK_MS) == 2


async def test_a_restored_empty_group_expires_from_when_it_was_stored() -> None:
    coordinator, replicas = _coordinator()
    member = await _stable_member(coordinator, OURS)
    await coordinator.offset_commit(_commit(OURS, {0: 5}, generation_id=1, member_id=member))
    await coordinator.leave_group(
        LeaveGroupRequest(group_id=OURS, member_id=member, group_instance_id="host-1")
    )
    if (writing := coordinator._group_writes.get(OURS)) is not None:
        await writing  # the emptied group's metadata is written
    emptied = coordinator.groups[OURS].emptied_at_ms
    failover, _ = _coordinator(replicas)  # another coordinator loads the same log
    restored = failover.groups[OURS]
    assert restored.state == "Empty" and abs(restored.emptied_at_ms - emptied) < 1000
    assert await failover._expire_in(0, failover.stores[0], emptied + _WEEK_MS - 5_000) == 0
    assert await failover._expire_in(0, failover.stores[0], emptied + _WEEK_MS + 5_000) == 2


async def test_the_expiry_runs_every_check_interval_and_survives_a_failing_round() -> None:
    coordinator, _ = _coordinator()
    coordinator._expiry_every_s = 0.001
    rounds: list[int] = []
    third = asyncio.Event()

    async def expire() -> int:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("a bug in one round")
        if len(rounds) == 3:
            third.set()
        return 0

    coordinator.expire_offsets = expire  # type: ignore[method-assign]
    coordinator.start()
    try:
        await asyncio.wait_for(third.wait(), 5)  # the failing first round did not end it
    finally:
        await coordinator.stop()


async def test_a_new_member_beyond_group_max_size_is_refused() -> None:
    coordinator, _ = _coordinator()
    coordinator._max_group_size = 2  # group.max.size (KIP-389)
    a, b = await _two_members(coordinator)  # Stable, full
    with pytest.raises(GroupMaxSizeReachedError, match=r"group.max.size \(2 members\)"):
        await coordinator.join_group(_join(OURS))
    # its members rejoin (a rebalance): still two, and no room meanwhile
    rejoin_b = asyncio.ensure_future(coordinator.join_group(_join(OURS, b)))
    await asyncio.sleep(0)
    assert coordinator.groups[OURS].state == "PreparingRebalance"
    with pytest.raises(GroupMaxSizeReachedError):
        await coordinator.join_group(_join(OURS))
    rejoin_a = asyncio.ensure_future(coordinator.join_group(_join(OURS, a, "host-a")))
    assert {(await rejoin_a).member_id, (await rejoin_b).member_id} == {a, b}
    # one leaves: room for another
    await coordinator.leave_group(LeaveGroupRequest(group_id=OURS, member_id=b))
    third = asyncio.ensure_future(coordinator.join_group(_join(OURS)))
    await asyncio.sleep(0)
    assert len(coordinator.groups[OURS].members) == 2 and not third.done()
    third.cancel()


# --- offsets expiry, found in review -------------------------------------------------------


class SizedReplicas(FakeReplicas):
    """As the leader's log: a batch over max.message.bytes (1 MiB + 12, the offsets
    topic's default) is refused whole (MESSAGE_TOO_LARGE)."""

    async def append_records(
        self, topic: str, index: int, records: bytes, *, timeout_ms: int
    ) -> ProducePartitionResponse:
        if len(records) > 1024 * 1024 + 12:
            return ProducePartitionResponse(index=index, error_code=10)  # MESSAGE_TOO_LARGE
        return await super().append_records(topic, index, records, timeout_ms=timeout_ms)


async def test_many_expired_offsets_in_one_partition_still_expire() -> None:
    # a cluster upgraded to this build: a partition with many stale groups (here 600
    # consumer groups x 50 partitions, committed a month ago) must expire them; one
    # batch of all their tombstones is over max.message.bytes, refused every round
    coordinator, _ = _coordinator(SizedReplicas())
    store = coordinator.stores[0]
    old = int(time.time() * 1000) - 30 * _DAY_MS
    groups = [g for g in (f"stale-group-{i}" for i in range(1300)) if partition_for(g, 2) == 0]
    for group in groups[:600]:
        for p in range(50):
            value = OffsetAndMetadata(100, -1, None, old)
            store.apply(encode_key(group, "orders-events", p), encode_value(value))
    written = await coordinator._expire_in(0, store, int(time.time() * 1000))
    assert written > 0, "nothing expired: the one batch was refused"
    assert not any(g in store.groups for g in groups[:600])


async def test_an_expiry_never_follows_a_transactions_offset_it_did_not_hold() -> None:
    # a TxnOffsetCommit being replicated when the expiry runs: its record is in the log,
    # but not yet held (store.hold runs after the append's await), so the expiry writes
    # a tombstone for the same key after it. Compaction keeps the later record per key:
    # the transaction's committed offset is gone after compaction (and a failover).
    coordinator, replicas = _coordinator()
    now = int(time.time() * 1000)
    await coordinator.offset_commit(_commit(OTHER, {0: 10}))  # a week and more ago, below
    replicas.gate = asyncio.get_running_loop().create_future()
    txn = asyncio.ensure_future(
        coordinator.txn_offset_commit(_txn_commit(OTHER, {0: 99}, producer_id=7))
    )
    for _ in range(5):
        await asyncio.sleep(0)  # the transaction's record is appended, replicating
    expiry = asyncio.ensure_future(
        coordinator._expire_in(0, coordinator.stores[0], now + 2 * _WEEK_MS)
    )
    await asyncio.sleep(0)
    replicas.gate.set_result(None)
    await txn
    await expiry
    replicas.marker_listener(OFFSETS_TOPIC, 0, 7, True)  # the transaction commits
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OTHER))
    assert fetched.topics[0].partitions[0].committed_offset == 99  # in memory: kept
    compacted = dict(replicas.log)  # what the log cleaner keeps: the last value per key
    assert compacted[encode_key(OTHER, "t", 0)] is not None, "the tombstone followed it"


async def test_a_commit_with_a_retention_time_of_its_own_expires_then() -> None:
    # OffsetCommit v2-v4's retention_time_ms (kafka-python, old clients): Kafka keeps an
    # expire time with the offset (value version 1) and expires it then
    coordinator, replicas = _coordinator()
    now = int(time.time() * 1000)
    await coordinator.offset_commit(_commit(OTHER, {0: 10}, retention_time_ms=_DAY_MS))
    await coordinator.offset_commit(_commit(OTHER, {1: 20}))  # the broker's retention
    (_key, value), *_ = replicas.log[-2:]
    assert decode_value(value).expire_timestamp - decode_value(value).commit_timestamp == _DAY_MS
    assert await coordinator._expire_in(0, coordinator.stores[0], now + _DAY_MS - 60_000) == 0
    assert await coordinator._expire_in(0, coordinator.stores[0], now + _DAY_MS + 60_000) == 1
    assert replicas.log[-1] == (encode_key(OTHER, "t", 0), None)
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OTHER, topics=None))
    assert [
        (p.partition_index, p.committed_offset) for t in fetched.topics for p in t.partitions
    ] == [(1, 20)]


async def test_a_commit_kept_for_as_long_as_an_int64_says_is_stored() -> None:
    # retention_time_ms = Long.MAX_VALUE ("keep it"): the expire time stays an int64
    # (found in review: it overflowed the record's field and failed the commit)
    coordinator, _ = _coordinator()
    response = await coordinator.offset_commit(_commit(OTHER, {0: 10}, retention_time_ms=2**63 - 1))
    assert [p.error_code for t in response.topics for p in t.partitions] == [0]
    now = int(time.time() * 1000)
    assert await coordinator._expire_in(0, coordinator.stores[0], now + 365 * _DAY_MS) == 0


async def test_each_rebalance_is_logged_with_what_started_it() -> None:
    # Kafka's "Preparing to rebalance group ... (reason: ...)": a member joining with
    # its client's reason (JoinGroup v8+), and one leaving with its reason (LeaveGroup v5+)
    coordinator, _ = _coordinator()
    a, b = await _two_members(coordinator)
    with structlog.testing.capture_logs() as logs:
        joining = _join(OURS)
        joining.reason = "subscription changed"
        third = asyncio.ensure_future(coordinator.join_group(joining))
        await asyncio.sleep(0)
        await coordinator.leave_group(
            LeaveGroupRequest(
                group_id=OURS,
                members=[LeaveGroupMember(member_id=b, reason="the consumer is closing")],
            )
        )
        third.cancel()
    rebalances = [e for e in logs if e["event"] == "group.rebalancing"]
    assert [(e["cause"], e.get("reason")) for e in rebalances] == [
        ("a member joined", "subscription changed")
    ]  # (the leave came during that rebalance: no second one)
    assert rebalances[0]["group"] == OURS and rebalances[0]["previous_state"] == "Stable"
    assert a  # (the static leader stays)


async def test_a_rebalance_started_by_a_member_leaving_is_logged_with_its_reason() -> None:
    coordinator, _ = _coordinator()
    _a, b = await _two_members(coordinator)
    with structlog.testing.capture_logs() as logs:
        await coordinator.leave_group(
            LeaveGroupRequest(
                group_id=OURS,
                members=[LeaveGroupMember(member_id=b, reason="the consumer is closing")],
            )
        )
    [rebalance] = [e for e in logs if e["event"] == "group.rebalancing"]
    assert (rebalance["cause"], rebalance["member"], rebalance["reason"]) == (
        "a member left",
        b,
        "the consumer is closing",
    )


async def test_a_rebalance_begun_and_formed_in_one_call_is_logged_and_a_reason_is_cut() -> None:
    # found in review: a one-member group's rejoin starts a rebalance and forms the next
    # generation inside the join (the state after it says nothing), and a client's reason
    # can be as long as its request (Kafka's clients cut theirs to 255 characters)
    coordinator, _ = _coordinator()
    member = await _stable_member(coordinator, OURS)
    before = coordinator.groups[OURS].generation_id
    with structlog.testing.capture_logs() as logs:
        again = _join(OURS, member, "host-1")
        again.reason = "x" * 1_000_000
        joined = await coordinator.join_group(again)
    assert joined.generation_id == before + 1
    [rebalance] = [e for e in logs if e["event"] == "group.rebalancing"]
    assert rebalance["cause"] == "a member rejoined"
    assert rebalance["reason"] == "x" * 255 + "... (1000000 characters)"


async def test_a_generation_that_could_not_be_written_is_logged_as_a_rebalance() -> None:
    coordinator, replicas = _coordinator()
    joined = await coordinator.join_group(_join(OURS))
    replicas.fail_code = 19  # NOT_ENOUGH_REPLICAS: the assignment is not written
    with structlog.testing.capture_logs() as logs, pytest.raises(ApiError):
        await coordinator.sync_group(
            SyncGroupRequest(
                group_id=OURS,
                generation_id=joined.generation_id,
                member_id=joined.member_id,
                assignments=[
                    SyncGroupRequestAssignment(member_id=joined.member_id, assignment=b"p0")
                ],
            )
        )
    [rebalance] = [e for e in logs if e["event"] == "group.rebalancing"]
    assert rebalance["cause"] == "the group's metadata could not be written"
    assert "NOT_ENOUGH_REPLICAS" in rebalance["error"]


async def test_a_group_that_does_not_exist_is_not_found_for_those_who_ask_so() -> None:
    # Kafka's DescribeGroups v6 (KIP-1043): GROUP_ID_NOT_FOUND, where older versions (and
    # Headwater's own) get a Dead group without members
    coordinator, _ = _coordinator()
    await coordinator.offset_commit(_commit(OTHER, {0: 1}))  # offsets only: Empty
    asked = DescribeGroupsRequest(groups=[OURS, OTHER], missing_is_an_error=True)
    nowhere, offsets_only = (await coordinator.describe_groups(asked)).groups
    assert (nowhere.error_code, nowhere.error_message) == (
        GroupIdNotFoundError.code,
        f"group {OURS!r} does not exist",
    )
    assert (offsets_only.error_code, offsets_only.group_state) == (0, "Empty")
    older = await coordinator.describe_groups(DescribeGroupsRequest(groups=[OURS]))
    assert (older.groups[0].error_code, older.groups[0].group_state) == (0, "Dead")
