"""A group of Kafka's new consumer protocol in ``__consumer_offsets``: its records in
Kafka 4.0's layouts (protocol/consumer_group_log.py), replayed into what a coordinator
that loads the partition builds the group from, and the group's changes as records
(ConsumerGroup.changes / restore). The fuzz moves the coordinator at any point of a
group's life: the group it rebuilds from the records is the group it had, and its
members go on from there, never consuming a partition twice."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.coordinator.consumer_group import ConsumerGroup
from broker.coordinator.offsets import OffsetStore
from protocol.consumer_group_log import (
    CONSUMER_GROUP_METADATA,
    CURRENT_MEMBER_ASSIGNMENT,
    MEMBER_METADATA,
    PARTITION_METADATA,
    TARGET_ASSIGNMENT_MEMBER,
    TARGET_ASSIGNMENT_METADATA,
    ConsumerGroupImage,
    ConsumerGroupKey,
    MemberAssignment,
    MemberSubscription,
    TopicInfo,
    decode_consumer_group_key,
    decode_consumer_group_value,
    encode_consumer_group_key,
    encode_consumer_group_value,
)
from protocol.group_log import BadRecordError, encode_group_key, encode_key
from tests.unit.test_consumer_group_protocol import (
    Client,
    Cluster,
    _client_beat,
    _consumed_once,
    _group,
    _join,
)

T = b"t" * 16
U = b"u" * 16


def _str16(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


# --- the records, byte for byte -----------------------------------------------------------


def test_keys_are_kafkas_a_type_then_the_group_and_member() -> None:
    member_key = ConsumerGroupKey(CURRENT_MEMBER_ASSIGNMENT, "g", "m-1")
    assert encode_consumer_group_key(member_key) == b"\x00\x08" + _str16("g") + _str16("m-1")
    group_key = ConsumerGroupKey(CONSUMER_GROUP_METADATA, "g")
    assert encode_consumer_group_key(group_key) == b"\x00\x03" + _str16("g")
    for key in (member_key, group_key):
        assert decode_consumer_group_key(encode_consumer_group_key(key)) == key
    # the other kinds of key in the topic are not these
    assert decode_consumer_group_key(encode_key("g", "t", 0)) is None
    assert decode_consumer_group_key(encode_group_key("g")) is None
    with pytest.raises(BadRecordError):
        decode_consumer_group_key(b"\x00\x05" + _str16("g"))  # a member's, without one
    with pytest.raises(ValueError):
        encode_consumer_group_key(ConsumerGroupKey(MEMBER_METADATA, "g"))


def test_a_current_assignment_value_is_kafkas_flexible_version_0() -> None:
    value = MemberAssignment(3, 2, 1, {T: frozenset({1})}, {U: frozenset({5, 0})})
    expected = (
        b"\x00\x00"  # version 0
        + struct.pack(">iib", 3, 2, 1)  # MemberEpoch, PreviousMemberEpoch, State
        + b"\x02" + T + b"\x02" + struct.pack(">i", 1) + b"\x00"  # [TopicPartitions], tags
        + b"\x02" + U + b"\x03" + struct.pack(">ii", 0, 5) + b"\x00"
        + b"\x00"  # the value's tagged fields: none
    )  # fmt: skip
    assert encode_consumer_group_value(CURRENT_MEMBER_ASSIGNMENT, value) == expected
    assert decode_consumer_group_value(CURRENT_MEMBER_ASSIGNMENT, expected) == value


def test_a_member_metadata_value_is_kafkas() -> None:
    value = MemberSubscription(
        "host-1", None, "client", "/10.0.0.1", ("a", "b"), None, 300, "range"
    )
    expected = (
        b"\x00\x00"
        + b"\x07host-1" + b"\x00"  # InstanceId, RackId (null)
        + b"\x07client" + b"\x0a/10.0.0.1"  # ClientId, ClientHost
        + b"\x03" + b"\x02a" + b"\x02b"  # SubscribedTopicNames
        + b"\x00"  # SubscribedTopicRegex (null)
        + struct.pack(">i", 300) + b"\x06range"  # RebalanceTimeoutMs, ServerAssignor
        + b"\x00"
    )  # fmt: skip
    assert encode_consumer_group_value(MEMBER_METADATA, value) == expected
    assert decode_consumer_group_value(MEMBER_METADATA, expected) == value


def test_every_value_round_trips_and_a_later_kafkas_tagged_field_is_skipped() -> None:
    values: dict[int, object] = {
        CONSUMER_GROUP_METADATA: 7,
        TARGET_ASSIGNMENT_METADATA: 6,
        PARTITION_METADATA: {"a": TopicInfo(T, 8), "b": TopicInfo(U, 1)},
        TARGET_ASSIGNMENT_MEMBER: {T: frozenset({0, 3}), U: frozenset({0})},
    }
    for kind, value in values.items():
        assert decode_consumer_group_value(kind, encode_consumer_group_value(kind, value)) == value
    # Kafka 4.1's group record carries MetadataHash as tag 0: a 4.0 reader skips it
    with_hash = struct.pack(">hi", 0, 7) + b"\x01\x00\x08" + struct.pack(">q", 12345)
    assert decode_consumer_group_value(CONSUMER_GROUP_METADATA, with_hash) == 7


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no version
        b"\x00\x01\x00\x00\x00\x07\x00",  # a version this build does not know
        b"\x00\x00\x00\x00",  # cut short
        b"\x00\x00\x00\x00\x00\x07\x00\xff",  # a byte after the value
    ],
)
def test_a_value_that_is_not_one_is_a_bad_record(data: bytes) -> None:
    with pytest.raises(BadRecordError):
        decode_consumer_group_value(CONSUMER_GROUP_METADATA, data)


def test_the_store_replays_records_and_tombstones_in_log_order() -> None:
    store = OffsetStore()

    def put(key: ConsumerGroupKey, value: object | None) -> None:
        data = None if value is None else encode_consumer_group_value(key.record_type, value)
        store.apply(encode_consumer_group_key(key), data)

    sub = MemberSubscription(client_id="c", subscribed=("t",), rebalance_timeout_ms=1)
    put(ConsumerGroupKey(MEMBER_METADATA, "g", "a"), sub)
    put(ConsumerGroupKey(MEMBER_METADATA, "g", "b"), sub)
    put(ConsumerGroupKey(CONSUMER_GROUP_METADATA, "g"), 2)
    put(ConsumerGroupKey(TARGET_ASSIGNMENT_MEMBER, "g", "a"), {T: frozenset({0})})
    put(ConsumerGroupKey(MEMBER_METADATA, "g", "b"), None)
    put(ConsumerGroupKey(CONSUMER_GROUP_METADATA, "g"), 3)
    image = store.consumer_groups["g"]
    assert (image.epoch, set(image.members), image.targets) == (
        3,
        {"a"},
        {"a": {T: frozenset({0})}},
    )
    assert store.group_tombstones("g") == [
        *((encode_consumer_group_key(k), None) for k in image.keys("g")),
        (encode_group_key("g"), None),
    ]
    assert [k.record_type for k in image.keys("g")] == [8, 7, 5, 6, 4, 3]  # Kafka's order
    put(ConsumerGroupKey(CONSUMER_GROUP_METADATA, "g"), None)  # the group's last tombstone
    assert "g" not in store.consumer_groups
    put(ConsumerGroupKey(MEMBER_METADATA, "h", "x"), None)  # a tombstone of nothing
    assert "h" not in store.consumer_groups


# --- a group's changes as records, and back ---------------------------------------------------


def _written(group: ConsumerGroup, log: list[tuple[bytes, bytes | None]]) -> int:
    """The group's changes appended to ``log`` as the coordinator writes them (bytes)."""
    changes = group.changes()
    for key, value in changes:
        data = None if value is None else encode_consumer_group_value(key.record_type, value)
        log.append((encode_consumer_group_key(key), data))
    return len(changes)


