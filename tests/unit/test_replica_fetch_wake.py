"""Parked fetches are completed by the event that satisfies them, inside that event's call:
an acks=1 append answers a consumer waiting at the log end before the produce returns, with
no loop iteration or max-wait timer in between (DESIGN.md "The hot path": nothing polls).
Also the leader's own acks=1/0 produce is answered without awaiting anything."""

import asyncio
import dataclasses
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.deferred import Deferred
from broker.log import LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica.manager import _READ_ALL_BELOW, WOKEN_FIRST, ReplicaManager
from protocol.apis import (
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    LeaderAndIsrPartitionState,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
)
from protocol.errors import NotLeaderOrFollowerError
from protocol.records import encode_batch


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[ReplicaManager]:
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    state = _leader_state(isr=[1])
    await manager.become_leader_or_follower([state])
    yield manager
    await manager.shutdown()
    logs.shutdown()


def _leader_state(
    *, isr: list[int], replicas: list[int] | None = None
) -> LeaderAndIsrPartitionState:
    """Broker 1 leads t-0 (replicas: the ISR unless given)."""
    return LeaderAndIsrPartitionState(
        topic_name="t",
        partition_index=0,
        controller_epoch=1,
        leader=1,
        leader_epoch=1,
        isr=isr,
        replicas=isr if replicas is None else replicas,
    )


async def _leading(tmp_path: Path, count: int) -> tuple[LogManager, ReplicaManager]:
    """Broker 1 leading t-0 .. t-(count-1), RF=1."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    await manager.become_leader_or_follower(
        [dataclasses.replace(_leader_state(isr=[1]), partition_index=p) for p in range(count)]
    )
    return logs, manager


def _from_the_start(count: int) -> list[FetchPartition]:
    return [
        FetchPartition(partition=p, fetch_offset=0, partition_max_bytes=1 << 20)
        for p in range(count)
    ]


def _produce(acks: int = 1) -> ProduceRequest:
    batch = encode_batch([(None, b"v", None, 1000)])
    partition = ProducePartition(index=0, records=batch)
    return ProduceRequest(
        acks=acks, timeout_ms=1000, topics=[ProduceTopic(name="t", partitions=[partition])]
    )


def _fetch(offset: int, *, max_wait_ms: int = 30_000, replica_id: int = -1) -> FetchRequest:
    partition = FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20)
    return FetchRequest(
        replica_id=replica_id,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        topics=[FetchTopic(topic="t", partitions=[partition])],
    )


def _records_size(response: FetchResponse) -> int:
    records = response.topics[0].partitions[0].records
    return 0 if records is None else len(records)


async def test_an_acks_1_produce_is_answered_without_awaiting(replicas: ReplicaManager) -> None:
    response = replicas.produce(_produce())
    assert isinstance(response, ProduceResponse)  # not a coroutine: no task, no iteration
    assert response.topics[0].partitions[0].base_offset == 0


async def test_an_append_completes_a_fetch_waiting_at_the_log_end_before_its_produce_returns(
    replicas: ReplicaManager,
) -> None:
    parked = replicas.fetch(_fetch(0))
    assert isinstance(parked, Deferred) and not parked.done
    assert replicas.parked_fetches == 1
    response = replicas.produce(_produce())
    # answered inside the produce's call, before the producer's own answer is written: no
    # loop pass, long before the 30 s max wait
    assert isinstance(response, ProduceResponse)
    assert parked.done
    response = parked.result()
    assert response.topics[0].partitions[0].high_watermark == 1  # RF=1: no timer for the HW
    assert _records_size(response) > 0
    assert replicas.parked_fetches == 0


async def test_a_fetch_behind_the_high_watermark_is_not_woken_early(tmp_path: Path) -> None:
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    state = _leader_state(isr=[1, 2])
    await manager.become_leader_or_follower([state])
    parked = manager.fetch(_fetch(0))
    assert isinstance(parked, Deferred)
    manager.produce(_produce())
    await asyncio.sleep(0)
    assert not parked.done  # appended, but follower 2 does not have it: not committed
    follower = manager.fetch(_fetch(1, max_wait_ms=0, replica_id=2))  # 2 now has offset 0
    assert isinstance(follower, FetchResponse)
    # the consumer is answered inside the follower's fetch that moved the high watermark
    assert parked.done and _records_size(parked.result()) > 0
    await manager.shutdown()
    logs.shutdown()


@pytest.mark.parametrize("session", [False, True], ids=["sessionless", "session"])
async def test_only_the_fetches_a_change_can_answer_are_woken(
    tmp_path: Path, session: bool
) -> None:
    """RF=3, acks=all: an append that does not move the high watermark wakes the
    followers, not a consumer (nothing it may read yet); a high watermark that moves alone
    wakes the consumers, not a follower (no record for it). Each woken in vain read and
    parked again: two of the five reads each produce caused. The follower still hears of
    the high watermark, in its next answer."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    await manager.become_leader_or_follower([_leader_state(isr=[1, 2, 3])])
    tried: list[str] = []
    real_try = manager._try_complete

    def spy(delayed: Any, expired: bool = False) -> None:
        tried.append(f"replica {delayed.request.replica_id}")
        real_try(delayed, expired)

    manager._try_complete = spy  # type: ignore[method-assign]

    def fetch(offset: int, replica_id: int) -> Any:
        request = _fetch(offset, replica_id=replica_id)
        if not session:
            return manager.fetch(request)
        first = manager.fetch(dataclasses.replace(request, max_wait_ms=0, session_epoch=0))
        assert isinstance(first, FetchResponse) and first.session_id
        return manager.fetch(
            dataclasses.replace(request, session_id=first.session_id, session_epoch=1, topics=[])
        )

    consumer, two, three = fetch(0, -1), fetch(0, 2), fetch(0, 3)
    assert all(isinstance(p, Deferred) and not p.done for p in (consumer, two, three))
    produced = manager.produce(_produce(acks=-1))
    assert isinstance(produced, Deferred) and not produced.done
    await asyncio.sleep(0)
    assert sorted(tried) == ["replica 2", "replica 3"]  # not the consumer's
    assert two.done and three.done and not consumer.done
    tried.clear()

    two = fetch(1, 2)  # 2 has offset 0; 3 not yet: the high watermark stays
    assert isinstance(two, Deferred) and not two.done
    three = fetch(1, 3)  # now it moves
    assert isinstance(three, Deferred)
    await asyncio.sleep(0)
    assert tried == ["replica -1"]  # the consumer's, not follower 2's parked fetch
    assert consumer.done and _records_size(consumer.result()) > 0
    assert produced.done and not two.done
    manager.produce(_produce(acks=-1))
    await asyncio.sleep(0)
    assert two.done
    answer = two.result().topics[0].partitions[0]
    assert answer.high_watermark == 1 and len(answer.records) > 0
    await manager.shutdown()
    logs.shutdown()


