"""Topic configs changed on a running cluster (real ZooKeeper, real broker processes):
every broker applies them live, without a restart.

- retention.ms lowered with `headwater topics alter`: the log start offset moves on the
  leader and both followers (segments gone from disk, checkpointed), and a consumer at
  offset 0 is moved by its auto_offset_reset; `topics describe` shows the overrides,
  DescribeConfigs their sources; `--delete-config` returns to the default;
- retention.bytes with small segments, through Admin.incremental_alter_configs;
- message.timestamp.type=LogAppendTime and compression.type=zstd on the leader's append:
  consumers see the broker's time, every replica stores zstd batches with valid CRCs;
- a bad value, an unknown name or topic is refused with the reason, changes nothing, and
  the brokers serve on;
- min.insync.replicas raised live: acks=all gets NOT_ENOUGH_REPLICAS with a broker down,
  and works again when the override is deleted;
- unclean.leader.election.enable turned on live: an offline partition gets a leader at
  once, not at the next broker change.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import (
    Admin,
    AlterConfigOp,
    ConfigResource,
    Consumer,
    NewTopic,
    Producer,
    RecordMetadata,
    TopicPartition,
)
from client.localcluster import ZooKeeperServer
from protocol.apis import ApiKey, CreatableReplicaAssignment, CreatableTopic, CreateTopicsRequest
from protocol.errors import (
    InvalidConfigError,
    InvalidTimestampError,
    NotEnoughReplicasError,
    OffsetOutOfRangeError,
)
from protocol.records import decode_batches
from protocol.records.batch import LOG_APPEND_TIME
from protocol.records.compression import CODECS
from tests.integration.conftest import Cluster, module_cluster
from tests.integration.conftest import until as _until
from tests.integration.test_topics import _metadata, _ready_cluster, _request

pytestmark = pytest.mark.timeout(120)

SETTINGS = {
    "log.retention.check.interval.ms": "200",
    # a broker default set in the broker's own config: DescribeConfigs says STATIC_BROKER_CONFIG
    "log.cleaner.delete.retention.ms": "3600000",
    "replica.lag.time.max.ms": "2000",
}
_HEADWATER = Path(sys.executable).with_name("headwater")
COMMAND = [str(_HEADWATER)] if _HEADWATER.exists() else [sys.executable, "-m", "client.cli"]


@pytest.fixture(scope="module")
def shared(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three brokers for the tests that keep every broker up, in a chroot of their own."""
    yield from module_cluster(zookeeper, tmp_path_factory.mktemp("configs"), "configs", SETTINGS)


# --- helpers ---------------------------------------------------------------------------


async def _create(bootstrap: str, configs: dict[str, str], replicas: int = 3) -> str:
    name = f"c-{uuid.uuid4().hex[:10]}"
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics([NewTopic(name, 1, replicas, configs)])
    return name


async def _produce(bootstrap: str, topic: str, count: int) -> list[RecordMetadata]:
    # batches under the topics' small segment.bytes (an append over it is refused)
    async with Producer(
        bootstrap_servers=bootstrap, acks="all", batch_size=512, linger_ms=2
    ) as producer:
        futures = [await producer.send(topic, b"v%05d" % i + b"." * 30) for i in range(count)]
        return [await f for f in futures]


def _log_dir(cluster: Cluster, broker_id: int, topic: str) -> Path:
    return cluster.brokers[broker_id].directory / "data" / f"{topic}-0"


def _segments(cluster: Cluster, topic: str) -> dict[int, list[Path]]:
    """Each broker's live segment files of ``topic``-0 (not the ones renamed .deleted)."""
    return {
        b: sorted(_log_dir(cluster, b, topic).glob("*.log"), key=lambda p: int(p.stem))
        for b in cluster.brokers
    }


def _checkpointed_starts(cluster: Cluster, topic: str) -> dict[int, int]:
    """Each broker's log-start-offset-checkpoint entry for ``topic``-0 (0 if none)."""
    starts = {}
    for b, broker in cluster.brokers.items():
        path = broker.directory / "data" / "log-start-offset-checkpoint"
        lines = path.read_text().splitlines()[2:] if path.exists() else []
        found = [int(o) for t, p, o in (line.split() for line in lines) if (t, p) == (topic, "0")]
        starts[b] = found[0] if found else 0
    return starts


