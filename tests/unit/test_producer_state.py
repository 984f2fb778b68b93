"""Idempotent producers' state: the leader's sequence checks, duplicates answered with the
original offsets, and the state rebuilt from snapshots and batch headers after a restart
or a truncation (tested on the Log class, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from crc32c import crc32c

from broker.log.config import LogConfig
from broker.log.log import Log
from broker.log.producer_state import ProducerBatch, ProducerState
from protocol.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
)
from protocol.records import decode_batches, encode_batch


def _batch(pid: int, epoch: int, seq: int, count: int = 2, base: int = 0) -> ProducerBatch:
    return ProducerBatch(pid, epoch, seq, count, base, base + count - 1)


def test_sequences_follow_on_and_retries_are_recognised(tmp_path: Path) -> None:
    state = ProducerState(tmp_path, "t-0")
    first = _batch(7, 0, 0, base=0)
    assert state.check(first) is None
    state.update(first)
    second = _batch(7, 0, 2, base=2)
    assert state.check(second) is None
    state.update(second)
    retry = state.check(_batch(7, 0, 0, base=99))
    assert retry is not None and (retry.first_offset, retry.last_offset) == (0, 1)
    with pytest.raises(OutOfOrderSequenceNumberError, match="expected 4"):
        state.check(_batch(7, 0, 6))  # 4 and 5 were lost
    with pytest.raises(UnknownProducerIdError, match="start over"):
        state.check(_batch(8, 0, 3))
    with pytest.raises(InvalidProducerEpochError, match="fenced"):
        state.update(_batch(7, 1, 0, base=4))  # a new epoch took over...
        state.check(_batch(7, 0, 4))  # ...so the old one is refused
    with pytest.raises(OutOfOrderSequenceNumberError, match="must start at sequence 0"):
        state.check(_batch(7, 2, 5))


def test_only_the_last_five_batches_are_remembered_and_sequences_wrap(tmp_path: Path) -> None:
    state = ProducerState(tmp_path, "t-0")
    top = 2**31 - 1
    state.update(ProducerBatch(1, 0, top - 1, 2, 0, 1))  # sequences top-1, top
    assert state.check(ProducerBatch(1, 0, 0, 1, 2, 2)) is None  # wraps to 0
    for i in range(6):
        state.update(_batch(2, 0, 2 * i, base=10 + 2 * i))
    with pytest.raises(OutOfOrderSequenceNumberError):
        state.check(_batch(2, 0, 0))  # the first of six is forgotten: not a duplicate
    assert state.check(_batch(2, 0, 2)) is not None


def _idempotent(pid: int, seq: int, values: list[bytes], epoch: int = 0) -> bytes:
    return encode_batch(
        [(None, v, None, 1_000) for v in values],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
    )


def _open(path: Path, **kw: object) -> Log:
    return Log.open(path, LogConfig(segment_bytes=300), **kw)  # type: ignore[arg-type]


def _values(log: Log) -> list[bytes | None]:
    out: list[bytes | None] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        assert data is not None
        for batch in decode_batches(data.read()):
            out += [r.value for r in batch]
            offset = batch.next_offset
    return out


def test_the_log_answers_a_retry_with_the_original_offsets(tmp_path: Path) -> None:
    log = _open(tmp_path / "t-0")
    first = _idempotent(5, 0, [b"a", b"b"])
    assert log.append(first).first_offset == 0
    again = log.append(first)  # the answer was lost; the producer sent it again
    assert (again.first_offset, again.last_offset, again.size_bytes) == (0, 1, 0)
    assert log.log_end_offset == 2 and _values(log) == [b"a", b"b"]
    with pytest.raises(OutOfOrderSequenceNumberError):
        log.append(_idempotent(5, 5, [b"c"]))
    with pytest.raises(InvalidRecordError, match="one batch per partition"):
        log.append(_idempotent(5, 2, [b"c"]) + _idempotent(5, 3, [b"d"]))
    plain = encode_batch([(None, b"p", None, 1_000)])  # no producer id: never checked
    assert log.append(plain).first_offset == 2 and log.append(plain).first_offset == 3
    log.close()


@pytest.mark.parametrize("clean", [True, False])
def test_retries_are_still_recognised_after_a_restart(tmp_path: Path, clean: bool) -> None:
    log = _open(tmp_path / "t-0")
    sent = [_idempotent(9, 2 * i, [b"x" * 40, b"y" * 40]) for i in range(8)]
    for i, batch in enumerate(sent):
        assert log.append(batch).first_offset == 2 * i
    assert log.producers.snapshot_offsets(), "segments rolled: snapshots were taken"
    end = log.log_end_offset
    if clean:
        log.close()
    reopened = _open(tmp_path / "t-0", clean_shutdown=clean, recovery_point=0)
    for i in (3, 7):  # within the last five: answered from the rebuilt state
        assert reopened.append(sent[i]).first_offset == 2 * i
    assert reopened.log_end_offset == end
    assert reopened.append(_idempotent(9, 16, [b"z"])).first_offset == end
    reopened.close()


def test_a_damaged_snapshot_is_ignored_and_the_headers_rebuild_the_state(
    tmp_path: Path,
) -> None:
    log = _open(tmp_path / "t-0")
    sent = [_idempotent(3, 2 * i, [b"x" * 40, b"y" * 40]) for i in range(8)]
    for batch in sent:
        log.append(batch)
    log.close()
    for offset in log.producers.snapshot_offsets():
        log.producers.snapshot_path(offset).write_bytes(b"{not json\n1\n")
    reopened = _open(tmp_path / "t-0", clean_shutdown=True)
    assert reopened.append(sent[-1]).first_offset == 14
    assert reopened.producers.snapshot_offsets() == []  # the bad ones were removed
    reopened.close()


def test_truncation_forgets_the_batches_it_removes(tmp_path: Path) -> None:
    log = _open(tmp_path / "t-0")
    sent = [_idempotent(4, 2 * i, [b"x" * 40, b"y" * 40]) for i in range(8)]
    for batch in sent:
        log.append(batch)
    log.truncate_to(10)  # a follower cuts a tail no new leader has
    assert log.log_end_offset == 10
    assert log.append(sent[5]).first_offset == 10  # not a duplicate any more: appended
    assert log.append(sent[4]).first_offset == 8  # still in the log: a duplicate
    log.truncate_fully_and_start_at(100)
    assert log.producers.snapshot_offsets() == [] and log.producers.producers == {}
    log.close()


def test_a_compacted_batch_keeps_its_sequences(tmp_path: Path) -> None:
    """Compaction may leave fewer records in a batch (even none) but keeps its last offset
    delta: the sequences a replay rebuilds come from that, not from the record count."""
    state = ProducerState(tmp_path, "t-0")
    state.update(ProducerBatch(1, 0, 0, 1, 0, 3))  # 4 offsets, 1 record left
    assert state.check(ProducerBatch(1, 0, 4, 2, 4, 5)) is None


def test_only_the_newest_two_snapshots_are_kept(tmp_path: Path) -> None:
    """A compacted topic never deletes segments: its snapshots must not pile up."""
    log = _open(tmp_path / "t-0")
    for i in range(12):
        log.append(_idempotent(6, 2 * i, [b"x" * 40, b"y" * 40]))
    offsets = log.producers.snapshot_offsets()
    assert len(offsets) == 2 and offsets[-1] <= log.log_end_offset
    log.close()


def test_producers_not_heard_from_in_the_expiration_time_are_forgotten(tmp_path: Path) -> None:
    """KIP-854: by each producer's last batch timestamp; a forgotten one that comes back
    mid-sequence is UNKNOWN_PRODUCER_ID (its client starts over under a new id)."""
    state = ProducerState(tmp_path, "t-0")
    state.update(ProducerBatch(1, 0, 0, 2, 0, 1, appended_ms=1_000))
    state.update(ProducerBatch(2, 0, 0, 2, 2, 3, appended_ms=1_000))
    state.update(ProducerBatch(2, 0, 2, 2, 4, 5, appended_ms=5_000))  # heard from later
    assert state.expire(now_ms=5_999, expiration_ms=5_000) == 0  # 4,999 ms: not yet
    assert state.expire(now_ms=6_000, expiration_ms=5_000) == 1
    assert set(state.producers) == {2}
    with pytest.raises(UnknownProducerIdError):
        state.check(ProducerBatch(1, 0, 2, 2, 6, 7))
    assert state.check(ProducerBatch(1, 0, 0, 2, 6, 7)) is None  # a fresh start is taken


def test_last_heard_of_is_the_brokers_clock_kept_in_snapshots(tmp_path: Path) -> None:
    """Not the batch's timestamp: a producer backfilling year-old records is still heard
    of; a snapshot from before these times were kept counts from when it is loaded."""
    now = [50_000]
    log = Log.open(tmp_path / "t-0", LogConfig(segment_bytes=300), clock=lambda: now[0])
    for i in range(8):  # CreateTime 1,000 (see _idempotent): long before the clock
        log.append(_idempotent(4, 2 * i, [b"x" * 40, b"y" * 40]))
    assert log.producers.producer(4).last_timestamp == 50_000
    assert log.producers.expire(now_ms=54_999, expiration_ms=5_000) == 0
    log.producers.take_snapshot()
    reloaded = ProducerState(log.producers.dir, "t-0")
    assert reloaded.load(0, log.log_end_offset) == log.log_end_offset
    assert reloaded.producer(4).last_timestamp == 50_000
    log.close()
    state = ProducerState(tmp_path / "v1", "t-0")
    state.dir.mkdir()
    body = b'{"version":1,"end_offset":2,"producers":[[7,0,[[0,1,0,1]]]]}'
    state.snapshot_path(2).write_bytes(body + b"\n" + str(crc32c(body)).encode() + b"\n")
    assert state.load(0, 2) == 2
    assert state.producer(7).last_timestamp > 1_700_000_000_000  # now, not the epoch
    assert state.expire(now_ms=state.producer(7).last_timestamp + 1, expiration_ms=60_000) == 0


def _counting_headers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the batch headers every segment reads from now on."""
    from broker.log.segment import LogSegment

    read = [0]
    real = LogSegment.headers

    def counted(self: LogSegment, *args: object, **kwargs: object) -> object:
        for header in real(self, *args, **kwargs):  # type: ignore[arg-type]
            read[0] += 1
            yield header

    monkeypatch.setattr(LogSegment, "headers", counted)
    return read


