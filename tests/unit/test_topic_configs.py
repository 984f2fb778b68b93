"""Topic config changes without a cluster: the AlterConfigs / IncrementalAlterConfigs
planning (Kafka's semantics), validation with the reason, the broker defaults of every
topic setting (DescribeConfigs' STATIC_BROKER_CONFIG synonyms), and the change
notification payload."""

import re

import pytest

from broker.admin import _config_type
from broker.config import SETTINGS, TOPIC_CONFIG_SYNONYMS, ConfigError, load_config
from broker.config_changes import incremental_overrides, replaced_overrides
from broker.dynamic_config import _sequence
from broker.log import LogConfig
from broker.zk import CorruptZnode, config_change_from_json, config_change_json
from protocol.apis import AlterableConfig, AlterConfigOp, IncrementalAlterableConfig
from protocol.errors import InvalidConfigError, InvalidRequestError

DEFAULTS = LogConfig()


def _op(
    name: str, value: str | None = None, op: int = AlterConfigOp.SET
) -> IncrementalAlterableConfig:
    return IncrementalAlterableConfig(name=name, config_operation=op, value=value)


def _incremental(current: dict[str, str], *ops: IncrementalAlterableConfig) -> dict[str, str]:
    return incremental_overrides("t", current, list(ops), DEFAULTS)


def test_alter_configs_replaces_the_whole_set() -> None:
    configs = [AlterableConfig(name="retention.ms", value=" 1000 ")]
    assert replaced_overrides("t", configs) == {"retention.ms": "1000"}
    assert replaced_overrides("t", []) == {}  # every override back to its default
    with pytest.raises(InvalidConfigError, match=r"retention\.ms has no value"):
        replaced_overrides("t", [AlterableConfig(name="retention.ms")])
    with pytest.raises(InvalidConfigError, match="unknown topic config 'retention'"):
        replaced_overrides("t", [AlterableConfig(name="retention", value="1")])
    twice = [AlterableConfig(name="segment.ms", value="1")] * 2
    with pytest.raises(InvalidRequestError, match=r"segment\.ms is given twice"):
        replaced_overrides("t", twice)


def test_incremental_set_and_delete_touch_only_their_entries() -> None:
    current = {"retention.ms": "1000", "segment.bytes": "4096"}
    assert _incremental(current, _op("retention.ms", "5"), _op("flush.ms", "10")) == {
        "retention.ms": "5",
        "segment.bytes": "4096",
        "flush.ms": "10",
    }
    assert _incremental(current, _op("segment.bytes", op=AlterConfigOp.DELETE)) == {
        "retention.ms": "1000"
    }
    assert _incremental({}, _op("flush.ms", op=AlterConfigOp.DELETE)) == {}  # not set: fine
    assert current == {"retention.ms": "1000", "segment.bytes": "4096"}  # not modified


def test_append_and_subtract_start_from_the_value_in_force() -> None:
    append, subtract = AlterConfigOp.APPEND, AlterConfigOp.SUBTRACT
    # no override: the default (delete) is in force
    assert _incremental({}, _op("cleanup.policy", "compact", append)) == {
        "cleanup.policy": "delete,compact"
    }
    both = {"cleanup.policy": "compact,delete"}
    assert _incremental(both, _op("cleanup.policy", "delete", append)) == both  # no duplicate
    assert _incremental(both, _op("cleanup.policy", "delete", subtract)) == {
        "cleanup.policy": "compact"
    }
    with pytest.raises(InvalidRequestError, match=r"retention\.ms is not a list"):
        _incremental({}, _op("retention.ms", "1", append))


