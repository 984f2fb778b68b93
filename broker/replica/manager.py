"""The partitions this broker hosts, and the produce, fetch and list-offsets paths.

As Kafka's ReplicaManager. The controller's LeaderAndIsr makes partitions (creating their
logs) leaders or followers; followers are handed to one :class:`ReplicaFetcher` per
leader broker; StopReplica removes them (deleting the logs when the topic is deleted).
Each request is answered per partition: an error in one never fails the others.

Replication (DESIGN.md "Replication"): a follower's fetch tells the leader its log end
offset; the high watermark follows the ISR; acks=all is answered when the high watermark
passes the produce (and refused up front with NOT_ENOUGH_REPLICAS when the ISR is smaller
than ``min.insync.replicas``); a follower that lags more than ``replica.lag.time.max.ms``
is dropped from the ISR and one that catches up is added back, both through
:class:`IsrUpdater`'s compare-and-set writes.

Produce: check the leader, append the batches as they are (header and CRC checked,
offsets and leader epoch patched in place: O(batches), never O(records)), then wake the
fetches parked on that partition. Fetch: whole batches below the high watermark, as file
ranges the server ``sendfile``s. A fetch that finds fewer than ``min_bytes`` parks as a
:class:`~broker.deferred.Deferred`; an append to any of its partitions (or a high-watermark
move or role change) re-reads it right there and completes it, so with acks=1 the waiting
consumer's answer is written inside the produce that satisfied it; ``max_wait_ms`` is a
timer that only ends the wait. Nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import structlog

from broker.authorizer import Authorizer, topic_not_authorized
from broker.deferred import Deferred
from broker.log import Log, LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import UNKNOWN_ID_PREFIX, MetadataCache
from broker.metrics import Counter, Sample, gauge
from broker.network import PeerLogin, PeerTls
from broker.replica.fetch_session import FetchContext, FetchSessionCache, SessionPartition
from broker.replica.fetcher import ReplicaFetcher
from broker.replica.isr import IsrUpdater
from broker.replica.moves import LogDirMoves
from broker.replica.partition import HighWatermarkWaiter, Partition
from broker.replica.throttle import UNLIMITED, ReplicationQuota
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    EARLIEST_LOCAL_TIMESTAMP,
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    READ_COMMITTED,
    AbortedTransaction,
    AlterReplicaLogDirPartitionResult,
    AlterReplicaLogDirsRequest,
    AlterReplicaLogDirsResponse,
    AlterReplicaLogDirTopicResult,
    DeleteRecordsPartitionResult,
    DeleteRecordsRequest,
    DeleteRecordsResponse,
    DeleteRecordsTopicResult,
    DescribeLogDirsPartition,
    DescribeLogDirsRequest,
    DescribeLogDirsResponse,
    DescribeLogDirsResult,
    DescribeLogDirsTopic,
    DescribeProducersPartition,
    DescribeProducersRequest,
    DescribeProducersResponse,
    DescribeProducersTopicResponse,
    DivergingEpoch,
    EpochEndOffset,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
    LeaderAndIsrLiveLeader,
    LeaderAndIsrPartitionState,
    ListOffsetsPartitionResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderTopicResult,
    PartitionError,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    ProducerStateData,
    ProduceTopic,
    ProduceTopicResponse,
    StopReplicaPartition,
    UpdateMetadataBroker,
    WritableTxnMarker,
    WritableTxnMarkerPartitionResult,
    WritableTxnMarkerResult,
    WritableTxnMarkerTopicResult,
    WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
)
from protocol.errors import (
    ApiError,
    FencedLeaderEpochError,
    InconsistentTopicIdError,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidRequiredAcksError,
    InvalidTxnStateError,
    KafkaStorageError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    OffsetNotAvailableError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceNumberError,
    PolicyViolationError,
    RequestTimedOutError,
    StaleControllerEpochError,
    TransactionalIdAuthorizationFailedError,
    UnknownLeaderEpochError,
    UnknownProducerIdError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from protocol.records.batch import (
    ATTRIBUTES_POS,
    CONTROL_BIT,
    HEADER_SIZE,
    TRANSACTIONAL_BIT,
    read_header,
)
from protocol.records.transform import rewrite_for_append, topic_codec
from protocol.topic_id import ZERO_TOPIC_ID, format_topic_id

__all__ = ["ReplicaManager"]

Buffer = bytes | bytearray | memoryview
ConfigLoader = Callable[[str], Awaitable[LogConfig]]
"""The log config of a topic: broker defaults with the topic's overrides."""
TxnVerify = Callable[[str, int, int, list[tuple[str, int]]], Awaitable[dict[Any, ApiError]]]
"""(transactional id, producer id, epoch, partitions) -> the partitions to refuse, each
with its error (:class:`broker.coordinator.verification.TxnVerifier`)."""

_ROLES_PER_LINE = 1000  # partitions per "partition.roles" log line
_PRODUCER_REFUSALS = (
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
    InvalidProducerEpochError,
    InvalidTxnStateError,
)
"""A leader's refusals from its producers' state alone, each fatal or abortable for the
producer: given only while the leader can tell it still leads (see ``state_known``)."""

WOKEN_FIRST = 8
"""How many parked fetches a produce (or a follower's fetch) answers before its own
answer: the followers and a few consumers; past that, a producer would wait on every
consumer group tailing the partition (~30 us each), so the rest go in the next loop pass,
after it (Kafka's order, where network threads write both at once)."""


_READ_ALL_BELOW = 8
"""A parked fetch woken reads all its partitions at once, answering if they have enough,
when fewer than this many did not wake it; past that, the woken ones are looked at first
(see :meth:`ReplicaManager._enough`)."""


_MARKER_TIMEOUT_MS = 30_000  # Kafka's: request.timeout.ms, for its coordinator's markers


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class _DelayedFetch:
    """A fetch parked until it can be answered (Kafka's DelayedFetch).

    It keeps the bytes each partition had at its last look (``found``, ``total``), so a
    wake looks again only at the partitions that woke it (``woke``, or its session's
    marks) until they add up to ``min_bytes``: read in full on each wake, a fetch of P
    partitions waiting for ``fetch.min.bytes`` while W produces trickle in read P x W."""

    __slots__ = (
        "answer_now",
        "by_tp",
        "context",
        "deferred",
        "follower",
        "found",
        "request",
        "timer",
        "total",
        "tps",
        "woke",
    )

    def __init__(
        self,
        request: FetchRequest,
        context: FetchContext,
        follower: bool,
        tps: list[TopicPartition],
    ) -> None:
        self.request = request
        self.context = context
        self.follower = follower
        self.tps = tps
        self.deferred: Deferred[FetchResponse] = Deferred()
        self.timer: asyncio.TimerHandle | None = None  # None once unparked
        self.found: dict[TopicPartition, int] = context.sizes()
        self.total = sum(self.found.values())
        self.woke: set[TopicPartition] = set()  # woken since its last look (no session)
        self.by_tp: dict[TopicPartition, SessionPartition] | None = None
        self.answer_now = False
        """A follower's: a log start moved (DeleteRecords), which it must hear of though
        no record came (Kafka's followers wait for their fetch to expire)."""


@dataclass(slots=True, eq=False)
class _Wait:
    """One partition of a delayed produce: its result, and its waiter until settled."""

    result: ProducePartitionResponse | WritableTxnMarkerPartitionResult
    partition: Partition
    waiter: HighWatermarkWaiter | None = None


class _Turn(NamedTuple):
    """A held batch's place in its (topic, partition, producer id) queue."""

    key: tuple[str, int, int]
    ours: asyncio.Future[None]
    before: asyncio.Future[None] | None


def _transactional(records: object) -> bool:
    """Whether a produce's (first) batch is transactional: the attributes' low byte, no
    header parse (a record set whose later batch differs is refused by the log)."""
    return (
        isinstance(records, bytes | bytearray | memoryview)
        and len(records) > ATTRIBUTES_POS + 1
        # a control batch is refused by the log, with its own reason
        and records[ATTRIBUTES_POS + 1] & (TRANSACTIONAL_BIT | CONTROL_BIT) == TRANSACTIONAL_BIT
    )


def _only(request: ProduceRequest, keep: Callable[[tuple[str, int]], bool]) -> ProduceRequest:
    """The request with only the partitions ``keep`` accepts."""
    topics = []
    for topic in request.topics:
        partitions = [p for p in topic.partitions if keep((topic.name, p.index))]
        if partitions:
            topics.append(ProduceTopic(name=topic.name, partitions=partitions))
    return ProduceRequest(
        transactional_id=request.transactional_id,
        acks=request.acks,
        timeout_ms=request.timeout_ms,
        topics=topics,
    )


@dataclass(frozen=True, slots=True)
class _Guard:
    """What a partition knew of a producer when its batch went to be checked (Kafka's
    VerificationGuard): the batch goes in only if no marker of the producer came since
    (the transaction it was checked against is then over) and the log is the same one."""

    producer_id: int
    epoch: int
    log: Log
    truncations: int
    markers: int
    check: bool
    """Whether the batch would begin a transaction here (asked of the coordinator), or
    only waits behind one of the producer's that is held."""

    @classmethod
    def of(cls, log: Log, producer_id: int, epoch: int, check: bool) -> _Guard:
        """What ``log`` knows of the producer now."""
        return cls(
            producer_id,
            epoch,
            log,
            log.truncations,
            log.producers.markers_seen(producer_id),
            check,
        )


class _DelayedProduce:
    """An acks=all produce waiting for its partitions' high watermarks (Kafka's
    DelayedProduce): ``deferred`` gets ``answer`` once every partition's outcome is in its
    result, in the call that moved the last high watermark, or when ``timeout_ms`` ends
    (REQUEST_TIMED_OUT for those still waiting: an ambiguous outcome, never success)."""

    __slots__ = ("_answer", "_pending", "_purgatory", "_timer", "_waits", "deferred")

    def __init__(
        self,
        answer: object,
        waits: list[tuple[Any, Partition, int]],
        timeout_ms: int,
        purgatory: set[_DelayedProduce],
    ) -> None:
        """``purgatory``: the waiting ones (a gauge), this one in it until answered."""
        self._answer = answer
        self._purgatory = purgatory
        self.deferred: Deferred[Any] = Deferred(on_cancel=self._forget)
        self._timer: asyncio.TimerHandle | None = None
        self._pending = len(waits)
        self._waits: list[_Wait] = []
        for result, partition, end in waits:
            wait = _Wait(result, partition)
            self._waits.append(wait)
            # None if already reached: _settled has run by then
            wait.waiter = partition.wait_for_high_watermark(end, partial(self._settled, wait))
        if self._pending:
            purgatory.add(self)
            self._timer = asyncio.get_running_loop().call_later(
                max(timeout_ms, 0) / 1000, self._expire, timeout_ms
            )

    def _settled(self, wait: _Wait, error: ApiError | None) -> None:
        # runs inside whatever moved the high watermark (a follower's fetch): never raises
        wait.waiter = None
        if self.deferred.done:
            return
        partition = wait.partition
        min_isr = partition.log.config.min_insync_replicas
        if error is None and len(partition.isr) < min_isr:
            error = NotEnoughReplicasAfterAppendError(
                f"{partition.name}: written, but the ISR {partition.isr} shrank below "
                f"min.insync.replicas={min_isr}"
            )
        if error is not None:
            wait.result.error_code = error.code
            wait.result.error_message = error.message
        self._pending -= 1
        if self._pending == 0:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._purgatory.discard(self)
            self.deferred.resolve(self._answer)

    def _expire(self, timeout_ms: int) -> None:
        self._timer = None  # a handle that fired keeps its callback, self._expire: a cycle
        for wait in self._waits:
            if wait.waiter is None:
                continue
            wait.partition.forget_waiter(wait.waiter)
            wait.waiter = None
            error = RequestTimedOutError(
                f"{wait.partition.name}: the in-sync replicas {wait.partition.isr} did not all "
                f"have the records within {max(timeout_ms, 0)} ms (they may still get them)"
            )
            wait.result.error_code = error.code
            wait.result.error_message = error.message
        self._pending = 0
        self._purgatory.discard(self)
        self.deferred.resolve(self._answer)

    def _forget(self) -> None:
        """Nobody waits for the answer any more (the producer's connection closed)."""
        self._purgatory.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for wait in self._waits:
            if wait.waiter is not None:
                wait.partition.forget_waiter(wait.waiter)
                wait.waiter = None


