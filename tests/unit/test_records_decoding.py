"""The consumer's record decoder (protocol.records.codec._decode_records): an inlined loop
with fast paths for one- and two-byte varints and empty headers. Every test here holds it
against a plain field-by-field reference decoder, at the varint size boundaries, with
headers, null keys and values, compression, LogAppendTime, and with damaged bytes (it must
raise InvalidRecordsError exactly when the reference finds the records malformed)."""

import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from client.types import ConsumerRecord
from protocol.errors import CorruptBatchError, InvalidRecordsError
from protocol.records import HEADER_SIZE, Record, codec, decode_batches, encode_batch, runs
from protocol.records import batch as B
from protocol.records.codec import _decode_records
from protocol.records.runs import decode_runs
from protocol.records.varints import read_varint, varint
from tests.unit.test_consumer_fetcher import _with_offset_deltas

ALL_CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BASE_TS = 1_700_000_000_000

# lengths and deltas whose zig-zag varints take 1, 2 and 3 bytes, on both sides of each edge
SIZES = [0, 1, 63, 64, 65, 8191, 8192, 8193]
DELTAS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8192, -8193, 1 << 40, -(1 << 40)]


def reference(data: bytes, count: int, base_offset: int, base_ts: int) -> list[tuple]:
    """Kafka's DefaultRecord.readFrom, one field at a time; raises on any malformation."""
    out = []
    pos = 0
    for _ in range(count):
        length, pos = read_varint(data, pos)
        end = pos + length
        if length <= 0 or end > len(data):
            raise InvalidRecordsError("length")
        pos += 1
        ts_delta, pos = read_varint(data, pos)
        offset_delta, pos = read_varint(data, pos)
        key, pos = _field(data, pos, end)
        value, pos = _field(data, pos, end)
        n, pos = read_varint(data, pos)
        if n < 0 or n > end - pos:
            raise InvalidRecordsError("headers")
        headers = []
        for _ in range(n):
            hkey, pos = _field(data, pos, end)
            if hkey is None:
                raise InvalidRecordsError("null header key")
            hvalue, pos = _field(data, pos, end)
            headers.append((hkey.decode(), hvalue))
        if pos != end:
            raise InvalidRecordsError("record length")
        out.append((base_offset + offset_delta, base_ts + ts_delta, key, value, tuple(headers)))
    if pos != len(data):
        raise InvalidRecordsError("trailing bytes")
    return out


