"""The consumer's positions and prefetch buffer, without a socket: fetch answers in, records
out, in order, never below the position, never from before a seek."""

import gc

import pytest
from crc32c import crc32c

from client.fetcher import FetchPosition, Subscription
from client.types import ConsumerRecord, TopicPartition
from protocol.errors import CrcMismatchError, InvalidRecordsError
from protocol.records import HEADER_SIZE, Record, encode_batch
from protocol.records.batch import ATTRIBUTES_POS, CONTROL_BIT, CRC_POS
from protocol.records.varints import read_varint

TP = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


def batch(base: int, count: int, compression: str = "none", tag: bytes = b"v") -> bytes:
    return encode_batch(
        [(None, tag + str(base + i).encode(), None, 1_000 + base + i) for i in range(count)],
        base_offset=base,
        compression=compression,
    )


def as_tuple(tp: TopicPartition, record: Record) -> tuple[str, int, int, bytes | None]:
    return (tp.topic, tp.partition, record.offset, record.value)


def offsets(got: dict[TopicPartition, list[object]], tp: TopicPartition = TP) -> list[int]:
    return [r[2] for r in got.get(tp, [])]  # type: ignore[index]


def positioned(*tps: TopicPartition, at: int = 0, max_buffer_bytes: int = 1 << 20) -> Subscription:
    sub = Subscription(max_buffer_bytes=max_buffer_bytes)
    sub.assign(tps or [TP])
    for tp in tps or [TP]:
        sub.seek(tp, at)
    return sub


def fetchable(sub: Subscription, now_ms: float) -> list[FetchPosition]:
    """What the consumer would fetch now (leaders unknown here: all under None)."""
    fetch = sub.fetchable_by_leader(now_ms, {}).get(None)
    return list(fetch.positions.values()) if fetch is not None else []


def fetch_one(sub: Subscription, tp: TopicPartition = TP) -> FetchPosition:
    (asked,) = [a for a in fetchable(sub, 0) if a.tp == tp]
    return asked


def answered(sub: Subscription, asked: FetchPosition, data: bytes) -> int:
    return sub.add_fetched(asked, memoryview(data))


def test_records_below_the_position_are_skipped() -> None:
    """The broker answers with whole batches, which may start before the fetch offset."""
    sub = positioned(at=3)
    asked = fetch_one(sub)
    assert asked.offset == 3
    answered(sub, asked, batch(0, 5) + batch(5, 2))
    got = sub.take(None, None, as_tuple)
    assert offsets(got) == [3, 4, 5, 6]
    assert sub.states[TP].position == 7


def test_the_next_fetch_starts_after_the_last_whole_batch_while_the_user_reads() -> None:
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 4) + batch(4, 4)[:-7])  # a partial batch at the end
    assert sub.states[TP].position == 0  # the user has read nothing yet
    asked = fetch_one(sub)  # prefetch: the next Fetch goes out before the user consumes
    assert asked.offset == 4
    answered(sub, asked, batch(4, 4))
    assert offsets(sub.take(None, None, as_tuple)) == list(range(8))


def test_a_fetch_answering_only_a_partial_batch_changes_nothing() -> None:
    sub = positioned()
    asked = fetch_one(sub)
    assert answered(sub, asked, batch(0, 10)[:30]) == 0
    assert fetchable(sub, 0)[0].offset == 0
    assert sub.take(None, None, as_tuple) == {}


def test_a_seek_drops_buffered_data_and_answers_to_fetches_sent_before_it() -> None:
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 5))
    stale = fetch_one(sub)  # in flight at offset 5
    sub.seek(TP, 100)
    assert sub.take(None, None, as_tuple) == {}  # the buffered 0..4 are gone
    assert answered(sub, stale, batch(5, 5)) == 0  # and the old answer is dropped
    asked = fetch_one(sub)
    assert asked.offset == 100
    answered(sub, asked, batch(98, 5))
    assert offsets(sub.take(None, None, as_tuple)) == [100, 101, 102]


def test_seek_backwards_rereads() -> None:
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 3))
    assert offsets(sub.take(None, None, as_tuple)) == [0, 1, 2]
    sub.seek(TP, 1)
    answered(sub, fetch_one(sub), batch(0, 3))
    assert offsets(sub.take(None, None, as_tuple)) == [1, 2]


