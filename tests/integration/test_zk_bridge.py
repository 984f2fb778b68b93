"""The kazoo bridge against a real ZooKeeper: results and watches arrive on the loop."""

import asyncio
import os
import signal
import threading
from collections.abc import Awaitable
from functools import partial
from typing import Any, TypeVar

import pytest
import structlog.testing
from kazoo.client import KazooClient

from broker import zk
from broker.admin import TopicAdmin
from broker.broker_configs import BrokerConfigs
from broker.config import load_config
from broker.config_changes import incremented
from broker.metadata import MetadataCache
from broker.sasl import ScramCredentials
from broker.zk import (
    Fenced,
    NodeExists,
    NoNode,
    SessionState,
    VersionConflict,
    ZkBridge,
    ZkConnectionLoss,
    ZkError,
)
from client.localcluster import ZooKeeperServer
from protocol.apis import (
    AlterConfigOp,
    AlterUserScramCredentialsRequest,
    CreatableTopic,
    CreatableTopicConfig,
    CreatePartitionsRequest,
    CreatePartitionsTopic,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    IncrementalAlterableConfig,
    ScramCredentialDeletion,
    ScramCredentialUpsertion,
)

T = TypeVar("T")


async def _bridge(server: ZooKeeperServer, session_timeout_ms: int = 4_000) -> ZkBridge:
    bridge = ZkBridge(server.connect_string, session_timeout_ms=session_timeout_ms)
    await bridge.start(timeout_s=10)
    return bridge


async def test_operations_and_compare_and_set(zookeeper: ZooKeeperServer, zk_root: str) -> None:
    bridge = await _bridge(zookeeper)
    try:
        path = f"{zk_root}/a/b"
        assert await bridge.create(path, b"one", makepath=True) == path
        with pytest.raises(NodeExists):
            await bridge.create(path, b"again")
        data, stat = await bridge.get(path)
        assert data == b"one"
        await bridge.set(path, b"two", version=stat.version)
        with pytest.raises(VersionConflict, match="changed since it was read"):
            await bridge.set(path, b"lost race", version=stat.version)
        assert (await bridge.get(path))[0] == b"two"
        assert await bridge.get_children(f"{zk_root}/a") == ["b"]
        await bridge.delete(zk_root, recursive=True)
        assert await bridge.exists(zk_root) is None
        with pytest.raises(NoNode, match="does not exist"):
            await bridge.get(path)
    finally:
        await bridge.stop()


async def test_guarded_writes_are_fenced_by_the_guard_znode(
    zookeeper: ZooKeeperServer, zk_root: str
) -> None:
    """A controller's writes carry /controller_epoch's version (Kafka's KAFKA-6082)."""
    bridge = await _bridge(zookeeper)
    try:
        guard, path = f"{zk_root}/epoch", f"{zk_root}/state"
        await bridge.create(guard, b"1", makepath=True)
        assert await bridge.guarded(guard, 0, path, b"a", version=zk.CREATE) == 0
        with pytest.raises(NodeExists):
            await bridge.guarded(guard, 0, path, b"again", version=zk.CREATE)
        assert await bridge.guarded(guard, 0, path, b"b", version=0) == 1
        with pytest.raises(VersionConflict):
            await bridge.guarded(guard, 0, path, b"stale", version=0)
        await bridge.set(guard, b"2")  # a newer controller bumped the epoch
        with pytest.raises(Fenced, match="newer controller"):
            await bridge.guarded(guard, 0, path, b"zombie", version=1)
        assert (await bridge.get(path))[0] == b"b"  # nothing the zombie wrote landed
    finally:
        await bridge.stop()


