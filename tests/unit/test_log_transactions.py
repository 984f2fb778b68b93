"""Transactions in one partition's log: markers, the last stable offset, the aborted
transactions a read_committed fetch is told of, and all of it rebuilt after a restart or
a truncation (the Log class, no sockets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.log.aborted import FILE_NAME, AbortedTransactions, AbortedTxn
from broker.log.config import LogConfig
from broker.log.log import Log
from protocol.errors import (
    CorruptBatchError,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    TransactionCoordinatorFencedError,
)
from protocol.records import decode_batches, encode_batch, read_header, scan_batches
from protocol.records.batch import ATTRIBUTES_POS, refresh_crc
from protocol.records.control import (
    AbortedFilter,
    EndTxnMarker,
    encode_end_txn_marker,
    read_end_txn_marker,
)


def _txn(pid: int, seq: int, values: list[bytes], epoch: int = 0) -> bytes:
    return encode_batch(
        [(b"k", v, None, 1_000) for v in values],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        is_transactional=True,
    )


def _plain(values: list[bytes]) -> bytes:
    return encode_batch([(b"k", v, None, 1_000) for v in values])


def _open(path: Path, **kw: object) -> Log:
    return Log.open(path, LogConfig(segment_bytes=400), **kw)  # type: ignore[arg-type]


def _end(log: Log, pid: int, *, committed: bool, epoch: int = 0, coordinator: int = 0) -> int:
    info = log.append_marker(
        producer_id=pid, producer_epoch=epoch, committed=committed, coordinator_epoch=coordinator
    )
    return info.first_offset


def _committed_values(log: Log, start: int, end: int) -> list[bytes | None]:
    """What a read_committed consumer sees of [start, end): the broker's aborted list
    applied by the client's filter."""
    data = log.read(start, 1 << 20, max_offset=end)
    if data is None:
        return []
    keep = AbortedFilter(log.aborted_transactions(start, end))
    return [r.value for b in decode_batches(data.read()) if keep.keep(b) for r in b]


# --- markers ---------------------------------------------------------------------------


def test_a_marker_round_trips_and_is_a_transactional_control_batch() -> None:
    data = encode_end_txn_marker(
        producer_id=9, producer_epoch=3, committed=True, coordinator_epoch=17
    )
    (header,) = scan_batches(data)  # CRC checked
    assert header.is_control and header.is_transactional
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (9, 3, -1)
    assert read_end_txn_marker(data, header) == EndTxnMarker(True, 17)
    abort = encode_end_txn_marker(
        producer_id=9, producer_epoch=3, committed=False, coordinator_epoch=0
    )
    assert read_end_txn_marker(abort, read_header(abort)) == EndTxnMarker(False, 0)


def test_a_control_batch_that_is_no_marker_is_corrupt() -> None:
    plain = bytearray(_txn(1, 0, [b"a"]))
    attributes = int.from_bytes(plain[ATTRIBUTES_POS : ATTRIBUTES_POS + 2], "big") | 0x20
    plain[ATTRIBUTES_POS : ATTRIBUTES_POS + 2] = attributes.to_bytes(2, "big")
    refresh_crc(plain)
    with pytest.raises(CorruptBatchError, match="key is 1 bytes"):
        read_end_txn_marker(plain, read_header(plain))


def test_the_filter_drops_aborted_batches_up_to_their_marker_and_every_marker() -> None:
    log_like = [
        (0, 1, True, False),  # pid 1's aborted transaction begins
        (1, 2, True, False),  # pid 2, committed later
        (2, 1, True, False),
        (3, 1, True, True),  # pid 1's ABORT
        (4, 2, True, True),  # pid 2's COMMIT
        (5, 1, True, False),  # pid 1's next transaction: not aborted
        (6, -1, False, False),  # not transactional
    ]

    class Batch:
        def __init__(self, base: int, pid: int, txn: bool, control: bool) -> None:
            self.base_offset, self.producer_id = base, pid
            self.is_transactional, self.is_control = txn, control

    keep = AbortedFilter([(1, 0)])
    assert [b[0] for b in log_like if keep.keep(Batch(*b))] == [1, 5, 6]


# --- the log ---------------------------------------------------------------------------


