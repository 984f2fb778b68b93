"""Kafka's own clients on a Kafka-protocol listener of real brokers: kafka-python (pure
Python), aiokafka and confluent-kafka (librdkafka) produce, consume in groups and commit,
and what they write is Headwater's like any other record (its client and tools read it)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import ConsumerGroupTopicPartitions, ConsumerGroupType
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException as RdKafkaException
from confluent_kafka import Producer as RdProducer
from confluent_kafka import TopicPartition as RdTopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    ResourcePatternType,
    ResourceType,
    ScramMechanism,
)
from confluent_kafka.admin import AdminClient as RdAdmin
from confluent_kafka.admin import NewTopic as NewRdTopic
from confluent_kafka.admin import ResourceType as RdResourceType
from confluent_kafka.admin import ScramCredentialInfo as ScramCredentialInfo_
from confluent_kafka.admin import UserScramCredentialUpsertion as UserScramCredentialUpsertion_
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import MemberToRemove
from kafka.errors import NoError as KpNoError
from kafka.errors import UnknownMemberIdError as KpUnknownMemberIdError
from kafka.protocol.admin import AlterClientQuotasRequest as KpAlterQuotas
from kafka.protocol.admin import AlterClientQuotasResponse as KpAlterQuotasResponse
from kafka.protocol.admin import CreateTopicsRequest as KpCreateTopics
from kafka.protocol.admin import CreateTopicsResponse as KpCreateTopicsResponse
from kafka.protocol.admin import DescribeClientQuotasRequest as KpDescribeQuotas
from kafka.protocol.admin import DescribeClientQuotasResponse as KpDescribeQuotasResponse
from kafka.protocol.consumer.offsets import OffsetForLeaderEpochRequest as KpOffsetForLeaderEpoch
from kafka.protocol.consumer.offsets import (
    OffsetForLeaderEpochResponse as KpOffsetForLeaderEpochResponse,
)

from bench.compare import kafka_client
from bench.compare.workloads import QUICK
from client import (
    Admin,
    Consumer,
    NewTopic,
    OffsetSpec,
    Producer,
    TopicPartition,
    UserScramCredentialUpsertion,
)
from protocol.errors import (
    ElectionNotNeededError,
    ThrottlingQuotaExceededError,
    UnknownTopicOrPartitionError,
)
from tests.integration.conftest import Cluster, until
from tests.integration.test_cli import COMMAND

KAFKA_LISTENER = {
    "listeners": "PLAINTEXT://127.0.0.1:0,KAFKA://127.0.0.1:0",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,KAFKA:PLAINTEXT",
    "kafka.protocol.listeners": "KAFKA",
    # one consumer per group here: no 3 s wait for others to join first
    "group.initial.rebalance.delay.ms": "0",
}


def kafka_bootstrap(cluster: Cluster) -> str:
    return ",".join(
        f"127.0.0.1:{b.ports['KAFKA']}" for b in cluster.brokers.values() if b.process is not None
    )


@pytest.fixture(autouse=True)
def _quiet_clients() -> None:
    # the clients log every retry at WARNING; the assertions say what went wrong
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.ERROR)


async def _topic(cluster: Cluster, name: str, partitions: int, replicas: int = 1) -> None:
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(name, partitions, replicas)])

        async def known_everywhere() -> bool:
            # Kafka's clients ask any broker: every one must have heard of the topic
            for broker in cluster.brokers.values():
                async with Admin(bootstrap_servers=broker.bootstrap) as one:
                    try:
                        described = await one.describe_topics([name])
                    except UnknownTopicOrPartitionError:
                        return False  # this broker has not heard of it yet (CI saw it)
                    if not described or any(p.leader < 0 for p in described[0].partitions):
                        return False
            return True

        await until(known_everywhere, bool)


def _read_all(
    bootstrap: str, topic: str, partitions: int, expected: int
) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """Every record of ``topic``, read by kafka-python from the start of each partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=15_000)
    tps = [KpTopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: dict[int, list[tuple[int, bytes, bytes]]] = {p: [] for p in range(partitions)}
    for count, message in enumerate(consumer, 1):
        out[message.partition].append((message.offset, message.key, message.value))
        if count >= expected:
            break
    consumer.close()
    return out


async def test_kafka_python_writes_and_reads_back_every_record_at_its_offset(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "kp", 3)
    bootstrap = kafka_bootstrap(cluster)

    def produce() -> dict[bytes, tuple[int, int]]:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        futures = {
            f"v{i}".encode(): producer.send("kp", f"v{i}".encode(), key=f"k{i % 7}".encode())
            for i in range(300)
        }
        producer.flush()
        placed = {v: (f.get().partition, f.get().offset) for v, f in futures.items()}
        producer.close()
        return placed

    placed = await asyncio.to_thread(produce)
    read = await asyncio.to_thread(_read_all, bootstrap, "kp", 3, 300)
    got = {value: (p, offset) for p, rows in read.items() for offset, _key, value in rows}
    assert got == placed  # every acknowledged record, once, at the offset it was given
    for rows in read.values():
        assert [offset for offset, _, _ in rows] == list(range(len(rows)))  # in order

    # and Headwater's own consumer reads the same records
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition("kp", p) for p in range(3)])
        ours: dict[bytes, tuple[int, int]] = {}
        while len(ours) < 300:
            for tp, records in (await c.getmany(timeout_ms=1000)).items():
                ours.update({r.value: (tp.partition, r.offset) for r in records})
    assert ours == placed


