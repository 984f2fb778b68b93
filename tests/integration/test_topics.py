"""Topics on real brokers, over the raw protocol: creation spread by the controller,
produce and fetch at the leaders, deletion everywhere, restarts and controller failover.

The client library has its own tests; these speak to the brokers directly so a failure
points at the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from client import Admin, NewTopic, Producer
from client.connection import BrokerConnection
from protocol.apis import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    ApiKey,
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    DescribeConfigsRequest,
    DescribeConfigsResource,
    FetchPartition,
    FetchRequest,
    FetchTopic,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
    MetadataRequest,
    MetadataResponse,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
)
from protocol.errors import (
    InvalidReplicationFactorError,
    InvalidTopicError,
    MessageTooLargeError,
    NetworkError,
    NotLeaderOrFollowerError,
    OffsetOutOfRangeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from protocol.records import decode_batches, encode_batch
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until

pytestmark = pytest.mark.timeout(120)


async def _request(port: int, api_key: ApiKey, request: Any) -> Any:
    async with BrokerConnection("127.0.0.1", port) as conn:
        return await conn.request(api_key, request)


async def _metadata(port: int, topics: list[str] | None = None) -> MetadataResponse:
    response: MetadataResponse = await _request(
        port, ApiKey.METADATA, MetadataRequest(topics=topics, allow_auto_topic_creation=False)
    )
    return response


async def _create(port: int, name: str, partitions: int, **kw: Any) -> Any:
    request = CreateTopicsRequest(
        topics=[CreatableTopic(name=name, num_partitions=partitions, replication_factor=1, **kw)]
    )
    return (await _request(port, ApiKey.CREATE_TOPICS, request)).topics[0]


async def _ready_cluster(cluster: Cluster) -> dict[int, int]:
    """Wait until every broker's metadata lists them all; returns broker id -> port."""
    ids = set(cluster.brokers)
    first = next(iter(cluster.brokers.values()))
    meta = await _until(
        lambda: _metadata(first.port), lambda m: {b.node_id for b in m.brokers} == ids
    )
    return {b.node_id: b.port for b in meta.brokers}


async def _leaders(port: int, topic: str) -> dict[int, int]:
    """partition -> leader, once every leader serves it: a leader hears of its role (from
    the controller) a moment after the topic shows in another broker's metadata."""
    meta = await _metadata(port, [topic])
    leaders = {p.partition_index: p.leader_id for p in meta.topics[0].partitions}
    ports = {b.node_id: b.port for b in meta.brokers}
    for partition, leader in leaders.items():
        await _until(
            lambda p=partition, b=leader: _fetch(ports[b], topic, p, 0),
            lambda f: f.error_code == 0,
        )
    return leaders


async def _produce(
    port: int, topic: str, partition: int, values: list[bytes], acks: int = 1
) -> Any:
    batch = encode_batch([(None, v, None, None) for v in values])
    request = ProduceRequest(
        acks=acks,
        timeout_ms=5000,
        topics=[
            ProduceTopic(name=topic, partitions=[ProducePartition(index=partition, records=batch)])
        ],
    )
    async with BrokerConnection("127.0.0.1", port) as conn:
        response = await conn.request(ApiKey.PRODUCE, request, expect_response=acks != 0)
    return None if response is None else response.topics[0].partitions[0]


async def _fetch(
    port: int, topic: str, partition: int, offset: int, *, max_wait_ms: int = 0, min_bytes: int = 0
) -> Any:
    request = FetchRequest(
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        topics=[
            FetchTopic(
                topic=topic,
                partitions=[
                    FetchPartition(
                        partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20
                    )
                ],
            )
        ],
    )
    return (await _request(port, ApiKey.FETCH, request)).topics[0].partitions[0]


def _values(records: Any, start: int = 0) -> list[tuple[int, bytes]]:
    out = []
    for batch in decode_batches(bytes(records or b"")):
        for r in batch:
            if r.offset >= start:
                out.append((r.offset, r.value))
    return out


