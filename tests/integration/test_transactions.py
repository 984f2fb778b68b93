"""Transactions on a real three-broker cluster: markers, read_committed consumers, and the
last stable offset, through a leader's kill -9."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from client import Admin, Consumer, NewTopic, TopicPartition
from client.cluster import Cluster as ClientCluster
from client.localcluster import ZooKeeperServer
from protocol.apis import (
    ApiKey,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
    WritableTxnMarker,
    WritableTxnMarkerTopic,
    WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
)
from protocol.records import encode_batch
from protocol.records.control import encode_end_txn_marker
from tests.integration.conftest import Cluster, module_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOPIC = "txn-markers"
TP = TopicPartition(TOPIC, 0)


@pytest.fixture(scope="module")
def cluster(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    yield from module_cluster(zookeeper, tmp_path_factory.mktemp("txn"), "txn")


async def _raw(bootstrap: str) -> ClientCluster:
    raw = ClientCluster(bootstrap, client_id="test-raw")
    await raw.start()
    await raw.refresh_new(TOPIC)
    return raw


async def _produce(raw: ClientCluster, pid: int, seq: int, values: list[bytes]) -> int:
    batch = encode_batch(
        [(b"k", v, None, None) for v in values],
        producer_id=pid,
        producer_epoch=0,
        base_sequence=seq,
        is_transactional=True,
    )
    leader = raw.leader_for(TP)
    assert leader is not None
    request = ProduceRequest(
        acks=-1,
        timeout_ms=10_000,
        topics=[ProduceTopic(name=TOPIC, partitions=[ProducePartition(index=0, records=batch)])],
    )
    response: ProduceResponse = await raw.send(leader, ApiKey.PRODUCE, request)
    (result,) = response.topics[0].partitions
    assert result.error_code == 0, result.error_message
    return result.base_offset


async def _end(raw: ClientCluster, pid: int, *, committed: bool) -> None:
    leader = raw.leader_for(TP)
    assert leader is not None
    request = WriteTxnMarkersRequest(
        markers=[
            WritableTxnMarker(
                producer_id=pid,
                producer_epoch=0,
                transaction_result=committed,
                topics=[WritableTxnMarkerTopic(name=TOPIC, partition_indexes=[0])],
                coordinator_epoch=0,
            )
        ]
    )
    response: WriteTxnMarkersResponse = await raw.send(leader, ApiKey.WRITE_TXN_MARKERS, request)
    (written,) = response.markers[0].topics[0].partitions
    assert written.error_code == 0, written.error_message


async def _read(
    bootstrap: str, isolation_level: str, until: int
) -> tuple[list[tuple[int, bytes]], int]:
    """(offset, value) of every record a consumer of ``isolation_level`` gets before its
    position reaches ``until``, and that position."""
    async with Consumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    ) as consumer:
        consumer.assign([TP])
        seen: list[tuple[int, bytes]] = []
        async with asyncio.timeout(20):
            while await consumer.position(TP) < until:
                got = await consumer.getmany(timeout_ms=200)
                seen += [(r.offset, r.value) for r in got.get(TP, [])]
        return seen, await consumer.position(TP)


async def test_read_committed_sees_committed_transactions_only_and_survives_a_leader_kill(
    cluster: Cluster,
) -> None:
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 1, 3)])
    raw = await _raw(cluster.bootstrap)
    try:
        committed = await _produce(raw, 5000, 0, [b"c1", b"c2"])  # 0-1
        aborted = await _produce(raw, 5001, 0, [b"a1"])  # 2
        async with Consumer(
            bootstrap_servers=cluster.bootstrap, isolation_level="read_committed"
        ) as reader:
            assert (await reader.end_offsets([TP]))[TP] == committed  # nothing stable yet
        async with Consumer(bootstrap_servers=cluster.bootstrap) as reader:
            assert (await reader.end_offsets([TP]))[TP] == 3
        await _end(raw, 5000, committed=True)  # 3
        await _end(raw, 5001, committed=False)  # 4
        plain = await _produce(raw, 5002, 0, [b"c3"])  # 5: a second transaction of another
        await _end(raw, 5002, committed=True)  # 6
        end = 7
        seen, position = await _read(cluster.bootstrap, "read_committed", end)
        assert seen == [(0, b"c1"), (1, b"c2"), (plain, b"c3")]
        assert position == end  # past the last marker, though no record is there
        everything, _ = await _read(cluster.bootstrap, "read_uncommitted", end)
        assert everything == [(0, b"c1"), (1, b"c2"), (aborted, b"a1"), (plain, b"c3")]

        leader = raw.leader_for(TP)
        assert leader is not None
        cluster.brokers[leader].kill()  # kill -9: a follower has every marker (acks=all)
        try:
            await raw.refresh_new(TOPIC)
            async with asyncio.timeout(30):
                while raw.leader_for(TP) in (None, leader):
                    await asyncio.sleep(0.2)
                    await raw.refresh_new(TOPIC)
            seen, _ = await _read(cluster.bootstrap, "read_committed", end)
            assert seen == [(0, b"c1"), (1, b"c2"), (plain, b"c3")]
        finally:
            cluster.start_broker(leader)
    finally:
        await raw.close()


async def test_markers_and_control_batches_are_refused_to_producers(cluster: Cluster) -> None:
    raw = await _raw(cluster.bootstrap)
    try:
        await _produce(raw, 6000, 0, [b"x"])
        marker = encode_end_txn_marker(
            producer_id=6000, producer_epoch=0, committed=True, coordinator_epoch=0
        )
        leader = raw.leader_for(TP)
        assert leader is not None
        request = ProduceRequest(
            acks=1,
            timeout_ms=10_000,
            topics=[
                ProduceTopic(name=TOPIC, partitions=[ProducePartition(index=0, records=marker)])
            ],
        )
        response: ProduceResponse = await raw.send(leader, ApiKey.PRODUCE, request)
        (result,) = response.topics[0].partitions
        assert result.error_code == 87 and "control batches" in (result.error_message or "")
        await _end(raw, 6000, committed=False)  # the broker still serves
    finally:
        await raw.close()
