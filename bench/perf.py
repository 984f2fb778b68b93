"""``headwater bench``: the cluster measured the way Kafka's perf tools measure it.

- **produce** (kafka-producer-perf-test): ``num_records`` records of ``record_size``
  bytes through :class:`client.Producer`, flat out or paced to ``throughput``, from
  ``producers`` processes at once (results merged). Latency: from the ``send()`` call to
  its future's completion, per record, for every n-th record (:func:`bench.stats.
  sample_stride`: all of them in runs under 20,000, one in 16 in long runs).
- **consume** (kafka-consumer-perf-test): reads ``num_records`` from the start of the
  topic with :class:`client.Consumer` (all partitions assigned, no group). A topic with
  fewer records is first filled up by the command itself, which the result's notes say.
- **e2e** (Kafka's EndToEndLatency, in one process): a producer at ``throughput`` and a
  consumer in the same event loop; latency from the moment the producer stamped the
  record to the consumer's receipt (``getmany`` returning it). The stamp is a monotonic
  nanosecond clock in the value's first bytes, not the record's millisecond timestamp, so
  sub-millisecond latencies are not rounded.
- **broker**: the broker alone. One record batch (``batch_size`` bytes of records,
  1 MiB by default) is encoded once, then replayed with raw Produce requests over
  :class:`client.connection.BrokerConnection`, ``max_in_flight`` per leader, so the
  figure is the broker's own cost per MB, not the client's encoder. Latency: per request.

Figures: MB = 10^6 bytes (as the rest of bench/). produce, consume and e2e count payload
bytes (key + value, as Kafka's tools); broker counts whole batches as sent. The clock
runs from the first send (after connecting, and after a start barrier when there are
several producer processes) to the last acknowledgement or receipt.

Topics: ``workload.topic``, created with ``partitions`` and ``replication_factor`` if
it does not exist, and kept; by default a fresh ``headwater-bench-<test>-<id>``, deleted
again afterwards unless ``keep_topic``.

For programs (the ``make bench`` matrix)::

    from bench.perf import Workload, produce
    result = produce("127.0.0.1:9092", Workload(num_records=100_000, acks="all"))
    result.records_per_s, result.latency.p99_ms, result.to_json()

:func:`produce`, :func:`consume`, :func:`e2e` and :func:`broker` run their own event
loop; :func:`measure` is the same inside a running one. :mod:`bench.report` renders
results as tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import multiprocessing
import os
import queue
import random
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from bench.stats import Latency, Pacer, sample_stride
from client import (
    Admin,
    Consumer,
    ConsumerRecord,
    NewTopic,
    OffsetSpec,
    Producer,
    TopicPartition,
)
from client.accumulator import RECORD_OVERHEAD_BOUND
from client.connection import BrokerConnection
from client.producer import DEFAULT_MAX_REQUEST_SIZE as MAX_REQUEST_SIZE
from client.security import parse_properties, security_for, settings_from_properties
from protocol.apis import ApiKey, ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic
from protocol.errors import (
    ApiError,
    HeadwaterError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from protocol.records import CODECS, HEADER_SIZE, encode_batch

__all__ = [
    "TESTS",
    "BenchError",
    "Progress",
    "Result",
    "Workload",
    "broker",
    "consume",
    "e2e",
    "measure",
    "produce",
    "run",
]

TESTS = ("produce", "consume", "e2e", "broker")
MB = 1_000_000

DEFAULT_RECORDS = {"produce": 500_000, "consume": 500_000, "e2e": 10_000, "broker": 5_000_000}
DEFAULT_THROUGHPUT = {"produce": -1.0, "consume": -1.0, "e2e": 1_000.0, "broker": -1.0}
DEFAULT_BATCH_BYTES = {"produce": 16_384, "consume": 16_384, "e2e": 16_384, "broker": 1 << 20}
DEFAULT_LINGER_MS = {"produce": 5, "consume": 5, "e2e": 0, "broker": 5}
"""e2e: 0, as Kafka's end-to-end latency tool sets it (a linger is latency added on
purpose); 5 elsewhere, Kafka's default since 4.0."""
BROKER_MAX_MESSAGE_BYTES = 1024 * 1024 + 12
"""The broker's default max.message.bytes (Kafka's): a larger broker batch needs a topic
setting, which a fresh topic gets."""

