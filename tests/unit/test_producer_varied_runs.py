"""Runs of records of varied sizes (``RecordAccumulator._reserve`` for sizes within a
band, settled by ``_unreserve`` from the records' lengths): the accumulator with them
against the same one without room taken ahead (LANE_RECORDS = 0), record by record at
the edges and as hypothesis finds them (the fuzz of whole accumulators is
test_producer_room_taken_ahead's), and through the producer (its buffer gauge, and a
send waiting for the buffer)."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import client.accumulator as accmod
from client.accumulator import HELD_PER_RECORD, RECORD_OVERHEAD_BOUND, RecordAccumulator
from client.types import TopicPartition
from protocol.records import HEADER_SIZE
from tests.unit.test_producer_metrics import _fill, _fill_both
from tests.unit.test_producer_sender import ScriptedCluster, started

# --- record by record, at the edges ----------------------------------------------------

TP = TopicPartition("a", 0)


def both(records, *, batch_size=1 << 20, value_max=2**62, memory=2**62):  # type: ignore[no-untyped-def]
    """Each record by append_to() (else append()) into one accumulator and by the same
    with LANE_RECORDS = 0 into another; every count compared after every record."""
    accs = []
    for lanes in (128, 0):
        acc = RecordAccumulator(batch_size=batch_size, clock=lambda: 0.0)
        acc.value_max, acc.buffer_memory = value_max, memory
        accs.append((lanes, acc, []))
    for key, value, stamp in records:
        for lanes, acc, futures in accs:
            accmod.LANE_RECORDS = lanes
            try:
                batch = acc.open_batches.get(TP)
                f = None if batch is None else acc.append_to(batch, value, stamp, key)
                if f is None:
                    f = acc.append(TP, key, value, None, stamp)
                futures.append(f)
            finally:
                accmod.LANE_RECORDS = 128
        (_, fast, ff), (_, ref, rf) = accs
        assert [(f._batch.count, f._index) for f in ff[-1:]] == [
            (f._batch.count, f._index) for f in rf[-1:]
        ]
        assert fast.buffered_bytes - fast.taken_ahead() == ref.buffered_bytes
        b1, b2 = fast.open_batches.get(TP), ref.open_batches.get(TP)
        if b1 is not None:
            w, h = accmod._unused(b1) if b1.left or b1.lane_start >= 0 else (0, 0)
            assert (b1.count, b1.written - w, b1.size_bound - h) == (
                b2.count,
                b2.written,
                b2.size_bound,
            )
    (_, fast, ff), (_, ref, rf) = accs
    fast.give_back_room()
    for acc, futures in ((fast, ff), (ref, rf)):
        for batch in {id(f._batch): f._batch for f in futures}.values():
            acc._close(batch)

    def payloads(futures):  # type: ignore[no-untyped-def]
        return [bytes(b.payload) for b in {id(f._batch): f._batch for f in futures}.values()]

    assert [f._index for f in ff] == [f._index for f in rf]
    assert payloads(ff) == payloads(rf)
    assert fast.buffered_bytes == ref.buffered_bytes
    return fast


S = 1_000_000


@pytest.mark.parametrize(
    "sizes",
    [
        [54, 55, 55, 54, 55, 56, 55, 54],  # across 55/56
        [8_178, 8_179, 8_178, 8_180, 8_179],  # across 8,179/8,180
        [0, 1, 2, 0, 1, 3, 2, 0],  # empty values: a run of up to 2
        [100, 120, 240, 241, 100, 482, 483],  # past the run's largest, then a new run
    ],
)
async def test_band_edges(sizes: list[int]) -> None:
    both([(None, b"v" * s, S) for s in sizes * 20])


async def test_keyed_runs_empty_keys_and_keyless_after() -> None:
    recs = []
    for i in range(200):
        recs.append((b"" if i % 3 else b"k" * (i % 20), b"v" * (30 + i % 7), S))
    recs += [(None, b"v" * 33, S)] * 30  # keyless after a keyed run: a None key
    recs += [(b"", b"", S)] * 30  # keyed and empty
    both(recs)


@pytest.mark.parametrize("before", [8_150])  # (2**20: test_varied_runs_across_2_to_the_20)
async def test_offset_delta_widths(before: int) -> None:
    recs = [(None, b"v" * (i % 3), S) for i in range(before)]
    recs += [(None, b"v" * (i % 9), S) for i in range(200)]
    both(recs, batch_size=1 << 40)


async def test_window_edge() -> None:
    recs = [(None, b"v" * (40 + i % 5), S + min(i * 100, 8_191 + (i % 2))) for i in range(200)]
    both(recs)


async def test_value_max_and_room() -> None:
    # a run that would be counted past value_max, and one whose largest does not fit
    recs = [(None, b"v" * s, S) for s in [100, 120, 150, 151, 149, 60, 61] * 10]
    fast = both(recs, value_max=150)
    recs = [(None, b"v" * s, S) for s in [1_000, 1_900, 1_500, 1_200] * 10]
    both(recs, batch_size=5_000)
    both(recs, batch_size=6_000, memory=20_000)
    assert fast is not None


# --- as hypothesis finds them ---------------------------------------------------------

EDGES = [0, 1, 27, 28, 54, 55, 56, 57, 111, 112, 4_089, 4_090, 8_178, 8_179, 8_180, 8_181]


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 30), st.just("headers")),  # key length
            st.one_of(st.sampled_from(EDGES), st.integers(0, 300)),  # value size about
            st.integers(0, 60),  # the spread of the run's sizes
            st.sampled_from([0, 0, 0, 1, 63, 64, 4095, 8191, 8192, -1]),  # ms after
            st.integers(1, 300),
        ),
        max_size=12,
    ),
    st.integers(150, 200_000),
    st.one_of(st.none(), st.integers(0, 400_000)),
    st.randoms(use_true_random=False),
)
@example([(None, 0, 3, 0, 300)] * 35, 300_000, None, random.Random(1))
@example([(0, 0, 3, 0, 300)] * 35, 300_000, 10**7, random.Random(2))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_varied_runs_fill_batches_exactly_as_append(runs, batch_size, buffer_memory, rnd) -> None:  # type: ignore[no-untyped-def]
    records = []
    stamp = 0
    for key_len, size, spread, step, count in runs:
        for _ in range(count):
            value_len = max(0, size + rnd.randint(-spread, spread))
            if key_len == "headers":
                records.append((None, b"v" * value_len, stamp, [("h", b"v")]))
            else:
                key = None if key_len is None else b"k" * rnd.randint(0, key_len)
                records.append((key, b"v" * value_len, stamp, None))
        stamp += step
    asyncio.run(_fill_both(records, batch_size, buffer_memory))


async def _past(limit: int, sizes: list[int]) -> None:
    """Records of a few varied sizes until past ``limit`` records in one batch."""
    tp = TopicPartition("a", 0)
    fast = RecordAccumulator(batch_size=1 << 40, clock=lambda: 0.0)
    slow = RecordAccumulator(batch_size=1 << 40, clock=lambda: 0.0)
    values = [b"v" * sizes[i % len(sizes)] for i in range(limit + 300)]
    n = len(values)
    _fill(fast, [None] * n, values, [1_000] * n)
    for v in values:
        slow.append(tp, None, v, None, 1_000)
    fast.give_back_room()
    b1, b2 = fast.open_batches[tp], slow.open_batches[tp]
    assert (b1.count, b1.written, b1.size_bound) == (b2.count, b2.written, b2.size_bound)
    assert fast.buffered_bytes == slow.buffered_bytes


async def test_varied_runs_across_8192_records() -> None:
    await _past(8_192, [3, 7, 1, 0, 9])


async def test_varied_runs_across_2_to_the_20_records() -> None:
    await _past(1 << 20, [3, 7, 1, 0, 9])


# --- through the producer --------------------------------------------------------------


def expected_held(producer, futures) -> int:  # type: ignore[no-untyped-def]
    acc = producer._accumulator
    per_batch: dict[int, int] = {}
    for f, size in futures:
        batch = f._batch
        if batch in acc._incomplete:
            per_batch[id(batch)] = per_batch.get(id(batch), HEADER_SIZE) + size
    return sum(per_batch.values())


@pytest.mark.parametrize("seed", range(40))
async def test_buffer_available_bytes_with_varied_runs(seed: int) -> None:
    rnd = random.Random(seed)
    tps = {TopicPartition("a", p): 1 + p % 2 for p in range(3)}
    cluster = ScriptedCluster(tps)
    memory = rnd.choice([50_000, 200_000, 2_000_000])
    producer = await started(
        cluster,
        batch_size=rnd.choice([500, 3_000, 16_384]),
        buffer_memory=memory,
        linger_ms=rnd.choice([0, 5, 60_000]) if memory > 100_000 else 5,
        max_block_ms=2_000,
    )
    futures = []
    try:
        keyed = rnd.random() < 0.5
        for i in range(rnd.randint(100, 1_500)):
            size = rnd.choice([rnd.randint(0, 55), rnd.randint(56, 300), rnd.randint(40, 70)])
            key = b"k%d" % rnd.randint(0, 30) if keyed and rnd.random() < 0.9 else None
            value = b"v" * size
            f = await producer.send("a", value, key=key)
            futures.append((f, size + len(key or b"") + RECORD_OVERHEAD_BOUND + HELD_PER_RECORD))
            gauge = producer.metrics()["producer-metrics"]["buffer-available-bytes"]
            # (never past buffer_memory: send() counts a new batch's header too, review 133)
            assert gauge == memory - expected_held(producer, futures) >= 0, i
            if rnd.random() < 0.05:
                await asyncio.sleep(0)
        await producer.flush()
        assert producer._accumulator.buffered_bytes == 0
        assert producer.metrics()["producer-metrics"]["buffer-available-bytes"] == memory
        for f, _ in futures:
            assert (await f).offset >= 0
    finally:
        await producer._close()


@pytest.mark.parametrize("lanes", [0, 128])
@pytest.mark.parametrize("memory", [50_000, 20_000])  # (20,000: nothing sent yet)
async def test_a_send_waiting_for_buffer_makes_lingering_batches_sendable(
    lanes: int, memory: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 133 (as it was before runs of varied sizes too): a send blocked on
    buffer_memory waited out max_block_ms behind a batch lingering for 60 s, with nothing
    in flight, and failed."""
    monkeypatch.setattr(accmod, "LANE_RECORDS", lanes)
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    producer = await started(
        cluster, batch_size=16_384, buffer_memory=memory, linger_ms=60_000, max_block_ms=300
    )
    try:
        # 30-byte records: a batch's 16,384 bytes hold ~60 KB of buffer (80 B a record
        # besides its bytes), so the buffer runs out before the batch is full: a send
        # waiting for it makes the lingering batch go (Kafka's ``exhausted``)
        futures = [await producer.send("a", b"v" * 30) for _ in range(500)]
        assert producer._accumulator.exhausted == 0
        assert any(f.done() for f in futures)  # the batches the waits sent, answered
        await producer.flush()  # (the last one lingers)
        assert all(f.exception() is None for f in futures)
    finally:
        await producer._close()


async def test_the_first_send_to_wait_for_buffer_sends_the_lingering_batch() -> None:
    """Nothing in flight whose answer would wake the sender: the wait itself does."""
    cluster = ScriptedCluster({TopicPartition("a", 0): 1})
    producer = await started(
        cluster, batch_size=16_384, buffer_memory=2_000, linger_ms=60_000, max_block_ms=300
    )
    try:
        futures = [await producer.send("a", b"v" * 300) for _ in range(4)]
        await asyncio.sleep(0.01)  # the sender's passes: the batch lingers for 60 s
        assert not any(f.done() for f in futures)  # nothing sent
        futures.append(await producer.send("a", b"v" * 300))  # no room: it waits
        assert all(f.done() and f.exception() is None for f in futures[:4])
        await producer.flush()
        assert futures[4].exception() is None
    finally:
        await producer._close()
