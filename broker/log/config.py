"""The topic-level settings the log obeys, under Kafka's names, with Kafka's defaults."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.records.compression import DEFAULT_LEVELS, level_problem

__all__ = ["LogConfig"]

_NAMES = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "segment.index.bytes": "segment_index_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "flush.messages": "flush_messages",
    "flush.ms": "flush_ms",
    "max.message.bytes": "max_message_bytes",
    "file.delete.delay.ms": "file_delete_delay_ms",
    "min.insync.replicas": "min_insync_replicas",
    "unclean.leader.election.enable": "unclean_leader_election_enable",
    "cleanup.policy": "cleanup_policy",
    "delete.retention.ms": "delete_retention_ms",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
    "max.compaction.lag.ms": "max_compaction_lag_ms",
    "min.cleanable.dirty.ratio": "min_cleanable_dirty_ratio",
    "message.timestamp.type": "message_timestamp_type",
    "message.timestamp.before.max.ms": "message_timestamp_before_max_ms",
    "message.timestamp.after.max.ms": "message_timestamp_after_max_ms",
    "compression.type": "compression_type",
    "compression.gzip.level": "compression_gzip_level",
    "compression.lz4.level": "compression_lz4_level",
    "compression.zstd.level": "compression_zstd_level",
    "segment.jitter.ms": "segment_jitter_ms",
    "preallocate": "preallocate",
    "remote.storage.enable": "remote_storage_enable",
    "remote.log.copy.disable": "remote_log_copy_disable",
    "remote.log.delete.on.disable": "remote_log_delete_on_disable",
    "local.retention.ms": "local_retention_ms",
    "local.retention.bytes": "local_retention_bytes",
    "leader.replication.throttled.replicas": "leader_replication_throttled_replicas",
    "follower.replication.throttled.replicas": "follower_replication_throttled_replicas",
}
_BOOLEANS = {
    "unclean.leader.election.enable",
    "preallocate",
    "remote.storage.enable",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
}
_FLOATS = {"min.cleanable.dirty.ratio"}
_THROTTLED = {"leader.replication.throttled.replicas", "follower.replication.throttled.replicas"}
_STRINGS = {"cleanup.policy", "message.timestamp.type", "compression.type", *_THROTTLED}
CLEANUP_POLICIES = ("delete", "compact")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
COMPRESSION_TYPES = ("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")

_NO_LIMIT = 2**63 - 1  # Kafka's Long.MAX_VALUE: "never" for flush.messages / flush.ms


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Validated on construction; ``-1`` means unlimited for the retention settings."""

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * 24 * 3600 * 1000
    segment_index_bytes: int = 10 * 1024 * 1024
    index_interval_bytes: int = 4096
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    flush_messages: int = _NO_LIMIT
    flush_ms: int = _NO_LIMIT
    max_message_bytes: int = 1024 * 1024 + 12
    file_delete_delay_ms: int = 60_000
    # replication settings Kafka keeps with the topic's log config (used by broker.replica)
    min_insync_replicas: int = 1
    unclean_leader_election_enable: bool = False
    # compaction (broker.log.cleaner)
    cleanup_policy: str = "delete"
    """"delete", "compact", or both as "compact,delete" (Kafka's list syntax)."""
    delete_retention_ms: int = 24 * 3600 * 1000
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = _NO_LIMIT
    min_cleanable_dirty_ratio: float = 0.5
    # what the leader does to a batch it appends
    message_timestamp_type: str = "CreateTime"
    # KIP-937: a CreateTime record further than these from the leader's clock is refused
    # (INVALID_TIMESTAMP); Long.MAX_VALUE checks nothing. Kafka 4.0's defaults (KIP-1030):
    # any age, at most an hour ahead
    message_timestamp_before_max_ms: int = _NO_LIMIT
    message_timestamp_after_max_ms: int = 3_600_000
    compression_type: str = "producer"
    # KIP-390: the level of the leader's recompression into compression.type's codec
    # (-1: zlib's default; lz4's 9 is its fast mode, as Kafka's)
    compression_gzip_level: int = DEFAULT_LEVELS["gzip"]
    compression_lz4_level: int = DEFAULT_LEVELS["lz4"]
    compression_zstd_level: int = DEFAULT_LEVELS["zstd"]
    segment_jitter_ms: int = 0
    """Up to this much off segment.ms, chosen per segment, so that logs made together do
    not all roll at once (Kafka's)."""
    preallocate: bool = False
    # Kafka's tiered storage (KIP-405), not in Headwater: accepted only as off, and the
    # settings that matter only with it on are kept and shown, as Kafka does then
    remote_storage_enable: bool = False
    remote_log_copy_disable: bool = False
    remote_log_delete_on_disable: bool = False
    local_retention_ms: int = -2
    local_retention_bytes: int = -2
    # replication throttles (Kafka's KIP-73): the replicas whose copying from a leader
    # counts against that broker's leader.replication.throttled.rate, and whose fetching
    # counts against the follower's follower.replication.throttled.rate (in-sync replicas
    # are never held back): "partition:broker,...", or "*" for every replica of the topic
    leader_replication_throttled_replicas: str = ""
    follower_replication_throttled_replicas: str = ""

    def __post_init__(self) -> None:
        checks = [
            ("segment.bytes", self.segment_bytes >= 14, "at least 14"),
            ("segment.ms", self.segment_ms >= 1, "at least 1"),
            ("segment.index.bytes", self.segment_index_bytes >= 16, "at least 16"),
            ("index.interval.bytes", self.index_interval_bytes >= 0, "0 or more"),
            ("retention.ms", self.retention_ms >= -1, "-1 (unlimited) or more"),
            ("retention.bytes", self.retention_bytes >= -1, "-1 (unlimited) or more"),
            ("flush.messages", self.flush_messages >= 1, "at least 1"),
            ("flush.ms", self.flush_ms >= 0, "0 or more"),
            ("max.message.bytes", self.max_message_bytes >= 0, "0 or more"),
            ("file.delete.delay.ms", self.file_delete_delay_ms >= 0, "0 or more"),
            ("min.insync.replicas", self.min_insync_replicas >= 1, "at least 1"),
            (
                "cleanup.policy",
                bool(self.cleanup_policies) and self.cleanup_policies <= set(CLEANUP_POLICIES),
                "delete, compact, or compact,delete",
            ),
            ("delete.retention.ms", self.delete_retention_ms >= 0, "0 or more"),
            ("min.compaction.lag.ms", self.min_compaction_lag_ms >= 0, "0 or more"),
            ("max.compaction.lag.ms", self.max_compaction_lag_ms >= 1, "at least 1"),
            (
                "min.cleanable.dirty.ratio",
                0 <= self.min_cleanable_dirty_ratio <= 1,
                "between 0 and 1",
            ),
            (
                "message.timestamp.type",
                self.message_timestamp_type in TIMESTAMP_TYPES,
                " or ".join(TIMESTAMP_TYPES),
            ),
            (
                "compression.type",
                self.compression_type in COMPRESSION_TYPES,
                "one of " + ", ".join(COMPRESSION_TYPES),
            ),
            (
                "message.timestamp.before.max.ms",
                0 <= self.message_timestamp_before_max_ms <= _NO_LIMIT,
                f"between 0 and {_NO_LIMIT}",
            ),
            (
                "message.timestamp.after.max.ms",
                0 <= self.message_timestamp_after_max_ms <= _NO_LIMIT,
                f"between 0 and {_NO_LIMIT}",
            ),
            *(
                (f"compression.{codec}.level", problem is None, problem)
                for codec, level in (
                    ("gzip", self.compression_gzip_level),
                    ("lz4", self.compression_lz4_level),
                    ("zstd", self.compression_zstd_level),
                )
                for problem in [level_problem(codec, level)]
            ),
            ("segment.jitter.ms", self.segment_jitter_ms >= 0, "0 or more"),
            (
                "preallocate",
                not self.preallocate,
                "false: Headwater does not preallocate segment files (on Linux Kafka's "
                "preallocation makes a sparse file, which buys nothing)",
            ),
            (
                "remote.storage.enable",
                not self.remote_storage_enable,
                "false: tiered storage (KIP-405) is not in Headwater; every segment stays on "
                "the broker's disks",
            ),
            ("local.retention.ms", self.local_retention_ms >= -2, "-2 (retention.ms) or more"),
            (
                "local.retention.bytes",
                self.local_retention_bytes >= -2,
                "-2 (retention.bytes) or more",
            ),
        ]
        checks += [
            (name, _replicas(getattr(self, _NAMES[name])) is not None, _REPLICAS_FORM)
            for name in _THROTTLED
        ]
        for name, ok, need in checks:
            if not ok:
                value = getattr(self, _NAMES[name])
                if isinstance(value, bool):
                    value = str(value).lower()
                raise ValueError(f"{name}={value} is invalid: it must be {need}")

    @classmethod
    def from_properties(cls, props: Mapping[str, str | int]) -> LogConfig:
        """Build from Kafka-named properties (``{"segment.bytes": "1048576"}``)."""
        return cls().with_properties(props)

    def with_properties(self, props: Mapping[str, str | int]) -> LogConfig:
        """This config with Kafka-named overrides (a topic's over the broker's defaults)."""
        kwargs: dict[str, Any] = {}
        for name, value in props.items():
            field = _NAMES.get(name)
            if field is None:
                raise ValueError(f"unknown topic config {name!r}; known: {', '.join(_NAMES)}")
            if name in _BOOLEANS:
                kwargs[field] = _boolean(name, value)
            elif name in _STRINGS:
                kwargs[field] = str(value).strip()
            elif name in _FLOATS:
                kwargs[field] = _number(name, value, float, "a number")
            else:
                kwargs[field] = _number(name, value, int, "an integer")
        return dataclasses.replace(self, **kwargs)

    @property
    def compression_level(self) -> int | None:
        """The level of ``compression.type``'s codec (None: a codec without levels, or
        ``producer``/``uncompressed``)."""
        return {
            "gzip": self.compression_gzip_level,
            "lz4": self.compression_lz4_level,
            "zstd": self.compression_zstd_level,
        }.get(self.compression_type)

    @property
    def cleanup_policies(self) -> set[str]:
        return {p.strip() for p in self.cleanup_policy.split(",") if p.strip()}

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policies

    @property
    def delete(self) -> bool:
        """Retention deletes old segments (``cleanup.policy`` includes delete)."""
        return "delete" in self.cleanup_policies

    def leader_throttled(self, partition: int, broker_id: int) -> bool:
        """Whether this topic's replica of ``partition`` on leader ``broker_id`` sends
        under the leader's replication throttle."""
        return _throttled(self.leader_replication_throttled_replicas, partition, broker_id)

    def follower_throttled(self, partition: int, broker_id: int) -> bool:
        """Whether the replica of ``partition`` on follower ``broker_id`` fetches under
        the follower's replication throttle."""
        return _throttled(self.follower_replication_throttled_replicas, partition, broker_id)

    def properties(self) -> dict[str, int | bool | float | str]:
        """Every setting under its Kafka name."""
        return {name: getattr(self, attr) for name, attr in _NAMES.items()}

    def with_overrides(self, **changes: Any) -> LogConfig:
        return dataclasses.replace(self, **changes)


