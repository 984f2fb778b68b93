"""One segment of a partition's log: ``<base>.log`` with its ``.index`` and ``.timeindex``.

The ``.log`` file is RecordBatch v2 batches back to back, exactly as on the wire, named
by the base offset of its first batch (20 digits). Appends are ``os.writev`` of the caller's
buffers (no copy in Python); reads are ``os.pread`` of batch headers only, so locating a
range is O(batches), and the range itself is returned as (position, size) for ``sendfile``.

A segment knows: ``base_offset``, ``next_offset`` (one past its last batch), ``size``,
``max_timestamp`` and the offset where it was first reached (for the time index and for
time retention). These are rebuilt from the indexes plus a short scan on open, or from a
full CRC-checked scan by :meth:`LogSegment.recover` after an unclean stop.

Recent batches: the sparse index leaves up to ``index.interval.bytes`` of batches to scan
header by header (a ``pread`` each: ~60 for 4 KiB of one-record batches), and the fetches
that matter for latency read exactly there, at the tail. So the segment also remembers
(base offset, last offset, position, end) of the batches it appended since its last index
entry (at most ``_RECENT_MAX``; forgotten when it rolls). They run without a gap to the end
of the file: only :meth:`append` writes the file while they are kept, and every other
change to it (truncation, recovery, a reload of the tail) forgets them first. A fetch at
the tail (a follower's, a tailing consumer's, a parked fetch tried again) is then found in
memory, with no ``pread`` of headers at all; older offsets use the index and a scan.

Concurrency: event loop thread only, except :meth:`flush`, which the log runs in a worker
thread (fsync of a file another thread appends to is safe; it covers at least what was
written before it started).
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from broker.log.index import OffsetIndex, TimeIndex
from protocol.errors import CorruptBatchError
from protocol.records import decode_batches, read_header, verify_crc
from protocol.records.batch import HEADER, HEADER_SIZE, LOG_OVERHEAD, BatchHeader
from protocol.records.files import segment_name

__all__ = ["BatchInfo", "LogSegment", "segment_name"]

Buffer = bytes | bytearray | memoryview

_IOV_MAX = 1024  # os.writev takes at most this many buffers per call (Linux)
_RECENT_MAX = 256  # batches remembered past the last index entry (see the module doc)
_pwritev = os.pwritev  # a seam for fault-injection tests


class BatchInfo(NamedTuple):
    """What the segment needs to know of a batch it appends (offsets already assigned)."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    size: int