class ReplicaManager:
    def __init__(
        self,
        broker_id: int,
        logs: LogManager,
        metadata: MetadataCache,
        load_config: ConfigLoader,
        isr: IsrUpdater | None = None,
        *,
        replica_lag_time_max_ms: int = 30_000,
        replica_fetch_wait_max_ms: int = 500,
        replica_fetch_max_bytes: int = 1024 * 1024,
        fetch_session_slots: int = 1000,
        config_known: Callable[[str], bool] = lambda topic: True,
        peer_tls: PeerTls | None = None,
        peer_login: PeerLogin | None = None,
        inter_broker_listener: str = "PLAINTEXT",
        authorizer: Authorizer | None = None,
        leader_quota: ReplicationQuota | None = None,
        follower_quota: ReplicationQuota | None = None,
        move_quota: ReplicationQuota | None = None,
        move_threads: int = 1,
        rack_aware_reads: bool = False,
        state_known: Callable[[], bool] = lambda: True,
    ) -> None:
        self.broker_id = broker_id
        self._acl = authorizer or Authorizer()
        self._state_known = state_known
        self._doubt_logged: dict[tuple[str, int], float] = {}  # (monotonic s)
        """Whether this broker's view of who leads what is current (its ZooKeeper session
        surely alive, no stall's hold under way): a leader cut off from ZooKeeper may have
        been replaced, and its producers' state be behind the new leader's."""
        self.leader_quota = leader_quota or ReplicationQuota(lambda: UNLIMITED)
        """leader.replication.throttled.rate: what it sends of throttled replicas."""
        self.follower_quota = follower_quota or ReplicationQuota(lambda: UNLIMITED)
        """follower.replication.throttled.rate: what its fetchers fetch of them."""
        self.rack_aware_reads = rack_aware_reads
        """``replica.selector.class`` is Kafka's RackAwareReplicaSelector: a consumer in
        another rack than the leader is sent to a replica in its own (KIP-392)."""
        self.logs = logs
        self.metadata = metadata
        self._load_config = load_config
        self._config_known = config_known
        """Whether a topic's config was read (else its logs have the broker's defaults)."""
        self._isr = isr
        self.replica_lag_time_max_ms = replica_lag_time_max_ms
        self._fetch_wait_max_ms = replica_fetch_wait_max_ms
        self._fetch_max_bytes = replica_fetch_max_bytes
        self._peer_tls = peer_tls  # the inter-broker listener is SSL: fetchers use TLS
        self._peer_login = peer_login  # ... and SASL: fetchers log in with it
        self._listener = inter_broker_listener  # a leader is reached on its listener so named
        # idle partitions of a session are looked at (their followers' caught-up times
        # refreshed) four times per replica.lag.time.max.ms; a shorter sweep (it was at
        # most 1 s) made each idle session's fetch look at hundreds of partitions at once
        self.fetch_sessions = FetchSessionCache(
            fetch_session_slots, sweep_ms=max(1, replica_lag_time_max_ms // 4)
        )
        metadata.renamed.append(self._topics_renamed)
        self.partitions: dict[TopicPartition, Partition] = {}
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._fetch_waiters: dict[TopicPartition, dict[_DelayedFetch, None]] = {}
        """Parked fetches by partition (a dict: wakes go in the order they parked)."""
        self.parked_fetches = 0
        self.delayed_produces: set[_DelayedProduce] = set()
        """acks=all produces waiting for their replicas (Kafka's produce purgatory)."""
        self._held_batches: dict[tuple[str, int, int], asyncio.Future[None]] = {}
        """(topic, partition, producer id) -> done when the last produce holding a batch
        of it has appended (or refused) it: the next waits for it (see :meth:`produce`)."""
        self.txn_verify: TxnVerify | None = None
        """KIP-890's check of a transaction's first batch in a partition (set by the app
        when ``transaction.partition.verification.enable``)."""
        self._woken: dict[_DelayedFetch, None] = {}
        """Parked fetches to try again at the loop's next pass (see :meth:`_wake`)."""
        self._creating: dict[TopicPartition, asyncio.Future[Partition]] = {}
        self._deletes: dict[TopicPartition, dict[asyncio.Future[int], int]] = {}
        """DeleteRecords waiting for a partition's low watermark to reach an offset."""
        self._state_change = asyncio.Lock()
        """Held while a LeaderAndIsr is applied and while a StopReplica takes partitions
        away (Kafka's replicaStateChangeLock). A LeaderAndIsr opens new logs in worker
        threads; a StopReplica of one of them applied during that wait found no partition
        to stop, and the LeaderAndIsr then installed it, its log deleted or not hosted."""
        self._role_listeners: list[Callable[[TopicPartition, Partition | None], None]] = []
        self._readable_listeners: list[Callable[[TopicPartition], None]] = []
        self._marker_listeners: list[Callable[[str, int, int, bool], None]] = []
        self._flushing: set[Log] = set()
        self._isr_tasks: set[asyncio.Task[None]] = set()
        self.isr_shrinks = Counter("headwater_isr_shrinks_total", "ISR shrinks written.")
        self.isr_expands = Counter("headwater_isr_expands_total", "ISR expansions written.")
        self.bytes_in = Counter("headwater_bytes_in_total", "Record bytes appended as leader.")
        self.bytes_out = Counter(
            "headwater_bytes_out_total", "Record bytes sent to consumers and followers."
        )
        self.produce_requests = Counter("headwater_produce_requests_total", "Produce requests.")
        self.fetch_requests = Counter("headwater_fetch_requests_total", "Fetch requests.")
        self._log = structlog.get_logger("headwater.replica").bind(broker_id=broker_id)
        self.moves = LogDirMoves(
            logs,
            self.partitions,
            broker_id=broker_id,
            quota=move_quota or ReplicationQuota(lambda: UNLIMITED),
            threads=move_threads,
        )
        """Moves of logs between this broker's log dirs (AlterReplicaLogDirs)."""

    async def shutdown(self) -> None:
        await self.moves.stop()
        with contextlib.suppress(ValueError):
            self.metadata.renamed.remove(self._topics_renamed)
        for fetcher in self.fetchers.values():
            await fetcher.close()
        self.fetchers.clear()
        for task in list(self._isr_tasks):
            task.cancel()
        if self._isr is not None:
            await self._isr.close()
        for partition in self.partitions.values():
            partition.fail_waiters(RequestTimedOutError("the broker is shutting down"))

    def fence_leaders(self, reason: str) -> None:
        """Stop acting as leader anywhere (the ZooKeeper session is gone, so the controller
        is electing others): writes here could no longer be guaranteed. The controller's
        next LeaderAndIsr, after we re-register, gives the roles back."""
        for tp, partition in self.partitions.items():
            if partition.is_leader:
                partition.leader_id = -1
                partition.become_follower()
                partition.fail_waiters(NotLeaderOrFollowerError(f"{partition.name}: {reason}"))
                self._wake(tp)
                self._tell_listeners(tp, partition)
        self._log.warning("replica.leaders_fenced", reason=reason)

    # --- from the controller ------------------------------------------------------------

    async def become_leader_or_follower(
        self,
        states: list[LeaderAndIsrPartitionState],
        live_leaders: list[LeaderAndIsrLiveLeader] | None = None,
        topic_ids: Mapping[str, bytes] | None = None,
    ) -> list[PartitionError]:
        """Apply LeaderAndIsr: host each partition we are a replica of, in its new role.
        ``topic_ids`` (v1) are checked against, and kept by, each replica's log."""
        async with self._state_change:
            errors = await self._become_leader_or_follower(states, live_leaders, topic_ids or {})
            if topic_ids:  # (in the lock: a deletion must not remove the directory meanwhile)
                await self._record_topic_ids(states, topic_ids)
        return errors

    async def _become_leader_or_follower(
        self,
        states: list[LeaderAndIsrPartitionState],
        live_leaders: list[LeaderAndIsrLiveLeader] | None,
        topic_ids: Mapping[str, bytes],
    ) -> list[PartitionError]:
        leaders = {b.broker_id: b for b in live_leaders or []}
        errors: list[PartitionError] = []
        mine = [s for s in states if self.broker_id in s.replicas]
        if topic_ids:
            refused = self._other_topics(mine, topic_ids)
            errors.extend(_error(tp, InconsistentTopicIdError) for tp in refused)
            mine = [s for s in mine if (s.topic_name, s.partition_index) not in refused]
        # new partitions' logs are opened together (worker threads): one after the other,
        # a 1,024-partition topic took 3 s here; a failure is raised below, in order
        new = {TopicPartition(s.topic_name, s.partition_index) for s in mine}
        new.difference_update(self.partitions)
        if new:
            await self._create_all(new)
        roles: list[dict[str, Any]] = []
        for state in mine:
            tp = TopicPartition(state.topic_name, state.partition_index)
            partition = self.partitions.get(tp)
            if partition is None:
                try:
                    partition = await self._create(tp)
                except KafkaStorageError as exc:  # its old directory still being removed...
                    self._log.warning("replica.create_failed", topic=tp.topic, error=exc.message)
                    errors.append(_error(tp, KafkaStorageError))  # ...this one alone fails
                    continue
            if partition.log.offline:
                self._offline_role(tp, partition, state)
                errors.append(_error(tp, KafkaStorageError))  # (every time: see there)
                continue
            if state.leader_epoch < partition.leader_epoch:
                errors.append(_error(tp, StaleControllerEpochError))
                continue
            if state.leader_epoch == partition.leader_epoch and state.leader == partition.leader_id:
                errors.append(_error(tp))  # already applied (a new controller resends all)
                continue
            partition.leader_id = state.leader
            partition.leader_epoch = state.leader_epoch
            partition.isr = list(state.isr)
            partition.replicas = list(state.replicas)
            partition.zk_version = state.partition_epoch
            partition.controller_epoch = state.controller_epoch
            self._change_role(tp, partition, leaders.get(state.leader))
            roles.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "role": "leader" if partition.is_leader else "follower",
                    "leader": partition.leader_id,
                    "leader_epoch": partition.leader_epoch,
                    "isr": partition.isr,
                }
            )
            errors.append(_error(tp))
            self._wake(tp)  # parked fetches re-check: they may have to answer NOT_LEADER
        # one line per 1,000 (a list, as Kafka's state-change log has a line each): a line
        # each was half of what applying a 2,000-partition LeaderAndIsr cost (37 of 75 us)
        for start in range(0, len(roles), _ROLES_PER_LINE):
            self._log.info("partition.roles", partitions=roles[start : start + _ROLES_PER_LINE])
        return errors

    def _other_topics(
        self, states: list[LeaderAndIsrPartitionState], topic_ids: Mapping[str, bytes]
    ) -> set[TopicPartition]:
        """The partitions whose log here belongs to another topic of the same name (its
        ``partition.metadata`` names another id): one deleted while this broker was away,
        then made again. Such a log is not hosted, and is never taken for the new topic's:
        it is left on disk for an operator (as Kafka's ZooKeeper-mode brokers leave it),
        the answer says INCONSISTENT_TOPIC_ID, and the controller counts the replica
        offline, as for a disk error, until this broker starts again. A log being hosted
        is stopped (the deletion of its topic never reached this broker)."""
        refused: set[TopicPartition] = set()
        for state in states:
            tp = TopicPartition(state.topic_name, state.partition_index)
            wanted = topic_ids.get(tp.topic)
            hosted = self.partitions.get(tp)
            log = hosted.log if hosted is not None else self.logs.get_log(tp.topic, tp.partition)
            if wanted is None or log is None or log.topic_id in (None, wanted):
                continue
            refused.add(tp)
            self._log.error(
                "replica.inconsistent_topic_id",
                topic=tp.topic,
                partition=tp.partition,
                directory=str(log.dir),
                log_topic_id=format_topic_id(log.topic_id),
                topic_id=format_topic_id(wanted),
                advice=(
                    f"the log in {log.dir} is of a topic {tp.topic!r} deleted while this "
                    "broker was away, not of the topic of that name now: remove the "
                    "directory (or move it away) and restart this broker, and the replica "
                    "is made again from its leader"
                ),
            )
            if hosted is not None:
                self._stop_hosting(tp, f"{hosted.name} here is of a deleted topic")
        return refused

    async def _record_topic_ids(
        self, states: list[LeaderAndIsrPartitionState], topic_ids: Mapping[str, bytes]
    ) -> None:
        """Give each log this LeaderAndIsr names that is hosted here, and told its topic's
        id for the first time, its ``partition.metadata``, in a worker thread (a cluster
        upgraded to topic ids writes one for every replica, once). Only the request's
        partitions are looked at, not every one hosted."""
        unrecorded = [
            (partition.log, topic_id)
            for s in states
            if (topic_id := topic_ids.get(s.topic_name)) is not None
            and (partition := self.partitions.get(TopicPartition(s.topic_name, s.partition_index)))
            is not None
            and partition.log.topic_id is None
            and not partition.log.offline
        ]
        if not unrecorded:
            return
        await asyncio.to_thread(_write_topic_ids, unrecorded)

    def _offline_role(
        self, tp: TopicPartition, partition: Partition, state: LeaderAndIsrPartitionState
    ) -> None:
        """LeaderAndIsr for a partition whose log a disk error took offline here: it
        neither fetches nor keeps what a leader holds, and the answer says
        KAFKA_STORAGE_ERROR each time, so the controller (this one, or the next one, which
        resends everything) hands the partition to the other replicas (KIP-112)."""
        led = partition.is_leader
        if state.leader_epoch >= partition.leader_epoch:
            partition.leader_id = state.leader
            partition.leader_epoch = state.leader_epoch
            partition.isr = list(state.isr)
            partition.replicas = list(state.replicas)
        self._unfollow(tp)
        if not partition.is_leader:
            partition.become_follower()
            self._fail_deletes(tp, f"{partition.name} is offline here")
            if led:  # the coordinators let its groups and transactions go (found in review)
                self._tell_listeners(tp, partition)
        self._wake(tp)

    async def _create_all(self, new: set[TopicPartition]) -> None:
        """Host ``new`` partitions: each topic's config read once, not once per partition
        (twice: before and after its log opened). A broker restarting with 2,100
        partitions read 4,200 znodes before it could follow or lead any: 2 s of kazoo's
        CPU, in which the broker served nothing it hosts."""
        topics = sorted({tp.topic for tp in new})
        configs = await asyncio.gather(*(self._load_config(t) for t in topics))
        first = dict(zip(topics, configs, strict=True))
        await asyncio.gather(
            *(self._create(tp, first[tp.topic]) for tp in new), return_exceptions=True
        )
        # read again now that the log manager lists the logs: a change applied while they
        # were being opened missed them. Each topic's read is applied with no await after
        # it: the loader never answers older than what it applied, but only up to then
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in new:
            by_topic.setdefault(tp.topic, []).append(tp)

        async def read_again(topic: str) -> None:
            config = await self._load_config(topic)
            for tp in by_topic[topic]:
                partition = self.partitions.get(tp)
                if partition is not None:
                    partition.log.config = config

        await asyncio.gather(*(read_again(t) for t in topics))

    async def _create(self, tp: TopicPartition, config: LogConfig | None = None) -> Partition:
        """The partition, its log opened once even if two LeaderAndIsr race to create it."""
        creating = self._creating.get(tp)
        if creating is None:
            creating = asyncio.ensure_future(self._open(tp, config))
            self._creating[tp] = creating
            creating.add_done_callback(lambda _: self._creating.pop(tp, None))
        return await asyncio.shield(creating)

    async def _open(self, tp: TopicPartition, config: LogConfig | None = None) -> Partition:
        """The partition of ``tp``, its log opened (``config``: its topic's, read just now by
        the caller, which reads it again once the log is listed; else read here, twice)."""
        log = self.logs.get_log(tp.topic, tp.partition)  # opened at start: no thread hop
        if log is None:
            loaded = config if config is not None else await self._load_config(tp.topic)
            log = await asyncio.to_thread(
                self.logs.get_or_create_log, tp.topic, tp.partition, loaded
            )
        if config is None:
            # read again now that the log manager lists the log: a change applied while
            # it was being opened missed it; the loader never answers older than it applied
            log.config = await self._load_config(tp.topic)
        # a move between log dirs may have swapped the log in meanwhile
        log = self.logs.get_log(tp.topic, tp.partition) or log
        # the awaits above may have raced another LeaderAndIsr for this partition
        partition = self.partitions.setdefault(
            tp,
            Partition(
                topic=tp.topic,
                index=tp.partition,
                log=log,
                local_broker_id=self.broker_id,
                high_watermark=min(self.logs.high_watermarks.get(tp, 0), log.log_end_offset),
            ),
        )
        self.moves.resume(tp)  # a move's copy found at start goes on
        return partition

    def on_role_change(self, listener: Callable[[TopicPartition, Partition | None], None]) -> None:
        """Call ``listener(tp, partition)`` when a partition's role here changes (None: it
        is no longer hosted). The group coordinator loads its offsets partitions so."""
        self._role_listeners.append(listener)

    def on_readable(self, listener: Callable[[TopicPartition], None]) -> None:
        """Call ``listener(tp)`` when what a consumer may read of ``tp`` may have changed
        (its high watermark moved, its role changed): share fetches wait on it."""
        self._readable_listeners.append(listener)

    def leader_partition(self, topic: str, index: int) -> Partition:
        """The partition, led here; else NOT_LEADER_OR_FOLLOWER or
        UNKNOWN_TOPIC_OR_PARTITION, saying where to go."""
        return self._leader_partition(topic, index)

    def _tell_listeners(self, tp: TopicPartition, partition: Partition | None) -> None:
        for listener in self._role_listeners:
            try:
                listener(tp, partition)
            except Exception:
                self._log.exception("replica.role_listener_failed", topic=tp.topic)

    def _change_role(
        self, tp: TopicPartition, partition: Partition, leader: LeaderAndIsrLiveLeader | None
    ) -> None:
        self._unfollow(tp)
        if partition.is_leader:
            partition.become_leader(_now_ms())
            self._complete_deletes(tp, partition)  # its ISR may be smaller now
        else:
            partition.become_follower()
            self._fail_deletes(tp, f"{partition.name} lost its leadership here")
            if leader is not None:
                self._fetcher_for(leader).add(partition)
        self._tell_listeners(tp, partition)

    def _fetcher_for(self, leader: LeaderAndIsrLiveLeader) -> ReplicaFetcher:
        # on our inter-broker listener's name, as Kafka's follower looks its leader up (the
        # controller's LeaderAndIsr gives the address on the controller's)
        host, port = self.metadata.address(leader.broker_id, self._listener) or (
            leader.host_name,
            leader.port,
        )
        fetcher = self.fetchers.get(leader.broker_id)
        if fetcher is not None and (fetcher.host, fetcher.port) == (host, port):
            return fetcher
        new = ReplicaFetcher(
            self.broker_id,
            leader.broker_id,
            host,
            port,
            max_wait_ms=self._fetch_wait_max_ms,
            max_bytes=self._fetch_max_bytes,
            tls=self._peer_tls,
            login=self._peer_login,
            quota=self.follower_quota,
            on_progress=self._followed_progress,
        )
        self.fetchers[leader.broker_id] = new
        if fetcher is not None:
            # the leader restarted elsewhere: what we followed there follows it here
            for partition in fetcher.followed():
                new.add(partition)
            asyncio.get_running_loop().create_task(fetcher.close())
        return new

    def _followed_progress(self, partition: Partition) -> None:
        """A followed partition took records or a high watermark from its leader: the
        consumers fetching it from here (KIP-392), parked, may read on."""
        tp = TopicPartition(partition.topic, partition.index)
        if tp in self._fetch_waiters or self.fetch_sessions.holds(tp):
            self._wake(tp, followers=False)

    def _unfollow(self, tp: TopicPartition) -> None:
        for fetcher in self.fetchers.values():
            fetcher.remove(tp)

    async def stop_replicas(
        self, partitions: list[StopReplicaPartition], *, delete: bool
    ) -> list[PartitionError]:
        """Stop hosting ``partitions``; with ``delete``, remove their data from disk."""
        async with self._state_change:  # after a LeaderAndIsr being applied, not during it
            # and after the logs it was opening: a LeaderAndIsr cancelled part way (its
            # connection closed) left the lock while they went on, to host them after us
            opening = [
                creating
                for p in partitions
                if (creating := self._creating.get(TopicPartition(p.topic_name, p.partition_index)))
                is not None
            ]
            if opening:
                await asyncio.wait(opening)  # not gather: our cancellation must not cancel them
                for done in opening:  # a failed open is the LeaderAndIsr's to report
                    if not done.cancelled():
                        done.exception()
            for p in partitions:
                tp = TopicPartition(p.topic_name, p.partition_index)
                self._stop_hosting(tp, f"{tp.topic}-{tp.partition} was stopped here")
        # removed from disk outside the lock: a large log's removal must not hold up the
        # leadership changes of other partitions. delete_logs takes the logs out of the
        # manager before its first await, and the manager refuses to create a log while
        # its directory is being removed
        failed: set[TopicPartition] = set()
        if delete:
            tps = [TopicPartition(p.topic_name, p.partition_index) for p in partitions]
            failed.update(await self.logs.delete_logs(tps))
        return [
            _error(tp, KafkaStorageError if tp in failed else None)
            for tp in (TopicPartition(p.topic_name, p.partition_index) for p in partitions)
        ]

    def _stop_hosting(self, tp: TopicPartition, why: str) -> None:
        """Neither lead nor follow ``tp`` any more (its log stays where it is)."""
        self._unfollow(tp)
        gone = self.partitions.pop(tp, None)
        self._fail_deletes(tp, why)
        if gone is not None:
            self._tell_listeners(tp, None)
            self.logs.high_watermarks[tp] = gone.high_watermark  # still checkpointed
            gone.fail_waiters(NotLeaderOrFollowerError(why))
        self._wake(tp)

    # --- produce ------------------------------------------------------------------------

    def produce(
        self, request: ProduceRequest
    ) -> ProduceResponse | Deferred[ProduceResponse] | Awaitable[ProduceResponse]:
        """Append now; the response at once, or (acks=all) a Deferred answered from the
        call that moves the last high watermark it waits for. Not a coroutine: an
        acks=0/1 produce is answered in the loop iteration that read it, right after the
        fetches its appends satisfy (up to :data:`WOKEN_FIRST` of them). The exception: a
        transaction's first batch in a partition, checked with its coordinator first
        (KIP-890, :attr:`txn_verify`), returns a coroutine."""
        self.produce_requests.inc()
        if request.transactional_id is not None and self.txn_verify is not None:
            guards = self._held(request)
            if guards:
                # the rest is appended now, as requests arrive; what is held waits for its
                # check, and for the producer's batches held before it in that partition:
                # a later request of the producer's (five may be in flight) must not
                # overtake them (Kafka reads one request of a connection at a time)
                now = _only(request, lambda tp: tp not in guards)
                first = self._produce(now, None) if now.topics else None
                held = _only(request, lambda tp: tp in guards)
                turns = self._take_turns(guards)
                task = asyncio.get_running_loop().create_task(
                    self._produce_verified(
                        request,
                        held=held,
                        txn_id=request.transactional_id,
                        guards=guards,
                        first=first,
                        turns=turns,
                    )
                )
                # the turns are given back however the task ends, even cancelled before
                # its first step (a coroutine's own finally would not run then)
                task.add_done_callback(lambda _: self._give_back(turns))
                return task
        return self._produce(request, None)

    def _in_doubt(self, topic: str, index: int, refusal: ApiError) -> ApiError:
        """A refusal from the producers' state, said while this broker cannot tell whether
        it still leads: its producers' state may be behind a new leader's (the producer
        went on there: "out of order" here), and the refusal would end the producer or
        its transaction. NOT_ENOUGH_REPLICAS instead: retriable, and to the producer
        "refused before the append" (NOT_LEADER_OR_FOLLOWER would say "maybe written",
        and a batch in doubt is failed, not sent again, on the real refusal that may
        follow: a review). The doubt ends with a fence (NOT_LEADER_OR_FOLLOWER, and the
        producer finds the new leader) or with this leader's own answer. Logged once a
        second per partition: a producer retries every ``retry_backoff_ms``."""
        now = time.monotonic()
        key = (topic, index)
        if now - self._doubt_logged.get(key, -math.inf) >= 1.0:
            self._doubt_logged[key] = now
            self._log.info(
                "replica.refusal_in_doubt", topic=topic, partition=index, refusal=refusal.name
            )
        return NotEnoughReplicasError(
            f"broker {self.broker_id} cannot tell whether it still leads {topic}-{index} "
            f"(its ZooKeeper session is in doubt), so it does not answer {refusal.name}; "
            "retry"
        )

    def _give_back(self, turns: list[_Turn]) -> None:
        """The held batches are appended or refused (or never will be): the next go."""
        for turn in turns:
            if not turn.ours.done():
                turn.ours.set_result(None)
            if self._held_batches.get(turn.key) is turn.ours:
                del self._held_batches[turn.key]

    def _take_turns(self, guards: dict[tuple[str, int], _Guard]) -> list[_Turn]:
        """Queue the held partitions behind the producer's batches held before them."""
        loop = asyncio.get_running_loop()
        turns = []
        for tp, guard in guards.items():
            key = (tp[0], tp[1], guard.producer_id)
            ours: asyncio.Future[None] = loop.create_future()
            turns.append(_Turn(key, ours, self._held_batches.get(key)))
            self._held_batches[key] = ours
        return turns

    def _held(self, request: ProduceRequest) -> dict[tuple[str, int], _Guard]:
        """The partitions whose batch must wait: where it would begin a transaction (a
        transactional batch whose producer has none open there: checked with the
        coordinator, ``_Guard.check``), or where a batch of its producer waits already.
        Each first batch's header is read: O(partitions)."""
        found: dict[tuple[str, int], _Guard] = {}
        for topic in request.topics:
            for p in topic.partitions:
                records = p.records
                if not isinstance(records, bytes | bytearray | memoryview):
                    continue
                if len(records) < HEADER_SIZE:
                    continue  # the append's own checks answer it
                header = read_header(records)
                if not header.is_transactional or header.is_control or header.producer_id < 0:
                    continue
                partition = self.partitions.get(TopicPartition(topic.name, p.index))
                if partition is None or not partition.is_leader:
                    continue
                log = partition.log
                pid = header.producer_id
                check = pid not in log.producers.ongoing
                if not check and (topic.name, p.index, pid) not in self._held_batches:
                    continue
                found[(topic.name, p.index)] = _Guard.of(log, pid, header.producer_epoch, check)
        return found

    async def _produce_verified(
        self,
        request: ProduceRequest,
        *,
        held: ProduceRequest,
        txn_id: str,
        guards: dict[tuple[str, int], _Guard],
        first: ProduceResponse | Deferred[ProduceResponse] | None,
        turns: list[_Turn],
    ) -> ProduceResponse:
        """Check ``held`` with the coordinator where it would begin a transaction, wait
        for the producer's batches held before it, append what passes, and answer the
        whole request (``first``: the rest, appended when it came)."""
        answer: ProduceResponse | Deferred[ProduceResponse] | None = None
        results: dict[tuple[str, int], ProducePartitionResponse] = {}
        try:
            try:
                refused = await self._verify(txn_id, guards)
                for turn in turns:
                    if turn.before is not None:
                        await asyncio.shield(turn.before)
                answer = self._produce(held, self._voided(txn_id, guards, refused))
            finally:
                self._give_back(turns)
            for part in (first, answer):
                if part is None:
                    continue
                done = await part if isinstance(part, Deferred) else part
                for topic in done.topics:
                    for p in topic.partitions:
                        results[(topic.name, p.index)] = p
        except BaseException:  # the producer went away: nothing waits for replicas for it
            for part in (first, answer):
                if isinstance(part, Deferred) and not part.done:
                    part.cancel()
            raise
        return ProduceResponse(
            topics=[
                ProduceTopicResponse(
                    name=t.name, partitions=[results[(t.name, p.index)] for p in t.partitions]
                )
                for t in request.topics
            ]
        )

    async def _verify(
        self, txn_id: str, guards: dict[tuple[str, int], _Guard]
    ) -> dict[tuple[str, int], ApiError]:
        """Ask the coordinator about the partitions that need it: those to refuse."""
        assert self.txn_verify is not None
        by_producer: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for tp, guard in guards.items():
            if guard.check:
                by_producer.setdefault((guard.producer_id, guard.epoch), []).append(tp)
        refused: dict[tuple[str, int], ApiError] = {}
        for (pid, epoch), tps in by_producer.items():
            try:
                refused.update(await self.txn_verify(txn_id, pid, epoch, tps))
            except Exception as exc:  # a bug must not take the produce path down
                self._log.exception("txn.verify_failed", transactional_id=txn_id)
                refused.update(
                    dict.fromkeys(tps, NotEnoughReplicasError(f"could not verify: {exc}"))
                )
        return refused

    async def check_txn_write(
        self, txn_id: str, topic: str, index: int, producer_id: int, producer_epoch: int
    ) -> ApiError | None:
        """KIP-890 for a coordinator's own transactional write (TxnOffsetCommit's offsets
        in ``__consumer_offsets``): where the producer has no transaction open in the
        partition, ask its coordinator, and say why not if the write must not go in. The
        caller appends right after, with no await between (the guard's answer holds only
        until then)."""
        partition = self.partitions.get(TopicPartition(topic, index))
        if self.txn_verify is None or partition is None or not partition.is_leader:
            return None  # the append answers a partition not led here
        log = partition.log
        if producer_id in log.producers.ongoing:
            return None
        guard = _Guard.of(log, producer_id, producer_epoch, check=True)
        tp = (topic, index)
        refused = await self._verify(txn_id, {tp: guard})
        return self._voided(txn_id, {tp: guard}, refused).get(tp)

    def _voided(
        self,
        txn_id: str,
        guards: dict[tuple[str, int], _Guard],
        refused: dict[tuple[str, int], ApiError],
    ) -> dict[tuple[str, int], ApiError]:
        """``refused``, and the held batches whose producer's marker came meanwhile (the
        transaction they belong to is over: appended, they would open one no marker
        ends). Run right before the append, with no await between."""
        for tp, guard in guards.items():
            current = self.partitions.get(TopicPartition(*tp))
            if tp in refused or current is None or not current.is_leader:
                continue  # gone or led elsewhere meanwhile: the append says so (retriable)
            if current.log is not guard.log or current.log.truncations != guard.truncations:
                # led elsewhere and back meanwhile: whether its transaction ended is not
                # known here any more; the producer asks again (retriable)
                refused[tp] = NotLeaderOrFollowerError(
                    f"{tp[0]}-{tp[1]} changed leaders while the batch was held; retry"
                )
            elif current.log.producers.markers_seen(guard.producer_id) != guard.markers:
                refused[tp] = InvalidTxnStateError(
                    f"a marker of producer {guard.producer_id} reached {tp[0]}-{tp[1]} while "
                    "its batch was held (checked with the coordinator, or behind one that "
                    "was): the transaction it belonged to is over"
                )
        if refused:
            self._log.info(
                "txn.batches_refused",
                transactional_id=txn_id,
                partitions=sorted(f"{t}-{p}" for t, p in refused),
                error=next(iter(refused.values())).name,
            )
        return refused

    def _produce(
        self, request: ProduceRequest, refused: dict[tuple[str, int], ApiError] | None
    ) -> ProduceResponse | Deferred[ProduceResponse]:
        topics = []
        waits: list[tuple[ProducePartitionResponse, Partition, int]] = []
        for topic in request.topics:
            results = []
            writable = self._acl.allowed(Operation.WRITE, ResourceType.TOPIC, topic.name)
            for p in topic.partitions:
                try:
                    if not writable:
                        raise topic_not_authorized(topic.name, Operation.WRITE)
                    if request.acks not in (0, 1, -1):
                        raise InvalidRequiredAcksError(
                            f"acks={request.acks} is not one of 0, 1, -1 (all)"
                        )
                    if refused and (error := refused.get((topic.name, p.index))) is not None:
                        raise error
                    if request.transactional_id is None and _transactional(p.records):
                        raise TransactionalIdAuthorizationFailedError(
                            f"a transactional batch for {topic.name}-{p.index} came without "
                            "its producer's transactional id: refused, as Kafka refuses it "
                            "(no coordinator would know, or end, its transaction)"
                        )
                    try:
                        result, partition, end = self._append(
                            topic.name, p.index, p.records, request.acks
                        )
                    except _PRODUCER_REFUSALS as exc:
                        if self._state_known():
                            raise
                        raise self._in_doubt(topic.name, p.index, exc) from exc
                    results.append(result)
                    if request.acks == -1:
                        waits.append((result, partition, end))
                except ApiError as exc:
                    results.append(
                        ProducePartitionResponse(
                            index=p.index, error_code=exc.code, error_message=exc.message
                        )
                    )
            topics.append(ProduceTopicResponse(name=topic.name, partitions=results))
        # The fetches these appends satisfied are answered before this produce is (up to
        # WOKEN_FIRST of them, followers first): the followers' (what acks=all waits for)
        # and a consumer's records (end-to-end latency) go out first, and the producer
        # hears back a few tens of us later; a larger fan-out waits for the next loop pass
        # rather than hold the producer's answer.
        self._complete_woken(WOKEN_FIRST)
        response = ProduceResponse(topics=topics)
        if waits:
            return _DelayedProduce(
                response, waits, request.timeout_ms, self.delayed_produces
            ).deferred
        return response

    def _append(
        self, topic: str, index: int, records: object, acks: int, coordinator: bool = False
    ) -> tuple[ProducePartitionResponse, Partition, int]:
        partition = self._leader_partition(topic, index)
        if not isinstance(records, bytes | bytearray | memoryview) or len(records) == 0:
            raise InvalidRecordError(f"a produce to {topic}-{index} carried no record batches")
        if acks == -1:
            self._check_min_insync(partition)
        records, append_time_ms = _as_topic_wants(partition.log.config, records)
        info = partition.log.append(
            records, leader_epoch=partition.leader_epoch, coordinator=coordinator
        )
        self.bytes_in.inc(info.size_bytes)
        moved = partition.maybe_advance_high_watermark()
        # consumers only if the high watermark moved (a single in-sync replica)
        self._wake(TopicPartition(topic, index), consumers=moved)
        if partition.log.flush_due():
            self._flush_soon(partition.log)
        result = ProducePartitionResponse(
            index=index,
            base_offset=info.first_offset,
            log_append_time_ms=append_time_ms,
            log_start_offset=partition.log.log_start_offset,
        )
        return result, partition, info.last_offset + 1

    def _check_min_insync(self, partition: Partition) -> None:
        min_isr = partition.log.config.min_insync_replicas
        if len(partition.isr) < min_isr:
            raise NotEnoughReplicasError(
                f"{partition.name} has {len(partition.isr)} in-sync replicas "
                f"({partition.isr}), fewer than min.insync.replicas={min_isr}; acks=all "
                "writes wait until enough replicas are back (acks=1 still works)"
            )
        if len(partition.isr) < len(partition.replicas) and not self._config_known(partition.topic):
            # the log has the broker's default min.insync.replicas, maybe lower than the
            # topic's: with a short ISR, acking could promise less than the topic asks for
            raise NotEnoughReplicasError(
                f"{partition.name}: its topic's config (min.insync.replicas) could not be "
                f"read from ZooKeeper yet and the ISR {partition.isr} is short of the "
                f"replicas {partition.replicas}; acks=all writes are refused until it is "
                "read (retried in the background)"
            )

    async def append_records(
        self, topic: str, index: int, records: bytes, *, timeout_ms: int
    ) -> ProducePartitionResponse:
        """Append as leader with acks=all (the coordinator's writes to its own topic)."""
        try:
            result, partition, end = self._append(topic, index, records, -1, coordinator=True)
        except ApiError as exc:
            return ProducePartitionResponse(
                index=index, error_code=exc.code, error_message=exc.message
            )
        answered: ProducePartitionResponse = await _DelayedProduce(
            result, [(result, partition, end)], timeout_ms, self.delayed_produces
        ).deferred
        return answered

    async def write_txn_markers(self, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse:
        """Append each transaction marker as the leader of its partitions, answered once
        every in-sync replica has it (as acks=all; Kafka's coordinator-origin appends)."""
        results: list[WritableTxnMarkerResult] = []
        waits: list[tuple[Any, Partition, int]] = []
        for marker in request.markers:
            topics = []
            for topic in marker.topics:
                written = []
                for index in topic.partition_indexes:
                    result = WritableTxnMarkerPartitionResult(partition_index=index)
                    written.append(result)
                    try:
                        partition, end = self._append_marker(topic.name, index, marker)
                    except ApiError as exc:
                        result.error_code, result.error_message = exc.code, exc.message
                        continue
                    waits.append((result, partition, end))
                topics.append(WritableTxnMarkerTopicResult(name=topic.name, partitions=written))
            results.append(WritableTxnMarkerResult(producer_id=marker.producer_id, topics=topics))
        self._complete_woken(WOKEN_FIRST)
        response = WriteTxnMarkersResponse(markers=results)
        if not waits:
            self._markers_written(request, response)
            return response
        answered: WriteTxnMarkersResponse = await _DelayedProduce(
            response, waits, _MARKER_TIMEOUT_MS, self.delayed_produces
        ).deferred
        self._markers_written(request, answered)
        return answered

    def describe_producers(self, request: DescribeProducersRequest) -> DescribeProducersResponse:
        """The producers each partition led here knows (KIP-664: what kafka-transactions
        looks at to find a transaction left open); Read on the topic."""
        topics = []
        for topic in request.topics:
            readable = self._acl.allowed(Operation.READ, ResourceType.TOPIC, topic.name)
            partitions = []
            for index in topic.partition_indexes:
                try:
                    if not readable:
                        raise topic_not_authorized(topic.name, Operation.READ)
                    state = self._leader_partition(topic.name, index).log.producers
                except ApiError as exc:
                    partitions.append(
                        DescribeProducersPartition(
                            partition_index=index, error_code=exc.code, error_message=exc.message
                        )
                    )
                    continue
                active = []
                for pid in sorted(state.producers):
                    known = state.producer(pid)
                    assert known is not None
                    active.append(
                        ProducerStateData(
                            producer_id=pid,
                            producer_epoch=known.epoch,
                            last_sequence=known.batches[-1].last_sequence if known.batches else -1,
                            last_timestamp=known.last_timestamp,
                            coordinator_epoch=known.coordinator_epoch,
                            current_txn_start_offset=known.txn_first_offset,
                        )
                    )
                partitions.append(
                    DescribeProducersPartition(partition_index=index, active_producers=active)
                )
            topics.append(DescribeProducersTopicResponse(name=topic.name, partitions=partitions))
        return DescribeProducersResponse(topics=topics)

    def on_txn_marker(self, listener: Callable[[str, int, int, bool], None]) -> None:
        """Call ``listener(topic, partition, producer_id, committed)`` for each marker
        written here and replicated (the group coordinator applies a transaction's
        offsets at its COMMIT, as Kafka's scheduleHandleTxnCompletion)."""
        self._marker_listeners.append(listener)

    def _markers_written(
        self, request: WriteTxnMarkersRequest, response: WriteTxnMarkersResponse
    ) -> None:
        if not self._marker_listeners:
            return
        for marker, result in zip(request.markers, response.markers, strict=True):
            for topic in result.topics:
                for p in topic.partitions:
                    if p.error_code:
                        continue
                    for listener in self._marker_listeners:
                        try:
                            listener(
                                topic.name,
                                p.partition_index,
                                marker.producer_id,
                                marker.transaction_result,
                            )
                        except Exception:
                            self._log.exception("txn.marker_listener_failed")

    def _append_marker(
        self, topic: str, index: int, marker: WritableTxnMarker
    ) -> tuple[Partition, int]:
        partition = self._leader_partition(topic, index)
        self._check_min_insync(partition)
        log = partition.log
        info = log.append_marker(
            producer_id=marker.producer_id,
            producer_epoch=marker.producer_epoch,
            committed=marker.transaction_result,
            coordinator_epoch=marker.coordinator_epoch,
            leader_epoch=partition.leader_epoch,
        )
        self._log.debug(
            "txn.marker_written",
            topic=topic,
            partition=index,
            producer_id=marker.producer_id,
            committed=marker.transaction_result,
            offset=info.first_offset,
        )
        moved = partition.maybe_advance_high_watermark()
        self._wake(TopicPartition(topic, index), consumers=moved)
        return partition, info.last_offset + 1

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

    def fetch(
        self, request: FetchRequest, *, by_id: bool = False
    ) -> FetchResponse | Deferred[FetchResponse]:
        """The response now if there is enough to send (or nothing to wait for), else a
        Deferred that the next append, high-watermark move or role change that satisfies it
        completes, in that event's own call (or ``max_wait_ms`` ends). ``by_id``: a Kafka
        client's Fetch v13+, its topics named from their ids (see the Fetch handler)."""
        self.fetch_requests.inc()
        follower = request.replica_id >= 0
        if follower:
            self._acl.check_cluster(Operation.CLUSTER_ACTION, "fetch as a follower")
        # a session error answers the request
        context = self.fetch_sessions.context(request, by_id=by_id)
        if not follower:
            context.readable = self._acl.decider(Operation.READ, ResourceType.TOPIC)
        if follower:
            moved: list[Partition] = []
            try:
                self._record_follower_fetch(request, context, moved)
                # what the high watermark's move lets through: the consumers first (up to
                # WOKEN_FIRST), then the acks=all produces, then this follower's answer
                self._complete_woken(WOKEN_FIRST)
            finally:
                for partition in moved:
                    partition.complete_waiters()
        response, size, failed, throttled = self._read(request, context, follower)
        if (
            size >= request.min_bytes
            or failed
            or request.max_wait_ms <= 0
            or (context.session is None and not context.partitions)
        ):
            self.bytes_out.inc(size)
            self.leader_quota.record(throttled)  # what goes out, once
            context.commit()
            return response
        if context.session is not None:
            return self._park(request, context, follower, [])  # woken through the session
        tps = [sp.tp for sp in context.partitions]
        return self._park(request, context, follower, tps)

    def _park(
        self,
        request: FetchRequest,
        context: FetchContext,
        follower: bool,
        tps: list[TopicPartition],
    ) -> Deferred[FetchResponse]:
        delayed = _DelayedFetch(request, context, follower, tps)
        delayed.deferred = Deferred(on_cancel=lambda: self._unpark(delayed))
        delayed.timer = asyncio.get_running_loop().call_later(
            request.max_wait_ms / 1000, self._try_complete, delayed, True
        )
        for tp in tps:
            self._fetch_waiters.setdefault(tp, {})[delayed] = None
        if context.session is not None:
            context.session.parked = delayed
        self.parked_fetches += 1
        return delayed.deferred

    def _try_complete(self, delayed: _DelayedFetch, expired: bool = False) -> None:
        """Read again for a parked fetch; answer it if it has enough now (or has expired).
        Runs from a timer, or once the request that woke it is done (inside it, or in the
        loop pass after): it must not raise."""
        if delayed.deferred.done:
            return
        context = delayed.context
        try:
            woke, delayed.woke = delayed.woke, set()
            woke |= context.refresh()
            now = expired or delayed.answer_now
            if not now and not self._enough(delayed, woke):
                return
            response, size, failed, throttled = self._read(
                delayed.request, context, delayed.follower
            )
        except Exception as exc:
            self._unpark(delayed)
            delayed.deferred.fail(exc)
            return
        if size < delayed.request.min_bytes and not failed and not now:
            delayed.found = context.sizes()
            delayed.total = size
            return
        self._unpark(delayed)
        self.bytes_out.inc(size)
        self.leader_quota.record(throttled)
        delayed.context.commit()
        delayed.deferred.resolve(response)

    def _enough(self, delayed: _DelayedFetch, woke: set[TopicPartition]) -> bool:
        """Whether a read of ``delayed`` now may answer it: the partitions that woke it
        looked at again (their bytes, not an answer), the others as last found. An error
        answers at once, as a read's does."""
        context = delayed.context
        if len(context.partitions) <= len(woke) + _READ_ALL_BELOW:
            return True  # few others: the read that may answer costs about the same
        session = context.session
        if session is not None:
            held = session.partitions
        else:
            if delayed.by_tp is None:
                delayed.by_tp = {sp.tp: sp for sp in context.partitions}
            held = delayed.by_tp
        request, follower = delayed.request, delayed.follower
        isolation = request.isolation_level
        found = delayed.found
        for tp in woke:
            sp = held.get(tp)
            if sp is None:
                continue  # dropped from its session meanwhile
            try:
                partition = self._readable(sp, request, context, follower)
                if _diverging(partition, sp) is not None:
                    return True
                log = partition.log
                data = log.read(
                    sp.fetch_offset,
                    sp.max_bytes,
                    max_offset=None if follower else _readable_end(partition, isolation),
                    min_one_batch=True,
                )
            except ApiError:
                return True
            size = data.size if data is not None else 0
            delayed.total += size - found.get(tp, 0)
            found[tp] = size
        return delayed.total >= request.min_bytes

    def _unpark(self, delayed: _DelayedFetch) -> None:
        if delayed.timer is None:
            return  # already unparked
        delayed.timer.cancel()
        delayed.timer = None
        self.parked_fetches -= 1
        session = delayed.context.session
        if session is not None and session.parked is delayed:
            session.parked = None
        for tp in delayed.tps:
            waiters = self._fetch_waiters.get(tp)
            if waiters is not None:
                waiters.pop(delayed, None)
                if not waiters:
                    del self._fetch_waiters[tp]

    def _record_follower_fetch(
        self, request: FetchRequest, context: FetchContext, moved: list[Partition]
    ) -> None:
        """A follower's fetch offsets are its log end offsets: move the high watermark,
        and start adding it to the ISR if it caught up. The partitions whose high
        watermark moved go to ``moved``, their acks=all produces not answered yet.

        Every partition the fetch looks at counts (see FetchSessionCache: in a session,
        the idle ones at least every sweep): one left out of an incremental request is
        one whose position the follower still holds, and this fetch is news of it (its
        caught-up time). Only a follower whose log end offset moved can move a high
        watermark."""
        now = _now_ms()
        replica_id = request.replica_id
        for sp in context.partitions:
            tp = sp.tp
            partition = self.partitions.get(tp)
            if partition is None or not partition.is_leader:
                continue
            if 0 <= sp.current_leader_epoch != partition.leader_epoch:
                continue  # a fetch for another epoch says nothing about this one
            if partition.update_follower_start(replica_id, sp.log_start_offset):
                self._complete_deletes(tp, partition)
            if _diverging(partition, sp) is not None:
                # its log parts from ours below its fetch offset: that offset is not what
                # it holds of our log, and counted it could move the high watermark past
                # records it does not have (Kafka skips the same update)
                continue
            moved_on = partition.update_follower(replica_id, sp.fetch_offset, now)
            if moved_on and partition.maybe_advance_high_watermark(answer=False):
                moved.append(partition)
                self._wake(tp, followers=False)
            if replica_id not in partition.isr and replica_id in partition.ready_to_join():
                self._change_isr(partition, [*partition.isr, replica_id])

    def _read(
        self, request: FetchRequest, context: FetchContext, follower: bool
    ) -> tuple[FetchResponse, int, bool, int]:
        """One pass over the partitions the fetch looks at: (response, bytes found,
        whether any failed, bytes of them that count against the leader's replication
        throttle); what it found is noted in ``context`` (see FetchContext).

        An incremental fetch leaves out a partition with nothing to read whose high
        watermark and log start are as last sent."""
        budget = request.max_bytes
        total = 0
        failed = False
        incremental = context.incremental
        committed = not follower and request.isolation_level == READ_COMMITTED
        by_topic: dict[str, list[FetchPartitionData]] = {}
        quota = self.leader_quota if follower and self.leader_quota.active else None
        held_back = quota is not None and quota.exceeded()
        throttled_bytes = 0
        rack = request.rack_id if self.rack_aware_reads and not follower else ""
        context.begin()
        for sp in context.partitions:
            try:
                partition = self._readable(sp, request, context, follower)
                log = partition.log
                elsewhere = (
                    preferred_replica(partition, rack, sp.fetch_offset, self.metadata.brokers)
                    if rack
                    else None
                )
                if elsewhere is not None:  # no records: the consumer asks that replica
                    failed = True  # answered at once (Kafka's too)
                    context.errored(sp)
                    by_topic.setdefault(sp.topic, []).append(
                        FetchPartitionData(
                            partition_index=sp.index,
                            high_watermark=partition.high_watermark,
                            last_stable_offset=log.last_stable_offset(partition.high_watermark),
                            log_start_offset=log.log_start_offset,
                            preferred_read_replica=elsewhere,
                        )
                    )
                    continue
                throttled = quota is not None and log.config.leader_throttled(
                    sp.index, self.broker_id
                )
                high_watermark = partition.high_watermark
                end = (
                    log.log_end_offset
                    if follower
                    else high_watermark
                    if not committed
                    else log.last_stable_offset(high_watermark)
                )
                told = (
                    sp.sent_high_watermark == high_watermark
                    and sp.sent_log_start_offset == log.log_start_offset
                )
                diverging = _diverging(partition, sp)
                if diverging is None and incremental and told and sp.fetch_offset == end:
                    continue  # nothing new to tell
                data = (
                    None
                    if diverging is not None  # no records: it truncates first, then fetches
                    # over the leader's throttle, an out-of-sync replica's copy waits
                    or (throttled and held_back and request.replica_id not in partition.isr)
                    else log.read(
                        sp.fetch_offset,
                        min(sp.max_bytes, budget),
                        max_offset=None if follower else end,
                        min_one_batch=total == 0,  # KIP-74: the first batch always fits
                    )
                )
            except ApiError as exc:
                failed = True
                context.errored(sp)
                by_topic.setdefault(sp.topic, []).append(
                    FetchPartitionData(partition_index=sp.index, error_code=exc.code)
                )
                continue
            size = data.size if data is not None else 0
            if diverging is not None:
                failed = True  # answered at once: the fetcher has to truncate
                context.errored(sp)  # and the session looks at it again next time
            else:
                if not size and sp.fetch_offset < end:
                    context.unfinished(sp)  # the budget ran out before it: next time
                if incremental and told and not size:
                    continue
                total += size
                budget = max(budget - size, 0)
                if throttled:
                    throttled_bytes += size
                context.answered(sp, high_watermark, log.log_start_offset, size)
            by_topic.setdefault(sp.topic, []).append(
                FetchPartitionData(
                    partition_index=sp.index,
                    high_watermark=high_watermark,
                    last_stable_offset=(
                        end
                        if committed
                        else high_watermark
                        if follower
                        else log.last_stable_offset(high_watermark)
                    ),
                    log_start_offset=log.log_start_offset,
                    diverging_epoch=diverging,
                    aborted_transactions=(
                        [
                            AbortedTransaction(producer_id=pid, first_offset=first)
                            for pid, first in log.aborted_transactions(sp.fetch_offset, end)
                        ]
                        if committed and data is not None
                        else None
                    ),
                    records=data.region() if data is not None else None,
                )
            )
        topics = [FetchTopicResponse(topic=t, partitions=ps) for t, ps in by_topic.items()]
        response = FetchResponse(session_id=context.session_id, topics=topics)
        return response, total, failed, throttled_bytes

    def _readable(
        self, sp: SessionPartition, request: FetchRequest, context: FetchContext, follower: bool
    ) -> Partition:
        """The partition ``sp`` reads, if this fetch may read it (else its ApiError). On a
        cluster with a rack-aware replica selector, a consumer that says its rack may read
        a follower's copy (KIP-392): up to that replica's high watermark, as from a leader.
        (Elsewhere a follower answers NOT_LEADER_OR_FOLLOWER: a consumer with a rack and
        stale metadata is sent to refresh it, not kept on a copy that may lag.)"""
        if (
            sp.topic_id != ZERO_TOPIC_ID or sp.topic.startswith(UNKNOWN_ID_PREFIX)
        ) and self.metadata.fetchable.get(sp.topic_id) != sp.topic:
            # an id this broker does not know (yet; the zero one: never), or a fetch
            # parked without a session (nothing renames it) while its topic was deleted
            # or made again: the topic read by that name would not be the one asked for
            raise UnknownTopicIdError(
                f"topic id {format_topic_id(sp.topic_id)} names no topic to read on broker "
                f"{self.broker_id} (not known here yet, or deleted): refresh metadata and retry"
            )
        if not context.readable(sp.topic):
            raise topic_not_authorized(sp.topic, Operation.READ)
        if request.rack_id and not follower and self.rack_aware_reads:
            partition = self._hosted_partition(sp.topic, sp.index)
        else:
            partition = self._leader_partition(sp.topic, sp.index)
        _check_epoch(partition, sp.current_leader_epoch)
        if follower and request.replica_id not in partition.followers:
            # only a replica reads past the high watermark (Kafka refuses the same way):
            # anyone else would see records not yet committed
            raise NotLeaderOrFollowerError(
                f"broker {request.replica_id} is not a replica of {partition.name}"
            )
        return partition

    def _topics_renamed(self, names: Mapping[bytes, str]) -> None:
        """Topic ids named otherwise now (see MetadataCache.renamed): the fetch sessions
        holding them follow, and a parked fetch of one is answered at once."""
        parked = self.fetch_sessions.rename(names)
        if not parked:
            return
        if not self._woken:
            asyncio.get_running_loop().call_soon(self._complete_woken)
        for session in parked:
            assert isinstance(session.parked, _DelayedFetch)
            session.parked.answer_now = True
            self._woken[session.parked] = None

    def _wake(
        self,
        tp: TopicPartition,
        *,
        followers: bool = True,
        consumers: bool = True,
        answer_followers: bool = False,
    ) -> None:
        """Something changed for ``tp`` (data, high watermark, role): the fetches parked on
        it try again once the request that changed it is done (Kafka's ActionQueue).

        Not inside the append: a produce to P partitions would re-read every parked fetch
        after each of them (P x P reads, and a follower answered one partition at a time).
        ``answer_followers``: the followers' are answered even with no records (a log start
        that moved). The woken fetches are tried together, once each: by :meth:`produce` and
        :meth:`fetch` when their appends or high-watermark moves are all done (see there),
        else (a role change, a timer) in the loop's next pass.

        Only those the change can answer are woken (every session holding ``tp`` still
        looks at it on its next read): records below a high watermark that did not move
        (``consumers`` False) are none a consumer may read yet, and a high watermark that
        moved alone (``followers`` False) is no record for a follower, which waits for
        records and hears of it in its next answer (as Kafka's followers do). Woken, each
        would read and park again: with RF=3 and acks=all, two reads of the five each
        produce caused.
        """
        if consumers:
            for listener in self._readable_listeners:
                listener(tp)
        waiters = self._fetch_waiters.get(tp)
        parked = self.fetch_sessions.mark(tp)  # sessions look at tp on their next read
        if not (followers and consumers):
            if waiters:
                waiters = {d: None for d in waiters if (followers if d.follower else consumers)}
            parked = [s for s in parked if (followers if s.follower else consumers)]
        if waiters or parked:
            if not self._woken:
                asyncio.get_running_loop().call_soon(self._complete_woken)
            if waiters:
                for delayed in waiters:
                    delayed.woke.add(tp)
                    delayed.answer_now |= answer_followers and delayed.follower
                self._woken.update(dict.fromkeys(waiters))
            for session in parked:
                assert isinstance(session.parked, _DelayedFetch)
                session.parked.answer_now |= answer_followers and session.parked.follower
                self._woken[session.parked] = None

    def _complete_woken(self, limit: int | None = None) -> None:
        """Try the woken fetches: all of them, or ``limit`` (followers first) with the rest
        left to the loop pass :meth:`_wake` scheduled."""
        if not self._woken:
            return  # done already by the request that woke them
        if limit is None or len(self._woken) <= limit:
            woken, self._woken = list(self._woken), {}
        else:
            ordered = [d for d in self._woken if d.follower]
            ordered += [d for d in self._woken if not d.follower]
            woken, self._woken = ordered[:limit], dict.fromkeys(ordered[limit:])
        for delayed in woken:
            try:
                self._try_complete(delayed)  # a no-op for one completed meanwhile
            except Exception:  # never into the produce or fetch that woke it
                self._log.exception("fetch.completion_failed")

    # --- the ISR ------------------------------------------------------------------------

    def shrink_isrs(self) -> None:
        """Drop followers that lag more than ``replica.lag.time.max.ms`` (run periodically)."""
        now = _now_ms()
        for partition in list(self.partitions.values()):
            if not partition.is_leader:
                continue
            late = partition.out_of_sync(now, self.replica_lag_time_max_ms)
            if partition.joining and not late:
                # an earlier write's outcome is unknown: writing the ISR again settles it
                self._change_isr(partition, list(partition.isr))
            if late:
                self._log.info(
                    "partition.followers_lagging",
                    topic=partition.topic,
                    partition=partition.index,
                    replicas=late,
                    max_lag_ms=self.replica_lag_time_max_ms,
                )
                self._change_isr(partition, [r for r in partition.isr if r not in late])

    def _change_isr(self, partition: Partition, isr: list[int]) -> None:
        if self._isr is None or partition.isr_write_pending:
            return  # the next fetch or shrink check tries again
        if partition.isr_fenced_epoch == partition.leader_epoch:
            return  # deposed, not told yet: wait for the LeaderAndIsr
        partition.isr_write_pending = True
        grew = len(isr) > len(partition.isr)
        # joiners count for the high watermark from now on: the write may land unseen
        partition.joining |= set(isr) - set(partition.isr)
        updater = self._isr
        epoch = partition.leader_epoch

        async def write() -> None:
            settled = False  # also when cancelled (shutdown): the outcome is unknown
            try:
                written = await updater.write(partition, isr)
            except Exception as exc:  # an ambiguous outcome: keep counting the joiners
                self._log.warning("partition.isr_write_failed", error=repr(exc))
            else:
                settled = True
                if written:
                    (self.isr_expands if grew else self.isr_shrinks).inc()
            finally:
                partition.isr_write_pending = False
                fenced = partition.isr_fenced_epoch == epoch
                if settled and partition.leader_epoch == epoch and not fenced:
                    # ZooKeeper's ISR is known again (written, or re-read on a conflict)
                    partition.joining.clear()
                    tp = TopicPartition(partition.topic, partition.index)
                    if partition.maybe_advance_high_watermark():  # a smaller ISR may allow it
                        self._wake(tp, followers=False)
                    self._complete_deletes(tp, partition)  # one left behind may be out now

        task = asyncio.get_running_loop().create_task(write())
        self._isr_tasks.add(task)
        task.add_done_callback(self._isr_tasks.discard)

    # --- DeleteRecords ------------------------------------------------------------------

    async def delete_records(self, request: DeleteRecordsRequest) -> DeleteRecordsResponse:
        """Move each partition's log start offset up to the offset given (-1: the high
        watermark), as Kafka's DeleteRecords: records below it are no longer read, and
        the segments wholly below it go at the next retention pass. Answered per
        partition with the low watermark once every follower in sync or on a live broker
        has moved its own log start that far (their parked fetches are answered with the
        new start at once, and their next fetch says theirs), or REQUEST_TIMED_OUT at
        ``timeout_ms``."""
        waits: list[tuple[Partition, int, DeleteRecordsPartitionResult]] = []
        topics = []
        for topic in request.topics:
            results = []
            deletable = self._acl.allowed(Operation.DELETE, ResourceType.TOPIC, topic.name)
            for p in topic.partitions:
                result = DeleteRecordsPartitionResult(partition_index=p.partition_index)
                results.append(result)
                try:
                    if not deletable:
                        raise topic_not_authorized(topic.name, Operation.DELETE)
                    partition = self._leader_partition(topic.name, p.partition_index)
                    waits.append((partition, _delete_below(partition, p.offset), result))
                    self._log.info(
                        "partition.records_deleted",
                        topic=topic.name,
                        partition=p.partition_index,
                        below=waits[-1][1],
                    )
                except ApiError as exc:
                    result.error_code, result.error_message = exc.code, exc.message
            topics.append(DeleteRecordsTopicResult(name=topic.name, partitions=results))
        if waits:
            for partition, _, _ in waits:
                tp = TopicPartition(partition.topic, partition.index)
                self._wake(tp, consumers=False, answer_followers=True)
            try:
                await self.logs.checkpoint_async()  # the new log starts outlive a crash
            except OSError as exc:
                self._log.error("replica.checkpoint_failed", error=str(exc))
                for _, _, result in waits:
                    result.error_code = KafkaStorageError.code
                    result.error_message = f"the new log start could not be written: {exc}"
                return DeleteRecordsResponse(topics=topics)
            await self._await_low_watermarks(waits, max(request.timeout_ms, 0) / 1000)
        return DeleteRecordsResponse(topics=topics)

    async def _await_low_watermarks(
        self, waits: list[tuple[Partition, int, DeleteRecordsPartitionResult]], timeout_s: float
    ) -> None:
        loop = asyncio.get_running_loop()
        pending: list[tuple[TopicPartition, asyncio.Future[int]]] = []
        for partition, offset, _ in waits:
            tp = TopicPartition(partition.topic, partition.index)
            future: asyncio.Future[int] = loop.create_future()
            pending.append((tp, future))
            if self.partitions.get(tp) is not partition or not partition.is_leader:
                # lost during the checkpoint's await: its followers are no longer known here
                future.set_exception(
                    NotLeaderOrFollowerError(f"{partition.name} is no longer led here; retry")
                )
                continue
            self._deletes.setdefault(tp, {})[future] = offset
            self._complete_deletes(tp, partition)  # in sync already (a leader alone)
        try:
            futures = [f for _, f in pending]
            if timeout_s > 0 and not all(f.done() for f in futures):
                await asyncio.wait(futures, timeout=timeout_s)
        finally:
            for tp, future in pending:
                waiting = self._deletes.get(tp)
                if waiting is not None:
                    waiting.pop(future, None)
                    if not waiting:
                        del self._deletes[tp]
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved, even if we were cancelled meanwhile
        for (partition, offset, result), (_, future) in zip(waits, pending, strict=True):
            if not future.done():
                future.cancel()
                low = partition.low_watermark(self.metadata.brokers)
                result.low_watermark = low
                if low >= offset and partition.is_leader:
                    continue  # reached as the wait ended (nothing told us: an ISR change)
                result.error_code = RequestTimedOutError.code
                result.error_message = (
                    f"{partition.name}: a replica's log start is at {low}, not yet {offset} "
                    "(it has not fetched since); retry to wait longer"
                )
            elif (error := future.exception()) is not None:
                assert isinstance(error, ApiError)
                result.error_code, result.error_message = error.code, error.message
            else:
                result.low_watermark = future.result()

    def _complete_deletes(self, tp: TopicPartition, partition: Partition) -> None:
        waiting = self._deletes.get(tp)
        if not waiting:
            return
        low = partition.low_watermark(self.metadata.brokers)
        for future, offset in list(waiting.items()):
            if low >= offset:
                del waiting[future]
                if not future.done():
                    future.set_result(low)

    def _fail_deletes(self, tp: TopicPartition, why: str) -> None:
        for future in self._deletes.pop(tp, {}):
            if not future.done():
                future.set_exception(NotLeaderOrFollowerError(f"{why}; retry at its new leader"))

    # --- offsets ------------------------------------------------------------------------

    async def alter_replica_log_dirs(
        self, request: AlterReplicaLogDirsRequest
    ) -> AlterReplicaLogDirsResponse:
        """AlterReplicaLogDirs: move each partition's log to the log dir named (Alter on
        the cluster, as Kafka's). Answered once each move has begun (its copy made), not
        when it is done: DescribeLogDirs shows the copy (``is_future_key``) and how far
        it is behind until it is swapped in."""
        self._acl.check_cluster(Operation.ALTER, "move replicas between log directories")
        results: dict[str, list[AlterReplicaLogDirPartitionResult]] = {}
        offline = self.logs.offline_dirs()
        for directory in request.dirs:
            for topic in directory.topics:
                for index in topic.partitions:
                    tp = TopicPartition(topic.name, index)
                    error = await self.moves.move(tp, directory.path, offline)
                    results.setdefault(topic.name, []).append(
                        AlterReplicaLogDirPartitionResult(
                            partition_index=index, error_code=0 if error is None else error.code
                        )
                    )
                    if error is not None:
                        self._log.info(
                            "log_move.refused",
                            topic=topic.name,
                            partition=index,
                            dir=directory.path,
                            error=str(error),
                        )
        return AlterReplicaLogDirsResponse(
            results=[
                AlterReplicaLogDirTopicResult(topic_name=name, partitions=parts)
                for name, parts in results.items()
            ]
        )

    async def describe_log_dirs(self, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse:
        """DescribeLogDirs: each data directory, the partitions in it with their size and
        how far each log end is behind the high watermark, and the directory's file
        system (size, free). Sizes come from the segments in memory; only the file
        systems are asked, in a worker thread (a network mount may be slow)."""
        self._acl.check_cluster(Operation.DESCRIBE, "describe log directories")
        wanted = (
            None
            if request.topics is None
            else {(t.topic, p) for t in request.topics for p in t.partitions}
        )
        by_dir: dict[str, dict[str, list[DescribeLogDirsPartition]]] = {
            str(d): {} for d in self.logs.dirs
        }
        failed: set[str] = set()  # a directory with a log taken offline by an I/O error
        for tp, log in self.logs:
            if log.offline:
                failed.add(str(log.dir.parent))
            if wanted is not None and (tp.topic, tp.partition) not in wanted:
                continue
            partition = self.partitions.get(tp)
            lag = (
                -1  # Kafka's: unknown for a log offline or not hosted
                if partition is None or log.offline
                else max(partition.high_watermark - log.log_end_offset, 0)
            )
            by_dir.setdefault(str(log.dir.parent), {}).setdefault(tp.topic, []).append(
                DescribeLogDirsPartition(
                    partition_index=tp.partition, partition_size=log.size_bytes, offset_lag=lag
                )
            )
        for tp, future in list(self.logs.futures.items()):  # moves under way: their copies
            if future.offline:
                failed.add(str(future.dir.parent))
            if wanted is not None and (tp.topic, tp.partition) not in wanted:
                continue
            by_dir.setdefault(str(future.dir.parent), {}).setdefault(tp.topic, []).append(
                DescribeLogDirsPartition(
                    partition_index=tp.partition,
                    partition_size=future.size_bytes,
                    offset_lag=self.moves.lag(tp),  # (Kafka's: behind the log, for a copy)
                    is_future_key=True,
                )
            )
        usage = await asyncio.to_thread(_disk_usage, list(by_dir))
        results = []
        for directory, topics in by_dir.items():
            space = usage[directory]
            results.append(
                DescribeLogDirsResult(
                    error_code=0
                    if space is not None and directory not in failed
                    else KafkaStorageError.code,
                    log_dir=directory,
                    topics=[
                        DescribeLogDirsTopic(
                            name=name, partitions=sorted(parts, key=lambda p: p.partition_index)
                        )
                        for name, parts in sorted(topics.items())
                    ],
                    total_bytes=space[0] if space is not None else -1,
                    usable_bytes=space[1] if space is not None else -1,
                )
            )
        return DescribeLogDirsResponse(results=results)

    def list_offsets(self, request: ListOffsetsRequest) -> ListOffsetsResponse:
        follower = request.replica_id >= 0
        topics = []
        for topic in request.topics:
            results = []
            described = self._acl.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic.name)
            for p in topic.partitions:
                try:
                    if not described:
                        raise topic_not_authorized(topic.name, Operation.DESCRIBE)
                    partition = self._leader_partition(topic.name, p.partition_index)
                    _check_epoch(partition, p.current_leader_epoch)
                    if not follower and not partition.high_watermark_known:
                        raise OffsetNotAvailableError(
                            f"{partition.name} has a new leader whose high watermark has not "
                            "caught up yet; retry shortly"
                        )
                    if p.timestamp == LATEST_TIMESTAMP:
                        end = (
                            partition.log.log_end_offset
                            if follower
                            else _readable_end(partition, request.isolation_level)
                        )
                        found: tuple[int, int] | None = (-1, end)
                    else:
                        found = partition.log.list_offset(p.timestamp)
                        if (
                            found is not None
                            and p.timestamp not in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP)
                            and not follower
                            and found[1] >= _readable_end(partition, request.isolation_level)
                        ):
                            found = None  # a record consumers cannot read yet (Kafka's)
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
                        # no offset, no epoch (Kafka's: a latest tiered offset, none here)
                        leader_epoch=partition.leader_epoch if found is not None else -1,
                    )
                )
            topics.append(ListOffsetsTopicResponse(name=topic.name, partitions=results))
        return ListOffsetsResponse(topics=topics)

    def offsets_for_leader_epoch(
        self, request: OffsetForLeaderEpochRequest
    ) -> OffsetForLeaderEpochResponse:
        """Where each asked-about epoch ended in this leader's log (KIP-101)."""
        follower = request.replica_id >= 0
        if follower:
            self._acl.check_cluster(Operation.CLUSTER_ACTION, "ask as a follower")
        topics = []
        for topic in request.topics:
            results = []
            described = follower or self._acl.allowed(
                Operation.DESCRIBE, ResourceType.TOPIC, topic.topic
            )
            for p in topic.partitions:
                try:
                    if not described:
                        raise topic_not_authorized(topic.topic, Operation.DESCRIBE)
                    partition = self._leader_partition(topic.topic, p.partition)
                    _check_epoch(partition, p.current_leader_epoch)
                except ApiError as exc:
                    results.append(EpochEndOffset(partition=p.partition, error_code=exc.code))
                    continue
                epoch, end = partition.log.end_offset_for_epoch(p.leader_epoch)
                results.append(
                    EpochEndOffset(partition=p.partition, leader_epoch=epoch, end_offset=end)
                )
            topics.append(OffsetForLeaderTopicResult(topic=topic.topic, partitions=results))
        return OffsetForLeaderEpochResponse(topics=topics)

    def metrics(self) -> list[Sample]:
        """Gauges over the hosted partitions, and the counters."""
        leaders = [p for p in self.partitions.values() if p.is_leader]
        under = [p for p in leaders if len(p.isr) < len(p.replicas)]
        below_min = [p for p in leaders if len(p.isr) < p.log.config.min_insync_replicas]
        samples: list[Sample] = [
            (_PARTITIONS, {"role": "leader"}, len(leaders)),
            (_PARTITIONS, {"role": "follower"}, len(self.partitions) - len(leaders)),
            (_UNDER_REPLICATED, {}, len(under)),
            (_UNDER_MIN_ISR, {}, len(below_min)),
            (_PARKED_FETCHES, {}, self.parked_fetches),
            (_DELAYED_PRODUCES, {}, len(self.delayed_produces)),
            (_FETCH_SESSIONS, {}, len(self.fetch_sessions.sessions)),
            (_THROTTLED_RATE, {"side": "leader"}, self.leader_quota.per_second()),
            (_THROTTLED_RATE, {"side": "follower"}, self.follower_quota.per_second()),
            (_MOVES_UNDER_WAY, {}, len(self.logs.futures)),
            (_MOVE_MAX_LAG, {}, self.moves.max_lag()),
        ]
        for tp, p in sorted(self.partitions.items()):
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            samples += [
                (_LOG_SIZE, labels, p.log.size_bytes),
                (_LOG_END, labels, p.log.log_end_offset),
                (_HIGH_WATERMARK, labels, p.high_watermark),
            ]
        counters = (
            self.isr_shrinks,
            self.isr_expands,
            self.bytes_in,
            self.bytes_out,
            self.produce_requests,
            self.fetch_requests,
            self.fetch_sessions.evictions,
            self.moves.moved,
        )
        samples += [(c.name, {}, c.value) for c in counters]
        return samples

    def high_watermarks(self) -> dict[TopicPartition, int]:
        """Of every log here: hosted ones as they are, others as last known."""
        known = {tp: hw for tp, hw in self.logs.high_watermarks.items() if tp in self.logs.logs}
        return {**known, **{tp: p.high_watermark for tp, p in self.partitions.items()}}

    # --- helpers ------------------------------------------------------------------------

    def _hosted_partition(self, topic: str, index: int) -> Partition:
        """The partition's replica here, leader or follower (else the leader's error)."""
        partition = self.partitions.get(TopicPartition(topic, index))
        if partition is not None and (partition.is_leader or partition.leader_id >= 0):
            return partition
        return self._leader_partition(topic, index)

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


