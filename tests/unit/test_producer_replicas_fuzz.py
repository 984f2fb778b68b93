"""The producer against replicated partitions with failover: a state-machine fuzz.

A stronger model than tests/unit/test_producer_fuzz.py, whose partitions have one log and
one ProducerState shared by every replica (replication there is instant). Here the real
Producer and RecordAccumulator (idempotent, up to 5 batches per partition in flight,
KIP-360 epoch bumps) meet three brokers, each a real ``ReplicaManager`` holding, for each
partition, its OWN replica made of the broker's real pieces:

- a real ``broker.log.Log`` (segments, leader-epoch cache, and its real ``ProducerState``:
  the leader's append runs ``check`` then ``update``; a follower's ``append_as_follower``
  runs ``update`` only; a roll writes a producer snapshot; a truncation deletes the
  snapshots past the new end and rebuilds the state from the newest one left plus a
  replay of the batch headers after it: ``Log.truncate_to`` -> ``_reload_producers``);
- a real ``Partition`` (role, leader epoch, ISR, ``joining``, follower log end offsets,
  the high watermark and the acks=all waiters). Produce is the real
  ``ReplicaManager.produce`` (its acks=all timer made a step of its own);
- LeaderAndIsr applied by the real ``ReplicaManager.become_leader_or_follower`` (stale
  epochs refused, roles changed, followers handed to the fetcher for their leader);
- per broker and leader, a real ``ReplicaFetcher`` whose loop is stopped: a "replicate"
  step runs one turn of it (``_truncate``: one OffsetForLeaderEpoch round for the
  partitions not yet truncated, else ``_fetch``: one fetch of every partition it follows
  from that broker, at the leader epoch the follower knows). Its connection (``Peer``)
  hands the request to the real ``ReplicaManager`` of the broker the follower BELIEVES
  leads: ``fetch`` (``_check_epoch`` -> FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH,
  NOT_LEADER_OR_FOLLOWER, ``_record_follower_fetch``: the high watermark may move, a
  follower that caught up starts joining the ISR), ``offsets_for_leader_epoch`` and
  ``list_offsets``;
- ISR changes by the real ``_change_isr`` / ``shrink_isrs`` (replica.lag.time.max.ms on
  the test's clock) and the real ``IsrUpdater``, whose compare-and-set writes go to a fake
  ZooKeeper (``FakeZk``) where they wait until a "zk" step lands them (1 in 20 loses the
  connection before, 1 in 20 after the write: the leader cannot tell);
- the controller: partition state znodes with versions; LeaderAndIsr carries the znode
  version; elections are clean (from the ZooKeeper ISR): a random controlled move or
  leader failure ("fail over"), and, when a broker's session ends ("session lost") or it
  registers again ("rejoin"), the real ``Controller._leader_for`` (new leader from the
  live ISR, dead followers out, offline with leader -1 when no ISR replica is alive; in
  the "unclean" configuration, unclean.leader.election.enable: any live replica).

Each broker reads its LeaderAndIsr at once or later ("notify", in order), so any replica
may act on an old epoch: a deposed leader that has not heard (a zombie) keeps taking
produces, answering the followers that have not heard either, moving its high watermark
and answering acks=all from their fetches, until it hears; its ISR writes fail on the
znode version. A broker whose session ended gets nothing from the controller until it
rejoins, and stops leading when it notices ("fence": the real ``fence_leaders``); its
followers keep fetching meanwhile. The client's metadata lags until it refreshes.
Followers lag, leave the ISR and rejoin; follower replicas are restarted (producer state
loaded from snapshot + replay) and roll segments.

Then a healthy cluster (every broker back, every LeaderAndIsr and ZooKeeper write landed)
answers everything, and the FINAL leader's log must hold every acknowledged record once,
at its offset, in send order; each ISR replica must have every acknowledged record (also
checked before every election); no record may stay unfinished or fail with the
producer's own older epoch; the ISR replicas must agree below the high watermark, and,
once caught up, every replica's log must be the leader's; every replica's producer state
must equal one replayed from its log from scratch. After an unclean election, what it may
lose is exempt: records acknowledged by a leader epoch older than it (the epoch of the
broker that appended them, noted when the answer is delivered), and, for that partition,
the once-only and order checks; what a later epoch acknowledged is held to all of them,
and the replica checks stay whole. Deterministic per seed; each step draws its choices
from its own seed, so a failing seed's script can be replayed with steps left out.

Not modelled: fetches that park at the leader or are in flight across a role change (a
fetch is answered at once, its request and response one step); the controller's own
failover and its cached znode versions (it decides on the znodes as they are, as it does
after re-reading on a conflict); controlled shutdown; UpdateMetadata (the client reads
the znodes when it refreshes); a restart losing an unflushed tail, or restarting a
leader; acks=0/1 producers (the idempotent producer uses acks=all); compaction,
retention and transactions.

Findings:
- F2 (broker): a follower whose log holds only epochs newer than the one its new leader
  answers kept those records (LeaderEpochCache.end_offset_for answered UNDEFINED): ISR
  replicas differed below the high watermark, in 1-2% of seeds. Fixed in 5bec4a8; its
  scripted case is in test_replica_partition.py.
- F1 (client): a batch refused (UNKNOWN_PRODUCER_ID) by a leader whose log is then
  superseded by an ISR replica that holds the batch was re-sequenced under a new epoch and
  written twice. A batch with an attempt of unknown outcome is now never re-sequenced: it
  fails as "may or may not have been written" (``Producer._fail_in_doubt``). The random
  steps had not hit it; the scripted test below holds it.
- F3 (broker, fixed: ``Partition.isr_fenced_epoch``): a leader whose ISR write was
  fenced (a newer leader epoch in the znode) cleared ``joining``, though ZooKeeper's ISR
  may hold a replica it was adding (an earlier write that landed with its answer lost)
  and the controller may have elected it. The deposed leader then acknowledges acks=all
  writes without it, and they are lost when it truncates to the new leader's log. Seed
  211 ("late reads") hit it before the fetch sessions (6a737b6, 1256b90) changed the
  random paths; the scripted test below holds it. Now the fenced leader keeps
  ``joining`` and writes no ISR until a LeaderAndIsr.
- F4 (broker, fixed: ``Log.assign_epoch_start``): a leader recorded its epoch in its
  leader-epoch cache only with its first append. Elected uncleanly with an empty log, it
  answered a follower's OffsetForLeaderEpoch UNDEFINED; the follower kept its log up to
  its high watermark, records the leader never had, then joined the ISR: the replicas
  differed below the high watermark and a record acknowledged after the election was
  missing from an ISR replica. Seed 625 ("unclean", scale 3) hit it; the scripted test
  below holds it. Now ``Partition.become_leader`` records the epoch at the log end, and a
  truncation to the log end drops an epoch begun there (without that, a deposed leader
  that never wrote asked its new leader about its own epoch round after round).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import broker.replica.fetcher as fetcher_module
import broker.replica.manager as manager_module
import client.producer as producer_module
from broker.controller.controller import Controller
from broker.deferred import Deferred
from broker.log import Log, LogConfig
from broker.log.manager import TopicPartition as BrokerTP
from broker.log.producer_state import ProducerState
from broker.metadata import MetadataCache
from broker.replica.fetcher import ReplicaFetcher
from broker.replica.isr import IsrUpdater
from broker.replica.manager import ReplicaManager, _DelayedProduce
from broker.replica.partition import Partition
from broker.zk import GuardedWrite, NoNode, PartitionState, VersionConflict, ZkError, paths
from client import Producer
from client.accumulator import RecordFuture
from client.cluster import ClusterMetadata
from client.types import TopicPartition
from protocol import apis
from protocol.errors import (
    InvalidProducerEpochError,
    NetworkError,
    RequestTimedOutError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)
from protocol.framing import FileRegion
from protocol.records import decode_batches
from tests.unit import test_producer_fuzz as fuzz
from tests.unit.test_producer_fuzz import NODES, OnAnswer

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(autouse=True)
def _clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer's and the brokers' clocks are each run's (Run.start sets them; put
    back after the test); a fetcher's back-off after an error is a step, not a sleep."""
    monkeypatch.setattr(producer_module, "_monotonic_ms", producer_module._monotonic_ms)
    monkeypatch.setattr(manager_module, "_now_ms", manager_module._now_ms)
    monkeypatch.setattr(fetcher_module, "_BACKOFF_S", 0)


