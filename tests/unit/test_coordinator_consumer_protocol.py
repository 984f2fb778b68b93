"""ConsumerGroupHeartbeat through the group coordinator (KIP-848): Kafka's checks of the
request, the group beside classic ones under one id space, commits checked by member
epoch, ListGroups / DescribeGroups / DeleteGroups of such a group, fencing on the
coordinator's clock, and topics that grow. Over test_coordinator_groups' fake replica
manager: no sockets."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from broker.coordinator.consumer_group import ConsumerGroup
from broker.coordinator.coordinator import GroupCoordinator
from broker.coordinator.group import Group
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    UPDATE_METADATA_INCREMENTAL,
    ConsumerGroupDescribeRequest,
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupTopicPartitions,
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    LeaveGroupRequest,
    ListGroupsRequest,
    OffsetFetchRequest,
    OffsetFetchRequestGroup,
    OffsetFetchRequestTopic,
    ProducePartitionResponse,
    SyncGroupRequest,
    TxnOffsetCommitRequest,
    UpdateMetadataRequest,
)
from protocol.errors import (
    ApiError,
    CoordinatorNotAvailableError,
    FencedMemberEpochError,
    GroupIdNotFoundError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidRequestError,
    NonEmptyGroupError,
    NotCoordinatorError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    StaleMemberEpochError,
    TopicAuthorizationFailedError,
    UnknownMemberIdError,
    UnsupportedAssignorError,
    UnsupportedVersionError,
)
from tests.unit.test_commit_unknown_topics import _errors
from tests.unit.test_coordinator_groups import (
    NOBODY,
    OURS,
    FakeReplicas,
    _commit,
    _coordinator,
    _named,
)

T_ID = b"T" * 16


def _with_ids(coordinator: GroupCoordinator, *, partition: int = 0) -> None:
    """The broker's metadata gives t its id (the controller's UpdateMetadata does), and
    a ``partition`` (a new one: the topic grows)."""
    state = coordinator._metadata.topics["t"][0]
    coordinator._metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_INCREMENTAL,
            partition_states=[dataclasses.replace(state, partition_index=partition)],
            topic_ids={"t": T_ID},
        )
    )


def _setup() -> GroupCoordinator:
    coordinator, _ = _coordinator()  # t has 8 partitions
    _with_ids(coordinator)
    return coordinator


async def _beat(coordinator: GroupCoordinator, **kw: Any) -> ConsumerGroupHeartbeatResponse:
    request = ConsumerGroupHeartbeatRequest(group_id=kw.pop("group_id", OURS), **kw)
    return await coordinator.consumer_group_heartbeat(request)


async def _join(
    coordinator: GroupCoordinator, member: str, **kw: Any
) -> ConsumerGroupHeartbeatResponse:
    return await _beat(
        coordinator,
        member_id=member,
        member_epoch=0,
        rebalance_timeout_ms=10_000,
        subscribed_topic_names=["t"],
        topic_partitions=[],
        **kw,
    )


def _partitions(answer: ConsumerGroupHeartbeatResponse) -> set[int]:
    assert answer.assignment is not None
    return {p for t in answer.assignment.topic_partitions for p in t.partitions}


def _owning(*partitions: int) -> list[ConsumerGroupTopicPartitions]:
    return [ConsumerGroupTopicPartitions(topic_id=T_ID, partitions=sorted(partitions))]


async def test_two_members_share_the_partitions_one_revoking_before_the_other_has_them() -> None:
    coordinator = _setup()
    first = await _join(coordinator, "a")
    assert (first.error_code, first.member_epoch, _partitions(first)) == (0, 1, set(range(8)))
    assert first.heartbeat_interval_ms == 5_000
    second = await _join(coordinator, "b")
    assert (second.member_epoch, _partitions(second)) == (2, set())
    told = await _beat(
        coordinator, member_id="a", member_epoch=1, topic_partitions=_owning(*range(8))
    )
    kept = _partitions(told)
    assert told.member_epoch == 1 and len(kept) == 4
    done = await _beat(coordinator, member_id="a", member_epoch=1, topic_partitions=_owning(*kept))
    assert done.member_epoch == 2
    got = await _beat(coordinator, member_id="b", member_epoch=2, topic_partitions=_owning())
    assert _partitions(got) == set(range(8)) - kept
    # commits are checked by member epoch (Kafka's consumer group commits)
    ok = await coordinator.offset_commit(_commit(OURS, {0: 5}, member_id="b", generation_id=2))
    assert _errors(ok) == {("t", 0): 0}
    stale = await coordinator.offset_commit(_commit(OURS, {0: 6}, member_id="b", generation_id=1))
    assert _errors(stale) == {("t", 0): StaleMemberEpochError.code}
    zombie = await coordinator.offset_commit(_commit(OURS, {0: 6}, member_id="x", generation_id=2))
    assert _errors(zombie) == {("t", 0): UnknownMemberIdError.code}
    txn = TxnOffsetCommitRequest(
        transactional_id="tx",
        group_id=OURS,
        producer_id=7,
        producer_epoch=0,
        member_id="b",
        generation_id=1,
        topics=_commit(OURS, {0: 7}).topics,
    )
    assert _errors(await coordinator.txn_offset_commit(txn)) == {
        ("t", 0): IllegalGenerationError.code  # Kafka's answer to a stale epoch there
    }
    # the group, as the admin sees it
    listed = await coordinator.list_groups(ListGroupsRequest())
    assert [(g.group_id, g.protocol_type, g.group_state) for g in listed.groups] == [
        (OURS, "consumer", "Stable")
    ]
    (described,) = (await coordinator.describe_groups(DescribeGroupsRequest(groups=[OURS]))).groups
    assert (described.group_state, described.protocol_data, described.generation_id) == (
        "Stable",
        "uniform",
        2,
    )
    assert sorted(m.member_id for m in described.members) == ["a", "b"]
    deleted = await coordinator.delete_groups(DeleteGroupsRequest(groups_names=[OURS]))
    assert deleted.results[0].error_code == NonEmptyGroupError.code


async def test_a_leave_frees_the_partitions_and_an_empty_group_can_be_deleted() -> None:
    coordinator = _setup()
    await _join(coordinator, "a")
    left = await _beat(coordinator, member_id="a", member_epoch=-1)
    assert (left.error_code, left.member_epoch) == (0, -1)
    deleted = await coordinator.delete_groups(DeleteGroupsRequest(groups_names=[OURS]))
    assert deleted.results[0].error_code == 0
    assert OURS not in coordinator.groups


async def test_a_silent_member_is_fenced_on_the_coordinators_clock() -> None:
    coordinator = _setup()
    now = [0]
    coordinator._doubt._given_clock = lambda: now[0]
    await _join(coordinator, "a")
    await _join(coordinator, "b")
    now[0] = 45_000
    assert coordinator.groups[OURS].due(now[0])  # type: ignore[union-attr]
    await coordinator._fence_late(OURS)  # (what the coordinator's tick starts)
    assert set(coordinator.groups[OURS].members) == set()
    gone = await _beat(coordinator, member_id="a", member_epoch=1, topic_partitions=_owning())
    assert gone.error_code == UnknownMemberIdError.code  # it joins again, epoch 0


async def test_a_grown_topic_gives_the_group_a_new_epoch() -> None:
    coordinator = _setup()
    await _join(coordinator, "a")
    _with_ids(coordinator, partition=8)
    coordinator.topics_changed()
    answer = await _beat(
        coordinator, member_id="a", member_epoch=1, topic_partitions=_owning(*range(8))
    )
    assert (answer.member_epoch, _partitions(answer)) == (2, set(range(9)))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"member_id": "", "member_epoch": 3}, "MemberId can't be empty"),
        ({"member_id": "a", "member_epoch": 0, "topic_partitions": []}, "RebalanceTimeoutMs"),
        (
            {
                "member_id": "a",
                "member_epoch": 0,
                "rebalance_timeout_ms": 1,
                "topic_partitions": [],
            },
            "SubscribedTopicNames or SubscribedTopicRegex",
        ),
        (
            {
                "member_id": "a",
                "member_epoch": 0,
                "rebalance_timeout_ms": 1,
                "subscribed_topic_names": ["t"],
            },
            "TopicPartitions must be empty",
        ),
        ({"member_id": "a", "member_epoch": -2}, "InstanceId can't be null"),
        ({"member_id": "a", "member_epoch": -3}, "MemberEpoch -3 is invalid"),
        ({"member_id": "a", "member_epoch": 1, "rack_id": ""}, "RackId can't be empty"),
    ],
)
async def test_kafkas_checks_of_the_request(fields: dict[str, Any], message: str) -> None:
    answer = await _beat(_setup(), **fields)
    assert answer.error_code == InvalidRequestError.code
    assert message in (answer.error_message or "")


async def test_the_two_protocols_share_the_group_ids_as_kafkas_do() -> None:
    coordinator = _setup()
    # an unknown member of an unknown group: told to join again (see the coordinator)
    assert (await _beat(coordinator, member_id="a", member_epoch=4)).error_code == (
        UnknownMemberIdError.code
    )
    joined = await _join(coordinator, "a")
    assert joined.error_code == 0
    classic = JoinGroupRequest(
        group_id=OURS,
        session_timeout_ms=10_000,
        protocol_type="consumer",
        protocols=[JoinGroupRequestProtocol(name="range", metadata=b"")],
    )
    with pytest.raises(InconsistentGroupProtocolError):  # its bytes: not a subscription
        await coordinator.join_group(classic)
    fenced = await _beat(coordinator, member_id="a", member_epoch=7, topic_partitions=_owning())
    assert fenced.error_code == FencedMemberEpochError.code
    await _beat(coordinator, member_id="a", member_epoch=-1)  # empty now: classic may have it
    coordinator.groups[OURS] = await coordinator._classic_group(OURS)  # type: ignore[assignment]
    assert isinstance(coordinator.groups[OURS], Group)
    # a classic group with members of another protocol type is not taken over (see
    # test_group_migration for one that is)
    coordinator.groups[OURS].members["m"] = object()  # type: ignore[assignment]
    taken = await _join(coordinator, "z")
    assert taken.error_code == GroupIdNotFoundError.code
    assert "protocol type" in (taken.error_message or "")


async def test_consumer_group_describe_shows_members_assignments_and_targets() -> None:
    coordinator = _setup()
    await _join(coordinator, "a", client_id="rdkafka")
    await _join(coordinator, "b")  # a still holds b's target: b's is empty for now
    answer = await coordinator.consumer_group_describe(
        ConsumerGroupDescribeRequest(group_ids=[OURS, NOBODY, _named("elsewhere", 1)])
    )
    ours, nobody, classic = answer.groups
    assert (ours.group_state, ours.group_epoch, ours.assignment_epoch) == ("Reconciling", 2, 2)
    assert ours.assignor_name == "uniform"
    by_id = {m.member_id: m for m in ours.members}
    a, b = by_id["a"], by_id["b"]
    assert (a.member_epoch, a.client_id, a.subscribed_topic_names) == (1, "rdkafka", ["t"])
    assert [t.topic_name for t in a.assignment.topic_partitions] == ["t"]
    assert len(a.assignment.topic_partitions[0].partitions) == 8  # not revoked yet
    assert len(a.target_assignment.topic_partitions[0].partitions) == 4
    assert b.assignment.topic_partitions == []
    assert len(b.target_assignment.topic_partitions[0].partitions) == 4
    # not a group of this protocol: Kafka's clients ask DescribeGroups then
    assert nobody.error_code == GroupIdNotFoundError.code
    assert nobody.error_message == f"Group {NOBODY} is not a consumer group."
    assert classic.error_code == NotCoordinatorError.code  # another broker's (partition 1)


async def test_list_groups_filters_by_type_as_kafkas_v5() -> None:
    coordinator = _setup()
    await _join(coordinator, "a")
    await coordinator.offset_commit(_commit(NOBODY, {0: 1}))  # a classic group (Empty)

    async def listed(*types: str) -> list[tuple[str, str]]:
        answer = await coordinator.list_groups(ListGroupsRequest(types_filter=list(types)))
        return [(g.group_id, g.group_type) for g in answer.groups]

    both = sorted([(OURS, "consumer"), (NOBODY, "classic")])
    assert await listed() == both
    assert await listed("Consumer ") == [(OURS, "consumer")]  # without case, trimmed
    assert await listed("classic") == [(NOBODY, "classic")]
    assert await listed("share") == []


# --- review 125 -------------------------------------------------------------------------------


async def test_a_commit_racing_the_delete_of_an_empty_group_is_told_to_retry() -> None:
    """Else the commit is answered done, its record lands after the delete's tombstones,
    and a reload (a failover) brings back an offset of a deleted group."""
    coordinator = _setup()
    replicas = coordinator._replicas
    await _join(coordinator, "a")
    await _beat(coordinator, member_id="a", member_epoch=-1)  # leaves: the group is Empty
    assert _errors(await coordinator.offset_commit(_commit(OURS, {0: 5}))) == {("t", 0): 0}
    replicas.gate = asyncio.get_running_loop().create_future()  # type: ignore[attr-defined]
    deleting = asyncio.ensure_future(
        coordinator.delete_groups(DeleteGroupsRequest(groups_names=[OURS]))
    )
    for _ in range(5):  # its tombstones are appended; it waits for them
        await asyncio.sleep(0)
    assert coordinator.groups[OURS].state == "Dead"
    committing = asyncio.ensure_future(coordinator.offset_commit(_commit(OURS, {0: 7})))
    await asyncio.sleep(0)
    replicas.gate.set_result(None)  # type: ignore[attr-defined]
    await deleting
    assert _errors(await committing) == {("t", 0): CoordinatorNotAvailableError.code}
    assert OURS not in replicas.reload().groups  # type: ignore[attr-defined]


async def test_joins_racing_a_delete_of_either_kind_of_group_are_told_to_retry() -> None:
    coordinator = _setup()
    classic = coordinator._group(OURS)
    assert isinstance(classic, Group)
    classic.delete()  # what DeleteGroups and expiry do while their tombstones are written
    answer = await _join(coordinator, "a")
    # retriable (not GROUP_ID_NOT_FOUND, on which librdkafka stalls)
    assert answer.error_code == CoordinatorNotAvailableError.code
    classic.undelete()
    await _join(coordinator, "a")
    await _beat(coordinator, member_id="a", member_epoch=-1)
    coordinator.groups[OURS].delete()
    with pytest.raises(CoordinatorNotAvailableError):  # not INCONSISTENT_GROUP_PROTOCOL
        await coordinator.join_group(
            JoinGroupRequest(
                group_id=OURS,
                session_timeout_ms=10_000,
                protocol_type="consumer",
                protocols=[JoinGroupRequestProtocol(name="range", metadata=b"")],
            )
        )


async def test_a_refused_join_leaves_an_empty_classic_group_in_place() -> None:
    coordinator = _setup()
    classic = coordinator._group(OURS)
    assert isinstance(classic, Group)
    classic.emptied_at_ms = 1_234  # what its offsets' expiry goes by
    refused = await _join(coordinator, "a", server_assignor="sticky")
    assert refused.error_code == UnsupportedAssignorError.code
    assert coordinator.groups[OURS] is classic  # an error changes nothing
    taken = await _join(coordinator, "a")
    group = coordinator.groups[OURS]
    assert taken.error_code == 0 and isinstance(group, ConsumerGroup)
    assert group.emptied_at_ms == 1_234


async def test_a_regex_gives_only_the_topics_the_member_may_describe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka's KAFKA-18813: by name, a topic not describable is refused; by regex, it is
    left out of what the regex matches."""
    coordinator = _setup()
    acl = coordinator._acl
    allowed, decider = acl.allowed, acl.decider

    def no_t(operation: Operation, kind: ResourceType, name: str) -> bool:
        return name != "t" and allowed(operation, kind, name)

    def deciding(operation: Operation, kind: ResourceType) -> Callable[[str], bool]:
        decide = decider(operation, kind)
        return lambda name: name != "t" and decide(name)

    monkeypatch.setattr(acl, "allowed", no_t)
    monkeypatch.setattr(acl, "decider", deciding)
    named = await _join(coordinator, "a")
    assert named.error_code == TopicAuthorizationFailedError.code
    by_regex = await _beat(
        coordinator,
        member_id="b",
        member_epoch=0,
        rebalance_timeout_ms=10_000,
        subscribed_topic_regex="t.*",
        topic_partitions=[],
    )
    assert (by_regex.error_code, _partitions(by_regex)) == (0, set())