def _field(data: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    n, pos = read_varint(data, pos)
    if n == -1:
        return None, pos
    if n < 0 or pos + n > end:
        raise InvalidRecordsError("field")
    return data[pos : pos + n], pos + n


def reference_outcome(batch: bytes) -> list[tuple] | str:
    header = B.read_header(batch)
    try:
        records = reference(
            batch[HEADER_SIZE:], header.record_count, header.base_offset, header.base_timestamp
        )
    except (InvalidRecordsError, IndexError, UnicodeDecodeError):
        return "malformed"
    return records


def decoded_outcome(batch: bytes) -> list[tuple] | str:
    try:
        (decoded,) = decode_batches(batch, verify_crc=False)
        return [tuple(r)[:5] for r in decoded.records]  # (the reference has no timestamp type)
    except InvalidRecordsError:
        return "malformed"


def raw_batch(records: bytes, count: int, *, base_offset: int = 0, attributes: int = 0) -> bytes:
    """A batch around hand-made record bytes, with a valid CRC (so only the records are bad)."""
    header = bytearray(
        B.HEADER.pack(
            base_offset,
            HEADER_SIZE - B.LOG_OVERHEAD + len(records),
            -1,
            B.MAGIC,
            0,
            attributes,
            max(count - 1, 0),
            BASE_TS,
            BASE_TS + 5,
            -1,
            -1,
            -1,
            count,
        )
    )
    data = bytes(header) + records
    crc = crc32c(data[B.ATTRIBUTES_POS :])
    return data[: B.CRC_POS] + struct.pack(">I", crc) + data[B.ATTRIBUTES_POS :]


def raw_record(body: bytes) -> bytes:
    return varint(len(body)) + body


def fields(*parts: bytes | int) -> bytes:
    """Record body from ints (varints) and bytes, after the attributes byte."""
    return b"\x00" + b"".join(varint(p) if isinstance(p, int) else p for p in parts)


# --- agreement with the reference --------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_keys_and_values_at_every_varint_size(size: int) -> None:
    records = [
        (b"k" * size, b"v" * size, None, BASE_TS),
        (None, b"v" * size, None, BASE_TS),
        (b"k" * size, None, None, BASE_TS),
        (b"", b"", None, BASE_TS),
    ]
    data = encode_batch(records, base_offset=7)
    assert decoded_outcome(data) == reference_outcome(data)
    got = [(r.key, r.value) for r in next(decode_batches(data))]
    assert got == [(k, v) for k, v, _h, _t in records]


@pytest.mark.parametrize("delta", DELTAS)
def test_timestamp_deltas_at_every_varint_size(delta: int) -> None:
    data = encode_batch([(None, b"a", None, BASE_TS), (None, b"b", None, BASE_TS + delta)])
    (batch,) = decode_batches(data)
    assert [r.timestamp for r in batch] == [BASE_TS, BASE_TS + delta]


@pytest.mark.parametrize("delta", [0, 1, 63, 64, 8191, 8192, 1 << 20])
def test_offset_deltas_at_every_varint_size(delta: int) -> None:
    """A compacted batch keeps its records' offset deltas, however far apart."""
    records = [
        raw_record(fields(0, 0, -1, 1, b"a", 0)),
        raw_record(fields(0, delta + 1, -1, 1, b"b", 0)),
    ]
    data = raw_batch(b"".join(records), 2, base_offset=1_000)
    assert decoded_outcome(data) == reference_outcome(data)
    assert [r.offset for r in next(decode_batches(data))] == [1_000, 1_001 + delta]


def test_headers_null_values_and_non_ascii_keys() -> None:
    headers = [("trace-id", b"abc"), ("empty", None), ("clé", b""), ("big", b"x" * 9000)]
    records = [
        (b"k", b"v", headers, BASE_TS),
        (None, None, None, BASE_TS + 1),
        (b"k2", b"v2", [("only", b"1")], BASE_TS + 2),
    ]
    data = encode_batch(records)
    assert decoded_outcome(data) == reference_outcome(data)
    got = list(next(decode_batches(data)))
    assert [r.headers for r in got] == [tuple(headers), (), (("only", b"1"),)]


def test_headers_are_tuples_not_a_list_per_record() -> None:
    (batch,) = decode_batches(encode_batch([(None, b"a", None, None), (b"k", b"b", None, None)]))
    first, second = batch.decode_as(ConsumerRecord, ("t", 0))
    assert first.headers == second.headers == ()
    assert type(batch.records[0].headers) is tuple


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_compressed_batches_decode_the_same(codec: str) -> None:
    records = [
        (None if i % 5 == 0 else f"k{i}".encode(), b"v" * (i * 37), None, BASE_TS + i * 100)
        for i in range(200)
    ]
    plain = [tuple(r)[:5] for r in next(decode_batches(encode_batch(records, base_offset=3)))]
    packed = next(decode_batches(encode_batch(records, base_offset=3, compression=codec)))
    assert [tuple(r)[:5] for r in packed] == plain
    assert plain == reference_outcome(encode_batch(records, base_offset=3))


def test_log_append_time_replaces_every_timestamp() -> None:
    data = bytearray(encode_batch([(None, b"a", None, 5), (None, b"b", None, 9)]))
    attributes = struct.unpack_from(">h", data, B.ATTRIBUTES_POS)[0] | B.TIMESTAMP_TYPE_BIT
    struct.pack_into(">h", data, B.ATTRIBUTES_POS, attributes)
    struct.pack_into(">q", data, 35, 42_000)  # max_timestamp: the broker's append time
    (batch,) = decode_batches(bytes(data), verify_crc=False)
    assert [r.timestamp for r in batch] == [42_000, 42_000]
    assert [r.timestamp_type for r in batch] == [B.LOG_APPEND_TIME] * 2
    (made,) = batch.decode_as(ConsumerRecord, ("t", 0))[:1]
    assert made.timestamp_type == B.LOG_APPEND_TIME  # what the record's timestamp is


def test_decode_as_builds_the_callers_record_type_once() -> None:
    data = encode_batch([(b"k", b"v", [("h", b"1")], 7)], base_offset=10)
    (batch,) = decode_batches(data)
    (record,) = batch.decode_as(ConsumerRecord, ("orders", 3))
    assert type(record) is ConsumerRecord
    assert record == ConsumerRecord("orders", 3, 10, 7, b"k", b"v", (("h", b"1"),))
    assert record.value == b"v" and record.topic == "orders"
    (plain,) = batch.records
    assert type(plain) is Record
    assert plain == Record(10, 7, b"k", b"v", (("h", b"1"),))


@pytest.mark.parametrize("append_time", [False, True])
def test_columns_make_any_slice_of_the_records_as_the_callers_type(append_time: bool) -> None:
    records = [(f"k{i}".encode(), f"v{i}".encode(), None, BASE_TS + i) for i in range(10)]
    records[4] = (None, None, [("h", b"1")], BASE_TS + 4)
    data = bytearray(encode_batch(records, base_offset=100))
    if append_time:
        attributes = struct.unpack_from(">h", data, B.ATTRIBUTES_POS)[0] | B.TIMESTAMP_TYPE_BIT
        struct.pack_into(">h", data, B.ATTRIBUTES_POS, attributes)
        struct.pack_into(">q", data, 35, 42_000)
    (batch,) = decode_batches(bytes(data), verify_crc=False)
    whole = batch.decode_as(ConsumerRecord, ("t", 2))
    assert [r.timestamp for r in whole[:2]] == (
        [42_000] * 2 if append_time else [BASE_TS, BASE_TS + 1]
    )
    kind = B.LOG_APPEND_TIME if append_time else B.CREATE_TIME
    assert whole[4] == ConsumerRecord(
        "t", 2, 104, whole[4].timestamp, None, None, (("h", b"1"),), kind
    )
    assert {r.timestamp_type for r in batch.records} == {kind}
    columns = batch.columns()
    assert len(columns) == 10
    for start, stop in [(0, 10), (0, 3), (3, 10), (4, 5), (9, 10), (5, 5), (7, 99)]:
        assert columns.rows(ConsumerRecord, ("t", 2), start, stop) == whole[start:stop]
        assert list(columns.iter_rows(Record, (), start, stop)) == batch.records[start:stop]
    assert all(type(r) is ConsumerRecord for r in columns.rows(ConsumerRecord, ("t", 2), 2, 6))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.binary(max_size=200),
            st.none() | st.binary(max_size=200),
            st.none() | st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5))),
            st.integers(-(10**6), 10**6),
        ),
        min_size=1,
        max_size=20,
    ),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
)
def test_damaged_records_raise_exactly_when_the_reference_does(
    records: list, damage: list[tuple[int, int]]
) -> None:
    data = bytearray(
        encode_batch([(k, v, h, BASE_TS + t) for k, v, h, t in records], base_offset=99)
    )
    for where, byte in damage:
        data[HEADER_SIZE + where % (len(data) - HEADER_SIZE)] = byte
    assert decoded_outcome(bytes(data)) == reference_outcome(bytes(data))


