"""Runs of records that share one layout, decoded (the consumer's fast path) and encoded
(``Producer.send_batch``) column by column.

A producer's batch is often records of one shape: the same key and value sizes, no
headers, offset deltas 0, 1, 2, ... and timestamp deltas of one or two bytes. Every such
record then has the same length, and each field sits at the same place in it, so a run
of them is a table with a fixed stride: one extended slice (``data[at:stop:stride]``, C)
reads a field of every record at once. Each byte that must be the same in all of them is
checked that way, the offset deltas against the bytes they must be, the timestamp deltas
for their width; keys and values are sliced out by position. Per record that is a slice
or two in a list comprehension, against some thirty bytecodes per record of the
field-by-field loop in :func:`protocol.records.codec._decode_records`, which decodes
whatever is not such a run (and reports what is malformed: records that do not check out
are left to it, never rejected here).

A run is the longest prefix of records that agree with its first (``bytes.lstrip`` finds
the first that differs, in C). Runs also break where an offset delta's varint grows a
byte (deltas 64 and 8,192) or a timestamp delta's does (64 ms, from the batch's first
record): a steady producer's batch is two to four runs. Two runs in a row cut short (under
MIN_RUN records) by a record unlike the others end the fast path: records of varied sizes
cost two layouts and column checks per batch, not one per record.

:func:`encode_run` is the other way: records of one shape, given as columns (keys,
values, timestamps), become the same bytes ``BatchBuilder.append`` writes one record at a
time. Each record is a handful of fields that are either the same in every record (the
key and value lengths, the attributes) or come from a table (offset and timestamp deltas),
so the columns are interleaved by slice assignment and joined once, in C; per record
only the timestamp delta's table lookup runs in Python. Records of different sizes (JSON,
text) take the same route with their length fields looked up per record and each
record's length summed in one list comprehension: about 0.6x the cost of ``append``
instead of a fifth.
"""

from __future__ import annotations

import operator
import struct
from bisect import bisect_right
from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple

from protocol.errors import InvalidRecordsError
from protocol.records.varints import NULL, SMALL, ZIGZAG, read_uvarint, uvarint

Buffer = bytes | bytearray | memoryview

RunColumns = tuple[list[int], list[int], list[bytes | None], list[bytes | None]]
"""Offsets, timestamps, keys, values (records decoded here have no headers)."""

MIN_RECORDS = 32  # below this a batch goes to the general loop: its set-up would not pay
MIN_RUN = 16  # two runs in a row cut shorter than this hand the rest over
MIN_ENCODE = 12
"""Fewer records than this are appended one by one: encode_run's set-up is more than it
saves on them (a batch built of 100-byte records, session 44: one record 4.5 us through
it, 1.9 one by one; 12 records 6.3 against 7.5; records of varied sizes even at 12). A
linger 0 producer's batches are mostly smaller."""
_MAX_DELTA = 8192  # offset deltas with one- and two-byte varints
_MAX_RUN_DELTA = 1 << 20  # encode_run: offset deltas with up to three-byte varints
_EVEN = SMALL[0::2]  # the varint of 2 * size, by size: a length up to 8,191

# the offset deltas' varints (zig-zag 2 * delta), as their byte columns: deltas 0-63 are one
# byte; 64-8191 a low byte with the continuation bit and a high byte
_DELTA_BYTES = bytes(range(0, 128, 2))
_DELTA_LOW = bytes(((2 * d) & 0x7F) | 0x80 for d in range(64, _MAX_DELTA))
_DELTA_HIGH = bytes((2 * d) >> 7 for d in range(64, _MAX_DELTA))
_LAST = bytes(range(0x80))  # a varint's last byte: no continuation bit
_MORE = bytes(range(0x80, 0x100))  # any byte of a varint but its last
# a one-byte zig-zag varint's value, by its byte: 0, -1, 1, -2, ...
_SIGNED_BYTE = [(z >> 1) ^ -(z & 1) for z in range(128)]


