"""A consumer group of Kafka's new protocol (KIP-848, ConsumerGroupHeartbeat): the group
coordinator assigns the partitions, and each member converges to its share one heartbeat
at a time. Pure: no sockets, no log; time passes through :meth:`ConsumerGroup.tick`.

Epochs (Kafka's):

- the **group epoch** goes up whenever what the assignment depends on changes: a member
  joins with a subscription, changes it, leaves or is fenced, or a subscribed topic is
  made, deleted or grows;
- the **assignment epoch** is the group epoch the target assignment was computed at
  (lazily, at the next heartbeat after a bump: one assignor run for every member);
- a **member epoch** is the assignment epoch the member has converged to.

A member converges in steps (Kafka's CurrentAssignmentBuilder): it keeps the partitions
it has that its target keeps; partitions it must give up are revoked first (state
UNREVOKED_PARTITIONS, epoch unchanged) until a heartbeat no longer lists them as owned;
then it gets the epoch of the target and the new partitions that no other member still
holds (UNRELEASED_PARTITIONS while some are held, STABLE once it has them all). So no
partition is owned by two members at once.

A member that is not heard from for the session timeout is fenced (removed, its
partitions free), as is one that does not revoke within its rebalance timeout.
"""

from __future__ import annotations

import base64
import collections
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import re2

from protocol.consumer_group_log import (
    CONSUMER_GROUP_METADATA,
    CURRENT_MEMBER_ASSIGNMENT,
    MEMBER_METADATA,
    PARTITION_METADATA,
    TARGET_ASSIGNMENT_MEMBER,
    TARGET_ASSIGNMENT_METADATA,
    Assignment,
    ClassicMetadata,
    ConsumerGroupImage,
    ConsumerGroupKey,
    MemberAssignment,
    MemberSubscription,
    TopicInfo,
)
from protocol.consumer_protocol import ProtocolError, decode_subscription
from protocol.errors import (
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    FencedMemberEpochError,
    GroupMaxSizeReachedError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidRegularExpressionError,
    RebalanceInProgressError,
    StaleMemberEpochError,
    UnknownMemberIdError,
    UnreleasedInstanceIdError,
    UnsupportedAssignorError,
    UnsupportedVersionError,
)

__all__ = [
    "ASSIGNORS",
    "ConsumerGroup",
    "ConsumerMember",
    "HeartbeatAnswer",
    "TopicInfo",
    "assign_range",
    "assign_uniform",
    "new_member_id",
]

STABLE, UNREVOKED_PARTITIONS, UNRELEASED_PARTITIONS = 0, 1, 2
"""A member's state (Kafka's MemberState)."""
LEAVE, STATIC_LEAVE = -1, -2
"""Member epochs a heartbeat sends to leave (a static member: for now, to come back)."""

Topics = Callable[[], Mapping[str, TopicInfo]]
"""The cluster's topics now (the broker's metadata), by name."""


@dataclass(slots=True)
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = 300_000
    subscribed: tuple[str, ...] = ()
    regex: str | None = None
    server_assignor: str | None = None
    epoch: int = 0
    previous_epoch: int = -1
    state: int = STABLE
    assigned: Assignment = field(default_factory=dict)
    pending: Assignment = field(default_factory=dict)
    """Partitions being revoked: still the member's until a heartbeat says otherwise."""
    session_deadline_ms: int = 0
    revocation_deadline_ms: int | None = None
    revocation_epoch: int = -1
    describable: Callable[[str], bool] = field(default=lambda topic: True, repr=False)
    """Which topics its regex may give it (its principal's DESCRIBE, Kafka's KAFKA-18813)."""
    restored: bool = False
    """Built from the log: its principal is not known until its next heartbeat."""
    classic: ClassicMetadata | None = None
    """A member that speaks the classic protocol (JoinGroup, SyncGroup, Heartbeat; Kafka's
    online migration): its session timeout and protocols. None: the new protocol."""
    join_deadline_ms: int | None = None
    """A classic member told to rejoin: fenced if it has not by then (its rebalance
    timeout)."""
    sync_deadline_ms: int | None = None
    """A classic member that joined: fenced if it has not synced by then."""

    def subscription(self) -> MemberSubscription:
        """Its record 5."""
        return MemberSubscription(
            self.instance_id,
            self.rack_id,
            self.client_id,
            self.client_host,
            self.subscribed,
            self.regex,
            self.rebalance_timeout_ms,
            self.server_assignor,
            self.classic,
        )

    def assignment(self) -> MemberAssignment:
        """Its record 8."""
        return MemberAssignment(
            self.epoch, self.previous_epoch, self.state, self.assigned, self.pending
        )


class HeartbeatAnswer(NamedTuple):
    member_id: str
    epoch: int
    assignment: Assignment | None
    """None: unchanged since the member's last heartbeat (not sent)."""


