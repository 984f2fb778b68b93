"""The leader-epoch cache (KIP-101): alone, and as the log keeps it through appends,
truncation, retention, restarts and a lost checkpoint file."""

from pathlib import Path

import pytest

from broker.log import Log, LogConfig
from broker.log.epochs import CHECKPOINT_NAME, EpochEntry, LeaderEpochCache
from protocol.records import encode_batch
from protocol.records.batch import read_header, set_partition_leader_epoch

SMALL = LogConfig(segment_bytes=2048, index_interval_bytes=256, segment_index_bytes=4096)


def _batch(n: int = 3, *, epoch: int = -1, base_offset: int = 0) -> bytes:
    data = bytearray(
        encode_batch([(None, b"v" * 30, None, 1000) for _ in range(n)], base_offset=base_offset)
    )
    set_partition_leader_epoch(data, read_header(data), epoch)
    return bytes(data)


def test_cache_answers_like_kafka(tmp_path: Path) -> None:
    cache = LeaderEpochCache(tmp_path)
    assert cache.end_offset_for(0, 10) == (-1, -1)  # nothing known
    cache.assign(1, 0)
    cache.assign(1, 5)  # same epoch, later offset: nothing new
    cache.assign(3, 10)
    cache.assign(4, 25)
    assert cache.entries == [EpochEntry(1, 0), EpochEntry(3, 10), EpochEntry(4, 25)]
    assert cache.end_offset_for(0, 40) == (0, 0)  # older than all: ends where they start
    assert cache.end_offset_for(-1, 40) == (-1, -1)
    assert cache.end_offset_for(1, 40) == (1, 10)
    assert cache.end_offset_for(2, 40) == (1, 10)  # epoch 2 never wrote: epoch 1's end
    assert cache.end_offset_for(3, 40) == (3, 25)
    assert cache.end_offset_for(4, 40) == (4, 40)  # the latest ends at the log end
    assert cache.end_offset_for(9, 40) == (4, 40)
    cache.truncate_from_end(12)
    assert cache.entries == [EpochEntry(1, 0), EpochEntry(3, 10)]
    cache.truncate_from_start(11)
    assert cache.entries == [EpochEntry(3, 11)]
    assert LeaderEpochCache(tmp_path).entries == [EpochEntry(3, 11)]  # it is on disk


def test_a_new_history_replaces_the_entries_it_overlaps(tmp_path: Path) -> None:
    cache = LeaderEpochCache(tmp_path)
    cache.assign(1, 0)
    cache.assign(2, 10)
    cache.assign(5, 8)  # a follower re-fetching after a truncation it did not record
    assert cache.entries == [EpochEntry(1, 0), EpochEntry(5, 8)]


@pytest.mark.parametrize(
    "content",
    ["", "1\n1\n0 0\n", "0\n2\n0 0\n", "0\n2\n3 0\n1 5\n", "garbage"],
    ids=["empty", "version", "count", "order", "garbage"],
)
def test_an_unreadable_checkpoint_is_rebuilt_from_the_batches(tmp_path: Path, content: str) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    log.append(_batch(), leader_epoch=0)
    log.append(_batch(), leader_epoch=2)
    log.close()
    (tmp_path / "t-0" / CHECKPOINT_NAME).write_text(content)
    reopened = Log.open(tmp_path / "t-0", SMALL)
    assert reopened.epochs.entries == [EpochEntry(0, 0), EpochEntry(2, 3)]
    reopened.close()