async def test_librdkafka_group_consumer_commits_where_headwater_tools_see_it(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "rd", 2)
    bootstrap = kafka_bootstrap(cluster)

    def run() -> tuple[list[tuple[Any, int, int]], list[tuple[int, int, bytes]]]:
        producer = RdProducer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "compression.type": "lz4"}
        )
        acked: list[tuple[Any, int, int]] = []
        for i in range(100):
            producer.produce(
                "rd",
                f"r{i}".encode(),
                key=f"{i % 5}".encode(),
                callback=lambda err, msg: acked.append((err, msg.partition(), msg.offset())),
            )
        assert producer.flush(30) == 0
        consumer = RdConsumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "rd-group",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe(["rd"])
        seen: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + 60
        while len(seen) < 100 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            seen.append((message.partition(), message.offset(), message.value()))
        consumer.commit(asynchronous=False)
        consumer.close()
        return acked, seen

    acked, seen = await asyncio.to_thread(run)
    assert [err for err, _, _ in acked] == [None] * 100
    assert sorted((p, o) for p, o, _ in seen) == sorted((p, o) for _, p, o in acked)
    assert sorted(v for _, _, v in seen) == sorted(f"r{i}".encode() for i in range(100))
    ends = {p: max(o for q, o, _ in seen if q == p) + 1 for p, _, _ in seen}
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        committed = await admin.list_group_offsets("rd-group")
        (group,) = await admin.describe_groups(["rd-group"])
    assert committed == {TopicPartition("rd", p): end for p, end in ends.items()}
    assert group.state == "Empty"  # the consumer left when it closed


async def test_aiokafka_in_a_group_beside_headwaters_own_consumer(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "aio", 1)
    bootstrap = kafka_bootstrap(cluster)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip")
    await producer.start()
    try:
        sent = [await producer.send_and_wait("aio", f"a{i}".encode()) for i in range(50)]
    finally:
        await producer.stop()
    assert [m.offset for m in sent] == list(range(50))
    consumer = AIOKafkaConsumer(
        "aio", bootstrap_servers=bootstrap, group_id="aio-group", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < 50 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records]
        await consumer.commit()
        tp = AioTopicPartition("aio", 0)
        assert await consumer.end_offsets([tp]) == {tp: 50}
        by_time = await consumer.offsets_for_times({tp: 0})
        assert by_time[tp] is not None and by_time[tp].offset == 0
    finally:
        await consumer.stop()
    assert values == [f"a{i}".encode() for i in range(50)]
    # Headwater's consumer in the same group starts where aiokafka committed
    async with Consumer("aio", bootstrap_servers=cluster.bootstrap, group_id="aio-group") as ours:
        assert await ours.committed(TopicPartition("aio", 0)) == 50


def _frame(key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    payload = struct.pack(">hhih", key, version, correlation_id, 1) + b"t" + body
    return struct.pack(">I", len(payload)) + payload


def _answer(sock: socket.socket) -> bytes | None:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None  # closed
        head += chunk
    (length,) = struct.unpack(">I", head)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return body


async def test_bad_requests_close_only_their_connection_and_the_broker_serves_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "bad", 1)
    (broker,) = cluster.brokers.values()
    port = broker.ports["KAFKA"]

    def exchange(frame: bytes) -> bytes | None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(frame)
            return _answer(sock)

    # ApiVersions of a version the broker does not speak: UNSUPPORTED_VERSION and the list
    answer = await asyncio.to_thread(exchange, _frame(18, 99, 5, b""))
    assert answer is not None
    correlation_id, error_code, count = struct.unpack_from(">ihi", answer)
    assert (correlation_id, error_code) == (5, 35) and count > 5
    # Produce v2 (message format v1, which Kafka 4 dropped too), a cut body, an unknown
    # key: the connection is closed, as a Kafka broker closes it
    assert await asyncio.to_thread(exchange, _frame(0, 2, 6, b"\x00")) is None
    assert await asyncio.to_thread(exchange, _frame(3, 1, 7, b"\x00\x00")) is None
    assert await asyncio.to_thread(exchange, _frame(999, 0, 8, b"")) is None

    def still_serves() -> int:
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", acks=1)
        offset = producer.send("bad", b"after").get(timeout=30).offset
        producer.close()
        return offset

    assert await asyncio.to_thread(still_serves) == 0
    log = broker.log_path.read_text()
    assert "connection.unsupported_request" in log and "Produce v2" in log
    assert "connection.malformed_kafka_request" in log


async def test_librdkafka_acks_all_survives_a_leader_killed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, KAFKA_LISTENER)
    await _topic(cluster, "failover", 1, replicas=3)
    bootstrap = kafka_bootstrap(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        (described,) = await admin.describe_topics(["failover"])
    leader = described.partitions[0].leader
    acked: list[tuple[Any, int]] = []
    producer = RdProducer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 60_000,
        }
    )

    def send(first: int, count: int) -> None:
        for i in range(first, first + count):
            producer.produce(
                "failover",
                f"f{i}".encode(),
                callback=lambda err, msg: acked.append((err, msg.offset())),
            )
            producer.poll(0)

    await asyncio.to_thread(send, 0, 200)
    assert await asyncio.to_thread(producer.flush, 30) == 0
    pid = cluster.brokers[leader].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # kill -9 the partition's leader, mid-stream
    await asyncio.to_thread(send, 200, 200)
    assert await asyncio.to_thread(producer.flush, 60) == 0
    assert [err for err, _ in acked] == [None] * 400
    survivors = ",".join(
        f"127.0.0.1:{b.ports['KAFKA']}" for i, b in cluster.brokers.items() if i != leader
    )
    read = await asyncio.to_thread(_read_all, survivors, "failover", 1, 400)
    values = [value for _offset, _key, value in read[0]]
    assert values == [f"f{i}".encode() for i in range(400)]  # none lost, none twice, in order
    assert sorted(offset for _, offset in acked) == [offset for offset, _, _ in read[0]]
    # how Kafka's consumers check their position after a leader change (KIP-320): the
    # new leader says where each epoch ended, in OffsetForLeaderEpoch's encoding
    alive = next(b for i, b in cluster.brokers.items() if i != leader)
    async with Admin(bootstrap_servers=alive.bootstrap) as admin:
        (now,) = await admin.describe_topics(["failover"])
    new_leader, epoch = now.partitions[0].leader, now.partitions[0].leader_epoch
    answers = await asyncio.to_thread(
        _epoch_ends, cluster.brokers[new_leader].ports["KAFKA"], "failover", [epoch - 1, epoch]
    )
    assert answers == [(0, epoch - 1, 200), (0, epoch, 400)]  # the kill came between


