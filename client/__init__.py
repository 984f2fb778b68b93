"""The bundled async client (producer, consumer, admin) and the ``headwater`` command.

Speaks to brokers only through :mod:`protocol`; never imports :mod:`broker`.
"""

from client.accumulator import RecordFuture
from client.admin import Admin
from client.batches import BatchBuilder, BatchRecordMetadata
from client.consumer import Consumer
from client.errors import (
    ClientClosedError,
    CommitFailedError,
    ConfigurationError,
    NoOffsetForPartitionError,
    TlsError,
    TransactionAbortedError,
    TransactionStateError,
)
from client.membership import RebalanceListener
from client.producer import Producer
from client.security import create_ssl_context
from client.types import (
    AlterConfigOp,
    BrokerDescription,
    ClusterDescription,
    ConfigEntry,
    ConfigResource,
    ConsumerRecord,
    GroupDescription,
    GroupListing,
    ListOffsetsResult,
    LogDirDescription,
    MemberDescription,
    NewPartitions,
    NewTopic,
    OffsetAndTimestamp,
    OffsetSpec,
    PartitionDescription,
    PartitionReassignment,
    RecordMetadata,
    ReplicaInfo,
    ScramCredentialInfo,
    TopicDescription,
    TopicPartition,
    UserScramCredentialDeletion,
    UserScramCredentialsDescription,
    UserScramCredentialUpsertion,
)
from protocol.acls import (
    AclBinding,
    AclBindingFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)

__all__ = [
    "AclBinding",
    "AclBindingFilter",
    "Admin",
    "AlterConfigOp",
    "BatchBuilder",
    "BatchRecordMetadata",
    "BrokerDescription",
    "ClientClosedError",
    "ClusterDescription",
    "CommitFailedError",
    "ConfigEntry",
    "ConfigResource",
    "ConfigurationError",
    "Consumer",
    "ConsumerRecord",
    "GroupDescription",
    "GroupListing",
    "ListOffsetsResult",
    "LogDirDescription",
    "MemberDescription",
    "NewPartitions",
    "NewTopic",
    "NoOffsetForPartitionError",
    "OffsetAndTimestamp",
    "OffsetSpec",
    "Operation",
    "PartitionDescription",
    "PartitionReassignment",
    "PatternType",
    "Permission",
    "Producer",
    "RebalanceListener",
    "RecordFuture",
    "RecordMetadata",
    "ReplicaInfo",
    "ResourceType",
    "ScramCredentialInfo",
    "TlsError",
    "TopicDescription",
    "TopicPartition",
    "TransactionAbortedError",
    "TransactionStateError",
    "UserScramCredentialDeletion",
    "UserScramCredentialUpsertion",
    "UserScramCredentialsDescription",
    "create_ssl_context",
]
