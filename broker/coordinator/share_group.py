"""A share group (Kafka's KIP-932, ShareGroupHeartbeat): members that read a topic's
records together, each record delivered to one of them at a time, acknowledged one by one
(the records' states are kept by each partition's leader, see
:mod:`broker.replica.share_partition`). Pure: no sockets, no log; time passes through
:meth:`ShareGroup.tick`.

Membership is Kafka's new protocol without revocation: the coordinator assigns, and a
member takes its whole target at its next heartbeat (a partition may be read by several
members at once: the leader's record locks keep deliveries apart, so no member waits for
another to let go).

Epochs (Kafka's):

- the **group epoch** goes up when a member joins, leaves, is fenced, or changes its
  subscription, and when a subscribed topic is made, deleted or grows;
- the **assignment epoch** is the group epoch the target assignment was computed at
  (at the next heartbeat after a bump);
- a **member epoch** is the assignment epoch of the target it was last given.

The member id is the client's (ShareGroupHeartbeat v1, KIP-1082: a UUID the consumer keeps
for its life).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from protocol.consumer_group_log import Assignment, TopicInfo
from protocol.errors import (
    FencedMemberEpochError,
    GroupMaxSizeReachedError,
    InvalidRequestError,
    UnknownMemberIdError,
)

__all__ = ["LEAVE", "ShareGroup", "ShareHeartbeatAnswer", "ShareMember", "assign_simple"]

LEAVE = -1
"""The member epoch a heartbeat sends to leave."""

Topics = Callable[[], Mapping[str, TopicInfo]]
"""The cluster's topics now (the broker's metadata), by name."""


@dataclass(slots=True)
class ShareMember:
    member_id: str
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed: tuple[str, ...] = ()
    epoch: int = 0
    previous_epoch: int = -1
    assigned: Assignment = field(default_factory=dict)
    session_deadline_ms: int = 0


class ShareHeartbeatAnswer(NamedTuple):
    member_id: str
    epoch: int
    assignment: Assignment | None
    """None: unchanged since the member's last heartbeat (not sent)."""


@dataclass(slots=True)
class ShareGroup:
    group_id: str
    topics: Topics
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 5_000
    max_size: int = 200
    epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ShareMember] = field(default_factory=dict)
    target: dict[str, Assignment] = field(default_factory=dict)
    subscribed_topics: dict[str, TopicInfo] = field(default_factory=dict)
    """The subscribed topics as the target assignment saw them: a change bumps the epoch."""
    protocol_type: str = "share"

    @property
    def state(self) -> str:
        """Kafka's share group states: Empty or Stable (no assigning or reconciling)."""
        return "Stable" if self.members else "Empty"

    @property
    def assignor(self) -> str:
        return "simple"

    def heartbeat(
        self,
        member_id: str,
        member_epoch: int,
        now_ms: int,
        *,
        rack_id: str | None = None,
        subscribed: list[str] | None = None,
        client_id: str = "",
        client_host: str = "",
    ) -> ShareHeartbeatAnswer:
        """A ShareGroupHeartbeat with a member epoch of 0 (join, or rejoin) or more; for
        -1 see :meth:`leave`. Raises the request's error (nothing changed then)."""
        check_heartbeat(member_id, member_epoch, rack_id, subscribed)
        member = self.members.get(member_id)
        bump = False
        if member is None:
            if member_epoch != 0:
                raise UnknownMemberIdError(
                    f"member {member_id!r} is not in share group {self.group_id!r}: rejoin"
                )
            if len(self.members) >= self.max_size:
                raise GroupMaxSizeReachedError(
                    f"share group {self.group_id!r} has {len(self.members)} members, "
                    f"group.share.max.size"
                )
            member = ShareMember(member_id)
            self.members[member_id] = member
            bump = True
        elif member_epoch not in (0, member.epoch, member.previous_epoch):
            raise FencedMemberEpochError(
                f"member {member_id!r} sent epoch {member_epoch}; the group has it at "
                f"{member.epoch}: rejoin"
            )
        member.rack_id, member.client_id, member.client_host = rack_id, client_id, client_host
        if subscribed is not None and tuple(sorted(set(subscribed))) != member.subscribed:
            member.subscribed = tuple(sorted(set(subscribed)))
            bump = True
        if not self._refresh_topics() and bump:  # (a topics change bumps it already)
            self.epoch += 1
        if self.assignment_epoch < self.epoch:
            self._assign()
        before = member.assigned
        target = self.target.get(member_id, {})
        if member.epoch != self.assignment_epoch or member.assigned != target:
            member.previous_epoch, member.epoch = member.epoch, self.assignment_epoch
            member.assigned = target
        member.session_deadline_ms = now_ms + self.session_timeout_ms
        send = member_epoch == 0 or subscribed is not None or member.assigned != before
        return ShareHeartbeatAnswer(
            member_id, member.epoch, dict(member.assigned) if send else None
        )

    def leave(self, member_id: str) -> None:
        """A heartbeat with epoch -1: the member is gone, the group epoch goes up."""
        if member_id not in self.members:
            raise UnknownMemberIdError(
                f"member {member_id!r} is not in share group {self.group_id!r}"
            )
        self.fence(member_id)

    def fence(self, member_id: str) -> None:
        if self.members.pop(member_id, None) is not None:
            self.target.pop(member_id, None)
            self.epoch += 1

    def tick(self, now_ms: int) -> list[str]:
        """Members silent for the session timeout are fenced. Returns them."""
        gone = [m.member_id for m in self.members.values() if m.session_deadline_ms <= now_ms]
        for member_id in gone:
            self.fence(member_id)
        return gone

    def next_deadline(self) -> int | None:
        return min((m.session_deadline_ms for m in self.members.values()), default=None)

    def topics_changed(self) -> bool:
        """The cluster's topics changed: the group epoch goes up if a subscribed topic was
        made, deleted or grew. Returns whether it did."""
        return self._refresh_topics()

    def subscribed_topic_names(self) -> set[str]:
        return {t for m in self.members.values() for t in m.subscribed}

    def _refresh_topics(self) -> bool:
        topics = self.topics()
        now = {t: topics[t] for t in self.subscribed_topic_names() if t in topics}
        if now == self.subscribed_topics:
            return False
        self.subscribed_topics = now
        self.epoch += 1
        return True

    def _assign(self) -> None:
        members = {m.member_id: set(m.subscribed) for m in self.members.values()}
        self.target = assign_simple(members, self.subscribed_topics, self.target)
        self.assignment_epoch = self.epoch