def test_the_last_stable_offset_waits_for_the_oldest_open_transaction(tmp_path: Path) -> None:
    log = _open(tmp_path / "t-0")
    log.append(_plain([b"a"]))  # 0
    log.append(_txn(7, 0, [b"t1", b"t2"]))  # 1-2: pid 7's transaction begins at 1
    log.append(_txn(8, 0, [b"u1"]))  # 3: pid 8's at 3
    log.append(_plain([b"b"]))  # 4
    end = log.log_end_offset
    assert log.last_stable_offset(end) == 1
    assert log.last_stable_offset(1) == 1  # never past the high watermark
    marker = _end(log, 7, committed=True)
    assert marker == 5
    # ended, but a leader without the marker could still have it open: not yet stable
    assert log.last_stable_offset(marker) == 1
    assert log.last_stable_offset(log.log_end_offset) == 3  # now pid 8's is the oldest
    _end(log, 8, committed=False)
    assert log.last_stable_offset(log.log_end_offset) == log.log_end_offset
    assert log.aborted_transactions(0, log.log_end_offset) == [(8, 3)]
    assert _committed_values(log, 0, log.log_end_offset) == [b"a", b"t1", b"t2", b"b"]


def test_aborted_transactions_are_named_only_for_the_range_read(tmp_path: Path) -> None:
    log = _open(tmp_path / "t-0")
    log.append(_txn(1, 0, [b"x"]))  # 0
    _end(log, 1, committed=False)  # 1
    log.append(_plain([b"y"]))  # 2
    log.append(_txn(2, 0, [b"z"]))  # 3
    _end(log, 2, committed=False)  # 4
    end = log.log_end_offset
    assert log.aborted_transactions(0, end) == [(1, 0), (2, 3)]
    assert log.aborted_transactions(2, end) == [(2, 3)]  # pid 1's ended before 2
    assert log.aborted_transactions(0, 1) == [(1, 0)]  # the search stops at pid 1's
    assert log.aborted_transactions(5, end) == []


def test_producers_may_not_write_markers_and_mix_nothing_into_a_transaction(
    tmp_path: Path,
) -> None:
    log = _open(tmp_path / "t-0")
    marker = encode_end_txn_marker(
        producer_id=7, producer_epoch=0, committed=True, coordinator_epoch=0
    )
    with pytest.raises(InvalidRecordError, match="may not write control batches"):
        log.append(marker)
    log.append(_txn(7, 0, [b"a"]))
    plain_of_7 = encode_batch(
        [(None, b"b", None, 1_000)], producer_id=7, producer_epoch=0, base_sequence=1
    )
    with pytest.raises(InvalidTxnStateError, match="transaction open"):
        log.append(plain_of_7)
    assert log.log_end_offset == 1  # nothing refused was written
    log.append(_plain([b"c"]))  # others write as they like
    assert log.log_end_offset == 2


def test_markers_from_a_fenced_producer_or_an_old_coordinator_are_refused(
    tmp_path: Path,
) -> None:
    log = _open(tmp_path / "t-0")
    log.append(_txn(7, 0, [b"a"], epoch=2))
    with pytest.raises(InvalidProducerEpochError):
        _end(log, 7, committed=True, epoch=1)
    _end(log, 7, committed=True, epoch=2, coordinator=5)
    log.append(_txn(7, 1, [b"b"], epoch=2))
    with pytest.raises(TransactionCoordinatorFencedError, match="newer coordinator"):
        _end(log, 7, committed=False, epoch=2, coordinator=4)
    # a bumped epoch (the coordinator aborting for a new incarnation) ends it
    _end(log, 7, committed=False, epoch=3, coordinator=5)
    producer = log.producers.producer(7)
    assert producer is not None and producer.epoch == 3 and producer.txn_first_offset == -1
    assert log.aborted_transactions(0, log.log_end_offset) == [(7, 2)]


def test_open_transactions_and_aborts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = _open(path)
    for i in range(6):  # enough to roll segments: snapshots in between
        log.append(_txn(1, i, [b"v%d" % i]))
    _end(log, 1, committed=False)
    log.append(_txn(2, 0, [b"open"]))
    open_at = log.log_end_offset - 1
    end = log.log_end_offset
    assert log.segment_count > 1
    for clean in (True, False):
        if clean:
            log.close()
        else:
            log.flush()  # an unclean stop: no close snapshot
            log.segments.clear()
        log = _open(path, clean_shutdown=clean, recovery_point=0)
        assert log.last_stable_offset(end) == open_at
        assert log.aborted_transactions(0, end) == [(1, 0)]
        assert _committed_values(log, 0, open_at) == []
    log.close()


