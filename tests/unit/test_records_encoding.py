"""BatchBuilder.extend (``send_batch``'s encoder): whatever path it takes, the bytes are
exactly those of ``append`` record by record; the column encoder takes the runs it can
and declines the rest."""

import bisect
import itertools
from array import array

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol.records import BatchBuilder, decode_batches, runs
from protocol.records.runs import encode_run, timestamp_runs

BASE = 1_700_000_000_000


MIN_ENCODE = runs.MIN_ENCODE


@pytest.fixture(autouse=True)
def _columns_from_one_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The column encoder on runs of any length, so a handful of records checks it too
    (``extend`` appends fewer than MIN_ENCODE one by one; one test here checks that)."""
    monkeypatch.setattr(runs, "MIN_ENCODE", 1)


Headers = list[list[tuple[str, bytes | None]] | None] | None


def _builder(before: int) -> BatchBuilder:
    """A builder holding ``before`` records already."""
    builder = BatchBuilder()
    for _ in range(before):
        builder.append(None, b"earlier", None, BASE)
    return builder


def encoded(
    keys: list[bytes | None] | None,
    values: list[bytes | None],
    timestamps: list[int],
    headers: Headers = None,
    before: int = 0,
    *,
    bulk: bool,
) -> bytes:
    """The batch of these records, after ``before`` others: with ``extend`` (``bulk``) or
    one ``append`` each (the reference)."""
    builder = _builder(before)
    if bulk:
        builder.extend(keys, values, timestamps, headers)
    else:
        for i, value in enumerate(values):
            key = None if keys is None else keys[i]
            builder.append(key, value, None if headers is None else headers[i], timestamps[i])
    return bytes(builder.build())


def one_by_one(*args: object, **kwargs: object) -> bytes:
    return encoded(*args, **kwargs, bulk=False)  # type: ignore[arg-type]


def extended(*args: object, **kwargs: object) -> bytes:
    return encoded(*args, **kwargs, bulk=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [1, 2, 63, 64, 65, 1000, 8191, 8192, 8193, 20_000])
@pytest.mark.parametrize("span_ms", [0, 63, 64, 8191])
@pytest.mark.parametrize("key_size", [None, 0, 16])
def test_a_run_encodes_to_the_bytes_of_one_append_per_record(
    count: int, span_ms: int, key_size: int | None
) -> None:
    values = [bytes([i % 251]) * 100 for i in range(count)]
    keys = None if key_size is None else [bytes([i % 7]) * key_size for i in range(count)]
    timestamps = [BASE + span_ms * i // max(count - 1, 1) for i in range(count)]
    assert encode_run(keys, values, timestamps, timestamps[0], 0) is not None  # the fast path
    assert extended(keys, values, timestamps) == one_by_one(keys, values, timestamps)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 8191, 8192, 70_000])
def test_value_and_key_lengths_of_every_varint_width(size: int) -> None:
    values = [bytes([1]) * size] * 70
    keys = [bytes([2]) * size] * 70
    timestamps = [BASE] * 70
    assert encode_run(keys, values, timestamps, BASE, 0) is not None
    assert extended(keys, values, timestamps) == one_by_one(keys, values, timestamps)


@pytest.mark.parametrize("size", range(8182, 8190))
def test_record_lengths_across_8192_bytes(size: int) -> None:
    """A record's length field grows a byte at 8,192 (its head is made from the varint
    table below that, by uvarint from it)."""
    values = [bytes([3]) * size] * 70
    timestamps = [BASE] * 70
    assert encode_run(None, values, timestamps, BASE, 0) is not None
    assert extended(None, values, timestamps) == one_by_one(None, values, timestamps)


@pytest.mark.parametrize("before", [1, 63, 64, 100, 8000, 8191, 8192, 9000])
def test_a_run_after_records_already_in_the_batch_continues_their_deltas(before: int) -> None:
    values = [b"v" * 50] * 150
    timestamps = [BASE + i for i in range(150)]
    expected = one_by_one(None, values, timestamps, before=before)
    assert extended(None, values, timestamps, before=before) == expected


CASES_DECLINED = {
    "a null value": (None, [b"a", None], [BASE, BASE]),
    "a null key among keys": ([b"k", None], [b"a", b"b"], [BASE, BASE]),
    "a value of 8 KiB among others": (None, [b"a", bytes(8192)], [BASE, BASE]),
    "records of 8 KiB with their keys, of varied sizes": (
        [b"k" * 4100, b"k" * 4100],
        [b"a" * 4100, b"b" * 4000],
        [BASE, BASE],
    ),
    "a timestamp before the first": (None, [b"a", b"b"], [BASE, BASE - 1]),
    "timestamps 8,192 ms apart": (None, [b"a", b"b"], [BASE, BASE + 8192]),
}


@pytest.mark.parametrize("case", list(CASES_DECLINED))
def test_records_of_different_shapes_are_declined_and_encoded_one_by_one(case: str) -> None:
    keys, values, timestamps = CASES_DECLINED[case]
    assert encode_run(keys, values, timestamps, timestamps[0], 0) is None  # type: ignore[arg-type]
    assert extended(keys, values, timestamps) == one_by_one(keys, values, timestamps)


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize(("count", "before"), [(2, 0), (100, 0), (1000, 50), (300, 8100)])
@pytest.mark.parametrize("span_ms", [0, 63, 500, 8191])
def test_records_of_varied_sizes_encode_by_columns_to_the_same_bytes(
    keyed: bool, count: int, before: int, span_ms: int
) -> None:
    """JSON-like records (sizes 0 to 1,000, lengths of one and two bytes) take the
    varied-size column path and come out as one append each would write them."""
    sizes = [(i * 37) % 1001 for i in range(count)]
    values = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    keys = [b"key-%d" % (i * 7919) for i in range(count)] if keyed else None
    timestamps = [BASE + span_ms * i // max(count - 1, 1) for i in range(count)]
    base = BASE if before else timestamps[0]
    assert encode_run(keys, values, timestamps, base, before) is not None
    assert extended(keys, values, timestamps, before=before) == one_by_one(
        keys, values, timestamps, before=before
    )


def test_offset_deltas_of_2_to_the_20_and_headers_go_one_by_one() -> None:
    assert encode_run(None, [b"x"], [BASE], BASE, 2**20 - 1) is not None  # the last 3-byte one
    assert encode_run(None, [b"x"], [BASE], BASE, 2**20) is None
    for records in (2, 3):  # deltas 2**20 - 2 and - 1 (three bytes), then 2**20 (four)
        values = [b"abc"[i : i + 1] for i in range(records)]
        builders = [_builder(0), _builder(0)]
        for builder in builders:  # as if 2**20 - 2 records were in it (their bytes aside)
            builder._count = 2**20 - 2
            builder._base_ts = builder._max_ts = BASE
        start = len(builders[0]._buf)
        builders[0].extend(None, values, [BASE] * records)
        for value in values:
            builders[1].append(None, value, None, BASE)
        assert builders[0]._buf[start:] == builders[1]._buf[start:]
    headers: Headers = [[("h", b"1")], None, [("n", None)]]
    three = [b"a", b"b", b"c"]
    assert extended(None, three, [BASE] * 3, headers) == one_by_one(
        None, three, [BASE] * 3, headers
    )


@pytest.mark.parametrize("count", [1, MIN_ENCODE - 1, MIN_ENCODE])
def test_runs_shorter_than_min_encode_are_appended_one_by_one(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A linger 0 producer's batches hold a record or a few: the column encoder's set-up
    would cost more than it saves, so those are appended, to the same bytes."""
    monkeypatch.setattr(runs, "MIN_ENCODE", MIN_ENCODE)
    calls = []

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return encode_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("protocol.records.codec.encode_run", spy)
    values = [b"v" * 100] * count
    timestamps = [BASE] * count
    assert extended(None, values, timestamps) == one_by_one(None, values, timestamps)
    assert len(calls) == (1 if count >= MIN_ENCODE else 0)


