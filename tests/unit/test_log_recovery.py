"""Crash recovery of one partition's log: damaged files on disk, then ``Log.open``.

Each test builds a log of several segments, stops it (cleanly, or as a killed process
would: descriptors closed, nothing trimmed), damages its files the way a crash or a bad
disk does, reopens it and checks that exactly the batches before the damage are read back,
that the log end offset is the offset after the last valid batch, and that appends go on
from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from broker.log import Log, LogConfig
from broker.log.segment import segment_name
from protocol.records import HEADER_SIZE, BatchHeader, decode_batches, encode_batch, scan_batches
from tests.logs import Rec, read_all

SMALL = LogConfig(segment_bytes=4096, index_interval_bytes=256, segment_index_bytes=4096)


class Appended(NamedTuple):
    first_offset: int
    last_offset: int
    records: list[Rec]


def _batch_records(i: int, n: int) -> list[tuple[bytes, bytes, int]]:
    """Records of the i-th batch: distinct keys and values, timestamps rising batch to batch."""
    return [
        (f"k{i}-{j}".encode(), bytes([i % 256, j]) * (10 + (i * 7 + j) % 23), 10_000 + i * 100 + j)
        for j in range(n)
    ]


def _append(log: Log, i: int, n: int = 4, compression: str = "none") -> Appended:
    recs = _batch_records(i, n)
    info = log.append(
        encode_batch([(k, v, None, ts) for k, v, ts in recs], compression=compression)
    )
    assert info.last_offset - info.first_offset + 1 == n
    return Appended(
        info.first_offset,
        info.last_offset,
        [(info.first_offset + j, k, v, ts) for j, (k, v, ts) in enumerate(recs)],
    )


def _fill(log: Log, batches: int, start: int = 0) -> list[Appended]:
    codecs = ["none", "gzip", "none", "lz4", "zstd", "snappy"]
    return [_append(log, i, 1 + i % 5, codecs[i % len(codecs)]) for i in range(start, batches)]


def _flat(appended: list[Appended]) -> list[Rec]:
    return [r for a in appended for r in a.records]


def _crash(log: Log) -> None:
    """Stop as a killed process does: descriptors go, nothing is trimmed or finished.

    The written bytes are in the page cache, so they survive; the active indexes stay
    preallocated (zeros after their entries) and no final time-index entry is written.
    """
    for segment in log.segments:
        segment.offset_index.close(trim=False)
        segment.time_index.close(trim=False)
        os.close(segment.fd)
    log.segments.clear()


def _stop(log: Log, how: str) -> None:
    if how == "crash":
        _crash(log)
    else:
        log.close()


def _path(directory: Path, base: int, suffix: str) -> Path:
    return directory / segment_name(base, suffix)


def _headers(path: Path) -> list[BatchHeader]:
    return scan_batches(path.read_bytes())


def _flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x5A
    path.write_bytes(bytes(data))


def _reopen_unclean(directory: Path) -> Log:
    return Log.open(directory, SMALL, recovery_point=0, clean_shutdown=False)


def _assert_continues(log: Log, expected: list[Rec], next_index: int) -> None:
    """The log holds ``expected`` exactly, and a new append lands right after it."""
    end = expected[-1][0] + 1 if expected else 0
    assert read_all(log) == expected
    assert log.log_end_offset == end
    more = _append(log, next_index, 3)
    assert more.first_offset == end
    assert read_all(log) == expected + more.records
    assert log.log_end_offset == end + 3


def _build(directory: Path, batches: int = 90) -> tuple[Log, list[Appended], list[int]]:
    log = Log.open(directory, SMALL)
    appended = _fill(log, batches)
    bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 4, "the tests need several segments"
    assert _flat(appended) == read_all(log)
    return log, appended, bases


def _last_batch_of(directory: Path, base: int) -> BatchHeader:
    headers = _headers(_path(directory, base, ".log"))
    assert len(headers) >= 2, "the active segment should hold a few batches"
    return headers[-1]


# --- (a) torn tail ---------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["crash", "close"])
def test_torn_tail_is_cut_back_to_the_last_whole_batch(tmp_path: Path, stop: str) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    _stop(log, stop)
    last = _last_batch_of(d, bases[-1])
    assert last.base_offset == appended[-1].first_offset
    with _path(d, bases[-1], ".log").open("r+b") as f:
        f.truncate(last.position + last.size // 2)

    log = _reopen_unclean(d)
    assert log.segment_count == len(bases)
    assert _path(d, bases[-1], ".log").stat().st_size == last.position
    _assert_continues(log, _flat(appended[:-1]), 1000)
    log.close()


def test_a_torn_batch_header_is_cut_too(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    _crash(log)
    last = _last_batch_of(d, bases[-1])
    with _path(d, bases[-1], ".log").open("r+b") as f:
        f.truncate(last.position + 7)  # not even the batch length survived

    log = _reopen_unclean(d)
    _assert_continues(log, _flat(appended[:-1]), 1000)
    log.close()


# --- (b) a flipped byte ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["records", "crc-covered header", "batch length"])
def test_a_flipped_byte_in_the_last_batch_drops_that_batch(tmp_path: Path, where: str) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    log.flush()
    _crash(log)
    last = _last_batch_of(d, bases[-1])
    offset_in_batch = {
        "records": HEADER_SIZE + (last.size - HEADER_SIZE) // 2,
        "crc-covered header": 24,  # last_offset_delta
        "batch length": 11,
    }[where]
    _flip_byte(_path(d, bases[-1], ".log"), last.position + offset_in_batch)

    log = _reopen_unclean(d)
    assert log.segment_count == len(bases)
    assert _path(d, bases[-1], ".log").stat().st_size == last.position
    _assert_continues(log, _flat(appended[:-1]), 1000)
    log.close()


def test_a_flipped_byte_in_an_earlier_batch_of_the_active_segment_drops_the_rest(
    tmp_path: Path,
) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    _crash(log)
    headers = _headers(_path(d, bases[-1], ".log"))
    assert len(headers) >= 3
    victim = headers[1]
    _flip_byte(_path(d, bases[-1], ".log"), victim.position + HEADER_SIZE + 1)

    log = _reopen_unclean(d)
    kept = [a for a in appended if a.first_offset < victim.base_offset]
    assert log.log_end_offset == victim.base_offset
    _assert_continues(log, _flat(kept), 1000)
    log.close()


# --- (c) deleted offset indexes --------------------------------------------------------------


@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("which", ["non-active", "active", "all"])
def test_a_deleted_offset_index_is_rebuilt(tmp_path: Path, which: str, clean: bool) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    log.close()
    victims = {"non-active": [bases[1]], "active": [bases[-1]], "all": bases}[which]
    for base in victims:
        _path(d, base, ".index").unlink()

    log = Log.open(d, SMALL, recovery_point=0, clean_shutdown=clean)
    assert log.segment_count == len(bases)
    for base in victims:
        assert _path(d, base, ".index").exists()
    for segment in log.segments:
        assert segment.indexes_sane()
    # the sparse index was rebuilt: a segment of ~4 KiB has entries every 256 bytes
    assert log.segments[1].offset_index.entries > 0
    expected = _flat(appended)
    # every offset is found through the (rebuilt) index, from every starting point
    for a in appended:
        for offset in (a.first_offset, a.last_offset):
            data = log.read(offset, 1)
            assert data is not None
            (batch,) = decode_batches(data.read())
            assert batch.base_offset == a.first_offset
            assert [(r.offset, r.key, r.value, r.timestamp) for r in batch] == a.records
    _assert_continues(log, expected, 1000)
    log.close()


# --- (d) zero-filled tails -------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["crash", "close"])
def test_a_zero_filled_tail_and_preallocated_indexes(tmp_path: Path, stop: str) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    _stop(log, stop)
    active_log = _path(d, bases[-1], ".log")
    size = active_log.stat().st_size
    for suffix in (".log", ".index", ".timeindex"):
        with _path(d, bases[-1], suffix).open("ab") as f:
            f.write(bytes(4096))

    log = _reopen_unclean(d)
    assert active_log.stat().st_size == size
    assert log.active.size == size
    assert log.active.indexes_sane()
    _assert_continues(log, _flat(appended), 1000)
    log.close()
    # a clean stop leaves no preallocated zeros behind
    assert _path(d, bases[-1], ".index").stat().st_size % 8 == 0
    assert _path(d, bases[-1], ".index").stat().st_size < 4096


def test_zeros_appended_to_an_index_after_a_clean_stop_are_not_trusted(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    log.close()
    for base in (bases[1], bases[-1]):
        for suffix in (".index", ".timeindex"):
            with _path(d, base, suffix).open("ab") as f:
                f.write(bytes(480))  # a multiple of 8 and of 12

    log = Log.open(d, SMALL, clean_shutdown=True)
    for segment in log.segments:
        assert segment.indexes_sane()
    for a in appended:
        data = log.read(a.last_offset, 1)
        assert data is not None
        assert next(iter(decode_batches(data.read()))).base_offset == a.first_offset
    _assert_continues(log, _flat(appended), 1000)
    log.close()


# --- (e) damage in a middle segment ----------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "zeros"])
def test_damage_in_a_middle_segment_drops_everything_after_it(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d, batches=120)
    log.flush()
    _crash(log)
    middle = bases[1]
    path = _path(d, middle, ".log")
    headers = _headers(path)
    assert len(headers) >= 4
    victim = headers[2]
    if damage == "flip":
        _flip_byte(path, victim.position + HEADER_SIZE + 3)
    else:
        data = bytearray(path.read_bytes())
        data[victim.position : victim.position + 100] = bytes(100)
        path.write_bytes(bytes(data))

    log = _reopen_unclean(d)
    assert [s.base_offset for s in log.segments] == bases[:2]
    for base in bases[2:]:
        for suffix in (".log", ".index", ".timeindex"):
            assert not _path(d, base, suffix).exists()
    assert path.stat().st_size == victim.position
    kept = [a for a in appended if a.first_offset < victim.base_offset]
    assert kept and len(kept) < len(appended)
    assert log.log_end_offset == victim.base_offset
    _assert_continues(log, _flat(kept), 1000)
    log.close()

    # and the repaired log reopens cleanly as it is
    log = Log.open(d, SMALL, clean_shutdown=True)
    assert log.log_end_offset == victim.base_offset + 3
    log.close()


def test_damage_at_the_very_start_of_a_middle_segment(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    _crash(log)
    _flip_byte(_path(d, bases[2], ".log"), HEADER_SIZE + 2)

    log = _reopen_unclean(d)
    kept = [a for a in appended if a.first_offset < bases[2]]
    assert log.log_end_offset == bases[2]
    assert log.segments[-1].size == 0
    _assert_continues(log, _flat(kept), 1000)
    log.close()


def test_recovery_from_a_checkpointed_recovery_point(tmp_path: Path) -> None:
    """What the log manager does after a crash: re-check only past the checkpointed point."""
    d = tmp_path / "t-0"
    log, appended, _ = _build(d)
    log.flush()
    recovery_point = log.recovery_point
    assert recovery_point == log.log_end_offset
    more = _fill(log, 100, start=90)
    _crash(log)
    active = max(int(p.stem) for p in d.glob("*.log"))
    last = _last_batch_of(d, active)
    with _path(d, active, ".log").open("r+b") as f:
        f.truncate(last.position + 20)

    log = Log.open(d, SMALL, recovery_point=recovery_point, clean_shutdown=False)
    expected = _flat(appended + more[:-1])
    _assert_continues(log, expected, 1000)
    log.close()


# --- (f) a clean reopen ----------------------------------------------------------------------


def test_a_clean_reopen_loses_nothing(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    sizes = [s.size for s in log.segments]
    max_ts = log.max_timestamp()
    log.close()
    files = {p.name: p.read_bytes() for p in d.glob("*.log")}

    log = Log.open(d, SMALL, clean_shutdown=True)
    assert [s.base_offset for s in log.segments] == bases
    assert [s.size for s in log.segments] == sizes
    assert {p.name: p.read_bytes() for p in d.glob("*.log")} == files
    assert log.log_end_offset == appended[-1].last_offset + 1
    assert log.max_timestamp() == max_ts
    _assert_continues(log, _flat(appended), 1000)
    log.close()

    # twice more, with appends in between: still nothing lost
    log = Log.open(d, SMALL, clean_shutdown=True)
    extra = _fill(log, 105, start=90)
    log.close()
    log = Log.open(d, SMALL, clean_shutdown=True)
    assert read_all(log)[-len(_flat(extra)) :] == _flat(extra)
    assert log.log_end_offset == extra[-1].last_offset + 1
    log.close()


def test_truncate_to_a_segment_boundary_after_a_clean_reopen(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    log.close()

    log = Log.open(d, SMALL, clean_shutdown=True)
    log.truncate_to(bases[-1])  # drops the active segment: the one before it becomes active
    kept = [a for a in appended if a.first_offset < bases[-1]]
    assert log.log_end_offset == bases[-1]
    _assert_continues(log, _flat(kept), 1000)
    log.close()


# --- (g) timestamps after recovery -----------------------------------------------------------


def _expected_for_timestamp(records: list[Rec], ts: int) -> tuple[int, int] | None:
    return next(((t, off) for off, _, _, t in records if t >= ts), None)


def _check_timestamps(log: Log, records: list[Rec]) -> None:
    first, last = records[0][3], records[-1][3]
    for ts in [*range(first - 50, last + 50, 17), *(r[3] for r in records[::5])]:
        assert log.offset_for_timestamp(ts) == _expected_for_timestamp(records, ts), ts
    best = max(records, key=lambda r: (r[3], -r[0]))
    # max_timestamp names the batch holding the largest timestamp
    batch_base = max(o for o, *_ in records if o <= best[0] and _is_batch_base(records, o))
    assert log.max_timestamp() == (best[3], batch_base)


def _is_batch_base(records: list[Rec], offset: int) -> bool:
    key = next(k for o, k, _, _ in records if o == offset)
    return key is not None and key.endswith(b"-0")


@pytest.mark.parametrize("damage", ["none", "timeindex deleted", "timeindex zeroed"])
def test_offset_for_timestamp_after_recovery(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    records = _flat(appended)
    _check_timestamps(log, records)
    _crash(log)
    for base in bases:
        path = _path(d, base, ".timeindex")
        if damage == "timeindex deleted":
            path.unlink()
        elif damage == "timeindex zeroed":
            path.write_bytes(bytes(path.stat().st_size or 12))
    last = _last_batch_of(d, bases[-1])
    with _path(d, bases[-1], ".log").open("r+b") as f:
        f.truncate(last.position + 30)  # and a torn tail

    log = _reopen_unclean(d)
    kept = _flat(appended[:-1])
    assert read_all(log) == kept
    for segment in log.segments:
        assert segment.time_index.entries > 0  # rebuilt
    _check_timestamps(log, kept)
    more = _append(log, 1000, 3)  # timestamps far above the rest
    _check_timestamps(log, [*kept, *more.records])
    log.close()


@pytest.mark.parametrize("damage", ["none", "non-active timeindex deleted"])
def test_offset_for_timestamp_after_a_clean_reopen(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "t-0"
    log, appended, bases = _build(d)
    records = _flat(appended)
    _check_timestamps(log, records)
    log.close()
    if damage != "none":
        _path(d, bases[1], ".timeindex").unlink()

    log = Log.open(d, SMALL, clean_shutdown=True)
    _check_timestamps(log, records)
    log.close()


def test_offset_for_timestamp_after_recovery_from_a_checkpointed_recovery_point(
    tmp_path: Path,
) -> None:
    """What the log manager does after a crash: recover only past the checkpointed point."""
    d = tmp_path / "t-0"
    log, appended, _ = _build(d)
    log.flush()
    recovery_point = log.recovery_point
    appended += _fill(log, 100, start=90)
    _crash(log)

    log = Log.open(d, SMALL, recovery_point=recovery_point, clean_shutdown=False)
    records = _flat(appended)
    assert read_all(log) == records
    _check_timestamps(log, records)
    log.close()


def test_a_clean_open_checks_the_last_index_entries_and_an_unclean_one_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Kafka's sanity check after a clean stop: the indexes were trimmed and flushed,
    so their last two entries are read (a zero-filled tail still shows: see above), not
    every entry (about 0.5 us each: 0.15 s for a full 1 GiB segment, minutes of a start
    for a broker holding a thousand). After a crash, every entry."""
    from broker.log import index as index_module

    d = tmp_path / "t-0"
    log, _, bases = _build(d)
    entries = sum(s.offset_index.entries + s.time_index.entries for s in log.segments)
    log.close()
    reads = [0]
    real = index_module._Index._get

    def counted(self: index_module._Index, i: int) -> tuple[int, int]:
        reads[0] += 1
        return real(self, i)

    monkeypatch.setattr(index_module._Index, "_get", counted)
    clean = Log.open(d, SMALL, clean_shutdown=True)
    assert reads[0] <= 2 * 2 * len(bases) + 64  # and what load_tail's lookups read
    assert entries > 4 * len(bases) + 64  # so a full check could not hide in that bound
    end = clean.log_end_offset
    clean.close()
    reads[0] = 0
    crashed = Log.open(d, SMALL, clean_shutdown=False, recovery_point=end)
    assert reads[0] >= entries
    crashed.close()


