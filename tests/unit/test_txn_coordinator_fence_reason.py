"""The transaction coordinator's reason for a fence (no socket, no log): a producer
fenced by its own transaction's timeout is told so, and only that producer at that epoch
(review 104: after the id's partition moved away and back, or at the last epoch, which
fences nobody, another fence was called a timeout)."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from broker.coordinator.doubt import Doubt
from broker.coordinator.transactions import TransactionCoordinator
from protocol.apis import EndTxnRequest, InitProducerIdRequest
from protocol.errors import (
    ConcurrentTransactionsError,
    InvalidTxnStateError,
    ProducerFencedError,
)
from protocol.txn_log import TxnState

pytestmark = pytest.mark.timeout(20)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


async def _written(*_: Any, **__: Any) -> Any:
    return SimpleNamespace(error_code=0, error_message=None)


def _coordinator(clock: Clock) -> TransactionCoordinator:
    ids = iter(range(2000, 10**6, 1000))

    async def next_id() -> int:
        return next(ids)

    config = {
        "transaction.state.log.num.partitions": "1",
        "transaction.max.timeout.ms": "900000",
        "transactional.id.expiration.ms": "604800000",
    }
    coordinator = TransactionCoordinator(
        1,
        config,  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        SimpleNamespace(on_role_change=lambda cb: None, append_records=_written),  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        producer_ids=SimpleNamespace(next_id=next_id),  # type: ignore[arg-type]
        markers=SimpleNamespace(write=_written),  # type: ignore[arg-type]
        clock=clock,
    )
    coordinator.stores[0], coordinator.epochs[0] = {}, 0
    return coordinator


async def _init(c: TransactionCoordinator, pid: int = -1, epoch: int = -1) -> tuple[int, int]:
    answer = await c.init_producer_id(
        InitProducerIdRequest(
            transactional_id="t",
            transaction_timeout_ms=1000,
            producer_id=pid,
            producer_epoch=epoch,
        )
    )
    return answer.producer_id, answer.producer_epoch


async def _time_out(c: TransactionCoordinator, clock: Clock, epoch: int | None = None) -> None:
    meta = c.stores[0]["t"]
    if epoch is not None:
        meta.producer_epoch = epoch
    meta.state, meta.start_ms, meta.partitions = TxnState.ONGOING, clock.ms, {("a", 0)}
    clock.ms += 5_000
    await c.abort_timed_out()
    for task in list(c._tasks):
        await task


def _add_request(producer_id: int, producer_epoch: int, verify_only: bool = False) -> Any:
    """AddPartitionsToTxn of partition a-0 for id "t" (``verify_only``: KIP-890's check)."""
    from protocol.apis import AddPartitionsToTxnRequest, AddPartitionsToTxnTopic

    return AddPartitionsToTxnRequest(
        transactional_id="t",
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        topics=[AddPartitionsToTxnTopic(name="a", partitions=[0])],
        verify_only=verify_only,
    )


def _error(answer: Any) -> int:
    """The one partition's error code of an AddPartitionsToTxn answer."""
    (topic,) = answer.results
    (result,) = topic.results
    return int(result.error_code)


async def _commit(c: TransactionCoordinator, pid: int, epoch: int) -> None:
    await c.end_txn(
        EndTxnRequest(transactional_id="t", producer_id=pid, producer_epoch=epoch, committed=True)
    )


async def test_a_producer_fenced_by_its_transactions_timeout_is_told_so() -> None:
    clock = Clock()
    c = _coordinator(clock)
    pid, epoch = await _init(c)
    await _time_out(c, clock)
    with pytest.raises(ProducerFencedError, match=r"ran past transaction_timeout_ms \(1000 ms\)"):
        await _commit(c, pid, epoch)
    await _init(c, pid, epoch + 1)  # a new producer (its InitProducerId) fences again
    with pytest.raises(ProducerFencedError, match="a newer producer"):
        await _commit(c, pid, epoch + 1)


async def test_a_recreated_ids_fence_is_not_called_a_timeout() -> None:
    clock = Clock()
    c = _coordinator(clock)
    await _init(c)
    await _time_out(c, clock)
    c._unload(0)  # moved away (the id expired there), then back: a new producer id
    c.stores[0], c.epochs[0] = {}, 1
    pid, _ = await _init(c)
    assert await _init(c, pid, 0) == (pid, 1)  # a newer producer fences epoch 0
    with pytest.raises(ProducerFencedError, match="a newer producer"):
        await _commit(c, pid, 0)


async def test_a_timeout_at_the_last_epoch_fences_nobody_and_is_not_named() -> None:
    clock = Clock()
    c = _coordinator(clock)
    pid, _ = await _init(c)
    await _time_out(c, clock, epoch=32_766)  # aborted without a bump
    with pytest.raises(ProducerFencedError, match="a newer producer"):
        await _commit(c, pid, 32_765)


async def test_a_producer_that_lost_the_answer_to_its_id_rotation_gets_it_again() -> None:
    """Review 106: a bump past the last epoch gives the producer a new id; if that answer
    was lost, its retry under the old id and epoch was fenced (fatal for it). As Kafka's
    lastProducerId, the retry gets the new id; one under an epoch not spent is fenced,
    and so is the retry once the new id has moved on."""
    clock = Clock()
    c = _coordinator(clock)
    old, _ = await _init(c)
    c.stores[0]["t"].producer_epoch = 32_766  # its epochs spent
    new, epoch = await _init(c, old, 32_766)  # the answer is lost
    assert new != old and epoch == 0
    assert await _init(c, old, 32_766) == (new, 0)  # asked again: the same answer
    with pytest.raises(ProducerFencedError):
        await _init(c, old, 5)
    assert await _init(c, new, 0) == (new, 1)  # the new id moves on
    with pytest.raises(ProducerFencedError):
        await _init(c, old, 32_766)


async def test_a_new_incarnations_bump_is_not_handed_to_the_producer_it_fences() -> None:
    """Review 107: a new incarnation's InitProducerId (no id given) bumped the epoch and
    recorded the old one as if its holder had asked: the old producer, now a zombie,
    asking with what it had, was answered with the new incarnation's id and epoch (two
    producers as one). Only the producer's own bump may be asked for again; also when
    it rotated to a new id."""
    clock = Clock()
    c = _coordinator(clock)
    pid, epoch = await _init(c)
    assert await _init(c) == (pid, epoch + 1)  # a new incarnation
    with pytest.raises(ProducerFencedError):
        await _init(c, pid, epoch)  # the zombie
    c.stores[0]["t"].producer_epoch = 32_766
    new, new_epoch = await _init(c)  # a new incarnation whose bump rotates the id
    assert new != pid and new_epoch == 0
    with pytest.raises(ProducerFencedError):
        await _init(c, pid, 32_766)


async def test_a_coordinator_whose_session_is_in_doubt_answers_nothing_final() -> None:
    """From the soak's partitions, and review 109: a broker cut off from ZooKeeper still
    coordinated 'soak' in its own view, though another broker had taken the id over.
    Its verification said "not in an ongoing transaction" (the producer's transaction
    failed); an EndTxn for a transaction opened at the new coordinator would have been
    answered "committed" from the last one's COMPLETE_COMMIT, with nothing written; a
    producer bumped there would have been told it is fenced. While its session is in
    doubt every answer is COORDINATOR_NOT_AVAILABLE: retriable, the producer looks again."""
    from protocol.apis import AddPartitionsToTxnRequest
    from protocol.errors import (
        CoordinatorNotAvailableError,
        InvalidProducerEpochError,
        InvalidTxnStateError,
    )

    known = [True]
    c = _coordinator(Clock())
    c._doubt = Doubt(lambda: known[0])
    c._metadata = SimpleNamespace(partition=lambda topic, index: object(), whole=True)
    pid, epoch = await _init(c)

    def add(producer_epoch: int, verify_only: bool = False) -> AddPartitionsToTxnRequest:
        return _add_request(pid, producer_epoch, verify_only)

    commit = EndTxnRequest(
        transactional_id="t", producer_id=pid, producer_epoch=epoch, committed=True
    )
    assert _error(await c.verify_partitions(add(epoch, True))) == InvalidTxnStateError.code
    assert _error(await c.add_partitions(add(epoch + 1))) == InvalidProducerEpochError.code
    await c.add_partitions(add(epoch))
    await c.end_txn(commit)
    for task in list(c._tasks):
        await task
    assert c.stores[0]["t"].state == TxnState.COMPLETE_COMMIT
    known[0] = False
    for answer in (
        await c.verify_partitions(add(epoch, True)),  # not "not in a transaction"
        await c.add_partitions(add(epoch + 1)),  # not "fenced by a newer epoch"
    ):
        assert _error(answer) == CoordinatorNotAvailableError.code
    with pytest.raises(CoordinatorNotAvailableError):
        await c.end_txn(commit)  # not "committed", from the last one's state
    with pytest.raises(CoordinatorNotAvailableError):
        await _init(c, pid, epoch)


async def test_answers_from_state_alone_are_vouched_for_by_zookeeper_first() -> None:
    """Review 109: a controller that cannot reach a coordinator can move the log's
    partition elsewhere while the coordinator's session lives (a preferred election, say):
    its session is current and its state stale. Before an answer given from the state
    alone (the partition check's refusal, EndTxn's "already committed" or "nothing open")
    it asks ZooKeeper whether it still leads the partition at the leader epoch it knows;
    if not, NOT_COORDINATOR (retriable) instead."""
    from protocol.apis import AddPartitionsToTxnRequest, AddPartitionsToTxnTopic
    from protocol.errors import InvalidTxnStateError, NotCoordinatorError

    leads: list[int] = []
    still = [True]

    async def still_leads(partition: int) -> bool:
        leads.append(partition)
        return still[0]

    c = _coordinator(Clock())
    c._still_leads = still_leads
    c._metadata = SimpleNamespace(partition=lambda topic, index: object(), whole=True)
    pid, epoch = await _init(c)
    check = AddPartitionsToTxnRequest(
        transactional_id="t",
        producer_id=pid,
        producer_epoch=epoch,
        topics=[AddPartitionsToTxnTopic(name="a", partitions=[0])],
        verify_only=True,
    )
    commit = EndTxnRequest(
        transactional_id="t", producer_id=pid, producer_epoch=epoch, committed=True
    )

    assert _error(await c.verify_partitions(check)) == InvalidTxnStateError.code
    assert leads == [0]
    with pytest.raises(InvalidTxnStateError):
        await c.end_txn(commit)  # nothing open
    still[0] = False  # moved elsewhere meanwhile
    assert _error(await c.verify_partitions(check)) == NotCoordinatorError.code
    with pytest.raises(NotCoordinatorError):
        await c.end_txn(commit)
    leads.clear()
    add = dataclasses.replace(check, verify_only=False)
    assert _error(await c.add_partitions(add)) == 0  # written: the log's replication decides
    assert leads == []


async def test_a_fence_is_vouched_for_by_zookeeper_first() -> None:
    """A fence ends the producer. A coordinator whose log partition moved without its
    knowing (its session current) has an older view of the id than the new coordinator:
    the producer, bumped there, is "newer than the coordinator's" epoch here, or has a
    producer id this one never gave. So a fence, too, is given only once ZooKeeper says
    this broker still leads the id's partition; else NOT_COORDINATOR (retriable)."""
    from protocol.errors import (
        InvalidProducerEpochError,
        InvalidProducerIdMappingError,
        NotCoordinatorError,
    )

    still = [True]

    async def still_leads(partition: int) -> bool:
        return still[0]

    c = _coordinator(Clock())
    c._still_leads = still_leads
    c._metadata = SimpleNamespace(partition=lambda topic, index: object(), whole=True)
    pid, epoch = await _init(c)

    def end(producer_id: int, producer_epoch: int) -> EndTxnRequest:
        return EndTxnRequest(
            transactional_id="t",
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            committed=True,
        )

    async def added(who: tuple[int, int], verify_only: bool = False) -> int:
        ask = c.verify_partitions if verify_only else c.add_partitions
        return _error(await ask(_add_request(*who, verify_only)))

    bumped, other = (pid, epoch + 1), (pid + 1, 0)  # as the new coordinator may have them
    assert await added(bumped) == InvalidProducerEpochError.code
    assert await added(other) == InvalidProducerIdMappingError.code
    assert await added(bumped, verify_only=True) == InvalidProducerEpochError.code
    with pytest.raises(InvalidProducerEpochError):
        await c.end_txn(end(*bumped))
    still[0] = False  # moved elsewhere meanwhile
    for who in (bumped, other):
        assert await added(who) == NotCoordinatorError.code
        assert await added(who, verify_only=True) == NotCoordinatorError.code
        with pytest.raises(NotCoordinatorError):
            await c.end_txn(end(*who))
    with pytest.raises(NotCoordinatorError):  # the old incarnation, asking again
        await _init(c, pid + 1, 0)
    assert await added((pid, epoch)) == 0  # its own: written, as before


async def test_the_vouch_gives_up_once_zookeeper_cannot_say() -> None:
    """From a review: kazoo queues a read while it reconnects, and the vouch's read of
    the partition state waited for ZooKeeper to come back, holding a fence (and the
    produce whose KIP-890 check asked for it) for a whole outage. It gives up once the
    session is in doubt: "cannot say" is False, NOT_COORDINATOR to the producer."""
    from broker.app import Broker
    from broker.log.manager import TopicPartition
    from protocol.txn_log import TRANSACTION_TOPIC

    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class QueuedZk:
        """A get kazoo queued while reconnecting; the session stops being current."""

        session_current = True

        async def get(self, path: str, watch: object = None) -> tuple[bytes, object]:
            await never  # ZooKeeper is down: the queued request is never sent
            raise AssertionError

    zk = QueuedZk()
    leader = SimpleNamespace(is_leader=True, leader_epoch=3)
    broker = SimpleNamespace(
        broker_id=1,
        _zk=zk,
        _replicas=SimpleNamespace(partitions={TopicPartition(TRANSACTION_TOPIC, 0): leader}),
        _stall=None,
    )

    async def session_no_longer_current() -> None:
        await asyncio.sleep(0.2)
        zk.session_current = False

    asyncio.get_running_loop().create_task(session_no_longer_current())
    asked = Broker._still_leads_txn_log(broker, 0)  # type: ignore[arg-type]
    assert await asyncio.wait_for(asked, 3) is False  # not held for the whole outage


# --- an abort of a transaction begun while the last one's markers were being written ---


def _gated(clock: Clock) -> tuple[TransactionCoordinator, asyncio.Event]:
    """A coordinator whose markers wait for the event: its transactions stay PrepareCommit
    (or PrepareAbort) until it is set."""
    c = _coordinator(clock)
    markers_go = asyncio.Event()

    async def write(*_: Any, **__: Any) -> None:
        await markers_go.wait()

    c._markers = SimpleNamespace(write=write)  # type: ignore[assignment]
    c._metadata = SimpleNamespace(partition=lambda *_: "a-0 is there", whole=True)  # type: ignore[assignment]
    return c, markers_go


def _end(pid: int, epoch: int, committed: bool) -> EndTxnRequest:
    return EndTxnRequest(
        transactional_id="t", producer_id=pid, producer_epoch=epoch, committed=committed
    )


async def _drain(c: TransactionCoordinator) -> None:
    for task in list(c._tasks):
        await task


async def test_an_abort_of_a_transaction_whose_partitions_were_refused_as_concurrent_is_done() -> (
    None
):
    """librdkafka's issue 4849: it begins the next transaction at once after a commit;
    its AddPartitionsToTxn is refused CONCURRENT_TRANSACTIONS (the commit's markers still
    going out), and an abort then sends EndTxn(abort) anyway. Kafka answers
    INVALID_TXN_STATE, fatal to librdkafka; nothing of that transaction was written, so
    the abort is done once the markers are."""
    clock = Clock()
    c, markers_go = _gated(clock)
    pid, epoch = await _init(c)
    await c.add_partitions(_add_request(pid, epoch))
    await c.end_txn(_end(pid, epoch, committed=True))  # answered at PrepareCommit
    assert c.stores[0]["t"].state == TxnState.PREPARE_COMMIT
    refused = await c.add_partitions(_add_request(pid, epoch))  # the next transaction's
    assert _error(refused) == ConcurrentTransactionsError.code
    with pytest.raises(ConcurrentTransactionsError):  # the markers still going out
        await c.end_txn(_end(pid, epoch, committed=False))
    markers_go.set()
    await _drain(c)
    assert c.stores[0]["t"].state == TxnState.COMPLETE_COMMIT
    await c.end_txn(_end(pid, epoch, committed=False))  # done: nothing to abort
    assert c.stores[0]["t"].state == TxnState.COMPLETE_COMMIT  # the commit stands
    assert c.committed == 1 and c.aborted == 0
    # once: the next abort without a transaction is refused as before
    with pytest.raises(InvalidTxnStateError):
        await c.end_txn(_end(pid, epoch, committed=False))


async def test_an_abort_after_a_commit_with_no_next_transaction_begun_is_still_refused() -> None:
    """An abort sent for a commit whose answer was lost must not be answered as done: the
    commit stands, and the producer must be told so (review 103)."""
    clock = Clock()
    c, markers_go = _gated(clock)
    markers_go.set()
    pid, epoch = await _init(c)
    await c.add_partitions(_add_request(pid, epoch))
    await c.end_txn(_end(pid, epoch, committed=True))
    await _drain(c)
    with pytest.raises(InvalidTxnStateError, match="COMPLETE_COMMIT"):
        await c.end_txn(_end(pid, epoch, committed=False))


async def test_a_refusal_of_the_next_transaction_counts_only_until_the_id_changes() -> None:
    clock = Clock()
    c, markers_go = _gated(clock)
    pid, epoch = await _init(c)
    await c.add_partitions(_add_request(pid, epoch))
    await c.end_txn(_end(pid, epoch, committed=True))
    await c.add_partitions(_add_request(pid, epoch))  # refused: the markers are going out
    markers_go.set()
    await _drain(c)
    assert _error(await c.add_partitions(_add_request(pid, epoch))) == 0  # its retry: in
    await c.end_txn(_end(pid, epoch, committed=True))
    await _drain(c)
    with pytest.raises(InvalidTxnStateError):  # this abort is of a commit: refused
        await c.end_txn(_end(pid, epoch, committed=False))
    # a commit is never answered so: its records were not written
    markers_go.clear()
    await c.add_partitions(_add_request(pid, epoch))
    await c.end_txn(_end(pid, epoch, committed=False))  # PrepareAbort
    await c.add_partitions(_add_request(pid, epoch))  # refused
    markers_go.set()
    await _drain(c)
    with pytest.raises(InvalidTxnStateError):
        await c.end_txn(_end(pid, epoch, committed=True))


async def test_an_abort_waiting_on_zookeeper_while_the_next_transaction_opens_aborts_it() -> None:
    """Review 120: the abort's ZooKeeper check is a wait, during which the producer's
    retried AddPartitionsToTxn may open the transaction. The abort then ended in a
    KeyError (an unknown server error to the client); it aborts that transaction."""
    clock = Clock()
    c, markers_go = _gated(clock)
    pid, epoch = await _init(c)
    await c.add_partitions(_add_request(pid, epoch))
    await c.end_txn(_end(pid, epoch, committed=True))
    await c.add_partitions(_add_request(pid, epoch))  # refused: the markers going out
    markers_go.set()
    await _drain(c)
    zookeeper_answers = asyncio.Event()

    async def still_leads(_: int) -> bool:
        await zookeeper_answers.wait()
        return True

    c._still_leads = still_leads
    abort = asyncio.ensure_future(c.end_txn(_end(pid, epoch, committed=False)))
    await asyncio.sleep(0)
    assert _error(await c.add_partitions(_add_request(pid, epoch))) == 0  # its retry: in
    assert c.stores[0]["t"].state == TxnState.ONGOING
    zookeeper_answers.set()
    await abort
    await _drain(c)
    assert c.stores[0]["t"].state == TxnState.COMPLETE_ABORT
    assert c.committed == 1 and c.aborted == 1
