"""Rack-aware assignment (KIP-881): the assignors give a member partitions with a replica
in its rack where balance allows, and assign as before where racks cannot matter."""

import random

from hypothesis import given
from hypothesis import strategies as st

from client.assignors import (
    ASSIGNORS,
    NO_RACKS,
    Subscription,
    cooperative_sticky_assign,
    range_assign,
    roundrobin_assign,
    sticky_assign,
)
from client.cluster import Broker, ClusterMetadata, PartitionMetadata, TopicMetadata
from client.membership import replica_racks
from client.types import TopicPartition as TP


def _racks(topic: str, layout: list[str]) -> dict[TP, frozenset[str]]:
    """Partition p of ``topic`` on the racks of layout[p] (one letter a rack)."""
    return {TP(topic, p): frozenset(racks) for p, racks in enumerate(layout)}


def _in_rack(got: dict, subs: dict, racks: dict) -> int:
    return sum(1 for m, tps in got.items() for tp in tps if subs[m].rack in racks[tp])


def _sorted(got: dict) -> dict:
    return {m: sorted(tps) for m, tps in got.items()}


# Kafka's test layout: 3 racks, RF 2, partition p on racks p and p+1
KAFKA_LAYOUT = ["ab", "bc", "ca", "ab", "bc", "ca"]


def test_range_gives_each_member_its_racks_partitions_within_its_share() -> None:
    subs = {f"c{i}": Subscription(["t"], rack=r) for i, r in enumerate("abc")}
    racks = _racks("t", KAFKA_LAYOUT)
    got = range_assign({"t": 6}, subs, racks)
    assert got == {
        "c0": [TP("t", 0), TP("t", 2)],
        "c1": [TP("t", 1), TP("t", 3)],
        "c2": [TP("t", 4), TP("t", 5)],
    }
    assert _in_rack(got, subs, racks) == 6
    plain = range_assign({"t": 6}, subs)  # without the racks: contiguous, 2 cross a rack
    assert plain["c0"] == [TP("t", 0), TP("t", 1)]
    assert _in_rack(plain, subs, racks) == 4


def test_range_puts_balance_before_racks() -> None:
    subs = {"c0": Subscription(["t"], rack="a"), "c1": Subscription(["t"], rack="b")}
    racks = _racks("t", ["a", "a", "a", "a", "b"])
    got = range_assign({"t": 5}, subs, racks)
    assert [len(got["c0"]), len(got["c1"])] == [3, 2]  # c0 may not take all four of a's
    assert TP("t", 4) in got["c1"]


def test_range_keeps_co_partitioned_topics_together_and_in_rack() -> None:
    subs = {"c0": Subscription(["x", "y"], rack="a"), "c1": Subscription(["x", "y"], rack="b")}
    racks = {**_racks("x", ["b", "a", "b", "a"]), **_racks("y", ["b", "a", "b", "a"])}
    got = range_assign({"x": 4, "y": 4}, subs, racks)
    for member in got:
        assert {tp.partition for tp in got[member] if tp.topic == "x"} == {
            tp.partition for tp in got[member] if tp.topic == "y"
        }
    assert _in_rack(got, subs, racks) == 8
    assert got["c0"] == sorted(got["c0"])  # handed out sorted, as Kafka's


def test_racks_that_cannot_matter_change_nothing() -> None:
    subs = {f"c{i}": Subscription(["t", "u"], rack=r) for i, r in enumerate("abc")}
    counts = {"t": 7, "u": 4}
    everywhere = {TP(t, p): frozenset("abc") for t, n in counts.items() for p in range(n)}
    elsewhere = {TP(t, p): frozenset("xy") for t, n in counts.items() for p in range(n)}
    for name, assign in ASSIGNORS.items():
        plain = assign(counts, subs, NO_RACKS)
        assert assign(counts, subs, everywhere) == plain, name  # all replicas in every rack
        assert assign(counts, subs, elsewhere) == plain, name  # no member's rack holds any
        no_member_rack = {m: Subscription(s.topics) for m, s in subs.items()}
        assert assign(counts, no_member_rack, _racks("t", list("abcabca"))) == (
            assign(counts, no_member_rack, NO_RACKS)
        ), name


def test_static_members_are_ordered_by_instance_id_so_a_restart_keeps_its_range() -> None:
    def subs(first: str, second: str) -> dict[str, Subscription]:
        return {
            first: Subscription(["t"], instance_id="i1"),
            second: Subscription(["t"], instance_id="i2"),
            "dynamic": Subscription(["t"]),
        }

    before = range_assign({"t": 6}, subs("m-b", "m-c"))
    after = range_assign({"t": 6}, subs("m-z", "m-a"))  # both restarted: new member ids
    assert before["m-b"] == after["m-z"] == [TP("t", 0), TP("t", 1)]
    assert before["m-c"] == after["m-a"] == [TP("t", 2), TP("t", 3)]
    assert before["dynamic"] == [TP("t", 4), TP("t", 5)]  # dynamic members after static
    assert roundrobin_assign({"t": 3}, subs("m-z", "m-a"))["m-z"] == [TP("t", 0)]