def test_the_index_is_rebuilt_from_the_log_when_its_file_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = _open(path)
    log.append(_txn(1, 0, [b"x"]))
    _end(log, 1, committed=False)
    log.flush()
    log.segments.clear()  # a crash: no snapshot past the marker
    (path / FILE_NAME).unlink()
    log = _open(path, clean_shutdown=False)
    assert log.aborted_transactions(0, log.log_end_offset) == [(1, 0)]
    log.close()


def test_truncation_drops_the_aborts_and_reopens_the_transactions_it_cuts(
    tmp_path: Path,
) -> None:
    log = _open(tmp_path / "t-0")
    log.append(_txn(1, 0, [b"a"]))  # 0
    log.append(_plain([b"b"]))  # 1
    marker = _end(log, 1, committed=False)  # 2
    assert log.aborted_transactions(0, 3) == [(1, 0)]
    log.truncate_to(marker)  # a follower cut back to its leader: the abort is gone
    assert log.aborted_transactions(0, 3) == []
    assert log.last_stable_offset(log.log_end_offset) == 0  # open again
    _end(log, 1, committed=True)
    assert log.last_stable_offset(log.log_end_offset) == log.log_end_offset
    log.truncate_fully_and_start_at(10)
    assert log.aborted_transactions(0, 20) == [] and not log.producers.ongoing


def test_a_follower_replaying_the_leaders_batches_has_the_same_state(tmp_path: Path) -> None:
    leader = _open(tmp_path / "leader")
    leader.append(_txn(4, 0, [b"a", b"b"]))
    _end(leader, 4, committed=False, coordinator=3)
    leader.append(_txn(4, 2, [b"c"]))
    follower = _open(tmp_path / "follower")
    data = leader.read(0, 1 << 20)
    assert data is not None
    follower.append_as_follower(data.read())
    end = leader.log_end_offset
    assert follower.aborted_transactions(0, end) == leader.aborted_transactions(0, end)
    assert follower.last_stable_offset(end) == leader.last_stable_offset(end) == 3
    theirs, ours = follower.producers.producer(4), leader.producers.producer(4)
    assert theirs is not None and ours is not None
    assert theirs._replace(last_timestamp=0) == ours._replace(last_timestamp=0)


