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

A generation settles only once its metadata is written (Kafka's storeGroup, through
``on_store``): the leader's SyncGroup asks for the write, and every member waiting in
SyncGroup gets its assignment when the write succeeded. Were they answered first, a failed
write (or a coordinator that dies first) would let the next coordinator restore the
previous generation while the members already consume the new one's partitions. A failed
write answers them all with its (retriable) error and starts a rebalance. A static
member's rejoin without a rebalance waits for its new member id to be written likewise
(the member would be fenced by a coordinator that restored the old one); a failed write
undoes the rejoin.

Joins and syncs wait on futures that the transitions complete; time passes only through
:meth:`Group.tick` with the coordinator's clock, so tests drive it directly. A member
waiting in JoinGroup or SyncGroup cannot heartbeat (a client's member is one task), so
its session timeout does not run meanwhile: the rebalance timeout bounds the wait.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from protocol.errors import (
    ApiError,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupMaxSizeReachedError,
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
T = TypeVar("T")

Stored = Callable[[ApiError | None], None]
"""Told how a metadata write went: None once it is replicated, else the error to answer
the members with (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE: retriable)."""


class _Previous(NamedTuple):
    """A static member as it was before a rejoin replaced it: what a failed write undoes."""

    member_id: str
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    leader: str | None


class JoinResult(NamedTuple):
    generation_id: int
    protocol_type: str
    protocol_name: str
    leader: str
    member_id: str
    members: list[tuple[str, str | None, bytes]]  # the leader's: (id, instance id, metadata)
    skip_assignment: bool = False
    """KIP-814: the leader, told not to assign (see Group._store_static_rejoin)."""


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

    @property
    def awaiting_sync(self) -> bool:
        return self.sync is not None and not self.sync.done()

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
    on_store: Callable[[Group, dict[str, bytes], Stored], None] | None = None
    """Kafka's storeGroup: write the group's metadata now, each member with its assignment
    in the dict, then call back with the outcome. Asked when a generation is to settle (the
    leader's SyncGroup), when a static member rejoins a Stable group, and when the group
    empties. Without one (unit tests), every write succeeds at once."""
    rebalances: int = 0
    """Rebalances started (an emptying included): the coordinator logs each one a request
    or a tick started, by comparing this before and after (one may start and complete
    inside one call)."""
    storing_generation: int = -1
    """The generation whose assignment is being written: a SyncGroup the leader repeats
    meanwhile waits for that write instead of starting another (the first one wins)."""
    max_size: int = 2**31 - 1
    """``group.max.size`` (KIP-389): a new member beyond it is refused."""
    emptied_at_ms: int = -1
    """Wall-clock ms when the group last became Empty (Kafka's currentStateTimestamp, as
    stored with its metadata): its committed offsets expire from then (KIP-211). -1: not
    known (a group that never had members, or stored by an older build)."""
    wall_clock: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    _support: collections.Counter[str] = field(
        default_factory=collections.Counter, init=False, repr=False, compare=False
    )
    """How many members support each assignment strategy: a join checks the strategies
    in common in O(strategies), not by a pass over every member (a rebalance of M
    members cost O(M^2): 0.5-0.8 s of the coordinator's loop for 1,000 members)."""
    _joins: dict[int, Member] = field(default_factory=dict, init=False, repr=False, compare=False)
    """By id(): every member whose JoinGroup waits, and maybe a few whose join ended
    elsewhere (fenced, answered, cancelled by its connection): fewer of them than
    members means some member has not rejoined yet (see _all_joined)."""

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
        skip_assignment: bool = False,
    ) -> asyncio.Future[JoinResult]:
        """A (re)join; the future completes when the generation forms. ``skip_assignment``:
        the client reads SkipAssignment (Kafka's JoinGroup v9+)."""
        self._check_alive()
        self._check_protocols(protocol_type, protocols)
        now = self.clock()
        previous: _Previous | None = None
        if member_id:
            member = self._current_member(member_id, group_instance_id)
            self._check_rejoin_room(member)
        elif group_instance_id is not None and group_instance_id in self.static_members:
            # a restarted static member of a group over its size: counted as its old self
            self._check_rejoin_room(self.members[self.static_members[group_instance_id]])
            member, previous = self._replace_static(group_instance_id)
        else:
            self._check_room()
            member = self._add(group_instance_id, client_id, client_host, protocol_type, now)
        if member.join is not None and not member.join.done():
            member.join.cancel()  # a retried join replaces the one in flight
        member.join = asyncio.get_running_loop().create_future()
        self._joins[id(member)] = member
        self._set_protocols(member, protocols)
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.last_seen_ms = now
        self.protocol_type = protocol_type
        if previous is not None and self._keeps_generation():
            self._store_static_rejoin(member, previous, skip_assignment)
            return member.join
        if self.state != PREPARING:
            self._prepare_rebalance(now)
        self._maybe_complete_join(now)
        return member.join

    def _check_room(self) -> None:
        """A new member, while the group has fewer than ``max_size`` members (Kafka's
        acceptJoiningMember counts, while a group rebalances, only the members waiting in
        their join, and sheds the extra ones later: here the group is never over)."""
        if len(self.members) < self.max_size:
            return
        raise GroupMaxSizeReachedError(
            f"group {self.group_id!r} has reached group.max.size ({self.max_size} members); "
            "add this consumer to another group, or raise group.max.size"
        )

    def _check_rejoin_room(self, member: Member) -> None:
        """A member rejoining a group over ``max_size`` (loaded so, group.max.size lowered
        since): while it rebalances, members rejoin up to the size, and the rest are
        removed (Kafka's acceptJoiningMember; O(members) only for such a group)."""
        if (
            self.state != PREPARING
            or len(self.members) <= self.max_size
            or member.awaiting_join
            or sum(1 for m in self.members.values() if m.awaiting_join) < self.max_size
        ):
            return
        self._remove(member.member_id)
        raise GroupMaxSizeReachedError(
            f"group {self.group_id!r} is over group.max.size ({self.max_size} members) and "
            "has as many again: this member is removed; add it to another group, or raise "
            "group.max.size"
        )

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

    def _set_protocols(self, member: Member, protocols: list[tuple[str, bytes]]) -> None:
        self._support.subtract({name for name, _ in member.protocols})
        self._support.update({name for name, _ in protocols})
        member.protocols = protocols

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

    def _replace_static(self, group_instance_id: str) -> tuple[Member, _Previous]:
        """Kafka's GroupMetadata.replaceStaticMember: the instance's membership moves to a
        new member id; whoever still waits under the old id is fenced at once."""
        old_id = self.static_members[group_instance_id]
        member = self.members[old_id]
        previous = _Previous(
            old_id,
            member.protocols,
            member.session_timeout_ms,
            member.rebalance_timeout_ms,
            self.leader,
        )
        fenced = FencedInstanceIdError(
            f"group {self.group_id!r}: instance {group_instance_id!r} joined again as "
            f"another member; this one ({old_id!r}) is fenced"
        )
        for future in (member.join, member.sync):
            if future is not None and not future.done():
                future.set_exception(fenced)
        self._rename(member, f"{group_instance_id}-{uuid.uuid4()}")
        return member, previous

    def _rename(self, member: Member, new_id: str) -> None:
        old_id = member.member_id
        member.member_id = new_id
        # same place in the order: the first member's preferences pick the strategy
        self.members = {(new_id if k == old_id else k): m for k, m in self.members.items()}
        if self.leader == old_id:
            self.leader = new_id
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = new_id

    def _store_static_rejoin(
        self, member: Member, previous: _Previous, skip_assignment: bool = False
    ) -> None:
        """A static member's restart in a Stable group (Kafka's
        updateStaticMemberAndRebalance): no rebalance, but the member hears its new id only
        once that is written, as a coordinator that restored the old id would fence it.
        The answer names the previous leader id, so a restarted leader does not compute an
        assignment nobody would receive (JoinGroup before v9 has no SkipAssignment); its
        SyncGroup gets the old one. A client reading SkipAssignment (JoinGroup v9+, KIP-814)
        is told instead that it leads, with the members, and not to assign: a leader
        knowing it leads watches the topics (partitions added) for the group. A failed
        write undoes the rejoin (the old id is back, as the log has it) and answers the
        error."""
        generation, join, new_id = self.generation_id, member.join, member.member_id
        assert join is not None and member.group_instance_id is not None
        instance = member.group_instance_id

        def stored(error: ApiError | None) -> None:
            # acts only on the generation it was asked for: once a rebalance started,
            # the join (if still waiting) is that rebalance's to answer
            if self.state != STABLE or self.generation_id != generation:
                return
            if error is None:
                if not join.done():
                    if skip_assignment:
                        told = self._join_result(member)
                        told = told._replace(skip_assignment=told.leader == member.member_id)
                    else:
                        told = self._join_result(member, leader=previous.leader or "")
                    join.set_result(told)
                return
            if self.static_members.get(instance) == new_id:  # not replaced again, nor gone
                self._rename(member, previous.member_id)
                self._set_protocols(member, previous.protocols)
                member.session_timeout_ms = previous.session_timeout_ms
                member.rebalance_timeout_ms = previous.rebalance_timeout_ms
            if not join.done():
                join.set_exception(error)

        self._store({m.member_id: m.assignment for m in self.members.values()}, stored)

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
        """Strategy names every member (and ``extra``) supports, in the first member's
        preference."""
        first = next(iter(self.members.values()), None)
        if first is None:
            return sorted(extra) if extra else []
        everyone, support = len(self.members), self._support
        return [
            name
            for name, _ in first.protocols
            if support[name] == everyone and (extra is None or name in extra)
        ]

    def _all_joined(self) -> bool:
        """Every member waits in JoinGroup: O(1) while some have not rejoined; a pass
        over the joins only when their count says all may have (dropping any that
        ended meanwhile, each once)."""
        if len(self._joins) < len(self.members):
            return False
        ended = [key for key, m in self._joins.items() if not m.awaiting_join]
        for key in ended:
            del self._joins[key]
        return not ended

    def _prepare_rebalance(self, now: int) -> None:
        self.rebalances += 1
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
        if now < self.rebalance_deadline_ms and (
            # a new group waits a moment for the rest to arrive (only then: later
            # rebalances complete as soon as every member has rejoined)
            self.initial_rebalance or not self._all_joined()
        ):
            return
        joined = [m for m in self.members.values() if m.awaiting_join]
        absent = [m for m in self.members.values() if not m.awaiting_join]
        for m in absent:  # did not rejoin in time: out, unless static (Kafka's onCompleteJoin)
            if m.group_instance_id is None:
                self._drop(m)
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
        self._joins.clear()
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
        protocol: tuple[str | None, str | None] = (None, None),
    ) -> asyncio.Future[bytes]:
        """The future completes with the member's assignment once the leader's has been
        written (Kafka's doSyncGroup), or fails with the write's error. ``protocol``, the
        type and name the member says it joined with (Kafka's SyncGroup v5), must be the
        group's where given."""
        member = self._check(member_id, generation_id, group_instance_id)
        for said, own, what in zip(
            protocol, (self.protocol_type, self.protocol_name), ("type", "name"), strict=True
        ):
            if said is not None and said != own:
                raise InconsistentGroupProtocolError(
                    f"group {self.group_id!r} uses protocol {what} {own!r}, not {said!r}"
                )
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.state == PREPARING:
            raise RebalanceInProgressError(f"group {self.group_id!r} is rebalancing; join again")
        if self.state == STABLE:
            future.set_result(member.assignment)
            return future
        if member.sync is not None and not member.sync.done():
            _answer_alike(member.sync, future)  # a repeated SyncGroup: both get the answer
        member.sync = future
        if member_id == self.leader and self.storing_generation != self.generation_id:
            self._store_assignment(assignments)
        return future

    def _store_assignment(self, assignments: dict[str, bytes]) -> None:
        """The leader's assignment is written first; then every member gets its share (or
        the write's error, and the group rebalances: Kafka's resetAndPropagateAssignmentError
        and maybePrepareRebalance)."""
        generation = self.generation_id
        full = {m: assignments.get(m, b"") for m in self.members}  # missing: nothing
        self.storing_generation = generation

        def stored(error: ApiError | None) -> None:
            # another member may have joined (or left) meanwhile: the generation is over
            if self.state != COMPLETING or self.generation_id != generation:
                return
            self.storing_generation = -1
            if error is None:
                self._propagate(full)
            else:
                self._propagate_error(error)

        self._store(full, stored)

    def _propagate(self, assignments: dict[str, bytes]) -> None:
        for m in self.members.values():
            m.assignment = assignments.get(m.member_id, b"")
        self.state = STABLE
        for m in self.members.values():
            if m.sync is not None and not m.sync.done():
                m.sync.set_result(m.assignment)

    def _propagate_error(self, error: ApiError) -> None:
        for m in self.members.values():
            m.assignment = b""
            if m.sync is not None and not m.sync.done():
                m.sync.set_exception(error)
        self._prepare_rebalance(self.clock())

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
        for member_id in list(self.members):
            member = self.members.get(member_id)
            # a removal can take others along (it may complete the rebalance, which drops
            # the members that did not rejoin): those are gone already
            if member is not None and self._expired(member, now):
                self._remove(member_id)
        self._maybe_complete_join(now)

    def _expired(self, member: Member, now: int) -> bool:
        """Silent past its session timeout. A member waiting in JoinGroup or SyncGroup
        cannot heartbeat: while the group rebalances, its join is bounded by the rebalance
        deadline, its sync by its rebalance timeout (Kafka keeps both alive:
        MemberMetadata.shouldKeepAlive)."""
        if self.state == PREPARING and member.awaiting_join:
            return False
        limit = member.session_timeout_ms
        if self.state == COMPLETING and member.awaiting_sync:
            limit = max(limit, member.rebalance_timeout_ms)
        return now - member.last_seen_ms > limit

    def restore(
        self,
        *,
        generation_id: int,
        protocol_type: str | None,
        protocol_name: str | None,
        leader: str | None,
        members: list[Member],
        stored_at_ms: int = -1,
    ) -> None:
        """The group as the coordinator stored it (at ``stored_at_ms``, wall clock), loaded
        after a failover (Kafka's GroupMetadata.loadGroup): Stable with these members, or
        Empty without (since it was stored). Their sessions run from now, as Kafka
        schedules each loaded member's heartbeat afresh."""
        assert self.state == EMPTY and not self.members
        now = self.clock()
        if not members:
            self.emptied_at_ms = stored_at_ms
        self.generation_id = generation_id
        self.protocol_type = protocol_type
        self.protocol_name = protocol_name
        self.leader = leader
        for member in members:
            member.last_seen_ms = now
            self.members[member.member_id] = member
            self._support.update({name for name, _ in member.protocols})
            if member.group_instance_id is not None:
                self.static_members[member.group_instance_id] = member.member_id
        self.state = STABLE if members else EMPTY
        if len(members) > self.max_size:
            # group.max.size was lowered (Kafka's onGroupLoaded): a rebalance keeps as many
            # as it allows, and the members commit their offsets on the way
            self._prepare_rebalance(now)

    def rebalance(self) -> None:
        """Every member must rejoin (a group given back from the new consumer protocol:
        Kafka's online downgrade); their heartbeats say REBALANCE_IN_PROGRESS."""
        self._prepare_rebalance(self.clock())

    def unload(self, error: ApiError) -> None:
        """This coordinator no longer holds the group (Kafka's onGroupUnloaded): Dead, and
        whoever waits in JoinGroup or SyncGroup is told ``error`` (NOT_COORDINATOR: the
        member finds the new coordinator and keeps its member id). No transition runs: the
        group is forgotten here, and the new coordinator has it from the log."""
        self.state = DEAD
        for member in self.members.values():
            for future in (member.join, member.sync):
                if future is not None and not future.done():
                    future.set_exception(error)

    def delete(self) -> None:
        """Dead: the coordinator is deleting this empty group. Requests that still find it
        are told to find the coordinator again (Kafka's answer for a Dead group)."""
        assert not self.members, "only an empty group is deleted"
        self.state = DEAD

    def undelete(self) -> None:
        """The delete could not be written: the group is Empty again."""
        assert self.state == DEAD and not self.members
        self.state = EMPTY

    def _drop(self, member: Member) -> None:
        """Out of the members, and out of what is counted of them."""
        del self.members[member.member_id]
        self._support.subtract({name for name, _ in member.protocols})
        self._joins.pop(id(member), None)

    def _remove(self, member_id: str) -> None:
        member = self.members[member_id]
        self._drop(member)
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
        self.rebalances += 1  # (Kafka's: a rebalance of no members)
        self.state = EMPTY
        self.emptied_at_ms = self.wall_clock()
        self.generation_id += 1
        self.protocol_name = None
        self.leader = None
        self._store({}, _ignored)  # the coordinator logs a failure; nobody waits for it

    def _store(self, assignments: dict[str, bytes], stored: Stored) -> None:
        if self.on_store is None:
            stored(None)
        else:
            self.on_store(self, assignments, stored)

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
                f"group {self.group_id!r} is being deleted, or moved away; find its "
                "coordinator again"
            )


def _ignored(error: ApiError | None) -> None:
    pass


def _answer_alike(old: asyncio.Future[T], new: asyncio.Future[T]) -> None:
    """``new`` replaced ``old`` (a repeated request): ``old`` gets the same answer."""

    def copy(done: asyncio.Future[T]) -> None:
        if old.done():
            return
        if done.cancelled():
            old.cancel()
        elif (exc := done.exception()) is not None:
            old.set_exception(exc)
        else:
            old.set_result(done.result())

    new.add_done_callback(copy)
