"""The producer's batching rules, without a socket: linger, batch size, batches in flight
per partition (one, or up to max_in_flight for an idempotent producer), retries in order,
request size, expiry, splitting, flush."""

import asyncio
import contextvars
import random
import traceback
from collections.abc import Callable

import pytest

from client.accumulator import (
    ProducerBatch,
    RecordAccumulator,
    RecordFuture,
    record_size_upper_bound,
)
from client.partitioner import Partitioner
from client.types import RecordMetadata, TopicPartition
from protocol.errors import MessageTooLargeError, RequestTimedOutError
from protocol.records import HEADER_SIZE, decode_batches, encode_batch

A0 = TopicPartition("a", 0)
A1 = TopicPartition("a", 1)
B0 = TopicPartition("b", 0)
LEADERS = {A0: 1, A1: 2, B0: 1}


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000.0

    def __call__(self) -> float:
        return self.ms


def leader_of(tp: TopicPartition) -> int | None:
    return LEADERS.get(tp)


def make(clock: Clock, **kwargs: object) -> RecordAccumulator:
    settings: dict[str, object] = {"batch_size": 16_384, "linger_ms": 0, "clock": clock}
    settings.update(kwargs)
    return RecordAccumulator(**settings)  # type: ignore[arg-type]


def append(
    acc: RecordAccumulator, tp: TopicPartition, value: bytes, ts: int = 1_700_000_000_000
) -> RecordFuture:
    return acc.append(tp, None, value, None, ts)


def values(batch: ProducerBatch) -> list[bytes | None]:
    assert batch.payload is not None
    return [r.value for b in decode_batches(batch.payload) for r in b]


async def test_a_lingering_batch_waits_for_linger_ms() -> None:
    clock = Clock()
    acc = make(clock, linger_ms=50)
    append(acc, A0, b"x")
    check = acc.ready(leader_of)
    assert check.nodes == set()
    assert check.delay_ms == 50
    clock.ms += 30
    assert acc.ready(leader_of).delay_ms == 20
    assert acc.drain({1}, leader_of, 1 << 20) == {}  # not before its time
    clock.ms += 20
    assert acc.ready(leader_of).nodes == {1}
    drained = acc.drain({1}, leader_of, 1 << 20)
    assert [values(b) for b in drained[1]] == [[b"x"]]


async def test_a_full_batch_is_sendable_at_once_and_a_new_one_opens() -> None:
    clock = Clock()
    woken: list[int] = []
    acc = make(clock, linger_ms=10_000, batch_size=400, wakeup=lambda: woken.append(1))
    futures = [append(acc, A0, bytes(100)) for _ in range(5)]
    assert woken  # the sender hears of the full batch without waiting out the linger
    assert acc.ready(leader_of).nodes == {1}
    first = acc.drain({1}, leader_of, 1 << 20)[1]
    assert len(first) == 1 and 1 <= first[0].record_count < 5
    assert first[0].payload is not None and len(first[0].payload) <= 400
    assert acc.ready(leader_of).nodes == set()  # the rest lingers, and its partition is busy
    assert not any(f.done() for f in futures)


async def test_a_record_larger_than_batch_size_gets_a_batch_of_its_own() -> None:
    clock = Clock()
    acc = make(clock, linger_ms=10_000, batch_size=100)
    append(acc, A0, bytes(1_000))
    append(acc, A0, b"small")
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    assert values(batch) == [bytes(1_000)]


@pytest.mark.parametrize("linger_ms", [0, 50])
async def test_each_new_batch_wakes_the_sender(linger_ms: int) -> None:
    """Even a lingering one: a sleeping sender must learn when its linger ends."""
    clock = Clock()
    woken: list[int] = []
    acc = make(clock, linger_ms=linger_ms, wakeup=lambda: woken.append(1))
    append(acc, A0, b"1")
    append(acc, A0, b"2")  # same open batch: no second wakeup needed
    assert len(woken) == 1
    append(acc, A1, b"3")
    assert len(woken) == 2


async def test_one_batch_per_partition_per_drain_and_none_while_one_is_in_flight() -> None:
    clock = Clock()
    acc = make(clock, batch_size=200)
    for i in range(6):
        append(acc, A0, bytes([i]) * 80)
    append(acc, B0, b"b")
    append(acc, A1, b"other broker")
    drained = acc.drain({1, 2}, leader_of, 1 << 20)
    assert sorted(b.tp for b in drained[1]) == [A0, B0]  # ONE batch of A0, one of B0
    assert [b.tp for b in drained[2]] == [A1]
    assert acc.drain({1, 2}, leader_of, 1 << 20) == {}  # A0 is muted: its batch is in flight
    (a0,) = (b for b in drained[1] if b.tp == A0)
    acc.complete(a0, base_offset=10, log_append_time_ms=-1)
    again = acc.drain({1}, leader_of, 1 << 20)[1]
    assert [b.tp for b in again] == [A0]


