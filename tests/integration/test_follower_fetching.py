"""Fetching from the closest replica (KIP-392) on real brokers in three racks: a consumer
that says its rack reads a partition from the follower there, every record once, in
order; the follower's death sends it back to the leader without a gap; a consumer in the
leader's rack, or with no rack, reads from the leader."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broker.config import RACK_AWARE_SELECTOR
from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from tests.integration.conftest import Cluster
from tests.integration.test_replication import _metrics_port, _scrape
from tests.integration.test_topics import _ready_cluster

pytestmark = pytest.mark.timeout(120)

TP = TopicPartition("near", 0)
ZONE = {1: "a", 2: "b", 3: "c"}


async def _sent(cluster: Cluster) -> dict[int, float]:
    """Each live broker's record bytes sent to consumers and followers so far."""
    out = {}
    for broker_id, broker in cluster.brokers.items():
        if broker.process is not None:
            scraped = await _scrape(_metrics_port(cluster, broker_id))
            out[broker_id] = scraped["headwater_bytes_out_total"]
    return out


async def _racked(
    make_cluster: Callable[..., Cluster], settings: dict[str, str]
) -> tuple[Cluster, int]:
    """Three brokers, one per rack of ZONE, with the rack-aware replica selector, and
    topic ``near`` (one partition on all three, min.insync.replicas 2); its leader."""
    cluster = make_cluster(0)
    for broker_id, zone in ZONE.items():
        cluster.start_broker(
            broker_id,
            {
                "broker.rack": zone,
                "replica.selector.class": RACK_AWARE_SELECTOR,
                "metrics.port": "0",
                **settings,
            },
        )
    await _ready_cluster(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("near", 1, 3, {"min.insync.replicas": "2"})])
        leader = (await admin.describe_topics(["near"]))[0].partitions[0].leader
    return cluster, leader


async def _produce(bootstrap: str, start: int, count: int) -> None:
    async with Producer(bootstrap_servers=bootstrap, acks="all", linger_ms=5) as producer:
        for i in range(start, start + count):
            await producer.send("near", b"%06d" % i + b"." * 994, partition=0)
        await producer.flush()


async def _read(consumer: Consumer, values: list[bytes], until: int) -> None:
    async with asyncio.timeout(60):
        while len(values) < until:
            got = await consumer.getmany(timeout_ms=500)
            values += [r.value[:6] for r in got.get(TP, [])]


