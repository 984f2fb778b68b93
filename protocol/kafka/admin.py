"""Kafka's admin APIs on a Kafka-protocol listener: topics, partitions, records, configs
and groups, as Kafka's AdminClient and tools (kafka-topics, kafka-configs,
kafka-consumer-groups, kafka-delete-records) send them. Specs as in
:mod:`protocol.kafka.messages`."""

from __future__ import annotations

from typing import Any

from protocol.apis import (
    AlterableConfig,
    AlterConfigsRequest,
    AlterConfigsResource,
    AlterPartitionReassignmentsRequest,
    AlterReplicaLogDir,
    AlterReplicaLogDirsRequest,
    AlterReplicaLogDirTopic,
    ApiKey,
    CreatableReplicaAssignment,
    CreatableTopic,
    CreatableTopicConfig,
    CreatePartitionsAssignment,
    CreatePartitionsRequest,
    CreatePartitionsTopic,
    CreateTopicsRequest,
    DeleteGroupsRequest,
    DeleteRecordsPartition,
    DeleteRecordsRequest,
    DeleteRecordsTopic,
    DeleteTopicsRequest,
    DescribableLogDirTopic,
    DescribeConfigsRequest,
    DescribeConfigsResource,
    DescribeGroupsRequest,
    DescribeLogDirsRequest,
    DescribeProducersRequest,
    DescribeProducersTopic,
    DescribeTransactionsRequest,
    ElectLeadersRequest,
    ElectLeadersTopicPartitions,
    IncrementalAlterableConfig,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResource,
    ListGroupsRequest,
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsTopics,
    ListTransactionsRequest,
    OffsetDeleteRequest,
    OffsetDeleteRequestPartition,
    OffsetDeleteRequestTopic,
    ReassignablePartition,
    ReassignableTopic,
)
from protocol.kafka.codec import (
    BOOL,
    BYTES,
    INT8,
    INT16,
    INT32,
    INT64,
    NULLABLE_STRING,
    STRING,
    UUID,
    ZERO_UUID,
    Array,
    Struct,
)
from protocol.kafka.spec import (
    NO_OPERATIONS,
    F,
    KafkaApi,
    name_or_id,
    partition_errors,
    per_partition,
    per_topic,
    per_topic_or_id,
    split_names_and_ids,
)

__all__ = ["ADMIN_APIS"]

# --- CreateTopics (19), DeleteTopics (20), CreatePartitions (37), DeleteRecords (21) --

_CREATE_TOPICS_REQUEST = Struct(
    [
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F("num_partitions", INT32),
                        F("replication_factor", INT16),
                        F(
                            "assignments",
                            Array(
                                Struct(
                                    [F("partition_index", INT32), F("broker_ids", Array(INT32))],
                                    CreatableReplicaAssignment,
                                )
                            ),
                        ),
                        F(
                            "configs",
                            Array(
                                Struct(
                                    [F("name", STRING), F("value", NULLABLE_STRING)],
                                    CreatableTopicConfig,
                                )
                            ),
                        ),
                    ],
                    CreatableTopic,
                )
            ),
        ),
        F("timeout_ms", INT32),
        F("validate_only", BOOL, 1),
    ],
    CreateTopicsRequest,
)
_CREATE_TOPICS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 2),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F("topic_id", UUID, 7),
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING, 1),
                        F("topic_config_error_code", INT16, 5, attr=None, tag=0),
                        F("num_partitions", INT32, 5, default=-1),
                        F("replication_factor", INT16, 5, default=-1),
                        # null: not described here (Kafka's when not authorised to)
                        F(
                            "configs",
                            Array(
                                Struct(
                                    [
                                        F("name", STRING),
                                        F("value", NULLABLE_STRING),
                                        F("read_only", BOOL),
                                        F("config_source", INT8, default=-1),
                                        F("is_sensitive", BOOL),
                                    ]
                                ),
                                nullable=True,
                            ),
                            5,
                            attr=None,
                        ),
                    ]
                )
            ),
        ),
    ]
)


