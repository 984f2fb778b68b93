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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
    "Assignment",
    "ProtocolError",
    "Subscription",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
]

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