@pytest.fixture(autouse=True)
def _quiet_brokers() -> Iterator[None]:
    """The brokers' info lines (truncations, rolls, loads) would fill the captured output;
    the process's structlog set-up is put back after each test."""
    before = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    yield
    structlog.configure(**before)


FOREVER_MS = 10**9  # the broker's acks=all timer: its timeout is a step of its own
LIVE = [apis.LeaderAndIsrLiveLeader(broker_id=n, host_name="h", port=n) for n in NODES]


class Clock(fuzz.Clock):
    def broker(self) -> int:
        return int(self.ms)


class Request:
    def __init__(self, node: int, request: apis.ProduceRequest, on_answer: OnAnswer | None) -> None:
        self.node = node
        self.request = request
        self.on_answer = on_answer
        self.handled = False
        self.response: apis.ProduceResponse | None = None  # set once the answer is ready
        self.deferred: Deferred[apis.ProduceResponse] | None = None  # acks=all: the broker's
        self.delayed: _DelayedProduce | None = None  # acks=all, waiting for the HW
        self.epochs: dict[int, int] = {}  # partition: the broker's leader epoch at append


class Connection:
    def __init__(self, cluster: FakeCluster, node: int) -> None:
        self.cluster, self.node, self.writable = cluster, node, True

    def send_now(
        self, api_key: object, request: apis.ProduceRequest, on_answer: OnAnswer | None
    ) -> None:
        if on_answer is None:  # acks=0: written if it reaches the leader, never answered
            self.cluster.handle(Request(self.node, request, None))
        else:
            self.cluster.connections[self.node].append(Request(self.node, request, on_answer))


LOST_BEFORE, LOST_AFTER = " (connection lost before)", " (lost after)"


class FakeZk:
    """ZooKeeper's partition state znodes. The controller writes them at once; a leader's
    conditional ISR write (the real ``IsrUpdater``, through a :class:`ZkSession`) waits
    until a "zk" step lands it: the compare-and-set is decided then, against what the
    znode holds by that time. A landing may lose the connection before or after the write
    (an error either way: the leader cannot tell whether it was written)."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[bytes, int]] = {}  # path: (data, version)
        self.writes: dict[int, list[_ZkWrite]] = {n: [] for n in NODES}  # per session

    def write(self, path: str, data: bytes) -> int:
        """The controller's write (it re-reads and decides again on a conflict)."""
        version = self.nodes[path][1] + 1 if path in self.nodes else 0
        self.nodes[path] = (data, version)
        return version

    def pending(self) -> bool:
        return any(self.writes.values())

    def land(self, rng: random.Random, outcome: str | None = None) -> str | None:
        """One broker's oldest write in flight lands (a session's requests keep order)."""
        nodes = [n for n, writes in self.writes.items() if writes]
        if not nodes:
            return None
        node = rng.choice(nodes)
        write = self.writes[node].pop(0)
        if outcome is None:
            outcome = rng.choices(["", LOST_BEFORE, LOST_AFTER], [18, 1, 1])[0]
        state = PartitionState.from_json(write.path, write.value)
        what = f"{node}'s {write.path.split('/')[-2]}: isr {state.isr} at v{write.version}"
        if outcome == LOST_BEFORE:
            result: Any = ZkError(f"ZooKeeper unavailable for {write.path}: ConnectionLoss")
        elif write.path not in self.nodes:
            result = NoNode(f"{write.path} does not exist")
        elif 0 <= write.version != self.nodes[write.path][1]:
            result = VersionConflict(f"{write.path} changed since it was read")
            what += f" conflicts (v{self.nodes[write.path][1]})"
        else:
            version = self.nodes[write.path][1] + 1
            self.nodes[write.path] = (write.value, version)
            what += f" written (v{version})"
            result = types.SimpleNamespace(version=version)
            if outcome == LOST_AFTER:
                result = ZkError(f"ZooKeeper unavailable for {write.path}: ConnectionLoss")
        if isinstance(result, BaseException):
            write.landed.set_exception(result)
        else:
            write.landed.set_result(result)
        return what + outcome

    def cancel(self) -> None:
        for writes in self.writes.values():
            for write in writes:
                write.landed.cancel()
            writes.clear()


@dataclasses.dataclass
class _ZkWrite:
    path: str
    value: bytes
    version: int
    landed: asyncio.Future[Any]


class ZkSession:
    """One broker's ZooKeeper client, as ``IsrUpdater`` uses a ``ZkBridge``."""

    def __init__(self, zk: FakeZk, node: int) -> None:
        self.zk, self.node = zk, node

    async def set(self, path: str, value: bytes, *, version: int = -1) -> Any:
        landed = asyncio.get_running_loop().create_future()
        self.zk.writes[self.node].append(_ZkWrite(path, value, version, landed))
        return await landed

    async def write_many(self, writes: list[GuardedWrite]) -> list[Any]:
        """As a real multi's writes end up: each made, refused or lost (each lands on
        its own here, which covers every outcome a multi of them can have)."""
        landed = await asyncio.gather(
            *(self.set(w.path, w.value, version=w.version) for w in writes),
            return_exceptions=True,
        )
        return [r if isinstance(r, BaseException) else r.version for r in landed]

    async def get(self, path: str, watch: object = None) -> tuple[bytes, Any]:
        data, version = self.zk.nodes[path]
        return data, types.SimpleNamespace(version=version)

    async def create(self, path: str, value: bytes = b"", **options: object) -> str:
        return path  # the ISR change notification: the model's controller reads the znodes


class Peer:
    """A follower's connection to broker ``node``: its real ReplicaManager answers (a
    fetch never parks: the fetchers' max wait is 0, a fetch that finds nothing is answered
    empty), and the record bytes it would ``sendfile`` are read as they would arrive."""

    def __init__(self, cluster: FakeCluster, node: int) -> None:
        self.cluster, self.node = cluster, node

    async def request(self, api_key: apis.ApiKey, request: Any, version: int | None = None) -> Any:
        manager = self.cluster.managers[self.node]
        if api_key == apis.ApiKey.OFFSET_FOR_LEADER_EPOCH:
            return manager.offsets_for_leader_epoch(request)
        if api_key == apis.ApiKey.LIST_OFFSETS:
            return manager.list_offsets(request)
        assert api_key == apis.ApiKey.FETCH, api_key
        response = manager.fetch(request)
        assert isinstance(response, apis.FetchResponse), "a fetch with max_wait_ms 0 parked"
        for topic in response.topics:
            for p in topic.partitions:
                region = p.records
                if isinstance(region, FileRegion):
                    p.records = memoryview(os.pread(region.fd, region.size, region.position))
        return response

    def close(self) -> None:
        return None


class Replica:
    """One broker's copy of one partition: a real Log and a real Partition (in that
    broker's real ReplicaManager)."""

    def __init__(
        self, node: int, tp: TopicPartition, directory: Path, config: LogConfig, clock: Clock
    ) -> None:
        self.node, self.tp, self.dir, self.config, self.clock = node, tp, directory, config, clock
        self.log = Log.open(directory, config, clock=clock.broker)
        self.forgot = False  # its producer state was taken (the "forget" step)
        self.partition = Partition(
            topic=tp.topic, index=tp.partition, log=self.log, local_broker_id=node
        )
        self.inbox: list[apis.LeaderAndIsrPartitionState] = []  # LeaderAndIsr not here yet

    def restart(self, clean: bool) -> None:
        """The broker stops and opens this log again (producer state: snapshot + replay)."""
        recovery_point = self.log.recovery_point
        self.log.close()
        self.log = Log.open(
            self.dir,
            self.config,
            recovery_point=recovery_point,
            clean_shutdown=clean,
            clock=self.clock.broker,
        )
        self.partition.log = self.log
        self.partition.high_watermark = min(self.partition.high_watermark, self.log.log_end_offset)