E2E_HEADER_BYTES = 16
"""An e2e value starts with the run's 8-byte tag and an 8-byte send stamp (ns)."""
VALUE_POOL = 1024
"""Distinct values a producer cycles through; a multiple of YIELD_EVERY (the flat-out send
loop takes its blocks of values as slices of the pool)."""
YIELD_EVERY = 256
"""A send loop that is not sleeping for the pacer yields to the event loop every this many
records, as an application's own awaits would: ``send()`` does not yield while there is
buffer space, and without this the producer's sender task (and the progress line) would
wait for the whole buffer (32 MiB) to fill before shipping anything."""
PROGRESS_INTERVAL_S = 0.25
IDLE_TIMEOUT_S = 30.0
"""consume and e2e give up after this long without a record."""
START_TIMEOUT_S = 60.0
"""How long producer processes wait for each other at the start barrier."""
LEADER_WAIT_S = 15.0

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called about 4 times a second during a run with
the records done so far (phase "produce", "pre-fill", "consume", "e2e" or "broker")."""

T = TypeVar("T")


class BenchError(HeadwaterError):
    """A benchmark that cannot run or did not finish; the message says why."""


# --- what to run -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What a test does. ``None`` fields take the test's default (:meth:`resolve`)."""

    num_records: int | None = None
    """Records to write (produce, e2e, broker) or read (consume). Defaults: produce and
    consume 500,000; e2e 10,000; broker 5,000,000 (rounded up to whole batches)."""
    record_size: int = 100
    """Value bytes per record (no key). Values are half random, half constant, so a
    codec has something to do without being flattered."""
    payload_file: str | None = None
    """produce: values read from this file instead (Kafka's ``--payload-file``: UTF-8
    text, split at ``payload_delimiter``), picked at random: records of the sizes and
    contents an application sends (JSON lines, say)."""
    payload_delimiter: str = "\n"
    """Where ``payload_file`` splits into payloads (``\\n``, as Kafka's tool takes it from
    a shell, is a newline)."""
    throughput: float | None = None
    """Target records/s over all producers; -1 is unlimited. Default: unlimited, but
    1,000 for e2e (its latency means something only below the cluster's limit)."""
    acks: str = "1"
    """"0", "1" or "all" ("all" turns idempotence on, as the Producer does)."""
    batch_size: int | None = None
    """Producer batch.size in bytes (default 16,384); broker: bytes of records per
    replayed batch (default 1 MiB)."""
    linger_ms: int | None = None
    """The producer's linger.ms. Default: 0 for e2e, 5 otherwise (DEFAULT_LINGER_MS)."""
    compression: str = "none"
    partitions: int = 1
    """Partitions of a topic the test creates."""
    replication_factor: int = 1
    """Replication factor of a topic the test creates."""
    producers: int = 1
    """produce and broker: this many processes, each with 1/N of the records and rate."""
    max_in_flight: int = 5
    """Requests in flight per broker connection (producer setting; broker replay)."""
    send_batch: bool = False
    """produce: fill batches with ``create_batch()`` and send them with ``send_batch()``
    (to the partitions in turn) instead of ``send()`` per record."""
    transactional_id: str | None = None
    """produce: send in transactions (Kafka's ``--transactional-id``), each producer
    process under ``<id>-<n>``, committing every ``transaction_duration_ms``."""
    transaction_duration_ms: int = 3000
    """produce: how long each transaction lasts before it commits (Kafka's default)."""
    isolation_level: str = "read_uncommitted"
    """consume and e2e: the consumer's (read_committed: up to the last stable offset,
    aborted transactions dropped)."""
    topic: str | None = None
    keep_topic: bool = False
    """Keep the fresh topic (by default it is deleted afterwards; a named one is kept)."""
    command_config: str | None = None
    """A Kafka client properties file (``--command-config``): TLS for every connection.
    A path, not a context: ``--producers`` children read it again."""
    print_metrics: bool = False
    """Keep each client's metrics at the end of the test (Kafka's ``--print-metrics``):
    ``Result.metrics``. The broker test has no client (its raw connections), so none."""

    def resolve(self, test: str) -> Workload:
        """Every default filled in for ``test``, checked; a BenchError says what is wrong."""
        if test not in TESTS:
            raise BenchError(f"unknown test {test!r}; one of {', '.join(TESTS)}")
        acks = {"-1": "all", "all": "all", "0": "0", "1": "1"}.get(str(self.acks).lower())
        if acks is None:
            raise BenchError(f"acks={self.acks!r} is invalid; use 0, 1 or all")
        resolved = dataclasses.replace(
            self,
            acks=acks,
            num_records=DEFAULT_RECORDS[test] if self.num_records is None else self.num_records,
            throughput=DEFAULT_THROUGHPUT[test] if self.throughput is None else self.throughput,
            batch_size=DEFAULT_BATCH_BYTES[test] if self.batch_size is None else self.batch_size,
            linger_ms=DEFAULT_LINGER_MS[test] if self.linger_ms is None else self.linger_ms,
            producers=self.producers if test in ("produce", "broker") else 1,
        )
        resolved._check(test)
        return resolved

    def _check(self, test: str) -> None:
        minimum_size = E2E_HEADER_BYTES if test == "e2e" else 1
        for name, value, minimum in (
            ("num_records", self.num_records, 1),
            ("record_size", self.record_size, minimum_size),
            ("batch_size", self.batch_size, 1),
            ("linger_ms", self.linger_ms, 0),
            ("partitions", self.partitions, 1),
            ("replication_factor", self.replication_factor, 1),
            ("producers", self.producers, 1),
            ("max_in_flight", self.max_in_flight, 1),
        ):
            if value is None or value < minimum:
                raise BenchError(f"{name}={value!r} is invalid: it must be at least {minimum}")
        assert self.throughput is not None and self.num_records is not None
        if self.throughput == 0 or math.isnan(self.throughput):
            raise BenchError("throughput must be records/s above 0, or -1 for unlimited")
        if self.compression not in CODECS:
            raise BenchError(f"compression={self.compression!r}; one of {', '.join(CODECS)}")
        self._check_produce_only(test)
        if self.transactional_id is not None:
            if test != "produce" or self.send_batch:
                raise BenchError("transactions apply to the produce test's send() only")
            if self.acks != "all":
                raise BenchError("a transactional producer is idempotent: it needs acks=all")
            if self.transaction_duration_ms < 1:
                raise BenchError("transaction_duration_ms must be at least 1")
        if self.isolation_level not in ("read_uncommitted", "read_committed"):
            raise BenchError(
                f"isolation_level={self.isolation_level!r}: read_uncommitted or read_committed"
            )
        if self.producers > self.num_records:
            raise BenchError(f"{self.producers} producers for {self.num_records} records")

    def _check_produce_only(self, test: str) -> None:
        if self.payload_file is not None and test != "produce":
            raise BenchError("payload_file applies to the produce test only")
        if not self.payload_delimiter:
            raise BenchError("payload_delimiter must not be empty")
        if self.send_batch and test != "produce":
            raise BenchError("send_batch applies to the produce test only")

    @property
    def unlimited(self) -> bool:
        return self.throughput is None or self.throughput < 0

    def settings(self) -> dict[str, Any]:
        """The fields as JSON values (throughput -1 when unlimited)."""
        out = dataclasses.asdict(self)
        out["throughput"] = -1 if self.unlimited else self.throughput
        return out


# --- what came out -----------------------------------------------------------------------

LATENCY_OF = {
    "produce": "send() call -> its future done (acks=0: written to the socket)",
    "consume": "",
    "e2e": "producer's stamp in the value -> consumer's getmany() returning the record",
    "broker": "Produce request written -> its response read",
}


