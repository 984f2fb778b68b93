"""The producer's metrics (Kafka's names, counted per batch) and its fast path for records
with only a value (``Producer._lanes``), against the scripted cluster (no socket)."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from client import ClientClosedError, ConfigurationError, Producer
from client.accumulator import (
    HELD_PER_RECORD,
    LANE_RECORDS,
    RECORD_OVERHEAD_BOUND,
    RecordAccumulator,
)
from client.metrics import Metrics, ProducerMetrics, Sensor, tagged
from client.partitioner import partition_for_key
from client.types import TopicPartition
from protocol.apis import ProduceRequest, ProduceResponse
from protocol.errors import (
    InvalidRequiredAcksError,
    MessageTooLargeError,
    NotLeaderOrFollowerError,
    RequestTimedOutError,
)
from protocol.records import decode_batches
from tests.unit.test_producer_sender import ScriptedCluster, answer_all, ok, started

pytestmark = pytest.mark.timeout(20)


# --- the core: Kafka's windowed stats ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_sensor_averages_and_maxes_over_its_live_samples_and_totals_forever() -> None:
    clock = Clock()
    sensor = Sensor(samples=2, window_ms=1_000, clock=clock)
    assert math.isnan(sensor.avg()) and math.isnan(sensor.max())  # Kafka's NaN: none yet
    for value in (10, 30):
        sensor.record(value)
    clock.now += 1_000  # a new window
    sensor.record(5)
    assert (sensor.avg(), sensor.max(), sensor.total, sensor.count) == (15, 30, 45, 3)
    clock.now += 1_000  # the first window is two windows old: expired
    sensor.record(7)
    assert (sensor.avg(), sensor.max(), sensor.total, sensor.count) == (6, 7, 52, 4)
    clock.now += 5_000  # everything expired; the totals stay
    assert math.isnan(sensor.avg()) and math.isnan(sensor.max())
    assert sensor.rate() == 0 and sensor.total == 52


def test_a_rate_spans_at_least_samples_minus_one_windows_as_kafkas() -> None:
    clock = Clock()
    sensor = Sensor(samples=2, window_ms=30_000, clock=clock)
    sensor.record(600)
    clock.now += 1_000
    assert sensor.rate() == pytest.approx(600 / 31)  # 1 s elapsed + one whole window
    assert sensor.count_rate() == pytest.approx(1 / 31)
    clock.now += 44_000  # 45 s after the first sample: one full window, no padding
    sensor.record(300)
    assert sensor.rate() == pytest.approx(900 / 45)


def test_sensor_and_registry_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Sensor(samples=0)
    with pytest.raises(ValueError, match="positive"):
        Metrics(window_ms=0)


def test_the_registry_reads_by_group_and_forgets_a_group() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    sensor = metrics.sensor("g", "s")
    assert metrics.sensor("g", "s") is sensor
    metrics.measure("g", "thing", sensor, avg=True, max=True, total=True)
    topic = tagged("g", "orders", 3)
    metrics.add(topic, "lag", lambda: 12)
    sensor.record(4)
    sensor.record(8)
    assert metrics.snapshot() == {
        "g": {"thing-avg": 6.0, "thing-max": 8.0, "thing-total": 12.0},
        "g.orders[3]": {"lag": 12.0},
    }
    metrics.remove_group(topic)
    assert list(metrics.snapshot()) == ["g"]


# --- the producer's metrics ------------------------------------------------------------------


def metric(producer: Producer, name: str, group: str = "producer-metrics") -> float:
    return producer.metrics()[group][name]


async def test_sends_count_records_bytes_batches_and_requests() -> None:
    leaders = {TopicPartition("a", 0): 1, TopicPartition("a", 1): 1, TopicPartition("b", 0): 1}
    cluster = ScriptedCluster(leaders)
    producer = await started(cluster, linger_ms=50, acks=1)
    assert metric(producer, "record-send-total") == 0
    for i in range(10):
        await producer.send("a", b"v%d" % i, partition=i % 2)
    for _ in range(5):
        await producer.send("b", b"w" * 100)
    await producer.flush()
    (request,) = [r for _, r, _ in cluster.requests]
    sizes = {(t.name, p.index): len(p.records or b"") for t in request.topics for p in t.partitions}
    assert metric(producer, "record-send-total") == 15
    assert metric(producer, "record-send-total", "producer-topic-metrics.a") == 10
    assert metric(producer, "record-send-total", "producer-topic-metrics.b") == 5
    assert metric(producer, "byte-total", "producer-topic-metrics.b") == sizes["b", 0]
    assert metric(producer, "batch-size-max") == max(sizes.values())
    assert metric(producer, "batch-size-avg") == pytest.approx(sum(sizes.values()) / 3)
    assert metric(producer, "records-per-request-avg") == 15  # one request, three batches
    assert metric(producer, "compression-rate-avg") == 1.0  # not compressed
    assert metric(producer, "record-queue-time-max") >= 0
    assert metric(producer, "request-latency-avg") >= 0
    assert metric(producer, "record-error-total") == 0
    assert metric(producer, "record-retry-total") == 0
    assert metric(producer, "buffer-available-bytes") == metric(producer, "buffer-total-bytes")
    assert metric(producer, "buffer-total-bytes") == 33_554_432
    assert metric(producer, "requests-in-flight") == 0
    await producer.stop()


async def test_retries_and_failures_are_counted_in_records() -> None:
    retried, failing = TopicPartition("a", 0), TopicPartition("b", 0)
    cluster = ScriptedCluster({retried: 1, failing: 1})

    def refuse(request: ProduceRequest) -> ProduceResponse:
        response = answer_all(request, NotLeaderOrFollowerError.code)
        for topic in response.topics:
            for p in topic.partitions:
                if topic.name == "b":
                    p.error_code = InvalidRequiredAcksError.code
        return response

    cluster.answers = [refuse, ok]
    producer = await started(cluster, linger_ms=20)
    futures = [await producer.send(t, b"x") for t in ("a", "a", "a", "b", "b")]
    await producer.flush()
    assert [f.exception() is None for f in futures] == [True] * 3 + [False] * 2
    assert metric(producer, "record-retry-total") == 3
    assert metric(producer, "record-retry-total", "producer-topic-metrics.a") == 3
    assert metric(producer, "record-error-total") == 2
    assert metric(producer, "record-error-total", "producer-topic-metrics.b") == 2
    assert metric(producer, "record-send-total") == 5 + 3  # the retry is sent again
    await producer.stop()


async def test_every_failed_record_is_an_error_once_even_unsent() -> None:
    """What the bench counts on: once flush() returns, sent - record-error-total were
    acknowledged. Records failed by stop() before they went out count, and once."""
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.release.clear()  # nothing answered
    producer = await started(cluster, linger_ms=60_000, delivery_timeout_ms=120_000)
    futures = [await producer.send("a", b"x") for _ in range(7)]
    stopping = asyncio.ensure_future(producer.stop())
    await asyncio.sleep(0.05)
    stopping.cancel()  # skip the wait: unsent records fail
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert all(f.done() and f.exception() is not None for f in futures)
    assert metric(producer, "record-error-total") == 7


async def test_a_split_batch_is_counted() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.answers = [lambda r: answer_all(r, MessageTooLargeError.code), ok, ok]
    producer = await started(cluster, linger_ms=20)
    futures = [await producer.send("a", b"x") for _ in range(4)]
    await producer.flush()
    assert all(f.exception() is None for f in futures)
    assert metric(producer, "batch-split-total") == 1
    await producer.stop()


async def test_throttle_time_and_buffer_waits_are_measured() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})

    def throttled(request: ProduceRequest) -> ProduceResponse:
        response = ok(request)
        response.throttle_time_ms = 250
        return response

    cluster.answers = [throttled] * 100
    cluster.release.clear()
    producer = await started(cluster, buffer_memory=2_000, batch_size=500, acks=1)
    assert metric(producer, "waiting-threads") == 0
    sends = asyncio.ensure_future(  # noqa: RUF006 - awaited below
        asyncio.gather(*[producer.send("a", b"x" * 100) for _ in range(30)])
    )
    await asyncio.sleep(0.05)
    assert metric(producer, "waiting-threads") >= 1  # blocked on buffer_memory
    assert metric(producer, "buffer-available-bytes") < 500
    cluster.release.set()
    await asyncio.wait_for(sends, 5)
    await producer.flush()
    assert metric(producer, "waiting-threads") == 0
    assert metric(producer, "bufferpool-wait-time-ns-total") >= 40_000_000  # ~50 ms blocked
    assert metric(producer, "produce-throttle-time-max") == 250
    await producer.stop()


def test_metrics_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="metrics_num_samples"):
        Producer(bootstrap_servers="h:1", metrics_num_samples=0)
    with pytest.raises(ConfigurationError, match="metrics_sample_window_ms"):
        Producer(bootstrap_servers="h:1", metrics_sample_window_ms=0)


def test_metrics_before_start_are_all_zero_or_none_yet() -> None:
    producer = Producer(bootstrap_servers="h:1")
    found = producer.metrics()["producer-metrics"]
    assert found["record-send-total"] == 0 and math.isnan(found["request-latency-avg"])


# --- the fast path: a record with only a value goes straight onto its topic's open batch ---


class Leader:
    """Every partition's log, in order; each batch gets the next offsets."""

    def __init__(self) -> None:
        self.logs: defaultdict[tuple[str, int], list[bytes | None]] = defaultdict(list)
        self.keys: defaultdict[tuple[str, int], list[bytes | None]] = defaultdict(list)

    def __call__(self, request: ProduceRequest) -> ProduceResponse:
        response = ok(request)
        for topic, answer in zip(request.topics, response.topics, strict=True):
            for p, a in zip(topic.partitions, answer.partitions, strict=True):
                (batch,) = decode_batches(bytes(p.records or b""))
                log = self.logs[topic.name, p.index]
                a.base_offset = len(log)
                log += [r.value for r in batch]
                self.keys[topic.name, p.index] += [r.key for r in batch]
        return response