async def test_topic_spread_produce_fetch_list_offsets(cluster: Cluster) -> None:
    ports = await _ready_cluster(cluster)
    any_port = next(iter(ports.values()))
    result = await _create(any_port, "events", 6)
    assert result.error_code == 0, result
    leaders = await _leaders(any_port, "events")
    assert sorted(leaders) == list(range(6))
    assert set(leaders.values()) == {1, 2, 3}  # two partitions on each broker
    for partition, leader in leaders.items():
        first = await _produce(ports[leader], "events", partition, [b"a", b"b"])
        second = await _produce(ports[leader], "events", partition, [b"c"], acks=-1)
        assert (first.error_code, first.base_offset) == (0, 0)
        assert (second.error_code, second.base_offset) == (0, 2)
        got = await _fetch(ports[leader], "events", partition, 1)
        assert got.error_code == 0 and got.high_watermark == 3
        assert _values(got.records, 1) == [(1, b"b"), (2, b"c")]
    leader = leaders[0]
    offsets = await _request(
        ports[leader],
        ApiKey.LIST_OFFSETS,
        ListOffsetsRequest(
            topics=[
                ListOffsetsTopic(
                    name="events",
                    partitions=[
                        ListOffsetsPartition(partition_index=0, timestamp=EARLIEST_TIMESTAMP)
                    ],
                ),
                ListOffsetsTopic(
                    name="events",
                    partitions=[
                        ListOffsetsPartition(partition_index=0, timestamp=LATEST_TIMESTAMP)
                    ],
                ),
            ]
        ),
    )
    assert [t.partitions[0].offset for t in offsets.topics] == [0, 3]
    # every broker tells the same story, and the wrong broker says who leads
    other = next(b for b in ports if b != leader)
    wrong = await _produce(ports[other], "events", 0, [b"x"])
    assert wrong.error_code == NotLeaderOrFollowerError.code
    assert f"broker {leader}" in wrong.error_message


async def test_fetch_waits_for_data_then_answers(cluster: Cluster) -> None:
    ports = await _ready_cluster(cluster)
    port = next(iter(ports.values()))
    await _create(port, "waiting", 1)
    leader = ports[(await _leaders(port, "waiting"))[0]]
    loop = asyncio.get_running_loop()
    started = loop.time()
    parked = asyncio.ensure_future(_fetch(leader, "waiting", 0, 0, max_wait_ms=10_000, min_bytes=1))
    await asyncio.sleep(0.3)
    assert not parked.done()  # parked: nothing to read yet
    await _produce(leader, "waiting", 0, [b"wake"])
    got = await asyncio.wait_for(parked, 5)
    assert _values(got.records) == [(0, b"wake")]
    assert loop.time() - started < 5  # answered by the append, not by max_wait_ms
    empty = await _fetch(leader, "waiting", 0, 1, max_wait_ms=200, min_bytes=1)
    assert empty.error_code == 0 and not empty.records  # max_wait_ms passed: empty answer


async def test_bad_requests_get_clear_errors_and_the_broker_serves_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, {"auto.create.topics.enable": "false"})
    ports = await _ready_cluster(cluster)
    port = ports[1]
    assert (
        await _create(
            port, "ok", 2, configs=[CreatableTopicConfig(name="max.message.bytes", value="1000")]
        )
    ).error_code == 0
    again = await _create(port, "ok", 2)
    assert again.error_code == TopicAlreadyExistsError.code
    bad_name = await _create(port, "no/slash", 1)
    assert bad_name.error_code == InvalidTopicError.code
    bad_rf = await _request(
        port,
        ApiKey.CREATE_TOPICS,
        CreateTopicsRequest(
            topics=[CreatableTopic(name="rf", num_partitions=1, replication_factor=3)]
        ),
    )
    assert bad_rf.topics[0].error_code == InvalidReplicationFactorError.code
    meta = await _request(port, ApiKey.METADATA, MetadataRequest(topics=["missing"]))
    assert meta.topics[0].error_code == UnknownTopicOrPartitionError.code  # auto-create off
    assert "headwater topics create missing" in meta.topics[0].error_message
    missing = await _produce(port, "missing", 0, [b"x"])
    assert missing.error_code == UnknownTopicOrPartitionError.code
    # acks=0 has no answer to carry the error: the broker closes the connection instead
    async with BrokerConnection("127.0.0.1", port) as conn:
        blind = ProduceRequest(
            acks=0,
            timeout_ms=1000,
            topics=[
                ProduceTopic(
                    name="missing",
                    partitions=[
                        ProducePartition(index=0, records=encode_batch([(None, b"x", None, None)]))
                    ],
                )
            ],
        )
        await conn.request(ApiKey.PRODUCE, blind, expect_response=False)
        with pytest.raises(NetworkError):
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=[]))
    no_partition = await _produce(port, "ok", 7, [b"x"])
    assert no_partition.error_code == UnknownTopicOrPartitionError.code
    assert "no partition 7" in no_partition.error_message
    too_big = await _produce(port, "ok", 0, [b"x" * 5000])
    assert too_big.error_code == MessageTooLargeError.code
    past_end = await _fetch(port, "ok", 0, 99)
    assert past_end.error_code == OffsetOutOfRangeError.code
    fine = await _produce(port, "ok", 0, [b"fine"])
    assert (fine.error_code, fine.base_offset) == (0, 0)  # the failed ones wrote nothing
    configs = await _request(
        port,
        ApiKey.DESCRIBE_CONFIGS,
        DescribeConfigsRequest(
            resources=[DescribeConfigsResource(resource_type=2, resource_name="ok")]
        ),
    )
    by_name = {c.name: c for c in configs.results[0].configs}
    assert by_name["max.message.bytes"].value == "1000"
    assert by_name["max.message.bytes"].config_source == 1  # DYNAMIC_TOPIC_CONFIG
    assert by_name["retention.ms"].config_source == 5  # DEFAULT_CONFIG