_PARTITIONS = gauge("headwater_partitions", "Partitions hosted here, by role.")
_UNDER_REPLICATED = gauge(
    "headwater_under_replicated_partitions", "Partitions led here whose ISR lacks a replica."
)
_UNDER_MIN_ISR = gauge(
    "headwater_under_min_isr_partitions",
    "Partitions led here with fewer in-sync replicas than min.insync.replicas.",
)
_PARKED_FETCHES = gauge(
    "headwater_fetch_purgatory_size", "Fetches parked until data arrives or max wait ends."
)
_DELAYED_PRODUCES = gauge(
    "headwater_produce_purgatory_size",
    "acks=all produces waiting for the in-sync replicas (or their timeout).",
)
_FETCH_SESSIONS = gauge(
    "headwater_fetch_sessions",
    "Fetch sessions kept (KIP-227; max.incremental.fetch.session.cache.slots).",
)
_MOVES_UNDER_WAY = gauge(
    "headwater_log_dir_moves_in_progress",
    "Logs being copied to another of this broker's data directories (AlterReplicaLogDirs).",
)
_MOVE_MAX_LAG = gauge(
    "headwater_log_dir_move_max_lag",
    "The most any such copy is behind its log, in offsets (Kafka's ReplicaAlterLogDirs MaxLag).",
)
_THROTTLED_RATE = gauge(
    "headwater_replication_throttled_bytes_per_second",
    "Bytes per second of throttled replicas sent as a leader or fetched as a follower "
    "(leader/follower.replication.throttled.rate bound them).",
)
_LOG_SIZE = gauge("headwater_log_size_bytes", "Bytes in a partition's log.")
_LOG_END = gauge("headwater_log_end_offset", "A partition's log end offset.")
_HIGH_WATERMARK = gauge("headwater_high_watermark", "A partition's high watermark.")


