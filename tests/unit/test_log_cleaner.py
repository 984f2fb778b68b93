"""The log cleaner on temporary directories (no sockets), with an injected clock.

What survives: each key's latest record at its own offset; tombstones until
delete.retention.ms after their first cleaning; a producer's last batch (as an empty batch);
the last batch of every cleaned segment; records without a key. When: the dirty ratio, the
compaction lags. How: several rounds when the key map is too small; indexes right after
cleaning; reads in flight keep their files; checkpoints pulled back by truncations; a crash at
each step of the swap recovers to the old or the new segments with nothing lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.log import Log, LogConfig
from broker.log import cleaner as cleaner_module
from broker.log import swap as swap_module
from broker.log.aborted import AbortedTransactions
from broker.log.cleaner import CHECKPOINT, CleanerConfig, LogCleaner, OffsetMap
from broker.log.manager import LogManager, TopicPartition, read_checkpoint
from broker.log.segment import LogSegment
from protocol.errors import InvalidProducerEpochError
from protocol.records import decode_batches, encode_batch, scan_batches
from protocol.records.compaction import delete_horizon_ms
from protocol.records.control import AbortedFilter
from protocol.records.files import offset_index_entries, segment_name, time_index_entries

TP = TopicPartition("t", 0)
RETENTION_MS = 10_000
COMPACT = LogConfig(
    segment_bytes=2048,
    index_interval_bytes=128,
    segment_index_bytes=4096,
    cleanup_policy="compact",
    delete_retention_ms=RETENTION_MS,
    min_cleanable_dirty_ratio=0.01,
    file_delete_delay_ms=0,
)

Row = tuple[int, bytes | None, bytes | None]  # offset, key, value


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Bench:
    """A log manager on a temporary directory with one compacted log, and a cleaner."""

    def __init__(self, root: Path, config: LogConfig = COMPACT, **cleaner: int) -> None:
        self.clock = Clock()
        self.root = root
        self.config = config
        self.manager = LogManager(
            [root], broker_id=1, cluster_id="c", default_config=config, clock=self.clock
        )
        self.manager.startup()
        self.log = self.manager.get_or_create_log(TP.topic, TP.partition, config)
        self.cleaner = LogCleaner(self.manager, CleanerConfig(**cleaner), clock=self.clock)
        self.model: dict[bytes, tuple[int, bytes | None]] = {}
        self.written: dict[int, tuple[bytes | None, bytes | None]] = {}

    def write(self, pairs: list[tuple[bytes | None, bytes | None]], **batch: int) -> int:
        batch_bytes = encode_batch([(k, v, None, self.clock.now) for k, v in pairs], **batch)
        first = self.log.append(batch_bytes, leader_epoch=3).first_offset
        for i, (key, value) in enumerate(pairs):
            self.written[first + i] = (key, value)
            if key is not None:
                self.model[key] = (first + i, value)
        return first

    def updates(self, rounds: int, keys: int, tombstone_every: int = 0) -> None:
        """``rounds`` batches of one record per key; every n-th write a tombstone."""
        n = 0
        for r in range(rounds):
            pairs: list[tuple[bytes | None, bytes | None]] = []
            for k in range(keys):
                n += 1
                value = None if tombstone_every and n % tombstone_every == 0 else b"v%d" % n
                pairs.append((b"key-%d" % k, value))
            self.write(pairs)
            if r % 3 == 2:
                self.log.roll()

    async def clean_all(self) -> int:
        """Rounds until none is due; returns how many ran."""
        rounds = 0
        while await self.cleaner.clean_once():
            rounds += 1
            assert rounds < 100
        return rounds

    def expected(self, *, tombstones: bool) -> set[Row]:
        return {
            (offset, key, value)
            for key, (offset, value) in self.model.items()
            if tombstones or value is not None
        }

    async def close(self) -> None:
        await self.cleaner.stop()
        self.manager.shutdown()


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    b = Bench(tmp_path)
    yield b
    await b.close()


def read_rows(log: Log) -> list[Row]:
    """Every record through Log.read, checking that offsets only increase."""
    offset, rows = log.log_start_offset, []
    while (data := log.read(offset, 1 << 20)) is not None:
        for batch in decode_batches(data.read()):
            assert batch.base_offset >= offset
            rows += [(r.offset, r.key, r.value) for r in batch]
            offset = batch.next_offset
    assert [r[0] for r in rows] == sorted({r[0] for r in rows})
    return rows


def batches(log: Log) -> list:  # type: ignore[type-arg]
    return [b for s in log.segments for b in decode_batches(s.read(0, s.size))]


def in_active(bench: Bench) -> set[Row]:
    base = bench.log.active.base_offset
    return {r for r in read_rows(bench.log) if r[0] >= base}


# --- what survives -------------------------------------------------------------------------


async def test_each_key_keeps_its_latest_record_at_its_offset(bench: Bench) -> None:
    bench.updates(rounds=30, keys=7, tombstone_every=11)
    bench.log.roll()
    before = bench.log.size_bytes
    assert await bench.clean_all() >= 1
    rows = read_rows(bench.log)
    assert set(rows) == bench.expected(tombstones=True)  # tombstones stay for now
    assert all(bench.written[o] == (k, v) for o, k, v in rows)  # offsets never change
    assert bench.log.size_bytes < before / 5
    assert bench.log.log_end_offset == 210
    assert bench.cleaner.checkpoints[TP] == 210
    assert read_checkpoint(bench.root / CHECKPOINT) == {TP: 210}
    metrics = {name: value for name, _, value in bench.cleaner.metrics()}
    assert 0 < metrics["headwater_log_cleaner_recopy_percent"] < 20
    assert metrics["headwater_log_cleaner_max_dirty_percent"] == 0  # all clean now


async def test_tombstones_go_after_delete_retention_ms_from_their_first_cleaning(
    bench: Bench,
) -> None:
    bench.updates(rounds=12, keys=5, tombstone_every=4)
    bench.log.roll()
    await bench.clean_all()
    stamped = [b for b in batches(bench.log) if any(r.value is None for r in b)]
    assert stamped and all(
        delete_horizon_ms(b.header) == bench.clock.now + RETENTION_MS for b in stamped
    )
    bench.clock.now += RETENTION_MS - 1  # not yet: a new round keeps them
    bench.write([(b"other", b"x")])
    bench.log.roll()
    await bench.clean_all()
    assert set(read_rows(bench.log)) == bench.expected(tombstones=True)
    bench.clock.now += 1
    bench.write([(b"other", b"y")])
    bench.log.roll()
    await bench.clean_all()
    rows = read_rows(bench.log)
    assert set(rows) == bench.expected(tombstones=False)
    # the record timestamps survive the delete horizon taking the base timestamp's place
    assert all(r.timestamp == 1_000_000 for b in batches(bench.log)[:-2] for r in b)


async def test_the_active_segment_is_never_cleaned(bench: Bench) -> None:
    bench.updates(rounds=3, keys=4)
    bench.log.roll()
    bench.updates(rounds=2, keys=4)  # in the active segment now: duplicates stay
    await bench.clean_all()
    assert len(in_active(bench)) == 8


async def test_records_without_a_key_are_kept(bench: Bench) -> None:
    bench.write([(None, b"a"), (b"k", b"1"), (None, b"b"), (b"k", b"2")])
    bench.log.roll()
    await bench.clean_all()
    assert [(o, k, v) for o, k, v in read_rows(bench.log)] == [
        (0, None, b"a"),
        (2, None, b"b"),
        (3, b"k", b"2"),
    ]


async def test_a_producers_last_batch_survives_as_an_empty_batch(bench: Bench) -> None:
    producer = {"producer_id": 7, "producer_epoch": 2}
    bench.write([(b"a", b"1"), (b"b", b"1")], base_sequence=0, **producer)
    last = bench.write([(b"a", b"2"), (b"b", b"2")], base_sequence=2, **producer)
    bench.write([(b"a", b"3"), (b"b", b"3")])  # makes the producer's records obsolete
    bench.write([(b"c", b"1")])
    bench.log.roll()
    await bench.clean_all()
    kept = {b.base_offset: b for b in batches(bench.log)}
    assert 0 not in kept  # its earlier batch goes
    empty = kept[last]
    assert len(empty) == 0 and empty.last_offset == last + 1  # so its last sequence is 3
    assert (empty.producer_id, empty.producer_epoch, empty.base_sequence) == (7, 2, 2)
    assert empty.partition_leader_epoch == 3


async def test_aborted_records_go_and_never_replace_a_committed_value(bench: Bench) -> None:
    bench.write([(b"a", b"committed"), (b"b", b"committed")])
    txn = {"producer_id": 9, "producer_epoch": 0, "is_transactional": True}
    aborted = bench.log.append(
        encode_batch([(b"a", b"aborted", None, 1)], base_sequence=0, **txn)
    ).first_offset
    bench.log.append(encode_batch([(b"z", b"filler", None, 1)], base_sequence=1, **txn))
    marker = bench.log.append_marker(
        producer_id=9, producer_epoch=0, committed=False, coordinator_epoch=0
    ).first_offset
    newer = bench.write([(b"b", b"newer")])
    bench.log.roll()
    await bench.clean_all()
    rows = [row for row in read_rows(bench.log) if row[0] != marker]
    # the aborted record was the latest of "a": had it counted, "committed" would be gone
    assert rows == [(0, b"a", b"committed"), (newer, b"b", b"newer")]
    kept = {b.base_offset: b for b in batches(bench.log)}
    assert aborted not in kept  # the aborted batch itself is gone...
    assert len(kept[aborted + 1]) == 0  # ...its producer's last stays as a bare header
    assert any(b.is_control for b in kept.values())  # the marker stays


def _txn(bench: Bench, pid: int, seq: int, key: bytes, value: bytes, *, committed: bool) -> int:
    """One transaction of one record, and its marker's offset."""
    data = encode_batch(
        [(key, value, None, bench.clock.now)],
        producer_id=pid,
        producer_epoch=0,
        base_sequence=seq,
        is_transactional=True,
    )
    bench.log.append(data, leader_epoch=3)
    return bench.log.append_marker(
        producer_id=pid, producer_epoch=0, committed=committed, coordinator_epoch=0
    ).first_offset


