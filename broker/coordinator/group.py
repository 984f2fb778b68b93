"""One consumer group's membership: Kafka's group state machine, without the sockets.

States (Kafka's GroupCoordinator): Empty -> PreparingRebalance (someone joined or left;
every member must rejoin within the rebalance timeout) -> CompletingRebalance (the
generation is formed: the leader has the members' subscriptions and computes the
assignment) -> Stable (the leader's SyncGroup delivered every member's assignment); Dead
while the group is being deleted. A member that neither heartbeats nor rejoins within its
session timeout is removed and the group rebalances. Requests are checked against the
member id and the generation, so a member from an older generation (a zombie) is refused:
UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS.

Static members (KIP-345) join with a ``group_instance_id``. Restarted, such a member joins
again without a member id: it takes over its previous membership under a new member id
(the old id is fenced: FENCED_INSTANCE_ID when it names the instance, UNKNOWN_MEMBER_ID
when not) and, in a Stable group whose assignment strategy it does not change, without a
rebalance: its SyncGroup returns its previous assignment. A static member that does not
rejoin a rebalance in time stays in the group (the leader assigns it partitions as before);
only its session timeout or a LeaveGroup naming its instance id removes it.

Joins and syncs wait on futures that the transitions complete; time passes only through
:meth:`Group.tick` with the coordinator's clock, so tests drive it directly.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from protocol.errors import (
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

__all__ = ["COMPLETING", "DEAD", "EMPTY", "PREPARING", "STABLE", "Group", "JoinResult", "Member"]

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"


class JoinResult(NamedTuple):
    generation_id: int
    protocol_type: str
    protocol_name: str
    leader: str
    member_id: str
    members: list[tuple[str, str | None, bytes]]  # the leader's: (id, instance id, metadata)


@dataclass(slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    last_seen_ms: int
    client_host: str = ""
    assignment: bytes = b""
    join: asyncio.Future[JoinResult] | None = None
    sync: asyncio.Future[bytes] | None = None

    @property
    def awaiting_join(self) -> bool:
        return self.join is not None and not self.join.done()

    def metadata(self, protocol: str | None) -> bytes:
        """The member's metadata (subscription) for ``protocol``."""
        return dict(self.protocols).get(protocol or "", b"")


