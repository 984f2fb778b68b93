"""Idempotent producers' state in one partition (Kafka's ProducerStateManager).

For every producer id seen in the log: its epoch, the metadata of its last five batches
(first and last sequence, first and last offset) and when it was last heard of. A
producer not heard from in ``producer.id.expiration.ms`` is forgotten (:meth:`expire`,
KIP-854), or the state would grow with every producer ever seen; if it comes back, its
next batch is UNKNOWN_PRODUCER_ID and the client starts over under a new id (KIP-360).
"Heard of" is this broker's clock when the batch was appended (or replayed at a load),
not the batch's own timestamp as in Kafka: a producer sending old CreateTimes (a
backfill, a slow clock) would otherwise be forgotten while it still sends, and a retry
of a written batch whose answer was lost would then be written twice.
The leader checks each batch that
carries a producer id before appending it (:meth:`ProducerState.check`):

- an epoch older than the producer's: INVALID_PRODUCER_EPOCH (an older incarnation, fenced);
- the same sequences as one of the last five batches: a retry of a batch already written
  (its answer was lost): the original offsets are returned and nothing is appended;
- otherwise the first sequence must follow the last one (wrapping after 2^31-1), or be 0
  when the epoch is new: else OUT_OF_ORDER_SEQUENCE_NUMBER;
- a producer the partition does not know whose first sequence is not 0:
  UNKNOWN_PRODUCER_ID (its state went with deleted segments; the client starts over).

Followers apply the same updates without the checks (:meth:`ProducerState.update`), so a
follower that becomes leader already knows every producer and recognises a retry that was
sent to the old leader.

On disk: at each segment roll, the state as of the new segment's base offset is written to
``<offset:020d>.snapshot`` in the partition's directory: a JSON document followed by a
line with its CRC32C, written to a temporary name and renamed (not fsynced: a torn one
fails its CRC and an older one, or a replay from the log start, takes its place); the
newest two are kept, so compacted topics, which never delete segments, do not collect
them. Opening the log
(:meth:`load`) reads the newest valid snapshot at or below the log end and replays the
batch headers after it (producer id, epoch, base sequence, offsets: O(batches), no record
is decoded). Truncation rebuilds the same way; snapshots below the log start go with their
segments. Everything here runs on the event loop; a snapshot is a few KiB at each roll.

Transactions (Kafka's ProducerStateManager again): a transactional batch of a producer
with no transaction open begins one at its base offset; the producer's transaction marker
(a control batch, :mod:`protocol.records.control`) ends it, and :meth:`ProducerState.update`
returns it as a :class:`CompletedTxn` for the log to index if it was aborted. The first
offset of every open transaction bounds the last stable offset, which read_committed
consumers read up to; so does a finished one until the high watermark passes its marker
(:meth:`ProducerState.first_unstable_offset`), or a new leader that lacks the marker
could show less than an old one did. A marker carries the epoch of the coordinator that
wrote it; one from an older coordinator is refused (TRANSACTION_COORDINATOR_FENCED). The
open transaction's first offset and that epoch are kept in the snapshots, and a producer
with a transaction open is never expired.

In memory a producer is a plain tuple of ints and tuples of ints (:data:`Producer`), not
an object: CPython's collector stops tracking such tuples, and a broker whose partitions
had each seen a few hundred producers held 100,000 objects here of the 160,000 its full
collections walked, a 90 ms stall every few seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from crc32c import crc32c

from protocol.errors import (
    InvalidProducerEpochError,
    InvalidTxnStateError,
    OutOfOrderSequenceNumberError,
    TransactionCoordinatorFencedError,
    UnknownProducerIdError,
)

__all__ = ["BatchMetadata", "CompletedTxn", "Producer", "ProducerBatch", "ProducerState"]

_KEPT_BATCHES = 5  # Kafka's NumBatchesToRetain: what a client may have in flight
_KEPT_SNAPSHOTS = 2  # older ones are never the newest valid one below a log end we load
_MAX_SEQUENCE = 2**31 - 1
_SUFFIX = ".snapshot"
_VERSION = 3  # 1 had no timestamps (read as last heard of when loaded); 2 no transactions
NO_MARKER = -1


class ProducerBatch(NamedTuple):
    """The producer fields of a batch header, with its offsets in this log."""

    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    base_offset: int
    last_offset: int
    appended_ms: int = -1
    """This broker's clock when the batch was appended or replayed (-1: a check only)."""
    is_transactional: bool = False
    marker: int = NO_MARKER
    """A transaction marker's type (protocol.records.control ABORT or COMMIT), else -1."""
    coordinator_epoch: int = -1
    """A marker's coordinator epoch."""

    @property
    def last_sequence(self) -> int:
        # by the offset delta, not the record count: compaction removes records from a
        # batch but keeps its last offset delta (Kafka's RecordBatch.lastSequence)
        return (self.base_sequence + self.last_offset - self.base_offset) % (_MAX_SEQUENCE + 1)