class FakeCluster(fuzz.ClientFacing):
    """Stands in for client.cluster.Cluster, for the three brokers behind it (each a real
    ReplicaManager with real ReplicaFetchers whose connections are :class:`Peer`), for
    ZooKeeper (:class:`FakeZk`) and for the controller."""

    closed = False

    def __init__(
        self,
        tps: list[TopicPartition],
        directory: Path,
        rng: random.Random,
        clock: Clock,
        config: LogConfig,
        *,
        lag_ms: int = 100,
        unclean: bool = False,
    ) -> None:
        partitions = [
            apis.MetadataPartition(partition_index=tp.partition, leader_id=1) for tp in tps
        ]
        response = apis.MetadataResponse(
            brokers=[apis.MetadataBroker(node_id=n, host="h", port=n) for n in NODES],
            topics=[apis.MetadataTopic(name="t", partitions=partitions)],
        )
        real = ClusterMetadata().merged(response, None)
        self.metadata = types.SimpleNamespace(topics=real.topics, topic_errors={})
        self.rng, self.clock, self.tps = rng, clock, tps
        self.on_update: list[Callable[[Any], None]] = []
        self.retry_backoff_ms = 10
        self.connections: dict[int, list[Request]] = {n: [] for n in NODES}
        self.late: list[list[Request]] = []  # per closed connection: not yet read by its broker
        self.producer_ids = 0
        self.zk = FakeZk()
        # the real controller's choice of a leader (Controller._leader_for), on a stand-in
        # holding what it reads: the live brokers and the replica assignment
        self.controller = types.SimpleNamespace(
            brokers=dict.fromkeys(NODES),
            shutting_down=set(),
            _excluded=set(),
            assignments={"t": {tp.partition: rng.sample(NODES, len(NODES)) for tp in tps}},
            reassignments={},  # none moving
            offline_replicas={},  # no disk fails here
            epoch=1,
            _unclean_allowed=_always if unclean else _never,
            _log=structlog.get_logger("fuzz.controller"),
        )
        self.unclean: dict[TopicPartition, int] = {}  # the last unclean election's epoch
        self.dead: set[int] = set()  # brokers whose ZooKeeper session the controller saw end
        self.fenced: set[int] = set()  # of those, the ones that know it (fence_leaders)
        for tp in tps:  # the controller's first state: epoch 0, every replica in sync
            replicas = self.assignment(tp)
            state = PartitionState(
                leader=replicas[0], leader_epoch=0, isr=list(replicas), controller_epoch=1
            )
            self.zk.write(paths.partition_state(tp.topic, tp.partition), state.to_json())
        self.client_leaders = {tp: self.state(tp)[0].leader for tp in tps}  # the producer's: lags
        self.refresh_wanted = False
        self.replicas = {
            tp: {
                n: Replica(n, tp, directory / f"b{n}" / f"t-{tp.partition}", config, clock)
                for n in NODES
            }
            for tp in tps
        }
        self.managers: dict[int, ReplicaManager] = {}
        for n in NODES:
            manager = ReplicaManager(
                n,
                types.SimpleNamespace(high_watermarks={}),  # type: ignore[arg-type]
                MetadataCache(),
                _no_config,
                IsrUpdater(ZkSession(self.zk, n), n),  # type: ignore[arg-type]
                replica_lag_time_max_ms=lag_ms,
            )
            manager.fetch_sessions._clock = clock.broker  # its sweeps, on the test's clock
            for tp in tps:
                partition = self.replicas[tp][n].partition
                manager.partitions[BrokerTP(tp.topic, tp.partition)] = partition
            self.managers[n] = manager
        self.failovers = 0
        self.truncations = 0

    async def start_brokers(self) -> None:
        """(``start`` is the client's Cluster.start.)"""
        for n, manager in self.managers.items():
            for leader in NODES:  # the real fetchers, their loop stopped: steps run it
                if leader != n:
                    fetcher = ReplicaFetcher(n, leader, "h", leader, max_wait_ms=0)
                    fetcher._task.cancel()
                    fetcher._peer = Peer(self, leader)  # type: ignore[assignment]
                    manager.fetchers[leader] = fetcher
        for tp in self.tps:
            self.send_leader_and_isr(tp)
            for n in NODES:
                await self.notify(tp, n)

    # --- the client's view -------------------------------------------------------------------

    def leader_for(self, tp: TopicPartition) -> int | None:
        leader = self.client_leaders.get(tp, -1)
        return leader if leader >= 0 else None  # -1: offline

    def connection_now(self, node: int) -> Connection:
        return Connection(self, node)

    def request_refresh(self) -> None:
        self.refresh_wanted = True

    def refresh(self) -> None:
        self.client_leaders = {tp: self.state(tp)[0].leader for tp in self.tps}
        self.refresh_wanted = False

    # --- the controller ----------------------------------------------------------------------

    def state(self, tp: TopicPartition) -> tuple[PartitionState, int]:
        """The partition state znode: (state, version)."""
        path = paths.partition_state(tp.topic, tp.partition)
        data, version = self.zk.nodes[path]
        return PartitionState.from_json(path, data), version

    def leader(self, tp: TopicPartition) -> int:
        return self.state(tp)[0].leader

    def isr(self, tp: TopicPartition) -> list[int]:
        return self.state(tp)[0].isr

    def assignment(self, tp: TopicPartition) -> list[int]:
        """The partition's replicas, the preferred leader first."""
        replicas: list[int] = self.controller.assignments[tp.topic][tp.partition]
        return replicas

    def send_leader_and_isr(self, tp: TopicPartition, to: Iterable[int] = NODES) -> None:
        """The znode as it is now, to the live replicas (each broker's requests in order)."""
        state, version = self.state(tp)
        for n in to:
            if n in self.dead:
                continue  # no channel to a broker whose session is gone
            self.replicas[tp][n].inbox.append(
                apis.LeaderAndIsrPartitionState(
                    topic_name=tp.topic,
                    partition_index=tp.partition,
                    controller_epoch=state.controller_epoch,
                    leader=state.leader,
                    leader_epoch=state.leader_epoch,
                    isr=list(state.isr),
                    partition_epoch=version,
                    replicas=list(self.assignment(tp)),
                )
            )

    async def notify(self, tp: TopicPartition, node: int) -> bool:
        """``node`` reads its oldest LeaderAndIsr for ``tp`` (the real
        ``ReplicaManager.become_leader_or_follower``: role, fetcher, waiters)."""
        replica = self.replicas[tp][node]
        if not replica.inbox:
            return False
        state = replica.inbox.pop(0)
        (error,) = await self.managers[node].become_leader_or_follower([state], LIVE)
        assert error.error_code == 0, f"LeaderAndIsr {state} refused at {node}: {error}"
        return True

    async def elect(self, tp: TopicPartition, leader: int, isr: list[int]) -> None:
        """The controller writes the new state (leader epoch + 1) and sends LeaderAndIsr;
        each broker reads it at once or later (``notify``)."""
        state, _ = self.state(tp)
        new = PartitionState(
            leader=leader,
            leader_epoch=state.leader_epoch + 1,
            isr=list(isr),
            controller_epoch=state.controller_epoch,
        )
        self.write(tp, new)

    def write(self, tp: TopicPartition, state: PartitionState) -> None:
        self.zk.write(paths.partition_state(tp.topic, tp.partition), state.to_json())
        self.send_leader_and_isr(tp)

    async def tell(self, tp: TopicPartition) -> None:
        """Each live broker reads the LeaderAndIsr for ``tp`` now, or later (``notify``)."""
        told = self.rng.choice([0.2, 0.6, 0.9])
        for n in NODES:
            if self.rng.random() < told:
                while await self.notify(tp, n):
                    pass

    async def reelect(self, changed: list[TopicPartition]) -> None:
        """The real controller's ``_leader_for`` on every partition (after a broker died or
        came back): a new leader from the live ISR where the leader is gone (none: offline,
        leader -1), dead followers out of the ISR; each change a new leader epoch."""
        self.controller.brokers = {n: None for n in NODES if n not in self.dead}
        for tp in self.tps:
            current, _ = self.state(tp)
            wanted = await Controller._leader_for(
                self.controller,  # type: ignore[arg-type]
                (tp.topic, tp.partition),
                current,
            )
            if wanted is not None:
                if wanted.leader >= 0 and wanted.leader not in current.isr:
                    self.unclean[tp] = wanted.leader_epoch  # records before may be lost
                self.write(tp, wanted)
                changed.append(tp)

    async def session_lost(self, node: int) -> str | None:
        """``node``'s ZooKeeper session ends: the controller takes it for dead (its
        channel, and the LeaderAndIsr still queued there, are dropped) and moves its
        leaderships; ``node`` itself learns it later (``fence``): a zombie till then."""
        if node in self.dead:
            return None
        self.dead.add(node)
        for replica in (self.replicas[tp][node] for tp in self.tps):
            replica.inbox.clear()
        changed: list[TopicPartition] = []
        await self.reelect(changed)
        self.failovers += len(changed)
        for tp in changed:
            await self.tell(tp)
        return " ".join(f"{tp.partition}:{self.state(tp)[0]}" for tp in changed)

    def fence(self, node: int) -> bool:
        """``node`` hears its session expired: it stops leading (the real
        ``ReplicaManager.fence_leaders``)."""
        if node not in self.dead or node in self.fenced:
            return False
        self.managers[node].fence_leaders("this broker's ZooKeeper session expired")
        self.fenced.add(node)
        return True

    async def rejoin(self, node: int) -> str | None:
        """``node`` registers again with a new session: the controller elects where it
        can now (the controller's ``_brokers_changed``) and sends it the state of every
        partition it hosts."""
        if node not in self.dead:
            return None
        self.fence(node)  # (it learns of the expiry before it can register again)
        self.dead.discard(node)
        self.fenced.discard(node)
        changed: list[TopicPartition] = []
        await self.reelect(changed)
        for tp in self.tps:
            if tp not in changed:
                self.send_leader_and_isr(tp, to=[node])
        for tp in self.tps:
            await self.tell(tp)
        return " ".join(f"{tp.partition}:{self.state(tp)[0]}" for tp in self.tps)

    async def fail_over(self, tp: TopicPartition) -> str | None:
        """A clean election from the ZooKeeper ISR (the controller's ``_leader_for`` and
        ``_make_preferred_leader``): the leader fails (it leaves the ISR) or is moved (it
        stays), or a follower fails (it leaves the ISR; the leader stays, its epoch bumped)."""
        state, _ = self.state(tp)
        old = state.leader
        others = [n for n in state.isr if n not in {old, *self.dead}]
        if old < 0 or not others:
            return None
        if self.rng.random() < 0.15:
            dead = self.rng.choice(others)
            await self.elect(tp, old, [n for n in state.isr if n != dead])
            what = f"follower {dead} failed"
        else:
            new = self.rng.choice(others)
            failed = self.rng.random() < 0.5
            await self.elect(tp, new, [n for n in state.isr if n != old or not failed])
            what = f"{old} -> {new}{' (failed)' if failed else ''}"
        self.failovers += 1
        await self.tell(tp)
        return what

    def inbox(self, tp: TopicPartition, node: int) -> list[apis.LeaderAndIsrPartitionState]:
        return self.replicas[tp][node].inbox

    def leader_replica(self, tp: TopicPartition) -> Replica:
        return self.replicas[tp][self.leader(tp)]

    # --- the brokers -------------------------------------------------------------------------

    def handle(self, request: Request) -> None:
        """The broker's real ReplicaManager.produce (its acks=all timer made a step)."""
        request.handled = True
        manager = self.managers[request.node]
        for topic in request.request.topics:
            for p in topic.partitions:
                tp = TopicPartition(topic.name, p.index)
                request.epochs[p.index] = self.replicas[tp][request.node].partition.leader_epoch
        answer = manager.produce(dataclasses.replace(request.request, timeout_ms=FOREVER_MS))
        if not isinstance(answer, Deferred):
            request.response = answer
            return
        request.deferred = answer
        request.delayed = next((d for d in manager.delayed_produces if d.deferred is answer), None)

        def ready(done: Deferred[apis.ProduceResponse], request: Request = request) -> None:
            request.response = done.result()

        answer.add_listener(ready)

    @staticmethod
    def forget(request: Request) -> None:
        """The connection closed: the broker forgets a produce still waiting (Deferred.cancel)."""
        if request.deferred is not None:
            request.deferred.cancel()

    def fetcher_of(self, tp: TopicPartition, node: int) -> ReplicaFetcher | None:
        """The fetcher of ``node`` that follows ``tp`` (none while it leads, or believes
        it does)."""
        for fetcher in self.managers[node].fetchers.values():
            if tp in fetcher.partitions:
                return fetcher
        return None

    async def replicate(self, tp: TopicPartition, node: int, max_bytes: int) -> str | None:
        """One round of the loop of ``node``'s fetcher that follows ``tp`` (from the
        leader ``node`` believes in, at the epoch it knows): truncation by leader epoch
        first (one OffsetForLeaderEpoch round), else one fetch, for every partition it
        follows from that broker. The leader's side is its real ReplicaManager: it fences
        another epoch, records the follower's log end offset (the high watermark may move,
        the follower may start joining the ISR: a ZooKeeper write) and reads."""
        fetcher = self.fetcher_of(tp, node)
        if fetcher is None:
            return None
        fetcher._max_bytes = max_bytes
        followed = list(fetcher._followed.values())
        before = [f.partition.log.log_end_offset for f in followed]
        pending = [f for f in followed if not f.truncated]
        if pending:
            await fetcher._truncate(pending)
        else:
            await fetcher._fetch()
        for f, end in zip(followed, before, strict=True):
            replica = self.replicas[TopicPartition(f.partition.topic, f.partition.index)][node]
            if f.partition.log.log_end_offset < end:
                self.truncations += 1
                check_producer_state(replica, f"after truncation at {node}")
        return f"{'truncate' if pending else 'fetch'} from {fetcher.leader_id}"

    def settled(self) -> bool:
        """Every broker alive, no LeaderAndIsr or ZooKeeper write still on its way."""
        if self.zk.pending() or self.dead:
            return False
        return not any(r.inbox for rs in self.replicas.values() for r in rs.values())

    async def shutdown(self) -> None:
        self.zk.cancel()
        for manager in self.managers.values():
            for delayed in list(manager.delayed_produces):
                delayed.deferred.cancel()
            await manager.shutdown()
        for replicas in self.replicas.values():
            for replica in replicas.values():
                replica.log.close()


