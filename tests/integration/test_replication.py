"""Replication on real brokers, over the raw protocol: followers, ISR, high watermark,
acks=all with min.insync.replicas, and leader failover that keeps acknowledged data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from client import Admin, Consumer, NewPartitions, NewTopic, OffsetSpec, Producer, TopicPartition
from protocol.apis import (
    LATEST_TIMESTAMP,
    ApiKey,
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    ElectLeadersRequest,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
    MetadataResponse,
)
from protocol.errors import NotControllerError, NotEnoughReplicasError, OffsetNotAvailableError
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_topics import (
    _create,
    _fetch,
    _metadata,
    _produce,
    _ready_cluster,
    _request,
    _values,
)

pytestmark = pytest.mark.timeout(120)

FAST_ISR = {"replica.lag.time.max.ms": "2000"}


async def _create_replicated(port: int, name: str, partitions: int, min_isr: int = 2) -> None:
    request = CreateTopicsRequest(
        topics=[
            CreatableTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=3,
                configs=[CreatableTopicConfig(name="min.insync.replicas", value=str(min_isr))],
            )
        ]
    )
    result = (await _request(port, ApiKey.CREATE_TOPICS, request)).topics[0]
    assert result.error_code == 0, result


class _Unknown:
    """What a broker that has not heard of the partition yet answers, for the checks."""

    leader_id = -1
    isr_nodes: list[int] = []
    replica_nodes: list[int] = []


async def _partition(port: int, topic: str, index: int = 0) -> Any:
    meta: MetadataResponse = await _metadata(port, [topic])
    partitions = {p.partition_index: p for p in meta.topics[0].partitions}
    return partitions.get(index, _Unknown())


async def _produce_until_ok(port_of: Callable[[], Any], topic: str, values: list[bytes]) -> Any:
    """acks=all, retried while the new leader settles (as a client would)."""

    async def attempt() -> Any:
        return await _produce(await port_of(), topic, 0, values, acks=-1)

    return await _until(attempt, lambda r: r.error_code == 0)


async def test_acks_all_is_replicated_and_survives_leader_kill(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, FAST_ISR)
    ports = await _ready_cluster(cluster)
    await _create_replicated(ports[1], "replicated", 1)
    state = await _until(
        lambda: _partition(ports[1], "replicated"), lambda p: len(p.isr_nodes) == 3
    )
    assert sorted(state.replica_nodes) == [1, 2, 3]
    leader = state.leader_id

    async def leader_port() -> int:
        p = await _partition(next(p for b, p in ports.items() if b != leader), "replicated")
        return cluster.brokers[p.leader_id].port if p.leader_id > 0 else ports[leader]

    acked = []
    for i in range(20):
        r = await _produce_until_ok(leader_port, "replicated", [b"r%d" % i])
        acked.append((r.base_offset, b"r%d" % i))
    # a consumer sees everything acked: the high watermark passed it
    got = await _fetch(ports[leader], "replicated", 0, 0)
    assert got.high_watermark == 20
    assert _values(got.records) == acked

    cluster.brokers[leader].kill()
    survivor = next(p for b, p in ports.items() if b != leader)
    moved = await _until(
        lambda: _partition(survivor, "replicated"),
        lambda p: p.leader_id not in (-1, leader),
    )
    assert leader not in moved.isr_nodes
    new_port = ports[moved.leader_id]
    # KIP-207: the new leader never answers a lower end offset than what was acknowledged;
    # until its high watermark is known it says OFFSET_NOT_AVAILABLE (retriable)
    latest = await _until(
        lambda: _latest_offset(new_port, "replicated"),
        lambda r: r.error_code != OffsetNotAvailableError.code,
    )
    assert (latest.error_code, latest.offset) == (0, 20)
    after = await _until(
        lambda: _fetch(new_port, "replicated", 0, 0),
        lambda f: f.error_code == 0 and f.high_watermark >= 20,
    )
    assert _values(after.records)[:20] == acked  # nothing acknowledged was lost
    more = await _produce_until_ok(lambda: _const(new_port), "replicated", [b"after"])
    assert more.base_offset == 20

    # the old leader returns, truncates to the new leader's log, and rejoins the ISR
    cluster.start_broker(leader)
    back = await _until(
        lambda: _partition(survivor, "replicated"), lambda p: sorted(p.isr_nodes) == [1, 2, 3]
    )
    assert back.leader_id == moved.leader_id


async def _latest_offset(port: int, topic: str) -> Any:
    request = ListOffsetsRequest(
        topics=[
            ListOffsetsTopic(
                name=topic,
                partitions=[ListOffsetsPartition(partition_index=0, timestamp=LATEST_TIMESTAMP)],
            )
        ]
    )
    return (await _request(port, ApiKey.LIST_OFFSETS, request)).topics[0].partitions[0]


async def _const(value: int) -> int:
    return value


def _metrics_port(cluster: Cluster, broker_id: int) -> int:
    """The metrics port the broker's latest start announced in ``broker.ready``."""
    ready = [
        json.loads(line)
        for line in cluster.brokers[broker_id].log_path.read_text().splitlines()
        if '"broker.ready"' in line
    ]
    return int(ready[-1]["metrics_port"])


