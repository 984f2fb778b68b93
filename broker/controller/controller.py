"""The active controller: topic lifecycle, leader election, and telling the brokers.

Active only on the broker that won the election (:mod:`broker.controller.election`), for
one controller epoch. As Kafka's KafkaController, every change arrives as an event on one
queue drained by one task, so the controller's state is only ever touched by that task:
watches (brokers, topics, topic deletions) just enqueue.

What it keeps: the live brokers, every topic's replica assignment, and every partition's
state (leader, leader epoch, ISR) with its znode version. What it does:

- a new topic (its assignment znode written by any broker's CreateTopics): each partition
  gets a state — the first live replica leads, the live replicas are the ISR — created in
  ZooKeeper, then LeaderAndIsr to the replicas and UpdateMetadata to every broker;
- a broker gone: each partition it led gets a new leader from the live ISR and a bumped
  leader epoch, or, with no live ISR member, leader -1 (offline; the ISR is kept, so the
  last in-sync replica leads again when it returns), unless the topic allows an unclean
  election (``unclean.leader.election.enable``: any live replica, possibly losing data);
  where it only followed, it leaves the ISR (leader epoch bumped, as Kafka does);
- an ISR change a leader wrote (``/isr_change_notification``): re-read, tell everyone;
- a broker stopping (ControlledShutdown): its leaderships move to other in-sync replicas
  and it leaves every ISR, before it stops, so clients see no errors in a rolling restart;
  until it is gone it is never chosen as a leader;
- preferred leaders (ElectLeaders, and every ``leader.imbalance.check.interval.seconds``
  with ``auto.leader.rebalance.enable``): a partition led by another replica than its
  first goes back to the first when that one is alive and in sync;
- a broker back (or new): offline partitions it is in sync for are led again, and it gets
  LeaderAndIsr for every partition it holds plus the full metadata;
- a topic in ``/admin/delete_topics``: hidden from metadata at once, StopReplica with
  delete to every replica; when every replica confirmed, its znodes go. A replica on a
  dead broker keeps the deletion pending until the broker returns (as Kafka);
- a partition reassignment (AlterPartitionReassignments, Kafka's KIP-455; the arithmetic
  in :mod:`broker.controller.reassignment`): the assignment znode gets both replica sets
  and the leader epoch is bumped, so the leader takes the new replicas as followers and
  they copy its log; once every target replica is in the ISR (an ISR change the leader
  wrote), the leader moves into the target if it was not there, the removed replicas
  leave the ISR and the list, and they get StopReplica with delete. A new controller
  goes on with the moves the znodes hold.

Every state write is a compare-and-set on the znode version the controller read; every
request carries the controller epoch, so brokers ignore a deposed controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from broker.controller.channel import BrokerChannel
from broker.controller.reassignment import ReplicaAssignment, check_target
from broker.network import PeerLogin, PeerTls
from broker.zk import (
    CREATE,
    BrokerRegistration,
    CorruptZnode,
    Fenced,
    GuardedWrite,
    NodeExists,
    NoNode,
    PartitionState,
    TopicAssignment,
    VersionConflict,
    ZkBridge,
    ZkError,
    isr_change_from_json,
    log_dir_event_from_json,
    paths,
    topic_config_from_json,
)
from protocol.apis import (
    LEADER_DURING_DELETE,
    UPDATE_METADATA_FULL,
    UPDATE_METADATA_INCREMENTAL,
    ApiKey,
    LeaderAndIsrLiveLeader,
    LeaderAndIsrPartitionState,
    LeaderAndIsrRequest,
    LeaderAndIsrResponse,
    StopReplicaPartition,
    StopReplicaRequest,
    UpdateMetadataBroker,
    UpdateMetadataEndpoint,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)
from protocol.errors import (
    ApiError,
    ElectionNotNeededError,
    EligibleLeadersNotAvailableError,
    InconsistentTopicIdError,
    InvalidReplicaAssignmentError,
    KafkaStorageError,
    NoReassignmentInProgressError,
    NotControllerError,
    PreferredLeaderNotAvailableError,
    StaleBrokerEpochError,
    UnknownTopicOrPartitionError,
)
from protocol.topic_id import ZERO_TOPIC_ID, format_topic_id, new_topic_id

__all__ = ["Controller"]

_RETRY_S = 0.5
_PIPELINED = 128  # ZooKeeper requests in flight at once (see _pipelined)
_STATES_PER_LINE = 1000  # partitions per "controller.leaders_elected" log line

_ANSWERS = (NoNode, NodeExists, VersionConflict, CorruptZnode)
"""ZooKeeper's answers, not outages: an event they fail is not retried (see ``_run``)."""
_OFFLINE_CODES = (KafkaStorageError.code, InconsistentTopicIdError.code)
"""LeaderAndIsr answers for a replica that cannot serve until its broker starts again."""

TP = tuple[str, int]
_K = TypeVar("_K")
_V = TypeVar("_V")
_T = TypeVar("_T")


@dataclass(slots=True)
class _State:
    state: PartitionState
    version: int


