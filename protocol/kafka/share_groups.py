"""Share groups (Kafka's KIP-932, "queues") on a Kafka-protocol listener: ShareGroupHeartbeat
v1, ShareGroupDescribe v1, ShareFetch v1 and ShareAcknowledge v1, the versions Kafka 4.1
made stable and librdkafka's ShareConsumer speaks (v0 was 4.0's early access, never
released as stable; v2 adds KIP-1222's lock renewal). Specs as in
:mod:`protocol.kafka.messages`.

kafka-python ships no spec of these; Kafka's own JSON specs of them are in
tests/kafka_messages, from which the unit tests check these field for field.
"""

from __future__ import annotations

from typing import Any

from protocol.apis import (
    AcknowledgementBatch,
    AcquiredRecords,
    ApiKey,
    ShareAcknowledgePartition,
    ShareAcknowledgeRequest,
    ShareAcknowledgeTopic,
    ShareFetchPartition,
    ShareFetchRequest,
    ShareFetchTopic,
    ShareForgottenTopic,
    ShareGroupDescribeRequest,
    ShareGroupHeartbeatRequest,
)
from protocol.kafka.codec import (
    BOOL,
    INT8,
    INT16,
    INT32,
    INT64,
    NULLABLE_STRING,
    RECORDS,
    STRING,
    UUID,
    Array,
    Struct,
)
from protocol.kafka.consumer_groups import DESCRIBED_ASSIGNMENT, HEARTBEAT_RESPONSE
from protocol.kafka.spec import CURRENT_LEADER, NODE_ENDPOINTS, F, KafkaApi, per_topic

__all__ = ["SHARE_GROUP_APIS"]


def _with_client_id(request: Any, version: int, client_id: str | None) -> Any:
    request.client_id = client_id or ""  # (Kafka: from the request header)
    return request


_HEARTBEAT_REQUEST = Struct(
    [
        F("group_id", STRING),
        F("member_id", STRING),
        F("member_epoch", INT32),
        F("rack_id", NULLABLE_STRING),
        F("subscribed_topic_names", Array(STRING, nullable=True)),
    ],
    ShareGroupHeartbeatRequest,
)
_DESCRIBE_REQUEST = Struct(
    [F("group_ids", Array(STRING)), F("include_authorized_operations", BOOL)],
    ShareGroupDescribeRequest,
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
                                        F("rack_id", NULLABLE_STRING),
                                        F("member_epoch", INT32),
                                        F("client_id", STRING),
                                        F("client_host", STRING),
                                        F("subscribed_topic_names", Array(STRING)),
                                        F("assignment", DESCRIBED_ASSIGNMENT),
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

_ACK_BATCH = Struct(
    [
        F("first_offset", INT64),
        F("last_offset", INT64),
        F("acknowledge_types", Array(INT8)),
    ],
    AcknowledgementBatch,
)
_FETCH_REQUEST = Struct(
    [
        F("group_id", NULLABLE_STRING),
        F("member_id", NULLABLE_STRING),
        F("share_session_epoch", INT32),
        F("max_wait_ms", INT32),
        F("min_bytes", INT32),
        F("max_bytes", INT32),
        F("max_records", INT32),
        F("batch_size", INT32),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("topic_id", UUID),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("acknowledgement_batches", Array(_ACK_BATCH)),
                                    ],
                                    ShareFetchPartition,
                                )
                            ),
                        ),
                    ],
                    ShareFetchTopic,
                )
            ),
        ),
        F(
            "forgotten_topics_data",
            Array(
                Struct(
                    [F("topic_id", UUID), F("partitions", Array(INT32))],
                    ShareForgottenTopic,
                )
            ),
        ),
    ],
    ShareFetchRequest,
)
_FETCH_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F("acquisition_lock_timeout_ms", INT32),
        F(
            "responses",
            Array(
                Struct(
                    [
                        F("topic_id", UUID),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("error_code", INT16),
                                        F("error_message", NULLABLE_STRING),
                                        F("acknowledge_error_code", INT16),
                                        F("acknowledge_error_message", NULLABLE_STRING),
                                        F("current_leader", CURRENT_LEADER),
                                        # v1: not nullable (an empty one for none)
                                        F("records", RECORDS, default=b""),
                                        F(
                                            "acquired_records",
                                            Array(
                                                Struct(
                                                    [
                                                        F("first_offset", INT64),
                                                        F("last_offset", INT64),
                                                        F("delivery_count", INT16),
                                                    ],
                                                    AcquiredRecords,
                                                )
                                            ),
                                        ),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
            attr="topics",
        ),
        F("node_endpoints", NODE_ENDPOINTS),
    ]
)

_ACKNOWLEDGE_REQUEST = Struct(
    [
        F("group_id", NULLABLE_STRING),
        F("member_id", NULLABLE_STRING),
        F("share_session_epoch", INT32),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("topic_id", UUID),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("acknowledgement_batches", Array(_ACK_BATCH)),
                                    ],
                                    ShareAcknowledgePartition,
                                )
                            ),
                        ),
                    ],
                    ShareAcknowledgeTopic,
                )
            ),
        ),
    ],
    ShareAcknowledgeRequest,
)
_ACKNOWLEDGE_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F(
            "responses",
            Array(
                Struct(
                    [
                        F("topic_id", UUID),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("error_code", INT16),
                                        F("error_message", NULLABLE_STRING),
                                        F("current_leader", CURRENT_LEADER),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
            attr="topics",
        ),
        F("node_endpoints", NODE_ENDPOINTS),
    ]
)


SHARE_GROUP_APIS = (
    KafkaApi(
        ApiKey.SHARE_GROUP_HEARTBEAT,
        1,
        1,
        1,
        _HEARTBEAT_REQUEST,
        HEARTBEAT_RESPONSE,  # (Kafka's is ConsumerGroupHeartbeat's, field for field)
        finish=_with_client_id,
    ),
    KafkaApi(
        ApiKey.SHARE_GROUP_DESCRIBE,
        1,
        1,
        1,
        _DESCRIBE_REQUEST,
        _DESCRIBE_RESPONSE,
        refuse=per_topic("group_ids", "groups", "group_id"),
    ),
    KafkaApi(ApiKey.SHARE_FETCH, 1, 1, 0, _FETCH_REQUEST, _FETCH_RESPONSE),
    KafkaApi(ApiKey.SHARE_ACKNOWLEDGE, 1, 1, 0, _ACKNOWLEDGE_REQUEST, _ACKNOWLEDGE_RESPONSE),
)
