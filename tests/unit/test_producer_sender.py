"""The producer's sender against a scripted cluster (no socket): one Produce per broker,
retries of retriable errors with a metadata refresh, typed failures, acks=0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from broker.log.producer_state import ProducerBatch as BrokerProducerBatch
from broker.log.producer_state import ProducerState
from client import ConfigurationError, Producer, RecordMetadata
from client.accumulator import RecordFuture
from client.cluster import ClusterMetadata, TopicMetadata
from client.types import TopicPartition
from protocol.apis import (
    ApiKey,
    InitProducerIdResponse,
    MetadataBroker,
    MetadataPartition,
    MetadataResponse,
    MetadataTopic,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResponse,
)
from protocol.errors import (
    ApiError,
    InvalidProducerEpochError,
    InvalidRequiredAcksError,
    InvalidTxnStateError,
    NetworkError,
    NotLeaderOrFollowerError,
    OutOfOrderSequenceNumberError,
    RequestTimedOutError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)
from protocol.records import decode_batches

pytestmark = pytest.mark.timeout(20)

Answer = Callable[[ProduceRequest], Any]


class ScriptedCluster:
    """Stands in for client.cluster.Cluster: leaders from a dict, answers from a script.

    With ``connected`` (the default) the producer finds each broker connected and writes
    through :class:`ScriptedConnection`; without, every Produce goes by ``send`` (which
    connects first in the real Cluster)."""

    closed = False

    connected = True
    writable = True  # the connection's transport is below its high-water mark

    def __init__(self, leaders: dict[TopicPartition, int]) -> None:
        topics: dict[str, list[MetadataPartition]] = {}
        for tp, leader in sorted(leaders.items()):
            topics.setdefault(tp.topic, []).append(
                MetadataPartition(partition_index=tp.partition, leader_id=leader)
            )
        response = MetadataResponse(
            brokers=[MetadataBroker(node_id=n, host="h", port=n) for n in (1, 2)],
            topics=[MetadataTopic(name=t, partitions=ps) for t, ps in topics.items()],
        )
        self.metadata = ClusterMetadata().merged(response, None)
        self.on_update: list[Callable[[ClusterMetadata], None]] = []
        self.retry_backoff_ms = 10
        self.requests: list[tuple[int, ProduceRequest, bool]] = []
        self.answers: list[Answer] = []
        self.refreshes = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.release.set()
        self.producer_ids = 0
        self.answering: set[asyncio.Task[None]] = set()
        self.connect_errors: list[ApiError] = []  # connect() raises these, one a call

    async def start(self) -> None:
        return None

    async def send_any(
        self, api_key: ApiKey, request: object, **_: object
    ) -> InitProducerIdResponse:
        assert api_key == ApiKey.INIT_PRODUCER_ID
        self.producer_ids += 1
        return InitProducerIdResponse(producer_id=1000 + self.producer_ids, producer_epoch=0)

    async def close(self) -> None:
        """As the real Cluster: requests waiting for an answer fail with the connection."""
        for task in list(self.answering):
            task.cancel()
        await asyncio.gather(*self.answering, return_exceptions=True)

    def leader_for(self, tp: TopicPartition) -> int | None:
        return self.metadata.leader_for(tp)

    def connection_now(self, node: int) -> ScriptedConnection | None:
        return ScriptedConnection(self, node) if self.connected else None

    async def connect(self, node: int) -> None:
        if self.connect_errors:
            raise self.connect_errors.pop(0)

    def request_refresh(self) -> None:
        self.refreshes += 1

    async def refresh(self) -> ClusterMetadata:
        self.refreshes += 1
        return self.metadata

    def add_topics(self, topics: object) -> bool:
        return False

    async def wait_for_topic(self, topic: str, timeout_ms: float) -> TopicMetadata:
        return self.metadata.topics[topic]

    async def send(
        self, node: int, api_key: ApiKey, request: ProduceRequest, *, expect_response: bool
    ) -> Any:
        assert api_key == ApiKey.PRODUCE
        self.requests.append((node, request, expect_response))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            answer = self.answers.pop(0) if self.answers else ok
            return answer(request)
        finally:
            self.in_flight -= 1


class ScriptedConnection:
    """BrokerConnection.send_now over the script: written at once, answered (or failed)
    through ``on_answer`` in a later loop pass, as a real connection's read callback does."""

    def __init__(self, cluster: ScriptedCluster, node: int) -> None:
        self.cluster = cluster
        self.node = node
        self.writable = cluster.writable

    def send_now(
        self,
        api_key: ApiKey,
        request: ProduceRequest,
        on_answer: Callable[[Any, BaseException | None], None] | None,
    ) -> None:
        if on_answer is None:
            self.cluster.requests.append((self.node, request, False))
            return

        async def answer() -> None:
            try:
                response = await self.cluster.send(
                    self.node, api_key, request, expect_response=True
                )
            except asyncio.CancelledError:  # the cluster closed
                on_answer(None, NetworkError("the connection was closed"))
            except Exception as exc:
                on_answer(None, exc)
            else:
                on_answer(response, None)

        task = asyncio.get_running_loop().create_task(answer())
        self.cluster.answering.add(task)
        task.add_done_callback(self.cluster.answering.discard)