async def _scrape(port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    assert text.startswith("HTTP/1.0 200 OK")
    body = text.split("\r\n\r\n", 1)[1]
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


def _settles(cluster: Cluster, broker_id: int) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in cluster.brokers[broker_id].log_path.read_text().splitlines()
        if '"broker.heap_settled"' in line
    ]


async def _settled(cluster: Cluster, after: int) -> dict[str, Any]:
    """The last settle once they stop (none for 2.5 s: the quiet time and two of the
    broker's 1 s housekeeping ticks), waiting for more than ``after``."""
    settles = await _until(lambda: _settles(cluster, 1), lambda found: len(found) > after)
    while True:
        await asyncio.sleep(2.5)
        later = _settles(cluster, 1)
        if len(later) == len(settles):
            return settles[-1] | {"count": len(settles)}
        settles = later


async def test_the_broker_freezes_its_partitions_once_they_settle_and_frees_deleted_ones(
    make_cluster: Callable[..., Cluster],
) -> None:
    quick = {"heap.settle.quiet.ms": "300", "heap.settle.spacing.ms": "0"}
    cluster = make_cluster(1, {"metrics.port": "0", **quick})
    ports = await _ready_cluster(cluster)
    started = await _settled(cluster, 0)  # the start-up's
    assert (await _create(ports[1], "settled", 256)).error_code == 0
    assert (await _produce(ports[1], "settled", 255, [b"x"], acks=1)).error_code == 0
    grown = await _settled(cluster, started["count"])
    assert not grown["thawed"]  # partitions came: frozen on top of what was
    assert grown["frozen"] - started["frozen"] >= 256 * 15  # each partition's objects
    metrics = await _scrape(_metrics_port(cluster, 1))
    assert started["frozen"] < metrics["python_gc_frozen_objects"] <= grown["frozen"]
    deleted = await _request(
        ports[1], ApiKey.DELETE_TOPICS, DeleteTopicsRequest(topic_names=["settled"])
    )
    assert deleted.responses[0].error_code == 0
    freed = await _settled(cluster, grown["count"])
    since = _settles(cluster, 1)[grown["count"] :]
    assert any(s["thawed"] for s in since)  # 256 dropped (>= 100): thawed
    assert freed["frozen"] <= grown["frozen"] - 256 * 15
    # a small topic comes and goes: its objects go by reference counting, and no thaw
    # (a stall of the whole heap's walk) is spent on it
    assert (await _create(ports[1], "small", 3)).error_code == 0
    made = await _settled(cluster, freed["count"])
    deleted = await _request(
        ports[1], ApiKey.DELETE_TOPICS, DeleteTopicsRequest(topic_names=["small"])
    )
    assert deleted.responses[0].error_code == 0
    small = await _settled(cluster, made["count"])
    assert not any(s["thawed"] for s in _settles(cluster, 1)[made["count"] :])
    assert small["frozen"] <= made["frozen"] - 3 * 15  # freed all the same


