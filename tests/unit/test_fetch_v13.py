"""Kafka's Fetch v13 (KIP-516): topics named by id, on a leader's ReplicaManager behind
the broker's Fetch handler, with and without a fetch session. Kafka's Java consumer names,
in an incremental request, only the partitions whose position moved: a session holds the
others by their ids, through this broker learning of a topic, its deletion, and its
making again under a new id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.app import _fetch_within_quotas
from broker.deferred import Deferred
from broker.log import LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache, unknown_id_name
from broker.replica.fetch_session import FetchSessionCache
from broker.replica.manager import ReplicaManager
from protocol.apis import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    LEADER_DURING_DELETE,
    UPDATE_METADATA_FULL,
    UPDATE_METADATA_INCREMENTAL,
    FetchForgottenTopic,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    LeaderAndIsrPartitionState,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)
from protocol.errors import FetchSessionTopicIdError, UnknownTopicIdError
from protocol.topic_id import ZERO_TOPIC_ID
from tests.unit.test_fetch_sessions import _produce

X = bytes(range(1, 17))  # topic t's id
Y = bytes(range(17, 33))  # t's id once made again
V13 = SimpleNamespace(kafka_version=13)  # a Kafka-protocol listener's header
V12 = SimpleNamespace(kafka_version=12)


def _state(leader: int = 1) -> UpdateMetadataPartitionState:
    return UpdateMetadataPartitionState(
        topic_name="t",
        partition_index=0,
        controller_epoch=1,
        leader=leader,
        leader_epoch=1,
        isr=[1],
        replicas=[1],
    )


def _knows_t(metadata: MetadataCache, topic_id: bytes = X) -> None:
    metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_FULL,
            partition_states=[_state()],
            topic_ids={"t": topic_id},
        )
    )


def _t_deleted(metadata: MetadataCache, *, marked_first: bool = False) -> None:
    """The controller's update that t is deleted; first (``marked_first``) the one that
    it is being deleted (its partitions' leader the deletion marker)."""
    states = [[_state(LEADER_DURING_DELETE)], []] if marked_first else [[]]
    for partition_states in states:
        metadata.update(
            UpdateMetadataRequest(
                controller_id=1,
                controller_epoch=1,
                type=UPDATE_METADATA_INCREMENTAL,
                partition_states=partition_states,
                deleted_topics=[] if partition_states else ["t"],
            )
        )


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[tuple[ReplicaManager, MetadataCache, Any]]:
    """Broker 1 leads t-0; its Fetch handler as a Kafka listener serves it (no quotas)."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    metadata = MetadataCache()
    manager = ReplicaManager(1, logs, metadata, load)
    await manager.become_leader_or_follower(
        [
            LeaderAndIsrPartitionState(
                topic_name="t",
                partition_index=0,
                controller_epoch=1,
                leader=1,
                leader_epoch=1,
                isr=[1],
                replicas=[1],
            )
        ]
    )
    fetch = _fetch_within_quotas(manager, SimpleNamespace(active=False), metadata)  # type: ignore[arg-type]
    yield manager, metadata, fetch
    await manager.shutdown()
    logs.shutdown()


def _v13(offset: int, *, max_wait_ms: int = 0, session: bool = True) -> FetchRequest:
    """A consumer's Fetch v13 as decoded: topic t named by its id alone, and a new
    session asked for (as Kafka's Java consumer starts), or none."""
    partition = FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20)
    return FetchRequest(
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        session_id=INVALID_SESSION_ID,
        session_epoch=INITIAL_EPOCH if session else FINAL_EPOCH,
        topics=[FetchTopic(topic="", topic_id=X, partitions=[partition])],
    )


def _next(
    session_id: int,
    epoch: int,
    *,
    add: dict[bytes, int] | None = None,
    forget: list[bytes] | None = None,
    max_wait_ms: int = 0,
) -> FetchRequest:
    """An incremental Fetch v13 of a session: partition 0 of each id of ``add`` at its
    offset, and partition 0 of each of ``forget`` dropped (both by id alone)."""
    return FetchRequest(
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        session_id=session_id,
        session_epoch=epoch,
        topics=[
            FetchTopic(
                topic="",
                topic_id=i,
                partitions=[
                    FetchPartition(partition=0, fetch_offset=o, partition_max_bytes=1 << 20)
                ],
            )
            for i, o in (add or {}).items()
        ],
        forgotten_topics_data=[
            FetchForgottenTopic(topic="", topic_id=i, partitions=[0]) for i in forget or []
        ],
    )


def _seen(response: object) -> list[tuple[bytes, int, int, bool]]:
    """(topic id, partition, error code, records?) of each partition answered."""
    assert isinstance(response, FetchResponse), response
    return [
        (t.topic_id, p.partition_index, p.error_code, bool(p.records))
        for t in response.topics
        for p in t.partitions
    ]


async def test_a_topic_id_unknown_at_first_is_read_in_its_session_once_the_broker_knows_it(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    # a consumer learned t's id from another broker's metadata before this leader did
    manager, metadata, fetch = leader
    first = fetch(V13, _v13(0))
    session = first.session_id
    assert session != INVALID_SESSION_ID
    assert _seen(first) == [(X, 0, UnknownTopicIdError.code, False)]
    assert first.topics[0].topic == ""  # the name it went by is not sent back
    # ... and goes on naming nothing (its position did not move)
    assert _seen(fetch(V13, _next(session, 1))) == [(X, 0, UnknownTopicIdError.code, False)]
    _knows_t(metadata)
    _produce(manager, 0)
    assert _seen(fetch(V13, _next(session, 2))) == [(X, 0, 0, True)]
    assert _seen(fetch(V13, _next(session, 3, add={X: 1}))) == [(X, 0, 0, False)]
    assert _seen(fetch(V13, _next(session, 4))) == []  # nothing new: left out


async def test_a_session_follows_its_topic_deleted_and_made_again_under_a_new_id(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    manager, metadata, fetch = leader
    _knows_t(metadata)
    _produce(manager, 0)
    first = fetch(V13, _v13(0))
    session = first.session_id
    assert _seen(first) == [(X, 0, 0, True)]
    assert _seen(fetch(V13, _next(session, 1, add={X: 1}))) == [(X, 0, 0, False)]
    _t_deleted(metadata, marked_first=True)
    # not named again, the partition is still answered by the id it was asked by
    assert _seen(fetch(V13, _next(session, 2))) == [(X, 0, UnknownTopicIdError.code, False)]
    _knows_t(metadata, Y)  # t made again: the old id names nothing, the new one t
    _produce(manager, 0)
    assert _seen(fetch(V13, _next(session, 3))) == [(X, 0, UnknownTopicIdError.code, False)]
    # the consumer refreshed its metadata: it fetches the new id and drops the old
    swapped = fetch(V13, _next(session, 4, add={Y: 0}, forget=[X]))
    assert _seen(swapped) == [(Y, 0, 0, True)]
    assert _seen(fetch(V13, _next(session, 5, add={Y: 2}))) == [(Y, 0, 0, False)]
    _produce(manager, 0)
    assert _seen(fetch(V13, _next(session, 6))) == [(Y, 0, 0, True)]  # the old id: gone


async def test_a_partition_forgotten_by_id_is_answered_no_more(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    manager, metadata, fetch = leader
    _knows_t(metadata)
    session = fetch(V13, _v13(0)).session_id
    assert _seen(fetch(V13, _next(session, 1, forget=[X]))) == []
    _produce(manager, 0)
    assert _seen(fetch(V13, _next(session, 2))) == []


async def test_a_parked_session_fetch_is_answered_when_its_topic_is_deleted(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    _manager, metadata, fetch = leader
    _knows_t(metadata)
    session = fetch(V13, _v13(0)).session_id
    parked = fetch(V13, _next(session, 1, max_wait_ms=30_000))
    assert isinstance(parked, Deferred) and not parked.done
    _t_deleted(metadata, marked_first=True)
    answered = await asyncio.wait_for(parked, 5)  # not at the 30 s timeout
    assert _seen(answered) == [(X, 0, UnknownTopicIdError.code, False)]


async def test_a_parked_answer_carries_the_id_the_consumer_asked_by(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    # t is deleted while a consumer's sessionless fetch of it is parked, and answered
    # after; and made again meanwhile under a new id, whose records it must not be given
    manager, metadata, fetch = leader
    _knows_t(metadata)
    _produce(manager, 0)
    parked = fetch(V13, _v13(1, max_wait_ms=30_000, session=False))
    assert isinstance(parked, Deferred) and not parked.done
    _t_deleted(metadata)
    _knows_t(metadata, Y)
    _produce(manager, 0)  # wakes it: records at t-0's position 1, but of another topic
    answered = await asyncio.wait_for(parked, 5)
    # the id asked by: a zero one is no topic the consumer knows (Kafka's Java client
    # drops the whole answer, and starts again)
    assert _seen(answered) == [(X, 0, UnknownTopicIdError.code, False)]


async def test_a_fetch_by_the_zero_topic_id_is_unknown_topic_id(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    _manager, metadata, fetch = leader
    _knows_t(metadata)
    for session in (False, True):
        asked = _v13(0, session=session)
        asked.topics[0].topic_id = ZERO_TOPIC_ID  # no topic has it (Kafka's answer: 100)
        assert _seen(fetch(V13, asked)) == [(ZERO_TOPIC_ID, 0, UnknownTopicIdError.code, False)]


async def test_a_session_by_id_is_not_carried_on_by_name_nor_the_other_way(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    # Kafka's Java client drops to v12 when a topic has no id: the partitions held by
    # id would be answered under names it cannot match (Kafka refuses the mix too)
    _manager, _metadata, fetch = leader
    by_id = fetch(V13, _v13(0)).session_id
    with pytest.raises(FetchSessionTopicIdError, match="by id and this request by name"):
        fetch(V12, _next(by_id, 1))
    by_name = _v13(0)
    by_name.topics[0].topic, by_name.topics[0].topic_id = "t", ZERO_TOPIC_ID
    session = fetch(V12, by_name).session_id
    with pytest.raises(FetchSessionTopicIdError, match="by name and this request by id"):
        fetch(V13, _next(session, 1))


async def test_two_ids_trading_names_in_one_update_keep_their_own_partitions(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    # the consumer adds t's new id before this broker hears t was made again: its
    # session holds both, X as t and Y unknown; one full update then swaps them
    manager, metadata, fetch = leader
    _knows_t(metadata)
    session = fetch(V13, _v13(0)).session_id
    assert _seen(fetch(V13, _next(session, 1, add={Y: 0}))) == [
        (Y, 0, UnknownTopicIdError.code, False)
    ]
    _knows_t(metadata, Y)
    _produce(manager, 0)
    assert sorted(_seen(fetch(V13, _next(session, 2)))) == [
        (X, 0, UnknownTopicIdError.code, False),
        (Y, 0, 0, True),
    ]
    assert _seen(fetch(V13, _next(session, 3, add={Y: 1}, forget=[X]))) == [(Y, 0, 0, False)]
    _produce(manager, 0)
    assert _seen(fetch(V13, _next(session, 4))) == [(Y, 0, 0, True)]


class _Counting(dict):  # type: ignore[type-arg]
    """A dict that counts the passes over it."""

    passes = 0

    def _count(self) -> None:
        type(self).passes += 1

    def items(self):  # type: ignore[no-untyped-def]
        self._count()
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        self._count()
        return super().values()

    def keys(self):  # type: ignore[no-untyped-def]
        self._count()
        return super().keys()

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._count()
        return super().__iter__()


def test_an_update_making_or_deleting_no_topic_passes_over_no_topic_id() -> None:
    # the controller sends one for every ISR change and leader move: in a cluster of
    # many topics, none may cost a pass over them all (found in review)
    metadata = MetadataCache()
    _knows_t(metadata)
    metadata.topic_ids = _Counting(metadata.topic_ids)
    metadata.fetchable = _Counting(metadata.fetchable)
    _Counting.passes = 0
    metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_INCREMENTAL,
            partition_states=[_state()],
            topic_ids={"t": X},  # (as sent with the partition: no change)
        )
    )
    assert _Counting.passes == 0
    assert metadata.fetch_name(X) == "t"
    z = bytes(range(40, 56))  # topic u made, then deleted, by incremental updates
    for states, deleted, name in (([_state(), _state_of("u")], [], "u"), ([], ["u"], None)):
        metadata.update(
            UpdateMetadataRequest(
                controller_id=1,
                controller_epoch=1,
                type=UPDATE_METADATA_INCREMENTAL,
                partition_states=states,
                topic_ids={"u": z} if states else {},
                deleted_topics=deleted,
            )
        )
        assert metadata.fetch_name(z) == (name or unknown_id_name(z))
        assert metadata.fetch_name(X) == "t"


def _state_of(topic: str) -> UpdateMetadataPartitionState:
    state = _state()
    state.topic_name = topic
    return state


def test_a_rename_passes_only_over_the_sessions_holding_the_id() -> None:
    cache = FetchSessionCache(10)
    holding = []
    for i in range(5):
        asked = _v13(0)
        asked.topics[0].topic, asked.topics[0].topic_id = f"t{i}", bytes([i + 1]) * 16
        session = cache.context(asked, by_id=True).session
        assert session is not None
        session.partitions = _Counting(session.partitions)
        holding.append(session)
    _Counting.passes = 0
    assert cache.rename({b"\xff" * 16: "made"}) == []  # a topic no session holds
    assert _Counting.passes == 0
    cache.rename({bytes([3]) * 16: unknown_id_name(bytes([3]) * 16)})
    assert [list(s.partitions) for s in holding][2] == [
        TopicPartition(unknown_id_name(bytes([3]) * 16), 0)
    ]
