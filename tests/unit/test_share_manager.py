"""A broker's share fetches (KIP-932's SharePartitionManager): share sessions, parked
fetches, what a fetch reads, releases, and the delivery state stored at the group's
coordinator, over a real partition log with the replica manager and the store stood in
for."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from broker.log.config import LogConfig
from broker.log.log import Log
from broker.metadata import unknown_id_name
from broker.replica.shares import ShareManager
from protocol.apis import (
    AcknowledgementBatch,
    ShareAcknowledgePartition,
    ShareAcknowledgeRequest,
    ShareAcknowledgeTopic,
    ShareFetchPartition,
    ShareFetchRequest,
    ShareFetchResponse,
    ShareFetchTopic,
)
from protocol.errors import (
    CoordinatorNotAvailableError,
    FencedLeaderEpochError,
    InvalidRequestError,
    NotLeaderOrFollowerError,
)
from protocol.records import encode_batch
from protocol.share_state_log import StoredShareState
from protocol.topic_partition import TopicPartition

TID = b"\x01" * 16
TP0 = TopicPartition("t", 0)


class _Partition:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.is_leader = True
        self.leader_epoch = 3

    @property
    def high_watermark(self) -> int:
        return self.log.log_end_offset


class _Replicas:
    broker_id = 1

    def __init__(self, logs: dict[int, Log]) -> None:
        self.partitions = {TopicPartition("t", i): _Partition(log) for i, log in logs.items()}
        self.role: list[Any] = []
        self.readable: list[Any] = []
        self.moved: set[int] = set()

    def on_role_change(self, listener: Any) -> None:
        self.role.append(listener)

    def on_readable(self, listener: Any) -> None:
        self.readable.append(listener)

    def leader_partition(self, topic: str, index: int) -> _Partition:
        if index in self.moved:
            raise NotLeaderOrFollowerError(f"{topic}-{index} moved")
        return self.partitions[TopicPartition(topic, index)]

    def produced(self, index: int = 0) -> None:
        for listener in self.readable:
            listener(TopicPartition("t", index))


class _Metadata:
    def __init__(self) -> None:
        self.fetchable = {TID: "t"}
        self.topic_ids = {"t": TID}

    def fetch_name(self, topic_id: bytes) -> str:
        return self.fetchable.get(topic_id) or unknown_id_name(topic_id)


class _Store:
    """The group's coordinator, stood in for: what it holds, and a gate writes wait at."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, bytes, int], StoredShareState] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.writing = asyncio.Event()
        """Set when a write reaches the store (then waits at ``gate``)."""
        self.fail: Exception | None = None
        self.fail_reads: Exception | None = None
        self.writes = 0

    async def read(
        self, group: str, topic_id: bytes, partition: int, leader_epoch: int, start: int
    ) -> StoredShareState:
        if self.fail_reads is not None:
            raise self.fail_reads
        key = (group, topic_id, partition)
        held = self.held.get(key)
        if held is None:
            self.held[key] = StoredShareState(leader_epoch, start)
            return StoredShareState(-1, start)
        self.held[key] = held._replace(leader_epoch=leader_epoch)
        return held

    async def write(
        self, group: str, topic_id: bytes, partition: int, state: StoredShareState
    ) -> None:
        self.writing.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.writes += 1
        self.held[(group, topic_id, partition)] = state


def _make(tmp: Path, partitions: int = 1, **kw: Any) -> tuple[ShareManager, _Replicas, list[Log]]:
    logs = [Log.open(tmp / f"t-{i}", LogConfig(segment_bytes=1 << 30)) for i in range(partitions)]
    replicas = _Replicas(dict(enumerate(logs)))
    return ShareManager(replicas, _Metadata(), **kw), replicas, logs  # type: ignore[arg-type]


def _produce(log: Log, batches: int, per_batch: int = 1) -> None:
    for _ in range(batches):
        log.append(encode_batch([(b"k", b"v", None, 1000)] * per_batch))


