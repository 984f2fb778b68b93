"""Which committed offsets expire (KIP-211, offsets.retention.minutes): the pure rules."""

from broker.coordinator.expiry import expired_offsets
from broker.coordinator.group import EMPTY, PREPARING, STABLE, Group
from protocol.group_log import OffsetAndMetadata

DAY = 24 * 3600 * 1000
WEEK = 7 * DAY
NOW = 100 * DAY


def _offsets(**committed_days_ago: int) -> dict[tuple[str, int], OffsetAndMetadata]:
    return {
        (topic, 0): OffsetAndMetadata(5, -1, None, NOW - days * DAY)
        for topic, days in committed_days_ago.items()
    }


def _group(state: str, protocol_type: str | None = "consumer", emptied_days_ago: int = -1) -> Group:
    group = Group("g", lambda: 0)
    group.state, group.protocol_type = state, protocol_type
    group.emptied_at_ms = NOW - emptied_days_ago * DAY if emptied_days_ago >= 0 else -1
    return group


def _expired(
    group: Group | None, offsets: dict, subscribed: set[str] | None = None, **kw: object
) -> list:
    return expired_offsets(
        group, offsets, now_ms=NOW, retention_ms=WEEK, subscribed=lambda _: subscribed, **kw
    )


def test_without_a_live_group_each_offset_expires_a_retention_after_its_commit() -> None:
    offsets = _offsets(old=8, fresh=6, edge=7)
    assert _expired(None, offsets) == [("edge", 0), ("old", 0)]
    assert _expired(_group(EMPTY, protocol_type=None), offsets) == [("edge", 0), ("old", 0)]
    assert _expired(None, offsets, held={("old", 0)}) == [("edge", 0)]  # being written


def test_an_empty_groups_offsets_expire_a_retention_after_it_emptied() -> None:
    offsets = _offsets(a=30, b=1)
    assert _expired(_group(EMPTY, emptied_days_ago=8), offsets) == [("a", 0), ("b", 0)]
    assert _expired(_group(EMPTY, emptied_days_ago=6), offsets) == []  # commits are older
    # when it emptied is not known (stored by an older build): from each commit
    assert _expired(_group(EMPTY), offsets) == [("a", 0)]


def test_a_stable_consumer_group_loses_only_the_topics_it_no_longer_subscribes_to() -> None:
    offsets = _offsets(read=30, dropped=30, recent=1)
    stable = _group(STABLE)
    assert _expired(stable, offsets, subscribed={"read", "recent"}) == [("dropped", 0)]
    assert _expired(stable, offsets, subscribed=None) == []  # a subscription unreadable
    assert _expired(_group(STABLE, protocol_type="connect"), offsets, subscribed=set()) == []
    assert _expired(_group(PREPARING), offsets, subscribed=set()) == []  # rebalancing


def test_an_offset_with_its_own_expire_time_expires_then() -> None:
    # OffsetCommit v2-v4's retention time: Kafka's old semantics for that offset, when
    # the group's offsets may go at all
    own = {("t", 0): OffsetAndMetadata(5, -1, None, NOW - 1000, NOW - 1)}
    assert _expired(None, own) == [("t", 0)]  # not a week: its own time
    assert _expired(_group(EMPTY, emptied_days_ago=0), own) == [("t", 0)]
    later = {("t", 0): OffsetAndMetadata(5, -1, None, NOW - 30 * DAY, NOW + 1)}
    assert _expired(None, later) == []  # not yet, though committed a month ago
    assert _expired(_group(PREPARING), own) == []  # rebalancing: nothing goes
