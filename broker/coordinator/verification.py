"""A partition leader's check with a transaction's coordinator before it appends the
transaction's first batch to a partition (KIP-890 part 1, Kafka's AddPartitionsToTxnManager).

Without it, a produce request that reaches the leader late (retried, or held up in the
network) after its transaction was aborted opens a new transaction there that no
coordinator knows and no marker ends: the partition's last stable offset stops, and every
read_committed consumer with it (a "hanging transaction"). With it, the leader asks the
coordinator whether the partition is in the producer's ongoing transaction
(AddPartitionsToTxn with ``verify_only``) and refuses the batch with INVALID_TXN_STATE if
not. Only a transaction's first batch in a partition is checked: later ones join a
transaction the partition already knows.

A coordinator that cannot answer now (moving, loading, unreachable) makes the produce fail
with NOT_ENOUGH_REPLICAS, retriable, as Kafka's leader does (producers do not know the
coordinator errors on a produce). A coordinator of an older build, which does not know
``verify_only``, is not asked again for a while and the batch goes in unchecked, as
before.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from broker.metadata import MetadataCache
from broker.network import PeerError, PeerPool
from protocol.apis import (
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    AddPartitionsToTxnTopic,
    ApiKey,
)
from protocol.errors import (
    ApiError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    NotEnoughReplicasError,
    UnsupportedVersionError,
    error_for_code,
)
from protocol.group_log import partition_for
from protocol.txn_log import TRANSACTION_TOPIC

__all__ = ["TxnVerifier"]

Partition = tuple[str, int]
_NOT_NOW = (NotCoordinatorError, CoordinatorNotAvailableError, CoordinatorLoadInProgressError)
_OLD_BUILD_BACKOFF_S = 60.0


class TxnVerifier:
    def __init__(
        self,
        broker_id: int,
        metadata: MetadataCache,
        peers: PeerPool,
        partitions: Callable[[], int],
        local: Callable[[AddPartitionsToTxnRequest], Awaitable[AddPartitionsToTxnResponse]],
    ) -> None:
        """``partitions``: ``transaction.state.log.num.partitions``; ``local``: this
        broker's coordinator, asked directly when it is the one."""
        self.broker_id = broker_id
        self._metadata = metadata
        self._peers = peers
        self._partitions = partitions
        self._local = local
        self._old: dict[int, float] = {}  # coordinators of an older build, until when
        self._log = structlog.get_logger("headwater.txn_verify").bind(broker_id=broker_id)

    async def verify(
        self, txn_id: str, producer_id: int, producer_epoch: int, partitions: list[Partition]
    ) -> dict[Partition, ApiError]:
        """The partitions whose batch must be refused, with the error to answer."""
        request = AddPartitionsToTxnRequest(
            transactional_id=txn_id,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            topics=_topics(partitions),
            verify_only=True,
        )
        try:
            response = await self._ask(txn_id, request)
        except _OldBuild:
            return {}
        except PeerError as exc:
            return dict.fromkeys(partitions, _retriable(txn_id, exc))
        except ApiError as exc:
            return dict.fromkeys(partitions, _answer(txn_id, exc))
        if response.error_code:
            error = error_for_code(response.error_code, response.error_message or "")
            return dict.fromkeys(partitions, _answer(txn_id, error))
        refused: dict[Partition, ApiError] = {}
        for topic in response.results:
            for p in topic.results:
                if p.error_code:
                    error = error_for_code(p.error_code, p.error_message or "")
                    refused[(topic.name, p.partition_index)] = _answer(txn_id, error)
        return refused

    async def _ask(
        self, txn_id: str, request: AddPartitionsToTxnRequest
    ) -> AddPartitionsToTxnResponse:
        states = self._metadata.topics.get(TRANSACTION_TOPIC) or {}
        state = states.get(partition_for(txn_id, self._partitions()))
        coordinator = state.leader if state is not None else -1
        if coordinator < 0:
            raise CoordinatorNotAvailableError(f"{TRANSACTION_TOPIC} has no leader for it")
        if coordinator == self.broker_id:
            return await self._local(request)
        if self._old.get(coordinator, 0.0) > time.monotonic():
            raise _OldBuild()
        try:
            response: AddPartitionsToTxnResponse = await self._peers.request(
                coordinator, ApiKey.ADD_PARTITIONS_TO_TXN, request
            )
        except UnsupportedVersionError as exc:
            self._older(coordinator, exc)
            raise _OldBuild() from exc
        if response.error_code == UnsupportedVersionError.code:
            self._older(coordinator, response.error_message)
            raise _OldBuild()
        return response

    def _older(self, coordinator: int, why: object) -> None:
        self._old[coordinator] = time.monotonic() + _OLD_BUILD_BACKOFF_S
        self._log.warning("txn.verify_unsupported", coordinator=coordinator, error=str(why))


class _OldBuild(Exception):
    """The coordinator does not know verify_only: the batch goes in unchecked."""


def _answer(txn_id: str, error: ApiError) -> ApiError:
    """The error for the producer: the coordinator's own ones it would not know on a
    produce become NOT_ENOUGH_REPLICAS (retriable)."""
    return _retriable(txn_id, error) if isinstance(error, _NOT_NOW) else error


def _retriable(txn_id: str, cause: object) -> NotEnoughReplicasError:
    return NotEnoughReplicasError(
        f"the coordinator of transactional id {txn_id!r} could not confirm the transaction "
        f"now ({cause}); the producer retries"
    )


def _topics(partitions: list[Partition]) -> list[AddPartitionsToTxnTopic]:
    by_topic: dict[str, list[int]] = {}
    for topic, index in partitions:
        by_topic.setdefault(topic, []).append(index)
    return [AddPartitionsToTxnTopic(name=t, partitions=ps) for t, ps in by_topic.items()]
