"""The group coordinator's offsets half: FindCoordinator, OffsetCommit, OffsetFetch.

A group lives in partition ``abs(java_hash(group)) % offsets.topic.num.partitions`` of
``__consumer_offsets`` (created, replicated, on the first FindCoordinator); the leader of
that partition is the group's coordinator. When this broker becomes leader of an offsets
partition it loads it (reads the log, applies every record in order) before answering
for its groups (COORDINATOR_LOAD_IN_PROGRESS meanwhile, retriable); when it stops leading
one, it forgets it (NOT_COORDINATOR, retriable: the client finds the new one). So a
coordinator failover loses nothing that was committed: commits are appended with
acks=all and answered only once every in-sync replica has them.

Membership (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) runs :class:`Group`'s state
machine; a commit must come from a member of the current generation, or from outside
membership (generation -1, no member id: Kafka's manual assignment) while the group has
no members. Membership is kept in memory only: after a coordinator failover the members
find the new coordinator, are told UNKNOWN_MEMBER_ID, and join again (their committed
offsets, which are in the log, are all there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import structlog

from broker.admin import TopicAdmin
from broker.config import BrokerConfig
from broker.coordinator.group import Group
from broker.coordinator.offsets import (
    OFFSETS_TOPIC,
    BadRecordError,
    OffsetAndMetadata,
    OffsetStore,
    partition_for,
)
from broker.log.manager import TopicPartition
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from broker.replica.partition import Partition
from protocol.apis import (
    CoordinatorType,
    CreatableTopic,
    CreatableTopicConfig,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    JoinGroupResponseMember,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchResponsePartition,
    OffsetFetchResponseTopic,
    SyncGroupRequest,
    SyncGroupResponse,
)
from protocol.errors import (
    ApiError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    InvalidCommitOffsetSizeError,
    InvalidGroupIdError,
    InvalidRequestError,
    InvalidSessionTimeoutError,
    MessageTooLargeError,
    NotCoordinatorError,
    NotLeaderOrFollowerError,
    OffsetMetadataTooLargeError,
    RecordListTooLargeError,
    UnknownMemberIdError,
    UnknownServerError,
    error_for_code,
)
from protocol.records import decode_batches, encode_batch

__all__ = ["GroupCoordinator"]

_COMMIT_TIMEOUT_MS = 5_000  # Kafka's offsets.commit.timeout.ms
_MAX_METADATA_BYTES = 4_096  # Kafka's offset.metadata.max.bytes
_LOAD_READ_BYTES = 1 << 20
_TICK_S = 0.1
T = TypeVar("T")


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class GroupCoordinator:
    def __init__(
        self,
        broker_id: int,
        config: BrokerConfig,
        metadata: MetadataCache,
        replicas: ReplicaManager,
        admin: TopicAdmin,
    ) -> None:
        self.broker_id = broker_id
        self._config = config
        self._metadata = metadata
        self._replicas = replicas
        self._admin = admin
        self.num_partitions = int(config["offsets.topic.num.partitions"])
        self.stores: dict[int, OffsetStore] = {}
        self._loading: dict[int, asyncio.Task[None]] = {}
        self.groups: dict[str, Group] = {}
        self._min_session_ms = int(config["group.min.session.timeout.ms"])
        self._max_session_ms = int(config["group.max.session.timeout.ms"])
        self._initial_delay_ms = int(config["group.initial.rebalance.delay.ms"])
        self._ticker: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("headwater.coordinator").bind(broker_id=broker_id)
        replicas.on_role_change(self._on_role_change)

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    async def _tick(self) -> None:
        """Session timeouts and rebalance deadlines: a sweep over the groups we hold."""
        while True:
            await asyncio.sleep(_TICK_S)
            for group in list(self.groups.values()):
                try:
                    group.tick()
                except Exception:
                    self._log.exception("coordinator.tick_failed", group=group.group_id)

    # --- which offsets partitions are ours ----------------------------------------------

    def _on_role_change(self, tp: TopicPartition, partition: Partition | None) -> None:
        if tp.topic != OFFSETS_TOPIC:
            return
        index = tp.partition
        loading = self._loading.pop(index, None)
        if loading is not None:
            loading.cancel()
        self.stores.pop(index, None)
        for name in [g for g in self.groups if partition_for(g, self.num_partitions) == index]:
            group = self.groups.pop(name)
            for member in list(group.members):  # waiting joins and syncs end: ask elsewhere
                group.leave(member)
        if partition is not None and partition.is_leader:
            task = asyncio.get_running_loop().create_task(self._load(index, partition))
            self._loading[index] = task

    async def _load(self, index: int, partition: Partition) -> None:
        """Read the partition from its start and apply every record, in order."""
        epoch = partition.leader_epoch
        store = OffsetStore()
        log = partition.log
        offset = log.log_start_offset
        end = log.log_end_offset
        records = 0
        started = time.monotonic()
        while offset < end:
            data = log.read(offset, _LOAD_READ_BYTES, max_offset=end)
            if data is None:
                break
            for batch in decode_batches(data.read()):
                for record in batch:
                    if record.offset >= offset:
                        try:
                            store.apply(record.key, record.value)
                        except BadRecordError as exc:
                            self._log.warning(
                                "coordinator.bad_record", partition=index, error=str(exc)
                            )
                        records += 1
                offset = batch.next_offset
            await asyncio.sleep(0)  # a large partition loads without holding the loop
        if not partition.is_leader or partition.leader_epoch != epoch:
            return  # led no more (or again, later: that load wins)
        self.stores[index] = store
        self._loading.pop(index, None)
        self._log.info(
            "coordinator.loaded",
            partition=index,
            groups=len(store.groups),
            records=records,
            seconds=round(time.monotonic() - started, 3),
        )

    def _store_for(self, group: str) -> tuple[int, OffsetStore]:
        if not group:
            raise InvalidGroupIdError("a group id must not be empty")
        index = partition_for(group, self.num_partitions)
        store = self.stores.get(index)
        if store is not None:
            return index, store
        if index in self._loading:
            raise CoordinatorLoadInProgressError(
                f"group {group!r}: its offsets are being loaded; retry shortly"
            )
        raise NotCoordinatorError(
            f"broker {self.broker_id} is not the coordinator of group {group!r}; find it again"
        )

    # --- FindCoordinator ----------------------------------------------------------------

    async def find_coordinator(self, request: FindCoordinatorRequest) -> FindCoordinatorResponse:
        if request.key_type != CoordinatorType.GROUP:
            raise InvalidRequestError("only group coordinators exist here (key_type 0)")
        if not request.key:
            raise InvalidGroupIdError("a group id must not be empty")
        partitions = self._metadata.topics.get(OFFSETS_TOPIC)
        if partitions is None:
            await self._create_offsets_topic()
            raise CoordinatorNotAvailableError(f"{OFFSETS_TOPIC} is being created; retry shortly")
        state = partitions.get(partition_for(request.key, self.num_partitions))
        leader = self._metadata.brokers.get(state.leader) if state is not None else None
        if leader is None:
            raise CoordinatorNotAvailableError(
                f"the coordinator of group {request.key!r} is not available; retry shortly"
            )
        return FindCoordinatorResponse(node_id=leader.id, host=leader.host, port=leader.port)

    async def _create_offsets_topic(self) -> None:
        factor = min(
            int(self._config["offsets.topic.replication.factor"]), len(self._metadata.brokers)
        )
        topic = CreatableTopic(
            name=OFFSETS_TOPIC,
            num_partitions=self.num_partitions,
            replication_factor=max(factor, 1),
            configs=[CreatableTopicConfig(name="segment.bytes", value=str(100 * 1024 * 1024))],
        )
        await self._admin.create_internal(topic)

    # --- membership ---------------------------------------------------------------------

    def _group(self, group_id: str) -> Group:
        self._store_for(group_id)  # only the coordinator, once loaded, holds groups
        group = self.groups.get(group_id)
        if group is None:
            group = Group(group_id, _now_ms, self._initial_delay_ms)
            self.groups[group_id] = group
        return group

    async def join_group(self, request: JoinGroupRequest) -> JoinGroupResponse:
        if not self._min_session_ms <= request.session_timeout_ms <= self._max_session_ms:
            raise InvalidSessionTimeoutError(
                f"session_timeout_ms={request.session_timeout_ms} is outside "
                f"[{self._min_session_ms}, {self._max_session_ms}] "
                "(group.min/max.session.timeout.ms)"
            )
        group = self._group(request.group_id)
        rebalance_ms = request.rebalance_timeout_ms
        joined = group.join(
            member_id=request.member_id,
            group_instance_id=request.group_instance_id,
            client_id="",
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=rebalance_ms if rebalance_ms > 0 else request.session_timeout_ms,
            protocol_type=request.protocol_type,
            protocols=[(p.name, bytes(p.metadata)) for p in request.protocols],
        )
        result = await _member_wait(joined, request.group_id)
        return JoinGroupResponse(
            generation_id=result.generation_id,
            protocol_type=result.protocol_type,
            protocol_name=result.protocol_name,
            leader=result.leader,
            member_id=result.member_id,
            members=[
                JoinGroupResponseMember(member_id=m, group_instance_id=i, metadata=meta)
                for m, i, meta in result.members
            ],
        )

    async def sync_group(self, request: SyncGroupRequest) -> SyncGroupResponse:
        group = self._group(request.group_id)
        assignments = {a.member_id: bytes(a.assignment) for a in request.assignments}
        synced = group.sync(request.member_id, request.generation_id, assignments)
        return SyncGroupResponse(assignment=await _member_wait(synced, request.group_id))

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        self._group(request.group_id).heartbeat(request.member_id, request.generation_id)
        return HeartbeatResponse()

    async def leave_group(self, request: LeaveGroupRequest) -> LeaveGroupResponse:
        self._group(request.group_id).leave(request.member_id)
        return LeaveGroupResponse()

    # --- OffsetCommit -------------------------------------------------------------------

    async def offset_commit(self, request: OffsetCommitRequest) -> OffsetCommitResponse:
        try:
            error = self._commit_refusal(request)
            if error is None:
                error = await self._commit(request)
        except ApiError as exc:
            error = exc
        code = 0 if error is None else error.code
        return OffsetCommitResponse(
            topics=[
                OffsetCommitResponseTopic(
                    name=t.name,
                    partitions=[
                        OffsetCommitResponsePartition(
                            partition_index=p.partition_index,
                            error_code=code if code else _partition_error(p.committed_metadata),
                        )
                        for p in t.partitions
                    ],
                )
                for t in request.topics
            ]
        )

    def _commit_refusal(self, request: OffsetCommitRequest) -> ApiError | None:
        """A zombie's commit (unknown member, older generation) is refused."""
        try:
            self._group(request.group_id).check_commit(request.member_id, request.generation_id)
        except ApiError as exc:
            return exc
        return None

    async def _commit(self, request: OffsetCommitRequest) -> ApiError | None:
        index, store = self._store_for(request.group_id)
        now = int(time.time() * 1000)
        offsets = [
            (
                t.name,
                p.partition_index,
                OffsetAndMetadata(
                    p.committed_offset, p.committed_leader_epoch, p.committed_metadata, now
                ),
            )
            for t in request.topics
            for p in t.partitions
            if _partition_error(p.committed_metadata) == 0
        ]
        if not offsets:
            return None
        records = store.commit(request.group_id, offsets)
        batch = encode_batch([(k, v, None, now) for k, v in records])
        result = await self._replicas.append_records(
            OFFSETS_TOPIC, index, batch, timeout_ms=_COMMIT_TIMEOUT_MS
        )
        if result.error_code:
            return _commit_error(result.error_code, result.error_message)
        if self.stores.get(index) is store:  # re-checked after the await: still ours
            for key, value in records:
                store.apply(key, value)
        return None

    # --- OffsetFetch --------------------------------------------------------------------

    async def offset_fetch(self, request: OffsetFetchRequest) -> OffsetFetchResponse:
        _, store = self._store_for(request.group_id)
        committed = store.get(request.group_id)
        wanted: dict[str, list[int]] = {}
        if request.topics is None:
            for topic, partition in sorted(committed):
                wanted.setdefault(topic, []).append(partition)
        else:
            wanted = {t.name: list(t.partition_indexes) for t in request.topics}
        topics = []
        for topic, indexes in wanted.items():
            rows = []
            for index in indexes:
                value = committed.get((topic, index))
                rows.append(
                    OffsetFetchResponsePartition(partition_index=index)
                    if value is None
                    else OffsetFetchResponsePartition(
                        partition_index=index,
                        committed_offset=value.offset,
                        committed_leader_epoch=value.leader_epoch,
                        metadata=value.metadata,
                    )
                )
            topics.append(OffsetFetchResponseTopic(name=topic, partitions=rows))
        return OffsetFetchResponse(topics=topics)


async def _member_wait(waiting: Awaitable[T], group_id: str) -> T:
    """A join or sync waits for the others; cancelled means the member was dropped."""
    try:
        return await waiting
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our own request was cancelled (shutdown): not the member's fate
        raise UnknownMemberIdError(
            f"group {group_id!r}: this member was removed while it waited; join again"
        ) from None


def _partition_error(metadata: str | None) -> int:
    if metadata is not None and len(metadata.encode()) > _MAX_METADATA_BYTES:
        return OffsetMetadataTooLargeError.code
    return 0


def _commit_error(code: int, message: str | None) -> ApiError:
    """The coordinator's answer for a failed append to its own topic (Kafka's mapping)."""
    if code == NotLeaderOrFollowerError.code:
        return NotCoordinatorError("this broker stopped coordinating the group; find it again")
    if code in (MessageTooLargeError.code, RecordListTooLargeError.code):
        return InvalidCommitOffsetSizeError("the commit is too large for the offsets topic")
    error = error_for_code(code, message)
    if error.retriable:
        return CoordinatorNotAvailableError(
            f"the commit could not be replicated ({error.name}); retry shortly"
        )
    return UnknownServerError(f"the commit failed: {error.name}")
