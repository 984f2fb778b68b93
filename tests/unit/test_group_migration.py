"""Kafka's online migration between the two consumer group protocols, through the group
coordinator (no sockets): a classic group with members is taken into the new protocol
when a member of the new one joins (upgrade); its classic members go on with JoinGroup,
SyncGroup and Heartbeat, the coordinator assigning, never a partition held twice; when
the last member of the new protocol leaves, the group goes back to the classic protocol
(downgrade) and its members rejoin it as a classic group's. Every step is in the log:
a coordinator that takes over has the group as it was."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import pytest

from broker.coordinator.consumer_group import ConsumerGroup
from broker.coordinator.coordinator import GroupCoordinator
from broker.coordinator.group import Group
from protocol.apis import (
    ConsumerGroupDescribeRequest,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    JoinGroupResponse,
    LeaveGroupRequest,
    SyncGroupRequest,
    SyncGroupRequestAssignment,
)
from protocol.consumer_protocol import (
    Assignment,
    Subscription,
    decode_assignment,
    encode_assignment,
    encode_subscription,
)
from protocol.errors import (
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupIdNotFoundError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from protocol.topic_partition import TopicPartition
from tests.unit.test_commit_unknown_topics import _errors
from tests.unit.test_coordinator_consumer_protocol import (
    _beat,
    _moved,
    _owning,
    _partitions,
    _with_ids,
)
from tests.unit.test_coordinator_consumer_protocol import _join as _cjoin
from tests.unit.test_coordinator_groups import OURS, FakeReplicas, _commit, _coordinator

SUBSCRIPTION = encode_subscription(Subscription(["t"]))


def _classic_join(
    member_id: str = "", protocols: list[str] | None = None, rack: str | None = None
) -> JoinGroupRequest:
    metadata = SUBSCRIPTION if rack is None else encode_subscription(Subscription(["t"], rack=rack))
    return JoinGroupRequest(
        group_id=OURS,
        session_timeout_ms=10_000,
        rebalance_timeout_ms=20_000,
        member_id=member_id,
        protocol_type="consumer",
        protocols=[
            JoinGroupRequestProtocol(name=name, metadata=metadata)
            for name in protocols or ["range"]
        ],
    )


def _plan(members: list[str]) -> dict[str, bytes]:
    """The classic leader's range plan of t's 8 partitions."""
    share = 8 // len(members)
    return {
        m: encode_assignment(
            Assignment([TopicPartition("t", p) for p in range(i * share, (i + 1) * share)])
        )
        for i, m in enumerate(sorted(members))
    }


async def _first_classic_member(
    coordinator: GroupCoordinator, request: JoinGroupRequest
) -> JoinGroupResponse:
    """A classic group's first member, joined and synced (its own leader, alone)."""
    first = await coordinator.join_group(request)
    await coordinator.sync_group(
        SyncGroupRequest(
            group_id=OURS,
            generation_id=first.generation_id,
            member_id=first.member_id,
            assignments=[],
        )
    )
    return first


async def _classic_group(coordinator: GroupCoordinator) -> tuple[str, str, int]:
    """A Stable classic group of two members, each with four of t's partitions."""
    first = await _first_classic_member(coordinator, _classic_join())
    joining = asyncio.ensure_future(coordinator.join_group(_classic_join()))
    await asyncio.sleep(0)
    again = await coordinator.join_group(_classic_join(first.member_id))
    second = await joining
    generation = again.generation_id
    plan = _plan([first.member_id, second.member_id])

    other = asyncio.ensure_future(
        coordinator.sync_group(
            SyncGroupRequest(group_id=OURS, generation_id=generation, member_id=second.member_id)
        )
    )
    await coordinator.sync_group(
        SyncGroupRequest(
            group_id=OURS,
            generation_id=generation,
            member_id=again.leader,
            assignments=[
                SyncGroupRequestAssignment(member_id=m, assignment=a) for m, a in plan.items()
            ],
        )
    )
    await other
    group = coordinator.groups[OURS]
    assert isinstance(group, Group) and group.state == "Stable"
    return first.member_id, second.member_id, generation


