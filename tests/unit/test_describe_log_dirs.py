"""DescribeLogDirs on a broker's replica manager: its directories, the partitions in them
with their sizes, only those asked for, and a directory whose file system cannot be read."""

from __future__ import annotations

import shutil

import pytest

import broker.replica.manager as manager_module
from protocol.apis import DescribableLogDirTopic, DescribeLogDirsRequest
from tests.unit.conftest import MakeLeader


async def test_directories_partitions_and_sizes(
    make_leader: MakeLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = await make_leader([1], True)
    log = manager.partitions[next(iter(manager.partitions))].log
    (result,) = (await manager.describe_log_dirs(DescribeLogDirsRequest())).results
    assert result.log_dir == str(log.dir.parent) and result.error_code == 0
    assert 0 < result.usable_bytes <= result.total_bytes
    (topic,) = result.topics
    assert (topic.name, topic.partitions[0].partition_index) == ("t", 0)
    assert topic.partitions[0].partition_size == log.size_bytes
    assert topic.partitions[0].offset_lag == 0  # a leader: its log end is its own

    log.offline_reason = "an I/O error (injected)"  # what a failed write or fsync does
    (result,) = (await manager.describe_log_dirs(DescribeLogDirsRequest())).results
    assert result.error_code == 56  # KAFKA_STORAGE_ERROR: the directory has a bad log
    assert result.topics[0].partitions[0].offset_lag == -1
    log.offline_reason = None

    other = DescribeLogDirsRequest(topics=[DescribableLogDirTopic(topic="t", partitions=[5])])
    (result,) = (await manager.describe_log_dirs(other)).results
    assert result.topics == []  # a directory is listed even with none of those in it

    def unreadable(path: object) -> shutil._ntuple_diskusage:
        raise OSError("input/output error")

    monkeypatch.setattr(manager_module.shutil, "disk_usage", unreadable)
    (result,) = (await manager.describe_log_dirs(DescribeLogDirsRequest())).results
    assert result.error_code == 56 and result.total_bytes == -1  # KAFKA_STORAGE_ERROR
