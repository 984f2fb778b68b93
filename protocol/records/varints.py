"""Zig-zag varints (protobuf's sint64), as records use them for lengths and deltas.

Encoding has a table of every one- and two-byte varint, decoding a table of their signed
values: the per-record loops index them instead of calling out (a call per field was half
of a loop's cost). A length of -1 (raw value 1) is null.
"""

from __future__ import annotations

from protocol.errors import InvalidRecordsError

MAX_VARINT_BYTES = 10


def uvarint(z: int) -> bytes:
    """The varint of a raw (already zig-zagged, so never negative) value."""
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


SMALL = [uvarint(z) for z in range(1 << 14)]  # every one- and two-byte varint, by raw value
NULL = SMALL[1]  # zig-zag(-1)

# every one- and two-byte varint decoded, by its raw value: 0, -1, 1, -2, 2, ...
ZIGZAG = [0] * (1 << 14)
ZIGZAG[0::2] = range(1 << 13)
ZIGZAG[1::2] = range(-1, -(1 << 13) - 1, -1)


def varint(n: int) -> bytes:
    """Zig-zag varint of a signed 64-bit integer."""
    z = (n << 1) ^ (n >> 63)
    return SMALL[z] if z < 16384 else uvarint(z)


def signed(z: int) -> int:
    """The signed value of a raw varint."""
    return (z >> 1) ^ -(z & 1)


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """The raw (still zig-zag encoded, so never negative) varint at ``pos``, and the
    position after it. IndexError if ``data`` ends inside it."""
    z = 0
    shift = 0
    end = pos + MAX_VARINT_BYTES
    while True:
        if pos >= end:
            raise InvalidRecordsError("varint is longer than 10 bytes")
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return z, pos
        shift += 7


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the zig-zag varint at ``pos``; returns (value, next position)."""
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z, pos = read_uvarint(data, pos)
    return (z >> 1) ^ -(z & 1), pos