def ok(request: ProduceRequest, base_offset: int = 0) -> ProduceResponse:
    return answer_all(request, 0, base_offset)


def answer_all(request: ProduceRequest, error_code: int, base_offset: int = 0) -> ProduceResponse:
    return ProduceResponse(
        topics=[
            ProduceTopicResponse(
                name=t.name,
                partitions=[
                    ProducePartitionResponse(
                        index=p.index, error_code=error_code, base_offset=base_offset
                    )
                    for p in t.partitions
                ],
            )
            for t in request.topics
        ]
    )


def raise_(error: Exception) -> Answer:
    def answer(request: ProduceRequest) -> Any:
        raise error

    return answer


async def started(cluster: ScriptedCluster, **settings: Any) -> Producer:
    producer = Producer(bootstrap_servers="unused:1", retry_backoff_ms=10, **settings)
    producer._cluster = cluster  # type: ignore[assignment]
    await producer.start()
    return producer


def partitions_of(request: ProduceRequest) -> list[tuple[str, int]]:
    return [(t.name, p.index) for t in request.topics for p in t.partitions]


async def test_one_produce_request_per_broker_covering_its_partitions() -> None:
    leaders = {TopicPartition("a", 0): 1, TopicPartition("a", 1): 2, TopicPartition("b", 0): 1}
    cluster = ScriptedCluster(leaders)
    producer = await started(cluster, linger_ms=50)
    futures = [await producer.send(tp.topic, b"v", partition=tp.partition) for tp in leaders]
    await producer.flush()
    assert sorted((node, sorted(partitions_of(r))) for node, r, _ in cluster.requests) == [
        (1, [("a", 0), ("b", 0)]),
        (2, [("a", 1)]),
    ]
    assert all(f.result().offset == 0 for f in futures)
    await producer.stop()


async def test_a_broker_not_yet_connected_gets_its_produce_once_connected() -> None:
    a0, a1 = TopicPartition("a", 0), TopicPartition("a", 1)
    cluster = ScriptedCluster({a0: 1, a1: 2})
    cluster.connected = False
    cluster.connect_errors = [NetworkError("cannot connect")]
    producer = await started(cluster)
    futures = [await producer.send("a", b"v", partition=p) for p in (0, 1)]
    metas = await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert [m.partition for m in metas] == [0, 1]
    assert len(cluster.requests) == 2  # the one that could not connect went once connected
    await producer.stop()


