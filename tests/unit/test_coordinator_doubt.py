"""While a broker cannot tell whether it still coordinates what it holds (its ZooKeeper
session in doubt, or a stall's hold), both coordinators refuse (COORDINATOR_NOT_AVAILABLE,
retriable), and their timers do not count the doubt against members and transactions
whose requests they refused (broker/coordinator/doubt.py)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
import structlog.testing

from broker.coordinator.doubt import Doubt
from broker.coordinator.placement import coordinator_of
from broker.coordinator.transactions import TransactionCoordinator
from client.cluster import Broker, Cluster, ClusterMetadata
from client.coordinator import CoordinatorLine
from protocol.apis import (
    ApiKey,
    FindCoordinatorResponse,
    HeartbeatRequest,
    OffsetFetchRequest,
    OffsetFetchRequestTopic,
    SyncGroupRequest,
)
from protocol.errors import CoordinatorNotAvailableError, NotCoordinatorError
from protocol.group_log import OFFSETS_TOPIC
from protocol.txn_log import TxnState
from tests.unit.test_coordinator_groups import NOT_OURS, OURS, _commit, _coordinator, _join
from tests.unit.test_txn_coordinator_fence_reason import Clock, _init, _written
from tests.unit.test_txn_coordinator_fence_reason import _coordinator as _txn_coordinator

pytestmark = pytest.mark.timeout(20)


class Session:
    def __init__(self) -> None:
        self.current = True

    def __call__(self) -> bool:
        return self.current


async def _ongoing(clock: Clock, session: Session) -> tuple[TransactionCoordinator, Any]:
    """A transaction coordinator on ``clock`` and ``session``, and its id "t" in an
    ongoing transaction (1-s timeout) begun now."""
    c = _txn_coordinator(clock)
    c._doubt = Doubt(session, clock)
    await _init(c)
    meta = c.stores[0]["t"]
    meta.state, meta.start_ms, meta.partitions = TxnState.ONGOING, clock.ms, {("a", 0)}
    return c, meta


def test_a_doubt_runs_from_the_last_moment_known_and_its_clock_stands_still() -> None:
    clock, session = Clock(), Session()
    doubt = Doubt(session, clock)
    start = doubt.clock()
    clock.ms += 1_000
    assert doubt.known() and doubt.clock() == start + 1_000
    clock.ms += 400  # the doubt began here, unseen (a stall: nothing ran)
    session.current = False
    clock.ms += 600
    assert not doubt.known() and doubt.doubts == 1
    assert doubt.clock() == start + 1_000  # from the last moment known, not from the first seen
    clock.ms += 5_000
    assert not doubt.known() and doubt.doubts == 1  # one doubt, not one per question
    assert doubt.clock() == start + 1_000
    assert doubt.within_ms(2_000) == 2_000 and doubt.within_ms(60_000) == 6_000
    session.current = True
    clock.ms += 1
    assert doubt.known()
    clock.ms += 3_000
    assert doubt.clock() == start + 4_000  # runs again, the 6 s left out
    assert doubt.within_ms(3_000) == 0  # ended 3 s ago
    assert doubt.within_ms(4_000) == 1_000 and doubt.within_ms(60_000) == 6_001


async def test_in_doubt_the_group_coordinator_refuses_what_it_would_answer_from_its_state() -> None:
    """A stale coordinator's heartbeat keeps a member on an assignment another one has
    given away; its OffsetFetch reads offsets from before the new one's commits."""
    coordinator, _ = _coordinator()
    session = Session()
    coordinator._doubt = Doubt(session)
    await coordinator.offset_commit(_commit(OURS, {0: 5}))
    joined = await coordinator.join_group(_join(OURS))
    await coordinator.sync_group(
        SyncGroupRequest(group_id=OURS, generation_id=1, member_id=joined.member_id)
    )
    heartbeat = HeartbeatRequest(group_id=OURS, generation_id=1, member_id=joined.member_id)
    fetch = OffsetFetchRequest(
        group_id=OURS, topics=[OffsetFetchRequestTopic(name="t", partition_indexes=[0])]
    )
    await coordinator.heartbeat(heartbeat)
    assert (await coordinator.offset_fetch(fetch)).topics[0].partitions[0].committed_offset == 5

    session.current = False
    for call in (
        lambda: coordinator.heartbeat(heartbeat),
        lambda: coordinator.offset_fetch(fetch),
        lambda: coordinator.join_group(_join(OURS)),
    ):
        with pytest.raises(CoordinatorNotAvailableError, match="in doubt; retry") as refused:
            await call()
        assert refused.value.retriable
    committed = await coordinator.offset_commit(_commit(OURS, {0: 6}))
    assert committed.topics[0].partitions[0].error_code == CoordinatorNotAvailableError.code
    described = coordinator._describe(OURS)
    assert described.error_code == CoordinatorNotAvailableError.code
    with pytest.raises(NotCoordinatorError):  # a group it never held: as before
        await coordinator.heartbeat(
            HeartbeatRequest(group_id=NOT_OURS, generation_id=1, member_id="m")
        )
    assert coordinator._doubt.refusals == 5

    session.current = True
    await coordinator.heartbeat(heartbeat)
    assert (await coordinator.offset_fetch(fetch)).topics[0].partitions[0].committed_offset == 5


