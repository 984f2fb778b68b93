"""Every API: its key (Kafka's numbering), supported versions, and request/response schemas.

Field names follow Kafka's JSON message specs in snake_case, so a reader of Kafka's
protocol guide recognises them. Each message is declared once; a field added by a later
version says so with ``field(since=N)`` (see :mod:`protocol.schema`).

Every response carries a request-level ``error_code`` / ``error_message``: the answer to
a request that could not be served at all (unsupported version, malformed body), which a
client can decode whatever API it asked for. Per-partition errors live in the partitions.

Special values, as in Kafka: ``acks`` 0/1/-1 (all); ListOffsets timestamps
:data:`LATEST_TIMESTAMP` (-1), :data:`EARLIEST_TIMESTAMP` (-2),
:data:`MAX_TIMESTAMP` (-3); ``replica_id`` -1 for consumers; ``num_partitions`` and
``replication_factor`` -1 for the broker's defaults; a ``None`` topic list in Metadata
asks for all topics.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from protocol.errors import ApiError, UnsupportedRequestError, error_code_of
from protocol.framing import (
    Buffer,
    FileRegion,
    Part,
    RequestHeader,
    frame,
    pack_response_header,
    parse_request_header,
)
from protocol.schema import KAFKA_ONLY, Records, decode_message, encode_message, field
from protocol.topic_id import ZERO_TOPIC_ID

__all__ = [
    "APIS",
    "EARLIEST_LOCAL_TIMESTAMP",
    "EARLIEST_TIMESTAMP",
    "FINAL_EPOCH",
    "INITIAL_EPOCH",
    "INVALID_SESSION_ID",
    "LATEST_TIERED_TIMESTAMP",
    "LATEST_TIMESTAMP",
    "MAX_TIMESTAMP",
    "Api",
    "ApiKey",
    "api_for",
    "decode_request",
    "decode_response",
    "encode_error_response",
    "encode_request",
    "encode_response",
]


class ApiKey(enum.IntEnum):
    """Kafka's API keys. Only those in :data:`APIS` are served; the rest are reserved."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    LEADER_AND_ISR = 4
    STOP_REPLICA = 5
    UPDATE_METADATA = 6
    CONTROLLED_SHUTDOWN = 7
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    WRITE_TXN_MARKERS = 27
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_ACLS = 29
    CREATE_ACLS = 30
    DELETE_ACLS = 31
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    ALTER_REPLICA_LOG_DIRS = 34
    DESCRIBE_LOG_DIRS = 35
    SASL_AUTHENTICATE = 36
    CREATE_PARTITIONS = 37
    CREATE_DELEGATION_TOKEN = 38
    RENEW_DELEGATION_TOKEN = 39
    EXPIRE_DELEGATION_TOKEN = 40
    DESCRIBE_DELEGATION_TOKEN = 41
    DELETE_GROUPS = 42
    ELECT_LEADERS = 43
    INCREMENTAL_ALTER_CONFIGS = 44
    ALTER_PARTITION_REASSIGNMENTS = 45
    LIST_PARTITION_REASSIGNMENTS = 46
    OFFSET_DELETE = 47
    DESCRIBE_CLIENT_QUOTAS = 48
    ALTER_CLIENT_QUOTAS = 49
    DESCRIBE_USER_SCRAM_CREDENTIALS = 50
    ALTER_USER_SCRAM_CREDENTIALS = 51
    DESCRIBE_CLUSTER = 60  # Kafka's listener only: served by Metadata's handler
    DESCRIBE_PRODUCERS = 61
    DESCRIBE_TRANSACTIONS = 65
    LIST_TRANSACTIONS = 66
    CONSUMER_GROUP_HEARTBEAT = 68
    CONSUMER_GROUP_DESCRIBE = 69
    SHARE_GROUP_HEARTBEAT = 76  # share groups (KIP-932): Kafka's listener only, for now
    SHARE_GROUP_DESCRIBE = 77
    SHARE_FETCH = 78
    SHARE_ACKNOWLEDGE = 79
    READ_SHARE_GROUP_STATE = 84  # between brokers: a partition leader and a group's coordinator
    WRITE_SHARE_GROUP_STATE = 85
    DESCRIBE_SHARE_GROUP_OFFSETS = 90  # Headwater's listener only, for now


LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL_TIMESTAMP = -4
"""Kafka's KIP-405 (ListOffsets v8): the first offset on local disk. No log here is
tiered, so it is the log start offset."""
LATEST_TIERED_TIMESTAMP = -5
"""Kafka's KIP-1005 (ListOffsets v9): the last offset in remote storage; none here."""


@dataclass(slots=True, kw_only=True)
class Request:
    """Base of request bodies."""


@dataclass(slots=True, kw_only=True)
class Response:
    """Base of response bodies: the request-level error."""

    error_code: int = 0
    error_message: str | None = None


# --- ApiVersions (18) ------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class ApiVersionsRequest(Request):
    client_software_name: str = ""
    client_software_version: str = ""
    client_id: str = ""
    """The client's ``client_id`` (Kafka carries it in every request header; here once per
    connection, which is what quotas and logs need). A broker that does not know the key
    ignores it."""


@dataclass(slots=True, kw_only=True)
class ApiVersionRange:
    api_key: int
    min_version: int
    max_version: int


@dataclass(slots=True, kw_only=True)
class ApiVersionsResponse(Response):
    api_keys: list[ApiVersionRange] = field(default_factory=list)
    throttle_time_ms: int = 0


# --- Metadata (3) ----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class MetadataRequest(Request):
    """``topics`` None asks for every topic; v1's ``topic_ids`` asks for topics by id too
    (KIP-516; an id no topic has is answered UNKNOWN_TOPIC_ID)."""

    topics: list[str] | None = None
    allow_auto_topic_creation: bool = True
    topic_ids: list[bytes] = field(default_factory=list, since=1)


