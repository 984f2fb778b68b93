"""A consumer's membership in a group of Kafka's new consumer protocol (KIP-848,
``group_protocol="consumer"``): no JoinGroup or SyncGroup, no assignor on the client.
The member heartbeats (ConsumerGroupHeartbeat) with what it subscribes to and what it
owns; the coordinator answers with its member epoch and, when it changed, the partitions
it may own now. Partitions it no longer has are given up first (commit, the user's
``on_partitions_revoked``), then the new ones are taken (``on_partitions_assigned``), and
the next heartbeat says so at once: the coordinator hands a partition over only once its
previous owner has said it gave it up.

Same surface as :class:`client.membership.GroupMember` (the classic protocol's), for
:class:`client.consumer.Consumer`. The member epoch stands for the generation in commits
(Kafka's OffsetCommit v9 carries it there). Errors, as Kafka's clients take them:
UNKNOWN_MEMBER_ID and FENCED_MEMBER_EPOCH mean the group dropped this member (its
partitions are lost: no commit) and it joins again with epoch 0; a coordinator moving
or loading means another full heartbeat, to the coordinator found again; what cannot be
fixed by trying again (an assignor the brokers do not have, a regex that does not
compile, no authorization) fails the consumer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from typing import Any

from client.cluster import Cluster
from client.coordinator import GroupOffsets
from client.membership import Fatal, MemberHooks, poll_timed_out, run_steps, wait_woken
from client.types import TopicPartition, partition_names
from protocol.apis import (
    ApiKey,
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupTopicPartitions,
)
from protocol.errors import (
    ApiError,
    FencedMemberEpochError,
    UnknownMemberIdError,
)

__all__ = ["HeartbeatMember"]

_log = logging.getLogger("headwater.client.group")
_GROUP_PURPOSE = "group"
_LEAVE, _STATIC_LEAVE = -1, -2
_DROPPED = (UnknownMemberIdError, FencedMemberEpochError)


class HeartbeatMember:
    cooperative = True
    """Partitions move one at a time: a commit need not wait for a whole rebalance."""

    def __init__(
        self,
        cluster: Cluster,
        offsets: GroupOffsets,
        hooks: MemberHooks,
        *,
        group_instance_id: str | None,
        max_poll_interval_ms: int,
        retry_backoff_ms: int,
        remote_assignor: str | None = None,
        rack_id: str | None = None,
    ) -> None:
        self._cluster = cluster
        self._offsets = offsets
        self._hooks = hooks
        self.group_id = offsets.group_id
        self.group_instance_id = group_instance_id
        self.max_poll_interval_ms = max_poll_interval_ms
        self.remote_assignor = remote_assignor
        self.rack_id = rack_id or None
        self._backoff_s = retry_backoff_ms / 1000
        self.member_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        """Made here, kept for the consumer's life (Kafka's KIP-1082)."""
        self.epoch = 0
        self.topics: set[str] = set()
        self.pattern: Any = None
        self.assignment: list[TopicPartition] = []
        self._interval_s = 3.0  # until the coordinator says
        self._full = True  # the next heartbeat says everything (a join, a new coordinator)
        self._subscription_version = 1  # bumped by subscribe()
        self._subscription_sent = 0  # the version the coordinator has heard of
        self._pattern_sent = False  # a regex the group holds (cleared with "")
        self._ack = False  # the next heartbeat says what we own (a reconciliation ended)
        self._joined = False  # a join has gone out since the last leave
        self._target: list[ConsumerGroupTopicPartitions] | None = None  # not yet taken
        self._reconciling: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._wake = asyncio.Event()
        self._left_for_poll = False
        self._stopping = False
        self._parked = asyncio.Event()  # the task is at a point where it may stop
        self._task: asyncio.Task[None] | None = None
        self._ids: dict[str, bytes] = {}
        """The id each topic we own was given us under, by name (owned is said by id)."""

    # --- the consumer's side ----------------------------------------------------------------

    @property
    def generation_id(self) -> int:
        """The member epoch (what a commit carries as its generation); -1 before a join."""
        return self.epoch if self.epoch > 0 else -1

    @property
    def stable(self) -> bool:
        return self.epoch > 0 and not self._ack and self._reconciling is None

    def subscribe(self, topics: set[str] | list[str], pattern: str | None) -> None:
        self.topics = set(topics)
        self.pattern = pattern
        self._subscription_version += 1
        self._settled.clear()
        self._wake.set()

    def request_rejoin(self, why: str) -> None:
        """A commit was refused (a stale epoch): heartbeat now, for the news (a commit
        waiting in :meth:`wait_settled` goes again once it is in)."""
        _log.info("group %r: heartbeating at once: %s", self.group_id, why)
        self._settled.clear()
        self._wake.set()

    async def wait_settled(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        return self.stable

    def polled(self) -> None:
        if self._left_for_poll:
            self._left_for_poll = False
            self._full = True
            self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._parked.clear()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop heartbeating, give the partitions up (the consumer commits them), and
        leave (epoch -1; -2 for a static member, who keeps its partitions for the
        session timeout, to come back to). A heartbeat in flight, or a reconciliation
        under way, is let finish first (within the request timeout): cut, the commit
        would go out with an epoch the group has moved past."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._cluster.request_timeout_ms / 1000
            parked = loop.create_task(self._parked.wait())
            await asyncio.wait(  # (a task that failed is done: it parks nowhere)
                [parked, self._task],
                timeout=deadline - loop.time(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            parked.cancel()
            if self._reconciling is not None:  # (maybe begun by the last answer)
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(
                        asyncio.shield(self._reconciling), max(deadline - loop.time(), 0.001)
                    )
            for task in (self._task, self._reconciling):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            self._task = self._reconciling = None
        if self.assignment:
            await self._hooks.revoke(None)
            self.assignment = []
        await self._leave()
        self._left_for_poll = False
        self._settled.set()

    # --- the heartbeats ---------------------------------------------------------------------

    async def _run(self) -> None:
        await run_steps(self._step, self._failed, self.group_id, self._backoff_s)

    async def _step(self) -> None:
        if self._stopping:
            self._parked.set()
            await asyncio.Event().wait()  # until stop() cancels the task
        if self._left_for_poll:
            await self._wait(None)
            return
        if self._poll_timed_out():
            if self._reconciling is not None:
                await asyncio.gather(self._reconciling, return_exceptions=True)
            if self.assignment:
                await self._hooks.revoke(None)
                self.assignment = []
            await self._leave()
            return
        await self._heartbeat()
        if not (self._ack and self._reconciling is None):
            await self._wait(self._interval_s)

    def _failed(self, fatal: Fatal) -> None:
        self._hooks.fail(fatal.error)
        self.epoch = 0
        self._settled.set()

    async def _wait(self, timeout_s: float | None) -> None:
        if not self._stopping:  # (stop()'s wake may have come during a heartbeat)
            await wait_woken(self._wake, timeout_s)

    def _poll_timed_out(self) -> bool:
        if self.epoch <= 0 or not poll_timed_out(
            self.group_id, self._hooks, self.max_poll_interval_ms
        ):
            return False
        self._left_for_poll = True
        return True

    def _request(self) -> ConsumerGroupHeartbeatRequest:
        full = self._full or self.epoch == 0
        request = ConsumerGroupHeartbeatRequest(
            group_id=self.group_id, member_id=self.member_id, member_epoch=self.epoch
        )
        if full:
            request.instance_id = self.group_instance_id
            request.rack_id = self.rack_id
            request.rebalance_timeout_ms = self.max_poll_interval_ms
            request.server_assignor = self.remote_assignor
        if full or self._subscription_sent != self._subscription_version:
            request.subscribed_topic_names = sorted(self.topics)
            # null is "unchanged": "" drops a pattern the group holds (Kafka's)
            if self.pattern is not None:
                request.subscribed_topic_regex = self.pattern
            elif self._pattern_sent and self.epoch > 0:
                request.subscribed_topic_regex = ""
        reconciled = self._ack and self._reconciling is None
        if full or reconciled:
            request.topic_partitions = [] if self.epoch == 0 else self._owned_by_id(self.assignment)
        return request

    async def _heartbeat(self) -> None:
        request = self._request()
        acked = request.topic_partitions is not None and self._ack
        version = self._subscription_version
        try:
            node = await self._offsets.coordinator()
            self._joined = True
            response: ConsumerGroupHeartbeatResponse = await self._cluster.send(
                node, ApiKey.CONSUMER_GROUP_HEARTBEAT, request, purpose=_GROUP_PURPOSE
            )
        except ApiError as exc:
            await self._on_error(exc)
            return
        self._full = False
        if request.subscribed_topic_names is not None:
            self._subscription_sent = version
            self._pattern_sent = bool(request.subscribed_topic_regex)
        if acked:
            self._ack = False
        if response.member_id:
            self.member_id = response.member_id
        self.epoch = response.member_epoch
        if response.heartbeat_interval_ms > 0:
            self._interval_s = response.heartbeat_interval_ms / 1000
        if response.assignment is not None:
            self._target = response.assignment.topic_partitions
            if self._reconciling is None:
                self._reconciling = asyncio.get_running_loop().create_task(self._reconcile_all())
        if self.stable and self._target is None:
            self._settled.set()

    async def _reconcile_all(self) -> None:
        """Take the latest assignment given, and any given meanwhile, in its own task:
        heartbeats go on while the user's callbacks run (unacknowledged: the owned set
        is said once a reconciliation has ended)."""
        try:
            while self._target is not None:
                target, self._target = self._target, None
                await self._reconcile(target)
        except Exception:  # the next full heartbeat brings the assignment again
            _log.exception(
                "group %r: taking the assignment failed; asking for it again", self.group_id
            )
            self._full = True
        finally:
            self._reconciling = None
            self._wake.set()  # say what we own now

    async def _reconcile(self, given: list[ConsumerGroupTopicPartitions]) -> None:
        """Give up what the coordinator took away, take what it gave, and say so at the
        next heartbeat (sent at once). An id the metadata does not name yet (a topic
        made after this consumer looked) is asked for again with a full heartbeat.

        A partition of a topic deleted, or deleted and made again under its name (the
        same name, another id), is lost rather than given up: its position is not
        committed (it would land in the new topic's offsets), and the new topic's
        partition given under the name is taken afresh, from its own committed offset."""
        names = await self._names_of({bytes(t.topic_id) for t in given})
        resolved = all(bytes(t.topic_id) in names for t in given)
        new_ids = {
            TopicPartition(names[bytes(t.topic_id)], p): bytes(t.topic_id)
            for t in given
            if bytes(t.topic_id) in names
            for p in t.partitions
        }
        new = set(new_ids)
        owned = set(self.assignment)
        current = {name: meta.topic_id for name, meta in self._cluster.metadata.topics.items()}
        gone = {
            tp
            for tp in owned
            if (was := self._ids.get(tp.topic)) is not None
            and was != (new_ids[tp] if tp in new_ids else current.get(tp.topic, was))
        }
        revoked, added = owned - new - gone, (new - owned) | (gone & new)
        if revoked or added or gone:
            self._settled.clear()
        if gone:
            await self._hooks.lose(gone)
        if revoked:
            await self._hooks.revoke(revoked)
        self._ids = {tp.topic: topic_id for tp, topic_id in new_ids.items()}
        self.assignment = sorted(new)
        if revoked or added:
            await self._hooks.assign(self.assignment, added)
            _log.info(
                "group %r: member %s at epoch %d: %s%s",
                self.group_id,
                self.member_id,
                self.epoch,
                partition_names(new) or "no partitions",
                f" (gave up {partition_names(revoked)})" if revoked else "",
            )
        self._ack = True  # (what we own, said even when unchanged: the ids may have)
        if not resolved:
            self._full = True

    async def _names_of(self, topic_ids: set[bytes]) -> dict[bytes, str]:
        """Topic names by id, from the metadata (asked again for an id it lacks: a topic
        given before the consumer has looked it up)."""
        names = {v: k for k, v in self._ids.items()}
        names.update(_by_id(self._cluster.metadata.topics))
        if topic_ids - set(names):
            names.update(_by_id((await self._cluster.fetch_metadata(None)).topics))
        return names

    def _owned_by_id(self, partitions: list[TopicPartition]) -> list[ConsumerGroupTopicPartitions]:
        by_topic: dict[bytes, list[int]] = {}
        for tp in partitions:
            topic_id = self._ids.get(tp.topic)
            if topic_id is not None:
                by_topic.setdefault(topic_id, []).append(tp.partition)
        return [
            ConsumerGroupTopicPartitions(topic_id=t, partitions=sorted(ps))
            for t, ps in sorted(by_topic.items())
        ]

    async def _on_error(self, exc: ApiError) -> None:
        if isinstance(exc, _DROPPED):
            _log.warning(
                "group %r: the group dropped member %s (%s): its partitions are lost; "
                "joining again",
                self.group_id,
                self.member_id,
                exc.name,
            )
            if self._reconciling is not None:
                self._reconciling.cancel()
                await asyncio.gather(self._reconciling, return_exceptions=True)
                self._reconciling = None
            self._target = None
            if self.assignment:
                await self._hooks.lose(None)
                self.assignment = []
            self.epoch, self._full, self._ack = 0, True, False
            self._settled.clear()
            return
        if exc.retriable or exc.name in ("NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE"):
            self._offsets.coordinator_dead(exc)
            self._full = True
            await asyncio.sleep(self._backoff_s)
            return
        raise Fatal(exc)

    async def _leave(self) -> None:
        if self.epoch <= 0 and not self._joined:
            return  # never joined: nothing to leave (a join in flight has gone out)
        self._joined = False
        epoch = _STATIC_LEAVE if self.group_instance_id is not None else _LEAVE
        request = ConsumerGroupHeartbeatRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=epoch,
            instance_id=self.group_instance_id,
        )
        self.epoch, self._full = 0, True
        with contextlib.suppress(ApiError):  # best effort: the session timeout is the backstop
            node = await self._offsets.coordinator()
            await self._cluster.send(
                node, ApiKey.CONSUMER_GROUP_HEARTBEAT, request, purpose=_GROUP_PURPOSE
            )
            _log.info("group %r: member %s left", self.group_id, self.member_id)


def _by_id(topics: Any) -> dict[bytes, str]:
    return {meta.topic_id: name for name, meta in topics.items()}
