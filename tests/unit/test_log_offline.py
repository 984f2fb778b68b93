"""A log a disk error takes offline (KIP-112), on the broker's side, without a socket: the
log manager tells its listeners once, and LeaderAndIsr for that partition is answered
KAFKA_STORAGE_ERROR every time (the controller learns the offline replicas from those
answers) without the partition leading or following here. The controller's side, and a
real full disk, are in tests/integration (test_controller_zk, test_log_dir_failure)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from broker.log import LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import LeaderAndIsrLiveLeader, LeaderAndIsrPartitionState
from protocol.errors import KafkaStorageError
from protocol.records import encode_batch

TP = TopicPartition("t", 0)


def _state(leader: int, epoch: int) -> LeaderAndIsrPartitionState:
    return LeaderAndIsrPartitionState(
        topic_name="t",
        partition_index=0,
        controller_epoch=1,
        leader=leader,
        leader_epoch=epoch,
        isr=[1, 2],
        replicas=[1, 2],
    )


async def test_an_offline_log_is_reported_and_answered_as_such(tmp_path: Path) -> None:
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()
    told: list[TopicPartition] = []
    logs.add_offline_listener(told.append)

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load, config_known=lambda t: True)
    try:
        (ok,) = await manager.become_leader_or_follower([_state(1, 1)])
        assert ok.error_code == 0
        partition = manager.partitions[TP]
        partition.log.append(encode_batch([(None, b"v", None, 1000)]), leader_epoch=1)
        for _ in range(2):  # the first error reports it; a second error does not again
            with pytest.raises(KafkaStorageError):
                partition.log._go_offline(OSError(errno.ENOSPC, "full"), "appending to")
        assert told == [TP]

        # the same state again (a new controller resends everything): still an error
        (again,) = await manager.become_leader_or_follower([_state(1, 1)])
        assert again.error_code == KafkaStorageError.code
        # led elsewhere now: it follows nothing here, and says why each time
        leader = LeaderAndIsrLiveLeader(broker_id=2, host_name="127.0.0.1", port=9)
        (moved,) = await manager.become_leader_or_follower([_state(2, 2)], [leader])
        assert moved.error_code == KafkaStorageError.code
        assert (partition.leader_id, partition.leader_epoch) == (2, 2)
        assert not partition.is_leader
        assert not manager.fetchers  # no fetcher took it on
        (old,) = await manager.become_leader_or_follower([_state(1, 1)])
        assert old.error_code == KafkaStorageError.code
        assert partition.leader_epoch == 2  # an older state changes nothing
    finally:
        await manager.shutdown()
        logs.shutdown()
