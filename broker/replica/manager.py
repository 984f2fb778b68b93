"""The partitions this broker hosts, and the produce, fetch and list-offsets paths.

As Kafka's ReplicaManager. The controller's LeaderAndIsr makes partitions (creating their
logs), StopReplica removes them (deleting the logs when the topic is deleted). Each
request is answered per partition: an error in one never fails the others.

Produce: check the leader, append the batches as they are (header and CRC checked,
offsets and leader epoch patched in place: O(batches), never O(records)), then wake the
fetches parked on that partition. Fetch: whole batches below the high watermark, as file
ranges the server ``sendfile``s. A fetch that finds fewer than ``min_bytes`` parks on a
future that an append to any of its partitions completes (or ``max_wait_ms`` ends);
nothing polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog

from broker.log import Log, LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica.partition import Partition
from protocol.apis import (
    LATEST_TIMESTAMP,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
    LeaderAndIsrPartitionState,
    ListOffsetsPartitionResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
    PartitionError,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResponse,
    StopReplicaPartition,
)
from protocol.errors import (
    ApiError,
    InvalidRecordError,
    InvalidRequiredAcksError,
    NotLeaderOrFollowerError,
    StaleControllerEpochError,
    UnknownTopicOrPartitionError,
)

__all__ = ["ReplicaManager"]

ConfigLoader = Callable[[str], Awaitable[LogConfig]]
"""The log config of a topic: broker defaults with the topic's overrides."""


