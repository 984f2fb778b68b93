"""The client library against real brokers: what a user of Producer, Consumer and Admin sees.

Most tests share one three-broker cluster (module scope: starting one costs seconds) and
each uses topics of its own; tests that change the brokers (settings, restarts) start
their own.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from client import (
    Admin,
    ConfigurationError,
    Consumer,
    ConsumerRecord,
    NewPartitions,
    NewTopic,
    NoOffsetForPartitionError,
    OffsetAndTimestamp,
    OffsetSpec,
    Producer,
    RecordMetadata,
    TopicPartition,
)
from client.localcluster import ZooKeeperServer
from protocol.errors import (
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    MessageTooLargeError,
    NetworkError,
    OffsetOutOfRangeError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from tests.integration.conftest import Cluster, module_cluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def shared(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three brokers for the whole module, under a ZooKeeper chroot of their own."""
    yield from module_cluster(zookeeper, tmp_path_factory.mktemp("shared"), "client")


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def _create(bootstrap: str, partitions: int = 3, **configs: str) -> str:
    name = _name()
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics(
            [NewTopic(name, partitions, 1, {k.replace("_", "."): v for k, v in configs.items()})]
        )
    return name


async def _consume(
    bootstrap: str, topic: str, count: int, timeout_s: float = 20, **kwargs: object
) -> dict[int, list[ConsumerRecord]]:
    """Read ``count`` records of ``topic`` from the beginning, by partition."""
    got: dict[int, list[ConsumerRecord]] = {}
    total = 0
    deadline = time.monotonic() + timeout_s
    async with Consumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **kwargs
    ) as consumer:
        while total < count:
            assert time.monotonic() < deadline, f"only {total} of {count} records arrived"
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                got.setdefault(tp.partition, []).extend(records)
                total += len(records)
    return got


def _assert_read_back(
    sent: list[tuple[bytes | None, bytes, RecordMetadata]],
    got: dict[int, list[ConsumerRecord]],
) -> None:
    """Every acknowledged record is read back at its offset, each partition in send order."""
    by_offset = {(p, r.offset): r for p, records in got.items() for r in records}
    for key, value, meta in sent:
        record = by_offset[(meta.partition, meta.offset)]
        assert (record.key, record.value) == (key, value)
    for partition, records in got.items():
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records))), partition
        in_send_order = [v for _, v, m in sent if m.partition == partition]
        assert [r.value for r in records] == in_send_order


# --- producing and consuming ------------------------------------------------------------


@pytest.mark.parametrize(
    ("acks", "compression"),
    [
        (1, None),
        ("all", None),
        (-1, "gzip"),
        (1, "snappy"),
        ("all", "lz4"),
        (1, "zstd"),
    ],
)
async def test_acked_records_are_read_back_at_their_offsets_in_order(
    shared: Cluster, acks: int | str, compression: str | None
) -> None:
    topic = await _create(shared.bootstrap)
    rng = random.Random(f"{acks}{compression}")
    sent = []
    async with Producer(
        bootstrap_servers=shared.bootstrap,
        acks=acks,
        compression_type=compression,
        linger_ms=5,
        batch_size=4_096,
    ) as producer:
        pending = []
        for i in range(600):
            key = None if i % 3 == 0 else b"k%d" % rng.randrange(40)
            value = b"value-%d-" % i + rng.randbytes(rng.randrange(0, 200))
            pending.append((key, value, await producer.send(topic, value, key=key)))
        for key, value, future in pending:
            sent.append((key, value, await future))
    assert {m.partition for _, _, m in sent} == {0, 1, 2}
    _assert_read_back(sent, await _consume(shared.bootstrap, topic, len(sent)))


@pytest.mark.parametrize("acks", [0, 1, "all"])
async def test_ten_thousand_keyed_records_on_six_partitions_over_three_brokers(
    shared: Cluster, acks: int | str
) -> None:
    """Issue 4's proof: leaders on every broker; every record back, per partition in send
    order, at the offset the producer was told; each key on Kafka's murmur2 partition."""
    topic = await _create(shared.bootstrap, partitions=6)
    async with Admin(bootstrap_servers=shared.bootstrap) as admin:
        (description,) = await admin.describe_topics([topic])
    assert {p.leader for p in description.partitions} == {1, 2, 3}
    sent = []
    async with Producer(bootstrap_servers=shared.bootstrap, acks=acks, linger_ms=5) as producer:
        pending = []
        for i in range(10_000):
            key = b"key-%d" % (i % 500)
            pending.append((key, b"%d" % i, await producer.send(topic, b"%d" % i, key=key)))
        for key, value, future in pending:
            sent.append((key, value, await future))
    got = await _consume(shared.bootstrap, topic, len(sent))
    for partition, records in got.items():
        assert [r.offset for r in records] == list(range(len(records)))  # dense, in order
        for record in records:
            assert (kafka_python_murmur2(record.key) & 0x7FFFFFFF) % 6 == partition
        values = [int(r.value) for r in records]
        assert values == sorted(values)  # send order within the partition
    if acks == 0:
        assert {m.offset for _, _, m in sent} == {-1}  # no answer, so no offsets to check
        assert sum(len(r) for r in got.values()) == 10_000
    else:
        _assert_read_back(sent, got)