# --- malformed records, one check at a time ----------------------------------------------


def _malformed(records: bytes, count: int = 1) -> None:
    data = raw_batch(records, count)
    assert reference_outcome(data) == "malformed"
    (batch,) = decode_batches(data)
    with pytest.raises(InvalidRecordsError):
        batch.records  # noqa: B018 - decodes


GOOD = fields(0, 0, -1, 1, b"a", 0)


@pytest.mark.parametrize(
    ("name", "records"),
    [
        ("zero length", varint(0) + GOOD),
        ("negative length", varint(-3) + GOOD),
        ("length past the batch", varint(len(GOOD) + 5) + GOOD),
        ("two-byte length past the batch", varint(200) + GOOD),
        ("key length -2", raw_record(fields(0, 0, -2, 1, b"a", 0))),
        ("key past its record", raw_record(fields(0, 0, 5, b"k", 1, b"a", 0))),
        ("value past its record", raw_record(fields(0, 0, -1, 3, b"a", 0))),
        ("two-byte value past its record", raw_record(fields(0, 0, -1, 100, b"a", 0))),
        ("value length -5", raw_record(fields(0, 0, -1, -5, b"a", 0))),
        ("negative header count", raw_record(fields(0, 0, -1, 1, b"a", -1))),
        ("too many headers", raw_record(fields(0, 0, -1, 1, b"a", 50))),
        ("null header key", raw_record(fields(0, 0, -1, 1, b"a", 1, -1, -1))),
        ("header key not utf-8", raw_record(fields(0, 0, -1, 1, b"a", 1, 1, b"\xff", -1))),
        ("header value past its record", raw_record(fields(0, 0, -1, 1, b"a", 1, 1, b"h", 9))),
        ("bytes left in the record", raw_record(GOOD + b"\x00")),
        ("record shorter than its fields", raw_record(fields(0, 0, -1, 1, b"a"))),
        ("varint of 11 bytes", raw_record(b"\x00" + b"\xff" * 11 + b"\x00")),
        ("varint cut by the end", raw_record(b"\x00\x00\x00\x01\x02") + b"\x80"),
        ("bytes after the last record", raw_record(GOOD) + b"\x00\x00"),
    ],
)
def test_malformed_records_raise(name: str, records: bytes) -> None:
    _malformed(records)


