"""A leader that cannot tell whether it still leads (its ZooKeeper session in doubt)
does not refuse a producer's batch from its producers' state alone: a new leader may
have taken the producer's later batches, so "out of order" here would end a producer
that did nothing wrong. It answers NOT_LEADER_OR_FOLLOWER (retriable) instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.log import LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import ProducePartition, ProduceRequest, ProduceTopic
from protocol.errors import (
    InvalidProducerEpochError,
    NotLeaderOrFollowerError,
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
)
from protocol.records.codec import encode_batch
from tests.unit.test_replica_fetch_wake import _leader_state

PRODUCER = 7


def _send(sequence: int, epoch: int = 0, producer_id: int = PRODUCER) -> ProduceRequest:
    batch = encode_batch(
        [(None, b"v", None, 1000)],
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
    )
    return ProduceRequest(
        acks=1,
        timeout_ms=1000,
        topics=[ProduceTopic(name="t", partitions=[ProducePartition(index=0, records=batch)])],
    )


def _code(response: object) -> int:
    return int(response.topics[0].partitions[0].error_code)  # type: ignore[attr-defined]


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[tuple[ReplicaManager, list[bool]]]:
    """Broker 1 leads t-0 alone; the producer's batches 0 and 1 are in its log."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    known = [True]
    manager = ReplicaManager(1, logs, MetadataCache(), load, state_known=lambda: known[0])
    await manager.become_leader_or_follower([_leader_state(isr=[1])])
    assert _code(manager.produce(_send(0))) == 0
    assert _code(manager.produce(_send(1))) == 0
    try:
        yield manager, known
    finally:
        await manager.shutdown()
        logs.shutdown()


async def test_in_doubt_a_producer_state_refusal_is_not_leader(
    leader: tuple[ReplicaManager, list[bool]],
) -> None:
    manager, known = leader
    refused = [
        (_send(5), OutOfOrderSequenceNumberError),  # 2, 3, 4 may be at a new leader
        (_send(3, epoch=1), OutOfOrderSequenceNumberError),  # a new epoch not from 0
        (_send(4, producer_id=PRODUCER + 1), UnknownProducerIdError),
    ]
    for request, error in refused:
        assert _code(manager.produce(request)) == error.code  # known: as before
    known[0] = False
    for request, _ in refused:
        assert _code(manager.produce(request)) == NotLeaderOrFollowerError.code
    log = manager.partitions[TopicPartition("t", 0)].log
    assert log.log_end_offset == 2  # nothing appended either way
    assert _code(manager.produce(_send(2))) == 0  # the next in order still goes in
    known[0] = True
    assert _code(manager.produce(_send(0, epoch=1))) == 0  # bumped
    fenced = _send(3)
    assert _code(manager.produce(fenced)) == InvalidProducerEpochError.code
    known[0] = False
    assert _code(manager.produce(fenced)) == NotLeaderOrFollowerError.code