class ClassicClient:
    """An eager classic consumer: on REBALANCE_IN_PROGRESS it gives up everything,
    rejoins and syncs; what it holds is what its last SyncGroup gave it."""

    def __init__(self, member_id: str, generation: int, held: set[int]) -> None:
        self.member_id, self.generation, self.held = member_id, generation, held

    async def step(self, coordinator: GroupCoordinator) -> None:
        try:
            await coordinator.heartbeat(
                HeartbeatRequest(
                    group_id=OURS, generation_id=self.generation, member_id=self.member_id
                )
            )
            return
        except RebalanceInProgressError:
            pass
        self.held = set()  # eager: revoked before the rejoin
        joined = await coordinator.join_group(_classic_join(self.member_id))
        assert joined.leader == "" and joined.members == []  # the coordinator assigns
        self.generation = joined.generation_id
        try:
            synced = await coordinator.sync_group(
                SyncGroupRequest(
                    group_id=OURS, generation_id=self.generation, member_id=self.member_id
                )
            )
        except RebalanceInProgressError:
            return
        self.held = {tp.partition for tp in decode_assignment(synced.assignment).partitions}


class NewClient:
    """A member of the new protocol that acts on each answer at once."""

    def __init__(self, member_id: str) -> None:
        self.member_id, self.epoch, self.held = member_id, 0, set[int]()

    async def step(self, coordinator: GroupCoordinator) -> None:
        if self.epoch == 0:
            answer = await _cjoin(coordinator, self.member_id)
        else:
            answer = await _beat(
                coordinator,
                member_id=self.member_id,
                member_epoch=self.epoch,
                topic_partitions=_owning(*self.held),
            )
        assert answer.error_code == 0, answer.error_message
        self.epoch = answer.member_epoch
        if answer.assignment is not None:
            self.held = _partitions(answer)


def _held_once(clients: list[Any]) -> set[int]:
    seen: set[int] = set()
    for client in clients:
        assert not seen & client.held, "a partition held by two members"
        seen |= client.held
    return seen


async def _converge(coordinator: GroupCoordinator, clients: list[Any]) -> None:
    for _ in range(12):
        for client in clients:
            await client.step(coordinator)
            _held_once(clients)
    assert _held_once(clients) == set(range(8))


