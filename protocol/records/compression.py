"""Per-batch compression codecs, in the framings Kafka's Java client writes.

- gzip: a gzip member (``GZIPOutputStream``); zlib's default level, as Kafka's.

Each codec but snappy takes a level (Kafka's KIP-390), for a producer's batches or a
broker's recompression into a topic's ``compression.type``.
- snappy: xerial's block framing (``SnappyOutputStream``: magic, version, compat, then
  length-prefixed raw blocks of 32 KiB input); plain raw snappy is also read.
- lz4: the standard LZ4 frame, 64 KiB independent blocks (Kafka's block output stream).
- zstd: one standard zstd frame.

Decompression is bounded: ``max_bytes`` caps the output, so a small batch cannot expand
into an unbounded allocation. Any codec failure is :class:`InvalidRecordsError`.
"""

from __future__ import annotations

import struct
import zlib

import cramjam
import lz4.frame
import zstandard

from protocol.errors import InvalidRecordsError

__all__ = [
    "CODECS",
    "CODEC_NAMES",
    "DEFAULT_LEVELS",
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "compress",
    "decompress",
    "level_problem",
]

Buffer = bytes | bytearray | memoryview

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CODECS: dict[str, int] = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}
CODEC_NAMES: dict[int, str] = {v: k for k, v in CODECS.items()}

DEFAULT_MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024
LZ4_DEFAULT_LEVEL, ZSTD_DEFAULT_LEVEL = 9, 3
DEFAULT_LEVELS: dict[str, int] = {"gzip": -1, "lz4": LZ4_DEFAULT_LEVEL, "zstd": ZSTD_DEFAULT_LEVEL}
"""Kafka's (KIP-390) default level of each codec that has levels (gzip's -1: zlib's)."""
_LEVEL_RANGES = {"gzip": (1, 9), "lz4": (1, 17), "zstd": (-131072, 22)}


def level_problem(codec_name: str, level: int) -> str | None:
    """What a level must be for ``codec_name`` (Kafka's ranges), or None if it is one."""
    low, high = _LEVEL_RANGES[codec_name]
    if low <= level <= high or (codec_name == "gzip" and level == -1):
        return None
    extra = ", or -1 (zlib's default)" if codec_name == "gzip" else ""
    return f"between {low} and {high}{extra}"


_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024
_INT32 = struct.Struct(">i")


def codec_id(name: str) -> int:
    """The attribute bits for a codec name, or ValueError naming the choices."""
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown compression {name!r}; use one of: {', '.join(CODECS)}") from None


def compress(codec: int, data: Buffer, level: int | None = None) -> bytes:
    """``data`` in ``codec``; ``level`` in Kafka's terms (KIP-390: gzip 1-9 or -1, lz4
    1-17, zstd -131072 to 22; snappy has none), None for Kafka's default."""
    if codec == GZIP:
        gzip_level = zlib.Z_DEFAULT_COMPRESSION if level is None else level
        c = zlib.compressobj(gzip_level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if codec == SNAPPY:
        return _xerial_compress(data)
    if codec == LZ4:
        return lz4.frame.compress(
            data,
            # Kafka's default, 9, is lz4's fast compressor; any other level its
            # high-compression one (lz4 itself stops at 12)
            compression_level=0 if level in (None, LZ4_DEFAULT_LEVEL) else level,
            block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False,
            content_checksum=False,
            store_size=False,
        )
    if codec == ZSTD:
        return zstandard.ZstdCompressor(
            level=ZSTD_DEFAULT_LEVEL if level is None else level
        ).compress(data)
    raise ValueError(f"no compression codec {codec}")


def decompress(codec: int, data: Buffer, max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> bytes:
    name = CODEC_NAMES.get(codec)
    if name is None or codec == NONE:
        raise InvalidRecordsError(f"unknown compression codec {codec} in batch attributes")
    try:
        out = _DECOMPRESSORS[codec](data, max_bytes)
    except InvalidRecordsError:
        raise
    except Exception as exc:
        # Each library has its own error types (zlib.error, RuntimeError, ZstdError, ...);
        # to the caller they all mean the same: these records are damaged.
        raise InvalidRecordsError(f"{name} data is corrupt: {exc}") from None
    if len(out) > max_bytes:
        raise InvalidRecordsError(f"{name} data expands past the limit of {max_bytes} bytes")
    return out


def _gunzip(data: Buffer, max_bytes: int) -> bytes:
    d = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
    out = d.decompress(data, max_bytes + 1)
    if len(out) <= max_bytes and not d.eof:
        raise InvalidRecordsError("gzip data is truncated")
    return out


def _lz4_decompress(data: Buffer, max_bytes: int) -> bytes:
    d = lz4.frame.LZ4FrameDecompressor()
    out = d.decompress(data, max_length=max_bytes + 1)
    if len(out) <= max_bytes and not d.eof:
        raise InvalidRecordsError("lz4 data is truncated")
    return out


def _zstd_decompress(data: Buffer, max_bytes: int) -> bytes:
    declared = zstandard.frame_content_size(data)
    if declared > max_bytes:
        raise InvalidRecordsError(f"zstd frame declares {declared} bytes, over {max_bytes}")
    return zstandard.ZstdDecompressor().decompress(data, max_output_size=max_bytes + 1)


def _xerial_compress(data: Buffer) -> bytes:
    view = memoryview(data)
    out = [_XERIAL_HEADER]
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK]))
        out.append(_INT32.pack(len(block)))
        out.append(block)
    return b"".join(out)


def _snappy_decompress(data: Buffer, max_bytes: int) -> bytes:
    view = memoryview(data)
    if bytes(view[: len(_XERIAL_MAGIC)]) != _XERIAL_MAGIC:
        return _snappy_raw(view, max_bytes)
    if len(view) < len(_XERIAL_HEADER):
        raise InvalidRecordsError("snappy (xerial) header is truncated")
    out = bytearray()
    pos = len(_XERIAL_HEADER)
    while pos < len(view):
        if len(view) - pos < 4:
            raise InvalidRecordsError("snappy (xerial) block length is truncated")
        (size,) = _INT32.unpack_from(view, pos)
        pos += 4
        if size < 0 or pos + size > len(view):
            raise InvalidRecordsError(f"snappy (xerial) block of {size} bytes is truncated")
        out += _snappy_raw(view[pos : pos + size], max_bytes - len(out))
        pos += size
    return bytes(out)


def _snappy_raw(view: memoryview, max_bytes: int) -> bytes:
    # The raw format starts with the uncompressed length: refuse before allocating it.
    declared = cramjam.snappy.decompress_raw_len(view)
    if declared > max_bytes:
        raise InvalidRecordsError(f"snappy block declares {declared} bytes, over {max_bytes}")
    return bytes(cramjam.snappy.decompress_raw(view))


_DECOMPRESSORS = {
    GZIP: _gunzip,
    SNAPPY: _snappy_decompress,
    LZ4: _lz4_decompress,
    ZSTD: _zstd_decompress,
}
