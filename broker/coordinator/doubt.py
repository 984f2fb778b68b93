"""The spans in which a broker cannot tell whether it still coordinates what it holds.

A coordinator answers from state it loaded as the leader of an internal partition. Cut
off from ZooKeeper (its session in doubt), or just back from a stall of its loop, it may
have lost that leadership without hearing of it yet, and its answers may be stale: a
heartbeat that keeps a member on an assignment another coordinator has given away, the
offsets before the new coordinator's commits, a transaction "already committed". So
both coordinators refuse (COORDINATOR_NOT_AVAILABLE, retriable) while in doubt.

A refused member cannot heartbeat and a refused producer cannot end its transaction,
so the coordinator's own timers must not count the doubt against them either: group
timers run on :meth:`Doubt.clock` (time with the doubt left out), and a transaction's
timeout is lengthened by :meth:`Doubt.within_ms`. Once it knows again, a coordinator
that is still the coordinator carries on as if the doubt had not happened; one that is
not has been unloaded, and its timers are gone with its state.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import structlog

__all__ = ["Doubt"]

_KEEP_MS = 24 * 3_600_000
"""Ended spans are kept this long (above transaction.max.timeout.ms's 15 minutes)."""


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Doubt:
    """Whether this broker's view of who coordinates what is current, and since when not.

    ``known()`` asks ``state_known`` and notes each change: a doubt starts at the last
    moment it was known (a stall, seen only once the loop runs again, is counted from
    before it), and ends when it is known again. It is asked on every coordinator
    request and by the group coordinator's 100-ms tick, so a doubt is seen within one
    tick even on an idle broker."""

    def __init__(
        self,
        state_known: Callable[[], bool],
        clock: Callable[[], int] | None = None,
        *,
        broker_id: int = -1,
    ) -> None:
        self._state_known = state_known
        self._given_clock = clock
        self._since: int | None = None
        self._last_known = self._clock()
        self._spans: collections.deque[tuple[int, int]] = collections.deque()
        self._ended_ms = 0
        self._handed_out = -(2**63)
        self.doubts = 0
        """Spans started (the metric ``headwater_coordinator_doubts_total``)."""
        self.refusals = 0
        """Requests refused while in doubt (``headwater_coordinator_doubt_refusals_total``)."""
        self._refusals_before = 0  # at the current doubt's start: its own are logged
        self._log = structlog.get_logger("headwater.coordinator").bind(broker_id=broker_id)

    def _clock(self) -> int:
        # the module's clock looked up at each call, so a test can set it
        return self._given_clock() if self._given_clock is not None else _monotonic_ms()

    def known(self) -> bool:
        now = self._clock()
        if self._state_known():
            if self._since is not None:
                self._end(self._since, now)
            self._last_known = now
            return True
        if self._since is None:
            self._since = self._last_known
            self._refusals_before = self.refusals
            self.doubts += 1
            self._log.info("coordinator.in_doubt", since_ms_ago=now - self._since)
        return False

    def refused(self) -> None:
        """Count a request refused for the doubt."""
        self.refusals += 1

    def now(self) -> int:
        """This clock's milliseconds, doubt and all (to mark when something began)."""
        return self._clock()

    def clock(self) -> int:
        """Monotonic milliseconds that stand still while in doubt: a timer on it (a
        member's session, a rebalance's deadline) does not run out for want of requests
        the coordinator itself refused. Asking it asks :meth:`known`, so a doubt is never
        counted from before a time it handed out: it never goes back."""
        self.known()
        now = self._clock()
        held = self._ended_ms + (now - self._since if self._since is not None else 0)
        self._handed_out = max(self._handed_out, now - held)
        return self._handed_out

    def within_ms(self, window_ms: int) -> int:
        """How much of the last ``window_ms`` milliseconds was in doubt (an ongoing
        doubt counted to now)."""
        now = self._clock()
        start = now - max(window_ms, 0)
        held = 0
        for begun, ended in self._spans:
            if ended > start:
                held += ended - max(begun, start)
        if self._since is not None:
            held += now - max(self._since, start)
        return held

    def _end(self, since: int, now: int) -> None:
        self._since = None
        self._spans.append((since, now))
        self._ended_ms += now - since
        while self._spans and self._spans[0][1] < now - _KEEP_MS:
            self._spans.popleft()
        self._log.info(
            "coordinator.doubt_settled",
            held_ms=now - since,
            refusals=self.refusals - self._refusals_before,
        )
