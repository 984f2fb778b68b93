"""Transactions under kill -9 and SIGSTOP: every transaction whose commit returned is read
whole by read_committed consumers, every other one not at all, and no record twice."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest

from client import Admin, NewTopic, Producer
from protocol.errors import ApiError
from tests.integration.conftest import Cluster
from tests.integration.test_transactions import _committed_values

pytestmark = pytest.mark.timeout(240)

TOPIC = "txn-faults"
PARTITIONS = 3
SETTINGS = {
    "transaction.state.log.num.partitions": "3",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
}


def _producer(cluster: Cluster) -> Producer:
    return Producer(
        bootstrap_servers=cluster.bootstrap,
        transactional_id="faulty",
        transaction_timeout_ms=5_000,
        request_timeout_ms=5_000,
        delivery_timeout_ms=20_000,
        max_block_ms=30_000,
    )


async def _run_transactions(
    cluster: Cluster, count: int, fault: Callable[[int], None], at: int, delay_s: float
) -> tuple[set[int], set[int]]:
    """``count`` transactions of one record per partition each, with ``fault(coordinator)``
    injected ``delay_s`` into the commit of the ``at``-th; (those whose commit returned,
    those that raised). A producer whose transaction failed is replaced by a new one
    with the same transactional id, as an application restarts."""
    committed: set[int] = set()
    failed: set[int] = set()
    producer = _producer(cluster)
    await producer.start()
    loop = asyncio.get_running_loop()
    try:
        for i in range(count):
            try:
                producer.begin_transaction()
                for p in range(PARTITIONS):
                    await producer.send(TOPIC, b"%d/%d" % (i, p), partition=p)
                if i == at:
                    assert producer._txn is not None
                    coordinator = await producer._txn._line.coordinator()
                    loop.call_later(delay_s, fault, coordinator)
                await producer.commit_transaction()
            except (ApiError, TimeoutError, RuntimeError):
                failed.add(i)  # its outcome unknown: it must be all there or none of it
                await producer.stop()
                producer = _producer(cluster)  # fences the old, aborts what it left
                await producer.start()
                continue
            committed.add(i)
    finally:
        await producer.stop()
    return committed, failed


def _check(values: list[bytes], committed: set[int], failed: set[int], count: int) -> None:
    assert len(values) == len(set(values)), "a record was read twice"
    seen: dict[int, set[int]] = {}
    for value in values:
        txn, partition = map(int, value.split(b"/"))
        seen.setdefault(txn, set()).add(partition)
    for txn, partitions in seen.items():
        assert partitions == set(range(PARTITIONS)), f"transaction {txn} is half there"
    assert committed <= set(seen), f"committed but not read: {committed - set(seen)}"
    assert set(seen) <= committed | failed
    assert committed | failed == set(range(count))


async def _setup(make_cluster: Callable[..., Cluster]) -> Cluster:
    cluster = make_cluster(3, SETTINGS)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, {"min.insync.replicas": "2"})])
    return cluster


async def test_the_coordinator_killed_mid_stream_leaves_every_transaction_whole_or_gone(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = await _setup(make_cluster)
    killed: list[int] = []

    def kill(coordinator: int) -> None:
        killed.append(coordinator)
        cluster.brokers[coordinator].kill()  # kill -9, transactions in flight

    count = 30
    committed, failed = await _run_transactions(cluster, count, kill, at=10, delay_s=0.003)
    cluster.start_broker(killed[0])
    _check(await _committed_values(cluster, TOPIC, PARTITIONS), committed, failed, count)
    assert len(committed) >= count - 3  # it goes on under the new coordinator


async def test_a_paused_coordinator_leaves_every_transaction_whole_or_gone(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = await _setup(make_cluster)
    paused: list[int] = []

    def pause(coordinator: int) -> None:
        pid = cluster.brokers[coordinator].process
        assert pid is not None
        paused.append(pid.pid)
        os.kill(pid.pid, signal.SIGSTOP)  # its ZooKeeper session expires: it is replaced
        asyncio.get_running_loop().call_later(8, os.kill, pid.pid, signal.SIGCONT)

    count = 20
    try:
        committed, failed = await _run_transactions(cluster, count, pause, at=5, delay_s=0)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    _check(await _committed_values(cluster, TOPIC, PARTITIONS), committed, failed, count)
