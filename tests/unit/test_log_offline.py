"""A log a disk error takes offline (KIP-112), on the broker's side, without a socket: the
log manager tells its listeners once, and LeaderAndIsr for that partition is answered
KAFKA_STORAGE_ERROR every time (the controller learns the offline replicas from those
answers) without the partition leading or following here. The controller's side, and a
real full disk, are in tests/integration (test_controller_zk, test_log_dir_failure)."""

from __future__ import annotations

import asyncio
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


# --- review of 3197e04 --------------------------------------------------------------------


async def test_an_offline_offsets_partition_handed_away_is_unloaded_here(
    tmp_path: Path,
) -> None:
    """__consumer_offsets-0 led here loses its log to a disk error, and the controller
    hands it to broker 2 (LeaderAndIsr: leader 2, epoch 2). The group coordinator here
    must stop coordinating its groups (as any loss of leadership does, through the role
    listeners): else the members still talking to this broker keep heartbeating a group
    that broker 2 now coordinates too, from the log, rebalancing without them: two
    coordinators of one group, two consumers of the same partitions."""
    from broker.config import BrokerConfig
    from broker.coordinator.coordinator import GroupCoordinator
    from protocol.apis import HeartbeatRequest, JoinGroupRequest, JoinGroupRequestProtocol
    from protocol.errors import NotCoordinatorError
    from protocol.group_log import OFFSETS_TOPIC, partition_for

    offsets_tp = TopicPartition(OFFSETS_TOPIC, 0)
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(1, logs, MetadataCache(), load, config_known=lambda t: True)
    config = BrokerConfig(
        {
            "offsets.topic.num.partitions": 1,
            "group.min.session.timeout.ms": 100,
            "group.max.session.timeout.ms": 60_000,
            "group.initial.rebalance.delay.ms": 0,
            "offsets.retention.minutes": 7 * 24 * 60,
            "group.max.size": 2**31 - 1,
            "offsets.retention.check.interval.ms": 600_000,
            "group.consumer.session.timeout.ms": 45_000,
            "group.consumer.heartbeat.interval.ms": 5_000,
            "group.consumer.max.size": 2**31 - 1,
            "group.consumer.assignors": ["uniform", "range"],
            "group.share.enable": True,
            "group.share.session.timeout.ms": 45_000,
            "group.share.heartbeat.interval.ms": 5_000,
            "group.share.max.size": 200,
            "group.consumer.migration.policy": "bidirectional",
        },
        {},
    )
    coordinator = GroupCoordinator(1, config, MetadataCache(), manager, None)  # type: ignore[arg-type]

    def state(leader: int, epoch: int) -> LeaderAndIsrPartitionState:
        return LeaderAndIsrPartitionState(
            topic_name=OFFSETS_TOPIC,
            partition_index=0,
            controller_epoch=1,
            leader=leader,
            leader_epoch=epoch,
            isr=[1],
            replicas=[1, 2],
        )

    try:
        (ok,) = await manager.become_leader_or_follower([state(1, 1)])
        assert ok.error_code == 0
        for _ in range(100):
            if 0 in coordinator.stores:
                break
            await asyncio.sleep(0.01)
        assert 0 in coordinator.stores
        group = "g"
        assert partition_for(group, 1) == 0
        # a member joins (its group's metadata written: the member id is in the log)
        joined = await coordinator.join_group(
            JoinGroupRequest(
                group_id=group,
                session_timeout_ms=10_000,
                member_id="",
                group_instance_id="host-1",
                protocol_type="consumer",
                protocols=[JoinGroupRequestProtocol(name="range", metadata=b"m")],
            )
        )
        partition = manager.partitions[offsets_tp]
        with pytest.raises(KafkaStorageError):  # the disk fails
            partition.log._go_offline(OSError(errno.EIO, "I/O error"), "appending to")
        leader = LeaderAndIsrLiveLeader(broker_id=2, host_name="127.0.0.1", port=9)
        (moved,) = await manager.become_leader_or_follower([state(2, 2)], [leader])
        assert moved.error_code == KafkaStorageError.code
        assert not partition.is_leader

        assert 0 not in coordinator.stores  # fails: still "coordinating" here
        with pytest.raises(NotCoordinatorError):
            await coordinator.heartbeat(
                HeartbeatRequest(
                    group_id=group,
                    generation_id=joined.generation_id,
                    member_id=joined.member_id,
                    group_instance_id="host-1",
                )
            )
    finally:
        await coordinator.stop()
        await manager.shutdown()
        logs.shutdown()
