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

All three are dynamic broker configs: read on each new connection, so a change applies
to the next one (connections already open stay). With the defaults (no limit) a new
connection costs two dict updates.

Concurrency: event loop thread only.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["ConnectionQuotas", "parse_ip_overrides"]


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
        self, config: Callable[[str], Any], inter_broker_listener: str, listeners: int = 2
    ) -> None:
        self._config = config
        # protected only beside another listener (Kafka's too): with one, every client
        # comes in on it, and max.connections would bound nothing
        self._inter_broker = inter_broker_listener if listeners > 1 else None
        self._by_ip: Counter[str] = Counter()
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
        self._by_ip[ip] += 1
        self._clients += client
        return None

    def release(self, ip: str, listener: str) -> None:
        ip = _normal(ip)
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]
        self._clients -= listener != self._inter_broker

    def _ip_limit(self, ip: str) -> int:
        text = self._config("max.connections.per.ip.overrides")
        if text != self._overrides_text:  # parsed once per value (validated when set)
            self._overrides, self._overrides_text = parse_ip_overrides(text), text
        return self._overrides.get(ip, self._config("max.connections.per.ip"))


def _normal(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip  # a Unix socket or an odd transport: counted under what it says
