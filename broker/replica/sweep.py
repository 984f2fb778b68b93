"""A round over many keys, taken a share at a time.

Fetch sessions let the leader and the follower look only at partitions an event marked;
what no event marks (a follower's caught-up time on an idle partition, a log start moved
by retention) is caught by a sweep. Looking at all of them at once stalled the event loop
for milliseconds (hundreds of partitions in one fetch), and every request behind it
waited: a 1,024-partition idle topic put 4 ms on a busy topic's acks=all p99. A
:class:`Sweep` hands each caller the share of the round that the time since its last
call is of ``period``: a busy fetch (every few hundred microseconds) takes one key now
and then, an idle one (every ``max_wait``) a handful, and every key still comes up about
once per ``period``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Generic, TypeVar

__all__ = ["Sweep"]

K = TypeVar("K")


class Sweep(Generic[K]):
    def __init__(self, period: float, now: float) -> None:
        self.period = period
        self._last = now
        self._credit = 0.0
        """Keys due and not yet taken (a fraction is carried to the next call)."""
        self._round: list[K] = []
        """The keys as they were when this round began: those added since come next round."""
        self._pos = 0

    def take(self, keys: Collection[K], now: float) -> list[K]:
        """The next keys of the round that are due by ``now`` (at most one round's worth,
        each once; a key removed since the round began may be among them: the caller
        skips it)."""
        round_, pos = self._round, self._pos
        # the round being walked may be longer than the keys now (most of a session's
        # partitions dropped): walked at the rate of the keys now, the rest of it took
        # minutes, and its idle followers fell out of the ISR meanwhile
        count = max(len(keys), len(round_))
        credit = self._credit + count * (now - self._last) / self.period
        self._last = now
        due = min(int(credit), count)
        self._credit = credit - due if due < count else 0.0  # a whole round: nothing owed
        taken: list[K] = []
        while len(taken) < due:
            if pos >= len(round_):
                seen = set(taken)
                round_, pos = [k for k in keys if k not in seen], 0
                self._round = round_
                if not round_:
                    break
            end = min(len(round_), pos + due - len(taken))
            taken += round_[pos:end]
            pos = end
        self._pos = pos
        return taken