@pytest.mark.parametrize("first_attempt", ["not connected", "answer lost"])
async def test_only_an_attempt_that_left_the_client_puts_a_batch_in_doubt(
    first_attempt: str,
) -> None:
    """The leader refuses the batch's sequence on its second attempt (it has no state for
    the producer). If the first attempt never went out (no connection), no log can hold
    the batch: it goes again under a new epoch. If it went out and its answer was lost, a
    replica may hold it, and sent again it could be written twice: it fails instead."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.connected = False
    refused = [lambda r: answer_all(r, UnknownProducerIdError.code), ok]
    if first_attempt == "not connected":
        cluster.connect_errors = [NetworkError("cannot connect")]
        cluster.answers = refused
    else:
        cluster.answers = [raise_(NetworkError("the answer was lost")), *refused]
    producer = await started(cluster)
    future = await producer.send("a", b"v")
    with contextlib.suppress(UnknownProducerIdError):
        await asyncio.wait_for(future, 5)
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    if first_attempt == "not connected":
        assert future.result().offset == 0
        assert stamps == [(0, 1001, 0, 0), (0, 1001, 1, 0)]  # refused, then a new epoch
    else:
        error = future.exception()
        assert isinstance(error, UnknownProducerIdError)
        assert "may or may not have been written" in str(error)
        assert stamps == [(0, 1001, 0, 0), (0, 1001, 0, 0)]  # never re-sequenced
    await producer.stop()


async def test_a_retriable_error_refreshes_metadata_and_resends_the_same_batch() -> None:
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.answers = [
        lambda r: answer_all(r, NotLeaderOrFollowerError.code),
        raise_(NetworkError("connection reset")),
        lambda r: ok(r, base_offset=70),
    ]
    producer = await started(cluster)
    futures = [await producer.send("a", b"%d" % i) for i in range(3)]
    metas = await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert metas == [RecordMetadata("a", 0, 70 + i, metas[i].timestamp) for i in range(3)]
    payloads = [bytes(r.topics[0].partitions[0].records or b"") for _, r, _ in cluster.requests]
    assert len(payloads) == 3 and len(set(payloads)) == 1  # the very same bytes, resent
    assert [r.value for b in decode_batches(payloads[0]) for r in b] == [b"0", b"1", b"2"]
    assert cluster.refreshes >= 2
    await producer.stop()


async def test_a_non_retriable_error_fails_that_batch_with_the_typed_error() -> None:
    bad, good = TopicPartition("a", 0), TopicPartition("a", 1)
    cluster = ScriptedCluster({bad: 1, good: 1})

    def mixed(request: ProduceRequest) -> ProduceResponse:
        response = ok(request, base_offset=5)
        for p in response.topics[0].partitions:
            if p.index == bad.partition:
                p.error_code = InvalidRequiredAcksError.code
        return response

    cluster.answers = [mixed]
    producer = await started(cluster, linger_ms=20)
    failing = await producer.send("a", b"x", partition=0)
    fine = await producer.send("a", b"y", partition=1)
    await producer.flush()
    with pytest.raises(InvalidRequiredAcksError):
        failing.result()
    assert fine.result().offset == 5
    assert len(cluster.requests) == 1  # not retried
    await producer.stop()


async def test_retries_stop_at_delivery_timeout_with_the_last_error() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.answers = [raise_(RequestTimedOutError("slow"))] * 1000
    producer = await started(cluster, delivery_timeout_ms=300, request_timeout_ms=200)
    future = await producer.send("a", b"v")
    with pytest.raises(RequestTimedOutError):
        await asyncio.wait_for(future, 5)
    assert 2 <= len(cluster.requests) < 100
    await producer.stop()


async def test_retries_zero_means_one_attempt() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.answers = [lambda r: answer_all(r, NotLeaderOrFollowerError.code)]
    producer = await started(cluster, retries=0)
    future = await producer.send("a", b"v")
    with pytest.raises(NotLeaderOrFollowerError):
        await asyncio.wait_for(future, 5)
    assert len(cluster.requests) == 1
    await producer.stop()


async def test_acks_0_expects_no_answer_and_resolves_with_minus_one() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.answers = [lambda r: None]
    producer = await started(cluster, acks=0)
    meta = await asyncio.wait_for(await producer.send("a", b"v"), 5)
    assert meta.offset == -1
    ((_, request, expect_response),) = cluster.requests
    assert (request.acks, expect_response) == (0, False)
    await producer.stop()


async def test_acks_0_waits_for_a_broker_that_is_not_reading() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.writable = False  # the transport is past its high-water mark
    cluster.release.clear()  # send() waits: as the real one does for the transport
    cluster.answers = [lambda r: None]
    producer = await started(cluster, acks=0)
    future = await producer.send("a", b"v")
    await _until(lambda: cluster.in_flight == 1)
    assert not future.done()  # not sent yet: it does not count as written
    cluster.release.set()
    assert (await asyncio.wait_for(future, 5)).offset == -1
    await producer.stop()


async def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for a condition (the sender runs on the loop: yield until it has acted)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "never reached"
        await asyncio.sleep(0.001)


async def test_in_flight_requests_per_broker_are_bounded_and_partitions_never_overlap() -> None:
    cluster = ScriptedCluster({TopicPartition("a", p): 1 for p in range(9)})
    cluster.release.clear()  # hold every answer
    # not idempotent: a partition's batches never overlap (with idempotence they may,
    # see the pipelining tests below)
    producer = await started(cluster, max_in_flight_requests_per_connection=2, acks=1)
    futures = []
    for sent, group in enumerate(((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 4, 8))):
        futures += [await producer.send("a", b"%d" % p, partition=p) for p in group]
        if sent < 2:  # the sender takes each group as its own request
            await _until(lambda n=sent + 1: len(cluster.requests) == n)
    for _ in range(50):  # give the sender every chance to overstep the bound
        await asyncio.sleep(0)
    assert cluster.in_flight == 2  # a third request waits for one of the two
    assert [sorted(partitions_of(r)) for _, r, _ in cluster.requests] == [
        [("a", 0), ("a", 1), ("a", 2)],
        [("a", 3), ("a", 4), ("a", 5)],
    ]
    cluster.release.set()
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert cluster.most_in_flight == 2
    for _, request, _ in cluster.requests:  # at most one batch per partition per request
        assert len(partitions_of(request)) == len(set(partitions_of(request)))
    requests = [partitions_of(r) for _, r, _ in cluster.requests]
    # partition 0's second record went out only after its first batch was answered
    assert [i for i, ps in enumerate(requests) if ("a", 0) in ps] == [0, 2]
    await producer.stop()


async def test_stop_fails_what_can_never_be_sent_when_cancelled() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.release.clear()
    producer = await started(cluster)
    future = await producer.send("a", b"v")
    stopping = asyncio.create_task(producer.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # stop() flushes: it waits for the answer
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert future.done()  # failed, not left hanging
    assert future.exception() is not None


# --- idempotence -------------------------------------------------------------------------


def _producer_fields(request: ProduceRequest) -> list[tuple[int, int, int, int]]:
    """(partition, producer id, epoch, base sequence) of each batch in a request."""
    out = []
    for t in request.topics:
        for p in t.partitions:
            (batch,) = decode_batches(bytes(p.records or b""))
            out.append((p.index, batch.producer_id, batch.producer_epoch, batch.base_sequence))
    return out


async def test_batches_carry_the_producer_id_and_each_partitions_sequence() -> None:
    a0, a1 = TopicPartition("a", 0), TopicPartition("a", 1)
    cluster = ScriptedCluster({a0: 1, a1: 1})
    cluster.answers = [ok, raise_(NetworkError("the answer was lost")), ok, ok, ok]
    producer = await started(cluster, batch_size=100)
    assert producer.enable_idempotence and producer.acks == -1  # Kafka 3's defaults
    for _ in range(3):
        await producer.send_and_wait("a", b"x" * 30, partition=0)  # one batch each
    await producer.send_and_wait("a", b"y", partition=1)
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    # the lost answer's batch went again with the same sequence: the leader knows it
    assert stamps == [
        (0, 1001, 0, 0),
        (0, 1001, 0, 1),
        (0, 1001, 0, 1),
        (0, 1001, 0, 2),
        (1, 1001, 0, 0),
    ]
    await producer.stop()


@pytest.mark.parametrize(
    ("epoch", "then"),
    [
        (0, (1001, 1)),  # bumped by the producer itself (KIP-360)
        (2**15 - 1, (1002, 0)),  # as after 32,767 bumps: the epoch is spent, a new id
    ],
)
async def test_a_broken_sequence_means_a_new_epoch_and_the_batch_again(
    epoch: int, then: tuple[int, int]
) -> None:
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.answers = [lambda r: answer_all(r, OutOfOrderSequenceNumberError.code), ok]
    producer = await started(cluster)
    producer._accumulator.reset_producer(1001, epoch)
    meta = await asyncio.wait_for(producer.send_and_wait("a", b"v"), 5)
    assert meta.offset == 0
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    assert stamps == [(0, 1001, epoch, 0), (0, *then, 0)]  # from sequence 0 again
    await producer.stop()


def test_idempotence_settings() -> None:
    plain = Producer(bootstrap_servers="unused:1", acks=1)
    assert not plain.enable_idempotence  # acks=1 chosen: idempotence steps aside (Kafka 3)
    with pytest.raises(ConfigurationError, match="acks='all'"):
        Producer(bootstrap_servers="unused:1", acks=1, enable_idempotence=True)
    with pytest.raises(ConfigurationError, match="at most 5"):
        Producer(
            bootstrap_servers="unused:1",
            max_in_flight_requests_per_connection=6,
            enable_idempotence=True,
        )
    assert not Producer(bootstrap_servers="unused:1", enable_idempotence=False).enable_idempotence


async def test_a_batch_whose_outcome_is_unknown_keeps_its_id_after_a_reset() -> None:
    """Partition 0's answer is lost (it may be written); partition 1's sequence is refused,
    so the producer bumps its epoch. The retry of partition 0 must keep the old epoch and
    sequence (the broker knows whether it has it); only the refused batch is re-sequenced."""
    a0, a1 = TopicPartition("a", 0), TopicPartition("a", 1)
    cluster = ScriptedCluster({a0: 1, a1: 2})
    release_a0 = asyncio.Event()

    async def first_send_of_a0(request: ProduceRequest) -> Any:
        await release_a0.wait()
        raise NetworkError("the answer was lost")

    order: list[str] = []
    real_send = cluster.send

    async def send(node: int, api_key: ApiKey, request: ProduceRequest, **kw: Any) -> Any:
        if node == 1 and not order:
            order.append("a0 first")
            cluster.requests.append((node, request, True))
            return await first_send_of_a0(request)
        if node == 2 and "a1 refused" not in order:
            order.append("a1 refused")
            cluster.requests.append((node, request, True))
            release_a0.set()
            return answer_all(request, OutOfOrderSequenceNumberError.code)
        return await real_send(node, api_key, request, **kw)

    cluster.send = send  # type: ignore[method-assign]
    producer = await started(cluster)
    f0 = await producer.send("a", b"x", partition=0)
    f1 = await producer.send("a", b"y", partition=1)
    await asyncio.wait_for(asyncio.gather(f0, f1), 5)
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    a0_sends = [s for s in stamps if s[0] == 0]
    a1_sends = [s for s in stamps if s[0] == 1]
    assert a0_sends == [(0, 1001, 0, 0), (0, 1001, 0, 0)]  # the same epoch and sequence again
    assert a1_sends == [(1, 1001, 0, 0), (1, 1001, 1, 0)]  # refused: re-sequenced, new epoch
    await producer.stop()


async def test_a_bad_timestamp_is_refused_at_send_and_nothing_is_queued() -> None:
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    producer = await started(cluster)
    for bad in (2**63, -5, 1.5):
        with pytest.raises(ValueError, match="timestamp_ms"):
            await producer.send("a", b"v", timestamp_ms=bad)  # type: ignore[arg-type]
    meta = await producer.send_and_wait("a", b"v", timestamp_ms=2**63 - 1)
    assert meta.timestamp == 2**63 - 1
    assert [len(decode_batches_of(r)) for _, r, _ in cluster.requests] == [1]
    await producer.stop()


def decode_batches_of(request: ProduceRequest) -> list[Any]:
    return [
        r
        for p in request.topics[0].partitions
        for b in decode_batches(bytes(p.records or b""))
        for r in b
    ]


async def test_buffer_memory_bounds_what_waits_send_blocks_then_times_out_clearly() -> None:
    """Kafka's buffer.memory: past it, send() waits for batches to finish, up to
    max_block_ms, then fails with an error that says why; nothing accepted is lost."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.release.clear()  # the broker answers nothing for now
    producer = await started(
        cluster, buffer_memory=4_000, batch_size=1_000, max_block_ms=200, acks=1
    )
    accepted = []
    with pytest.raises(RequestTimedOutError, match=r"no room in the producer's buffer \(4000"):
        for _ in range(1_000):
            accepted.append(await producer.send("a", b"x" * 100))
    assert 0 < len(accepted) < 40  # about 4,000 bytes' worth, then the wait
    assert producer._accumulator.buffered_bytes <= 4_000
    waiting = asyncio.ensure_future(producer.send("a", b"x" * 100))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # blocked, not failed, while within max_block_ms
    cluster.release.set()  # the broker catches up: room again
    late = await asyncio.wait_for(waiting, 5)
    await producer.flush()
    assert all(f.done() and f.exception() is None for f in [*accepted, late])
    assert producer._accumulator.buffered_bytes == 0
    await producer.stop()