def _epoch_ends(port: int, topic: str, epochs: list[int]) -> list[tuple[int, int, int]]:
    """(error code, leader epoch, end offset) for partition 0 of ``topic`` at each of
    ``epochs``, asked as a consumer in OffsetForLeaderEpoch v2 and v4 (each must agree)."""
    out = []
    for version in (2, 4):
        answered = []
        for correlation_id, epoch in enumerate(epochs):
            asked = KpOffsetForLeaderEpoch[version](
                replica_id=-1,
                topics=[
                    KpOffsetForLeaderEpoch.OffsetForLeaderTopic(
                        topic=topic,
                        partitions=[
                            KpOffsetForLeaderEpoch.OffsetForLeaderTopic.OffsetForLeaderPartition(
                                partition=0, current_leader_epoch=-1, leader_epoch=epoch
                            )
                        ],
                    )
                ],
            )
            asked.with_header(correlation_id=correlation_id, client_id="t")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(_frame_raw(bytes(asked.encode(version=version, header=True))))
                raw = _answer(sock)
            assert raw is not None
            decoded = KpOffsetForLeaderEpochResponse.decode(raw, version=version, header=True)
            (partition,) = decoded.topics[0].partitions
            answered.append((partition.error_code, partition.leader_epoch, partition.end_offset))
        out.append(answered)
    assert out[0] == out[1], out
    return out[0]


def _commit_then_abort(producer: RdProducer, topic: str, tag: str) -> None:
    """A transaction of ten records ``kept<tag><i>`` committed, then one of ten
    ``dropped<tag><i>`` aborted at once (no flush before the abort)."""
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, f"kept{tag}{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, f"dropped{tag}{i}".encode())
    producer.abort_transaction(30)