class ReplicaManager:
    def __init__(
        self,
        broker_id: int,
        logs: LogManager,
        metadata: MetadataCache,
        load_config: ConfigLoader,
    ) -> None:
        self.broker_id = broker_id
        self.logs = logs
        self.metadata = metadata
        self._load_config = load_config
        self.partitions: dict[TopicPartition, Partition] = {}
        self._fetch_waiters: dict[TopicPartition, set[asyncio.Future[None]]] = {}
        self._flushing: set[Log] = set()
        self._log = structlog.get_logger("headwater.replica").bind(broker_id=broker_id)

    # --- from the controller ------------------------------------------------------------

    async def become_leader_or_follower(
        self, states: list[LeaderAndIsrPartitionState]
    ) -> list[PartitionError]:
        """Apply LeaderAndIsr: host each partition we are a replica of, in its new role."""
        errors: list[PartitionError] = []
        mine = [s for s in states if self.broker_id in s.replicas]
        for state in mine:
            tp = TopicPartition(state.topic_name, state.partition_index)
            partition = self.partitions.get(tp)
            if partition is not None and state.leader_epoch < partition.leader_epoch:
                errors.append(_error(state.topic_name, state.partition_index, StaleEpoch))
                continue
            if partition is None:
                config = await self._load_config(tp.topic)
                log = await asyncio.to_thread(
                    self.logs.get_or_create_log, tp.topic, tp.partition, config
                )
                log.config = config
                # the awaits above may have raced another LeaderAndIsr for this partition
                partition = self.partitions.setdefault(
                    tp,
                    Partition(
                        topic=tp.topic, index=tp.partition, log=log, local_broker_id=self.broker_id
                    ),
                )
                if state.leader_epoch < partition.leader_epoch:
                    errors.append(_error(state.topic_name, state.partition_index, StaleEpoch))
                    continue
            was_leader = partition.is_leader
            partition.leader_id = state.leader
            partition.leader_epoch = state.leader_epoch
            partition.isr = list(state.isr)
            partition.replicas = list(state.replicas)
            partition.zk_version = state.partition_epoch
            partition.controller_epoch = state.controller_epoch
            if was_leader != partition.is_leader:
                self._log.info(
                    "partition.role",
                    topic=tp.topic,
                    partition=tp.partition,
                    leader=state.leader,
                    leader_epoch=state.leader_epoch,
                    role="leader" if partition.is_leader else "follower",
                )
            errors.append(PartitionError(topic_name=tp.topic, partition_index=tp.partition))
            self._wake(tp)  # parked fetches re-check: they may have to answer NOT_LEADER
        return errors

    async def stop_replicas(
        self, partitions: list[StopReplicaPartition], *, delete: bool
    ) -> list[PartitionError]:
        """Stop hosting ``partitions``; with ``delete``, remove their data from disk."""
        for p in partitions:
            tp = TopicPartition(p.topic_name, p.partition_index)
            self.partitions.pop(tp, None)
            self._wake(tp)
        if delete:
            tps = [TopicPartition(p.topic_name, p.partition_index) for p in partitions]
            await asyncio.to_thread(self._delete_logs, tps)
        return [
            PartitionError(topic_name=p.topic_name, partition_index=p.partition_index)
            for p in partitions
        ]

    def _delete_logs(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.logs.delete_log(tp.topic, tp.partition)

    # --- produce ------------------------------------------------------------------------

    def produce(self, request: ProduceRequest) -> ProduceResponse:
        topics = []
        for topic in request.topics:
            results = []
            for p in topic.partitions:
                try:
                    if request.acks not in (0, 1, -1):
                        raise InvalidRequiredAcksError(
                            f"acks={request.acks} is not one of 0, 1, -1 (all)"
                        )
                    results.append(self._append(topic.name, p.index, p.records))
                except ApiError as exc:
                    results.append(
                        ProducePartitionResponse(
                            index=p.index, error_code=exc.code, error_message=exc.message
                        )
                    )
            topics.append(ProduceTopicResponse(name=topic.name, partitions=results))
        return ProduceResponse(topics=topics)

    def _append(self, topic: str, index: int, records: object) -> ProducePartitionResponse:
        partition = self._leader_partition(topic, index)
        if not isinstance(records, bytes | bytearray | memoryview) or len(records) == 0:
            raise InvalidRecordError(f"a produce to {topic}-{index} carried no record batches")
        info = partition.log.append(records, leader_epoch=partition.leader_epoch)
        tp = TopicPartition(topic, index)
        self._wake(tp)
        if partition.log.flush_due():
            self._flush_soon(partition.log)
        return ProducePartitionResponse(
            index=index,
            base_offset=info.first_offset,
            log_start_offset=partition.log.log_start_offset,
        )

    def _flush_soon(self, log: Log) -> None:
        """fsync in a worker thread, one at a time per log (flush.messages / flush.ms)."""
        if log in self._flushing:
            return
        self._flushing.add(log)

        async def flush() -> None:
            try:
                await log.flush_async()
            finally:
                self._flushing.discard(log)

        asyncio.get_running_loop().create_task(flush())

    def flush_due_logs(self) -> None:
        """Start the flushes ``flush.ms`` calls for (a periodic task calls this)."""
        for partition in list(self.partitions.values()):
            if partition.log.flush_due():
                self._flush_soon(partition.log)

    # --- fetch --------------------------------------------------------------------------

    async def fetch(self, request: FetchRequest) -> FetchResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(request.max_wait_ms, 0) / 1000
        while True:
            response, size, failed = self._read(request)
            remaining = deadline - loop.time()
            if size >= request.min_bytes or failed or remaining <= 0:
                return response
            tps = [
                TopicPartition(t.topic, p.partition) for t in request.topics for p in t.partitions
            ]
            if not tps:
                return response
            waiter = loop.create_future()
            for tp in tps:
                self._fetch_waiters.setdefault(tp, set()).add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return self._read(request)[0]
            finally:
                for tp in tps:
                    waiters = self._fetch_waiters.get(tp)
                    if waiters is not None:
                        waiters.discard(waiter)
                        if not waiters:
                            del self._fetch_waiters[tp]

    def _read(self, request: FetchRequest) -> tuple[FetchResponse, int, bool]:
        """One pass over the partitions: (response, bytes found, whether any failed)."""
        budget = request.max_bytes
        total = 0
        failed = False
        topics = []
        for topic in request.topics:
            results = []
            for p in topic.partitions:
                try:
                    partition = self._leader_partition(topic.topic, p.partition)
                    data = partition.log.read(
                        p.fetch_offset,
                        min(p.partition_max_bytes, budget),
                        max_offset=partition.high_watermark,
                        min_one_batch=total == 0,  # KIP-74: the first batch always fits
                    )
                except ApiError as exc:
                    failed = True
                    results.append(
                        FetchPartitionData(partition_index=p.partition, error_code=exc.code)
                    )
                    continue
                size = data.size if data is not None else 0
                total += size
                budget = max(budget - size, 0)
                results.append(
                    FetchPartitionData(
                        partition_index=p.partition,
                        high_watermark=partition.high_watermark,
                        last_stable_offset=partition.high_watermark,
                        log_start_offset=partition.log.log_start_offset,
                        records=data.region() if data is not None else None,
                    )
                )
            topics.append(FetchTopicResponse(topic=topic.topic, partitions=results))
        return FetchResponse(topics=topics), total, failed

    def _wake(self, tp: TopicPartition) -> None:
        for waiter in self._fetch_waiters.get(tp, ()):
            if not waiter.done():
                waiter.set_result(None)

    # --- list offsets -------------------------------------------------------------------

    def list_offsets(self, request: ListOffsetsRequest) -> ListOffsetsResponse:
        topics = []
        for topic in request.topics:
            results = []
            for p in topic.partitions:
                try:
                    partition = self._leader_partition(topic.name, p.partition_index)
                    if p.timestamp == LATEST_TIMESTAMP:
                        found: tuple[int, int] | None = (-1, partition.high_watermark)
                    else:
                        found = partition.log.list_offset(p.timestamp)
                except ApiError as exc:
                    results.append(
                        ListOffsetsPartitionResponse(
                            partition_index=p.partition_index, error_code=exc.code
                        )
                    )
                    continue
                timestamp, offset = found if found is not None else (-1, -1)
                results.append(
                    ListOffsetsPartitionResponse(
                        partition_index=p.partition_index,
                        timestamp=timestamp,
                        offset=offset,
                        leader_epoch=partition.leader_epoch,
                    )
                )
            topics.append(ListOffsetsTopicResponse(name=topic.name, partitions=results))
        return ListOffsetsResponse(topics=topics)

    # --- helpers ------------------------------------------------------------------------

    def _leader_partition(self, topic: str, index: int) -> Partition:
        partition = self.partitions.get(TopicPartition(topic, index))
        if partition is not None and partition.is_leader:
            return partition
        if partition is not None or self.metadata.partition(topic, index) is not None:
            leader = self.metadata.partition(topic, index)
            where = f"broker {leader.leader}" if leader is not None else "another broker"
            raise NotLeaderOrFollowerError(
                f"this broker ({self.broker_id}) does not lead {topic}-{index}; {where} does: "
                "refresh metadata and retry"
            )
        if topic in self.metadata.topics:
            count = len(self.metadata.topics[topic])
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has no partition {index} (it has {count})"
            )
        raise UnknownTopicOrPartitionError(
            f"topic {topic!r} does not exist; create it with `headwater topics create {topic}`"
        )

    def hosted(self) -> Iterable[Partition]:
        return self.partitions.values()


StaleEpoch = StaleControllerEpochError


def _error(topic: str, index: int, error: type[ApiError]) -> PartitionError:
    return PartitionError(topic_name=topic, partition_index=index, error_code=error.code)
