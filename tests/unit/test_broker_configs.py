"""Dynamic broker configs without a cluster: the layers a setting's value comes from, what
may change and how a value is checked, what DescribeConfigs says, and the CLI's
``--add-config`` form."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from broker.broker_configs import BrokerConfigs
from broker.config import (
    DYNAMIC_BROKER_CONFIGS,
    TOPIC_CONFIG_SYNONYMS,
    ConfigError,
    load_config,
    parse_dynamic,
)
from broker.config_changes import incremented, replaced
from broker.connection_quotas import ConnectionQuotas
from broker.log import Log, LogConfig
from client.cli import parse_add_config
from protocol.apis import AlterableConfig, AlterConfigOp, ConfigSource, IncrementalAlterableConfig
from protocol.errors import InvalidConfigError, InvalidRequestError, MessageTooLargeError
from protocol.records import encode_batch


def _config(**static: str) -> BrokerConfigs:
    overrides = [f"{k.replace('_', '.')}={v}" for k, v in static.items()]
    config = load_config(env={}, overrides=["broker.id=2", "log.dirs=/tmp/x", *overrides])
    return BrokerConfigs(None, config)


def test_a_brokers_own_value_beats_the_default_which_beats_its_file() -> None:
    configs = _config(log_retention_ms="5000")
    config = configs._config
    assert config["log.retention.ms"] == 5000
    changed = config.set_dynamic({"log.retention.ms": 6000, "min.insync.replicas": 2}, {})
    assert changed == {"log.retention.ms", "min.insync.replicas"}
    assert config["log.retention.ms"] == 6000
    assert config.log_config().retention_ms == 6000
    assert config.set_dynamic({"log.retention.ms": 6000, "min.insync.replicas": 2}, {}) == set()
    config.set_dynamic({"log.retention.ms": 6000}, {"log.retention.ms": 7000})
    assert config["log.retention.ms"] == 7000
    assert config["min.insync.replicas"] == 1  # gone from the default: the file's again
    assert [s for s, _ in config.layers("log.retention.ms")] == [
        "DYNAMIC_BROKER_CONFIG",
        "DYNAMIC_DEFAULT_BROKER_CONFIG",
        "STATIC_BROKER_CONFIG",
        "DEFAULT_CONFIG",
    ]
    config.set_dynamic({}, {})
    assert config["log.retention.ms"] == 5000


def test_what_may_change_and_how_a_value_is_checked() -> None:
    assert set(TOPIC_CONFIG_SYNONYMS.values()) < DYNAMIC_BROKER_CONFIGS
    assert parse_dynamic("log.retention.ms", " 3600000 ", "broker 1") == 3_600_000
    assert parse_dynamic("unclean.leader.election.enable", "true", "broker 1") is True
    with pytest.raises(ConfigError, match=r"log.retention.ms='abc' \(from broker 1\) .*integer"):
        parse_dynamic("log.retention.ms", "abc", "broker 1")
    with pytest.raises(ConfigError, match="at least 1"):
        parse_dynamic("min.insync.replicas", "0", "broker 1")
    with pytest.raises(ConfigError, match=r"log\.dirs cannot be changed on a running broker"):
        parse_dynamic("log.dirs", "/x", "broker 1")
    with pytest.raises(ConfigError, match=r"did you mean log\.retention\.ms"):
        parse_dynamic("log.retention.msx", "1", "broker 1")
    with pytest.raises(ConfigError, match=r"cleanup\.policy"):
        parse_dynamic("log.cleanup.policy", "shred", "broker 1")


def test_changes_are_planned_and_refused_with_the_reason() -> None:
    configs = _config()
    subject = configs._subject("2")
    ops = [
        IncrementalAlterableConfig(
            name="log.cleanup.policy", config_operation=AlterConfigOp.APPEND, value="compact"
        ),
        IncrementalAlterableConfig(name="log.retention.ms", config_operation=AlterConfigOp.DELETE),
    ]
    wanted = incremented(subject, {"log.retention.ms": "1"}, ops)
    assert wanted == {"log.cleanup.policy": "delete,compact"}  # from the value in force
    configs._validate("2", wanted, {})
    with pytest.raises(InvalidConfigError, match=r"log\.dirs cannot be changed"):
        replaced(subject, [AlterableConfig(name="log.dirs", value="/y")])
    with pytest.raises(InvalidConfigError, match=r"broker 2.*integer"):
        configs._validate("2", {"log.segment.bytes": "big"}, {})
    # a bad value written by hand stays ignored; changing another one is not refused for it
    configs._validate(
        "2", {"log.segment.bytes": "big", "log.roll.ms": "9"}, {"log.segment.bytes": "big"}
    )
    with pytest.raises(InvalidRequestError, match="APPEND and SUBTRACT are for list"):
        incremented(
            subject,
            {},
            [
                IncrementalAlterableConfig(
                    name="log.retention.ms", config_operation=AlterConfigOp.APPEND, value="1"
                )
            ],
        )
    # a broker's own settings are changed through it; the default through any broker
    assert configs._entity("") == "<default>"
    assert configs._entity("02") == "2"
    with pytest.raises(InvalidRequestError, match="send broker 3's config changes to broker 3"):
        configs._entity("3")
    with pytest.raises(InvalidRequestError, match="give a broker id"):
        configs._entity("two")


def test_describe_says_where_each_value_comes_from() -> None:
    configs = _config(log_retention_ms="5000")
    configs._config.set_dynamic(
        {"log.retention.ms": 6000, "compression.type": "zstd"}, {"log.retention.ms": 7000}
    )
    entries = {e.name: e for e in configs.describe("2", synonyms=True)}
    retention = entries["log.retention.ms"]
    assert (retention.value, retention.config_source) == (
        "7000",
        ConfigSource.DYNAMIC_BROKER_CONFIG,
    )
    assert [(y.value, y.source) for y in retention.synonyms] == [
        ("7000", ConfigSource.DYNAMIC_BROKER_CONFIG),
        ("6000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
        ("5000", ConfigSource.STATIC_BROKER_CONFIG),
        ("604800000", ConfigSource.DEFAULT_CONFIG),
    ]
    assert not retention.read_only and retention.config_type == "long"
    assert entries["log.dirs"].read_only
    assert entries["log.dirs"].config_source == ConfigSource.STATIC_BROKER_CONFIG
    assert entries["compression.type"].config_source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
    # the empty name: what every broker's default sets, and nothing else (as Kafka)
    default = {e.name: (e.value, e.config_source) for e in configs.describe("", synonyms=True)}
    assert default == {
        "compression.type": ("zstd", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
        "log.retention.ms": ("6000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
    }
    with pytest.raises(InvalidRequestError, match="ask broker 1 for its own configs"):
        configs.describe("1", synonyms=False)


def test_the_cli_reads_kafkas_add_config_form() -> None:
    assert parse_add_config("log.retention.ms=1000, log.cleanup.policy=[compact,delete]") == {
        "log.retention.ms": "1000",
        "log.cleanup.policy": "compact,delete",
    }
    assert parse_add_config(None) == {}
    with pytest.raises(click.UsageError, match="is not name=value"):
        parse_add_config("log.retention.ms")


def test_a_follower_takes_what_its_leader_accepted_whatever_its_own_limit(
    tmp_path: Path,
) -> None:
    """Found in review: a broker's own message.max.bytes above the default (or a default
    lowered while a follower lags) made the followers refuse the leader's batch on every
    fetch; they left the ISR for good. Kafka's followers append with ignoreRecordSize."""
    leader = Log.open(tmp_path / "l" / "t-0", LogConfig(max_message_bytes=100_000))
    follower = Log.open(tmp_path / "f" / "t-0", LogConfig(max_message_bytes=2000))
    leader.append(encode_batch([(b"k", b"x" * 5000, None, 1000)]), leader_epoch=0)
    data = leader.read(0, 1 << 20)
    assert data is not None
    follower.append_as_follower(data.read())
    assert follower.log_end_offset == leader.log_end_offset == 1
    with pytest.raises(MessageTooLargeError, match=r"over max\.message\.bytes \(2000\)"):
        follower.append(encode_batch([(b"k", b"x" * 5000, None, 1000)]), leader_epoch=0)
    leader.close()
    follower.close()