def test_max_records_and_the_position_advance_record_by_record() -> None:
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 5) + batch(5, 5))
    assert offsets(sub.take(None, 3, as_tuple)) == [0, 1, 2]
    assert sub.states[TP].position == 3
    assert offsets(sub.take(None, 4, as_tuple)) == [3, 4, 5, 6]
    assert offsets(sub.take(None, None, as_tuple)) == [7, 8, 9]
    assert sub.states[TP].buffered_bytes == 0


def test_take_rotates_over_partitions_and_filters_by_partition() -> None:
    sub = positioned(TP, TP1)
    for tp in (TP, TP1):
        answered(sub, fetch_one(sub, tp), batch(0, 4, tag=tp.partition.to_bytes()))
    first = sub.take(None, 2, as_tuple)
    second = sub.take(None, 2, as_tuple)
    assert len(first) == len(second) == 1
    assert set(first) | set(second) == {TP, TP1}  # each call starts at another partition
    only = sub.take([TP1], None, as_tuple)
    assert offsets(only, TP1) == [2, 3]
    assert set(only) == {TP1}
    assert offsets(sub.take(None, None, as_tuple)) == [2, 3]


def _with_last_offset_delta(data: bytes, delta: int) -> bytes:
    """A batch as compaction leaves it: fewer records than its offset range."""
    patched = bytearray(data)
    patched[ATTRIBUTES_POS + 2 : ATTRIBUTES_POS + 6] = delta.to_bytes(4, "big")
    patched[CRC_POS:ATTRIBUTES_POS] = crc32c(bytes(patched[ATTRIBUTES_POS:])).to_bytes(4, "big")
    return bytes(patched)


def test_the_position_skips_compaction_gaps_at_batch_ends() -> None:
    sub = positioned(at=10)
    gappy = _with_last_offset_delta(batch(10, 2), 4)  # offsets 10, 11 kept of 10..14
    answered(sub, fetch_one(sub), gappy)
    assert offsets(sub.take(None, None, as_tuple)) == [10, 11]
    assert sub.states[TP].position == 15
    assert fetch_one(sub).offset == 15


def _recrc(data: bytearray) -> None:
    data[CRC_POS:ATTRIBUTES_POS] = crc32c(bytes(data[ATTRIBUTES_POS:])).to_bytes(4, "big")


def _control(base: int) -> bytes:
    data = bytearray(batch(base, 1))
    attributes = int.from_bytes(data[ATTRIBUTES_POS : ATTRIBUTES_POS + 2], "big") | CONTROL_BIT
    data[ATTRIBUTES_POS : ATTRIBUTES_POS + 2] = attributes.to_bytes(2, "big")
    data[CRC_POS:ATTRIBUTES_POS] = crc32c(bytes(data[ATTRIBUTES_POS:])).to_bytes(4, "big")
    return bytes(data)


def test_control_batches_are_not_records_but_are_passed_over() -> None:
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 2) + _control(2) + batch(3, 1))
    assert offsets(sub.take(None, None, as_tuple)) == [0, 1, 3]
    assert fetch_one(sub).offset == 4


def test_an_answer_of_only_a_control_batch_still_moves_the_fetch_offset() -> None:
    sub = positioned()
    assert answered(sub, fetch_one(sub), _control(0)) == 0
    assert fetch_one(sub).offset == 1


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_codec_decodes(codec: str) -> None:
    sub = positioned(at=2)
    answered(sub, fetch_one(sub), batch(0, 50, codec))
    got = sub.take(None, None, as_tuple)[TP]
    assert got[0] == ("t", 0, 2, b"v2")
    assert offsets({TP: got}) == list(range(2, 50))


def test_buffer_bound_pauses_fetching_until_the_user_catches_up() -> None:
    first = batch(0, 20)
    sub = positioned(max_buffer_bytes=len(first))
    answered(sub, fetch_one(sub), first)
    assert fetchable(sub, 0) == []  # full: no more prefetching for this partition
    consumed = sub.chunks_consumed
    sub.take(None, 19, as_tuple)
    assert fetchable(sub, 0) == []  # one record still buffered
    sub.take(None, 1, as_tuple)
    assert sub.chunks_consumed == consumed + 1
    assert [a.offset for a in fetchable(sub, 0)] == [20]