@dataclass(slots=True)
class Group:
    group_id: str
    clock: Callable[[], int]
    initial_rebalance_delay_ms: int = 0
    state: str = EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    """group_instance_id -> the member id that holds it now."""
    rebalance_deadline_ms: int = 0
    initial_rebalance: bool = False
    """The first generation of an Empty group is forming: it waits out
    ``initial_rebalance_delay_ms`` for more members (Kafka's InitialDelayedJoin)."""
    pending_commits: collections.Counter[tuple[str, int]] = field(
        default_factory=collections.Counter
    )
    """(topic, partition) of offset commits being written (Kafka's pendingOffsetCommits):
    a delete must tombstone them too, as their records are already in the log."""
    on_settled: Callable[[Group], None] | None = None
    """Called when a generation settles (Stable after the leader's SyncGroup, or a static
    member's rejoin in it) or the group empties: the moments Kafka stores the group."""

    # --- JoinGroup ----------------------------------------------------------------------

    def join(
        self,
        *,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        client_host: str = "",
    ) -> asyncio.Future[JoinResult]:
        """A (re)join; the future completes when the generation forms."""
        self._check_alive()
        self._check_protocols(protocol_type, protocols)
        now = self.clock()
        previous_leader = self.leader
        replaced = False
        if member_id:
            member = self._current_member(member_id, group_instance_id)
        elif group_instance_id is not None and group_instance_id in self.static_members:
            member, replaced = self._replace_static(group_instance_id), True
        else:
            member = self._add(group_instance_id, client_id, client_host, protocol_type, now)
        if member.join is not None and not member.join.done():
            member.join.cancel()  # a retried join replaces the one in flight
        member.join = asyncio.get_running_loop().create_future()
        member.protocols = protocols
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.last_seen_ms = now
        self.protocol_type = protocol_type
        if replaced and self._keeps_generation():
            # a static member's restart (Kafka's updateStaticMemberAndRebalance, Stable
            # case): no rebalance. The answer names the previous leader id, so a
            # restarted leader does not compute an assignment nobody would receive
            # (JoinGroup before v9 has no SkipAssignment); its SyncGroup gets the old one.
            member.join.set_result(self._join_result(member, leader=previous_leader or ""))
            self._settled()  # the new member id must survive a coordinator failover
            return member.join
        if self.state != PREPARING:
            self._prepare_rebalance(now)
        self._maybe_complete_join(now)
        return member.join

    def _add(
        self,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        protocol_type: str,
        now: int,
    ) -> Member:
        """A new member (timeouts and protocols are set by the join)."""
        member_id = f"{group_instance_id or client_id or 'member'}-{uuid.uuid4()}"
        member = Member(
            member_id, group_instance_id, client_id, 0, 0, protocol_type, [], now, client_host
        )
        self.members[member_id] = member
        if group_instance_id is not None:
            self.static_members[group_instance_id] = member_id
        return member

    def _check_protocols(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> None:
        if self.members and protocol_type != self.protocol_type:
            raise InconsistentGroupProtocolError(
                f"group {self.group_id!r} uses protocol type {self.protocol_type!r}, "
                f"not {protocol_type!r}"
            )
        if self.members and not self._common_protocols({name for name, _ in protocols}):
            raise InconsistentGroupProtocolError(
                f"group {self.group_id!r}: no assignment strategy in common with the members"
            )

    def _replace_static(self, group_instance_id: str) -> Member:
        """Kafka's GroupMetadata.replaceStaticMember: the instance's membership moves to a
        new member id; whoever still waits under the old id is fenced at once."""
        old_id = self.static_members[group_instance_id]
        new_id = f"{group_instance_id}-{uuid.uuid4()}"
        member = self.members[old_id]
        fenced = FencedInstanceIdError(
            f"group {self.group_id!r}: instance {group_instance_id!r} joined again as "
            f"another member; this one ({old_id!r}) is fenced"
        )
        for future in (member.join, member.sync):
            if future is not None and not future.done():
                future.set_exception(fenced)
        member.member_id = new_id
        # same place in the order: the first member's preferences pick the strategy
        self.members = {(new_id if k == old_id else k): m for k, m in self.members.items()}
        if self.leader == old_id:
            self.leader = new_id
        self.static_members[group_instance_id] = new_id
        return member

    def _keeps_generation(self) -> bool:
        """Kafka's rule for a static rejoin: only a Stable group whose next assignment
        strategy stays the current one goes on without a rebalance. (Kafka compares the
        strategy, not the subscription bytes: those carry the partitions a member owned,
        which a restarted member has forgotten.)"""
        if self.state != STABLE:
            return False
        common = self._common_protocols()
        return bool(common) and common[0] == self.protocol_name

    def _join_result(self, member: Member, *, leader: str | None = None) -> JoinResult:
        is_leader = member.member_id == self.leader and leader is None
        return JoinResult(
            self.generation_id,
            self.protocol_type or "",
            self.protocol_name or "",
            (self.leader or "") if leader is None else leader,
            member.member_id,
            self._member_metadata() if is_leader else [],
        )

    def _member_metadata(self) -> list[tuple[str, str | None, bytes]]:
        """What the leader assigns from: every member, absent static ones included."""
        return [
            (m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
            for m in self.members.values()
        ]

    def _common_protocols(self, extra: set[str] | None = None) -> list[str]:
        """Strategy names every member supports, in the first member's preference."""
        sets = [{name for name, _ in m.protocols} for m in self.members.values()]
        if extra is not None:
            sets.append(extra)
        common = set.intersection(*sets) if sets else set()
        first = next(iter(self.members.values()), None)
        order = [name for name, _ in first.protocols] if first else sorted(common)
        return [name for name in order if name in common]

    def _prepare_rebalance(self, now: int) -> None:
        for member in self.members.values():
            if member.sync is not None and not member.sync.done():
                member.sync.set_exception(
                    RebalanceInProgressError(f"group {self.group_id!r} is rebalancing; join again")
                )
        self.initial_rebalance = self.state == EMPTY
        self.state = PREPARING
        delay = (
            self.initial_rebalance_delay_ms
            if self.initial_rebalance
            else self._rebalance_timeout_ms()
        )
        self.rebalance_deadline_ms = now + delay

    def _rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def _maybe_complete_join(self, now: int) -> None:
        if self.state != PREPARING:
            return
        joined = [m for m in self.members.values() if m.awaiting_join]
        absent = [m for m in self.members.values() if not m.awaiting_join]
        if absent and now < self.rebalance_deadline_ms:
            return  # some members have not rejoined yet
        if self.initial_rebalance and now < self.rebalance_deadline_ms:
            return  # a new group waits a moment for the rest to arrive (only then: later
            # rebalances complete as soon as every member has rejoined)
        for m in absent:  # did not rejoin in time: out, unless static (Kafka's onCompleteJoin)
            if m.group_instance_id is None:
                del self.members[m.member_id]
        if not self.members:
            self._empty()
            return
        if not joined:
            # only absent static members: wait for them another rebalance timeout (their
            # session timeouts remove them meanwhile), as Kafka does
            self.rebalance_deadline_ms = now + self._rebalance_timeout_ms()
            return
        self.generation_id += 1
        common = self._common_protocols()
        self.protocol_name = common[0] if common else None
        if self.leader not in {m.member_id for m in joined}:
            self.leader = joined[0].member_id  # Kafka's maybeElectNewJoinedLeader
        self.state = COMPLETING
        for m in joined:
            assert m.join is not None
            m.join.set_result(self._join_result(m))
            m.last_seen_ms = now

    # --- SyncGroup, Heartbeat, LeaveGroup -----------------------------------------------

    def sync(
        self,
        member_id: str,
        generation_id: int,
        assignments: dict[str, bytes],
        group_instance_id: str | None = None,
    ) -> asyncio.Future[bytes]:
        member = self._check(member_id, generation_id, group_instance_id)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.state == PREPARING:
            raise RebalanceInProgressError(f"group {self.group_id!r} is rebalancing; join again")
        if self.state == STABLE:
            future.set_result(member.assignment)
            return future
        member.sync = future
        if member_id == self.leader:
            for m in self.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            self.state = STABLE
            for m in self.members.values():
                if m.sync is not None and not m.sync.done():
                    m.sync.set_result(m.assignment)
            self._settled()
        return future

    def heartbeat(
        self, member_id: str, generation_id: int, group_instance_id: str | None = None
    ) -> None:
        self._check(member_id, generation_id, group_instance_id)
        if self.state == PREPARING:
            raise RebalanceInProgressError(f"group {self.group_id!r} is rebalancing; join again")

    def leave(self, member_id: str, group_instance_id: str | None = None) -> None:
        """A member leaves; with no member id, the static member holding
        ``group_instance_id`` is removed (Kafka's LeaveGroup v3, for administrators)."""
        if not member_id:
            current = self.static_members.get(group_instance_id or "")
            if current is None:
                raise UnknownMemberIdError(
                    f"group {self.group_id!r} has no static member {group_instance_id!r}"
                )
            member_id = current
        else:
            self._current_member(member_id, group_instance_id)
        self._remove(member_id)

    def check_commit(
        self, member_id: str, generation_id: int, group_instance_id: str | None = None
    ) -> None:
        """An OffsetCommit: from the current generation's member, or from outside
        membership (generation -1) while the group has no members."""
        self._check_alive()
        if generation_id < 0 and not member_id:
            if self.members:
                raise UnknownMemberIdError(
                    f"group {self.group_id!r} has members: commits must come from them"
                )
            return
        self._check(member_id, generation_id, group_instance_id)
        # Kafka's handleCommitOffsets: a member of the current generation may still commit
        # while the group prepares a rebalance (that is when its consumer, giving up its
        # partitions, commits what it processed); once the new generation has formed and
        # waits for its assignment, the partitions may soon be someone else's.
        if self.state == COMPLETING:
            raise RebalanceInProgressError(f"group {self.group_id!r} is rebalancing; join again")

    def tick(self) -> None:
        """Time passes: silent members go, a rebalance past its deadline completes."""
        now = self.clock()
        for m in list(self.members.values()):
            awaiting_join = self.state == PREPARING and m.awaiting_join
            if not awaiting_join and now - m.last_seen_ms > m.session_timeout_ms:
                self._remove(m.member_id)
        self._maybe_complete_join(now)

    def restore(
        self,
        *,
        generation_id: int,
        protocol_type: str | None,
        protocol_name: str | None,
        leader: str | None,
        members: list[Member],
    ) -> None:
        """The group as the coordinator stored it, loaded after a failover (Kafka's
        GroupMetadata.loadGroup): Stable with these members, or Empty without. Their
        sessions run from now, as Kafka schedules each loaded member's heartbeat afresh."""
        assert self.state == EMPTY and not self.members
        now = self.clock()
        self.generation_id = generation_id
        self.protocol_type = protocol_type
        self.protocol_name = protocol_name
        self.leader = leader
        for member in members:
            member.last_seen_ms = now
            self.members[member.member_id] = member
            if member.group_instance_id is not None:
                self.static_members[member.group_instance_id] = member.member_id
        self.state = STABLE if members else EMPTY

    def delete(self) -> None:
        """Dead: the coordinator is deleting this empty group. Requests that still find it
        are told to find the coordinator again (Kafka's answer for a Dead group)."""
        assert not self.members, "only an empty group is deleted"
        self.state = DEAD

    def undelete(self) -> None:
        """The delete could not be written: the group is Empty again."""
        assert self.state == DEAD and not self.members
        self.state = EMPTY

    def _remove(self, member_id: str) -> None:
        member = self.members.pop(member_id)
        instance = member.group_instance_id
        if instance is not None and self.static_members.get(instance) == member_id:
            del self.static_members[instance]
        for future in (member.join, member.sync):
            if future is not None and not future.done():
                future.cancel()
        if self.state == PREPARING:
            self._maybe_complete_join(self.clock())
        elif self.members:
            self._prepare_rebalance(self.clock())
        else:
            self._empty()

    def _empty(self) -> None:
        self.state = EMPTY
        self.generation_id += 1
        self.protocol_name = None
        self.leader = None
        self._settled()

    def _settled(self) -> None:
        if self.on_settled is not None:
            self.on_settled(self)

    def _current_member(self, member_id: str, group_instance_id: str | None) -> Member:
        """Kafka's validateCurrentMember: an instance id must be held by this member id
        (FENCED_INSTANCE_ID if another holds it), and the member must exist."""
        if group_instance_id is not None:
            holder = self.static_members.get(group_instance_id)
            if holder is None:
                raise UnknownMemberIdError(
                    f"group {self.group_id!r} has no static member {group_instance_id!r}; "
                    "join again"
                )
            if holder != member_id:
                raise FencedInstanceIdError(
                    f"group {self.group_id!r}: instance {group_instance_id!r} is held by "
                    f"another member now; {member_id!r} is fenced"
                )
        member = self.members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(
                f"group {self.group_id!r} has no member {member_id!r}; join again"
            )
        return member

    def _check(self, member_id: str, generation_id: int, group_instance_id: str | None) -> Member:
        self._check_alive()
        member = self._current_member(member_id, group_instance_id)
        if generation_id != self.generation_id:
            raise IllegalGenerationError(
                f"group {self.group_id!r} is at generation {self.generation_id}, not "
                f"{generation_id}; join again"
            )
        member.last_seen_ms = self.clock()
        return member

    def _check_alive(self) -> None:
        if self.state == DEAD:
            raise CoordinatorNotAvailableError(
                f"group {self.group_id!r} is being deleted; find its coordinator again"
            )
