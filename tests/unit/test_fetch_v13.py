"""Kafka's Fetch v13 (KIP-516): topics named by id, on a leader's ReplicaManager behind
the broker's Fetch handler. Such a fetch gets no session (the broker declines it, as
Kafka's does with a full session cache): a session holds partitions by name, and one
taken by an id the broker did not know yet stayed unknown for good (found in review:
Kafka's Java consumer names, in an incremental request, only the partitions whose
position moved)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.app import _fetch_within_quotas
from broker.deferred import Deferred
from broker.log import LogConfig
from broker.log.manager import LogManager
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import (
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    UPDATE_METADATA_FULL,
    UPDATE_METADATA_INCREMENTAL,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    LeaderAndIsrPartitionState,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)
from protocol.errors import UnknownTopicIdError
from tests.unit.test_fetch_sessions import _produce

X = bytes(range(1, 17))  # topic t's id
V13 = SimpleNamespace(kafka_version=13)  # a Kafka-protocol listener's header


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


def _knows_t(metadata: MetadataCache) -> None:
    metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_FULL,
            partition_states=[_state()],
            topic_ids={"t": X},
        )
    )


def _t_deleted(metadata: MetadataCache) -> None:
    metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_INCREMENTAL,
            deleted_topics=["t"],
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


def _v13(offset: int, *, max_wait_ms: int = 0) -> FetchRequest:
    """A consumer's Fetch v13 as decoded: topic t named by its id alone, and a new
    session asked for (as Kafka's Java consumer starts)."""
    partition = FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20)
    return FetchRequest(
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        session_id=INVALID_SESSION_ID,
        session_epoch=INITIAL_EPOCH,
        topics=[FetchTopic(topic="", topic_id=X, partitions=[partition])],
    )


def _seen(response: object) -> list[tuple[bytes, int, int, bool]]:
    """(topic id, partition, error code, records?) of each partition answered."""
    assert isinstance(response, FetchResponse), response
    return [
        (t.topic_id, p.partition_index, p.error_code, bool(p.records))
        for t in response.topics
        for p in t.partitions
    ]


async def test_a_topic_id_unknown_at_first_is_read_once_the_broker_knows_it(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    # a consumer learned t's id from another broker's metadata before this leader did
    manager, metadata, fetch = leader
    first = fetch(V13, _v13(0))  # it asks for a session
    assert first.session_id == INVALID_SESSION_ID  # declined: it sends everything again
    assert _seen(first) == [(X, 0, UnknownTopicIdError.code, False)]
    _knows_t(metadata)
    _produce(manager, 0)
    assert _seen(fetch(V13, _v13(0))) == [(X, 0, 0, True)]


async def test_a_parked_answer_carries_the_id_the_consumer_asked_by(
    leader: tuple[ReplicaManager, MetadataCache, Any],
) -> None:
    # t is deleted while a consumer's fetch of it is parked, and answered after
    manager, metadata, fetch = leader
    _knows_t(metadata)
    _produce(manager, 0)
    parked = fetch(V13, _v13(1, max_wait_ms=30_000))
    assert isinstance(parked, Deferred) and not parked.done
    _t_deleted(metadata)
    await manager.become_leader_or_follower(  # t-0 answers an error now
        [
            LeaderAndIsrPartitionState(
                topic_name="t",
                partition_index=0,
                controller_epoch=1,
                leader=2,
                leader_epoch=2,
                isr=[2],
                replicas=[1, 2],
            )
        ]
    )
    answered = await parked
    # the id asked by: a zero one is no topic the consumer knows (Kafka's Java client
    # drops the whole answer, and starts again)
    assert [t.topic_id for t in answered.topics] == [X]
