"""One partition's log: an ordered list of segments in ``<log.dir>/<topic>-<partition>/``.

The last segment is active (appends go there, its indexes are preallocated and mapped);
the others are read-only. Offsets are dense and increasing: ``log_start_offset`` is the
first readable offset, ``log_end_offset`` the next one to be assigned.

Append (leader): validate every batch's header and CRC (C code, no record decoding),
assign offsets and stamp the leader epoch by patching a 16-byte copy of each batch's
prefix, and ``writev`` those prefixes with the rest of the caller's bytes: the batches
are never copied in Python. Work is O(batches).

Durability: writes go to the page cache; ``flush.messages`` / ``flush.ms`` decide when
an fsync is due and :meth:`Log.flush_async` runs it in a worker thread. The recovery
point (offsets known flushed) is what the log manager checkpoints; after an unclean stop
everything from the recovery point on is re-read and checked (:meth:`LogSegment.recover`).

Errors: bad input raises protocol errors (CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, ...) and
changes nothing. An OSError while writing (full disk, read-only directory) takes this
log offline: appends raise KAFKA_STORAGE_ERROR from then on, reads keep working, and
one log line says what happened and what to do. Other logs are unaffected.

Concurrency: event loop thread only; :meth:`flush_async` awaits a worker thread and
re-checks the log's state afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import shutil
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from broker.log.aborted import AbortedTransactions, AbortedTxn
from broker.log.config import LogConfig
from broker.log.epochs import LeaderEpochCache
from broker.log.partition_metadata import read_topic_id, write_topic_id
from broker.log.producer_state import NO_MARKER, CompletedTxn, ProducerBatch, ProducerState
from broker.log.segment import BatchInfo, LogSegment
from broker.log.swap import install, promote, recover_swaps, retire
from protocol.apis import (
    EARLIEST_LOCAL_TIMESTAMP,
    EARLIEST_TIMESTAMP,
    LATEST_TIERED_TIMESTAMP,
    LATEST_TIMESTAMP,
    MAX_TIMESTAMP,
)
from protocol.errors import (
    CorruptBatchError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaStorageError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
)
from protocol.framing import FileRegion
from protocol.records import BatchHeader, scan_batches
from protocol.records.batch import LEADER_EPOCH_POS
from protocol.records.control import EndTxnMarker, encode_end_txn_marker, read_end_txn_marker
from protocol.records.transform import timestamp_outside

_NO_LIMIT = 2**63 - 1

__all__ = ["AppendInfo", "FetchData", "Log"]

_LOGGER = structlog.get_logger("headwater.log")

Buffer = bytes | bytearray | memoryview
Clock = Callable[[], int]

_LEFTOVER_SUFFIXES = (".deleted", ".cleaned", ".swap")
_PREFIX = LEADER_EPOCH_POS + 4  # base offset, length, leader epoch: what a leader patches


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AppendInfo(NamedTuple):
    first_offset: int
    last_offset: int
    max_timestamp: int
    batch_count: int
    record_count: int
    size_bytes: int


class FetchData(NamedTuple):
    """Whole batches of one segment, as a byte range of its file (for ``sendfile``)."""

    segment: LogSegment
    position: int
    size: int
    first_offset: int

    @property
    def fd(self) -> int:
        return self.segment.fd

    def read(self) -> bytes:
        return self.segment.read(self.position, self.size)

    def region(self) -> FileRegion:
        """The bytes as a frame part the server ``sendfile``s (see :mod:`broker.server`)."""
        return _SegmentRegion(self.segment, self.position, self.size)


class _SegmentRegion(FileRegion):
    __slots__ = ("_segment",)

    def __init__(self, segment: LogSegment, position: int, size: int) -> None:
        super().__init__(-1, position, size)
        self._segment = segment

    @property
    def fd(self) -> int:
        return self._segment.fd  # -1 once closed or deleted


class Log:
    """One partition's log. Open with :meth:`Log.open`; see the module docstring."""

    def __init__(self, directory: Path, config: LogConfig, clock: Clock) -> None:
        self.dir = directory
        self.config = config
        self._clock = clock
        self.segments: list[LogSegment] = []
        self._bases: list[int] = []
        self._log_start_offset = 0
        self.recovery_point = 0
        self._unflushed_records = 0
        self._last_flush_ms = clock()
        self._pending_deletes: list[tuple[int, LogSegment]] = []
        self._flush_held: list[list[LogSegment]] = []
        """The segments of each fsync running in a worker thread now (in use there)."""
        self._flushed: asyncio.Event | None = None
        self._deleting = False
        self.offline_reason: str | None = None
        self.epochs = LeaderEpochCache(directory)
        self.producers = ProducerState(directory, directory.name)
        self.aborted = AbortedTransactions(directory)
        self.truncations = 0  # bumped by every truncation: see _note_truncation
        self.topic_id: bytes | None = None
        """The id of the topic this log belongs to (its ``partition.metadata``, KIP-516);
        None until the replica is first told it."""
        self.on_truncate: Callable[[Log, int], None] | None = None
        """Set by the log manager; handed the log, so it need not hold it (a log and a
        callback holding it would be a cycle: freed only by the cyclic collector)."""
        self.on_offline: Callable[[Log], None] | None = None
        """Set by the log manager, likewise: called once, when an I/O error takes this log
        offline (from whichever thread did the I/O)."""

    @property
    def _log(self) -> structlog.typing.FilteringBoundLogger:
        # made when needed (a log says something at open, roll, truncation, retention or a
        # failure), not kept: two objects the cyclic collector walks, for every partition
        return _LOGGER.bind(log=self.dir.name)

    # --- open / close -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path | str,
        config: LogConfig | None = None,
        *,
        recovery_point: int = 0,
        log_start_offset: int = 0,
        clean_shutdown: bool = False,
        clock: Clock = wall_clock_ms,
    ) -> Log:
        """Open (or create) the log in ``directory``.

        After an unclean stop (``clean_shutdown`` false) every segment from the one holding
        ``recovery_point`` on is re-read with CRC checks; a torn or corrupt tail is cut,
        and any segment after it removed. Missing or damaged indexes are rebuilt either way.
        """
        directory = Path(directory)
        log = cls(directory, config or LogConfig(), clock)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            log._load(recovery_point, log_start_offset, clean_shutdown)
            log.topic_id = read_topic_id(directory)
        except BaseException as exc:
            # the segments opened so far hold a descriptor and two mappings each: a
            # broker retrying a log that cannot open would run out of them
            log._release()
            if not isinstance(exc, OSError):
                raise
            reason = _storage_advice(exc, "opening", directory)
            log._log.error("log.open_failed", reason=reason, errno=exc.errno)
            raise KafkaStorageError(f"{directory.name} cannot be opened: {reason}") from exc
        return log

    def _load(self, recovery_point: int, log_start_offset: int, clean: bool) -> None:
        bases = self._segment_files()
        now = self._clock()
        for base in bases:
            self._add_segment(self._new_segment(base, now))
        if not clean:
            self._recover(recovery_point)
        last = self.segments[-1] if self.segments else None
        for segment in self.segments:
            # after a crash the active segment was just recovered: no final time entry
            if not segment.indexes_sane(full=not clean, finished=clean or segment is not last):
                segment.recover()
                segment.on_roll()
        if not self.segments:
            self._add_segment(self._new_segment(max(log_start_offset, 0), now))
        for segment in self.segments:
            segment.load_tail()  # next offset, max timestamp: index entries + a short scan
        self.active.make_active()
        self._log_start_offset = max(log_start_offset, self.segments[0].base_offset)
        self.recovery_point = min(max(recovery_point, 0), self.log_end_offset)
        self._load_epochs(recovery_point, clean)
        self.aborted.load()
        # after a crash, from a snapshot the flushed log covers: the aborted index may
        # have lost entries after the recovery point, and the replay re-adds them
        self._load_producers(None if clean else self.recovery_point)
        if not clean:
            self._check_aborted_markers()
            # what recovery checked is made durable once, so it is not checked again
            _fsync_all(self.segments)
            self.epochs.flush()
            self.recovery_point = self.log_end_offset
        self._log.info(
            "log.loaded",
            segments=len(self.segments),
            log_start_offset=self._log_start_offset,
            log_end_offset=self.log_end_offset,
            clean_shutdown=clean,
        )

    def _load_epochs(self, recovery_point: int, clean: bool) -> None:
        """Bring the leader-epoch cache in line with the log as loaded.

        The batches themselves carry their epochs, so whatever the checkpoint file missed
        (an unclean stop, or no file at all) is read back from their headers.
        """
        self.epochs.truncate_from_end(self.log_end_offset)
        if not self.epochs.entries:
            self._derive_epochs(self._log_start_offset)
        elif not clean:
            self._derive_epochs(min(recovery_point, self.log_end_offset))
        self.epochs.truncate_from_start(self._log_start_offset)

    def _load_producers(self, at_most: int | None = None) -> None:
        """Idempotent producers' state: the newest snapshot (at or below ``at_most``),
        then the batch headers after it."""
        start = self.producers.load(self._log_start_offset, self.log_end_offset, at_most)
        self.aborted.truncate(start)  # the replay adds those from there on again
        self.producers.replay(self._producer_batches(start), self.log_end_offset, self._aborted)

    def _check_aborted_markers(self) -> None:
        """Drop aborted-index entries whose ABORT marker the log no longer holds: the
        cleaner removed it and the stop came before the index was rewritten (see
        :mod:`broker.log.aborted`). A header read per entry; after unclean stops only."""
        gone = self.aborted.retain(lambda e: self._marker_at(e[2], e[0]))
        if gone:
            self._log.warning("log.aborted_index_pruned", entries=gone)

    def _marker_at(self, offset: int, producer_id: int) -> bool:
        if offset < self._log_start_offset or offset >= self.log_end_offset:
            return False
        segment = self.segments[max(bisect_right(self._bases, offset) - 1, 0)]
        header = segment.find(offset)
        return (
            header is not None
            and header.base_offset == offset
            and header.is_control
            and header.producer_id == producer_id
        )

    def _aborted(self, completed: CompletedTxn) -> None:
        """Index a transaction an ABORT marker ended (appended or replayed)."""
        self.aborted.append(
            AbortedTxn(
                completed.producer_id,
                completed.first_offset,
                completed.last_offset,
                self.producers.stable_after(completed),
            )
        )

    def _reload_producers(self) -> None:
        """After a truncation: snapshots past the new end go, the state is rebuilt."""
        self.producers.delete_snapshots_above(self.log_end_offset)
        self._load_producers()

    def _producer_batches(self, from_offset: int) -> Iterator[ProducerBatch]:
        """The batches to replay, each heard of now (their producers' ids then expire no
        sooner than producer.id.expiration.ms from the load)."""
        if from_offset >= self.log_end_offset:
            return  # a snapshot at the end (a clean close): no header to read
        now = self._clock()
        i = max(bisect_right(self._bases, from_offset) - 1, 0)
        for k, segment in enumerate(self.segments[i:]):
            # from the index entry at or below it, not the segment's start
            position = segment.offset_index.lookup(from_offset)[1] if k == 0 else 0
            for h in segment.headers(position):
                if h.producer_id < 0 or h.base_offset < from_offset:
                    continue
                if not h.is_control:
                    yield _producer_batch(h, h.base_offset, now)
                    continue
                data = segment.read(h.position, h.size)  # a marker: rare, and small
                try:
                    marker = read_end_txn_marker(data, h._replace(position=0))
                except CorruptBatchError as exc:  # checked when written: not ours
                    self._log.warning("log.bad_marker", offset=h.base_offset, error=str(exc))
                    continue
                yield _producer_batch(h, h.base_offset, now, marker)

    def _derive_epochs(self, from_offset: int) -> None:
        i = max(bisect_right(self._bases, from_offset) - 1, 0)
        for segment in self.segments[i:]:
            for header in segment.headers():
                if header.last_offset < from_offset:
                    continue
                if header.partition_leader_epoch > self.epochs.latest_epoch:
                    self.epochs.assign(header.partition_leader_epoch, header.base_offset)

    def _segment_files(self) -> list[int]:
        """Base offsets of the segments on disk, after removing what a crash left behind."""
        recover_swaps(
            self.dir,
            index_interval_bytes=self.config.index_interval_bytes,
            max_index_bytes=self.config.segment_index_bytes,
        )
        names = os.listdir(self.dir)  # once: a new log's open scanned its directory 4 times
        for name in names:
            if name.endswith(_LEFTOVER_SUFFIXES):
                (self.dir / name).unlink()
        bases = sorted(int(name[: -len(".log")]) for name in names if name.endswith(".log"))
        known = set(bases)
        for name in names:
            for suffix in (".index", ".timeindex"):
                if name.endswith(suffix) and int(name[: -len(suffix)]) not in known:
                    (self.dir / name).unlink()  # an index without its log
        return bases

    def _recover(self, recovery_point: int) -> int:
        """Re-check segments from the recovery point on; returns bytes cut."""
        start = max(bisect_right(self._bases, recovery_point) - 1, 0)
        cut_total = 0
        for i in range(start, len(self.segments)):
            segment = self.segments[i]
            cut = segment.recover()
            if i < len(self.segments) - 1:
                segment.on_roll()
            if cut:
                cut_total += cut
                for later in self.segments[i + 1 :]:
                    later.delete()
                del self.segments[i + 1 :]
                del self._bases[i + 1 :]
                self._log.warning(
                    "log.recovered_torn_tail",
                    segment=segment.log_path.name,
                    bytes_cut=cut,
                    log_end_offset=segment.next_offset,
                )
                break
        return cut_total

    def _new_segment(self, base: int, now: int) -> LogSegment:
        segment = LogSegment(
            self.dir,
            base,
            index_interval_bytes=self.config.index_interval_bytes,
            max_index_bytes=self.config.segment_index_bytes,
            created_ms=now,
        )
        jitter = min(self.config.segment_jitter_ms, self.config.segment_ms)
        segment.roll_jitter_ms = random.randrange(jitter) if jitter > 0 else 0
        return segment

    def _add_segment(self, segment: LogSegment) -> None:
        self.segments.append(segment)
        self._bases.append(segment.base_offset)

    def close(self) -> None:
        """Flush and close every file, trimming the active indexes (a clean stop)."""
        if self.offline_reason is None:
            self.flush()
            self._snapshot_producers()
        for segment in self.segments:
            segment.close()
        for _, segment in self._pending_deletes:
            segment.delete()
        self._pending_deletes.clear()
        self.segments.clear()
        self._bases.clear()

    def _release(self) -> None:
        """Close every file of a log whose open failed, writing nothing to them."""
        for segment in self.segments:
            segment.release()
        self.segments.clear()
        self._bases.clear()

    def _snapshot_producers(self) -> None:
        """The producers' state as of the log end, so the next open reads it instead of
        every batch header since the last roll (Kafka snapshots at a clean close too): a
        broker of 2,100 partitions, 40 of them busy, spent 11 s opening its logs, nearly
        all of it replaying 750,000 headers one pread each."""
        end = self.log_end_offset
        state = self.producers
        if end == self._log_start_offset and not state.producers:
            return  # nothing to replay, nothing to keep
        offsets = state.snapshot_offsets()
        if offsets and offsets[-1] == end:
            return  # unchanged since the last one
        state.end_offset = max(state.end_offset, end)  # every batch to the end is in it
        try:
            # one close snapshot at most, beside the roll snapshots it does not count
            # against (see ProducerState.take_snapshot)
            state.delete_snapshots_above(self.active.base_offset)
            state.take_snapshot(prune=False)
        except OSError as exc:  # the next open replays instead: nothing is lost
            self._log.warning("log.producer_snapshot_failed", error=str(exc))

    def delete(self) -> None:
        """Remove the log and its directory (topic deletion, replica moved away): both
        halves below at once (blocking: tests and tools). Raises OSError if the directory
        could not be removed."""
        self.close_for_delete()
        self.remove_dir()

    async def flushes_done(self) -> None:
        """Until no fsync of this log runs in a worker thread (they use its segments'
        descriptors and index maps: :meth:`close_for_delete` waits for them)."""
        while self._flush_held:
            if self._flushed is None:
                self._flushed = asyncio.Event()
            await self._flushed.wait()

    def close_for_delete(self) -> None:
        """The first half of :meth:`delete`, on the event loop: close every descriptor,
        pending deletes' too (theirs held the space for good), without writing to files
        that are going; flushes after it do nothing (await :meth:`flushes_done` first for
        those already in a thread). On the loop because a read in flight (a fetch's
        ``sendfile``) re-reads ``fd`` between awaits: closed here it sees -1; closed in a
        worker thread it could meet the number reused by a file opened meanwhile."""
        self._deleting = True
        for segment in self.segments:
            with contextlib.suppress(OSError):  # going anyway
                segment.release()
        for _, segment in self._pending_deletes:
            with contextlib.suppress(OSError):
                segment.release()
        self.segments.clear()
        self._bases.clear()
        self._pending_deletes.clear()

    def remove_dir(self) -> None:
        """The second half of :meth:`delete`, blocking (a worker thread): remove the
        directory (see :func:`remove_log_dir`)."""
        remove_log_dir(self.dir)

    # --- state --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def active(self) -> LogSegment:
        return self.segments[-1]

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.active.next_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def segment_count(self) -> int:
        return len(self.segments)

    @property
    def offline(self) -> bool:
        return self.offline_reason is not None

    # --- append -------------------------------------------------------------------------

    def append(
        self, data: Buffer, *, leader_epoch: int = -1, coordinator: bool = False
    ) -> AppendInfo:
        """Append batches as the leader: offsets assigned, ``leader_epoch`` stamped.
        ``coordinator``: a coordinator's own write (Kafka's AppendOrigin.Coordinator), whose
        producer batches (a transaction's offsets) carry no sequence: only their epoch is
        checked."""
        return self._append(data, leader_epoch, assign_offsets=True, coordinator=coordinator)

    def append_as_follower(self, data: Buffer) -> AppendInfo:
        """Append the leader's batches exactly as they are (offsets must follow ours)."""
        return self._append(data, -1, assign_offsets=False)

    def append_marker(
        self,
        *,
        producer_id: int,
        producer_epoch: int,
        committed: bool,
        coordinator_epoch: int,
        leader_epoch: int = -1,
    ) -> AppendInfo:
        """End ``producer_id``'s transaction here with a COMMIT or ABORT marker, as the
        leader (WriteTxnMarkers). Raises INVALID_PRODUCER_EPOCH for an older producer
        epoch, TRANSACTION_COORDINATOR_FENCED for an older coordinator's marker."""
        marker = encode_end_txn_marker(
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            committed=committed,
            coordinator_epoch=coordinator_epoch,
            timestamp_ms=self._clock(),
        )
        return self._append(marker, leader_epoch, assign_offsets=True, coordinator=True)

    def _append(
        self, data: Buffer, leader_epoch: int, *, assign_offsets: bool, coordinator: bool = False
    ) -> AppendInfo:
        self._check_online()
        view = memoryview(data).cast("B")
        headers = scan_batches(view)
        if not headers:
            raise InvalidRecordError("a produce carried no record batches")
        markers = self._validate(
            headers,
            view,
            from_producer=assign_offsets and not coordinator,
            as_leader=assign_offsets,
        )
        duplicate = self._check_producers(headers, markers, coordinator) if assign_offsets else None
        if duplicate is not None:
            return duplicate
        buffers: list[Buffer] = []
        infos: list[BatchInfo] = []
        next_offset = self.log_end_offset
        records = 0
        for h in headers:
            if assign_offsets:
                prefix = bytearray(view[h.position : h.position + _PREFIX])
                prefix[0:8] = next_offset.to_bytes(8, "big", signed=True)
                prefix[LEADER_EPOCH_POS:_PREFIX] = leader_epoch.to_bytes(4, "big", signed=True)
                buffers += (prefix, view[h.position + _PREFIX : h.end])
                base = next_offset
            else:
                if h.base_offset < next_offset:
                    raise InvalidRecordError(
                        f"{self.name}: batch at offset {h.base_offset} is below the log end "
                        f"offset {next_offset}"
                    )
                buffers.append(view[h.position : h.end])
                base = h.base_offset
            last = base + h.last_offset_delta
            infos.append(BatchInfo(base, last, h.max_timestamp, h.size))
            next_offset = last + 1
            records += h.record_count
        total = headers[-1].end
        self._maybe_roll(total, infos[0].base_offset, infos[-1].last_offset)
        self._write(lambda: self.active.append(buffers, infos), "appending to")
        epochs = (
            [leader_epoch] * len(infos)
            if assign_offsets
            else [h.partition_leader_epoch for h in headers]
        )
        # once per leader change, not per append
        if epochs[-1] > self.epochs.latest_epoch or self.epochs.unwritten:
            self._write(lambda: self._assign_epochs(epochs, infos), "recording leader epochs of")
        now = self._clock()
        for i, (h, info) in enumerate(zip(headers, infos, strict=True)):
            if h.producer_id >= 0:
                completed = self.producers.update(
                    _producer_batch(h, info.base_offset, now, markers.get(i))
                )
                if completed is not None and completed.aborted:
                    self._write(partial(self._aborted, completed), "indexing an abort in")
        self.producers.end_offset = infos[-1].last_offset + 1
        self._unflushed_records += records
        max_ts = max(i.max_timestamp for i in infos)
        return AppendInfo(
            infos[0].base_offset, infos[-1].last_offset, max_ts, len(infos), records, total
        )

    def _validate(
        self, headers: list[BatchHeader], view: memoryview, *, from_producer: bool, as_leader: bool
    ) -> dict[int, EndTxnMarker]:
        """Refuse what no append may write; returns the transaction markers among the
        batches, by index, read before anything is written so a bad one is refused whole.

        A follower takes batches of any size (Kafka's ignoreRecordSize): its leader
        accepted them, and ``max.message.bytes`` may differ between the two (a broker's
        dynamic value, or a lowered default) or have changed since."""
        limit = self.config.max_message_bytes if as_leader else _NO_LIMIT
        markers: dict[int, EndTxnMarker] = {}
        for i, h in enumerate(headers):
            if h.size > limit:
                raise MessageTooLargeError(
                    f"a batch of {h.size} bytes is over max.message.bytes ({limit}) for {self.name}"
                )
            if h.is_control:
                if from_producer:
                    raise InvalidRecordError(
                        f"{self.name}: a producer may not write control batches; transaction "
                        "markers are written by the transaction coordinator"
                    )
                if h.producer_id >= 0:
                    markers[i] = read_end_txn_marker(view, h)
        if from_producer:
            self._check_timestamps(headers, view)
        total = headers[-1].end
        if total > self.config.segment_bytes:
            raise RecordListTooLargeError(
                f"{total} bytes in one append is over segment.bytes "
                f"({self.config.segment_bytes}) for {self.name}"
            )
        return markers

    def _check_timestamps(self, headers: list[BatchHeader], view: memoryview) -> None:
        """Kafka's KIP-937 bounds on a producer's CreateTime timestamps, by this broker's
        clock: ``message.timestamp.after.max.ms`` by each batch's max timestamp (its
        header, already read: Kafka 4.0's default bound costs two comparisons a batch),
        ``message.timestamp.before.max.ms`` by every record's (decoded: a record may be
        older than its batch's first)."""
        config = self.config
        before = config.message_timestamp_before_max_ms
        after = config.message_timestamp_after_max_ms
        if (before == after == _NO_LIMIT) or config.message_timestamp_type != "CreateTime":
            return
        now = self._clock()
        low, high = now - before, now + after
        every_record = before != _NO_LIMIT
        for h in headers:
            if h.is_control or (h.max_timestamp <= high and not every_record):
                continue
            found = timestamp_outside(
                view[h.position : h.end], low, high, every_record=every_record
            )
            if found is None:
                continue
            if found > high:
                name, limit, gap, way = "after", after, found - now, "ahead of"
            else:
                name, limit, gap, way = "before", before, now - found, "behind"
            raise InvalidTimestampError(
                f"{self.name}: a record's timestamp {found} is {gap} ms {way} this broker's "
                f"clock, more than message.timestamp.{name}.max.ms={limit} allows: send "
                f"records stamped with the current time, or raise the topic's limit"
            )

    def _check_producers(
        self, headers: list[BatchHeader], markers: dict[int, EndTxnMarker], coordinator: bool
    ) -> AppendInfo | None:
        """The leader's idempotence (and transaction) check; the original offsets if this
        is a retry."""
        idempotent = [h for h in headers if h.producer_id >= 0]
        if not idempotent:
            return None
        if coordinator and not markers:
            for h in idempotent:
                self.producers.check_epoch(_producer_batch(h, self.log_end_offset, -1))
            return None
        if len(headers) > 1:
            raise InvalidRecordError(
                f"{self.name}: an idempotent producer sends one batch per partition per "
                f"request, not {len(headers)}"
            )
        h = idempotent[0]
        kept = self.producers.check(_producer_batch(h, self.log_end_offset, -1, markers.get(0)))
        if kept is None:
            return None
        self._log.info(
            "log.duplicate_batch",
            producer_id=h.producer_id,
            sequence=h.base_sequence,
            offset=kept.first_offset,
        )
        count = kept.last_offset - kept.first_offset + 1
        return AppendInfo(kept.first_offset, kept.last_offset, h.max_timestamp, 0, count, 0)

    def _assign_epochs(self, epochs: list[int], infos: list[BatchInfo]) -> None:
        for epoch, info in zip(epochs, infos, strict=True):
            if epoch > self.epochs.latest_epoch:
                self.epochs.assign(epoch, info.base_offset)
        self.epochs.write()

    def assign_epoch_start(self, epoch: int) -> None:
        """A new leader's epoch begins at the log end, before it appends anything (Kafka's
        maybeAssignEpochStartOffset). Without it a leader elected with an empty log (or
        none of its epoch's records yet) answered OffsetForLeaderEpoch for an older epoch
        as "unknown", and a follower kept records this leader never had.

        In memory only (no file write on the event loop per partition at a leader change):
        the first append writes it, and an entry with no record after it is dropped when
        the log is loaded anyway; the next LeaderAndIsr assigns it again."""
        self.epochs.assign(epoch, self.log_end_offset, write=False)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetsForLeaderEpoch: (largest epoch <= ``epoch`` here, the offset it ended at)."""
        return self.epochs.end_offset_for(epoch, self.log_end_offset)

    # --- transactions -------------------------------------------------------------------

    def last_stable_offset(self, high_watermark: int) -> int:
        """What a read_committed reader may read up to (exclusive): the high watermark, or
        the first offset of the oldest transaction not yet ended below it."""
        first = self.producers.first_unstable_offset(high_watermark)
        if first is None:
            return high_watermark
        # an open transaction begun below the log start (DeleteRecords) holds it there
        return min(max(first, self._log_start_offset), high_watermark)

    def aborted_transactions(self, start: int, upper: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions with records in
        [``start``, ``upper``): what a read_committed fetch from ``start`` is told."""
        return self.aborted.collect(start, upper)

    def _maybe_roll(self, nbytes: int, first_offset: int, last_offset: int) -> None:
        seg = self.active
        if seg.size == 0:
            return
        now = self._clock()
        if (
            seg.size + nbytes > self.config.segment_bytes
            or now - seg.created_ms >= self.config.segment_ms - seg.roll_jitter_ms
            or not seg.room_for_entries(nbytes)
            or last_offset - seg.base_offset >= 2**31  # relative offsets are u32 in indexes
        ):
            self.roll(first_offset)

    def roll(self, base_offset: int | None = None) -> LogSegment:
        """Start a new active segment at ``base_offset`` (default: the log end offset)."""
        base = self.log_end_offset if base_offset is None else base_offset
        if self.active.size == 0 and self.active.base_offset == base:
            return self.active
        old = self.active

        def roll() -> None:
            segment = self._new_segment(base, self._clock())
            segment.make_active()
            old.on_roll()
            self._add_segment(segment)
            self.producers.end_offset = max(self.producers.end_offset, base)
            # a close snapshot inside the segment just closed goes: the roll's is newer,
            # and the two roll snapshots kept are what a truncation falls back on
            self.producers.delete_snapshots_above(old.base_offset)
            # restarts replay from here, not the log start
            self.producers.take_snapshot(keep_at_or_below=self.recovery_point)

        self._write(roll, "rolling a segment of")
        self._log.debug("log.rolled", base_offset=base, previous_size=old.size)
        return self.active

    # --- read ---------------------------------------------------------------------------

    def read(
        self,
        offset: int,
        max_bytes: int,
        *,
        max_offset: int | None = None,
        min_one_batch: bool = True,
    ) -> FetchData | None:
        """Whole batches from the one holding ``offset``, up to ``max_bytes``.

        ``max_offset`` (exclusive; the high watermark for consumers) bounds what is seen.
        The first batch is returned even if larger than ``max_bytes`` when
        ``min_one_batch`` (KIP-74), so a consumer always makes progress. None at the end;
        OFFSET_OUT_OF_RANGE below the log start or past the end.
        """
        end = self.log_end_offset
        if offset < self._log_start_offset or offset > end:
            raise OffsetOutOfRangeError(
                f"offset {offset} is out of range for {self.name}: the log holds "
                f"[{self._log_start_offset}, {end})"
            )
        bound = end if max_offset is None else min(max_offset, end)
        if offset >= bound:
            return None  # at the end (a consumer waiting for more): nothing to look up
        i = max(bisect_right(self._bases, offset) - 1, 0)
        for segment in self.segments[i:]:
            if segment.base_offset >= bound:
                return None
            found = segment.read_range(
                offset, max_bytes, max_offset=bound, min_one_batch=min_one_batch
            )
            if found is not None:
                return FetchData(segment, *found)
        return None

    def list_offset(self, timestamp: int) -> tuple[int, int] | None:
        """ListOffsets' answer: (timestamp, offset), timestamp -1 where none applies.

        ``timestamp`` is a time in ms, or Kafka's specials: -2 earliest (the log start
        offset), -1 latest (the log end offset), -3 the (first) record with the largest
        timestamp, -4 earliest local (the log start offset: nothing is tiered here), -5
        latest tiered (none: None).
        None if no record has a timestamp >= ``timestamp``.
        """
        if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
            return -1, self._log_start_offset
        if timestamp == LATEST_TIERED_TIMESTAMP:
            return None
        if timestamp == LATEST_TIMESTAMP:
            return -1, self.log_end_offset
        if timestamp == MAX_TIMESTAMP:
            # the exact record, as Kafka answers since KAFKA-16310: one batch decoded
            largest, _ = self.max_timestamp()
            return self.offset_for_timestamp(largest) if largest >= 0 else None
        return self.offset_for_timestamp(timestamp)

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(timestamp, offset) of the first record with a timestamp >= ``timestamp``."""
        i = max(bisect_right(self._bases, self._log_start_offset) - 1, 0)
        for segment in self.segments[i:]:
            found = segment.find_by_timestamp(timestamp, self._log_start_offset)
            if found is not None:
                return found
        return None

    def max_timestamp(self) -> tuple[int, int]:
        """(timestamp, offset) of the batch holding the largest timestamp; (-1, -1) if empty."""
        best = (-1, -1)
        for segment in self.segments:
            if segment.max_timestamp > best[0]:
                best = (segment.max_timestamp, segment.offset_of_max_timestamp)
        return best

    # --- truncation and retention -------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Remove everything at offsets >= ``offset`` (whole batches; used by replication)."""
        if offset >= self.log_end_offset:
            # no record goes, but an epoch begun at the end (a leader's, before it wrote)
            # does: kept, a follower asked about it again and again and never fetched
            entries = self.epochs.entries
            if entries and entries[-1].start_offset >= offset:
                self._write(lambda: self.epochs.truncate_from_end(offset), "truncating")
            return
        if offset <= self.segments[0].base_offset:
            self.truncate_fully_and_start_at(offset)
            return
        self._note_truncation(offset)

        def truncate() -> None:
            while len(self.segments) > 1 and self.active.base_offset >= offset:
                self._drop(self.segments.pop())
                self._bases.pop()
            self.active.make_active()
            self.active.truncate_to(offset)

        self._write(truncate, "truncating")
        self.epochs.truncate_from_end(self.log_end_offset)  # whole batches: may be < offset
        self._write(self._reload_producers, "rebuilding the producer state of")
        self.recovery_point = min(self.recovery_point, self.log_end_offset)
        self._log.info("log.truncated", offset=offset, log_end_offset=self.log_end_offset)

    def _drop(self, segment: LogSegment) -> None:
        """Delete a segment cut off by a truncation: now, or, while an fsync running in a
        worker thread holds it (the newest segments are the dirty ones), renamed and due
        at the next pass over pending deletions (closed under the fsync, it failed it)."""
        if id(segment) in self._held_by_flushes():
            segment.rename_for_delete()
            self._pending_deletes.append((self._clock(), segment))
        else:
            segment.delete()

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop every segment; the log restarts empty at ``offset``."""
        self._note_truncation(offset)

        def restart() -> None:
            for segment in self.segments:
                self._drop(segment)
            self.segments.clear()
            self._bases.clear()
            segment = self._new_segment(offset, self._clock())
            segment.make_active()
            self._add_segment(segment)

        self._write(restart, "truncating")
        self.epochs.clear()
        self._write(lambda: self.producers.delete_snapshots_above(-1), "truncating")
        self._write(self.aborted.clear, "truncating")
        self.producers.clear(offset)
        self._log_start_offset = offset
        self.recovery_point = offset

    def apply_retention(self, high_watermark: int | None = None) -> int:
        """Delete whole segments past ``retention.ms`` or over ``retention.bytes``, only
        when ``cleanup.policy`` includes delete (a compact-only topic keeps every key's
        latest record however old it is); and, whatever the policy, segments wholly below
        the log start offset (a follower's moves with its leader's: Kafka's
        ``deleteLogStartOffsetBreachedSegments``).

        Never the active segment, nor one holding offsets at or past ``high_watermark``
        (None: no bound), so the log start offset never passes it (as Kafka). Returns how
        many segments were deleted.
        """
        now = self._clock()
        bound = self.log_end_offset if high_watermark is None else high_watermark
        doomed = 0
        size = self.size_bytes
        for segment, after in zip(self.segments, self.segments[1:], strict=False):
            if after.base_offset > bound or not self._breaches(segment, after, size, now):
                break
            size -= segment.size
            doomed += 1
        if doomed:
            self._delete_oldest(doomed, now)
        return doomed

    def _breaches(self, segment: LogSegment, after: LogSegment, size: int, now: int) -> bool:
        """Whether retention may delete ``segment`` (``size``: the log's bytes from it on)."""
        if after.base_offset <= self._log_start_offset:
            return True
        cfg = self.config
        if not cfg.delete:
            return False
        expired = (
            cfg.retention_ms >= 0
            and segment.max_timestamp >= 0
            and now - segment.max_timestamp > cfg.retention_ms
        )
        return expired or (cfg.retention_bytes >= 0 and size - segment.size >= cfg.retention_bytes)

    def advance_log_start_offset(self, offset: int) -> bool:
        """Move the log start offset up to ``offset`` (never past the log end): how a
        follower keeps its leader's, which each fetch response carries. Segments wholly
        below it go at the next retention pass. True if it moved."""
        offset = min(offset, self.log_end_offset)
        if offset <= self._log_start_offset:
            return False
        since, self._log_start_offset = self._log_start_offset, offset
        self.epochs.truncate_from_start(offset)
        self._start_passed(since)
        return True

    def _start_passed(self, since: int) -> None:
        """The log start moved up from ``since``: see
        :meth:`ProducerState.forget_snapshot_transactions` (the cleaner's bound for
        removing markers counts only the snapshots at or past the log start)."""
        start = self._log_start_offset
        self._write(
            lambda: self.producers.forget_snapshot_transactions(since, start),
            "rewriting producer snapshots of",
        )

    def _delete_oldest(self, count: int, now: int) -> None:
        gone = self.segments[:count]

        def delete() -> None:
            for segment in gone:
                segment.rename_for_delete()
                self._pending_deletes.append((now + self.config.file_delete_delay_ms, segment))

        self._write(delete, "deleting old segments of")
        del self.segments[:count]
        del self._bases[:count]
        since = self._log_start_offset
        self._log_start_offset = max(self._log_start_offset, self.segments[0].base_offset)
        self.epochs.truncate_from_start(self._log_start_offset)
        if self._log_start_offset > since:
            self._start_passed(since)
        self._write(
            lambda: self.producers.delete_snapshots_below(self._log_start_offset),
            "deleting producer snapshots of",
        )
        self._write(lambda: self.aborted.prune_below(self._log_start_offset), "pruning")
        self._log.info(
            "log.retention_deleted",
            segments=count,
            log_start_offset=self._log_start_offset,
        )

    def delete_pending(self, *, force: bool = False) -> int:
        """Unlink segments renamed for deletion whose delay has passed (or all, if forced),
        here and now; returns how many."""
        due = self._due_deletes(force)
        for segment in due:
            segment.delete()
        return len(due)

    def take_pending_deletes(self, *, force: bool = False) -> list[Path]:
        """:meth:`delete_pending` in two halves: the descriptors are closed here, on the
        event loop (a read in flight re-reads ``fd`` between awaits and sees -1, never a
        number reused by another file); the files (``.deleted`` names, no longer anyone's)
        are returned for the caller to unlink off the loop.

        A segment an fsync in a worker thread holds (it was dirty before it went) stays
        for a later pass: closed under the fsync, it would fail it, which takes the log
        offline.
        """
        paths: list[Path] = []
        for segment in self._due_deletes(force):
            for index in (segment.offset_index, segment.time_index):
                index.close(trim=False)
                paths.append(index.path)
            os.close(segment.fd)
            segment.fd = -1
            paths.append(segment.log_path)
        return paths

    def _due_deletes(self, force: bool) -> list[LogSegment]:
        now = self._clock()
        held = self._held_by_flushes()
        due = [
            (t, s) for t, s in self._pending_deletes if (force or t <= now) and id(s) not in held
        ]
        for item in due:
            self._pending_deletes.remove(item)
        return [segment for _, segment in due]

    def _held_by_flushes(self) -> set[int]:
        """The ids of the segments an fsync running in a worker thread holds."""
        return {id(segment) for segments in self._flush_held for segment in segments}

    # --- compaction (broker.log.cleaner) ------------------------------------------------

    def replace_segments(self, old: list[LogSegment], cleaned_base: int) -> LogSegment:
        """Swap the cleaner's ``<cleaned_base>.*.cleaned`` files in for ``old``, consecutive
        non-active segments of this log starting at ``cleaned_base`` (Kafka's
        replaceSegments; the steps and their crash recovery: :mod:`broker.log.swap`).

        The old files are renamed ``.deleted`` and unlinked after ``file.delete.delay.ms``,
        so a read in flight (a ``sendfile`` of a fetch) keeps its file. Event loop only:
        no other code sees the list of segments half replaced.
        """
        i = self.segments.index(old[0])
        assert self.segments[i : i + len(old)] == old and i + len(old) < len(self.segments)
        assert old[0].base_offset == cleaned_base
        now = self._clock()

        def swap() -> None:
            promote(self.dir, cleaned_base)
            retire(old)
            delay = self.config.file_delete_delay_ms
            self._pending_deletes += [(now + delay, segment) for segment in old]
            install(self.dir, cleaned_base)
            new = self._new_segment(cleaned_base, now)
            if not new.indexes_sane(finished=True):  # the cleaner's, just now: a bug if not
                new.recover()
                new.on_roll()
            new.load_tail()
            self.segments[i : i + len(old)] = [new]
            self._bases[i : i + len(old)] = [cleaned_base]

        self._write(swap, "swapping cleaned segments into")
        return self.segments[i]

    def drop_aborted(self, marker_offsets: list[int]) -> None:
        """The cleaner removed the markers at these offsets (every batch of their
        transactions was gone already): their aborted-index entries go. Called in the
        loop pass of the swap, so no read sees one without the other; a crash between the
        swap and this write is repaired at the next load (:meth:`_check_aborted_markers`)."""
        self._write(lambda: self.aborted.drop(marker_offsets), "pruning the aborted index of")

    def _note_truncation(self, offset: int) -> None:
        """Tell the cleaner, before anything is cut (Kafka's LogManager.truncateTo): a round
        in progress on this log is void (it compares :attr:`truncations` with what it saw
        when it planned: a segment cut and refilled to the same size looks unchanged), and
        its checkpoint (the first offset not cleaned) must not stay above what the log is
        cut back to (maybeTruncateCheckpoint), or records rewritten there would be
        skipped."""
        self.truncations += 1
        if self.on_truncate is not None:
            self.on_truncate(self, offset)

    # --- flush --------------------------------------------------------------------------

    def flush_due(self) -> bool:
        """Whether ``flush.messages`` or ``flush.ms`` calls for an fsync now."""
        if not self._unflushed_records:
            return False
        return (
            self._unflushed_records >= self.config.flush_messages
            or self._clock() - self._last_flush_ms >= self.config.flush_ms
        )

    def flush(self) -> None:
        """fsync everything written so far, here and now (blocking: shutdown and tests)."""
        if self._deleting:
            return
        target, dirty = self._flush_plan()
        self._write(lambda: _fsync_all(dirty, self.epochs, self.aborted), "flushing")
        self._flush_done(target)

    async def flush_async(self) -> None:
        """fsync in a worker thread, so the event loop never waits on the disk."""
        if self._deleting:
            return  # closed: nothing left to make durable
        target, dirty = self._flush_plan()
        self._flush_held.append(dirty)
        # counted until the thread is done, not until this task is: a cancelled await
        # leaves the thread running, on these segments
        try:
            running = asyncio.get_running_loop().run_in_executor(
                None, _fsync_all, dirty, self.epochs, self.aborted
            )
        except BaseException:  # no thread (the executor is shut down): nothing holds them
            self._flush_held.remove(dirty)
            raise
        running.add_done_callback(lambda done: self._flush_ended(done, dirty))
        try:
            await asyncio.shield(running)
        except OSError as exc:
            self._go_offline(exc, "flushing")
        self._flush_done(target)

    def _flush_ended(self, running: asyncio.Future[None], held: list[LogSegment]) -> None:
        if not running.cancelled():
            running.exception()  # seen here whoever awaited it (a cancelled flush raised none)
        self._flush_held.remove(held)
        if not self._flush_held and self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    def _flush_plan(self) -> tuple[int, list[LogSegment]]:
        dirty = [s for s in self.segments if s.dirty]
        for segment in dirty:
            segment.dirty = False
        self._unflushed_records = 0
        self._last_flush_ms = self._clock()
        return self.log_end_offset, dirty

    def _flush_done(self, target: int) -> None:
        if self._deleting:
            return  # closed for delete as the fsync ended: no recovery point to keep
        # the log may have been truncated while the fsync ran
        self.recovery_point = max(self.recovery_point, min(target, self.log_end_offset))

    # --- storage errors -----------------------------------------------------------------

    def _check_online(self) -> None:
        if self.offline_reason is not None:
            raise KafkaStorageError(f"{self.name} is offline: {self.offline_reason}")

    def _write(self, action: Callable[[], None], doing: str) -> None:
        self._check_online()
        try:
            action()
        except OSError as exc:
            self._go_offline(exc, doing)

    def record_topic_id(self, topic_id: bytes) -> None:
        """Keep ``topic_id`` in the log's ``partition.metadata`` (blocking: a worker
        thread). A write that fails takes the log offline, as any I/O error of a log does
        (Kafka's too): raises KafkaStorageError."""
        try:
            write_topic_id(self.dir, topic_id)
        except OSError as exc:
            self._go_offline(exc, "writing partition.metadata to")
        self.topic_id = topic_id

    def _go_offline(self, exc: OSError, doing: str) -> None:
        reason = _storage_advice(exc, doing, self.dir)
        first = self.offline_reason is None
        self.offline_reason = reason
        self._log.error("log.offline", reason=reason, errno=exc.errno)
        if first and self.on_offline is not None:
            try:
                self.on_offline(self)
            except Exception:  # the caller must still hear of the error below
                self._log.exception("log.offline_listener_failed")
        raise KafkaStorageError(f"{self.name} is offline: {reason}") from exc


def remove_log_dir(directory: Path) -> None:
    """Remove a log's directory (blocking). A file that went meanwhile (retention's or the
    cleaner's unlink in another thread) is no error, but its ``FileNotFoundError`` must
    not end the walk with the rest still there, as one ``suppress`` around ``rmtree``
    did. Raises OSError if the directory is still there after a second try: what is left
    would come back as a log at the next start, so the caller says so."""

    def gone_meanwhile(function: object, path: str, exc_info: Any) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    for _ in range(2):  # a file made during the walk (ENOTEMPTY at the end): once more
        try:
            shutil.rmtree(directory, onerror=gone_meanwhile)
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
        if not directory.exists():
            return
    raise OSError(errno.ENOTEMPTY, f"{directory} is still there after two removals")


def _fsync_all(
    segments: list[LogSegment],
    epochs: LeaderEpochCache | None = None,
    aborted: AbortedTransactions | None = None,
) -> None:
    for segment in segments:
        segment.flush()
    if epochs is not None:
        epochs.flush()
    if aborted is not None:
        aborted.flush()


def _storage_advice(exc: OSError, doing: str, directory: Path) -> str:
    where = f"{doing} {directory}"
    if exc.errno == errno.ENOSPC:
        return (
            f"no space left on the device while {where}; free space on that disk, then "
            f"restart the broker (data already written stays readable)"
        )
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return (
            f"too many open files while {where}: each partition keeps about three open; "
            f"raise the broker's limit (ulimit -n, or LimitNOFILE= in its systemd unit) "
            f"above three per partition plus connections, then restart the broker"
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"the log directory is not writable ({os.strerror(exc.errno)}) while "
            f"{where}; fix its mount or permissions, then restart the broker"
        )
    return f"{exc.strerror or exc} while {where}; check the disk, then restart the broker"


def _producer_batch(
    header: BatchHeader, base_offset: int, appended_ms: int, marker: EndTxnMarker | None = None
) -> ProducerBatch:
    """The producer fields of a batch; ``marker``: what a control batch holds."""
    if marker is not None:
        committed, coordinator_epoch = marker
        marker_type, is_transactional = int(committed), True
    else:
        marker_type, coordinator_epoch, is_transactional = (
            NO_MARKER,
            -1,
            header.is_transactional,
        )
    return ProducerBatch(
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        header.record_count,
        base_offset,
        base_offset + header.last_offset_delta,
        appended_ms,
        is_transactional,
        marker_type,
        coordinator_epoch,
    )
