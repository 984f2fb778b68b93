"""Records inside a RecordBatch v2: encoding (the producer's side) and decoding (consumers).

Each record, after the 61-byte batch header (and inside the compressed part, if any)::

    length:varint | attributes:int8 | timestamp_delta:varlong | offset_delta:varint
    | key_length:varint | key | value_length:varint | value
    | header_count:varint | (key_length:varint | key:utf8 | value_length:varint | value)*

Varints are zig-zag, little-endian base 128 (protobuf's sint64); a length of -1 is null.
The broker never runs this module on its hot path: it uses :mod:`protocol.records.batch`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from crc32c import crc32c

from protocol.errors import InvalidRecordsError
from protocol.records import batch as B
from protocol.records.compression import (
    CODEC_NAMES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    NONE,
    codec_id,
    compress,
    decompress,
)

__all__ = ["BatchBuilder", "Record", "RecordBatch", "decode_batches", "encode_batch"]

Buffer = bytes | bytearray | memoryview
Header = tuple[str, bytes | None]
RecordTuple = tuple[bytes | None, bytes | None, Sequence[Header] | None, int | None]

_MAX_VARINT_BYTES = 10


def _uvarint(z: int) -> bytes:
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = [_uvarint(z) for z in range(1 << 14)]  # every one- and two-byte varint
_NULL = _SMALL[1]  # zig-zag(-1)


def varint(n: int) -> bytes:
    """Zig-zag varint of a signed 64-bit integer."""
    z = (n << 1) ^ (n >> 63)
    return _SMALL[z] if z < 16384 else _uvarint(z)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the zig-zag varint at ``pos``; returns (value, next position)."""
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z = b & 0x7F
    shift = 7
    end = pos + _MAX_VARINT_BYTES
    pos += 1
    while True:
        if pos >= end:
            raise InvalidRecordsError("varint is longer than 10 bytes")
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7


