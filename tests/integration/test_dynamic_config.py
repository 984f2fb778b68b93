"""Topic config changes against a real ZooKeeper, in process: the admin's write (znode and
change notification in one multi, compare-and-set), and a broker's TopicConfigs applying
it live to its logs; refusals leave the znode alone. No broker processes: the whole
cluster path is in test_topic_configs.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from broker import dynamic_config
from broker.admin import TopicAdmin
from broker.config import BrokerConfig, load_config
from broker.dynamic_config import TopicConfigs
from broker.log import Log, LogConfig
from broker.log.manager import LogManager
from broker.metadata import MetadataCache
from broker.zk import (
    TopicAssignment,
    ZkBridge,
    ZkError,
    config_change_json,
    paths,
    topic_config_from_json,
    topic_config_json,
)
from client.localcluster import ZooKeeperServer
from protocol.apis import (
    AlterableConfig,
    AlterConfigOp,
    AlterConfigsRequest,
    AlterConfigsResource,
    ConfigResourceType,
    IncrementalAlterableConfig,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResource,
)
from protocol.errors import (
    InvalidConfigError,
    InvalidRequestError,
    UnknownTopicOrPartitionError,
)
from protocol.records import encode_batch

pytestmark = pytest.mark.timeout(60)

TOPIC = ConfigResourceType.TOPIC


@pytest.fixture
async def bridge(zookeeper: ZooKeeperServer, chroot: str) -> AsyncIterator[ZkBridge]:
    bridge = ZkBridge(zookeeper.connect_string + chroot)
    await bridge.start(timeout_s=10)
    yield bridge
    await bridge.stop()


@pytest.fixture
def broker_config() -> BrokerConfig:
    return load_config(env={}, overrides=["broker.id=1", "log.retention.ms=86400000"])


@pytest.fixture
def logs(tmp_path: Path, broker_config: BrokerConfig) -> LogManager:
    manager = LogManager(
        [tmp_path], broker_id=1, cluster_id="c", default_config=broker_config.log_config()
    )
    manager.startup()
    return manager


async def _topic(bridge: ZkBridge, name: str, overrides: dict[str, str] | None = None) -> None:
    await bridge.create(paths.topic_config(name), topic_config_json(overrides or {}), makepath=True)
    await bridge.create(paths.topic(name), TopicAssignment(name, {0: [1]}).to_json(), makepath=True)


async def _until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.02)


def _set(name: str, value: str | None, op: int = AlterConfigOp.SET) -> IncrementalAlterableConfig:
    return IncrementalAlterableConfig(name=name, config_operation=op, value=value)


async def _incremental(
    admin: TopicAdmin,
    topic: str,
    *ops: IncrementalAlterableConfig,
    kind: int = TOPIC,
    validate_only: bool = False,
) -> tuple[int, str | None]:
    request = IncrementalAlterConfigsRequest(
        resources=[
            IncrementalAlterConfigsResource(
                resource_type=kind, resource_name=topic, configs=list(ops)
            )
        ],
        validate_only=validate_only,
    )
    (answer,) = (await admin.incremental_alter_configs(request)).responses
    return answer.error_code, answer.error_message


async def _overrides(bridge: ZkBridge, topic: str) -> dict[str, str]:
    data, _ = await bridge.get(paths.topic_config(topic))
    return topic_config_from_json(topic, data)


async def test_a_change_reaches_every_log_of_the_topic_live(
    bridge: ZkBridge, logs: LogManager, broker_config: BrokerConfig
) -> None:
    await _topic(bridge, "orders", {"segment.bytes": "1048576"})
    await _topic(bridge, "other")
    on_disk = [logs.get_or_create_log("orders", p) for p in (0, 1)]
    other = logs.get_or_create_log("other", 0)
    configs = TopicConfigs(bridge, broker_config.log_config(), logs, broker_id=1)
    heard: list[tuple[str, LogConfig]] = []
    configs.on_change(lambda topic, config: heard.append((topic, config)))
    await configs.start()
    try:
        # a start gives the logs on disk their topic's overrides
        assert all(log.config.segment_bytes == 1048576 for log in on_disk)
        admin = TopicAdmin(bridge, broker_config, MetadataCache())
        ops = (_set("retention.ms", "1000"), _set("cleanup.policy", "compact,delete"))
        assert await _incremental(admin, "orders", *ops) == (0, None)
        await _until(lambda: all(log.config.retention_ms == 1000 for log in on_disk))
        assert all(log.config.compact and log.config.delete for log in on_disk)
        assert on_disk[0].config.segment_bytes == 1048576  # the other override stays
        assert other.config == broker_config.log_config()  # other topics untouched
        assert heard and heard[-1][0] == "orders"
        # back to the default; the broker's own default (a day), not Kafka's (a week)
        delete = _set("retention.ms", None, AlterConfigOp.DELETE)
        assert await _incremental(admin, "orders", delete) == (0, None)
        await _until(lambda: on_disk[0].config.retention_ms == 86_400_000)
        assert await configs.load("orders") == on_disk[1].config
    finally:
        await configs.stop()


async def test_alter_configs_replaces_and_refusals_change_nothing(
    bridge: ZkBridge, broker_config: BrokerConfig
) -> None:
    await _topic(bridge, "t", {"retention.ms": "5000", "segment.ms": "60000"})
    admin = TopicAdmin(bridge, broker_config, MetadataCache())
    request = AlterConfigsRequest(
        resources=[
            AlterConfigsResource(
                resource_type=TOPIC,
                resource_name="t",
                configs=[AlterableConfig(name="flush.ms", value="100")],
            )
        ]
    )
    (answer,) = (await admin.alter_configs(request)).responses
    assert answer.error_code == 0
    assert await _overrides(bridge, "t") == {"flush.ms": "100"}  # the whole set replaced

    code, message = await _incremental(admin, "t", _set("retention.ms", "-7"))
    assert code == InvalidConfigError.code
    assert message == "topic 't': retention.ms=-7 is invalid: it must be -1 (unlimited) or more"
    code, message = await _incremental(admin, "t", _set("retention.msec", "1"))
    assert code == InvalidConfigError.code and "unknown topic config 'retention.msec'" in str(
        message
    )
    code, _ = await _incremental(admin, "nope", _set("retention.ms", "1"))
    assert code == UnknownTopicOrPartitionError.code
    code, message = await _incremental(admin, "1", _set("retention.ms", "1"), kind=4)
    assert code == InvalidConfigError.code  # a broker's config: its own names
    assert "unknown broker config 'retention.ms' (broker 1); did you mean log.retention.ms" in (
        str(message)
    )
    code, message = await _incremental(admin, "2", _set("log.retention.ms", "1"), kind=4)
    assert code == InvalidRequestError.code and "send broker 2's config changes" in str(message)
    assert await _incremental(admin, "t", _set("retention.ms", "1"), validate_only=True) == (
        0,
        None,
    )
    assert await _overrides(bridge, "t") == {"flush.ms": "100"}  # none of that was written


async def test_concurrent_incremental_changes_lose_nothing(
    bridge: ZkBridge, broker_config: BrokerConfig
) -> None:
    await _topic(bridge, "t")
    admins = [TopicAdmin(bridge, broker_config, MetadataCache()) for _ in range(2)]
    names = ["retention.ms", "segment.ms", "flush.ms", "delete.retention.ms", "segment.bytes"]
    results = await asyncio.gather(
        *(
            _incremental(admins[i % 2], "t", _set(name, str(100_000 + i)))
            for i, name in enumerate(names)
        )
    )
    assert all(code == 0 for code, _ in results)
    # compare-and-set on the znode version: every change is there
    assert await _overrides(bridge, "t") == {n: str(100_000 + i) for i, n in enumerate(names)}
    notices = await bridge.get_children(paths.CONFIG_CHANGES)
    assert len(notices) == len(names)  # one notification per change, written with it


async def test_old_notifications_are_purged_and_bad_ones_skipped(
    bridge: ZkBridge,
    logs: LogManager,
    broker_config: BrokerConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _topic(bridge, "t")
    log = logs.get_or_create_log("t", 0)
    configs = TopicConfigs(bridge, broker_config.log_config(), logs, broker_id=1)
    await configs.start()
    try:
        monkeypatch.setattr(dynamic_config, "PURGE_AFTER_MS", 0)
        prefix = f"{paths.CONFIG_CHANGES}/{paths.CONFIG_CHANGE_PREFIX}"
        await bridge.create(prefix, b"not json", sequence=True)
        await bridge.create(prefix, config_change_json("gone-topic"), sequence=True)
        await bridge.set(paths.topic_config("t"), topic_config_json({"flush.ms": "7"}))
        await bridge.create(prefix, config_change_json("t"), sequence=True)
        await _until(lambda: log.config.flush_ms == 7)  # the junk before it did not stop it
        for _ in range(200):
            if not await bridge.get_children(paths.CONFIG_CHANGES):
                break
            await asyncio.sleep(0.02)
        assert await bridge.get_children(paths.CONFIG_CHANGES) == []
    finally:
        await configs.stop()


async def test_an_older_read_never_replaces_a_newer_one(
    bridge: ZkBridge, logs: LogManager, broker_config: BrokerConfig
) -> None:
    configs = TopicConfigs(bridge, broker_config.log_config(), logs, broker_id=1)
    newer = configs._keep("t", 20, {"retention.ms": "2"})
    assert configs._keep("t", 10, {"retention.ms": "1"}) == newer  # finished later, read earlier
    assert configs._keep("t", 30, {"retention.ms": "3"}).retention_ms == 3
    assert configs._keep("t", 0, {}) == configs.defaults  # the znode is gone: the topic is


# --- a topic whose config cannot be read (ZooKeeper failing) ---------------------------------


class _FailingReads:
    """Reads of the named topics' config znodes fail as if ZooKeeper were unreachable,
    while ``failing``; every other call goes to the real ZooKeeper."""

    def __init__(self, bridge: ZkBridge, monkeypatch: pytest.MonkeyPatch, *topics: str) -> None:
        self.failing = True
        self.failures = 0
        self._paths = {paths.topic_config(t) for t in topics}
        get = bridge.get

        async def failing_get(path: str, watch: object = None) -> object:
            if self.failing and path in self._paths:
                self.failures += 1
                raise ZkError(f"ConnectionLoss reading {path} (injected)")
            return await get(path, watch)  # type: ignore[arg-type]

        monkeypatch.setattr(bridge, "get", failing_get)


def _old_segments(log: Log, count: int = 4) -> None:
    """Segments whose records are far older than any retention.ms."""
    for i in range(count):
        log.append(encode_batch([(b"k%d" % i, b"v", None, 1_000)]))
        log.roll()


async def test_a_config_unreadable_when_a_partition_opens_is_read_again_until_it_is(
    bridge: ZkBridge,
    logs: LogManager,
    broker_config: BrokerConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _topic(bridge, "__consumer_offsets", {"cleanup.policy": "compact"})
    configs = TopicConfigs(bridge, broker_config.log_config(), logs, broker_id=1)
    await configs.start()
    monkeypatch.setattr(dynamic_config, "_RETRY_S", 0.05)
    reads = _FailingReads(bridge, monkeypatch, "__consumer_offsets")
    try:
        # how the replica manager opens a partition: the config first, then the log
        config = await configs.load("__consumer_offsets")
        log = logs.get_or_create_log("__consumer_offsets", 0, config)
        assert log.config == configs.defaults  # delete: wrong for this topic, for now
        attempts = reads.failures
        await _until(lambda: reads.failures > attempts + 2)  # still trying, backing off
        reads.failing = False
        await _until(lambda: log.config.compact)  # no notification, no reconnection
        assert not log.config.delete and configs.ready("__consumer_offsets")
    finally:
        await configs.stop()


async def test_retention_leaves_a_topic_of_unknown_config_alone_until_it_is_read(
    bridge: ZkBridge,
    logs: LogManager,
    broker_config: BrokerConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _topic(bridge, "compacted", {"cleanup.policy": "compact"})
    log = logs.get_or_create_log("compacted", 0)  # on disk at start: the broker's defaults
    _old_segments(log)
    segments = log.segment_count
    monkeypatch.setattr(dynamic_config, "_RETRY_S", 0.05)
    reads = _FailingReads(bridge, monkeypatch, "compacted")
    configs = TopicConfigs(bridge, broker_config.log_config(), logs, broker_id=1)
    await configs.start()  # no failure: the broker starts, the topic is unknown
    try:
        assert not configs.ready("compacted") and log.config.delete
        ready = lambda tp: configs.ready(tp.topic)  # noqa: E731 - what the broker passes
        assert await logs.apply_retention({}, ready) == 0  # the defaults would delete all
        assert log.segment_count == segments and log.log_start_offset == 0
        reads.failing = False
        await _until(lambda: configs.ready("compacted"))
        assert log.config.compact and not log.config.delete
        assert await logs.apply_retention({}, ready) == 0  # compact only: kept for good
        assert log.segment_count == segments
    finally:
        await configs.stop()


async def test_a_reconnection_reads_an_unknown_config_at_once(
    zookeeper: ZooKeeperServer,
    chroot: str,
    logs: LogManager,
    broker_config: BrokerConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge = ZkBridge(zookeeper.connect_string + chroot, session_timeout_ms=2_000)
    await bridge.start(timeout_s=10)
    await _topic(bridge, "t", {"cleanup.policy": "compact"})
    configs = TopicConfigs(bridge, broker_config.log_config(), logs, broker_id=1)
    await configs.start()
    monkeypatch.setattr(dynamic_config, "_RETRY_S", 3600)  # only a reconnection re-reads
    reads = _FailingReads(bridge, monkeypatch, "t")
    try:
        log = logs.get_or_create_log("t", 0, await configs.load("t"))
        assert not configs.ready("t")
        reads.failing = False
        # the session expires (ZooKeeper's own way: a second client joins it and leaves);
        # kazoo opens a new one by itself
        assert bridge.client_id is not None
        thief = KazooClient(hosts=zookeeper.connect_string, client_id=bridge.client_id)
        thief.start(timeout=10)
        thief.stop()
        thief.close()
        await _until(lambda: configs.ready("t"), timeout_s=20)
        assert log.config.compact
    finally:
        await configs.stop()
        await bridge.stop()
