"""Kafka's consumer protocol bytes (its Java client's ConsumerProtocol): what a classic
group's members put in JoinGroup and SyncGroup, opaque to the coordinator, read by the
leader member that assigns, by the admin tools that describe a group, and by the
coordinator where Kafka's does (which topics a group subscribes to, for OffsetDelete and
offsets expiry; a group of the new protocol shown in DescribeGroups' classic form):

    Subscription v3 = version:i16 | topics:[str16] | user_data:bytes | owned:[topic:str16,
                      partitions:[i32]] | generation:i32 | rack:str16 (-1: null)
                      (v0 stops after user_data, v1 after owned, v2 after generation)
    Assignment  v0 = version:i16 | assigned:[topic:str16, partitions:[i32]] | user_data:bytes

Arrays are an i32 count then the items; ``bytes`` an i32 length (-1: null) then the bytes.
Pure: bytes in, objects out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from protocol.topic_partition import TopicPartition

__all__ = [
    "Assignment",
    "ProtocolError",
    "Subscription",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
]


_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: list[str]
    user_data: bytes | None = None
    owned: list[TopicPartition] = field(default_factory=list)
    generation: int = -1
    """The generation ``owned`` was assigned in (-1: unknown, a v0/v1 subscription)."""
    rack: str | None = None
    """The member's ``client_rack`` (v3, KIP-881): the assignors prefer partitions with a
    replica in it."""
    instance_id: str | None = field(default=None, compare=False)
    """Its ``group_instance_id``, from the JoinGroup answer (not in the bytes, as Kafka's
    Subscription.groupInstanceId): static members are ordered by it, so a restart under
    a new member id keeps their ranges."""


@dataclass(frozen=True, slots=True)
class Assignment:
    partitions: list[TopicPartition]
    user_data: bytes | None = None


class ProtocolError(ValueError):
    """Bytes that are not Kafka's consumer protocol."""


# --- bytes -------------------------------------------------------------------------------


def _str(text: str) -> bytes:
    raw = text.encode()
    return _I16.pack(len(raw)) + raw


def _bytes(data: bytes | None) -> bytes:
    return _I32.pack(-1) if data is None else _I32.pack(len(data)) + data


def _partitions(tps: list[TopicPartition]) -> bytes:
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    out = [_I32.pack(len(by_topic))]
    for topic, parts in sorted(by_topic.items()):
        out += [_str(topic), _I32.pack(len(parts)), *(_I32.pack(p) for p in sorted(parts))]
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, s: struct.Struct) -> int:
        if self.pos + s.size > len(self.data):
            raise ProtocolError("the consumer protocol bytes end too soon")
        (value,) = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return int(value)

    def string(self) -> str:
        size = self.take(_I16)
        if size < 0 or self.pos + size > len(self.data):
            raise ProtocolError("a bad string in the consumer protocol bytes")
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        return raw.decode()

    def nullable_string(self) -> str | None:
        """Any negative length is null, as Kafka's readers take it."""
        if self.pos + 2 <= len(self.data) and _I16.unpack_from(self.data, self.pos)[0] < 0:
            self.pos += 2
            return None
        return self.string()

    def blob(self) -> bytes | None:
        size = self.take(_I32)
        if size < 0:
            return None
        if self.pos + size > len(self.data):
            raise ProtocolError("user data runs past the end")
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        return raw

    def count(self) -> int:
        n = self.take(_I32)
        if n < 0 or n > len(self.data):
            raise ProtocolError(f"a bad array length {n}")
        return n

    def partitions(self) -> list[TopicPartition]:
        out = []
        for _ in range(self.count()):
            topic = self.string()
            out += [TopicPartition(topic, self.take(_I32)) for _ in range(self.count())]
        return out


def encode_subscription(sub: Subscription) -> bytes:
    """Version 3, as Kafka's consumers since 3.5 (older ones read the fields they know)."""
    topics = b"".join(_str(t) for t in sorted(sub.topics))
    return (
        _I16.pack(3)
        + _I32.pack(len(sub.topics))
        + topics
        + _bytes(sub.user_data)
        + _partitions(sub.owned)
        + _I32.pack(sub.generation)
        + (_I16.pack(-1) if sub.rack is None else _str(sub.rack))
    )


def decode_subscription(data: bytes) -> Subscription:
    try:
        r = _Reader(bytes(data))
        version = r.take(_I16)
        topics = [r.string() for _ in range(r.count())]
        user_data = r.blob()
        owned = r.partitions() if version >= 1 and r.pos < len(r.data) else []
        generation = r.take(_I32) if version >= 2 and r.pos < len(r.data) else -1
        rack = r.nullable_string() if version >= 3 and r.pos < len(r.data) else None
    except UnicodeDecodeError as exc:
        raise ProtocolError(str(exc)) from None
    return Subscription(topics, user_data, owned, generation, rack)


def encode_assignment(assignment: Assignment) -> bytes:
    return _I16.pack(0) + _partitions(assignment.partitions) + _bytes(assignment.user_data)


def decode_assignment(data: bytes) -> Assignment:
    if not data:
        return Assignment([])  # a member the leader gave nothing
    try:
        r = _Reader(bytes(data))
        r.take(_I16)
        partitions = r.partitions()
        user_data = r.blob() if r.pos < len(r.data) else None
    except UnicodeDecodeError as exc:
        raise ProtocolError(str(exc)) from None
    return Assignment(partitions, user_data)