def test_the_batch_header_carries_the_first_and_the_largest_timestamp() -> None:
    builder = BatchBuilder()
    builder.extend(None, [b"a", b"b", b"c"], [BASE + 5, BASE + 9, BASE + 7])
    (batch,) = decode_batches(builder.build())
    assert batch.header.base_timestamp == BASE + 5
    assert batch.header.max_timestamp == BASE + 9
    assert [r.timestamp for r in batch] == [BASE + 5, BASE + 9, BASE + 7]
    assert [r.offset for r in batch] == [0, 1, 2]


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="as many"):
        BatchBuilder().extend(None, [b"a", b"b"], [BASE])
    with pytest.raises(ValueError, match="as many"):
        BatchBuilder().extend([b"k"], [b"a", b"b"], [BASE, BASE])


@settings(max_examples=300, deadline=None)
@given(
    st.data(),
    st.integers(min_value=1, max_value=300),
    st.sampled_from([0, 1, 100, 200]),
    st.booleans(),
)
def test_any_records_encode_as_one_append_each(
    data: st.DataObject, count: int, before: int, keyed: bool
) -> None:
    """Random columns, mostly one shape with the odd record that is not: whichever path
    they take, the same bytes."""
    size = data.draw(st.integers(min_value=0, max_value=300))
    odd = st.one_of(st.none(), st.binary(max_size=20))
    values = [
        data.draw(st.one_of(st.binary(min_size=size, max_size=size), odd))
        if data.draw(st.integers(0, 20)) == 0
        else bytes([i % 256]) * size
        for i in range(count)
    ]
    keys = None
    if keyed:
        keys = [
            data.draw(odd) if data.draw(st.integers(0, 20)) == 0 else b"key-%04d" % i
            for i in range(count)
        ]
    spread = data.draw(st.sampled_from([0, 10, 100, 9000]))
    timestamps = [
        BASE + data.draw(st.integers(min_value=-1 if spread else 0, max_value=spread))
        for _ in range(count)
    ]
    expected = one_by_one(keys, values, timestamps, before=before)
    assert extended(keys, values, timestamps, before=before) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 40)), min_size=1, max_size=80),
    st.booleans(),
)
def test_timestamps_in_runs_encode_as_one_append_each(
    runs: list[tuple[int, int]], back_in_time: bool
) -> None:
    """A producer's batch: runs of equal timestamps that never go back (up to 64 runs
    are found by binary search, more by the timestamps' set), or that do once."""
    timestamps: list[int] = []
    stamp = BASE
    for step, count in runs:
        stamp += step
        timestamps += [stamp] * count
    if back_in_time and len(timestamps) > 1:
        timestamps[-1] = BASE  # (after a later one: the set's way)
    values = [b"v" * 50] * len(timestamps)
    expected = one_by_one(None, values, timestamps)
    assert extended(None, values, timestamps) == expected
    found = timestamp_runs(timestamps)
    distinct = len(set(timestamps))
    changes = 1 + sum(a != b for a, b in itertools.pairwise(timestamps))
    if timestamps != sorted(timestamps) or changes > 64:
        assert found is None
    else:
        assert found is not None
        starts, stamps = found
        assert len(starts) == distinct == changes
        assert [stamps[bisect.bisect_right(starts, i) - 1] for i in range(len(timestamps))] == (
            timestamps
        )