class _Isr:
    """An ISR updater that writes at once (no ZooKeeper)."""

    def __init__(self) -> None:
        self.written: list[list[int]] = []

    async def write(self, partition: Any, isr: list[int]) -> bool:
        await asyncio.sleep(0)
        partition.isr = list(isr)
        self.written.append(isr)
        return True

    async def close(self) -> None:
        return None


async def _rf3(
    tmp_path: Path, isr: list[int], updater: Any = None
) -> tuple[LogManager, ReplicaManager]:
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load, updater, replica_lag_time_max_ms=50)
    await manager.become_leader_or_follower([_leader_state(isr=isr, replicas=[1, 2, 3])])
    return logs, manager


async def test_an_append_that_moves_the_high_watermark_wakes_both(tmp_path: Path) -> None:
    """From a review: acks=1 with the leader alone in the ISR moves the high watermark in
    the append itself; the consumer is answered, and so is a follower catching up."""
    logs, manager = await _rf3(tmp_path, [1])
    consumer, two = manager.fetch(_fetch(0)), manager.fetch(_fetch(0, replica_id=2))
    manager.produce(_produce(acks=1))
    await asyncio.sleep(0)
    assert consumer.done and _records_size(consumer.result()) > 0
    assert two.done and _records_size(two.result()) > 0
    await manager.shutdown()
    logs.shutdown()