async def test_the_sender_looks_only_at_partitions_with_batches_waiting() -> None:
    """A producer that wrote to 1,024 partitions once does not go over 1,024 queues in
    every sender pass (ready, drain, expire) from then on: an emptied queue leaves."""
    clock = Clock()
    acc = make(clock)
    many = [TopicPartition("m", i) for i in range(1024)]
    looked: list[TopicPartition] = []

    def counting(tp: TopicPartition) -> int:
        looked.append(tp)
        return 1

    for tp in many:
        append(acc, tp, b"x")
    for batch in acc.drain({1}, counting, 1 << 30)[1]:
        acc.complete(batch, base_offset=0, log_append_time_ms=-1)
    assert acc._batches == {}  # what the passes go over: nothing waits
    append(acc, many[7], b"y")
    assert list(acc._batches) == [many[7]]
    looked.clear()
    assert acc.ready(counting).nodes == {1}
    assert [b.tp for b in acc.drain({1}, counting, 1 << 20)[1]] == [many[7]]
    assert looked == [many[7], many[7]]
    retried = acc.drain({1}, counting, 1 << 20)  # in flight: nothing else to send
    assert retried == {} and acc.expire() == []


async def test_complete_gives_each_record_base_offset_plus_its_index() -> None:
    clock = Clock()
    acc = make(clock)
    futures = [append(acc, A0, b"v", ts=1_000 + i) for i in range(3)]
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.complete(batch, base_offset=40, log_append_time_ms=-1)
    assert [f.result() for f in futures] == [
        RecordMetadata("a", 0, 40, 1_000),
        RecordMetadata("a", 0, 41, 1_001),
        RecordMetadata("a", 0, 42, 1_002),
    ]
    assert not acc.has_batches
    assert acc.buffered_bytes == 0


async def test_log_append_time_replaces_the_records_timestamps() -> None:
    acc = make(Clock())
    future = append(acc, A0, b"v", ts=5)
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.complete(batch, base_offset=0, log_append_time_ms=99)
    assert future.result().timestamp == 99


async def test_unknown_base_offset_gives_minus_one_as_with_acks_0() -> None:
    acc = make(Clock())
    futures = [append(acc, A0, b"v") for _ in range(2)]
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.complete(batch, base_offset=-1, log_append_time_ms=-1)
    assert [f.result().offset for f in futures] == [-1, -1]


