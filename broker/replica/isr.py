"""The leader's ISR writes: compare-and-set on the partition state znode, then a note to
the controller (Kafka's ZooKeeper-mode ``/isr_change_notification``).

The write succeeds only if the znode is still at the version this leader was given (by
LeaderAndIsr, or by its own last write). A conflict means someone else wrote: if the
leader epoch there is still ours (the controller touched only the ISR), adopt its version
and let the caller try again; if it moved on, this broker is no longer the leader and the
change is dropped (the controller's LeaderAndIsr will say so). Either way no broker can
overwrite a newer decision.

The state writes of one loop pass go together, in ZooKeeper multis (Kafka's leader
batches its AlterPartition requests the same way): a broker's 2,000 followers rejoining
at once made 2,000 writes, each a round trip whose Python on kazoo's thread (0.3 ms)
held the GIL the event loop needed; in multis they cost a fifteenth of that. A multi
refusing one write (another wrote first) costs the others one more round trip, not
their writes.

The notes to the controller are gathered: changes made within ``_NOTE_LINGER_S`` of each
other go in one ``isr_change_`` znode (Kafka's leader gathers them for up to 2.5 s), and
one log line lists them. A broker's 2,000 followers rejoining at once wrote 2,000
notification znodes, each a ZooKeeper round trip on kazoo's thread, whose Python held the
GIL the event loop waited for: every partition on that leader stalled 2-3 s. A note's
write does not hold up the ISR change it reports (the state znode is already written); a
failed one is retried until it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog

from broker.replica.partition import Partition
from broker.zk import (
    GuardedWrite,
    NoNode,
    PartitionState,
    VersionConflict,
    ZkBridge,
    ZkError,
    paths,
)

__all__ = ["IsrUpdater"]

_NOTE_LINGER_S = 0.05
_NOTE_MAX = 1000  # partitions per notification znode (its data well under ZooKeeper's 1 MB)
_NOTE_RETRY_S = 1.0


class IsrUpdater:
    def __init__(self, zk: ZkBridge, broker_id: int) -> None:
        self._zk = zk
        self._log = structlog.get_logger("headwater.replica").bind(broker_id=broker_id)
        self._noted: dict[tuple[str, int], tuple[list[int], int]] = {}
        """Changes not yet told to the controller: partition -> (ISR, leader epoch)."""
        self._noting: asyncio.Task[None] | None = None
        self._closed = False
        self._queued: list[tuple[GuardedWrite, asyncio.Future[int | ZkError]]] = []
        """State writes of this loop pass, sent together at its end."""
        self._sending: set[asyncio.Task[None]] = set()

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
        written = await self._write(GuardedWrite(path, state.to_json(), partition.zk_version))
        if isinstance(written, VersionConflict):
            if not await self._reconcile(partition, path, epoch):
                partition.isr_fenced_epoch = epoch
            return False
        if isinstance(written, NoNode):
            return False  # the topic is being deleted
        if isinstance(written, ZkError):  # ZooKeeper failed: it may or may not be written
            raise ZkError(str(written))  # one each: the batch's writers share the answer
        if partition.leader_epoch != epoch or not partition.is_leader:
            return False  # a LeaderAndIsr arrived while we wrote: it wins
        partition.isr = list(isr)
        partition.zk_version = written
        self._noted[(partition.topic, partition.index)] = (list(isr), epoch)
        if not self._closed and (self._noting is None or self._noting.done()):
            self._noting = asyncio.get_running_loop().create_task(self._notify())
        return True

    def _write(self, write: GuardedWrite) -> asyncio.Future[int | ZkError]:
        """Queue ``write`` with the others of this loop pass: its version, or why not."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[int | ZkError] = loop.create_future()
        self._queued.append((write, written))
        if len(self._queued) == 1:
            loop.call_soon(self._send)
        return written

    def _send(self) -> None:
        queued, self._queued = self._queued, []
        if not queued:  # close() failed them
            return
        task = asyncio.get_running_loop().create_task(self._send_all(queued))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_all(self, queued: list[tuple[GuardedWrite, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._zk.write_many([write for write, _ in queued])
        except BaseException as exc:  # cancelled (shutdown), or a bug: each writer hears
            for _, written in queued:
                if not written.done():
                    written.set_exception(
                        exc if isinstance(exc, Exception) else ZkError("the broker is stopping")
                    )
            raise
        for (_, written), result in zip(queued, results, strict=True):
            if not written.done():  # its writer may have been cancelled
                written.set_result(result)

    async def close(self) -> None:
        """Stop telling the controller (shutdown: its next read of the states covers it).
        The changes not told yet are logged here, as they are in ZooKeeper already."""
        self._closed = True
        queued, self._queued = self._queued, []  # its send was scheduled: not made now
        for _, written in queued:
            if not written.done():
                written.set_exception(ZkError("the broker is stopping"))
        for task in list(self._sending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._noting is not None:
            self._noting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._noting
        if self._noted:
            self._log_changes(list(self._noted.items()), noted=False)
            self._noted.clear()

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

    async def _notify(self) -> None:
        """Tell the controller of the changes gathered, a znode per up to _NOTE_MAX."""
        await asyncio.sleep(_NOTE_LINGER_S)
        while self._noted:
            batch = list(self._noted.items())[:_NOTE_MAX]
            body = {
                "version": 1,
                "partitions": [{"topic": t, "partition": p} for (t, p), _ in batch],
            }
            try:
                await self._zk.create(
                    paths.ISR_CHANGES + "/isr_change_",
                    json.dumps(body).encode(),
                    sequence=True,
                    makepath=True,
                )
            except Exception as exc:  # the controller must hear of them: again, later
                self._log.warning("partition.isr_change_note_failed", error=repr(exc))
                await asyncio.sleep(_NOTE_RETRY_S)
                continue
            for key, change in batch:
                if self._noted.get(key) is change:  # not changed again meanwhile
                    del self._noted[key]
            self._log_changes(batch, noted=True)

    def _log_changes(
        self, batch: list[tuple[tuple[str, int], tuple[list[int], int]]], *, noted: bool
    ) -> None:
        self._log.info(
            "partition.isr_changed",
            partitions=[
                {"topic": t, "partition": p, "isr": isr, "leader_epoch": epoch}
                for (t, p), (isr, epoch) in batch
            ],
            controller_told=noted,
        )
