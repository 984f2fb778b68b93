"""Hypothesis strategies derived from the protocol's own schemas."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any

from hypothesis import strategies as st

from protocol.records import encode_batch
from protocol.schema import RAW, fields_for_version

INT64 = st.integers(-(2**63), 2**63 - 1)


def message(cls: type, version: int) -> st.SearchStrategy[Any]:
    """Any instance of message ``cls`` valid at ``version`` (other fields at their default)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    present = set(fields_for_version(cls, version))
    kwargs = {
        f.name: _for_type(hints[f.name], version)
        for f in dataclasses.fields(cls)
        if f.name in present
    }
    return st.builds(cls, **kwargs)


def _for_type(tp: Any, version: int) -> st.SearchStrategy[Any]:  # noqa: PLR0911
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        if RAW in args[1:]:
            return st.none() | st.binary(max_size=64) | record_batches()
        return _for_type(args[0], version)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return st.none() | _for_type(inner, version)
    if origin is list:
        return st.lists(_for_type(args[0], version), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), _for_type(args[1], version), max_size=3)
    simple = {
        int: INT64,
        str: st.text(max_size=16),
        bool: st.booleans(),
        bytes: st.binary(max_size=32),
        float: st.floats(allow_nan=False),
    }
    if tp in simple:
        return simple[tp]
    assert dataclasses.is_dataclass(tp), tp
    return st.deferred(lambda: message(tp, version))


KEYS = st.none() | st.binary(max_size=20)
VALUES = st.none() | st.binary(max_size=300)
HEADERS = st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=10)), max_size=3)
TIMESTAMPS = st.integers(0, 2**45)
RECORDS = st.lists(st.tuples(KEYS, VALUES, HEADERS, TIMESTAMPS), min_size=1, max_size=20)
CODECS = st.sampled_from(["none", "gzip", "snappy", "lz4", "zstd"])


@st.composite
def record_batches(draw: st.DrawFn) -> bytes:
    """Valid RecordBatch v2 bytes: one to three batches, any codec."""
    n = draw(st.integers(1, 3))
    base = draw(st.integers(0, 2**40))
    out = b""
    for _ in range(n):
        records = draw(RECORDS)
        out += encode_batch(records, compression=draw(CODECS), base_offset=base)
        base += len(records)
    return out
