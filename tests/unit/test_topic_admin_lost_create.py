"""A CreateTopics whose config create's answer was lost (the connection to ZooKeeper
dropped with it out) does not write its config over a topic another request made
meanwhile: the create's retry can wait out a whole outage (review 136). The topic is
TOPIC_ALREADY_EXISTS, its config as its creator wrote it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from broker.admin import TopicAdmin
from broker.config import load_config
from broker.metadata import MetadataCache
from broker.zk import (
    BrokerRegistration,
    NodeExists,
    NoNode,
    TopicAssignment,
    ZkConnectionLoss,
    paths,
    topic_config_from_json,
    topic_config_json,
)
from protocol.apis import (
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
    DeleteTopicsRequest,
)
from protocol.errors import TopicAlreadyExistsError


class _Zk:
    """In memory; the first create of the topic's config is lost unmade, and while the
    connection is down another broker's request makes the whole topic."""

    def __init__(self) -> None:
        self.nodes: dict[str, bytes] = {
            paths.broker(1): BrokerRegistration(1, "127.0.0.1", 9092).to_json(1)
        }
        self.lose = True

    async def get_children(self, path: str, *_: Any, **__: Any) -> list[str]:
        assert path == paths.BROKER_IDS
        return ["1"]

    async def get(self, path: str, *_: Any, **__: Any) -> tuple[bytes, None]:
        if path not in self.nodes:
            raise NoNode(path)
        return self.nodes[path], None

    async def exists(self, path: str, *_: Any, **__: Any) -> object | None:
        return object() if path in self.nodes else None

    async def create(self, path: str, value: bytes = b"", **_: Any) -> str:
        if path == paths.topic_config("t") and self.lose:
            self.lose = False
            # the other request (CreateTopics on another broker) runs to its end
            self.nodes[path] = topic_config_json({"retention.ms": "1000"})
            self.nodes[paths.topic("t")] = TopicAssignment("t", {0: [1]}).to_json()
            raise ZkConnectionLoss(f"{path}: the connection dropped with it out")
        if path in self.nodes:
            raise NodeExists(path)
        self.nodes[path] = value
        return path

    async def set(self, path: str, value: bytes, **_: Any) -> None:
        self.nodes[path] = value

    async def read_back(self, path: str) -> bytes | None:
        return self.nodes.get(path)

    async def keep_topic_id(self, *_: Any) -> None:
        pass


async def test_a_lost_config_create_leaves_the_config_of_a_topic_made_meanwhile() -> None:
    zk = _Zk()
    config = load_config(env={}, overrides=["broker.id=1"])
    admin = TopicAdmin(zk, config, MetadataCache())  # type: ignore[arg-type]
    topic = CreatableTopic(
        name="t",
        num_partitions=1,
        replication_factor=1,
        configs=[CreatableTopicConfig(name="retention.ms", value="60000")],
    )
    (result,) = (
        await admin.create_topics(CreateTopicsRequest(topics=[topic], timeout_ms=0))
    ).topics
    assert result.error_code == TopicAlreadyExistsError.code
    # the other request's topic keeps its creator's config (no notification was sent
    # for a change: its brokers run with 1000)
    held = topic_config_from_json("t", zk.nodes[paths.topic_config("t")])
    assert held == {"retention.ms": "1000"}


class _Recreated:
    """Topic t (czxid 1); the deletion marker's create is made, its answer lost, and by
    the time the broker looks again the controller has deleted t and another request
    made t anew (czxid 2)."""

    def __init__(self) -> None:
        self.topics = {"t": 1}
        self.markers: list[str] = []

    async def exists(self, path: str, *_: Any, **__: Any) -> Any:
        name = path.rsplit("/", 1)[1]
        czxid = self.topics.get(name) if path == paths.topic(name) else None
        return None if czxid is None else SimpleNamespace(czxid=czxid)

    async def create(self, path: str, value: bytes = b"", **_: Any) -> str:
        if not self.markers:
            self.markers.append(path)  # made; the controller deletes t, t is made again
            self.markers.clear()
            self.topics["t"] = 2
            raise ZkConnectionLoss(f"{path}: the connection dropped with it out")
        self.markers.append(path)
        return path


async def test_a_lost_deletion_marker_is_not_made_again_for_a_topic_made_anew() -> None:
    """Review 136: made again blindly, the marker deleted the new topic under the name."""
    zk = _Recreated()
    config = load_config(env={}, overrides=["broker.id=1"])
    admin = TopicAdmin(zk, config, MetadataCache())  # type: ignore[arg-type]
    answer = await admin.delete_topics(DeleteTopicsRequest(topic_names=["t"], timeout_ms=0))
    assert [r.error_code for r in answer.responses] == [0]
    assert zk.markers == []  # the new t is not marked