@dataclass(slots=True, kw_only=True)
class MetadataBroker:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(slots=True, kw_only=True)
class MetadataPartition:
    error_code: int = 0
    partition_index: int
    leader_id: int
    leader_epoch: int = -1
    replica_nodes: list[int] = field(default_factory=list)
    isr_nodes: list[int] = field(default_factory=list)
    offline_replicas: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class MetadataTopic:
    error_code: int = 0
    error_message: str | None = None
    name: str
    topic_id: bytes = field(ZERO_TOPIC_ID, since=1)
    is_internal: bool = False
    partitions: list[MetadataPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class MetadataResponse(Response):
    throttle_time_ms: int = 0
    brokers: list[MetadataBroker] = field(default_factory=list)
    cluster_id: str | None = None
    controller_id: int = -1
    topics: list[MetadataTopic] = field(default_factory=list)


# --- Produce (0) -----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class ProducePartition:
    index: int
    records: Records = None


@dataclass(slots=True, kw_only=True)
class ProduceTopic:
    name: str
    partitions: list[ProducePartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ProduceRequest(Request):
    transactional_id: str | None = None
    acks: int
    timeout_ms: int
    topics: list[ProduceTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class LeaderIdAndEpoch:
    """The leader a broker knows of, told with NOT_LEADER_OR_FOLLOWER or
    FENCED_LEADER_EPOCH (Kafka's KIP-951): the client goes there without first asking
    for metadata."""

    leader_id: int = -1
    leader_epoch: int = -1


@dataclass(slots=True, kw_only=True)
class NodeEndpoint:
    """Where a leader named in an answer is reached, on the listener asked (KIP-951)."""

    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(slots=True, kw_only=True)
class ProducePartitionResponse:
    index: int
    error_code: int = 0
    error_message: str | None = None
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    current_leader: LeaderIdAndEpoch | None = field(None, since=KAFKA_ONLY)


@dataclass(slots=True, kw_only=True)
class ProduceTopicResponse:
    name: str
    partitions: list[ProducePartitionResponse] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ProduceResponse(Response):
    topics: list[ProduceTopicResponse] = field(default_factory=list)
    throttle_time_ms: int = 0
    node_endpoints: list[NodeEndpoint] = field(default_factory=list, since=KAFKA_ONLY)


# --- Fetch (1) -------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class FetchPartition:
    partition: int
    current_leader_epoch: int = -1
    fetch_offset: int
    last_fetched_epoch: int = field(-1, since=2)
    """The epoch of the fetcher's last record (-1: not said). A leader whose log parts
    from the fetcher's there answers with ``diverging_epoch`` instead of records."""
    log_start_offset: int = -1
    partition_max_bytes: int


@dataclass(slots=True, kw_only=True)
class FetchTopic:
    topic: str
    partitions: list[FetchPartition] = field(default_factory=list)
    topic_id: bytes = field(ZERO_TOPIC_ID, since=KAFKA_ONLY)
    """Kafka's Fetch v13+ names the topic by id alone; the broker finds its name."""


@dataclass(slots=True, kw_only=True)
class FetchForgottenTopic:
    topic: str
    partitions: list[int] = field(default_factory=list)
    topic_id: bytes = field(ZERO_TOPIC_ID, since=KAFKA_ONLY)


@dataclass(slots=True, kw_only=True)
class FetchRequest(Request):
    """Sessions (v1, Kafka's KIP-227): ``session_epoch`` :data:`FINAL_EPOCH` is a fetch
    with no session (v0's); :data:`INITIAL_EPOCH` asks for a new one (its answer's
    ``session_id``, 0 if the broker keeps none); later epochs name the partitions that
    changed since the last request of the session and those it drops, and are answered
    with the partitions that have something new."""

    replica_id: int = -1
    max_wait_ms: int
    min_bytes: int
    max_bytes: int = 0x7FFFFFFF
    isolation_level: int = 0
    session_id: int = field(0, since=1)
    session_epoch: int = field(-1, since=1)
    topics: list[FetchTopic] = field(default_factory=list)
    forgotten_topics_data: list[FetchForgottenTopic] = field(default_factory=list, since=1)
    rack_id: str = field("", since=4)
    """A consumer's ``client.rack`` (KIP-392): a leader with a replica selector may name
    a replica in that rack to fetch from instead, and a consumer that sends one may
    fetch from a follower."""


@dataclass(slots=True, kw_only=True)
class DivergingEpoch:
    """Where the leader's log parts from a fetcher's (Kafka's KIP-595 / KAFKA-10554): the
    largest epoch the leader has at or below the fetcher's ``last_fetched_epoch``, and the
    offset that epoch ends at in the leader's log."""

    epoch: int = -1
    end_offset: int = -1


@dataclass(slots=True, kw_only=True)
class AbortedTransaction:
    producer_id: int
    first_offset: int


READ_UNCOMMITTED = 0
READ_COMMITTED = 1
"""``isolation_level`` of Fetch and ListOffsets: read_committed reads up to the last
stable offset and is told of aborted transactions."""


@dataclass(slots=True, kw_only=True)
class FetchPartitionData:
    partition_index: int
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    diverging_epoch: DivergingEpoch | None = field(None, since=2)
    """Set instead of records when the fetcher's log parts from the leader's: the
    fetcher truncates (as after OffsetForLeaderEpoch) and fetches again."""
    aborted_transactions: list[AbortedTransaction] | None = field(None, since=3)
    """read_committed: the aborted transactions with records in the data, whose batches
    the consumer drops (None for read_uncommitted)."""
    preferred_read_replica: int = field(-1, since=4)
    """KIP-392: the replica (in the consumer's rack) to fetch this partition from
    instead; set with no records. -1: fetch from where it asked."""
    records: Records = None
    current_leader: LeaderIdAndEpoch | None = field(None, since=KAFKA_ONLY)


@dataclass(slots=True, kw_only=True)
class FetchTopicResponse:
    topic: str
    partitions: list[FetchPartitionData] = field(default_factory=list)
    topic_id: bytes = field(ZERO_TOPIC_ID, since=KAFKA_ONLY)


@dataclass(slots=True, kw_only=True)
class FetchResponse(Response):
    throttle_time_ms: int = 0
    session_id: int = field(0, since=1)
    topics: list[FetchTopicResponse] = field(default_factory=list)
    node_endpoints: list[NodeEndpoint] = field(default_factory=list, since=KAFKA_ONLY)


INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
"""Fetch session ids and epochs with a meaning of their own (KIP-227)."""


# --- ListOffsets (2) -------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class ListOffsetsPartition:
    partition_index: int
    current_leader_epoch: int = -1
    timestamp: int


@dataclass(slots=True, kw_only=True)
class ListOffsetsTopic:
    name: str
    partitions: list[ListOffsetsPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ListOffsetsRequest(Request):
    replica_id: int = -1
    isolation_level: int = 0
    topics: list[ListOffsetsTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ListOffsetsPartitionResponse:
    partition_index: int
    error_code: int = 0
    timestamp: int = -1
    offset: int = -1
    leader_epoch: int = -1


@dataclass(slots=True, kw_only=True)
class ListOffsetsTopicResponse:
    name: str
    partitions: list[ListOffsetsPartitionResponse] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ListOffsetsResponse(Response):
    throttle_time_ms: int = 0
    topics: list[ListOffsetsTopicResponse] = field(default_factory=list)


# --- CreateTopics (19) -----------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class CreatableReplicaAssignment:
    partition_index: int
    broker_ids: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class CreatableTopicConfig:
    name: str
    value: str | None = None


@dataclass(slots=True, kw_only=True)
class CreatableTopic:
    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    assignments: list[CreatableReplicaAssignment] = field(default_factory=list)
    configs: list[CreatableTopicConfig] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class CreateTopicsRequest(Request):
    topics: list[CreatableTopic] = field(default_factory=list)
    timeout_ms: int = 30_000
    validate_only: bool = False


@dataclass(slots=True, kw_only=True)
class CreatableTopicResult:
    name: str
    topic_id: bytes = field(ZERO_TOPIC_ID, since=1)
    error_code: int = 0
    error_message: str | None = None
    num_partitions: int = -1
    replication_factor: int = -1


@dataclass(slots=True, kw_only=True)
class CreateTopicsResponse(Response):
    throttle_time_ms: int = 0
    topics: list[CreatableTopicResult] = field(default_factory=list)


# --- DeleteTopics (20) -----------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class DeleteTopicsRequest(Request):
    """v1 adds ``topic_ids``: topics to delete named by id (KIP-516), each answered with
    its id (and its name, unless the client may not describe it)."""

    topic_names: list[str] = field(default_factory=list)
    timeout_ms: int = 30_000
    topic_ids: list[bytes] = field(default_factory=list, since=1)


@dataclass(slots=True, kw_only=True)
class DeletableTopicResult:
    name: str
    topic_id: bytes = field(ZERO_TOPIC_ID, since=1)
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class DeleteTopicsResponse(Response):
    throttle_time_ms: int = 0
    responses: list[DeletableTopicResult] = field(default_factory=list)


# --- DeleteRecords (21): move partitions' log start offsets up -------------------------


@dataclass(slots=True, kw_only=True)
class DeleteRecordsPartition:
    partition_index: int
    offset: int
    """Records below it go; -1: the high watermark (everything readable)."""


@dataclass(slots=True, kw_only=True)
class DeleteRecordsTopic:
    name: str
    partitions: list[DeleteRecordsPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DeleteRecordsRequest(Request):
    topics: list[DeleteRecordsTopic] = field(default_factory=list)
    timeout_ms: int = 30_000


@dataclass(slots=True, kw_only=True)
class DeleteRecordsPartitionResult:
    partition_index: int
    low_watermark: int = -1
    """The lowest log start offset among the in-sync replicas after the deletion."""
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class DeleteRecordsTopicResult:
    name: str
    partitions: list[DeleteRecordsPartitionResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DeleteRecordsResponse(Response):
    throttle_time_ms: int = 0
    topics: list[DeleteRecordsTopicResult] = field(default_factory=list)


# --- CreatePartitions (37): more partitions for a topic ----------------------------------


@dataclass(slots=True, kw_only=True)
class CreatePartitionsAssignment:
    broker_ids: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class CreatePartitionsTopic:
    name: str
    count: int
    """The topic's partition count after the request (not how many to add)."""
    assignments: list[CreatePartitionsAssignment] | None = None
    """The new partitions' replicas, in order; None: the broker places them."""


@dataclass(slots=True, kw_only=True)
class CreatePartitionsRequest(Request):
    topics: list[CreatePartitionsTopic] = field(default_factory=list)
    timeout_ms: int = 30_000
    validate_only: bool = False


@dataclass(slots=True, kw_only=True)
class CreatePartitionsTopicResult:
    name: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class CreatePartitionsResponse(Response):
    throttle_time_ms: int = 0
    results: list[CreatePartitionsTopicResult] = field(default_factory=list)


# --- DescribeConfigs (32) and AlterConfigs (33) ----------------------------------------


class ConfigResourceType(enum.IntEnum):
    """Kafka's resource types for configs."""

    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    GROUP = 32


class ConfigSource(enum.IntEnum):
    """Where a config value comes from (Kafka's DescribeConfigs ``config_source``)."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5
    GROUP_CONFIG = 8


@dataclass(slots=True, kw_only=True)
class DescribeConfigsResource:
    resource_type: int
    resource_name: str
    configuration_keys: list[str] | None = None


@dataclass(slots=True, kw_only=True)
class DescribeConfigsRequest(Request):
    resources: list[DescribeConfigsResource] = field(default_factory=list)
    include_synonyms: bool = False
    include_documentation: bool = False


@dataclass(slots=True, kw_only=True)
class DescribeConfigsSynonym:
    name: str
    value: str | None = None
    source: int = ConfigSource.UNKNOWN


@dataclass(slots=True, kw_only=True)
class DescribeConfigsEntry:
    name: str
    value: str | None = None
    read_only: bool = False
    config_source: int = ConfigSource.UNKNOWN
    is_sensitive: bool = False
    synonyms: list[DescribeConfigsSynonym] = field(default_factory=list)
    config_type: str = "string"
    documentation: str | None = None


@dataclass(slots=True, kw_only=True)
class DescribeConfigsResult:
    error_code: int = 0
    error_message: str | None = None
    resource_type: int
    resource_name: str
    configs: list[DescribeConfigsEntry] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeConfigsResponse(Response):
    throttle_time_ms: int = 0
    results: list[DescribeConfigsResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterableConfig:
    name: str
    value: str | None = None


@dataclass(slots=True, kw_only=True)
class AlterConfigsResource:
    resource_type: int
    resource_name: str
    configs: list[AlterableConfig] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterConfigsRequest(Request):
    resources: list[AlterConfigsResource] = field(default_factory=list)
    validate_only: bool = False


@dataclass(slots=True, kw_only=True)
class AlterConfigsResourceResponse:
    error_code: int = 0
    error_message: str | None = None
    resource_type: int
    resource_name: str


@dataclass(slots=True, kw_only=True)
class AlterConfigsResponse(Response):
    throttle_time_ms: int = 0
    responses: list[AlterConfigsResourceResponse] = field(default_factory=list)


# --- IncrementalAlterConfigs (44): KIP-339 --------------------------------------------
# AlterConfigs replaces a resource's whole set of overrides; this changes single entries.


class AlterConfigOp(enum.IntEnum):
    """Kafka's ``config_operation`` (AlterConfigOp.OpType)."""

    SET = 0
    DELETE = 1  # back to the default
    APPEND = 2  # list configs only (cleanup.policy): add items
    SUBTRACT = 3  # list configs only: remove items


@dataclass(slots=True, kw_only=True)
class IncrementalAlterableConfig:
    name: str
    config_operation: int = AlterConfigOp.SET
    value: str | None = None


@dataclass(slots=True, kw_only=True)
class IncrementalAlterConfigsResource:
    resource_type: int
    resource_name: str
    configs: list[IncrementalAlterableConfig] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class IncrementalAlterConfigsRequest(Request):
    resources: list[IncrementalAlterConfigsResource] = field(default_factory=list)
    validate_only: bool = False


@dataclass(slots=True, kw_only=True)
class IncrementalAlterConfigsResponse(Response):
    throttle_time_ms: int = 0
    responses: list[AlterConfigsResourceResponse] = field(default_factory=list)


# --- controller to broker: LeaderAndIsr (4), StopReplica (5), UpdateMetadata (6) --------
# Sent only by the controller. Every one carries the controller's epoch; a broker refuses
# one from an older epoch with STALE_CONTROLLER_EPOCH (a deposed controller is fenced).

LEADER_DURING_DELETE = -2
"""UpdateMetadata's leader for a partition of a topic being deleted (Kafka's marker)."""

UPDATE_METADATA_INCREMENTAL = 1
"""UpdateMetadata v1 ``type``: only the partitions that changed, merged into the picture."""
UPDATE_METADATA_FULL = 2
"""UpdateMetadata v1 ``type``: the whole picture, which replaces the broker's (v0 always)."""


@dataclass(slots=True, kw_only=True)
class LeaderAndIsrPartitionState:
    topic_name: str
    partition_index: int
    controller_epoch: int
    leader: int
    leader_epoch: int
    isr: list[int] = field(default_factory=list)
    partition_epoch: int = 0
    """The partition state znode's version, for the leader's compare-and-set ISR writes."""
    replicas: list[int] = field(default_factory=list)
    is_new: bool = False


@dataclass(slots=True, kw_only=True)
class LeaderAndIsrLiveLeader:
    broker_id: int
    host_name: str
    port: int


@dataclass(slots=True, kw_only=True)
class LeaderAndIsrRequest(Request):
    """v1 adds ``topic_ids``: the id of each topic whose partitions it carries (KIP-516),
    which each replica's log keeps and is checked against."""

    controller_id: int
    controller_epoch: int
    broker_epoch: int = -1
    partition_states: list[LeaderAndIsrPartitionState] = field(default_factory=list)
    live_leaders: list[LeaderAndIsrLiveLeader] = field(default_factory=list)
    topic_ids: dict[str, bytes] = field(default_factory=dict, since=1)


@dataclass(slots=True, kw_only=True)
class PartitionError:
    topic_name: str
    partition_index: int
    error_code: int = 0


@dataclass(slots=True, kw_only=True)
class LeaderAndIsrResponse(Response):
    partition_errors: list[PartitionError] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class StopReplicaPartition:
    topic_name: str
    partition_index: int


@dataclass(slots=True, kw_only=True)
class StopReplicaRequest(Request):
    controller_id: int
    controller_epoch: int
    broker_epoch: int = -1
    delete_partitions: bool = False
    partitions: list[StopReplicaPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class StopReplicaResponse(Response):
    partition_errors: list[PartitionError] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class UpdateMetadataPartitionState:
    topic_name: str
    partition_index: int
    controller_epoch: int
    leader: int
    leader_epoch: int
    isr: list[int] = field(default_factory=list)
    zk_version: int = 0
    replicas: list[int] = field(default_factory=list)
    offline_replicas: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class UpdateMetadataEndpoint:
    """One of a broker's listeners (Kafka's UpdateMetadataEndpoint)."""

    listener: str
    host: str
    port: int
    security_protocol: str = "PLAINTEXT"


@dataclass(slots=True, kw_only=True)
class UpdateMetadataBroker:
    """A live broker; ``host``/``port`` are its inter-broker listener's, ``endpoints``
    (v2) every listener's, so each broker answers a client with the address of the
    listener the client came in on."""

    id: int
    host: str
    port: int
    rack: str | None = None
    endpoints: list[UpdateMetadataEndpoint] = field(default_factory=list, since=2)


@dataclass(slots=True, kw_only=True)
class UpdateMetadataRequest(Request):
    """v0 carries every partition of the cluster, and replaces the broker's picture. v1
    adds ``type`` (Kafka's v8 field, KIP-866, same values): :data:`UPDATE_METADATA_FULL`
    is v0's meaning; :data:`UPDATE_METADATA_INCREMENTAL` carries only the partitions that
    changed, merged into the picture, and ``deleted_topics``, the topics whose deletion
    finished (their partitions already left with :data:`LEADER_DURING_DELETE`). The live
    brokers are always all of them. v3 adds ``topic_ids``: the id of each topic whose
    partitions it carries (KIP-516)."""

    controller_id: int
    controller_epoch: int
    broker_epoch: int = -1
    type: int = field(UPDATE_METADATA_FULL, since=1)
    partition_states: list[UpdateMetadataPartitionState] = field(default_factory=list)
    live_brokers: list[UpdateMetadataBroker] = field(default_factory=list)
    deleted_topics: list[str] = field(default_factory=list, since=1)
    topic_ids: dict[str, bytes] = field(default_factory=dict, since=3)


@dataclass(slots=True, kw_only=True)
class UpdateMetadataResponse(Response):
    """Only the request-level error (STALE_CONTROLLER_EPOCH when fenced)."""


# --- OffsetForLeaderEpoch (23): where a follower's log and its leader's part ways -------


@dataclass(slots=True, kw_only=True)
class OffsetForLeaderPartition:
    partition: int
    current_leader_epoch: int = -1
    leader_epoch: int


@dataclass(slots=True, kw_only=True)
class OffsetForLeaderTopic:
    topic: str
    partitions: list[OffsetForLeaderPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetForLeaderEpochRequest(Request):
    replica_id: int = -1
    topics: list[OffsetForLeaderTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class EpochEndOffset:
    error_code: int = 0
    partition: int
    leader_epoch: int = -1
    end_offset: int = -1


@dataclass(slots=True, kw_only=True)
class OffsetForLeaderTopicResult:
    topic: str
    partitions: list[EpochEndOffset] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetForLeaderEpochResponse(Response):
    throttle_time_ms: int = 0
    topics: list[OffsetForLeaderTopicResult] = field(default_factory=list)


# --- ControlledShutdown (7): a stopping broker hands its leaderships over first ---------


@dataclass(slots=True, kw_only=True)
class ControlledShutdownRequest(Request):
    broker_id: int
    broker_epoch: int = -1


@dataclass(slots=True, kw_only=True)
class RemainingPartition:
    topic_name: str
    partition_index: int


@dataclass(slots=True, kw_only=True)
class ControlledShutdownResponse(Response):
    remaining_partitions: list[RemainingPartition] = field(default_factory=list)


# --- ElectLeaders (43): preferred (or unclean) leader election on demand ---------------


class ElectionType(enum.IntEnum):
    PREFERRED = 0
    UNCLEAN = 1


@dataclass(slots=True, kw_only=True)
class ElectLeadersTopicPartitions:
    topic: str
    partitions: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ElectLeadersRequest(Request):
    election_type: int = ElectionType.PREFERRED
    topic_partitions: list[ElectLeadersTopicPartitions] | None = None
    """None: every partition."""
    timeout_ms: int = 60_000


@dataclass(slots=True, kw_only=True)
class ElectLeadersPartitionResult:
    partition_id: int
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class ElectLeadersTopicResult:
    topic: str
    partition_result: list[ElectLeadersPartitionResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ElectLeadersResponse(Response):
    throttle_time_ms: int = 0
    replica_election_results: list[ElectLeadersTopicResult] = field(default_factory=list)


# --- AlterReplicaLogDirs (34) ------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class AlterReplicaLogDirTopic:
    name: str
    partitions: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterReplicaLogDir:
    path: str
    """One of the broker's ``log.dirs``: where these partitions' logs are to be."""
    topics: list[AlterReplicaLogDirTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterReplicaLogDirsRequest(Request):
    dirs: list[AlterReplicaLogDir] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterReplicaLogDirPartitionResult:
    partition_index: int
    error_code: int = 0


@dataclass(slots=True, kw_only=True)
class AlterReplicaLogDirTopicResult:
    topic_name: str
    partitions: list[AlterReplicaLogDirPartitionResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterReplicaLogDirsResponse(Response):
    throttle_time_ms: int = 0
    results: list[AlterReplicaLogDirTopicResult] = field(default_factory=list)


# --- DescribeLogDirs (35) ----------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class DescribableLogDirTopic:
    topic: str
    partitions: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeLogDirsRequest(Request):
    topics: list[DescribableLogDirTopic] | None = None
    """None: every partition the broker holds."""


@dataclass(slots=True, kw_only=True)
class DescribeLogDirsPartition:
    partition_index: int
    partition_size: int = 0
    """Bytes of the partition's segments in this directory."""
    offset_lag: int = 0
    """How far its log end is behind the high watermark (Kafka's: 0 on a leader)."""
    is_future_key: bool = False


@dataclass(slots=True, kw_only=True)
class DescribeLogDirsTopic:
    name: str
    partitions: list[DescribeLogDirsPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeLogDirsResult:
    error_code: int = 0
    log_dir: str
    topics: list[DescribeLogDirsTopic] = field(default_factory=list)
    total_bytes: int = -1
    """The directory's file system: its size and what is free (Kafka's v4 fields)."""
    usable_bytes: int = -1


@dataclass(slots=True, kw_only=True)
class DescribeLogDirsResponse(Response):
    throttle_time_ms: int = 0
    results: list[DescribeLogDirsResult] = field(default_factory=list)


# --- AlterPartitionReassignments (45), ListPartitionReassignments (46) -----------------


@dataclass(slots=True, kw_only=True)
class ReassignablePartition:
    partition_index: int
    replicas: list[int] | None = None
    """The new replicas, preferred leader first; None cancels the partition's move."""


@dataclass(slots=True, kw_only=True)
class ReassignableTopic:
    name: str
    partitions: list[ReassignablePartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterPartitionReassignmentsRequest(Request):
    timeout_ms: int = 60_000
    topics: list[ReassignableTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ReassignablePartitionResponse:
    partition_index: int
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class ReassignableTopicResponse:
    name: str
    partitions: list[ReassignablePartitionResponse] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterPartitionReassignmentsResponse(Response):
    throttle_time_ms: int = 0
    responses: list[ReassignableTopicResponse] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ListPartitionReassignmentsTopics:
    name: str
    partition_indexes: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ListPartitionReassignmentsRequest(Request):
    timeout_ms: int = 60_000
    topics: list[ListPartitionReassignmentsTopics] | None = None
    """None: every partition being reassigned."""


@dataclass(slots=True, kw_only=True)
class OngoingPartitionReassignment:
    partition_index: int
    replicas: list[int] = field(default_factory=list)
    adding_replicas: list[int] = field(default_factory=list)
    removing_replicas: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OngoingTopicReassignment:
    name: str
    partitions: list[OngoingPartitionReassignment] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ListPartitionReassignmentsResponse(Response):
    throttle_time_ms: int = 0
    topics: list[OngoingTopicReassignment] = field(default_factory=list)


# --- consumer groups: FindCoordinator (10), OffsetCommit (8), OffsetFetch (9) -----------


class CoordinatorType(enum.IntEnum):
    GROUP = 0
    TRANSACTION = 1


@dataclass(slots=True, kw_only=True)
class FindCoordinatorRequest(Request):
    key: str
    key_type: int = CoordinatorType.GROUP
    keys: list[str] = field(default_factory=list, since=KAFKA_ONLY)
    """Kafka's v4+ (KIP-699): several keys of the type, each answered on its own."""


@dataclass(slots=True, kw_only=True)
class Coordinator:
    """One key's coordinator in a FindCoordinator v4+ answer (KIP-699)."""

    key: str
    node_id: int = -1
    host: str = ""
    port: int = -1
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class FindCoordinatorResponse(Response):
    throttle_time_ms: int = 0
    node_id: int = -1
    host: str = ""
    port: int = -1
    coordinators: list[Coordinator] = field(default_factory=list, since=KAFKA_ONLY)


@dataclass(slots=True, kw_only=True)
class OffsetCommitRequestPartition:
    partition_index: int
    committed_offset: int
    committed_leader_epoch: int = -1
    committed_metadata: str | None = None


@dataclass(slots=True, kw_only=True)
class OffsetCommitRequestTopic:
    name: str
    partitions: list[OffsetCommitRequestPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetCommitRequest(Request):
    group_id: str
    generation_id: int = -1
    """-1 with an empty member id: a commit outside group membership (manual assignment)."""
    member_id: str = ""
    group_instance_id: str | None = None
    retention_time_ms: int = -1
    topics: list[OffsetCommitRequestTopic] = field(default_factory=list)
    kafka_version: int = field(-1, since=KAFKA_ONLY)
    """The version of Kafka's OffsetCommit it came in (-1: Headwater's own protocol): a
    member of the new consumer protocol must commit with v9 or above, as Kafka's."""


@dataclass(slots=True, kw_only=True)
class OffsetCommitResponsePartition:
    partition_index: int
    error_code: int = 0


@dataclass(slots=True, kw_only=True)
class OffsetCommitResponseTopic:
    name: str
    partitions: list[OffsetCommitResponsePartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetCommitResponse(Response):
    throttle_time_ms: int = 0
    topics: list[OffsetCommitResponseTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetFetchRequestTopic:
    name: str
    partition_indexes: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetFetchRequestGroup:
    """One group of Kafka's OffsetFetch v8+ (several groups in one request)."""

    group_id: str
    member_id: str | None = None
    """v9: a member of the new consumer protocol fetching (null: an admin's fetch)."""
    member_epoch: int = -1
    topics: list[OffsetFetchRequestTopic] | None = None


@dataclass(slots=True, kw_only=True)
class OffsetFetchRequest(Request):
    group_id: str
    topics: list[OffsetFetchRequestTopic] | None = None
    """None: every partition the group has committed."""
    require_stable: bool = False
    member_id: str | None = field(None, since=KAFKA_ONLY)
    """Kafka's v9: the member fetching (its epoch is checked, as a commit's)."""
    member_epoch: int = field(-1, since=KAFKA_ONLY)
    groups: list[OffsetFetchRequestGroup] | None = field(None, since=KAFKA_ONLY)
    """Kafka's v8+: the groups asked, each answered on its own (``group_id`` and
    ``topics`` above unused then)."""


@dataclass(slots=True, kw_only=True)
class OffsetFetchResponsePartition:
    partition_index: int
    committed_offset: int = -1
    committed_leader_epoch: int = -1
    metadata: str | None = None
    error_code: int = 0


@dataclass(slots=True, kw_only=True)
class OffsetFetchResponseTopic:
    name: str
    partitions: list[OffsetFetchResponsePartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetFetchResponseGroup:
    group_id: str
    topics: list[OffsetFetchResponseTopic] = field(default_factory=list)
    error_code: int = 0


@dataclass(slots=True, kw_only=True)
class OffsetFetchResponse(Response):
    throttle_time_ms: int = 0
    topics: list[OffsetFetchResponseTopic] = field(default_factory=list)
    groups: list[OffsetFetchResponseGroup] | None = field(None, since=KAFKA_ONLY)
    """Kafka's v8+: each group asked, with its error."""


# --- group membership: JoinGroup (11), SyncGroup (14), Heartbeat (12), LeaveGroup (13) --


@dataclass(slots=True, kw_only=True)
class JoinGroupRequestProtocol:
    name: str
    metadata: bytes = b""


@dataclass(slots=True, kw_only=True)
class JoinGroupRequest(Request):
    group_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int = -1
    """-1: the session timeout (as JoinGroup v0)."""
    member_id: str = ""
    group_instance_id: str | None = None
    protocol_type: str
    protocols: list[JoinGroupRequestProtocol] = field(default_factory=list)
    client_id: str = ""
    """Shown by DescribeGroups. Kafka takes it from the request header, which ours lacks
    (DESIGN.md "The wire"), so the member says it here."""
    reason: str | None = field(None, since=KAFKA_ONLY)
    """Why the member (re)joins (Kafka's JoinGroup v8+, KIP-800): logged."""
    supports_skip_assignment: bool = field(False, since=KAFKA_ONLY)
    """The client reads SkipAssignment (Kafka's JoinGroup v9+, KIP-814)."""


@dataclass(slots=True, kw_only=True)
class JoinGroupResponseMember:
    member_id: str
    group_instance_id: str | None = None
    metadata: bytes = b""


@dataclass(slots=True, kw_only=True)
class JoinGroupResponse(Response):
    throttle_time_ms: int = 0
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    member_id: str = ""
    members: list[JoinGroupResponseMember] = field(default_factory=list)
    skip_assignment: bool = field(False, since=KAFKA_ONLY)
    """KIP-814: the member is the leader but must not assign (a static leader's restart
    in a Stable group); its SyncGroup gets its current assignment."""


@dataclass(slots=True, kw_only=True)
class SyncGroupRequestAssignment:
    member_id: str
    assignment: bytes = b""


@dataclass(slots=True, kw_only=True)
class SyncGroupRequest(Request):
    """v1 adds Kafka's v5 ``protocol_type`` and ``protocol_name``: when given, they must
    be the group's (INCONSISTENT_GROUP_PROTOCOL otherwise), and the answer says the
    group's."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None
    assignments: list[SyncGroupRequestAssignment] = field(default_factory=list)
    protocol_type: str | None = field(None, since=1)
    protocol_name: str | None = field(None, since=1)


@dataclass(slots=True, kw_only=True)
class SyncGroupResponse(Response):
    throttle_time_ms: int = 0
    assignment: bytes = b""
    protocol_type: str | None = field(None, since=1)
    protocol_name: str | None = field(None, since=1)


@dataclass(slots=True, kw_only=True)
class HeartbeatRequest(Request):
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@dataclass(slots=True, kw_only=True)
class HeartbeatResponse(Response):
    throttle_time_ms: int = 0


@dataclass(slots=True, kw_only=True)
class LeaveGroupMember:
    member_id: str = ""
    group_instance_id: str | None = None
    reason: str | None = field(None, since=KAFKA_ONLY)
    """Why it leaves (Kafka's LeaveGroup v5+, KIP-800): logged."""


@dataclass(slots=True, kw_only=True)
class LeaveGroupRequest(Request):
    group_id: str
    member_id: str = ""
    group_instance_id: str | None = None
    """A static member may be removed by its instance id (Kafka's LeaveGroup v3)."""
    members: list[LeaveGroupMember] | None = field(None, since=1)
    """v1 (Kafka's v3+): several members at once (an administrator's "remove members"),
    each answered on its own; None: the one above."""


@dataclass(slots=True, kw_only=True)
class LeaveGroupMemberResponse:
    member_id: str = ""
    group_instance_id: str | None = None
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class LeaveGroupResponse(Response):
    throttle_time_ms: int = 0
    members: list[LeaveGroupMemberResponse] = field(default_factory=list, since=1)
    """v1: each member of the request's ``members``, with whether it left."""


# --- idempotent producers: InitProducerId (22) -------------------------------------------


@dataclass(slots=True, kw_only=True)
class InitProducerIdRequest(Request):
    transactional_id: str | None = None
    """None: an idempotent (not transactional) producer; any broker answers."""
    transaction_timeout_ms: int = -1
    producer_id: int = -1
    producer_epoch: int = -1


@dataclass(slots=True, kw_only=True)
class InitProducerIdResponse(Response):
    throttle_time_ms: int = 0
    producer_id: int = -1
    producer_epoch: int = -1


# --- transactions: AddPartitionsToTxn (24), AddOffsetsToTxn (25), EndTxn (26),
# WriteTxnMarkers (27), TxnOffsetCommit (28) -----------------------------------------


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnTopic:
    name: str
    partitions: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnRequest(Request):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    topics: list[AddPartitionsToTxnTopic] = field(default_factory=list)
    verify_only: bool = field(False, since=1)
    """KIP-890: a partition leader asks whether the partitions are in the producer's
    ongoing transaction, adding nothing (brokers only: ClusterAction). Kafka's v4 batches
    several transactions per request; a leader here asks for one produce's at a time."""


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnPartitionResult:
    partition_index: int
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnTopicResult:
    name: str
    results: list[AddPartitionsToTxnPartitionResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AddPartitionsToTxnResponse(Response):
    throttle_time_ms: int = 0
    results: list[AddPartitionsToTxnTopicResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AddOffsetsToTxnRequest(Request):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    group_id: str


@dataclass(slots=True, kw_only=True)
class AddOffsetsToTxnResponse(Response):
    throttle_time_ms: int = 0


@dataclass(slots=True, kw_only=True)
class EndTxnRequest(Request):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    committed: bool


@dataclass(slots=True, kw_only=True)
class EndTxnResponse(Response):
    throttle_time_ms: int = 0


@dataclass(slots=True, kw_only=True)
class WritableTxnMarkerTopic:
    name: str
    partition_indexes: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class WritableTxnMarker:
    producer_id: int
    producer_epoch: int
    transaction_result: bool
    """True: COMMIT; False: ABORT."""
    topics: list[WritableTxnMarkerTopic] = field(default_factory=list)
    coordinator_epoch: int


@dataclass(slots=True, kw_only=True)
class WriteTxnMarkersRequest(Request):
    markers: list[WritableTxnMarker] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class WritableTxnMarkerPartitionResult:
    partition_index: int
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class WritableTxnMarkerTopicResult:
    name: str
    partitions: list[WritableTxnMarkerPartitionResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class WritableTxnMarkerResult:
    producer_id: int
    topics: list[WritableTxnMarkerTopicResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class WriteTxnMarkersResponse(Response):
    markers: list[WritableTxnMarkerResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class TxnOffsetCommitRequest(Request):
    """OffsetCommit's partitions, held by the group until the transaction ends (written
    to ``__consumer_offsets`` in the transaction, applied at its COMMIT marker)."""

    transactional_id: str
    group_id: str
    producer_id: int
    producer_epoch: int
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None
    topics: list[OffsetCommitRequestTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class TxnOffsetCommitResponse(Response):
    throttle_time_ms: int = 0
    topics: list[OffsetCommitResponseTopic] = field(default_factory=list)


# --- transaction administration: DescribeProducers (61), DescribeTransactions (65),
# ListTransactions (66) --------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class DescribeProducersTopic:
    name: str
    partition_indexes: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeProducersRequest(Request):
    topics: list[DescribeProducersTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ProducerStateData:
    producer_id: int
    producer_epoch: int
    last_sequence: int = -1
    last_timestamp: int = -1
    coordinator_epoch: int = -1
    current_txn_start_offset: int = -1
    """The first offset of its transaction open in the partition (-1: none)."""


@dataclass(slots=True, kw_only=True)
class DescribeProducersPartition:
    partition_index: int
    error_code: int = 0
    error_message: str | None = None
    active_producers: list[ProducerStateData] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeProducersTopicResponse:
    name: str
    partitions: list[DescribeProducersPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeProducersResponse(Response):
    throttle_time_ms: int = 0
    topics: list[DescribeProducersTopicResponse] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeTransactionsRequest(Request):
    transactional_ids: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class TransactionTopicData:
    topic: str
    partitions: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class TransactionStateData:
    error_code: int = 0
    error_message: str | None = None
    transactional_id: str
    transaction_state: str = ""
    transaction_timeout_ms: int = -1
    transaction_start_time_ms: int = -1
    producer_id: int = -1
    producer_epoch: int = -1
    topics: list[TransactionTopicData] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeTransactionsResponse(Response):
    throttle_time_ms: int = 0
    transaction_states: list[TransactionStateData] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ListTransactionsRequest(Request):
    state_filters: list[str] = field(default_factory=list)
    """Kafka's state names (Ongoing, PrepareCommit, ...); none: every state."""
    producer_id_filters: list[int] = field(default_factory=list)
    duration_filter: int = field(-1, since=1)
    """v1 (Kafka's KIP-994): only transactions running longer than this many ms; -1: all."""


@dataclass(slots=True, kw_only=True)
class ListedTransaction:
    transactional_id: str
    producer_id: int
    transaction_state: str


@dataclass(slots=True, kw_only=True)
class ListTransactionsResponse(Response):
    throttle_time_ms: int = 0
    unknown_state_filters: list[str] = field(default_factory=list)
    transaction_states: list[ListedTransaction] = field(default_factory=list)


# --- the new consumer group protocol (KIP-848): ConsumerGroupHeartbeat (68) --------------


@dataclass(slots=True, kw_only=True)
class ConsumerGroupTopicPartitions:
    topic_id: bytes
    partitions: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ConsumerGroupHeartbeatRequest(Request):
    """A member's heartbeat: joins with ``member_epoch`` 0, leaves with -1 (-2: a static
    member, for now). A null field is unchanged since the last heartbeat."""

    group_id: str
    member_id: str = ""
    """Made by the client (Kafka's v1, KIP-1082); v0: made by the coordinator."""
    member_epoch: int = 0
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: list[str] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    topic_partitions: list[ConsumerGroupTopicPartitions] | None = None
    """The partitions the member owns now."""
    client_id: str = ""
    """Shown when the group is described (Kafka takes it from the request header)."""


@dataclass(slots=True, kw_only=True)
class ConsumerGroupAssignment:
    topic_partitions: list[ConsumerGroupTopicPartitions] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ConsumerGroupHeartbeatResponse(Response):
    throttle_time_ms: int = 0
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: ConsumerGroupAssignment | None = None
    """None: the member's partitions are as they were."""


@dataclass(slots=True, kw_only=True)
class ConsumerGroupDescribeRequest(Request):
    group_ids: list[str] = field(default_factory=list)
    include_authorized_operations: bool = False


@dataclass(slots=True, kw_only=True)
class DescribedTopicPartitions:
    topic_id: bytes
    topic_name: str
    partitions: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribedAssignment:
    topic_partitions: list[DescribedTopicPartitions] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ConsumerGroupDescribedMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    member_epoch: int = 0
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: list[str] = field(default_factory=list)
    subscribed_topic_regex: str | None = None
    assignment: DescribedAssignment = field(default_factory=DescribedAssignment)
    target_assignment: DescribedAssignment = field(default_factory=DescribedAssignment)
    member_type: int = 1
    """Kafka's v1 (KIP-1099): 1, a member of the consumer protocol (0: classic)."""


@dataclass(slots=True, kw_only=True)
class ConsumerGroupDescribed:
    error_code: int = 0
    error_message: str | None = None
    group_id: str
    group_state: str = ""
    group_epoch: int = 0
    assignment_epoch: int = 0
    assignor_name: str = ""
    members: list[ConsumerGroupDescribedMember] = field(default_factory=list)
    authorized_operations: int = -(2**31)


@dataclass(slots=True, kw_only=True)
class ConsumerGroupDescribeResponse(Response):
    throttle_time_ms: int = 0
    groups: list[ConsumerGroupDescribed] = field(default_factory=list)


# --- share groups (KIP-932): ShareGroupHeartbeat (76), ShareGroupDescribe (77),
# --- ShareFetch (78), ShareAcknowledge (79) --------------------------------------------


@dataclass(slots=True, kw_only=True)
class ShareGroupHeartbeatRequest(Request):
    """A share group member's heartbeat: joins with ``member_epoch`` 0, leaves with -1. A
    null field is unchanged since the last heartbeat."""

    group_id: str
    member_id: str = ""
    """Made by the client (a UUID it keeps for its life, KIP-1082)."""
    member_epoch: int = 0
    rack_id: str | None = None
    subscribed_topic_names: list[str] | None = None
    client_id: str = ""
    """Shown when the group is described (Kafka takes it from the request header)."""


@dataclass(slots=True, kw_only=True)
class ShareGroupHeartbeatResponse(Response):
    throttle_time_ms: int = 0
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: ConsumerGroupAssignment | None = None
    """None: the member's partitions are as they were."""


@dataclass(slots=True, kw_only=True)
class ShareGroupDescribeRequest(Request):
    group_ids: list[str] = field(default_factory=list)
    include_authorized_operations: bool = False


@dataclass(slots=True, kw_only=True)
class ShareGroupDescribedMember:
    member_id: str
    rack_id: str | None = None
    member_epoch: int = 0
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: list[str] = field(default_factory=list)
    assignment: DescribedAssignment = field(default_factory=DescribedAssignment)


@dataclass(slots=True, kw_only=True)
class ShareGroupDescribed:
    error_code: int = 0
    error_message: str | None = None
    group_id: str
    group_state: str = ""
    group_epoch: int = 0
    assignment_epoch: int = 0
    assignor_name: str = ""
    members: list[ShareGroupDescribedMember] = field(default_factory=list)
    authorized_operations: int = -(2**31)


@dataclass(slots=True, kw_only=True)
class ShareGroupDescribeResponse(Response):
    throttle_time_ms: int = 0
    groups: list[ShareGroupDescribed] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AcknowledgementBatch:
    first_offset: int
    last_offset: int
    acknowledge_types: list[int] = field(default_factory=list)
    """One type for the whole range, or one per offset: 0 gap, 1 accept, 2 release,
    3 reject."""


@dataclass(slots=True, kw_only=True)
class ShareFetchPartition:
    partition_index: int
    acknowledgement_batches: list[AcknowledgementBatch] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ShareFetchTopic:
    topic_id: bytes
    partitions: list[ShareFetchPartition] = field(default_factory=list)
    topic: str = ""
    """Its name here (the handler names it from the id; not on the wire)."""


@dataclass(slots=True, kw_only=True)
class ShareForgottenTopic:
    topic_id: bytes
    partitions: list[int] = field(default_factory=list)
    topic: str = ""


@dataclass(slots=True, kw_only=True)
class ShareFetchRequest(Request):
    """Records for a share group's member, from a share session (epoch 0 opens it, -1
    closes it); the acknowledgements of what earlier fetches gave ride along."""

    group_id: str | None = None
    member_id: str | None = None
    share_session_epoch: int = 0
    max_wait_ms: int = 0
    min_bytes: int = 0
    max_bytes: int = 0x7FFFFFFF
    max_records: int = 500
    batch_size: int = 500
    topics: list[ShareFetchTopic] = field(default_factory=list)
    forgotten_topics_data: list[ShareForgottenTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AcquiredRecords:
    first_offset: int
    last_offset: int
    delivery_count: int


@dataclass(slots=True, kw_only=True)
class ShareFetchPartitionData:
    partition_index: int
    error_code: int = 0
    error_message: str | None = None
    acknowledge_error_code: int = 0
    acknowledge_error_message: str | None = None
    current_leader: LeaderIdAndEpoch = field(default_factory=LeaderIdAndEpoch)
    records: Records = None
    acquired_records: list[AcquiredRecords] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ShareFetchTopicResponse:
    topic_id: bytes
    partitions: list[ShareFetchPartitionData] = field(default_factory=list)
    topic: str = ""


@dataclass(slots=True, kw_only=True)
class ShareFetchResponse(Response):
    throttle_time_ms: int = 0
    acquisition_lock_timeout_ms: int = 0
    topics: list[ShareFetchTopicResponse] = field(default_factory=list)
    node_endpoints: list[NodeEndpoint] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ShareAcknowledgePartition:
    partition_index: int
    acknowledgement_batches: list[AcknowledgementBatch] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ShareAcknowledgeTopic:
    topic_id: bytes
    partitions: list[ShareAcknowledgePartition] = field(default_factory=list)
    topic: str = ""


@dataclass(slots=True, kw_only=True)
class ShareAcknowledgeRequest(Request):
    group_id: str | None = None
    member_id: str | None = None
    share_session_epoch: int = 0
    topics: list[ShareAcknowledgeTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ShareAcknowledgePartitionData:
    partition_index: int
    error_code: int = 0
    error_message: str | None = None
    current_leader: LeaderIdAndEpoch = field(default_factory=LeaderIdAndEpoch)


@dataclass(slots=True, kw_only=True)
class ShareAcknowledgeTopicResponse:
    topic_id: bytes
    partitions: list[ShareAcknowledgePartitionData] = field(default_factory=list)
    topic: str = ""


@dataclass(slots=True, kw_only=True)
class ShareAcknowledgeResponse(Response):
    throttle_time_ms: int = 0
    topics: list[ShareAcknowledgeTopicResponse] = field(default_factory=list)
    node_endpoints: list[NodeEndpoint] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ShareStateBatch:
    """Offsets of one state in a share group's delivery state of a partition: 0
    available, 2 acknowledged, 4 archived; with how often each was delivered."""

    first_offset: int
    last_offset: int
    delivery_state: int
    delivery_count: int


@dataclass(slots=True, kw_only=True)
class ReadShareGroupStateRequest(Request):
    """A partition's new leader asks the group's coordinator for the group's delivery
    state of it (Kafka's ReadShareGroupState, one partition a request). Its leader epoch
    is recorded: a write from an older leader is refused from then on."""

    group_id: str
    topic_id: bytes
    partition: int
    leader_epoch: int
    start_offset: int = -1
    """Where the group starts if it has no state stored: stored so, in the same step
    (Kafka's InitializeShareGroupState), so that the read fences an older leader even
    then. -1: nothing is stored."""


@dataclass(slots=True, kw_only=True)
class ReadShareGroupStateResponse(Response):
    leader_epoch: int = -1
    """The epoch of the leader that stored the state before this read (-1: none)."""
    start_offset: int = -1
    """-1: none stored (the group never read the partition)."""
    state_batches: list[ShareStateBatch] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class WriteShareGroupStateRequest(Request):
    """The partition's leader stores the group's delivery state of it (Kafka's
    WriteShareGroupState): the whole of it, replacing what was stored."""

    group_id: str
    topic_id: bytes
    partition: int
    leader_epoch: int
    start_offset: int
    state_batches: list[ShareStateBatch] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class WriteShareGroupStateResponse(Response):
    pass


@dataclass(slots=True, kw_only=True)
class DescribeShareGroupOffsetsRequest(Request):
    """Where a share group is in each partition it has read (Kafka's
    DescribeShareGroupOffsets, one group a request). ``topics`` None: every one."""

    group_id: str
    topics: list[str] | None = None


@dataclass(slots=True, kw_only=True)
class ShareGroupPartitionOffset:
    partition_index: int
    start_offset: int = -1
    """The share-partition start offset: every record below it is done (-1: none stored)."""
    leader_epoch: int = -1
    delivery_complete_count: int = 0
    """Records at or past the start offset done already (acknowledged or archived):
    what the lag (the log's end minus the start) does not count (Kafka 4.2's)."""
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class ShareGroupTopicOffsets:
    topic: str
    topic_id: bytes
    partitions: list[ShareGroupPartitionOffset] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeShareGroupOffsetsResponse(Response):
    throttle_time_ms: int = 0
    topics: list[ShareGroupTopicOffsets] = field(default_factory=list)


# --- group administration: ListGroups (16), DescribeGroups (15), DeleteGroups (42) -----


@dataclass(slots=True, kw_only=True)
class ListGroupsRequest(Request):
    states_filter: list[str] = field(default_factory=list)
    """Kafka's group states (Empty, Stable, ...); empty: every group."""
    types_filter: list[str] = field(default_factory=list)
    """Kafka's group types (classic, consumer; KIP-848); empty: every group."""


@dataclass(slots=True, kw_only=True)
class ListedGroup:
    group_id: str
    protocol_type: str = ""
    group_state: str = ""
    group_type: str = "classic"
    """``consumer`` for a group of the new consumer protocol (KIP-848)."""


@dataclass(slots=True, kw_only=True)
class ListGroupsResponse(Response):
    throttle_time_ms: int = 0
    groups: list[ListedGroup] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeGroupsRequest(Request):
    groups: list[str] = field(default_factory=list)
    missing_is_an_error: bool = field(False, since=KAFKA_ONLY)
    """Kafka's DescribeGroups v6+ (KIP-1043): a group that does not exist is
    GROUP_ID_NOT_FOUND, not a Dead group without members."""


@dataclass(slots=True, kw_only=True)
class DescribedGroupMember:
    member_id: str
    group_instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    member_metadata: bytes = b""
    """The member's subscription (for protocol type "consumer": ConsumerProtocol bytes)."""
    member_assignment: bytes = b""


@dataclass(slots=True, kw_only=True)
class DescribedGroup:
    error_code: int = 0
    error_message: str | None = None
    group_id: str
    group_state: str = ""
    """Kafka's: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead."""
    protocol_type: str = ""
    protocol_data: str = ""
    """The assignment strategy of the current generation."""
    generation_id: int = -1
    leader: str = ""
    members: list[DescribedGroupMember] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeGroupsResponse(Response):
    throttle_time_ms: int = 0
    groups: list[DescribedGroup] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DeleteGroupsRequest(Request):
    groups_names: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DeletableGroupResult:
    group_id: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class DeleteGroupsResponse(Response):
    throttle_time_ms: int = 0
    results: list[DeletableGroupResult] = field(default_factory=list)


# --- OffsetDelete (47) --------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class OffsetDeleteRequestPartition:
    partition_index: int


@dataclass(slots=True, kw_only=True)
class OffsetDeleteRequestTopic:
    name: str
    partitions: list[OffsetDeleteRequestPartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetDeleteRequest(Request):
    group_id: str
    topics: list[OffsetDeleteRequestTopic] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetDeleteResponsePartition:
    partition_index: int
    error_code: int = 0


@dataclass(slots=True, kw_only=True)
class OffsetDeleteResponseTopic:
    name: str
    partitions: list[OffsetDeleteResponsePartition] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class OffsetDeleteResponse(Response):
    throttle_time_ms: int = 0
    topics: list[OffsetDeleteResponseTopic] = field(default_factory=list)


# --- DescribeClientQuotas (48), AlterClientQuotas (49) -------------------------------------


@dataclass(slots=True, kw_only=True)
class QuotaFilterComponent:
    entity_type: str
    match_type: int = 0
    """0: the name in ``match``; 1: the default entity; 2: any entity of the type."""
    match: str | None = None


@dataclass(slots=True, kw_only=True)
class DescribeClientQuotasRequest(Request):
    components: list[QuotaFilterComponent] = field(default_factory=list)
    strict: bool = False
    """Only entities with exactly these components (else also those with more)."""


@dataclass(slots=True, kw_only=True)
class QuotaEntityPart:
    entity_type: str
    entity_name: str | None = None
    """None: the default entity of the type."""


@dataclass(slots=True, kw_only=True)
class QuotaValue:
    key: str
    value: float


@dataclass(slots=True, kw_only=True)
class DescribeClientQuotasEntry:
    entity: list[QuotaEntityPart] = field(default_factory=list)
    values: list[QuotaValue] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeClientQuotasResponse(Response):
    throttle_time_ms: int = 0
    entries: list[DescribeClientQuotasEntry] | None = None


@dataclass(slots=True, kw_only=True)
class QuotaOp:
    key: str
    value: float = 0.0
    remove: bool = False


@dataclass(slots=True, kw_only=True)
class AlterClientQuotasEntry:
    entity: list[QuotaEntityPart] = field(default_factory=list)
    ops: list[QuotaOp] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterClientQuotasRequest(Request):
    entries: list[AlterClientQuotasEntry] = field(default_factory=list)
    validate_only: bool = False


@dataclass(slots=True, kw_only=True)
class AlterClientQuotasResult:
    error_code: int = 0
    error_message: str | None = None
    entity: list[QuotaEntityPart] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterClientQuotasResponse(Response):
    throttle_time_ms: int = 0
    entries: list[AlterClientQuotasResult] = field(default_factory=list)


# --- DescribeAcls (29), CreateAcls (30), DeleteAcls (31) -----------------------------------
# codes: protocol.acls (ResourceType, PatternType, Operation, Permission)


@dataclass(slots=True, kw_only=True)
class AclFilterFields:
    resource_type_filter: int
    resource_name_filter: str | None = None
    pattern_type_filter: int = 3  # LITERAL, as Kafka's v0
    principal_filter: str | None = None
    host_filter: str | None = None
    operation: int
    permission_type: int


@dataclass(slots=True, kw_only=True)
class DescribeAclsRequest(AclFilterFields, Request):
    pass


@dataclass(slots=True, kw_only=True)
class AclDescription:
    principal: str
    host: str
    operation: int
    permission_type: int


@dataclass(slots=True, kw_only=True)
class DescribeAclsResource:
    resource_type: int
    resource_name: str
    pattern_type: int
    acls: list[AclDescription] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeAclsResponse(Response):
    throttle_time_ms: int = 0
    resources: list[DescribeAclsResource] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AclCreation:
    resource_type: int
    resource_name: str
    resource_pattern_type: int
    principal: str
    host: str
    operation: int
    permission_type: int


@dataclass(slots=True, kw_only=True)
class CreateAclsRequest(Request):
    creations: list[AclCreation] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AclCreationResult:
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class CreateAclsResponse(Response):
    throttle_time_ms: int = 0
    results: list[AclCreationResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DeleteAclsFilter(AclFilterFields):
    pass


@dataclass(slots=True, kw_only=True)
class DeleteAclsRequest(Request):
    filters: list[DeleteAclsFilter] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DeleteAclsMatchingAcl:
    error_code: int = 0
    error_message: str | None = None
    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission_type: int


@dataclass(slots=True, kw_only=True)
class DeleteAclsFilterResult:
    error_code: int = 0
    error_message: str | None = None
    matching_acls: list[DeleteAclsMatchingAcl] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DeleteAclsResponse(Response):
    throttle_time_ms: int = 0
    filter_results: list[DeleteAclsFilterResult] = field(default_factory=list)


# --- SaslHandshake (17), SaslAuthenticate (36) --------------------------------------------


@dataclass(slots=True, kw_only=True)
class SaslHandshakeRequest(Request):
    mechanism: str


@dataclass(slots=True, kw_only=True)
class SaslHandshakeResponse(Response):
    mechanisms: list[str] = field(default_factory=list)
    """The mechanisms the listener offers."""


@dataclass(slots=True, kw_only=True)
class SaslAuthenticateRequest(Request):
    auth_bytes: bytes = b""


@dataclass(slots=True, kw_only=True)
class SaslAuthenticateResponse(Response):
    auth_bytes: bytes = b""
    session_lifetime_ms: int = 0
    """0: the session does not expire (no re-authentication, Kafka's KIP-368, is asked)."""


# --- DescribeUserScramCredentials (50), AlterUserScramCredentials (51) -------------------

SCRAM_MECHANISM_CODES = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
"""Kafka's ScramMechanism numbers, as these APIs carry them."""


@dataclass(slots=True, kw_only=True)
class UserName:
    name: str


@dataclass(slots=True, kw_only=True)
class DescribeUserScramCredentialsRequest(Request):
    users: list[UserName] | None = None
    """None or empty: every user with a SCRAM credential."""


@dataclass(slots=True, kw_only=True)
class CredentialInfo:
    mechanism: int
    iterations: int


@dataclass(slots=True, kw_only=True)
class DescribeUserScramCredentialsResult:
    user: str
    error_code: int = 0
    error_message: str | None = None
    credential_infos: list[CredentialInfo] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeUserScramCredentialsResponse(Response):
    throttle_time_ms: int = 0
    results: list[DescribeUserScramCredentialsResult] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ScramCredentialDeletion:
    name: str
    mechanism: int


@dataclass(slots=True, kw_only=True)
class ScramCredentialUpsertion:
    name: str
    mechanism: int
    iterations: int
    salt: bytes
    salted_password: bytes
    """PBKDF2 of the password with ``salt`` and ``iterations``: the password itself never
    travels (Kafka's KIP-554)."""


@dataclass(slots=True, kw_only=True)
class AlterUserScramCredentialsRequest(Request):
    deletions: list[ScramCredentialDeletion] = field(default_factory=list)
    upsertions: list[ScramCredentialUpsertion] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AlterUserScramCredentialsResult:
    user: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True, kw_only=True)
class AlterUserScramCredentialsResponse(Response):
    throttle_time_ms: int = 0
    results: list[AlterUserScramCredentialsResult] = field(default_factory=list)


# --- the registry ----------------------------------------------------------------------


# --- delegation tokens (38-41, KIP-48) --------------------------------------------------


@dataclass(slots=True, kw_only=True)
class TokenPrincipal:
    principal_type: str
    """``User`` (the only type a token's owner or renewer may have, as in Kafka)."""
    principal_name: str


@dataclass(slots=True, kw_only=True)
class CreateDelegationTokenRequest(Request):
    owner_principal_type: str | None = None
    """With ``owner_principal_name``: the token is another principal's (KIP-373: needs
    CREATE_TOKENS on that user); None: the requester's own."""
    owner_principal_name: str | None = None
    renewers: list[TokenPrincipal] = field(default_factory=list)
    max_lifetime_ms: int = -1
    """At most ``delegation.token.max.lifetime.ms``; -1 (or 0): that."""


@dataclass(slots=True, kw_only=True)
class CreateDelegationTokenResponse(Response):
    principal_type: str = ""
    principal_name: str = ""
    token_requester_principal_type: str = ""
    token_requester_principal_name: str = ""
    issue_timestamp_ms: int = -1
    expiry_timestamp_ms: int = -1
    max_timestamp_ms: int = -1
    token_id: str = ""
    hmac: bytes = b""
    throttle_time_ms: int = 0


@dataclass(slots=True, kw_only=True)
class RenewDelegationTokenRequest(Request):
    hmac: bytes
    renew_period_ms: int = -1
    """From now; -1: ``delegation.token.expiry.time.ms``; never past the token's max."""


@dataclass(slots=True, kw_only=True)
class RenewDelegationTokenResponse(Response):
    expiry_timestamp_ms: int = -1
    throttle_time_ms: int = 0


@dataclass(slots=True, kw_only=True)
class ExpireDelegationTokenRequest(Request):
    hmac: bytes
    expiry_time_period_ms: int = -1
    """From now; negative: at once (the token is removed)."""


@dataclass(slots=True, kw_only=True)
class ExpireDelegationTokenResponse(Response):
    expiry_timestamp_ms: int = -1
    throttle_time_ms: int = 0


@dataclass(slots=True, kw_only=True)
class DescribeDelegationTokenRequest(Request):
    owners: list[TokenPrincipal] | None = None
    """None: every token the requester may see; empty: none."""


@dataclass(slots=True, kw_only=True)
class DescribedDelegationToken:
    principal_type: str
    principal_name: str
    token_requester_principal_type: str
    token_requester_principal_name: str
    issue_timestamp: int
    expiry_timestamp: int
    max_timestamp: int
    token_id: str
    hmac: bytes
    renewers: list[TokenPrincipal] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class DescribeDelegationTokenResponse(Response):
    tokens: list[DescribedDelegationToken] = field(default_factory=list)
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class Api:
    """One API: its key, the version range this build speaks, and its two schemas."""

    key: ApiKey
    min_version: int
    max_version: int
    request: type[Any]
    response: type[Any]

    @property
    def name(self) -> str:
        return "".join(part.capitalize() for part in self.key.name.split("_"))

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


def _apis(*apis: Api) -> MappingProxyType[int, Api]:
    return MappingProxyType({api.key.value: api for api in apis})


APIS = _apis(
    Api(ApiKey.PRODUCE, 0, 0, ProduceRequest, ProduceResponse),
    # v1: sessions; v2: last_fetched_epoch / diverging_epoch (followers truncate on fetch);
    # v3: aborted_transactions (read_committed)
    # v4: rack_id / preferred_read_replica (KIP-392, fetching from the closest replica)
    Api(ApiKey.FETCH, 0, 4, FetchRequest, FetchResponse),
    Api(ApiKey.LIST_OFFSETS, 0, 0, ListOffsetsRequest, ListOffsetsResponse),
    Api(ApiKey.METADATA, 0, 1, MetadataRequest, MetadataResponse),
    Api(ApiKey.LEADER_AND_ISR, 0, 1, LeaderAndIsrRequest, LeaderAndIsrResponse),
    Api(ApiKey.STOP_REPLICA, 0, 0, StopReplicaRequest, StopReplicaResponse),
    # v1: incremental updates; v2: each broker's listeners (endpoints)
    Api(ApiKey.UPDATE_METADATA, 0, 3, UpdateMetadataRequest, UpdateMetadataResponse),
    Api(ApiKey.CONTROLLED_SHUTDOWN, 0, 0, ControlledShutdownRequest, ControlledShutdownResponse),
    Api(
        ApiKey.OFFSET_FOR_LEADER_EPOCH,
        0,
        0,
        OffsetForLeaderEpochRequest,
        OffsetForLeaderEpochResponse,
    ),
    Api(ApiKey.ELECT_LEADERS, 0, 0, ElectLeadersRequest, ElectLeadersResponse),
    Api(
        ApiKey.ALTER_PARTITION_REASSIGNMENTS,
        0,
        0,
        AlterPartitionReassignmentsRequest,
        AlterPartitionReassignmentsResponse,
    ),
    Api(
        ApiKey.LIST_PARTITION_REASSIGNMENTS,
        0,
        0,
        ListPartitionReassignmentsRequest,
        ListPartitionReassignmentsResponse,
    ),
    Api(ApiKey.FIND_COORDINATOR, 0, 0, FindCoordinatorRequest, FindCoordinatorResponse),
    Api(ApiKey.OFFSET_COMMIT, 0, 0, OffsetCommitRequest, OffsetCommitResponse),
    Api(ApiKey.OFFSET_FETCH, 0, 0, OffsetFetchRequest, OffsetFetchResponse),
    Api(ApiKey.JOIN_GROUP, 0, 0, JoinGroupRequest, JoinGroupResponse),
    Api(ApiKey.SYNC_GROUP, 0, 1, SyncGroupRequest, SyncGroupResponse),
    Api(ApiKey.HEARTBEAT, 0, 0, HeartbeatRequest, HeartbeatResponse),
    Api(ApiKey.LEAVE_GROUP, 0, 1, LeaveGroupRequest, LeaveGroupResponse),
    Api(ApiKey.LIST_GROUPS, 0, 0, ListGroupsRequest, ListGroupsResponse),
    Api(ApiKey.INIT_PRODUCER_ID, 0, 0, InitProducerIdRequest, InitProducerIdResponse),
    Api(ApiKey.ADD_PARTITIONS_TO_TXN, 0, 1, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse),
    Api(ApiKey.ADD_OFFSETS_TO_TXN, 0, 0, AddOffsetsToTxnRequest, AddOffsetsToTxnResponse),
    Api(ApiKey.END_TXN, 0, 0, EndTxnRequest, EndTxnResponse),
    Api(ApiKey.WRITE_TXN_MARKERS, 0, 0, WriteTxnMarkersRequest, WriteTxnMarkersResponse),
    Api(ApiKey.TXN_OFFSET_COMMIT, 0, 0, TxnOffsetCommitRequest, TxnOffsetCommitResponse),
    Api(ApiKey.DESCRIBE_PRODUCERS, 0, 0, DescribeProducersRequest, DescribeProducersResponse),
    Api(
        ApiKey.DESCRIBE_TRANSACTIONS,
        0,
        0,
        DescribeTransactionsRequest,
        DescribeTransactionsResponse,
    ),
    Api(ApiKey.LIST_TRANSACTIONS, 0, 1, ListTransactionsRequest, ListTransactionsResponse),
    Api(
        ApiKey.CONSUMER_GROUP_HEARTBEAT,
        0,
        0,
        ConsumerGroupHeartbeatRequest,
        ConsumerGroupHeartbeatResponse,
    ),
    Api(
        ApiKey.CONSUMER_GROUP_DESCRIBE,
        0,
        0,
        ConsumerGroupDescribeRequest,
        ConsumerGroupDescribeResponse,
    ),
    Api(
        ApiKey.READ_SHARE_GROUP_STATE,
        0,
        0,
        ReadShareGroupStateRequest,
        ReadShareGroupStateResponse,
    ),
    Api(
        ApiKey.WRITE_SHARE_GROUP_STATE,
        0,
        0,
        WriteShareGroupStateRequest,
        WriteShareGroupStateResponse,
    ),
    Api(
        ApiKey.SHARE_GROUP_DESCRIBE,
        0,
        0,
        ShareGroupDescribeRequest,
        ShareGroupDescribeResponse,
    ),
    Api(
        ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS,
        0,
        0,
        DescribeShareGroupOffsetsRequest,
        DescribeShareGroupOffsetsResponse,
    ),
    Api(ApiKey.DESCRIBE_GROUPS, 0, 0, DescribeGroupsRequest, DescribeGroupsResponse),
    Api(ApiKey.DELETE_GROUPS, 0, 0, DeleteGroupsRequest, DeleteGroupsResponse),
    Api(ApiKey.OFFSET_DELETE, 0, 0, OffsetDeleteRequest, OffsetDeleteResponse),
    Api(ApiKey.API_VERSIONS, 0, 0, ApiVersionsRequest, ApiVersionsResponse),
    Api(ApiKey.SASL_HANDSHAKE, 0, 0, SaslHandshakeRequest, SaslHandshakeResponse),
    Api(ApiKey.DESCRIBE_ACLS, 0, 0, DescribeAclsRequest, DescribeAclsResponse),
    Api(
        ApiKey.DESCRIBE_CLIENT_QUOTAS,
        0,
        0,
        DescribeClientQuotasRequest,
        DescribeClientQuotasResponse,
    ),
    Api(ApiKey.ALTER_CLIENT_QUOTAS, 0, 0, AlterClientQuotasRequest, AlterClientQuotasResponse),
    Api(ApiKey.CREATE_ACLS, 0, 0, CreateAclsRequest, CreateAclsResponse),
    Api(ApiKey.DELETE_ACLS, 0, 0, DeleteAclsRequest, DeleteAclsResponse),
    Api(ApiKey.SASL_AUTHENTICATE, 0, 0, SaslAuthenticateRequest, SaslAuthenticateResponse),
    Api(
        ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS,
        0,
        0,
        DescribeUserScramCredentialsRequest,
        DescribeUserScramCredentialsResponse,
    ),
    Api(
        ApiKey.ALTER_USER_SCRAM_CREDENTIALS,
        0,
        0,
        AlterUserScramCredentialsRequest,
        AlterUserScramCredentialsResponse,
    ),
    Api(
        ApiKey.CREATE_DELEGATION_TOKEN,
        0,
        0,
        CreateDelegationTokenRequest,
        CreateDelegationTokenResponse,
    ),
    Api(
        ApiKey.RENEW_DELEGATION_TOKEN,
        0,
        0,
        RenewDelegationTokenRequest,
        RenewDelegationTokenResponse,
    ),
    Api(
        ApiKey.EXPIRE_DELEGATION_TOKEN,
        0,
        0,
        ExpireDelegationTokenRequest,
        ExpireDelegationTokenResponse,
    ),
    Api(
        ApiKey.DESCRIBE_DELEGATION_TOKEN,
        0,
        0,
        DescribeDelegationTokenRequest,
        DescribeDelegationTokenResponse,
    ),
    Api(ApiKey.CREATE_TOPICS, 0, 1, CreateTopicsRequest, CreateTopicsResponse),
    Api(ApiKey.DELETE_TOPICS, 0, 1, DeleteTopicsRequest, DeleteTopicsResponse),
    Api(ApiKey.CREATE_PARTITIONS, 0, 0, CreatePartitionsRequest, CreatePartitionsResponse),
    Api(ApiKey.DELETE_RECORDS, 0, 0, DeleteRecordsRequest, DeleteRecordsResponse),
    Api(ApiKey.DESCRIBE_CONFIGS, 0, 0, DescribeConfigsRequest, DescribeConfigsResponse),
    Api(ApiKey.DESCRIBE_LOG_DIRS, 0, 0, DescribeLogDirsRequest, DescribeLogDirsResponse),
    Api(
        ApiKey.ALTER_REPLICA_LOG_DIRS,
        0,
        0,
        AlterReplicaLogDirsRequest,
        AlterReplicaLogDirsResponse,
    ),
    Api(ApiKey.ALTER_CONFIGS, 0, 0, AlterConfigsRequest, AlterConfigsResponse),
    Api(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        0,
        0,
        IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse,
    ),
)
"""The APIs this build serves, by key. ApiVersions v0 is never dropped: it is how a peer
of any age learns what else we speak."""


def api_for(api_key: int, api_version: int) -> Api:
    """The API for a key and version, or :class:`UnsupportedRequestError`."""
    api = APIS.get(api_key)
    if api is None:
        raise UnsupportedRequestError(f"unknown API key {api_key}")
    if not api.supports(api_version):
        raise UnsupportedRequestError(
            f"{api.name} v{api_version} is not supported "
            f"(this broker speaks v{api.min_version}..v{api.max_version})"
        )
    return api


def supported_versions() -> list[ApiVersionRange]:
    """What an ApiVersions response lists."""
    return [
        ApiVersionRange(api_key=a.key.value, min_version=a.min_version, max_version=a.max_version)
        for a in APIS.values()
    ]


def negotiate(api: Api, peer: ApiVersionRange) -> int:
    """The highest version both sides speak, or :class:`UnsupportedRequestError`."""
    high = min(api.max_version, peer.max_version)
    if high < max(api.min_version, peer.min_version):
        raise UnsupportedRequestError(
            f"{api.name}: no common version (we speak v{api.min_version}..v{api.max_version}, "
            f"the peer v{peer.min_version}..v{peer.max_version})"
        )
    return high


# --- whole messages --------------------------------------------------------------------


def encode_request(
    api_key: int, api_version: int, correlation_id: int, request: Request
) -> list[Buffer]:
    """A request frame, as buffers for ``writelines`` (record data not copied)."""
    api = api_for(api_key, api_version)
    if type(request) is not api.request:
        raise TypeError(f"{api.name} takes {api.request.__name__}, not {type(request).__name__}")
    head, raws = encode_message(request, api_version)
    if any(isinstance(raw, FileRegion) for raw in raws):
        raise TypeError("a request carries record bytes, not file regions (those are for fetches)")
    header = RequestHeader(api_key, api_version, correlation_id).pack()
    return typing.cast(list[Buffer], frame(header + head, raws))


def decode_request(payload: memoryview | bytes) -> tuple[RequestHeader, Api, Any]:
    """Decode a request frame payload (the bytes after the length prefix).

    Raises :class:`~protocol.errors.MalformedFrameError` if the header is cut short,
    :class:`UnsupportedRequestError` (carrying the header) for an unknown key or version,
    :class:`~protocol.errors.MalformedMessageError` for a body that does not decode. For the
    last two the connection stays usable: answer with :func:`encode_error_response`.
    """
    header, body = parse_request_header(memoryview(payload).cast("B"))
    try:
        api = api_for(header.api_key, header.api_version)
    except UnsupportedRequestError as exc:
        exc.header = header
        raise
    return header, api, decode_message(api.request, header.api_version, body)


def encode_response(correlation_id: int, api_version: int, response: Response) -> list[Part]:
    """A response frame, as buffers for ``writelines`` (record data not copied)."""
    head, raws = encode_message(response, api_version)
    return frame(pack_response_header(correlation_id) + head, raws)


def encode_error_response(correlation_id: int, error: BaseException) -> list[Part]:
    """A response saying only that the request failed: every response schema decodes it.

    An unexpected exception is sent as UNKNOWN_SERVER_ERROR without its details.
    """
    if isinstance(error, ApiError):
        body = Response(error_code=error.code, error_message=error.message)
    else:
        body = Response(error_code=error_code_of(error), error_message=None)
    return encode_response(correlation_id, 0, body)


def decode_response(api: Api, api_version: int, body: memoryview | bytes) -> Any:
    """Decode a response body (after its correlation id) of ``api`` at ``api_version``."""
    return decode_message(api.response, api_version, body)
