"""A topic the controller said was gone, made again, and sent to while a full refresh
runs, stays among the refreshed topics (review 99: the full refresh forgot it under the
send, as the stale "gone" still stood; the send went through and the topic's metadata was
never refreshed again, so a leader move left the producer retrying the old leader)."""

import asyncio
from typing import Any

from client import Producer
from client.cluster import Cluster, _answered
from protocol.apis import (
    ApiKey,
    MetadataBroker,
    MetadataPartition,
    MetadataResponse,
    MetadataTopic,
)
from protocol.errors import UnknownTopicOrPartitionError
from tests.unit.test_producer_sender import ok


def _answer(topics: list[str], truth: dict[str, int]) -> MetadataResponse:
    return MetadataResponse(
        brokers=[MetadataBroker(node_id=n, host=f"h{n}", port=n) for n in (1, 2)],
        cluster_id="c",
        controller_id=1,  # every answer here is the controller's own (h1:1)
        topics=[
            MetadataTopic(
                name=t,
                partitions=[MetadataPartition(partition_index=0, leader_id=truth[t])],
            )
            if t in truth
            else MetadataTopic(name=t, error_code=UnknownTopicOrPartitionError.code)
            for t in topics
        ],
    )


class Fake(Cluster):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("h1:1", client_id="test", **kwargs)
        self.truth: dict[str, int] = {}
        self.asked: list[list[str]] = []
        self.gate: asyncio.Event | None = None  # holds the next answer about ["t"] alone
        self.held = asyncio.Event()

    async def send_any(self, api_key: ApiKey, request: Any, *, idempotent: bool = True) -> Any:
        if api_key != ApiKey.METADATA:
            raise AssertionError(api_key)
        _answered.set(("h1", 1))  # answered by the controller itself
        self.asked.append(list(request.topics or []))
        if self.gate is not None and request.topics == ["t"]:
            gate, self.gate = self.gate, None
            self.held.set()
            await gate.wait()
        return _answer(list(request.topics or []), self.truth)

    async def connect(self, node_id: int, purpose: str = "") -> Any:
        return None

    async def send(self, node_id: int, api_key: ApiKey, request: Any, **_: Any) -> Any:
        assert api_key == ApiKey.PRODUCE
        return ok(request)


async def test_a_topic_made_again_is_not_forgotten_under_a_send() -> None:
    producer = Producer(bootstrap_servers="h1:1", enable_idempotence=False, acks=1)
    cluster = producer._cluster = Fake(keep_topic=producer._keep_topic)
    await producer.start()
    cluster.truth = {"t": 1}
    await asyncio.wait_for(await producer.send("t", b"v"), 5)
    del cluster.truth["t"]  # deleted: the controller confirms
    await cluster.refresh()
    assert isinstance(cluster.metadata.topic_errors["t"], UnknownTopicOrPartitionError)
    cluster.truth["t"] = 1  # made again; a send to it, and its metadata is slow
    cluster.gate = release = asyncio.Event()
    sending = asyncio.create_task(producer.send("t", b"v2"))
    await cluster.held.wait()
    await cluster.refresh()  # any full refresh meanwhile (periodic, a NOT_LEADER elsewhere)
    release.set()
    await asyncio.wait_for(await asyncio.wait_for(sending, 5), 5)  # the send succeeded
    assert "t" in cluster.metadata.topics
    cluster.truth["t"] = 2  # its leader moves: the next refreshes must see it
    await cluster.refresh()
    assert cluster.metadata.topics["t"].partitions[0].leader == 2, (
        f"t is sent to, yet no refresh asks for it: asked {cluster.asked[-1]}"
    )
    await producer.stop()