async def test_records_with_only_a_value_land_in_order_at_their_offsets() -> None:
    """Sticky partitioning with the fast path: a batch's records stay together, a full
    batch moves the topic on to another partition, keyed and pinned records go where
    their key or partition says, and every future says where its record is."""
    tps = {TopicPartition("a", p): 1 for p in range(3)}
    cluster = ScriptedCluster(tps)
    leader = Leader()
    cluster.answers = [leader] * 1_000
    producer = await started(cluster, batch_size=1_000, linger_ms=5, acks=1)
    sent: list[tuple[Any, bytes]] = []
    for i in range(300):
        value = b"%04d" % i + b"." * 40
        if i % 50 == 7:
            future = await producer.send("a", value, key=b"k%d" % i)
        elif i % 50 == 9:
            future = await producer.send("a", value, partition=2)
        else:
            future = await producer.send("a", value)
        sent.append((future, value))
    await producer.flush()
    for future, value in sent:
        meta = future.result()
        assert leader.logs["a", meta.partition][meta.offset] == value
    assert sum(len(log) for log in leader.logs.values()) == 300
    used = {future.result().partition for future, _ in sent}
    assert used == {0, 1, 2}  # full batches moved the sticky partition on
    assert producer._lanes  # the fast path was taken
    await producer.stop()