def test_append_to_a_list_starts_from_the_value_without_the_entitys_own() -> None:
    """Found in review: APPEND on every broker's default started from the answering
    broker's own value, which leaked into every broker's default."""
    configs = _config()
    configs._config.set_dynamic({}, {"log.cleanup.policy": "compact"})  # broker 2's own
    append = [
        IncrementalAlterableConfig(
            name="log.cleanup.policy", config_operation=AlterConfigOp.APPEND, value="delete"
        )
    ]
    assert incremented(configs._subject("<default>"), {}, append) == {
        "log.cleanup.policy": "delete"
    }
    configs._config.set_dynamic({"log.cleanup.policy": "compact"}, {})
    assert incremented(configs._subject("2"), {}, append) == {
        "log.cleanup.policy": "compact,delete"  # the default's value is broker 2's too
    }


def test_new_defaults_reach_the_logs_of_topics_that_do_not_override_them(
    tmp_path: Path,
) -> None:
    """TopicConfigs.set_defaults: a topic keeps its own overrides over the new defaults; a
    topic whose config could not be read gets them but stays unknown (retention and the
    cleaner leave it alone until it is read); listeners hear only of topics that
    changed."""
    from broker.dynamic_config import TopicConfigs, _Known
    from broker.log.manager import LogManager

    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()
    try:
        for topic in ("own", "plain", "unread", "all-own"):
            logs.get_or_create_log(topic, 0)
        configs = TopicConfigs(None, LogConfig(), logs, broker_id=1)  # type: ignore[arg-type]
        own = {"retention.ms": "5"}
        all_own = {"retention.ms": "6", "max.message.bytes": "7"}
        configs._known["own"] = _Known(1, own, LogConfig().with_properties(own))
        configs._known["all-own"] = _Known(2, all_own, LogConfig().with_properties(all_own))
        for topic in ("own", "all-own"):
            logs.logs_of(topic)[0].config = configs._known[topic].config
        configs._unknown.add("unread")
        heard: list[str] = []
        configs.on_change(lambda topic, _config: heard.append(topic))

        configs.set_defaults(
            LogConfig().with_properties({"retention.ms": "1000", "max.message.bytes": "2000"})
        )
        config = {t: logs.logs_of(t)[0].config for t in ("own", "plain", "unread", "all-own")}
        assert (config["own"].retention_ms, config["own"].max_message_bytes) == (5, 2000)
        assert (config["plain"].retention_ms, config["plain"].max_message_bytes) == (1000, 2000)
        assert config["unread"].retention_ms == 1000 and not configs.ready("unread")
        assert (config["all-own"].retention_ms, config["all-own"].max_message_bytes) == (6, 7)
        assert sorted(heard) == ["own", "plain"]
    finally:
        logs.shutdown()


