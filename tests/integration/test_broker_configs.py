"""Dynamic broker configs on a real cluster (real ZooKeeper, real broker processes): a
broker's settings, or every broker's default, changed without a restart.

- a default (``message.max.bytes``) set with `headwater broker-configs --broker-defaults`
  applies on every broker at once, to every topic without an override of its own; a
  topic's own ``max.message.bytes`` still wins; one broker's value beats the default on
  that broker only; deleting them returns to the config file's value;
- a broker restarted (kill -9) reads them before it opens its logs; a hand-edited value
  that does not validate is ignored, the rest apply, and the broker serves;
- a change to a setting that cannot change live, a bad value, or another broker's
  settings sent to this one: refused with the reason, nothing changed;
- ``unclean.leader.election.enable`` turned on as the default: an offline partition gets
  a leader at once, not at the next broker change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient

from client import Admin, ConfigResource, NewTopic, Producer
from client.localcluster import ZooKeeperServer
from protocol.apis import (
    ApiKey,
    ApiVersionsRequest,
    CreatableReplicaAssignment,
    CreatableTopic,
    CreateTopicsRequest,
    IncrementalAlterableConfig,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResource,
    encode_request,
)
from protocol.errors import InvalidRequestError, MessageTooLargeError
from tests.integration.conftest import Cluster, module_cluster
from tests.integration.conftest import until as _until
from tests.integration.test_topic_configs import (
    _headwater,
    offline_with_a_stale_replica,
    unclean_state,
)
from tests.integration.test_topics import _leaders, _metadata, _ready_cluster, _request

pytestmark = pytest.mark.timeout(120)

SETTINGS = {"message.max.bytes": "1000000"}  # in the file: STATIC_BROKER_CONFIG
BIG = b"x" * 5000


@pytest.fixture(scope="module")
def shared(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    yield from module_cluster(zookeeper, tmp_path_factory.mktemp("bconf"), "bconf", SETTINGS)


async def _accepted(bootstrap: str, topic: str, partition: int) -> bool:
    """Whether a 5,000-byte record is taken by the partition's leader now."""
    # retries: a leader just restarted may answer NOT_LEADER_OR_FOLLOWER for a moment
    async with Producer(bootstrap_servers=bootstrap, acks=1) as producer:
        try:
            await producer.send_and_wait(topic, BIG, partition=partition)
        except MessageTooLargeError as exc:
            assert "max.message.bytes (2000)" in exc.message, exc
            return False
    return True


async def _acceptance(bootstrap: str, topic: str, partitions: int) -> list[bool]:
    return [await _accepted(bootstrap, topic, p) for p in range(partitions)]


async def _dynamic(bootstrap: str) -> set[tuple[str, str, str, str]]:
    shown = await _headwater(bootstrap, "broker-configs", "--describe")
    return {tuple(line.split("\t")) for line in shown.stdout.splitlines()[1:]}  # type: ignore[misc]


async def test_a_default_applies_everywhere_at_once_and_a_brokers_own_value_beats_it(
    shared: Cluster,
) -> None:
    bootstrap = shared.bootstrap
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics(
            [
                NewTopic("follows", 3, 3),
                NewTopic("own", 1, 3, {"max.message.bytes": "100000"}),
            ]
        )
    ports = await _ready_cluster(shared)
    leaders = await _leaders(ports[1], "follows")
    assert await _acceptance(bootstrap, "follows", 3) == [True, True, True]

    await _headwater(
        bootstrap,
        "broker-configs",
        "--alter",
        "--broker-defaults",
        "--add-config",
        "message.max.bytes=2000",
    )
    # every broker, every partition it leads, as the command returns (the admin waits
    # until every broker has the new default; Kafka's returns when the one asked has it):
    # no restart, no wait for a next event
    assert await _acceptance(bootstrap, "follows", 3) == [False] * 3
    assert await _accepted(bootstrap, "own", 0)  # the topic's own override wins
    async with Admin(bootstrap_servers=bootstrap) as admin:
        entry = (await admin.describe_configs("follows"))["max.message.bytes"]
        assert (entry.value, entry.source) == ("2000", "DYNAMIC_DEFAULT_BROKER_CONFIG")
        assert [(s.value, s.source) for s in entry.synonyms] == [
            ("2000", "DYNAMIC_DEFAULT_BROKER_CONFIG"),
            ("1000000", "STATIC_BROKER_CONFIG"),
            ("1048588", "DEFAULT_CONFIG"),
        ]

    lead = leaders[0]
    await _headwater(
        bootstrap,
        "broker-configs",
        "--alter",
        "--broker",
        str(lead),
        "--add-config",
        "message.max.bytes=100000",
    )
    expected = [leaders[p] == lead for p in range(3)]
    assert await _acceptance(bootstrap, "follows", 3) == expected  # in force when answered
    # its followers take what it took, whatever their own limit (found in review: they
    # refused it on every fetch, and the acks=all produce waited for them in vain)
    mine = expected.index(True)
    async with Producer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000) as p:
        await p.send_and_wait("follows", BIG, partition=mine)
    assert await _dynamic(bootstrap) == {  # each set once, where it was set (Kafka's)
        ("<default>", "message.max.bytes", "2000", "DYNAMIC_DEFAULT_BROKER_CONFIG"),
        (str(lead), "message.max.bytes", "100000", "DYNAMIC_BROKER_CONFIG"),
    }

    for entity in (["--broker", str(lead)], ["--broker-defaults"]):
        await _headwater(
            bootstrap,
            "broker-configs",
            "--alter",
            *entity,
            "--delete-config",
            "message.max.bytes",
        )
    assert await _acceptance(bootstrap, "follows", 3) == [True] * 3
    assert await _dynamic(bootstrap) == set()


