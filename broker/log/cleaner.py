"""The log cleaner: compaction of the logs whose ``cleanup.policy`` includes ``compact``
(Kafka's LogCleaner, Cleaner, SkimpyOffsetMap and LogCleanerManager).

What a cleaned log keeps, offsets unchanged:

- for every key, its latest record;
- a tombstone (a key with a null value) until ``delete.retention.ms`` after the round that
  first cleaned it: that round stamps the time into its batch (KIP-534, see
  :mod:`protocol.records.compaction`), a round after it drops the tombstone;
- no record of an aborted transaction: its batches go as batches emptied by cleaning do,
  and never count as their key's latest;
- a transaction marker (COMMIT or ABORT) while a batch of its transaction is left, or it is
  its producer's last batch, or a producer snapshot a reload could start from is older
  than it (that replay would need it to end the transaction). Past all three, as a
  tombstone: the round that first finds it so stamps a delete horizon into it (KIP-534),
  a round after ``delete.retention.ms`` drops it, and the swap drops its aborted-index
  entry (a load after a crash between the two checks the index against the markers, see
  :meth:`Log.drop_aborted`). Kafka's cleaner removes markers alike;
- records without a key: Kafka refuses them at produce time and drops them here; this
  broker does not check keys on produce (that would decode every record), so it keeps them;
- of every batch, its header: a batch keeps its base offset, last offset delta, leader
  epoch and producer id / epoch / base sequence, and a batch emptied by cleaning is still
  written (as a bare header) if it is its producer's last batch (the idempotence checks
  need its sequence numbers) or the last batch of a cleaned segment (so the segment ends
  where it ended: the log end after a truncation into it, and the crash recovery of a swap,
  rely on that).

A round cleans one log, the dirtiest one whose dirty ratio (bytes after the checkpoint /
bytes of the non-active segments) is over ``min.cleanable.dirty.ratio``, or which holds a
record older than ``max.compaction.lag.ms`` not yet cleaned:

1. Plan (event loop): the first dirty offset (the checkpoint) and the first uncleanable
   one: the lowest of the active segment's base offset, the last stable offset (records
   above the high watermark may yet be truncated, those of a transaction still open may
   yet be aborted), and the base offset of
   the first dirty segment holding a record newer than ``min.compaction.lag.ms``; a
   snapshot of the segments with duplicated file descriptors (the worker's own, so closing
   or deleting the log cannot hand it someone else's file); the producers' last offsets.
2. Map (worker thread): key -> latest offset over the dirty records, in an
   :class:`OffsetMap` of at most ``log.cleaner.dedupe.buffer.size`` / threads bytes. A
   full map ends the round's reach (``end``) there; the next round goes on from it.
3. Clean (worker thread, one group of consecutive segments at a time, each group at most
   ``segment.bytes``): every batch below ``end`` is copied as it is, rebuilt with the
   records it keeps, reduced to its header, or dropped, into ``<base>.*.cleaned`` files,
   which are fsynced.
4. Swap (event loop, no await inside): re-check that the log had no truncation since the
   plan and that the group's segments are still this log's, unchanged and not active (a
   truncation, a retention run, a deletion, all invalidate the group: its files are dropped
   and the round ends), then :meth:`Log.replace_segments`, crash-safe as
   :mod:`broker.log.swap` describes.
5. Checkpoint ``end``, unless the log was truncated since the plan.

A truncation aborts the round in progress on its log (Kafka's abortAndPauseCleaning in
LogManager.truncateTo): segments' identity and size are not enough to tell, since a
follower may cut into a group's segment, take the new leader's batches of the same sizes
and roll, all while the worker runs. Each :class:`Log` counts its truncations; a round
records the count when it plans, the worker and the swap compare it.

On disk, beside the partition directories of each log directory, Kafka's
``cleaner-offset-checkpoint`` (the text format of the other checkpoints): per partition, the
first offset not yet cleaned. A truncation below it pulls it back at once (the log
manager tells the cleaner before the log is cut; the file is rewritten right after, not
at the next round: Kafka's maybeTruncateCheckpoint).

Concurrency: the plan, the swap, the checkpoints and every read of a Log's state happen on
the event loop; the worker threads (``log.cleaner.threads``) only read the snapshot's
descriptors and write their own ``.cleaned`` files. A worker checks between batches whether
its round was cancelled (broker stopping) or its log closed, and yields the GIL there, so
the event loop is never held for more than a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import struct
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import structlog

from broker.log.aborted import collect
from broker.log.config import LogConfig
from broker.log.log import Clock, Log, wall_clock_ms
from broker.log.manager import (
    LogManager,
    TopicPartition,
    read_checkpoint,
    render_checkpoint,
    unlink_all,
    write_atomically,
)
from broker.log.segment import BatchInfo, LogSegment
from broker.log.swap import CLEANED, discard
from broker.metrics import Sample, gauge
from protocol.errors import HeadwaterError
from protocol.records import Record, decode_batches, read_header, verify_crc
from protocol.records.batch import HEADER, HEADER_SIZE, LOG_OVERHEAD, BatchHeader
from protocol.records.compaction import delete_horizon_ms, empty_batch, retained_batch
from protocol.records.control import AbortedFilter

__all__ = ["CHECKPOINT", "CleanerConfig", "CleanerStats", "LogCleaner", "OffsetMap"]

CHECKPOINT = "cleaner-offset-checkpoint"
_NO_LIMIT = 2**63 - 1
_T = TypeVar("_T")

_MAX_DIRTY = gauge(
    "headwater_log_cleaner_max_dirty_percent",
    "Dirty share of the dirtiest compacted log, as the cleaner last saw it (Kafka's "
    "max-dirty-percent).",
)
_RECOPY = gauge(
    "headwater_log_cleaner_recopy_percent",
    "Bytes written / bytes read by the last cleaning round (Kafka's cleaner-recopy-percent).",
)
_SINCE_RUN = gauge(
    "headwater_log_cleaner_time_since_last_run_ms",
    "Time since the cleaner last looked for a log to clean.",
)


@dataclass(frozen=True, slots=True)
class CleanerConfig:
    """The broker's ``log.cleaner.*`` settings (Kafka's names and defaults)."""

    enable: bool = True
    threads: int = 1
    dedupe_buffer_size: int = 128 * 1024 * 1024
    backoff_ms: int = 15_000

    @property
    def map_bytes(self) -> int:
        """Each thread's share of the dedupe buffer."""
        return self.dedupe_buffer_size // max(self.threads, 1)


