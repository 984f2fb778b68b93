"""The consumer's membership of Kafka 4's protocol (client/heartbeat_member.py) against
the broker's own group coordinator in the same process (its heartbeats go straight to
GroupCoordinator.consumer_group_heartbeat; no sockets): two members share a topic and
never hold a partition at once, the one that stays takes the other's at its stop, a
member the group dropped loses its partitions (no revoke) and joins again, and what
cannot be retried fails the consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from client import Consumer
from client.errors import CommitFailedError
from client.heartbeat_member import HeartbeatMember
from client.membership import MemberHooks
from client.types import TopicPartition
from protocol.apis import UPDATE_METADATA_INCREMENTAL, ApiKey, UpdateMetadataRequest
from protocol.errors import (
    NetworkError,
    StaleMemberEpochError,
    UnsupportedAssignorError,
    error_for_code,
)
from tests.unit.test_coordinator_consumer_protocol import T_ID, _setup
from tests.unit.test_coordinator_groups import OURS

pytestmark = pytest.mark.timeout(30)


class _Offsets:
    group_id = OURS

    async def coordinator(self) -> int:
        return 1

    def coordinator_dead(self, cause: object = None) -> None:
        pass


class _Cluster:
    """Heartbeats to an in-process coordinator; metadata that knows t's id."""

    request_timeout_ms = 5_000

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator
        self.metadata = SimpleNamespace(topics={"t": SimpleNamespace(topic_id=T_ID)})

    async def send(self, node: int, api_key: ApiKey, request: Any, **kw: Any) -> Any:
        assert api_key == ApiKey.CONSUMER_GROUP_HEARTBEAT
        await asyncio.sleep(0)
        response = await self.coordinator.consumer_group_heartbeat(request)
        if response.error_code:  # as a connection raises a request-level error
            raise error_for_code(response.error_code, response.error_message or "")
        return response

    async def fetch_metadata(self, topics: Any) -> Any:
        return self.metadata


class _Consumer:
    """What the consumer does with its member's news, and what it held at each step."""

    def __init__(self, name: str, everyone: dict[str, _Consumer], clash: list[str]) -> None:
        self.name, self.everyone, self.clash = name, everyone, clash
        self.held: set[TopicPartition] = set()
        self.lost_count = 0
        self.revoked: list[set[TopicPartition]] = []
        self.lost: list[set[TopicPartition]] = []
        self.added: list[set[TopicPartition]] = []
        self.failed: list[BaseException] = []
        everyone[name] = self

    def hooks(self) -> MemberHooks:
        async def revoke(tps: set[TopicPartition] | None) -> None:
            self.revoked.append(set(self.held if tps is None else tps))
            self.held -= self.held if tps is None else tps

        async def assign(all_of: list[TopicPartition], added: set[TopicPartition]) -> None:
            for other in self.everyone.values():
                if other is not self and other.held & added:
                    self.clash.append(f"{self.name} got {other.held & added} of {other.name}")
            self.held = set(all_of)
            self.added.append(set(added))

        async def lose(tps: set[TopicPartition] | None) -> None:
            self.lost_count += 1
            self.lost.append(set(self.held if tps is None else tps))
            self.held -= self.held if tps is None else tps

        return MemberHooks(revoke, assign, lambda: 0.0, self.failed.append, lose)


def _member(cluster: _Cluster, consumer: _Consumer, **kw: Any) -> HeartbeatMember:
    member = HeartbeatMember(
        cluster,  # type: ignore[arg-type]
        _Offsets(),  # type: ignore[arg-type]
        consumer.hooks(),
        group_instance_id=kw.pop("group_instance_id", None),
        max_poll_interval_ms=10_000,
        retry_backoff_ms=10,
        **kw,
    )
    member.subscribe({"t"}, None)
    return member


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_two_members_share_and_hand_over_without_holding_a_partition_twice() -> None:
    coordinator = _setup()
    coordinator._consumer_heartbeat_ms = 20  # quick rounds
    cluster, everyone, clash = _Cluster(coordinator), {}, []  # type: ignore[var-annotated]
    a_side, b_side = _Consumer("a", everyone, clash), _Consumer("b", everyone, clash)
    a, b = _member(cluster, a_side), _member(cluster, b_side)
    a.start()
    await _until(lambda: len(a_side.held) == 8 and a.stable)
    assert a.generation_id == 1  # the member epoch stands for the generation in commits
    b.start()
    await _until(lambda: len(a_side.held) == len(b_side.held) == 4 and a.stable and b.stable)
    assert not a_side.held & b_side.held and clash == []
    await a.stop()  # gives its four up, leaves: b takes them
    await _until(lambda: len(b_side.held) == 8)
    assert clash == [] and a_side.held == set()
    await b.stop()
    assert OURS in coordinator.groups and not coordinator.groups[OURS].members