@dataclass(frozen=True, kw_only=True)
class Result:
    """One test's figures. ``records``/``bytes`` are what was acknowledged (produce,
    broker) or received (consume, e2e); ``failed`` the records that were not."""

    test: str
    topic: str
    records: int
    bytes: int
    elapsed_s: float
    latency: Latency | None
    latency_sampled_every: int = 1
    batches: int | None = None
    """broker: Produce requests (one batch each) answered."""
    failed: int = 0
    first_error: str | None = None
    notes: tuple[str, ...] = ()
    workload: Workload = field(default_factory=Workload)
    metrics: tuple[ClientMetrics, ...] = ()
    """With ``print_metrics``: each client's ``metrics()`` at the end, producers first."""

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def batches_per_s(self) -> float | None:
        if self.batches is None:
            return None
        return self.batches / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """One flat-ish JSON object; every key is always present (null where a figure
        does not apply), so a machine can read results of any test alike."""
        latency = None
        if self.latency is not None:
            lat = self.latency
            latency = {
                "measures": LATENCY_OF[self.test],
                "samples": lat.samples,
                "sampled_every": self.latency_sampled_every,
                "avg": lat.avg_ms,
                "p50": lat.p50_ms,
                "p95": lat.p95_ms,
                "p99": lat.p99_ms,
                "p99_9": lat.p999_ms,
                "max": lat.max_ms,
            }
        return {
            "test": self.test,
            "topic": self.topic,
            "records": self.records,
            "failed": self.failed,
            "bytes": self.bytes,
            "elapsed_s": self.elapsed_s,
            "records_per_s": self.records_per_s,
            "mb_per_s": self.mb_per_s,
            "batches": self.batches,
            "batches_per_s": self.batches_per_s,
            "latency_ms": latency,
            "first_error": self.first_error,
            "notes": list(self.notes),
            "settings": self.workload.settings(),
            "metrics": [
                {
                    "client": m.client,
                    "client_id": m.client_id,
                    # NaN (an average of nothing, as Kafka's) is not JSON: null
                    "metrics": {
                        group: {n: None if math.isnan(v) else v for n, v in values.items()}
                        for group, values in m.groups.items()
                    },
                }
                for m in self.metrics
            ]
            if self.workload.print_metrics
            else None,
        }


@dataclass(frozen=True, slots=True)
class ClientMetrics:
    """One client's ``metrics()`` at the end of a test."""

    client: str
    """Which client of the test: ``producer``, ``producer 2`` (of --producers),
    ``consumer``."""
    client_id: str
    groups: dict[str, dict[str, float]]

    def lines(self) -> list[tuple[str, str]]:
        """Kafka's --print-metrics rows, ``group:name:{client-id=..., topic=...,
        partition=...}``, and the value: a topic's or partition's group
        (``<group>.<topic>[<partition>]`` in ``metrics()``) becomes Kafka's tags."""
        rows = []
        for group, values in self.groups.items():
            base, _, topic = group.partition(".")  # (no group name has a dot; topics may)
            tags = f"client-id={self.client_id}"
            if topic:
                partition = None
                if topic.endswith("]") and "[" in topic:  # (no topic name has a bracket)
                    topic, _, partition = topic[:-1].rpartition("[")
                tags += f", topic={topic}"
                if partition is not None:
                    tags += f", partition={partition}"
            for name, value in values.items():
                shown = "NaN" if math.isnan(value) else f"{value:.3f}"  # as Java prints it
                rows.append((f"{base}:{name}:{{{tags}}}", shown))
        return rows


@dataclass(slots=True)
class _Part:
    """What one producer (or one replaying process) did; parts merge into a Result."""

    records: int = 0
    failed: int = 0
    bytes: int = 0
    batches: int = 0
    start: float = 0.0
    """Wall clock (time.time(): comparable across processes) at the first send."""
    end: float = 0.0
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    first_error: str | None = None
    metrics: list[ClientMetrics] = field(default_factory=list)


def _merge(
    test: str, topic: str, w: Workload, parts: list[_Part], *, stride: int = 1, notes: list[str]
) -> Result:
    latencies = array("d")
    for part in parts:
        latencies.extend(part.latencies_ms)
    errors = [p.first_error for p in parts if p.first_error]
    return Result(
        test=test,
        topic=topic,
        records=sum(p.records for p in parts),
        bytes=sum(p.bytes for p in parts),
        elapsed_s=max(p.end for p in parts) - min(p.start for p in parts),
        latency=Latency.of(latencies),
        latency_sampled_every=stride,
        batches=sum(p.batches for p in parts) if test == "broker" else None,
        failed=sum(p.failed for p in parts),
        first_error=errors[0] if errors else None,
        notes=tuple(notes),
        workload=w,
        metrics=tuple(m for part in parts for m in part.metrics),
    )


# --- the API -----------------------------------------------------------------------------


async def measure(
    test: str, bootstrap: str, workload: Workload | None = None, progress: Progress | None = None
) -> Result:
    """Run ``test`` (one of :data:`TESTS`) against the cluster at ``bootstrap``."""
    w = (workload or Workload()).resolve(test)
    report = progress or _quiet
    async with _BenchTopic(bootstrap, test, w) as topic:
        if test == "produce":
            return await _produce(bootstrap, topic, w, report)
        if test == "consume":
            return await _consume(bootstrap, topic, w, report)
        if test == "e2e":
            return await _e2e(bootstrap, topic, w, report)
        return await _broker(bootstrap, topic, w, report)


def run(
    test: str, bootstrap: str, workload: Workload | None = None, progress: Progress | None = None
) -> Result:
    """:func:`measure` in an event loop of its own (uvloop); not from inside a running one."""
    return _run(measure(test, bootstrap, workload, progress))


def produce(
    bootstrap: str, workload: Workload | None = None, progress: Progress | None = None
) -> Result:
    """kafka-producer-perf-test: records/s, MB/s, send -> ack latency."""
    return _run(measure("produce", bootstrap, workload, progress))


def consume(
    bootstrap: str, workload: Workload | None = None, progress: Progress | None = None
) -> Result:
    """kafka-consumer-perf-test: records/s and MB/s reading from the start of the topic."""
    return _run(measure("consume", bootstrap, workload, progress))


def e2e(
    bootstrap: str, workload: Workload | None = None, progress: Progress | None = None
) -> Result:
    """EndToEndLatency: producer at the rate, consumer alongside; stamp -> receipt latency."""
    return _run(measure("e2e", bootstrap, workload, progress))


def broker(
    bootstrap: str, workload: Workload | None = None, progress: Progress | None = None
) -> Result:
    """Pre-encoded batches replayed with raw Produce requests: the broker's own rate."""
    return _run(measure("broker", bootstrap, workload, progress))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _quiet(_phase: str, _done: int, _total: int) -> None:
    pass


@contextlib.asynccontextmanager
async def _every(interval_s: float, tick: Callable[[], object]) -> AsyncIterator[None]:
    """Calls ``tick`` every ``interval_s`` while the block runs (when the loop is free)."""

    async def ticker() -> None:
        while True:
            await asyncio.sleep(interval_s)
            tick()

    tick()  # the start: a progress line's clock starts here
    task = asyncio.get_running_loop().create_task(ticker())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- the topic ---------------------------------------------------------------------------


