"""Fetch sessions (KIP-227): the fetcher's builder, the broker's cache, and a leader that
answers incremental fetches with only what changed, without losing what a follower must
hear (records, high watermarks, errors) or what the leader must learn (the follower's
position on every partition of its session, idle ones included, for the ISR)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from broker.deferred import Deferred
from broker.log import Log, LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica import fetcher as fetcher_module
from broker.replica import manager as replica_manager
from broker.replica.fetch_session import FetchSessionCache
from broker.replica.fetcher import ReplicaFetcher, _Followed
from broker.replica.manager import ReplicaManager
from broker.replica.partition import Partition
from protocol.apis import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    EpochEndOffset,
    FetchForgottenTopic,
    FetchPartition,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    FetchTopicResponse,
    LeaderAndIsrPartitionState,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderTopicResult,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
)
from protocol.errors import (
    FencedLeaderEpochError,
    FetchSessionIdNotFoundError,
    InvalidFetchSessionEpochError,
    KafkaStorageError,
    NotLeaderOrFollowerError,
    UnknownTopicOrPartitionError,
)
from protocol.fetch_session import FetchSessionBuilder
from protocol.records import encode_batch

FOLLOWER = 2


def _p(index: int, offset: int = 0, epoch: int = 1) -> FetchPartition:
    return FetchPartition(
        partition=index,
        current_leader_epoch=epoch,
        fetch_offset=offset,
        partition_max_bytes=1 << 20,
    )


def _request(
    partitions: list[FetchPartition],
    *,
    session_id: int = INVALID_SESSION_ID,
    epoch: int = INITIAL_EPOCH,
    forgotten: list[int] | None = None,
    replica_id: int = FOLLOWER,
    max_wait_ms: int = 30_000,
) -> FetchRequest:
    return FetchRequest(
        replica_id=replica_id,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        session_id=session_id,
        session_epoch=epoch,
        topics=[FetchTopic(topic="t", partitions=partitions)] if partitions else [],
        forgotten_topics_data=[FetchForgottenTopic(topic="t", partitions=forgotten)]
        if forgotten
        else [],
    )


def _answered(response: FetchResponse) -> dict[int, tuple[int, int, int]]:
    """partition -> (error code, high watermark, record bytes), for what the answer holds."""
    return {
        p.partition_index: (p.error_code, p.high_watermark, len(p.records or b""))
        for t in response.topics
        for p in t.partitions
    }


# --- the fetcher's side -----------------------------------------------------------------


def test_the_builder_sends_everything_first_then_only_what_changed() -> None:
    builder = FetchSessionBuilder()
    wanted = {("t", i): _p(i) for i in range(4)}
    first = builder.build(wanted)
    assert (first.full, first.session_id, first.session_epoch) == (True, 0, INITIAL_EPOCH)
    assert [p.partition for p in first.topics[0].partitions] == [0, 1, 2, 3]
    builder.answered(first, FetchResponse(session_id=77))

    wanted[("t", 2)] = _p(2, offset=5)  # it got records: its position moved
    del wanted[("t", 3)]  # no longer followed from this leader
    wanted[("u", 0)] = FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1)
    second = builder.build(wanted)
    assert (second.full, second.session_id, second.session_epoch) == (False, 77, 1)
    assert [(t.topic, [p.partition for p in t.partitions]) for t in second.topics] == [
        ("t", [2]),
        ("u", [0]),
    ]
    assert [(f.topic, f.partitions) for f in second.forgotten] == [("t", [3])]
    builder.answered(second, FetchResponse(session_id=77))

    third = builder.build(wanted)  # nothing moved: an empty incremental request
    assert (third.session_epoch, third.topics, third.forgotten) == (2, [], [])


def test_the_builder_starts_over_after_a_failure_and_without_a_session() -> None:
    builder = FetchSessionBuilder()
    wanted = {("t", 0): _p(0)}
    builder.answered(builder.build(wanted), FetchResponse(session_id=9))
    builder.build(wanted)
    builder.reset()  # the request failed: the broker may or may not have taken it
    again = builder.build(wanted)
    # full, and naming the old session: the broker drops it rather than keep it
    assert (again.full, again.session_id, again.session_epoch) == (True, 9, INITIAL_EPOCH)
    builder.answered(again, FetchResponse(session_id=INVALID_SESSION_ID))  # it keeps none
    still = builder.build(wanted)
    assert still.full and still.session_id == 0
    assert [p.partition for p in still.topics[0].partitions] == [0]


def test_the_builder_closes_its_session_once() -> None:
    builder = FetchSessionBuilder()
    assert builder.close() is None  # no session yet: nothing to close
    builder.answered(builder.build({("t", 0): _p(0)}), FetchResponse(session_id=12))
    closing = builder.close()
    assert closing is not None
    assert (closing.session_id, closing.session_epoch, closing.topics) == (12, FINAL_EPOCH, [])
    assert builder.close() is None
    again = builder.build({("t", 0): _p(0)})  # a new one, not naming the closed one
    assert (again.full, again.session_id) == (True, INVALID_SESSION_ID)
    builder.answered(again, FetchResponse(session_id=13))
    builder.reset()  # a failed fetch: the session is left behind...
    left = builder.close()  # ...and closed all the same
    assert left is not None and left.session_id == 13


def test_the_builder_compares_only_the_keys_it_is_told_changed() -> None:
    """A follower of many partitions, few of them moving, says which entries it replaced,
    added or dropped: only those are compared (the rest were sent as they are)."""
    builder = FetchSessionBuilder()
    wanted = {("t", i): _p(i) for i in range(6)}
    builder.answered(builder.build(wanted), FetchResponse(session_id=5))
    wanted[("t", 1)] = _p(1, offset=3)
    del wanted[("t", 4)]
    wanted[("t", 9)] = _p(9)
    step = builder.build(wanted, [("t", 1), ("t", 4), ("t", 9), ("t", 2)])  # t-2: unchanged
    assert [p.partition for p in step.topics[0].partitions] == [1, 9]
    assert [(f.topic, f.partitions) for f in step.forgotten] == [("t", [4])]
    builder.answered(step, FetchResponse(session_id=5))
    assert builder.build(wanted, []).topics == []


def test_an_answer_naming_a_partition_the_session_should_not_hold_starts_it_over() -> None:
    """Found when a follower lost track of a deleted topic's partition: its leader kept it
    in the session, answered its error at once on every fetch, and the two brokers spun
    at 50% CPU each, as the fetcher never said to forget it. Now the answer shows the
    disagreement, and the next request is full (a new session holding what is wanted)."""
    builder = FetchSessionBuilder()
    wanted = {("t", 0): _p(0)}
    assert builder.answered(builder.build(wanted), FetchResponse(session_id=5))
    step = builder.build(wanted, [])
    stray = FetchTopicResponse(
        topic="gone",
        partitions=[
            FetchPartitionData(partition_index=0, error_code=UnknownTopicOrPartitionError.code)
        ],
    )
    assert not builder.answered(step, FetchResponse(session_id=5, topics=[stray]))
    again = builder.build(wanted, [])
    assert (again.full, again.session_id, again.session_epoch) == (True, 5, INITIAL_EPOCH)
    assert [p.partition for p in again.topics[0].partitions] == [0]


# --- the broker's cache -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def test_the_cache_checks_ids_epochs_and_the_owner() -> None:
    cache = FetchSessionCache(10)
    context = cache.context(_request([_p(0), _p(1)]))
    session_id = context.session_id
    assert session_id != INVALID_SESSION_ID and not context.incremental
    with pytest.raises(FetchSessionIdNotFoundError):
        cache.context(_request([], session_id=session_id + 1, epoch=1))
    with pytest.raises(FetchSessionIdNotFoundError):  # another replica's session
        cache.context(_request([], session_id=session_id, epoch=1, replica_id=3))
    with pytest.raises(InvalidFetchSessionEpochError):
        cache.context(_request([], session_id=session_id, epoch=2))
    step = cache.context(_request([_p(1, offset=4)], session_id=session_id, epoch=1, forgotten=[0]))
    assert step.incremental
    assert [(sp.index, sp.fetch_offset) for sp in step.partitions] == [(1, 4)]
    with pytest.raises(InvalidFetchSessionEpochError):  # epoch 1 again: a repeated request
        cache.context(_request([], session_id=session_id, epoch=1))
    closing = cache.context(_request([_p(0)], session_id=session_id, epoch=FINAL_EPOCH))
    assert closing.session_id == INVALID_SESSION_ID and session_id not in cache.sessions


def test_a_session_sweeps_its_idle_partitions_a_share_per_fetch() -> None:
    """Every partition is looked at about once per sweep_ms, spread over the fetches by
    the time between them: not all of them in one fetch (which stalled the leader)."""
    clock = Clock()
    cache = FetchSessionCache(10, sweep_ms=100, clock=clock)
    session_id = cache.context(_request([_p(i) for i in range(8)])).session_id
    seen: list[int] = []
    for epoch in range(1, 5):
        clock.now += 25  # a quarter of the sweep: a quarter of the partitions
        step = cache.context(_request([_p(7, offset=epoch)], session_id=session_id, epoch=epoch))
        assert step.partitions[0].index == 7  # what the request names comes first
        swept = [sp.index for sp in step.partitions[1:]]
        assert len(swept) <= 2
        seen += swept
    assert sorted(seen) == [0, 1, 2, 3, 4, 5, 6]  # 7 was named each time
    clock.now += 1  # a fetch right after another: its share rounds down to none yet
    step = cache.context(_request([], session_id=session_id, epoch=5))
    assert step.partitions == []
    clock.now += 10_000  # a long wait: one whole round at most, not several
    step = cache.context(_request([], session_id=session_id, epoch=6))
    assert sorted(sp.index for sp in step.partitions) == list(range(8))


def test_a_full_cache_evicts_idle_sessions_then_consumers_for_followers() -> None:
    clock = Clock()
    cache = FetchSessionCache(2, clock=clock)
    consumer = cache.context(_request([_p(0)], replica_id=-1)).session_id
    follower = cache.context(_request([_p(0)])).session_id
    assert consumer and follower
    # full, nothing idle: another consumer goes without a session
    assert cache.context(_request([_p(0)], replica_id=-1)).session_id == INVALID_SESSION_ID
    # a follower takes a consumer's place
    other = cache.context(_request([_p(0)], replica_id=3)).session_id
    assert other and consumer not in cache.sessions and cache.evictions.value == 1
    clock.now += 120_000  # both idle 2 minutes: the least recently used goes
    cache.context(_request([], session_id=other, epoch=1, replica_id=3))  # used again
    newest = cache.context(_request([_p(0)], replica_id=-1)).session_id
    assert newest and follower not in cache.sessions and other in cache.sessions
    assert FetchSessionCache(0).context(_request([_p(0)])).session_id == INVALID_SESSION_ID


# --- a leader answering sessions ----------------------------------------------------------


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[ReplicaManager]:
    """Broker 1 leads t-0..t-3, broker 2 follows them all (both in the ISR)."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    # replica.lag.time.max.ms 400: the sessions look at idle partitions every 100 ms
    manager = ReplicaManager(1, logs, MetadataCache(), load, replica_lag_time_max_ms=400)
    await manager.become_leader_or_follower(
        [
            LeaderAndIsrPartitionState(
                topic_name="t",
                partition_index=i,
                controller_epoch=1,
                leader=1,
                leader_epoch=1,
                isr=[1, FOLLOWER],
                replicas=[1, FOLLOWER],
            )
            for i in range(4)
        ]
    )
    yield manager
    await manager.shutdown()
    logs.shutdown()


