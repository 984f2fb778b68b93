"""Cooperative rebalancing, found in review: an eager member (the first step of the
rolling upgrade) or a member subscribing again claims only what it holds, so nothing is
left unowned; a commit waiting for a rebalance ends when the consumer stops and never
writes an offset older than a later commit's; on_partitions_lost can still read the
positions it loses; stop() during a partial revoke revokes the rest once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client import CommitFailedError, Consumer, RebalanceListener
from client import consumer as consumer_module
from client.assignors import decode_assignment
from client.membership import GroupMember, MemberHooks
from client.types import TopicPartition
from protocol.apis import ApiKey
from protocol.errors import RebalanceInProgressError
from tests.unit.test_membership import _Cooperative, _member, _until


async def _lose(partitions: object = None) -> None:
    pass


def _cooperative(cluster: _Cooperative, revoke: Any, assign: Any) -> GroupMember:
    hooks = MemberHooks(revoke, assign, lambda: 0.0, lambda e: None, _lose)
    return _member(cluster, hooks, assignors=["cooperative-sticky"])


class _Recording(_Cooperative):
    """Records every SyncGroup the leader sent (the whole group's assignment)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[dict[str, list[TopicPartition]]] = []

    async def send(self, node: int, key: ApiKey, request: Any, **kw: Any) -> Any:
        if key == ApiKey.SYNC_GROUP:
            self.syncs.append(
                {
                    a.member_id: decode_assignment(bytes(a.assignment)).partitions
                    for a in request.assignments
                }
            )
        return await super().send(node, key, request, **kw)


async def test_eager_member_offering_cooperative_sticky_leaves_no_partition_unowned() -> None:
    """The README's rolling upgrade, step 1: members with ("cooperative-sticky", "range")
    are eager, and the group picks cooperative-sticky. An eager member revokes everything
    before it joins but still claims those partitions in its subscription, so the assignor
    withholds the one that moves; the eager member does not hold it any more, so it sees
    nothing revoked and never rejoins: nobody consumes that partition."""
    cluster = _Recording()
    joined = asyncio.Event()

    async def revoke(tps: set[TopicPartition] | None) -> None:
        pass

    async def assign(tps: list[TopicPartition], new: set[TopicPartition]) -> None:
        joined.set()

    async def lose(partitions: object = None) -> None:
        pass

    member = _member(
        cluster,
        MemberHooks(revoke, assign, lambda: 0.0, lambda e: None, lose),
        assignors=["cooperative-sticky", "range"],
    )
    assert not member.cooperative
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(joined.wait(), 5)
    cluster.others = ["other"]  # a second member joins: one partition moves to it
    member.request_rejoin("a member joined")
    await _until(lambda: len(cluster.syncs) >= 2 and member.stable)
    await _until(lambda: _shared_whole(cluster.syncs[1:]))  # no partition left unowned
    await member.stop()


def _shared_whole(syncs: list[dict[str, list[TopicPartition]]]) -> bool:
    """The latest of ``syncs`` hands out every partition of t (two)."""
    every = {TopicPartition("t", 0), TopicPartition("t", 1)}
    return bool(syncs) and set().union(*map(set, syncs[-1].values())) == every


# --- the cooperative commit's wait -------------------------------------------------------


class _CommitOffsets:
    """The group's offsets as a commit sees them: the first commit is deferred
    (REBALANCE_IN_PROGRESS: the group is CompletingRebalance); records what was stored."""

    def __init__(self) -> None:
        self.stored: list[dict[TopicPartition, int]] = []
        self.deferred = 1

    async def commit(self, offsets: dict[TopicPartition, int], **member: object) -> None:
        if self.deferred:
            self.deferred -= 1
            raise RebalanceInProgressError("the group is rebalancing")
        self.stored.append(dict(offsets))


def _cooperative_consumer(max_poll_interval_ms: int = 60_000) -> tuple[Consumer, Any]:
    consumer = Consumer(bootstrap_servers="127.0.0.1:1", group_id="g")
    consumer._state = "running"  # no broker: the commit's path only
    consumer._subscribed = True
    consumer._subscription.assign([TopicPartition("t", 0)])
    cluster = _Recording()

    async def revoke(tps: set[TopicPartition] | None) -> None:
        pass

    async def assign(tps: list[TopicPartition], new: set[TopicPartition]) -> None:
        pass

    member = _cooperative(cluster, revoke, assign)
    member.max_poll_interval_ms = max_poll_interval_ms
    # joined generation 2, which is completing (no SyncGroup answer yet)
    member.member_id, member.generation_id, member._rejoin = "me", 2, False
    consumer._member = member
    consumer._offsets = _CommitOffsets()  # type: ignore[assignment]
    return consumer, member


async def test_a_deferred_cooperative_commit_ends_when_the_consumer_stops() -> None:
    """A worker task's commit waits for the rebalance; the application then stops the
    consumer. The rebalance will never settle now: the commit must fail at once, not
    hang for max_poll_interval_ms (300 s by default)."""
    consumer, _ = _cooperative_consumer(max_poll_interval_ms=60_000)
    offsets: _CommitOffsets = consumer._offsets  # type: ignore[assignment]
    committing = asyncio.ensure_future(consumer.commit({TopicPartition("t", 0): 5}))
    await _until(lambda: offsets.deferred == 0)  # its first try was deferred
    await asyncio.sleep(0)
    assert not committing.done()  # waiting for the rebalance to settle
    await asyncio.wait_for(consumer.stop(), 5)
    with pytest.raises(CommitFailedError):  # at once, not after max_poll_interval_ms
        await asyncio.wait_for(committing, 3)


async def test_a_retried_cooperative_commit_never_goes_backwards() -> None:
    """While a deferred commit (offset 5) waits for the rebalance, the rebalance's own
    commit (the revoke of another partition commits every position, or the user's
    on_partitions_revoked) stores offset 9 of the same, kept, partition. The retry then
    must not store 5 over 9: a crash afterwards would deliver 5..8 again."""
    consumer, member = _cooperative_consumer()
    offsets: _CommitOffsets = consumer._offsets  # type: ignore[assignment]
    tp = TopicPartition("t", 0)
    committing = asyncio.ensure_future(consumer.commit({tp: 5}))
    await _until(lambda: offsets.deferred == 0)  # its first try was deferred: it waits
    # the rebalance completes: its revoke commits in a rebalance callback (no wait) ...
    token = consumer_module._IN_REBALANCE.set(True)
    try:
        await consumer.commit({tp: 9})
    finally:
        consumer_module._IN_REBALANCE.reset(token)
    member._settled.set()  # ... and the generation settles, t-0 kept
    await asyncio.wait_for(committing, 5)
    assert offsets.stored[-1][tp] == 9


async def test_on_partitions_lost_can_still_read_the_positions_of_what_it_lost() -> None:
    """Kafka calls onPartitionsLost before it clears the assignment (onJoinPrepare:
    invokePartitionsLost, then assignFromSubscribed(empty)), and before this commit an
    eager member that the group dropped called on_partitions_revoked with its partitions
    still assigned. A listener that records its positions there (an external offset store)
    now gets ValueError: on_partitions_lost (whose default is on_partitions_revoked) runs
    after the partitions are gone."""
    consumer = Consumer(bootstrap_servers="127.0.0.1:1", group_id="g")
    consumer._state = "running"
    consumer._subscribed = True
    tp = TopicPartition("t", 0)
    consumer._subscription.assign([tp])
    consumer.seek(tp, 7)
    seen: list[object] = []

    class Listener(RebalanceListener):
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            try:
                seen.append({p: await consumer.position(p) for p in revoked})
            except Exception as exc:
                seen.append(exc)

    consumer._listener = Listener()
    await consumer._lost()
    assert seen == [{tp: 7}]
    assert consumer.assignment() == set()


async def test_a_cooperative_member_that_resubscribes_claims_nothing_it_gave_up() -> None:
    """Same root cause, cooperative member: unsubscribe() (member.stop(): revoke all,
    LeaveGroup) keeps ``assignment`` and its generation; subscribe() again joins claiming
    those partitions. With a newcomer in the same round, the assignor withholds the one
    that moves, the member (holding nothing) sees nothing revoked, nobody rejoins."""
    cluster = _Recording()
    joined = asyncio.Event()

    async def revoke(tps: set[TopicPartition] | None) -> None:
        pass

    async def assign(tps: list[TopicPartition], new: set[TopicPartition]) -> None:
        joined.set()

    member = _cooperative(cluster, revoke, assign)
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(joined.wait(), 5)
    await member.stop()  # what unsubscribe() does
    joined.clear()
    before = len(cluster.syncs)
    cluster.others = ["other"]  # another consumer starts meanwhile
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(joined.wait(), 5)
    await _until(lambda: _shared_whole(cluster.syncs[before:]))  # no partition left unowned
    await member.stop()


async def test_stop_during_a_partial_cooperative_revoke_revokes_the_rest_once() -> None:
    cluster = _Recording()
    joined = asyncio.Event()
    started, release = asyncio.Event(), asyncio.Event()
    revoked: list[set[TopicPartition] | None] = []

    async def revoke(tps: set[TopicPartition] | None) -> None:
        revoked.append(None if tps is None else set(tps))
        if tps is not None:
            started.set()
            await release.wait()

    async def assign(tps: list[TopicPartition], new: set[TopicPartition]) -> None:
        joined.set()

    member = _cooperative(cluster, revoke, assign)
    member.subscribe(["t"], None)
    member.start()
    await asyncio.wait_for(joined.wait(), 5)
    cluster.others = ["other"]
    member.request_rejoin("x")
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.ensure_future(member.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert len(revoked) == 2 and revoked[1] is None and len(revoked[0] or ()) == 1
    assert [k for k, _ in cluster.calls][-1] == ApiKey.LEAVE_GROUP
