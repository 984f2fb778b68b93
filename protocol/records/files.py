"""The files of one log segment, as bytes: what ``broker.log`` writes and ``headwater
dump-log`` reads. Pure: callers read the files.

Kafka's layout, big-endian::

    <base:020d>.log        RecordBatch v2 batches back to back (protocol.records.batch)
    <base:020d>.index      relative_offset:u32 | position:u32         8 bytes per entry
    <base:020d>.timeindex  timestamp:i64       | relative_offset:u32  12 bytes per entry

``base`` is the segment's base offset, ``relative_offset`` an offset minus it. An offset
index entry says: the batch whose base offset is that offset starts at that byte of the
``.log``. A time index entry says: that timestamp is the largest of the segment so far,
first reached by the batch whose base offset is that offset. Either index may end in
preallocated zeros (an active segment's, or one left by a crash): those are not entries.

A file being replaced or removed carries one more suffix: ``.cleaned`` and ``.swap``
(the log cleaner's output, see ``broker.log.swap``) or ``.deleted`` (unlinked soon).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "OFFSET_INDEX_ENTRY",
    "SEGMENT_KINDS",
    "TIME_INDEX_ENTRY",
    "SegmentFileName",
    "offset_index_entries",
    "parse_segment_file_name",
    "segment_name",
    "time_index_entries",
]

OFFSET_INDEX_ENTRY = struct.Struct(">II")
TIME_INDEX_ENTRY = struct.Struct(">qI")
SEGMENT_KINDS = (".log", ".index", ".timeindex")
STATE_SUFFIXES = (".cleaned", ".swap", ".deleted")

Buffer = bytes | bytearray | memoryview


class SegmentFileName(NamedTuple):
    base_offset: int
    kind: str  # one of SEGMENT_KINDS
    state: str  # "" or one of STATE_SUFFIXES


def segment_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def parse_segment_file_name(name: str) -> SegmentFileName | None:
    """``00000000000000000042.index.swap`` -> (42, ".index", ".swap"); None otherwise."""
    parts = name.split(".")
    if len(parts) not in (2, 3) or not parts[0].isdigit():
        return None
    kind = "." + parts[1]
    state = "." + parts[2] if len(parts) == 3 else ""
    if kind not in SEGMENT_KINDS or state not in ("", *STATE_SUFFIXES):
        return None
    return SegmentFileName(int(parts[0]), kind, state)


def offset_index_entries(data: Buffer, base_offset: int) -> list[tuple[int, int]]:
    """(offset, position) of every entry; trailing all-zero entries are preallocation."""
    return [
        (base_offset + relative, position)
        for relative, position in OFFSET_INDEX_ENTRY.iter_unpack(_entries(data, OFFSET_INDEX_ENTRY))
    ]


def time_index_entries(data: Buffer, base_offset: int) -> list[tuple[int, int]]:
    """(timestamp, offset) of every entry; trailing all-zero entries are preallocation."""
    return [
        (timestamp, base_offset + relative)
        for timestamp, relative in TIME_INDEX_ENTRY.iter_unpack(_entries(data, TIME_INDEX_ENTRY))
    ]


def _entries(data: Buffer, entry: struct.Struct) -> bytes:
    """The entries of ``data``: a torn last entry is not one, nor are the zeros after the
    last entry (an active index is preallocated; an entry is never all zeros)."""
    used = len(bytes(data).rstrip(b"\x00"))
    whole = min(-(-used // entry.size) * entry.size, len(data) - len(data) % entry.size)
    return bytes(data[:whole])