def _as_topic_wants(config: LogConfig, records: Buffer) -> tuple[Buffer, int]:
    """The batches as the topic's ``message.timestamp.type`` and ``compression.type`` want
    them stored, and the LogAppendTime given (-1: CreateTime). With Kafka's defaults
    (CreateTime, ``producer``) nothing is touched; otherwise see
    :mod:`protocol.records.transform` (per batch; a recompression only where the codec
    differs, the one place the broker pays per byte of records)."""
    append_time_ms = -1
    if config.message_timestamp_type == "LogAppendTime":
        append_time_ms = time.time_ns() // 1_000_000
    codec = topic_codec(config.compression_type)
    if append_time_ms < 0 and codec is None:
        return records, -1
    rewritten = rewrite_for_append(
        records,
        codec=codec,
        append_time_ms=append_time_ms if append_time_ms >= 0 else None,
        level=config.compression_level,
    )
    return rewritten, append_time_ms


def preferred_replica(
    partition: Partition, rack: str, fetch_offset: int, brokers: Mapping[int, UpdateMetadataBroker]
) -> int | None:
    """Kafka's RackAwareReplicaSelector, for a consumer in ``rack`` fetching from this
    leader: the live in-sync replica in that rack that has ``fetch_offset`` and is
    furthest along (then the most recently caught up); None (the leader itself) when the
    leader is in that rack, or no replica is."""
    if not rack or not partition.is_leader:
        return None
    here = brokers.get(partition.local_broker_id)
    if here is not None and here.rack == rack:
        return None
    best: tuple[int, int, int] | None = None
    for replica, state in partition.followers.items():
        broker = brokers.get(replica)
        if broker is None or broker.rack != rack or replica not in partition.isr:
            continue  # not there, or lagging: it would hold the consumer back (Kafka's too)
        if not 0 <= state.log_start_offset <= fetch_offset <= state.log_end_offset:
            continue  # it does not have the offset asked for (yet, or any more)
        candidate = (state.log_end_offset, state.last_caught_up_ms, replica)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[2]


