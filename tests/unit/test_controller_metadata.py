"""What the controller tells the brokers when an event fails partway.

The controller sends each change alone (incremental UpdateMetadata). A handler that
fails after changing its state (a ZooKeeper error, then a rerun that finds nothing
left to do) would leave every broker's picture wrong until the next change, and the
new leader not told; the controller then sends every broker its whole state once the
event is over. Run on a controller
whose ZooKeeper side is replaced by the handlers under test, with channels that record.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import broker.controller.controller as controller_module
from broker.controller.controller import Controller, _State
from broker.zk import BrokerRegistration, PartitionState, ZkError
from protocol.apis import (
    UPDATE_METADATA_FULL,
    UPDATE_METADATA_INCREMENTAL,
    ApiKey,
    LeaderAndIsrRequest,
    UpdateMetadataRequest,
)

_T_ID = bytes(range(16))


class _Channel:
    def __init__(self) -> None:
        self.sent: list[UpdateMetadataRequest] = []
        self.roles: list[LeaderAndIsrRequest] = []
        self.broker_epoch = -1  # (as BrokerChannel's: the registration it was made for)

    def send(self, api_key: ApiKey, request: Any) -> asyncio.Future[Any]:
        if api_key == ApiKey.UPDATE_METADATA:
            self.sent.append(request)
        elif api_key == ApiKey.LEADER_AND_ISR:
            self.roles.append(request)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def close(self) -> None:
        return None


def _leaders(request: UpdateMetadataRequest) -> dict[int, int]:
    return {s.partition_index: s.leader for s in request.partition_states}


@pytest.fixture
async def controller(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(controller_module, "_RETRY_S", 0.01)
    c = Controller(zk=None, broker_id=1)  # type: ignore[arg-type]
    channels = {b: _Channel() for b in (1, 2)}

    async def startup(_: object) -> None:
        c.brokers = {b: BrokerRegistration(b, "127.0.0.1", 9000 + b, epoch=b) for b in (1, 2)}
        c.assignments = {"t": {0: [1, 2], 1: [2, 1]}}
        c.topic_ids = {"t": _T_ID}
        c.states = {
            ("t", p): _State(
                PartitionState(leader=r[0], leader_epoch=0, isr=r, controller_epoch=1), 0
            )
            for p, r in c.assignments["t"].items()
        }
        c._channels = channels  # type: ignore[assignment]
        c._send_update_metadata(full_to=c.brokers)

    isr_changed: list[Any] = [None]  # the handler under test, set by the test

    async def dispatch(arg: object) -> None:
        await isr_changed[0](arg)

    # (_run binds its handlers when it starts: these stand-ins must be in place first)
    c._startup = startup  # type: ignore[method-assign]
    c._isr_changed = dispatch  # type: ignore[method-assign]
    await c.activate(1)
    yield c, channels, isr_changed
    await c.deactivate()


async def _settle(c: Controller) -> None:
    for _ in range(100):
        await asyncio.sleep(0.01)
        if c._events.empty():
            await asyncio.sleep(0.05)
            return


async def test_a_change_goes_alone_and_a_failed_event_resends_the_whole_picture(
    controller: Any,
) -> None:
    c, channels, isr_changed = controller
    await _settle(c)
    assert [r.type for r in channels[2].sent] == [UPDATE_METADATA_FULL]
    assert channels[2].sent[0].topic_ids == {"t": _T_ID}  # every topic's id with the picture
    attempts = 0

    async def moved(_: object) -> None:  # partition 1's leader moves to broker 1...
        c.states[("t", 1)] = _State(
            PartitionState(leader=1, leader_epoch=1, isr=[1], controller_epoch=1), 1
        )
        c._send_update_metadata([("t", 1)])

    async def fails_then_finds_nothing(_: object) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:  # ...partition 0's too, then ZooKeeper goes away mid-event
            c.states[("t", 0)] = _State(
                PartitionState(leader=2, leader_epoch=1, isr=[2], controller_epoch=1), 1
            )
            c._wrote.add(("t", 0))  # as _write_state notes it
            raise ZkError("ZooKeeper unavailable")
        # the rerun sees the state it already changed: nothing to send

    isr_changed[0] = moved
    c._enqueue("isr_changes")
    await _settle(c)
    delta = channels[2].sent[-1]
    assert (delta.type, _leaders(delta)) == (UPDATE_METADATA_INCREMENTAL, {1: 1})
    assert delta.topic_ids == {"t": _T_ID}  # the ids of the topics a change names

    isr_changed[0] = fails_then_finds_nothing
    c._enqueue("isr_changes")
    await _settle(c)
    assert attempts == 2
    for channel in channels.values():
        whole = channel.sent[-1]
        assert (whole.type, _leaders(whole)) == (UPDATE_METADATA_FULL, {0: 2, 1: 1})
        # and the replicas of what it wrote their roles, at the epoch it wrote (never an
        # older one: a fenced or restarted broker would take that as leading again)
        (roles,) = channel.roles
        assert [(s.partition_index, s.leader, s.leader_epoch) for s in roles.partition_states] == [
            (0, 2, 1)
        ]
