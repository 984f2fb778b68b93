"""Room taken ahead for runs of like records (``RecordAccumulator._reserve``,
LANE_RECORDS): the accumulator with it against the same one without it (LANE_RECORDS =
0), operation by operation (review 131's fuzz: appends of every kind, drains, answers,
failures, splits, retries, expiry, send_batch, failed partitions, producer resets;
review 133's sizes: runs of varied sizes within and across the bands 55/56 and
8,179/8,180, keyed records of many sizes, empty keys and values, tiny batches and
buffers, a small value_max, the 8,192 ms window), and what it must not do to other sends
(the buffer) and to callbacks."""

from __future__ import annotations

import asyncio
import random

import pytest

import client.accumulator as accmod
from client.accumulator import HELD_PER_RECORD, RECORD_OVERHEAD_BOUND, RecordAccumulator, _unused
from client.types import TopicPartition
from protocol.errors import RequestTimedOutError
from protocol.records import HEADER_SIZE
from tests.unit.test_producer_sender import ScriptedCluster, started

TPS = [TopicPartition("a", 0), TopicPartition("a", 1)]
LEADERS = {TPS[0]: 1, TPS[1]: 2}


def leader_of(tp: TopicPartition) -> int | None:
    return LEADERS.get(tp)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000.0

    def __call__(self) -> float:
        return self.ms


def check(fast: RecordAccumulator, ref: RecordAccumulator) -> None:
    assert fast.buffered_bytes == sum(b.size_bound for b in fast._incomplete)
    assert fast.buffered_bytes - fast.taken_ahead() == ref.buffered_bytes
    for batch in fast._incomplete:
        if batch.left or batch.lane_start >= 0:  # room is taken only in an open batch
            assert batch.is_open and fast.open_batches[batch.tp] is batch
    assert {tp: b.count for tp, b in fast.open_batches.items()} == {
        tp: b.count for tp, b in ref.open_batches.items()
    }
    assert {tp: [b.count for b in q] for tp, q in fast._batches.items()} == {
        tp: [b.count for b in q] for tp, q in ref._batches.items()
    }
    for tp, b1 in fast.open_batches.items():  # exact, but for the room a run took ahead
        b2 = ref.open_batches[tp]
        w, h = _unused(b1) if b1.left or b1.lane_start >= 0 else (0, 0)
        assert (b1.written - w, b1.size_bound - h) == (b2.written, b2.size_bound)


def call(acc: RecordAccumulator, lanes: int, fn, *args):  # type: ignore[no-untyped-def]
    accmod.LANE_RECORDS = lanes
    try:
        return fn(acc, *args)
    finally:
        accmod.LANE_RECORDS = 128


SIZES = [
    0,
    1,
    10,
    27,
    28,
    40,
    54,
    55,
    56,
    57,
    60,
    100,
    111,
    112,
    200,
    1_000,
    4_000,
    8_100,
    8_179,
    8_180,
    8_181,
    9_000,
    16_000,
]


def size_of(rnd: random.Random, last: list[int]) -> int:
    mode = rnd.random()
    if mode < 0.4 and last:
        # near the last: a varied run within (or just across) a band
        return max(0, last[0] + rnd.randint(-30, 30))
    if mode < 0.6 and last:
        return max(0, min(2 * last[0] + rnd.randint(-2, 2), 20_000))
    return rnd.choice(SIZES)


