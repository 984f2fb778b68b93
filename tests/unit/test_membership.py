"""The consumer's membership task against a scripted coordinator (no sockets): a failed
metadata lookup during the leader's assignment makes it join again instead of carrying
on as if it had joined; a revocation interrupted by stop() still completes once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from client.assignors import (
    Assignment,
    Subscription,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from client.membership import GroupMember, MemberHooks
from client.types import TopicPartition
from protocol.apis import (
    ApiKey,
    HeartbeatResponse,
    JoinGroupResponse,
    JoinGroupResponseMember,
    LeaveGroupResponse,
    SyncGroupResponse,
)
from protocol.errors import NetworkError, UnknownMemberIdError


class _Offsets:
    group_id = "g"

    async def coordinator(self) -> int:
        return 1

    def coordinator_dead(self, cause: object = None) -> None:
        pass


class _Metadata:
    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


class _Cluster:
    """A coordinator that makes us leader; the first metadata lookup fails."""

    client_id = "c"
    request_timeout_ms = 30_000

    def __init__(self) -> None:
        self.on_update: list[Any] = []
        self.calls: list[tuple[ApiKey, int]] = []
        self.timeouts: dict[ApiKey, int | None] = {}
        self.heartbeat = asyncio.Event()
        self.metadata_failures = 1

    def add_topics(self, topics: Any) -> None:
        pass

    async def fetch_metadata(self, topics: Any) -> _Metadata:
        if self.metadata_failures:
            self.metadata_failures -= 1
            raise NetworkError("no broker answered")
        return _Metadata()

    async def send(self, node: int, key: ApiKey, request: Any, **kw: Any) -> Any:
        self.calls.append((key, getattr(request, "generation_id", -1)))
        self.timeouts[key] = kw.get("timeout_ms")
        if key == ApiKey.JOIN_GROUP:
            subscription = encode_subscription(Subscription(["t"]))
            return JoinGroupResponse(
                generation_id=len([c for c in self.calls if c[0] == ApiKey.JOIN_GROUP]),
                protocol_type="consumer",
                protocol_name="range",
                leader="me",
                member_id="me",
                members=[JoinGroupResponseMember(member_id="me", metadata=subscription)],
            )
        if key == ApiKey.SYNC_GROUP:
            (mine,) = [a for a in request.assignments if a.member_id == "me"]
            return SyncGroupResponse(assignment=mine.assignment)
        if key == ApiKey.HEARTBEAT:
            self.heartbeat.set()
            return HeartbeatResponse()
        return LeaveGroupResponse()


async def _lose(partitions: object = None) -> None:
    raise AssertionError("nothing is lost here")


def _member(
    cluster: _Cluster, hooks: MemberHooks, *, assignors: list[str] | None = None
) -> GroupMember:
    return GroupMember(
        cluster,  # type: ignore[arg-type]
        _Offsets(),  # type: ignore[arg-type]
        hooks,
        group_instance_id=None,
        session_timeout_ms=1_000,
        heartbeat_interval_ms=20,
        max_poll_interval_ms=10_000,
        assignors=assignors or ["range"],
        retry_backoff_ms=10,
        metadata_max_age_ms=60_000,
    )


async def test_a_failed_lookup_while_assigning_means_joining_again() -> None:
    cluster = _Cluster()
    assigned: list[list[TopicPartition]] = []
    done = asyncio.Event()

    async def revoke(tps: set[TopicPartition] | None) -> None:
        pass

    async def assign(tps: list[TopicPartition], added: set[TopicPartition]) -> None:
        assigned.append(tps)
        done.set()

    member = _member(cluster, MemberHooks(revoke, assign, lambda: 0.0, lambda e: None, _lose))
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(done.wait(), 5)
    await member.stop()
    keys = [key for key, _ in cluster.calls]
    first_sync = keys.index(ApiKey.SYNC_GROUP)
    # the failed assignment sent no heartbeat as if joined: it joined again, then synced
    assert keys[:first_sync] == [ApiKey.JOIN_GROUP, ApiKey.JOIN_GROUP]
    assert assigned == [[TopicPartition("t", 0), TopicPartition("t", 1)]]
    assert encode_assignment(Assignment(assigned[0]))  # what the leader handed itself


async def test_a_revocation_interrupted_by_stop_completes_once() -> None:
    cluster = _Cluster()
    cluster.metadata_failures = 0
    started, release = asyncio.Event(), asyncio.Event()
    revocations = 0
    assigned = asyncio.Event()

    async def revoke(tps: set[TopicPartition] | None) -> None:
        nonlocal revocations
        revocations += 1
        started.set()
        await release.wait()  # the user's on_partitions_revoked commits, slowly

    async def assign(tps: list[TopicPartition], added: set[TopicPartition]) -> None:
        assigned.set()

    member = _member(cluster, MemberHooks(revoke, assign, lambda: 0.0, lambda e: None, _lose))
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(assigned.wait(), 5)
    member.request_rejoin("test")  # the task starts revoking...
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.ensure_future(member.stop())  # ...and stop() cancels it mid-way
    await asyncio.sleep(0.05)
    assert not stopping.done()  # stop() waits for that same revocation to finish
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert revocations == 1


class _Cooperative(_Cluster):
    """A coordinator where we lead; from ``others`` on, a second member that owns
    nothing joins with us. Records what we said in each JoinGroup."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata_failures = 0
        self.others: list[str] = []
        self.joins: list[Subscription] = []
        self.events: list[str] = []

    async def fetch_metadata(self, topics: Any) -> _Metadata:
        return _Metadata()

    async def send(self, node: int, key: ApiKey, request: Any, **kw: Any) -> Any:
        if key != ApiKey.JOIN_GROUP:
            return await super().send(node, key, request, **kw)
        self.calls.append((key, -1))
        self.events.append("join")
        chosen = request.protocols[0]  # the group agrees on our first preference
        mine = chosen.metadata
        self.joins.append(decode_subscription(mine))
        theirs = encode_subscription(Subscription(["t"]))
        return JoinGroupResponse(
            generation_id=len(self.joins),
            protocol_type="consumer",
            protocol_name=chosen.name,
            leader="me",
            member_id="me",
            members=[
                JoinGroupResponseMember(member_id="me", metadata=mine),
                *(JoinGroupResponseMember(member_id=m, metadata=theirs) for m in self.others),
            ],
        )