# --- the group in __consumer_offsets: what a coordinator that takes over has ------------------


def _moved(replicas: FakeReplicas) -> GroupCoordinator:
    """The coordinator the group moved to: it loaded the same log."""
    coordinator, _ = _coordinator(replicas)
    _with_ids(coordinator)
    return coordinator


async def _converged(coordinator: GroupCoordinator) -> dict[str, set[int]]:
    """a and b share t at epoch 2; what each holds."""
    await _join(coordinator, "a")
    await _join(coordinator, "b")
    told = await _beat(
        coordinator, member_id="a", member_epoch=1, topic_partitions=_owning(*range(8))
    )
    kept = _partitions(told)
    await _beat(coordinator, member_id="a", member_epoch=1, topic_partitions=_owning(*kept))
    got = await _beat(coordinator, member_id="b", member_epoch=2, topic_partitions=_owning())
    return {"a": kept, "b": _partitions(got)}


async def test_a_group_goes_on_under_the_coordinator_it_moved_to() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    held = await _converged(coordinator)
    assert held["a"] | held["b"] == set(range(8)) and not held["a"] & held["b"]
    group_epoch = coordinator.groups[OURS].epoch  # type: ignore[union-attr]

    moved = _moved(replicas)
    group = moved.groups[OURS]
    assert isinstance(group, ConsumerGroup) and group.state == "Stable"
    for member, partitions in held.items():  # their epochs and partitions, as they were
        answer = await _beat(
            moved, member_id=member, member_epoch=2, topic_partitions=_owning(*partitions)
        )
        assert (answer.error_code, answer.member_epoch) == (0, 2)
        assert answer.assignment is None or _partitions(answer) == partitions
    assert group.epoch == group_epoch  # no rebalance
    ok = await moved.offset_commit(_commit(OURS, {0: 5}, member_id="b", generation_id=2))
    assert _errors(ok) == {("t", 0): 0}  # commits at the member's epoch go on
    # and a member that heartbeats no more is fenced there, on its session from the move
    assert not group.due(moved._doubt.clock() + 44_000)


