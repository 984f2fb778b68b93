"""Cluster id, broker registration and controller election against a real ZooKeeper."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import structlog
from kazoo.client import KazooClient

from broker import registration
from broker.controller import election as election_module
from broker.controller.election import ControllerElection
from broker.registration import BrokerIdInUseError, BrokerRegistrar, get_or_create_cluster_id
from broker.zk import BrokerRegistration, SessionState, ZkBridge, ZkError, paths
from client.localcluster import ZooKeeperServer


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 15) -> None:
    """Wait for a condition (checked every 50 ms) or fail: never sleep-and-hope."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def _bridge(zookeeper: ZooKeeperServer, chroot: str) -> ZkBridge:
    bridge = ZkBridge(f"{zookeeper.connect_string}{chroot}", session_timeout_ms=2_000)
    await bridge.start(timeout_s=10)
    return bridge


def _expire(zookeeper: ZooKeeperServer, bridge: ZkBridge) -> None:
    """Expire a session as ZooKeeper's tests do: join it from a second client, close that."""
    assert bridge.client_id is not None
    thief = KazooClient(hosts=zookeeper.connect_string, client_id=bridge.client_id)
    thief.start(timeout=10)
    thief.stop()
    thief.close()


async def test_one_cluster_id_whoever_asks_first(zookeeper: ZooKeeperServer, chroot: str) -> None:
    bridges = [await _bridge(zookeeper, chroot) for _ in range(3)]
    ids = await asyncio.gather(*(get_or_create_cluster_id(b) for b in bridges))
    assert len(set(ids)) == 1 and len(ids[0]) == 22
    for b in bridges:
        await b.stop()


async def test_a_live_broker_id_is_refused(zookeeper: ZooKeeperServer, chroot: str) -> None:
    first, second = await _bridge(zookeeper, chroot), await _bridge(zookeeper, chroot)
    try:
        registrar = BrokerRegistrar(first, BrokerRegistration(broker_id=1, host="h1", port=9))
        assert await registrar.register() > 0
        duplicate = BrokerRegistrar(second, BrokerRegistration(broker_id=1, host="h2", port=8))
        with pytest.raises(
            BrokerIdInUseError, match="broker id 1 is already registered by a live broker at h1:9"
        ):
            await duplicate.register()
        await registrar.deregister()
        assert await second.exists(paths.broker(1)) is None
        assert await duplicate.register() > 0  # free again
    finally:
        await first.stop()
        await second.stop()


async def test_our_own_address_held_by_a_dying_session_is_waited_for(
    zookeeper: ZooKeeperServer, chroot: str
) -> None:
    """A registration at this very address is this broker's last run, killed before its
    session expired: the new run waits for it to go (then registers) instead of refusing
    to start; and one that outlives a session timeout and a half is refused after all."""
    dead, restarted = await _bridge(zookeeper, chroot), await _bridge(zookeeper, chroot)
    try:
        await dead.create(
            paths.broker(3),
            BrokerRegistration(broker_id=3, host="h", port=7).to_json(0),
            ephemeral=True,
            makepath=True,
        )
        registrar = BrokerRegistrar(restarted, BrokerRegistration(broker_id=3, host="h", port=7))
        registering = asyncio.ensure_future(registrar.register())

        async def waiting_it_out() -> bool:
            return registrar.waiting_for_stale

        await wait_until(waiting_it_out)
        assert not registering.done()  # waiting, not refused
        _expire(zookeeper, dead)  # ZooKeeper expires the dead run's session
        assert await asyncio.wait_for(registering, 10) > 0
        stat = await restarted.exists(paths.broker(3))
        assert stat is not None and stat.ephemeralOwner == restarted.session_id
        await registrar.deregister()
        await dead.stop()
        dead = await _bridge(zookeeper, chroot)
        await dead.create(
            paths.broker(3),
            BrokerRegistration(broker_id=3, host="h", port=7).to_json(0),
            ephemeral=True,
        )
        waiting = BrokerRegistrar(restarted, BrokerRegistration(3, "h", 7), stale_wait_s=2)
        registering = asyncio.ensure_future(waiting.register())

        async def still_waiting() -> bool:  # the broker refuses controller requests meanwhile
            return waiting.waiting_for_stale

        await wait_until(still_waiting)
        with pytest.raises(BrokerIdInUseError, match="already registered by a live broker at h:7"):
            await registering
        assert not waiting.waiting_for_stale
    finally:
        await dead.stop()
        await restarted.stop()