def _reloaded(log: list[tuple[bytes, bytes | None]], cluster: Cluster, now: int) -> ConsumerGroup:
    """What a coordinator that loads the log builds (from the bytes, as a load does)."""
    store = OffsetStore()
    for key, value in log:
        store.apply(key, value)
    group = _group(cluster)
    group.restore(store.consumer_groups.get("g", ConsumerGroupImage()), now)
    return group


def _state(group: ConsumerGroup) -> dict[str, object]:
    members = {
        m.member_id: (
            m.instance_id,
            m.client_id,
            m.rebalance_timeout_ms,
            m.subscribed,
            m.regex,
            m.server_assignor,
            m.epoch,
            m.previous_epoch,
            m.state,
            m.assigned,
            m.pending,
        )
        for m in group.members.values()
    }
    return {
        "epoch": group.epoch,
        "assignment_epoch": group.assignment_epoch,
        "topics": group.subscribed_topics,
        "members": members,
        "targets": {m: group.target.get(m, {}) for m in group.members},
        "owners": group.owners,
        "instances": group._instances,
    }


def test_a_join_writes_kafkas_records_and_a_steady_heartbeat_none() -> None:
    cluster = Cluster(t=4)
    group = _group(cluster)
    _join(group, "a", ["t"])
    kinds = [(k.record_type, k.member_id) for k, _ in group.changes()]
    assert kinds == [(5, "a"), (3, None), (4, None), (7, "a"), (6, None), (8, "a")]
    a = group.members["a"]
    group.heartbeat("a", a.epoch, 0, owned=dict(a.assigned))
    assert group.changes() == []  # nothing changed: nothing to write
    group.leave("a", -1, None)
    kinds = [(k.record_type, k.member_id) for k, v in group.changes() if v is None]
    assert kinds == [(8, "a"), (7, "a"), (5, "a")]  # its records go; the group stays


