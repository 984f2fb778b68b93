"""Client quotas as Kafka defines them: which quota applies to a (user, client-id), how a
byte rate is measured over sampled windows, and how long a client over it is throttled.
Pure: the broker's quota manager keeps the configs and the rates and asks this.

Kafka's precedence (ClientQuotaManager, highest first), for a user U and client id C;
the first entity with the quota configured applies, and every client that maps to that
entity shares it:

1. user U, client C            5. default user, default client
2. user U, default client      6. default user
3. user U                      7. client C
4. default user, client C      8. default client
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CLIENT",
    "DEFAULT",
    "IP",
    "IP_QUOTA_KEYS",
    "QUOTA_KEYS",
    "USER",
    "Entity",
    "Rate",
    "TokenBucket",
    "resolve",
    "throttle_ms",
]

USER = "user"
CLIENT = "client-id"
IP = "ip"
"""An address's entity (KIP-612): its own, never combined with a user or a client id."""
DEFAULT = None
"""An entity part's name for "the default" (``<default>`` in ZooKeeper, null on the wire)."""
QUOTA_KEYS = (
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
)
"""The quotas enforced here (Kafka's names): bytes per second produced and fetched, the
share of the broker's time its requests take (KIP-124: 100 is one thread's whole time),
and partitions created or deleted per second (KIP-599)."""
IP_QUOTA_KEYS = ("connection_creation_rate",)
"""The quotas an address (an ``ip`` entity) may have: new connections a second (KIP-612)."""

Entity = tuple[tuple[str, str | None], ...]
"""An entity as Kafka's ClientQuotaEntity: ((type, name or None for the default), ...),
user first: ``(("user", "alice"),)``, ``(("user", None), ("client-id", "app"))``."""


def resolve(
    quotas: dict[Entity, dict[str, float]], key: str, user: str, client_id: str
) -> tuple[Entity, float] | None:
    """The entity whose ``key`` quota applies to (user, client id), and its bound; None if
    no quota applies. ``user`` is the principal's name (``ANONYMOUS`` without a login, as
    in Kafka, so default-user quotas apply to it too)."""
    candidates: list[Entity] = [
        ((USER, user), (CLIENT, client_id)),
        ((USER, user), (CLIENT, DEFAULT)),
        ((USER, user),),
        ((USER, DEFAULT), (CLIENT, client_id)),
        ((USER, DEFAULT), (CLIENT, DEFAULT)),
        ((USER, DEFAULT),),
        ((CLIENT, client_id),),
        ((CLIENT, DEFAULT),),
    ]
    for entity in candidates:
        bound = quotas.get(entity, {}).get(key)
        if bound is not None:
            return entity, bound
    return None


@dataclass(slots=True)
class Rate:
    """Bytes per second over the last ``samples`` windows of ``window_ms`` (Kafka's
    sampled Rate: the sum of the live samples over the time they span, at least
    ``samples - 1`` whole windows once that much time has passed since the first)."""

    samples: int = 11
    window_ms: int = 1000
    _starts: list[int] = field(default_factory=list)
    _totals: list[float] = field(default_factory=list)

    def record(self, amount: float, now_ms: int) -> None:
        if not self._starts or now_ms - self._starts[-1] >= self.window_ms:
            self._starts.append(now_ms)
            self._totals.append(0.0)
        self._totals[-1] += amount
        self._expire(now_ms)

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.samples * self.window_ms
        while self._starts and self._starts[0] <= horizon:
            self._starts.pop(0)
            self._totals.pop(0)

    def per_second(self, now_ms: int) -> float:
        self._expire(now_ms)
        if not self._starts:
            return 0.0
        return sum(self._totals) * 1000 / self.elapsed_ms(now_ms)

    def idle(self, now_ms: int) -> bool:
        """No sample left: nothing was recorded for the whole measured time."""
        self._expire(now_ms)
        return not self._starts

    def elapsed_ms(self, now_ms: int) -> float:
        """The time the rate is measured over (Kafka's Rate.windowSize): from the oldest
        sample's start, padded to ``samples - 1`` whole windows as if the missing ones
        were there with nothing in them, so a first burst is not an enormous rate."""
        elapsed = now_ms - self._starts[0] if self._starts else 0
        full = elapsed // self.window_ms
        if full < self.samples - 1:
            elapsed += (self.samples - 1 - full) * self.window_ms
        return elapsed


def throttle_ms(rate: float, bound: float, window_ms: float, max_ms: int) -> int:
    """How long a client measured at ``rate`` against ``bound`` waits so that its rate
    over ``window_ms`` comes back to the bound (Kafka's
    ``(observed - bound) / bound * windowSize``), at most ``max_ms``."""
    if bound <= 0:
        return max_ms
    if rate <= bound:
        return 0
    return min(int((rate - bound) / bound * window_ms), max_ms)


@dataclass(slots=True)
class TokenBucket:
    """Kafka's TokenBucket for the controller mutation quota (KIP-599): ``rate`` tokens a
    second, at most ``burst`` saved up. A request is let in while the bucket is not in
    debt, and takes what it needs even into debt (a 1,000-partition topic is not refused
    for ever by a rate of 10); the next ones wait until the debt is paid back."""

    rate: float
    burst: float
    tokens: float | None = None  # None: full (set on first use)
    last_ms: int = 0

    def take(self, amount: int, now_ms: int) -> int:
        """Take ``amount`` tokens and return 0, or, if the bucket is in debt, take none
        and return the milliseconds until it is not."""
        tokens = self._refill(now_ms)
        if tokens < 0:
            return int(-tokens / self.rate * 1000) + 1 if self.rate > 0 else 2**31 - 1
        self.tokens = tokens - amount
        return 0

    def record(self, amount: int, now_ms: int) -> int:
        """Take ``amount`` tokens whatever the balance (Kafka's permissive mode, for
        clients too old to be told THROTTLING_QUOTA_EXCEEDED); the milliseconds until the
        bucket is out of debt again, which the answer's throttle says (0: not in debt)."""
        tokens = self._refill(now_ms) - amount
        self.tokens = tokens
        if tokens >= 0:
            return 0
        return int(-tokens / self.rate * 1000) + 1 if self.rate > 0 else 2**31 - 1

    def give_back(self, amount: int) -> None:
        """A request that took ``amount`` did not do what it took them for (refused)."""
        if self.tokens is not None:
            self.tokens = min(self.burst, self.tokens + amount)

    def balance(self, now_ms: int) -> float:
        """The tokens it holds now (negative: its debt)."""
        return self._refill(now_ms)

    def full(self, now_ms: int) -> bool:
        """Whether it holds its whole burst (then it is as good as a new one)."""
        return self._refill(now_ms) >= self.burst

    def _refill(self, now_ms: int) -> float:
        if self.tokens is None:
            self.tokens = self.burst
        else:
            gained = self.rate * max(now_ms - self.last_ms, 0) / 1000
            self.tokens = min(self.burst, self.tokens + gained)
        self.last_ms = now_ms
        return self.tokens