async def test_a_member_the_group_dropped_loses_its_partitions_and_joins_again() -> None:
    coordinator = _setup()
    coordinator._consumer_heartbeat_ms = 20
    cluster, everyone, clash = _Cluster(coordinator), {}, []  # type: ignore[var-annotated]
    side = _Consumer("a", everyone, clash)
    member = _member(cluster, side)
    member.start()
    await _until(lambda: len(side.held) == 8)
    first_id = member.member_id
    coordinator.groups[OURS].fence(first_id)  # its session ran out, say
    await _until(lambda: side.lost_count == 1)
    await _until(lambda: len(side.held) == 8 and member.stable)
    assert member.member_id == first_id  # the same id, epoch 0 again (Kafka's KIP-1082)
    await member.stop()


async def test_what_cannot_be_retried_fails_the_consumer() -> None:
    coordinator = _setup()
    cluster, everyone, clash = _Cluster(coordinator), {}, []  # type: ignore[var-annotated]
    side = _Consumer("a", everyone, clash)
    member = _member(cluster, side, remote_assignor="sticky")  # not a server assignor
    member.start()
    await _until(lambda: bool(side.failed))
    assert isinstance(side.failed[0], UnsupportedAssignorError)
    await member.stop()


# --- review 126 -------------------------------------------------------------------------------


class _HeldCluster(_Cluster):
    """Can keep back the answer of a heartbeat the coordinator has taken (in flight)."""

    request_timeout_ms = 300

    def __init__(self, coordinator: Any) -> None:
        super().__init__(coordinator)
        self.hold: Any = None  # a predicate on the request
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.sent: list[Any] = []

    async def send(self, node: int, api_key: ApiKey, request: Any, **kw: Any) -> Any:
        self.sent.append(request)
        response = await super().send(node, api_key, request, **kw)
        if self.hold is not None and self.hold(request):
            self.hold = None
            self.held.set()
            await self.release.wait()
        return response


def _quick() -> Any:
    coordinator = _setup()
    coordinator._consumer_heartbeat_ms = 20
    return coordinator


async def test_a_subscription_changed_while_a_heartbeat_is_in_flight_is_sent() -> None:
    coordinator = _quick()
    cluster = _HeldCluster(coordinator)
    side = _Consumer("a", {}, [])
    member = _member(cluster, side)
    member.start()
    await _until(lambda: len(side.held) == 8 and member.stable)
    cluster.hold = lambda r: r.member_epoch > 0
    await cluster.held.wait()
    member.subscribe({"t", "u"}, None)  # while that heartbeat's answer is on its way
    cluster.release.set()
    group = coordinator.groups[OURS]
    await _until(lambda: group.members[member.member_id].subscribed == ("t", "u"))
    await member.stop()


async def test_a_switch_from_a_pattern_to_topic_names_drops_the_pattern() -> None:
    coordinator = _quick()
    side = _Consumer("a", {}, [])
    member = _member(_Cluster(coordinator), side)
    member.subscribe(set(), "t")
    member.start()
    await _until(lambda: len(side.held) == 8 and member.stable)
    member.subscribe({"u"}, None)  # no longer t: its partitions go ("" clears the regex)
    group = coordinator.groups[OURS]
    await _until(lambda: group.members[member.member_id].regex is None and not side.held)
    await member.stop()


async def test_a_topic_the_metadata_does_not_name_yet_is_taken_once_it_does() -> None:
    coordinator = _quick()
    cluster = _Cluster(coordinator)
    cluster.metadata = SimpleNamespace(topics={})  # made after the consumer looked
    side = _Consumer("a", {}, [])
    member = _member(cluster, side)
    member.start()
    await _until(lambda: member.epoch > 0)
    cluster.metadata = SimpleNamespace(topics={"t": SimpleNamespace(topic_id=T_ID)})
    await _until(lambda: len(side.held) == 8)
    await member.stop()