def _markers(log: Log) -> dict[int, Any]:
    return {b.base_offset: b for b in batches(log) if b.is_control}


async def test_markers_go_a_round_after_their_delete_horizon(bench: Bench) -> None:
    log = bench.log
    bench.clock.now -= 5 * RETENTION_MS  # written long ago: the horizon counts from cleaning
    superseded = _txn(bench, 9, 0, b"a", b"in-txn", committed=True)  # "a" is written again
    aborted = _txn(bench, 10, 0, b"b", b"aborted", committed=False)  # its record goes
    alone = _txn(bench, 11, 0, b"c", b"aborted", committed=False)  # producer 11's last batch
    bench.clock.now += 5 * RETENTION_MS
    bench.write([(b"a", b"newer")])
    kept_commit = _txn(bench, 9, 1, b"d", b"latest", committed=True)  # "d" stays: so does it
    kept_other = _txn(bench, 10, 1, b"e", b"latest", committed=True)
    bench.write([(b"z", b"last")])
    log.roll()  # a producer snapshot past every marker
    assert log.aborted_transactions(0, log.log_end_offset) == [
        (10, aborted - 1),
        (11, alone - 1),
    ]
    first_round = bench.clock.now
    await bench.clean_all()
    markers = _markers(log)
    assert set(markers) == {superseded, aborted, alone, kept_commit, kept_other}
    horizon = first_round + RETENTION_MS  # stamped, as a tombstone is (KIP-534)
    assert [delete_horizon_ms(markers[o].header) for o in (superseded, aborted)] == [horizon] * 2
    assert [delete_horizon_ms(markers[o].header) for o in (alone, kept_commit, kept_other)] == [
        None
    ] * 3

    bench.clock.now = horizon - 1  # not yet: a round before the horizon keeps them
    bench.write([(b"z", b"later")])
    log.roll()
    await bench.clean_all()
    assert superseded in _markers(log)

    bench.clock.now = horizon
    bench.write([(b"z", b"later still")])
    log.roll()
    await bench.clean_all()
    assert set(_markers(log)) == {alone, kept_commit, kept_other}
    assert log.aborted_transactions(0, log.log_end_offset) == [(11, alone - 1)]
    rows = {(k, v) for _, k, v in read_rows(log)} - {(None, None)}
    assert {(b"a", b"newer"), (b"d", b"latest"), (b"e", b"latest")} <= rows
    assert all(v not in (b"in-txn", b"aborted") for _, v in rows)
    end = log.log_end_offset
    replica = Log.open(bench.root / "replica-0", COMPACT)  # a new replica fetching it all
    for segment in log.segments:
        if segment.size:
            replica.append_as_follower(segment.read(0, segment.size))
    assert replica.log_end_offset == end
    assert replica.last_stable_offset(end) == end
    assert replica.aborted_transactions(0, end) == [(11, alone - 1)]
    replica.close()
    bench.manager.shutdown()  # reopened, its producer state from the cleaned log
    for clean in (True, False):
        reopened = Log.open(log.dir, COMPACT, clean_shutdown=clean, recovery_point=0)
        assert reopened.last_stable_offset(end) == end  # no transaction left half-seen
        assert reopened.aborted_transactions(0, end) == [(11, alone - 1)]
        reopened.close()
    bench.manager.startup()


