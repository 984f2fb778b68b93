"""CreateTopics on a broker that cannot reach ZooKeeper (its session expired, ZooKeeper
paused): each topic gets a retriable error that says so, the other topics of the request
are answered for themselves, and nothing raises out of the handler.

Found by the soak: the ZooKeeper error escaped the handler, so the whole request was
answered UNKNOWN_SERVER_ERROR (not retriable) and logged as a broker bug.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import structlog.testing
from kazoo.exceptions import (
    ConnectionLoss,
    NoAuthError,
    OperationTimeoutError,
    SessionExpiredError,
)

from broker import zk
from broker.admin import TopicAdmin
from broker.config import load_config
from broker.metadata import MetadataCache
from broker.zk import ZkBridge, ZkError, ZkUnavailable
from protocol.apis import (
    AlterConfigOp,
    CreatableTopic,
    CreateTopicsRequest,
    DescribeConfigsRequest,
    DescribeConfigsResource,
    IncrementalAlterableConfig,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResource,
)
from protocol.errors import InvalidTopicError, RequestTimedOutError, UnknownTopicOrPartitionError


class _ZooKeeperGone:
    """Every read fails as kazoo's expired session makes ZkBridge fail it."""

    async def get_children(self, path: str, *_: Any, **__: Any) -> list[str]:
        raise ZkUnavailable(f"ZooKeeper unavailable for {path}: SessionExpiredError()")

    async def get(self, path: str, *_: Any, **__: Any) -> Any:
        raise ZkUnavailable(f"ZooKeeper unavailable for {path}: SessionExpiredError()")


async def test_create_topics_without_zookeeper_answers_each_topic_retriably() -> None:
    config = load_config(env={}, overrides=["broker.id=1"])
    admin = TopicAdmin(_ZooKeeperGone(), config, MetadataCache())  # type: ignore[arg-type]
    request = CreateTopicsRequest(
        topics=[
            CreatableTopic(name="orders", num_partitions=3, replication_factor=3),
            CreatableTopic(name="bad name!", num_partitions=1, replication_factor=1),
        ],
        timeout_ms=30_000,
    )
    response = await admin.create_topics(request)
    results = {t.name: t for t in response.topics}
    orders = results["orders"]
    assert orders.error_code == RequestTimedOutError.code
    assert RequestTimedOutError.retriable
    assert "could not reach ZooKeeper" in (orders.error_message or "")
    assert results["bad name!"].error_code == InvalidTopicError.code  # answered on its own


@pytest.mark.parametrize(
    ("kazoo_error", "outage"),
    [
        (SessionExpiredError(), True),
        (ConnectionLoss(), True),
        (OperationTimeoutError(), True),
        (NoAuthError(), False),  # a refusal, not an outage
    ],
)
async def test_zookeeper_outages_are_told_from_refusals(
    kazoo_error: Exception, outage: bool
) -> None:
    bridge = ZkBridge.__new__(ZkBridge)  # only its loop is used by _await
    bridge._loop = asyncio.get_running_loop()

    class _Failed:
        def rawlink(self, callback: Any) -> None:
            callback(self)

        def get_nowait(self) -> Any:
            raise kazoo_error

    with pytest.raises(ZkError) as caught:
        await bridge._await(_Failed(), "/brokers/ids")  # type: ignore[arg-type]
    assert isinstance(caught.value, ZkUnavailable) is outage


async def test_a_resource_describe_configs_refuses_is_answered_and_logged() -> None:
    """The answer is not an error, so the server logs nothing of it: the refusal of one
    resource is logged here (an operator whose tool shows nothing finds why)."""

    class _NoTopic:
        async def exists(self, path: str, *_: Any, **__: Any) -> Any:
            return None

    config = load_config(env={}, overrides=["broker.id=1"])
    admin = TopicAdmin(_NoTopic(), config, MetadataCache())  # type: ignore[arg-type]
    request = DescribeConfigsRequest(
        resources=[DescribeConfigsResource(resource_type=2, resource_name="gone")]
    )
    with structlog.testing.capture_logs() as logs:
        response = await admin.describe_configs(request)
    assert response.results[0].error_code == UnknownTopicOrPartitionError.code
    (refused,) = [e for e in logs if e["event"] == "config.describe_refused"]
    assert (refused["resource"], refused["error"]) == ("gone", "UNKNOWN_TOPIC_OR_PARTITION")


class _AnswerLostOnce:
    """A topic's config znode whose first write is made but answered as lost with the
    connection (ZkBridge.write_config says False: read again)."""

    def __init__(self) -> None:
        self.config: dict[str, str] = {}
        self.version = -1
        self.writes = 0

    async def exists(self, path: str, *_: Any, **__: Any) -> Any:
        return object()

    async def get(self, path: str, *_: Any, **__: Any) -> Any:
        if self.version < 0:
            raise zk.NoNode(path)
        return zk.topic_config_json(self.config), SimpleNamespace(version=self.version)

    async def write_config(self, path: str, config: dict[str, str], **_: Any) -> bool:
        self.config, self.version, self.writes = dict(config), self.version + 1, self.writes + 1
        return self.writes > 1


async def test_a_topic_config_change_whose_answer_was_lost_is_answered_done_and_made_once() -> None:
    """Read again, the change is there: done, not written twice, and logged as changed
    (review 135: the read that found it there returned without the log line)."""
    config = load_config(env={}, overrides=["broker.id=1"])
    store = _AnswerLostOnce()
    admin = TopicAdmin(store, config, MetadataCache())  # type: ignore[arg-type]
    request = IncrementalAlterConfigsRequest(
        resources=[
            IncrementalAlterConfigsResource(
                resource_type=2,
                resource_name="orders",
                configs=[
                    IncrementalAlterableConfig(
                        name="retention.ms", config_operation=AlterConfigOp.SET, value="60000"
                    )
                ],
            )
        ]
    )
    with structlog.testing.capture_logs() as logs:
        response = await admin.incremental_alter_configs(request)
    assert response.responses[0].error_code == 0
    assert (store.config, store.writes) == ({"retention.ms": "60000"}, 1)
    assert [e["overrides"] for e in logs if e["event"] == "topic.config_changed"] == [
        {"retention.ms": "60000"}
    ]
