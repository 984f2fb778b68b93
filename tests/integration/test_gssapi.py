"""SASL GSSAPI (Kerberos) on a real broker, against a private MIT KDC (tests/kdc.py): the
broker checks tickets with the key in its keytab, on Headwater's own SASL listener and
on a Kafka-protocol one. Headwater's clients log in with a keytab of their own; kafka-
python (another GSSAPI implementation) with the environment's credentials; a principal
becomes its user by sasl.kerberos.principal.to.local.rules (seen as a delegation
token's owner); a principal no rule maps, and a service the KDC does not know, are
refused, and the broker serves on."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from protocol.errors import SaslAuthenticationFailedError
from tests.integration.conftest import Cluster
from tests.integration.test_cli import COMMAND
from tests.kdc import REALM, Kdc, kdc_or_skip

pytestmark = pytest.mark.timeout(150)

SERVICE = "kafka/127.0.0.1"
RULES = (
    # two components (carol/ops): carol-ops; one, in this realm: alice (no DEFAULT: an
    # unlisted single name, mallory, has no rule)
    f"RULE:[2:$1-$2@$0](.*@{REALM})s/@.*//,RULE:[1:$1@$0](alice@{REALM})s/@.*//"
)


@pytest.fixture
def kdc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kdc]:
    kdc_or_skip()
    server = Kdc(tmp_path / "kdc").start()
    try:
        for name, value in server.env.items():  # the brokers started here inherit it
            monkeypatch.setenv(name, value)
        # this process's own ticket cache, not the user's
        monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'krb5cc'}")
        yield server
    finally:
        server.stop()


def _settings(keytab: Path) -> dict[str, str]:
    return {
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,KSASL://127.0.0.1:0",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,KSASL:SASL_PLAINTEXT"
        ),
        "kafka.protocol.listeners": "KSASL",
        "inter.broker.listener.name": "PLAINTEXT",
        "sasl.enabled.mechanisms": "GSSAPI",
        "sasl.kerberos.service.name": "kafka",
        "sasl.kerberos.principal.to.local.rules": RULES,
        "sasl.jaas.config": (
            "com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true "
            f'storeKey=true keyTab="{keytab}" principal="{SERVICE}@{REALM}";'
        ),
        "delegation.token.secret.key": "the-cluster-secret",
    }


def _as(kdc: Kdc, name: str) -> dict[str, Any]:
    """Headwater's client settings for a GSSAPI login as ``name``, by its own keytab."""
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "GSSAPI",
        "sasl_kerberos_service_name": "kafka",
        "sasl_kerberos_keytab": str(kdc.directory / (name.replace("/", "_") + ".keytab")),
        "sasl_kerberos_principal": f"{name}@{REALM}",
    }


async def _read(cluster: Cluster, topic: str, count: int) -> list[bytes]:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition(topic, 0)])
        values: list[bytes] = []
        while len(values) < count:
            for records in (await c.getmany(timeout_ms=1000)).values():
                values += [r.value for r in records]
        return values


def _kafka_python(port: int) -> list[tuple[int, bytes]]:
    """kafka-python's producer and consumer, logged in by GSSAPI with the environment's
    credentials (a client keytab, KRB5_CLIENT_KTNAME): what it wrote, read back."""
    common = {
        "bootstrap_servers": f"127.0.0.1:{port}",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "GSSAPI",
        "sasl_kerberos_service_name": "kafka",
    }
    producer = KafkaProducer(acks="all", **common)
    try:
        for i in range(3):
            producer.send("krb", f"kp{i}".encode()).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(auto_offset_reset="earliest", consumer_timeout_ms=10_000, **common)
    try:
        consumer.assign([KpTopicPartition("krb", 0)])
        return [(m.offset, m.value) for m in consumer][:6]
    finally:
        consumer.close()