def test_a_clean_close_snapshots_the_producers_and_the_reopen_reads_no_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka snapshots the producers at a clean close too: before, a reopen replayed
    every batch header since the last roll, one pread each (a broker of 2,100 partitions
    spent 11 s opening its logs). Retries are still recognised, and when each producer
    was last heard of is kept."""
    now = [50_000]
    log = Log.open(tmp_path / "t-0", LogConfig(), clock=lambda: now[0])  # one segment
    sent = [
        encode_batch(
            [(None, b"x", None, 1_000 + i), (None, b"y", None, 1_000 + i)],
            producer_id=pid,
            producer_epoch=0,
            base_sequence=2 * i,
        )
        for i in range(200)
        for pid in (1, 2)
    ]
    for batch in sent:
        log.append(batch, leader_epoch=0)  # as a leader writes: with its epoch
    plain = encode_batch([(None, b"plain", None, 2_000)])  # no producer: nothing kept
    log.append(plain, leader_epoch=0)
    end = log.log_end_offset
    log.close()
    assert log.producers.snapshot_offsets()[-1] == end
    read = _counting_headers(monkeypatch)
    now[0] = 60_000
    reopened = Log.open(tmp_path / "t-0", LogConfig(), clean_shutdown=True, clock=lambda: now[0])
    assert read[0] <= 4096 // 70 + 1  # the tail past the last index entry, nothing more
    assert reopened.append(sent[-1]).first_offset == end - 3  # a retry: its first offsets
    assert reopened.append(sent[-2]).first_offset == end - 5
    assert reopened.producers.producer(1).last_timestamp == 50_000
    assert reopened.log_end_offset == end
    reopened.close()
    assert len(reopened.producers.snapshot_offsets()) == 1  # unchanged: not written again


def test_after_a_crash_the_replay_starts_at_the_snapshot_not_at_the_segment_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batches after the newest snapshot are read from the index entry at or below
    it: reading the segment from its start, a replay read every header of the active
    segment whatever the snapshot held."""
    log = Log.open(tmp_path / "t-0", LogConfig(index_interval_bytes=1024))
    for i in range(500):
        log.append(_idempotent(7, 2 * i, [b"x", b"y"]))
    log.producers.take_snapshot()  # as a roll would have: the state as of here
    for i in range(500, 510):
        log.append(_idempotent(7, 2 * i, [b"x", b"y"]))
    log.flush()
    end = log.log_end_offset
    snapshot = log.producers.snapshot_offsets()[-1]
    crashed = Log.open(tmp_path / "t-0", LogConfig(), clean_shutdown=False, recovery_point=end)
    read = _counting_headers(monkeypatch)
    replayed = list(crashed._producer_batches(snapshot))
    assert len(replayed) == 10
    assert read[0] <= 10 + 1024 // 70 + 1  # the ten since, and what one index step holds
    assert crashed.append(_idempotent(7, 2 * 509, [b"x", b"y"])).first_offset == end - 2
    assert crashed.append(_idempotent(7, 2 * 510, [b"z"])).first_offset == end
    crashed.close()
    log.close()