def _produce(manager: ReplicaManager, index: int) -> None:
    batch = encode_batch([(None, b"v", None, 1000)])
    manager.produce(
        ProduceRequest(
            acks=1,
            timeout_ms=1000,
            topics=[
                ProduceTopic(name="t", partitions=[ProducePartition(index=index, records=batch)])
            ],
        )
    )


def _now(response: object) -> FetchResponse:
    assert isinstance(response, FetchResponse), response
    return response


async def test_an_incremental_fetch_is_answered_with_what_changed_and_parks_otherwise(
    leader: ReplicaManager,
) -> None:
    _produce(leader, 1)
    full = _now(leader.fetch(_request([_p(i) for i in range(4)])))
    session = full.session_id
    assert session != INVALID_SESSION_ID
    assert _answered(full) == {0: (0, 0, 0), 1: (0, 0, 69), 2: (0, 0, 0), 3: (0, 0, 0)}

    # the follower took t-1's record (its position moved to 1): the leader's high
    # watermark moves, and only t-1 has news (a move alone does not end a follower's
    # wait, as in Kafka: asked with no wait, it is answered at once)
    moved = _request([_p(1, offset=1)], session_id=session, epoch=1, max_wait_ms=0)
    assert _answered(_now(leader.fetch(moved))) == {1: (0, 1, 0)}

    # nothing new anywhere: it parks until an append to any partition of the session
    parked = leader.fetch(_request([], session_id=session, epoch=2))
    assert isinstance(parked, Deferred) and not parked.done
    _produce(leader, 3)
    assert parked.done and _answered(parked.result()) == {3: (0, 0, 69)}

    # t-3 is no longer led here: its error comes though the follower did not name it
    await leader.become_leader_or_follower(
        [
            LeaderAndIsrPartitionState(
                topic_name="t",
                partition_index=3,
                controller_epoch=1,
                leader=FOLLOWER,
                leader_epoch=2,
                isr=[1, FOLLOWER],
                replicas=[1, FOLLOWER],
            )
        ]
    )
    after = _now(leader.fetch(_request([], session_id=session, epoch=3)))
    assert _answered(after) == {3: (NotLeaderOrFollowerError.code, -1, 0)}
    forgotten = leader.fetch(_request([], session_id=session, epoch=4, forgotten=[3]))
    assert isinstance(forgotten, Deferred) and not forgotten.done  # nothing left to say
    forgotten.cancel()


