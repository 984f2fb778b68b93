"""Requests read after the broker's loop stalled wait until its ZooKeeper session is known.

A broker paused (SIGSTOP, a VM frozen, swapping) past its ZooKeeper session resumes with
the requests sent to it meanwhile waiting in its sockets. Its loop reads them at once,
before kazoo's thread has heard that the session is gone, and would serve them from the
state it had: a leader's acks=1 write appended and acknowledged, then cut when the broker
follows the leader elected meanwhile (an acknowledged record lost); a transaction's batch
refused from a coordinator's view that moved elsewhere. Kafka's ZooKeeper-mode brokers
have the same window; here it is closed.

A stall is the loop coming back late. A tick runs every ``tick_s``; a read more than
``threshold_s`` after the last tick trips the guard. The first read after a pause trips
it, not the late tick, because an event loop runs an iteration's I/O callbacks before its
timers. Tripped, every listener holds what it reads (reading paused, as a throttle
holds it) until ``confirm`` returns. ``confirm`` is a ZooKeeper round trip on the
session. It succeeds only on a live session, or on a new one once the old one's loss has
been acted on: kazoo reports the loss before it answers anything on a new session, and
both reach the loop in that order.

The hold is bounded by ``hold_max_s``. With ZooKeeper out of reach nothing can be learnt,
and the broker then serves from the state it has, as it does whenever ZooKeeper is out of
reach.
A stall below the threshold cannot have cost the session: kazoo is heard from at least
every third of the session, and the session lasts a whole one from then. The threshold
is a third of the session timeout ZooKeeper granted (the broker updates it with each
session: ZooKeeper may grant less than was asked), so a false alarm costs one round trip,
never data.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import structlog

_log = structlog.get_logger("broker.stall")

Release = Callable[[], None]


class StallGuard:
    """See the module doc. :attr:`deadline` is read on every read: a read at a loop time
    past it asks :meth:`hold`. Before :meth:`start` and after :meth:`stop`, no read does."""

    def __init__(
        self,
        confirm: Callable[[], Awaitable[str]],
        *,
        threshold_s: float,
        hold_max_s: float,
        tick_s: float | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._confirm = confirm
        self.threshold_s = threshold_s
        self.hold_max_s = hold_max_s
        self._tick_s = tick_s if tick_s is not None else min(threshold_s / 4, 0.25)
        self._log = log or _log
        self.deadline = math.inf
        self._ticked = 0.0
        self._ticker: asyncio.TimerHandle | None = None
        self._confirming: asyncio.Task[None] | None = None
        self._check: asyncio.Future[str] | None = None  # ... awaiting this
        self._waiting: list[Release] = []
        self.stalls = 0  # stalls seen (a metric)

    @property
    def holding(self) -> bool:
        return self._confirming is not None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ticked = loop.time()
        self.deadline = self._ticked + self.threshold_s
        self._ticker = loop.call_later(self._tick_s, self._tick)

    def stop(self) -> None:
        """Let everything held go, and hold nothing more. A broker stopping calls it once
        its listeners are closed: what they held is never served from a state in doubt."""
        self.deadline = math.inf
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._confirming is not None:
            self._confirming.cancel()
            self._confirming = None
        if self._check is not None:
            self._check.cancel()
            self._check = None
        self._release()

    def hold(self, now: float, release: Release) -> bool:
        """A read at loop time ``now`` past :attr:`deadline`: True if the reader must hold
        what it read (and read no more) until ``release()`` is called."""
        if self._confirming is None:
            if now <= self.deadline:
                return False
            self._trip(now)
        self._waiting.append(release)
        return True

    def _tick(self) -> None:
        now = self._loop.time()
        if self._confirming is None:
            if now > self.deadline:
                self._trip(now)  # nothing was read first: later reads are held all the same
                return
            self._ticked = now
            self.deadline = now + self.threshold_s
        self._ticker = self._loop.call_later(self._tick_s, self._tick)

    def _trip(self, now: float) -> None:
        self.stalls += 1
        self.deadline = -math.inf  # every read asks, until the session is known
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._log.warning(
            "broker.stalled",
            stalled_s=round(now - self._ticked, 3),
            hint="this broker's loop did not run for that long (paused, frozen or "
            "swapping); requests wait until its ZooKeeper session is known",
        )
        # asked now, not in the task: what it compares against is as of the trip
        self._check = asyncio.ensure_future(self._confirm())
        self._confirming = self._loop.create_task(self._settle(now, self._check))

    async def _settle(self, tripped: float, confirming: Awaitable[str]) -> None:
        try:
            outcome = await asyncio.wait_for(confirming, self.hold_max_s)
        except TimeoutError:
            outcome = "ZooKeeper did not answer: serving from the state held"
        except Exception as exc:  # a bug in confirm must not keep every request held
            outcome = f"the check failed ({exc!r}): serving from the state held"
        now = self._loop.time()
        self._log.info(
            "broker.stall_settled",
            held_ms=round((now - tripped) * 1000, 1),
            connections=len(self._waiting),
            outcome=outcome,
        )
        self._confirming = self._check = None
        self._ticked = now
        self.deadline = now + self.threshold_s
        self._ticker = self._loop.call_later(self._tick_s, self._tick)
        self._release()

    def _release(self) -> None:
        waiting, self._waiting = self._waiting, []
        for release in waiting:
            try:
                release()
            except Exception:  # one connection's failure must not leave the others held
                self._log.exception("broker.stall_release_failed")


DISARMED = StallGuard(lambda: asyncio.sleep(0, "unused"), threshold_s=math.inf, hold_max_s=0)
"""A listener's guard until the broker arms its own: no read ever asks it."""