async def scenario(seed: int) -> None:  # noqa: C901, PLR0912
    rnd = random.Random(seed)
    clock_f, clock_r = Clock(), Clock()
    batch_size = rnd.choice([120, 200, 300, 1_000, 5_000, 17_000, 40_000, 200_000])
    memory = rnd.choice([2**62, 600, 3_000, 20_000, 100_000, 500_000])
    value_max = rnd.choice([2**62, 2**62, 60, 130, 8_200, 9_000])
    fast = RecordAccumulator(batch_size=batch_size, linger_ms=5, clock=clock_f)
    ref = RecordAccumulator(batch_size=batch_size, linger_ms=5, clock=clock_r)
    flights = rnd.choice([1, 5])
    for acc in (fast, ref):
        acc.buffer_memory = memory
        acc.max_in_flight = flights
        acc.value_max = value_max
    futures: list[tuple[object, object]] = []
    ts = 1_700_000_000_000
    in_flight: list[tuple[object, object]] = []
    keyed_share = rnd.choice([0.0, 0.05, 0.5, 0.95, 1.0])
    last: list[int] = []

    def add(acc: RecordAccumulator, tp, key, value, headers, stamp):  # type: ignore[no-untyped-def] # noqa: PLR0917
        batch = acc.open_batches.get(tp)
        future = None
        if batch is not None and headers is None:
            future = acc.append_to(batch, value, stamp, key)
        if future is None:
            future = acc.append(tp, key, value, headers, stamp)
        return future

    for _ in range(rnd.randint(50, 1_500)):
        op = rnd.random()
        tp = rnd.choice(TPS)
        if op < 0.85:
            ts += rnd.choice([0, 0, 0, 0, 0, 1, 1, 3, 63, 64, 4_000, 8_191, 8_192, 9_000, -2])
            kind = rnd.random()
            size = size_of(rnd, last)
            last[:] = [size]
            headers = [("h", b"v")] if kind < 0.03 else None
            if rnd.random() < keyed_share:
                klen = rnd.randint(0, min(size, 40))
                key = b"k" * klen
                value = b"v" * (size - klen)
            else:
                key = None
                value = b"v" * size
            f1 = call(fast, 128, add, tp, key, value, headers, ts)
            f2 = call(ref, 0, add, tp, key, value, headers, ts)
            assert (f1._batch.count, f1._index) == (f2._batch.count, f2._index)
            futures.append((f1, f2))
        elif op < 0.92:
            step = rnd.choice([0, 5, 50])
            for clock in (clock_f, clock_r):
                clock.ms += step
            nodes = {1, 2}
            max_request = rnd.choice([1 << 20, 2_000])
            d1 = call(fast, 128, RecordAccumulator.drain, nodes, leader_of, max_request)
            d2 = call(ref, 0, RecordAccumulator.drain, nodes, leader_of, max_request)
            assert {n: [(b.tp, b.count) for b in bs] for n, bs in d1.items()} == {
                n: [(b.tp, b.count) for b in bs] for n, bs in d2.items()
            }
            for node in d1:
                for b1, b2 in zip(d1[node], d2[node], strict=True):
                    assert bytes(b1.payload) == bytes(b2.payload)
                    assert b1.written == b2.written and b1.size_bound == b2.size_bound
                    in_flight.append((b1, b2))
        elif op < 0.97 and in_flight:
            b1, b2 = in_flight.pop(rnd.randrange(len(in_flight)))
            outcome = rnd.random()
            if outcome < 0.6:
                base = rnd.randint(0, 10**6)
                fast.complete(b1, base, -1)
                ref.complete(b2, base, -1)
            elif outcome < 0.75:
                fast.fail(b1, RuntimeError("x"))
                ref.fail(b2, RuntimeError("x"))
            elif outcome < 0.9 and b1.count > 1:
                fast.split(b1)
                ref.split(b2)
            else:
                fast.retry(b1, 0)
                ref.retry(b2, 0)
        elif op < 0.975:
            n = rnd.randint(1, 20)
            vals = [b"b" * rnd.choice([0, 10, 100]) for _ in range(n)]
            stamps = [ts] * n
            size = sum(len(v) + RECORD_OVERHEAD_BOUND for v in vals)
            f1 = fast.append_batch(tp, None, vals, stamps, None, size, 1 << 20)
            f2 = ref.append_batch(tp, None, vals, stamps, None, size, 1 << 20)
            futures.append((f1, f2))
        elif op < 0.98:
            which = rnd.choice([0, 1])

            def picked(t: TopicPartition, which: int = which) -> bool:
                return t.partition == which

            error = RequestTimedOutError("f")
            assert fast.fail_partitions(picked, error) == ref.fail_partitions(picked, error)
        elif op < 0.985:
            assert fast.fail_queued(RuntimeError("q")) == ref.fail_queued(RuntimeError("q"))
        elif op < 0.9875:
            fast.give_back_room()  # (a send short of buffer)
        elif op < 0.99:
            pid = rnd.randint(0, 5)
            fast.reset_producer(pid, 0)
            ref.reset_producer(pid, 0)
        else:
            step = rnd.choice([0, 200_000])
            for clock in (clock_f, clock_r):
                clock.ms += step
            e1 = fast.expire()
            e2 = ref.expire()
            assert [(b.tp, b.count) for b in e1] == [(b.tp, b.count) for b in e2]
        check(fast, ref)
    for _ in range(10_000):
        for clock in (clock_f, clock_r):
            clock.ms += 100
        for b1, b2 in in_flight:
            fast.complete(b1, 7, -1)
            ref.complete(b2, 7, -1)
        in_flight = []
        fast.begin_flush()
        ref.begin_flush()
        d1 = fast.drain({1, 2}, leader_of, 1 << 20)
        d2 = ref.drain({1, 2}, leader_of, 1 << 20)
        if not d1 and not d2 and not fast.has_batches and not ref.has_batches:
            break
        for node in d1:
            for b1, b2 in zip(d1[node], d2[node], strict=True):
                assert bytes(b1.payload) == bytes(b2.payload)
                in_flight.append((b1, b2))
        check(fast, ref)
    assert fast.buffered_bytes == ref.buffered_bytes == 0
    await asyncio.sleep(0)
    for f1, f2 in futures:
        assert f1.done() and f2.done()
        e1, e2 = f1.exception(), f2.exception()
        assert type(e1) is type(e2)
        if e1 is None:
            assert f1.result() == f2.result()