@dataclass(slots=True)
class ConsumerGroup:
    """One group of the new protocol. ``assignors``: the server assignors by name, the
    first the default (``group.consumer.assignors``)."""

    group_id: str
    topics: Topics
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 5_000
    max_size: int = 2**31 - 1
    assignor_names: tuple[str, ...] = ("uniform", "range")
    epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ConsumerMember] = field(default_factory=dict)
    target: dict[str, Assignment] = field(default_factory=dict)
    owners: dict[tuple[bytes, int], str] = field(default_factory=dict)
    """Each partition a member holds (assigned or being revoked), to its member."""
    subscribed_topics: dict[str, TopicInfo] = field(default_factory=dict)
    """The subscribed topics as the target assignment saw them: a change bumps the epoch."""
    _instances: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    # what the coordinator's offsets paths ask of any group (as of a classic one)
    protocol_type: str = "consumer"
    pending_commits: collections.Counter[tuple[str, int]] = field(
        default_factory=collections.Counter
    )
    """Partitions whose commits are being written (an expiry or delete leaves them)."""
    emptied_at_ms: int = -1
    """When the last member went (wall clock): an empty group's offsets expire from then."""
    dead: bool = False
    """Being deleted: commits and heartbeats are told to retry."""
    replaced: object = None
    """The empty classic group of the id it took the place of, until its first write."""
    wall_clock: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    _view: object = None  # the topics mapping the subscriptions were resolved against
    _stale: bool = True  # a subscription changed, or a member came or went, since then
    _matches: dict[str, frozenset[str]] = field(default_factory=dict)  # regex -> topics
    # what the log was last given (see changes()): the records written or being written
    _touched: set[str] = field(default_factory=set)  # members whose records may differ
    _targets_touched: bool = False  # a new target assignment was computed
    _logged_epoch: int | None = None
    _logged_topics: dict[str, TopicInfo] = field(default_factory=dict)
    _logged_assignment_epoch: int = 0
    _logged_members: dict[str, MemberSubscription] = field(default_factory=dict)
    _logged_targets: dict[str, Assignment] = field(default_factory=dict)
    _logged_current: dict[str, MemberAssignment] = field(default_factory=dict)

    # --- what a heartbeat does ---------------------------------------------------------

    def heartbeat(
        self,
        member_id: str,
        member_epoch: int,
        now_ms: int,
        *,
        instance_id: str | None = None,
        rack_id: str | None = None,
        rebalance_timeout_ms: int = -1,
        subscribed: list[str] | None = None,
        regex: str | None = None,
        server_assignor: str | None = None,
        owned: Assignment | None = None,
        client_id: str = "",
        client_host: str = "",
        describable: Callable[[str], bool] | None = None,
    ) -> HeartbeatAnswer:
        """A ConsumerGroupHeartbeat with a member epoch of 0 (join) or more; for -1 and
        -2 see :meth:`leave`. Raises the request's error (nothing changed then).
        ``describable``: the topics the member's principal may DESCRIBE (None: all)."""
        if server_assignor is not None and server_assignor not in self.assignor_names:
            raise UnsupportedAssignorError(
                f"server assignor {server_assignor!r} is not one of this broker's "
                f"group.consumer.assignors ({', '.join(self.assignor_names)})"
            )
        if regex is not None:
            _compiled(regex)
        member = self._member_for(member_id, member_epoch, instance_id, owned)
        full = rebalance_timeout_ms != -1 and owned is not None
        full = full and (subscribed is not None or regex is not None)
        before = member.assigned  # (replaced, never changed in place)
        changed = self._update(
            member,
            rack_id=rack_id,
            rebalance_timeout_ms=rebalance_timeout_ms,
            subscribed=subscribed,
            regex=regex,
            server_assignor=server_assignor,
            client_id=client_id,
            client_host=client_host,
        )
        if describable is not None and (changed or member_epoch == 0 or member.restored):
            # taken with the subscription it decides for (a new one per request would
            # make every heartbeat a change): an ACL changed since counts from the
            # member's next subscription change, rejoin, or change of the cluster's topics
            member.describable = describable
            if member.restored and member.regex is not None:
                self._stale = True  # its regex resolved again, for its own principal
            member.restored = False
        self._advance(member, changed, owned, now_ms)
        member.session_deadline_ms = now_ms + self.session_timeout_ms
        send = member_epoch == 0 or full or member.assigned != before
        return HeartbeatAnswer(
            member.member_id, member.epoch, dict(member.assigned) if send else None
        )

    def leave(self, member_id: str, member_epoch: int, instance_id: str | None) -> int:
        """A heartbeat with epoch -1 (leave) or -2 (a static member leaving for now: it
        keeps its partitions until its session timeout). Returns the epoch to answer."""
        member = self._leaver(member_id, instance_id)
        if member_epoch == STATIC_LEAVE and instance_id is not None:
            self._touched.add(member_id)
            member.epoch = STATIC_LEAVE
            self._release(member, member.pending)
            member.pending = {}
            member.revocation_deadline_ms = None
            return STATIC_LEAVE
        self.fence(member_id)
        return LEAVE

    def leaving(self, member_id: str, member_epoch: int, instance_id: str | None) -> set[str]:
        """Who :meth:`leave` would take out of the group (none: a static member leaving
        for now); raises its error."""
        self._leaver(member_id, instance_id)
        return set() if member_epoch == STATIC_LEAVE and instance_id is not None else {member_id}

    def _leaver(self, member_id: str, instance_id: str | None) -> ConsumerMember:
        self._check_instance(member_id, instance_id)
        member = self.members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(f"member {member_id!r} is not in group {self.group_id!r}")
        return member

    def _check_instance(self, member_id: str, instance_id: str | None) -> None:
        """A request naming an instance id must come from the member that holds it."""
        if instance_id is None:
            return
        holder = self._instances.get(instance_id)
        if holder is None:
            raise UnknownMemberIdError(f"instance id {instance_id!r} is unknown")
        if holder != member_id:
            raise FencedInstanceIdError(f"instance id {instance_id!r} is held by another member")

    def late(self, now_ms: int) -> list[str]:
        """The members :meth:`tick` at ``now_ms`` would fence."""
        return [m.member_id for m in self.members.values() if _late(m, now_ms)]

    def fence(self, member_id: str) -> None:
        """``member_id`` removed: its partitions are free, the group epoch goes up."""
        member = self.members.pop(member_id, None)
        if member is None:
            return
        self._touched.add(member_id)
        self._stale = True
        if not self.members:
            self.emptied_at_ms = self.wall_clock()
        self._release(member, member.assigned)
        self._release(member, member.pending)
        self.target.pop(member_id, None)
        if member.instance_id is not None and self._instances.get(member.instance_id) == member_id:
            del self._instances[member.instance_id]
        self.epoch += 1

    def tick(self, now_ms: int) -> list[str]:
        """Time passes: members silent for the session timeout, and members that did not
        revoke within their rebalance timeout, are fenced. Returns them."""
        gone = [m.member_id for m in self.members.values() if _late(m, now_ms)]
        for member_id in gone:
            self.fence(member_id)
        return gone

    def due(self, now_ms: int) -> bool:
        """Whether :meth:`tick` at ``now_ms`` would fence a member."""
        return any(_late(m, now_ms) for m in self.members.values())

    def topics_changed(self) -> bool:
        """The cluster's topics changed: the group epoch goes up if a subscribed topic was
        made, deleted or grew (its members learn at their next heartbeat). Returns
        whether it did. (The topics the group was given are the same object while what
        they hold is: an update that moved only leaders costs nothing here.)"""
        if self.topics() is self._view:
            return False
        now = self._subscribed_now()
        if now == self.subscribed_topics:
            return False
        self.subscribed_topics = now
        self.epoch += 1
        return True

    # --- what others ask ---------------------------------------------------------------

    @property
    def state(self) -> str:
        """Kafka's: Empty, Assigning, Reconciling or Stable (Dead while deleted)."""
        if self.dead:
            return "Dead"
        if not self.members:
            return "Empty"
        if self.epoch > self.assignment_epoch:
            return "Assigning"
        for member in self.members.values():
            if member.state != STABLE or member.epoch != self.assignment_epoch:
                return "Reconciling"
        return "Stable"

    @property
    def assignor(self) -> str:
        """The server assignor most members name (Kafka's), else the broker's first."""
        counts: dict[str, int] = {}
        for member in self.members.values():
            if member.server_assignor is not None:
                counts[member.server_assignor] = counts.get(member.server_assignor, 0) + 1
        if not counts:
            return self.assignor_names[0]
        return max(sorted(counts), key=lambda name: counts[name])

    def subscribed_topic_names(self) -> set[str]:
        """Every topic some member subscribes to (by name or by its regex), that exists.
        (Resolved without touching the cache of :meth:`_subscribed_now`, which only a
        caller that stores its result in ``subscribed_topics`` may move on.)"""
        topics = self.topics()
        if topics is self._view and not self._stale:
            return set(self.subscribed_topics)
        names: set[str] = set()
        for member in self.members.values():
            names.update(n for n in member.subscribed if n in topics)
            if member.regex is not None:
                matched = _matching(member.regex, topics)
                names.update(t for t in matched if member.describable(t))
        return names

    def delete(self) -> None:
        self.dead = True

    def undelete(self) -> None:
        self.dead = False

    def unload(self, error: Exception) -> None:
        """Its coordinator moved: nothing waits here (a heartbeat is answered at once)."""

    def check_commit(
        self,
        member_id: str,
        member_epoch: int,
        instance_id: str | None = None,
        *,
        kafka_version: int = -1,
    ) -> None:
        """An OffsetCommit against this group (Kafka's
        ConsumerGroup.validateOffsetCommit): a member's epoch must be its current one, and
        its commit Kafka's OffsetCommit v9 or above (``kafka_version``; -1: Headwater's own
        protocol, or a transaction's commit). (``instance_id``: taken as a classic group's
        check takes it; not needed here.)"""
        if self.dead:  # its tombstones are being written: a commit now would outlive them
            raise CoordinatorNotAvailableError(
                f"group {self.group_id!r} is being deleted; try again"
            )
        if member_epoch < 0 and not self.members:
            return  # an admin's or a member-less consumer's commit
        member = self.members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(f"member {member_id!r} is not in group {self.group_id!r}")
        if 0 <= kafka_version < 9 and member.classic is None:
            raise UnsupportedVersionError(
                f"OffsetCommit v{kafka_version}: a member of the consumer group protocol "
                "(KIP-848) commits with OffsetCommit v9 or above; upgrade the client"
            )
        _check_member_epoch(member, member_epoch)

    def check_fetch(self, member_id: str | None, member_epoch: int) -> None:
        """An OffsetFetch v9 from a member (Kafka's validateOffsetFetch): it must be in
        the group, at its epoch. No member id and no epoch: an admin's, taken."""
        if member_id is None and member_epoch < 0:
            return
        member = self.members.get(member_id or "")
        if member is None:
            raise UnknownMemberIdError(f"member {member_id!r} is not in group {self.group_id!r}")
        _check_member_epoch(member, member_epoch)

    # --- the log (records 3-8 of __consumer_offsets) -------------------------------------

    def changes(self) -> list[tuple[ConsumerGroupKey, object | None]]:
        """The records that bring the log from what it was last given to the group as it
        is now (None: a tombstone), in Kafka's order: gone members' tombstones, members'
        subscriptions, the group epoch, the subscribed topics, the targets, the assignment
        epoch, the members' current assignments. They count as given from here on: the
        caller writes them before it answers, or rebuilds the group from the log.

        Only the members a call touched are looked at (and every target after an
        assignor run): a steady heartbeat costs one member's comparison."""
        gid = self.group_id
        gone: _Records = []
        subscriptions: _Records = []
        targets: _Records = []
        current: _Records = []
        looked = self._touched
        if self._targets_touched:
            looked = looked | self.members.keys() | self._logged_targets.keys()
        for member_id in sorted(looked):
            member = self.members.get(member_id)
            if member is None:
                gone += self._tombstones(member_id)
                continue
            _changed(
                subscriptions,
                self._logged_members,
                ConsumerGroupKey(MEMBER_METADATA, gid, member_id),
                member.subscription(),
            )
            _changed(
                targets,
                self._logged_targets,
                ConsumerGroupKey(TARGET_ASSIGNMENT_MEMBER, gid, member_id),
                self.target.get(member_id, {}),
            )
            _changed(
                current,
                self._logged_current,
                ConsumerGroupKey(CURRENT_MEMBER_ASSIGNMENT, gid, member_id),
                member.assignment(),
            )
        self._touched = set()
        self._targets_touched = False
        out = gone + subscriptions
        if self._logged_epoch != self.epoch:
            self._logged_epoch = self.epoch
            out.append((ConsumerGroupKey(CONSUMER_GROUP_METADATA, gid), self.epoch))
        if self._logged_topics is not self.subscribed_topics:
            if self._logged_topics != self.subscribed_topics:
                out.append((ConsumerGroupKey(PARTITION_METADATA, gid), self.subscribed_topics))
            self._logged_topics = self.subscribed_topics
        out += targets
        if self._logged_assignment_epoch != self.assignment_epoch:
            self._logged_assignment_epoch = self.assignment_epoch
            out.append((ConsumerGroupKey(TARGET_ASSIGNMENT_METADATA, gid), self.assignment_epoch))
        return out + current

    def _tombstones(self, member_id: str) -> _Records:
        """A gone member's records that the log has, deleted (Kafka's order)."""
        out: _Records = []
        for kind, table in (
            (CURRENT_MEMBER_ASSIGNMENT, self._logged_current),
            (TARGET_ASSIGNMENT_MEMBER, self._logged_targets),
            (MEMBER_METADATA, self._logged_members),
        ):
            if table.pop(member_id, None) is not None:
                out.append((ConsumerGroupKey(kind, self.group_id, member_id), None))
        return out

    def restore(self, image: ConsumerGroupImage, now_ms: int) -> None:
        """A new group takes the state its records give (a load of its offsets
        partition, or its last write undone). Sessions and revocations are timed from
        ``now_ms``; a member's regex gives only the topics the group had until its next
        heartbeat says who it is (its principal's DESCRIBE)."""
        self.epoch = image.epoch or 0
        self.assignment_epoch = image.assignment_epoch
        self.subscribed_topics = dict(image.topics)
        known = frozenset(image.topics)
        for member_id, sub in image.members.items():
            at = image.current.get(member_id) or MemberAssignment(0, -1, STABLE, {}, {})
            member = ConsumerMember(
                member_id,
                instance_id=sub.instance_id,
                rack_id=sub.rack_id,
                client_id=sub.client_id,
                client_host=sub.client_host,
                rebalance_timeout_ms=sub.rebalance_timeout_ms,
                subscribed=sub.subscribed,
                regex=sub.regex,
                server_assignor=sub.server_assignor,
                classic=sub.classic,
                epoch=at.epoch,
                previous_epoch=at.previous_epoch,
                state=at.state,
                session_deadline_ms=now_ms
                + (
                    self.session_timeout_ms
                    if sub.classic is None
                    else sub.classic.session_timeout_ms
                ),
                describable=known.__contains__,
                restored=True,
            )
            self._set(member, at.assigned, at.pending)
            if member.state == UNREVOKED_PARTITIONS and member.classic is None:
                member.revocation_deadline_ms = now_ms + member.rebalance_timeout_ms
                member.revocation_epoch = member.epoch
            self.members[member_id] = member
            if member.instance_id is not None:
                self._instances[member.instance_id] = member_id
            if member_id in image.targets:
                self.target[member_id] = image.targets[member_id]
        self._logged_epoch = image.epoch
        self._logged_topics = self.subscribed_topics
        self._logged_assignment_epoch = image.assignment_epoch
        self._logged_members = dict(image.members)
        self._logged_targets = dict(image.targets)
        self._logged_current = dict(image.current)
        # a member's records without its subscription (not Kafka's): gone at the next write
        self._touched = (image.targets.keys() | image.current.keys()) - image.members.keys()

    def keep_timers(self, before: ConsumerGroup) -> None:
        """A group rebuilt from the log after a change of ``before`` could not be written:
        its members' sessions and revocation deadlines run on as they did, and a member
        the change removed (fenced, or leaving) is due at the next tick: fenced again
        then, not a session later."""
        for member_id, member in self.members.items():
            was = before.members.get(member_id)
            if was is None:
                member.session_deadline_ms = 0
                continue
            member.session_deadline_ms = was.session_deadline_ms
            member.join_deadline_ms = was.join_deadline_ms
            member.sync_deadline_ms = was.sync_deadline_ms
            if member.state == UNREVOKED_PARTITIONS and was.revocation_epoch == member.epoch:
                member.revocation_deadline_ms = was.revocation_deadline_ms
                member.revocation_epoch = was.revocation_epoch

    # --- classic members (Kafka's online migration between the protocols) -------------

    def adopt(self, epoch: int, members: list[tuple[ConsumerMember, Assignment]]) -> None:
        """A classic group's members taken in (Kafka's online upgrade), each Stable at
        ``epoch`` with its partitions as its target: the group's every record is
        written at its next change."""
        self.epoch = self.assignment_epoch = epoch
        for member, assigned in members:
            self.members[member.member_id] = member
            self._set(member, assigned, {})
            self.target[member.member_id] = dict(member.assigned)
            if member.instance_id is not None:
                self._instances[member.instance_id] = member.member_id
            self._touched.add(member.member_id)
        self._targets_touched = True
        self._stale = True

    def classic_join(
        self,
        member_id: str,
        now_ms: int,
        *,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
    ) -> tuple[ConsumerMember, str]:
        """A classic JoinGroup into this group (Kafka's classicGroupJoinToConsumerGroup):
        the member's subscription is its first protocol's ConsumerProtocol bytes, what
        it owns their owned partitions (none, for an eager client: it revoked them all
        before it rejoined); it is reconciled as a heartbeat would be, and answered at
        once: (the member, the protocol name to answer). Its SyncGroup gets its
        partitions; a heartbeat tells it to rejoin while it has further to go."""
        if protocol_type != "consumer" or not protocols:
            raise InconsistentGroupProtocolError(
                f"group {self.group_id!r} is a consumer group: a classic member joins it "
                "with protocol type consumer"
            )
        if not self._supports(member_id, [name for name, _ in protocols]):
            raise InconsistentGroupProtocolError(
                f"none of the protocols offered ({', '.join(n for n, _ in protocols)}) is "
                f"one every classic member of group {self.group_id!r} supports"
            )
        try:
            subscription = decode_subscription(protocols[0][1])
        except ProtocolError as exc:
            raise InconsistentGroupProtocolError(
                f"the subscription is not Kafka's consumer protocol: {exc}"
            ) from None
        member = self._classic_member_for(member_id, instance_id)
        names = self.topics()
        owned: Assignment = {}
        for tp in subscription.owned:
            info = names.get(tp.topic)
            if info is not None:
                owned[info.topic_id] = owned.get(info.topic_id, frozenset()) | {tp.partition}
        changed = self._update(
            member,
            rack_id=subscription.rack or None,  # v3's (KIP-881), as Kafka's maybeUpdateRackId
            rebalance_timeout_ms=rebalance_timeout_ms,
            subscribed=list(subscription.topics),
            regex=None,
            server_assignor=None,
            client_id=client_id,
            client_host=client_host,
        )
        member.classic = ClassicMetadata(session_timeout_ms, tuple(protocols))
        self._advance(member, changed, owned, now_ms)
        member.session_deadline_ms = now_ms + session_timeout_ms
        member.join_deadline_ms = None
        member.sync_deadline_ms = now_ms + member.rebalance_timeout_ms
        return member, protocols[0][0]

    def classic_sync(
        self,
        member_id: str,
        instance_id: str | None,
        generation_id: int,
        protocol: tuple[str | None, str | None],
        now_ms: int,
    ) -> Assignment:
        """A classic member's SyncGroup (Kafka's classicGroupSyncToConsumerGroup): its
        partitions now, or REBALANCE_IN_PROGRESS if the group has moved on past it (it
        rejoins)."""
        member = self._classic_checked(member_id, instance_id, generation_id)
        protocol_type, protocol_name = protocol
        assert member.classic is not None
        if (protocol_type is not None and protocol_type != "consumer") or (
            protocol_name is not None and protocol_name != member.classic.protocols[0][0]
        ):
            raise InconsistentGroupProtocolError(
                f"protocol {protocol_type}/{protocol_name} is not the member's "
                f"(consumer/{member.classic.protocols[0][0]})"
            )
        if self.epoch > member.epoch and member.state != UNREVOKED_PARTITIONS:
            self._told_to_rejoin(member, now_ms)
        member.sync_deadline_ms = None
        member.session_deadline_ms = now_ms + member.classic.session_timeout_ms
        return dict(member.assigned)

    def classic_heartbeat(
        self, member_id: str, instance_id: str | None, generation_id: int, now_ms: int
    ) -> None:
        """A classic member's Heartbeat (Kafka's classicGroupHeartbeatToConsumerGroup):
        REBALANCE_IN_PROGRESS while it has further to go (a newer group epoch, partitions
        to give up, or partitions to take that nobody holds any more), so it rejoins."""
        member = self._classic_checked(member_id, instance_id, generation_id)
        assert member.classic is not None
        member.session_deadline_ms = now_ms + member.classic.session_timeout_ms
        if (
            member.epoch < self.epoch
            or member.state == UNREVOKED_PARTITIONS
            or (member.state == UNRELEASED_PARTITIONS and not self._waiting_on_others(member))
        ):
            self._told_to_rejoin(member, now_ms)

    def classic_leave(self, member_id: str, instance_id: str | None) -> str:
        """A LeaveGroup's member (either protocol's, as Kafka's since KAFKA-18188): an
        admin's names only the instance id. Returns the member id to fence."""
        if instance_id is None:
            if member_id not in self.members:
                raise UnknownMemberIdError(
                    f"member {member_id!r} is not in group {self.group_id!r}"
                )
            return member_id
        holder = self._instances.get(instance_id)
        if holder is None:
            raise UnknownMemberIdError(f"instance id {instance_id!r} is unknown")
        if member_id and holder != member_id:
            raise FencedInstanceIdError(f"instance id {instance_id!r} is held by another member")
        return holder

    def only_classic_left_without(self, leaving: Collection[str]) -> bool:
        """Whether, without ``leaving``, the group still has members, all classic ones
        (Kafka's validateOnlineDowngradeWithFencedMembers, before its policy and size)."""
        left = [m for m in self.members.values() if m.member_id not in leaving]
        return bool(left) and all(m.classic is not None for m in left)

    def _told_to_rejoin(self, member: ConsumerMember, now_ms: int) -> None:
        if member.join_deadline_ms is None:
            member.join_deadline_ms = now_ms + member.rebalance_timeout_ms
        raise RebalanceInProgressError(f"group {self.group_id!r} is rebalancing; rejoin")

    def _waiting_on_others(self, member: ConsumerMember) -> bool:
        """A partition of its target that it has not got is still held by another."""
        for topic_id, parts in self.target.get(member.member_id, {}).items():
            has = member.assigned.get(topic_id, frozenset())
            for p in parts - has:
                holder = self.owners.get((topic_id, p))
                if holder is not None and holder != member.member_id:
                    return True
        return False

    def _supports(self, member_id: str, names: list[str]) -> bool:
        """One of ``names`` is a protocol every other classic member offered (Kafka's
        supportsClassicProtocols)."""
        others = [
            {n for n, _ in m.classic.protocols}
            for m in self.members.values()
            if m.classic is not None and m.member_id != member_id
        ]
        return not others or any(all(name in o for o in others) for name in names)

    def _classic_member_for(self, member_id: str, instance_id: str | None) -> ConsumerMember:
        """The JoinGroup's member: a new one without a member id; one named must be in
        the group (UNKNOWN_MEMBER_ID: a fenced member starts again without its id), and
        hold its instance id (FENCED_INSTANCE_ID), as Kafka's and the classic group's."""
        if member_id:
            holder_id = None if instance_id is None else self._instances.get(instance_id)
            if holder_id is not None and holder_id != member_id:
                raise FencedInstanceIdError(
                    f"instance id {instance_id!r} is held by another member"
                )
            known = self.members.get(member_id)
            if known is None or (instance_id is not None and holder_id is None):
                raise UnknownMemberIdError(
                    f"member {member_id!r} is not in group {self.group_id!r}; join again"
                )
            if known.classic is None:  # Kafka's throwIfMemberDoesNotUseClassicProtocol
                raise UnknownMemberIdError(
                    f"member {member_id!r} of group {self.group_id!r} uses the consumer "
                    "protocol (ConsumerGroupHeartbeat), not JoinGroup; join again without "
                    "its member id"
                )
            return known
        member_id = new_member_id()
        if instance_id is None:
            self._check_size(member_id)
            member = self.members[member_id] = ConsumerMember(member_id)
            return member
        holder_id = self._instances.get(instance_id)
        holder = None if holder_id is None else self.members.get(holder_id)
        if holder is None:
            self._check_size(member_id)
            member = self.members[member_id] = ConsumerMember(member_id, instance_id=instance_id)
            self._instances[instance_id] = member_id
            return member
        # a static member restarted (a new member id): its partitions are its own
        self._rekey(holder, member_id)
        return holder

    def _classic_checked(
        self, member_id: str, instance_id: str | None, generation_id: int
    ) -> ConsumerMember:
        """Kafka's validateConsumerGroupMember, for a classic member's SyncGroup and
        Heartbeat; its generation is its member epoch."""
        member = self.members.get(member_id)
        if member is None or member.classic is None:
            raise UnknownMemberIdError(f"member {member_id!r} is not in group {self.group_id!r}")
        self._check_instance(member_id, instance_id)
        if generation_id != member.epoch:
            raise IllegalGenerationError(
                f"member {member_id!r} is at generation {member.epoch}, not {generation_id}"
            )
        return member

    # --- the steps ----------------------------------------------------------------------

    def _member_for(
        self, member_id: str, epoch: int, instance_id: str | None, owned: Assignment | None
    ) -> ConsumerMember:
        if instance_id is not None:
            return self._static_member(member_id, epoch, instance_id, owned)
        member = self.members.get(member_id)
        if member is None:
            if epoch != 0:
                raise UnknownMemberIdError(
                    f"member {member_id!r} is not in group {self.group_id!r}; join again "
                    "(member epoch 0)"
                )
            self._check_size(member_id)
            member = ConsumerMember(member_id)
            self.members[member_id] = member
            return member
        self._check_epoch(member, epoch, owned)
        return member

    def _static_member(
        self, member_id: str, epoch: int, instance_id: str, owned: Assignment | None
    ) -> ConsumerMember:
        holder_id = self._instances.get(instance_id)
        holder = None if holder_id is None else self.members.get(holder_id)
        if epoch == 0:
            if holder is None:
                self._check_size(member_id)
                member = ConsumerMember(member_id, instance_id=instance_id)
                self.members[member_id] = member
                self._instances[instance_id] = member_id
                return member
            if holder.member_id == member_id and holder.epoch != STATIC_LEAVE:
                self._check_epoch(holder, epoch, owned)
                return holder
            if holder.epoch != STATIC_LEAVE:
                raise UnreleasedInstanceIdError(
                    f"instance id {instance_id!r} is still held by member "
                    f"{holder.member_id!r}, which has not left"
                )
            # the static member back under a new member id: its partitions are its own
            self._rekey(holder, member_id)
            return holder
        if holder is None:
            raise UnknownMemberIdError(f"instance id {instance_id!r} is unknown")
        if holder.member_id != member_id:
            raise FencedInstanceIdError(
                f"instance id {instance_id!r} is held by member {holder.member_id!r}"
            )
        self._check_epoch(holder, epoch, owned)
        return holder

    def _rekey(self, holder: ConsumerMember, member_id: str) -> None:
        """A static member back under a new member id, with its partitions."""
        self._touched.add(holder.member_id)
        del self.members[holder.member_id]
        for key, owner in list(self.owners.items()):
            if owner == holder.member_id:
                self.owners[key] = member_id
        if holder.member_id in self.target:
            self.target[member_id] = self.target.pop(holder.member_id)
        holder.member_id, holder.epoch, holder.previous_epoch = member_id, 0, 0
        self.members[member_id] = holder
        assert holder.instance_id is not None
        self._instances[holder.instance_id] = member_id

    def _advance(
        self, member: ConsumerMember, changed: bool, owned: Assignment | None, now_ms: int
    ) -> None:
        """After a member's request (``changed``: what it subscribes to): a new group
        epoch, a new target if one is due, and the member a step closer to its own."""
        self._touched.add(member.member_id)
        if changed:
            self._stale = True
        if changed or self.epoch == 0:
            self.epoch += 1
        self._refresh_topics()
        if self.epoch > self.assignment_epoch:
            self._assign()
        self._reconcile(member, owned, now_ms)

    def _check_size(self, member_id: str) -> None:
        if len(self.members) >= self.max_size:
            raise GroupMaxSizeReachedError(
                f"group {self.group_id!r} has {len(self.members)} members, its most "
                "(group.consumer.max.size)"
            )

    @staticmethod
    def _check_epoch(member: ConsumerMember, epoch: int, owned: Assignment | None) -> None:
        """Kafka's: a newer epoch is fenced; an older one only if it is the member's
        previous one and what it owns is within its assignment (its last answer lost).
        Epoch 0 is a rejoin under the same member id, taken in any state (KAFKA-19233:
        a member that lost its place, or was told an error it takes as fatal, gave up
        its partitions and is given its assignment whole)."""
        if epoch == 0:
            return
        if epoch > member.epoch:
            raise FencedMemberEpochError(
                f"member {member.member_id!r} sent epoch {epoch}, newer than its "
                f"{member.epoch}; rejoin"
            )
        if epoch < member.epoch and not (
            epoch == member.previous_epoch and owned is not None and _within(owned, member.assigned)
        ):
            raise FencedMemberEpochError(
                f"member {member.member_id!r} sent epoch {epoch}, older than its "
                f"{member.epoch}; rejoin"
            )

    def _update(
        self,
        member: ConsumerMember,
        *,
        rack_id: str | None,
        rebalance_timeout_ms: int,
        subscribed: list[str] | None,
        regex: str | None,
        server_assignor: str | None,
        client_id: str,
        client_host: str,
    ) -> bool:
        """The member's fields the request gives (null: unchanged); whether the group
        epoch must go up (what it subscribes to changed)."""
        changed = False
        if rack_id is not None:
            member.rack_id = rack_id
        if rebalance_timeout_ms != -1:
            member.rebalance_timeout_ms = rebalance_timeout_ms
        if server_assignor is not None:
            member.server_assignor = server_assignor
        if subscribed is not None:
            names = tuple(sorted(set(subscribed)))
            changed = names != member.subscribed
            member.subscribed = names
        if regex is not None:
            wanted = regex or None
            changed = changed or wanted != member.regex
            member.regex = wanted
        member.client_id, member.client_host = client_id, client_host
        return changed

    def _refresh_topics(self) -> None:
        now = self._subscribed_now()
        if now != self.subscribed_topics:
            self.subscribed_topics = now
            if self.epoch == self.assignment_epoch:
                self.epoch += 1

    def _subscribed_now(self) -> dict[str, TopicInfo]:
        """The topics some member subscribes to, resolved again only when the cluster's
        topics or a subscription changed (a steady heartbeat resolves nothing)."""
        topics = self.topics()
        if topics is self._view and not self._stale:
            return self.subscribed_topics
        if topics is not self._view:
            self._matches = {}
        self._view, self._stale = topics, False
        names: set[str] = set()
        for member in self.members.values():
            names |= self._subscription(member, topics)
        return {name: topics[name] for name in sorted(names)}

    def _subscription(self, member: ConsumerMember, topics: Mapping[str, TopicInfo]) -> set[str]:
        names = {n for n in member.subscribed if n in topics}
        if member.regex is not None:
            matched = self._matches.get(member.regex)
            if matched is None:
                matched = self._matches[member.regex] = _matching(member.regex, topics)
            names.update(t for t in matched if member.describable(t))
        return names

    def _assign(self) -> None:
        """A new target for every member, at the group epoch."""
        topics = self.subscribed_topics
        subscriptions = {m.member_id: self._subscription(m, topics) for m in self.members.values()}
        order = sorted(
            self.members.values(),
            key=lambda m: (m.instance_id is None, m.instance_id or m.member_id),
        )
        members = [(m.member_id, subscriptions[m.member_id]) for m in order]
        assign = ASSIGNORS[self.assignor]
        self.target = assign(members, topics, self.target)
        self.assignment_epoch = self.epoch
        self._targets_touched = True

    def _reconcile(self, member: ConsumerMember, owned: Assignment | None, now_ms: int) -> None:
        target = self.target.get(member.member_id, {})
        member.epoch = max(member.epoch, 0)  # (a static member back, from -2)
        if member.state == UNREVOKED_PARTITIONS:
            if owned is None or _overlaps(owned, member.pending):
                return  # not revoked yet
            self._release(member, member.pending)
            member.pending = {}
            self._next(member, min(member.epoch + 1, self.assignment_epoch), target, owned)
        elif member.state == UNRELEASED_PARTITIONS or member.epoch != self.assignment_epoch:
            self._next(member, member.epoch, target, owned)
        if member.state == UNREVOKED_PARTITIONS and member.classic is None:
            # (a classic member revokes by rejoining: its join timer bounds it instead)
            if member.revocation_deadline_ms is None or member.revocation_epoch != member.epoch:
                member.revocation_deadline_ms = now_ms + member.rebalance_timeout_ms
                member.revocation_epoch = member.epoch
        else:
            member.revocation_deadline_ms = None

    def _next(
        self, member: ConsumerMember, epoch: int, target: Assignment, owned: Assignment | None
    ) -> None:
        """Kafka's computeNextAssignment: toward ``target`` as far as can be now."""
        keep: Assignment = {}
        revoke: Assignment = {}
        add: Assignment = {}
        unreleased = False
        for topic_id in set(target) | set(member.assigned):
            wanted = target.get(topic_id, frozenset())
            has = member.assigned.get(topic_id, frozenset())
            if kept := has & wanted:
                keep[topic_id] = kept
            if gone := has - wanted:
                revoke[topic_id] = gone
            free = set()
            for p in wanted - has:
                holder = self.owners.get((topic_id, p))
                if holder is None or holder == member.member_id:
                    free.add(p)
                else:
                    unreleased = True
            if free:
                add[topic_id] = frozenset(free)
        if revoke and (owned is None or _overlaps(owned, revoke)):
            self._set(member, keep, revoke)
            member.state = UNREVOKED_PARTITIONS
            self._move_epoch(member, epoch)
            return
        if revoke:  # it owns none of them any more: they are free now
            self._release(member, revoke)
        merged = dict(keep)
        for topic_id, parts in add.items():
            merged[topic_id] = merged.get(topic_id, frozenset()) | parts
        self._set(member, merged, {})
        member.state = UNRELEASED_PARTITIONS if unreleased else STABLE
        self._move_epoch(member, self.assignment_epoch)

    @staticmethod
    def _move_epoch(member: ConsumerMember, epoch: int) -> None:
        if epoch != member.epoch:
            member.previous_epoch, member.epoch = member.epoch, epoch

    def _set(self, member: ConsumerMember, assigned: Assignment, pending: Assignment) -> None:
        """The member's partitions: the owners map follows."""
        for topic_id, parts in [*member.assigned.items(), *member.pending.items()]:
            for p in parts:
                if self.owners.get((topic_id, p)) == member.member_id:
                    del self.owners[(topic_id, p)]
        member.assigned = {t: p for t, p in assigned.items() if p}
        member.pending = {t: p for t, p in pending.items() if p}
        for topic_id, parts in [*member.assigned.items(), *member.pending.items()]:
            for p in parts:
                self.owners[(topic_id, p)] = member.member_id

    def _release(self, member: ConsumerMember, partitions: Assignment) -> None:
        for topic_id, parts in partitions.items():
            for p in parts:
                if self.owners.get((topic_id, p)) == member.member_id:
                    del self.owners[(topic_id, p)]