def _varint_at(data: bytes, at: int) -> tuple[int, int] | None:
    """The raw varint at ``at`` and the position after it; None where the general loop
    would find it malformed (cut by the end, longer than ten bytes)."""
    try:
        return read_uvarint(data, at)
    except (IndexError, InvalidRecordsError):
        return None


def _size_at(data: bytes, at: int) -> tuple[int, int] | None:
    """A key's or value's length at ``at`` (-1: null) and the position after it."""
    got = _varint_at(data, at)
    if got is None or (got[0] & 1 and got[0] != 1):
        return None
    z, after = got
    return (-1 if z == 1 else z >> 1), after


class _Layout(NamedTuple):
    """Where a record's fields are, from its start (the first of a run: all the same)."""

    stride: int  # the record's size, length varint included
    same: tuple[int, ...]  # the places whose byte every record of the run must share
    stamp_at: int  # the timestamp delta
    stamp_width: int  # its bytes: 1 or 2
    key_at: int
    key_size: int  # -1: null
    value_at: int
    value_size: int  # -1: null


def _layout(data: bytes, pos: int, size: int, delta_width: int) -> _Layout | None:
    """The layout of the record at ``pos``; None if it is not one a run can have."""
    z, at = _varint_at(data, pos) or (0, pos)  # (0, pos): no length varint there
    stride = at - pos + (z >> 1)
    if z <= 0 or z & 1 or at + 2 >= size or pos + stride > size:  # none, or cut by the end
        return None
    # the timestamp delta's bytes; 0: three or more (8,192 ms or more either way)
    stamp_width = 1 if data[at + 1] < 0x80 else 2 if data[at + 2] < 0x80 else 0
    if data[at] != 0 or not stamp_width:  # attributes: 0 in v2 (the general loop ignores
        return None  # them; a run declines)
    stamp_at = at + 1 - pos
    key_len_at = stamp_at + stamp_width + delta_width
    if (key := _size_at(data, pos + key_len_at)) is None:
        return None
    key_size, key_at = key[0], key[1] - pos
    value_len_at = key_at + max(key_size, 0)
    if (value := _size_at(data, pos + value_len_at)) is None:
        return None
    value_size, value_at = value[0], value[1] - pos
    headers_at = value_at + max(value_size, 0)
    if headers_at + 1 != stride or data[pos + headers_at] != 0:  # no headers, last byte
        return None
    same = (
        *range(stamp_at),  # length and attributes
        *range(key_len_at, key_at),
        *range(value_len_at, value_at),
        headers_at,
    )
    return _Layout(stride, same, stamp_at, stamp_width, key_at, key_size, value_at, value_size)