async def test_acks_0_resolves_with_offset_minus_one_and_the_records_arrive(
    shared: Cluster,
) -> None:
    topic = await _create(shared.bootstrap)
    # acks=0 hears of no refusal: a leader that has not applied its LeaderAndIsr yet
    # refuses a write (NOT_LEADER) and the records are gone, as in Kafka; so each leader
    # answers first (ListOffsets is the leader's alone, and retried until it is)
    async with Consumer(bootstrap_servers=shared.bootstrap) as ready:
        await ready.end_offsets([TopicPartition(topic, p) for p in range(3)])
    async with Producer(bootstrap_servers=shared.bootstrap, acks=0, linger_ms=2) as producer:
        futures = [await producer.send(topic, b"%d" % i, key=b"k%d" % (i % 5)) for i in range(300)]
        metas = await asyncio.gather(*futures)
    assert {m.offset for m in metas} == {-1}
    got = await _consume(shared.bootstrap, topic, 300)
    for records in got.values():  # per key, in the order sent
        for k in range(5):
            mine = [int(r.value) for r in records if r.key == b"k%d" % k]
            assert mine == sorted(mine)
    assert sorted(int(r.value) for rs in got.values() for r in rs) == list(range(300))


async def test_equal_keys_land_where_kafka_python_puts_them(shared: Cluster) -> None:
    topic = await _create(shared.bootstrap, partitions=7)
    keys = [b"user-%d" % i for i in range(60)] + [b"", b"\x00\xff" * 9]
    async with Producer(bootstrap_servers=shared.bootstrap, linger_ms=1) as producer:
        assert await producer.partitions_for(topic) == set(range(7))
        futures = [await producer.send(topic, b"v", key=k) for k in keys for _ in range(2)]
        metas = await asyncio.gather(*futures)
    for key, (first, second) in zip(keys, zip(metas[::2], metas[1::2], strict=True), strict=True):
        expected = (kafka_python_murmur2(key) & 0x7FFFFFFF) % 7
        assert first.partition == second.partition == expected, key


async def test_a_custom_partitioner_places_the_records(shared: Cluster) -> None:
    """aiokafka's ``partitioner`` callable: given the serialized key, every partition and
    the available ones; the records land (and are read back) where it said."""
    topic = await _create(shared.bootstrap, partitions=5)

    def by_last_digit(key: bytes | None, every: Any, available: Any) -> int:
        return int(key[-1:]) % len(every) if key else available[0]

    async with Producer(
        bootstrap_servers=shared.bootstrap,
        key_serializer=str.encode,
        partitioner=by_last_digit,
    ) as producer:
        metas = [await producer.send_and_wait(topic, b"v", key=f"k{i}") for i in range(10)]
    assert [m.partition for m in metas] == [i % 5 for i in range(10)]
    async with Consumer(
        topic, bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest"
    ) as consumer:
        got: dict[int, list[bytes]] = {}
        async with asyncio.timeout(20):
            while sum(map(len, got.values())) < 10:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    got.setdefault(tp.partition, []).extend(r.key for r in records)
    assert got == {p: [b"k%d" % p, b"k%d" % (p + 5)] for p in range(5)}


async def test_headers_timestamps_and_serializers_round_trip(shared: Cluster) -> None:
    topic = await _create(shared.bootstrap, partitions=1)
    async with Producer(
        bootstrap_servers=shared.bootstrap,
        key_serializer=str.encode,
        value_serializer=lambda v: v.encode() if v is not None else None,
    ) as producer:
        a = await producer.send_and_wait(
            topic, "hello", key="k", timestamp_ms=1_600_000_000_123, headers=[("trace", b"x1")]
        )
        b = await producer.send_and_wait(topic, None, key="tombstone")
    assert (a.offset, a.timestamp, b.offset) == (0, 1_600_000_000_123, 1)
    got = await _consume(
        shared.bootstrap, topic, 2, key_deserializer=bytes.decode, value_deserializer=_maybe_str
    )
    first, second = got[0]
    assert (first.key, first.value, first.timestamp) == ("k", "hello", 1_600_000_000_123)
    assert first.headers == (("trace", b"x1"),)
    assert (second.key, second.value) == ("tombstone", None)


