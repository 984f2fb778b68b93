"""Topic ids (KIP-516) on real brokers: a topic is given one when it is made, keeps it,
and a topic made again under the name gets another; Headwater's admin and command show
it, Kafka's clients read it and ask for a topic by it on a Kafka-protocol listener; a topic
a build without ids made is given one by the controller."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient as RdAdmin
from kafka.protocol.admin import DeleteTopicsRequest as KpDeleteTopics
from kafka.protocol.admin import DeleteTopicsResponse as KpDeleteTopicsResponse
from kafka.protocol.consumer import FetchRequest as KpFetch
from kafka.protocol.consumer import FetchResponse as KpFetchResponse
from kafka.protocol.metadata import MetadataRequest as KpMetadata
from kafka.protocol.metadata import MetadataResponse as KpMetadataResponse
from kazoo.client import KazooClient

from client import Admin, Consumer, NewPartitions, NewTopic, Producer, TopicPartition
from protocol.errors import (
    LeaderNotAvailableError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from protocol.topic_id import format_topic_id, parse_topic_id
from tests.integration.conftest import Cluster, until
from tests.integration.test_cli import COMMAND
from tests.integration.test_kafka_protocol import KAFKA_LISTENER, _exchange

_UNKNOWN_TOPIC_ID = 100


def _znode(cluster: Cluster, topic: str) -> dict[str, Any]:
    zk = _zk(cluster)
    try:
        data, _ = zk.get(f"/brokers/topics/{topic}")
    finally:
        zk.stop()
        zk.close()
    return json.loads(data)


def _by_id(port: int, *topic_ids: str) -> list[tuple[int, str | None, str]]:
    """(error code, name, id) of each topic a Metadata v12 asks for by id alone, encoded
    and decoded by kafka-python's classes (generated from Kafka's specs)."""
    asked = [
        KpMetadata.MetadataRequestTopic(topic_id=uuid.UUID(bytes=parse_topic_id(t)), name=None)
        for t in topic_ids
    ]
    request = KpMetadata[12](
        topics=asked, allow_auto_topic_creation=True, include_topic_authorized_operations=False
    )
    decoded = _exchange(port, request, 12, KpMetadataResponse)
    return [
        (t.error_code, t.name, format_topic_id(t.topic_id.bytes))  # type: ignore[union-attr]
        for t in decoded.topics
    ]


def _delete_by_id(port: int, *topic_ids: str) -> list[tuple[int, str | None, str]]:
    """(error code, name, id) of each topic a DeleteTopics v6 names by id alone, by
    kafka-python's classes."""
    asked = [
        KpDeleteTopics.DeleteTopicState(name=None, topic_id=uuid.UUID(bytes=parse_topic_id(t)))
        for t in topic_ids
    ]
    decoded = _exchange(
        port, KpDeleteTopics[6](topics=asked, timeout_ms=30_000), 6, KpDeleteTopicsResponse
    )
    return [
        (r.error_code, r.name, format_topic_id(r.topic_id.bytes))  # type: ignore[union-attr]
        for r in decoded.responses
    ]


def _fetch_by_id(port: int, *topic_ids: str) -> list[tuple[str, int, bool]]:
    """(id, error code, whether records came) of partition 0 of each topic a Fetch v13
    names by id alone, by kafka-python's classes."""
    partition = KpFetch.FetchTopic.FetchPartition(
        partition=0, fetch_offset=0, partition_max_bytes=1 << 20
    )
    asked = KpFetch[13](
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            KpFetch.FetchTopic(topic_id=uuid.UUID(bytes=parse_topic_id(t)), partitions=[partition])
            for t in topic_ids
        ],
        forgotten_topics_data=[],
        rack_id="",
    )
    decoded = _exchange(port, asked, 13, KpFetchResponse)
    return [
        (
            format_topic_id(t.topic_id.bytes),  # type: ignore[union-attr]
            t.partitions[0].error_code,
            bool(t.partitions[0].records),
        )
        for t in decoded.responses
    ]


