"""A batch with only some of its records: what the log cleaner writes (Kafka's
``MemoryRecords.filterTo`` / ``buildRetainedRecordsInto`` / ``writeEmptyHeader``).

A batch keeps its identity through cleaning: base offset, last offset delta (the batch still
ends where it ended, so a producer's last sequence, base sequence + last offset delta, is
unchanged), partition leader epoch, producer id / epoch / base sequence, codec, timestamp
type, transactional and control bits. Each retained record keeps its own offset delta, so
offsets never move. What changes: the records, the record count, the base and maximum
timestamps, the CRC.

Delete horizon (KIP-534): the first cleaning that keeps a tombstone (a keyed record with a
null value) sets attribute bit 6 and makes the base timestamp the time after which the
batch's tombstones may go (cleaning time + ``delete.retention.ms``). Record timestamps
are deltas from the base timestamp, so each record keeps its own timestamp.
"""

from __future__ import annotations

from collections.abc import Sequence

from crc32c import crc32c

from protocol.records import batch as B
from protocol.records.codec import Record
from protocol.records.compression import NONE, compress
from protocol.records.varints import varint

__all__ = ["delete_horizon_ms", "empty_batch", "retained_batch"]

_NULL = varint(-1)


def delete_horizon_ms(header: B.BatchHeader) -> int | None:
    """When the batch's tombstones may be removed; None if no cleaning has set it yet."""
    return header.base_timestamp if header.attributes & B.DELETE_HORIZON_BIT else None


def retained_batch(
    header: B.BatchHeader, records: Sequence[Record], *, delete_horizon: int | None
) -> bytes:
    """The batch of ``header`` holding only ``records`` (some of its own, in order).

    ``delete_horizon``: the time to stamp (or keep) as the batch's delete horizon, or None.
    A LogAppendTime batch keeps its maximum timestamp: readers give it to every record.
    """
    assert records, "an emptied batch is written by empty_batch"
    append_time = header.timestamp_type == B.LOG_APPEND_TIME
    if delete_horizon is not None:
        base_ts = delete_horizon
    else:
        base_ts = header.base_timestamp if append_time else records[0].timestamp
    max_ts = header.max_timestamp if append_time else max(r.timestamp for r in records)
    body = b"".join(_record(r, header.base_offset, base_ts) for r in records)
    attributes = header.attributes & ~B.DELETE_HORIZON_BIT
    if delete_horizon is not None:
        attributes |= B.DELETE_HORIZON_BIT
    if header.compression != NONE:
        body = compress(header.compression, body)
    return _assemble(header, attributes, base_ts, max_ts, count=len(records), body=body)


def empty_batch(header: B.BatchHeader) -> bytes:
    """The batch's header with no records (Kafka keeps one to preserve a producer's last
    sequence, or the offset range of what was cleaned): uncompressed, no delete horizon,
    both timestamps the batch's maximum."""
    attributes = header.attributes & ~(B.COMPRESSION_MASK | B.DELETE_HORIZON_BIT)
    ts = header.max_timestamp
    return _assemble(header, attributes, ts, ts, count=0, body=b"")


def _assemble(
    header: B.BatchHeader, attributes: int, base_ts: int, max_ts: int, *, count: int, body: bytes
) -> bytes:
    out = bytearray(
        B.HEADER.pack(
            header.base_offset,
            B.HEADER_SIZE - B.LOG_OVERHEAD + len(body),
            header.partition_leader_epoch,
            B.MAGIC,
            0,  # crc, below
            attributes,
            header.last_offset_delta,
            base_ts,
            max_ts,
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            count,
        )
    )
    crc = crc32c(body, crc32c(memoryview(out)[B.ATTRIBUTES_POS :]))
    out[B.CRC_POS : B.ATTRIBUTES_POS] = crc.to_bytes(4, "big")
    return bytes(out) + body


def _record(record: Record, base_offset: int, base_ts: int) -> bytes:
    """One record, in the layout :mod:`protocol.records.codec` describes."""
    parts = [b"\x00", varint(record.timestamp - base_ts), varint(record.offset - base_offset)]
    for field in (record.key, record.value):
        parts += (_NULL,) if field is None else (varint(len(field)), field)
    parts.append(varint(len(record.headers)))
    for key, value in record.headers:
        raw = key.encode()
        parts += (varint(len(raw)), raw)
        parts += (_NULL,) if value is None else (varint(len(value)), value)
    body = b"".join(parts)
    return varint(len(body)) + body