def _id_or_name(name: str | None = None, topic_id: bytes = ZERO_UUID) -> str | bytes:
    """A topic to delete, by its id where it is given (Kafka refuses a request naming a
    topic by both with INVALID_REQUEST; here the id counts, so a topic made again under
    the name is never the one deleted), else by its name."""
    return name_or_id(None if topic_id != ZERO_UUID else name, topic_id)


_DELETE_TOPICS_REQUEST = Struct(
    [
        F(
            "topics",
            Array(Struct([F("name", NULLABLE_STRING), F("topic_id", UUID)], _id_or_name)),
            6,
            attr="topic_ids",  # both names and ids: _delete_topics_v6 sets them apart
        ),
        F("topic_names", Array(STRING), 0, 5),
        F("timeout_ms", INT32),
    ],
    DeleteTopicsRequest,
)


def _delete_topics_v6(
    request: DeleteTopicsRequest, version: int, client_id: str | None
) -> DeleteTopicsRequest:
    if version >= 6:
        named, request.topic_ids = split_names_and_ids(list(request.topic_ids))
        request.topic_names = named
    return request


_DELETE_TOPICS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 1),
        F(
            "responses",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F("topic_id", UUID, 6),
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING, 5),
                    ]
                )
            ),
        ),
    ]
)

_CREATE_PARTITIONS_REQUEST = Struct(
    [
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F("count", INT32),
                        F(
                            "assignments",
                            Array(
                                Struct([F("broker_ids", Array(INT32))], CreatePartitionsAssignment),
                                nullable=True,
                            ),
                        ),
                    ],
                    CreatePartitionsTopic,
                )
            ),
        ),
        F("timeout_ms", INT32),
        F("validate_only", BOOL),
    ],
    CreatePartitionsRequest,
)
_CREATE_PARTITIONS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "results",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                    ]
                )
            ),
        ),
    ]
)

_DELETE_RECORDS_REQUEST = Struct(
    [
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [F("partition_index", INT32), F("offset", INT64)],
                                    DeleteRecordsPartition,
                                )
                            ),
                        ),
                    ],
                    DeleteRecordsTopic,
                )
            ),
        ),
        F("timeout_ms", INT32),
    ],
    DeleteRecordsRequest,
)
_DELETE_RECORDS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("low_watermark", INT64, default=-1),
                                        F("error_code", INT16),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
        ),
    ]
)

# --- DescribeConfigs (32), AlterConfigs (33), IncrementalAlterConfigs (44) -------------

_CONFIG_TYPES = {
    "boolean": 1,
    "string": 2,
    "int": 3,
    "short": 4,
    "long": 5,
    "double": 6,
    "list": 7,
    "class": 8,
    "password": 9,
}
"""Kafka's ConfigType (DescribeConfigs v3+), from Headwater's type names; 0: unknown."""


def _config_type(name: Any) -> int:
    return _CONFIG_TYPES.get(str(name).lower(), 0)


_DESCRIBE_CONFIGS_REQUEST = Struct(
    [
        F(
            "resources",
            Array(
                Struct(
                    [
                        F("resource_type", INT8),
                        F("resource_name", STRING),
                        F("configuration_keys", Array(STRING, nullable=True)),
                    ],
                    DescribeConfigsResource,
                )
            ),
        ),
        F("include_synonyms", BOOL, 1),
        F("include_documentation", BOOL, 3),
    ],
    DescribeConfigsRequest,
)
_DESCRIBE_CONFIGS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "results",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                        F("resource_type", INT8),
                        F("resource_name", STRING),
                        F(
                            "configs",
                            Array(
                                Struct(
                                    [
                                        F("name", STRING),
                                        F("value", NULLABLE_STRING),
                                        F("read_only", BOOL),
                                        F("config_source", INT8, 1, default=-1),
                                        F("is_sensitive", BOOL),
                                        F(
                                            "synonyms",
                                            Array(
                                                Struct(
                                                    [
                                                        F("name", STRING),
                                                        F("value", NULLABLE_STRING),
                                                        F("source", INT8),
                                                    ]
                                                )
                                            ),
                                            1,
                                        ),
                                        F("config_type", INT8, 3, convert=_config_type),
                                        F("documentation", NULLABLE_STRING, 3),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
        ),
    ]
)

_ALTER_CONFIGS_REQUEST = Struct(
    [
        F(
            "resources",
            Array(
                Struct(
                    [
                        F("resource_type", INT8),
                        F("resource_name", STRING),
                        F(
                            "configs",
                            Array(
                                Struct(
                                    [F("name", STRING), F("value", NULLABLE_STRING)],
                                    AlterableConfig,
                                )
                            ),
                        ),
                    ],
                    AlterConfigsResource,
                )
            ),
        ),
        F("validate_only", BOOL),
    ],
    AlterConfigsRequest,
)
_ALTER_CONFIGS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "responses",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                        F("resource_type", INT8),
                        F("resource_name", STRING),
                    ]
                )
            ),
        ),
    ]
)

