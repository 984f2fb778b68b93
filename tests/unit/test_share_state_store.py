"""Share groups' delivery state stored at the group's coordinator (KIP-932's persister):
the record in ``__consumer_offsets``, its reads and writes, fencing of an older leader,
and the state after the coordinator moves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.coordinator.offsets import OffsetStore
from protocol.apis import (
    DescribeShareGroupOffsetsRequest,
    ReadShareGroupStateRequest,
    ShareStateBatch,
    WriteShareGroupStateRequest,
)
from protocol.consumer_group_log import decode_consumer_group_key
from protocol.errors import FencedLeaderEpochError, GroupIdNotFoundError, NotCoordinatorError
from protocol.group_log import BadRecordError, decode_group_key, decode_key, encode_key
from protocol.share_state_log import (
    ShareStateKey,
    StoredShareState,
    decode_share_state_key,
    decode_share_state_value,
    encode_share_state_key,
    encode_share_state_value,
)
from tests.unit.test_coordinator_groups import OURS, _coordinator, _named

TID = b"\x07" * 16

_BATCHES = st.lists(
    st.tuples(
        st.integers(0, 2**62),
        st.integers(0, 2**62),
        st.sampled_from([0, 2, 4]),
        st.integers(0, 2**15 - 1),
    ),
    max_size=20,
).map(tuple)


@given(
    st.builds(
        ShareStateKey,
        st.text(max_size=40),
        st.binary(min_size=16, max_size=16),
        st.integers(0, 2**31 - 1),
    ),
    st.builds(StoredShareState, st.integers(-1, 2**31 - 1), st.integers(-1, 2**62), _BATCHES),
)
def test_the_record_round_trips(key: ShareStateKey, state: StoredShareState) -> None:
    assert decode_share_state_key(encode_share_state_key(key)) == key
    assert decode_share_state_value(encode_share_state_value(state)) == state


def test_the_key_is_none_of_the_other_records_and_they_are_not_it() -> None:
    key = encode_share_state_key(ShareStateKey("g", TID, 0))
    assert decode_key(key) is None
    assert decode_group_key(key) is None
    assert decode_consumer_group_key(key) is None
    assert decode_share_state_key(encode_key("g", "t", 0)) is None
    with pytest.raises(BadRecordError):
        decode_share_state_value(encode_share_state_value(StoredShareState(1, 0))[:-1] + b"x")
    with pytest.raises(BadRecordError):
        decode_share_state_key(key[:-1])


def test_the_offsets_store_keeps_the_latest_and_forgets_at_a_tombstone() -> None:
    store = OffsetStore()
    key = ShareStateKey("g", TID, 3)
    store.apply(encode_share_state_key(key), encode_share_state_value(StoredShareState(1, 5)))
    later = StoredShareState(2, 9, ((9, 9, 0, 2),))
    store.apply(encode_share_state_key(key), encode_share_state_value(later))
    assert store.share_states == {key: later}
    store.apply(encode_share_state_key(key), None)
    assert store.share_states == {}


def _write(
    epoch: int, start: int, *batches: tuple[int, int, int, int]
) -> WriteShareGroupStateRequest:
    return WriteShareGroupStateRequest(
        group_id=OURS,
        topic_id=TID,
        partition=0,
        leader_epoch=epoch,
        start_offset=start,
        state_batches=[
            ShareStateBatch(first_offset=a, last_offset=b, delivery_state=s, delivery_count=n)
            for a, b, s, n in batches
        ],
    )


def _read(epoch: int, group: str = OURS, start: int = -1) -> ReadShareGroupStateRequest:
    return ReadShareGroupStateRequest(
        group_id=group, topic_id=TID, partition=0, leader_epoch=epoch, start_offset=start
    )


async def test_reads_and_writes_at_the_coordinator_and_an_older_leader_fenced() -> None:
    coordinator, replicas = _coordinator()
    shares = coordinator.share_groups
    assert (await shares.read_state(_read(1))).start_offset == -1  # never stored
    assert (await shares.write_state(_write(1, 10, (12, 13, 2, 1)))).error_code == 0
    read = await shares.read_state(_read(2))  # a new leader: its epoch stored first
    assert (read.error_code, read.leader_epoch, read.start_offset) == (0, 1, 10)
    assert [
        (b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
        for b in read.state_batches
    ] == [(12, 13, 2, 1)]
    stale = await shares.write_state(_write(1, 14))
    assert stale.error_code == FencedLeaderEpochError.code
    assert (await shares.read_state(_read(1))).error_code == FencedLeaderEpochError.code
    assert (await shares.write_state(_write(2, 14))).error_code == 0
    # the coordinator moves: the next one has it from the log
    moved, _ = _coordinator(replicas)
    again = await moved.share_groups.read_state(_read(2))
    assert (again.start_offset, again.state_batches) == (14, [])
    assert (
        await moved.share_groups.write_state(_write(1, 15))
    ).error_code == FencedLeaderEpochError.code
    # a group coordinated elsewhere
    elsewhere = await shares.read_state(_read(1, _named("elsewhere", 1)))
    assert elsewhere.error_code == NotCoordinatorError.code


async def test_a_first_read_stores_the_start_and_fences_an_older_leader() -> None:
    coordinator, _ = _coordinator()
    shares = coordinator.share_groups
    first = await shares.read_state(_read(2, start=40))
    assert (first.leader_epoch, first.start_offset) == (-1, 40)
    # the leader it replaced, not yet told, may store nothing any more
    assert (await shares.write_state(_write(1, 41))).error_code == FencedLeaderEpochError.code
    again = await shares.read_state(_read(2, start=99))
    assert (again.leader_epoch, again.start_offset) == (2, 40)


async def test_deleting_a_share_group_deletes_its_states() -> None:
    coordinator, replicas = _coordinator()
    shares = coordinator.share_groups
    await shares.read_state(_read(1, start=50))
    assert shares.holds(OURS)  # (its membership gone with a moved coordinator)
    assert await shares.delete(OURS) is None
    assert not shares.holds(OURS)
    assert replicas.reload().share_states == {}
    fresh = await shares.read_state(_read(2, start=7))
    assert fresh.start_offset == 7


async def test_the_group_s_offsets_are_its_stored_starts_with_what_is_done_past_them() -> None:
    coordinator, _ = _coordinator()
    shares = coordinator.share_groups
    metadata = coordinator._metadata
    metadata.topic_ids = {**metadata.topic_ids, "t": TID}  # (the stand-in metadata has none)
    topic_id = coordinator._topics_now()["t"].topic_id
    state = WriteShareGroupStateRequest(
        group_id=OURS,
        topic_id=topic_id,
        partition=3,
        leader_epoch=1,
        start_offset=10,
        state_batches=[
            ShareStateBatch(first_offset=11, last_offset=12, delivery_state=2, delivery_count=1),
            ShareStateBatch(first_offset=13, last_offset=13, delivery_state=0, delivery_count=2),
            ShareStateBatch(first_offset=14, last_offset=16, delivery_state=4, delivery_count=5),
        ],
    )
    assert (await shares.write_state(state)).error_code == 0
    answer = shares.describe_offsets(DescribeShareGroupOffsetsRequest(group_id=OURS))
    assert [
        (
            t.topic,
            [(p.partition_index, p.start_offset, p.delivery_complete_count) for p in t.partitions],
        )
        for t in answer.topics
    ] == [("t", [(3, 10, 5)])]
    # a topic asked for that it has not read: its partitions, at -1
    asked = shares.describe_offsets(
        DescribeShareGroupOffsetsRequest(group_id=OURS, topics=["t", "u"])
    )
    assert [t.topic for t in asked.topics] == ["t"]  # ("u" is no topic here)
    unknown = shares.describe_offsets(DescribeShareGroupOffsetsRequest(group_id="nobody-here"))
    assert unknown.error_code in (GroupIdNotFoundError.code, NotCoordinatorError.code)
