"""The producer's record accumulator: per-partition batches, and which of them to send now.

A pure class (no sockets, no sleeping; time comes from an injected clock in ms) so the
batching rules can be tested alone. The producer's sender task drives it:

- ``append`` adds a record to the last open batch of its partition, or opens a new one
  when it would pass ``batch_size``. Each record gets a :class:`RecordFuture` for its
  metadata (one outcome per batch, read by each record). An open batch keeps its
  records as columns (keys, values, timestamps, headers) and is encoded once, when it
  closes: column by column when its records have no headers
  (:meth:`~protocol.records.BatchBuilder.extend`), which costs a fraction of encoding
  each record as it arrives.
- ``ready`` says which brokers have something to send and, if nothing yet, how long until
  something will be (a linger or a retry backoff ending).
- ``drain`` takes, per broker, at most ONE batch per partition (Kafka's rule, and the
  broker's), up to ``max_request_size`` per request. A partition with batches in flight
  gets another only when the producer is idempotent: up to ``max_in_flight`` of them,
  all stamped under the current producer id and epoch, so the leader's sequence check
  keeps them in order (a batch whose predecessor was not written is refused, then
  retried after it) and recognises any of them sent twice (it remembers a producer's
  last five batches: so never more than ``max_in_flight`` are sent from the partition's
  oldest batch not yet settled on, however many of them have been answered).
  Without idempotence a partition has one batch in flight at a time ("muted"), so a
  retry can never be overtaken.
- The outcome goes back through ``complete`` / ``retry`` / ``split`` / ``fail``. A retried
  batch goes back into its partition's queue in send order (``rank``), ahead of anything
  never sent, keeping its bytes, so it is resent as it was. A partition whose next batch
  is a retry sends it alone, once nothing of that partition is in flight: retries go one
  at a time, in order (as Kafka's producer does).

Concurrency: one event loop; nothing here awaits. ``wakeup`` is called when a batch is
created (so the sender learns when its linger ends) or fills up (sendable at once), as
Kafka's producer wakes its sender on ``batchIsFull || newBatchCreated``.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
from array import array
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from client.metrics import ProducerMetrics
from client.types import RecordMetadata, TopicPartition
from protocol.errors import ApiError, MessageTooLargeError, RequestTimedOutError
from protocol.records import (
    HEADER_SIZE,
    BatchBuilder,
    Record,
    decode_batches,
    set_producer_fields,
)
from protocol.records.batch import ATTRIBUTES_POS, TRANSACTIONAL_BIT
from protocol.records.runs import timestamp_runs

__all__ = [
    "RECORD_OVERHEAD_BOUND",
    "LeaderOf",
    "ProducerBatch",
    "ReadyCheck",
    "RecordAccumulator",
    "RecordFuture",
    "record_size_upper_bound",
]

Header = tuple[str, bytes | None]
Data = bytes | bytearray | memoryview
LeaderOf = Callable[[TopicPartition], int | None]

_VARINT_MAX = 5  # lengths and deltas are 32-bit: at most 5 bytes as varints
_VARLONG_MAX = 10  # the timestamp delta is 64-bit
_SEQUENCE_WRAP = 2**31  # sequences are int32 and wrap to 0 (Kafka's DefaultRecordBatch)
RECORD_OVERHEAD_BOUND = _VARINT_MAX + 1 + _VARLONG_MAX + _VARINT_MAX + 3 * _VARINT_MAX
"""A record's bytes beyond its key and value, at most, when it has no headers."""
HELD_PER_RECORD = 80
"""What an open batch holds for a record beyond its bytes, counted against
``buffer_memory``: the value's object header, the int of its timestamp, and their slots
in the batch's lists (the record is encoded when the batch closes)."""
LANE_RECORDS = 128
"""Records :meth:`RecordAccumulator.append_to` takes room for at once (the buffer's
count is high by at most this many records' per open batch)."""
_new = object.__new__
_COMPACT_FROM = 16  # records: a closed batch keeps fewer timestamps as they are


def record_size_upper_bound(
    key: Data | None,
    value: Data | None,
    headers: Sequence[Header] | None,
) -> int:
    """Bytes a record can take inside a batch, at most (Kafka's estimateSizeInBytesUpperBound).

    Computed before encoding, to decide whether the record still fits the open batch and
    whether it can ever fit a request.
    """
    size = RECORD_OVERHEAD_BOUND
    size += len(key) if key is not None else 0
    size += len(value) if value is not None else 0
    for name, data in headers or ():
        size += 2 * _VARINT_MAX + len(name.encode()) + (len(data) if data is not None else 0)
    return size


if TYPE_CHECKING:
    _FutureLike = asyncio.Future[RecordMetadata]
else:
    _FutureLike = object


