"""Partition reassignment on real brokers: a partition's replicas move to other brokers
while it is written to, through a controller's death and with the new replica's broker
stopped (SIGSTOP) meanwhile, and a move is cancelled. What a user checks: every acked
record readable at its offset, in order, once; the partition on the new brokers; the old
copies deleted."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from client import Admin, Consumer, NewPartitions, NewTopic, Producer, TopicPartition
from protocol.errors import InvalidReplicaAssignmentError, ReassignmentInProgressError
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_cli import COMMAND
from tests.integration.test_topics import _ready_cluster

pytestmark = pytest.mark.timeout(180)

FAST_ISR = {"replica.lag.time.max.ms": "2000"}
TP = TopicPartition("moving", 0)


async def _cluster_with_a_spare(make_cluster: Callable[..., Cluster]) -> tuple[Cluster, int]:
    """Brokers 1-3 and topic ``moving`` (one partition on all three, min.insync.replicas
    2), then broker 4, which holds nothing; the controller id (never 4: it came last)."""
    cluster = make_cluster(3, FAST_ISR)
    await _ready_cluster(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("moving", 1, 3, {"min.insync.replicas": "2"})])
        cluster.start_broker(4, FAST_ISR)
        await _ready_cluster(cluster)
        controller = (await admin.describe_cluster()).controller_id
    assert controller in (1, 2, 3)
    return cluster, controller


async def _describe(admin: Admin) -> tuple[int, list[int], list[int]]:
    (topic,) = await admin.describe_topics(["moving"])
    p = topic.partitions[0]
    return p.leader, p.replicas, p.isr


async def _read_all(bootstrap: str, count: int) -> list[tuple[int, bytes]]:
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    got: list[tuple[int, bytes]] = []
    async with consumer:
        consumer.assign([TP])
        while len(got) < count:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend((r.offset, r.value) for r in records)
    return got


def _copy(cluster: Cluster, broker_id: int) -> Path:
    return cluster.brokers[broker_id].directory / "data" / "moving-0"


async def test_a_partition_moves_while_written_to_and_through_a_controller_death(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The move's new replica (broker 4) is stopped (SIGSTOP) as the move begins, so the
    move stays under way: listed, the topic cannot grow meanwhile, and the controller is
    killed (kill -9). The next controller goes on with it; broker 4 comes back, copies the
    log while acks=all records keep coming, and the move finishes: the partition is on
    its target, the killed broker's copy is deleted when it returns, and every acked
    record is read back at its offset, in order, once, from broker 4 leading."""
    cluster, controller = await _cluster_with_a_spare(make_cluster)
    target = [4, *(b for b in (1, 2, 3) if b != controller)]
    acked: list[tuple[int, bytes]] = []
    async with (
        Admin(bootstrap_servers=cluster.bootstrap, request_timeout_ms=3000) as admin,
        Producer(
            bootstrap_servers=cluster.bootstrap, acks="all", request_timeout_ms=5000
        ) as producer,
    ):

        async def send(n: int) -> None:
            for _ in range(n):
                value = b"%d" % len(acked)
                acked.append(((await producer.send_and_wait("moving", value)).offset, value))
                await asyncio.sleep(0.002)

        await send(100)
        cluster.brokers[4].pause()  # registered still: its session lasts 2 s
        outcome = await admin.alter_partition_reassignments({TP: target})
        assert outcome == {TP: None}
        listed = await admin.list_partition_reassignments()
        assert listed[TP].replicas == [*target, controller]
        assert (listed[TP].adding_replicas, listed[TP].removing_replicas) == ([4], [controller])
        with pytest.raises(ReassignmentInProgressError):
            await admin.create_partitions({"moving": NewPartitions(2)})
        await send(100)
        cluster.brokers[controller].kill()
        await _until(admin.describe_cluster, lambda c: c.controller_id not in (-1, controller))
        await send(100)
        cluster.brokers[4].resume()
        sending = asyncio.ensure_future(send(300))  # while broker 4 catches up
        await _until(admin.list_partition_reassignments, lambda moves: not moves, timeout_s=60)
        await sending
        # the controller answers before every broker has its UpdateMetadata (as Kafka's):
        # the broker asked may still show the move's replicas for a moment
        leader, _, _ = await _until(
            lambda: _describe(admin), lambda d: d[1] == target and sorted(d[2]) == sorted(target)
        )
        assert leader in target

        # where the copies are now, as kafka-log-dirs shows them: on the target alone,
        # every copy the same size once the followers have caught up
        async def copies() -> dict[int, int]:
            dirs = await admin.describe_log_dirs(partitions=[TP])
            return {
                b: r.size
                for b, ds in dirs.items()
                for d in ds.values()
                for tp, r in d.replicas.items()
            }

        sizes = await _until(copies, lambda c: len(set(c.values())) == 1 and len(c) == 3)
        assert sorted(sizes) == sorted(target) and next(iter(sizes.values())) > 0
        assert (await admin.elect_leaders([TP]))[TP] is None  # 4, the target's first
        await _until(lambda: _describe(admin), lambda d: d[0] == 4)
    assert [offset for offset, _ in acked] == list(range(len(acked)))
    assert await _read_all(cluster.brokers[4].bootstrap, len(acked)) == acked
    assert _copy(cluster, controller).exists()  # down when the move finished
    cluster.start_broker(controller, FAST_ISR)
    await _until(lambda: _copy(cluster, controller).exists(), lambda there: not there)