async def test_a_member_refused_while_in_doubt_keeps_its_session() -> None:
    """Its heartbeats were refused for longer than its session: once the coordinator
    knows it still coordinates the group, the member is still in it, as if the doubt had
    not happened; the time before the doubt still counts."""
    coordinator, _ = _coordinator()
    clock, session = Clock(), Session()
    coordinator._doubt = Doubt(session, clock)
    member = (await coordinator.join_group(_join(OURS))).member_id
    await coordinator.sync_group(SyncGroupRequest(group_id=OURS, generation_id=1, member_id=member))
    group = coordinator.groups[OURS]

    clock.ms += 9_000  # its session is 10 s
    assert coordinator._doubt.known()  # (the coordinator's tick asks every 100 ms)
    session.current = False
    clock.ms += 30_000
    group.tick()  # (the coordinator's tick skips its groups in doubt; their clock stands still)
    assert member in group.members
    session.current = True
    assert coordinator._doubt.known()
    group.tick()
    assert member in group.members
    clock.ms += 1_001  # the 9 s before the doubt still count: 10.001 s silent
    group.tick()
    assert member not in group.members


async def test_a_transaction_is_not_aborted_for_time_its_coordinator_spent_in_doubt() -> None:
    clock, session = Clock(), Session()
    c, meta = await _ongoing(clock, session)  # a 1-s transaction timeout

    clock.ms += 800
    assert c._doubt.known()  # (the group coordinator's tick asks every 100 ms)
    session.current = False
    clock.ms += 5_000
    await c.abort_timed_out()  # in doubt: not this broker's to abort, maybe
    assert meta.state == TxnState.ONGOING and c.timed_out == 0
    session.current = True
    assert c._doubt.known()
    clock.ms += 100
    await c.abort_timed_out()  # 5.9 s since it began, 5 s of them in doubt: 0.9 s counted
    assert meta.state == TxnState.ONGOING and c.timed_out == 0
    clock.ms += 101
    await c.abort_timed_out()
    for task in list(c._tasks):
        await task
    assert c.timed_out == 1 and meta.state != TxnState.ONGOING


async def test_in_doubt_find_coordinator_does_not_name_this_broker() -> None:
    """A member refused here looks for its coordinator again: told "this broker" by this
    broker, it would come straight back. Refused, it asks another broker, which may know
    the new coordinator. Another broker named from this one's metadata is still said:
    that broker knows its own mind."""
    session = Session()
    doubt = Doubt(session)
    metadata = SimpleNamespace(
        topics={OFFSETS_TOPIC: {0: SimpleNamespace(leader=1), 1: SimpleNamespace(leader=2)}},
        address=lambda broker, listener: (f"host-{broker}", 9092),
    )

    async def find(key: str) -> Any:
        async def create() -> None:
            raise AssertionError("the topic exists")

        return await coordinator_of(
            metadata,  # type: ignore[arg-type]
            OFFSETS_TOPIC,
            2,
            key,
            "PLAINTEXT",
            create=create,
            what="group",
            broker_id=1,
            doubt=doubt,
        )

    assert (await find(OURS)).node_id == 1
    assert (await find(NOT_OURS)).node_id == 2
    session.current = False
    with pytest.raises(CoordinatorNotAvailableError, match="in doubt; retry"):
        await find(OURS)
    assert (await find(NOT_OURS)).node_id == 2
    session.current = True
    assert (await find(OURS)).host == "host-1"


