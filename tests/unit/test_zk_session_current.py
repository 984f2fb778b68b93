"""``ZkBridge.session_current`` (review 109): what a broker asks before it answers from
its view of who leads and coordinates what. Not kazoo's ``connected``: that is set on a
new session before the loop has acted on the old one's loss, and stays set while
requests go out unanswered. Driven through kazoo's own state changes, no server."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog.testing
from kazoo.exceptions import ConnectionLoss
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.states import KeeperState

from broker.zk import SessionState, ZkBridge


def _bridge(seen: list[str]) -> ZkBridge:
    bridge = ZkBridge("127.0.0.1:1", session_timeout_ms=2000)
    bridge.on_state_change(seen.append)
    return bridge


async def test_a_new_session_is_not_current_until_the_old_ones_loss_is_acted_on() -> None:
    seen: list[str] = []
    bridge = _bridge(seen)
    client = bridge._client
    client._session_callback(KeeperState.CONNECTED)
    bridge._heard_at = time.monotonic()
    await asyncio.sleep(0)
    assert bridge.session_current
    # kazoo's thread: the session expired, and a new one is made, before the loop runs
    client._session_callback(KeeperState.CONNECTING)
    client._session_callback(KeeperState.EXPIRED_SESSION)
    client._session_callback(KeeperState.CONNECTED)
    bridge._heard_at = time.monotonic()
    assert client.connected  # kazoo's own flag already says so
    assert not bridge.session_current
    await asyncio.sleep(0)  # the loop runs the loss's callbacks
    assert seen[-2:] == [SessionState.LOST, SessionState.CONNECTED]
    assert bridge.session_current
    client._live.clear()


async def test_a_session_zookeeper_has_not_answered_on_lately_is_not_current() -> None:
    bridge = _bridge([])
    client = bridge._client
    client._session_callback(KeeperState.CONNECTED)
    bridge._heard_at = time.monotonic() - 1.0  # within 0.9 of the 2 s session
    assert bridge.session_current
    bridge._heard_at = time.monotonic() - 1.9  # kazoo may still say connected
    assert client.connected and not bridge.session_current
    bridge.negotiated_session_timeout_s = 6.0  # what ZooKeeper granted counts
    assert bridge.session_current
    client._live.clear()


async def test_a_bridge_never_connected_is_not_current() -> None:
    assert not ZkBridge("127.0.0.1:1").session_current


async def test_zookeeper_is_tried_again_within_a_second_however_long_it_was_away() -> None:
    """kazoo's reconnect backoff doubled up to an hour: cut off for a minute, a broker
    waited up to another minute after ZooKeeper came back. Driven here as kazoo's
    connection thread drives it, with the sleeps counted instead of slept."""
    bridge = ZkBridge("127.0.0.1:1")
    retry = bridge._client._connection.retry_sleeper.copy()
    waits: list[float] = []
    slept = [0.0]

    def sleep(seconds: float) -> None:
        slept[0] += seconds

    retry.sleep_func = sleep
    retry.interrupt = lambda: False  # (kazoo's: the client stopped; never started here)
    attempts = [0]

    def connect() -> None:
        if attempts[0]:
            waits.append(slept[0])
            slept[0] = 0.0
        attempts[0] += 1
        if attempts[0] <= 40:  # unreachable for 40 attempts (minutes, at kazoo's pace)
            raise ConnectionLoss("unreachable")

    retry(connect)
    assert len(waits) == 40
    assert waits[0] < 0.2  # the first again at once
    assert max(waits) <= 1.0 * 1.4 + 0.1  # the cap, its jitter, the interrupt's slices


async def test_a_kazoo_without_the_steps_it_times_falls_back_on_connected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From a review: the steps wrapped are kazoo's private ones; a kazoo without them
    left the session never current, and every coordinator request was refused for good,
    with no word of why. Now a warning, and kazoo's ``connected`` (less exact)."""
    monkeypatch.delattr(ConnectionHandler, "_read_socket")
    with structlog.testing.capture_logs() as logs:
        bridge = _bridge([])
    assert [e["event"] for e in logs] == ["zk.session_watch_unavailable"]
    assert not bridge.session_current
    bridge._client._session_callback(KeeperState.CONNECTED)
    assert bridge.session_current  # no answer timed, yet current: kazoo says connected
    bridge._client._live.clear()
    assert not bridge.session_current