async def _no_config(topic: str) -> LogConfig:
    raise AssertionError("every log is opened by the test")


async def _never(topic: str) -> bool:
    return False  # unclean.leader.election.enable


async def _always(topic: str) -> bool:
    return True


def log_entries(log: Log) -> list[tuple[int, bytes, int]]:
    """(offset, value, leader epoch) of every record in the log."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        assert data is not None
        for batch in decode_batches(data.read()):
            for i, record in enumerate(batch):
                out.append(
                    (
                        batch.base_offset + i,
                        bytes(record.value or b""),
                        batch.header.partition_leader_epoch,
                    )
                )
            offset = batch.last_offset + 1
    return out


def check_committed(cluster: FakeCluster, tp: TopicPartition, when: str) -> str | None:
    """Every replica in the ZooKeeper ISR holds the elected leader's records below that
    leader's high watermark (once it knows it leads); else what differs."""
    state, _ = cluster.state(tp)
    if state.leader < 0:
        return None  # offline
    leader = cluster.replicas[tp][state.leader]
    if not leader.partition.is_leader or leader.partition.leader_epoch != state.leader_epoch:
        return None  # its LeaderAndIsr is still on the way
    hw = leader.partition.high_watermark
    committed = [e for e in log_entries(leader.log) if e[0] < hw]
    for n in state.isr:
        theirs = [e for e in log_entries(cluster.replicas[tp][n].log) if e[0] < hw]
        if theirs != committed:
            return (
                f"{tp} {when}: ISR replica {n} and leader {state.leader} differ below "
                f"the high watermark {hw}:\n    {n}: {show(theirs)}\n    "
                f"{state.leader}: {show(committed)}"
            )
    return None


def show(entries: list[tuple[int, bytes, int]]) -> list[tuple[int, str, int]]:
    """(offset, the record's partition:number, leader epoch)"""
    return [(o, v[:8].decode(), e) for o, v, e in entries]


def producers_of(state: ProducerState) -> dict[int, tuple[int, list[tuple[int, ...]]]]:
    return {
        pid: (epoch, [tuple(b) for b in batches])
        for pid, (epoch, _, batches, _, _) in state.producers.items()
    }