async def test_keyed_records_land_where_their_key_says_with_their_keys() -> None:
    """The keyed fast path (a bytes key the partitioner has seen, onto its partition's open
    batch): every record lands on murmur2(key) % partitions, in send order per
    partition, with its key, at the offset its future says; keyless ones keep sticking."""
    tps = {TopicPartition("a", p): 1 for p in range(5)}
    cluster = ScriptedCluster(tps)
    leader = Leader()
    cluster.answers = [leader] * 1_000
    producer = await started(cluster, batch_size=2_000, linger_ms=5, acks=1)
    sent: list[tuple[Any, bytes | None, bytes]] = []
    for i in range(2_000):
        key = None if i % 10 == 3 else b"user-%d" % (i % 37)
        value = b"%05d" % i + b"." * 30
        sent.append((await producer.send("a", value, key=key), key, value))
    assert producer._keyed  # the keyed fast path was taken
    await producer.flush()
    for future, key, value in sent:
        meta = future.result()
        assert leader.logs["a", meta.partition][meta.offset] == value
        assert leader.keys["a", meta.partition][meta.offset] == key
        if key is not None:
            assert meta.partition == partition_for_key(key, 5)
    for log in leader.logs.values():  # in send order within each partition
        assert log == sorted(log)  # type: ignore[type-var]
    assert sum(len(log) for log in leader.logs.values()) == 2_000
    await producer.stop()


