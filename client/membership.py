"""A consumer's membership in its group: join, sync, heartbeat, leave.

This is Kafka's ConsumerCoordinator, as one task, with both of its rebalance protocols:
EAGER (every member gives up everything, then the group assigns anew) and, when every
strategy the consumer names supports it (``cooperative-sticky``), KIP-429's COOPERATIVE
(a member keeps consuming what it keeps, and gives up only what moves):

- **Joining.** Eager: before it joins, the member gives up its partitions (``revoke``:
  the consumer commits, if auto-commit is on, and calls the user's
  ``on_partitions_revoked`` while its generation is still valid, so those commits are
  accepted). Cooperative: it gives up only the partitions of topics it no longer
  subscribes to, and goes on consuming the rest through the rebalance. Either way, a
  member the group dropped (its generation reset) has *lost* its partitions: they may be
  another member's already, so it stops at once, commits nothing, and calls
  ``on_partitions_lost``. JoinGroup carries the subscription in Kafka's ConsumerProtocol
  bytes (with the partitions owned and their generation), one per assignment strategy, in
  preference order; the coordinator holds it until every member has rejoined or the
  rebalance timeout (``max_poll_interval_ms``, as Kafka) passes, so it is sent with that
  timeout plus a margin, on a connection of its own.
- **Assigning.** The coordinator names one member leader and gives it every member's
  subscription; the leader reads the subscribed topics' partition counts and runs the
  chosen assignor (:mod:`client.assignors`). SyncGroup hands each member its share.
  Cooperative: the member gives up what it owned and was not given (commit, then
  ``on_partitions_revoked`` with just those) and joins again at once, so the next round
  can hand them over (the assignor gives nobody a partition another member still owns);
  ``on_partitions_assigned`` hears of the new ones only.
- **Stable.** A heartbeat every ``heartbeat_interval_ms`` keeps the session. Its answer
  says when to rejoin: REBALANCE_IN_PROGRESS (someone joined or left), ILLEGAL_GENERATION
  or UNKNOWN_MEMBER_ID (we were dropped: the partitions may be someone else's already).
  The coordinator moving (NOT_COORDINATOR, a lost connection) only means finding it again;
  the session survives if that takes less than ``session_timeout_ms``.
- **Metadata.** A subscribed topic whose partition count changes, or a new topic that
  matches a pattern subscription, makes the member rejoin, so the leader assigns again.
- **Polling.** If the user does not poll for ``max_poll_interval_ms`` the member leaves
  (Kafka's poll timeout): a stuck consumer must not hold partitions it does not process.
  Its next poll joins again.
- **Static membership** (KIP-345): with a ``group_instance_id`` the member never sends
  LeaveGroup; a restart within the session timeout rejoins as the same member, without a
  rebalance, and gets its partitions back. FENCED_INSTANCE_ID (another consumer with the
  same instance id) is fatal.

Fatal errors (a bad configuration the coordinator refuses) are handed to ``hooks.fail``
and the task ends; the consumer raises them from its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from client.assignors import (
    ASSIGNORS,
    COOPERATIVE,
    NO_RACKS,
    Assignment,
    ProtocolError,
    Racks,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from client.cluster import Cluster, ClusterMetadata
from client.consumer_metrics import GroupMetrics
from client.coordinator import GroupOffsets
from client.metrics import Metrics
from client.types import TopicPartition, partition_names
from protocol.apis import (
    ApiKey,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    JoinGroupResponse,
    LeaveGroupRequest,
    SyncGroupRequest,
    SyncGroupRequestAssignment,
    SyncGroupResponse,
)
from protocol.errors import (
    ApiError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    NotCoordinatorError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)

__all__ = ["GroupMember", "MemberHooks", "RebalanceListener"]

_log = logging.getLogger("headwater.client.membership")

PROTOCOL_TYPE = "consumer"
_GROUP_PURPOSE = "group"  # JoinGroup waits for the whole group: not behind a fetch or commit
_JOIN_MARGIN_MS = 5_000  # Kafka's client allows rebalance timeout + 5 s for JoinGroup
_REJOIN = (RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError)
_COORDINATOR_MOVED = (
    NotCoordinatorError,
    CoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
)


class RebalanceListener:
    """Kafka's ConsumerRebalanceListener: subclass it and pass it to ``subscribe()``.

    ``on_partitions_revoked`` runs while the consumer still owns the partitions it is
    giving up (eager: all of them, before it rejoins; cooperative: those that move, after
    the rebalance): commit what you have processed there. ``on_partitions_assigned`` runs
    once the new assignment is known, before any of its records are returned (eager: the
    whole assignment; cooperative: the partitions new to this consumer, maybe none).
    ``on_partitions_lost`` runs when the group dropped this consumer (a session or poll
    timeout it did not notice in time): the partitions may have another owner already, so
    a commit would be refused. By default it calls ``on_partitions_revoked``, as Kafka's.
    """

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called with the partitions this consumer is about to give up."""

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Called with the partitions this consumer owns from now on."""

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """Called with the partitions this consumer no longer owns (it was dropped)."""
        await self.on_partitions_revoked(lost)


@dataclasses.dataclass(slots=True)
class MemberHooks:
    """What the member needs from its consumer."""

    revoke: Callable[[set[TopicPartition] | None], Coroutine[Any, Any, None]]
    """Give up these partitions, None for all (commit, the user's callback, stop fetching
    them)."""
    assign: Callable[[list[TopicPartition], set[TopicPartition]], Awaitable[None]]
    """Take an assignment: all of it, and the partitions new to this member (fetch those
    from committed offsets, the user's callback)."""
    poll_age_ms: Callable[[], float]
    """How long since the user last polled (0 while a poll is waiting)."""
    fail: Callable[[BaseException], None]
    """A fatal error: the consumer raises it to the user."""
    lose: Callable[[set[TopicPartition] | None], Coroutine[Any, Any, None]]
    """Partitions are lost, None for all (the member was dropped; a topic deleted under
    it): stop at once, no commit, the user's callback."""


class GroupMember:
    def __init__(
        self,
        cluster: Cluster,
        offsets: GroupOffsets,
        hooks: MemberHooks,
        *,
        group_instance_id: str | None,
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
        max_poll_interval_ms: int,
        assignors: Sequence[str],
        retry_backoff_ms: int,
        metadata_max_age_ms: int,
        metrics: GroupMetrics | None = None,
        client_rack: str = "",
    ) -> None:
        self._cluster = cluster
        self.client_rack = client_rack
        """Said in our subscription (v3, KIP-881): a leader's assignor prefers to give us
        partitions with a replica in this rack."""
        self._metrics = metrics or GroupMetrics(Metrics(), lambda: len(self.assignment))
        """Kafka's consumer-coordinator-metrics (a consumer passes its own)."""
        self._offsets = offsets
        self._hooks = hooks
        self.group_id = offsets.group_id
        self.group_instance_id = group_instance_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.assignors = list(assignors)
        self.cooperative = all(name in COOPERATIVE for name in self.assignors)
        """KIP-429's protocol: only when every strategy named supports it (Kafka's rule: a
        group upgrades by a rolling restart with both, then one without the eager ones)."""
        self._backoff_s = retry_backoff_ms / 1000
        self._pattern_refresh_s = metadata_max_age_ms / 1000
        self.member_id = ""
        self.generation_id = -1
        self.topics: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        self.assignment: list[TopicPartition] = []
        self._owned_generation = -1  # the generation ``assignment`` came from
        self._holds_assignment = False
        self._revoking: asyncio.Task[None] | None = None
        self._revoking_what: set[TopicPartition] | None = None
        self._settled = asyncio.Event()  # set while joined with no rejoin pending
        self._rejoin = True
        self._left_for_poll = False
        self._watched: dict[str, int] = {}  # partition counts the last assignment used
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_heartbeat = 0.0
        self._pattern_checked = 0.0
        self._matched: set[str] = set()  # the topics the pattern matched at the last join

    # --- the user's side -------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str], pattern: str | None) -> None:
        self.topics = set(topics)
        self.pattern = re.compile(pattern) if pattern is not None else None
        self._pattern_checked = 0.0
        self._matched = set()
        self.request_rejoin("the subscription changed")

    def request_rejoin(self, why: str) -> None:
        if not self._rejoin:
            _log.info("group %r: rejoining: %s", self.group_id, why)
        self._rejoin = True
        self._settled.clear()
        self._wake.set()

    async def wait_settled(self, timeout_s: float) -> bool:
        """Wait until the member has joined a generation and no rejoin is pending (or
        stopped, or failed: then False at once)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        return self.stable

    def polled(self) -> None:
        """The user polled: a member that left for a poll timeout joins again."""
        if self._left_for_poll:
            self._left_for_poll = False
            self.request_rejoin("the consumer polled again after its poll timeout")

    @property
    def stable(self) -> bool:
        return not self._rejoin and self.generation_id >= 0

    def start(self) -> None:
        self._cluster.on_update.append(self._on_metadata)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """End the task, give the partitions up (the consumer commits them while the
        generation is still valid), and, for a dynamic member, leave the group so the
        others rebalance now rather than after the session timeout."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(ValueError):
            self._cluster.on_update.remove(self._on_metadata)
        await self._give_up_all()
        await self._leave("the consumer is closing")
        self._left_for_poll = False
        self._settled.set()  # a commit waiting for the rebalance: there is none now

    # --- the task --------------------------------------------------------------------------

    async def _run(self) -> None:
        await run_steps(self._step, self._failed, self.group_id, self._backoff_s)

    async def _step(self) -> None:
        if self._left_for_poll:
            await self._wait(None)
            return
        if self._rejoin:
            await self._join()
            self._next_heartbeat = time.monotonic() + self.heartbeat_interval_ms / 1000
            return
        if self._poll_timed_out():
            await self._give_up_all()
            await self._leave("poll timeout")
            return
        await self._check_pattern()
        now = time.monotonic()
        if now < self._next_heartbeat:
            await self._wait(self._next_heartbeat - now)
            return
        self._next_heartbeat = now + self.heartbeat_interval_ms / 1000
        await self._heartbeat()

    def _failed(self, fatal: Fatal) -> None:
        self._hooks.fail(fatal.error)
        self.generation_id = -1
        self._settled.set()  # nothing waits on a member that gave up

    async def _wait(self, timeout_s: float | None) -> None:
        await wait_woken(self._wake, timeout_s)

    def _poll_timed_out(self) -> bool:
        if not poll_timed_out(self.group_id, self._hooks, self.max_poll_interval_ms):
            return False
        self._left_for_poll = True
        return True

    # --- joining ---------------------------------------------------------------------------

    async def _join(self) -> None:
        """One attempt at a new generation; on any failure ``_rejoin`` stays set."""
        await self._prepare()
        self._rejoin = False  # a change seen from here on asks for another round
        self._metrics.rebalance_started()  # after the revocation, where Kafka's clock starts
        try:
            joined = await self._join_group()
            assignments = await self._assign(joined) if joined.leader == self.member_id else []
            assignment = await self._sync(assignments)
        except _RetryJoin as retry:
            self._rejoin = True
            self._metrics.rebalance_failed()
            if retry.backoff:
                await asyncio.sleep(self._backoff_s)
            return
        except ApiError as exc:  # a metadata lookup on the way (the leader's, a pattern's)
            self._rejoin = True
            self._metrics.rebalance_failed()
            self._on_error(exc)
            _log.warning("group %r: the join will be retried: %s", self.group_id, exc)
            await asyncio.sleep(self._backoff_s)
            return
        except BaseException as exc:
            self._rejoin = True  # whatever went wrong, never carry on as if joined
            if not isinstance(exc, asyncio.CancelledError):  # (stop() is no failure)
                self._metrics.rebalance_failed()
            raise
        self._metrics.rebalance_done()  # SyncGroup answered: Kafka's end of a rebalance
        if self._rejoin:
            # the world moved while we synced: round again before taking it (cooperative:
            # what we hold, we still hold, and the assignor gave it to nobody else)
            return
        mine = [tp for tp in assignment.partitions if self._subscribed(tp.topic)]
        owned = set(self.assignment) if self._holds_assignment else set()
        revoked = owned.difference(mine)
        if revoked:  # cooperative: what moves goes first, then the next round hands it over
            await self._revoke(revoked)
            self.request_rejoin(f"gave up {partition_names(revoked)} for other members")
        self.assignment = mine
        self._owned_generation = self.generation_id
        self._holds_assignment = True
        added = {tp for tp in mine if tp not in owned}
        _log.info(
            "group %r: generation %d, member %s, assigned %s%s",
            self.group_id,
            self.generation_id,
            self.member_id,
            sorted(mine),
            f" ({len(added)} new, {len(revoked)} given up)" if self.cooperative else "",
        )
        if not self._rejoin:
            self._settled.set()
        await self._hooks.assign(mine, added)

    async def _prepare(self) -> None:
        """Before JoinGroup: what the member must give up (see the module docstring)."""
        if not self._holds_assignment:
            return
        if self.generation_id < 0:
            await self._give_up_all()
        elif not self.cooperative:
            await self._revoke()
        else:
            unsubscribed = {tp for tp in self.assignment if not self._subscribed(tp.topic)}
            if unsubscribed:
                await self._revoke(unsubscribed)

    async def _give_up_all(self) -> None:
        """Revoke everything, or, if the group dropped us, lose it."""
        if self.generation_id < 0 and self._holds_assignment and self._revoking is None:
            await self._release(None, lost=True)
        else:
            await self._revoke()

    async def _revoke(self, partitions: set[TopicPartition] | None = None) -> None:
        await self._release(partitions, lost=False)

    async def _release(self, partitions: set[TopicPartition] | None, *, lost: bool) -> None:
        """Give ``partitions`` up (None: all), once, even if the task is cancelled
        meanwhile (stop() then waits for the same revocation: its commit and the user's
        callback, and then gives up what is left)."""
        while True:
            if self._revoking is None:
                if not self._holds_assignment:
                    return
                hook = self._hooks.lose(None) if lost else self._hooks.revoke(partitions)
                self._revoking = asyncio.get_running_loop().create_task(hook)
                self._revoking_what = None if lost else partitions
            revoking, what = self._revoking, self._revoking_what
            try:
                await asyncio.shield(revoking)
            finally:
                if revoking.done() and self._revoking is revoking:
                    self._revoking = None
                    if what is None:
                        self._holds_assignment = False  # self.assignment stays: what we owned
                        if lost:  # not ours: the sticky assignor must not count it
                            self.assignment, self._owned_generation = [], -1
                    else:
                        self.assignment = [tp for tp in self.assignment if tp not in what]
            if what is None or what == partitions:
                return

    async def _join_group(self) -> JoinGroupResponse:
        topics = await self._subscribed_topics()
        protocols = [
            JoinGroupRequestProtocol(name=name, metadata=self._subscription(sorted(topics), name))
            for name in self.assignors
        ]
        request = JoinGroupRequest(
            group_id=self.group_id,
            session_timeout_ms=self.session_timeout_ms,
            rebalance_timeout_ms=self.max_poll_interval_ms,
            member_id=self.member_id,
            group_instance_id=self.group_instance_id,
            protocol_type=PROTOCOL_TYPE,
            protocols=protocols,
            client_id=self._cluster.client_id,
        )
        timeout_ms = self.max_poll_interval_ms + _JOIN_MARGIN_MS
        response: JoinGroupResponse = await self._call(ApiKey.JOIN_GROUP, request, timeout_ms)
        self.member_id = response.member_id
        self.generation_id = response.generation_id
        return response

    def _subscription(self, topics: list[str], assignor: str) -> bytes:
        """Our subscription for ``assignor``, with the partitions we claim to own. A
        cooperative member claims what it holds. An eager one has given everything up:
        for a cooperative assignor it claims nothing (as Kafka's), since that assignor
        gives nobody a partition another member claims, and nothing would hand over a
        partition it claimed and no longer holds; for ``sticky`` it names what it had, so
        the assignment stays where it was."""
        if self.cooperative:
            owned = list(self.assignment) if self._holds_assignment else []
        else:
            owned = [] if assignor in COOPERATIVE else list(self.assignment)
        return encode_subscription(
            Subscription(topics, None, owned, self._owned_generation, self.client_rack or None)
        )

    async def _assign(self, joined: JoinGroupResponse) -> list[SyncGroupRequestAssignment]:
        """The leader's work: every member's share, by the strategy the group chose."""
        members: dict[str, Subscription] = {}
        for m in joined.members:
            try:
                sub = decode_subscription(bytes(m.metadata))
            except ProtocolError as exc:
                _log.warning(
                    "group %r: member %s sent a bad subscription: %s",
                    self.group_id,
                    m.member_id,
                    exc,
                )
                sub = Subscription([])
            members[m.member_id] = dataclasses.replace(sub, instance_id=m.group_instance_id)
        topics = sorted({t for s in members.values() for t in s.topics})
        metadata = await self._cluster.fetch_metadata(topics) if topics else None
        counts = (
            {t: len(metadata.partitions_for(t) or ()) for t in topics}
            if metadata is not None
            else {}
        )
        self._cluster.add_topics(topics)  # the periodic refresh tells us when they change
        self._watched = counts  # as Kafka, only the leader watches the partition counts
        assignor = ASSIGNORS.get(joined.protocol_name or "")
        if assignor is None:
            raise Fatal(
                InconsistentGroupProtocolError(
                    f"group {self.group_id!r} chose strategy {joined.protocol_name!r}, "
                    f"which this consumer does not know"
                )
            )
        racks = NO_RACKS
        if metadata is not None and any(s.rack for s in members.values()):
            racks = replica_racks(metadata, topics)
        shares = assignor({t: n for t, n in counts.items() if n > 0}, members, racks)
        return [
            SyncGroupRequestAssignment(member_id=m, assignment=encode_assignment(Assignment(tps)))
            for m, tps in shares.items()
        ]

    async def _sync(self, assignments: list[SyncGroupRequestAssignment]) -> Assignment:
        request = SyncGroupRequest(
            group_id=self.group_id,
            generation_id=self.generation_id,
            member_id=self.member_id,
            group_instance_id=self.group_instance_id,
            assignments=assignments,
        )
        timeout_ms = self.max_poll_interval_ms + _JOIN_MARGIN_MS
        response: SyncGroupResponse = await self._call(ApiKey.SYNC_GROUP, request, timeout_ms)
        try:
            return decode_assignment(bytes(response.assignment))
        except ProtocolError as exc:
            _log.warning("group %r: a bad assignment from the leader: %s", self.group_id, exc)
            raise _RetryJoin(backoff=True) from None

    async def _call(self, api_key: ApiKey, request: object, timeout_ms: int | None = None) -> Any:
        """A membership request to the coordinator; errors become join/rejoin decisions."""
        try:
            node = await self._offsets.coordinator()
            return await self._cluster.send(
                node, api_key, request, purpose=_GROUP_PURPOSE, timeout_ms=timeout_ms
            )
        except ApiError as exc:
            self._on_error(exc)
            raise _RetryJoin(backoff=not isinstance(exc, RebalanceInProgressError)) from exc

    def _on_error(self, exc: ApiError) -> None:
        """What an error from the coordinator means for this member; raises if fatal."""
        if isinstance(exc, UnknownMemberIdError):
            self.member_id, self.generation_id = "", -1
            # lost, not owned: the sticky assignor must not count it
            self.assignment, self._owned_generation = [], -1
        elif isinstance(exc, IllegalGenerationError):
            self.generation_id = -1
        elif isinstance(exc, _COORDINATOR_MOVED) or exc.retriable:
            self._offsets.coordinator_dead(exc)
        elif not isinstance(exc, RebalanceInProgressError):
            raise Fatal(exc)

    # --- stable ---------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        request = HeartbeatRequest(
            group_id=self.group_id,
            generation_id=self.generation_id,
            member_id=self.member_id,
            group_instance_id=self.group_instance_id,
        )
        sent = self._metrics.heartbeat_sent()
        # a coordinator that does not answer within half the session is given up on (the
        # connection closed, the coordinator looked for again) while the session may
        # still be saved at the next one; Kafka's member does so at the full session
        timeout_ms = min(self.session_timeout_ms // 2, self._cluster.request_timeout_ms)
        try:
            await self._call(ApiKey.HEARTBEAT, request, timeout_ms=timeout_ms)
            self._metrics.heartbeat_answered(sent)
        except _RetryJoin as retry:
            if isinstance(retry.__cause__, _REJOIN):  # answered, with news
                self._metrics.heartbeat_answered(sent)
                self.request_rejoin(f"the coordinator answered {retry.__cause__}")
            else:  # Kafka's "Attempt to heartbeat failed": a failover's trace
                _log.info("group %r: a heartbeat failed: %s", self.group_id, retry.__cause__)
                if retry.backoff:
                    await asyncio.sleep(self._backoff_s)

    async def _leave(self, why: str) -> None:
        """LeaveGroup for a dynamic member (a static one keeps its place: KIP-345)."""
        member_id, self.member_id, self.generation_id = self.member_id, "", -1
        if not member_id or self.group_instance_id is not None:
            return
        with contextlib.suppress(ApiError):  # best effort: the session timeout is the backstop
            node = await self._offsets.coordinator()
            await self._cluster.send(  # not behind a JoinGroup on the group connection
                node,
                ApiKey.LEAVE_GROUP,
                LeaveGroupRequest(group_id=self.group_id, member_id=member_id),
            )
            _log.info("group %r: member %s left (%s)", self.group_id, member_id, why)

    # --- what we are subscribed to ---------------------------------------------------------

    def _subscribed(self, topic: str) -> bool:
        if topic in self.topics:
            return True
        return self.pattern is not None and _matches(self.pattern, topic)

    async def _subscribed_topics(self) -> set[str]:
        if self.pattern is None:
            self._cluster.add_topics(self.topics)
            return set(self.topics)
        metadata = await self._cluster.fetch_metadata(None)
        self._pattern_checked = time.monotonic()
        found = {t for t in metadata.topics if _matches(self.pattern, t)}
        self._cluster.add_topics(found)
        self._matched = found
        return found | self.topics

    async def _check_pattern(self) -> None:
        """A pattern subscription looks for new topics every metadata_max_age_ms."""
        if self.pattern is None:
            return
        if time.monotonic() - self._pattern_checked < self._pattern_refresh_s:
            return
        self._pattern_checked = time.monotonic()
        metadata = await self._cluster.fetch_metadata(None)
        new = {t for t in metadata.topics if _matches(self.pattern, t)} - self._matched
        if new:
            self.request_rejoin(f"new topics match the pattern: {sorted(new)}")

    def _on_metadata(self, metadata: ClusterMetadata) -> None:
        """A partition count that differs from the one assigned over: assign again."""
        if not self.stable:
            return
        for topic, count in self._watched.items():
            now = metadata.partitions_for(topic)
            if now is None:
                if isinstance(metadata.topic_errors.get(topic), UnknownTopicOrPartitionError):
                    now = set()
                else:
                    continue
            if len(now) != count:
                self.request_rejoin(f"{topic} has {len(now)} partitions, not {count}")
                return


def replica_racks(metadata: ClusterMetadata, topics: Iterable[str]) -> Racks:
    """Each partition's replicas' racks, as the metadata names them (KIP-881): every
    replica counts, in sync or not (Kafka's reasoning: consumers do not rebalance when the
    ISR changes, and a replica out of it is likely back soon). A replica on a broker the
    metadata does not list (down) names no rack."""
    brokers = metadata.brokers
    out: dict[TopicPartition, frozenset[str]] = {}
    for name in topics:
        topic = metadata.topics.get(name)
        if topic is None:
            continue
        for p in topic.partitions.values():
            out[TopicPartition(name, p.partition)] = frozenset(
                rack
                for r in p.replicas
                if (broker := brokers.get(r)) is not None and (rack := broker.rack)
            )
    return out


def _matches(pattern: re.Pattern[str], topic: str) -> bool:
    return not topic.startswith("__") and pattern.fullmatch(topic) is not None


async def run_steps(
    step: Callable[[], Coroutine[Any, Any, None]],
    failed: Callable[[Fatal], None],
    group_id: str,
    backoff_s: float,
) -> None:
    """A member's task: ``step`` again and again until cancelled, or until a fatal error
    (``failed``); any other failure is logged and the task goes on after ``backoff_s``."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Fatal as fatal:
            failed(fatal)
            return
        except Exception:  # never a silent stop: log, back off, go on
            _log.exception("group %r: the membership task failed; it retries", group_id)
            await asyncio.sleep(backoff_s)


async def wait_woken(wake: asyncio.Event, timeout_s: float | None) -> None:
    """Until ``wake`` is set (cleared first), or ``timeout_s`` passes."""
    wake.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), timeout_s)


def poll_timed_out(group_id: str, hooks: MemberHooks, max_poll_interval_ms: int) -> bool:
    """Whether the user has not polled for ``max_poll_interval_ms`` (said once, as a
    warning with what to do): the member then leaves the group until the next poll."""
    age_ms = hooks.poll_age_ms()
    if age_ms <= max_poll_interval_ms:
        return False
    _log.warning(
        "group %r: no poll for %d ms (max_poll_interval_ms=%d): leaving the group; "
        "process records faster, or poll with smaller max_records",
        group_id,
        age_ms,
        max_poll_interval_ms,
    )
    return True


class _RetryJoin(Exception):
    def __init__(self, *, backoff: bool) -> None:
        super().__init__("retry the join")
        self.backoff = backoff


class Fatal(Exception):
    """An error the member cannot get past by trying again: the consumer raises it."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error