# --- pipelining: several batches of one partition in flight -------------------------------


class SequencingLeader:
    """One partition's leader as far as idempotence goes: the broker's own producer state
    checks each batch's sequence, a duplicate is answered with its first offsets, and the
    values written are kept in order. ``outcomes`` scripts what happens to each Produce
    in turn: "ok", "refuse" (NOT_LEADER_OR_FOLLOWER, nothing written) or "lose" (written,
    then the answer is lost on the way back)."""

    def __init__(self, directory: Path) -> None:
        self.state = ProducerState(directory, "a-0")
        self.values: list[bytes | None] = []
        self.outcomes: list[str] = []
        self.answers: list[tuple[int, int]] = []  # (error code, base sequence) per batch

    def __call__(self, request: ProduceRequest) -> ProduceResponse:
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        ((partition,),) = [t.partitions for t in request.topics]
        (batch,) = decode_batches(bytes(partition.records or b""))
        code, base_offset = 0, len(self.values)
        if outcome == "refuse":
            code = NotLeaderOrFollowerError.code
        else:
            written = BrokerProducerBatch(
                batch.producer_id,
                batch.producer_epoch,
                batch.base_sequence,
                len(batch),
                base_offset,
                base_offset + len(batch) - 1,
            )
            try:
                duplicate = self.state.check(written)
            except ApiError as exc:
                code = exc.code
            else:
                if duplicate is not None:
                    base_offset = duplicate.first_offset
                else:
                    self.values += [r.value for r in batch]
                    self.state.update(written)
        self.answers.append((code, batch.base_sequence))
        if outcome == "lose" and not code:
            raise NetworkError("the answer was lost")
        return answer_all(request, code, base_offset)


