"""A consumer's line to its group's coordinator: find it, commit offsets, read them back.

The coordinator is the broker leading the group's partition of ``__consumer_offsets``
(FindCoordinator says which). It moves when that broker fails; every call here finds it
again and retries on the errors that mean "ask again" (NOT_COORDINATOR,
COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, a lost connection) until
``request_timeout_ms``. A consumer with a manual assignment commits from outside group membership
(generation -1); a group member passes its generation and member id
(:mod:`client.membership`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from client.cluster import Cluster
from client.metrics import monotonic_ms
from client.types import OffsetAndMetadata, TopicPartition
from protocol.apis import (
    ApiKey,
    CoordinatorType,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchRequestTopic,
    OffsetFetchResponse,
    TxnOffsetCommitRequest,
)
from protocol.errors import (
    ApiError,
    ConcurrentTransactionsError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    error_for_code,
)

if TYPE_CHECKING:
    from client.consumer_metrics import GroupMetrics

__all__ = ["CommitOffsets", "CoordinatorLine", "GroupOffsets", "commit_topics"]

CommitOffsets = Mapping[TopicPartition, "int | OffsetAndMetadata | tuple[int, str]"]
"""What a commit names: per partition the next offset to read, or an OffsetAndMetadata (or
aiokafka's ``(offset, metadata)`` tuple)."""


def commit_topics(
    offsets: CommitOffsets, epochs: Mapping[TopicPartition, int] | None = None
) -> list[OffsetCommitRequestTopic]:
    """OffsetCommit's (and TxnOffsetCommit's) topics for ``offsets``; ``epochs``: the
    leader epoch of each offset where the caller knows it and the offset does not say."""
    known = epochs or {}
    by_topic: dict[str, list[OffsetCommitRequestPartition]] = {}
    for tp, value in sorted(offsets.items()):
        # aiokafka's (offset, metadata) tuples too: an OffsetAndMetadata is one
        at = (
            OffsetAndMetadata(*value)
            if isinstance(value, tuple | list) and 1 <= len(value) <= 3
            else OffsetAndMetadata(value)
        )
        if (
            type(at.offset) is not int
            or at.offset < 0
            or not isinstance(at.metadata, str)
            or type(at.leader_epoch) is not int
        ):
            raise ValueError(
                f"commit of {tp.topic}-{tp.partition}: {value!r} is not an offset (0 or more) "
                f"or an (offset, metadata) pair"
            )
        by_topic.setdefault(tp.topic, []).append(
            OffsetCommitRequestPartition(
                partition_index=tp.partition,
                committed_offset=at.offset,
                committed_leader_epoch=(
                    at.leader_epoch if at.leader_epoch >= 0 else known.get(tp, -1)
                ),
                committed_metadata=at.metadata,
            )
        )
    return [OffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in by_topic.items()]


_log = logging.getLogger(__name__)

_ASK_AGAIN = (NotCoordinatorError, CoordinatorNotAvailableError, CoordinatorLoadInProgressError)
_STILL_COORDINATOR = (CoordinatorLoadInProgressError, ConcurrentTransactionsError)
"""Answers of the coordinator itself that it is busy: asked again, not looked for again
(Kafka's handlers re-enqueue these without a FindCoordinator)."""


class CoordinatorLine:
    """Requests to the coordinator of ``key`` (a group, or a transactional id with
    ``key_type`` :data:`CoordinatorType.TRANSACTION`), found again whenever it moves."""

    def __init__(
        self,
        cluster: Cluster,
        key: str,
        *,
        key_type: int = CoordinatorType.GROUP,
        request_timeout_ms: int,
        retry_backoff_ms: int,
    ) -> None:
        self._cluster = cluster
        self.key = key
        self.key_type = key_type
        self._timeout_s = request_timeout_ms / 1000
        self._backoff_s = retry_backoff_ms / 1000
        self._coordinator: int | None = None
        self._found = -1  # the last one found: a change is logged

    @property
    def _what(self) -> str:
        kind = "group" if self.key_type == CoordinatorType.GROUP else "transactional id"
        return f"{kind} {self.key!r}"

    async def call(
        self,
        api_key: ApiKey,
        request: Any,
        check: Any = None,
        *,
        answered: Callable[[float], None] | None = None,
        clock: Callable[[], float] = monotonic_ms,
        busy: tuple[type[ApiError], ...] = (),
        timeout_s: float | None = None,
    ) -> Any:
        """Send to the coordinator, finding it (again) and retrying while it moves.

        ``check(response)`` may raise the typed error a response carries inside it; a
        top-level error code is raised by the connection already. ``answered(ms)``: each
        answer's round trip, on ``clock`` (ms; a metric's). ``busy``: errors of a
        coordinator that is there but not ready for this yet, raised at once for the
        caller to wait out its own way (CONCURRENT_TRANSACTIONS: a few ms). ``timeout_s``:
        instead of ``request_timeout_ms``."""
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        last: ApiError | None = None
        while time.monotonic() < deadline:
            try:
                node = self._coordinator
                if node is None:
                    node = await self._find()
                sent = clock()
                response = await self._cluster.send(node, api_key, request)
                if answered is not None:
                    answered(clock() - sent)
                if check is not None:
                    check(response)
                return response
            except ApiError as exc:
                if (
                    isinstance(exc, busy)
                    or not (isinstance(exc, _ASK_AGAIN) or exc.retriable)
                    or self._cluster.closed
                ):
                    raise
                last = exc
                self.coordinator_dead(exc)
                await asyncio.sleep(self._backoff_s)
        raise last or RequestTimedOutError(
            f"{self._what}: no coordinator answered within {timeout_s:g} s"
        )

    async def coordinator(self) -> int:
        """The coordinator's broker id, found if not known (one FindCoordinator)."""
        node = self._coordinator
        return node if node is not None else await self._find()

    def coordinator_dead(self, cause: object = None) -> None:
        """The coordinator did not answer or said it is not: find it again next time. A
        ``cause`` that says it is busy (loading, finishing a transaction) keeps it: the
        same broker is asked again (for every caller: commits, membership, transactions)."""
        if isinstance(cause, _STILL_COORDINATOR):
            return
        if self._coordinator is not None:
            # Kafka's "Group coordinator ... is unavailable or invalid": a failover's trace
            _log.info(
                "%s: coordinator broker %d is unavailable or moved (%s); looking for it again",
                self._what,
                self._coordinator,
                cause,
            )
        self._coordinator = None

    async def _find(self) -> int:
        response: FindCoordinatorResponse = await self._cluster.send_any(
            ApiKey.FIND_COORDINATOR,
            FindCoordinatorRequest(key=self.key, key_type=self.key_type),
            # a broker cut off from ZooKeeper will not name itself (its session in
            # doubt): asked again and again, it would hold the member from the new one
            pass_over=(CoordinatorNotAvailableError,),
        )
        if response.node_id not in self._cluster.metadata.brokers:
            await self._cluster.refresh()
        if response.node_id != self._found:
            _log.info("%s: coordinator is broker %d", self._what, response.node_id)
            self._found = response.node_id
        self._coordinator = response.node_id
        return response.node_id


class GroupOffsets(CoordinatorLine):
    """A group's offsets, through its coordinator."""

    def __init__(
        self,
        cluster: Cluster,
        group_id: str,
        *,
        request_timeout_ms: int,
        retry_backoff_ms: int,
        metrics: GroupMetrics | None = None,
    ) -> None:
        super().__init__(
            cluster,
            group_id,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
        )
        self.group_id = group_id
        self.metrics = metrics
        """A consumer's coordinator metrics: each commit's round trip is recorded there."""

    async def commit(
        self,
        offsets: CommitOffsets,
        *,
        epochs: Mapping[TopicPartition, int] | None = None,
        generation_id: int = -1,
        member_id: str = "",
        group_instance_id: str | None = None,
    ) -> None:
        """Commit ``offsets`` (the next offset to read, per partition); raises the typed
        error of the first partition refused. ``epochs``: the leader epoch of the record
        before each offset, where known (KIP-320: whoever resumes from the offset checks
        it against the leader's log). A group member passes its generation and member id
        (the coordinator refuses a zombie's); -1 and "" commit from outside membership,
        which the coordinator allows only while the group has no members."""
        request = OffsetCommitRequest(
            group_id=self.group_id,
            generation_id=generation_id,
            member_id=member_id,
            group_instance_id=group_instance_id,
            topics=commit_topics(offsets, epochs),
        )

        metrics = self.metrics
        if metrics is None:
            await self.commit_call(ApiKey.OFFSET_COMMIT, request, "commit")
        else:
            await self.commit_call(
                ApiKey.OFFSET_COMMIT,
                request,
                "commit",
                answered=metrics.committed,
                clock=metrics.clock,
            )

    async def commit_call(
        self,
        api_key: ApiKey,
        request: OffsetCommitRequest | TxnOffsetCommitRequest,
        what: str,
        *,
        answered: Callable[[float], None] | None = None,
        clock: Callable[[], float] = monotonic_ms,
    ) -> None:
        """Send a commit (OffsetCommit, or TxnOffsetCommit: ``what`` names it in errors);
        raise the typed error of the first partition refused.

        A partition refused UNKNOWN_TOPIC_OR_PARTITION has its topic looked up in a fresh
        metadata answer. If it is there, the coordinator's broker has not heard of a topic
        (or a partition) just made: the partitions so refused are sent again, alone, until
        ``request_timeout_ms`` in all (Kafka's clients retry it too). If not (deleted,
        never made), the error is raised at once: Kafka's consumer retries that until its
        timeout too, and a rebalance's commit for a topic just deleted would hold the
        rebalance that long for nothing."""
        deadline = time.monotonic() + self._timeout_s
        unknown: list[tuple[str, int]] = []

        def check(response: OffsetCommitResponse) -> None:
            unknown.clear()  # (each answer, its own: an earlier one may have failed)
            for topic in response.topics:
                for p in topic.partitions:
                    if p.error_code == UnknownTopicOrPartitionError.code:
                        unknown.append((topic.name, p.partition_index))
                    elif p.error_code:
                        raise error_for_code(
                            p.error_code,
                            f"{what} of {topic.name}-{p.partition_index} for group "
                            f"{self.key!r} refused",
                        )

        timeout_s: float | None = None  # the first call: all of request_timeout_ms
        while True:
            await self.call(
                api_key, request, check, answered=answered, clock=clock, timeout_s=timeout_s
            )
            if not unknown:
                return
            view = await self._cluster.fetch_metadata(sorted({t for t, _ in unknown}))
            for t, p in unknown:
                # (a partition of a topic there is one just added: partitions never go)
                if view.partitions_for(t) is None:
                    raise UnknownTopicOrPartitionError(
                        f"{what} of {t}-{p} for group {self.key!r} refused: the cluster has "
                        f"no topic {t!r} (deleted?); its offset is not stored"
                    )
            timeout_s = deadline - time.monotonic()
            if timeout_s <= 0:
                t, p = unknown[0]
                raise UnknownTopicOrPartitionError(
                    f"{what} of {t}-{p} for group {self.key!r} refused: the group's "
                    f"coordinator has not heard of it yet (just made?); commit again"
                )
            await asyncio.sleep(min(self._backoff_s, timeout_s))
            timeout_s = max(deadline - time.monotonic(), 0.001)
            request = dataclasses.replace(request, topics=_only(request.topics, set(unknown)))

    async def committed(
        self, partitions: list[TopicPartition], *, require_stable: bool = False
    ) -> dict[TopicPartition, int | None]:
        """The committed offset of each partition, None where the group has none.
        ``require_stable`` (read_committed consumers, KIP-447): wait while a transaction
        holds offsets of them not yet committed or aborted (UNSTABLE_OFFSET_COMMIT, retried
        until ``request_timeout_ms``)."""
        found = await self.committed_offsets(partitions, require_stable=require_stable)
        return {tp: None if at is None else at.offset for tp, at in found.items()}

    async def committed_offsets(
        self, partitions: list[TopicPartition], *, require_stable: bool = False
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """As :meth:`committed`, each with its metadata and leader epoch (-1 where the
        committer did not know it)."""
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        request = OffsetFetchRequest(
            group_id=self.group_id,
            topics=[
                OffsetFetchRequestTopic(name=t, partition_indexes=ps) for t, ps in by_topic.items()
            ],
            require_stable=require_stable,
        )

        def check(response: OffsetFetchResponse) -> None:
            for topic in response.topics:
                for p in topic.partitions:
                    if p.error_code:
                        raise error_for_code(p.error_code, f"{topic.name}-{p.partition_index}")

        response: OffsetFetchResponse = await self.call(ApiKey.OFFSET_FETCH, request, check)
        out: dict[TopicPartition, OffsetAndMetadata | None] = dict.fromkeys(partitions)
        for topic in response.topics:
            for p in topic.partitions:
                tp = TopicPartition(topic.name, p.partition_index)
                if p.committed_offset >= 0:
                    out[tp] = OffsetAndMetadata(
                        p.committed_offset, p.metadata or "", p.committed_leader_epoch
                    )
        return out


def _only(
    topics: list[OffsetCommitRequestTopic], wanted: set[tuple[str, int]]
) -> list[OffsetCommitRequestTopic]:
    """A commit's ``topics`` cut to the ``wanted`` partitions."""
    kept = []
    for t in topics:
        partitions = [p for p in t.partitions if (t.name, p.partition_index) in wanted]
        if partitions:
            kept.append(dataclasses.replace(t, partitions=partitions))
    return kept