_EVERY: frozenset[tuple[int, int]] = frozenset({(-1, -1)})
_REPLICAS_FORM = "partition:broker pairs, e.g. 0:1,0:2,1:2, or * for every replica"


@functools.lru_cache(maxsize=1024)
def _replicas(text: str) -> frozenset[tuple[int, int]] | None:
    """The (partition, broker) pairs of a throttled-replicas list; :data:`_EVERY` for
    ``*``; None if it is not one (parsed once per distinct value: a fetch asks often)."""
    items = [i.strip() for i in text.split(",") if i.strip()]
    if items == ["*"]:
        return _EVERY
    pairs = set()
    for item in items:
        partition, sep, broker = item.partition(":")
        if not (sep and partition.strip().isdigit() and broker.strip().isdigit()):
            return None
        pairs.add((int(partition), int(broker)))
    return frozenset(pairs)


def _throttled(text: str, partition: int, broker_id: int) -> bool:
    if not text:
        return False
    found = _replicas(text) or frozenset()  # validated when the config was made
    return found is _EVERY or (partition, broker_id) in found


def _number(name: str, value: str | int, kind: type[int] | type[float], what: str) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is invalid: it must be {what}") from None


def _boolean(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"{name}={value!r} is invalid: it must be true or false")
    return text == "true"