class _BenchTopic:
    """The topic a test uses: named (created if missing, then kept) or fresh; a fresh one
    is deleted at the end unless the workload keeps it."""

    def __init__(self, bootstrap: str, test: str, w: Workload) -> None:
        self.bootstrap = bootstrap
        self.test = test
        self.w = w
        self.name = w.topic or f"headwater-bench-{test}-{uuid.uuid4().hex[:8]}"
        self.created = False
        self.notes: list[str] = []
        self.admin = Admin(bootstrap_servers=bootstrap, client_id="headwater-bench", **_tls(w))

    async def __aenter__(self) -> _BenchTopic:
        await self.admin.start()
        try:
            await self._open()
        except BaseException:
            await self.admin.close()
            raise
        return self

    async def _open(self) -> None:
        if self.w.topic is not None:
            try:
                (described,) = await self.admin.describe_topics([self.name])
            except UnknownTopicOrPartitionError:
                pass
            else:
                self.notes.append(
                    f"topic {self.name} exists: its {len(described.partitions)} partition(s) "
                    f"are used as they are"
                )
                return
        configs = {}
        if self.test == "broker" and (self.w.batch_size or 0) + HEADER_SIZE > (
            BROKER_MAX_MESSAGE_BYTES
        ):
            configs["max.message.bytes"] = str((self.w.batch_size or 0) + HEADER_SIZE + 64)
        topic = NewTopic(self.name, self.w.partitions, self.w.replication_factor, configs)
        try:
            await self.admin.create_topics([topic])
        except TopicAlreadyExistsError:  # created meanwhile by someone else: use it
            return
        self.created = True

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.created and self.w.topic is None and not self.w.keep_topic:
                with contextlib.suppress(HeadwaterError):  # the figures are what matters
                    await self.admin.delete_topics([self.name])
        finally:
            await self.admin.close()

    async def record_count(self) -> int:
        """Records in the topic now (sum over partitions of end - start)."""
        (described,) = await self.admin.describe_topics([self.name])
        tps = [TopicPartition(self.name, p.partition) for p in described.partitions]
        starts = await self.admin.list_offsets(dict.fromkeys(tps, OffsetSpec.earliest()))
        ends = await self.admin.list_offsets(dict.fromkeys(tps, OffsetSpec.latest()))
        return sum(ends[tp].offset - starts[tp].offset for tp in tps)


# --- produce -----------------------------------------------------------------------------


def _values(record_size: int, count: int = VALUE_POOL) -> list[bytes]:
    """Distinct values, half random and half constant (as bench/records uses)."""
    half = record_size // 2
    return [os.urandom(half) + b"x" * (record_size - half) for _ in range(count)]


def payloads(w: Workload) -> list[bytes]:
    """The values a producer cycles through: VALUE_POOL of ``record_size`` bytes, or,
    with ``payload_file``, VALUE_POOL picked at random among the file's payloads (Kafka's
    tool picks one at random per record; a pool keeps the send loop's cost per record the
    same as with ``record_size``)."""
    if w.payload_file is None:
        return _values(w.record_size)
    delimiter = "\n" if w.payload_delimiter == "\\n" else w.payload_delimiter
    try:
        text = Path(w.payload_file).read_bytes().decode()  # (as is: no newline translation)
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read payloads from {w.payload_file}: {exc}") from exc
    found = [p.encode() for p in text.split(delimiter) if p]
    if not found:
        raise BenchError(
            f"{w.payload_file} holds no payload (split at {w.payload_delimiter!r}); give a "
            "file of UTF-8 text, a payload per line"
        )
    largest = max(map(len, found))
    if HEADER_SIZE + RECORD_OVERHEAD_BOUND + largest > MAX_REQUEST_SIZE:
        raise BenchError(
            f"a payload in {w.payload_file} is {largest:,} bytes: more than a producer "
            f"sends in one request ({MAX_REQUEST_SIZE:,} bytes, max_request_size); split "
            "the file at another delimiter, or leave that payload out"
        )
    return random.choices(found, k=VALUE_POOL)


def _bytes_of(values: list[bytes], count: int) -> int:
    """The value bytes of ``count`` records sent cycling through ``values``."""
    whole, rest = divmod(count, len(values))
    return whole * sum(map(len, values)) + sum(map(len, values[:rest]))


def _tls(w: Workload) -> dict[str, Any]:
    """The clients' security settings from ``--command-config`` (none without it)."""
    if w.command_config is None:
        return {}
    return settings_from_properties(
        parse_properties(Path(w.command_config).read_text()), w.command_config
    )


def _producer(bootstrap: str, w: Workload, index: int = 0) -> Producer:
    assert w.linger_ms is not None  # resolved
    return Producer(
        bootstrap_servers=bootstrap,
        # --producers N: a client id each, so their metrics (and the brokers' logs and
        # quotas) tell them apart
        client_id="headwater-bench" if w.producers == 1 else f"headwater-bench-{index + 1}",
        **_tls(w),
        transactional_id=None if w.transactional_id is None else f"{w.transactional_id}-{index}",
        acks="all" if w.acks == "all" else int(w.acks),
        batch_size=w.batch_size or 16_384,
        linger_ms=w.linger_ms,
        compression_type=None if w.compression == "none" else w.compression,
        max_in_flight_requests_per_connection=w.max_in_flight,
    )


def _error_line(error: object) -> str:
    if isinstance(error, ApiError):
        return f"{error.message} ({error.name})"
    return str(error) or type(error).__name__


class _Latencies:
    """Send -> ack latency of sampled records, in ms.

    One bound method serves as every sampled future's done-callback, and the send times
    wait in a dict keyed by the future's id (the future is alive until its callback has
    run, so the id cannot be reused meanwhile). A ``partial`` per sampled record took three
    times as long in a microbenchmark, mostly in the garbage collector's passes over the
    extra objects. Sampling one record in 16 this way cost a flat-out producer 3-7% of its
    rate (measured on the noisy 2-core dev machine).
    """

    def __init__(self, samples: array[float]) -> None:
        self.samples = samples
        self._sent: dict[int, float] = {}
        self.first_error: str | None = None
        """The first failure among the sampled records."""

    def watch(self, future: asyncio.Future[Any], sent: float) -> None:
        self._sent[id(future)] = sent
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[Any]) -> None:
        sent = self._sent.pop(id(future))
        error = "cancelled" if future.cancelled() else future.exception()
        if error is None:
            self.samples.append((time.perf_counter() - sent) * 1000)
        elif self.first_error is None:
            self.first_error = _error_line(error)


