"""Partition assignors and Kafka's consumer protocol bytes, run by the group's leader.

The coordinator never looks inside a consumer group's subscriptions and assignments: the
leader member receives every member's subscription (JoinGroup), decides, and sends each
member its share (SyncGroup). These are the bytes Kafka's Java consumer puts there
(ConsumerProtocol), so a Headwater consumer speaks the same group protocol:

    Subscription v2 = version:i16 | topics:[str16] | user_data:bytes | owned:[topic:str16,
                      partitions:[i32]] | generation:i32
                      (v0 stops after user_data, v1 after owned; v3 adds rack:str16)
    Assignment  v0 = version:i16 | assigned:[topic:str16, partitions:[i32]] | user_data:bytes

Arrays are an i32 count then the items; ``bytes`` an i32 length (-1: null) then the bytes.

Assignors, as Kafka's: ``range`` (per topic, contiguous ranges over the members sorted by
id), ``roundrobin`` (all partitions in order, dealt to the members in turn, skipping those
not subscribed), and ``sticky`` (balanced, and moving as few partitions as possible from
their owners: each member keeps what it owned up to its fair share, the rest goes to the
least loaded), and ``cooperative-sticky`` (KIP-429: sticky, but a partition owned by one
member and given to another is given to nobody this round; its owner sees it missing from
its assignment, gives it up and joins again, and the next round hands it over). All are
pure functions of the subscriptions.

A partition that two members claim to own (a member that lost its generation and does
not know it yet) counts as owned by the one of the newer generation, and by neither if
they claim the same one (Kafka's AbstractStickyAssignor).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from client.types import TopicPartition

__all__ = [
    "ASSIGNORS",
    "COOPERATIVE",
    "Assignment",
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
    topics = b"".join(_str(t) for t in sorted(sub.topics))
    return (
        _I16.pack(2)
        + _I32.pack(len(sub.topics))
        + topics
        + _bytes(sub.user_data)
        + _partitions(sub.owned)
        + _I32.pack(sub.generation)
    )


def decode_subscription(data: bytes) -> Subscription:
    try:
        r = _Reader(bytes(data))
        version = r.take(_I16)
        topics = [r.string() for _ in range(r.count())]
        user_data = r.blob()
        owned = r.partitions() if version >= 1 and r.pos < len(r.data) else []
        generation = r.take(_I32) if version >= 2 and r.pos < len(r.data) else -1
    except UnicodeDecodeError as exc:
        raise ProtocolError(str(exc)) from None
    return Subscription(topics, user_data, owned, generation)  # a v3 rack is not used


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


# --- assignors ---------------------------------------------------------------------------

Assignor = Callable[
    [Mapping[str, int], Mapping[str, Subscription]], dict[str, list[TopicPartition]]
]
"""(partitions per topic, member -> subscription) -> member -> its partitions."""


def range_assign(
    partitions: Mapping[str, int], members: Mapping[str, Subscription]
) -> dict[str, list[TopicPartition]]:
    out: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for topic, count in sorted(partitions.items()):
        subscribed = sorted(m for m, s in members.items() if topic in s.topics)
        if not subscribed:
            continue
        share, extra = divmod(count, len(subscribed))
        start = 0
        for i, member in enumerate(subscribed):
            n = share + (1 if i < extra else 0)
            out[member] += [TopicPartition(topic, p) for p in range(start, start + n)]
            start += n
    return out


def roundrobin_assign(
    partitions: Mapping[str, int], members: Mapping[str, Subscription]
) -> dict[str, list[TopicPartition]]:
    out: dict[str, list[TopicPartition]] = {m: [] for m in members}
    order = sorted(members)
    if not order:
        return out
    turn = 0
    for topic, count in sorted(partitions.items()):
        for p in range(count):
            for _ in range(len(order)):  # the next member in turn subscribed to the topic
                member = order[turn % len(order)]
                turn += 1
                if topic in members[member].topics:
                    out[member].append(TopicPartition(topic, p))
                    break
    return out


def _owned(members: Mapping[str, Subscription]) -> dict[str, list[TopicPartition]]:
    """Each member's claims that stand: of two claims on one partition, the newer
    generation's; of two in one generation, neither."""
    best: dict[TopicPartition, tuple[int, str | None]] = {}
    for member in sorted(members):
        sub = members[member]
        for tp in sub.owned:
            held = best.get(tp)
            if held is None or sub.generation > held[0]:
                best[tp] = (sub.generation, member)
            elif sub.generation == held[0]:
                best[tp] = (held[0], None)
    out: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for tp, (_, holder) in best.items():
        if holder is not None:
            out[holder].append(tp)
    return out


def sticky_assign(
    partitions: Mapping[str, int], members: Mapping[str, Subscription]
) -> dict[str, list[TopicPartition]]:
    """Balanced; each member keeps what it owned, up to its fair share."""
    out: dict[str, list[TopicPartition]] = {m: [] for m in members}
    if not members:
        return out
    owned = _owned(members)
    every = [
        TopicPartition(t, p)
        for t, n in sorted(partitions.items())
        for p in range(n)
        if any(t in s.topics for s in members.values())
    ]
    share, extra = divmod(len(every), len(members))
    # the members that may hold one more than the share: those owning the most first
    by_owned = sorted(members, key=lambda m: (-len(owned[m]), m))
    quota = {m: share + (1 if i < extra else 0) for i, m in enumerate(by_owned)}
    taken: set[TopicPartition] = set()
    valid = set(every)
    for member in by_owned:
        sub = members[member]
        for tp in sorted(owned[member]):
            if len(out[member]) >= quota[member]:
                break
            if tp in valid and tp not in taken and tp.topic in sub.topics:
                out[member].append(tp)
                taken.add(tp)
    for tp in every:
        if tp in taken:
            continue
        eligible = [m for m in members if tp.topic in members[m].topics]
        member = min(eligible, key=lambda m: (len(out[m]) - quota[m], len(out[m]), m))
        out[member].append(tp)
        taken.add(tp)
    return out


def cooperative_sticky_assign(
    partitions: Mapping[str, int], members: Mapping[str, Subscription]
) -> dict[str, list[TopicPartition]]:
    """:func:`sticky_assign`, less the partitions it moves from one member to another:
    those wait a round, until their owner has given them up (Kafka's
    CooperativeStickyAssignor)."""
    shares = sticky_assign(partitions, members)
    owner = {tp: m for m, tps in _owned(members).items() for tp in tps}
    return {m: [tp for tp in tps if owner.get(tp, m) == m] for m, tps in shares.items()}


ASSIGNORS: dict[str, Assignor] = {
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "sticky": sticky_assign,
    "cooperative-sticky": cooperative_sticky_assign,
}
"""By Kafka's protocol names (``partition.assignment.strategy``)."""

COOPERATIVE = frozenset({"cooperative-sticky"})
"""The assignors that support KIP-429's cooperative rebalancing: a consumer whose every
strategy is one of these keeps its partitions through a rebalance and gives up only those
that move."""
