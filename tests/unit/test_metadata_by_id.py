"""A topic asked for by id (KIP-516) is never auto-created by its name (found in review).

Broker._metadata once resolved every id to a name before its loop, and the loop awaits the
auto-creation of a topic asked by name; an UpdateMetadata deleting the id's topic in that
await made the loop take the resolved name for a missing topic asked by name: it was
created again (under the deleted topic's name) and answered without the id asked. The ids
are answered first now, whole, before any await."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from broker.app import Broker
from broker.metadata import MetadataCache
from protocol.apis import (
    UPDATE_METADATA_FULL,
    UPDATE_METADATA_INCREMENTAL,
    MetadataRequest,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)
from protocol.errors import InvalidRequestError, UnknownTopicIdError
from protocol.kafka.wire import KafkaHeader

_OLD_ID = bytes(range(1, 17))


class _Admin:
    def __init__(self, cache: MetadataCache) -> None:
        self.cache = cache
        self.created: list[str] = []

    def may_create(self, topic: str) -> bool:
        return True

    async def auto_create(self, topic: str) -> None:
        self.created.append(topic)
        if topic == "new":  # meanwhile the controller finishes deleting "old"
            self.cache.update(
                UpdateMetadataRequest(
                    controller_id=1,
                    controller_epoch=1,
                    type=UPDATE_METADATA_INCREMENTAL,
                    deleted_topics=["old"],
                )
            )


async def test_a_topic_asked_by_id_is_never_created_by_its_name() -> None:
    cache = MetadataCache()
    cache.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_FULL,
            partition_states=[
                UpdateMetadataPartitionState(
                    topic_name="old",
                    partition_index=0,
                    controller_epoch=1,
                    leader=1,
                    leader_epoch=0,
                    isr=[1],
                    zk_version=0,
                    replicas=[1],
                )
            ],
            topic_ids={"old": _OLD_ID},
        )
    )
    admin = _Admin(cache)
    broker: Any = object.__new__(Broker)
    broker.metadata = cache
    broker._admin = admin
    broker._acl = SimpleNamespace(decider=lambda *_: lambda _name: True)
    broker.config = {"auto.create.topics.enable": True}
    broker.cluster_id = "c"
    broker._election = None
    broker._controller = None
    answer = await broker._metadata(
        None, MetadataRequest(topics=["new"], topic_ids=[_OLD_ID], allow_auto_topic_creation=True)
    )
    assert admin.created == ["new"]  # "old" was asked for by id: never created
    by_id = answer.topics[1]  # as it was when asked (its deletion ended after)
    assert (by_id.name, by_id.topic_id, by_id.error_code) == ("old", _OLD_ID, 0)
    # asked again: gone
    again = await broker._metadata(None, MetadataRequest(topics=[], topic_ids=[_OLD_ID]))
    (gone,) = again.topics
    assert (gone.topic_id, gone.error_code) == (_OLD_ID, UnknownTopicIdError.code)
    assert admin.created == ["new"]


async def test_a_kafka_client_names_topics_by_id_from_metadata_v12_only() -> None:
    """Kafka's rule: v10 and v11 carry topic ids, but a request naming a topic by its id
    before v12 is INVALID_REQUEST (Headwater's own protocol takes ids at any version)."""
    broker: Any = object.__new__(Broker)
    broker._admin = object()
    asked = MetadataRequest(topics=[], topic_ids=[_OLD_ID])
    for version in (10, 11):
        header = KafkaHeader(3, 0, 1, version, "c", asked)
        with pytest.raises(InvalidRequestError, match=f"version {version}"):
            await broker._metadata(header, asked)
    by_name = MetadataRequest(topics=["old"])
    cache = MetadataCache()
    cache.controller_epoch = 1
    broker.metadata, broker._admin = cache, _Admin(cache)
    broker._acl = SimpleNamespace(decider=lambda *_: lambda _name: True)
    broker.config = {"auto.create.topics.enable": False}
    broker.cluster_id, broker._election, broker._controller = "c", None, None
    answer = await broker._metadata(KafkaHeader(3, 0, 1, 11, "c", by_name), by_name)
    assert [t.name for t in answer.topics] == ["old"]  # by name: as ever
