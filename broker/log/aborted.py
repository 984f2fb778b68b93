"""The aborted transactions of one partition (Kafka's transaction index).

A read_committed fetch names the aborted transactions whose records it may return, as
(producer id, first offset), so the consumer can drop their batches. Each ABORT marker
appended here adds one entry: the producer id, the transaction's first offset, the
marker's offset (its last) and the partition's last stable offset once it was done,
which ends a search early (:meth:`AbortedTransactions.collect`, Kafka's
TransactionIndex.collectAbortedTxns).

On disk: ``aborted.txnindex`` in the partition's directory, Kafka's 34-byte entries
(version int16, producer id, first offset, last offset, last stable offset, all int64)
in the order the markers were appended. One file per partition, not one per segment as
in Kafka: an entry is a few dozen bytes per aborted transaction, dropped as retention
passes its marker, so the whole list lives in memory (exact tuples of ints, which the
collector does not track) and a fetch's search is a bisect, with no file read.

Rebuilt from the log: the log replays batch headers after its producer snapshot at
every open and truncation, and the entries from that offset on are dropped first and
re-added by the replay (:meth:`Log._load_producers`). A torn tail is cut. fsync with the
log's segments.

The log cleaner removes a marker once nothing of its transaction is left, and its entry
with it, in the same event-loop pass as the segment swap, but not in the same durable
step: after a crash between the two, an entry may outlive its marker. Such an entry is
harmful (a reader skips the producer's batches from its first offset until a marker, so
it would hide the producer's next, committed, transaction), so a log opened after an
unclean stop keeps only the entries whose marker it still holds
(:meth:`Log.drop_aborted`). Kafka avoids it by keeping one index per segment, swapped
with the segment.
"""

from __future__ import annotations

import contextlib
import os
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

__all__ = ["AbortedTransactions", "AbortedTxn", "collect"]

FILE_NAME = "aborted.txnindex"
_ENTRY = struct.Struct(">hqqqq")  # 34 bytes, Kafka's AbortedTxn
_VERSION = 0


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int
    """The ABORT marker's offset."""
    last_stable_offset: int


class AbortedTransactions:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        self.entries: list[tuple[int, int, int, int]] = []
        self._lasts: list[int] = []
        self._dirty = False

    def load(self) -> None:
        """Read the file; a torn or out-of-order tail is cut (replay re-adds it)."""
        self.path.with_name(FILE_NAME + ".tmp").unlink(missing_ok=True)  # a crash mid-rewrite
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        entries: list[tuple[int, int, int, int]] = []
        previous = -1
        valid = 0
        for pos in range(0, len(data) - _ENTRY.size + 1, _ENTRY.size):
            version, pid, first, last, lso = _ENTRY.unpack_from(data, pos)
            if version != _VERSION or last < previous or first > last:
                break
            entries.append((pid, first, last, lso))
            previous = last
            valid = pos + _ENTRY.size
        self.entries = entries
        self._lasts = [e[2] for e in entries]
        if valid != len(data):
            self._rewrite()

    def append(self, txn: AbortedTxn) -> None:
        """Add the entry of an ABORT marker just appended (or replayed)."""
        if self._lasts and txn.last_offset <= self._lasts[-1]:
            return  # already here: a replay over entries the file kept
        entry = (txn.producer_id, txn.first_offset, txn.last_offset, txn.last_stable_offset)
        self.entries.append(entry)
        self._lasts.append(txn.last_offset)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, _ENTRY.pack(_VERSION, *entry))
        finally:
            os.close(fd)
        self._dirty = True

    def truncate(self, offset: int) -> None:
        """Drop the entries whose marker is at ``offset`` or after (a truncation, or a
        replay about to re-add them)."""
        keep = bisect_left(self._lasts, offset)
        if keep < len(self.entries):
            del self.entries[keep:]
            del self._lasts[keep:]
            self._rewrite()

    def prune_below(self, log_start_offset: int) -> None:
        """Drop the entries whose marker is below the log start: no fetch reaches them."""
        gone = bisect_left(self._lasts, log_start_offset)
        if gone:
            del self.entries[:gone]
            del self._lasts[:gone]
            self._rewrite()

    def drop(self, last_offsets: Iterable[int]) -> None:
        """Drop the entries of the markers at ``last_offsets`` (the cleaner removed them)."""
        gone = set(last_offsets)
        self.retain(lambda entry: entry[2] not in gone)

    def retain(self, keep: Callable[[tuple[int, int, int, int]], bool]) -> int:
        """Keep only the entries ``keep`` accepts; how many went."""
        kept = [e for e in self.entries if keep(e)]
        gone = len(self.entries) - len(kept)
        if gone:
            self.entries = kept
            self._lasts = [e[2] for e in kept]
            self._rewrite()
        return gone

    def clear(self) -> None:
        if self.entries or self.path.exists():
            self.entries, self._lasts = [], []
            self._rewrite()

    def collect(self, start: int, upper: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions with records in
        [``start``, ``upper``): every entry whose marker is at or after ``start`` and whose
        first offset is below ``upper``, up to the first one done when the last stable
        offset had passed ``upper`` (no later marker can end a transaction begun below it)."""
        return collect(self.entries, start, upper, bisect_right(self._lasts, start - 1))

    def copy(self) -> list[tuple[int, int, int, int]]:
        """The entries now (the log cleaner's worker reads them with :func:`collect`)."""
        return list(self.entries)

    def flush(self) -> None:
        """fsync (a worker thread, with the segments)."""
        if not self._dirty:
            return
        self._dirty = False
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rewrite(self) -> None:
        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        temporary = self.path.with_name(FILE_NAME + ".tmp")
        temporary.write_bytes(b"".join(_ENTRY.pack(_VERSION, *e) for e in self.entries))
        os.replace(temporary, self.path)
        self._dirty = True


def collect(
    entries: list[tuple[int, int, int, int]], start: int, upper: int, i: int | None = None
) -> list[tuple[int, int]]:
    """:meth:`AbortedTransactions.collect` over ``entries``, from the ``i``-th (default:
    the first whose marker is at or after ``start``)."""
    if i is None:
        i = bisect_left(entries, start, key=lambda e: e[2])
    found: list[tuple[int, int]] = []
    for k in range(i, len(entries)):
        pid, first, _, lso = entries[k]
        if first < upper:
            found.append((pid, first))
        if lso > upper:
            break
    return found
