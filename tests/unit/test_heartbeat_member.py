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

from client.heartbeat_member import HeartbeatMember
from client.membership import MemberHooks
from client.types import TopicPartition
from protocol.apis import ApiKey
from protocol.errors import UnsupportedAssignorError, error_for_code
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
        self.failed: list[BaseException] = []
        everyone[name] = self

    def hooks(self) -> MemberHooks:
        async def revoke(tps: set[TopicPartition] | None) -> None:
            self.held -= self.held if tps is None else tps

        async def assign(all_of: list[TopicPartition], added: set[TopicPartition]) -> None:
            for other in self.everyone.values():
                if other is not self and other.held & added:
                    self.clash.append(f"{self.name} got {other.held & added} of {other.name}")
            self.held = set(all_of)

        async def lose() -> None:
            self.lost_count += 1
            self.held = set()

        return MemberHooks(revoke, assign, lambda: 0.0, self.failed.append, lose)


def _member(cluster: _Cluster, consumer: _Consumer, **kw: Any) -> HeartbeatMember:
    member = HeartbeatMember(
        cluster,  # type: ignore[arg-type]
        _Offsets(),  # type: ignore[arg-type]
        consumer.hooks(),
        group_instance_id=None,
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
