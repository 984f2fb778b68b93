"""The consumer's side of KIP-320 without a socket: the leader epoch of what was read,
fencing by the metadata's leader epoch, and the check of a position after a leader
change (the real brokers' case is in tests/integration/test_truncation_detection.py)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from types import SimpleNamespace
from typing import Any

import pytest

from client import Consumer
from client.errors import LogTruncationError
from client.fetcher import FetchPosition, Subscription
from client.types import TopicPartition
from protocol.apis import (
    ApiKey,
    EpochEndOffset,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderTopicResult,
)
from protocol.errors import FencedLeaderEpochError, OffsetOutOfRangeError
from protocol.records import encode_batch
from protocol.records.control import encode_end_txn_marker
from protocol.topic_id import ZERO_TOPIC_ID

TP = TopicPartition("t", 0)
LEADERS = {TP: 1}


def _batch(base: int, count: int, epoch: int) -> bytes:
    data = bytearray(
        encode_batch(
            [(None, f"v{base + i}".encode(), None, 1000) for i in range(count)], base_offset=base
        )
    )
    struct.pack_into(">i", data, 12, epoch)  # partitionLeaderEpoch: outside the CRC
    return bytes(data)


def _asked(sub: Subscription, epochs: dict[TopicPartition, int] | None = None) -> FetchPosition:
    sets = sub.fetchable_by_leader(time.monotonic() * 1000, dict(LEADERS), epochs=epochs)
    return sets[1].positions[TP]


def _read(sub: Subscription, base: int, count: int, epoch: int) -> None:
    """Fetch and take ``count`` records written under ``epoch``."""
    asked = _asked(sub)
    assert sub.add_fetched(asked, _batch(base, count, epoch)) > 0
    assert len(sub.take(None, None)[TP]) == count


def _subscription(position: int = 0) -> Subscription:
    sub = Subscription(max_buffer_bytes=1 << 20)
    sub.assign([TP])
    sub.seek(TP, position)
    return sub


def test_the_position_carries_the_epoch_of_what_was_read() -> None:
    sub = _subscription()
    state = sub.states[TP]
    assert state.epoch == -1  # a seek: not known, never checked
    _read(sub, 0, 3, epoch=4)
    assert (state.position, state.epoch) == (3, 4)
    _read(sub, 3, 2, epoch=6)
    assert (state.position, state.epoch) == (5, 6)
    # a transaction marker the user never sees moves the position, and its epoch
    marker = encode_end_txn_marker(
        producer_id=9, producer_epoch=0, committed=True, coordinator_epoch=0, timestamp_ms=1000
    )
    struct.pack_into(">q", marker, 0, 5)  # base offset 5 and epoch 7: outside the CRC
    struct.pack_into(">i", marker, 12, 7)
    assert sub.add_fetched(_asked(sub), bytes(marker)) == 0
    assert (state.position, state.epoch) == (6, 7)
    sub.seek(TP, 2)
    assert state.epoch == -1


def test_a_new_leader_epoch_holds_the_partition_until_its_position_is_checked() -> None:
    sub = _subscription()
    asked = _asked(sub, {TP: 3})
    assert asked.leader_epoch == 3  # what the Fetch says as current_leader_epoch
    assert sub.add_fetched(asked, _batch(0, 4, epoch=3)) > 0
    assert len(sub.take(None, 2)[TP]) == 2  # two read, two buffered
    state = sub.states[TP]
    generation = state.generation

    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 5})
    assert state.validating and state.leader_epoch == 5
    assert not state.chunks and state.fetch_offset == 2  # the old leader's data dropped
    assert sub.take(None, None) == {}
    assert sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 5}) == {}
    [(tp, pending)] = sub.needs_validation(time.monotonic() * 1000)
    assert tp == TP and pending.position == 2 and pending.epoch == 3
    assert pending.generation != generation  # an answer from before is dropped

    # an older view (a broker whose metadata lags) changes nothing
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 1}, epochs={TP: 4})
    assert state.leader_epoch == 5 and state.validating

    sub.validated(TP)
    sets = sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 5})
    again = sets[2].positions[TP]
    assert (again.offset, again.leader_epoch) == (2, 5)


def test_a_position_of_unknown_epoch_is_not_checked_but_the_fetch_says_the_new_epoch() -> None:
    sub = _subscription(7)
    first = _asked(sub, {TP: 1})
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 1}, epochs={TP: 2})
    state = sub.states[TP]
    assert not state.validating
    again = sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 1}, epochs={TP: 2})
    asked = again[1].positions[TP]
    assert asked is not first and (asked.offset, asked.leader_epoch) == (7, 2)


def test_a_committed_offset_with_its_epoch_is_checked_before_the_first_fetch() -> None:
    sub = Subscription(max_buffer_bytes=1 << 20)
    sub.assign([TP])
    sub.fetchable_by_leader(time.monotonic() * 1000, dict(LEADERS), epochs={TP: 8})
    state = sub.states[TP]
    assert sub.set_reset_position(TP, 40, state.generation, epoch=6)
    assert state.validating and state.epoch == 6
    assert [tp for tp, _ in sub.needs_validation(time.monotonic() * 1000)] == [TP]
    # without an epoch (an old commit), nothing to check
    sub.assign([])
    sub.assign([TP])
    fresh = sub.states[TP]
    assert sub.set_reset_position(TP, 40, fresh.generation, epoch=-1)
    assert not fresh.validating


# --- the consumer ----------------------------------------------------------------------


class _Meta:
    def __init__(self, leader: int | None, epoch: int) -> None:
        self.leader, self.epoch = leader, epoch
        self.topic_errors: dict[str, Any] = {}
        self.brokers = {1: None, 2: None}

    def leaders(self) -> dict[TopicPartition, int]:
        return {} if self.leader is None else {TP: self.leader}

    def leader_epochs(self) -> dict[TopicPartition, int]:
        return {TP: self.epoch}

    def leader_for(self, tp: TopicPartition) -> int | None:
        return self.leader


class _Leader:
    """Answers OffsetsForLeaderEpoch from a script."""

    def __init__(self, answers: list[Any]) -> None:
        self.metadata = _Meta(2, 5)
        self.answers = answers
        self.asked: list[OffsetForLeaderEpochRequest] = []
        self.refreshes = 0

    def request_refresh(self) -> None:
        self.refreshes += 1

    async def send(self, node: int, api_key: ApiKey, request: Any, **kw: Any) -> Any:
        assert api_key is ApiKey.OFFSET_FOR_LEADER_EPOCH and node == 2
        self.asked.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return OffsetForLeaderEpochResponse(
            topics=[OffsetForLeaderTopicResult(topic="t", partitions=[answer])]
        )


def _ends(epoch: int, end: int, error: int = 0) -> EpochEndOffset:
    return EpochEndOffset(partition=0, leader_epoch=epoch, end_offset=end, error_code=error)


def _running(cluster: _Leader, reset: str) -> Consumer:
    """A consumer as start() leaves it, on ``cluster``, with ``TP`` assigned."""
    consumer = Consumer(bootstrap_servers="unused:1", auto_offset_reset=reset)
    consumer._cluster = cluster  # type: ignore[assignment]
    consumer._state = "running"
    consumer._data = asyncio.Event()
    consumer._wakeup = asyncio.Event()
    consumer._subscription.assign([TP])
    return consumer


def _consumer(cluster: _Leader, reset: str) -> Consumer:
    """A consumer that read offsets 0-9 under leader epoch 3, now told of epoch 5."""
    consumer = _running(cluster, reset)
    sub = consumer._subscription
    sub.seek(TP, 0)
    asked = _asked(sub, {TP: 3})
    sub.add_fetched(asked, _batch(0, 10, epoch=3))
    assert len(sub.take(None, None)[TP]) == 10
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 5})
    return consumer


async def _check(consumer: Consumer, now_ms: float | None = None) -> None:
    """What the fetcher's pass starts: a validation task per leader, run to its end."""
    consumer._start_validations(time.monotonic() * 1000 if now_ms is None else now_ms)
    assert consumer._validators
    await asyncio.gather(*consumer._validators.values())


