"""A Kafka broker's server.properties as Headwater's config: Java's properties format,
Kafka's coarser time spellings and `log.dir`, Kafka's settings with no meaning here
(taken and said to be ignored) and the ones that must not be ignored (refused with what
to do), through `load_config` and `headwater-broker --check`."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.config import ConfigError, load_config
from broker.properties import IGNORED, kafka_names, parse_properties

BROKER = [sys.executable, "-m", "broker"]

# Kafka 3.9's config/server.properties (ZooKeeper mode), its comments shortened
KAFKA_SAMPLE = """\
############################# Server Basics #############################
# The id of the broker. This must be set to a unique integer for each broker.
broker.id=0
#listeners=PLAINTEXT://:9092
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/tmp/kafka-logs
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
#log.flush.interval.messages=10000
log.retention.hours=168
#log.retention.bytes=1073741824
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
zookeeper.connect=localhost:2181
zookeeper.connection.timeout.ms=18000
group.initial.rebalance.delay.ms=0
"""


def test_javas_properties_format() -> None:
    text = (
        "# a comment\n"
        "! another\n"
        "   \n"
        "a=1\n"
        "b : two words \n"
        "c    3\n"
        "d=\n"
        "e\n"
        "  f = indented\n"
        "g=x=y:z\n"
        "h\\=k=escaped separator\n"
        "i=tab\\there\\u00e9\\\\\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        '    username="admin" \\\n'
        '    password="secret";\n'
        "j=ends in a backslash\\\\\n"
        "k=# not a comment\n"
        "a=last wins\n"
    )
    assert parse_properties(text) == {
        "a": "last wins",
        "b": "two words ",  # a value keeps its trailing blanks, as Java's
        "c": "3",
        "d": "",
        "e": "",
        "f": "indented",
        "g": "x=y:z",
        "h=k": "escaped separator",
        "i": "tab\there\u00e9\\",
        "sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="admin" password="secret";',
        "j": "ends in a backslash\\",
        "k": "# not a comment",
    }


def test_kafkas_coarser_time_spellings_and_log_dir() -> None:
    named = kafka_names({"log.retention.hours": "168", "log.roll.hours": "1", "log.dir": "/d"})
    assert named.settings == {
        "log.retention.ms": 168 * 3_600_000,
        "log.roll.ms": 3_600_000,
        "log.dirs": "/d",
    }
    # the finest spelling given wins, as in Kafka, in whatever order they come
    for items in (
        {"log.retention.hours": "1", "log.retention.minutes": "5", "log.retention.ms": "7"},
        {"log.retention.ms": "7", "log.retention.minutes": "5", "log.retention.hours": "1"},
    ):
        assert kafka_names(items).settings == {"log.retention.ms": "7"}
    assert kafka_names({"log.retention.minutes": "5", "log.retention.hours": "1"}).settings == {
        "log.retention.ms": 300_000
    }
    assert kafka_names({"log.retention.hours": "-1"}).settings == {"log.retention.ms": -1}
    assert kafka_names({"log.dir": "/a", "log.dirs": "/b,/c"}).settings == {"log.dirs": "/b,/c"}


def test_settings_with_no_meaning_here_are_taken_and_named() -> None:
    named = kafka_names({"num.io.threads": "8", "broker.id": "3"})
    assert named.settings == {"broker.id": "3"}
    assert named.ignored == [f"num.io.threads=8 is ignored: {IGNORED['num.io.threads']}"]
    assert kafka_names({"ssl.keystore.type": "PEM"}).settings == {}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("process.roles=broker,controller", "process.roles is not taken: a KRaft setting"),
        ("zookeeper.set.acl=true", "does not set ZooKeeper ACLs"),
        ("ssl.keystore.type=JKS", "ssl.keystore.type=JKS is not taken: Headwater reads PEM"),
        ("log.retention.hours=a week", r"log.retention.hours='a week' is invalid: it must be"),
    ],
)
def test_what_must_not_be_ignored_is_refused_with_what_to_do(
    tmp_path: Path, setting: str, message: str
) -> None:
    path = tmp_path / "server.properties"
    path.write_text(f"broker.id=1\n{setting}\n")
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(file=path, env={})
    assert str(refused.value).endswith(f"(from file {path})")


def test_kafkas_own_sample_file_starts_a_broker(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text(KAFKA_SAMPLE)
    config = load_config(file=path, env={})
    assert config["broker.id"] == 0
    assert config["log.dirs"] == ["/tmp/kafka-logs"]
    assert config["log.retention.ms"] == 168 * 3_600_000
    assert config.sources["log.retention.ms"] == f"file {path}"
    assert (config["zookeeper.connect"], config["group.initial.rebalance.delay.ms"]) == (
        "localhost:2181",
        0,
    )
    assert [line.partition("=")[0] for line in config.ignored] == [
        "num.network.threads",
        "num.io.threads",
        "socket.send.buffer.bytes",
        "socket.receive.buffer.bytes",
        "num.recovery.threads.per.data.dir",
    ]
    # a later source's spelling beats the file's, whichever unit each is in
    config = load_config(file=path, env={}, overrides=["log.retention.minutes=30"])
    assert (config["log.retention.ms"], config.sources["log.retention.ms"]) == (1_800_000, "--set")
    config = load_config(file=path, env={"HEADWATER_LOG_RETENTION_HOURS": "2"})
    assert config["log.retention.ms"] == 7_200_000
    checked = subprocess.run(
        [*BROKER, "--config", str(path), "--check"], capture_output=True, text=True, check=True
    )
    assert f"log.retention.ms=604800000  # file {path}" in checked.stdout
    assert (
        f"# num.io.threads=8 is ignored: {IGNORED['num.io.threads']} (from file {path})"
        in checked.stdout
    )


def test_a_properties_file_by_another_name_is_read_as_toml_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "server.conf"
    path.write_text(KAFKA_SAMPLE)
    with pytest.raises(ConfigError, match=r"is not valid TOML: .*name ends in \.properties"):
        load_config(file=path, env={})


# --- review 127 -------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "server.properties"
    path.write_text("broker.id=1\n" + text)
    return load_config(file=path, env={})


def test_string_values_are_trimmed_as_kafkas_configdef_does(tmp_path: Path) -> None:
    # Java's Properties keeps a value's trailing blanks; Kafka's ConfigDef trims them.
    # Untrimmed, the chroot is "/kafka ": kazoo takes it, another, empty cluster
    config = _load(tmp_path, "zookeeper.connect=zk1:2181/kafka \nbroker.rack=rack-a \n")
    assert (config["zookeeper.connect"], config["broker.rack"]) == ("zk1:2181/kafka", "rack-a")


@pytest.mark.parametrize("name", ["zookeeper.set.acl", "zookeeper.ssl.client.enable"])
def test_what_headwater_does_not_do_is_taken_off_and_refused_on(tmp_path: Path, name: str) -> None:
    _load(tmp_path, f"{name}=false\n")  # Kafka's default, and what Headwater does
    with pytest.raises(ConfigError, match=f"{name}=true is not taken"):
        _load(tmp_path, f"{name}=true\n")


@pytest.mark.parametrize("store", ["keystore", "truststore"])
def test_a_store_with_a_store_password_is_no_pem_and_is_refused(tmp_path: Path, store: str) -> None:
    # without ssl.*.type, Kafka's store is JKS; Kafka refuses a store password on a PEM one
    with pytest.raises(ConfigError, match=r"JKS or PKCS12 store; Headwater reads PEM"):
        _load(tmp_path, f"ssl.{store}.location=/k/{store}.jks\nssl.{store}.password=s3cret\n")


def test_the_finest_time_spelling_wins_within_set_and_within_the_environment() -> None:
    given = ["broker.id=1", "log.retention.ms=60000", "log.retention.hours=1"]
    assert load_config(env={}, overrides=given)["log.retention.ms"] == 60_000
    env = {"HEADWATER_LOG_RETENTION_HOURS": "1", "HEADWATER_LOG_RETENTION_MINUTES": "5"}
    config = load_config(env=env, overrides=["broker.id=1"])
    assert config["log.retention.ms"] == 300_000
    assert config.sources["log.retention.ms"] == "env HEADWATER_LOG_RETENTION_MS"


def test_security_inter_broker_protocol_names_the_listener_as_kafka_takes_it(
    tmp_path: Path,
) -> None:
    config = _load(
        tmp_path,
        "listeners=PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9093\n"
        "sasl.enabled.mechanisms=PLAIN\n"
        "security.inter.broker.protocol=SASL_PLAINTEXT\n",
    )
    assert config["inter.broker.listener.name"] == "SASL_PLAINTEXT"


def test_a_byte_order_mark_and_javas_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_bytes(b"\xef\xbb\xbf# written on Windows\r\nbroker.id=4\r\nbroker.rack=a\fb\r\n")
    config = load_config(file=path, env={})
    assert (config["broker.id"], config["broker.rack"]) == (4, "a\fb")  # \f ends no line