def decode_runs(
    data: bytes, count: int, base_offset: int, base_ts: int, out: RunColumns
) -> tuple[int, int]:
    """Decode the leading runs of ``data``'s ``count`` records into ``out`` (offsets,
    timestamps, keys, values; every record decoded here has no headers); returns (records
    decoded, the position after them). Stops at the first record that does not start a
    run it can check, or at the second run in a row cut short (at 0 or a few records for
    batches of records of varied sizes)."""
    if type(data) is memoryview:  # no lstrip(): the general loop takes it
        return 0, 0
    offsets, timestamps, keys, values = out
    size = len(data)
    pos = done = 0
    times: list[int] = []
    after_short = False
    while done < count and done < _MAX_DELTA:
        delta_width = 1 if done < 64 else 2
        run_end = min(count, 64 if done < 64 else _MAX_DELTA)
        layout = _layout(data, pos, size, delta_width)
        if layout is None:
            break
        stride = layout.stride
        k = min(run_end - done, (size - pos) // stride)  # as many as fit
        for j in layout.same:
            column = data[pos + j : pos + k * stride : stride]
            k = _leading(column, column[:1])
        at = pos + layout.stamp_at
        stamps = data[at : pos + k * stride : stride]
        if layout.stamp_width == 1:
            k = _leading(stamps, _LAST)
        else:
            highs = data[at + 1 : pos + k * stride : stride]
            k = min(_leading(stamps, _MORE), _leading(highs, _LAST))
        at += layout.stamp_width
        k = _deltas_agree(data, at, pos + k * stride, stride, first=done)
        # cut short by a record unlike the others (one timestamp byte more, or another
        # size): once is a timestamp widening as often as not; twice in a row, hand over
        short = k < MIN_RUN and done + k < run_end
        if not k or (short and after_short):
            break
        after_short = short
        # the run checks out: its columns
        stop = pos + k * stride
        offsets += range(base_offset + done, base_offset + done + k)
        stamps = data[pos + layout.stamp_at : stop : stride]
        if layout.stamp_width == 1:
            # the timestamps a byte can stand for, once per batch (and only those used)
            if len(times) <= (top := max(stamps)):
                times = [base_ts + d for d in _SIGNED_BYTE[: top + 1]]
            timestamps += [times[z] for z in stamps]
        else:
            highs = data[pos + layout.stamp_at + 1 : stop : stride]
            pairs = zip(stamps, highs, strict=True)
            timestamps += [base_ts + ZIGZAG[(a & 0x7F) | (b << 7)] for a, b in pairs]
        keys += _field(data, pos, layout.key_at, layout.key_size, k, stride)
        values += _field(data, pos, layout.value_at, layout.value_size, k, stride)
        pos = stop
        done += k
    return done, pos


def _leading(column: bytes, allowed: bytes) -> int:
    """How many of ``column``'s first bytes are among ``allowed``."""
    return len(column) - len(column.lstrip(allowed))


def _deltas_agree(data: bytes, at: int, stop: int, stride: int, *, first: int) -> int:
    """How many of the offset deltas from ``at`` (every ``stride`` bytes, up to ``stop``)
    are first, first + 1, ... in a row; ``first`` is below 64 for one-byte deltas."""
    got = data[at:stop:stride]
    if first < 64:
        return _common(got, _DELTA_BYTES[first : first + len(got)])
    low, high = first - 64, first - 64 + len(got)
    return min(
        _common(got, _DELTA_LOW[low:high]),
        _common(data[at + 1 : stop : stride], _DELTA_HIGH[low:high]),
    )


def _common(a: bytes, b: bytes) -> int:
    """The length of the common prefix of ``a`` and ``b`` (of equal length)."""
    if a == b:
        return len(a)
    agree, differ = 0, len(a)  # a[:agree] == b[:agree], a[:differ] != b[:differ]
    while differ - agree > 1:
        middle = (agree + differ) // 2
        if a[:middle] == b[:middle]:
            agree = middle
        else:
            differ = middle
    return agree


def _field(  # noqa: PLR0917 - the run's layout, per field
    data: bytes, pos: int, at: int, size: int, k: int, stride: int
) -> list[bytes | None]:
    """A key or value of each of ``k`` records of ``stride`` bytes from ``pos``, the field
    ``at`` bytes into each."""
    if size < 0:
        return [None] * k
    if k < _MIN_UNPACK:
        return [data[i : i + size] for i in range(pos + at, pos + at + k * stride, stride)]
    # the bytes objects are made in C: a struct over _BLOCK records yields their fields as
    # one tuple (a slice per record in a listcomp took twice as long as a struct per record,
    # whose one-item tuples and the getter taking each item out cost 27 of its 44 ns)
    out: list[bytes | None] = []
    whole = k - k % _BLOCK
    if whole:
        for fields in _unpacker(at, size, stride, _BLOCK).iter_unpack(
            memoryview(data)[pos : pos + whole * stride]
        ):
            out += fields
    if whole < k:
        start = pos + whole * stride
        rest = _unpacker(at, size, stride, 1).iter_unpack(
            memoryview(data)[start : pos + k * stride]
        )
        out += map(_first, rest)
    return out


def _unpacker(at: int, size: int, stride: int, records: int) -> struct.Struct:
    """The Struct of ``records`` records' fields (cached: one takes ~1-20 us to make)."""
    unpacker = _UNPACKERS.get((at, size, stride, records))
    if unpacker is None:
        if len(_UNPACKERS) >= _MAX_UNPACKERS:  # records of ever new sizes: start over
            _UNPACKERS.clear()
        unpacker = _UNPACKERS[at, size, stride, records] = struct.Struct(
            f"{at}x{size}s{stride - at - size}x" * records
        )
    return unpacker


_MIN_UNPACK = 8  # below, the Struct's set-up costs more than the slices
_BLOCK = 64  # records per tuple; the first run of a batch (one-byte offset deltas) is 64
_MAX_UNPACKERS = 256
_UNPACKERS: dict[tuple[int, int, int, int], struct.Struct] = {}
"""Per (field offset, field size, record size, records) seen."""
_first = operator.itemgetter(0)


def encode_run(
    keys: Sequence[Buffer] | None,
    values: Sequence[Buffer],
    timestamps: Sequence[int],
    base_timestamp: int,
    first_delta: int,
    *,
    runs: tuple[list[int], list[int]] | None = None,
) -> bytes | None:
    """``values`` (with ``keys``, or all keyless) as records with offset deltas from
    ``first_delta`` and timestamp deltas from ``base_timestamp``, no headers: byte for byte
    what ``BatchBuilder.append`` writes for them one by one. ``runs``: the timestamps'
    :func:`timestamp_runs` if the caller has them (None: found here).

    None where it cannot (a None among the values or keys, a key or value of 8 KiB or
    more among records of different sizes, timestamps before ``base_timestamp`` or 8,192
    ms or more after it, offset deltas of 2**20 or more): the caller encodes those one by
    one.
    """
    n = len(values)
    end = first_delta + n
    if not n or first_delta < 0 or end > _MAX_RUN_DELTA or len(timestamps) != n:
        return None
    try:
        lengths = list(map(len, values))
        key_lengths = None if keys is None else list(map(len, keys))
    except TypeError:  # a None among them
        return None
    if keys is not None and len(keys) != n:
        return None
    if runs is None:
        runs = timestamp_runs(timestamps)
    if runs is not None:
        low, high = runs[1][0], runs[1][-1]
        distinct = None
    else:
        distinct = set(timestamps)
        low, high = min(distinct), max(distinct)
    if low < base_timestamp or high - base_timestamp >= _MAX_DELTA:
        return None
    ts_fields = _timestamp_fields(timestamps, base_timestamp, runs, distinct)
    delta_fields = _delta_fields(first_delta, end)
    value_size = lengths[0]
    if lengths.count(value_size) != n or (
        key_lengths is not None and key_lengths.count(key_lengths[0]) != n
    ):
        one_byte = high - base_timestamp < 64  # timestamp deltas
        widths = _widths(ts_fields, delta_fields, first_delta, one_byte, 3 if keys is None else 2)
        return _encode_varied(keys, values, lengths, key_lengths, ts_fields, delta_fields, widths)
    value_field = SMALL[value_size << 1] if value_size < _MAX_DELTA else uvarint(value_size << 1)
    if key_lengths is None:
        key_bytes = 0
        columns = 5  # head, timestamp delta, offset delta, null key + value length, value
    else:
        key_size = key_lengths[0]
        key_field = SMALL[key_size << 1] if key_size < _MAX_DELTA else uvarint(key_size << 1)
        key_bytes = len(key_field) + key_size
        columns = 7  # head, timestamp delta, offset delta, key length, key, value length, value
    # a record's length: attributes, key, value and header count, plus its two deltas'
    # varints (one or two bytes the timestamp's, one to three the offset's); its head is the
    # previous record's header count (0), the length and the attributes (0)
    fixed = 1 + (len(NULL) if keys is None else key_bytes) + len(value_field) + value_size + 1
    if high - base_timestamp < 64:  # every timestamp delta is one byte
        head_column = _one_byte_heads(fixed, first_delta, n)
    else:
        heads = {width: _head(fixed + width) for width in (2, 3, 4, 5)}
        head_column = [heads[len(t) + len(d)] for t, d in zip(ts_fields, delta_fields, strict=True)]
    flat: list[Buffer] = [b""] * (columns * n)
    flat[0::columns] = head_column
    flat[1::columns] = ts_fields
    flat[2::columns] = delta_fields
    if keys is None:
        flat[3::columns] = [NULL + value_field] * n
        flat[4::columns] = values
    else:
        flat[3::columns] = [key_field] * n
        flat[4::columns] = keys
        flat[5::columns] = [value_field] * n
        flat[6::columns] = values
    flat[0] = flat[0][1:]  # the first record has no record before it
    flat.append(b"\x00")  # the last record's header count
    return b"".join(flat)


def _three_byte_delta(delta: int) -> bytes:
    """The varint of offset delta ``delta`` (8,192 to 2**20 - 1): three bytes."""
    z = delta << 1
    return bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, z >> 14))