async def test_registration_survives_a_session_expiry(
    zookeeper: ZooKeeperServer, chroot: str
) -> None:
    bridge, observer = await _bridge(zookeeper, chroot), await _bridge(zookeeper, chroot)
    try:
        registrar = BrokerRegistrar(bridge, BrokerRegistration(broker_id=4, host="h", port=1))
        first_epoch = await registrar.register()
        _expire(zookeeper, bridge)

        async def registered_again() -> bool:
            return registrar.epoch > first_epoch  # a new epoch for the new session

        await wait_until(registered_again)
        stat = await observer.exists(paths.broker(4))
        assert stat is not None and stat.czxid == registrar.epoch
    finally:
        await bridge.stop()
        await observer.stop()


async def test_our_id_taken_by_another_broker_after_an_expiry_is_reported_then_retaken(
    zookeeper: ZooKeeperServer, chroot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: after a session expiry the registrar took any znode at its path for
    its own and stopped there, though its own had gone with the session. Another broker
    given our id meanwhile is now reported, once, as an error, and our id is taken back
    when that broker goes."""
    monkeypatch.setattr(registration, "_TAKEN_RETRY_S", 0.2)
    bridge, other = await _bridge(zookeeper, chroot), await _bridge(zookeeper, chroot)
    try:
        registrar = BrokerRegistrar(bridge, BrokerRegistration(broker_id=6, host="h", port=1))
        first_epoch = await registrar.register()
        with structlog.testing.capture_logs() as logs:
            # the other broker registers id 6 while our session is gone, before we are back
            await other.delete(paths.broker(6))
            await other.create(
                paths.broker(6),
                BrokerRegistration(broker_id=6, host="h2", port=2).to_json(0),
                ephemeral=True,
            )
            _expire(zookeeper, bridge)

            async def told() -> bool:
                return any(e["event"] == "broker.id_taken" for e in logs)

            await wait_until(told)
            for _ in range(5):  # looked at again, said once
                await asyncio.sleep(0.2)
        taken = [e for e in logs if e["event"] == "broker.id_taken"]
        assert len(taken) == 1 and taken[0]["holder"] == "h2:2"
        assert "another broker at h2:2" in taken[0]["error"]
        assert registrar.epoch == first_epoch
        await other.delete(paths.broker(6))  # it stops

        async def ours_again() -> bool:
            stat = await other.exists(paths.broker(6))
            return stat is not None and stat.ephemeralOwner == bridge.session_id

        await wait_until(ours_again)
        assert registrar.epoch > first_epoch
    finally:
        await bridge.stop()
        await other.stop()


class Candidate:
    def __init__(self, bridge: ZkBridge, broker_id: int) -> None:
        self.bridge = bridge
        self.elected: list[int] = []
        self.resigned = 0
        self.election = ControllerElection(bridge, broker_id, self._elected, self._resigned)

    async def _elected(self, epoch: int) -> None:
        self.elected.append(epoch)

    async def _resigned(self) -> None:
        self.resigned += 1


async def test_one_controller_and_failover_with_a_higher_epoch(
    zookeeper: ZooKeeperServer, chroot: str
) -> None:
    a = Candidate(await _bridge(zookeeper, chroot), 1)
    b = Candidate(await _bridge(zookeeper, chroot), 2)
    await a.election.start()

    async def a_elected() -> bool:
        return a.election.is_controller

    await wait_until(a_elected)
    await b.election.start()

    async def b_knows_a() -> bool:
        return b.election.controller_id == 1

    await wait_until(b_knows_a)
    assert not b.election.is_controller and b.elected == []
    await a.bridge.stop()  # the controller's broker dies: its session, and /controller, go

    async def b_elected() -> bool:
        return b.election.is_controller

    await wait_until(b_elected)
    assert b.elected == [a.elected[0] + 1]  # fenced: the epoch moved on
    await b.election.stop()
    await b.bridge.stop()


async def test_a_controller_that_loses_its_session_resigns(
    zookeeper: ZooKeeperServer, chroot: str
) -> None:
    a = Candidate(await _bridge(zookeeper, chroot), 1)
    await a.election.start()

    async def elected_times(n: int) -> bool:
        return len(a.elected) >= n

    await wait_until(lambda: elected_times(1))
    _expire(zookeeper, a.bridge)
    await wait_until(lambda: elected_times(2))  # alone, it wins again on its new session
    assert a.resigned == 1
    assert a.elected[1] > a.elected[0]
    await a.election.stop()
    await a.bridge.stop()


async def _settled(election: ControllerElection) -> None:
    """Until the election has taken every event put to it so far."""
    await wait_until(lambda: _true(election._events.empty()))
    for _ in range(20):  # (its handling of the last one runs a few steps on)
        await asyncio.sleep(0)


async def _true(value: bool) -> bool:
    return value


class _BetweenConnections(ZkBridge):
    """A bridge whose client is reconnecting: kazoo reports no session id."""

    @property
    def session_id(self) -> int | None:
        return None


async def test_a_session_loss_told_after_winning_on_the_next_session_keeps_the_controller(
    zookeeper: ZooKeeperServer, chroot: str
) -> None:
    """The soak: a controller's session expired while its election was being retried; the
    retry won on the new session, then the old session's LOST was handled and it resigned,
    leaving its live /controller behind: no controller for as long as that session lived."""
    a = Candidate(await _bridge(zookeeper, chroot), 1)
    b = Candidate(await _bridge(zookeeper, chroot), 2)
    try:
        await a.election.start()
        await wait_until(lambda: _true(a.election.is_controller))
        won_on = a.bridge.session_id
        assert won_on is not None
        a.bridge.__class__ = _BetweenConnections  # (kazoo knows no session id meanwhile)
        a.election._on_lost(won_on - 1)  # an earlier session's, told late
        await _settled(a.election)
        a.bridge.__class__ = ZkBridge
        assert a.election.is_controller and a.resigned == 0 and len(a.elected) == 1
        await b.election.start()
        await wait_until(lambda: _true(b.election.controller_id == 1))
        assert not b.election.is_controller
    finally:
        await a.election.stop()
        await b.election.stop()
        await a.bridge.stop()
        await b.bridge.stop()


async def test_a_controller_znode_of_ours_not_acted_on_is_given_up_and_won_again(
    zookeeper: ZooKeeperServer, chroot: str
) -> None:
    """However a broker came to hold /controller on its live session without acting as
    controller, its next look at /controller gives it up, and an election runs."""
    a = Candidate(await _bridge(zookeeper, chroot), 1)
    try:
        await a.election.start()
        await wait_until(lambda: _true(len(a.elected) == 1))
        await a.election._resign()  # not acting; /controller still ours
        a.election._on_watch(None)
        await wait_until(lambda: _true(len(a.elected) == 2))
        assert a.election.is_controller and a.elected[1] > a.elected[0]
    finally:
        await a.election.stop()
        await a.bridge.stop()


async def test_a_term_whose_session_was_lost_is_resigned_even_if_told_between_connections(
    zookeeper: ZooKeeperServer, chroot: str
) -> None:
    """The loss of the session a term was won on ends the term, whatever session (or
    none) the bridge has by the time it is told; the broker then wins again."""
    a = Candidate(await _bridge(zookeeper, chroot), 1)
    try:
        await a.election.start()
        await wait_until(lambda: _true(len(a.elected) == 1))
        a.bridge.__class__ = _BetweenConnections
        a.election._on_lost(a.election._owner)
        await wait_until(lambda: _true(a.resigned == 1))
        a.bridge.__class__ = ZkBridge
        a.election._on_state(SessionState.CONNECTED)  # as kazoo tells once connected again
        await wait_until(lambda: _true(len(a.elected) == 2))  # its /controller given up
        assert a.election.is_controller
    finally:
        a.bridge.__class__ = ZkBridge
        await a.election.stop()
        await a.bridge.stop()


async def test_a_controller_whose_session_is_lost_resigns_without_waiting_out_a_retry(
    zookeeper: ZooKeeperServer, chroot: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak: the session expired while the election was retrying a ZooKeeper error
    (a pause between tries); the controller resigned only after the pause, and meanwhile
    answered Metadata as controller. A lost session cuts the pause short."""
    monkeypatch.setattr(election_module, "_RETRY_S", 3600.0)
    a = Candidate(await _bridge(zookeeper, chroot), 1)
    try:
        await a.election.start()
        await wait_until(lambda: _true(len(a.elected) == 1))
        tries: list[int] = []

        async def failing_check() -> None:
            tries.append(1)
            raise ZkError("ZooKeeper unavailable for /controller: ConnectionLoss()")

        a.election._check = failing_check  # type: ignore[method-assign]
        a.election._on_watch(None)
        await wait_until(lambda: _true(bool(tries)))  # now in the retry's pause
        a.election._on_lost(a.election._owner)
        await wait_until(lambda: _true(a.resigned == 1))
        assert not a.election.is_controller
    finally:
        await a.election.stop()
        await a.bridge.stop()
