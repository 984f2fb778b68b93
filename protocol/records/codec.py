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
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice, repeat
from operator import lt
from typing import Any, NamedTuple, TypeVar

from crc32c import crc32c

from protocol.errors import InvalidRecordsError
from protocol.records import batch as B
from protocol.records import runs
from protocol.records.compression import (
    CODEC_NAMES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    NONE,
    codec_id,
    compress,
    decompress,
)
from protocol.records.runs import MIN_RECORDS, decode_runs, encode_run
from protocol.records.varints import (
    NULL,
    SMALL,
    ZIGZAG,
    read_uvarint,
    read_varint,
    signed,
    uvarint,
    varint,
)

__all__ = [
    "BatchBuilder",
    "Record",
    "RecordBatch",
    "RecordColumns",
    "decode_batches",
    "encode_batch",
]

Buffer = bytes | bytearray | memoryview
Header = tuple[str, bytes | None]
RecordTuple = tuple[bytes | None, bytes | None, Sequence[Header] | None, int | None]
T = TypeVar("T", bound=tuple[Any, ...])


class Record(NamedTuple):
    """One decoded record. ``key`` and ``value`` are None when null."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    """Empty for most records: one shared empty tuple, not a new list per record (the
    lists' allocation and garbage collection cost a consumer a tenth of its time)."""
    timestamp_type: int = 0
    """The batch's: 0 CreateTime (the producer's), 1 LogAppendTime (the broker's)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BatchBuilder:
    """Encodes records into one batch as they arrive (the producer's per-partition buffer).

    ``append`` writes each record straight into one growing buffer that starts with room
    for the batch header, so ``build`` is a header pack, an optional compression and one
    CRC, with no join and no copy of the records. Offsets are deltas from 0: the broker
    assigns the real ones.
    """

    __slots__ = (
        "_base_offset",
        "_base_sequence",
        "_base_ts",
        "_buf",
        "_codec",
        "_count",
        "_is_transactional",
        "_level",
        "_max_ts",
        "_producer_epoch",
        "_producer_id",
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
        level: int | None = None,
    ) -> None:
        """``level``: the codec's compression level, Kafka's (None: its default)."""
        self._codec = codec_id(compression)
        self._level = level
        self._base_offset = base_offset
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._is_transactional = is_transactional
        self._buf = bytearray(B.HEADER_SIZE)  # the header is packed over these at build
        self._count = 0
        self._base_ts = -1
        self._max_ts = -1

    @property
    def record_count(self) -> int:
        return self._count

    @property
    def size_in_bytes(self) -> int:
        """Uncompressed size of the batch built now (header included)."""
        return len(self._buf)

    def append(
        self,
        key: Buffer | None,
        value: Buffer | None,
        headers: Sequence[Header] | None = None,
        timestamp_ms: int | None = None,
    ) -> int:
        """Add a record; returns the batch's uncompressed size in bytes now.

        The producer's hot path: one call per record, so the fields go into the buffer
        directly and small varints come from a table (a function call per field was half
        the cost).
        """
        if timestamp_ms is None:
            timestamp_ms = _now_ms()
        delta = self._count
        if delta == 0:
            self._base_ts = self._max_ts = timestamp_ms
        elif timestamp_ms > self._max_ts:
            self._max_ts = timestamp_ms
        ts_delta = timestamp_ms - self._base_ts
        z = (ts_delta << 1) ^ (ts_delta >> 63)
        ts_field = SMALL[z] if z < 16384 else uvarint(z)
        delta_field = SMALL[delta << 1] if delta < 8192 else uvarint(delta << 1)
        if key is None:
            key_field, key_size = NULL, 0
        else:
            key_size = len(key)
            key_field = SMALL[key_size << 1] if key_size < 8192 else uvarint(key_size << 1)
        if value is None:
            value_field, value_size = NULL, 0
        else:
            value_size = len(value)
            value_field = SMALL[value_size << 1] if value_size < 8192 else uvarint(value_size << 1)
        # attributes + fields + the header count's one byte (when there are none)
        size = (
            2 + len(ts_field) + len(delta_field) + len(key_field) + key_size + len(value_field)
        ) + value_size
        header_fields = _encode_headers(headers) if headers else None
        if header_fields is not None:
            size += len(header_fields) - 1
        buf = self._buf
        buf += SMALL[size << 1] if size < 8192 else uvarint(size << 1)
        buf += b"\x00"  # attributes: unused in v2
        buf += ts_field
        buf += delta_field
        buf += key_field
        if key is not None:
            buf += key
        buf += value_field
        if value is not None:
            buf += value
        buf += b"\x00" if header_fields is None else header_fields
        self._count = delta + 1
        return len(buf)

    def extend(
        self,
        keys: Sequence[Buffer | None] | None,
        values: Sequence[Buffer | None],
        timestamps: Sequence[int],
        headers: Sequence[Sequence[Header] | None] | None = None,
        *,
        timestamp_runs: tuple[list[int], list[int]] | None = None,
    ) -> int:
        """Add many records at once (``Producer.send_batch``); ``keys`` None means all
        keyless, ``headers`` None none at all, ``timestamps`` are ints (ms). Returns the
        batch's uncompressed size now. ``timestamp_runs``: the timestamps'
        :func:`~protocol.records.runs.timestamp_runs` if the caller has them.

        From :data:`~protocol.records.runs.MIN_ENCODE` records on, without headers or None
        values, with timestamps from the batch's first to 8 s after it, they are encoded
        column by column (:func:`encode_run`): about a fifth of
        the cost of ``append`` each when they share one key and value size, 0.6x when
        their sizes differ (under 8 KiB); otherwise all of them go one by one through
        ``append``. Either way the bytes are those of one ``append`` per record.
        """
        n = len(values)
        if not n:
            return len(self._buf)
        if len(timestamps) != n or (keys is not None and len(keys) != n):
            raise ValueError("keys, values and timestamps must be as many")
        base = timestamps[0] if self._count == 0 else self._base_ts
        encoded = (
            encode_run(keys, values, timestamps, base, self._count, runs=timestamp_runs)  # type: ignore[arg-type] # None keys or values: it declines
            if headers is None and n >= runs.MIN_ENCODE
            else None
        )
        if encoded is None:
            append = self.append
            for i in range(n):
                append(
                    None if keys is None else keys[i],
                    values[i],
                    None if headers is None else headers[i],
                    timestamps[i],
                )
            return len(self._buf)
        if self._count == 0:
            self._base_ts = self._max_ts = base
        latest = max(timestamps) if timestamp_runs is None else timestamp_runs[1][-1]
        self._max_ts = max(self._max_ts, latest)
        self._buf += encoded
        self._count += n
        return len(self._buf)

    def build(self) -> bytearray:
        """The batch, header and CRC included. The builder is spent after this."""
        if not self._count:
            raise ValueError("a record batch needs at least one record")
        attributes = self._codec
        if self._is_transactional:
            attributes |= B.TRANSACTIONAL_BIT
        buf = self._buf
        if self._codec != NONE:
            compressed = compress(self._codec, memoryview(buf)[B.HEADER_SIZE :], self._level)
            buf = bytearray(B.HEADER_SIZE)
            buf += compressed
        B.HEADER.pack_into(
            buf,
            0,
            self._base_offset,
            len(buf) - B.LOG_OVERHEAD,
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
        crc = crc32c(memoryview(buf)[B.ATTRIBUTES_POS :])
        buf[B.CRC_POS : B.ATTRIBUTES_POS] = crc.to_bytes(4, "big")
        return buf


def _encode_headers(headers: Sequence[Header]) -> bytes:
    """A record's header count and headers, encoded."""
    parts: list[Buffer] = [varint(len(headers))]
    for hkey, hvalue in headers:
        raw = hkey.encode()
        parts += (varint(len(raw)), raw)
        if hvalue is None:
            parts.append(NULL)
        else:
            parts += (varint(len(hvalue)), hvalue)
    return b"".join(parts)


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
    return bytes(builder.build())


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
            self._records = self.decode_as(Record)
        return self._records

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return self.header.record_count

    def decode_as(self, cls: type[T], lead: tuple[Any, ...] = ()) -> list[T]:
        """The records as ``cls`` instances (a tuple type such as a NamedTuple) whose fields
        are ``lead`` followed by a :class:`Record`'s; decoded on each call, not cached.
        Raises :class:`InvalidRecordsError` if the batch is damaged.
        """
        columns = self.columns(rising=False)
        return columns.rows(cls, lead, 0, len(columns))

    def columns(self, *, rising: bool = True) -> RecordColumns:
        """The records decoded as columns, each record's tuple made only when asked for
        (:meth:`RecordColumns.rows`); decoded on each call, not cached. Raises
        :class:`InvalidRecordsError` if the batch is damaged, or with ``rising`` if its
        offsets do not rise (a consumer finds its position among them by bisection; the
        broker's cleaner and readers of whole batches take such a batch as it is, as
        Kafka's do).
        """
        h = self.header
        payload = self._data[B.HEADER_SIZE :]
        if h.compression == NONE:
            data = bytes(payload)
        else:
            data = decompress(h.compression, payload, self._max_decompressed)
        try:
            offsets, timestamps, keys, values, headers = _decode_records(
                data, h.record_count, h.base_offset, h.base_timestamp, rising=rising
            )
        except (IndexError, UnicodeDecodeError) as exc:
            raise InvalidRecordsError(
                f"batch at offset {h.base_offset}: records are malformed ({exc})", h.position
            ) from None
        # LOG_APPEND_TIME: the broker's append time, for every record
        append_time = h.max_timestamp if h.timestamp_type == B.LOG_APPEND_TIME else None
        return RecordColumns(offsets, timestamps, keys, values, headers, append_time=append_time)


class RecordColumns:
    """A batch's records as columns (lists of offsets, timestamps, keys, values, headers),
    made into tuples a slice at a time.

    Ints, bytes and the shared empty headers tuple are not tracked by CPython's collector;
    a tuple per record is. Made all at once, a batch's 1,000+ records outlive a
    generation-0 collection or two while the user takes them 500 at a time, and the
    collector then walks them again and again: a consumer spent a quarter of its time in
    it. Made as the user takes them, records the user drops before the next poll are freed
    as fast as they are made, and the collector's count does not move.
    """

    __slots__ = ("append_time", "headers", "keys", "offsets", "timestamps", "values")

    def __init__(
        self,
        offsets: list[int],
        timestamps: list[int],
        keys: list[bytes | None],
        values: list[bytes | None],
        headers: list[tuple[Header, ...]],
        *,
        append_time: int | None = None,
    ) -> None:
        self.offsets = offsets
        """Rising when made by :meth:`RecordBatch.columns` with ``rising`` (a consumer
        bisects them)."""
        self.timestamps = timestamps
        self.keys = keys
        self.values = values
        self.headers = headers
        self.append_time = append_time
        """The batch's max timestamp when it is LOG_APPEND_TIME: every record's timestamp."""

    def __len__(self) -> int:
        return len(self.offsets)

    def rows(self, cls: type[T], lead: tuple[Any, ...], start: int, stop: int) -> list[T]:
        """Records ``start`` to ``stop`` (a slice's bounds) as ``cls`` instances whose
        fields are ``lead`` followed by a :class:`Record`'s (the timestamp type only if
        ``cls`` has a field for it: a NamedTuple of one field more)."""
        return list(self.iter_rows(cls, lead, start, stop))

    def iter_rows(self, cls: type[T], lead: tuple[Any, ...], start: int, stop: int) -> Iterator[T]:
        """:meth:`rows`, made one at a time as the iterator is read."""
        columns: list[Iterable[Any]] = [
            self.offsets,
            self.timestamps if self.append_time is None else repeat(self.append_time),
            self.keys,
            self.values,
            self.headers,
        ]
        if len(getattr(cls, "_fields", ())) > len(lead) + len(columns):
            columns.append(repeat(B.CREATE_TIME if self.append_time is None else B.LOG_APPEND_TIME))
        if start != 0 or stop < len(self.offsets):
            columns = [c[start:stop] if isinstance(c, list) else c for c in columns]
        # tuple.__new__ called from C (map over zip; the repeats are endless, hence not
        # strict): a NamedTuple's own __new__ is a Python function, one call per record
        rows = zip(*map(repeat, lead), *columns, strict=False)
        return map(_tuple_new, repeat(cls), rows)


_tuple_new: Callable[..., Any] = tuple.__new__

Columns = tuple[
    list[int], list[int], list[bytes | None], list[bytes | None], list[tuple[Header, ...]]
]


def _decode_records(  # noqa: C901, PLR0912, PLR0915 - the consumer's per-record loop, inlined
    data: bytes, count: int, base_offset: int, base_ts: int, *, rising: bool = False
) -> Columns:
    """The ``count`` records in ``data``, as columns: offsets, timestamps, keys, values and
    headers (the caller zips them into records, in C).

    Records of one layout are decoded first, a run at a time, by
    :func:`protocol.records.runs.decode_runs`; this loop takes the rest (all of a batch of
    varied records). It is one flat function: varints of
    one or two bytes (lengths under 8 KiB, small deltas) are decoded inline, and only longer
    ones and non-empty headers call out (a call per field was half the cost). A varint is
    kept raw while it is a length: ``z`` is the zig-zag value, odd for negatives, and
    ``z >> 1`` the length when even. Every check of a field-by-field decoder is made;
    an index past the end of ``data`` raises IndexError, which the caller reports as
    malformed records.
    """
    offsets: list[int] = []
    timestamps: list[int] = []
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    with_headers: dict[int, tuple[Header, ...]] = {}
    first = pos = 0
    if count >= MIN_RECORDS:  # records of one layout first, column by column
        first, pos = decode_runs(
            data, count, base_offset, base_ts, (offsets, timestamps, keys, values)
        )
    add_offset, add_ts, add_key, add_value = (
        offsets.append,
        timestamps.append,
        keys.append,
        values.append,
    )
    zigzag = ZIGZAG  # signed value of a one- or two-byte varint, by its raw value
    size = len(data)
    for i in range(first, count):
        z = data[pos]  # length
        if z < 0x80:
            pos += 1
        elif (c := data[pos + 1]) < 0x80:
            z = (z & 0x7F) | (c << 7)
            pos += 2
        else:
            z, pos = read_uvarint(data, pos)
        end = pos + (z >> 1)
        if z & 1 or not z or end > size:
            raise InvalidRecordsError(f"record length {signed(z)} does not fit the batch")
        z = data[pos + 1]  # after the attributes (unused in v2): the timestamp delta
        if z < 0x80:
            pos += 2
            add_ts(base_ts + zigzag[z])
        elif (c := data[pos + 2]) < 0x80:
            pos += 3
            add_ts(base_ts + zigzag[(z & 0x7F) | (c << 7)])
        else:
            z, pos = read_uvarint(data, pos + 1)
            add_ts(base_ts + signed(z))
        z = data[pos]  # offset delta
        if z < 0x80:
            pos += 1
            add_offset(base_offset + zigzag[z])
        elif (c := data[pos + 1]) < 0x80:
            pos += 2
            add_offset(base_offset + zigzag[(z & 0x7F) | (c << 7)])
        else:
            z, pos = read_uvarint(data, pos)
            add_offset(base_offset + signed(z))
        z = data[pos]  # key length
        if z == 1:  # -1: null
            pos += 1
            add_key(None)
        else:
            if z < 0x80:
                pos += 1
            elif (c := data[pos + 1]) < 0x80:
                z = (z & 0x7F) | (c << 7)
                pos += 2
            else:
                z, pos = read_uvarint(data, pos)
            if z & 1:
                if z != 1:
                    raise InvalidRecordsError(f"negative length {signed(z)}")
                add_key(None)  # -1 written in more bytes than it needs: null all the same
            else:
                stop = pos + (z >> 1)
                if stop > end:
                    raise InvalidRecordsError(f"a field of {z >> 1} bytes runs past its record")
                add_key(data[pos:stop])
                pos = stop
        z = data[pos]  # value length
        if z < 0x80:
            pos += 1
        elif (c := data[pos + 1]) < 0x80:
            z = (z & 0x7F) | (c << 7)
            pos += 2
        else:
            z, pos = read_uvarint(data, pos)
        if z & 1:
            if z != 1:
                raise InvalidRecordsError(f"negative length {signed(z)}")
            add_value(None)
            stop = pos
        else:
            stop = pos + (z >> 1)
            add_value(data[pos:stop])  # checked below: a slice never raises
        if stop + 1 == end and data[stop] == 0:  # no headers, and the record ends there
            pos = end
            continue
        if stop > end:
            raise InvalidRecordsError(f"a field of {z >> 1} bytes runs past its record")
        if data[stop] == 0:
            pos = stop + 1
        else:
            with_headers[i], pos = _read_headers(data, stop, end)
        if pos != end:
            raise InvalidRecordsError(
                f"record at delta {offsets[-1] - base_offset}: its fields take "
                f"{pos - end:+d} bytes more than its length says"
            )
    if pos != size:
        raise InvalidRecordsError(f"{size - pos} bytes follow the batch's {count} records")
    if rising and count > first:  # runs' offset deltas are 0, 1, 2, ... by construction
        _check_rising(offsets[first - 1 :] if first else offsets, base_offset)
    headers: list[tuple[Header, ...]] = [()] * count
    for i, record_headers in with_headers.items():
        headers[i] = record_headers
    return offsets, timestamps, keys, values, headers


def _check_rising(offsets: list[int], base_offset: int) -> None:
    """Offsets must rise within a batch: a consumer finds its position among them by
    bisection, and a record at or below the one before it would be skipped unseen."""
    if not all(map(lt, offsets, islice(offsets, 1, None))):
        i = next(i for i in range(1, len(offsets)) if offsets[i] <= offsets[i - 1])
        raise InvalidRecordsError(
            f"record offset deltas must rise: {offsets[i] - base_offset} follows "
            f"{offsets[i - 1] - base_offset}"
        )


def _read_headers(data: bytes, pos: int, end: int) -> tuple[tuple[Header, ...], int]:
    n_headers, pos = read_varint(data, pos)
    if n_headers < 0 or n_headers > end - pos:
        raise InvalidRecordsError(f"record declares {n_headers} headers")
    headers: list[Header] = []
    for _ in range(n_headers):
        hkey, pos = _read_bytes(data, pos, end)
        if hkey is None:
            raise InvalidRecordsError("a record header has a null key")
        hvalue, pos = _read_bytes(data, pos, end)
        headers.append((hkey.decode(), hvalue))
    return tuple(headers), pos


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