def _two_listeners(**static: str) -> BrokerConfigs:
    return _config(
        listeners="INTERNAL://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
        listener_security_protocol_map="INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
        inter_broker_listener_name="INTERNAL",
        **static,
    )


def test_a_listeners_own_connection_limits_are_settings_static_and_dynamic() -> None:
    """Kafka's listener-prefixed connection limits (KIP-402, KIP-612): in the file or with
    --set for a listener the broker has; changed on a running broker like the others."""
    configs = _two_listeners(max_connections="300")
    config = configs._config
    limit, rate = (
        "listener.name.external.max.connections",
        "listener.name.external.max.connection.creation.rate",
    )
    # not set: the broker-wide value (Kafka's prefix override)
    assert (config[limit], config[rate]) == (300, 2**31 - 1)
    with pytest.raises(KeyError):
        config["listener.name.external.max.connectionz"]
    static = load_config(
        env={},
        overrides=[
            "broker.id=2",
            "log.dirs=/tmp/x",
            "listeners=PLAINTEXT://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
            f"{limit}=50",
        ],
    )
    assert static[limit] == 50 and static.sources[limit] == "--set"
    with pytest.raises(ConfigError, match=r"names listener internal, which is not in listeners"):
        load_config(
            env={},
            overrides=[
                "broker.id=2",
                "log.dirs=/tmp/x",
                "listener.name.internal.max.connections=5",
            ],
        )
    with pytest.raises(ConfigError, match=r"did you mean listener\.name\.external\.max\.conn"):
        load_config(
            env={},
            overrides=[
                "broker.id=2",
                "log.dirs=/tmp/x",
                "listener.name.EXTERNAL.max.connections=5",
            ],
        )
    # at least 1, as Kafka's: 0 would shut the listener (the brokers' own one too)
    for name in (limit, rate):
        with pytest.raises(ConfigError, match=r"='0' \(from broker 2\) .*at least 1"):
            parse_dynamic(name, "0", "broker 2")
    assert parse_dynamic(rate, "30", "broker 2") == 30
    # dynamic: this broker's own, checked against its listeners; in force at once
    configs._validate("2", {rate: "30"}, {})
    with pytest.raises(InvalidConfigError, match=r"broker 2: listener\.name\.other"):
        configs._validate("2", {"listener.name.other.max.connections": "5"}, {})
    configs._validate("<default>", {"listener.name.other.max.connections": "5"}, {})
    # one already there for a listener since gone does not hold up another change
    stale = {"listener.name.old.max.connections": "5"}
    configs._validate("2", {**stale, "log.retention.ms": "3600000"}, stale)
    assert config.set_dynamic({}, {rate: 30}) == {rate}
    assert config[rate] == 30
    entry = {e.name: e for e in configs.describe("2", synonyms=True)}[rate]
    assert (entry.value, entry.read_only, entry.config_type) == ("30", False, "long")
    assert entry.config_source == ConfigSource.DYNAMIC_BROKER_CONFIG
    assert "listener named external" in (entry.documentation or "")
    assert [(y.name, y.value, y.source) for y in entry.synonyms] == [
        (rate, "30", ConfigSource.DYNAMIC_BROKER_CONFIG),
        ("max.connection.creation.rate", "2147483647", ConfigSource.DEFAULT_CONFIG),
    ]
    assert config.set_dynamic({}, {}) == {rate}  # deleted: a change too, back to the broker's
    assert config[rate] == 2**31 - 1
    # set to what is in force already, or deleted when it was that: no change
    assert config.set_dynamic({}, {limit: 300}) == set()
    assert config.set_dynamic({}, {}) == set()
    # the broker-wide value moves a listener's that is not set with it
    assert config.set_dynamic({"max.connections": 10}, {}) == {"max.connections"}
    assert config[limit] == 10