def _timestamp_fields(
    timestamps: Sequence[int],
    base_timestamp: int,
    runs: tuple[list[int], list[int]] | None,
    distinct: set[int] | None,
) -> list[bytes]:
    """The records' timestamp-delta varints (deltas from 0 to 8,191 ms), from their
    :func:`timestamp_runs`, else from their set."""
    if runs is not None:
        starts, values = runs
        fields: list[bytes] = []
        for start, end, value in zip(starts, [*starts[1:], len(timestamps)], values, strict=True):
            fields += [SMALL[(value - base_timestamp) << 1]] * (end - start)
        return fields
    assert distinct is not None
    # look each up by its timestamp, in C
    field_of = {t: SMALL[(t - base_timestamp) << 1] for t in distinct}
    return list(map(field_of.__getitem__, timestamps))


def timestamp_runs(
    timestamps: Sequence[int], limit: int = 64
) -> tuple[list[int], list[int]] | None:
    """Where each run of equal timestamps starts and its timestamp, when ``timestamps``
    never go back and make at most ``limit`` runs (a producer's batch: a million records
    a second stamp a 1,000-record batch with two or three milliseconds); else None.

    C does the work: a sort that finds the list in order, and a binary search per run
    (a set and a lookup per record took three times as long).
    """
    n = len(timestamps)
    listed = timestamps if timestamps.__class__ is list else list(timestamps)
    if not n or listed != sorted(listed):
        return None
    starts: list[int] = []
    values: list[int] = []
    at = 0
    while at < n:
        if len(starts) == limit:
            return None
        value = timestamps[at]
        starts.append(at)
        values.append(value)
        at = bisect_right(timestamps, value, at)
    return starts, values


