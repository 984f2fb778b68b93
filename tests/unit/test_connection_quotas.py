"""Connection limits without sockets: what an address may hold, what the broker takes in
all, the inter-broker listener's exemption, and the overrides' form; and the connection
rates (KIP-612) on a clock the tests move: when a connection is read, and which are held
and closed."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from broker.config import ConfigError, base_of, load_config
from broker.connection_quotas import NO_RATE, ConnectionQuotas, parse_ip_overrides


def _quotas(
    ip_rates: dict[str | None, float] | None = None, **settings: Any
) -> tuple[ConnectionQuotas, dict[str, Any]]:
    config: dict[str, Any] = {
        "max.connections": 2**31 - 1,
        "max.connections.per.ip": 2**31 - 1,
        "max.connections.per.ip.overrides": "",
        "max.connection.creation.rate": NO_RATE,
        "quota.window.num": 11,
        "quota.window.size.seconds": 1,
        **{k.replace("_", "."): v for k, v in settings.items()},
    }

    def ip_rate(ip: str) -> float | None:
        rates = ip_rates or {}
        return rates.get(ip, rates.get(None))

    def lookup(name: str) -> Any:
        """As BrokerConfig: a listener's own limit not set is the broker-wide one's,
        but none for the inter-broker listener (INTERNAL)."""
        if name.startswith("listener.name.") and name not in config:
            if name.startswith("listener.name.internal."):
                return 2**31 - 1
            return config[base_of(name) or name]
        return config[name]

    return ConnectionQuotas(lookup, "INTERNAL", ip_rate=ip_rate), config


def test_an_address_holds_at_most_its_limit_and_a_release_frees_a_slot() -> None:
    quotas, config = _quotas(max_connections_per_ip=2)
    assert quotas.admit("10.0.0.1", "EXTERNAL") is None
    assert quotas.admit("10.0.0.1", "INTERNAL") is None  # every listener counts
    refused = quotas.admit("10.0.0.1", "EXTERNAL")
    assert refused == "10.0.0.1 has 2 connections, its limit (2)"
    assert quotas.admit("10.0.0.2", "EXTERNAL") is None  # another address: its own count
    quotas.release("10.0.0.1", "EXTERNAL")
    assert quotas.admit("10.0.0.1", "EXTERNAL") is None
    # an override: its own limit (0 shuts it out), the others keep the default; read live
    config["max.connections.per.ip.overrides"] = "10.0.0.1:5, [::1]:0"
    assert quotas.admit("10.0.0.1", "EXTERNAL") is None
    assert quotas.admit("::1", "EXTERNAL") == "::1 has 0 connections, its limit (0)"
    assert quotas.admit("0:0:0:0:0:0:0:1", "EXTERNAL") is not None  # the same address


def test_the_broker_takes_so_many_clients_but_always_its_peers() -> None:
    quotas, config = _quotas(max_connections=2)
    assert quotas.admit("10.0.0.1", "EXTERNAL") is None
    assert quotas.admit("10.0.0.2", "EXTERNAL") is None
    assert quotas.admit("10.0.0.3", "EXTERNAL") == (
        "the broker has 2 client connections, its max.connections (2)"
    )
    assert quotas.admit("10.0.0.4", "INTERNAL") is None  # replication gets in
    quotas.release("10.0.0.4", "INTERNAL")
    assert quotas.admit("10.0.0.3", "EXTERNAL") is not None  # a peer's leaving frees none
    quotas.release("10.0.0.1", "EXTERNAL")
    assert quotas.admit("10.0.0.3", "EXTERNAL") is None
    config["max.connections"] = 10
    assert quotas.admit("10.0.0.5", "EXTERNAL") is None


def test_overrides_are_ip_count_pairs() -> None:
    assert parse_ip_overrides("") == {}
    assert parse_ip_overrides("10.0.0.7:50, [::1]:3") == {"10.0.0.7": 50, "::1": 3}
    for bad in ("10.0.0.7", "broker-1.example.com:5", "10.0.0.7:x", "10.0.0.7:-1"):
        with pytest.raises(ValueError, match=r"10\.0\.0\.7|broker-1"):
            parse_ip_overrides(bad)
    with pytest.raises(ConfigError, match=r"host names are not resolved"):
        load_config(env={}, overrides=["broker.id=1", "max.connections.per.ip.overrides=h:1"])


def test_one_listener_bounds_every_connection() -> None:
    """Found in review: with one listener (the default) it is the inter-broker one, and
    exempting it let max.connections bound nothing. Kafka protects it only beside others."""
    config = load_config(env={}, overrides=["broker.id=1", "max.connections=2"])
    quotas = ConnectionQuotas(
        config.__getitem__, config.inter_broker_listener, len(config["listeners"])
    )
    listener = config.inter_broker_listener
    assert quotas.admit("10.0.0.1", listener) is None
    assert quotas.admit("10.0.0.2", listener) is None
    assert quotas.admit("10.0.0.3", listener) is not None


def _accept_in_turn(quotas: ConnectionQuotas, n: int, listener: str, t: int) -> list[int]:
    """When each of ``n`` connections arriving at ``t`` is taken, as the server's
    acceptor takes them: one at a time, the next once the wait of the one before is over."""
    taken = []
    for _ in range(n):
        t += quotas.take(listener, t)
        taken.append(t)
    return taken


def test_past_the_broker_connection_rate_each_connection_waits_its_turn() -> None:
    """max.connection.creation.rate=2 over 11 one-second windows: the first 20 in a burst
    are taken at once (Kafka's rate counts a new one over at least 10 windows), then the
    acceptor waits after each, at most a window: never more than the rate over the time
    since the first, plus the 11-second window's worth."""
    quotas, config = _quotas(max_connection_creation_rate=2)
    t = 1_000_000
    taken = [at - t for at in _accept_in_turn(quotas, 80, "EXTERNAL", t)]
    assert taken[:21] == [0] * 20 + [500]  # the 21st waits (21/10 s - 2) / 2 * 10 s
    assert all(0 <= b - a <= 1000 for a, b in itertools.pairwise(taken))
    for i, at in enumerate(taken):  # 2/s, plus the window's 22
        assert i + 1 <= 2 * (at / 1000 + 11), (i, at)
    assert taken[-1] >= 25_000  # 80 connections: well past 20 s
    end = t + taken[-1]
    assert quotas.take("INTERNAL", end) == 0  # the brokers' own are not counted
    # once time has passed, the rate is back under the bound: taken at once
    assert quotas.take("EXTERNAL", end + 30_000) == 0
    config["max.connection.creation.rate"] = NO_RATE  # dynamic: read per connection
    assert _accept_in_turn(quotas, 50, "EXTERNAL", end + 30_000) == [end + 30_000] * 50


def test_the_broker_connection_rate_is_shared_by_its_client_listeners() -> None:
    quotas, _ = _quotas(max_connection_creation_rate=2)
    t = 1_000_000
    assert _accept_in_turn(quotas, 20, "EXTERNAL", t) == [t] * 20
    assert quotas.take("OTHER", t) == 500  # its own acceptor, the broker's rate
    assert quotas.take("INTERNAL", t) == 0


def test_an_address_over_its_connection_rate_is_held_then_closed_and_not_counted() -> None:
    """connection_creation_rate=1 for 10.0.0.1 (KIP-612's ip quota): ten in a burst are
    taken, the eleventh is held a window then closed; a held one counts on no rate. Other
    addresses have no bound (no default set), and the default applies to every address
    without its own."""
    rates: dict[str | None, float] = {"10.0.0.1": 1}
    quotas, _ = _quotas(rates)
    t = 1_000_000
    assert [quotas.held("10.0.0.1", "EXTERNAL", t) for _ in range(10)] == [0] * 10
    assert quotas.held("10.0.0.1", "EXTERNAL", t) == 1000  # (11/10 - 1) / 1 * 10 s: capped
    assert quotas.held("10.0.0.1", "INTERNAL", t) > 0  # an address's rate: any listener
    assert [quotas.held("10.0.0.2", "EXTERNAL", t) for _ in range(30)] == [0] * 30
    # the burst's ten are counted until their window leaves the 11 s measured (Kafka's)
    assert quotas.held("10.0.0.1", "EXTERNAL", t + 5_000) > 0
    assert quotas.held("10.0.0.1", "EXTERNAL", t + 11_000) == 0
    rates[None] = 5  # a default: every other address gets it
    held = [quotas.held("10.0.0.3", "EXTERNAL", t) for _ in range(60)]
    assert held.count(0) == 50 and all(h > 0 for h in held[50:])  # 50 in the burst
    assert quotas.held("::1", "EXTERNAL", t) == 0  # its own count
    assert [quotas.held("0:0::1", "EXTERNAL", t) for _ in range(50)].count(0) == 49


def test_a_held_connection_is_taken_off_the_broker_rate_too() -> None:
    """With both rates set, connections an address's quota turned away do not use up the
    broker's rate (Kafka un-records them there), so other clients are not slowed by them."""
    quotas, _ = _quotas({"10.0.0.1": 1}, max_connection_creation_rate=2)
    t = 1_000_000
    for _ in range(10):
        assert quotas.take("EXTERNAL", t) == 0
        assert quotas.held("10.0.0.1", "EXTERNAL", t) == 0
    for _ in range(100):
        assert quotas.take("EXTERNAL", t) == 0
        assert quotas.held("10.0.0.1", "EXTERNAL", t) > 0
    # the broker's rate holds the 10 taken: 10 more at once, the 21st waits
    assert [quotas.take("EXTERNAL", t) for _ in range(11)] == [0] * 10 + [500]


def test_a_listener_holds_at_most_its_own_limit_the_inter_broker_one_too() -> None:
    quotas, config = _quotas(**{"listener.name.external.max.connections": 2})
    config["listener.name.internal.max.connections"] = 1
    assert quotas.admit("10.0.0.1", "EXTERNAL") is None
    assert quotas.admit("10.0.0.2", "EXTERNAL") is None
    assert quotas.admit("10.0.0.3", "EXTERNAL") == (
        "listener EXTERNAL has 2 connections, its listener.name.external.max.connections (2)"
    )
    assert quotas.admit("10.0.0.3", "CLIENTS") is None  # another listener: not its limit
    assert quotas.admit("10.0.0.4", "INTERNAL") is None
    assert quotas.admit("10.0.0.5", "INTERNAL") is not None  # its own limit holds for it
    quotas.release("10.0.0.1", "EXTERNAL")
    assert quotas.admit("10.0.0.3", "EXTERNAL") is None


def test_a_listeners_own_rate_throttles_that_listener_and_the_longer_wait_wins() -> None:
    """A listener's max.connection.creation.rate=1 over 11 one-second windows: ten in a
    burst at once, then its acceptor waits; the other listeners do not. The inter-broker
    listener is on no broker rate but on its own; the longer of the two waits wins."""
    quotas, config = _quotas(**{"listener.name.external.max.connection.creation.rate": 1})
    now = 1_000_000
    assert [quotas.take("EXTERNAL", now) for _ in range(10)] == [0] * 10
    assert quotas.take("EXTERNAL", now) == 1000  # (11/10 - 1) / 1 * 10 s: capped
    assert quotas.take("CLIENTS", now) == 0  # another listener: no rate of its own
    config["max.connection.creation.rate"] = 1
    config["listener.name.internal.max.connection.creation.rate"] = 1
    assert [quotas.take("INTERNAL", now) for _ in range(10)] == [0] * 10
    assert quotas.take("INTERNAL", now) == 1000
    # CLIENTS: its own rate has room, the broker's (12 client connections) does not
    config["listener.name.clients.max.connection.creation.rate"] = 1_000
    assert quotas.take("CLIENTS", now) == 1000
