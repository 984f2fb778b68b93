"""The arithmetic of ``headwater bench``, pure so it is tested on its own: latency
percentiles, pacing to a target rate, the live rate, how often a latency is sampled.

No I/O, no asyncio, no clock reads: every time is passed in (seconds, any monotonic
origin), so tests give exact numbers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MIN_SLEEP_S",
    "Latency",
    "Pacer",
    "RateMeter",
    "percentile",
    "sample_stride",
]

MIN_SLEEP_S = 0.002
"""The pacer sleeps only when it is at least this far ahead (Kafka's ThroughputThrottler
uses 2 ms too): shorter sleeps cost more than they smooth, and uvloop's timers have
millisecond resolution anyway."""

MAX_SAMPLE_STRIDE = 16
MIN_SAMPLES = 10_000


def sample_stride(num_records: int) -> int:
    """Measure the latency of every n-th record: every record in runs under 20,000, then
    fewer so at least 10,000 are sampled, but never fewer than one in 16.

    A latency needs a done-callback on the record's future, and asyncio schedules each
    one through the loop: one per record cost the producer about a quarter of its rate,
    one in 16 a few percent (both measured on the 2-core dev machine). Kafka's
    ProducerPerformance samples as well (at most 500,000 latencies)."""
    return max(1, min(MAX_SAMPLE_STRIDE, num_records // MIN_SAMPLES))


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ascending ``ordered``: the
    smallest sample with at least q% of the samples at or below it. Monotone in ``q``,
    so p50 <= p99 <= max always holds, and always one of the samples (never interpolated)."""
    if not ordered:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution in milliseconds."""

    samples: int
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples_ms: Iterable[float]) -> Latency | None:
        """The distribution of ``samples_ms`` (any order); None if there are none."""
        ordered = sorted(samples_ms)
        if not ordered:
            return None
        return cls(
            samples=len(ordered),
            avg_ms=math.fsum(ordered) / len(ordered),
            p50_ms=percentile(ordered, 50),
            p95_ms=percentile(ordered, 95),
            p99_ms=percentile(ordered, 99),
            p999_ms=percentile(ordered, 99.9),
            max_ms=ordered[-1],
        )


@dataclass(frozen=True, slots=True)
class Pacer:
    """Holds a sender to ``rate`` units per second from ``start`` (Kafka's
    ThroughputThrottler, minus its busy wait).

    Unit ``n`` (counting from 0) is due at ``start + n / rate``. :meth:`delay` says how
    long to sleep before sending it: nothing while the sender is behind or less than
    ``min_sleep_s`` ahead, so at high rates units go out in bursts of about
    ``rate * min_sleep_s`` and the sender sleeps between bursts, never spins. A sender
    that fell behind catches up at full speed (the schedule does not slip), as Kafka's.
    A rate of 0 or less is unlimited.
    """

    rate: float
    start: float
    min_sleep_s: float = MIN_SLEEP_S

    @property
    def limited(self) -> bool:
        return self.rate > 0

    def due(self, n: int) -> float:
        """When unit ``n`` is due (``start`` when unlimited)."""
        return self.start + n / self.rate if self.limited else self.start

    def delay(self, n: int, now: float) -> float:
        """Seconds to sleep at ``now`` before sending unit ``n``; 0.0 means send now."""
        if not self.limited:
            return 0.0
        ahead = self.due(n) - now
        return ahead if ahead >= self.min_sleep_s else 0.0


class RateMeter:
    """The current rate of a growing count: the change over the last ``window_s``
    seconds of readings (the first reading counts as the start)."""

    def __init__(self, start: float, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._readings: deque[tuple[float, int]] = deque([(start, 0)])

    def update(self, now: float, done: int) -> float:
        """Record ``done`` at ``now``; the rate per second over the window up to now."""
        readings = self._readings
        readings.append((now, done))
        while len(readings) > 2 and now - readings[1][0] >= self.window_s:
            readings.popleft()  # keep one reading at or beyond the window's start
        then, before = readings[0]
        return (done - before) / (now - then) if now > then else 0.0