async def test_kerberos_logins_on_both_listeners_by_keytab_and_by_the_environment(
    make_cluster: Callable[..., Cluster], kdc: Kdc, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker_keytab = kdc.principal(SERVICE)
    for user in ("alice", "carol/ops", "mallory"):
        kdc.principal(user)
    cluster = make_cluster(1, _settings(broker_keytab))
    (broker,) = cluster.brokers.values()
    sasl = f"127.0.0.1:{broker.ports['SASL_PLAINTEXT']}"
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("krb", 1, 1)])

    async with Producer(bootstrap_servers=sasl, acks="all", **_as(kdc, "alice")) as producer:
        offsets = [(await (await producer.send("krb", f"hw{i}".encode()))).offset for i in range(3)]
    assert offsets == [0, 1, 2]

    # the principal's user name, by the rules: a token's owner shows it
    async with Admin(bootstrap_servers=sasl, **_as(kdc, "carol/ops")) as admin:
        token = await admin.create_delegation_token()
    assert token.owner == "User:carol-ops"

    # no rule maps mallory: refused, with the rule's words
    with pytest.raises(SaslAuthenticationFailedError, match=r"no sasl\.kerberos"):
        async with Admin(bootstrap_servers=sasl, **_as(kdc, "mallory")) as admin:
            await admin.list_topics()
    # a service the KDC has no principal for: the client cannot get a ticket
    with pytest.raises(SaslAuthenticationFailedError, match="GSSAPI"):
        settings = {**_as(kdc, "alice"), "sasl_kerberos_service_name": "nosuch"}
        async with Admin(bootstrap_servers=sasl, **settings) as admin:
            await admin.list_topics()

    # the command, with Kafka's client properties for a keytab login
    properties = kdc.directory / "alice.properties"
    properties.write_text(
        "security.protocol=SASL_PLAINTEXT\n"
        "sasl.mechanism=GSSAPI\n"
        "sasl.kerberos.service.name=kafka\n"
        "sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required "
        f'useKeyTab=true keyTab="{kdc.directory / "alice.keytab"}" principal="alice@{REALM}";\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "HEADWATER_BOOTSTRAP_SERVERS"}
    listed = await asyncio.to_thread(
        subprocess.run,
        [
            *COMMAND,
            "--bootstrap-server",
            sasl,
            "--command-config",
            str(properties),
            "topics",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert listed.returncode == 0 and "krb" in listed.stdout.split(), listed

    # kafka-python on the Kafka listener, by the environment's client keytab
    monkeypatch.setenv("KRB5_CLIENT_KTNAME", str(kdc.directory / "alice.keytab"))
    read = await asyncio.to_thread(_kafka_python, broker.ports["KSASL"])
    assert read == [(0, b"hw0"), (1, b"hw1"), (2, b"hw2"), (3, b"kp0"), (4, b"kp1"), (5, b"kp2")]
    assert await _read(cluster, "krb", 6) == [b"hw0", b"hw1", b"hw2", b"kp0", b"kp1", b"kp2"]


async def test_brokers_replicate_to_each_other_logged_in_by_kerberos(
    make_cluster: Callable[..., Cluster], kdc: Kdc
) -> None:
    # the inter-broker listener is GSSAPI: the controller's requests and the followers'
    # fetches log in with the brokers' own principal and keytab (Kafka's default)
    keytab = kdc.principal(SERVICE)
    settings = {
        **_settings(keytab),
        # Kafka's per-listener form this time
        "sasl.jaas.config": "",
        "listener.name.internal.gssapi.sasl.jaas.config": _settings(keytab)["sasl.jaas.config"],
        "listeners": "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,INTERNAL:SASL_PLAINTEXT",
        "kafka.protocol.listeners": "",
        "inter.broker.listener.name": "INTERNAL",
        "sasl.mechanism.inter.broker.protocol": "GSSAPI",
        # the brokers' principal is a user too: kafka
        "sasl.kerberos.principal.to.local.rules": "DEFAULT",
    }
    cluster = make_cluster(2, settings)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("replicated", 1, 2)])
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        for i in range(5):  # acks=all: each is on both brokers, copied over Kerberos
            await (await producer.send("replicated", f"r{i}".encode()))
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        (described,) = await admin.describe_topics(["replicated"])
    assert sorted(described.partitions[0].isr) == sorted(cluster.brokers)
    assert await _read(cluster, "replicated", 5) == [f"r{i}".encode() for i in range(5)]


async def test_a_kerberos_session_is_logged_in_again_on_its_connection(
    make_cluster: Callable[..., Cluster], kdc: Kdc
) -> None:
    # KIP-368: sessions of 2 s; the producer's one connection logs in again (a new
    # GSSAPI exchange each time, the broker's started afresh) and nothing fails
    broker_keytab = kdc.principal(SERVICE)
    kdc.principal("alice")
    cluster = make_cluster(1, {**_settings(broker_keytab), "connections.max.reauth.ms": "2000"})
    (broker,) = cluster.brokers.values()
    sasl = f"127.0.0.1:{broker.ports['SASL_PLAINTEXT']}"
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("krb", 1, 1)])
    async with Producer(bootstrap_servers=sasl, acks="all", **_as(kdc, "alice")) as producer:
        offsets = []
        for i in range(30):  # about 6 s: three sessions at least
            offsets.append((await (await producer.send("krb", b"%d" % i))).offset)
            await asyncio.sleep(0.2)
    assert offsets == list(range(30))
    log = broker.log_path.read_text()
    assert "sasl.authentication_failed" not in log
    assert "connection.session_expired" not in log  # each session was renewed in time