def check_heartbeat(
    member_id: str, member_epoch: int, rack_id: str | None, subscribed: list[str] | None
) -> None:
    """Kafka's checks of a ShareGroupHeartbeat (INVALID_REQUEST)."""
    if not member_id.strip():
        raise InvalidRequestError("a share group member must send its member id (a UUID)")
    if member_epoch < LEAVE:
        raise InvalidRequestError(f"member epoch {member_epoch} is not -1 or more")
    if rack_id is not None and not rack_id.strip():
        raise InvalidRequestError("the rack id must not be blank")
    if member_epoch == 0 and not subscribed:
        raise InvalidRequestError("a member joining a share group must subscribe to topics")


def assign_simple(
    members: Mapping[str, set[str]],
    topics: Mapping[str, TopicInfo],
    previous: Mapping[str, Assignment],
) -> dict[str, Assignment]:
    """Kafka's ``simple`` share assignor, in its properties: per topic, with no more
    subscribers than partitions, each partition to one subscriber, none more than one
    apart; with more subscribers than partitions, each subscriber gets one partition and
    each partition as even a share of them. What the previous target gave a member stays
    with it where that keeps the balance (sticky)."""
    out: dict[str, dict[bytes, set[int]]] = {m: {} for m in members}
    for name, info in sorted(topics.items()):
        subscribers = sorted(m for m, wanted in members.items() if name in wanted)
        if not subscribers or info.partitions <= 0:
            continue
        had = {
            m: sorted(p for p in previous.get(m, {}).get(info.topic_id, ()) if p < info.partitions)
            for m in subscribers
        }
        if len(subscribers) <= info.partitions:
            given = _spread(subscribers, info.partitions, had)
        else:
            given = _share(subscribers, info.partitions, had)
        for m, parts in given.items():
            if parts:
                out[m][info.topic_id] = parts
    return {m: {t: frozenset(ps) for t, ps in by_topic.items()} for m, by_topic in out.items()}


def _spread(
    subscribers: list[str], partitions: int, had: Mapping[str, list[int]]
) -> dict[str, set[int]]:
    """Each partition to one subscriber: ``partitions // n`` each, one more for the first
    ``partitions % n`` (those that held the most first)."""
    base, extra = divmod(partitions, len(subscribers))
    order = sorted(subscribers, key=lambda m: (-len(had[m]), m))
    cap = {m: base + (1 if i < extra else 0) for i, m in enumerate(order)}
    owner: dict[int, str] = {}
    given: dict[str, set[int]] = {m: set() for m in subscribers}
    for m in order:
        for p in had[m]:
            if len(given[m]) >= cap[m]:
                break
            if p not in owner:
                owner[p] = m
                given[m].add(p)
    free = (p for p in range(partitions) if p not in owner)
    for m in order:
        while len(given[m]) < cap[m]:
            given[m].add(next(free))
    return given


def _share(
    subscribers: list[str], partitions: int, had: Mapping[str, list[int]]
) -> dict[str, set[int]]:
    """More subscribers than partitions: one partition each, every partition read by
    ``n // partitions`` or one more of them."""
    base, extra = divmod(len(subscribers), partitions)
    cap = [base + (1 if p < extra else 0) for p in range(partitions)]
    load = [0] * partitions
    given: dict[str, set[int]] = {}
    rest = []
    for m in subscribers:
        kept = next((p for p in had[m] if load[p] < cap[p]), None)
        if kept is None:
            rest.append(m)
        else:
            load[kept] += 1
            given[m] = {kept}
    for m in rest:
        p = min(range(partitions), key=lambda q: (load[q] - cap[q], load[q], q))
        load[p] += 1
        given[m] = {p}
    return given