def test_fewer_records_than_the_count() -> None:
    _malformed(raw_record(GOOD), count=2)


def test_a_damaged_batch_raises_from_decode_as_too() -> None:
    (batch,) = decode_batches(raw_batch(varint(0) + GOOD, 1))
    with pytest.raises(InvalidRecordsError):
        batch.decode_as(ConsumerRecord, ("t", 0))


def test_a_truncated_buffer_is_a_batch_error_not_a_record_error() -> None:
    data = encode_batch([(None, b"v" * 100, None, None)])
    with pytest.raises(CorruptBatchError):
        list(decode_batches(data[:-10]))


def test_a_null_key_written_in_two_bytes_is_still_null() -> None:
    """-1 as 0x81 0x00 (not minimal, but valid: Kafka's readVarint takes it)."""
    minimal = bytearray(encode_batch([(None, b"v", None, 5)]))
    body = minimal[HEADER_SIZE:]
    assert body[:5] == bytes([0x0E, 0x00, 0x00, 0x00, 0x01])  # length 7, attrs, ts, delta, key
    widened = bytes([0x10]) + body[1:4] + bytes([0x81, 0x00]) + body[5:]  # length 8
    data = bytearray(minimal[:HEADER_SIZE]) + widened
    struct.pack_into(">i", data, 8, len(data) - 12)
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    (record,) = next(decode_batches(bytes(data)))
    assert (record.key, record.value) == (None, b"v")
    assert decoded_outcome(bytes(data)) == reference_outcome(bytes(data))


# --- runs of one layout (protocol.records.runs): decoded column by column ----------------


def _runs(data: bytes) -> tuple[int, int]:
    """How many records (and bytes) of ``data``'s batch the run decoder took."""
    header = B.read_header(data)
    out: tuple[list, list, list, list] = ([], [], [], [])
    return decode_runs(
        data[HEADER_SIZE:], header.record_count, header.base_offset, header.base_timestamp, out
    )