async def test_a_position_the_new_leader_holds_is_fetched_on() -> None:
    cluster = _Leader([_ends(3, 12)])
    consumer = _consumer(cluster, "earliest")
    await _check(consumer)
    [request] = cluster.asked
    [part] = request.topics[0].partitions
    assert (part.current_leader_epoch, part.leader_epoch) == (5, 3)
    assert request.replica_id == -1  # a consumer, not a follower
    state = consumer._subscription.states[TP]
    assert not state.validating and (state.position, state.epoch) == (10, 3)
    sets = consumer._subscription.fetchable_by_leader(
        time.monotonic() * 1000, {TP: 2}, epochs={TP: 5}
    )
    fetch = consumer._part(sets[2].positions[TP])
    assert (fetch.fetch_offset, fetch.current_leader_epoch) == (10, 5)


async def test_a_truncated_log_moves_the_position_to_where_it_parted() -> None:
    cluster = _Leader([_ends(3, 6)])
    consumer = _consumer(cluster, "latest")
    await _check(consumer)
    state = consumer._subscription.states[TP]
    assert not state.validating and (state.position, state.epoch) == (6, 3)
    sets = consumer._subscription.fetchable_by_leader(
        time.monotonic() * 1000, {TP: 2}, epochs={TP: 5}
    )
    assert sets[2].positions[TP].offset == 6


