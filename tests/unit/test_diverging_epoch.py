"""Followers truncate on their fetches (Fetch v2, Kafka 2.7's KAFKA-10554): each fetch says
the epoch of the follower's last record, and a leader whose log parts from the
follower's there answers where (``diverging_epoch``) instead of records. A leader change
then costs no round of OffsetForLeaderEpoch before the first fetch; a leader that does
not speak v2 (a rolling upgrade) gets the rounds, as before.

A real leader ReplicaManager answers a real ReplicaFetcher; each request goes through
the codec at the version the fetcher asked for, as on the wire."""

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.deferred import Deferred
from broker.log import Log, LogConfig
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica.fetcher import ReplicaFetcher
from broker.replica.manager import ReplicaManager
from broker.replica.partition import Partition
from protocol.apis import (
    APIS,
    ApiKey,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    LeaderAndIsrPartitionState,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from protocol.errors import UnsupportedVersionError
from protocol.framing import FileRegion
from protocol.records import decode_batches, encode_batch

LEADER, FOLLOWER = 1, 2


def _batch(value: bytes) -> bytes:
    return encode_batch([(None, value, None, 1000)])


class _Leader:
    """Broker 1 leading t-0 in epoch 3: its log has epoch 1 (offsets 0-4), then epoch 3
    (5-9). Answers a fetcher's requests through the codec, at the version asked for."""

    def __init__(self, manager: ReplicaManager, *, max_fetch_version: int = 2) -> None:
        self.manager = manager
        self.max_fetch_version = max_fetch_version
        self.asked: list[tuple[ApiKey, int | None, Any]] = []

    async def request(self, api_key: ApiKey, request: Any, version: int | None = None) -> Any:
        wire_version = 2 if version is None else version
        if api_key == ApiKey.FETCH and wire_version > self.max_fetch_version:
            self.asked.append((api_key, wire_version, request))
            error = UnsupportedVersionError(f"Fetch v{wire_version} is not served here")
            return FetchResponse(error_code=error.code, error_message=error.message)
        if api_key != ApiKey.FETCH:
            wire_version = 0
        frame = b"".join(bytes(b) for b in encode_request(api_key, wire_version, 1, request))
        _, _, request = decode_request(frame[4:])
        self.asked.append((api_key, wire_version, request))
        if api_key == ApiKey.OFFSET_FOR_LEADER_EPOCH:
            return self.manager.offsets_for_leader_epoch(request)
        assert api_key == ApiKey.FETCH, api_key
        answer = self.manager.fetch(request)
        if isinstance(answer, Deferred):
            await asyncio.sleep(3600)  # caught up: parked until the test ends
        for topic in answer.topics:
            for p in topic.partitions:
                if isinstance(p.records, FileRegion):  # as the bytes would arrive
                    region = p.records
                    p.records = memoryview(os.pread(region.fd, region.size, region.position))
        # and the answer through the codec too, at the same version
        frame = b"".join(bytes(b) for b in encode_response(1, wire_version, answer))
        return decode_response(APIS[ApiKey.FETCH], wire_version, frame[8:])


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[ReplicaManager]:
    logs = LogManager([tmp_path / "leader"], broker_id=LEADER, cluster_id="c")
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    manager = ReplicaManager(LEADER, logs, MetadataCache(), load)
    state = LeaderAndIsrPartitionState(
        topic_name="t",
        partition_index=0,
        controller_epoch=1,
        leader=LEADER,
        leader_epoch=1,
        isr=[LEADER, FOLLOWER],
        replicas=[LEADER, FOLLOWER],
    )
    await manager.become_leader_or_follower([state])
    log = manager.partitions[TopicPartition("t", 0)].log
    for i in range(5):
        log.append(_batch(b"L1-%d" % i), leader_epoch=1)
    state.leader_epoch = 3
    await manager.become_leader_or_follower([state])
    for i in range(5):
        log.append(_batch(b"L3-%d" % i), leader_epoch=3)
    yield manager
    await manager.shutdown()
    logs.shutdown()


def _follower_log(tmp_path: Path, epochs: list[tuple[int, list[bytes]]]) -> Log:
    log = Log.open(tmp_path / "follower" / "t-0", LogConfig())
    for epoch, values in epochs:
        for value in values:
            log.append(_batch(value), leader_epoch=epoch)
    return log


def _values(log: Log) -> list[bytes]:
    data = log.read(0, 1 << 20)
    if data is None:
        return []
    return [bytes(r.value or b"") for b in decode_batches(data.read()) for r in b.records]


async def _follow(leader: _Leader, log: Log, fetcher: ReplicaFetcher) -> Partition:
    fetcher._peer.request = leader.request  # type: ignore[method-assign]
    partition = Partition(
        topic="t",
        index=0,
        log=log,
        local_broker_id=FOLLOWER,
        leader_id=LEADER,
        leader_epoch=3,
        replicas=[LEADER, FOLLOWER],
    )
    fetcher.add(partition)
    for _ in range(500):
        if log.log_end_offset == 10 and _values(log)[5:] == [b"L3-%d" % i for i in range(5)]:
            break
        await asyncio.sleep(0.01)
    return partition


async def test_a_diverging_follower_truncates_on_its_fetch_without_a_round(
    tmp_path: Path, leader: ReplicaManager
) -> None:
    """The follower wrote offsets 5-7 in epoch 2, which the leader never had (it led
    epoch 3 from offset 5). Its first fetch says "epoch 2, from offset 8"; the leader
    answers "epoch 1 ends at 5" and no records; the follower cuts to 5 and fetches the
    leader's epoch 3 from there. No OffsetForLeaderEpoch is asked."""
    log = _follower_log(
        tmp_path, [(1, [b"L1-%d" % i for i in range(5)]), (2, [b"F2-0", b"F2-1", b"F2-2"])]
    )
    peer = _Leader(leader)
    fetcher = ReplicaFetcher(FOLLOWER, LEADER, "127.0.0.1", 9, max_wait_ms=50)
    try:
        await _follow(peer, log, fetcher)
        assert _values(log) == [b"L1-%d" % i for i in range(5)] + [b"L3-%d" % i for i in range(5)]
        assert log.epochs.latest_epoch == 3
        kinds = [key for key, _, _ in peer.asked]
        assert ApiKey.OFFSET_FOR_LEADER_EPOCH not in kinds
        first = peer.asked[0][2].topics[0].partitions[0]
        assert (first.fetch_offset, first.last_fetched_epoch) == (8, 2)
    finally:
        await fetcher.close()
        log.close()


async def test_a_diverging_fetch_is_answered_at_once_and_does_not_count_for_the_isr(
    leader: ReplicaManager,
) -> None:
    """The leader answers a diverging fetch at once (it would park: nothing to read at
    the follower's offset), and does not take its fetch offset as the follower's log
    end: those offsets hold records the leader does not have, and counted they could
    move the high watermark past records the follower lacks."""
    partition = leader.partitions[TopicPartition("t", 0)]
    before = partition.high_watermark
    follower = partition.followers[FOLLOWER]

    def fetch(offset: int, epoch: int) -> Any:
        wanted = FetchPartition(
            partition=0,
            fetch_offset=offset,
            last_fetched_epoch=epoch,
            current_leader_epoch=3,
            partition_max_bytes=1 << 20,
        )
        return leader.fetch(
            FetchRequest(
                replica_id=FOLLOWER,
                max_wait_ms=30_000,
                min_bytes=1,
                topics=[FetchTopic(topic="t", partitions=[wanted])],
            )
        )

    answer = fetch(10, 2)  # "epoch 2, up to 10": as far as the leader, but not its records
    assert isinstance(answer, FetchResponse)
    (data,) = answer.topics[0].partitions
    assert data.diverging_epoch is not None and data.records is None
    assert (data.diverging_epoch.epoch, data.diverging_epoch.end_offset) == (1, 5)
    assert partition.high_watermark == before  # the follower's 10 was not counted
    assert follower.log_end_offset != 10 and follower.last_fetch_ms <= 0
    answer = fetch(7, 1)  # epoch 1 ends at 5 at the leader: 7 is past it
    (data,) = answer.topics[0].partitions
    assert data.diverging_epoch is not None
    assert (data.diverging_epoch.epoch, data.diverging_epoch.end_offset) == (1, 5)
    answer = fetch(5, 1)  # in step: records, and the follower counts
    assert isinstance(answer, FetchResponse)
    (data,) = answer.topics[0].partitions
    assert data.diverging_epoch is None and data.records is not None
    assert partition.high_watermark == 5
    assert follower.log_end_offset == 5  # counted, now that it is in step


async def test_a_leader_without_fetch_v2_gets_the_truncation_round(
    tmp_path: Path, leader: ReplicaManager
) -> None:
    """A leader of an older build refuses Fetch v2: the fetcher steps down to v1 and the
    partitions it meant to truncate on fetch take the round of OffsetForLeaderEpoch."""
    log = _follower_log(
        tmp_path, [(1, [b"L1-%d" % i for i in range(5)]), (2, [b"F2-0", b"F2-1", b"F2-2"])]
    )
    peer = _Leader(leader, max_fetch_version=1)
    fetcher = ReplicaFetcher(FOLLOWER, LEADER, "127.0.0.1", 9, max_wait_ms=50)
    try:
        await _follow(peer, log, fetcher)
        assert _values(log) == [b"L1-%d" % i for i in range(5)] + [b"L3-%d" % i for i in range(5)]
        kinds = [(key, version) for key, version, _ in peer.asked]
        assert kinds[0] == (ApiKey.FETCH, 2)  # refused
        assert (ApiKey.OFFSET_FOR_LEADER_EPOCH, 0) in kinds
        assert all(v == 1 for k, v in kinds[1:] if k == ApiKey.FETCH)
        # the fetches after the round say no epoch (v1 has none): they are not diverging
        assert fetcher._fetch_version == 1
    finally:
        await fetcher.close()
        log.close()


@pytest.mark.parametrize("max_fetch_version", [1, 2])
async def test_a_follower_with_no_epoch_yet_fetches_without_asking(
    tmp_path: Path, leader: ReplicaManager, max_fetch_version: int
) -> None:
    """An empty log has no epoch to ask about: the leader's answer could only say "to
    your high watermark", so it cuts there and fetches, with or without Fetch v2, as
    Kafka's fetcher does (the idle partitions a leader change moves: 2,000 of them
    asked first)."""
    log = _follower_log(tmp_path, [])
    peer = _Leader(leader, max_fetch_version=max_fetch_version)
    fetcher = ReplicaFetcher(FOLLOWER, LEADER, "127.0.0.1", 9, max_wait_ms=50)
    try:
        await _follow(peer, log, fetcher)
        assert _values(log) == [b"L1-%d" % i for i in range(5)] + [b"L3-%d" % i for i in range(5)]
        assert ApiKey.OFFSET_FOR_LEADER_EPOCH not in [key for key, _, _ in peer.asked]
    finally:
        await fetcher.close()
        log.close()
