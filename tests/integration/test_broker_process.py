"""Real broker processes on a real ZooKeeper: registration, controller failover, clean stop."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from client import Admin, NewTopic
from client.connection import BrokerConnection
from client.localcluster import BrokerProcess, BrokerStartError, ZooKeeperServer
from protocol.apis import (
    ApiKey,
    ControlledShutdownRequest,
    ControlledShutdownResponse,
    MetadataRequest,
    MetadataResponse,
    UpdateMetadataRequest,
)
from protocol.errors import (
    BrokerNotAvailableError,
    StaleBrokerEpochError,
    UnknownTopicOrPartitionError,
)

FAST = {"zookeeper.session.timeout.ms": "2000"}


@pytest.fixture
def brokers(
    zookeeper: ZooKeeperServer, chroot: str, tmp_path: Path
) -> Iterator[list[BrokerProcess]]:
    started: list[BrokerProcess] = []
    for broker_id in (1, 2, 3):
        broker = BrokerProcess(
            broker_id, tmp_path / f"b{broker_id}", zookeeper.connect_string + chroot, settings=FAST
        )
        broker.start()
        started.append(broker)
    yield started
    for broker in started:
        broker.kill()  # only the processes this test started, by pid


async def _metadata(broker: BrokerProcess, topics: list[str] | None = None) -> MetadataResponse:
    async with BrokerConnection("127.0.0.1", broker.port) as conn:
        response: MetadataResponse = await conn.request(
            ApiKey.METADATA, MetadataRequest(topics=topics, allow_auto_topic_creation=False)
        )
        return response


async def _until(broker: BrokerProcess, check: object, timeout_s: float = 20) -> MetadataResponse:
    """Ask ``broker`` for metadata until ``check(response)`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await _metadata(broker)
        if check(response):  # type: ignore[operator]
            return response
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never reached: last metadata {response}")
        await asyncio.sleep(0.1)


async def test_three_brokers_one_controller_and_failover(brokers: list[BrokerProcess]) -> None:
    ids = {1, 2, 3}
    first = await _until(
        brokers[0], lambda m: {b.node_id for b in m.brokers} == ids and m.controller_id in ids
    )
    assert {(b.node_id, b.port) for b in first.brokers} == {(b.broker_id, b.port) for b in brokers}
    assert first.cluster_id and len(first.cluster_id) == 22
    for other in brokers[1:]:  # every broker tells the same story
        same = await _until(other, lambda m: m.controller_id == first.controller_id)
        assert same.cluster_id == first.cluster_id
    controller = next(b for b in brokers if b.broker_id == first.controller_id)
    survivor = next(b for b in brokers if b is not controller)
    controller.kill()  # kill -9: its ZooKeeper session lapses after the session timeout
    after = await _until(
        survivor,
        lambda m: (
            m.controller_id in ids - {controller.broker_id}
            and {b.node_id for b in m.brokers} == ids - {controller.broker_id}
        ),
    )
    assert after.controller_id != controller.broker_id
    topic = (await _metadata(survivor, ["nope"])).topics[0]
    assert topic.error_code == UnknownTopicOrPartitionError.code


async def test_sigterm_is_a_clean_stop(
    zookeeper: ZooKeeperServer, chroot: str, tmp_path: Path
) -> None:
    broker = BrokerProcess(7, tmp_path / "b7", zookeeper.connect_string + chroot, settings=FAST)
    broker.start()
    zk = KazooClient(hosts=zookeeper.connect_string + chroot)
    zk.start(timeout=10)
    try:
        assert zk.exists("/brokers/ids/7") is not None
        assert broker.stop() == 0
        assert zk.exists("/brokers/ids/7") is None  # deregistered, not left to expire
        assert (tmp_path / "b7" / "data" / ".clean_shutdown").exists()
        assert "broker.stopped" in broker.log_path.read_text()
    finally:
        zk.stop()
        zk.close()


def test_sigterm_stops_promptly_even_with_zookeeper_gone(tmp_path: Path) -> None:
    with ZooKeeperServer(tmp_path / "zk") as own:  # our own: this test stops it
        broker = BrokerProcess(3, tmp_path / "b3", own.connect_string, settings=FAST)
        broker.start()
        own.stop()
        try:
            assert broker.stop(timeout_s=15) == 0  # data closed cleanly, ZooKeeper steps skipped
        finally:
            broker.kill()
    assert (tmp_path / "b3" / "data" / ".clean_shutdown").exists()
    assert "broker.stop_step_skipped" in broker.log_path.read_text()


async def test_a_live_broker_id_is_refused_in_one_line(
    zookeeper: ZooKeeperServer, chroot: str, tmp_path: Path
) -> None:
    first = BrokerProcess(5, tmp_path / "a", zookeeper.connect_string + chroot, settings=FAST)
    first.start()
    try:
        second = BrokerProcess(5, tmp_path / "b", zookeeper.connect_string + chroot, settings=FAST)
        with pytest.raises(BrokerStartError) as info:
            second.start()
        assert info.value.returncode == 1
        assert str(info.value) == (
            f"headwater-broker: broker 5 cannot start: broker id 5 is already registered by a "
            f"live broker at 127.0.0.1:{first.port}; stop it, or give this broker another "
            f"broker.id"
        )
        assert (await _metadata(first)).brokers[0].node_id == 5  # the first one is unharmed
        # it never registered: nothing to hand over, no controlled shutdown on its way out
        assert "controlled_shutdown" not in second.log_path.read_text()
    finally:
        first.kill()


def _killed_and_restarted_at_once(connect: str, directory: Path, broker_id: int) -> BrokerProcess:
    """A broker started, killed (SIGKILL), and started again at once at the same address:
    returned once the new run says it waits for the dead run's registration to expire
    (blocking: a helper of the tests below)."""
    first = BrokerProcess(broker_id, directory, connect, settings=FAST)
    first.start()
    first.kill()
    again = BrokerProcess(
        broker_id,
        directory,
        connect,
        settings={**FAST, "listeners": f"PLAINTEXT://127.0.0.1:{first.port}"},
    )
    again.port = first.port
    before = again.log_path.stat().st_size
    again.spawn()
    for _ in range(200):
        if b"broker.waiting_for_stale_registration" in again.log_path.read_bytes()[before:]:
            return again
        time.sleep(0.02)
    again.kill()
    raise AssertionError("the restarted broker did not wait for its old registration")


async def test_a_broker_killed_and_restarted_at_once_waits_for_its_old_session(
    zookeeper: ZooKeeperServer, chroot: str, tmp_path: Path
) -> None:
    """kill -9, then a restart at the same address before ZooKeeper expired the dead
    run's session: its registration is still there. Refused as a live duplicate, the
    restart failed (systemd's Restart=, docker's restart policy); it now waits for that
    session to expire, as Kafka does (KAFKA-7165), and starts."""
    connect = zookeeper.connect_string + chroot
    again = await asyncio.to_thread(_killed_and_restarted_at_once, connect, tmp_path / "b7", 7)
    port = again.port
    try:
        # meanwhile the controller may still send the dead run its requests: refused
        async with BrokerConnection("127.0.0.1", port) as conn:
            with pytest.raises(BrokerNotAvailableError, match="not registered yet"):
                await conn.request(
                    ApiKey.UPDATE_METADATA,
                    UpdateMetadataRequest(controller_id=1, controller_epoch=1),
                )
        await asyncio.to_thread(again.wait_ready)
        assert again.port == port
        assert (await _metadata(again)).brokers[0].node_id == 7
    finally:
        again.kill()


async def test_no_zookeeper_is_one_line_and_exit_1(tmp_path: Path) -> None:
    broker = BrokerProcess(
        1, tmp_path, "127.0.0.1:1", settings={"zookeeper.connection.timeout.ms": "1000"}
    )
    with pytest.raises(
        BrokerStartError, match=r"cannot connect to ZooKeeper at 127\.0\.0\.1:1"
    ) as info:
        broker.start()
    assert info.value.returncode == 1


def test_a_broker_waiting_for_its_old_session_stops_on_sigterm(
    zookeeper: ZooKeeperServer, chroot: str, tmp_path: Path
) -> None:
    """The wait can be long (at least 45 s for a misconfigured duplicate): a stop asked
    for meanwhile abandons the start at once, exit 0, nothing registered."""
    again = _killed_and_restarted_at_once(zookeeper.connect_string + chroot, tmp_path / "b9", 9)
    try:
        before = again.log_path.read_bytes().rfind(b"broker.waiting_for_stale_registration")
        assert again.stop(timeout_s=10) == 0
        this_run = again.log_path.read_bytes()[before:]
        assert b"broker.ready" not in this_run and b"broker.registered" not in this_run
    finally:
        again.kill()


async def test_a_request_for_an_earlier_run_of_the_broker_is_refused(
    zookeeper: ZooKeeperServer, chroot: str, tmp_path: Path
) -> None:
    """KIP-380: the controller stamps each request with the broker epoch (its
    registration's czxid) it was meant for; a broker refuses one for an earlier run of
    itself, which a controller may still hold when the broker comes back fast."""
    broker = BrokerProcess(11, tmp_path / "b11", zookeeper.connect_string + chroot, settings=FAST)
    broker.start()
    try:
        zk = KazooClient(hosts=zookeeper.connect_string + chroot)
        zk.start(timeout=10)
        try:
            _, stat = zk.get("/brokers/ids/11")
        finally:
            zk.stop()
            zk.close()
        async with BrokerConnection("127.0.0.1", broker.port) as conn:
            for epoch in (1, stat.czxid - 1):
                with pytest.raises(StaleBrokerEpochError, match=f"this broker's is {stat.czxid}"):
                    await conn.request(
                        ApiKey.UPDATE_METADATA,
                        UpdateMetadataRequest(
                            controller_id=11, controller_epoch=99, broker_epoch=epoch
                        ),
                    )
        # nothing was applied: the broker still knows itself, as its controller told it
        assert [b.node_id for b in (await _metadata(broker)).brokers] == [11]
    finally:
        broker.kill()


async def test_a_controlled_shutdown_from_an_earlier_run_takes_no_leadership(
    brokers: list[BrokerProcess], zookeeper: ZooKeeperServer, chroot: str
) -> None:
    """KIP-380: a ControlledShutdown carries the broker epoch of the run that sent it. One
    from an earlier run (delayed, its sender gone) is refused: acted on, it would move
    every leadership off the run that replaced it. The same request with the current epoch
    moves them (what the refusal prevented)."""
    ids = {1, 2, 3}
    first = await _until(
        brokers[0], lambda m: {b.node_id for b in m.brokers} == ids and m.controller_id in ids
    )
    controller = next(b for b in brokers if b.broker_id == first.controller_id)
    leaving = next(b for b in brokers if b is not controller)
    async with Admin(bootstrap_servers=f"127.0.0.1:{controller.port}") as admin:
        await admin.create_topics([NewTopic("handover", 6, 3)])

    def leaders(m: MetadataResponse) -> list[int]:
        return [p.leader_id for t in m.topics if t.name == "handover" for p in t.partitions]

    def led_by_leaving(m: MetadataResponse) -> bool:
        return len(leaders(m)) == 6 and leaving.broker_id in leaders(m)

    before = leaders(await _until(controller, led_by_leaving))
    zk = KazooClient(hosts=zookeeper.connect_string + chroot)
    zk.start(timeout=10)
    try:
        _, stat = zk.get(f"/brokers/ids/{leaving.broker_id}")
    finally:
        zk.stop()
        zk.close()
    async with BrokerConnection("127.0.0.1", controller.port) as conn:
        with pytest.raises(StaleBrokerEpochError, match=f"registration is epoch {stat.czxid}"):
            await conn.request(
                ApiKey.CONTROLLED_SHUTDOWN,
                ControlledShutdownRequest(broker_id=leaving.broker_id, broker_epoch=stat.czxid - 1),
            )
        assert leaders(await _metadata(controller, ["handover"])) == before
        answer: ControlledShutdownResponse = await conn.request(
            ApiKey.CONTROLLED_SHUTDOWN,
            ControlledShutdownRequest(broker_id=leaving.broker_id, broker_epoch=stat.czxid),
        )
    assert answer.remaining_partitions == []
    after = leaders(await _until(controller, lambda m: not led_by_leaving(m)))
    assert leaving.broker_id not in after and len(after) == 6
