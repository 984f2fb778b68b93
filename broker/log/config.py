"""The topic-level settings the log obeys, under Kafka's names, with Kafka's defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
}
_BOOLEANS = {"unclean.leader.election.enable"}

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
        ]
        for name, ok, need in checks:
            if not ok:
                value = getattr(self, _NAMES[name])
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
                continue
            try:
                kwargs[field] = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name}={value!r} is invalid: it must be an integer") from None
        return dataclasses.replace(self, **kwargs)

    def properties(self) -> dict[str, int | bool]:
        """Every setting under its Kafka name."""
        return {name: getattr(self, attr) for name, attr in _NAMES.items()}

    def with_overrides(self, **changes: Any) -> LogConfig:
        return dataclasses.replace(self, **changes)


def _boolean(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"{name}={value!r} is invalid: it must be true or false")
    return text == "true"