async def test_librdkafka_transactions_commit_abort_and_offsets_exactly_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "txn-in", 1)
    await _topic(cluster, "txn-out", 1)
    bootstrap = kafka_bootstrap(cluster)

    def run() -> tuple[list[bytes], int]:
        producer = RdProducer({"bootstrap.servers": bootstrap, "transactional.id": "copy-1"})
        producer.init_transactions(30)
        _commit_then_abort(producer, "txn-out", "")  # (the abort at once: see the next test)
        # consume-transform-produce: the input's offsets commit with the output
        consumer = RdConsumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "copier",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        producer.begin_transaction()
        producer.produce("txn-out", b"last")
        producer.send_offsets_to_transaction(
            [RdTopicPartition("txn-in", 0, 7)], consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
        consumer.assign([RdTopicPartition("txn-out", 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < 11 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
        (committed,) = consumer.committed([RdTopicPartition("txn-in", 0)], 10)
        consumer.close()
        return values, committed.offset

    values, committed = await asyncio.to_thread(run)
    assert values == [f"kept{i}".encode() for i in range(10)] + [b"last"]
    assert committed == 7
    # Headwater's read_committed consumer sees the same records, none of the aborted
    async with Consumer(
        bootstrap_servers=cluster.bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    ) as ours:
        ours.assign([TopicPartition("txn-out", 0)])
        seen: list[bytes] = []
        while len(seen) < 11:
            for records in (await ours.getmany(timeout_ms=1000)).values():
                seen += [r.value for r in records]
    assert seen == values


async def test_librdkafka_aborts_the_transaction_it_begins_right_after_a_commit(
    make_cluster: Callable[..., Cluster],
) -> None:
    """librdkafka issue 4849: right after a commit, its AddPartitionsToTxn for the next
    transaction is refused CONCURRENT_TRANSACTIONS (the commit's markers still going
    out), and an abort then sends EndTxn(abort) anyway. Kafka's INVALID_TXN_STATE is
    fatal to librdkafka (here, before session 40: 7 in 60 such aborts); the coordinator
    now answers it as done once the markers are, since nothing of it was written."""
    ROUNDS = 30
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "quick", 1)
    bootstrap = kafka_bootstrap(cluster)

    def run() -> None:
        for round_ in range(ROUNDS):  # a new producer each: its first commit is the race's
            producer = RdProducer(
                {"bootstrap.servers": bootstrap, "transactional.id": f"quick-{round_}"}
            )
            producer.init_transactions(30)
            _commit_then_abort(producer, "quick", f"{round_}-")

    await asyncio.to_thread(run)
    async with Consumer(
        bootstrap_servers=cluster.bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    ) as ours:
        ours.assign([TopicPartition("quick", 0)])
        seen: list[bytes] = []
        while len(seen) < ROUNDS * 10:
            for records in (await ours.getmany(timeout_ms=1000)).values():
                seen += [r.value for r in records]
        seen += [r.value for rs in (await ours.getmany(timeout_ms=300)).values() for r in rs]
    assert seen == [f"kept{r}-{i}".encode() for r in range(ROUNDS) for i in range(10)]


async def test_kafkas_admin_client_manages_topics_configs_records_and_groups(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, KAFKA_LISTENER)
    bootstrap = kafka_bootstrap(cluster)

    def run() -> dict[str, Any]:
        admin = RdAdmin({"bootstrap.servers": bootstrap})
        seen: dict[str, Any] = {}
        made = admin.create_topics(
            [
                NewRdTopic("managed", 2, 1, config={"retention.ms": "3600000"}),
                NewRdTopic("log", 1, 1),
            ]
        )
        for future in made.values():
            future.result(30)
        try:
            admin.create_topics([NewRdTopic("managed", 2, 1)])["managed"].result(30)
        except RdKafkaException as exc:
            seen["again"] = exc.args[0].code()
        admin.create_partitions([NewPartitions("managed", 4)])["managed"].result(30)
        resource = ConfigResource(ResourceType.TOPIC, "managed")
        configs = admin.describe_configs([resource])[resource].result(30)
        seen["retention"] = configs["retention.ms"].value
        seen["cleanup"] = configs["cleanup.policy"].value
        change = ConfigResource(
            ResourceType.TOPIC,
            "managed",
            incremental_configs=[
                ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        admin.incremental_alter_configs([change])[change].result(30)
        producer = RdProducer({"bootstrap.servers": bootstrap})
        for i in range(10):
            producer.produce("log", f"l{i}".encode())
        assert producer.flush(30) == 0
        cut = RdTopicPartition("log", 0, 4)
        seen["low"] = admin.delete_records([cut])[cut].result(30).low_watermark
        consumer = RdConsumer(
            {"bootstrap.servers": bootstrap, "group.id": "admins", "auto.offset.reset": "earliest"}
        )
        consumer.subscribe(["log"])
        read = 0
        deadline = time.monotonic() + 30
        while read < 6 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                read += 1
        consumer.commit(asynchronous=False)
        (described,) = [f.result(30) for f in admin.describe_consumer_groups(["admins"]).values()]
        seen["members"] = len(described.members)
        consumer.close()
        seen["groups"] = [g.group_id for g in admin.list_consumer_groups().result(30).valid]
        listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("admins")])
        seen["offsets"] = [
            (tp.topic, tp.partition, tp.offset)
            for tp in listed["admins"].result(30).topic_partitions
        ]
        admin.delete_consumer_groups(["admins"])["admins"].result(30)
        admin.delete_topics(["log"])["log"].result(30)
        # Kafka 4.0's timestamp bounds (KIP-937), set by Kafka's admin client: a record
        # an hour ahead is refused with INVALID_TIMESTAMP, the one beside it delivered
        bounded = NewRdTopic("bounded", 1, 1, config={"message.timestamp.after.max.ms": "60000"})
        admin.create_topics([bounded])["bounded"].result(30)
        outcomes: list[tuple[int | None, int | None]] = []

        def report(err: Any, message: Any) -> None:
            outcomes.append((None if err is None else err.code(), message.offset()))

        stamper = RdProducer({"bootstrap.servers": bootstrap})
        now_ms = int(time.time() * 1000)
        stamper.produce("bounded", b"later", timestamp=now_ms + 3_600_000, on_delivery=report)
        assert stamper.flush(30) == 0
        stamper.produce("bounded", b"now", timestamp=now_ms, on_delivery=report)
        assert stamper.flush(30) == 0
        seen["bounded"] = outcomes
        cluster_view = admin.describe_cluster().result(30)  # DescribeCluster (KIP-700)
        seen["cluster"] = (
            cluster_view.cluster_id,
            cluster_view.controller.id,
            [(n.id, n.host, n.port) for n in cluster_view.nodes],
        )
        return seen

    seen = await asyncio.to_thread(run)
    assert seen["again"] == RdKafkaError.TOPIC_ALREADY_EXISTS
    assert (seen["retention"], seen["cleanup"]) == ("3600000", "delete")
    assert seen["low"] == 4
    assert seen["members"] == 1 and seen["groups"] == ["admins"]
    assert seen["offsets"] == [("log", 0, 10)]
    assert seen["bounded"] == [(RdKafkaError.INVALID_TIMESTAMP, None), (None, 0)]
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        ours = await admin.describe_cluster()
        (broker,) = cluster.brokers.values()
        assert seen["cluster"] == (
            ours.cluster_id,
            ours.controller_id,
            [(broker.broker_id, "127.0.0.1", broker.ports["KAFKA"])],  # its Kafka listener's
        )
        (managed,) = await admin.describe_topics(["managed"])
        assert len(managed.partitions) == 4
        configs = await admin.describe_configs("managed")
        assert configs["retention.ms"].value == "7200000"  # as the Kafka client set it
        await until(admin.list_topics, lambda names: "log" not in names)
        assert await admin.list_groups() == []


async def test_scram_and_plain_logins_on_a_sasl_kafka_listener(
    make_cluster: Callable[..., Cluster],
) -> None:
    jaas = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_bob="bob-secret";'
    cluster = make_cluster(
        1,
        {
            "listeners": "PLAINTEXT://127.0.0.1:0,KSASL://127.0.0.1:0",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,KSASL:SASL_PLAINTEXT",
            "kafka.protocol.listeners": "KSASL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256,PLAIN",
            "sasl.jaas.config": jaas,
        },
    )
    await _topic(cluster, "logins", 1)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("alice", "SCRAM-SHA-256", "alice-secret")]
        )
    (broker,) = cluster.brokers.values()
    bootstrap = f"127.0.0.1:{broker.ports['KSASL']}"

    def login(mechanism: str, user: str, password: str) -> dict[str, Any]:
        return {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": password,
        }

    def run() -> tuple[list[tuple[Any, int]], list[Any]]:
        acked: list[tuple[Any, int]] = []
        for mechanism, user, password in (
            ("SCRAM-SHA-256", "alice", "alice-secret"),
            ("PLAIN", "bob", "bob-secret"),
        ):
            producer = RdProducer(login(mechanism, user, password))
            for i in range(3):
                producer.produce(
                    "logins",
                    f"{user}{i}".encode(),
                    callback=lambda err, msg: acked.append((err, msg.offset())),
                )
            assert producer.flush(30) == 0
        refused: list[Any] = []
        wrong = RdProducer(
            {
                **login("SCRAM-SHA-256", "alice", "not-it"),
                "error_cb": refused.append,
                "message.timeout.ms": 3000,
            }
        )
        wrong.produce("logins", b"never")
        deadline = time.monotonic() + 20
        while not refused and time.monotonic() < deadline:
            wrong.poll(0.2)
        wrong.flush(5)
        return acked, refused

    def unauthenticated_metadata() -> bytes | None:
        with socket.create_connection(("127.0.0.1", broker.ports["KSASL"]), timeout=10) as sock:
            sock.sendall(_frame(3, 1, 1, struct.pack(">i", -1)))
            return _answer(sock)

    # nothing but the SASL exchange before a login: the connection is closed, as Kafka's
    assert await asyncio.to_thread(unauthenticated_metadata) is None
    acked, refused = await asyncio.to_thread(run)
    assert acked == [(None, offset) for offset in range(6)]
    assert refused and refused[0].code() == RdKafkaError._AUTHENTICATION, refused
    assert "SASL_AUTHENTICATION_FAILED" in refused[0].str()
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition("logins", 0)])
        values: list[bytes] = []
        while len(values) < 6:
            for records in (await c.getmany(timeout_ms=1000)).values():
                values += [r.value for r in records]
    assert values == [b"alice0", b"alice1", b"alice2", b"bob0", b"bob1", b"bob2"]