def test_listener_names_differing_only_in_case_are_refused() -> None:
    with pytest.raises(ConfigError, match="the listener name External is used twice"):
        load_config(
            env={},
            overrides=[
                "broker.id=2",
                "log.dirs=/tmp/x",
                "listeners=EXTERNAL://127.0.0.1:0,External://127.0.0.1:0",
                "listener.security.protocol.map=EXTERNAL:PLAINTEXT,External:PLAINTEXT",
            ],
        )


def test_the_brokers_own_listener_takes_no_broker_wide_limit_unless_its_own_is_set() -> None:
    """Review 93: the broker-wide limits never touch the inter-broker listener beside
    others, set or not (max.connections=0 shuts the clients out, never replication or the
    controller); its own limit, when set, holds."""
    configs = _two_listeners(max_connections="0", max_connection_creation_rate="0")
    config = configs._config
    internal = "listener.name.internal.max.connections"
    assert config["listener.name.external.max.connections"] == 0  # the broker-wide value
    assert config[internal] == 2**31 - 1
    assert config["listener.name.internal.max.connection.creation.rate"] == 2**31 - 1
    quotas = ConnectionQuotas(config.__getitem__, config.inter_broker_listener, 2)
    assert quotas.admit("10.0.0.1", "EXTERNAL") is not None  # clients: shut out
    assert quotas.admit("10.0.0.2", "INTERNAL") is None  # the brokers' own: in
    assert [quotas.take("INTERNAL", 10_000) for _ in range(3)] == [0, 0, 0]
    config.set_dynamic({}, {internal: 1})
    assert config[internal] == 1
    assert quotas.admit("10.0.0.3", "INTERNAL") is not None  # its own limit, set: holds
    # one listener only: it is every connection's, and takes the broker-wide value
    alone = _config(max_connections="7")._config
    assert alone["listener.name.plaintext.max.connections"] == 7