async def test_a_classic_group_moves_to_the_new_protocol_and_back_as_its_members_do() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    a, b, generation = await _classic_group(coordinator)
    classic = [
        ClassicClient(a, generation, {0, 1, 2, 3}),
        ClassicClient(b, generation, {4, 5, 6, 7}),
    ]
    if a > b:
        classic[0].held, classic[1].held = classic[1].held, classic[0].held

    # upgrade: a member of the new protocol joins the classic group
    new = NewClient("c")
    await new.step(coordinator)
    group = coordinator.groups[OURS]
    assert isinstance(group, ConsumerGroup)
    assert group.members[a].classic is not None and group.members[a].epoch == generation
    assert group.epoch == generation + 1  # the new member's join
    clients: list[Any] = [*classic, new]
    await _converge(coordinator, clients)
    assert all(len(c.held) >= 2 for c in clients)
    described = await coordinator.consumer_group_describe(
        ConsumerGroupDescribeRequest(group_ids=[OURS])
    )
    assert {m.member_id: m.member_type for m in described.groups[0].members} == {
        a: 0,  # classic (KIP-1099's member type)
        b: 0,
        "c": 1,
    }
    # the log has it all: a coordinator taking over has the classic members as they are
    moved = _moved(replicas).groups[OURS]
    assert isinstance(moved, ConsumerGroup) and moved.members[b].classic is not None
    assert {m: moved.members[m].epoch for m in (a, b)} == {
        m: group.members[m].epoch for m in (a, b)
    }
    # a classic member commits with its generation (its epoch), at any OffsetCommit version
    epoch_a = group.members[a].epoch
    ok = _commit(OURS, {0: 3}, member_id=a, generation_id=epoch_a, kafka_version=2)
    assert _errors(await coordinator.offset_commit(ok)) == {("t", 0): 0}
    stale = _commit(OURS, {0: 3}, member_id=a, generation_id=epoch_a - 1, kafka_version=2)
    assert _errors(await coordinator.offset_commit(stale)) == {
        ("t", 0): IllegalGenerationError.code  # a classic member's answer
    }

    # downgrade: the last member of the new protocol leaves
    await _beat(coordinator, member_id="c", member_epoch=new.epoch)
    left = await _beat(coordinator, member_id="c", member_epoch=-1)
    assert left.error_code == 0
    back = coordinator.groups[OURS]
    assert isinstance(back, Group) and back.state == "PreparingRebalance"
    assert set(back.members) == {a, b} and back.protocol_name == "range"
    reloaded = replicas.reload()
    assert OURS not in reloaded.consumer_groups and OURS in reloaded.group_metadata
    # its members rejoin it as a classic group's (the leader assigns again)
    with pytest.raises(RebalanceInProgressError):
        await coordinator.heartbeat(
            HeartbeatRequest(group_id=OURS, generation_id=back.generation_id, member_id=a)
        )
    rejoined = await asyncio.gather(
        coordinator.join_group(_classic_join(a)), coordinator.join_group(_classic_join(b))
    )
    leader = next(r for r in rejoined if r.leader == r.member_id)
    assert {m.member_id for m in leader.members} == {a, b}
    assert rejoined[0].generation_id == back.generation_id


async def test_a_classic_member_of_a_new_protocol_group_is_checked_and_timed_as_kafkas() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    now = [0]
    coordinator._doubt._given_clock = lambda: now[0]
    c = NewClient("c")
    await c.step(coordinator)
    joined = await coordinator.join_group(_classic_join())  # a classic member joins it
    member = joined.member_id
    assert (joined.leader, joined.protocol_name, joined.generation_id) == ("", "range", 2)
    with pytest.raises(IllegalGenerationError):
        await coordinator.sync_group(
            SyncGroupRequest(group_id=OURS, generation_id=1, member_id=member)
        )
    with pytest.raises(UnknownMemberIdError):
        await coordinator.heartbeat(HeartbeatRequest(group_id=OURS, generation_id=2, member_id="x"))
    with pytest.raises(InconsistentGroupProtocolError):  # a protocol the others lack
        await coordinator.join_group(_classic_join(protocols=["roundrobin"]))
    # it heartbeats (its classic session: 10 s) but never syncs: fenced once its
    # rebalance timeout (20 s) from its join has passed
    group = coordinator.groups[OURS]
    assert isinstance(group, ConsumerGroup)
    for at in (8_000, 16_000):
        now[0] = at
        with contextlib.suppress(RebalanceInProgressError):  # told to rejoin: it does not
            await coordinator.heartbeat(
                HeartbeatRequest(group_id=OURS, generation_id=2, member_id=member)
            )
        await c.step(coordinator)
        assert not group.due(now[0])
    now[0] = 21_000
    assert group.members[member].session_deadline_ms > now[0] and group.due(now[0])
    await coordinator._fence_late(OURS)
    assert set(coordinator.groups[OURS].members) == {"c"}  # type: ignore[union-attr]
    assert set(_moved(replicas).groups[OURS].members) == {"c"}  # type: ignore[union-attr]