@pytest.mark.parametrize("seed", range(300))
async def test_fuzz_room_taken_ahead_against_none(seed: int) -> None:
    await scenario(seed)


async def test_a_lane_does_not_starve_another_topic_of_buffer_memory() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1, TopicPartition("b", 0): 1})
    producer = await started(
        cluster, batch_size=100_000, buffer_memory=3_000, linger_ms=60_000, max_block_ms=100
    )
    try:
        for _ in range(3):  # the whole way (the lane's first), then a run: room ahead
            await producer.send("a", b"x" * 100)
        held = producer._accumulator.buffered_bytes
        assert producer._accumulator.taken_ahead() > 0
        # three 100-byte records hold 709 of the 3,000 bytes, so a record of another
        # topic fits: room taken ahead goes back rather than keep it waiting (review 131:
        # it waited max_block_ms for room no record held, and failed)
        await producer.send("b", b"y" * 100)
        assert producer._accumulator.buffered_bytes <= 3_000, held
    finally:
        await producer._close()


async def test_buffer_available_bytes_counts_records_held() -> None:
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    producer = await started(cluster, batch_size=100_000, linger_ms=60_000)
    try:
        for _ in range(3):
            await producer.send("a", b"x" * 100)
        assert producer._accumulator.taken_ahead() > 0
        available = producer.metrics()["producer-metrics"]["buffer-available-bytes"]
        # the batch's header and three records of 100 bytes, as each is counted, not
        # the room taken ahead (review 131)
        assert producer.buffer_memory - available == HEADER_SIZE + 3 * (
            100 + RECORD_OVERHEAD_BOUND + HELD_PER_RECORD
        )
    finally:
        await producer._close()


async def test_polling_with_wait_timeout_does_not_grow_the_batch() -> None:
    acc = RecordAccumulator(batch_size=1 << 20, linger_ms=0, clock=lambda: 0.0)
    futures = [acc.append(TPS[0], None, b"x", None, 1_700_000_000_000) for _ in range(100)]
    batch = futures[0]._batch
    for _ in range(50):  # the caller polls while the batch waits (a slow broker)
        done, pending = await asyncio.wait(futures, timeout=0)
        assert not done and len(pending) == 100
    # every callback was removed again: the batch keeps each record once (review 131:
    # each poll added a callback entry that removal only marked, 5,000 here)
    assert len(batch.watchers or ()) <= 100
    assert not any(batch.callbacks.values()) if batch.callbacks else True


async def test_room_is_taken_for_runs_only() -> None:
    """Records whose sizes cross a band (the widths of their other fields change), or
    stamped past a batch's first 8,192 ms, take no room ahead (each would take it and give
    it back: twice the cost of counting it alone, review 131); the second of a run does,
    of one size or of sizes within a band."""
    acc = RecordAccumulator(batch_size=1 << 20, clock=lambda: 0.0)
    acc.append(TPS[0], None, b"first", None, 1_000)
    batch = acc.open_batches[TPS[0]]
    for size in (50, 60, 10, 8_000, 8_200, 40, 100):
        assert acc.append_to(batch, b"v" * size, 1_000) is not None
        assert acc.taken_ahead() == 0
    for stamp in (10_000, 10_001, 10_002):  # 9 s after the batch's first
        assert acc.append_to(batch, b"v" * 20, stamp) is not None
        assert acc.taken_ahead() == 0
    assert acc.append_to(batch, b"v" * 20, 1_001) is not None
    assert acc.taken_ahead() > 0  # the second of a run (20 after 20) in the batch's window
    acc.give_back_room()
    assert acc.append_to(batch, b"v" * 30, 1_001) is not None
    assert acc.taken_ahead() > 0  # 30 after 20: one band


