import uuid
from collections.abc import Iterator

import pytest

from broker.zk import ZkBridge
from client.localcluster import ZooKeeperServer


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
