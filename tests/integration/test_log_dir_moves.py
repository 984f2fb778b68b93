"""A partition's log moved between a broker's data directories while it is written
(AlterReplicaLogDirs, Kafka's ``kafka-reassign-partitions`` with ``log_dirs``): a real
broker with two ``log.dirs``, a producer writing through the move, and every record
acknowledged read back at its offset afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from client import (
    Admin,
    AlterConfigOp,
    ConfigResource,
    Consumer,
    NewTopic,
    Producer,
    TopicPartition,
    TopicPartitionReplica,
)
from protocol.errors import LogDirNotFoundError
from tests.integration.conftest import Cluster, until
from tests.integration.test_reassignment import _command
from tests.integration.test_topics import _ready_cluster

pytestmark = pytest.mark.timeout(120)

TP = TopicPartition("moved", 0)
REPLICA = TopicPartitionReplica("moved", 0, 1)


async def where_is(admin: Admin, broker: int = 1) -> tuple[str | None, str | None]:
    """(the dir holding the partition's log, the dir holding a copy of it being made)."""
    found = (await admin.describe_log_dirs([broker], [TP]))[broker]
    log = next(
        (d for d, desc in found.items() if TP in desc.replicas and not desc.replicas[TP].is_future),
        None,
    )
    copy = next(
        (d for d, desc in found.items() if TP in desc.replicas and desc.replicas[TP].is_future),
        None,
    )
    return log, copy


async def read_all(bootstrap: str, count: int) -> list[tuple[int, bytes]]:
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([TP])
        seen: list[tuple[int, bytes]] = []
        while len(seen) < count:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen += [(r.offset, r.value) for r in records]
    return seen


THROTTLE = "replica.alter.log.dirs.io.max.bytes.per.second"
VALUE = b"v" * 1000


def _value(i: int) -> bytes:
    return b"%06d" % i + VALUE


async def throttle(admin: Admin, rate: int | None, broker: int = 1) -> None:
    """A broker's copying rate for moves (None: unbounded), set live."""
    op = AlterConfigOp(THROTTLE, str(rate)) if rate else AlterConfigOp(THROTTLE, op_type="DELETE")
    await admin.incremental_alter_configs({ConfigResource("broker", str(broker)): [op]})


async def two_dirs(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> tuple[Cluster, str, str]:
    """Broker 1 alone, with two data directories, and the topic "moved" (one partition,
    a replaced log's files kept 0.5 s); (the cluster, the directory the partition is in,
    the other)."""
    dirs = [tmp_path / "disk-a", tmp_path / "disk-b"]
    cluster = make_cluster(0)
    cluster.start_broker(1, {"log.dirs": ",".join(map(str, dirs)), "log.segment.bytes": "262144"})
    await _ready_cluster(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("moved", 1, 1, {"file.delete.delay.ms": "500"})])
        source, _ = await where_is(admin)
    assert source is not None
    return cluster, source, str(next(d for d in dirs if str(d) != source))


async def test_a_log_moves_to_another_data_directory_while_it_is_written(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster, source, target = await two_dirs(make_cluster, tmp_path)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        nowhere = await admin.alter_replica_log_dirs({REPLICA: str(tmp_path / "disk-c")})
        assert isinstance(nowhere[REPLICA], LogDirNotFoundError)
        copies_seen = 0
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            futures = [await producer.send("moved", _value(i)) for i in range(3000)]
            await producer.flush()
            await throttle(admin, 100_000)  # (measured over 11 s: held after 2 MiB)
            assert await admin.alter_replica_log_dirs({REPLICA: target}) == {REPLICA: None}
            for i in range(3000, 6000):
                futures.append(await producer.send("moved", _value(i)))
                if i % 500 == 0:
                    await producer.flush()
                    copies_seen += (await where_is(admin))[1] == target
            offsets = [(await f).offset for f in futures]
        assert offsets == list(range(6000))
        assert copies_seen  # written to while its copy was being made
        await throttle(admin, None)
        await until(lambda: where_is(admin), lambda found: found == (target, None), timeout_s=30)
    assert await read_all(cluster.bootstrap, 6000) == [(i, _value(i)) for i in range(6000)]
    # the old log, its files kept open file.delete.delay.ms after the swap, then removed
    await until(lambda: _leftovers(Path(source)), lambda left: left == [], timeout_s=10)


def _leftovers(directory: Path) -> list[str]:
    """The partition's directories left in a data directory it moved from."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("moved-"))


async def test_a_reassignment_plan_moves_a_replica_to_the_data_directory_it_names(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """`headwater reassign-partitions --execute` with a plan whose `log_dirs` names the
    other directory (the replicas unchanged), then `--verify` until it says the replica's
    move completed, as Kafka's tool does."""
    cluster, _, target = await two_dirs(make_cluster, tmp_path)
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        for i in range(500):
            await producer.send("moved", _value(i))
    plan = tmp_path / "plan.json"
    plan.write_text(
        '{"version":1,"partitions":[{"topic":"moved","partition":0,"replicas":[1],'
        f'"log_dirs":["{target}"]}}]}}'
    )
    started = await _command(
        cluster.bootstrap, "reassign-partitions", "--execute", "--reassignment-json-file", str(plan)
    )
    assert started.returncode == 0, started.stderr
    assert "Successfully started log directory move for: moved-0-1" in started.stdout
    verified = await until(
        lambda: _command(
            cluster.bootstrap,
            "reassign-partitions",
            "--verify",
            "--reassignment-json-file",
            str(plan),
        ),
        lambda done: done.returncode == 0,
    )
    assert "Reassignment of replica moved-0-1 completed successfully." in verified.stdout
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        assert await where_is(admin) == (target, None)
    assert await read_all(cluster.bootstrap, 500) == [(i, _value(i)) for i in range(500)]


async def test_a_followers_log_moves_while_it_replicates_and_then_leads_with_every_record(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """A follower's log moved to its broker's other data directory while acks=all writes
    go on: its fetcher appends to the log being copied, the copy catches up and takes
    its place. Then the leader is killed (kill -9): the moved replica leads, and every
    acknowledged record is read from it at its offset."""
    cluster = make_cluster(0)
    dirs = {b: [tmp_path / f"b{b}-a", tmp_path / f"b{b}-b"] for b in (1, 2)}
    for broker_id, paths in dirs.items():
        cluster.start_broker(
            broker_id,
            {"log.dirs": ",".join(map(str, paths)), "log.segment.bytes": "262144"},
        )
    await _ready_cluster(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        configs = {"min.insync.replicas": "2", "file.delete.delay.ms": "500"}
        await admin.create_topics([NewTopic("moved", 1, 2, configs)])
        leader = (await admin.describe_topics(["moved"]))[0].partitions[0].leader
        follower = 3 - leader
        replica = TopicPartitionReplica("moved", 0, follower)
        # the follower makes its log when the controller tells it, maybe after the topic
        # is created: a move asked before that would be to wherever it is made
        source, _ = await until(lambda: where_is(admin, follower), lambda found: found[0])
        target = str(next(d for d in dirs[follower] if str(d) != source))
        copies_seen = 0
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            futures = [await producer.send("moved", _value(i)) for i in range(3000)]
            await producer.flush()
            await throttle(admin, 100_000, follower)
            assert await admin.alter_replica_log_dirs({replica: target}) == {replica: None}
            for i in range(3000, 6000):
                futures.append(await producer.send("moved", _value(i)))
                if i % 500 == 0:
                    await producer.flush()
                    copies_seen += (await where_is(admin, follower))[1] == target
            offsets = [(await f).offset for f in futures]
        assert offsets == list(range(6000))
        assert copies_seen  # replicated into while its copy was being made
        await throttle(admin, None, follower)
        await until(
            lambda: where_is(admin, follower), lambda found: found == (target, None), timeout_s=30
        )
        # after the swap the fetcher appends to the moved log (acks=all: both replicas)
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            futures = [await producer.send("moved", _value(i)) for i in range(6000, 7000)]
            assert [(await f).offset for f in futures] == list(range(6000, 7000))
    cluster.brokers[leader].kill()
    survivor = cluster.bootstrap  # (the live brokers: the follower alone)
    async with Admin(bootstrap_servers=survivor) as admin:
        await until(
            lambda: admin.describe_topics(["moved"]),
            lambda found: found[0].partitions[0].leader == follower,
            timeout_s=30,
        )
    assert await read_all(survivor, 7000) == [(i, _value(i)) for i in range(7000)]