def _delta_fields(first_delta: int, end: int) -> list[bytes]:
    """The offset-delta varints of ``first_delta`` up to ``end`` (under 2**20)."""
    fields = SMALL[first_delta << 1 : end << 1 : 2]  # empty from 8,192 on
    if end > _MAX_DELTA:  # a batch of many small records: three-byte offset deltas
        fields += map(_three_byte_delta, range(max(first_delta, _MAX_DELTA), end))
    return fields


def _widths(
    ts_fields: list[bytes], delta_fields: list[bytes], first_delta: int, one_byte: bool, plus: int
) -> list[int]:
    """Each record's bytes but its key's and value's and their length fields: its two
    delta varints, and ``plus`` (the attributes and header count, 1 each, and a null
    key's 1)."""
    n = len(ts_fields)
    if one_byte:  # one-byte timestamp deltas: the offsets' widths
        return _one_byte_widths(first_delta, n, plus)
    widths = map(operator.add, map(len, ts_fields), map(len, delta_fields))
    return list(map(operator.add, widths, repeat(plus, n)))


def _offset_widths(first_delta: int, n: int) -> tuple[int, int, int]:
    """How many of ``n`` offset deltas from ``first_delta`` are one byte (under 64), two
    (under 8,192) and three."""
    one = max(0, min(n, 64 - first_delta))
    two = max(0, min(n, _MAX_DELTA - first_delta)) - one
    return one, two, n - one - two