async def test_bad_changes_are_refused_with_the_reason_and_change_nothing(
    shared: Cluster,
) -> None:
    bootstrap = shared.bootstrap
    refused = await _headwater(
        bootstrap,
        "broker-configs",
        "--alter",
        "--broker-defaults",
        "--add-config",
        "log.dirs=/elsewhere",
        rc=1,
    )
    assert "log.dirs cannot be changed on a running broker" in refused.stderr
    assert "restart" in refused.stderr
    refused = await _headwater(
        bootstrap,
        "broker-configs",
        "--alter",
        "--broker",
        "1",
        "--add-config",
        "min.insync.replicas=0,log.retention.ms=1000",
        rc=1,
    )
    assert "min.insync.replicas='0' (from broker 1) is invalid: it must be at least 1" in (
        refused.stderr
    )
    # broker 2's settings sent to broker 1: only broker 2 may take them (as Kafka)
    ports = await _ready_cluster(shared)
    change = IncrementalAlterConfigsRequest(
        resources=[
            IncrementalAlterConfigsResource(
                resource_type=4,
                resource_name="2",
                configs=[IncrementalAlterableConfig(name="log.retention.ms", value="1000")],
            )
        ]
    )
    answer = await _request(ports[1], ApiKey.INCREMENTAL_ALTER_CONFIGS, change)
    assert answer.responses[0].error_code == InvalidRequestError.code
    assert "send broker 2's config changes to broker 2" in answer.responses[0].error_message
    assert await _dynamic(bootstrap) == set()  # nothing was written
    shown = await _headwater(bootstrap, "broker-configs", "--describe", "--broker", "1", "--all")
    assert "1\tmessage.max.bytes\t1000000\tSTATIC_BROKER_CONFIG" in shown.stdout
    assert "1\tlog.retention.ms\t604800000\tDEFAULT_CONFIG" in shown.stdout
    await _metadata(ports[1])  # and the broker serves on


async def test_a_restarted_broker_reads_them_before_its_logs_and_ignores_bad_ones(
    shared: Cluster,
) -> None:
    bootstrap = shared.bootstrap
    ports = await _ready_cluster(shared)
    request = CreateTopicsRequest(
        topics=[
            CreatableTopic(
                name="on-three",
                assignments=[CreatableReplicaAssignment(partition_index=0, broker_ids=[3])],
            )
        ]
    )
    assert (await _request(ports[1], ApiKey.CREATE_TOPICS, request)).topics[0].error_code == 0
    await _leaders(ports[3], "on-three")
    # written as another tool might: one value that does not validate, one that does
    zk = KazooClient(hosts=shared.zookeeper_connect, timeout=10)
    await asyncio.to_thread(zk.start, 10)
    try:
        config = {"version": 1, "config": {"message.max.bytes": "2000", "log.roll.ms": "soon"}}
        await asyncio.to_thread(zk.ensure_path, "/config/brokers/3")  # there if 3 had any
        await asyncio.to_thread(zk.set, "/config/brokers/3", json.dumps(config).encode())
        shared.brokers[3].kill()  # kill -9
        await _until(  # its ZooKeeper session gone, another run may take its id
            lambda: _metadata(ports[1]), lambda m: 3 not in {b.node_id for b in m.brokers}
        )
        shared.start_broker(3)
        await _until(
            lambda: _metadata(ports[1], ["on-three"]),
            lambda m: m.topics[0].partitions and m.topics[0].partitions[0].leader_id == 3,
        )
        await _until(lambda: _accepted(bootstrap, "on-three", 0), lambda ok: ok is False)
        async with Admin(bootstrap_servers=bootstrap) as admin:
            found = await admin.describe_configs(ConfigResource("broker", "3"))
        assert found["message.max.bytes"].source == "DYNAMIC_BROKER_CONFIG"
        assert found["log.roll.ms"].source == "DEFAULT_CONFIG"  # ignored, not fatal
    finally:
        await asyncio.to_thread(zk.stop)
        zk.close()
    await _headwater(
        shared.bootstrap,
        "broker-configs",
        "--alter",
        "--broker",
        "3",
        "--delete-config",
        "message.max.bytes",  # the bad value stays ignored: the change is not refused for it
    )
    assert await _accepted(bootstrap, "on-three", 0)
    await _headwater(
        shared.bootstrap,
        "broker-configs",
        "--alter",
        "--broker",
        "3",
        "--delete-config",
        "log.roll.ms",
    )
    assert await _dynamic(bootstrap) == set()