async def test_librdkafka_over_tls_on_an_ssl_kafka_listener(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca_file, broker_file = tmp_path / "ca.pem", tmp_path / "broker.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(broker_file)
    )
    cluster = make_cluster(
        1,
        {
            "listeners": "PLAINTEXT://127.0.0.1:0,KSSL://127.0.0.1:0",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,KSSL:SSL",
            "kafka.protocol.listeners": "KSSL",
            "ssl.keystore.location": str(broker_file),
            "group.initial.rebalance.delay.ms": "0",
        },
    )
    await _topic(cluster, "secret", 1)
    (broker,) = cluster.brokers.values()
    tls = {
        "bootstrap.servers": f"127.0.0.1:{broker.ports['KSSL']}",
        "security.protocol": "SSL",
        "ssl.ca.location": str(ca_file),
    }
    # records of 20 KB: fetches go by the TLS listener's copy path, not inlined
    values = [b"%04d" % i + b"s" * 20_000 for i in range(100)]

    def run() -> list[bytes]:
        producer = RdProducer({**tls, "acks": "all"})
        for value in values:
            producer.produce("secret", value)
        assert producer.flush(30) == 0
        consumer = RdConsumer({**tls, "group.id": "tls", "auto.offset.reset": "earliest"})
        consumer.subscribe(["secret"])
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(got) < len(values) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
        consumer.close()
        return got

    assert await asyncio.to_thread(run) == values


async def test_the_benchs_kafka_client_row_measures_records_that_all_arrived(
    make_cluster: Callable[..., Cluster],
) -> None:
    # `make bench`'s confluent-kafka rows: a rate, for records that are all in the log
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "bench-kafka", 1)
    sizes = dataclasses.replace(QUICK, produce_records=5_000, max_seconds=30.0)
    rate = await kafka_client.produce(kafka_bootstrap(cluster), "bench-kafka", sizes, "all")
    assert rate > 0
    async with Consumer(bootstrap_servers=cluster.bootstrap) as ours:
        tp = TopicPartition("bench-kafka", 0)
        assert await ours.end_offsets([tp]) == {tp: 5_000}


def _create_topic_raw(port: int, name: str, version: int) -> tuple[int, int]:
    """(error code, throttle ms) of one CreateTopics at ``version``, encoded and decoded
    by kafka-python's classes (generated from Kafka's specs)."""
    topic = KpCreateTopics.CreatableTopic(
        name=name, num_partitions=1, replication_factor=1, assignments=[], configs=[]
    )
    request = KpCreateTopics[version](topics=[topic], timeout_ms=5_000, validate_only=False)
    request.with_header(correlation_id=7, client_id="quota")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(_frame_raw(bytes(request.encode(version=version, header=True))))
        answer = _answer(sock)
    assert answer is not None
    decoded = KpCreateTopicsResponse.decode(answer, version=version, header=True)
    return decoded.topics[0].error_code, decoded.throttle_time_ms