async def test_min_insync_replicas_refuses_acks_all_but_not_acks_1(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, {**FAST_ISR, "metrics.port": "0"})
    ports = await _ready_cluster(cluster)
    await _create_replicated(ports[1], "guarded", 1, min_isr=2)
    state = await _until(lambda: _partition(ports[1], "guarded"), lambda p: len(p.isr_nodes) == 3)
    leader = state.leader_id
    followers = [b for b in state.replica_nodes if b != leader]
    for b in followers:
        cluster.brokers[b].kill()
    alone = await _until(
        lambda: _partition(ports[leader], "guarded"), lambda p: p.isr_nodes == [leader]
    )
    assert alone.leader_id == leader
    refused = await _produce(ports[leader], "guarded", 0, [b"x"], acks=-1)
    assert refused.error_code == NotEnoughReplicasError.code
    assert "min.insync.replicas=2" in refused.error_message
    accepted = await _produce(ports[leader], "guarded", 0, [b"y"], acks=1)
    assert (accepted.error_code, accepted.base_offset) == (0, 0)
    metrics = await _scrape(_metrics_port(cluster, leader))
    assert metrics["headwater_under_replicated_partitions"] == 1
    assert metrics["headwater_under_min_isr_partitions"] == 1
    assert metrics['headwater_partitions{role="leader"}'] == 1
    # start-up's objects are out of the collector's full collections (broker.main)
    assert metrics["python_gc_frozen_objects"] > 10_000
    assert "python_gc_pause_seconds_max" in metrics  # the daemon times its collections
    await _until(  # their sessions expired: restarting is a new registration
        lambda: _metadata(ports[leader]),
        lambda m: not {b.node_id for b in m.brokers} & set(followers),
    )
    for b in followers:
        cluster.start_broker(b)
    await _until(lambda: _partition(ports[leader], "guarded"), lambda p: len(p.isr_nodes) == 3)
    ok = await _produce(ports[leader], "guarded", 0, [b"z"], acks=-1)
    assert (ok.error_code, ok.base_offset) == (0, 1)
    healed = await _scrape(_metrics_port(cluster, leader))
    assert healed["headwater_under_replicated_partitions"] == 0
    assert healed["headwater_isr_expands_total"] >= 1
    assert healed['headwater_high_watermark{partition="0",topic="guarded"}'] == 2


