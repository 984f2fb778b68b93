"""What a leader does to a producer's batches before appending them, when the topic asks
for it (Kafka's LogValidator): ``message.timestamp.type=LogAppendTime``, and a
``compression.type`` other than ``producer``.

Both work per batch, never per record:

- LogAppendTime sets the batch's max timestamp to the broker's clock and the attributes'
  timestamp-type bit; readers then give every record of the batch that time (Kafka's
  ``setMaxTimestamp``). The base timestamp and the records' deltas stay as written.
- Recompression decompresses the records section and compresses it again with the topic's
  codec. A record's bytes do not depend on the codec, so records are not decoded: the
  cost is one decompress and one compress of the batch, which Kafka pays too (it even
  rebuilds the records). It is paid only by batches whose codec differs from the topic's.

Either way the CRC32C (attributes..end) is recomputed, and only after the producer's CRC
was checked: a damaged batch is refused, never given a fresh, valid CRC.
"""

from __future__ import annotations

import struct

from crc32c import crc32c

from protocol.errors import InvalidRecordError, InvalidRecordsError
from protocol.records.batch import (
    ATTRIBUTES_POS,
    COMPRESSION_MASK,
    CRC_POS,
    HEADER_SIZE,
    LENGTH_POS,
    LOG_OVERHEAD,
    TIMESTAMP_TYPE_BIT,
    read_header,
    scan_batches,
    verify_crc,
)
from protocol.records.codec import RecordBatch
from protocol.records.compression import (
    CODECS,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    NONE,
    compress,
    decompress,
)

__all__ = [
    "recompress_batch",
    "rewrite_for_append",
    "set_log_append_time",
    "timestamp_outside",
    "topic_codec",
]

Buffer = bytes | bytearray | memoryview

NO_TIMESTAMP = -1
_MAX_TIMESTAMP_POS = 35  # attributes (2) + last offset delta (4) + base timestamp (8) after 21
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")


def topic_codec(compression_type: str) -> int | None:
    """A topic's ``compression.type`` as attribute bits; None for ``producer`` (keep the
    producer's codec). ValueError for a name Kafka does not know."""
    if compression_type == "producer":
        return None
    name = "none" if compression_type == "uncompressed" else compression_type
    if name not in CODECS:
        raise ValueError(f"unknown compression.type {compression_type!r}")
    return CODECS[name]


def rewrite_for_append(
    data: Buffer,
    *,
    codec: int | None,
    append_time_ms: int | None,
    level: int | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> Buffer:
    """``data`` (whole batches) as the topic wants them appended.

    ``codec``: the topic's codec, None to keep each batch's; ``level``: its level
    (None: the codec's default); ``append_time_ms``: the
    LogAppendTime to stamp, None for CreateTime. Returns ``data`` itself when no batch
    changes (the common case costs a header walk, no copy). Raises the
    :class:`~protocol.errors.CorruptBatchError` family for a damaged batch.
    """
    view = memoryview(data).cast("B")
    headers = scan_batches(view, verify=False)  # CRCs: below, for the batches rewritten
    if append_time_ms is None and all(codec in (None, h.compression) for h in headers):
        return data
    out = bytearray()
    for h in headers:
        batch = view[h.position : h.end]
        if append_time_ms is None and codec in (None, h.compression):
            out += batch
            continue
        verify_crc(view, h)
        rewritten = bytearray(batch)
        if codec is not None and codec != h.compression:
            rewritten = recompress_batch(rewritten, codec, max_decompressed_bytes, level)
        if append_time_ms is not None:
            set_log_append_time(rewritten, append_time_ms)
        out += rewritten
    return out


def recompress_batch(
    batch: Buffer,
    codec: int,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    level: int | None = None,
) -> bytearray:
    """One whole batch with its records section in ``codec`` (at ``level``, None: its
    default); every other field kept."""
    header = read_header(batch)
    payload = memoryview(batch)[HEADER_SIZE : header.end]
    raw: Buffer = payload
    if header.compression != NONE:
        raw = decompress(header.compression, payload, max_decompressed_bytes)
    records = raw if codec == NONE else compress(codec, raw, level)
    out = bytearray(memoryview(batch)[:HEADER_SIZE])
    out += records
    _INT32.pack_into(out, LENGTH_POS, HEADER_SIZE - LOG_OVERHEAD + len(records))
    _set_attributes(out, (header.attributes & ~COMPRESSION_MASK) | codec)
    return out


def set_log_append_time(batch: bytearray, append_time_ms: int) -> None:
    """Stamp one whole batch, in place, with the broker's time (LogAppendTime)."""
    header = read_header(batch)
    _INT64.pack_into(batch, _MAX_TIMESTAMP_POS, append_time_ms)
    _set_attributes(batch, header.attributes | TIMESTAMP_TYPE_BIT)


def _set_attributes(batch: bytearray, attributes: int) -> None:
    """New attributes, then the CRC over attributes..end (the attributes are inside it)."""
    _INT16.pack_into(batch, ATTRIBUTES_POS, attributes)
    crc = crc32c(memoryview(batch)[ATTRIBUTES_POS:])
    batch[CRC_POS:ATTRIBUTES_POS] = crc.to_bytes(4, "big")


def timestamp_outside(
    batch: Buffer,
    low: int,
    high: int,
    *,
    every_record: bool,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> int | None:
    """A record timestamp of one whole CreateTime batch outside [``low``, ``high``], or
    None (Kafka's KIP-937 check; a record without a timestamp, -1, is never outside).

    Without ``every_record`` only the header's first and max timestamps are looked at: no
    record is decoded, and a record older than the batch's first one is not seen. With
    it, every record's timestamp is decoded (decompressed first), as Kafka's LogValidator
    reads them: a cost per record, paid only by a topic that bounds how old a record may
    be. Raises :class:`~protocol.errors.InvalidRecordsError` for records that do not
    decode."""
    header = read_header(batch)
    if header.max_timestamp > high:
        return header.max_timestamp
    if not every_record:
        first = header.base_timestamp
        return first if first != NO_TIMESTAMP and first < low else None
    view = memoryview(batch).cast("B")
    try:
        columns = RecordBatch(header, view, max_decompressed_bytes).columns(rising=False)
    except InvalidRecordsError as exc:
        # its CRC held: the producer made it so, and sending it again cannot help
        # (Kafka's INVALID_RECORD, not the retriable CORRUPT_MESSAGE)
        raise InvalidRecordError(f"records that do not decode: {exc.message}") from None
    for timestamp in columns.timestamps:
        if timestamp != NO_TIMESTAMP and not low <= timestamp <= high:
            return timestamp
    return None
