"""The consumer's metrics as a user reads them from ``Consumer.metrics()``, driving the
real Consumer, its fetcher and its group member against scripted brokers (no sockets),
on a clock the test moves: records and bytes consumed, fetches, lag and lead, per-topic
and per-partition groups (gone with the partition), commits, rebalances, heartbeats,
polls, and the two settings."""

from __future__ import annotations

import asyncio
import math
import struct
from types import SimpleNamespace
from typing import Any

import pytest

import client.consumer as consumer_module
from client import Consumer
from client.assignors import Subscription, encode_subscription
from client.consumer_metrics import ConsumerMetrics
from client.errors import ConfigurationError
from client.types import TopicPartition
from protocol.apis import (
    AbortedTransaction,
    ApiKey,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
    FindCoordinatorResponse,
    HeartbeatResponse,
    JoinGroupResponse,
    JoinGroupResponseMember,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
    SyncGroupResponse,
)
from protocol.errors import (
    ApiError,
    NetworkError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from protocol.records import encode_batch
from protocol.records.control import encode_end_txn_marker

FETCH = "consumer-fetch-manager-metrics"
COORDINATOR = "consumer-coordinator-metrics"
CONSUMER = "consumer-metrics"
TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)
U0 = TopicPartition("u", 0)


class _Clock:
    """Milliseconds, moved by the test and by the scripted brokers' round trips."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    made = _Clock()
    monkeypatch.setattr(consumer_module, "monotonic_ms", made)  # read by Consumer()
    return made


def _batch(base: int, count: int, tag: bytes = b"v") -> bytes:
    return encode_batch(
        [(None, tag + b"%d" % (base + i), None, 1_000 + base + i) for i in range(count)],
        base_offset=base,
    )


def _answer(
    parts: dict[TopicPartition, tuple[bytes | None, int, int]], throttle_ms: int = 0
) -> FetchResponse:
    """A Fetch answer: per partition (records, high watermark, log start offset)."""
    topics: dict[str, list[FetchPartitionData]] = {}
    for tp, (records, hw, log_start) in parts.items():
        topics.setdefault(tp.topic, []).append(
            FetchPartitionData(
                partition_index=tp.partition,
                high_watermark=hw,
                last_stable_offset=hw,
                log_start_offset=log_start,
                records=records,
            )
        )
    return FetchResponse(
        throttle_time_ms=throttle_ms,
        topics=[FetchTopicResponse(topic=t, partitions=ps) for t, ps in topics.items()],
    )


class _Broker:
    """Answers each Fetch from a script, each after ``round_trip_ms`` on the clock."""

    def __init__(self, clock: _Clock, round_trip_ms: float) -> None:
        self.clock = clock
        self.round_trip_ms = round_trip_ms
        self.answers: list[FetchResponse] = []

    def connection_now(self, node: int, purpose: str = "") -> None:
        return None  # not connected: the consumer sends through a task (``send``)

    def request_refresh(self) -> None:
        pass

    def add_topics(self, topics: Any) -> None:
        pass

    def set_topics(self, topics: Any) -> None:
        pass

    async def send(self, node: int, api_key: Any, request: FetchRequest, **kw: Any) -> Any:
        self.clock.now += self.round_trip_ms
        return self.answers.pop(0)


def _consumer(broker: _Broker, *tps: TopicPartition, **settings: Any) -> Consumer:
    consumer = Consumer(bootstrap_servers="unused:1", **settings)
    consumer._cluster = broker  # type: ignore[assignment]
    consumer._fetch_again = lambda node: None  # type: ignore[method-assign]  # the test fetches
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    consumer._state = "running"  # (no start(): nothing to connect to)
    consumer._data = asyncio.Event()
    return consumer


async def _fetch(consumer: Consumer, answer: FetchResponse) -> None:
    """One Fetch of everything fetchable, answered with ``answer``."""
    broker: _Broker = consumer._cluster  # type: ignore[assignment]
    broker.answers.append(answer)
    (fetch,) = consumer._subscription.fetchable_by_leader(0, {}).values()
    consumer._start_fetch(1, fetch)
    task = consumer._fetches[1]
    assert task is not None
    await task


def test_the_settings_must_be_at_least_1() -> None:
    with pytest.raises(ConfigurationError, match=r"metrics_num_samples=0 must be at least 1"):
        Consumer(bootstrap_servers="unused:1", metrics_num_samples=0)
    with pytest.raises(ConfigurationError, match=r"metrics_sample_window_ms=0 must be at least"):
        Consumer(bootstrap_servers="unused:1", metrics_sample_window_ms=0)
    Consumer(bootstrap_servers="unused:1", metrics_num_samples=1, metrics_sample_window_ms=1)


def test_before_start_the_metrics_are_there_with_nothing_recorded() -> None:
    metrics = Consumer(bootstrap_servers="unused:1").metrics()
    assert set(metrics) == {FETCH, CONSUMER}  # no group_id: no coordinator, as Kafka's
    assert metrics[FETCH]["records-consumed-total"] == 0
    assert metrics[FETCH]["fetch-total"] == 0
    assert math.isnan(metrics[FETCH]["fetch-latency-avg"])  # nothing in the window
    assert math.isnan(metrics[FETCH]["records-lag-max"])
    assert metrics[CONSUMER]["last-poll-seconds-ago"] == -1
    grouped = Consumer(bootstrap_servers="unused:1", group_id="g").metrics()[COORDINATOR]
    assert grouped["commit-total"] == grouped["rebalance-total"] == 0
    assert grouped["heartbeat-total"] == grouped["assigned-partitions"] == 0
    assert grouped["last-rebalance-seconds-ago"] == grouped["last-heartbeat-seconds-ago"] == -1


async def test_fetches_records_bytes_and_lag_as_the_user_consumes(clock: _Clock) -> None:
    broker = _Broker(clock, round_trip_ms=7)
    consumer = _consumer(broker, TP0, U0)
    t0_data = _batch(0, 3) + _batch(3, 3)
    u0_data = _batch(0, 2, tag=b"u")
    await _fetch(consumer, _answer({TP0: (t0_data, 10, 0), U0: (u0_data, 2, 0)}, throttle_ms=4))

    fetch = consumer.metrics()[FETCH]
    assert fetch["fetch-total"] == 1
    assert fetch["fetch-latency-avg"] == fetch["fetch-latency-max"] == 7
    assert fetch["fetch-size-avg"] == fetch["fetch-size-max"] == len(t0_data) + len(u0_data)
    assert fetch["records-per-request-avg"] == 8
    assert fetch["fetch-throttle-time-avg"] == fetch["fetch-throttle-time-max"] == 4
    # Kafka records lag and lead as it hands records out: nothing yet
    assert math.isnan(fetch["records-lag-max"])
    assert f"{FETCH}.t[0]" not in consumer.metrics()
    assert fetch["records-consumed-total"] == 0  # buffered, not yet handed out

    got = await consumer.getmany(TP0, max_records=4)
    assert [r.offset for r in got[TP0]] == [0, 1, 2, 3]
    metrics = consumer.metrics()
    t0 = metrics[f"{FETCH}.t[0]"]
    assert t0["records-lag"] == 6  # high watermark 10 - position 4
    assert t0["records-lead"] == 4  # position 4 - log start 0
    assert metrics[FETCH]["records-consumed-total"] == 4
    assert metrics[f"{FETCH}.t"]["records-consumed-total"] == 4
    # the first batch is used up, the second is not: bytes count whole batches
    assert metrics[FETCH]["bytes-consumed-total"] == len(_batch(0, 3))
    assert f"{FETCH}.u" not in metrics  # nothing of u handed out yet

    records = [await consumer.getone() for _ in range(4)]  # the rest: 4, 5 of t and u's two
    assert sorted((r.topic, r.offset) for r in records) == [("t", 4), ("t", 5), ("u", 0), ("u", 1)]
    metrics = consumer.metrics()
    assert metrics[FETCH]["records-consumed-total"] == 8
    assert metrics[f"{FETCH}.t"]["records-consumed-total"] == 6
    assert metrics[f"{FETCH}.u"]["records-consumed-total"] == 2
    assert metrics[FETCH]["bytes-consumed-total"] == len(t0_data) + len(u0_data)
    assert metrics[f"{FETCH}.u"]["bytes-consumed-total"] == len(u0_data)
    # getone(): each partition's lag once a batch is done, not a record each
    assert metrics[f"{FETCH}.t[0]"]["records-lag"] == 4  # 10 - 6
    assert metrics[f"{FETCH}.t[0]"]["records-lag-avg"] == 5  # 6 and 4
    assert metrics[f"{FETCH}.u[0]"]["records-lag"] == 0
    # 8 records over one whole window (Kafka's least span, samples - 1 windows): the
    # sensor's first sample began when it was first read, and no time has passed since
    assert metrics[FETCH]["records-consumed-rate"] == pytest.approx(8 / 30)

    # the next answer: t-0's high watermark is 15, the log starts at 3; read to 8
    await _fetch(consumer, _answer({TP0: (_batch(6, 2), 15, 3)}))
    await consumer.getmany()
    metrics = consumer.metrics()
    t0 = metrics[f"{FETCH}.t[0]"]
    assert t0["records-lag"] == 7
    assert t0["records-lag-max"] == 7 and t0["records-lag-avg"] == pytest.approx(17 / 3)
    assert t0["records-lead"] == 5 and t0["records-lead-min"] == 4  # 4, 6, 5
    assert metrics[FETCH]["records-lag-max"] == 7
    assert metrics[FETCH]["records-lead-min"] == 2  # u-0's: position 2 - log start 0
    assert metrics[FETCH]["fetch-total"] == 2
    assert metrics[FETCH]["records-per-request-avg"] == 5  # (8 + 2) / 2

    # an answer from offset 8 starting with a batch from 6 (a fetch answers whole
    # batches): the records before 8 are never handed out, and not counted as fetched
    await _fetch(consumer, _answer({TP0: (_batch(6, 4) + _batch(10, 2), 15, 3)}))
    got = await consumer.getmany()
    assert [r.offset for r in got[TP0]] == [8, 9, 10, 11]
    assert consumer.metrics()[FETCH]["records-per-request-avg"] == pytest.approx(14 / 3)


async def test_a_partitions_metrics_go_when_it_is_unassigned(clock: _Clock) -> None:
    broker = _Broker(clock, round_trip_ms=1)
    consumer = _consumer(broker, TP0, TP1)
    await _fetch(consumer, _answer({TP0: (_batch(0, 1), 5, 0), TP1: (_batch(0, 1), 9, 0)}))
    await consumer.getmany()
    assert {f"{FETCH}.t[0]", f"{FETCH}.t[1]", f"{FETCH}.t"} <= consumer.metrics().keys()
    consumer.assign([TP1])
    metrics = consumer.metrics()
    assert f"{FETCH}.t[0]" not in metrics
    assert metrics[f"{FETCH}.t[1]"]["records-lag"] == 8  # high watermark 9 - position 1
    assert metrics[f"{FETCH}.t"]["records-consumed-total"] == 2  # the topic's stay
    consumer._assign_partitions([])  # as a rebalance that takes everything does
    assert not any(group.startswith(f"{FETCH}.t[") for group in consumer.metrics())


async def test_polls_between_and_since(clock: _Clock) -> None:
    consumer = _consumer(_Broker(clock, round_trip_ms=1), TP0)
    assert consumer.metrics()[CONSUMER]["last-poll-seconds-ago"] == -1
    await consumer.getmany()
    clock.now += 250
    await consumer.getmany()
    clock.now += 3_500
    polls = consumer.metrics()[CONSUMER]
    assert polls["time-between-poll-max"] == 250
    assert polls["time-between-poll-avg"] == 125  # the first poll counts 0, as Kafka's
    assert polls["poll-idle-ratio-avg"] == 0  # no time inside the polls on this clock
    assert polls["last-poll-seconds-ago"] == 3
    clock.now += 60_001  # both windows expire
    assert math.isnan(consumer.metrics()[CONSUMER]["time-between-poll-max"])


class _Coordinator:
    """A group coordinator that answers commits (and can refuse the next), joins, syncs
    and heartbeats, ``round_trip_ms`` on the clock each; its first metadata lookup fails."""

    client_id = "c"
    request_timeout_ms = 30_000

    def __init__(self, clock: _Clock, round_trip_ms: float) -> None:
        self.clock = clock
        self.round_trip_ms = round_trip_ms
        self.refuse = 0
        self.refusals: list[ApiError] = []  # raised by the next calls, one a call
        self.metadata_failures = 1
        self.on_update: list[Any] = []
        self.metadata = SimpleNamespace(brokers={1: None})

    async def send_any(self, key: ApiKey, request: Any, **_: Any) -> FindCoordinatorResponse:
        return FindCoordinatorResponse(node_id=1)  # found again after a failure: at once

    def add_topics(self, topics: Any) -> None:
        pass

    def set_topics(self, topics: Any) -> None:
        pass

    def request_refresh(self) -> None:
        pass

    async def fetch_metadata(self, topics: Any) -> Any:
        if self.metadata_failures:
            self.metadata_failures -= 1
            raise NetworkError("no broker answered")
        return self

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send(self, node: int, key: ApiKey, request: Any, **kw: Any) -> Any:
        self.clock.now += self.round_trip_ms
        if self.refusals:
            raise self.refusals.pop(0)
        if key == ApiKey.OFFSET_COMMIT:
            (topic,) = request.topics
            return OffsetCommitResponse(
                topics=[
                    OffsetCommitResponseTopic(
                        name=topic.name,
                        partitions=[
                            OffsetCommitResponsePartition(
                                partition_index=p.partition_index, error_code=self.refuse
                            )
                            for p in topic.partitions
                        ],
                    )
                ]
            )
        if key == ApiKey.JOIN_GROUP:
            mine = encode_subscription(Subscription(["t"]))
            return JoinGroupResponse(
                generation_id=1,
                protocol_type="consumer",
                protocol_name="range",
                leader="me",
                member_id="me",
                members=[JoinGroupResponseMember(member_id="me", metadata=mine)],
            )
        if key == ApiKey.SYNC_GROUP:
            (assignment,) = request.assignments
            return SyncGroupResponse(assignment=assignment.assignment)
        assert key == ApiKey.HEARTBEAT
        return HeartbeatResponse()


def _group_consumer(coordinator: _Coordinator) -> Consumer:
    consumer = Consumer(
        bootstrap_servers="unused:1", group_id="g", retry_backoff_ms=0, enable_auto_commit=False
    )
    consumer._cluster = coordinator  # type: ignore[assignment]
    assert consumer._offsets is not None and consumer._member is not None
    consumer._offsets._cluster = coordinator  # type: ignore[assignment]
    consumer._offsets._coordinator = 1  # found already
    consumer._member._cluster = coordinator  # type: ignore[assignment]
    consumer._state = "running"
    consumer._data = asyncio.Event()
    return consumer


async def test_commits_are_counted_and_timed_refused_ones_too(clock: _Clock) -> None:
    coordinator = _Coordinator(clock, round_trip_ms=5)
    consumer = _group_consumer(coordinator)
    await consumer.commit({TP0: 3})
    coordinator.round_trip_ms = 11
    await consumer.commit({TP0: 4, TP1: 1})
    coordinator.refuse = 12  # OFFSET_METADATA_TOO_LARGE: answered, and refused
    with pytest.raises(ApiError):
        await consumer.commit({TP0: 5})
    commits = consumer.metrics()[COORDINATOR]
    assert commits["commit-total"] == 3
    assert commits["commit-latency-max"] == 11
    assert commits["commit-latency-avg"] == 9  # (5 + 11 + 11) / 3
    # from the first commit's answer (5 ms, where the first sample began) to now (27 ms),
    # and one whole window
    assert commits["commit-rate"] == pytest.approx(3 / 30.022)


async def test_rebalances_and_heartbeats(clock: _Clock) -> None:
    coordinator = _Coordinator(clock, round_trip_ms=30)
    consumer = _group_consumer(coordinator)
    member = consumer._member
    assert member is not None
    member.subscribe(["t"], None)
    await member._join()  # JoinGroup answered; the leader's metadata lookup fails
    group = consumer.metrics()[COORDINATOR]
    assert group["failed-rebalance-total"] == 1
    assert group["rebalance-total"] == 0 and group["last-rebalance-seconds-ago"] == -1
    await member._join()  # JoinGroup, SyncGroup: done
    group = consumer.metrics()[COORDINATOR]
    assert group["rebalance-total"] == 1
    # from the first JoinGroup of the rebalance to the SyncGroup that ended it
    assert group["rebalance-latency-max"] == group["rebalance-latency-avg"] == 90
    assert group["rebalance-latency-total"] == 90
    # from the metrics' first read (30 ms, the failed attempt) to now (90 ms), and a window
    assert group["rebalance-rate-per-hour"] == pytest.approx(3600 / 30.06)
    assert group["assigned-partitions"] == 2
    assert consumer.assignment() == {TP0, TP1}
    clock.now += 2_500
    await member._heartbeat()
    clock.now += 1_000
    group = consumer.metrics()[COORDINATOR]
    assert group["heartbeat-total"] == 1
    assert group["heartbeat-response-time-max"] == 30
    assert group["last-heartbeat-seconds-ago"] == 1  # 1.03 s since it was sent
    assert group["last-rebalance-seconds-ago"] == 3  # 3.53 s

    # a heartbeat answered with a rebalance: answered all the same (Kafka counts it)
    coordinator.refusals = [RebalanceInProgressError("rebalancing")]
    await member._heartbeat()
    group = consumer.metrics()[COORDINATOR]
    assert group["heartbeat-total"] == 2
    # the JoinGroup of the next round refused (the member unknown): a failed rebalance
    coordinator.refusals = [UnknownMemberIdError("who?")]
    await member._join()
    group = consumer.metrics()[COORDINATOR]
    assert group["failed-rebalance-total"] == 2 and group["rebalance-total"] == 1


def test_a_partitions_metrics_going_leave_a_topic_named_like_it_alone() -> None:
    """Review 90: partition 1 of topic ``orders`` and topic ``orders-1`` are two groups
    (a partition's is ``<group>.<topic>[<partition>]``): when the partition is unassigned,
    the topic's records-consumed stays."""
    now = [1_000_000.0]
    metrics = ConsumerMetrics(samples=2, window_ms=30_000, clock=lambda: now[0])
    orders_1, orders_p1 = TopicPartition("orders-1", 0), TopicPartition("orders", 1)
    metrics.partition_lag(orders_p1, 5, None)  # a Fetch answer for orders, partition 1
    metrics.consumed({orders_1: [object()] * 3})  # 3 records of topic orders-1 handed out
    snapshot = metrics.snapshot({})
    assert snapshot[f"{FETCH}.orders-1"] == {
        "bytes-consumed-rate": 0.0,
        "bytes-consumed-total": 0.0,
        "records-consumed-rate": pytest.approx(3 / 30),
        "records-consumed-total": 3.0,
    }
    assert snapshot[f"{FETCH}.orders[1]"]["records-lag"] == 5
    metrics.keep_partitions({orders_1})  # partition 1 of orders is revoked
    metrics.consumed({orders_1: [object()] * 2})
    snapshot = metrics.snapshot({})
    assert f"{FETCH}.orders[1]" not in snapshot
    assert snapshot[f"{FETCH}.orders-1"]["records-consumed-total"] == 5


def _marker(base: int, *, committed: bool) -> bytes:
    marker = encode_end_txn_marker(
        producer_id=9, producer_epoch=0, committed=committed, coordinator_epoch=0, timestamp_ms=1000
    )
    struct.pack_into(">q", marker, 0, base)  # the base offset: outside the CRC
    return bytes(marker)


async def test_lag_after_batches_no_user_sees_is_from_the_position_past_them(
    clock: _Clock,
) -> None:
    """Review 91: an answer of only an aborted transaction and its marker (read_committed)
    moves the position past them, and Kafka records the lag then: 0 at the log's end."""
    consumer = _consumer(_Broker(clock, round_trip_ms=1), TP0, isolation_level="read_committed")
    aborted = encode_batch(
        [(None, b"x%d" % i, None, 1000) for i in range(100)],
        base_offset=0,
        producer_id=9,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    answer = _answer({TP0: (aborted + _marker(100, committed=False), 101, 0)})
    answer.topics[0].partitions[0].aborted_transactions = [
        AbortedTransaction(producer_id=9, first_offset=0)
    ]
    await _fetch(consumer, answer)
    assert consumer._subscription.states[TP0].position == 101  # past the transaction
    metrics = consumer.metrics()
    assert metrics[f"{FETCH}.t[0]"]["records-lag"] == 0  # last stable offset 101 - 101
    assert metrics[f"{FETCH}.t[0]"]["records-lead"] == 101
    assert metrics[FETCH]["records-lag-max"] == 0


async def test_lag_is_recorded_per_getmany_as_kafka_does_per_poll(clock: _Clock) -> None:
    """Review 91: Kafka records the lag each time it hands records out: 6 records (high
    watermark 10) read 2 at a time record 8, 6 and 4."""
    consumer = _consumer(_Broker(clock, round_trip_ms=1), TP0)
    await _fetch(consumer, _answer({TP0: (_batch(0, 6), 10, 0)}))
    for _ in range(3):
        assert len((await consumer.getmany(TP0, max_records=2))[TP0]) == 2
    t0 = consumer.metrics()[f"{FETCH}.t[0]"]
    assert (t0["records-lag-max"], t0["records-lag-avg"], t0["records-lag"]) == (8, 6, 4)