async def test_the_migration_policy_and_the_groups_protocol_type_gate_it() -> None:
    coordinator, _ = _coordinator()
    _with_ids(coordinator)
    await _classic_group(coordinator)
    coordinator._migration = "downgrade"
    refused = await _cjoin(coordinator, "c")
    assert refused.error_code == GroupIdNotFoundError.code
    assert "group.consumer.migration.policy is downgrade" in (refused.error_message or "")
    assert isinstance(coordinator.groups[OURS], Group)  # as it was
    coordinator._migration = "upgrade"
    assert (await _cjoin(coordinator, "c")).error_code == 0
    group = coordinator.groups[OURS]
    assert isinstance(group, ConsumerGroup)
    left = await _beat(coordinator, member_id="c", member_epoch=-1)
    assert left.error_code == 0
    assert coordinator.groups[OURS] is group  # no downgrade: classic members stay in it
    # a classic member's LeaveGroup takes it out (the group empties, and stays empty)
    for member in list(group.members):
        await coordinator.leave_group(LeaveGroupRequest(group_id=OURS, member_id=member))
    assert coordinator.groups[OURS] is group and not group.members


async def test_waiting_classic_members_are_told_to_rejoin_once_the_upgrade_is_written() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    a, _, _ = await _classic_group(coordinator)
    rejoining = asyncio.ensure_future(coordinator.join_group(_classic_join(a)))  # a rebalance
    await asyncio.sleep(0)
    assert not rejoining.done()
    assert (await _cjoin(coordinator, "c")).error_code == 0
    with pytest.raises(RebalanceInProgressError):
        await rejoining
    again = await coordinator.join_group(_classic_join(a))  # into the new protocol's group
    assert again.error_code == 0 and again.leader == ""
    assert isinstance(coordinator.groups[OURS], ConsumerGroup)
    assert isinstance(replicas, FakeReplicas)


async def test_a_classic_member_waiting_for_partitions_rejoins_once_they_are_free() -> None:
    coordinator, _ = _coordinator()
    _with_ids(coordinator)
    c = NewClient("c")
    await c.step(coordinator)
    assert c.held == set(range(8))
    joined = await coordinator.join_group(_classic_join())
    x = ClassicClient(joined.member_id, joined.generation_id, set())
    synced = await coordinator.sync_group(
        SyncGroupRequest(group_id=OURS, generation_id=x.generation, member_id=x.member_id)
    )
    assert decode_assignment(synced.assignment).partitions == []  # c holds them all yet
    heartbeat = HeartbeatRequest(group_id=OURS, generation_id=x.generation, member_id=x.member_id)
    await coordinator.heartbeat(heartbeat)  # waiting on c: nothing to rejoin for
    await c.step(coordinator)  # told to give four up
    await c.step(coordinator)  # gave them up
    assert len(c.held) == 4
    with pytest.raises(RebalanceInProgressError):  # they are free: rejoin to take them
        await coordinator.heartbeat(heartbeat)
    await x.step(coordinator)
    assert x.held == set(range(8)) - c.held


# --- review 130 -------------------------------------------------------------------------------


async def _mixed() -> tuple[GroupCoordinator, FakeReplicas, NewClient, str, int]:
    """A group of the new protocol: c (new protocol), x (classic, synced)."""
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    c = NewClient("c")
    await c.step(coordinator)
    joined = await coordinator.join_group(_classic_join())
    x = joined.member_id
    await coordinator.sync_group(
        SyncGroupRequest(group_id=OURS, generation_id=joined.generation_id, member_id=x)
    )
    return coordinator, replicas, c, x, joined.generation_id


