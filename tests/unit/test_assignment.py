from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.controller.assignment import assign_replicas
from protocol.errors import InvalidPartitionsError, InvalidReplicationFactorError


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