async def _earliest(bootstrap: str, topic: str) -> int:
    tp = TopicPartition(topic, 0)
    async with Consumer(bootstrap_servers=bootstrap) as consumer:
        return int((await consumer.beginning_offsets([tp]))[tp])


async def _read_from_zero(bootstrap: str, topic: str, reset: str) -> list[int]:
    """Offsets a consumer positioned at 0 reads (until it reaches the end)."""
    tp = TopicPartition(topic, 0)
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset=reset) as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        offsets: list[int] = []
        while not offsets or offsets[-1] < end - 1:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1_000), 15)
            offsets += [r.offset for r in batch.get(tp, [])]
        return offsets


async def _headwater(bootstrap: str, *args: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEADWATER_BOOTSTRAP_SERVERS"}
    done = await asyncio.to_thread(
        subprocess.run,
        [*COMMAND, "--bootstrap-server", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == rc, done
    if rc == 1:  # an error the user can act on: one line
        assert done.stderr.startswith("headwater: ") and done.stderr.count("\n") == 1, done
    return done


async def _sources(bootstrap: str, topic: str) -> dict[str, tuple[str | None, str]]:
    async with Admin(bootstrap_servers=bootstrap) as admin:
        entries = await admin.describe_configs(topic)
    return {name: (e.value, e.source) for name, e in entries.items()}


# --- retention --------------------------------------------------------------------------


async def test_retention_ms_altered_live_trims_leader_and_followers(shared: Cluster) -> None:
    bootstrap = shared.bootstrap
    topic = await _create(bootstrap, {"segment.bytes": "2048"})
    sent = await _produce(bootstrap, topic, 300)
    assert [m.offset for m in sent] == list(range(300))
    assert all(len(files) > 3 for files in (await _segments_when_replicated(shared, topic)))

    altered = await _headwater(bootstrap, "topics", "alter", topic, "--config", "retention.ms=1")
    assert altered.stdout == f"Altered topic {topic}: set retention.ms=1.\n"

    # every replica deletes its expired segments: the leader by its own retention, the
    # followers by theirs and by the leader's log start in each fetch response
    trimmed = await _until(
        lambda: _segments(shared, topic), lambda s: all(int(f[0].stem) > 0 for f in s.values())
    )
    await _until(lambda: _checkpointed_starts(shared, topic), lambda s: min(s.values()) > 0)
    start = await _earliest(bootstrap, topic)
    assert 0 < start < 300
    assert all(int(files[0].stem) <= start for files in trimmed.values())

    # a consumer at offset 0 is out of range: "earliest" moves it to the log start ...
    assert await _read_from_zero(bootstrap, topic, "earliest") == list(range(start, 300))
    # ... and "none" says so
    with pytest.raises(OffsetOutOfRangeError):
        await _read_from_zero(bootstrap, topic, "none")

    described = (await _headwater(bootstrap, "topics", "describe", topic)).stdout.splitlines()
    assert re.fullmatch(
        rf"Topic: {topic}\tTopicId: [\w-]{{22}}\tConfigs: retention.ms=1,segment.bytes=2048",
        described[-1],
    )
    sources = await _sources(bootstrap, topic)
    assert sources["retention.ms"] == ("1", "DYNAMIC_TOPIC_CONFIG")
    assert sources["delete.retention.ms"] == ("3600000", "STATIC_BROKER_CONFIG")
    assert sources["retention.bytes"] == ("-1", "DEFAULT_CONFIG")
    assert sources["cleanup.policy"] == ("delete", "DEFAULT_CONFIG")
    own = (await _headwater(bootstrap, "topics", "configs", topic)).stdout.splitlines()
    assert own == [
        "CONFIG\tVALUE\tSOURCE\tSYNONYMS",
        "retention.ms\t1\tDYNAMIC_TOPIC_CONFIG\tDEFAULT_CONFIG:log.retention.ms=604800000",
        "segment.bytes\t2048\tDYNAMIC_TOPIC_CONFIG\tDEFAULT_CONFIG:log.segment.bytes=1073741824",
    ]
    every = (await _headwater(bootstrap, "topics", "configs", topic, "--all")).stdout
    assert (
        "delete.retention.ms\t3600000\tSTATIC_BROKER_CONFIG\t"
        "DEFAULT_CONFIG:log.cleaner.delete.retention.ms=86400000"
    ) in every.splitlines()

    removed = await _headwater(
        bootstrap, "topics", "alter", topic, "--delete-config", "retention.ms"
    )
    assert removed.stdout == f"Altered topic {topic}: deleted retention.ms.\n"
    assert (await _sources(bootstrap, topic))["retention.ms"] == (
        str(7 * 24 * 3600 * 1000),
        "DEFAULT_CONFIG",
    )
    described = (await _headwater(bootstrap, "topics", "describe", topic)).stdout.splitlines()
    assert re.fullmatch(
        rf"Topic: {topic}\tTopicId: [\w-]{{22}}\tConfigs: segment.bytes=2048", described[-1]
    )


async def _segments_when_replicated(cluster: Cluster, topic: str) -> list[list[Path]]:
    """Every replica's segments, once each holds all 300 records' segments."""
    segments = await _until(
        lambda: _segments(cluster, topic),
        lambda s: len({len(files) for files in s.values()}) == 1,
    )
    return list(segments.values())


async def test_retention_bytes_through_the_admin_client(shared: Cluster) -> None:
    bootstrap = shared.bootstrap
    topic = await _create(bootstrap, {"segment.bytes": "2048"})
    await _produce(bootstrap, topic, 300)
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.incremental_alter_configs(
            {ConfigResource("topic", topic): [AlterConfigOp("retention.bytes", "4096")]}
        )

    def sizes() -> dict[int, tuple[int, int]] | None:
        try:
            return {
                b: (sum(f.stat().st_size for f in files), int(files[0].stem))
                for b, files in _segments(shared, topic).items()
            }
        except FileNotFoundError:
            return None  # retention removed a segment between the listing and its stat

    # whole segments go while what is left without them is still over retention.bytes
    await _until(
        sizes,
        lambda s: (
            s is not None and all(size <= 4096 + 2048 and first > 0 for size, first in s.values())
        ),
    )
    start = await _earliest(bootstrap, topic)
    assert await _read_from_zero(bootstrap, topic, "earliest") == list(range(start, 300))
    assert (await _sources(bootstrap, topic))["retention.bytes"] == (
        "4096",
        "DYNAMIC_TOPIC_CONFIG",
    )


# --- the leader's append ------------------------------------------------------------------


async def test_log_append_time_and_compression_type_apply_on_the_leader(shared: Cluster) -> None:
    bootstrap = shared.bootstrap
    topic = await _create(bootstrap, {})
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.alter_configs(
            [
                ConfigResource(
                    "topic",
                    topic,
                    {"message.timestamp.type": "LogAppendTime", "compression.type": "zstd"},
                )
            ]
        )
    async with Producer(
        bootstrap_servers=bootstrap, acks="all", compression_type="gzip"
    ) as producer:
        before = time.time_ns() // 1_000_000

        # in force on the leader as the admin returns (it waits for every broker)
        meta = await producer.send_and_wait(topic, b"x" * 200, timestamp_ms=1_000)
    assert before <= meta.timestamp <= time.time_ns() // 1_000_000
    tp = TopicPartition(topic, 0)
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        (record,) = (await asyncio.wait_for(consumer.getmany(timeout_ms=5_000), 15))[tp][:1]
    assert (record.offset, record.timestamp, record.value) == (
        meta.offset,
        meta.timestamp,
        b"x" * 200,
    )
    printed = await _headwater(
        bootstrap,
        *("consume", topic, "--partition", "0", "--offset", str(meta.offset)),
        *("--max-messages", "1", "--property", "print.timestamp=true"),
    )
    assert printed.stdout == f"LogAppendTime:{meta.timestamp}\t{'x' * 200}\n"  # the topic's

    def last_batches() -> list[Any]:
        found = []
        for files in _segments(shared, topic).values():
            data = b"".join(f.read_bytes() for f in files)
            batches = list(decode_batches(data))  # every CRC checked
            found.append(
                batches[-1] if batches and batches[-1].base_offset == meta.offset else None
            )
        return found

    stored = await _until(last_batches, lambda found: None not in found)
    for batch in stored:  # the same bytes on every replica
        assert batch.compression == "zstd" and batch.header.compression == CODECS["zstd"]
        assert batch.timestamp_type == LOG_APPEND_TIME
        assert [(r.timestamp, r.value) for r in batch.records] == [(meta.timestamp, b"x" * 200)]


async def test_timestamp_bounds_and_compression_levels_of_kafka_4(shared: Cluster) -> None:
    bootstrap = shared.bootstrap
    topic = await _create(
        bootstrap,
        {
            "message.timestamp.before.max.ms": "86400000",
            "message.timestamp.after.max.ms": "3600000",
            "compression.type": "gzip",
            "compression.gzip.level": "1",
        },
    )
    hour = 3_600_000
    async with Producer(bootstrap_servers=bootstrap, acks="all") as producer:
        now = time.time_ns() // 1_000_000
        with pytest.raises(InvalidTimestampError, match=r"after\.max\.ms=3600000 allows"):
            await producer.send_and_wait(topic, b"later", timestamp_ms=now + 2 * hour)
        with pytest.raises(InvalidTimestampError, match=r"before\.max\.ms=86400000 allows"):
            await producer.send_and_wait(topic, b"old", timestamp_ms=now - 25 * hour)
        # the same producer goes on, and nothing of the refused records was written
        first = await producer.send_and_wait(topic, b"now", timestamp_ms=now)
        within = await producer.send_and_wait(topic, b"soon", timestamp_ms=now + hour // 2)
    assert (first.offset, within.offset) == (0, 1)
    tp = TopicPartition(topic, 0)
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        records = (await asyncio.wait_for(consumer.getmany(timeout_ms=5_000), 15))[tp]
    assert [(r.offset, r.value, r.timestamp) for r in records] == [
        (0, b"now", now),
        (1, b"soon", now + hour // 2),
    ]
    sources = await _sources(bootstrap, topic)
    assert sources["compression.gzip.level"] == ("1", "DYNAMIC_TOPIC_CONFIG")
    assert sources["segment.jitter.ms"] == ("0", "DEFAULT_CONFIG")
    assert sources["remote.storage.enable"] == ("false", "DEFAULT_CONFIG")
    assert sources["local.retention.ms"] == ("-2", "DEFAULT_CONFIG")

    def stored_codecs() -> list[int]:
        found = []
        for files in _segments(shared, topic).values():
            data = b"".join(f.read_bytes() for f in files)
            found += [b.header.compression for b in decode_batches(data)]
        return found

    # recompressed by the leader (the producer sent them uncompressed), as every replica has
    assert await _until(stored_codecs, lambda codecs: len(codecs) == 6) == [CODECS["gzip"]] * 6
    refused = await _headwater(
        bootstrap,
        "topics",
        "create",
        f"p-{uuid.uuid4().hex[:8]}",
        "--config",
        "preallocate=true",
        rc=1,
    )
    assert "preallocate=true is invalid: it must be false" in refused.stderr
    # a broker default, changed live: a topic without its own bound follows it
    plain = await _create(bootstrap, {})
    every_broker = ConfigResource("broker", "")
    async with Admin(bootstrap_servers=bootstrap) as admin:
        bound = [AlterConfigOp("log.message.timestamp.after.max.ms", "60000")]
        await admin.incremental_alter_configs({every_broker: bound})
        try:
            async with Producer(bootstrap_servers=bootstrap, acks="all") as producer:
                now = time.time_ns() // 1_000_000
                with pytest.raises(InvalidTimestampError, match=r"after\.max\.ms=60000"):
                    await producer.send_and_wait(plain, b"later", timestamp_ms=now + hour)
        finally:
            unbound = [AlterConfigOp("log.message.timestamp.after.max.ms", op_type="DELETE")]
            await admin.incremental_alter_configs({every_broker: unbound})
    async with Producer(bootstrap_servers=bootstrap, acks="all") as producer:
        later = time.time_ns() // 1_000_000 + hour // 2  # Kafka 4.0's default: an hour
        assert (await producer.send_and_wait(plain, b"later", timestamp_ms=later)).offset == 0


# --- refusals -----------------------------------------------------------------------------


async def test_bad_changes_are_refused_with_the_reason_and_change_nothing(
    shared: Cluster,
) -> None:
    bootstrap = shared.bootstrap
    topic = await _create(bootstrap, {"retention.ms": "60000"})
    bad = await _headwater(bootstrap, "topics", "alter", topic, "--config", "retention.ms=-5", rc=1)
    assert bad.stderr == (
        f"headwater: topic {topic!r}: retention.ms=-5 is invalid: it must be -1 (unlimited) "
        "or more (INVALID_CONFIG)\n"
    )
    unknown = await _headwater(bootstrap, "topics", "alter", topic, "--config", "retention=1", rc=1)
    assert "unknown topic config 'retention'" in unknown.stderr
    assert "(INVALID_CONFIG)" in unknown.stderr
    missing = await _headwater(bootstrap, "topics", "alter", "nope", "--config", "flush.ms=1", rc=1)
    assert "topic 'nope' does not exist" in missing.stderr
    assert "(UNKNOWN_TOPIC_OR_PARTITION)" in missing.stderr
    await _headwater(bootstrap, "topics", "alter", topic, rc=2)  # nothing to change: usage
    checked = await _headwater(
        bootstrap, "topics", "alter", topic, "--config", "retention.ms=1", "--validate-only"
    )
    assert checked.stdout.startswith("Valid change of topic")
    async with Admin(bootstrap_servers=bootstrap) as admin:
        with pytest.raises(InvalidConfigError, match=r"num\.partitions cannot be changed on a"):
            await admin.alter_configs([ConfigResource("broker", "1", {"num.partitions": "3"})])
        with pytest.raises(InvalidConfigError, match="has no value"):
            await admin.incremental_alter_configs(
                {ConfigResource("topic", topic): [AlterConfigOp("segment.ms")]}
            )
    assert (await _sources(bootstrap, topic))["retention.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG")
    sent = await _produce(bootstrap, topic, 3)  # every broker serves on
    assert await _read_from_zero(bootstrap, topic, "earliest") == [m.offset for m in sent]


# --- replication settings -------------------------------------------------------------------


async def test_min_insync_replicas_raised_live(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(3, SETTINGS)
    bootstrap = cluster.bootstrap
    topic = await _create(bootstrap, {})
    ports = await _ready_cluster(cluster)
    meta = await _until(lambda: _metadata(ports[1], [topic]), lambda m: _isr_size(m) == 3)
    leader = meta.topics[0].partitions[0].leader_id
    follower = next(b for b in cluster.brokers if b != leader)
    cluster.brokers[follower].kill()
    up = ",".join(cluster.brokers[b].bootstrap for b in cluster.brokers if b != follower)
    # the leader's own metadata may not have the topic yet (each broker's cache is updated
    # by the controller in its own time): not found is "not yet", not a failure
    await _until(lambda: _metadata(ports[leader], [topic]), lambda m: _isr_size(m) == 2)
    async with Producer(bootstrap_servers=up, acks="all", retries=0) as producer:
        await producer.send_and_wait(topic, b"two in sync are enough for the default of 1")
        await _headwater(up, "topics", "alter", topic, "--config", "min.insync.replicas=3")

        # in force on the leader as the command returns (the admin waits for every broker
        # it can reach; the one killed is not waited for)
        with pytest.raises(NotEnoughReplicasError, match=r"min\.insync\.replicas=3"):
            await producer.send_and_wait(topic, b"needs three")
        async with Producer(bootstrap_servers=up, acks=1) as acks_1:
            await acks_1.send_and_wait(topic, b"acks=1 is not held back")
        await _headwater(up, "topics", "alter", topic, "--delete-config", "min.insync.replicas")
        assert await _accepted(producer, topic)


def _isr_size(meta: Any) -> int:
    """The ISR size of the topic's partition 0; -1 while this broker does not know it."""
    partitions = meta.topics[0].partitions
    return len(partitions[0].isr_nodes) if partitions else -1


async def _accepted(producer: Producer, topic: str) -> bool:
    try:
        await producer.send_and_wait(topic, b"back to the default")
    except NotEnoughReplicasError:
        return False
    return True


async def offline_with_a_stale_replica(cluster: Cluster) -> dict[int, int]:
    """Topic ``unclean``'s one partition on brokers 1 and 2, left offline with only the
    out-of-sync replica (2) alive, which may not lead while unclean election is off;
    returns broker id -> port."""
    ports = await _ready_cluster(cluster)
    request = CreateTopicsRequest(
        topics=[
            CreatableTopic(
                name="unclean",
                assignments=[CreatableReplicaAssignment(partition_index=0, broker_ids=[1, 2])],
            )
        ]
    )
    assert (await _request(ports[3], ApiKey.CREATE_TOPICS, request)).topics[0].error_code == 0
    state = unclean_state
    await _until(lambda: _metadata(ports[3], ["unclean"]), lambda m: state(m).isr_nodes == [1, 2])
    cluster.brokers[2].kill()  # the follower goes: the ISR is [1]
    await _until(lambda: _metadata(ports[3], ["unclean"]), lambda m: state(m).isr_nodes == [1])
    cluster.brokers[1].kill()  # the last in-sync replica goes: offline
    await _until(lambda: _metadata(ports[3], ["unclean"]), lambda m: state(m).leader_id == -1)
    cluster.start_broker(2)  # out of sync: it may not lead while unclean election is off
    await _until(
        lambda: _metadata(ports[3], ["unclean"]),
        lambda m: 2 in {b.node_id for b in m.brokers},
    )
    assert state(await _metadata(ports[3], ["unclean"])).leader_id == -1
    return ports


def unclean_state(m: Any) -> Any:
    return m.topics[0].partitions[0]


async def test_unclean_election_enabled_live_elects_at_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, SETTINGS)
    ports = await offline_with_a_stale_replica(cluster)
    state = unclean_state
    bootstrap = f"127.0.0.1:{ports[3]}"
    await _headwater(
        bootstrap, "topics", "alter", "unclean", "--config", "unclean.leader.election.enable=true"
    )
    # no broker comes or goes: the config change itself makes the controller elect
    elected = await _until(
        lambda: _metadata(ports[3], ["unclean"]), lambda m: state(m).leader_id == 2
    )
    assert state(elected).isr_nodes == [2]


async def test_unclean_election_on_demand_needs_no_config_change(
    make_cluster: Callable[..., Cluster],
) -> None:
    """KIP-460: `topics elect-leaders --election-type unclean` gives an offline partition
    a leader from its live, out-of-sync replica, while the topic's config still forbids
    unclean election; a partition with a leader is left alone; with no replica alive the
    operator is told so, exit code 1."""
    cluster = make_cluster(3, SETTINGS)
    ports = await offline_with_a_stale_replica(cluster)
    bootstrap = f"127.0.0.1:{ports[3]}"
    state = unclean_state
    elect = ("topics", "elect-leaders", "unclean")
    preferred = await _headwater(bootstrap, *elect)
    assert "0 of 1 partitions led by their preferred replica" in preferred.stdout
    done = await _headwater(bootstrap, *elect, "--election-type", "unclean")
    assert "1 of 1 partitions without a leader got one by unclean election" in done.stdout
    elected = await _until(
        lambda: _metadata(ports[3], ["unclean"]), lambda m: state(m).leader_id == 2
    )
    assert state(elected).isr_nodes == [2]
    assert (await _sources(bootstrap, "unclean"))["unclean.leader.election.enable"] == (
        "false",
        "DEFAULT_CONFIG",
    )
    again = await _headwater(bootstrap, *elect, "--election-type", "unclean")
    assert "0 of 0 partitions without a leader got one by unclean election (1 had a leader)" in (
        again.stdout
    )
    cluster.brokers[2].kill()  # its last replica gone: nobody to elect
    await _until(lambda: _metadata(ports[3], ["unclean"]), lambda m: state(m).leader_id == -1)
    none = await _headwater(bootstrap, *elect, "--election-type", "unclean", rc=1)
    assert "none of its replicas [1, 2] is alive (ELIGIBLE_LEADERS_NOT_AVAILABLE)" in none.stderr