async def pipelined_producer(
    leader: SequencingLeader, batches: int
) -> tuple[ScriptedCluster, Producer, list[RecordFuture]]:
    """``batches`` full batches of 3 records for partition a-0, all sent before the leader
    answers the first."""
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.answers = [leader] * 100
    cluster.release.clear()
    producer = await started(cluster, batch_size=300)  # 3 records of 60 bytes a batch
    futures = [await producer.send("a", b"%059d" % i) for i in range(3 * batches)]
    await _until(lambda: cluster.in_flight == min(batches, 5))
    return cluster, producer, futures


async def test_a_partition_keeps_up_to_five_batches_in_flight_in_sequence(
    tmp_path: Path,
) -> None:
    leader = SequencingLeader(tmp_path)
    cluster, producer, futures = await pipelined_producer(leader, batches=6)
    for _ in range(50):
        await asyncio.sleep(0)
    assert cluster.in_flight == 5  # the sixth waits for room (max_in_flight 5)
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    assert stamps == [(0, 1001, 0, s) for s in (0, 3, 6, 9, 12)]
    cluster.release.set()
    metas = await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert [m.offset for m in metas] == list(range(18))
    assert leader.values == [b"%059d" % i for i in range(18)]
    await producer.stop()


async def test_without_idempotence_a_partition_has_one_batch_in_flight() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.release.clear()
    producer = await started(cluster, batch_size=300, acks=1)
    futures = [await producer.send("a", b"%059d" % i) for i in range(9)]
    await _until(lambda: cluster.in_flight == 1)
    for _ in range(50):
        await asyncio.sleep(0)
    assert cluster.in_flight == 1
    cluster.release.set()
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    await producer.stop()