async def test_a_retried_batch_goes_first_after_the_backoff_with_the_same_bytes() -> None:
    clock = Clock()
    acc = make(clock, retry_backoff_ms=100, batch_size=400)
    early = [append(acc, A0, bytes([1]) * 80) for _ in range(2)]
    (first,) = acc.drain({1}, leader_of, 1 << 20)[1]
    payload = first.payload
    late = [append(acc, A0, bytes([2]) * 80) for _ in range(2)]  # queued behind it
    acc.retry(first)
    check = acc.ready(leader_of)
    assert check.nodes == set()
    assert check.delay_ms == 100  # the backoff, even though later records are ready
    clock.ms += 100
    (resent,) = acc.drain({1}, leader_of, 1 << 20)[1]
    assert resent is first and resent.payload is payload and resent.attempts == 2
    assert acc.drain({1}, leader_of, 1 << 20) == {}  # the later batch waits its turn
    acc.complete(resent, base_offset=0, log_append_time_ms=-1)
    (second,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.complete(second, base_offset=len(early), log_append_time_ms=-1)
    offsets = [f.result().offset for f in early + late]
    assert offsets == sorted(offsets) == list(range(len(early) + len(late)))


async def test_max_request_size_spreads_batches_over_requests() -> None:
    clock = Clock()
    acc = make(clock)
    append(acc, A0, bytes(600))
    append(acc, B0, bytes(600))  # same leader (1)
    first = acc.drain({1}, leader_of, max_request_size=1_000)[1]
    assert len(first) == 1
    second = acc.drain({1}, leader_of, max_request_size=1_000)[1]
    assert len(second) == 1
    assert {first[0].tp, second[0].tp} == {A0, B0}


async def test_a_single_batch_over_max_request_size_is_still_sent() -> None:
    """send() refuses records that can never fit; a batch that does is never stuck."""
    acc = make(Clock())
    append(acc, A0, bytes(2_000))
    assert len(acc.drain({1}, leader_of, max_request_size=1_000)[1]) == 1


async def test_partitions_without_a_leader_are_reported_not_sent() -> None:
    acc = make(Clock())
    append(acc, TopicPartition("nowhere", 0), b"x")
    check = acc.ready(leader_of)
    assert check.unknown_leader_topics == {"nowhere"}
    assert check.nodes == set()
    assert acc.drain({1, 2}, leader_of, 1 << 20) == {}


async def test_batches_expire_after_delivery_timeout() -> None:
    clock = Clock()
    acc = make(clock, delivery_timeout_ms=1_000, linger_ms=0)
    stuck = append(acc, TopicPartition("nowhere", 0), b"x")
    clock.ms += 999
    assert acc.expire() == []
    clock.ms += 1
    (expired,) = acc.expire()
    assert expired.tp == TopicPartition("nowhere", 0)
    with pytest.raises(RequestTimedOutError, match="delivery_timeout_ms=1000"):
        stuck.result()
    assert not acc.has_batches


async def test_in_flight_batches_do_not_expire_under_the_sender() -> None:
    clock = Clock()
    acc = make(clock, delivery_timeout_ms=1_000)
    future = append(acc, A0, b"x")
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    clock.ms += 5_000
    assert acc.expire() == []
    acc.complete(batch, base_offset=7, log_append_time_ms=-1)
    assert future.result().offset == 7


async def test_fail_fails_every_record_of_the_batch_only() -> None:
    acc = make(Clock())
    bad = [append(acc, A0, b"x") for _ in range(2)]
    good = append(acc, A1, b"y")
    drained = acc.drain({1, 2}, leader_of, 1 << 20)
    acc.fail(drained[1][0], MessageTooLargeError("too big"))
    acc.complete(drained[2][0], base_offset=0, log_append_time_ms=-1)
    for future in bad:
        with pytest.raises(MessageTooLargeError):
            future.result()
    assert good.result().offset == 0


async def test_split_keeps_order_and_each_records_future() -> None:
    clock = Clock()
    acc = make(clock, linger_ms=10_000)
    futures = [append(acc, A0, bytes([i])) for i in range(5)]
    acc.begin_flush()
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.split(batch)
    (first,) = acc.drain({1}, leader_of, 1 << 20)[1]
    assert values(first) == [bytes([0]), bytes([1])]
    acc.complete(first, base_offset=100, log_append_time_ms=-1)
    (second,) = acc.drain({1}, leader_of, 1 << 20)[1]
    assert values(second) == [bytes([i]) for i in range(2, 5)]
    acc.complete(second, base_offset=102, log_append_time_ms=-1)
    assert [f.result().offset for f in futures] == [100, 101, 102, 103, 104]
    assert not acc.has_batches
    assert acc.buffered_bytes == 0


async def test_records_of_any_mix_are_encoded_when_the_batch_closes_and_split_alike() -> None:
    """An open batch keeps columns; keys, headers and None values that come and go
    mid-batch land on the right records, in the bytes built at close and in the halves
    of a split."""
    clock = Clock()
    acc = make(clock, linger_ms=10_000)
    sent: list[tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]] = []
    for i in range(40):
        key = b"k%d" % i if i % 3 == 1 else None
        value = None if i % 7 == 3 else b"value-%d" % i
        headers = [("h", b"%d" % i), ("n", None)] if i % 5 == 2 else None
        acc.append(A0, key, value, headers, 1_700_000_000_000 + i)
        sent.append((key, value, tuple(headers or ())))
    acc.begin_flush()
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    assert batch.payload is not None
    (decoded,) = decode_batches(batch.payload)
    assert [(r.key, r.value, r.headers) for r in decoded] == sent
    assert [r.timestamp for r in decoded] == [1_700_000_000_000 + i for i in range(40)]
    acc.split(batch)
    records = []
    for _ in range(2):  # one half at a time: the partition is muted until it is answered
        (half,) = acc.drain({1}, leader_of, 1 << 20)[1]
        assert half.payload is not None
        (decoded,) = decode_batches(half.payload)
        records += decoded.records
        acc.complete(half, 0, -1)
    assert [(r.key, r.value, r.headers) for r in records] == sent