async def test_with_no_reset_allowed_a_truncated_log_raises_until_the_user_seeks() -> None:
    cluster = _Leader([_ends(3, 6), _ends(3, 6)])
    consumer = _consumer(cluster, "none")
    await _check(consumer)
    with pytest.raises(LogTruncationError) as caught:
        consumer._take((), None)
    assert isinstance(caught.value, OffsetOutOfRangeError)  # Kafka's class hierarchy
    assert caught.value.divergent_offsets == {TP: 6}
    assert "position 10" in str(caught.value) and "seek() to 6" in str(caught.value)
    assert consumer._subscription.states[TP].position == 10  # not moved by itself
    await _check(consumer)  # asked again: the same answer, the same error
    with pytest.raises(LogTruncationError):
        consumer._take((), None)
    consumer.seek(TP, 6)
    state = consumer._subscription.states[TP]
    assert not state.validating and state.position == 6
    assert consumer._subscription.needs_validation(time.monotonic() * 1000) == []


async def test_a_leader_behind_the_metadata_is_asked_again_after_a_back_off() -> None:
    cluster = _Leader([_ends(-1, -1, FencedLeaderEpochError.code), _ends(3, 10)])
    consumer = _consumer(cluster, "none")
    await _check(consumer)
    state = consumer._subscription.states[TP]
    assert state.validating and cluster.refreshes == 1
    assert consumer._subscription.needs_validation(time.monotonic() * 1000) == []  # backing off
    later = time.monotonic() * 1000 + consumer.retry_backoff_ms + 1
    assert consumer._subscription.next_retry_ms(time.monotonic() * 1000) is not None
    await _check(consumer, later)
    assert not state.validating and state.position == 10


async def test_a_leader_with_no_epochs_leaves_it_to_auto_offset_reset() -> None:
    cluster = _Leader([_ends(-1, -1)])
    consumer = _consumer(cluster, "earliest")
    await _check(consumer)
    state = consumer._subscription.states[TP]
    assert state.position is None and state.reset_by_policy  # the reset looks it up


async def test_commit_sends_the_leader_epoch_of_each_position() -> None:
    committed: list[Any] = []

    class _Offsets:
        async def commit(self, offsets: dict[TopicPartition, int], **kw: Any) -> None:
            committed.append((offsets, kw.get("epochs")))

    consumer = _consumer(_Leader([_ends(3, 12)]), "earliest")
    await _check(consumer)
    consumer._offsets = _Offsets()  # type: ignore[assignment]
    consumer.group_id = "g"
    await consumer.commit()
    assert committed == [({TP: 10}, {TP: 3})]
    await consumer.commit({TP: 4})  # offsets the user names: no epoch known
    assert committed[-1] == ({TP: 4}, {})


def test_a_lower_epoch_after_a_refusal_ends_a_check_under_way() -> None:
    """A check of an old topic's position against a topic made again under its name
    would find "truncation" at the new log's end, past its records: the lower epoch
    taken after the leader's refusal ends the check (an offset out of range resets)."""
    sub = _subscription()
    _read(sub, 0, 3, epoch=7)
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 1}, epochs={TP: 8})
    state = sub.states[TP]
    assert state.validating
    sub.epoch_refused(TP)
    sets = sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 0})
    assert not state.validating and sub.needs_validation(time.monotonic() * 1000) == []
    assert (sets[2].positions[TP].offset, sets[2].positions[TP].leader_epoch) == (3, 0)
    assert state.epoch == 7  # kept: a move up again is checked
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 1}, epochs={TP: 9})
    assert state.validating


