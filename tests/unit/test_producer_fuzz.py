"""The producer's sender under random faults: a state-machine fuzz.

The real Producer and RecordAccumulator against three fake brokers. Each partition has one
real broker ProducerState (so acks=all replication is instant: what is written is on every
replica) and one log of the values written. Each seed runs random steps: sends, sender
passes, brokers processing requests (in order on a connection, or not), answers delivered,
connections dropped after or before the write, requests the client gave up on that a
broker reads late, leader moves, batches too large for the broker (split), expiry, the
partition forgetting the producer (UNKNOWN_PRODUCER_ID), fail_topic and stop(). Then a
healthy cluster answers everything, and each partition's log must hold every acknowledged
record once, at its offset, in send order, and no record may stay unfinished. The
accumulator's bookkeeping is checked after every step. Deterministic per seed.

From the review of the pipelining change (c38a953), where it found a record written twice
after a leader move and a late request landing after newer records.
"""

from __future__ import annotations

import asyncio
import random
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import client.producer as producer_module
from broker.log.producer_state import ProducerBatch as BrokerBatch
from broker.log.producer_state import ProducerState
from client import Producer
from client.accumulator import RecordAccumulator, RecordFuture
from client.cluster import ClusterMetadata, TopicMetadata
from client.types import TopicPartition
from protocol import apis
from protocol.errors import (
    ApiError,
    InvalidProducerEpochError,
    MessageTooLargeError,
    NetworkError,
    NotLeaderOrFollowerError,
    UnknownTopicOrPartitionError,
)
from protocol.records import decode_batches

pytestmark = pytest.mark.timeout(120)

NODES = (1, 2, 3)
OnAnswer = Callable[[Any, BaseException | None], None]


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000.0

    def __call__(self) -> float:
        return self.ms


class Request:
    def __init__(self, node: int, request: apis.ProduceRequest, on_answer: OnAnswer | None) -> None:
        self.node = node
        self.request = request
        self.on_answer = on_answer
        self.response: apis.ProduceResponse | None = None  # set once the broker has handled it


class Connection:
    def __init__(self, cluster: FakeCluster, node: int) -> None:
        self.cluster, self.node, self.writable = cluster, node, True

    def send_now(
        self, api_key: object, request: apis.ProduceRequest, on_answer: OnAnswer | None
    ) -> None:
        if on_answer is None:  # acks=0: written if it reaches the leader, never answered
            self.cluster.handle(Request(self.node, request, None))
        else:
            self.cluster.connections[self.node].append(Request(self.node, request, on_answer))


class ClientFacing:
    """What the Producer asks of client.cluster.Cluster that a fake answers alike: no
    connecting, producer ids from a counter, the topic's metadata as it is (``metadata``
    and ``producer_ids`` are the subclass's)."""

    metadata: Any
    producer_ids: int

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send_any(
        self, api_key: object, request: object, **_: object
    ) -> apis.InitProducerIdResponse:
        self.producer_ids += 1
        return apis.InitProducerIdResponse(producer_id=1000 + self.producer_ids, producer_epoch=0)

    def add_topics(self, topics: object) -> bool:
        return False

    async def wait_for_topic(self, topic: str, timeout_ms: float) -> TopicMetadata:
        topics: dict[str, TopicMetadata] = self.metadata.topics
        return topics[topic]