def _frame_raw(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def test_the_mutation_quota_throttles_old_versions_and_refuses_new_ones(
    make_cluster: Callable[..., Cluster],
) -> None:
    # KIP-599: THROTTLING_QUOTA_EXCEEDED exists from CreateTopics v6 (Kafka's strict
    # mode); an older client over the quota is let through and throttled, as by Kafka
    cluster = make_cluster(1, KAFKA_LISTENER)
    (broker,) = cluster.brokers.values()
    port = broker.ports["KAFKA"]
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.alter_client_quotas({(("user", None),): {"controller_mutation_rate": 1}})
        await admin.create_topics([NewTopic("m1", 10, 1)])
        await admin.create_topics([NewTopic("m2", 10, 1)])  # 20 of a burst of 11: in debt
    code, throttle_ms = await asyncio.to_thread(_create_topic_raw, port, "m3", 4)
    assert (code, throttle_ms > 0) == (0, True)  # created, the client told to wait
    code, throttle_ms = await asyncio.to_thread(_create_topic_raw, port, "m4", 6)
    assert (code, throttle_ms > 0) == (ThrottlingQuotaExceededError.code, True)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        names = await admin.list_topics()
    assert "m3" in names and "m4" not in names


async def test_acls_and_scram_users_from_kafkas_admin_client(
    make_cluster: Callable[..., Cluster],
) -> None:
    settings = {
        **KAFKA_LISTENER,
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        "super.users": "User:ANONYMOUS",
    }
    cluster = make_cluster(1, settings)
    bootstrap = kafka_bootstrap(cluster)

    def run() -> dict[str, Any]:
        admin = RdAdmin({"bootstrap.servers": bootstrap})
        binding = AclBinding(
            RdResourceType.TOPIC,
            "payments",
            ResourcePatternType.PREFIXED,
            "User:alice",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        )
        seen: dict[str, Any] = {}
        admin.create_acls([binding])[binding].result(30)
        any_topic = AclBindingFilter(
            RdResourceType.TOPIC,
            None,
            ResourcePatternType.ANY,
            None,
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        seen["described"] = admin.describe_acls(any_topic).result(30)
        upsert = UserScramCredentialUpsertion_(
            "bob", ScramCredentialInfo_(ScramMechanism.SCRAM_SHA_256, 8192), b"bob-secret"
        )
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)
        described = admin.describe_user_scram_credentials(["bob"])
        seen["scram"] = [
            (i.mechanism, i.iterations) for i in described["bob"].result(30).scram_credential_infos
        ]
        seen["deleted"] = admin.delete_acls([any_topic])[any_topic].result(30)
        return seen

    seen = await asyncio.to_thread(run)
    (acl,) = seen["described"]
    assert (acl.name, acl.principal, acl.operation) == ("payments", "User:alice", AclOperation.READ)
    assert seen["scram"] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    assert len(seen["deleted"]) == 1
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        # Headwater's own admin sees what Kafka's client did
        described = await admin.describe_user_scram_credentials(["bob"])
        assert [i.iterations for i in described["bob"].credential_infos] == [8192]


def _exchange(port: int, request: Any, version: int, answer_class: Any) -> Any:
    """One request encoded, and its answer decoded, by kafka-python's classes."""
    request.with_header(correlation_id=9, client_id="raw")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(_frame_raw(bytes(request.encode(version=version, header=True))))
        answer = _answer(sock)
    assert answer is not None
    return answer_class.decode(answer, version=version, header=True)


async def test_client_quotas_set_and_read_in_kafkas_encoding(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, KAFKA_LISTENER)
    (broker,) = cluster.brokers.values()
    port = broker.ports["KAFKA"]
    entity = [KpAlterQuotas.EntryData.EntityData(entity_type="user", entity_name="alice")]
    op = KpAlterQuotas.EntryData.OpData(key="consumer_byte_rate", value=2048.0, remove=False)
    alter = KpAlterQuotas[1](entries=[KpAlterQuotas.EntryData(entity=entity, ops=[op])])
    altered = await asyncio.to_thread(_exchange, port, alter, 1, KpAlterQuotasResponse)
    assert [e.error_code for e in altered.entries] == [0]
    match = KpDescribeQuotas.ComponentData(entity_type="user", match_type=0, match="alice")
    described = await asyncio.to_thread(
        _exchange,
        port,
        KpDescribeQuotas[1](components=[match], strict=False),
        1,
        KpDescribeQuotasResponse,
    )
    (entry,) = described.entries
    assert [(v.key, v.value) for v in entry.values] == [("consumer_byte_rate", 2048.0)]
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:  # Headwater's sees it
        quotas = await admin.describe_client_quotas(user="alice")
    assert list(quotas.values()) == [{"consumer_byte_rate": 2048.0}]


async def test_kafka_pythons_admin_moves_elects_and_describes(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(2, KAFKA_LISTENER)
    await _topic(cluster, "moved", 1)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        (described,) = await admin.describe_topics(["moved"])
    (source,) = described.partitions[0].replicas
    target = 2 if source == 1 else 1
    producer = Producer(bootstrap_servers=cluster.bootstrap, transactional_id="kp-open")
    async with producer:
        producer.begin_transaction()
        await producer.send_and_wait("moved", b"open", partition=0)  # left open

        def run() -> dict[str, Any]:
            admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(cluster))
            seen: dict[str, Any] = {}
            tp = KpTopicPartition("moved", 0)
            seen["producers"] = admin.describe_producers([tp])
            seen["listed"] = admin.list_transactions()
            seen["described"] = admin.describe_transactions(["kp-open"])
            seen["dirs"] = admin.describe_log_dirs()
            admin.alter_partition_reassignments({tp: [target]})
            seen["moving"] = admin.list_partition_reassignments()
            admin.close()
            return seen

        seen = await asyncio.to_thread(run)
        await producer.abort_transaction()
    (state,) = seen["producers"][KpTopicPartition("moved", 0)].active_producers
    assert state.current_transaction_start_offset == 0
    listed = [t for ts in seen["listed"].values() for t in ts]
    assert [t.transactional_id for t in listed] == ["kp-open"]
    assert seen["described"]["kp-open"].topic_partitions == {KpTopicPartition("moved", 0)}
    dirs = {
        (b["broker"], t["name"]) for b in seen["dirs"] for d in b["log_dirs"] for t in d["topics"]
    }
    assert (source, "moved") in dirs
    assert set(seen["moving"]) <= {KpTopicPartition("moved", 0)}  # done already, or this
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:

        async def replicas() -> list[int]:
            (moved,) = await admin.describe_topics(["moved"])
            return list(moved.partitions[0].replicas)

        await until(replicas, lambda r: r == [target])  # the move Kafka's client asked for

    def elect() -> list[int]:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(cluster))
        answer = admin.elect_leaders(0, {"moved": [0]})
        admin.close()
        return [p.error_code for r in answer.replica_election_results for p in r.partition_result]

    # its one replica leads: nothing to do, in Kafka's words (kafka-python ignores it)
    assert await asyncio.to_thread(elect) == [ElectionNotNeededError.code]


