"""A move of a log between a broker's data directories cut short by kill -9: the next
start finds the copy beside the log and goes on with it, and every acknowledged record
is read back at its offset once the move is done. A real broker with two ``log.dirs``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from client import Admin, Producer
from client.localcluster import BrokerStartError
from tests.integration.conftest import Cluster, until
from tests.integration.test_log_dir_moves import (
    REPLICA,
    _leftovers,
    _value,
    read_all,
    throttle,
    two_dirs,
    where_is,
)
from tests.integration.test_topics import _ready_cluster

pytestmark = pytest.mark.timeout(180)


async def test_a_move_cut_short_by_kill_9_goes_on_at_the_next_start(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster, source, target = await two_dirs(make_cluster, tmp_path)
    broker = cluster.brokers[1]
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            futures = [await producer.send("moved", _value(i)) for i in range(4000)]
            offsets = [(await f).offset for f in futures]
        assert offsets == list(range(4000))
        await throttle(admin, 100_000)  # the copy held part way (2 MiB of 4)
        assert await admin.alter_replica_log_dirs({REPLICA: target}) == {REPLICA: None}
        await until(lambda: where_is(admin), lambda found: found == (source, target))
    broker.kill()  # kill -9, the copy part made
    assert (Path(target) / "moved-0" / ".future").exists()
    await _restart(cluster, 1)
    await _ready_cluster(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        found = await where_is(admin)
        assert found == (source, target), "the copy is not taken up again"
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            more = [await producer.send("moved", _value(i)) for i in range(4000, 4500)]
            assert [(await f).offset for f in more] == list(range(4000, 4500))
        await throttle(admin, None)
        await until(lambda: where_is(admin), lambda found: found == (target, None), timeout_s=30)
    assert await read_all(cluster.bootstrap, 4500) == [(i, _value(i)) for i in range(4500)]
    # the old log, its files kept open file.delete.delay.ms after the swap, then removed
    await until(lambda: _leftovers(Path(source)), lambda left: left == [], timeout_s=10)


async def _restart(cluster: Cluster, broker_id: int) -> None:
    """Start the broker on its data again: refused until the killed one's ZooKeeper
    session has expired (its registration stands until then), so asked again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            await asyncio.to_thread(cluster.start_broker, broker_id)
            return
        except BrokerStartError as exc:
            if "already registered" not in str(exc) or loop.time() > deadline:
                raise
        await asyncio.sleep(0.5)