@pytest.mark.parametrize("count", [32, 63, 64, 65, 200, 8191, 8192, 8193, 9000])
def test_runs_cover_a_batch_of_one_layout_up_to_8192_records(count: int) -> None:
    """Offset deltas grow a byte at 64 and 8,192: the run decoder takes the records up to
    8,192 in two runs and the general loop the rest."""
    data = encode_batch([(None, b"v" * 10, None, BASE_TS + i % 50) for i in range(count)])
    taken, position = _runs(data)
    assert taken == min(count, 8192)
    assert (position == len(data) - HEADER_SIZE) == (count <= 8192)
    assert decoded_outcome(data) == reference_outcome(data)


@pytest.mark.parametrize("count", [7, 8, 63, 64, 65, 127, 128, 129, 1000])
def test_run_columns_taken_by_blocks_and_the_rest_are_every_record(count: int) -> None:
    """A run's keys and values come 64 records a struct, then the rest one by one."""
    records = [(b"k%04d" % i, b"v%05d" % i, None, BASE_TS + i % 50) for i in range(count)]
    data = encode_batch(records)
    assert _runs(data)[0] == count
    assert decoded_outcome(data) == reference_outcome(data)
    (batch,) = decode_batches(data)
    got = batch.decode_as(ConsumerRecord, ("t", 0))
    assert [(r.key, r.value) for r in got] == [(k, v) for k, v, _, _ in records]


@pytest.mark.parametrize(
    ("key", "value"),
    [(None, b""), (b"", None), (b"k" * 63, b"v" * 64), (b"k" * 8192, b"v"), (None, None)],
)
def test_runs_at_every_length_varint_size(key: bytes | None, value: bytes | None) -> None:
    data = encode_batch([(key, value, None, BASE_TS - i % 3) for i in range(100)], base_offset=5)
    assert _runs(data)[0] == 100
    assert decoded_outcome(data) == reference_outcome(data)
    (batch,) = decode_batches(data)
    assert [(r.offset, r.key, r.value) for r in batch] == [(5 + i, key, value) for i in range(100)]


@pytest.mark.parametrize(
    "odd_one",
    [
        {"value": b"v" * 11},  # another size
        {"headers": [("h", b"1")]},
        {"timestamp": BASE_TS + 64},  # a two-byte timestamp delta among one-byte ones
        {"timestamp": BASE_TS - 65},
        {"timestamp": BASE_TS + 9_000},  # a three-byte one
    ],
)
def test_a_record_unlike_the_others_leaves_the_rest_to_the_general_loop(odd_one: dict) -> None:
    """The records before it go by runs; it and what follows, by the general loop or by
    runs again, the same records either way."""
    for at in (10, 70, 100):
        records = [(None, b"v" * 10, None, BASE_TS) for _ in range(200)]
        key, value, headers, ts = records[at]
        records[at] = (
            key,
            odd_one.get("value", value),
            odd_one.get("headers", headers),
            odd_one.get("timestamp", ts),
        )
        data = encode_batch(records)
        assert _runs(data)[0] >= at
        assert decoded_outcome(data) == reference_outcome(data)


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_a_compressed_batch_of_one_layout_decodes_as_runs(codec: str) -> None:
    records = [(b"key", b"v" * 100, None, BASE_TS + i % 7) for i in range(500)]
    plain = encode_batch(records, base_offset=3)
    assert _runs(plain)[0] == 500
    (batch,) = decode_batches(encode_batch(records, base_offset=3, compression=codec))
    assert [tuple(r)[:5] for r in batch] == reference_outcome(plain)


def test_records_of_varied_sizes_cost_two_layouts_then_the_general_loop() -> None:
    data = encode_batch([(None, b"v" * (i % 7), None, BASE_TS) for i in range(100)])
    assert _runs(data)[0] == 1  # a run of one, cut short; the second cut short ends it
    assert decoded_outcome(data) == reference_outcome(data)


def test_offset_deltas_with_a_gap_end_the_run() -> None:
    """A compacted batch (deltas 0, 1, ..., 39, 41) keeps its offsets: the records from the
    gap on are the general loop's."""
    records = b"".join(raw_record(fields(0, d, -1, 1, b"a", 0)) for d in (*range(40), 41))
    data = raw_batch(records, 41, base_offset=1_000)
    assert _runs(data)[0] == 40
    assert decoded_outcome(data)[-1][0] == 1_041  # type: ignore[index]
    assert decoded_outcome(data) == reference_outcome(data)