def _fetch(
    epoch: int,
    *,
    member: str = "m1",
    acks: list[AcknowledgementBatch] | None = None,
    partitions: tuple[int, ...] = (0,),
    max_records: int = 500,
    max_wait_ms: int = 0,
    max_bytes: int = 1 << 20,
    topics: bool = True,
) -> ShareFetchRequest:
    parts = [
        ShareFetchPartition(partition_index=i, acknowledgement_batches=list(acks or []))
        for i in partitions
    ]
    return ShareFetchRequest(
        group_id="g",
        member_id=member,
        share_session_epoch=epoch,
        max_wait_ms=max_wait_ms,
        max_records=max_records,
        max_bytes=max_bytes,
        topics=[ShareFetchTopic(topic_id=TID, partitions=parts)] if topics else [],
    )


def _ack(
    epoch: int, acks: list[AcknowledgementBatch], member: str = "m1"
) -> ShareAcknowledgeRequest:
    part = ShareAcknowledgePartition(partition_index=0, acknowledgement_batches=acks)
    return ShareAcknowledgeRequest(
        group_id="g",
        member_id=member,
        share_session_epoch=epoch,
        topics=[ShareAcknowledgeTopic(topic_id=TID, partitions=[part])],
    )


async def _parked(manager: ShareManager, member: str = "m1") -> None:
    """Lets the fetch just sent run to where it waits: with no store, its first step."""
    await asyncio.sleep(0)
    assert manager.sessions[("g", member)].parked is not None


def _batch(first: int, last: int, kind: int) -> AcknowledgementBatch:
    return AcknowledgementBatch(first_offset=first, last_offset=last, acknowledge_types=[kind])


def _acquired(response: ShareFetchResponse) -> list[tuple[int, int, int, int]]:
    return [
        (p.partition_index, a.first_offset, a.last_offset, a.delivery_count)
        for t in response.topics
        for p in t.partitions
        for a in p.acquired_records
    ]


async def test_a_fetch_hands_out_whole_batches_and_their_bytes(tmp_path: Path) -> None:
    manager, _, (log,) = _make(tmp_path)
    assert _acquired(await manager.share_fetch(_fetch(0))) == []  # starts at the end
    _produce(log, 3, per_batch=2)
    response = await manager.share_fetch(_fetch(1, topics=False))
    assert _acquired(response) == [(0, 0, 5, 1)]
    (partition,) = response.topics[0].partitions
    assert response.topics[0].topic_id == TID  # named by the session's id
    assert partition.records is not None and partition.records.size == log.read(0, 1 << 20).size


async def test_a_parked_fetch_is_answered_by_records_and_never_dropped(tmp_path: Path) -> None:
    manager, replicas, (log,) = _make(tmp_path)
    await manager.share_fetch(_fetch(0))
    waiting = asyncio.ensure_future(manager.share_fetch(_fetch(1, topics=False, max_wait_ms=5000)))
    await _parked(manager)
    assert not waiting.done()
    _produce(log, 1)
    replicas.produced()
    assert _acquired(await asyncio.wait_for(waiting, 1)) == [(0, 0, 0, 1)]
    # a fetch sent without waiting, and a close (ShareAcknowledge -1), answer a parked one
    first = asyncio.ensure_future(manager.share_fetch(_fetch(2, topics=False, max_wait_ms=5000)))
    await _parked(manager)
    second = asyncio.ensure_future(manager.share_fetch(_fetch(3, topics=False, max_wait_ms=5000)))
    assert _acquired(await asyncio.wait_for(first, 1)) == []  # answered once the second parked
    assert not second.done()
    assert (await manager.share_acknowledge(_ack(-1, []))).error_code == 0
    await asyncio.wait_for(second, 1)
    assert ("g", "m1") not in manager.sessions


async def test_a_fetch_that_only_acknowledges_takes_nothing(tmp_path: Path) -> None:
    manager, _, (log,) = _make(tmp_path)
    await manager.share_fetch(_fetch(0))
    _produce(log, 3)
    response = await manager.share_fetch(_fetch(1, topics=False, max_records=0, max_wait_ms=5000))
    assert _acquired(response) == []
    assert _acquired(await manager.share_fetch(_fetch(2, topics=False))) == [(0, 0, 2, 1)]


