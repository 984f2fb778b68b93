"""Byte-for-byte compatibility with Kafka's RecordBatch v2, checked against an independent
implementation (kafka-python's record codec, used only here, as a reference)."""

import pytest
from hypothesis import given
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from protocol.records import decode_batches, encode_batch
from protocol.records.compression import CODECS
from tests.strategies import CODECS as CODEC_NAMES
from tests.strategies import RECORDS

ALL = list(CODECS)
LEADER_EPOCH = slice(12, 16)  # outside the CRC; Java writes -1, kafka-python 0


def _records(n: int) -> list:
    return [
        (
            None if i % 4 == 0 else f"key-{i}".encode(),
            None if i % 9 == 0 else f"value {i} ".encode() * 10,
            [("h1", f"{i}".encode()), ("null", None)] if i % 2 else [],
            1_700_000_000_000 + (i * 37) % 500,
        )
        for i in range(n)
    ]


def _theirs(records: list, codec: str, producer: tuple[int, int, int] = (-1, -1, -1)) -> bytes:
    pid, epoch, seq = producer
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=CODECS[codec],
        is_transactional=False,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        batch_size=1 << 30,
    )
    for offset, (key, value, headers, ts) in enumerate(records):
        builder.append(offset, ts, key, value, list(headers or []))
    return bytes(builder.build())


def _read_theirs(data: bytes) -> list:
    batch = DefaultRecordBatch(bytearray(data))
    assert batch.validate_crc()
    return [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in batch]


def _read_ours(data: bytes) -> list:
    return [
        (r.offset, r.key, r.value, list(r.headers), r.timestamp)
        for batch in decode_batches(data)
        for r in batch
    ]


def _expected(records: list) -> list:
    return [(i, k, v, list(h or []), t) for i, (k, v, h, t) in enumerate(records)]


@pytest.mark.parametrize("codec", ALL)
def test_their_reader_reads_our_batches(codec: str) -> None:
    records = _records(500)
    ours = encode_batch(
        records, compression=codec, producer_id=99, producer_epoch=3, base_sequence=1000
    )
    assert _read_theirs(ours) == _expected(records)
    batch = DefaultRecordBatch(bytearray(ours))
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (99, 3, 1000)
    assert batch.compression_type == CODECS[codec]


@pytest.mark.parametrize("codec", ALL)
def test_our_reader_reads_their_batches(codec: str) -> None:
    records = _records(500)
    theirs = _theirs(records, codec, producer=(99, 3, 1000))
    assert _read_ours(theirs) == _expected(records)
    (batch,) = decode_batches(theirs)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (99, 3, 1000)
    assert batch.compression == codec


@pytest.mark.parametrize("codec", ["none", "snappy", "zstd"])
def test_deterministic_codecs_give_identical_bytes(codec: str) -> None:
    # gzip and lz4 frames carry encoder choices (header flags, levels) that legitimately
    # differ between implementations; the rest of the format leaves no freedom.
    records = _records(300)
    ours = bytearray(encode_batch(records, compression=codec))
    theirs = bytearray(_theirs(records, codec))
    ours[LEADER_EPOCH] = theirs[LEADER_EPOCH] = b"\xff\xff\xff\xff"
    assert ours == theirs


@given(RECORDS, CODEC_NAMES)
def test_any_records_both_ways(records: list, codec: str) -> None:
    assert _read_theirs(encode_batch(records, compression=codec)) == _expected(records)
    assert _read_ours(_theirs(records, codec)) == _expected(records)
