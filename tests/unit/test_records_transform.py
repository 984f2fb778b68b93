"""The leader's per-batch rewrites: LogAppendTime stamps and recompression to the topic's
codec (at its level, KIP-390). Round trips: the CRC is valid, the timestamps are what the
topic asks, the records (keys, values, headers, offsets) and every other header field are
unchanged. And the KIP-937 timestamp bounds: by the header, or by every record."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import CrcMismatchError
from protocol.records import decode_batches, encode_batch, read_header, scan_batches
from protocol.records.batch import CRC_POS, LOG_APPEND_TIME
from protocol.records.compression import CODECS as CODEC_IDS
from protocol.records.transform import (
    recompress_batch,
    rewrite_for_append,
    set_log_append_time,
    timestamp_outside,
    topic_codec,
)
from tests.strategies import CODECS, RECORDS

ALL_CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
NOW = 1_800_000_000_000
_KEPT = (
    "base_offset",
    "partition_leader_epoch",
    "magic",
    "last_offset_delta",
    "base_timestamp",
    "producer_id",
    "producer_epoch",
    "base_sequence",
    "record_count",
)


def _batch(codec: str = "none", n: int = 20, base_offset: int = 0) -> bytes:
    records = [
        (f"k{i}".encode() if i % 3 else None, bytes([i]) * (i * 7), [("h", b"x")], 1_000 + i)
        for i in range(n)
    ]
    return encode_batch(
        records,
        compression=codec,
        base_offset=base_offset,
        producer_id=42,
        producer_epoch=3,
        base_sequence=17,
    )


def _records(data: bytes | bytearray | memoryview) -> list[tuple[object, ...]]:
    return [(r.offset, r.key, r.value, r.headers) for b in decode_batches(data) for r in b.records]


def _same_fields(before: bytes, after: bytes | bytearray) -> None:
    old, new = read_header(before), read_header(after)
    for name in _KEPT:
        assert getattr(new, name) == getattr(old, name), name


def test_topic_codec_names() -> None:
    assert topic_codec("producer") is None
    assert topic_codec("uncompressed") == CODEC_IDS["none"]
    for name in ("gzip", "snappy", "lz4", "zstd"):
        assert topic_codec(name) == CODEC_IDS[name]
    with pytest.raises(ValueError, match=r"unknown compression\.type 'brotli'"):
        topic_codec("brotli")


def test_nothing_to_do_returns_the_same_buffer_uncopied() -> None:
    data = _batch("lz4") + _batch("lz4", base_offset=20)
    assert rewrite_for_append(data, codec=None, append_time_ms=None) is data
    assert rewrite_for_append(data, codec=CODEC_IDS["lz4"], append_time_ms=None) is data


def test_log_append_time_stamps_the_batch_not_the_records() -> None:
    data = _batch("zstd")
    out = rewrite_for_append(data, codec=None, append_time_ms=NOW)
    (header,) = scan_batches(out)  # verifies the new CRC
    assert header.timestamp_type == LOG_APPEND_TIME and header.max_timestamp == NOW
    assert header.compression == CODEC_IDS["zstd"]
    _same_fields(data, out)
    (batch,) = decode_batches(out)
    assert {r.timestamp for r in batch.records} == {NOW}
    assert _records(out) == _records(data)


@pytest.mark.parametrize("source", ALL_CODECS)
@pytest.mark.parametrize("target", ALL_CODECS)
def test_recompression_between_every_pair_of_codecs(source: str, target: str) -> None:
    data = _batch(source)
    out = rewrite_for_append(data, codec=CODEC_IDS[target], append_time_ms=None)
    if source == target:
        assert out is data
        return
    (header,) = scan_batches(out)
    assert header.compression == CODEC_IDS[target] and header.size == len(out)
    _same_fields(data, out)
    assert header.max_timestamp == read_header(data).max_timestamp  # CreateTime: untouched
    assert _records(out) == _records(data)
    assert [r.timestamp for b in decode_batches(out) for r in b.records] == [
        1_000 + i for i in range(20)
    ]


def test_only_batches_in_another_codec_are_rewritten() -> None:
    first, second, third = _batch("gzip"), _batch("snappy", base_offset=20), _batch("gzip", 5, 40)
    out = rewrite_for_append(first + second + third, codec=CODEC_IDS["gzip"], append_time_ms=None)
    headers = scan_batches(out)
    assert [h.compression for h in headers] == [CODEC_IDS["gzip"]] * 3
    assert bytes(out[: len(first)]) == first and bytes(out[-len(third) :]) == third
    assert _records(out) == _records(first + second + third)


def test_recompressed_and_stamped_at_once() -> None:
    data = _batch("none")
    out = rewrite_for_append(data, codec=CODEC_IDS["zstd"], append_time_ms=NOW)
    (header,) = scan_batches(out)
    assert header.compression == CODEC_IDS["zstd"] and header.max_timestamp == NOW
    assert header.timestamp_type == LOG_APPEND_TIME
    assert _records(out) == _records(data)


def test_a_damaged_batch_is_refused_not_given_a_fresh_crc() -> None:
    data = bytearray(_batch("gzip"))
    data[CRC_POS] ^= 0xFF
    with pytest.raises(CrcMismatchError):
        rewrite_for_append(data, codec=None, append_time_ms=NOW)
    with pytest.raises(CrcMismatchError):
        rewrite_for_append(data, codec=CODEC_IDS["lz4"], append_time_ms=None)
    # nothing to do: handed on as it is (the log's append checks every CRC anyway)
    assert rewrite_for_append(data, codec=None, append_time_ms=None) is data


def test_the_single_batch_helpers() -> None:
    data = _batch("snappy")
    out = recompress_batch(data, CODEC_IDS["none"])
    assert scan_batches(out)[0].compression == CODEC_IDS["none"]
    set_log_append_time(out, NOW)
    assert scan_batches(out)[0].max_timestamp == NOW
    assert _records(out) == _records(data)


@given(records=RECORDS, source=CODECS, target=CODECS, stamp=st.booleans())
def test_any_records_survive_any_rewrite(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
    source: str,
    target: str,
    stamp: bool,
) -> None:
    data = encode_batch(records, compression=source)
    out = rewrite_for_append(data, codec=CODEC_IDS[target], append_time_ms=NOW if stamp else None)
    (header,) = scan_batches(out)
    assert header.compression == CODEC_IDS[target]
    (batch,) = decode_batches(out)
    assert [(r.key, r.value, r.headers) for r in batch.records] == [
        (k, v, tuple(h or ())) for k, v, h, _ in records
    ]
    expected = [NOW] * len(records) if stamp else [ts for *_, ts in records]
    assert [r.timestamp for r in batch.records] == expected


# --- compression levels (KIP-390) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "fast", "small"), [("gzip", 1, 9), ("lz4", 9, 12), ("zstd", -50, 19)]
)
def test_a_topic_level_is_the_recompression_s(codec: str, fast: int, small: int) -> None:
    text = b" ".join(
        b"record %d of a run of words that repeat, %d" % (i, i % 7) for i in range(400)
    )
    data = encode_batch([(None, text, None, 1_000 + i) for i in range(8)])
    quick = rewrite_for_append(data, codec=CODEC_IDS[codec], append_time_ms=None, level=fast)
    tight = rewrite_for_append(data, codec=CODEC_IDS[codec], append_time_ms=None, level=small)
    default = rewrite_for_append(data, codec=CODEC_IDS[codec], append_time_ms=None)
    assert len(tight) < len(quick)  # the level reached the codec
    for out in (quick, tight, default):
        (header,) = scan_batches(out)  # CRC valid
        assert header.compression == CODEC_IDS[codec]
        assert _records(out) == _records(data)
    if codec == "lz4":  # Kafka's default level, 9, is lz4's fast compressor
        assert bytes(default) == bytes(quick)


# --- timestamp bounds (KIP-937) -------------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_timestamp_outside_by_header_or_by_every_record(codec: str) -> None:
    # the middle record is older than the batch's first: only a decode sees it
    data = encode_batch(
        [(None, b"a", None, 5_000), (None, b"b", None, 1_000), (None, b"c", None, 6_000)],
        compression=codec,
    )
    assert timestamp_outside(data, 4_000, 10_000, every_record=False) is None
    assert timestamp_outside(data, 4_000, 10_000, every_record=True) == 1_000
    assert timestamp_outside(data, 500, 10_000, every_record=True) is None
    # the max timestamp is the header's: either way
    assert timestamp_outside(data, 0, 5_999, every_record=False) == 6_000
    assert timestamp_outside(data, 0, 5_999, every_record=True) == 6_000
    assert timestamp_outside(data, 5_500, 10_000, every_record=False) == 5_000


def test_a_record_without_a_timestamp_is_never_outside() -> None:
    data = encode_batch([(None, b"a", None, -1), (None, b"b", None, -1)])
    assert read_header(data).base_timestamp == -1
    for every in (False, True):
        assert timestamp_outside(data, 1_000, 2_000, every_record=every) is None
