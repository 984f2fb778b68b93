"""The leader's ISR writes: compare-and-set on the partition state znode, then a note to
the controller (Kafka's ZooKeeper-mode ``/isr_change_notification``).

The write succeeds only if the znode is still at the version this leader was given (by
LeaderAndIsr, or by its own last write). A conflict means someone else wrote: if the
leader epoch there is still ours (the controller touched only the ISR), adopt its version
and let the caller try again; if it moved on, this broker is no longer the leader and the
change is dropped (the controller's LeaderAndIsr will say so). Either way no broker can
overwrite a newer decision.
"""

from __future__ import annotations

import json

import structlog

from broker.replica.partition import Partition
from broker.zk import NoNode, PartitionState, VersionConflict, ZkBridge, paths

__all__ = ["IsrUpdater"]


class IsrUpdater:
    def __init__(self, zk: ZkBridge, broker_id: int) -> None:
        self._zk = zk
        self._log = structlog.get_logger("headwater.replica").bind(broker_id=broker_id)

    async def write(self, partition: Partition, isr: list[int]) -> bool:
        """Write ``isr`` for ``partition`` (its leader). True if it is now the ISR."""
        state = PartitionState(
            leader=partition.leader_id,
            leader_epoch=partition.leader_epoch,
            isr=isr,
            controller_epoch=partition.controller_epoch,
        )
        path = paths.partition_state(partition.topic, partition.index)
        epoch = partition.leader_epoch
        try:
            stat = await self._zk.set(path, state.to_json(), version=partition.zk_version)
        except VersionConflict:
            if not await self._reconcile(partition, path, epoch):
                partition.isr_fenced_epoch = epoch
            return False
        except NoNode:
            return False  # the topic is being deleted
        if partition.leader_epoch != epoch or not partition.is_leader:
            return False  # a LeaderAndIsr arrived while we wrote: it wins
        partition.isr = list(isr)
        partition.zk_version = stat.version
        self._log.info(
            "partition.isr_changed",
            topic=partition.topic,
            partition=partition.index,
            isr=isr,
            leader_epoch=epoch,
        )
        await self._notify(partition)
        return True

    async def _reconcile(self, partition: Partition, path: str, epoch: int) -> bool:
        """After a version conflict: adopt ZooKeeper's ISR if it is still our epoch's
        (True); False if a newer leader epoch is there (we are deposed, not told yet)."""
        data, stat = await self._zk.get(path)
        current = PartitionState.from_json(path, data)
        if current.leader_epoch == epoch and partition.leader_epoch == epoch:
            partition.zk_version = stat.version
            partition.isr = current.isr
            return True
        if current.leader_epoch > epoch:
            self._log.info(
                "partition.isr_write_fenced",
                topic=partition.topic,
                partition=partition.index,
                our_epoch=epoch,
                their_epoch=current.leader_epoch,
            )
            return False
        return True  # our own epoch moved on meanwhile: the LeaderAndIsr that did it wins

    async def _notify(self, partition: Partition) -> None:
        body = {
            "version": 1,
            "partitions": [{"topic": partition.topic, "partition": partition.index}],
        }
        await self._zk.create(
            paths.ISR_CHANGES + "/isr_change_",
            json.dumps(body).encode(),
            sequence=True,
            makepath=True,
        )