async def test_a_fetch_looks_only_at_what_moved_and_at_idle_partitions_every_sweep(
    leader: ReplicaManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower names only what moved; the leader looks only at those and at the
    partitions an event marked, so a session's idle partitions cost nothing per fetch.
    Every sweep (a quarter of replica.lag.time.max.ms) a fetch looks at them all and
    counts as news of them: else an idle partition's follower, which fetches all the
    time, would fall out of the ISR."""
    clock = Clock()  # the sessions' and the followers' time, moved by hand
    leader.fetch_sessions._clock = clock
    monkeypatch.setattr(replica_manager, "_now_ms", clock)
    first = _request([_p(i) for i in range(4)], max_wait_ms=0)
    session = _now(leader.fetch(first)).session_id
    looked: list[int] = []
    real = leader._leader_partition

    def counting(topic: str, index: int) -> object:
        looked.append(index)
        return real(topic, index)

    monkeypatch.setattr(leader, "_leader_partition", counting)
    idle = leader.partitions[TopicPartition("t", 2)]
    before = idle.followers[FOLLOWER].last_caught_up_ms

    _produce(leader, 0)
    looked.clear()  # the produce's own
    answer = _now(leader.fetch(_request([], session_id=session, epoch=1)))
    assert set(_answered(answer)) == {0} and looked == [0]  # marked by the append
    assert idle.followers[FOLLOWER].last_caught_up_ms == before

    clock.now += 100  # the sweep interval (a quarter of replica.lag.time.max.ms 400)
    looked.clear()
    moved = _request([_p(0, offset=1)], session_id=session, epoch=2, max_wait_ms=0)
    swept = _now(leader.fetch(moved))
    assert set(_answered(swept)) == {0}  # its high watermark moved; the rest have no news
    assert sorted(looked) == [0, 1, 2, 3]
    assert idle.followers[FOLLOWER].last_caught_up_ms > before


async def test_a_partition_cut_off_by_the_response_budget_comes_in_the_next_answer(
    leader: ReplicaManager,
) -> None:
    """t-2's records did not fit the first answer's max_bytes; the follower does not name
    t-2 next (its position did not move), and nothing new is appended: the leader must
    still send them."""
    _produce(leader, 1)
    _produce(leader, 2)
    first = _request([_p(i) for i in range(4)], max_wait_ms=0)
    first.max_bytes = 100  # one 69-byte batch fits (the first always does), not two
    answer = _now(leader.fetch(first))
    assert {i: size for i, (_e, _hw, size) in _answered(answer).items()} == {
        0: 0,
        1: 69,
        2: 0,
        3: 0,
    }
    step = _request([_p(1, offset=1)], session_id=answer.session_id, epoch=1, max_wait_ms=0)
    assert _answered(_now(leader.fetch(step)))[2][2] == 69


async def test_a_partition_named_again_is_answered_in_full(leader: ReplicaManager) -> None:
    """The leader takes what it sent as known; a fetcher that dropped an answer (the
    partition re-added meanwhile, or a seek) names the partition again and must learn the
    high watermark it missed, though nothing changed since."""
    _produce(leader, 1)
    full = _now(leader.fetch(_request([_p(i) for i in range(4)], max_wait_ms=0)))
    moved = _request([_p(1, offset=1)], session_id=full.session_id, epoch=1, max_wait_ms=0)
    assert _answered(_now(leader.fetch(moved))) == {1: (0, 1, 0)}
    again = _request([_p(1, offset=1)], session_id=full.session_id, epoch=2, max_wait_ms=0)
    assert _answered(_now(leader.fetch(again))) == {1: (0, 1, 0)}


def test_a_full_request_naming_its_old_session_closes_it() -> None:
    """A fetcher that starts over names the session it had, so the broker drops it at
    once instead of keeping it (and marking it on every append) until it is evicted;
    only its owner can."""
    cache = FetchSessionCache(10)
    old = cache.context(_request([_p(0)])).session_id
    other = cache.context(_request([_p(0)], session_id=old, replica_id=3)).session_id
    assert old in cache.sessions  # another replica's request does not close it
    new = cache.context(_request([_p(0)], session_id=old)).session_id
    assert old not in cache.sessions and set(cache.sessions) == {other, new}


async def test_a_follower_that_drops_part_of_an_answer_starts_a_new_session() -> None:
    """A partition re-added while its fetch was out (it truncates first) drops its answer;
    the leader takes it as told, so the follower's next fetch is full."""
    fetcher = ReplicaFetcher(2, 1, "127.0.0.1", 9)  # never reaches it: nothing followed yet
    try:
        readded = _Followed(cast(Partition, None), leader_epoch=2)  # not truncated yet
        fetcher._followed[TopicPartition("t", 0)] = readded
        fetcher._session.session_id, fetcher._session.epoch = 44, 3
        answer = FetchResponse(
            topics=[
                FetchTopicResponse(topic="t", partitions=[FetchPartitionData(partition_index=0)])
            ]
        )
        await fetcher._take(answer)
        assert fetcher._session.session_id == INVALID_SESSION_ID
        again = fetcher._session.build({})
        assert (again.full, again.session_id) == (True, 44)  # closing the old one
    finally:
        fetcher._followed.clear()
        await fetcher.close()


async def test_a_follower_reads_again_only_the_positions_that_may_have_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its next fetch is built from the partitions answered, added, removed or truncated
    since the last one, not from a pass over every partition it follows; a position
    moved with no such event (its own retention moving the log start) is caught by the
    sweep, which reads each of them again about once per period."""
    fetcher = ReplicaFetcher(FOLLOWER, 1, "127.0.0.1", 9)  # its loop has nothing to do yet
    logs = [Log.open(tmp_path / f"t-{i}", LogConfig()) for i in range(4)]
    sent: list[FetchRequest] = []
    answers: list[FetchResponse] = []

    async def leader(api_key: object, request: FetchRequest, version: object = None) -> object:
        sent.append(request)
        return answers.pop(0)

    monkeypatch.setattr(fetcher._peer, "request", leader)
    try:
        for i, log in enumerate(logs):
            partition = Partition(
                topic="t", index=i, log=log, local_broker_id=FOLLOWER, leader_id=1, leader_epoch=1
            )
            fetcher._followed[TopicPartition("t", i)] = _Followed(partition, 1, truncated=True)
            fetcher._stale.add(TopicPartition("t", i))
        batch = encode_batch([(None, b"v", None, 1000)])
        answers.append(
            FetchResponse(
                session_id=7,
                topics=[
                    FetchTopicResponse(
                        topic="t",
                        partitions=[
                            FetchPartitionData(
                                partition_index=2, high_watermark=1, records=memoryview(batch)
                            )
                        ],
                    )
                ],
            )
        )
        await fetcher._fetch()
        assert sorted(p.partition for p in sent[-1].topics[0].partitions) == [0, 1, 2, 3]
        assert logs[2].log_end_offset == 1
        assert fetcher._stale == {TopicPartition("t", 2)}  # answered: only it is read again

        answers.append(FetchResponse(session_id=7))
        await fetcher._fetch()
        assert [(p.partition, p.fetch_offset) for p in sent[-1].topics[0].partitions] == [(2, 1)]

        logs[0].append(batch)
        logs[0].append(batch)
        logs[0].advance_log_start_offset(1)  # as our own retention or a DeleteRecords would
        answers.append(FetchResponse(session_id=7))
        await fetcher._fetch()
        assert sent[-1].topics == []  # no event said t-0 moved

        fetcher._sweep._last -= fetcher._sweep.period  # a sweep's period later: all read again
        answers.append(FetchResponse(session_id=7))
        await fetcher._fetch()
        (moved,) = sent[-1].topics[0].partitions
        assert (moved.partition, moved.fetch_offset, moved.log_start_offset) == (0, 2, 1)
    finally:
        fetcher._followed.clear()
        await fetcher.close()
        for log in logs:
            log.close()


@pytest.mark.parametrize("version", [1, None], ids=["truncation-round", "on-fetch"])
async def test_an_offline_follower_log_does_not_hold_up_the_others(
    tmp_path: Path, version: int | None
) -> None:
    """From a review: a follower log gone offline (EIO) could not truncate, and every
    partition followed from that leader waited behind it, for good. It is now left out:
    neither truncated nor fetched, while the others replicate (with a leader of Fetch
    v1, after a truncation round; with v2, they truncate on their fetches)."""
    fetcher = ReplicaFetcher(FOLLOWER, 1, "127.0.0.1", 9)
    fetcher._fetch_version = version
    logs = [Log.open(tmp_path / f"t-{i}", LogConfig()) for i in range(2)]
    batch = encode_batch([(None, b"v", None, 1000)])
    for log in logs:
        log.append(batch, leader_epoch=1)
        log.append(batch, leader_epoch=1)
    with pytest.raises(KafkaStorageError):
        logs[1]._go_offline(OSError(errno.EIO, "I/O error"), "appending to")
    fetched: list[FetchRequest] = []
    done = asyncio.Event()

    async def leader(api_key: object, request: object, version: object = None) -> object:
        if isinstance(request, FetchRequest):
            fetched.append(request)
            done.set()
            await asyncio.sleep(3600)  # parked
        partitions = [
            EpochEndOffset(partition=p.partition, leader_epoch=1, end_offset=1)
            for t in request.topics  # type: ignore[attr-defined]
            for p in t.partitions
        ]
        return OffsetForLeaderEpochResponse(
            topics=[OffsetForLeaderTopicResult(topic="t", partitions=partitions)]
        )

    fetcher._peer.request = leader  # type: ignore[method-assign]
    try:
        for i, log in enumerate(logs):
            fetcher.add(
                Partition(
                    topic="t",
                    index=i,
                    log=log,
                    local_broker_id=FOLLOWER,
                    leader_id=1,
                    leader_epoch=1,
                )
            )
        await asyncio.wait_for(done.wait(), 5)
        assert [p.partition for t in fetched[0].topics for p in t.partitions] == [0]
        if version == 1:
            assert logs[0].log_end_offset == 1  # truncated to the leader's end of epoch 1
        else:
            (asked,) = fetched[0].topics[0].partitions
            assert (asked.fetch_offset, asked.last_fetched_epoch) == (2, 1)
    finally:
        await fetcher.close()
        for log in logs:
            log.close()


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[ReplicaFetcher, list[Log]]]:
    """A follower's fetcher (to a leader it never dials: tests answer for it) and two
    logs, t-0 and t-1, not followed yet. The leader speaks Fetch v1, so a partition
    takes a truncation round first (see _epoch_ends: each log's one record, of epoch 1,
    goes)."""
    fetcher = ReplicaFetcher(FOLLOWER, 1, "127.0.0.1", 9)
    fetcher._fetch_version = 1
    logs = [Log.open(tmp_path / f"t-{i}", LogConfig()) for i in range(2)]
    for log in logs:
        log.append(encode_batch([(None, b"v", None, 1000)]), leader_epoch=1)
    yield fetcher, logs
    fetcher._followed.clear()
    await fetcher.close()
    for log in logs:
        log.close()


def _follow(fetcher: ReplicaFetcher, logs: list[Log]) -> None:
    for i, log in enumerate(logs):
        fetcher.add(
            Partition(
                topic="t", index=i, log=log, local_broker_id=FOLLOWER, leader_id=1, leader_epoch=1
            )
        )


def _epoch_ends(request: object, refused: set[int]) -> OffsetForLeaderEpochResponse:
    partitions = [
        EpochEndOffset(partition=p.partition, leader_epoch=1, end_offset=0)
        if p.partition not in refused
        else EpochEndOffset(
            partition=p.partition, error_code=UnknownTopicOrPartitionError.code, end_offset=-1
        )
        for t in request.topics  # type: ignore[attr-defined]
        for p in t.partitions
    ]
    return OffsetForLeaderEpochResponse(
        topics=[OffsetForLeaderTopicResult(topic="t", partitions=partitions)]
    )


def _named(request: FetchRequest) -> list[int]:
    return sorted(p.partition for t in request.topics for p in t.partitions)


async def test_a_partition_the_leader_does_not_know_yet_does_not_hold_up_the_others(
    two: tuple[ReplicaFetcher, list[Log]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new topic's follower may ask before its leader has heard of its role, and is
    refused. Only that partition backs off: the whole fetcher used to sleep, and every
    acks=all write through it waited 200 ms whenever a topic was created beside it."""
    monkeypatch.setattr(fetcher_module, "_BACKOFF_S", 3600.0)  # never over in this test
    fetcher, logs = two
    fetched: list[FetchRequest] = []
    done = asyncio.Event()

    async def leader(api_key: object, request: object, version: object = None) -> object:
        if isinstance(request, FetchRequest):
            fetched.append(request)
            done.set()
            await asyncio.sleep(3600)  # parked
        return _epoch_ends(request, refused={1})

    fetcher._peer.request = leader  # type: ignore[method-assign]
    _follow(fetcher, logs)
    await asyncio.wait_for(done.wait(), 5)
    assert _named(fetched[0]) == [0]
    assert fetcher._followed[TopicPartition("t", 1)].delayed


async def test_a_partition_refused_in_an_answer_backs_off_alone_then_is_fetched_again(
    two: tuple[ReplicaFetcher, list[Log]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """t-1's leader moved (NOT_LEADER_OR_FOLLOWER in the answer): the next fetch goes at
    once, for t-0 only, and t-1 is asked for again when its back-off is over."""
    monkeypatch.setattr(fetcher_module, "_BACKOFF_S", 0.05)
    fetcher, logs = two
    fetched: list[FetchRequest] = []
    done = asyncio.Event()
    batch = encode_batch([(None, b"v", None, 1000)])

    async def leader(api_key: object, request: object, version: object = None) -> object:
        if not isinstance(request, FetchRequest):
            return _epoch_ends(request, refused=set())
        fetched.append(request)
        if len(fetched) == 1:
            answered = [
                FetchPartitionData(partition_index=0, high_watermark=1, records=memoryview(batch)),
                FetchPartitionData(partition_index=1, error_code=NotLeaderOrFollowerError.code),
            ]
            return FetchResponse(
                session_id=9, topics=[FetchTopicResponse(topic="t", partitions=answered)]
            )
        if 1 in _named(request):
            done.set()
            await asyncio.sleep(3600)  # parked
        await asyncio.sleep(0.01)  # parked a while, then nothing new
        return FetchResponse(session_id=9)

    fetcher._peer.request = leader  # type: ignore[method-assign]
    _follow(fetcher, logs)
    await asyncio.wait_for(done.wait(), 5)
    assert _named(fetched[0]) == [0, 1]
    assert _named(fetched[1]) == [0]  # at once, t-0 from its new log end
    assert fetched[1].topics[0].partitions[0].fetch_offset == 1
    assert [p for t in fetched[1].forgotten_topics_data for p in t.partitions] == [1]
    assert 1 in _named(fetched[-1])  # back after its back-off
    assert logs[0].log_end_offset == 1


async def test_a_fetcher_left_with_nothing_to_fetch_still_forgets_what_it_dropped(
    two: tuple[ReplicaFetcher, list[Log]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its only partition from a leader was removed (a topic deleted): with nothing to
    fetch it waits, and the fetch that follows must still tell the leader to forget that
    partition; one left in the session kept being answered at once with its error."""
    fetcher, logs = two
    fetcher._task.cancel()  # this test makes the fetches itself
    partitions = [
        Partition(
            topic="t", index=i, log=log, local_broker_id=FOLLOWER, leader_id=1, leader_epoch=1
        )
        for i, log in enumerate(logs)
    ]
    sent: list[FetchRequest] = []

    async def leader(api_key: object, request: FetchRequest, version: object = None) -> object:
        sent.append(request)
        return FetchResponse(session_id=7)

    monkeypatch.setattr(fetcher._peer, "request", leader)
    fetcher._followed[TopicPartition("t", 0)] = _Followed(partitions[0], 1, truncated=True)
    fetcher._stale.add(TopicPartition("t", 0))
    await fetcher._fetch()
    assert _named(sent[-1]) == [0]

    fetcher.remove(TopicPartition("t", 0))
    fetcher._changed.clear()
    waiting = asyncio.get_running_loop().create_task(fetcher._fetch())
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(sent) == 1  # nothing to ask for: no fetch

    fetcher._followed[TopicPartition("t", 1)] = _Followed(partitions[1], 1, truncated=True)
    fetcher._stale.add(TopicPartition("t", 1))
    fetcher._changed.set()
    await asyncio.wait_for(waiting, 5)
    await fetcher._fetch()
    assert _named(sent[-1]) == [1]
    assert [(f.topic, f.partitions) for f in sent[-1].forgotten_topics_data] == [("t", [0])]


async def test_a_partition_re_added_while_its_truncation_was_asked_is_asked_again(
    two: tuple[ReplicaFetcher, list[Log]],
) -> None:
    """t-0 is removed and followed again, at the same epoch, while the leader is asked
    where its epoch ends: the answer was for the old follow and must not settle the new
    one (the same fields, but a new follow), which asks again."""
    fetcher, logs = two
    asked: list[object] = []
    first_out, release, second = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def leader(api_key: object, request: object, version: object = None) -> object:
        if isinstance(request, FetchRequest):
            await asyncio.sleep(3600)  # parked
        asked.append(request)
        if len(asked) == 1:
            first_out.set()
            await release.wait()
        else:
            second.set()
        return _epoch_ends(request, refused=set())

    fetcher._peer.request = leader  # type: ignore[method-assign]
    _follow(fetcher, logs[:1])
    await asyncio.wait_for(first_out.wait(), 5)
    tp = TopicPartition("t", 0)
    fetcher.remove(tp)
    _follow(fetcher, logs[:1])
    release.set()
    await asyncio.wait_for(second.wait(), 5)
    assert fetcher._followed[tp].truncated


@pytest.mark.parametrize("answer", ["records", "fenced"])
async def test_an_answer_to_an_earlier_follow_is_dropped_when_truncating_on_fetch(
    tmp_path: Path, answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: with Fetch v2 a new follow fetches at once (no truncation round
    first), so "not truncated yet" no longer told an answer to the previous follow from
    one to this. The leader moved (epoch 1 -> 2) while a fetch was out: the old epoch's
    records must not be appended (they may be gone from the new leader's log), and its
    FENCED_LEADER_EPOCH must not set the new follow aside. The answer is dropped and the
    session starts over."""
    monkeypatch.setattr(fetcher_module, "_BACKOFF_S", 3600.0)  # a delay would last
    fetcher = ReplicaFetcher(FOLLOWER, 1, "127.0.0.1", 9)
    log = Log.open(tmp_path / "t-0", LogConfig())
    log.append(encode_batch([(None, b"old", None, 1000)]), leader_epoch=1)
    out, release, again = asyncio.Event(), asyncio.Event(), asyncio.Event()
    sent: list[FetchRequest] = []
    batch = encode_batch([(None, b"stale", None, 1000)], base_offset=1)  # at our log end

    async def leader(api_key: object, request: FetchRequest, version: object = None) -> object:
        sent.append(request)
        if len(sent) > 1:
            again.set()
            await asyncio.sleep(3600)  # parked
        out.set()
        await release.wait()
        data = (
            FetchPartitionData(partition_index=0, high_watermark=2, records=memoryview(batch))
            if answer == "records"
            else FetchPartitionData(partition_index=0, error_code=FencedLeaderEpochError.code)
        )
        return FetchResponse(
            session_id=5, topics=[FetchTopicResponse(topic="t", partitions=[data])]
        )

    fetcher._peer.request = leader  # type: ignore[method-assign]

    def follow(epoch: int) -> Partition:
        partition = Partition(
            topic="t", index=0, log=log, local_broker_id=FOLLOWER, leader_id=1, leader_epoch=epoch
        )
        fetcher.add(partition)
        return partition

    try:
        follow(1)
        await asyncio.wait_for(out.wait(), 5)
        assert fetcher._followed[TopicPartition("t", 0)].on_fetch  # no round: fetching
        fetcher.remove(TopicPartition("t", 0))
        follow(2)
        release.set()
        await asyncio.wait_for(again.wait(), 5)  # set aside, it would not fetch again
        assert log.log_end_offset == 1  # the stale batch was not appended
        assert not fetcher._followed[TopicPartition("t", 0)].delayed
        (asked,) = sent[-1].topics[0].partitions
        assert sent[-1].session_epoch == INITIAL_EPOCH  # a full fetch: a new session
        assert (asked.fetch_offset, asked.current_leader_epoch) == (1, 2)
    finally:
        fetcher._followed.clear()
        await fetcher.close()
        log.close()
