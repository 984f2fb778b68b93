"""Replication under faults, as Kafka's replication system tests: real ZooKeeper, three
real broker processes, RF=3, min.insync.replicas=2, an acks=all producer writing while a
broker is killed, paused or restarted; afterwards every acknowledged record must be at
its acknowledged offset, per partition in send order, and no send may have failed.

Waiting is always for a condition (metadata, ISR, a log line), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from protocol.errors import NotEnoughReplicasError, UnknownTopicOrPartitionError
from tests.faults.workload import check, check_exactly_once, produce, read_back
from tests.integration.conftest import Cluster
from tests.integration.test_replication import _metrics_port, _scrape

pytestmark = pytest.mark.timeout(180)

RECORDS = 20_000
SETTINGS = {
    "replica.lag.time.max.ms": "1500",
    "controlled.shutdown.retry.backoff.ms": "200",
    "leader.imbalance.check.interval.seconds": "3600",  # only when a test asks
}


async def _until(
    probe: Callable[[], Any], check_: Callable[[Any], bool], timeout_s: float = 30
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await probe()
        if check_(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"never reached; last: {value}")
        await asyncio.sleep(0.1)


async def _describe(bootstrap: str, topic: str) -> Any:
    """The topic's description; None while the broker asked has not heard of it yet (it
    hears a moment after CreateTopics answers: CI failed once on that)."""
    async with Admin(bootstrap_servers=bootstrap) as admin:
        try:
            (description,) = await admin.describe_topics([topic])
        except UnknownTopicOrPartitionError:
            return None
        return description


def _full_isr(description: Any) -> bool:
    return (
        description is not None
        and bool(description.partitions)
        and all(
            sorted(p.isr) == sorted(p.replicas) and p.leader >= 0 for p in description.partitions
        )
    )


async def _topic(cluster: Cluster, name: str, partitions: int = 3, rf: int = 3) -> None:
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(name, partitions, rf, {"min.insync.replicas": "2"})])
    await _until(lambda: _describe(cluster.bootstrap, name), _full_isr)


def _leader_of(description: Any, partition: int = 0) -> int:
    return int(next(p.leader for p in description.partitions if p.partition == partition))


async def test_leader_killed_mid_stream(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(3, SETTINGS)
    await _topic(cluster, "events")
    bootstrap = cluster.bootstrap
    victim = _leader_of(await _describe(bootstrap, "events"))

    async def kill_leader() -> None:
        cluster.brokers[victim].kill()

    outcome = await produce(bootstrap, "events", RECORDS, fault=kill_leader, fault_after=5_000)
    assert len(outcome.acked) >= RECORDS
    survivors = cluster.bootstrap
    after = await _describe(survivors, "events")
    assert _leader_of(after) != victim
    # the producer is idempotent (the default): retries of batches the dead leader had
    # written (and replicated) but not answered are recognised by the new leader
    check_exactly_once(outcome, await read_back(survivors, "events"))


async def test_controller_killed_mid_stream_then_a_topic_is_created(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, SETTINGS)
    await _topic(cluster, "events")
    bootstrap = cluster.bootstrap
    async with Admin(bootstrap_servers=bootstrap) as admin:
        controller = (await admin.describe_cluster()).controller_id

    async def kill_controller() -> None:
        cluster.brokers[controller].kill()

    outcome = await produce(bootstrap, "events", RECORDS, fault=kill_controller, fault_after=5_000)
    check(outcome, await read_back(cluster.bootstrap, "events"))
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        new = await _until(
            admin.describe_cluster, lambda c: c.controller_id not in (-1, controller)
        )
        assert new.controller_id != controller
        await admin.create_topics([NewTopic("after", 2, 2, {"min.insync.replicas": "2"})])
    await _until(lambda: _describe(cluster.bootstrap, "after"), _full_isr)
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        meta = await producer.send_and_wait("after", b"created after the failover", key=b"k")
    assert meta.offset == 0


async def test_paused_follower_leaves_the_isr_and_rejoins(
    make_cluster: Callable[..., Cluster],
) -> None:
    # a session longer than the lag limit: the pause is seen as lag, not as death
    cluster = make_cluster(3, {**SETTINGS, "zookeeper.session.timeout.ms": "15000"})
    await _topic(cluster, "events", partitions=1)
    bootstrap = cluster.bootstrap
    description = await _describe(bootstrap, "events")
    leader = _leader_of(description)
    follower = next(r for r in description.partitions[0].replicas if r != leader)
    leader_only = cluster.brokers[leader].bootstrap
    shrunk = asyncio.Event()

    async def pause_then_resume() -> None:
        cluster.brokers[follower].pause()
        try:
            await _until(
                lambda: _describe(leader_only, "events"),
                lambda d: follower not in d.partitions[0].isr,
            )
            shrunk.set()
        finally:
            cluster.brokers[follower].resume()
        await _until(
            lambda: _describe(leader_only, "events"),
            lambda d: follower in d.partitions[0].isr,
        )

    outcome = await produce(
        bootstrap, "events", RECORDS, fault=pause_then_resume, fault_after=3_000
    )
    assert shrunk.is_set()  # it left the ISR while paused, and writes went on
    check(outcome, await read_back(bootstrap, "events"))


async def test_two_of_three_down_refuses_acks_all_until_they_return(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, SETTINGS)
    await _topic(cluster, "events", partitions=1)
    bootstrap = cluster.bootstrap
    first = await produce(bootstrap, "events", 2_000)
    leader = _leader_of(await _describe(bootstrap, "events"))
    down = [b for b in cluster.brokers if b != leader]
    for b in down:
        cluster.brokers[b].kill()
    alone = cluster.brokers[leader].bootstrap
    await _until(lambda: _describe(alone, "events"), lambda d: d.partitions[0].isr == [leader])
    async with Producer(bootstrap_servers=alone, acks="all", retries=0) as producer:
        with pytest.raises(NotEnoughReplicasError):
            await producer.send_and_wait("events", b"refused", key=b"0")
    second = await produce(alone, "events", 2_000, acks=1)
    async with Admin(bootstrap_servers=alone) as admin:  # their sessions expired: a restart
        await _until(  # is a new registration, not a clash with the dead one's
            admin.describe_cluster,
            lambda c: not {b.node_id for b in c.brokers} & set(down),
        )
    for b in down:
        cluster.start_broker(b)
    await _until(lambda: _describe(cluster.bootstrap, "events"), _full_isr)
    third = await produce(cluster.bootstrap, "events", 2_000)
    stored = await read_back(cluster.bootstrap, "events")
    for outcome in (first, second, third):
        check(outcome, stored)


async def test_rolling_restart_under_load_fails_no_send(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, SETTINGS)
    await _topic(cluster, "events")

    async def roll() -> None:
        for broker_id in sorted(cluster.brokers):
            # SIGTERM: controlled shutdown (waited for off the loop: the producer goes on)
            assert await asyncio.to_thread(cluster.brokers[broker_id].stop) == 0
            await asyncio.to_thread(cluster.start_broker, broker_id)
            await _until(lambda: _describe(cluster.bootstrap, "events"), _full_isr)

    outcome = await produce(cluster.bootstrap, "events", RECORDS, fault=roll, fault_after=2_000)
    check(outcome, await read_back(cluster.bootstrap, "events"))  # includes: no send failed


def _segment_bytes(directory: Path, topic: str) -> bytes:
    log_dir = directory / "data" / f"{topic}-0"
    return b"".join(p.read_bytes() for p in sorted(log_dir.glob("*.log")))


async def test_kip101_a_returning_leader_truncates_its_unreplicated_tail(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        3,
        {
            **SETTINGS,
            "replica.lag.time.max.ms": "30000",
            "replica.fetch.wait.max.ms": "200",
            "metrics.port": "0",
            # the paused followers must stay registered (in the ISR) until the leader is
            # killed: with 2-s sessions a slow machine let them expire first (a review),
            # and the partition was left with no leader to elect
            "zookeeper.session.timeout.ms": "6000",
        },
    )
    await _topic(cluster, "events", partitions=1)
    bootstrap = cluster.bootstrap
    replicated = await produce(bootstrap, "events", 1_000)
    description = await _describe(bootstrap, "events")
    leader = _leader_of(description)
    followers = [r for r in description.partitions[0].replicas if r != leader]
    # the followers stop fetching; the leader takes acks=1 writes only it will ever have
    for b in followers:
        cluster.brokers[b].pause()
    await _until_no_follower_fetch(_metrics_port(cluster, leader))
    async with Producer(bootstrap_servers=cluster.brokers[leader].bootstrap, acks=1) as producer:
        for i in range(50):
            await producer.send_and_wait("events", b"tail-%d" % i, key=b"tail")
    cluster.brokers[leader].kill()
    for b in followers:
        cluster.brokers[b].resume()
    survivors = cluster.bootstrap
    await _until(  # the killed leader's session ends first: up to 6 s
        lambda: _describe(survivors, "events"),
        lambda d: d.partitions[0].leader in followers,
        timeout_s=60,
    )
    diverging = await produce(survivors, "events", 500)  # new records at the tail's offsets
    cluster.start_broker(leader)
    await _until(lambda: _describe(cluster.bootstrap, "events"), _full_isr)
    stored = await read_back(cluster.bootstrap, "events")
    check(replicated, stored)
    check(diverging, stored)
    assert all(seq >= 0 for _, seq in stored[0])  # no "tail-" record survived anywhere
    assert "fetcher.truncating" in cluster.brokers[leader].log_path.read_text()
    # the returning leader's log is byte for byte the new leader's
    new_leader = _leader_of(await _describe(cluster.bootstrap, "events"))
    await _until(lambda: _same_logs(cluster, [leader, new_leader]), lambda same: same, timeout_s=20)


async def _until_no_follower_fetch(metrics_port: int) -> None:
    """Until the leader holds no parked fetch and receives none across two scrapes more
    than a fetch's max wait apart: a paused follower's last request has been answered,
    so nothing written now can reach it."""
    previous: tuple[float, float] | None = None
    for _ in range(100):
        metrics = await _scrape(metrics_port)
        now = (metrics["headwater_fetch_purgatory_size"], metrics["headwater_fetch_requests_total"])
        if now[0] == 0 and now == previous:
            return
        previous = now
        await asyncio.sleep(0.3)  # the period observed, longer than replica.fetch.wait.max.ms
    raise AssertionError("followers still fetching while paused")


async def _same_logs(cluster: Cluster, brokers: list[int]) -> bool:
    contents = {_segment_bytes(cluster.brokers[b].directory, "events") for b in brokers}
    return len(contents) == 1


async def test_leader_paused_past_its_session_is_fenced_and_rejoins(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, {**SETTINGS, "zookeeper.session.timeout.ms": "2000"})
    await _topic(cluster, "events", partitions=1)
    bootstrap = cluster.bootstrap
    leader = _leader_of(await _describe(bootstrap, "events"))
    others = ",".join(b.bootstrap for i, b in cluster.brokers.items() if i != leader)

    async def expire_leaders_session() -> None:
        cluster.brokers[leader].pause()  # silent past its session: ZooKeeper expires it
        try:
            await _until(
                lambda: _describe(others, "events"),
                lambda d: d.partitions[0].leader not in (-1, leader),
            )
        finally:
            cluster.brokers[leader].resume()
        # it learns its session is gone, stops leading, re-registers, and catches up (a
        # broker not yet told of the new leader would show the ISR from before the pause)
        await _until(
            lambda: _describe(others, "events"),
            lambda d: _full_isr(d) and d.partitions[0].leader != leader,
        )

    outcome = await produce(
        bootstrap, "events", RECORDS, fault=expire_leaders_session, fault_after=3_000
    )
    log = cluster.brokers[leader].log_path.read_text()
    assert "replica.leaders_fenced" in log  # it stopped acting as leader on its own
    check(outcome, await read_back(cluster.bootstrap, "events"))


async def test_a_write_waiting_in_a_resumed_leaders_socket_is_not_acked_from_before_the_pause(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A leader paused past its session holds, in its socket, a write sent to it meanwhile.
    It resumes before it hears its session is gone: it must not take that write as the
    leader it was (with acks=1 it would ack it, then cut it as the new leader's follower:
    an acknowledged record lost); the write goes to the new leader."""
    cluster = make_cluster(3, {**SETTINGS, "zookeeper.session.timeout.ms": "2000"})
    await _topic(cluster, "events", partitions=1)
    bootstrap = cluster.bootstrap
    leader = _leader_of(await _describe(bootstrap, "events"))
    others = ",".join(b.bootstrap for i, b in cluster.brokers.items() if i != leader)
    async with Producer(
        bootstrap_servers=bootstrap, acks=1, request_timeout_ms=60_000, linger_ms=0
    ) as producer:
        # (connected to the leader: the write below waits in its socket, not in a connect)
        first = await producer.send_and_wait("events", b"1", key=b"k")
        await _until(lambda: _high_watermark(bootstrap), lambda hw: hw > first.offset)
        cluster.brokers[leader].pause()
        try:
            waiting = asyncio.ensure_future(producer.send_and_wait("events", b"2", key=b"k"))
            await _until(
                lambda: _describe(others, "events"),
                lambda d: d is not None and d.partitions[0].leader not in (-1, leader),
            )  # (a session's time after the send: it is in the paused leader's socket)
            assert not waiting.done()
        finally:
            cluster.brokers[leader].resume()
        during = await waiting
        after = await producer.send_and_wait("events", b"3", key=b"k")
    await _until(lambda: _describe(others, "events"), _full_isr)
    stored = await read_back(cluster.bootstrap, "events")
    assert stored[0] == [(first.offset, 1), (during.offset, 2), (after.offset, 3)]
    log = cluster.brokers[leader].log_path.read_text()
    assert "broker.stalled" in log and "the ZooKeeper session was lost" in log


