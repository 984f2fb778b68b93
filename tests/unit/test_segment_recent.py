"""The active segment's memory of recent batches (positions past the last index entry) is
only a hint: every lookup agrees with a plain index-and-scan, also after truncations that
refill the same offsets with batches of other sizes, and after a reopen."""

from pathlib import Path

from broker.log import Log, LogConfig
from protocol.records import encode_batch


def _batch(n: int, size: int) -> bytes:
    return encode_batch([(None, b"x" * size, None, 1000) for _ in range(n)])


def _check(log: Log) -> None:
    for segment in log.segments:
        for offset in range(segment.base_offset - 1, segment.next_offset + 2):
            _, position = segment.offset_index.lookup(offset)
            expected = segment._scan(offset, position)
            assert segment.find(offset) == expected, offset


def test_find_agrees_with_the_index_and_a_scan(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", LogConfig(index_interval_bytes=512))
    for i in range(200):
        log.append(_batch(1 + i % 3, 10 + i % 7), leader_epoch=0)
    assert log.active._recent_bases  # the hints are in play
    _check(log)
    read = log.read(log.log_end_offset - 1, 1 << 20)
    assert read is not None and read.size > 0
    assert log.read(log.log_end_offset, 1 << 20) is None


def test_hints_survive_truncation_and_refill_with_other_sizes(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", LogConfig(index_interval_bytes=4096))
    for _ in range(60):
        log.append(_batch(2, 10), leader_epoch=0)
    log.truncate_to(50)
    _check(log)
    for _ in range(30):
        log.append(_batch(3, 25), leader_epoch=1)  # same offsets again, other boundaries
    _check(log)
    log.close()
    reopened = Log.open(tmp_path / "t-0", LogConfig(index_interval_bytes=4096))
    _check(reopened)
    reopened.close()


def test_a_read_past_the_high_watermark_finds_nothing(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", LogConfig())
    log.append(_batch(1, 10), leader_epoch=0)
    log.append(_batch(1, 10), leader_epoch=0)
    assert log.read(1, 1 << 20, max_offset=1) is None  # offset 1 is not committed
    found = log.read(0, 1 << 20, max_offset=1)
    assert found is not None and found.first_offset == 0
