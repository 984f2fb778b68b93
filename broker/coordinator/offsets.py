"""Committed offsets as records of ``__consumer_offsets``, and their in-memory view.

Kafka's layout (GroupMetadataManager), so its tools could read our offsets topic:

    key   = version:i16 (1) | group:str16 | topic:str16 | partition:i32
    value = version:i16 (3) | offset:i64 | leader_epoch:i32 | metadata:str16 |
            commit_timestamp:i64
    a null value (a tombstone) deletes the key

``str16`` is a big-endian i16 length then UTF-8 bytes (-1: null). Keys of version 2 are
group metadata (membership), which arrives with group membership; they are skipped here.
The store is pure: it encodes records for the coordinator to append, and applies records
read back from the log (loading after a leadership change) or just written.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "OFFSETS_TOPIC",
    "OffsetAndMetadata",
    "OffsetStore",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_value",
    "java_string_hash",
]

OFFSETS_TOPIC = "__consumer_offsets"
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_OFFSET_KEY_VERSIONS = (0, 1)
_VALUE_VERSION = 3


class OffsetAndMetadata(NamedTuple):
    offset: int
    leader_epoch: int = -1
    metadata: str | None = None
    commit_timestamp: int = -1


class BadRecordError(ValueError):
    """An offsets record that is not Kafka's layout."""


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units), which Kafka uses to place a
    group: ``abs(hash) % offsets.topic.num.partitions``."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(group: str, partitions: int) -> int:
    h = java_string_hash(group)
    # Kafka's Utils.abs: Integer.MIN_VALUE maps to 0 rather than overflowing
    return (0 if h == -(2**31) else abs(h)) % partitions


def _str16(text: str | None) -> bytes:
    if text is None:
        return _I16.pack(-1)
    raw = text.encode()
    return _I16.pack(len(raw)) + raw


def _read_str16(data: bytes, pos: int) -> tuple[str | None, int]:
    (size,) = _I16.unpack_from(data, pos)
    pos += 2
    if size < 0:
        return None, pos
    if pos + size > len(data):
        raise BadRecordError("a string runs past the record")
    return data[pos : pos + size].decode(), pos + size


def encode_key(group: str, topic: str, partition: int) -> bytes:
    return _I16.pack(1) + _str16(group) + _str16(topic) + _I32.pack(partition)


def decode_key(data: bytes) -> tuple[str, str, int] | None:
    """(group, topic, partition) of an offset-commit key; None for other key kinds."""
    try:
        (version,) = _I16.unpack_from(data, 0)
        if version not in _OFFSET_KEY_VERSIONS:
            return None
        group, pos = _read_str16(data, 2)
        topic, pos = _read_str16(data, pos)
        (partition,) = _I32.unpack_from(data, pos)
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadRecordError(f"not an offsets key: {exc}") from None
    if group is None or topic is None:
        raise BadRecordError("an offsets key without a group or topic")
    return group, topic, partition


def encode_value(value: OffsetAndMetadata) -> bytes:
    return (
        _I16.pack(_VALUE_VERSION)
        + _I64.pack(value.offset)
        + _I32.pack(value.leader_epoch)
        + _str16(value.metadata)
        + _I64.pack(value.commit_timestamp)
    )


def decode_value(data: bytes) -> OffsetAndMetadata:
    try:
        (version,) = _I16.unpack_from(data, 0)
        (offset,) = _I64.unpack_from(data, 2)
        pos = 10
        epoch = -1
        if version >= 3:
            (epoch,) = _I32.unpack_from(data, pos)
            pos += 4
        metadata, pos = _read_str16(data, pos)
        (timestamp,) = _I64.unpack_from(data, pos)
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadRecordError(f"not an offsets value: {exc}") from None
    return OffsetAndMetadata(offset, epoch, metadata, timestamp)


class OffsetStore:
    """Committed offsets of the groups one offsets partition holds: group -> tp -> offset."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the offsets topic, in log order (later ones win)."""
        if key is None:
            return
        parsed = decode_key(key)
        if parsed is None:
            return  # group metadata: membership comes later
        group, topic, partition = parsed
        offsets = self.groups.setdefault(group, {})
        if value is None:
            offsets.pop((topic, partition), None)
            if not offsets:
                del self.groups[group]
        else:
            offsets[(topic, partition)] = decode_value(value)

    def commit(
        self, group: str, offsets: Iterable[tuple[str, int, OffsetAndMetadata]]
    ) -> list[tuple[bytes, bytes]]:
        """The records a commit appends (the caller applies them once they are written)."""
        return [(encode_key(group, t, p), encode_value(v)) for t, p, v in offsets]

    def get(self, group: str) -> dict[tuple[str, int], OffsetAndMetadata]:
        return dict(self.groups.get(group, {}))
