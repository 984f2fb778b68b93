"""The soak uses the integration tests' real ZooKeeper and broker processes."""

from tests.integration.conftest import chroot, make_cluster, zk_root, zookeeper

__all__ = ["chroot", "make_cluster", "zk_root", "zookeeper"]
