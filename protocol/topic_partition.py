"""``TopicPartition``: a partition of a topic, one type for the broker's logs, the
consumer protocol's bytes and the client's maps (``client.types`` hands it out)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TopicPartition"]


class TopicPartition(NamedTuple):
    topic: str
    partition: int