class RecordFuture(_FutureLike):
    """What ``send()`` returns: the record's :class:`RecordMetadata`, once its batch is
    answered. Await it, or use it as an :class:`asyncio.Future` (``done``, ``result``,
    ``exception``, ``add_done_callback``; ``asyncio.gather``/``wait``/``wait_for`` take it).

    Kafka's FutureRecordMetadata: a record's outcome is its batch's (one per batch), and
    its metadata is derived on demand from the batch's base offset and the record's index.
    A real asyncio future is made only when one is needed (an ``await``, a callback, a
    cancel); until then a record costs this small object, not a future and a
    :class:`RecordMetadata` each (which cost the producer a third of its time). Cancelling
    it cancels the caller's wait, never the record: it is sent all the same.

    Type checkers see an :class:`asyncio.Future` (it can go wherever one can); at run time
    it is not one (``isinstance`` says no), and only the producer settles it.
    """

    __slots__ = ("_batch", "_future", "_index")
    _asyncio_future_blocking = False  # asyncio.isfuture() takes it as a future

    def __init__(self, batch: ProducerBatch, index: int) -> None:
        self._batch = batch
        self._index = index
        self._future: asyncio.Future[RecordMetadata] | None = None

    def __repr__(self) -> str:
        state = "pending" if not self.done() else "done"
        return f"<RecordFuture {self._batch.tp.topic}-{self._batch.tp.partition} {state}>"

    def _where(self) -> ProducerBatch:
        """Its batch now: a batch split in two hands its records to the halves."""
        batch = self._batch
        while batch.split_into is not None:
            first, second = batch.split_into
            if self._index < first.count:
                batch = first
            else:
                self._index -= first.count
                batch = second
        self._batch = batch
        return batch

    # done() and exception() are what a caller holding many futures calls on each (a
    # loop, a bench tallying its acks): the batch's own state first, without a call to
    # _where() unless the batch was split
    def done(self) -> bool:
        batch = self._batch
        if batch.split_into is not None:
            batch = self._where()
        if batch.finished:
            return True
        future = self._future
        return future is not None and future.done()

    def cancelled(self) -> bool:
        return self._future is not None and self._future.cancelled()

    def cancel(self, msg: Any = None) -> bool:
        return self._materialize().cancel(msg)

    def result(self) -> RecordMetadata:
        future = self._future
        if future is not None and future.done():
            return future.result()
        batch = self._finished_batch()
        if batch.error is not None:
            # as asyncio.Future: the stored traceback, or each raise would grow the
            # shared error's traceback by another frame
            raise batch.error.with_traceback(batch.error_traceback)
        return batch.metadata(self._index)

    def exception(self) -> BaseException | None:
        future = self._future
        if future is not None and future.done():
            return future.exception()
        batch = self._batch
        if batch.split_into is not None:
            batch = self._where()
        if not batch.finished:
            raise asyncio.InvalidStateError("the record is not acknowledged yet")
        return batch.error

    def _finished_batch(self) -> ProducerBatch:
        batch = self._where()
        if not batch.finished:
            raise asyncio.InvalidStateError("the record is not acknowledged yet")
        return batch

    def add_done_callback(
        self, fn: Callable[[RecordFuture], object], *, context: contextvars.Context | None = None
    ) -> None:
        """As :meth:`asyncio.Future.add_done_callback`: ``fn(self)`` is scheduled on the
        loop once the record is acknowledged (at once if it is), in ``context`` (default:
        a copy of the current one). Without an asyncio future the batch keeps it and
        schedules it itself (an asyncio future and the metadata set on it tripled a
        callback's cost: 2.5 us, and Kafka's tool has one per record)."""
        if self._future is not None:
            self._future.add_done_callback(_Relay(fn, self), context=context)
            return
        batch = self._where()
        if context is None:
            context = contextvars.copy_context()
        if batch.finished:
            batch.done.get_loop().call_soon(fn, self, context=context)
            return
        callbacks = batch.callbacks
        if callbacks is None:
            callbacks = batch.callbacks = {}
        mine = callbacks.get(self)
        if mine is None:
            mine = callbacks[self] = []
            batch.watch(self)  # (once: its list stays, emptied or not, until the end)
        mine.append((fn, context))

    def remove_done_callback(self, fn: Callable[[RecordFuture], object]) -> int:
        removed = 0
        if self._future is not None:
            removed = self._future.remove_done_callback(fn)  # type: ignore[arg-type] # a _Relay equals its function
        callbacks = self._where().callbacks
        mine = None if callbacks is None else callbacks.get(self)
        if mine:
            kept = [(f, context) for f, context in mine if f != fn]
            removed += len(mine) - len(kept)
            mine[:] = kept
        return removed

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._batch.done.get_loop()

    # asyncio.gather's callback reads these two off a cancelled child (3.11 to 3.13)
    def _make_cancelled_error(self) -> asyncio.CancelledError:
        return self._materialize()._make_cancelled_error()  # type: ignore[attr-defined]

    @property
    def _cancel_message(self) -> Any:
        return None if self._future is None else self._future._cancel_message  # type: ignore[attr-defined]

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        return self._materialize().__await__()

    __iter__ = __await__

    def _materialize(self) -> asyncio.Future[RecordMetadata]:
        if self._future is None:
            future = self._future = self.get_loop().create_future()
            batch = self._where()
            if batch.finished:
                self._settle()
            else:
                # callbacks added before go onto the future, ahead of any added after
                mine = None if batch.callbacks is None else batch.callbacks.pop(self, None)
                if mine is None:
                    batch.watch(self)
                else:  # (watched already)
                    for fn, context in mine:
                        future.add_done_callback(_Relay(fn, self), context=context)
        return self._future

    def _settle(self) -> None:
        """The batch finished: pass its outcome to the asyncio future, or schedule the
        callbacks the batch kept."""
        future = self._future
        if future is None:
            batch = self._batch
            mine = None if batch.callbacks is None else batch.callbacks.pop(self, None)
            if mine:
                call_soon = batch.done.get_loop().call_soon
                for fn, context in mine:
                    call_soon(fn, self, context=context)
            return
        if future.done():
            return
        batch = self._batch
        if batch.error is not None:
            future.set_exception(batch.error)
        else:
            future.set_result(batch.metadata(self._index))


class _TimestampRuns:
    """A closed batch's timestamps as runs (see ``timestamp_runs``): index -> timestamp."""

    __slots__ = ("starts", "values")

    def __init__(self, starts: list[int], values: list[int]) -> None:
        self.starts = starts
        self.values = values

    def __getitem__(self, index: int) -> int:
        return self.values[bisect_right(self.starts, index) - 1]


def _index_of(record: RecordFuture) -> int:
    return record._index


class _Relay:
    """A done-callback that hands the user's function the :class:`RecordFuture` (not the
    asyncio future inside it), and equals that function so it can be removed by it."""

    __slots__ = ("fn", "owner")

    def __init__(self, fn: Callable[[RecordFuture], object], owner: RecordFuture) -> None:
        self.fn = fn
        self.owner = owner

    def __call__(self, _future: object) -> None:
        self.fn(self.owner)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Relay):
            return self.fn == other.fn and self.owner is other.owner
        return bool(self.fn == other)

    __hash__ = None  # type: ignore[assignment]