def _maybe_str(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


async def test_getone_getmany_and_async_for(shared: Cluster) -> None:
    topic = await _create(shared.bootstrap, partitions=2)
    async with Producer(bootstrap_servers=shared.bootstrap) as producer:
        for i in range(40):
            await producer.send(topic, b"%d" % i, partition=i % 2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with Consumer(
        bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest"
    ) as consumer:
        assert consumer.assignment() == set()
        consumer.assign([tp0, tp1])
        assert consumer.assignment() == {tp0, tp1}
        one = await asyncio.wait_for(consumer.getone(tp1), 10)
        assert (one.partition, one.offset, one.value) == (1, 0, b"1")
        many = await consumer.getmany(tp0, timeout_ms=5_000, max_records=5)
        assert list(many) == [tp0]
        assert [r.value for r in many[tp0]] == [b"%d" % i for i in range(0, 10, 2)]
        seen = {0: [r.offset for r in many[tp0]], 1: [0]}
        async for record in consumer:
            seen[record.partition].append(record.offset)
            if sum(map(len, seen.values())) == 40:
                break
        assert seen == {0: list(range(20)), 1: list(range(20))}
        assert await consumer.position(tp0) == await consumer.position(tp1) == 20
        assert await consumer.getmany(timeout_ms=0) == {}  # nothing more, no waiting
        assert await consumer.getmany(timeout_ms=300) == {}
        assert topic in await consumer.topics()
        assert await consumer.partitions_for_topic(topic) == {0, 1}


async def test_pause_resume_and_highwater(shared: Cluster) -> None:
    """Kafka's pause(): a paused partition is not fetched and hands out nothing, its
    position and buffer stay; resume() hands out what was buffered and fetches again.
    highwater() is the lag's other end."""
    topic = await _create(shared.bootstrap, partitions=2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with Producer(bootstrap_servers=shared.bootstrap) as producer:
        for i in range(20):
            await producer.send(topic, b"%d" % i, partition=i % 2)
        async with Consumer(
            bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest"
        ) as consumer:
            consumer.assign([tp0, tp1])
            assert consumer.highwater(tp0) is None  # no answer yet
            first = await consumer.getmany(tp0, timeout_ms=5_000)
            assert [r.offset for r in first[tp0]] == list(range(10))
            assert consumer.highwater(tp0) == 10
            consumer.pause(tp1)  # tp1's records may be buffered already: they stay
            assert consumer.paused() == {tp1}
            for i in range(20, 30):
                await producer.send_and_wait(topic, b"%d" % i, partition=i % 2)
            seen: dict[TopicPartition, list[int]] = {tp0: [], tp1: []}
            while len(seen[tp0]) < 5:
                got = await consumer.getmany(timeout_ms=5_000)
                assert got and set(got) == {tp0}, got  # nothing of the paused one
                for tp, records in got.items():
                    seen[tp] += [r.offset for r in records]
            assert seen[tp0] == list(range(10, 15))
            assert await consumer.getmany(tp1, timeout_ms=300) == {}  # named: still none
            assert await consumer.position(tp1) == 0
            with pytest.raises(ValueError, match="not assigned"):
                consumer.pause(TopicPartition(topic, 7))
            consumer.resume(tp1)
            assert consumer.paused() == set()
            while len(seen[tp1]) < 15:
                got = await consumer.getmany(tp1, timeout_ms=5_000)
                assert got, "the resumed partition's records did not come"
                seen[tp1] += [r.offset for r in got[tp1]]
            assert seen[tp1] == list(range(15))  # from its position, once each, in order
            assert consumer.highwater(tp1) == 15


async def test_getmany_returns_at_most_max_poll_records(shared: Cluster) -> None:
    """Kafka's max.poll.records (default 500): a poll hands out that many at most, the
    rest at the next one, in order."""
    topic = await _create(shared.bootstrap, partitions=1)
    async with Producer(bootstrap_servers=shared.bootstrap, linger_ms=5) as producer:
        for i in range(1_200):
            await producer.send(topic, b"%d" % i)
        await producer.flush()
    async with Consumer(
        topic, bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest"
    ) as consumer:
        assert consumer.max_poll_records == 500
        offsets: list[int] = []
        sizes = []
        while len(offsets) < 1_200:
            got = await consumer.getmany(timeout_ms=5_000)
            assert got, "the records stopped coming"
            (records,) = got.values()
            sizes.append(len(records))
            offsets += [r.offset for r in records]
        assert max(sizes) == 500  # the limit bound (one fetch brings all 1,200)
        assert offsets == list(range(1_200))


async def test_seek_positions_and_offsets_for_times(shared: Cluster) -> None:
    topic = await _create(shared.bootstrap, partitions=1)
    tp = TopicPartition(topic, 0)
    base_ts = 1_700_000_000_000
    async with Producer(bootstrap_servers=shared.bootstrap, linger_ms=5) as producer:
        for i in range(30):
            await producer.send(topic, b"%d" % i, timestamp_ms=base_ts + 10 * i)
        await producer.flush()
    async with Consumer(bootstrap_servers=shared.bootstrap) as consumer:
        consumer.assign([tp])
        assert await consumer.position(tp) == 30  # "latest" by default
        assert await consumer.beginning_offsets([tp]) == {tp: 0}
        assert await consumer.end_offsets([tp]) == {tp: 30}
        found = await consumer.offsets_for_times({tp: base_ts + 95})
        assert found == {tp: OffsetAndTimestamp(10, base_ts + 100)}
        assert await consumer.offsets_for_times({tp: base_ts + 10_000}) == {tp: None}
        consumer.seek(tp, found[tp].offset)
        assert (await asyncio.wait_for(consumer.getone(), 10)).value == b"10"
        assert await consumer.position(tp) == 11
        await consumer.seek_to_beginning(tp)
        assert await consumer.position(tp) == 0
        assert (await asyncio.wait_for(consumer.getone(), 10)).offset == 0
        consumer.seek(tp, 25)
        assert [r.offset for r in (await consumer.getmany(timeout_ms=5_000))[tp]] == list(
            range(25, 30)
        )
        await consumer.seek_to_end()
        assert await consumer.position(tp) == 30
        async with Producer(bootstrap_servers=shared.bootstrap) as producer:
            await producer.send_and_wait(topic, b"later")
        assert (await asyncio.wait_for(consumer.getone(), 10)).value == b"later"


async def test_auto_offset_reset_none_and_out_of_range(shared: Cluster) -> None:
    topic = await _create(shared.bootstrap, partitions=1)
    tp = TopicPartition(topic, 0)
    async with Producer(bootstrap_servers=shared.bootstrap) as producer:
        for i in range(5):
            await producer.send(topic, b"%d" % i)
    async with Consumer(bootstrap_servers=shared.bootstrap, auto_offset_reset="none") as strict:
        strict.assign([tp])
        with pytest.raises(NoOffsetForPartitionError, match="seek"):
            await asyncio.wait_for(strict.getmany(timeout_ms=5_000), 10)
        strict.seek(tp, 2)
        assert [r.offset for r in (await strict.getmany(timeout_ms=5_000))[tp]] == [2, 3, 4]
    async with Consumer(
        bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest"
    ) as forgiving:
        forgiving.assign([tp])
        forgiving.seek(tp, 1_000)  # past the end: OFFSET_OUT_OF_RANGE, then "earliest"
        assert (await asyncio.wait_for(forgiving.getone(), 10)).offset == 0


async def test_a_record_over_max_message_bytes_fails_alone(shared: Cluster) -> None:
    topic = await _create(shared.bootstrap, partitions=2, max_message_bytes="2000")
    async with Producer(bootstrap_servers=shared.bootstrap, linger_ms=20) as producer:
        small = [await producer.send(topic, b"small-%d" % i, partition=0) for i in range(5)]
        big = await producer.send(topic, bytes(5_000), partition=0)  # same batch as small ones
        after = [await producer.send(topic, b"after-%d" % i, partition=0) for i in range(5)]
        elsewhere = await producer.send(topic, b"fine", partition=1)
        with pytest.raises(MessageTooLargeError):
            await big
        metas = await asyncio.gather(*small, *after)
        assert [m.offset for m in metas] == list(range(10))
        assert (await elsewhere).offset == 0
        with pytest.raises(MessageTooLargeError, match="max_request_size"):
            await producer.send(topic, bytes(2_000_000))  # refused before any request
    got = await _consume(shared.bootstrap, topic, 11)
    assert [r.value for r in got[0]] == [b"small-%d" % i for i in range(5)] + [
        b"after-%d" % i for i in range(5)
    ]


async def test_stop_flushes_what_was_sent(shared: Cluster) -> None:
    topic = await _create(shared.bootstrap, partitions=1)
    producer = Producer(bootstrap_servers=shared.bootstrap, linger_ms=10_000, batch_size=1 << 20)
    await producer.start()
    futures = [await producer.send(topic, b"%d" % i) for i in range(100)]
    assert not any(f.done() for f in futures)  # lingering: nothing sent yet
    await producer.stop()
    assert [f.result().offset for f in futures] == list(range(100))


async def test_send_validates_before_queueing(shared: Cluster) -> None:
    topic = await _create(shared.bootstrap, partitions=2)
    async with Producer(bootstrap_servers=shared.bootstrap) as producer:
        with pytest.raises(TypeError, match="value_serializer"):
            await producer.send(topic, "not bytes")
        with pytest.raises(TypeError, match="key"):
            await producer.send(topic, b"v", key=42)
        with pytest.raises(ValueError, match=r"partitions 0\.\.1"):
            await producer.send(topic, b"v", partition=2)
        for bad in (-1, 1.5, True, 2**63):
            with pytest.raises(ValueError, match=f"timestamp_ms={bad!r} is invalid"):
                await producer.send(topic, b"v", timestamp_ms=bad)
    with pytest.raises(ConfigurationError, match="acks"):
        Producer(bootstrap_servers=shared.bootstrap, acks=2)
    with pytest.raises(ConfigurationError, match="partition_assignment_strategy"):
        Consumer(
            topic,
            bootstrap_servers=shared.bootstrap,
            group_id="g",
            partition_assignment_strategy="x",
        )


@pytest.mark.parametrize(("acks", "compression"), [(1, None), ("all", None), ("all", "zstd")])
async def test_send_batch_records_are_read_back_at_their_offsets_in_order(
    shared: Cluster, acks: int | str, compression: str | None
) -> None:
    """Batches filled by the caller, interleaved with send()'s records on one partition and
    spread over the others: each batch's future gives its first record's offset, every
    record is read back there and after, in the order sent (idempotent with acks=all)."""
    topic = await _create(shared.bootstrap)
    rng = random.Random(f"batch{acks}{compression}")
    sent: list[tuple[bytes | None, bytes, RecordMetadata]] = []
    async with Producer(
        bootstrap_servers=shared.bootstrap,
        acks=acks,
        compression_type=compression,
        linger_ms=50,
        batch_size=4_096,
    ) as producer:
        pending: list[tuple[list[tuple[bytes | None, bytes]], asyncio.Future[RecordMetadata]]] = []
        for round_ in range(12):
            partition = round_ % 3
            batch = producer.create_batch()
            records = []
            while round_ % 3 != 2:  # record by record
                key = None if round_ % 2 else b"k%d" % len(records)  # keyed and keyless
                size = 50 if round_ % 4 < 2 else rng.randrange(0, 90)  # one shape, or many
                value = b"b%d-%d-" % (round_, len(records)) + rng.randbytes(size)
                if batch.append(key=key, value=value) is None:
                    break
                records.append((key, value))
            if round_ % 3 == 2:  # in bulk
                values = [b"e%d-%d-" % (round_, i) + rng.randbytes(40) for i in range(200)]
                keys = [b"k%d" % i for i in range(200)] if round_ % 2 == 0 else None
                taken = batch.extend(values, keys=keys)
                assert taken < 200  # it filled up
                records = [(None if keys is None else keys[i], values[i]) for i in range(taken)]
            assert batch.record_count() == len(records) > 10  # filled to batch_size
            pending.append((records, await producer.send_batch(batch, topic, partition=partition)))
            single = b"single-%d" % round_
            pending.append(
                ([(None, single)], await producer.send(topic, single, partition=partition))
            )
        for records, future in pending:
            first = await future
            for i, (key, value) in enumerate(records):
                sent.append((key, value, first._replace(offset=first.offset + i)))
    _assert_read_back(sent, await _consume(shared.bootstrap, topic, len(sent)))


async def test_a_send_batch_batch_over_max_message_bytes_is_split_and_lands_in_order(
    shared: Cluster,
) -> None:
    """The broker refuses the whole batch (MESSAGE_TOO_LARGE); the producer splits it until
    the halves fit, and every record lands once, in order, from the batch's first offset."""
    topic = await _create(shared.bootstrap, partitions=1, max_message_bytes="2000")
    values = [b"%04d" % i + bytes(96) for i in range(100)]  # ~11 KB in one batch
    async with Producer(bootstrap_servers=shared.bootstrap, batch_size=1 << 20) as producer:
        before = await producer.send_and_wait(topic, b"before", partition=0)
        batch = producer.create_batch()
        assert batch.extend(values) == 100
        first = await (await producer.send_batch(batch, topic, partition=0))
        after = await producer.send_and_wait(topic, b"after", partition=0)
    assert (before.offset, first.offset, after.offset) == (0, 1, 101)
    got = await _consume(shared.bootstrap, topic, 102)
    assert [r.value for r in got[0]] == [b"before", *values, b"after"]


async def test_a_buffer_changed_after_send_does_not_change_the_record(shared: Cluster) -> None:
    """A batch is encoded when it closes, after send() returned: what was sent is what the
    buffer held at send(), as in Kafka (which serializes at send)."""
    topic = await _create(shared.bootstrap, partitions=1)
    buffer = bytearray(b"original")
    async with Producer(bootstrap_servers=shared.bootstrap, linger_ms=50) as producer:
        future = await producer.send(topic, buffer, key=memoryview(buffer), partition=0)
        buffer[:] = b"changed!"
        await future
    got = await _consume(shared.bootstrap, topic, 1)
    assert (got[0][0].key, got[0][0].value) == (b"original", b"original")


async def test_memoryviews_of_wider_items_are_sent_as_their_bytes(shared: Cluster) -> None:
    """len() of a memoryview counts items: what is sent is its bytes, not a record whose
    length field disagrees with them (which the broker would store and no one could read)."""
    topic = await _create(shared.bootstrap, partitions=1)
    wide = memoryview(array("i", [1, 2, 3]))
    async with Producer(bootstrap_servers=shared.bootstrap) as producer:
        await producer.send_and_wait(topic, wide, key=wide[1:], partition=0)
        batch = producer.create_batch()
        batch.append(value=wide, headers=[("h", wide)])
        await (await producer.send_batch(batch, topic, partition=0))
    got = await _consume(shared.bootstrap, topic, 2)
    assert [(r.key, r.value) for r in got[0]] == [
        (wide[1:].tobytes(), wide.tobytes()),
        (None, wide.tobytes()),
    ]
    assert got[0][1].headers == (("h", wide.tobytes()),)


async def test_send_batch_refuses_what_it_cannot_send_and_the_batch_stays_usable(
    shared: Cluster,
) -> None:
    topic = await _create(shared.bootstrap, partitions=2)
    async with Producer(
        bootstrap_servers=shared.bootstrap, max_request_size=10_000, batch_size=1 << 20
    ) as producer:
        empty = producer.create_batch()
        with pytest.raises(ValueError, match="the batch is empty"):
            await producer.send_batch(empty, topic, partition=0)
        batch = producer.create_batch()
        batch.append(value=b"first", timestamp=1_700_000_000_000)
        with pytest.raises(ValueError, match=r"partitions 0\.\.1"):
            await producer.send_batch(batch, topic, partition=2)
        with pytest.raises(TypeError, match="partition must be an int"):
            await producer.send_batch(batch, topic, partition="0")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="takes a batch from create_batch"):
            await producer.send_batch([b"x"], topic, partition=0)  # type: ignore[arg-type]
        assert batch.append(value=b"second") is not None  # still open after the refusals
        first = await (await producer.send_batch(batch, topic, partition=1))
        assert (first.partition, first.offset, first.timestamp) == (1, 0, 1_700_000_000_000)
        assert batch.append(value=b"late") is None  # sent: it takes no more
        with pytest.raises(ValueError, match="sent already"):
            await producer.send_batch(batch, topic, partition=1)
        big = producer.create_batch()
        for _ in range(200):
            big.append(value=bytes(100))
        with pytest.raises(MessageTooLargeError, match="max_request_size=10000"):
            await producer.send_batch(big, topic, partition=0)
        assert (await producer.send_and_wait(topic, b"after", partition=0)).offset == 0
    got = await _consume(shared.bootstrap, topic, 3)
    assert [r.value for r in got[1]] == [b"first", b"second"]
    assert [r.value for r in got[0]] == [b"after"]


# --- admin ------------------------------------------------------------------------------


async def test_admin_topics_cluster_and_configs(shared: Cluster) -> None:
    name = _name()
    async with Admin(bootstrap_servers=shared.bootstrap) as admin:
        await admin.create_topics([NewTopic(name, 4, 1, {"retention.ms": "60000"})])
        with pytest.raises(TopicAlreadyExistsError, match=name):
            await admin.create_topics([NewTopic(name, 1, 1)])
        with pytest.raises(InvalidPartitionsError):
            await admin.create_topics([NewTopic(_name(), 0, 1)])
        assert name in await admin.list_topics()
        assert (await admin.list_topics()) == sorted(await admin.list_topics())
        (described,) = await admin.describe_topics([name])
        assert [p.partition for p in described.partitions] == [0, 1, 2, 3]
        assert all(p.leader in (1, 2, 3) and p.replicas == [p.leader] for p in described.partitions)
        cluster = await admin.describe_cluster()
        assert [b.node_id for b in cluster.brokers] == [1, 2, 3]
        assert cluster.controller_id in (1, 2, 3) and cluster.cluster_id
        configs = await admin.describe_configs(name)
        assert configs["retention.ms"].value == "60000"
        assert configs["retention.ms"].source == "DYNAMIC_TOPIC_CONFIG"
        assert configs["segment.bytes"].source in ("DEFAULT_CONFIG", "STATIC_BROKER_CONFIG")
        await admin.delete_topics([name])
        assert name not in await admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            await admin.delete_topics([name])
        with pytest.raises(UnknownTopicOrPartitionError, match="headwater topics create"):
            await admin.describe_topics([name])


# --- errors a user meets ----------------------------------------------------------------


async def test_no_reachable_bootstrap_server_is_a_clear_network_error() -> None:
    for make in (
        lambda: Producer(bootstrap_servers="127.0.0.1:1"),
        lambda: Consumer("t", bootstrap_servers=["127.0.0.1:1"]),
        lambda: Admin(bootstrap_servers="127.0.0.1:1"),
    ):
        client = make()
        started = time.monotonic()
        with pytest.raises(
            NetworkError, match=r"could not reach any bootstrap server \(127.0.0.1:1\)"
        ):
            await client.start()
        assert time.monotonic() - started < 5
    with pytest.raises(ConfigurationError, match="host:port"):
        Producer(bootstrap_servers="localhost:notaport")


async def test_unknown_topic_without_auto_create_is_a_typed_error(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, settings={"auto.create.topics.enable": "false"})
    async with Producer(bootstrap_servers=cluster.bootstrap) as producer:
        started = time.monotonic()
        with pytest.raises(UnknownTopicOrPartitionError, match="headwater topics create nope"):
            await producer.send("nope", b"v")
        assert time.monotonic() - started < 5  # fails fast, not after max_block_ms
    with pytest.raises(UnknownTopicOrPartitionError, match="headwater topics create nope"):
        async with Consumer("nope", bootstrap_servers=cluster.bootstrap):
            pass
    real = await _create(cluster.bootstrap, partitions=1)
    async with Producer(bootstrap_servers=cluster.bootstrap) as producer:
        await producer.send_and_wait(real, b"here")
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition("nope", 0), TopicPartition(real, 0)])
        with pytest.raises(UnknownTopicOrPartitionError, match="does not exist"):
            await asyncio.wait_for(c.getmany(TopicPartition("nope", 0), timeout_ms=5_000), 10)
        # the missing topic does not hold up the partitions that exist
        got = await asyncio.wait_for(c.getmany(TopicPartition(real, 0), timeout_ms=5_000), 10)
        assert [r.value for r in got[TopicPartition(real, 0)]] == [b"here"]
        with pytest.raises(UnknownTopicOrPartitionError):  # and it is said again, not dropped
            await asyncio.wait_for(c.getmany(timeout_ms=5_000), 10)