class _SendTally:
    """A ``send()`` loop's outcome without a look at every record's future: the records
    that failed are the producer's ``record-error-total`` (Kafka's metric: each record
    whose future failed, sent or not), so once ``flush()`` has returned, the rest of those
    sent were acknowledged. Keeping each future to look at it after cost the flat-out
    producer 13% of its rate (635k -> 716k rec/s, measured), most of it in the garbage
    collector's passes over the futures held; Kafka's tool counts with a callback per
    record, which Java's collector does not feel."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._before = self._counts()

    def _counts(self) -> tuple[float, float, float]:
        found = self._producer.metrics()["producer-metrics"]
        return found["record-send-total"], found["record-retry-total"], found["record-error-total"]

    def written(self) -> int:
        """Records written to the brokers so far (for the progress line; not acknowledged
        yet, some)."""
        (sent, retried, _), before = self._counts(), self._before
        return int(sent - before[0] - (retried - before[1]))

    def failed(self) -> int:
        return int(self._counts()[2] - self._before[2])


async def _produce_part(
    job: _Job,
    report: Callable[[int], None],
    barrier: Callable[[], Awaitable[None]] | None = None,
) -> _Part:
    """One producer sends ``job.count`` records at its share of the rate."""
    bootstrap, topic, w, count = job.bootstrap, job.topic, job.workload, job.count
    assert w.num_records is not None and w.throughput is not None
    values = payloads(w)
    stride = sample_stride(w.num_records)
    part = _Part()
    latencies = _Latencies(part.latencies_ms)
    loop = asyncio.get_running_loop()
    async with _producer(bootstrap, w, job.index) as producer:
        await producer.partitions_for(topic)  # metadata before the clock starts
        tally = _SendTally(producer)
        if barrier is not None:
            await barrier()
        async with _every(PROGRESS_INTERVAL_S, lambda: report(tally.written())):
            pacer = Pacer(w.throughput / w.producers, loop.time())
            part.start = time.time()
            if w.send_batch:
                partitions = len(await producer.partitions_for(topic))
                await _BatchLoop(producer, topic, values, latencies).run(count, pacer, partitions)
            else:
                sending = _SendLoop(producer, topic, values, stride, latencies)
                if w.transactional_id is not None:
                    sending.transactions = _Transactions(producer, w.transaction_duration_ms)
                if pacer.limited:
                    await sending.paced(count, pacer)
                else:
                    await sending.flat_out(count)
                if sending.transactions is not None:
                    await sending.transactions.commit()
            await producer.flush()
            part.end = time.time()
        if w.print_metrics:
            name = "producer" if w.producers == 1 else f"producer {job.index + 1}"
            part.metrics.append(ClientMetrics(name, producer.client_id, producer.metrics()))
        # by record, whatever the futures say: a send_batch() batch split in two halves
        # has its future settled by the first, and the second may fail
        part.failed = tally.failed()
        part.records = count - part.failed
        part.first_error = latencies.first_error
        if part.failed and part.first_error is None:
            part.first_error = f"{part.failed} record(s) failed (the producer's log says why)"
    report(part.records)
    part.bytes = _bytes_of(values, part.records)
    return part


class _Transactions:
    """A transactional producer's transactions in a send loop (Kafka's perf test): one
    begun before the first record, committed once ``duration_ms`` has passed (looked at
    between blocks of records) and at the end."""

    def __init__(self, producer: Producer, duration_ms: int) -> None:
        self._producer = producer
        self._duration_s = duration_ms / 1000
        self._began = -1.0
        self.committed = 0

    async def tick(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._began < 0:
            self._producer.begin_transaction()
            self._began = now
        elif now - self._began >= self._duration_s:
            await self.commit()
            self._producer.begin_transaction()
            self._began = asyncio.get_running_loop().time()

    async def commit(self) -> None:
        if self._began >= 0:
            await self._producer.commit_transaction()
            self.committed += 1
            self._began = -1.0


@dataclasses.dataclass
class _SendLoop:
    """One producer's send loop: every record sent, one in ``stride`` timed (its future
    kept until done); the outcome is counted by :class:`_SendTally`."""

    producer: Producer
    topic: str
    values: list[bytes]
    stride: int
    latencies: _Latencies
    transactions: _Transactions | None = None

    async def paced(self, count: int, pacer: Pacer) -> None:
        loop = asyncio.get_running_loop()
        send, topic, values = self.producer.send, self.topic, self.values
        transactions = self.transactions
        for i in range(count):
            if transactions is not None and i % YIELD_EVERY == 0:
                await transactions.tick()
            if delay := pacer.delay(i, loop.time()):
                await asyncio.sleep(delay)
            elif i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            value = values[i % VALUE_POOL]
            if i % self.stride:
                await send(topic, value)
            else:
                sent = time.perf_counter()
                self.latencies.watch(await send(topic, value), sent)

    async def flat_out(self, count: int) -> None:
        """By blocks of YIELD_EVERY records: per record only the send (the bench's own
        bookkeeping per record cost the producer ~7%; Kafka's tool, in Java, has next to
        none)."""
        send, topic, stride = self.producer.send, self.topic, self.stride
        assert len(self.values) == VALUE_POOL and VALUE_POOL % YIELD_EVERY == 0
        transactions = self.transactions
        for start in range(0, count, YIELD_EVERY):
            await asyncio.sleep(0)  # as an application's own awaits would (YIELD_EVERY)
            if transactions is not None:
                await transactions.tick()
            at = start % VALUE_POOL  # a multiple of YIELD_EVERY: a block never wraps
            block = self.values[at : at + min(YIELD_EVERY, count - start)]
            first = -start % stride  # the first record to time: its index a multiple of stride
            for value in block[:first]:
                await send(topic, value)
            for j in range(first, len(block), stride):
                sent = time.perf_counter()
                self.latencies.watch(await send(topic, block[j]), sent)
                for value in block[j + 1 : j + stride]:
                    await send(topic, value)


class _BatchLoop:
    """One producer's ``send_batch`` loop, to the partitions in turn. Flat out, the batch
    is filled with ``extend`` from blocks of YIELD_EVERY values (a bulk loader's lists);
    paced, record by record with ``append``, and what it holds is sent before each sleep.
    Each batch is timed from its first record to its future's completion."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        values: list[bytes],
        latencies: _Latencies,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.values = values
        self.latencies = latencies
        self._partitions = 1
        self._shipped = 0
        self._batch = producer.create_batch()
        self._started = time.perf_counter()

    async def run(self, count: int, pacer: Pacer, partitions: int) -> None:
        self._partitions = partitions
        if pacer.limited:
            await self._paced(count, pacer)
        else:
            await self._flat_out(count)
        if self._batch.record_count():
            await self._ship()

    async def _flat_out(self, count: int) -> None:
        assert len(self.values) == VALUE_POOL and VALUE_POOL % YIELD_EVERY == 0
        for start in range(0, count, YIELD_EVERY):
            at = start % VALUE_POOL  # a multiple of YIELD_EVERY: a block never wraps
            block = self.values[at : at + min(YIELD_EVERY, count - start)]
            while block:
                taken = self._batch.extend(block)
                if taken < len(block):  # full
                    await self._ship()
                block = block[taken:]

    async def _paced(self, count: int, pacer: Pacer) -> None:
        loop = asyncio.get_running_loop()
        values = self.values
        i = 0
        while i < count:
            if delay := pacer.delay(i, loop.time()):
                if self._batch.record_count():
                    await self._ship()
                await asyncio.sleep(delay)
                self._started = time.perf_counter()
            if self._batch.append(value=values[i % VALUE_POOL]) is None:  # full
                await self._ship()
                continue
            i += 1

    async def _ship(self) -> None:
        batch = self._batch
        partition = self._shipped % self._partitions
        future = await self.producer.send_batch(batch, self.topic, partition=partition)
        self.latencies.watch(future, self._started)
        self._shipped += 1
        self._batch = self.producer.create_batch()
        self._started = time.perf_counter()
        await asyncio.sleep(0)  # as after YIELD_EVERY sends: the sender's turn


async def _produce(bootstrap: str, topic: _BenchTopic, w: Workload, progress: Progress) -> Result:
    assert w.num_records is not None
    parts = await _parts(_Job("produce", bootstrap, topic.name, w, w.num_records), 1, progress)
    if w.send_batch:
        notes = [*topic.notes, "send_batch(): latency is a batch's first append -> its ack"]
        return _merge("produce", topic.name, w, parts, notes=notes)
    stride = sample_stride(w.num_records)
    return _merge("produce", topic.name, w, parts, stride=stride, notes=topic.notes)


def _shares(total: int, n: int) -> list[int]:
    """``total`` split into ``n`` shares that differ by at most one."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


async def _parts(job: _Job, records_per_unit: int, progress: Progress) -> list[_Part]:
    """Run ``job`` (``count`` records for produce, batches for broker) in this process,
    or split over ``producers`` processes."""
    total = job.count * records_per_unit

    def report(done: int) -> None:
        progress(job.test, done, total)

    if job.workload.producers == 1:
        return [await _PARTS[job.test](job, report)]
    jobs = [
        dataclasses.replace(job, count=share, index=index)
        for index, share in enumerate(_shares(job.count, job.workload.producers))
    ]
    return await _in_processes(jobs, report)


# --- several processes -------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What one producer runs (in a child process, when there are several): ``count``
    records (produce) or batches (broker)."""

    test: str
    bootstrap: str
    topic: str
    workload: Workload
    count: int
    index: int = 0


def _child(job: _Job, barrier: Any, counters: Any, results: Any) -> None:
    """A producer process: runs its part, puts ``(index, part, error)`` on ``results``."""

    def report(done: int) -> None:
        counters[job.index] = done

    async def start_together() -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, START_TIMEOUT_S)

    try:
        part = _run(_PARTS[job.test](job, report, start_together))
    except BaseException as exc:  # reported to the parent, which fails the run
        results.put((job.index, None, _error_line(exc)))
    else:
        results.put((job.index, part, None))