async def test_delete_topic_removes_its_data_everywhere(cluster: Cluster) -> None:
    ports = await _ready_cluster(cluster)
    port = next(iter(ports.values()))
    await _create(port, "doomed", 3)
    leaders = await _leaders(port, "doomed")
    for partition, leader in leaders.items():
        await _produce(ports[leader], "doomed", partition, [b"x"])
    dirs = [
        b.directory / "data" / f"doomed-{p}"
        for p, leader in leaders.items()
        for b in [cluster.brokers[leader]]
    ]
    assert all(d.is_dir() for d in dirs)
    response = await _request(
        port, ApiKey.DELETE_TOPICS, DeleteTopicsRequest(topic_names=["doomed", "never"])
    )
    codes = {r.name: r.error_code for r in response.responses}
    assert codes == {"doomed": 0, "never": UnknownTopicOrPartitionError.code}
    assert not any(d.exists() for d in dirs)
    for p in ports.values():
        meta = await _metadata(p, ["doomed"])
        assert meta.topics[0].error_code == UnknownTopicOrPartitionError.code
    recreated = await _create(port, "doomed", 1)
    assert recreated.error_code == 0  # the name is free again, and the data is new
    leader = ports[(await _leaders(port, "doomed"))[0]]
    assert (await _fetch(leader, "doomed", 0, 0)).records in (None, b"")


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_broker_restart_keeps_its_data(cluster: Cluster, how: str) -> None:
    ports = await _ready_cluster(cluster)
    port = ports[1]
    await _create(port, "durable", 3)
    leaders = await _leaders(port, "durable")
    victim_partition, victim = next((p, b) for p, b in leaders.items())
    for i in range(10):
        written = await _produce(ports[victim], "durable", victim_partition, [b"v%d" % i])
        assert (written.error_code, written.base_offset) == (0, i)
    broker = cluster.brokers[victim]
    if how == "sigterm":
        assert broker.stop() == 0
    else:
        broker.kill()
    survivor = next(p for b, p in ports.items() if b != victim)
    offline = await _until(
        lambda: _metadata(survivor, ["durable"]),
        lambda m: m.topics[0].partitions[victim_partition].leader_id == -1,
    )
    assert offline.topics[0].partitions[victim_partition].error_code == 5  # LEADER_NOT_AVAILABLE
    cluster.start_broker(victim)
    new_port = cluster.brokers[victim].port
    await _until(
        lambda: _metadata(survivor, ["durable"]),
        lambda m: m.topics[0].partitions[victim_partition].leader_id == victim,
    )
    got = await _until(
        lambda: _fetch(new_port, "durable", victim_partition, 0),
        lambda f: f.error_code == 0,
    )
    assert [v for _, v in _values(got.records)] == [b"v%d" % i for i in range(10)]
    more = await _produce(new_port, "durable", victim_partition, [b"after"])
    assert (more.error_code, more.base_offset) == (0, 10)


async def test_controller_killed_another_takes_over(cluster: Cluster) -> None:
    ports = await _ready_cluster(cluster)
    meta = await _metadata(ports[1])
    controller = meta.controller_id
    cluster.brokers[controller].kill()
    survivor = next(p for b, p in ports.items() if b != controller)
    after = await _until(
        lambda: _metadata(survivor),
        lambda m: (
            m.controller_id not in (-1, controller)
            and controller not in {b.node_id for b in m.brokers}
        ),
    )
    assert after.controller_id in set(ports) - {controller}
    result = await _create(survivor, "after-failover", 4)
    assert result.error_code == 0
    leaders = await _leaders(survivor, "after-failover")
    assert set(leaders.values()) <= set(ports) - {controller}
    for partition, leader in leaders.items():
        produced = await _produce(ports[leader], "after-failover", partition, [b"x"])
        assert produced.error_code == 0


def _picture(meta: MetadataResponse) -> dict[str, Any]:
    """A broker's Metadata answer as what a client would act on, ordered."""
    return {
        "brokers": sorted(b.node_id for b in meta.brokers),
        "controller": meta.controller_id,
        "topics": {
            t.name: {
                p.partition_index: (
                    p.leader_id,
                    p.leader_epoch,
                    p.replica_nodes,
                    sorted(p.isr_nodes),
                    p.offline_replicas,
                )
                for p in t.partitions
            }
            for t in meta.topics
        },
    }