# --- helpers ----------------------------------------------------------------------------


_Records = list[tuple[ConsumerGroupKey, object | None]]


def _check_member_epoch(member: ConsumerMember, epoch: int) -> None:
    """A commit's or fetch's epoch is the member's (Kafka's validateMemberEpoch): a classic
    member's generation otherwise is ILLEGAL_GENERATION, as a classic group says."""
    if epoch == member.epoch:
        return
    if member.classic is not None:
        raise IllegalGenerationError(
            f"member {member.member_id!r} is at generation {member.epoch}, not {epoch}"
        )
    raise StaleMemberEpochError(
        f"member {member.member_id!r} is at epoch {member.epoch}, not {epoch}"
    )


def _changed(out: _Records, logged: dict[str, Any], key: ConsumerGroupKey, value: object) -> None:
    """``value`` of ``key`` (a member's) added to ``out`` if the log has another."""
    member_id = key.member_id or ""
    if logged.get(member_id) != value:
        logged[member_id] = value
        out.append((key, value))


def _late(member: ConsumerMember, now_ms: int) -> bool:
    """Its session ran out, or it did not revoke within its rebalance timeout (a classic
    member: did not rejoin, or sync, within it)."""
    if now_ms >= member.session_deadline_ms:
        return True
    for deadline in (member.join_deadline_ms, member.sync_deadline_ms):
        if deadline is not None and now_ms >= deadline:
            return True
    return member.revocation_deadline_ms is not None and (
        now_ms >= member.revocation_deadline_ms
        and member.state == UNREVOKED_PARTITIONS
        and member.epoch == member.revocation_epoch
    )


