"""Where a coordinator is: the leader of its key's partition of an internal topic
(``__consumer_offsets`` for groups, ``__transaction_state`` for transactional ids), which
the first FindCoordinator creates. Shared by both coordinators."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from broker.coordinator.doubt import Doubt
from broker.metadata import MetadataCache
from protocol.apis import FindCoordinatorResponse
from protocol.errors import CoordinatorNotAvailableError
from protocol.group_log import partition_for

__all__ = ["coordinator_of", "replication_factor"]


async def coordinator_of(
    metadata: MetadataCache,
    topic: str,
    partitions: int,
    key: str,
    listener: str,
    *,
    create: Callable[[], Coroutine[Any, Any, None]],
    what: str,
    broker_id: int,
    doubt: Doubt,
) -> FindCoordinatorResponse:
    """The leader of ``key``'s partition of ``topic``, at its ``listener`` address (the
    one the request came in on: a TLS client must be sent to a TLS port). A topic not
    there yet is created (``create``), and the answer is COORDINATOR_NOT_AVAILABLE,
    retriable, meanwhile. So is "this broker" while in ``doubt``: a member refused here
    must ask another broker, which may know the new coordinator."""
    states = metadata.topics.get(topic)
    if states is None:
        await create()
        # (also a broker just restarted, not yet told of the topic: the create is refused)
        raise CoordinatorNotAvailableError(
            f"{topic} is not known to this broker yet (being created, or not yet heard "
            "of); retry shortly"
        )
    state = states.get(partition_for(key, partitions))
    leader = state.leader if state is not None else -1
    address = metadata.address(leader, listener)
    if leader == broker_id and address is not None and not doubt.known():
        doubt.refused()
        raise CoordinatorNotAvailableError(
            f"broker {broker_id} cannot tell whether it still coordinates {what} {key!r}: "
            "its ZooKeeper session is in doubt; retry"
        )
    if address is None:
        raise CoordinatorNotAvailableError(
            f"the coordinator of {what} {key!r} is not available; retry shortly"
        )
    return FindCoordinatorResponse(node_id=leader, host=address[0], port=address[1])


def replication_factor(wanted: int, metadata: MetadataCache) -> int:
    """An internal topic's replication factor: the setting, capped at the brokers there are."""
    return max(min(wanted, len(metadata.brokers)), 1)
