"""Headwater's side of the comparison: fresh local clusters, and bench.perf's workloads.

:class:`BenchCluster` is a private ZooKeeper and N brokers on free loopback ports in a
temporary directory, started for one section of the matrix and stopped by pid on the way
out (the same :class:`~client.localcluster.ZooKeeperServer` and
:class:`~client.localcluster.BrokerProcess` the integration tests use).

The throughput and latency workloads are :mod:`bench.perf`'s (``headwater bench``), with
the matrix's settings: one partition per topic (as one Redis stream or JetStream
stream), producer batches of 128 KiB (about 1,000 records: the peers' pipeline depth),
5 ms linger, linger 0 for end-to-end. "Broker alone" is ``bench.perf``'s broker test:
one pre-encoded 1 MiB batch replayed with raw Produce requests, so the client encodes
nothing. The idle footprint is measured here.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bench import perf
from bench.compare import kafka_client
from bench.compare.servers import Unavailable, rss_mb
from bench.compare.table import Cell
from bench.compare.workloads import Sizes, record, run_async, run_sections, two_rounds
from client import Admin, NewTopic, Producer
from client.connection import BrokerConnection
from client.localcluster import BrokerProcess, ZooKeeperServer

__all__ = [
    "KAFKA_CLIENT_METRIC",
    "KAFKA_CLIENT_RF3_METRIC",
    "NAME",
    "SEND_BATCH_METRIC",
    "SEND_BATCH_RF3_METRIC",
    "BenchCluster",
    "run",
]

NAME = "Headwater"
SEND_BATCH_METRIC = "produce_rf1_send_batch"
"""Headwater's own metrics (not in METRICS: the peers' produce rows are bulk already):
produce_rf1's and produce_rf3's workloads through ``create_batch()``/``send_batch()``."""
SEND_BATCH_RF3_METRIC = "produce_rf3_send_batch"
KAFKA_CLIENT_METRIC = "produce_rf1_librdkafka"
"""produce_rf1's and produce_rf3's workloads from Kafka's own client (confluent-kafka,
librdkafka) through the brokers' Kafka-protocol listeners."""
KAFKA_CLIENT_RF3_METRIC = "produce_rf3_librdkafka"
_BROKER_SETTINGS = {
    "zookeeper.session.timeout.ms": "6000",
    "listeners": "PLAINTEXT://127.0.0.1:0,KAFKA://127.0.0.1:0",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,KAFKA:PLAINTEXT",
    "kafka.protocol.listeners": "KAFKA",
}
_BATCH_BYTES = 128 * 1024
_PRODUCE_TOPIC = "bench-produce"
_E2E_TOPIC = "bench-e2e"


