"""The group state machine, driven directly with a fake clock."""

import asyncio

import pytest

from broker.coordinator.group import Group
from protocol.errors import (
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def _join(
    group: Group, member_id: str = "", protocols: tuple[str, ...] = ("range",)
) -> asyncio.Future:
    return group.join(
        member_id=member_id,
        group_instance_id=None,
        client_id="c",
        session_timeout_ms=1_000,
        rebalance_timeout_ms=2_000,
        protocol_type="consumer",
        protocols=[(p, p.encode()) for p in protocols],
    )


async def test_two_members_form_a_generation_and_the_leader_assigns() -> None:
    clock = Clock()
    group = Group("g", clock)
    first = await _join(group)
    assert (first.generation_id, first.leader) == (1, first.member_id)
    assert await group.sync(first.member_id, 1, {first.member_id: b"all"}) == b"all"
    assert group.state == "Stable"

    second_join = _join(group, protocols=("roundrobin", "range"))  # a new member: rebalance
    with pytest.raises(RebalanceInProgressError):
        group.heartbeat(first.member_id, 1)  # how the first learns it must rejoin
    first_again = _join(group, first.member_id, ("range", "roundrobin"))
    a, b = await asyncio.gather(first_again, second_join)
    assert a.generation_id == b.generation_id == 2
    assert a.protocol_name == "range"  # the leader's preference, supported by both
    assert {m for m, _, _ in a.members} == {a.member_id, b.member_id} and b.members == []
    sync_b = group.sync(b.member_id, 2, {})
    assert not sync_b.done()  # waits for the leader's assignment
    await group.sync(a.member_id, 2, {a.member_id: b"p0", b.member_id: b"p1"})
    assert await sync_b == b"p1"


async def test_zombies_are_refused_and_silent_members_leave() -> None:
    clock = Clock()
    group = Group("g", clock)
    a = await _join(group)
    await group.sync(a.member_id, 1, {})
    with pytest.raises(UnknownMemberIdError):
        group.heartbeat("nobody", 1)
    with pytest.raises(IllegalGenerationError):
        group.check_commit(a.member_id, 0)
    group.check_commit(a.member_id, 1)
    with pytest.raises(UnknownMemberIdError):
        group.check_commit("", -1)  # outside membership while the group has members
    with pytest.raises(InconsistentGroupProtocolError):
        _join(group, protocols=("sticky",))
    clock.now += 1_500  # past the session timeout without a heartbeat
    group.tick()
    assert group.members == {} and group.state == "Empty"
    group.check_commit("", -1)  # an empty group takes commits from outside


async def test_a_member_that_does_not_rejoin_is_dropped_at_the_deadline() -> None:
    clock = Clock()
    group = Group("g", clock)
    a = await _join(group)
    await group.sync(a.member_id, 1, {})
    b_join = _join(group)
    clock.now += 2_500  # the rebalance timeout passes; a never rejoined
    group.tick()
    b = await b_join
    assert b.generation_id == 2 and list(group.members) == [b.member_id]
    with pytest.raises(UnknownMemberIdError):
        group.heartbeat(a.member_id, 1)


async def test_leaving_rebalances_the_rest() -> None:
    group = Group("g", Clock())
    a = await _join(group)
    await group.sync(a.member_id, 1, {})
    b_join = _join(group)
    a2 = await asyncio.gather(_join(group, a.member_id), b_join)
    await group.sync(a2[0].member_id, 2, {})
    group.leave(a2[1].member_id)
    assert group.state == "PreparingRebalance"
    last = await _join(group, a.member_id)
    assert last.generation_id == 3 and last.leader == a.member_id
