"""The group coordinator: FindCoordinator, membership (JoinGroup, SyncGroup, Heartbeat,
LeaveGroup), offsets (OffsetCommit, OffsetFetch) and administration (ListGroups,
DescribeGroups, DeleteGroups).

A group lives in partition ``abs(java_hash(group)) % offsets.topic.num.partitions`` of
``__consumer_offsets`` (created, replicated, on the first FindCoordinator); the leader of
that partition is the group's coordinator. When this broker becomes leader of an offsets
partition it loads it (reads the log, applies every record in order) before answering
for its groups (COORDINATOR_LOAD_IN_PROGRESS meanwhile, retriable; a load that fails is
retried with a backoff while this broker leads, NOT_COORDINATOR in between); when it
stops leading one, it forgets it (NOT_COORDINATOR, retriable: the client finds the new
one, keeping its member id). A new leader epoch for a partition this broker already
leads (a follower left the ISR) changes nothing here, as in Kafka. So a coordinator
failover loses nothing that was committed: commits are appended with acks=all and
answered only once every in-sync replica has them.

Membership (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) runs :class:`Group`'s state
machine; a commit must come from a member of the current generation, or from outside
membership (generation -1, no member id: Kafka's manual assignment) while the group has
no members. When a generation settles (the leader's SyncGroup), and when a group empties,
its metadata (members, their subscriptions and assignments) is appended to the same
partition, as Kafka's storeGroup does; every member's SyncGroup is answered once that is
replicated, and a failed write answers them all with a retriable error
(COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR) and rebalances the group, so no member
consumes by a generation the log may not have. A coordinator that loads the partition
restores each group from its last record: a Stable group's members keep their generation,
and their heartbeats, sent to the new coordinator, go on without a rebalance (sessions
restart at load time). A failover that beats the write costs a rebalance: the members
are unknown there, or at the previous generation, and join again.

Administration, as Kafka's GroupCoordinator does it: each broker lists the groups it
coordinates (the client asks every broker), a group with only committed offsets counts as
Empty, and deleting an empty group writes a tombstone for each of its offsets and for its
metadata (acks=all, like a commit), so a coordinator that loads the partition later does
not bring them back.
A group being deleted is Dead: requests that still find it are told to look again.

A member's ``client_id`` comes in its JoinGroup (our request header has none, unlike
Kafka's) and its ``client_host`` is the address its JoinGroup came from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Collection, Mapping
from typing import TypeVar

import structlog

from broker.admin import TopicAdmin
from broker.authorizer import (
    Authorizer,
    group_not_authorized,
    topic_not_authorized,
    transactional_id_not_authorized,
)
from broker.config import BrokerConfig
from broker.coordinator import migration
from broker.coordinator.consumer_group import (
    LEAVE,
    STATIC_LEAVE,
    Assignment,
    ConsumerGroup,
    TopicInfo,
    new_member_id,
)
from broker.coordinator.doubt import Doubt
from broker.coordinator.expiry import expired_offsets
from broker.coordinator.group import DEAD, EMPTY, STABLE, Group, Member, Stored
from broker.coordinator.offsets import OffsetStore
from broker.coordinator.placement import coordinator_of, replication_factor
from broker.coordinator.share_groups import ShareGroups
from broker.locks import KeyedLocks
from broker.log import Log
from broker.log.manager import TopicPartition
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from broker.replica.partition import Partition
from broker.server import PEER_HOST
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    ConsumerGroupAssignment,
    ConsumerGroupDescribed,
    ConsumerGroupDescribedMember,
    ConsumerGroupDescribeRequest,
    ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupTopicPartitions,
    CoordinatorType,
    CreatableTopic,
    CreatableTopicConfig,
    DeletableGroupResult,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribedAssignment,
    DescribedGroup,
    DescribedGroupMember,
    DescribedTopicPartitions,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    JoinGroupResponseMember,
    LeaveGroupMemberResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    ListedGroup,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetDeleteResponsePartition,
    OffsetDeleteResponseTopic,
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchResponseGroup,
    OffsetFetchResponsePartition,
    OffsetFetchResponseTopic,
    ProducePartitionResponse,
    SyncGroupRequest,
    SyncGroupResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
)
from protocol.consumer_group_log import (
    ConsumerGroupImage,
    encode_consumer_group_key,
    encode_consumer_group_value,
)
from protocol.consumer_protocol import Assignment as ProtocolAssignment
from protocol.consumer_protocol import (
    ProtocolError,
    Subscription,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from protocol.errors import (
    ApiError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    GroupAuthorizationFailedError,
    GroupIdNotFoundError,
    GroupSubscribedToTopicError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidCommitOffsetSizeError,
    InvalidGroupIdError,
    InvalidRequestError,
    InvalidSessionTimeoutError,
    KafkaStorageError,
    MessageTooLargeError,
    NonEmptyGroupError,
    NotCoordinatorError,
    NotLeaderOrFollowerError,
    OffsetMetadataTooLargeError,
    RebalanceInProgressError,
    RecordListTooLargeError,
    StaleMemberEpochError,
    TopicAuthorizationFailedError,
    UnknownMemberIdError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
    UnstableOffsetCommitError,
    error_for_code,
)
from protocol.group_log import (
    OFFSETS_TOPIC,
    BadRecordError,
    GroupMetadata,
    MemberMetadata,
    OffsetAndMetadata,
    encode_group_key,
    encode_group_value,
    encode_key,
    partition_for,
)
from protocol.records import decode_batches, encode_batch
from protocol.records.control import is_commit

__all__ = ["GroupCoordinator"]

_COMMIT_TIMEOUT_MS = 5_000  # Kafka's offsets.commit.timeout.ms
_MAX_METADATA_BYTES = 4_096  # Kafka's offset.metadata.max.bytes
_LOAD_READ_BYTES = 1 << 20
_TICK_S = 0.1
_REASON_CHARS = 255
_EXPIRY_BATCH_BYTES = 512 * 1024
"""A batch of expiry tombstones stays under this: well within max.message.bytes (1 MiB)."""
_TOMBSTONE_OVERHEAD = 24  # a record's bytes in a batch beside its key (varints, attributes)
_LOAD_RETRY_S = 0.5  # the first retry of a failed load; doubled up to _LOAD_RETRY_MAX_S
_LOAD_RETRY_MAX_S = 30.0
T = TypeVar("T")


class GroupCoordinator:
    def __init__(
        self,
        broker_id: int,
        config: BrokerConfig,
        metadata: MetadataCache,
        replicas: ReplicaManager,
        admin: TopicAdmin,
        *,
        authorizer: Authorizer | None = None,
        doubt: Doubt | None = None,
    ) -> None:
        """``doubt``: whether this broker's view of who coordinates what is current;
        every answer from a loaded partition waits for it (COORDINATOR_NOT_AVAILABLE
        meanwhile), and the groups' timers stand still in the meantime."""
        self.broker_id = broker_id
        self._doubt = doubt or Doubt(lambda: True, broker_id=broker_id)
        self._acl = authorizer or Authorizer()
        self._config = config
        self._metadata = metadata
        self._replicas = replicas
        self._admin = admin
        self.num_partitions = int(config["offsets.topic.num.partitions"])
        self._forgetting: set[asyncio.Task[None]] = set()  # deleted topics' offsets going
        self.stores: dict[int, OffsetStore] = {}
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._load_retries: dict[int, asyncio.TimerHandle] = {}  # failed loads, waiting
        self.groups: dict[str, Group | ConsumerGroup] = {}
        """Classic groups (JoinGroup, SyncGroup) and groups of the new consumer protocol
        (KIP-848, ConsumerGroupHeartbeat) under one id space, as Kafka's."""
        self._consumer_session_ms = int(config["group.consumer.session.timeout.ms"])
        self._consumer_heartbeat_ms = int(config["group.consumer.heartbeat.interval.ms"])
        self._consumer_max_size = int(config["group.consumer.max.size"])
        self._consumer_assignors = tuple(config["group.consumer.assignors"])
        self._migration = str(config["group.consumer.migration.policy"]).lower()
        self._topics_seen: tuple[object, object] | None = None
        self._serial: KeyedLocks[str] = KeyedLocks()
        """Per group of the new protocol with a change under way: its lock (a change is
        made, written and answered before the next starts) and how many want it."""
        self._chores: set[asyncio.Task[None]] = set()  # fences and topic changes, written
        self._fencing: set[str] = set()  # groups a fence task is under way for
        self._topics_dirty = False
        self._topics_task: asyncio.Task[None] | None = None
        self._topics_view: dict[str, TopicInfo] = {}
        self._group_writes: dict[str, asyncio.Task[None]] = {}  # the latest, per group
        self._txn_writes: dict[str, collections.Counter[tuple[str, int]]] = {}
        """Per group, the partitions of TxnOffsetCommits being written (not held by the
        store until their append returns): an expiry leaves them, as it leaves commits."""
        self._min_session_ms = int(config["group.min.session.timeout.ms"])
        self._max_session_ms = int(config["group.max.session.timeout.ms"])
        self._initial_delay_ms = int(config["group.initial.rebalance.delay.ms"])
        self._max_group_size = int(config["group.max.size"])
        self._ticker: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None
        self._retention_ms = int(config["offsets.retention.minutes"]) * 60_000
        self._expiry_every_s = int(config["offsets.retention.check.interval.ms"]) / 1000
        self._log = structlog.get_logger("headwater.coordinator").bind(broker_id=broker_id)
        self.share_groups = ShareGroups(
            self,
            self._doubt.clock,
            self._acl,
            enabled=bool(config["group.share.enable"]),
            session_timeout_ms=int(config["group.share.session.timeout.ms"]),
            heartbeat_interval_ms=int(config["group.share.heartbeat.interval.ms"]),
            max_size=int(config["group.share.max.size"]),
            partition_of=lambda group: partition_for(group, self.num_partitions),
            broker_id=broker_id,
            group_configs=None if admin is None else admin.group_configs.value,
        )
        """Share groups (KIP-932), in the same id space (see :mod:`.share_groups`)."""
        replicas.on_role_change(self._on_role_change)
        replicas.on_txn_marker(self._on_txn_marker)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ticker = loop.create_task(self._tick())
        self._expirer = loop.create_task(self._expire_every())

    def _check_group(self, operation: Operation, group_id: str) -> None:
        if not self._acl.allowed(operation, ResourceType.GROUP, group_id):
            raise group_not_authorized(group_id, operation)

    async def stop(self) -> None:
        for task in (self._ticker, self._expirer, self._topics_task):
            if task is not None:
                task.cancel()
        for task in [*self._forgetting, *self._chores]:
            task.cancel()

    def topics_deleted(self, topics: Collection[str]) -> None:
        """The controller finished deleting ``topics``: every group this broker
        coordinates loses its offsets of them (Kafka's handleDeletedPartitions), by
        tombstones appended in the background, so a topic made again under the name does
        not start its groups at the old topic's offsets (past its end, or inside it)."""
        gone = set(topics)
        for index, store in list(self.stores.items()):
            keys = [
                encode_key(group, t, p)
                for group, offsets in store.groups.items()
                for t, p in offsets
                if t in gone
            ]
            # an open transaction's offsets of them go too (Kafka's removeOffsets), now,
            # and in the log by the same tombstones: its COMMIT marker must not bring
            # them back, here or in a load of the partition
            applied = set(keys)
            keys += [k for k in store.forget_held(gone) if k not in applied]
            if keys:
                self._forget_later(index, store, [(k, None) for k in keys])

    def _forget_later(
        self, index: int, store: OffsetStore, records: list[tuple[bytes, bytes | None]]
    ) -> None:
        """Tombstones ``records`` appended in the background, applied once written."""
        task = asyncio.get_running_loop().create_task(self._forget(index, store, records))
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _forget(
        self, index: int, store: OffsetStore, records: list[tuple[bytes, bytes | None]]
    ) -> None:
        result = await self._append(index, records)
        if result.base_offset < 0:  # not ours any more, or failing: the next leader's log
            self._log.warning(  # still has them (as Kafka's, a deletion cleans up once)
                "coordinator.deleted_topic_offsets_kept",
                offsets_partition=index,
                error=result.error_message or result.error_code,
            )
            return
        self._applied(index, store, records, result.base_offset)
        self._log.info(
            "coordinator.deleted_topic_offsets_removed", offsets_partition=index, count=len(records)
        )

    async def _expire_every(self) -> None:
        """Every ``offsets.retention.check.interval.ms``: :meth:`expire_offsets`."""
        while True:
            await asyncio.sleep(self._expiry_every_s)
            try:
                await self.expire_offsets()
            except Exception:  # a bug: logged, and the next round tries again
                self._log.exception("coordinator.offsets_expiry_failed")

    async def expire_offsets(self) -> int:
        """Kafka's cleanupGroupMetadata: in each offsets partition this broker holds, the
        expired offsets (see :mod:`broker.coordinator.expiry`) get tombstones, and so does
        each empty group left without any offset (it is Dead then: gone from ListGroups).
        Returns how many records were written. None while in doubt (asked before each
        group's, in :meth:`_expire_in`)."""
        written = 0
        for index, store in list(self.stores.items()):
            written += await self._expire_in(index, store, int(time.time() * 1000))
        return written

    async def _expire_in(self, index: int, store: OffsetStore, now_ms: int) -> int:
        """One offsets partition's expiry, a group at a time (as Kafka's, a batch per
        group: one for a whole partition of stale groups could be over
        ``max.message.bytes``, and refused every round)."""
        names = set(store.groups) | {
            g for g in self.groups if partition_for(g, self.num_partitions) == index
        }
        written, removed = 0, []
        for group_id in sorted(names):
            if self.stores.get(index) is not store or not self._doubt.known():
                break  # no longer ours (or maybe not): the next leader expires them
            count, gone = await self._expire_group(index, store, group_id, now_ms)
            written += count
            if gone:
                removed.append(group_id)
        if written:
            self._log.info(
                "coordinator.offsets_expired",
                offsets_partition=index,
                records=written,
                groups_removed=removed,
            )
        return written

    async def _expire_group(
        self, index: int, store: OffsetStore, group_id: str, now_ms: int
    ) -> tuple[int, bool]:
        """The group's expired offsets get tombstones, in batches of at most
        :data:`_EXPIRY_BATCH_BYTES`, each worked out right before it is appended (a commit
        that lands meanwhile is never followed by a tombstone of its partition), and the
        group one if it is empty with none left. Returns (records written, whether the
        group went)."""
        written = 0
        while self.stores.get(index) is store:
            group, gone, emptied = self._expired_of(store, group_id, now_ms)
            chunk = _chunk(group_id, gone)
            dead = group if emptied and len(chunk) == len(gone) else None
            if not chunk and dead is None:
                break
            records: list[tuple[bytes, bytes | None]] = [
                (encode_key(group_id, t, p), None) for t, p in chunk
            ]
            if dead is not None:
                dead.delete()  # joins and commits meanwhile are told to find it again
                records += store.group_tombstones(group_id)
            result = await self._append(index, records)
            if result.base_offset < 0:  # not written: the next round tries again
                if dead is not None:
                    dead.undelete()
                self._log.warning(
                    "coordinator.offsets_expiry_not_written",
                    group=group_id,
                    error=result.error_message or result.error_code,
                )
                break
            if dead is not None and self.groups.get(group_id) is dead:
                del self.groups[group_id]
            self._applied(index, store, records, result.base_offset)
            written += len(records)
            if dead is not None:
                return written, True
            if len(chunk) == len(gone):
                break
        return written, False

    def _expired_of(
        self, store: OffsetStore, group_id: str, now_ms: int
    ) -> tuple[Group | ConsumerGroup | None, list[tuple[str, int]], bool]:
        """The group, its expired offsets, and whether it goes too (empty, and none left)."""
        group = self.groups.get(group_id)
        writing = group_id in self._group_writes or group_id in self._serial
        if group is not None and (group.state == DEAD or writing):
            return group, [], False  # being deleted, or its metadata being written
        offsets = store.groups.get(group_id, {})
        held = store.pending_partitions(group_id) | set(self._txn_writes.get(group_id, ()))
        if group is not None:
            held |= set(group.pending_commits)
        gone = expired_offsets(
            group,
            offsets,
            now_ms=now_ms,
            retention_ms=self._retention_ms,
            subscribed=_subscribed_topics,
            held=held,
        )
        none_left = len(gone) == len(offsets) and not held
        return group, gone, group is not None and group.state == EMPTY and none_left

    async def _tick(self) -> None:
        """Session timeouts and rebalance deadlines: a sweep over the groups we hold. None
        while in doubt: the members' requests are refused, and their clock stands still."""
        while True:
            await asyncio.sleep(_TICK_S)
            if not self._doubt.known():
                continue
            now = self._doubt.clock()
            try:
                self.share_groups.tick()
            except Exception:  # a bug: logged, and the other groups' timers go on
                self._log.exception("coordinator.share_tick_failed")
            for group in list(self.groups.values()):
                if isinstance(group, ConsumerGroup):
                    if group.due(now) and group.group_id not in self._fencing:
                        self._fencing.add(group.group_id)
                        self._chore(self._fence_late(group.group_id))
                    continue
                try:
                    was, generation, started = group.state, group.generation_id, group.rebalances
                    group.tick()
                    self._note_rebalance(
                        group, was, generation, started, "a member's session ran out"
                    )
                except Exception:
                    self._log.exception("coordinator.tick_failed", group=group.group_id)

    def _chore(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _fence_late(self, group_id: str) -> None:
        """Members of a group of the new protocol whose session or rebalance timeout ran
        out are fenced, and that written (as any change of the group: see
        :meth:`_write_consumer_group`)."""
        try:
            async with self._serialized(group_id):
                group = self.groups.get(group_id)
                if not isinstance(group, ConsumerGroup) or not self._doubt.known():
                    return
                late = group.late(self._doubt.clock())
                if self._downgradable(group, late):
                    await self._downgrade(group, late, "its last members of the new protocol went")
                    return
                for member in group.tick(self._doubt.clock()):
                    self._log.info(
                        "group.member_fenced",
                        group=group_id,
                        member=member,
                        epoch=group.epoch,
                        cause="its session or its rebalance timeout ran out",
                    )
                await self._write_consumer_group(group)
        except ApiError as exc:  # undone: the next tick fences them again
            self._log.warning("coordinator.fence_not_written", group=group_id, error=exc.name)
        except Exception:
            self._log.exception("coordinator.tick_failed", group=group_id)
        finally:
            self._fencing.discard(group_id)

    def _note_rebalance(
        self, group: Group, was: str, generation: int, started: int, cause: str, **more: object
    ) -> None:
        """Log a rebalance the call just made started (Kafka's "Preparing to rebalance
        group"), with what started it: an operator's first question when a group stops
        consuming. A client's own words are cut to Kafka's 255 characters."""
        if group.rebalances == started:
            return
        said = {k: v for k, v in more.items() if v}
        reason = said.get("reason")
        if isinstance(reason, str) and len(reason) > _REASON_CHARS:
            said["reason"] = f"{reason[:_REASON_CHARS]}... ({len(reason)} characters)"
        self._log.info(
            "group.rebalancing",
            group=group.group_id,
            previous_state=was,
            generation=generation,
            cause=cause,
            **said,
        )

    # --- which offsets partitions are ours ----------------------------------------------

    def _on_role_change(self, tp: TopicPartition, partition: Partition | None) -> None:
        if tp.topic != OFFSETS_TOPIC:
            return
        index = tp.partition
        leading = partition is not None and partition.is_leader
        if leading and self._holds(index):
            # leader before and still (a follower left the ISR, the epoch went up): the
            # groups and their waiting members stay, as Kafka reloads only on a new leadership
            return
        self._unload(index)
        if partition is not None and leading:
            self._start_load(index, partition)

    def _holds(self, index: int) -> bool:
        """This broker leads ``index``: loaded, loading, or waiting to retry a load."""
        return index in self.stores or index in self._loading or index in self._load_retries

    def _unload(self, index: int) -> None:
        """Forget the partition (Kafka's removeGroupsForPartition). Waiting members are
        told to find the new coordinator, directly: the state machine does not run."""
        loading = self._loading.pop(index, None)
        if loading is not None:
            loading.cancel()
        retry = self._load_retries.pop(index, None)
        if retry is not None:
            retry.cancel()
        self.share_groups.unload(index)
        if self.stores.pop(index, None) is None:
            return  # never loaded here, so no group of it is either: the scan is skipped
        names = [g for g in self.groups if partition_for(g, self.num_partitions) == index]
        for name in names:
            self.groups.pop(name).unload(
                NotCoordinatorError(
                    f"broker {self.broker_id} no longer coordinates group {name!r}; "
                    "find its coordinator again"
                )
            )
        if names:
            self._log.info("coordinator.unloaded", partition=index, groups=len(names))

    def _start_load(self, index: int, partition: Partition, attempt: int = 0) -> None:
        loading = self._load_or_retry(index, partition, attempt)
        self._loading[index] = asyncio.get_running_loop().create_task(loading)

    async def _load_or_retry(self, index: int, partition: Partition, attempt: int) -> None:
        """A failed load (an unreadable log...) is logged and tried again later, while
        this broker leads: the partition is not loading meanwhile (NOT_COORDINATOR)."""
        try:
            await self._load(index, partition)
        except Exception:
            if self._loading.get(index) is not asyncio.current_task():
                return  # the leadership ended meanwhile
            del self._loading[index]
            delay = min(_LOAD_RETRY_S * 2**attempt, _LOAD_RETRY_MAX_S)
            self._log.error(
                "coordinator.load_failed",
                partition=index,
                attempt=attempt + 1,
                retry_in_s=delay,
                exc_info=attempt == 0,  # the traceback once; its repeats, one line each
            )
            self._load_retries[index] = asyncio.get_running_loop().call_later(
                delay, self._retry_load, index, partition, attempt + 1
            )

    def _retry_load(self, index: int, partition: Partition, attempt: int) -> None:
        self._load_retries.pop(index, None)
        if partition.is_leader and index not in self.stores and index not in self._loading:
            self._start_load(index, partition, attempt)

    async def _load(self, index: int, partition: Partition) -> None:
        """Read the partition from its start and apply every record, in order: in chunks
        with the loop let go between them, then, with no await, what was appended
        meanwhile (a transaction's marker written now must be read here, or its offsets
        would wait for good: its listener finds no store yet)."""
        store = OffsetStore()
        offset = partition.log.log_start_offset
        records = 0
        started = time.monotonic()
        # the partition's log is looked up for each chunk: a move between data
        # directories may swap in its copy (the same records at the same offsets)
        while offset < partition.log.log_end_offset:
            offset, records = self._read_into(store, index, partition.log, offset, records)
            await asyncio.sleep(0)  # a large partition loads without holding the loop
        while offset < partition.log.log_end_offset:
            offset, records = self._read_into(store, index, partition.log, offset, records)
        if self._loading.get(index) is not asyncio.current_task():
            return  # led no more: the role change unloaded (and cancelled) this load
        assert partition.is_leader, "a leadership that ends is unloaded first"
        self._loaded(index, store)
        self._log.info(
            "coordinator.loaded",
            partition=index,
            groups=len(
                store.groups.keys() | store.group_metadata.keys() | store.consumer_groups.keys()
            ),
            records=records,
            seconds=round(time.monotonic() - started, 3),
        )

    def _read_into(
        self, store: OffsetStore, index: int, log: Log, offset: int, records: int
    ) -> tuple[int, int]:
        """One chunk of the partition from ``offset`` applied; (the next offset, records
        applied so far)."""
        end = log.log_end_offset
        data = log.read(offset, _LOAD_READ_BYTES, max_offset=end)
        if data is None:
            return end, records
        for batch in decode_batches(data.read()):
            if batch.next_offset <= offset:
                continue
            if batch.is_control:  # a transaction's marker: its offsets count, or go
                marker = next(iter(batch), None)
                store.end_txn(
                    batch.producer_id,
                    marker is not None and is_commit(marker.key),
                    lambda exc: self._bad_record(index, exc),
                )
            elif batch.is_transactional:  # TxnOffsetCommit: held until the marker
                store.hold(batch.producer_id, ((r.key, r.value, r.offset) for r in batch))
            else:
                for record in batch:
                    if record.offset >= offset:
                        try:
                            store.apply(record.key, record.value, record.offset)
                        except BadRecordError as exc:
                            self._bad_record(index, exc)
                        records += 1
            offset = batch.next_offset
        return offset, records

    def _loaded(self, index: int, store: OffsetStore) -> None:
        """The partition is read: its groups are served from here on, as stored."""
        self.stores[index] = store
        self._loading.pop(index, None)
        for group_id, record in store.group_metadata.items():
            self.groups[group_id] = self._restored(group_id, record)
        for group_id, image in store.consumer_groups.items():
            if image.epoch is not None:  # (records of a group whose epoch never landed)
                self.groups[group_id] = self._restored_consumer(group_id, image)

    def _store_for(self, group: str) -> tuple[int, OffsetStore]:
        if not group:
            raise InvalidGroupIdError("a group id must not be empty")
        index = partition_for(group, self.num_partitions)
        store = self.stores.get(index)
        if store is not None:
            if not self._doubt.known():
                self._doubt.refused()
                # this broker may have lost the group to another coordinator without
                # hearing of it: a heartbeat answered here would keep a member on an
                # assignment given away, an OffsetFetch would read offsets from before
                # the new coordinator's commits. Retriable: the member looks again
                raise CoordinatorNotAvailableError(
                    f"broker {self.broker_id} cannot tell whether it still coordinates "
                    f"group {group!r}: its ZooKeeper session is in doubt; retry"
                )
            return index, store
        if index in self._loading:
            raise CoordinatorLoadInProgressError(
                f"group {group!r}: its offsets are being loaded; retry shortly"
            )
        raise NotCoordinatorError(
            f"broker {self.broker_id} is not the coordinator of group {group!r}; find it again"
        )

    # --- FindCoordinator ----------------------------------------------------------------

    async def find_coordinator(
        self, request: FindCoordinatorRequest, listener: str = "PLAINTEXT"
    ) -> FindCoordinatorResponse:
        """The group's coordinator, at its address on ``listener`` (the one the request
        came in on: a TLS client must be sent to a TLS port)."""
        if request.key_type != CoordinatorType.GROUP:
            raise InvalidRequestError("only group coordinators exist here (key_type 0)")
        if not request.key:
            raise InvalidGroupIdError("a group id must not be empty")
        self._check_group(Operation.DESCRIBE, request.key)
        return await coordinator_of(
            self._metadata,
            OFFSETS_TOPIC,
            self.num_partitions,
            request.key,
            listener,
            create=self._create_offsets_topic,
            what="group",
            broker_id=self.broker_id,
            doubt=self._doubt,
        )

    async def _create_offsets_topic(self) -> None:
        topic = CreatableTopic(
            name=OFFSETS_TOPIC,
            num_partitions=self.num_partitions,
            replication_factor=replication_factor(
                int(self._config["offsets.topic.replication.factor"]), self._metadata
            ),
            configs=[
                # Kafka's offsets topic is compacted: a group's latest commit per partition
                # survives, a tombstone (deleted group) goes after delete.retention.ms
                CreatableTopicConfig(name="cleanup.policy", value="compact"),
                CreatableTopicConfig(
                    name="segment.bytes", value=str(self._config["offsets.topic.segment.bytes"])
                ),
            ],
        )
        await self._admin.create_internal(topic)

    # --- membership ---------------------------------------------------------------------

    def _group(self, group_id: str) -> Group | ConsumerGroup:
        """The group, created (Empty) if new: a JoinGroup or a commit makes a group."""
        self._store_for(group_id)  # only the coordinator, once loaded, holds groups
        self._not_shared(group_id)
        group = self.groups.get(group_id)
        if group is None:
            group = self._new_group(group_id)
            self.groups[group_id] = group
        return group

    async def _classic_group(
        self, group_id: str, request: JoinGroupRequest | None = None
    ) -> Group | JoinGroupResponse:
        """A JoinGroup's group. A group of the consumer protocol with members takes the
        member in as a classic member of it (Kafka's online migration; answered here);
        an empty one is replaced, its records deleted first (tombstones)."""
        if group_id in self.share_groups.groups:  # (Kafka's answer to a JoinGroup there)
            raise InconsistentGroupProtocolError(f"group {group_id!r} is a share group")
        group = self._group(group_id)
        if not isinstance(group, ConsumerGroup):
            return group
        # (shielded: tombstones appended are followed by the group's replacement even if
        # the JoinGroup's connection goes meanwhile, as a heartbeat's change is)
        return await asyncio.shield(self._replace_serialized(group_id, request))

    async def _replace_serialized(
        self, group_id: str, request: JoinGroupRequest | None
    ) -> Group | JoinGroupResponse:
        async with self._serialized(group_id):
            group = self.groups.get(group_id)
            if isinstance(group, ConsumerGroup) and group.members and not group.dead:
                if request is None:
                    raise InconsistentGroupProtocolError(
                        f"group {group_id!r} is a group of the consumer protocol with members"
                    )
                return await self._join_as_classic(group, request)
            return await self._replace_consumer_group(group_id)

    async def _join_as_classic(
        self, group: ConsumerGroup, request: JoinGroupRequest
    ) -> JoinGroupResponse | Group:
        """A classic JoinGroup into a group of the new protocol (Kafka's
        classicGroupJoinToConsumerGroup): reconciled, written, answered at once with the
        member's epoch as its generation and no leader (every classic member follows:
        the coordinator assigns). A classic static member that took the place of the
        group's last member of the new protocol gives the group back to the classic
        protocol (returned: the member joins it as a classic group's, which rebalances)."""
        before = group.epoch
        all_classic = all(m.classic is not None for m in group.members.values())
        member, protocol = group.classic_join(
            request.member_id,
            self._doubt.clock(),
            instance_id=request.group_instance_id,
            client_id=request.client_id,
            client_host=PEER_HOST.get(),
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=request.rebalance_timeout_ms
            if request.rebalance_timeout_ms > 0
            else request.session_timeout_ms,
            protocol_type=request.protocol_type,
            protocols=[(p.name, bytes(p.metadata)) for p in request.protocols],
        )
        if not all_classic and self._downgradable(group, (), replaced=True):
            cause = "a classic static member took the place of its last member of the new protocol"
            try:
                await self._downgrade(group, (), cause)
            except ApiError:  # not written: the join's change goes too
                self._revert(group)
                raise
            back = self.groups.get(group.group_id)
            if isinstance(back, Group):
                return back
        await self._write_consumer_group(group)
        if group.epoch != before:
            self._log.info(
                "group.epoch_bumped",
                group=group.group_id,
                epoch=group.epoch,
                member=member.member_id,
                cause="a classic member joined"
                if not request.member_id
                else "a classic member rejoined with another subscription",
            )
        return JoinGroupResponse(
            generation_id=member.epoch,
            protocol_type="consumer",
            protocol_name=protocol,
            leader="",
            member_id=member.member_id,
            members=[],
        )

    async def _replace_consumer_group(self, group_id: str) -> Group:
        index, store = self._store_for(group_id)
        group = self._group(group_id)
        if not isinstance(group, ConsumerGroup):
            return group  # (replaced while this join waited)
        if group.dead:
            raise CoordinatorNotAvailableError(f"group {group_id!r} is being deleted; try again")
        if group.members:
            raise InconsistentGroupProtocolError(
                f"group {group_id!r} is a group of the consumer protocol (KIP-848) with members"
            )
        image = store.consumer_groups.get(group_id)
        error: ApiError | None = None
        if image is not None:
            records: list[tuple[bytes, bytes | None]] = [
                (encode_consumer_group_key(k), None) for k in image.keys(group_id)
            ]
            result = await self._append(index, records)
            if result.base_offset < 0:
                raise _append_error(result.error_code, result.error_message, "the group's change")
            self._applied(index, store, records, result.base_offset)
            if self.groups.get(group_id) is not group:
                raise self._not_coordinator(group_id)
            if result.error_code:  # in this leader's log all the same: memory follows it
                error = _append_error(result.error_code, result.error_message, "the group's change")
        del self.groups[group_id]
        classic = self._group(group_id)
        assert isinstance(classic, Group)
        classic.emptied_at_ms = group.emptied_at_ms  # (its offsets expire from then)
        classic.pending_commits = group.pending_commits
        if error is not None:
            raise error
        return classic

    def _not_shared(self, group_id: str) -> None:
        if group_id in self.share_groups.groups:
            raise GroupIdNotFoundError(f"group {group_id!r} is a share group, not a consumer group")

    def _known_group(self, group_id: str) -> Group:
        """The group of a SyncGroup, Heartbeat or LeaveGroup: an unknown one means the
        member is unknown (Kafka's answer), and is not created."""
        self._store_for(group_id)
        group = self.groups.get(group_id)
        if group is None:
            raise UnknownMemberIdError(f"group {group_id!r} has no members; join again")
        if isinstance(group, ConsumerGroup):  # (Kafka's answer to a classic request there)
            raise UnknownMemberIdError(
                f"group {group_id!r} is a group of the consumer protocol (KIP-848): its "
                "members heartbeat with ConsumerGroupHeartbeat"
            )
        return group

    def _new_group(self, group_id: str) -> Group:
        return Group(
            group_id,
            self._doubt.clock,
            self._initial_delay_ms,
            on_store=self._store_group,
            max_size=self._max_group_size,
        )

    def _restored(self, group_id: str, record: GroupMetadata) -> Group:
        group = self._new_group(group_id)
        members = [
            Member(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.session_timeout_ms,
                m.rebalance_timeout_ms,
                record.protocol_type,
                [(record.protocol or "", m.subscription)],
                0,
                m.client_host,
                m.assignment,
            )
            for m in record.members
        ]
        group.restore(
            generation_id=record.generation,
            protocol_type=record.protocol_type or None,
            protocol_name=record.protocol,
            leader=record.leader,
            members=members,
            stored_at_ms=record.current_state_timestamp,
        )
        return group

    # --- group metadata in the log ------------------------------------------------------

    def _store_group(self, group: Group, assignments: dict[str, bytes], stored: Stored) -> None:
        """Group.on_store: append the group's metadata as it is now, with these
        assignments (Kafka's storeGroup), then tell the group how that went. Writes start
        in the order they are asked for, so the log keeps the latest last."""

        def told(error: ApiError | None) -> None:  # a failed write may start a rebalance
            was, generation, started = group.state, group.generation_id, group.rebalances
            stored(error)
            if error is not None:
                cause = "the group's metadata could not be written"
                self._note_rebalance(group, was, generation, started, cause, error=str(error))

        if self.groups.get(group.group_id) is not group:  # the leadership moved
            told(self._not_coordinator(group.group_id))
            return
        record = _group_record(group, assignments)
        task = asyncio.get_running_loop().create_task(self._append_group(group, record, told))
        self._group_writes[group.group_id] = task
        task.add_done_callback(lambda done: self._write_done(group.group_id, done))

    def _not_coordinator(self, group_id: str) -> NotCoordinatorError:
        return NotCoordinatorError(
            f"broker {self.broker_id} no longer coordinates group {group_id!r}; find it again"
        )

    def _write_done(self, group_id: str, task: asyncio.Task[None]) -> None:
        if self._group_writes.get(group_id) is task:
            del self._group_writes[group_id]

    async def _append_group(self, group: Group, record: GroupMetadata, stored: Stored) -> None:
        # re-checked now that the task runs: a delete that started meanwhile has written
        # its tombstone, which this record must not follow (an emptied group's: nobody
        # waits for it); a group unloaded meanwhile has told its members already
        if group.state == DEAD or self.groups.get(group.group_id) is not group:
            stored(self._not_coordinator(group.group_id))
            return
        index = partition_for(group.group_id, self.num_partitions)
        key, value = encode_group_key(group.group_id), encode_group_value(record)
        batch = encode_batch([(key, value, None, int(time.time() * 1000))])
        try:
            result = await self._replicas.append_records(
                OFFSETS_TOPIC, index, batch, timeout_ms=_COMMIT_TIMEOUT_MS
            )
        except Exception:  # a bug below: the members retry rather than wait for ever
            self._log.exception("coordinator.group_store_crashed", group=group.group_id)
            stored(CoordinatorNotAvailableError("the group's metadata could not be written"))
            return
        if not result.error_code:
            stored(None)
            return
        error = error_for_code(result.error_code, result.error_message)
        self._log.warning(
            "coordinator.group_store_failed",
            group=group.group_id,
            generation=record.generation,
            error=error.name,
        )
        stored(_store_error(error))

    async def join_group(self, request: JoinGroupRequest) -> JoinGroupResponse:
        self._check_group(Operation.READ, request.group_id)
        if not self._min_session_ms <= request.session_timeout_ms <= self._max_session_ms:
            raise InvalidSessionTimeoutError(
                f"session_timeout_ms={request.session_timeout_ms} is outside "
                f"[{self._min_session_ms}, {self._max_session_ms}] "
                "(group.min/max.session.timeout.ms)"
            )
        taken = await self._classic_group(request.group_id, request)
        if isinstance(taken, JoinGroupResponse):
            return taken  # a classic member of a group of the new protocol (its migration)
        group = taken
        rebalance_ms = request.rebalance_timeout_ms
        was, generation, started = group.state, group.generation_id, group.rebalances
        joined = group.join(
            member_id=request.member_id,
            group_instance_id=request.group_instance_id,
            client_id=request.client_id,
            client_host=PEER_HOST.get(),
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=rebalance_ms if rebalance_ms > 0 else request.session_timeout_ms,
            protocol_type=request.protocol_type,
            protocols=[(p.name, bytes(p.metadata)) for p in request.protocols],
            skip_assignment=request.supports_skip_assignment,
        )
        self._note_rebalance(
            group,
            was,
            generation,
            started,
            "a member rejoined" if request.member_id else "a member joined",
            member=request.member_id,
            instance=request.group_instance_id,
            client_id=request.client_id,
            reason=request.reason,  # (the client's, Kafka's JoinGroup v8+)
        )
        result = await _member_wait(joined, request.group_id)
        return JoinGroupResponse(
            skip_assignment=result.skip_assignment,
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
        self._check_group(Operation.READ, request.group_id)
        assigned = None
        if self._of_consumer_group(request.group_id):
            async with self._serialized(request.group_id):
                consumer = self._still_consumer_group(request.group_id)
                if consumer is not None:
                    assigned = consumer.classic_sync(
                        request.member_id,
                        request.group_instance_id,
                        request.generation_id,
                        (request.protocol_type, request.protocol_name),
                        self._doubt.clock(),
                    )
        if assigned is not None:
            names = self._metadata.fetchable
            return SyncGroupResponse(
                assignment=encode_assignment(
                    ProtocolAssignment(
                        [
                            TopicPartition(names[t], p)
                            for t, ps in sorted(assigned.items())
                            if t in names
                            for p in sorted(ps)
                        ]
                    )
                ),
                protocol_type=request.protocol_type,
                protocol_name=request.protocol_name,
            )
        group = self._known_group(request.group_id)
        assignments = {a.member_id: bytes(a.assignment) for a in request.assignments}
        synced = group.sync(  # answered once the log has the generation
            request.member_id,
            request.generation_id,
            assignments,
            request.group_instance_id,
            (request.protocol_type, request.protocol_name),
        )
        assignment = await _member_wait(synced, request.group_id)
        return SyncGroupResponse(
            assignment=assignment,
            protocol_type=group.protocol_type or None,
            protocol_name=group.protocol_name,
        )

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        self._check_group(Operation.READ, request.group_id)
        if self._of_consumer_group(request.group_id):
            async with self._serialized(request.group_id):
                consumer = self._still_consumer_group(request.group_id)
                if consumer is not None:
                    consumer.classic_heartbeat(
                        request.member_id,
                        request.group_instance_id,
                        request.generation_id,
                        self._doubt.clock(),
                    )
                    return HeartbeatResponse()
        self._known_group(request.group_id).heartbeat(
            request.member_id, request.generation_id, request.group_instance_id
        )
        return HeartbeatResponse()

    async def leave_group(self, request: LeaveGroupRequest) -> LeaveGroupResponse:
        self._check_group(Operation.READ, request.group_id)
        if self._of_consumer_group(request.group_id):
            left = await asyncio.shield(self._leave_consumer_group(request))
            if left is not None:
                return left
        if request.members is None:
            leaving = self._known_group(request.group_id)
            was, generation, started = leaving.state, leaving.generation_id, leaving.rebalances
            leaving.leave(request.member_id, request.group_instance_id)
            self._note_rebalance(
                leaving, was, generation, started, "a member left", member=request.member_id
            )
            return LeaveGroupResponse()
        # several at once (an administrator's "remove members"): each answered on its own,
        # as Kafka's, and the others still leave when one is unknown; a group this
        # coordinator does not have leaves each of them unknown (Kafka's answer too)
        try:
            group: Group | None = self._known_group(request.group_id)
        except UnknownMemberIdError as exc:
            group, unknown = None, exc
        answers = []
        for member in request.members:
            error: ApiError | None = None
            try:
                if group is None:
                    raise unknown
                was, generation, started = group.state, group.generation_id, group.rebalances
                group.leave(member.member_id, member.group_instance_id)
                self._note_rebalance(
                    group,
                    was,
                    generation,
                    started,
                    "a member left",
                    member=member.member_id,
                    instance=member.group_instance_id,
                    reason=member.reason,  # (the client's, Kafka's LeaveGroup v5+)
                )
            except ApiError as exc:
                error = exc
            answers.append(
                LeaveGroupMemberResponse(
                    member_id=member.member_id,
                    group_instance_id=member.group_instance_id,
                    error_code=0 if error is None else error.code,
                    error_message=None if error is None else error.message,
                )
            )
        return LeaveGroupResponse(members=answers)

    def _of_consumer_group(self, group_id: str) -> bool:
        """Whether a classic SyncGroup, Heartbeat or LeaveGroup goes to a group of the new
        protocol (its classic members': Kafka's online migration)."""
        self._store_for(group_id)
        group = self.groups.get(group_id)
        return isinstance(group, ConsumerGroup) and bool(group.members)

    def _still_consumer_group(self, group_id: str) -> ConsumerGroup | None:
        """Under the group's lock, the group of the new protocol :meth:`_of_consumer_group`
        saw before it; None if it is a classic group now (a downgrade, or an upgrade not
        written, while the request waited for the lock): the classic group answers."""
        if not isinstance(self.groups.get(group_id), ConsumerGroup):
            return None
        return self._consumer_group(group_id, -1)

    async def _leave_consumer_group(self, request: LeaveGroupRequest) -> LeaveGroupResponse | None:
        """A LeaveGroup to a group of the new protocol: each member named (of either
        protocol, as Kafka's since KAFKA-18188) is fenced; if only classic members are
        left, the group goes back to the classic protocol instead (Kafka's downgrade).
        None: a classic group's now (see :meth:`_still_consumer_group`)."""
        async with self._serialized(request.group_id):
            found = self._still_consumer_group(request.group_id)
            if found is None:
                return None
            group = found
            asked = (
                [(request.member_id, request.group_instance_id)]
                if request.members is None
                else [(m.member_id, m.group_instance_id) for m in request.members]
            )
            errors: list[ApiError | None] = []
            leaving: list[str] = []
            for member_id, instance_id in asked:
                try:
                    leaving.append(group.classic_leave(member_id, instance_id))
                    errors.append(None)
                except ApiError as exc:
                    errors.append(exc)
            if leaving and self._downgradable(group, leaving):
                await self._downgrade(group, leaving, "its last members of the new protocol left")
            elif leaving:
                for member_id in leaving:
                    group.fence(member_id)
                await self._write_consumer_group(group)
                self._log.info(
                    "group.member_left", group=request.group_id, members=leaving, epoch=group.epoch
                )
        if request.members is None:
            if errors[0] is not None:
                raise errors[0]
            return LeaveGroupResponse()
        return LeaveGroupResponse(
            members=[
                LeaveGroupMemberResponse(
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    error_code=0 if e is None else e.code,
                    error_message=None if e is None else e.message,
                )
                for m, e in zip(request.members, errors, strict=True)
            ]
        )

    # --- ConsumerGroupHeartbeat: the new consumer group protocol (KIP-848) ---------------

    async def consumer_group_heartbeat(
        self, request: ConsumerGroupHeartbeatRequest
    ) -> ConsumerGroupHeartbeatResponse:
        """A member of a group of the new protocol joins (epoch 0), heartbeats (its epoch),
        or leaves (-1; -2: a static member, for now). The coordinator assigns; see
        :mod:`broker.coordinator.consumer_group`. An error changes nothing."""
        try:
            self._check_group(Operation.READ, request.group_id)
            _check_heartbeat(request)
            for topic in request.subscribed_topic_names or ():
                if not self._acl.allowed(Operation.DESCRIBE, ResourceType.TOPIC, topic):
                    raise topic_not_authorized(topic, Operation.DESCRIBE)
            # the change is made, written and answered whole even if the request goes:
            # a change left half done would leave memory ahead of the log
            return await asyncio.shield(self._consumer_heartbeat(request))
        except ApiError as exc:
            return ConsumerGroupHeartbeatResponse(
                error_code=exc.code,
                error_message=exc.message,
                member_id=request.member_id or None,
                member_epoch=-1,
            )

    async def _consumer_heartbeat(
        self, request: ConsumerGroupHeartbeatRequest
    ) -> ConsumerGroupHeartbeatResponse:
        async with self._serialized(request.group_id):
            return await self._consumer_heartbeat_now(request)

    async def _consumer_heartbeat_now(
        self, request: ConsumerGroupHeartbeatRequest
    ) -> ConsumerGroupHeartbeatResponse:
        epoch = request.member_epoch
        if epoch in (LEAVE, STATIC_LEAVE):
            group = self._consumer_group(request.group_id, epoch)
            leaving = group.leaving(request.member_id, epoch, request.instance_id)
            if self._downgradable(group, leaving):
                await self._downgrade(group, leaving, "its last member of the new protocol left")
                answered = LEAVE
            else:
                answered = group.leave(request.member_id, epoch, request.instance_id)
                await self._write_consumer_group(group)
            self._log.info(
                "group.member_left",
                group=request.group_id,
                member=request.member_id,
                instance=request.instance_id,
                epoch=group.epoch,
            )
            return ConsumerGroupHeartbeatResponse(
                member_id=request.member_id,
                member_epoch=answered,
                heartbeat_interval_ms=group.heartbeat_interval_ms,
            )
        group = self._consumer_group(request.group_id, epoch)
        before = group.epoch
        answer = group.heartbeat(
            request.member_id or new_member_id(),
            epoch,
            self._doubt.clock(),
            instance_id=request.instance_id,
            rack_id=request.rack_id,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            subscribed=request.subscribed_topic_names,
            regex=request.subscribed_topic_regex,
            server_assignor=request.server_assignor,
            owned=_owned(request.topic_partitions),
            client_id=request.client_id,
            client_host=PEER_HOST.get(),
            describable=self._acl.decider(Operation.DESCRIBE, ResourceType.TOPIC),
        )
        self._install(group)  # (a join refused above leaves whatever group was there)
        await self._write_consumer_group(group)
        if group.epoch != before:
            self._log.info(
                "group.epoch_bumped",
                group=request.group_id,
                epoch=group.epoch,
                member=answer.member_id,
                cause="a member joined" if epoch == 0 else "a member's subscription changed",
            )
        return ConsumerGroupHeartbeatResponse(
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

    def _consumer_group(self, group_id: str, epoch: int) -> ConsumerGroup:
        """The group of a ConsumerGroupHeartbeat; a join (epoch 0) makes one, to take the
        place of an empty classic group of the id (Kafka's) once the join is taken
        (:meth:`_install`)."""
        self._store_for(group_id)
        self._not_shared(group_id)
        group = self.groups.get(group_id)
        # (a ConsumerGroup's dead flag, not its state: that walks every member, per beat)
        dead = group.dead if isinstance(group, ConsumerGroup) else group and group.state == DEAD
        if dead:
            raise CoordinatorNotAvailableError(f"group {group_id!r} is being deleted; try again")
        if isinstance(group, ConsumerGroup):
            return group
        if group is not None and (group.members or group.state != EMPTY):
            assert isinstance(group, Group)
            return self._upgraded(group, epoch)
        if epoch != 0:
            # (Kafka says GROUP_ID_NOT_FOUND: the group was deleted, or expired, while
            # its member was away; librdkafka stalls on that one, and joins again on this)
            raise UnknownMemberIdError(
                f"group {group_id!r} has no such member here; join again (member epoch 0)"
            )
        made = self._new_consumer_group(group_id)
        if group is not None:  # an empty classic group: what its offsets' expiry goes by
            made.emptied_at_ms = group.emptied_at_ms
            made.pending_commits = group.pending_commits
            made.replaced = group  # (what a first write not made gives back)
        return made

    def _upgraded(self, classic: Group, epoch: int) -> ConsumerGroup:
        """A member of the new protocol joins a classic group with members (Kafka's
        online upgrade): the group becomes one of the new protocol, its classic members
        in it as they were (see :mod:`broker.coordinator.migration`); once written, those
        waiting in JoinGroup or SyncGroup are told to rejoin, and rejoin it."""
        group_id = classic.group_id
        why = None
        if epoch != 0:
            why = "only a member joining (epoch 0) takes it into the consumer protocol"
        elif self._migration not in ("bidirectional", "upgrade"):
            why = f"group.consumer.migration.policy is {self._migration}"
        elif classic.protocol_type != "consumer":
            why = f"its protocol type is {classic.protocol_type!r}, not consumer"
        elif len(classic.members) > self._consumer_max_size:
            why = "it has more members than group.consumer.max.size"
        elif not migration.readable(classic):
            why = "a member's subscription or assignment is not Kafka's consumer protocol"
        if why is None and group_id in self._group_writes:
            # a generation's assignment (or a static member's new id) being written: it
            # is not in the members yet, and its write would hand it out after the group
            # of the new protocol took their previous ones. Retriable: taken once written
            raise CoordinatorNotAvailableError(
                f"group {group_id!r}: its classic metadata is being written; retry"
            )
        if why is not None:
            raise GroupIdNotFoundError(
                f"group {group_id!r} is a classic group with members and cannot become a "
                f"consumer group now: {why}"
            )
        made = self._new_consumer_group(group_id)
        now = self._doubt.clock()
        made.adopt(
            classic.generation_id, migration.consumer_members(classic, self._topics_now(), now)
        )
        made.emptied_at_ms = classic.emptied_at_ms
        made.pending_commits = classic.pending_commits
        made.replaced = classic
        self._log.info(
            "group.upgraded",
            group=group_id,
            generation=classic.generation_id,
            members=len(classic.members),
            cause="a member of the consumer protocol joined",
        )
        return made

    def _downgradable(
        self, group: ConsumerGroup, leaving: Collection[str], *, replaced: bool = False
    ) -> bool:
        """Whether ``leaving`` going (or, ``replaced``, a classic static member having
        taken the place of a member of the new protocol) gives the group back to the
        classic protocol (Kafka's validateOnlineDowngradeWithFencedMembers and
        ...WithReplacedMemberId): members stay, all classic, the policy allows,
        group.max.size holds them, and they share a protocol."""
        if not (leaving or replaced) or self._migration not in ("bidirectional", "downgrade"):
            return False
        if not group.only_classic_left_without(leaving):
            return False
        staying = [m for m in group.members.values() if m.member_id not in leaving]
        return len(staying) <= self._max_group_size and migration.protocol_for(staying) is not None

    async def _downgrade(self, group: ConsumerGroup, leaving: Collection[str], cause: str) -> None:
        """The group without ``leaving`` as a classic group (Kafka's convertToClassicGroup):
        its records go (tombstones) and the classic group's metadata is written in their
        place, each member's target its assignment; then it rebalances, so its members
        rejoin as a classic group's. Not written: nothing changed (the error raised)."""
        group_id = group.group_id
        index = partition_for(group_id, self.num_partitions)
        store = self.stores.get(index)
        now = self._doubt.clock()
        staying = [m for m in group.members.values() if m.member_id not in leaving]
        protocol = migration.protocol_for(staying)
        members = migration.classic_members(
            group, leaving, self._metadata.fetchable, protocol or "", now
        )
        classic = self._new_group(group_id)
        classic.restore(
            generation_id=group.epoch,
            protocol_type="consumer",
            protocol_name=protocol,
            leader=members[0].member_id,
            members=members,
        )
        image = None if store is None else store.consumer_groups.get(group_id)
        records: list[tuple[bytes, bytes | None]] = [
            (encode_consumer_group_key(k), None) for k in (image.keys(group_id) if image else [])
        ]
        assignments = {m.member_id: m.assignment for m in members}
        records.append(
            (encode_group_key(group_id), encode_group_value(_group_record(classic, assignments)))
        )
        result = await self._append(index, records)
        if result.base_offset < 0:
            raise _store_error(error_for_code(result.error_code, result.error_message))
        self._applied(index, store, records, result.base_offset)
        if self.groups.get(group_id) is group:
            classic.pending_commits = group.pending_commits
            self.groups[group_id] = classic
            classic.rebalance()
            self._log.info(
                "group.downgraded",
                group=group_id,
                generation=classic.generation_id,
                members=len(members),
                protocol=protocol,
                cause=cause,
            )
        if result.error_code:
            raise _store_error(error_for_code(result.error_code, result.error_message))

    def _new_consumer_group(self, group_id: str) -> ConsumerGroup:
        return ConsumerGroup(
            group_id,
            self._topics_now,
            session_timeout_ms=self._consumer_session_ms,
            heartbeat_interval_ms=self._consumer_heartbeat_ms,
            max_size=self._consumer_max_size,
            assignor_names=self._consumer_assignors,
        )

    def _restored_consumer(self, group_id: str, image: ConsumerGroupImage) -> ConsumerGroup:
        group = self._new_consumer_group(group_id)
        group.restore(image, self._doubt.clock())
        return group

    def _install(self, group: ConsumerGroup) -> None:
        """``group`` is the id's group now (a no-op for one that was already)."""
        if self.groups.get(group.group_id) is not group:
            self.groups[group.group_id] = group

    def _serialized(self, group_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """One change of a group of the new protocol at a time, each made, written and
        answered before the next is made: an answer never tells a member of a change
        the log does not have (Kafka's answers wait for the records they follow)."""
        return self._serial.hold(group_id)

    async def _write_consumer_group(self, group: ConsumerGroup) -> None:
        """What the call changed in ``group`` (its records, Kafka's: see
        :mod:`protocol.consumer_group_log`) appended with acks=all before the answer.
        Not appended: the group is rebuilt from the records the log has (the change is
        undone, as Kafka reverts its in-memory state) and the retriable error raised.
        Appended but not replicated in time: memory keeps the change, as the log does,
        and the error is raised (the member retries; its previous epoch is taken)."""
        changes = group.changes()
        if not changes:
            return
        group_id = group.group_id
        index = partition_for(group_id, self.num_partitions)
        store = self.stores.get(index)
        records: list[tuple[bytes, bytes | None]] = [
            (
                encode_consumer_group_key(key),
                None if value is None else encode_consumer_group_value(key.record_type, value),
            )
            for key, value in changes
        ]
        if store is not None and group_id not in store.consumer_groups:
            # the group's first records: an empty classic group of the id it took the
            # place of goes from the log too (its metadata, if it ever stored any, is not
            # kept in the store: a tombstone of nothing is a few bytes, once)
            records.insert(0, (encode_group_key(group_id), None))
        try:
            result = await self._append(index, records)
        except Exception:  # a bug below: undone, and the member retries
            self._log.exception("coordinator.group_store_crashed", group=group_id)
            self._revert(group)
            raise CoordinatorNotAvailableError("the group's change could not be written") from None
        if result.base_offset < 0:
            error = error_for_code(result.error_code, result.error_message)
            self._log.warning(
                "coordinator.group_store_failed",
                group=group_id,
                epoch=group.epoch,
                error=error.name,
            )
            self._revert(group)
            raise _store_error(error)
        self._applied(index, store, records, result.base_offset)
        if isinstance(group.replaced, Group) and group.replaced.members:
            # the classic group it took in: its members waiting in JoinGroup or SyncGroup
            # rejoin, into this group (Kafka's completeAll*Futures(REBALANCE_IN_PROGRESS))
            group.replaced.unload(
                RebalanceInProgressError(
                    f"group {group_id!r} moved to the consumer protocol (KIP-848); rejoin"
                )
            )
        group.replaced = None
        if result.error_code:
            raise _store_error(error_for_code(result.error_code, result.error_message))

    def _revert(self, group: ConsumerGroup) -> None:
        """``group`` as the log has it (a change of it could not be written): rebuilt
        from its records, or gone if none was ever written."""
        group_id = group.group_id
        if self.groups.get(group_id) is not group:
            return  # unloaded meanwhile (its coordinator moved), or replaced
        store = self.stores.get(partition_for(group_id, self.num_partitions))
        image = None if store is None else store.consumer_groups.get(group_id)
        if image is not None and image.epoch is not None:
            rebuilt = self._restored_consumer(group_id, image)
            rebuilt.keep_timers(group)
            restored: Group | ConsumerGroup = rebuilt
        elif isinstance(group.replaced, Group):  # the empty classic group, as it was
            restored = group.replaced
        elif group.pending_commits or group.emptied_at_ms >= 0:
            # the empty (classic) group it took the place of: what its offsets' expiry,
            # and the commits being written, count in
            restored = self._new_group(group_id)
        else:
            del self.groups[group_id]
            return
        restored.pending_commits = group.pending_commits
        restored.emptied_at_ms = group.emptied_at_ms
        self.groups[group_id] = restored

    async def consumer_group_describe(
        self, request: ConsumerGroupDescribeRequest
    ) -> ConsumerGroupDescribeResponse:
        """Groups of the new protocol, member by member with their assignments and
        targets (Kafka's ConsumerGroupDescribe): GROUP_ID_NOT_FOUND for any other group,
        on which Kafka's admin clients ask DescribeGroups instead."""
        described = self._acl.decider(Operation.DESCRIBE, ResourceType.GROUP)
        answers = []
        for group_id in request.group_ids:
            try:
                if not described(group_id):
                    raise group_not_authorized(group_id, Operation.DESCRIBE)
                answers.append(self._consumer_group_described(group_id))
            except ApiError as exc:
                answers.append(
                    ConsumerGroupDescribed(
                        group_id=group_id, error_code=exc.code, error_message=exc.message
                    )
                )
        return ConsumerGroupDescribeResponse(groups=answers)

    def _consumer_group_described(self, group_id: str) -> ConsumerGroupDescribed:
        self._store_for(group_id)
        group = self.groups.get(group_id)
        if not isinstance(group, ConsumerGroup) or group.dead:
            raise GroupIdNotFoundError(f"Group {group_id} is not a consumer group.")
        names = self._metadata.fetchable

        def described(assignment: Assignment) -> DescribedAssignment:
            return DescribedAssignment(
                topic_partitions=[
                    DescribedTopicPartitions(topic_id=t, topic_name=names[t], partitions=sorted(ps))
                    for t, ps in sorted(assignment.items())
                    if t in names  # (Kafka's: a topic gone from the metadata is left out)
                ]
            )

        return ConsumerGroupDescribed(
            group_id=group_id,
            group_state=group.state,
            group_epoch=group.epoch,
            assignment_epoch=group.assignment_epoch,
            assignor_name=group.assignor,
            members=[
                ConsumerGroupDescribedMember(
                    member_id=m.member_id,
                    instance_id=m.instance_id,
                    rack_id=m.rack_id,
                    member_epoch=m.epoch,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    subscribed_topic_names=list(m.subscribed),
                    subscribed_topic_regex=m.regex,
                    assignment=described(m.assigned),
                    target_assignment=described(group.target.get(m.member_id, {})),
                    member_type=0 if m.classic is not None else 1,  # (v1's, KIP-1099)
                )
                for m in group.members.values()
            ],
        )

    def _topics_now(self) -> dict[str, TopicInfo]:
        """The cluster's topics with their ids and partition counts: made again only when
        the metadata changed (a heartbeat asks for them), and the same object while what
        it holds is the same, so the groups resolve their subscriptions again only after
        an update that made, deleted or grew a topic (not one that moved a leader)."""
        metadata = self._metadata
        seen = (metadata.topics, metadata.topic_ids)
        if self._topics_seen is None or any(
            a is not b for a, b in zip(seen, self._topics_seen, strict=True)
        ):
            ids = metadata.topic_ids
            view = {
                name: TopicInfo(ids[name], len(partitions))
                for name, partitions in metadata.topics.items()
                if name in ids and name not in metadata.deleting
            }
            if view != self._topics_view:
                self._topics_view = view
            self._topics_seen = seen
        return self._topics_view

    def topics_changed(self) -> None:
        """The cluster's topics changed (an UpdateMetadata): a group of the new protocol
        that subscribes to one made, deleted or grown gets a new epoch, written as any
        change of it (in a task: each group's change waits for the one under way)."""
        self.share_groups.topics_changed()
        self._topics_dirty = True
        if self._topics_task is None:
            self._topics_task = asyncio.ensure_future(self._apply_topics_changed())

    async def _apply_topics_changed(self) -> None:
        try:
            while self._topics_dirty:
                self._topics_dirty = False
                # each group on its own (one whose write is slow holds up no other)
                names = [
                    group_id
                    for group_id, group in self.groups.items()
                    if isinstance(group, ConsumerGroup) and group.members
                ]
                done = await asyncio.gather(
                    *(self._topics_changed_in(g) for g in names), return_exceptions=True
                )
                for group_id, outcome in zip(names, done, strict=True):
                    if isinstance(outcome, BaseException):  # a bug: logged; the others went on
                        self._log.error(
                            "coordinator.topics_change_failed", group=group_id, exc_info=outcome
                        )
        finally:
            self._topics_task = None

    async def _topics_changed_in(self, group_id: str) -> None:
        async with self._serialized(group_id):
            group = self.groups.get(group_id)
            if not isinstance(group, ConsumerGroup) or not group.members:
                return
            if not group.topics_changed():
                return
            self._log.info(
                "group.epoch_bumped",
                group=group_id,
                epoch=group.epoch,
                cause="a subscribed topic was made, deleted or grew",
            )
            try:
                await self._write_consumer_group(group)
            except ApiError as exc:  # undone: a member's next heartbeat sees the change
                self._log.warning("coordinator.group_store_failed", group=group_id, error=exc.name)

    # --- OffsetCommit -------------------------------------------------------------------

    async def offset_commit(self, request: OffsetCommitRequest) -> OffsetCommitResponse:
        error: ApiError | None
        # Kafka's: the topics the member may not READ are refused, the others committed
        denied = {
            t.name
            for t in request.topics
            if not self._acl.allowed(Operation.READ, ResourceType.TOPIC, t.name)
        }
        unknown: set[tuple[str, int]] = set()
        whole = True  # an error before the partitions are sorted is every partition's
        try:
            self._check_group(Operation.READ, request.group_id)
            unknown = self._unknown(request.topics, denied)
            whole = False
            allowed = dataclasses.replace(request, topics=_known(request.topics, denied, unknown))
            # As Kafka's KafkaApis, the group is asked only for what is left: a commit of
            # topics that are not there makes no group, and a group's refusal (a zombie's
            # commit: unknown or fenced member, older generation) is not theirs.
            error = None
            if allowed.topics:
                group = self._group(request.group_id)
                if isinstance(group, ConsumerGroup):
                    group.check_commit(
                        request.member_id,
                        request.generation_id,
                        request.group_instance_id,
                        kafka_version=request.kafka_version,
                    )
                else:
                    group.check_commit(
                        request.member_id, request.generation_id, request.group_instance_id
                    )
                error = await self._commit(group, allowed, unknown)
        except ApiError as exc:
            error = exc
        return OffsetCommitResponse(
            topics=_commit_results(request.topics, denied, error, unknown, whole=whole)
        )

    def _unknown(
        self, topics: list[OffsetCommitRequestTopic], denied: set[str]
    ) -> set[tuple[str, int]]:
        """The partitions of a commit that this broker's metadata does not have (a topic
        deleted, being deleted, or never made): refused UNKNOWN_TOPIC_OR_PARTITION, as
        Kafka's KafkaApis does. An offset kept for a deleted topic would start its groups
        inside a topic made again under the name. (A topic just made that this broker has
        not heard of yet is refused too: retriable, the client asks again.) Before the
        controller's full picture has come (it sends a starting broker its roles first), a
        missing topic may exist: the whole commit waits (COORDINATOR_LOAD_IN_PROGRESS)."""
        if not self._metadata.whole:
            raise CoordinatorLoadInProgressError(
                "this broker has not had the cluster's metadata yet; retry shortly"
            )
        metadata = self._metadata.topics
        return {
            (t.name, p.partition_index)
            for t in topics
            if t.name not in denied
            for p in t.partitions
            if p.partition_index not in metadata.get(t.name, ())
        }

    async def _commit(
        self,
        group: Group | ConsumerGroup,
        request: OffsetCommitRequest,
        unknown: set[tuple[str, int]],
    ) -> ApiError | None:
        """``request``'s offsets written and applied; the error, if any. A partition whose
        topic was deleted while its offset was being written is added to ``unknown``."""
        index, store = self._store_for(request.group_id)
        now = int(time.time() * 1000)
        offsets = _offsets(request.topics, now, request.retention_time_ms)
        if not offsets:
            return None
        records = store.commit(request.group_id, offsets)
        batch = encode_batch([(k, v, None, now) for k, v in records])
        pending = collections.Counter((t, p) for t, p, _ in offsets)
        group.pending_commits.update(pending)
        try:
            result = await self._replicas.append_records(
                OFFSETS_TOPIC, index, batch, timeout_ms=_COMMIT_TIMEOUT_MS
            )
        finally:
            group.pending_commits.subtract(pending)
            group.pending_commits += collections.Counter()  # drops the zeros
        if result.error_code:
            return _append_error(result.error_code, result.error_message, "the commit")
        # re-checked after the await: still ours, and the group was not deleted meanwhile
        # (its delete wrote tombstones after these records)
        if self.stores.get(index) is store and group.state != DEAD:
            # a topic deleted meanwhile had its offsets forgotten before these landed:
            # they are not applied, and a tombstone follows them in the log (Kafka's
            # onOffsetCommitAppend drops them from memory only: a reload revives them)
            metadata = self._metadata.topics
            gone: list[tuple[bytes, bytes | None]] = []
            for i, ((topic, partition, _), (key, value)) in enumerate(
                zip(offsets, records, strict=True)
            ):
                if partition in metadata.get(topic, ()):
                    store.apply(key, value, result.base_offset + i)
                else:
                    gone.append((key, None))
                    unknown.add((topic, partition))
            if gone:
                self._forget_later(index, store, gone)
        return None

    # --- TxnOffsetCommit (transactions) ------------------------------------------------

    async def txn_offset_commit(self, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse:
        """A transaction's offsets: appended to the group's partition inside the
        transaction (its producer id and epoch, transactional), applied when its COMMIT
        marker is written there, dropped at its ABORT (Kafka's, KIP-98; with a member id
        and generation, checked against the group as a commit is, KIP-447)."""
        error: ApiError | None = None
        denied = {
            t.name
            for t in request.topics
            if not self._acl.allowed(Operation.READ, ResourceType.TOPIC, t.name)
        }
        unknown: set[tuple[str, int]] = set()
        whole = True
        try:
            if not self._acl.allowed(
                Operation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id
            ):
                raise transactional_id_not_authorized(request.transactional_id, Operation.WRITE)
            self._check_group(Operation.READ, request.group_id)
            unknown = self._unknown(request.topics, denied)
            whole = False
            if not _known(request.topics, denied, unknown):
                # nothing left for the group (Kafka's KafkaApis answers without asking it)
                return TxnOffsetCommitResponse(
                    topics=_commit_results(request.topics, denied, None, unknown)
                )
            index, store = self._store_for(request.group_id)
            group = self.groups.get(request.group_id)
            if group is not None and (request.member_id or request.generation_id >= 0):
                try:
                    group.check_commit(
                        request.member_id, request.generation_id, request.group_instance_id
                    )
                except StaleMemberEpochError as exc:  # (Kafka's, for TxnOffsetCommit)
                    raise IllegalGenerationError(exc.message) from None
            now = int(time.time() * 1000)
            offsets = _offsets(_known(request.topics, denied, unknown), now)
            if offsets:
                writing = collections.Counter((t, p) for t, p, _ in offsets)
                in_flight = self._txn_writes.setdefault(request.group_id, collections.Counter())
                in_flight.update(writing)
                try:
                    error = await self._txn_append(
                        request, index, store, offsets, now, unknown=unknown
                    )
                finally:
                    in_flight.subtract(writing)
                    if not +in_flight:
                        self._txn_writes.pop(request.group_id, None)
        except ApiError as exc:
            error = exc
        return TxnOffsetCommitResponse(
            topics=_commit_results(request.topics, denied, error, unknown, whole=whole)
        )

    async def _txn_append(
        self,
        request: TxnOffsetCommitRequest,
        index: int,
        store: OffsetStore,
        offsets: list[tuple[str, int, OffsetAndMetadata]],
        now: int,
        *,
        unknown: set[tuple[str, int]],
    ) -> ApiError | None:
        """A TxnOffsetCommit's records appended in its transaction, then held until the
        transaction's marker; the error, if any. A partition whose topic was deleted
        meanwhile is added to ``unknown``."""
        records = store.commit(request.group_id, offsets)
        batch = encode_batch(
            [(k, v, None, now) for k, v in records],
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch,
            is_transactional=True,
        )
        # a TxnOffsetCommit read late must not open a transaction here that no
        # marker ends: its held offsets would block require_stable fetches for good
        refused = await self._replicas.check_txn_write(
            request.transactional_id,
            OFFSETS_TOPIC,
            index,
            request.producer_id,
            request.producer_epoch,
        )
        if refused is not None:
            raise refused
        result = await self._replicas.append_records(
            OFFSETS_TOPIC, index, batch, timeout_ms=_COMMIT_TIMEOUT_MS
        )
        if result.error_code:
            return _append_error(
                result.error_code, result.error_message, "the transaction's commit"
            )
        if self.stores.get(index) is store:
            # a topic deleted meanwhile: not held, so its marker cannot apply it
            metadata = self._metadata.topics
            held = []
            gone: list[tuple[bytes, bytes | None]] = []
            for i, ((topic, partition, _), (k, v)) in enumerate(zip(offsets, records, strict=True)):
                if partition in metadata.get(topic, ()):
                    held.append((k, v, result.base_offset + i))
                else:
                    gone.append((k, None))  # (a load drops the record at its tombstone)
                    unknown.add((topic, partition))
            store.hold(request.producer_id, held)
            if gone:
                self._forget_later(index, store, gone)
        return None

    def _bad_record(self, index: int, exc: BadRecordError) -> None:
        """A record of the offsets topic that cannot be read: skipped, and said."""
        self._log.warning("coordinator.bad_record", partition=index, error=str(exc))

    def _on_txn_marker(self, topic: str, index: int, producer_id: int, committed: bool) -> None:
        if topic != OFFSETS_TOPIC:
            return
        store = self.stores.get(index)
        if store is not None and store.end_txn(
            producer_id, committed, lambda exc: self._bad_record(index, exc)
        ):
            self._log.debug(
                "coordinator.txn_offsets",
                partition=index,
                producer_id=producer_id,
                committed=committed,
            )

    # --- OffsetFetch --------------------------------------------------------------------

    async def offset_fetch(self, request: OffsetFetchRequest) -> OffsetFetchResponse:
        """A group's committed offsets; Kafka's v8+ asks several groups at once, each
        answered on its own (an error is that group's), and v9 says the member asking,
        checked as a commit's (a consumer group's member at its epoch)."""
        if request.groups is None:
            return self._offset_fetch(request)
        answers = []
        for asked in request.groups:
            try:
                one = self._offset_fetch(
                    OffsetFetchRequest(
                        group_id=asked.group_id,
                        topics=asked.topics,
                        require_stable=request.require_stable,
                        member_id=asked.member_id,
                        member_epoch=asked.member_epoch,
                    )
                )
                answers.append(OffsetFetchResponseGroup(group_id=asked.group_id, topics=one.topics))
            except ApiError as exc:
                answers.append(
                    OffsetFetchResponseGroup(group_id=asked.group_id, error_code=exc.code)
                )
        return OffsetFetchResponse(groups=answers)

    def _offset_fetch(self, request: OffsetFetchRequest) -> OffsetFetchResponse:
        self._check_group(Operation.DESCRIBE, request.group_id)
        _, store = self._store_for(request.group_id)
        group = self.groups.get(request.group_id)
        if isinstance(group, ConsumerGroup):
            group.check_fetch(request.member_id, request.member_epoch)
        committed = store.get(request.group_id)
        described = self._acl.decider(Operation.DESCRIBE, ResourceType.TOPIC)
        wanted: dict[str, list[int]] = {}
        if request.topics is None:  # all: those it may not DESCRIBE are left out (Kafka's)
            for topic, partition in sorted(committed):
                if described(topic):
                    wanted.setdefault(topic, []).append(partition)
        else:
            wanted = {t.name: list(t.partition_indexes) for t in request.topics}
        # KIP-447: a read_committed consumer waits for a transaction's offsets to be
        # committed or aborted, or it could start below records that transaction consumed
        unstable = store.pending_partitions(request.group_id) if request.require_stable else ()
        topics = []
        for topic, indexes in wanted.items():
            rows = []
            for index in indexes:
                value = committed.get((topic, index))
                rows.append(
                    OffsetFetchResponsePartition(
                        partition_index=index, error_code=TopicAuthorizationFailedError.code
                    )
                    if not described(topic)
                    else OffsetFetchResponsePartition(
                        partition_index=index, error_code=UnstableOffsetCommitError.code
                    )
                    if (topic, index) in unstable
                    else OffsetFetchResponsePartition(partition_index=index)
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

    # --- ListGroups, DescribeGroups, DeleteGroups ---------------------------------------

    async def list_groups(self, request: ListGroupsRequest) -> ListGroupsResponse:
        """The groups this broker coordinates (Kafka's handleListGroups): those in memory,
        and those that only have committed offsets (Empty, as Kafka loads them). While an
        offsets partition loads, the answer says COORDINATOR_LOAD_IN_PROGRESS, with the
        groups known so far, as Kafka's does."""
        listed: dict[str, ListedGroup] = {}
        # DESCRIBE on the cluster lists every group; else those it may DESCRIBE (Kafka's)
        everything = self._acl.allowed_on_cluster(Operation.DESCRIBE)
        described = self._acl.decider(Operation.DESCRIBE, ResourceType.GROUP)
        for store in self.stores.values():
            for group_id in store.groups:
                listed[group_id] = ListedGroup(group_id=group_id, group_state=EMPTY)
        for group_id, group in self.groups.items():
            if group.state == DEAD:  # being deleted: gone already, as in Kafka
                listed.pop(group_id, None)
                continue
            listed[group_id] = ListedGroup(
                group_id=group_id,
                protocol_type=group.protocol_type or "",
                group_state=group.state,
                group_type="consumer" if isinstance(group, ConsumerGroup) else "classic",
            )
        for group_id, share in self.share_groups.groups.items():
            listed[group_id] = ListedGroup(
                group_id=group_id,
                protocol_type=share.protocol_type,
                group_state=share.state,
                group_type="share",
            )
        # state and type names compared without case, as Kafka's parse them
        wanted = {state.lower() for state in request.states_filter}
        types = {kind.strip().lower() for kind in request.types_filter}
        groups = [
            g
            for _, g in sorted(listed.items())
            if (not wanted or g.group_state.lower() in wanted)
            and (not types or g.group_type in types)
            and (everything or described(g.group_id))
        ]
        if self._loading:
            return ListGroupsResponse(
                error_code=CoordinatorLoadInProgressError.code,
                error_message=f"broker {self.broker_id} is loading groups; ask again shortly",
                groups=groups,
            )
        return ListGroupsResponse(groups=groups)

    async def describe_groups(self, request: DescribeGroupsRequest) -> DescribeGroupsResponse:
        described = self._acl.decider(Operation.DESCRIBE, ResourceType.GROUP)
        return DescribeGroupsResponse(
            groups=[
                self._describe(g, missing_is_an_error=request.missing_is_an_error)
                if described(g)
                else DescribedGroup(
                    group_id=g,
                    error_code=GroupAuthorizationFailedError.code,
                    error_message=str(group_not_authorized(g, Operation.DESCRIBE)),
                )
                for g in request.groups
            ]
        )

    def _describe(self, group_id: str, *, missing_is_an_error: bool = False) -> DescribedGroup:
        """Kafka's handleDescribeGroup: a group this broker coordinates but does not know
        is Dead without members (no error; GROUP_ID_NOT_FOUND for ``missing_is_an_error``,
        Kafka's v6+); one it does not coordinate gets that error."""
        try:
            _, store = self._store_for(group_id)
        except ApiError as exc:
            return DescribedGroup(group_id=group_id, error_code=exc.code, error_message=exc.message)
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup) and not group.dead:
            return _described_consumer_group(group, self._metadata.fetchable)
        if group is None or isinstance(group, ConsumerGroup) or group.state == DEAD:
            state = EMPTY if group is None and store.get(group_id) else DEAD
            if state == DEAD and missing_is_an_error:
                missing = GroupIdNotFoundError(f"group {group_id!r} does not exist")
                return DescribedGroup(
                    group_id=group_id, error_code=missing.code, error_message=missing.message
                )
            return DescribedGroup(group_id=group_id, group_state=state)
        # Kafka's GroupMetadata.summary: metadata and assignments only once Stable (before,
        # they belong to no settled generation)
        stable = group.state == STABLE
        return DescribedGroup(
            group_id=group_id,
            group_state=group.state,
            protocol_type=group.protocol_type or "",
            protocol_data=(group.protocol_name or "") if stable else "",
            generation_id=group.generation_id,
            leader=group.leader or "",
            members=[
                DescribedGroupMember(
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    member_metadata=m.metadata(group.protocol_name) if stable else b"",
                    member_assignment=m.assignment if stable else b"",
                )
                for m in group.members.values()
            ],
        )

    async def delete_groups(self, request: DeleteGroupsRequest) -> DeleteGroupsResponse:
        names = list(dict.fromkeys(request.groups_names))
        errors = await asyncio.gather(
            *(
                self._delete_group(name)
                if self._acl.allowed(Operation.DELETE, ResourceType.GROUP, name)
                else _already(group_not_authorized(name, Operation.DELETE))
                for name in names
            )
        )
        return DeleteGroupsResponse(
            results=[
                DeletableGroupResult(
                    group_id=name,
                    error_code=0 if error is None else error.code,
                    error_message=None if error is None else error.message,
                )
                for name, error in zip(names, errors, strict=True)
            ]
        )

    async def _delete_group(self, group_id: str) -> ApiError | None:
        """Kafka's handleDeleteGroups: only an empty group goes. Its offsets and metadata
        get tombstones (key, null value), appended with acks=all like a commit (Kafka
        appends them with acks=0 and answers at once; waiting means an answered delete
        survives a failover)."""
        # shielded: a delete whose request goes mid-append finishes (else the group would
        # stay Dead, refusing its members, until the partition moved)
        return await asyncio.shield(self._delete_serialized(group_id))

    async def _delete_serialized(self, group_id: str) -> ApiError | None:
        async with self._serialized(group_id):  # (a change of the group being written)
            return await self._delete_group_now(group_id)

    async def _delete_group_now(self, group_id: str) -> ApiError | None:
        if self.share_groups.holds(group_id):
            return await self.share_groups.delete(group_id)
        try:
            index, store = self._store_for(group_id)
            group = self._deletable(group_id, store)
        except ApiError as exc:
            return exc
        group.delete()  # Dead: commits and joins arriving meanwhile are told to retry
        records = store.tombstones(group_id, group.pending_commits)
        result = await self._append(index, records)
        if result.base_offset < 0:  # not appended here at all: the group stays
            group.undelete()
            return _append_error(result.error_code, result.error_message, "the delete")
        # appended here: this leader's log has the tombstones now, and memory follows it
        # (if the leadership moves instead, memory is reloaded from the new leader's log)
        if self.groups.get(group_id) is group:
            del self.groups[group_id]
        self._applied(index, store, records, result.base_offset)
        self._log.info("coordinator.group_deleted", group=group_id, tombstones=len(records))
        if result.error_code:  # e.g. not replicated in time: the answer says so
            return _append_error(result.error_code, result.error_message, "the delete")
        return None

    async def delete_offsets(self, request: OffsetDeleteRequest) -> OffsetDeleteResponse:
        """OffsetDelete (Kafka's handleDeleteOffsets, ``kafka-consumer-groups
        --delete-offsets``): the group's committed offsets of these partitions go
        (tombstones, appended with acks=all like a commit), so the group starts those
        partitions afresh by its auto.offset.reset. An empty group loses any of them; a
        consumer group with members only those of topics none of its members subscribes
        to (the others are GROUP_SUBSCRIBED_TO_TOPIC); another group with members,
        none (NON_EMPTY_GROUP). A partition without an offset is no error."""
        group_id = request.group_id
        self._check_group(Operation.DELETE, group_id)
        index, store = self._store_for(group_id)
        asked = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
        group = self.groups.get(group_id)
        committed = store.get(group_id)
        if (group is not None and group.state == DEAD) or (group is None and not committed):
            raise GroupIdNotFoundError(f"group {group_id!r} does not exist")
        readable = self._acl.decider(Operation.READ, ResourceType.TOPIC)
        refused: dict[tuple[str, int], int] = {
            tp: TopicAuthorizationFailedError.code for tp in asked if not readable(tp[0])
        }
        if group is not None and group.members:
            if group.protocol_type != "consumer":
                raise NonEmptyGroupError(
                    f"group {group_id!r} has members and is not a consumer group; its "
                    "offsets can be deleted once they have left"
                )
            subscribed = _subscribed_topics(group)
            refused |= {
                tp: GroupSubscribedToTopicError.code
                for tp in asked
                if tp not in refused and (subscribed is None or tp[0] in subscribed)
            }
        # with the commits still being written: their tombstones land after them
        pending = group.pending_commits if group is not None else {}
        gone = [tp for tp in asked if tp not in refused and (tp in committed or pending.get(tp))]
        if gone:
            records: list[tuple[bytes, bytes | None]] = [
                (encode_key(group_id, t, p), None) for t, p in gone
            ]
            result = await self._append(index, records)
            if result.base_offset < 0:
                raise _append_error(result.error_code, result.error_message, "the delete")
            self._applied(index, store, records, result.base_offset)
            self._log.info(
                "coordinator.offsets_deleted",
                group=group_id,
                partitions=[f"{t}-{p}" for t, p in gone],
            )
            if result.error_code:
                raise _append_error(result.error_code, result.error_message, "the delete")
        by_topic: dict[str, list[OffsetDeleteResponsePartition]] = {}
        for topic, partition in asked:
            by_topic.setdefault(topic, []).append(
                OffsetDeleteResponsePartition(
                    partition_index=partition, error_code=refused.get((topic, partition), 0)
                )
            )
        return OffsetDeleteResponse(
            topics=[OffsetDeleteResponseTopic(name=n, partitions=p) for n, p in by_topic.items()]
        )

    def _applied(
        self,
        index: int,
        store: OffsetStore | None,
        records: list[tuple[bytes, bytes | None]],
        base_offset: int,
    ) -> None:
        """``records``, appended at ``base_offset``, applied to ``store`` if it is still
        the partition's (memory follows this leader's log; a move reloads it instead)."""
        if store is not None and self.stores.get(index) is store:
            for i, (key, value) in enumerate(records):
                store.apply(key, value, base_offset + i)

    async def _append(
        self, index: int, records: list[tuple[bytes, bytes | None]]
    ) -> ProducePartitionResponse:
        """``records`` appended to the group's ``__consumer_offsets`` partition with
        acks=all, as a commit is; the append's result."""
        now = int(time.time() * 1000)
        return await self._replicas.append_records(
            OFFSETS_TOPIC,
            index,
            encode_batch([(k, v, None, now) for k, v in records]),
            timeout_ms=_COMMIT_TIMEOUT_MS,
        )

    def _deletable(self, group_id: str, store: OffsetStore) -> Group | ConsumerGroup:
        group = self.groups.get(group_id)
        if group is not None and group.members:
            raise NonEmptyGroupError(
                f"group {group_id!r} has {len(group.members)} members; it can be deleted "
                "once they have left"
            )
        if group is not None and group.state == DEAD:
            raise GroupIdNotFoundError(f"group {group_id!r} is being deleted already")
        if group is None and not store.get(group_id):
            raise GroupIdNotFoundError(f"group {group_id!r} does not exist")
        return self._group(group_id)


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


def _chunk(group_id: str, gone: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The first of ``gone`` whose tombstones fit in :data:`_EXPIRY_BATCH_BYTES`."""
    size = 0
    for i, (topic, partition) in enumerate(gone):
        size += len(encode_key(group_id, topic, partition)) + _TOMBSTONE_OVERHEAD
        if size > _EXPIRY_BATCH_BYTES and i > 0:
            return gone[:i]
    return gone


def _group_record(group: Group, assignments: dict[str, bytes]) -> GroupMetadata:
    """The group as Kafka's GroupMetadataManager stores it: each member's subscription for
    the chosen strategy, and its assignment (``assignments``: the one being settled)."""
    return GroupMetadata(
        protocol_type=group.protocol_type or "",
        generation=group.generation_id,
        protocol=group.protocol_name,
        leader=group.leader,
        current_state_timestamp=int(time.time() * 1000),
        members=[
            MemberMetadata(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.rebalance_timeout_ms,
                m.session_timeout_ms,
                m.metadata(group.protocol_name),
                assignments.get(m.member_id, b""),
            )
            for m in group.members.values()
        ],
    )


def _offsets(
    topics: list[OffsetCommitRequestTopic], now: int, retention_ms: int = -1
) -> list[tuple[str, int, OffsetAndMetadata]]:
    """The offsets a commit stores (those whose metadata is not too large); with a
    ``retention_ms`` of its own (OffsetCommit v2-v4; -1: none), each expires then."""
    # (Long.MAX_VALUE is "keep it": the sum stays an int64, as Kafka's Long does)
    expires = min(now + retention_ms, 2**63 - 1) if retention_ms >= 0 else -1
    return [
        (
            t.name,
            p.partition_index,
            OffsetAndMetadata(
                p.committed_offset, p.committed_leader_epoch, p.committed_metadata, now, expires
            ),
        )
        for t in topics
        for p in t.partitions
        if _partition_error(p.committed_metadata) == 0
    ]


def _known(
    topics: list[OffsetCommitRequestTopic], denied: set[str], unknown: set[tuple[str, int]]
) -> list[OffsetCommitRequestTopic]:
    """The part of a commit to store: its topics not ``denied``, their partitions not
    ``unknown``."""
    if not unknown:
        return [t for t in topics if t.name not in denied]
    kept = []
    for t in topics:
        if t.name in denied:
            continue
        partitions = [p for p in t.partitions if (t.name, p.partition_index) not in unknown]
        if partitions:
            kept.append(dataclasses.replace(t, partitions=partitions))
    return kept


def _commit_results(
    topics: list[OffsetCommitRequestTopic],
    denied: set[str],
    error: ApiError | None,
    unknown: set[tuple[str, int]],
    *,
    whole: bool = False,
) -> list[OffsetCommitResponseTopic]:
    """A commit's answer: TOPIC_AUTHORIZATION_FAILED for the ``denied`` topics,
    UNKNOWN_TOPIC_OR_PARTITION for the ``unknown`` partitions, and for the others
    ``error`` (the group's or the write's), else a partition's own error (else committed).
    ``whole``: ``error`` came before the partitions were sorted (the group may not be
    read), and is every partition's."""
    code = 0 if error is None else error.code

    def answer(topic: str, p: OffsetCommitRequestPartition) -> int:
        if whole and code:
            return code
        if topic in denied:
            return TopicAuthorizationFailedError.code
        if (topic, p.partition_index) in unknown:
            return UnknownTopicOrPartitionError.code
        return code or _partition_error(p.committed_metadata)

    return [
        OffsetCommitResponseTopic(
            name=t.name,
            partitions=[
                OffsetCommitResponsePartition(
                    partition_index=p.partition_index, error_code=answer(t.name, p)
                )
                for p in t.partitions
            ],
        )
        for t in topics
    ]


def _described_consumer_group(group: ConsumerGroup, names: Mapping[bytes, str]) -> DescribedGroup:
    """A group of the new protocol in DescribeGroups' classic form (Kafka 4.0 answers
    GROUP_ID_NOT_FOUND there, and describes it with ConsumerGroupDescribe only): its epoch
    as the generation, its assignor as the protocol, and each member's subscription and
    partitions in Kafka's ConsumerProtocol encoding, as Kafka's tools read a consumer
    group's (what ``headwater groups describe`` shows). ``names``: topic names by id."""
    return DescribedGroup(
        group_id=group.group_id,
        group_state=group.state,
        protocol_type="consumer",
        protocol_data=group.assignor,
        generation_id=group.epoch,
        members=[
            DescribedGroupMember(
                member_id=m.member_id,
                group_instance_id=m.instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                member_metadata=encode_subscription(
                    Subscription(sorted(m.subscribed), rack=m.rack_id)
                ),
                member_assignment=encode_assignment(
                    ProtocolAssignment(
                        [
                            TopicPartition(names[t], p)
                            for t, ps in m.assigned.items()
                            if t in names
                            for p in ps
                        ]
                    )
                ),
            )
            for m in group.members.values()
        ],
    )


def _check_heartbeat(request: ConsumerGroupHeartbeatRequest) -> None:
    """Kafka's checks of a ConsumerGroupHeartbeat before it touches the group."""
    epoch = request.member_epoch
    if not request.group_id:
        raise InvalidRequestError("GroupId can't be empty.")
    if request.instance_id == "" or request.rack_id == "":
        raise InvalidRequestError("InstanceId and RackId can't be empty (null if not set).")
    if epoch < STATIC_LEAVE:
        raise InvalidRequestError(f"MemberEpoch {epoch} is invalid.")
    if not request.member_id and epoch != 0:
        raise InvalidRequestError("MemberId can't be empty.")
    if epoch == STATIC_LEAVE and request.instance_id is None:
        raise InvalidRequestError("InstanceId can't be null when MemberEpoch is -2.")
    if epoch == 0:
        if request.rebalance_timeout_ms == -1:
            raise InvalidRequestError("RebalanceTimeoutMs must be provided in first request.")
        if request.topic_partitions is None or request.topic_partitions:
            raise InvalidRequestError("TopicPartitions must be empty when (re-)joining.")
        if request.subscribed_topic_names is None and request.subscribed_topic_regex is None:
            raise InvalidRequestError(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request."
            )


def _owned(topics: list[ConsumerGroupTopicPartitions] | None) -> Assignment | None:
    if topics is None:
        return None
    owned: Assignment = {}
    for t in topics:
        owned[bytes(t.topic_id)] = owned.get(bytes(t.topic_id), frozenset()) | frozenset(
            t.partitions
        )
    return owned


def _partition_error(metadata: str | None) -> int:
    if metadata is not None and len(metadata.encode()) > _MAX_METADATA_BYTES:
        return OffsetMetadataTooLargeError.code
    return 0


def _store_error(error: ApiError) -> ApiError:
    """Kafka's mapping for a failed group metadata write (GroupMetadataManager.storeGroup):
    retriable for the members, who find the coordinator again and keep their member ids."""
    if isinstance(error, NotLeaderOrFollowerError | KafkaStorageError):
        return NotCoordinatorError(
            f"the group's metadata could not be written here ({error.name}); find the "
            "coordinator again"
        )
    if error.retriable:
        return CoordinatorNotAvailableError(
            f"the group's metadata could not be replicated ({error.name}); retry shortly"
        )
    return UnknownServerError(f"the group's metadata could not be written: {error.name}")


def _append_error(code: int, message: str | None, what: str) -> ApiError:
    """The coordinator's answer for a failed append to its own topic (Kafka's mapping)."""
    if code == NotLeaderOrFollowerError.code:
        return NotCoordinatorError("this broker stopped coordinating the group; find it again")
    if code in (MessageTooLargeError.code, RecordListTooLargeError.code):
        return InvalidCommitOffsetSizeError(f"{what} is too large for the offsets topic")
    error = error_for_code(code, message)
    if error.retriable:
        return CoordinatorNotAvailableError(
            f"{what} could not be replicated ({error.name}); retry shortly"
        )
    return UnknownServerError(f"{what} failed: {error.name}")


def _subscribed_topics(group: Group | ConsumerGroup) -> set[str] | None:
    """The topics a consumer group's members subscribe to, from their subscriptions in
    Kafka's ConsumerProtocol; None if one cannot be read (then every topic counts as
    subscribed, as Kafka's does). A group of the new protocol says its own."""
    if isinstance(group, ConsumerGroup):
        return group.subscribed_topic_names()
    topics: set[str] = set()
    for member in group.members.values():
        try:
            topics.update(decode_subscription(member.metadata(group.protocol_name)).topics)
        except ProtocolError:
            return None
    return topics


async def _already(error: ApiError) -> ApiError | None:
    return error
