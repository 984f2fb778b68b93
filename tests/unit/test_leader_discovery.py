"""Kafka's KIP-951 on a Kafka listener: a Fetch (v16+) or Produce (v10+) refused as not led
here names the leader this broker knows of, and where it is reached on the listener the
client came in on, so the client goes there without asking for metadata first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from broker.app import _name_leaders, _telling_leaders
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import (
    UPDATE_METADATA_FULL,
    FetchResponse,
    LeaderAndIsrPartitionState,
    LeaderIdAndEpoch,
    NodeEndpoint,
    ProducePartitionResponse,
    ProduceResponse,
    ProduceTopicResponse,
    UpdateMetadataBroker,
    UpdateMetadataEndpoint,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)
from protocol.errors import FencedLeaderEpochError, NotLeaderOrFollowerError
from tests.unit.test_fetch_v13 import X, _seen, _v13, leader  # noqa: F401 (the fixture)


def _broker(broker_id: int, port: int, rack: str | None = None) -> UpdateMetadataBroker:
    return UpdateMetadataBroker(
        id=broker_id,
        host="10.0.0.9",
        port=9000 + broker_id,
        rack=rack,
        endpoints=[
            UpdateMetadataEndpoint(listener="INTERNAL", host="10.0.0.9", port=9000 + broker_id),
            UpdateMetadataEndpoint(listener="KAFKA", host="kafka-2.example", port=port),
        ],
    )


def _led_by_2(state: Any) -> Any:
    """t-0's state, led by broker 2 in epoch 7 (an UpdateMetadata's or a LeaderAndIsr's)."""
    return state(
        topic_name="t",
        partition_index=0,
        controller_epoch=1,
        leader=2,
        leader_epoch=7,
        isr=[2],
        replicas=[1, 2],
    )


def _t_led_by_2(metadata: MetadataCache) -> None:
    metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_FULL,
            live_brokers=[_broker(1, 19092), _broker(2, 29092, "rack-b")],
            partition_states=[_led_by_2(UpdateMetadataPartitionState)],
            topic_ids={"t": X},
        )
    )


async def test_a_fetch_refused_as_not_led_here_names_the_leader_and_its_address(
    leader: tuple[ReplicaManager, MetadataCache, Any],  # noqa: F811
) -> None:
    manager, metadata, fetch = leader
    _t_led_by_2(metadata)
    await manager.become_leader_or_follower([_led_by_2(LeaderAndIsrPartitionState)])
    telling = _telling_leaders(fetch, metadata, "KAFKA", 16)
    answer = telling(SimpleNamespace(kafka_version=16), _v13(0, session=False))
    assert isinstance(answer, FetchResponse)
    assert _seen(answer) == [(X, 0, NotLeaderOrFollowerError.code, False)]
    [partition] = answer.topics[0].partitions
    assert partition.current_leader == LeaderIdAndEpoch(leader_id=2, leader_epoch=7)
    assert answer.node_endpoints == [
        NodeEndpoint(node_id=2, host="kafka-2.example", port=29092, rack="rack-b")
    ]
    older = telling(SimpleNamespace(kafka_version=15), _v13(0, session=False))
    assert older.topics[0].partitions[0].current_leader is None and not older.node_endpoints


def test_a_produce_answer_names_each_leader_once_and_only_for_such_errors() -> None:
    metadata = MetadataCache()
    _t_led_by_2(metadata)
    answer = ProduceResponse(
        topics=[
            ProduceTopicResponse(
                name="t",
                partitions=[
                    ProducePartitionResponse(index=0, error_code=FencedLeaderEpochError.code),
                    ProducePartitionResponse(index=1, error_code=NotLeaderOrFollowerError.code),
                ],
            ),
            ProduceTopicResponse(name="u", partitions=[ProducePartitionResponse(index=0)]),
        ]
    )
    _name_leaders(answer, metadata, "KAFKA")
    first, unknown = answer.topics[0].partitions
    assert first.current_leader == LeaderIdAndEpoch(leader_id=2, leader_epoch=7)
    assert unknown.current_leader is None  # a partition this broker knows no leader of
    assert answer.topics[1].partitions[0].current_leader is None  # no error: nothing said
    assert [e.node_id for e in answer.node_endpoints] == [2]