async def test_auto_create_on_first_send(shared: Cluster) -> None:
    topic = _name()
    async with Producer(bootstrap_servers=shared.bootstrap) as producer:
        meta = await producer.send_and_wait(topic, b"first")
    assert meta.offset == 0
    got = await _consume(shared.bootstrap, topic, 1)
    assert [r.value for rs in got.values() for r in rs] == [b"first"]


# --- brokers coming and going ------------------------------------------------------------


async def test_producer_and_consumer_carry_on_across_a_broker_restart(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3)
    bootstrap = cluster.bootstrap  # stays valid in part: the restarted broker changes port
    topic = await _create(bootstrap, partitions=3)
    sent: list[tuple[bytes | None, bytes, asyncio.Future[RecordMetadata]]] = []
    live: dict[int, list[ConsumerRecord]] = {0: [], 1: [], 2: []}

    async def consume(consumer: Consumer) -> None:
        async for record in consumer:
            live[record.partition].append(record)

    async with (
        Producer(
            bootstrap_servers=bootstrap, linger_ms=2, retry_backoff_ms=50, request_timeout_ms=5_000
        ) as producer,
        Consumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", retry_backoff_ms=50
        ) as consumer,
    ):
        reading = asyncio.create_task(consume(consumer))

        async def send(n: int) -> None:
            for i in range(n):
                value = b"%d" % len(sent)
                sent.append((None, value, await producer.send(topic, value, partition=i % 3)))
                await asyncio.sleep(0.002)

        await send(100)
        async with Admin(bootstrap_servers=bootstrap) as admin:
            (described,) = await admin.describe_topics([topic])
        assert 2 in {p.leader for p in described.partitions}  # 3 partitions over 3 brokers
        loop = asyncio.get_running_loop()
        stopped = loop.run_in_executor(None, cluster.brokers[2].stop)
        await send(200)  # while it stops
        assert await stopped == 0
        await send(30)  # while it is away
        waiting = [f for _, _, f in sent[-30:] if not f.done()]
        assert waiting  # its partition's records wait for it...
        await loop.run_in_executor(None, cluster.start_broker, 2)
        await send(100)
        await producer.flush()
        assert all(f.done() and f.exception() is None for f in waiting)  # ...and get through
        results = [(key, value, future.result()) for key, value, future in sent]
        ends = {p: 1 + max(m.offset for _, _, m in results if m.partition == p) for p in live}
        deadline = loop.time() + 20
        while any(len(live[p]) < ends[p] for p in live):  # the consumer catches up too
            assert loop.time() < deadline, {p: len(r) for p, r in live.items()}
            await asyncio.sleep(0.05)
        reading.cancel()
    for records in live.values():
        assert [r.offset for r in records] == list(range(len(records)))  # no gap, no repeat
    fresh = await _consume(cluster.bootstrap, topic, len(results))
    for got in (live, fresh):
        by_offset = {(p, r.offset): r.value for p, records in got.items() for r in records}
        for _, value, meta in results:
            assert by_offset[(meta.partition, meta.offset)] == value
    for partition in range(3):
        mine = sorted((m.offset, int(v)) for _, v, m in results if m.partition == partition)
        assert [v for _, v in mine] == sorted(v for _, v in mine)  # no reordering by retries