# --- the offset map ----------------------------------------------------------------------

_ENTRY = 24  # 16-byte MD5 of the key, 8-byte offset
_DIGEST = 16
_LOAD_FACTOR = 0.9  # Kafka's log.cleaner.io.buffer.load.factor
_PROBES = _DIGEST - 3  # 4-byte windows of the digest tried before probing linearly
_EMPTY = bytes(_DIGEST)
_OFFSET = struct.Struct(">q")


class OffsetMap:
    """Key -> offset, in a fixed table of 24-byte slots (Kafka's SkimpyOffsetMap).

    A slot is the key's MD5 (16 bytes) and an offset (i64); a slot of zeros is free. The
    key itself is never kept, so memory is ``slots * 24`` bytes however large keys are; two
    keys with one MD5 would count as one, a risk Kafka takes too. The map is full at 90% of
    its slots. Used by one worker thread at a time.
    """

    def __init__(self, memory_bytes: int) -> None:
        self.slots = max(memory_bytes // _ENTRY, 2)
        self.capacity = max(int(self.slots * _LOAD_FACTOR), 1)
        self.size = 0
        self._table = bytearray(self.slots * _ENTRY)

    @classmethod
    def for_keys(cls, keys: int, memory_bytes: int) -> OffsetMap:
        """A map for at most ``keys`` keys, no larger than ``memory_bytes``."""
        wanted = (int(keys / _LOAD_FACTOR) + 2) * _ENTRY
        return cls(min(wanted, memory_bytes))

    def put(self, key: bytes, offset: int) -> bool:
        """Record ``offset`` as the key's latest; False (nothing changed) if the key is new
        and the map is full."""
        digest = hashlib.md5(key, usedforsecurity=False).digest()
        position, found = self._slot(digest)
        if not found:
            if self.size >= self.capacity:
                return False
            self._table[position : position + _DIGEST] = digest
            self.size += 1
        _OFFSET.pack_into(self._table, position + _DIGEST, offset)
        return True

    def get(self, key: bytes) -> int:
        """The key's latest offset, or -1 if the map does not hold it."""
        digest = hashlib.md5(key, usedforsecurity=False).digest()
        position, found = self._slot(digest)
        if not found:
            return -1
        offset: int = _OFFSET.unpack_from(self._table, position + _DIGEST)[0]
        return offset

    def _slot(self, digest: bytes) -> tuple[int, bool]:
        """Where ``digest`` is (True), or the free slot where it would go (False)."""
        table, slots = self._table, self.slots
        slot = 0
        for attempt in range(_PROBES):
            slot = int.from_bytes(digest[attempt : attempt + 4], "big") % slots
            stored = table[slot * _ENTRY : slot * _ENTRY + _DIGEST]
            if stored in (digest, _EMPTY):
                return slot * _ENTRY, stored == digest
        while True:  # a free slot exists: size < capacity < slots
            slot = (slot + 1) % slots
            stored = table[slot * _ENTRY : slot * _ENTRY + _DIGEST]
            if stored in (digest, _EMPTY):
                return slot * _ENTRY, stored == digest


# --- one round -----------------------------------------------------------------------------


class _Aborted(Exception):
    """The round was cancelled (broker stopping) or its log closed."""


@dataclass(slots=True)
class CleanerStats:
    """What one round did (Kafka's CleanerStats, the parts this broker reports)."""

    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    keys_mapped: int = 0
    groups: int = 0
    markers_removed: int = 0
    started: float = field(default_factory=time.monotonic)


class _SegmentView(NamedTuple):
    segment: LogSegment  # identity, for the swap's re-check
    base: int
    size: int
    fd: int  # a duplicate owned by the round


@dataclass(slots=True)
class _Round:
    tp: TopicPartition
    log: Log
    config: LogConfig
    first_dirty: int
    uncleanable: int
    start_position: int  # of first_dirty in its segment, from the offset index
    views: list[_SegmentView]
    now: int
    producer_last: dict[int, int]  # producer id -> last offset of its last batch
    bare_epochs: dict[int, int]  # producer id -> epoch, of the producers with no batch
    aborted: list[tuple[int, int, int, int]]  # the log's aborted transactions when planned
    truncations: int  # the log's count when planned: any other value voids the round
    marker_bound: int
    """Markers below this may go: the oldest producer snapshot a load could start from
    (the log end if none; see :func:`_oldest_loadable_snapshot`)."""
    open_txns: dict[int, bool] = field(default_factory=dict)
    """Producer id -> whether a batch of its transaction not yet ended by a marker was
    kept, over the round's groups in order."""
    removed_markers: list[int] = field(default_factory=list)
    """Offsets of the markers the group being cleaned dropped."""
    stats: CleanerStats = field(default_factory=CleanerStats)
    cancelled: bool = False

    @property
    def truncated(self) -> bool:
        return self.log.truncations != self.truncations

    def check(self) -> None:
        """Between batches (worker): stop if asked, and let the event loop run."""
        if self.cancelled or self.truncated or not self.log.segments:
            raise _Aborted(self.tp)
        time.sleep(0)  # releases the GIL: the loop thread, if it waits, goes first

    def close(self) -> None:
        for view in self.views:
            os.close(view.fd)
        self.views = []

    def dirty_views(self) -> Iterator[tuple[_SegmentView, int]]:
        """(segment, start position) of the segments holding dirty offsets."""
        for i, view in enumerate(self.views):
            following = self.views[i + 1].base if i + 1 < len(self.views) else self.uncleanable
            if following <= self.first_dirty:
                continue
            yield view, self.start_position if view.base <= self.first_dirty else 0


def _batches(view: _SegmentView, position: int = 0) -> Iterator[tuple[BatchHeader, bytes]]:
    """Every batch of the segment from ``position``: header and bytes, CRC checked (a
    damaged batch must not come out of cleaning with a fresh, valid CRC)."""
    while position < view.size:
        prefix = _pread(view, LOG_OVERHEAD, position)
        length = int.from_bytes(prefix[8:12], "big", signed=True)
        data = _pread(view, LOG_OVERHEAD + max(length, 0), position)
        header = read_header(data)
        verify_crc(data, header)
        yield header, data
        position += header.size


def _headers(view: _SegmentView, position: int) -> Iterator[BatchHeader]:
    while position + HEADER_SIZE <= view.size:
        header = BatchHeader(0, *HEADER.unpack_from(_pread(view, HEADER_SIZE, position)))
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
            return  # damaged: the full read of the batches says so
        yield header
        position += header.size


def _pread(view: _SegmentView, size: int, position: int) -> bytes:
    """Bytes the snapshot says are there; fewer means the log was cut back meanwhile (the
    descriptor is ours, the file is not): the round is over."""
    data = os.pread(view.fd, min(size, view.size - position), position)
    if len(data) < min(size, view.size - position):
        raise _Aborted(f"{view.segment.log_path.name} was truncated")
    return data


def _records(header: BatchHeader, data: bytes) -> list[Record]:
    (batch,) = decode_batches(data, verify_crc=False)
    return batch.records


def build_offset_map(job: _Round, memory_bytes: int) -> tuple[OffsetMap, int]:
    """Worker: the map of the dirty records' keys, and ``end``: where it stops (exclusive)."""
    dirty = list(job.dirty_views())
    keys = sum(h.record_count for view, start in dirty for h in _headers(view, start))
    offset_map = OffsetMap.for_keys(keys, memory_bytes)
    # an aborted transaction's records never count as a key's latest: a read_committed
    # reader would then find neither them nor the committed record they replaced
    committed = AbortedFilter(collect(job.aborted, job.first_dirty, job.uncleanable))
    for view, start in dirty:
        for header, data in _batches(view, start):
            job.check()
            if header.base_offset >= job.uncleanable:
                return offset_map, job.uncleanable
            if not committed.keep(header) or header.last_offset < job.first_dirty:
                continue
            stop = _map_batch(job, offset_map, _records(header, data))
            if stop is not None:
                return offset_map, stop
    return offset_map, job.uncleanable


def _map_batch(job: _Round, offset_map: OffsetMap, records: list[Record]) -> int | None:
    """Put the batch's dirty keys; the offset the map stops at, if it does."""
    for record in records:
        if record.offset >= job.uncleanable:
            return job.uncleanable
        if record.offset < job.first_dirty or record.key is None:
            continue
        if not offset_map.put(record.key, record.offset):
            return record.offset  # full: this record and what follows wait for next round
        job.stats.keys_mapped += 1
    return None


def group_segments(job: _Round, end: int) -> list[list[_SegmentView]]:
    """The segments below ``end`` in groups, each group one cleaned segment: at most
    ``segment.bytes``, index entries that fit, offsets within 2^31 of the base (Kafka's
    groupSegmentsBySize)."""
    views = [v for v in job.views if v.base < end]
    cfg = job.config
    max_entries = cfg.segment_index_bytes // 12 - 2  # the time index's 12-byte entries
    groups: list[list[_SegmentView]] = []
    size = 0
    for i, view in enumerate(views):
        following = views[i + 1].base if i + 1 < len(views) else end
        if groups and _fits(groups[-1][0].base, size + view.size, following, cfg, max_entries):
            groups[-1].append(view)
            size += view.size
        else:
            groups.append([view])
            size = view.size
    return groups


def _fits(base: int, size: int, following: int, cfg: LogConfig, max_entries: int) -> bool:
    entries = size // max(cfg.index_interval_bytes, 1) + 2
    return size <= cfg.segment_bytes and entries <= max_entries and following - base < 2**31


def clean_group(job: _Round, group: list[_SegmentView], offset_map: OffsetMap, end: int) -> None:
    """Worker: write the group's cleaned segment as ``<base>.*.cleaned``, fsynced."""
    cfg = job.config
    cleaned = LogSegment(
        job.log.dir,
        group[0].base,
        index_interval_bytes=cfg.index_interval_bytes,
        max_index_bytes=cfg.segment_index_bytes,
        created_ms=job.now,
        suffix=CLEANED,
    )
    try:
        cleaned.make_active()
        batches = (batch for view in group for batch in _batches(view))
        committed = AbortedFilter(collect(job.aborted, group[0].base, end))
        for (header, data), last in _with_last(batches):
            job.check()
            aborted = not committed.keep(header) and not header.is_control
            out = _filter_batch(job, offset_map, end, header, data, last=last, aborted=aborted)
            if header.is_transactional and not header.is_control and header.producer_id >= 0:
                pid = header.producer_id
                job.open_txns[pid] = job.open_txns.get(pid, False) or out is not None
            if out is not None:
                max_ts = read_header(out).max_timestamp
                info = BatchInfo(header.base_offset, header.last_offset, max_ts, len(out))
                cleaned.append([out], [info])
        cleaned.on_roll()
        cleaned.flush()
    except BaseException:
        cleaned.close()
        discard(job.log.dir, group[0].base)
        raise
    cleaned.close()
    job.stats.groups += 1


def _with_last(items: Iterable[_T]) -> Iterator[tuple[_T, bool]]:
    iterator = iter(items)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous, False
        previous = item
    yield previous, True


def _filter_batch(
    job: _Round,
    offset_map: OffsetMap,
    end: int,
    header: BatchHeader,
    data: bytes,
    *,
    last: bool,
    aborted: bool = False,
) -> bytes | None:
    """The batch as the cleaned log keeps it, or None if it goes (Kafka's filterTo).
    ``aborted``: it belongs to an aborted transaction, and goes as a batch emptied by
    cleaning does."""
    job.stats.bytes_read += header.size
    job.stats.records_read += header.record_count
    if header.is_control:
        out: bytes | None = _filter_marker(job, end, header, data, last=last)
    elif aborted and header.last_offset < end:
        out = _emptied(job, header, data, last=last)
    else:
        out = _filter_records(job, offset_map, end, header, data, last=last)
    if out is not None:
        job.stats.bytes_written += len(out)
    return out


def _filter_marker(
    job: _Round, end: int, header: BatchHeader, data: bytes, *, last: bool
) -> bytes | None:
    """A transaction marker as the cleaned log keeps it (Kafka's onControlBatchRead and
    its delete horizon). It stays while it is needed:

    - a batch of its transaction was kept (a reader needs the ABORT to end the aborted
      range, and a replica replaying the log needs either marker to end the transaction);
    - it is its producer's last batch (the idempotence state of a replica that replays the
      log from its start): a producer known with no batch left (a coordinator's abort
      bumped its epoch) keeps its markers of that epoch, as Kafka's
      isBatchLastRecordOfProducer;
    - a loadable producer snapshot is older (its replay would find the transaction open);
    - it is the last batch of its cleaned segment (which keeps where the segment ends), or
      past the map's reach this round.

    Past those it is stamped with a delete horizon, and dropped by a round after it, so a
    replica that fetched the transaction's records has ``delete.retention.ms`` to fetch
    the marker too."""
    pid = header.producer_id
    kept = job.open_txns.pop(pid, False)
    if (
        kept
        or last
        or pid < 0
        or header.record_count == 0
        or header.last_offset >= min(end, job.marker_bound)
        or job.producer_last.get(pid) == header.last_offset
        or job.bare_epochs.get(pid) == header.producer_epoch
    ):
        return data
    horizon = delete_horizon_ms(header)
    if horizon is None:
        horizon = job.now + job.config.delete_retention_ms
        return retained_batch(header, _records(header, data), delete_horizon=horizon)
    if job.now < horizon:
        return data
    job.removed_markers.append(header.last_offset)
    job.stats.markers_removed += 1
    return None


def _filter_records(
    job: _Round, offset_map: OffsetMap, end: int, header: BatchHeader, data: bytes, *, last: bool
) -> bytes | None:
    records = _records(header, data)
    horizon = delete_horizon_ms(header)
    kept = [r for r in records if _keeps(job, offset_map, end, horizon, r)]
    job.stats.records_kept += len(kept)
    tombstones = any(r.value is None for r in kept)
    if kept and len(kept) == len(records) and (horizon is not None or not tombstones):
        return data  # nothing to change: the original bytes, CRC and compression
    if kept:
        if horizon is None and tombstones:
            horizon = job.now + job.config.delete_retention_ms
        return retained_batch(header, kept, delete_horizon=horizon)
    return _emptied(job, header, data, last=last)


def _emptied(job: _Round, header: BatchHeader, data: bytes, *, last: bool) -> bytes | None:
    """A batch none of whose records stay: gone, or a bare header where one must stay."""
    producers_last = header.producer_id >= 0 and (
        job.producer_last.get(header.producer_id) == header.last_offset
    )
    if last or producers_last:
        return data if header.record_count == 0 else empty_batch(header)
    return None


def _keeps(job: _Round, offset_map: OffsetMap, end: int, horizon: int | None, r: Record) -> bool:
    """Kafka's shouldRetainRecord (but a record without a key stays, see above)."""
    if r.offset >= end or r.key is None:
        return True  # beyond the map's reach this round
    if r.offset < offset_map.get(r.key):
        return False  # a newer record of the key is in the dirty part
    return r.value is not None or horizon is None or job.now < horizon


# --- the cleaner --------------------------------------------------------------------------


class _Offsets(NamedTuple):
    first_dirty: int
    uncleanable: int
    clean_bytes: int
    dirty_bytes: int
    compaction_delay_ms: int

    @property
    def ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


class LogCleaner:
    """Cleans the compacted logs of a :class:`LogManager`. ``start()``, ``await stop()``;
    tests drive rounds with :meth:`clean_once`. See the module docstring."""

    def __init__(
        self,
        logs: LogManager,
        config: CleanerConfig | None = None,
        *,
        cleanable_end: Callable[[TopicPartition], int] | None = None,
        config_ready: Callable[[TopicPartition], bool] | None = None,
        clock: Clock = wall_clock_ms,
    ) -> None:
        """``cleanable_end``: the high watermark of a partition (nothing at or above it is
        cleaned); None: up to the active segment (tests). ``config_ready``: False for a
        partition whose topic config is not read yet (its log has the broker's defaults,
        not its topic's policy): it is left alone until it is; None: every one is."""
        self._logs = logs
        self.config = config or CleanerConfig()
        self._cleanable_end = cleanable_end
        self._config_ready = config_ready
        self._clock = clock
        self.checkpoints: dict[TopicPartition, int] = {}
        self._owner: dict[TopicPartition, Log] = {}  # the Log a checkpoint belongs to
        self._in_progress: dict[TopicPartition, _Round] = {}
        self._uncleanable: dict[TopicPartition, Log] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._checkpoint_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.max_dirty_ratio = 0.0
        self.last_stats: CleanerStats | None = None
        self.last_run_ms = clock()
        self._log = structlog.get_logger("headwater.log_cleaner").bind(broker_id=logs.broker_id)
        self.load_checkpoints()
        logs.on_truncation(self._on_truncation)

    # --- life cycle ---------------------------------------------------------------------

    def load_checkpoints(self) -> None:
        for directory in self._logs.dirs:
            self.checkpoints.update(read_checkpoint(directory / CHECKPOINT))

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"log-cleaner-{i}")
            for i in range(self.config.threads)
        ]
        self._log.info("log_cleaner.started", threads=self.config.threads)

    async def stop(self) -> None:
        """Abort the rounds in progress (their cleaned files go), wait for the threads."""
        self._stopping = True
        self._logs.remove_truncation_listener(self._on_truncation)
        for job in self._in_progress.values():
            job.cancelled = True
        await asyncio.gather(*self._writes, return_exceptions=True)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                cleaned = await self.clean_once()
            except Exception:
                self._log.exception("log_cleaner.failed")
                cleaned = False
            if not cleaned:
                await asyncio.sleep(self.config.backoff_ms / 1000)

    # --- a round ------------------------------------------------------------------------

    async def clean_once(self) -> bool:
        """Clean the filthiest log that is due, if any; True if a round ran."""
        await self._delete_pending()
        job = self._grab_filthiest()
        if job is None:
            return False
        try:
            await self._clean(job)
        except _Aborted:
            self._log.info("log_cleaner.aborted", log=job.log.name)
        except Exception as exc:  # corrupt data, a full disk, a bug: this log only
            if self._still_there(job, job.views):
                # Kafka marks such a partition uncleanable and goes on with the others
                self._uncleanable[job.tp] = job.log
                self._log.error("log_cleaner.uncleanable", log=job.log.name, error=repr(exc))
            else:  # what the worker read changed under it (a truncation and new appends)
                self._log.info("log_cleaner.aborted", log=job.log.name, error=repr(exc))
        finally:
            job.close()
            del self._in_progress[job.tp]
            if self._logs.logs.get(job.tp) is not job.log:
                with contextlib.suppress(OSError):  # deleted meanwhile: no stray directory
                    job.log.dir.rmdir()
        return True

    async def _clean(self, job: _Round) -> None:
        offset_map, end = await self._in_worker(build_offset_map, job, self.config.map_bytes)
        for group in group_segments(job, end):
            job.removed_markers = []
            await self._in_worker(clean_group, job, group, offset_map, end)
            if not self._swap(job, group):  # the log changed while the worker ran
                return
            if job.removed_markers:  # in the swap's loop pass: no read sees one without the other
                job.log.drop_aborted(job.removed_markers)
        if not self._current(job):  # truncated after the last swap (or with no group)
            return
        self.checkpoints[job.tp] = end
        self._owner[job.tp] = job.log
        self._done(job, end)
        await self._write_checkpoints()

    async def _in_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max(self.config.threads, 1), thread_name_prefix="log-cleaner"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _swap(self, job: _Round, group: list[_SegmentView]) -> bool:
        """Swap the group's cleaned segment in, if the log still has the group as it was."""
        if not self._still_there(job, group):
            discard(job.log.dir, group[0].base)
            self._log.info("log_cleaner.swap_abandoned", log=job.log.name, base=group[0].base)
            return False
        job.log.replace_segments([v.segment for v in group], group[0].base)
        return True

    def _current(self, job: _Round) -> bool:
        """The round still speaks for its log: not stopped, not truncated, not replaced."""
        log = job.log
        return not (
            job.cancelled or job.truncated or log.offline or self._logs.logs.get(job.tp) is not log
        )

    def _still_there(self, job: _Round, group: list[_SegmentView]) -> bool:
        log = job.log
        if not self._current(job) or not group:
            return False
        segments = log.segments
        i = next((i for i, s in enumerate(segments) if s is group[0].segment), None)
        if i is None or i + len(group) >= len(segments):
            return False  # gone (retention, truncation), or now the active segment
        return all(
            segments[i + k] is view.segment and view.segment.size == view.size
            for k, view in enumerate(group)
        )

    def _done(self, job: _Round, end: int) -> None:
        stats = self.last_stats = job.stats
        self._log.info(
            "log_cleaner.cleaned",
            log=job.log.name,
            first_dirty_offset=job.first_dirty,
            end_offset=end,
            groups=stats.groups,
            keys_mapped=stats.keys_mapped,
            records_read=stats.records_read,
            records_kept=stats.records_kept,
            markers_removed=stats.markers_removed,
            bytes_read=stats.bytes_read,
            bytes_written=stats.bytes_written,
            seconds=round(time.monotonic() - stats.started, 3),
        )

    # --- choosing a log -----------------------------------------------------------------

    def _grab_filthiest(self) -> _Round | None:
        now = self._clock()
        self.last_run_ms = now
        best: tuple[float, TopicPartition, Log, _Offsets] | None = None
        dirtiest = 0.0
        for tp, log in self._logs:
            if not self._eligible(tp, log):
                continue
            offsets = self._cleanable_offsets(tp, log, now)
            dirtiest = max(dirtiest, offsets.ratio)
            due = offsets.ratio > log.config.min_cleanable_dirty_ratio or (
                offsets.compaction_delay_ms > 0 and offsets.dirty_bytes > 0
            )
            if due and offsets.dirty_bytes and (best is None or offsets.ratio > best[0]):
                best = (offsets.ratio, tp, log, offsets)
        self.max_dirty_ratio = dirtiest
        if best is None:
            return None
        _, tp, log, offsets = best
        job = self._plan(tp, log, offsets, now)
        self._in_progress[tp] = job
        return job

    def _eligible(self, tp: TopicPartition, log: Log) -> bool:
        return (
            log.config.compact
            and (self._config_ready is None or self._config_ready(tp))
            and not log.offline
            and len(log.segments) > 1
            and tp not in self._in_progress
            and self._uncleanable.get(tp) is not log
        )

    def _cleanable_offsets(self, tp: TopicPartition, log: Log, now: int) -> _Offsets:
        """Kafka's cleanableOffsets and calculateCleanableBytes."""
        first_dirty = self._first_dirty(tp, log)
        uncleanable = self._first_uncleanable(tp, log, first_dirty, now)
        segments = log.segments[:-1]
        bases = [s.base_offset for s in segments]
        i = max(bisect_right(bases, first_dirty) - 1, 0)
        clean = sum(s.size for s in segments[:i])
        dirty = 0
        if first_dirty < uncleanable:
            dirty = sum(s.size for s in segments[i:] if s.base_offset < uncleanable)
        delay = _compaction_delay(log, segments[i:], now)
        return _Offsets(first_dirty, uncleanable, clean, dirty, delay)

    def _own(self, tp: TopicPartition, log: Log) -> None:
        """Tie the partition's checkpoint to ``log``: one read from the file belongs to the
        log opened at start; a new log for the partition (deleted, created again) starts
        with none."""
        if self._owner.get(tp) is not log:
            if tp in self._owner:
                self.checkpoints.pop(tp, None)
            self._owner[tp] = log

    def _first_dirty(self, tp: TopicPartition, log: Log) -> int:
        self._own(tp, log)
        checkpoint = self.checkpoints.get(tp, log.log_start_offset)
        if not log.log_start_offset <= checkpoint <= log.log_end_offset:
            checkpoint = log.log_start_offset  # Kafka: an invalid checkpoint restarts
        return checkpoint

    def _first_uncleanable(self, tp: TopicPartition, log: Log, first_dirty: int, now: int) -> int:
        limit = log.active.base_offset
        if self._cleanable_end is not None:
            limit = min(limit, self._cleanable_end(tp))
        lag = log.config.min_compaction_lag_ms
        if lag <= 0:
            return limit
        segments = log.segments
        for i, segment in enumerate(segments[:-1]):
            if segment.base_offset >= limit:
                break
            dirty = segments[i + 1].base_offset > first_dirty
            if dirty and segment.max_timestamp > now - lag:
                return segment.base_offset  # too recent to be compacted yet
        return limit

    def _plan(self, tp: TopicPartition, log: Log, offsets: _Offsets, now: int) -> _Round:
        views = [
            _SegmentView(s, s.base_offset, s.size, os.dup(s.fd))
            for s in log.segments[:-1]
            if s.base_offset < offsets.uncleanable
        ]
        i = max(bisect_right([v.base for v in views], offsets.first_dirty) - 1, 0)
        start = views[i].segment.offset_index.lookup(offsets.first_dirty)[1] if views else 0
        return _Round(
            tp,
            log,
            log.config,
            offsets.first_dirty,
            offsets.uncleanable,
            start,
            views,
            now,
            _producers_last_offsets(log),
            log.producers.epochs_without_batches(),
            log.aborted.copy(),
            log.truncations,
            _oldest_loadable_snapshot(log),
        )

    # --- checkpoints, truncations, pending deletes --------------------------------------

    def _on_truncation(self, tp: TopicPartition, log: Log, offset: int) -> None:
        """``log`` is about to be cut back to ``offset`` (event loop, from
        :meth:`Log.truncate_to`). A round on it is void already (its truncation count no
        longer matches); the checkpoint comes down now and the file follows at once (Kafka's
        maybeTruncateCheckpoint)."""
        self._own(tp, log)
        if self.checkpoints.get(tp, -1) <= offset:
            return
        self.checkpoints[tp] = offset
        self._log.info("log_cleaner.checkpoint_truncated", log=log.name, offset=offset)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool working on the files): write here and now
            _write_files(self._checkpoint_files())
            return
        task = loop.create_task(self._write_checkpoints())
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("log_cleaner.checkpoint_failed", error=repr(task.exception()))

    async def _write_checkpoints(self) -> None:
        async with self._checkpoint_lock:  # the snapshot is taken inside: newest last
            await asyncio.to_thread(_write_files, self._checkpoint_files())

    def _checkpoint_files(self) -> dict[Path, str]:
        """Each directory's checkpoint text, made here on the loop (Python work in the
        writing thread would hold the GIL the loop waits for: see broker.log.manager)."""
        offsets: dict[Path, dict[TopicPartition, int]] = {d: {} for d in self._logs.dirs}
        for tp, offset in self.checkpoints.items():
            log = self._logs.logs.get(tp)
            if log is not None and log.dir.parent in offsets:
                offsets[log.dir.parent][tp] = offset
        return {d / CHECKPOINT: render_checkpoint(o) for d, o in offsets.items()}

    async def _delete_pending(self) -> None:
        """Old segments swapped out: unlinked once file.delete.delay.ms has passed (their
        descriptors closed on the loop, the files unlinked in a worker thread)."""
        doomed: list[Path] = []
        for _, log in self._logs:
            if log.config.compact and not log.offline:
                try:
                    doomed += log.take_pending_deletes()
                except (OSError, HeadwaterError) as exc:
                    self._log.warning("log_cleaner.delete_failed", log=log.name, error=str(exc))
        if doomed:
            try:
                await asyncio.to_thread(unlink_all, doomed)
            except OSError as exc:
                self._log.warning("log_cleaner.delete_failed", error=str(exc))

    # --- metrics --------------------------------------------------------------------------

    def metrics(self) -> list[Sample]:
        stats = self.last_stats
        recopy = 100 * stats.bytes_written / stats.bytes_read if stats and stats.bytes_read else 0
        return [
            (_MAX_DIRTY, {}, int(100 * self.max_dirty_ratio)),
            (_RECOPY, {}, int(recopy)),
            (_SINCE_RUN, {}, self._clock() - self.last_run_ms),
        ]