def test_a_lower_epoch_is_followed_only_after_the_leader_refused_ours() -> None:
    """A recreated topic's epochs start over: once its leader answers UNKNOWN_LEADER_EPOCH,
    the metadata's lower epoch is taken (unchecked); before that, a lagging view's is not."""
    sub = _subscription()
    _read(sub, 0, 3, epoch=7)
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 1}, epochs={TP: 7})
    state = sub.states[TP]
    state.validating = False  # (as if checked)
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 0})
    assert state.leader_epoch == 7
    sub.epoch_refused(TP)
    sets = sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 1}, epochs={TP: 0})
    assert state.leader_epoch == 0 and not state.validating
    assert sets[1].positions[TP].leader_epoch == 0
    # once only: a later lower view is a lagging one again
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 2})
    assert state.leader_epoch == 2 and state.validating  # up again: checked
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 1}, epochs={TP: 1})
    assert state.leader_epoch == 2


class _Gated(_Leader):
    """Holds the OffsetsForLeaderEpoch request until ``gate`` opens."""

    def __init__(self, answers: list[Any]) -> None:
        super().__init__(answers)
        self.gate = asyncio.Event()
        self.sent = asyncio.Event()

    async def send(self, node: int, api_key: ApiKey, request: Any, **kw: Any) -> Any:
        self.sent.set()
        await self.gate.wait()
        return await super().send(node, api_key, request, **kw)


async def test_an_answer_about_a_partition_given_up_meanwhile_does_not_apply_to_it_again() -> None:
    """(Found in review.) A partition given up and taken again (a rebalance, assign())
    gets a new state, whose generations count from 0 again: an answer about the old
    position must not land on the new one (it moved it back: records delivered again)."""
    cluster = _Gated([_ends(3, 6)])  # the leader's log parts at 6 from what was read to 10
    consumer = _running(cluster, "earliest")
    sub = consumer._subscription
    assert sub.set_reset_position(TP, 10, 0, epoch=3)  # the group's commit: 10, epoch 3
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 5})
    pending = sub.needs_validation(time.monotonic() * 1000)
    assert [tp for tp, _ in pending] == [TP]
    consumer._start_validations(time.monotonic() * 1000)
    (task,) = consumer._validators.values()
    await cluster.sent.wait()
    sub.assign([])  # a rebalance takes it away and gives it back, committed at 20 now
    sub.assign([TP])
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 5})
    fresh = sub.states[TP]
    assert sub.set_reset_position(TP, 20, fresh.generation, epoch=5)
    assert fresh.validating and fresh.generation == pending[0][1].generation
    cluster.gate.set()
    await task
    assert fresh.position == 20 and fresh.validating  # to be checked itself


async def test_a_slow_leader_holds_up_only_its_own_partitions() -> None:
    """A validation task per leader: one that does not answer leaves the other leader's
    partitions free to be checked, and a partition already being asked about is not asked
    again meanwhile."""
    other = TopicPartition("t", 1)

    class _TwoLeaders(_Leader):
        def __init__(self) -> None:
            super().__init__([_ends(3, 12)])
            self.slow = asyncio.Event()

        async def send(self, node: int, api_key: ApiKey, request: Any, **kw: Any) -> Any:
            if node == 1:
                await self.slow.wait()  # never answers, in this test
            return await super().send(2, api_key, request, **kw)

    cluster = _TwoLeaders()
    cluster.metadata.leader_for = lambda tp: 1 if tp == other else 2  # type: ignore[method-assign]
    consumer = _consumer(cluster, "earliest")
    sub = consumer._subscription
    sub.assign([TP, other])
    sub.seek(other, 0)
    sub.states[other].epoch = 3  # read under epoch 3 (as _consumer's partition)
    sub._validate(other, sub.states[other])
    consumer._start_validations(time.monotonic() * 1000)
    assert set(consumer._validators) == {1, 2}
    await consumer._validators[2]
    assert not sub.states[TP].validating  # answered by its own leader
    consumer._start_validations(time.monotonic() * 1000)
    assert set(consumer._validators) == {1}  # the slow one is not asked twice
    slow = consumer._validators[1]
    slow.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await slow
    assert not consumer._checking  # (asked again at the next pass)


def test_commit_takes_offsets_offset_and_metadata_and_aiokafkas_tuples() -> None:
    from client.coordinator import commit_topics
    from client.types import OffsetAndMetadata

    other = TopicPartition("t", 1)
    third = TopicPartition("u", 0)
    (t, u) = commit_topics(
        {TP: 5, other: (7, "seven"), third: OffsetAndMetadata(9, "nine", 4)}, {TP: 2, other: 3}
    )
    got = {
        (topic.name, p.partition_index): (
            p.committed_offset,
            p.committed_metadata,
            p.committed_leader_epoch,
        )
        for topic in (t, u)
        for p in topic.partitions
    }
    assert got == {
        ("t", 0): (5, "", 2),
        ("t", 1): (7, "seven", 3),
        ("u", 0): (9, "nine", 4),  # its own epoch wins
    }
    (listed,) = commit_topics({TP: [5, "m"]})  # type: ignore[dict-item]
    assert listed.partitions[0].committed_metadata == "m"
    for bad in (-1, "5", (5, 6), 5.0, (5, "m", "x"), (), (1, "a", 2, 3)):
        with pytest.raises(ValueError, match="is not an offset"):
            commit_topics({TP: bad})  # type: ignore[dict-item]


