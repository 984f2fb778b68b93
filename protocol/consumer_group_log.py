"""What ``__consumer_offsets`` holds of a group of Kafka's new consumer protocol (KIP-848,
ConsumerGroupHeartbeat), in Kafka 4.0's record layouts (its group coordinator's
``ConsumerGroup*{Key,Value}.json``), beside the offsets and classic groups of
:mod:`protocol.group_log`:

    key   = type:i16 | group_id:str16 [| member_id:str16]
    value = version:i16 (0) | the value's fields, flexible (compact strings and arrays,
            tagged fields)
    a null value (a tombstone) deletes the key

====  ===============================  =======================================================
type  record                           value
====  ===============================  =======================================================
3     ConsumerGroupMetadata            the group epoch
4     ConsumerGroupPartitionMetadata   the subscribed topics (id, name, partition count) the
                                       target assignment was computed from
5     ConsumerGroupMemberMetadata      a member's subscription and client (per member)
6     ConsumerGroupTargetAssignmentMetadata  the assignment epoch
7     ConsumerGroupTargetAssignmentMember    a member's target partitions (per member)
8     ConsumerGroupCurrentMemberAssignment   a member's epochs, state, partitions and those
                                       being revoked (per member)
====  ===============================  =======================================================

A group is in the log while its type-3 record is; deleting one writes tombstones of its
members' records, then of 6, 4 and 3 (Kafka's order). Replaying the records in log order
gives :class:`ConsumerGroupImage`, what the coordinator builds the group from.

Kafka 4.1 dropped record 4 for a hash in record 3 (KIP-1101); 4.0's is written here, with
4.0's ``PartitionMetadata`` (racks: a regular field, not a tagged one) written empty, as
Kafka 4.0 does when it knows no racks, and dropped when read. Pure: bytes in, objects out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from protocol.errors import MalformedMessageError
from protocol.group_log import BadRecordError
from protocol.kafka.codec import (
    BYTES,
    INT8,
    INT32,
    NULLABLE_STRING,
    STRING,
    UUID,
    Array,
    Field,
    NullableStruct,
    Struct,
    read_message,
    write_message,
)

__all__ = [
    "CONSUMER_GROUP_METADATA",
    "CURRENT_MEMBER_ASSIGNMENT",
    "MEMBER_METADATA",
    "PARTITION_METADATA",
    "TARGET_ASSIGNMENT_MEMBER",
    "TARGET_ASSIGNMENT_METADATA",
    "Assignment",
    "ClassicMetadata",
    "ConsumerGroupImage",
    "ConsumerGroupKey",
    "MemberAssignment",
    "MemberSubscription",
    "TopicInfo",
    "decode_consumer_group_key",
    "decode_consumer_group_value",
    "encode_consumer_group_key",
    "encode_consumer_group_value",
]

CONSUMER_GROUP_METADATA = 3
PARTITION_METADATA = 4
MEMBER_METADATA = 5
TARGET_ASSIGNMENT_METADATA = 6
TARGET_ASSIGNMENT_MEMBER = 7
CURRENT_MEMBER_ASSIGNMENT = 8
_GROUP_TYPES = (CONSUMER_GROUP_METADATA, PARTITION_METADATA, TARGET_ASSIGNMENT_METADATA)
_MEMBER_TYPES = (MEMBER_METADATA, TARGET_ASSIGNMENT_MEMBER, CURRENT_MEMBER_ASSIGNMENT)
_VALUE_VERSION = 0
_I16 = struct.Struct(">h")

Assignment = dict[bytes, frozenset[int]]
"""Topic id -> partitions."""


class TopicInfo(NamedTuple):
    """What the cluster says of a topic: its id and partition count."""

    topic_id: bytes
    partitions: int


@dataclass(frozen=True, slots=True)
class ClassicMetadata:
    """A member of a group of the new protocol that speaks the classic one (JoinGroup,
    SyncGroup, Heartbeat: Kafka's online migration): its session timeout, and the
    protocols (name, ConsumerProtocol subscription) its JoinGroup offered."""

    session_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class MemberSubscription:
    """Record 5: what a member subscribes to, and who it is."""

    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed: tuple[str, ...] = ()
    regex: str | None = None
    rebalance_timeout_ms: int = -1
    server_assignor: str | None = None
    classic: ClassicMetadata | None = None
    """A classic member's (tag 0, ClassicMemberMetadata); None: a member of the new one."""


@dataclass(frozen=True, slots=True)
class MemberAssignment:
    """Record 8: where a member is in converging to its target (Kafka's MemberState in
    ``state``: 0 stable, 1 unrevoked partitions, 2 unreleased partitions)."""

    epoch: int
    previous_epoch: int
    state: int
    assigned: Assignment
    pending: Assignment
    """Partitions being revoked: still the member's until a heartbeat says otherwise."""


class ConsumerGroupKey(NamedTuple):
    record_type: int
    group_id: str
    member_id: str | None = None
    """For records 5, 7 and 8."""


@dataclass(slots=True)
class ConsumerGroupImage:
    """One group as its records say, replayed in log order (later records win)."""

    epoch: int | None = None
    """Record 3; None: not written yet (the group is not in the log)."""
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    assignment_epoch: int = 0
    members: dict[str, MemberSubscription] = field(default_factory=dict)
    targets: dict[str, Assignment] = field(default_factory=dict)
    current: dict[str, MemberAssignment] = field(default_factory=dict)

    def apply(self, key: ConsumerGroupKey, value: object | None) -> None:
        """One record (``value``: decoded; None: a tombstone)."""
        kind, member = key.record_type, key.member_id or ""
        if kind == CONSUMER_GROUP_METADATA:
            self.epoch = value if isinstance(value, int) else None
        elif kind == PARTITION_METADATA:
            self.topics = value if isinstance(value, dict) else {}
        elif kind == TARGET_ASSIGNMENT_METADATA:
            self.assignment_epoch = value if isinstance(value, int) else 0
        else:
            tables: dict[int, dict[str, Any]] = {
                MEMBER_METADATA: self.members,
                TARGET_ASSIGNMENT_MEMBER: self.targets,
                CURRENT_MEMBER_ASSIGNMENT: self.current,
            }
            table = tables[kind]
            if value is None:
                table.pop(member, None)
            else:
                table[member] = value

    def keys(self, group_id: str) -> list[ConsumerGroupKey]:
        """Every key the group has in the log, in the order Kafka deletes them: each
        member's current assignment, target and subscription, then 6, 4 and 3 last."""
        keys = []
        for member in sorted(self.members.keys() | self.targets.keys() | self.current.keys()):
            for kind in (CURRENT_MEMBER_ASSIGNMENT, TARGET_ASSIGNMENT_MEMBER, MEMBER_METADATA):
                keys.append(ConsumerGroupKey(kind, group_id, member))
        keys += [
            ConsumerGroupKey(kind, group_id)
            for kind in (TARGET_ASSIGNMENT_METADATA, PARTITION_METADATA, CONSUMER_GROUP_METADATA)
        ]
        return keys


# --- keys (non-flexible, as all of Kafka's record keys) ---------------------------------------


def _str16(text: str) -> bytes:
    raw = text.encode()
    return _I16.pack(len(raw)) + raw


def encode_consumer_group_key(key: ConsumerGroupKey) -> bytes:
    if key.record_type in _MEMBER_TYPES:
        if key.member_id is None:
            raise ValueError(f"a record of type {key.record_type} names a member")
        return _I16.pack(key.record_type) + _str16(key.group_id) + _str16(key.member_id)
    if key.record_type not in _GROUP_TYPES:
        raise ValueError(f"{key.record_type} is not a consumer group record type")
    return _I16.pack(key.record_type) + _str16(key.group_id)


def decode_consumer_group_key(data: bytes) -> ConsumerGroupKey | None:
    """The key of a record of types 3-8; None for a key of another kind."""
    if len(data) < 2:
        return None
    (kind,) = _I16.unpack_from(data, 0)
    if kind not in _GROUP_TYPES and kind not in _MEMBER_TYPES:
        return None
    strings: list[str] = []
    pos = 2
    try:
        for _ in range(2 if kind in _MEMBER_TYPES else 1):
            (size,) = _I16.unpack_from(data, pos)
            pos += 2
            if size < 0 or pos + size > len(data):
                raise BadRecordError(f"a consumer group key (type {kind}) is cut short")
            strings.append(data[pos : pos + size].decode())
            pos += size
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadRecordError(f"not a consumer group key (type {kind}): {exc}") from None
    if pos != len(data):
        raise BadRecordError(f"{len(data) - pos} bytes after a consumer group key")
    return ConsumerGroupKey(kind, *strings)


# --- values (flexible version 0) ------------------------------------------------------------


def _topic_partitions(topic_id: bytes, partitions: list[int]) -> tuple[bytes, frozenset[int]]:
    return topic_id, frozenset(partitions)


_TOPIC_PARTITIONS = Struct(
    [Field("topic_id", UUID), Field("partitions", Array(INT32))], _topic_partitions
)
_ASSIGNMENT = Array(_TOPIC_PARTITIONS)

_GROUP_METADATA = Struct([Field("epoch", INT32)])
_TARGET_METADATA = Struct([Field("assignment_epoch", INT32)])
_PARTITION_RACKS = Array(Struct([Field("partition", INT32), Field("racks", Array(STRING))]))
_TOPIC_METADATA = Struct(
    [
        Field("topic_id", UUID),
        Field("topic_name", STRING),
        Field("num_partitions", INT32),
        # 4.0's PartitionMetadata (a regular field: [partition, racks]): written empty,
        # as Kafka 4.0 does when no rack is known; read and dropped
        Field("partition_metadata", _PARTITION_RACKS, attr=None),
    ]
)
_PARTITION_METADATA = Struct([Field("topics", Array(_TOPIC_METADATA))])


def _subscription(**fields: Any) -> MemberSubscription:
    fields["subscribed"] = tuple(fields["subscribed"])
    return MemberSubscription(**fields)


def _classic(session_timeout_ms: int, protocols: list[tuple[str, bytes]]) -> ClassicMetadata:
    return ClassicMetadata(session_timeout_ms, tuple(protocols))


def _protocol(name: str, metadata: Any) -> tuple[str, bytes]:
    return name, bytes(metadata)


_CLASSIC = Struct(
    [
        Field("session_timeout_ms", INT32),
        Field(
            "protocols",
            Array(Struct([Field("name", STRING), Field("metadata", BYTES)], _protocol)),
            convert=lambda protocols: [{"name": n, "metadata": m} for n, m in protocols],
        ),
    ],
    _classic,
)


_MEMBER_METADATA = Struct(
    [
        Field("instance_id", NULLABLE_STRING),
        Field("rack_id", NULLABLE_STRING),
        Field("client_id", STRING),
        Field("client_host", STRING),
        Field("subscribed", Array(STRING)),
        Field("regex", NULLABLE_STRING),
        Field("rebalance_timeout_ms", INT32),
        Field("server_assignor", NULLABLE_STRING),
        Field("classic", NullableStruct(_CLASSIC), tag=0),  # ClassicMemberMetadata
    ],
    _subscription,
)
_TARGET_MEMBER = Struct([Field("topic_partitions", _ASSIGNMENT)])


def _member_assignment(**fields: Any) -> MemberAssignment:
    return MemberAssignment(
        fields["epoch"],
        fields["previous_epoch"],
        fields["state"],
        dict(fields["assigned"]),
        dict(fields["pending"]),
    )


_CURRENT_MEMBER = Struct(
    [
        Field("epoch", INT32),
        Field("previous_epoch", INT32),
        Field("state", INT8),
        Field("assigned", _ASSIGNMENT),
        Field("pending", _ASSIGNMENT),
    ],
    _member_assignment,
)


def _pairs(assignment: Assignment) -> list[dict[str, Any]]:
    return [
        {"topic_id": t, "partitions": sorted(parts)}
        for t, parts in sorted(assignment.items())
        if parts
    ]


def encode_consumer_group_value(record_type: int, value: object) -> bytes:
    """A value of ``record_type``: an int (3, 6), a {name: TopicInfo} (4), a
    MemberSubscription (5), an Assignment (7) or a MemberAssignment (8)."""
    body: Any
    if record_type == CONSUMER_GROUP_METADATA:
        schema, body = _GROUP_METADATA, {"epoch": value}
    elif record_type == TARGET_ASSIGNMENT_METADATA:
        schema, body = _TARGET_METADATA, {"assignment_epoch": value}
    elif record_type == PARTITION_METADATA:
        assert isinstance(value, dict)
        schema = _PARTITION_METADATA
        body = {
            "topics": [
                {"topic_id": info.topic_id, "topic_name": name, "num_partitions": info.partitions}
                for name, info in sorted(value.items())
            ]
        }
    elif record_type == MEMBER_METADATA:
        assert isinstance(value, MemberSubscription)
        schema, body = _MEMBER_METADATA, value
    elif record_type == TARGET_ASSIGNMENT_MEMBER:
        assert isinstance(value, dict)
        schema, body = _TARGET_MEMBER, {"topic_partitions": _pairs(value)}
    elif record_type == CURRENT_MEMBER_ASSIGNMENT:
        assert isinstance(value, MemberAssignment)
        schema = _CURRENT_MEMBER
        body = {
            "epoch": value.epoch,
            "previous_epoch": value.previous_epoch,
            "state": value.state,
            "assigned": _pairs(value.assigned),
            "pending": _pairs(value.pending),
        }
    else:
        raise ValueError(f"{record_type} is not a consumer group record type")
    parts = write_message(schema, body, _VALUE_VERSION, True)
    return _I16.pack(_VALUE_VERSION) + b"".join(bytes(p) for p in parts)  # type: ignore[arg-type]


def decode_consumer_group_value(record_type: int, data: bytes) -> object:
    """The value of a record of ``record_type`` (see :func:`encode_consumer_group_value`
    for what each is); BadRecordError if it is not one."""
    schema = {
        CONSUMER_GROUP_METADATA: _GROUP_METADATA,
        PARTITION_METADATA: _PARTITION_METADATA,
        MEMBER_METADATA: _MEMBER_METADATA,
        TARGET_ASSIGNMENT_METADATA: _TARGET_METADATA,
        TARGET_ASSIGNMENT_MEMBER: _TARGET_MEMBER,
        CURRENT_MEMBER_ASSIGNMENT: _CURRENT_MEMBER,
    }.get(record_type)
    if schema is None:
        raise BadRecordError(f"{record_type} is not a consumer group record type")
    if len(data) < 2:
        raise BadRecordError(f"a consumer group value (type {record_type}) without a version")
    (version,) = _I16.unpack_from(data, 0)
    if version != _VALUE_VERSION:
        # (Kafka's later versions add tagged fields only, so far; a new version is a
        # layout this build cannot know)
        raise BadRecordError(
            f"consumer group value version {version} (type {record_type}) is not known"
        )
    try:
        decoded = read_message(schema, memoryview(data)[2:], _VALUE_VERSION, True)
    except MalformedMessageError as exc:
        raise BadRecordError(
            f"not a consumer group value (type {record_type}): {exc.message}"
        ) from None
    if record_type == CONSUMER_GROUP_METADATA:
        return int(decoded["epoch"])
    if record_type == TARGET_ASSIGNMENT_METADATA:
        return int(decoded["assignment_epoch"])
    if record_type == PARTITION_METADATA:
        return {
            t["topic_name"]: TopicInfo(t["topic_id"], t["num_partitions"])
            for t in decoded["topics"]
        }
    if record_type == TARGET_ASSIGNMENT_MEMBER:
        return dict(decoded["topic_partitions"])
    return decoded
