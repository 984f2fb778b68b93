"""Which committed offsets have expired (Kafka's KIP-211, ``offsets.retention.minutes``).
Pure: the coordinator writes the tombstones.

- A group with members never loses the offsets of what it consumes: those of a consumer
  group (Stable; a group of the new consumer protocol too) go only for topics none of its
  members subscribes to any more, each a retention after its commit.
- An empty group's offsets go a retention after it became empty (Kafka's
  ``currentStateTimestamp``), or after each commit where that is not known.
- A group that never had members (a consumer that assigns partitions itself and commits)
  loses each offset a retention after its commit.
- An offset being written (a commit, or a transaction's not yet ended) stays.
- An offset committed with a retention time of its own (OffsetCommit v2-v4) expires at
  that time instead, whenever the rules above let offsets of the group go at all
  (Kafka's getExpiredOffsets).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from broker.coordinator.consumer_group import ConsumerGroup
from broker.coordinator.group import EMPTY, STABLE, Group
from protocol.group_log import OffsetAndMetadata

__all__ = ["expired_offsets"]


def expired_offsets(
    group: Group | ConsumerGroup | None,
    offsets: Mapping[tuple[str, int], OffsetAndMetadata],
    *,
    now_ms: int,
    retention_ms: int,
    subscribed: Callable[[Group | ConsumerGroup], set[str] | None],
    held: Collection[tuple[str, int]] = (),
) -> list[tuple[str, int]]:
    """The (topic, partition)s of ``offsets`` that have expired at ``now_ms`` (wall
    clock), sorted. ``group`` is None for offsets without a live group (a consumer that
    assigns its partitions itself); ``subscribed`` gives a consumer group's topics (None
    if a subscription cannot be read: then none expires)."""
    since = -1  # the time every offset counts from; -1: each from its commit
    kept: set[str] = set()  # topics whose offsets stay
    if group is None or (group.state == EMPTY and group.protocol_type is None):
        pass
    elif group.state == EMPTY:
        since = group.emptied_at_ms
    elif group.state == STABLE and group.protocol_type == "consumer":
        topics = subscribed(group)
        if topics is None:
            return []
        kept = topics
    else:  # rebalancing, or members of another protocol: nothing goes
        return []
    out = []
    for tp, value in offsets.items():
        if tp in held or tp[0] in kept:
            continue
        if value.expire_timestamp >= 0:
            if now_ms >= value.expire_timestamp:
                out.append(tp)
            continue
        base = since if since >= 0 else value.commit_timestamp
        if base >= 0 and now_ms - base >= retention_ms:
            out.append(tp)
    return sorted(out)