class ProducerBatch:
    """One partition's records on their way: open (taking records), then built and sent.

    ``payload`` is built once, when the batch is first drained; a retry resends those
    exact bytes. A batch the broker finds too large is split by decoding its payload, so
    no record's key and value is kept beside its encoded bytes. The outcome (a base
    offset, or an error) is the batch's: each :class:`RecordFuture` reads it.
    """

    __slots__ = (
        "attempts",
        "base_offset",
        "base_sequence",
        "builder",
        "callbacks",
        "count",
        "created_ms",
        "deadline_ms",
        "done",
        "error",
        "error_traceback",
        "finished",
        "headers",
        "in_doubt",
        "keys",
        "lane_high",
        "lane_keyed_size",
        "lane_last",
        "lane_low",
        "lane_min",
        "lane_size",
        "lane_start",
        "left",
        "log_append_time_ms",
        "payload",
        "producer_epoch",
        "producer_id",
        "rank",
        "retry_at_ms",
        "seq",
        "size_bound",
        "split_into",
        "timestamps",
        "tp",
        "txn_rechecked",
        "values",
        "watchers",
        "written",
    )

    def __init__(
        self,
        tp: TopicPartition,
        compression: tuple[str, int | None],
        created_ms: float,
        deadline_ms: float,
        seq: int,
    ) -> None:
        """``compression``: the codec's name and level (None: its default)."""
        self.tp = tp
        codec, level = compression
        self.builder: BatchBuilder | None = BatchBuilder(compression=codec, level=level)
        self.count = 0
        """Records appended; the accumulator appends them (its hot path) straight onto
        the columns below, encoded into ``builder`` when the batch closes."""
        self.values: list[Data | None] = []
        self.keys: list[Data | None] | None = None  # None while every record is keyless
        self.headers: list[Sequence[Header] | None] | None = None  # None while none has any
        self.timestamps: list[int] = []
        """Each record's, for its metadata too (once the columns are encoded, their runs
        or an array; a ``send_batch`` batch keeps the caller's list)."""
        self.written = HEADER_SIZE
        """The batch's uncompressed bytes: at most this while it is open, exact once built.
        Kafka counts what a batch has encoded, and an open batch here has encoded nothing
        yet: each record counts its key, value and headers, plus its other fields at the
        widest they can be for those sizes (9 bytes for small records, 12 up to 8 KiB),
        more for a timestamp 8 s or more from the batch's first or past 8,192 records. A
        batch of 100-byte records fills to within 2% of ``batch_size``, and never past it
        (but for a single record larger than it)."""
        self.created_ms = created_ms
        self.deadline_ms = deadline_ms
        self.seq = seq
        self.rank: tuple[int, ...] = (seq,)
        """Its place in its partition's send order (halves of a split batch follow on
        from their batch's); retries go back into the queue by it."""
        self.attempts = 0
        self.in_doubt = False
        """An attempt ended without saying whether the batch was written (its answer lost,
        a timeout, NOT_LEADER_OR_FOLLOWER): some replica's log may hold it, and one that
        holds it can still become leader. Such a batch is never sent again under a new
        sequence (see ``Producer._on_error``)."""
        self.txn_rechecked = False
        """Sent again once after an INVALID_TXN_STATE (see ``Producer._on_error``)."""
        self.retry_at_ms = 0.0
        self.payload: bytes | bytearray | None = None
        self.producer_id = -1  # stamped with (and sequenced under) this producer id
        self.producer_epoch = -1  # ...and epoch
        self.base_sequence = -1
        self.size_bound = HEADER_SIZE
        self.finished = False
        self.base_offset = -1
        self.log_append_time_ms = -1
        self.error: BaseException | None = None
        self.error_traceback: TracebackType | None = None
        self.split_into: tuple[ProducerBatch, ProducerBatch] | None = None
        self.watchers: list[RecordFuture] | None = None
        """The records with an asyncio future or callbacks, told when the batch ends."""
        self.callbacks: (
            dict[RecordFuture, list[tuple[Callable[[RecordFuture], object], contextvars.Context]]]
            | None
        ) = None
        """The callbacks of records without an asyncio future, by record."""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.left = 0
        """Records without headers, keyless of ``lane_min`` to ``lane_size`` bytes or keyed
        of ``lane_min`` to ``lane_keyed_size`` (key and value), stamped from ``lane_low``
        up to ``lane_high`` ms, that :meth:`RecordAccumulator.append_to` may still append
        with no check: their room and buffer memory are already counted in ``written``,
        ``size_bound`` and the accumulator's ``buffered_bytes``, each at the largest size
        (see ``RecordAccumulator._reserve``). 0 whenever the batch is not open."""
        self.lane_size = -1
        """The largest value of the keyless records room is taken for; -1: keyed ones."""
        self.lane_keyed_size = -1
        """The largest key and value of the keyed records room is taken for; -1: keyless."""
        self.lane_min = 0
        self.lane_start = -1
        """The index of the first record of a run of varied sizes while its room is
        counted (its records at the run's largest size): settled by
        ``RecordAccumulator._unreserve``, ``left`` or not; -1: no such run (a run of one
        size has ``left`` alone to give back)."""
        self.lane_low = 0
        self.lane_high = 0
        self.lane_last: int | None = None
        """The size of the last record counted on its own (~size if keyed): room is
        taken when the next is like it (keyed or not as it is, and of the same size or
        at least of its band, see ``_reserve``)."""

    def __repr__(self) -> str:
        return f"ProducerBatch({self.tp.topic}-{self.tp.partition}, {self.count} records)"

    @property
    def is_open(self) -> bool:
        return self.builder is not None and self.payload is None

    @property
    def record_count(self) -> int:
        return self.count

    def metadata(self, index: int) -> RecordMetadata:
        """Record ``index``'s metadata; offset -1 when unknown (acks=0)."""
        topic, partition = self.tp
        offset = self.base_offset + index if self.base_offset >= 0 else -1
        timestamp = (
            self.log_append_time_ms if self.log_append_time_ms >= 0 else self.timestamps[index]
        )
        return RecordMetadata(topic, partition, offset, timestamp)

    def watch(self, record: RecordFuture) -> None:
        if self.watchers is None:
            self.watchers = []
        self.watchers.append(record)

    def forget_sequence(self) -> None:
        """The partition refused this batch's sequence (so it was not written): it is
        stamped anew, under the producer's next epoch, when sent again."""
        self.producer_id, self.producer_epoch, self.base_sequence = -1, -1, -1

    def stamp(
        self,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        *,
        transactional: bool = False,
    ) -> None:
        """An idempotent producer's id, epoch and sequence, into the built batch (and,
        for a transactional producer, the transactional flag)."""
        assert self.payload is not None
        payload = self.payload
        if self.attempts or not isinstance(payload, bytearray):
            # sent before: its request may still hold those bytes; never sent: in place
            payload = self.payload = bytearray(payload)
        if transactional:
            payload[ATTRIBUTES_POS + 1] |= TRANSACTIONAL_BIT  # the low byte; CRC'd below
        set_producer_fields(payload, producer_id, producer_epoch, base_sequence)
        self.producer_id, self.producer_epoch = producer_id, producer_epoch
        self.base_sequence = base_sequence

    def close(self) -> bytes | bytearray:
        """Stop taking records and build the bytes to send (once)."""
        self.left, self.lane_start = 0, -1  # (the accumulator settled their room first)
        if self.payload is None:
            assert self.builder is not None
            if self.values:
                # (found once, for the encoder and for what the batch keeps)
                runs = timestamp_runs(self.timestamps) if self.count >= _COMPACT_FROM else None
                self.written = self.builder.extend(
                    self.keys, self.values, self.timestamps, self.headers, timestamp_runs=runs
                )
                self.values, self.keys, self.headers = [], None, None  # the bytes have them
                # while futures wait: each run's start and timestamp (a producer's), else
                # 8 bytes each (an array of a list took 24 ns a record); a few records
                # keep their list (the runs' making would cost more than they save)
                if self.count >= _COMPACT_FROM:
                    kept = array("q", self.timestamps) if runs is None else _TimestampRuns(*runs)
                    self.timestamps = kept  # type: ignore[assignment] # closed: read by index
            self.payload = self.builder.build()
            self.builder = None
        return self.payload

    def records(self) -> list[Record]:
        """The records, decoded back from the built payload (to split it)."""
        assert self.payload is not None
        (batch,) = decode_batches(self.payload, verify_crc=False)
        return batch.records

    def resolve(self, base_offset: int, log_append_time_ms: int = -1) -> None:
        """Every record's metadata: offset = base offset + its index; -1 when unknown."""
        if self.finished:
            return
        self.base_offset = base_offset
        self.log_append_time_ms = log_append_time_ms
        self._finish()

    def fail(self, error: BaseException) -> None:
        if not self.finished:
            self.error, self.error_traceback = error, error.__traceback__
        self._finish()

    def _finish(self) -> None:
        self.builder = None
        self.left, self.lane_start = 0, -1  # (counted in size_bound: released with it)
        self.values, self.keys, self.headers = [], None, None  # expired or failed while open
        if self.finished:
            return
        self.finished = True
        # the records' futures outlive the batch (callers keep them): they need its
        # offsets and timestamps, not its bytes (a request in flight has its own reference)
        self.payload = None
        if self.watchers is not None:
            # in send order, as Kafka runs a partition's callbacks
            for record in sorted(self.watchers, key=_index_of):
                record._settle()  # the batch and its records' futures are one
            self.watchers = self.callbacks = None
        if not self.done.done():
            self.done.set_result(None)