@pytest.mark.parametrize("request_kind", ["heartbeat", "sync", "leave"])
async def test_a_classic_request_queued_behind_a_downgrade_goes_to_the_classic_group(
    request_kind: str,
) -> None:
    coordinator, replicas, _c, x, generation = await _mixed()
    replicas.gate = asyncio.get_running_loop().create_future()
    leaving = asyncio.ensure_future(_beat(coordinator, member_id="c", member_epoch=-1))
    await asyncio.sleep(0)  # the downgrade's append waits at the gate, under the lock
    if request_kind == "heartbeat":
        queued: Coroutine[Any, Any, object] = coordinator.heartbeat(
            HeartbeatRequest(group_id=OURS, generation_id=generation, member_id=x)
        )
    elif request_kind == "sync":
        queued = coordinator.sync_group(
            SyncGroupRequest(group_id=OURS, generation_id=generation, member_id=x)
        )
    else:
        queued = coordinator.leave_group(LeaveGroupRequest(group_id=OURS, member_id=x))
    waiting = asyncio.ensure_future(queued)
    await asyncio.sleep(0)
    replicas.gate.set_result(None)
    replicas.gate = None
    assert (await leaving).error_code == 0
    assert isinstance(coordinator.groups[OURS], Group)  # downgraded
    if request_kind == "leave":
        await waiting  # the classic group takes x's LeaveGroup
        assert x not in coordinator.groups[OURS].members
    else:
        # the classic group's answer (rejoin), not GROUP_ID_NOT_FOUND (fatal to a
        # Java classic consumer's SyncGroup)
        with pytest.raises(RebalanceInProgressError):
            await waiting


async def test_a_classic_assignment_written_as_the_group_is_upgraded_is_not_handed_out() -> None:
    """The leader's SyncGroup write is in flight when a member of the new protocol joins:
    the group of the new protocol takes the members' previous assignments, so the
    members must not be given the new ones the classic write completes with."""
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    first = await coordinator.join_group(_classic_join())
    a = first.member_id
    await coordinator.sync_group(
        SyncGroupRequest(
            group_id=OURS,
            generation_id=first.generation_id,
            member_id=a,
            assignments=[
                SyncGroupRequestAssignment(member_id=m, assignment=p) for m, p in _plan([a]).items()
            ],
        )
    )
    joining = asyncio.ensure_future(coordinator.join_group(_classic_join()))
    await asyncio.sleep(0)
    again = await coordinator.join_group(_classic_join(a))
    b = (await joining).member_id
    generation = again.generation_id
    plan = _plan([a, b])
    replicas.gate = asyncio.get_running_loop().create_future()
    syncs = [
        asyncio.ensure_future(
            coordinator.sync_group(
                SyncGroupRequest(
                    group_id=OURS,
                    generation_id=generation,
                    member_id=m,
                    assignments=[
                        SyncGroupRequestAssignment(member_id=k, assignment=p)
                        for k, p in plan.items()
                    ]
                    if m == a
                    else [],
                )
            )
        )
        for m in (a, b)
    ]
    for _ in range(3):
        await asyncio.sleep(0)  # the classic write is in flight
    new = NewClient("c")
    first_try = asyncio.ensure_future(_cjoin(coordinator, "c"))  # the upgrade, its write
    for _ in range(3):
        await asyncio.sleep(0)
    replicas.gate.set_result(None)
    replicas.gate = None
    answer = await first_try
    if answer.error_code == 0:
        new.epoch, new.held = answer.member_epoch, _partitions(answer)
    else:  # refused for now (retriable): the member tries again
        assert answer.error_code == CoordinatorNotAvailableError.code
        await new.step(coordinator)
    group = coordinator.groups[OURS]
    assert isinstance(group, ConsumerGroup)
    clients: list[Any] = []
    for m, sync in zip((a, b), syncs, strict=True):
        try:
            held = {tp.partition for tp in decode_assignment((await sync).assignment).partitions}
        except RebalanceInProgressError:
            held = set()  # eager: told to rejoin, it holds nothing
        clients.append(ClassicClient(m, generation, held))
        # what the member was told is what the group of the new protocol says it holds
        group_has = {p for ps in group.members[m].assigned.values() for p in ps}
        assert held <= group_has, (m, held, group_has)
    clients.append(new)
    for _ in range(6):
        for client in clients:
            await client.step(coordinator)
            _held_once(clients)


