"""What ``__transaction_state`` holds: one record per transactional id change, in Kafka's
TransactionLog layout (key and value version 0), so ``dump-log`` and Kafka's tools read
it alike::

    key   = version: int16 (0), transactional_id: string
    value = version: int16 (0), producer_id: int64, producer_epoch: int16,
            transaction_timeout_ms: int32, transaction_status: int8,
            transaction_partitions: [topic: string, partition_ids: [int32]],
            transaction_last_update_timestamp_ms: int64,
            transaction_start_timestamp_ms: int64

A null value (a tombstone) forgets an expired id. Strings are int16-length UTF-8, arrays
int32-counted, as in Kafka's schemas. Pure: bytes in, objects out.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from protocol.errors import CorruptMessageError

__all__ = [
    "TRANSACTION_TOPIC",
    "TxnMetadata",
    "TxnState",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_value",
]

TRANSACTION_TOPIC = "__transaction_state"

_HEAD = struct.Struct(">hqhib")  # version, producer id, epoch, timeout, status
_TIMES = struct.Struct(">qq")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class TxnState(enum.IntEnum):
    """Kafka's TransactionState, with its status codes."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def title(self) -> str:
        """Kafka's name (ListTransactions, DescribeTransactions): PrepareCommit, ..."""
        return "".join(part.capitalize() for part in self.name.split("_"))

    @classmethod
    def by_title(cls, title: str) -> TxnState | None:
        return next((s for s in cls if s.title == title), None)

    @property
    def completing(self) -> bool:
        """Markers are being written: no other change until they are."""
        return self in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)

    @property
    def idle(self) -> bool:
        """No transaction open: a new one, or a new epoch, may start."""
        return self in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)


@dataclass(slots=True)
class TxnMetadata:
    """One transactional id's state, as last written (Kafka's TransactionMetadata)."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[tuple[str, int]] = field(default_factory=set)
    last_update_ms: int = -1
    start_ms: int = -1
    last_producer_epoch: int = -1
    """The epoch before the last bump (KIP-360: a producer that lost the answer to its
    InitProducerId retries with the one it had)."""
    last_producer_id: int = -1
    """The producer id before the last rotation (its epochs spent: a new id), for the
    same retry (Kafka's lastProducerId). Neither is in the log's v0 layout: a coordinator
    that loads the id knows none, as Kafka 3's."""
    pending: bool = False
    """A write of a new state is in flight: other changes wait (CONCURRENT_TRANSACTIONS)."""


def encode_key(transactional_id: str) -> bytes:
    raw = transactional_id.encode()
    return _I16.pack(0) + _I16.pack(len(raw)) + raw


def encode_value(meta: TxnMetadata) -> bytes:
    out = bytearray(
        _HEAD.pack(0, meta.producer_id, meta.producer_epoch, meta.timeout_ms, meta.state)
    )
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(meta.partitions):
        by_topic.setdefault(topic, []).append(partition)
    out += _I32.pack(len(by_topic))
    for topic, partitions in by_topic.items():
        raw = topic.encode()
        out += _I16.pack(len(raw)) + raw + _I32.pack(len(partitions))
        out += struct.pack(f">{len(partitions)}i", *partitions)
    out += _TIMES.pack(meta.last_update_ms, meta.start_ms)
    return bytes(out)


def decode_key(data: bytes) -> str:
    try:
        (version,) = _I16.unpack_from(data, 0)
        if version != 0:
            raise CorruptMessageError(f"transaction log key version {version} is unknown")
        (size,) = _I16.unpack_from(data, 2)
        if size < 0 or 4 + size != len(data):
            raise CorruptMessageError("transaction log key has a bad length")
        return data[4 : 4 + size].decode()
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptMessageError(f"transaction log key does not decode: {exc}") from None


def decode_value(transactional_id: str, data: bytes) -> TxnMetadata:
    try:
        version, pid, epoch, timeout_ms, status = _HEAD.unpack_from(data, 0)
        if version != 0:
            raise CorruptMessageError(f"transaction log value version {version} is unknown")
        pos = _HEAD.size
        (topics,) = _I32.unpack_from(data, pos)
        pos += 4
        partitions: set[tuple[str, int]] = set()
        for _ in range(max(topics, 0)):
            (size,) = _I16.unpack_from(data, pos)
            topic = data[pos + 2 : pos + 2 + size].decode()
            pos += 2 + size
            (count,) = _I32.unpack_from(data, pos)
            pos += 4
            for p in struct.unpack_from(f">{count}i", data, pos):
                partitions.add((topic, p))
            pos += 4 * count
        last_update_ms, start_ms = _TIMES.unpack_from(data, pos)
        state = TxnState(status)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise CorruptMessageError(f"transaction log value does not decode: {exc}") from None
    return TxnMetadata(
        transactional_id,
        pid,
        epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
    )