async def test_no_keyed_fast_path_when_keys_are_ignored_or_serialized() -> None:
    cluster = ScriptedCluster({TopicPartition("a", p): 1 for p in range(4)})
    producer = await started(cluster, linger_ms=60_000, partitioner_ignore_keys=True)
    futures = [await producer.send("a", b"v", key=b"k%d" % i) for i in range(20)]
    assert not producer._keyed
    assert len({f._batch.tp for f in futures}) == 1  # the keys are ignored: one sticky
    await producer.stop()
    producer = await started(
        ScriptedCluster({TopicPartition("a", p): 1 for p in range(4)}),
        linger_ms=60_000,
        key_serializer=lambda key: key.encode(),
    )
    for i in range(5):
        await producer.send("a", b"v", key=f"k{i % 2}")
    assert not producer._keyed
    await producer.stop()


def _grow(cluster: ScriptedCluster, topic: str, count: int) -> None:
    """The topic now has ``count`` partitions (CreatePartitions), as a refresh learns it."""
    grown = ScriptedCluster({TopicPartition(topic, p): 1 for p in range(count)})
    cluster.metadata = grown.metadata
    for callback in list(cluster.on_update):
        callback(cluster.metadata)


def _key(below: int, count: int, *, low: bool) -> bytes:
    """A key whose partition among ``count`` is below ``below`` (low) or not."""
    for i in range(10_000):
        key = b"key-%d" % i
        if (partition_for_key(key, count) < below) == low:
            return key
    raise AssertionError("no such key")


async def test_keyed_records_after_partitions_were_added_go_by_the_new_count() -> None:
    """Review 95: after partitions were added, a keyed record going the whole way to an
    old partition kept the topic's old (short) partitions list beside the new count; a
    later key of a new partition, once cached, indexed past it (IndexError)."""
    cluster = ScriptedCluster({TopicPartition("a", p): 1 for p in range(4)})
    producer = await started(cluster, linger_ms=60_000)
    await producer.send("a", b"v", key=b"first")
    _grow(cluster, "a", 8)
    low, high = _key(4, 8, low=True), _key(4, 8, low=False)
    for key in (low, high, high, low):
        future = await producer.send("a", b"v", key=key)
        assert future._batch.tp.partition == partition_for_key(key, 8)
    assert producer._keyed["a"][0] == 8
    await producer.stop()


async def test_a_send_that_waited_across_a_metadata_update_registers_no_lane() -> None:
    """Review 95: a keyed send waiting for buffer space while partitions were added (the
    lanes dropped) registered the old partition count once it went on: later records of
    its key went by the old count, where the whole path uses the new one."""
    cluster = ScriptedCluster({TopicPartition("a", p): 1 for p in range(4)})
    cluster.release.clear()  # Produce answers held: the buffer stays full
    producer = await started(cluster, linger_ms=60_000, buffer_memory=2_000, batch_size=16_384)
    key = next(
        b"k%d" % i
        for i in range(10_000)
        if partition_for_key(b"k%d" % i, 4) != partition_for_key(b"k%d" % i, 8)
    )
    filler = producer.create_batch()  # sendable at once (a complete batch)
    filler.append(key=None, value=b"x" * 1_500, timestamp=None)
    await producer.send_batch(filler, "a", partition=0)
    waiting = asyncio.create_task(producer.send("a", b"v" * 600, key=key))  # no room: waits
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done() and producer._waiting == 1
    _grow(cluster, "a", 8)  # partitions added meanwhile: the lanes go
    assert not producer._keyed
    cluster.release.set()  # the filler is answered: room again
    await asyncio.wait_for(waiting, 5)
    assert not producer._keyed  # what that send read before its wait may be stale
    for _ in range(3):
        later = await producer.send("a", b"w", key=key)
        assert later._batch.tp.partition == partition_for_key(key, 8)
    await producer.stop()


async def test_no_fast_path_once_stopping_or_with_serializers_or_transactions() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    producer = await started(cluster, linger_ms=60_000)
    await producer.send("a", b"x")
    assert producer._lanes
    await producer.stop()
    with pytest.raises(ClientClosedError):
        await producer.send("a", b"y")

    seen: list[object] = []

    def serialize(value: object) -> bytes:
        seen.append(value)
        return b"s"

    producer = await started(
        ScriptedCluster({TopicPartition("a", 0): 1}), value_serializer=serialize
    )
    for _ in range(3):
        await producer.send("a", b"x")
    assert seen == [b"x"] * 3 and not producer._lanes
    await producer.stop()