async def test_every_broker_keeps_the_same_picture_through_changes(cluster: Cluster) -> None:
    """The controller sends each change alone (incremental UpdateMetadata) and the whole
    picture only to a broker joining: through topics created and deleted, a broker
    killed and restarted, and followers rejoining, every broker answers Metadata alike."""
    ports = await _ready_cluster(cluster)
    port = ports[1]

    async def create(name: str, partitions: int) -> None:
        topic = CreatableTopic(name=name, num_partitions=partitions, replication_factor=3)
        request = CreateTopicsRequest(topics=[topic])
        assert (await _request(port, ApiKey.CREATE_TOPICS, request)).topics[0].error_code == 0

    async def pictures(live: list[int]) -> list[dict[str, Any]]:
        return [_picture(await _metadata(ports[b])) for b in live]

    def alike(got: list[dict[str, Any]]) -> bool:
        return all(p == got[0] for p in got)

    for name, partitions in (("a", 3), ("b", 6), ("c", 2)):
        await create(name, partitions)
    response = await _request(port, ApiKey.DELETE_TOPICS, DeleteTopicsRequest(topic_names=["c"]))
    assert response.responses[0].error_code == 0
    settled = await _until(
        lambda: pictures([1, 2, 3]),
        lambda got: alike(got) and set(got[0]["topics"]) == {"a", "b"},
    )
    controller = settled[0]["controller"]
    victim = next(b for b in (1, 2, 3) if b != controller)
    # the name is free again once the deletion ended (a broker refuses to auto-create a
    # topic it still sees being deleted): the end of a deletion reached the victim too
    auto = MetadataRequest(topics=["c"], allow_auto_topic_creation=True)
    await _until(
        lambda: _request(ports[victim], ApiKey.METADATA, auto),
        lambda m: m.topics[0].error_code != UnknownTopicOrPartitionError.code,
    )
    await _until(
        lambda: pictures([1, 2, 3]),
        lambda got: alike(got) and set(got[0]["topics"]) == {"a", "b", "c"},
    )
    assert any(s[0] == victim for ps in settled[0]["topics"].values() for s in ps.values())

    cluster.brokers[victim].kill()
    live = [b for b in (1, 2, 3) if b != victim]
    without = await _until(
        lambda: pictures(live),
        lambda got: (
            alike(got)
            and victim not in got[0]["brokers"]
            and all(s[0] != victim for ps in got[0]["topics"].values() for s in ps.values())
        ),
    )
    for name in ("a", "b"):  # three replicas each ("c" has the default replication)
        for leader, _, replicas, isr, offline in without[0]["topics"][name].values():
            assert leader in live and victim not in isr
            assert offline == [victim] and victim in replicas

    cluster.start_broker(victim)
    ports[victim] = cluster.brokers[victim].port
    whole = await _until(
        lambda: pictures([1, 2, 3]),
        lambda got: (
            alike(got)
            and got[0]["brokers"] == [1, 2, 3]
            and all(
                s[4] == [] and s[3] == sorted(s[2])
                for ps in got[0]["topics"].values()
                for s in ps.values()
            )
        ),
    )
    assert set(whole[0]["topics"]) == {"a", "b", "c"}
    assert [len(whole[0]["topics"][t]) for t in ("a", "b")] == [3, 6]


async def test_a_producer_forgets_a_topic_idle_for_metadata_max_idle_ms(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1)  # auto.create.topics.enable: on, Kafka's default
    bootstrap = cluster.bootstrap
    async with (
        Admin(bootstrap_servers=bootstrap) as admin,
        Producer(bootstrap_servers=bootstrap, metadata_max_idle_ms=5_000) as producer,
    ):
        await admin.create_topics([NewTopic("used", 1, 1), NewTopic("idle", 1, 1)])
        for topic in ("used", "idle"):
            await producer.send_and_wait(topic, b"x")
        await admin.delete_topics(["used", "idle"])
        assert not {"used", "idle"} & set(await admin.list_topics())
        producer._topic_used["idle"] -= 6  # as if last sent to 6 s ago (5 s is the limit)
        await producer._cluster.refresh()
        # a topic still in use is asked for, and the broker makes it again (as Kafka's
        # does); the idle one is no longer asked for, so it stays deleted
        await _until(admin.list_topics, lambda topics: "used" in topics)
        assert "idle" not in await admin.list_topics()
        assert producer._cluster.topics == {"used"}
        assert (await producer.send_and_wait("idle", b"again")).offset == 0  # asked again
