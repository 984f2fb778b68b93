"""The group coordinator's share groups (KIP-932): ShareGroupHeartbeat and
ShareGroupDescribe, on the broker that coordinates the group id (the leader of its
``__consumer_offsets`` partition, as for every group; one id space with the classic and
consumer groups). Membership is :mod:`broker.coordinator.share_group`.

A share group's membership is held in memory (not yet written to ``__consumer_offsets``,
as Kafka's is): when its coordinator moves, members hear UNKNOWN_MEMBER_ID and rejoin
with the same id, which every share consumer does. What the members have read is kept
by the partitions' leaders (see :mod:`broker.replica.shares`), not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from broker.authorizer import Authorizer, group_not_authorized, topic_not_authorized
from broker.coordinator.offsets import OffsetStore
from broker.coordinator.share_group import LEAVE, ShareGroup, check_heartbeat
from broker.locks import KeyedLocks
from broker.replica.share_partition import ACKNOWLEDGED, ARCHIVED
from broker.server import PEER_HOST
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    ConsumerGroupAssignment,
    ConsumerGroupTopicPartitions,
    DescribedAssignment,
    DescribedTopicPartitions,
    DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse,
    ProducePartitionResponse,
    ReadShareGroupStateRequest,
    ReadShareGroupStateResponse,
    ShareGroupDescribed,
    ShareGroupDescribedMember,
    ShareGroupDescribeRequest,
    ShareGroupDescribeResponse,
    ShareGroupHeartbeatRequest,
    ShareGroupHeartbeatResponse,
    ShareGroupPartitionOffset,
    ShareGroupTopicOffsets,
    ShareStateBatch,
    WriteShareGroupStateRequest,
    WriteShareGroupStateResponse,
)
from protocol.consumer_group_log import TopicInfo
from protocol.errors import (
    ApiError,
    CoordinatorNotAvailableError,
    FencedLeaderEpochError,
    GroupIdNotFoundError,
    NonEmptyGroupError,
    NotCoordinatorError,
    NotLeaderOrFollowerError,
    UnknownMemberIdError,
    UnsupportedVersionError,
    error_for_code,
)
from protocol.share_state_log import (
    ShareStateKey,
    StoredShareState,
    encode_share_state_key,
    encode_share_state_value,
)

__all__ = ["ShareGroups"]


class _Coordinator(Protocol):
    """What of the group coordinator share groups use."""

    @property
    def groups(self) -> Mapping[str, object]: ...

    def _store_for(self, group: str) -> tuple[int, OffsetStore]: ...

    def _topics_now(self) -> dict[str, TopicInfo]: ...

    async def _append(
        self, index: int, records: list[tuple[bytes, bytes | None]]
    ) -> ProducePartitionResponse: ...

    def _applied(
        self,
        index: int,
        store: OffsetStore | None,
        records: list[tuple[bytes, bytes | None]],
        base_offset: int,
    ) -> None: ...


class ShareGroups:
    """The share groups a group coordinator holds. ``clock()``: ms, standing still while
    the coordinator's view is in doubt (its Doubt's clock)."""

    def __init__(
        self,
        coordinator: _Coordinator,
        clock: Callable[[], int],
        authorizer: Authorizer | None = None,
        *,
        enabled: bool = True,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 5_000,
        max_size: int = 200,
        partition_of: Callable[[str], int],
        broker_id: int = -1,
        group_configs: Callable[[str, str], str] | None = None,
    ) -> None:
        """``group_configs(group, name)``: a group's share.session.timeout.ms and
        share.heartbeat.interval.ms (None: the broker's)."""
        self._coordinator = coordinator
        self._clock = clock
        self._acl = authorizer or Authorizer()
        self.enabled = enabled
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._max_size = max_size
        self._partition_of = partition_of
        self._group_configs = group_configs
        self.groups: dict[str, ShareGroup] = {}
        self._state_locks: KeyedLocks[ShareStateKey] = KeyedLocks()
        """One read or write of a key at a time: a fencing check and the record it allows
        are not separated by another's."""
        self._log = structlog.get_logger("headwater.coordinator").bind(broker_id=broker_id)

    def heartbeat(self, request: ShareGroupHeartbeatRequest) -> ShareGroupHeartbeatResponse:
        """A member joins (epoch 0), heartbeats, or leaves (-1); an error changes nothing."""
        try:
            return self._heartbeat(request)
        except ApiError as exc:
            return ShareGroupHeartbeatResponse(
                error_code=exc.code,
                error_message=exc.message,
                member_id=request.member_id or None,
                member_epoch=-1,
            )

    def _heartbeat(self, request: ShareGroupHeartbeatRequest) -> ShareGroupHeartbeatResponse:
        self._check_enabled()
        group_id = request.group_id
        if not self._acl.allowed(Operation.READ, ResourceType.GROUP, group_id):
            raise group_not_authorized(group_id, Operation.READ)
        self._coordinator._store_for(group_id)
        check_heartbeat(
            request.member_id, request.member_epoch, request.rack_id, request.subscribed_topic_names
        )
        for topic in request.subscribed_topic_names or ():
            if not self._acl.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic):
                raise topic_not_authorized(topic, Operation.DESCRIBE)
        if group_id in self._coordinator.groups:
            raise GroupIdNotFoundError(
                f"group {group_id!r} is not a share group (a consumer group has the id)"
            )
        group = self.groups.get(group_id)
        if request.member_epoch == LEAVE:
            # a member of a group this coordinator does not hold (it moved here since,
            # and memberships are not stored) is gone already: its leave is answered as
            # taken (librdkafka takes an error here as fatal to the consumer)
            if group is not None and request.member_id in group.members:
                group.leave(request.member_id)
            self._log.info(
                "share_group.member_left",
                group=group_id,
                member=request.member_id,
                epoch=None if group is None else group.epoch,
            )
            return ShareGroupHeartbeatResponse(
                member_id=request.member_id,
                member_epoch=LEAVE,
                heartbeat_interval_ms=self._heartbeat_interval_ms,
            )
        if group is None:
            if request.member_epoch != 0:
                raise UnknownMemberIdError(
                    f"share group {group_id!r} has no member {request.member_id!r}: rejoin"
                )
            group = ShareGroup(
                group_id,
                self._coordinator._topics_now,
                session_timeout_ms=self._session_timeout_ms,
                heartbeat_interval_ms=self._heartbeat_interval_ms,
                max_size=self._max_size,
            )
        if self._group_configs is not None:  # (a change counts from the next heartbeat)
            group.session_timeout_ms = int(
                self._group_configs(group_id, "share.session.timeout.ms")
            )
            group.heartbeat_interval_ms = int(
                self._group_configs(group_id, "share.heartbeat.interval.ms")
            )
        before = group.epoch
        answer = group.heartbeat(
            request.member_id,
            request.member_epoch,
            self._clock(),
            rack_id=request.rack_id,
            subscribed=request.subscribed_topic_names,
            client_id=request.client_id,
            client_host=PEER_HOST.get(),
        )
        self.groups[group_id] = group  # (a join refused above made none)
        if group.epoch != before:
            self._log.info(
                "share_group.epoch_bumped",
                group=group_id,
                epoch=group.epoch,
                member=request.member_id,
                members=len(group.members),
            )
        return ShareGroupHeartbeatResponse(
            member_id=answer.member_id,
            member_epoch=answer.epoch,
            heartbeat_interval_ms=group.heartbeat_interval_ms,
            assignment=None
            if answer.assignment is None
            else ConsumerGroupAssignment(
                topic_partitions=[
                    ConsumerGroupTopicPartitions(topic_id=t, partitions=sorted(ps))
                    for t, ps in sorted(answer.assignment.items())
                ]
            ),
        )

    def describe(self, request: ShareGroupDescribeRequest) -> ShareGroupDescribeResponse:
        return ShareGroupDescribeResponse(groups=[self._described(g) for g in request.group_ids])

    def _described(self, group_id: str) -> ShareGroupDescribed:
        try:
            self._check_enabled()
            if not self._acl.allowed(Operation.DESCRIBE, ResourceType.GROUP, group_id):
                raise group_not_authorized(group_id, Operation.DESCRIBE)
            self._coordinator._store_for(group_id)
            group = self.groups.get(group_id)
            if group is None:
                raise GroupIdNotFoundError(f"group {group_id!r} is not a share group")
        except ApiError as exc:
            return ShareGroupDescribed(
                group_id=group_id,
                group_state="Dead",
                error_code=exc.code,
                error_message=exc.message,
            )
        topics = self._coordinator._topics_now()
        names = {info.topic_id: name for name, info in topics.items()}
        return ShareGroupDescribed(
            group_id=group_id,
            group_state=group.state,
            group_epoch=group.epoch,
            assignment_epoch=group.assignment_epoch,
            assignor_name=group.assignor,
            members=[
                ShareGroupDescribedMember(
                    member_id=m.member_id,
                    rack_id=m.rack_id,
                    member_epoch=m.epoch,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    subscribed_topic_names=list(m.subscribed),
                    assignment=DescribedAssignment(
                        topic_partitions=[
                            DescribedTopicPartitions(
                                topic_id=t, topic_name=names[t], partitions=sorted(ps)
                            )
                            for t, ps in sorted(m.assigned.items())
                            if t in names  # (Kafka's: a topic gone from the metadata is left out)
                        ]
                    ),
                )
                for m in group.members.values()
            ],
        )

    def describe_offsets(
        self, request: DescribeShareGroupOffsetsRequest
    ) -> DescribeShareGroupOffsetsResponse:
        """Where the group is in each partition it has read (its stored start offsets),
        with how many records past each are done; a topic asked for that it has not read:
        its partitions at -1 (Kafka's)."""
        group_id = request.group_id
        try:
            self._check_enabled()
            if not self._acl.allowed(Operation.DESCRIBE, ResourceType.GROUP, group_id):
                raise group_not_authorized(group_id, Operation.DESCRIBE)
            _, store = self._coordinator._store_for(group_id)
            if not self.holds(group_id):
                raise GroupIdNotFoundError(f"group {group_id!r} is not a share group here")
        except ApiError as exc:
            return DescribeShareGroupOffsetsResponse(error_code=exc.code, error_message=exc.message)
        topics = self._coordinator._topics_now()
        names = {info.topic_id: name for name, info in topics.items()}
        wanted = None if request.topics is None else set(request.topics)
        found: dict[str, ShareGroupTopicOffsets] = {}
        for key, state in store.share_states.items():
            name = names.get(key.topic_id)
            if key.group_id != group_id or name is None or (wanted and name not in wanted):
                continue  # (another group's, a deleted topic's, one not asked for)
            if not self._acl.allowed(Operation.DESCRIBE, ResourceType.TOPIC, name):
                continue
            topic = found.get(name)
            if topic is None:
                topic = found[name] = ShareGroupTopicOffsets(topic=name, topic_id=key.topic_id)
            done = sum(
                last - max(first, state.start_offset) + 1
                for first, last, kind, _ in state.batches
                if kind in (ACKNOWLEDGED, ARCHIVED) and last >= state.start_offset
            )
            topic.partitions.append(
                ShareGroupPartitionOffset(
                    partition_index=key.partition,
                    start_offset=state.start_offset,
                    leader_epoch=state.leader_epoch,
                    delivery_complete_count=done,
                )
            )
        for name in sorted(wanted or ()):
            info = topics.get(name)
            if name in found or info is None:
                continue
            found[name] = ShareGroupTopicOffsets(
                topic=name,
                topic_id=info.topic_id,
                partitions=[
                    ShareGroupPartitionOffset(partition_index=p) for p in range(info.partitions)
                ],
            )
        answer = [found[n] for n in sorted(found)]
        for topic in answer:
            topic.partitions.sort(key=lambda p: p.partition_index)
        return DescribeShareGroupOffsetsResponse(topics=answer)

    # --- the delivery states the partitions' leaders store here --------------------------

    async def read_state(self, request: ReadShareGroupStateRequest) -> ReadShareGroupStateResponse:
        """A partition's new leader takes the group's delivery state of it (none stored:
        the start the leader gives, stored now); its leader epoch is stored with it first
        (a write from an older leader is refused after). The answer says the epoch it
        was stored in before: a leader that led before, in an older epoch, learns whether
        another led between."""
        try:
            key = ShareStateKey(request.group_id, request.topic_id, request.partition)
            async with self._state_locks.hold(key):
                index, store = self._coordinator._store_for(request.group_id)
                stored = store.share_states.get(key)
                before = -1 if stored is None else stored.leader_epoch
                if stored is not None and request.leader_epoch < stored.leader_epoch:
                    raise _fenced(request.leader_epoch, stored.leader_epoch)
                if stored is None and request.start_offset >= 0:
                    stored = StoredShareState(request.leader_epoch, request.start_offset)
                    await self._store(index, store, key, stored)
                elif stored is not None and request.leader_epoch > stored.leader_epoch:
                    stored = stored._replace(leader_epoch=request.leader_epoch)
                    await self._store(index, store, key, stored)
        except ApiError as exc:
            return ReadShareGroupStateResponse(error_code=exc.code, error_message=exc.message)
        if stored is None:
            return ReadShareGroupStateResponse()
        return ReadShareGroupStateResponse(
            leader_epoch=before,
            start_offset=stored.start_offset,
            state_batches=[
                ShareStateBatch(
                    first_offset=first, last_offset=last, delivery_state=state, delivery_count=n
                )
                for first, last, state, n in stored.batches
            ],
        )

    async def write_state(
        self, request: WriteShareGroupStateRequest
    ) -> WriteShareGroupStateResponse:
        """The partition's leader stores the group's delivery state of it (acks=all, as a
        commit); refused from a leader older than the one that read or wrote it last."""
        try:
            key = ShareStateKey(request.group_id, request.topic_id, request.partition)
            async with self._state_locks.hold(key):
                index, store = self._coordinator._store_for(request.group_id)
                stored = store.share_states.get(key)
                if stored is not None and request.leader_epoch < stored.leader_epoch:
                    raise _fenced(request.leader_epoch, stored.leader_epoch)
                state = StoredShareState(
                    request.leader_epoch,
                    request.start_offset,
                    tuple(
                        (b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
                        for b in request.state_batches
                    ),
                )
                await self._store(index, store, key, state)
        except ApiError as exc:
            return WriteShareGroupStateResponse(error_code=exc.code, error_message=exc.message)
        return WriteShareGroupStateResponse()

    async def _store(
        self, index: int, store: OffsetStore, key: ShareStateKey, state: StoredShareState
    ) -> None:
        records: list[tuple[bytes, bytes | None]] = [
            (encode_share_state_key(key), encode_share_state_value(state))
        ]
        result = await self._coordinator._append(index, records)
        if result.base_offset < 0:
            raise _state_not_stored(result.error_code, result.error_message)
        self._coordinator._applied(index, store, records, result.base_offset)
        if result.error_code:  # appended, not replicated in time: not stored for sure
            raise _state_not_stored(result.error_code, result.error_message)

    # --- what the coordinator asks --------------------------------------------------------

    def tick(self) -> None:
        """Members silent for their session timeout are fenced."""
        now = self._clock()
        for group in self.groups.values():
            deadline = group.next_deadline()
            if deadline is None or deadline > now:
                continue
            for member in group.tick(now):
                self._log.info(
                    "share_group.member_fenced",
                    group=group.group_id,
                    member=member,
                    epoch=group.epoch,
                    cause="its session ran out",
                )

    def topics_changed(self) -> None:
        for group in self.groups.values():
            if group.members and group.topics_changed():
                self._log.info(
                    "share_group.epoch_bumped",
                    group=group.group_id,
                    epoch=group.epoch,
                    cause="its topics changed",
                )

    def unload(self, index: int) -> None:
        """The coordinator no longer holds offsets partition ``index``: its share groups go
        (their members rejoin at the new coordinator)."""
        for group_id in [g for g in self.groups if self._partition_of(g) == index]:
            del self.groups[group_id]

    def holds(self, group_id: str) -> bool:
        """Whether ``group_id`` is a share group here: one with members, or (its
        membership not kept when the coordinator moved) one with delivery states stored."""
        if group_id in self.groups:
            return True
        if group_id in self._coordinator.groups:
            return False
        try:
            _, store = self._coordinator._store_for(group_id)
        except ApiError:
            return False
        return any(k.group_id == group_id for k in store.share_states)

    async def delete(self, group_id: str) -> ApiError | None:
        """DeleteGroups of a share group: only an empty one goes, with the delivery
        states stored of it (tombstones, acks=all: a group made again under the id starts
        where share.auto.offset.reset says, not where this one was)."""
        group = self.groups.get(group_id)
        if group is not None and group.members:
            return NonEmptyGroupError(
                f"share group {group_id!r} has {len(group.members)} members: stop them first"
            )
        try:
            index, store = self._coordinator._store_for(group_id)
            keys = [k for k in store.share_states if k.group_id == group_id]
            if keys:
                records: list[tuple[bytes, bytes | None]] = [
                    (encode_share_state_key(k), None) for k in keys
                ]
                result = await self._coordinator._append(index, records)
                if result.base_offset < 0:
                    raise _state_not_stored(result.error_code, result.error_message)
                self._coordinator._applied(index, store, records, result.base_offset)
                if result.error_code:
                    raise _state_not_stored(result.error_code, result.error_message)
        except ApiError as exc:
            return exc
        if self.groups.get(group_id) is group:
            self.groups.pop(group_id, None)
        self._log.info("share_group.deleted", group=group_id, states=len(keys))
        return None

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise UnsupportedVersionError(
                "share groups are off on this broker (group.share.enable=false)"
            )


def _fenced(epoch: int, stored: int) -> ApiError:
    return FencedLeaderEpochError(
        f"leader epoch {epoch} is older than {stored}, of the partition's leader that took "
        "the group's state of it since"
    )


def _state_not_stored(code: int, message: str | None) -> ApiError:
    """The answer to a leader whose state could not be stored here: retriable unless the
    request itself was wrong."""
    if code == NotLeaderOrFollowerError.code:
        return NotCoordinatorError("this broker stopped coordinating the group; find it again")
    error = error_for_code(code, message)
    if error.retriable:
        return CoordinatorNotAvailableError(
            f"the share group's state could not be replicated ({error.name}); retry shortly"
        )
    return error
