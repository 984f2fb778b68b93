"""Connection limits without sockets: what an address may hold, what the broker takes in
all, the inter-broker listener's exemption, and the overrides' form."""

from __future__ import annotations

from typing import Any

import pytest

from broker.config import ConfigError, load_config
from broker.connection_quotas import ConnectionQuotas, parse_ip_overrides


def _quotas(**settings: Any) -> tuple[ConnectionQuotas, dict[str, Any]]:
    config: dict[str, Any] = {
        "max.connections": 2**31 - 1,
        "max.connections.per.ip": 2**31 - 1,
        "max.connections.per.ip.overrides": "",
        **{k.replace("_", "."): v for k, v in settings.items()},
    }
    return ConnectionQuotas(config.__getitem__, "INTERNAL"), config


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
