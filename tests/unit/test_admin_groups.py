"""Admin's consumer-group and offset calls against scripted brokers: what each request
asks, which broker it goes to, how answers and per-group errors become results, and what
is retried. Every request and response crosses the schema codec of protocol/apis.py, so
these check the wire shapes too, without a cluster."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from client.admin import Admin
from client.assignors import Assignment, encode_assignment
from client.cluster import Broker, ClusterMetadata, PartitionMetadata, TopicMetadata
from client.types import (
    BrokerDescription,
    GroupDescription,
    GroupListing,
    ListOffsetsResult,
    MemberDescription,
    OffsetSpec,
    TopicPartition,
)
from protocol.apis import (
    ApiKey,
    DeletableGroupResult,
    DeleteGroupsResponse,
    DescribedGroup,
    DescribedGroupMember,
    DescribeGroupsResponse,
    FindCoordinatorResponse,
    ListedGroup,
    ListGroupsResponse,
    ListOffsetsPartitionResponse,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
    OffsetFetchResponse,
    OffsetFetchResponsePartition,
    OffsetFetchResponseTopic,
    api_for,
)
from protocol.errors import (
    ApiError,
    CoordinatorLoadInProgressError,
    GroupIdNotFoundError,
    NonEmptyGroupError,
    NotCoordinatorError,
    NotLeaderOrFollowerError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from protocol.schema import decode_message, encode_message

Handler = Callable[[int | None, ApiKey, Any], Any]


def _wire(cls: type, message: Any) -> Any:
    head, raws = encode_message(message, 0)
    assert not raws  # group and offset APIs carry no record bytes
    return decode_message(cls, 0, head)


class ScriptedCluster:
    """Stands in for client.cluster.Cluster: ``handler(node, api_key, request)`` answers
    (node None for send_any); an ApiError it returns is raised, as a connection does."""

    closed = False

    def __init__(self, brokers: list[int], handler: Handler, topics: dict[str, int]) -> None:
        self.handler = handler
        self.sent: list[tuple[int | None, ApiKey, Any]] = []
        self.metadata = ClusterMetadata(
            brokers=MappingProxyType({b: Broker(b, "127.0.0.1", 9000 + b) for b in brokers}),
            topics=MappingProxyType(
                {
                    name: TopicMetadata(
                        name,
                        {p: PartitionMetadata(p, brokers[p % len(brokers)]) for p in range(n)},
                    )
                    for name, n in topics.items()
                }
            ),
            topic_errors=MappingProxyType({"gone": UnknownTopicOrPartitionError("gone")}),
        )

    async def send(self, node: int | None, api_key: ApiKey, request: Any, **_: Any) -> Any:
        api = api_for(api_key, 0)
        request = _wire(api.request, request)
        self.sent.append((node, api_key, request))
        response = self.handler(node, api_key, request)
        if isinstance(response, ApiError):
            raise response
        response = _wire(api.response, response)
        if response.error_code:
            raise error_for_code(response.error_code, response.error_message)
        return response

    async def send_any(self, api_key: ApiKey, request: Any, **_: Any) -> Any:
        return await self.send(None, api_key, request)

    async def fetch_metadata(self, _topics: Any, **_: Any) -> ClusterMetadata:
        return self.metadata

    async def refresh(self) -> ClusterMetadata:
        return self.metadata

    def of(self, api_key: ApiKey) -> list[tuple[int | None, Any]]:
        return [(node, request) for node, key, request in self.sent if key == api_key]


def _admin(handler: Handler, brokers: list[int] | None = None, **topics: int) -> Admin:
    admin = Admin(bootstrap_servers="127.0.0.1:1", request_timeout_ms=2000, retry_backoff_ms=1)
    admin._cluster = ScriptedCluster(brokers or [1, 2, 3], handler, topics)  # type: ignore[assignment]
    admin._state = "running"
    return admin


def _sent(admin: Admin) -> ScriptedCluster:
    cluster = admin._cluster
    assert isinstance(cluster, ScriptedCluster)
    return cluster


def _coordinated_by(node: int, answer: Callable[[Any], Any]) -> Handler:
    """Broker ``node`` coordinates every group; the others say NOT_COORDINATOR."""

    def handle(at: int | None, api_key: ApiKey, request: Any) -> Any:
        if api_key == ApiKey.FIND_COORDINATOR:
            return FindCoordinatorResponse(node_id=node, host="127.0.0.1", port=9000 + node)
        if at != node:
            return NotCoordinatorError("not here")
        return answer(request)

    return handle


# --- list_groups ---------------------------------------------------------------------


async def test_list_groups_asks_every_broker_and_merges() -> None:
    loading = {2}  # broker 2 is still loading its groups the first time it is asked
    per_broker = {
        1: [ListedGroup(group_id="b", protocol_type="consumer", group_state="Stable")],
        2: [ListedGroup(group_id="a", protocol_type="", group_state="Empty")],
        3: [ListedGroup(group_id="b", protocol_type="consumer", group_state="Stable")],  # moving
    }

    def handle(node: int | None, api_key: ApiKey, _request: Any) -> Any:
        assert api_key == ApiKey.LIST_GROUPS and node is not None
        if node in loading:
            loading.discard(node)
            return CoordinatorLoadInProgressError("loading")
        return ListGroupsResponse(groups=per_broker[node])

    admin = _admin(handle)
    assert await admin.list_groups() == [
        GroupListing("a", "", "Empty"),
        GroupListing("b", "consumer", "Stable"),
    ]
    assert sorted(node for node, _ in _sent(admin).of(ApiKey.LIST_GROUPS)) == [1, 2, 2, 3]


# --- describe_groups -----------------------------------------------------------------


def _described(group_id: str, **kw: Any) -> DescribedGroup:
    return DescribedGroup(group_id=group_id, **kw)


async def test_describe_decodes_consumer_assignments_at_the_coordinator() -> None:
    assignment = encode_assignment(
        Assignment([TopicPartition("t", 2), TopicPartition("t", 0), TopicPartition("u", 1)])
    )
    members = [
        DescribedGroupMember(
            member_id="m-1",
            client_id="app",
            client_host="/10.0.0.1",
            member_metadata=b"",
            member_assignment=assignment,
        ),
        DescribedGroupMember(member_id="m-2", client_id="app", client_host="/10.0.0.2"),
        DescribedGroupMember(member_id="m-3", member_assignment=b"\x00"),  # not the protocol
    ]
    group = _described(
        "g",
        group_state="Stable",
        protocol_type="consumer",
        protocol_data="range",
        generation_id=4,
        leader="m-1",
        members=members,
    )
    admin = _admin(_coordinated_by(2, lambda _r: DescribeGroupsResponse(groups=[group])))
    (description,) = await admin.describe_groups(["g"])
    assert description == GroupDescription(
        "g",
        "Stable",
        "consumer",
        "range",
        4,
        "m-1",
        [
            MemberDescription(
                "m-1",
                None,
                "app",
                "/10.0.0.1",
                [TopicPartition("t", 0), TopicPartition("t", 2), TopicPartition("u", 1)],
            ),
            MemberDescription("m-2", None, "app", "/10.0.0.2", []),
            MemberDescription("m-3", None, "", "", []),
        ],
        BrokerDescription(2, "127.0.0.1", 9002, None),  # the coordinator that answered
    )
    assert [(node, r.groups) for node, r in _sent(admin).of(ApiKey.DESCRIBE_GROUPS)] == [(2, ["g"])]


async def test_describe_follows_a_moving_coordinator_and_names_unknown_groups() -> None:
    coordinator = iter([1, 3, 3, 3])
    answers = {
        "g": _described("g", group_state="Empty"),
        "gone": _described("gone", error_code=GroupIdNotFoundError.code),
        "dead": _described("dead", group_state="Dead"),
    }

    def handle(node: int | None, api_key: ApiKey, request: Any) -> Any:
        if api_key == ApiKey.FIND_COORDINATOR:
            found = next(coordinator)
            return FindCoordinatorResponse(node_id=found, host="127.0.0.1", port=9000 + found)
        (name,) = request.groups
        if node == 1:  # it moved: the group's entry says so
            return DescribeGroupsResponse(
                groups=[_described(name, error_code=NotCoordinatorError.code)]
            )
        return DescribeGroupsResponse(groups=[answers[name]])

    admin = _admin(handle)
    (described,) = await admin.describe_groups(["g"])
    assert described.state == "Empty"
    assert [node for node, _ in _sent(admin).of(ApiKey.DESCRIBE_GROUPS)] == [1, 3]
    (dead,) = await admin.describe_groups(["dead"])  # Kafka's answer for a group nobody has
    assert (dead.state, dead.members) == ("Dead", [])
    with pytest.raises(GroupIdNotFoundError, match="group 'gone' does not exist"):
        await admin.describe_groups(["gone"])


# --- committed offsets -----------------------------------------------------------------


def _fetched(**offsets: dict[int, int]) -> OffsetFetchResponse:
    return OffsetFetchResponse(
        topics=[
            OffsetFetchResponseTopic(
                name=topic,
                partitions=[
                    OffsetFetchResponsePartition(partition_index=p, committed_offset=o)
                    for p, o in parts.items()
                ],
            )
            for topic, parts in offsets.items()
        ]
    )


async def test_list_group_offsets_all_or_some_and_without_the_uncommitted() -> None:
    admin = _admin(_coordinated_by(1, lambda _r: _fetched(t={0: 5, 1: -1}, u={0: 0})))
    assert await admin.list_group_offsets("g") == {
        TopicPartition("t", 0): 5,
        TopicPartition("u", 0): 0,
    }
    await admin.list_group_offsets("g", [TopicPartition("t", 0), TopicPartition("t", 1)])
    first, second = (r for _, r in _sent(admin).of(ApiKey.OFFSET_FETCH))
    assert (first.group_id, first.topics) == ("g", None)  # None: everything committed
    assert [(t.name, t.partition_indexes) for t in second.topics] == [("t", [0, 1])]


async def test_alter_group_offsets_commits_from_outside_and_refuses_with_members() -> None:
    members = {"busy"}

    def commit(request: Any) -> OffsetCommitResponse:
        code = UnknownMemberIdError.code if request.group_id in members else 0
        return OffsetCommitResponse(
            topics=[
                OffsetCommitResponseTopic(
                    name=t.name,
                    partitions=[
                        OffsetCommitResponsePartition(
                            partition_index=p.partition_index, error_code=code
                        )
                        for p in t.partitions
                    ],
                )
                for t in request.topics
            ]
        )

    admin = _admin(_coordinated_by(2, commit))
    await admin.alter_group_offsets("idle", {TopicPartition("t", 1): 7, TopicPartition("t", 0): 3})
    (_, request), *_ = _sent(admin).of(ApiKey.OFFSET_COMMIT)
    assert (request.generation_id, request.member_id) == (-1, "")  # outside membership
    assert [(p.partition_index, p.committed_offset) for p in request.topics[0].partitions] == [
        (0, 3),
        (1, 7),
    ]
    with pytest.raises(UnknownMemberIdError, match="stop its consumers first"):
        await admin.alter_group_offsets("busy", {TopicPartition("t", 0): 0})
    with pytest.raises(ValueError, match="negative"):
        await admin.alter_group_offsets("idle", {TopicPartition("t", 0): -1})


# --- delete_groups -----------------------------------------------------------------------


async def test_delete_groups_reports_each_groups_outcome() -> None:
    codes = {"done": 0, "busy": NonEmptyGroupError.code, "nobody": GroupIdNotFoundError.code}
    loading = {"done"}

    def delete(request: Any) -> DeleteGroupsResponse:
        (name,) = request.groups_names
        if name in loading:  # a retriable code in the group's result is asked again
            loading.discard(name)
            return DeleteGroupsResponse(
                results=[
                    DeletableGroupResult(
                        group_id=name, error_code=CoordinatorLoadInProgressError.code
                    )
                ]
            )
        return DeleteGroupsResponse(
            results=[DeletableGroupResult(group_id=name, error_code=codes[name])]
        )

    outcome = await _admin(_coordinated_by(3, delete)).delete_groups(["done", "busy", "nobody"])
    assert outcome["done"] is None
    assert isinstance(outcome["busy"], NonEmptyGroupError)
    assert "stop its consumers first" in outcome["busy"].message
    assert isinstance(outcome["nobody"], GroupIdNotFoundError)


# --- list_offsets --------------------------------------------------------------------


async def test_list_offsets_asks_each_leader_and_retries_a_moved_one() -> None:
    moved = {TopicPartition("t", 1)}  # its leader moves: NOT_LEADER the first time

    def handle(node: int | None, api_key: ApiKey, request: Any) -> Any:
        assert api_key == ApiKey.LIST_OFFSETS
        topics = []
        for t in request.topics:
            rows = []
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition_index)
                code = NotLeaderOrFollowerError.code if tp in moved else 0
                moved.discard(tp)
                offset = {-2: 10, -1: 100}.get(p.timestamp, 50)
                rows.append(
                    ListOffsetsPartitionResponse(
                        partition_index=p.partition_index,
                        error_code=code,
                        offset=offset,
                        timestamp=-1 if p.timestamp < 0 else p.timestamp + 1,
                        leader_epoch=node or 0,
                    )
                )
            topics.append(ListOffsetsTopicResponse(name=t.name, partitions=rows))
        return ListOffsetsResponse(topics=topics)

    admin = _admin(handle, t=3)
    specs = {
        TopicPartition("t", 0): OffsetSpec.earliest(),
        TopicPartition("t", 1): OffsetSpec.latest(),
        TopicPartition("t", 2): OffsetSpec.for_timestamp(1_000),
    }
    assert await admin.list_offsets(specs) == {
        TopicPartition("t", 0): ListOffsetsResult(10, -1, 1),
        TopicPartition("t", 1): ListOffsetsResult(100, -1, 2),
        TopicPartition("t", 2): ListOffsetsResult(50, 1_001, 3),
    }
    asked = [
        (node, [p.partition_index for p in r.topics[0].partitions])
        for node, r in _sent(admin).of(ApiKey.LIST_OFFSETS)
    ]
    assert sorted(asked) == [(1, [0]), (2, [1]), (2, [1]), (3, [2])]


async def test_list_offsets_of_what_does_not_exist_fails_at_once() -> None:
    admin = _admin(lambda *_: pytest.fail("nothing should be sent"), t=2)
    with pytest.raises(UnknownTopicOrPartitionError, match="topic 't' has no partition 5"):
        await admin.list_offsets({TopicPartition("t", 5): OffsetSpec.latest()})
    with pytest.raises(UnknownTopicOrPartitionError, match="'gone' does not exist"):
        await admin.list_offsets({TopicPartition("gone", 0): OffsetSpec.latest()})
    with pytest.raises(ValueError, match="negative"):
        OffsetSpec.for_timestamp(-5)
