"""The private ZooKeeper every integration test and `headwater cluster up` start."""

import os
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from client import localcluster
from client.localcluster import ZooKeeperError, ZooKeeperServer, four_letter_word


def test_starts_serves_and_stops_by_pid(tmp_path: Path) -> None:
    zk = ZooKeeperServer(tmp_path / "zk")
    zk.start()
    pid = zk.pid
    assert pid is not None
    try:
        assert "Mode: standalone" in four_letter_word("127.0.0.1", zk.port, "srvr")
        # a client connecting right after start() returns is answered (ZOOKEEPER-5051)
        client = KazooClient(hosts=zk.connect_string, timeout=5.0)
        client.start(timeout=5.0)
        try:
            client.create("/headwater/probe", b"hello", makepath=True)
            assert client.get("/headwater/probe")[0] == b"hello"
        finally:
            client.stop()
            client.close()
    finally:
        zk.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "binding to port" in zk.log_path.read_text()  # its log goes under the directory


def test_a_taken_port_is_refused_not_mistaken_for_ours(tmp_path: Path) -> None:
    with ZooKeeperServer(tmp_path / "a") as first:
        second = ZooKeeperServer(tmp_path / "b", port=first.port)
        with pytest.raises(ZooKeeperError, match=f"port {first.port} on 127.0.0.1 is taken"):
            second.start()
        assert second.pid is None
        with ZooKeeperServer(tmp_path / "c") as third:  # port 0: a free one
            assert third.port != first.port
            assert "Mode:" in four_letter_word("127.0.0.1", third.port, "srvr")


def test_missing_installation_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localcluster, "ZOOKEEPER_JARS", ("/nonexistent/zookeeper.jar",))
    with pytest.raises(ZooKeeperError, match=r"run `make run` once, or `apt-get install"):
        ZooKeeperServer(tmp_path).start()