@pytest.mark.parametrize(
    ("name", "last"),
    [("a header count with no header after it", 1), ("a negative header count", -1)],
)
def test_a_run_of_malformed_records_is_malformed(name: str, last: int) -> None:
    """Every record alike, all malformed the same way: the run decoder must not take them."""
    records = b"".join(raw_record(fields(0, d, -1, 1, b"a", last)) for d in range(40))
    data = raw_batch(records, 40)
    assert _runs(data) == (0, 0)
    assert reference_outcome(data) == decoded_outcome(data) == "malformed"


def _run_template() -> tuple[bytes, int]:
    """A batch of 100 records of one layout (a key, a two-byte value length), and its
    records' size (the stride of the first run)."""
    data = encode_batch([(b"key", b"v" * 70, None, BASE_TS + i % 3) for i in range(100)])
    stride = read_varint(data, HEADER_SIZE)[1] - HEADER_SIZE + read_varint(data, HEADER_SIZE)[0]
    return data, stride


_TEMPLATE, _STRIDE = _run_template()


@pytest.mark.parametrize("at", range(_STRIDE))
def test_a_whole_column_overwritten_decodes_as_the_reference(at: int) -> None:
    """The same byte of every record of the first run set to one value: the byte columns
    still agree, but the layout is another (or none)."""
    for byte in (0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0xFF, _TEMPLATE[HEADER_SIZE + at] ^ 1):
        data = bytearray(_TEMPLATE)
        for record in range(64):
            data[HEADER_SIZE + record * _STRIDE + at] = byte
        assert decoded_outcome(bytes(data)) == reference_outcome(bytes(data)), (at, byte)


def _outcome(body: bytes, count: int) -> object:
    try:
        return _decode_records(body, count, 0, BASE_TS)
    except (InvalidRecordsError, IndexError) as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("count", [100, 101])
def test_records_cut_short_decode_as_the_general_loop_alone(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut anywhere in the last records of a run: the same error (or records) as the
    general loop gives by itself."""
    body = _TEMPLATE[HEADER_SIZE:]
    for cut in range(len(body) - 3 * _STRIDE, len(body)):
        with_runs = _outcome(body[:cut], count)
        monkeypatch.setattr(codec, "MIN_RECORDS", 1 << 60)
        assert with_runs == _outcome(body[:cut], count), cut
        monkeypatch.undo()


@pytest.mark.parametrize("spread_ms", [63, 64, 1_000, 8_191])
def test_two_byte_timestamp_deltas_are_runs(spread_ms: int) -> None:
    """A batch spanning more than 63 ms: its later records' timestamp deltas take two
    bytes, a run of their own."""
    count = 500
    stamps = [BASE_TS + i * spread_ms // (count - 1) for i in range(count)]
    records = [(None, b"v" * 20, None, ts) for ts in stamps]
    data = encode_batch(records)
    assert _runs(data)[0] == count
    assert decoded_outcome(data) == reference_outcome(data)
    assert [r.timestamp for r in next(decode_batches(data))] == [t for *_, t in records]


def test_non_minimal_length_varints_in_a_run() -> None:
    """Lengths written in a byte more than they need (0x8e 0x00 for 7) are read alike."""
    body = fields(0, 0, -1, 1, b"a", 0)  # offset delta rewritten per record below
    records = b"".join(
        bytes([(len(body) << 1) | 0x80, 0x00]) + fields(0, d, -1, 1, b"a", 0) for d in range(40)
    )
    data = raw_batch(records, 40)
    assert _runs(data)[0] == 40
    assert decoded_outcome(data) == reference_outcome(data) != "malformed"


def test_non_zero_attributes_leave_the_records_to_the_general_loop() -> None:
    """v2 records' attributes are unused; the general loop ignores them, a run declines."""
    records = b"".join(raw_record(b"\x05" + fields(0, d, -1, 1, b"a", 0)[1:]) for d in range(40))
    data = raw_batch(records, 40)
    assert _runs(data) == (0, 0)
    assert decoded_outcome(data) == reference_outcome(data) != "malformed"


def test_a_count_below_the_records_present_is_malformed() -> None:
    records = b"".join(raw_record(fields(0, d, -1, 1, b"a", 0)) for d in range(100))
    data = raw_batch(records, 50)
    assert _runs(data)[0] == 50
    assert reference_outcome(data) == decoded_outcome(data) == "malformed"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_runs_take_bytes_and_bytearray_and_leave_a_memoryview(kind: type) -> None:
    body = _TEMPLATE[HEADER_SIZE:]
    header = B.read_header(_TEMPLATE)
    args = (100, header.base_offset, header.base_timestamp)
    expected = _decode_records(body, *args)
    assert _decode_records(kind(body), *args) == expected


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(32, 300),
    key=st.none() | st.binary(max_size=70),
    value=st.none() | st.binary(max_size=300),
    deltas=st.lists(st.integers(-64, 63), max_size=8),
    damage=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=3),
)
def test_damaged_runs_decode_exactly_as_the_reference(
    count: int,
    key: bytes | None,
    value: bytes | None,
    deltas: list[int],
    damage: list[tuple[int, int]],
) -> None:
    """A batch of one layout, with bytes overwritten anywhere: the records the reference
    decodes, or malformed where it finds them malformed (never another answer)."""
    deltas = [0, *deltas]  # from the first record's timestamp, the batch's base
    records = [(key, value, None, BASE_TS + deltas[i % len(deltas)]) for i in range(count)]
    data = bytearray(encode_batch(records, base_offset=99))
    if not damage:
        assert _runs(bytes(data))[0] == count
    for where, byte in damage:
        data[HEADER_SIZE + where % (len(data) - HEADER_SIZE)] = byte
    assert decoded_outcome(bytes(data)) == reference_outcome(bytes(data))