def test_timestamp_runs_take_any_sequence_and_stop_at_the_limit() -> None:
    assert timestamp_runs([]) is None
    assert timestamp_runs(array("q", [5, 5, 6])) == ([0, 2], [5, 6])
    assert timestamp_runs((1, 2, 3), limit=3) == ([0, 1, 2], [1, 2, 3])
    assert timestamp_runs((1, 2, 3), limit=2) is None
    assert timestamp_runs([2, 1]) is None


# --- review 133: encode_run against one append a record -------------------------------

_LENGTHS = st.one_of(
    st.integers(0, 70),
    st.sampled_from([63, 64, 127, 128, 8100, 8150, 8170, 8175, *range(8180, 8194), 16_383, 16_384]),
)


def _appended(keys, values, timestamps, base, first_delta) -> bytes:  # type: ignore[no-untyped-def]
    builder = BatchBuilder()
    builder._count = first_delta
    builder._base_ts = builder._max_ts = base
    start = len(builder._buf)
    for i, value in enumerate(values):
        builder.append(None if keys is None else keys[i], value, None, timestamps[i])
    return bytes(builder._buf[start:])


def _bodies(keys, values, timestamps, base, first_delta) -> list[int]:  # type: ignore[no-untyped-def]
    builder = BatchBuilder()
    builder._count = first_delta
    builder._base_ts = builder._max_ts = base
    out = []
    for i, value in enumerate(values):
        before = len(builder._buf)
        after = builder.append(None if keys is None else keys[i], value, None, timestamps[i])
        total = after - before
        out.append(total - (1 if total <= 64 else 2 if total <= 8193 else 3))
    return out