def test_the_log_keeps_the_cache(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    for epoch in (0, 0, 1, 1, 1, 4):
        log.append(_batch(), leader_epoch=epoch)
    assert log.epochs.entries == [EpochEntry(0, 0), EpochEntry(1, 6), EpochEntry(4, 15)]
    assert log.end_offset_for_epoch(1) == (1, 15)
    assert log.end_offset_for_epoch(3) == (1, 15)
    assert log.end_offset_for_epoch(4) == (4, 18)
    log.truncate_to(10)  # whole batches: the log ends at 9
    assert log.epochs.entries == [EpochEntry(0, 0), EpochEntry(1, 6)]
    assert log.end_offset_for_epoch(4) == (1, 9)
    log.close()
    reopened = Log.open(tmp_path / "t-0", SMALL)  # a clean stop: the file is trusted
    assert reopened.epochs.entries == [EpochEntry(0, 0), EpochEntry(1, 6)]
    reopened.truncate_fully_and_start_at(100)
    assert reopened.epochs.entries == []
    reopened.close()


def test_a_follower_records_the_epochs_of_the_leaders_batches(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    log.append_as_follower(_batch(epoch=2, base_offset=0) + _batch(epoch=5, base_offset=3))
    log.append_as_follower(_batch(epoch=5, base_offset=6))
    assert log.epochs.entries == [EpochEntry(2, 0), EpochEntry(5, 3)]
    log.close()


def test_an_unclean_stop_rederives_the_tail(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    log.append(_batch(), leader_epoch=1)
    log.flush()
    stale = (tmp_path / "t-0" / CHECKPOINT_NAME).read_text()
    log.append(_batch(), leader_epoch=3)  # then the file write is lost, and so is the process
    (tmp_path / "t-0" / CHECKPOINT_NAME).write_text(stale)
    crashed = Log.open(tmp_path / "t-0", SMALL, recovery_point=3, clean_shutdown=False)
    assert crashed.epochs.entries == [EpochEntry(1, 0), EpochEntry(3, 3)]
    crashed.close()
    log.close()


def test_retention_moves_the_first_epoch_up(tmp_path: Path) -> None:
    clock = [10_000_000]
    config = SMALL.with_overrides(retention_ms=1000, file_delete_delay_ms=0)
    log = Log.open(tmp_path / "t-0", config, clock=lambda: clock[0])
    for epoch in range(4):
        for _ in range(10):
            log.append(_batch(), leader_epoch=epoch)
    assert log.segment_count > 2
    clock[0] += 10_000_000_000  # every closed segment expires
    assert log.apply_retention() > 0
    start = log.log_start_offset
    assert start > 0
    # 30 offsets per epoch: the epoch holding the new start now begins there
    assert log.epochs.entries[0] == EpochEntry(start // 30, start)
    assert log.epochs.entries[-1] == EpochEntry(3, max(90, start))
    assert log.end_offset_for_epoch(3) == (3, 120)
    log.close()


def test_a_new_leader_records_its_epoch_at_its_log_end_before_it_appends(tmp_path: Path) -> None:
    """An empty leader elected uncleanly must answer a follower holding older epochs "your
    epoch ends at 0", not "unknown" (the follower kept records this leader never had)."""
    log = Log.open(tmp_path / "t-0", SMALL)
    assert log.end_offset_for_epoch(2) == (-1, -1)
    log.assign_epoch_start(3)
    assert log.epochs.entries == [EpochEntry(3, 0)]
    assert log.end_offset_for_epoch(2) == (2, 0)  # older than all: cut everything
    assert log.end_offset_for_epoch(3) == (3, 0)
    assert not (tmp_path / "t-0" / CHECKPOINT_NAME).exists()  # no file write at the election
    log.append(_batch(), leader_epoch=3)  # the first append writes it
    assert LeaderEpochCache(tmp_path / "t-0").entries == [EpochEntry(3, 0)]
    log.assign_epoch_start(3)  # the same epoch again (a resent LeaderAndIsr): nothing new
    assert log.epochs.entries == [EpochEntry(3, 0)]
    log.close()


def test_an_epoch_begun_at_the_log_end_goes_with_a_truncation_there(tmp_path: Path) -> None:
    """A leader deposed before it wrote holds an epoch no one else has, starting at its log
    end. Truncating to the end must drop it, or the follower asks about it forever."""
    log = Log.open(tmp_path / "t-0", SMALL)
    log.append(_batch(), leader_epoch=1)
    log.assign_epoch_start(4)
    assert log.epochs.latest_epoch == 4
    log.truncate_to(log.log_end_offset)
    assert log.epochs.entries == [EpochEntry(1, 0)]
    assert log.log_end_offset == 3  # no record went
    log.assign_epoch_start(5)
    log.close()
    reopened = Log.open(tmp_path / "t-0", SMALL)  # an epoch with no record is not kept
    assert reopened.epochs.entries == [EpochEntry(1, 0)]
    reopened.close()
