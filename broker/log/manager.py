"""The log directories of one broker (``log.dirs``) and every partition log in them.

Per directory, beside the ``<topic>-<partition>/`` folders (Kafka's layout)::

    meta.properties                    version, broker.id, cluster.id: whose data this is
    recovery-point-offset-checkpoint   per partition: offsets known fsynced
    log-start-offset-checkpoint        per partition: first readable offset
    replication-offset-checkpoint      per partition: high watermark (written by replication)
    .clean_shutdown                    written by a clean stop, removed on start

Checkpoints are Kafka's text format (``0`` / count / ``topic partition offset`` lines),
written atomically (temp file, fsync, rename, fsync of the directory). A checkpoint that
cannot be read is ignored with a warning: recovery then re-checks every segment, which
is slow but loses nothing.

A broker must never serve another cluster's (or another broker's) data: a mismatch in
``meta.properties`` stops the start with one line saying which directory and what to do.

Concurrency: the map of logs and the logs themselves change on the event loop (and, for
now, ``get_or_create_log`` in a worker thread: its caller keeps the loop free while a
directory is created). The checkpoint files are written off the loop, by one writer at a
time: every writer takes ``_checkpoint_lock`` (a threading lock: the writers are worker
threads), and a snapshot of the offsets older than the one last written is dropped, so
the files never go back to a state older than one already on disk (say, with a deleted
partition still listed). :meth:`LogManager.checkpoint_async` takes its snapshot *and
renders the files' text* on the loop, and a worker thread only writes and fsyncs;
:meth:`LogManager.checkpoint` does both where it is called (startup, shutdown).

Why the text is made on the loop: Python work in a worker thread holds the GIL, and the
loop then waits up to the switch interval (5 ms) for it after each of its many socket
calls. Rendering 2,000 partitions' checkpoints there (on each topic deletion, and the
high watermarks every 5 s) held every request on the broker up to 50 ms; on the loop it is
one pass of about a millisecond.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import structlog

from broker.log.config import LogConfig
from broker.log.log import Clock, Log, remove_log_dir, wall_clock_ms
from broker.log.swap import fsync_dir
from protocol.errors import HeadwaterError, InconsistentClusterIdError, KafkaStorageError
from protocol.topic_partition import TopicPartition

__all__ = ["InconsistentBrokerIdError", "LogManager", "TopicPartition"]


TruncationListener = Callable[[TopicPartition, Log, int], None]


class _Offsets(NamedTuple):
    """What one checkpoint writes: per directory, recovery points and log start offsets,
    as the files' text."""

    sequence: int  # the order snapshots were taken in; an older one is never written
    files: dict[Path, str]


META = "meta.properties"
RECOVERY_POINTS = "recovery-point-offset-checkpoint"
LOG_START_OFFSETS = "log-start-offset-checkpoint"
HIGH_WATERMARKS = "replication-offset-checkpoint"
HIGH_WATERMARKS = "replication-offset-checkpoint"
CLEAN_SHUTDOWN = ".clean_shutdown"
FUTURE = ".future"
"""In a partition's directory: a copy of its log being made there (AlterReplicaLogDirs),
not the partition's log until the move swaps it in (Kafka names such a directory
``<topic>-<partition>.<id>-future``: here the name is the final one, so the swap renames
only the log it replaces, and a log's open files never change paths)."""
_NEW_SUFFIX = "-new"  # a copy's directory being made, renamed into place with its marker
DELETE_SUFFIX = "-delete"
"""A log a move replaced, renamed ``<topic>-<partition>.<id>-delete`` (Kafka's name):
removed once closed, or at the next start."""


class InconsistentBrokerIdError(HeadwaterError):
    """A log directory belongs to another broker id."""