async def test_the_fast_path_leaves_too_large_records_and_a_full_buffer_to_send() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.release.clear()
    producer = await started(
        cluster, max_request_size=1_000, batch_size=100_000, buffer_memory=3_000, max_block_ms=100
    )
    await producer.send("a", b"x")
    assert producer._lanes
    with pytest.raises(MessageTooLargeError, match="max_request_size=1000"):
        await producer.send("a", b"x" * 990)
    with pytest.raises(RequestTimedOutError, match="no room in the producer's buffer"):
        for _ in range(100):
            await producer.send("a", b"x" * 100)
    assert producer._accumulator.buffered_bytes <= 3_000
    cluster.release.set()
    await producer.stop()


async def _partitions_of_200(*, fast: bool) -> list[int]:
    """The partition of each of 200 keyless records (50 bytes, 15 to a batch): with only
    a value (the fast path), or with a timestamp too (send()'s whole way)."""
    cluster = ScriptedCluster({TopicPartition("a", p): 1 for p in range(4)})
    producer = await started(cluster, batch_size=1_000, linger_ms=60_000)
    producer._partitioner._rng = random.Random(1)  # the same choices for both runs
    futures = []
    for _ in range(200):
        if fast:
            futures.append(await producer.send("a", b"." * 50))
        else:
            now_ms = time.time_ns() // 1_000_000
            futures.append(await producer.send("a", b"." * 50, timestamp_ms=now_ms))
    partitions = [f._batch.tp.partition for f in futures]
    await producer.stop()
    return partitions


async def test_the_fast_path_moves_to_a_new_sticky_partition_when_the_slow_path_does() -> None:
    """Review 90: the 16th record does not fit the sticky partition's batch: append()
    closes it (the partitioner forgets its sticky partition) and opens a new batch on the
    same partition for it. That batch must not become the topic's lane, or the records
    after it would go on filling the old partition where the partitioner picks anew."""
    slow = await _partitions_of_200(fast=False)
    fast = await _partitions_of_200(fast=True)
    assert slow[15] == slow[0] != slow[16]  # the slow path: a new partition from record 17
    assert fast == slow


def _fill(
    accumulator: RecordAccumulator,
    keys: list[bytes | None],
    values: list[bytes],
    stamps: list[int],
    headers: list[list[tuple[str, bytes | None]] | None] | None = None,
) -> list[Any]:
    """Each record by append_to() onto the partition's open batch when it takes it, else
    by append(), as the producer does (a record with headers: append() at once)."""
    tp = TopicPartition("a", 0)
    futures = []
    for at, (key, value, stamp) in enumerate(zip(keys, values, stamps, strict=True)):
        batch = accumulator.open_batches.get(tp)
        header = None if headers is None else headers[at]
        future = None
        if batch is not None and header is None:
            future = accumulator.append_to(batch, value, stamp, key)
            if future is not None:  # never past buffer_memory, room taken ahead included
                assert accumulator.buffered_bytes <= accumulator.buffer_memory
        if future is None:
            future = accumulator.append(tp, key, value, header, stamp)
        futures.append(future)
    return futures


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=80)),
            st.binary(max_size=300),
            st.integers(0, 20_000),
        ),
        min_size=1,
        max_size=120,
    ),
    st.integers(200, 3_000),
)
@settings(max_examples=150, deadline=None)
def test_append_to_fills_batches_exactly_as_append(
    records: list[tuple[bytes | None, bytes, int]], batch_size: int
) -> None:
    """Review 90: the fast path's room check and accounting are append()'s: the same
    batches, bounds, bytes held and encoded records, for records with and without keys
    (the keyed fast path), of any size, and timestamps spread over more than 8 s (the
    wider timestamp delta)."""
    asyncio.run(_fill_both(records, batch_size))  # a batch needs a running loop (its future)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, None, None, b"k", "headers"]),
            st.sampled_from([b"", b"a" * 7, b"b" * 55, b"c" * 56, b"d" * 100, b"e" * 8180]),
            # ms after the record before: mostly runs of like records, some at the edge
            # of a batch's 8,192 ms from its first, some back in time
            st.sampled_from([0, 0, 0, 1, 2, 4095, 4097, 8191, 8192, 9000, -1]),
            st.integers(1, 300),  # how many like it in a row
        ),
        max_size=20,
    ),
    st.integers(200, 300_000),
    st.one_of(st.none(), st.integers(0, 400_000)),
)
@example(  # past 8,192 records in a batch (three-byte offset deltas), full or not
    [(None, b"", 0, 400)] * 30, 300_000, None
)
@example([(None, b"", 0, 400)] * 30, 100_000, None)
@settings(max_examples=150, deadline=None)  # (the file's 20 s limit: 5 s on a loaded 2-core VM)
def test_append_to_runs_fill_batches_exactly_as_append(
    runs: list[tuple[bytes | str | None, bytes, int, int]],
    batch_size: int,
    buffer_memory: int | None,
) -> None:
    """The room append_to() takes ahead for a run of keyless records of one size
    (LANE_RECORDS at a time) leaves the batches, their bounds, the bytes held and the
    encoded records append()'s, however the run ends (a key, headers, another size, a
    full batch, a full buffer, a timestamp 8 s on or back in time, 8,192 records)."""
    records: list[tuple[bytes | None, bytes, int, list[tuple[str, bytes | None]] | None]] = []
    stamp = 0
    for key, value, step, count in runs:
        for _ in range(count):
            if key == "headers":
                records.append((None, value, stamp, [("h", b"v")]))
            else:
                assert not isinstance(key, str)
                records.append((key, value, stamp, None))
        stamp += step
    asyncio.run(_fill_both(records, batch_size, buffer_memory))