async def test_an_administrator_removes_several_static_members_at_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Kafka's admin "remove members from a group" (LeaveGroup v3+, several members)
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "statics", 2)
    members = [
        Consumer(
            "statics",
            bootstrap_servers=cluster.bootstrap,
            group_id="statics",
            group_instance_id=name,
            session_timeout_ms=60_000,
        )
        for name in ("a", "b")
    ]
    for member in members:
        await member.start()
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:

        async def joined() -> int:
            (group,) = await admin.describe_groups(["statics"])
            return len(group.members) if group.state == "Stable" else 0

        await until(joined, lambda n: n == 2)
        for member in members:
            await member.stop()  # a static member's stop does not leave: it is still there
        assert await joined() == 2

        def remove() -> dict[str, Any]:
            kafka_admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(cluster))
            gone = kafka_admin.remove_group_members(
                "statics",
                [MemberToRemove(group_instance_id=n) for n in ("a", "b", "never-joined")],
            )
            kafka_admin.close()
            return gone

        removed = await asyncio.to_thread(remove)
        (group,) = await admin.describe_groups(["statics"])
    assert removed["a"] is KpNoError and removed["b"] is KpNoError
    assert removed["never-joined"] is KpUnknownMemberIdError
    assert group.members == []


async def test_elections_and_transaction_listings_answer_as_kafkas(
    make_cluster: Callable[..., Cluster],
) -> None:
    # KIP-460's answers to a preferred election, and KIP-994's duration filter
    cluster = make_cluster(1, KAFKA_LISTENER)
    await _topic(cluster, "elected", 1)
    producer = Producer(bootstrap_servers=cluster.bootstrap, transactional_id="young")
    async with producer:
        producer.begin_transaction()
        await producer.send_and_wait("elected", b"x", partition=0)

        def run() -> dict[str, Any]:
            admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(cluster))
            try:
                answer = admin.elect_leaders(0, {"elected": [0, 7]}, raise_errors=False)
                return {
                    "elected": {
                        (r.topic, p.partition_id): p.error_code
                        for r in answer.replica_election_results
                        for p in r.partition_result
                    },
                    "all": admin.list_transactions(),
                    "old": admin.list_transactions(duration_filter_ms=3_600_000),
                    "any": admin.list_transactions(duration_filter_ms=0),
                }
            finally:
                admin.close()

        seen = await asyncio.to_thread(run)

        def listed(longer_ms: str) -> str:
            return subprocess.run(
                [
                    *COMMAND,
                    "--bootstrap-server",
                    cluster.bootstrap,
                    "transactions",
                    "list",
                    "--duration-filter",
                    longer_ms,
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout

        # Headwater's command takes the same filter (Kafka's kafka-transactions --duration-filter)
        assert "young" in await asyncio.to_thread(listed, "0")
        assert "young" not in await asyncio.to_thread(listed, "3600000")
        await producer.abort_transaction()
    assert seen["elected"] == {
        ("elected", 0): ElectionNotNeededError.code,
        ("elected", 7): UnknownTopicOrPartitionError.code,
    }
    names = {
        k: [t.transactional_id for ts in v.values() for t in ts]
        for k, v in seen.items()
        if k != "elected"
    }
    assert names == {"all": ["young"], "old": [], "any": ["young"]}


async def test_librdkafka_consumers_of_the_new_group_protocol_share_and_hand_over(
    make_cluster: Callable[..., Cluster],
) -> None:
    """librdkafka with ``group.protocol=consumer`` (KIP-848): the broker assigns. Two
    consumers share a topic's partitions (the first gives half up before the second
    gets them), commit with their member epochs, and when one closes the other takes
    its partitions from the committed offsets: every record read, none twice within a
    consumer's partition, and the group's offsets where the consumers left off."""
    settings = {**KAFKA_LISTENER, "group.consumer.heartbeat.interval.ms": "300"}
    cluster = make_cluster(1, settings)
    await _topic(cluster, "kip848", 6)
    bootstrap = kafka_bootstrap(cluster)

    def consumer() -> RdConsumer:
        made = RdConsumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "new-protocol",
                "group.protocol": "consumer",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 200,
            }
        )
        made.subscribe(["kip848"])
        return made

    def produce(first: int, count: int) -> None:
        _rd_produce(bootstrap, "kip848", first, count)

    def run() -> tuple[dict[str, list[tuple[int, int, bytes]]], dict[str, set[int]], int, Any]:
        produce(0, 300)
        first = consumer()
        seen: dict[str, list[tuple[int, int, bytes]]] = {"first": [], "second": []}
        _rd_drain({"first": first}, seen, 300)  # alone: every partition
        second = consumer()
        owned: dict[str, set[int]] = {"first": set(), "second": set()}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (owned["first"] and owned["second"]):
            for name, c in (("first", first), ("second", second)):
                message = c.poll(0.05)
                if message is not None and message.error() is None:
                    seen[name].append((message.partition(), message.offset(), message.value()))
                owned[name] = {tp.partition for tp in c.assignment()}
        shared = {name: set(parts) for name, parts in owned.items()}
        described = _rd_described(bootstrap, "new-protocol")
        produce(300, 300)
        _rd_drain({"first": first, "second": second}, seen, 600)
        first.commit(asynchronous=False)
        first.close()  # leaves (epoch -1): its partitions go to the second
        produce(600, 300)
        _rd_drain({"second": second}, seen, 900)
        second.commit(asynchronous=False)
        assigned_at_end = len(second.assignment())
        second.close()
        return seen, shared, assigned_at_end, described

    seen, shared, assigned_at_end, described = await asyncio.to_thread(run)
    # Kafka's AdminClient describes the group with ConsumerGroupDescribe (API 69)
    assert described.type == ConsumerGroupType.CONSUMER
    assert described.partition_assignor == "uniform"
    assert sorted(len(parts) for parts in described.members.values()) == [3, 3]
    # the new protocol it was: the broker assigned (group epochs), no classic rebalance
    (broker,) = cluster.brokers.values()
    events = [json.loads(line).get("event") for line in broker.log_path.read_text().splitlines()]
    assert events.count("group.epoch_bumped") >= 2 and "group.member_left" in events
    assert "group.rebalancing" not in events
    assert shared["first"] and shared["second"]  # both had some at once...
    assert not shared["first"] & shared["second"]  # ...never the same partition
    assert shared["first"] | shared["second"] == set(range(6))
    assert assigned_at_end == 6  # the one left has them all
    values = [v for s in seen.values() for _, _, v in s]
    assert set(values) == {f"r{i}".encode() for i in range(900)}  # every record read
    for records in seen.values():
        _in_order_once_per_partition(records)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        committed = await admin.list_group_offsets("new-protocol")
        latest = {TopicPartition("kip848", p): OffsetSpec.latest() for p in range(6)}
        ends = await admin.list_offsets(latest)
    assert committed == {tp: at.offset for tp, at in ends.items()}


