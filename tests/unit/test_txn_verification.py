"""KIP-890 at the partition leader: a transaction's first batch in a partition is checked
with its coordinator before it is appended, so a produce read late (after the transaction
ended) cannot open a transaction that no marker ends. The coordinator is a fake here; the
real one is in tests/integration/test_transactions.py."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from broker.replica.manager import ReplicaManager
from protocol.apis import ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic
from protocol.errors import (
    ApiError,
    InvalidTxnStateError,
    NotEnoughReplicasError,
    TransactionalIdAuthorizationFailedError,
)
from protocol.records import encode_batch
from tests.unit.conftest import MakeLeader

TXN_ID = "app-1"


def _request(
    seq: int, *, txn_id: str | None = TXN_ID, transactional: bool = True
) -> ProduceRequest:
    batch = encode_batch(
        [(b"k", b"v%d" % seq, None, 1000)],
        producer_id=7,
        producer_epoch=0,
        base_sequence=seq,
        is_transactional=transactional,
    )
    return ProduceRequest(
        transactional_id=txn_id,
        acks=1,
        timeout_ms=1000,
        topics=[ProduceTopic(name="t", partitions=[ProducePartition(index=0, records=batch)])],
    )


async def _answer(replicas: ReplicaManager, request: ProduceRequest) -> tuple[int, str]:
    response: Any = replicas.produce(request)
    if inspect.isawaitable(response):
        response = await response
    assert isinstance(response, ProduceResponse)
    (result,) = response.topics[0].partitions
    return result.error_code, result.error_message or ""


class _Coordinator:
    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int, list[tuple[str, int]]]] = []
        self.refuse: ApiError | None = None
        self.meanwhile: Any = None  # run while "the request is on the wire"

    async def verify(
        self, txn_id: str, pid: int, epoch: int, tps: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ApiError]:
        self.asked.append((txn_id, pid, epoch, tps))
        await asyncio.sleep(0)
        if self.meanwhile is not None:
            self.meanwhile()
        return dict.fromkeys(tps, self.refuse) if self.refuse is not None else {}


async def test_a_transactions_first_batch_in_a_partition_is_checked_once(
    make_leader: MakeLeader,
) -> None:
    replicas = await make_leader([1], True)
    coordinator = _Coordinator()
    replicas.txn_verify = coordinator.verify
    log = replicas.partitions[next(iter(replicas.partitions))].log
    coordinator.refuse = InvalidTxnStateError("not in an ongoing transaction")
    code, message = await _answer(replicas, _request(0))  # late: the transaction ended
    assert (code, message) == (InvalidTxnStateError.code, "not in an ongoing transaction")
    assert log.log_end_offset == 0 and 7 not in log.producers.ongoing  # nothing opened
    coordinator.refuse = None
    assert (await _answer(replicas, _request(0)))[0] == 0
    assert coordinator.asked[-1] == (TXN_ID, 7, 0, [("t", 0)])
    assert log.producers.ongoing == {7: 0}
    asked = len(coordinator.asked)
    response = replicas.produce(_request(1))  # the transaction is open here: no check
    assert isinstance(response, ProduceResponse) and len(coordinator.asked) == asked
    # a plain batch is not checked; a transactional one without its id is refused unasked
    log.append_marker(producer_id=7, producer_epoch=0, committed=True, coordinator_epoch=0)
    assert (await _answer(replicas, _request(2, transactional=False)))[0] == 0
    refused, _ = await _answer(replicas, _request(3, txn_id=None))
    assert refused == TransactionalIdAuthorizationFailedError.code
    assert len(coordinator.asked) == asked


async def test_a_marker_during_the_check_voids_it(make_leader: MakeLeader) -> None:
    """The coordinator said yes, then the transaction ended (its marker came) before the
    answer was used: appending would open a transaction no marker ends."""
    replicas = await make_leader([1], True)
    coordinator = _Coordinator()
    replicas.txn_verify = coordinator.verify
    log = replicas.partitions[next(iter(replicas.partitions))].log
    coordinator.meanwhile = lambda: log.append_marker(
        producer_id=7, producer_epoch=0, committed=False, coordinator_epoch=0
    )
    code, message = await _answer(replicas, _request(0))
    assert code == InvalidTxnStateError.code and "while its batch was held" in message
    assert log.last_stable_offset(log.log_end_offset) == log.log_end_offset  # nothing hangs


async def test_a_coordinator_that_cannot_answer_makes_the_produce_retriable(
    make_leader: MakeLeader,
) -> None:
    replicas = await make_leader([1], True)

    async def broken(*args: object) -> dict[tuple[str, int], ApiError]:
        raise RuntimeError("a bug")

    replicas.txn_verify = broken
    code, _ = await _answer(replicas, _request(0))
    assert code == NotEnoughReplicasError.code and NotEnoughReplicasError.retriable
    replicas.txn_verify = _Coordinator().verify  # the broker goes on serving
    assert (await _answer(replicas, _request(0)))[0] == 0


async def test_a_coordinators_transactional_write_is_checked_too(make_leader: MakeLeader) -> None:
    """TxnOffsetCommit's offsets (the group coordinator's own append) get the same check:
    asked where the producer has no transaction open, and refused if a marker came."""
    replicas = await make_leader([1], True)
    coordinator = _Coordinator()
    replicas.txn_verify = coordinator.verify
    log = replicas.partitions[next(iter(replicas.partitions))].log
    assert await replicas.check_txn_write(TXN_ID, "t", 0, 7, 0) is None
    assert coordinator.asked == [(TXN_ID, 7, 0, [("t", 0)])]
    coordinator.refuse = InvalidTxnStateError("not in an ongoing transaction")
    refused = await replicas.check_txn_write(TXN_ID, "t", 0, 7, 0)
    assert isinstance(refused, InvalidTxnStateError)
    coordinator.refuse = None
    coordinator.meanwhile = lambda: log.append_marker(
        producer_id=7, producer_epoch=0, committed=False, coordinator_epoch=0
    )
    refused = await replicas.check_txn_write(TXN_ID, "t", 0, 7, 0)
    assert isinstance(refused, InvalidTxnStateError) and "while its batch was held" in str(refused)
    coordinator.meanwhile = None
    assert (await _answer(replicas, _request(0)))[0] == 0  # the transaction opens here
    asked = len(coordinator.asked)
    assert await replicas.check_txn_write(TXN_ID, "t", 0, 7, 0) is None
    assert len(coordinator.asked) == asked  # open: not asked
