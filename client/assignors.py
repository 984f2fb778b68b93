"""Partition assignors, run by the group's leader.

The coordinator never decides a classic consumer group's assignment: the leader member
receives every member's subscription (JoinGroup), decides, and sends each member its
share (SyncGroup), in the bytes Kafka's Java consumer puts there (ConsumerProtocol,
:mod:`protocol.consumer_protocol`), so a Headwater consumer speaks the same group protocol.

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

Members are ordered as Kafka orders them: static members (``group_instance_id``) first,
by instance id, then the others by member id. A static member that restarts under a new
member id keeps its place, so ``range`` and ``roundrobin`` give it the same partitions.

**Racks (KIP-881).** A member whose consumer has a ``client_rack`` says so in its
subscription, and the leader knows each partition's replicas' racks from its metadata.
``range`` and the sticky assignors then prefer to give a member partitions with a replica
in its rack, so it can read them there (KIP-392) without crossing racks. Balance comes
first, as in Kafka: a member never gets more than its share for a rack's sake. ``range``
assigns the rack-matched partitions first, within each member's share of the topic, and
the rest as before. Topics with the same subscribers and the same partition count stay
co-partitioned (partition p of each goes to one member). The sticky assignors keep a
member's owned partitions that match its rack first, then give out the rest to members
of their racks, and only then keep owned partitions in other racks (Kafka's moves those
even where no member's rack holds them). All of this
applies only when some member has a rack that holds replicas, and some partitions are
not in every rack. Otherwise nothing could be closer, and the assignments are as without
racks. A member without a rack matches every partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from client.types import TopicPartition
from protocol.consumer_protocol import (
    Assignment,
    ProtocolError,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)

__all__ = [
    "ASSIGNORS",
    "COOPERATIVE",
    "NO_RACKS",
    "Assignment",
    "ProtocolError",
    "Racks",
    "Subscription",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
]

# --- assignors ---------------------------------------------------------------------------

Racks = Mapping[TopicPartition, frozenset[str]]
"""Each partition's replicas' racks, where the metadata names them (KIP-881)."""

NO_RACKS: Racks = MappingProxyType({})

Assignor = Callable[
    [Mapping[str, int], Mapping[str, Subscription], Racks], dict[str, list[TopicPartition]]
]
"""(partitions per topic, member -> subscription, partition -> its replicas' racks) ->
member -> its partitions."""


def _ordered(ids: Iterable[str], members: Mapping[str, Subscription]) -> list[str]:
    """Kafka's MemberInfo order: static members by instance id, then the rest by id."""

    def key(member: str) -> tuple[int, str]:
        instance = members[member].instance_id
        return (1, member) if instance is None else (0, instance)

    return sorted(ids, key=key)


def _rack(sub: Subscription) -> str | None:
    return sub.rack or None  # an empty rack is none, as Kafka's


def _rack_aware(member_racks: set[str], racks: list[frozenset[str]]) -> bool:
    """Kafka's useRackAwareAssignment: a member rack holds replicas, and the partitions
    are not all in the same racks (else no choice is closer than another)."""
    every = frozenset().union(*racks) if racks else frozenset()
    if not member_racks or member_racks.isdisjoint(every):
        return False
    return any(r != every for r in racks)


class _TopicShare:
    """One topic's range assignment in progress: its subscribers, each one's share, the
    partitions not given out yet (Kafka's RangeAssignor.TopicAssignmentState)."""

    def __init__(
        self,
        topic: str,
        count: int,
        consumers: list[str],
        members: Mapping[str, Subscription],
        racks: Racks,
    ) -> None:
        self.topic = topic
        self.consumers = consumers
        self.member_racks = {c: _rack(members[c]) for c in consumers}
        named = {r for r in self.member_racks.values() if r is not None}
        self.replica_racks = (
            [racks.get(TopicPartition(topic, p), frozenset()) for p in range(count)]
            if named
            else []
        )
        self.rack_aware = _rack_aware(named, self.replica_racks)
        self.unassigned = dict.fromkeys(range(count))  # ordered, as a LinkedHashSet
        self.assigned = dict.fromkeys(consumers, 0)
        self.share, self.extra = divmod(count, len(consumers))

    def matches(self, consumer: str, partition: int) -> bool:
        rack = self.member_racks[consumer]
        return rack is None or rack in self.replica_racks[partition]

    def room(self, consumer: str) -> int:
        return max(0, self.share + (1 if self.extra > 0 else 0) - self.assigned[consumer])

    def give(self, consumer: str, parts: list[int], out: dict[str, list[TopicPartition]]) -> None:
        out[consumer] += [TopicPartition(self.topic, p) for p in parts]
        self.assigned[consumer] += len(parts)
        if self.assigned[consumer] > self.share:
            self.extra -= 1
        for p in parts:
            del self.unassigned[p]

    def ranges(self, out: dict[str, list[TopicPartition]], *, matching: bool) -> None:
        """Each consumer in order takes the first unassigned partitions (those in its
        rack, if ``matching``) up to its share."""
        for consumer in self.consumers:
            if not self.unassigned:
                return
            room = self.room(consumer)
            if room == 0:
                continue
            parts = [p for p in self.unassigned if not matching or self.matches(consumer, p)]
            if parts[:room]:
                self.give(consumer, parts[:room], out)


def _co_partitioned(shares: list[_TopicShare], out: dict[str, list[TopicPartition]]) -> None:
    """Topics with the same subscribers and partition count: partition p of all of them
    to the first consumer in the racks of every one's p with room in every topic, so
    they stay co-partitioned while matching racks."""
    remaining = list(shares[0].consumers)
    # (no member racks: no partition racks, so none here, as in Kafka, which groups by
    # that count: such topics are not co-partitioned even if their counts differ)
    for p in range(len(shares[0].replica_racks)):
        consumer = next(
            (c for c in remaining if all(s.matches(c, p) and s.room(c) > 0 for s in shares)),
            None,
        )
        if consumer is None:
            continue
        for share in shares:
            share.give(consumer, [p], out)
        if all(share.room(consumer) == 0 for share in shares):
            remaining.remove(consumer)
            if not remaining:
                return


def range_assign(
    partitions: Mapping[str, int],
    members: Mapping[str, Subscription],
    racks: Racks = NO_RACKS,
) -> dict[str, list[TopicPartition]]:
    """Per topic, contiguous ranges over the ordered subscribers; with racks, the
    rack-matched partitions of each share first (Kafka's RangeAssignor since 3.5)."""
    out: dict[str, list[TopicPartition]] = {m: [] for m in members}
    shares = []
    for topic, count in sorted(partitions.items()):
        subscribed = _ordered((m for m, s in members.items() if topic in s.topics), members)
        if subscribed and count > 0:
            shares.append(_TopicShare(topic, count, subscribed, members, racks))
    rack_aware = any(share.rack_aware for share in shares)
    if rack_aware:
        groups: dict[tuple[tuple[tuple[str, str | None], ...], int], list[_TopicShare]] = {}
        for share in shares:
            key = (tuple(share.member_racks.items()), len(share.replica_racks))
            groups.setdefault(key, []).append(share)
        for group in groups.values():
            if len(group) > 1:
                _co_partitioned(group, out)
            elif group[0].rack_aware:
                group[0].ranges(out, matching=True)
    for share in shares:
        share.ranges(out, matching=False)
    if rack_aware:
        for tps in out.values():
            tps.sort()
    return out


def roundrobin_assign(
    partitions: Mapping[str, int],
    members: Mapping[str, Subscription],
    racks: Racks = NO_RACKS,  # (Kafka's round robin does not look at racks either)
) -> dict[str, list[TopicPartition]]:
    out: dict[str, list[TopicPartition]] = {m: [] for m in members}
    order = _ordered(members, members)
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


def _claims(members: Mapping[str, Subscription]) -> dict[TopicPartition, str | None]:
    """Each claimed partition's owner: of two claims on it, the newer generation's; of two
    in one generation, neither (None: both may still hold it)."""
    best: dict[TopicPartition, tuple[int, str | None]] = {}
    for member in sorted(members):
        sub = members[member]
        for tp in dict.fromkeys(sub.owned):  # (a partition it lists twice is one claim)
            held = best.get(tp)
            if held is None or sub.generation > held[0]:
                best[tp] = (sub.generation, member)
            elif sub.generation == held[0]:
                best[tp] = (held[0], None)
    return {tp: holder for tp, (_, holder) in best.items()}


def _owned(members: Mapping[str, Subscription]) -> dict[str, list[TopicPartition]]:
    """Each member's claims that stand (see :func:`_claims`)."""
    out: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for tp, holder in _claims(members).items():
        if holder is not None:
            out[holder].append(tp)
    return out


class _StickyPlan:
    """A sticky assignment in progress: each member's quota and what it has so far."""

    def __init__(
        self, partitions: Mapping[str, int], members: Mapping[str, Subscription], racks: Racks
    ) -> None:
        self.members = members
        self.racks = racks
        self.out: dict[str, list[TopicPartition]] = {m: [] for m in members}
        self.owned = _owned(members)
        self.every = [
            TopicPartition(t, p)
            for t, n in sorted(partitions.items())
            for p in range(n)
            if any(t in s.topics for s in members.values())
        ]
        share, extra = divmod(len(self.every), len(members))
        # the members that may hold one more than the share: those owning the most first
        self.by_owned = sorted(members, key=lambda m: (-len(self.owned[m]), m))
        self.quota = {m: share + (1 if i < extra else 0) for i, m in enumerate(self.by_owned)}
        self.member_racks = {m: _rack(s) for m, s in members.items()}
        named = {r for r in self.member_racks.values() if r is not None}
        self.aware = bool(named) and _rack_aware(
            named, [racks.get(tp, frozenset()) for tp in self.every]
        )
        self.taken: set[TopicPartition] = set()
        self.valid = set(self.every)

    def matches(self, member: str, tp: TopicPartition) -> bool:
        rack = self.member_racks[member]
        return not self.aware or rack is None or rack in self.racks.get(tp, frozenset())

    def give(self, member: str, tp: TopicPartition) -> None:
        self.out[member].append(tp)
        self.taken.add(tp)

    def keep(self, *, in_rack: bool) -> None:
        """Each member keeps what it owned (in its rack, or not), up to its quota."""
        for member in self.by_owned:
            topics = self.members[member].topics
            for tp in sorted(self.owned[member]):
                if len(self.out[member]) >= self.quota[member]:
                    break
                if (
                    tp in self.valid
                    and tp not in self.taken
                    and tp.topic in topics
                    and self.matches(member, tp) == in_rack
                ):
                    self.give(member, tp)

    def hand_out(self, *, in_rack: bool) -> None:
        """The partitions nobody has yet, each to the least loaded member subscribed (in
        its rack and under its quota, if ``in_rack``)."""
        out, quota = self.out, self.quota
        for tp in self.every:
            if tp in self.taken:
                continue
            eligible = [
                m
                for m in self.members
                if tp.topic in self.members[m].topics
                and (not in_rack or (len(out[m]) < quota[m] and self.matches(m, tp)))
            ]
            if eligible:
                self.give(min(eligible, key=lambda m: (len(out[m]) - quota[m], len(out[m]), m)), tp)


def sticky_assign(
    partitions: Mapping[str, int],
    members: Mapping[str, Subscription],
    racks: Racks = NO_RACKS,
) -> dict[str, list[TopicPartition]]:
    """Balanced; each member keeps what it owned, up to its fair share. With racks:
    first what it owned in its rack; then the partitions not yet given (unowned, or
    owned by a member of another rack) go to members in their racks; then owned ones
    in other racks are kept; then the rest. Balance first, then racks, then stickiness,
    as Kafka's AbstractStickyAssignor, but stickier: Kafka's has no third step, so it
    moves an owned partition out of its owner's rack even where nobody's rack holds it."""
    if not members:
        return {}
    plan = _StickyPlan(partitions, members, racks)
    plan.keep(in_rack=True)
    if plan.aware:
        plan.hand_out(in_rack=True)
        plan.keep(in_rack=False)
    plan.hand_out(in_rack=False)
    return plan.out


def cooperative_sticky_assign(
    partitions: Mapping[str, int],
    members: Mapping[str, Subscription],
    racks: Racks = NO_RACKS,
) -> dict[str, list[TopicPartition]]:
    """:func:`sticky_assign`, less the partitions it moves from one member to another:
    those wait a round, until their owner has given them up (Kafka's
    CooperativeStickyAssignor)."""
    shares = sticky_assign(partitions, members, racks)
    # unclaimed, or claimed by the member itself; not one another claims, nor one two
    # members claim in one generation (both may still hold it: nobody gets it this
    # round, each gives it up, not having been given it)
    claims = _claims(members)
    return {m: [tp for tp in tps if claims.get(tp, m) == m] for m, tps in shares.items()}


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
