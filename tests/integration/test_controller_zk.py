"""The controller against a real ZooKeeper: its state writes go many to a multi, and a
write that loses a race (a leader changed its ISR meanwhile) is decided again alone.

No broker processes: the brokers are registrations written by hand, and the channels
to them record what the controller sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import broker.controller.controller as controller_module
from broker import zk
from broker.controller.controller import Controller
from broker.zk import (
    BrokerRegistration,
    GuardedWrite,
    PartitionState,
    TopicAssignment,
    ZkBridge,
    ZkError,
    paths,
)
from client.localcluster import ZooKeeperServer
from protocol.apis import ApiKey, LeaderAndIsrRequest, StopReplicaRequest, StopReplicaResponse

PARTITIONS = 60


class _Channel:
    """Stands in for :class:`BrokerChannel`: records the LeaderAndIsr states it is given."""

    def __init__(
        self, broker_id: int, host: str, port: int, *, broker_epoch: int = -1, **_: object
    ) -> None:
        self.broker_id, self.host, self.port = broker_id, host, port
        self.broker_epoch = broker_epoch
        self.roles: dict[tuple[str, int], int] = {}  # partition: the leader epoch last sent
        self.deletes: list[str] = []  # the topic of each StopReplica with delete
        self.held: list[tuple[set[str], asyncio.Future[Any]]] = []  # their answers

    def send(self, api_key: ApiKey, request: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        answer = None
        if api_key == ApiKey.LEADER_AND_ISR:
            assert isinstance(request, LeaderAndIsrRequest)
            for s in request.partition_states:
                self.roles[(s.topic_name, s.partition_index)] = s.leader_epoch
        elif api_key == ApiKey.STOP_REPLICA:
            assert isinstance(request, StopReplicaRequest)
            answer = StopReplicaResponse()
            if request.delete_partitions:  # answered when the test says
                topics = {p.topic_name for p in request.partitions}
                self.deletes.extend(topics)
                self.held.append((topics, future))
                return future
        future.set_result(answer)
        return future

    def answer_deletes(self, topic: str) -> None:
        for topics, future in self.held:
            if topic in topics and not future.done():
                future.set_result(StopReplicaResponse())

    async def close(self) -> None:
        return None


def _replicas(p: int) -> list[int]:
    return [1 + (p + i) % 3 for i in range(3)]


@pytest.fixture
async def bridge(
    zookeeper: ZooKeeperServer, chroot: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ZkBridge]:
    """A ZooKeeper namespace holding three registered brokers and topic ``t``, whose
    partition 5 has its znode but no state (a controller died between the two)."""
    monkeypatch.setattr(zk, "_MULTI_OPS", 16)  # several multis, in flight together
    monkeypatch.setattr(controller_module, "BrokerChannel", _Channel)
    bridge = ZkBridge(zookeeper.connect_string + chroot)
    await bridge.start(timeout_s=10)
    await bridge.create(paths.CONTROLLER_EPOCH, b"1")
    for b in (1, 2, 3):
        reg = BrokerRegistration(b, "127.0.0.1", 9000 + b)
        await bridge.create(paths.broker(b), reg.to_json(0), makepath=True)
    assignment = TopicAssignment("t", {p: _replicas(p) for p in range(PARTITIONS)})
    await bridge.create(paths.topic("t"), assignment.to_json(), makepath=True)
    await bridge.create(f"{paths.partitions('t')}/5", makepath=True)
    yield bridge
    await bridge.stop()


async def _state(bridge: ZkBridge, p: int) -> tuple[PartitionState, int]:
    path = paths.partition_state("t", p)
    raw, stat = await bridge.get(path)
    return PartitionState.from_json(path, raw), stat.version


async def _started(bridge: ZkBridge) -> Controller:
    controller = Controller(bridge, broker_id=1)
    await controller.activate(1)
    for _ in range(500):
        if len(controller.states) == PARTITIONS and controller._events.empty():
            return controller
        await asyncio.sleep(0.01)
    raise AssertionError(f"the controller started {len(controller.states)} partitions")


async def test_first_states_and_a_controlled_shutdown_go_in_multis(bridge: ZkBridge) -> None:
    controller = await _started(bridge)
    try:
        for p in range(PARTITIONS):
            state, version = await _state(bridge, p)
            assert (state.leader, state.leader_epoch, state.isr, version) == (
                _replicas(p)[0],
                0,
                _replicas(p),
                0,
            )
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        for b in (1, 2, 3):  # every replica told of every partition it holds
            assert set(channels[b].roles) == {("t", p) for p in range(PARTITIONS)}

        # Broker 1 leaves. Meanwhile the leaders of three of its follower partitions (led
        # by 2) and three it leads take broker 3 out of their ISRs, as a leader does when
        # a follower falls behind: the controller's writes of those six lose the race,
        # and it must decide them again from what the leaders wrote.
        raced = [p for p in range(PARTITIONS) if _replicas(p)[0] == 2][:3]
        raced += [p for p in range(PARTITIONS) if _replicas(p)[0] == 1][:3]
        real, calls = bridge.write_many, 0

        async def racing(writes: list[GuardedWrite], **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                for p in raced:
                    state, at = await _state(bridge, p)
                    shrunk = PartitionState(
                        state.leader, state.leader_epoch, [r for r in state.isr if r != 3], 1
                    )
                    await bridge.set(paths.partition_state("t", p), shrunk.to_json(), version=at)
            return await real(writes, **kwargs)

        bridge.write_many = racing  # type: ignore[method-assign]
        assert await controller.controlled_shutdown(1) == []
        assert calls == 2  # the six lost, were read again, and went in one more round
        for p in range(PARTITIONS):
            state, _ = await _state(bridge, p)
            assert 1 not in state.isr and state.leader == state.isr[0]
            assert state.leader_epoch == 1  # a new leader, or an ISR without broker 1
            assert (3 in state.isr) == (p not in raced)  # the leaders' changes are kept
            for b in (2, 3):  # the staying replicas hear the epoch written
                assert channels[b].roles[("t", p)] == 1
    finally:
        await controller.deactivate()


async def test_a_state_removed_by_hand_is_created_again_with_the_next_epoch(
    bridge: ZkBridge,
) -> None:
    """A partition's state znode (or its whole znode) removed by hand is written again
    by the next election, its leader epoch going on from the last: the replicas hold
    that epoch, and would ignore a first state's 0."""
    controller = await _started(bridge)
    try:
        led_by_1 = [p for p in range(PARTITIONS) if _replicas(p)[0] == 1]
        state_gone, all_gone = led_by_1[:2]
        await bridge.delete(paths.partition_state("t", state_gone))
        await bridge.delete(f"{paths.partitions('t')}/{all_gone}", recursive=True)
        assert await controller.controlled_shutdown(1) == []
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        for _ in range(200):
            if all(("t", p) in channels[2].roles for p in led_by_1):
                break
            await asyncio.sleep(0.01)
        for p in led_by_1:
            state, _ = await _state(bridge, p)
            assert state.leader == _replicas(p)[1] and state.leader_epoch == 1
            assert 1 not in state.isr
            assert channels[2].roles[("t", p)] == channels[3].roles[("t", p)] == 1
        # and the next election of it is an ordinary write at the version created
        await controller.deactivate()
        controller = await _started(bridge)
        assert controller.states[("t", state_gone)].state.leader_epoch == 1
    finally:
        await controller.deactivate()