async def test_unclean_election_enabled_as_the_default_elects_at_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, {"replica.lag.time.max.ms": "2000"})
    ports = await offline_with_a_stale_replica(cluster)
    state = unclean_state
    await _headwater(
        f"127.0.0.1:{ports[3]}",
        "broker-configs",
        "--alter",
        "--broker-defaults",
        "--add-config",
        "unclean.leader.election.enable=true",
    )
    # no broker comes or goes: the default's change itself makes the controller elect
    elected = await _until(
        lambda: _metadata(ports[3], ["unclean"]), lambda m: state(m).leader_id == 2
    )
    assert state(elected).isr_nodes == [2]
    async with Producer(bootstrap_servers=f"127.0.0.1:{ports[3]}", acks=1) as producer:
        written = await producer.send_and_wait("unclean", b"writable again", partition=0)
    assert written.offset >= 0


async def _served(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from ``source`` that the broker answers (ApiVersions)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.writelines(encode_request(ApiKey.API_VERSIONS, 0, 1, ApiVersionsRequest()))
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 10))
        await reader.readexactly(size)
    except BaseException:
        await _close(writer)
        raise
    return reader, writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _dropped(port: int, source: str) -> bool:
    """Whether the broker closes a new connection from ``source`` before answering."""
    try:
        _, writer = await _served(port, source)
    except (asyncio.IncompleteReadError, ConnectionError):
        return True
    await _close(writer)
    return False


async def _defaults(bootstrap: str, *args: str, rc: int = 0) -> None:
    """``headwater broker-configs --alter --broker-defaults`` with ``args``."""
    await _headwater(bootstrap, "broker-configs", "--alter", "--broker-defaults", *args, rc=rc)


def _two_listeners(make_cluster: Callable[..., Cluster]) -> tuple[int, int]:
    """One broker with an inter-broker listener and a client one: their ports."""
    settings = {
        "listeners": "INTERNAL://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
        "listener.security.protocol.map": "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
        "inter.broker.listener.name": "INTERNAL",
    }
    ports = make_cluster(1, settings).brokers[1].ports
    return ports["INTERNAL"], ports["EXTERNAL"]


async def test_connection_limits_apply_to_the_next_connection(
    make_cluster: Callable[..., Cluster],
) -> None:
    """max.connections.per.ip.overrides and max.connections set live: the connection past
    a limit is closed as it comes and the broker serves the others; the inter-broker
    listener is never shut out; a closed connection frees its slot."""
    internal, external = _two_listeners(make_cluster)
    bootstrap = f"127.0.0.1:{internal}"
    await _headwater(
        bootstrap,
        "broker-configs",
        "--alter",
        "--broker-defaults",
        "--add-config",
        "max.connections.per.ip.overrides=127.0.0.2:2",
    )
    held = [await _served(external, "127.0.0.2") for _ in range(2)]
    assert await _dropped(external, "127.0.0.2")
    assert await _dropped(internal, "127.0.0.2")  # an address's limit is on every listener
    assert not await _dropped(external, "127.0.0.3")  # another address is not held back
    await _close(held.pop()[1])
    await _until(lambda: _dropped(external, "127.0.0.2"), lambda dropped: not dropped)

    await _headwater(
        bootstrap,
        "broker-configs",
        "--alter",
        "--broker",
        "1",
        "--add-config",
        "max.connections=3",
    )
    held += [await _served(external, "127.0.0.4") for _ in range(2)]  # 3 clients now
    assert await _dropped(external, "127.0.0.5")
    assert not await _dropped(internal, "127.0.0.5")  # replication and the controller get in
    async with Admin(bootstrap_servers=bootstrap) as admin:  # so do tools on it
        assert (await admin.describe_cluster()).brokers

    # a listener's own limit (KIP-402), set live: the external listener holds 3 now
    await _headwater(
        bootstrap,
        *("broker-configs", "--alter", "--broker", "1", "--add-config"),
        "max.connections=1000,listener.name.external.max.connections=3",
    )
    assert await _dropped(external, "127.0.0.6")
    assert not await _dropped(internal, "127.0.0.6")
    # ...and the inter-broker listener's own limit holds for it too; never 0 (Kafka's)
    refused = await _headwater(
        bootstrap,
        *("broker-configs", "--alter", "--broker", "1", "--add-config"),
        "listener.name.internal.max.connections=0",
        rc=1,
    )
    assert "must be at least 1" in refused.stderr
    held.append(await _served(internal, "127.0.0.7"))  # one of its own, at least
    await _headwater(
        bootstrap,
        *("broker-configs", "--alter", "--broker", "1", "--add-config"),
        "listener.name.internal.max.connections=1",
    )
    assert await _dropped(internal, "127.0.0.7")
    for _, writer in held:
        await _close(writer)