def check_producer_state(replica: Replica, when: str) -> None:
    """The replica's producer state equals one replayed from its whole log from scratch."""
    if replica.forgot:
        return
    fresh = ProducerState(replica.dir / "nonexistent", "fresh")
    fresh.replay(
        replica.log._producer_batches(replica.log.log_start_offset), replica.log.log_end_offset
    )
    assert producers_of(replica.log.producers) == producers_of(fresh), (
        f"{replica.tp} replica {replica.node} producer state {when}: "
        f"{producers_of(replica.log.producers)} != replayed {producers_of(fresh)}"
    )


class Run:
    """One seed: a producer, three brokers, and the random steps between them."""

    def __init__(
        self,
        seed: int,
        tmp_path: Path,
        *,
        late: float,
        forget: float,
        failover: float,
        max_in_flight: int,
        min_insync: int,
        in_order: float = 0.8,
        expire: float = 0.05,
        replicate: float = 8,
        unclean: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.tps = [TopicPartition("t", p) for p in range(2)]
        self.clock = Clock()
        config = LogConfig(
            segment_bytes=self.rng.choice([300, 500, 900, 1 << 20]),  # rolls: snapshots
            segment_index_bytes=4096,
            max_message_bytes=260,  # a bigger batch is MESSAGE_TOO_LARGE (split)
            min_insync_replicas=min_insync,
            # the brokers run on the test's clock, the records carry the wall clock's time
            message_timestamp_after_max_ms=2**63 - 1,
        )
        lag_ms = self.rng.choice([10, 50, 500])  # replica.lag.time.max.ms
        self.cluster = FakeCluster(
            self.tps, tmp_path, self.rng, self.clock, config, lag_ms=lag_ms, unclean=unclean
        )
        self.acked_epoch: dict[bytes, int] = {}  # record: its leader's epoch at the append
        self.late, self.forget, self.failover = late, forget, failover
        self.max_in_flight, self.in_order, self.expire = max_in_flight, in_order, expire
        self.replicate = replicate
        self.sent: list[tuple[TopicPartition, bytes, RecordFuture]] = []
        self.counts = dict.fromkeys(self.tps, 0)
        self.stopping: asyncio.Future[None] | None = None
        self.trace: list[str] = []
        self.script: list[tuple[str, int]] = []  # (action, its own seed): replayable
        self.replica_problems: list[str] = []  # replicas that diverged (as finding F2 did)
        slow = self.rng.choice(NODES)
        self.answer_odds = [0.05 if n == slow else 1.0 for n in NODES]

    async def start(self) -> None:
        producer_module._monotonic_ms = self.clock  # restored by the fixture's monkeypatch
        manager_module._now_ms = self.clock.broker  # (the brokers' clock: ISR lag)
        await self.cluster.start_brokers()
        self.producer = Producer(
            bootstrap_servers="unused:1",
            retry_backoff_ms=10,
            batch_size=300,
            linger_ms=self.rng.choice([0, 0, 5]),
            delivery_timeout_ms=5_000,
            request_timeout_ms=1_000,
            max_in_flight_requests_per_connection=self.max_in_flight,
        )
        self.producer._cluster = self.cluster  # type: ignore[assignment]
        self.acc = self.producer._accumulator
        self.acc._clock = self.clock
        self.producer._wake = lambda: None  # type: ignore[method-assign]
        self.acc._wakeup = lambda: None
        await self.producer.start()

    def _note(self, text: str) -> None:
        self.trace.append(f"{len(self.script) - 1}: {text}")

    async def step(self, action: str, step_seed: int | None = None) -> None:
        """One step; its choices come from its own seed, so a script of steps can be
        replayed with some left out (to minimise a failure)."""
        if step_seed is None:
            step_seed = self.rng.getrandbits(48)
        self.script.append((action, step_seed))
        main_rng = self.rng
        self.rng = self.cluster.rng = random.Random(step_seed)
        try:
            await self._step(action)
        finally:
            self.rng = self.cluster.rng = main_rng

    async def replay(self, script: list[tuple[str, int]]) -> None:
        for action, step_seed in script:
            await self.step(action, step_seed)

    async def _step(self, action: str) -> None:  # noqa: C901, PLR0912
        rng, cluster = self.rng, self.cluster
        node = rng.choice(NODES)
        tp = rng.choice(self.tps)
        unread = [r for r in cluster.connections[node] if not r.handled]
        if action == "send" and self.stopping is None:
            value = b"%d:%06d:" % (tp.partition, self.counts[tp]) + b"x" * rng.choice([5, 60])
            self.counts[tp] += 1
            future = await self.producer.send("t", value, partition=tp.partition)
            self.sent.append((tp, value, future))
            self._note(f"send {value[:8]!r}")
        elif action == "pass":
            self.producer._send_ready()
            self._note("pass")
        elif action == "handle" and unread:
            request = unread[0] if rng.random() < self.in_order else rng.choice(unread)
            cluster.handle(request)
            self._note(f"handle@{node} {describe(request)}")
        elif action == "answer":
            n = rng.choices(NODES, self.answer_odds)[0]
            requests = cluster.connections[n]
            if requests and requests[0].response is not None:  # in order on a connection
                request = requests.pop(0)
                response = request.response
                assert response is not None
                self._note(f"answer@{n} {describe(request)} -> {answer_text(response)}")
                self.note_acked(request, response)
                assert request.on_answer is not None
                request.on_answer(request.response, None)
        elif action == "drop" and cluster.connections[node]:
            requests, cluster.connections[node] = cluster.connections[node], []
            self._note(f"drop@{node} {[describe(r) for r in requests]}")
            for request in requests:
                cluster.forget(request)
                assert request.on_answer is not None
                request.on_answer(None, NetworkError("connection lost"))
        elif action == "give up" and unread:
            # request.timeout.ms: the client closes the connection; what the broker has not
            # read yet it may still read (and write) later
            requests, cluster.connections[node] = cluster.connections[node], []
            cluster.late.append([r for r in requests if not r.handled])
            self._note(f"give up@{node} {[describe(r) for r in requests]}")
            for request in requests:
                cluster.forget(request)
                assert request.on_answer is not None
                request.on_answer(None, RequestTimedOutError("no answer in time"))
        elif action == "read late" and cluster.late:
            group = rng.choice(cluster.late)
            request = group.pop(0)
            if not group:
                cluster.late.remove(group)
            cluster.handle(request)
            cluster.forget(request)  # nobody reads its answer
            self._note(f"read late@{request.node} {describe(request)}")
        elif action == "broker timeout":
            waiting = [
                r for r in cluster.connections[node] if r.delayed is not None and r.response is None
            ]
            if waiting:
                request = rng.choice(waiting)
                delayed = request.delayed
                assert delayed is not None
                if delayed._timer is not None:
                    delayed._timer.cancel()
                delayed._expire(self.producer.request_timeout_ms)
                self._note(f"broker timeout@{node} {describe(request)}")
        elif action == "fail over":
            self.diverged(check_committed(cluster, tp, "before a fail over"))
            self.check_acknowledged_in_isr("before a fail over")
            what = await cluster.fail_over(tp)
            if what is not None:
                state, version = cluster.state(tp)
                told = [n for n in NODES if n not in cluster.dead and not cluster.inbox(tp, n)]
                self._note(
                    f"fail over {tp.partition}: {what}, epoch {state.leader_epoch} "
                    f"isr {state.isr} (v{version}); told now: {told}"
                )
        elif action == "session lost":
            self.check_acknowledged_in_isr("before a session loss")
            what = await cluster.session_lost(node)
            if what is not None:
                self._note(f"session lost {node}: {what}")
        elif action == "fence":
            if cluster.fence(node):
                self._note(f"fence {node}")
        elif action == "rejoin":
            what = await cluster.rejoin(node)
            if what is not None:
                self._note(f"rejoin {node}: {what}")
        elif action == "notify":
            if await cluster.notify(tp, node):
                p = cluster.replicas[tp][node].partition
                self._note(
                    f"notify {tp.partition}@{node}: leader {p.leader_id} epoch {p.leader_epoch}"
                )
        elif action == "replicate":
            before = cluster.replicas[tp][node].log.log_end_offset
            done = await cluster.replicate(tp, node, rng.choice([1, 300, 1 << 20]))
            if done is not None:
                p = cluster.replicas[tp][node].partition
                leader = cluster.replicas[tp].get(p.leader_id)
                self._note(
                    f"replicate {tp.partition}@{node} ({done} at epoch {p.leader_epoch}) "
                    f"{before}->{p.log.log_end_offset} hw {p.high_watermark}; leader's hw "
                    f"{leader.partition.high_watermark if leader else None}"
                )
        elif action == "shrink":  # the real periodic ISR check (replica.lag.time.max.ms)
            cluster.managers[node].shrink_isrs()
            self._note(
                f"shrink check@{node}: "
                + " ".join(
                    f"{tp.partition}:isr{p.isr}+{sorted(p.joining)}"
                    for tp in self.tps
                    if (p := cluster.replicas[tp][node].partition).is_leader
                )
            )
        elif action == "zk":
            landed = cluster.zk.land(rng)
            if landed is not None:
                self._note(f"zk: {landed}")
        elif action == "metadata":
            if cluster.refresh_wanted or rng.random() < 0.3:
                cluster.refresh()
                self._note(f"metadata {cluster.client_leaders}")
        elif action == "restart":
            replica = cluster.replicas[tp][node]
            if node != cluster.leader(tp) and not replica.partition.is_leader:
                replica.restart(clean=rng.random() < 0.5)
                check_producer_state(replica, "after restart")
                fetcher = cluster.fetcher_of(tp, node)
                if fetcher is not None:  # followed again: it truncates first
                    fetcher.add(replica.partition)
                self._note(f"restart {tp.partition}@{node}")
        elif action == "roll":
            cluster.replicas[tp][node].log.roll()
        elif action == "tick":
            self.clock.ms += rng.choice([1, 5, 11, 50])
        elif action == "expire":
            self.clock.ms += 5_000 * rng.choice([0.3, 0.6, 1.1])
            self._note("expire")
        elif action == "forget":  # retention took the producer's state: UNKNOWN_PRODUCER_ID
            replica = cluster.replicas[tp][node]
            replica.log.producers.producers.clear()
            replica.forgot = True
            self._note(f"forget {tp.partition}@{node}")
        elif action == "topic gone":
            cluster.metadata.topic_errors["t"] = UnknownTopicOrPartitionError("gone a while")
            self.producer._send_ready()
            cluster.metadata.topic_errors.clear()
        elif action == "stop" and self.stopping is None:
            self.stopping = asyncio.ensure_future(self.producer.stop())
            self._note("stop")
        for _ in range(5):  # the producer's own tasks (a reset) take their turn
            await asyncio.sleep(0)
        fuzz.check_bookkeeping(self.acc, idempotent=True)

    async def play(self, steps: int) -> None:
        weights = {
            "send": 6,
            "pass": 6,
            "handle": 6,
            "answer": 6,
            "replicate": self.replicate,
            "drop": 0.4,
            "fail over": self.failover,
            "session lost": 0.3 * self.failover,
            "fence": 1,
            "rejoin": 0.5,
            "notify": 1.5,
            "zk": 2,
            "shrink": 0.3,
            "metadata": 1.5,
            "broker timeout": 0.3,
            "restart": 0.1,
            "roll": 0.5,
            "tick": 3,
            "expire": self.expire,
            "forget": self.forget,
            "give up": self.late,
            "read late": 2 * self.late,
            "topic gone": 0.05,
            "stop": 0.01,
        }
        actions, odds = list(weights), list(weights.values())
        for _ in range(steps):
            await self.step(self.rng.choices(actions, odds)[0])
        healthy = [
            *["pass", "handle", "answer", "tick", "replicate", "metadata", "notify", "zk"],
            "rejoin",
        ]
        for _ in range(20_000):  # then a healthy cluster answers everything
            if (
                all(f.done() for *_, f in self.sent)
                and not any(self.cluster.connections.values())
                and self.cluster.settled()
            ):
                return
            await self.step(self.rng.choices(healthy, [3, 4, 4, 2, 6, 1, 1, 1, 0.2])[0])
        unfinished = [v for _, v, f in self.sent if not f.done()]
        raise AssertionError(f"{len(unfinished)} records never finished: {unfinished[:3]}")

    async def check(self) -> None:
        self.check_acknowledged()
        await self.check_replicas()

    def note_acked(self, request: Request, response: apis.ProduceResponse) -> None:
        """Which leader epoch acknowledged each record (an unclean election may lose what
        an earlier epoch acknowledged)."""
        ok = {p.index for t in response.topics for p in t.partitions if not p.error_code}
        for topic in request.request.topics:
            for p in topic.partitions:
                if p.index in ok:
                    for batch in decode_batches(_raw(p.records), verify_crc=False):
                        for record in batch:
                            self.acked_epoch[bytes(record.value or b"")] = request.epochs[p.index]

    def may_be_lost(self, tp: TopicPartition, value: bytes) -> bool:
        """Acknowledged before the partition's last unclean election (by an older epoch)."""
        unclean = self.cluster.unclean.get(tp)
        return unclean is not None and self.acked_epoch.get(value, -1) < unclean

    def check_acknowledged(self) -> None:
        """The producer's promises, against the final leader's log and the ISR's (after an
        unclean election: only for what a later leader epoch acknowledged; idempotence,
        order and once-only are void there)."""
        cluster = self.cluster
        logs = {}
        for tp in self.tps:
            leader = cluster.leader_replica(tp)
            entries = log_entries(leader.log)
            logs[tp] = {offset: value for offset, value, _ in entries}
            order = [int(v.split(b":")[1]) for _, v, _ in entries]
            if tp in cluster.unclean:
                continue
            if not self.forget:
                assert len(set(order)) == len(order), f"{tp}: written twice: {order}"
            firsts = list(dict.fromkeys(order))
            assert firsts == sorted(firsts), f"{tp}: not in send order: {order}"
        isr_logs = {
            (tp, n): {o: v for o, v, _ in log_entries(cluster.replicas[tp][n].log)}
            for tp in self.tps
            for n in cluster.isr(tp)
        }
        last: dict[TopicPartition, int] = {}
        for tp, value, future in self.sent:
            error = future.exception()
            assert not isinstance(error, InvalidProducerEpochError), f"{value!r}: {error}"
            if error is not None or self.may_be_lost(tp, value):
                continue
            offset = future.result().offset
            assert logs[tp].get(offset) == value, (
                f"{value!r} acknowledged at {offset}, the final leader "
                f"{cluster.leader(tp)} has {logs[tp].get(offset)!r} there"
            )
            for n in cluster.isr(tp):
                assert isr_logs[(tp, n)].get(offset) == value, (
                    f"{value!r} acknowledged at {offset}: ISR replica {n} has "
                    f"{isr_logs[(tp, n)].get(offset)!r}"
                )
            if not self.forget and tp not in cluster.unclean:
                assert offset > last.get(tp, -1), f"{tp}: acknowledged out of order"
            last[tp] = offset
        if self.stopping is not None:
            assert self.stopping.done(), "stop() never finished"

    def check_acknowledged_in_isr(self, when: str) -> None:
        """Every acknowledged record is, at its offset, in every replica of the ISR the
        controller would elect from."""
        cluster = self.cluster
        for tp in self.tps:
            acked = [
                (value, future.result().offset)
                for t, value, future in self.sent
                if t == tp
                and future.done()
                and future.exception() is None
                and not self.may_be_lost(tp, value)
            ]
            if not acked:
                continue
            for n in cluster.isr(tp):
                held = {o: v for o, v, _ in log_entries(cluster.replicas[tp][n].log)}
                for value, offset in acked:
                    assert held.get(offset) == value, (
                        f"{when}: {value!r} acknowledged at {offset}, but ISR replica {n} has "
                        f"{held.get(offset)!r} there (ISR {cluster.isr(tp)})"
                    )

    def diverged(self, problem: str | None) -> None:
        if problem is not None:
            self.replica_problems.append(
                f"{problem}\n  steps so far:\n  " + "\n  ".join(self.trace)
            )

    async def check_replicas(self) -> None:
        """Replication: the ISR agrees below the high watermark; once every replica has
        caught up, all logs are the leader's; each producer state is its log's. A replica
        that diverged is noted (the test fails on it), not raised: the producer's checks
        come first."""
        cluster = self.cluster
        for tp in self.tps:
            self.diverged(check_committed(cluster, tp, "at the end"))
        for tp in self.tps:
            leader = cluster.leader_replica(tp)
            for _ in range(50):
                for n in NODES:
                    await cluster.replicate(tp, n, 1 << 20)
            for n, replica in cluster.replicas[tp].items():
                if log_entries(replica.log) != log_entries(leader.log):
                    self.diverged(
                        f"{tp}: replica {n}, caught up, differs from leader "
                        f"{cluster.leader(tp)}:\n    {n}: {show(log_entries(replica.log))}\n"
                        f"    {cluster.leader(tp)}: {show(log_entries(leader.log))}"
                    )
                check_producer_state(replica, "at the end")


def _raw(records: object) -> bytes:
    """A produce partition's record bytes (the client sends bytes, never a file range)."""
    assert records is None or isinstance(records, bytes | bytearray | memoryview)
    return bytes(records or b"")


def describe(request: Request) -> str:
    parts = []
    for topic in request.request.topics:
        for p in topic.partitions:
            (batch,) = decode_batches(_raw(p.records), verify_crc=False)
            values = [bytes(r.value or b"")[:8].decode() for r in batch]
            parts.append(
                f"[e{batch.producer_epoch} s{batch.base_sequence} {values[0]}..{values[-1]}]"
            )
    return " ".join(parts)


def answer_text(response: apis.ProduceResponse) -> str:
    return " ".join(
        f"{p.index}:{p.base_offset if not p.error_code else 'err' + str(p.error_code)}"
        for t in response.topics
        for p in t.partitions
    )


async def run_seed(seed: int, directory: Path, *, steps: int = 300, **config: Any) -> Run:
    directory.mkdir(parents=True)  # noqa: ASYNC240 - a test's temporary directory
    run = Run(seed, directory, **config)
    try:
        await run.start()
        await run.play(steps=steps)
        await run.check()
        if run.stopping is None:
            await run.producer.stop()
    except AssertionError as exc:
        tail = "\n  ".join(run.trace[-60:])
        raise AssertionError(f"seed {seed}: {exc}\n  last steps:\n  {tail}") from exc
    finally:
        await run.cluster.shutdown()
    return run


CONFIGS: dict[str, dict[str, Any]] = {
    "default": dict(late=0.0, forget=0.0, failover=0.4, max_in_flight=5, min_insync=1),
    "failovers": dict(late=0.0, forget=0.0, failover=2.0, max_in_flight=5, min_insync=1),
    "late reads": dict(late=0.3, forget=0.0, failover=0.8, max_in_flight=5, min_insync=1),
    "mif 2": dict(late=0.2, forget=0.0, failover=0.8, max_in_flight=2, min_insync=1),
    "min isr 2": dict(late=0.1, forget=0.0, failover=0.8, max_in_flight=5, min_insync=2),
    "forget": dict(late=0.1, forget=0.05, failover=0.8, max_in_flight=5, min_insync=1),
    # leaders change often, delivery timeouts pass, followers fetch less: stale ISR members
    "flapping": dict(
        late=0.1, forget=0.0, failover=3.0, max_in_flight=5, min_insync=1, expire=0.5, replicate=3
    ),
    # no live ISR replica: the controller elects any live one (what it had is lost)
    "unclean": dict(
        late=0.1, forget=0.0, failover=2.0, max_in_flight=5, min_insync=1, unclean=True
    ),
}
SCALE = int(os.environ.get("HEADWATER_FUZZ_SCALE", "1"))
"""Seeds per configuration, in thirds of the review's runs (600 seeds, about 90 s here):
``make test`` runs the first third of each; ``HEADWATER_FUZZ_SCALE=3`` all of them.
Past 3 the ranges overlap the next configuration's seeds (different steps, same start)."""
SEEDS = {
    name: range(start, start + count * SCALE // 3)
    for name, start, count in [
        ("default", 0, 100),
        ("failovers", 100, 100),
        ("late reads", 200, 100),
        ("mif 2", 300, 60),
        ("min isr 2", 360, 60),
        ("forget", 420, 60),
        ("flapping", 480, 120),
        ("unclean", 600, 60),
    ]
}


@pytest.mark.parametrize("name", list(SEEDS))
async def test_the_producer_with_replicas_and_failover_keeps_acknowledged_records(
    name: str, tmp_path: Path
) -> None:
    failovers = truncations = unclean = 0
    for seed in SEEDS[name]:
        run = await run_seed(seed, tmp_path / str(seed), **CONFIGS[name])
        if run.replica_problems:
            raise AssertionError(f"seed {seed}: {run.replica_problems[0]}")
        failovers += run.cluster.failovers
        truncations += run.cluster.truncations
        unclean += len(run.cluster.unclean)
    assert failovers > len(SEEDS[name]) // 2 and truncations > 0, (failovers, truncations)
    assert unclean > 0 or not CONFIGS[name].get("unclean"), "no unclean election happened"


# --- the findings, each on its own -----------------------------------------------------------


def _values(log: Log) -> list[bytes]:
    return [value for _, value, _ in log_entries(log)]


async def test_f1_a_batch_refused_by_a_leader_whose_log_is_then_superseded_is_not_written_twice(  # noqa: C901 - one scripted story
    tmp_path: Path,
) -> None:
    """Leader A takes V (at t=0), W and X (t=3000), one batch each, pipelined; no follower
    has fetched them when leadership moves to B by a preferred election (the ISR, A in
    it, is kept), and A answers the three NOT_LEADER_OR_FOLLOWER. V's delivery timeout has
    passed by then: V fails, its sequence is a hole, the producer bumps its epoch. W (epoch
    0, sequence 1) is retried to B, whose log is empty: UNKNOWN_PRODUCER_ID, with no batch
    before W unsettled. B fails before A fetched from it; A, still in the ISR and never
    truncated, leads again with V, W, X in its log.

    The producer used to take W (and X) as not written, stamp them anew under a new epoch
    and send them to B: A then took them as new batches, and its log read V W X W X, W and
    X acknowledged at their second copies. A refusal proves the batch is not in the log
    that refused it, not that no other replica has it. W and X had an attempt of unknown
    outcome (NOT_LEADER_OR_FOLLOWER), so now they fail instead, as "may or may not have
    been written", and each is in the log once."""
    run = Run(0, tmp_path, late=0, forget=0, failover=0, max_in_flight=5, min_insync=1)
    cluster, tp = run.cluster, TopicPartition("t", 0)
    a = cluster.leader(tp)
    b = next(n for n in NODES if n != a)
    await run.start()
    run.acc.linger_ms = 0
    producer = run.producer

    async def send(value: bytes) -> None:
        future = await producer.send("t", value, partition=0)
        run.sent.append((tp, value, future))
        producer._send_ready()
        for _ in range(10):
            await asyncio.sleep(0)

    async def sender_pass() -> None:
        producer._send_ready()
        for _ in range(10):
            await asyncio.sleep(0)

    def handle_and_answer(node: int) -> None:
        for request in [r for r in cluster.connections[node] if not r.handled]:
            cluster.handle(request)
        while cluster.connections[node] and cluster.connections[node][0].response is not None:
            request = cluster.connections[node].pop(0)
            assert request.on_answer is not None
            request.on_answer(request.response, None)

    async def elect(leader: int, dead: int | None = None) -> None:
        """A preferred election keeps the ISR; a dead leader leaves it (the controller's
        _make_preferred_leader and _leader_for). Every broker hears at once."""
        await cluster.elect(tp, leader, [n for n in cluster.isr(tp) if n != dead])
        for n in NODES:
            while await cluster.notify(tp, n):
                pass
        cluster.refresh()

    try:
        await send(b"0:000000:V")
        run.clock.ms += 3_000
        await send(b"0:000001:W")
        await send(b"0:000002:X")
        for request in cluster.connections[a]:
            cluster.handle(request)  # A writes V, W, X; nobody fetches them
        assert _values(cluster.replicas[tp][a].log) == [v for _, v, _ in run.sent]
        await elect(b)
        run.clock.ms += 2_500  # past V's delivery timeout, not W's or X's
        handle_and_answer(a)  # NOT_LEADER_OR_FOLLOWER: V fails, W and X are retried
        for _ in range(4):
            run.clock.ms += 20
            await sender_pass()
            handle_and_answer(b)  # UNKNOWN_PRODUCER_ID for W, then X: in doubt, they fail
        assert _values(cluster.replicas[tp][b].log) == []  # not sent again under new stamps
        for _, value, future in run.sent[1:]:
            error = future.exception()
            assert isinstance(error, UnknownProducerIdError), (value, error)
            assert "may or may not have been written" in str(error)
        await elect(a, dead=b)  # B fails before A fetched from it; A, in the ISR, is elected
        handle_and_answer(b)
        for _ in range(40):
            run.clock.ms += 20
            await sender_pass()
            handle_and_answer(a)
            for n in NODES:
                await cluster.replicate(tp, n, 1 << 20)
        assert all(f.done() for *_, f in run.sent)
        run.check_acknowledged()
        assert _values(cluster.replicas[tp][a].log) == [v for _, v, _ in run.sent]  # once
    finally:
        await cluster.shutdown()
        await producer._close()  # (stop() would wait for what never finishes if it failed early)


def _script_steps(
    run: Run, tp: TopicPartition
) -> tuple[Callable[[], Awaitable[None]], Callable[..., Awaitable[None]], Callable[[int], None]]:
    """The steps the scripted stories below are told in: the producer's sender pass and
    its callbacks (settle), LeaderAndIsr delivered to brokers (tell), and a broker's
    produce requests handled and answered, noting which epoch acknowledged what."""
    cluster, producer = run.cluster, run.producer

    async def settle() -> None:
        producer._send_ready()
        for _ in range(10):
            await asyncio.sleep(0)

    async def tell(*nodes: int) -> None:
        for n in nodes:
            while await cluster.notify(tp, n):
                pass

    def handle_and_answer(node: int) -> None:
        for request in [r for r in cluster.connections[node] if not r.handled]:
            cluster.handle(request)
        while cluster.connections[node] and cluster.connections[node][0].response is not None:
            request = cluster.connections[node].pop(0)
            assert request.on_answer is not None and request.response is not None
            run.note_acked(request, request.response)
            request.on_answer(request.response, None)

    return settle, tell, handle_and_answer


async def test_f3_a_deposed_leader_whose_isr_write_was_fenced_does_not_acknowledge_alone(
    tmp_path: Path,
) -> None:
    """Leader A (ISR [A]) starts adding C: C counts for the high watermark from then on
    (``joining``, KIP-497's maximal ISR). The write reaches ZooKeeper but the connection
    is lost before the answer, so A keeps counting C. The controller moves leadership to
    C (in the ISR [A, C] that A's write made), and A has not heard yet. A's periodic ISR
    check writes its ISR again to settle the doubt: a version conflict, and ZooKeeper's
    leader epoch is newer, so ``IsrUpdater`` leaves A's ISR as it is ("fenced") and
    returns False, which ``_change_isr`` takes as "ZooKeeper's ISR is known again" and
    clears the joiners. A, a zombie whose ISR is now [A] alone, answers an acks=all
    produce at once; when it hears of C it truncates to C's log, and the acknowledged
    record is gone (C, elected cleanly, never had it)."""
    run = Run(0, tmp_path, late=0, forget=0, failover=0, max_in_flight=5, min_insync=1)
    cluster, tp = run.cluster, TopicPartition("t", 0)
    a = cluster.leader(tp)
    b, c = (n for n in NODES if n != a)
    await run.start()
    run.acc.linger_ms = 0
    producer = run.producer
    settle, tell, handle_and_answer = _script_steps(run, tp)

    try:
        leader = cluster.replicas[tp][a].partition
        await cluster.elect(tp, a, [a])  # B and C had left the ISR
        await tell(*NODES)
        await cluster.replicate(tp, c, 1 << 20)  # C truncates (nothing to cut) ...
        await cluster.replicate(tp, c, 1 << 20)  # ... and fetches: A starts adding it
        await settle()
        assert leader.joining == {c} and cluster.zk.pending()
        cluster.zk.land(run.rng, LOST_AFTER)  # written; A cannot know
        await settle()
        assert cluster.isr(tp) == [a, c] and leader.isr == [a] and leader.joining == {c}
        await cluster.elect(tp, c, cluster.isr(tp))  # a preferred election; A not told
        await tell(b, c)
        cluster.managers[a].shrink_isrs()  # the periodic check writes [A] again ...
        await settle()
        cluster.zk.land(run.rng, "")  # ... a conflict, with a newer leader epoch
        await settle()
        future = await producer.send("t", b"0:000000:V", partition=tp.partition)
        run.sent.append((tp, b"0:000000:V", future))
        await settle()
        handle_and_answer(a)  # acknowledged if A counts on itself alone
        await tell(a)  # A follows C, and truncates to C's log
        for _ in range(40):
            run.clock.ms += 20
            cluster.refresh()
            await settle()
            for n in NODES:
                handle_and_answer(n)
                await cluster.replicate(tp, n, 1 << 20)
        assert future.done()
        run.check_acknowledged()
    finally:
        await cluster.shutdown()
        await producer._close()


async def test_f4_after_an_unclean_election_a_follower_keeps_nothing_its_leader_lacks(
    tmp_path: Path,
) -> None:
    """A leads with the ISR [A, F]; R0 is written and acknowledged, and F's high
    watermark passes it. A and F are lost, and the controller elects U uncleanly: U was
    out of the ISR and its log is empty (R0 is lost, as unclean.leader.election.enable
    allows). F comes back as U's follower and asks U where its latest epoch ended. Before
    the fix U held no epoch at all, since it recorded one only with its first append, so
    it answered UNDEFINED, and F fell back to its high watermark and kept R0. U then took
    R1 at offset 0 and acknowledged it; F fetched from offset 1, was caught up, and joined
    the ISR holding R0 where U held R1. The replicas parted below the high watermark, and
    had U failed then, F's clean election lost R1, which was acknowledged after the
    unclean election. Kafka's leader records its epoch's start offset as it becomes
    leader (``maybeAssignEpochStartOffset``): F would learn to cut to 0."""
    run = Run(0, tmp_path, late=0, forget=0, failover=0, max_in_flight=5, min_insync=1)
    cluster, tp = run.cluster, TopicPartition("t", 0)
    a = cluster.leader(tp)
    f, u = (n for n in NODES if n != a)
    await run.start()
    run.acc.linger_ms = 0
    producer = run.producer
    settle, tell, handle_and_answer = _script_steps(run, tp)

    async def send(value: bytes) -> None:
        future = await producer.send("t", value, partition=tp.partition)
        run.sent.append((tp, value, future))
        await settle()

    async def run_a_while(*fetching: int) -> None:
        for _ in range(30):
            run.clock.ms += 20
            await settle()
            for n in NODES:
                handle_and_answer(n)
            for n in fetching:
                await cluster.replicate(tp, n, 1 << 20)
            while cluster.zk.land(run.rng, ""):
                await settle()

    try:
        await cluster.elect(tp, a, [a, f])  # U out of the ISR, its log empty
        await tell(*NODES)
        await send(b"0:000000:R0")
        await run_a_while(f)  # (U does not fetch)
        assert [v for _, v, _ in log_entries(cluster.replicas[tp][f].log)] == [b"0:000000:R0"]
        assert cluster.replicas[tp][f].partition.high_watermark == 1
        assert cluster.replicas[tp][u].log.log_end_offset == 0
        await cluster.elect(tp, u, [u])  # unclean: A and F are gone
        cluster.unclean[tp] = cluster.state(tp)[0].leader_epoch
        await tell(*NODES)
        cluster.refresh()
        await cluster.replicate(tp, f, 1 << 20)  # F truncates by epoch against U
        await send(b"0:000001:R1")
        await run_a_while()  # U takes R1 (after an epoch bump: it does not know us)
        assert [v for _, v, _ in log_entries(cluster.replicas[tp][u].log)] == [b"0:000001:R1"]
        await run_a_while(f)
        assert all(future.done() for *_, future in run.sent)
        run.check_acknowledged()
        leader = log_entries(cluster.replicas[tp][u].log)
        assert log_entries(cluster.replicas[tp][f].log) == leader
    finally:
        await cluster.shutdown()
        await producer._close()