async def test_renewal_is_not_in_version_1(tmp_path: Path) -> None:
    manager, _, (log,) = _make(tmp_path)
    await manager.share_fetch(_fetch(0))
    _produce(log, 3)
    await manager.share_fetch(_fetch(1, topics=False))
    response = await manager.share_acknowledge(_ack(2, [_batch(0, 2, 4)]))
    assert response.topics[0].partitions[0].error_code == InvalidRequestError.code


async def test_a_fetch_reads_as_far_as_it_hands_out(tmp_path: Path, monkeypatch: Any) -> None:
    manager, _, (log,) = _make(tmp_path)
    await manager.share_fetch(_fetch(0))
    _produce(log, 20_000)
    calls = 0
    real = os.pread

    def counting(*args: Any) -> bytes:
        nonlocal calls
        calls += 1
        return real(*args)

    monkeypatch.setattr(os, "pread", counting)
    response = await manager.share_fetch(
        _fetch(1, topics=False, max_records=10, max_bytes=50 << 20)
    )
    assert _acquired(response) == [(0, 0, 9, 1)]
    assert calls < 100  # ten batches' headers (and an index lookup), not 20,000


async def test_a_partition_that_moved_does_not_end_the_wait(tmp_path: Path) -> None:
    manager, replicas, (log, _) = _make(tmp_path, partitions=2)
    await manager.share_fetch(_fetch(0, partitions=(0, 1)))
    replicas.moved.add(1)  # (librdkafka moves it to its new leader without forgetting it here)
    waiting = asyncio.ensure_future(manager.share_fetch(_fetch(1, topics=False, max_wait_ms=5000)))
    await _parked(manager)  # (not answered at once for the moved partition's error)
    _produce(log, 1)
    replicas.produced(0)
    response = await asyncio.wait_for(waiting, 1)
    assert _acquired(response) == [(0, 0, 0, 1)]
    codes = {p.partition_index: p.error_code for t in response.topics for p in t.partitions}
    assert codes == {0: 0, 1: NotLeaderOrFollowerError.code}
    replicas.moved.add(0)  # every partition refused: answered at once
    response = await manager.share_fetch(_fetch(2, topics=False, max_wait_ms=5000))
    assert {p.error_code for t in response.topics for p in t.partitions} == {
        NotLeaderOrFollowerError.code
    }


async def test_a_closed_connection_gives_back_what_its_member_held(tmp_path: Path) -> None:
    closing: list[Any] = []
    manager, _, (log,) = _make(tmp_path, on_close=lambda: closing.append)
    await manager.share_fetch(_fetch(0))
    _produce(log, 3)
    assert _acquired(await manager.share_fetch(_fetch(1, topics=False))) == [(0, 0, 2, 1)]
    for callback in closing:
        callback()
    assert ("g", "m1") not in manager.sessions
    response = await manager.share_fetch(_fetch(0, member="m2"))
    assert _acquired(response) == [(0, 0, 2, 1)]  # that delivery did not count


async def _loaded(manager: ShareManager, epoch: int, **kw: Any) -> ShareFetchResponse:
    """A fetch that waits (the state is read from the store first)."""
    return await manager.share_fetch(_fetch(epoch, max_wait_ms=2000, **kw))


async def test_a_group_new_to_a_partition_stores_where_it_starts(tmp_path: Path) -> None:
    store = _Store()
    manager, _, (log,) = _make(tmp_path, store=store)
    _produce(log, 5)
    await _loaded(manager, 0)
    assert store.held[("g", TID, 0)] == StoredShareState(3, 5, ())  # stored by the read


