"""The consumer's Fetch outcomes without a socket: whatever becomes of a Fetch (answered,
failed, or its task cancelled by stop()), its partitions can be fetched again; a failure
that is not an ApiError is logged and backed off, never a silent stall."""

import asyncio
from typing import Any

import pytest

from client import Consumer
from client.types import TopicPartition
from protocol.apis import FetchRequest

TP = TopicPartition("t", 0)


class _Unconnected:
    """A cluster with no open connection: a Fetch goes by ``send`` (connect first)."""

    def __init__(self, outcome: BaseException | None) -> None:
        self.outcome = outcome
        self.refreshes = 0
        self.sent = asyncio.Event()

    def connection_now(self, node: int, purpose: str = "") -> None:
        return None

    def request_refresh(self) -> None:
        self.refreshes += 1

    async def send(self, node: int, api_key: Any, request: FetchRequest, **kw: Any) -> Any:
        self.sent.set()
        if self.outcome is None:
            await asyncio.Event().wait()  # never answered (stop() cancels it)
        raise self.outcome


def _consumer(cluster: _Unconnected) -> Consumer:
    consumer = Consumer(bootstrap_servers="unused:1")
    consumer._cluster = cluster  # type: ignore[assignment]
    consumer._subscription.assign([TP])
    consumer._subscription.seek(TP, 0)
    return consumer


@pytest.mark.parametrize("outcome", [RuntimeError("a bug in the transport"), None])
async def test_a_fetch_that_fails_or_is_cancelled_frees_its_partitions(
    outcome: BaseException | None, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = _Unconnected(outcome)
    consumer = _consumer(cluster)
    consumer._start_fetch(1, consumer._subscription.fetchable(0))
    task = consumer._fetches[1]
    assert task is not None and consumer._subscription.states[TP].in_flight
    await asyncio.wait_for(cluster.sent.wait(), 5)
    if outcome is None:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 1 not in consumer._fetches
    assert not consumer._subscription.states[TP].in_flight  # fetchable again
    if outcome is not None:
        assert cluster.refreshes == 1
        assert consumer._subscription.states[TP].retry_at_ms > 0  # backed off
        assert "fetch from broker 1 failed" in caplog.text
