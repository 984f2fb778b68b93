"""The end of a transaction, on the producer's side (a scripted cluster and coordinator,
no socket): what waits for what, and what an EndTxn without an answer leaves (review 102)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from client import Producer, TransactionStateError
from client.types import TopicPartition
from protocol.apis import ApiKey, EndTxnRequest, InitProducerIdResponse
from protocol.errors import (
    InvalidRecordError,
    InvalidTxnStateError,
    NetworkError,
    NotLeaderOrFollowerError,
    OutOfOrderSequenceNumberError,
    ProducerFencedError,
    RequestTimedOutError,
    UnknownServerError,
)
from protocol.records import decode_batches
from tests.unit.test_producer_sender import ScriptedCluster, answer_all, ok

pytestmark = pytest.mark.timeout(20)

TP = TopicPartition("a", 0)


class Coordinator:
    """A transaction coordinator's answers: every EndTxn is answered as done (Headwater's
    answers one repeating how the transaction ended so), unless told to lose answers."""

    def __init__(self) -> None:
        self.ended: list[str] = []  # what the coordinator did, in order
        self.calls: list[str] = []
        self.gate = asyncio.Event()  # an EndTxn is answered once this is set
        self.gate.set()
        self.end_sent = asyncio.Event()
        self.lose_answers = 0  # EndTxn carried out, its answer lost, this many times
        self.init_failures = 0

    async def call(self, api_key: ApiKey, request: Any, check: Any = None) -> Any:
        if api_key == ApiKey.INIT_PRODUCER_ID:
            if self.init_failures:
                self.init_failures -= 1
                raise RequestTimedOutError("InitProducerId got no answer")
            return InitProducerIdResponse(producer_id=5, producer_epoch=0)
        self.calls.append(api_key.name)
        if api_key == ApiKey.END_TXN:
            assert isinstance(request, EndTxnRequest)
            self.end_sent.set()
            await self.gate.wait()
            self.ended.append("committed" if request.committed else "aborted")
            if self.lose_answers:
                self.lose_answers -= 1
                raise RequestTimedOutError("EndTxn got no answer")
        return SimpleNamespace(results=[])


Call = Callable[..., Awaitable[Any]]


async def transactional(cluster: ScriptedCluster, coordinator: Coordinator | Call) -> Producer:
    """A started transactional producer over ``cluster``, its coordinator's answers from
    ``coordinator`` (a :class:`Coordinator`, or a ``_call`` of its own)."""
    producer = Producer(bootstrap_servers="unused:1", retry_backoff_ms=10, transactional_id="t")
    producer._cluster = cluster  # type: ignore[assignment]
    assert producer._txn is not None
    call = coordinator.call if isinstance(coordinator, Coordinator) else coordinator
    producer._txn._call = call  # type: ignore[method-assign]
    await producer.start()
    return producer


async def test_stop_waits_for_the_commit_under_way() -> None:
    """Review 102: stop() left the transaction to the commit under way, then closed the
    connections under it; the EndTxn was cut off and the transaction left open."""
    cluster = ScriptedCluster({TP: 1})
    closed = asyncio.Event()
    real_close = cluster.close

    async def close() -> None:
        closed.set()
        await real_close()

    cluster.close = close  # type: ignore[method-assign]
    coordinator = Coordinator()
    coordinator.gate.clear()
    producer = await transactional(cluster, coordinator)
    producer.begin_transaction()
    await asyncio.wait_for(await producer.send("a", b"in it"), 5)
    commit = asyncio.create_task(producer.commit_transaction())
    await asyncio.wait_for(coordinator.end_sent.wait(), 5)
    stop = asyncio.create_task(producer.stop())
    await asyncio.sleep(0.05)
    assert not closed.is_set()  # waiting for the commit's answer
    coordinator.gate.set()
    await asyncio.wait_for(stop, 5)
    await asyncio.wait_for(commit, 5)
    assert coordinator.ended == ["committed"]


@pytest.mark.parametrize("ending", ["commit", "abort", "stop"])
async def test_the_end_waits_for_offsets_being_sent(ending: str) -> None:
    """Review 102 (commit, abort) and 103 (stop()'s own abort): offsets sent before the
    end began reached the group after the marker (left pending there) when their
    TxnOffsetCommit was slow. The EndTxn waits for them."""
    cluster = ScriptedCluster({TP: 1})
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    txn = producer._txn
    assert txn is not None
    reached, slow = asyncio.Event(), asyncio.Event()

    async def commit_offsets(topics: Any, group: Any) -> None:
        reached.set()
        await slow.wait()
        coordinator.calls.append("TXN_OFFSET_COMMIT")

    txn._commit_offsets = commit_offsets  # type: ignore[method-assign]
    try:
        producer.begin_transaction()
        offsets = asyncio.create_task(
            producer.send_offsets_to_transaction({TopicPartition("x", 0): 1}, "g")
        )
        await asyncio.wait_for(reached.wait(), 5)
        end = asyncio.create_task(
            producer.commit_transaction()
            if ending == "commit"
            else producer.abort_transaction()
            if ending == "abort"
            else producer.stop()
        )
        await asyncio.sleep(0.05)  # long enough for an EndTxn that does not wait
        assert "END_TXN" not in coordinator.calls
        slow.set()
        await asyncio.wait_for(asyncio.gather(offsets, end), 5)
        assert coordinator.calls == ["ADD_OFFSETS_TO_TXN", "TXN_OFFSET_COMMIT", "END_TXN"]
        assert coordinator.ended == ["committed" if ending == "commit" else "aborted"]
    finally:
        await producer.stop()


async def test_a_commit_without_an_answer_can_only_be_asked_again() -> None:
    """Review 102: the commit was made but its answer lost; the transaction became
    abortable, and abort_transaction()'s refused EndTxn read as "nothing was open": the
    caller was told "aborted" of a committed transaction, and would have sent its records
    again. As in Kafka's producer, only the commit again (answered as done) or stop()."""
    cluster = ScriptedCluster({TP: 1})
    coordinator = Coordinator()
    coordinator.lose_answers = 1
    producer = await transactional(cluster, coordinator)
    try:
        producer.begin_transaction()
        await asyncio.wait_for(await producer.send("a", b"in it"), 5)
        with pytest.raises(RequestTimedOutError):
            await producer.commit_transaction()
        for refused in (
            producer.abort_transaction(),
            producer.send("a", b"more"),
            producer.send_offsets_to_transaction({TopicPartition("x", 0): 1}, "g"),
        ):
            with pytest.raises(TransactionStateError, match=r"commit_transaction\(\) again"):
                await refused
        with pytest.raises(TransactionStateError, match=r"commit_transaction\(\) again"):
            producer.begin_transaction()
        await producer.commit_transaction()  # answered as done
        assert coordinator.ended == ["committed", "committed"]
        producer.begin_transaction()  # the next transaction
        await asyncio.wait_for(await producer.send("a", b"next"), 5)
        await producer.commit_transaction()
    finally:
        await producer.stop()


async def test_a_commit_cancelled_while_its_endtxn_is_out_leaves_it_to_be_asked_again() -> None:
    """Review 102: cancelled (a caller's timeout) while its EndTxn was out, the commit
    let sends into a transaction the coordinator may have committed."""
    cluster = ScriptedCluster({TP: 1})
    coordinator = Coordinator()
    coordinator.gate.clear()
    producer = await transactional(cluster, coordinator)
    try:
        producer.begin_transaction()
        await asyncio.wait_for(await producer.send("a", b"in it"), 5)
        commit = asyncio.create_task(producer.commit_transaction())
        await asyncio.wait_for(coordinator.end_sent.wait(), 5)
        commit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await commit
        with pytest.raises(TransactionStateError, match=r"commit_transaction\(\) again"):
            await producer.send("a", b"late")
        coordinator.gate.set()
        await producer.commit_transaction()
    finally:
        await producer.stop()


async def test_a_commit_cancelled_before_its_endtxn_leaves_the_transaction_open() -> None:
    """Cancelled while its records were still out, the commit sent no EndTxn: the
    transaction goes on as it was."""
    cluster = ScriptedCluster({TP: 1})
    cluster.release.clear()  # the Produce is not answered yet
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    try:
        producer.begin_transaction()
        first = await producer.send("a", b"in it")
        commit = asyncio.create_task(producer.commit_transaction())
        await asyncio.sleep(0.05)
        commit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await commit
        cluster.release.set()
        await asyncio.wait_for(first, 5)
        await asyncio.wait_for(await producer.send("a", b"more"), 5)
        await producer.commit_transaction()
        assert coordinator.calls.count("END_TXN") == 1
    finally:
        await producer.stop()


async def test_an_abort_whose_new_epoch_did_not_come_can_be_asked_again() -> None:
    """Review 102: an abort after a broken sequence raised "call abort_transaction()
    again" when no new epoch came, and then refused the call: nothing was open."""
    cluster = ScriptedCluster({TP: 1})
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    try:
        producer.begin_transaction()
        await asyncio.wait_for(await producer.send("a", b"in it"), 5)
        producer._new_producer_id = True  # as a broken sequence leaves it
        coordinator.init_failures = 10**6
        producer._txn._max_block_s = 0.05  # type: ignore[union-attr]
        with pytest.raises(TransactionStateError, match=r"abort_transaction\(\) again"):
            await producer.abort_transaction()
        coordinator.init_failures = 0
        await producer.abort_transaction()
        assert not producer._new_producer_id
        producer.begin_transaction()
    finally:
        await producer.stop()


def _lost(coordinator: Coordinator) -> Any:
    async def call(api_key: ApiKey, request: Any, check: Any = None) -> Any:
        coordinator.calls.append(api_key.name)
        raise RequestTimedOutError("EndTxn got no answer (it never reached the coordinator)")

    return call


@pytest.mark.parametrize("ending", ["commit", "abort"])
async def test_stop_ends_a_transaction_whose_endtxn_got_no_answer(ending: str) -> None:
    """Review 103: after an EndTxn without an answer stop() sent none, and the transaction
    stayed open at the coordinator (holding its partitions' last stable offset) until its
    timeout. It is ended the way it was asked, as Kafka's close completes a pending one."""
    cluster = ScriptedCluster({TP: 1})
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    txn = producer._txn
    assert txn is not None
    producer.begin_transaction()
    await asyncio.wait_for(await producer.send("a", b"in it"), 5)
    txn._call = _lost(coordinator)  # type: ignore[method-assign]
    with pytest.raises(RequestTimedOutError):
        await (
            producer.commit_transaction() if ending == "commit" else producer.abort_transaction()
        )
    txn._call = coordinator.call  # type: ignore[method-assign]
    await producer.stop()
    assert coordinator.ended == ["committed" if ending == "commit" else "aborted"]


@pytest.mark.parametrize(
    ("answer", "then"),
    [
        (InvalidTxnStateError("transactional id 't' is COMPLETE_ABORT"), "aborted"),
        (UnknownServerError("the coordinator failed after writing PrepareCommit"), "committed"),
    ],
)
async def test_what_a_refused_commit_leaves(answer: Exception, then: str) -> None:
    """Review 103. INVALID_TXN_STATE: no transaction of it is open at the coordinator
    (aborted there, by its timeout say), so it was not committed; nothing more joins it
    (it stayed open to sends) and only an abort goes through. Any other answer but a
    fatal one (UNKNOWN_SERVER_ERROR here) proves nothing: it may have been committed, so
    it is not aborted (an abort refused by a committed transaction would read as done)."""
    cluster = ScriptedCluster({TP: 1})
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    txn = producer._txn
    assert txn is not None
    try:
        producer.begin_transaction()
        await asyncio.wait_for(await producer.send("a", b"in it"), 5)

        async def refusing(api_key: ApiKey, request: Any, check: Any = None) -> Any:
            raise answer

        txn._call = refusing  # type: ignore[method-assign]
        with pytest.raises(type(answer)):
            await producer.commit_transaction()
        with pytest.raises(TransactionStateError):
            await producer.send("a", b"more")
        with pytest.raises(TransactionStateError):  # the other end
            if then == "aborted":
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
        txn._call = coordinator.call  # type: ignore[method-assign]
        if then == "aborted":
            await producer.abort_transaction()
        else:
            await producer.commit_transaction()
        assert coordinator.ended == [then]
        producer.begin_transaction()
    finally:
        await producer.stop()


async def test_a_send_waiting_for_metadata_does_not_join_the_next_transaction() -> None:
    """Review 104: a send begun in one transaction, waiting for its topic's metadata
    while that transaction committed and the next began, joined the next one."""
    cluster = ScriptedCluster({TP: 1})
    b0 = TopicPartition("b", 0)
    with_b, known = ScriptedCluster({TP: 1, b0: 1}).metadata, asyncio.Event()

    async def wait_for_topic(topic: str, timeout_ms: float) -> Any:
        await known.wait()
        cluster.metadata = with_b
        return with_b.topics[topic]

    cluster.wait_for_topic = wait_for_topic  # type: ignore[method-assign]
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    try:
        producer.begin_transaction()
        await asyncio.wait_for(await producer.send("a", b"t1"), 5)
        late = asyncio.create_task(producer.send("b", b"sent during t1"))
        await asyncio.sleep(0.02)
        await producer.commit_transaction()
        producer.begin_transaction()
        known.set()
        with pytest.raises(TransactionStateError, match="ended while send"):
            await asyncio.wait_for(late, 5)
        await producer.commit_transaction()
        assert coordinator.calls.count("ADD_PARTITIONS_TO_TXN") == 1  # a-0, in the first
    finally:
        await producer.stop()


async def test_a_broken_sequence_makes_the_transaction_abortable_at_once() -> None:
    """Review 104: a broken sequence (KIP-360) held the batch for a new epoch, which a
    transactional producer only gets once it aborts: commit waited delivery_timeout_ms.
    The batch fails, and the transaction can only be aborted (Kafka's abortable error)."""
    cluster = ScriptedCluster({TP: 1})
    cluster.answers = [lambda r: answer_all(r, OutOfOrderSequenceNumberError.code), ok, ok]
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    try:
        producer.begin_transaction()
        future = await producer.send("a", b"v")
        with pytest.raises(OutOfOrderSequenceNumberError):
            await asyncio.wait_for(future, 5)
        with pytest.raises(TransactionStateError, match=r"abort_transaction\(\) first"):
            await asyncio.wait_for(producer.commit_transaction(), 5)
        await asyncio.wait_for(producer.abort_transaction(), 5)  # a new epoch after it
        producer.begin_transaction()
        assert (await asyncio.wait_for(await producer.send("a", b"again"), 5)).offset == 0
        await producer.commit_transaction()
    finally:
        await producer.stop()


async def test_an_abort_waits_for_an_add_partitions_under_way() -> None:
    """Review 104: b-0's AddPartitionsToTxn was slow; a-0's batch failed and the abort's
    EndTxn went out before the Add's answer, which then added b-0 to the *next*
    transaction's partitions: its batch went without an AddPartitionsToTxn of its own."""
    a0, b0 = TopicPartition("a", 0), TopicPartition("b", 0)
    cluster = ScriptedCluster({a0: 1, b0: 1})
    cluster.release.clear()
    cluster.answers = [lambda r: answer_all(r, InvalidRecordError.code), ok]
    calls: list[str] = []
    slow_add, b_asked, batch_out = asyncio.Event(), asyncio.Event(), asyncio.Event()
    real_send = cluster.send

    async def send(node: int, api_key: ApiKey, request: Any, *, expect_response: bool) -> Any:
        batch_out.set()
        return await real_send(node, api_key, request, expect_response=expect_response)

    cluster.send = send  # type: ignore[method-assign]

    async def call(api_key: ApiKey, request: Any, check: Any = None) -> Any:
        if api_key == ApiKey.INIT_PRODUCER_ID:
            return InitProducerIdResponse(producer_id=5, producer_epoch=0)
        topics = ",".join(t.name for t in getattr(request, "topics", []))
        calls.append(f"add {topics}" if api_key == ApiKey.ADD_PARTITIONS_TO_TXN else api_key.name)
        if topics == "b" and not slow_add.is_set():
            b_asked.set()
            asyncio.get_running_loop().call_later(0.3, slow_add.set)
            await slow_add.wait()
        return SimpleNamespace(results=[])

    producer = await transactional(cluster, call)
    try:
        producer.begin_transaction()
        first = await producer.send("a", b"fails")
        await asyncio.wait_for(batch_out.wait(), 5)  # a-0 added, its batch out
        held = await producer.send("b", b"held")
        await asyncio.wait_for(b_asked.wait(), 5)  # b-0's Add out (slow)
        cluster.release.set()  # a-0 refused: abortable, b-0's batch failed unsent
        await asyncio.gather(first, held, return_exceptions=True)
        await producer.abort_transaction()
        producer.begin_transaction()
        await asyncio.wait_for(await producer.send("b", b"t2"), 5)
        assert calls == ["add a", "add b", "END_TXN", "add b"]
    finally:
        await producer.stop()


async def test_a_transaction_block_whose_commit_is_refused_is_aborted() -> None:
    """Review 104: the ``transaction()`` block's commit refused (a record of it failed)
    left the transaction open, and the next ``transaction()`` could not begin."""
    cluster = ScriptedCluster({TP: 1})
    cluster.answers = [lambda r: answer_all(r, InvalidRecordError.code)]
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    try:
        with pytest.raises(TransactionStateError, match="INVALID_RECORD"):
            async with producer.transaction():
                await producer.send("a", b"refused")
        assert coordinator.ended == ["aborted"]
        async with producer.transaction():
            await producer.send("a", b"next")
        assert coordinator.ended == ["aborted", "committed"]
    finally:
        await producer.stop()


async def test_nothing_joins_a_transaction_while_it_is_being_committed() -> None:
    """Review 101: send() was taken while EndTxn was out. Its batch, refused as its
    transaction was over and sent again, went into the producer's next transaction.
    Kafka's producer refuses a send while it commits or aborts, and so does this one; the
    next transaction takes sends again."""
    cluster = ScriptedCluster({TP: 1})
    coordinator = Coordinator()
    end_sent, end_done = coordinator.end_sent, coordinator.gate
    producer = await transactional(cluster, coordinator)
    try:
        for ending in (producer.commit_transaction, producer.abort_transaction):
            end_sent.clear()
            end_done.clear()
            producer.begin_transaction()
            await asyncio.wait_for(await producer.send("a", b"in it"), 5)
            task = asyncio.create_task(ending())
            await asyncio.wait_for(end_sent.wait(), 5)
            with pytest.raises(TransactionStateError, match="being"):
                await producer.send("a", b"late")
            with pytest.raises(TransactionStateError, match="being"):
                await producer.send_offsets_to_transaction({TopicPartition("x", 0): 1}, "g")
            with pytest.raises(TransactionStateError, match="being"):
                await producer.commit_transaction()
            end_done.set()
            await asyncio.wait_for(task, 5)
        producer.begin_transaction()
        assert (await asyncio.wait_for(await producer.send("a", b"next"), 5)).offset == 0
        values = [
            r.value
            for _, request, _ in cluster.requests
            for t in request.topics
            for p in t.partitions
            for b in decode_batches(bytes(p.records or b""))
            for r in b
        ]
        assert values == [b"in it", b"in it", b"next"]
    finally:
        await producer.stop()


def _broken_sequence_then_ok(cluster: ScriptedCluster) -> None:
    cluster.answers = [lambda r: answer_all(r, OutOfOrderSequenceNumberError.code), ok, ok]


async def _a_sequence_breaks(producer: Producer) -> None:
    """A transaction whose one record is refused OUT_OF_ORDER_SEQUENCE_NUMBER."""
    producer.begin_transaction()
    with pytest.raises(OutOfOrderSequenceNumberError):
        await asyncio.wait_for(await producer.send("a", b"v"), 5)


async def _next_is_held(producer: Producer) -> bool:
    producer.begin_transaction()
    future = asyncio.ensure_future(await producer.send("a", b"next"))
    done, _ = await asyncio.wait([future], timeout=3)
    return not done


async def test_a_batch_failing_behind_a_broken_sequence_does_not_hold_the_next() -> None:
    """Review 105: a batch in flight behind the refused one came back NOT_LEADER during
    the abort and failed, which marked a sequence hole *after* the abort took its new
    epoch; the hole then stopped the next transaction's sends until their timeout."""
    cluster = ScriptedCluster({TP: 1})
    cluster.answers = [
        lambda r: answer_all(r, OutOfOrderSequenceNumberError.code),
        lambda r: answer_all(r, NotLeaderOrFollowerError.code),
        ok,
    ]
    gates, real_send = [asyncio.Event(), asyncio.Event()], cluster.send
    first_gate, second_gate = gates

    async def send(node: int, api_key: ApiKey, request: Any, *, expect_response: bool) -> Any:
        if gates:
            await gates.pop(0).wait()
        return await real_send(node, api_key, request, expect_response=expect_response)

    cluster.send = send  # type: ignore[method-assign]
    coordinator = Coordinator()

    async def round_trip(api_key: ApiKey, request: Any, check: Any = None) -> Any:
        await asyncio.sleep(0.01)
        return await coordinator.call(api_key, request, check)

    producer = await transactional(cluster, round_trip)
    try:
        producer.begin_transaction()
        first = await producer.send("a", b"first")
        await asyncio.sleep(0.05)
        behind = await producer.send("a", b"behind")  # in flight behind it
        await asyncio.sleep(0.02)
        first_gate.set()
        with pytest.raises(OutOfOrderSequenceNumberError):
            await asyncio.wait_for(first, 5)
        abort = asyncio.create_task(producer.abort_transaction())
        await asyncio.sleep(0.02)
        second_gate.set()
        await asyncio.wait_for(abort, 5)
        await asyncio.gather(behind, return_exceptions=True)
        assert not await _next_is_held(producer)
    finally:
        await producer._close()


async def test_no_transaction_begins_while_the_new_epoch_is_owed() -> None:
    """Review 105: the abort's InitProducerId failed ("call abort_transaction() again"),
    but begin_transaction() was taken, and its records waited for an epoch nobody asked
    for. It is refused until an abort gets the new epoch."""
    cluster = ScriptedCluster({TP: 1})
    _broken_sequence_then_ok(cluster)
    coordinator = Coordinator()
    producer = await transactional(cluster, coordinator)
    txn = producer._txn
    assert txn is not None
    try:
        await _a_sequence_breaks(producer)
        coordinator.init_failures = 10**6
        txn._max_block_s = 0.05
        with pytest.raises(TransactionStateError, match=r"abort_transaction\(\) again"):
            await producer.abort_transaction()
        with pytest.raises(TransactionStateError, match=r"abort_transaction\(\) again"):
            producer.begin_transaction()
        coordinator.init_failures = 0
        await producer.abort_transaction()
        assert not await _next_is_held(producer)
    finally:
        await producer._close()


async def test_no_transaction_begins_during_the_aborts_epoch_bump() -> None:
    """Review 105: begun while the abort waited for its new epoch, a transaction's
    AddPartitionsToTxn went under the old epoch and its batch under the new. A commit or
    abort meanwhile says what is going on."""
    cluster = ScriptedCluster({TP: 1})
    _broken_sequence_then_ok(cluster)
    coordinator = Coordinator()
    asked, gate = asyncio.Event(), asyncio.Event()
    epochs: list[int] = []

    async def call(api_key: ApiKey, request: Any, check: Any = None) -> Any:
        if api_key == ApiKey.INIT_PRODUCER_ID and epochs:
            asked.set()
            await gate.wait()
            epochs.append(1)
            return InitProducerIdResponse(producer_id=5, producer_epoch=1)
        if api_key == ApiKey.INIT_PRODUCER_ID:
            epochs.append(0)
        return await coordinator.call(api_key, request, check)

    producer = await transactional(cluster, call)
    try:
        await _a_sequence_breaks(producer)
        abort = asyncio.create_task(producer.abort_transaction())
        await asyncio.wait_for(asked.wait(), 5)
        with pytest.raises(TransactionStateError, match="still being ended"):
            producer.begin_transaction()
        for ending in (producer.commit_transaction, producer.abort_transaction):
            # (review 106: they said "the transaction is being None already")
            with pytest.raises(TransactionStateError, match="still getting the producer's new"):
                await ending()
        gate.set()
        await asyncio.wait_for(abort, 5)
        assert epochs == [0, 1]
        assert not await _next_is_held(producer)
    finally:
        gate.set()
        await producer._close()


async def test_a_fenced_epoch_bump_is_fatal() -> None:
    """Review 105: the abort's InitProducerId refused PRODUCER_FENCED was read as "no
    answer": "call abort_transaction() again", forever. It is fatal: only stop()."""
    cluster = ScriptedCluster({TP: 1})
    _broken_sequence_then_ok(cluster)
    coordinator = Coordinator()

    async def call(api_key: ApiKey, request: Any, check: Any = None) -> Any:
        if api_key == ApiKey.INIT_PRODUCER_ID and coordinator.calls:
            raise ProducerFencedError("a newer producer with this transactional id took over")
        return await coordinator.call(api_key, request, check)

    producer = await transactional(cluster, call)
    try:
        await _a_sequence_breaks(producer)
        with pytest.raises(ProducerFencedError):
            await producer.abort_transaction()
        with pytest.raises(ProducerFencedError):
            producer.begin_transaction()
    finally:
        await producer.stop()


async def test_stop_waits_for_the_aborts_epoch_bump() -> None:
    """Review 106: stop() waited for the abort's EndTxn but not for the epoch bump that
    follows it: it closed the connections under the InitProducerId, and the abort then
    asked a stopped producer to "call abort_transaction() again"."""
    cluster = ScriptedCluster({TP: 1})
    _broken_sequence_then_ok(cluster)
    coordinator = Coordinator()
    bumped = asyncio.Event()

    async def call(api_key: ApiKey, request: Any, check: Any = None) -> Any:
        if api_key == ApiKey.INIT_PRODUCER_ID and coordinator.calls:
            await asyncio.sleep(0.05)
            if cluster.closed:
                raise NetworkError("the client is closed")
            bumped.set()
            return InitProducerIdResponse(producer_id=5, producer_epoch=1)
        return await coordinator.call(api_key, request, check)

    real_close = cluster.close

    async def close() -> None:
        cluster.closed = True
        await real_close()

    cluster.close = close  # type: ignore[method-assign]
    producer = await transactional(cluster, call)
    await _a_sequence_breaks(producer)
    coordinator.gate.clear()
    abort = asyncio.create_task(producer.abort_transaction())
    await asyncio.wait_for(coordinator.end_sent.wait(), 5)
    stop = asyncio.create_task(producer.stop())
    await asyncio.sleep(0.02)
    coordinator.gate.set()
    await asyncio.wait_for(stop, 5)
    assert abort.done() and bumped.is_set()
    await abort  # it went through
