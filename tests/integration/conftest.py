import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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
def tmp(tmp_path: Path) -> Path:
    return tmp_path
