"""The producer: ``send`` encodes into per-partition batches; a sender task ships them.

Shaped like aiokafka's AIOKafkaProducer, behaving like Kafka's Java producer:

- ``send`` serializes, validates, picks the partition (murmur2 for keys, sticky for null
  keys: :mod:`client.partitioner`) and appends to the partition's open batch in the
  :class:`~client.accumulator.RecordAccumulator`. It awaits only when it must: for a
  topic's metadata the first time (up to ``max_block_ms``) or for buffer space. It returns
  a future per record, so a loop of sends builds whole batches without a round trip each.
- The sender task asks the accumulator what is sendable (full, or lingered ``linger_ms``),
  drains at most one batch per partition, and sends ONE Produce request per broker, with
  up to ``max_in_flight_requests_per_connection`` requests in flight per broker. With
  idempotence a partition may have that many batches in flight too (Kafka's pipelining:
  a partition's rate is not capped at one batch per round trip); without it, one, so a
  retry cannot overtake a later batch.
- Outcomes: success resolves each record's future with base offset + its index;
  a retriable error (NOT_LEADER_OR_FOLLOWER, a lost connection, a timeout...) refreshes
  metadata and resends the same bytes after ``retry_backoff_ms``, until
  ``delivery_timeout_ms`` or ``retries``; MESSAGE_TOO_LARGE on a multi-record batch splits
  it; any other error fails that batch's futures with the typed error.
- acks=0: the broker answers nothing; the futures resolve with offset -1 once the
  request is written.
- Idempotence (``enable_idempotence``, on by default as in Kafka 3, with ``acks="all"``):
  at ``start()`` the producer gets a producer id (InitProducerId); each batch carries it
  with the partition's next sequence number, stamped when the batch is first sent and kept
  on every retry, so a retry of a batch whose answer was lost is recognised by the leader
  (it answers with the original offsets) and nothing is written twice, across leader
  failovers too. The sequence numbers keep a partition's batches in flight in order
  (at most 5, as Kafka, which is what the leader remembers to recognise a retry): if one
  is not written (a lost connection, a leader moving), the leader refuses those after it
  with OUT_OF_ORDER_SEQUENCE_NUMBER, and they are retried after it, one at a time, in
  send order. The same refusal with no earlier batch unsettled, or UNKNOWN_PRODUCER_ID
  (the partition forgot the producer), means the sequence broke: the producer waits for
  its requests in flight, bumps its epoch (a new producer id once the epoch is spent)
  and sends again from sequence 0 (Kafka's KIP-360); but a batch with an attempt of
  unknown outcome is not sent again under a new sequence (another replica may hold it):
  it fails, its records "may or may not have been written".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any

from client.accumulator import (
    HELD_PER_RECORD,
    RECORD_OVERHEAD_BOUND,
    LeaderOf,
    ProducerBatch,
    RecordAccumulator,
    RecordFuture,
    record_size_upper_bound,
)
from client.batches import (
    BYTES,
    TIMESTAMP_LIMIT,
    BatchBuilder,
    check_headers,
    checked_timestamp,
)
from client.cluster import Cluster, TopicMetadata, unknown_topic_error
from client.coordinator import CommitOffsets
from client.errors import (
    ClientClosedError,
    ConfigurationError,
    TransactionAbortedError,
    TransactionStateError,
)
from client.metrics import NUM_SAMPLES, SAMPLE_WINDOW_MS, Metrics, ProducerMetrics
from client.partitioner import CustomPartitioner, Partitioner
from client.security import TokenProvider, security_for
from client.transactions import TransactionManager, outcome_unknown
from client.types import ConsumerGroupMetadata, RecordMetadata, TopicPartition
from protocol.apis import (
    ApiKey,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
)
from protocol.errors import (
    ApiError,
    CorruptMessageError,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidRequiredAcksError,
    InvalidTimestampError,
    InvalidTxnStateError,
    MessageTooLargeError,
    NotEnoughReplicasError,
    OutOfOrderSequenceNumberError,
    RecordListTooLargeError,
    RequestTimedOutError,
    UnknownProducerIdError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from protocol.records import CODECS, HEADER_SIZE
from protocol.records.compression import DEFAULT_LEVELS, level_problem

__all__ = ["Producer"]

_log = logging.getLogger("headwater.client.producer")

NEW_PARTITION_WAIT_S = 1.0
"""How long ``send(partition=p)`` asks for metadata again before it refuses a partition
the topic does not have (yet): long enough for every broker to hear of partitions just
added, short enough that a wrong number fails soon."""

_HELD = -2
"""The leader a transactional producer's sender sees for a partition not yet in the
transaction: its batches wait for AddPartitionsToTxn."""

Serializer = Callable[[Any], bytes | None]
Header = tuple[str, bytes | None]


def _acks(value: int | str) -> int:
    if value == "all":
        return -1
    if value in (0, 1, -1) and not isinstance(value, bool):
        return int(value)
    raise ConfigurationError(f"acks={value!r} is invalid; use 0, 1, -1 or 'all'")


def _positive(name: str, value: float, minimum: float = 0) -> None:
    if value < minimum:
        raise ConfigurationError(f"{name}={value!r} is invalid: it must be at least {minimum}")


DEFAULT_MAX_REQUEST_SIZE = 1_048_576
"""``max_request_size`` unless given (Kafka's ``max.request.size``)."""


class Producer:
    """``async with Producer(bootstrap_servers=...) as p: await p.send_and_wait(topic, b"v")``."""

    def __init__(
        self,
        *,
        bootstrap_servers: str | list[str],
        client_id: str = "headwater-producer",
        acks: int | str = "all",
        enable_idempotence: bool | None = None,
        linger_ms: int = 0,
        batch_size: int = 16_384,
        compression_type: str | None = None,
        compression_gzip_level: int = DEFAULT_LEVELS["gzip"],
        compression_lz4_level: int = DEFAULT_LEVELS["lz4"],
        compression_zstd_level: int = DEFAULT_LEVELS["zstd"],
        max_in_flight_requests_per_connection: int = 5,
        retries: int = 2**31 - 1,
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        metadata_max_age_ms: int = 300_000,
        metadata_max_idle_ms: int = 300_000,
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
        max_block_ms: int = 60_000,
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        buffer_memory: int = 33_554_432,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        partitioner: CustomPartitioner | None = None,
        partitioner_ignore_keys: bool = False,
        metrics_num_samples: int = NUM_SAMPLES,
        metrics_sample_window_ms: int = SAMPLE_WINDOW_MS,
    ) -> None:
        self.acks = _acks(acks)
        if transactional_id is not None:
            if not transactional_id:
                raise ConfigurationError("transactional_id must not be empty")
            if enable_idempotence is False:
                raise ConfigurationError(
                    "a transactional producer is idempotent: leave enable_idempotence on"
                )
            _positive("transaction_timeout_ms", transaction_timeout_ms, 1)
        self.enable_idempotence = _idempotence(
            True if transactional_id is not None else enable_idempotence,
            self.acks,
            max_in_flight_requests_per_connection,
            retries,
        )
        if compression_type is not None and compression_type not in CODECS:
            raise ConfigurationError(
                f"compression_type={compression_type!r} is invalid; use one of "
                f"{', '.join(repr(c) for c in CODECS if c != 'none')} or None"
            )
        levels = _levels(compression_gzip_level, compression_lz4_level, compression_zstd_level)
        for name, value, minimum in (
            ("linger_ms", linger_ms, 0),
            ("batch_size", batch_size, 1),
            ("max_in_flight_requests_per_connection", max_in_flight_requests_per_connection, 1),
            ("retries", retries, 0),
            ("request_timeout_ms", request_timeout_ms, 1),
            ("retry_backoff_ms", retry_backoff_ms, 0),
            ("max_request_size", max_request_size, HEADER_SIZE + 1),
            ("max_block_ms", max_block_ms, 0),
            ("buffer_memory", buffer_memory, 1),
            ("metrics_num_samples", metrics_num_samples, 1),
            ("metrics_sample_window_ms", metrics_sample_window_ms, 1),
            ("metadata_max_idle_ms", metadata_max_idle_ms, 5_000),  # Kafka's minimum
        ):
            _positive(name, value, minimum)
        if delivery_timeout_ms < linger_ms + request_timeout_ms:
            raise ConfigurationError(
                f"delivery_timeout_ms={delivery_timeout_ms} must be at least linger_ms + "
                f"request_timeout_ms ({linger_ms + request_timeout_ms}), as in Kafka"
            )
        self.client_id = client_id
        self.compression = compression_type or "none"
        self.max_in_flight = max_in_flight_requests_per_connection
        self.retries = retries
        self.request_timeout_ms = request_timeout_ms
        self.max_request_size = max_request_size
        self.max_block_ms = max_block_ms
        self.buffer_memory = buffer_memory
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
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
            keep_topic=self._keep_topic,
        )
        self._idle_s = metadata_max_idle_ms / 1000
        self._topic_used: dict[str, float] = {}
        """When each topic was last sent to (by the whole path of send(): once a batch,
        at least), for metadata_max_idle_ms."""
        self._partitioner = Partitioner(custom=partitioner, ignore_keys=partitioner_ignore_keys)
        self._partitions: dict[str, list[TopicPartition]] = {}
        """TopicPartitions made once per topic, not once per record."""
        self._accumulator = RecordAccumulator(
            batch_size=batch_size,
            linger_ms=linger_ms,
            compression=self.compression,
            compression_level=levels.get(self.compression),
            retry_backoff_ms=retry_backoff_ms,
            delivery_timeout_ms=delivery_timeout_ms,
            # Kafka's max.in.flight per connection also bounds one partition's batches in
            # flight, but only under idempotence: without sequences a retry could overtake
            max_in_flight=self.max_in_flight if self.enable_idempotence else 1,
            clock=_monotonic_ms,
            on_batch_closed=self._partitioner.batch_closed,
            wakeup=self._wake,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pass_due = False  # a sender pass is scheduled (call_soon)
        self._timer: asyncio.TimerHandle | None = None  # the next pass a linger/backoff needs
        self._space: asyncio.Event | None = None
        self._in_flight: dict[int, int] = {}
        self._requests: set[asyncio.Task[None]] = set()  # Produces waiting for a connection
        self._ending: asyncio.Future[None] | None = None  # a commit or abort under way
        self._state = "new"
        self._sender_error: BaseException | None = None
        self._new_producer_id = False  # a sequence broke: a new epoch (or id) when idle
        self._resetting: asyncio.Task[None] | None = None
        self.transactional_id = transactional_id
        self._txn: TransactionManager | None = None
        self._adding: asyncio.Task[None] | None = None  # AddPartitionsToTxn in flight
        if transactional_id is not None:
            self._txn = TransactionManager(
                self._cluster,
                transactional_id,
                transaction_timeout_ms=transaction_timeout_ms,
                max_block_ms=max_block_ms,
                retry_backoff_ms=retry_backoff_ms,
            )
            self._accumulator.transactional = True
            self._accumulator.on_failure = self._txn.fail
        self._metrics = ProducerMetrics(
            Metrics(
                samples=metrics_num_samples,
                window_ms=metrics_sample_window_ms,
                clock=_monotonic_ms,
            )
        )
        self._metrics.gauges(
            buffer_total=lambda: self.buffer_memory,
            buffer_available=lambda: max(
                self.buffer_memory
                - self._accumulator.buffered_bytes
                + self._accumulator.taken_ahead(),
                0,
            ),
            in_flight=lambda: sum(self._in_flight.values()),
            waiting=lambda: self._waiting,
        )
        self._accumulator.metrics = self._metrics
        self._accumulator.buffer_memory = buffer_memory
        self._accumulator.value_max = max_request_size - HEADER_SIZE - RECORD_OVERHEAD_BOUND
        self._lanes_allowed = (
            self._txn is None
            and key_serializer is None
            and value_serializer is None
            and partitioner is None
        )
        self._init_lanes(keyed=self._lanes_allowed and not partitioner_ignore_keys)
        self._waiting = 0  # sends blocked on buffer_memory

    def _init_lanes(self, *, keyed: bool) -> None:
        """The fast paths of ``send()`` (``_lanes_allowed`` says whether keyless records
        may take one; ``keyed``, whether keyed ones may)."""
        self._lanes: dict[str, ProducerBatch] = {}
        """Per topic, the open batch its last record with only a value went to (the sticky
        partition's): the next such record goes straight onto it (a third of ``send()``'s
        cost, measured: no partitioner, metadata or buffer wait in between). Only kept
        while no per-record step can differ: running, no transaction, serializer or custom
        partitioner; emptied when the producer stops or its sender fails."""
        self._keyed: dict[str, tuple[int, list[TopicPartition]]] = {}
        """Per topic, its partition count and partitions when its last record with a bytes
        key went the whole way: the next one whose key the partitioner has seen goes
        straight onto its partition's open batch. Kept and emptied with ``_lanes``."""
        self._keyed_allowed = keyed
        self._lanes_dropped = 0
        """How many times the lanes were dropped: a send that saw them dropped while it
        waited (for metadata or buffer space) registers none."""
        self._key_partitions = self._partitioner.by_key
        self._open_batches = self._accumulator.open_batches

    # --- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._state != "new":
            raise ClientClosedError(f"the producer is {self._state}; start() runs once")
        self._space = asyncio.Event()
        await self._cluster.start()
        try:
            if self._txn is not None:
                self._accumulator.reset_producer(*await self._txn.init())
            elif self.enable_idempotence:
                await self._init_producer_id()
        except BaseException:
            await self._cluster.close()
            self._state = "stopped"
            raise
        self._cluster.on_update.append(self._metadata_updated)
        self._loop = asyncio.get_running_loop()
        self._state = "running"
        self._wake()

    def _drop_lanes(self) -> None:
        """The fast paths go: the next record of each topic goes the whole way once."""
        self._lanes.clear()
        self._keyed.clear()
        self._lanes_dropped += 1

    def _keep_topic(self, topic: str) -> bool:
        """Whether the metadata refreshes still ask for ``topic``: sent to within
        metadata_max_idle_ms, or with records still to deliver (Kafka's retainTopic). A
        topic forgotten is asked for again at its next send; until then a topic deleted
        since is not made again by auto-creation, and a producer that once wrote to many
        topics does not ask for them all for ever. A topic the controller says does not
        exist (deleted) with nothing left to deliver is forgotten at once: each refresh
        would ask the controller about it again."""
        if self._accumulator.topic_unfinished(topic):
            return True
        used = self._topic_used.get(topic)
        view = self._cluster.metadata
        # gone by the controller's word, and not sent to since that word came (a send
        # since may be waiting for the topic made again: review 99)
        gone = isinstance(view.topic_errors.get(topic), UnknownTopicOrPartitionError) and (
            used is None or used <= view.updated_at
        )
        if used is not None and time.monotonic() - used < self._idle_s and not gone:
            return True
        self._topic_used.pop(topic, None)
        self._partitions.pop(topic, None)
        lane, keyed = self._lanes.pop(topic, None), self._keyed.pop(topic, None)
        if lane is not None or keyed is not None:
            self._lanes_dropped += 1  # (a send waiting meanwhile registers no lane)
        return False

    def _metadata_updated(self, _metadata: object) -> None:
        # a topic deleted, made again, given partitions: the next record of each topic
        # goes the whole way once (the partitioner looks at the partitions again)
        self._drop_lanes()
        self._wake()

    async def _init_producer_id(self) -> None:
        """A producer id from any broker (InitProducerId), retried while none can give one."""
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        while True:
            try:
                response: InitProducerIdResponse = await self._cluster.send_any(
                    ApiKey.INIT_PRODUCER_ID, InitProducerIdRequest()
                )
            except ApiError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(self._cluster.retry_backoff_ms / 1000)
                continue
            self._accumulator.reset_producer(response.producer_id, response.producer_epoch)
            _log.debug("producer id %d, epoch %d", response.producer_id, response.producer_epoch)
            return

    async def _reset_producer_id(self) -> None:
        """KIP-360 without a transactional id: the producer bumps its own epoch, and a new
        id is asked for only once the epoch is spent. A partition that has seen the new
        epoch refuses the old one (INVALID_PRODUCER_EPOCH), so a request under it that a
        broker reads late (the client gave up on it) cannot land after newer records."""
        accumulator = self._accumulator
        try:
            if self._txn is not None:
                # the coordinator bumps the epoch (KIP-360), aborting the transaction
                # open under the old one, which already failed (a batch of it did)
                accumulator.reset_producer(*await self._txn.init())
            elif 0 <= accumulator.producer_epoch < _MAX_EPOCH:
                accumulator.reset_producer(accumulator.producer_id, accumulator.producer_epoch + 1)
            else:
                await self._init_producer_id()
            self._new_producer_id = False
            accumulator.sequence_hole = False  # (review 105: a stale one asked again)
        except ApiError as exc:
            if self._txn is not None:
                self._txn.fail(exc)  # fenced (review 105): fatal, not "try again"
                if self._txn.state == "fatal":
                    _log.warning("no new producer epoch: %s", exc)
                    return
            _log.warning("could not get a new producer id (will retry): %s", exc)
        finally:
            self._resetting = None
            self._wake()

    async def stop(self) -> None:
        """Send everything accepted so far (up to ``delivery_timeout_ms``), then close.

        Cancelling ``stop()`` skips the rest of the wait: unsent records fail with
        :class:`~client.errors.ClientClosedError`.
        """
        if self._state == "running":
            self._state = "stopping"
            self._drop_lanes()
            try:
                await self.flush()
                while (ending := self._ending) is not None:  # a commit or abort under way
                    await asyncio.shield(ending)  # (an abort's epoch bump takes a new one)
                txn = self._txn
                if txn is not None and txn.state in ("in_transaction", "abortable"):
                    # Kafka's close: an incomplete transaction is aborted, not left to
                    # hold its partitions' last stable offset until its timeout; one whose
                    # EndTxn got no answer is ended that way again (review 103)
                    committed = txn.outcome_unknown and txn.ending == "committed"
                    with contextlib.suppress(ApiError, TimeoutError):
                        await txn.offsets_settled()  # (their marker after them)
                        await self._partitions_added()
                        await txn.end(committed=committed)
                        txn.ending, txn.outcome_unknown = None, False
            finally:
                await self._close()
        else:
            await self._close()

    async def _close(self) -> None:
        self._state = "stopped"
        self._drop_lanes()
        if self._timer is not None:
            self._timer.cancel()
        tasks = list(self._requests)
        for task in (self._resetting, self._adding):
            if task is not None:
                tasks.append(task)
        await self._cluster.close()  # requests in flight fail at once: their tasks end
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._accumulator.fail_all(ClientClosedError("the producer was stopped"))

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            await self._close()  # cancelled: leave now, failing what is unsent
        else:
            await self.stop()

    # --- the API ---------------------------------------------------------------------------

    async def send(  # noqa: PLR0917, PLR0912, PLR0915, C901 - aiokafka's signature; flat: hot path
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[Header] | None = None,
    ) -> RecordFuture:
        """Queue a record; the returned future resolves when the broker has it (per acks).

        It awaits only for a topic's first metadata or for buffer space; otherwise the
        record is encoded into its partition's batch at once (this is the per-record hot
        path: everything here is a dict lookup or a length).
        """
        if (
            partition is None
            and timestamp_ms is None
            and headers is None
            and value.__class__ is bytes
        ):
            if key is None:
                lane = self._lanes.get(topic)
                if lane is not None:
                    future = self._accumulator.append_to(lane, value, _time_ns() // 1_000_000)
                    if future is not None:
                        return future
            elif key.__class__ is bytes and (keyed := self._keyed.get(topic)) is not None:
                at = self._key_partitions.get((key, keyed[0]))
                if at is not None:
                    batch = self._open_batches.get(keyed[1][at])
                    if batch is not None:
                        future = self._accumulator.append_to(
                            batch, value, _time_ns() // 1_000_000, key
                        )
                        if future is not None:
                            return future
        if self._state != "running" or self._sender_error is not None:
            self._check_running()
        lanes_from = self._lanes_dropped  # (a lane is kept only if none were dropped since)
        txn = self._txn
        generation = 0
        if txn is not None:
            txn.check_sendable()
            generation = txn.generation
        if self._key_serializer is not None or (key is not None and key.__class__ is not bytes):
            key = self._serialize("key", key, self._key_serializer)
        if self._value_serializer is not None or (
            value is not None and value.__class__ is not bytes
        ):
            value = self._serialize("value", value, self._value_serializer)
        if headers:
            headers = check_headers(headers)
            size = record_size_upper_bound(key, value, headers)
        else:
            headers = None
            size = RECORD_OVERHEAD_BOUND + (0 if key is None else len(key))
            size += 0 if value is None else len(value)
        if HEADER_SIZE + size > self.max_request_size:
            raise MessageTooLargeError(
                f"the record is {HEADER_SIZE + size} bytes when encoded, more than "
                f"max_request_size={self.max_request_size}; send a smaller record or raise "
                f"max_request_size (and the topic's max.message.bytes)"
            )
        self._topic_used[topic] = time.monotonic()
        metadata = self._cluster.metadata.topics.get(topic)
        if metadata is None:
            metadata = await self._cluster.wait_for_topic(topic, self.max_block_ms)
            self._check_running()  # stop() may have begun while this send waited
        count = len(metadata.partitions)
        pinned = partition
        if partition is None:
            partition = self._partitioner.partition(topic, key, count, metadata.available)
        elif not 0 <= partition < count:
            count = await self._partition_count(topic, partition, count)
        # (and a new batch's header: the record may open one)
        if self._accumulator.buffered_bytes + HEADER_SIZE + size + HELD_PER_RECORD > (
            self.buffer_memory
        ):
            await self._wait_for_space(HEADER_SIZE + size + HELD_PER_RECORD)
            self._check_running()  # as above
        if timestamp_ms is None:
            timestamp_ms = _time_ns() // 1_000_000
        elif timestamp_ms.__class__ is not int or not 0 <= timestamp_ms < TIMESTAMP_LIMIT:
            timestamp_ms = checked_timestamp(timestamp_ms, "timestamp_ms")  # raises
        partitions = self._partitions.get(topic)
        if partitions is None or len(partitions) < count:  # (partition < count)
            partitions = self._partitions[topic] = [TopicPartition(topic, p) for p in range(count)]
        if txn is not None:
            txn.check_still(generation)  # a wait above may have seen the transaction end
            txn.want(partitions[partition])
        future = self._accumulator.append(  # positional: keywords cost the hot path a little
            partitions[partition], key, value, headers, timestamp_ms, size
        )
        if headers is None and pinned is None and lanes_from == self._lanes_dropped:
            # (a metadata update while this send waited: what it read may be stale)
            if key is None:
                if self._lanes_allowed and self._partitioner.sticks_to(topic, partition):
                    self._lanes[topic] = future._batch  # (not if append() rolled)
            elif self._keyed_allowed and key.__class__ is bytes and topic not in self._keyed:
                self._keyed[topic] = (count, partitions)
        return future

    async def _partition_count(self, topic: str, partition: int, count: int) -> int:
        """The topic's partition count once it is past ``partition``, else ValueError.

        Metadata is asked for again for up to :data:`NEW_PARTITION_WAIT_S` (within
        ``max_block_ms``): CreatePartitions may have added the partition since the last
        answer, and the broker asked may not have heard of it yet. Kafka's producer waits
        ``max_block_ms`` (a minute) for it, which a typo'd partition waits out too.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(NEW_PARTITION_WAIT_S, self.max_block_ms / 1000)
        while partition >= count:
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                break
            with contextlib.suppress(TimeoutError):
                fresh = await asyncio.wait_for(self._cluster.refresh_new(topic), remaining_s)
                found = fresh.topics.get(topic)
                count = len(found.partitions) if found is not None else count
            self._check_running()
            if partition >= count:
                await asyncio.sleep(min(self._cluster.retry_backoff_ms / 1000, remaining_s))
        if not 0 <= partition < count:
            raise ValueError(
                f"partition {partition} is not in topic {topic!r}, which has partitions "
                f"0..{count - 1}"
            )
        return count

    def create_batch(self) -> BatchBuilder:
        """An empty :class:`~client.batches.BatchBuilder` of ``batch_size`` bytes for
        :meth:`send_batch` (aiokafka's)."""
        return BatchBuilder(self._accumulator.batch_size)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> RecordFuture:
        """Queue a batch filled by the caller for ``partition`` of ``topic``; the returned
        future resolves to the :class:`RecordMetadata` of its first record once the broker
        has the batch (record ``i`` of it is at that offset + ``i``).

        It follows the records already sent to that partition, and is retried and
        sequenced (idempotence) as ``send()``'s batches are. It waits only for the topic's
        first metadata or for buffer space. A batch is sent once; if this raises before it
        is queued (a missing topic, no buffer space in time), it can be sent again.
        """
        if self._state != "running" or self._sender_error is not None:
            self._check_running()
        if not isinstance(batch, BatchBuilder):
            raise TypeError(
                f"send_batch() takes a batch from create_batch(), not {type(batch).__name__}"
            )
        generation = 0
        if self._txn is not None:
            self._txn.check_sendable()
            generation = self._txn.generation
        if batch.sent:
            raise ValueError("this batch was sent already; create_batch() makes the next one")
        if not batch.record_count():
            raise ValueError("the batch is empty: append records to it before sending it")
        if partition.__class__ is not int:
            raise TypeError(f"partition must be an int, not {type(partition).__name__}")
        keys, values, timestamps, headers = batch._take()  # closed to appends from here
        self._topic_used[topic] = time.monotonic()
        try:
            metadata = self._cluster.metadata.topics.get(topic)
            if metadata is None:
                metadata = await self._cluster.wait_for_topic(topic, self.max_block_ms)
                self._check_running()
            if not 0 <= partition < len(metadata.partitions):
                await self._partition_count(topic, partition, len(metadata.partitions))
            size = batch.size()
            if self._accumulator.buffered_bytes + HEADER_SIZE + size > self.buffer_memory:
                await self._wait_for_space(HEADER_SIZE + size)
                self._check_running()
            tp = TopicPartition(topic, partition)
            if self._txn is not None:
                self._txn.check_still(generation)
                self._txn.want(tp)
            return self._accumulator.append_batch(
                tp,
                keys,
                values,
                timestamps,
                headers,
                size,
                self.max_request_size,
            )
        except BaseException:
            batch._reopen()
            raise

    async def send_and_wait(  # noqa: PLR0917 - as send()
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[Header] | None = None,
    ) -> RecordMetadata:
        future = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await future

    async def flush(self) -> None:
        """Wait until every record sent before this call is acknowledged or has failed."""
        marker = self._accumulator.begin_flush()
        try:
            while pending := self._accumulator.pending_up_to(marker):
                await asyncio.wait(pending)
        finally:
            self._accumulator.end_flush()

    def metrics(self) -> dict[str, dict[str, float]]:
        """Kafka's producer metrics now, as kafka-python's ``metrics()``: ``{group: {name:
        value}}``. ``producer-metrics`` holds the producer's (``record-send-total``,
        ``record-error-total``, ``request-latency-avg``...), ``producer-topic-metrics.<topic>``
        each topic's; rates, averages and maxima are over the last
        ``metrics_num_samples`` windows of ``metrics_sample_window_ms`` (see the README)."""
        return self._metrics.registry.snapshot()

    async def partitions_for(self, topic: str) -> set[int]:
        self._check_running()
        self._topic_used[topic] = time.monotonic()
        return set((await self._topic(topic)).partitions)

    # --- send's helpers --------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._sender_error is not None:
            raise ClientClosedError(
                f"the producer's sender failed: {self._sender_error!r}"
            ) from self._sender_error
        if self._state != "running":
            what = "not started; call start()" if self._state == "new" else self._state
            raise ClientClosedError(f"the producer is {what}")

    @staticmethod
    def _serialize(what: str, obj: Any, serializer: Serializer | None) -> Any:
        data = serializer(obj) if serializer is not None else obj
        if data is None or data.__class__ is bytes:
            return data
        if isinstance(data, BYTES):
            # copied: the batch encodes it when it closes, and the caller may change a
            # bytearray before that (a memoryview's len() counts items, not bytes, too)
            return bytes(data)
        hint = f"; pass {what}_serializer" if serializer is None else f" from {what}_serializer"
        raise TypeError(
            f"the record's {what} must be bytes or None, not {type(data).__name__}{hint}"
        )

    async def _topic(self, topic: str) -> TopicMetadata:
        found = self._cluster.metadata.topics.get(topic)
        if found is not None:
            return found
        return await self._cluster.wait_for_topic(topic, self.max_block_ms)

    async def _wait_for_space(self, size: int) -> None:
        """Block like Kafka's ``buffer.memory``: until batches finish, up to max_block_ms."""
        assert self._space is not None
        self._accumulator.give_back_room()  # (what runs of records took ahead is free)
        if self._accumulator.buffered_bytes + size <= self.buffer_memory:
            return
        deadline = time.monotonic() + self.max_block_ms / 1000
        began = time.perf_counter_ns()
        self._waiting += 1
        self._accumulator.exhausted += 1  # lingering batches go now: they hold the room
        self._wake()
        try:
            while self._accumulator.buffered_bytes + size > self.buffer_memory:
                if not self._accumulator.has_batches:
                    return  # one record larger than the whole buffer still gets its turn
                self._space.clear()
                remaining = deadline - time.monotonic()
                try:
                    await asyncio.wait_for(self._space.wait(), max(remaining, 0))
                except TimeoutError:
                    raise RequestTimedOutError(
                        f"no room in the producer's buffer ({self.buffer_memory} bytes, "
                        f"buffer_memory) within max_block_ms={self.max_block_ms}: the "
                        f"brokers are not keeping up"
                    ) from None
                self._check_running()
                self._accumulator.give_back_room()  # (runs may have taken room meanwhile)
        finally:
            self._waiting -= 1
            self._accumulator.exhausted -= 1
            self._metrics.waited_for_buffer(time.perf_counter_ns() - began)

    def _wake(self) -> None:
        """A sender pass soon: one per loop pass, however many records asked for it."""
        if not self._pass_due and self._loop is not None:
            self._pass_due = True
            self._loop.call_soon(self._sender_pass)

    # --- the sender ------------------------------------------------------------------------
    # A callback, not a task: a record sent with linger 0 is written in the loop pass after
    # send() (a task and its Event took two), and answers are handled in the read callback
    # that brings them (BrokerConnection.send_now), not by a task per request.

    def _sender_pass(self) -> None:
        self._pass_due = False
        if self._state == "stopped" or self._sender_error is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            delay_ms = self._send_ready()
        except Exception as exc:  # a bug: fail loudly, never leave futures hanging
            _log.exception("the producer's sender failed")
            self._sender_error = exc
            self._drop_lanes()
            self._accumulator.fail_all(exc)
            return
        if delay_ms is not None:
            assert self._loop is not None
            self._timer = self._loop.call_later(max(delay_ms, 0) / 1000, self._wake)

    def _send_ready(self) -> float | None:
        """One pass: expire, send what is ready; returns ms until the next pass is due."""
        for batch in self._accumulator.expire():
            _log.warning("expired %d record(s) for %s", batch.record_count, batch.tp)
        self._fail_unknown_topics()
        if self._accumulator.sequence_hole:  # see there: nothing more under this epoch
            self._accumulator.sequence_hole = False
            self._new_producer_id = True
        leader_of: LeaderOf = self._cluster.leader_for
        if self._txn is not None:
            leader_of = self._transaction_pass(leader_of)
        check = self._accumulator.ready(leader_of)
        check.nodes.discard(_HELD)
        delay_ms = check.delay_ms
        if check.unknown_leader_topics:
            self._cluster.add_topics(check.unknown_leader_topics)
            self._cluster.request_refresh()
            backoff_ms = self._cluster.retry_backoff_ms
            delay_ms = backoff_ms if delay_ms is None else min(delay_ms, backoff_ms)
        nodes = {n for n in check.nodes if self._in_flight.get(n, 0) < self.max_in_flight}
        if self._new_producer_id:
            nodes = set()  # nothing more under the old id; once idle, take a new one
            # (a transactional producer's comes after its transaction's abort)
            if self._txn is None and self._resetting is None and not any(self._in_flight.values()):
                self._resetting = asyncio.get_running_loop().create_task(self._reset_producer_id())
        if nodes:
            drained = self._accumulator.drain(nodes, leader_of, self.max_request_size)
            for node, batches in drained.items():
                self._in_flight[node] = self._in_flight.get(node, 0) + 1
                self._produce_now(node, batches)
            if self._accumulator.queued_behind and self._accumulator.max_in_flight > 1:
                self._wake()  # the batches behind may follow (pipelining), or linger
        return delay_ms

    def _transaction_pass(self, leader_of: LeaderOf) -> LeaderOf:
        """A transactional producer's part of a sender pass: the leaders to send to, with
        the partitions not in the transaction yet held (AddPartitionsToTxn is started
        for them)."""
        txn = self._txn
        assert txn is not None
        if txn.state in ("abortable", "fatal"):
            # nothing more of a failed transaction is sent (Kafka's abortUndrainedBatches):
            # under a sequence that broke, or an epoch since bumped, it would open a
            # transaction of its own in the partition, which no marker would ever end
            txn.wanted.clear()
            self._accumulator.fail_queued(
                TransactionAbortedError(
                    f"the transaction failed ({txn.error}); this record was not sent"
                )
            )
        if txn.wanted and self._adding is None:
            self._adding = asyncio.get_running_loop().create_task(self._add_partitions())
        added = txn.added

        def held_unless_added(tp: TopicPartition) -> int | None:
            return leader_of(tp) if tp in added else _HELD

        return held_unless_added

    async def _add_partitions(self) -> None:
        """AddPartitionsToTxn for the partitions the transaction has records for; if it
        fails, their batches fail (the transaction can only be aborted)."""
        txn = self._txn
        assert txn is not None
        try:
            await txn.add_partitions()
        except (ApiError, TimeoutError) as exc:
            error = exc if isinstance(exc, ApiError) else RequestTimedOutError(str(exc))
            wanted = set(txn.wanted)
            txn.wanted.clear()
            self._accumulator.fail_partitions(wanted.__contains__, error)
        except Exception as exc:  # a bug: loud, and nothing left waiting
            _log.exception("adding partitions to the transaction failed")
            txn.fail(exc)
            txn.wanted.clear()
            self._accumulator.fail_partitions(
                lambda tp: tp not in txn.added, UnknownServerError(str(exc))
            )
        finally:
            self._adding = None
            self._wake()

    # --- transactions ----------------------------------------------------------------------

    def begin_transaction(self) -> None:
        """Start a transaction: the records sent until :meth:`commit_transaction` are
        read by read_committed consumers all together, or (aborted) not at all."""
        self._check_running()
        txn = self._transactional()
        txn.check_usable()
        if self._ending is not None:
            raise TransactionStateError(
                "the last transaction is still being ended: begin once "
                "commit_transaction() or abort_transaction() has returned"
            )
        if self._new_producer_id and txn.state == "ready":
            # (review 105: begun under the old epoch, its batches waited for a new one
            # that only an abort asks for, and its Add could be fenced)
            raise TransactionStateError(
                "the last abort did not get the producer's new epoch: call "
                "abort_transaction() again before beginning"
            )
        txn.begin()

    async def commit_transaction(self) -> None:
        """Send everything of the transaction, then commit it. Raises
        :class:`~client.errors.TransactionStateError` naming the error that failed a
        record of it (then :meth:`abort_transaction`), or
        :class:`~protocol.errors.ProducerFencedError` if a newer producer with this
        ``transactional_id`` took over (then only :meth:`stop`). If the commit itself got
        no answer (a timeout, a lost connection), it may have been made: that error is
        raised, and only this call again (a commit already made is answered as done) or
        :meth:`stop` is accepted, as in Kafka's producer."""
        self._check_running()
        txn = self._transactional()
        if self._ending is not None:
            raise TransactionStateError(_ending_message(txn))
        if txn.outcome_unknown:
            if txn.ending != "committed":
                raise TransactionStateError(txn.unknown_outcome_message())
        else:
            txn.check_sendable()
        await self._end_transaction(txn, committed=True)

    async def abort_transaction(self) -> None:
        """Abort the transaction: its records are never read by read_committed
        consumers (those sent are written, then marked aborted)."""
        self._check_running()
        txn = self._transactional()
        txn.check_usable()
        if self._ending is not None:
            raise TransactionStateError(_ending_message(txn))
        if txn.outcome_unknown and txn.ending != "aborted":
            raise TransactionStateError(txn.unknown_outcome_message())
        if txn.state != "ready":
            await self._end_transaction(txn, committed=False)
        elif not self._new_producer_id:  # (else an abort whose new epoch did not come)
            raise TransactionStateError("no transaction is open: nothing to abort")
        await self._new_epoch_after_abort(txn)

    async def _new_epoch_after_abort(self, txn: TransactionManager) -> None:
        """A sequence broke in the aborted transaction (or a batch failed after it was
        sent): the next transaction starts under a new epoch, which the coordinator
        gives once this one is aborted (KIP-360). Nothing begins meanwhile (``_ending``:
        review 105, a transaction begun during it went under the old epoch)."""
        accumulator = self._accumulator
        if accumulator.sequence_hole:  # (the sender's pass may not have run since)
            accumulator.sequence_hole = False
            self._new_producer_id = True
        if not self._new_producer_id:
            return
        assert self._loop is not None
        done = self._ending = self._loop.create_future()
        try:
            await self._reset_producer_id()
        finally:
            self._ending = None
            done.set_result(None)
        txn.check_usable()  # fenced meanwhile: only stop() is left
        if self._new_producer_id:
            raise TransactionStateError(
                "the transaction was aborted, but no new producer epoch came; call "
                "abort_transaction() again"
            )

    async def _partitions_added(self) -> None:
        """Until no AddPartitionsToTxn is under way (review 104: one answered after the
        EndTxn added its partitions to the next transaction's sets, or, reaching the
        coordinator after it, opened a transaction nobody would end)."""
        while (adding := self._adding) is not None:
            await asyncio.wait([adding])  # (it handles its own errors)
            if self._adding is adding:
                break

    async def _end_transaction(self, txn: TransactionManager, *, committed: bool) -> None:
        """Everything of the transaction settled (its batches, its offsets, an
        AddPartitionsToTxn under way), then EndTxn; nothing joins it meanwhile
        (``txn.ending``). After an EndTxn whose outcome
        is unknown, only the EndTxn again. :meth:`stop` waits for this."""
        assert self._loop is not None
        done = self._ending = self._loop.create_future()
        try:
            if not txn.outcome_unknown:
                txn.ending = "committed" if committed else "aborted"
                try:
                    await self.flush()  # what is in flight lands (or fails) before the marker
                    await txn.offsets_settled()
                    await self._partitions_added()
                    if committed:
                        txn.check_open()  # a record of it failed meanwhile: it cannot commit
                except BaseException:
                    txn.ending = None  # no EndTxn went out: the transaction is as it was
                    raise
            try:
                await txn.end(committed=committed)
            except BaseException as exc:
                # answered: over (a failure, or fatal); no answer: it may be ended there
                # (review 102: a lost commit's answer, then an abort, said "aborted")
                txn.outcome_unknown = txn.state != "fatal" and outcome_unknown(exc)
                if not txn.outcome_unknown:
                    txn.ending = None
                raise
            txn.ending, txn.outcome_unknown = None, False
        finally:
            self._ending = None
            done.set_result(None)

    async def send_offsets_to_transaction(
        self, offsets: CommitOffsets, group: str | ConsumerGroupMetadata
    ) -> None:
        """Commit a consumer group's ``offsets`` (the next offset to read, per partition,
        or an OffsetAndMetadata) as part of the transaction: only if it commits
        (consume-process-produce, exactly once). ``group``: the group id (aiokafka's), or
        the consumer's ``group_metadata()`` (Kafka's, KIP-447): then the offsets are refused
        (ILLEGAL_GENERATION, and the transaction can only abort) if the group rebalanced
        since, so a member that lost its partitions cannot commit what it consumed."""
        self._check_running()
        metadata = ConsumerGroupMetadata(group) if isinstance(group, str) else group
        await self._transactional().send_offsets(offsets, metadata)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """``async with producer.transaction(): ...`` commits at the end of the block, or
        aborts if it raises (and re-raises)."""
        self.begin_transaction()
        try:
            yield
        except BaseException:
            txn = self._transactional()
            if txn.state != "fatal" and self._state == "running":
                await self.abort_transaction()
            raise
        try:
            await self.commit_transaction()
        except BaseException:
            # refused (a record of it failed): aborted, so the next transaction() can
            # begin (review 104); one whose outcome is unknown is left to the caller
            txn = self._transactional()
            if txn.state == "abortable" and not txn.outcome_unknown and self._state == "running":
                await self.abort_transaction()
            raise

    def _transactional(self) -> TransactionManager:
        if self._txn is None:
            raise TransactionStateError(
                "this producer has no transactional_id: transactions need one"
            )
        return self._txn

    def _fail_unknown_topics(self) -> None:
        """Batches for a topic the brokers say does not exist (deleted since) fail now."""
        for topic, error in self._cluster.metadata.topic_errors.items():
            if isinstance(error, UnknownTopicOrPartitionError):
                self._accumulator.fail_topic(topic, unknown_topic_error(topic))

    def _produce_now(self, node: int, batches: list[ProducerBatch]) -> None:
        """Write the Produce for ``batches`` now if ``node`` is connected, else connect in a
        task; either way :meth:`_produced` gets the outcome."""
        topics: dict[str, list[ProducePartition]] = {}
        for batch in batches:
            topics.setdefault(batch.tp.topic, []).append(
                ProducePartition(index=batch.tp.partition, records=batch.payload)
            )
        request = ProduceRequest(
            transactional_id=self.transactional_id,
            acks=self.acks,
            timeout_ms=self.request_timeout_ms,
            topics=[ProduceTopic(name=t, partitions=ps) for t, ps in topics.items()],
        )
        sent_ms = _monotonic_ms()
        self._metrics.request_sent(
            (
                (b.tp.topic, b.count, len(b.payload or b""), b.written, b.created_ms)
                for b in batches
            ),
            sent_ms,
        )
        conn = self._cluster.connection_now(node)
        if conn is None or (self.acks == 0 and not conn.writable):
            # connecting first, or (acks=0, where nothing else bounds what is written) the
            # broker is not reading: the task waits for the transport to drain
            assert self._loop is not None
            task = self._loop.create_task(self._produce(node, batches, request, sent_ms))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
            return
        if self.acks == 0:
            on_answer = None
        else:

            def on_answer(response: Any, error: BaseException | None) -> None:
                self._produced(node, batches, response, error, sent_ms=sent_ms)

        try:
            conn.send_now(ApiKey.PRODUCE, request, on_answer)
        except ApiError as exc:
            self._produced(node, batches, None, exc)
            return
        if on_answer is None:
            self._produced(node, batches, None, None)  # acks=0: written is all we will know

    async def _produce(
        self, node: int, batches: list[ProducerBatch], request: Any, sent_ms: float
    ) -> None:
        try:
            await self._cluster.connect(node)
        except ApiError as exc:
            self._produced(node, batches, None, exc, written=False)
            return
        try:
            response = await self._cluster.send(
                node, ApiKey.PRODUCE, request, expect_response=self.acks != 0
            )
        except Exception as exc:
            self._produced(node, batches, None, exc)
        else:
            self._produced(node, batches, response, None, sent_ms=sent_ms)

    def _produced(
        self,
        node: int,
        batches: list[ProducerBatch],
        response: ProduceResponse | None,
        error: BaseException | None,
        *,
        written: bool = True,
        sent_ms: float | None = None,
    ) -> None:
        """The outcome of one Produce; ``written`` False: it failed before a byte of it
        went out (no leader known, no connection), so the attempt leaves no doubt.
        ``sent_ms``: when it was written, for the latency of an answer."""
        if response is not None and sent_ms is not None:
            now = _monotonic_ms()
            self._metrics.answered(now - sent_ms, response.throttle_time_ms, now)
        try:
            if isinstance(error, ApiError):
                for batch in batches:
                    self._on_error(batch, error, written=written)
            elif error is not None:
                _log.error("produce request to broker %d failed", node, exc_info=error)
                for batch in batches:
                    self._accumulator.fail(batch, error)
            else:
                self._on_response(batches, response, node)
        finally:
            self._in_flight[node] -= 1
            self._wake()
            if self._space is not None:
                self._space.set()

    def _on_response(
        self, batches: list[ProducerBatch], response: ProduceResponse | None, node: int = -1
    ) -> None:
        if response is None:  # acks=0: written is all we will ever know
            for batch in batches:
                self._accumulator.complete(batch, -1, -1)
            return
        answers = {(t.name, p.index): p for t in response.topics for p in t.partitions}
        for batch in batches:
            answer = answers.get(batch.tp)
            if answer is None:
                self._on_error(
                    batch, UnknownServerError(f"the broker's answer left out {batch.tp}")
                )
            elif answer.error_code:
                error = error_for_code(answer.error_code, answer.error_message)
                self._on_error(batch, error, node=node)
            else:
                self._accumulator.complete(batch, answer.base_offset, answer.log_append_time_ms)

    def _stale(self, batch: ProducerBatch) -> bool:
        """Whether ``batch`` is stamped with an epoch of this producer's since bumped."""
        accumulator = self._accumulator
        return batch.producer_id == accumulator.producer_id and (
            0 <= batch.producer_epoch < accumulator.producer_epoch
        )

    def _on_error(
        self, batch: ProducerBatch, error: ApiError, *, written: bool = True, node: int = -1
    ) -> None:
        """``node``: the broker that answered (-1: none did)."""
        if isinstance(error, MessageTooLargeError) and batch.record_count > 1:
            self._accumulator.split(batch)
            return
        in_time = _monotonic_ms() < batch.deadline_ms and self._state != "stopped"
        if written:  # an attempt that never left the client adds no doubt
            self._weigh_doubt(batch, error)
        if isinstance(error, InvalidProducerEpochError) and self._stale(batch):
            # fenced by our own newer epoch: the partition took a batch re-sequenced under
            # it, which it can only have been if one before this batch was refused, so
            # this one is not in its log either: it goes again under the current epoch
            if batch.in_doubt:
                self._fail_in_doubt(batch, error)
                return
            _log.debug("%s was stamped with an epoch since bumped: %s", batch, error)
            self._accumulator.forget_sequences(batch)
            if in_time:
                self._accumulator.retry(batch)
            else:  # not another producer's fencing, as the error would say: out of time
                self._accumulator.fail(batch, RequestTimedOutError(_expired(batch)))
            return
        if (
            batch.producer_id >= 0
            and isinstance(error, _SEQUENCE_BROKEN)
            and self._on_refused_sequence(batch, error, node, in_time=in_time)
        ):
            return
        if isinstance(error, InvalidTxnStateError) and self._recheck_txn(
            batch, error, node, in_time=in_time
        ):
            return
        if error.invalid_metadata:
            self._cluster.request_refresh()
        if (
            error.retriable
            and batch.attempts <= self.retries
            and _monotonic_ms() < batch.deadline_ms
            and self._state != "stopped"
        ):
            _log.debug("retrying %s (attempt %d): %s", batch.tp, batch.attempts, error)
            self._accumulator.retry(batch)
            return
        if batch.producer_id >= 0:  # its sequence may or may not be written: start over
            self._new_producer_id = True
        # said once per batch: a caller that never looks at its futures still hears of it
        _log.warning(
            "%d record(s) for %s-%d failed: %s",
            batch.record_count,
            batch.tp.topic,
            batch.tp.partition,
            error,
        )
        self._accumulator.fail(batch, error)

    def _on_refused_sequence(
        self, batch: ProducerBatch, error: ApiError, node: int, *, in_time: bool
    ) -> bool:
        """The partition refused ``batch``'s sequence (or forgot its producer): True if
        that is dealt with here, False to go on as for any error (out of time)."""
        leader = self._cluster.leader_for(batch.tp)
        if batch.in_doubt and node >= 0 and leader is not None and leader != node:
            # refused by a broker that no longer leads the partition and has not heard
            # yet (paused while a new leader took over, which has what it lacks): its
            # log says nothing of the leader's; the batch goes to the leader as it is
            # (found by the soak: such a refusal failed batches as "in doubt"). Only a
            # batch in doubt, which would fail otherwise: the client's metadata can be
            # the stale one, and a batch not in doubt is sent again safely under a new
            # epoch (review 100)
            if in_time:
                _log.debug("%s refused by broker %d, not its leader: %s", batch, node, error)
                self._accumulator.retry(batch)
                return True
        elif self._accumulator.earlier_unsettled(batch):
            # a batch sent before it is being retried or is still out: the leader
            # refused this one for that gap, and takes it (as it is) after that one
            if in_time:
                _log.debug("%s waits for an earlier batch: %s", batch, error)
                self._accumulator.retry(batch)
                return True
        else:
            # KIP-360: the partition cannot take this sequence; under a new epoch it
            # starts at 0, so the batch goes again (within delivery_timeout_ms)
            _log.info("%s refused the sequence of %s: %s", batch.tp, batch, error)
            self._new_producer_id = True
            if batch.in_doubt:
                self._fail_in_doubt(batch, error)
                return True
            if self._txn is not None:
                # a transaction cannot go on under a new epoch: its coordinator gives one
                # only once it is aborted. The batch (not written) fails, and with it the
                # transaction, as Kafka's producer makes it abortable (review 104: held
                # for the new epoch, it kept commit and abort waiting delivery_timeout_ms)
                self._accumulator.forget_sequences(batch)
                self._accumulator.fail(batch, error)
                return True
            if in_time:
                self._accumulator.forget_sequences(batch)  # refused: not written
                self._accumulator.retry(batch)
                return True
        return False

    def _recheck_txn(
        self, batch: ProducerBatch, error: ApiError, node: int, *, in_time: bool
    ) -> bool:
        """KIP-890's check refused ``batch`` (its leader's transaction coordinator says the
        transaction is not open there): True if it goes once more, after a metadata
        refresh. The refusal can be a paused broker's, which answered from what it knew
        before: as the partition's leader, or as the transaction's coordinator, which
        another broker has been since (the soak: a new transaction's first batch refused
        by a resumed broker that still held the last one as committed). Refused, the batch
        is in no log, and the transaction is still open here (commit and abort wait for
        every batch), so the current leader's check with the current coordinator decides.
        Once, or again while the refusal came from a broker the metadata no longer names
        as the leader; each time once a metadata refresh has come back (review 101: a
        retry after the backoff alone went to the same broker before the refresh did)."""
        if not in_time or node < 0 or batch.attempts > self.retries:
            return False
        leader = self._cluster.leader_for(batch.tp)
        if batch.txn_rechecked and (leader is None or leader == node):
            return False
        batch.txn_rechecked = True
        _log.info("%s refused by broker %d (%s); sent again after a refresh", batch, node, error)
        # held until the metadata is fresh: sent at once, it would go where it was refused
        self._accumulator.retry(batch, after_ms=self.request_timeout_ms)
        assert self._loop is not None
        task = self._loop.create_task(self._retry_after_refresh(batch))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)
        return True

    async def _retry_after_refresh(self, batch: ProducerBatch) -> None:
        try:
            await asyncio.wait_for(self._cluster.refresh(), self.request_timeout_ms / 1000)
        except (ApiError, TimeoutError) as exc:  # no fresh view: after the backoff, as any
            _log.debug("no metadata refresh for %s: %s", batch, exc)
        except Exception:  # a bug: loud, and the batch is not held for it
            _log.exception("refreshing metadata for %s failed", batch)
        self._accumulator.retry_now(batch)
        self._wake()

    def _weigh_doubt(self, batch: ProducerBatch, error: ApiError) -> None:
        """An attempt ended with ``error``: is the batch now in doubt (see ``in_doubt``)?"""
        if self._accumulator.unwritten(batch):
            batch.in_doubt = False  # a batch before it under its stamp is nowhere
        elif not isinstance(error, _REFUSED):
            batch.in_doubt = True

    def _fail_in_doubt(self, batch: ProducerBatch, error: ApiError) -> None:
        """``batch``'s sequence was refused, but an earlier attempt may be in another
        replica's log, which can still become leader's: sent again under a new sequence,
        it could be written twice. It fails instead (as Kafka's idempotent producer fails
        what it cannot place): UNKNOWN_PRODUCER_ID as itself, the rest (our own epoch's
        fencing included, which is not another producer's) as OUT_OF_ORDER_SEQUENCE_NUMBER."""
        message = (
            f"{batch.record_count} record(s) for {batch.tp.topic}-{batch.tp.partition} may "
            f"or may not have been written: an earlier attempt got no clear answer (the "
            f"leader moved, or the answer was lost) and the leader now refuses their "
            f"sequence ({error.name}); they are not sent again, so they cannot be written "
            f"twice"
        )
        _log.warning("%s", message)
        kind = UnknownProducerIdError if isinstance(error, UnknownProducerIdError) else None
        self._accumulator.fail(batch, (kind or OutOfOrderSequenceNumberError)(message))


def _ending_message(txn: TransactionManager) -> str:
    if txn.ending is not None:
        return f"the transaction is being {txn.ending} already"
    return "the last transaction's abort is still getting the producer's new epoch"


def _expired(batch: ProducerBatch) -> str:
    return (
        f"{batch.record_count} record(s) for {batch.tp.topic}-{batch.tp.partition} were not "
        f"written within delivery_timeout_ms (or before the producer stopped)"
    )


_SEQUENCE_BROKEN = (OutOfOrderSequenceNumberError, UnknownProducerIdError)
_REFUSED = (
    *_SEQUENCE_BROKEN,
    InvalidProducerEpochError,
    MessageTooLargeError,
    RecordListTooLargeError,
    CorruptMessageError,
    InvalidRecordError,
    InvalidTimestampError,
    InvalidRequiredAcksError,
    InvalidTxnStateError,  # KIP-890's check, before the append
    NotEnoughReplicasError,  # refused before the append (not ..._AFTER_APPEND)
    UnknownTopicOrPartitionError,
)
"""Answers for a batch its leader did not append. Any other outcome of an attempt leaves
the batch in doubt, NOT_LEADER_OR_FOLLOWER included: a leader also answers that to a
produce it appended and could not replicate before it lost the leadership.
(DUPLICATE_SEQUENCE_NUMBER is not here: in Kafka it means the batch is in the log.)"""
_MAX_EPOCH = 2**15 - 1  # an int16 on the wire
_time_ns = time.time_ns  # bound once: send() reads the clock for every record


def _levels(gzip: int, lz4: int, zstd: int) -> dict[str, int]:
    """The codecs' compression levels (KIP-390), each checked against Kafka's range."""
    levels = {"gzip": gzip, "lz4": lz4, "zstd": zstd}
    for codec, level in levels.items():
        problem = level_problem(codec, level)
        if problem is not None:
            raise ConfigurationError(
                f"compression_{codec}_level={level} is invalid: it must be {problem}"
            )
    return levels


def _idempotence(wanted: bool | None, acks: int, max_in_flight: int, retries: int) -> bool:
    """Kafka 3's rule: on unless turned off, or unless acks/retries/in-flight settings
    that cannot go with it were chosen; asked for explicitly with them, an error."""
    conflicts = []
    if acks != -1:
        conflicts.append(f"acks={acks} (it needs acks='all')")
    if max_in_flight > 5:
        conflicts.append(f"max_in_flight_requests_per_connection={max_in_flight} (at most 5)")
    if retries == 0:
        conflicts.append("retries=0 (it needs retries)")
    if wanted is None:
        return not conflicts
    if wanted and conflicts:
        raise ConfigurationError(
            f"enable_idempotence=True does not go with {', '.join(conflicts)}; change them "
            f"or pass enable_idempotence=False"
        )
    return wanted


def _monotonic_ms() -> float:
    return time.monotonic() * 1000