async def test_a_guarded_create_makes_its_parents_in_the_same_multi(
    zookeeper: ZooKeeperServer, zk_root: str
) -> None:
    """A partition's first state and its znode in one round trip; all or nothing."""
    bridge = await _bridge(zookeeper)
    try:
        guard = (f"{zk_root}/epoch", 0)
        await bridge.create(guard[0], b"1", makepath=True)
        parent = f"{zk_root}/p0"

        async def create(path: str, parent: str) -> int | zk.ZkError:
            write = zk.GuardedWrite(path, b"s", zk.CREATE, parents=(parent,))
            return (await bridge.write_many([write], guard=guard))[0]

        assert await create(f"{parent}/state", parent) == 0
        assert (await bridge.get(f"{parent}/state"))[0] == b"s"
        # the parent is there already (an earlier controller made it, then died)
        refused = await create(f"{parent}/other", parent)
        assert isinstance(refused, NodeExists) and "p0 already exists" in str(refused)
        assert await bridge.exists(f"{parent}/other") is None  # nothing of it landed
        await bridge.set(guard[0], b"2")
        assert isinstance(await create(f"{zk_root}/p1/state", f"{zk_root}/p1"), Fenced)
        assert await bridge.exists(f"{zk_root}/p1") is None
    finally:
        await bridge.stop()


