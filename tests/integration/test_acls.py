"""ACLs on real brokers (authorizer.class.name=kafka.security.authorizer.AclAuthorizer):
SCRAM users on a SASL listener, the brokers replicating over a PLAINTEXT listener whose
anonymous principal is a super user, as Kafka's docs set it up. What a user checks: a
producer and a consumer group may do exactly what their ACLs say, on every broker, as soon
as a change made through any one has returned (the admin waits until every broker has read
it; Kafka's returns at once); refusals are typed errors that say which ACL is missing;
acked records are read back at their offsets by the user allowed to."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from client import (
    AclBinding,
    AclBindingFilter,
    Admin,
    Consumer,
    NewTopic,
    Operation,
    PatternType,
    Permission,
    Producer,
    ResourceType,
    TopicPartition,
    UserScramCredentialUpsertion,
)
from protocol.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    SecurityDisabledError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_cli import COMMAND

pytestmark = pytest.mark.timeout(180)

_SETTINGS = {
    "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
    "inter.broker.listener.name": "PLAINTEXT",
    "sasl.enabled.mechanisms": "SCRAM-SHA-256",
    "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
    "super.users": "User:ANONYMOUS;User:admin",
}


def _as(user: str) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": user,
        "sasl_plain_password": f"{user}-secret",
    }


def _sasl(cluster: Cluster, broker: int | None = None) -> str:
    brokers = cluster.brokers.values() if broker is None else [cluster.brokers[broker]]
    return ",".join(f"127.0.0.1:{b.ports['SASL_PLAINTEXT']}" for b in brokers)


async def _produce(bootstrap: str, user: str, topic: str, values: list[bytes]) -> list[int]:
    async with Producer(bootstrap_servers=bootstrap, acks="all", **_as(user)) as producer:
        return [(await producer.send_and_wait(topic, v)).offset for v in values]


async def _consume(
    bootstrap: str, user: str, topic: str, count: int, group: str = "g"
) -> list[bytes]:
    member = Consumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        **_as(user),
    )
    got: list[bytes] = []
    async with member:
        while len(got) < count:
            for records in (await member.getmany(timeout_ms=1000)).values():
                got.extend(r.value for r in records)
        await member.commit()
    return got


def _allow(user: str, operation: Operation, kind: ResourceType, name: str, **more: Any) -> Any:
    return AclBinding(
        kind,
        name,
        more.get("pattern", PatternType.LITERAL),
        f"User:{user}",
        "*",
        operation,
        more.get("permission", Permission.ALLOW),
    )


async def test_users_may_do_what_their_acls_say_on_every_broker(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, _SETTINGS)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:  # ANONYMOUS: a super user
        await admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(u, "SCRAM-SHA-256", f"{u}-secret")
                for u in ("alice", "bob", "admin")
            ]
        )
        await admin.create_topics([NewTopic("orders", 1, 3, {"min.insync.replicas": "2"})])
    sasl = _sasl(cluster)

    # nothing allowed yet: an idempotent producer is refused its id (Kafka's: it needs
    # WRITE on some topic, or IDEMPOTENT_WRITE), the topic is not even shown
    with pytest.raises(ClusterAuthorizationFailedError, match="IdempotentWrite on the cluster"):
        await _produce(sasl, "alice", "orders", [b"x"])
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        (orders,) = await admin.describe_topics(["orders"])
    assert orders.topic_id is not None
    async with Admin(bootstrap_servers=sasl, **_as("alice")) as alice:
        assert "orders" not in await alice.list_topics()
        # by its id (KIP-516): refused, without its name (ids are not secret, names are)
        with pytest.raises(TopicAuthorizationFailedError, match=orders.topic_id) as refused:
            await alice.describe_topics(topic_ids=[orders.topic_id])
        assert "orders" not in str(refused.value)
        with pytest.raises(TopicAuthorizationFailedError, match=orders.topic_id) as refused:
            await alice.delete_topics(topic_ids=[orders.topic_id])
        assert "orders" not in str(refused.value)
        with pytest.raises(TopicAuthorizationFailedError):
            await alice.create_topics([NewTopic("mine", 1, 1)])
        with pytest.raises(ClusterAuthorizationFailedError, match="Describe on the cluster"):
            await alice.describe_acls()

    # kafka-acls --producer, through the command
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60)
    plain = ["--bootstrap-server", cluster.bootstrap]
    added = run(
        [
            *COMMAND,
            *plain,
            "acls",
            "--add",
            "--allow-principal",
            "User:alice",
            "--producer",
            "--topic",
            "orders",
        ]
    )
    assert added.returncode == 0 and "Added 3 ACLs" in added.stdout, added
    values = [b"%03d" % i for i in range(100)]
    # made through one broker, in force on every one once the command has returned (the
    # admin waits until each broker has read them; Kafka's returns at once)
    for n, broker in enumerate(cluster.brokers):
        assert await _produce(_sasl(cluster, broker), "alice", "orders", values[:1]) == [n]
    offsets = await _produce(sasl, "alice", "orders", values)
    assert offsets == list(range(3, 103)), offsets
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("secret", 1, 3)])
    with pytest.raises(TopicAuthorizationFailedError, match="topic 'secret'"):
        await _produce(sasl, "alice", "secret", [b"x"])

    # a consumer group: READ on the topic and on the group (kafka-acls --consumer)
    with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
        await _consume(sasl, "bob", "orders", 1)
    async with Admin(bootstrap_servers=sasl, **_as("admin")) as admin:  # a super user
        await admin.create_acls(
            [
                _allow("bob", Operation.READ, ResourceType.TOPIC, "orders"),
                _allow("bob", Operation.READ, ResourceType.GROUP, "g"),
            ]
        )
        listed = await admin.describe_acls(AclBindingFilter(principal="User:bob"))
        assert {(a.resource_type, a.operation) for a in listed} == {
            (ResourceType.TOPIC, Operation.READ),
            (ResourceType.GROUP, Operation.READ),
        }
    got = await _consume(sasl, "bob", "orders", 103)  # on whichever broker it asks
    assert got[3:] == values
    async with Consumer(bootstrap_servers=sasl, group_id="g", **_as("bob")) as bob:
        assert await bob.committed(TopicPartition("orders", 0)) == 103
    # bob may read, not write
    with pytest.raises(ClusterAuthorizationFailedError):
        await _produce(sasl, "bob", "orders", [b"no"])

    # a DENY wins over the ALLOW, as soon as the brokers have it
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_acls(
            [
                _allow(
                    "bob", Operation.READ, ResourceType.TOPIC, "orders", permission=Permission.DENY
                )
            ]
        )
    consumer = Consumer(bootstrap_servers=sasl, auto_offset_reset="earliest", **_as("bob"))
    async with consumer:
        consumer.assign([TopicPartition("orders", 0)])

        async def refused() -> bool:
            try:
                await consumer.getmany(timeout_ms=500)
            except TopicAuthorizationFailedError:
                return True
            return False

        assert await _until(refused, bool)

    # a prefix: everything alice makes under logs-; writing to a topic it would have to
    # create, without Create, fails at once (not after max_block_ms)
    prefix = {"pattern": PatternType.PREFIXED}
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_acls(
            [_allow("alice", Operation.WRITE, ResourceType.TOPIC, "logs-", **prefix)]
        )
    with pytest.raises(TopicAuthorizationFailedError, match="may not Create topic 'logs-app'"):
        await _produce(sasl, "alice", "logs-app", [b"x"])
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_acls(
            [_allow("alice", Operation.CREATE, ResourceType.TOPIC, "logs-", **prefix)]
        )
    async with Admin(bootstrap_servers=sasl, **_as("alice")) as alice:
        await alice.create_topics([NewTopic("logs-app", 1, 3)])
        with pytest.raises(TopicAuthorizationFailedError):
            await alice.create_topics([NewTopic("other", 1, 3)])
    assert await _produce(sasl, "alice", "logs-app", [b"a", b"b"]) == [0, 1]

    # the command lists and removes them
    listed = run([*COMMAND, *plain, "acls", "--list", "--topic", "orders"])
    assert listed.returncode == 0, listed
    rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    assert ["Topic", "orders", "Literal", "User:bob", "*", "Read", "Deny"] in rows
    assert len(rows) == 5, rows  # alice's three, bob's allow and deny
    removed = run(
        [
            *COMMAND,
            *plain,
            "acls",
            "--remove",
            "--topic",
            "orders",
            "--deny-principal",
            "User:bob",
            "--operation",
            "Read",
        ]
    )
    assert removed.returncode == 0 and "Removed 1 ACL:" in removed.stdout, removed
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_acls([_allow("bob", Operation.READ, ResourceType.GROUP, "again")])
    assert len(await _consume(sasl, "bob", "orders", 103, "again")) == 103  # reading again
    refused_cli = run([*COMMAND, "--bootstrap-server", sasl, "acls", "--list"])
    assert refused_cli.returncode == 1 and refused_cli.stderr.count("\n") == 1, refused_cli


async def test_a_transactional_id_needs_its_own_acl(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, {**_SETTINGS, "transaction.state.log.num.partitions": "3"})
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("carol", "SCRAM-SHA-256", "carol-secret")]
        )
        await admin.create_topics([NewTopic("ledger", 1, 3)])
        await admin.create_acls([_allow("carol", Operation.WRITE, ResourceType.TOPIC, "ledger")])
    sasl = _sasl(cluster)
    producer = Producer(bootstrap_servers=sasl, transactional_id="books", **_as("carol"))
    with pytest.raises(TransactionalIdAuthorizationFailedError, match="--transactional-id books"):
        await producer.start()
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60)
    added = run(
        [
            *COMMAND,
            "--bootstrap-server",
            cluster.bootstrap,
            "acls",
            "--add",
            "--allow-principal",
            "User:carol",
            "--producer",
            "--topic",
            "ledger",
            "--transactional-id",
            "books",
        ]
    )
    assert added.returncode == 0 and "TransactionalId" in added.stdout, added
    # in force on every broker as the command returns: the coordinator, and the leader
    # (Produce checks Write on the transactional id too)
    allowed = Producer(bootstrap_servers=sasl, transactional_id="books", **_as("carol"))
    async with allowed, allowed.transaction():
        await allowed.send("ledger", b"entry")
    # a super user's transactional id is left out of what carol may list or describe
    admins = Producer(bootstrap_servers=cluster.bootstrap, transactional_id="vault")
    async with admins, admins.transaction():
        await admins.send("ledger", b"admin's")
    async with Admin(bootstrap_servers=sasl, **_as("carol")) as carol:
        assert [t.transactional_id for t in await carol.list_transactions()] == ["books"]
        with pytest.raises(TransactionalIdAuthorizationFailedError):
            await carol.describe_transactions(["vault"])
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        listed = [t.transactional_id for t in await admin.list_transactions()]
        assert listed == ["books", "vault"]


async def test_acl_requests_without_an_authorizer_say_how_to_turn_it_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        with pytest.raises(SecurityDisabledError, match=r"authorizer\.class\.name"):
            await admin.describe_acls()
        await admin.create_topics([NewTopic("open", 1, 1)])  # and everything is allowed