def test_busy_leaders_and_backed_off_partitions_are_not_fetched() -> None:
    sub = positioned(TP, TP1)
    leaders = {TP: 1, TP1: 2}
    assert list(sub.fetchable_by_leader(0, leaders, busy={1})) == [2]  # 1 has a Fetch out
    sub.back_off(fetch_one(sub, TP1), 500)
    assert fetchable(sub, 100) == [sub.states[TP].asked]
    assert [a.tp for a in fetchable(sub, 500)] == [TP, TP1]


def test_errors_are_raised_once_and_only_for_the_partition_asked() -> None:
    sub = positioned(TP, TP1)
    asked = fetch_one(sub, TP1)
    sub.fail(asked, InvalidRecordsError("bad"))
    assert sub.pop_error([TP]) is None
    assert isinstance(sub.pop_error([TP1]), InvalidRecordsError)
    assert sub.pop_error(None) is None


def test_a_corrupt_answer_raises_and_keeps_nothing() -> None:
    sub = positioned()
    damaged = bytearray(batch(0, 3))
    damaged[-1] ^= 0xFF
    with pytest.raises(CrcMismatchError):
        answered(sub, fetch_one(sub), bytes(damaged))
    assert sub.take(None, None, as_tuple) == {}
    assert fetch_one(sub).offset == 0


def test_a_failing_deserializer_stops_at_the_record_until_the_user_seeks_past() -> None:
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 5))

    def strict(tp: TopicPartition, record: Record) -> object:
        if record.offset == 2:
            raise ValueError("not json")
        return as_tuple(tp, record)

    assert offsets(sub.take(None, None, strict)) == [0, 1]  # what came before is returned
    with pytest.raises(ValueError, match="not json"):
        sub.take(None, None, strict)
    assert sub.states[TP].position == 2
    with pytest.raises(ValueError, match="not json"):
        sub.take(None, None, strict)  # again: the bad record is not silently skipped
    sub.seek(TP, 3)
    answered(sub, fetch_one(sub), batch(0, 5))
    assert offsets(sub.take(None, None, strict)) == [3, 4]


def test_a_bad_record_in_one_partition_does_not_lose_another_partitions_records() -> None:
    sub = positioned(TP, TP1)
    answered(sub, fetch_one(sub, TP), batch(0, 3))
    answered(sub, fetch_one(sub, TP1), batch(0, 3, tag=b"bad"))

    def strict(tp: TopicPartition, record: Record) -> object:
        if (record.value or b"").startswith(b"bad"):
            raise ValueError("not json")
        return as_tuple(tp, record)

    taken: dict[TopicPartition, list[object]] = {}
    for _ in range(2):  # whichever partition the rotation visits first
        try:
            for tp, records in sub.take(None, None, strict).items():
                taken.setdefault(tp, []).extend(records)
        except ValueError:
            continue
    assert offsets(taken, TP) == [0, 1, 2]  # handed out, not dropped with the error
    assert sub.states[TP1].position == 0  # the bad partition did not move
    with pytest.raises(ValueError, match="not json"):
        sub.take(None, None, strict)


def test_an_out_of_range_reset_is_marked_so_committed_offsets_are_not_reused() -> None:
    sub = positioned(TP)
    sub.request_reset(TP)  # what an OFFSET_OUT_OF_RANGE answer does
    assert sub.states[TP].reset_by_policy
    assert sub.set_reset_position(TP, 10, sub.states[TP].generation)
    assert not sub.states[TP].reset_by_policy


def test_resets_apply_only_if_the_user_did_not_move_meanwhile() -> None:
    sub = Subscription(max_buffer_bytes=1 << 20)
    sub.assign([TP, TP1])
    assert sub.needs_position() == [TP, TP1]
    generation = sub.states[TP].generation
    sub.seek(TP, 7)  # the user seeks while the ListOffsets for the reset is in flight
    assert not sub.set_reset_position(TP, 0, generation)
    assert sub.states[TP].position == 7
    assert sub.set_reset_position(TP1, 42, sub.states[TP1].generation)
    assert fetchable(sub, 0)[1].offset == 42
    sub.request_reset(TP)
    assert sub.needs_position() == [TP]


def test_assign_keeps_the_partitions_kept() -> None:
    sub = positioned(TP, TP1, at=5)
    sub.assign([TP1, TopicPartition("u", 0)])
    assert set(sub.states) == {TP1, TopicPartition("u", 0)}
    assert sub.states[TP1].position == 5
    with pytest.raises(ValueError, match="not assigned"):
        sub.seek(TP, 1)
    with pytest.raises(ValueError, match="negative"):
        sub.seek(TP1, -1)


