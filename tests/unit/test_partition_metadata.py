"""A replica's ``partition.metadata`` (KIP-516), without a socket: the log keeps its
topic's id in Kafka's format, and a LeaderAndIsr naming another id for the topic finds a
log of a deleted topic of that name, which is refused (INCONSISTENT_TOPIC_ID), stopped if
hosted, and left on disk. The controller's side and real brokers: tests/integration
(test_topic_ids)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import broker.log.log as log_module
from broker.log import Log, LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.log.partition_metadata import FILE_NAME, read_topic_id, write_topic_id
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import LeaderAndIsrPartitionState
from protocol.errors import InconsistentTopicIdError, KafkaStorageError
from protocol.records import encode_batch

TP = TopicPartition("t", 0)
OLD, NEW = bytes([1]) * 16, bytes([2]) * 16


def _state(epoch: int = 1) -> LeaderAndIsrPartitionState:
    return LeaderAndIsrPartitionState(
        topic_name="t",
        partition_index=0,
        controller_epoch=1,
        leader=1,
        leader_epoch=epoch,
        isr=[1],
        replicas=[1],
    )


def test_the_file_is_kafkas_and_a_bad_one_reads_as_no_id(tmp_path: Path) -> None:
    assert read_topic_id(tmp_path) is None
    write_topic_id(tmp_path, bytes.fromhex("0123456789abcdef0fedcba987654321"))
    assert (tmp_path / FILE_NAME).read_text() == "version: 0\ntopic_id: ASNFZ4mrze8P7cuph2VDIQ\n"
    assert read_topic_id(tmp_path) == bytes.fromhex("0123456789abcdef0fedcba987654321")
    for bad in ("", "version: 1\ntopic_id: ASNFZ4mrze8P7cuph2VDIQ\n", "version: 0\ntopic_id: x\n"):
        (tmp_path / FILE_NAME).write_text(bad)  # a crash before writeback; a hand edit
        assert read_topic_id(tmp_path) is None
    (tmp_path / FILE_NAME).write_bytes(b"\xff\xfe")
    assert read_topic_id(tmp_path) is None


def test_a_log_opens_with_its_topic_id(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", LogConfig())
    assert log.topic_id is None
    log.close()
    write_topic_id(tmp_path / "t-0", OLD)
    log = Log.open(tmp_path / "t-0", LogConfig())
    assert log.topic_id == OLD
    log.close()


@pytest.fixture
async def replicas(tmp_path: Path) -> tuple[ReplicaManager, LogManager]:
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load, config_known=lambda t: True)
    yield manager, logs
    await manager.shutdown()
    logs.shutdown()


async def test_a_replica_keeps_its_topics_id_and_refuses_another_topics_log(
    replicas: tuple[ReplicaManager, LogManager],
) -> None:
    manager, logs = replicas
    # a controller of an older build sends no ids: nothing written, nothing checked
    (ok,) = await manager.become_leader_or_follower([_state(1)])
    assert ok.error_code == 0 and manager.partitions[TP].log.topic_id is None
    # the first ids: the hosted log keeps its topic's
    (ok,) = await manager.become_leader_or_follower([_state(1)], topic_ids={"t": OLD})
    log = manager.partitions[TP].log
    assert ok.error_code == 0 and log.topic_id == OLD and read_topic_id(log.dir) == OLD
    log.append(encode_batch([(None, b"of the old topic", None, 1000)]), leader_epoch=1)

    # another id for "t": this log is of a topic deleted while the broker was away
    (refused,) = await manager.become_leader_or_follower([_state(2)], topic_ids={"t": NEW})
    assert refused.error_code == InconsistentTopicIdError.code
    assert TP not in manager.partitions  # stopped: neither leads nor follows it
    assert log.dir.exists() and log.log_end_offset == 1  # left on disk, for an operator
    assert logs.get_log("t", 0) is log
    # and again each time (the controller counts the replica offline meanwhile)
    (again,) = await manager.become_leader_or_follower([_state(3)], topic_ids={"t": NEW})
    assert again.error_code == InconsistentTopicIdError.code and TP not in manager.partitions
    # the same id as its own: hosted again
    (back,) = await manager.become_leader_or_follower([_state(4)], topic_ids={"t": OLD})
    assert back.error_code == 0 and manager.partitions[TP].log is log


async def test_a_new_replica_writes_its_topics_id(
    replicas: tuple[ReplicaManager, LogManager],
) -> None:
    manager, _ = replicas
    (ok,) = await manager.become_leader_or_follower([_state(1)], topic_ids={"t": NEW})
    assert ok.error_code == 0
    assert read_topic_id(manager.partitions[TP].log.dir) == NEW


async def test_a_write_that_fails_takes_its_log_offline(
    replicas: tuple[ReplicaManager, LogManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, logs = replicas
    told: list[TopicPartition] = []
    logs.add_offline_listener(told.append)
    (ok,) = await manager.become_leader_or_follower([_state(1)])  # (no ids: none written)
    assert ok.error_code == 0
    log = manager.partitions[TP].log

    def full(directory: Path, topic_id: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log_module, "write_topic_id", full)
    (answer,) = await manager.become_leader_or_follower([_state(1)], topic_ids={"t": NEW})
    assert answer.error_code == 0  # (the partition's state was applied before)
    assert log.offline and log.topic_id is None and told == [TP]
    # from then on, as for any disk error: KAFKA_STORAGE_ERROR to the controller
    (again,) = await manager.become_leader_or_follower([_state(2)], topic_ids={"t": NEW})
    assert again.error_code == KafkaStorageError.code