@st.composite
def _cases(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(1, 40))
    lengths = draw(st.lists(_LENGTHS, min_size=n, max_size=n))
    keyed = draw(st.booleans())
    key_lengths = draw(st.lists(_LENGTHS, min_size=n, max_size=n)) if keyed else None
    first_delta = draw(
        st.one_of(
            st.integers(0, 70),
            st.integers(8150, 8200),
            st.integers((1 << 20) - 45, (1 << 20)),
        )
    )
    steps = draw(
        st.lists(st.sampled_from([0, 0, 1, 30, 63, 64, 100, 4000, 8191]), min_size=n, max_size=n)
    )
    base = BASE
    stamps = []
    at = draw(st.sampled_from([0, 1, 63, 64, 8191]))
    for step in steps:
        stamps.append(base + min(at, 8191))
        at += step
    if draw(st.booleans()):
        stamps = draw(st.permutations(stamps))
    values = [bytes([i % 251]) * size for i, size in enumerate(lengths)]
    keys = (
        None
        if key_lengths is None
        else [bytes([(i + 7) % 251]) * s for i, s in enumerate(key_lengths)]
    )
    return keys, values, stamps, base, first_delta


@given(_cases())
@example(([b"k" * 10, b"k" * 11], [b"v" * 8164, b"v" * 8160], [BASE, BASE + 100], BASE, 8191))
@example((None, [b"v" * 8186, b"v" * 8100], [BASE, BASE + 64], BASE, 8191))
@example((None, [b"v" * 8187, b"v"], [BASE, BASE], BASE, 0))
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
def test_encode_run_is_one_append_a_record(case) -> None:  # type: ignore[no-untyped-def]
    """Review 133: encode_run against BatchBuilder.append one record at a time, around
    the 8,191-byte record-body limit, the offset-delta widths (64, 8,192, 2**20) and
    timestamp deltas of one and two bytes; declined only where it says."""
    keys, values, stamps, base, first_delta = case
    if first_delta == 0:  # (append() takes the first record's timestamp as the base)
        base = stamps[0]
    encoded = encode_run(keys, values, stamps, base, first_delta)
    if encoded is None:
        # declined only where documented: a record body of 8 KiB or more among varied
        # sizes, an offset delta of 2**20
        assert (
            first_delta + len(values) > 1 << 20
            or min(stamps) < base
            or len(set(map(len, values))) > 1
            or (keys is not None and len(set(map(len, keys))) > 1)
        )
        if first_delta + len(values) <= 1 << 20 and min(stamps) >= base:
            # varied sizes: declined only for a body (or a key or value) of 8 KiB or more
            assert (
                max(_bodies(keys, values, stamps, base, first_delta)) >= 8192
                or max(map(len, [*values, *(keys or [])])) >= 8192
            )
        return
    assert encoded == _appended(keys, values, stamps, base, first_delta)