async def _fill_both(
    records: Sequence[
        tuple[bytes | None, bytes, int] | tuple[bytes | None, bytes, int, list[Any] | None]
    ],
    batch_size: int,
    buffer_memory: int | None = None,
) -> None:
    keys = [record[0] for record in records]
    values = [record[1] for record in records]
    stamps = [1_000_000 + record[2] for record in records]
    headers = [record[3] if len(record) > 3 else None for record in records]  # type: ignore[misc]
    slow = RecordAccumulator(batch_size=batch_size, clock=lambda: 0.0)
    fast = RecordAccumulator(batch_size=batch_size, clock=lambda: 0.0)
    if buffer_memory is not None:  # append_to() leaves the record to append() past it
        fast.buffer_memory = buffer_memory
    by_append = [
        slow.append(TopicPartition("a", 0), k, v, h, t)
        for k, v, t, h in zip(keys, values, stamps, headers, strict=True)
    ]
    by_lane = _fill(fast, keys, values, stamps, headers)
    # the fast path takes room ahead for runs of like records: never less than append()
    # counts, and at most LANE_RECORDS records' more per open batch, each counted at the
    # run's largest size (twice the larger of the two records that began it, at most)
    open_batches = len(fast.open_batches)
    assert slow.buffered_bytes <= fast.buffered_bytes
    widest = max((len(v) + len(k or b"") for k, v in zip(keys, values, strict=True)), default=0)
    assert fast.buffered_bytes <= slow.buffered_bytes + open_batches * LANE_RECORDS * (
        2 * widest + RECORD_OVERHEAD_BOUND + HELD_PER_RECORD
    )
    assert fast.buffered_bytes - fast.taken_ahead() == slow.buffered_bytes
    # given back, what is left counts as append() counts, record by record, while open
    fast.give_back_room()

    def counts(accumulator: RecordAccumulator) -> list[tuple[int, int, int]]:
        return [(b.count, b.written, b.size_bound) for b in accumulator.open_batches.values()]

    assert counts(slow) == counts(fast)
    assert slow.buffered_bytes == fast.buffered_bytes
    for accumulator, futures in ((slow, by_append), (fast, by_lane)):
        for batch in {id(f._batch): f._batch for f in futures}.values():
            accumulator._close(batch)
    assert [bytes(f._batch.payload) for f in by_append] == [
        bytes(f._batch.payload) for f in by_lane
    ]

    def shape(futures: list[Any]) -> list[tuple[int, int, int, int]]:
        """Per record: its batch's ordinal, its index there, and the batch's bounds."""
        ordinals: dict[int, int] = {}
        return [
            (
                ordinals.setdefault(id(f._batch), len(ordinals)),
                f._index,
                f._batch.written,
                f._batch.size_bound,
            )
            for f in futures
        ]

    assert shape(by_append) == shape(by_lane)
    assert slow.buffered_bytes == fast.buffered_bytes