def _band(size: int) -> tuple[int, int]:
    """The sizes (key and value) whose records ``append_to`` counts with the same widest
    other fields as a record of ``size`` bytes: its count differs from theirs by their
    bytes alone."""
    if size < 56:
        return 0, 55
    if size < 8180:
        return 56, 8179
    if size < 1_048_000:
        return 8180, 1_047_999
    return 1_048_000, 2**62


def _unused(batch: ProducerBatch) -> tuple[int, int]:
    """What a batch's run took ahead and its records did not use, in ``written`` and in
    ``size_bound``: the records still to come, and, for sizes that vary, the difference
    between each record taken and the run's largest (from their lengths, in C)."""
    start = batch.lane_start
    high = max(batch.lane_size, batch.lane_keyed_size)  # (the other is -1)
    written, held = _lane_costs(high, batch.count if start < 0 else start)
    left = batch.left
    written, held = left * written, left * held
    if start >= 0:
        used = sum(map(len, batch.values[start:]))  # type: ignore[arg-type] # (bytes: a run's)
        if batch.lane_keyed_size >= 0:
            used += sum(map(len, batch.keys[start:]))  # type: ignore[arg-type,index]
        over = (batch.count - start) * high - used
        written += over
        held += over
    return written, held


def _lane_costs(size: int, index: int) -> tuple[int, int]:
    """What ``append_to`` counts for a headerless record of ``size`` bytes (key and value)
    at ``index`` in a batch, its timestamp within 8,192 ms of the batch's first: its bytes
    at their widest (``written``) and the bytes it holds (``size_bound``). ``append`` and
    ``append_to`` count the same inline, per record (a call costs the hot path)."""
    written = size + (9 if size < 56 else 12 if size < 8180 else 15 if size < 1_048_000 else 20)
    if index >= 8192:  # three-byte offset deltas (2**20 on: not a run)
        written += 1
    return written, size + RECORD_OVERHEAD_BOUND + HELD_PER_RECORD


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
        compression_level: int | None = None,
        retry_backoff_ms: float = 100,
        delivery_timeout_ms: float = 120_000,
        max_in_flight: int = 1,
        clock: Callable[[], float],
        on_batch_closed: Callable[[str, int], None] | None = None,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.compression = (compression, compression_level)
        self.retry_backoff_ms = retry_backoff_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self._clock = clock
        self._on_batch_closed = on_batch_closed or (lambda topic, partition: None)
        self._wakeup = wakeup or (lambda: None)
        self._batches: dict[TopicPartition, collections.deque[ProducerBatch]] = {}
        """Each partition's batches waiting to be sent, oldest first. A partition whose
        queue empties leaves it: the sender's passes (ready, drain, expire) go over the
        partitions with batches, not every partition ever written (with 1,024 of them,
        a third of an e2e run's client time)."""
        self.open_batches: dict[TopicPartition, ProducerBatch] = {}
        """Each partition's batch taking records, if any (the last of its queue). Read by
        the producer's fast path for keyed records: only the accumulator changes it, and
        it never replaces the dict."""
        self.max_in_flight = max_in_flight
        """Batches of one partition in flight at once; more than 1 only while batches are
        stamped with a producer id (the producer passes more when idempotent)."""
        self._sent: dict[TopicPartition, list[ProducerBatch]] = {}
        """Each partition's batches in flight, in send order (no key: none)."""
        self._window: dict[TopicPartition, list[ProducerBatch]] = {}
        """Each partition's batches sent since its oldest one not yet settled, by rank,
        answered or not (no key: none). Never more than ``max_in_flight`` are sent from
        there on: the leader remembers a producer's last five batches, so a batch whose
        answer was lost is still recognised when it is retried, however the answers of
        the ones after it came back (from another broker, after a leader moved)."""
        self._incomplete: dict[ProducerBatch, None] = {}  # insertion-ordered set
        self._seq = itertools.count()
        self.producer_id = -1
        self.producer_epoch = -1
        self._sequences: dict[TopicPartition, int] = {}
        """Idempotence: the next sequence per partition under ``producer_id``."""
        self._flushes = 0
        self.exhausted = 0
        """Sends waiting for ``buffer_memory``: while any is, every batch is sendable at
        once (Kafka's ``exhausted``: its lingering batches hold the memory they wait for)."""
        self._drain_start = 0
        self._unwritten: dict[TopicPartition, tuple[int, int, tuple[int, ...]]] = {}
        """Per partition, (producer id, epoch, rank) of the last batch whose sequence was
        refused for sure: no replica holds any batch stamped the same and sent after it
        (each leader takes a producer's sequences only in order), so those are not in
        doubt, whatever their own attempts said."""
        self.sequence_hole = False
        """A batch stamped with a sequence finished without being written for sure
        (failed, expired, its topic gone): the partition may or may not have it, so the
        producer must move to a new epoch before it sends anything more. Requests of the
        old epoch a broker has yet to read could otherwise land after a refusal that the
        producer took for a real one. The producer clears it when it resets."""
        self.queued_behind = False
        """The last drain left a batch queued behind one it took: the sender looks again
        (pipelining may send it, or its linger needs a timer) once that one is out."""
        self.buffered_bytes = 0
        """Bound on the bytes of records appended and not yet finished (buffer.memory)."""
        self.buffer_memory = 2**62
        """The producer's ``buffer_memory``: :meth:`append_to` leaves a record that would
        pass it to :meth:`append`'s caller, which waits for space."""
        self.value_max = 2**62
        """The largest key and value :meth:`append_to` takes (the rest of
        ``max_request_size``)."""
        self.transactional = False
        """Batches are stamped as a transaction's (a transactional producer's)."""
        self.on_failure: Callable[[BaseException], None] | None = None
        """Told of every batch that fails (a transaction that had one cannot commit)."""
        self.metrics: ProducerMetrics | None = None
        """Told of every batch retried, split or failed (the producer's metrics)."""

    # --- the caller's side -----------------------------------------------------------------

    def append(  # noqa: PLR0917 - positional for the producer's per-record call
        self,
        tp: TopicPartition,
        key: Data | None,
        value: Data | None,
        headers: Sequence[Header] | None,
        timestamp_ms: int,
        size_bound: int | None = None,
    ) -> RecordFuture:
        if size_bound is None:
            size_bound = record_size_upper_bound(key, value, headers)
        # the producer's hot path, one call per record: hence flat, no helper calls
        batch = self.open_batches.get(tp)
        if batch is not None and (batch.left or batch.lane_start >= 0):
            self._unreserve(batch)  # this record is not of the kind room was taken for
        if (
            batch is None
            or batch.builder is None  # closed, or finished early (expired, failed)
            or batch.written + size_bound > self.batch_size  # Kafka's hasRoomFor
        ):
            batch = self._roll(tp, batch)
        batch.values.append(value)
        batch.timestamps.append(timestamp_ms)
        if key is not None or batch.keys is not None:
            keys = batch.keys
            if keys is None:
                keys = batch.keys = [None] * batch.count
            keys.append(key)
        if headers is not None or batch.headers is not None:
            column = batch.headers
            if column is None:
                column = batch.headers = [None] * batch.count
            column.append(headers)
        # what the record will take encoded, at most (see ``written``): its key, value and
        # headers, and its other fields at their widest for those sizes...
        data = size_bound - RECORD_OVERHEAD_BOUND
        written = data + (9 if data < 56 else 12 if data < 8180 else 15 if data < 1_048_000 else 20)
        # ...with timestamp deltas of up to two bytes and offset deltas of up to two
        index = batch.count
        if not 0 <= timestamp_ms - batch.timestamps[0] < 8192:
            written += 8  # a varlong of up to ten bytes
        if index >= 8192:
            written += 1 if index < 1 << 20 else 3
        written = batch.written = batch.written + written
        held = size_bound + HELD_PER_RECORD
        batch.size_bound += held
        self.buffered_bytes += held
        batch.count = index + 1
        if written >= self.batch_size:
            self._close(batch)
            self._wakeup()
        return RecordFuture(batch, index)

    def append_to(  # noqa: C901 - the producer's hot path, flat: a call costs it 6%
        self, batch: ProducerBatch, value: bytes, timestamp_ms: int, key: bytes | None = None
    ) -> RecordFuture | None:
        """:meth:`append` of a record with a value (and perhaps a key) but no headers onto
        ``batch``, its partition's open batch (the producer's fast path, see
        ``Producer._lanes``); None if that batch is closed or cannot take it, or the buffer
        is full: then :meth:`append` goes the whole way (a new batch, a wait for space, an
        error).

        A run of records of one size, or of sizes near each other, all keyless or all
        keyed (a producer's usual stream), is appended with no check at all: its second
        record takes room ahead for up to :data:`LANE_RECORDS` more like it
        (``_reserve``), and each of those only counts itself down (the checks and the
        counting per record were 35% of ``send()``).
        """
        left = batch.left
        if (
            left
            and batch.lane_low <= timestamp_ms < batch.lane_high
            and (
                # (a run of one size: one comparison, as before runs of varied sizes)
                (len(value) == batch.lane_size or batch.lane_min <= len(value) <= batch.lane_size)
                if key is None
                else (size := len(key) + len(value)) == batch.lane_keyed_size
                or batch.lane_min <= size <= batch.lane_keyed_size
            )
        ):
            batch.left = left - 1
            index = batch.count
            batch.count = index + 1
            batch.values.append(value)
            if key is not None:
                batch.keys.append(key)  # type: ignore[union-attr] # (a keyed run: it is there)
            batch.timestamps.append(timestamp_ms)
            future = _new(RecordFuture)  # (RecordFuture(...) costs an __init__ frame)
            future._batch = batch
            future._index = index
            future._future = None
            return future
        if left or batch.lane_start >= 0:  # a run's end: its room settled, the rest given back
            self._unreserve(batch)
        # a record room was not taken for: every check, and the record counted on its own
        if batch.builder is None:
            return None
        size = len(value) if key is None else len(value) + len(key)
        # append()'s room check (Kafka's hasRoomFor: the record at its widest) and
        # accounting, for a record with no headers
        bound = size + RECORD_OVERHEAD_BOUND
        held = bound + HELD_PER_RECORD
        if (
            batch.written + bound > self.batch_size
            or self.buffered_bytes + held > self.buffer_memory
            or size > self.value_max
        ):
            return None
        written = size + (9 if size < 56 else 12 if size < 8180 else 15 if size < 1_048_000 else 20)
        index = batch.count
        timestamps = batch.timestamps
        if not 0 <= timestamp_ms - timestamps[0] < 8192:
            written += 8
        if index >= 8192:
            written += 1 if index < 1 << 20 else 3
        batch.values.append(value)
        timestamps.append(timestamp_ms)
        if key is not None or batch.keys is not None:
            keys = batch.keys
            if keys is None:
                keys = batch.keys = [None] * index
            keys.append(key)
        if batch.headers is not None:
            batch.headers.append(None)
        written = batch.written = batch.written + written
        batch.size_bound += held
        self.buffered_bytes += held
        batch.count = index + 1
        if written >= self.batch_size:
            self._close(batch)
            self._wakeup()
        else:
            # a run: a second record like the one before (keyed ones as ~size), of its
            # size or of its band, stamped where those taken ahead may be (else each
            # record would take room and give it back)
            like = size if key is None else ~size
            last, batch.lane_last = batch.lane_last, like
            if (
                last is not None
                and (last >= 0) is (key is None)
                and batch.headers is None
                and (key is None) == (batch.keys is None)
                and 0 <= timestamp_ms - timestamps[0] < 8192
            ):
                if like == last:
                    self._reserve(batch, size, size)
                elif _band(size) == _band(other := last if key is None else ~last):
                    self._reserve(batch, size, other)
        return RecordFuture(batch, index)

    def _reserve(self, batch: ProducerBatch, size: int, last: int) -> None:
        """Take room in ``batch`` (and in ``buffer_memory``) for the next headerless
        records like its last two (``size`` and ``last`` bytes: key and value if keyed),
        all keyless or all with keys as they were, stamped within 8,192 ms of its first,
        as many as :meth:`append_to` would take one by one, up to :data:`LANE_RECORDS`.

        A run of one size takes room for that size. Sizes that vary (JSON, text) take it
        for records up to twice the larger of the two (at most what one width of the
        other fields allows, ``_band``: then each record's count differs from the
        largest's by its bytes alone), settled from the records' lengths when the run
        ends (:meth:`_unreserve`, once per run, in C: the per-record count was half of
        what ``send()`` cost for such records).

        Each is counted at what ``append_to`` counts for a record of the run's largest
        size: its bytes at their widest in ``written`` (the same room check, Kafka's
        hasRoomFor, holds for the last of them), and its bytes held in ``size_bound``
        and ``buffered_bytes``. What was not used goes back before the batch takes any
        other record or closes (:meth:`_unreserve`), so the counts are exact again
        whenever anything else reads them but the buffer's, which is high by at most
        the run's room (at most half what was free, and a share of half the buffer per
        open batch; a send that finds the buffer short has it all given back first,
        :meth:`give_back_room`).
        """
        if size == last:
            low = high = size  # (at most value_max: append_to took it)
        else:
            low, high = _band(size)
            high = min(high, 2 * max(size, last), self.value_max)
        index = batch.count
        written, held = _lane_costs(high, index)
        below = 8192 - index if index < 8192 else (1 << 20) - index  # one offset-delta width
        room = self.batch_size - batch.written - (high + RECORD_OVERHEAD_BOUND)
        if room < 0:
            return
        count = min(
            room // written + 1,
            (self.buffer_memory - self.buffered_bytes) // (2 * held),  # half what is free
            # and the open batches' runs together about half the buffer at most
            self.buffer_memory // (2 * held * len(self.open_batches)),
            below,
            LANE_RECORDS,
        )
        if count < 1:
            return
        stamp = batch.timestamps[0]
        batch.lane_low, batch.lane_high = stamp, stamp + 8192
        batch.lane_min = low
        if batch.keys is not None:
            batch.lane_size, batch.lane_keyed_size = -1, high
        else:
            batch.lane_size, batch.lane_keyed_size = high, -1
        batch.left = count
        batch.lane_start = -1 if low == high else index  # (one size: ``left`` says it all)
        batch.written += count * written
        batch.size_bound += count * held
        self.buffered_bytes += count * held

    def taken_ahead(self) -> int:
        """The part of ``buffered_bytes`` that is room taken ahead, not records."""
        return sum(
            _unused(batch)[1]
            for batch in self.open_batches.values()
            if batch.left or batch.lane_start >= 0
        )

    def give_back_room(self) -> None:
        """Give back the room every open batch took ahead (a send that finds the buffer
        full: the room is the buffer's, and the run that took it may be stalled)."""
        for batch in self.open_batches.values():
            if batch.left or batch.lane_start >= 0:
                self._unreserve(batch)

    def _unreserve(self, batch: ProducerBatch) -> None:
        """Settle the room :meth:`_reserve` took: give back what records did not use."""
        written, held = _unused(batch)
        batch.left, batch.lane_start = 0, -1
        batch.written -= written
        batch.size_bound -= held
        self.buffered_bytes -= held

    def append_batch(  # noqa: PLR0917 - the columns of one batch
        self,
        tp: TopicPartition,
        keys: Sequence[Data | None] | None,
        values: Sequence[Data | None],
        timestamps: Sequence[int],
        headers: Sequence[Sequence[Header] | None] | None,
        size_bound: int,
        max_size: int,
    ) -> RecordFuture:
        """Queue a whole batch of records (``send_batch``), after any of the partition's
        records already appended; the future is its first record's.

        Raises :class:`MessageTooLargeError` (and queues nothing) if it encodes to more
        than ``max_size`` bytes.
        """
        now = self._clock()
        batch = ProducerBatch(
            tp, self.compression, now, now + self.delivery_timeout_ms, next(self._seq)
        )
        builder = batch.builder
        assert builder is not None
        written = builder.extend(keys, values, timestamps, headers)
        if written > max_size:
            raise MessageTooLargeError(
                f"the batch is {written} bytes when encoded, more than max_request_size="
                f"{max_size}; send fewer records a batch, or raise max_request_size (and "
                f"the topic's max.message.bytes)"
            )
        batch.written = written
        batch.timestamps = list(timestamps)  # an array's extend converts each int (slower)
        batch.count = len(values)
        batch.size_bound = HEADER_SIZE + size_bound
        batch.close()  # complete: sendable at once, never lingers
        current = self.open_batches.get(tp)
        if current is not None and current.builder is not None:
            self._close(current)  # the partition's records appended before go first
        queue = self._batches.get(tp)
        if queue is None:
            queue = self._batches[tp] = collections.deque()
        queue.append(batch)
        self._incomplete[batch] = None
        self.buffered_bytes += batch.size_bound
        self._wakeup()
        return RecordFuture(batch, 0)

    def _roll(self, tp: TopicPartition, full: ProducerBatch | None) -> ProducerBatch:
        """Close the partition's open batch (when it has one) and open the next."""
        if full is not None and full.builder is not None:
            self._close(full)
        batch = self._new_batch(tp)
        self.open_batches[tp] = batch
        queue = self._batches.get(tp)
        if queue is None:
            queue = self._batches[tp] = collections.deque()
        queue.append(batch)
        self._wakeup()  # due now (linger 0) or at its linger: the sender must know when
        return batch

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

    def topic_unfinished(self, topic: str) -> bool:
        """Whether a batch of ``topic`` is still to be delivered (queued, in flight or
        waiting to be tried again)."""
        return any(b.tp.topic == topic for b in self._incomplete)

    # --- the sender's side -----------------------------------------------------------------

    def ready(self, leader_of: LeaderOf) -> ReadyCheck:
        now = self._clock()
        check = ReadyCheck()
        sent = self._sent
        for tp, queue in self._batches.items():
            if not queue or (tp in sent and self._muted(sent[tp], queue[0])):
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
        """Take what each of ``nodes`` should be sent now: one batch per partition at most
        (and none from a partition that is muted, see the module docstring).

        Partitions are visited from a rotating start so a request that fills up does not
        always leave out the same ones (Kafka's drainIndex).
        """
        wanted = set(nodes)
        now = self._clock()
        self.queued_behind = False
        out: dict[int, list[ProducerBatch]] = {}
        sizes: dict[int, int] = {}
        tps = list(self._batches)
        if not tps:
            return out
        start = self._drain_start % len(tps)
        self._drain_start += 1
        sent = self._sent
        for tp in itertools.chain(tps[start:], tps[:start]):
            queue = self._batches[tp]
            if not queue or (tp in sent and self._muted(sent[tp], queue[0])):
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
            if queue:
                self.queued_behind = True
            else:
                del self._batches[tp]
            in_flight = sent.get(tp)
            if in_flight is None:
                sent[tp] = [batch]
            else:
                in_flight.append(batch)
            window = self._window.get(tp)
            if window is None:
                self._window[tp] = [batch]
            elif batch not in window:  # a retry is there already
                at = len(window)
                while at and window[at - 1].rank > batch.rank:  # a split batch's half
                    at -= 1
                window.insert(at, batch)
            if self.producer_id >= 0 and batch.producer_id < 0:
                self._sequence(batch)  # a retry keeps its stamp, even under an older id
            batch.attempts += 1
            sizes[leader] = size + len(payload)
            out.setdefault(leader, []).append(batch)
        return out

    def reset_producer(self, producer_id: int, producer_epoch: int) -> None:
        """A new producer id or epoch: sequences start at 0 again for batches not sent
        yet. A batch already sent under the old one keeps it and its sequence on every
        retry: its first send may have been written, and only the old one's state on the
        broker can tell (Kafka never re-sequences a batch whose outcome is unknown)."""
        self.producer_id, self.producer_epoch = producer_id, producer_epoch
        self._sequences.clear()

    def _sequence(self, batch: ProducerBatch) -> None:
        """The next sequence of its partition; a retry keeps the one it was sent with."""
        base = self._sequences.get(batch.tp, 0)
        batch.stamp(self.producer_id, self.producer_epoch, base, transactional=self.transactional)
        self._sequences[batch.tp] = (base + batch.record_count) % _SEQUENCE_WRAP

    def expire(self) -> list[ProducerBatch]:
        """Fail waiting batches past ``delivery_timeout_ms``; in-flight ones are left to
        their request's own timeout."""
        now = self._clock()
        expired: list[ProducerBatch] = []
        emptied = []
        for tp, queue in self._batches.items():
            if tp in self._sent:
                continue
            if queue and queue[0].deadline_ms <= now:
                emptied.append(tp)
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
        self._drop_empty(emptied)
        return expired

    def complete(self, batch: ProducerBatch, base_offset: int, log_append_time_ms: int) -> None:
        batch.resolve(base_offset, log_append_time_ms)  # settled, then out of the window
        self._landed(batch)
        self._release(batch)

    def fail(self, batch: ProducerBatch, error: BaseException) -> None:
        self._landed(batch)
        self._finish(batch, error)

    def retry(self, batch: ProducerBatch, after_ms: float | None = None) -> None:
        """Back into its partition's queue in send order, resent after the backoff (or
        ``after_ms``: its partition's batches wait behind it till then, or
        :meth:`retry_now`)."""
        batch.retry_at_ms = self._clock() + (
            self.retry_backoff_ms if after_ms is None else after_ms
        )
        self._landed(batch)
        self._requeue(batch)
        if self.metrics is not None:
            self.metrics.retried(batch.tp.topic, batch.record_count)

    def retry_now(self, batch: ProducerBatch) -> None:
        """A batch held by :meth:`retry`'s ``after_ms`` goes after the usual backoff
        from now."""
        if not batch.finished:
            batch.retry_at_ms = min(batch.retry_at_ms, self._clock() + self.retry_backoff_ms)

    def forget_sequences(self, batch: ProducerBatch) -> None:
        """The partition refused ``batch``'s sequence: neither it nor any batch sent after it
        under the same producer id and epoch is in that leader's log (it takes a producer's
        sequences only in order). Those waiting to be retried are stamped anew with it, in
        order, under the producer's next epoch; any still in flight will be refused in
        turn. None of them is in doubt any more: a replica holding one would hold
        ``batch`` too."""
        producer = batch.producer_id, batch.producer_epoch
        self._unwritten[batch.tp] = (*producer, batch.rank)
        for other in self._batches.get(batch.tp, ()):
            if other.attempts == 0:
                break
            if (other.producer_id, other.producer_epoch) == producer and other.rank > batch.rank:
                other.in_doubt = False  # its predecessor is nowhere: neither is it
                other.forget_sequence()
        batch.forget_sequence()

    def unwritten(self, batch: ProducerBatch) -> bool:
        """Whether ``batch`` follows, under the same stamp, a batch whose sequence was
        refused for sure (see ``forget_sequences``): then no replica can hold it."""
        known = self._unwritten.get(batch.tp)
        return (
            known is not None
            and batch.producer_id >= 0
            and known[:2] == (batch.producer_id, batch.producer_epoch)
            and batch.rank > known[2]
        )

    def earlier_unsettled(self, batch: ProducerBatch) -> bool:
        """Whether a batch sent before ``batch`` to its partition, under the same producer
        id and epoch, is still in flight or waiting to be retried.

        The leader refuses a batch whose predecessor it has not written
        (OUT_OF_ORDER_SEQUENCE_NUMBER, or UNKNOWN_PRODUCER_ID for a first one): while that
        predecessor is unsettled the refusal is its consequence, and ``batch`` is retried
        after it as it is. Otherwise the sequence really broke (KIP-360).
        """
        if batch.producer_id < 0:
            return False
        for other in itertools.chain(self._sent.get(batch.tp, ()), self._batches.get(batch.tp, ())):
            if other.attempts == 0:
                break  # never sent, and so is everything after it in the queue
            if (
                other.rank < batch.rank
                and other.producer_id == batch.producer_id
                and other.producer_epoch == batch.producer_epoch
                and not other.finished
            ):
                return True
        return False

    def split(self, batch: ProducerBatch) -> None:
        """Re-encode a batch the broker found too large as two halves, back into its queue
        in its place (Kafka splits on MESSAGE_TOO_LARGE the same way)."""
        assert batch.record_count > 1
        self._landed(batch)
        self._release(batch)
        records = batch.records()
        if self.metrics is not None:
            self.metrics.split()
        middle = len(records) // 2
        halves: list[ProducerBatch] = []
        offset = 0
        for part in (records[:middle], records[middle:]):
            half = ProducerBatch(
                batch.tp, self.compression, batch.created_ms, batch.deadline_ms, batch.seq
            )
            half.rank = (*batch.rank, len(halves))
            half.values = [record.value for record in part]
            keys: list[Data | None] = [record.key for record in part]
            half.keys = keys if any(key is not None for key in keys) else None
            headers: list[Sequence[Header] | None] = [record.headers or None for record in part]
            half.headers = headers if any(headers) else None
            half.timestamps = [record.timestamp for record in part]
            half.count = len(part)
            half.size_bound = len(half.close())
            if batch.producer_id >= 0:  # the halves take the refused batch's sequences
                sequence = (batch.base_sequence + offset) % _SEQUENCE_WRAP
                half.stamp(
                    batch.producer_id,
                    batch.producer_epoch,
                    sequence,
                    transactional=self.transactional,  # (review 101: the halves had lost it)
                )
            offset += half.record_count
            half.attempts = batch.attempts
            half.in_doubt = batch.in_doubt  # an earlier attempt of the whole may be written
            halves.append(half)
            self._incomplete[half] = None
            self.buffered_bytes += half.size_bound
        for half in halves:
            self._requeue(half)
        batch.split_into = (halves[0], halves[1])  # its records live on in the halves
        self._trim(batch.tp)
        batch.payload = None
        for waiter in batch.watchers or ():
            half = waiter._where()
            half.watch(waiter)
            mine = None if batch.callbacks is None else batch.callbacks.pop(waiter, None)
            if mine is not None:  # (its callbacks, kept without an asyncio future)
                if half.callbacks is None:
                    half.callbacks = {}
                half.callbacks[waiter] = mine
        batch.watchers = batch.callbacks = None
        batch.done.set_result(None)

    def fail_topic(self, topic: str, error: ApiError) -> int:
        """Fail every waiting batch of ``topic`` (it does not exist); returns how many."""
        return self.fail_partitions(lambda tp: tp.topic == topic, error)

    def fail_partitions(self, which: Callable[[TopicPartition], bool], error: ApiError) -> int:
        """Fail every waiting batch of the partitions ``which`` picks (with none in flight);
        returns how many."""
        failed = 0
        emptied = []
        for tp, queue in self._batches.items():
            if which(tp) and tp not in self._sent:
                emptied.append(tp)
                while queue:
                    self._finish(queue.popleft(), error)
                    failed += 1
        self._drop_empty(emptied)
        return failed

    def fail_queued(self, error: BaseException) -> int:
        """Fail every batch not sent yet (and not in flight), of every partition; returns
        how many (a transaction that failed sends nothing more)."""
        failed = 0
        for queue in self._batches.values():
            while queue:
                self._finish(queue.popleft(), error)
                failed += 1
        self._batches.clear()
        return failed

    def fail_all(self, error: BaseException) -> None:
        for queue in self._batches.values():
            while queue:
                self._finish(queue.popleft(), error)
        self._batches.clear()
        for batch in list(self._incomplete):
            self._finish(batch, error)
        self._sent.clear()
        self._window.clear()

    # --- inside ----------------------------------------------------------------------------

    def _muted(self, in_flight: list[ProducerBatch], first: ProducerBatch) -> bool:
        """Whether a partition with ``in_flight`` batches must wait before sending its
        queue's ``first``: it may follow them only if it was never sent (a retry goes
        alone), they and it are under the current producer id and epoch, and fewer than
        ``max_in_flight`` were sent since the partition's oldest batch not settled."""
        if first.attempts or len(in_flight) >= self.max_in_flight:
            return True
        producer_id, epoch = self.producer_id, self.producer_epoch
        if producer_id < 0 or any(
            b.producer_id != producer_id or b.producer_epoch != epoch for b in in_flight
        ):
            return True
        return len(self._window.get(first.tp, ())) >= self.max_in_flight

    def _drop_empty(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            if not self._batches[tp]:
                del self._batches[tp]

    def _trim(self, tp: TopicPartition) -> None:
        """Drop the settled batches (finished, or split into halves) from the front of the
        partition's window."""
        window = self._window.get(tp)
        if window is None:
            return
        while window and (window[0].finished or window[0].split_into is not None):
            del window[0]
        if not window:
            del self._window[tp]

    def _landed(self, batch: ProducerBatch) -> None:
        """``batch`` is no longer in flight (answered, failed, or its request lost)."""
        in_flight = self._sent.get(batch.tp)
        if in_flight is not None and batch in in_flight:
            in_flight.remove(batch)
            if not in_flight:
                del self._sent[batch.tp]
        self._trim(batch.tp)

    def _requeue(self, batch: ProducerBatch) -> None:
        """Into its partition's queue after the batches sent before it (retries waiting)
        and before every batch sent after it or never sent."""
        queue = self._batches.get(batch.tp)
        if queue is None:
            queue = self._batches[batch.tp] = collections.deque()
        at = 0
        for other in queue:
            if other.attempts == 0 or other.rank > batch.rank:
                break
            at += 1
        queue.insert(at, batch)

    def _wait_ms(self, queue: collections.deque[ProducerBatch], now: float) -> float:
        """How long the partition's first batch must still wait; <= 0 means send it now."""
        batch = queue[0]
        if batch.attempts:  # (held past its deadline: the pass then expires it)
            return min(batch.retry_at_ms, batch.deadline_ms) - now
        if not batch.is_open or len(queue) > 1 or self._flushes or self.exhausted:
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
        if batch.left or batch.lane_start >= 0:
            self._unreserve(batch)
        was_open = batch.is_open
        payload = batch.close()
        if was_open:
            if self.open_batches.get(batch.tp) is batch:
                del self.open_batches[batch.tp]
            self._on_batch_closed(batch.tp.topic, batch.tp.partition)
        return payload

    def _finish(self, batch: ProducerBatch, error: BaseException) -> None:
        if self.on_failure is not None:
            self.on_failure(error)
        if not batch.finished and self.metrics is not None:
            self.metrics.failed(batch.tp.topic, batch.record_count)
        if self.open_batches.get(batch.tp) is batch:
            del self.open_batches[batch.tp]  # its partition's next record opens a new one
        if batch.producer_id >= 0:
            self.sequence_hole = True
        batch.fail(error)
        self._release(batch)
        self._trim(batch.tp)

    def _release(self, batch: ProducerBatch) -> None:
        if batch in self._incomplete:
            del self._incomplete[batch]
            self.buffered_bytes -= batch.size_bound