async def test_an_open_batch_fills_to_within_a_few_percent_of_batch_size() -> None:
    """Open batches estimate each record's encoded size (they have encoded nothing yet):
    close to what is encoded, never over."""
    clock = Clock()
    for value_size in (0, 10, 50, 60, 100, 1_000, 9_000):
        acc = make(clock, linger_ms=10_000, batch_size=16_384)
        for _ in range(3 * 16_384 // max(value_size, 1)):
            append(acc, A0, bytes(value_size))
        (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]  # the first, full one
        assert batch.payload is not None
        # small records are counted a byte over (in case a timestamp delta takes two):
        # an empty value's record is 8 bytes, counted as 9, and fills a batch to 88%
        low = 0.87 if value_size < 50 else 0.95
        assert low * 16_384 <= len(batch.payload) <= 16_384 or value_size == 9_000, value_size
        assert len(batch.payload) <= 16_384 or batch.record_count == 1


@pytest.mark.parametrize(
    "case", ["timestamps a year apart", "timestamps 0 and now", "tiny records", "keyed 100 B"]
)
async def test_an_open_batch_never_grows_past_batch_size(case: str) -> None:
    """What an open batch counts for a record is at most what it encodes to, whatever
    its timestamps (user-given ones may be anything), its size or its place in the
    batch: a full batch stays within batch_size (so within max_request_size and the
    broker's max.message.bytes when they are set alike)."""
    clock = Clock()
    rng = random.Random(case)
    now = 1_700_000_000_000
    acc = make(clock, linger_ms=10_000, batch_size=1 << 20)
    key, value = (bytes(100), bytes(100)) if case == "keyed 100 B" else (None, b"x")
    for i in range(3 * (1 << 20) // (len(value) + (len(key) if key else 0) + 8)):
        if case == "timestamps a year apart":
            timestamp = now + rng.randrange(365 * 86_400_000)
        elif case == "timestamps 0 and now":
            timestamp = 0 if i % 2 else now
        else:
            timestamp = now + i // 100  # 100 records a millisecond
        acc.append(A0, key, value, None, timestamp)
    (batch,) = acc.drain({1}, leader_of, 1 << 21)[1]
    assert batch.payload is not None
    assert 0.6 * (1 << 20) < len(batch.payload) <= 1 << 20


async def test_a_batch_that_expires_open_lets_go_of_its_records() -> None:
    clock = Clock()
    acc = make(clock, linger_ms=60_000, delivery_timeout_ms=1_000)
    future = append(acc, A0, bytes(10_000))
    clock.ms += 1_000
    (expired,) = acc.expire()
    assert future.done() and isinstance(future.exception(), RequestTimedOutError)
    assert expired.values == [] and acc.buffered_bytes == 0
    assert A0 not in acc.open_batches  # the partition's next record opens a new batch
    again = append(acc, A0, b"next")
    acc.begin_flush()
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    assert values(batch) == [b"next"] and not again.done()


async def test_flush_makes_lingering_batches_sendable_and_marks_what_to_wait_for() -> None:
    clock = Clock()
    acc = make(clock, linger_ms=60_000)
    append(acc, A0, b"before")
    marker = acc.begin_flush()
    append(acc, A1, b"after")  # created after the flush began
    assert acc.ready(leader_of).nodes == {1, 2}
    pending = acc.pending_up_to(marker)
    assert len(pending) == 1
    drained = acc.drain({1, 2}, leader_of, 1 << 20)
    acc.complete(drained[1][0], base_offset=0, log_append_time_ms=-1)
    assert all(f.done() for f in pending)
    assert acc.pending_up_to(marker) == []
    acc.end_flush()
    acc.complete(drained[2][0], base_offset=0, log_append_time_ms=-1)


async def test_split_halves_stay_pending_for_a_flush_begun_before() -> None:
    acc = make(Clock())
    for i in range(4):
        append(acc, A0, bytes([i]))
    marker = acc.begin_flush()
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.split(batch)
    assert len(acc.pending_up_to(marker)) == 2


async def test_closing_a_batch_moves_the_sticky_partition_on() -> None:
    clock = Clock()
    partitioner = Partitioner(random.Random(2))
    acc = make(clock, linger_ms=5, on_batch_closed=partitioner.batch_closed)
    leaders = {TopicPartition("s", p): 1 for p in range(4)}
    first = partitioner.partition("s", None, 4, available=range(4))
    append(acc, TopicPartition("s", first), b"x")
    assert partitioner.partition("s", None, 4, available=range(4)) == first
    clock.ms += 5
    acc.drain({1}, leaders.get, 1 << 20)  # the sticky partition's batch is sent
    assert partitioner.partition("s", None, 4, available=range(4)) != first


async def test_fail_topic_and_fail_all_leave_nothing_hanging() -> None:
    acc = make(Clock())
    gone = append(acc, TopicPartition("gone", 0), b"x")
    kept = append(acc, A0, b"y")
    assert acc.fail_topic("gone", MessageTooLargeError("x")) == 1
    assert isinstance(gone.exception(), MessageTooLargeError)
    assert not kept.done()
    acc.drain({1}, leader_of, 1 << 20)  # in flight when everything is failed
    acc.fail_all(RuntimeError("stopped"))
    with pytest.raises(RuntimeError):
        kept.result()
    assert not acc.has_batches
    assert acc.buffered_bytes == 0


def test_record_size_upper_bound_covers_the_encoding() -> None:
    rng = random.Random(11)
    for _ in range(300):
        key = rng.randbytes(rng.randrange(0, 300)) if rng.random() < 0.8 else None
        value = rng.randbytes(rng.randrange(0, 3_000)) if rng.random() < 0.9 else None
        headers = [(f"h{i}", rng.randbytes(rng.randrange(0, 20))) for i in range(rng.randrange(3))]
        encoded = encode_batch([(key, value, headers, rng.randrange(0, 2**41))])
        assert len(encoded) <= HEADER_SIZE + record_size_upper_bound(key, value, headers)


# --- RecordFuture: one outcome per batch, an asyncio future only when one is needed ----


async def test_a_record_future_reads_its_batch_outcome_without_an_asyncio_future() -> None:
    acc = make(Clock())
    futures = [append(acc, A0, b"x", ts=100 + i) for i in range(3)]
    assert not futures[0].done()
    with pytest.raises(asyncio.InvalidStateError):
        futures[0].result()
    with pytest.raises(asyncio.InvalidStateError):
        futures[0].exception()
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.complete(batch, base_offset=40, log_append_time_ms=-1)
    assert [f.result() for f in futures] == [
        RecordMetadata("a", 0, 40 + i, 100 + i) for i in range(3)
    ]
    assert all(f.exception() is None and not f.cancelled() for f in futures)
    assert all(f._future is None for f in futures)  # none was made: nobody awaited


@pytest.mark.parametrize(
    "stamps",
    [[7, 7, 8, 9, 9], [7] * 8 + [8] * 6 + [9] * 6, [9, 7, 8, 7, 9] * 4, list(range(100))],
)
async def test_a_record_keeps_its_timestamp_in_order_or_not(stamps: list[int]) -> None:
    """A closed batch keeps its records' timestamps as runs when they never go back (and
    are few), else one by one: either way each record's metadata has its own."""
    acc = make(Clock())
    futures = [append(acc, A0, b"x", ts=ts) for ts in stamps]
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    (sent,) = decode_batches(batch.payload)
    assert (sent.header.base_timestamp, sent.header.max_timestamp) == (stamps[0], max(stamps))
    acc.complete(batch, base_offset=0, log_append_time_ms=-1)
    assert [f.result().timestamp for f in futures] == stamps


async def test_a_record_future_works_with_await_gather_wait_and_as_completed() -> None:
    acc = make(Clock())
    futures = [append(acc, A0, b"x", ts=7) for _ in range(4)]
    seen: list[object] = []
    futures[0].add_done_callback(seen.append)
    gathered = asyncio.ensure_future(asyncio.gather(*futures[:2]))
    waited = asyncio.ensure_future(asyncio.wait(futures[2:], timeout=5))
    first = asyncio.ensure_future(next(iter(asyncio.as_completed(futures[3:]))))
    awaited = asyncio.ensure_future(_await(futures[1]))
    await asyncio.sleep(0)
    assert not gathered.done() and not awaited.done()
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.complete(batch, base_offset=10, log_append_time_ms=-1)
    assert [m.offset for m in await gathered] == [10, 11]
    done, pending = await waited
    assert done == set(futures[2:]) and not pending
    assert (await first).offset == 13
    assert (await awaited).offset == 11
    assert seen == [futures[0]]  # the callback gets the RecordFuture itself
    assert await futures[3] == futures[3].result()


async def _await(future: RecordFuture) -> RecordMetadata:
    return await future


async def test_cancelling_a_record_wait_cancels_the_wait_not_the_record_or_its_batch() -> None:
    acc = make(Clock())
    futures = [append(acc, A0, b"x") for _ in range(2)]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(futures[0], 0.01)
    assert futures[0].cancelled() and futures[0].done()
    assert not futures[1].done()  # the other record of the batch waits on
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]  # and the cancelled one is still sent
    assert values(batch) == [b"x", b"x"]
    acc.complete(batch, base_offset=0, log_append_time_ms=-1)
    assert (await futures[1]).offset == 1
    with pytest.raises(asyncio.CancelledError):
        futures[0].result()


async def test_a_record_future_callback_can_be_removed_and_a_failure_reaches_awaiters() -> None:
    acc = make(Clock())
    future = append(acc, A0, b"x")
    calls: list[object] = []
    future.add_done_callback(calls.append)
    assert future.remove_done_callback(calls.append) == 1
    waiting = asyncio.ensure_future(_await(future))
    await asyncio.sleep(0)
    acc.fail_all(RuntimeError("stopped"))
    with pytest.raises(RuntimeError, match="stopped"):
        await waiting
    assert calls == []
    assert isinstance(future.exception(), RuntimeError)


async def test_split_records_keep_their_futures_awaited_or_not() -> None:
    acc = make(Clock())
    futures = [append(acc, A0, bytes([i]), ts=50 + i) for i in range(5)]
    waiting = asyncio.ensure_future(_await(futures[4]))  # made before the split
    await asyncio.sleep(0)
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.split(batch)
    first = acc.drain({1}, leader_of, 1 << 20)[1][0]
    acc.complete(first, base_offset=100, log_append_time_ms=-1)
    assert [f.done() for f in futures] == [True, True, False, False, False]
    second = acc.drain({1}, leader_of, 1 << 20)[1][0]
    acc.complete(second, base_offset=200, log_append_time_ms=-1)
    assert [f.result().offset for f in futures] == [100, 101, 200, 201, 202]
    assert [f.result().timestamp for f in futures] == [50, 51, 52, 53, 54]
    assert (await waiting).offset == 202


async def test_a_timeout_around_gather_of_record_futures_ends_and_the_records_go_on() -> None:
    acc = make(Clock())
    futures = [append(acc, A0, b"x") for _ in range(3)]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*futures), 0.01)
    outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 1)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)  # the waits were
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    assert values(batch) == [b"x"] * 3
    acc.complete(batch, base_offset=0, log_append_time_ms=-1)
    assert all(f.cancelled() for f in futures)  # each wait was cancelled; not the records


