"""The consumer's Fetch outcomes without a socket: whatever becomes of a Fetch (answered,
failed, or its task cancelled by stop()), its partitions can be fetched again; a failure
that is not an ApiError is logged and backed off, never a silent stall."""

import asyncio
import time
from typing import Any

import pytest

from client import Consumer
from client.fetcher import FetchSet
from client.types import TopicPartition
from protocol.apis import FetchPartitionData, FetchRequest, FetchResponse, FetchTopicResponse
from protocol.errors import FetchSessionIdNotFoundError
from protocol.records import encode_batch

TP = TopicPartition("t", 0)


class _Unconnected:
    """A cluster with no open connection: a Fetch goes by ``send`` (connect first)."""

    def __init__(self, outcome: BaseException | None) -> None:
        self.outcome = outcome
        self.refreshes = 0
        self.sent = asyncio.Event()

    def connection_now(self, node: int, purpose: str = "") -> None:
        return None

    def request_refresh(self) -> None:
        self.refreshes += 1

    async def send(self, node: int, api_key: Any, request: FetchRequest, **kw: Any) -> Any:
        self.sent.set()
        if self.outcome is None:
            await asyncio.Event().wait()  # never answered (stop() cancels it)
        raise self.outcome


def _consumer(cluster: _Unconnected) -> Consumer:
    consumer = Consumer(bootstrap_servers="unused:1")
    consumer._cluster = cluster  # type: ignore[assignment]
    consumer._subscription.assign([TP])
    consumer._subscription.seek(TP, 0)
    return consumer


def _fetchable(consumer: Consumer, now_ms: float) -> FetchSet:
    """What the consumer would fetch now (leaders unknown here: all under None)."""
    return consumer._subscription.fetchable_by_leader(now_ms, {})[None]