async def _in_processes(jobs: list[_Job], report: Callable[[int], None]) -> list[_Part]:
    """Start a process per job (spawned: nothing of this loop is inherited), let them
    start together at a barrier, poll their counters for progress, merge their parts."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    counters = ctx.Array("q", len(jobs), lock=False)
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=_child,
            args=(job, barrier, counters, results),
            name=f"headwater-bench-{job.index}",
            daemon=True,
        )
        for job in jobs
    ]
    for process in processes:
        process.start()
    parts: dict[int, _Part] = {}
    try:
        while len(parts) < len(jobs):
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            report(sum(counters))
            _collect(results, parts)
            for index, process in enumerate(processes):
                if process.exitcode not in (None, 0) and index not in parts:
                    _collect(results, parts)  # it may have reported just before it died
                    if index not in parts:
                        raise BenchError(
                            f"producer process {index + 1} died (exit code {process.exitcode})"
                        )
    except BaseException:
        barrier.abort()  # the others stop waiting for it
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise
    finally:
        for process in processes:
            await asyncio.get_running_loop().run_in_executor(None, process.join, 10)
        results.close()
    return [parts[i] for i in range(len(jobs))]


def _collect(results: Any, parts: dict[int, _Part]) -> None:
    while True:
        try:
            index, part, error = results.get_nowait()
        except queue.Empty:
            return
        if error is not None:
            raise BenchError(f"producer process {index + 1} failed: {error}")
        parts[index] = part


# --- consume -----------------------------------------------------------------------------


async def _consume(bootstrap: str, topic: _BenchTopic, w: Workload, progress: Progress) -> Result:
    assert w.num_records is not None
    total = w.num_records
    notes = list(topic.notes)
    have = await topic.record_count()
    if have < total:
        missing = total - have
        filler = dataclasses.replace(w, throughput=-1.0, producers=1)
        job = _Job("produce", bootstrap, topic.name, filler, missing)
        part = await _produce_part(job, lambda n: progress("pre-fill", n, missing))
        if part.failed:
            raise BenchError(f"pre-filling {topic.name} failed: {part.first_error}")
        notes.append(
            f"pre-filled {topic.name} with {missing:,} records of {w.record_size} bytes "
            f"(it had {have:,})"
        )
    part = _Part()
    consumer = Consumer(
        topic.name,
        bootstrap_servers=bootstrap,
        client_id="headwater-bench",
        auto_offset_reset="earliest",
        isolation_level=w.isolation_level,
        **_tls(w),
    )
    async with consumer:
        assigned = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*assigned)
        for tp in assigned:
            await consumer.position(tp)  # resolved before the clock starts
        async with _every(PROGRESS_INTERVAL_S, lambda: progress("consume", part.records, total)):
            part.start = time.time()
            await _read(consumer, part, total)
            part.end = time.time()
        if w.print_metrics:
            part.metrics.append(ClientMetrics("consumer", consumer.client_id, consumer.metrics()))
    progress("consume", part.records, total)
    return _merge("consume", topic.name, w, [part], notes=notes)


async def _read(consumer: Consumer, part: _Part, total: int) -> None:
    idle_since = time.monotonic()
    per_poll = consumer.max_poll_records or total  # Kafka's tool polls with its default too
    while part.records < total:
        batches = await consumer.getmany(
            timeout_ms=1000, max_records=min(per_poll, total - part.records)
        )
        if not batches:
            if time.monotonic() - idle_since > IDLE_TIMEOUT_S:
                raise BenchError(
                    f"only {part.records:,} of {total:,} records arrived; none in the last "
                    f"{IDLE_TIMEOUT_S:.0f} s"
                )
            continue
        idle_since = time.monotonic()
        for records in batches.values():
            part.records += len(records)
            part.bytes += _record_bytes(records)


_KEY = itemgetter(ConsumerRecord._fields.index("key"))
_VALUE = itemgetter(ConsumerRecord._fields.index("value"))


def _record_bytes(records: list[ConsumerRecord]) -> int:
    """The key and value bytes of ``records`` (as Kafka's consumer perf tool counts),
    summed in C: 71 ns a record here against 154 for a generator over each record's
    fields (the bench's own cost, which Kafka's tool, in Java, hardly has; the consume
    rate moved 1-3%)."""
    values = sum(map(len, filter(None, map(_VALUE, records))))  # filter: None has no len
    return values + sum(map(len, filter(None, map(_KEY, records))))


# --- e2e ---------------------------------------------------------------------------------


async def _e2e(bootstrap: str, topic: _BenchTopic, w: Workload, progress: Progress) -> Result:
    assert w.num_records is not None and w.throughput is not None
    total = w.num_records
    tag = os.urandom(8)  # records of this run; anything else on the topic is skipped
    fillers = [v[E2E_HEADER_BYTES:] for v in _values(w.record_size)]
    part = _Part()
    consumer = Consumer(
        topic.name,
        bootstrap_servers=bootstrap,
        client_id="headwater-bench",
        auto_offset_reset="latest",
        isolation_level=w.isolation_level,
        **_tls(w),
    )
    loop = asyncio.get_running_loop()
    async with consumer, _producer(bootstrap, w) as producer:
        assigned = sorted(consumer.assignment())
        await consumer.seek_to_end(*assigned)
        for tp in assigned:
            await consumer.position(tp)  # fixed before the first record is sent
        await _probe(producer, consumer, topic.name, assigned)
        tally = _SendTally(producer)  # no future kept: see there (and the collector below)
        receiving = loop.create_task(_receive(consumer, tag, part, total))
        async with _every(PROGRESS_INTERVAL_S, lambda: progress("e2e", part.records, total)):
            pacer = Pacer(w.throughput, loop.time())
            part.start = time.time()
            try:
                for i in range(total):
                    if pacer.limited and (delay := pacer.delay(i, loop.time())):
                        await asyncio.sleep(delay)
                    stamp = time.perf_counter_ns().to_bytes(8, "big")
                    await producer.send(topic.name, tag + stamp + fillers[i % VALUE_POOL])
                    if receiving.done():
                        break  # it failed: its error is raised below
                    if i % _FAILURE_CHECK_EVERY == 0 and tally.failed():
                        break  # records are failing: stop sending, say so below
                await producer.flush()
                part.failed = tally.failed()
                if part.failed:  # their records never come: say why rather than time out
                    raise BenchError(
                        f"{part.failed:,} record(s) failed to be written (the producer's "
                        f"log says why)"
                    )
                await _finish_receiving(receiving, part, total)
            finally:
                if not receiving.done():
                    receiving.cancel()  # a send or the flush failed: no reader left behind
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await receiving
        if w.print_metrics:
            part.metrics += [
                ClientMetrics("producer", producer.client_id, producer.metrics()),
                ClientMetrics("consumer", consumer.client_id, consumer.metrics()),
            ]
    progress("e2e", part.records, total)
    notes = [*topic.notes, "one probe record per partition went first, not counted"]
    return _merge("e2e", topic.name, w, [part], notes=notes)


_FAILURE_CHECK_EVERY = 1_000
"""The e2e loop looks at the producer's failures every so many records (a metrics
snapshot, ~50 us: not per record)."""


async def _probe(
    producer: Producer, consumer: Consumer, topic: str, partitions: list[TopicPartition]
) -> None:
    """A record to each partition, sent and read back before the clock starts: on a fresh
    topic the first records wait for the followers' first fetches and the consumer's
    (0.1-0.2 s), which would be the p99 of a short run and not the steady state."""
    probe = b"headwater-bench-probe" + os.urandom(8)
    sent = [await producer.send(topic, probe, partition=tp.partition) for tp in partitions]
    await asyncio.gather(*sent)
    waiting = set(partitions)
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while waiting:
        if time.monotonic() > deadline:
            raise BenchError(
                f"the probe records did not come back within {IDLE_TIMEOUT_S:.0f} s "
                f"(partitions {sorted(tp.partition for tp in waiting)})"
            )
        for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
            if any(r.value == probe for r in records):
                waiting.discard(tp)


async def _finish_receiving(receiving: asyncio.Task[None], part: _Part, total: int) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(receiving), IDLE_TIMEOUT_S)
    except TimeoutError:
        receiving.cancel()
        raise BenchError(
            f"only {part.records:,} of {total:,} records arrived within {IDLE_TIMEOUT_S:.0f} s "
            f"of the last one being acknowledged"
        ) from None


async def _receive(consumer: Consumer, tag: bytes, part: _Part, total: int) -> None:
    samples = part.latencies_ms
    while part.records < total:
        batches = await consumer.getmany(timeout_ms=1000)
        now = time.perf_counter_ns()
        for records in batches.values():
            for record in records:
                value = record.value
                if value[:8] != tag:
                    continue
                samples.append((now - int.from_bytes(value[8:16], "big")) / 1e6)
                part.records += 1
                part.bytes += len(value)
    part.end = time.time()


# --- broker ------------------------------------------------------------------------------


def _batch(w: Workload) -> tuple[bytes, int]:
    """The batch the broker test replays, and its record count: as many ``record_size``
    records as fit in ``batch_size`` bytes uncompressed, then compressed as asked."""
    assert w.batch_size is not None
    now = time.time_ns() // 1_000_000
    values = _values(w.record_size)

    def encoded(n: int, compression: str = "none") -> bytes:
        records = [(None, values[i % VALUE_POOL], None, now) for i in range(n)]
        return encode_batch(records, compression=compression)

    n, data = 100, encoded(100)
    for _ in range(4):  # the size per record grows a little with n (offset varints)
        per_record = (len(data) - HEADER_SIZE) / n
        n = max(1, int((w.batch_size - HEADER_SIZE) / per_record))
        data = encoded(n)
    while len(data) > w.batch_size and n > 1:
        n -= 1
        data = encoded(n)
    while len(bigger := encoded(n + 1)) <= w.batch_size:
        n, data = n + 1, bigger
    return (data if w.compression == "none" else encoded(n, w.compression)), n


async def _leaders(bootstrap: str, topic: str, w: Workload) -> dict[int, tuple[str, int]]:
    """Each partition's leader address, waiting while a partition has none."""
    deadline = time.monotonic() + LEADER_WAIT_S
    admin = Admin(bootstrap_servers=bootstrap, client_id="headwater-bench", **_tls(w))
    async with admin:
        while True:
            (described,) = await admin.describe_topics([topic])
            brokers = {
                b.node_id: (b.host, b.port) for b in (await admin.describe_cluster()).brokers
            }
            leaders = {p.partition: brokers.get(p.leader) for p in described.partitions}
            if all(leaders.values()):
                return {p: address for p, address in leaders.items() if address is not None}
            if time.monotonic() > deadline:
                raise BenchError(f"topic {topic} has partitions without a leader")
            await asyncio.sleep(0.1)


