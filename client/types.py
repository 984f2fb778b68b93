"""The values the client hands out and takes in, shaped like aiokafka's and kafka-python's.

They are NamedTuples so a user can unpack them, compare them and use them as dict keys
(``TopicPartition`` is the key of every per-partition map the consumer returns).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "BrokerDescription",
    "ClusterDescription",
    "ConfigEntry",
    "ConsumerRecord",
    "NewTopic",
    "OffsetAndTimestamp",
    "PartitionDescription",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]

_NO_CONFIGS: Mapping[str, str] = MappingProxyType({})


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed; ``offset`` is -1 with acks=0 (nobody answers)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    """Milliseconds: the record's create time, or the broker's append time if the topic
    uses LogAppendTime."""


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Any
    """bytes, None, or whatever ``key_deserializer`` made of the bytes."""
    value: Any
    headers: list[tuple[str, bytes | None]]


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int


class NewTopic(NamedTuple):
    """A topic to create; -1 leaves partitions or replication factor to the broker.

    ``topic_configs`` defaults to an empty read-only mapping rather than ``{}``: a shared
    mutable default would leak one caller's configs into the next NewTopic.
    """

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    topic_configs: Mapping[str, str] = _NO_CONFIGS


class BrokerDescription(NamedTuple):
    node_id: int
    host: str
    port: int
    rack: str | None


class ClusterDescription(NamedTuple):
    cluster_id: str | None
    controller_id: int
    brokers: list[BrokerDescription]


class PartitionDescription(NamedTuple):
    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline_replicas: list[int]


class TopicDescription(NamedTuple):
    name: str
    is_internal: bool
    partitions: list[PartitionDescription]


class ConfigEntry(NamedTuple):
    name: str
    value: str | None
    source: str
    """Kafka's ConfigSource name: DEFAULT_CONFIG, DYNAMIC_TOPIC_CONFIG, ..."""
    read_only: bool
    is_sensitive: bool