def test_incremental_refusals_say_why() -> None:
    with pytest.raises(InvalidConfigError, match=r"unknown topic config 'no\.such'"):
        _incremental({}, _op("no.such", op=AlterConfigOp.DELETE))
    with pytest.raises(InvalidConfigError, match=r"retention\.ms has no value"):
        _incremental({}, _op("retention.ms"))
    with pytest.raises(InvalidRequestError, match="unknown config operation 7"):
        _incremental({}, _op("retention.ms", "1", 7))
    with pytest.raises(InvalidRequestError, match="given twice"):
        _incremental({}, _op("retention.ms", "1"), _op("retention.ms", op=AlterConfigOp.DELETE))


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("retention.ms", "-2", "retention.ms=-2 is invalid: it must be -1 (unlimited) or more"),
        ("segment.bytes", "ten", "segment.bytes='ten' is invalid: it must be an integer"),
        ("cleanup.policy", "shred", "cleanup.policy=shred is invalid: it must be delete, compact"),
        ("min.insync.replicas", "0", "min.insync.replicas=0 is invalid: it must be at least 1"),
        ("message.timestamp.type", "Now", "it must be CreateTime or LogAppendTime"),
        ("compression.type", "brotli", "it must be one of producer, uncompressed, gzip"),
        ("unclean.leader.election.enable", "yes", "it must be true or false"),
        ("min.cleanable.dirty.ratio", "1.5", "it must be between 0 and 1"),
    ],
)
def test_bad_values_are_refused_with_the_reason(name: str, value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        DEFAULTS.with_properties({name: value})


def test_every_alterable_topic_config_parses() -> None:
    config = DEFAULTS.with_properties(
        {
            "retention.ms": "60000",
            "retention.bytes": "1048576",
            "segment.bytes": "1048576",
            "segment.ms": "3600000",
            "cleanup.policy": "compact,delete",
            "min.insync.replicas": "2",
            "max.message.bytes": "2000000",
            "unclean.leader.election.enable": "TRUE",
            "delete.retention.ms": "1000",
            "min.compaction.lag.ms": "10",
            "message.timestamp.type": "LogAppendTime",
            "compression.type": "zstd",
            "flush.messages": "1",
            "flush.ms": "1000",
        }
    )
    assert config.delete and config.compact and config.unclean_leader_election_enable
    assert (config.min_insync_replicas, config.compression_type) == (2, "zstd")


def test_every_topic_config_has_a_broker_default_setting() -> None:
    settings = {s.name for s in SETTINGS}
    topic_only = {
        "leader.replication.throttled.replicas",
        "follower.replication.throttled.replicas",
        # tiered storage's, without a broker default in Kafka either
        "remote.storage.enable",
        "remote.log.copy.disable",
        "remote.log.delete.on.disable",
    }
    assert set(TOPIC_CONFIG_SYNONYMS) == set(DEFAULTS.properties()) - topic_only
    assert set(TOPIC_CONFIG_SYNONYMS.values()) <= settings
    broker = load_config(env={}, overrides=["broker.id=1"])
    assert broker.log_config() == DEFAULTS  # Kafka's defaults on both levels
    assert DEFAULTS.message_timestamp_after_max_ms == 3_600_000  # Kafka 4.0's (KIP-1030)
    for name in ("message.timestamp.before.max.ms", "message.timestamp.after.max.ms"):
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            LogConfig.from_properties({name: str(2**63)})  # past Kafka's LONG
    changed = load_config(
        env={},
        overrides=[
            "broker.id=1",
            "log.cleanup.policy=compact",
            "log.message.timestamp.type=LogAppendTime",
            "compression.type=lz4",
            "log.cleaner.min.cleanable.ratio=0.25",
            "log.cleaner.delete.retention.ms=5",
            "log.message.timestamp.before.max.ms=60000",
            "log.message.timestamp.after.max.ms=1000",
            "compression.lz4.level=12",
            "compression.gzip.level=1",
            "compression.zstd.level=-5",
            "log.roll.jitter.ms=100",
        ],
    ).log_config()
    assert changed.message_timestamp_before_max_ms == 60_000
    assert changed.message_timestamp_after_max_ms == 1_000
    assert changed.compression_level == 12  # compression.type=lz4's
    assert (changed.compression_gzip_level, changed.compression_zstd_level) == (1, -5)
    assert changed.segment_jitter_ms == 100
    assert changed.cleanup_policy == "compact" and changed.compression_type == "lz4"
    assert changed.message_timestamp_type == "LogAppendTime"
    assert (changed.min_cleanable_dirty_ratio, changed.delete_retention_ms) == (0.25, 5)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("log.cleanup.policy=shred", "it must be delete, compact, or compact,delete"),
        ("compression.type=brotli", "it must be one of producer"),
        ("log.cleaner.min.cleanable.ratio=2", "it must be between 0 and 1"),
        ("log.cleaner.min.cleanable.ratio=half", "it must be a number"),
        ("log.message.timestamp.type=now", "CreateTime or LogAppendTime"),
        ("log.message.timestamp.after.max.ms=-1", "at least 0"),
        (f"log.message.timestamp.before.max.ms={2**63}", f"at most {2**63 - 1}"),
        ("compression.gzip.level=0", "between 1 and 9, or -1"),
        ("compression.lz4.level=18", "between 1 and 17"),
        ("compression.zstd.level=23", "between -131072 and 22"),
        ("log.preallocate=true", "Headwater does not preallocate"),
        ("log.local.retention.ms=-3", "at least -2"),
    ],
)
def test_bad_broker_defaults_stop_the_start(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides=["broker.id=1", setting])


def test_describe_configs_types() -> None:
    assert _config_type("cleanup.policy") == "list"
    assert _config_type("unclean.leader.election.enable") == "boolean"
    assert _config_type("retention.ms") == "long"
    assert _config_type("min.cleanable.dirty.ratio") == "double"
    assert _config_type("compression.type") == "string"


def test_change_notifications_are_kafkas() -> None:
    data = config_change_json("orders")
    assert data == b'{"entity_path":"topics/orders","version":2}'
    assert config_change_from_json("/config/changes/config_change_0000000001", data) == (
        "topics",
        "orders",
    )
    for bad in (b"[]", b'{"version":1,"entity_path":"topics/x"}', b'{"version":2}'):
        with pytest.raises(CorruptZnode):
            config_change_from_json("/config/changes/x", bad)
    assert _sequence("config_change_0000000042") == 42
    assert _sequence("something_else") == -1