async def _describe(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``headwater topics describe ARGS``."""
    return await asyncio.to_thread(
        subprocess.run,
        [*COMMAND, "--bootstrap-server", cluster.bootstrap, "topics", "describe", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _id_of(cluster: Cluster, topic: str) -> str:
    """The topic's id, once the broker knows the topic (and an id for it)."""
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:

        async def probe() -> str | None:
            try:
                (described,) = await admin.describe_topics([topic])
            except UnknownTopicOrPartitionError:
                return None
            return described.topic_id

        found: str = await until(probe, lambda topic_id: topic_id is not None)
    return found


async def test_a_topic_keeps_its_id_and_one_made_again_gets_another(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, KAFKA_LISTENER)
    (broker,) = cluster.brokers.values()
    port = broker.ports["KAFKA"]
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("ids", 2, 1)])
        first = await _id_of(cluster, "ids")
        assert len(parse_topic_id(first)) == 16
        znode = _znode(cluster, "ids")
        assert (znode["version"], znode["topic_id"]) == (3, first)  # Kafka's version 3

        # growing the topic keeps its id
        await admin.create_partitions({"ids": NewPartitions(3)})
        assert _znode(cluster, "ids")["topic_id"] == first
        assert await _id_of(cluster, "ids") == first

        completed = await _describe(cluster, "ids")
        assert completed.returncode == 0, completed.stderr
        shown = completed.stdout.splitlines()
        assert shown[-1] == f"Topic: ids\tTopicId: {first}"
        by_id = await _describe(cluster, "--topic-id", first)
        assert by_id.stdout == completed.stdout
        (described,) = await admin.describe_topics(topic_ids=[first])
        assert (described.name, described.topic_id, len(described.partitions)) == ("ids", first, 3)

        # Kafka's clients: librdkafka describes it with its id; a Metadata by id finds it
        rd = RdAdmin({"bootstrap.servers": f"127.0.0.1:{port}"})
        futures = rd.describe_topics(TopicCollection(["ids"]), request_timeout=20)
        rd_described = await asyncio.to_thread(futures["ids"].result, 30)
        rd_id = rd_described.topic_id  # (shown by librdkafka in standard base64, not URL-safe)
        halves = (rd_id.get_most_significant_bits(), rd_id.get_least_significant_bits())
        assert b"".join((h % 2**64).to_bytes(8, "big") for h in halves) == parse_topic_id(first)
        nowhere = "AAAAAAAAAAAAAAAAAAAAAQ"  # Kafka's reserved metadata topic id: never a topic's
        answers = await asyncio.to_thread(_by_id, port, first, nowhere)
        assert answers[0] == (0, "ids", first)
        assert answers[1][0] == _UNKNOWN_TOPIC_ID and answers[1][2] == nowhere

        # made again under the name: another id, and the old one is no topic's
        await admin.delete_topics(["ids"])
        await admin.create_topics([NewTopic("ids", 1, 1)])
        second = await _id_of(cluster, "ids")
        assert second != first
        answers = await asyncio.to_thread(_by_id, port, first, second)
        assert answers[0][0] == _UNKNOWN_TOPIC_ID
        assert answers[1] == (0, "ids", second)
        # Kafka's Fetch v13 names topics by id: the old one is unknown, the new one read
        async with Producer(bootstrap_servers=cluster.bootstrap) as producer:
            await (await producer.send("ids", b"of the new topic", partition=0))
        fetched = await asyncio.to_thread(_fetch_by_id, port, first, second)
        assert fetched == [(first, _UNKNOWN_TOPIC_ID, False), (second, 0, True)]
        with pytest.raises(UnknownTopicIdError, match=first):
            await admin.describe_topics(topic_ids=[first])
        gone = await _describe(cluster, "--topic-id", first)
        assert gone.returncode == 1 and gone.stderr.count("\n") == 1, gone.stderr
        assert f"no topic has id {first}" in gone.stderr

        # deleting by id: the old id deletes nothing (not the topic made again under the
        # name); Kafka's DeleteTopics v6 by id deletes the topic it names
        with pytest.raises(UnknownTopicIdError, match=first):
            await admin.delete_topics(topic_ids=[first])
        assert await _id_of(cluster, "ids") == second
        deleted = await asyncio.to_thread(_delete_by_id, port, second, first)
        assert deleted == [(0, "ids", second), (_UNKNOWN_TOPIC_ID, "", first)]
        # (the deletion is done; this broker's metadata hears of it a moment later)
        await until(admin.list_topics, lambda names: "ids" not in names)
        await admin.create_topics([NewTopic("ids", 1, 1)])
        third = await _id_of(cluster, "ids")
        await admin.delete_topics(topic_ids=[third])  # Headwater's admin, by id
        await until(admin.list_topics, lambda names: "ids" not in names)


