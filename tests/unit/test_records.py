import struct

import pytest
from crc32c import crc32c
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import (
    CorruptBatchError,
    CrcMismatchError,
    InvalidMagicError,
    InvalidRecordsError,
    TruncatedBatchError,
)
from protocol.records import (
    HEADER_SIZE,
    BatchBuilder,
    decode_batches,
    encode_batch,
    read_header,
    scan_batches,
    set_base_offset,
    set_partition_leader_epoch,
    verify_crc,
)
from protocol.records.batch import ATTRIBUTES_POS, CRC_POS, MAGIC_POS
from protocol.records.compression import compress, decompress
from protocol.records.varints import read_varint, varint
from tests.strategies import CODECS, RECORDS

ALL_CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def _records(n: int = 50) -> list:
    return [
        (
            None if i % 7 == 0 else f"key-{i}".encode(),
            None if i % 11 == 0 else bytes([i % 256]) * 100,
            [("trace", f"{i}".encode()), ("empty", None)] if i % 3 == 0 else None,
            1_700_000_000_000 + i * 10,
        )
        for i in range(n)
    ]


def _decoded(data: bytes) -> list:
    return [(r.key, r.value, r.headers, r.timestamp) for b in decode_batches(data) for r in b]


def _expected(records: list) -> list:
    return [(k, v, tuple(h or ()), t) for k, v, h, t in records]


def _recrc(buf: bytearray, position: int = 0) -> None:
    end = position + 12 + struct.unpack_from(">i", buf, position + 8)[0]
    struct.pack_into(">I", buf, position + CRC_POS, crc32c(buf[position + ATTRIBUTES_POS : end]))


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_round_trip_every_codec(codec: str) -> None:
    records = _records()
    data = encode_batch(records, compression=codec, base_offset=1000)
    (batch,) = decode_batches(data)
    assert batch.compression == codec
    assert (batch.base_offset, batch.last_offset, len(batch)) == (1000, 1049, 50)
    assert [r.offset for r in batch] == list(range(1000, 1050))
    assert _decoded(data) == _expected(records)


@given(RECORDS, CODECS, st.integers(0, 2**62))
def test_round_trip_any_records(records: list, codec: str, base_offset: int) -> None:
    data = encode_batch(records, compression=codec, base_offset=base_offset)
    assert _decoded(data) == _expected(records)
    (header,) = scan_batches(data)
    assert header.base_offset == base_offset
    assert header.record_count == len(records)
    assert header.base_timestamp == records[0][3]
    assert header.max_timestamp == max(r[3] for r in records)


def test_producer_fields_and_header_layout() -> None:
    data = encode_batch(
        [(b"k", b"v", None, 5)],
        producer_id=123456789,
        producer_epoch=7,
        base_sequence=42,
        is_transactional=True,
    )
    header = read_header(data)
    assert HEADER_SIZE == 61 and header.size == len(data)
    assert header.magic == 2 and data[MAGIC_POS] == 2
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (123456789, 7, 42)
    assert header.is_transactional and not header.is_control
    assert header.partition_leader_epoch == -1
    (batch,) = decode_batches(data)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (123456789, 7, 42)


def test_large_values_span_several_snappy_blocks() -> None:
    records = [(b"k", bytes(range(256)) * 1024, None, 1)]  # 256 KiB: 8 xerial blocks
    assert _decoded(encode_batch(records, compression="snappy")) == _expected(records)


def test_timestamps_may_go_backwards_within_a_batch() -> None:
    records = [(None, b"a", None, 1000), (None, b"b", None, 10), (None, b"c", None, 2000)]
    data = encode_batch(records)
    assert [r.timestamp for b in decode_batches(data) for r in b] == [1000, 10, 2000]
    assert read_header(data).max_timestamp == 2000


def test_log_append_time_gives_every_record_the_batch_time() -> None:
    data = bytearray(encode_batch([(None, b"a", None, 1), (None, b"b", None, 2)]))
    attributes = struct.unpack_from(">h", data, ATTRIBUTES_POS)[0] | 0x08
    struct.pack_into(">hi", data, ATTRIBUTES_POS, attributes, 1)
    struct.pack_into(">q", data, 35, 99_999)  # max_timestamp: the append time
    _recrc(data)
    assert [r.timestamp for b in decode_batches(data) for r in b] == [99_999, 99_999]


def test_builder_tracks_count_and_size() -> None:
    builder = BatchBuilder()
    assert builder.size_in_bytes == 61
    first = builder.append(b"k", b"v" * 100)
    assert first == builder.size_in_bytes > 61 + 100
    assert builder.append(None, b"v") == builder.size_in_bytes > first
    data = builder.build()
    assert builder.record_count == 2 and builder.size_in_bytes == len(data)
    with pytest.raises(ValueError, match="at least one record"):
        BatchBuilder().build()
    with pytest.raises(ValueError, match="unknown compression 'brotli'"):
        BatchBuilder(compression="brotli")


# --- the header-only view -------------------------------------------------------------


def _three_batches() -> bytes:
    return b"".join(
        encode_batch(_records(10), compression=c, base_offset=i * 10)
        for i, c in enumerate(["none", "lz4", "zstd"])
    )


def test_scan_walks_headers_in_order() -> None:
    data = _three_batches()
    headers = scan_batches(data)
    assert [h.base_offset for h in headers] == [0, 10, 20]
    assert [h.last_offset for h in headers] == [9, 19, 29]
    assert headers[0].position == 0 and headers[-1].end == len(data)
    assert [h.position for h in headers[1:]] == [h.end for h in headers[:-1]]