async def test_finished_batches_leave_their_bytes_behind_and_errors_keep_one_traceback() -> None:
    acc = make(Clock())
    kept = [append(acc, A0, bytes(1000)) for _ in range(10)]
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    assert batch.payload is not None
    acc.complete(batch, base_offset=0, log_append_time_ms=-1)
    assert batch.payload is None and kept[9].result().offset == 9
    failing = [append(acc, A1, b"y") for _ in range(3)]
    acc.fail_all(RuntimeError("stopped"))
    depths = []
    for _ in range(50):
        for future in failing:
            try:
                future.result()
            except RuntimeError as exc:
                depths.append(len(traceback.extract_tb(exc.__traceback__)))
    assert len(set(depths)) == 1  # re-raising does not grow the shared error's traceback


async def test_callbacks_run_in_send_order_whatever_order_they_were_added_in() -> None:
    acc = make(Clock())
    futures = [append(acc, A0, bytes([i])) for i in range(4)]
    order: list[int] = []
    for i in reversed(range(4)):
        futures[i].add_done_callback(lambda _f, i=i: order.append(i))
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.complete(batch, base_offset=0, log_append_time_ms=-1)
    await asyncio.sleep(0)
    assert order == [0, 1, 2, 3]


_where = contextvars.ContextVar("where", default="none")


