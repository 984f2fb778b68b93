"""The clients' metrics, as Kafka's: windowed rates, averages and maxima, and totals.

Kafka's client metrics (``producer.metrics()`` in Java, ``metrics()`` in kafka-python)
are sensors recorded where the client does its work, read on demand. The same here, with
Kafka's names and semantics: a windowed stat keeps ``samples`` samples of ``window_ms``
each (``metrics.num.samples`` = 2, ``metrics.sample.window.ms`` = 30,000 by default);
an average or maximum is over the samples not yet expired (NaN when there are none, as
Kafka's), a rate divides the samples' sum by their time span, which counts at least
``samples - 1`` whole windows so a rate does not start out huge (Kafka's ``Rate``), and
a total is cumulative.

Everything is recorded per batch, request or poll, never per record: a producer sending
flat out records one sensor update per batch it ships.

The registry reads as kafka-python's ``metrics()``: ``{group: {name: value}}``; a metric
tagged with a topic (or a topic and partition) is in the group ``<group>.<topic>`` (or
``<group>.<topic>[<partition>]``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

NUM_SAMPLES = 2
"""Kafka's ``metrics.num.samples``."""
SAMPLE_WINDOW_MS = 30_000
"""Kafka's ``metrics.sample.window.ms``."""


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


class Sensor:
    """One quantity recorded as it happens: its windowed sum, count and maximum (for the
    ``-avg``, ``-max`` and ``-rate`` metrics) and its cumulative sum and count (``-total``).

    Kafka keeps one sample list per stat; one serves them all here, as they are always
    recorded together. The current sample is in the sensor's own fields, the older ones
    in a short list: a record is a few additions (it runs per batch, fetch and poll).
    """

    __slots__ = (
        "_clock",
        "_count",
        "_max",
        "_older",
        "_samples",
        "_start",
        "_sum",
        "_window_ms",
        "count",
        "total",
    )

    def __init__(
        self,
        *,
        samples: int = NUM_SAMPLES,
        window_ms: float = SAMPLE_WINDOW_MS,
        clock: Callable[[], float] = monotonic_ms,
    ) -> None:
        if samples < 1:
            raise ValueError(f"metrics samples must be at least 1, not {samples}")
        if window_ms <= 0:
            raise ValueError(f"the metrics sample window must be positive, not {window_ms} ms")
        self._samples = samples
        self._window_ms = window_ms
        self._clock = clock
        self._start: float | None = None
        """The current sample's start (then its sum, count and max); made by the first
        record or read, as Kafka's first sample is."""
        self._sum = 0.0
        self._count = 0
        self._max = -math.inf
        self._older: list[tuple[float, float, int, float]] = []
        """The samples before the current one, oldest first (at most ``samples - 1``)."""
        self.total = 0.0
        """Every value recorded, added up (Kafka's CumulativeSum)."""
        self.count = 0
        """How many values were recorded (Kafka's CumulativeCount)."""

    def record(self, value: float = 1.0, now_ms: float | None = None) -> None:
        now = self._clock() if now_ms is None else now_ms
        start = self._start
        if start is None:
            self._start = now
        elif now - start >= self._window_ms:
            self._advance(now)
        self._sum += value
        self._count += 1
        if value > self._max:  # noqa: PLR1730 - max() is a call: slower
            self._max = value
        self.total += value
        self.count += 1

    def _advance(self, now: float) -> None:
        """A new current sample from ``now``; the oldest goes (Kafka's ring of samples)."""
        older = self._older
        assert self._start is not None
        older.append((self._start, self._sum, self._count, self._max))
        if len(older) >= self._samples:
            del older[0]
        self._start, self._sum, self._count, self._max = now, 0.0, 0, -math.inf

    def _live(self, now: float) -> list[tuple[float, float, int, float]]:
        """The samples not yet expired: younger than ``samples`` windows (Kafka's purge)."""
        expire = self._samples * self._window_ms
        if self._start is None or now - self._start >= expire:
            # Kafka's stats make their first sample when first read too, and a read
            # restarts an expired one (purgeObsoleteSamples: reset to now), so a value
            # recorded within a window of the read goes into it
            self._start, self._sum, self._count, self._max = now, 0.0, 0, -math.inf
        self._older = [s for s in self._older if now - s[0] < expire]
        return [*self._older, (self._start, self._sum, self._count, self._max)]

    def avg(self, now_ms: float | None = None) -> float:
        live = self._live(self._clock() if now_ms is None else now_ms)
        count = sum(s[2] for s in live)
        return sum(s[1] for s in live) / count if count else math.nan

    def max(self, now_ms: float | None = None) -> float:
        live = [s for s in self._live(self._clock() if now_ms is None else now_ms) if s[2]]
        return max(s[3] for s in live) if live else math.nan

    def rate(self, now_ms: float | None = None) -> float:
        """The windowed sum per second."""
        now = self._clock() if now_ms is None else now_ms
        return sum(s[1] for s in self._live(now)) / self._span_s(now)

    def count_rate(self, now_ms: float | None = None) -> float:
        """Recordings per second (a ``-rate`` of events, whatever their values)."""
        now = self._clock() if now_ms is None else now_ms
        return sum(s[2] for s in self._live(now)) / self._span_s(now)

    def _span_s(self, now: float) -> float:
        """Kafka's ``Rate.windowSize``: from the oldest live sample's start to now, but at
        least ``samples - 1`` whole windows."""
        live = self._live(now)
        oldest = min(s[0] for s in live) if live else now
        elapsed = now - oldest
        full = int(elapsed // self._window_ms)
        least = self._samples - 1
        if full < least:
            elapsed += (least - full) * self._window_ms
        return max(elapsed, 1.0) / 1000.0


Reading = Callable[[], float]


class Metrics:
    """A client's metrics by group and name, each read on demand."""

    def __init__(
        self,
        *,
        samples: int = NUM_SAMPLES,
        window_ms: float = SAMPLE_WINDOW_MS,
        clock: Callable[[], float] = monotonic_ms,
    ) -> None:
        Sensor(samples=samples, window_ms=window_ms, clock=clock)  # checks the settings
        self.samples = samples
        self.window_ms = window_ms
        self.clock = clock
        self._readings: dict[str, dict[str, Reading]] = {}
        self._sensors: dict[str, dict[str, Sensor]] = {}

    def sensor(self, group: str, name: str) -> Sensor:
        """The sensor registered as ``name`` in ``group``, made on first use (a topic's
        sensors are made when the client first meets the topic)."""
        sensors = self._sensors.setdefault(group, {})
        found = sensors.get(name)
        if found is None:
            found = sensors[name] = Sensor(
                samples=self.samples, window_ms=self.window_ms, clock=self.clock
            )
        return found

    def add(self, group: str, name: str, reading: Reading) -> None:
        """Publish ``reading()`` as metric ``name`` of ``group``."""
        self._readings.setdefault(group, {})[name] = reading

    def measure(
        self,
        group: str,
        prefix: str,
        sensor: Sensor,
        *,
        avg: bool = False,
        max: bool = False,
        rate: bool = False,
        total: bool = False,
        count_rate: bool = False,
    ) -> None:
        """Publish ``sensor`` as Kafka names a sensor's stats: ``<prefix>-avg``, ``-max``,
        ``-rate`` (of its values; ``count_rate``: of its recordings) and ``-total``."""
        if avg:
            self.add(group, f"{prefix}-avg", sensor.avg)
        if max:
            self.add(group, f"{prefix}-max", sensor.max)
        if rate:
            self.add(group, f"{prefix}-rate", sensor.rate)
        if count_rate:
            self.add(group, f"{prefix}-rate", sensor.count_rate)
        if total:
            self.add(group, f"{prefix}-total", lambda: sensor.total)

    def remove_group(self, group: str) -> None:
        """Forget a group's metrics (a partition no longer assigned)."""
        self._readings.pop(group, None)
        self._sensors.pop(group, None)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Every metric's value now: ``{group: {name: value}}``."""
        return {
            group: {name: float(reading()) for name, reading in sorted(readings.items())}
            for group, readings in sorted(self._readings.items())
        }


def tagged(group: str, topic: str, partition: int | None = None) -> str:
    """The group of a metric tagged with a topic (``<group>.<topic>``), or a topic and a
    partition (``<group>.<topic>[<partition>]``: brackets, which no topic name has, so
    partition 1 of ``orders`` and topic ``orders-1`` are two groups)."""
    if partition is None:
        return f"{group}.{topic}"
    return f"{group}.{topic}[{partition}]"


class ProducerMetrics:
    """Kafka's producer metrics (``producer-metrics`` and ``producer-topic-metrics``),
    recorded by the producer's sender and accumulator once per batch or request.

    ``record-send-total`` counts the records of every Produce written, retries included
    (as Kafka's); ``record-error-total`` every record whose future failed, sent or not
    (expired, its topic gone, the producer closed): once a ``flush()`` returns, the
    records sent before it that are not counted there were acknowledged.
    """

    GROUP = "producer-metrics"
    TOPIC_GROUP = "producer-topic-metrics"

    def __init__(self, metrics: Metrics) -> None:
        self.registry = metrics
        group = self.GROUP
        sensor = metrics.sensor
        self.records = sensor(group, "records")
        self.errors = sensor(group, "errors")
        self.retries = sensor(group, "retries")
        self.batch_bytes = sensor(group, "batch-size")
        self.compression = sensor(group, "compression-rate")
        self.queue_time = sensor(group, "record-queue-time")
        self.per_request = sensor(group, "records-per-request")
        self.latency = sensor(group, "request-latency")
        self.throttle = sensor(group, "produce-throttle-time")
        self.splits = sensor(group, "batch-split")
        self.buffer_waits = sensor(group, "bufferpool-wait-time")
        measure = metrics.measure
        measure(group, "record-send", self.records, rate=True, total=True)
        measure(group, "record-error", self.errors, rate=True, total=True)
        measure(group, "record-retry", self.retries, rate=True, total=True)
        measure(group, "batch-size", self.batch_bytes, avg=True, max=True)
        measure(group, "compression-rate", self.compression, avg=True)
        measure(group, "record-queue-time", self.queue_time, avg=True, max=True)
        measure(group, "records-per-request", self.per_request, avg=True)
        measure(group, "request-latency", self.latency, avg=True, max=True)
        measure(group, "produce-throttle-time", self.throttle, avg=True, max=True)
        measure(group, "batch-split", self.splits, count_rate=True, total=True)
        # Kafka 3's name: the time sends spent blocked on buffer.memory, in ns
        metrics.add(group, "bufferpool-wait-time-ns-total", lambda: self.buffer_waits.total)
        self._topics: dict[str, tuple[Sensor, Sensor, Sensor, Sensor, Sensor]] = {}

    def gauges(
        self,
        *,
        buffer_total: Reading,
        buffer_available: Reading,
        in_flight: Reading,
        waiting: Reading,
    ) -> None:
        """The producer's state, read when the metrics are."""
        add = self.registry.add
        add(self.GROUP, "buffer-total-bytes", buffer_total)
        add(self.GROUP, "buffer-available-bytes", buffer_available)
        add(self.GROUP, "requests-in-flight", in_flight)
        add(self.GROUP, "waiting-threads", waiting)  # Kafka's name: sends blocked on space

    def _topic(self, topic: str) -> tuple[Sensor, Sensor, Sensor, Sensor, Sensor]:
        found = self._topics.get(topic)
        if found is None:
            group = tagged(self.TOPIC_GROUP, topic)
            registry = self.registry
            found = self._topics[topic] = (
                registry.sensor(group, "records"),
                registry.sensor(group, "bytes"),
                registry.sensor(group, "compression-rate"),
                registry.sensor(group, "retries"),
                registry.sensor(group, "errors"),
            )
            records, data, compression, retries, errors = found
            registry.measure(group, "record-send", records, rate=True, total=True)
            registry.measure(group, "byte", data, rate=True, total=True)
            registry.measure(group, "compression-rate", compression, avg=True)
            registry.measure(group, "record-retry", retries, rate=True, total=True)
            registry.measure(group, "record-error", errors, rate=True, total=True)
        return found

    def request_sent(
        self, batches: Iterable[tuple[str, int, int, int, float]], now_ms: float
    ) -> None:
        """A Produce written: per batch its topic, records, bytes (as sent), uncompressed
        bytes, and when the batch was made."""
        records = 0
        for topic, count, size, uncompressed, created_ms in batches:
            records += count
            self.records.record(count, now_ms)
            self.batch_bytes.record(size, now_ms)
            self.queue_time.record(now_ms - created_ms, now_ms)
            ratio = size / uncompressed if uncompressed else 1.0
            self.compression.record(ratio, now_ms)
            topic_records, topic_bytes, topic_compression, _, _ = self._topic(topic)
            topic_records.record(count, now_ms)
            topic_bytes.record(size, now_ms)
            topic_compression.record(ratio, now_ms)
        self.per_request.record(records, now_ms)

    def answered(self, latency_ms: float, throttle_ms: int, now_ms: float) -> None:
        self.latency.record(latency_ms, now_ms)
        self.throttle.record(throttle_ms, now_ms)

    def retried(self, topic: str, records: int) -> None:
        self.retries.record(records)
        self._topic(topic)[3].record(records)

    def failed(self, topic: str, records: int) -> None:
        self.errors.record(records)
        self._topic(topic)[4].record(records)

    def split(self) -> None:
        self.splits.record(1)

    def waited_for_buffer(self, ns: int) -> None:
        self.buffer_waits.record(ns)
