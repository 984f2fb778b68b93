"""KIP-890 at the partition leader, found in review: a pipelined request must not
overtake a batch held for the check; a partition not checked is appended as the request
arrives, so a marker during another partition's check cannot strand it; a transactional
batch without a transactional id is refused; the guard survives the producer's expiry; a
check cancelled mid-request leaves the peer connection usable."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any

import pytest

from broker.replica.manager import ReplicaManager
from protocol.apis import ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic
from protocol.errors import (
    ApiError,
    InvalidTxnStateError,
    NotLeaderOrFollowerError,
    TransactionalIdAuthorizationFailedError,
)
from protocol.records import encode_batch
from tests.unit.conftest import MakeLeader
from tests.unit.test_replica_fetch_wake import _leader_state

TXN_ID = "app-1"
PID = 7


def _batch(seq: int, *, transactional: bool = True, pid: int = PID) -> bytes:
    return encode_batch(
        [(b"k", b"v%d" % seq, None, 1000)],
        producer_id=pid,
        producer_epoch=0,
        base_sequence=seq,
        is_transactional=transactional,
    )


def _request(
    parts: dict[int, bytes], *, txn_id: str | None = TXN_ID, acks: int = 1
) -> ProduceRequest:
    return ProduceRequest(
        transactional_id=txn_id,
        acks=acks,
        timeout_ms=1000,
        topics=[
            ProduceTopic(
                name="t",
                partitions=[ProducePartition(index=i, records=r) for i, r in parts.items()],
            )
        ],
    )


def _codes(response: Any) -> dict[int, tuple[int, str]]:
    assert isinstance(response, ProduceResponse)
    return {p.index: (p.error_code, p.error_message or "") for p in response.topics[0].partitions}


async def _answer(replicas: ReplicaManager, request: ProduceRequest) -> dict[int, tuple[int, str]]:
    response: Any = replicas.produce(request)
    if inspect.isawaitable(response):
        response = await response
    return _codes(response)


class _Coordinator:
    """Says yes, after ``delay`` loop passes (a remote coordinator's round trip)."""

    def __init__(self, delay: int = 3) -> None:
        self.delay = delay
        self.asked: list[Any] = []

    async def verify(
        self, txn_id: str, pid: int, epoch: int, tps: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ApiError]:
        self.asked.append((txn_id, pid, epoch, tps))
        for _ in range(self.delay):
            await asyncio.sleep(0)
        return {}


async def _two_partitions(make_leader: MakeLeader) -> ReplicaManager:
    replicas = await make_leader([1], True)
    await replicas.become_leader_or_follower(
        [dataclasses.replace(_leader_state(isr=[1], replicas=[1, 2, 3]), partition_index=1)]
    )
    return replicas


async def test_a_pipelined_batch_does_not_overtake_one_held_for_verification(
    make_leader: MakeLeader,
) -> None:
    """The producer's transaction is open in t-0; its next request carries t-0's next
    batch and the transaction's first batch for t-1 (which needs the check), and the one
    after (pipelined, max_in_flight up to 5) only t-0's batch after that. The second
    request is not checked, so it is appended at once, ahead of the first request's t-0
    batch, which is still waiting for t-1's check: OUT_OF_ORDER_SEQUENCE_NUMBER for a
    legitimate batch. (Our client, which reads that answer after the first request's
    success, sees no earlier batch unsettled and takes the KIP-360 path: no more sends
    until a new epoch, which a transactional producer only gets after an abort.)"""
    replicas = await _two_partitions(make_leader)
    replicas.txn_verify = _Coordinator().verify
    assert (await _answer(replicas, _request({0: _batch(0)})))[0][0] == 0  # t-0 open

    first = replicas.produce(_request({0: _batch(1), 1: _batch(0)}))
    assert inspect.isawaitable(first)
    # the server runs a coroutine answer as a task, and reads on
    task = asyncio.ensure_future(first)  # type: ignore[arg-type]
    second = replicas.produce(_request({0: _batch(2)}))
    first_codes = _codes(await task)
    second_codes = _codes(await second if inspect.isawaitable(second) else second)
    assert first_codes == {0: (0, ""), 1: (0, "")}
    assert second_codes[0][0] == 0, second_codes


async def test_a_transactional_batch_without_transactional_id_is_refused(
    make_leader: MakeLeader,
) -> None:
    """Without its transactional id it could not be checked, nor its Write on the id: a
    late one would open a transaction no coordinator knows. Kafka refuses it so."""
    replicas = await make_leader([1], True)
    coordinator = _Coordinator(delay=0)
    replicas.txn_verify = coordinator.verify
    log = replicas.partitions[next(iter(replicas.partitions))].log
    codes = await _answer(replicas, _request({0: _batch(0)}, txn_id=None))
    assert codes[0][0] == TransactionalIdAuthorizationFailedError.code
    assert "without its producer's transactional id" in codes[0][1]
    assert log.log_end_offset == 0 and not coordinator.asked
    replicas.txn_verify = None  # also with the check off
    codes = await _answer(replicas, _request({0: _batch(0)}, txn_id=None))
    assert codes[0][0] == TransactionalIdAuthorizationFailedError.code
    plain = await _answer(replicas, _request({0: _batch(0, transactional=False)}, txn_id=None))
    assert plain[0][0] == 0


async def test_the_guard_sees_a_marker_after_the_producer_expired(
    make_leader: MakeLeader,
) -> None:
    """The guard compares marker counts; expiring the producer (app._expire_producers runs
    periodically) drops its count, so one marker during the check brings it back to the
    value the guard saw and the batch goes in after its transaction's marker."""
    replicas = await make_leader([1], True)
    log = replicas.partitions[next(iter(replicas.partitions))].log
    # an earlier transaction of the producer ended here (say one whose batches were all
    # refused, or an epoch-bumping abort): the producer is known with no batch, count 1
    log.append_marker(producer_id=PID, producer_epoch=0, committed=False, coordinator_epoch=0)
    assert log.producers.markers_seen(PID) == 1

    async def verify(
        txn_id: str, pid: int, epoch: int, tps: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ApiError]:
        await asyncio.sleep(0)
        # meanwhile: the producer expires, its transaction is aborted (coordinator timeout)
        log.producers.expire(now_ms=10**15, expiration_ms=1)
        log.append_marker(producer_id=PID, producer_epoch=0, committed=False, coordinator_epoch=0)
        return {}  # the coordinator said yes before the abort

    replicas.txn_verify = verify
    codes = await _answer(replicas, _request({0: _batch(0)}))
    assert codes[0][0] != 0, log.producers.ongoing  # appended after the abort marker


@pytest.mark.parametrize("coordinator_says_yes", [True, False])
async def test_a_marker_during_another_partitions_check_voids_the_whole_request(
    make_leader: MakeLeader, coordinator_says_yes: bool
) -> None:
    """A request read late carries the transaction's next batch for t-0 (open there, so
    not checked) and its first batch for t-1 (checked). While t-1's check is out, the
    transaction is aborted and t-0 gets its marker. t-0's batch was held with t-1's and
    appended after that marker, unguarded (a transaction no marker ends); now it goes in
    when the request comes, as before KIP-890."""
    replicas = await _two_partitions(make_leader)
    replicas.txn_verify = _Coordinator(delay=0).verify
    assert (await _answer(replicas, _request({0: _batch(0)})))[0][0] == 0  # t-0 open
    log0 = replicas.partitions[next(p for p in replicas.partitions if p.partition == 0)].log

    async def verify(
        txn_id: str, pid: int, epoch: int, tps: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ApiError]:
        await asyncio.sleep(0)
        # meanwhile the transaction is aborted: its marker reaches t-0
        log0.append_marker(producer_id=PID, producer_epoch=0, committed=False, coordinator_epoch=0)
        if coordinator_says_yes:
            return {}  # it had said t-1 was in it, before the abort
        # or (the check waited in the PeerPool behind markers) asked after it: t-1 refused
        return dict.fromkeys(tps, InvalidTxnStateError("not in an ongoing transaction"))

    replicas.txn_verify = verify
    codes = await _answer(replicas, _request({0: _batch(1), 1: _batch(0)}))
    # t-0's batch went in as the request came, before the marker, which ended it
    assert codes[0] == (0, "")
    assert PID not in log0.producers.ongoing
    assert log0.last_stable_offset(log0.log_end_offset) == log0.log_end_offset


async def test_a_check_cancelled_mid_request_leaves_the_shared_peer_connection_usable() -> None:
    """The server cancels a produce's task when the producer's connection closes (a
    client timing out, or stopping); a check (KIP-890) cancelled while its request is on
    the shared PeerPool connection leaves its answer unread there, and the next request
    to that broker (a WriteTxnMarkers of the coordinator, another produce's check) reads
    it: it fails (PeerError), though nothing was wrong with it or the peer."""
    from broker.network import PeerPool
    from protocol.apis import (
        AddPartitionsToTxnRequest,
        AddPartitionsToTxnResponse,
        ApiKey,
        WriteTxnMarkersRequest,
        WriteTxnMarkersResponse,
        decode_request,
        encode_response,
    )

    writers: list[asyncio.StreamWriter] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                header, api, _ = decode_request(memoryview(await reader.readexactly(size)))
                await asyncio.sleep(0.1)  # the coordinator's answer takes a moment
                body: Any = (
                    AddPartitionsToTxnResponse()
                    if api.key == ApiKey.ADD_PARTITIONS_TO_TXN
                    else WriteTxnMarkersResponse()
                )
                writer.writelines(encode_response(header.correlation_id, header.api_version, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = PeerPool(lambda broker: ("127.0.0.1", port), request_timeout_ms=5000)
    try:
        check = asyncio.create_task(
            pool.request(
                2,
                ApiKey.ADD_PARTITIONS_TO_TXN,
                AddPartitionsToTxnRequest(
                    transactional_id=TXN_ID, producer_id=PID, producer_epoch=0, verify_only=True
                ),
            )
        )
        await asyncio.sleep(0.05)  # sent, its answer not back yet
        check.cancel()  # the producer went away: the server cancels the produce
        with pytest.raises(asyncio.CancelledError):
            await check
        response = await pool.request(2, ApiKey.WRITE_TXN_MARKERS, WriteTxnMarkersRequest())
        assert isinstance(response, WriteTxnMarkersResponse)
    finally:
        pool.close()
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_a_batch_behind_a_held_one_waits_for_it_though_the_transaction_opened(
    make_leader: MakeLeader,
) -> None:
    """Found by the end-to-end test: the first two batches of a transaction in t-0 both
    wait for the check; the first is appended (the transaction is open there now); a
    third request, which needs no check any more, must still wait for the second."""
    replicas = await make_leader([1], True)
    delays = iter([1, 20])

    async def verify(
        txn_id: str, pid: int, epoch: int, tps: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ApiError]:
        for _ in range(next(delays, 0)):
            await asyncio.sleep(0)
        return {}

    replicas.txn_verify = verify
    first = asyncio.ensure_future(replicas.produce(_request({0: _batch(0)})))  # type: ignore[arg-type]
    second = asyncio.ensure_future(replicas.produce(_request({0: _batch(1)})))  # type: ignore[arg-type]
    assert _codes(await first) == {0: (0, "")}
    third = replicas.produce(_request({0: _batch(2)}))
    assert inspect.isawaitable(third)  # held behind the second
    assert _codes(await second) == {0: (0, "")}
    assert _codes(await third) == {0: (0, "")}
    assert not replicas._held_batches  # nothing left queued


async def test_leadership_lost_during_the_check_answers_not_leader(
    make_leader: MakeLeader,
) -> None:
    """While t-0's first transactional batch is being checked, the leadership moves to
    broker 2 and this (now follower) replica truncates to the new leader's log, as its
    fetcher does. The batch cannot be appended here: Kafka answers NOT_LEADER_OR_FOLLOWER
    (the leader check comes before the verification guard), which the producer retries at
    the new leader; INVALID_TXN_STATE would make its transaction abortable for a mere
    leader move."""
    replicas = await make_leader([1], True)
    partition = next(iter(replicas.partitions.values()))
    log = partition.log
    log.append(_batch(0, transactional=False, pid=99), leader_epoch=1)  # something to cut

    async def verify(txn_id: str, pid: int, epoch: int, tps: Any) -> dict[Any, ApiError]:
        await asyncio.sleep(0)
        follower = dataclasses.replace(
            _leader_state(isr=[2], replicas=[1, 2, 3]), leader=2, leader_epoch=2
        )
        await replicas.become_leader_or_follower([follower])  # no live leader: no fetcher
        log.truncate_to(0)  # the fetcher's truncation to the new leader's epoch end
        return {}

    replicas.txn_verify = verify
    response: Any = replicas.produce(_request({0: _batch(0)}))
    assert inspect.isawaitable(response)
    codes = _codes(await response)
    assert not partition.is_leader
    assert codes[0][0] == NotLeaderOrFollowerError.code, codes


async def test_a_held_produce_whose_task_never_started_does_not_block_the_partition(
    make_leader: MakeLeader,
) -> None:
    """produce() takes the request's turns in _held_batches synchronously; a task
    cancelled before its first step must give them back too, or every later batch of the
    producer for t-0 would wait behind it for good."""
    replicas = await make_leader([1], True)

    async def verify(txn_id: str, pid: int, epoch: int, tps: Any) -> dict[Any, ApiError]:
        await asyncio.sleep(0)
        return {}

    replicas.txn_verify = verify
    first = asyncio.ensure_future(replicas.produce(_request({0: _batch(0)})))  # type: ignore[arg-type]
    first.cancel()  # e.g. the connection went before the task ran
    await asyncio.sleep(0)
    assert first.cancelled()
    # the producer reconnects and sends the batch again
    again: Any = replicas.produce(_request({0: _batch(0)}))
    codes = _codes(await asyncio.wait_for(again, 1.0))
    assert codes[0][0] == 0


async def test_a_held_acks_all_produce_cancelled_leaves_nothing_in_purgatory(
    make_leader: MakeLeader,
) -> None:
    """acks=all, t-0 open (not held, appended at once: its Deferred waits for broker 2)
    and t-1's first batch held for the check. The producer's connection goes while the
    check is out: the server cancels the task, and t-0's Deferred with it, as a plain
    produce's (its DelayedProduce must not wait in the purgatory until its timeout)."""
    replicas = await make_leader([1, 2], True)
    await replicas.become_leader_or_follower(
        [dataclasses.replace(_leader_state(isr=[1, 2], replicas=[1, 2, 3]), partition_index=1)]
    )
    gate = asyncio.Event()

    async def verify(txn_id: str, pid: int, epoch: int, tps: Any) -> dict[Any, ApiError]:
        await gate.wait()
        return {}

    p0 = next(p for p in replicas.partitions.values() if p.index == 0)
    p0.log.append(_batch(0), leader_epoch=1)  # the transaction is open in t-0
    replicas.txn_verify = verify
    request = _request({0: _batch(1), 1: _batch(0)}, acks=-1)
    request.timeout_ms = 60_000
    task = asyncio.ensure_future(replicas.produce(request))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert len(replicas.delayed_produces) == 1  # t-0's, appended as the request came
    task.cancel()  # the producer's connection closed
    await asyncio.sleep(0)
    assert task.cancelled()
    assert not replicas.delayed_produces, "t-0's DelayedProduce outlives its request"
