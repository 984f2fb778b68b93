"""acks=all on the leader: the produce's answer is a Deferred completed inside the call
that moves the high watermark past it (the last in-sync follower's fetch), with no task
or loop pass in between; and every other outcome a producer can get: the timeout
(REQUEST_TIMED_OUT, ambiguous), lost leadership, an ISR shrunk below min.insync.replicas,
and a producer that went away (nothing left waiting)."""

import asyncio
import dataclasses

from broker.deferred import Deferred
from broker.log.manager import TopicPartition
from broker.replica.manager import ReplicaManager
from protocol.apis import ProducePartitionResponse, ProduceResponse
from protocol.errors import (
    NotEnoughReplicasAfterAppendError,
    NotLeaderOrFollowerError,
    RequestTimedOutError,
)
from tests.unit.conftest import MakeLeader
from tests.unit.test_replica_fetch_wake import _fetch, _produce

TP = TopicPartition("t", 0)


async def _leading(make_leader: MakeLeader, min_insync_replicas: int = 1) -> ReplicaManager:
    """Broker 1 leading t-0 with ISR 1, 2, 3, both followers at offset 0."""
    replicas = await make_leader([1, 2, 3], True, min_insync_replicas)
    for follower in (2, 3):
        replicas.fetch(_fetch(0, replica_id=follower, max_wait_ms=0))
    return replicas


def _waiting(replicas: ReplicaManager, timeout_ms: int = 30_000) -> Deferred[ProduceResponse]:
    request = dataclasses.replace(_produce(-1), timeout_ms=timeout_ms)
    waiting = replicas.produce(request)
    assert isinstance(waiting, Deferred) and not waiting.done
    return waiting


def _purgatory_size(replicas: ReplicaManager) -> int:
    """The headwater_produce_purgatory_size gauge, as a scrape reads it."""
    (size,) = [v for name, _, v in replicas.metrics() if name.endswith("produce_purgatory_size")]
    return int(size)


def _answer(waiting: Deferred[ProduceResponse]) -> ProducePartitionResponse:
    assert waiting.done
    return waiting.result().topics[0].partitions[0]


async def test_the_last_followers_fetch_answers_the_produce_in_its_own_call(
    make_leader: MakeLeader,
) -> None:
    replicas = await _leading(make_leader)
    waiting = _waiting(replicas)
    replicas.fetch(_fetch(1, replica_id=2, max_wait_ms=0))
    assert not waiting.done  # follower 3 has not got it yet: the high watermark is 0
    assert _purgatory_size(replicas) == 1
    replicas.fetch(_fetch(1, replica_id=3, max_wait_ms=0))
    answer = _answer(waiting)  # no await in between: done in the fetch's own call
    assert (answer.error_code, answer.base_offset) == (0, 0)
    assert not replicas.partitions[TP]._waiters
    assert _purgatory_size(replicas) == 0


async def test_the_high_watermarks_move_answers_the_consumer_then_the_producer(
    make_leader: MakeLeader,
) -> None:
    """The last follower's fetch lets a record through: the consumer parked at the log end
    gets it first, then the acks=all producer its answer, both inside that fetch's call."""
    replicas = await _leading(make_leader)
    order: list[str] = []
    consumer = replicas.fetch(_fetch(0))
    assert isinstance(consumer, Deferred)
    consumer.add_listener(lambda _: order.append("consumer"))
    waiting = _waiting(replicas)
    waiting.add_listener(lambda _: order.append("producer"))
    replicas.fetch(_fetch(1, replica_id=2, max_wait_ms=0))
    assert order == []
    replicas.fetch(_fetch(1, replica_id=3, max_wait_ms=0))
    assert order == ["consumer", "producer"]
    assert _answer(waiting).error_code == 0
    assert consumer.result().topics[0].partitions[0].high_watermark == 1


async def test_a_timeout_answers_request_timed_out_and_forgets_the_wait(
    make_leader: MakeLeader,
) -> None:
    replicas = await _leading(make_leader)
    waiting = _waiting(replicas, timeout_ms=20)
    await asyncio.wait_for(waiting, 5)  # answered by its own timer
    answer = _answer(waiting)
    assert answer.error_code == RequestTimedOutError.code
    assert _purgatory_size(replicas) == 0
    assert answer.error_message is not None and "within 20 ms" in answer.error_message
    assert not replicas.partitions[TP]._waiters
    for follower in (2, 3):  # replication completing later changes nothing
        replicas.fetch(_fetch(1, replica_id=follower, max_wait_ms=0))
    assert _answer(waiting).error_code == RequestTimedOutError.code


async def test_losing_leadership_answers_not_leader(make_leader: MakeLeader) -> None:
    replicas = await _leading(make_leader)
    waiting = _waiting(replicas)
    replicas.fence_leaders("the ZooKeeper session expired")
    answer = _answer(waiting)
    assert answer.error_code == NotLeaderOrFollowerError.code


async def test_an_isr_below_min_insync_when_replicated_is_not_success(
    make_leader: MakeLeader,
) -> None:
    replicas = await _leading(make_leader, min_insync_replicas=3)
    waiting = _waiting(replicas)
    partition = replicas.partitions[TP]
    partition.isr = [1, 2]  # follower 3 dropped out (as an ISR shrink writes it)
    replicas.fetch(_fetch(1, replica_id=2, max_wait_ms=0))
    answer = _answer(waiting)
    assert answer.error_code == NotEnoughReplicasAfterAppendError.code  # written, not acked


async def test_a_producer_gone_leaves_nothing_waiting(make_leader: MakeLeader) -> None:
    replicas = await _leading(make_leader)
    waiting = _waiting(replicas, timeout_ms=20)
    delayed = waiting._on_cancel.__self__  # type: ignore[union-attr]
    timer = delayed._timer
    waiting.cancel()  # the server does this when the producer's connection closes
    assert not replicas.partitions[TP]._waiters
    assert timer is not None and timer.cancelled()  # nothing fires into a dead answer
    assert delayed._timer is None and waiting._on_cancel is None  # and no cycle is left
    assert _purgatory_size(replicas) == 0
    assert waiting.cancelled


async def test_a_failing_waiter_does_not_stop_the_others(make_leader: MakeLeader) -> None:
    replicas = await _leading(make_leader)
    partition = replicas.partitions[TP]

    def broken(error: object) -> None:
        raise RuntimeError("a bug in one waiter")

    partition.wait_for_high_watermark(1, broken)  # called first of the three
    first, second = _waiting(replicas), _waiting(replicas)
    for follower in (2, 3):
        replicas.fetch(_fetch(2, replica_id=follower, max_wait_ms=0))
    assert _answer(first).error_code == 0 and _answer(second).error_code == 0
    assert not partition._waiters


async def test_the_coordinators_own_appends_wait_the_same_way(make_leader: MakeLeader) -> None:
    replicas = await _leading(make_leader)
    appending = asyncio.ensure_future(
        replicas.append_records(
            "t", 0, _produce().topics[0].partitions[0].records, timeout_ms=5_000
        )
    )
    await asyncio.sleep(0)
    assert not appending.done()
    for follower in (2, 3):
        replicas.fetch(_fetch(1, replica_id=follower, max_wait_ms=0))
    result = await asyncio.wait_for(appending, 1)
    assert (result.error_code, result.base_offset) == (0, 0)