class Controller:
    """Start with :meth:`activate` (on election), stop with :meth:`deactivate`."""

    def __init__(
        self,
        zk: ZkBridge,
        broker_id: int,
        *,
        request_timeout_ms: int = 30_000,
        unclean_leader_election: Callable[[], bool] = lambda: False,
        peer_tls: PeerTls | None = None,
        peer_login: PeerLogin | None = None,
        inter_broker_listener: str = "PLAINTEXT",
    ) -> None:
        self._zk = zk
        self.broker_id = broker_id
        self._unclean_default = unclean_leader_election  # this broker's, read when used
        self._request_timeout_ms = request_timeout_ms
        self._peer_tls = peer_tls  # the inter-broker listener is SSL: channels use TLS
        self._peer_login = peer_login  # ... and SASL: channels log in with it
        self._listener = inter_broker_listener
        """Our inter-broker listener's name: each broker is reached on its listener of
        that name (Kafka's), so brokers may differ in theirs while one is changed."""
        self.epoch = -1
        self.brokers: dict[int, BrokerRegistration] = {}
        self.assignments: dict[str, dict[int, list[int]]] = {}
        self.topic_ids: dict[str, bytes] = {}
        """Each known topic's id (KIP-516), from its assignment znode."""
        self.states: dict[TP, _State] = {}
        self.reassignments: dict[TP, ReplicaAssignment] = {}
        """The partitions being reassigned (``assignments`` holds their whole list)."""
        self._strays: dict[int, set[TP]] = {}
        """Copies moves removed that their broker has not confirmed deleted yet (it was
        down, or bounced before it answered): asked again when it registers."""
        self._orphans: dict[int, set[TP]] = {}
        """Strays of topics deleted since, on brokers still down: deleted first thing when
        such a broker registers, before a topic made again under the name reaches it."""
        self.deleting: set[str] = set()
        self._stopping: dict[str, object] = {}  # deletions with StopReplica out: the attempt
        self._brokers_todo: tuple[set[int], set[int], set[int]] = (set(), set(), set())
        """Dead, born and bounced brokers a "brokers" event has not finished handling."""
        self._topics_todo: set[str] = set()  # new topics a "topics" event has not finished
        self._partitions_todo: dict[str, set[int]] = {}  # as those, of a "partitions" event
        self._unclean: dict[str, bool] = {}  # topic configs read by the current _elect
        self.shutting_down: set[int] = set()
        self.offline_replicas: dict[TP, set[int]] = {}
        """Replicas whose broker answered KAFKA_STORAGE_ERROR for them (a disk error took
        the log offline, KIP-112): never leader nor in the ISR until that broker starts
        again (Kafka's offline replicas)."""
        self._epoch_zk_version = -1
        self._excluded: set[int] = set()  # restarted brokers, while handled as failed
        self._channels: dict[int, BrokerChannel] = {}
        # unbounded, as Kafka's: identical events coalesce (``_pending``), so it holds at
        # most one of each kind, one "deleted" per topic and the calls being made; a
        # bound would drop a watch's event, and with it a change, for good
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._pending: set[tuple[str, Any]] = set()  # queued events, to coalesce repeats
        self._calls: set[asyncio.Future[Any]] = set()  # submitted work not answered yet
        self._attempted: object = None  # the call last begun (see _call)
        self._resync = False
        """An event failed partway: what it changed may not have been sent, and a rerun
        finds nothing left to send (the change is already in our state). Once the event
        is over, the replicas of every partition it wrote get LeaderAndIsr (each at the
        new epoch it wrote: never an old epoch, which a fenced or restarted broker would
        take as leading again), and every broker the whole metadata picture. A broker
        shutting down gets no LeaderAndIsr: it would follow again what it handed over."""
        self._wrote: set[TP] = set()
        """The partitions whose state this event wrote (all its attempts)."""
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("headwater.controller").bind(broker_id=broker_id)

    @property
    def active(self) -> bool:
        return self._task is not None

    async def activate(self, epoch: int) -> None:
        await self.deactivate()
        self.epoch = epoch
        self._log = self._log.bind(controller_epoch=epoch)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._enqueue("startup")

    async def drain(self, timeout_s: float) -> None:
        """Give what was sent to the other brokers up to ``timeout_s`` to arrive. For a
        controller that steps down on its own (its broker stopping): closing the channels
        drops what they hold, and the brokers would wait for the next controller's whole
        picture to learn the leaders a controlled shutdown just moved. That took a
        1.5 s stall of every write to those partitions."""
        waits = [
            asyncio.ensure_future(c.drain())
            for b, c in self._channels.items()
            # not itself (its server has stopped), nor a broker stopping too or down
            if b not in self.shutting_down and b != self.broker_id and c.reachable
        ]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=timeout_s)
        for wait in late:
            wait.cancel()
        if late:
            self._log.warning("controller.drain_incomplete", brokers_not_reached=len(late))

    async def deactivate(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self.brokers.clear()
        self.assignments.clear()
        self.topic_ids.clear()  # (a topic may be deleted and made again before the next term)
        self.states.clear()
        self.reassignments.clear()
        self._strays.clear()
        self._orphans.clear()
        self.deleting.clear()
        self._stopping.clear()
        self._brokers_todo = (set(), set(), set())
        self._topics_todo = set()
        self._partitions_todo = {}
        self.shutting_down.clear()
        self.offline_replicas.clear()  # the next term learns them anew (LeaderAndIsr answers)
        while not self._events.empty():
            self._events.get_nowait()
        self._pending.clear()
        for call in self._calls:
            if not call.done():
                call.set_exception(NotControllerError("this broker is no longer the controller"))
        self._calls.clear()

    # --- events -------------------------------------------------------------------------

    def _enqueue(self, kind: str, arg: Any = None) -> None:
        if self._task is None or (kind, arg) in self._pending:
            return  # an identical queued event covers this one (handlers re-read ZooKeeper)
        self._pending.add((kind, arg))
        self._events.put_nowait((kind, arg))

    def _watch(self, kind: str, arg: Any = None) -> Any:
        epoch = self.epoch

        def fire(event: object) -> None:
            if self.epoch == epoch:
                self._enqueue(kind, arg)

        return fire

    async def _run(self) -> None:
        handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            "startup": self._startup,
            "brokers": self._brokers_changed,
            "topics": self._topics_changed,
            "partitions": self._partitions_changed,
            "deletions": self._deletions_changed,
            "deleted": self._topic_deleted,
            "isr_changes": self._isr_changed,
            "log_dir_events": self._log_dir_events,
            "replicas_offline": self._replicas_offline,
            "replicas_online": self._replicas_online,
            "call": self._call,
        }
        while True:
            kind, arg = await self._events.get()
            self._pending.discard((kind, arg))
            self._wrote = set()
            while True:
                try:
                    await handlers[kind](arg)
                    break
                except Fenced as exc:  # a newer controller exists: our election task resigns
                    self._log.warning("controller.fenced", error=str(exc))
                    self._resync = False  # nothing of ours counts any more
                    break
                except _ANSWERS:
                    # an answer, not an outage: retrying would repeat it forever and stall
                    # every later event; a fresh read by the next event repairs what it can
                    self._log.exception("controller.event_failed", controller_event=kind)
                    self._resync = True
                    break
                except ZkError as exc:  # ZooKeeper unreachable: the same event again, later
                    self._log.warning(
                        "controller.event_retry", controller_event=kind, error=str(exc)
                    )
                    self._resync = True
                    await asyncio.sleep(_RETRY_S)
                except Exception:  # our bug: logged loudly, and the next event still runs
                    self._log.exception("controller.event_failed", controller_event=kind)
                    self._resync = True
                    break
            if self._resync:
                self._resync = False
                held = self._by_replica(self._wrote)
                for broker_id in self.brokers:
                    if broker_id not in self.shutting_down:
                        self._send_leader_and_isr(broker_id, held.get(broker_id, []))
                self._send_update_metadata(full_to=self.brokers)

    # --- startup ------------------------------------------------------------------------

    async def _startup(self, _: object) -> None:
        """Read everything, repair what needs it, and tell every broker the whole state."""
        data, stat = await self._zk.get(paths.CONTROLLER_EPOCH)
        if int(data) != self.epoch:
            raise Fenced(
                f"{paths.CONTROLLER_EPOCH} is {int(data)}, we were elected in {self.epoch}"
            )
        self._epoch_zk_version = stat.version  # every state write is guarded by it
        await self._zk.ensure_path(paths.TOPICS)
        await self._zk.ensure_path(paths.DELETE_TOPICS)
        await self._zk.ensure_path(paths.ISR_CHANGES)
        await self._zk.ensure_path(paths.LOG_DIR_EVENTS)
        await self._read_brokers()
        names = await self._zk.get_children(paths.TOPICS, watch=self._watch("topics"))
        await self._load_topics(names)
        await self._initialize(self._all_partitions())
        await self._elect(self._all_partitions())
        self._log.info(
            "controller.started",
            brokers=sorted(self.brokers),
            topics=len(self.assignments),
            partitions=len(self.states),
        )
        for broker_id in self.brokers:
            self._send_leader_and_isr(broker_id, self._partitions_of(broker_id))
        self._send_update_metadata(full_to=self.brokers)
        await self._deletions_changed(None)
        await self._isr_changed(None)
        await self._log_dir_events(None)
        await self._resume_reassignments()

    async def _read_brokers(self) -> dict[int, BrokerRegistration]:
        ids = await self._zk.get_children(paths.BROKER_IDS, watch=self._watch("brokers"))
        live: dict[int, BrokerRegistration] = {}
        for name in ids:
            try:
                data, stat = await self._zk.get(paths.broker(int(name)))
            except NoNode:
                continue
            live[int(name)] = BrokerRegistration.from_json(int(name), data, stat)
        old, self.brokers = self.brokers, live
        for broker_id, channel in list(self._channels.items()):
            reg = live.get(broker_id)
            if (
                reg is None
                or _address(reg, self._listener) != (channel.host, channel.port)
                or channel.broker_epoch != reg.epoch  # the channel's own: a pass cut short
                # before it replaced the channel would otherwise keep the old one for good
            ):
                # gone, moved, or restarted: what was queued for the old process (its
                # LeaderAndIsr, incremental updates) must not reach a new one before its
                # own whole state does
                await channel.close()
                del self._channels[broker_id]
        for broker_id, reg in live.items():
            if broker_id not in self._channels:
                self._channels[broker_id] = BrokerChannel(
                    broker_id,
                    *_address(reg, self._listener),
                    request_timeout_ms=self._request_timeout_ms,
                    full_metadata=self._full_metadata,
                    broker_epoch=reg.epoch,
                    tls=self._peer_tls,
                    login=self._peer_login,
                )
        return old

    async def _load_topics(self, topics: Iterable[str]) -> None:
        """Read the topics' assignments, then their partitions' states, up to
        :data:`_PIPELINED` reads in flight: one after the other, a new controller of
        2,050 partitions spent 3.2 s in round trips before it could act."""
        names = list(topics)
        await _pipelined(names, self._load_topic)
        tps = [(t, p) for t in names for p in self.assignments.get(t, ())]
        await _pipelined(tps, self._load_state)

    async def _load_topic(self, topic: str) -> bool:
        assignment = await self._read_assignment(topic)
        if assignment is None:
            return False
        if assignment.topic_id == ZERO_TOPIC_ID and self._ids_kept():
            assignment = await self._give_id(topic)
            if assignment is None:
                return False
        self.assignments[topic] = assignment.partitions
        if assignment.topic_id != ZERO_TOPIC_ID:
            self.topic_ids[topic] = assignment.topic_id
        for p in assignment.reassigning & assignment.partitions.keys():
            self.reassignments[(topic, p)] = ReplicaAssignment(
                tuple(assignment.partitions[p]),
                tuple(assignment.adding.get(p, ())),
                tuple(assignment.removing.get(p, ())),
            )
        return True

    def _ids_kept(self) -> bool:
        """Whether every registered broker keeps topic ids (TOPIC_IDS_FEATURE): until
        then none is given, since a build without them drops the id when it rewrites the
        znode, and the id given next would be another."""
        return all(reg.keeps_topic_ids for reg in self.brokers.values())

    async def _give_missing_ids(self) -> set[TP]:
        """Every topic still without an id gets one, once every registered broker keeps
        them (the last one upgraded has registered); their partitions are returned, for
        the brokers to be told."""
        if not self._ids_kept():
            return set()
        given: set[TP] = set()
        for topic in sorted(t for t in self.assignments if t not in self.topic_ids):
            if topic in self.deleting:
                continue
            assignment = await self._give_id(topic)
            if assignment is not None and topic in self.assignments:
                self.topic_ids[topic] = assignment.topic_id
                given.update((topic, p) for p in self.assignments[topic])
        return given

    async def _give_id(self, topic: str, kept: bytes | None = None) -> TopicAssignment | None:
        """A topic made by a build that gave none gets its id here, as Kafka's controller
        gives one to the topics of a cluster upgraded to topic ids; or its id (``kept``
        here, or the copy in its ``/partitions`` znode) is written back, where a build
        without ids rewrote the znode without it. Compare-and-set, since a broker's
        CreatePartitions writes the znode too. None if the topic is gone."""
        path = paths.topic(topic)
        try:
            kept = kept or await self._zk.kept_topic_id(topic)  # dropped by an older build
            topic_id = kept or new_topic_id()
            if kept is None:  # the copy first: a failure after it gives this id again
                await self._zk.keep_topic_id(topic, topic_id)
        except NoNode:
            return None
        while True:
            try:
                data, stat = await self._zk.get(path)
            except NoNode:
                return None
            known = TopicAssignment.from_json(topic, data)
            if known.topic_id != ZERO_TOPIC_ID:
                return known
            given = dataclasses.replace(known, topic_id=topic_id)
            try:
                await self._zk.guarded(*self._guard, path, given.to_json(), version=stat.version)
            except VersionConflict:
                continue
            except NoNode:
                return None
            self._log.info(
                "controller.topic_id_written_back" if kept else "controller.topic_id_given",
                topic=topic,
                topic_id=format_topic_id(given.topic_id),
            )
            return given

    async def _read_assignment(self, topic: str) -> TopicAssignment | None:
        """The topic's replica assignment, watched (CreatePartitions changes it, as
        Kafka's PartitionModificationsHandler sees); None if the topic is gone."""
        try:
            data, _ = await self._zk.get(paths.topic(topic), watch=self._watch("partitions", topic))
        except NoNode:
            return None
        return TopicAssignment.from_json(topic, data)

    async def _partitions_changed(self, topic: str) -> None:
        """A topic's assignment changed: start the partitions it gained (CreatePartitions).
        Our own reassignment writes change nothing here (our state has them already); a
        change to an existing partition's replicas made by hand, not through
        AlterPartitionReassignments, is logged and left: the partition keeps its replicas
        (taken as they are, they could drop the only in-sync ones)."""
        known = self.assignments.get(topic)
        if known is None or topic in self.deleting:
            return  # new (the topics handler starts it whole) or on its way out
        read = await self._read_assignment(topic)
        if read is None or topic not in self.assignments or topic in self.deleting:
            return
        kept = self.topic_ids.get(topic)
        if read.topic_id == ZERO_TOPIC_ID and kept is not None:
            # a broker of a build without ids grew the topic (a rolling upgrade): the id
            # must not be lost, or the next controller would give the topic another
            await self._give_id(topic, kept)
        wanted = read.partitions
        moved = sorted(p for p in known if p in wanted and wanted[p] != known[p])
        if moved:
            self._log.warning(
                "controller.reassignment_ignored",
                topic=topic,
                partitions=moved,
                why="changing an existing partition's replicas is not supported",
            )
        # as _topics_todo: a rerun (after a ZooKeeper error) must not find them known
        todo = self._partitions_todo.setdefault(topic, set())
        todo.update(p for p in wanted if p not in known)
        if not todo:
            del self._partitions_todo[topic]
            return
        known.update({p: wanted[p] for p in todo})
        tps = [(topic, p) for p in sorted(todo)]
        await self._initialize(tps)
        await self._elect(tps)
        self._log.info("controller.partitions_added", topic=topic, partitions=sorted(todo))
        held = self._by_replica(tps)
        for broker_id in self.brokers:
            self._send_leader_and_isr(broker_id, held.get(broker_id, []))
        self._send_update_metadata(tps)
        del self._partitions_todo[topic]

    async def _load_state(self, tp: TP) -> bool:
        path = paths.partition_state(*tp)
        try:
            raw, stat = await self._zk.get(path)
        except NoNode:
            return False  # new: _initialize gives it a state
        self.states[tp] = _State(PartitionState.from_json(path, raw), stat.version)
        return True

    # --- brokers ------------------------------------------------------------------------

    async def _brokers_changed(self, _: object) -> None:
        old = await self._read_brokers()
        # a broker that re-registered (new znode: new epoch) restarted: it lost its state
        bounced = {b for b, reg in self.brokers.items() if b in old and old[b].epoch != reg.epoch}
        dead = set(old) - set(self.brokers)
        born = (set(self.brokers) - set(old)) | bounced
        # what a failed attempt of this event found is not found again by its rerun (the
        # brokers were read already): kept until the event is through
        was_dead, was_born, was_bounced = self._brokers_todo
        live = set(self.brokers)
        dead = (dead | was_dead) - live
        born = (born | was_born) & live
        bounced = (bounced | was_bounced) & live
        self._brokers_todo = (dead, born, bounced)
        self.shutting_down -= dead | born
        if not dead and not born:
            return
        for tp, offline in list(self.offline_replicas.items()):
            # one that stopped or started again says anew, in its LeaderAndIsr answers
            offline.difference_update(dead | born)
            if not offline:
                del self.offline_replicas[tp]
        self._log.info(
            "controller.brokers_changed",
            dead=sorted(dead),
            born=sorted(born),
            bounced=sorted(bounced),
        )
        given = await self._give_missing_ids()  # the last broker without ids is gone
        orphans = {b: sorted(self._orphans.pop(b)) for b in sorted(born) if b in self._orphans}
        for broker_id, tps in orphans.items():
            # copies of deleted topics, before anything else it hears: a topic made again
            # under the name, with this broker a replica, must not start from the old log
            self._delete_replicas({tp: [broker_id] for tp in tps})
        changed: set[TP] = set()
        if bounced:
            # a restart between two reads is a failure then a start (Kafka's KAFKA-1120): it
            # may have lost an unflushed tail, so it must not keep leading in the same epoch
            self._excluded = bounced
            try:
                changed = await self._elect(self._all_partitions())
            finally:
                self._excluded = set()
        changed |= await self._elect(self._all_partitions())
        changed |= await self._initialize(self._all_partitions())
        changed |= given  # (their replicas keep the id: LeaderAndIsr; every broker: metadata)
        held = self._by_replica(changed)
        for broker_id in self.brokers:
            tps = self._partitions_of(broker_id) if broker_id in born else held.get(broker_id, [])
            self._send_leader_and_isr(broker_id, tps)
        moved = dead | born  # their partitions' offline replicas changed, if nothing else
        changed.update(
            (t, p)
            for t, parts in self.assignments.items()
            for p, replicas in parts.items()
            if not moved.isdisjoint(replicas)
        )
        self._send_update_metadata(changed, full_to=born)
        if born and self.deleting:
            await self._deletions_changed(None, resend=True)
        for broker_id in born:
            strays = self._strays.get(broker_id, set())
            # those of a deletion under way went above, with it; one moved back here (it
            # is a replica again) is its copy now
            strays.difference_update(
                [tp for tp in strays if broker_id in self.assignments.get(tp[0], {}).get(tp[1], ())]
            )
            again = [tp for tp in sorted(strays) if tp[0] not in self.deleting]
            if again:
                self._delete_replicas({tp: [broker_id] for tp in again})
        # a move that waited for a live target replica to lead may go on now
        await self._finish_reassignments(self.reassignments)
        self._brokers_todo = (set(), set(), set())

    # --- topics -------------------------------------------------------------------------

    async def _topics_changed(self, _: object) -> None:
        names = set(await self._zk.get_children(paths.TOPICS, watch=self._watch("topics")))
        gone = set(self.assignments) - names  # its znodes removed by hand, not by a deletion
        for topic in gone:
            self._forget(topic)
        new = (names - set(self.assignments)) | (self._topics_todo & names)
        self._topics_todo = new  # as _brokers_todo: a rerun must not find them known
        if not new:
            if gone:
                self._send_update_metadata(deleted=gone)
            return
        await self._load_topics(new)
        tps = [(t, p) for t in new for p in self.assignments.get(t, ())]
        await self._initialize(tps)
        await self._elect(tps)
        self._log.info("controller.topics_created", topics=sorted(new))
        held = self._by_replica(tps)
        for broker_id in self.brokers:
            self._send_leader_and_isr(broker_id, held.get(broker_id, []))
        self._send_update_metadata(tps, deleted=gone)
        self._topics_todo = set()

    def _forget(self, topic: str) -> None:
        self._partitions_todo.pop(topic, None)
        for broker_id, strays in self._strays.items():
            gone = [tp for tp in strays if tp[0] == topic]
            strays.difference_update(gone)  # a live broker's went with the deletion
            if gone and broker_id not in self.brokers:
                self._orphans.setdefault(broker_id, set()).update(gone)
        self.topic_ids.pop(topic, None)
        for partition in self.assignments.pop(topic, {}):
            self.offline_replicas.pop((topic, partition), None)  # (a topic made again: new logs)
            self.states.pop((topic, partition), None)
            self.reassignments.pop((topic, partition), None)
        self.deleting.discard(topic)
        self._stopping.pop(topic, None)

    async def _initialize(self, tps: Iterable[TP]) -> set[TP]:
        """Give each partition without a state its first: first live replica leads.

        Each partition's znode and state in one multi with the others' (see
        :meth:`ZkBridge.write_many`); one an earlier controller began, alone after.
        One write after the other, a 1,024-partition topic took 4 s of round trips
        before any broker heard of it."""
        todo = [tp for tp in tps if tp not in self.states]
        for topic in {t for t, _ in todo}:
            await self._zk.ensure_path(paths.partitions(topic))
        first = [self._first_state(tp) for tp in todo]
        writes = []
        for tp, state in zip(todo, first, strict=True):
            path = paths.partition_state(*tp)
            writes.append(
                GuardedWrite(path, state.to_json(), CREATE, parents=(path.rsplit("/", 1)[0],))
            )
        results = await self._zk.write_many(writes, guard=self._guard)
        done, again, failed = set(), [], []
        for tp, state, result in zip(todo, first, results, strict=True):
            if isinstance(result, NodeExists | NoNode):
                again.append(tp)  # its znode or state is there already: read what it holds
            elif isinstance(result, ZkError):
                failed.append(result)
            elif tp not in self.states:
                self.states[tp] = _State(state, 0)
                self._wrote.add(tp)  # its replicas have not heard of it yet
                done.add(tp)
        if failed:
            raise _worst(failed)
        return done | await _pipelined(again, self._initialize_one)

    def _first_state(self, tp: TP) -> PartitionState:
        live = [r for r in self.assignments[tp[0]][tp[1]] if r in self.brokers]
        return PartitionState(
            leader=live[0] if live else -1, leader_epoch=0, isr=live, controller_epoch=self.epoch
        )

    async def _initialize_one(self, tp: TP) -> bool:
        """Write ``tp``'s first state alone, its znode being there already (the multi of
        :meth:`_initialize` found it: an earlier controller's), or read the state that
        earlier controller wrote."""
        state = self._first_state(tp)
        path = paths.partition_state(*tp)
        try:
            await self._zk.guarded(
                paths.CONTROLLER_EPOCH,
                self._epoch_zk_version,
                path,
                state.to_json(),
                version=CREATE,
            )
            version = 0
        except NodeExists:  # written by an earlier controller that died after it
            raw, stat = await self._zk.get(path)
            state, version = PartitionState.from_json(path, raw), stat.version
        if tp in self.states:
            return False  # another pass initialized it meanwhile
        self.states[tp] = _State(state, version)
        self._wrote.add(tp)  # its replicas have not heard of it yet
        return True

    async def _elect(self, tps: Iterable[TP], *, unclean: bool = False) -> set[TP]:
        """New leaders where the leader is gone; returns the partitions whose state changed.

        The new states go in multis (see :meth:`ZkBridge.write_many`); one that lost
        a race (a leader changed its ISR) is read again and decided again. One write
        after the other, a controlled shutdown of a broker in 2,085 partitions took 4 s
        of round trips before it could stop; 128 in flight, 1.7 s."""
        todo = [tp for tp in tps if tp[0] not in self.deleting and tp in self.states]
        changed: set[TP] = set()
        failed: list[ZkError] = []  # raised once the others are decided
        self._unclean = {}  # a topic's config read once per election, not per partition
        if unclean:  # asked for (KIP-460): whatever the topics' configs say
            self._unclean = {tp[0]: True for tp in todo}
        while todo:
            wanted: dict[TP, PartitionState] = {}
            for tp in todo:
                state = await self._leader_for(tp, self.states[tp].state)
                if state is not None:
                    wanted[tp] = state
            lost, refused = await self._write_states(wanted)
            failed += refused.values()
            again = set(lost) | set(refused)
            elected = [
                {
                    "topic": tp[0],
                    "partition": tp[1],
                    "leader": state.leader,
                    "leader_epoch": state.leader_epoch,
                    "isr": state.isr,
                }
                for tp, state in wanted.items()
                if tp not in again
            ]
            changed.update(tp for tp in wanted if tp not in again)
            for start in range(0, len(elected), _STATES_PER_LINE):  # not a line each: 37 us
                self._log.info(
                    "controller.leaders_elected",
                    partitions=elected[start : start + _STATES_PER_LINE],
                )
            await _pipelined(lost, self._reload_state)
            todo = lost
        if failed:
            raise _worst(failed)
        return changed

    async def _leader_for(self, tp: TP, current: PartitionState) -> PartitionState | None:
        """The state ``tp`` should move to (new leader, or dead followers out of the ISR),
        or None if it is fine."""
        usable = {
            b for b in self.brokers if b not in self.shutting_down and b not in self._excluded
        }
        offline = self.offline_replicas.get(tp)
        if offline:  # (a disk error: that replica's log is gone, wherever its broker is)
            usable -= offline
        live_isr = [r for r in current.isr if r in usable]
        if current.leader in usable:
            if live_isr == current.isr:
                return None
            leader, isr = current.leader, live_isr
        elif current.leader in self.shutting_down and not live_isr:
            return None  # nobody to hand over to: it leads until it stops
        else:
            replicas = self.assignments[tp[0]][tp[1]]
            if current.isr:
                candidates = [r for r in replicas if r in live_isr]
            else:  # never led (created while every replica was down): nothing to lose
                candidates = [r for r in replicas if r in usable]
            if not candidates and await self._unclean_allowed(tp[0]):
                moving = self.reassignments.get(tp)
                if moving is not None:  # a replica still being added may hold nothing yet
                    replicas = [*moving.origin, *moving.adding]
                candidates = [r for r in replicas if r in usable]
                if candidates:
                    self._log.warning(
                        "controller.unclean_leader_election",
                        topic=tp[0],
                        partition=tp[1],
                        leader=candidates[0],
                        lost_isr=current.isr,
                    )
                    live_isr = [candidates[0]]
            if candidates:
                leader = candidates[0]
                isr = [r for r in live_isr if r != leader]
                isr.insert(0, leader)
            elif current.leader == -1:
                return None  # still offline; nothing changes
            else:
                leader, isr = -1, current.isr  # offline: an in-sync replica must come back
        return PartitionState(
            leader=leader,
            leader_epoch=current.leader_epoch + 1,
            isr=isr,
            controller_epoch=self.epoch,
        )

    async def _unclean_allowed(self, topic: str) -> bool:
        known = self._unclean.get(topic)
        if known is None:
            known = self._unclean[topic] = await self._read_unclean(topic)
        return known

    async def _read_unclean(self, topic: str) -> bool:
        try:
            data, _ = await self._zk.get(paths.topic_config(topic))
        except NoNode:
            return self._unclean_default()
        try:
            config = topic_config_from_json(topic, data)
        except CorruptZnode as exc:
            self._log.warning("controller.topic_config_unreadable", topic=topic, error=str(exc))
            return self._unclean_default()
        value = config.get("unclean.leader.election.enable")
        return self._unclean_default() if value is None else value.strip().lower() == "true"

    async def _write_states(
        self, states: dict[TP, PartitionState]
    ) -> tuple[list[TP], dict[TP, ZkError]]:
        """Write ``states`` at their cached versions; the partitions that lost a race, and
        those refused otherwise (fenced, ZooKeeper failing, the topic gone) with why.

        A state znode removed by hand (NoNode) is created again with the new state: its
        leader epoch goes on from the cached one, so the replicas take it. Refused, it
        failed every later election of the partition until a controller failover, and
        that controller's first state (epoch 0) the replicas would have ignored."""
        tps = list(states)
        results = await self._zk.write_many(
            [
                GuardedWrite(
                    paths.partition_state(*tp), states[tp].to_json(), self.states[tp].version
                )
                for tp in tps
            ],
            guard=self._guard,
        )
        # created again: first where only the state went, then with the partition's
        # znode; never the topic's, so a topic removed by hand is not brought back. A
        # NodeExists with the partition's znode may be that znode's (made meanwhile): the
        # state alone once more, which tells a lost race from a gone topic
        pending = [i for i, result in enumerate(results) if isinstance(result, NoNode)]
        if pending:
            self._log.warning(
                "controller.partition_state_recreated",
                partitions=[f"{tps[i][0]}-{tps[i][1]}" for i in pending],
            )
        for parents in (False, True, False):
            if not pending:
                break
            made = await self._zk.write_many(
                [
                    GuardedWrite(
                        path := paths.partition_state(*tps[i]),
                        states[tps[i]].to_json(),
                        CREATE,
                        parents=(path.rsplit("/", 1)[0],) if parents else (),
                    )
                    for i in pending
                ],
                guard=self._guard,
            )
            again = []
            for i, result in zip(pending, made, strict=True):
                results[i] = result
                if isinstance(result, NoNode if not parents else NodeExists):
                    again.append(i)  # the next pass decides
                elif isinstance(result, NodeExists):  # the state was made meanwhile
                    results[i] = VersionConflict(str(result))  # a lost race: read, decide
            pending = again
        lost: list[TP] = []
        refused: dict[TP, ZkError] = {}
        for tp, result in zip(tps, results, strict=True):
            if isinstance(result, VersionConflict):
                lost.append(tp)
            elif isinstance(result, ZkError):
                refused[tp] = result
            else:
                self.states[tp] = _State(states[tp], result)
                self._wrote.add(tp)
        return lost, refused

    @property
    def _guard(self) -> tuple[str, int]:
        """What fences every state write of ours (Kafka's KAFKA-6082)."""
        return paths.CONTROLLER_EPOCH, self._epoch_zk_version

    async def _write_state(self, tp: TP, state: PartitionState) -> None:
        """As :meth:`_write_states`, one partition: raises what refused it (a lost race:
        :class:`VersionConflict`)."""
        lost, refused = await self._write_states({tp: state})
        if lost:
            raise VersionConflict(f"{paths.partition_state(*tp)} changed meanwhile")
        if refused:
            raise refused[tp]

    async def _reload_state(self, tp: TP) -> bool:
        path = paths.partition_state(*tp)
        raw, stat = await self._zk.get(path)
        state = PartitionState.from_json(path, raw)
        old = self.states.get(tp)
        if old is not None and old.state.leader_epoch != state.leader_epoch:
            # only a controller moves a leader epoch, and our writes are fenced: this is
            # one of ours that landed while its answer was lost, so its replicas are told
            # once the event is over (a rerun finds nothing left to change, or send)
            self._wrote.add(tp)
            self._resync = True
        self.states[tp] = _State(state, stat.version)
        return True

    def offline_partitions(self) -> int:
        """Partitions with no live leader (Kafka's OfflinePartitionsCount)."""
        return sum(
            1
            for (topic, _), entry in self.states.items()
            if topic not in self.deleting and entry.state.leader not in self.brokers
        )

    # --- requests answered by the controller -------------------------------------------

    async def submit(self, work: Any) -> Any:
        """Run ``work`` (an async function of no arguments) on the controller's event
        task, so it sees and changes the state without racing the events; its result."""
        if self._task is None:
            raise NotControllerError("this broker is not the controller")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls.add(future)
        future.add_done_callback(self._calls.discard)
        self._events.put_nowait(("call", (work, future)))
        return await future

    async def _call(self, arg: Any) -> None:
        work, future = arg
        if future.done() and self._attempted is not arg:
            return  # the caller gave up before it began: nothing of it was done
        # a rerun (after a ZooKeeper error) goes on even if the caller gave up since:
        # what the first try began (a znode written, a state not yet) must be finished
        self._attempted = arg
        try:
            result = await work()
            if not future.done():  # the caller may have given up meanwhile
                future.set_result(result)
        except _ANSWERS as exc:  # not retried (see _run): the caller must hear of it
            if not future.done():
                future.set_exception(exc)
            raise
        except ZkError:
            raise  # the event loop retries the whole event (Fenced: it resigns)
        except Exception as exc:
            self._resync = True  # it may have changed states it did not get to send
            if not future.done():
                future.set_exception(exc)

    async def controlled_shutdown(self, broker_id: int, broker_epoch: int = -1) -> list[TP]:
        """Move ``broker_id``'s leaderships away and take it out of every ISR; returns the
        partitions it still leads that another live replica could take over later (none in
        sync now).

        ``broker_epoch`` is the registration the request was sent by (-1: unknown, as an
        old client sends). One from before the broker's current registration is an
        earlier run's, delayed (KIP-380): acted on, it would take every leadership from
        the run that replaced it; it raises :class:`StaleBrokerEpochError` instead.
        """

        async def work() -> list[TP] | int:
            reg = self.brokers.get(broker_id)
            if reg is None:
                return []
            if 0 <= broker_epoch < reg.epoch:
                # refused before anything changed; raised by the caller, as an error
                # raised here is taken for a change cut short (and resends everything)
                return reg.epoch
            self.shutting_down.add(broker_id)
            self._log.info("controller.controlled_shutdown", shutting_down=broker_id)
            changed = await self._elect(self._all_partitions())
            # it stops fetching as a follower first, or it would catch up and rejoin the
            # ISRs; it gets no LeaderAndIsr making it a follower
            following = [
                tp
                for tp in self._partitions_of(broker_id)
                if self.states[tp].state.leader != broker_id
            ]
            if following and broker_id in self._channels:
                self._send_stop_replica(broker_id, following, delete=False)
            self._tell_replicas(changed, exclude=broker_id)
            # Worth a retry only where another replica is alive and staying (one out of the
            # ISR may catch up meanwhile). With one replica (Kafka leaves those out too), or
            # every other one stopped or stopping (the last broker of a cluster going down),
            # nothing can take over: retrying would only delay the stop.
            alive = {b for b in self.brokers if b != broker_id and b not in self.shutting_down}
            return [
                tp
                for tp, entry in self.states.items()
                if entry.state.leader == broker_id
                and tp[0] not in self.deleting
                and not alive.isdisjoint(self.assignments[tp[0]][tp[1]])
            ]

        result: list[TP] | int = await self.submit(work)
        if isinstance(result, int):
            raise StaleBrokerEpochError(
                f"ControlledShutdown from broker {broker_id}'s run of epoch {broker_epoch}; "
                f"its current registration is epoch {result}"
            )
        return result

    async def elect_preferred(self, tps: list[TP] | None) -> dict[TP, ApiError | None]:
        """Preferred leader election for ``tps`` (None: all); per partition, None if its
        preferred replica was made leader, else why not, in Kafka's words:
        ELECTION_NOT_NEEDED (it leads already), UNKNOWN_TOPIC_OR_PARTITION,
        PREFERRED_LEADER_NOT_AVAILABLE (not alive, offline or out of sync)."""

        async def work() -> dict[TP, ApiError | None]:
            wanted = self._all_partitions() if tps is None else tps
            outcome: dict[TP, ApiError | None] = {}
            changed: set[TP] = set()
            for tp in wanted:
                outcome[tp] = await self._make_preferred_leader(tp, changed)
            self._tell_replicas(changed)
            return outcome

        result: dict[TP, ApiError | None] = await self.submit(work)
        return result

    async def _make_preferred_leader(self, tp: TP, changed: set[TP]) -> ApiError | None:
        if tp not in self.states or tp[0] in self.deleting:
            return UnknownTopicOrPartitionError(f"no partition {tp[0]}-{tp[1]}")
        while True:
            current = self.states[tp].state
            preferred = self.assignments[tp[0]][tp[1]][0]
            if current.leader == preferred:
                return ElectionNotNeededError(
                    f"{tp[0]}-{tp[1]} is led by its preferred replica {preferred} already"
                )
            why = None
            if preferred not in self.brokers or preferred in self.shutting_down:
                why = f"the preferred leader {preferred} is not alive"
            elif preferred in self.offline_replicas.get(tp, ()):
                why = f"the preferred leader {preferred} has its log offline (a disk error)"
            elif preferred not in current.isr:
                why = f"the preferred leader {preferred} is not in sync (ISR {current.isr})"
            if why is not None:
                return PreferredLeaderNotAvailableError(why)
            state = PartitionState(
                leader=preferred,
                leader_epoch=current.leader_epoch + 1,
                isr=current.isr,
                controller_epoch=self.epoch,
            )
            try:
                await self._write_state(tp, state)
            except VersionConflict:
                await self._reload_state(tp)
                continue
            changed.add(tp)
            self._log.info(
                "controller.preferred_leader_elected",
                topic=tp[0],
                partition=tp[1],
                leader=preferred,
                leader_epoch=state.leader_epoch,
            )
            return None

    async def elect_unclean_now(self, tps: list[TP] | None) -> dict[TP, ApiError | None]:
        """Unclean leader election on demand (Kafka's KIP-460, ``kafka-leader-election
        --election-type unclean``): each partition with no live leader gets one from its
        live replicas, in sync or not, whatever its topic's config says (records its last
        leader had and that replica lacks are lost: the operator's call). Per partition,
        None if it has a leader now; ELECTION_NOT_NEEDED if it had one; ELIGIBLE_LEADERS_
        NOT_AVAILABLE if no replica is alive. None: every partition without a leader."""

        async def work() -> dict[TP, ApiError | None]:
            outcome: dict[TP, ApiError | None] = {}
            offline: list[TP] = []
            usable = {b for b in self.brokers if b not in self.shutting_down}
            for tp in self._all_partitions() if tps is None else tps:
                if tp not in self.states or tp[0] in self.deleting:
                    outcome[tp] = UnknownTopicOrPartitionError(f"no partition {tp[0]}-{tp[1]}")
                elif self.states[tp].state.leader in usable:
                    if tps is not None:  # (every partition: only the offline ones are told)
                        outcome[tp] = ElectionNotNeededError(
                            f"{tp[0]}-{tp[1]} has a leader, broker {self.states[tp].state.leader}"
                        )
                else:
                    offline.append(tp)
            self._tell_replicas(await self._elect(offline, unclean=True))
            for tp in offline:
                if self.states[tp].state.leader in usable:
                    outcome[tp] = None
                    continue
                replicas = self.assignments[tp[0]][tp[1]]
                stopping = [r for r in replicas if r in self.brokers and r in self.shutting_down]
                why = (
                    f"its live replicas {stopping} are shutting down"
                    if stopping
                    else f"none of its replicas {replicas} is alive"
                )
                outcome[tp] = EligibleLeadersNotAvailableError(f"{tp[0]}-{tp[1]}: {why}")
            return outcome

        result: dict[TP, ApiError | None] = await self.submit(work)
        return result

    async def elect_unclean(self, topic: str | None) -> None:
        """``topic`` (None: the broker default, so every topic without an override) now
        allows unclean election: its offline partitions get a leader from any live replica
        at once (Kafka's TopicUncleanLeaderElectionEnable event), rather than at the next
        broker change. Partitions that have a leader are left alone."""

        async def work() -> None:
            topics = list(self.assignments) if topic is None else [topic]
            tps = [(t, p) for t in topics for p in self.assignments.get(t, ())]
            self._tell_replicas(await self._elect(tps))

        try:
            await self.submit(work)
        except NotControllerError:
            return  # the next controller reads the topic's config when it elects

    async def rebalance_leaders(self) -> None:
        """``auto.leader.rebalance.enable``: preferred leaders back where they can be."""
        try:
            outcome = await self.elect_preferred(None)
        except NotControllerError:
            return
        moved = [tp for tp, error in outcome.items() if error is None]
        if moved:
            self._log.debug("controller.leaders_rebalanced", partitions=len(moved))

    def _tell_replicas(self, changed: set[TP], exclude: int | None = None) -> None:
        if not changed:
            return
        held = self._by_replica(changed)
        for broker_id in self.brokers:
            if broker_id != exclude:
                self._send_leader_and_isr(broker_id, held.get(broker_id, []))
        self._send_update_metadata(changed)

    # --- partition reassignment ---------------------------------------------------------

    async def reassign(self, wanted: dict[TP, list[int] | None]) -> dict[TP, ApiError | None]:
        """AlterPartitionReassignments: move each partition's replicas to its new list
        (None: cancel its move, back to the replicas it started from). Answered once each
        move has begun: the new replicas copy the log, and the move finishes when they are
        all in sync (:meth:`_finish_reassignments`). Per partition, None or why not."""
        outcome: dict[TP, ApiError | None] = {}
        plan: dict[TP, tuple[ReplicaAssignment, tuple[int, ...]]] = {}
        decided = False

        async def work() -> dict[TP, ApiError | None]:
            nonlocal decided
            if not decided:  # once: a rerun (after a ZooKeeper error) goes on with it
                decided = True
                for tp, target in wanted.items():
                    try:
                        plan[tp] = self._plan_move(tp, target)
                    except ApiError as exc:
                        outcome[tp] = exc
                        continue
                    outcome[tp] = None
            # topic by topic, each through to its replicas before the next: a failure
            # leaves the topics before it moving and the ones after it untouched
            for topic, moves in _by_topic(plan).items():
                if topic in self.assignments and topic not in self.deleting:
                    await self._begin_moves(topic, moves, outcome)
            await self._finish_reassignments(plan)
            return outcome

        result: dict[TP, ApiError | None] = await self.submit(work)
        return result

    async def _begin_moves(
        self,
        topic: str,
        moves: dict[int, tuple[ReplicaAssignment, tuple[int, ...]]],
        outcome: dict[TP, ApiError | None],
    ) -> None:
        """Begin the topic's moves. The states first, at the next leader epoch (the
        leader takes the new list, its followers, only so) with the dropped replicas out
        of the ISR; each decided on a fresh read, so a move that would now drop every
        in-sync replica is refused, not made (the check at the request saw our cache).
        Then the assignment znode, our state, the replicas told, the dropped deleted. A
        failure after the states leaves the old move in the znode with an ISR that lacks
        replicas it was adding: they rejoin as they catch up, and a rerun goes on."""
        tps = {(topic, p): move for p, move in moves.items()}
        await _pipelined(list(tps), self._reload_state)
        usable = self._usable()
        refused: set[TP] = set()

        def begun(tp: TP, current: PartitionState) -> PartitionState | None:
            new, gone = tps[tp]
            ok = self._usable_for(tp, usable)
            why = _drops_the_last(current, gone, ok)
            if why is not None:
                refused.add(tp)
                outcome[tp] = InvalidReplicaAssignmentError(f"{tp[0]}-{tp[1]}: {why}")
                return None
            return _without(current, gone, new.replicas, ok, self.epoch)

        written = await self._rewrite_states(tps, begun)
        started = {p: tps[(topic, p)][0] for t, p in written if (t, p) not in refused}
        if not started:
            return
        await self._write_assignment(topic, started)
        for p, new in started.items():
            self.assignments[topic][p] = list(new.replicas)
            if new.reassigning:
                self.reassignments[(topic, p)] = new
            else:
                self.reassignments.pop((topic, p), None)
        done = {(topic, p) for p in started}
        self._tell_replicas(done)
        self._delete_replicas({tp: tps[tp][1] for tp in done})
        self._log.info(
            "controller.reassignments_started",
            partitions=[
                {
                    "topic": t,
                    "partition": p,
                    "replicas": list(new.replicas),
                    "adding": list(new.adding),
                    "removing": list(new.removing),
                    "dropped": list(gone),
                }
                for (t, p), (new, gone) in tps.items()
                if (t, p) in done
            ],
        )

    def _plan_move(
        self, tp: TP, target: list[int] | None
    ) -> tuple[ReplicaAssignment, tuple[int, ...]]:
        """The partition's new assignment and the replicas it drops at once (adding
        replicas of a move it replaces that the new one does not name). Raises what
        refuses it. The same move asked again is made again (its epoch bumped, its
        replicas told): how a move a failed request left half begun is set going."""
        name = f"{tp[0]}-{tp[1]}"
        parts = self.assignments.get(tp[0])
        if parts is None or tp[1] not in parts or tp[0] in self.deleting:
            raise UnknownTopicOrPartitionError(f"no partition {name}")
        current = self.reassignments.get(tp) or ReplicaAssignment(tuple(parts[tp[1]]))
        if target is None:
            if not current.reassigning:
                raise NoReassignmentInProgressError(f"{name} is not being reassigned")
            target = list(current.origin)
        else:
            check_target(name, target, self.brokers)
        new = current.reassign_to(target)
        # (whether it would drop every in-sync replica is decided as it is made, on a
        # fresh read of the state: see _begin_moves)
        return new, tuple(r for r in current.replicas if r not in new.replicas)

    async def list_reassignments(self, tps: list[TP] | None) -> dict[TP, ReplicaAssignment]:
        """ListPartitionReassignments: the moves under way, of ``tps`` (None: all)."""

        async def work() -> dict[TP, ReplicaAssignment]:
            wanted = self.reassignments if tps is None else tps
            return {
                tp: self.reassignments[tp]
                for tp in wanted
                if tp in self.reassignments and tp[0] not in self.deleting
            }

        result: dict[TP, ReplicaAssignment] = await self.submit(work)
        return result

    async def _finish_reassignments(self, tps: Iterable[TP]) -> None:
        """Finish the moves of ``tps`` whose target replicas are all in sync: the leader
        into the target if it is not there (the first live in-sync target replica), the
        removed replicas out of the ISR (one state write, epoch bumped), then the
        assignment znode with the target alone, then StopReplica with delete to the
        removed. The state goes first: a controller that dies between the two writes
        leaves a move its successor finishes again, never removed replicas in an ISR."""
        ready = {
            tp: move
            for tp in list(tps)
            if (move := self.reassignments.get(tp)) is not None
            and tp[0] not in self.deleting
            and tp in self.states
            and move.complete(self.states[tp].state.isr)
        }
        if not ready:
            return
        usable = self._usable()

        def finished(tp: TP, current: PartitionState) -> PartitionState | None:
            move = ready[tp]
            if not move.complete(current.isr):
                return None
            leader = current.leader
            ok = self._usable_for(tp, usable)
            if leader not in move.target or leader not in ok:
                leader = next((r for r in move.target if r in current.isr and r in ok), -1)
            if leader == -1:
                self._log.warning(
                    "controller.reassignment_waiting",
                    topic=tp[0],
                    partition=tp[1],
                    why="no target replica is alive and in sync to lead",
                    isr=current.isr,
                )
                return None
            return PartitionState(
                leader=leader,
                leader_epoch=current.leader_epoch + 1,
                isr=[r for r in current.isr if r not in move.removing],
                controller_epoch=self.epoch,
            )

        written = await self._rewrite_states(ready, finished)
        done = {tp: ReplicaAssignment(ready[tp].target) for tp in written}
        for topic, changes in _by_topic(done).items():
            await self._write_assignment(topic, changes)
        for tp in written:
            self.assignments[tp[0]][tp[1]] = list(ready[tp].target)
            del self.reassignments[tp]
        self._tell_replicas(written)
        self._delete_replicas({tp: ready[tp].removing for tp in written})
        if written:
            self._log.info(
                "controller.reassignments_completed",
                partitions=[
                    {"topic": t, "partition": p, "replicas": list(ready[(t, p)].target)}
                    for t, p in sorted(written)
                ],
            )

    async def _resume_reassignments(self) -> None:
        """A new controller goes on with the moves in the znodes. Their leader epoch is
        bumped again (Kafka's onPartitionReassignment): the last controller may have died
        after it wrote the new list but before the leader heard of it, and the leader
        ignores a list at the epoch it has."""
        moving = [tp for tp in self.reassignments if tp[0] not in self.deleting]
        if not moving:
            return
        usable = self._usable()
        written = await self._rewrite_states(
            moving,
            lambda tp, s: _without(
                s, (), self.assignments[tp[0]][tp[1]], self._usable_for(tp, usable), self.epoch
            ),
        )
        self._tell_replicas(written)
        self._log.info("controller.reassignments_resumed", partitions=len(moving))
        await self._finish_reassignments(moving)

    def _usable(self) -> set[int]:
        """Brokers that may lead: registered and not stopping."""
        return {b for b in self.brokers if b not in self.shutting_down}

    def _usable_for(self, tp: TP, usable: set[int]) -> set[int]:
        """Of ``usable``, those whose replica of ``tp`` is not offline (a disk error)."""
        offline = self.offline_replicas.get(tp)
        return usable - offline if offline else usable

    async def _rewrite_states(
        self,
        tps: Iterable[TP],
        decide: Callable[[TP, PartitionState], PartitionState | None],
    ) -> set[TP]:
        """Write ``decide(tp, state)`` for each of ``tps`` (None: leave it) in multis,
        deciding again from a fresh read where a leader's ISR write won the race; the
        partitions written."""
        todo = [tp for tp in tps if tp in self.states]
        written: set[TP] = set()
        failed: list[ZkError] = []
        while todo:
            wanted = {
                tp: state for tp in todo if (state := decide(tp, self.states[tp].state)) is not None
            }
            lost, refused = await self._write_states(wanted)
            failed += refused.values()
            written.update(tp for tp in wanted if tp not in refused and tp not in lost)
            await _pipelined(lost, self._reload_state)
            todo = lost
        if failed:
            raise _worst(failed)
        return written

    async def _write_assignment(self, topic: str, changes: dict[int, ReplicaAssignment]) -> None:
        """Put ``changes`` in the topic's assignment znode: read, change, compare-and-set,
        since any broker's CreatePartitions writes it too (a partition one added stays)."""
        path = paths.topic(topic)
        while True:
            data, stat = await self._zk.get(path)
            known = TopicAssignment.from_json(topic, data)
            partitions, adding, removing = (
                dict(known.partitions),
                dict(known.adding),
                dict(known.removing),
            )
            for p, move in changes.items():
                partitions[p] = list(move.replicas)
                adding[p] = list(move.adding)
                removing[p] = list(move.removing)
            value = TopicAssignment(topic, partitions, adding, removing, known.topic_id).to_json()
            try:
                await self._zk.guarded(*self._guard, path, value, version=stat.version)
                return
            except VersionConflict:
                continue

    def _delete_replicas(self, removed: dict[TP, Iterable[int]]) -> None:
        """StopReplica with delete for the replicas moves ``removed``, one request per
        broker. Each is a stray (``_strays``) until its broker confirms it: one that is
        down, or bounced before it answered (the channel drops what it holds), gets it
        again when it registers with this controller (a later controller does not know
        of it: the copy then stays on that disk, unused, as in Kafka's ZooKeeper mode)."""
        by_broker: dict[int, list[TP]] = {}
        for tp, brokers in removed.items():
            for broker_id in brokers:
                self._strays.setdefault(broker_id, set()).add(tp)
                by_broker.setdefault(broker_id, []).append(tp)
        for broker_id, tps in sorted(by_broker.items()):
            if broker_id not in self.brokers or broker_id not in self._channels:
                self._log.info(
                    "controller.removed_replicas_pending",
                    broker=broker_id,
                    partitions=[f"{t}-{p}" for t, p in sorted(tps)],
                    why="its broker is down; its copies are deleted when it returns",
                )
                continue
            answer = self._send_stop_replica(broker_id, tps, delete=True)
            answer.add_done_callback(
                functools.partial(self._stop_answered, broker_id, tps, self.epoch)
            )

    def _stop_answered(
        self, broker_id: int, tps: list[TP], epoch: int, answer: asyncio.Future[Any]
    ) -> None:
        """A removal confirmed: its copy is no longer a stray. One refused, or dropped
        with the channel, stays one."""
        if self._task is None or self.epoch != epoch:
            return  # not ours any more (we stepped down, which closed the channels)
        if answer.cancelled() or answer.exception() is not None:
            return
        response = answer.result()
        if response.error_code:
            return
        failed = {
            (p.topic_name, p.partition_index) for p in response.partition_errors if p.error_code
        }
        self._strays.get(broker_id, set()).difference_update(tp for tp in tps if tp not in failed)

    def _send_stop_replica(
        self, broker_id: int, tps: Iterable[TP], *, delete: bool
    ) -> asyncio.Future[Any]:
        return self._channels[broker_id].send(
            ApiKey.STOP_REPLICA,
            StopReplicaRequest(
                controller_id=self.broker_id,
                controller_epoch=self.epoch,
                delete_partitions=delete,
                partitions=[StopReplicaPartition(topic_name=t, partition_index=p) for t, p in tps],
            ),
        )

    # --- ISR changes written by leaders -------------------------------------------------

    async def _notes(
        self, root: str, kind: str, parse: Callable[[str, bytes], _T]
    ) -> tuple[list[str], list[_T]]:
        """The notification znodes under ``root`` (watched again, as event ``kind``) and
        what each says; one gone meanwhile is skipped, an unreadable one logged."""
        names = await self._zk.get_children(root, watch=self._watch(kind))
        found: list[_T] = []
        for name in names:
            path = f"{root}/{name}"
            try:
                data, _ = await self._zk.get(path)
                found.append(parse(path, data))
            except NoNode:
                continue
            except CorruptZnode as exc:
                self._log.warning("controller.notification_unreadable", path=path, error=str(exc))
        return names, found

    async def _drop_notes(self, root: str, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(NoNode):
                await self._zk.delete(f"{root}/{name}")

    async def _isr_changed(self, _: object) -> None:
        names, notes = await self._notes(paths.ISR_CHANGES, "isr_changes", isr_change_from_json)
        if not names:
            return
        changed = {tp for note in notes for tp in note} & self.states.keys()
        for tp in changed:
            with contextlib.suppress(NoNode):
                await self._reload_state(tp)
        # before the notes go: a rerun (after a ZooKeeper error) must find them again
        await self._finish_reassignments(changed)
        await self._drop_notes(paths.ISR_CHANGES, names)
        if changed:
            self._send_update_metadata(changed)

    # --- deletion -----------------------------------------------------------------------

    async def _deletions_changed(self, _: object, *, resend: bool = False) -> None:
        """Start the deletions asked for. StopReplica goes to a topic's replicas once;
        again only after it failed, or for all (``resend``) when a broker came back. Every
        deletion that ended re-ran this and sent it to every pending one again: deleting
        many topics at once sent a number of requests that grew with their square."""
        names = await self._zk.get_children(paths.DELETE_TOPICS, watch=self._watch("deletions"))
        hide: list[TP] = []
        for topic in names:
            if topic not in self.assignments:
                with contextlib.suppress(NoNode):
                    await self._zk.delete(paths.delete_topic(topic))
                continue
            if topic not in self.deleting:
                self.deleting.add(topic)
                hide.extend((topic, p) for p in self.assignments[topic])
                self._log.info("controller.deleting_topic", topic=topic)
            if resend or topic not in self._stopping:
                self._stop_replicas(topic)
        if hide:
            self._send_update_metadata(hide)

    def _stop_replicas(self, topic: str) -> None:
        """StopReplica with delete to every replica; done when all confirm."""
        replicas: dict[int, list[TP]] = {}
        for partition, brokers in self.assignments[topic].items():
            for b in brokers:
                replicas.setdefault(b, []).append((topic, partition))
        for b, strays in self._strays.items():  # copies moves left go too, where their
            if b not in self.brokers:  # broker is up: one down is not waited for (it gets
                continue  # them when it returns; a move often retired it for good)
            for tp in sorted(strays):
                if tp[0] == topic and tp not in replicas.get(b, ()):
                    replicas.setdefault(b, []).append(tp)
        if any(b not in self.brokers for b in replicas):
            return  # retried when the broker returns (a "brokers" event)
        token = self._stopping[topic] = object()  # this attempt, not an earlier one's
        futures = [self._send_stop_replica(b, tps, delete=True) for b, tps in replicas.items()]

        async def confirm() -> None:
            results = await asyncio.gather(*futures, return_exceptions=True)
            if all(
                not isinstance(r, BaseException)
                and r.error_code == 0
                and not any(p.error_code for p in r.partition_errors)
                for r in results
            ):
                self._enqueue("deleted", topic)
            elif self._stopping.get(topic) is token:
                # pending: sent again by the next deletion event, or when a broker returns
                del self._stopping[topic]

        asyncio.get_running_loop().create_task(confirm())

    async def _topic_deleted(self, topic: object) -> None:
        assert isinstance(topic, str)
        if topic not in self.deleting:
            return
        for path in (paths.topic(topic), paths.topic_config(topic), paths.delete_topic(topic)):
            with contextlib.suppress(NoNode):
                await self._zk.delete(path, recursive=True)
        self._forget(topic)
        self._log.info("controller.topic_deleted", topic=topic)
        self._send_update_metadata(deleted=[topic])

    # --- requests to brokers ------------------------------------------------------------

    def _all_partitions(self) -> list[TP]:
        return [(t, p) for t, parts in self.assignments.items() for p in parts]

    def _partitions_of(self, broker_id: int) -> list[TP]:
        return [
            (t, p)
            for t, parts in self.assignments.items()
            if t not in self.deleting
            for p, replicas in parts.items()
            if broker_id in replicas
        ]

    def _by_replica(self, tps: Iterable[TP]) -> dict[int, list[TP]]:
        """``tps`` by the brokers holding a replica of each (topics being deleted left
        out): one pass over them, where a pass over every partition per broker made each
        event cost the size of the cluster."""
        held: dict[int, list[TP]] = {}
        for tp in tps:
            replicas = self.assignments.get(tp[0], {}).get(tp[1])
            if replicas is None or tp[0] in self.deleting:
                continue
            for broker_id in replicas:
                held.setdefault(broker_id, []).append(tp)
        return held

    def _send_leader_and_isr(self, broker_id: int, tps: list[TP]) -> None:
        if not tps or broker_id not in self._channels:
            return
        states = []
        leaders: set[int] = set()
        for tp in tps:
            entry = self.states.get(tp)
            if entry is None:
                continue
            s = entry.state
            leaders.add(s.leader)
            states.append(
                LeaderAndIsrPartitionState(
                    topic_name=tp[0],
                    partition_index=tp[1],
                    controller_epoch=s.controller_epoch,
                    leader=s.leader,
                    leader_epoch=s.leader_epoch,
                    isr=list(s.isr),
                    partition_epoch=entry.version,
                    replicas=list(self.assignments[tp[0]][tp[1]]),
                )
            )
        live_leaders = [
            LeaderAndIsrLiveLeader(broker_id=b, host_name=r.host, port=r.port)
            for b, r in sorted(self.brokers.items())
            if b in leaders
        ]
        request = LeaderAndIsrRequest(
            controller_id=self.broker_id,
            controller_epoch=self.epoch,
            partition_states=states,
            live_leaders=live_leaders,
            topic_ids=self._ids_of(states),
        )
        channel = self._channels[broker_id]
        answer = channel.send(ApiKey.LEADER_AND_ISR, request)
        epoch = channel.broker_epoch
        answer.add_done_callback(lambda done: self._leader_and_isr_answered(broker_id, epoch, done))

    def _leader_and_isr_answered(
        self, broker_id: int, broker_epoch: int, done: asyncio.Future[Any]
    ) -> None:
        """Kafka's LeaderAndIsrResponseReceived: the partitions a broker answers with
        KAFKA_STORAGE_ERROR have their log offline there (a disk error), and those it
        answers INCONSISTENT_TOPIC_ID have there a log of a deleted topic of the same name
        (KIP-516), which it does not host; both are handed to other replicas by an event
        of their own."""
        if done.cancelled() or done.exception() is not None:
            return
        response = done.result()
        if not isinstance(response, LeaderAndIsrResponse):
            return
        failed = tuple(
            sorted(
                (e.topic_name, e.partition_index)
                for e in response.partition_errors
                if e.error_code in _OFFLINE_CODES
            )
        )

        def settled(tp: TP) -> bool:  # marked, and neither leading nor in the ISR
            entry = self.states.get(tp)
            return broker_id in self.offline_replicas.get(tp, ()) and (
                entry is None or broker_id not in (entry.state.leader, *entry.state.isr)
            )

        if not all(settled(tp) for tp in failed):
            self._enqueue("replicas_offline", (broker_id, broker_epoch, failed))
        healed = tuple(
            sorted(
                (e.topic_name, e.partition_index)
                for e in response.partition_errors
                if e.error_code == 0
                and broker_id in self.offline_replicas.get((e.topic_name, e.partition_index), ())
            )
        )
        if healed:  # (Kafka's: an answer without the error is an online replica again)
            self._enqueue("replicas_online", (broker_id, broker_epoch, healed))

    def _registered_as(self, broker_id: int, broker_epoch: int) -> bool:
        """Whether ``broker_id`` is registered still with ``broker_epoch``: an answer from
        a broker's earlier process (it restarted since) says nothing of the new one."""
        reg = self.brokers.get(broker_id)
        return reg is not None and reg.epoch == broker_epoch

    async def _replicas_offline(self, arg: tuple[int, int, tuple[TP, ...]]) -> None:
        """``broker_id``'s replicas of ``tps`` are offline: leaders elsewhere, out of the
        ISR (KIP-112: a failed disk costs its partitions' leadership only a moment)."""
        broker_id, broker_epoch, tps = arg
        if not self._registered_as(broker_id, broker_epoch):
            return  # gone or restarted since: its registration's change handled it
        offline = [
            tp for tp in tps if tp in self.states and broker_id in self.assignments[tp[0]][tp[1]]
        ]
        new = [tp for tp in offline if broker_id not in self.offline_replicas.get(tp, ())]
        for tp in new:
            self.offline_replicas.setdefault(tp, set()).add(broker_id)
        if new:
            self._log.warning(
                "controller.replicas_offline",
                broker=broker_id,
                partitions=[{"topic": t, "partition": p} for t, p in new],
            )
        # all of them, not only the new: a rerun (after a ZooKeeper error) finds them
        # marked already, and their elections still to make (a no-op where made)
        changed = await self._elect(offline)
        self._tell_replicas(changed)
        self._send_update_metadata(set(offline) | changed)

    async def _replicas_online(self, arg: tuple[int, int, tuple[TP, ...]]) -> None:
        """``broker_id`` answered for ``tps`` without KAFKA_STORAGE_ERROR: their replicas
        there count again (a leaderless partition may get it as leader)."""
        broker_id, broker_epoch, tps = arg
        if not self._registered_as(broker_id, broker_epoch):
            return
        back = [tp for tp in tps if broker_id in self.offline_replicas.get(tp, ())]
        for tp in back:
            self.offline_replicas[tp].discard(broker_id)
            if not self.offline_replicas[tp]:
                del self.offline_replicas[tp]
        if back:
            changed = await self._elect(back)
            self._tell_replicas(changed)
            self._send_update_metadata(set(back) | changed)

    async def _log_dir_events(self, _: object) -> None:
        """A broker said a log of its went offline: it is sent LeaderAndIsr for every
        partition it hosts, and its answer names the offline ones (Kafka's
        LogDirEventNotification, then _leader_and_isr_answered)."""
        names, brokers = await self._notes(
            paths.LOG_DIR_EVENTS, "log_dir_events", log_dir_event_from_json
        )
        for broker_id in sorted(set(brokers) & self.brokers.keys()):
            self._send_leader_and_isr(broker_id, self._partitions_of(broker_id))
        await self._drop_notes(paths.LOG_DIR_EVENTS, names)

    def _send_update_metadata(
        self,
        tps: Iterable[TP] = (),
        *,
        deleted: Iterable[str] = (),
        full_to: Collection[int] = (),
    ) -> None:
        """Tell every live broker what changed: the states of ``tps`` and the topics
        ``deleted``, which it merges into its picture. The brokers in ``full_to`` (every
        broker when a controller starts, a broker joining) get the whole picture instead.

        As Kafka's controller: re-sending every partition on every leader or ISR change
        cost 6 ms per broker to encode on the controller and 10 ms to decode on each broker
        at 2,100 partitions, and every change paid it."""
        states = [self._metadata_state(tp) for tp in tps if tp in self.states]
        incremental = UpdateMetadataRequest(
            controller_id=self.broker_id,
            controller_epoch=self.epoch,
            type=UPDATE_METADATA_INCREMENTAL,
            partition_states=states,
            live_brokers=self._live_brokers(),
            deleted_topics=sorted(deleted),
            topic_ids=self._ids_of(states),
        )
        full = self._full_metadata() if full_to else None
        for broker_id, channel in self._channels.items():
            request = full if full is not None and broker_id in full_to else incremental
            channel.send(ApiKey.UPDATE_METADATA, request)

    def _full_metadata(self) -> UpdateMetadataRequest:
        """The whole picture (it replaces a broker's): every partition, every live broker."""
        states = [self._metadata_state(tp) for tp in self.states]
        return UpdateMetadataRequest(
            controller_id=self.broker_id,
            controller_epoch=self.epoch,
            type=UPDATE_METADATA_FULL,
            partition_states=states,
            live_brokers=self._live_brokers(),
            topic_ids=self._ids_of(states),
        )

    def _ids_of(
        self, states: Iterable[UpdateMetadataPartitionState | LeaderAndIsrPartitionState]
    ) -> dict[str, bytes]:
        names = {s.topic_name for s in states}
        return {t: i for t in sorted(names) if (i := self.topic_ids.get(t)) is not None}

    def _metadata_state(self, tp: TP) -> UpdateMetadataPartitionState:
        topic, partition = tp
        entry = self.states[tp]
        s = entry.state
        replicas = self.assignments[topic][partition]
        return UpdateMetadataPartitionState(
            topic_name=topic,
            partition_index=partition,
            controller_epoch=s.controller_epoch,
            leader=LEADER_DURING_DELETE if topic in self.deleting else s.leader,
            leader_epoch=s.leader_epoch,
            isr=list(s.isr),
            zk_version=entry.version,
            replicas=list(replicas),
            offline_replicas=[
                r
                for r in replicas
                if r not in self.brokers or r in self.offline_replicas.get(tp, ())
            ],
        )

    def _live_brokers(self) -> list[UpdateMetadataBroker]:
        return [
            UpdateMetadataBroker(
                id=b,
                host=r.host,
                port=r.port,
                rack=r.rack,
                endpoints=[
                    UpdateMetadataEndpoint(
                        listener=name, host=host, port=port, security_protocol=protocol
                    )
                    for name, host, port, protocol in r.listeners()
                ],
            )
            for b, r in sorted(self.brokers.items())
        ]


def _without(
    current: PartitionState,
    dropped: Iterable[int],
    replicas: Collection[int],
    usable: set[int],
    controller_epoch: int,
) -> PartitionState:
    """``current`` at the next leader epoch with the ``dropped`` replicas out of the ISR,
    and out of the lead: a dropped leader hands it to the first in-sync replica left,
    else the partition is offline with its ISR kept, as when its last in-sync broker
    dies (the leader must come from the ISR)."""
    gone = set(dropped)
    isr = [r for r in current.isr if r not in gone]
    leader = current.leader
    if not isr:  # (refused before: see _drops_the_last) the ISR stays as it is
        isr = list(current.isr)
    if leader in gone:
        leader = next((r for r in replicas if r in isr and r in usable), -1)
    return PartitionState(
        leader=leader,
        leader_epoch=current.leader_epoch + 1,
        isr=isr,
        controller_epoch=controller_epoch,
    )


def _address(reg: BrokerRegistration, listener: str) -> tuple[str, int]:
    """Where to reach a registered broker on ``listener``; its registered (inter-broker)
    address if it has no listener of that name."""
    for name, host, port, _ in reg.listeners():
        if name == listener:
            return host, port
    return reg.host, reg.port


def _drops_the_last(current: PartitionState, gone: Iterable[int], usable: set[int]) -> str | None:
    """Why dropping ``gone`` at once would lose the partition: no in-sync replica left
    (they hold every acked record), or none alive to lead when the leader goes."""
    dropped = set(gone)
    left = [r for r in current.isr if r not in dropped]
    if dropped and current.isr and not left:
        isr = ", ".join(map(str, current.isr))
        plural = "s" if len(current.isr) > 1 else ""
        return (
            f"this would drop {isr}, the only in-sync replica{plural}; keep one in the "
            "list, or wait until others are in sync"
        )
    if current.leader in dropped and left and not any(r in usable for r in left):
        return (
            f"this would drop the leader {current.leader}, and no other in-sync replica is "
            "alive to lead; wait until one is"
        )
    return None


def _by_topic(moves: dict[TP, _V]) -> dict[str, dict[int, _V]]:
    out: dict[str, dict[int, _V]] = {}
    for (topic, p), move in moves.items():
        out.setdefault(topic, {})[p] = move
    return out


def _worst(errors: list[ZkError]) -> ZkError:
    """Of the ways a batch of writes failed, the one the event loop must act on first:
    fenced (resign), then ZooKeeper failing (retry the event), then an answer."""
    for kind in (Fenced, ZkError):
        for error in errors:
            if isinstance(error, kind) and not isinstance(error, _ANSWERS):
                return error
    return errors[0]


async def _pipelined(tps: list[_K], one: Callable[[_K], Awaitable[bool]]) -> set[_K]:
    """``one(tp)`` for each of ``tps``, up to :data:`_PIPELINED` at a time (their ZooKeeper
    requests in flight together on the one session); those it returned True for. A
    failure is raised once the rest of its group has settled."""
    done: set[_K] = set()
    for start in range(0, len(tps), _PIPELINED):
        chunk = tps[start : start + _PIPELINED]
        outcomes = await asyncio.gather(*(one(tp) for tp in chunk), return_exceptions=True)
        done.update(tp for tp, outcome in zip(chunk, outcomes, strict=True) if outcome is True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    return done