def test_close_snapshots_never_push_out_the_roll_snapshot_a_truncation_falls_back_on(
    tmp_path: Path,
) -> None:
    """From a review: the newest two snapshots are kept, and two clean closes in one
    segment pushed out the roll snapshot at its base. A truncation inside the segment
    then found none, replayed the whole log, and forgot the producers retention had
    removed the batches of (here, producer 1: its next batch was UNKNOWN_PRODUCER_ID)."""
    path = tmp_path / "t-0"
    log = Log.open(path, LogConfig())
    log.append(_idempotent(1, 0, [b"a"]))
    log.append(_idempotent(1, 1, [b"b"]))
    log.roll()
    base = log.log_end_offset
    log.advance_log_start_offset(base)
    log.apply_retention()  # producer 1's batches are gone; the roll snapshot holds it
    for restart in range(2):  # two clean stops in the same segment
        for s in range(3):
            log.append(_idempotent(2, 3 * restart + s, [b"x"]))
        log.close()
        log = Log.open(path, LogConfig(), log_start_offset=base, clean_shutdown=True)
    assert log.producers.snapshot_offsets() == [base, base + 6]  # one close snapshot
    log.truncate_to(base + 2)  # inside the segment: back to the roll snapshot
    assert log.producers.snapshot_offsets() == [base]
    assert log.append(_idempotent(1, 2, [b"c"])).first_offset == base + 2
    log.roll()  # a roll after a close drops the close snapshot, keeps two roll ones
    assert log.producers.snapshot_offsets() == [base, log.log_end_offset]
    log.close()


def test_the_collector_does_not_walk_the_producers(tmp_path: Path) -> None:
    """A producer's state is plain tuples of ints, which CPython's collector untracks: a
    broker of 1,000 partitions that had each seen some hundred producers walked 100,000
    objects of theirs in every full collection (90 ms of its event loop here)."""
    import gc

    state = ProducerState(tmp_path, "t-0")
    offset = 0
    for pid in range(300):
        for seq in range(0, 21, 3):
            state.update(ProducerBatch(pid, 0, seq, 3, offset, offset + 2, 1_000))
            offset += 3
    for _ in range(3):  # a collection untracks a tuple once it has untracked its items
        gc.collect()
    assert not any(gc.is_tracked(p) for p in state.producers.values())
    assert not gc.is_tracked(state.producers)
    kept = state.producer(7)
    assert kept is not None and len(kept.batches) == 5  # the last five, oldest first
    assert [b.first_sequence for b in kept.batches] == [6, 9, 12, 15, 18]