async def test_a_topic_without_an_id_is_given_one_that_it_keeps(
    make_cluster: Callable[..., Cluster],
) -> None:
    # a topic as a build without ids (or Kafka before 2.8) wrote it: version 2, no topic_id
    cluster = make_cluster(1, KAFKA_LISTENER)
    zk = KazooClient(hosts=cluster.zookeeper_connect, timeout=10)
    zk.start(timeout=10)
    try:
        zk.create("/config/topics/older", b'{"version":1,"config":{}}', makepath=True)
        zk.create(
            "/brokers/topics/older",
            b'{"version":2,"partitions":{"0":[1]},"adding_replicas":{},"removing_replicas":{}}',
            makepath=True,
        )
    finally:
        zk.stop()
        zk.close()
    given = await _id_of(cluster, "older")
    assert _znode(cluster, "older") == {
        "version": 3,
        "partitions": {"0": [1]},
        "adding_replicas": {},
        "removing_replicas": {},
        "topic_id": given,
    }
    # a new controller (the broker stopped and started again) reads it, and keeps it
    (broker,) = cluster.brokers.values()
    await asyncio.to_thread(broker.stop)
    await asyncio.to_thread(cluster.start_broker, 1)
    assert await _id_of(cluster, "older") == given


async def test_a_log_of_a_deleted_topic_is_not_taken_for_one_made_again(
    make_cluster: Callable[..., Cluster],
) -> None:
    # broker 2's copy of a topic whose deletion never reached it (its disk restored from
    # a backup taken before): the topic made again under the name must not start from it
    cluster = make_cluster(2)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("t", 1, 2)])
        await _id_of(cluster, "t")
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            for n in range(5):
                await producer.send("t", f"old-{n}".encode(), partition=0)
            await producer.flush()
        second = cluster.brokers[2]
        await asyncio.to_thread(second.stop)
        stale = second.directory / "data" / "t-0"
        backup = second.directory / "backup-t-0"
        shutil.copytree(stale, backup)
        old_id = (stale / "partition.metadata").read_text()
        await asyncio.to_thread(cluster.start_broker, 2)
        await admin.delete_topics(["t"])  # waits until both replicas removed their logs
        await asyncio.to_thread(second.stop)
        shutil.copytree(backup, stale)  # the restore
        await asyncio.to_thread(cluster.start_broker, 2)
        await admin.create_topics([NewTopic("t", 1, 2)])

        async def broker_2_left_out() -> bool:
            (described,) = await admin.describe_topics(["t"])
            (p,) = described.partitions
            return p.leader == 1 and p.isr == [1] and 2 in p.offline_replicas

        await until(broker_2_left_out, bool)
        # the old records are nowhere in the new topic, and it takes new ones
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            meta = await (await producer.send("t", b"new", partition=0))
        assert meta.offset == 0
        async with Consumer(
            bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest"
        ) as consumer:
            consumer.assign([TopicPartition("t", 0)])
            read = await consumer.getmany(timeout_ms=5_000)
        assert [r.value for rs in read.values() for r in rs] == [b"new"]
        # the old log is left where it was, and the broker says what to do with it
        assert (stale / "partition.metadata").read_text() == old_id
        said = second.log_path.read_text()
        assert "replica.inconsistent_topic_id" in said and str(stale) in said

        # removed, and the broker started again: the replica is made afresh
        await asyncio.to_thread(second.stop)
        shutil.rmtree(stale)
        await asyncio.to_thread(cluster.start_broker, 2)

        async def back_in_sync() -> bool:
            (described,) = await admin.describe_topics(["t"])
            return sorted(described.partitions[0].isr) == [1, 2]

        await until(back_in_sync, bool)
        assert (stale / "partition.metadata").read_text() != old_id


def _zk(cluster: Cluster) -> KazooClient:
    zk = KazooClient(hosts=cluster.zookeeper_connect, timeout=10)
    zk.start(timeout=10)
    return zk