class BenchCluster:
    """ZooKeeper + ``brokers`` brokers under ``directory``; a context manager that stops
    every process it started (by pid) on the way out, whatever happened."""

    def __init__(self, directory: Path, brokers: int) -> None:
        self.directory = directory
        self.zookeeper = ZooKeeperServer(directory / "zookeeper")
        self.brokers: list[BrokerProcess] = []
        self.count = brokers

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    @property
    def kafka_bootstrap(self) -> str:
        """The brokers' Kafka-protocol listeners, for Kafka's own clients."""
        return ",".join(f"127.0.0.1:{b.ports['KAFKA']}" for b in self.brokers)

    def start(self) -> None:
        self.zookeeper.start()
        for broker_id in range(1, self.count + 1):
            broker = BrokerProcess(
                broker_id,
                self.directory / f"broker-{broker_id}",
                self.zookeeper.connect_string,
                settings=_BROKER_SETTINGS,
            )
            self.brokers.append(broker)
            broker.spawn()
        for broker in self.brokers:
            broker.wait_ready()
        run_async(self._wait_formed())

    async def _wait_formed(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with Admin(bootstrap_servers=self.bootstrap) as admin:
            while time.monotonic() < deadline:
                described = await admin.describe_cluster()
                if described.controller_id >= 0 and len(described.brokers) == self.count:
                    return
                await asyncio.sleep(0.1)
        raise Unavailable(f"{self.count} brokers did not form a cluster in {timeout_s:.0f} s")

    def stop(self) -> None:
        for broker in self.brokers:
            try:
                broker.stop(timeout_s=10.0)
            finally:
                broker.kill()  # a no-op after a clean stop
        self.zookeeper.stop()

    def __enter__(self) -> BenchCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def create_topic(
    bootstrap: str, name: str, partitions: int = 1, replicas: int = 1, timeout_ms: int = 120_000
) -> None:
    async with Admin(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms + 30_000) as admin:
        await admin.create_topics([NewTopic(name, partitions, replicas)], timeout_ms=timeout_ms)


def _checked(result: perf.Result) -> perf.Result:
    if result.failed:
        raise Unavailable(f"{result.failed:,} records failed: {result.first_error}")
    return result


async def produce(
    bootstrap: str, sizes: Sizes, acks: str, replicas: int, *, send_batch: bool = False
) -> float:
    """Records/s of one producer (bench.perf), batches of about 1,000 records: the depth
    of the peers' pipelines. ``send_batch``: filled with the batch API, on a topic of its
    own (the consume row reads what send() wrote)."""
    workload = perf.Workload(
        num_records=sizes.produce_records,
        record_size=sizes.record_bytes,
        acks=acks,
        batch_size=_BATCH_BYTES,
        linger_ms=5,
        replication_factor=replicas,
        topic=None if send_batch else _PRODUCE_TOPIC,
        keep_topic=not send_batch,
        send_batch=send_batch,
    )
    return _checked(await perf.measure("produce", bootstrap, workload)).records_per_s


async def consume(bootstrap: str, sizes: Sizes) -> float:
    """Records/s of one consumer (bench.perf) reading what :func:`produce` wrote."""
    workload = perf.Workload(
        num_records=sizes.produce_records, record_size=sizes.record_bytes, topic=_PRODUCE_TOPIC
    )
    return _checked(await perf.measure("consume", bootstrap, workload)).records_per_s


async def end_to_end(bootstrap: str, sizes: Sizes, acks: str, replicas: int) -> tuple[float, float]:
    """(p50, p99) us of bench.perf's e2e at ``sizes.e2e_rate``, linger 0, after a warm-up
    run on the same topic whose figures are dropped."""
    latencies = []
    for seconds in (sizes.e2e_warmup_seconds, sizes.e2e_seconds):
        workload = perf.Workload(
            num_records=max(1, int(sizes.e2e_rate * seconds)),
            record_size=sizes.record_bytes,
            throughput=sizes.e2e_rate,
            acks=acks,
            linger_ms=0,
            replication_factor=replicas,
            topic=_E2E_TOPIC,
            keep_topic=True,
        )
        latencies.append(_checked(await perf.measure("e2e", bootstrap, workload)).latency)
    measured = latencies[-1]
    if measured is None:
        raise Unavailable("no latency samples")
    return measured.p50_ms * 1e3, measured.p99_ms * 1e3


async def broker_alone(bootstrap: str, sizes: Sizes) -> float:
    """GB/s of bench.perf's broker test: pre-encoded 1 MiB batches, acks=1, the client
    encoding nothing."""
    batches = max(1, sizes.big_total_bytes // sizes.big_batch_bytes)
    workload = perf.Workload(
        num_records=batches * (sizes.big_batch_bytes // (sizes.record_bytes + 10)),
        record_size=sizes.record_bytes,
        acks="1",
        batch_size=sizes.big_batch_bytes,
    )
    return _checked(await perf.measure("broker", bootstrap, workload)).mb_per_s / 1e3


async def idle_footprint(cluster: BenchCluster, sizes: Sizes) -> float:
    """Broker RSS (MB) with ``sizes.partitions`` partitions (one record each) and
    ``sizes.idle_connections`` connections that said ApiVersions and nothing more."""
    topic = "idle"
    await create_topic(cluster.bootstrap, topic, partitions=sizes.partitions)
    async with Producer(bootstrap_servers=cluster.bootstrap, acks=1) as producer:
        for partition in range(sizes.partitions):
            await producer.send(topic, os.urandom(sizes.record_bytes), partition=partition)
        await producer.flush()
    broker = cluster.brokers[0]
    connections = [
        BrokerConnection("127.0.0.1", broker.port) for _ in range(sizes.idle_connections)
    ]
    try:
        for start in range(0, len(connections), 100):
            await asyncio.gather(*(c.connect() for c in connections[start : start + 100]))
        await asyncio.sleep(1.0)  # let the broker settle after the burst
        assert broker.pid is not None
        return rss_mb(broker.pid)
    finally:
        for connection in connections:
            connection.close()


async def _kafka_client(cluster: BenchCluster, sizes: Sizes, acks: str, replicas: int) -> float:
    """Records/s of Kafka's own client producing the produce rows' workload, on a topic of
    its own."""
    topic = f"bench-librdkafka-{replicas}"
    await create_topic(cluster.bootstrap, topic, replicas=replicas)
    return await kafka_client.produce(cluster.kafka_bootstrap, topic, sizes, acks)


def _single(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with BenchCluster(directory, 1) as cluster:
        bootstrap = cluster.bootstrap
        record(results, ("produce_rf1",), sizes, lambda: produce(bootstrap, sizes, "1", 1))
        record(results, ("consume",), sizes, lambda: consume(bootstrap, sizes))
        record(
            results,
            (SEND_BATCH_METRIC,),
            sizes,
            lambda: produce(bootstrap, sizes, "1", 1, send_batch=True),
        )
        record(
            results,
            (KAFKA_CLIENT_METRIC,),
            sizes,
            lambda: _kafka_client(cluster, sizes, "1", 1),
        )
        record(
            results,
            ("e2e_rf1_p50", "e2e_rf1_p99"),
            sizes,
            lambda: end_to_end(bootstrap, sizes, "1", 1),
        )
        record(
            results,
            ("big_gbs", "big_gbs_first"),
            sizes,
            lambda: two_rounds(lambda _: broker_alone(bootstrap, sizes)),
        )


def _replicated(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with BenchCluster(directory, 3) as cluster:
        bootstrap = cluster.bootstrap
        record(results, ("produce_rf3",), sizes, lambda: produce(bootstrap, sizes, "all", 3))
        record(
            results,
            (SEND_BATCH_RF3_METRIC,),
            sizes,
            lambda: produce(bootstrap, sizes, "all", 3, send_batch=True),
        )
        record(
            results,
            (KAFKA_CLIENT_RF3_METRIC,),
            sizes,
            lambda: _kafka_client(cluster, sizes, "all", 3),
        )
        record(
            results,
            ("e2e_rf3_p50", "e2e_rf3_p99"),
            sizes,
            lambda: end_to_end(bootstrap, sizes, "all", 3),
        )


def _memory(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with BenchCluster(directory, 1) as cluster:
        record(results, ("rss_mb",), sizes, lambda: idle_footprint(cluster, sizes))


def run(sizes: Sizes, directory: Path) -> dict[str, Cell]:
    """Every metric of the matrix for Headwater; what fails is n/a, with why."""
    return run_sections(
        sizes, directory, {"single": _single, "replicated": _replicated, "memory": _memory}
    )
