"""Group metadata as Kafka lays it out in __consumer_offsets (GroupMetadataKey v2,
GroupMetadataValue v0-3), and the store's handling of it."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.coordinator.offsets import OffsetStore
from protocol.group_log import (
    BadRecordError,
    GroupMetadata,
    MemberMetadata,
    OffsetAndMetadata,
    decode_group_value,
    encode_group_key,
    encode_group_value,
)


def _s(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(text.encode())) + text.encode()


def _b(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


MEMBER = MemberMetadata("m-1", "host-a", "client", "/10.0.0.1", 300_000, 10_000, b"sub", b"asg")
GROUP = GroupMetadata("consumer", 7, "range", "m-1", 1_700_000_000_000, [MEMBER])


def test_the_value_is_kafkas_version_3_byte_for_byte() -> None:
    expected = (
        struct.pack(">h", 3)
        + _s("consumer")
        + struct.pack(">i", 7)
        + _s("range")
        + _s("m-1")
        + struct.pack(">q", 1_700_000_000_000)
        + struct.pack(">i", 1)
        + _s("m-1")
        + _s("host-a")
        + _s("client")
        + _s("/10.0.0.1")
        + struct.pack(">ii", 300_000, 10_000)
        + _b(b"sub")
        + _b(b"asg")
    )
    assert encode_group_value(GROUP) == expected
    assert decode_group_value(expected) == GROUP
    assert encode_group_key("g") == b"\x00\x02" + _s("g")


def test_older_value_versions_are_read_with_kafkas_defaults() -> None:
    head = _s("consumer") + struct.pack(">i", 7) + _s("range") + _s("m-1")
    v0_member = (
        _s("m-1") + _s("client") + _s("/h") + struct.pack(">i", 10_000) + _b(b"s") + _b(b"a")
    )
    v0 = struct.pack(">h", 0) + head + struct.pack(">i", 1) + v0_member
    [member] = decode_group_value(v0).members
    assert (member.group_instance_id, member.rebalance_timeout_ms) == (None, 10_000)
    v2_member = (
        _s("m-1") + _s("client") + _s("/h") + struct.pack(">ii", 60_000, 10_000) + _b(b"") + _b(b"")
    )
    v2 = struct.pack(">h", 2) + head + struct.pack(">q", 5) + struct.pack(">i", 1) + v2_member
    decoded = decode_group_value(v2)
    assert decoded.current_state_timestamp == 5
    assert decoded.members[0].rebalance_timeout_ms == 60_000
    empty = GroupMetadata("consumer", 3, None, None, -1, [])
    assert decode_group_value(encode_group_value(empty)) == empty


def test_the_store_keeps_the_latest_metadata_and_a_tombstone_removes_it() -> None:
    store = OffsetStore()
    store.apply(encode_group_key("g"), encode_group_value(GROUP._replace(generation=1)))
    store.apply(encode_group_key("g"), encode_group_value(GROUP))
    for key, value in store.commit("g", [("t", 0, OffsetAndMetadata(3))]):
        store.apply(key, value)
    assert store.group_metadata == {"g": GROUP} and store.get("g") != {}
    for key, value in store.tombstones("g"):
        store.apply(key, value)
    assert store.group_metadata == {} and store.groups == {}
    with pytest.raises(BadRecordError):
        store.apply(b"\x00\x02\x00\x09g", None)  # the group name runs past the key


_text = st.text(max_size=20)
_members = st.builds(
    MemberMetadata,
    _text,
    st.none() | _text,
    _text,
    _text,
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.binary(max_size=50),
    st.binary(max_size=50),
)
_groups = st.builds(
    GroupMetadata,
    _text,
    st.integers(-(2**31), 2**31 - 1),
    st.none() | _text,
    st.none() | _text,
    st.integers(-(2**63), 2**63 - 1),
    st.lists(_members, max_size=4),
)


@given(_groups)
def test_values_round_trip(group: GroupMetadata) -> None:
    assert decode_group_value(encode_group_value(group)) == group


@given(_groups, st.data())
def test_a_cut_value_is_a_bad_record_not_a_crash(group: GroupMetadata, data: st.DataObject) -> None:
    encoded = encode_group_value(group)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(BadRecordError):
        decode_group_value(encoded[:cut])
