"""The group coordinator's offsets half: FindCoordinator, OffsetCommit, OffsetFetch.

A group lives in partition ``abs(java_hash(group)) % offsets.topic.num.partitions`` of
``__consumer_offsets`` (created, replicated, on the first FindCoordinator); the leader of
that partition is the group's coordinator. When this broker becomes leader of an offsets
partition it loads it (reads the log, applies every record in order) before answering
for its groups (COORDINATOR_LOAD_IN_PROGRESS meanwhile, retriable); when it stops leading
one, it forgets it (NOT_COORDINATOR, retriable: the client finds the new one). So a
coordinator failover loses nothing that was committed: commits are appended with
acks=all and answered only once every in-sync replica has them.

Group membership (JoinGroup, SyncGroup, Heartbeat, generations) is the next part; until
then a commit must come from outside membership (generation -1, no member id), which is
how Kafka's consumers commit with a manual assignment.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from broker.admin import TopicAdmin
from broker.config import BrokerConfig
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
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchResponsePartition,
    OffsetFetchResponseTopic,
)
from protocol.errors import (
    ApiError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    InvalidCommitOffsetSizeError,
    InvalidGroupIdError,
    InvalidRequestError,
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
        self._log = structlog.get_logger("headwater.coordinator").bind(broker_id=broker_id)
        replicas.on_role_change(self._on_role_change)

    # --- which offsets partitions are ours ----------------------------------------------

    def _on_role_change(self, tp: TopicPartition, partition: Partition | None) -> None:
        if tp.topic != OFFSETS_TOPIC:
            return
        index = tp.partition
        loading = self._loading.pop(index, None)
        if loading is not None:
            loading.cancel()
        self.stores.pop(index, None)
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
        if request.generation_id != -1 or request.member_id:
            # membership is not served yet: no member can be known, no generation current
            return UnknownMemberIdError(
                f"group {request.group_id!r} has no member {request.member_id!r}; commit "
                "with generation -1 (manual assignment) until group membership is served"
            )
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