@pytest.mark.parametrize(
    ("written", "refusal"),
    [
        (0, UnknownProducerIdError.code),  # the leader has nothing of the producer yet
        (1, OutOfOrderSequenceNumberError.code),
    ],
)
async def test_batches_refused_behind_an_unwritten_one_are_retried_after_it_in_order(
    tmp_path: Path, written: int, refusal: int
) -> None:
    """A batch is not written (its leader moved); the leader refuses the ones after it.
    They are retried after it, as they were, under the same producer id: no reset, every
    record once, in send order."""
    leader = SequencingLeader(tmp_path)
    leader.outcomes = ["ok"] * written + ["refuse"]
    cluster, producer, futures = await pipelined_producer(leader, batches=5)
    cluster.release.set()
    metas = await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert leader.values == [b"%059d" % i for i in range(15)]
    assert [m.offset for m in metas] == list(range(15))
    sequences = [0, 3, 6, 9, 12]
    refused = sequences[written]
    assert leader.answers[:5] == (
        [(0, s) for s in sequences[:written]]
        + [(NotLeaderOrFollowerError.code, refused)]
        + [(refusal, s) for s in sequences[written + 1 :]]
    )
    # then one at a time, in order, from the unwritten one
    assert leader.answers[5:] == [(0, s) for s in sequences[written:]]
    assert cluster.producer_ids == 1  # the sequence never broke
    await producer.stop()


async def test_lost_answers_of_pipelined_batches_leave_each_record_once(tmp_path: Path) -> None:
    """The first and third answers are lost after their batches were written: their
    retries are recognised as duplicates (the leader remembers five batches) and get
    their first offsets."""
    leader = SequencingLeader(tmp_path)
    leader.outcomes = ["lose", "ok", "lose"]
    cluster, producer, futures = await pipelined_producer(leader, batches=5)
    cluster.release.set()
    metas = await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert leader.values == [b"%059d" % i for i in range(15)]
    assert [m.offset for m in metas] == list(range(15))
    assert cluster.producer_ids == 1
    await producer.stop()


async def test_a_refused_sequence_with_nothing_unsettled_before_it_still_resets(
    tmp_path: Path,
) -> None:
    """The leader forgot the producer (UNKNOWN_PRODUCER_ID for a batch not at sequence 0,
    nothing before it unsettled): a new epoch, and every batch refused under the old one
    goes again in order from sequence 0."""
    leader = SequencingLeader(tmp_path)
    leader.outcomes = ["ok"]
    cluster, producer, futures = await pipelined_producer(leader, batches=1)
    cluster.release.set()
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    leader.state.producers.clear()  # its state went with deleted segments
    cluster.release.clear()
    later = [await producer.send("a", b"%059d" % i) for i in range(3, 12)]
    await _until(lambda: cluster.in_flight == 3)
    cluster.release.set()
    await asyncio.wait_for(asyncio.gather(*later), 5)
    assert leader.values == [b"%059d" % i for i in range(12)]
    assert cluster.producer_ids == 1
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    assert stamps[-3:] == [(0, 1001, 1, s) for s in (0, 3, 6)]
    await producer.stop()


async def test_after_a_reset_a_late_request_under_the_old_epoch_is_fenced(
    tmp_path: Path,
) -> None:
    """From a review: a request the client gave up on reaches the leader late, after the
    producer's sequence broke and it reset. The leader has seen the new epoch by then and
    refuses the old one: the late records do not land after newer ones. (With a new
    producer id instead, the leader would take them as a new producer's first batch.)"""
    leader = SequencingLeader(tmp_path)
    cluster, producer, futures = await pipelined_producer(leader, batches=1)
    late = cluster.requests[0][1]  # epoch 0, sequence 0: say it is also still on its way
    cluster.release.set()
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    leader.state.producers.clear()  # the partition forgets the producer: UNKNOWN_PRODUCER_ID
    newer = [await producer.send("a", b"%059d" % i) for i in range(3, 6)]
    await asyncio.wait_for(asyncio.gather(*newer), 5)
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    assert stamps[-1] == (0, 1001, 1, 0)  # the newer records went under epoch 1
    written = list(leader.values)
    answer = leader(late)
    assert answer.topics[0].partitions[0].error_code == InvalidProducerEpochError.code
    assert leader.values == written == [b"%059d" % i for i in range(6)]
    await producer.stop()