def test_patching_offsets_and_epoch_keeps_the_crc_valid() -> None:
    data = bytearray(_three_batches())
    for i, header in enumerate(scan_batches(data)):
        set_base_offset(data, header, 5000 + 100 * i)
        set_partition_leader_epoch(data, header, 17)
    headers = scan_batches(data)  # CRCs still verify
    assert [h.base_offset for h in headers] == [5000, 5100, 5200]
    assert {h.partition_leader_epoch for h in headers} == {17}
    assert [r.offset for b in decode_batches(data) for r in b][:3] == [5000, 5001, 5002]


def test_flipped_byte_fails_the_crc_at_the_right_batch() -> None:
    data = bytearray(_three_batches())
    second = scan_batches(data)[1]
    data[second.position + 70] ^= 0x01
    with pytest.raises(CrcMismatchError) as info:
        scan_batches(data)
    assert info.value.position == second.position
    assert info.value.code == 2
    assert scan_batches(data, verify=False)  # the header view alone still walks


@pytest.mark.parametrize(("field", "position"), [("attributes", 22), ("base_timestamp", 34)])
def test_header_fields_after_the_crc_are_covered_by_it(field: str, position: int) -> None:
    data = bytearray(encode_batch(_records(3)))
    data[position] ^= 0x04
    with pytest.raises(CrcMismatchError):
        verify_crc(data, read_header(data))


def test_wrong_magic() -> None:
    data = bytearray(encode_batch(_records(1)))
    data[MAGIC_POS] = 1
    with pytest.raises(InvalidMagicError, match="magic 1"):
        scan_batches(data)


@pytest.mark.parametrize("cut", [1, 11, 12, 60, -1])
def test_length_running_past_the_buffer(cut: int) -> None:
    data = encode_batch(_records(3))
    with pytest.raises(TruncatedBatchError):
        scan_batches(data[:cut])


def test_partial_tail_is_dropped_when_allowed() -> None:
    data = _three_batches()
    cut = data[: len(data) - 5]
    assert [h.base_offset for h in scan_batches(cut, allow_partial_tail=True)] == [0, 10]
    assert [b.base_offset for b in decode_batches(cut, allow_partial_tail=True)] == [0, 10]


def test_length_shorter_than_a_header() -> None:
    data = bytearray(encode_batch(_records(1)))
    struct.pack_into(">i", data, 8, 20)
    with pytest.raises(CorruptBatchError, match="shorter than a batch header"):
        scan_batches(data)


def test_impossible_record_count() -> None:
    data = bytearray(encode_batch(_records(2)))
    struct.pack_into(">i", data, 57, 5)  # 5 records, last offset delta 1
    with pytest.raises(CorruptBatchError, match="5 records do not fit"):
        scan_batches(data, verify=False)


# --- damage inside a batch whose CRC was recomputed (so only the decoder can tell) ----------


def test_corrupt_compressed_payload() -> None:
    data = bytearray(encode_batch(_records(20), compression="gzip"))
    data[HEADER_SIZE + 20 : HEADER_SIZE + 40] = bytes(20)
    _recrc(data)
    (batch,) = decode_batches(data)
    with pytest.raises(InvalidRecordsError, match="gzip data is corrupt"):
        _ = batch.records


def test_record_count_larger_than_the_records() -> None:
    data = bytearray(encode_batch(_records(2)))
    struct.pack_into(">ii", data, 23, 2, 3)  # last_offset_delta, then (at 57) count below
    struct.pack_into(">i", data, 57, 3)
    _recrc(data)
    with pytest.raises(InvalidRecordsError):
        _decoded(data)


def test_trailing_garbage_after_the_records() -> None:
    good = encode_batch(_records(2))
    data = bytearray(good + b"\x00\x00")
    struct.pack_into(">i", data, 8, len(data) - 12)
    _recrc(data)
    with pytest.raises(InvalidRecordsError, match="2 bytes follow"):
        _decoded(data)


def test_unknown_codec_bits() -> None:
    data = bytearray(encode_batch(_records(2)))
    struct.pack_into(">h", data, ATTRIBUTES_POS, 6)
    _recrc(data)
    with pytest.raises(InvalidRecordsError, match="unknown compression codec 6"):
        _decoded(data)


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_decompression_is_bounded(codec: int) -> None:
    blob = compress(codec, bytes(1_000_000))
    assert decompress(codec, blob, max_bytes=1_000_000) == bytes(1_000_000)
    with pytest.raises(InvalidRecordsError, match=r"limit|over"):
        decompress(codec, blob, max_bytes=999_999)


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_truncated_compressed_data(codec: int) -> None:
    blob = compress(codec, bytes(range(256)) * 400)
    with pytest.raises(InvalidRecordsError):
        decompress(codec, blob[: len(blob) // 2])


# --- varints -----------------------------------------------------------------------------


@given(st.integers(-(2**63), 2**63 - 1))
def test_varint_round_trip(n: int) -> None:
    encoded = varint(n)
    assert read_varint(encoded + b"\xff", 0) == (n, len(encoded))


def test_varint_known_encodings() -> None:
    # zig-zag: 0 -> 0, -1 -> 1, 1 -> 2, 63 -> 126, -64 -> 127, 64 -> 128 (two bytes)
    assert [varint(n) for n in (0, -1, 1, 63, -64)] == [b"\x00", b"\x01", b"\x02", b"\x7e", b"\x7f"]
    assert varint(64) == b"\x80\x01"
    assert varint(-(2**63)) == b"\xff" * 9 + b"\x01"


def test_overlong_varint_is_invalid() -> None:
    with pytest.raises(InvalidRecordsError, match="longer than 10 bytes"):
        read_varint(b"\xff" * 11, 0)