def test_the_doubt_clock_never_goes_back() -> None:
    """From a review: read after the session went out of date but before anything asked
    (a group write's callback, a load), the clock handed out live time, and the doubt,
    noticed later, was counted from before it: the clock jumped back."""
    clock, session = Clock(), Session()
    doubt = Doubt(session, clock)
    assert doubt.known()
    clock.ms += 80
    session.current = False
    before = doubt.clock()
    assert not doubt.known()
    clock.ms += 500
    assert doubt.clock() >= before
    session.current = True
    clock.ms += 10
    assert doubt.clock() >= before


async def test_a_doubt_before_the_partition_was_loaded_here_is_not_credited() -> None:
    """From a review: the doubt is the broker's; a transaction taken over after its
    first coordinator failed was credited with doubts from before, when this broker
    refused none of its producer's requests, and was aborted that much late."""
    clock, session = Clock(), Session()
    c, meta = await _ongoing(clock, session)
    meta.timeout_ms = 900_000
    c._unload(0)  # coordinated elsewhere
    clock.ms += 60_000
    assert c._doubt.known()
    session.current = False  # this broker is cut off for 9 minutes
    assert not c._doubt.known()
    clock.ms += 540_000
    session.current = True
    assert c._doubt.known()
    clock.ms += 120_000  # the other coordinator fails: the partition loads here
    c._loaded(0, {"t": meta}, 1)
    clock.ms += 181_000  # 15 min 1 s since it began
    await c.abort_timed_out()
    for task in list(c._tasks):
        await task
    assert c.timed_out == 1 and meta.state != TxnState.ONGOING


async def test_a_doubt_that_begins_during_the_timeout_sweep_stops_it() -> None:
    """From a review: the sweep asked once, then wrote an abort per transaction; a
    doubt that began during one write did not stop the next."""
    clock, session = Clock(), Session()
    c, t = await _ongoing(clock, session)
    u = dataclasses.replace(t, transactional_id="u", producer_id=t.producer_id + 1)
    c.stores[0]["u"] = u
    clock.ms += 5_000  # both past their 1-s timeout, no doubt so far

    async def append(*args: Any, **kw: Any) -> Any:
        if session.current:
            session.current = False  # cut off while the first abort is written
            clock.ms += 150
        return await _written()

    c._replicas = SimpleNamespace(append_records=append)  # type: ignore[assignment]
    await c.abort_timed_out()
    assert c.timed_out == 1 and u.state == TxnState.ONGOING


async def test_a_member_refused_find_coordinator_asks_another_broker() -> None:
    """From a review: the client raised a broker's refusal to name a coordinator and
    asked connected brokers first, so a member connected only to the broker in doubt
    asked it again and again while another broker knew the new coordinator."""
    cluster = Cluster("old:1,new:2", client_id="review")
    cluster.metadata = ClusterMetadata(
        brokers={1: Broker(1, "old", 1), 2: Broker(2, "new", 2)}  # type: ignore[arg-type]
    )
    cluster._connections[("old", 1, "")] = SimpleNamespace(  # type: ignore[assignment]
        connected=True, waiting_since=lambda: None
    )
    asked: list[Any] = []

    async def connection(address: Any, purpose: str) -> Any:
        return address

    async def request(conn: Any, api_key: ApiKey, req: Any, *args: Any, **kw: Any) -> Any:
        asked.append(conn)
        if conn == ("old", 1):
            raise CoordinatorNotAvailableError("broker 1 ... in doubt; retry")
        return FindCoordinatorResponse(node_id=2, host="new", port=2)

    cluster._connection = connection  # type: ignore[method-assign]
    cluster._request = request  # type: ignore[method-assign]
    line = CoordinatorLine(cluster, "g", request_timeout_ms=1_000, retry_backoff_ms=10)
    assert await line._find() == 2
    assert asked == [("old", 1), ("new", 2)]  # the connected one first, then on


def test_each_doubt_logs_its_own_refusals() -> None:
    session = Session()
    doubt = Doubt(session)
    with structlog.testing.capture_logs() as logs:
        for refused in (3, 2):
            session.current = False
            assert not doubt.known()
            for _ in range(refused):
                doubt.refused()
            session.current = True
            assert doubt.known()
    settled = [e["refusals"] for e in logs if e["event"] == "coordinator.doubt_settled"]
    assert settled == [3, 2] and doubt.refusals == 5 and doubt.doubts == 2