class FakeCluster(ClientFacing):
    """Stands in for client.cluster.Cluster and for the brokers behind it."""

    closed = False

    def __init__(self, tps: list[TopicPartition], directory: Path, rng: random.Random) -> None:
        partitions = [
            apis.MetadataPartition(partition_index=tp.partition, leader_id=1) for tp in tps
        ]
        response = apis.MetadataResponse(
            brokers=[apis.MetadataBroker(node_id=n, host="h", port=n) for n in NODES],
            topics=[apis.MetadataTopic(name="t", partitions=partitions)],
        )
        real = ClusterMetadata().merged(response, None)
        self.metadata = types.SimpleNamespace(topics=real.topics, topic_errors={})
        self.leaders = {tp: rng.choice(NODES) for tp in tps}
        self.on_update: list[Callable[[Any], None]] = []
        self.retry_backoff_ms = 10
        self.connections: dict[int, list[Request]] = {n: [] for n in NODES}
        self.late: list[Request] = []  # given up on by the client, not yet read by a broker
        self.state = {tp: ProducerState(directory, f"t-{tp.partition}") for tp in tps}
        self.log: dict[TopicPartition, list[bytes]] = {tp: [] for tp in tps}
        self.max_batch = 260  # bytes: a bigger batch is MESSAGE_TOO_LARGE (split)
        self.producer_ids = 0

    def leader_for(self, tp: TopicPartition) -> int | None:
        return self.leaders.get(tp)

    def connection_now(self, node: int) -> Connection:
        return Connection(self, node)

    def request_refresh(self) -> None:
        return None

    def handle(self, request: Request) -> None:
        """A broker writes or refuses each batch of ``request``, as the real one would."""
        answers = []
        for topic in request.request.topics:
            for partition in topic.partitions:
                tp = TopicPartition(topic.name, partition.index)
                raw = bytes(partition.records or b"")
                code, base_offset = 0, -1
                if self.leaders[tp] != request.node:
                    code = NotLeaderOrFollowerError.code
                elif len(raw) > self.max_batch:
                    code = MessageTooLargeError.code
                else:
                    code, base_offset = self._append(tp, raw)
                answers.append(
                    apis.ProducePartitionResponse(
                        index=partition.index, error_code=code, base_offset=base_offset
                    )
                )
        request.response = apis.ProduceResponse(
            topics=[apis.ProduceTopicResponse(name="t", partitions=answers)]
        )

    def _append(self, tp: TopicPartition, raw: bytes) -> tuple[int, int]:
        (batch,) = decode_batches(raw)
        log = self.log[tp]
        written = BrokerBatch(
            batch.producer_id,
            batch.producer_epoch,
            batch.base_sequence,
            len(batch),
            len(log),
            len(log) + len(batch) - 1,
            appended_ms=0,
        )
        if batch.producer_id >= 0:
            try:
                duplicate = self.state[tp].check(written)
            except ApiError as exc:
                return exc.code, -1
            if duplicate is not None:
                return 0, duplicate.first_offset
        log.extend(bytes(r.value or b"") for r in batch)
        if batch.producer_id >= 0:
            self.state[tp].update(written)
        return 0, written.base_offset


def check_bookkeeping(acc: RecordAccumulator, idempotent: bool) -> None:
    """The accumulator's queues and in-flight lists agree with each other."""
    in_flight: set[int] = set()
    for tp, batches in acc._sent.items():
        assert batches, f"{tp}: an empty in-flight list is kept"
        assert len(batches) <= acc.max_in_flight
        assert [b.rank for b in batches] == sorted(b.rank for b in batches)
        if len(batches) > 1:
            assert len({(b.producer_id, b.producer_epoch) for b in batches}) == 1
        for batch in batches:
            assert not batch.finished and id(batch) not in in_flight
            assert batch.producer_id >= 0 or not idempotent, "an unstamped batch in flight"
            in_flight.add(id(batch))
    for tp, queue in acc._batches.items():
        assert queue, f"{tp}: an empty queue kept (the sender's passes go over every queue)"
        assert [b.rank for b in queue] == sorted(b.rank for b in queue), f"{tp}: out of order"
        never_sent = False
        for batch in queue:
            assert id(batch) not in in_flight and not batch.finished
            never_sent = never_sent or batch.attempts == 0
            assert batch.attempts == 0 or not never_sent, f"{tp}: a retry behind a new batch"


