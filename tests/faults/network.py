"""A network whose links a fault test can cut: each broker in a network namespace of its
own, all on one bridge in the test's namespace, where ZooKeeper and the clients are.

Addresses, on a /24 of 10.77.x chosen per network: the bridge is ``.1`` (the clients'
side), ZooKeeper ``.2``, broker N ``.(10 + N)``. A cut is a blackhole route in the
cutting side's namespace: its packets to the other side are dropped silently, as a
partition drops them (connections already open hang and time out; new ones fail). A cut
is one way; TCP needs both, so one way is enough to part two processes, and :meth:`part`
cuts both ways between brokers. Only iproute2 and the kernel's core routing are needed
(this machine has no netfilter tools and no tc qdisc modules).

Root only (namespaces, links); :func:`available` says whether this machine can.
:class:`PartitionedCluster` is the integration tests' cluster with its brokers placed so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

from client.localcluster import BrokerProcess
from tests.integration.conftest import Cluster


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


@functools.cache
def available() -> str | None:
    """None if namespaces and bridges can be made here, else why not (asked once)."""
    if os.geteuid() != 0:
        return "cutting links needs root (network namespaces)"
    probe = f"hwp{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError) as exc:
        return f"network namespaces are not available: {exc}"
    with contextlib.suppress(RuntimeError):
        _ip("netns", "del", probe)
    return None


def _free_prefix() -> str:
    """A 10.77.x /24 no interface here has (another network's, a soak's beside a test's,
    or one a killed run left): two bridges on one subnet would route each other's
    traffic."""
    for _ in range(50):
        prefix = f"10.77.{secrets.randbelow(240) + 10}"
        taken = subprocess.run(
            ["ip", "-o", "addr", "show", "to", f"{prefix}.0/24"],
            capture_output=True,
            text=True,
            check=False,
        )
        if taken.returncode == 0 and not taken.stdout.strip():
            return prefix
    raise RuntimeError("no free 10.77.x.0/24 subnet for a test network")


class Network:
    """See the module doc. ``close()`` removes every namespace and link it made."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)  # link names are at most 15 characters
        self.prefix = _free_prefix()
        self.bridge = f"hwb{self.tag}"
        self.clients = f"{self.prefix}.1"
        self.zookeeper = f"{self.prefix}.2"
        self.hosts: dict[int, str] = {}  # broker id -> its namespace
        self._cuts: set[tuple[int, str]] = set()
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            # .1 first: the bridge's primary address, the source of the clients' packets
            # (a cut to .1 parts a broker from them, not from ZooKeeper at .2)
            for address in (self.clients, self.zookeeper):
                _ip("addr", "add", f"{address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except RuntimeError:
            self.close()
            raise

    def address(self, broker_id: int) -> str:
        return f"{self.prefix}.{10 + broker_id}"

    def host(self, broker_id: int) -> str:
        """Broker ``broker_id``'s namespace, made (with its link) on first use."""
        netns = self.hosts.get(broker_id)
        if netns is not None:
            return netns
        netns = f"hw{self.tag}n{broker_id}"
        outside = f"hw{self.tag}v{broker_id}"
        _ip("netns", "add", netns)
        self.hosts[broker_id] = netns
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("addr", "add", f"{self.address(broker_id)}/24", "dev", "eth0", netns=netns)
        _ip("link", "set", "eth0", "up", netns=netns)
        _ip("link", "set", "lo", "up", netns=netns)
        return netns

    def cut(self, broker_id: int, address: str) -> None:
        """Drop what broker ``broker_id`` sends to ``address``."""
        if (broker_id, address) not in self._cuts:
            _ip("route", "add", "blackhole", f"{address}/32", netns=self.hosts[broker_id])
            self._cuts.add((broker_id, address))

    def heal(self, broker_id: int, address: str) -> None:
        if (broker_id, address) in self._cuts:
            _ip("route", "del", "blackhole", f"{address}/32", netns=self.hosts[broker_id])
            self._cuts.discard((broker_id, address))

    def part(self, a: int, b: int) -> None:
        """Brokers ``a`` and ``b`` no longer reach each other."""
        self.cut(a, self.address(b))
        self.cut(b, self.address(a))

    def heal_all(self) -> None:
        for broker_id, address in list(self._cuts):
            self.heal(broker_id, address)

    def close(self) -> None:
        for netns in self.hosts.values():
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", netns)  # (its end of the link goes with it)
        self.hosts.clear()
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", self.bridge)


class PartitionedCluster(Cluster):
    """Three brokers, each in its namespace of ``net``, on a ZooKeeper on the bridge."""

    def __init__(self, net: Network, zookeeper_connect: str, directory: Path) -> None:
        super().__init__(zookeeper_connect, directory)
        self.net = net

    def new_broker(self, broker_id: int, settings: dict[str, str], **where: Any) -> BrokerProcess:
        return super().new_broker(
            broker_id,
            settings,
            host=self.net.address(broker_id),
            netns=self.net.host(broker_id),
        )

    def isolate(self, broker_id: int) -> None:
        """Cut ``broker_id`` off from ZooKeeper and the other brokers (not the clients)."""
        self.net.cut(broker_id, self.net.zookeeper)
        for other in self.brokers:
            if other != broker_id:
                self.net.part(broker_id, other)
