"""The record that keeps one share group's delivery state of one partition (KIP-932), in
the group's ``__consumer_offsets`` partition beside its committed offsets: which offsets
are done (acknowledged or archived) and how often each not yet done was delivered, from
the group's start offset in the partition. A later record of the key replaces the one
before (the topic is compacted); a tombstone forgets it.

Kafka keeps this in its own ``__share_group_state`` topic through a share coordinator;
Headwater keeps it with the group's other records, so the group coordinator that holds
the group holds its state too (README, Share groups). The key's version, 1000, is far
above Kafka's record types in ``__consumer_offsets`` (small numbers), so a reader of either
kind passes over the other's.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from protocol.group_log import BadRecordError

__all__ = [
    "SHARE_STATE_KEY_VERSION",
    "BadShareStateError",
    "ShareStateKey",
    "StoredShareState",
    "decode_share_state_key",
    "decode_share_state_value",
    "encode_share_state_key",
    "encode_share_state_value",
]

SHARE_STATE_KEY_VERSION = 1000
_VALUE_VERSION = 0
_I16 = struct.Struct(">h")
_HEAD = struct.Struct(">hiqi")  # value version, leader epoch, start offset, batch count
_BATCH = struct.Struct(">qqbh")  # first offset, last offset, state, delivery count
_KEY_TAIL = struct.Struct(">16si")  # topic id, partition


class ShareStateKey(NamedTuple):
    group_id: str
    topic_id: bytes
    partition: int


class StoredShareState(NamedTuple):
    """``leader_epoch``: of the partition's leader that wrote it (a write from an older
    leader is refused: it was deposed). ``batches``: (first offset, last offset, state,
    delivery count) of the offsets from ``start_offset`` on that have a state."""

    leader_epoch: int
    start_offset: int
    batches: tuple[tuple[int, int, int, int], ...] = ()


class BadShareStateError(BadRecordError):
    """A record of this kind that does not decode."""


def encode_share_state_key(key: ShareStateKey) -> bytes:
    group = key.group_id.encode()
    return (
        _I16.pack(SHARE_STATE_KEY_VERSION)
        + _I16.pack(len(group))
        + group
        + _KEY_TAIL.pack(key.topic_id, key.partition)
    )


def decode_share_state_key(data: bytes) -> ShareStateKey | None:
    """The key, or None for a key of another kind."""
    if data[:2] != _I16.pack(SHARE_STATE_KEY_VERSION):
        return None
    try:
        (length,) = _I16.unpack_from(data, 2)
        group = bytes(data[4 : 4 + length]).decode()
        if length < 0 or len(data) != 4 + length + _KEY_TAIL.size:
            raise BadShareStateError("a share state key of the wrong length")
        topic_id, partition = _KEY_TAIL.unpack_from(data, 4 + length)
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadShareStateError(f"not a share state key: {exc}") from None
    return ShareStateKey(group, topic_id, partition)


def encode_share_state_value(state: StoredShareState) -> bytes:
    parts = [_HEAD.pack(_VALUE_VERSION, state.leader_epoch, state.start_offset, len(state.batches))]
    parts += [_BATCH.pack(*batch) for batch in state.batches]
    return b"".join(parts)


def decode_share_state_value(data: bytes) -> StoredShareState:
    try:
        version, leader_epoch, start, count = _HEAD.unpack_from(data, 0)
        if version != _VALUE_VERSION:
            raise BadShareStateError(f"share state value version {version} is not known")
        if len(data) != _HEAD.size + count * _BATCH.size:
            raise BadShareStateError("a share state value of the wrong length")
        batches = tuple(_BATCH.iter_unpack(data[_HEAD.size :]))
    except struct.error as exc:
        raise BadShareStateError(f"not a share state value: {exc}") from None
    return StoredShareState(leader_epoch, start, batches)