async def test_ids_wait_for_every_broker_to_keep_them_and_survive_an_older_builds_writes(
    make_cluster: Callable[..., Cluster],
) -> None:
    # a rolling upgrade: broker 9 is still of a build without ids (its registration has
    # no features); such a build rewrites a topic's znode without the id
    cluster = make_cluster(1)
    older = json.dumps(
        {"version": 5, "host": "127.0.0.1", "port": 1, "endpoints": ["PLAINTEXT://127.0.0.1:1"]}
    ).encode()
    zk = _zk(cluster)
    try:
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            await admin.create_topics([NewTopic("grown", 1, 1)])
            first = await _id_of(cluster, "grown")

            zk.create("/brokers/ids/9", older, ephemeral=True)
            await admin.create_topics([NewTopic("made-meanwhile", 1, 1)])
            assert "topic_id" not in _znode(cluster, "made-meanwhile")
            zk.create("/config/topics/waiting", b'{"version":1,"config":{}}', makepath=True)
            zk.create(
                "/brokers/topics/waiting", b'{"version":2,"partitions":{"0":[1]}}', makepath=True
            )
            # the older build grows "grown": version 2, its id left out
            data, stat = zk.get("/brokers/topics/grown")
            partitions = {**json.loads(data)["partitions"], "1": [1]}
            zk.set(
                "/brokers/topics/grown",
                json.dumps({"version": 2, "partitions": partitions}).encode(),
                version=stat.version,
            )

            async def shown() -> list[Any]:
                try:
                    return await admin.describe_topics(["grown", "waiting"])
                except (UnknownTopicOrPartitionError, LeaderNotAvailableError):
                    # not known yet, or (the controller has it, its cache not yet, since
                    # session 34) "being created": both are "not yet" here
                    return []

            grown, waiting = await until(shown, lambda d: len(d) == 2 and len(d[0].partitions) == 2)
            assert waiting.topic_id is None  # not given while broker 9 would drop it
            assert (grown.topic_id, _znode(cluster, "grown").get("topic_id")) == (first, first)

            zk.delete("/brokers/ids/9")  # upgraded: every broker keeps ids now
            given = await _id_of(cluster, "waiting")
            assert _znode(cluster, "waiting")["topic_id"] == given
            assert _znode(cluster, "made-meanwhile")["topic_id"] == await _id_of(
                cluster, "made-meanwhile"
            )
    finally:
        zk.stop()
        zk.close()
    # a new controller reads both ids as they are
    (broker,) = cluster.brokers.values()
    await asyncio.to_thread(broker.stop)
    await asyncio.to_thread(cluster.start_broker, 1)
    assert await _id_of(cluster, "grown") == first
    assert await _id_of(cluster, "waiting") == given


async def test_an_id_dropped_with_no_controller_of_this_build_watching_is_given_back(
    make_cluster: Callable[..., Cluster],
) -> None:
    # an older build rewrites the znode without the id while no controller of this build
    # sees it (it was controller itself, or a failover fell between its write and the
    # "partitions" event): the next controller of this build must give back the same id,
    # kept in the topic's /partitions znode, not another, which the replica's
    # partition.metadata would refuse (found in review)
    cluster = make_cluster(1)
    (broker,) = cluster.brokers.values()
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("kept", 1, 1)])
        first = await _id_of(cluster, "kept")
    kept = broker.directory / "data" / "kept-0" / "partition.metadata"
    await until(kept.exists, bool)
    await asyncio.to_thread(broker.stop)
    zk = _zk(cluster)
    try:
        data, stat = zk.get("/brokers/topics/kept")
        partitions = json.loads(data)["partitions"]
        zk.set(
            "/brokers/topics/kept",
            json.dumps({"version": 2, "partitions": partitions}).encode(),
            version=stat.version,
        )
    finally:
        zk.stop()
        zk.close()
    await asyncio.to_thread(cluster.start_broker, 1)
    assert await _id_of(cluster, "kept") == first
    assert _znode(cluster, "kept")["topic_id"] == first
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        written = await (await producer.send("kept", b"still served", partition=0))
    assert written.offset == 0
    assert "replica.inconsistent_topic_id" not in broker.log_path.read_text()
