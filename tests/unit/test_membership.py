"""The consumer's membership task against a scripted coordinator (no sockets): a failed
metadata lookup during the leader's assignment makes it join again instead of carrying
on as if it had joined; a revocation interrupted by stop() still completes once."""

from __future__ import annotations

import asyncio
from typing import Any

from client.assignors import Assignment, Subscription, encode_assignment, encode_subscription
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
from protocol.errors import NetworkError


class _Offsets:
    group_id = "g"

    async def coordinator(self) -> int:
        return 1

    def coordinator_dead(self) -> None:
        pass


class _Metadata:
    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


class _Cluster:
    """A coordinator that makes us leader; the first metadata lookup fails."""

    client_id = "c"

    def __init__(self) -> None:
        self.on_update: list[Any] = []
        self.calls: list[tuple[ApiKey, int]] = []
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
            (mine,) = request.assignments
            return SyncGroupResponse(assignment=mine.assignment)
        if key == ApiKey.HEARTBEAT:
            return HeartbeatResponse()
        return LeaveGroupResponse()


def _member(cluster: _Cluster, hooks: MemberHooks) -> GroupMember:
    return GroupMember(
        cluster,  # type: ignore[arg-type]
        _Offsets(),  # type: ignore[arg-type]
        hooks,
        group_instance_id=None,
        session_timeout_ms=1_000,
        heartbeat_interval_ms=20,
        max_poll_interval_ms=10_000,
        assignors=["range"],
        retry_backoff_ms=10,
        metadata_max_age_ms=60_000,
    )


async def test_a_failed_lookup_while_assigning_means_joining_again() -> None:
    cluster = _Cluster()
    assigned: list[list[TopicPartition]] = []
    done = asyncio.Event()

    async def revoke() -> None:
        pass

    async def assign(tps: list[TopicPartition]) -> None:
        assigned.append(tps)
        done.set()

    member = _member(cluster, MemberHooks(revoke, assign, lambda: 0.0, lambda e: None))
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

    async def revoke() -> None:
        nonlocal revocations
        revocations += 1
        started.set()
        await release.wait()  # the user's on_partitions_revoked commits, slowly

    async def assign(tps: list[TopicPartition]) -> None:
        assigned.set()

    member = _member(cluster, MemberHooks(revoke, assign, lambda: 0.0, lambda e: None))
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
