"""The client's line to a coordinator (client/coordinator.py ``CoordinatorLine``) and the
transaction manager's retries over it, against a scripted cluster: which answers make it
look for the coordinator again, and how long a transaction waits on a busy coordinator.

Found by the soak: every transaction after the first waited 100 ms (retry_backoff_ms) and
a FindCoordinator, because the coordinator's CONCURRENT_TRANSACTIONS (still writing the
last transaction's markers) was handled as if the coordinator had moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from client import coordinator as coordinator_module
from client import transactions as transactions_module
from client.coordinator import CoordinatorLine
from client.transactions import TransactionManager
from protocol.apis import ApiKey, CoordinatorType, EndTxnRequest, FindCoordinatorResponse
from protocol.errors import (
    ApiError,
    ConcurrentTransactionsError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NetworkError,
    NotCoordinatorError,
)


class _Cluster:
    """FindCoordinator answers ``coordinator``; each other request takes the next of
    ``answers`` (an error is raised, anything else returned)."""

    def __init__(self, answers: list[Any], coordinator: int = 2) -> None:
        self.answers = answers
        self.coordinator = coordinator
        self.finds = 0
        self.sent: list[tuple[int, ApiKey]] = []
        self.metadata = SimpleNamespace(brokers={1: None, 2: None, 3: None})
        self.closed = False

    async def send_any(self, api_key: ApiKey, request: Any, **_: Any) -> Any:
        assert api_key == ApiKey.FIND_COORDINATOR
        self.finds += 1
        return FindCoordinatorResponse(node_id=self.coordinator)

    async def send(self, node: int, api_key: ApiKey, request: Any) -> Any:
        self.sent.append((node, api_key))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def refresh(self) -> None:
        raise AssertionError("every coordinator here is in the metadata")


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits asked for, instead of waiting them."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    fake = SimpleNamespace(**{**vars(asyncio), "sleep": sleep})  # the rest as it is
    monkeypatch.setattr(coordinator_module, "asyncio", fake)
    monkeypatch.setattr(transactions_module, "asyncio", fake)
    return asked


def _line(cluster: _Cluster, key_type: int = CoordinatorType.GROUP) -> CoordinatorLine:
    return CoordinatorLine(
        cluster,  # type: ignore[arg-type]
        "k",
        key_type=key_type,
        request_timeout_ms=30_000,
        retry_backoff_ms=100,
    )


@pytest.mark.parametrize(
    "busy",
    [
        lambda: CoordinatorLoadInProgressError("loading"),
        lambda: ConcurrentTransactionsError("markers"),
    ],
)
async def test_a_busy_coordinator_is_asked_again_not_looked_for_again(
    busy: Callable[[], ApiError], sleeps: list[float]
) -> None:
    cluster = _Cluster([busy(), busy(), "answer"])
    assert await _line(cluster).call(ApiKey.OFFSET_FETCH, object()) == "answer"
    assert cluster.finds == 1  # the first lookup only
    assert cluster.sent == [(2, ApiKey.OFFSET_FETCH)] * 3
    assert sleeps == [0.1, 0.1]


@pytest.mark.parametrize(
    "moved",
    [
        lambda: NotCoordinatorError("moved"),
        lambda: CoordinatorNotAvailableError("gone"),
        lambda: NetworkError("lost the connection"),
    ],
)
async def test_a_coordinator_that_moved_or_went_away_is_looked_for_again(
    moved: Callable[[], ApiError], sleeps: list[float]
) -> None:
    cluster = _Cluster([moved(), "answer"])
    line = _line(cluster)
    assert await line.call(ApiKey.OFFSET_FETCH, object()) == "answer"
    assert cluster.finds == 2
    assert sleeps == [0.1]


async def test_errors_the_caller_waits_out_itself_are_raised_at_once(sleeps: list[float]) -> None:
    cluster = _Cluster([ConcurrentTransactionsError("markers"), "answer"])
    with pytest.raises(ConcurrentTransactionsError):
        await _line(cluster).call(ApiKey.END_TXN, object(), busy=(ConcurrentTransactionsError,))
    assert sleeps == []
    assert cluster.answers == ["answer"]  # not asked again


async def test_a_transaction_waits_for_the_last_ones_markers_briefly_at_the_same_coordinator(
    sleeps: list[float],
) -> None:
    # the coordinator is still writing the last transaction's markers for six answers
    cluster = _Cluster([ConcurrentTransactionsError("markers")] * 6 + ["answer"])
    manager = TransactionManager(
        cluster,  # type: ignore[arg-type]
        "txn",
        transaction_timeout_ms=60_000,
        max_block_ms=60_000,
        retry_backoff_ms=100,
    )
    request = EndTxnRequest(transactional_id="txn", producer_id=1, producer_epoch=0, committed=True)
    assert await manager._call(ApiKey.END_TXN, request) == "answer"
    assert cluster.finds == 1
    assert {node for node, _ in cluster.sent} == {2}
    # from 1 ms up to Kafka's 20 ms (markers take a few ms), then retry_backoff_ms: a
    # transaction whose markers are held up is not asked about 50 times a second
    assert sleeps == [0.001, 0.002, 0.005, 0.01, 0.02, 0.1]


def test_a_member_told_its_coordinator_is_busy_keeps_it() -> None:
    # membership reports errors through coordinator_dead too: one rule for every caller
    line = _line(_Cluster([]))
    line._coordinator = 2
    line.coordinator_dead(CoordinatorLoadInProgressError("loading"))
    assert line._coordinator == 2
    line.coordinator_dead(NotCoordinatorError("moved"))
    assert line._coordinator is None
