"""The active segment's memory of recent batches (past the last index entry) answers tail
lookups and reads with no header ``pread``: every lookup and range agrees with a plain
scan of the file's headers, also across offset gaps (a follower's copy of compacted
batches), after truncations that refill the same offsets with batches of other sizes, and
after a reopen."""

from pathlib import Path

from broker.log import Log, LogConfig
from broker.log.segment import LogSegment
from protocol.records import encode_batch
from protocol.records.batch import HEADER_SIZE


def _batch(n: int, size: int) -> bytes:
    return encode_batch([(None, b"x" * size, None, 1000) for _ in range(n)])


def _scanned_range(
    segment: LogSegment, offset: int, max_bytes: int, max_offset: int, min_one: bool
) -> tuple[int, int, int] | None:
    """read_range as a reader with no memory would compute it: every header from 0."""
    picked = []
    for header in segment.headers(0):
        if header.last_offset < offset:
            continue
        if header.base_offset >= max_offset:
            break
        size = header.end - (picked[0].position if picked else header.position)
        if size > max_bytes and (picked or not min_one):
            break
        picked.append(header)
    if not picked:
        return None
    return picked[0].position, picked[-1].end - picked[0].position, picked[0].base_offset


def _check(log: Log) -> None:
    for segment in log.segments:
        for offset in range(segment.base_offset - 1, segment.next_offset + 2):
            _, position = segment.offset_index.lookup(offset)
            expected = segment._scan(offset, position)
            assert segment.find(offset) == expected, offset
            if offset % 7 and offset < segment.next_offset - 30:
                continue  # ranges: the tail, where reads are remembered, and a sample
            for max_bytes in (0, HEADER_SIZE + 40, 300, 1 << 20):
                for max_offset in (offset, offset + 1, offset + 5, segment.next_offset):
                    for min_one in (True, False):
                        got = segment.read_range(
                            offset, max_bytes, max_offset=max_offset, min_one_batch=min_one
                        )
                        want = _scanned_range(segment, offset, max_bytes, max_offset, min_one)
                        assert got == want, (offset, max_bytes, max_offset, min_one)


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


def test_offset_gaps_in_a_followers_copy(tmp_path: Path) -> None:
    leader = Log.open(tmp_path / "leader-0", LogConfig())
    for _ in range(6):
        leader.append(_batch(3, 10), leader_epoch=0)
    follower = Log.open(tmp_path / "follower-0", LogConfig(index_interval_bytes=1 << 20))
    for header in leader.active.headers(0):
        if header.base_offset % 2:  # every other batch kept, as compaction leaves gaps
            continue
        follower.append_as_follower(leader.active.read(header.position, header.size))
    assert follower.active._recent_bases == [0, 6, 12]
    _check(follower)  # offsets 3-5, 9-11 fall in gaps: the next batch holds them
    leader.close()
    follower.close()


def test_a_read_past_the_high_watermark_finds_nothing(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", LogConfig())
    log.append(_batch(1, 10), leader_epoch=0)
    log.append(_batch(1, 10), leader_epoch=0)
    assert log.read(1, 1 << 20, max_offset=1) is None  # offset 1 is not committed
    found = log.read(0, 1 << 20, max_offset=1)
    assert found is not None and found.first_offset == 0
