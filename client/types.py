"""The values the client hands out and takes in, shaped like aiokafka's and kafka-python's.

They are NamedTuples so a user can unpack them, compare them and use them as dict keys
(``TopicPartition`` is the key of every per-partition map the consumer returns).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from protocol.topic_partition import TopicPartition

__all__ = [
    "AlterConfigOp",
    "BrokerDescription",
    "ClusterDescription",
    "ConfigEntry",
    "ConfigResource",
    "ConsumerGroupMetadata",
    "ConsumerRecord",
    "GroupDescription",
    "GroupListing",
    "ListOffsetsResult",
    "LogDirDescription",
    "MemberDescription",
    "NewPartitions",
    "NewTopic",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "OffsetSpec",
    "PartitionDescription",
    "PartitionReassignment",
    "ProducerState",
    "RecordMetadata",
    "ReplicaInfo",
    "ScramCredentialInfo",
    "ShareGroupDescription",
    "ShareMemberDescription",
    "SharePartitionOffset",
    "TopicDescription",
    "TopicPartition",
    "TopicPartitionReplica",
    "TransactionDescription",
    "TransactionListing",
    "UserScramCredentialDeletion",
    "UserScramCredentialUpsertion",
    "UserScramCredentialsDescription",
]

_NO_CONFIGS: Mapping[str, str] = MappingProxyType({})


class TopicPartitionReplica(NamedTuple):
    """A partition's replica on one broker (Kafka's TopicPartitionReplica)."""

    topic: str
    partition: int
    broker_id: int


def partition_names(tps: Iterable[TopicPartition]) -> str:
    """``t-0, t-1, u-3``: partitions in a message, sorted."""
    return ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(tps))


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
    headers: tuple[tuple[str, bytes | None], ...]
    """``(name, value)`` pairs; ``()`` when the record has none."""
    timestamp_type: int = 0
    """What ``timestamp`` is (aiokafka's ``timestamp_type``, Kafka's TimestampType): 0
    CreateTime, set by the producer; 1 LogAppendTime, set by the broker when it appended
    the record (a topic with ``message.timestamp.type=LogAppendTime``)."""


class OffsetAndMetadata(NamedTuple):
    """A committed offset with what its committer stored beside it (aiokafka's and
    Kafka's OffsetAndMetadata): ``commit({tp: OffsetAndMetadata(42, "batch 7")})``, read
    back by :meth:`client.consumer.Consumer.committed_offsets`."""

    offset: int
    """The next offset to read."""
    metadata: str = ""
    """Up to ``offset.metadata.max.bytes`` (4096) of the committer's own."""
    leader_epoch: int = -1
    """The leader epoch of the record before ``offset`` (KIP-320), -1 if not known."""


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


class NewPartitions(NamedTuple):
    """A topic's partition count after :meth:`~client.Admin.create_partitions` (Kafka's
    NewPartitions): ``total_count``, not how many to add. ``new_assignments`` lists the
    new partitions' replicas (preferred leader first), in order; None lets the brokers
    place them."""

    total_count: int
    new_assignments: Sequence[Sequence[int]] | None = None


class PartitionReassignment(NamedTuple):
    """A partition being moved (Kafka's PartitionReassignment): ``replicas`` holds both
    sets while it lasts, the target's first; ``adding_replicas`` are copying the log,
    ``removing_replicas`` go once every target replica is in sync."""

    replicas: list[int]
    adding_replicas: list[int]
    removing_replicas: list[int]


class ReplicaInfo(NamedTuple):
    """A partition's copy in a broker's data directory (Kafka's ReplicaInfo): its bytes,
    and how far its log end is behind the high watermark."""

    size: int
    offset_lag: int
    is_future: bool = False


class LogDirDescription(NamedTuple):
    """One data directory of a broker (Kafka's LogDirDescription): ``error`` None unless
    it cannot be read; its file system's size and free bytes (-1: unknown)."""

    error: Exception | None
    replicas: dict[TopicPartition, ReplicaInfo]
    total_bytes: int = -1
    usable_bytes: int = -1


class ScramCredentialInfo(NamedTuple):
    """A user's credential for one SCRAM mechanism (never its password or keys)."""

    mechanism: str
    iterations: int


class UserScramCredentialsDescription(NamedTuple):
    """Kafka's UserScramCredentialsDescription: a user's SCRAM mechanisms."""

    name: str
    credential_infos: list[ScramCredentialInfo]


class UserScramCredentialUpsertion(NamedTuple):
    """Set a user's password for one mechanism (Kafka's UserScramCredentialUpsertion): the
    client salts and hashes it, only the result travels (KIP-554)."""

    user: str
    mechanism: str
    password: str
    iterations: int = 4096

    def __repr__(self) -> str:
        return (  # never the password
            f"UserScramCredentialUpsertion({self.user!r}, {self.mechanism}, "
            f"iterations={self.iterations})"
        )


class UserScramCredentialDeletion(NamedTuple):
    """Remove a user's credential for one mechanism."""

    user: str
    mechanism: str


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
    topic_id: str | None = None
    """The topic's id in Kafka's text form (KIP-516: 22 characters of URL-safe base64);
    None from a broker of a build that gives topics none."""


class ConfigSynonym(NamedTuple):
    """One value a config has, and where it comes from (Kafka's ConfigSynonym)."""

    name: str
    value: str | None
    source: str


class ConfigEntry(NamedTuple):
    name: str
    value: str | None
    source: str
    """Kafka's ConfigSource name: DEFAULT_CONFIG, STATIC_BROKER_CONFIG,
    DYNAMIC_DEFAULT_BROKER_CONFIG, DYNAMIC_BROKER_CONFIG, DYNAMIC_TOPIC_CONFIG."""
    read_only: bool
    is_sensitive: bool
    synonyms: tuple[ConfigSynonym, ...] = ()
    """Every value it has, the one in force first (a topic's override, then its broker's
    dynamic value, the brokers' dynamic default, the config file's, the default)."""
    documentation: str | None = None


class ConfigResource(NamedTuple):
    """Something with configs: ``ConfigResource("topic", "orders")`` (Kafka's
    ConfigResource; ``configs`` as aiokafka's, for :meth:`Admin.alter_configs`)."""

    resource_type: str | int
    """``"topic"``, ``"broker"`` or ``"group"`` (or Kafka's numbers, 2, 4 and 32)."""
    name: str
    configs: Mapping[str, str] | None = None


class AlterConfigOp(NamedTuple):
    """One change of :meth:`Admin.incremental_alter_configs` (Kafka's AlterConfigOp)."""

    name: str
    value: str | None = None
    op_type: str = "SET"
    """``SET``, ``DELETE`` (back to the default), ``APPEND`` / ``SUBTRACT`` (list configs
    such as ``cleanup.policy``: add or remove items)."""


# --- transactions (Admin, kafka-transactions) ---------------------------------------------


class TransactionListing(NamedTuple):
    transactional_id: str
    producer_id: int
    state: str
    """Kafka's: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort."""


class TransactionDescription(NamedTuple):
    transactional_id: str
    state: str
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    transaction_start_time_ms: int
    """When the open transaction began (-1: none open)."""
    partitions: tuple[TopicPartition, ...]
    """The partitions of the open transaction."""


class ProducerState(NamedTuple):
    """What a partition's leader knows of one producer (DescribeProducers)."""

    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp: int
    coordinator_epoch: int
    current_transaction_start_offset: int
    """The first offset of its transaction open in the partition (-1: none)."""


class ConsumerGroupMetadata(NamedTuple):
    """A consumer's place in its group (``Consumer.group_metadata()``), for
    ``send_offsets_to_transaction``: the coordinator refuses a transaction's offsets from a
    member whose generation is over (KIP-447's zombie fencing)."""

    group_id: str
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None


# --- consumer groups and offsets (Admin) --------------------------------------------------


class GroupListing(NamedTuple):
    group_id: str
    protocol_type: str
    """"consumer" for consumer groups; empty for a group that only has committed offsets."""
    state: str
    """Kafka's group state: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead."""


class MemberDescription(NamedTuple):
    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    assignment: list[TopicPartition]
    """The partitions the member was given, decoded from its assignment when the group's
    protocol type is "consumer" (other protocols' bytes mean nothing here: empty)."""


class ShareMemberDescription(NamedTuple):
    """A share group's member (Kafka's ShareMemberDescription)."""

    member_id: str
    client_id: str
    host: str
    rack: str | None
    member_epoch: int
    assignment: list[TopicPartition]


class ShareGroupDescription(NamedTuple):
    """A share group (KIP-932): Empty or Stable, and its members (Kafka's
    ShareGroupDescription). Dead: no share group has the id."""

    group_id: str
    state: str
    group_epoch: int
    assignment_epoch: int
    assignor: str
    members: list[ShareMemberDescription]
    coordinator: BrokerDescription | None = None


class SharePartitionOffset(NamedTuple):
    """Where a share group is in a partition: ``start_offset``, below which every record
    is done (-1: the group has not read it); ``lag``, the records not done yet (from the
    start to the log's end, less those done past the start; None where unknown)."""

    start_offset: int
    lag: int | None


class GroupDescription(NamedTuple):
    group_id: str
    state: str
    """As in :class:`GroupListing`; Dead for a group the coordinator does not know."""
    protocol_type: str
    strategy: str
    """The assignor the current generation uses (range, roundrobin, sticky, ...)."""
    generation: int
    leader: str
    """The member id of the group's leader (it computes the assignment); empty if none."""
    members: list[MemberDescription]
    coordinator: BrokerDescription | None = None
    """The broker that answered for the group (Kafka's ConsumerGroupDescription
    coordinator()); None if the metadata did not list it."""


class OffsetSpec(NamedTuple):
    """Which offset :meth:`client.admin.Admin.list_offsets` looks up (Kafka's OffsetSpec):
    ``OffsetSpec.earliest()``, ``OffsetSpec.latest()``, ``OffsetSpec.for_timestamp(ms)``."""

    timestamp: int
    """Milliseconds, or ListOffsets' specials: -2 earliest, -1 latest, -3 the record
    with the largest timestamp."""

    @classmethod
    def earliest(cls) -> OffsetSpec:
        return cls(-2)

    @classmethod
    def latest(cls) -> OffsetSpec:
        return cls(-1)

    @classmethod
    def max_timestamp(cls) -> OffsetSpec:
        """The offset of the record with the largest timestamp (KIP-734)."""
        return cls(-3)

    @classmethod
    def for_timestamp(cls, timestamp_ms: int) -> OffsetSpec:
        if timestamp_ms < 0:
            raise ValueError(f"timestamp {timestamp_ms} is negative; give milliseconds")
        return cls(timestamp_ms)


class ListOffsetsResult(NamedTuple):
    """One partition's answer to :meth:`client.admin.Admin.list_offsets`."""

    offset: int
    """-1 for a timestamp later than every record's (Kafka answers the same)."""
    timestamp: int
    """The found record's timestamp; -1 for earliest and latest."""
    leader_epoch: int


class DelegationToken(NamedTuple):
    """A delegation token (Kafka's ``DelegationToken`` and its ``TokenInformation``):
    log in with it as ``sasl_plain_username=token.token_id``,
    ``sasl_plain_password=token.password``, ``sasl_token_auth=True`` over SCRAM.
    Principals in Kafka's text form (``User:alice``); times in wall-clock ms."""

    token_id: str
    hmac: bytes
    owner: str
    requester: str
    renewers: list[str]
    issue_timestamp_ms: int
    expiry_timestamp_ms: int
    max_timestamp_ms: int

    @property
    def password(self) -> str:
        """The HMAC in base64: the SCRAM password a token logs in with (Kafka's)."""
        return base64.b64encode(self.hmac).decode()

    def __repr__(self) -> str:  # never the HMAC (the password), in a log or a traceback
        return f"DelegationToken({self.token_id!r}, owner={self.owner!r})"
