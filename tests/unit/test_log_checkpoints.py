"""The log manager's checkpoint files written by several threads at once (retention's pass
and a topic deletion's ``delete_log`` in worker threads): one writer at a time, and never an
older snapshot of the offsets over a newer one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

import pytest

from broker.log import LogConfig
from broker.log import manager as manager_module
from broker.log.manager import (
    HIGH_WATERMARKS,
    LOG_START_OFFSETS,
    RECOVERY_POINTS,
    LogManager,
    read_checkpoint,
)
from protocol.records import encode_batch

CFG = LogConfig(segment_bytes=2048, index_interval_bytes=128)


async def test_checkpoint_writers_in_two_threads_take_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = LogManager([tmp_path], broker_id=1, cluster_id="c", default_config=CFG)
    manager.startup()
    kept = manager.get_or_create_log("kept", 0)
    kept.append(encode_batch([(None, b"v", None, 0)]))
    manager.get_or_create_log("gone", 0)
    # Both writers reach their first fsync before either goes on, if they can: without a
    # lock they share the one ``.tmp`` file, and the second rename finds it gone.
    barrier = threading.Barrier(2, timeout=0.5)
    fsync = os.fsync

    def meeting_fsync(fd: int) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        fsync(fd)

    monkeypatch.setattr(manager_module.os, "fsync", meeting_fsync)
    results = await asyncio.gather(
        asyncio.to_thread(manager.checkpoint),  # as retention's pass
        asyncio.to_thread(manager.delete_log, "gone", 0),  # as StopReplica's deletion
        return_exceptions=True,
    )
    monkeypatch.setattr(manager_module.os, "fsync", fsync)
    assert results == [None, None]
    assert not _matching(tmp_path, "*.tmp")
    for name in (RECOVERY_POINTS, LOG_START_OFFSETS):
        assert set(read_checkpoint(tmp_path / name)) == {("kept", 0)}  # the newest state
    manager.shutdown()


def _matching(directory: Path, pattern: str) -> list[Path]:
    return list(directory.glob(pattern))


def test_an_older_snapshot_is_never_written_over_a_newer_one(tmp_path: Path) -> None:
    manager = LogManager([tmp_path], broker_id=1, cluster_id="c", default_config=CFG)
    manager.startup()
    manager.get_or_create_log("gone", 0)
    older = manager._offsets()  # taken before the deletion, written after it: a slow writer
    manager.delete_log("gone", 0)
    manager._write_offsets(older)
    assert read_checkpoint(tmp_path / LOG_START_OFFSETS) == {}
    manager.shutdown()


def test_an_older_high_watermark_snapshot_is_never_written_over_a_newer_one(
    tmp_path: Path,
) -> None:
    """From a review: a periodic write cancelled at shutdown still runs in its thread,
    and may finish after the shutdown's own: the file must keep the newer one."""
    manager = LogManager([tmp_path], broker_id=1, cluster_id="c", default_config=CFG)
    manager.startup()
    manager.get_or_create_log("t", 0)
    tp = next(iter(manager.logs))
    older = manager._hw_files({tp: 5})
    newer = manager._hw_files({tp: 9})
    manager._write_high_watermarks(newer)
    manager._write_high_watermarks(older)
    assert read_checkpoint(tmp_path / HIGH_WATERMARKS) == {tp: 9}
    manager.shutdown()
