"""Assignors and the consumer protocol bytes (what the group leader computes and sends)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.assignors import (
    Assignment,
    ProtocolError,
    Subscription,
    cooperative_sticky_assign,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    range_assign,
    roundrobin_assign,
    sticky_assign,
)
from client.types import TopicPartition as TP


def test_subscription_and_assignment_bytes_are_kafkas() -> None:
    sub = Subscription(["orders"], b"ud", [TP("orders", 1)], generation=7)
    data = encode_subscription(sub)
    # version 3 | 1 topic "orders" | user data "ud" | owned: orders [1] | generation 7 |
    # rack null (Kafka 3.5's)
    v1 = (
        b"\x00\x00\x00\x01"
        + b"\x00\x06orders"
        + b"\x00\x00\x00\x02ud"
        + b"\x00\x00\x00\x01"
        + b"\x00\x06orders"
        + b"\x00\x00\x00\x01"
        + b"\x00\x00\x00\x01"
    )
    assert data == b"\x00\x03" + v1 + b"\x00\x00\x00\x07" + b"\xff\xff"
    assert decode_subscription(data) == sub
    assert decode_subscription(b"\x00\x01" + v1) == Subscription(
        ["orders"], b"ud", [TP("orders", 1)]
    )
    v2 = b"\x00\x02" + v1 + b"\x00\x00\x00\x07"  # before Kafka 3.5: no rack
    assert decode_subscription(v2) == sub
    v3 = b"\x00\x03" + v1 + b"\x00\x00\x00\x07" + b"\x00\x04rack"  # Kafka 3.5: + rack id
    racked = Subscription(["orders"], b"ud", [TP("orders", 1)], 7, "rack")
    assert decode_subscription(v3) == racked
    assert encode_subscription(racked) == v3
    # a newer version's fields after the rack are not read (Kafka's forward reading)
    assert decode_subscription(b"\x00\x04" + v3[2:] + b"\x00\x00") == racked
    # the instance id is not in the bytes (the JoinGroup answer gives it)
    assert decode_subscription(encode_subscription(Subscription(["t"], instance_id="i"))) == (
        Subscription(["t"])
    )
    v0 = b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff"  # Kafka's v0: no owned list
    assert decode_subscription(v0) == Subscription(["t"], None, [])
    assignment = Assignment([TP("a", 0), TP("a", 2), TP("b", 1)])
    assert decode_assignment(encode_assignment(assignment)) == assignment
    assert decode_assignment(b"") == Assignment([])
    with pytest.raises(ProtocolError):
        decode_subscription(b"\x00\x01\x00\x00\x00\x05")
    with pytest.raises(ProtocolError):  # a rack's length past the end
        decode_subscription(v3[:-2])
    # any negative length is a null rack, as Kafka's readers take it (review 134)
    assert decode_subscription(v3[:-6] + b"\xff\xfe") == sub


def _subs(members: dict[str, list[str]], owned: dict[str, list[TP]] | None = None) -> dict:
    owned = owned or {}
    return {m: Subscription(t, None, owned.get(m, [])) for m, t in members.items()}


def test_range_is_kafkas_contiguous_split() -> None:
    got = range_assign({"t": 7}, _subs({"c2": ["t"], "c1": ["t"], "c3": ["t"]}))
    assert got == {
        "c1": [TP("t", 0), TP("t", 1), TP("t", 2)],
        "c2": [TP("t", 3), TP("t", 4)],
        "c3": [TP("t", 5), TP("t", 6)],
    }


def test_roundrobin_deals_in_turn_and_skips_the_unsubscribed() -> None:
    got = roundrobin_assign({"a": 2, "b": 2}, _subs({"x": ["a", "b"], "y": ["b"]}))
    assert got == {"x": [TP("a", 0), TP("a", 1), TP("b", 1)], "y": [TP("b", 0)]}


def test_sticky_keeps_owners_and_moves_only_what_balance_needs() -> None:
    first = sticky_assign({"t": 6}, _subs({"a": ["t"], "b": ["t"]}))
    assert sorted(len(v) for v in first.values()) == [3, 3]
    # a third member joins: each old member gives up exactly one partition
    second = sticky_assign({"t": 6}, _subs({"a": ["t"], "b": ["t"], "c": ["t"]}, first))
    assert sorted(len(v) for v in second.values()) == [2, 2, 2]
    moved = sum(1 for m in ("a", "b") for tp in second[m] if tp not in first[m])
    assert moved == 0
    assert set(second["a"]) <= set(first["a"]) and set(second["b"]) <= set(first["b"])
    # b leaves: its partitions go to the others, nothing else moves
    third = sticky_assign({"t": 6}, _subs({"a": ["t"], "c": ["t"]}, second))
    assert set(second["a"]) <= set(third["a"]) and set(second["c"]) <= set(third["c"])


def test_cooperative_sticky_hands_a_partition_over_only_once_its_owner_gave_it_up() -> None:
    first = cooperative_sticky_assign({"t": 6}, _subs({"a": ["t"], "b": ["t"]}))
    assert sorted(len(v) for v in first.values()) == [3, 3]
    three = {"a": ["t"], "b": ["t"], "c": ["t"]}
    # c joins: a and b each give one up, but c gets nothing yet; nothing else moves
    second = cooperative_sticky_assign({"t": 6}, _subs(three, first))
    assert second["c"] == []
    assert [len(second[m]) for m in ("a", "b")] == [2, 2]
    assert set(second["a"]) < set(first["a"]) and set(second["b"]) < set(first["b"])
    # a and b gave them up and joined again: now c gets exactly those two
    third = cooperative_sticky_assign({"t": 6}, _subs(three, second))
    freed = set(first["a"]) - set(second["a"]) | set(first["b"]) - set(second["b"])
    assert set(third["c"]) == freed
    assert third["a"] == second["a"] and third["b"] == second["b"]


def test_a_claim_of_an_older_generation_loses_and_one_of_the_same_counts_for_neither() -> None:
    tp = TP("t", 0)
    subs = {
        "old": Subscription(["t"], None, [tp], generation=3),  # dropped, and not told yet
        "new": Subscription(["t"], None, [tp], generation=4),
    }
    assert cooperative_sticky_assign({"t": 1}, subs) == {"old": [], "new": [tp]}
    subs["old"] = Subscription(["t"], None, [tp], generation=4)
    # both in one generation: both may hold it, so nobody gets it this round (review 134)
    assert cooperative_sticky_assign({"t": 1}, subs) == {"old": [], "new": []}
    # not given it, both gave it up; in the next round it is assigned
    subs = {m: Subscription(["t"], None, [], generation=5) for m in ("old", "new")}
    got = cooperative_sticky_assign({"t": 1}, subs)
    assert sorted(len(v) for v in got.values()) == [0, 1]
    # a partition one member lists twice is one claim, not two of one generation
    subs["old"] = Subscription(["t"], None, [tp, tp], generation=5)
    assert cooperative_sticky_assign({"t": 1}, subs) == {"old": [tp], "new": []}


@given(
    st.lists(st.sets(st.sampled_from("abcdef"), min_size=1), min_size=1, max_size=8),
    st.integers(1, 12),
)
def test_cooperative_rounds_never_give_an_owned_partition_to_another_and_settle(
    memberships: list[set[str]], partitions: int
) -> None:
    """Members come and go between rounds; each round's owners report what they hold.
    Nobody is handed a partition another member holds, and after the members' follow-up
    round (each one that gave something up joins again) the group is balanced."""
    holding: dict[str, list[TP]] = {}
    generation = 0
    for members in memberships:
        holding = {m: holding.get(m, []) for m in members}  # who left lost nothing to others
        for _ in range(2):  # the round, and the follow-up a revocation causes
            generation += 1
            subs = {
                m: Subscription(["t"], None, holding[m], generation - 1) for m in sorted(members)
            }
            got = cooperative_sticky_assign({"t": partitions}, subs)
            for member, tps in got.items():
                others = {tp for m, held in holding.items() if m != member for tp in held}
                assert not set(tps) & others
            holding = {m: list(tps) for m, tps in got.items()}
        counts = [len(v) for v in holding.values()]
        assert sum(counts) == partitions and max(counts) - min(counts) <= 1