async def test_a_partition_whose_leader_moved_is_asked_at_the_new_one_at_once() -> None:
    """(Found in review.) The leader asked hangs and the partition moves to another: it
    is asked there at once, not after the hung request times out."""

    class _Hung(_Leader):
        async def send(self, node: int, api_key: ApiKey, request: Any, **kw: Any) -> Any:
            if node == 1:
                await asyncio.Event().wait()
            return await super().send(2, api_key, request, **kw)

    cluster = _Hung([_ends(5, 12)])
    cluster.metadata.leader = 1
    consumer = _consumer(cluster, "earliest")
    sub = consumer._subscription
    consumer._start_validations(time.monotonic() * 1000)
    assert set(consumer._validators) == {1}
    await asyncio.sleep(0)
    cluster.metadata.leader = 2  # failover: node 2 leads under epoch 6
    sub.fetchable_by_leader(time.monotonic() * 1000, {TP: 2}, epochs={TP: 6})
    consumer._start_validations(time.monotonic() * 1000)
    try:
        assert set(consumer._validators) == {1, 2}
        await consumer._validators[2]
        assert not sub.states[TP].validating
    finally:
        hung = consumer._validators.get(1)
        if hung is not None:
            hung.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hung
    assert consumer._checking == {}


class _Views:
    """The consumer's metadata: a view per change, with the topic's id and leader epoch."""

    def __init__(self) -> None:
        self.metadata: Any = None
        self.refreshes = 0
        self.coming: tuple[bytes | None, int] | None = None  # what a refresh shows

    def show(self, topic_id: bytes | None, epoch: int) -> None:
        from client.cluster import TopicMetadata

        topics = {} if topic_id is None else {"t": TopicMetadata("t", {}, topic_id=topic_id)}
        self.metadata = SimpleNamespace(
            topics=topics, topic_errors={}, leader_epochs=lambda: {TP: epoch}
        )

    def request_refresh(self) -> None:
        self.refreshes += 1

    async def refresh(self) -> None:
        self.refreshes += 1
        if self.coming is not None:
            self.show(*self.coming)


OLD_ID, NEW_ID = b"\x01" * 16, b"\x02" * 16


def _watching(reset: str, position: int, epoch: int) -> tuple[_Views, Consumer, Subscription]:
    """A consumer of ``TP`` at ``position``, its metadata showing the topic's first id."""
    views = _Views()
    consumer = Consumer(bootstrap_servers="unused:1", auto_offset_reset=reset)
    consumer._cluster = views  # type: ignore[assignment]
    sub = consumer._subscription
    sub.assign([TP])
    sub.seek(TP, position)
    views.show(OLD_ID, epoch)
    consumer._follow_topic_ids()
    return views, consumer, sub


@pytest.mark.parametrize("reset", ["earliest", "none"])
def test_a_topic_made_again_under_its_name_is_read_by_auto_offset_reset(reset: str) -> None:
    """The metadata gives the topic another id (KIP-516): the position is the old topic's.
    auto_offset_reset chooses it again (``none``: the user is told, and the partition has
    no position until a seek), as for a position out of range; before, a position inside
    the new log read on from there, past the new topic's first records (Kafka's consumer
    does so). Its leader epochs start over: the new view's lower one is taken as it is,
    with no check. A view without an id, without the topic, or with the old id again (a
    broker whose metadata lags) changes nothing."""
    views, consumer, sub = _watching(reset, 0, 5)
    old, new = OLD_ID, NEW_ID
    _asked(sub, epochs={TP: 5})
    _read(sub, 0, 20, epoch=5)
    for shown in (None, ZERO_TOPIC_ID, old):  # deleted; an older broker's view; as before
        views.show(shown, 5)
        consumer._follow_topic_ids()
        assert sub.states[TP].position == 20
    views.show(new, 0)  # made again
    consumer._follow_topic_ids()
    state = sub.states[TP]
    assert state.position is None and not sub.fetchable_by_leader(
        time.monotonic() * 1000, dict(LEADERS), epochs={TP: 0}
    )  # nothing asked at the old position, no check of the old epoch
    assert not state.validating and state.leader_epoch == 0  # the new view's, as it is
    if reset == "none":
        assert isinstance(state.error, OffsetOutOfRangeError)
        assert "deleted and made again" in str(state.error)
        assert sub.needs_position() == []  # held for the user: no silent reset
    else:
        assert state.error is None and state.reset_by_policy
        assert sub.needs_position() == [TP]
    sub.seek(TP, 3)  # (as the reset, or the user, would)
    views.show(old, 5)  # a lagging broker's view: the old id is not a change again
    consumer._follow_topic_ids()
    views.show(new, 0)
    consumer._follow_topic_ids()
    assert sub.states[TP].position == 3 and sub.states[TP].error is None


