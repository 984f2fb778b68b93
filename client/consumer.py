"""The consumer: assigned partitions, positions, and a fetcher that prefetches.

Shaped like aiokafka's AIOKafkaConsumer. Partitions come one of two ways:

- **a group** (``group_id`` with topics, or ``subscribe(topics or pattern=...)``): the
  group's members share the topics' partitions (:mod:`client.membership` joins, syncs and
  heartbeats); each partition starts at the group's committed offset, or by
  ``auto_offset_reset`` if the group never committed one. Offsets are committed by
  ``commit()`` or, with ``enable_auto_commit``, every ``auto_commit_interval_ms``, before
  a rebalance takes the partitions away, and at ``stop()``.
- **manual** (``assign()``, or topics without a group_id: every partition at ``start()``).
  With a ``group_id`` too, ``commit()`` and ``committed()`` use the group's offsets.

The fetcher task sends ONE Fetch per leader broker covering all its fetchable
partitions, and sends the next one as soon as the previous answer is buffered, while the
user is still consuming it; a partition with about ``max_partition_fetch_bytes``
buffered waits until the user catches up (:mod:`client.fetcher` keeps that state). So
``getone`` in a loop is a buffer read, not a round trip per record.

Positions come from ``seek*`` or, when unknown, from ``auto_offset_reset`` by ListOffsets
(earliest/latest; "none" raises :class:`~client.errors.NoOffsetForPartitionError`). Per
partition Fetch errors: OFFSET_OUT_OF_RANGE resets the same way; NOT_LEADER_OR_FOLLOWER
and the other metadata errors refresh metadata and try again after ``retry_backoff_ms``;
anything else is raised to the user by the next ``getone``/``getmany``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import Any, NamedTuple

from client.assignors import ASSIGNORS
from client.cluster import Cluster, list_offsets_request, unknown_topic_error
from client.consumer_metrics import ConsumerMetrics
from client.coordinator import CommitOffsets, GroupOffsets
from client.errors import (
    ClientClosedError,
    CommitFailedError,
    ConfigurationError,
    LogTruncationError,
    NoOffsetForPartitionError,
)
from client.fetcher import FetchPosition, FetchSet, PartitionState, ReadReplicas, Subscription
from client.heartbeat_member import HeartbeatMember
from client.membership import GroupMember, MemberHooks, RebalanceListener
from client.metrics import NUM_SAMPLES, SAMPLE_WINDOW_MS, monotonic_ms
from client.security import TokenProvider, security_for
from client.types import (
    ConsumerGroupMetadata,
    ConsumerRecord,
    OffsetAndMetadata,
    OffsetAndTimestamp,
    TopicPartition,
)
from protocol.apis import (
    EARLIEST_TIMESTAMP,
    INVALID_SESSION_ID,
    LATEST_TIMESTAMP,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    ApiKey,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    ListOffsetsResponse,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderPartition,
    OffsetForLeaderTopic,
)
from protocol.errors import (
    ApiError,
    FencedInstanceIdError,
    IllegalGenerationError,
    OffsetOutOfRangeError,
    RebalanceInProgressError,
    RequestTimedOutError,
    StaleMemberEpochError,
    UnknownLeaderEpochError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from protocol.fetch_session import SESSION_ERRORS, FetchSessionBuilder, SessionRequest
from protocol.records import Record
from protocol.topic_id import ZERO_TOPIC_ID

__all__ = ["Consumer"]

_log = logging.getLogger("headwater.client.consumer")
_IN_REBALANCE: ContextVar[bool] = ContextVar("headwater_in_rebalance", default=False)
"""Set while a rebalance callback runs (and in what it awaits): a commit made there must
not wait for the rebalance to end."""

Deserializer = Callable[[bytes | None], Any]
_RESETS = {"earliest": EARLIEST_TIMESTAMP, "latest": LATEST_TIMESTAMP, "none": None}
_ISOLATION_LEVELS = {"read_uncommitted": READ_UNCOMMITTED, "read_committed": READ_COMMITTED}
_FETCH_PURPOSE = "fetch"  # long-polling fetches get their own connection per broker
_TAILING_BYTES = 16_384
"""A Fetch answer this small means the consumer is caught up: wake the user before writing
the next Fetch (latency); a larger one, write it first (throughput)."""
_Positions = Mapping[TopicPartition, FetchPosition]  # a Fetch's, by partition


class _Check(NamedTuple):
    """A position being validated (KIP-320), as it was when the leader was asked."""

    tp: TopicPartition
    state: PartitionState
    generation: int
    position: int
    epoch: int
    leader_epoch: int


class Consumer:
    """``async with Consumer("topic", bootstrap_servers=..., auto_offset_reset="earliest")``
    then ``async for record in consumer``."""

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | list[str],
        client_id: str = "headwater-consumer",
        group_id: str | None = None,
        group_instance_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        partition_assignment_strategy: str | Sequence[str] = ("range",),
        group_protocol: str = "classic",
        group_remote_assignor: str | None = None,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        auto_offset_reset: str = "latest",
        isolation_level: str = "read_uncommitted",
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 52_428_800,
        max_partition_fetch_bytes: int = 1_048_576,
        max_poll_records: int | None = 500,  # Kafka's max.poll.records; None: no limit
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        metadata_max_age_ms: int = 300_000,
        client_rack: str = "",
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        sasl_mechanism: str = "PLAIN",
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        sasl_oauth_token_provider: TokenProvider | None = None,
        sasl_token_auth: bool = False,
        sasl_kerberos_service_name: str = "kafka",
        sasl_kerberos_domain_name: str | None = None,
        sasl_kerberos_keytab: str | None = None,
        sasl_kerberos_principal: str | None = None,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
        metrics_num_samples: int = NUM_SAMPLES,
        metrics_sample_window_ms: int = SAMPLE_WINDOW_MS,
    ) -> None:
        _check_metrics_settings(metrics_num_samples, metrics_sample_window_ms)
        if group_id is not None and not group_id:
            raise ConfigurationError("group_id must not be empty")
        strategies = _strategies(partition_assignment_strategy)
        _check_group_settings(
            group_instance_id,
            group_protocol=group_protocol,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            auto_commit_interval_ms=auto_commit_interval_ms,
        )
        if auto_offset_reset not in _RESETS:
            raise ConfigurationError(
                f"auto_offset_reset={auto_offset_reset!r} is invalid; use 'earliest', "
                f"'latest' or 'none'"
            )
        if isolation_level not in _ISOLATION_LEVELS:
            raise ConfigurationError(
                f"isolation_level={isolation_level!r} is invalid; use 'read_uncommitted' "
                "(every record) or 'read_committed' (only committed transactions' records)"
            )
        if max_poll_records is not None and max_poll_records < 1:
            raise ConfigurationError(f"max_poll_records={max_poll_records} must be at least 1")
        if request_timeout_ms <= fetch_max_wait_ms:
            raise ConfigurationError(
                f"request_timeout_ms={request_timeout_ms} must be more than "
                f"fetch_max_wait_ms={fetch_max_wait_ms}, or every long poll would time out"
            )
        self._initial_topics = list(dict.fromkeys(topics))
        self.client_id = client_id
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.auto_offset_reset = auto_offset_reset
        self.isolation_level = isolation_level
        self._isolation = _ISOLATION_LEVELS[isolation_level]
        self._stable = self._isolation == READ_COMMITTED  # KIP-447: no offsets in flux
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.max_poll_records = max_poll_records
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self._read_replicas = ReadReplicas(client_rack, metadata_max_age_ms)
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        tls, login = security_for(
            security_protocol,
            ssl_context,
            sasl_mechanism,
            sasl_plain_username,
            sasl_plain_password,
            sasl_oauth_token_provider=sasl_oauth_token_provider,
            sasl_token_auth=sasl_token_auth,
            sasl_kerberos_service_name=sasl_kerberos_service_name,
            sasl_kerberos_domain_name=sasl_kerberos_domain_name,
            sasl_kerberos_keytab=sasl_kerberos_keytab,
            sasl_kerberos_principal=sasl_kerberos_principal,
        )
        self._cluster = Cluster(
            bootstrap_servers,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            metadata_max_age_ms=metadata_max_age_ms,
            allow_auto_topic_creation=True,
            tls=tls,
            login=login,
        )
        # room for two answers per partition: the next one arrives while the user is still
        # decoding the last (with one, every Fetch waited for the user to finish)
        self._subscription = Subscription(max_buffer_bytes=2 * max_partition_fetch_bytes)
        # the module's clock, looked up now: a test drives the metrics' time through it
        self._clock = monotonic_ms
        self._last_poll: float | None = None
        """When the user last polled (ms on ``_clock``); None: never."""
        self._started_ms = self._clock()
        self._metrics = ConsumerMetrics(
            samples=metrics_num_samples,
            window_ms=metrics_sample_window_ms,
            clock=self._clock,
            # Kafka's consumer has coordinator metrics only with a group.id
            assigned_partitions=None if group_id is None else self._assigned_count,
            last_poll_ms=lambda: self._last_poll,
        )
        self._unrecorded = self._metrics.unrecorded  # getone()'s count, one lookup less
        self._moved = self._subscription.moved  # partitions moved past a batch: their lag
        self.group_id = group_id
        self._offsets = (
            None
            if group_id is None
            else GroupOffsets(
                self._cluster,
                group_id,
                request_timeout_ms=request_timeout_ms,
                retry_backoff_ms=retry_backoff_ms,
                metrics=self._metrics.group,
            )
        )
        self._member: GroupMember | HeartbeatMember | None = None
        if self._offsets is not None:
            self._member = self._new_member(
                self._offsets,
                group_protocol,
                group_instance_id=group_instance_id,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                assignors=strategies,
                remote_assignor=group_remote_assignor,
                retry_backoff_ms=retry_backoff_ms,
                metadata_max_age_ms=metadata_max_age_ms,
                client_rack=client_rack,
            )
        self._subscribed = False
        self._pattern: str | None = None
        self._listener: RebalanceListener | None = None
        self._group_error: BaseException | None = None
        self._holding = False  # a rebalance's revoke or on_partitions_assigned runs: records wait
        self._polling = 0
        self._commit_lock = asyncio.Lock()
        self._commit_order = _CommitOrder()
        self._auto_committer: asyncio.Task[None] | None = None
        self._init_fetcher()
        self._wakeup: asyncio.Event | None = None
        self._data: asyncio.Event | None = None
        self._state = "new"
        self._rotation = 0

    def _new_member(
        self,
        offsets: GroupOffsets,
        group_protocol: str,
        *,
        group_instance_id: str | None,
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
        max_poll_interval_ms: int,
        assignors: list[str],
        remote_assignor: str | None,
        retry_backoff_ms: int,
        metadata_max_age_ms: int,
        client_rack: str,
    ) -> GroupMember | HeartbeatMember:
        """The group membership of ``group_protocol``: the classic one (JoinGroup and
        SyncGroup, the assignors here) or Kafka 4's (KIP-848: the brokers assign)."""
        hooks = MemberHooks(
            self._revoked, self._assigned, self._poll_age_ms, self._group_failed, self._lost
        )
        if group_protocol == "consumer":
            return HeartbeatMember(
                self._cluster,
                offsets,
                hooks,
                group_instance_id=group_instance_id,
                max_poll_interval_ms=max_poll_interval_ms,
                retry_backoff_ms=retry_backoff_ms,
                remote_assignor=remote_assignor,
                rack_id=client_rack,
            )
        return GroupMember(
            self._cluster,
            offsets,
            hooks,
            group_instance_id=group_instance_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            assignors=assignors,
            retry_backoff_ms=retry_backoff_ms,
            metadata_max_age_ms=metadata_max_age_ms,
            metrics=self._metrics.group,
            client_rack=client_rack,
        )

    def _init_fetcher(self) -> None:
        self._fetcher: asyncio.Task[None] | None = None
        self._fetches: dict[int, asyncio.Task[None] | None] = {}
        """The Fetch in flight per broker: a task while it connects, else None (written
        with send_now, answered in the read callback)."""
        self._sessions: dict[int, FetchSessionBuilder] = {}
        """A fetch session per broker (KIP-227): a Fetch names only the partitions whose
        position moved, and the answer carries only those with news."""
        self._asking: dict[int, SessionRequest] = {}  # the Fetch in flight to each broker
        self._fetch_sent_ms: dict[int, float] = {}  # when each broker's Fetch went out
        self._parts: dict[int, dict[tuple[str, int], FetchPartition]] = {}
        """What each broker's Fetch asks for: a partition's entry is made once per
        position (:class:`FetchPosition`) and kept while it holds, so a session sends
        only new entries."""
        self._validators: dict[int, asyncio.Task[None]] = {}
        """Per leader, the task asking it whether positions read under an older leader
        still hold (one per leader: a slow one holds up only its own partitions)."""
        self._checking: dict[TopicPartition, int] = {}
        """The partitions those tasks ask about, at the generation asked: one moved since
        (a new leader) is asked again at once, not after the old leader's request."""
        self._topic_ids: dict[str, bytes] = {}
        """The id each assigned topic had in the metadata (KIP-516; see
        :meth:`_follow_topic_ids`), the ids each had before, and the metadata view and
        assignment last looked at."""
        self._retired_ids: dict[str, set[bytes]] = {}
        self._ids_refreshed_at = float("-inf")  # (monotonic) see _ids_before_reset
        self._ids_view: tuple[object, object] | None = None

    # --- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._state != "new":
            raise ClientClosedError(f"the consumer is {self._state}; start() runs once")
        self._wakeup = asyncio.Event()
        self._data = asyncio.Event()
        await self._cluster.start()
        self._cluster.on_update.append(lambda _metadata: self._wake())
        try:
            if self._initial_topics and self._member is None:
                tps = []
                for topic in self._initial_topics:
                    meta = await self._cluster.wait_for_topic(topic, self.request_timeout_ms)
                    tps += [TopicPartition(topic, p) for p in sorted(meta.partitions)]
                self._assign_partitions(tps)
        except BaseException:
            await self._cluster.close()
            self._state = "stopped"
            raise
        self._cluster.set_topics(tp.topic for tp in self._subscription.states)
        self._state = "running"
        self._started_ms = self._clock()  # the poll timeout counts from here until a poll
        loop = asyncio.get_running_loop()
        self._fetcher = loop.create_task(self._run_fetcher())
        if self._initial_topics and self._member is not None and not self._subscribed:
            self.subscribe(self._initial_topics)
        elif self._subscribed:
            self._start_member()
        if self.enable_auto_commit:
            self._auto_committer = loop.create_task(self._auto_commit())

    async def stop(self) -> None:
        """Commit (with auto-commit), leave the group, close the connections."""
        if self._state == "running":
            if self._auto_committer is not None:
                self._auto_committer.cancel()
            if self._member is not None and self._subscribed:
                await self._member.stop()  # revokes: commits, with auto-commit, then leaves
            elif self.enable_auto_commit:
                await self._commit_quietly()
        self._state = "stopped"
        if self._data is not None:
            self._data.set()  # wake getone()/async-for waiters: they end
        self._close_sessions()
        await self._cluster.close()  # fails requests in flight, so the tasks end at once
        tasks = [
            t
            for t in (
                self._fetcher,
                self._auto_committer,
                *self._validators.values(),
                *self._fetches.values(),
            )
            if t is not None
        ]  # a Fetch written with send_now failed with the connection: nothing to cancel
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _close_sessions(self) -> None:
        """Ask each broker to drop this consumer's fetch session, as Kafka's consumer does
        when it closes: else a consumer of 1,000 partitions leaves 1,000 entries in a
        cache slot of every broker until the slot is wanted and 2 minutes idle. Nothing
        waits for the answer (the connections close next; it would come after a fetch
        parked at the broker): the broker acts on the request as it reads it."""
        for node, session in self._sessions.items():
            closing = session.close()
            conn = self._cluster.connection_now(node, _FETCH_PURPOSE)
            if closing is None or conn is None:
                continue
            request = FetchRequest(
                max_wait_ms=0,
                min_bytes=0,
                max_bytes=0,
                session_id=closing.session_id,
                session_epoch=closing.session_epoch,
            )
            with contextlib.suppress(ApiError):  # the connection went already: so did we
                conn.send_now(ApiKey.FETCH, request, None)

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- assignment and positions ------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Take these partitions by hand (no group membership, no rebalancing)."""
        if self._subscribed:
            raise ConfigurationError(
                "this consumer subscribed to topics as a group member: assign() and "
                "subscribe() exclude each other; unsubscribe() first"
            )
        tps = [TopicPartition(*tp) for tp in partitions]
        self._assign_partitions(tps)
        self._cluster.set_topics(tp.topic for tp in tps)
        if self._state == "running":
            self._cluster.request_refresh()
        self._wake()

    def assignment(self) -> set[TopicPartition]:
        return set(self._subscription.states)

    def _assign_partitions(self, tps: Iterable[TopicPartition]) -> None:
        """The new assignment; the metrics of partitions given up go (as Kafka's)."""
        self._subscription.assign(tps)
        self._metrics.keep_partitions(self._subscription.states)

    def _assigned_count(self) -> int:
        return len(self._subscription.states)

    # --- metrics ---------------------------------------------------------------------------

    def metrics(self) -> dict[str, dict[str, float]]:
        """Kafka's consumer metrics now, as ``{group: {name: value}}`` (kafka-python's
        ``metrics()``), before ``start()`` and after ``stop()`` too. The ``-avg``,
        ``-max`` and ``-rate`` metrics span the last ``metrics_num_samples`` windows of
        ``metrics_sample_window_ms`` (NaN when nothing was recorded in them; rates per
        second); ``-total`` ones count since the consumer was made.

        ``consumer-fetch-manager-metrics``:

        - ``records-consumed-total``/``-rate``: records handed to the application
          (getone, getmany, ``async for``); ``bytes-consumed-total``/``-rate``: their
          bytes, counted as the record batches' size on the wire (header included,
          compressed if the batch is), each batch once the application has had its last
          record (Kafka counts each record's size as it hands it out);
        - ``fetch-total``, ``fetch-rate``: Fetch responses; ``fetch-latency-avg``/``-max``:
          ms from a Fetch request to its response; ``fetch-size-avg``/``-max``: record
          bytes per response; ``records-per-request-avg``: records per response (in the
          batches the application will see); ``fetch-throttle-time-avg``/``-max``: the
          response's throttle_time_ms;
        - ``records-lag-max``: the largest lag of any partition (high watermark, or the
          last stable offset with read_committed, minus the position), recorded as the
          position moves (each getmany() for the partitions it returned from, a step past
          markers, and a getone() once per batch it finishes); ``records-lead-min``: the
          least lead (the position minus the log start offset).

        ``consumer-fetch-manager-metrics.<topic>``: ``records-consumed-total``/``-rate``
        and ``bytes-consumed-total``/``-rate`` of that topic.

        ``consumer-fetch-manager-metrics.<topic>[<partition>]``, from the partition's first
        Fetch response until it is unassigned: ``records-lag`` (the latest),
        ``records-lag-avg``, ``records-lag-max``, and ``records-lead``,
        ``records-lead-avg``, ``records-lead-min``.

        ``consumer-coordinator-metrics`` (with a ``group_id`` only): ``commit-total``,
        ``commit-rate``, ``commit-latency-avg``/``-max`` (OffsetCommit round trips, by
        commit() and auto-commit); ``assigned-partitions``; ``rebalance-total``,
        ``rebalance-rate-per-hour``, ``rebalance-latency-avg``/``-max``/``-total`` (ms from
        the first JoinGroup to the SyncGroup that ends it), ``failed-rebalance-total``,
        ``failed-rebalance-rate-per-hour``, ``last-rebalance-seconds-ago``;
        ``heartbeat-total``, ``heartbeat-rate``, ``heartbeat-response-time-max``,
        ``last-heartbeat-seconds-ago`` (the ``seconds-ago`` ones: -1 before any).

        ``consumer-metrics``: ``last-poll-seconds-ago`` (-1 before any poll; getone and
        iteration are polls too); ``time-between-poll-avg``/``-max`` (ms from one
        getmany() start to the next) and ``poll-idle-ratio-avg`` (the share of that time
        spent inside getmany()): of getmany() calls only, since a sensor update per
        getone() would be one per record.
        """
        return self._metrics.snapshot(self._subscription.taken_bytes)

    # --- group membership (subscribe) ----------------------------------------------------

    def subscribe(
        self,
        topics: Iterable[str] = (),
        *,
        pattern: str | None = None,
        listener: RebalanceListener | None = None,
    ) -> None:
        """Join the group for ``topics``, or for every topic whose whole name matches the
        regular expression ``pattern`` (new ones are found every metadata_max_age_ms).

        The group's members share the partitions; ``listener`` hears of each change.
        """
        if self._member is None:
            raise ConfigurationError("subscribe() needs a group_id; without one, use assign()")
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names and pattern is None:
            raise ConfigurationError("subscribe() needs topics or a pattern")
        if pattern is not None and names:
            raise ConfigurationError("subscribe() takes topics or a pattern, not both")
        if not self._subscribed and self._subscription.states:
            raise ConfigurationError(
                "this consumer has partitions from assign(): subscribe() and assign() exclude "
                "each other; assign([]) first"
            )
        self._listener = listener
        self._pattern = pattern
        self._member.subscribe(names, pattern)
        first = not self._subscribed
        self._subscribed = True
        if first and self._state == "running":
            self._start_member()

    def subscription(self) -> set[str]:
        """The topics this consumer subscribed to (empty for a pattern or assign())."""
        return set(self._member.topics) if self._member and self._subscribed else set()

    async def unsubscribe(self) -> None:
        """Leave the group and give up every partition (commits first, with auto-commit)."""
        if not self._subscribed or self._member is None:
            return
        await self._member.stop()
        self._subscribed = False
        self._member.topics, self._member.pattern = set(), None

    def _start_member(self) -> None:
        assert self._member is not None
        self._member.start()

    async def _revoked(self, partitions: set[TopicPartition] | None = None) -> None:
        """The member gives partitions up (None: all): commit, tell the user, stop fetching."""
        owned = self.assignment()
        revoked = owned if partitions is None else owned & partitions
        # nothing more is handed out: the commit below (an await) is then of what the user
        # got, and a record taken meanwhile is not read again by the next owner (Kafka's
        # poll() drives its rebalance, so none can be taken during it there)
        self._holding = True
        token = _IN_REBALANCE.set(True)
        try:
            if self.enable_auto_commit:
                await self._commit_quietly()
            if self._listener is not None and revoked:
                try:
                    await self._listener.on_partitions_revoked(revoked)
                except Exception:
                    _log.exception("on_partitions_revoked raised; the rebalance goes on")
            self._assign_partitions(tp for tp in self._subscription.states if tp not in revoked)
        finally:
            _IN_REBALANCE.reset(token)
            self._holding = False
        self._wake()

    async def _lost(self, partitions: set[TopicPartition] | None = None) -> None:
        """The group dropped this member (``partitions`` None: all), or a topic it reads
        was deleted: nothing more of them is handed out and nothing is committed (another
        member may own them already; a commit would be refused for want of a generation,
        or land in a topic made again under the name); the user hears of it while their
        positions can still be read (Kafka's order), then they go."""
        owned = self.assignment()
        lost = owned if partitions is None else owned & partitions
        self._holding = True
        token = _IN_REBALANCE.set(True)
        try:
            if self._listener is not None and lost:
                try:
                    await self._listener.on_partitions_lost(lost)
                except Exception:
                    _log.exception("on_partitions_lost raised; the rebalance goes on")
            self._assign_partitions(tp for tp in self._subscription.states if tp not in lost)
        finally:
            _IN_REBALANCE.reset(token)
            self._holding = False
        self._wake()

    async def _assigned(self, tps: list[TopicPartition], added: set[TopicPartition]) -> None:
        self._assign_partitions(tps)
        self._cluster.add_topics(tp.topic for tp in tps)
        self._wake()
        if self._listener is not None:
            self._holding = True
            token = _IN_REBALANCE.set(True)
            try:
                await self._listener.on_partitions_assigned(set(added))
            except Exception:
                _log.exception("on_partitions_assigned raised; the consumer goes on")
            finally:
                _IN_REBALANCE.reset(token)
                self._holding = False
                self._data_arrived()

    def _poll_age_ms(self) -> float:
        if self._polling:
            return 0.0
        last = self._last_poll
        return self._clock() - (self._started_ms if last is None else last)

    def _group_failed(self, error: BaseException) -> None:
        _log.error("group %r: %s", self.group_id, error)
        self._group_error = error
        self._data_arrived()

    # --- committed offsets (group_id) -------------------------------------------------

    async def commit(self, offsets: CommitOffsets | None = None) -> None:
        """Commit ``offsets`` (per partition the next offset to read, or an
        :class:`~client.types.OffsetAndMetadata` with a string of yours stored beside it),
        or, without them, the current position of every assigned partition. Needs
        ``group_id``.

        A group member whose generation is over (the group rebalanced without it) gets
        :class:`~client.errors.CommitFailedError`: its records after the last commit will
        be delivered again, to whoever owns their partitions now. With the cooperative
        protocol a commit the coordinator defers because a rebalance is under way waits for
        it to end and goes again, if this consumer still owns those partitions.
        """
        group = self._group_offsets()
        epochs: dict[TopicPartition, int] = {}
        if offsets is None:
            offsets = self._positions()
            states = self._subscription.states
            epochs = {tp: states[tp].epoch for tp in offsets}
        if not offsets:
            return
        wanted: CommitOffsets = {TopicPartition(*tp): o for tp, o in offsets.items()}
        mine = self._commit_order.begin()
        deadline: float | None = None
        while True:
            member = self._member if self._subscribed else None
            try:
                async with self._commit_lock:  # one at a time: a retry never goes backwards
                    wanted = self._commit_order.not_overtaken(wanted, mine)
                    if not wanted:
                        return
                    await self._commit_once(group, member, wanted, epochs)
                    self._commit_order.written(wanted, mine)
                return
            except CommitFailedError as failed:
                assert member is not None
                if not (
                    member.cooperative
                    and isinstance(failed.__cause__, _COMMIT_AGAIN)
                    and not _IN_REBALANCE.get()  # the rebalance waits on this very callback
                ):
                    raise
                if deadline is None:  # a rebalance ends within its timeout, or drops us
                    deadline = time.monotonic() + member.max_poll_interval_ms / 1000
                settled = await member.wait_settled(deadline - time.monotonic())
                if not settled or not wanted.keys() <= self.assignment():
                    raise

    async def _commit_once(
        self,
        group: GroupOffsets,
        member: GroupMember | HeartbeatMember | None,
        wanted: CommitOffsets,
        epochs: dict[TopicPartition, int],
    ) -> None:
        if member is None:
            await group.commit(wanted, epochs=epochs)
            return
        if member.generation_id < 0:
            raise CommitFailedError(
                f"group {self.group_id!r} is rebalancing and this consumer has no "
                f"generation: the commit cannot be accepted; commit after the next poll"
            )
        try:
            await group.commit(
                wanted,
                epochs=epochs,
                generation_id=member.generation_id,
                member_id=member.member_id,
                group_instance_id=member.group_instance_id,
            )
        except _STALE_MEMBER as exc:
            if not isinstance(exc, RebalanceInProgressError):
                member.request_rejoin(f"a commit was refused: {exc}")
            raise CommitFailedError(
                f"group {self.group_id!r} refused the commit of generation "
                f"{member.generation_id} ({exc.name}): the group has rebalanced and these "
                f"partitions may belong to another member now; records after the last "
                f"commit will be delivered again"
            ) from exc

    def _positions(self) -> dict[TopicPartition, int]:
        out = {}
        for tp, state in self._subscription.states.items():
            if state.position is not None:
                out[tp] = state.position
        return out

    async def _commit_quietly(self) -> bool:
        """Auto-commit: a failure is logged; the next one, or the rebalance, catches up."""
        try:
            await self.commit()
        except (ApiError, CommitFailedError) as exc:
            _log.warning("group %r: auto-commit failed: %s", self.group_id, exc)
            return False
        return True

    async def _auto_commit(self) -> None:
        committed: dict[TopicPartition, int] = {}
        while True:
            await asyncio.sleep(self.auto_commit_interval_ms / 1000)
            positions = self._positions()
            if positions and positions != committed and await self._commit_quietly():
                committed = positions  # a failed commit is tried again next time

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset of ``partition`` (None: never committed)."""
        tp = TopicPartition(*partition)
        return (await self._group_offsets().committed([tp], require_stable=self._stable))[tp]

    async def committed_offsets(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """The group's committed offsets of ``partitions`` with their metadata and leader
        epochs (Kafka's committed(Set)); None where the group has none."""
        tps = [TopicPartition(*tp) for tp in partitions]
        return await self._group_offsets().committed_offsets(tps, require_stable=self._stable)

    def _group_offsets(self) -> GroupOffsets:
        self._check_running()
        if self._offsets is None:
            raise ConfigurationError("commit() and committed() need a group_id")
        return self._offsets

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._subscription.seek(partition, offset)
        self._wake()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        await self._seek_to(EARLIEST_TIMESTAMP, partitions)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        await self._seek_to(LATEST_TIMESTAMP, partitions)

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching ``partitions`` and handing out their records (Kafka's pause()):
        what is buffered stays buffered, and positions stay where they are. For a slow
        sink: the group membership goes on (polls still count), unlike a loop that stops
        calling getmany(). :meth:`assign` keeps the pause of a partition it keeps; a group
        rebalance ends every pause with the eager protocol, as in Kafka (it revokes every
        partition first): pause again in ``on_partitions_assigned`` if the sink is still
        slow; with ``cooperative-sticky`` a partition the consumer keeps stays paused."""
        for tp in partitions:
            self._subscription.state(tp)  # not assigned: ValueError before any change
        for tp in partitions:
            self._subscription.pause(tp)

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` again, and hand out what they have buffered."""
        for tp in partitions:
            self._subscription.state(tp)
        buffered = [self._subscription.resume(tp) for tp in partitions]
        self._wake()
        if any(buffered):
            self._data_arrived()

    def paused(self) -> set[TopicPartition]:
        """The assigned partitions paused by :meth:`pause`."""
        return self._subscription.paused()

    def group_metadata(self) -> ConsumerGroupMetadata:
        """This member's group, generation and member id, for a transactional producer's
        ``send_offsets_to_transaction`` (Kafka's groupMetadata(), KIP-447): the coordinator
        then refuses the offsets if the group has rebalanced since, so a member that lost
        its partitions cannot commit a transaction that consumed from them."""
        if self.group_id is None:
            raise ConfigurationError("group_metadata() needs a group_id")
        member = self._member if self._subscribed else None
        if member is None:
            return ConsumerGroupMetadata(self.group_id)
        return ConsumerGroupMetadata(
            self.group_id, member.generation_id, member.member_id, member.group_instance_id
        )

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's high watermark as of the last Fetch answer that carried it
        (None before one): ``highwater - position`` is the consumer's lag."""
        hw = self._subscription.state(partition).high_watermark
        return hw if hw >= 0 else None

    def last_stable_offset(self, partition: TopicPartition) -> int | None:
        """The partition's last stable offset as of the last Fetch answer (None before
        one): where a read_committed consumer stops while a transaction is open, and
        ``last_stable_offset - position`` its lag."""
        lso = self._subscription.state(partition).last_stable_offset
        return lso if lso >= 0 else None

    async def _seek_to(self, timestamp: int, partitions: tuple[TopicPartition, ...]) -> None:
        tps = list(partitions) or list(self._subscription.states)
        for tp in tps:
            self._subscription.state(tp)  # not assigned: ValueError before any request
        offsets = await self._list_offsets(dict.fromkeys(tps, timestamp))
        for tp, (offset, _ts) in offsets.items():
            if tp in self._subscription.states:  # still assigned after the wait
                self._subscription.seek(tp, offset)
        self._wake()

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record getone() returns for the partition."""
        self._check_running()
        while (position := self._subscription.state(partition).position) is None:
            generation = self._subscription.state(partition).generation
            offset, epoch = await self._reset_offset(partition)
            self._subscription.set_reset_position(partition, offset, generation, epoch)
            self._wake()
        return position

    async def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """Per partition, the first offset whose timestamp is at least the given one."""
        for tp, ts in timestamps.items():
            if ts < 0:
                raise ValueError(f"timestamp {ts} for {tp} is negative; give milliseconds")
        found = await self._list_offsets(dict(timestamps))
        return {
            tp: None if offset < 0 else OffsetAndTimestamp(offset, ts)
            for tp, (offset, ts) in found.items()
        }

    async def beginning_offsets(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        found = await self._list_offsets(dict.fromkeys(partitions, EARLIEST_TIMESTAMP))
        return {tp: offset for tp, (offset, _ts) in found.items()}

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self._list_offsets(dict.fromkeys(partitions, LATEST_TIMESTAMP))
        return {tp: offset for tp, (offset, _ts) in found.items()}

    async def topics(self) -> set[str]:
        self._check_running()
        metadata = await self._cluster.fetch_metadata(None)
        return set(metadata.topics)

    async def partitions_for_topic(self, topic: str) -> set[int]:
        self._check_running()
        metadata = await self._cluster.fetch_metadata([topic])
        partitions = metadata.partitions_for(topic)
        if partitions is not None:
            return partitions
        error = metadata.topic_errors.get(topic)
        if error is None or isinstance(error, UnknownTopicOrPartitionError):
            raise unknown_topic_error(topic)
        raise error

    # --- records -------------------------------------------------------------------------

    async def getone(self, *partitions: TopicPartition) -> ConsumerRecord:
        """The next record (of ``partitions``, or of any assigned one), waiting for it."""
        while True:
            got = self._take(partitions, 1)
            for tp, records in got.items():
                self._unrecorded[tp.topic] += 1  # a count: a sensor per record is slow
                if self._moved:  # a batch finished: its partition's lag, once per batch
                    self._record_lags(())
                return records[0]
            await self._wait_for_data(None)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """What is buffered now, or what arrives within ``timeout_ms``; {} if nothing."""
        deadline = time.monotonic() + timeout_ms / 1000
        limit = max_records if max_records is not None else self.max_poll_records
        metrics = self._metrics
        started = metrics.poll_started()
        while True:
            got = self._take(partitions, limit)
            remaining_s = deadline - time.monotonic()
            if got or remaining_s <= 0:
                metrics.consumed(got)  # counted; the sensors take it at the next fetch
                if got or self._moved:
                    self._record_lags(got)
                metrics.poll_ended(started)
                return got
            await self._wait_for_data(remaining_s)

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        try:
            return await self.getone()
        except ClientClosedError:
            if self._state == "stopped":
                raise StopAsyncIteration from None  # stop() ends the loop
            raise

    def _take(
        self, partitions: tuple[TopicPartition, ...], limit: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        self._check_running()
        assert self._data is not None
        self._data.clear()
        self._last_poll = self._clock()
        if self._group_error is not None:
            raise self._group_error
        if self._member is not None and self._subscribed:
            self._member.polled()
            if self._holding:
                return {}
        freed = self._subscription.chunks_consumed
        # without deserializers the decoder makes the ConsumerRecords itself (make=None)
        make = self._record if self._key_deserializer or self._value_deserializer else None
        got = self._subscription.take(partitions, limit, make)
        if not got:
            error = self._subscription.pop_error(partitions)
            if error is not None:
                self._wake()  # the fetcher looks again: raised once, re-raised if it persists
                raise error
        elif self._subscription.chunks_consumed != freed:
            self._wake()  # buffer space freed: the fetcher may fetch those partitions again
        return got

    def _record(self, tp: TopicPartition, record: Record) -> ConsumerRecord:
        key, value = record.key, record.value
        if self._key_deserializer is not None:
            key = self._key_deserializer(key)
        if self._value_deserializer is not None:
            value = self._value_deserializer(value)
        return ConsumerRecord(
            tp.topic,
            tp.partition,
            record.offset,
            record.timestamp,
            key,
            value,
            record.headers,
            record.timestamp_type,
        )

    async def _wait_for_data(self, timeout_s: float | None) -> None:
        assert self._data is not None
        self._polling += 1  # a poll waiting for records is polling (max_poll_interval_ms)
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own,
            # which costs the user two more loop iterations after the data arrives
            async with asyncio.timeout(timeout_s):
                await self._data.wait()
        except TimeoutError:
            return
        finally:
            self._polling -= 1
            self._last_poll = self._clock()

    def _check_running(self) -> None:
        if self._state != "running":
            what = "not started; call start()" if self._state == "new" else self._state
            raise ClientClosedError(f"the consumer is {what}")

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _data_arrived(self) -> None:
        if self._data is not None:
            self._data.set()

    # --- the fetcher -----------------------------------------------------------------------

    async def _run_fetcher(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while self._state == "running":
            self._wakeup.clear()
            try:
                delay_ms = await self._fetcher_pass()
            except Exception as exc:  # never a silent stop: the getters raise it
                _log.exception("the consumer's fetcher failed; it retries")
                for tp, state in self._subscription.states.items():
                    if state.error is None:
                        self._subscription.set_error(tp, exc)
                self._data_arrived()
                delay_ms = self.retry_backoff_ms
            timer = None
            if delay_ms is not None:
                timer = loop.call_later(delay_ms / 1000, self._wakeup.set)
            await self._wakeup.wait()
            if timer is not None:
                timer.cancel()

    async def _fetcher_pass(self) -> float | None:
        """Reset unknown positions, send the Fetches due; returns ms until the next pass."""
        self._follow_topic_ids()
        delay_ms: float | None = None
        if self._subscription.needs_position():
            delay_ms = await self._reset_positions()
            self._follow_topic_ids()  # before any Fetch under a view its waits brought in
        now_ms = time.monotonic() * 1000
        subscription = self._subscription
        by_node = subscription.fetchable_by_leader(
            now_ms,
            self._targets(now_ms),
            epochs=self._cluster.metadata.leader_epochs(),
            busy=self._fetches,
        )
        unknown = by_node.pop(None, None)
        unsent = {node for node in by_node if node is not None}
        try:
            for asked in unknown.positions.values() if unknown is not None else ():
                self._cluster.request_refresh()  # rate-limited to one per retry_backoff_ms
                delay_ms = _earliest(delay_ms, self.retry_backoff_ms)
                if self._topic_missing(asked.tp.topic):
                    subscription.fail(asked, unknown_topic_error(asked.tp.topic))
                    self._data_arrived()
            for node, fetch in by_node.items():
                assert node is not None  # and not busy: see fetchable_by_leader
                unsent.discard(node)
                self._start_fetch(node, fetch)
        finally:
            for node in unsent:  # a bug raised: what these sets changed is compared again
                subscription.not_sent(node)
        self._start_validations(now_ms)
        retry_at = subscription.next_retry_ms(now_ms)
        if retry_at is not None:
            delay_ms = _earliest(delay_ms, retry_at - now_ms)
        return delay_ms

    def _start_fetch(self, node: int, fetch: FetchSet) -> None:
        try:
            self._send_fetch(node, fetch)
        except BaseException:
            # a bug (an ApiError is an answer): the broker is not left busy forever, and
            # the next Fetch to it is compared in full, as this one may not have gone
            if node in self._fetches and self._fetches[node] is None:
                del self._fetches[node]  # (a task's end removes it itself)
            self._subscription.not_sent(node)
            self._forget_session(node)
            raise

    def _send_fetch(self, node: int, fetch: FetchSet) -> None:
        positions, request = fetch.positions, self._fetch_request(node, fetch)
        self._fetch_sent_ms[node] = self._clock()  # (fetch-latency: connecting included)
        conn = self._cluster.connection_now(node, _FETCH_PURPOSE)
        if conn is None:  # not connected yet: a task connects first
            task = asyncio.get_running_loop().create_task(self._fetch(node, positions, request))
            self._fetches[node] = task
            return
        self._fetches[node] = None

        def on_answer(response: Any, error: BaseException | None) -> None:
            self._fetched(node, positions, response, error)

        try:
            conn.send_now(ApiKey.FETCH, request, on_answer)
        except ApiError as exc:
            self._fetched(node, positions, None, exc)

    def _fetch_again(self, node: int) -> None:
        """``node`` answered: its next Fetch now (see :meth:`_fetched` for when), rather
        than at a pass of the fetcher a few loop iterations later."""
        if self._state != "running" or node in self._fetches:
            return
        self._follow_topic_ids()
        now_ms = time.monotonic() * 1000
        by_node = self._subscription.fetchable_by_leader(
            now_ms,
            self._targets(now_ms),
            epochs=self._cluster.metadata.leader_epochs(),
            only=node,
        )
        fetch = by_node.get(node)
        if fetch is not None:
            self._start_fetch(node, fetch)

    def _targets(self, now_ms: float) -> Mapping[TopicPartition, int]:
        metadata = self._cluster.metadata
        return self._read_replicas.targets(metadata.leaders(), metadata.brokers, now_ms)

    def _topic_missing(self, topic: str) -> bool:
        error = self._cluster.metadata.topic_errors.get(topic)
        return isinstance(error, UnknownTopicOrPartitionError)

    async def _reset_positions(self) -> float | None:
        """Positions for partitions without one, by auto_offset_reset.

        A partition of a topic that does not exist gets that error; the others go on.
        """
        tps = await self._ids_before_reset(self._subscription.needs_position())
        if self._offsets is not None and tps:
            rest = await self._positions_from_commits(tps)
            if rest is None:
                return self.retry_backoff_ms
            tps = [tp for tp in rest if tp in self._subscription.states]  # still assigned
        timestamp = _RESETS[self.auto_offset_reset]
        if timestamp is None:
            for tp in tps:
                self._subscription.set_error(
                    tp,
                    NoOffsetForPartitionError(
                        f"{tp.topic}-{tp.partition} has no position and "
                        f"auto_offset_reset='none'; seek() to an offset first"
                    ),
                )
            self._data_arrived()
            return None
        missing = dict.fromkeys(tp for tp in tps if self._topic_missing(tp.topic))
        for tp in missing:
            self._subscription.set_error(tp, unknown_topic_error(tp.topic))
        if missing:
            self._data_arrived()
            self._cluster.request_refresh()
            tps = [tp for tp in tps if tp not in missing]
        generations = {tp: self._subscription.states[tp].generation for tp in tps}
        try:
            offsets = await self._list_offsets(dict.fromkeys(tps, timestamp))
        except ApiError as exc:
            if exc.retriable:  # UNKNOWN_TOPIC_OR_PARTITION included: the next pass sorts it
                _log.debug("offset reset will be retried: %s", exc)
                return self.retry_backoff_ms
            for tp in tps:
                state = self._subscription.states.get(tp)
                if state is not None and state.generation == generations[tp]:
                    self._subscription.set_error(tp, exc)
            self._data_arrived()
            return self.retry_backoff_ms
        self._follow_topic_ids()  # a view the waits brought in: a topic made again meanwhile
        for tp, (offset, _ts) in offsets.items():  # (is reset again: its generation moved)
            self._subscription.set_reset_position(tp, offset, generations[tp])
        return self.retry_backoff_ms if missing else None

    async def _ids_before_reset(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        """``tps`` again after a metadata refresh if one of them lost its position (out
        of range): its topic may have been made again, and the new id is taken in first
        (:meth:`_follow_topic_ids`), or a later view showing it would reset the position
        chosen now, from the new topic, a second time."""
        states = self._subscription.states
        if _RESETS[self.auto_offset_reset] is None or not any(
            states[tp].reset_by_policy for tp in tps
        ):
            return tps  # (none: no position is chosen, so none can be chosen twice)
        now = time.monotonic()
        if now - self._ids_refreshed_at >= self.retry_backoff_ms / 1000:
            self._ids_refreshed_at = now  # (a consumer trailing retention: at most so often)
            await self._refresh_quietly()
            self._follow_topic_ids()
        return self._subscription.needs_position()

    async def _positions_from_commits(
        self, tps: list[TopicPartition]
    ) -> list[TopicPartition] | None:
        """With a group: start where it committed. Returns the partitions still without a
        position (for auto_offset_reset), or None to retry later."""
        assert self._offsets is not None
        states = self._subscription.states
        asked = [tp for tp in tps if tp in states and not states[tp].reset_by_policy]
        policy = [tp for tp in tps if tp in states and states[tp].reset_by_policy]
        if not asked:
            return policy
        generations = {tp: states[tp].generation for tp in asked}
        try:
            committed = await self._offsets.committed_offsets(asked, require_stable=self._stable)
        except ApiError as exc:
            if exc.retriable:
                _log.debug("committed offsets will be read again: %s", exc)
                return None
            for tp in asked:  # e.g. an invalid group id: the user hears it from getmany
                state = states.get(tp)
                if state is not None and state.generation == generations[tp]:
                    self._subscription.set_error(tp, exc)
            self._data_arrived()
            return policy
        rest = list(policy)
        for tp in asked:  # re-checked after the await: still assigned, not moved
            found = committed.get(tp)
            if tp not in states or states[tp].generation != generations[tp]:
                continue
            if found is None:
                rest.append(tp)
            else:
                self._subscription.set_reset_position(
                    tp, found.offset, generations[tp], found.leader_epoch
                )
        return rest

    async def _reset_offset(self, tp: TopicPartition) -> tuple[int, int]:
        """(offset, its leader epoch or -1) where ``tp`` starts."""
        state = self._subscription.states.get(tp)
        if self._offsets is not None and state is not None and not state.reset_by_policy:
            found = await self._offsets.committed_offsets([tp], require_stable=self._stable)
            committed = found[tp]
            if committed is not None:
                return committed.offset, committed.leader_epoch
        timestamp = _RESETS[self.auto_offset_reset]
        if timestamp is None:
            raise NoOffsetForPartitionError(
                f"{tp.topic}-{tp.partition} has no position and auto_offset_reset='none'; "
                f"seek() to an offset first"
            )
        offsets = await self._list_offsets({tp: timestamp})
        return offsets[tp][0], -1

    def _fetch_request(self, node: int, fetch: FetchSet) -> FetchRequest:
        session = self._sessions.get(node)
        if session is None:
            session = self._sessions[node] = FetchSessionBuilder()
        parts, changed = self._parts.get(node), fetch.changed
        if parts is None or changed is None:
            parts = self._parts[node] = {tp: self._part(a) for tp, a in fetch.positions.items()}
            changed = None
        else:
            for tp in changed:
                asked = fetch.positions.get(tp)
                if asked is None:
                    parts.pop(tp, None)
                else:
                    parts[tp] = self._part(asked)
        wanted: Mapping[tuple[str, int], FetchPartition] = parts
        if session.session_id == INVALID_SESSION_ID and len(parts) > 1:
            # no session (yet): rotate so every partition is sometimes first, since only
            # the first one is sure to get a whole batch larger than
            # max_partition_fetch_bytes (KIP-74); a session's broker rotates them itself
            self._rotation += 1
            items = list(parts.items())
            start = self._rotation % len(items)
            wanted = dict(items[start:] + items[:start])
        ask = self._asking[node] = session.build(wanted, changed)
        return FetchRequest(
            max_wait_ms=self.fetch_max_wait_ms,
            min_bytes=self.fetch_min_bytes,
            max_bytes=self.fetch_max_bytes,
            isolation_level=self._isolation,
            session_id=ask.session_id,
            session_epoch=ask.session_epoch,
            topics=ask.topics,
            forgotten_topics_data=ask.forgotten,
            rack_id=self._read_replicas.rack,
        )

    def _part(self, asked: FetchPosition) -> FetchPartition:
        """``asked``'s entry in a Fetch: one per position, so an unchanged one is the very
        object the session sent last (a moved or re-asked one is new, and sent)."""
        part = asked.request
        if part is None:
            part = asked.request = FetchPartition(
                partition=asked.tp.partition,
                current_leader_epoch=asked.leader_epoch,
                fetch_offset=asked.offset,
                partition_max_bytes=self.max_partition_fetch_bytes,
            )
        return part

    async def _fetch(self, node: int, positions: _Positions, request: FetchRequest) -> None:
        try:
            response = await self._cluster.send(node, ApiKey.FETCH, request, purpose=_FETCH_PURPOSE)
        except asyncio.CancelledError:
            self._fetch_ended(node)  # stop(): nobody to hand anything to
            self._forget_session(node)
            raise
        except Exception as exc:
            self._fetched(node, positions, None, exc)
        else:
            self._fetched(node, positions, response, None)

    def _fetched(
        self,
        node: int,
        positions: _Positions,
        response: FetchResponse | None,
        error: BaseException | None,
    ) -> None:
        """A Fetch's outcome (in the read callback that brought it, or in the task that
        connected first)."""
        arrived = False
        size = 0
        sent = self._asking.pop(node, None)
        try:
            if error is not None:
                self._fetch_failed(node, positions, error)
            else:
                assert response is not None
                session = self._sessions.get(node)
                if (
                    session is not None
                    and sent is not None
                    and not session.answered(sent, response)
                ):
                    _log.debug("fetch session with broker %d disagreed: starts over", node)
                arrived, size, records = self._on_fetched(node, positions, response)
                sent_ms = self._fetch_sent_ms.get(node)
                metrics = self._metrics
                metrics.fetched(
                    0.0 if sent_ms is None else metrics.clock() - sent_ms,
                    response.throttle_time_ms,
                    size,
                    records,
                )
                metrics.flush(self._subscription.taken_bytes)  # getone()'s counts, now and then
        except Exception as exc:  # a bug: the getters raise it, never a silent stop
            _log.exception("handling a fetch answer from broker %d failed", node)
            for asked in positions.values():
                self._subscription.fail(asked, exc)
            arrived = True
        finally:
            self._fetch_ended(node)
        if size > _TAILING_BYTES:
            # catching up: the next Fetch goes out now, before the user is woken, so it
            # travels while the user reads this answer (the buffer holds two per partition)
            self._fetch_again(node)
            if arrived:
                self._data_arrived()
        else:
            # tailing (a small answer): the user first; the next Fetch (a socket write that
            # wakes the broker) in the same loop pass, right after
            if arrived:
                self._data_arrived()
            asyncio.get_running_loop().call_soon(self._fetch_again, node)
        self._wake()  # after the user's wake-up: the fetcher's pass may write a Fetch too

    def _fetch_failed(self, node: int, positions: _Positions, error: BaseException) -> None:
        self._forget_session(node)  # the broker may or may not have taken it
        if isinstance(error, SESSION_ERRORS):  # a new session will do
            _log.debug("fetch session with broker %d starts over: %s", node, error)
            return
        if isinstance(error, ApiError):
            _log.debug("fetch from broker %d failed: %s", node, error)
        else:
            _log.warning("fetch from broker %d failed", node, exc_info=error)
        self._cluster.request_refresh()
        self._back_off(positions.values())
        for tp in positions:  # a replica read instead of its leader: the leader next
            self._read_replicas.forget(tp, node)

    def _forget_session(self, node: int) -> None:
        session = self._sessions.get(node)
        if session is not None:
            session.reset()

    def _fetch_ended(self, node: int) -> None:
        self._fetches.pop(node, None)

    def _on_fetched(
        self, node: int, positions: _Positions, response: FetchResponse
    ) -> tuple[bool, int, int]:
        """Buffer the answer; (True if the user has something new (records or an error),
        the record bytes it carried, the records it buffered)."""
        # the answer's partitions, not every one asked (in a session most have no news)
        asked_at = positions
        arrived = False
        size = count = 0
        for topic in response.topics:
            for answer in topic.partitions:
                asked = asked_at.get(TopicPartition(topic.topic, answer.partition_index))
                if asked is None:
                    continue
                state = self._subscription.current(asked)
                if state is None:
                    # dropped (a seek or reset meanwhile): its new position is a new entry,
                    # sent to the session in the next Fetch
                    continue
                if answer.error_code:
                    error = error_for_code(answer.error_code)
                    arrived |= self._on_partition_error(asked, error, node)
                    continue
                state.high_watermark = answer.high_watermark
                if 0 <= answer.preferred_read_replica != node:  # KIP-392: ask that one
                    named = answer.preferred_read_replica
                    if named not in self._cluster.metadata.brokers:
                        # one our metadata does not know (it came back since): the leader
                        # would name it on every Fetch, answered at once (Kafka's too)
                        self._cluster.request_refresh()
                        self._back_off([asked])
                    self._read_replicas.prefer(asked.tp, named)
                    _log.debug(
                        "fetching %s from broker %d, in rack %r",
                        asked.tp,
                        answer.preferred_read_replica,
                        self._read_replicas.rack,
                    )
                    continue
                state.last_stable_offset = answer.last_stable_offset
                state.log_start_offset = answer.log_start_offset
                records = answer.records
                assert records is None or isinstance(records, bytes | bytearray | memoryview)
                if records is not None:
                    size += len(records)
                aborted = answer.aborted_transactions
                try:
                    kept = self._subscription.add_fetched(
                        asked,
                        records,
                        None if not aborted else [(a.producer_id, a.first_offset) for a in aborted],
                    )
                except ApiError as exc:  # a damaged batch: the user must see it
                    self._subscription.fail(asked, exc)
                    arrived = True
                    continue
                if kept > 0:
                    arrived = True
                    # the chunk just buffered: O(batches), each batch's header has its count;
                    # of the first, only the records from the offset asked for (a fetch
                    # answers whole batches; those before it are never handed out)
                    batches = state.chunks[-1].batches
                    first = batches[0]
                    count += sum(len(batch) for batch in batches) - max(
                        0, len(first) - (first.next_offset - asked.offset)
                    )
        if self._moved:  # past batches no user sees (markers): Kafka records the lag then
            self._record_lags(())
        return arrived, size, count

    def _record_lags(self, handed_out: Iterable[TopicPartition]) -> None:
        """Kafka's records-lag and records-lead of the partitions just handed out from (a
        getmany()'s, as Kafka records them at each poll) and of those whose position moved
        past a whole batch since (a getone()'s, or past markers): from the position now to
        the high watermark (the last stable offset with read_committed), and from the log
        start. A getone() is not a record each: per batch it finishes."""
        states = self._subscription.states
        committed = self._isolation == READ_COMMITTED
        metrics = self._metrics
        moved = self._moved
        for tp in {*handed_out, *moved} if moved else handed_out:
            state = states.get(tp)
            if state is None or state.position is None:
                continue
            end = state.last_stable_offset if committed else state.high_watermark
            if end < 0:  # not known yet (Kafka records nothing then either)
                continue
            start = state.log_start_offset
            position = state.position
            metrics.partition_lag(tp, end - position, position - start if start >= 0 else None)
        moved.clear()

    def _on_partition_error(self, asked: FetchPosition, error: ApiError, node: int) -> bool:
        """Handle one partition's Fetch error; True if the user must be told."""
        tp = asked.tp
        if self._read_replicas.forget(tp, node):
            # from the replica the leader named: the leader decides (an offset that replica
            # does not have yet is out of range there, not in the partition; Kafka's too),
            # after a pause, so a replica failing for a while is not asked in a tight loop
            _log.debug("fetching %s from its leader again: broker %d said %s", tp, node, error)
            if error.invalid_metadata:
                self._cluster.request_refresh()
            self._back_off([asked])
            return False
        if isinstance(error, UnknownLeaderEpochError):
            self._subscription.epoch_refused(tp)
        if isinstance(error, OffsetOutOfRangeError):
            return self._position_lost(tp, f"offset {asked.offset} is out of range")
        if error.retriable or error.invalid_metadata:
            self._cluster.request_refresh()
            self._back_off([asked])
            return False
        self._subscription.fail(asked, error)
        return True

    def _back_off(self, positions: Iterable[FetchPosition]) -> None:
        retry_at = time.monotonic() * 1000 + self.retry_backoff_ms
        for asked in positions:
            self._subscription.back_off(asked, retry_at)

    # --- truncation detection (KIP-320) ----------------------------------------------------

    def _start_validations(self, now_ms: float) -> None:
        """Ask each partition's leader where the epoch of the position's records ended in
        its log (OffsetsForLeaderEpoch, as a follower does after a leader change). An end
        below the position means the new leader's log parted from what this consumer read:
        an unclean election cut records it had. Without this check the consumer would go
        on from its position, past the new records that took their offsets. Beside the
        Fetches, a task per leader: a slow leader holds up only its own partitions."""
        checking = self._checking
        pending = [
            (tp, s)
            for tp, s in self._subscription.needs_validation(now_ms)
            if checking.get(tp) != s.generation
        ]
        if not pending:
            return
        metadata = self._cluster.metadata
        by_node: dict[int, list[_Check]] = {}
        retry_at = now_ms + self.retry_backoff_ms
        for tp, state in pending:
            assert state.position is not None  # (needs_validation gives only those)
            check = _Check(
                tp, state, state.generation, state.position, state.epoch, state.leader_epoch
            )
            leader = metadata.leader_for(tp)
            if leader is None:
                self._cluster.request_refresh()
                self._retry(check, retry_at)
                continue
            if leader not in self._validators:  # (else after its task: it wakes us)
                by_node.setdefault(leader, []).append(check)
        loop = asyncio.get_running_loop()
        for node, checks in by_node.items():
            self._checking.update((c.tp, c.generation) for c in checks)
            self._validators[node] = loop.create_task(self._validate_node(node, checks))

    async def _validate_node(self, node: int, checks: list[_Check]) -> None:
        try:
            await self._validate_at(node, checks)
        except Exception as exc:  # a bug: the getters raise it, never a silent stop
            _log.exception("validating positions at broker %d failed", node)
            for check in checks:
                if self._applies(check):
                    self._subscription.set_error(check.tp, exc)
            self._data_arrived()
        finally:
            for check in checks:  # (not one asked again meanwhile, at a newer generation)
                if self._checking.get(check.tp) == check.generation:
                    del self._checking[check.tp]
            self._validators.pop(node, None)
            self._wake()  # the partitions confirmed are fetched at once

    def _applies(self, check: _Check) -> bool:
        """Whether an answer to ``check`` still applies: the same state (not one made for
        the partition since it was given up and taken again, whose generations count from
        0 again) at the same position, still waiting for it."""
        state = check.state
        return (
            self._subscription.states.get(check.tp) is state
            and state.validating
            and state.generation == check.generation
        )

    def _retry(self, check: _Check, retry_at_ms: float) -> None:
        if self._applies(check):
            self._subscription.retry_validation(check.tp, retry_at_ms)

    async def _validate_at(self, node: int, asked: list[_Check]) -> None:
        by_topic: dict[str, list[OffsetForLeaderPartition]] = defaultdict(list)
        for check in asked:
            by_topic[check.tp.topic].append(
                OffsetForLeaderPartition(
                    partition=check.tp.partition,
                    current_leader_epoch=check.leader_epoch,
                    leader_epoch=check.epoch,
                )
            )
        request = OffsetForLeaderEpochRequest(
            topics=[OffsetForLeaderTopic(topic=t, partitions=ps) for t, ps in by_topic.items()]
        )
        retry_at = time.monotonic() * 1000 + self.retry_backoff_ms
        try:
            response: OffsetForLeaderEpochResponse = await self._cluster.send(
                node, ApiKey.OFFSET_FOR_LEADER_EPOCH, request
            )
        except ApiError as exc:
            _log.debug("validating positions at broker %d failed: %s", node, exc)
            self._cluster.request_refresh()
            for check in asked:
                self._retry(check, retry_at)
            return
        answers = {
            TopicPartition(t.topic, p.partition): p for t in response.topics for p in t.partitions
        }
        for check in asked:
            answer = answers.get(check.tp)
            if answer is None or answer.error_code:
                error = error_for_code(answer.error_code) if answer is not None else None
                if error is None or error.retriable or error.invalid_metadata:
                    if isinstance(error, UnknownLeaderEpochError) and self._applies(check):
                        self._subscription.epoch_refused(check.tp)
                    self._cluster.request_refresh()
                    self._retry(check, retry_at)
                elif self._applies(check):
                    self._subscription.set_error(check.tp, error)
                    self._data_arrived()
                continue
            if self._applies(check):  # else moved meanwhile (a seek, a new leader, ...)
                self._validation_answer(check, answer.end_offset, answer.leader_epoch)

    def _validation_answer(self, check: _Check, end: int, end_epoch: int) -> None:
        tp, position, epoch = check.tp, check.position, check.epoch
        if end < 0 or end_epoch < 0:
            # the leader's log has no epochs at all: nothing to check the position against
            why = f"no record of epoch {epoch} at the leader to check position {position} by"
            if self._position_lost(tp, why):
                self._data_arrived()
            return
        if end >= position:
            self._subscription.validated(tp)
            return
        if self.auto_offset_reset == "none":
            self._subscription.set_error(
                tp,
                LogTruncationError(
                    f"{tp.topic}-{tp.partition}: the leader's log ends epoch {epoch} at "
                    f"offset {end}, below this consumer's position {position}: records it "
                    f"read were lost in an unclean leader election; seek() to {end} to read "
                    f"what took their place",
                    {tp: end},
                ),
            )
            self._data_arrived()
            return
        _log.warning(
            "truncation detected for %s at offset %d: the leader's log parts from what was "
            "read at offset %d (epoch %d); reading on from there",
            tp,
            position,
            end,
            end_epoch,
        )
        self._subscription.truncated(tp, end, end_epoch)

    def _follow_topic_ids(self) -> None:
        """A topic deleted and made again under its name has another id in the metadata
        (KIP-516): the positions of its partitions here are the old topic's, so
        auto_offset_reset chooses them again (``none``: the user is told, then told
        there is no position until a seek), as for a position out of range. Without it a
        position inside the new log would read on from there, past the new topic's first
        records (Kafka's consumer does so). Its leader epochs start over too.

        Looked at once per metadata view and per assignment. A topic missing from a
        view, or shown without an id (a broker of an older build), keeps the id last
        seen; a view showing an id the topic had before (a broker whose metadata lags)
        is not taken for another change, nor, for a topic assigned again, for its id."""
        metadata, states = self._cluster.metadata, self._subscription.states
        view = self._ids_view
        if view is not None and view[0] is metadata and view[1] is states:
            return
        seen: dict[str, bytes] = {}
        told = False
        for topic in {tp.topic for tp in states}:
            before = self._topic_ids.get(topic)
            found = metadata.topics.get(topic)
            now = before if found is None or found.topic_id == ZERO_TOPIC_ID else found.topic_id
            if now is None or now in self._retired_ids.get(topic, ()):
                now = before
            if now is None:
                continue
            seen[topic] = now
            if before is None or before == now:
                continue
            self._retired_ids.setdefault(topic, set()).add(before)
            why = f"topic {topic!r} was deleted and made again (it has another topic id)"
            for tp in self._subscription.topic_remade(topic):
                told |= self._position_lost(tp, why)
        self._topic_ids = seen
        # the old ids outlive the assignment while the topic is in the metadata: after an
        # eager rebalance gives it back, a lagging broker's view with the old id is not
        # taken for the topic's id (then the next view's would reset the position again)
        self._retired_ids = {
            t: ids for t, ids in self._retired_ids.items() if t in seen or t in metadata.topics
        }
        self._ids_view = (metadata, states)
        if told:
            self._data_arrived()

    def _position_lost(self, tp: TopicPartition, why: str) -> bool:
        """The position is out of the log's range, or cannot be checked against it:
        auto_offset_reset decides. True if the user must be told (``none``)."""
        if self.auto_offset_reset == "none":
            self._subscription.set_error(
                tp,
                OffsetOutOfRangeError(
                    f"{tp.topic}-{tp.partition}: {why} and auto_offset_reset='none'; "
                    f"seek() to a valid offset"
                ),
            )
            return True
        _log.info("%s for %s; resetting (%s)", why, tp, self.auto_offset_reset)
        self._subscription.request_reset(tp)
        return False

    # --- ListOffsets ---------------------------------------------------------------------

    async def _list_offsets(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, tuple[int, int]]:
        """(offset, timestamp) per partition from its leader, retrying metadata errors
        until request_timeout_ms."""
        self._check_running()
        topics = {tp.topic for tp in timestamps}
        self._cluster.add_topics(topics)
        if not topics <= self._cluster.metadata.topics.keys():
            await self._refresh_quietly()
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        out: dict[TopicPartition, tuple[int, int]] = {}
        todo = dict(timestamps)
        while True:
            last = await self._list_offsets_once(todo, out)
            if not todo:
                return out
            if time.monotonic() >= deadline:
                raise last or RequestTimedOutError(
                    f"ListOffsets for {sorted(todo)} did not succeed within "
                    f"{self.request_timeout_ms} ms"
                )
            await asyncio.sleep(self.retry_backoff_ms / 1000)
            await self._refresh_quietly()

    async def _refresh_quietly(self) -> None:
        """Refresh metadata; if no broker answers, the caller's next round says so."""
        with contextlib.suppress(ApiError):
            await self._cluster.refresh()

    async def _list_offsets_once(
        self, todo: dict[TopicPartition, int], out: dict[TopicPartition, tuple[int, int]]
    ) -> ApiError | None:
        """One round: send each leader its partitions; done ones move from todo to out.
        Returns the last retriable error seen; raises a non-retriable one."""
        by_node: dict[int, list[TopicPartition]] = {}
        last: ApiError | None = None
        for tp in todo:
            leader = self._cluster.leader_for(tp)
            if leader is not None:
                by_node.setdefault(leader, []).append(tp)
            else:
                self._raise_if_unknown_topic(tp.topic)
        for node, tps in by_node.items():
            request = list_offsets_request(tps, todo, isolation_level=self._isolation)
            try:
                response: ListOffsetsResponse = await self._cluster.send(
                    node, ApiKey.LIST_OFFSETS, request
                )
            except ApiError as exc:
                if not exc.retriable:
                    raise
                last = exc
                continue
            for t in response.topics:
                for p in t.partitions:
                    tp = TopicPartition(t.name, p.partition_index)
                    if tp not in todo:
                        continue
                    if p.error_code:
                        error = error_for_code(p.error_code)
                        if not (error.retriable or error.invalid_metadata):
                            raise error
                        last = error
                        continue
                    out[tp] = (p.offset, p.timestamp)
                    del todo[tp]
        return last

    def _raise_if_unknown_topic(self, topic: str) -> None:
        error = self._cluster.metadata.topic_errors.get(topic)
        if isinstance(error, UnknownTopicOrPartitionError):
            raise unknown_topic_error(topic)


def _earliest(delay_ms: float | None, other_ms: float) -> float:
    return other_ms if delay_ms is None else min(delay_ms, other_ms)


_STALE_MEMBER = (
    IllegalGenerationError,
    UnknownMemberIdError,
    RebalanceInProgressError,
    StaleMemberEpochError,
    FencedInstanceIdError,
    StaleMemberEpochError,  # (Kafka 4's protocol: the member's epoch moved on)
)


_COMMIT_AGAIN = (RebalanceInProgressError, StaleMemberEpochError)
"""A commit refused so goes again once the member has settled, if it still owns what
it commits: the classic cooperative protocol's rebalance under way, or (Kafka 4's
protocol) an epoch the coordinator moved on that the member hears of at its heartbeat
(sent at once)."""


class _CommitOrder:
    """Numbers the commit() calls, and remembers per partition the latest that wrote it:
    a call retried after a rebalance (cooperative) skips the partitions a call begun
    after it wrote meanwhile, so a committed offset never goes back to an older one."""

    def __init__(self) -> None:
        self._calls = 0
        self._latest: defaultdict[TopicPartition, int] = defaultdict(int)

    def begin(self) -> int:
        self._calls += 1
        return self._calls

    def not_overtaken(self, wanted: CommitOffsets, call: int) -> CommitOffsets:
        return {tp: o for tp, o in wanted.items() if self._latest[tp] < call}

    def written(self, offsets: CommitOffsets, call: int) -> None:
        for tp in offsets:
            self._latest[tp] = max(self._latest[tp], call)


def _strategies(value: str | Sequence[str]) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in ASSIGNORS]
    if not names or unknown:
        raise ConfigurationError(
            f"partition_assignment_strategy={value!r}: use one or more of "
            f"{', '.join(sorted(ASSIGNORS))}, in order of preference"
        )
    return names


def _check_metrics_settings(samples: int, window_ms: int) -> None:
    if samples < 1:
        raise ConfigurationError(
            f"metrics_num_samples={samples} must be at least 1 (Kafka's metrics.num.samples: "
            f"how many sample windows the -avg, -max and -rate metrics span)"
        )
    if window_ms < 1:
        raise ConfigurationError(
            f"metrics_sample_window_ms={window_ms} must be at least 1 (Kafka's "
            f"metrics.sample.window.ms: the length of each sample window, in ms)"
        )


def _check_group_settings(
    group_instance_id: str | None,
    *,
    group_protocol: str,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    max_poll_interval_ms: int,
    auto_commit_interval_ms: int,
) -> None:
    if group_instance_id is not None and not group_instance_id:
        raise ConfigurationError("group_instance_id must not be empty (or leave it None)")
    if group_protocol not in ("classic", "consumer"):
        raise ConfigurationError(
            f"group_protocol={group_protocol!r} is invalid; use 'classic' (JoinGroup: the "
            "members assign) or 'consumer' (Kafka 4's KIP-848: the brokers assign)"
        )
    if heartbeat_interval_ms <= 0 or heartbeat_interval_ms >= session_timeout_ms:
        raise ConfigurationError(
            f"heartbeat_interval_ms={heartbeat_interval_ms} must be positive and less than "
            f"session_timeout_ms={session_timeout_ms} (Kafka suggests a third of it)"
        )
    if max_poll_interval_ms <= 0:
        raise ConfigurationError(f"max_poll_interval_ms={max_poll_interval_ms} must be positive")
    if auto_commit_interval_ms <= 0:
        raise ConfigurationError(
            f"auto_commit_interval_ms={auto_commit_interval_ms} must be positive"
        )
