"""A partition leader's reads and writes of share groups' delivery state, at each group's
coordinator (Kafka's persister: ReadShareGroupState and WriteShareGroupState, here one
partition a request, to the broker that coordinates the group, which keeps the state in
``__consumer_offsets``; see :mod:`protocol.share_state_log`). The coordinator is this
broker or another, reached through the inter-broker listener.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from broker.metadata import MetadataCache
from broker.network import PeerError, PeerPool
from protocol.apis import (
    ApiKey,
    ReadShareGroupStateRequest,
    ReadShareGroupStateResponse,
    Request,
    ShareStateBatch,
    WriteShareGroupStateRequest,
    WriteShareGroupStateResponse,
)
from protocol.errors import ApiError, CoordinatorNotAvailableError, error_for_code
from protocol.group_log import OFFSETS_TOPIC, partition_for
from protocol.share_state_log import StoredShareState

__all__ = ["ShareStateClient"]

Read = Callable[[ReadShareGroupStateRequest], Awaitable[ReadShareGroupStateResponse]]
Write = Callable[[WriteShareGroupStateRequest], Awaitable[WriteShareGroupStateResponse]]


class ShareStateClient:
    """``local_read`` / ``local_write``: this broker's coordinator, asked directly when it
    coordinates the group; ``partitions``: ``offsets.topic.num.partitions``."""

    def __init__(
        self,
        broker_id: int,
        metadata: MetadataCache,
        peers: PeerPool,
        partitions: Callable[[], int],
        *,
        local_read: Read,
        local_write: Write,
    ) -> None:
        self.broker_id = broker_id
        self._metadata = metadata
        self._peers = peers
        self._partitions = partitions
        self._local_read = local_read
        self._local_write = local_write

    async def read(
        self, group: str, topic_id: bytes, partition: int, leader_epoch: int, start: int
    ) -> StoredShareState:
        """The stored state, with the leader epoch it was stored in before this read
        (none stored: ``start``, stored now, with epoch -1); raises the coordinator's
        error, or COORDINATOR_NOT_AVAILABLE when it cannot be reached."""
        request = ReadShareGroupStateRequest(
            group_id=group,
            topic_id=topic_id,
            partition=partition,
            leader_epoch=leader_epoch,
            start_offset=start,
        )
        coordinator = self._coordinator(group)
        if coordinator == self.broker_id:
            response = await self._local_read(request)
        else:
            response = await self._remote(coordinator, ApiKey.READ_SHARE_GROUP_STATE, request)
        _raise_for(response.error_code, response.error_message)
        return StoredShareState(
            response.leader_epoch,
            response.start_offset,
            tuple(
                (b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
                for b in response.state_batches
            ),
        )

    async def write(
        self, group: str, topic_id: bytes, partition: int, state: StoredShareState
    ) -> None:
        """Stores ``state`` (acks=all at the coordinator); raises as :meth:`read`."""
        request = WriteShareGroupStateRequest(
            group_id=group,
            topic_id=topic_id,
            partition=partition,
            leader_epoch=state.leader_epoch,
            start_offset=state.start_offset,
            state_batches=[
                ShareStateBatch(
                    first_offset=first, last_offset=last, delivery_state=s, delivery_count=n
                )
                for first, last, s, n in state.batches
            ],
        )
        coordinator = self._coordinator(group)
        if coordinator == self.broker_id:
            response = await self._local_write(request)
        else:
            response = await self._remote(coordinator, ApiKey.WRITE_SHARE_GROUP_STATE, request)
        _raise_for(response.error_code, response.error_message)

    def _coordinator(self, group: str) -> int:
        states = self._metadata.topics.get(OFFSETS_TOPIC) or {}
        state = states.get(partition_for(group, self._partitions()))
        if state is None or state.leader < 0:
            raise CoordinatorNotAvailableError(
                f"group {group!r} has no coordinator now ({OFFSETS_TOPIC} has no leader for it)"
            )
        return state.leader

    async def _remote(self, coordinator: int, key: ApiKey, request: Request) -> Any:
        try:
            return await self._peers.request(coordinator, key, request)
        except PeerError as exc:
            raise CoordinatorNotAvailableError(
                f"the group's coordinator, broker {coordinator}, did not answer: {exc}"
            ) from None


def _raise_for(code: int, message: str | None) -> None:
    if code:
        error: ApiError = error_for_code(code, message or "")
        raise error