async def test_a_leader_paused_within_its_session_serves_what_waited_once_it_knows(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The way back: paused past the stall threshold (a third of the session) but not
    past the session, the leader holds what waited in its socket for one ZooKeeper round
    trip, finds its session alive, and serves it as the leader it still is."""
    cluster = make_cluster(
        3,
        # 10 s (ZooKeeper's most, 20 of its ticks): kazoo may have last written a third of a
        # session before the pause, and a slow machine resumes late (6 s left 1 s spare)
        {**SETTINGS, "zookeeper.session.timeout.ms": "10000", "replica.lag.time.max.ms": "15000"},
    )
    await _topic(cluster, "events", partitions=1)
    bootstrap = cluster.bootstrap
    leader = _leader_of(await _describe(bootstrap, "events"))
    async with Producer(
        bootstrap_servers=bootstrap, acks=1, request_timeout_ms=30_000, linger_ms=0
    ) as producer:
        first = await producer.send_and_wait("events", b"1", key=b"k")
        cluster.brokers[leader].pause()
        try:
            waiting = asyncio.ensure_future(producer.send_and_wait("events", b"2", key=b"k"))
            await asyncio.sleep(4.5)  # past 3.3 s (the threshold), inside the 10-s session
            assert not waiting.done()
        finally:
            cluster.brokers[leader].resume()
        during = await waiting
    assert during.offset == first.offset + 1
    assert _leader_of(await _describe(bootstrap, "events")) == leader
    stored = await read_back(bootstrap, "events")
    assert stored[0] == [(first.offset, 1), (during.offset, 2)]
    log = cluster.brokers[leader].log_path.read_text()
    assert "broker.stalled" in log and "the ZooKeeper session is alive" in log
    assert "replica.leaders_fenced" not in log


async def _high_watermark(bootstrap: str) -> int:
    """Partition 0's high watermark: a record below it is on every replica of the ISR."""
    async with Consumer(bootstrap_servers=bootstrap) as consumer:
        tp = TopicPartition("events", 0)
        return int((await consumer.end_offsets([tp]))[tp])