async def test_a_classic_join_under_a_member_id_the_group_does_not_have_is_unknown() -> None:
    """A fenced classic member rejoining under its old member id is told
    UNKNOWN_MEMBER_ID (Kafka's, and the classic group's here), not taken back in under
    it with whatever it says it owns."""
    coordinator, _, _c, x, _generation = await _mixed()
    group = coordinator.groups[OURS]
    assert isinstance(group, ConsumerGroup)
    group.fence(x)
    await coordinator._write_consumer_group(group)
    with pytest.raises(UnknownMemberIdError):
        await coordinator.join_group(_classic_join(x))
    assert x not in group.members
    # a static one: its instance id held by another member id is fenced
    static = _classic_join()
    static.group_instance_id = "i"
    joined = await coordinator.join_group(static)
    other = _classic_join("someone-else")
    other.group_instance_id = "i"
    with pytest.raises(FencedInstanceIdError):
        await coordinator.join_group(other)
    assert group.members[joined.member_id].instance_id == "i"


async def test_a_classic_join_naming_a_new_protocol_members_id_is_unknown() -> None:
    """A JoinGroup under the member id of a member of the new protocol is refused
    UNKNOWN_MEMBER_ID, as Kafka's throwIfMemberDoesNotUseClassicProtocol does: it no longer
    turns that member classic, taking over its partitions and session."""
    coordinator, _, c, _x, _generation = await _mixed()
    group = coordinator.groups[OURS]
    assert isinstance(group, ConsumerGroup)
    before = dict(group.members["c"].assigned), group.members["c"].epoch
    with pytest.raises(UnknownMemberIdError, match="uses the consumer protocol"):
        await coordinator.join_group(_classic_join("c"))
    member = group.members["c"]
    assert member.classic is None and (dict(member.assigned), member.epoch) == before
    await c.step(coordinator)  # and it goes on heartbeating as before
    assert group.members["c"].classic is None


async def test_a_classic_static_member_in_the_new_ones_place_gives_the_group_back() -> None:
    """Kafka's downgrade on a static replacement: the group's last member of the new
    protocol restarts as a classic consumer under its instance id."""
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    assert (await _cjoin(coordinator, "s", instance_id="host-s")).error_code == 0
    x = (await coordinator.join_group(_classic_join())).member_id
    restarted = _classic_join()
    restarted.group_instance_id = "host-s"
    joining = asyncio.ensure_future(coordinator.join_group(restarted))
    for _ in range(5):
        await asyncio.sleep(0)
    back = coordinator.groups[OURS]
    assert isinstance(back, Group) and back.state == "PreparingRebalance"
    assert "host-s" in back.static_members
    reloaded = replicas.reload()
    assert OURS not in reloaded.consumer_groups and OURS in reloaded.group_metadata
    s_join, x_join = await asyncio.gather(joining, coordinator.join_group(_classic_join(x)))
    assert s_join.generation_id == x_join.generation_id == back.generation_id
    assert {s_join.leader} == {x_join.leader} != {""}  # a classic group's leader assigns


async def test_a_classic_members_rack_comes_from_its_subscription() -> None:
    """KIP-881's v3 subscription names the member's rack. A classic member has it as its
    rack in a group of the new protocol, whether taken in by the upgrade or joining it
    (Kafka's fromClassicGroup and classicGroupJoinToConsumerGroup)."""
    coordinator, _ = _coordinator()
    _with_ids(coordinator)
    first = await _first_classic_member(coordinator, _classic_join(rack="r1"))
    await NewClient("c").step(coordinator)  # the upgrade
    joined = await coordinator.join_group(_classic_join(rack="r2"))
    group = coordinator.groups[OURS]
    assert isinstance(group, ConsumerGroup)
    assert group.members[first.member_id].rack_id == "r1"
    assert group.members[joined.member_id].rack_id == "r2"
    described = await coordinator.consumer_group_describe(
        ConsumerGroupDescribeRequest(group_ids=[OURS])
    )
    racks = {m.member_id: m.rack_id for m in described.groups[0].members}
    assert racks == {first.member_id: "r1", joined.member_id: "r2", "c": None}
