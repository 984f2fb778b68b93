"""What the producer (and every client) knows of the cluster: bootstrap parsing and the
metadata view built from Metadata answers, without a socket."""

import asyncio
import dataclasses
import time
from types import MappingProxyType
from typing import Any

import pytest

from client import Producer
from client.cluster import CONFIRM_S, Cluster, ClusterMetadata, _answered, parse_bootstrap
from client.errors import ConfigurationError
from client.types import TopicPartition
from protocol.apis import (
    ApiKey,
    MetadataBroker,
    MetadataPartition,
    MetadataResponse,
    MetadataTopic,
)
from protocol.errors import (
    LeaderNotAvailableError,
    NetworkError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)
from tests.unit.test_producer_sender import ScriptedCluster, ok, started


def test_bootstrap_as_a_string_or_a_list() -> None:
    assert parse_bootstrap("a:1, b:2,") == [("a", 1), ("b", 2)]
    assert parse_bootstrap(["127.0.0.1:9093", "[::1]:9094"]) == [
        ("127.0.0.1", 9093),
        ("::1", 9094),
    ]
    assert parse_bootstrap("kafka") == [("kafka", 9092)]  # Kafka's default port


@pytest.mark.parametrize("bad", ["", " , ", "h:port", "h:0", "h:70000", ":9092"])
def test_bad_bootstrap_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="bootstrap"):
        parse_bootstrap(bad)


def _response(*topics: MetadataTopic) -> MetadataResponse:
    return MetadataResponse(
        brokers=[
            MetadataBroker(node_id=1, host="h1", port=1),
            MetadataBroker(node_id=2, host="h2", port=2),
        ],
        cluster_id="c",
        controller_id=2,
        topics=list(topics),
    )


def _topic(name: str, leaders: list[int]) -> MetadataTopic:
    return MetadataTopic(
        name=name,
        partitions=[
            MetadataPartition(partition_index=i, leader_id=leader, replica_nodes=[max(leader, 1)])
            for i, leader in enumerate(leaders)
        ],
    )


def test_leaders_and_available_partitions() -> None:
    view = ClusterMetadata().merged(_response(_topic("t", [1, -1, 2, 3])), ["t"])
    assert (view.cluster_id, view.controller_id, sorted(view.brokers)) == ("c", 2, [1, 2])
    assert view.leader_for(TopicPartition("t", 0)) == 1
    assert view.leader_for(TopicPartition("t", 1)) is None  # no live leader
    assert view.leader_for(TopicPartition("t", 3)) is None  # a leader not among the brokers
    assert view.leader_for(TopicPartition("t", 9)) is None
    assert view.leader_for(TopicPartition("other", 0)) is None
    assert view.topics["t"].available == (0, 2, 3)
    assert view.partitions_for("t") == {0, 1, 2, 3}
    assert view.partitions_for("other") is None


def test_an_answer_about_some_topics_keeps_what_was_known_of_the_others() -> None:
    view = ClusterMetadata().merged(_response(_topic("a", [1]), _topic("b", [2])), None)
    refused = MetadataTopic(name="b", error_code=UnknownTopicOrPartitionError.code)
    view = view.merged(_response(_topic("a", [2]), refused), ["a", "b"])
    assert view.leader_for(TopicPartition("a", 0)) == 2
    assert "b" not in view.topics  # deleted since
    assert isinstance(view.topic_errors["b"], UnknownTopicOrPartitionError)
    view = view.merged(_response(_topic("c", [1])), ["c"])
    assert set(view.topics) == {"a", "c"} and "b" in view.topic_errors
    view = view.merged(_response(_topic("b", [1])), ["b"])  # created again
    assert "b" in view.topics and "b" not in view.topic_errors


def test_an_answer_about_all_topics_replaces_the_view() -> None:
    view = ClusterMetadata().merged(_response(_topic("a", [1])), ["a"])
    view = view.merged(_response(_topic("b", [1]), MetadataTopic(name="x", error_code=5)), None)
    assert set(view.topics) == {"b"}
    assert isinstance(view.topic_errors["x"], LeaderNotAvailableError)