async def test_a_run_of_varied_sizes_is_counted_exactly_when_it_ends() -> None:
    """A run of sizes within a band is counted at its largest while it lasts, and at
    each record's own size once it ends: as ``append()`` counts each record."""
    sizes = [60, 90, 120, 75, 180, 61, 179, 100, 100, 62]  # a run of up to 180 bytes
    fast = RecordAccumulator(batch_size=1 << 20, clock=lambda: 0.0)
    ref = RecordAccumulator(batch_size=1 << 20, clock=lambda: 0.0)
    for acc in (fast, ref):
        acc.append(TPS[0], None, b"first", None, 1_000)
    batch = fast.open_batches[TPS[0]]
    for size in sizes:
        assert fast.append_to(batch, b"v" * size, 1_000) is not None
        ref.append(TPS[0], None, b"v" * size, None, 1_000)
    assert batch.left > 0 and batch.lane_size == 180  # twice the larger of the first two
    taken = batch.written - ref.open_batches[TPS[0]].written
    assert taken > batch.left * 180  # the records taken, counted at 180 bytes each
    assert fast.buffered_bytes - fast.taken_ahead() == ref.buffered_bytes
    # a record past the run's largest ends it: counted exactly again
    assert fast.append_to(batch, b"v" * 181, 1_000) is not None
    ref.append(TPS[0], None, b"v" * 181, None, 1_000)
    assert batch.lane_start == batch.count  # (and the next run's room is taken)
    assert fast.buffered_bytes - fast.taken_ahead() == ref.buffered_bytes
    fast.give_back_room()
    assert batch.written == ref.open_batches[TPS[0]].written
    assert batch.size_bound == ref.open_batches[TPS[0]].size_bound
    assert fast.buffered_bytes == ref.buffered_bytes
    # keyed: the key and value together
    fast = RecordAccumulator(batch_size=1 << 20, clock=lambda: 0.0)
    ref = RecordAccumulator(batch_size=1 << 20, clock=lambda: 0.0)
    for acc in (fast, ref):
        acc.append(TPS[1], b"k", b"first", None, 1_000)
    batch = fast.open_batches[TPS[1]]
    for i, size in enumerate(sizes):
        key = b"key-%d" % (i % 3 * 50)
        assert fast.append_to(batch, b"v" * size, 1_000, key) is not None
        ref.append(TPS[1], key, b"v" * size, None, 1_000)
    assert batch.left > 0 and batch.lane_keyed_size > 0 and batch.lane_size == -1
    assert fast.buffered_bytes - fast.taken_ahead() == ref.buffered_bytes
    fast.give_back_room()
    assert batch.written == ref.open_batches[TPS[1]].written
    assert fast.buffered_bytes == ref.buffered_bytes
    assert bytes(fast._close(batch)) == bytes(ref._close(ref.open_batches[TPS[1]]))


async def test_the_runs_of_many_partitions_take_half_the_buffer_at_most() -> None:
    """Each open batch's run takes a share of half the buffer (review 132: one run per
    partition, each half of what was free, came to nearly all of it together)."""
    memory = 40_000
    acc = RecordAccumulator(batch_size=1 << 20, clock=lambda: 0.0)
    acc.buffer_memory = memory
    partitions = [TopicPartition("many", p) for p in range(8)]
    for tp in partitions:
        acc.append(tp, None, b"v" * 50, None, 1_000)
    for _ in range(3):
        for tp in partitions:
            assert acc.append_to(acc.open_batches[tp], b"v" * 50, 1_000) is not None
    assert 0 < acc.taken_ahead() <= memory // 2
    assert acc.buffered_bytes <= memory


async def test_a_run_of_varied_sizes_takes_no_record_over_max_request_size() -> None:
    """A run's largest size is at most what ``max_request_size`` lets a record be, so a
    larger record still goes the whole way (and is refused there, MessageTooLargeError)."""
    acc = RecordAccumulator(batch_size=1 << 20, clock=lambda: 0.0)
    acc.value_max = 150
    acc.append(TPS[0], None, b"first", None, 1_000)
    batch = acc.open_batches[TPS[0]]
    for size in (100, 120):
        assert acc.append_to(batch, b"v" * size, 1_000) is not None
    assert batch.left > 0 and batch.lane_size == 150
    assert acc.append_to(batch, b"v" * 150, 1_000) is not None
    assert acc.append_to(batch, b"v" * 151, 1_000) is None
