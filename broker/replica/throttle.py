"""Replication throttles (Kafka's KIP-73 ReplicationQuotaManager): a bound on the bytes per
second a broker spends copying throttled replicas, so that moving a partition
(``reassign-partitions --throttle``) or a replica catching up does not take the
bandwidth its clients and in-sync followers need.

Which replicas are throttled is a topic's business (``leader.replication.throttled.replicas``
and ``follower.replication.throttled.replicas``, ``partition:broker`` pairs or ``*``:
:meth:`LogConfig.leader_throttled`); how many bytes per second, each broker's
(``leader.replication.throttled.rate`` and ``follower.replication.throttled.rate``, dynamic
broker configs). As Kafka's:

- a leader counts the bytes it sends of throttled replicas; while over its rate, a fetch
  from an out-of-sync follower gets no records of them (the high watermark and log start
  still go, so nothing else waits);
- a follower counts the bytes it fetches of throttled replicas; while over its rate, it
  leaves them out of its fetches, unless it has caught up to its leader's high watermark
  (its own lag decides, as Kafka's: the ISR list it was last told may be old);
- an in-sync replica is never held back: a throttle slows a copy, never a commit.

The rate is measured as client quotas are (:class:`protocol.quotas.Rate`, Kafka's
``replication.quota.window.num`` 11 windows of ``replication.quota.window.size.seconds``
1 s). With no rate set (the default, unlimited) the fetch paths pay one config lookup.

Concurrency: event loop thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from protocol.quotas import Rate

__all__ = ["UNLIMITED", "ReplicationQuota"]

UNLIMITED = 2**63 - 1
"""Kafka's Long.MAX_VALUE: no throttle."""
_SAMPLES = 11
_WINDOW_MS = 1000


class ReplicationQuota:
    """One broker's throttle of one side (leader or follower)."""

    def __init__(
        self, bound: Callable[[], int], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bound = bound
        self._clock = clock
        self._rate = Rate(_SAMPLES, _WINDOW_MS)

    @property
    def active(self) -> bool:
        """Whether a rate is set (else nothing is counted or held back)."""
        return self._bound() < UNLIMITED

    def exceeded(self) -> bool:
        """Whether the throttled replicas are over the rate now: hold them back."""
        bound = self._bound()
        if bound >= UNLIMITED:
            return False
        return self._rate.per_second(self._now_ms()) > bound

    def record(self, nbytes: int) -> None:
        """Count ``nbytes`` of throttled replicas, sent or fetched."""
        if nbytes and self._bound() < UNLIMITED:
            self._rate.record(nbytes, self._now_ms())

    def per_second(self) -> float:
        """The measured rate (bytes per second), for metrics."""
        return self._rate.per_second(self._now_ms())

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