@pytest.mark.parametrize("outcome", [RuntimeError("a bug in the transport"), None])
async def test_a_fetch_that_fails_or_is_cancelled_frees_its_partitions(
    outcome: BaseException | None, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = _Unconnected(outcome)
    consumer = _consumer(cluster)
    consumer._start_fetch(1, _fetchable(consumer, 0))
    task = consumer._fetches[1]
    assert task is not None
    await asyncio.wait_for(cluster.sent.wait(), 5)
    if outcome is None:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 1 not in consumer._fetches  # the broker may be asked again
    later = time.monotonic() * 1000 + 60_000  # past any back-off
    assert list(_fetchable(consumer, later).positions) == [TP]
    if outcome is not None:
        assert cluster.refreshes == 1
        assert consumer._subscription.states[TP].retry_at_ms > 0  # backed off
        assert "fetch from broker 1 failed" in caplog.text


class _Scripted:
    """Answers each Fetch from a script, keeping the requests."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.requests: list[FetchRequest] = []
        self.refreshes = 0

    def connection_now(self, node: int, purpose: str = "") -> None:
        return None

    def request_refresh(self) -> None:
        self.refreshes += 1

    async def send(self, node: int, api_key: Any, request: FetchRequest, **kw: Any) -> Any:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def test_the_consumer_fetches_over_a_session_and_starts_over_when_it_is_lost() -> None:
    """After a full first Fetch the consumer names only the partitions whose position
    moved (KIP-227); a lost session means one full Fetch again, without a back-off."""
    tps = [TopicPartition("t", i) for i in range(3)]
    batch = encode_batch([(None, b"v", None, 1000)])

    def answer(session_id: int, with_records: list[int]) -> FetchResponse:
        return FetchResponse(
            session_id=session_id,
            topics=[
                FetchTopicResponse(
                    topic="t",
                    partitions=[
                        FetchPartitionData(partition_index=i, high_watermark=1, records=batch)
                        for i in with_records
                    ],
                )
            ],
        )

    cluster = _Scripted(
        [
            answer(7, [0]),
            answer(7, []),
            FetchSessionIdNotFoundError("evicted"),
            answer(9, []),
        ]
    )
    consumer = Consumer(bootstrap_servers="unused:1")
    consumer._cluster = cluster  # type: ignore[assignment]
    consumer._subscription.assign(tps)
    for tp in tps:
        consumer._subscription.seek(tp, 0)

    async def fetch_once() -> None:
        consumer._start_fetch(1, _fetchable(consumer, time.monotonic() * 1000))
        task = consumer._fetches.get(1)
        assert task is not None
        await task

    def asked(request: FetchRequest) -> tuple[int, int, list[tuple[int, int]]]:
        named = [(p.partition, p.fetch_offset) for t in request.topics for p in t.partitions]
        return request.session_id, request.session_epoch, sorted(named)

    for _ in range(4):
        await fetch_once()
    assert [asked(r) for r in cluster.requests] == [
        (0, 0, [(0, 0), (1, 0), (2, 0)]),  # full: opens a session
        (7, 1, [(0, 1)]),  # only t-0 moved (its record is buffered)
        (7, 2, []),  # nothing moved
        (7, 0, [(0, 1), (1, 0), (2, 0)]),  # the session was lost: full again (closing 7)
    ]
    assert cluster.refreshes == 0  # a lost session is no reason to back off
    assert all(s.retry_at_ms == 0 for s in consumer._subscription.states.values())


class _BrokenOnce:
    """A connected cluster whose first Fetch write raises a bug (not an ApiError)."""

    def __init__(self) -> None:
        self.requests: list[FetchRequest] = []
        self.broken = True

    def connection_now(self, node: int, purpose: str = "") -> "_BrokenOnce":
        return self

    def request_refresh(self) -> None:
        pass

    def send_now(self, api_key: Any, request: FetchRequest, on_answer: Any) -> None:
        if self.broken:
            self.broken = False
            raise TypeError("a bug in the encoder")
        self.requests.append(request)


async def test_a_fetch_that_a_bug_stopped_leaves_its_broker_free_and_is_sent_in_full() -> None:
    """From a review: a Fetch whose write raised (not an answer: a bug) left its broker
    marked busy for good, and what its set had changed was never sent to the session."""
    tps = [TopicPartition("t", i) for i in range(3)]
    cluster = _BrokenOnce()
    consumer = Consumer(bootstrap_servers="unused:1")
    consumer._cluster = cluster  # type: ignore[assignment]
    consumer._subscription.assign(tps)
    for tp in tps:
        consumer._subscription.seek(tp, 5)
    now = time.monotonic() * 1000
    leaders = {tp: 1 for tp in tps}
    fetch = consumer._subscription.fetchable_by_leader(now, leaders)[1]
    with pytest.raises(TypeError):
        consumer._start_fetch(1, fetch)
    assert 1 not in consumer._fetches
    consumer._subscription.seek(tps[0], 9)  # changed since: only this would be named...
    again = consumer._subscription.fetchable_by_leader(now, leaders)[1]
    assert again.changed is None  # ...but every partition is compared
    consumer._start_fetch(1, again)
    (request,) = cluster.requests
    named = sorted((p.partition, p.fetch_offset) for t in request.topics for p in t.partitions)
    assert named == [(0, 9), (1, 5), (2, 5)] and request.session_epoch == 0  # full


class _Topics:
    def add_topics(self, topics: Any) -> None:
        pass

    def set_topics(self, topics: Any) -> None:
        pass


async def test_assign_keeps_a_pause_and_a_group_rebalance_ends_it() -> None:
    """As Kafka's consumer: assign() keeps a kept partition's pause; a group rebalance
    revokes every partition first, so each comes back unpaused (the user pauses again
    in on_partitions_assigned). A cooperative rebalance revokes only what moves: a kept
    partition stays paused."""
    tp1 = TopicPartition("t", 1)
    consumer = Consumer(bootstrap_servers="unused:1", enable_auto_commit=False)
    consumer._cluster = _Topics()  # type: ignore[assignment]
    consumer.assign([TP, tp1])
    consumer.pause(TP)
    consumer.assign([TP])
    assert consumer.paused() == {TP}
    await consumer._revoked()
    await consumer._assigned([TP, tp1], {TP, tp1})
    assert consumer.paused() == set()
    consumer.pause(TP, tp1)
    await consumer._revoked({tp1})  # cooperative: tp1 moves to another member
    await consumer._assigned([TP], set())
    assert consumer.paused() == {TP}


class _Member:
    def polled(self) -> None:
        pass


async def test_nothing_is_handed_out_while_a_rebalance_commits_what_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a flaky test: the rebalance's auto-commit is an await, and a poll meanwhile
    took records past the offsets it was committing; the partition's next owner (here the
    same member) then read them again. Polls get nothing until the revoke is done."""
    consumer = Consumer(bootstrap_servers="unused:1", group_id="g")
    consumer._cluster = _Topics()  # type: ignore[assignment]
    consumer._state = "running"
    consumer._data = asyncio.Event()
    consumer._member = _Member()  # type: ignore[assignment]
    consumer._subscribed = True
    consumer._subscription.assign([TP])
    consumer._subscription.seek(TP, 0)
    (asked,) = _fetchable(consumer, 0).positions.values()
    batch = encode_batch([(None, b"%d" % i, None, 1_000 + i) for i in range(4)])
    consumer._subscription.add_fetched(asked, memoryview(batch))
    committing, go_on = asyncio.Event(), asyncio.Event()
    committed: list[int | None] = []

    async def commit() -> None:
        committed.append(consumer._subscription.states[TP].position)  # what it commits
        committing.set()
        await go_on.wait()

    monkeypatch.setattr(consumer, "commit", commit)
    assert [r.offset for r in consumer._take((), 2)[TP]] == [0, 1]
    revoking = asyncio.ensure_future(consumer._revoked())
    await committing.wait()
    assert consumer._take((), 2) == {}  # held: the commit says 2
    go_on.set()
    await revoking
    assert committed == [2] and consumer.assignment() == set()
