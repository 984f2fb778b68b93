"""Transaction markers (Kafka's control batches) and the read_committed filter.

A transaction ends with one marker in each partition it wrote to: a control batch
(attributes: transactional and control) of the producer's id and epoch, holding one
record whose key says COMMIT or ABORT and whose value carries the epoch of the
transaction coordinator that wrote it (Kafka's EndTransactionMarker)::

    key   = version: int16 (0), type: int16 (0 ABORT, 1 COMMIT)
    value = version: int16 (0), coordinator_epoch: int32

Markers are never compressed and never seen by applications: consumers skip them. A
consumer reading ``read_committed`` also skips the batches of aborted transactions, which
a fetch names as (producer id, first offset) pairs (:class:`AbortedFilter`); the broker's
log cleaner uses the same filter to drop them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from protocol.errors import CorruptBatchError
from protocol.records import batch as B
from protocol.records.codec import BatchBuilder
from protocol.records.varints import read_varint

__all__ = [
    "ABORT",
    "COMMIT",
    "AbortedFilter",
    "EndTxnMarker",
    "encode_end_txn_marker",
    "is_commit",
    "read_end_txn_marker",
]

ABORT = 0
COMMIT = 1

_KEY = struct.Struct(">hh")
_VALUE = struct.Struct(">hi")
_VERSION = 0


class EndTxnMarker(NamedTuple):
    committed: bool
    coordinator_epoch: int


def encode_end_txn_marker(
    *,
    producer_id: int,
    producer_epoch: int,
    committed: bool,
    coordinator_epoch: int,
    timestamp_ms: int | None = None,
) -> bytearray:
    """One control batch ending a transaction (offset 0: the leader assigns it)."""
    builder = BatchBuilder(
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=-1,
        is_transactional=True,
    )
    builder.append(
        _KEY.pack(_VERSION, COMMIT if committed else ABORT),
        _VALUE.pack(_VERSION, coordinator_epoch),
        None,
        timestamp_ms,
    )
    out = builder.build()
    # the builder has no control flag of its own: set it, then sign the header again
    attributes = struct.unpack_from(">h", out, B.ATTRIBUTES_POS)[0] | B.CONTROL_BIT
    struct.pack_into(">h", out, B.ATTRIBUTES_POS, attributes)
    B.refresh_crc(out)
    return out


def read_end_txn_marker(data: B.Buffer, header: B.BatchHeader) -> EndTxnMarker:
    """The marker a control batch holds (``data`` the buffer ``header`` was read from).

    Raises :class:`CorruptBatchError` for a control batch that is not a well-formed
    end-transaction marker (compressed, no record, an unknown type or version).
    """
    if not header.is_control or not header.is_transactional:
        raise CorruptBatchError("not a transaction marker: a control batch is transactional")
    if header.compression != 0 or header.record_count != 1:
        raise CorruptBatchError(
            "a transaction marker is one uncompressed record, not "
            f"{header.record_count} (compression {header.compression})"
        )
    view = bytes(memoryview(data)[header.position + B.HEADER_SIZE : header.end])  # one record
    try:
        _, pos = read_varint(view, 0)  # the record's length
        pos += 1  # attributes
        _, pos = read_varint(view, pos)  # timestamp delta
        _, pos = read_varint(view, pos)  # offset delta
        key_size, pos = read_varint(view, pos)
        if key_size != _KEY.size:
            raise CorruptBatchError(f"a transaction marker's key is {key_size} bytes, not 4")
        version, kind = _KEY.unpack_from(view, pos)
        pos += key_size
        value_size, pos = read_varint(view, pos)
        if value_size < _VALUE.size:
            raise CorruptBatchError(f"a transaction marker's value is {value_size} bytes")
        _, coordinator_epoch = _VALUE.unpack_from(view, pos)
    except (IndexError, struct.error) as exc:
        raise CorruptBatchError(f"a transaction marker is cut short: {exc}") from exc
    if version != _VERSION or kind not in (ABORT, COMMIT):
        raise CorruptBatchError(f"unknown transaction marker (version {version}, type {kind})")
    return EndTxnMarker(kind == COMMIT, coordinator_epoch)


def is_commit(key: bytes | None) -> bool:
    """Whether a marker's record key (a consumer's decoded control record) says COMMIT."""
    return key is not None and len(key) >= _KEY.size and _KEY.unpack_from(key)[1] == COMMIT


class AbortedFilter:
    """Which batches a read_committed reader drops (Kafka's Fetcher logic).

    Built from the aborted transactions a fetch names, as (producer id, first offset);
    then asked about each batch in offset order. A producer's batches are dropped from the
    first offset of its aborted transaction to its ABORT marker; markers are dropped too.
    """

    __slots__ = ("_aborted", "_next", "_open")

    def __init__(self, aborted: Iterable[tuple[int, int]]) -> None:
        self._aborted = sorted(aborted, key=lambda a: a[1])
        self._next = 0
        self._open: set[int] = set()

    def keep(self, header: _HasHeader) -> bool:
        """Whether a batch is one a read_committed reader sees (call in offset order)."""
        aborted, i = self._aborted, self._next
        base = header.base_offset
        while i < len(aborted) and aborted[i][1] <= base:
            self._open.add(aborted[i][0])
            i += 1
        self._next = i
        if header.is_control:
            # an ABORT marker closes its producer's aborted range; a COMMIT cannot be
            # inside one. Either way no application sees a marker.
            self._open.discard(header.producer_id)
            return False
        return not (header.is_transactional and header.producer_id in self._open)


class _HasHeader(Protocol):
    """What :meth:`AbortedFilter.keep` reads: a header, or a client's RecordBatch."""

    @property
    def base_offset(self) -> int: ...
    @property
    def producer_id(self) -> int: ...
    @property
    def is_control(self) -> bool: ...
    @property
    def is_transactional(self) -> bool: ...
