"""Kafka's new consumer group protocol (KIP-848) on a Kafka-protocol listener:
ConsumerGroupHeartbeat v0-1, as Kafka 4.0 serves it (librdkafka's
``group.protocol=consumer`` sends v1), and ConsumerGroupDescribe v0-1 (librdkafka's
AdminClient asks it first). Specs as in :mod:`protocol.kafka.messages`.

Kafka's client library (kafka-python) ships no message spec of these APIs, so the unit
test that holds the specs to Kafka's JSON does not cover them; tests/unit/
test_kafka_consumer_groups.py decodes and encodes them byte for byte instead.
"""

from __future__ import annotations

from typing import Any

from protocol.apis import (
    ApiKey,
    ConsumerGroupDescribeRequest,
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupTopicPartitions,
)
from protocol.kafka.codec import (
    BOOL,
    INT8,
    INT16,
    INT32,
    NULLABLE_STRING,
    STRING,
    UUID,
    Array,
    NullableStruct,
    Struct,
)
from protocol.kafka.spec import F, KafkaApi, per_topic

__all__ = [
    "CONSUMER_GROUP_APIS",
    "DESCRIBED_ASSIGNMENT",
    "HEARTBEAT_RESPONSE",
    "TOPIC_PARTITIONS",
]


def _with_client_id(request: Any, version: int, client_id: str | None) -> Any:
    request.client_id = client_id or ""  # (Kafka: from the request header)
    return request


TOPIC_PARTITIONS = Struct(
    [F("topic_id", UUID), F("partitions", Array(INT32))], ConsumerGroupTopicPartitions
)

_HEARTBEAT_REQUEST = Struct(
    [
        F("group_id", STRING),
        F("member_id", STRING),
        F("member_epoch", INT32),
        F("instance_id", NULLABLE_STRING),
        F("rack_id", NULLABLE_STRING),
        F("rebalance_timeout_ms", INT32),
        F("subscribed_topic_names", Array(STRING, nullable=True)),
        F("subscribed_topic_regex", NULLABLE_STRING, 1),
        F("server_assignor", NULLABLE_STRING),
        F("topic_partitions", Array(TOPIC_PARTITIONS, nullable=True)),
    ],
    ConsumerGroupHeartbeatRequest,
)
HEARTBEAT_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F("member_id", NULLABLE_STRING),
        F("member_epoch", INT32),
        F("heartbeat_interval_ms", INT32),
        F(
            "assignment",
            NullableStruct(Struct([F("topic_partitions", Array(Struct(TOPIC_PARTITIONS.fields)))])),
        ),
    ]
)

_DESCRIBE_REQUEST = Struct(
    [F("group_ids", Array(STRING)), F("include_authorized_operations", BOOL)],
    ConsumerGroupDescribeRequest,
)
DESCRIBED_ASSIGNMENT = Struct(
    [
        F(
            "topic_partitions",
            Array(
                Struct(
                    [F("topic_id", UUID), F("topic_name", STRING), F("partitions", Array(INT32))]
                )
            ),
        )
    ]
)
_DESCRIBE_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "groups",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                        F("group_id", STRING),
                        F("group_state", STRING),
                        F("group_epoch", INT32),
                        F("assignment_epoch", INT32),
                        F("assignor_name", STRING),
                        F(
                            "members",
                            Array(
                                Struct(
                                    [
                                        F("member_id", STRING),
                                        F("instance_id", NULLABLE_STRING),
                                        F("rack_id", NULLABLE_STRING),
                                        F("member_epoch", INT32),
                                        F("client_id", STRING),
                                        F("client_host", STRING),
                                        F("subscribed_topic_names", Array(STRING)),
                                        F("subscribed_topic_regex", NULLABLE_STRING),
                                        F("assignment", DESCRIBED_ASSIGNMENT),
                                        F("target_assignment", DESCRIBED_ASSIGNMENT),
                                        F("member_type", INT8, 1),
                                    ]
                                )
                            ),
                        ),
                        F("authorized_operations", INT32),
                    ]
                )
            ),
        ),
    ]
)


CONSUMER_GROUP_APIS = (
    KafkaApi(
        ApiKey.CONSUMER_GROUP_HEARTBEAT,
        0,
        1,
        0,
        _HEARTBEAT_REQUEST,
        HEARTBEAT_RESPONSE,
        finish=_with_client_id,
    ),
    KafkaApi(
        ApiKey.CONSUMER_GROUP_DESCRIBE,
        0,
        1,
        0,
        _DESCRIBE_REQUEST,
        _DESCRIBE_RESPONSE,
        refuse=per_topic("group_ids", "groups", "group_id"),
    ),
)
