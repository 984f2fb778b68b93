"""Replication under network partitions (Jepsen's fault, where a pause or a kill is not
enough): each broker in a network namespace of its own (tests/faults/network.py), links
cut while an acks=all producer writes, then healed; afterwards, as in the other fault
tests, every acknowledged record is at its acknowledged offset, in send order, exactly
once, and no send failed. And a group's coordinator cut off so gives its member no
stale answer.

Skipped where network namespaces cannot be made (not root): CI and this machine run as
root."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import Admin
from client.connection import BrokerConnection
from client.localcluster import ZooKeeperServer
from protocol.apis import (
    ApiKey,
    FindCoordinatorRequest,
    HeartbeatRequest,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetFetchRequest,
    OffsetFetchRequestTopic,
    SyncGroupRequest,
    SyncGroupRequestAssignment,
)
from protocol.errors import ApiError, CoordinatorNotAvailableError, NotCoordinatorError
from tests.faults import network
from tests.faults.test_replication_faults import (
    SETTINGS,
    _describe,
    _full_isr,
    _leader_of,
    _topic,
    _until,
)
from tests.faults.workload import check_exactly_once, produce, read_back
from tests.integration.conftest import new_chroot

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(bool(network.available()), reason=network.available() or ""),
]

RECORDS = 20_000


@pytest.fixture(scope="module")
def network_zookeeper(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[network.Network, ZooKeeperServer]]:
    """One network and one ZooKeeper on its bridge for the module's tests (each test's
    cluster in a chroot of its own); removed and stopped by pid afterwards."""
    net = network.Network()
    zookeeper = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"), host=net.zookeeper)
    try:
        zookeeper.start()
        yield net, zookeeper
    finally:
        zookeeper.stop()
        net.close()


@pytest.fixture
def partitioned(
    network_zookeeper: tuple[network.Network, ZooKeeperServer], tmp_path: Path
) -> Iterator[Callable[..., network.PartitionedCluster]]:
    net, zookeeper = network_zookeeper
    connect = new_chroot(zookeeper, "partitions")
    made: list[network.PartitionedCluster] = []

    def make(settings: dict[str, str] | None = None) -> network.PartitionedCluster:
        cluster = network.PartitionedCluster(net, connect, tmp_path / "cluster")
        made.append(cluster)
        for broker_id in (1, 2, 3):
            cluster.start_broker(broker_id, {**SETTINGS, **(settings or {})})
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.kill_all()  # only the processes this test started, by pid
        net.heal_all()


async def _cut_until(
    cluster: network.PartitionedCluster, bootstrap: str, seen: Callable[[Any], bool], hold_s: float
) -> None:
    """With links cut: until ``seen`` holds of the topic as ``bootstrap`` describes it,
    then ``hold_s`` more (the producer meets the cut meanwhile); healed, until every
    replica is back in the ISR."""
    try:
        await _until(lambda: _describe(bootstrap, "events"), lambda d: d is not None and seen(d))
        await asyncio.sleep(hold_s)
    finally:
        cluster.net.heal_all()
    await _until(lambda: _describe(bootstrap, "events"), _full_isr, timeout_s=60)


async def _controller(cluster: network.PartitionedCluster) -> int:
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        return int((await admin.describe_cluster()).controller_id)


async def _written_through(
    cluster: network.PartitionedCluster, fault: Callable[[], Awaitable[None]]
) -> None:
    """The acks=all producer's run with ``fault`` in it, and its exactly-once check."""
    outcome = await produce(cluster.bootstrap, "events", RECORDS, fault=fault, fault_after=3_000)
    check_exactly_once(outcome, await read_back(cluster.bootstrap, "events"))


async def test_a_leader_cut_off_from_zookeeper_and_its_followers_loses_no_acked_write(
    partitioned: Callable[..., network.PartitionedCluster],
) -> None:
    """The leader can still be reached by clients, but not by ZooKeeper or its followers.
    Its session expires and another replica leads. Until it hears its session is gone,
    it still believes it leads: acks=all writes sent to it must not be acknowledged
    (its followers are gone, and it cannot shrink its ISR without ZooKeeper), and the
    producer must find the new leader. Healed, it follows and cuts what it alone has."""
    cluster = partitioned({"zookeeper.session.timeout.ms": "2000"})
    await _topic(cluster, "events", partitions=1)
    leader = _leader_of(await _describe(cluster.bootstrap, "events"))
    others = ",".join(b.bootstrap for i, b in cluster.brokers.items() if i != leader)

    async def partition_the_leader() -> None:
        cluster.isolate(leader)
        await _cut_until(cluster, others, lambda d: d.partitions[0].leader not in (-1, leader), 2)

    await _written_through(cluster, partition_the_leader)
    log = cluster.brokers[leader].log_path.read_text()
    assert "replica.leaders_fenced" in log  # told of its lost session once healed


