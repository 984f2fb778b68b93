from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.admin import _new_partitions
from broker.controller.assignment import assign_replicas, rack_alternated
from protocol.apis import CreatePartitionsAssignment, CreatePartitionsTopic
from protocol.errors import (
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
)


def test_kafkas_documented_example() -> None:
    # AdminUtils' doc table: 5 brokers, 10 partitions, RF 3, start index 0, shift 0
    got = assign_replicas([0, 1, 2, 3, 4], 10, 3, start_index=0, replica_shift=0)
    assert got == {
        0: [0, 1, 2],
        1: [1, 2, 3],
        2: [2, 3, 4],
        3: [3, 4, 0],
        4: [4, 0, 1],
        5: [0, 2, 3],
        6: [1, 3, 4],
        7: [2, 4, 0],
        8: [3, 0, 1],
        9: [4, 1, 2],
    }


@given(
    st.lists(st.integers(0, 1000), min_size=1, max_size=12, unique=True),
    st.integers(1, 60),
    st.data(),
)
def test_replicas_are_distinct_and_leaders_spread_evenly(
    brokers: list[int], partitions: int, data: st.DataObject
) -> None:
    rf = data.draw(st.integers(1, len(brokers)))
    got = assign_replicas(brokers, partitions, rf)
    assert sorted(got) == list(range(partitions))
    for replicas in got.values():
        assert len(replicas) == rf == len(set(replicas)) and set(replicas) <= set(brokers)
    leaders = Counter(r[0] for r in got.values())
    assert max(leaders.values()) - min(leaders.get(b, 0) for b in brokers) <= 1


def test_adding_partitions_continues_the_pattern() -> None:
    first = assign_replicas([1, 2, 3], 3, 2, start_index=1, replica_shift=0)
    more = assign_replicas([1, 2, 3], 3, 2, start_index=1, replica_shift=1, first_partition=3)
    assert set(more) == {3, 4, 5}
    assert Counter(r[0] for r in {**first, **more}.values()) == {1: 2, 2: 2, 3: 2}


@pytest.mark.parametrize(
    ("brokers", "partitions", "rf", "error", "match"),
    [
        ([1, 2], 3, 3, InvalidReplicationFactorError, "larger than the 2 available brokers"),
        ([1], 1, 0, InvalidReplicationFactorError, "at least 1"),
        ([1], 0, 1, InvalidPartitionsError, "at least 1 partition"),
    ],
)
def test_impossible_requests(
    brokers: list[int], partitions: int, rf: int, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        assign_replicas(brokers, partitions, rf)


def _grow(
    count: int, assignments: list[list[int]] | None = None, brokers: list[int] | None = None
) -> dict[int, list[int]]:
    current = {0: [2, 3, 1], 1: [3, 1, 2]}
    request = CreatePartitionsTopic(
        name="t",
        count=count,
        assignments=None
        if assignments is None
        else [CreatePartitionsAssignment(broker_ids=a) for a in assignments],
    )
    return _new_partitions("t", current, request, brokers or [1, 2, 3])


def test_new_partitions_go_on_from_partition_zeros_leader_as_kafka_places_them() -> None:
    added = _grow(5)
    # Kafka's addPartitions: start index and shift both partition 0's leader's index (2 -> 1)
    assert added == assign_replicas(
        [1, 2, 3], 3, 3, start_index=1, replica_shift=1, first_partition=2
    )
    assert sorted(added) == [2, 3, 4] and {r[0] for r in added.values()} == {1, 2, 3}
    assert all(sorted(r) == [1, 2, 3] for r in added.values())


def test_new_partitions_given_by_hand_are_checked() -> None:
    assert _grow(3, [[1, 2, 3]]) == {2: [1, 2, 3]}
    with pytest.raises(InvalidPartitionsError, match="has 2 partitions, more than the 1"):
        _grow(1)
    with pytest.raises(InvalidPartitionsError, match="already has 2 partitions"):
        _grow(2)
    with pytest.raises(InvalidReplicaAssignmentError, match="1 replica assignments for 2 new"):
        _grow(4, [[1, 2, 3]])
    with pytest.raises(
        InvalidReplicaAssignmentError, match="2 replicas; the topic's partitions have 3"
    ):
        _grow(3, [[1, 2]])
    with pytest.raises(InvalidReplicaAssignmentError, match="listed twice"):
        _grow(3, [[1, 1, 2]])
    with pytest.raises(InvalidReplicaAssignmentError, match=r"no live broker \[9\]"):
        _grow(3, [[1, 2, 9]])
    with pytest.raises(
        InvalidReplicationFactorError,
        match="3 replicas per partition, more than the 2 live brokers",
    ):
        _grow(3, brokers=[1, 2])


# --- rack-aware (broker.rack) --------------------------------------------------------------

KAFKAS_RACKS = {0: "rack1", 1: "rack3", 2: "rack3", 3: "rack2", 4: "rack2", 5: "rack1"}


def test_kafkas_rack_aware_example() -> None:
    """Kafka's own test (AdminRackAwareTest): the brokers alternated by rack, then the
    same walk as without racks, skipping a rack already used while another is not."""
    assert rack_alternated(KAFKAS_RACKS) == [0, 3, 1, 5, 4, 2]
    assert rack_alternated({b: r for b, r in KAFKAS_RACKS.items() if b != 5}) == [0, 3, 1, 4, 2]
    placed = assign_replicas(
        list(KAFKAS_RACKS), 7, 3, racks=KAFKAS_RACKS, start_index=0, replica_shift=0
    )
    assert placed == {
        0: [0, 3, 1],
        1: [3, 1, 5],
        2: [1, 5, 4],
        3: [5, 4, 2],
        4: [4, 2, 0],
        5: [2, 0, 3],
        6: [0, 4, 2],
    }


@pytest.mark.parametrize(
    ("racks", "factor"),
    [
        ({0: "a", 1: "b", 2: "b", 3: "c", 4: "c", 5: "a"}, 3),
        ({0: "a", 1: "b", 2: "b", 3: "c", 4: "c", 5: "a"}, 2),
        ({0: "a", 1: "a", 2: "b", 3: "c", 4: "c", 5: "a"}, 3),  # uneven racks
        ({0: "a", 1: "b", 2: "b", 3: "c", 4: "c", 5: "b"}, 5),  # more replicas than racks
        ({0: "a", 1: "a", 2: "a"}, 2),  # one rack: as without racks
        ({1: "az-1", 2: "az-2", 4: "az-3"}, 2),
    ],
)
def test_every_partition_spans_as_many_racks_as_it_can(racks: dict[int, str], factor: int) -> None:
    rack_count = len(set(racks.values()))
    for start in range(len(racks)):
        placed = assign_replicas(
            list(racks), 12, factor, racks=racks, start_index=start, replica_shift=start
        )
        for replicas in placed.values():
            assert len(set(replicas)) == factor
            assert len({racks[b] for b in replicas}) == min(factor, rack_count), replicas
        leaders = [r[0] for r in placed.values()]
        assert max(map(leaders.count, racks)) - min(map(leaders.count, racks)) <= 1


def test_racks_on_some_brokers_only_are_refused() -> None:
    with pytest.raises(InvalidReplicaAssignmentError, match=r"brokers 2, 3 have none"):
        assign_replicas([1, 2, 3], 3, 2, racks={1: "a", 2: None, 3: ""})
    # none at all: Kafka's rack-unaware placement, as before
    assert assign_replicas([1, 2, 3], 2, 2, racks={}, start_index=0, replica_shift=0) == {
        0: [1, 2],
        1: [2, 3],
    }