def _readable_end(partition: Partition, isolation_level: int) -> int:
    """Where a consumer's reads stop: the high watermark, or for read_committed the last
    stable offset (no transaction still open, or ended by a marker not yet replicated)."""
    high_watermark = partition.high_watermark
    if isolation_level == READ_COMMITTED:
        return partition.log.last_stable_offset(high_watermark)
    return high_watermark


def _diverging(partition: Partition, sp: SessionPartition) -> DivergingEpoch | None:
    """Where the leader's log parts from a fetcher's that said the epoch of its last
    record (Kafka's validateFetchOffsetAndMaybeGetDivergingEpoch), or None: the leader's
    largest epoch at or below it, when that is older, or ends before the fetch offset."""
    last = sp.last_fetched_epoch
    if last < 0:
        return None
    epoch, end = partition.log.end_offset_for_epoch(last)
    if epoch < last or end < sp.fetch_offset:
        return DivergingEpoch(epoch=epoch, end_offset=end)
    return None


def _check_epoch(partition: Partition, current_leader_epoch: int) -> None:
    """Fence a request made for another leader epoch (-1: the client does not say)."""
    if current_leader_epoch < 0 or current_leader_epoch == partition.leader_epoch:
        return
    if current_leader_epoch < partition.leader_epoch:
        raise FencedLeaderEpochError(
            f"{partition.name}: epoch {current_leader_epoch} is older than the leader's "
            f"{partition.leader_epoch}; refresh metadata"
        )
    raise UnknownLeaderEpochError(
        f"{partition.name}: epoch {current_leader_epoch} is newer than this broker knows "
        f"({partition.leader_epoch}); retry shortly"
    )