class Run:
    """One seed: a producer, a fake cluster, and the random steps between them."""

    def __init__(
        self, seed: int, tmp_path: Path, *, idempotent: bool, late: float, forget: float
    ) -> None:
        self.rng = random.Random(seed)
        self.tps = [TopicPartition("t", p) for p in range(2)]
        self.cluster = FakeCluster(self.tps, tmp_path, self.rng)
        self.clock = Clock()
        self.idempotent = idempotent
        self.late = late
        self.forget = forget
        self.sent: list[tuple[TopicPartition, bytes, RecordFuture]] = []
        self.counts = dict.fromkeys(self.tps, 0)
        self.stopping: asyncio.Future[None] | None = None
        # one broker answers rarely: answers then come back out of order across brokers,
        # as after a leader moves away from a slow one
        slow = self.rng.choice(NODES)
        self.answer_odds = [0.05 if n == slow else 1.0 for n in NODES]

    async def start(self) -> None:
        producer_module._monotonic_ms = self.clock  # restored by the test's monkeypatch
        self.producer = Producer(
            bootstrap_servers="unused:1",
            retry_backoff_ms=10,
            batch_size=300,
            linger_ms=self.rng.choice([0, 0, 5]),
            delivery_timeout_ms=5_000,
            request_timeout_ms=1_000,
            **({} if self.idempotent else {"acks": 1}),
        )
        self.producer._cluster = self.cluster  # type: ignore[assignment]
        self.acc = self.producer._accumulator
        self.acc._clock = self.clock
        # no passes of its own: the steps run them
        self.producer._wake = lambda: None  # type: ignore[method-assign]
        self.acc._wakeup = lambda: None
        await self.producer.start()

    async def step(self, action: str) -> None:  # noqa: C901, PLR0912 - one branch per step
        rng, cluster = self.rng, self.cluster
        node = rng.choice(NODES)
        waiting = [r for r in cluster.connections[node] if r.response is None]
        if action == "send" and self.stopping is None:
            tp = rng.choice(self.tps)
            value = b"%d:%06d:" % (tp.partition, self.counts[tp]) + b"x" * rng.choice([5, 60])
            self.counts[tp] += 1
            future = await self.producer.send("t", value, partition=tp.partition)
            self.sent.append((tp, value, future))
        elif action == "pass":
            self.producer._send_ready()
        elif action == "handle" and waiting:
            cluster.handle(waiting[0] if rng.random() < 0.8 else rng.choice(waiting))
        elif action == "answer":
            requests = cluster.connections[rng.choices(NODES, self.answer_odds)[0]]
            if requests and requests[0].response is not None:  # in order on a connection
                request = requests.pop(0)
                assert request.on_answer is not None
                request.on_answer(request.response, None)
        elif action == "drop":  # the connection is lost, whether the broker wrote or not
            requests, cluster.connections[node] = cluster.connections[node], []
            for request in requests:
                assert request.on_answer is not None
                request.on_answer(None, NetworkError("connection lost"))
        elif action == "give up" and waiting:  # the broker will read it later
            request = rng.choice(waiting)
            cluster.connections[node].remove(request)
            cluster.late.append(request)
            assert request.on_answer is not None
            request.on_answer(None, NetworkError("request timed out"))
        elif action == "read late" and cluster.late:
            cluster.handle(cluster.late.pop(rng.randrange(len(cluster.late))))
        elif action == "move":
            cluster.leaders[rng.choice(self.tps)] = node
        elif action == "tick":
            self.clock.ms += rng.choice([1, 5, 11, 50])
        elif action == "expire":
            self.clock.ms += 5_000 * rng.choice([0.3, 0.6, 1.1])
        elif action == "forget":  # retention took the producer's state: UNKNOWN_PRODUCER_ID
            cluster.state[rng.choice(self.tps)].producers.clear()
        elif action == "topic gone":
            cluster.metadata.topic_errors["t"] = UnknownTopicOrPartitionError("gone a while")
            self.producer._send_ready()
            cluster.metadata.topic_errors.clear()
        elif action == "stop" and self.stopping is None:
            self.stopping = asyncio.ensure_future(self.producer.stop())
        for _ in range(5):  # the producer's own tasks (a reset) take their turn
            await asyncio.sleep(0)
        check_bookkeeping(self.acc, self.idempotent)

    async def play(self, steps: int) -> None:
        weights = {
            "send": 6,
            "pass": 6,
            "handle": 6,
            "answer": 6,
            "drop": 0.4,
            "move": 0.4,
            "tick": 3,
            "expire": 0.05,
            "forget": self.forget,
            "give up": self.late,
            "read late": 2 * self.late,
            "topic gone": 0.05,
            "stop": 0.01,
        }
        actions, odds = list(weights), list(weights.values())
        for _ in range(steps):
            await self.step(self.rng.choices(actions, odds)[0])
        for _ in range(4_000):  # then a healthy cluster answers everything
            if all(f.done() for *_, f in self.sent) and not any(self.cluster.connections.values()):
                return
            await self.step(self.rng.choices(["pass", "handle", "answer", "tick"], [3, 4, 4, 2])[0])
        unfinished = [v for _, v, f in self.sent if not f.done()]
        raise AssertionError(f"{len(unfinished)} records never finished: {unfinished[:3]}")

    def check(self) -> None:
        for tp in self.tps:
            order = [int(v.split(b":")[1]) for v in self.cluster.log[tp]]
            if self.idempotent and not self.forget:
                # (a partition that forgets the producer also forgets the batches it would
                # recognise a retry by: as in Kafka, those can be written twice)
                assert len(set(order)) == len(order), f"{tp}: written twice: {order}"
            firsts = list(dict.fromkeys(order))
            assert firsts == sorted(firsts), f"{tp}: not in send order: {order}"
        last: dict[TopicPartition, int] = {}
        for tp, value, future in self.sent:
            error = future.exception()
            # its own older epoch never fails a record: such a batch was not written
            assert not isinstance(error, InvalidProducerEpochError), f"{value!r}: {error}"
            if error is not None:
                continue
            offset = future.result().offset
            log = self.cluster.log[tp]
            assert 0 <= offset < len(log) and log[offset] == value, f"{value!r} at {offset}"
            if not self.forget:  # (a record written twice is acknowledged at its second)
                assert offset > last.get(tp, -1), f"{tp}: acknowledged out of order"
            last[tp] = offset
        if self.stopping is not None:
            assert self.stopping.done(), "stop() never finished"


