"""The fault tests use the integration tests' real ZooKeeper and broker processes."""

from tests.integration.conftest import chroot, cluster, make_cluster, zk_root, zookeeper

__all__ = ["chroot", "cluster", "make_cluster", "zk_root", "zookeeper"]