async def test_a_reconciliation_that_failed_is_done_again() -> None:
    coordinator = _quick()
    cluster = _Cluster(coordinator)
    cluster.metadata = SimpleNamespace(topics={})
    fails = [NetworkError("connection lost")]
    fetch = cluster.fetch_metadata

    async def flaky(topics: Any) -> Any:
        if fails:
            raise fails.pop()
        cluster.metadata = SimpleNamespace(topics={"t": SimpleNamespace(topic_id=T_ID)})
        return await fetch(topics)

    cluster.fetch_metadata = flaky  # type: ignore[method-assign]
    side = _Consumer("a", {}, [])
    member = _member(cluster, side)
    member.start()
    await _until(lambda: len(side.held) == 8)
    await member.stop()


async def test_stop_lets_a_heartbeat_in_flight_finish_so_the_commit_has_the_groups_epoch() -> None:
    coordinator = _quick()
    cluster = _HeldCluster(coordinator)
    everyone: dict[str, _Consumer] = {}
    a_side, b_side = _Consumer("a", everyone, []), _Consumer("b", everyone, [])
    a, b = _member(cluster, a_side), _member(cluster, b_side)
    refused: list[Exception] = []
    revoke = a._hooks.revoke

    async def committing_revoke(tps: Any) -> None:  # as the consumer's: commit, then give up
        try:
            coordinator.groups[OURS].check_commit(a.member_id, a.generation_id)
        except StaleMemberEpochError as exc:
            refused.append(exc)
        await revoke(tps)

    a._hooks.revoke = committing_revoke
    a.start()
    await _until(lambda: len(a_side.held) == 8 and a.stable)
    # a's acknowledgement of giving 4 up to b: the group takes it; its answer is late
    cluster.hold = lambda r: r.member_id == a.member_id and r.topic_partitions is not None
    b.start()
    await cluster.held.wait()
    asyncio.get_running_loop().call_later(0.05, cluster.release.set)
    await a.stop()
    assert refused == []  # the closing commit had epoch 2, as the group
    await b.stop()


async def test_stop_during_the_first_heartbeat_leaves_the_group() -> None:
    coordinator = _quick()
    cluster = _HeldCluster(coordinator)
    side = _Consumer("a", {}, [])
    member = _member(cluster, side)
    cluster.hold = lambda r: r.member_epoch == 0
    member.start()
    await cluster.held.wait()  # the coordinator took the join and gave it all 8
    await member.stop()  # (the answer never comes: stop waits the request timeout)
    assert not coordinator.groups[OURS].members  # else held by nobody for a session


async def test_heartbeats_go_on_while_a_revoke_callback_runs() -> None:
    coordinator = _quick()
    cluster = _HeldCluster(coordinator)
    everyone: dict[str, _Consumer] = {}
    a_side, b_side = _Consumer("a", everyone, []), _Consumer("b", everyone, [])
    a, b = _member(cluster, a_side), _member(cluster, b_side)
    revoke = a._hooks.revoke
    during: list[int] = []
    let_go = asyncio.Event()

    async def slow_revoke(tps: Any) -> None:  # a user's on_partitions_revoked that flushes
        if not during:  # (the first: what b takes; the one at stop() is quick)
            before = sum(r.member_id == a.member_id for r in cluster.sent)
            await _until(lambda: sum(r.member_id == a.member_id for r in cluster.sent) > before + 3)
            during.append(sum(r.member_id == a.member_id for r in cluster.sent) - before)
            let_go.set()
        await revoke(tps)

    a._hooks.revoke = slow_revoke
    a.start()
    await _until(lambda: len(a_side.held) == 8 and a.stable)
    b.start()
    await let_go.wait()
    assert during[0] > 3  # heartbeats went on (else: fenced past the session timeout)
    await _until(lambda: len(a_side.held) == len(b_side.held) == 4)
    await a.stop()
    await b.stop()