# --- the fast path: ConsumerRecords made by the decoder, handed out a slice per batch -----


def test_without_make_record_the_records_are_consumer_records() -> None:
    sub = positioned(at=3)
    answered(sub, fetch_one(sub), batch(0, 5) + batch(5, 2))
    got = sub.take(None, None)[TP]
    assert all(type(r) is ConsumerRecord for r in got)
    assert [r.offset for r in got] == [3, 4, 5, 6]  # below the position: skipped
    assert got[0] == ConsumerRecord("t", 0, 3, 1_003, None, b"v3", ())
    assert sub.states[TP].position == 7


def test_the_fast_path_slices_batches_by_max_records() -> None:
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 5) + batch(5, 5))
    assert [r.offset for r in sub.take(None, 3)[TP]] == [0, 1, 2]
    assert sub.states[TP].position == 3
    assert [r.offset for r in sub.take(None, 4)[TP]] == [3, 4, 5, 6]
    assert sub.states[TP].position == 7
    assert [r.offset for r in sub.take(None, None)[TP]] == [7, 8, 9]
    assert sub.states[TP].buffered_bytes == 0


@pytest.mark.parametrize("deserializing", [False, True])
def test_records_the_user_drops_before_the_next_poll_do_not_wake_the_collector(
    deserializing: bool,
) -> None:
    """A record's tuple is made when the user takes it, not when its batch is decoded:
    polls of 500 that the user drops leave the collector's count where it was. Made a
    batch at a time (5,000 here), each batch ran a generation-0 collection or more, and
    the survivors were walked again by the older generations (a quarter of a consumer's
    time)."""
    sub = positioned(max_buffer_bytes=1 << 30)
    answered(sub, fetch_one(sub), batch(0, 5_000) + batch(5_000, 5_000))
    make = as_tuple if deserializing else None
    passes: list[int] = []

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    gc.collect()
    gc.callbacks.append(counted)
    try:
        taken = 0
        while got := sub.take(None, 500, make):
            taken += len(got[TP])
            del got  # the user is done with them
    finally:
        gc.callbacks.remove(counted)
    assert taken == 10_000
    assert passes == []


def _with_offset_deltas(base: int, deltas: list[int]) -> bytes:
    """A batch whose records carry these offset deltas (each under 64: one byte), CRC fixed."""
    data = bytearray(batch(base, len(deltas)))
    pos = HEADER_SIZE
    for delta in deltas:
        length, start = read_varint(data, pos)
        data[start + 2] = 2 * delta  # after the attributes and a one-byte timestamp delta
        pos = start + length
    _recrc(data)
    return bytes(data)


@pytest.mark.parametrize("deserializing", [False, True])
def test_a_batch_whose_offsets_do_not_rise_raises_instead_of_losing_records(
    deserializing: bool,
) -> None:
    """From a review: the position is found among a batch's offsets by bisection, so
    offsets that fall back (2, 3, 0, 1) returned nothing and moved the position past
    them. Such a batch is damaged: taking it raises, the position stays before it."""
    sub = positioned(at=2)
    answered(
        sub,
        fetch_one(sub),
        _with_offset_deltas(0, [0, 1, 2, 3]) + _with_offset_deltas(4, [2, 3, 0, 1]),
    )
    make = as_tuple if deserializing else None
    assert [r[2] for r in sub.take(None, None, make)[TP]] == [2, 3]  # offsets, either way
    with pytest.raises(InvalidRecordsError, match="offset deltas must rise: 0 follows 3"):
        sub.take(None, None, make)
    assert sub.states[TP].position == 4


def test_the_fast_path_skips_compaction_gaps_and_control_batches() -> None:
    sub = positioned(at=10)
    gappy = _with_last_offset_delta(batch(10, 2), 4)
    answered(sub, fetch_one(sub), gappy + _control(15) + batch(16, 1))
    assert [r.offset for r in sub.take(None, None)[TP]] == [10, 11, 16]
    assert sub.states[TP].position == 17


def test_switching_to_deserializing_mid_batch_keeps_the_position() -> None:
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 6))
    assert [r.offset for r in sub.take(None, 2)[TP]] == [0, 1]
    assert offsets(sub.take(None, 2, as_tuple)) == [2, 3]
    assert [r.offset for r in sub.take(None, None)[TP]] == [4, 5]