async def test_callbacks_the_batch_keeps_run_once_in_order_with_awaits_removal_and_cancel() -> None:
    """A callback added to a record with no asyncio future is kept by its batch: it runs
    once, in send order, in the context it was added in, after the records before it;
    removed, it never runs; a later await or cancel takes it along, in order."""
    acc = make(Clock())
    futures = [append(acc, A0, bytes([i])) for i in range(5)]
    calls: list[tuple[str, int, bool]] = []

    def named(name: str) -> Callable[[RecordFuture], None]:
        return lambda f: calls.append((name, futures.index(f), f.cancelled()))

    first, second = named("first"), named("second")
    futures[0].add_done_callback(first)
    awaited = asyncio.ensure_future(_await(futures[0]))  # its asyncio future, made now
    futures[0].add_done_callback(second)
    gone = named("gone")
    futures[1].add_done_callback(gone)
    futures[1].add_done_callback(gone)
    futures[1].add_done_callback(second)
    assert futures[1].remove_done_callback(gone) == 2
    futures[2].add_done_callback(first)
    assert futures[2].cancel()  # cancels the wait: the callback runs now, cancelled
    await asyncio.sleep(0)
    assert calls == [("first", 2, True)]
    token = _where.set("added here")
    futures[3].add_done_callback(lambda _f: calls.append((_where.get(), 3, False)))
    _where.reset(token)
    futures[4].add_done_callback(first)
    await asyncio.sleep(0)
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.complete(batch, base_offset=0, log_append_time_ms=-1)
    assert calls == [("first", 2, True)]  # scheduled, not run inside complete()
    assert (await awaited).offset == 0
    await asyncio.sleep(0)
    assert calls == [
        ("first", 2, True),
        ("first", 0, False),
        ("second", 0, False),
        ("second", 1, False),
        ("added here", 3, False),
        ("first", 4, False),
    ]
    futures[4].add_done_callback(second)  # done already: scheduled at once
    assert calls[-1] == ("first", 4, False)
    await asyncio.sleep(0)
    assert calls[-1] == ("second", 4, False)
    assert all(f._future is None for f in futures[3:])  # callbacks alone make none


async def test_callbacks_follow_their_records_into_a_split_batch() -> None:
    acc = make(Clock())
    futures = [append(acc, A0, bytes([i]), ts=50 + i) for i in range(5)]
    seen: list[tuple[int, int]] = []
    for future in reversed(futures):
        future.add_done_callback(lambda f: seen.append((futures.index(f), f.result().offset)))
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    acc.split(batch)
    acc.complete(acc.drain({1}, leader_of, 1 << 20)[1][0], base_offset=100, log_append_time_ms=-1)
    await asyncio.sleep(0)
    assert seen == [(0, 100), (1, 101)]
    acc.complete(acc.drain({1}, leader_of, 1 << 20)[1][0], base_offset=200, log_append_time_ms=-1)
    await asyncio.sleep(0)
    assert seen == [(0, 100), (1, 101), (2, 200), (3, 201), (4, 202)]


async def test_a_closed_or_failed_batch_takes_no_record_on_room_taken_ahead() -> None:
    """The fast path appends with no check while room is taken (``left``): closing or
    failing the batch gives that room back and ends it."""
    for end in ("close", "fail"):
        acc = make(Clock(), batch_size=1 << 20)
        append(acc, A0, b"v" * 10)
        batch = acc.open_batches[A0]
        for _ in range(2):  # the second like the first: room is taken for a run
            assert acc.append_to(batch, b"w" * 10, 1_700_000_000_000) is not None
        assert batch.left > 0
        if end == "close":
            acc._close(batch)
        else:
            acc.fail_all(RuntimeError("stopped"))
        assert batch.left == 0
        assert acc.append_to(batch, b"w" * 10, 1_700_000_000_000) is None
        assert batch.count == 3
        if end == "close":
            (closed,) = acc.drain({1}, leader_of, 1 << 20)[1]
            assert values(closed) == [b"v" * 10, b"w" * 10, b"w" * 10]
            acc.complete(closed, base_offset=0, log_append_time_ms=-1)
        assert acc.buffered_bytes == 0  # what was taken ahead went back


# --- pipelining: several batches of a partition in flight (idempotent producers) ----------


