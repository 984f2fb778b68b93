"""StallGuard's own rules (broker/stall.py), without a socket: what trips it, what its
check's outcomes do, and that it arms again after each stall."""

from __future__ import annotations

import asyncio
import functools
import math
import time

from broker.stall import DISARMED, StallGuard


def _guard(  # type: ignore[no-untyped-def]
    confirm, hold_max_s: float = 2.0, threshold_s: float = 1.0
) -> StallGuard:
    # a threshold a loaded test machine does not reach by itself (a CI run tripped one of
    # 0.1 s, delayed 0.35 s): the tests trip it themselves, or pass a smaller one
    return StallGuard(confirm, threshold_s=threshold_s, hold_max_s=hold_max_s, tick_s=0.01)


def _stall_loop(seconds: float) -> None:
    """Block the event loop, on purpose: the stall under test."""
    time.sleep(seconds)


async def _known() -> str:
    return "known"


async def _alive_once(answer: asyncio.Event) -> str:
    await answer.wait()
    return "alive"


async def test_a_late_read_trips_it_and_the_release_comes_once_the_check_answers() -> None:
    answer = asyncio.Event()
    guard = _guard(functools.partial(_alive_once, answer))
    guard.start()
    loop = asyncio.get_running_loop()
    released: list[str] = []
    assert not guard.hold(loop.time(), lambda: released.append("early"))  # in time
    assert loop.time() <= guard.deadline
    assert guard.hold(guard.deadline + 0.01, lambda: released.append("a"))
    assert guard.holding and guard.deadline == -math.inf  # every read asks now
    assert guard.hold(loop.time(), lambda: released.append("b"))
    await asyncio.sleep(0.05)
    assert released == []
    answer.set()
    await asyncio.sleep(0.02)
    assert released == ["a", "b"] and not guard.holding
    assert guard.stalls == 1
    assert loop.time() < guard.deadline < math.inf  # armed again
    guard.stop()


async def test_the_late_tick_trips_it_when_nothing_is_read_first() -> None:
    calls: list[int] = []

    async def confirm() -> str:
        calls.append(1)
        return "alive"

    guard = _guard(confirm, threshold_s=0.1)
    guard.start()
    _stall_loop(0.3)  # the loop stalls; no read comes after it
    await asyncio.sleep(0.05)
    assert calls and guard.stalls == len(calls) and not guard.holding
    # and again: each stall is its own (a loaded machine may add one of its own)
    before = guard.stalls
    _stall_loop(0.3)
    await asyncio.sleep(0.05)
    assert guard.stalls > before and guard.stalls == len(calls)
    guard.stop()


async def test_a_loop_that_keeps_time_never_trips_it() -> None:
    guard = _guard(_known)
    guard.start()
    for _ in range(20):
        _stall_loop(0.05)  # busy, but well inside the threshold between ticks
        await asyncio.sleep(0.005)
    assert guard.stalls == 0
    guard.stop()


async def test_a_check_that_fails_or_hangs_still_releases() -> None:
    async def broken() -> str:
        raise RuntimeError("a bug")

    async def hangs() -> str:
        await asyncio.Event().wait()
        return "never"

    for confirm in (broken, hangs):
        guard = _guard(confirm, hold_max_s=0.1)
        guard.start()
        released: list[int] = []
        assert guard.hold(guard.deadline + 1, functools.partial(released.append, 1))
        await asyncio.sleep(0.3)
        assert released == [1] and not guard.holding
        guard.stop()


async def test_stop_releases_and_disarms() -> None:
    guard = _guard(lambda: asyncio.Event().wait())
    guard.start()
    released: list[int] = []
    assert guard.hold(guard.deadline + 1, lambda: released.append(1))
    guard.stop()
    assert released == [1] and not guard.holding and guard.deadline == math.inf
    assert not guard.hold(asyncio.get_running_loop().time() + 3600, lambda: None)
    await asyncio.sleep(0)


def test_a_listener_without_a_broker_guard_never_asks() -> None:
    assert DISARMED.deadline == math.inf


async def test_one_release_that_fails_leaves_no_other_connection_held() -> None:
    """From a review: a release callback that raised left the rest held for good."""
    answer = asyncio.Event()
    guard = _guard(functools.partial(_alive_once, answer))
    guard.start()
    released: list[str] = []

    def broken() -> None:
        raise RuntimeError("one connection's release fails")

    assert guard.hold(guard.deadline + 0.001, broken)
    assert guard.hold(asyncio.get_running_loop().time(), lambda: released.append("b"))
    answer.set()
    await asyncio.sleep(0.05)
    assert released == ["b"] and not guard.holding
    guard.stop()


async def test_the_check_is_asked_at_the_trip_not_when_its_task_first_runs() -> None:
    """From a review: the broker's check compares the sessions lost since it was asked;
    asked a few iterations late, a loss in between was reported as a live session."""
    asked: list[str] = []

    def confirm() -> asyncio.Future[str]:
        asked.append("at the trip")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        future.set_result("alive")
        return future

    guard = _guard(confirm)
    guard.start()
    assert guard.hold(guard.deadline + 1, lambda: None)
    assert asked == ["at the trip"]  # before the loop ran anything else
    await asyncio.sleep(0.02)
    guard.stop()
