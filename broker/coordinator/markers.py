"""Writes a transaction's markers to the leaders of its partitions (Kafka's
TransactionMarkerChannelManager and its completion handler).

:meth:`MarkerWriter.write` sends WriteTxnMarkers, one request per leader, and retries the
partitions whose leader moved or was unreachable (after ``retry_backoff_ms``) until every
partition has its marker, or its topic is gone (nothing to end there). A marker refused
as fenced (INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED) means a newer
coordinator or producer epoch took over: the write is abandoned (:class:`MarkersFenced`),
as Kafka abandons it. A leader that is this broker is called directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from broker.metadata import MetadataCache
from broker.network import PeerError, PeerPool
from broker.replica.manager import ReplicaManager
from protocol.apis import (
    ApiKey,
    WritableTxnMarker,
    WritableTxnMarkerTopic,
    WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
)
from protocol.errors import (
    HeadwaterError,
    InvalidProducerEpochError,
    NotCoordinatorError,
    TransactionCoordinatorFencedError,
)

__all__ = ["MarkerWriter", "MarkersFenced"]

_FENCED = {InvalidProducerEpochError.code, TransactionCoordinatorFencedError.code}
_MAX_BACKOFF_S = 5.0


class MarkersFenced(HeadwaterError):
    """A partition refused the marker: a newer coordinator or producer epoch owns it."""


class MarkerWriter:
    def __init__(
        self,
        broker_id: int,
        metadata: MetadataCache,
        replicas: ReplicaManager,
        peers: PeerPool,
        *,
        retry_backoff_ms: int = 100,
    ) -> None:
        self.broker_id = broker_id
        self._metadata = metadata
        self._replicas = replicas
        self._peers = peers
        self._backoff_s = retry_backoff_ms / 1000
        self._log = structlog.get_logger("headwater.txn_markers").bind(broker_id=broker_id)

    async def write(
        self,
        marker: WritableTxnMarker,
        partitions: set[tuple[str, int]],
        still_ours: Callable[[], bool],
    ) -> None:
        """Until each of ``partitions`` has ``marker`` (its ``topics`` are filled in here),
        or its topic is gone. Raises NotCoordinatorError once ``still_ours()`` is False
        (the coordinator moved: the new one finishes), MarkersFenced as above."""
        todo = set(partitions)
        attempt = 0
        while todo:
            if not still_ours():
                raise NotCoordinatorError("this broker no longer coordinates the transaction")
            by_leader: dict[int, list[tuple[str, int]]] = {}
            for tp in list(todo):
                state = self._metadata.partition(*tp)
                if state is None:
                    if tp[0] not in self._metadata.topics:
                        todo.discard(tp)  # deleted: no partition left to end it in
                    continue
                if state.leader in self._metadata.brokers:
                    by_leader.setdefault(state.leader, []).append(tp)
            sent = await asyncio.gather(
                *(self._send(leader, marker, tps) for leader, tps in by_leader.items())
            )
            for done in sent:
                todo -= done
            if todo:
                attempt += 1
                await asyncio.sleep(min(self._backoff_s * 2 ** min(attempt, 6), _MAX_BACKOFF_S))

    async def _send(
        self, leader: int, marker: WritableTxnMarker, tps: list[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """The partitions of ``tps`` done (marked, or gone) by one request to ``leader``."""
        by_topic: dict[str, list[int]] = {}
        for name, index in tps:
            by_topic.setdefault(name, []).append(index)
        request = WriteTxnMarkersRequest(
            markers=[
                WritableTxnMarker(
                    producer_id=marker.producer_id,
                    producer_epoch=marker.producer_epoch,
                    transaction_result=marker.transaction_result,
                    coordinator_epoch=marker.coordinator_epoch,
                    topics=[
                        WritableTxnMarkerTopic(name=t, partition_indexes=ps)
                        for t, ps in by_topic.items()
                    ],
                )
            ]
        )
        try:
            response = await self._request(leader, request)
        except (PeerError, HeadwaterError) as exc:
            self._log.info("txn.markers_retry", leader=leader, error=str(exc))
            return set()
        if response.error_code:
            self._log.info("txn.markers_retry", leader=leader, error_code=response.error_code)
            return set()
        done: set[tuple[str, int]] = set()
        for result in response.markers:
            for topic in result.topics:
                for p in topic.partitions:
                    tp = (topic.name, p.partition_index)
                    if p.error_code == 0:
                        done.add(tp)
                    elif p.error_code in _FENCED:
                        raise MarkersFenced(
                            f"{topic.name}-{p.partition_index} refused the marker of producer "
                            f"{marker.producer_id}: {p.error_message}"
                        )
                    else:
                        self._log.info(
                            "txn.marker_retry",
                            topic=topic.name,
                            partition=p.partition_index,
                            error=p.error_message or p.error_code,
                        )
        return done

    async def _request(
        self, leader: int, request: WriteTxnMarkersRequest
    ) -> WriteTxnMarkersResponse:
        if leader == self.broker_id:
            return await self._replicas.write_txn_markers(request)
        response: WriteTxnMarkersResponse = await self._peers.request(
            leader, ApiKey.WRITE_TXN_MARKERS, request
        )
        return response
