"""The RecordBatch v2 header: a view that never touches the records.

This is what the broker uses on its hot path: walk the batches in a buffer by their
headers, check each CRC32C (a C extension), patch base offset and leader epoch in place.
Work is O(batches), never O(records).

Layout (Kafka's DefaultRecordBatch, big-endian), 61 bytes::

    pos  size  field
      0     8  base_offset
      8     4  batch_length            bytes after this field (total size - 12)
     12     4  partition_leader_epoch  outside the CRC: patched by the leader in place
     16     1  magic                   2
     17     4  crc                     CRC32C of bytes [21, end)
     21     2  attributes              bits 0-2 compression, 3 timestamp type,
                                       4 transactional, 5 control, 6 delete horizon
     23     4  last_offset_delta
     27     8  base_timestamp
     35     8  max_timestamp
     43     8  producer_id
     51     2  producer_epoch
     53     4  base_sequence
     57     4  record_count
     61        records (compressed as a whole when attributes say so)
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from crc32c import crc32c

from protocol.errors import (
    CorruptBatchError,
    CrcMismatchError,
    InvalidMagicError,
    TruncatedBatchError,
)

__all__ = [
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "BatchHeader",
    "read_header",
    "refresh_crc",
    "scan_batches",
    "set_base_offset",
    "set_partition_leader_epoch",
    "verify_crc",
]

Buffer = bytes | bytearray | memoryview

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # base_offset + batch_length: the bytes batch_length does not count
MAGIC = 2

LENGTH_POS = 8
LEADER_EPOCH_POS = 12
MAGIC_POS = 16
CRC_POS = 17
ATTRIBUTES_POS = 21

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20
DELETE_HORIZON_BIT = 0x40

CREATE_TIME = 0
LOG_APPEND_TIME = 1

NO_PRODUCER_ID = -1
NO_PARTITION_LEADER_EPOCH = -1

_OFFSET = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_PREFIX = struct.Struct(">qi")


class BatchHeader(NamedTuple):
    """One batch's header and where it sits in its buffer."""

    position: int
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def end(self) -> int:
        return self.position + self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return LOG_APPEND_TIME if self.attributes & TIMESTAMP_TYPE_BIT else CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)


def read_header(buf: Buffer, position: int = 0) -> BatchHeader:
    """Parse and sanity-check the header of the batch at ``position`` (no CRC check).

    Raises :class:`TruncatedBatchError` if the batch runs past the buffer,
    :class:`InvalidMagicError` if it is not v2, :class:`CorruptBatchError` for impossible
    lengths or counts.
    """
    available = len(buf) - position
    if available < LOG_OVERHEAD:
        raise TruncatedBatchError(
            f"batch at byte {position}: {available} bytes, too few for its offset and length",
            position,
        )
    _, length = _PREFIX.unpack_from(buf, position)
    if length < HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptBatchError(
            f"batch at byte {position}: length {length} is shorter than a batch header",
            position,
        )
    if length > available - LOG_OVERHEAD:
        raise TruncatedBatchError(
            f"batch at byte {position}: length {length} runs past the end of the data "
            f"({available - LOG_OVERHEAD} bytes left)",
            position,
        )
    header = BatchHeader(position, *HEADER.unpack_from(buf, position))
    if header.magic != MAGIC:
        raise InvalidMagicError(
            f"batch at byte {position}: magic {header.magic}, only RecordBatch v2 (magic 2) "
            f"is supported",
            position,
        )
    if header.record_count < 0 or header.last_offset_delta < header.record_count - 1:
        raise CorruptBatchError(
            f"batch at byte {position}: {header.record_count} records do not fit "
            f"last offset delta {header.last_offset_delta}",
            position,
        )
    return header


def verify_crc(buf: Buffer, header: BatchHeader) -> None:
    """Check the batch's CRC32C, computed over attributes..end (leader epoch excluded)."""
    view = memoryview(buf)[header.position + ATTRIBUTES_POS : header.end]
    actual = crc32c(view)
    if actual != header.crc:
        raise CrcMismatchError(
            f"batch at byte {header.position} (base offset {header.base_offset}): "
            f"CRC32C is {actual:#010x}, the header says {header.crc:#010x}",
            header.position,
        )


def scan_batches(
    buf: Buffer, *, verify: bool = True, allow_partial_tail: bool = False
) -> list[BatchHeader]:
    """Headers of every batch in ``buf``, in order, CRC-checked unless ``verify`` is false.

    With ``allow_partial_tail`` an incomplete last batch (as a size-limited fetch may end
    with) is left out instead of raising; any other damage raises a
    :class:`CorruptBatchError` subclass whose ``position`` says where the valid data ends.
    """
    headers: list[BatchHeader] = []
    position = 0
    size = len(buf)
    while position < size:
        try:
            header = read_header(buf, position)
        except TruncatedBatchError:
            if allow_partial_tail:
                break
            raise
        if verify:
            verify_crc(buf, header)
        headers.append(header)
        position = header.end
    return headers


def set_base_offset(buf: bytearray | memoryview, header: BatchHeader, base_offset: int) -> None:
    """Assign the batch's offsets by patching its base offset (outside the CRC) in place."""
    _OFFSET.pack_into(buf, header.position, base_offset)


def set_partition_leader_epoch(
    buf: bytearray | memoryview, header: BatchHeader, epoch: int
) -> None:
    """Stamp the leader epoch into the batch (outside the CRC, so no recomputation)."""
    _INT32.pack_into(buf, header.position + LEADER_EPOCH_POS, epoch)


_PRODUCER = struct.Struct(">qhi")
PRODUCER_POS = 43  # producer id, producer epoch, base sequence: inside the CRC


def set_producer_fields(
    buf: bytearray, producer_id: int, producer_epoch: int, base_sequence: int
) -> None:
    """Stamp an idempotent producer's id, epoch and base sequence into the one batch in
    ``buf`` (a producer does it when it first sends the batch) and recompute the CRC they
    are covered by: O(bytes) in C, once per batch."""
    _PRODUCER.pack_into(buf, PRODUCER_POS, producer_id, producer_epoch, base_sequence)
    refresh_crc(buf)


def refresh_crc(buf: bytearray) -> None:
    """Recompute the CRC of the one batch in ``buf`` after a change to fields it covers."""
    _UINT32.pack_into(buf, CRC_POS, crc32c(memoryview(buf)[ATTRIBUTES_POS:]))
