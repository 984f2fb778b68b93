"""The registrar after a ZooKeeper session expiry, against an in-memory stand-in for the
bridge: the answers a real ZooKeeper gives rarely (a create whose answer is lost, another
broker at our own address) are given on demand. (tests/integration/test_membership.py has
the same against a real ZooKeeper, where it can make them happen.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from broker import registration
from broker.registration import BrokerRegistrar
from broker.zk import BrokerRegistration, NodeExists, SessionState, ZkError


class FakeZk:
    session_timeout_s = 6.0

    def __init__(self) -> None:
        self.session_id = 1
        self.znodes: dict[str, tuple[bytes, SimpleNamespace]] = {}
        self.zxid = 100
        self.lose_create_answer = False
        self.callbacks: list[Callable[[str], None]] = []
        self.looked: list[bool] = []  # the registrar's ``creating`` at each exists()
        self.registrar: BrokerRegistrar | None = None

    def on_state_change(self, callback: Callable[[str], None]) -> None:
        self.callbacks.append(callback)

    def expire(self) -> None:
        """The session expires (its ephemeral znodes go) and a new one connects."""
        self.znodes.clear()
        self.session_id += 1
        for callback in self.callbacks:
            callback(SessionState.LOST)
            callback(SessionState.CONNECTED)

    async def create_for_stat(self, path: str, value: bytes, **_: Any) -> SimpleNamespace:
        await asyncio.sleep(0)
        if path in self.znodes:
            raise NodeExists(path)
        self.zxid += 100
        stat = SimpleNamespace(czxid=self.zxid, ephemeralOwner=self.session_id, version=0)
        self.znodes[path] = (value, stat)
        if self.lose_create_answer:
            self.lose_create_answer = False
            raise ZkError("connection lost")  # made on the server; the answer never came
        return stat

    async def exists(self, path: str, watch: object = None) -> SimpleNamespace | None:
        await asyncio.sleep(0)
        if self.registrar is not None:
            self.looked.append(self.registrar.creating)
        got = self.znodes.get(path)
        return got[1] if got else None

    async def get(self, path: str, watch: object = None) -> tuple[bytes, SimpleNamespace]:
        await asyncio.sleep(0)
        return self.znodes[path]


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registration, "_RETRY_S", 0.01)
    monkeypatch.setattr(registration, "_TAKEN_RETRY_S", 0.01)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def test_a_registration_whose_answer_was_lost_still_gives_its_epoch() -> None:
    """From a review: the re-create after an expiry was made, but its answer was lost; the
    retry found the znode ours and stopped there, keeping the dead session's epoch. The
    controller stamps the new one: this run's ControlledShutdown was then refused as an
    earlier run's, and requests for the earlier run passed."""
    zk = FakeZk()
    registrar = BrokerRegistrar(zk, BrokerRegistration(broker_id=1, host="h", port=1))  # type: ignore[arg-type]
    first = await registrar.register()
    zk.lose_create_answer = True
    zk.registrar = registrar
    zk.expire()
    await _until(lambda: registrar.path in zk.znodes and registrar.epoch != first)
    assert registrar.epoch == zk.znodes[registrar.path][1].czxid
    # until that look, the registration counted as under way: a ControlledShutdown refused
    # for the old epoch meanwhile is retried, not taken for a later run's
    assert zk.looked == [False, True] and not registrar.creating


async def test_another_broker_with_our_id_at_our_own_address_is_reported() -> None:
    """From a review: a znode of another session at our very address was taken for a run
    of ours soon gone, and looked at forever without a word. After an expiry our own
    went with the session, so it is another broker (a copied config): reported once."""
    zk = FakeZk()
    registrar = BrokerRegistrar(zk, BrokerRegistration(broker_id=1, host="h", port=1))  # type: ignore[arg-type]
    first = await registrar.register()
    with structlog.testing.capture_logs() as logs:
        zk.expire()
        other = BrokerRegistration(broker_id=1, host="h", port=1).to_json(0)
        zk.znodes[registrar.path] = (other, SimpleNamespace(czxid=999, ephemeralOwner=77))
        await _until(lambda: any(e["event"] == "broker.id_taken" for e in logs))
        await asyncio.sleep(0.1)  # looked at again, said once
    taken = [e for e in logs if e["event"] == "broker.id_taken"]
    assert len(taken) == 1 and "another broker at h:1" in taken[0]["error"]
    assert registrar.epoch == first
    del zk.znodes[registrar.path]  # it stops: ours again
    await _until(lambda: registrar.path in zk.znodes)
    assert zk.znodes[registrar.path][1].ephemeralOwner == zk.session_id
    assert registrar.epoch == zk.znodes[registrar.path][1].czxid