async def test_a_sent_batch_failed_as_its_topic_gone_moves_the_producer_to_a_new_epoch() -> None:
    """From a review: a batch that was sent (so the partition may have it, or may yet read
    it) and then failed without an answer leaves its sequences in doubt. The producer must
    move to a new epoch before sending more, or a later refusal could be taken for a real
    one while old requests were still to land, and records written twice."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.answers = [lambda r: answer_all(r, NotLeaderOrFollowerError.code)]
    producer = await started(cluster)
    producer._accumulator.retry_backoff_ms = 60_000  # it waits to be retried
    doomed = await producer.send("a", b"x")
    queues = producer._accumulator._batches  # a partition's queue leaves it when empty
    await _until(lambda: tp in queues and queues[tp][0].attempts == 1)
    real = cluster.metadata  # for one pass, the brokers say the topic is gone
    cluster.metadata = SimpleNamespace(  # type: ignore[assignment]
        topics=real.topics,
        topic_errors={"a": UnknownTopicOrPartitionError("deleted")},
        leader_for=real.leader_for,
    )
    producer._send_ready()
    cluster.metadata = real
    assert isinstance(doomed.exception(), UnknownTopicOrPartitionError)
    meta = await asyncio.wait_for(producer.send_and_wait("a", b"y"), 5)
    assert meta.offset == 0
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    assert stamps == [(0, 1001, 0, 0), (0, 1001, 1, 0)]  # the next batch: a new epoch
    await producer.stop()


async def test_a_sequence_refused_by_a_broker_no_longer_leading_goes_to_the_leader() -> None:
    """The soak: a leader paused while another took over (and took the batch before this
    one); resumed, and not yet told, it refused this batch's sequence (it never had the one
    before). The batch was in doubt (an earlier attempt's answer was lost), so it failed as
    "may or may not have been written". A refusal from a broker the client knows no longer
    leads says nothing of the leader's log: the batch goes to the leader, stamp unchanged."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    moved = ScriptedCluster({tp: 2}).metadata

    def lost(request: ProduceRequest) -> Any:
        raise NetworkError("the answer was lost")  # in doubt from here

    def refused_by_the_old_leader(request: ProduceRequest) -> Any:
        cluster.metadata = moved  # meanwhile the client learned of the new leader
        return answer_all(request, OutOfOrderSequenceNumberError.code)

    cluster.answers = [lost, refused_by_the_old_leader, ok]
    producer = await started(cluster)
    meta = await asyncio.wait_for(producer.send_and_wait("a", b"v"), 5)
    assert meta.offset == 0
    assert [node for node, _, _ in cluster.requests] == [1, 1, 2]
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    assert len(set(stamps)) == 1  # the same producer id, epoch and sequence each time
    assert cluster.producer_ids == 1  # no new epoch: the sequence did not break
    await producer.stop()


async def test_a_transaction_check_refused_once_is_asked_again_after_a_refresh() -> None:
    """The soak: a broker paused while another took over the partition and the
    transaction's coordinator answered, when it resumed, from what it knew before: the
    transaction was over (INVALID_TXN_STATE). Refused before the append, the batch goes
    once more, unchanged and not in doubt, after a metadata refresh."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.answers = [lambda r: answer_all(r, InvalidTxnStateError.code), ok]
    producer = await started(cluster)
    meta = await asyncio.wait_for(producer.send_and_wait("a", b"v"), 5)
    assert meta.offset == 0
    assert cluster.refreshes >= 1
    stamps = [f for _, r, _ in cluster.requests for f in _producer_fields(r)]
    assert len(stamps) == 2 and len(set(stamps)) == 1  # the same batch, as it was
    assert cluster.producer_ids == 1
    await producer.stop()


async def test_a_transaction_refusal_is_sent_again_only_once_the_metadata_is_fresh() -> None:
    """Review 101: sent again after the backoff alone, the batch went to the broker that
    refused it before the refresh came back. It waits for the refresh (here slow, and
    naming broker 2 as the leader), then goes to the leader it names."""
    tp = TopicPartition("a", 0)
    gate = asyncio.Event()

    class SlowRefresh(ScriptedCluster):
        async def refresh(self) -> ClusterMetadata:
            await gate.wait()
            self.metadata = ScriptedCluster({tp: 2}).metadata
            return await super().refresh()

    cluster = SlowRefresh({tp: 1})
    cluster.answers = [lambda r: answer_all(r, InvalidTxnStateError.code), ok]
    producer = await started(cluster)
    future = await producer.send("a", b"v")
    await asyncio.sleep(0.2)  # 20 backoffs of 10 ms
    assert [node for node, _, _ in cluster.requests] == [1]
    gate.set()
    assert (await asyncio.wait_for(future, 5)).offset == 0
    assert [node for node, _, _ in cluster.requests] == [1, 2]
    await producer.stop()


async def test_a_refresh_that_fails_at_once_does_not_hold_the_batch() -> None:
    """Review 102: a refresh that failed at once left the batch (and its partition) held
    for all of request_timeout_ms, not the backoff."""
    tp = TopicPartition("a", 0)

    class NoRefresh(ScriptedCluster):
        async def refresh(self) -> ClusterMetadata:
            raise NetworkError("no broker answered")

    cluster = NoRefresh({tp: 1})
    cluster.answers = [lambda r: answer_all(r, InvalidTxnStateError.code), ok]
    producer = await started(cluster, request_timeout_ms=30_000)
    meta = await asyncio.wait_for(producer.send_and_wait("a", b"v"), 5)  # not 30 s
    assert meta.offset == 0
    assert [node for node, _, _ in cluster.requests] == [1, 1]
    await producer.stop()


async def test_a_held_batch_expires_at_its_delivery_timeout() -> None:
    """Review 102: the sender's next pass was set by the hold's end alone, so a batch
    held for a refresh that did not come expired that much past its delivery timeout."""
    tp = TopicPartition("a", 0)

    class HangingRefresh(ScriptedCluster):
        async def refresh(self) -> ClusterMetadata:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    cluster = HangingRefresh({tp: 1})
    cluster.release.clear()
    cluster.answers = [lambda r: answer_all(r, InvalidTxnStateError.code)]
    producer = await started(cluster, request_timeout_ms=3_000, delivery_timeout_ms=3_000)
    loop = asyncio.get_running_loop()
    began = loop.time()
    future = await producer.send("a", b"v")
    await asyncio.sleep(2.0)
    cluster.release.set()  # refused at 2 s: held till 5 s, past its deadline at 3 s
    with pytest.raises(RequestTimedOutError, match="delivery_timeout_ms"):
        await asyncio.wait_for(future, 10)
    assert loop.time() - began < 4.5  # at its deadline, not at the hold's end
    await producer.stop()


async def test_the_leaders_second_transaction_refusal_fails_the_batch() -> None:
    """Asked again, the leader the client knows refuses it again: the transaction is over
    there, and the batch fails with that error (not as "in doubt": it was never written)."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.answers = [lambda r: answer_all(r, InvalidTxnStateError.code)] * 3
    producer = await started(cluster)
    future = await producer.send("a", b"v")
    with pytest.raises(InvalidTxnStateError):
        await asyncio.wait_for(future, 5)
    assert [node for node, _, _ in cluster.requests] == [1, 1]
    await producer.stop()


async def test_transaction_refusals_from_a_broker_no_longer_leading_go_to_the_leader() -> None:
    """Refused twice by broker 1, the second time after the client learned that broker 2
    leads: the refusal is a former leader's, and the batch goes to broker 2."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    moved = ScriptedCluster({tp: 2}).metadata

    def refused_by_the_old_leader(request: ProduceRequest) -> Any:
        cluster.metadata = moved
        return answer_all(request, InvalidTxnStateError.code)

    cluster.answers = [
        lambda r: answer_all(r, InvalidTxnStateError.code),
        refused_by_the_old_leader,
        ok,
    ]
    producer = await started(cluster)
    meta = await asyncio.wait_for(producer.send_and_wait("a", b"v"), 5)
    assert meta.offset == 0
    assert [node for node, _, _ in cluster.requests] == [1, 1, 2]
    await producer.stop()


async def test_retries_zero_fails_a_transaction_refusal_at_once() -> None:
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.answers = [lambda r: answer_all(r, InvalidTxnStateError.code), ok]
    producer = await started(cluster, retries=0, enable_idempotence=False)
    future = await producer.send("a", b"v")
    with pytest.raises(InvalidTxnStateError):
        await asyncio.wait_for(future, 5)
    assert len(cluster.requests) == 1
    await producer.stop()


async def test_the_leaders_refusal_read_under_stale_metadata_still_moves_to_a_new_epoch() -> None:
    """Review 100: the leader (broker 1) refuses a batch not in doubt for real (it forgot
    the producer), but a stale Metadata answer meanwhile names broker 2. The batch is not
    sent to broker 2 unchanged (its NOT_LEADER_OR_FOLLOWER would put it in doubt, and the
    leader's next refusal would fail it): as before, a new epoch and the batch again."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    at_2 = ScriptedCluster({tp: 2}).metadata  # what a broker with a stale cache says
    at_1 = cluster.metadata

    def leader_1(request: ProduceRequest) -> Any:
        ((_, _, epoch, sequence),) = _producer_fields(request)
        if epoch == 0 and sequence != 0:  # broker 1 forgot the producer's epoch 0
            cluster.metadata = at_2
            return answer_all(request, UnknownProducerIdError.code)
        return ok(request)

    def broker_2(request: ProduceRequest) -> Any:
        cluster.metadata = at_1
        return answer_all(request, NotLeaderOrFollowerError.code)

    producer = await started(cluster)
    await asyncio.wait_for(producer.send_and_wait("a", b"A"), 5)  # sequence 0: written
    cluster.answers = [leader_1, broker_2, leader_1, leader_1, leader_1]
    assert await asyncio.wait_for(producer.send_and_wait("a", b"B"), 5)
    await producer.stop()


async def test_a_compression_level_reaches_the_batches_and_a_bad_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"compression_zstd_level=23 is invalid: it must"):
        Producer(bootstrap_servers="unused:1", compression_zstd_level=23)
    with pytest.raises(ConfigurationError, match=r"between 1 and 9, or -1"):
        Producer(bootstrap_servers="unused:1", compression_gzip_level=0)
    value = b" ".join(b"word %d of a text that repeats itself %d" % (i, i % 5) for i in range(300))
    sizes = []
    for level in (1, 9):
        tp = TopicPartition("t", 0)
        cluster = ScriptedCluster({tp: 1})
        producer = await started(
            cluster, compression_type="gzip", compression_gzip_level=level, linger_ms=0
        )
        await producer.send_and_wait("t", value, partition=0)
        await producer.stop()
        (request,) = [r for _, r, _ in cluster.requests]
        (data,) = [p.records for t in request.topics for p in t.partitions]
        (batch,) = decode_batches(bytes(data or b""))
        assert batch.compression == "gzip" and [r.value for r in batch] == [value]
        sizes.append(len(data or b""))
    assert sizes[1] < sizes[0]  # level 9 compresses tighter than level 1