_INCREMENTAL_ALTER_CONFIGS_REQUEST = Struct(
    [
        F(
            "resources",
            Array(
                Struct(
                    [
                        F("resource_type", INT8),
                        F("resource_name", STRING),
                        F(
                            "configs",
                            Array(
                                Struct(
                                    [
                                        F("name", STRING),
                                        F("config_operation", INT8),
                                        F("value", NULLABLE_STRING),
                                    ],
                                    IncrementalAlterableConfig,
                                )
                            ),
                        ),
                    ],
                    IncrementalAlterConfigsResource,
                )
            ),
        ),
        F("validate_only", BOOL),
    ],
    IncrementalAlterConfigsRequest,
)

# --- ListGroups (16), DescribeGroups (15), DeleteGroups (42), OffsetDelete (47) -------

_LIST_GROUPS_REQUEST = Struct(
    [F("states_filter", Array(STRING), 4), F("types_filter", Array(STRING), 5)],
    ListGroupsRequest,
)
_LIST_GROUPS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 1),
        F("error_code", INT16),
        F(
            "groups",
            Array(
                Struct(
                    [
                        F("group_id", STRING),
                        F("protocol_type", STRING),
                        F("group_state", STRING, 4),
                        F("group_type", STRING, 5),
                    ]
                )
            ),
        ),
    ]
)

_DESCRIBE_GROUPS_REQUEST = Struct(
    [
        F("groups", Array(STRING)),
        F("include_authorized_operations", BOOL, 3, attr=None),
    ],
    DescribeGroupsRequest,
)


def _describe_groups(
    request: DescribeGroupsRequest, version: int, client_id: str | None
) -> DescribeGroupsRequest:
    request.missing_is_an_error = version >= 6  # (KIP-1043)
    return request


_DESCRIBE_GROUPS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 1),
        F(
            "groups",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING, 6),
                        F("group_id", STRING),
                        F("group_state", STRING),
                        F("protocol_type", STRING),
                        F("protocol_data", STRING),
                        F(
                            "members",
                            Array(
                                Struct(
                                    [
                                        F("member_id", STRING),
                                        F("group_instance_id", NULLABLE_STRING, 4),
                                        F("client_id", STRING),
                                        F("client_host", STRING),
                                        F("member_metadata", BYTES),
                                        F("member_assignment", BYTES),
                                    ]
                                )
                            ),
                        ),
                        F(
                            "authorized_operations",
                            INT32,
                            3,
                            attr=None,
                            default=NO_OPERATIONS,
                        ),
                    ]
                )
            ),
        ),
    ]
)

_DELETE_GROUPS_REQUEST = Struct([F("groups_names", Array(STRING))], DeleteGroupsRequest)
_DELETE_GROUPS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("results", Array(Struct([F("group_id", STRING), F("error_code", INT16)]))),
    ]
)

_OFFSET_DELETE_REQUEST = Struct(
    [
        F("group_id", STRING),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct([F("partition_index", INT32)], OffsetDeleteRequestPartition)
                            ),
                        ),
                    ],
                    OffsetDeleteRequestTopic,
                )
            ),
        ),
    ],
    OffsetDeleteRequest,
)
_OFFSET_DELETE_RESPONSE = Struct(
    [
        F("error_code", INT16),
        F("throttle_time_ms", INT32),
        F("topics", partition_errors()),
    ]
)