def test_small_takes_across_blocks_and_paths_hand_out_every_record_once() -> None:
    """Small takes (getone, a small max_records) are served from a block of records made
    ahead: across its edges, and switching between ConsumerRecords and deserialized ones
    (the block is of one kind), every record comes once, in order."""
    sub = positioned(at=5)
    answered(sub, fetch_one(sub), batch(0, 150) + batch(150, 100))
    got: list[tuple[str, int]] = []
    for i in range(200):
        if i % 3 == 2:
            taken = sub.take(None, 7, as_tuple)[TP]
            got += [("made", r[2]) for r in taken]
        else:
            taken = sub.take(None, 1 + i % 7)[TP]
            assert all(type(r) is ConsumerRecord for r in taken)
            got += [("fast", r.offset) for r in taken]
        if not sub.states[TP].chunks:
            break
    assert [offset for _, offset in got] == list(range(5, 250))
    assert {kind for kind, _ in got} == {"made", "fast"}
    assert sub.states[TP].position == 250


def test_a_damaged_batch_raises_on_the_fast_path_after_the_good_ones() -> None:
    bad = bytearray(batch(3, 2))
    bad[HEADER_SIZE] = 0  # the first record's length: 0
    _recrc(bad)
    sub = positioned()
    answered(sub, fetch_one(sub), batch(0, 3) + bytes(bad))
    assert [r.offset for r in sub.take(None, None)[TP]] == [0, 1, 2]
    with pytest.raises(InvalidRecordsError):
        sub.take(None, None)
    assert sub.states[TP].position == 3


def test_one_record_at_a_time_the_partitions_take_turns_from_the_front() -> None:
    """getone() takes from the partition in front and sends it to the back: it looks at
    one partition, not every one buffered (a pass over all of them, per record, held a
    consumer of 2,000 partitions to a few thousand records a second)."""
    tps = [TopicPartition("m", i) for i in range(4)]
    sub = positioned(*tps)
    for tp in tps:
        answered(sub, fetch_one(sub, tp), batch(0, 2 if tp.partition != 1 else 1))
    served = []
    while sub.has_data():
        (tp, records), *rest = sub.take(None, 1).items()
        assert not rest and len(records) == 1
        served.append((tp.partition, records[0].offset))
    assert served == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (2, 1), (3, 1)]
    assert sub._buffered == {}  # the emptied ones dropped out as they were served


def test_a_poll_goes_over_the_partitions_with_records_or_errors_not_all() -> None:
    """With 1,024 partitions assigned, getmany looks at those with records buffered or an
    error held (each poll went over all of them); a seek that empties a buffer or clears
    an error behind their back leaves nothing stale for the user."""
    tps = [TopicPartition("m", i) for i in range(1024)]
    sub = positioned(*tps)
    for tp in (tps[5], tps[700]):
        answered(sub, fetch_one(sub, tp), batch(0, 2))
    assert list(sub._buffered) == [tps[5], tps[700]]
    sub.seek(tps[700], 0)  # its buffer goes
    got = sub.take(None, None, as_tuple)
    assert set(got) == {tps[5]} and not sub.has_data()
    assert sub._buffered == {}

    sub.set_error(tps[3], ValueError("three"))
    sub.set_error(tps[9], ValueError("nine"))
    sub.seek(tps[9], 0)  # the user moved on: its error is gone
    assert str(sub.pop_error()) == "three"
    assert sub.pop_error() is None and sub._errored == {}
    sub.set_error(tps[4], ValueError("four"))
    assert sub.pop_error([tps[3]]) is None  # not among those asked about
    assert str(sub.pop_error([tps[4]])) == "four"
    sub.set_error(tps[6], ValueError("six"))
    sub.seek(tps[6], 0)
    assert sub.pop_error([tps[6], tps[6]]) is None  # named twice, its error cleared


