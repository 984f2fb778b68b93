"""A broker started with a Kafka broker's server.properties (real ZooKeeper, a real
broker process): Kafka's sample file, with its hours and its thread pools, serves
produce and consume; the settings it ignores are logged, each with why; what the file
says is described as the broker's static config."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from client import Admin, ConfigResource, Consumer, NewTopic, Producer, TopicPartition
from client.localcluster import BrokerProcess, ZooKeeperServer
from tests.integration.conftest import new_chroot
from tests.unit.test_kafka_properties import KAFKA_SAMPLE

pytestmark = pytest.mark.timeout(90)


async def test_a_broker_runs_on_kafkas_sample_server_properties(
    zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    config = tmp_path / "server.properties"
    config.write_text(
        KAFKA_SAMPLE.replace("log.retention.hours=168", "log.retention.hours=2")
        + "auto.create.topics.enable=false\n"
    )
    # where it listens, its ZooKeeper and data: this test's own, over the file's (--set)
    broker = BrokerProcess(
        1,
        tmp_path / "broker-1",
        new_chroot(zookeeper, "properties"),
        settings={"zookeeper.session.timeout.ms": "2000"},
        config_file=config,
    )
    broker.start()
    try:
        async with Admin(bootstrap_servers=broker.bootstrap) as admin:
            await admin.create_topics([NewTopic("orders", 1, 1)])
            entries = await admin.describe_configs(ConfigResource("broker", "1"))
        retention = entries["log.retention.ms"]
        assert (retention.value, retention.source) == ("7200000", "STATIC_BROKER_CONFIG")
        assert entries["auto.create.topics.enable"].value == "false"
        async with Producer(bootstrap_servers=broker.bootstrap, acks="all") as producer:
            sent = [await producer.send_and_wait("orders", b"%d" % i) for i in range(5)]
        tp = TopicPartition("orders", 0)
        async with Consumer(bootstrap_servers=broker.bootstrap) as consumer:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            got = (await asyncio.wait_for(consumer.getmany(timeout_ms=5_000), 15))[tp]
        assert [(r.offset, r.value) for r in got] == [
            (m.offset, b"%d" % i) for i, m in enumerate(sent)
        ]
    finally:
        broker.kill()
    events = [json.loads(line) for line in broker.log_path.read_text().splitlines() if line]
    ignored = [e["setting"] for e in events if e.get("event") == "broker.setting_ignored"]
    assert [line.partition("=")[0] for line in ignored] == [
        "num.network.threads",
        "num.io.threads",
        "socket.send.buffer.bytes",
        "socket.receive.buffer.bytes",
        "num.recovery.threads.per.data.dir",
    ]
    assert all(line.endswith(f"(from file {config})") for line in ignored)
