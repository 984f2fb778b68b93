import asyncio
import inspect
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from broker.zk import ZkBridge
from client.localcluster import BrokerProcess, ZooKeeperServer


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One real ZooKeeper per test module, stopped by its pid afterwards."""
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def zk_root() -> str:
    """A path of the test's own, so tests sharing a ZooKeeper never see each other."""
    return f"/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def chroot(zookeeper: ZooKeeperServer, zk_root: str) -> str:
    """``zk_root`` created, for clients that use it as their ZooKeeper chroot."""
    bridge = ZkBridge(zookeeper.connect_string)
    await bridge.start(timeout_s=10)
    await bridge.ensure_path(zk_root)
    await bridge.stop()
    return zk_root


class Cluster:
    """Real broker processes on the module's ZooKeeper, under the test's own chroot."""

    def __init__(self, zookeeper_connect: str, directory: Path) -> None:
        self.zookeeper_connect = zookeeper_connect
        self.directory = directory
        self.brokers: dict[int, BrokerProcess] = {}

    @property
    def bootstrap(self) -> str:
        """Every running broker's address, as ``bootstrap_servers`` takes them."""
        return ",".join(b.bootstrap for b in self.brokers.values() if b.process is not None)

    def start_broker(self, broker_id: int, settings: dict[str, str] | None = None) -> BrokerProcess:
        """Start (or restart, on the same data) broker ``broker_id``."""
        broker = self.brokers.get(broker_id)
        if broker is None:
            broker = self.new_broker(broker_id, {**FAST_BROKER, **(settings or {})})
            self.brokers[broker_id] = broker
        broker.start()
        return broker

    def new_broker(self, broker_id: int, settings: dict[str, str], **where: Any) -> BrokerProcess:
        """Broker ``broker_id``'s process, not started; ``where`` is BrokerProcess's host
        and netns (a subclass's)."""
        return BrokerProcess(
            broker_id,
            self.directory / f"broker-{broker_id}",
            self.zookeeper_connect,
            settings=settings,
            **where,
        )

    def kill_all(self) -> None:
        for broker in self.brokers.values():
            broker.kill()  # only the processes this test started, by pid


def new_chroot(zookeeper: ZooKeeperServer, name: str) -> str:
    """A new path of its own on ``zookeeper``, made; its connect string with the path as
    chroot (brokers on it see nothing of other tests')."""
    root = f"/{name}-{uuid.uuid4().hex[:12]}"
    zk = KazooClient(hosts=zookeeper.connect_string, timeout=10)
    zk.start(timeout=10)
    try:
        zk.ensure_path(root)
    finally:
        zk.stop()
        zk.close()
    return zookeeper.connect_string + root


def module_cluster(
    zookeeper: ZooKeeperServer,
    directory: Path,
    name: str,
    settings: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """Three brokers shared by a module's tests that keep every broker up, in a ZooKeeper
    chroot of their own; killed by pid afterwards. Use from a module-scoped fixture."""
    cluster = Cluster(new_chroot(zookeeper, name), directory)
    try:
        for broker_id in (1, 2, 3):
            cluster.start_broker(broker_id, settings)
        yield cluster
    finally:
        cluster.kill_all()  # only the processes this fixture started, by pid


FAST_BROKER = {"zookeeper.session.timeout.ms": "2000"}
"""Short ZooKeeper sessions so failover tests need not wait long (DESIGN.md "ZooKeeper")."""


@pytest.fixture
def make_cluster(
    zookeeper: ZooKeeperServer, chroot: str, tmp_path: Path
) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(brokers=3, settings={...})``: started brokers 1..N, killed afterwards."""
    made: list[Cluster] = []

    def make(brokers: int = 3, settings: dict[str, str] | None = None) -> Cluster:
        cluster = Cluster(zookeeper.connect_string + chroot, tmp_path / f"cluster-{len(made)}")
        made.append(cluster)
        for broker_id in range(1, brokers + 1):
            cluster.start_broker(broker_id, settings)
        return cluster

    yield make
    for cluster in made:
        cluster.kill_all()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """Three real brokers."""
    return make_cluster(3)


async def until(
    probe: Callable[[], Any], check: Callable[[Any], bool], timeout_s: float = 30
) -> Any:
    """Poll ``probe`` (sync or async) every 0.1 s until ``check`` holds; the last value.

    For states only observable by asking (another process's metadata, a CLI's output)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if check(value):
            return value
        assert time.monotonic() < deadline, f"never reached; last: {value}"
        await asyncio.sleep(0.1)