async def test_a_commit_refused_for_a_stale_epoch_goes_again_at_the_new_one() -> None:
    consumer = Consumer(bootstrap_servers="127.0.0.1:1", group_id="g", group_protocol="consumer")
    consumer._state = "running"  # no broker: the commit's path only
    consumer._subscribed = True
    tp = TopicPartition("t", 0)
    consumer._subscription.assign([tp])
    member = consumer._member
    assert isinstance(member, HeartbeatMember)
    member.epoch = 3
    member._settled.set()
    calls: list[int] = []

    class _Offsets:
        async def commit(self, offsets: Any, **kw: Any) -> None:
            calls.append(kw["generation_id"])
            if kw["generation_id"] == 3:
                raise StaleMemberEpochError("member is at epoch 4, not 3")

    def heartbeat_answered() -> None:  # what the member's next heartbeat brings
        assert member._wake.is_set()  # it was asked for at once
        member.epoch = 4
        member._settled.set()

    consumer._offsets = _Offsets()  # type: ignore[assignment]
    asyncio.get_running_loop().call_later(0.05, heartbeat_answered)
    await consumer.commit({tp: 5})
    assert calls == [3, 4]
    consumer._subscription.assign([])  # no longer ours: then the failure is said
    member.epoch = 5
    calls.clear()

    class _Stale:
        async def commit(self, offsets: Any, **kw: Any) -> None:
            raise StaleMemberEpochError("member is at epoch 6, not 5")

    consumer._offsets = _Stale()  # type: ignore[assignment]
    member._settled.set()
    asyncio.get_running_loop().call_later(0.05, member._settled.set)
    with pytest.raises(CommitFailedError, match="STALE_MEMBER_EPOCH"):
        await consumer.commit({tp: 5})


async def test_a_static_member_restarted_gets_its_partitions_back_without_a_new_epoch() -> None:
    coordinator = _quick()
    cluster, everyone, clash = _Cluster(coordinator), {}, []  # type: ignore[var-annotated]
    first_side, other_side = (
        _Consumer("first", everyone, clash),
        _Consumer("other", everyone, clash),
    )
    first = _member(cluster, first_side, group_instance_id="host-a")
    other = _member(cluster, other_side)
    first.start()
    other.start()
    await _until(lambda: len(first_side.held) == len(other_side.held) == 4)
    await _until(lambda: first.stable and other.stable)
    mine = set(first_side.held)
    group = coordinator.groups[OURS]
    epoch = group.epoch
    await first.stop()  # leaves with epoch -2: its partitions stay its own
    assert group.epoch == epoch and group.members[first.member_id].epoch == -2
    restarted_side = _Consumer("restarted", everyone, clash)
    restarted = _member(cluster, restarted_side, group_instance_id="host-a")
    assert restarted.member_id != first.member_id  # a new process: a new member id
    restarted.start()
    await _until(lambda: restarted_side.held == mine)
    assert group.epoch == epoch and other_side.held.isdisjoint(mine) and clash == []
    await restarted.stop()
    await other.stop()


async def test_a_topic_made_again_under_its_name_is_lost_and_taken_afresh() -> None:
    """Review 126's edge: the same name, another id. The old topic's positions must not
    be committed (they would land in the new topic's offsets), and the new topic's
    partitions are new to the consumer (fetched from their own committed offsets)."""
    coordinator = _quick()
    cluster = _Cluster(coordinator)
    side = _Consumer("a", {}, [])
    member = _member(cluster, side)
    member.start()
    await _until(lambda: len(side.held) == 8 and member.stable)
    every = {TopicPartition("t", p) for p in range(8)}
    assert side.added == [every]
    made_again = b"N" * 16
    state = coordinator._metadata.topics["t"][0]
    coordinator._metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_INCREMENTAL,
            partition_states=[state],
            topic_ids={"t": made_again},
        )
    )
    cluster.metadata = SimpleNamespace(topics={"t": SimpleNamespace(topic_id=made_again)})
    coordinator.topics_changed()
    await _until(lambda: len(side.added) == 2 and len(side.held) == 8 and member.stable)
    assert side.lost == [every] and side.revoked == []  # lost: nothing committed
    assert side.added[1] == every  # taken afresh
    assert member._owned_by_id(sorted(side.held))[0].topic_id == made_again
    await member.stop()