async def test_a_cancelled_move_leaves_the_partition_where_it_was(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Broker 4 stopped (SIGSTOP) so the move stays under way, then the move cancelled:
    the replicas go back, and broker 4, back, deletes the copy it had begun."""
    cluster, _ = await _cluster_with_a_spare(make_cluster)
    async with (
        Admin(bootstrap_servers=cluster.bootstrap, request_timeout_ms=3000) as admin,
        Producer(
            bootstrap_servers=cluster.bootstrap, acks="all", request_timeout_ms=5000
        ) as producer,
    ):
        for i in range(50):
            await producer.send("moving", b"%d" % i)
        _, before, _ = await _describe(admin)
        cluster.brokers[4].pause()
        assert await admin.alter_partition_reassignments({TP: [4, *before[1:]]}) == {TP: None}
        assert TP in await admin.list_partition_reassignments([TP])
        assert await admin.alter_partition_reassignments({TP: None}) == {TP: None}
        assert await admin.list_partition_reassignments() == {}
        await _until(  # the broker asked may lag the controller
            lambda: _describe(admin),
            lambda d: sorted(d[1]) == sorted(before) and sorted(d[2]) == sorted(before),
        )
        again = await admin.alter_partition_reassignments({TP: None})
        assert type(again[TP]).__name__ == "NoReassignmentInProgressError"
        cluster.brokers[4].resume()
        for i in range(50, 100):
            await producer.send("moving", b"%d" % i)
    await _until(lambda: _copy(cluster, 4).exists(), lambda there: not there)
    got = await _read_all(cluster.bootstrap, 100)
    assert [v for _, v in got] == [b"%d" % i for i in range(100)]


async def test_replicas_spread_over_racks_when_the_brokers_name_theirs(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Brokers 1 and 2 in zone a, 3 and 4 in zone b (``broker.rack``): every partition of
    an RF=2 topic, made or grown, has a replica in each zone; the racks show in the
    cluster's description. A broker without a rack among them makes placement refuse."""
    cluster = make_cluster(0)
    for broker_id, zone in ((1, "a"), (2, "a"), (3, "b"), (4, "b")):
        cluster.start_broker(broker_id, {"broker.rack": zone})
    await _ready_cluster(cluster)
    zone = {1: "a", 2: "a", 3: "b", 4: "b"}
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        described = await admin.describe_cluster()
        assert {b.node_id: b.rack for b in described.brokers} == zone
        await admin.create_topics([NewTopic("zoned", 8, 2)])
        await admin.create_partitions({"zoned": NewPartitions(12)})
        (topic,) = await admin.describe_topics(["zoned"])
        assert len(topic.partitions) == 12
        for p in topic.partitions:
            assert sorted(zone[b] for b in p.replicas) == ["a", "b"], p
        leaders = [p.replicas[0] for p in topic.partitions]
        assert sorted(leaders.count(b) for b in zone) == [3, 3, 3, 3]
        cluster.start_broker(5)  # no broker.rack
        await _ready_cluster(cluster)
        with pytest.raises(InvalidReplicaAssignmentError, match="broker 5 has none"):
            await admin.create_topics([NewTopic("mixed", 1, 2)])


async def _command(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*COMMAND, "--bootstrap-server", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_throttled_move_copies_at_the_rate_and_verify_removes_the_throttle(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """`reassign-partitions --execute --throttle`: the new replica copies at about the
    rate (a 5 MB log at 100 KB/s is far from copied after 3 s; unthrottled it takes well
    under one), while the leader serves; the rates lifted, the move finishes, and
    `--verify` removes every throttle config. Every record is on the new replica."""
    cluster = make_cluster(2, FAST_ISR)
    await _ready_cluster(cluster)
    bootstrap = cluster.bootstrap
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics([NewTopic("slow", 1, 1)])
        (src,) = (await admin.describe_topics(["slow"]))[0].partitions[0].replicas
    dst = 3 - src
    async with Producer(bootstrap_servers=bootstrap, acks="all", linger_ms=5) as producer:
        for i in range(25_000):
            await producer.send("slow", b"%06d" % i + b"." * 194, partition=0)
        await producer.flush()
    plan = tmp_path / "plan.json"
    plan.write_text(
        f'{{"version":1,"partitions":[{{"topic":"slow","partition":0,"replicas":[{src},{dst}]}}]}}'
    )
    moving = ("reassign-partitions", "--reassignment-json-file", str(plan))
    started = await _command(bootstrap, *moving, "--execute", "--throttle", "100000")
    assert started.returncode == 0, started
    assert "The inter-broker throttle limit was set to 100000 B/s" in started.stdout
    rates = await _command(bootstrap, "broker-configs", "--describe")
    for broker in ("1", "2"):
        for side in ("leader", "follower"):
            row = f"{broker}\t{side}.replication.throttled.rate\t100000\tDYNAMIC_BROKER_CONFIG"
            assert row in rates.stdout, rates
    described = await _command(bootstrap, "topics", "describe", "slow")
    assert f"follower.replication.throttled.replicas=0:{dst}" in described.stdout, described
    assert f"leader.replication.throttled.replicas=0:{src}" in described.stdout, described

    await asyncio.sleep(3)
    sizes = await _command(bootstrap, "log-dirs", "--describe", "--topic-list", "slow")
    found = {
        b["broker"]: sum(p["size"] for d in b["logDirs"] for p in d["partitions"])
        for b in json.loads(sizes.stdout)["brokers"]
    }
    assert found[dst] < found[src] // 2, found  # 10 s of the rate, and a fetch, at most
    still = await _command(bootstrap, *moving, "--verify")
    assert still.returncode == 1 and "still in progress" in still.stdout, still
    assert "Clearing" not in still.stdout  # the throttle stays while the move goes on

    for broker in ("1", "2"):
        lifted = await _command(
            bootstrap,
            "broker-configs",
            "--alter",
            "--broker",
            broker,
            "--delete-config",
            "leader.replication.throttled.rate,follower.replication.throttled.rate",
        )
        assert lifted.returncode == 0, lifted
    done = await _until(
        lambda: _command(bootstrap, *moving, "--verify"), lambda r: r.returncode == 0
    )
    assert "Clearing broker-level throttles on brokers 1,2" in done.stdout, done
    assert "Clearing topic-level throttles on topic slow" in done.stdout, done
    described = await _command(bootstrap, "topics", "describe", "slow")
    assert "throttled" not in described.stdout, described
    cluster.brokers[src].kill()  # only the new copy is left to read from
    tp = TopicPartition("slow", 0)
    async with (
        Consumer(
            bootstrap_servers=cluster.brokers[dst].bootstrap, auto_offset_reset="earliest"
        ) as consumer,
        asyncio.timeout(60),
    ):
        consumer.assign([tp])
        values: list[bytes] = []
        while len(values) < 25_000:
            got = await consumer.getmany(timeout_ms=1000)
            values += [r.value[:6] for r in got.get(tp, [])]
    assert values == [b"%06d" % i for i in range(25_000)]