def _act(
    rng: random.Random, cluster: Cluster, group: ConsumerGroup, clients: dict[str, Client], now: int
) -> None:
    """One thing happens to the group: a join, a heartbeat (acted on late, maybe), a
    leave, a static member leaving for now, a fence, a topic growing."""
    action = rng.random()
    member = rng.choice([f"m{i}" for i in range(4)] + ["s"])
    static = "host-s" if member == "s" else None
    held = group.members.get(member)
    if held is None or (static and held.epoch == -2 and action < 0.5):
        if action < 0.6:
            clients[member] = Client()
            topics = rng.choice([["t"], ["t", "u"], ["u"]])
            answer = _join(group, member, topics, now=now, instance_id=static)
            clients[member].owns = answer.assignment or {}
    elif held.epoch == -2:
        return  # away for now: only its return (or its session's end) changes it
    elif action < 0.08:
        group.leave(member, -1, static)
        del clients[member]
    elif action < 0.12 and static:
        group.leave(member, -2, static)
        clients[member] = Client()  # it stopped consuming; its partitions wait for it
    elif action < 0.16:
        group.fence(member)
        del clients[member]
    elif action < 0.2 and cluster.topics["u"].partitions < 9:
        cluster.topics = {**cluster.topics, "u": TopicInfo(U, cluster.topics["u"].partitions + 1)}
        group.topics_changed()
    else:
        _client_beat(group, clients, member, now, slow=rng.random() < 0.4)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_a_group_rebuilt_from_its_records_is_the_group_at_any_point(seed: int) -> None:
    rng = random.Random(seed)
    cluster = Cluster(t=rng.randint(1, 6), u=rng.randint(0, 4))
    group = _group(cluster, assignor_names=(rng.choice(["uniform", "range"]),))
    clients: dict[str, Client] = {}
    log: list[tuple[bytes, bytes | None]] = []
    now = 0
    moves = 0
    for _ in range(60):
        now += 100
        _act(rng, cluster, group, clients, now)
        _written(group, log)
        reloaded = _reloaded(log, cluster, now)
        assert _state(reloaded) == _state(group)
        if rng.random() < 0.15:  # the coordinator moves: the members go on with the new one
            group, moves = reloaded, moves + 1
            assert _written(group, log) == 0  # (the rebuilt group owes the log nothing)
        _consumed_once(group, clients)
    for _ in range(8):  # left alone, all heartbeating: everything subscribed, once
        now += 100
        for member, held in list(group.members.items()):
            if held.epoch == -2:
                continue
            _client_beat(group, clients, member, now, slow=False)
            _written(group, log)
            _consumed_once(group, clients)
    assert _state(_reloaded(log, cluster, now)) == _state(group)
    away = {  # a static member's, kept for it while it is away: what it held, and its
        # target, wait for it (or for its session to end), as in Kafka
        (t, p)
        for m in group.members.values()
        if m.epoch == -2
        for held in (m.assigned, m.pending, group.target.get(m.member_id, {}))
        for t, ps in held.items()
        for p in ps
    }
    every = {
        (cluster.topics[n].topic_id, p)
        for n in group.subscribed_topic_names()
        for p in range(cluster.topics[n].partitions)
    }
    if any(m.epoch != -2 for m in group.members.values()):  # (someone to run the assignor)
        assert _consumed_once(group, clients) | away == every