class BatchMetadata(NamedTuple):
    first_sequence: int
    last_sequence: int
    first_offset: int
    last_offset: int


class Producer(NamedTuple):
    """What is known of one producer (a view: see :meth:`ProducerState.producer`)."""

    epoch: int
    last_timestamp: int
    """When its newest batch was appended here (ms; -1: never)."""
    batches: tuple[BatchMetadata, ...]
    """Its last five batches, oldest first."""
    txn_first_offset: int = -1
    """The first offset of its open transaction here (-1: none open)."""
    coordinator_epoch: int = -1
    """The coordinator epoch of its last transaction marker here (-1: none yet)."""


class CompletedTxn(NamedTuple):
    """A transaction a marker ended in this partition."""

    producer_id: int
    first_offset: int
    last_offset: int
    """The marker's offset."""
    aborted: bool


# Kept as (epoch, last_timestamp, batches, txn_first_offset, coordinator_epoch), batches
# a tuple of up to five (first sequence, last sequence, first offset, last offset), oldest
# first: exact tuples of ints, which the collector untracks (a NamedTuple, a deque or a
# slotted object it walks at every full collection), replaced whole on each update.
_Batches = tuple[tuple[int, int, int, int], ...]
_Entry = tuple[int, int, _Batches, int, int]


class ProducerState:
    def __init__(self, directory: Path, partition: str) -> None:
        self.dir = directory
        self.partition = partition
        self.producers: dict[int, _Entry] = {}
        self.end_offset = 0
        """The log offset the state covers up to (exclusive)."""
        self.ongoing: dict[int, int] = {}
        """Producer id -> the first offset of its open transaction (a change marks the
        cached oldest stale: ``_oldest_known``)."""
        self._oldest: int | None = None
        self._oldest_known = True
        self.unreplicated: list[CompletedTxn] = []
        """Transactions ended by a marker the high watermark has not passed yet."""
        self._markers: dict[int, int] = {}  # never reset: see markers_seen

    # --- the checks and the updates ------------------------------------------------------

    def check(self, batch: ProducerBatch) -> BatchMetadata | None:
        """The leader's check of an idempotent batch; returns the metadata of the batch
        it duplicates (append nothing, answer with those offsets), or None to append."""
        known = self.producers.get(batch.producer_id)
        if batch.marker != NO_MARKER:
            self._check_marker(batch, known)
            return None
        if known is not None and known[3] >= 0 and not batch.is_transactional:
            raise InvalidTxnStateError(
                f"{self.partition}: producer {batch.producer_id} has a transaction open here "
                "and sent a batch outside it; commit or abort the transaction first"
            )
        first, last = batch.base_sequence, batch.last_sequence
        if known is None:
            if first != 0:
                raise UnknownProducerIdError(
                    f"{self.partition}: producer {batch.producer_id} is not known here and its "
                    f"batch starts at sequence {first}, not 0; the producer must start over"
                )
            return None
        epoch, _, batches, _, _ = known
        if batch.producer_epoch < epoch:
            raise InvalidProducerEpochError(
                f"{self.partition}: producer {batch.producer_id} epoch {batch.producer_epoch} "
                f"is older than its current epoch {epoch}: this producer was fenced"
            )
        if batch.producer_epoch > epoch:
            if first != 0:
                raise OutOfOrderSequenceNumberError(
                    f"{self.partition}: producer {batch.producer_id} epoch "
                    f"{batch.producer_epoch} must start at sequence 0, not {first}"
                )
            return None
        for kept in batches:
            if kept[0] == first and kept[1] == last:
                return BatchMetadata(*kept)  # a retry of a batch already in the log
        expected = (batches[-1][1] + 1 if batches else 0) % (_MAX_SEQUENCE + 1)
        if first != expected:
            raise OutOfOrderSequenceNumberError(
                f"{self.partition}: producer {batch.producer_id} sent sequence {first}, "
                f"expected {expected}: a batch before it was lost"
            )
        return None

    def check_epoch(self, batch: ProducerBatch) -> None:
        """A coordinator's write for a producer (a transaction's offsets): no sequence to
        check, only that the producer was not fenced since."""
        known = self.producers.get(batch.producer_id)
        if known is not None and batch.producer_epoch < known[0]:
            raise InvalidProducerEpochError(
                f"{self.partition}: producer {batch.producer_id} epoch {batch.producer_epoch} "
                f"is older than its current epoch {known[0]}: this producer was fenced"
            )

    def _check_marker(self, batch: ProducerBatch, known: _Entry | None) -> None:
        """A transaction marker the coordinator asks this leader to write (Kafka's
        appendEndTxnMarker checks)."""
        if known is None:
            return  # a transaction that wrote nothing here, or whose producer expired
        if batch.producer_epoch < known[0]:
            raise InvalidProducerEpochError(
                f"{self.partition}: a marker of producer {batch.producer_id} epoch "
                f"{batch.producer_epoch} is older than its current epoch {known[0]}"
            )
        if batch.coordinator_epoch < known[4]:
            raise TransactionCoordinatorFencedError(
                f"{self.partition}: a marker from coordinator epoch {batch.coordinator_epoch} "
                f"after one from epoch {known[4]}: a newer coordinator owns this transaction"
            )

    def update(self, batch: ProducerBatch) -> CompletedTxn | None:
        """Record a batch appended to the log (leader or follower); returns the
        transaction a marker ended."""
        pid, epoch = batch.producer_id, batch.producer_epoch
        self.end_offset = max(self.end_offset, batch.last_offset + 1)
        known = self.producers.get(pid)
        if batch.marker != NO_MARKER:
            return self._end_txn(batch, known)
        kept = (batch.base_sequence, batch.last_sequence, batch.base_offset, batch.last_offset)
        if known is None:
            txn_first = batch.base_offset if batch.is_transactional else -1
            coordinator_epoch = -1
            batches: _Batches = (kept,)
            last_timestamp = max(-1, batch.appended_ms)
        elif epoch < known[0]:
            return None  # a follower replays what an older leader wrote: the newer epoch wins
        else:
            _, last_timestamp, batches, txn_first, coordinator_epoch = known
            if epoch > known[0]:
                batches = (kept,)  # a new epoch: its sequences start over
            else:
                batches = (batches[1:] if len(batches) >= _KEPT_BATCHES else batches) + (kept,)
            last_timestamp = max(last_timestamp, batch.appended_ms)
            if batch.is_transactional and txn_first < 0:
                txn_first = batch.base_offset
        if txn_first >= 0 and self.ongoing.get(pid) != txn_first:
            self.ongoing[pid] = txn_first
            self._oldest_known = False
        self.producers[pid] = (epoch, last_timestamp, batches, txn_first, coordinator_epoch)
        return None

    def _end_txn(self, batch: ProducerBatch, known: _Entry | None) -> CompletedTxn:
        pid, offset = batch.producer_id, batch.base_offset
        batches: _Batches
        if known is None:
            epoch, last_timestamp, batches, txn_first = batch.producer_epoch, -1, (), -1
        else:
            epoch, last_timestamp, batches, txn_first, _ = known
            if batch.producer_epoch > epoch:
                epoch, batches = batch.producer_epoch, ()  # bumped by the coordinator
        self.producers[pid] = (
            epoch,
            max(last_timestamp, batch.appended_ms),
            batches,
            -1,
            batch.coordinator_epoch,
        )
        if self.ongoing.pop(pid, None) is not None:
            self._oldest_known = False
        self._markers[pid] = self._markers.get(pid, 0) + 1
        completed = CompletedTxn(
            pid, txn_first if txn_first >= 0 else offset, offset, batch.marker == 0
        )
        self.unreplicated.append(completed)
        return completed

    def first_unstable_offset(self, high_watermark: int) -> int | None:
        """The first offset a read_committed reader may not pass: that of the oldest
        transaction open, or ended by a marker at or past ``high_watermark``."""
        if not self.unreplicated and not self.ongoing:
            return None  # no transaction here: what every fetch of most logs asks
        self.on_high_watermark(high_watermark)
        first = self._oldest_ongoing()
        for txn in self.unreplicated:
            if first is None or txn.first_offset < first:
                first = txn.first_offset
        return first

    def on_high_watermark(self, high_watermark: int) -> None:
        """Transactions whose marker the high watermark passed are replicated: they no
        longer hold the last stable offset back (leaders and followers call this as
        their high watermark moves, so the list stays short)."""
        unreplicated = self.unreplicated
        if unreplicated and unreplicated[0].last_offset < high_watermark:
            self.unreplicated = [t for t in unreplicated if t.last_offset >= high_watermark]

    def stable_after(self, completed: CompletedTxn) -> int:
        """The last stable offset an ended transaction leaves (before the high watermark
        is counted): Kafka's, kept in the aborted transaction's index entry."""
        oldest = self._oldest_ongoing()
        return completed.last_offset + 1 if oldest is None else oldest

    def _oldest_ongoing(self) -> int | None:
        """The first offset of the oldest open transaction, recomputed only after the set
        of open ones changed (not per fetch: hundreds of transactional producers on a
        partition would make every read_committed fetch scan them)."""
        if not self._oldest_known:
            self._oldest = min(self.ongoing.values()) if self.ongoing else None
            self._oldest_known = True
        return self._oldest

    def producer(self, producer_id: int) -> Producer | None:
        known = self.producers.get(producer_id)
        if known is None:
            return None
        epoch, last_timestamp, batches, txn_first, coordinator_epoch = known
        return Producer(
            epoch,
            last_timestamp,
            tuple(BatchMetadata(*b) for b in batches),
            txn_first,
            coordinator_epoch,
        )

    def last_offsets(self) -> dict[int, int]:
        """Producer id -> the last offset of its last batch."""
        return {pid: p[2][-1][3] for pid, p in self.producers.items() if p[2]}

    def markers_seen(self, producer_id: int) -> int:
        """How many markers of the producer this state has taken (a count that only grows,
        also over a reload, which replays markers again): a partition leader that verified
        a transactional batch with the coordinator (KIP-890) appends it only if no marker
        came meanwhile. Kept when the producer expires (one int per transactional
        producer: only those get markers)."""
        return self._markers.get(producer_id, 0)

    def epochs_without_batches(self) -> dict[int, int]:
        """Producer id -> epoch, of the producers known with no batch (a marker that bumped
        the epoch, as a coordinator's abort does, left them so)."""
        return {pid: p[0] for pid, p in self.producers.items() if not p[2]}

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        """Forget the producers last heard of ``expiration_ms`` ago or longer; returns how
        many."""
        expired = [
            pid
            for pid, p in self.producers.items()
            if now_ms - p[1] >= expiration_ms and p[3] < 0  # never one mid-transaction
        ]
        for pid in expired:
            del self.producers[pid]  # its marker count stays: see markers_seen
        return len(expired)

    def replay(
        self,
        batches: Iterable[ProducerBatch],
        end_offset: int,
        on_abort: Callable[[CompletedTxn], None] | None = None,
    ) -> None:
        """Apply the batches of the log from :attr:`end_offset` on; ``on_abort`` is handed
        each aborted transaction a marker among them ends."""
        for batch in batches:
            if batch.producer_id >= 0 and batch.base_offset >= self.end_offset:
                completed = self.update(batch)
                if completed is not None and completed.aborted and on_abort is not None:
                    on_abort(completed)
        self.end_offset = max(self.end_offset, end_offset)

    def clear(self, offset: int) -> None:
        self.producers.clear()
        self.ongoing.clear()
        self._oldest_known = False
        self.unreplicated.clear()
        self.end_offset = offset

    # --- snapshots ------------------------------------------------------------------------

    def snapshot_path(self, offset: int) -> Path:
        return self.dir / f"{offset:020d}{_SUFFIX}"

    def snapshot_offsets(self) -> list[int]:
        return sorted(int(p.name[: -len(_SUFFIX)]) for p in self.dir.glob(f"*{_SUFFIX}"))

    def take_snapshot(self, *, prune: bool = True, keep_at_or_below: int = -1) -> None:
        """Write the state as of :attr:`end_offset` (at a segment roll, and at a clean
        close with ``prune`` False: the newest two a roll keeps are what a truncation
        falls back on, and two closes in one segment must not push them out).

        Pruning also keeps the newest snapshot at or below ``keep_at_or_below`` (the
        log's recovery point): after a crash the load starts from one there (see
        :meth:`load`), and without it, a log rolled twice since its last flush would
        replay every header from its start.

        Version 2 is written while no producer has transaction state, so a build before
        transactions (which reads 1 and 2, and deletes what it cannot read) still starts
        from these snapshots after a downgrade."""
        transactional = any(e[3] >= 0 or e[4] >= 0 for e in self.producers.values())
        producers: list[list[object]] = [
            [pid, epoch, last_timestamp, [list(b) for b in batches], txn_first, coord_epoch]
            if transactional
            else [pid, epoch, last_timestamp, [list(b) for b in batches]]
            for pid, (epoch, last_timestamp, batches, txn_first, coord_epoch) in (
                self.producers.items()
            )
        ]
        document = {
            "version": _VERSION if transactional else 2,
            "end_offset": self.end_offset,
            "producers": producers,
        }
        body = json.dumps(document, separators=(",", ":")).encode()
        path = self.snapshot_path(self.end_offset)
        temporary = path.with_suffix(".snapshot.tmp")
        # no fsync on the event loop: a snapshot only saves replaying headers, and one a
        # crash tore fails its CRC and is passed over for an older one or a full replay
        temporary.write_bytes(body + b"\n" + str(crc32c(body)).encode() + b"\n")
        os.replace(temporary, path)
        if not prune:
            return
        offsets = self.snapshot_offsets()
        anchor = max((o for o in offsets if o <= keep_at_or_below), default=None)
        for old in offsets[:-_KEPT_SNAPSHOTS]:
            if old != anchor:
                self.snapshot_path(old).unlink(missing_ok=True)

    def load(self, log_start_offset: int, log_end_offset: int, at_most: int | None = None) -> int:
        """The newest valid snapshot at or below the log end (and ``at_most``: after an
        unclean stop, the recovery point, so the replay rebuilds what the aborted index
        may have lost), loaded; returns the offset the caller must replay the log from.
        Snapshots above the end (a truncated tail) or unreadable ones are deleted.

        A snapshot older than the log start still holds the producers whose batches
        retention removed (Kafka keeps them too), but not their open transactions: the
        replay starts at the log start, so a marker between the two would be missed and
        the transaction held open for good. A transaction still open has its next batch
        at or after the log start, and begins there again."""
        self.clear(log_start_offset)
        for leftover in self.dir.glob(f"*{_SUFFIX}.tmp"):  # a crash mid-write
            leftover.unlink(missing_ok=True)
        for offset in reversed(self.snapshot_offsets()):
            if at_most is not None and log_start_offset < offset and at_most < offset:
                continue  # newer than we may trust, but not wrong: kept
            path = self.snapshot_path(offset)
            if offset > log_end_offset or not self._read(path):
                path.unlink(missing_ok=True)
                self.clear(log_start_offset)
                continue
            if offset < log_start_offset:
                self._forget_transactions()
            self.end_offset = max(self.end_offset, log_start_offset)
            return self.end_offset
        return log_start_offset

    def _forget_transactions(self) -> None:
        self.ongoing.clear()
        self._oldest_known = False
        self.producers = {
            pid: (epoch, ts, batches, -1, coordinator_epoch)
            for pid, (epoch, ts, batches, _, coordinator_epoch) in self.producers.items()
        }

    def _read(self, path: Path) -> bool:
        try:
            body, checksum, _ = path.read_bytes().split(b"\n")
            if int(checksum) != crc32c(body):
                return False
            document = json.loads(body)
            version = document["version"]
            if version not in (1, 2, _VERSION):
                return False
            loaded_ms = time.time_ns() // 1_000_000
            producers: dict[int, _Entry] = {}
            ongoing: dict[int, int] = {}
            for fields in document["producers"]:
                txn_first, coord_epoch = -1, -1
                if version == 1:
                    (pid, epoch, batches), last_timestamp = fields, loaded_ms
                elif version == 2:
                    pid, epoch, last_timestamp, batches = fields
                else:
                    pid, epoch, last_timestamp, batches, txn_first, coord_epoch = fields
                kept = tuple(_batch(b) for b in batches[-_KEPT_BATCHES:])
                entry = (int(epoch), int(last_timestamp), kept, int(txn_first), int(coord_epoch))
                producers[int(pid)] = entry
                if entry[3] >= 0:
                    ongoing[int(pid)] = entry[3]
            self.producers = producers
            self.ongoing = ongoing
            self._oldest_known = False
            self.unreplicated = []
            self.end_offset = int(document["end_offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True

    def delete_snapshots_below(self, offset: int) -> None:
        """Segments below ``offset`` are gone; keep the newest snapshot at or below it."""
        below = [o for o in self.snapshot_offsets() if o < offset]
        for old in below[:-1]:
            self.snapshot_path(old).unlink(missing_ok=True)

    def forget_snapshot_transactions(self, since: int, below: int) -> None:
        """The log start moved from ``since`` to ``below``: the snapshots it passed lose
        their open transactions, on disk. A load from one of them forgets those anyway
        (see :meth:`load`), but only when it knows the new log start: after a crash the
        checkpointed one may be older, and then a transaction whose marker compaction has
        removed since would stay open for good."""
        for offset in self.snapshot_offsets():
            if since <= offset < below:
                self._rewrite_without_transactions(self.snapshot_path(offset))

    def _rewrite_without_transactions(self, path: Path) -> None:
        try:
            body, checksum, _ = path.read_bytes().split(b"\n")
            if int(checksum) != crc32c(body):
                return  # passed over at load anyway
            document = json.loads(body)
            if document["version"] != _VERSION:
                return
            producers = document["producers"]
            if not any(fields[4] >= 0 for fields in producers):
                return
            for fields in producers:
                fields[4] = -1
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return
        body = json.dumps(document, separators=(",", ":")).encode()
        temporary = path.with_suffix(".snapshot.tmp")
        temporary.write_bytes(body + b"\n" + str(crc32c(body)).encode() + b"\n")
        os.replace(temporary, path)

    def delete_snapshots_above(self, offset: int) -> None:
        for old in self.snapshot_offsets():
            if old > offset:
                self.snapshot_path(old).unlink(missing_ok=True)


def _batch(fields: list[int]) -> tuple[int, int, int, int]:
    first_sequence, last_sequence, first_offset, last_offset = map(int, fields)
    return first_sequence, last_sequence, first_offset, last_offset
