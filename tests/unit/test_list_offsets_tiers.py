"""ListOffsets v8-v10 on a Kafka listener (KIP-405's earliest local offset, KIP-1005's
latest tiered one, KIP-1075's timeout): no log here is tiered, so they answer as an
untiered Kafka log does."""

from __future__ import annotations

from typing import Any

from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import (
    EARLIEST_LOCAL_TIMESTAMP,
    LATEST_TIERED_TIMESTAMP,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from tests.unit.test_fetch_v13 import leader  # noqa: F401 (the fixture)


async def test_list_offsets_earliest_local_and_latest_tiered_answer_as_untiered_kafka(
    leader: tuple[ReplicaManager, MetadataCache, Any],  # noqa: F811
) -> None:
    manager, _metadata, _fetch = leader
    asked = ListOffsetsRequest(
        topics=[
            ListOffsetsTopic(
                name="t",
                partitions=[
                    ListOffsetsPartition(partition_index=0, timestamp=EARLIEST_LOCAL_TIMESTAMP),
                    ListOffsetsPartition(partition_index=0, timestamp=LATEST_TIERED_TIMESTAMP),
                ],
            )
        ]
    )
    local, tiered = manager.list_offsets(asked).topics[0].partitions
    assert (local.error_code, local.timestamp, local.offset) == (0, -1, 0)  # the log start
    assert (tiered.error_code, tiered.timestamp, tiered.offset) == (0, -1, -1)  # none tiered
    assert (local.leader_epoch, tiered.leader_epoch) == (1, -1)  # no offset, no epoch