def pipelined(clock: Clock, max_in_flight: int = 5) -> RecordAccumulator:
    """An idempotent producer's accumulator: batches of 2 records of 80 bytes."""
    acc = make(clock, batch_size=300, max_in_flight=max_in_flight)
    acc.reset_producer(producer_id=7, producer_epoch=0)
    return acc


def fill(acc: RecordAccumulator, tp: TopicPartition, records: int) -> None:
    for i in range(records):
        append(acc, tp, bytes([i % 256]) * 80)


def drain_one(acc: RecordAccumulator) -> ProducerBatch | None:
    """The one batch of A0 the next drain gives, or None."""
    batches = acc.drain({1}, leader_of, 1 << 20).get(1, [])
    assert len(batches) <= 1
    return batches[0] if batches else None


def three_in_flight(
    records: int,
) -> tuple[Clock, RecordAccumulator, tuple[ProducerBatch, ProducerBatch, ProducerBatch]]:
    """A pipelined accumulator with ``records`` for A0, whose first three batches are out."""
    clock = Clock()
    acc = pipelined(clock)
    fill(acc, A0, records)
    first, second, third = (drain_one(acc) for _ in range(3))
    assert first and second and third
    return clock, acc, (first, second, third)


async def test_an_idempotent_partition_has_up_to_max_in_flight_batches_out_in_sequence() -> None:
    clock = Clock()
    acc = pipelined(clock, max_in_flight=3)
    fill(acc, A0, 12)
    sent = []
    while (batch := drain_one(acc)) is not None:
        sent.append(batch)
    assert len(sent) == 3  # the fourth waits for room
    assert [b.base_sequence for b in sent] == [0, 2, 4]
    assert {b.producer_id for b in sent} == {7}
    assert acc.ready(leader_of).nodes == set()
    acc.complete(sent[0], base_offset=0, log_append_time_ms=-1)
    assert acc.ready(leader_of).nodes == {1}
    fourth = drain_one(acc)
    assert fourth is not None and fourth.base_sequence == 6


async def test_without_a_producer_id_a_partition_has_one_batch_in_flight() -> None:
    clock = Clock()
    acc = make(clock, batch_size=200, max_in_flight=5)  # as when idempotent, but no id
    fill(acc, A0, 6)
    assert drain_one(acc) is not None
    assert drain_one(acc) is None


async def test_retried_batches_go_back_in_send_order_and_out_one_at_a_time() -> None:
    clock, acc, (first, second, third) = three_in_flight(records=10)
    # answers can come back in any order (requests to different brokers after a move)
    acc.retry(third)
    acc.retry(first)
    assert drain_one(acc) is None  # a retry goes alone: the second is still out
    acc.retry(second)
    clock.ms += 1_000  # past the backoff
    resent = []
    for _ in range(3):
        batch = drain_one(acc)
        assert batch is not None
        resent.append(batch)
        if len(resent) < 3:
            assert drain_one(acc) is None  # the next retry waits for this one's answer
        acc.complete(batch, base_offset=0, log_append_time_ms=-1)
        clock.ms += 1_000
    assert resent == [first, second, third]  # as sent, under the same sequences
    assert [b.base_sequence for b in resent] == [0, 2, 4]
    fourth, fifth = drain_one(acc), drain_one(acc)  # new batches pipeline again
    assert fourth and fifth and (fourth.base_sequence, fifth.base_sequence) == (6, 8)
    assert fourth.attempts == fifth.attempts == 1


async def test_a_refusal_is_an_earlier_batchs_consequence_only_while_that_one_is_out() -> None:
    clock, acc, (first, second, third) = three_in_flight(records=6)
    assert not acc.earlier_unsettled(first)
    assert acc.earlier_unsettled(second)  # the first is in flight
    acc.retry(first)
    acc.retry(second)
    assert acc.earlier_unsettled(second)  # the first waits to be retried
    assert acc.earlier_unsettled(third)
    clock.ms += 1_000
    assert drain_one(acc) is None  # the third is still out: retries wait for it
    acc.retry(third)
    assert drain_one(acc) is first
    acc.fail(first, RequestTimedOutError("gone"))  # for good: nothing before the second
    assert not acc.earlier_unsettled(second)
    assert acc.earlier_unsettled(third)


async def test_a_refused_sequence_is_forgotten_with_the_retries_sent_after_it() -> None:
    clock, acc, (first, second, third) = three_in_flight(records=8)
    acc.retry(second)  # refused for the first's gap, kept as it is
    acc.retry(third)
    acc.forget_sequences(first)  # the first's sequence itself was refused
    acc.retry(first)
    assert [b.producer_id for b in (first, second, third)] == [-1, -1, -1]
    acc.reset_producer(producer_id=8, producer_epoch=0)
    clock.ms += 1_000
    resent = []
    while (batch := drain_one(acc)) is not None:
        resent.append(batch)
        acc.complete(batch, base_offset=0, log_append_time_ms=-1)
        clock.ms += 1_000
    assert resent[:3] == [first, second, third]
    assert [(b.producer_id, b.base_sequence) for b in resent] == [(8, 0), (8, 2), (8, 4), (8, 6)]