def test_retention_prunes_aborts_below_the_log_start(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", LogConfig(segment_bytes=400, retention_bytes=0))
    log.append(_txn(1, 0, [b"x"]))
    _end(log, 1, committed=False)
    for i in range(8):
        log.append(_plain([b"filler %d" % i]))
    assert log.apply_retention() > 0
    assert log.log_start_offset > 1
    assert log.aborted.entries == []
    assert not (tmp_path / "t-0" / FILE_NAME).exists()


def test_a_producer_mid_transaction_is_never_expired(tmp_path: Path) -> None:
    log = _open(tmp_path / "t-0")
    log.append(_txn(1, 0, [b"x"]))
    log.append(
        encode_batch([(None, b"y", None, 1)], producer_id=2, producer_epoch=0, base_sequence=0)
    )
    assert log.producers.expire(now_ms=10**15, expiration_ms=1) == 1
    assert log.producers.producer(1) is not None and log.producers.producer(2) is None


def test_a_torn_index_tail_is_cut(tmp_path: Path) -> None:
    index = AbortedTransactions(tmp_path)
    index.append(AbortedTxn(1, 0, 5, 6))
    index.append(AbortedTxn(2, 3, 9, 10))
    with (tmp_path / FILE_NAME).open("ab") as f:
        f.write(b"\x00\x00torn")
    again = AbortedTransactions(tmp_path)
    again.load()
    assert again.entries == [(1, 0, 5, 6), (2, 3, 9, 10)]
    assert (tmp_path / FILE_NAME).stat().st_size == 68


# --- found in review -------------------------------------------------------------------


def test_a_torn_index_entry_below_the_newest_snapshot_is_rebuilt_after_a_crash(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t-0"
    log = _open(path)
    log.append(_txn(1, 0, [b"x"]))
    _end(log, 1, committed=False)  # 0, 1
    log.append(_txn(2, 0, [b"y"]))
    _end(log, 2, committed=False)  # 2, 3
    while log.segment_count < 3:
        log.append(_plain([b"filler"]))
    assert min(log.producers.snapshot_offsets()) > 3  # the replay alone would start past both
    end = log.log_end_offset
    log.flush()
    log.segments.clear()  # a crash...
    index = path / FILE_NAME
    index.write_bytes(index.read_bytes()[: 34 + 20])  # ...that tore the second entry
    log = _open(path, clean_shutdown=False, recovery_point=0)
    assert log.aborted_transactions(0, end) == [(1, 0), (2, 2)]
    log.close()


def test_a_snapshot_below_the_log_start_reopens_no_finished_transaction(tmp_path: Path) -> None:
    log = _open(tmp_path / "t-0")
    log.append(_txn(1, 0, [b"t"]))
    while log.segment_count < 2:
        log.append(_plain([b"filler"]))  # a snapshot with the transaction open
    marker = _end(log, 1, committed=True)
    log.append(_plain([b"a"]))
    log.append(_plain([b"b"]))
    end = log.log_end_offset
    assert log.last_stable_offset(end) == end
    assert log.advance_log_start_offset(marker + 1)  # DeleteRecords past the marker
    log.truncate_to(end - 1)  # any reload: a leader change
    assert dict(log.producers.ongoing) == {}
    assert log.last_stable_offset(log.log_end_offset) == log.log_end_offset


def test_a_follower_forgets_finished_transactions_as_its_high_watermark_moves(
    tmp_path: Path,
) -> None:
    leader, follower = _open(tmp_path / "l"), _open(tmp_path / "f")
    for i in range(50):
        leader.append(_txn(1, i, [b"v"]))
        _end(leader, 1, committed=i % 2 == 0)
    while follower.log_end_offset < leader.log_end_offset:
        data = leader.read(follower.log_end_offset, 1 << 20)
        assert data is not None
        follower.append_as_follower(data.read())
        follower.producers.on_high_watermark(follower.log_end_offset)  # as the fetcher does
    assert follower.producers.unreplicated == []


def test_the_last_stable_offset_never_falls_below_the_log_start(tmp_path: Path) -> None:
    log = _open(tmp_path / "t-0")
    log.append(_txn(1, 0, [b"t"]))
    for i in range(3):
        log.append(_plain([b"p%d" % i]))
    assert log.advance_log_start_offset(2)
    assert log.last_stable_offset(log.log_end_offset) == 2


def test_a_crash_replays_from_the_recovery_point_not_the_log_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot at or below the recovery point survives the rolls since: a crash
    replays about what recovery re-reads, not every header of the log."""

    def idempotent(seq: int) -> bytes:
        return encode_batch(
            [(None, b"x" * 40, None, 1_000)], producer_id=1, producer_epoch=0, base_sequence=seq
        )

    path, config, seq = tmp_path / "t-0", LogConfig(segment_bytes=1_000), 0
    log = Log.open(path, config)
    for _ in range(300):
        log.append(idempotent(seq))
        seq += 1
    restart_end = log.log_end_offset
    log.close()
    log = Log.open(path, config, clean_shutdown=True, recovery_point=restart_end)
    for _ in range(40):  # rolls, never flushed: the recovery point stays
        log.append(idempotent(seq))
        seq += 1
    starts: list[int] = []
    real = Log._producer_batches

    def spy(self: Log, from_offset: int) -> Any:
        starts.append(from_offset)
        return real(self, from_offset)

    monkeypatch.setattr(Log, "_producer_batches", spy)
    crashed = Log.open(path, config, clean_shutdown=False, recovery_point=restart_end)
    assert restart_end - 40 <= starts[0] <= restart_end
    crashed.close()


def test_snapshots_stay_readable_by_a_build_without_transactions(tmp_path: Path) -> None:
    log = _open(tmp_path / "t-0")
    log.append(
        encode_batch([(None, b"x", None, 1)], producer_id=1, producer_epoch=0, base_sequence=0)
    )
    log.close()  # a close snapshot: no transaction state, so version 2
    (snapshot,) = (tmp_path / "t-0").glob("*.snapshot")
    assert b'"version":2' in snapshot.read_bytes()
    log = _open(tmp_path / "t-0")
    log.append(_txn(2, 0, [b"t"]))
    log.close()
    newest = max((tmp_path / "t-0").glob("*.snapshot"))
    assert b'"version":3' in newest.read_bytes()
