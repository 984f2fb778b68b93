"""The controller never answers UNKNOWN_TOPIC_OR_PARTITION for a topic it has: clients
believe a controller's "no such topic" (a stale broker's they check with it), so while its
own cache has not yet heard what it told the other brokers, it says LEADER_NOT_AVAILABLE
("being created"), which clients wait out.

Found by the soak: a topic made, its create answered by a broker that had the news, the
first send asked a broker that had not, and the controller (its cache a moment behind)
confirmed "does not exist": the send failed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from broker.app import Broker
from broker.metadata import MetadataCache
from protocol.apis import MetadataRequest
from protocol.errors import LeaderNotAvailableError, UnknownTopicOrPartitionError


def _broker(controller: Any) -> Any:
    broker: Any = object.__new__(Broker)
    cache = MetadataCache()
    cache.controller_epoch = 1
    broker.metadata = cache
    broker._admin = SimpleNamespace(may_create=lambda _name: True)
    broker._acl = SimpleNamespace(decider=lambda *_: lambda _name: True)
    broker.config = {"auto.create.topics.enable": False}
    broker.cluster_id, broker._election, broker._controller = "c", None, controller
    return broker


def _controller(active: bool, deleting: frozenset[str] = frozenset()) -> SimpleNamespace:
    return SimpleNamespace(
        active=active, assignments={"made": {0: [1]}, "going": {0: [1]}}, deleting=deleting
    )


async def _codes(broker: Any) -> dict[str, int]:
    asked = MetadataRequest(topics=["made", "going", "never"])
    return {t.name: t.error_code for t in (await broker._metadata(None, asked)).topics}


async def test_the_controller_says_being_created_for_a_topic_it_has() -> None:
    codes = await _codes(_broker(_controller(active=True, deleting=frozenset({"going"}))))
    assert codes == {
        "made": LeaderNotAvailableError.code,  # retriable: clients wait it out
        "going": UnknownTopicOrPartitionError.code,  # being deleted: gone to the clients
        "never": UnknownTopicOrPartitionError.code,
    }


async def test_a_broker_not_controller_answers_from_its_cache_alone() -> None:
    for controller in (None, _controller(active=False)):
        codes = await _codes(_broker(controller))
        assert set(codes.values()) == {UnknownTopicOrPartitionError.code}