class _Replay:
    """Raw Produce requests of one pre-encoded batch to each partition's leader."""

    def __init__(self, topic: str, w: Workload, batch: bytes, per_batch: int) -> None:
        self.topic = topic
        self.acks = {"all": -1, "0": 0, "1": 1}[w.acks]
        self.batch = batch
        self.per_batch = per_batch
        self.connections: dict[tuple[str, int], BrokerConnection] = {}
        self.targets: dict[tuple[str, int], list[ProduceRequest]] = {}
        self.tls, self.login = security_for(**_tls(w))

    async def connect(self, leaders: dict[int, tuple[str, int]]) -> None:
        for partition, address in sorted(leaders.items()):
            if address not in self.connections:
                connection = BrokerConnection(*address, tls=self.tls, login=self.login)
                await connection.connect()
                self.connections[address] = connection
            self.targets.setdefault(address, []).append(self._request(partition))

    def _request(self, partition: int) -> ProduceRequest:
        records = ProducePartition(index=partition, records=self.batch)
        return ProduceRequest(
            acks=self.acks,
            timeout_ms=30_000,
            topics=[ProduceTopic(name=self.topic, partitions=[records])],
        )

    async def send(self, address: tuple[str, int], request: ProduceRequest) -> ApiError | None:
        """One batch; the partition's error, if it has one."""
        response: ProduceResponse | None = await self.connections[address].request(
            ApiKey.PRODUCE, request, expect_response=self.acks != 0
        )
        if response is None:
            return None
        for topic in response.topics:
            for answer in topic.partitions:
                if answer.error_code:
                    return error_for_code(answer.error_code, answer.error_message)
        return None

    async def warm_up(self) -> None:
        """One batch per partition until each is taken: leaders of a new topic may need a
        moment, and a refused batch (too large) is better said before the clock starts."""
        deadline = time.monotonic() + LEADER_WAIT_S
        for address, requests in self.targets.items():
            for request in requests:
                while (error := await self.send(address, request)) is not None:
                    if not error.retriable or time.monotonic() > deadline:
                        raise BenchError(f"the broker refused the batch: {_error_line(error)}")
                    await asyncio.sleep(0.1)

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