async def test_a_partition_znode_made_meanwhile_is_not_taken_for_a_lost_race(
    bridge: ZkBridge,
) -> None:
    """From a review: the partition's znode (not its state) made by someone else between
    the controller's two tries (state alone, then with that znode) refused the second
    with NodeExists; taken for a lost race, the state was read again, was not there, and
    the whole election failed. The state alone is written once more."""
    controller = await _started(bridge)
    try:
        gone = next(p for p in range(PARTITIONS) if _replicas(p)[0] == 1)
        await bridge.delete(f"{paths.partitions('t')}/{gone}", recursive=True)
        real, calls = bridge.write_many, 0

        async def meanwhile(writes: list[GuardedWrite], **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            results = await real(writes, **kwargs)
            if calls == 2:  # the state alone was refused: its znode appears now
                await bridge.create(f"{paths.partitions('t')}/{gone}")
            return results

        bridge.write_many = meanwhile  # type: ignore[method-assign]
        assert await controller.controlled_shutdown(1) == []
        assert calls == 4  # the election, state alone, with its znode, state alone
        state, _ = await _state(bridge, gone)
        assert state.leader == _replicas(gone)[1] and state.leader_epoch == 1
    finally:
        await controller.deactivate()


async def test_a_refused_write_fails_the_event_and_the_rest_are_still_told(
    bridge: ZkBridge,
) -> None:
    """A topic whose partitions' znodes were all removed by hand (not a deletion) is not
    brought back: its write is refused (NoNode), and the others of the same election are
    made and their replicas told."""
    controller = await _started(bridge)
    try:
        other = TopicAssignment("u", {0: [1, 2, 3]})
        await bridge.create(paths.topic("u"), other.to_json(), makepath=True)
        for _ in range(500):
            if ("u", 0) in controller.states and controller._events.empty():
                break
            await asyncio.sleep(0.01)
        await bridge.delete(paths.partitions("u"), recursive=True)
        led_by_1 = [p for p in range(PARTITIONS) if _replicas(p)[0] == 1]
        with pytest.raises(ZkError, match="does not exist"):
            await controller.controlled_shutdown(1)
        with pytest.raises(ZkError, match="does not exist"):
            await bridge.get(paths.partitions("u"))
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        for _ in range(200):  # told once the failed event is over
            if all(("t", p) in channels[2].roles for p in led_by_1):
                break
            await asyncio.sleep(0.01)
        for p in led_by_1:
            state, _ = await _state(bridge, p)
            assert state.leader != 1 and state.leader_epoch == 1
            assert channels[2].roles[("t", p)] == channels[3].roles[("t", p)] == 1
    finally:
        await controller.deactivate()


def _lose_first_answers(bridge: ZkBridge, *, made: float) -> None:
    """The first write_many makes the first ``made`` of its writes, and none of its
    answers arrive (the connection dropped); the later ones go through."""
    real, calls = bridge.write_many, 0

    async def lost(writes: list[GuardedWrite], **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            return await real(writes, **kwargs)
        await real(writes[: int(len(writes) * made)], **kwargs)
        return [ZkError("ZooKeeper unavailable: ConnectionLoss")] * len(writes)

    bridge.write_many = lost  # type: ignore[method-assign]


async def test_writes_whose_answer_was_lost_are_still_told(
    bridge: ZkBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multis land but their answer is lost (the connection drops): the event runs
    again, finds its own writes there (each a conflict, then nothing left to change),
    and must still tell the new leaders, or they would never lead."""
    monkeypatch.setattr(controller_module, "_RETRY_S", 0.01)
    controller = await _started(bridge)
    try:
        _lose_first_answers(bridge, made=1.0)
        assert await controller.controlled_shutdown(1) == []
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        for _ in range(200):  # told once the event is over
            if all(channels[2].roles[("t", p)] == 1 for p in range(PARTITIONS)):
                break
            await asyncio.sleep(0.01)
        for p in range(PARTITIONS):
            state, _ = await _state(bridge, p)
            assert state.leader != 1 and state.leader_epoch == 1
            assert channels[2].roles[("t", p)] == channels[3].roles[("t", p)] == 1
    finally:
        await controller.deactivate()


async def test_deleting_many_topics_stops_each_replica_once(bridge: ZkBridge) -> None:
    """Each deletion that ends re-reads the pending ones: it must not send them all their
    StopReplica again (the requests grew with the square of the topics deleted)."""
    names = [f"d{i}" for i in range(20)]
    for name in names:
        assignment = TopicAssignment(name, {0: [1, 2, 3]})
        await bridge.create(paths.topic(name), assignment.to_json())
    controller = Controller(bridge, broker_id=1)
    await controller.activate(1)
    try:
        for _ in range(500):
            if len(controller.states) == PARTITIONS + len(names):
                break
            await asyncio.sleep(0.01)
        for name in names:
            await bridge.create(paths.delete_topic(name), makepath=True)
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        for name in names:  # the brokers finish one topic at a time
            for channel in channels.values():
                channel.answer_deletes(name)
            for _ in range(500):
                if name not in controller.assignments and controller._events.empty():
                    break
                await asyncio.sleep(0.01)
        assert set(await bridge.get_children(paths.TOPICS)) == {"t"}
        assert await bridge.get_children(paths.DELETE_TOPICS) == []
        for b in (1, 2, 3):
            assert sorted(channels[b].deletes) == sorted(names)
    finally:
        await controller.deactivate()


async def test_a_broker_gone_while_the_answers_were_lost_still_gets_its_leaders_moved(
    bridge: ZkBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broker 1 dies; the elections' multis land but their answers are lost. The rerun of
    the event reads the brokers again and finds nothing new: it must still finish what
    the first attempt began, and tell the new leaders of the writes it did not see."""
    monkeypatch.setattr(controller_module, "_RETRY_S", 0.01)
    controller = await _started(bridge)
    try:
        _lose_first_answers(bridge, made=0.5)
        await bridge.delete(paths.broker(1))
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        led_by_1 = [p for p in range(PARTITIONS) if _replicas(p)[0] == 1]
        for _ in range(300):
            if all(channels[2].roles.get(("t", p)) == 1 for p in led_by_1):
                break
            await asyncio.sleep(0.01)
        for p in led_by_1:
            state, _ = await _state(bridge, p)
            assert state.leader in (2, 3) and state.leader_epoch == 1
            assert channels[2].roles[("t", p)] == channels[3].roles[("t", p)] == 1
    finally:
        await controller.deactivate()


async def test_partitions_added_to_a_topic_are_started_even_after_a_failed_try(
    bridge: ZkBridge,
) -> None:
    """CreatePartitions writes the topic's assignment with more partitions; the controller,
    watching it, gives the new ones their first state and tells their replicas. A
    ZooKeeper error part way reruns the event, which must not find them known and skip
    them. A changed replica list of an existing partition (a reassignment) is left."""
    controller = await _started(bridge)
    try:
        real, failures = bridge.write_many, 0

        async def failing_once(writes: list[GuardedWrite], **kwargs: Any) -> Any:
            nonlocal failures
            if failures == 0:
                failures += 1
                raise ZkError("connection lost (injected)")
            return await real(writes, **kwargs)

        bridge.write_many = failing_once  # type: ignore[method-assign]
        grown = {p: _replicas(p) for p in range(PARTITIONS + 2)}
        grown[0] = [3, 2, 1]  # not applied: partition 0 keeps its replicas
        await bridge.set(paths.topic("t"), TopicAssignment("t", grown).to_json())
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        new = [("t", PARTITIONS), ("t", PARTITIONS + 1)]
        for _ in range(500):
            if all(tp in channels[b].roles for tp in new for b in (1, 2, 3)):
                break
            await asyncio.sleep(0.01)
        assert failures == 1
        for p in (PARTITIONS, PARTITIONS + 1):
            state, version = await _state(bridge, p)
            assert (state.leader, state.isr, version) == (_replicas(p)[0], _replicas(p), 0)
            assert all(channels[b].roles[("t", p)] == 0 for b in (1, 2, 3))
        assert controller.assignments["t"][0] == _replicas(0)
        assert len(controller.states) == PARTITIONS + 2
    finally:
        await controller.deactivate()