class _Creating:
    """A partition whose log is being created, and how many threads ask for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class DuplicateLogDirError(HeadwaterError):
    """One partition has a directory in two log dirs: which holds its data is unknown."""


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_partition_dir(name: str) -> TopicPartition | None:
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        return None
    return TopicPartition(topic, int(partition))


class LogManager:
    """Opens, creates, checkpoints and closes the partition logs of ``log.dirs``."""

    def __init__(
        self,
        log_dirs: Sequence[Path | str],
        *,
        broker_id: int,
        cluster_id: str,
        default_config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
    ) -> None:
        if not log_dirs:
            raise ValueError("log.dirs is empty: name at least one directory")
        self.dirs = [Path(d) for d in log_dirs]
        self.broker_id = broker_id
        self.cluster_id = cluster_id
        self.default_config = default_config or LogConfig()
        self._clock = clock
        self.logs: dict[TopicPartition, Log] = {}
        self._per_dir: collections.Counter[Path] = collections.Counter()  # logs in each
        self._per_topic: dict[str, dict[int, Log]] = {}
        self._indexing = threading.Lock()  # logs are added in worker threads, removed on the loop
        self._creating: dict[TopicPartition, _Creating] = {}
        self._undeleted: dict[TopicPartition, Path] = {}
        """Directories of deleted logs whose removal failed: tried again when asked again."""
        self._removing: dict[TopicPartition, asyncio.Future[bool]] = {}
        """Deletions under way (event loop), to whether the directory went."""
        self.high_watermarks: dict[TopicPartition, int] = {}  # as checkpointed at start
        self.futures: dict[TopicPartition, Log] = {}
        """Copies being made in another log dir (AlterReplicaLogDirs), by partition."""
        self._undeleted_copies: dict[TopicPartition, Path] = {}
        """Copies whose removal failed: no log of their partition is made until gone."""
        self.preferred_dirs: dict[TopicPartition, Path] = {}
        """Where a partition not hosted yet is to be created (AlterReplicaLogDirs before
        the replica exists, as Kafka's maybeUpdatePreferredLogDir)."""
        self._truncation_listeners: list[TruncationListener] = []
        self._offline_listeners: list[Callable[[TopicPartition], None]] = []
        self._checkpoint_lock = threading.Lock()  # one writer of the checkpoint files
        self._snapshots = itertools.count()  # next() is atomic: threads may take snapshots
        self._written = -1  # the sequence of the snapshot last written (under the lock)
        self._hw_snapshots = itertools.count()
        self._hw_written = -1  # the same, for the high watermarks
        self._log = structlog.get_logger("headwater.log_manager").bind(broker_id=broker_id)

    # --- start / stop -------------------------------------------------------------------

    def startup(self, configs: dict[TopicPartition, LogConfig] | None = None) -> None:
        """Check ownership of every directory, then open every log in it."""
        configs = configs or {}
        for directory in self.dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._claim(directory)
        futures: list[tuple[TopicPartition, Path, bool]] = []
        swapping: set[TopicPartition] = set()  # a replaced log's directory was found
        all_starts: dict[TopicPartition, int] = {}
        for directory in self.dirs:
            marker = directory / CLEAN_SHUTDOWN
            clean = marker.exists()
            recovery = read_checkpoint(directory / RECOVERY_POINTS)
            starts = read_checkpoint(directory / LOG_START_OFFSETS)
            for known, start in starts.items():
                all_starts[known] = max(start, all_starts.get(known, 0))
            self.high_watermarks.update(read_checkpoint(directory / HIGH_WATERMARKS))
            for path in sorted(directory.iterdir()):
                if path.is_dir() and path.name.endswith((DELETE_SUFFIX, _NEW_SUFFIX)):
                    replaced = parse_partition_dir(path.name.rpartition(".")[0])
                    if path.name.endswith(DELETE_SUFFIX) and replaced is not None:
                        swapping.add(replaced)
                    self._remove_leftover(path)  # a log a move replaced, a copy half made
                    continue
                tp = parse_partition_dir(path.name) if path.is_dir() else None
                if tp is None:
                    continue
                if (path / FUTURE).exists():
                    futures.append((tp, path, clean))  # once every live log is known
                    continue
                if tp in self.logs:  # Kafka refuses to start too: either may be stale
                    raise DuplicateLogDirError(
                        f"partition {tp.topic}-{tp.partition} has a directory in both "
                        f"{self.logs[tp].dir.parent} and {directory}; stop here and delete "
                        f"the one that does not hold its data (dump-log shows what each "
                        f"holds), then start the broker again"
                    )
                self._added(
                    tp,
                    Log.open(
                        path,
                        configs.get(tp, self.default_config),
                        recovery_point=recovery.get(tp, 0),
                        log_start_offset=starts.get(tp, 0),
                        clean_shutdown=clean,
                        clock=self._clock,
                    ),
                )
            # From here on a crash must be seen as one: the marker goes until a clean stop.
            marker.unlink(missing_ok=True)
            fsync_dir(directory)
        self._reopen_futures(futures, swapping, all_starts, configs)
        self.checkpoint()
        self._log.info("log_manager.started", dirs=[str(d) for d in self.dirs], logs=len(self.logs))

    def _remove_leftover(self, path: Path) -> None:
        """A directory no log is read from: removed; one that cannot be is said, and the
        start goes on (its name is no partition's)."""
        try:
            remove_log_dir(path)
        except OSError as exc:
            self._log.error(
                "log.delete_failed", log=path.name, error=str(exc), fix=f"remove {path} by hand"
            )

    def _reopen_futures(
        self,
        futures: list[tuple[TopicPartition, Path, bool]],
        swapping: set[TopicPartition],
        starts: dict[TopicPartition, int],
        configs: dict[TopicPartition, LogConfig],
    ) -> None:
        """The moves' copies found at start, once every log is known."""
        for tp, path, clean in futures:
            config = configs.get(tp, self.default_config)
            if tp in self.logs:
                self._resume_future(tp, path, clean, config)
            elif tp in swapping:
                self._promote_future(tp, path, clean, config, starts.get(tp, 0))
            else:  # no log, no swap: its partition was deleted while it was made
                self._log.warning("log_manager.stray_copy_removed", dir=str(path))
                self._remove_leftover(path)

    def _resume_future(
        self, tp: TopicPartition, path: Path, clean: bool, config: LogConfig
    ) -> None:
        """A move's copy found at start beside its log: the copying goes on (the replica
        manager resumes it once the partition is hosted). One that cannot open is
        dropped: the move starts over when asked again."""
        if tp in self.futures:  # two copies (a move to a third dir, cut short): keep one
            self._remove_leftover(path)
            return
        try:
            log = Log.open(path, config, clean_shutdown=clean, clock=self._clock)
        except HeadwaterError as exc:
            self._log.error("log_manager.move_dropped", dir=str(path), error=str(exc))
            self._remove_leftover(path)
            return
        self.futures[tp] = log
        self._log.info("log_manager.move_resumed", log=log.name, dir=str(path.parent))

    def _promote_future(
        self, tp: TopicPartition, path: Path, clean: bool, config: LogConfig, start: int
    ) -> None:
        """A copy found at start with its log renamed away (``-delete``): the stop came
        in the swap, after the copy had everything. It is the log (its log start the
        highest any checkpoint had: the old log's directory had it)."""
        if tp in self.logs:  # two such copies cannot be: keep the one met first
            self._remove_leftover(path)
            return
        log = Log.open(
            path, config, log_start_offset=start, clean_shutdown=clean, clock=self._clock
        )
        (path / FUTURE).unlink()
        fsync_dir(path)
        self._added(tp, log)
        self._log.info("log_manager.move_finished_at_start", log=log.name, dir=str(path.parent))

    # --- moves between log dirs (AlterReplicaLogDirs) -----------------------------------

    def dir_of(self, path: str) -> Path | None:
        """The log dir ``path`` names (as configured, or the same directory), or None."""
        for directory in self.dirs:
            if path == str(directory) or os.path.realpath(path) == os.path.realpath(directory):
                return directory
        return None

    def offline_dirs(self) -> set[Path]:
        """The log dirs where an I/O error took a log (or a move's copy) offline."""
        return {
            log.dir.parent for log in [*self.logs.values(), *self.futures.values()] if log.offline
        }

    def make_future(self, tp: TopicPartition, directory: Path, config: LogConfig) -> Log:
        """A new, empty copy of ``tp``'s log in ``directory`` (blocking: a worker thread),
        marked as a copy (:data:`FUTURE`) before its first segment is made. Not yet
        one of :attr:`futures`: the caller adds it on the loop, if its log is still
        there (:meth:`add_future`), or drops it."""
        path = directory / partition_dir_name(*tp)
        if path.exists():  # a copy dropped before its removal finished
            remove_log_dir(path)
        # made under another name, with its marker, then renamed into place: a stop
        # meanwhile never leaves a second unmarked directory of the partition
        new = path.with_name(f"{path.name}.{uuid.uuid4().hex}{_NEW_SUFFIX}")
        new.mkdir()
        write_atomically(new / FUTURE, "")
        os.rename(new, path)
        fsync_dir(directory)
        return Log.open(path, config, clean_shutdown=True, clock=self._clock)

    def add_future(self, tp: TopicPartition, future: Log, of: Log) -> bool:
        """Take ``future`` as the copy of ``tp``'s log, if ``of`` is still its log and it
        has no copy (on the loop); False if not (the caller drops it)."""
        if self.logs.get(tp) is not of or tp in self.futures:
            return False
        self.futures[tp] = future
        return True

    async def abandon_future(self, tp: TopicPartition, future: Log) -> None:
        """Drop a copy (a move cancelled, its partition deleted, its dir failed)."""
        if self.futures.get(tp) is future:
            del self.futures[tp]
        await future.flushes_done()
        future.close_for_delete()
        gone = _doomed_name(future.dir)

        def remove() -> None:
            os.rename(future.dir, gone)  # first: a stop mid-removal leaves no marked copy
            fsync_dir(gone.parent)
            remove_log_dir(gone)

        try:
            await asyncio.to_thread(remove)
        except OSError as exc:
            if future.dir.exists():  # not renamed: a new log of the name must not open it
                self._undeleted_copies[tp] = future.dir
            self._log.error(
                "log.delete_failed",
                log=future.name,
                error=str(exc),
                fix=f"remove {future.dir} by hand before this broker starts again",
            )

    def swap_future(self, tp: TopicPartition) -> tuple[Log, Path]:
        """The copy becomes ``tp``'s log, here and now (on the loop, with no await: the
        caller made it equal to the log first). The log it replaces is renamed
        ``...-delete`` and returned with that path, for :meth:`finish_swap`. A stop
        before that ends promotes the copy at the next start (its marker is still
        there, and no live log beside it)."""
        current = self.logs[tp]
        gone = _doomed_name(current.dir)
        os.rename(current.dir, gone)  # first: if it fails, nothing has changed
        future = self.futures.pop(tp)
        self._removed(tp)
        self._added(tp, future)
        return current, gone

    async def finish_swap(self, future: Log, old: Log, gone: Path) -> None:
        """After :meth:`swap_future`: the copy fsynced and checkpointed (with its log
        start) before its marker goes, so the old log's removal never loses what it
        had made durable; the old log closed only after ``file.delete.delay.ms`` (a
        fetch answer being sent reads its files, as a deleted segment's), then removed.
        Steps that fail on I/O leave its directory for the next start to finish the swap
        (the copy may not be durable yet); the old log is closed all the same (it is no
        partition's log any more: its descriptors would be held until the process ends)."""
        settled = True
        try:
            await future.flush_async()
            await self.checkpoint_async()

            def settle() -> None:
                fsync_dir(gone.parent)  # the rename, before the marker goes
                (future.dir / FUTURE).unlink(missing_ok=True)
                fsync_dir(future.dir)

            await asyncio.to_thread(settle)
        except (OSError, HeadwaterError) as exc:  # (the next start finishes it)
            self._log.error("log_manager.swap_unfinished", log=future.name, error=str(exc))
            settled = False
        try:
            await asyncio.sleep(old.config.file_delete_delay_ms / 1000)
        finally:  # (a stop meanwhile: closed now, its directory removed at the next start)
            await old.flushes_done()
            old.close_for_delete()
        if not settled:
            return
        try:
            await asyncio.to_thread(remove_log_dir, gone)
        except OSError as exc:
            self._log.error(
                "log.delete_failed",
                log=gone.name,
                error=str(exc),
                fix=f"remove {gone} by hand (the next start removes it too)",
            )

    async def flushes_done(self) -> None:
        """Until no log's fsync runs in a worker thread (before :meth:`shutdown` closes
        their files: a cancelled flush task leaves its thread running)."""
        for log in [*self.logs.values(), *self.futures.values()]:
            await log.flushes_done()

    def shutdown(self) -> None:
        """A clean stop: flush and close every log, checkpoint, leave the marker (await
        :meth:`flushes_done` first on the event loop). Not in a directory where a log went
        offline (as Kafka, which writes it only in the live directories): a write that
        failed may have left that log's files out of step with each other, and only the
        checks of a load after an unclean stop put them right."""
        offline = {
            log.dir.parent for log in [*self.logs.values(), *self.futures.values()] if log.offline
        }
        for log in [*self.logs.values(), *self.futures.values()]:
            log.close()
        self.checkpoint()
        for directory in self.dirs:
            if directory in offline:
                self._log.warning("log_manager.no_clean_shutdown_marker", dir=str(directory))
                continue
            (directory / CLEAN_SHUTDOWN).touch()
            fsync_dir(directory)
        self.logs.clear()
        self.futures.clear()
        self._per_dir.clear()
        self._per_topic.clear()

    def _claim(self, directory: Path) -> None:
        meta_path = directory / META
        meta = read_properties(meta_path) if meta_path.exists() else None
        if meta is None:
            write_atomically(
                meta_path,
                f"#Headwater broker metadata\nversion=0\nbroker.id={self.broker_id}\n"
                f"cluster.id={self.cluster_id}\n",
            )
            return
        if meta.get("cluster.id") != self.cluster_id:
            raise InconsistentClusterIdError(
                f"log dir {directory} holds data of cluster {meta.get('cluster.id')!r}, but "
                f"this broker joins cluster {self.cluster_id!r}; point log.dirs at this "
                f"cluster's directory (or an empty one)"
            )
        if meta.get("broker.id") != str(self.broker_id):
            raise InconsistentBrokerIdError(
                f"log dir {directory} belongs to broker {meta.get('broker.id')}, but this is "
                f"broker {self.broker_id}; set broker.id={meta.get('broker.id')} or use "
                f"another log dir"
            )

    # --- logs ---------------------------------------------------------------------------

    def get_log(self, topic: str, partition: int) -> Log | None:
        return self.logs.get(TopicPartition(topic, partition))

    def get_or_create_log(self, topic: str, partition: int, config: LogConfig | None = None) -> Log:
        tp = TopicPartition(topic, partition)
        log = self.logs.get(tp)
        if log is not None:
            return log
        with self._indexing:
            creating = self._creating.get(tp)
            if creating is None:
                creating = self._creating[tp] = _Creating()
            creating.users += 1
        try:
            with creating.lock:  # one partition's creations one at a time: one dir, one Log
                return self._create_log(tp, config)
        finally:
            with self._indexing:
                creating.users -= 1
                if not creating.users:
                    del self._creating[tp]

    def _create_log(self, tp: TopicPartition, config: LogConfig | None) -> Log:
        topic, partition = tp
        log = self.logs.get(tp)
        if log is None:
            if tp in self._undeleted_copies:
                raise KafkaStorageError(
                    f"{topic}-{partition}: a copy of its deleted log could not be removed "
                    f"from {self._undeleted_copies[tp]}; remove it, then create it again"
                )
            if tp in self._removing or tp in self._undeleted:
                # a new log would take the old one's path: its removal (under way, or to be
                # retried) would remove the new log, or the new one would open its records
                raise KafkaStorageError(
                    f"{topic}-{partition}: the directory of its deleted log is "
                    f"{'still being removed' if tp in self._removing else 'still there'} "
                    f"on this broker; it cannot be created again until it is gone"
                )
            directory = self._reserve_dir(tp)
            path = directory / partition_dir_name(topic, partition)
            existed = path.exists()
            try:
                log = Log.open(
                    path,
                    config or self.default_config,
                    clean_shutdown=True,  # a new, empty log has nothing to recover
                    clock=self._clock,
                )
            except BaseException:
                with self._indexing:
                    self._per_dir[directory] -= 1
                if not existed:  # a retry may pick another dir: no copy left here
                    shutil.rmtree(path, ignore_errors=True)
                raise
            self._added(tp, log, counted=True)
        return log

    def logs_of(self, topic: str) -> list[Log]:
        """The topic's logs here (an index: no pass over every log)."""
        return list(self._per_topic.get(topic, {}).values())

    def _added(self, tp: TopicPartition, log: Log, *, counted: bool = False) -> None:
        with self._indexing:
            self.logs[tp] = self._watched(tp, log)
            if not counted:
                self._per_dir[log.dir.parent] += 1
            self._per_topic.setdefault(tp.topic, {})[tp.partition] = log

    def _removed(self, tp: TopicPartition) -> Log | None:
        with self._indexing:
            log = self.logs.pop(tp, None)
            if log is not None:
                self._per_dir[log.dir.parent] -= 1
                held = self._per_topic[tp.topic]
                del held[tp.partition]
                if not held:
                    del self._per_topic[tp.topic]
        return log

    def delete_log(self, topic: str, partition: int) -> None:
        """Remove a log and its directory, and checkpoint without it, here and now
        (blocking: tests and tools; the broker uses :meth:`delete_logs`)."""
        log = self._removed(TopicPartition(topic, partition))
        if log is not None:
            log.delete()
            self.checkpoint()

    async def delete_logs(self, tps: Sequence[TopicPartition]) -> list[TopicPartition]:
        """Remove logs and their directories (in a worker thread), then checkpoint
        without them (a partition of the same name made later must not inherit them).
        Returns those whose directory could not be removed (each logged with what to do);
        asked again (the controller resends its StopReplica), they are tried again. A
        partition whose deletion is already under way (a resend meanwhile) waits for that
        one and answers as it does: answered "done" at once, the controller could finish
        the deletion, and a topic of the same name made again would have its new log's
        directory removed by the first."""
        copies = [(tp, f) for tp in tps if (f := self.futures.pop(tp, None)) is not None]
        stale = [(tp, p) for tp in tps if (p := self._undeleted_copies.get(tp)) is not None]
        for tp in tps:
            self.preferred_dirs.pop(tp, None)
        under_way = [(tp, done) for tp in tps if (done := self._removing.get(tp)) is not None]
        busy = {tp for tp, _ in under_way}
        gone = [
            (tp, log) for tp in tps if tp not in busy and (log := self._removed(tp)) is not None
        ]
        taken = busy | {tp for tp, _ in gone}
        again = [
            (tp, path)
            for tp in tps
            if tp not in taken and (path := self._undeleted.get(tp)) is not None
        ]
        dirs = again + [(tp, log.dir) for tp, log in gone]
        loop = asyncio.get_running_loop()
        for tp, _ in dirs:
            self._removing[tp] = loop.create_future()
        failed: list[tuple[TopicPartition, Path, OSError]] = []
        failed_copies: set[TopicPartition] = set()
        removed: set[TopicPartition] = set()  # stays empty if cancelled part way
        try:
            # a move's copy first: a stop meanwhile leaves no copy alone, taken for the log
            failed_copies = await self._drop_copies(copies, stale)
            if dirs:
                for _, log in gone:
                    await log.flushes_done()  # an fsync in a worker thread is using its files
                    log.close_for_delete()
                failed = await asyncio.to_thread(_remove_dirs, dirs)
                for tp, _ in dirs:
                    self._undeleted.pop(tp, None)
                for tp, path, _ in failed:
                    self._undeleted[tp] = path
                removed = {tp for tp, _ in dirs} - {tp for tp, _, _ in failed}
                if gone:
                    await self.checkpoint_async()
        finally:
            for tp, path in dirs:
                if tp not in removed and tp not in self._undeleted:
                    self._undeleted[tp] = path  # cancelled before it went: try again later
                self._removing.pop(tp).set_result(tp in removed)
        for _, path, exc in failed:
            self._log.error(
                "log.delete_failed",
                log=path.name,
                error=str(exc),
                fix=f"remove {path} by hand before this broker starts again",
            )
        others = [tp for tp, done in under_way if not await done]
        return (
            [tp for tp, _, _ in failed]
            + others
            + sorted(failed_copies - {tp for tp, _, _ in failed})
        )

    async def _drop_copies(
        self, copies: list[tuple[TopicPartition, Log]], stale: list[tuple[TopicPartition, Path]]
    ) -> set[TopicPartition]:
        """Deleted partitions' copies removed (and those a removal failed on before);
        returns the partitions one of whose copies is still there."""
        for tp, future in copies:
            await self.abandon_future(tp, future)
        failed = (
            {tp for tp, _, _ in await asyncio.to_thread(_remove_dirs, stale)} if stale else set()
        )
        for tp, _ in stale:
            if tp not in failed:
                self._undeleted_copies.pop(tp, None)
        return failed | {tp for tp, _ in copies if tp in self._undeleted_copies}

    def on_truncation(self, listener: TruncationListener) -> None:
        """Call ``listener(tp, log, offset)`` (event loop) when a log here is about to be
        truncated to ``offset``: the cleaner aborts its round on it and caps its checkpoint."""
        self._truncation_listeners.append(listener)

    def remove_truncation_listener(self, listener: TruncationListener) -> None:
        with contextlib.suppress(ValueError):
            self._truncation_listeners.remove(listener)

    def add_offline_listener(self, listener: Callable[[TopicPartition], None]) -> None:
        """Call ``listener(tp)`` when an I/O error takes a log here offline: from the
        thread that met the error (an fsync's worker, a log's opening), so a listener that
        touches the loop hops to it (``call_soon_threadsafe``)."""
        self._offline_listeners.append(listener)

    def _watched(self, tp: TopicPartition, log: Log) -> Log:
        def truncating(log: Log, offset: int) -> None:
            for listener in list(self._truncation_listeners):
                try:
                    listener(tp, log, offset)
                except Exception:  # the truncation itself must go on: replication needs it
                    self._log.exception("log_manager.truncation_listener_failed", log=log.name)

        def going_offline(log: Log) -> None:
            for listener in list(self._offline_listeners):
                try:
                    listener(tp)
                except Exception:
                    self._log.exception("log_manager.offline_listener_failed", log=log.name)

        log.on_truncate = truncating
        log.on_offline = going_offline
        return log

    def _reserve_dir(self, tp: TopicPartition) -> Path:
        """The log dir a move asked for before the partition was here, else the one
        with the fewest partitions (Kafka's choice for a new log), from
        counts kept as logs come and go: counting them per new log made creating a topic
        of N partitions O(N x logs) (1,024 partitions beside 3,000 took seconds). The new
        log counts from the choice, not from its open: logs open in worker threads side
        by side, and each would otherwise pick the same dir."""
        with self._indexing:
            directory = self.preferred_dirs.pop(tp, None) or min(
                self.dirs, key=lambda d: self._per_dir[d]
            )
            self._per_dir[directory] += 1
        return directory

    def __iter__(self) -> Iterator[tuple[TopicPartition, Log]]:
        return iter(list(self.logs.items()))

    # --- checkpoints --------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write recovery points and log start offsets of every directory, here and now
        (blocking: from a worker thread, or where the loop does not run yet)."""
        self._write_offsets(self._offsets())

    async def checkpoint_async(self) -> None:
        """:meth:`checkpoint` with the offsets read on the event loop (where they change)
        and the files written in a worker thread."""
        offsets = self._offsets()
        await asyncio.to_thread(self._write_offsets, offsets)

    def _offsets(self) -> _Offsets:
        sequence = next(self._snapshots)
        files = {}
        for directory, logs in self._by_dir(list(self.logs.items())).items():
            # straight to lines (about 1 ms for 2,000 partitions: this runs on the loop)
            files[directory / RECOVERY_POINTS] = _checkpoint_text(
                [f"{t} {p} {log.recovery_point}" for (t, p), log in logs]
            )
            files[directory / LOG_START_OFFSETS] = _checkpoint_text(
                [f"{t} {p} {log.log_start_offset}" for (t, p), log in logs]
            )
        return _Offsets(sequence, files)

    def _by_dir(
        self, logs: list[tuple[TopicPartition, Log]]
    ) -> dict[Path, list[tuple[TopicPartition, Log]]]:
        """The logs in each directory (one directory: no path arithmetic per log)."""
        if len(self.dirs) == 1:
            return {self.dirs[0]: logs}
        by_dir: dict[Path, list[tuple[TopicPartition, Log]]] = {d: [] for d in self.dirs}
        for tp, log in logs:
            here = by_dir.get(log.dir.parent)
            if here is not None:
                here.append((tp, log))
        return by_dir

    def _write_offsets(self, offsets: _Offsets) -> None:
        with self._checkpoint_lock:
            if offsets.sequence < self._written:
                return  # a newer snapshot is on disk already
            for path, text in offsets.files.items():
                write_atomically(path, text)
            self._written = offsets.sequence

    async def checkpoint_high_watermarks(self, high_watermarks: dict[TopicPartition, int]) -> None:
        """Write each directory's high watermarks: the text made here, on the loop, the
        files written in a worker thread (never over a newer snapshot's: a periodic
        write cancelled at shutdown still runs, and may finish after the last one)."""
        await asyncio.to_thread(self._write_high_watermarks, self._hw_files(high_watermarks))

    def _hw_files(self, high_watermarks: dict[TopicPartition, int]) -> _Offsets:
        sequence = next(self._hw_snapshots)
        logs = [(tp, log) for tp in high_watermarks if (log := self.logs.get(tp)) is not None]
        files = {
            directory / HIGH_WATERMARKS: _checkpoint_text(
                [f"{tp[0]} {tp[1]} {high_watermarks[tp]}" for tp, _ in here]
            )
            for directory, here in self._by_dir(logs).items()
        }
        return _Offsets(sequence, files)

    def _write_high_watermarks(self, snapshot: _Offsets) -> None:
        with self._checkpoint_lock:
            if snapshot.sequence < self._hw_written:
                return  # a newer snapshot is on disk already
            for path, text in snapshot.files.items():
                write_atomically(path, text)
            self._hw_written = snapshot.sequence

    # --- retention ----------------------------------------------------------------------

    async def apply_retention(
        self,
        high_watermarks: Mapping[TopicPartition, int],
        ready: Callable[[TopicPartition], bool] = lambda tp: True,
    ) -> int:
        """One retention pass over every log here (:meth:`Log.apply_retention`, never past
        the partition's high watermark), skipping the logs ``ready`` says are not to be
        touched yet (their topic's config is not read: its policy and limits are unknown).

        The decisions and the renames to ``.deleted`` happen on the event loop; the unlinks
        of the files whose ``file.delete.delay.ms`` has passed, and the checkpoint of the new
        log start offsets, in worker threads. Returns how many segments were deleted."""
        deleted = 0
        doomed: list[Path] = []
        for tp, log in self:
            if log.offline or not ready(tp):
                continue
            try:
                deleted += log.apply_retention(high_watermarks.get(tp))
                doomed += log.take_pending_deletes()
            except (OSError, HeadwaterError) as exc:
                self._log.warning("log.retention_failed", log=log.name, error=str(exc))
        if doomed:
            await asyncio.to_thread(unlink_all, doomed)
        if deleted:  # the new log start offsets survive a crash
            await self.checkpoint_async()
        return deleted


# --- file formats ----------------------------------------------------------------------


def _doomed_name(path: Path) -> Path:
    """Where a log directory goes before its removal (Kafka's ``.<id>-delete``)."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex}{DELETE_SUFFIX}")


def render_checkpoint(offsets: Mapping[TopicPartition, int]) -> str:
    """A checkpoint file's text: version, count, then ``topic partition offset`` lines."""
    lines = ["0", str(len(offsets))]
    lines += [
        f"{topic} {partition} {offset}" for (topic, partition), offset in sorted(offsets.items())
    ]
    return "\n".join(lines) + "\n"


def _checkpoint_text(lines: list[str]) -> str:
    """A checkpoint file's text from its ``topic partition offset`` lines."""
    body = "\n".join(lines)
    return f"0\n{len(lines)}\n{body}\n" if lines else "0\n0\n"


def write_checkpoint(path: Path, offsets: Mapping[TopicPartition, int]) -> None:
    write_atomically(path, render_checkpoint(offsets))


def _remove_dirs(
    dirs: list[tuple[TopicPartition, Path]],
) -> list[tuple[TopicPartition, Path, OSError]]:
    """Remove each closed log's directory; one that fails does not stop the others.
    Returns the failures."""
    failed = []
    for tp, path in dirs:
        try:
            remove_log_dir(path)
        except OSError as exc:
            failed.append((tp, path, exc))
    return failed


def read_checkpoint(path: Path) -> dict[TopicPartition, int]:
    """The offsets in a checkpoint file; empty (with a warning) if missing or unreadable."""
    if not path.exists():
        return {}
    try:
        lines = path.read_text().splitlines()
        if lines[0] != "0":
            raise ValueError(f"unknown checkpoint version {lines[0]!r}")
        count = int(lines[1])
        out = {}
        for line in lines[2 : 2 + count]:
            topic, partition, offset = line.split()
            out[TopicPartition(topic, int(partition))] = int(offset)
        if len(out) != count:
            raise ValueError(f"{count} entries announced, {len(out)} found")
        return out
    except (ValueError, IndexError, OSError) as exc:
        structlog.get_logger("headwater.log_manager").warning(
            "checkpoint.unreadable",
            path=str(path),
            error=str(exc),
            consequence="logs in this directory are fully re-checked",
        )
        return {}


def read_properties(path: Path) -> dict[str, str]:
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def unlink_all(paths: list[Path]) -> None:
    """Unlink files (renamed ``.deleted`` already, their descriptors closed): blocking."""
    for path in paths:
        path.unlink(missing_ok=True)