async def test_a_marker_stays_while_an_older_producer_snapshot_could_be_loaded(
    bench: Bench,
) -> None:
    log = bench.log
    bench.write([(b"x", b"1")])
    log.roll()  # a snapshot before the transaction: a load from it replays the marker
    aborted = _txn(bench, 10, 0, b"b", b"aborted", committed=False)
    _txn(bench, 10, 1, b"e", b"latest", committed=True)
    bench.write([(b"z", b"last")])
    log.roll()
    await bench.clean_all()
    assert log.producers.snapshot_offsets()[0] <= aborted
    assert delete_horizon_ms(_markers(log)[aborted].header) is None  # not even stamped
    bench.clock.now += 2 * RETENTION_MS
    bench.write([(b"z", b"later")])
    log.roll()  # the roll keeps the newest two snapshots: the old one goes
    assert log.producers.snapshot_offsets()[0] > aborted
    await bench.clean_all()
    assert delete_horizon_ms(_markers(log)[aborted].header) == bench.clock.now + RETENTION_MS


async def test_an_aborted_index_entry_outliving_its_marker_goes_at_the_next_load(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the swap, before the index is rewritten: the entry would make readers
    skip producer 10's next transaction, which committed."""
    log = bench.log
    aborted = _txn(bench, 10, 0, b"b", b"aborted", committed=False)
    committed = _txn(bench, 10, 1, b"e", b"committed", committed=True)
    bench.write([(b"z", b"1")])
    log.roll()
    await bench.clean_all()  # stamped
    bench.clock.now += RETENTION_MS + 1
    monkeypatch.setattr(Log, "drop_aborted", lambda self, offsets: None)  # the crash
    bench.write([(b"z", b"2")])
    log.roll()
    await bench.clean_all()
    assert aborted not in _markers(log)
    end = log.log_end_offset
    assert log.aborted_transactions(0, end) == [(10, aborted - 1)]  # stale
    log.flush()
    bench.manager.shutdown()
    reopened = Log.open(log.dir, COMPACT, clean_shutdown=False, recovery_point=end)
    assert reopened.aborted_transactions(0, end) == []
    assert reopened.last_stable_offset(end) == end
    assert (committed - 1, b"e", b"committed") in read_rows(reopened)
    reopened.close()
    bench.manager.startup()


# found in review: an I/O error after the swap, a marker that bumped the epoch, a stale
# log-start checkpoint


def _read_committed(log: Log, upper: int) -> list[tuple[int, bytes | None, bytes | None]]:
    """What a read_committed consumer reading the whole log sees (one fetch)."""
    keep = AbortedFilter(log.aborted_transactions(log.log_start_offset, upper))
    rows = []
    for b in batches(log):
        if b.base_offset >= upper or not keep.keep(b):
            continue
        rows += [(r.offset, r.key, r.value) for r in b]
    return rows


async def test_index_write_failing_after_the_swap_leaves_a_stale_entry_a_clean_restart_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap removed producer 10's ABORT marker; the index rewrite then fails (disk
    full: the log goes offline, as designed). The operator restarts the broker (a clean
    stop, as the offline message advises): the load is clean, so _check_aborted_markers
    does not run, and the stale entry hides (and then lets the cleaner delete) producer
    10's next transaction, which committed."""
    bench = Bench(tmp_path)
    log = bench.log
    aborted = _txn(bench, 10, 0, b"b", b"aborted", committed=False)
    committed = _txn(bench, 10, 1, b"e", b"committed", committed=True)
    bench.write([(b"z", b"1")])
    log.roll()
    await bench.clean_all()  # the ABORT marker is stamped
    bench.clock.now += RETENTION_MS + 1
    bench.write([(b"z", b"2")])
    log.roll()

    def disk_full(self: AbortedTransactions) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(AbortedTransactions, "_rewrite", disk_full)
        await bench.clean_all()
    assert log.offline
    assert aborted not in _markers(log)  # the swap happened
    end = log.log_end_offset

    await bench.cleaner.stop()
    bench.manager.shutdown()  # clean stop
    bench.manager.startup()  # clean load
    log = bench.log = bench.manager.logs[TP]
    assert not log.offline
    stale = log.aborted_transactions(0, end)
    # a read_committed reader must see the committed record of producer 10's second txn
    seen = (committed - 1, b"e", b"committed") in _read_committed(log, end)
    # and the cleaner itself, trusting the stale entry, treats that record as aborted
    bench.cleaner = type(bench.cleaner)(bench.manager, clock=bench.clock)
    bench.write([(b"z", b"3")])
    log.roll()
    await bench.clean_all()
    stored = (committed - 1, b"e", b"committed") in read_rows(log)
    await bench.close()
    assert (stale, seen, stored) == ([], True, True)