async def test_a_leader_cut_off_from_its_followers_only_refuses_acks_all_until_healed(
    partitioned: Callable[..., network.PartitionedCluster],
) -> None:
    """Every broker still reaches ZooKeeper, so nobody else is elected: the leader leads
    alone. It shrinks its ISR to itself through ZooKeeper, and with
    min.insync.replicas=2 refuses acks=all writes (NOT_ENOUGH_REPLICAS, retriable) rather
    than acknowledging what only it has. Healed, the followers catch up and rejoin, and
    the producer's retries go through: no send fails, nothing is lost or doubled."""
    # no session need end here: 10 s, so a stall of a loaded machine's broker does not
    # move a leadership either (a review: "nobody else" below failed then)
    cluster = partitioned({"zookeeper.session.timeout.ms": "10000"})
    await _topic(cluster, "events", partitions=1)
    leader = _leader_of(await _describe(cluster.bootstrap, "events"))
    # asked of the controller: the others' metadata may not hear of the ISR meanwhile
    controller = cluster.brokers[await _controller(cluster)].bootstrap

    async def part_the_leader_from_its_followers() -> None:
        for follower in (b for b in cluster.brokers if b != leader):
            cluster.net.part(leader, follower)
        await _cut_until(cluster, controller, lambda d: d.partitions[0].isr == [leader], 1)

    await _written_through(cluster, part_the_leader_from_its_followers)
    assert _leader_of(await _describe(cluster.bootstrap, "events")) == leader  # nobody else


async def test_what_the_controller_could_not_tell_a_parted_broker_reaches_it_once_healed(
    partitioned: Callable[..., network.PartitionedCluster],
) -> None:
    """The controller is parted from one broker (both still reach ZooKeeper), then a third
    broker is killed: the controller elects new leaders, some of them on the broker it
    cannot reach, and cannot tell it. Its channel keeps the requests and sends them once
    the link is back (as Kafka's ControllerChannelManager): the parted broker takes up
    its leaderships, and the producer's retries go through."""
    cluster = partitioned()
    await _topic(cluster, "events", partitions=6)
    controller = await _controller(cluster)
    parted, killed = (b for b in cluster.brokers if b != controller)

    async def part_then_kill() -> None:
        # the election below takes the first replica alive in the ISR: with a follower
        # dropped (a stall of a loaded machine) the controller could take every one
        await _until(lambda: _describe(cluster.brokers[controller].bootstrap, "events"), _full_isr)
        cluster.net.part(controller, parted)
        try:
            cluster.brokers[killed].kill()
            elected = await _until(  # in ZooKeeper: what the controller's metadata says
                lambda: _describe(cluster.brokers[controller].bootstrap, "events"),
                lambda d: d is not None and all(p.leader not in (-1, killed) for p in d.partitions),
            )
            # (the case under test: leaderships the parted broker has not been told of)
            assert any(p.leader == parted for p in elected.partitions), elected
            await asyncio.sleep(1)  # the parted broker's new leaderships wait meanwhile
        finally:
            cluster.net.heal_all()
        await asyncio.to_thread(cluster.start_broker, killed)  # the producer goes on meanwhile
        await _until(lambda: _describe(cluster.bootstrap, "events"), _full_isr, timeout_s=60)

    await _written_through(cluster, part_then_kill)


