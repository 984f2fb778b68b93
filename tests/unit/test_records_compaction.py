"""A batch rebuilt with some of its records (the cleaner's output): valid CRC (ours and an
independent reader's), the kept records exactly as they were (offsets, timestamps, keys,
values, headers), every header field that is the batch's identity unchanged, the delete
horizon stamped without moving a record's timestamp; and the bare header of an emptied one."""

from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch

from protocol.records import decode_batches, encode_batch, read_header, scan_batches
from protocol.records.batch import LOG_APPEND_TIME
from protocol.records.compaction import delete_horizon_ms, empty_batch, retained_batch
from protocol.records.transform import set_log_append_time
from tests.strategies import CODECS, RECORDS

_IDENTITY = (
    "base_offset",
    "partition_leader_epoch",
    "last_offset_delta",
    "producer_id",
    "producer_epoch",
    "base_sequence",
)


def _batch(records: list, codec: str) -> bytes:  # type: ignore[type-arg]
    data = bytearray(
        encode_batch(
            records,
            compression=codec,
            base_offset=1_000,
            producer_id=5,
            producer_epoch=1,
            base_sequence=40,
        )
    )
    data[12:16] = (7).to_bytes(4, "big")  # a leader epoch, as the log stamps it
    return bytes(data)


@given(records=RECORDS, codec=CODECS, keep=st.data(), horizon=st.none() | st.integers(0, 2**40))
def test_kept_records_and_the_batch_identity_survive(
    records: list,  # type: ignore[type-arg]
    codec: str,
    keep: st.DataObject,
    horizon: int | None,
) -> None:
    original = _batch(records, codec)
    (batch,) = decode_batches(original)
    picks = keep.draw(st.sets(st.sampled_from(range(len(batch.records))), min_size=1))
    chosen = [batch.records[i] for i in sorted(picks)]
    rebuilt = retained_batch(batch.header, chosen, delete_horizon=horizon)
    (header,) = scan_batches(rebuilt)  # our CRC check
    (again,) = decode_batches(rebuilt)
    assert again.records == chosen
    assert all(getattr(header, f) == getattr(batch.header, f) for f in _IDENTITY)
    assert header.compression == batch.header.compression
    assert header.record_count == len(chosen)
    assert header.max_timestamp == max(r.timestamp for r in chosen)
    assert delete_horizon_ms(header) == horizon
    theirs = DefaultRecordBatch(bytearray(rebuilt))
    assert theirs.validate_crc()
    assert [(r.offset, r.key, r.value) for r in theirs] == [
        (r.offset, r.key, r.value) for r in chosen
    ]


def test_a_log_append_time_batch_keeps_its_time() -> None:
    data = bytearray(_batch([(b"a", b"1", None, 10), (b"b", b"2", None, 20)], "none"))
    set_log_append_time(data, 99_000)
    (batch,) = decode_batches(data)
    rebuilt = retained_batch(batch.header, batch.records[1:], delete_horizon=5_000)
    (again,) = decode_batches(rebuilt)
    assert again.header.timestamp_type == LOG_APPEND_TIME
    assert [(r.offset, r.timestamp) for r in again] == [(1_001, 99_000)]


def test_an_emptied_batch_keeps_its_header() -> None:
    original = _batch([(b"a", b"1", None, 10), (b"b", b"2", None, 20)], "zstd")
    header = read_header(original)
    (empty,) = scan_batches(empty_batch(header))
    assert all(getattr(empty, f) == getattr(header, f) for f in _IDENTITY)
    assert (empty.record_count, empty.compression, empty.size) == (0, 0, 61)
    assert empty.base_timestamp == empty.max_timestamp == 20
    (batch,) = decode_batches(empty_batch(header))
    assert batch.records == [] and batch.next_offset == 1_002