# --- ElectLeaders (43), AlterPartitionReassignments (45), ListPartitionReassignments
# (46), DescribeLogDirs (35) -----------------------------------------------------------

_ELECT_LEADERS_REQUEST = Struct(
    [
        F("election_type", INT8, 1),
        F(
            "topic_partitions",
            Array(
                Struct(
                    [F("topic", STRING), F("partitions", Array(INT32))],
                    ElectLeadersTopicPartitions,
                ),
                nullable=True,
            ),
        ),
        F("timeout_ms", INT32, default=60_000),
    ],
    ElectLeadersRequest,
)
_ELECT_LEADERS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16, 1),
        F(
            "replica_election_results",
            Array(
                Struct(
                    [
                        F("topic", STRING),
                        F(
                            "partition_result",
                            Array(
                                Struct(
                                    [
                                        F("partition_id", INT32),
                                        F("error_code", INT16),
                                        F("error_message", NULLABLE_STRING),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
        ),
    ]
)

_ALTER_REASSIGNMENTS_REQUEST = Struct(
    [
        F("timeout_ms", INT32, default=60_000),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("replicas", Array(INT32, nullable=True)),
                                    ],
                                    ReassignablePartition,
                                )
                            ),
                        ),
                    ],
                    ReassignableTopic,
                )
            ),
        ),
    ],
    AlterPartitionReassignmentsRequest,
)
_ALTER_REASSIGNMENTS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F(
            "responses",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("error_code", INT16),
                                        F("error_message", NULLABLE_STRING),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
        ),
    ]
)

_LIST_REASSIGNMENTS_REQUEST = Struct(
    [
        F("timeout_ms", INT32, default=60_000),
        F(
            "topics",
            Array(
                Struct(
                    [F("name", STRING), F("partition_indexes", Array(INT32))],
                    ListPartitionReassignmentsTopics,
                ),
                nullable=True,
            ),
        ),
    ],
    ListPartitionReassignmentsRequest,
)
_LIST_REASSIGNMENTS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("replicas", Array(INT32)),
                                        F("adding_replicas", Array(INT32)),
                                        F("removing_replicas", Array(INT32)),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
        ),
    ]
)

# --- AlterReplicaLogDirs (34) -----------------------------------------------------------

_ALTER_REPLICA_LOG_DIRS_REQUEST = Struct(
    [
        F(
            "dirs",
            Array(
                Struct(
                    [
                        F("path", STRING),
                        F(
                            "topics",
                            Array(
                                Struct(
                                    [F("name", STRING), F("partitions", Array(INT32))],
                                    AlterReplicaLogDirTopic,
                                )
                            ),
                        ),
                    ],
                    AlterReplicaLogDir,
                )
            ),
        )
    ],
    AlterReplicaLogDirsRequest,
)
_ALTER_REPLICA_LOG_DIRS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "results",
            Array(
                Struct(
                    [
                        F("topic_name", STRING),
                        F(
                            "partitions",
                            Array(Struct([F("partition_index", INT32), F("error_code", INT16)])),
                        ),
                    ]
                )
            ),
        ),
    ]
)


def _refuse_moves(request: Any, code: int, message: str | None) -> dict[str, Any]:
    """AlterReplicaLogDirs refused whole: the code for every partition of every dir."""
    return {
        "results": [
            {
                "topic_name": t.name,
                "partitions": [{"partition_index": p, "error_code": code} for p in t.partitions],
            }
            for d in request.dirs
            for t in d.topics
        ]
    }


_DESCRIBE_LOG_DIRS_REQUEST = Struct(
    [
        F(
            "topics",
            Array(
                Struct([F("topic", STRING), F("partitions", Array(INT32))], DescribableLogDirTopic),
                nullable=True,
            ),
        )
    ],
    DescribeLogDirsRequest,
)
_DESCRIBE_LOG_DIRS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16, 3),
        F(
            "results",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("log_dir", STRING),
                        F(
                            "topics",
                            Array(
                                Struct(
                                    [
                                        F("name", STRING),
                                        F(
                                            "partitions",
                                            Array(
                                                Struct(
                                                    [
                                                        F("partition_index", INT32),
                                                        F("partition_size", INT64),
                                                        F("offset_lag", INT64),
                                                        F("is_future_key", BOOL),
                                                    ]
                                                )
                                            ),
                                        ),
                                    ]
                                )
                            ),
                        ),
                        F("total_bytes", INT64, 4, default=-1),
                        F("usable_bytes", INT64, 4, default=-1),
                    ]
                )
            ),
        ),
    ]
)

