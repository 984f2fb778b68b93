"""One consumer group's membership: Kafka's group state machine, without the sockets.

States (Kafka's GroupCoordinator): Empty -> PreparingRebalance (someone joined or left;
every member must rejoin within the rebalance timeout) -> CompletingRebalance (the
generation is formed: the leader has the members' subscriptions and computes the
assignment) -> Stable (the leader's SyncGroup delivered every member's assignment).
A member that neither heartbeats nor rejoins within its session timeout is removed and the
group rebalances. Requests are checked against the member id and the generation, so a
member from an older generation (a zombie) is refused: UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS.

Joins and syncs wait on futures that the transitions complete; time passes only through
:meth:`Group.tick` with the coordinator's clock, so tests drive it directly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from protocol.errors import (
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

__all__ = ["Group", "JoinResult", "Member"]

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"


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
    assignment: bytes = b""
    join: asyncio.Future[JoinResult] | None = None
    sync: asyncio.Future[bytes] | None = None


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
    rebalance_deadline_ms: int = 0

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
    ) -> asyncio.Future[JoinResult]:
        """A (re)join; the future completes when the generation forms."""
        if self.members and protocol_type != self.protocol_type:
            raise InconsistentGroupProtocolError(
                f"group {self.group_id!r} uses protocol type {self.protocol_type!r}, "
                f"not {protocol_type!r}"
            )
        if self.members and not self._common_protocols({name for name, _ in protocols}):
            raise InconsistentGroupProtocolError(
                f"group {self.group_id!r}: no assignment strategy in common with the members"
            )
        now = self.clock()
        if not member_id:
            member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
            self.members[member_id] = Member(
                member_id,
                group_instance_id,
                client_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocol_type,
                protocols,
                now,
            )
        elif member_id not in self.members:
            raise UnknownMemberIdError(
                f"group {self.group_id!r} has no member {member_id!r}; join again without one"
            )
        member = self.members[member_id]
        member.protocols = protocols
        member.last_seen_ms = now
        if member.join is not None and not member.join.done():
            member.join.cancel()  # a retried join replaces the one in flight
        member.join = asyncio.get_running_loop().create_future()
        self.protocol_type = protocol_type
        if self.state != PREPARING:
            self._prepare_rebalance(now)
        self._maybe_complete_join(now)
        return member.join

    def _common_protocols(self, extra: set[str] | None = None) -> list[str]:
        """Strategy names every member supports, in the leader's (or first) preference."""
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
        initial = self.state == EMPTY
        self.state = PREPARING
        timeout = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        delay = self.initial_rebalance_delay_ms if initial else timeout
        self.rebalance_deadline_ms = now + delay

    def _maybe_complete_join(self, now: int) -> None:
        if self.state != PREPARING:
            return
        waiting = [m for m in self.members.values() if m.join is None or m.join.done()]
        if waiting and now < self.rebalance_deadline_ms:
            return  # some members have not rejoined yet
        if self.initial_rebalance_delay_ms and now < self.rebalance_deadline_ms:
            return  # a new group waits a moment for the rest to arrive
        for m in waiting:  # did not rejoin in time: out
            del self.members[m.member_id]
        if not self.members:
            self.state = EMPTY
            self.generation_id += 1
            return
        self.generation_id += 1
        common = self._common_protocols()
        self.protocol_name = common[0] if common else None
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        self.state = COMPLETING
        everyone = [
            (m.member_id, m.group_instance_id, dict(m.protocols).get(self.protocol_name or "", b""))
            for m in self.members.values()
        ]
        for m in self.members.values():
            assert m.join is not None
            m.join.set_result(
                JoinResult(
                    self.generation_id,
                    self.protocol_type or "",
                    self.protocol_name or "",
                    self.leader,
                    m.member_id,
                    everyone if m.member_id == self.leader else [],
                )
            )
            m.last_seen_ms = now

    # --- SyncGroup, Heartbeat, LeaveGroup -----------------------------------------------

    def sync(
        self, member_id: str, generation_id: int, assignments: dict[str, bytes]
    ) -> asyncio.Future[bytes]:
        member = self._check(member_id, generation_id)
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
        return future

    def heartbeat(self, member_id: str, generation_id: int) -> None:
        self._check(member_id, generation_id)
        if self.state == PREPARING:
            raise RebalanceInProgressError(f"group {self.group_id!r} is rebalancing; join again")

    def leave(self, member_id: str) -> None:
        if member_id not in self.members:
            raise UnknownMemberIdError(f"group {self.group_id!r} has no member {member_id!r}")
        self._remove(member_id)

    def check_commit(self, member_id: str, generation_id: int) -> None:
        """An OffsetCommit: from the current generation's member, or from outside
        membership (generation -1) while the group has no members."""
        if generation_id < 0 and not member_id:
            if self.members:
                raise UnknownMemberIdError(
                    f"group {self.group_id!r} has members: commits must come from them"
                )
            return
        self._check(member_id, generation_id)
        if self.state == PREPARING:
            raise RebalanceInProgressError(f"group {self.group_id!r} is rebalancing; join again")

    def tick(self) -> None:
        """Time passes: silent members go, a rebalance past its deadline completes."""
        now = self.clock()
        for m in list(self.members.values()):
            awaiting_join = self.state == PREPARING and m.join is not None and not m.join.done()
            if not awaiting_join and now - m.last_seen_ms > m.session_timeout_ms:
                self._remove(m.member_id)
        self._maybe_complete_join(now)

    def _remove(self, member_id: str) -> None:
        member = self.members.pop(member_id)
        for future in (member.join, member.sync):
            if future is not None and not future.done():
                future.cancel()
        if self.state == PREPARING:
            self._maybe_complete_join(self.clock())
        elif self.members:
            self._prepare_rebalance(self.clock())
        else:
            self.state = EMPTY
            self.generation_id += 1

    def _check(self, member_id: str, generation_id: int) -> Member:
        member = self.members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(
                f"group {self.group_id!r} has no member {member_id!r}; join again"
            )
        if generation_id != self.generation_id:
            raise IllegalGenerationError(
                f"group {self.group_id!r} is at generation {self.generation_id}, not "
                f"{generation_id}; join again"
            )
        member.last_seen_ms = self.clock()
        return member