async def test_a_marker_that_bumped_the_producer_epoch_is_its_last_batch_and_stays(
    tmp_path: Path,
) -> None:
    """The coordinator aborts a timed-out transaction under a bumped epoch (ABORT marker,
    epoch 1): the leader then fences epoch 0. Kafka's cleaner keeps such a marker (the
    producer has no last data offset: isBatchLastRecordOfProducer's third case). Here
    ProducerState.last_offsets() leaves the producer out (no batches after the bump), so
    the marker is removed, and a replica that replays the cleaned log knows nothing of
    producer 10: a zombie's retried first batch (epoch 0, sequence 0) is accepted there
    and opens a transaction no marker will ever end."""
    bench = Bench(tmp_path)
    log = bench.log
    data = encode_batch(
        [(b"b", b"zombie", None, bench.clock.now)],
        producer_id=10,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    log.append(data, leader_epoch=3)
    bumped = log.append_marker(
        producer_id=10, producer_epoch=1, committed=False, coordinator_epoch=0
    ).first_offset
    bench.write([(b"z", b"1")])
    log.roll()
    await bench.clean_all()
    bench.clock.now += RETENTION_MS + 1
    bench.write([(b"z", b"2")])
    log.roll()
    await bench.clean_all()
    assert log.producers.producer(10).epoch == 1
    with pytest.raises(InvalidProducerEpochError):  # the leader fences the zombie
        log.append(data, leader_epoch=3)

    replica = Log.open(bench.root / "replica-0", COMPACT)
    for segment in log.segments:
        if segment.size:
            replica.append_as_follower(segment.read(0, segment.size))
    known = replica.producers.producer(10)
    try:
        zombie = replica.append(data, leader_epoch=4).first_offset  # the replica, now leader
    except InvalidProducerEpochError:
        zombie = None
    replica.append(encode_batch([(b"y", b"later", None, bench.clock.now)]), leader_epoch=4)
    hw = replica.log_end_offset
    lso = replica.last_stable_offset(hw)  # no coordinator will end the zombie's txn
    replica.close()
    marker_kept = bumped in _markers(log)
    await bench.close()
    assert (marker_kept, known is not None, zombie, lso) == (True, True, None, hw), (
        f"marker kept={marker_kept}, replica knows producer 10={known is not None}, "
        f"zombie batch accepted at {zombie}, replica LSO {lso} (high watermark {hw})"
    )


async def test_a_snapshot_below_the_log_start_is_loadable_with_a_stale_start_checkpoint(
    tmp_path: Path,
) -> None:
    """_oldest_loadable_snapshot leaves out snapshots below the in-memory log start, as
    if a load always knew that start. A follower moves its start with each fetch
    (advance_log_start_offset) but checkpoints it only with retention deletions or the
    periodic checkpoint; after a crash in between, the load starts from the older
    checkpointed start, takes the snapshot the cleaner did not count (producer 10's
    transaction open in it) and replays a log whose COMMIT marker is gone: the
    transaction never ends and the last stable offset is stuck."""
    config = dataclasses.replace(COMPACT, cleanup_policy="compact,delete", retention_ms=-1)
    bench = Bench(tmp_path, config)
    log = bench.log
    bench.write([(b"x", b"0")])  # 0
    log.append(
        encode_batch(
            [(b"b", b"in-txn", None, bench.clock.now)],
            producer_id=10,
            producer_epoch=0,
            base_sequence=0,
            is_transactional=True,
        ),
        leader_epoch=3,
    )  # 1
    log.roll()  # snapshot 2: producer 10's transaction open since 1
    bench.write([(b"y", b"2")])  # 2
    log.flush()  # recovery point 3; the periodic checkpoint writes (3, start 0)
    checkpointed = (log.recovery_point, log.log_start_offset)
    assert log.advance_log_start_offset(3)  # the leader's start, from a fetch
    commit = log.append_marker(
        producer_id=10, producer_epoch=0, committed=True, coordinator_epoch=0
    ).first_offset  # 3
    bench.write([(b"b", b"newer")])  # 4: producer 10's record is superseded
    bench.write([(b"z", b"5")])
    # producer 10 stays idle past producer.id.expiration.ms: forgotten (KIP-854), so its
    # last batch no longer has to stay
    assert log.producers.expire(bench.clock.now + 10**9, 1) == 1
    log.roll()
    await bench.clean_all()  # stamps the marker
    bench.clock.now += RETENTION_MS + 1
    bench.write([(b"z", b"6")])
    log.roll()
    await bench.clean_all()  # removes it: the oldest snapshot at or past the start is 6
    removed = commit not in _markers(log)
    assert 2 in log.producers.snapshot_offsets()  # kept as the recovery point's anchor
    end = log.log_end_offset
    await bench.close()
    recovery_point, start = checkpointed
    reopened = Log.open(
        log.dir,
        config,
        recovery_point=recovery_point,
        log_start_offset=start,
        clean_shutdown=False,
    )
    reopened.advance_log_start_offset(3)  # the next fetch from the leader
    lso = reopened.last_stable_offset(end)
    reopened.close()
    assert lso == end, f"marker removed={removed}; LSO stuck at {lso}, high watermark {end}"


async def test_a_transaction_still_open_is_not_cleaned(tmp_path: Path) -> None:
    """The broker bounds cleaning by the last stable offset (app's cleanable_end)."""
    bench = Bench(tmp_path)
    bench.cleaner = LogCleaner(
        bench.manager,
        CleanerConfig(),
        clock=bench.clock,
        cleanable_end=lambda tp: bench.log.last_stable_offset(bench.log.log_end_offset),
    )
    try:
        bench.write([(b"a", b"1")])
        txn = {"producer_id": 9, "producer_epoch": 0, "is_transactional": True}
        bench.log.append(encode_batch([(b"a", b"open", None, 1)], base_sequence=0, **txn))
        bench.write([(b"b", b"1")])
        bench.log.roll()
        assert bench.log.last_stable_offset(bench.log.log_end_offset) == 1
        await bench.clean_all()
        assert (0, b"a", b"1") in read_rows(bench.log)  # "a" may yet be aborted
    finally:
        await bench.close()


async def test_the_last_batch_of_a_cleaned_segment_keeps_the_segments_end(
    tmp_path: Path,
) -> None:
    bench = Bench(tmp_path, COMPACT.with_overrides(segment_bytes=150))  # a group per segment
    bench.write([(b"a", b"1")])
    bench.write([(b"b", b"1")])
    bench.log.roll()
    bench.write([(b"a", b"2"), (b"b", b"2")])
    bench.log.roll()
    await bench.clean_all()
    first, second, active = bench.log.segments
    assert [(b.base_offset, b.last_offset, len(b)) for b in batches(bench.log)] == [
        (1, 1, 0),  # b's old value goes, its batch ended the segment: an empty header stays
        (2, 3, 2),
    ]
    assert (first.next_offset, second.base_offset, second.next_offset) == (2, 2, 4)
    assert active.base_offset == 4
    await bench.close()


# --- when ------------------------------------------------------------------------------------


async def test_the_dirty_ratio_decides_whether_a_log_is_cleaned(tmp_path: Path) -> None:
    bench = Bench(tmp_path, COMPACT.with_overrides(min_cleanable_dirty_ratio=0.5))
    bench.updates(rounds=9, keys=20)
    bench.log.roll()
    assert await bench.clean_all() == 1
    clean = bench.log.size_bytes
    bench.write([(b"key-1", b"new")])
    bench.log.roll()  # dirty: one small segment, far under half of the log
    assert not await bench.cleaner.clean_once()
    assert 0 < bench.cleaner.max_dirty_ratio < 0.5
    while bench.log.size_bytes - clean < clean * 1.2:
        bench.updates(rounds=1, keys=20)
    bench.log.roll()
    assert await bench.cleaner.clean_once()
    assert set(read_rows(bench.log)) == bench.expected(tombstones=True)
    await bench.close()


async def test_min_compaction_lag_keeps_recent_records_uncompacted(tmp_path: Path) -> None:
    bench = Bench(tmp_path, COMPACT.with_overrides(min_compaction_lag_ms=5_000))
    bench.updates(rounds=6, keys=3)
    bench.log.roll()
    assert not await bench.cleaner.clean_once()  # every record is younger than the lag
    bench.clock.now += 5_001
    assert await bench.cleaner.clean_once()
    assert set(read_rows(bench.log)) == bench.expected(tombstones=True)
    await bench.close()


async def test_max_compaction_lag_forces_a_log_under_the_ratio(tmp_path: Path) -> None:
    config = COMPACT.with_overrides(min_cleanable_dirty_ratio=0.99, max_compaction_lag_ms=5_000)
    bench = Bench(tmp_path, config)
    bench.updates(rounds=3, keys=3)
    bench.log.roll()
    await bench.clean_all()  # the first round: all dirty
    bench.write([(b"key-0", b"x")])
    bench.log.roll()
    assert not await bench.cleaner.clean_once()
    bench.clock.now += 5_001
    assert await bench.cleaner.clean_once()
    await bench.close()


async def test_nothing_at_or_past_the_high_watermark_is_cleaned(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    bench.updates(rounds=4, keys=2)
    bench.log.roll()
    bench.cleaner = LogCleaner(bench.manager, clock=bench.clock, cleanable_end=lambda tp: 4)
    await bench.clean_all()
    rows = read_rows(bench.log)
    assert [r[0] for r in rows] == list(range(2, 8))  # 0, 1 shadowed by 2, 3 only
    await bench.close()


async def test_a_log_whose_topic_config_is_not_read_is_not_cleaned(tmp_path: Path) -> None:
    """Its config is the broker's defaults for now, not its topic's (broker.dynamic_config)."""
    bench = Bench(tmp_path)
    bench.updates(rounds=6, keys=3)
    bench.log.roll()
    ready = False
    await bench.cleaner.stop()
    bench.cleaner = LogCleaner(bench.manager, clock=bench.clock, config_ready=lambda tp: ready)
    assert not await bench.cleaner.clean_once()
    ready = True  # the config was read
    assert await bench.cleaner.clean_once()
    await bench.close()


# --- how -------------------------------------------------------------------------------------


def test_offset_map_holds_keys_until_full() -> None:
    offsets = OffsetMap(24 * 10)
    assert (offsets.slots, offsets.capacity) == (10, 9)
    assert all(offsets.put(b"k%d" % i, i) for i in range(9))
    assert offsets.put(b"k3", 33)  # a known key: always room
    assert not offsets.put(b"new", 1)
    assert [offsets.get(b"k%d" % i) for i in range(4)] == [0, 1, 2, 33]
    assert offsets.get(b"absent") == -1
    assert OffsetMap.for_keys(100, 1 << 20).slots == 113  # sized by need under the budget


async def test_a_map_too_small_for_the_dirty_keys_cleans_in_several_rounds(
    tmp_path: Path,
) -> None:
    bench = Bench(tmp_path, dedupe_buffer_size=24 * 12)  # 10 keys per round
    bench.updates(rounds=6, keys=35, tombstone_every=9)
    bench.log.roll()
    assert await bench.clean_all() >= 4
    assert set(read_rows(bench.log)) == bench.expected(tombstones=True)
    await bench.close()


async def test_indexes_agree_with_the_cleaned_log_and_lookups_work(bench: Bench) -> None:
    for i in range(40):
        bench.clock.now += 10
        bench.write([(b"key-%d" % (i % 6), b"v" * 30), (b"other-%d" % i, b"w" * 30)])
    bench.log.roll()
    await bench.clean_all()
    assert sum(_check_indexes(s) for s in bench.log.segments[:-1]) > 10
    rows = read_rows(bench.log)
    for offset, _, value in rows:
        fetched = bench.log.read(offset, 1)
        assert fetched is not None
        (batch,) = decode_batches(fetched.read())
        assert any(r.offset == offset and r.value == value for r in batch)
    # a timestamp lookup finds the first surviving record at or after the time
    stamp = 1_000_000 + 10 * 30
    found = bench.log.list_offset(stamp)
    assert found is not None and found[1] == min(o for o, _, _ in rows if o >= 58)


def _check_indexes(segment: LogSegment) -> int:
    """Every index entry agrees with the segment's batches; returns how many there are."""
    headers = {h.position: h for h in scan_batches(segment.read(0, segment.size))}
    by_base = {h.base_offset: h for h in headers.values()}
    offsets = offset_index_entries(segment.offset_index.path.read_bytes(), segment.base_offset)
    assert all(headers[position].base_offset == offset for offset, position in offsets)
    times = time_index_entries(segment.time_index.path.read_bytes(), segment.base_offset)
    assert all(by_base[offset].max_timestamp == ts for ts, offset in times)
    return len(offsets) + len(times)


async def test_reads_in_flight_keep_the_old_files(tmp_path: Path) -> None:
    bench = Bench(tmp_path, COMPACT.with_overrides(file_delete_delay_ms=1_000))
    bench.updates(rounds=6, keys=3)
    bench.log.roll()
    fetch = bench.log.read(0, 1 << 20)
    assert fetch is not None
    old = fetch.read()
    await bench.clean_all()
    assert fetch.segment not in bench.log.segments
    assert fetch.read() == old and fetch.region().fd >= 0  # renamed .deleted, still open
    bench.clock.now += 1_000  # file.delete.delay.ms later, the next round unlinks it
    await bench.cleaner.clean_once()
    assert fetch.region().fd == -1
    assert not list(bench.log.dir.glob("*.deleted"))
    await bench.close()


async def test_a_truncation_pulls_the_checkpoint_back_at_once(bench: Bench) -> None:
    bench.updates(rounds=6, keys=3)
    bench.log.roll()
    await bench.clean_all()
    assert bench.cleaner.checkpoints[TP] == 18
    await bench.cleaner.stop()  # a cleaner that starts from the file, as after a restart
    bench.cleaner = LogCleaner(bench.manager, clock=bench.clock)
    assert bench.cleaner.checkpoints == {TP: 18}
    bench.log.truncate_to(12)
    assert bench.cleaner.checkpoints[TP] == 12
    # the file follows now, not at the cleaner's next pass (log.cleaner.backoff.ms later):
    # a crash in between would leave it above records written anew below 18
    await _until(lambda: read_checkpoint(bench.root / CHECKPOINT) == {TP: 12})


async def test_a_log_changed_during_the_round_is_not_swapped(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench.updates(rounds=6, keys=3)
    bench.log.roll()
    swap = LogCleaner._swap

    def truncated_meanwhile(cleaner: LogCleaner, job: Any, group: Any) -> bool:
        bench.log.truncate_to(6)  # replication cut the log back while the worker ran
        return swap(cleaner, job, group)

    monkeypatch.setattr(LogCleaner, "_swap", truncated_meanwhile)
    assert await bench.cleaner.clean_once()
    assert [r[0] for r in read_rows(bench.log)] == [0, 1, 2, 3, 4, 5]  # not swapped in
    assert TP not in bench.cleaner.checkpoints
    assert not [p for p in bench.log.dir.iterdir() if p.name.endswith(".cleaned")]


async def test_a_truncation_and_refill_during_the_round_aborts_the_swap(bench: Bench) -> None:
    """A follower truncates into the group's segment while the worker cleans it, takes the
    new leader's batches (of the very same sizes) and rolls: the segment is the same object,
    of the same size, and not active; yet what the worker cleaned is gone from it. Kafka
    aborts the round on any truncation (abortAndPauseCleaning); so must we."""
    for value in (b"old", b"mid"):
        for i in range(4):
            bench.write([(b"k%d" % i, value + b"-%d" % i + b"x" * 280)])
        bench.log.roll()
    bench.write([(b"z", b"z")])
    first = bench.log.segments[0]
    in_worker = bench.cleaner._in_worker

    async def replaced_meanwhile(fn: Any, *args: Any) -> Any:
        result = await in_worker(fn, *args)
        if fn is cleaner_module.clean_group and first.base_offset == args[1][0].base:
            size = first.size
            bench.log.truncate_to(2)  # an unclean election: offsets 2, 3 are rewritten
            for i in (2, 3):
                new = (b"k%d" % i, b"new-%d" % i + b"x" * 280, None, bench.clock.now)
                bench.log.append_as_follower(encode_batch([new], base_offset=i))
            bench.log.roll()
            bench.log.append_as_follower(encode_batch([(b"q", b"q", None, 0)], base_offset=4))
            assert bench.log.segments[0] is first and first.size == size  # looks unchanged
        return result

    bench.cleaner._in_worker = replaced_meanwhile  # type: ignore[method-assign]
    assert await bench.cleaner.clean_once()
    rows = read_rows(bench.log)
    assert [(o, v[:5]) for o, _, v in rows if v is not None and o in (2, 3)] == [
        (2, b"new-2"),
        (3, b"new-3"),
    ]
    # and the round's end was not checkpointed above the truncation
    assert bench.cleaner.checkpoints.get(TP, 0) <= 2
    assert read_checkpoint(bench.root / CHECKPOINT).get(TP, 0) <= 2


async def _until(check: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.01)


async def test_a_damaged_batch_makes_the_log_uncleanable_and_is_left_as_it_is(
    bench: Bench,
) -> None:
    bench.updates(rounds=6, keys=3)
    bench.log.roll()
    first = bench.log.segments[0]
    damaged = bytearray(first.read(0, first.size))
    damaged[first.size - 3] ^= 0xFF  # inside the last batch: its CRC no longer matches
    os.pwrite(first.fd, bytes(damaged), 0)
    assert await bench.cleaner.clean_once()  # a round ran, and gave up on this log
    assert first is bench.log.segments[0] and first.read(0, first.size) == damaged
    assert not await bench.cleaner.clean_once()  # not retried (until the broker restarts)
    assert TP not in bench.cleaner.checkpoints


# --- crash safety of the swap ------------------------------------------------------------------


class _Crash(BaseException):
    """The process dies here (nothing catches it, as nothing runs after a crash)."""


STEPS = [
    ("promote.index", 1, "old"),
    ("promote.timeindex", 1, "old"),
    ("promote.log", 1, "old"),
    ("retire", 1, "new"),
    ("retire", 2, "new"),
    ("install.index", 1, "new"),
    ("install.timeindex", 1, "new"),
    ("install.log", 1, "new"),
]


@pytest.mark.parametrize(("step", "nth", "outcome"), STEPS)
async def test_a_crash_at_each_swap_step_recovers_old_or_new_with_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, nth: int, outcome: str
) -> None:
    config = COMPACT.with_overrides(segment_bytes=8192)
    bench = Bench(tmp_path, config)
    for _ in range(3):  # three small segments: one group
        bench.updates(rounds=2, keys=4, tombstone_every=5)
        bench.log.roll()
    bench.write([(b"tail", b"t")])
    old_rows = read_rows(bench.log)
    seen = {"n": 0}

    def fault(name: str) -> None:
        if name == step:
            seen["n"] += 1
            if seen["n"] == nth:
                raise _Crash(name)

    monkeypatch.setattr(swap_module, "fault_point", fault)
    with pytest.raises(_Crash):
        await bench.cleaner.clean_once()
    monkeypatch.setattr(swap_module, "fault_point", lambda name: None)
    # the process dies here: nothing else is written; the log is opened as after a crash
    reopened = Log.open(bench.log.dir, config, clean_shutdown=False, clock=bench.clock)
    rows = read_rows(reopened)
    new_rows = sorted(bench.expected(tombstones=True))
    assert rows == (old_rows if outcome == "old" else new_rows)
    leftovers = [p.name for p in reopened.dir.iterdir() if p.suffix in (".cleaned", ".swap")]
    assert leftovers == [] and not list(reopened.dir.glob("*.deleted"))
    assert all(s.indexes_sane() for s in reopened.segments)
    reopened.close()
    await bench.cleaner.stop()


def test_stray_cleaned_files_are_removed_on_open(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", COMPACT)
    log.append(encode_batch([(b"k", b"v", None, 1)]))
    log.close()
    for kind in (".log", ".index"):
        (tmp_path / "t-0" / (segment_name(0, kind) + ".cleaned")).write_bytes(b"junk")
    reopened = Log.open(tmp_path / "t-0", COMPACT, clean_shutdown=False)
    assert [r[1] for r in read_rows(reopened)] == [b"k"]
    assert not list((tmp_path / "t-0").glob("*.cleaned"))
    reopened.close()


# --- a model -------------------------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"),
            st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=6),
        ),
        st.tuples(st.just("roll"), st.none()),
        st.tuples(st.just("clean"), st.none()),
        st.tuples(st.just("wait"), st.integers(1, 2 * RETENTION_MS)),
    ),
    max_size=40,
)