async def test_an_isr_shrink_that_moves_the_high_watermark_wakes_the_consumer(
    tmp_path: Path,
) -> None:
    """From a review: the high watermark a smaller ISR allows wakes the consumers."""
    updater = _Isr()
    logs, manager = await _rf3(tmp_path, [1, 2, 3], updater)
    manager.fetch(_fetch(0, replica_id=2, max_wait_ms=0))
    manager.fetch(_fetch(0, replica_id=3, max_wait_ms=0))
    manager.produce(_produce(acks=1))
    consumer = manager.fetch(_fetch(0))
    assert isinstance(consumer, Deferred) and not consumer.done
    assert not isinstance(manager.fetch(_fetch(1, replica_id=2, max_wait_ms=0)), Deferred)
    await asyncio.sleep(0.2)  # 3 lags past replica.lag.time.max.ms
    manager.fetch(_fetch(1, replica_id=2, max_wait_ms=0))  # 2 stays caught up
    manager.shrink_isrs()
    answer = await asyncio.wait_for(consumer, 5)  # answered once the smaller ISR is written
    assert updater.written and updater.written[-1] == [1, 2]
    assert _records_size(answer) > 0
    await manager.shutdown()
    logs.shutdown()


async def test_min_bytes_over_many_partitions_counts_appends_once_committed(
    tmp_path: Path,
) -> None:
    """From a review: RF=2, 20 partitions, a consumer waiting for three batches' bytes in
    all; appends below an unmoved high watermark wake it no more, and each move counts."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    count = 20
    await manager.become_leader_or_follower(
        [dataclasses.replace(_leader_state(isr=[1, 2]), partition_index=p) for p in range(count)]
    )
    one = len(_produce().topics[0].partitions[0].records)

    def produce(p: int) -> None:
        request = _produce(acks=1)
        request.topics[0].partitions[0].index = p
        manager.produce(request)

    def topics(offsets: dict[int, int]) -> list[FetchTopic]:
        wanted = [
            FetchPartition(partition=p, fetch_offset=offsets.get(p, 0), partition_max_bytes=1 << 20)
            for p in range(count)
        ]
        return [FetchTopic(topic="t", partitions=wanted)]

    def follower(offsets: dict[int, int]) -> None:
        manager.fetch(
            FetchRequest(replica_id=2, max_wait_ms=0, min_bytes=1, topics=topics(offsets))
        )

    consumer = manager.fetch(
        FetchRequest(replica_id=-1, max_wait_ms=30_000, min_bytes=3 * one - 1, topics=topics({}))
    )
    assert isinstance(consumer, Deferred)
    for p in (0, 1, 2):
        produce(p)
    await asyncio.sleep(0)
    assert not consumer.done
    follower({0: 1})
    await asyncio.sleep(0)
    assert not consumer.done
    follower({0: 1, 1: 1})
    await asyncio.sleep(0)
    assert not consumer.done
    follower({0: 1, 1: 1, 2: 1})
    await asyncio.sleep(0)
    assert consumer.done
    await manager.shutdown()
    logs.shutdown()


async def test_max_wait_ends_a_fetch_with_nothing(replicas: ReplicaManager) -> None:
    parked = replicas.fetch(_fetch(0, max_wait_ms=20))
    assert isinstance(parked, Deferred)
    response = await asyncio.wait_for(parked, 5)
    assert _records_size(response) == 0
    assert replicas.parked_fetches == 0


async def test_a_cancelled_fetch_is_unparked(replicas: ReplicaManager) -> None:
    parked = replicas.fetch(_fetch(0))
    assert isinstance(parked, Deferred)
    parked.cancel()  # its connection closed
    assert replicas.parked_fetches == 0
    replicas.produce(_produce())
    assert parked.cancelled


async def test_losing_leadership_answers_a_parked_fetch(replicas: ReplicaManager) -> None:
    parked = replicas.fetch(_fetch(0))
    assert isinstance(parked, Deferred)
    replicas.fence_leaders("test")
    await asyncio.sleep(0)
    response = parked.result()
    assert response.topics[0].partitions[0].error_code == NotLeaderOrFollowerError.code


def test_deferred_listeners_run_synchronously_once() -> None:
    seen: list[int] = []
    deferred: Deferred[int] = Deferred()
    deferred.add_listener(lambda d: seen.append(d.result()))
    deferred.resolve(7)
    deferred.resolve(8)
    deferred.fail(RuntimeError("late"))
    assert seen == [7]
    deferred.add_listener(lambda d: seen.append(d.result() + 1))  # already done: runs now
    assert seen == [7, 8]


async def test_one_produce_to_many_partitions_wakes_a_parked_fetch_once_with_all_of_them(
    tmp_path: Path,
) -> None:
    """Not once per partition appended (P x P reads, and an answer with one partition)."""
    count = 20
    logs, manager = await _leading(tmp_path, count)
    wanted = _from_the_start(count)
    parked = manager.fetch(
        FetchRequest(
            replica_id=-1,
            max_wait_ms=30_000,
            min_bytes=1,
            topics=[FetchTopic(topic="t", partitions=wanted)],
        )
    )
    assert isinstance(parked, Deferred)
    reads = 0
    real_read = manager._read

    def counted(*args: object) -> object:
        nonlocal reads
        reads += 1
        return real_read(*args)  # type: ignore[arg-type]

    manager._read = counted  # type: ignore[method-assign]
    batch = encode_batch([(None, b"v", None, 1000)])
    manager.produce(
        ProduceRequest(
            acks=1,
            timeout_ms=1000,
            topics=[
                ProduceTopic(
                    name="t",
                    partitions=[ProducePartition(index=p, records=batch) for p in range(count)],
                )
            ],
        )
    )
    await asyncio.sleep(0)
    assert parked.done and reads == 1
    answered = parked.result().topics[0].partitions
    assert sum(1 for p in answered if p.records is not None and len(p.records)) == count
    await manager.shutdown()
    logs.shutdown()


async def test_a_fetch_claiming_to_be_a_replica_it_is_not_reads_nothing(
    replicas: ReplicaManager,
) -> None:
    """Only a replica reads past the high watermark; anyone else gets NOT_LEADER_OR_FOLLOWER."""
    answer = replicas.fetch(_fetch(0, max_wait_ms=0, replica_id=7))
    assert isinstance(answer, FetchResponse)
    (partition,) = answer.topics[0].partitions
    assert partition.error_code == NotLeaderOrFollowerError.code and partition.records is None


async def test_a_produce_answers_followers_then_a_few_consumers_before_its_own_answer(
    tmp_path: Path,
) -> None:
    """Up to WOKEN_FIRST woken fetches go before the producer's answer, followers first
    (acks=all waits on them); a larger fan-out is answered in the next loop pass, so the
    producer does not wait on every consumer tailing the partition."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    await manager.become_leader_or_follower([_leader_state(isr=[1], replicas=[1, 2])])
    consumers = [manager.fetch(_fetch(0)) for _ in range(WOKEN_FIRST + 4)]
    follower = manager.fetch(_fetch(0, replica_id=2))  # parked last, answered first
    parked = [*consumers, follower]
    assert all(isinstance(p, Deferred) and not p.done for p in parked)
    assert isinstance(manager.produce(_produce()), ProduceResponse)
    assert follower.done
    assert sum(1 for c in consumers if c.done) == WOKEN_FIRST - 1
    await asyncio.sleep(0)
    assert all(p.done and _records_size(p.result()) > 0 for p in parked)
    assert manager.parked_fetches == 0
    await manager.shutdown()
    logs.shutdown()