def _one_byte_widths(first_delta: int, n: int, plus: int) -> list[int]:
    """Each record's two delta varints' bytes, ``plus`` more, for one-byte timestamp
    deltas."""
    one, two, three = _offset_widths(first_delta, n)
    return [2 + plus] * one + [3 + plus] * two + [4 + plus] * three


def _one_byte_heads(fixed: int, first_delta: int, n: int) -> list[bytes]:
    """The heads of ``n`` records of ``fixed`` bytes besides their deltas, for one-byte
    timestamp deltas: one head per offset-delta width, made only if some record has it
    (a linger-0 batch of a few records pays for one, not four)."""
    heads: list[bytes] = []
    for width, count in zip((2, 3, 4), _offset_widths(first_delta, n), strict=True):
        if count:
            heads += [_head(fixed + width)] * count
    return heads


def _head(length: int) -> bytes:
    """A record's head: the header count of the record before it, its length, its
    attributes."""
    return b"\x00" + (SMALL[length << 1] if length < _MAX_DELTA else uvarint(length << 1)) + b"\x00"


def _encode_varied(  # noqa: PLR0917 - encode_run's columns
    keys: Sequence[Buffer] | None,
    values: Sequence[Buffer],
    lengths: list[int],
    key_lengths: list[int] | None,
    ts_fields: list[bytes],
    delta_fields: list[bytes],
    widths: list[int],
) -> bytes | None:
    """:func:`encode_run` for records of different sizes (JSON, text): every field but
    the lengths is as there (``widths``: each record's bytes but its key's and value's
    and their length fields). The length fields are looked up and each record's length
    summed by ``map`` over tables, in C (a list comprehension over the columns cost
    twice as much), and a record's length is one field with the header count before it
    and the attributes after, as in a run of one size. None past 8 KiB a record."""
    n = len(values)
    sized, heads, null_fields = _varied_tables()  # (an IndexError: 8 KiB or more)
    try:
        bodies = map(operator.add, map(sized.__getitem__, lengths), widths)
        if key_lengths is not None:
            bodies = map(operator.add, bodies, map(sized.__getitem__, key_lengths))
        head_column = list(map(heads.__getitem__, bodies))
    except IndexError:
        return None
    head_column[0] = head_column[0][1:]  # the first record has no record before it
    if keys is None:
        columns: list[Sequence[Buffer]] = [
            head_column,
            ts_fields,
            delta_fields,
            list(map(null_fields.__getitem__, lengths)),
            values,
        ]
    else:
        assert key_lengths is not None
        columns = [
            head_column,
            ts_fields,
            delta_fields,
            list(map(_EVEN.__getitem__, key_lengths)),
            keys,
            list(map(_EVEN.__getitem__, lengths)),
            values,
        ]
    width = len(columns)
    flat: list[Buffer] = [b""] * (width * n)
    for at, column in enumerate(columns):
        flat[at::width] = column
    flat.append(b"\x00")  # the last record's header count
    return b"".join(flat)


_TABLES: tuple[list[int], list[bytes], list[bytes]] | None = None


def _varied_tables() -> tuple[list[int], list[bytes], list[bytes]]:
    """By a size up to 8,191: the bytes with their length field; the record head
    (the header count before, the length field, the attributes after); a null key and the
    value's length field. Made on first use (about 0.6 MB): most processes never need
    them."""
    global _TABLES  # noqa: PLW0603 - made once, on first use
    if _TABLES is None:
        _TABLES = (
            [size + len(field) for size, field in enumerate(_EVEN)],
            [b"\x00" + field + b"\x00" for field in _EVEN],
            [NULL + field for field in _EVEN],
        )
    return _TABLES
