"""Exactly-once producing under the faults that make a producer retry a batch the broker
already wrote: answers lost on the way back (every few Produce answers dropped after the
broker wrote and replicated the batch), and every broker restarted between a batch and its
retry. Real ZooKeeper, three real brokers, RF=3, acks=all."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.zk import ZkBridge, paths
from client import Producer
from client.connection import BrokerConnection
from protocol.apis import (
    ApiKey,
    InitProducerIdRequest,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
)
from protocol.errors import NetworkError
from protocol.records import encode_batch
from tests.faults.test_replication_faults import SETTINGS, _describe, _leader_of, _topic, _until
from tests.faults.workload import check_exactly_once, produce, read_back
from tests.integration.conftest import Cluster, until
from tests.integration.test_topics import _request

pytestmark = pytest.mark.timeout(180)

RECORDS = 6_000


@pytest.fixture
def lossy_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every 5th Produce answer is lost after the broker wrote the batch: the client sees
    a dropped connection, as if a proxy in front of the leader cut it (the broker has done
    the work, the producer cannot know). Both ways a Produce is sent are covered: awaited
    (``request``, while connecting) and written at once (``send_now``)."""
    real = BrokerConnection.request
    counter = itertools.count(1)
    lost: list[int] = []

    async def request(self: BrokerConnection, api_key: ApiKey, request: Any, **kw: Any) -> Any:
        response = await real(self, api_key, request, **kw)
        if api_key == ApiKey.PRODUCE and next(counter) % 5 == 0:
            lost.append(1)
            self.close(NetworkError("answer lost"))
            raise NetworkError(f"lost the answer from {self.host}:{self.port}")
        return response

    real_now = BrokerConnection.send_now

    def send_now(
        self: BrokerConnection, api_key: ApiKey, request: Any, on_answer: Any, **kw: Any
    ) -> None:
        if api_key != ApiKey.PRODUCE or on_answer is None:
            return real_now(self, api_key, request, on_answer, **kw)

        def lossy(response: Any, error: BaseException | None) -> None:
            if error is None and next(counter) % 5 == 0:
                lost.append(1)
                error = NetworkError(f"lost the answer from {self.host}:{self.port}")
                self.close(error)  # the other requests in flight hear of it too
                response = None
            on_answer(response, error)

        return real_now(self, api_key, request, lossy, **kw)

    monkeypatch.setattr(BrokerConnection, "request", request)
    monkeypatch.setattr(BrokerConnection, "send_now", send_now)
    yield lost


async def test_lost_answers_leave_every_record_exactly_once_in_send_order(
    make_cluster: Callable[..., Cluster], lossy_answers: list[int]
) -> None:
    cluster = make_cluster(3, SETTINGS)
    await _topic(cluster, "payments")
    outcome = await produce(cluster.bootstrap, "payments", RECORDS, batch_size=1024)
    assert len(lossy_answers) >= 10, "the fault must have happened"
    check_exactly_once(outcome, await read_back(cluster.bootstrap, "payments"))


async def test_without_idempotence_the_same_fault_duplicates(
    make_cluster: Callable[..., Cluster], lossy_answers: list[int]
) -> None:
    """The control: the check above can fail, and this fault is why idempotence exists."""
    cluster = make_cluster(3, SETTINGS)
    await _topic(cluster, "payments")
    outcome = await produce(
        cluster.bootstrap, "payments", 2_000, batch_size=1024, enable_idempotence=False
    )
    stored = await read_back(cluster.bootstrap, "payments")
    seen = Counter(seq for records in stored.values() for _, seq in records)
    assert set(seen) == set(outcome.acked)
    assert any(n > 1 for n in seen.values()), "lost answers were retried into duplicates"


async def test_after_every_broker_restarts_a_retry_is_still_recognised(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, {**SETTINGS, "log.segment.bytes": "2000"})
    await _topic(cluster, "payments", partitions=1)

    async def leader_port() -> int:
        leader = _leader_of(await _describe(cluster.bootstrap, "payments"))
        return cluster.brokers[leader].port

    ids = await _request(await leader_port(), ApiKey.INIT_PRODUCER_ID, InitProducerIdRequest())
    batches = [
        encode_batch(
            [(None, b"%d-%d" % (i, j), None, None) for j in range(10)],
            producer_id=ids.producer_id,
            producer_epoch=ids.producer_epoch,
            base_sequence=10 * i,
        )
        for i in range(20)  # several segments: the state comes from snapshots + headers
    ]

    async def send(batch: bytes) -> Any:
        request = ProduceRequest(
            acks=-1,
            timeout_ms=5_000,
            topics=[
                ProduceTopic(name="payments", partitions=[ProducePartition(index=0, records=batch)])
            ],
        )

        async def attempt() -> Any:
            try:
                response = await _request(await leader_port(), ApiKey.PRODUCE, request)
            except (NetworkError, OSError):
                return None
            return response.topics[0].partitions[0]

        return await _until(attempt, lambda p: p is not None and p.error_code == 0, 60)

    offsets = [(await send(b)).base_offset for b in batches]
    assert offsets == [10 * i for i in range(20)]
    for broker in cluster.brokers.values():
        broker.kill()  # kill -9: no clean shutdown, no snapshot of the tail
    zk = ZkBridge(cluster.zookeeper_connect)
    await zk.start(timeout_s=10)
    try:  # a restart is a new registration once the dead brokers' sessions expired
        await _until(lambda: zk.get_children(paths.BROKER_IDS), lambda ids: not ids)
    finally:
        await zk.stop()
    for broker_id in cluster.brokers:
        await asyncio.to_thread(cluster.start_broker, broker_id)
    for i in (15, 19):  # retries of batches among the last five: answered, not appended
        assert (await send(batches[i])).base_offset == 10 * i
    stored = await read_back(cluster.bootstrap, "payments")
    assert len(stored[0]) == 200  # 20 batches of 10, none twice


async def test_a_producer_idle_past_producer_id_expiration_goes_on_under_a_new_epoch(
    make_cluster: Callable[..., Cluster],
) -> None:
    """KIP-854: the brokers forget a producer not heard from in producer.id.expiration.ms;
    its next batch is UNKNOWN_PRODUCER_ID, and the client bumps its epoch and sends it
    again from sequence 0 (KIP-360): nothing lost, nothing twice."""
    cluster = make_cluster(
        3,
        {
            **SETTINGS,
            "producer.id.expiration.ms": "1000",
            "producer.id.expiration.check.interval.ms": "100",
        },
    )
    await _topic(cluster, "idle", partitions=1)
    async with Producer(bootstrap_servers=cluster.bootstrap, retry_backoff_ms=50) as producer:
        assert producer.enable_idempotence
        first = [await producer.send("idle", b"%d" % i) for i in range(20)]
        await producer.flush()
        old = producer._accumulator.producer_id, producer._accumulator.producer_epoch
        logs = [b.log_path for b in cluster.brokers.values()]
        await until(
            lambda: sum(p.read_text().count("broker.producer_ids_expired") for p in logs),
            lambda expired: expired >= 3,  # the leader's and both followers' state
        )
        second = [await producer.send("idle", b"%d" % i) for i in range(20, 40)]
        await producer.flush()
        now = producer._accumulator.producer_id, producer._accumulator.producer_epoch
        assert now == (old[0], old[1] + 1)
    offsets = [f.result().offset for f in first + second]
    assert offsets == list(range(40))
    stored = await read_back(cluster.bootstrap, "idle")
    assert [seq for _, seq in stored[0]] == list(range(40))
