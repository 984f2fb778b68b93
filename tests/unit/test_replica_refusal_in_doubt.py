"""A leader that cannot tell whether it still leads (its ZooKeeper session in doubt)
does not refuse a producer's batch from its producers' state alone: a new leader may
have taken the producer's later batches, so "out of order" here would end a producer
that did nothing wrong. It answers NOT_ENOUGH_REPLICAS (retriable, and to the producer
"refused before the append") instead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.deferred import Deferred
from broker.log import LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from client.types import TopicPartition as ClientPartition
from protocol.apis import ApiKey, ProducePartition, ProduceRequest, ProduceTopic
from protocol.errors import (
    InvalidProducerEpochError,
    NotEnoughReplicasError,
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
)
from protocol.records.codec import encode_batch
from tests.unit.test_producer_sender import ScriptedCluster, started
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
async def leading(tmp_path: Path) -> AsyncIterator[tuple[ReplicaManager, list[bool]]]:
    """Broker 1 leads t-0 alone; ``known[0]``: whether its session is surely alive."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    known = [True]
    manager = ReplicaManager(1, logs, MetadataCache(), load, state_known=lambda: known[0])
    await manager.become_leader_or_follower([_leader_state(isr=[1])])
    try:
        yield manager, known
    finally:
        await manager.shutdown()
        logs.shutdown()


@pytest.fixture
def leader(leading: tuple[ReplicaManager, list[bool]]) -> tuple[ReplicaManager, list[bool]]:
    """As ``leading``, with the producer's batches 0 and 1 in the log."""
    manager, _ = leading
    assert _code(manager.produce(_send(0))) == 0
    assert _code(manager.produce(_send(1))) == 0
    return leading


async def test_in_doubt_a_producer_state_refusal_is_a_retriable_not_enough_replicas(
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
        assert _code(manager.produce(request)) == NotEnoughReplicasError.code
    log = manager.partitions[TopicPartition("t", 0)].log
    assert log.log_end_offset == 2  # nothing appended either way
    assert _code(manager.produce(_send(2))) == 0  # the next in order still goes in
    known[0] = True
    assert _code(manager.produce(_send(0, epoch=1))) == 0  # bumped
    fenced = _send(3)
    assert _code(manager.produce(fenced)) == InvalidProducerEpochError.code
    known[0] = False
    assert _code(manager.produce(fenced)) == NotEnoughReplicasError.code


@pytest.mark.parametrize("in_doubt", [False, True])
async def test_the_producer_sends_a_batch_refused_in_doubt_again_and_it_goes_in(
    leading: tuple[ReplicaManager, list[bool]], in_doubt: bool
) -> None:
    """From a review: answered NOT_LEADER_OR_FOLLOWER, the producer took the batch for
    maybe written, and failed it on the real refusal once the doubt ended ("may or may
    not have been written"), where without a doubt it is sent again under a new epoch
    (KIP-360) and written. A leader that forgot its producer (its segments deleted by
    retention) answers UNKNOWN_PRODUCER_ID for the next batch: in doubt or not, it goes in."""
    manager, known = leading
    cluster = ScriptedCluster({ClientPartition("t", 0): 1})
    answered: list[int] = []

    async def send(node: int, api_key: ApiKey, request: ProduceRequest, **_: Any) -> Any:
        cluster.requests.append((node, request, True))
        response: Any = manager.produce(request)
        if isinstance(response, Deferred) or asyncio.iscoroutine(response):
            response = await response
        answered.append(response.topics[0].partitions[0].error_code)
        known[0] = True  # the doubt (a stall's hold, a slow ZooKeeper) ends after one answer
        return response

    cluster.send = send  # type: ignore[method-assign]
    producer = await started(cluster)
    try:
        await asyncio.wait_for(producer.send_and_wait("t", b"a"), 5)
        log = manager.partitions[TopicPartition("t", 0)].log
        log.producers.producers.clear()  # its state went with deleted segments (Kafka's case)
        known[0] = not in_doubt
        meta = await asyncio.wait_for(producer.send_and_wait("t", b"b"), 5)
        assert meta.offset == 1
        assert log.log_end_offset == 2
        assert (NotEnoughReplicasError.code in answered) == in_doubt  # the path was taken
        assert UnknownProducerIdError.code in answered  # then the leader's own answer
    finally:
        await producer.stop()