async def test_room_taken_ahead_stops_at_the_offset_delta_widths_and_is_given_back() -> None:
    """append_to() takes room for records whose offset deltas stay one width (up to
    8,192 records, then up to 2**20), counted as append() counts them, and gives back
    exactly what it took."""
    accumulator = RecordAccumulator(batch_size=10**9, clock=lambda: 0.0)
    accumulator.append(TopicPartition("a", 0), None, b"", None, 1_000)
    batch = accumulator.open_batches[TopicPartition("a", 0)]
    for count, most, per_record in (
        (1, LANE_RECORDS, 9),
        (8_100, 92, 9),
        (8_191, 1, 9),
        (8_192, LANE_RECORDS, 10),
        ((1 << 20) - 2, 2, 10),
        (1 << 20, 0, 10),
    ):
        batch.count = count
        before = (batch.written, batch.size_bound, accumulator.buffered_bytes)
        accumulator._reserve(batch, 0, 0)
        assert batch.left == most
        assert batch.written == before[0] + most * per_record
        accumulator._unreserve(batch)
        assert (batch.written, batch.size_bound, accumulator.buffered_bytes) == before


async def test_the_lanes_go_when_stop_begins_the_sender_fails_or_metadata_changes() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    cluster.release.clear()  # answers wait: stop() waits in its flush
    producer = await started(cluster, linger_ms=60_000)
    first = await producer.send("a", b"x")
    assert producer._lanes
    stopping = asyncio.ensure_future(producer.stop())
    await asyncio.sleep(0)  # stop() began: its flush's sender pass has not run yet
    assert first._batch.is_open
    with pytest.raises(ClientClosedError, match="stopping"):
        await producer.send("a", b"y")  # not onto the batch still open
    cluster.release.set()
    await stopping

    producer = await started(ScriptedCluster({TopicPartition("a", 0): 1}), linger_ms=60_000)
    await producer.send("a", b"x")
    await producer.send("a", b"x", key=b"k")
    assert producer._keyed
    producer._metadata_updated(producer._cluster.metadata)  # a topic made again, say
    assert not producer._lanes and not producer._keyed
    await producer.send("a", b"x")
    await producer.send("a", b"x", key=b"k")
    assert producer._lanes and producer._keyed
    producer._accumulator.ready = None  # type: ignore[assignment, method-assign] # a bug
    producer._sender_pass()  # the sender fails: every record so far fails with it
    assert producer._sender_error is not None and not producer._lanes and not producer._keyed
    with pytest.raises(ClientClosedError, match="sender failed"):
        await producer.send("a", b"z")
    with pytest.raises(ClientClosedError, match="sender failed"):
        await producer.send("a", b"z", key=b"k")
    assert metric(producer, "record-error-total") == 4
    await producer.stop()


async def test_a_batch_failed_twice_is_counted_once() -> None:
    accumulator = RecordAccumulator(batch_size=1_000, clock=lambda: 0.0)
    metrics = ProducerMetrics(Metrics())
    accumulator.metrics = metrics
    future = accumulator.append(TopicPartition("a", 0), None, b"x", None, 1_000)
    accumulator.fail(future._batch, NotLeaderOrFollowerError("gone"))
    accumulator.fail(future._batch, NotLeaderOrFollowerError("again"))
    assert metrics.errors.total == 1


def test_a_sensors_first_sample_starts_at_its_first_record_as_kafkas() -> None:
    """Review 90: Kafka's SampledStat makes its first sample at the first record (or
    read), not when it is made: a sensor made 29 s before its first value neither
    expires it 29 s early nor divides its rate by 29 s more."""
    clock = Clock()
    sensor = Sensor(samples=2, window_ms=30_000, clock=clock)
    clock.now += 29_000
    sensor.record(600)
    clock.now += 1_000
    assert sensor.rate() == pytest.approx(600 / 31)  # 1 s + one whole window
    clock.now += 31_000  # 32 s after the record: its sample lives 60 s
    assert sensor.avg() == sensor.max() == 600
    clock.now += 28_000  # 60 s after it: expired, exactly at samples x window (Kafka's >=)
    assert math.isnan(sensor.avg())


def test_a_read_restarts_an_expired_sample_as_kafkas_purge_does() -> None:
    """Review 91: Kafka's purgeObsoleteSamples resets an obsolete sample to start at the
    read; a value recorded within a window of that read goes into it, and the rate spans
    from there."""
    sensor = Sensor(samples=2, window_ms=30_000, clock=lambda: 0.0)
    sensor.record(1.0, now_ms=0.0)
    assert sensor.rate(now_ms=70_000.0) == 0  # obsolete: restarted at 70 s
    sensor.record(1.0, now_ms=99_000.0)  # 29 s after: in that sample
    assert sensor.rate(now_ms=99_000.0) == pytest.approx(1 / 59)  # 29 s + one window
    assert sensor.total == 2 and sensor.count == 2
