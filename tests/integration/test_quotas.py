"""Client quotas on real brokers: byte rates set through one broker (Admin and the
command) are enforced on every broker once the call returns; a client over its bound gets
``throttle_time_ms`` in its answers and is not read for that long; clients under no
quota (another client id) are untouched; and removing the quota lifts it. The records
written while throttled are all there, at their offsets."""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Callable

import pytest

from client import Admin, Consumer, NewTopic, TopicPartition
from client.connection import BrokerConnection
from protocol.apis import (
    ApiKey,
    CreatableTopic,
    CreateTopicsRequest,
    FetchPartition,
    FetchRequest,
    FetchTopic,
    MetadataRequest,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
)
from protocol.errors import (
    InvalidRequestError,
    ThrottlingQuotaExceededError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from protocol.records import encode_batch
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_cli import COMMAND

pytestmark = pytest.mark.timeout(150)

_BATCH = encode_batch([(None, b"x" * 1000, None, None) for _ in range(100)])  # ~100 KB


_GAPS: list[tuple[int, float]] = []
"""(throttle of an answer, seconds until the next answer on that connection)."""


async def _produce_throttles(bootstrap: str, client_id: str, rounds: int) -> list[int]:
    """Each produce's throttle_time_ms, one ~100 KB batch after another, as ``client_id``
    (and, in _GAPS, how long the answer after each took)."""
    host, port = bootstrap.split(",", maxsplit=1)[0].split(":")
    out: list[int] = []
    last = 0.0
    async with BrokerConnection(host, int(port), client_id=client_id) as conn:
        for _ in range(rounds):
            request = ProduceRequest(
                acks=1,
                timeout_ms=5000,
                topics=[
                    ProduceTopic(
                        name="metered", partitions=[ProducePartition(index=0, records=_BATCH)]
                    )
                ],
            )
            response = await conn.request(ApiKey.PRODUCE, request)
            now = time.monotonic()
            assert not response.topics[0].partitions[0].error_code
            if out:
                _GAPS.append((out[-1], now - last))
            last = now
            out.append(response.throttle_time_ms)
    return out


async def test_quotas_throttle_over_their_bound_and_lift_when_removed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1)
    bootstrap = cluster.bootstrap
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics([NewTopic("metered", 1, 1)])
        await admin.alter_client_quotas(
            {(("client-id", "slow"),): {"producer_byte_rate": 100_000}}  # 100 KB/s
        )
        assert await admin.describe_client_quotas(client_id="slow") == {
            (("client-id", "slow"),): {"producer_byte_rate": 100_000.0}
        }
        with pytest.raises(InvalidRequestError, match="request_rate"):
            await admin.alter_client_quotas({(("user", None),): {"request_rate": 50}})
        # 0.1% of the broker's loop: 10 ms over the 10 s a new client is measured on
        await admin.alter_client_quotas({(("client-id", "busy"),): {"request_percentage": 0.1}})
    host, port = bootstrap.split(":")
    for client_id, expected in (("busy", True), ("idle", False)):
        async with BrokerConnection(host, int(port), client_id=client_id) as conn:
            throttled = 0
            for _ in range(5000 if expected else 300):
                asked = MetadataRequest(topics=["metered"])
                throttled = (await conn.request(ApiKey.METADATA, asked)).throttle_time_ms
                if throttled:
                    break
        assert (throttled > 0) is expected, client_id

    # 1.5 MB at once is 1.5 times what 100 KB/s allows over the 10 s a new client is
    # measured on: answered, with a throttle, and the request after a throttled answer is
    # read only once the throttle is over (the client sees it as its next answer's time)
    _GAPS.clear()
    throttles = await _produce_throttles(bootstrap, "slow", 15)
    assert throttles[-1] > 0, throttles
    muted = [(t, gap) for t, gap in _GAPS if t > 0]
    assert muted and all(gap >= t / 1000 - 0.005 for t, gap in muted), _GAPS
    assert await _produce_throttles(bootstrap, "fast", 10) == [0] * 10  # no quota: free
    # every batch is there, at its offset
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    async with consumer:
        consumer.assign([TopicPartition("metered", 0)])
        count = 0
        while count < 25 * 100:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                assert records[0].offset == count
                count += len(records)

    # consumers: a fetch over the bound is throttled the same way
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.alter_client_quotas({(("user", None),): {"consumer_byte_rate": 100_000}})
    host, port = bootstrap.split(":")
    async with BrokerConnection(host, int(port), client_id="reader") as conn:
        fetch = FetchRequest(
            max_wait_ms=0,
            min_bytes=1,
            topics=[
                FetchTopic(
                    topic="metered",
                    partitions=[
                        FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=2_000_000)
                    ],
                )
            ],
        )
        answer = await conn.request(ApiKey.FETCH, fetch)
        assert answer.throttle_time_ms > 0  # ~2 MB against 100 KB/s, as ANONYMOUS

    # the command: described, then removed; the next client is not throttled
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60)
    plain = ["--bootstrap-server", bootstrap]
    shown = run([*COMMAND, *plain, "quotas", "--describe"])
    assert shown.returncode == 0, shown
    rows = [line.split("\t") for line in shown.stdout.splitlines()[1:]]
    assert ["-", "slow", "-", "producer_byte_rate", "100000"] in rows, rows
    assert ["<default>", "-", "-", "consumer_byte_rate", "100000"] in rows, rows
    removed = run(
        [
            *COMMAND,
            *plain,
            "quotas",
            "--alter",
            "--client-id",
            "slow",
            "--delete-config",
            "producer_byte_rate",
        ]
    )
    assert removed.returncode == 0, removed
    added = run(
        [
            *COMMAND,
            *plain,
            "quotas",
            "--alter",
            "--user",
            "alice",
            "--client-id",
            "app",
            "--add-config",
            "producer_byte_rate=1024,consumer_byte_rate=2048",
        ]
    )
    assert added.returncode == 0, added
    async with Admin(bootstrap_servers=bootstrap) as admin:
        found = await admin.describe_client_quotas(user="alice")
        assert found == {
            (("user", "alice"), ("client-id", "app")): {
                "consumer_byte_rate": 2048.0,
                "producer_byte_rate": 1024.0,
            }
        }
    assert await _until(lambda: _produce_throttles(bootstrap, "slow", 3), lambda t: t == [0] * 3)


