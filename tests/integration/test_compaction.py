"""Log compaction on real brokers (real ZooKeeper, broker processes): a compacted topic
read from the beginning holds exactly each key's latest record at its original offset, its
tombstones until delete.retention.ms and not after, and a follower's copy (read from its
files) agrees; ``__consumer_offsets`` is created compacted, and committed offsets survive
its compaction and a coordinator failover."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.log.manager import read_checkpoint
from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from protocol.apis import ApiKey
from protocol.group_log import partition_for
from protocol.records import decode_batches
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_offsets import (
    _codes,
    _commit,
    _fetch_offsets,
    _find,
    _make_orders,
    _retrying,
)
from tests.integration.test_replication import FAST_ISR
from tests.integration.test_topics import _ready_cluster, _request

pytestmark = pytest.mark.timeout(120)

Row = tuple[int, bytes | None, bytes | None]
SEGMENT_MS = 1_000
RETENTION_MS = 4_000
CLEANER = {**FAST_ISR, "log.cleaner.backoff.ms": "100", "log.segment.delete.delay.ms": "500"}
TABLE = {
    "cleanup.policy": "compact",
    "segment.ms": str(SEGMENT_MS),
    "segment.bytes": "8192",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": str(RETENTION_MS),
    "min.insync.replicas": "2",
}


async def _read_all(bootstrap: str, end: int) -> set[Row]:
    """Every record of table-0 from the beginning up to offset ``end`` (exclusive)."""
    tp = TopicPartition("table", 0)
    rows: set[Row] = set()
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(timeout_ms=500)
            rows |= {(r.offset, r.key, r.value) for r in batch.get(tp, [])}
    return rows


def _files(directory: Path) -> set[Row]:
    """The records in a replica's segment files (read as they are: the broker is live, so
    a segment the cleaner swaps out while they are read means reading them all again)."""
    for _ in range(20):
        rows: set[Row] = set()
        try:
            for path in sorted(directory.glob("*.log")):
                for batch in decode_batches(path.read_bytes(), allow_partial_tail=True):
                    rows |= {(r.offset, r.key, r.value) for r in batch}
        except FileNotFoundError:
            continue
        return rows
    raise AssertionError(f"the segments in {directory} kept changing while they were read")


async def test_a_compacted_topic_keeps_each_keys_latest_record_on_every_replica(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, CLEANER)
    await _ready_cluster(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("table", 1, 3, TABLE)])
        configs = await admin.describe_configs("table")
    assert configs["cleanup.policy"].value == "compact"
    latest: dict[bytes, tuple[int, bytes | None]] = {}
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:

        async def put(key: bytes, value: bytes | None) -> int:
            meta = await producer.send_and_wait("table", value, key=key, partition=0)
            latest[key] = (meta.offset, value)
            return meta.offset

        for n in range(300):
            key = b"key-%d" % (n % 12)
            await put(key, None if n % 12 in (3, 7) and n > 250 else b"value-%d" % n)
        await asyncio.sleep(SEGMENT_MS / 1000 + 0.2)
        end = await put(b"roll-1", b"x") + 1  # rolls: every update above is cleanable

        def expected(tombstones: bool) -> set[Row]:
            return {(o, k, v) for k, (o, v) in latest.items() if tombstones or v is not None}

        compacted = await _until(
            lambda: _read_all(cluster.bootstrap, end),
            lambda rows: rows == expected(tombstones=True),
            timeout_s=30,
        )
        assert {k for _, k, v in compacted if v is None} == {b"key-3", b"key-7"}

        # past delete.retention.ms, a new round (new dirty data) drops the tombstones
        await asyncio.sleep(RETENTION_MS / 1000)
        await put(b"roll-2", b"y")
        await asyncio.sleep(SEGMENT_MS / 1000 + 0.2)
        end = await put(b"roll-3", b"z") + 1
    final = expected(tombstones=False)
    await _until(
        lambda: _read_all(cluster.bootstrap, end), lambda rows: rows == final, timeout_s=30
    )
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        (description,) = await admin.describe_topics(["table"])
    partition = description.partitions[0]
    followers = [b for b in partition.replicas if b != partition.leader]
    for follower in followers:  # each replica compacts its own copy, the same way
        directory = cluster.brokers[follower].directory / "data" / "table-0"
        await _until(
            lambda d=directory: asyncio.to_thread(_files, d),
            lambda rows: rows == final,
            timeout_s=30,
        )


async def test_committed_offsets_survive_compaction_and_a_coordinator_failover(
    make_cluster: Callable[..., Cluster],
) -> None:
    settings = {
        **CLEANER,
        "offsets.topic.num.partitions": "3",
        "offsets.topic.segment.bytes": "2048",
    }
    cluster = make_cluster(3, settings)
    ports = await _ready_cluster(cluster)
    await _make_orders(cluster)
    coordinator = (await _find(ports[1], "billing")).node_id
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        configs = await admin.describe_configs("__consumer_offsets")
    assert configs["cleanup.policy"].value == "compact"
    assert configs["segment.bytes"].value == "2048"

    for i in range(1, 81):  # 160 records for 2 keys: many segments, mostly obsolete
        request = _commit("billing", {0: i, 1: 2 * i})
        done = await _until(
            lambda r=request: _request(ports[coordinator], ApiKey.OFFSET_COMMIT, r),
            lambda r: _codes(r) == {0},  # the coordinator may still be loading
        )
        assert _codes(done) == {0}

    partition = partition_for("billing", 3)
    data = cluster.brokers[coordinator].directory / "data"
    offsets_dir = data / f"__consumer_offsets-{partition}"
    await _until(  # the coordinator's broker compacted it: a checkpoint, fewer records
        lambda: asyncio.to_thread(_compacted, data, offsets_dir, partition),
        lambda compacted: compacted,
        timeout_s=30,
    )

    cluster.brokers[coordinator].kill()
    survivor = ports[next(b for b in ports if b != coordinator)]
    moved = await _until(
        lambda: _find(survivor, "billing"), lambda r: r.node_id not in (-1, coordinator)
    )
    fetched = await _until(  # the new coordinator loads its own compacted copy
        lambda: _retrying(_fetch_offsets(ports[moved.node_id], "billing", [0, 1])),
        lambda r: r is not None,
    )
    assert fetched == {0: 80, 1: 160}


def _compacted(data: Path, directory: Path, partition: int) -> bool:
    checkpoints = read_checkpoint(data / "cleaner-offset-checkpoint")
    cleaned_to = {tp.partition: o for tp, o in checkpoints.items() if tp.topic.startswith("__")}
    return cleaned_to.get(partition, 0) > 0 and len(_files(directory)) < 40