async def _broker_part(
    job: _Job,
    report: Callable[[int], None],
    barrier: Callable[[], Awaitable[None]] | None = None,
) -> _Part:
    """Replay ``job.count`` batches, ``max_in_flight`` requests in flight per leader."""
    bootstrap, topic, w, count = job.bootstrap, job.topic, job.workload, job.count
    assert w.throughput is not None
    batch, per_batch = _batch(w)
    replay = _Replay(topic, w, batch, per_batch)
    part = _Part()
    try:
        await replay.connect(await _leaders(bootstrap, topic, w))
        await replay.warm_up()
        if barrier is not None:
            await barrier()
        loop = asyncio.get_running_loop()
        pacer = Pacer(w.throughput / per_batch / w.producers, loop.time())
        numbers = iter(range(count))  # shared: each worker takes the next batch number

        async def worker(address: tuple[str, int]) -> None:
            requests = replay.targets[address]
            for n in numbers:
                if pacer.limited and (delay := pacer.delay(n, loop.time())):
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                error = await replay.send(address, requests[n % len(requests)])
                if replay.acks != 0:
                    part.latencies_ms.append((time.perf_counter() - sent) * 1000)
                if error is None:
                    part.batches += 1
                else:
                    part.failed += per_batch
                    part.first_error = part.first_error or _error_line(error)

        workers = [worker(a) for a in replay.targets for _ in range(w.max_in_flight)]
        async with _every(PROGRESS_INTERVAL_S, lambda: report(part.batches * per_batch)):
            part.start = time.time()
            await asyncio.gather(*workers)
            part.end = time.time()
    finally:
        replay.close()
    part.records = part.batches * per_batch
    part.bytes = part.batches * len(batch)
    report(part.records)
    return part


async def _broker(bootstrap: str, topic: _BenchTopic, w: Workload, progress: Progress) -> Result:
    assert w.num_records is not None
    batch, per_batch = _batch(w)
    batches = math.ceil(w.num_records / per_batch)
    parts = await _parts(_Job("broker", bootstrap, topic.name, w, batches), per_batch, progress)
    notes = [
        *topic.notes,
        f"{batches:,} batches of {per_batch:,} records, {len(batch):,} bytes each "
        f"({w.compression}); records rounded up to whole batches",
    ]
    if w.acks == "0":
        notes.append("acks=0: the broker answers nothing, so there is no latency")
    return _merge("broker", topic.name, w, parts, notes=notes)


_PARTS: dict[str, Callable[..., Coroutine[Any, Any, _Part]]] = {
    "produce": _produce_part,
    "broker": _broker_part,
}
