"""A partition's log moved to another of this broker's log dirs while it is served
(AlterReplicaLogDirs; Kafka's ReplicaAlterLogDirsThread and ``--reassignment-json-file``
plans whose ``log_dirs`` name directories).

The move makes a copy (:meth:`LogManager.make_future`) in the target dir and fills it
from the partition's log, as a follower fills its log from a leader's: whole batches as
they are, so offsets, leader epochs, producer state and aborted transactions come out
the same. The log goes on taking appends meanwhile. A truncation of the log (a new
leader) truncates the copy before it happens (a truncation listener); a log start moved
up (retention, DeleteRecords) moves the copy's up. Reads of the log's files happen in a
worker thread, and what they bring is appended only if no truncation happened while
they ran (a segment cut off closes at once; its number could be another file's by then)
and passes the append's CRC check.

Once the copy is one read behind, the last read, the appends and the swap happen in one
pass of the event loop, with no await between: nothing can be appended to the old log
after its last batch was copied. The swap (:meth:`LogManager.swap_future`) renames the
old log's directory ``...-delete`` and makes the copy the partition's log; the old one
is closed and removed after. A stop at any point leaves either the old log with a copy
that the next start resumes, or (between the rename and the copy's unmarking) the copy
alone, which the next start takes as the log.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from broker.log import Log
from broker.log.log import FetchData
from broker.log.manager import FUTURE, LogManager, TopicPartition
from broker.log.swap import fsync_dir
from broker.metrics import Counter
from broker.replica.partition import Partition
from broker.replica.throttle import ReplicationQuota
from protocol.errors import (
    ApiError,
    HeadwaterError,
    KafkaStorageError,
    LogDirNotFoundError,
    ReplicaNotAvailableError,
)

__all__ = ["LogDirMoves"]

_CHUNK_BYTES = 1 << 20
"""What one read in a worker thread brings (Kafka's replica.fetch.max.bytes)."""
_TAIL_BYTES = 256 << 10
"""A last read this small is made on the loop, so the swap follows it with no await
(the tail of a log being written is in the page cache)."""
_RETRY_S = 0.5
_THROTTLED_S = 0.05  # a copy over its rate looks again after this


class LogDirMoves:
    """The moves under way on one broker, one copy task per partition."""

    def __init__(
        self,
        logs: LogManager,
        partitions: Mapping[TopicPartition, Partition],
        *,
        broker_id: int,
        quota: ReplicationQuota | None = None,
        chunk_bytes: int = _CHUNK_BYTES,
        tail_bytes: int = _TAIL_BYTES,
        threads: int = 1,
    ) -> None:
        """``quota``: replica.alter.log.dirs.io.max.bytes.per.second, over every copy;
        ``threads``: num.replica.alter.log.dirs.threads, the reads in worker threads at
        once, over every copy (each copy steps in turn: all of them go on)."""
        self._logs = logs
        self._quota = quota
        self._partitions = partitions
        self._chunk = chunk_bytes
        self._tail = min(tail_bytes, chunk_bytes)
        self._copies: dict[TopicPartition, asyncio.Task[None]] = {}
        self._finishing: set[asyncio.Task[None]] = set()  # old logs being removed
        self._changing: dict[TopicPartition, asyncio.Lock] = {}
        self._reads = asyncio.Semaphore(threads)
        self.steps_running = 0  # (for tests: never over ``threads``)
        self.moved = Counter(
            "headwater_log_dir_moves_total",
            "Moves of logs between this broker's data directories done (AlterReplicaLogDirs).",
        )
        self._log = structlog.get_logger("headwater.log_moves").bind(broker_id=broker_id)
        self._listening = False  # to truncations: from the first copy on

    # --- asked ----------------------------------------------------------------------------

    async def move(
        self, tp: TopicPartition, path: str, offline: set[Path] | None = None
    ) -> ApiError | None:
        """Have ``tp``'s log moved to the log dir ``path``; the error to answer, if any.
        Asked for the dir it is in, a move under way is called off; asked for another
        dir than one under way, that one is called off and this one begun; asked for a
        partition not here yet, it will be made in ``path`` (REPLICA_NOT_AVAILABLE, as
        Kafka answers). ``offline``: :meth:`LogManager.offline_dirs`, if the caller has
        it (a pass over every log: once per request, not per partition)."""
        directory = self._logs.dir_of(path)
        if directory is None:
            return LogDirNotFoundError(
                f"{path} is not one of this broker's log.dirs "
                f"({', '.join(str(d) for d in self._logs.dirs)})"
            )
        offline = self._logs.offline_dirs() if offline is None else offline
        if offline:  # (Kafka's too: a copy is never made while a dir is failed)
            return KafkaStorageError(
                f"log dir {', '.join(sorted(map(str, offline)))} is offline on this broker: "
                "no move is begun until it is back"
            )
        async with self._changing.setdefault(tp, asyncio.Lock()):  # one change at a time
            return await self._move(tp, directory)

    async def _move(self, tp: TopicPartition, directory: Path) -> ApiError | None:
        log = self._logs.logs.get(tp)
        if log is None or tp not in self._partitions:
            if log is None:
                self._logs.preferred_dirs[tp] = directory
            return ReplicaNotAvailableError(
                f"{tp.topic}-{tp.partition} is not on this broker yet; it will be made "
                f"in {directory} when it is"
            )
        if log.offline:
            return KafkaStorageError(f"{tp.topic}-{tp.partition}'s log is offline here")
        future = self._logs.futures.get(tp)
        if future is not None:
            if future.dir.parent == directory:
                self.resume(tp)  # under way already (its copying restarted if it stopped)
                return None
            await self.cancel(tp, "another log dir was asked for")
        if log.dir.parent == directory:
            return None
        return await self._begin(tp, directory, log)

    async def _begin(self, tp: TopicPartition, directory: Path, log: Log) -> ApiError | None:
        try:
            future = await asyncio.to_thread(self._make, tp, directory, log)
        except (OSError, HeadwaterError) as exc:
            return KafkaStorageError(
                f"a copy of {tp.topic}-{tp.partition} cannot be made in {directory}: {exc}"
            )
        if not self._logs.add_future(tp, future, log):  # deleted (or moved) meanwhile
            await self._logs.abandon_future(tp, future)
            return ReplicaNotAvailableError(
                f"{tp.topic}-{tp.partition} left this broker while its copy was being made"
            )
        self._log.info(
            "log_move.begun",
            topic=tp.topic,
            partition=tp.partition,
            source=str(log.dir.parent),
            target=str(directory),
        )
        self.resume(tp)
        return None

    def _make(self, tp: TopicPartition, directory: Path, log: Log) -> Log:
        stale = log.dir / FUTURE  # the last move's swap could not unmark its copy
        if stale.exists():
            stale.unlink()
            fsync_dir(log.dir)
        future = self._logs.make_future(tp, directory, log.config)
        if log.topic_id is not None:
            future.record_topic_id(log.topic_id)
        return future

    def resume(self, tp: TopicPartition) -> None:
        """Copy ``tp``'s log into its future one, if it has one and no copy runs (a move
        begun, or one found at start once the partition is hosted)."""
        future = self._logs.futures.get(tp)
        running = self._copies.get(tp)
        if future is None or (running is not None and not running.done()):
            return
        if not self._listening:
            self._logs.on_truncation(self._on_truncation)
            self._listening = True
        task = asyncio.get_running_loop().create_task(self._copy(tp, future))
        self._copies[tp] = task
        task.add_done_callback(lambda done: self._copy_ended(tp, done))

    def _copy_ended(self, tp: TopicPartition, task: asyncio.Task[None]) -> None:
        if self._copies.get(tp) is task:
            del self._copies[tp]
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error(
                "log_move.failed", topic=tp.topic, partition=tp.partition, error=repr(exc)
            )

    async def cancel(self, tp: TopicPartition, why: str) -> None:
        """Call off ``tp``'s move: its copy stops and goes."""
        task = self._copies.pop(tp, None)
        if task is not None:
            task.cancel()
        future = self._logs.futures.get(tp)
        if future is not None:
            self._log.info("log_move.cancelled", topic=tp.topic, partition=tp.partition, why=why)
            await self._logs.abandon_future(tp, future)

    async def stop(self) -> None:
        """Stop copying (a copy stays, and the next start goes on with it); a replaced
        log waiting out ``file.delete.delay.ms`` is closed now (its directory goes at
        the next start)."""
        tasks = [*self._copies.values(), *self._finishing]
        for task in tasks:  # (a swap's last steps: its old log closed at once)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def max_lag(self) -> int:
        """The most any copy under way is behind its log (offsets), 0 with none."""
        return max((self.lag(tp) for tp in list(self._logs.futures)), default=0)

    def lag(self, tp: TopicPartition) -> int:
        """How far the copy's end is behind the log's (DescribeLogDirs' offset lag)."""
        future, log = self._logs.futures.get(tp), self._logs.logs.get(tp)
        if future is None or log is None:
            return 0
        return max(log.log_end_offset - future.log_end_offset, 0)

    # --- the copy -------------------------------------------------------------------------

    async def _copy(self, tp: TopicPartition, future: Log) -> None:
        while True:
            # a step at a time per slot of num.replica.alter.log.dirs.threads (its read
            # runs in a worker thread); what the step works on is looked at once the slot
            # is had, as the wait may be long
            async with self._reads:
                self.steps_running += 1
                try:
                    done = await self._step_if_still(tp, future)
                except (OSError, HeadwaterError) as exc:  # a segment gone meanwhile
                    self._log.info(
                        "log_move.retry", topic=tp.topic, partition=tp.partition, error=str(exc)
                    )
                    done = False
                    retry = True
                else:
                    retry = False
                finally:
                    self.steps_running -= 1
            if done:
                return
            if retry:
                await asyncio.sleep(_RETRY_S)

    async def _step_if_still(self, tp: TopicPartition, future: Log) -> bool:
        """A step of ``tp``'s copy into ``future``; True once there is nothing more to do
        (swapped, called off, the partition gone, or a log failed)."""
        if self._logs.futures.get(tp) is not future:
            return True
        log = self._logs.logs.get(tp)
        if log is None:  # its partition deleted: the deletion drops the copy
            return True
        if log.offline or future.offline:
            why = "its log" if log.offline else "the copy"
            self._log.error(
                "log_move.abandoned", topic=tp.topic, partition=tp.partition, why=f"{why} failed"
            )
            await self._logs.abandon_future(tp, future)
            return True
        return await self._step(tp, log, future)

    async def _step(self, tp: TopicPartition, log: Log, future: Log) -> bool:
        """One read of the log appended to the copy, or the swap; True once swapped."""
        _follow_start(log, future)
        end = log.log_end_offset
        if future.log_end_offset > end:  # (the truncation listener keeps this from being)
            future.truncate_to(end)
        at = future.log_end_offset
        # (a copy restarted at the base of the batch holding the log start reads from
        # that batch; a read is no larger than the copy may append at once)
        limit = min(self._chunk, future.config.segment_bytes)
        data = None if at == end else log.read(max(at, log.log_start_offset), limit, max_offset=end)
        if data is None:
            if at != end:  # nothing left below the end (a compacted tail, a new start)
                future.roll(end)
            self._swap(tp, log, future)
            return True
        to_end = data.segment is log.active and data.position + data.size == log.active.size
        if to_end and data.size <= self._tail:
            future.append_as_follower(data.read())  # the last: on the loop, then the swap
            return self._swap_if_equal(tp, log, future)
        quota = self._quota
        if quota is not None and quota.exceeded():
            await asyncio.sleep(_THROTTLED_S)
            return False
        truncations = log.truncations
        payload = await asyncio.to_thread(_detached(data))
        if quota is not None:
            quota.record(len(payload))
        if (
            self._logs.futures.get(tp) is future
            and self._logs.logs.get(tp) is log
            and log.truncations == truncations
            and future.log_end_offset == at
        ):
            future.append_as_follower(payload)  # (else what was read may be gone: again)
        return False

    def _swap_if_equal(self, tp: TopicPartition, log: Log, future: Log) -> bool:
        if future.log_end_offset != log.log_end_offset:
            return False
        _follow_start(log, future)
        self._swap(tp, log, future)
        return True

    def _swap(self, tp: TopicPartition, log: Log, future: Log) -> None:
        """The copy, equal to the log, becomes the partition's log (no await here)."""
        future.config = log.config
        future.epochs.replace_with(log.epochs.entries)
        old, gone = self._logs.swap_future(tp)
        partition = self._partitions.get(tp)
        if partition is not None:
            partition.log = future
        self.moved.inc()
        self._log.info(
            "log_move.done",
            topic=tp.topic,
            partition=tp.partition,
            source=str(gone.parent),
            target=str(future.dir.parent),
            log_end_offset=future.log_end_offset,
        )
        task = asyncio.get_running_loop().create_task(self._logs.finish_swap(future, old, gone))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    def _on_truncation(self, tp: TopicPartition, log: Log, offset: int) -> None:
        """The log is about to be cut to ``offset``: the copy first, as far."""
        future = self._logs.futures.get(tp)
        if future is not None and self._logs.logs.get(tp) is log and offset < future.log_end_offset:
            future.truncate_to(offset)


def _follow_start(log: Log, future: Log) -> None:
    """The copy's log start follows the log's (retention, DeleteRecords). One past the
    copy's end restarts the copy at the batch holding it (a log start may be inside a
    batch, which is copied whole, as a follower's fetcher does)."""
    start = log.log_start_offset
    if start > future.log_end_offset:
        holding = log.read(start, 1, max_offset=log.log_end_offset)
        base = start if holding is None else holding.first_offset
        if future.log_end_offset != base:  # (once: then that batch is copied)
            future.truncate_fully_and_start_at(base)
    if start > future.log_start_offset:
        future.advance_log_start_offset(start)


def _detached(data: FetchData) -> Callable[[], bytes]:
    """A read of ``data`` for a worker thread, through a duplicate of its segment's
    descriptor taken now: the segment may be closed on the loop meanwhile (retention),
    and its number given to another file."""
    fd = os.dup(data.fd)  # (-1 once closed: OSError, and the copy tries again)

    def read() -> bytes:
        try:
            return os.pread(fd, data.size, data.position)
        finally:
            os.close(fd)

    return read
