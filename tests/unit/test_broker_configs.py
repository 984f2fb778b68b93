"""Dynamic broker configs without a cluster: the layers a setting's value comes from, what
may change and how a value is checked, what DescribeConfigs says, and the CLI's
``--add-config`` form."""

from __future__ import annotations

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
from client.cli import parse_add_config
from protocol.apis import AlterableConfig, AlterConfigOp, ConfigSource, IncrementalAlterableConfig
from protocol.errors import InvalidConfigError, InvalidRequestError


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
    assert set(TOPIC_CONFIG_SYNONYMS.values()) == DYNAMIC_BROKER_CONFIGS
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
    configs._validate("2", wanted)
    with pytest.raises(InvalidConfigError, match=r"log\.dirs cannot be changed"):
        replaced(subject, [AlterableConfig(name="log.dirs", value="/y")])
    with pytest.raises(InvalidConfigError, match=r"broker 2.*integer"):
        configs._validate("2", {"log.segment.bytes": "big"})
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