class CountingCluster(Cluster):
    """A Cluster whose Metadata requests are answered here, slowly enough to overlap."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("unused:1", client_id="test", **kwargs)
        self.asked: list[list[str] | None] = []
        self.delay_s = 0.01

    async def send_any(
        self, api_key: ApiKey, request: Any, *, idempotent: bool = True, **_: Any
    ) -> Any:
        assert api_key == ApiKey.METADATA
        self.asked.append(request.topics)
        await asyncio.sleep(self.delay_s)
        return _response(*(_topic(t, [1]) for t in request.topics or []))


async def test_concurrent_refreshes_share_one_request() -> None:
    cluster = CountingCluster()
    cluster.add_topics(["a"])
    views = await asyncio.gather(*(cluster.refresh() for _ in range(5)))
    assert cluster.asked == [["a"]]
    assert all(v is views[0] for v in views)
    await cluster.close()


async def test_a_topic_added_during_a_refresh_gets_a_refresh_of_its_own() -> None:
    cluster = CountingCluster()
    cluster.add_topics(["a"])
    first = asyncio.create_task(cluster.refresh())
    await asyncio.sleep(0)
    cluster.add_topics(["b"])
    view = await cluster.refresh()  # must not settle for the answer about "a" alone
    await first
    assert cluster.asked == [["a"], ["a", "b"]]
    assert set(view.topics) == {"a", "b"}
    await cluster.close()


async def test_metadata_is_refreshed_every_metadata_max_age_ms() -> None:
    cluster = CountingCluster(metadata_max_age_ms=50)
    await cluster.start()
    await asyncio.sleep(0.4)
    assert 3 <= len(cluster.asked) <= 12  # about every 60 ms, never in a tight loop
    await cluster.close()
    asked = len(cluster.asked)
    await asyncio.sleep(0.15)
    assert len(cluster.asked) == asked  # closed: no more


async def test_refresh_requests_are_rate_limited_by_retry_backoff() -> None:
    cluster = CountingCluster(retry_backoff_ms=200)
    cluster.delay_s = 0
    await cluster.refresh()
    for _ in range(10):
        cluster.request_refresh()  # a storm of NOT_LEADER answers
        await asyncio.sleep(0.005)
    assert len(cluster.asked) == 1
    await asyncio.sleep(0.2)  # the backoff passes: the next request is honoured
    cluster.request_refresh()
    deadline = asyncio.get_running_loop().time() + 5
    while len(cluster.asked) < 2:
        assert asyncio.get_running_loop().time() < deadline, "the refresh never came"
        await asyncio.sleep(0.001)
    assert len(cluster.asked) == 2
    await cluster.close()


class StaleCluster(CountingCluster):
    """Every broker but the controller (broker 2, h2:2) says ``stale`` topics do not
    exist; the controller answers from ``truth`` (a topic missing there is unknown to
    it too), or cannot be reached when ``truth`` is None."""

    def __init__(self, stale: set[str], truth: dict[str, list[int]] | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.stale, self.truth = stale, truth
        self.controller_asked: list[list[str]] = []

    async def send_any(
        self, api_key: ApiKey, request: Any, *, idempotent: bool = True, **_: Any
    ) -> Any:
        self.asked.append(request.topics)
        return _response(
            *(
                MetadataTopic(name=t, error_code=UnknownTopicOrPartitionError.code)
                if t in self.stale
                else _topic(t, [1])
                for t in request.topics or []
            )
        )

    async def _send_to(self, address: Any, api_key: ApiKey, request: Any) -> Any:
        assert address == ("h2", 2) and api_key == ApiKey.METADATA
        self.controller_asked.append(request.topics)
        if self.truth is None:
            raise NetworkError("cannot connect to broker h2:2")
        return _response(
            *(
                _topic(t, self.truth[t])
                if t in self.truth
                else MetadataTopic(name=t, error_code=UnknownTopicOrPartitionError.code)
                for t in request.topics
            )
        )


async def test_wait_for_topic_fails_fast_on_a_topic_the_controller_does_not_know() -> None:
    cluster = StaleCluster({"x"}, truth={})
    with pytest.raises(UnknownTopicOrPartitionError, match="headwater topics create x"):
        await cluster.wait_for_topic("x", timeout_ms=60_000)
    assert cluster.asked == [["x"]]
    assert cluster.controller_asked == [["x"]]  # one broker's word is not enough
    await cluster.close()


async def test_a_broker_that_has_not_heard_of_a_topic_yet_is_not_believed() -> None:
    # a broker just restarted (or cut off for a while) before the controller's news
    cluster = StaleCluster({"x"}, truth={"x": [1, 2]})
    found = await cluster.wait_for_topic("x", timeout_ms=60_000)
    assert sorted(found.partitions) == [0, 1]
    assert "x" not in cluster.metadata.topic_errors
    await cluster.close()


async def test_a_known_topic_keeps_its_metadata_while_the_controller_cannot_be_asked() -> None:
    cluster = StaleCluster(set(), truth=None)
    cluster.add_topics(["a"])
    await cluster.refresh()
    cluster.stale = {"a"}
    view = await cluster.refresh()
    assert view.partitions_for("a") == {0}  # as before: not gone on one broker's word
    assert "a" not in view.topic_errors
    assert cluster.controller_asked == [["a"]]
    await cluster.close()


async def test_a_deposed_controller_named_by_a_stale_broker_is_not_believed() -> None:
    # the answering broker's news is old: it names broker 2, which has since stepped down
    # (and names broker 1) and may be as far behind on topics
    class Deposed(StaleCluster):
        async def _send_to(self, address: Any, api_key: ApiKey, request: Any) -> Any:
            answer = await super()._send_to(address, api_key, request)
            answer.controller_id = 1
            return answer

    cluster = Deposed(set(), truth={})
    cluster.add_topics(["a"])
    await cluster.refresh()
    cluster.stale = {"a"}
    view = await cluster.refresh()
    assert view.partitions_for("a") == {0}  # kept: neither broker's word is the controller's
    assert "a" not in view.topic_errors
    assert cluster.controller_asked == [["a"]]
    await cluster.close()


async def test_the_controllers_own_answer_is_believed_without_asking_again() -> None:
    class Controller(StaleCluster):
        async def send_any(
            self, api_key: ApiKey, request: Any, *, idempotent: bool = True, **_: Any
        ) -> Any:
            _answered.set(("h2", 2))  # as the real send_any records who answered
            return await super().send_any(api_key, request)

    cluster = Controller({"x"}, truth={"x": [1]})
    with pytest.raises(UnknownTopicOrPartitionError):
        await cluster.wait_for_topic("x", timeout_ms=60_000)
    assert cluster.controller_asked == []
    await cluster.close()


async def test_wait_for_topic_waits_out_leader_not_available_then_times_out() -> None:
    class Creating(CountingCluster):
        async def send_any(
            self, api_key: ApiKey, request: Any, *, idempotent: bool = True, **_: Any
        ) -> Any:
            self.asked.append(request.topics)
            return _response(MetadataTopic(name="x", error_code=LeaderNotAvailableError.code))

    cluster = Creating(retry_backoff_ms=10)
    with pytest.raises(RequestTimedOutError, match="not present in metadata after 200 ms"):
        await cluster.wait_for_topic("x", timeout_ms=200)
    assert len(cluster.asked) > 3
    await cluster.close()


async def test_a_new_topic_is_asked_for_alone_and_together_with_others_new_at_once() -> None:
    """Kafka's KIP-526: meeting its N-th topic, a producer asked for all N (N x N / 2
    topics' metadata for N topics); now for the new one, and topics met in the same
    loop pass share one request. The known ones stay, and the view's age is kept, so
    the periodic refresh of every topic still comes."""
    cluster = CountingCluster()
    cluster.add_topics(["a", "b"])
    full = await cluster.refresh()
    for name in ("c", "d"):
        await cluster.wait_for_topic(name, timeout_ms=1000)
    views = await asyncio.gather(*(cluster.wait_for_topic(n, timeout_ms=1000) for n in "efg"))
    assert [v.name for v in views] == ["e", "f", "g"]
    assert cluster.asked == [["a", "b"], ["c"], ["d"], ["e", "f", "g"]]
    assert set(cluster.metadata.topics) == set("abcdefg")
    assert cluster.metadata.updated_at == full.updated_at
    assert cluster.topics == frozenset("abcdefg")  # all kept by the periodic refresh
    await cluster.close()


async def test_a_new_topic_request_that_fails_fails_its_callers_and_the_next_is_new() -> None:
    class Failing(CountingCluster):
        async def send_any(
            self, api_key: ApiKey, request: Any, *, idempotent: bool = True, **_: Any
        ) -> Any:
            if not self.asked:
                self.asked.append(request.topics)
                raise RequestTimedOutError("no broker answered")
            return await super().send_any(api_key, request, idempotent=idempotent)

    cluster = Failing()
    results = await asyncio.gather(
        *(cluster.wait_for_topic(n, timeout_ms=1000) for n in "xy"), return_exceptions=True
    )
    assert all(isinstance(r, RequestTimedOutError) for r in results)
    assert (await cluster.wait_for_topic("x", timeout_ms=1000)).name == "x"
    assert cluster.asked == [["x", "y"], ["x"]]
    await cluster.close()


async def test_closing_the_client_fails_a_new_topic_request_in_flight_clearly() -> None:
    """From a review: the request for new topics was not the client's to cancel on
    close(); it is now, and its callers hear that the client closed (not a bare
    CancelledError, which reads as their own cancellation)."""
    cluster = CountingCluster()
    cluster.delay_s = 3600
    waiting = asyncio.create_task(cluster.wait_for_topic("x", timeout_ms=60_000))
    for _ in range(10):  # a few loop passes: the task, wait_for's, the request's
        await asyncio.sleep(0)
    assert cluster.asked == [["x"]]
    await cluster.close()
    with pytest.raises(NetworkError, match="closed"):
        await waiting


async def test_a_topic_keep_topic_refuses_leaves_the_next_refresh_and_the_view() -> None:
    cluster = CountingCluster(keep_topic=lambda topic: topic != "old")
    cluster.add_topics(["old", "new"])
    cluster.metadata = cluster.metadata.merged(_response(_topic("old", [1])), ["old"])
    view = await cluster.refresh()
    assert cluster.asked == [["new"]]
    assert set(view.topics) == {"new"}  # a later use of "old" asks for it again
    assert cluster.topics == {"new"}
    await cluster.close()


async def test_the_producer_forgets_a_topic_idle_for_metadata_max_idle_ms() -> None:
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    cluster.release.clear()  # the broker holds its answers: the batch stays unfinished
    producer = await started(cluster, metadata_max_idle_ms=5_000)
    future = await producer.send("a", b"v")
    assert producer._keep_topic("a")
    producer._topic_used["a"] -= 6  # idle past metadata_max_idle_ms...
    assert producer._keep_topic("a")  # ...but a record is still to be delivered
    cluster.answers.append(ok)
    cluster.release.set()
    await future
    assert not producer._keep_topic("a")
    assert "a" not in producer._topic_used and "a" not in producer._partitions
    assert "a" not in producer._lanes  # its next record goes the whole way, and asks
    assert not producer._keep_topic("never-sent-to")
    await producer.send("a", b"w")
    assert producer._keep_topic("a")
    cluster.answers.append(ok)
    await producer.stop()


async def test_the_producer_forgets_at_once_a_deleted_topic_with_nothing_to_deliver() -> None:
    """The soak's admin made and deleted a topic every second or so: its producer asked
    for (and had the controller confirm) every deleted one at each refresh, for five
    minutes each. A topic the controller says is gone leaves at the next refresh."""
    tp = TopicPartition("a", 0)
    cluster = ScriptedCluster({tp: 1})
    producer = await started(cluster, metadata_max_idle_ms=300_000)
    cluster.answers.append(ok)
    await (await producer.send("a", b"v"))
    assert producer._keep_topic("a")  # sent to a moment ago
    gone = UnknownTopicOrPartitionError("topic 'a' does not exist")
    before = dataclasses.replace(cluster.metadata, topic_errors=MappingProxyType({"a": gone}))
    cluster.metadata = before
    assert producer._keep_topic("a")  # sent to after that view: it may be made again
    cluster.metadata = dataclasses.replace(before, updated_at=time.monotonic())
    assert not producer._keep_topic("a")  # the controller's word came after the last send
    assert "a" not in producer._topic_used and "a" not in producer._partitions
    await producer.stop()


def test_metadata_max_idle_ms_is_at_least_5_s() -> None:
    with pytest.raises(ConfigurationError, match="metadata_max_idle_ms"):
        Producer(bootstrap_servers="h:1", metadata_max_idle_ms=4_999)


async def test_describing_a_missing_topic_while_the_controller_is_down_says_it_is_missing() -> None:
    # "nope" does not exist; the broker answering says so, and the controller (h2:2) is
    # down: the caller asked, so it gets that answer (review 96: it was a KeyError)
    cluster = StaleCluster({"nope"}, truth=None)
    answer = await cluster.fetch_metadata(["nope"])
    assert isinstance(answer.topic_errors.get("nope"), UnknownTopicOrPartitionError)
    assert "nope" not in cluster.metadata.topic_errors  # the shared view does not believe it
    await cluster.close()


async def test_a_hung_controller_does_not_hold_a_metadata_refresh() -> None:
    # a topic still missing (not made yet, deleted since) is asked of the controller at
    # each refresh; a paused controller would hold every refresh for request_timeout_ms
    # and a leader move of the other topics would be learnt that late (review 96)
    class HungController(StaleCluster):
        async def _send_to(self, address: Any, api_key: ApiKey, request: Any) -> Any:
            self.controller_asked.append(request.topics)
            await asyncio.sleep(self.request_timeout_ms / 1000)
            raise RequestTimedOutError("no answer from h2:2")

    cluster = HungController({"missing"}, truth=None, request_timeout_ms=30_000)
    cluster.add_topics(["a", "missing"])
    # held for request_timeout_ms (30 s), this wait would run out: CONFIRM_S bounds it
    view = await asyncio.wait_for(cluster.refresh(), CONFIRM_S * 5)
    assert view.partitions_for("a") == {0}
    await cluster.close()


async def test_a_topic_forgotten_while_its_send_waits_for_metadata_is_still_refreshed() -> None:
    # metadata_max_idle_ms below max_block_ms: the topic is forgotten by a full refresh
    # while its first send waits for it; the answer that send gets brings it back into
    # the view, so the refreshes must ask for it again (review 96: a leader move of it
    # was never learnt)
    class Creating(CountingCluster):
        ready = False

        async def send_any(
            self, api_key: ApiKey, request: Any, *, idempotent: bool = True, **_: Any
        ) -> Any:
            self.asked.append(request.topics)
            await asyncio.sleep(self.delay_s)
            return _response(
                *(
                    MetadataTopic(name=t, error_code=LeaderNotAvailableError.code)
                    if t == "t" and not self.ready
                    else _topic(t, [1])
                    for t in request.topics or []
                )
            )

    producer = Producer(
        bootstrap_servers="unused:1",
        metadata_max_idle_ms=5_000,
        enable_idempotence=False,
        acks=1,
        linger_ms=60_000,  # the batch waits here: no Produce is sent in this test
        retry_backoff_ms=10,
    )
    cluster = Creating(keep_topic=producer._keep_topic, retry_backoff_ms=10)
    producer._cluster = cluster  # type: ignore[assignment]
    await producer.start()
    sending = asyncio.create_task(producer.send("t", b"v"))
    await asyncio.sleep(0.05)  # send() waits in wait_for_topic (LEADER_NOT_AVAILABLE)
    assert not sending.done() and "t" in cluster.topics
    producer._topic_used["t"] -= 6  # idle past the limit while it waits...
    await cluster.refresh()  # ...when a full refresh begins
    cluster.ready = True
    await asyncio.wait_for(sending, 5)
    assert "t" in cluster.metadata.topics
    cluster.asked.clear()
    await cluster.refresh()
    try:
        assert "t" in cluster.topics
        assert cluster.asked == [["t"]]
    finally:
        await producer._close()


async def test_a_broker_that_stopped_answering_is_tried_last() -> None:
    # a paused broker's connection stays open: tried first, it held a FindCoordinator or
    # a Metadata request for request_timeout_ms (Kafka's leastLoadedNode passes it over)
    class _Conn:
        connected = True

        def __init__(self, since: float | None) -> None:
            self.since = since

        def waiting_since(self) -> float | None:
            return self.since

    cluster = Cluster("b:9", client_id="t")
    cluster.metadata = ClusterMetadata().merged(_response(), None)  # brokers h1:1 and h2:2
    now = asyncio.get_running_loop().time()
    cluster._connections[("h1", 1, "")] = _Conn(now - 5)  # unanswered for 5 s
    cluster._connections[("h2", 2, "")] = _Conn(None)
    cluster._connections[("h2", 2, "fetch")] = _Conn(now - 0.3)  # a long poll: fine
    for _ in range(10):  # the known brokers are shuffled first
        assert cluster._candidates() == [("h2", 2), ("b", 9), ("h1", 1)]
