"""The producer's record accumulator: per-partition batches, and which of them to send now.

A pure class (no sockets, no sleeping; time comes from an injected clock in ms) so the
batching rules can be tested alone. The producer's sender task drives it:

- ``append`` encodes a record into the last open batch of its partition (a
  :class:`~protocol.records.BatchBuilder`), or opens a new one when it would pass
  ``batch_size``. Each record gets a future for its :class:`RecordMetadata`.
- ``ready`` says which brokers have something to send and, if nothing yet, how long until
  something will be (a linger or a retry backoff ending).
- ``drain`` takes, per broker, at most ONE batch per partition (Kafka's rule, and the
  broker's), never from a partition that already has a batch in flight ("muted"), up to
  ``max_request_size`` per request. One in-flight batch per partition is what keeps
  records in order across retries until idempotence arrives.
- The outcome goes back through ``complete`` / ``retry`` / ``split`` / ``fail``. A retried
  batch goes back to the *front* of its partition's queue, keeping its bytes, so it is
  resent as it was and before anything appended after it.

Concurrency: one event loop; nothing here awaits. ``wakeup`` is called when a batch is
created (so the sender learns when its linger ends) or fills up (sendable at once), as
Kafka's producer wakes its sender on ``batchIsFull || newBatchCreated``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable, Iterable, Sequence

from client.types import RecordMetadata, TopicPartition
from protocol.errors import ApiError, RequestTimedOutError
from protocol.records import HEADER_SIZE, BatchBuilder, set_producer_fields

__all__ = ["ProducerBatch", "ReadyCheck", "RecordAccumulator", "record_size_upper_bound"]

Header = tuple[str, bytes | None]
Data = bytes | bytearray | memoryview
RecordTuple = tuple[Data | None, Data | None, Sequence[Header] | None, int]
LeaderOf = Callable[[TopicPartition], int | None]

_VARINT_MAX = 5  # lengths and deltas are 32-bit: at most 5 bytes as varints
_VARLONG_MAX = 10  # the timestamp delta is 64-bit
_SEQUENCE_WRAP = 2**31  # sequences are int32 and wrap to 0 (Kafka's DefaultRecordBatch)


def record_size_upper_bound(
    key: Data | None,
    value: Data | None,
    headers: Sequence[Header] | None,
) -> int:
    """Bytes a record can take inside a batch, at most (Kafka's estimateSizeInBytesUpperBound).

    Computed before encoding, to decide whether the record still fits the open batch and
    whether it can ever fit a request.
    """
    size = _VARINT_MAX + 1 + _VARLONG_MAX + _VARINT_MAX + 3 * _VARINT_MAX
    size += len(key) if key is not None else 0
    size += len(value) if value is not None else 0
    for name, data in headers or ():
        size += 2 * _VARINT_MAX + len(name.encode()) + (len(data) if data is not None else 0)
    return size


class ProducerBatch:
    """One partition's records on their way: open (taking records), then built and sent.

    ``payload`` is built once, when the batch is first drained; a retry resends those
    exact bytes. ``records`` keep the caller's keys and values (no copy) only so a batch
    the broker finds too large can be split and re-encoded.
    """

    __slots__ = (
        "attempts",
        "base_sequence",
        "builder",
        "created_ms",
        "deadline_ms",
        "done",
        "futures",
        "payload",
        "producer_id",
        "records",
        "retry_at_ms",
        "seq",
        "size_bound",
        "tp",
    )

    def __init__(
        self, tp: TopicPartition, compression: str, created_ms: float, deadline_ms: float, seq: int
    ) -> None:
        self.tp = tp
        self.builder: BatchBuilder | None = BatchBuilder(compression=compression)
        self.records: list[RecordTuple] = []
        self.futures: list[asyncio.Future[RecordMetadata]] = []
        self.created_ms = created_ms
        self.deadline_ms = deadline_ms
        self.seq = seq
        self.attempts = 0
        self.retry_at_ms = 0.0
        self.payload: bytes | bytearray | None = None
        self.producer_id = -1  # stamped with (and sequenced under) this producer id
        self.base_sequence = -1
        self.size_bound = HEADER_SIZE
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"ProducerBatch({self.tp.topic}-{self.tp.partition}, {len(self.records)} records)"

    @property
    def is_open(self) -> bool:
        return self.builder is not None and self.payload is None

    @property
    def record_count(self) -> int:
        return len(self.records)

    def append(self, record: RecordTuple, size_bound: int) -> asyncio.Future[RecordMetadata]:
        assert self.builder is not None
        key, value, headers, timestamp_ms = record
        self.builder.append(key, value, headers, timestamp_ms)
        self.records.append(record)
        self.size_bound += size_bound
        future: asyncio.Future[RecordMetadata] = self.done.get_loop().create_future()
        self.futures.append(future)
        return future

    def forget_sequence(self) -> None:
        """The partition refused this batch's sequence (so it was not written): it is
        stamped anew, under the producer's next id, when sent again."""
        self.producer_id, self.base_sequence = -1, -1

    def stamp(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        """An idempotent producer's id, epoch and sequence, into the built batch."""
        assert self.payload is not None
        payload = bytearray(self.payload)
        set_producer_fields(payload, producer_id, producer_epoch, base_sequence)
        self.payload = payload
        self.producer_id, self.base_sequence = producer_id, base_sequence

    def close(self) -> bytes | bytearray:
        """Stop taking records and build the bytes to send (once)."""
        if self.payload is None:
            assert self.builder is not None
            self.payload = self.builder.build()
            self.builder = None
        return self.payload

    def resolve(self, base_offset: int, log_append_time_ms: int = -1) -> None:
        """Every record's metadata: offset = base offset + its index; -1 when unknown."""
        topic, partition = self.tp
        for index, (future, record) in enumerate(zip(self.futures, self.records, strict=True)):
            if not future.done():
                offset = base_offset + index if base_offset >= 0 else -1
                timestamp = log_append_time_ms if log_append_time_ms >= 0 else record[3]
                future.set_result(RecordMetadata(topic, partition, offset, timestamp))
        self._finish()

    def fail(self, error: BaseException) -> None:
        for future in self.futures:
            if not future.done():
                future.set_exception(error)
        self._finish()

    def _finish(self) -> None:
        self.builder = None
        if not self.done.done():
            self.done.set_result(None)


class ReadyCheck:
    """What :meth:`RecordAccumulator.ready` found."""

    __slots__ = ("delay_ms", "nodes", "unknown_leader_topics")

    def __init__(self) -> None:
        self.nodes: set[int] = set()
        self.delay_ms: float | None = None
        """How long until more becomes sendable; None: nothing is waiting."""
        self.unknown_leader_topics: set[str] = set()

    def wait(self, delay_ms: float) -> None:
        if self.delay_ms is None or delay_ms < self.delay_ms:
            self.delay_ms = max(delay_ms, 0.0)


class RecordAccumulator:
    """Batches by partition; see the module docstring for the sender's protocol."""

    def __init__(
        self,
        *,
        batch_size: int = 16_384,
        linger_ms: float = 0,
        compression: str = "none",
        retry_backoff_ms: float = 100,
        delivery_timeout_ms: float = 120_000,
        clock: Callable[[], float],
        on_batch_closed: Callable[[str, int], None] | None = None,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.compression = compression
        self.retry_backoff_ms = retry_backoff_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self._clock = clock
        self._on_batch_closed = on_batch_closed or (lambda topic, partition: None)
        self._wakeup = wakeup or (lambda: None)
        self._batches: dict[TopicPartition, collections.deque[ProducerBatch]] = {}
        self._muted: set[TopicPartition] = set()
        self._incomplete: dict[ProducerBatch, None] = {}  # insertion-ordered set
        self._seq = itertools.count()
        self.producer_id = -1
        self.producer_epoch = -1
        self._sequences: dict[TopicPartition, int] = {}
        """Idempotence: the next sequence per partition under ``producer_id``."""
        self._flushes = 0
        self._drain_start = 0
        self.buffered_bytes = 0
        """Bound on the bytes of records appended and not yet finished (buffer.memory)."""

    # --- the caller's side -----------------------------------------------------------------

    def append(
        self,
        tp: TopicPartition,
        key: Data | None,
        value: Data | None,
        *,
        headers: Sequence[Header] | None = None,
        timestamp_ms: int,
        size_bound: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        if size_bound is None:
            size_bound = record_size_upper_bound(key, value, headers)
        queue = self._batches.get(tp)
        if queue is None:
            queue = self._batches[tp] = collections.deque()
        batch = queue[-1] if queue else None
        if batch is not None and batch.is_open and batch.size_bound + size_bound > self.batch_size:
            self._close(batch)
            self._wakeup()
        if batch is None or not batch.is_open:
            batch = self._new_batch(tp)
            queue.append(batch)
            self._wakeup()  # due now (linger 0) or at its linger: the sender must know when
        future = batch.append((key, value, headers, timestamp_ms), size_bound)
        self.buffered_bytes += size_bound
        if batch.size_bound >= self.batch_size:
            self._close(batch)
            self._wakeup()
        return future

    def begin_flush(self) -> int:
        """Make every batch sendable now, lingering or not; returns a marker for
        :meth:`pending_up_to` (batches created later are not waited for)."""
        self._flushes += 1
        self._wakeup()
        return next(self._seq)

    def end_flush(self) -> None:
        self._flushes -= 1

    def pending_up_to(self, marker: int) -> list[asyncio.Future[None]]:
        """The ``done`` futures of unfinished batches created before ``marker``."""
        return [b.done for b in self._incomplete if b.seq < marker]

    @property
    def has_batches(self) -> bool:
        return bool(self._incomplete)

    # --- the sender's side -----------------------------------------------------------------

    def ready(self, leader_of: LeaderOf) -> ReadyCheck:
        now = self._clock()
        check = ReadyCheck()
        for tp, queue in self._batches.items():
            if not queue or tp in self._muted:
                continue
            leader = leader_of(tp)
            if leader is None:
                check.unknown_leader_topics.add(tp.topic)
                continue
            wait_ms = self._wait_ms(queue, now)
            if wait_ms <= 0:
                check.nodes.add(leader)
            else:
                check.wait(wait_ms)
        return check

    def drain(
        self, nodes: Iterable[int], leader_of: LeaderOf, max_request_size: int
    ) -> dict[int, list[ProducerBatch]]:
        """Take what each of ``nodes`` should be sent now: one batch per partition at most.

        Partitions are visited from a rotating start so a request that fills up does not
        always leave out the same ones (Kafka's drainIndex).
        """
        wanted = set(nodes)
        now = self._clock()
        out: dict[int, list[ProducerBatch]] = {}
        sizes: dict[int, int] = {}
        tps = list(self._batches)
        if not tps:
            return out
        start = self._drain_start % len(tps)
        self._drain_start += 1
        for tp in itertools.chain(tps[start:], tps[:start]):
            queue = self._batches[tp]
            if not queue or tp in self._muted:
                continue
            leader = leader_of(tp)
            if leader not in wanted or self._wait_ms(queue, now) > 0:
                continue
            assert leader is not None
            batch = queue[0]
            payload = self._close(batch)
            size = sizes.get(leader, 0)
            if size and size + len(payload) > max_request_size:
                continue  # the next request takes it
            queue.popleft()
            self._muted.add(tp)
            if self.producer_id >= 0 and batch.producer_id < 0:
                self._sequence(batch)  # a retry keeps its stamp, even under an older id
            batch.attempts += 1
            sizes[leader] = size + len(payload)
            out.setdefault(leader, []).append(batch)
        return out

    def reset_producer(self, producer_id: int, producer_epoch: int) -> None:
        """A new producer id: sequences start at 0 again for batches not sent yet. A batch
        already sent under the old id keeps that id and sequence on every retry: its first
        send may have been written, and only the old id's state on the broker can tell
        (Kafka never re-sequences a batch whose outcome is unknown)."""
        self.producer_id, self.producer_epoch = producer_id, producer_epoch
        self._sequences.clear()

    def _sequence(self, batch: ProducerBatch) -> None:
        """The next sequence of its partition; a retry keeps the one it was sent with."""
        base = self._sequences.get(batch.tp, 0)
        batch.stamp(self.producer_id, self.producer_epoch, base)
        self._sequences[batch.tp] = (base + batch.record_count) % _SEQUENCE_WRAP

    def expire(self) -> list[ProducerBatch]:
        """Fail waiting batches past ``delivery_timeout_ms``; in-flight ones are left to
        their request's own timeout."""
        now = self._clock()
        expired: list[ProducerBatch] = []
        for tp, queue in self._batches.items():
            if tp in self._muted:
                continue
            while queue and queue[0].deadline_ms <= now:
                batch = queue.popleft()
                expired.append(batch)
                self._finish(
                    batch,
                    RequestTimedOutError(
                        f"expiring {batch.record_count} record(s) for {tp.topic}-{tp.partition}: "
                        f"{now - batch.created_ms:.0f} ms passed since the batch was created "
                        f"(delivery_timeout_ms={self.delivery_timeout_ms:.0f})"
                    ),
                )
        return expired

    def complete(self, batch: ProducerBatch, base_offset: int, log_append_time_ms: int) -> None:
        self._muted.discard(batch.tp)
        batch.resolve(base_offset, log_append_time_ms)
        self._release(batch)

    def fail(self, batch: ProducerBatch, error: BaseException) -> None:
        self._muted.discard(batch.tp)
        self._finish(batch, error)

    def retry(self, batch: ProducerBatch) -> None:
        """Back to the front of its partition's queue, resent after the backoff."""
        batch.retry_at_ms = self._clock() + self.retry_backoff_ms
        self._muted.discard(batch.tp)
        self._batches[batch.tp].appendleft(batch)

    def split(self, batch: ProducerBatch) -> None:
        """Re-encode a batch the broker found too large as two halves, in order, at the
        front of its queue (Kafka splits on MESSAGE_TOO_LARGE the same way)."""
        assert batch.record_count > 1
        self._muted.discard(batch.tp)
        self._release(batch)
        middle = batch.record_count // 2
        halves = []
        offset = 0
        for part in (slice(0, middle), slice(middle, None)):
            half = ProducerBatch(
                batch.tp, self.compression, batch.created_ms, batch.deadline_ms, batch.seq
            )
            for record, future in zip(batch.records[part], batch.futures[part], strict=True):
                assert half.builder is not None
                key, value, headers, timestamp_ms = record
                half.builder.append(key, value, headers, timestamp_ms)
                half.records.append(record)
                half.futures.append(future)
            half.size_bound = len(half.close())
            if batch.producer_id >= 0:  # the halves take the refused batch's sequences
                sequence = (batch.base_sequence + offset) % _SEQUENCE_WRAP
                half.stamp(batch.producer_id, self.producer_epoch, sequence)
            offset += half.record_count
            half.attempts = batch.attempts
            halves.append(half)
            self._incomplete[half] = None
            self.buffered_bytes += half.size_bound
        self._batches[batch.tp].extendleft(reversed(halves))
        batch.done.set_result(None)  # its records live on in the halves

    def fail_topic(self, topic: str, error: ApiError) -> int:
        """Fail every waiting batch of ``topic`` (it does not exist); returns how many."""
        failed = 0
        for tp, queue in self._batches.items():
            if tp.topic == topic and tp not in self._muted:
                while queue:
                    self._finish(queue.popleft(), error)
                    failed += 1
        return failed

    def fail_all(self, error: BaseException) -> None:
        for queue in self._batches.values():
            while queue:
                self._finish(queue.popleft(), error)
        for batch in list(self._incomplete):
            self._finish(batch, error)
        self._muted.clear()

    # --- inside ----------------------------------------------------------------------------

    def _wait_ms(self, queue: collections.deque[ProducerBatch], now: float) -> float:
        """How long the partition's first batch must still wait; <= 0 means send it now."""
        batch = queue[0]
        if batch.attempts:
            return batch.retry_at_ms - now
        if not batch.is_open or len(queue) > 1 or self._flushes:
            return 0
        return batch.created_ms + self.linger_ms - now

    def _new_batch(self, tp: TopicPartition) -> ProducerBatch:
        now = self._clock()
        batch = ProducerBatch(
            tp, self.compression, now, now + self.delivery_timeout_ms, next(self._seq)
        )
        self._incomplete[batch] = None
        self.buffered_bytes += batch.size_bound
        return batch

    def _close(self, batch: ProducerBatch) -> bytes | bytearray:
        was_open = batch.is_open
        payload = batch.close()
        if was_open:
            self._on_batch_closed(batch.tp.topic, batch.tp.partition)
        return payload

    def _finish(self, batch: ProducerBatch, error: BaseException) -> None:
        batch.fail(error)
        self._release(batch)

    def _release(self, batch: ProducerBatch) -> None:
        if batch in self._incomplete:
            del self._incomplete[batch]
            self.buffered_bytes -= batch.size_bound