async def _answer(bootstrap: str, api_key: ApiKey, request: Any) -> Any:
    """The response, or the error code it was refused with (a top-level error raises)."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        async with BrokerConnection(host, int(port)) as conn:
            return await conn.request(api_key, request)
    except ApiError as exc:
        return exc.code


def _no_error(response: Any) -> bool:
    return getattr(response, "error_code", 1) == 0


async def test_a_group_coordinator_cut_off_from_zookeeper_gives_no_stale_answer(
    partitioned: Callable[..., network.PartitionedCluster],
) -> None:
    """The group's coordinator can still be reached by its member, but not by ZooKeeper
    or the other brokers. Its session expires and another broker takes the group over
    (the offsets partition's new leader), where the member commits. Until the cut-off
    broker hears of its lost session, it used to go on answering from what it held: the
    member's heartbeats (keeping it on an assignment the new coordinator can give away),
    the offsets from before the commit (a consumer starting there reads again what was
    processed), and itself as the coordinator (so the member came straight back). Now
    it refuses all three (COORDINATOR_NOT_AVAILABLE, retriable) once its session is in
    doubt, and after the heal it says where the group went."""
    cluster = partitioned(
        {"zookeeper.session.timeout.ms": "2000", "offsets.topic.num.partitions": "3"}
    )
    await _topic(cluster, "orders", partitions=1)
    brokers = {i: b.bootstrap for i, b in cluster.brokers.items()}
    find = FindCoordinatorRequest(key="g")
    found = await _until(
        lambda: _answer(brokers[1], ApiKey.FIND_COORDINATOR, find),
        lambda r: not isinstance(r, int),
    )
    old = brokers[found.node_id]
    join = JoinGroupRequest(
        group_id="g",
        session_timeout_ms=30_000,
        protocol_type="consumer",
        protocols=[JoinGroupRequestProtocol(name="range", metadata=b"orders")],
    )
    joined = await _until(
        lambda: _answer(old, ApiKey.JOIN_GROUP, join), lambda r: not isinstance(r, int)
    )
    member = joined.member_id
    await _answer(
        old,
        ApiKey.SYNC_GROUP,
        SyncGroupRequest(
            group_id="g",
            generation_id=1,
            member_id=member,
            assignments=[SyncGroupRequestAssignment(member_id=member, assignment=b"orders-0")],
        ),
    )
    beat = HeartbeatRequest(group_id="g", generation_id=1, member_id=member)
    fetch = OffsetFetchRequest(
        group_id="g", topics=[OffsetFetchRequestTopic(name="orders", partition_indexes=[0])]
    )
    # (retried: a coordinator refuses while a stall of its loop is being checked)
    await _until(lambda: _answer(old, ApiKey.HEARTBEAT, beat), _no_error)

    cluster.isolate(found.node_id)
    try:
        others = [b for i, b in brokers.items() if i != found.node_id]
        moved = await _until(
            lambda: _answer(others[0], ApiKey.FIND_COORDINATOR, find),
            lambda r: not isinstance(r, int) and r.node_id not in (-1, found.node_id),
        )
        new = brokers[moved.node_id]
        await _until(  # loaded there, the member restored with the generation it had
            lambda: _answer(new, ApiKey.HEARTBEAT, beat), _no_error
        )
        commit = OffsetCommitRequest(
            group_id="g",
            generation_id=1,
            member_id=member,
            topics=[
                OffsetCommitRequestTopic(
                    name="orders",
                    partitions=[
                        OffsetCommitRequestPartition(partition_index=0, committed_offset=42)
                    ],
                )
            ],
        )
        await _until(  # (the same offset again, if a refusal is retried)
            lambda: _answer(new, ApiKey.OFFSET_COMMIT, commit),
            lambda r: not isinstance(r, int) and r.topics[0].partitions[0].error_code == 0,
        )

        stale = CoordinatorNotAvailableError.code
        assert await _answer(old, ApiKey.HEARTBEAT, beat) == stale
        fetched = await _answer(old, ApiKey.OFFSET_FETCH, fetch)
        assert fetched == stale or fetched.topics[0].partitions[0].error_code == stale, fetched
        assert await _answer(old, ApiKey.FIND_COORDINATOR, find) == stale
    finally:
        cluster.net.heal_all()

    # healed: it hears of its lost session, lets the group go, and says where it went
    await _until(
        lambda: _answer(old, ApiKey.FIND_COORDINATOR, find),
        lambda r: not isinstance(r, int) and r.node_id == moved.node_id,
    )
    assert await _answer(old, ApiKey.HEARTBEAT, beat) == NotCoordinatorError.code
    fetched = await _until(
        lambda: _answer(new, ApiKey.OFFSET_FETCH, fetch),
        lambda r: not isinstance(r, int) and r.topics[0].partitions[0].error_code == 0,
    )
    assert fetched.topics[0].partitions[0].committed_offset == 42