def test_client_package_exposes_the_contract() -> None:
    import client

    contract = (
        "TopicPartition RecordMetadata ConsumerRecord OffsetAndTimestamp NewTopic "
        "BrokerDescription ClusterDescription PartitionDescription TopicDescription "
        "ConfigEntry Producer Consumer Admin BatchBuilder BatchRecordMetadata"
    )
    for name in contract.split():
        assert name in client.__all__, name
        assert hasattr(client, name), name


async def test_create_partitions_grows_a_topic_that_producers_and_groups_follow(
    shared: Cluster,
) -> None:
    """CreatePartitions: the topic gets its new partitions, each with a leader and all
    its replicas; a producer that knew the old count sends to a new partition (it asks
    for metadata once more before refusing), and a group's member rebalances onto them.
    Bad requests get clear errors and change nothing."""
    topic = _name()
    async with Admin(bootstrap_servers=shared.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 2, 3)])
        consumer = Consumer(
            topic,
            bootstrap_servers=shared.bootstrap,
            group_id=f"g-{topic}",
            auto_offset_reset="earliest",
            metadata_max_age_ms=300,  # how soon a member sees the new count
        )
        values: list[bytes] = []

        async def read_until(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 30
            while not condition():
                assert time.monotonic() < deadline, f"assigned {consumer.assignment()}: {values}"
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    values.extend(r.value for r in records)

        async with consumer, Producer(bootstrap_servers=shared.bootstrap) as producer:
            await read_until(lambda: len(consumer.assignment()) == 2)
            assert (await (await producer.send(topic, b"before", partition=1))).offset == 0
            await admin.create_partitions({topic: NewPartitions(5)})
            (described,) = await admin.describe_topics([topic])
            assert [p.partition for p in described.partitions] == [0, 1, 2, 3, 4]
            for p in described.partitions:
                assert sorted(p.replicas) == [1, 2, 3] and p.leader == p.replicas[0]
            new = await (await producer.send(topic, b"new", partition=4))
            assert (new.partition, new.offset) == (4, 0)
            await read_until(lambda: len(consumer.assignment()) == 5 and b"new" in values)
            assert sorted(values) == [b"before", b"new"]

        with pytest.raises(InvalidPartitionsError, match="already has 5 partitions"):
            await admin.create_partitions({topic: NewPartitions(5)})
        with pytest.raises(InvalidPartitionsError, match="more than the 3 asked for"):
            await admin.create_partitions({topic: NewPartitions(3)})
        with pytest.raises(InvalidReplicaAssignmentError, match="2 replicas"):
            await admin.create_partitions({topic: NewPartitions(6, [[1, 2]])})
        with pytest.raises(UnknownTopicOrPartitionError, match="does not exist"):
            await admin.create_partitions({_name(): NewPartitions(3)})
        await admin.create_partitions({topic: NewPartitions(8)}, validate_only=True)
        (described,) = await admin.describe_topics([topic])
        assert len(described.partitions) == 5  # nothing made by a validation, or an error
    async with Producer(bootstrap_servers=shared.bootstrap) as producer:
        with pytest.raises(ValueError, match=r"partitions 0\.\.4"):
            await producer.send(topic, b"v", partition=5)


async def test_delete_records_moves_the_start_of_the_partitions_for_every_replica(
    shared: Cluster,
) -> None:
    """DeleteRecords: the records below the offset given are gone for consumers, earliest
    is the new start, and the answer comes once every in-sync replica has moved its own
    start (the low watermark). -1 means the high watermark. Bad requests get clear errors
    and the brokers serve on."""
    topic, compacted = _name(), _name()
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with Admin(bootstrap_servers=shared.bootstrap) as admin:
        await admin.create_topics(
            [NewTopic(topic, 2, 3), NewTopic(compacted, 1, 1, {"cleanup.policy": "compact"})]
        )
        async with Producer(bootstrap_servers=shared.bootstrap, acks="all") as producer:
            for i in range(100):
                await producer.send(topic, b"%d" % i, partition=0)
            for i in range(10):
                await producer.send(topic, b"%d" % i, partition=1)
            await producer.send(compacted, b"v", key=b"k")
        assert await admin.delete_records({tp0: 40, tp1: -1}) == {tp0: 40, tp1: 10}
        earliest = await admin.list_offsets(
            {tp0: OffsetSpec.earliest(), tp1: OffsetSpec.earliest()}
        )
        assert (earliest[tp0].offset, earliest[tp1].offset) == (40, 10)
        assert await admin.delete_records({tp0: 10}) == {tp0: 40}  # never moves back

        with pytest.raises(OffsetOutOfRangeError, match="from 0 to its high watermark 100"):
            await admin.delete_records({tp0: 101})
        with pytest.raises(PolicyViolationError, match=r"cleanup\.policy=compact"):
            await admin.delete_records({TopicPartition(compacted, 0): 1})
        with pytest.raises(UnknownTopicOrPartitionError):
            await admin.delete_records({TopicPartition(_name(), 0): 1})

    consumer = Consumer(bootstrap_servers=shared.bootstrap, auto_offset_reset="earliest")
    async with consumer:
        consumer.assign([tp0, tp1])
        got: list[ConsumerRecord] = []
        while len(got) < 60:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(records)
        assert [(r.partition, r.offset, r.value) for r in got] == [
            (0, i, b"%d" % i) for i in range(40, 100)
        ]
        assert await consumer.position(tp1) == 10  # nothing left to read there

    async with Admin(bootstrap_servers=shared.bootstrap) as admin:
        # a partition refused for good does not stop the others, nor hide what they did
        with pytest.raises(PolicyViolationError) as refused:
            await admin.delete_records({TopicPartition(compacted, 0): 1, tp0: 50})
        assert f"{compacted}-0: " in str(refused.value)
        assert f"the others' records were deleted: {topic}-0 (low watermark 50)" in str(
            refused.value
        )
        earliest = await admin.list_offsets({tp0: OffsetSpec.earliest()})
        assert earliest[tp0].offset == 50
