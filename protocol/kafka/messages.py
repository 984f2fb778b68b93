"""The APIs a Kafka-protocol listener serves: Kafka's message specs, mapped onto Headwater's.

Each :class:`KafkaApi` is one API key with the version range Headwater speaks in Kafka's
encoding, the first flexible version, and two :class:`~protocol.kafka.codec.Struct` specs
written from Kafka's JSON message specs (``clients/src/main/resources/common/message``),
field for field and in order. A field whose Headwater name differs says so (``attr=``);
one Headwater has no use for is read and dropped (``attr=None``) and written as its
default. Requests decode into the dataclasses of :mod:`protocol.apis`, so the broker's
handlers serve both listeners unchanged, and their responses encode from them.

The version ranges start where Kafka 4.0's brokers start (KIP-896: Produce v3, Fetch v4,
ListOffsets v1, Metadata v0 is gone too): record batches are RecordBatch v2 only, which
is what Headwater stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from protocol.apis import (
    AbortedTransaction,
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnTopic,
    ApiKey,
    Coordinator,
    DivergingEpoch,
    EndTxnRequest,
    FetchForgottenTopic,
    FetchPartition,
    FetchRequest,
    FetchTopic,
    FindCoordinatorRequest,
    HeartbeatRequest,
    InitProducerIdRequest,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    LeaveGroupMember,
    LeaveGroupRequest,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
    MetadataRequest,
    MetadataResponse,
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetFetchRequest,
    OffsetFetchRequestGroup,
    OffsetFetchRequestTopic,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderPartition,
    OffsetForLeaderTopic,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
    SaslAuthenticateRequest,
    SaslHandshakeRequest,
    SyncGroupRequest,
    SyncGroupRequestAssignment,
    TxnOffsetCommitRequest,
)
from protocol.errors import ApiError, MismatchedEndpointTypeError, UnsupportedEndpointTypeError
from protocol.kafka.admin import ADMIN_APIS
from protocol.kafka.codec import (
    BOOL,
    BYTES,
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
from protocol.kafka.consumer_groups import CONSUMER_GROUP_APIS
from protocol.kafka.security import SECURITY_APIS
from protocol.kafka.share_groups import SHARE_GROUP_APIS
from protocol.kafka.spec import (
    CURRENT_LEADER,
    NO_OPERATIONS,
    NODE_ENDPOINTS,
    F,
    KafkaApi,
    name_or_id,
    partition_errors,
    per_item,
    per_partition,
    per_topic_or_id,
    split_names_and_ids,
)

__all__ = ["KAFKA_APIS", "KafkaApi"]

# --- ApiVersions (18): answered by the listener itself (protocol.kafka.wire) --------------

_API_VERSIONS_REQUEST = Struct(
    [
        F("client_software_name", STRING, 3),
        F("client_software_version", STRING, 3),
    ]
)
_API_VERSION = Struct([F("api_key", INT16), F("min_version", INT16), F("max_version", INT16)])
_API_VERSIONS_RESPONSE = Struct(
    [
        F("error_code", INT16),
        F("api_keys", Array(_API_VERSION)),
        F("throttle_time_ms", INT32, 1),
    ]
)

# --- Metadata (3) ----------------------------------------------------------------------


_METADATA_REQUEST = Struct(
    [
        F(
            "topics",
            Array(
                Struct(
                    [F("topic_id", UUID, 10), F("name", NULLABLE_STRING)],
                    name_or_id,
                ),
                nullable=True,
            ),
        ),
        F("allow_auto_topic_creation", BOOL, 4, default=True),
        F("include_cluster_authorized_operations", BOOL, 8, 10, attr=None),
        F("include_topic_authorized_operations", BOOL, 8, attr=None),
    ],
    MetadataRequest,
)


def _metadata_v3(request: MetadataRequest, version: int, client_id: str | None) -> MetadataRequest:
    if version < 4:
        request.allow_auto_topic_creation = True  # Kafka's rule before the field existed
    if request.topics is not None:
        request.topics, request.topic_ids = split_names_and_ids(list(request.topics))
    return request


_METADATA_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 3),
        F(
            "brokers",
            Array(
                Struct(
                    [
                        F("node_id", INT32),
                        F("host", STRING),
                        F("port", INT32),
                        F("rack", NULLABLE_STRING, 1),
                    ]
                )
            ),
        ),
        F("cluster_id", NULLABLE_STRING, 2),
        F("controller_id", INT32, 1, default=-1),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("name", STRING),
                        F("topic_id", UUID, 10),
                        F("is_internal", BOOL, 1),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("error_code", INT16),
                                        F("partition_index", INT32),
                                        F("leader_id", INT32),
                                        F("leader_epoch", INT32, 7, default=-1),
                                        F("replica_nodes", Array(INT32)),
                                        F("isr_nodes", Array(INT32)),
                                        F("offline_replicas", Array(INT32), 5),
                                    ]
                                )
                            ),
                        ),
                        F(
                            "topic_authorized_operations",
                            INT32,
                            8,
                            attr=None,
                            default=NO_OPERATIONS,
                        ),
                    ]
                )
            ),
        ),
        F("cluster_authorized_operations", INT32, 8, 10, attr=None, default=NO_OPERATIONS),
        F("error_code", INT16, 13),  # (KIP-1102's REBOOTSTRAP_REQUIRED: never said here)
    ]
)

# --- DescribeCluster (60, KIP-700): Metadata's brokers, cluster id and controller ----


@dataclass(slots=True, kw_only=True)
class _DescribeCluster(MetadataRequest):
    """A DescribeCluster, served as a Metadata for no topic."""

    endpoint_type: int = 1


def _describe_cluster(endpoint_type: int = 1) -> _DescribeCluster:
    return _DescribeCluster(topics=[], allow_auto_topic_creation=False, endpoint_type=endpoint_type)


def _cluster_described(response: Any, request: Any) -> Any:
    if not isinstance(response, MetadataResponse):
        return response  # a refusal: already Kafka's answer
    if isinstance(request, _DescribeCluster) and request.endpoint_type != _BROKERS:
        # Kafka's: a broker answers for the brokers (1), a KRaft controller for itself (2)
        error: ApiError = (
            MismatchedEndpointTypeError(
                "this is a broker: the controllers' endpoints (type 2) are not served here"
            )
            if request.endpoint_type == _CONTROLLERS
            else UnsupportedEndpointTypeError(
                f"endpoint type {request.endpoint_type} is neither brokers (1) nor controllers (2)"
            )
        )
        return {"error_code": error.code, "error_message": error.message, "cluster_id": ""}
    return {
        "endpoint_type": _BROKERS,
        "cluster_id": response.cluster_id or "",
        "controller_id": response.controller_id,
        "brokers": [
            {"broker_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack}
            for b in response.brokers
        ],
    }


_BROKERS, _CONTROLLERS = 1, 2  # DescribeCluster's endpoint types

_DESCRIBE_CLUSTER_REQUEST = Struct(
    [
        F("include_cluster_authorized_operations", BOOL, attr=None),
        F("endpoint_type", INT8, 1, default=_BROKERS),
    ],
    _describe_cluster,
)
_DESCRIBE_CLUSTER_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F("endpoint_type", INT8, 1, default=_BROKERS),
        F("cluster_id", STRING),
        F("controller_id", INT32, default=-1),
        F(
            "brokers",
            Array(
                Struct(
                    [
                        F("broker_id", INT32),
                        F("host", STRING),
                        F("port", INT32),
                        F("rack", NULLABLE_STRING),
                    ]
                )
            ),
        ),
        # not computed (as Metadata's): the client is told none were asked for
        F("cluster_authorized_operations", INT32, attr=None, default=NO_OPERATIONS),
    ]
)

# --- Produce (0) -----------------------------------------------------------------------

_PRODUCE_REQUEST = Struct(
    [
        F("transactional_id", NULLABLE_STRING, 3),
        F("acks", INT16),
        F("timeout_ms", INT32),
        F(
            "topic_data",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partition_data",
                            Array(
                                Struct(
                                    [F("index", INT32), F("records", RECORDS)],
                                    ProducePartition,
                                )
                            ),
                            attr="partitions",
                        ),
                    ],
                    ProduceTopic,
                )
            ),
            attr="topics",
        ),
    ],
    ProduceRequest,
)

_RECORD_ERROR = Struct([F("batch_index", INT32), F("batch_index_error_message", NULLABLE_STRING)])

_PRODUCE_RESPONSE = Struct(
    [
        F(
            "responses",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F(
                            "partition_responses",
                            Array(
                                Struct(
                                    [
                                        F("index", INT32),
                                        F("error_code", INT16),
                                        F("base_offset", INT64, default=-1),
                                        F("log_append_time_ms", INT64, 2, default=-1),
                                        F("log_start_offset", INT64, 5, default=-1),
                                        F("record_errors", Array(_RECORD_ERROR), 8, attr=None),
                                        F("error_message", NULLABLE_STRING, 8),
                                        F("current_leader", CURRENT_LEADER, 10, tag=0),
                                    ]
                                )
                            ),
                            attr="partitions",
                        ),
                    ]
                )
            ),
            attr="topics",
        ),
        F("throttle_time_ms", INT32, 1),
        F("node_endpoints", NODE_ENDPOINTS, 10, tag=0),
    ]
)

# --- Fetch (1) -------------------------------------------------------------------------

_FETCH_REQUEST = Struct(
    [
        F("cluster_id", NULLABLE_STRING, 12, attr=None, tag=0),
        F("replica_id", INT32, 0, 14, default=-1),  # (v15+: in replica_state, a follower's)
        F(
            "replica_state",
            Struct([F("replica_id", INT32, default=-1), F("replica_epoch", INT64, default=-1)]),
            15,
            attr=None,
            tag=1,
        ),
        F("max_wait_ms", INT32),
        F("min_bytes", INT32),
        F("max_bytes", INT32, 3, default=0x7FFFFFFF),
        F("isolation_level", INT8, 4),
        F("session_id", INT32, 7),
        F("session_epoch", INT32, 7, default=-1),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("topic", STRING, 0, 12, default=""),
                        F("topic_id", UUID, 13),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition", INT32),
                                        F("current_leader_epoch", INT32, 9, default=-1),
                                        F("fetch_offset", INT64),
                                        F("last_fetched_epoch", INT32, 12, default=-1),
                                        F("log_start_offset", INT64, 5, default=-1),
                                        F("partition_max_bytes", INT32),
                                    ],
                                    FetchPartition,
                                )
                            ),
                        ),
                    ],
                    FetchTopic,
                )
            ),
        ),
        F(
            "forgotten_topics_data",
            Array(
                Struct(
                    [
                        F("topic", STRING, 7, 12, default=""),
                        F("topic_id", UUID, 13),
                        F("partitions", Array(INT32)),
                    ],
                    FetchForgottenTopic,
                )
            ),
            7,
        ),
        F("rack_id", STRING, 11),
    ],
    FetchRequest,
)


def _fetch_defaults(request: FetchRequest, version: int, client_id: str | None) -> FetchRequest:
    if version < 7:
        request.session_id, request.session_epoch = 0, -1  # no session: every partition
    return request


_FETCH_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 1),
        F("error_code", INT16, 7),
        F("session_id", INT32, 7),
        F(
            "responses",
            Array(
                Struct(
                    [
                        F("topic", STRING, 0, 12, default=""),
                        F("topic_id", UUID, 13),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition_index", INT32),
                                        F("error_code", INT16),
                                        F("high_watermark", INT64, default=-1),
                                        F("last_stable_offset", INT64, 4, default=-1),
                                        F("log_start_offset", INT64, 5, default=-1),
                                        F(
                                            "diverging_epoch",
                                            Struct(
                                                [
                                                    F("epoch", INT32, default=-1),
                                                    F("end_offset", INT64, default=-1),
                                                ],
                                                DivergingEpoch,
                                            ),
                                            12,
                                            tag=0,
                                        ),
                                        F(
                                            "aborted_transactions",
                                            Array(
                                                Struct(
                                                    [
                                                        F("producer_id", INT64),
                                                        F("first_offset", INT64),
                                                    ],
                                                    AbortedTransaction,
                                                ),
                                                nullable=True,
                                            ),
                                            4,
                                        ),
                                        F("current_leader", CURRENT_LEADER, 12, tag=1),
                                        F("preferred_read_replica", INT32, 11, default=-1),
                                        # Kafka's brokers send empty records, never
                                        # null: clients (kafka-python) take len() of it
                                        F("records", RECORDS, default=b""),
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
            attr="topics",
        ),
        F("node_endpoints", NODE_ENDPOINTS, 16, tag=0),
    ]
)

# --- ListOffsets (2) -------------------------------------------------------------------

_LIST_OFFSETS_REQUEST = Struct(
    [
        F("replica_id", INT32),
        F("isolation_level", INT8, 2),
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
                                        F("current_leader_epoch", INT32, 4, default=-1),
                                        F("timestamp", INT64),
                                    ],
                                    ListOffsetsPartition,
                                )
                            ),
                        ),
                    ],
                    ListOffsetsTopic,
                )
            ),
        ),
        F("timeout_ms", INT32, 10, attr=None, default=0),  # (KIP-1075: remote reads; none here)
    ],
    ListOffsetsRequest,
)

_LIST_OFFSETS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 2),
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
                                        F("timestamp", INT64, default=-1),
                                        F("offset", INT64, default=-1),
                                        F("leader_epoch", INT32, 4, default=-1),
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


# --- OffsetForLeaderEpoch (23): a consumer's check of its position (KIP-320) -----------
# Kafka's clients ask it after a leader change, to find whether the log they read was
# truncated under them (an unclean election); Kafka 4.0's brokers start at v2 (KIP-896).

_OFFSET_FOR_LEADER_EPOCH_REQUEST = Struct(
    [
        F("replica_id", INT32, 3, default=-1),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("topic", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("partition", INT32),
                                        F("current_leader_epoch", INT32, default=-1),
                                        F("leader_epoch", INT32),
                                    ],
                                    OffsetForLeaderPartition,
                                )
                            ),
                        ),
                    ],
                    OffsetForLeaderTopic,
                )
            ),
        ),
    ],
    OffsetForLeaderEpochRequest,
)

_OFFSET_FOR_LEADER_EPOCH_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "topics",
            Array(
                Struct(
                    [
                        F("topic", STRING),
                        F(
                            "partitions",
                            Array(
                                Struct(
                                    [
                                        F("error_code", INT16),
                                        F("partition", INT32),
                                        F("leader_epoch", INT32, default=-1),
                                        F("end_offset", INT64, default=-1),
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


# --- FindCoordinator (10) --------------------------------------------------------------

_FIND_COORDINATOR_REQUEST = Struct(
    [
        F("key", STRING, 0, 3, default=""),
        F("key_type", INT8, 1),
        F("coordinator_keys", Array(STRING), 4, attr="keys"),  # (KIP-699)
    ],
    FindCoordinatorRequest,
)
_FIND_COORDINATOR_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 1),
        F("error_code", INT16, 0, 3),
        F("error_message", NULLABLE_STRING, 1, 3),
        F("node_id", INT32, 0, 3, default=-1),
        F("host", STRING, 0, 3),
        F("port", INT32, 0, 3, default=-1),
        F(
            "coordinators",
            Array(
                Struct(
                    [
                        F("key", STRING),
                        F("node_id", INT32, default=-1),
                        F("host", STRING),
                        F("port", INT32, default=-1),
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                    ],
                    Coordinator,
                )
            ),
            4,
        ),
    ]
)

# --- JoinGroup (11), SyncGroup (14), Heartbeat (12), LeaveGroup (13) ------------------


def _with_client_id(request: Any, version: int, client_id: str | None) -> Any:
    request.client_id = client_id or ""  # DescribeGroups shows it (Kafka: from the header)
    return request


def _join_group(request: JoinGroupRequest, version: int, client_id: str | None) -> Any:
    request.supports_skip_assignment = version >= 9  # (KIP-814)
    return _with_client_id(request, version, client_id)


_JOIN_GROUP_REQUEST = Struct(
    [
        F("group_id", STRING),
        F("session_timeout_ms", INT32),
        F("rebalance_timeout_ms", INT32, 1, default=-1),
        F("member_id", STRING),
        F("group_instance_id", NULLABLE_STRING, 5),
        F("protocol_type", STRING),
        F(
            "protocols",
            Array(Struct([F("name", STRING), F("metadata", BYTES)], JoinGroupRequestProtocol)),
        ),
        F("reason", NULLABLE_STRING, 8),
    ],
    JoinGroupRequest,
)
_JOIN_GROUP_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 2),
        F("error_code", INT16),
        F("generation_id", INT32, default=-1),
        F("protocol_type", NULLABLE_STRING, 7),
        # nullable from v7 only: "" for none in every version, which all clients read
        F("protocol_name", NULLABLE_STRING, default=""),
        F("leader", STRING),
        F("skip_assignment", BOOL, 9),
        F("member_id", STRING),
        F(
            "members",
            Array(
                Struct(
                    [
                        F("member_id", STRING),
                        F("group_instance_id", NULLABLE_STRING, 5),
                        F("metadata", BYTES),
                    ]
                )
            ),
        ),
    ]
)


_SYNC_GROUP_REQUEST = Struct(
    [
        F("group_id", STRING),
        F("generation_id", INT32),
        F("member_id", STRING),
        F("group_instance_id", NULLABLE_STRING, 3),
        F("protocol_type", NULLABLE_STRING, 5),
        F("protocol_name", NULLABLE_STRING, 5),
        F(
            "assignments",
            Array(
                Struct([F("member_id", STRING), F("assignment", BYTES)], SyncGroupRequestAssignment)
            ),
        ),
    ],
    SyncGroupRequest,
)
_SYNC_GROUP_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 1),
        F("error_code", INT16),
        F("protocol_type", NULLABLE_STRING, 5),
        F("protocol_name", NULLABLE_STRING, 5),
        F("assignment", BYTES),
    ]
)

_HEARTBEAT_REQUEST = Struct(
    [
        F("group_id", STRING),
        F("generation_id", INT32),
        F("member_id", STRING),
        F("group_instance_id", NULLABLE_STRING, 3),
    ],
    HeartbeatRequest,
)
_HEARTBEAT_RESPONSE = Struct([F("throttle_time_ms", INT32, 1), F("error_code", INT16)])


def _leave_group(
    group_id: str, member_id: str = "", members: list[dict[str, Any]] | None = None
) -> LeaveGroupRequest:
    if members is not None:  # v3+: a list (a consumer sends itself, an admin several)
        return LeaveGroupRequest(
            group_id=group_id,
            members=[
                LeaveGroupMember(
                    member_id=m["member_id"],
                    group_instance_id=m["group_instance_id"],
                    reason=m.get("reason"),
                )
                for m in members
            ],
        )
    return LeaveGroupRequest(group_id=group_id, member_id=member_id)


_LEAVE_MEMBER = Struct(
    [
        F("member_id", STRING),
        F("group_instance_id", NULLABLE_STRING),
        F("reason", NULLABLE_STRING, 5),
    ]
)
_LEAVE_GROUP_REQUEST = Struct(
    [
        F("group_id", STRING),
        F("member_id", STRING, 0, 2),
        F("members", Array(_LEAVE_MEMBER), 3),
    ],
    _leave_group,
)
_LEAVE_GROUP_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 1),
        F("error_code", INT16),
        F(
            "members",
            Array(
                Struct(
                    [
                        F("member_id", STRING),
                        F("group_instance_id", NULLABLE_STRING),
                        F("error_code", INT16),
                    ]
                )
            ),
            3,
        ),
    ]
)


def _leave_answer(response: Any, request: LeaveGroupRequest) -> dict[str, Any]:
    # v3+ answers per member: each with its own outcome; a request refused whole (an
    # unknown group) says its error for every member
    members = getattr(response, "members", None) or [
        {
            "member_id": m.member_id,
            "group_instance_id": m.group_instance_id,
            "error_code": response.error_code,
        }
        for m in request.members or ()
    ]
    return {
        "throttle_time_ms": getattr(response, "throttle_time_ms", 0),
        "error_code": response.error_code,
        "members": members,
    }


# --- OffsetCommit (8), OffsetFetch (9) -------------------------------------------------

_OFFSET_COMMIT_REQUEST = Struct(
    [
        F("group_id", STRING),
        F("generation_id", INT32, default=-1),
        F("member_id", STRING),
        F("group_instance_id", NULLABLE_STRING, 7),
        F("retention_time_ms", INT64, 2, 4, default=-1),
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
                                        F("committed_offset", INT64),
                                        F("committed_leader_epoch", INT32, 6, default=-1),
                                        F("committed_metadata", NULLABLE_STRING),
                                    ],
                                    OffsetCommitRequestPartition,
                                )
                            ),
                        ),
                    ],
                    OffsetCommitRequestTopic,
                )
            ),
        ),
    ],
    OffsetCommitRequest,
)
_OFFSET_COMMIT_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 3),
        F("topics", partition_errors()),
    ]
)

_OFFSET_FETCH_TOPIC = Struct(
    [F("name", STRING), F("partition_indexes", Array(INT32))], OffsetFetchRequestTopic
)
_OFFSET_FETCH_REQUEST = Struct(
    [
        F("group_id", STRING, 0, 7, default=""),
        F("topics", Array(_OFFSET_FETCH_TOPIC, nullable=True), 0, 7),
        F(
            "groups",
            Array(
                Struct(
                    [
                        F("group_id", STRING),
                        F("member_id", NULLABLE_STRING, 9),
                        F("member_epoch", INT32, 9, default=-1),
                        F("topics", Array(_OFFSET_FETCH_TOPIC, nullable=True)),
                    ],
                    OffsetFetchRequestGroup,
                )
            ),
            8,
        ),
        F("require_stable", BOOL, 7),
    ],
    OffsetFetchRequest,
)
_OFFSET_FETCH_TOPICS = Array(
    Struct(
        [
            F("name", STRING),
            F(
                "partitions",
                Array(
                    Struct(
                        [
                            F("partition_index", INT32),
                            F("committed_offset", INT64, default=-1),
                            F("committed_leader_epoch", INT32, 5, default=-1),
                            F("metadata", NULLABLE_STRING),
                            F("error_code", INT16),
                        ]
                    )
                ),
            ),
        ]
    )
)
_OFFSET_FETCH_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32, 3),
        F("topics", _OFFSET_FETCH_TOPICS, 0, 7),
        F("error_code", INT16, 2, 7),
        F(
            "groups",
            Array(
                Struct(
                    [
                        F("group_id", STRING),
                        F("topics", _OFFSET_FETCH_TOPICS),
                        F("error_code", INT16),
                    ]
                )
            ),
            8,
        ),
    ]
)


def _with_kafka_version(request: Any, version: int, client_id: str | None) -> Any:
    request.kafka_version = version
    return request


def _offset_fetch_refused(
    request: OffsetFetchRequest, code: int, message: str | None
) -> dict[str, Any]:
    # v1 has no request-level error code: Kafka puts it in every partition asked for
    # (a v1 client would read an empty answer as "nothing committed" and reset); v8+
    # answers each group asked with it
    return {
        "error_code": code,
        "topics": [
            {
                "name": t.name,
                "partitions": [
                    {"partition_index": p, "error_code": code} for p in t.partition_indexes
                ],
            }
            for t in request.topics or ()
        ],
        "groups": [{"group_id": g.group_id, "error_code": code} for g in request.groups or ()],
    }


# --- InitProducerId (22) ---------------------------------------------------------------

_INIT_PRODUCER_ID_REQUEST = Struct(
    [
        F("transactional_id", NULLABLE_STRING),
        F("transaction_timeout_ms", INT32),
        F("producer_id", INT64, 3, default=-1),
        F("producer_epoch", INT16, 3, default=-1),
    ],
    InitProducerIdRequest,
)
_INIT_PRODUCER_ID_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("producer_id", INT64, default=-1),
        F("producer_epoch", INT16, default=-1),
    ]
)


# --- transactions: AddPartitionsToTxn (24), AddOffsetsToTxn (25), EndTxn (26),
# TxnOffsetCommit (28) -----------------------------------------------------------------

_ADD_PARTITIONS_TO_TXN_REQUEST = Struct(
    [
        F("transactional_id", STRING),
        F("producer_id", INT64),
        F("producer_epoch", INT16),
        F(
            "topics",
            Array(
                Struct([F("name", STRING), F("partitions", Array(INT32))], AddPartitionsToTxnTopic)
            ),
        ),
    ],
    AddPartitionsToTxnRequest,
)
_ADD_PARTITIONS_TO_TXN_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("results", partition_errors(partitions="results")),
    ]
)

_ADD_OFFSETS_TO_TXN_REQUEST = Struct(
    [
        F("transactional_id", STRING),
        F("producer_id", INT64),
        F("producer_epoch", INT16),
        F("group_id", STRING),
    ],
    AddOffsetsToTxnRequest,
)
_THROTTLE_AND_ERROR = Struct([F("throttle_time_ms", INT32), F("error_code", INT16)])

_END_TXN_REQUEST = Struct(
    [
        F("transactional_id", STRING),
        F("producer_id", INT64),
        F("producer_epoch", INT16),
        F("committed", BOOL),
    ],
    EndTxnRequest,
)

_TXN_OFFSET_COMMIT_REQUEST = Struct(
    [
        F("transactional_id", STRING),
        F("group_id", STRING),
        F("producer_id", INT64),
        F("producer_epoch", INT16),
        F("generation_id", INT32, 3, default=-1),
        F("member_id", STRING, 3),
        F("group_instance_id", NULLABLE_STRING, 3),
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
                                        F("committed_offset", INT64),
                                        F("committed_leader_epoch", INT32, 2, default=-1),
                                        F("committed_metadata", NULLABLE_STRING),
                                    ],
                                    OffsetCommitRequestPartition,
                                )
                            ),
                        ),
                    ],
                    OffsetCommitRequestTopic,
                )
            ),
        ),
    ],
    TxnOffsetCommitRequest,
)
_TXN_OFFSET_COMMIT_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("topics", partition_errors()),
    ]
)


# --- SaslHandshake (17), SaslAuthenticate (36): a SASL listener's login ----------------
# Handshake v0 is left out: after it the SASL tokens travel without Kafka's framing (no
# SaslAuthenticate), which clients use only with brokers older than Kafka 1.0.

_SASL_HANDSHAKE_REQUEST = Struct([F("mechanism", STRING)], SaslHandshakeRequest)
_SASL_HANDSHAKE_RESPONSE = Struct([F("error_code", INT16), F("mechanisms", Array(STRING))])
_SASL_AUTHENTICATE_REQUEST = Struct([F("auth_bytes", BYTES)], SaslAuthenticateRequest)
_SASL_AUTHENTICATE_RESPONSE = Struct(
    [
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F("auth_bytes", BYTES),
        F("session_lifetime_ms", INT64, 1),
    ]
)


def _apis(*apis: KafkaApi) -> MappingProxyType[int, KafkaApi]:
    return MappingProxyType({api.key.value: api for api in apis})


API_VERSIONS = KafkaApi(ApiKey.API_VERSIONS, 0, 3, 3, _API_VERSIONS_REQUEST, _API_VERSIONS_RESPONSE)

KAFKA_APIS = _apis(
    API_VERSIONS,
    KafkaApi(
        ApiKey.DESCRIBE_CLUSTER,
        0,
        1,
        0,
        _DESCRIBE_CLUSTER_REQUEST,
        _DESCRIBE_CLUSTER_RESPONSE,
        answer=_cluster_described,
        served_by=ApiKey.METADATA,
    ),
    KafkaApi(ApiKey.SASL_HANDSHAKE, 1, 1, 9, _SASL_HANDSHAKE_REQUEST, _SASL_HANDSHAKE_RESPONSE),
    KafkaApi(
        ApiKey.SASL_AUTHENTICATE,
        0,
        2,
        2,
        _SASL_AUTHENTICATE_REQUEST,
        _SASL_AUTHENTICATE_RESPONSE,
    ),
    *ADMIN_APIS,
    *SECURITY_APIS,
    *CONSUMER_GROUP_APIS,
    *SHARE_GROUP_APIS,
    KafkaApi(
        ApiKey.METADATA,
        1,
        13,
        9,
        _METADATA_REQUEST,
        _METADATA_RESPONSE,
        _metadata_v3,
        refuse=per_topic_or_id("topics", "topic_ids", "topics"),
    ),
    KafkaApi(
        ApiKey.PRODUCE,
        3,
        11,
        9,
        _PRODUCE_REQUEST,
        _PRODUCE_RESPONSE,
        refuse=per_partition("index", "index"),
    ),
    KafkaApi(
        ApiKey.FETCH,
        4,
        16,
        12,
        _FETCH_REQUEST,
        _FETCH_RESPONSE,
        _fetch_defaults,
        refuse=per_partition("partition", "partition_index", topic="topic"),
    ),
    KafkaApi(
        ApiKey.LIST_OFFSETS,
        1,
        10,
        6,
        _LIST_OFFSETS_REQUEST,
        _LIST_OFFSETS_RESPONSE,
        refuse=per_partition("partition_index", "partition_index"),
    ),
    KafkaApi(
        ApiKey.OFFSET_FOR_LEADER_EPOCH,
        2,
        4,
        4,
        _OFFSET_FOR_LEADER_EPOCH_REQUEST,
        _OFFSET_FOR_LEADER_EPOCH_RESPONSE,
        refuse=per_partition("partition", "partition", topic="topic"),
    ),
    KafkaApi(
        ApiKey.FIND_COORDINATOR,
        0,
        5,
        3,
        _FIND_COORDINATOR_REQUEST,
        _FIND_COORDINATOR_RESPONSE,
        refuse=per_item("keys", "coordinators", "key"),
    ),
    KafkaApi(
        ApiKey.JOIN_GROUP,
        0,
        9,
        6,
        _JOIN_GROUP_REQUEST,
        _JOIN_GROUP_RESPONSE,
        _join_group,
    ),
    KafkaApi(ApiKey.SYNC_GROUP, 0, 5, 4, _SYNC_GROUP_REQUEST, _SYNC_GROUP_RESPONSE),
    KafkaApi(ApiKey.HEARTBEAT, 0, 4, 4, _HEARTBEAT_REQUEST, _HEARTBEAT_RESPONSE),
    KafkaApi(
        ApiKey.LEAVE_GROUP,
        0,
        5,
        4,
        _LEAVE_GROUP_REQUEST,
        _LEAVE_GROUP_RESPONSE,
        answer=_leave_answer,
    ),
    KafkaApi(
        ApiKey.OFFSET_COMMIT,
        2,
        9,  # v9: as v8, from members of the new consumer protocol too (KIP-848)
        8,
        _OFFSET_COMMIT_REQUEST,
        _OFFSET_COMMIT_RESPONSE,
        finish=_with_kafka_version,
        refuse=per_partition("partition_index", "partition_index"),
    ),
    KafkaApi(
        ApiKey.OFFSET_FETCH,
        1,
        9,  # v8: several groups at once; v9: a member's id and epoch (KIP-848)
        6,
        _OFFSET_FETCH_REQUEST,
        _OFFSET_FETCH_RESPONSE,
        refuse=_offset_fetch_refused,
    ),
    KafkaApi(
        ApiKey.ADD_PARTITIONS_TO_TXN,
        0,
        3,
        3,
        _ADD_PARTITIONS_TO_TXN_REQUEST,
        _ADD_PARTITIONS_TO_TXN_RESPONSE,
        refuse=per_partition("", "partition_index", listed="results", partitions="results"),
    ),
    KafkaApi(ApiKey.ADD_OFFSETS_TO_TXN, 0, 3, 3, _ADD_OFFSETS_TO_TXN_REQUEST, _THROTTLE_AND_ERROR),
    KafkaApi(ApiKey.END_TXN, 0, 3, 3, _END_TXN_REQUEST, _THROTTLE_AND_ERROR),
    KafkaApi(
        ApiKey.TXN_OFFSET_COMMIT,
        0,
        3,
        3,
        _TXN_OFFSET_COMMIT_REQUEST,
        _TXN_OFFSET_COMMIT_RESPONSE,
        refuse=per_partition("partition_index", "partition_index"),
    ),
    KafkaApi(
        ApiKey.INIT_PRODUCER_ID,
        0,
        4,
        2,
        _INIT_PRODUCER_ID_REQUEST,
        _INIT_PRODUCER_ID_RESPONSE,
    ),
)
"""What a Kafka-protocol listener serves, by key (its ApiVersions answer lists these)."""