# --- DescribeProducers (61), DescribeTransactions (65), ListTransactions (66) ---------

_DESCRIBE_PRODUCERS_REQUEST = Struct(
    [
        F(
            "topics",
            Array(
                Struct(
                    [F("name", STRING), F("partition_indexes", Array(INT32))],
                    DescribeProducersTopic,
                )
            ),
        )
    ],
    DescribeProducersRequest,
)
_DESCRIBE_PRODUCERS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("error_code", INT16),
                                        F("error_message", NULLABLE_STRING),
                                        F(
                                            "active_producers",
                                            Array(
                                                Struct(
                                                    [
                                                        F("producer_id", INT64),
                                                        F("producer_epoch", INT32),
                                                        F("last_sequence", INT32, default=-1),
                                                        F("last_timestamp", INT64, default=-1),
                                                        F("coordinator_epoch", INT32),
                                                        F(
                                                            "current_txn_start_offset",
                                                            INT64,
                                                            default=-1,
                                                        ),
                                                    ]
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
        ),
    ]
)

_DESCRIBE_TRANSACTIONS_REQUEST = Struct(
    [F("transactional_ids", Array(STRING))], DescribeTransactionsRequest
)
_DESCRIBE_TRANSACTIONS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "transaction_states",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("transactional_id", STRING),
                        F("transaction_state", STRING),
                        F("transaction_timeout_ms", INT32),
                        F("transaction_start_time_ms", INT64),
                        F("producer_id", INT64),
                        F("producer_epoch", INT16),
                        F(
                            "topics",
                            Array(Struct([F("topic", STRING), F("partitions", Array(INT32))])),
                        ),
                    ]
                )
            ),
        ),
    ]
)

_LIST_TRANSACTIONS_REQUEST = Struct(
    [
        F("state_filters", Array(STRING)),
        F("producer_id_filters", Array(INT64)),
        F("duration_filter", INT64, 1, default=-1),
    ],
    ListTransactionsRequest,
)
_LIST_TRANSACTIONS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("unknown_state_filters", Array(STRING)),
        F(
            "transaction_states",
            Array(
                Struct(
                    [
                        F("transactional_id", STRING),
                        F("producer_id", INT64),
                        F("transaction_state", STRING),
                    ]
                )
            ),
        ),
    ]
)

_PER_RESOURCE = ("resource_type", "resource_name")

