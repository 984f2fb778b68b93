"""The bundled async client (producer, consumer, admin) and the ``headwater`` command.

Speaks to brokers only through :mod:`protocol`; never imports :mod:`broker`.
"""

from client.admin import Admin
from client.consumer import Consumer
from client.errors import (
    ClientClosedError,
    CommitFailedError,
    ConfigurationError,
    NoOffsetForPartitionError,
)
from client.membership import RebalanceListener
from client.producer import Producer
from client.types import (
    BrokerDescription,
    ClusterDescription,
    ConfigEntry,
    ConsumerRecord,
    GroupDescription,
    GroupListing,
    ListOffsetsResult,
    MemberDescription,
    NewTopic,
    OffsetAndTimestamp,
    OffsetSpec,
    PartitionDescription,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "Admin",
    "BrokerDescription",
    "ClientClosedError",
    "ClusterDescription",
    "CommitFailedError",
    "ConfigEntry",
    "ConfigurationError",
    "Consumer",
    "ConsumerRecord",
    "GroupDescription",
    "GroupListing",
    "ListOffsetsResult",
    "MemberDescription",
    "NewTopic",
    "NoOffsetForPartitionError",
    "OffsetAndTimestamp",
    "OffsetSpec",
    "PartitionDescription",
    "Producer",
    "RebalanceListener",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
