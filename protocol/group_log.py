"""What ``__consumer_offsets`` holds: committed offsets and groups' metadata, in Kafka's
record layout (GroupMetadataManager), so its tools, and ``headwater dump-log
--offsets-decoder``, read our offsets topic alike:

    key   = version:i16 (1) | group:str16 | topic:str16 | partition:i32
    value = version:i16 (3) | offset:i64 | leader_epoch:i32 | metadata:str16 |
            commit_timestamp:i64
    a null value (a tombstone) deletes the key

A commit with a retention time of its own (OffsetCommit v2-v4's ``retention_time_ms``)
is written as Kafka writes it, in value version 1, which has an expire time and no
leader epoch: ``version:i16 (1) | offset:i64 | metadata:str16 | commit_timestamp:i64 |
expire_timestamp:i64``.

Group metadata (a group's last settled generation, Kafka's GroupMetadataValue v3):

    key   = version:i16 (2) | group:str16
    value = version:i16 (3) | protocol_type:str16 | generation:i32 | protocol:str16 |
            leader:str16 | current_state_timestamp:i64 |
            members:i32 count, each: member_id:str16 | group_instance_id:str16 |
                client_id:str16 | client_host:str16 | rebalance_timeout:i32 |
                session_timeout:i32 | subscription:bytes32 | assignment:bytes32

``str16`` is a big-endian i16 length then UTF-8 bytes (-1: null); ``bytes32`` an i32
length then the bytes. Values of versions 0-2 (fewer fields, as Kafka's) are read too.
Pure: bytes in, objects out (the coordinator's store is :mod:`broker.coordinator.offsets`).
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

__all__ = [
    "OFFSETS_TOPIC",
    "BadRecordError",
    "GroupMetadata",
    "MemberMetadata",
    "OffsetAndMetadata",
    "decode_group_key",
    "decode_group_value",
    "decode_key",
    "decode_value",
    "encode_group_key",
    "encode_group_value",
    "encode_key",
    "encode_value",
    "java_string_hash",
    "partition_for",
]

OFFSETS_TOPIC = "__consumer_offsets"
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_OFFSET_KEY_VERSIONS = (0, 1)
_GROUP_KEY_VERSION = 2
_VALUE_VERSION = 3
_GROUP_VALUE_VERSION = 3


class OffsetAndMetadata(NamedTuple):
    offset: int
    leader_epoch: int = -1
    metadata: str | None = None
    commit_timestamp: int = -1
    expire_timestamp: int = -1
    """When it expires, if its commit said (OffsetCommit v2-v4's retention time; Kafka's
    old semantics, before KIP-211); -1: by offsets.retention.minutes."""


class MemberMetadata(NamedTuple):
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


class GroupMetadata(NamedTuple):
    """A group as Kafka's GroupMetadataManager stores it: Stable (with members) or Empty."""

    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int
    members: list[MemberMetadata]


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
    if len(group) <= _CACHED_ID_CHARS:
        return _cached_partition_for(group, partitions)
    return _partition_for(group, partitions)


_CACHED_ID_CHARS = 255  # a client's long ids are not kept: 65,536 of them could pin GBs


@functools.lru_cache(maxsize=65_536)  # Python's loop over every character, per request
def _cached_partition_for(group: str, partitions: int) -> int:
    return _partition_for(group, partitions)


def _partition_for(group: str, partitions: int) -> int:
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
    if value.expire_timestamp >= 0:  # (Kafka's only version with the field)
        return (
            _I16.pack(1)
            + _I64.pack(value.offset)
            + _str16(value.metadata)
            + _I64.pack(value.commit_timestamp)
            + _I64.pack(value.expire_timestamp)
        )
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
        expires = _I64.unpack_from(data, pos + 8)[0] if version == 1 else -1
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadRecordError(f"not an offsets value: {exc}") from None
    return OffsetAndMetadata(offset, epoch, metadata, timestamp, expires)


def encode_group_key(group: str) -> bytes:
    return _I16.pack(_GROUP_KEY_VERSION) + _str16(group)


def decode_group_key(data: bytes) -> str | None:
    """The group a group metadata key names; None for a key of another kind."""
    if data[:2] != _I16.pack(_GROUP_KEY_VERSION):
        return None
    try:
        group, _ = _read_str16(data, 2)
    except (struct.error, UnicodeDecodeError):
        raise BadRecordError("not a group metadata key") from None
    if group is None:
        raise BadRecordError("a group metadata key without a group")
    return group


def _bytes32(data: bytes) -> bytes:
    return _I32.pack(len(data)) + data


def encode_group_value(value: GroupMetadata) -> bytes:
    parts = [
        _I16.pack(_GROUP_VALUE_VERSION),
        _str16(value.protocol_type),
        _I32.pack(value.generation),
        _str16(value.protocol),
        _str16(value.leader),
        _I64.pack(value.current_state_timestamp),
        _I32.pack(len(value.members)),
    ]
    for m in value.members:
        parts += [
            _str16(m.member_id),
            _str16(m.group_instance_id),
            _str16(m.client_id),
            _str16(m.client_host),
            _I32.pack(m.rebalance_timeout_ms),
            _I32.pack(m.session_timeout_ms),
            _bytes32(m.subscription),
            _bytes32(m.assignment),
        ]
    return b"".join(parts)


class _Reader:
    """Reads Kafka's fixed-width fields in order; struct.error past the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fixed(self, fmt: struct.Struct) -> int:
        (value,) = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return int(value)

    def str16(self) -> str | None:
        text, self.pos = _read_str16(self.data, self.pos)
        return text

    def bytes32(self) -> bytes:
        size = self.fixed(_I32)
        if size < 0 or self.pos + size > len(self.data):
            raise BadRecordError("a byte field runs past the record")
        self.pos += size
        return self.data[self.pos - size : self.pos]


def decode_group_value(data: bytes) -> GroupMetadata:
    """A group metadata value of version 0-3 (the fields later versions added default as
    Kafka's do: rebalance timeout = session timeout, no instance id, no timestamp)."""
    r = _Reader(data)
    try:
        version = r.fixed(_I16)
        if not 0 <= version <= _GROUP_VALUE_VERSION:
            raise BadRecordError(f"group metadata value version {version} is not known")
        protocol_type = r.str16() or ""
        generation = r.fixed(_I32)
        protocol, leader = r.str16(), r.str16()
        timestamp = r.fixed(_I64) if version >= 2 else -1
        members = [_read_member(r, version) for _ in range(r.fixed(_I32))]
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadRecordError(f"not a group metadata value: {exc}") from None
    return GroupMetadata(protocol_type, generation, protocol, leader, timestamp, members)


def _read_member(r: _Reader, version: int) -> MemberMetadata:
    member_id = r.str16() or ""
    instance = r.str16() if version >= 3 else None
    client_id, client_host = r.str16() or "", r.str16() or ""
    rebalance_ms = r.fixed(_I32) if version >= 1 else None
    session_ms = r.fixed(_I32)
    if rebalance_ms is None:
        rebalance_ms = session_ms
    subscription = r.bytes32()
    return MemberMetadata(
        member_id,
        instance,
        client_id,
        client_host,
        rebalance_ms,
        session_ms,
        subscription,
        r.bytes32(),
    )