def test_a_clean_open_reads_only_each_segments_tail_whatever_the_timestamps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timestamps that never rise (a producer's fixed CreateTime): the time index holds
    one entry, at each segment's first batch. The open used to read every header from
    that entry on, so whole segments; now from the offset index's last entry."""
    from broker.log import segment as segment_module

    d = tmp_path / "t-0"
    log = Log.open(d, LogConfig(segment_bytes=20_000, index_interval_bytes=256))
    for i in range(400):
        log.append(encode_batch([(b"k", f"v{i}".encode() * 4, None, 5_000)]), leader_epoch=0)
    assert len(log.segments) == 2 and all(s.time_index.entries == 1 for s in log.segments)
    expected = [(s.max_timestamp, s.offset_of_max_timestamp) for s in log.segments]
    log.close()
    read = [0]
    real = segment_module.LogSegment.headers

    def counted(self: segment_module.LogSegment, *args: int) -> Iterator[BatchHeader]:
        for header in real(self, *args):
            read[0] += 1
            yield header

    monkeypatch.setattr(segment_module.LogSegment, "headers", counted)
    log = Log.open(
        d, LogConfig(segment_bytes=20_000, index_interval_bytes=256), clean_shutdown=True
    )
    assert read[0] <= 2 * 8, read[0]  # was 400: every batch of both segments
    assert [(s.max_timestamp, s.offset_of_max_timestamp) for s in log.segments] == expected
    assert log.max_timestamp() == (5_000, 0) and log.log_end_offset == 400
    log.close()


@pytest.mark.parametrize("stop", ["close", "crash"])
def test_a_zeroed_last_time_index_entry_is_rebuilt(tmp_path: Path, stop: str) -> None:
    """A one-entry time index zeroed (a disk's damage) passes the order check, and the
    open would take the largest timestamp of the tail it reads for the segment's: here a
    clock that stepped back after the first batch, so an earlier maximum, and retention.ms
    would delete the segment that much sooner. The first batch's timestamp shows the
    entry wrong, and the index is rebuilt: after a clean stop, and after a crash for a
    segment the recovery does not read again (below the recovery point)."""
    d = tmp_path / "t-0"
    log = Log.open(d, SMALL)
    for i in range(40):
        ts = 9_000 if i == 0 else 5_000
        log.append(encode_batch([(b"k", b"v" * 20, None, ts)]), leader_epoch=0)
    assert len(log.segments) == 1 and log.active.offset_index.entries > 2
    log.roll()
    log.append(encode_batch([(b"k", b"v" * 20, None, 5_000)]), leader_epoch=0)
    log.flush()
    recovery_point = log.recovery_point
    assert recovery_point == log.log_end_offset == 41
    _stop(log, stop)
    path = _path(d, 0, ".timeindex")
    assert path.stat().st_size == 12  # one entry: the first batch's
    path.write_bytes(bytes(12))
    log = Log.open(d, SMALL, clean_shutdown=stop == "close", recovery_point=recovery_point)
    assert (log.segments[0].max_timestamp, log.segments[0].offset_of_max_timestamp) == (9_000, 0)
    assert log.max_timestamp() == (9_000, 0)
    assert log.offset_for_timestamp(6_000) == (9_000, 0)
    log.close()


@pytest.mark.parametrize("stop", ["close", "crash, index lost"])
def test_a_lowered_segment_index_bytes_keeps_the_log_readable(tmp_path: Path, stop: str) -> None:
    """From a review: with segment.index.bytes lowered below what the active segment's
    index held, its entries were cut on open and its close raised IndexFullError (and so
    did the next open); a recovery rebuilding such an index overflowed the same way. An
    index keeps what it holds (the log rolls at its next append), a rebuilt one gets room
    for the segment's entries."""
    d = tmp_path / "t-0"
    big = LogConfig(segment_bytes=10**7, index_interval_bytes=64, segment_index_bytes=40_960)
    small = LogConfig(segment_bytes=10**7, index_interval_bytes=64, segment_index_bytes=4_096)
    log = Log.open(d, big)
    appended = [_append(log, i, 1) for i in range(700)]
    assert log.active.offset_index.entries > small.segment_index_bytes // 8  # 8-byte entries
    _stop(log, "close" if stop == "close" else "crash")
    if stop != "close":
        _path(d, 0, ".index").unlink()
        _path(d, 0, ".timeindex").unlink()
    log = Log.open(d, small, clean_shutdown=stop == "close")
    assert read_all(log) == _flat(appended)
    more = _append(log, 700, 1)
    # the full index rolled the log (a rebuilt one was made room for: no roll needed)
    assert len(log.segments) == (2 if stop == "close" else 1)
    _check_timestamps(log, [*_flat(appended), *more.records])
    log.close()
    log = Log.open(d, small, clean_shutdown=True)
    assert read_all(log) == [*_flat(appended), *more.records]
    log.close()
