"""``range_assign`` against a port of Kafka 3.5+'s RangeAssignor (KIP-881), written
as Kafka's reads (review 134), on random groups: racks random, equal, partial or none;
members with and without racks and instance ids; co-partitioned topics. And the
cooperative assignor never hands over a partition whose claim stands."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.assignors import Subscription, cooperative_sticky_assign, range_assign
from client.types import TopicPartition as TP

Racks = dict[TP, frozenset[str]]


class _KafkaTopicState:
    """Kafka's RangeAssignor.TopicAssignmentState."""

    def __init__(
        self, topic: str, n: int, members: Mapping[str, Subscription], racks: Racks
    ) -> None:
        self.topic = topic
        consumer_racks = {m: s.rack for m, s in members.items() if s.rack}
        subs = sorted(
            (m for m, s in members.items() if topic in s.topics),
            key=lambda m: (1, m) if members[m].instance_id is None else (0, members[m].instance_id),
        )
        self.consumers = {c: consumer_racks.get(c) for c in subs}
        self.unassigned = list(range(n))
        self.assigned = dict.fromkeys(subs, 0)
        self.per, self.extra = divmod(n, len(subs)) if subs else (0, 0)
        named = {r for r in self.consumers.values() if r is not None}
        self.partition_racks = (
            {p: racks.get(TP(topic, p), frozenset()) for p in range(n)} if named else {}
        )
        every = frozenset().union(*self.partition_racks.values())
        self.needs = (
            bool(named)
            and not named.isdisjoint(every)
            and not all(r == every for r in self.partition_racks.values())
        )

    def racks_match(self, c: str, p: int) -> bool:
        rack = self.consumers[c]
        return rack is None or rack in self.partition_racks.get(p, frozenset())

    def max_assignable(self, c: str) -> int:
        return max(0, self.per + (1 if self.extra > 0 else 0) - self.assigned[c])

    def assign(self, c: str, parts: list[int], out: dict[str, list[TP]]) -> None:
        out[c] += [TP(self.topic, p) for p in parts]
        self.assigned[c] += len(parts)
        if self.assigned[c] > self.per:
            self.extra -= 1
        for p in parts:
            self.unassigned.remove(p)

    def ranges(self, may: Callable[[str, int], bool], out: dict[str, list[TP]]) -> None:
        for c in self.consumers:
            if not self.unassigned:
                break
            parts = [p for p in self.unassigned if may(c, p)][: self.max_assignable(c)]
            if parts:
                self.assign(c, parts, out)


def _co_partitioned(states: list[_KafkaTopicState], n: int, out: dict[str, list[TP]]) -> None:
    remaining = list(states[0].consumers)
    for p in range(n):
        c = next(
            (
                c
                for c in remaining
                if all(t.racks_match(c, p) and t.max_assignable(c) > 0 for t in states)
            ),
            None,
        )
        if c is None:
            continue
        for t in states:
            t.assign(c, [p], out)
        if not any(t.max_assignable(c) > 0 for t in states):
            remaining.remove(c)
            if not remaining:
                return


def kafka_range(
    partitions: Mapping[str, int], members: Mapping[str, Subscription], racks: Racks
) -> dict[str, list[TP]]:
    states = [_KafkaTopicState(t, n, members, racks) for t, n in partitions.items() if n > 0]
    out: dict[str, list[TP]] = {m: [] for m in members}
    if any(s.needs for s in states):
        by_consumers: dict[Any, list[_KafkaTopicState]] = {}
        for s in states:
            by_consumers.setdefault(frozenset(s.consumers.items()), []).append(s)
        for group in by_consumers.values():
            by_count: dict[int, list[_KafkaTopicState]] = {}
            for s in group:  # Kafka's key: partitionRacks.size(), 0 with no member racks
                by_count.setdefault(len(s.partition_racks), []).append(s)
            for n, co in by_count.items():
                if len(co) > 1:
                    _co_partitioned(co, n, out)
                elif co[0].needs:
                    co[0].ranges(co[0].racks_match, out)
    for s in states:
        s.ranges(lambda c, p: True, out)
    return {m: sorted(tps) for m, tps in out.items()}


@st.composite
def _groups(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, Subscription], Racks]:
    topics = draw(st.lists(st.sampled_from(["t0", "t1", "t2", "t3"]), min_size=1, unique=True))
    counts = {t: draw(st.integers(0, 9)) for t in topics}
    if draw(st.booleans()):  # often co-partitioned
        counts = dict.fromkeys(topics, draw(st.integers(1, 9)))
    ids = draw(
        st.lists(st.sampled_from(["m0", "m1", "m2", "m3", "z", "A"]), min_size=1, unique=True)
    )
    every = sorted(counts)
    members = {
        m: Subscription(
            draw(st.lists(st.sampled_from(every), max_size=4, unique=True)),
            owned=draw(
                st.lists(st.builds(TP, st.sampled_from([*every, "gone"]), st.integers(0, 10)))
            ),
            generation=draw(st.sampled_from([-1, 3, 4])),
            rack=draw(st.sampled_from([None, "", "a", "b", "c", "q"])),
            instance_id=draw(st.sampled_from([None, f"i{k}"])),
        )
        for k, m in enumerate(ids)
    }
    shape = draw(st.sampled_from(["random", "same", "none", "partial"]))
    racks: Racks = {}
    for t, n in counts.items():
        for p in range(n):
            if shape == "same":
                racks[TP(t, p)] = frozenset("ab")
            elif shape == "random" or (shape == "partial" and draw(st.booleans())):
                racks[TP(t, p)] = frozenset(draw(st.lists(st.sampled_from("abcx"), max_size=3)))
    return counts, members, racks


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(_groups())
def test_range_is_kafkas(group: tuple[dict[str, int], dict[str, Subscription], Racks]) -> None:
    counts, members, racks = group
    got = range_assign(counts, members, racks)
    assert {m: sorted(tps) for m, tps in got.items()} == kafka_range(counts, members, racks)


def test_topics_whose_members_have_no_rack_are_not_co_partitioned_by_count_zero() -> None:
    """Kafka groups by the partition-rack count, 0 when no subscriber has a rack: those
    topics keep contiguous ranges even when another topic is rack-aware."""
    members = {
        "c0": Subscription(["t0"], rack="a"),
        "c1": Subscription(["t1", "t2"]),
        "c2": Subscription(["t1", "t2"]),
    }
    counts = {"t0": 2, "t1": 5, "t2": 3}
    racks = {TP("t0", 0): frozenset("a"), TP("t0", 1): frozenset("b")}
    got = range_assign(counts, members, racks)
    assert got["c1"] == [TP("t1", 0), TP("t1", 1), TP("t1", 2), TP("t2", 0), TP("t2", 1)]


@FUZZ
@given(_groups())
def test_cooperative_never_hands_over_a_partition_whose_claim_stands_or_is_contested(
    group: tuple[dict[str, int], dict[str, Subscription], Racks],
) -> None:
    """A partition claimed in its newest generation by one member goes to nobody else;
    one claimed by two there goes to nobody this round (both may still hold it)."""
    counts, members, racks = group
    got = cooperative_sticky_assign(counts, members, racks)
    for m, tps in got.items():
        for tp in tps:
            claims = [(s.generation, o) for o, s in members.items() if tp in s.owned]
            if claims:
                top = max(g for g, _ in claims)
                assert [o for g, o in claims if g == top] == [m], (tp, m, claims)