@pytest.mark.parametrize(
    ("seeds", "idempotent", "late", "forget"),
    [
        (range(0, 80), True, 0.0, 0.0),
        (range(80, 140), True, 0.3, 0.0),  # requests given up on, read late by a broker
        (range(140, 180), True, 0.0, 0.05),  # partitions forget the producer
        (range(180, 220), False, 0.0, 0.0),  # one batch per partition in flight
    ],
)
async def test_the_producer_under_random_faults_keeps_acknowledged_records_once_in_order(  # noqa: PLR0917
    seeds: range,
    idempotent: bool,
    late: float,
    forget: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(producer_module, "_monotonic_ms", producer_module._monotonic_ms)
    most_in_flight = 0
    for seed in seeds:
        run = Run(seed, tmp_path / str(seed), idempotent=idempotent, late=late, forget=forget)
        (tmp_path / str(seed)).mkdir()
        await run.start()
        original = run.acc.drain

        def drain(*args: Any, run: Run = run, original: Any = original) -> Any:
            nonlocal most_in_flight
            out = original(*args)
            most_in_flight = max([most_in_flight, *map(len, run.acc._sent.values())])
            return out

        run.acc.drain = drain  # type: ignore[method-assign]
        try:
            await run.play(steps=300)
            run.check()
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
        if run.stopping is None:
            await run.producer.stop()
    assert most_in_flight == (5 if idempotent else 1)  # the runs did pipeline (or not)