async def test_a_controller_mutation_rate_refuses_topics_past_its_burst(
    make_cluster: Callable[..., Cluster],
) -> None:
    """KIP-599: controller_mutation_rate=1 (a burst of 11 partitions over the 11 one-second
    windows) lets a 10-partition topic and a 40-partition one through (the second into 39
    partitions of debt: enough that a slow machine cannot pay it back before the test has
    seen every refusal; 9 of debt did not always last on CI), then refuses
    the next topics with THROTTLING_QUOTA_EXCEEDED and a throttle time (the connection is
    not read meanwhile, as for any quota), a deletion too. The admin client sends them to
    the controller, so one bucket counts them whichever broker it was given. A topic that
    fails for another reason says so (and costs nothing); one named twice is refused. The
    quota removed, all goes through."""
    cluster = make_cluster(2)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        controller = (await admin.describe_cluster()).controller_id
    other = 3 - controller

    def fresh(broker: int) -> Admin:  # its own connection: a throttled one is not read
        return Admin(bootstrap_servers=cluster.brokers[broker].bootstrap)

    # set through the other broker: the controller reads it from ZooKeeper's notification
    # a moment later, and the admin returns once it has (else m1 could come first and go
    # uncounted, as a review found when the admin did not wait)
    async with fresh(other) as admin:
        await admin.alter_client_quotas({(("user", None),): {"controller_mutation_rate": 1}})
    async with fresh(other) as admin:  # given the other broker: counted at the controller
        await admin.create_topics([NewTopic("m1", 10, 1)])
        await admin.create_topics([NewTopic("m2", 40, 1)])  # 50 of 11: 39 in debt

    async def topics_seen_by_other() -> set[str]:
        async with fresh(other) as admin:
            return set(await admin.list_topics())

    # the controller answered once it knew the leaders; the other broker learns of them
    # from its UpdateMetadata moments later (as in Kafka), after its own LeaderAndIsr
    await _until(topics_seen_by_other, lambda seen: {"m1", "m2"} <= seen)
    host, port = cluster.brokers[controller].bootstrap.split(":")
    async with BrokerConnection(host, int(port)) as conn:
        request = CreateTopicsRequest(
            topics=[
                CreatableTopic(name="m3", num_partitions=1, replication_factor=1),
                CreatableTopic(name="m4", num_partitions=1, replication_factor=1),
                CreatableTopic(name="m1", num_partitions=1, replication_factor=1),
                CreatableTopic(name="twice", num_partitions=1, replication_factor=1),
                CreatableTopic(name="twice", num_partitions=1, replication_factor=1),
            ]
        )
        answer = await conn.request(ApiKey.CREATE_TOPICS, request)
    codes = {r.name: r.error_code for r in answer.topics}
    assert codes["m3"] == codes["m4"] == ThrottlingQuotaExceededError.code
    assert codes["m1"] == TopicAlreadyExistsError.code  # its own error, not a throttle
    assert codes["twice"] == InvalidRequestError.code  # as Kafka: neither copy is made
    assert "over controller_mutation_rate" in next(
        r.error_message or "" for r in answer.topics if r.name == "m3"
    )
    assert 20_000 < answer.throttle_time_ms <= 39_000  # 39 partitions of debt at 1/s
    async with fresh(other) as admin:
        started = time.monotonic()
        with pytest.raises(ThrottlingQuotaExceededError, match="retry in"):
            await admin.create_topics([NewTopic("m3", 1, 1)], timeout_ms=1_500)
        assert time.monotonic() - started < 5  # not past its timeout
    async with fresh(other) as admin:
        with pytest.raises(ThrottlingQuotaExceededError):
            await admin.delete_topics(["m1"], timeout_ms=1_000)
    async with fresh(other) as admin:
        with pytest.raises(UnknownTopicOrPartitionError):  # at once: no use retrying
            await admin.delete_topics(["no-such-topic"], timeout_ms=5_000)
    async with fresh(other) as admin:
        assert {"m1", "m2"} <= set(await admin.list_topics())  # nothing deleted
        assert not {"m3", "twice"} & set(await admin.list_topics())
        await admin.alter_client_quotas({(("user", None),): {"controller_mutation_rate": None}})

    async def create_m3() -> bool:
        # the controller applies the removal when ZooKeeper's notification reaches it, a
        # moment after the write (a fresh-clone run once asked first)
        async with fresh(other) as admin:
            try:
                await admin.create_topics([NewTopic("m3", 1, 1)], timeout_ms=1_000)
            except ThrottlingQuotaExceededError:
                return False
            return True

    await _until(create_m3, lambda created: created, timeout_s=10)
    async with fresh(other) as admin:
        await admin.delete_topics(["m1", "m2"])
