"""A CreateTopics for a topic another request has just made (a client's retry of a create
whose answer it lost) answers TOPIC_ALREADY_EXISTS only once this broker knows the
topic's leaders, as the create that made it does: a producer told "it exists" can use it.

Found by the soak: the admin's retried create returned at once, the producer's first
send asked for the topic before any broker knew of it, and failed UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broker.admin import TopicAdmin
from broker.config import load_config
from broker.metadata import MetadataCache
from broker.zk import BrokerRegistration, NodeExists, paths
from protocol.apis import (
    UPDATE_METADATA_FULL,
    CreatableTopic,
    CreateTopicsRequest,
    UpdateMetadataBroker,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)
from protocol.errors import TopicAlreadyExistsError


class _ZooKeeperWithTopic:
    """One registered broker; the topic's znode is there already (another request made
    it); ``marked`` says whether it is being deleted."""

    def __init__(self, marked: bool = False) -> None:
        self.marked = marked
        self.written: list[str] = []

    async def get_children(self, path: str, *_: Any, **__: Any) -> list[str]:
        assert path == paths.BROKER_IDS
        return ["1"]

    async def get(self, path: str, *_: Any, **__: Any) -> tuple[bytes, None]:
        return BrokerRegistration(1, "127.0.0.1", 9092).to_json(0), None

    async def create(self, path: str, *_: Any, **__: Any) -> str:
        if path == paths.topic("orders"):
            raise NodeExists(path)
        self.written.append(path)
        return path

    async def set(self, path: str, *_: Any, **__: Any) -> None:
        self.written.append(path)

    async def exists(self, path: str, *_: Any, **__: Any) -> object | None:
        if path == paths.topic("orders"):
            return object()
        return object() if self.marked and path == paths.delete_topic("orders") else None


def _leaders_known(topic: str) -> UpdateMetadataRequest:
    return UpdateMetadataRequest(
        controller_id=1,
        controller_epoch=1,
        type=UPDATE_METADATA_FULL,
        partition_states=[
            UpdateMetadataPartitionState(
                topic_name=topic,
                partition_index=0,
                controller_epoch=1,
                leader=1,
                leader_epoch=0,
                isr=[1],
                replicas=[1],
            )
        ],
        live_brokers=[UpdateMetadataBroker(id=1, host="127.0.0.1", port=9092)],
    )


def _request(timeout_ms: int) -> CreateTopicsRequest:
    topic = CreatableTopic(name="orders", num_partitions=1, replication_factor=1)
    return CreateTopicsRequest(topics=[topic], timeout_ms=timeout_ms)


async def test_already_exists_waits_until_the_leaders_are_known() -> None:
    metadata = MetadataCache()
    config = load_config(env={}, overrides=["broker.id=1"])
    zk = _ZooKeeperWithTopic()
    admin = TopicAdmin(zk, config, metadata)  # type: ignore[arg-type]
    answer = asyncio.ensure_future(admin.create_topics(_request(30_000)))
    for _ in range(20):  # the answer waits for the controller's UpdateMetadata
        await asyncio.sleep(0)
    assert not answer.done()
    metadata.update(_leaders_known("orders"))
    (result,) = (await asyncio.wait_for(answer, 5)).topics
    assert result.error_code == TopicAlreadyExistsError.code
    assert zk.written == []  # the topic's config is left as its creator wrote it


async def test_already_exists_says_so_after_the_timeout_if_the_leaders_never_come() -> None:
    config = load_config(env={}, overrides=["broker.id=1"])
    admin = TopicAdmin(_ZooKeeperWithTopic(), config, MetadataCache())  # type: ignore[arg-type]
    (result,) = (await admin.create_topics(_request(50))).topics
    assert result.error_code == TopicAlreadyExistsError.code  # the truth, not a timeout


async def test_a_topic_being_deleted_is_answered_at_once() -> None:
    config = load_config(env={}, overrides=["broker.id=1"])
    zk = _ZooKeeperWithTopic(marked=True)
    admin = TopicAdmin(zk, config, MetadataCache())  # type: ignore[arg-type]
    (result,) = (await asyncio.wait_for(admin.create_topics(_request(30_000)), 5)).topics
    assert result.error_code == TopicAlreadyExistsError.code
    assert "being deleted; try again shortly" in (result.error_message or "")