def new_member_id() -> str:
    """A member id made by the coordinator (ConsumerGroupHeartbeat v0; Kafka's random
    UUID in its base64 form)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _within(owned: Assignment, assigned: Assignment) -> bool:
    return all(parts <= assigned.get(topic_id, frozenset()) for topic_id, parts in owned.items())


def _overlaps(owned: Assignment, partitions: Assignment) -> bool:
    return any(parts & partitions.get(topic_id, frozenset()) for topic_id, parts in owned.items())


_INTERNAL = frozenset({"__consumer_offsets", "__transaction_state"})
_RE2 = re2.Options()
_RE2.log_errors = False  # a bad regex is the client's error, answered: not our stderr
_PATTERNS: dict[str, Any] = {}


def _compiled(regex: str) -> Any:
    """``regex`` compiled with RE2, Kafka's syntax (its RE2/J): linear time, so no regex a
    client sends can hold the coordinator (Python's backtracking ``re`` can be made to
    take exponential time)."""
    found = _PATTERNS.get(regex)
    if found is None:
        try:
            found = re2.compile(regex, _RE2)
        except re2.error as exc:
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise InvalidRegularExpressionError(
                f"subscribed topic regex {regex!r} does not compile: {reason}"
            ) from None
        if len(_PATTERNS) > 1024:
            _PATTERNS.clear()
        _PATTERNS[regex] = found
    return found


def _matching(regex: str, topics: Iterable[str]) -> frozenset[str]:
    """The topics ``regex`` matches whole (Java's ``matches``), internal ones left out."""
    pattern = _compiled(regex)
    return frozenset(t for t in topics if t not in _INTERNAL and pattern.fullmatch(t))


# --- the server assignors -----------------------------------------------------------------

Members = list[tuple[str, set[str]]]
"""Each member id with the topic names it subscribes to, in the assignor's order."""


def assign_range(
    members: Members, topics: Mapping[str, TopicInfo], previous: Mapping[str, Assignment]
) -> dict[str, Assignment]:
    """Kafka's range assignor: per topic, its subscribers in order get contiguous
    ranges, the first ``partitions % subscribers`` of them one more (so topics with as
    many partitions are co-partitioned). Not sticky."""
    out: dict[str, Assignment] = {member_id: {} for member_id, _ in members}
    for name, info in topics.items():
        subscribers = [m for m, wanted in members if name in wanted]
        if not subscribers:
            continue
        quota, extra = divmod(info.partitions, len(subscribers))
        start = 0
        for i, member_id in enumerate(subscribers):
            count = quota + (1 if i < extra else 0)
            if count:
                out[member_id][info.topic_id] = frozenset(range(start, start + count))
            start += count
    return out


def assign_uniform(
    members: Members, topics: Mapping[str, TopicInfo], previous: Mapping[str, Assignment]
) -> dict[str, Assignment]:
    """Kafka's uniform assignor: as even as the subscriptions allow (with one
    subscription for all, no two members more than one partition apart), moving as few
    partitions from where the previous target had them as that takes."""
    by_id = {info.topic_id: name for name, info in topics.items()}
    wants = dict(members)
    held: dict[str, dict[tuple[str, int], None]] = {m: {} for m, _ in members}
    owner: dict[tuple[str, int], str] = {}
    for member_id, _ in members:  # what the previous target gave, where it still may be
        for topic_id, parts in previous.get(member_id, {}).items():
            name = by_id.get(topic_id)
            if name is None or name not in wants[member_id]:
                continue
            for p in sorted(parts):
                if p < topics[name].partitions and (name, p) not in owner:
                    owner[(name, p)] = member_id
                    held[member_id][(name, p)] = None
    order = [m for m, _ in members]
    rank = {m: i for i, m in enumerate(order)}
    subscribers = {name: [m for m in order if name in wants[m]] for name in topics}
    # partitions no one has: fewest subscribers first, each to the least loaded
    for name in sorted(topics, key=lambda n: (len(subscribers[n]), n)):
        if not subscribers[name]:
            continue
        for p in range(topics[name].partitions):
            if (name, p) in owner:
                continue
            member_id = min(subscribers[name], key=lambda m: (len(held[m]), rank[m]))
            owner[(name, p)] = member_id
            held[member_id][(name, p)] = None
    _balance(topics, subscribers, held, rank)
    out: dict[str, Assignment] = {}
    for member_id, partitions in held.items():
        grouped: dict[bytes, set[int]] = {}
        for name, p in partitions:
            grouped.setdefault(topics[name].topic_id, set()).add(p)
        out[member_id] = {t: frozenset(ps) for t, ps in grouped.items()}
    return out


def _balance(
    topics: Mapping[str, TopicInfo],
    subscribers: Mapping[str, list[str]],
    held: dict[str, dict[tuple[str, int], None]],
    rank: Mapping[str, int],
) -> None:
    """Moves partitions from the most to the least loaded of a topic's subscribers while
    they are more than one apart (each move makes the spread smaller: it ends). A move
    costs a pass over the topic's subscribers, not over the partitions: a 20,000-
    partition topic is balanced in a few tens of milliseconds."""
    by_topic: dict[str, dict[str, list[int]]] = {m: {} for m in held}
    for member_id, partitions in held.items():
        for name, p in partitions:
            by_topic[member_id].setdefault(name, []).append(p)
    for parts in (ps for topics_of in by_topic.values() for ps in topics_of.values()):
        parts.sort()
    load = {m: len(partitions) for m, partitions in held.items()}
    for _ in range(64):
        moved = False
        for name in sorted(topics):
            candidates = subscribers.get(name, [])
            if len(candidates) < 2:
                continue
            while True:
                holders = [m for m in candidates if by_topic[m].get(name)]
                if not holders:
                    break
                most = max(holders, key=lambda m: (load[m], -rank[m]))
                least = min(candidates, key=lambda m: (load[m], rank[m]))
                if load[most] - load[least] <= 1:
                    break
                p = by_topic[most][name].pop()  # its highest, as Kafka's
                by_topic[least].setdefault(name, []).append(p)
                load[most] -= 1
                load[least] += 1
                moved = True
        if not moved:
            break
    for member_id, topics_of in by_topic.items():
        held[member_id] = {(name, p): None for name, parts in topics_of.items() for p in parts}


ASSIGNORS: dict[
    str,
    Callable[[Members, Mapping[str, TopicInfo], Mapping[str, Assignment]], dict[str, Assignment]],
] = {"uniform": assign_uniform, "range": assign_range}
"""The server assignors (``group.remote.assignor`` / ServerAssignor), by Kafka's names."""
