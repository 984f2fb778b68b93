"""Runs of records that share one layout, decoded column by column (the consumer's fast path).

A producer's batch is often records of one shape: the same key and value sizes, no
headers, offset deltas 0, 1, 2, ... and small timestamp deltas. Every such record then
has the same length, and each field sits at the same place in it, so a run of them is a
table with a fixed stride: one extended slice (``data[at:stop:stride]``, C) reads a field
of every record at once. Each byte that must be the same in all of them is checked that
way, the offset deltas against the bytes they must be, the timestamp deltas for being one
byte long; keys and values are sliced out by position. Per record that is a slice or two
in a list comprehension, against some thirty bytecodes per record of the field-by-field
loop in :func:`protocol.records.codec._decode_records`, which decodes whatever is not
such a run (and reports what is malformed: a run that does not check out is left to it,
never rejected here).

Runs break where an offset delta's varint grows a byte (deltas 64 and 8,192): a batch of
up to 8,192 records is at most two runs.
"""

from __future__ import annotations

from typing import NamedTuple

from protocol.errors import InvalidRecordsError
from protocol.records.varints import read_uvarint

RunColumns = tuple[list[int], list[int], list[bytes | None], list[bytes | None]]
"""Offsets, timestamps, keys, values (records decoded here have no headers)."""

MIN_RECORDS = 32  # below this a batch goes to the general loop: its set-up would not pay
_MAX_DELTA = 8192  # offset deltas with one- and two-byte varints

# the offset deltas' varints (zig-zag 2 * delta), as their byte columns: deltas 0-63 are one
# byte; 64-8191 a low byte with the continuation bit and a high byte
_DELTA_BYTES = bytes(range(0, 128, 2))
_DELTA_LOW = bytes(((2 * d) & 0x7F) | 0x80 for d in range(64, _MAX_DELTA))
_DELTA_HIGH = bytes((2 * d) >> 7 for d in range(64, _MAX_DELTA))
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
    stamp_at: int  # the timestamp delta (one byte)
    key_at: int
    key_size: int  # -1: null
    value_at: int
    value_size: int  # -1: null


def _layout(data: bytes, pos: int, size: int, delta_width: int) -> _Layout | None:
    """The layout of the record at ``pos``; None if it is not one a run can have."""
    z, at = _varint_at(data, pos) or (0, pos)  # (0, pos): no length varint there
    if z <= 0 or z & 1 or at + 2 >= size:
        return None
    stride = at - pos + (z >> 1)
    # attributes: 0 in v2 (the general loop ignores them; a run declines what is not 0);
    # a first timestamp byte >= 0x80: a delta outside -64..63 ms, two bytes or more
    if data[at] != 0 or data[at + 1] >= 0x80:
        return None
    stamp_at = at + 1 - pos
    key_len_at = stamp_at + 1 + delta_width
    if (key := _size_at(data, pos + key_len_at)) is None:
        return None
    key_size, key_at = key[0], key[1] - pos
    value_len_at = key_at + max(key_size, 0)
    if (value := _size_at(data, pos + value_len_at)) is None:
        return None
    value_size, value_at = value[0], value[1] - pos
    headers_at = value_at + max(value_size, 0)
    if headers_at + 1 != stride:  # the header count is the record's last byte
        return None
    same = (
        *range(stamp_at),  # length and attributes
        *range(key_len_at, key_at),
        *range(value_len_at, value_at),
        headers_at,
    )
    return _Layout(stride, same, stamp_at, key_at, key_size, value_at, value_size)


def decode_runs(
    data: bytes, count: int, base_offset: int, base_ts: int, out: RunColumns
) -> tuple[int, int]:
    """Decode the leading runs of ``data``'s ``count`` records into ``out`` (offsets,
    timestamps, keys, values; every record decoded here has no headers); returns (records
    decoded, the position after them). Stops at the first record that does not start a
    run it can check (at 0 for most batches of records of varied sizes)."""
    if type(data) is memoryview:  # no count() or isascii(): the general loop takes it
        return 0, 0
    offsets, timestamps, keys, values = out
    size = len(data)
    pos = done = 0
    times: list[int] = []
    while done < count and done < _MAX_DELTA:
        delta_width = 1 if done < 64 else 2
        run_end = min(count, 64 if done < 64 else _MAX_DELTA)
        k = run_end - done
        layout = _layout(data, pos, size, delta_width)
        if layout is None:
            break
        stride = layout.stride
        stop = pos + k * stride
        if stop > size or data[pos + stride - 1] != 0:  # no headers
            break
        if any(data[pos + j : stop : stride].count(data[pos + j]) != k for j in layout.same):
            break
        stamps = data[pos + layout.stamp_at : stop : stride]
        if not stamps.isascii() or not _deltas_are(
            data, pos + layout.stamp_at + 1, stop, stride, first=done, end=run_end
        ):
            break
        # the run checks out: its columns
        offsets += range(base_offset + done, base_offset + run_end)
        # the timestamps a byte can stand for, once per batch (and only as many as used)
        if len(times) <= (top := max(stamps)):
            times = [base_ts + d for d in _SIGNED_BYTE[: top + 1]]
        timestamps += [times[z] for z in stamps]
        keys += _field(data, pos + layout.key_at, layout.key_size, k, stride)
        values += _field(data, pos + layout.value_at, layout.value_size, k, stride)
        pos = stop
        done = run_end
    return done, pos


def _deltas_are(data: bytes, at: int, stop: int, stride: int, *, first: int, end: int) -> bool:
    """Whether the offset deltas (from ``at``, every ``stride`` bytes) are first..end-1."""
    if first < 64:
        return data[at:stop:stride] == _DELTA_BYTES[first:end]
    first -= 64
    end -= 64
    return (
        data[at:stop:stride] == _DELTA_LOW[first:end]
        and data[at + 1 : stop : stride] == _DELTA_HIGH[first:end]
    )


def _field(data: bytes, at: int, size: int, k: int, stride: int) -> list[bytes | None]:
    """A key or value of each of ``k`` records, the first at ``at``."""
    if size < 0:
        return [None] * k
    return [data[i : i + size] for i in range(at, at + k * stride, stride)]