async def _answered_in(port: int, source: str) -> float | None:
    """Seconds until a new connection from ``source`` is answered; None: closed first."""
    started = asyncio.get_running_loop().time()
    try:
        _, writer = await _served(port, source)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    await _close(writer)
    return asyncio.get_running_loop().time() - started


async def test_connection_rates_set_live_slow_and_turn_away_new_connections(
    make_cluster: Callable[..., Cluster],
) -> None:
    """KIP-612 on a real broker. An address's connection_creation_rate (set with the
    command, shown with it): past it, its new connections are closed unanswered,
    other addresses are untouched, and removing it lifts it. The broker-wide
    max.connection.creation.rate (a dynamic default): past it, new client connections
    are all answered, but late; the inter-broker listener is not slowed."""
    internal, external = _two_listeners(make_cluster)
    bootstrap = f"127.0.0.1:{internal}"
    await _headwater(
        bootstrap,
        "quotas",
        "--alter",
        "--ip",
        "127.0.0.2",
        "--add-config",
        "connection_creation_rate=0",
    )
    shown = await _headwater(bootstrap, "quotas", "--describe", "--ip", "127.0.0.2")
    rows = [line.split("\t") for line in shown.stdout.splitlines()[1:]]
    assert rows == [["-", "-", "127.0.0.2", "connection_creation_rate", "0"]]
    # 0 shuts the address out (each new connection held a window, then closed; the rate
    # arithmetic of other bounds is tests/unit/test_connection_quotas.py's); the broker
    # reads it from its change notification
    await _until(lambda: _answered_in(external, "127.0.0.2"), lambda t: t is None)
    assert await _answered_in(internal, "127.0.0.2") is None  # an address's: any listener
    assert await _answered_in(external, "127.0.0.3") is not None  # another: untouched
    async with Admin(bootstrap_servers=bootstrap) as admin:
        assert await admin.describe_client_quotas(ip="127.0.0.2") == {
            (("ip", "127.0.0.2"),): {"connection_creation_rate": 0.0}
        }
        with pytest.raises(InvalidRequestError, match="not an IP address"):
            await admin.alter_client_quotas(
                {(("ip", "broker-1"),): {"connection_creation_rate": 1}}
            )
        with pytest.raises(InvalidRequestError, match="whole number"):
            await admin.alter_client_quotas({(("ip", None),): {"connection_creation_rate": 1.5}})
        with pytest.raises(InvalidRequestError, match="connection_creation_rate"):
            await admin.alter_client_quotas({(("ip", None),): {"producer_byte_rate": 100}})
        with pytest.raises(InvalidRequestError, match="producer_byte_rate"):
            await admin.alter_client_quotas({(("user", None),): {"connection_creation_rate": 1}})
        with pytest.raises(InvalidRequestError, match="IP filter component"):
            await admin.describe_client_quotas(user="alice", ip="127.0.0.2")  # Kafka's words
        await admin.alter_client_quotas({(("ip", "0:0::1"),): {"connection_creation_rate": 5}})
        assert await admin.describe_client_quotas(ip="::1") == {  # one spelling
            (("ip", "::1"),): {"connection_creation_rate": 5.0}
        }
        await admin.alter_client_quotas(
            {(("ip", "127.0.0.2"),): {"connection_creation_rate": None}}
        )
    await _until(lambda: _answered_in(external, "127.0.0.2"), lambda t: t is not None)

    await _defaults(bootstrap, "--add-config", "max.connection.creation.rate=2")
    # 26 at once: past the burst (20 over the 11 s, some used above), they wait their turn
    waits = await asyncio.gather(*(_answered_in(external, "127.0.0.4") for _ in range(26)))
    assert None not in waits  # slowed, never turned away
    assert max(w for w in waits if w is not None) >= 0.4, waits
    async with Admin(bootstrap_servers=bootstrap) as admin:  # the brokers' listener: free
        assert (await admin.describe_cluster()).brokers
    await _defaults(bootstrap, "--delete-config", "max.connection.creation.rate")
    await _defaults(bootstrap, "--add-config", "max.connection.creation.rate=-1", rc=1)
