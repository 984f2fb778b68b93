"""Committed offsets as Kafka lays them out in __consumer_offsets, and group placement."""

import pytest

from broker.coordinator.offsets import OffsetStore
from protocol.group_log import (
    BadRecordError,
    OffsetAndMetadata,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
    java_string_hash,
    partition_for,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 97),
        ("hello", 99162322),  # Java's "hello".hashCode()
        ("Aa", 2112),  # Java's famous collision...
        ("BB", 2112),  # ...with this one
        ("polygenelubricants", -2147483648),  # hashes to Integer.MIN_VALUE
        ("\U0001f600", 31 * 0xD83D + 0xDE00),  # outside the BMP: two UTF-16 code units
    ],
)
def test_java_string_hash(text: str, expected: int) -> None:
    assert java_string_hash(text) == expected


def test_groups_are_placed_as_kafka_places_them() -> None:
    assert partition_for("hello", 50) == 99162322 % 50
    assert partition_for("polygenelubricants", 50) == 0  # Kafka's Utils.abs(MIN_VALUE) == 0
    assert all(0 <= partition_for(f"g{i}", 7) < 7 for i in range(200))


def test_records_round_trip_in_kafkas_layout() -> None:
    key = encode_key("orders-app", "orders", 3)
    assert key[:2] == b"\x00\x01"  # key version 1: an offset commit
    assert decode_key(key) == ("orders-app", "orders", 3)
    value = OffsetAndMetadata(42, 5, "host-a", 1_700_000_000_000)
    assert decode_value(encode_value(value)) == value
    assert decode_value(encode_value(OffsetAndMetadata(7))).metadata is None
    assert decode_key(b"\x00\x02\x00\x01g") is None  # group metadata: not an offset key
    with pytest.raises(BadRecordError):
        decode_key(b"\x00\x01\x00\x09ab")


def test_the_store_applies_records_in_order_and_tombstones_delete() -> None:
    store = OffsetStore()
    for key, value in store.commit(
        "g", [("t", 0, OffsetAndMetadata(10)), ("t", 1, OffsetAndMetadata(20))]
    ):
        store.apply(key, value)
    store.apply(encode_key("g", "t", 0), encode_value(OffsetAndMetadata(11)))  # later wins
    assert {tp: v.offset for tp, v in store.get("g").items()} == {("t", 0): 11, ("t", 1): 20}
    store.apply(encode_key("g", "t", 0), None)
    store.apply(encode_key("g", "t", 1), None)
    assert store.get("g") == {} and "g" not in store.groups
    assert store.get("other") == {}