def test_what_to_fetch_follows_the_partitions_that_changed_not_the_assignment() -> None:
    """Every Fetch answer leads to a look at what to fetch: it goes over the partitions
    marked since the last (moved, taken from, failed, backed off, sought), not over
    the 1,024 assigned; a new metadata view or assignment is grouped again, once. Each
    leader's set says what changed since its last, and a set once handed out is never
    changed (its Fetch is out with it)."""
    tps = [TopicPartition("m", i) for i in range(300)]
    sub = positioned(*tps)
    leaders = {tp: tp.partition % 3 for tp in tps}
    looks = [0]

    class Counted(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def]
            for item in super().items():
                looks[0] += 1
                yield item

    sub.states = Counted(sub.states)  # as a new assignment (always a new dict) would be
    first = sub.fetchable_by_leader(0, leaders)
    assert looks[0] == 300  # grouped once
    assert {n: len(f.positions) for n, f in first.items()} == {0: 100, 1: 100, 2: 100}
    assert [a.tp for a in first[1].positions.values()] == tps[1::3]  # assignment order
    assert all(f.changed is None for f in first.values())  # the first: compare them all
    assert sub.fetchable_by_leader(0, leaders, busy={0, 1, 2}) == {}
    assert sub.fetchable_by_leader(0, leaders, only=7) == {}  # leads nothing here

    # leader 1 answers: records for m-1, m-4 failed, m-7 backs off; the rest: no news
    one = first[1].positions
    assert sub.add_fetched(one[tps[1]], batch(0, 3)) > 0
    sub.fail(one[tps[4]], ValueError("bad"))
    sub.back_off(one[tps[7]], 500)
    again = sub.fetchable_by_leader(100, leaders, only=1)[1]
    assert looks[0] == 300  # no pass over the assignment
    assert again.changed == [tps[1], tps[4], tps[7]]
    assert again.positions[tps[1]].offset == 3 and tps[4] not in again.positions
    assert one[tps[1]].offset == 0 and tps[4] in one  # the answered Fetch's, untouched
    unchanged = sub.fetchable_by_leader(100, leaders, only=1)[1]
    assert unchanged.changed == [] and unchanged.positions is again.positions

    # the back-off ends, and the error is raised and cleared by a seek: both come back
    assert str(sub.pop_error([tps[4]])) == "bad"
    sub.seek(tps[4], 9)
    back = sub.fetchable_by_leader(600, leaders, only=1)[1]
    assert sorted(back.changed, key=lambda tp: tp.partition) == [tps[4], tps[7]]
    assert back.positions[tps[4]].offset == 9 and tps[7] in back.positions

    # a new metadata view: m-0 is now led by 1; grouped again, compared in full
    moved = {**leaders, tps[0]: 1}
    looks[0] = 0
    after = sub.fetchable_by_leader(600, moved)
    assert looks[0] == 300 and after[1].changed is None
    assert tps[0] in after[1].positions and tps[0] not in after[0].positions
    sub.assign(tps[:2])
    assert {tp for f in sub.fetchable_by_leader(600, moved).values() for tp in f.positions} == {
        tps[0],
        tps[1],
    }


def test_a_paused_partition_is_neither_fetched_nor_handed_out_and_keeps_its_buffer() -> None:
    sub = positioned(TP, TP1)
    answered(sub, fetch_one(sub, TP), batch(0, 3))
    sub.pause(TP)
    sub.seek(TP1, 4)  # a seek keeps a partition's pause; this one is not paused
    assert sub.paused() == {TP} and [a.tp for a in fetchable(sub, 0)] == [TP1]
    assert sub.take(None, None, as_tuple) == {} and sub.take([TP], None, as_tuple) == {}
    assert not sub.has_data() and not sub.has_data([TP])
    assert sub.resume(TP)  # it has records buffered
    assert offsets(sub.take(None, None, as_tuple)) == [0, 1, 2]
    assert {(a.tp, a.offset) for a in fetchable(sub, 0)} == {(TP1, 4), (TP, 3)}  # again
    assert not sub.resume(TP1) and sub.paused() == set()
    with pytest.raises(ValueError, match="not assigned"):
        sub.pause(TopicPartition("other", 0))


def test_the_next_retry_is_the_earliest_partition_still_backing_off() -> None:
    sub = positioned(TP, TP1)
    assert sub.next_retry_ms(0) is None
    sub.back_off(fetch_one(sub, TP), 500)
    sub.back_off(fetch_one(sub, TP1), 300)
    assert sub.next_retry_ms(100) == 300
    assert sub.next_retry_ms(400) == 500  # TP1 may go again: TP is the one left
    sub.seek(TP, 9)  # a seek ends the back-off
    assert sub.next_retry_ms(400) is None
