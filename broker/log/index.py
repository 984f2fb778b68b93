"""Sparse indexes of one segment: offset -> file position, and timestamp -> offset.

On-disk format (Kafka's; the entry layouts live in :mod:`protocol.records.files`, which
``headwater dump-log`` reads too), big-endian, fixed-size entries, sorted by both columns::

    .index      relative_offset:u32 | position:u32                 8 bytes per entry
    .timeindex  timestamp:i64       | relative_offset:u32          12 bytes per entry

``relative_offset`` is the offset minus the segment's base offset. An entry is added
every ``index.interval.bytes`` of log, so a lookup bisects to a nearby position and the
segment scans a few batch headers from there.

The active segment's index file is preallocated to ``segment.index.bytes`` and memory
mapped; it is trimmed to its entries when the segment rolls or the log closes. After a
crash the preallocated zeros are still there: :meth:`_Index.is_sane` detects them (entries
must strictly increase) and the segment rebuilds the index from its log.

Every mapping is advised MADV_RANDOM. Without it, the first touch of a fresh index ran
the kernel's readahead over the whole sparse file: on Linux 6.18 and ext4 that took
12-17 ms for a 10 MiB index (4 us with the advice), twice per new segment (both indexes),
on the event loop, so every partition's first append and every roll stalled the broker.

Concurrency: used from the event loop thread only.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from protocol.records.files import OFFSET_INDEX_ENTRY, TIME_INDEX_ENTRY

__all__ = ["OffsetIndex", "TimeIndex"]


class IndexFullError(Exception):
    """Internal: the log rolls before an index fills; reaching this is a bug."""


class _Index:
    entry: struct.Struct

    def __init__(self, path: Path, base_offset: int, max_bytes: int) -> None:
        # a str, not a Path: a Path is two objects the cyclic collector walks (see
        # :mod:`broker.log.producer_state`), and every segment has two indexes
        self._path = os.fspath(path)
        self.base_offset = base_offset
        self.max_entries = max(2, max_bytes // self.entry.size)
        self._mm: mmap.mmap | None = None
        # no descriptor is kept: a mapping holds its own (CPython dups it), and a second
        # per index made every partition cost five, not three, against the open files limit
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        self.entries = size // self.entry.size
        self._writable = False

    @property
    def path(self) -> Path:
        return Path(self._path)

    # --- life cycle ---------------------------------------------------------------------

    def make_writable(self) -> None:
        """Preallocate to the maximum and map it (the active segment's index)."""
        if self._writable:
            return
        # segment.index.bytes lowered below what the index holds: it keeps its entries
        # (cutting them broke the final entry and the next open), is full, and the log
        # rolls at its next append, as Kafka keeps an existing index's size
        self.max_entries = max(self.max_entries, self.entries + 1)
        self._remap(self.max_entries * self.entry.size)
        self._writable = True

    def reserve(self, entries: int) -> None:
        """Room for at least ``entries``: a recovery rebuilds what an earlier, larger
        segment.index.bytes let the segment's index hold."""
        if entries > self.max_entries:
            self.max_entries = entries
            if self._writable:
                self._remap(entries * self.entry.size)

    def trim(self) -> None:
        """Cut the file to its entries (roll or close): no preallocated zeros stay on disk."""
        self._remap(self.entries * self.entry.size)
        self._writable = False

    def close(self, *, trim: bool = True) -> None:
        if trim:
            self.trim()
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def flush(self) -> None:
        if self._mm is not None:
            self._mm.flush()
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            return  # deleted meanwhile (or renamed, and flushed by its next flush)
        try:
            os.fsync(fd)  # the file's size too (set by ftruncate)
        finally:
            os.close(fd)

    def delete(self) -> None:
        self.close(trim=False)
        self.path.unlink(missing_ok=True)

    def rename(self, path: Path) -> None:
        os.replace(self._path, path)
        self._path = os.fspath(path)

    def reset(self) -> None:
        """Drop every entry (before a rebuild)."""
        self.entries = 0
        if not self._writable:
            self._remap(0)

    def _remap(self, size: int) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        fd = os.open(self._path, os.O_RDWR)
        try:
            os.ftruncate(fd, size)
            if size:
                self._mm = _map(fd, size)
        finally:
            os.close(fd)

    def _ensure_mapped(self) -> mmap.mmap | None:
        if self._mm is None and self.entries:
            fd = os.open(self._path, os.O_RDWR)
            try:
                self._mm = _map(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        return self._mm

    # --- entries ------------------------------------------------------------------------

    @property
    def is_full(self) -> bool:
        # one slot stays free for the final time-index entry written at roll
        return self.entries >= self.max_entries - 1

    def _get(self, i: int) -> tuple[int, int]:
        mm = self._ensure_mapped()
        assert mm is not None
        a, b = self.entry.unpack_from(mm, i * self.entry.size)
        return a, b

    def _checked(self, full: bool) -> range:
        """The entries a sanity check reads: all, or the last two. A walk over all of
        them costs about 0.5 us an entry, 0.15 s for a full 1 GiB segment's 262,144:
        minutes of a start for a broker holding a thousand such segments."""
        return range(self.entries) if full else range(max(self.entries - 2, 0), self.entries)

    def _put(self, a: int, b: int, *, force: bool = False) -> None:
        if not self._writable:
            raise IndexFullError(f"{self.path} is not the active index")
        if self.entries >= self.max_entries or (self.is_full and not force):
            raise IndexFullError(f"{self.path} is full")
        assert self._mm is not None
        self.entry.pack_into(self._mm, self.entries * self.entry.size, a, b)
        self.entries += 1

    def _bisect(self, key_col: int, target: int) -> int:
        """Index of the last entry whose key column is <= target, or -1."""
        lo, hi = 0, self.entries
        while lo < hi:
            mid = (lo + hi) // 2
            if self._get(mid)[key_col] <= target:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1

    def _truncate_entries(self, key_col: int, bound: int) -> None:
        """Drop entries whose key column is >= bound."""
        self.entries = self._bisect(key_col, bound - 1) + 1


def _map(fd: int, size: int) -> mmap.mmap:
    """Map ``size`` bytes of the index file, with no readahead (see the module doc):
    lookups bisect a few entries, and appends touch one page at a time."""
    mm = mmap.mmap(fd, size)
    if _RANDOM is not None:
        mm.madvise(_RANDOM)
    return mm


_RANDOM: int | None = getattr(mmap, "MADV_RANDOM", None)  # not on every platform


class OffsetIndex(_Index):
    """Offset -> byte position of the batch starting at (or before) that offset."""

    entry = OFFSET_INDEX_ENTRY

    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        assert 0 <= relative < 2**32 and position < 2**32
        if self.entries and relative <= self._get(self.entries - 1)[0]:
            return  # already indexed (a retried append after a truncation)
        self._put(relative, position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the last entry at or below ``offset``; else the start."""
        i = self._bisect(0, offset - self.base_offset)
        if i < 0:
            return self.base_offset, 0
        relative, position = self._get(i)
        return self.base_offset + relative, position

    def truncate_to(self, offset: int) -> None:
        """Drop entries for offsets >= ``offset``."""
        self._truncate_entries(0, offset - self.base_offset)

    def is_sane(self, log_size: int, *, full: bool = True) -> bool:
        """Offsets and positions strictly increase and stay in the log: every entry, or
        (``full`` False) the last two, as Kafka's sanity check (a zero-filled tail
        repeats its last entry)."""
        previous = (-1, -1)
        for i in self._checked(full):
            relative, position = self._get(i)
            if relative <= previous[0] or position <= previous[1] or position >= log_size:
                return False
            previous = (relative, position)
        return True


class TimeIndex(_Index):
    """Timestamp -> offset: entries record each new maximum timestamp and where it began."""

    entry = TIME_INDEX_ENTRY

    @property
    def last_entry(self) -> tuple[int, int]:
        """(timestamp, offset) of the last entry, or (-1, base offset)."""
        if not self.entries:
            return -1, self.base_offset
        ts, relative = self._get(self.entries - 1)
        return ts, self.base_offset + relative

    def maybe_append(self, timestamp: int, offset: int, *, final: bool = False) -> None:
        """Record that ``timestamp`` is a new maximum, first reached at ``offset``."""
        if self.entries:
            last_ts, last_rel = self._get(self.entries - 1)
            if timestamp <= last_ts or offset - self.base_offset < last_rel:
                return
        self._put(timestamp, offset - self.base_offset, force=final)

    def lookup(self, timestamp: int) -> tuple[int, int]:
        """(timestamp, offset) of the last entry at or below ``timestamp``; else the start.

        Every record before the returned offset has a timestamp below ``timestamp``.
        """
        i = self._bisect(0, timestamp)
        if i < 0:
            return -1, self.base_offset
        ts, relative = self._get(i)
        return ts, self.base_offset + relative

    def truncate_to(self, offset: int) -> None:
        """Drop entries for offsets >= ``offset`` (entries are sorted by offset too)."""
        keep = 0
        for i in range(self.entries):
            if self._get(i)[1] + self.base_offset >= offset:
                break
            keep = i + 1
        self.entries = keep

    def is_sane(self, log_size: int, *, full: bool = True) -> bool:
        """Timestamps strictly increase and offsets never go back: every entry, or
        (``full`` False) the last two."""
        previous = (-(2**63), -1)
        for i in self._checked(full):
            ts, relative = self._get(i)
            if ts <= previous[0] or relative < previous[1]:
                return False
            previous = (ts, relative)
        return True