@settings(max_examples=40)
@given(ops=OPS, map_keys=st.integers(1, 8))
def test_cleaning_agrees_with_a_model_of_latest_values(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list,
    map_keys: int,  # type: ignore[type-arg]
) -> None:
    asyncio.run(_model_run(tmp_path_factory.mktemp("model"), ops, map_keys))


async def _model_run(root: Path, ops: list, map_keys: int) -> None:  # type: ignore[type-arg]
    bench = Bench(root, dedupe_buffer_size=24 * (map_keys + 2))
    n = 0
    for op, arg in ops:
        if op == "write":
            pairs = []
            for key, deleted in arg:
                n += 1
                pairs.append((b"k%d" % key, None if deleted else b"v%d" % n))
            bench.write(pairs)
        elif op == "roll":
            bench.log.roll()
        elif op == "clean":
            await bench.clean_all()
        else:
            bench.clock.now += arg
        _check_against_model(bench)
    bench.clock.now += RETENTION_MS + 1
    bench.log.roll()
    await bench.clean_all()
    _check_against_model(bench)
    await bench.close()


def _check_against_model(bench: Bench) -> None:
    """Every record is one that was written there; each key's last record is its latest
    write, unless that write was a tombstone, which may have gone."""
    rows = read_rows(bench.log)
    last: dict[bytes | None, Row] = {}
    for row in rows:
        assert bench.written[row[0]] == (row[1], row[2])
        last[row[1]] = row
    for key, (offset, value) in bench.model.items():
        if key in last:
            assert last[key] == (offset, key, value)
        else:
            assert value is None