async def test_a_describe_applies_a_topic_config_its_notification_has_not_brought(
    tmp_path: Path,
) -> None:
    """TopicConfigs.describe: DescribeConfigs reads ZooKeeper's copy of a topic's
    overrides, and a broker with a log of the topic applies what it read if it is newer
    than what it holds (the admin client waits after a change until every broker describes
    it, and that answer is then true of the broker's logs); an older read, or one it
    cannot apply, undoes nothing and is not what it answers; a topic whose config could
    not be read is known once a describe reads it."""
    import dataclasses
    import json
    from types import SimpleNamespace

    from broker.dynamic_config import TopicConfigs
    from broker.log.manager import LogManager
    from broker.zk import NoNode, paths

    class _Zk:
        def __init__(self) -> None:
            self.znodes: dict[str, tuple[bytes, int]] = {}

        def write(self, topic: str, zxid: int, **overrides: str) -> None:
            data = json.dumps({"version": 1, "config": overrides}).encode()
            self.znodes[paths.topic_config(topic)] = (data, zxid)

        async def get(self, path: str) -> tuple[bytes, object]:
            if path not in self.znodes:
                raise NoNode(path)
            data, zxid = self.znodes[path]
            return data, SimpleNamespace(mzxid=zxid)

    zk = _Zk()
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()
    try:
        log = logs.get_or_create_log("orders", 0)
        configs = TopicConfigs(zk, LogConfig(), logs, broker_id=1)  # type: ignore[arg-type]
        heard: list[str] = []
        configs.on_change(lambda topic, _config: heard.append(topic))

        zk.write("orders", 10, **{"max.message.bytes": "1000"})
        assert await configs.describe("orders") == {"max.message.bytes": "1000"}
        assert log.config.max_message_bytes == 1000  # in force, with no notification
        assert heard == ["orders"]
        assert await configs.describe("orders") == {"max.message.bytes": "1000"}
        assert heard == ["orders"]  # nothing newer: nothing applied again

        known = configs._known["orders"]
        configs._known["orders"] = dataclasses.replace(known, zxid=20)  # (a newer one held)
        zk.write("orders", 15, **{"max.message.bytes": "5"})  # a read older than it
        assert await configs.describe("orders") == {"max.message.bytes": "1000"}  # held
        assert log.config.max_message_bytes == 1000 and heard == ["orders"]

        configs._unknown.add("orders")
        zk.write("orders", 30, **{"max.message.bytes": "2000"})
        await configs.describe("orders")
        assert configs.ready("orders") and log.config.max_message_bytes == 2000

        # a setting this version does not know (a newer one's): nothing of it applies
        # here, and the answer says what does, so the admin's wait names this broker
        zk.write("orders", 40, **{"max.message.bytes": "3000", "newer.setting": "x"})
        assert await configs.describe("orders") == {"max.message.bytes": "2000"}
        assert log.config.max_message_bytes == 2000

        # an unknown topic with no config znode at all: known (the defaults) once read
        logs.get_or_create_log("plain", 0)
        configs._unknown.add("plain")
        assert await configs.describe("plain") == {}
        assert configs.ready("plain")

        # a partition opened (load) between a change and its notification: the topic's
        # other logs take the change with it, not only the new one (from a review: a
        # describe then vouched for a log still on the old config)
        zk.write("orders", 60, **{"max.message.bytes": "4000"})
        assert (await configs.load("orders")).max_message_bytes == 4000
        assert log.config.max_message_bytes == 4000
        assert await configs.describe("orders") == {"max.message.bytes": "4000"}

        # no log of the topic here: ZooKeeper's copy is the answer, and nothing is kept
        zk.write("elsewhere", 50, **{"retention.ms": "5"})
        assert await configs.describe("elsewhere") == {"retention.ms": "5"}
        assert "elsewhere" not in configs._known
        assert heard == ["orders", "orders", "plain", "orders"]
    finally:
        logs.shutdown()