async def test_many_writes_refuse_each_write_alone_and_make_the_rest(
    zookeeper: ZooKeeperServer, zk_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many writes in a few multis: a conflict, a znode that exists and a missing parent
    are each refused alone (each in its own multi here) and every other write is made;
    a moved guard refuses them all and makes none."""
    monkeypatch.setattr(zk, "_MULTI_OPS", 4)  # 10 writes: three multis, in flight together
    bridge = await _bridge(zookeeper)
    try:
        guard = f"{zk_root}/epoch"
        await bridge.create(guard, b"1", makepath=True)
        for i in range(6):
            await bridge.create(f"{zk_root}/n{i}", b"v0")
        await bridge.set(f"{zk_root}/n2", b"v1")  # at version 1: a write at 0 conflicts
        await bridge.create(f"{zk_root}/p8")  # an earlier controller made this parent
        writes = [zk.GuardedWrite(f"{zk_root}/n{i}", b"new", 0) for i in range(6)]
        writes += [
            zk.GuardedWrite(f"{zk_root}/p6/s", b"s", zk.CREATE, parents=(f"{zk_root}/p6",)),
            zk.GuardedWrite(f"{zk_root}/none/s", b"s", zk.CREATE),  # no parent
            zk.GuardedWrite(f"{zk_root}/p8/s", b"s", zk.CREATE, parents=(f"{zk_root}/p8",)),
            zk.GuardedWrite(f"{zk_root}/n5", b"new", zk.CREATE),  # exists
        ]
        results = await bridge.write_many(writes, guard=(guard, 0))
        assert [r for i, r in enumerate(results[:6]) if i != 2] == [1] * 5  # new versions
        assert isinstance(results[2], VersionConflict)
        assert results[6] == 0
        assert isinstance(results[7], NoNode)
        assert isinstance(results[8], NodeExists) and "p8 already exists" in str(results[8])
        assert isinstance(results[9], NodeExists)
        for i in (0, 1, 3, 4, 5):
            assert (await bridge.get(f"{zk_root}/n{i}"))[0] == b"new"
        assert (await bridge.get(f"{zk_root}/n2"))[0] == b"v1"
        assert (await bridge.get(f"{zk_root}/p6/s"))[0] == b"s"
        assert await bridge.exists(f"{zk_root}/p8/s") is None
        await bridge.set(guard, b"2")
        moved = await bridge.write_many(
            [zk.GuardedWrite(f"{zk_root}/n0", b"z", 1)], guard=(guard, 0)
        )
        assert isinstance(moved[0], Fenced)
        assert (await bridge.get(f"{zk_root}/n0"))[0] == b"new"  # not made
        # unguarded (a leader's ISR writes): the version alone decides
        unguarded = [zk.GuardedWrite(f"{zk_root}/n{i}", b"u", v) for i, v in ((0, 1), (2, 0))]
        assert (await bridge.write_many(unguarded))[0] == 2
        assert isinstance((await bridge.write_many(unguarded[1:]))[0], VersionConflict)
    finally:
        await bridge.stop()


async def test_watches_fire_on_the_loop_thread(zookeeper: ZooKeeperServer, zk_root: str) -> None:
    bridge = await _bridge(zookeeper)
    other = KazooClient(hosts=zookeeper.connect_string)
    other.start(timeout=10)
    try:
        await bridge.ensure_path(zk_root)
        fired: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

        def watch(event: object) -> None:
            fired.put_nowait((getattr(event, "type", "?"), threading.get_ident()))

        assert await bridge.get_children(zk_root, watch=watch) == []
        other.create(f"{zk_root}/new")  # another client changes it
        kind, thread = await asyncio.wait_for(fired.get(), 10)
        assert kind == "CHILD"
        assert thread == threading.get_ident()  # delivered on the event loop's thread
    finally:
        other.stop()
        other.close()
        await bridge.stop()


async def test_session_expiry_is_reported_and_ephemerals_go(
    zookeeper: ZooKeeperServer, zk_root: str
) -> None:
    bridge = await _bridge(zookeeper, session_timeout_ms=2_000)
    states: asyncio.Queue[str] = asyncio.Queue()
    bridge.on_state_change(states.put_nowait)
    lost: list[int | None] = []
    bridge.on_session_lost(lost.append)
    try:
        await bridge.ensure_path(zk_root)
        await bridge.create(f"{zk_root}/me", b"", ephemeral=True)
        # Expire the session the way ZooKeeper's own tests do: a second client joins it
        # with the same id and password, then closes it.
        assert bridge.client_id is not None
        session_id, password = bridge.client_id
        thief = KazooClient(hosts=zookeeper.connect_string, client_id=(session_id, password))
        thief.start(timeout=10)
        thief.stop()
        thief.close()
        seen = []
        while SessionState.LOST not in seen:
            seen.append(await asyncio.wait_for(states.get(), 15))
        while seen[-1] != SessionState.CONNECTED:  # kazoo opens a new session by itself
            seen.append(await asyncio.wait_for(states.get(), 15))
        assert bridge.session_id != session_id
        assert lost == [session_id]  # which session ended: the controller's question
        assert await bridge.exists(f"{zk_root}/me") is None  # the ephemeral went with it
    finally:
        await bridge.stop()


async def test_no_zookeeper_is_a_clear_error_within_the_timeout() -> None:
    bridge = ZkBridge("127.0.0.1:1", session_timeout_ms=2_000)
    with pytest.raises(ZkError, match=r"cannot connect to ZooKeeper at 127.0.0.1:1 within 1 s"):
        await bridge.start(timeout_s=1, attempt_timeout_s=0.5)
    await bridge.stop()


def test_payloads_are_kafkas_json() -> None:
    reg = zk.BrokerRegistration(broker_id=1, host="127.0.0.1", port=9092, rack="r1")
    raw = reg.to_json(timestamp_ms=5)
    assert b'"endpoints":["PLAINTEXT://127.0.0.1:9092"]' in raw
    assert zk.BrokerRegistration.from_json(1, raw) == reg
    assignment = zk.TopicAssignment("t", {0: [1, 2, 3], 1: [2, 3, 1]})
    assert b'"partitions":{"0":[1,2,3],"1":[2,3,1]}' in assignment.to_json()
    assert zk.TopicAssignment.from_json("t", assignment.to_json()) == assignment
    state = zk.PartitionState(leader=2, leader_epoch=7, isr=[2, 3], controller_epoch=4)
    path = zk.paths.partition_state("t", 0)
    assert path == "/brokers/topics/t/partitions/0/state"
    assert zk.PartitionState.from_json(path, state.to_json()) == state
    assert zk.controller_from_json(zk.controller_json(3, 1)) == 3
    assert zk.cluster_id_from_json(zk.cluster_id_json("abc")) == "abc"
    assert zk.topic_config_from_json("t", zk.topic_config_json({"retention.ms": "5"})) == {
        "retention.ms": "5"
    }


@pytest.mark.parametrize(
    "payload", [b"not json", b"[1]", b'{"host": "h"}', b'{"port": "x", "host": 1}']
)
def test_corrupt_znodes_are_named(payload: bytes) -> None:
    with pytest.raises(zk.CorruptZnode, match="/brokers/ids/4"):
        zk.BrokerRegistration.from_json(4, payload)


async def test_a_live_session_stays_current_and_a_silent_zookeeper_makes_it_not(
    zookeeper: ZooKeeperServer,
) -> None:
    """``session_current`` is kept fresh by kazoo's pings (every third of the session)
    while ZooKeeper answers, and goes within 0.9 of the session once it stops answering
    (here: paused), whatever kazoo's ``connected`` says meanwhile."""
    bridge = await _bridge(zookeeper, session_timeout_ms=2_000)
    try:
        await asyncio.sleep(2.5)  # past 0.9 of the session: only pings keep it current
        assert bridge.session_current
        pid = zookeeper.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(2.0)
            assert not bridge.session_current
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        await bridge.stop()


async def _paused_until_the_connection_drops(
    zookeeper: ZooKeeperServer,
    bridge: ZkBridge,
    operation: Awaitable[T],
    *,
    monkeypatch: pytest.MonkeyPatch | None = None,
    write: str = "write_and_notify",
    nth: int = 1,
) -> asyncio.Task[T]:
    """``operation`` started while ZooKeeper is paused, so it is out when kazoo drops the
    connection (no answer to its ping, about 1 s at a 2 s session); ZooKeeper resumed
    then, well within the session, so the session lives on. Returns its task. With
    ``monkeypatch``, ZooKeeper is paused as the bridge's ``nth`` ``write`` goes out, so
    that write, not a read before it, is what is out (ZooKeeper makes it as it resumes, from
    its socket's buffer, as a rule: its answer is what is lost)."""
    states: asyncio.Queue[str] = asyncio.Queue()
    bridge.on_state_change(states.put_nowait)
    pid = zookeeper.pid
    assert pid is not None
    if monkeypatch is None:
        os.kill(pid, signal.SIGSTOP)
    else:
        writing = getattr(bridge, write)
        calls = [0]

        async def pausing(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == nth:
                monkeypatch.setattr(bridge, write, writing)  # that one only
                os.kill(pid, signal.SIGSTOP)
            return await writing(*args, **kwargs)

        monkeypatch.setattr(bridge, write, pausing)
    try:
        task = asyncio.ensure_future(operation)
        while await asyncio.wait_for(states.get(), 10) != SessionState.SUSPENDED:
            pass
    finally:
        os.kill(pid, signal.SIGCONT)
    return task


async def test_a_read_out_when_the_connection_drops_is_sent_again_on_the_same_session(
    zookeeper: ZooKeeperServer, zk_root: str
) -> None:
    """kazoo fails what is out when its connection drops (ConnectionLoss), though the
    session lives on; a read then was an error to its caller (a broker's AlterConfigs
    answered "may or may not be made" after a 1 s ZooKeeper stall). It is sent again
    now, as Kafka's ZooKeeper client does, and answered on the same session."""
    bridge = await _bridge(zookeeper, session_timeout_ms=2_000)
    try:
        await bridge.create(zk_root, b"here", makepath=True)
        session = bridge.session_id
        with structlog.testing.capture_logs() as logs:
            task = await _paused_until_the_connection_drops(zookeeper, bridge, bridge.get(zk_root))
            data, _ = await asyncio.wait_for(task, 15)
        assert data == b"here"
        assert bridge.session_id == session
        assert [e["path"] for e in logs if e["event"] == "zk.resent"] == [zk_root]
    finally:
        await bridge.stop()


async def test_a_compare_and_set_out_when_the_connection_drops_is_not_sent_again(
    zookeeper: ZooKeeperServer, zk_root: str
) -> None:
    """Its second try would lose to its first: it fails as in doubt, and the caller reads
    again (a config's write says False: read again and retry)."""
    bridge = await _bridge(zookeeper, session_timeout_ms=2_000)
    try:
        await bridge.create(zk_root, b"0", makepath=True)
        task = await _paused_until_the_connection_drops(
            zookeeper, bridge, bridge.set(zk_root, b"1", version=0)
        )
        with pytest.raises(ZkConnectionLoss, match="may or may not have been made"):
            await asyncio.wait_for(task, 15)
        data, stat = await bridge.get(zk_root)
        assert (data, stat.version) in {(b"0", 0), (b"1", 1)}  # made or not, never twice
    finally:
        await bridge.stop()


async def test_a_broker_config_change_out_when_the_connection_drops_is_made_once(
    zookeeper: ZooKeeperServer, chroot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change's write (the config and its notification, one multi) is out when the
    connection drops: it is read again, and made if it was not, once either way; the
    broker answers it done and has it in force."""
    bridge = ZkBridge(zookeeper.connect_string + chroot, session_timeout_ms=2_000)
    await bridge.start(timeout_s=10)
    config = load_config(env={}, overrides=["broker.id=1", "log.dirs=/tmp/unused"])
    configs = BrokerConfigs(bridge, config)
    await configs.start()
    try:
        await bridge.ensure_path(zk.paths.BROKER_CONFIGS)  # (else the first write is refused)
        op = IncrementalAlterableConfig(
            name="log.retention.ms", config_operation=AlterConfigOp.SET, value="7200000"
        )
        task = await _paused_until_the_connection_drops(
            zookeeper,
            bridge,
            configs.change("1", partial(incremented, ops=[op]), False),
            monkeypatch=monkeypatch,
        )
        await asyncio.wait_for(task, 15)
        assert config["log.retention.ms"] == 7_200_000  # in force before the answer
        data, stat = await bridge.get(zk.paths.broker_config("1"))
        assert zk.entity_config_from_json("", data) == {"log.retention.ms": "7200000"}
        notices = await bridge.get_children(zk.paths.CONFIG_CHANGES)
        assert (stat.version, len(notices)) == (0, 1)  # made once
    finally:
        await configs.stop()
        await bridge.stop()


async def test_a_credential_deleted_as_the_connection_drops_is_answered_deleted_once(
    zookeeper: ZooKeeperServer, chroot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion is read again: if it was made, the credential is not there, which was
    "user has no credential to delete" to the caller of a deletion that succeeded, and
    once the error was fixed, a second write of the same (review 135)."""
    bridge = ZkBridge(zookeeper.connect_string + chroot, session_timeout_ms=2_000)
    await bridge.start(timeout_s=10)
    credentials = ScramCredentials(bridge)
    try:
        await bridge.ensure_path(zk.paths.CONFIG_CHANGES)  # (a broker makes it as it starts)
        made = await credentials.alter(
            AlterUserScramCredentialsRequest(
                upsertions=[
                    ScramCredentialUpsertion(
                        name="alice",
                        mechanism=1,
                        iterations=4096,
                        salt=b"salt",
                        salted_password=b"s" * 32,
                    )
                ]
            )
        )
        assert made.results[0].error_code == 0
        _, before = await bridge.get(zk.paths.user_config("alice"))
        task = await _paused_until_the_connection_drops(
            zookeeper,
            bridge,
            credentials.alter(
                AlterUserScramCredentialsRequest(
                    deletions=[ScramCredentialDeletion(name="alice", mechanism=1)]
                )
            ),
            monkeypatch=monkeypatch,
        )
        deleted = await asyncio.wait_for(task, 15)
        assert (deleted.results[0].error_code, deleted.results[0].error_message) == (0, None)
        assert await credentials.get("alice", "SCRAM-SHA-256") is None
        _, after = await bridge.get(zk.paths.user_config("alice"))
        notices = await bridge.get_children(zk.paths.CONFIG_CHANGES)
        assert (after.version - before.version, len(notices)) == (1, 2)  # each once
    finally:
        await bridge.stop()


async def _topic_admin(bridge: ZkBridge, topic: str | None = None) -> TopicAdmin:
    """A broker's topic admin over ``bridge``, with broker 1 registered, and ``topic``
    made with one partition."""
    registration = zk.BrokerRegistration(broker_id=1, host="127.0.0.1", port=9092)
    await bridge.create(zk.paths.broker(1), registration.to_json(1), makepath=True)
    for parent in ("/brokers/topics", "/config/topics", "/admin/delete_topics"):
        await bridge.ensure_path(parent)  # (as in a cluster: a write out is not refused)
    if topic is not None:
        made = zk.TopicAssignment(topic, {0: [1]}).to_json()
        await bridge.create(zk.paths.topic(topic), made, makepath=True)
    config = load_config(env={}, overrides=["broker.id=1", "log.dirs=/tmp/unused"])
    return TopicAdmin(bridge, config, MetadataCache())


async def test_partitions_added_as_the_connection_drops_are_answered_added_once(
    zookeeper: ZooKeeperServer, chroot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CreatePartitions' write of the assignment (compare-and-set) is out when the
    connection drops: read again, the topic has the partitions asked for, so it is
    answered done; before, REQUEST_TIMED_OUT, and a retry "already has 3 partitions"."""
    bridge = ZkBridge(zookeeper.connect_string + chroot, session_timeout_ms=2_000)
    await bridge.start(timeout_s=10)
    try:
        admin = await _topic_admin(bridge, topic="t")
        request = CreatePartitionsRequest(
            topics=[CreatePartitionsTopic(name="t", count=3)], timeout_ms=0
        )
        task = await _paused_until_the_connection_drops(
            zookeeper,
            bridge,
            admin.create_partitions(request),
            monkeypatch=monkeypatch,
            write="set",
        )
        (result,) = (await asyncio.wait_for(task, 15)).results
        assert (result.error_code, result.error_message) == (0, None)
        data, stat = await bridge.get(zk.paths.topic("t"))
        assert sorted(zk.TopicAssignment.from_json("t", data).partitions) == [0, 1, 2]
        assert stat.version == 1  # written once
    finally:
        await bridge.stop()


@pytest.mark.parametrize("nth", [1, 2], ids=["its-config", "its-assignment"])
async def test_a_topic_created_as_the_connection_drops_is_answered_created_once(
    zookeeper: ZooKeeperServer, chroot: str, monkeypatch: pytest.MonkeyPatch, nth: int
) -> None:
    """CreateTopics writes the topic's config, then its assignment with the new topic id
    (creates, not sent again blindly: a second create of one made is "already exists").
    Either one out when the connection drops is tried again, and found made by its bytes:
    answered created, with the id in ZooKeeper; before, "may or may not be created"."""
    bridge = ZkBridge(zookeeper.connect_string + chroot, session_timeout_ms=2_000)
    await bridge.start(timeout_s=10)
    try:
        admin = await _topic_admin(bridge)
        request = CreateTopicsRequest(
            topics=[
                CreatableTopic(
                    name="t",
                    num_partitions=2,
                    replication_factor=1,
                    configs=[CreatableTopicConfig(name="retention.ms", value="60000")],
                )
            ],
            timeout_ms=0,
        )
        task = await _paused_until_the_connection_drops(
            zookeeper,
            bridge,
            admin.create_topics(request),
            monkeypatch=monkeypatch,
            write="create",
            nth=nth,
        )
        (result,) = (await asyncio.wait_for(task, 15)).topics
        assert (result.error_code, result.error_message) == (0, None)
        data, stat = await bridge.get(zk.paths.topic("t"))
        made = zk.TopicAssignment.from_json("t", data)
        assert (made.topic_id, sorted(made.partitions), stat.version) == (
            result.topic_id,
            [0, 1],
            0,
        )
        data, _ = await bridge.get(zk.paths.topic_config("t"))
        assert zk.topic_config_from_json("t", data) == {"retention.ms": "60000"}
    finally:
        await bridge.stop()


async def test_a_deletion_asked_as_the_connection_drops_is_answered_asked(
    zookeeper: ZooKeeperServer, chroot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DeleteTopics' marker is created again after the lost answer (asking twice is
    asking once): answered done, the marker there for the controller."""
    bridge = ZkBridge(zookeeper.connect_string + chroot, session_timeout_ms=2_000)
    await bridge.start(timeout_s=10)
    try:
        admin = await _topic_admin(bridge, topic="t")
        task = await _paused_until_the_connection_drops(
            zookeeper,
            bridge,
            admin.delete_topics(DeleteTopicsRequest(topic_names=["t"], timeout_ms=0)),
            monkeypatch=monkeypatch,
            write="create",
        )
        (result,) = (await asyncio.wait_for(task, 15)).responses
        assert (result.error_code, result.error_message) == (0, None)
        assert await bridge.exists(zk.paths.delete_topic("t")) is not None
    finally:
        await bridge.stop()