def _compaction_delay(log: Log, dirty: list[LogSegment], now: int) -> int:
    """How long past ``max.compaction.lag.ms`` the oldest dirty record is (Kafka's
    maxCompactionDelay); 0 if none is, or the lag is unlimited."""
    lag = log.config.max_compaction_lag_ms
    if lag >= _NO_LIMIT or not dirty:
        return 0
    firsts = [t for s in dirty if (t := _first_timestamp(s)) is not None and t > 0]
    if not firsts or min(firsts) >= now - lag:
        return 0
    return now - lag - min(firsts)


def _first_timestamp(segment: LogSegment) -> int | None:
    """The first batch's base timestamp: one header read (Kafka's getFirstBatchTimestamp)."""
    for header in segment.headers(0):
        return header.base_timestamp
    return None


def _oldest_loadable_snapshot(log: Log) -> int:
    """The oldest producer snapshot at or past the log start (one below it is loaded as
    none: the replay then starts at the log start); the log end if there is none."""
    start = log.log_start_offset
    offsets = [o for o in log.producers.snapshot_offsets() if o >= start]
    return min(offsets, default=log.log_end_offset)


def _producers_last_offsets(log: Log) -> dict[int, int]:
    """Producer id -> last offset of its last batch, from the log's producer state."""
    return log.producers.last_offsets()


def _write_files(files: dict[Path, str]) -> None:
    for path, text in files.items():
        write_atomically(path, text)
