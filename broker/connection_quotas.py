"""Connection limits (Kafka's ConnectionQuotas): how many connections one address may
hold, and how many clients the broker takes in all, so one misbehaving client (a
connection leak, a reconnect storm) cannot use up the broker's file descriptors and
memory.

- ``max.connections.per.ip``: connections from one address, on every listener; the next
  one is closed at once (Kafka drops it the same way). ``max.connections.per.ip.overrides``
  gives some addresses their own (``127.0.0.1:200,10.0.0.7:0``; 0 shuts one out).
- ``max.connections``: connections to the broker in all. One past it is closed at once,
  except on the inter-broker listener when the broker has others: replication and the
  controller always get in (as Kafka's; Kafka also closes another listener's least
  recently used connection then, this broker does not). With one listener, it bounds
  every connection, the other brokers' too (Kafka's as well).

And the rates new connections come in at (KIP-612), measured as Kafka's quotas are
(``quota.window.num`` windows of ``quota.window.size.seconds``):

- ``max.connection.creation.rate``: new client connections a second, broker-wide (the
  inter-broker listener beside others is not counted, as Kafka's). Past it, Kafka's
  acceptor stops accepting for the throttle time, so the connection and every one after
  it on that listener wait their turn. The server does the same with the connections
  asyncio has accepted (:meth:`ConnectionQuotas.take`): each waits, unread, in its
  listener's queue. The client sees what Kafka's would: connected, its first request
  answered late.
- an address's ``connection_creation_rate`` quota (``ip`` entities, set with
  AlterClientQuotas): a connection past it is not served, and is closed after its
  throttle time (Kafka's ConnectionThrottledException); it is not counted on any rate.

And each listener's own, Kafka's listener-prefixed configs (KIP-402, KIP-612):

- ``listener.name.<listener>.max.connections``: connections on that listener (the
  inter-broker one's too: a listener's own limit is for it whatever it carries). One past
  it is closed at once, as one past ``max.connections``.
- ``listener.name.<listener>.max.connection.creation.rate``: new connections a second on
  that listener (the inter-broker one's too); the acceptor waits out the longer of its
  throttle and the broker's.

Not set, a client listener's own limit is the broker-wide one's value (Kafka's prefix
override), applied to that listener's own count; the inter-broker listener's is none
(beside others: the broker-wide limits never touch it here, see
``BrokerConfig._brokers_own``).

All six configs are dynamic broker configs: read on each new connection, so a change
applies to the next one (connections already open stay). With the defaults (no limit) a
new connection costs three dict updates and a sample on its listener's and the broker's
rates.

Concurrency: event loop thread only.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from protocol.quotas import Rate, throttle_ms

__all__ = ["NO_RATE", "ConnectionQuotas", "listener_setting", "parse_ip_overrides"]

NO_RATE = 2**31 - 1
"""``max.connection.creation.rate``'s default, Kafka's: no bound."""
_SWEEP_MS = 60_000


def listener_setting(listener: str, base: str) -> str:
    """The name of ``listener``'s own ``base`` setting (Kafka's listener prefix, lower
    case: ``listener.name.external.max.connections``)."""
    return f"listener.name.{listener.lower()}.{base}"


def parse_ip_overrides(text: str) -> dict[str, int]:
    """``max.connections.per.ip.overrides``: ``address:count`` pairs, comma separated (an
    IPv6 address in brackets, ``[::1]:5``). Raises ValueError saying what is wrong."""
    limits: dict[str, int] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        address, sep, count = item.rpartition(":")
        address = address.strip().removeprefix("[").removesuffix("]")
        try:
            if not sep:
                raise ValueError
            limit = int(count)
            normal = str(ipaddress.ip_address(address))
        except ValueError:
            raise ValueError(
                f"{item!r} is not IP:COUNT (e.g. 10.0.0.7:50; host names are not resolved, "
                "give the address)"
            ) from None
        if limit < 0:
            raise ValueError(f"{item!r}: the count must be 0 or more")
        limits[normal] = limit
    return limits


class ConnectionQuotas:
    """The connections each address holds now, against the limits in ``config``."""

    def __init__(
        self,
        config: Callable[[str], Any],
        inter_broker_listener: str,
        listeners: int = 2,
        *,
        ip_rate: Callable[[str], float | None] | None = None,
    ) -> None:
        """``ip_rate``: an address's connection_creation_rate quota (asked with the address
        as the peer's; its own spelling is its business), None for none."""
        self._config = config
        self._ip_rate = ip_rate
        self._samples = int(config("quota.window.num"))
        self._window_ms = int(config("quota.window.size.seconds")) * 1000
        self._rate = Rate(self._samples, self._window_ms)  # client connections, broker-wide
        self._ip_rates: dict[str, Rate] = {}
        self._swept_ms = 0
        # protected only beside another listener (Kafka's too): with one, every client
        # comes in on it, and max.connections would bound nothing
        self._inter_broker = inter_broker_listener if listeners > 1 else None
        self._by_ip: Counter[str] = Counter()
        self._by_listener: Counter[str] = Counter()
        self._listener_rates: dict[str, Rate] = {}
        self._clients = 0  # connections not on the inter-broker listener
        self._overrides_text = ""
        self._overrides: dict[str, int] = {}

    def admit(self, ip: str, listener: str) -> str | None:
        """Count a new connection from ``ip`` on ``listener``, or say why it is refused
        (and count nothing). Each admitted one is :meth:`release`\\ d once."""
        ip = _normal(ip)
        limit = self._ip_limit(ip)
        if self._by_ip[ip] >= limit:
            return f"{ip} has {self._by_ip[ip]} connections, its limit ({limit})"
        client = listener != self._inter_broker
        if client and self._clients >= self._config("max.connections"):
            limit = self._config("max.connections")
            return (
                f"the broker has {self._clients} client connections, its max.connections ({limit})"
            )
        own = listener_setting(listener, "max.connections")
        if self._by_listener[listener] >= (limit := self._config(own)):
            held = self._by_listener[listener]
            return f"listener {listener} has {held} connections, its {own} ({limit})"
        self._by_ip[ip] += 1
        self._by_listener[listener] += 1
        self._clients += client
        return None

    def take(self, listener: str, now_ms: int | None = None) -> int:
        """The listener's acceptor takes a new connection (Kafka's waitForConnectionSlot):
        it is counted on the broker's connection rate, and the milliseconds the acceptor
        then waits are returned (0: within ``max.connection.creation.rate``). The caller
        takes the listener's next connection only once they have passed. The listener's
        own rate counts it too (the inter-broker listener's as well); the longer wait of
        the two is the answer."""
        now = _now_ms() if now_ms is None else now_ms
        own = self._listener_rate(listener)
        own.record(1, now)
        wait = self._throttle(own, listener_setting(listener, "max.connection.creation.rate"), now)
        if listener == self._inter_broker:
            return wait
        self._rate.record(1, now)
        return max(wait, self._throttle(self._rate, "max.connection.creation.rate", now))

    def _throttle(self, rate: Rate, setting: str, now: int) -> int:
        limit = self._config(setting)
        if limit >= NO_RATE:
            return 0
        return throttle_ms(rate.per_second(now), limit, rate.elapsed_ms(now), self._window_ms)

    def _listener_rate(self, listener: str) -> Rate:
        found = self._listener_rates.get(listener)
        if found is None:
            found = self._listener_rates[listener] = Rate(self._samples, self._window_ms)
        return found

    def held(self, ip: str, listener: str, now_ms: int | None = None) -> int:
        """A connection taken from ``ip`` on ``listener``, against the address's
        connection_creation_rate: 0, or the milliseconds it is held before it is closed
        (then it is counted on no rate, as Kafka un-records a throttled one)."""
        bound = None if self._ip_rate is None else self._ip_rate(ip)
        if bound is None or bound >= NO_RATE:
            return 0
        ip = _normal(ip)
        now = _now_ms() if now_ms is None else now_ms
        if now - self._swept_ms >= _SWEEP_MS:  # idle addresses' rates go
            self._swept_ms = now
            self._ip_rates = {k: r for k, r in self._ip_rates.items() if not r.idle(now)}
        rate = self._ip_rates.get(ip)
        if rate is None:
            rate = self._ip_rates[ip] = Rate(self._samples, self._window_ms)
        rate.record(1, now)
        hold = throttle_ms(rate.per_second(now), bound, rate.elapsed_ms(now), self._window_ms)
        if hold:  # not made after all: off every rate it was counted on (as Kafka's)
            rate.record(-1, now)
            self._listener_rate(listener).record(-1, now)
            if listener != self._inter_broker:
                self._rate.record(-1, now)
        return hold

    def release(self, ip: str, listener: str) -> None:
        ip = _normal(ip)
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]
        self._by_listener[listener] -= 1
        self._clients -= listener != self._inter_broker

    def _ip_limit(self, ip: str) -> int:
        text = self._config("max.connections.per.ip.overrides")
        if text != self._overrides_text:  # parsed once per value (validated when set)
            self._overrides, self._overrides_text = parse_ip_overrides(text), text
        return self._overrides.get(ip, self._config("max.connections.per.ip"))


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def _normal(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip  # a Unix socket or an odd transport: counted under what it says