async def test_acknowledgements_are_answered_once_stored(tmp_path: Path) -> None:
    store = _Store()
    manager, replicas, (log,) = _make(tmp_path, store=store)
    await _loaded(manager, 0)
    _produce(log, 4)
    replicas.produced()
    assert _acquired(await manager.share_fetch(_fetch(1, topics=False))) == [(0, 0, 3, 1)]
    store.gate.clear()
    acking = asyncio.ensure_future(
        manager.share_acknowledge(_ack(2, [_batch(0, 1, 1), _batch(2, 3, 2)]))
    )
    await store.writing.wait()
    await asyncio.sleep(0)
    assert not acking.done()  # not answered before it is stored
    store.gate.set()
    assert (await acking).topics[0].partitions[0].error_code == 0
    assert store.held[("g", TID, 0)] == StoredShareState(3, 2, ((2, 3, 0, 1),))
    # a store that cannot take it: the acknowledgement's answer says so
    assert _acquired(await manager.share_fetch(_fetch(3, topics=False))) == [(0, 2, 3, 2)]
    store.fail = CoordinatorNotAvailableError("moving")
    response = await manager.share_acknowledge(_ack(4, [_batch(2, 3, 1)]))
    assert response.topics[0].partitions[0].error_code == CoordinatorNotAvailableError.code


async def test_a_new_leader_goes_on_from_what_was_stored(tmp_path: Path) -> None:
    store = _Store()
    manager, replicas, (log,) = _make(tmp_path, store=store)
    await _loaded(manager, 0)
    _produce(log, 10)
    replicas.produced()
    await manager.share_fetch(_fetch(1, topics=False))
    await manager.share_acknowledge(_ack(2, [_batch(0, 5, 1)]))  # 6-9 held, never acked
    # another broker's manager over the same log: the partition's next leader
    successor = ShareManager(replicas, _Metadata(), store=store)  # type: ignore[arg-type]
    response = await successor.share_fetch(_fetch(0, member="m2", max_wait_ms=2000))
    assert _acquired(response) == [(0, 6, 9, 1)]  # accepted ones never again
    # the old leader, fenced by the new one's read, hears so and lets the state go
    store.fail = FencedLeaderEpochError("older")
    response = await manager.share_acknowledge(_ack(3, [_batch(6, 9, 1)]))
    assert response.topics[0].partitions[0].error_code == NotLeaderOrFollowerError.code
    assert ("g", TP0) not in manager.states


@pytest.mark.parametrize("epoch", [5, -1])
async def test_session_errors(tmp_path: Path, epoch: int) -> None:
    manager, _, _ = _make(tmp_path)
    response = await manager.share_fetch(_fetch(epoch))
    assert response.error_code == 122  # SHARE_SESSION_NOT_FOUND


async def test_leading_again_in_a_new_epoch_reads_the_state_again(tmp_path: Path) -> None:
    """Another broker may have led the partition between (this one not having heard):
    what this one held in memory is not trusted, the stored state is read again."""
    store = _Store()
    manager, replicas, (log,) = _make(tmp_path, store=store)
    await _loaded(manager, 0)
    _produce(log, 4)
    replicas.produced()
    await manager.share_fetch(_fetch(1, topics=False))
    partition = replicas.partitions[TP0]
    # a new epoch with nobody else between (an ISR change): what is out stays out
    partition.leader_epoch = 4
    for listener in replicas.role:
        listener(TP0, partition)
    response = await manager.share_fetch(_fetch(2, topics=False, max_wait_ms=300))
    assert _acquired(response) == []
    assert store.held[("g", TID, 0)].leader_epoch == 4
    # meanwhile, in epoch 5 elsewhere, 0-1 were accepted; this broker leads again in epoch 6
    store.held[("g", TID, 0)] = StoredShareState(5, 2, ())
    partition.leader_epoch = 6
    for listener in replicas.role:
        listener(TP0, partition)
    response = await manager.share_fetch(_fetch(3, topics=False, max_wait_ms=2000))
    assert _acquired(response) == [(0, 2, 3, 1)]  # from what that leader stored


async def test_a_read_that_fails_is_said_to_the_member(tmp_path: Path) -> None:
    store = _Store()
    manager, _, _ = _make(tmp_path, store=store)
    store.fail_reads = FencedLeaderEpochError("a newer leader")
    response = await asyncio.wait_for(manager.share_fetch(_fetch(0, max_wait_ms=5000)), 1)
    codes = [p.error_code for t in response.topics for p in t.partitions]
    assert codes == [NotLeaderOrFollowerError.code]