ADMIN_APIS = (
    KafkaApi(
        ApiKey.CREATE_TOPICS,
        2,
        7,
        5,
        _CREATE_TOPICS_REQUEST,
        _CREATE_TOPICS_RESPONSE,
        strict_quota_from=6,
        refuse=per_topic("topics", "topics"),
    ),
    KafkaApi(
        ApiKey.DELETE_TOPICS,
        1,
        6,
        4,
        _DELETE_TOPICS_REQUEST,
        _DELETE_TOPICS_RESPONSE,
        _delete_topics_v6,
        strict_quota_from=5,
        refuse=per_topic_or_id("topic_names", "topic_ids", "responses"),
    ),
    KafkaApi(
        ApiKey.CREATE_PARTITIONS,
        0,
        3,
        2,
        _CREATE_PARTITIONS_REQUEST,
        _CREATE_PARTITIONS_RESPONSE,
        strict_quota_from=3,
        refuse=per_topic("topics", "results"),
    ),
    KafkaApi(
        ApiKey.DELETE_RECORDS,
        0,
        2,
        2,
        _DELETE_RECORDS_REQUEST,
        _DELETE_RECORDS_RESPONSE,
        refuse=per_partition("partition_index", "partition_index"),
    ),
    KafkaApi(
        ApiKey.DESCRIBE_CONFIGS,
        1,
        4,
        4,
        _DESCRIBE_CONFIGS_REQUEST,
        _DESCRIBE_CONFIGS_RESPONSE,
        refuse=per_topic("resources", "results", *_PER_RESOURCE),
    ),
    KafkaApi(
        ApiKey.ALTER_CONFIGS,
        0,
        2,
        2,
        _ALTER_CONFIGS_REQUEST,
        _ALTER_CONFIGS_RESPONSE,
        refuse=per_topic("resources", "responses", *_PER_RESOURCE),
    ),
    KafkaApi(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        0,
        1,
        1,
        _INCREMENTAL_ALTER_CONFIGS_REQUEST,
        _ALTER_CONFIGS_RESPONSE,
        refuse=per_topic("resources", "responses", *_PER_RESOURCE),
    ),
    KafkaApi(ApiKey.LIST_GROUPS, 0, 5, 3, _LIST_GROUPS_REQUEST, _LIST_GROUPS_RESPONSE),
    KafkaApi(
        ApiKey.DESCRIBE_GROUPS,
        0,
        6,
        5,
        _DESCRIBE_GROUPS_REQUEST,
        _DESCRIBE_GROUPS_RESPONSE,
        _describe_groups,
        refuse=per_topic("groups", "groups", "group_id"),
    ),
    KafkaApi(
        ApiKey.DELETE_GROUPS,
        0,
        2,
        2,
        _DELETE_GROUPS_REQUEST,
        _DELETE_GROUPS_RESPONSE,
        refuse=per_topic("groups_names", "results", "group_id"),
    ),
    KafkaApi(ApiKey.OFFSET_DELETE, 0, 0, 9, _OFFSET_DELETE_REQUEST, _OFFSET_DELETE_RESPONSE),
    KafkaApi(
        ApiKey.ELECT_LEADERS,
        0,
        2,
        2,
        _ELECT_LEADERS_REQUEST,
        _ELECT_LEADERS_RESPONSE,
        refuse=per_partition(
            "",
            "partition_id",
            topics="topic_partitions",
            topic="topic",
            listed="replica_election_results",
            partitions="partition_result",
        ),
    ),
    KafkaApi(
        ApiKey.ALTER_PARTITION_REASSIGNMENTS,
        0,
        0,
        0,
        _ALTER_REASSIGNMENTS_REQUEST,
        _ALTER_REASSIGNMENTS_RESPONSE,
    ),
    KafkaApi(
        ApiKey.LIST_PARTITION_REASSIGNMENTS,
        0,
        0,
        0,
        _LIST_REASSIGNMENTS_REQUEST,
        _LIST_REASSIGNMENTS_RESPONSE,
    ),
    KafkaApi(
        ApiKey.DESCRIBE_LOG_DIRS, 1, 4, 2, _DESCRIBE_LOG_DIRS_REQUEST, _DESCRIBE_LOG_DIRS_RESPONSE
    ),
    KafkaApi(
        ApiKey.ALTER_REPLICA_LOG_DIRS,
        1,
        2,
        2,
        _ALTER_REPLICA_LOG_DIRS_REQUEST,
        _ALTER_REPLICA_LOG_DIRS_RESPONSE,
        refuse=_refuse_moves,
    ),
    KafkaApi(
        ApiKey.DESCRIBE_PRODUCERS,
        0,
        0,
        0,
        _DESCRIBE_PRODUCERS_REQUEST,
        _DESCRIBE_PRODUCERS_RESPONSE,
        refuse=per_partition("", "partition_index", asked="partition_indexes"),
    ),
    KafkaApi(
        ApiKey.DESCRIBE_TRANSACTIONS,
        0,
        0,
        0,
        _DESCRIBE_TRANSACTIONS_REQUEST,
        _DESCRIBE_TRANSACTIONS_RESPONSE,
        refuse=per_topic("transactional_ids", "transaction_states", "transactional_id"),
    ),
    KafkaApi(
        ApiKey.LIST_TRANSACTIONS, 0, 1, 0, _LIST_TRANSACTIONS_REQUEST, _LIST_TRANSACTIONS_RESPONSE
    ),
)
"""The admin APIs a Kafka-protocol listener serves (added to ``KAFKA_APIS``)."""