def test_a_topic_given_back_by_a_rebalance_takes_no_lagging_view_for_its_id() -> None:
    """An eager rebalance takes the assignment away and gives it back: the topic's old id
    stays known, so a lagging broker's view with it is not taken for the topic's id,
    and the next view's (the new one) does not reset the position the group gave."""
    views, consumer, sub = _watching("earliest", 0, 5)
    views.show(NEW_ID, 0)  # made again: the position is reset
    consumer._follow_topic_ids()
    sub.assign([])  # the rebalance takes the partition away...
    consumer._follow_topic_ids()
    sub.assign([TP])  # ...and gives it back, at the group's committed offset
    sub.seek(TP, 7)
    views.show(OLD_ID, 5)  # the first view after it, from a broker behind
    consumer._follow_topic_ids()
    views.show(NEW_ID, 0)
    consumer._follow_topic_ids()
    assert sub.states[TP].position == 7 and not sub.states[TP].reset_by_policy
    assert consumer._topic_ids["t"] == NEW_ID


async def test_a_position_lost_out_of_range_takes_the_new_id_in_before_its_reset() -> None:
    """From a review: the topic made again between two Fetches, the position out of range
    there was reset from the new topic before the consumer's metadata showed the new id;
    the view that did, minutes later, reset that position a second time (every record
    since read twice). A lost position now has the metadata refreshed, and the id taken
    in, before auto_offset_reset chooses it."""
    views = _Views()
    consumer = Consumer(bootstrap_servers="unused:1", auto_offset_reset="earliest")
    consumer._cluster = views  # type: ignore[assignment]
    sub = consumer._subscription
    sub.assign([TP])
    sub.seek(TP, 20)
    views.show(b"\x01" * 16, 0)
    consumer._follow_topic_ids()
    consumer._position_lost(TP, "offset 20 is out of range")  # (a Fetch's answer)
    views.coming = (b"\x02" * 16, 0)
    assert await consumer._ids_before_reset(sub.needs_position()) == [TP]
    assert views.refreshes == 1
    sub.set_reset_position(TP, 0, sub.states[TP].generation)  # (the reset's ListOffsets)
    views.show(b"\x02" * 16, 0)  # a later view
    consumer._follow_topic_ids()
    assert sub.states[TP].position == 0


async def test_a_view_that_comes_while_a_reset_waits_is_looked_at_before_it_applies() -> None:
    """From a review: the reset's ListOffsets answered from the new topic while the view
    its wait brought in showed the new id, and the offset was applied, to be reset again
    by the next look (duplicates under earliest). And with auto_offset_reset='none' no
    position is chosen, so no metadata is asked for before one (the user's every poll
    that raises would have asked)."""
    views, consumer, sub = _watching("earliest", 20, 0)
    consumer._position_lost(TP, "offset 20 is out of range")

    async def list_offsets(timestamps: dict[TopicPartition, int]) -> dict[Any, Any]:
        views.show(NEW_ID, 0)  # the view a retry inside the lookup brought in
        return dict.fromkeys(timestamps, (15, -1))  # (the new topic's answer)

    consumer._list_offsets = list_offsets  # type: ignore[method-assign]
    await consumer._reset_positions()
    assert sub.states[TP].position is None and sub.needs_position() == [TP]  # chosen again
    assert consumer._topic_ids["t"] == NEW_ID

    strict = Consumer(bootstrap_servers="unused:1", auto_offset_reset="none")
    strict._cluster = views  # type: ignore[assignment]
    strict._subscription.assign([TP])
    strict._subscription.request_reset(TP)
    before = views.refreshes
    assert await strict._ids_before_reset([TP]) == [TP]
    assert views.refreshes == before