def test_sticky_gives_unowned_partitions_to_members_of_their_racks() -> None:
    subs = {"a1": Subscription(["t"], rack="a"), "b1": Subscription(["t"], rack="b")}
    racks = _racks("t", ["b", "a", "b", "a"])
    got = sticky_assign({"t": 4}, subs, racks)
    assert _sorted(got) == {"a1": [TP("t", 1), TP("t", 3)], "b1": [TP("t", 0), TP("t", 2)]}


def test_sticky_keeps_owned_partitions_in_rack_and_moves_cross_rack_ones_if_balance_allows() -> (
    None
):
    racks = _racks("t", ["a", "b", "a", "b"])
    owned = {"a1": [TP("t", 0), TP("t", 1)], "b1": [TP("t", 2), TP("t", 3)]}
    subs = {m: Subscription(["t"], owned=owned[m], generation=3, rack=m[0]) for m in ("a1", "b1")}
    got = sticky_assign({"t": 4}, subs, racks)
    assert _sorted(got) == {"a1": [TP("t", 0), TP("t", 2)], "b1": [TP("t", 1), TP("t", 3)]}
    # cooperative: what moves waits until its owner gave it up; what stays stays
    first = cooperative_sticky_assign({"t": 4}, subs, racks)
    assert first == {"a1": [TP("t", 0)], "b1": [TP("t", 3)]}
    # all in rack a: balance first, so b1 keeps its two (stickiness over a rack it lacks)
    one_rack = _racks("t", ["a", "a", "a", "a"])
    assert _sorted(sticky_assign({"t": 4}, subs, one_rack)) == owned


def test_replica_racks_come_from_the_metadata_and_a_broker_not_listed_names_none() -> None:
    metadata = ClusterMetadata(
        brokers={1: Broker(1, "h", 1, "a"), 2: Broker(2, "h", 2, "b"), 3: Broker(3, "h", 3)},
        topics={
            "t": TopicMetadata(
                "t",
                {
                    0: PartitionMetadata(0, 1, replicas=(1, 2)),
                    1: PartitionMetadata(1, 3, replicas=(3, 4)),  # 3 has no rack, 4 is down
                },
            )
        },
    )
    assert replica_racks(metadata, ["t", "gone"]) == {
        TP("t", 0): frozenset("ab"),
        TP("t", 1): frozenset(),
    }


@given(
    st.dictionaries(st.sampled_from(["t", "u", "v"]), st.integers(0, 9), min_size=1),
    st.lists(st.text("mnop", min_size=1, max_size=3), min_size=1, max_size=6, unique=True),
    st.sampled_from(sorted(ASSIGNORS)),
    st.randoms(use_true_random=False),
)
def test_every_partition_goes_once_to_a_subscriber_and_balance_holds(
    topics: dict[str, int], members: list[str], name: str, rnd: random.Random
) -> None:
    every_topic = rnd.random() < 0.5
    subs = {
        m: Subscription(
            sorted(topics)
            if every_topic
            else rnd.sample(sorted(topics), rnd.randint(1, len(topics))),
            owned=[TP(t, p) for t, n in topics.items() for p in range(n) if rnd.random() < 0.2],
            generation=rnd.randint(1, 2),
            rack=rnd.choice([None, "", "a", "b", "c"]),
            instance_id=rnd.choice([None, "i" + m]),
        )
        for m in members
    }
    racks = {
        TP(t, p): frozenset(rnd.sample("abcd", rnd.randint(0, 3)))
        for t, n in topics.items()
        for p in range(n)
    }
    if rnd.random() < 0.25:  # no racks known (the leader's metadata names none)
        got = ASSIGNORS[name](topics, subs)
    else:
        got = ASSIGNORS[name](topics, subs, racks)
    assigned = [tp for tps in got.values() for tp in tps]
    assert len(assigned) == len(set(assigned))
    for member, tps in got.items():
        assert all(tp.topic in subs[member].topics for tp in tps)
    if name == "cooperative-sticky":
        return  # (what it withholds is handed out in the follow-up round)
    wanted = {
        TP(t, p)
        for t, n in topics.items()
        for p in range(n)
        if any(t in s.topics for s in subs.values())
    }
    assert set(assigned) == wanted
    if name == "range":  # each topic split evenly among its subscribers
        for topic in topics:
            counts = [
                sum(1 for tp in got[m] if tp.topic == topic)
                for m in subs
                if topic in subs[m].topics
            ]
            assert not counts or max(counts) - min(counts) <= 1
    elif every_topic:
        counts = [len(v) for v in got.values()]
        assert max(counts) - min(counts) <= 1
