import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
from crc32c import crc32c

from broker.log import Log, LogConfig
from broker.log import log as log_module
from broker.log import segment as segment_module
from protocol.errors import (
    CrcMismatchError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaStorageError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
)
from protocol.records import decode_batches, encode_batch
from tests.logs import read_all

SMALL = LogConfig(segment_bytes=4096, index_interval_bytes=256, segment_index_bytes=4096)


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _batch(first: int, n: int = 5, ts: int = 1_000, size: int = 40) -> bytes:
    return encode_batch(
        [(f"k{first + i}".encode(), bytes([i]) * size, None, ts + i) for i in range(n)]
    )


def test_append_assigns_offsets_and_reads_back_across_segments(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    infos = [log.append(_batch(i * 5, ts=i * 10), leader_epoch=7) for i in range(60)]
    assert [(i.first_offset, i.last_offset) for i in infos[:2]] == [(0, 4), (5, 9)]
    assert infos[-1].last_offset == 299 and log.log_end_offset == 300
    assert log.segment_count > 3  # rolled by size
    records = read_all(log)
    assert [r[0] for r in records] == list(range(300))
    assert [r[1] for r in records[:3]] == [b"k0", b"k1", b"k2"]
    epochs = {
        b.partition_leader_epoch for s in log.segments for b in decode_batches(s.read(0, s.size))
    }
    assert epochs == {7}
    log.close()


def test_the_callers_bytes_are_not_modified(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    log.append(_batch(0))
    data = _batch(0)
    before = bytes(data)
    assert log.append(data).first_offset == 5
    assert data == before
    log.close()


def test_read_from_every_offset_lands_on_the_right_batch(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    for i in range(40):
        log.append(_batch(i * 5))
    for offset in range(0, 200, 3):
        data = log.read(offset, 1)  # one batch at least (KIP-74)
        assert data is not None
        (batch,) = decode_batches(data.read())
        assert batch.base_offset <= offset <= batch.last_offset
    log.close()


def test_read_limits(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    for i in range(10):
        log.append(_batch(i * 5))
    one = log.read(0, 1)
    assert one is not None
    assert len(list(decode_batches(one.read()))) == 1
    assert log.read(0, 1, min_one_batch=False) is None
    two = log.read(0, 2 * one.size)
    assert two is not None and len(list(decode_batches(two.read()))) == 2
    bounded = log.read(0, 1 << 20, max_offset=12)  # high watermark 12: batches below it only
    assert bounded is not None
    assert [b.last_offset for b in decode_batches(bounded.read())] == [4, 9, 14]
    assert log.read(50, 100) is None  # at the end: nothing yet
    with pytest.raises(OffsetOutOfRangeError, match=r"offset 51 is out of range"):
        log.read(51, 100)
    log.close()


def test_roll_by_time(tmp_path: Path) -> None:
    clock = Clock()
    log = Log.open(tmp_path / "t-0", SMALL.with_overrides(segment_ms=1000), clock=clock)
    log.append(_batch(0))
    clock.now += 999
    log.append(_batch(5))
    assert log.segment_count == 1
    clock.now += 1
    log.append(_batch(10))
    assert log.segment_count == 2 and log.active.base_offset == 10
    log.close()


def test_roll_when_the_index_would_fill(tmp_path: Path) -> None:
    cfg = LogConfig(index_interval_bytes=0, segment_index_bytes=64)  # 8 offset entries
    log = Log.open(tmp_path / "t-0", cfg)
    for i in range(30):
        log.append(_batch(i * 5))
    assert log.segment_count > 3
    assert [r[0] for r in read_all(log)] == list(range(150))
    log.close()


def test_offsets_by_timestamp(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    for i in range(50):
        log.append(_batch(i * 5, ts=10_000 + i * 100))  # record j of batch i: +i*100+j
    assert log.offset_for_timestamp(0) == (10_000, 0)
    assert log.offset_for_timestamp(10_000 + 2_003) == (12_003, 103)
    assert log.offset_for_timestamp(10_000 + 2_007) == (12_100, 105)  # between batches
    assert log.offset_for_timestamp(99_999) is None
    assert log.max_timestamp() == (14_904, 245)
    assert log.list_offset(-2) == (-1, 0)  # earliest
    assert log.list_offset(-1) == (-1, 250)  # latest
    assert log.list_offset(-3) == (14_904, 249)  # the record with the largest timestamp
    assert log.list_offset(-4) == (-1, 0)  # earliest local (KIP-405): nothing is tiered
    assert log.list_offset(-5) is None  # latest tiered (KIP-1005): none
    assert log.list_offset(12_003) == (12_003, 103)
    log.apply_retention()  # (nothing expired: retention.ms is a week)
    log.truncate_fully_and_start_at(300)
    assert log.list_offset(-2) == (-1, 300) and log.list_offset(-3) is None
    log.close()


def test_retention_by_time_and_size(tmp_path: Path) -> None:
    clock = Clock(now=100_000)
    cfg = SMALL.with_overrides(retention_ms=50_000, file_delete_delay_ms=1_000)
    log = Log.open(tmp_path / "t-0", cfg, clock=clock)
    for i in range(60):
        log.append(_batch(i * 5, ts=i * 1_000))  # timestamps 0 .. 59_004
    segments = log.segment_count
    assert log.apply_retention() > 0  # segments with max timestamp < 50_000 go
    assert log.segment_count < segments
    start = log.log_start_offset
    assert start == log.segments[0].base_offset > 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    assert read_all(log)[0][0] == start
    # renamed now, unlinked after file.delete.delay.ms
    assert list(log.dir.glob("*.deleted"))
    clock.now += 1_000
    assert log.delete_pending() > 0 and not list(log.dir.glob("*.deleted"))
    log.config = cfg.with_overrides(retention_ms=-1, retention_bytes=2 * 4096)
    log.apply_retention()
    assert log.size_bytes - log.active.size < 2 * 4096
    assert log.segment_count >= 1 and log.log_end_offset == 300
    log.close()


def test_deleting_a_log_closes_the_segments_still_waiting_for_their_delete_delay(
    tmp_path: Path,
) -> None:
    clock = Clock(now=100_000)
    cfg = SMALL.with_overrides(retention_ms=50_000, file_delete_delay_ms=60_000)
    log = Log.open(tmp_path / "t-0", cfg, clock=clock)
    for i in range(60):
        log.append(_batch(i * 5, ts=i * 1_000))
    assert log.apply_retention() > 0 and list(log.dir.glob("*.deleted"))
    log.delete()  # the topic is deleted before file.delete.delay.ms is up
    assert not log.dir.exists()
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert not [path for path in held if str(tmp_path) in path]  # no space held by a file


def test_retention_never_deletes_the_active_segment(tmp_path: Path) -> None:
    clock = Clock(now=10**9)
    log = Log.open(tmp_path / "t-0", SMALL.with_overrides(retention_ms=1), clock=clock)
    log.append(_batch(0, ts=0))
    assert log.apply_retention() == 0 and log.log_end_offset == 5
    log.close()


def test_truncate_to(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    for i in range(60):
        log.append(_batch(i * 5))
    log.truncate_to(152)  # inside the batch 150..154: the whole batch goes
    assert log.log_end_offset == 150
    assert [r[0] for r in read_all(log)] == list(range(150))
    assert log.append(_batch(0)).first_offset == 150
    assert [r[0] for r in read_all(log)] == list(range(155))  # written where the log ends
    log.truncate_to(3)
    assert log.log_end_offset == 0 and log.segment_count == 1
    log.truncate_fully_and_start_at(1000)
    assert (log.log_start_offset, log.log_end_offset) == (1000, 1000)
    assert log.append(_batch(0)).first_offset == 1000
    log.close()


@pytest.mark.parametrize("roll", [False, True])
def test_a_truncation_past_a_compaction_gap_ends_the_log_at_its_target(
    tmp_path: Path, roll: bool
) -> None:
    """From a review: offsets 5-13 were compacted away on the leader; a follower cut back
    to 14 (the leader's epoch end) ended at 5, and, leader next, would have written new
    records at 5-13, offsets its consumers may have committed past. The log ends at the
    target, as Kafka's does; a cut into a batch still takes the whole batch."""
    log = Log.open(tmp_path / "t-0", SMALL)
    log.append_as_follower(encode_batch([(b"k", b"v", None, 1000)] * 5, base_offset=0))
    if roll:
        log.roll()  # the gap at a segment's start: that segment goes whole
    log.append_as_follower(encode_batch([(b"k", b"v", None, 1000)] * 2, base_offset=14))
    log.append_as_follower(encode_batch([(b"k", b"v", None, 1000)] * 4, base_offset=16))
    log.truncate_to(14)
    assert log.log_end_offset == 14 and [r[0] for r in read_all(log)] == list(range(5))
    assert log.append(_batch(0)).first_offset == 14
    log.truncate_to(15)  # inside the batch 14..18: it goes whole, the log ends at 14
    assert log.log_end_offset == 14
    log.close()


def test_follower_append_keeps_the_leaders_offsets(tmp_path: Path) -> None:
    leader = Log.open(tmp_path / "l-0", SMALL)
    follower = Log.open(tmp_path / "f-0", SMALL)
    for i in range(5):
        leader.append(_batch(i * 5), leader_epoch=3)
    data = leader.read(0, 1 << 20)
    assert data is not None
    follower.append_as_follower(data.read())
    assert follower.log_end_offset == 25
    assert follower.read(0, 1 << 20).read() == data.read()  # type: ignore[union-attr]
    with pytest.raises(InvalidRecordError, match="below the log end offset"):
        follower.append_as_follower(data.read())
    leader.close()
    follower.close()


def test_bad_appends_change_nothing(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", SMALL.with_overrides(max_message_bytes=500))
    log.append(_batch(0))
    corrupt = bytearray(_batch(0))
    corrupt[-3] ^= 0xFF
    with pytest.raises(CrcMismatchError):
        log.append(corrupt)
    with pytest.raises(MessageTooLargeError, match=r"over max\.message\.bytes"):
        log.append(_batch(0, n=20))
    with pytest.raises(RecordListTooLargeError, match=r"over segment\.bytes"):
        Log.open(tmp_path / "u-0", LogConfig(segment_bytes=100)).append(_batch(0))
    with pytest.raises(InvalidRecordError):
        log.append(b"")
    assert log.log_end_offset == 5 and [r[0] for r in read_all(log)] == list(range(5))
    log.close()


def test_flush_policy(tmp_path: Path) -> None:
    clock = Clock()
    cfg = SMALL.with_overrides(flush_messages=12, flush_ms=5_000)
    log = Log.open(tmp_path / "t-0", cfg, clock=clock)
    assert not log.flush_due()
    log.append(_batch(0))
    log.append(_batch(5))
    assert not log.flush_due() and log.recovery_point == 0
    log.append(_batch(10))
    assert log.flush_due()  # 15 records >= flush.messages
    log.flush()
    assert not log.flush_due() and log.recovery_point == 15
    log.append(_batch(15))
    clock.now += 5_000
    assert log.flush_due()  # flush.ms passed with unflushed records
    log.close()


async def test_flush_async_runs_off_the_loop_and_advances_the_recovery_point(
    tmp_path: Path,
) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    log.append(_batch(0))
    await log.flush_async()
    assert log.recovery_point == 5
    log.close()


def test_config_is_validated_with_kafkas_names() -> None:
    with pytest.raises(ValueError, match=r"retention.ms=-2 is invalid: it must be -1"):
        LogConfig(retention_ms=-2)
    assert LogConfig.from_properties({"segment.bytes": "1048576"}).segment_bytes == 1048576
    with pytest.raises(ValueError, match=r"unknown topic config 'segment\.size'"):
        LogConfig.from_properties({"segment.size": 1})
    with pytest.raises(ValueError, match="must be an integer"):
        LogConfig.from_properties({"retention.ms": "a week"})


# --- storage errors ------------------------------------------------------------------------


def _no_space(fd: int, buffers: list, offset: int) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_takes_only_this_log_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = Log.open(tmp_path / "full-0", SMALL)
    other = Log.open(tmp_path / "other-0", SMALL)
    full.append(_batch(0))
    monkeypatch.setattr(segment_module, "_pwritev", _no_space)
    with pytest.raises(KafkaStorageError, match="no space left on the device") as info:
        full.append(_batch(5))
    assert info.value.code == 56 and info.value.retriable
    assert full.offline
    assert "free space on that disk, then restart the broker" in capsys.readouterr().out
    monkeypatch.undo()
    with pytest.raises(KafkaStorageError, match="is offline"):
        full.append(_batch(5))  # stays offline even once space returns, until a restart
    assert [r[0] for r in read_all(full)] == list(range(5))  # written data stays readable
    assert other.append(_batch(0)).last_offset == 4  # the rest of the broker goes on
    other.close()
    full.close()
    reopened = Log.open(tmp_path / "full-0", SMALL)
    assert [r[0] for r in read_all(reopened)] == list(range(5))
    reopened.close()


def test_read_only_directory_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)

    def read_only(fd: int, buffers: list, offset: int) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(segment_module, "_pwritev", read_only)
    with pytest.raises(KafkaStorageError, match="log directory is not writable"):
        log.append(_batch(0))
    log.close()


def test_a_log_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(KafkaStorageError, match=r"t-0 cannot be opened: .* while opening"):
        Log.open(tmp_path / "not-a-dir" / "t-0", SMALL)


def _open_files() -> set[str]:
    """What this process has open: descriptors and mapped files (an index's mapping keeps
    its file open with no descriptor)."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # listdir's own descriptor, closed
            fds.add(os.readlink(f"/proc/self/fd/{fd}"))
    with open("/proc/self/maps") as maps:
        mapped = {line.split(maxsplit=5)[-1].strip() for line in maps if "/" in line}
    return fds | mapped


@pytest.mark.parametrize("error", [OSError(errno.EIO, "I/O error"), ValueError("bad snapshot")])
def test_a_log_that_fails_part_way_through_opening_keeps_no_file_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    log = Log.open(tmp_path / "t-0", SMALL)
    offset = 0
    while len(log.segments) < 4:
        log.append(_batch(offset))
        offset += 5
    log.close()
    before = _open_files()

    def fail(self: Log, at_most: int | None = None) -> None:
        raise error

    monkeypatch.setattr(Log, "_load_producers", fail)  # after every segment is open
    with pytest.raises(KafkaStorageError if isinstance(error, OSError) else ValueError):
        Log.open(tmp_path / "t-0", SMALL, clean_shutdown=True)
    left = {f for f in _open_files() - before if str(tmp_path) in f}
    assert left == set()
    monkeypatch.undo()
    reopened = Log.open(tmp_path / "t-0", SMALL, clean_shutdown=True)
    assert [r[0] for r in read_all(reopened)] == list(range(offset))  # nothing was lost
    reopened.close()


def test_a_segment_whose_index_cannot_open_closes_its_log_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _open_files()

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(segment_module, "TimeIndex", refuse)
    with pytest.raises(KafkaStorageError, match="too many open files"):
        Log.open(tmp_path / "t-0", SMALL)
    assert {f for f in _open_files() - before if str(tmp_path) in f} == set()


def test_a_swap_whose_recovery_fails_keeps_no_file_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash left a cleaned segment to finish installing (``.log.swap``): when reading
    it fails, each retried open must not leave its descriptor behind."""
    import shutil

    d = tmp_path / "t-0"
    log = Log.open(d, SMALL)
    for i in range(30):
        log.append(_batch(i * 5))
    log.close()
    first = min(p for p in d.iterdir() if p.name.endswith(".log"))
    shutil.copy(first, first.with_name(first.name + ".swap"))
    before = _open_files()
    real = segment_module.LogSegment.recover

    def failing(self: segment_module.LogSegment) -> int:
        if self.log_path.name.endswith(".swap"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(self)

    monkeypatch.setattr(segment_module.LogSegment, "recover", failing)
    for _ in range(3):
        with pytest.raises(KafkaStorageError, match="cannot be opened"):
            Log.open(d, SMALL, clean_shutdown=True)
    assert {f for f in _open_files() - before if str(tmp_path) in f} == set()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Path:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected ENOSPC test covers the logic")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk(tiny_tmpfs: Path) -> None:
    log = Log.open(tiny_tmpfs / "t-0", LogConfig(segment_index_bytes=4096))
    acked = []
    with pytest.raises(KafkaStorageError, match="no space left"):
        for i in range(10_000):
            acked.append(log.append(_batch(i * 5, size=1000)).last_offset)
    assert acked and log.offline
    assert [r[0] for r in read_all(log)] == list(range(acked[-1] + 1))  # nothing torn
    log.close()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's smaps")
def test_index_mappings_ask_for_no_readahead(tmp_path: Path) -> None:
    """The first touch of a fresh, preallocated index ran the kernel's readahead over the
    whole sparse file (12-17 ms for 10 MiB on Linux 6.18/ext4) on the event loop, at every
    partition's first append and every roll. Each index mapping is advised MADV_RANDOM,
    which Linux shows as ``rr`` in the mapping's VmFlags."""
    log = Log.open(tmp_path / "t-0", LogConfig(index_interval_bytes=1))
    log.append(_batch(0))
    log.append(_batch(5))  # past the interval: both indexes take an entry
    flags = _vm_flags(tmp_path / "t-0")
    assert {path.suffix for path in flags} == {".index", ".timeindex"}
    assert all("rr" in f for f in flags.values()), flags
    log.close()


def _vm_flags(directory: Path) -> dict[Path, list[str]]:
    """VmFlags of this process's mappings of files in ``directory``."""
    found: dict[Path, list[str]] = {}
    current: Path | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 6 and fields[5].startswith(str(directory)):
            current = Path(fields[5])
        elif fields[0] == "VmFlags:" and current is not None:
            found[current] = fields[1:]
            current = None
        elif "-" in fields[0]:
            current = None
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts Linux's open files")
def test_a_segment_holds_three_descriptors(tmp_path: Path) -> None:
    """Its .log and its two index mappings (CPython's mmap keeps a duplicate of the
    descriptor it maps): the broker's open files limit goes by partitions, and a
    descriptor kept per index besides made each cost five."""
    before = len(list(Path("/proc/self/fd").iterdir()))
    log = Log.open(tmp_path / "t-0", LogConfig(segment_bytes=1024, index_interval_bytes=1))
    for i in range(30):
        log.append(_batch(i * 5))
    assert log.segment_count >= 3
    held = len(list(Path("/proc/self/fd").iterdir())) - before
    assert held == 3 * log.segment_count
    log.close()
    assert len(list(Path("/proc/self/fd").iterdir())) == before


def test_opening_removes_what_a_crash_left_and_indexes_without_their_log(
    tmp_path: Path,
) -> None:
    log = Log.open(tmp_path / "t-0", LogConfig())
    log.append(_batch(0))
    log.close()
    d = tmp_path / "t-0"
    stray = ["00000000000000000099.index", "00000000000000000099.timeindex"]
    stray += ["00000000000000000000.log.deleted", "00000000000000000007.cleaned"]
    for name in stray:
        (d / name).write_bytes(b"x")
    log = Log.open(d, LogConfig(), clean_shutdown=True)
    try:
        assert not [name for name in stray if (d / name).exists()]
        assert (d / "00000000000000000000.index").exists()  # its log is there: kept
        assert log.log_end_offset == 5
    finally:
        log.close()


# --- message.timestamp.before/after.max.ms (KIP-937) ----------------------------------------


def _at(*timestamps: int) -> bytes:
    return encode_batch([(None, b"v%d" % i, None, ts) for i, ts in enumerate(timestamps)])


def test_timestamp_bounds_refuse_a_producer_batch_whole(tmp_path: Path) -> None:
    clock = Clock(now=10_000_000)
    bounded = SMALL.with_overrides(
        message_timestamp_before_max_ms=60_000, message_timestamp_after_max_ms=1_000
    )
    log = Log.open(tmp_path / "t-0", bounded, clock=clock)
    now = clock.now
    assert log.append(_at(now - 60_000, now + 1_000)).first_offset == 0  # the bounds are in
    with pytest.raises(InvalidTimestampError) as ahead:
        log.append(_at(now, now + 1_001))
    assert ahead.value.message == (
        "t-0: a record's timestamp 10001001 is 1001 ms ahead of this broker's clock, more "
        "than message.timestamp.after.max.ms=1000 allows: send records stamped with the "
        "current time, or raise the topic's limit"
    )
    # older than the batch's first record: found by reading every record, as Kafka does
    with pytest.raises(
        InvalidTimestampError, match=r"60001 ms behind .*timestamp\.before\.max\.ms=60000"
    ):
        log.append(_at(now, now - 60_001, now))
    gzipped = encode_batch([(None, b"x", None, now), (None, b"y", None, 5)], compression="gzip")
    with pytest.raises(InvalidTimestampError, match="behind"):
        log.append(gzipped)
    assert log.log_end_offset == 2  # nothing of the refused batches was written
    assert log.append(_at(now, -1)).first_offset == 2  # no timestamp (-1): not checked
    # the clock moves on: what was ahead is now in bounds
    clock.now += 5_000
    assert log.append(_at(now + 5_000)).first_offset == 4
    # followers and coordinators take what their leader or they wrote
    log.append_as_follower(encode_batch([(None, b"f", None, 1)], base_offset=5))
    log.append(_at(1), coordinator=True)
    assert [(o, v) for o, _, v, _ in read_all(log)] == [
        (0, b"v0"),
        (1, b"v1"),
        (2, b"v0"),
        (3, b"v1"),
        (4, b"v0"),
        (5, b"f"),
        (6, b"v0"),
    ]
    log.close()


def test_timestamp_bounds_by_default_are_kafka_4s_and_log_append_time_has_none(
    tmp_path: Path,
) -> None:
    clock = Clock(now=10_000_000)
    log = Log.open(tmp_path / "a-0", SMALL, clock=clock)
    # Kafka 4.0's defaults (KIP-1030): any age, at most an hour ahead
    log.append(_at(0, clock.now + 3_600_000))
    with pytest.raises(InvalidTimestampError, match=r"after\.max\.ms=3600000"):
        log.append(_at(clock.now + 3_600_001))
    log.close()
    stamped = SMALL.with_overrides(
        message_timestamp_type="LogAppendTime",
        message_timestamp_before_max_ms=0,
        message_timestamp_after_max_ms=0,
    )
    log = Log.open(tmp_path / "b-0", stamped, clock=clock)
    log.append(_at(0))  # the leader's clock replaces it: nothing to check
    log.close()


def test_segment_jitter_takes_up_to_segment_ms_off_each_roll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    def randrange(stop: int) -> int:
        asked.append(stop)
        return 400

    monkeypatch.setattr(log_module.random, "randrange", randrange)
    clock = Clock()
    cfg = SMALL.with_overrides(segment_ms=1_000, segment_jitter_ms=5_000)
    log = Log.open(tmp_path / "t-0", cfg, clock=clock)
    log.append(_batch(0))
    clock.now += 599
    log.append(_batch(5))
    assert log.segment_count == 1
    clock.now += 1  # 600 ms: segment.ms less this segment's 400 ms of jitter
    log.append(_batch(10))
    assert log.segment_count == 2 and log.active.base_offset == 10
    assert asked == [1_000, 1_000]  # never more than segment.ms; one draw per segment
    log.close()
    log = Log.open(tmp_path / "u-0", SMALL.with_overrides(segment_ms=1_000), clock=clock)
    assert log.active.roll_jitter_ms == 0 and len(asked) == 2  # none set: no draw
    log.close()


def test_records_that_do_not_decode_are_invalid_record_not_retriable(tmp_path: Path) -> None:
    """With message.timestamp.before.max.ms the records are decoded: a batch whose CRC
    holds but whose records do not decode is INVALID_RECORD (Kafka's; not retriable), not
    CORRUPT_MESSAGE, which a producer would send again until its delivery timeout."""
    clock = Clock(now=10_000_000)
    log = Log.open(
        tmp_path / "t-0", SMALL.with_overrides(message_timestamp_before_max_ms=60_000), clock=clock
    )
    bad = bytearray(_at(clock.now, clock.now))
    bad[61] = 0x7E  # the first record's length (a varint): 63, past the batch's end
    bad[17:21] = crc32c(memoryview(bad)[21:]).to_bytes(4, "big")  # a CRC that holds
    with pytest.raises(InvalidRecordError, match="records that do not decode"):
        log.append(bytes(bad))
    assert log.log_end_offset == 0
    log.close()
