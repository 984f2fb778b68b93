"""The leader-epoch cache of one partition: at which offset each leader epoch began.

Kafka's LeaderEpochFileCache (KIP-101, KIP-279). Each entry says "leader epoch E wrote
its first record at offset S"; entries are strictly increasing in both. A follower that
must find where its log and a new leader's part ways asks the leader for the end offset
of its own latest epoch (OffsetsForLeaderEpoch) and truncates there, instead of trusting
its high watermark, which may be stale: that is what keeps a leader change from forking
or silently dropping acknowledged records.

On disk, beside the segments, Kafka's ``leader-epoch-checkpoint`` format::

    0                  version
    2                  number of entries
    0 0                epoch start_offset
    3 1200

The file is replaced atomically (write, rename) on every change; it is fsynced when the
log flushes. After an unclean stop the log re-derives the entries of its recovered tail
from the batches themselves (each batch carries its partition leader epoch), so a lost
write of this file costs nothing.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import NamedTuple

import structlog

__all__ = ["CHECKPOINT_NAME", "UNDEFINED", "EpochEntry", "LeaderEpochCache"]

CHECKPOINT_NAME = "leader-epoch-checkpoint"
UNDEFINED = -1


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class LeaderEpochCache:
    """Entries in memory, mirrored to ``directory/leader-epoch-checkpoint``."""

    def __init__(self, directory: Path) -> None:
        # a str (see the indexes' for why); :attr:`path` is the Path
        self._path = os.fspath(directory / CHECKPOINT_NAME)
        self.entries: list[EpochEntry] = _read(self.path)
        self._dirty = False
        # entries changed in memory only (a new leader's epoch at its log end): written
        # with its first append, so a leader change costs no file write per partition
        self.unwritten = False

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1].epoch if self.entries else UNDEFINED

    def assign(self, epoch: int, start_offset: int, *, write: bool = True) -> None:
        """Epoch ``epoch`` begins at ``start_offset`` (called for a batch of a newer epoch,
        and by a new leader for its log end, with ``write`` False: see :attr:`unwritten`).

        An entry at or past ``start_offset`` belongs to a history this one replaces (a
        follower re-fetching after truncation): it goes.
        """
        if epoch < 0 or (epoch <= self.latest_epoch and self._covers(epoch, start_offset)):
            return
        self.entries = [
            e for e in self.entries if e.epoch < epoch and e.start_offset < start_offset
        ]
        self.entries.append(EpochEntry(epoch, start_offset))
        if write:
            self._write()
        else:
            self.unwritten = True

    def replace_with(self, entries: list[EpochEntry]) -> None:
        """Take ``entries`` as they are: a move's copy, at its swap, takes the log's
        (epochs a leader began with no batch yet are in no batch it copied)."""
        if entries != self.entries:
            self.entries = list(entries)
            self._write()

    def write(self) -> None:
        """Write what :meth:`assign` left in memory only."""
        if self.unwritten:
            self._write()

    def _covers(self, epoch: int, start_offset: int) -> bool:
        return any(e.epoch == epoch and e.start_offset <= start_offset for e in self.entries)

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """OffsetsForLeaderEpoch's answer: (largest epoch <= ``epoch``, where it ended).

        The end of an epoch is the start of the next one, or the log end offset for the
        latest. An epoch older than everything here ends where the first one here starts,
        as in Kafka's LeaderEpochFileCache: nothing of it is here. A follower holding only
        records of epochs its leader never had learns from that to cut them all; taken
        as "unknown" it kept them, and the two logs parted below the high watermark.
        (-1, -1) only if nothing is known.
        """
        if not self.entries or epoch < 0:
            return UNDEFINED, UNDEFINED
        if epoch < self.entries[0].epoch:
            return epoch, self.entries[0].start_offset
        if epoch >= self.latest_epoch:
            return self.latest_epoch, log_end_offset
        for i, entry in enumerate(self.entries):
            if entry.epoch > epoch:
                return self.entries[i - 1].epoch, entry.start_offset
        raise AssertionError("unreachable: epoch is below the latest")

    def truncate_from_end(self, end_offset: int) -> None:
        """The log was cut to ``end_offset``: epochs that began at or after it are gone."""
        kept = [e for e in self.entries if e.start_offset < end_offset]
        if kept != self.entries:
            self.entries = kept
            self._write()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at ``start_offset``: older epochs go, the one holding it is
        moved up to it."""
        kept = [e for e in self.entries if e.start_offset >= start_offset]
        older = [e for e in self.entries if e.start_offset < start_offset]
        if older and (not kept or kept[0].start_offset > start_offset):
            kept.insert(0, EpochEntry(older[-1].epoch, start_offset))
        if kept != self.entries:
            self.entries = kept
            self._write()

    def clear(self) -> None:
        if self.entries:
            self.entries = []
            self._write()

    @property
    def path(self) -> Path:
        return Path(self._path)

    def flush(self) -> None:
        """Make the last write durable (called from the log's flush, in a worker thread)."""
        if self._dirty and self.path.exists():
            for target in (self.path, self.path.parent):  # the file, then its rename
                fd = os.open(target, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._dirty = False

    def _write(self) -> None:
        lines = ["0", str(len(self.entries))]
        lines += [f"{e.epoch} {e.start_offset}" for e in self.entries]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)
        self._dirty = True
        self.unwritten = False


def _read(path: Path) -> list[EpochEntry]:
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
        if lines[0] != "0":
            raise ValueError(f"unknown version {lines[0]!r}")
        count = int(lines[1])
        entries = []
        for line in lines[2 : 2 + count]:
            epoch, start = line.split()
            entries.append(EpochEntry(int(epoch), int(start)))
        if len(entries) != count:
            raise ValueError(f"{count} entries announced, {len(entries)} found")
        for a, b in itertools.pairwise(entries):
            if not (a.epoch < b.epoch and a.start_offset <= b.start_offset):
                raise ValueError(f"entries out of order: {a} then {b}")
        return entries
    except (ValueError, IndexError, OSError) as exc:
        structlog.get_logger("headwater.log").warning(
            "leader_epoch_checkpoint.unreadable",
            path=str(path),
            error=str(exc),
            consequence="rebuilt from the log's batches",
        )
        return []