async def test_a_fetch_that_fails_to_complete_does_not_fail_the_produce_that_woke_it(
    replicas: ReplicaManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records are in the log by then: an error answering a consumer must not turn
    the producer's answer into an error (it would retry, and duplicate them)."""
    parked = replicas.fetch(_fetch(0))
    assert isinstance(parked, Deferred)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug answering the fetch")

    monkeypatch.setattr(replicas, "_try_complete", broken)
    response = replicas.produce(_produce())
    assert isinstance(response, ProduceResponse)
    assert response.topics[0].partitions[0].error_code == 0


@pytest.mark.parametrize("session", [False, True], ids=["sessionless", "session"])
async def test_a_fetch_waiting_for_min_bytes_looks_again_only_at_what_woke_it(
    tmp_path: Path, session: bool
) -> None:
    """A consumer of many partitions waiting for ``fetch.min.bytes`` while single-batch
    produces trickle in: each wake looks at the one partition appended, not at all of
    them (that was partitions x produces reads), and the answer, once they add up, has
    every record."""
    count = 200
    logs, manager = await _leading(tmp_path, count)
    batch = encode_batch([(None, b"v" * 100, None, 1000)])
    produced = 40
    wanted = _from_the_start(count)
    request = FetchRequest(
        replica_id=-1,
        max_wait_ms=30_000,
        min_bytes=produced * len(batch),
        topics=[FetchTopic(topic="t", partitions=wanted)],
    )
    if session:  # a session with every partition, then its incremental fetch parks
        first = manager.fetch(dataclasses.replace(request, max_wait_ms=0, session_epoch=0))
        assert isinstance(first, FetchResponse) and first.session_id
        request = dataclasses.replace(
            request, session_id=first.session_id, session_epoch=1, topics=[]
        )
    parked = manager.fetch(request)
    assert isinstance(parked, Deferred)

    looked = 0
    for p in range(count):
        log = manager.partitions[TopicPartition("t", p)].log
        real = log.read

        def counted(*args: object, _real: Any = real, **kwargs: object) -> object:
            nonlocal looked
            looked += 1
            return _real(*args, **kwargs)

        log.read = counted  # type: ignore[method-assign]

    for i in range(produced):
        assert not parked.done, f"answered after {i} of {produced} batches"
        p = 5 * i  # a different partition each time
        manager.produce(
            ProduceRequest(
                acks=1,
                timeout_ms=1000,
                topics=[
                    ProduceTopic(name="t", partitions=[ProducePartition(index=p, records=batch)])
                ],
            )
        )
        await asyncio.sleep(0)
    assert parked.done
    # one look per produce, then the read that answers; each wake read every partition
    # it had found (40 x 200 without a session, 1 + 2 + ... + 40 in one)
    assert looked <= 2 * produced + (count if not session else _READ_ALL_BELOW**2)
    answered = {
        p.partition_index: len(p.records)
        for t in parked.result().topics
        for p in t.partitions
        if p.records is not None and len(p.records)
    }
    assert answered == {5 * i: len(batch) for i in range(produced)}
    await manager.shutdown()
    logs.shutdown()


async def test_a_fetch_waiting_for_min_bytes_is_answered_at_once_by_an_error(
    tmp_path: Path,
) -> None:
    """A woken partition this broker no longer leads answers the fetch with its error
    (the consumer must go elsewhere), however few bytes the others have."""
    count = 20
    logs, manager = await _leading(tmp_path, count)
    wanted = _from_the_start(count)
    parked = manager.fetch(
        FetchRequest(
            replica_id=-1,
            max_wait_ms=30_000,
            min_bytes=1 << 20,
            topics=[FetchTopic(topic="t", partitions=wanted)],
        )
    )
    assert isinstance(parked, Deferred)
    manager.produce(_produce())  # t-0: a few bytes, not enough
    await asyncio.sleep(0)
    assert not parked.done
    follower = dataclasses.replace(_leader_state(isr=[1, 2]), partition_index=3, leader=2)
    follower = dataclasses.replace(follower, leader_epoch=2, replicas=[1, 2])
    await manager.become_leader_or_follower([follower])
    await asyncio.sleep(0)
    assert parked.done
    errors = {p.partition_index: p.error_code for t in parked.result().topics for p in t.partitions}
    assert errors[3] == NotLeaderOrFollowerError.code and errors[0] == 0
    await manager.shutdown()
    logs.shutdown()


async def test_answered_and_abandoned_waits_leave_no_cycle_for_the_collector(
    tmp_path: Path,
) -> None:
    """A parked fetch and an acks=all produce are freed by reference counting once done:
    a cycle left behind (a Deferred holding its operation's callback) would wait for a
    full collection, holding a consumer's whole fetch session meanwhile."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    await manager.become_leader_or_follower([_leader_state(isr=[1, 2])])
    gc.collect()
    gc.disable()
    try:
        answered = manager.fetch(_fetch(0))
        abandoned = manager.fetch(_fetch(0))
        expired = manager.fetch(_fetch(0, max_wait_ms=1))
        timed_out = manager.produce(dataclasses.replace(_produce(acks=-1), timeout_ms=1))
        assert isinstance(timed_out, Deferred)
        await asyncio.wait_for(timed_out, 5)  # follower 2 never asked: REQUEST_TIMED_OUT
        produced = manager.produce(_produce(acks=-1))
        assert all(isinstance(d, Deferred) for d in (answered, abandoned, expired, produced))
        abandoned.cancel()  # as the consumer's connection closing does
        await asyncio.wait_for(expired, 5)
        manager.fetch(_fetch(2, max_wait_ms=0, replica_id=2))  # the high watermark moves
        assert answered.done and produced.done
        del answered, abandoned, expired, produced, timed_out
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not left & {"_DelayedFetch", "_DelayedProduce", "Deferred", "_Wait", "FetchContext"}
    await manager.shutdown()
    logs.shutdown()
