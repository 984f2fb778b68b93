"""The bundled async client (producer, consumer, admin) and the ``headwater`` command.

Speaks to brokers only through :mod:`protocol`; never imports :mod:`broker`.
"""

from client.admin import Admin
from client.consumer import Consumer
from client.errors import ClientClosedError, ConfigurationError, NoOffsetForPartitionError
from client.producer import Producer
from client.types import (
    BrokerDescription,
    ClusterDescription,
    ConfigEntry,
    ConsumerRecord,
    NewTopic,
    OffsetAndTimestamp,
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
    "ConfigEntry",
    "ConfigurationError",
    "Consumer",
    "ConsumerRecord",
    "NewTopic",
    "NoOffsetForPartitionError",
    "OffsetAndTimestamp",
    "PartitionDescription",
    "Producer",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