async def test_a_consumer_reads_from_the_replica_in_its_rack(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster, leader = await _racked(make_cluster, {"replica.lag.time.max.ms": "2000"})
    bootstrap = cluster.bootstrap
    near = next(b for b in ZONE if b != leader)
    await _produce(bootstrap, 0, 3000)  # about 3 MB, on every replica (acks=all)
    before = await _sent(cluster)

    consumer = Consumer(
        bootstrap_servers=bootstrap, client_rack=ZONE[near], auto_offset_reset="earliest"
    )
    values: list[bytes] = []
    async with consumer:
        consumer.assign([TP])
        await _read(consumer, values, 3000)
        after = await _sent(cluster)
        assert after[near] - before[near] > 2_500_000, (before, after)  # it served them
        assert after[leader] - before[leader] < 500_000, (before, after)  # not the leader

        cluster.brokers[near].kill()  # kill -9: back to the leader, from where it was
        await _produce(bootstrap, 3000, 1000)
        await _read(consumer, values, 4000)
    assert values == [b"%06d" % i for i in range(4000)]  # each once, in order

    # in the leader's rack, or saying none: the leader serves
    for rack in (ZONE[leader], ""):
        before = await _sent(cluster)
        alone = Consumer(
            bootstrap_servers=bootstrap, client_rack=rack, auto_offset_reset="earliest"
        )
        got: list[bytes] = []
        async with alone:
            alone.assign([TP])
            await _read(alone, got, 4000)
        after = await _sent(cluster)
        assert after[leader] - before[leader] > 3_500_000, (rack, before, after)
        assert got == values


async def test_read_committed_from_a_follower_sees_committed_transactions_only(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The follower's own copy of the producers' state and aborted transactions decides
    what a read_committed consumer there gets: the committed transactions' records, none
    of the aborted one's, and nothing of the one still open (its last stable offset)."""
    settings = {
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
    }
    cluster, leader = await _racked(make_cluster, settings)
    bootstrap = cluster.bootstrap
    near = next(b for b in ZONE if b != leader)
    async with Producer(bootstrap_servers=bootstrap, transactional_id="t") as producer:
        async with producer.transaction():
            for i in range(100):
                await producer.send("near", b"c%03d" % i, partition=0)
        producer.begin_transaction()
        for i in range(50):
            await producer.send("near", b"a%03d" % i, partition=0)
        await producer.flush()
        await producer.abort_transaction()
        async with producer.transaction():
            for i in range(100, 150):
                await producer.send("near", b"c%03d" % i, partition=0)
        producer.begin_transaction()  # left open: its records are past the stable offset
        await producer.send("near", b"open", partition=0)
        await producer.flush()
        before = await _sent(cluster)
        consumer = Consumer(
            bootstrap_servers=bootstrap,
            client_rack=ZONE[near],
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        got: list[bytes] = []
        async with consumer:
            consumer.assign([TP])
            async with asyncio.timeout(30):
                while len(got) < 150:
                    batch = await consumer.getmany(timeout_ms=500)
                    got += [r.value for r in batch.get(TP, [])]
            assert not (await consumer.getmany(timeout_ms=1000)).get(TP)  # nothing open
        after = await _sent(cluster)
        await producer.abort_transaction()
    assert got == [b"c%03d" % i for i in range(150)]
    # the follower served the records (~2.6 KB in batches), the leader none of them
    assert after[near] - before[near] > 1000 > after[leader] - before[leader], (before, after)


async def test_a_group_gives_each_member_the_partitions_in_its_rack(
    make_cluster: Callable[..., Cluster],
) -> None:
    """KIP-881: three members of a classic group, one per rack, each say their rack in
    their subscription; the leader's range assignor gives each the two partitions (of
    six, one replica each) whose replica is in its rack, and each reads those records.
    Without racks, range's contiguous pairs here always cross a rack (partitions are
    placed round-robin over the racks)."""
    cluster = make_cluster(0)
    for broker_id, zone in ZONE.items():
        cluster.start_broker(broker_id, {"broker.rack": zone})
    await _ready_cluster(cluster)
    bootstrap = cluster.bootstrap
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics([NewTopic("spread", 6, 1)])
        described = (await admin.describe_topics(["spread"]))[0].partitions
    rack_of = {p.partition: ZONE[p.replicas[0]] for p in described}
    async with Producer(bootstrap_servers=bootstrap) as producer:
        for p in range(6):
            await producer.send("spread", b"p%d" % p, partition=p)
        await producer.flush()
    consumers = {
        zone: Consumer(
            "spread",
            bootstrap_servers=bootstrap,
            group_id="racked",
            client_rack=zone,
            auto_offset_reset="earliest",
        )
        for zone in ZONE.values()
    }
    for consumer in consumers.values():
        await consumer.start()
    try:
        async with asyncio.timeout(60):
            while sorted(tp for c in consumers.values() for tp in c.assignment()) != [
                TopicPartition("spread", p) for p in range(6)
            ]:
                await asyncio.gather(*(c.getmany(timeout_ms=200) for c in consumers.values()))
        for zone, consumer in consumers.items():
            mine = sorted(tp.partition for tp in consumer.assignment())
            assert [rack_of[p] for p in mine] == [zone, zone], (zone, mine, rack_of)
            for tp in consumer.assignment():
                consumer.seek(tp, 0)  # (the loop above may have read them already)
            got: list[bytes] = []
            async with asyncio.timeout(30):
                while len(got) < 2:
                    batches = await consumer.getmany(timeout_ms=500)
                    got += [r.value for records in batches.values() for r in records]
            assert sorted(got) == [b"p%d" % p for p in mine]
    finally:
        for consumer in consumers.values():
            await consumer.stop()
