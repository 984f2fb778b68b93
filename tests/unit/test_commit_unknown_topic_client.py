"""A commit the coordinator refuses UNKNOWN_TOPIC_OR_PARTITION (client/coordinator.py
``GroupOffsets.commit_call``): sent again while a fresh metadata answer has the topic
(the coordinator's broker has not heard of a topic just made), raised at once when it has
not (deleted). Against a scripted cluster."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from client import coordinator as coordinator_module
from client.coordinator import GroupOffsets, commit_topics
from client.types import TopicPartition
from protocol.apis import (
    ApiKey,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
    TxnOffsetCommitRequest,
)
from protocol.errors import (
    OffsetMetadataTooLargeError,
    UnknownTopicOrPartitionError,
)
from tests.unit.test_coordinator_line import _Cluster, sleeps  # noqa: F401 (a fixture)

UNKNOWN = UnknownTopicOrPartitionError.code


def _answer(**codes: dict[int, int]) -> OffsetCommitResponse:
    return OffsetCommitResponse(
        topics=[
            OffsetCommitResponseTopic(
                name=t,
                partitions=[
                    OffsetCommitResponsePartition(partition_index=p, error_code=c)
                    for p, c in partitions.items()
                ],
            )
            for t, partitions in codes.items()
        ]
    )


class _View:
    def __init__(self, topics: dict[str, set[int]]) -> None:
        self.topics = topics

    def partitions_for(self, topic: str) -> set[int] | None:
        return self.topics.get(topic)


class _Cluster2(_Cluster):
    """Also answers metadata: ``exists`` (topic -> partitions) as a broker has it."""

    def __init__(self, answers: list[Any], exists: dict[str, set[int]]) -> None:
        super().__init__(answers)
        self.exists = exists
        self.asked: list[list[str]] = []
        self.requests: list[Any] = []

    async def send(self, node: int, api_key: ApiKey, request: Any) -> Any:
        self.requests.append(request)
        return await super().send(node, api_key, request)

    async def fetch_metadata(self, topics: list[str]) -> _View:
        self.asked.append(topics)
        return _View({t: self.exists[t] for t in topics if t in self.exists})


def _group(cluster: _Cluster2, timeout_ms: int = 30_000) -> GroupOffsets:
    return GroupOffsets(
        cluster,  # type: ignore[arg-type]
        "g",
        request_timeout_ms=timeout_ms,
        retry_backoff_ms=100,
    )


def _sent(request: OffsetCommitRequest) -> set[tuple[str, int]]:
    return {(t.name, p.partition_index) for t in request.topics for p in t.partitions}


async def test_a_partition_the_coordinator_does_not_know_yet_is_sent_again_alone(
    sleeps: list[float],  # noqa: F811
) -> None:
    cluster = _Cluster2(
        [_answer(a={0: 0, 1: UNKNOWN}, b={0: 0}), _answer(a={1: UNKNOWN}), _answer(a={1: 0})],
        exists={"a": {0, 1}},
    )
    await _group(cluster).commit(
        {TopicPartition("a", 0): 5, TopicPartition("a", 1): 6, TopicPartition("b", 0): 7}
    )
    assert [_sent(r) for r in cluster.requests] == [
        {("a", 0), ("a", 1), ("b", 0)},
        {("a", 1)},
        {("a", 1)},
    ]
    assert cluster.asked == [["a"], ["a"]] and sleeps == [0.1, 0.1]
    assert cluster.finds == 1  # the coordinator is kept: it is there, its metadata behind


async def test_a_partition_of_a_topic_that_is_gone_fails_at_once(
    sleeps: list[float],  # noqa: F811
) -> None:
    cluster = _Cluster2([_answer(a={0: 0}, gone={0: UNKNOWN})], exists={"a": {0}})
    with pytest.raises(UnknownTopicOrPartitionError, match=r"gone-0 .*no topic 'gone'"):
        await _group(cluster).commit({TopicPartition("a", 0): 5, TopicPartition("gone", 0): 1})
    assert len(cluster.requests) == 1 and not sleeps


async def test_a_partition_past_the_count_a_broker_knows_is_one_just_added(
    sleeps: list[float],  # noqa: F811
) -> None:
    """Partitions are never removed: one the answer lacks, of a topic it has, was just
    added (CreatePartitions) and the brokers asked have not heard yet."""
    cluster = _Cluster2([_answer(a={3: UNKNOWN}), _answer(a={3: 0})], exists={"a": {0}})
    await _group(cluster).commit({TopicPartition("a", 3): 5})
    assert len(cluster.requests) == 2 and sleeps == [0.1]


async def test_a_coordinator_that_never_hears_of_the_topic_fails_the_commit_in_time(
    sleeps: list[float],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]

    def monotonic() -> float:
        now[0] += 0.4  # each look at the clock: the 4 s run out after the third round
        return now[0]

    monkeypatch.setattr(coordinator_module, "time", SimpleNamespace(monotonic=monotonic))
    cluster = _Cluster2([_answer(a={0: UNKNOWN})] * 5, exists={"a": {0}})
    with pytest.raises(UnknownTopicOrPartitionError, match="has not heard of it yet"):
        await _group(cluster, timeout_ms=4_000).commit({TopicPartition("a", 0): 5})
    assert 1 < len(cluster.requests) < 5


async def test_another_refusal_is_raised_as_before(sleeps: list[float]) -> None:  # noqa: F811
    cluster = _Cluster2(
        [_answer(a={0: UNKNOWN, 1: OffsetMetadataTooLargeError.code})], exists={"a": {0, 1}}
    )
    with pytest.raises(OffsetMetadataTooLargeError, match="commit of a-1 for group 'g'"):
        await _group(cluster).commit({TopicPartition("a", 0): 5, TopicPartition("a", 1): 6})
    assert not cluster.asked


async def test_a_transactions_commit_is_sent_again_the_same_way(
    sleeps: list[float],  # noqa: F811
) -> None:
    cluster = _Cluster2([_answer(a={0: 0, 1: UNKNOWN}), _answer(a={1: 0})], exists={"a": {0, 1}})
    request = TxnOffsetCommitRequest(
        transactional_id="tx",
        group_id="g",
        producer_id=1,
        producer_epoch=0,
        topics=commit_topics({TopicPartition("a", 0): 1, TopicPartition("a", 1): 2}),
    )
    await _group(cluster).commit_call(ApiKey.TXN_OFFSET_COMMIT, request, "the commit")
    assert isinstance(cluster.requests[1], TxnOffsetCommitRequest)
    assert _sent(cluster.requests[1]) == {("a", 1)}
    assert cluster.requests[1].transactional_id == "tx"
