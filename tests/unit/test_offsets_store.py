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
    # a commit with its own retention time: Kafka's value version 1 (an expire time, no
    # leader epoch), byte for byte
    expiring = OffsetAndMetadata(42, -1, "m", 1_000, 86_401_000)
    raw = encode_value(expiring)
    assert raw == (
        b"\x00\x01"
        + (42).to_bytes(8, "big")
        + b"\x00\x01m"
        + (1_000).to_bytes(8, "big")
        + (86_401_000).to_bytes(8, "big")
    )
    assert decode_value(raw) == expiring
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


def test_a_groups_partitions_held_by_open_transactions() -> None:
    """What require_stable fetches wait on: the partitions of a group with offsets in a
    transaction not yet ended, kept as transactions hold and end (not found by decoding
    every open transaction's records per fetch)."""
    store = OffsetStore()
    value = encode_value(OffsetAndMetadata(5))
    store.hold(7, [(encode_key("g", "t", 0), value, 10), (encode_key("h", "t", 0), value, 11)])
    store.hold(8, [(encode_key("g", "t", 0), value, 12), (encode_key("g", "u", 3), value, 13)])
    store.hold(9, [(b"\x00\x01 not an offsets key", value, 14), (None, None, 15)])
    assert store.pending_partitions("g") == {("t", 0), ("u", 3)}
    assert store.pending_partitions("h") == {("t", 0)}
    assert store.end_txn(8, committed=False) == 2
    assert store.pending_partitions("g") == {("t", 0)}  # producer 7's still holds it
    assert store.end_txn(7, committed=True) == 2
    assert store.pending_partitions("g") == store.pending_partitions("h") == set()
    assert store.get("g")[("t", 0)].offset == 5
    assert store.end_txn(9, committed=False) == 1
    assert store.pending_partitions("nobody") == set()


def test_a_committed_transactions_unreadable_record_is_skipped_not_raised() -> None:
    """(Found in review.) A load went through end_txn without the care it takes outside a
    transaction: one bad record stopped the coordinator's load part-way."""
    store = OffsetStore()
    good = (encode_key("g", "t", 0), encode_value(OffsetAndMetadata(5)), 10)
    bad = (encode_key("g", "t", 1), b"\x00\x09 no such value version", 11)
    store.hold(7, [bad, good])
    skipped: list[BadRecordError] = []
    assert store.end_txn(7, committed=True, on_bad=skipped.append) == 2
    assert len(skipped) == 1
    assert {tp: v.offset for tp, v in store.get("g").items()} == {("t", 0): 5}
