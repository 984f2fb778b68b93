"""Retention as the topic's live config says: by time and size only with
``cleanup.policy`` including delete, never past the high watermark, and below a log start
offset a follower took from its leader whatever the policy."""

import threading
from pathlib import Path

import pytest

from broker.log import Log, LogConfig
from broker.log import manager as manager_module
from broker.log.manager import (
    LOG_START_OFFSETS,
    RECOVERY_POINTS,
    LogManager,
    TopicPartition,
    read_checkpoint,
)
from protocol.errors import OffsetOutOfRangeError
from protocol.records import encode_batch

SMALL = LogConfig(segment_bytes=4096, index_interval_bytes=256, segment_index_bytes=4096)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _batch(first: int, n: int = 5, ts: int = 1_000) -> bytes:
    return encode_batch([(f"k{first + i}".encode(), b"v" * 40, None, ts + i) for i in range(n)])


def _filled(path: Path, config: LogConfig, clock: Clock) -> Log:
    log = Log.open(path, config, clock=clock)
    for i in range(60):
        log.append(_batch(i * 5, ts=i * 1_000))  # timestamps 0 .. 59_004, 300 records
    assert log.segment_count > 4
    return log


@pytest.mark.parametrize("policy", ["delete", "compact,delete", "delete,compact"])
def test_time_and_size_retention_with_delete_in_the_policy(tmp_path: Path, policy: str) -> None:
    clock = Clock(now=100_000)
    log = _filled(tmp_path / "t-0", SMALL.with_properties({"cleanup.policy": policy}), clock)
    log.config = log.config.with_overrides(retention_ms=70_000)  # a live change
    assert log.apply_retention() == 2  # the segments whose newest record is over 70 s old
    assert log.log_start_offset == log.segments[0].base_offset > 0
    log.config = log.config.with_overrides(retention_ms=-1, retention_bytes=2_000)
    assert log.apply_retention() > 0
    assert log.segment_count == 1  # what is left without the active one is over 2,000 bytes
    log.close()


def test_a_compact_only_topic_is_never_trimmed_by_time_or_size(tmp_path: Path) -> None:
    clock = Clock(now=10**9)  # everything is ancient
    config = SMALL.with_overrides(cleanup_policy="compact", retention_ms=1, retention_bytes=0)
    log = _filled(tmp_path / "t-0", config, clock)
    segments = log.segment_count
    assert log.apply_retention() == 0
    assert log.segment_count == segments and log.log_start_offset == 0
    log.config = config.with_overrides(cleanup_policy="compact,delete")  # altered live
    assert log.apply_retention() == segments - 1  # all but the active segment
    log.close()


def test_retention_stops_at_the_high_watermark(tmp_path: Path) -> None:
    clock = Clock(now=10**9)
    log = _filled(tmp_path / "t-0", SMALL.with_overrides(retention_ms=1), clock)
    third = log.segments[2].base_offset
    # records from the third segment on are not yet replicated: only two may go
    assert log.apply_retention(high_watermark=third) == 2
    assert log.log_start_offset == third
    assert log.apply_retention(high_watermark=third) == 0
    assert log.apply_retention(high_watermark=log.log_end_offset) > 0
    log.close()


def test_a_follower_takes_its_leaders_log_start_offset(tmp_path: Path) -> None:
    clock = Clock(now=100_000)
    log = _filled(tmp_path / "t-0", SMALL.with_overrides(cleanup_policy="compact"), clock)
    cut = log.segments[3].base_offset + 2  # inside the fourth segment
    assert log.advance_log_start_offset(cut)
    assert not log.advance_log_start_offset(cut - 1)  # never backwards
    assert log.log_start_offset == cut
    with pytest.raises(OffsetOutOfRangeError):
        log.read(cut - 1, 1 << 20)
    data = log.read(cut, 1 << 20)  # whole batches: the one holding `cut` is read
    assert data is not None and cut - 5 < data.first_offset <= cut
    # compact-only, yet the segments wholly below the new start go
    assert log.apply_retention() == 3
    assert log.segments[0].base_offset <= cut < log.segments[1].base_offset
    assert log.log_start_offset == cut
    # never past the log end
    assert log.advance_log_start_offset(10**6)
    assert log.log_start_offset == log.log_end_offset == 300
    log.close()


def test_the_new_log_start_offset_survives_a_reopen(tmp_path: Path) -> None:
    clock = Clock(now=10**9)
    log = _filled(tmp_path / "t-0", SMALL.with_overrides(retention_ms=1), clock)
    log.apply_retention()
    start = log.log_start_offset
    log.close()
    again = Log.open(tmp_path / "t-0", SMALL, clock=clock, clean_shutdown=True)
    assert again.log_start_offset == start and again.log_end_offset == 300
    again.close()


# --- a pass over the log manager (what the broker runs every log.retention.check.interval.ms)


def _manager(root: Path, clock: Clock) -> LogManager:
    config = SMALL.with_overrides(retention_ms=1, file_delete_delay_ms=0)
    manager = LogManager([root], broker_id=1, cluster_id="c", default_config=config, clock=clock)
    manager.startup()
    for topic in ("known", "unknown"):
        log = manager.get_or_create_log(topic, 0)
        for i in range(60):
            log.append(_batch(i * 5, ts=i * 1_000))
    return manager


def _matching(directory: Path, pattern: str) -> list[Path]:
    return list(directory.glob(pattern))


async def test_a_retention_pass_unlinks_and_checkpoints_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = _manager(tmp_path, Clock(now=10**9))
    loop_thread = threading.get_ident()
    writes: list[tuple[str, int]] = []
    unlinks: list[int] = []
    write_atomically, unlink = manager_module.write_atomically, Path.unlink

    def recorded_write(path: Path, text: str) -> None:
        writes.append((path.name, threading.get_ident()))
        write_atomically(path, text)

    def recorded_unlink(path: Path, missing_ok: bool = False) -> None:
        if path.name.endswith(".deleted"):
            unlinks.append(threading.get_ident())
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(manager_module, "write_atomically", recorded_write)
    monkeypatch.setattr(Path, "unlink", recorded_unlink)
    deleted = await manager.apply_retention({})
    monkeypatch.undo()
    assert deleted > 0 and not _matching(tmp_path, "*/*.deleted")
    assert unlinks and loop_thread not in unlinks
    assert {name for name, _ in writes} == {LOG_START_OFFSETS, RECOVERY_POINTS}
    assert all(thread != loop_thread for _, thread in writes)
    start = manager.logs[TopicPartition("known", 0)].log_start_offset
    assert read_checkpoint(tmp_path / LOG_START_OFFSETS)[TopicPartition("known", 0)] == start > 0
    manager.shutdown()


async def test_a_retention_pass_leaves_logs_of_unread_topic_config_alone(
    tmp_path: Path,
) -> None:
    """Their log has the broker's defaults (delete, here with a 1 ms retention), not what
    their topic says (say, compact: __consumer_offsets): nothing may go until it is read."""
    manager = _manager(tmp_path, Clock(now=10**9))
    unknown = manager.logs[TopicPartition("unknown", 0)]
    segments = unknown.segment_count
    assert await manager.apply_retention({}, lambda tp: tp.topic != "unknown") > 0
    assert unknown.segment_count == segments and unknown.log_start_offset == 0
    assert manager.logs[TopicPartition("known", 0)].segment_count == 1
    manager.shutdown()
