"""The consumer's metrics, with the names and meanings of Kafka's consumer (its
ConsumerMetrics, FetchMetricsManager and ConsumerCoordinator sensors), on
:mod:`client.metrics`.

Recorded per fetch response, per ``getmany()``, per commit, per heartbeat and per
rebalance, never per record: the consumer's fast path hands out records in C, so a sensor
update per record would cost it a quarter of its speed. A ``getone()`` (and ``async for``)
adds 1 to a count per topic and a ``getmany()`` what it returned; those counts reach the
sensors at the next fetch response or ``metrics()``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container, Mapping, Sequence

from client.metrics import Metrics, Sensor, monotonic_ms, tagged
from client.types import TopicPartition

__all__ = ["CONSUMER", "COORDINATOR", "FETCH_MANAGER", "ConsumerMetrics", "GroupMetrics"]

FETCH_MANAGER = "consumer-fetch-manager-metrics"
COORDINATOR = "consumer-coordinator-metrics"
CONSUMER = "consumer-metrics"


def _seconds_ago(now_ms: float, then_ms: float | None) -> float:
    """Whole seconds since ``then_ms``, -1 if never (Kafka's ``last-*-seconds-ago``)."""
    return -1.0 if then_ms is None else float(int((now_ms - then_ms) // 1000))


class _Partition:
    """One assigned partition's lag and lead (its group goes when the partition does)."""

    __slots__ = ("lag", "lag_sensor", "lead", "lead_low", "lead_published", "lead_sensor")

    def __init__(self, metrics: Metrics, tp: TopicPartition) -> None:
        group = tagged(FETCH_MANAGER, tp.topic, tp.partition)
        self.lag = 0.0
        self.lead = 0.0
        self.lag_sensor = metrics.sensor(group, "records-lag")
        metrics.add(group, "records-lag", lambda: self.lag)
        metrics.measure(group, "records-lag", self.lag_sensor, avg=True, max=True)
        self.lead_sensor = metrics.sensor(group, "records-lead")
        # a Sensor has no Min: the least lead is the greatest negated lead
        self.lead_low = metrics.sensor(group, "records-lead-negated")
        self.lead_published = False

    def publish_lead(self, metrics: Metrics, tp: TopicPartition) -> None:
        """The lead's metrics, once a Fetch answer gave the log start offset."""
        if self.lead_published:
            return
        group = tagged(FETCH_MANAGER, tp.topic, tp.partition)
        self.lead_published = True
        metrics.add(group, "records-lead", lambda: self.lead)
        metrics.measure(group, "records-lead", self.lead_sensor, avg=True)
        low = self.lead_low
        metrics.add(group, "records-lead-min", lambda: -low.max())


class GroupMetrics:
    """Kafka's ``consumer-coordinator-metrics``: commits, heartbeats and rebalances (only
    a consumer with a ``group_id`` has them, as only Kafka's has a coordinator then)."""

    def __init__(self, metrics: Metrics, assigned_partitions: Callable[[], int]) -> None:
        self.clock = metrics.clock
        g = COORDINATOR
        self._commit = metrics.sensor(g, "commit-latency")
        metrics.measure(g, "commit-latency", self._commit, avg=True, max=True)
        metrics.measure(g, "commit", self._commit, count_rate=True)
        metrics.add(g, "commit-total", lambda: self._commit.count)
        metrics.add(g, "assigned-partitions", assigned_partitions)
        self._heartbeat = metrics.sensor(g, "heartbeat-response-time")
        metrics.measure(g, "heartbeat-response-time", self._heartbeat, max=True)
        metrics.measure(g, "heartbeat", self._heartbeat, count_rate=True)
        metrics.add(g, "heartbeat-total", lambda: self._heartbeat.count)
        self._last_heartbeat_ms: float | None = None
        metrics.add(
            g,
            "last-heartbeat-seconds-ago",
            lambda: _seconds_ago(self.clock(), self._last_heartbeat_ms),
        )
        self._rebalance = metrics.sensor(g, "rebalance-latency")
        metrics.measure(g, "rebalance-latency", self._rebalance, avg=True, max=True, total=True)
        metrics.add(g, "rebalance-total", lambda: self._rebalance.count)
        metrics.add(g, "rebalance-rate-per-hour", lambda: self._rebalance.count_rate() * 3600)
        self._failed = metrics.sensor(g, "failed-rebalance")
        metrics.add(g, "failed-rebalance-total", lambda: self._failed.count)
        metrics.add(g, "failed-rebalance-rate-per-hour", lambda: self._failed.count_rate() * 3600)
        self._rebalance_start_ms: float | None = None
        self._last_rebalance_ms: float | None = None
        metrics.add(
            g,
            "last-rebalance-seconds-ago",
            lambda: _seconds_ago(self.clock(), self._last_rebalance_ms),
        )

    def committed(self, latency_ms: float) -> None:
        """An OffsetCommit was answered (refusals included, as Kafka counts them)."""
        self._commit.record(latency_ms)

    def heartbeat_sent(self) -> float:
        now = self._last_heartbeat_ms = self.clock()
        return now

    def heartbeat_answered(self, sent_ms: float) -> None:
        self._heartbeat.record(self.clock() - sent_ms)

    def rebalance_started(self) -> None:
        """A JoinGroup goes out; a rebalance spans the attempts until one syncs."""
        if self._rebalance_start_ms is None:
            self._rebalance_start_ms = self.clock()

    def rebalance_done(self) -> None:
        """SyncGroup answered with an assignment (Kafka's end of a rebalance)."""
        now = self._last_rebalance_ms = self.clock()
        start = self._rebalance_start_ms
        self._rebalance_start_ms = None
        self._rebalance.record(now - (now if start is None else start), now)

    def rebalance_failed(self) -> None:
        self._failed.record()


class ConsumerMetrics:
    """Every metric of one consumer: ``snapshot()`` is what ``Consumer.metrics()`` returns."""

    def __init__(
        self,
        *,
        samples: int,
        window_ms: float,
        clock: Callable[[], float] = monotonic_ms,
        assigned_partitions: Callable[[], int] | None = None,
        last_poll_ms: Callable[[], float | None] = lambda: None,
    ) -> None:
        m = self.registry = Metrics(samples=samples, window_ms=window_ms, clock=clock)
        self.clock = clock
        g = FETCH_MANAGER
        self._records = m.sensor(g, "records-consumed")
        m.measure(g, "records-consumed", self._records, rate=True, total=True)
        self._bytes = m.sensor(g, "bytes-consumed")
        m.measure(g, "bytes-consumed", self._bytes, rate=True, total=True)
        self._fetch = m.sensor(g, "fetch-latency")
        m.measure(g, "fetch-latency", self._fetch, avg=True, max=True)
        m.measure(g, "fetch", self._fetch, count_rate=True)
        m.add(g, "fetch-total", lambda: self._fetch.count)
        self._fetch_size = m.sensor(g, "fetch-size")
        m.measure(g, "fetch-size", self._fetch_size, avg=True, max=True)
        self._per_request = m.sensor(g, "records-per-request")
        m.measure(g, "records-per-request", self._per_request, avg=True)
        self._throttle = m.sensor(g, "fetch-throttle-time")
        m.measure(g, "fetch-throttle-time", self._throttle, avg=True, max=True)
        self._lag = m.sensor(g, "records-lag")
        m.measure(g, "records-lag", self._lag, max=True)
        lead_low = self._lead_low = m.sensor(g, "records-lead-negated")
        m.add(g, "records-lead-min", lambda: -lead_low.max())
        self._topics: dict[str, tuple[Sensor, Sensor]] = {}
        self._partitions: dict[TopicPartition, _Partition] = {}
        self.unrecorded: defaultdict[str, int] = defaultdict(int)
        """Records handed out per topic by getone() since the last :meth:`flush` (a
        count, not a sensor update, per record)."""

        c = CONSUMER
        self._between = m.sensor(c, "time-between-poll")
        m.measure(c, "time-between-poll", self._between, avg=True, max=True)
        self._idle = m.sensor(c, "poll-idle-ratio")
        m.measure(c, "poll-idle-ratio", self._idle, avg=True)
        self._poll_start_ms: float | None = None
        self._since_last_poll_ms = 0.0
        m.add(c, "last-poll-seconds-ago", lambda: _seconds_ago(clock(), last_poll_ms()))

        self.group = (
            GroupMetrics(m, assigned_partitions) if assigned_partitions is not None else None
        )

    def snapshot(self, taken_bytes: dict[str, int]) -> dict[str, dict[str, float]]:
        self.flush(taken_bytes)
        return self.registry.snapshot()

    # --- the application's side ----------------------------------------------------------

    def poll_started(self) -> float:
        """A getmany() begins (Kafka's poll()): the time since the last one began."""
        now = self.clock()
        last = self._poll_start_ms
        self._since_last_poll_ms = since = 0.0 if last is None else now - last
        self._poll_start_ms = now
        self._between.record(since, now)
        return now

    def poll_ended(self, started_ms: float) -> None:
        """Kafka's poll-idle-ratio: the poll's time over that plus the time since the
        previous poll began (skipped when both are 0: it says nothing)."""
        now = self.clock()
        polling = now - started_ms
        whole = polling + self._since_last_poll_ms
        if whole > 0:
            self._idle.record(polling / whole, now)

    def consumed(self, got: Mapping[TopicPartition, Sequence[object]]) -> None:
        """What a getmany() returned: one count per partition."""
        unrecorded = self.unrecorded
        for tp, records in got.items():
            unrecorded[tp.topic] += len(records)

    def flush(self, taken_bytes: dict[str, int]) -> None:
        """The records and bytes handed out since the last flush into the sensors, per
        topic and in all. ``taken_bytes``: the fetcher's count of the batches used up."""
        unrecorded = self.unrecorded
        if not unrecorded and not taken_bytes:
            return
        now = self.clock()
        records = size = 0
        for topic in unrecorded.keys() | taken_bytes.keys():
            n, b = unrecorded.get(topic, 0), taken_bytes.get(topic, 0)
            topic_records, topic_bytes = self._topic(topic)
            topic_records.record(n, now)
            topic_bytes.record(b, now)
            records += n
            size += b
        unrecorded.clear()
        taken_bytes.clear()
        self._records.record(records, now)
        self._bytes.record(size, now)

    def _topic(self, topic: str) -> tuple[Sensor, Sensor]:
        found = self._topics.get(topic)
        if found is None:
            m, group = self.registry, tagged(FETCH_MANAGER, topic)
            records = m.sensor(group, "records-consumed")
            m.measure(group, "records-consumed", records, rate=True, total=True)
            size = m.sensor(group, "bytes-consumed")
            m.measure(group, "bytes-consumed", size, rate=True, total=True)
            found = self._topics[topic] = (records, size)
        return found

    # --- the fetcher's side --------------------------------------------------------------

    def fetched(self, latency_ms: float, throttle_ms: float, size: int, records: int) -> None:
        """A Fetch answered: its round trip, throttle, record bytes and records."""
        now = self.clock()
        self._fetch.record(latency_ms, now)
        self._throttle.record(throttle_ms, now)
        self._fetch_size.record(size, now)
        self._per_request.record(records, now)

    def partition_lag(self, tp: TopicPartition, lag: int, lead: int | None) -> None:
        """``tp``'s position moved (records handed out, or batches skipped): its lag (high
        watermark, or last stable offset read_committed, minus the position) and lead
        (position minus log start offset; None if no answer carried the log start)."""
        now = self.clock()
        state = self._partitions.get(tp)
        if state is None:
            state = self._partitions[tp] = _Partition(self.registry, tp)
        state.lag = lag
        state.lag_sensor.record(lag, now)
        self._lag.record(lag, now)
        if lead is not None:
            if not state.lead_published:
                state.publish_lead(self.registry, tp)
            state.lead = lead
            state.lead_sensor.record(lead, now)
            state.lead_low.record(-lead, now)
            self._lead_low.record(-lead, now)

    def keep_partitions(self, assigned: Container[TopicPartition]) -> None:
        """Drop the groups of partitions no longer assigned (Kafka removes them)."""
        for tp in [tp for tp in self._partitions if tp not in assigned]:
            del self._partitions[tp]
            self.registry.remove_group(tagged(FETCH_MANAGER, tp.topic, tp.partition))