async def test_an_answer_waits_for_its_records_and_the_next_change_for_the_answer() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    replicas.gate = asyncio.get_running_loop().create_future()
    first = asyncio.ensure_future(_join(coordinator, "a"))
    second = asyncio.ensure_future(_join(coordinator, "b"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done() and not second.done()
    assert "b" not in coordinator.groups[OURS].members  # b waits for a's change to be written
    replicas.gate.set_result(None)
    assert (await first).member_epoch == 1 and (await second).member_epoch == 2


async def test_a_change_not_written_is_undone_and_told_to_retry() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    replicas.fail_code = NotEnoughReplicasError.code
    refused = await _join(coordinator, "a")
    assert refused.error_code == CoordinatorNotAvailableError.code  # retriable
    assert OURS not in coordinator.groups  # a new group none of whose records landed
    replicas.fail_code = 0
    await _join(coordinator, "a")
    group = coordinator.groups[OURS]
    replicas.fail_code = NotLeaderOrFollowerError.code
    refused = await _join(coordinator, "b")
    assert refused.error_code == NotCoordinatorError.code
    undone = coordinator.groups[OURS]
    assert isinstance(undone, ConsumerGroup) and undone is not group
    assert (set(undone.members), undone.epoch) == ({"a"}, 1)  # as the log has it
    replicas.fail_code = 0
    assert (await _join(coordinator, "b")).member_epoch == 2
    assert set(_moved(replicas).groups[OURS].members) == {"a", "b"}


async def test_fences_leaves_and_a_delete_are_in_the_log_too() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    now = [0]
    coordinator._doubt._given_clock = lambda: now[0]
    await _join(coordinator, "a")
    await _join(coordinator, "b")
    await _join(coordinator, "s", instance_id="host-s")
    await _beat(coordinator, member_id="a", member_epoch=-1)
    await _beat(coordinator, member_id="s", member_epoch=-2, instance_id="host-s")
    assert set(_moved(replicas).groups[OURS].members) == {"b", "s"}
    assert _moved(replicas).groups[OURS].members["s"].epoch == -2
    now[0] = 45_000
    await coordinator._fence_late(OURS)
    assert _moved(replicas).groups[OURS].members == {}
    deleted = await coordinator.delete_groups(DeleteGroupsRequest(groups_names=[OURS]))
    assert deleted.results[0].error_code == 0
    reloaded = replicas.reload()
    assert OURS not in reloaded.consumer_groups and OURS not in _moved(replicas).groups


async def test_one_protocol_taking_the_others_empty_group_deletes_its_records() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    await _join(coordinator, "a")
    await _beat(coordinator, member_id="a", member_epoch=-1)
    classic = JoinGroupRequest(
        group_id=OURS,
        session_timeout_ms=10_000,
        protocol_type="consumer",
        protocols=[JoinGroupRequestProtocol(name="range", metadata=b"")],
    )
    joined = await coordinator.join_group(classic)
    assert joined.error_code == 0
    assert OURS not in replicas.reload().consumer_groups  # its records went first
    await coordinator.sync_group(
        SyncGroupRequest(group_id=OURS, generation_id=1, member_id=joined.member_id)
    )
    await coordinator.leave_group(LeaveGroupRequest(group_id=OURS, member_id=joined.member_id))
    assert OURS in replicas.reload().group_metadata  # the classic group, stored empty
    assert (await _join(coordinator, "c")).error_code == 0  # and back to this protocol
    reloaded = replicas.reload()
    assert OURS not in reloaded.group_metadata and OURS in reloaded.consumer_groups
    assert isinstance(_moved(replicas).groups[OURS], ConsumerGroup)


async def test_a_member_commits_with_offset_commit_v9_or_above_as_kafkas() -> None:
    coordinator = _setup()
    await _join(coordinator, "a")
    old = _commit(OURS, {0: 5}, member_id="a", generation_id=1, kafka_version=8)
    assert _errors(await coordinator.offset_commit(old)) == {("t", 0): UnsupportedVersionError.code}
    new = _commit(OURS, {0: 5}, member_id="a", generation_id=1, kafka_version=9)
    assert _errors(await coordinator.offset_commit(new)) == {("t", 0): 0}
    ours = _commit(OURS, {0: 6}, member_id="a", generation_id=1)  # Headwater's own protocol
    assert _errors(await coordinator.offset_commit(ours)) == {("t", 0): 0}
    zombie = _commit(OURS, {0: 7}, member_id="x", generation_id=1, kafka_version=8)
    assert _errors(await coordinator.offset_commit(zombie)) == {  # (Kafka's order)
        ("t", 0): UnknownMemberIdError.code
    }
    await _beat(coordinator, member_id="a", member_epoch=-1)
    admin = _commit(OURS, {0: 8}, kafka_version=2)  # an empty group: an admin's, any version
    assert _errors(await coordinator.offset_commit(admin)) == {("t", 0): 0}


async def test_offset_fetch_v8_asks_several_groups_and_v9_checks_the_member() -> None:
    coordinator = _setup()
    await _join(coordinator, "a")
    await coordinator.offset_commit(_commit(OURS, {0: 5}, member_id="a", generation_id=1))
    wanted = [OffsetFetchRequestTopic(name="t", partition_indexes=[0])]

    def asked(group: str, member: str | None = None, epoch: int = -1) -> OffsetFetchRequestGroup:
        return OffsetFetchRequestGroup(
            group_id=group, member_id=member, member_epoch=epoch, topics=wanted
        )

    answer = await coordinator.offset_fetch(
        OffsetFetchRequest(
            group_id="",
            groups=[
                asked(OURS),  # an admin's
                asked(OURS, "a", 1),  # the member, at its epoch
                asked(OURS, "a", 0),  # at another
                asked(OURS, "x", 1),  # not a member
                asked(NOBODY),  # no offsets: -1, no error
                asked(_named("elsewhere", 1)),  # coordinated elsewhere
            ],
        )
    )
    assert answer.groups is not None
    got = [
        (g.error_code, [p.committed_offset for t in g.topics for p in t.partitions])
        for g in answer.groups
    ]
    assert got == [
        (0, [5]),
        (0, [5]),
        (StaleMemberEpochError.code, []),
        (UnknownMemberIdError.code, []),
        (0, [-1]),
        (NotCoordinatorError.code, []),
    ]


# --- review 128 -------------------------------------------------------------------------------

# a JoinGroup's tombstones appended (with an error), but the consumer group kept in memory


async def test_tombstones_appended_with_an_error_still_replace_the_group() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    await _join(coordinator, "a")
    await _beat(coordinator, member_id="a", member_epoch=-1)  # empty now
    real = replicas.append_records

    async def appended_not_replicated(*args: Any, **kw: Any) -> ProducePartitionResponse:
        result = await real(*args, **kw)  # in the log, then the ISR shrank
        return ProducePartitionResponse(
            index=result.index,
            base_offset=result.base_offset,
            error_code=NotEnoughReplicasAfterAppendError.code,
        )

    replicas.append_records = appended_not_replicated  # type: ignore[method-assign]
    classic = JoinGroupRequest(
        group_id=OURS,
        session_timeout_ms=10_000,
        protocol_type="consumer",
        protocols=[JoinGroupRequestProtocol(name="range", metadata=b"")],
    )
    with pytest.raises(ApiError):  # told to retry
        await coordinator.join_group(classic)
    replicas.append_records = real  # type: ignore[method-assign]
    # the log has the group's tombstones; a member of the new protocol joins meanwhile
    assert (await _join(coordinator, "b")).error_code == 0
    live = coordinator.groups[OURS]
    moved_coordinator = _moved(replicas)
    moved = moved_coordinator.groups[OURS]
    assert isinstance(live, ConsumerGroup) and isinstance(moved, ConsumerGroup)
    assert moved.subscribed_topics == live.subscribed_topics  # record 4 was not lost
    b = live.members["b"]
    answer = await _beat(
        moved_coordinator,
        member_id="b",
        member_epoch=b.epoch,
        topic_partitions=_owning(*{p for ps in b.assigned.values() for p in ps}),
    )
    assert (answer.error_code, answer.member_epoch) == (0, b.epoch)  # no rebalance


# a first write refused: the empty classic group it replaced comes back as stored


async def test_a_refused_join_over_an_empty_classic_group_gives_back_that_group() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    request = JoinGroupRequest(
        group_id=OURS,
        session_timeout_ms=10_000,
        protocol_type="consumer",
        protocols=[JoinGroupRequestProtocol(name="range", metadata=b"")],
    )
    for _ in range(3):  # three generations of a classic group, then it is left empty
        joined = await coordinator.join_group(request)
        await coordinator.sync_group(
            SyncGroupRequest(
                group_id=OURS, generation_id=joined.generation_id, member_id=joined.member_id
            )
        )
        await coordinator.leave_group(LeaveGroupRequest(group_id=OURS, member_id=joined.member_id))
    await asyncio.sleep(0)
    classic = coordinator.groups[OURS]
    assert isinstance(classic, Group) and classic.state == "Empty"
    generation = classic.generation_id
    assert generation > 0
    replicas.fail_code = NotEnoughReplicasError.code
    assert (await _join(coordinator, "a")).error_code != 0  # not written: undone
    undone = coordinator.groups[OURS]
    stored = _moved(replicas).groups[OURS]
    assert isinstance(undone, Group) and isinstance(stored, Group)
    assert undone.generation_id == stored.generation_id == generation
    assert undone.protocol_name == stored.protocol_name


async def test_a_fence_not_written_is_due_again_at_the_next_tick_and_others_keep_theirs() -> None:
    coordinator, replicas = _coordinator()
    _with_ids(coordinator)
    now = [0]
    coordinator._doubt._given_clock = lambda: now[0]
    await _join(coordinator, "a")
    now[0] = 30_000
    await _join(coordinator, "b")  # b's session runs to 75 s, a's to 45 s
    now[0] = 45_000
    replicas.fail_code = NotEnoughReplicasError.code
    await coordinator._fence_late(OURS)  # a fenced, not written: undone
    group = coordinator.groups[OURS]
    assert isinstance(group, ConsumerGroup) and set(group.members) == {"a", "b"}
    assert group.members["b"].session_deadline_ms == 75_000  # not a session from now
    assert group.due(now[0])  # a: fenced again at the next tick
    replicas.fail_code = 0
    await coordinator._fence_late(OURS)
    assert set(coordinator.groups[OURS].members) == {"b"}  # type: ignore[union-attr]
    assert set(_moved(replicas).groups[OURS].members) == {"b"}  # type: ignore[union-attr]