async def test_idle_partitions_stay_in_sync_over_incremental_fetch_sessions(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Followers fetch over sessions (KIP-227): after the first fetch they name only the
    partitions that moved. The leaders must still count those fetches for the idle ones,
    or their followers would leave the ISR after replica.lag.time.max.ms (2 s here)."""
    cluster = make_cluster(3, {**FAST_ISR, "metrics.port": "0"})
    ports = await _ready_cluster(cluster)
    await _create_replicated(ports[1], "many", 24)

    async def isrs() -> list[int]:
        meta: MetadataResponse = await _metadata(ports[1], ["many"])
        return [len(p.isr_nodes) for p in meta.topics[0].partitions]

    await _until(isrs, lambda sizes: sizes == [3] * 24)
    state = await _partition(ports[1], "many", 5)
    leader_port = ports[state.leader_id]
    for i in range(3):
        # retried while the leader has not heard of its role yet (NOT_LEADER: not written)
        written = await _until(
            lambda i=i: _produce(leader_port, "many", 5, [b"m%d" % i], acks=-1),
            lambda r: r.error_code == 0,
        )
        assert written.base_offset == i
    await asyncio.sleep(5)  # 2.5 x replica.lag.time.max.ms, every other partition idle
    assert await isrs() == [3] * 24
    for broker_id in cluster.brokers:
        metrics = await _scrape(_metrics_port(cluster, broker_id))
        assert metrics["headwater_fetch_sessions"] == 2  # one per follower of its leaders
        assert metrics["headwater_isr_shrinks_total"] == 0
    got = await _fetch(ports[state.leader_id], "many", 5, 0)
    assert _values(got.records) == [(i, b"m%d" % i) for i in range(3)]

    # the bundled consumer fetches over a session on each broker, and ends them as it stops
    async def sessions() -> list[float]:
        scraped = [await _scrape(_metrics_port(cluster, b)) for b in cluster.brokers]
        return [m["headwater_fetch_sessions"] for m in scraped]

    bootstrap = ",".join(f"127.0.0.1:{port}" for port in ports.values())
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition("many", p) for p in range(24)])
        records = []
        while len(records) < 3:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records += [r.value for r in batch]
        assert records == [b"m0", b"m1", b"m2"]
        # a session's id comes with the answer to its first fetch, which waits at a broker
        # with nothing to send for fetch_max_wait_ms: one still out cannot be closed
        await _until(
            lambda: [s.session_id for s in consumer._sessions.values()],
            lambda ids: len(ids) == 3 and 0 not in ids,
        )
        assert await sessions() == [3, 3, 3]
    finally:
        await consumer.stop()
    assert await _until(sessions, lambda counts: counts == [2, 2, 2])


async def test_controlled_shutdown_then_preferred_leaders_return(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, {**FAST_ISR, "controlled.shutdown.retry.backoff.ms": "200"})
    ports = await _ready_cluster(cluster)
    await _create_replicated(ports[1], "rolling", 3)
    meta = await _until(
        lambda: _metadata(ports[1], ["rolling"]),
        lambda m: (
            bool(m.topics[0].partitions)
            and all(len(p.isr_nodes) == 3 for p in m.topics[0].partitions)
        ),
    )
    preferred = {p.partition_index: p.replica_nodes[0] for p in meta.topics[0].partitions}
    assert set(preferred.values()) == {1, 2, 3}  # one preferred leader per broker
    victim = preferred[0]
    assert cluster.brokers[victim].stop() == 0
    log = cluster.brokers[victim].log_path.read_text()
    assert "broker.controlled_shutdown_done" in log
    survivor = next(p for b, p in ports.items() if b != victim)
    # moved before it stopped (the log line above), not after a timeout; the survivor's
    # UpdateMetadata may come a moment after the controller's answer to the victim
    await _until(
        lambda: _metadata(survivor, ["rolling"]),
        lambda m: all(
            p.leader_id not in (-1, victim) and victim not in p.isr_nodes
            for p in m.topics[0].partitions
        ),
        timeout_s=5,
    )

    cluster.start_broker(victim)
    await _until(
        lambda: _metadata(survivor, ["rolling"]),
        lambda m: all(len(p.isr_nodes) == 3 for p in m.topics[0].partitions),
    )
    controller = (await _metadata(survivor)).controller_id
    controller_port = cluster.brokers[controller].port
    result = await _request(controller_port, ApiKey.ELECT_LEADERS, ElectLeadersRequest())
    codes = {
        (t.topic, r.partition_id): r.error_code
        for t in result.replica_election_results
        for r in t.partition_result
    }
    # every partition asked (Kafka's null list): those moved are answered, the others led
    # by their preferred replica already are left out (ELECTION_NOT_NEEDED), as Kafka's
    assert {k: c for k, c in codes.items() if k[0] == "rolling"} == {("rolling", 0): 0}
    assert set(codes.values()) == {0}
    back = await _until(
        lambda: _metadata(survivor, ["rolling"]),
        lambda m: {p.partition_index: p.leader_id for p in m.topics[0].partitions} == preferred,
    )
    assert back.topics[0].partitions[0].leader_id == victim
    not_controller = next(b for b in ports if b not in (controller, victim))
    with pytest.raises(NotControllerError, match=f"broker {controller} is"):
        await _request(
            cluster.brokers[not_controller].port, ApiKey.ELECT_LEADERS, ElectLeadersRequest()
        )


async def test_controlled_shutdown_does_not_wait_on_single_replica_partitions(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A partition with one replica has nowhere to move: the broker stops at once instead
    of retrying its controlled shutdown (three times, 5 s apart by default)."""
    cluster = make_cluster(1)
    ports = await _ready_cluster(cluster)
    single = CreateTopicsRequest(
        topics=[CreatableTopic(name="single", num_partitions=2, replication_factor=1)]
    )
    assert (await _request(ports[1], ApiKey.CREATE_TOPICS, single)).topics[0].error_code == 0
    await _until(
        lambda: _metadata(ports[1], ["single"]),
        lambda m: (
            len(m.topics[0].partitions) == 2
            and all(p.leader_id == 1 for p in m.topics[0].partitions)
        ),
    )
    assert cluster.brokers[1].stop() == 0
    log = cluster.brokers[1].log_path.read_text()
    assert "broker.controlled_shutdown_done" in log
    assert "broker.controlled_shutdown_retry" not in log


async def test_the_last_broker_of_a_cluster_stops_without_waiting_for_the_stopped_ones(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Its replicated partitions have no live replica left to lead them: retrying the
    controlled shutdown could not change that (`headwater cluster down` took 15 s)."""
    cluster = make_cluster(3, FAST_ISR)
    ports = await _ready_cluster(cluster)
    await _create_replicated(ports[1], "everywhere", 3)
    await _until(
        lambda: _metadata(ports[1], ["everywhere"]),
        lambda m: (
            bool(m.topics[0].partitions)
            and all(len(p.isr_nodes) == 3 for p in m.topics[0].partitions)
        ),
    )
    for broker in (2, 3):
        assert cluster.brokers[broker].stop() == 0
    assert cluster.brokers[1].stop() == 0
    log = cluster.brokers[1].log_path.read_text()
    assert "broker.controlled_shutdown_done" in log
    assert "broker.controlled_shutdown_retry" not in log


async def test_offline_partitions_are_reported_and_leaders_rebalance_by_themselves(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        3, {**FAST_ISR, "metrics.port": "0", "leader.imbalance.check.interval.seconds": "1"}
    )
    ports = await _ready_cluster(cluster)
    await _create_replicated(ports[1], "rolling", 3)
    single = CreateTopicsRequest(
        topics=[CreatableTopic(name="single", num_partitions=3, replication_factor=1)]
    )
    assert (await _request(ports[1], ApiKey.CREATE_TOPICS, single)).topics[0].error_code == 0
    meta = await _until(
        lambda: _metadata(ports[1], ["rolling"]),
        lambda m: (
            bool(m.topics[0].partitions)
            and all(len(p.isr_nodes) == 3 for p in m.topics[0].partitions)
        ),
    )
    preferred = {p.partition_index: p.replica_nodes[0] for p in meta.topics[0].partitions}
    victim = 2
    cluster.brokers[victim].kill()
    survivor = ports[1]
    after = await _until(
        lambda: _metadata(survivor),
        lambda m: victim not in {b.node_id for b in m.brokers} and m.controller_id > 0,
    )
    offline = await _metadata(survivor, ["single"])
    assert [p.leader_id for p in offline.topics[0].partitions].count(-1) == 1
    controller_metrics = await _until(
        lambda: _scrape(_metrics_port(cluster, after.controller_id)),
        lambda m: m["headwater_offline_partitions"] == 1,
    )
    assert controller_metrics["headwater_active_controller"] == 1

    cluster.start_broker(victim)
    # back in sync, and leadership returns to each first replica with nobody asking
    back = await _until(
        lambda: _metadata(survivor, ["rolling"]),
        lambda m: (
            all(len(p.isr_nodes) == 3 for p in m.topics[0].partitions)
            and {p.partition_index: p.leader_id for p in m.topics[0].partitions} == preferred
        ),
    )
    assert any(p.leader_id == victim for p in back.topics[0].partitions)
    await _until(
        lambda: _scrape(_metrics_port(cluster, after.controller_id)),
        lambda m: m["headwater_offline_partitions"] == 0,
    )


async def test_deleted_records_stay_deleted_after_the_leader_dies(
    make_cluster: Callable[..., Cluster],
) -> None:
    """DeleteRecords is answered once every in-sync replica moved its log start: the
    leader killed (kill -9) right after, the new leader starts at the same offset, and the
    killed one had written its own new start to disk before it answered."""
    cluster = make_cluster(3, FAST_ISR)
    await _ready_cluster(cluster)
    tp = TopicPartition("trimmed", 0)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("trimmed", 1, 3, {"min.insync.replicas": "2"})])
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            for i in range(50):
                await producer.send("trimmed", b"%d" % i)
        assert await admin.delete_records({tp: 30}) == {tp: 30}
        (described,) = await admin.describe_topics(["trimmed"])
        leader = described.partitions[0].leader
        cluster.brokers[leader].kill()

        async def moved() -> int:
            (d,) = await admin.describe_topics(["trimmed"])
            return d.partitions[0].leader

        await _until(moved, lambda b: b not in (-1, leader), timeout_s=30)
        earliest = await admin.list_offsets({tp: OffsetSpec.earliest()})
        assert earliest[tp].offset == 30
        # the killed leader wrote its new start before answering (no checkpoint interval)
        checkpoint = cluster.brokers[leader].directory / "data" / "log-start-offset-checkpoint"
        assert "trimmed 0 30" in checkpoint.read_text().splitlines()
    consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    async with consumer:
        consumer.assign([tp])
        got: list[bytes] = []
        while len(got) < 20:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(r.value for r in records)
    assert got == [b"%d" % i for i in range(30, 50)]


async def test_a_topic_with_an_offline_partition_can_still_grow(
    make_cluster: Callable[..., Cluster],
) -> None:
    """From a review: CreatePartitions waited for every partition of the topic to have a
    leader, so a topic with one offline (its only replica's broker down) timed out though
    the new partitions led at once. As Kafka, only the new ones are waited for."""
    cluster = make_cluster(3, FAST_ISR)
    await _ready_cluster(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("spread", 3, 1)])  # a partition on each broker
        (described,) = await admin.describe_topics(["spread"])
        gone = described.partitions[0].leader
        cluster.brokers[gone].kill()
        await _until(admin.describe_cluster, lambda c: gone not in {b.node_id for b in c.brokers})
        await admin.create_partitions({"spread": NewPartitions(5)}, timeout_ms=10_000)
        # (the broker describe asks may be a moment behind the one that took the growth:
        # a CI run got 3 partitions; the admin now reads its own writes)
        (described,) = await admin.describe_topics(["spread"])
    leaders = {p.partition: p.leader for p in described.partitions}
    assert leaders[0] == -1  # still offline
    assert leaders[3] not in (-1, gone) and leaders[4] not in (-1, gone)