def _delete_below(partition: Partition, offset: int) -> int:
    """DeleteRecords at the leader: the log start offset moved up to ``offset`` (-1: the
    high watermark, never past it); the offset the replicas must reach."""
    log = partition.log
    if not log.config.delete:
        raise PolicyViolationError(
            f"{partition.name} has cleanup.policy={log.config.cleanup_policy}: its records "
            "are removed by compaction, not DeleteRecords"
        )
    high_watermark = partition.high_watermark
    wanted = high_watermark if offset == -1 else offset
    if not 0 <= wanted <= high_watermark:
        raise OffsetOutOfRangeError(
            f"cannot delete {partition.name}'s records below offset {offset}: give an offset "
            f"from 0 to its high watermark {high_watermark} (-1 for the high watermark)"
        )
    log.advance_log_start_offset(wanted)
    return wanted


def _write_topic_ids(logs: list[tuple[Log, bytes]]) -> None:
    """Write each log's ``partition.metadata`` (blocking). One that fails takes its log
    offline (the log manager's listeners hear of it, and the controller hands the
    partition to other replicas, KIP-112); the others are still written."""
    for log, topic_id in logs:
        with contextlib.suppress(KafkaStorageError):
            log.record_topic_id(topic_id)


def _error(tp: TopicPartition, error: type[ApiError] | None = None) -> PartitionError:
    return PartitionError(
        topic_name=tp.topic, partition_index=tp.partition, error_code=error.code if error else 0
    )


def _disk_usage(directories: list[str]) -> dict[str, tuple[int, int] | None]:
    """Each directory's file system: (total, free) bytes; None if it cannot be read."""
    out: dict[str, tuple[int, int] | None] = {}
    for directory in directories:
        try:
            usage = shutil.disk_usage(directory)
        except OSError:
            out[directory] = None
            continue
        out[directory] = (usage.total, usage.free)
    return out