@pytest.mark.parametrize("count", [runs._MIN_UNPACK - 1, runs._MIN_UNPACK, 64, 65, 300])
@pytest.mark.parametrize(("key_size", "value_size"), [(-1, 0), (0, 1), (3, 100), (200, 9_000)])
def test_keys_and_values_of_a_run_are_cut_out_where_each_record_has_them(
    count: int, key_size: int, value_size: int
) -> None:
    """Both ways a run's fields are read (a slice each, or one struct over the records)
    give what the general loop gives, at the start of the batch and at its very end."""
    records = [
        (
            None if key_size < 0 else bytes([i % 256]) * key_size,
            bytes([(i * 7) % 256]) * value_size,
            None,
            BASE_TS + i % 40,
        )
        for i in range(count)
    ]
    data = encode_batch(records)
    assert _runs(data)[0] == count
    assert decoded_outcome(data) == reference_outcome(data)
    assert [(r.key, r.value) for r in next(decode_batches(data))] == [r[:2] for r in records]


def test_the_run_decoders_structs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records of ever new sizes do not grow the decoder's cache without end."""
    monkeypatch.setattr(runs, "_UNPACKERS", {})
    for size in range(runs._MAX_UNPACKERS + 50):
        data = encode_batch([(None, b"v" * size, None, BASE_TS)] * 20)
        assert [r.value for r in next(decode_batches(data))] == [b"v" * size] * 20
        assert len(runs._UNPACKERS) <= runs._MAX_UNPACKERS


def test_offsets_that_fall_back_are_refused_to_a_consumer_only() -> None:
    """A consumer bisects a batch's offsets, so one whose offsets fall back is damaged to
    it (records would be skipped unseen); the cleaner and whole-batch readers take it as
    it is, as Kafka's do (the broker checks batches, not records, on produce)."""
    (batch,) = decode_batches(_with_offset_deltas(4, [2, 3, 0, 1]))
    assert [r.offset for r in batch.records] == [6, 7, 4, 5]
    with pytest.raises(InvalidRecordsError, match="offset deltas must rise: 0 follows 3"):
        batch.columns()