class LogSegment:
    """Files and in-memory state of one segment. See the module docstring for the format."""

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        *,
        index_interval_bytes: int,
        max_index_bytes: int,
        created_ms: int,
        suffix: str = "",
    ) -> None:
        """``suffix``: after each file's name; the log cleaner writes ``.cleaned`` ones."""
        self.base_offset = base_offset
        # a str (see the indexes' for why); :attr:`log_path` is the Path
        self._log_path = os.fspath(directory / (segment_name(base_offset, ".log") + suffix))
        self._interval = index_interval_bytes
        self.fd = os.open(self._log_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self.size = os.fstat(self.fd).st_size
            index_missing = not all(
                (directory / (segment_name(base_offset, kind) + suffix)).exists()
                for kind in (".index", ".timeindex")
            )
            self.offset_index = OffsetIndex(
                directory / (segment_name(base_offset, ".index") + suffix),
                base_offset,
                max_index_bytes,
            )
            self.time_index = TimeIndex(
                directory / (segment_name(base_offset, ".timeindex") + suffix),
                base_offset,
                max_index_bytes,
            )
        except BaseException:
            os.close(self.fd)  # out of descriptors on an index: the log's must not leak
            raise
        self.index_missing = index_missing
        self.created_ms = created_ms
        self.roll_jitter_ms = 0
        """Taken off segment.ms for this segment's time-based roll (segment.jitter.ms)."""
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self._bytes_since_index = 0
        # the batches appended since the last index entry (see the module doc), by column
        self._recent_bases: list[int] = []
        self._recent_lasts: list[int] = []
        self._recent_positions: list[int] = []
        self._recent_ends: list[int] = []
        self.dirty = False

    @property
    def log_path(self) -> Path:
        return Path(self._log_path)

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path.name}, size={self.size}, next={self.next_offset})"

    # --- state on open ------------------------------------------------------------------

    def indexes_sane(self, *, full: bool = True, finished: bool = False) -> bool:
        """Both indexes there and in order: every entry, or (``full`` False, after a
        clean stop: they were trimmed and flushed) their last two, as Kafka checks.
        ``finished``: the segment was rolled or closed, so its time index ends with its
        maximum timestamp (not so for the active segment after a crash)."""
        return (
            not self.index_missing
            and self.offset_index.is_sane(self.size, full=full)
            and self.time_index.is_sane(self.size, full=full)
            and (not finished or self._time_index_covers_first_batch())
        )

    def _time_index_covers_first_batch(self) -> bool:
        """A finished segment's time index ends with its maximum, so at least its first
        batch's: one read that catches a zeroed or lost last entry, which
        :meth:`load_tail` would take for the maximum (retention.ms would go by it)."""
        first = next(self.headers(0), None)
        return first is None or self.time_index.last_entry[0] >= first.max_timestamp

    def load_tail(self) -> None:
        """Rebuild in-memory state from the indexes plus a header scan of the tail."""
        # Both indexes take their entries at the same points, the time index the maximum
        # of every batch before its point (_account): its last entry covers all before the
        # offset index's last, so only the batches after that are read. (Reading from the
        # last maximum's entry instead read a whole segment whose timestamps never rose.)
        self.max_timestamp, self.offset_of_max_timestamp = self.time_index.last_entry
        start = self.offset_index.lookup(2**62)[1]
        self._bytes_since_index = 0
        self._forget_recent()
        for header in self.headers(start):
            self._account(
                header.base_offset,
                header.last_offset,
                header.max_timestamp,
                header.size,
                header.position,
                index=False,
            )

    def recover(self) -> int:
        """Re-read every batch (CRC checked), rebuild both indexes, cut a damaged tail.

        Returns how many bytes were cut. Offsets must increase from batch to batch.
        """
        file_size = os.fstat(self.fd).st_size
        # an entry per index interval at most, and the final time entry
        needed = file_size // max(self._interval, 1) + 2
        for index in (self.offset_index, self.time_index):
            index.reserve(needed)
            index.make_writable()
            index.reset()
        self.next_offset = self.base_offset
        self.max_timestamp, self.offset_of_max_timestamp = -1, self.base_offset
        self._bytes_since_index = 0
        self._forget_recent()
        valid = 0
        while valid < file_size:
            header = self._valid_batch_at(valid, file_size)
            if header is None:
                break
            self._account(
                header.base_offset,
                header.last_offset,
                header.max_timestamp,
                header.size,
                valid,
                index=True,
            )
            valid = header.end
        cut = file_size - valid
        if cut:
            os.ftruncate(self.fd, valid)
        self.size = valid
        self.index_missing = False
        return cut

    def _valid_batch_at(self, position: int, file_size: int) -> BatchHeader | None:
        prefix = os.pread(self.fd, LOG_OVERHEAD, position)
        if len(prefix) < LOG_OVERHEAD:
            return None
        length = int.from_bytes(prefix[8:12], "big", signed=True)
        if length < HEADER_SIZE - LOG_OVERHEAD or position + LOG_OVERHEAD + length > file_size:
            return None  # a zero-filled or torn tail, or a length that lies
        data = os.pread(self.fd, LOG_OVERHEAD + length, position)
        try:
            header = read_header(data)
            verify_crc(data, header)
        except CorruptBatchError:
            return None
        if header.base_offset < self.next_offset:
            return None  # offsets went backwards: not a batch this log wrote here
        return header._replace(position=position)

    # --- append -------------------------------------------------------------------------

    def append(self, buffers: Sequence[Buffer], batches: Sequence[BatchInfo]) -> None:
        """Write ``buffers`` (the batches' bytes, in order) and index them.

        On OSError nothing is kept: the file is cut back to where it was (best effort; a
        failure of that too is what recovery on the next start repairs).
        """
        start = self.size
        expected = sum(b.size for b in batches)
        # Written at an explicit position: the descriptor's own offset is not ours to trust
        # after a reopen or an ftruncate.
        written = 0
        try:
            for i in range(0, len(buffers), _IOV_MAX):
                chunk = list(buffers[i : i + _IOV_MAX])
                total = sum(len(b) for b in chunk)
                n = _pwritev(self.fd, chunk, start + written)
                if n < total:  # a short write: finish this chunk byte-exactly
                    data = memoryview(b"".join(chunk))
                    while n < total:
                        n += _pwritev(self.fd, [data[n:]], start + written + n)
                written += total
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            raise
        assert written == expected, (written, expected)
        position = start
        for b in batches:
            self._account(
                b.base_offset, b.last_offset, b.max_timestamp, b.size, position, index=True
            )
            if len(self._recent_bases) >= _RECENT_MAX:
                self._forget_recent()
            self._recent_bases.append(b.base_offset)
            self._recent_lasts.append(b.last_offset)
            self._recent_positions.append(position)
            position += b.size
            self._recent_ends.append(position)
        self.size = position
        self.dirty = True

    def _account(
        self, base: int, last: int, max_ts: int, size: int, position: int, *, index: bool
    ) -> None:
        if index and self._bytes_since_index > self._interval:
            self.offset_index.append(base, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self._bytes_since_index = 0
            self._forget_recent()  # the index finds these now
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
            self.offset_of_max_timestamp = base
        self._bytes_since_index += size
        self.next_offset = last + 1
        self.size = max(self.size, position + size)

    def room_for_entries(self, nbytes: int) -> bool:
        """Whether an append of ``nbytes`` fits in the indexes without filling them."""
        needed = nbytes // max(self._interval, 1) + 2
        free = self.offset_index.max_entries - 1 - self.offset_index.entries
        return (
            needed <= free and needed <= self.time_index.max_entries - 1 - self.time_index.entries
        )

    # --- read ---------------------------------------------------------------------------

    def headers(self, position: int = 0, end: int | None = None) -> Iterator[BatchHeader]:
        """Batch headers from ``position`` to ``end`` (default: the segment's end)."""
        stop = self.size if end is None else end
        while position + LOG_OVERHEAD <= stop:
            raw = os.pread(self.fd, HEADER_SIZE, position)
            if len(raw) < HEADER_SIZE:
                return
            header = BatchHeader(position, *HEADER.unpack_from(raw))
            if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or header.end > stop:
                return
            yield header
            position = header.end

    def find(self, offset: int) -> BatchHeader | None:
        """The first batch whose last offset is >= ``offset``, or None."""
        i = self._recent_at(offset)
        if i is not None:
            position = self._recent_positions[i] if i < len(self._recent_positions) else self.size
            return next(self.headers(position), None)
        _, position = self.offset_index.lookup(offset)
        return self._scan(offset, position)

    def _recent_at(self, offset: int) -> int | None:
        """Which remembered batch is the first whose last offset is >= ``offset`` (their
        count if none is), or None when ``offset`` is below them all."""
        bases = self._recent_bases
        if not bases or offset < bases[0]:
            return None
        i = bisect_right(bases, offset) - 1
        lasts = self._recent_lasts
        while i < len(lasts) and lasts[i] < offset:  # in a gap between batches (compacted)
            i += 1
        return i

    def _scan(self, offset: int, position: int) -> BatchHeader | None:
        for header in self.headers(position):
            if header.last_offset >= offset:
                return header
        return None

    def _forget_recent(self) -> None:
        self._recent_bases.clear()
        self._recent_lasts.clear()
        self._recent_positions.clear()
        self._recent_ends.clear()

    def read_range(
        self, offset: int, max_bytes: int, *, max_offset: int, min_one_batch: bool
    ) -> tuple[int, int, int] | None:
        """(position, size, first batch base offset) of whole batches holding ``offset``.

        Stops before ``max_bytes`` would be exceeded (the first batch is always included
        when ``min_one_batch``) and before any batch starting at or after ``max_offset``.
        """
        i = self._recent_at(offset)
        if i is not None:
            return self._recent_range(i, max_bytes, max_offset, min_one_batch)
        first = self.find(offset)
        if first is None or first.base_offset >= max_offset:
            return None
        end = first.position
        for header in self.headers(first.position):
            if header.base_offset >= max_offset:
                break
            if header.end - first.position > max_bytes and (
                end > first.position or not min_one_batch
            ):
                break
            end = header.end
        if end == first.position:
            return None
        return first.position, end - first.position, first.base_offset

    def _recent_range(
        self, i: int, max_bytes: int, max_offset: int, min_one_batch: bool
    ) -> tuple[int, int, int] | None:
        """:meth:`read_range` from the remembered batches, starting at the ``i``-th."""
        bases, ends = self._recent_bases, self._recent_ends
        if i == len(bases) or bases[i] >= max_offset:
            return None
        start = self._recent_positions[i]
        end = start
        for j in range(i, len(bases)):
            if bases[j] >= max_offset:
                break
            if ends[j] - start > max_bytes and (end > start or not min_one_batch):
                break
            end = ends[j]
        if end == start:
            return None
        return start, end - start, bases[i]

    def read(self, position: int, size: int) -> bytes:
        return os.pread(self.fd, size, position)

    def find_by_timestamp(self, timestamp: int, start_offset: int) -> tuple[int, int] | None:
        """(timestamp, offset) of the first record at or after ``start_offset`` whose
        timestamp is >= ``timestamp``, or None if this segment has none."""
        if self.max_timestamp < timestamp:
            return None
        _, from_offset = self.time_index.lookup(timestamp)
        _, position = self.offset_index.lookup(max(from_offset, start_offset))
        for header in self.headers(position):
            if header.max_timestamp < timestamp or header.last_offset < start_offset:
                continue
            (batch,) = decode_batches(self.read(header.position, header.size))
            for record in batch:
                if record.offset >= start_offset and record.timestamp >= timestamp:
                    return record.timestamp, record.offset
        return None

    # --- change -------------------------------------------------------------------------

    def truncate_to(self, offset: int) -> int:
        """Remove batches holding offsets >= ``offset`` (whole batches); returns bytes cut.

        The segment then ends where the first batch cut began, or at ``offset`` if that
        began past it, whatever compaction gap is before: as Kafka sets the log end to
        the truncation's target, its next offset is the leader's next, not a gap's."""
        header = self.find(offset)
        if header is None:
            self.next_offset = max(self.next_offset, offset)
            return 0
        cut = self.size - header.position
        os.ftruncate(self.fd, header.position)
        self.size = header.position
        self._forget_recent()
        self.offset_index.truncate_to(header.base_offset)
        self.time_index.truncate_to(header.base_offset)
        self.next_offset = self.base_offset
        self.max_timestamp, self.offset_of_max_timestamp = -1, self.base_offset
        self.load_tail()
        self.next_offset = max(self.next_offset, min(offset, header.base_offset))
        self.dirty = True
        return cut

    def on_roll(self) -> None:
        """Becoming inactive: record the final maximum timestamp, trim the indexes."""
        self._forget_recent()  # only the active segment's tail is read that often
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(
                self.max_timestamp, self.offset_of_max_timestamp, final=True
            )
        self.offset_index.trim()
        self.time_index.trim()

    def make_active(self) -> None:
        self.offset_index.make_writable()
        self.time_index.make_writable()

    def flush(self) -> None:
        os.fsync(self.fd)
        self.offset_index.flush()
        self.time_index.flush()

    def close(self) -> None:
        self._forget_recent()
        if self.max_timestamp >= 0 and self.time_index._writable:
            self.time_index.maybe_append(
                self.max_timestamp, self.offset_of_max_timestamp, final=True
            )
        self.offset_index.close()
        self.time_index.close()
        os.close(self.fd)
        self.fd = -1  # a reader holding this segment must see it closed, not a reused number

    def release(self) -> None:
        """Close the files without writing to them (an open that failed part way, a log
        being deleted)."""
        self._forget_recent()
        self.offset_index.close(trim=False)
        self.time_index.close(trim=False)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def rename_for_delete(self) -> None:
        """Kafka's two-step delete: rename now (readers keep their descriptors), unlink later."""
        os.replace(self._log_path, self._log_path + ".deleted")
        self._log_path += ".deleted"
        for index in (self.offset_index, self.time_index):
            index.rename(index.path.with_name(index.path.name + ".deleted"))

    def delete(self) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)  # first: an index that fails to go must not keep the space held
        self.offset_index.delete()
        self.time_index.delete()
        self.log_path.unlink(missing_ok=True)