async def test_a_new_batch_never_follows_one_in_flight_under_an_older_producer_id() -> None:
    """Under two ids the leader cannot order them: the old one could fail and be retried
    after the new one was written."""
    clock = Clock()
    acc = pipelined(clock)
    fill(acc, A0, 6)
    old = drain_one(acc)
    assert old is not None and old.producer_id == 7
    acc.reset_producer(producer_id=8, producer_epoch=0)
    assert drain_one(acc) is None
    acc.complete(old, base_offset=0, log_append_time_ms=-1)
    new = drain_one(acc)
    assert new is not None and (new.producer_id, new.base_sequence) == (8, 0)
    assert drain_one(acc) is not None  # and under one id they pipeline again


async def test_split_halves_go_back_before_the_batches_sent_after_them() -> None:
    clock = Clock()
    acc = pipelined(clock)
    for i in range(4):
        append(acc, A0, bytes([i]) * 30)  # one batch of 4
    acc.begin_flush()
    first = drain_one(acc)
    append(acc, A0, b"later")
    second = drain_one(acc)
    assert first and second and first.record_count > 1
    acc.retry(second)  # refused: the first is out
    acc.split(first)
    acc.end_flush()
    clock.ms += 1_000
    order, sent = [], []
    while (batch := drain_one(acc)) is not None:
        order.append(batch)
        sent += values(batch)
        acc.complete(batch, base_offset=0, log_append_time_ms=-1)
        clock.ms += 1_000
    assert order[-1] is second
    assert sent == [bytes([i]) * 30 for i in range(4)] + [b"later"]
    assert [b.base_sequence for b in order] == [0, first.record_count // 2, first.record_count]


async def test_a_transactional_batchs_halves_stay_transactional() -> None:
    """Review 101: split halves were stamped without the transactional flag, so a
    transaction's records split on MESSAGE_TOO_LARGE went into the log outside it (read
    even if the transaction aborted)."""
    clock = Clock()
    acc = pipelined(clock)
    acc.transactional = True
    fill(acc, A0, 2)
    acc.begin_flush()
    whole = drain_one(acc)
    assert whole is not None and whole.record_count == 2
    acc.split(whole)
    sequences = []
    for _ in range(2):  # (a retry goes out alone: the second half after the first)
        half = drain_one(acc)
        assert half is not None and half.payload is not None
        (batch,) = decode_batches(half.payload)
        assert batch.is_transactional and batch.producer_id == 7
        sequences.append(batch.base_sequence)
        acc.complete(half, base_offset=0, log_append_time_ms=-1)
    assert sequences == [0, 1]


async def test_no_more_than_max_in_flight_are_sent_past_a_batch_not_yet_settled() -> None:
    """From a review: the first batch's answer is still out (its leader moved) while the
    new leader answers the next ones. Sending past five would let the leader forget the
    first, and its retry would then be taken for a broken sequence and written twice."""
    clock = Clock()
    acc = pipelined(clock)
    fill(acc, A0, 14)
    first, *others = (drain_one(acc) for _ in range(5))
    assert first and all(others)
    for batch in others:  # answered; the first is not
        assert batch is not None
        acc.complete(batch, base_offset=0, log_append_time_ms=-1)
    assert drain_one(acc) is None  # the sixth waits: the first may still be written
    acc.retry(first)  # its answer was lost
    clock.ms += 1_000
    assert drain_one(acc) is first  # alone
    assert drain_one(acc) is None
    acc.complete(first, base_offset=0, log_append_time_ms=-1)
    sixth = drain_one(acc)
    assert sixth is not None and sixth.base_sequence == 10
    assert drain_one(acc) is not None  # the window moved on: pipelining again


async def test_split_halves_of_a_batch_in_doubt_stay_in_doubt() -> None:
    """A batch whose earlier attempt may be in some replica's log must not have its
    records re-sent under new sequences through its halves either."""
    clock = Clock()
    acc = make(clock, linger_ms=10_000)
    for i in range(4):
        append(acc, A0, bytes([i]))
    acc.begin_flush()
    (batch,) = acc.drain({1}, leader_of, 1 << 20)[1]
    batch.in_doubt = True  # its first attempt's answer was lost
    acc.split(batch)
    assert batch.split_into is not None
    assert all(half.in_doubt for half in batch.split_into)


async def test_batches_behind_one_refused_for_sure_are_no_longer_in_doubt() -> None:
    """The first of three is refused (its sequence, for sure); the second's answer was
    lost (in doubt) and it waits for a retry; the third is still out. A replica holding
    either would hold the first too, and none does: the second is stamped anew, and the
    third, whatever its own answer, is known to be nowhere."""
    _clock, acc, (first, second, third) = three_in_flight(6)
    second.in_doubt = True
    acc.retry(second)
    acc.forget_sequences(first)
    assert not second.in_doubt and second.base_sequence == -1  # re-stamped when sent
    assert acc.unwritten(third)
    assert not acc.unwritten(first)  # unstamped now: its next stamp is a new story
