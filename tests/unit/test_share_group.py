"""A share group's membership (KIP-932's ShareGroupHeartbeat) and its ``simple`` assignor."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.coordinator.share_group import ShareGroup, assign_simple
from protocol.consumer_group_log import TopicInfo
from protocol.errors import (
    FencedMemberEpochError,
    GroupMaxSizeReachedError,
    InvalidRequestError,
    UnknownMemberIdError,
)

T1, T2 = b"\x01" * 16, b"\x02" * 16


def _group(topics: dict[str, TopicInfo], **kwargs: int) -> ShareGroup:
    return ShareGroup("g", lambda: topics, **kwargs)


def test_members_join_and_split_the_partitions() -> None:
    group = _group({"jobs": TopicInfo(T1, 4)})
    a = group.heartbeat("a", 0, 0, subscribed=["jobs"])
    assert (a.epoch, a.assignment) == (group.epoch, {T1: frozenset({0, 1, 2, 3})})
    assert group.state == "Stable"
    b = group.heartbeat("b", 0, 10, subscribed=["jobs"])
    assert len(b.assignment[T1]) == 2
    # a learns of the new split at its next heartbeat, and keeps half of what it had
    a2 = group.heartbeat("a", a.epoch, 20)
    assert a2.epoch == b.epoch == group.assignment_epoch
    assert a2.assignment[T1] | b.assignment[T1] == frozenset(range(4))
    assert not a2.assignment[T1] & b.assignment[T1]
    # nothing changed: no assignment sent
    assert group.heartbeat("a", a2.epoch, 30).assignment is None


def test_more_members_than_partitions_share_them() -> None:
    group = _group({"jobs": TopicInfo(T1, 2)})
    for m in "abcde":
        group.heartbeat(m, 0, 0, subscribed=["jobs"])
    answers = {m: group.heartbeat(m, group.members[m].epoch, 1) for m in "abcde"}
    assigned = {m: group.members[m].assigned[T1] for m in "abcde"}
    assert all(len(parts) == 1 for parts in assigned.values())
    readers = [sum(1 for parts in assigned.values() if p in parts) for p in (0, 1)]
    assert sorted(readers) == [2, 3]
    assert all(a.epoch == group.epoch for a in answers.values())


def test_leaving_and_being_fenced_bump_the_epoch() -> None:
    group = _group({"jobs": TopicInfo(T1, 2)}, session_timeout_ms=100)
    group.heartbeat("a", 0, 0, subscribed=["jobs"])
    group.heartbeat("b", 0, 50, subscribed=["jobs"])
    epoch = group.epoch
    assert group.tick(99) == []
    assert group.tick(100) == ["a"]
    assert group.epoch == epoch + 1
    group.leave("b")
    assert group.epoch == epoch + 2 and group.state == "Empty"
    with pytest.raises(UnknownMemberIdError):
        group.leave("b")
    with pytest.raises(UnknownMemberIdError, match="rejoin"):
        group.heartbeat("b", 3, 200)


def test_epoch_checks() -> None:
    group = _group({"jobs": TopicInfo(T1, 2)})
    first = group.heartbeat("a", 0, 0, subscribed=["jobs"])
    group.heartbeat("b", 0, 0, subscribed=["jobs"])
    second = group.heartbeat("a", first.epoch, 1)
    # the previous epoch is taken (an answer lost), not an older or a newer one
    group.heartbeat("a", first.epoch, 2)
    with pytest.raises(FencedMemberEpochError):
        group.heartbeat("a", second.epoch + 1, 3)
    # a rejoin with the same id is taken and told everything
    again = group.heartbeat("a", 0, 4, subscribed=["jobs"])
    assert again.assignment is not None


@pytest.mark.parametrize(
    ("member", "epoch", "rack", "topics", "message"),
    [
        ("", 0, None, ["jobs"], "member id"),
        ("a", -2, None, ["jobs"], "-1 or more"),
        ("a", 0, " ", ["jobs"], "rack"),
        ("a", 0, None, None, "subscribe"),
        ("a", 0, None, [], "subscribe"),
    ],
)
def test_malformed_heartbeats(member, epoch, rack, topics, message) -> None:
    group = _group({"jobs": TopicInfo(T1, 2)})
    with pytest.raises(InvalidRequestError, match=message):
        group.heartbeat(member, epoch, 0, rack_id=rack, subscribed=topics)
    assert not group.members and group.epoch == 0


def test_group_max_size() -> None:
    group = _group({"jobs": TopicInfo(T1, 2)}, max_size=1)
    group.heartbeat("a", 0, 0, subscribed=["jobs"])
    with pytest.raises(GroupMaxSizeReachedError):
        group.heartbeat("b", 0, 0, subscribed=["jobs"])
    group.heartbeat("a", 0, 0, subscribed=["jobs"])  # a rejoin is no new member


def test_a_topic_made_or_grown_later_is_assigned() -> None:
    topics: dict[str, TopicInfo] = {}
    group = _group(topics)
    first = group.heartbeat("a", 0, 0, subscribed=["later"])
    assert first.assignment == {}
    topics["later"] = TopicInfo(T2, 1)
    assert group.topics_changed()
    got = group.heartbeat("a", first.epoch, 1)
    assert got.assignment == {T2: frozenset({0})} and got.epoch > first.epoch
    topics["later"] = TopicInfo(T2, 3)
    group.topics_changed()
    assert group.heartbeat("a", got.epoch, 2).assignment == {T2: frozenset({0, 1, 2})}


def test_subscription_change() -> None:
    group = _group({"x": TopicInfo(T1, 1), "y": TopicInfo(T2, 1)})
    first = group.heartbeat("a", 0, 0, subscribed=["x"])
    assert first.assignment == {T1: frozenset({0})}
    got = group.heartbeat("a", first.epoch, 1, subscribed=["y"])
    assert got.assignment == {T2: frozenset({0})}


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from("abcdefgh"),
        st.sets(st.sampled_from(["x", "y", "z"]), min_size=1),
        min_size=1,
    ),
    st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(0, 9)),
    st.dictionaries(
        st.sampled_from("abcdefgh"),
        st.dictionaries(st.sampled_from([b"x", b"y", b"z"]), st.frozensets(st.integers(0, 12))),
    ),
)
def test_simple_assignor_properties(members, sizes, previous) -> None:
    topics = {name: TopicInfo(name.encode(), n) for name, n in sizes.items()}
    out = assign_simple(members, topics, previous)
    assert set(out) == set(members)
    for name, info in topics.items():
        subscribers = [m for m, wanted in members.items() if name in wanted]
        if not subscribers or not info.partitions:
            assert all(info.topic_id not in a for a in out.values())
            continue
        counts = [len(out[m].get(info.topic_id, ())) for m in subscribers]
        readers = [
            sum(1 for m in subscribers if p in out[m].get(info.topic_id, ()))
            for p in range(info.partitions)
        ]
        assert all(r >= 1 for r in readers)  # every partition read
        if len(subscribers) <= info.partitions:
            assert all(r == 1 for r in readers)
            assert max(counts) - min(counts) <= 1
        else:
            assert all(c == 1 for c in counts)
            assert max(readers) - min(readers) <= 1
        for m in members:
            if name not in members[m]:
                assert info.topic_id not in out[m]
    # sticky: assigning again from its own result changes nothing
    assert assign_simple(members, topics, out) == out
