"""Batches the caller fills (create_batch / send_batch), without a socket: what the builder
takes and refuses, and how the accumulator queues a whole batch."""

import asyncio
import time
from array import array

import pytest

from client.accumulator import RecordAccumulator, record_size_upper_bound
from client.batches import BatchBuilder, BatchRecordMetadata
from client.types import RecordMetadata, TopicPartition
from protocol.errors import MessageTooLargeError
from protocol.records import HEADER_SIZE, decode_batches

A0 = TopicPartition("a", 0)
TS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000.0

    def __call__(self) -> float:
        return self.ms


def make(**kwargs: object) -> RecordAccumulator:
    settings: dict[str, object] = {"batch_size": 16_384, "linger_ms": 1_000, "clock": Clock()}
    settings.update(kwargs)
    return RecordAccumulator(**settings)  # type: ignore[arg-type]


def queue(
    acc: RecordAccumulator, batch: BatchBuilder, max_size: int = 1 << 20
) -> "asyncio.Future[RecordMetadata]":
    keys, values, timestamps, headers = batch._take()
    return acc.append_batch(A0, keys, values, timestamps, headers, batch.size(), max_size)


def test_append_says_where_each_record_is_and_what_it_may_take() -> None:
    batch = BatchBuilder(16_384)
    first = batch.append(value=b"v" * 10, timestamp=TS)
    second = batch.append(key=b"k", value=None, timestamp=TS + 1, headers=[("h", b"1")])
    assert first == BatchRecordMetadata(0, TS, record_size_upper_bound(None, b"v" * 10, None))
    assert second == BatchRecordMetadata(
        1, TS + 1, record_size_upper_bound(b"k", None, [("h", b"1")])
    )
    assert batch.record_count() == 2
    assert batch.size() == first.size + second.size
    before = time.time_ns() // 1_000_000
    stamped = batch.append(value=b"now")
    assert stamped is not None and before <= stamped.timestamp <= time.time_ns() // 1_000_000


def test_a_full_batch_takes_no_more_but_its_first_record_always_fits() -> None:
    batch = BatchBuilder(300)
    assert batch.append(value=bytes(1_000)) is not None  # alone: larger than the batch
    assert batch.append(value=b"x") is None
    small = BatchBuilder(300)
    taken = 0
    while small.append(value=bytes(100), timestamp=TS) is not None:
        taken += 1
    assert taken == 2  # 2 x (100 + 36) fit in 300, a third does not
    assert small.size() <= 300
    assert small.append(value=bytes(100)) is None  # still full


