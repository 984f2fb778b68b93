"""The controller against a real ZooKeeper: its state writes go many to a multi, and a
write that loses a race (a leader changed its ISR meanwhile) is decided again alone.

No broker processes: the brokers are registrations written by hand, and the channels
to them record what the controller sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
    VersionConflict,
    ZkBridge,
    ZkError,
    paths,
)
from client.localcluster import ZooKeeperServer
from protocol.apis import (
    ApiKey,
    LeaderAndIsrRequest,
    LeaderAndIsrResponse,
    PartitionError,
    StopReplicaRequest,
    StopReplicaResponse,
)
from protocol.errors import KafkaStorageError
from protocol.topic_id import TOPIC_IDS_FEATURE, ZERO_TOPIC_ID, new_topic_id

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
        self.sent_order: list[str] = []  # "stop" (with delete) or "lead" (LeaderAndIsr)
        self.held: list[tuple[set[str], asyncio.Future[Any]]] = []  # their answers
        self.offline: set[tuple[str, int]] = set()  # answered KAFKA_STORAGE_ERROR (a disk)

    def send(self, api_key: ApiKey, request: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        answer = None
        if api_key == ApiKey.LEADER_AND_ISR:
            assert isinstance(request, LeaderAndIsrRequest)
            if request.partition_states:
                self.sent_order.append("lead")
            for s in request.partition_states:
                self.roles[(s.topic_name, s.partition_index)] = s.leader_epoch
            answer = LeaderAndIsrResponse(
                partition_errors=[
                    PartitionError(
                        topic_name=s.topic_name,
                        partition_index=s.partition_index,
                        error_code=KafkaStorageError.code
                        if (s.topic_name, s.partition_index) in self.offline
                        else 0,
                    )
                    for s in request.partition_states
                ]
            )
        elif api_key == ApiKey.STOP_REPLICA:
            assert isinstance(request, StopReplicaRequest)
            answer = StopReplicaResponse()
            if request.delete_partitions:  # answered when the test says
                self.sent_order.append("stop")
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


def _fail_next_write(bridge: ZkBridge) -> list[int]:
    """The bridge's next multi write fails with a ZooKeeper error, once (a connection
    lost); the list counts the failures made."""
    real, failures = bridge.write_many, [0]

    async def failing_once(writes: list[GuardedWrite], **kwargs: Any) -> Any:
        if failures[0] == 0:
            failures[0] += 1
            raise ZkError("connection lost (injected)")
        return await real(writes, **kwargs)

    bridge.write_many = failing_once  # type: ignore[method-assign]
    return failures


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
        failures = _fail_next_write(bridge)
        grown = {p: _replicas(p) for p in range(PARTITIONS + 2)}
        grown[0] = [3, 2, 1]  # not applied: partition 0 keeps its replicas
        await bridge.set(paths.topic("t"), TopicAssignment("t", grown).to_json())
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        new = [("t", PARTITIONS), ("t", PARTITIONS + 1)]
        for _ in range(500):
            if all(tp in channels[b].roles for tp in new for b in (1, 2, 3)):
                break
            await asyncio.sleep(0.01)
        assert failures == [1]
        for p in (PARTITIONS, PARTITIONS + 1):
            state, version = await _state(bridge, p)
            assert (state.leader, state.isr, version) == (_replicas(p)[0], _replicas(p), 0)
            assert all(channels[b].roles[("t", p)] == 0 for b in (1, 2, 3))
        assert controller.assignments["t"][0] == _replicas(0)
        assert len(controller.states) == PARTITIONS + 2
    finally:
        await controller.deactivate()


# --- partition reassignment ---------------------------------------------------------------


async def _register(bridge: ZkBridge, broker_id: int) -> None:
    reg = BrokerRegistration(broker_id, "127.0.0.1", 9000 + broker_id)
    await bridge.create(paths.broker(broker_id), reg.to_json(0), makepath=True)


async def _until(check: Any, what: str) -> None:
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within 5 s: {what}")


async def _settled(controller: Controller) -> None:
    """Every event queued so far handled, and those their brokers' answers queue (an
    answer's callback queues its event after the request that event sent): a call on the
    event task comes after them all, so a few in a row find it quiet."""

    async def nothing() -> None:
        return None

    for _ in range(3):
        await controller.submit(nothing)
        await asyncio.sleep(0)  # (the answers' callbacks run)


async def _in_sync(bridge: ZkBridge, p: int, isr: list[int], topic: str = "t") -> None:
    """What a leader does when followers catch up: its ISR written (read again if the
    controller wrote the state meanwhile, as after a broker's removal), the controller
    told."""
    path = paths.partition_state(topic, p)
    for _ in range(50):
        raw, stat = await bridge.get(path)
        state = PartitionState.from_json(path, raw)
        grown = PartitionState(state.leader, state.leader_epoch, isr, state.controller_epoch)
        try:
            await bridge.set(path, grown.to_json(), version=stat.version)
            break
        except VersionConflict:
            await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"{path} kept changing")
    note = json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": p}]})
    await bridge.create(
        paths.ISR_CHANGES + "/isr_change_", note.encode(), sequence=True, makepath=True
    )


async def _assignment(bridge: ZkBridge) -> TopicAssignment:
    data, _ = await bridge.get(paths.topic("t"))
    return TopicAssignment.from_json("t", data)


async def test_a_reassignment_copies_first_then_moves_the_leader_and_deletes_the_old_replica(
    bridge: ZkBridge,
) -> None:
    """Partition 0 moves from [1, 2, 3] to [2, 3, 4]. First both sets, with 4 being added
    and 1 removed, in the znode, and the leader epoch bumped so leader 1 takes 4 as a
    follower; nothing leaves until 4 is in sync. Then the leadership goes to 2 (the first
    in-sync target replica), 1 leaves the ISR and the list, and gets StopReplica with
    delete."""
    await _register(bridge, 4)
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        outcome = await controller.reassign({("t", 0): [2, 3, 4]})
        assert outcome == {("t", 0): None}
        moving = await _assignment(bridge)
        assert moving.partitions[0] == [2, 3, 4, 1]
        assert (moving.adding, moving.removing) == ({0: [4]}, {0: [1]})
        state, _ = await _state(bridge, 0)
        assert (state.leader, state.leader_epoch, state.isr) == (1, 1, [1, 2, 3])
        assert all(channels[b].roles[("t", 0)] == 1 for b in (1, 2, 3, 4))
        listed = await controller.list_reassignments(None)
        assert list(listed) == [("t", 0)] and listed[("t", 0)].adding == (4,)
        assert not channels[1].deletes

        await _in_sync(bridge, 0, [1, 2, 3, 4])

        async def moved() -> bool:
            return not (await _assignment(bridge)).reassigning and channels[1].deletes == ["t"]

        await _until(moved, "the move finished")
        done = await _assignment(bridge)
        assert done.partitions[0] == [2, 3, 4] and done.partitions[1] == _replicas(1)
        state, _ = await _state(bridge, 0)
        assert (state.leader, state.leader_epoch, state.isr) == (2, 2, [2, 3, 4])
        assert all(channels[b].roles[("t", 0)] == 2 for b in (2, 3, 4))
        assert channels[1].roles[("t", 0)] == 1  # stopped, not told it follows
        assert controller.assignments["t"][0] == [2, 3, 4]
        assert await controller.list_reassignments(None) == {}
    finally:
        await controller.deactivate()


async def test_a_cancelled_reassignment_drops_the_new_replica_and_keeps_the_old(
    bridge: ZkBridge,
) -> None:
    """Cancelled, a move goes back to its origin (as Kafka, in the move's order: the
    target's replicas first) and the replica it was adding is deleted at once."""
    await _register(bridge, 4)
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        assert await controller.reassign({("t", 1): [4, 3, 1]}) == {("t", 1): None}
        assert (await _assignment(bridge)).partitions[1] == [4, 3, 1, 2]
        assert await controller.reassign({("t", 1): None}) == {("t", 1): None}
        back = await _assignment(bridge)
        assert back.partitions[1] == [3, 1, 2] and not back.reassigning
        assert channels[4].deletes == ["t"] and not channels[2].deletes
        state, _ = await _state(bridge, 1)
        assert (state.leader, state.isr) == (2, [2, 3, 1])
        again = await controller.reassign({("t", 1): None})
        assert type(again[("t", 1)]).__name__ == "NoReassignmentInProgressError"
    finally:
        await controller.deactivate()


async def test_reassignments_that_cannot_be_made_are_refused_each_alone(bridge: ZkBridge) -> None:
    controller = await _started(bridge)
    try:
        outcome = await controller.reassign(
            {
                ("t", 2): [1, 9],
                ("t", 3): [1, 1, 2],
                ("t", 4): [],
                ("nope", 0): [1],
                ("t", PARTITIONS): [1],
                ("t", 5): [3, 1],
            }
        )
        names = {tp: None if e is None else e.name for tp, e in outcome.items()}
        assert names == {
            ("t", 2): "INVALID_REPLICA_ASSIGNMENT",
            ("t", 3): "INVALID_REPLICA_ASSIGNMENT",
            ("t", 4): "INVALID_REPLICA_ASSIGNMENT",
            ("nope", 0): "UNKNOWN_TOPIC_OR_PARTITION",
            ("t", PARTITIONS): "UNKNOWN_TOPIC_OR_PARTITION",
            ("t", 5): None,  # a replica fewer: every target replica is in sync already
        }
        assert "9 is not alive" in str(outcome[("t", 2)])
        done = await _assignment(bridge)
        assert done.partitions[5] == [3, 1] and not done.reassigning
        assert done.partitions[2] == _replicas(2)
    finally:
        await controller.deactivate()


async def test_a_new_controller_finishes_the_move_its_predecessor_began(bridge: ZkBridge) -> None:
    """The first controller dies mid-move. Its successor reads the move from the znode,
    bumps the epoch again (the leader may not have heard of the new list), and finishes
    it when the new replica is in sync."""
    await _register(bridge, 4)
    first = await _started(bridge)
    try:
        assert await first.reassign({("t", 0): [4, 2, 3]}) == {("t", 0): None}
    finally:
        await first.deactivate()
    await bridge.set(paths.CONTROLLER_EPOCH, b"2")
    second = Controller(bridge, broker_id=2)
    await second.activate(2)
    try:
        channels: dict[int, Any] = second._channels  # type: ignore[assignment]

        async def bumped() -> bool:
            return (await _state(bridge, 0))[0].leader_epoch == 2  # once by each controller

        await _until(bumped, "the second controller bumped the epoch")
        await _until(lambda: _true(channels[4].roles.get(("t", 0)) == 2), "4 told")
        await _in_sync(bridge, 0, [1, 2, 3, 4])
        await _until(lambda: _true(not second.reassignments), "the move finished")
        state, _ = await _state(bridge, 0)
        assert (state.leader, state.isr) == (4, [2, 3, 4])  # the target's first, in sync
        assert (await _assignment(bridge)).partitions[0] == [4, 2, 3]
        assert channels[1].deletes == ["t"]
    finally:
        await second.deactivate()


async def _true(value: bool) -> bool:
    return value


async def test_a_move_that_would_drop_the_only_in_sync_copy_is_refused(bridge: ZkBridge) -> None:
    """From a review: partition 0 moving to [4, 5], its old replicas gone and 4 the only
    one in sync. Cancelling (or any list without 4) would delete every acked record: it
    is refused, and nothing is deleted."""
    for b in (4, 5):
        await _register(bridge, b)
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        assert await controller.reassign({("t", 0): [4, 5]}) == {("t", 0): None}
        state, version = await _state(bridge, 0)
        alone = PartitionState(4, state.leader_epoch + 1, [4], state.controller_epoch)
        await bridge.set(paths.partition_state("t", 0), alone.to_json(), version=version)
        # not yet read by the controller (the leader's note still on its way): the move
        # is decided on what ZooKeeper holds when it is made
        stale = await controller.reassign({("t", 0): None})
        assert "the only in-sync replica" in str(stale[("t", 0)])
        assert controller.states[("t", 0)].state.isr == [4]
        for target in (None, [1, 2], [5, 1]):
            outcome = await controller.reassign({("t", 0): target})
            error = outcome[("t", 0)]
            assert error is not None and error.name == "INVALID_REPLICA_ASSIGNMENT", target
            assert "the only in-sync replica" in str(error)
        assert not channels[4].deletes
        assert (await _assignment(bridge)).partitions[0] == [4, 5, 1, 2, 3]
        assert await controller.reassign({("t", 0): [5, 4]}) == {("t", 0): None}  # keeps 4
    finally:
        await controller.deactivate()


async def test_a_move_begun_is_finished_though_its_caller_gave_up_during_a_zookeeper_error(
    bridge: ZkBridge,
) -> None:
    """From a review: the controller reruns an event after a ZooKeeper error, but a
    request whose caller had gone (its connection closed) was skipped on the rerun, with
    the move in the znode and its leader never told."""
    await _register(bridge, 4)
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        real, failures = bridge.write_many, 0
        asking: asyncio.Task[Any] | None = None

        async def failing_once(writes: list[GuardedWrite], **kwargs: Any) -> Any:
            nonlocal failures
            if failures == 0 and any(w.path.endswith("/state") for w in writes):
                failures += 1
                assert asking is not None
                asking.cancel()  # the caller goes away...
                raise ZkError("connection lost (injected)")  # ...as the state write fails
            return await real(writes, **kwargs)

        bridge.write_many = failing_once  # type: ignore[method-assign]
        asking = asyncio.ensure_future(controller.reassign({("t", 0): [4, 2, 3]}))
        with contextlib.suppress(asyncio.CancelledError):
            await asking
        await _until(lambda: _true(channels[4].roles.get(("t", 0)) == 1), "4 told")
        assert failures == 1
        assert (await _state(bridge, 0))[0].leader_epoch == 1
        assert controller.reassignments[("t", 0)].adding == (4,)
    finally:
        await controller.deactivate()


async def test_a_removed_replica_on_a_down_broker_is_deleted_when_it_returns(
    bridge: ZkBridge,
) -> None:
    """Broker 1 is down when the move that removes it finishes: its copy is deleted when
    it registers again."""
    controller = await _moved_off_a_down_broker(bridge)
    try:
        await _register(bridge, 1)

        async def deleted() -> bool:
            channel: Any = controller._channels.get(1)
            return channel is not None and channel.deletes == ["u"]

        await _until(deleted, "broker 1 told to delete its copy")
        assert controller._strays == {1: {("u", 0)}}  # until it confirms
        controller._channels[1].answer_deletes("u")  # type: ignore[attr-defined]
        await _until(lambda: _true(controller._strays == {1: set()}), "the copy confirmed gone")
    finally:
        await controller.deactivate()


async def test_a_deleted_topics_copy_on_a_down_broker_goes_when_the_broker_returns(
    bridge: ZkBridge,
) -> None:
    """From two reviews: the deletion does not wait for a copy a move left on a down
    broker (a move often retired that broker for good), but the copy is not forgotten:
    the broker is told to delete it when it returns, even if the deletion was still
    waiting for another replica's broker then."""
    controller = await _moved_off_a_down_broker(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        await bridge.delete(paths.broker(3))  # a replica of u down too: the deletion waits
        await _until(lambda: _true(3 not in controller.brokers), "broker 3 gone")
        await bridge.create(paths.delete_topic("u"), makepath=True)
        await _until(lambda: _true("u" in controller.deleting), "the deletion began")
        await _register(bridge, 1)  # back first: its copy must still go with the deletion
        await _until(lambda: _true(1 in controller.brokers), "broker 1 back")
        await asyncio.sleep(0.1)
        assert not any(c.deletes for c in channels.values())  # still waiting for broker 3
        await _register(bridge, 3)
        await _until(
            lambda: _true(
                all(b in channels and channels[b].deletes == ["u"] for b in (1, 2, 3, 4))
            ),
            "every copy asked to go",
        )
        for b in (1, 2, 3, 4):
            channels[b].answer_deletes("u")
        await _until(lambda: _true("u" not in controller.assignments), "u deleted")
        assert controller._strays == {1: set()}
    finally:
        await controller.deactivate()


async def test_a_deletion_does_not_wait_for_a_retired_brokers_copy(bridge: ZkBridge) -> None:
    """Moving partitions off a dead broker is how it is retired: a deletion of their topic
    must not wait for it. Its copy is deleted should it ever return."""
    controller = await _moved_off_a_down_broker(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        await bridge.create(paths.delete_topic("u"), makepath=True)
        await _until(
            lambda: _true(all(channels[b].deletes == ["u"] for b in (2, 3, 4))), "replicas asked"
        )
        for b in (2, 3, 4):
            channels[b].answer_deletes("u")
        await _until(lambda: _true("u" not in controller.assignments), "u deleted")
        assert controller._orphans == {1: {("u", 0)}}
        # made again under the name, broker 1 a replica: its old copy must go first
        await bridge.create(paths.topic("u"), TopicAssignment("u", {0: [1, 2]}).to_json())
        await _until(lambda: _true(("u", 0) in controller.states), "u made again")
        await _register(bridge, 1)
        await _until(lambda: _true(1 in channels and channels[1].deletes == ["u"]), "1 asked")
        channel = channels[1]
        assert channel.sent_order.index("stop") < channel.sent_order.index("lead"), (
            "the old copy is deleted before the new topic's role arrives"
        )
    finally:
        await controller.deactivate()


async def _moved_off_a_down_broker(bridge: ZkBridge) -> Controller:
    """Topic ``u``'s one partition moved from [1, 2, 3] to [4, 2, 3] while broker 1 was
    down (its only copy on broker 1)."""
    await _register(bridge, 4)
    controller = await _started(bridge)
    await bridge.create(paths.topic("u"), TopicAssignment("u", {0: [1, 2, 3]}).to_json())
    await _until(lambda: _true(("u", 0) in controller.states), "topic u started")
    assert await controller.reassign({("u", 0): [4, 2, 3]}) == {("u", 0): None}
    await bridge.delete(paths.broker(1))
    await _until(lambda: _true(1 not in controller.brokers), "broker 1 gone")
    await _in_sync(bridge, 0, [2, 3, 4], topic="u")
    await _until(lambda: _true(not controller.reassignments), "the move finished")
    assert controller._strays == {1: {("u", 0)}}
    return controller


async def test_an_unclean_election_during_a_move_prefers_a_replica_that_had_the_log(
    bridge: ZkBridge,
) -> None:
    """Every in-sync replica of a moving partition gone, unclean election allowed: the
    first live replica of the move's origin leads, not a new one still copying (listed
    first, being the target's), which would have nothing."""
    await _register(bridge, 4)
    controller = await _started(bridge)
    try:
        assert await controller.reassign({("t", 0): [4, 2, 3]}) == {("t", 0): None}
        state = controller.states[("t", 0)].state
        lost = PartitionState(-1, state.leader_epoch, [1], state.controller_epoch)
        controller._unclean = {"t": True}
        controller.brokers.pop(1)
        chosen = await controller._leader_for(("t", 0), lost)
        assert chosen is not None and chosen.leader == 2 and chosen.isr == [2]
    finally:
        await controller.deactivate()


async def test_unclean_election_on_demand_names_a_replica_shutting_down(bridge: ZkBridge) -> None:
    """KIP-460 with the only live replica shutting down: refused, and the operator is
    told that (before: "none of its replicas is alive", with broker 1 up)."""
    controller = await _started(bridge)
    try:
        for b in (2, 3):
            await bridge.delete(paths.broker(b))
        for _ in range(500):
            if set(controller.brokers) == {1} and controller._events.empty():
                break
            await asyncio.sleep(0.01)
        assert set(controller.brokers) == {1}
        await controller.controlled_shutdown(1)  # nowhere to move its partitions
        outcome = await controller.elect_unclean_now([("t", 0)])
        error = outcome[("t", 0)]
        assert error is not None and error.name == "ELIGIBLE_LEADERS_NOT_AVAILABLE"
        assert "t-0: its live replicas [1] are shutting down" in str(error)
    finally:
        await controller.deactivate()


async def test_replicas_a_broker_answers_offline_lose_leadership_and_isr(bridge: ZkBridge) -> None:
    """KIP-112: a broker whose disk failed says so (a LogDirEventNotification); the
    controller sends it LeaderAndIsr for all it hosts, and the partitions it answers with
    KAFKA_STORAGE_ERROR get leaders elsewhere and lose it from their ISR, until it
    starts again."""
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        led = [p for p in range(PARTITIONS) if _replicas(p)[0] == 1][:2]
        followed = next(p for p in range(PARTITIONS) if _replicas(p)[1] == 1)
        channels[1].offline = {("t", p) for p in [*led, followed]}
        await bridge.create(
            f"{zk.paths.LOG_DIR_EVENTS}/{zk.paths.LOG_DIR_EVENT_PREFIX}",
            zk.log_dir_event_json(1),
            sequence=True,
            makepath=True,
        )
        for _ in range(300):
            if all(1 not in controller.states[("t", p)].state.isr for p in [*led, followed]):
                break
            await asyncio.sleep(0.01)
        for p in led:
            state, _ = await _state(bridge, p)
            assert state.leader == _replicas(p)[1] and 1 not in state.isr
            assert state.leader_epoch == 1
        state, _ = await _state(bridge, followed)
        assert state.leader == _replicas(followed)[0] and 1 not in state.isr
        assert controller.offline_replicas[("t", led[0])] == {1}
        metadata = controller._metadata_state(("t", led[0]))
        assert metadata.offline_replicas == [1]
        assert not await bridge.get_children(zk.paths.LOG_DIR_EVENTS)  # handled, removed
        healthy = next(p for p in range(PARTITIONS) if _replicas(p)[0] == 1 and p not in led)
        untouched, _ = await _state(bridge, healthy)  # its other replicas on that broker
        assert (untouched.leader, untouched.leader_epoch) == (1, 0)
        # the broker starts again (a new registration): its replicas count again
        channels[1].offline = set()
        await bridge.delete(paths.broker(1))
        reg = BrokerRegistration(1, "127.0.0.1", 9001)
        await bridge.create(paths.broker(1), reg.to_json(0), makepath=True)
        for _ in range(300):
            if not controller.offline_replicas:
                break
            await asyncio.sleep(0.01)
        assert controller.offline_replicas == {}
    finally:
        await controller.deactivate()


# --- review of 3197e04 (KIP-112) ------------------------------------------------------------


async def _log_dir_event(bridge: ZkBridge, broker_id: int) -> None:
    await bridge.create(
        f"{zk.paths.LOG_DIR_EVENTS}/{zk.paths.LOG_DIR_EVENT_PREFIX}",
        zk.log_dir_event_json(broker_id),
        sequence=True,
        makepath=True,
    )


async def test_offline_leader_is_replaced_even_after_a_zookeeper_error(
    bridge: ZkBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broker 1's disk fails under a partition it leads. The controller's election write
    meets a ZooKeeper error (connection lost): the event runs again, as every event does.
    The rerun must still elect a new leader: the first attempt already put broker 1 in
    offline_replicas, and the partition must not stay led by the failed replica."""
    monkeypatch.setattr(controller_module, "_RETRY_S", 0.01)
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        led = next(p for p in range(PARTITIONS) if _replicas(p)[0] == 1)
        channels[1].offline = {("t", led)}
        failures = _fail_next_write(bridge)
        await _log_dir_event(bridge, 1)
        for _ in range(300):
            state, _ = await _state(bridge, led)
            if state.leader != 1:
                break
            await asyncio.sleep(0.01)
        assert failures == [1]
        assert controller.offline_replicas == {("t", led): {1}}
        state, _ = await _state(bridge, led)
        assert state.leader == _replicas(led)[1] and 1 not in state.isr  # fails: leader 1
    finally:
        await controller.deactivate()


async def test_offline_replicas_are_forgotten_when_the_controller_steps_down(
    bridge: ZkBridge,
) -> None:
    """This broker's controller marks broker 1's replica offline, then loses the
    controllership. Broker 1 restarts with its disk fixed (another controller sees that,
    and the leader takes 1 back into the ISR once it caught up). When this broker is
    elected again, its new term must not keep the old term's offline replicas: broker 1
    would be taken out of the ISR again and could never lead, until it restarted again
    under this controller."""
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        followed = next(p for p in range(PARTITIONS) if _replicas(p)[0] == 2)
        channels[1].offline = {("t", followed)}
        await _log_dir_event(bridge, 1)
        for _ in range(300):
            if 1 not in controller.states[("t", followed)].state.isr:
                break
            await asyncio.sleep(0.01)
        assert controller.offline_replicas == {("t", followed): {1}}
        await controller.deactivate()

        # meanwhile (another controller): broker 1 restarts, healthy, and catches up
        await bridge.delete(paths.broker(1))
        await bridge.create(
            paths.broker(1), BrokerRegistration(1, "127.0.0.1", 9001).to_json(0), makepath=True
        )
        path = paths.partition_state("t", followed)
        raw, stat = await bridge.get(path)
        state = PartitionState.from_json(path, raw)
        back = PartitionState(state.leader, state.leader_epoch, [*state.isr, 1], 1)
        await bridge.set(path, back.to_json(), version=stat.version)

        # this broker is elected again
        await bridge.set(paths.CONTROLLER_EPOCH, b"2")
        await controller.activate(2)
        channels = controller._channels  # type: ignore[assignment]
        await _until(  # its startup is through: every broker was sent LeaderAndIsr
            lambda: asyncio.sleep(0, all(channels.get(b) and channels[b].roles for b in (1, 2, 3))),
            "the new term's startup",
        )
        await _settled(controller)  # and the answers' events handled
        state, _ = await _state(bridge, followed)
        assert 1 in state.isr, state  # fails: the new term took healthy broker 1 out again
        assert controller.offline_replicas == {}  # (it holds {("t", p): {1}}, last term's)
        assert controller._metadata_state(("t", followed)).offline_replicas == []
    finally:
        await controller.deactivate()


async def test_preferred_election_does_not_make_an_offline_replica_leader(
    bridge: ZkBridge,
) -> None:
    """Partition p: replicas [1, 2, 3], its followers fell behind (ISR [1]); then broker
    1's disk fails under it. Nobody in sync is left: it goes offline (leader -1), its ISR
    kept as [1] (as Kafka's). A preferred leader election (or the auto leader rebalance,
    which runs one for every partition) must not hand it back to broker 1, whose log is
    offline: Kafka's PreferredReplicaPartitionLeaderElectionStrategy requires the
    preferred replica to be online."""
    controller = await _started(bridge)
    try:
        p = await _offline_alone(controller, bridge)
        assert controller.offline_replicas[("t", p)] == {1}
        assert controller.offline_partitions() == 1

        outcome = await controller.elect_preferred([("t", p)])
        state, _ = await _state(bridge, p)
        assert state.leader == -1, outcome  # fails: leader 1, outcome None ("elected")
        assert outcome[("t", p)] is not None
        assert controller.offline_partitions() == 1  # the metric still shows it offline
    finally:
        await controller.deactivate()


async def _offline_alone(controller: Controller, bridge: ZkBridge) -> int:
    """A partition led by broker 1 with an ISR of [1], whose log then goes offline there:
    leaderless (the ISR kept, as Kafka's). Returns its index."""
    channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
    p = next(p for p in range(PARTITIONS) if _replicas(p)[0] == 1)
    await _in_sync(bridge, p, [1])  # the leader shrank its ISR to itself
    await _until(
        lambda: asyncio.sleep(0, controller.states[("t", p)].state.isr == [1]),
        "the ISR shrink read",
    )
    channels[1].offline = {("t", p)}
    await _log_dir_event(bridge, 1)
    await _until(
        lambda: asyncio.sleep(0, controller.states[("t", p)].state.leader == -1),
        "the partition offline",
    )
    return p


async def test_a_finished_move_does_not_make_an_offline_replica_leader(
    bridge: ZkBridge,
) -> None:
    """As above (ISR [1], broker 1's log offline, the partition leaderless), then a
    reassignment to [1]: it is complete at once (its only target is in the ISR), and
    finishing it picks the leader from the ISR among the live brokers, which broker 1
    is: the offline replica leads again."""
    controller = await _started(bridge)
    try:
        p = await _offline_alone(controller, bridge)
        await controller.reassign({("t", p): [1]})
        state, _ = await _state(bridge, p)
        assert state.leader == -1, state  # fails: leader 1, its log offline
    finally:
        await controller.deactivate()


async def test_a_topic_made_again_does_not_inherit_offline_replicas(
    bridge: ZkBridge,
) -> None:
    """Topic d's replica on broker 1 went offline (a full disk); the topic is deleted (its
    logs removed, which frees the disk) and made again under the name. The new partition
    has nothing to do with the old log: broker 1's new replica must lead as the first
    replica, and be in the ISR, not be taken for the deleted topic's offline replica."""
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        await bridge.create(paths.topic("d"), TopicAssignment("d", {0: [1, 2, 3]}).to_json())
        await _until(lambda: asyncio.sleep(0, ("d", 0) in controller.states), "d made")
        channels[1].offline = {("d", 0)}
        await _log_dir_event(bridge, 1)
        await _until(
            lambda: asyncio.sleep(0, controller.offline_replicas.get(("d", 0)) == {1}),
            "d-0 on broker 1 offline",
        )
        await bridge.create(paths.delete_topic("d"), makepath=True)
        await _until(lambda: asyncio.sleep(0, "d" in controller.deleting), "deletion begun")
        for _ in range(100):
            for channel in channels.values():
                channel.answer_deletes("d")
            if "d" not in controller.assignments:
                break
            await asyncio.sleep(0.01)
        assert "d" not in controller.assignments
        channels[1].offline = set()  # its log was deleted: the disk has room again

        await bridge.create(paths.topic("d"), TopicAssignment("d", {0: [1, 2, 3]}).to_json())
        await _until(lambda: asyncio.sleep(0, ("d", 0) in controller.states), "d made again")
        await _settled(controller)
        path = paths.partition_state("d", 0)
        raw, _ = await bridge.get(path)
        state = PartitionState.from_json(path, raw)
        assert (state.leader, state.isr) == (1, [1, 2, 3]), state  # fails: leader 2, ISR [2, 3]
        assert ("d", 0) not in controller.offline_replicas
    finally:
        await controller.deactivate()


async def test_a_replica_answered_without_the_error_counts_again(bridge: ZkBridge) -> None:
    """Kafka's rule: a LeaderAndIsr answer without KAFKA_STORAGE_ERROR for a replica
    marked offline makes it online again (stale marks heal themselves)."""
    controller = await _started(bridge)
    try:
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        p = next(p for p in range(PARTITIONS) if _replicas(p)[1] == 1)
        channels[1].offline = {("t", p)}
        await _log_dir_event(bridge, 1)
        await _until(
            lambda: asyncio.sleep(0, controller.offline_replicas.get(("t", p)) == {1}),
            "marked offline",
        )
        channels[1].offline = set()
        await _log_dir_event(bridge, 1)  # asked again: it answers without the error
        await _until(lambda: asyncio.sleep(0, not controller.offline_replicas), "online again")
        assert controller._metadata_state(("t", p)).offline_replicas == []
    finally:
        await controller.deactivate()


async def test_an_answer_from_a_brokers_earlier_process_marks_nothing(bridge: ZkBridge) -> None:
    """A LeaderAndIsr answer that comes after its broker restarted says nothing of the new
    process: its KAFKA_STORAGE_ERROR is not taken for the new one's."""
    controller = await _started(bridge)
    try:
        epoch = controller.brokers[1].epoch
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        answer.set_result(
            LeaderAndIsrResponse(
                partition_errors=[
                    PartitionError(
                        topic_name="t", partition_index=0, error_code=KafkaStorageError.code
                    )
                ]
            )
        )
        channels: dict[int, Any] = controller._channels  # type: ignore[assignment]
        channels[2].offline = {("t", 0)}  # (its next answers say the same; broker 1's not)
        # the event an earlier registration's answer makes: nothing marked
        await controller._replicas_offline((1, epoch - 1, (("t", 0),)))
        assert controller.offline_replicas == {}
        controller._leader_and_isr_answered(1, epoch - 1, answer)  # (its event: the same)
        controller._leader_and_isr_answered(2, controller.brokers[2].epoch, answer)
        await _until(  # the current one counts
            lambda: asyncio.sleep(0, 2 in controller.offline_replicas.get(("t", 0), ())),
            "broker 2's replica offline",
        )
        await _settled(controller)
        assert controller.offline_replicas[("t", 0)] == {2}  # not broker 1's
    finally:
        await controller.deactivate()


async def test_a_new_term_does_not_keep_the_id_of_a_topic_deleted_meanwhile(
    bridge: ZkBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This broker's controller knows topic "u" and its id, then loses the controllership.
    Meanwhile "u" is deleted and made again without an id (an older build's broker 9 is
    registered: CreateTopics gives none). Elected again, its new term must not take the
    old topic's id for the new one: it would send it in LeaderAndIsr (the new logs keep
    it, and a stale copy of the deleted topic passes the check), never give the new topic
    an id of its own once broker 9 is gone, and write the old one back into its znode
    (found in review)."""
    sent: list[dict[str, bytes]] = []

    class Recording(_Channel):
        def send(self, api_key: ApiKey, request: Any) -> asyncio.Future[Any]:
            if api_key == ApiKey.LEADER_AND_ISR:
                sent.append(dict(request.topic_ids))
            return super().send(api_key, request)

    monkeypatch.setattr(controller_module, "BrokerChannel", Recording)
    features = {TOPIC_IDS_FEATURE: (1, 1)}
    for b in (1, 2, 3):  # this build's brokers
        reg = BrokerRegistration(b, "127.0.0.1", 9000 + b, features=features)
        await bridge.set(paths.broker(b), reg.to_json(0))
    old_id = new_topic_id()
    await bridge.create(
        paths.topic("u"), TopicAssignment("u", {0: [1, 2, 3]}, topic_id=old_id).to_json()
    )
    controller = Controller(bridge, broker_id=1)
    await controller.activate(1)
    try:
        await _until(lambda: asyncio.sleep(0, ("u", 0) in controller.states), "u started")
        await _settled(controller)
        assert controller.topic_ids["u"] == old_id
        await controller.deactivate()

        # meanwhile: broker 9 (an older build) registers; "u" deleted, made again
        older = BrokerRegistration(9, "127.0.0.1", 9009)
        await bridge.create(paths.broker(9), older.to_json(0), makepath=True)
        await bridge.delete(paths.topic("u"), recursive=True)
        await bridge.create(paths.topic("u"), TopicAssignment("u", {0: [2, 3, 1]}).to_json())

        await bridge.set(paths.CONTROLLER_EPOCH, b"2")
        sent.clear()
        await controller.activate(2)
        await _until(lambda: asyncio.sleep(0, ("u", 0) in controller.states), "u again")
        await _settled(controller)
        assert all(ids.get("u") != old_id for ids in sent), "the deleted topic's id was sent"

        # broker 9 upgraded: every broker keeps ids, and the new "u" is given its own
        await bridge.delete(paths.broker(9))

        async def given() -> bool:
            data, _ = await bridge.get(paths.topic("u"))
            return TopicAssignment.from_json("u", data).topic_id != ZERO_TOPIC_ID

        await _until(given, "the new topic given an id")
    finally:
        await controller.deactivate()


async def test_the_session_timeout_zookeeper_grants_is_known(
    zookeeper: ZooKeeperServer, chroot: str
) -> None:
    """ZooKeeper clamps a session's timeout to 2-20 of its ticks (the test server's tick
    is 500 ms: at most 10 s); the stall guard's threshold is a third of what it grants,
    not of what was asked."""
    granted: list[float] = []
    bridge = ZkBridge(zookeeper.connect_string + chroot, session_timeout_ms=60_000)
    bridge.on_negotiated_timeout(granted.append)
    await bridge.start(timeout_s=10)
    try:
        assert bridge.negotiated_session_timeout_s == pytest.approx(
            20 * zookeeper.tick_time_ms / 1000
        )
        await asyncio.sleep(0.05)
        assert granted == [bridge.negotiated_session_timeout_s]
    finally:
        await bridge.stop()
