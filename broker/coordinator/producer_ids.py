"""Producer ids for idempotent producers: InitProducerId (Kafka's ProducerIdManager, ZK mode).

Ids are unique across the cluster and never reused: each broker claims a block of 1,000
at a time by compare-and-set on ``/latest_producer_id_block`` (Kafka's znode and JSON),
then hands them out from memory. A broker that dies wastes the rest of its block, as in
Kafka. An idempotent producer gets epoch 0 of a fresh id; a transactional one asks its
transaction coordinator (:mod:`broker.coordinator.transactions`), which takes ids here.
"""

from __future__ import annotations

import asyncio

import structlog

from broker.zk import (
    NodeExists,
    NoNode,
    VersionConflict,
    ZkBridge,
    ZkError,
    paths,
    producer_id_block_from_json,
    producer_id_block_json,
)
from protocol.apis import InitProducerIdRequest, InitProducerIdResponse
from protocol.errors import CoordinatorNotAvailableError, InvalidRequestError

__all__ = ["BLOCK_SIZE", "ProducerIdManager"]

BLOCK_SIZE = 1_000  # Kafka's ProducerIdsBlock size
_CLAIM_ATTEMPTS = 20


class ProducerIdManager:
    def __init__(self, broker_id: int, zk: ZkBridge) -> None:
        self.broker_id = broker_id
        self._zk = zk
        self._next = 0
        self._end = -1  # inclusive: nothing claimed yet
        self._lock = asyncio.Lock()
        self._log = structlog.get_logger("headwater.producer_ids").bind(broker_id=broker_id)

    async def init_producer_id(self, request: InitProducerIdRequest) -> InitProducerIdResponse:
        if request.transactional_id is not None:
            raise InvalidRequestError(
                "a transactional producer's id comes from its transaction coordinator"
            )
        return InitProducerIdResponse(producer_id=await self.next_id(), producer_epoch=0)

    async def next_id(self) -> int:
        async with self._lock:  # one claim at a time; the others wait for its block
            if self._next > self._end:
                await self._claim_block()
            produced = self._next
            self._next += 1
            return produced

    async def _claim_block(self) -> None:
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                if await self._try_claim():
                    return
            except VersionConflict:
                continue  # another broker claimed the block we read: read again
            except ZkError as exc:
                raise CoordinatorNotAvailableError(
                    f"could not claim producer ids from ZooKeeper ({exc}); retry shortly"
                ) from None
        raise CoordinatorNotAvailableError("producer id blocks are contended; retry shortly")

    async def _try_claim(self) -> bool:
        try:
            data, stat = await self._zk.get(paths.PRODUCER_ID_BLOCK)
        except NoNode:
            try:
                await self._zk.create(
                    paths.PRODUCER_ID_BLOCK,
                    producer_id_block_json(self.broker_id, 0, BLOCK_SIZE - 1),
                )
            except NodeExists:
                return False
            self._take(0)
            return True
        _, last_end = producer_id_block_from_json(data)
        start = last_end + 1
        await self._zk.set(
            paths.PRODUCER_ID_BLOCK,
            producer_id_block_json(self.broker_id, start, start + BLOCK_SIZE - 1),
            version=stat.version,
        )
        self._take(start)
        return True

    def _take(self, start: int) -> None:
        self._next, self._end = start, start + BLOCK_SIZE - 1
        self._log.info("producer_ids.claimed", block_start=start, block_end=self._end)