class Record(NamedTuple):
    """One decoded record. ``key`` and ``value`` are None when null."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BatchBuilder:
    """Encodes records into one batch as they arrive (the producer's per-partition buffer).

    ``append`` does the varint work at send time, so ``build`` is a join, an optional
    compression and one CRC. Offsets are deltas from 0: the broker assigns the real ones.
    """

    __slots__ = (
        "_base_offset",
        "_base_sequence",
        "_base_ts",
        "_codec",
        "_count",
        "_is_transactional",
        "_max_ts",
        "_parts",
        "_producer_epoch",
        "_producer_id",
        "_size",
    )

    def __init__(
        self,
        *,
        compression: str = "none",
        base_offset: int = 0,
        producer_id: int = B.NO_PRODUCER_ID,
        producer_epoch: int = -1,
        base_sequence: int = -1,
        is_transactional: bool = False,
    ) -> None:
        self._codec = codec_id(compression)
        self._base_offset = base_offset
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._is_transactional = is_transactional
        self._parts: list[Buffer] = []
        self._count = 0
        self._size = 0
        self._base_ts = -1
        self._max_ts = -1

    @property
    def record_count(self) -> int:
        return self._count

    @property
    def size_in_bytes(self) -> int:
        """Uncompressed size of the batch built now (header included)."""
        return B.HEADER_SIZE + self._size

    def append(
        self,
        key: Buffer | None,
        value: Buffer | None,
        headers: Sequence[Header] | None = None,
        timestamp_ms: int | None = None,
    ) -> int:
        """Add a record; returns its offset delta within the batch."""
        if timestamp_ms is None:
            timestamp_ms = _now_ms()
        delta = self._count
        if delta == 0:
            self._base_ts = self._max_ts = timestamp_ms
        elif timestamp_ms > self._max_ts:
            self._max_ts = timestamp_ms
        parts: list[Buffer] = [b"\x00", varint(timestamp_ms - self._base_ts), varint(delta)]
        if key is None:
            parts.append(_NULL)
        else:
            parts += (varint(len(key)), key)
        if value is None:
            parts.append(_NULL)
        else:
            parts += (varint(len(value)), value)
        if headers:
            parts.append(varint(len(headers)))
            for hkey, hvalue in headers:
                raw = hkey.encode()
                parts += (varint(len(raw)), raw)
                if hvalue is None:
                    parts.append(_NULL)
                else:
                    parts += (varint(len(hvalue)), hvalue)
        else:
            parts.append(b"\x00")
        body = b"".join(parts)
        self._parts += (varint(len(body)), body)
        self._size += len(body) + len(self._parts[-2])
        self._count = delta + 1
        return delta

    def build(self) -> bytes:
        if not self._count:
            raise ValueError("a record batch needs at least one record")
        records = b"".join(self._parts)
        attributes = self._codec
        if self._codec != NONE:
            records = compress(self._codec, records)
        if self._is_transactional:
            attributes |= B.TRANSACTIONAL_BIT
        header = bytearray(
            B.HEADER.pack(
                self._base_offset,
                B.HEADER_SIZE - B.LOG_OVERHEAD + len(records),
                B.NO_PARTITION_LEADER_EPOCH,
                B.MAGIC,
                0,  # crc, below
                attributes,
                self._count - 1,
                self._base_ts,
                self._max_ts,
                self._producer_id,
                self._producer_epoch,
                self._base_sequence,
                self._count,
            )
        )
        crc = crc32c(records, crc32c(memoryview(header)[B.ATTRIBUTES_POS :]))
        header[B.CRC_POS : B.ATTRIBUTES_POS] = crc.to_bytes(4, "big")
        return bytes(header) + records


def encode_batch(
    records: Iterable[RecordTuple],
    *,
    compression: str = "none",
    base_offset: int = 0,
    producer_id: int = B.NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
) -> bytes:
    """Encode ``(key, value, headers, timestamp_ms)`` tuples as one RecordBatch v2.

    ``headers`` is a list of ``(str, bytes | None)`` or None; a None timestamp is now.
    """
    builder = BatchBuilder(
        compression=compression,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        is_transactional=is_transactional,
    )
    for key, value, headers, timestamp_ms in records:
        builder.append(key, value, headers, timestamp_ms)
    return builder.build()


class RecordBatch:
    """A decoded batch: its header fields, and its records decoded on first access."""

    __slots__ = ("_data", "_max_decompressed", "_records", "header")

    def __init__(self, header: B.BatchHeader, data: memoryview, max_decompressed: int) -> None:
        self.header = header
        self._data = data  # the whole batch, header included
        self._max_decompressed = max_decompressed
        self._records: list[Record] | None = None

    def __repr__(self) -> str:
        h = self.header
        return (
            f"RecordBatch(base_offset={h.base_offset}, last_offset={h.last_offset}, "
            f"count={h.record_count}, compression={self.compression!r})"
        )

    @property
    def base_offset(self) -> int:
        return self.header.base_offset

    @property
    def last_offset(self) -> int:
        return self.header.last_offset

    @property
    def next_offset(self) -> int:
        return self.header.next_offset

    @property
    def compression(self) -> str:
        return CODEC_NAMES.get(self.header.compression, f"unknown({self.header.compression})")

    @property
    def producer_id(self) -> int:
        return self.header.producer_id

    @property
    def producer_epoch(self) -> int:
        return self.header.producer_epoch

    @property
    def base_sequence(self) -> int:
        return self.header.base_sequence

    @property
    def partition_leader_epoch(self) -> int:
        return self.header.partition_leader_epoch

    @property
    def timestamp_type(self) -> int:
        return self.header.timestamp_type

    @property
    def is_transactional(self) -> bool:
        return self.header.is_transactional

    @property
    def is_control(self) -> bool:
        return self.header.is_control

    @property
    def size_in_bytes(self) -> int:
        return self.header.size

    @property
    def records(self) -> list[Record]:
        """The records, decoded once; raises :class:`InvalidRecordsError` if damaged."""
        if self._records is None:
            self._records = self._decode()
        return self._records

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return self.header.record_count

    def _decode(self) -> list[Record]:
        h = self.header
        payload = self._data[B.HEADER_SIZE :]
        if h.compression == NONE:
            data = bytes(payload)
        else:
            data = decompress(h.compression, payload, self._max_decompressed)
        fixed_ts = h.max_timestamp if h.timestamp_type == B.LOG_APPEND_TIME else None
        try:
            return _decode_records(data, h.record_count, h.base_offset, h.base_timestamp, fixed_ts)
        except (IndexError, UnicodeDecodeError) as exc:
            raise InvalidRecordsError(
                f"batch at offset {h.base_offset}: records are malformed ({exc})", h.position
            ) from None


def _decode_records(
    data: bytes, count: int, base_offset: int, base_ts: int, fixed_ts: int | None
) -> list[Record]:
    out: list[Record] = []
    append = out.append
    pos = 0
    size = len(data)
    for _ in range(count):
        length, pos = read_varint(data, pos)
        end = pos + length
        if length <= 0 or end > size:
            raise InvalidRecordsError(f"record length {length} does not fit the batch")
        pos += 1  # attributes: unused in v2
        ts_delta, pos = read_varint(data, pos)
        offset_delta, pos = read_varint(data, pos)
        key, pos = _read_bytes(data, pos, end)
        value, pos = _read_bytes(data, pos, end)
        n_headers, pos = read_varint(data, pos)
        headers: list[Header] = []
        if n_headers:
            if n_headers < 0 or n_headers > end - pos:
                raise InvalidRecordsError(f"record declares {n_headers} headers")
            for _ in range(n_headers):
                hkey, pos = _read_bytes(data, pos, end)
                if hkey is None:
                    raise InvalidRecordsError("a record header has a null key")
                hvalue, pos = _read_bytes(data, pos, end)
                headers.append((hkey.decode(), hvalue))
        if pos != end:
            raise InvalidRecordsError(
                f"record at delta {offset_delta} is {length} bytes long but its fields "
                f"take {pos - end + length}"
            )
        ts = base_ts + ts_delta if fixed_ts is None else fixed_ts
        append(Record(base_offset + offset_delta, ts, key, value, headers))
    if pos != size:
        raise InvalidRecordsError(f"{size - pos} bytes follow the batch's {count} records")
    return out


def _read_bytes(data: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    n, pos = read_varint(data, pos)
    if n < 0:
        if n != -1:
            raise InvalidRecordsError(f"negative length {n}")
        return None, pos
    stop = pos + n
    if stop > end:
        raise InvalidRecordsError(f"a field of {n} bytes runs past its record")
    return data[pos:stop], stop


def decode_batches(
    data: Buffer,
    *,
    verify_crc: bool = True,
    allow_partial_tail: bool = False,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> Iterator[RecordBatch]:
    """The batches in ``data``, in order; each decodes its records when they are read.

    Headers (and CRCs) of all batches are checked before the first is yielded, so a
    corrupt buffer raises before any of it is used. ``allow_partial_tail`` drops an
    incomplete last batch, as a consumer must for a size-limited fetch.
    """
    view = memoryview(data).cast("B")
    headers = B.scan_batches(view, verify=verify_crc, allow_partial_tail=allow_partial_tail)
    return (RecordBatch(h, view[h.position : h.end], max_decompressed_bytes) for h in headers)