def test_a_rebuilt_members_regex_gives_no_new_topic_until_it_says_who_it_is() -> None:
    cluster = Cluster(t=2)
    group = _group(cluster)
    group.heartbeat("a", 0, 0, rebalance_timeout_ms=1, regex="t.*", owned={})
    log: list[tuple[bytes, bytes | None]] = []
    _written(group, log)
    cluster.topics = {**cluster.topics, "tx": TopicInfo(b"x" * 16, 1)}
    reloaded = _reloaded(log, cluster, 0)
    assert reloaded.subscribed_topic_names() == {"t"}  # whose DESCRIBE is not known yet
    a = reloaded.members["a"]
    reloaded.heartbeat("a", a.epoch, 0, owned=dict(a.assigned), describable=lambda t: True)
    assert reloaded.subscribed_topic_names() == {"t", "tx"}


# --- review 128 -------------------------------------------------------------------------------

# record 4: Kafka 4.0's PartitionMetadata is a regular field

# Kafka 4.0's ConsumerGroupPartitionMetadataValue v0, one topic "t" (8 partitions), no racks:
# Topics [TopicId, TopicName, NumPartitions, PartitionMetadata [] (a regular field), tags], tags
KAFKA_40_RECORD_4 = (
    b"\x00\x00"  # version 0
    + b"\x02"  # Topics: 1
    + T + b"\x02t" + struct.pack(">i", 8)
    + b"\x01"  # PartitionMetadata: empty (Kafka 4.0 writes [] when no rack is known)
    + b"\x00"  # TopicMetadata's tagged fields
    + b"\x00"  # the value's tagged fields
)  # fmt: skip


def test_record_4_is_read_as_kafka_40_writes_it() -> None:
    assert decode_consumer_group_value(PARTITION_METADATA, KAFKA_40_RECORD_4) == {
        "t": TopicInfo(T, 8)
    }


def test_record_4_is_written_as_kafka_40_reads_it() -> None:
    value = {"t": TopicInfo(T, 8)}
    assert encode_consumer_group_value(PARTITION_METADATA, value) == KAFKA_40_RECORD_4


# subscribed_topic_names() (offsets expiry, OffsetDelete) hid a topic's growth from the group


def test_a_rebuilt_group_asked_its_topics_first_still_sees_a_topic_grew() -> None:
    cluster = Cluster(t=2)
    group = _group(cluster)
    _join(group, "a", ["t"])
    log: list[tuple[bytes, bytes | None]] = []
    _written(group, log)
    cluster.topics = {"t": TopicInfo(T, 3)}  # grew while the coordinator moved
    reloaded = _reloaded(log, cluster, 0)
    reloaded.subscribed_topic_names()  # an offsets expiry (Stable group) or OffsetDelete asks
    a = reloaded.members["a"]
    answer = reloaded.heartbeat("a", a.epoch, 0, owned=dict(a.assigned))
    assert reloaded.subscribed_topics["t"].partitions == 3
    assert answer.assignment == {T: frozenset(range(3))}


def test_asking_a_groups_topics_does_not_hide_a_growth_from_topics_changed() -> None:
    cluster = Cluster(t=2)
    group = _group(cluster)
    _join(group, "a", ["t"])
    cluster.topics = {"t": TopicInfo(T, 3)}
    group.subscribed_topic_names()  # asked before the (now deferred) topics_changed task runs
    assert group.topics_changed()