class _Described:
    """What librdkafka's AdminClient says of a group: its type, assignor, and each
    member's partitions (of its current assignment)."""

    def __init__(self, description: Any) -> None:
        self.type = description.type
        self.partition_assignor = description.partition_assignor
        self.members = {
            m.member_id: {tp.partition for tp in m.assignment.topic_partitions}
            for m in description.members
        }


def _rd_described(bootstrap: str, group: str) -> _Described:
    """The group as librdkafka's AdminClient describes it, once both members are Stable
    in it (each with its share), or as it was after 30 s."""
    admin = RdAdmin({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while True:
        (future,) = admin.describe_consumer_groups([group]).values()
        described = _Described(future.result(30))
        sizes = sorted(len(p) for p in described.members.values())
        if sizes == [3, 3] or time.monotonic() > deadline:
            return described
        time.sleep(0.1)


def _rd_produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    producer = RdProducer({"bootstrap.servers": bootstrap})
    for i in range(first, first + count):
        producer.produce(topic, f"r{i}".encode(), key=f"{i}".encode())
    assert producer.flush(30) == 0


def _rd_drain(
    consumers: dict[str, RdConsumer], seen: dict[str, list[tuple[int, int, bytes]]], want: int
) -> None:
    """Poll each consumer in turn until ``want`` records are read in all (or a minute)."""
    deadline = time.monotonic() + 60
    while sum(len(s) for s in seen.values()) < want and time.monotonic() < deadline:
        for name, c in consumers.items():
            message = c.poll(0.05)
            if message is not None and message.error() is None:
                seen[name].append((message.partition(), message.offset(), message.value()))


def _in_order_once_per_partition(records: list[tuple[int, int, bytes]]) -> None:
    """What one consumer read: each partition's offsets rising, none read twice."""
    by_partition: dict[int, list[int]] = {}
    for p, o, _ in records:
        by_partition.setdefault(p, []).append(o)
    for offsets in by_partition.values():
        assert offsets == sorted(set(offsets))


async def test_a_librdkafka_group_moves_to_the_new_protocol_and_back_one_consumer_at_a_time(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Kafka's online migration (a rolling restart onto ``group.protocol=consumer``): a
    classic librdkafka consumer reads a topic; a second one with the new protocol joins
    the same group (the group moves to the new protocol, the classic one stays in it and
    is assigned by the broker through JoinGroup and SyncGroup): they share the topic,
    never the same partition; the new one closes (the group goes back to the classic
    protocol) and the classic one takes everything again. Every record is read."""
    settings = {**KAFKA_LISTENER, "group.consumer.heartbeat.interval.ms": "300"}
    cluster = make_cluster(1, settings)
    await _topic(cluster, "migrate", 6)
    bootstrap = kafka_bootstrap(cluster)

    def consumer(protocol: str) -> RdConsumer:
        config = {
            "bootstrap.servers": bootstrap,
            "group.id": "migrating",
            "group.protocol": protocol,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 200,
        }
        if protocol == "classic":
            config |= {"heartbeat.interval.ms": 300, "session.timeout.ms": 6000}
        made = RdConsumer(config)
        made.subscribe(["migrate"])
        return made

    def drain(consumers: list[RdConsumer], seen: set[bytes], want: int) -> None:
        deadline = time.monotonic() + 60
        while len(seen) < want and time.monotonic() < deadline:
            for c in consumers:
                message = c.poll(0.05)
                if message is not None and message.error() is None:
                    seen.add(message.value())

    def run() -> tuple[set[bytes], set[int], set[int], int]:
        seen: set[bytes] = set()
        _rd_produce(bootstrap, "migrate", 0, 300)
        classic = consumer("classic")
        drain([classic], seen, 300)
        new = consumer("consumer")
        owned: dict[str, set[int]] = {"classic": set(), "new": set()}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            owned["classic"] and owned["new"] and owned["classic"] | owned["new"] == set(range(6))
        ):
            for name, c in (("classic", classic), ("new", new)):
                message = c.poll(0.05)
                if message is not None and message.error() is None:
                    seen.add(message.value())
                owned[name] = {tp.partition for tp in c.assignment()}
                assert not owned["classic"] & owned["new"], owned  # never both at once
        _rd_produce(bootstrap, "migrate", 300, 300)
        drain([classic, new], seen, 600)
        new.close()  # the last member of the new protocol leaves: back to classic
        _rd_produce(bootstrap, "migrate", 600, 300)
        drain([classic], seen, 900)
        at_end = len(classic.assignment())
        classic.close()
        return seen, owned["classic"], owned["new"], at_end

    seen, classic_part, new_part, at_end = await asyncio.to_thread(run)
    assert classic_part and new_part and classic_part | new_part == set(range(6))
    assert seen == {f"r{i}".encode() for i in range(900)}  # every record read
    assert at_end == 6  # the classic consumer has the topic again
    (broker,) = cluster.brokers.values()
    events = [json.loads(line).get("event") for line in broker.log_path.read_text().splitlines()]
    assert "group.upgraded" in events and "group.downgraded" in events