async def test_cooperative_keeps_what_stays_gives_up_only_what_moves_then_rejoins() -> None:
    cluster = _Cooperative()
    revoked: list[set[TopicPartition] | None] = []
    added: list[set[TopicPartition]] = []
    settled = asyncio.Event()

    async def revoke(tps: set[TopicPartition] | None) -> None:
        cluster.events.append("revoke")
        revoked.append(tps)

    async def assign(tps: list[TopicPartition], new: set[TopicPartition]) -> None:
        cluster.events.append("assign")
        added.append(new)
        settled.set()

    member = _member(
        cluster,
        MemberHooks(revoke, assign, lambda: 0.0, lambda e: None, _lose),
        assignors=["cooperative-sticky"],
    )
    assert member.cooperative
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(settled.wait(), 5)
    both = {TopicPartition("t", 0), TopicPartition("t", 1)}
    assert added == [both] and set(member.assignment) == both
    settled.clear()
    cluster.others = ["other"]  # a second member: one partition must move to it
    member.request_rejoin("a member joined")
    await asyncio.wait_for(_until(lambda: len(cluster.joins) >= 3 and member.stable), 5)
    await member.stop()
    # nothing was given up before the second join; after it, exactly the partition that
    # moves, and the member joined again at once, owning only what it kept
    second = cluster.events.index("join", cluster.events.index("assign"))
    assert cluster.events[second : second + 4] == ["join", "revoke", "assign", "join"]
    (moved,) = revoked[0] or set()
    assert revoked[0] == {moved} and added[1] == set()
    assert cluster.joins[1].owned == sorted(both) and cluster.joins[1].generation == 1
    assert set(cluster.joins[2].owned) == both - {moved}
    assert cluster.joins[2].generation == 2
    assert set(member.assignment) <= both - {moved}


async def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.01)


class _Dropping(_Cooperative):
    """The coordinator forgets us once (our session timed out): a heartbeat says so."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = False

    async def send(self, node: int, key: ApiKey, request: Any, **kw: Any) -> Any:
        if key == ApiKey.HEARTBEAT and self.drop:
            self.drop = False
            raise UnknownMemberIdError("the member's session timed out")
        return await super().send(node, key, request, **kw)


@pytest.mark.parametrize("assignors", [["range"], ["cooperative-sticky"]])
async def test_a_dropped_member_loses_its_partitions_without_revoking(
    assignors: list[str],
) -> None:
    cluster = _Dropping()
    calls: list[str] = []
    joined = asyncio.Event()

    async def revoke(tps: set[TopicPartition] | None) -> None:
        calls.append("revoke")

    async def assign(tps: list[TopicPartition], new: set[TopicPartition]) -> None:
        calls.append("assign")
        joined.set()

    async def lose(partitions: object = None) -> None:
        calls.append("lose")

    member = _member(
        cluster, MemberHooks(revoke, assign, lambda: 0.0, lambda e: None, lose), assignors=assignors
    )
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(joined.wait(), 5)
    joined.clear()
    cluster.drop = True
    await asyncio.wait_for(joined.wait(), 5)
    await member.stop()
    # lost, not revoked (no commit for partitions that may be another member's), and the
    # next join claims nothing
    assert calls[:3] == ["assign", "lose", "assign"]
    assert cluster.joins[1].owned == [] and cluster.joins[1].generation == -1


async def test_a_heartbeat_waits_at_most_half_the_session() -> None:
    # a coordinator that stops answering (paused, cut off) is given up on while the
    # session can still be saved at the coordinator that takes over; at request_timeout_ms
    # (30 s) the member's 10 s session had run out there (seen in the soak)
    cluster = _Cluster()
    cluster.metadata_failures = 0
    joined = asyncio.Event()

    async def assign(tps: list[TopicPartition], added: set[TopicPartition]) -> None:
        joined.set()

    async def revoke(tps: set[TopicPartition] | None) -> None:
        pass

    member = _member(cluster, MemberHooks(revoke, assign, lambda: 0.0, lambda e: None, _lose))
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(joined.wait(), 5)
    await asyncio.wait_for(cluster.heartbeat.wait(), 5)
    await member.stop()
    assert cluster.timeouts[ApiKey.HEARTBEAT] == 500  # session_timeout_ms=1_000