def test_a_sent_batch_takes_no_more_records() -> None:
    batch = BatchBuilder(16_384)
    batch.append(value=b"a")
    batch._take()
    assert batch.sent
    assert batch.append(value=b"b") is None
    batch._reopen()
    assert batch.append(value=b"b") is not None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"value": "text"}, TypeError, "value must be bytes or None, not str"),
        ({"key": 42, "value": b"v"}, TypeError, "key must be bytes or None, not int"),
        ({"value": b"v", "headers": [("h", "text")]}, TypeError, "a header must be"),
        ({"value": b"v", "timestamp": -1}, ValueError, "timestamp=-1 is invalid"),
        ({"value": b"v", "timestamp": 1.5}, ValueError, "timestamp=1.5 is invalid"),
        ({"value": b"v", "timestamp": 2**63}, ValueError, "is invalid"),
    ],
)
def test_bad_records_are_refused_with_what_is_wrong(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    batch = BatchBuilder(16_384)
    with pytest.raises(error, match=match):
        batch.append(**kwargs)  # type: ignore[arg-type]
    assert batch.record_count() == 0 and batch.size() == 0


def test_extend_takes_as_many_as_fit_and_matches_append_record_by_record() -> None:
    values = [bytes([i]) * (10 + i) for i in range(50)]
    keys = [b"k%d" % i for i in range(50)]
    by_append = BatchBuilder(2_000)
    appended = 0
    while by_append.append(key=keys[appended], value=values[appended], timestamp=TS):
        appended += 1
    extended = BatchBuilder(2_000)
    taken = extended.extend(values, keys=keys, timestamp=TS)
    assert taken == appended and 0 < taken < 50
    assert extended.size() == by_append.size() <= 2_000
    assert extended._take() == by_append._take()
    assert extended.extend(values[taken:]) == 0  # sent: nothing more


def test_extend_after_append_keeps_every_column_aligned() -> None:
    batch = BatchBuilder(16_384)
    batch.append(value=b"first", timestamp=TS, headers=[("h", b"1")])
    assert batch.extend([b"a", None], keys=[b"k", None], timestamp=TS + 1) == 2
    assert batch.extend([b"b"]) == 1
    keys, values, timestamps, headers = batch._take()
    assert values == [b"first", b"a", None, b"b"]
    assert keys == [None, b"k", None, None]
    assert headers == [[("h", b"1")], None, None, None]
    assert timestamps[:3] == [TS, TS + 1, TS + 1] and timestamps[3] >= TS


def test_extend_always_takes_a_first_record_and_nothing_from_nothing() -> None:
    batch = BatchBuilder(100)
    assert batch.extend([]) == 0
    assert batch.extend([bytes(500), b"x"]) == 1  # alone larger than the batch
    assert batch.extend([b"x"]) == 0 and batch.record_count() == 1


@pytest.mark.parametrize(
    ("values", "kwargs", "error", "match"),
    [
        ([b"a", "b"], {}, TypeError, "value must be bytes or None, not str"),
        ([b"a"], {"keys": [1]}, TypeError, "key must be bytes or None, not int"),
        ([b"a", b"b"], {"keys": [b"k"]}, ValueError, "1 keys for 2 values"),
        ([b"a"], {"timestamp": -5}, ValueError, "timestamp=-5 is invalid"),
    ],
)
def test_extend_refuses_bad_columns_whole(
    values: list[object], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    batch = BatchBuilder(16_384)
    with pytest.raises(error, match=match):
        batch.extend(values, **kwargs)  # type: ignore[arg-type]
    assert batch.record_count() == 0 and batch.size() == 0


def test_buffers_the_caller_may_change_are_copied_and_wide_memoryviews_count_bytes() -> None:
    mutable = bytearray(b"first")
    wide = memoryview(array("i", [1, 2]))  # len() is 2 items, 8 bytes
    batch = BatchBuilder(16_384)
    batch.append(value=mutable, key=memoryview(b"key"), timestamp=TS, headers=[("h", wide)])
    assert batch.extend([mutable, wide], keys=[None, bytearray(b"k")], timestamp=TS) == 2
    mutable[:] = b"changed afterwards"
    keys, values, _, headers = batch._take()
    assert values == [b"first", b"first", wide.tobytes()]
    assert keys == [b"key", None, b"k"]
    assert headers == [[("h", wide.tobytes())], None, None]
    assert all(type(v) is bytes for v in [*values, *(k for k in keys if k is not None)])


def test_all_keyless_keys_are_taken_as_no_keys() -> None:
    batch = BatchBuilder(16_384)
    assert batch.extend([b"a", b"b"], keys=[None, None], timestamp=TS) == 2
    keys, _, _, _ = batch._take()
    assert keys is None  # the column encoder's keyless case


def test_extend_looks_only_at_what_could_fit() -> None:
    """A long list costs each call its batch's share: items past what could fit are not
    examined (a bad one there is reported by the call that reaches it)."""
    values: list[object] = [bytes(10)] * 1_000 + ["not bytes"]
    fits = 16_384 // (36 + 10)  # 356 records of 10 bytes fill a batch...
    window = 16_384 // 36  # ...and no more than 455 records of any size could
    at = 0
    while at + window < 1_000:  # calls whose window ends before the bad item
        assert BatchBuilder(16_384).extend(values[at:]) == fits  # type: ignore[arg-type]
        at += fits
    assert at == 2 * fits
    with pytest.raises(TypeError, match="not str"):
        BatchBuilder(16_384).extend(values[at:])  # type: ignore[arg-type]


async def test_a_queued_batch_that_fails_or_expires_releases_its_buffer_space() -> None:
    clock = Clock()
    acc = make(clock=clock, delivery_timeout_ms=1_000)
    for ending in ("fail_all", "expire"):
        batch = BatchBuilder(16_384)
        batch.extend([bytes(50)] * 10, timestamp=TS)
        future = queue(acc, batch)
        assert acc.buffered_bytes > 0
        if ending == "fail_all":
            acc.fail_all(RuntimeError("closing"))
        else:
            clock.ms += 1_000
            assert len(acc.expire()) == 1
        assert future.done() and future.exception() is not None
        assert acc.buffered_bytes == 0 and not acc.has_batches


async def test_a_queued_batch_follows_the_partitions_open_batch_and_is_sendable_at_once() -> None:
    acc = make()
    sent_before = acc.append(A0, None, b"before", None, TS)
    batch = BatchBuilder(16_384)
    for i in range(3):
        batch.append(key=b"k%d" % i, value=b"v%d" % i, timestamp=TS + i)
    future = queue(acc, batch)
    sent_after = acc.append(A0, None, b"after", None, TS)
    assert acc.ready(lambda tp: 1).nodes == {1}  # no linger for the queued batch
    records = []
    for answer in (100, 200):
        (one,) = acc.drain({1}, lambda tp: 1, 1 << 20)[1]
        assert one.payload is not None
        records.append(
            [(r.key, r.value, r.timestamp) for b in decode_batches(one.payload) for r in b]
        )
        acc.complete(one, answer, -1)
    assert acc.drain({1}, lambda tp: 1, 1 << 20) == {}  # "after" opened a new batch: lingering
    assert [len(r) for r in records] == [1, 3]
    assert records[1] == [(b"k0", b"v0", TS), (b"k1", b"v1", TS + 1), (b"k2", b"v2", TS + 2)]
    assert sent_before.result().offset == 100
    assert future.result() == RecordMetadata("a", 0, 200, TS)  # its first record's
    assert not sent_after.done()


async def test_a_batch_that_encodes_over_max_size_is_refused_and_nothing_is_queued() -> None:
    acc = make()
    batch = BatchBuilder(1 << 20)
    for _ in range(20):
        batch.append(value=bytes(100), timestamp=TS)
    with pytest.raises(MessageTooLargeError, match="more than max_request_size=500"):
        queue(acc, batch, max_size=500)
    assert acc.buffered_bytes == 0
    assert not acc.has_batches
    assert acc.ready(lambda tp: 1).nodes == set()


async def test_buffered_bytes_count_the_batch_until_it_is_answered() -> None:
    acc = make()
    batch = BatchBuilder(16_384)
    for _ in range(10):
        batch.append(value=bytes(50), timestamp=TS)
    queue(acc, batch)
    assert acc.buffered_bytes == HEADER_SIZE + batch.size()
    (drained,) = acc.drain({1}, lambda tp: 1, 1 << 20)[1]
    acc.complete(drained, 0, -1)
    assert acc.buffered_bytes == 0
