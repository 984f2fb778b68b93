"""Fetch sessions, the broker's side (Kafka's FetchSessionCache, KIP-227).

A session remembers, per fetcher, the partitions it fetches (position, leader epoch, size
limit) and what it was last told of each (high watermark, log start). An incremental
request then carries only the partitions whose position changed, and the answer only the
partitions with records, a moved high watermark or log start, or an error. Without
sessions a follower of 1,000 idle partitions sent and read all of them on every round
trip: milliseconds each way, and an acks=all write waits for two rounds.

The epochs make a lost or repeated request visible: each request names the epoch the
session expects next, and a mismatch is INVALID_FETCH_SESSION_EPOCH (the fetcher starts
over with a full request, as after FETCH_SESSION_ID_NOT_FOUND).

The leader does not look at every partition of a session on every fetch either: only at
those the request names, those an event marked since (an append, a high watermark move,
a role change: :meth:`FetchSessionCache.mark`, from the same calls that wake parked
fetches), those that answered an error last time, and the ones a read cut short. The
others are swept (:class:`~broker.replica.sweep.Sweep`): each fetch also looks at its
share of them, so every one is looked at about once per ``sweep_ms`` (a quarter of
replica.lag.time.max.ms). That refreshes the follower's caught-up time of idle
partitions (the ISR) and catches what no event marks (a log start moved by retention).

A Kafka client's Fetch v13+ names topics by id (KIP-516); its handler names each by
:meth:`~broker.metadata.MetadataCache.fetch_name`, and a session holds such partitions
under those names, with their ids. When an id's name changes (a topic this broker learns
of after the session took it, one deleted, or made again under a new id) the sessions
holding it are renamed (:meth:`FetchSessionCache.rename`), so an unchanged partition the
fetcher no longer names is read, or answered unknown, by the id it was asked by.

At most ``max.incremental.fetch.session.cache.slots`` sessions are kept. A new one takes
the place of the one unused longest if that one has been idle for
:data:`EVICTION_MS`, or of a consumer's if a follower asks (followers' sessions carry
replication); otherwise the fetcher goes on without a session (answered with session id
0), as in Kafka.

Used from the event loop thread only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

from broker.log.manager import TopicPartition
from broker.metrics import Counter
from broker.replica.sweep import Sweep
from protocol.apis import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    FetchPartition,
    FetchRequest,
)
from protocol.errors import (
    FetchSessionIdNotFoundError,
    FetchSessionTopicIdError,
    InvalidFetchSessionEpochError,
)
from protocol.topic_id import ZERO_TOPIC_ID

__all__ = ["EVICTION_MS", "FetchContext", "FetchSessionCache", "SessionPartition"]

EVICTION_MS = 120_000
"""Kafka's min.incremental.fetch.session.eviction.ms."""
_MAX_EPOCH = 2**31 - 1


def _everything(_topic: str) -> bool:
    return True


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class SessionPartition:
    """One partition of a fetch: what the fetcher asks for, and (in a session) what it
    was last told."""

    __slots__ = (
        "current_leader_epoch",
        "fetch_offset",
        "index",
        "last_fetched_epoch",
        "log_start_offset",
        "max_bytes",
        "sent_high_watermark",
        "sent_log_start_offset",
        "topic",
        "topic_id",
        "tp",
    )

    def __init__(
        self,
        topic: str,
        index: int,
        fetch_offset: int,
        current_leader_epoch: int,
        max_bytes: int,
        *,
        last_fetched_epoch: int = -1,
        log_start_offset: int = -1,
        topic_id: bytes = ZERO_TOPIC_ID,
    ) -> None:
        self.topic = topic
        self.index = index
        self.tp = TopicPartition(topic, index)
        self.topic_id = topic_id
        """The id it was asked by (Kafka's Fetch v13+); zero if by name. ``topic`` is the
        name this broker gives that id."""
        self.fetch_offset = fetch_offset
        self.current_leader_epoch = current_leader_epoch
        self.max_bytes = max_bytes
        self.last_fetched_epoch = last_fetched_epoch
        self.log_start_offset = log_start_offset
        """A follower's own log start offset (-1 from a consumer): DeleteRecords waits
        for the followers' to pass the offset it deleted below."""
        self.sent_high_watermark = -2  # never sent: the first answer includes it
        self.sent_log_start_offset = -2


class FetchSession:
    __slots__ = (
        "by_id",
        "dirty",
        "epoch",
        "errored",
        "id",
        "ids",
        "parked",
        "partitions",
        "replica_id",
        "sweep",
        "used_ms",
    )

    def __init__(
        self, session_id: int, replica_id: int, now_ms: int, sweep_ms: int, *, by_id: bool
    ) -> None:
        self.id = session_id
        self.replica_id = replica_id
        self.epoch = 1  # the epoch its next request must carry
        self.partitions: dict[TopicPartition, SessionPartition] = {}
        """In the order they are read: those that brought records go last (no partition
        starves another of the response's max_bytes)."""
        self.dirty: set[TopicPartition] = set()
        """Marked by an event since its last fetch looked: they may have news."""
        self.errored: set[TopicPartition] = set()
        """Answered with an error last time: asked about again until they are not."""
        self.parked: object | None = None
        """Its fetch waiting at the broker (the ReplicaManager's), woken by a mark."""
        self.used_ms = now_ms
        self.sweep: Sweep[TopicPartition] = Sweep(sweep_ms, now_ms)
        """Each fetch also looks at its share of the partitions no event marked."""
        self.by_id = by_id
        """Made by a request naming topics by id (Kafka's Fetch v13+): only such requests
        carry it on (Kafka's FETCH_SESSION_TOPIC_ID_ERROR otherwise)."""
        self.ids: dict[bytes, dict[int, SessionPartition]] = {}
        """The partitions held by topic id (none if by name), by id and index."""

    @property
    def follower(self) -> bool:
        return self.replica_id >= 0


class FetchContext:
    """How one Fetch is read and answered: the partitions to look at, and whether those
    with nothing new are left out of the answer (an incremental request).

    A read notes what it found (:meth:`begin`, :meth:`answered`, :meth:`errored`,
    :meth:`unfinished`); :meth:`commit` hands that to the session once the answer goes
    out (a read whose answer is not sent, as a parked fetch's, leaves no trace).
    """

    __slots__ = (
        "_answered",
        "_errored",
        "_unfinished",
        "incremental",
        "partitions",
        "readable",
        "session",
        "session_id",
    )

    def __init__(
        self,
        partitions: list[SessionPartition],
        session: FetchSession | None,
        *,
        incremental: bool,
    ) -> None:
        self.partitions = partitions
        self.session = session
        self.session_id = session.id if session is not None else INVALID_SESSION_ID
        self.incremental = incremental
        self.readable: Callable[[str], bool] = _everything
        """Whether the fetch may read a topic (its ACLs, decided for the connection that
        asked, whoever reads it again later)."""
        self._answered: list[tuple[SessionPartition, int, int, int]] = []
        self._errored: list[TopicPartition] = []
        self._unfinished: list[TopicPartition] = []

    def refresh(self) -> set[TopicPartition]:
        """Before a parked fetch reads again: add what was marked since; returns it."""
        session = self.session
        if session is None or not session.dirty:
            return set()
        looking = {sp.tp for sp in self.partitions}
        held = session.partitions
        for tp in session.dirty:
            sp = held.get(tp)
            if sp is not None and tp not in looking:
                self.partitions.append(sp)
        dirty, session.dirty = session.dirty, set()
        return dirty

    def sizes(self) -> dict[TopicPartition, int]:
        """The bytes the last read found, per partition it answered."""
        return {sp.tp: size for sp, _hw, _start, size in self._answered}

    def begin(self) -> None:
        self._answered, self._errored, self._unfinished = [], [], []

    def answered(
        self, sp: SessionPartition, high_watermark: int, log_start: int, size: int
    ) -> None:
        self._answered.append((sp, high_watermark, log_start, size))

    def errored(self, sp: SessionPartition) -> None:
        self._errored.append(sp.tp)

    def unfinished(self, sp: SessionPartition) -> None:
        """It has more to read than this answer took (the response's budget ran out)."""
        self._unfinished.append(sp.tp)

    def commit(self) -> None:
        """The answer went out: the session remembers what it told."""
        for sp, high_watermark, log_start, _moved in self._answered:
            sp.sent_high_watermark = high_watermark
            sp.sent_log_start_offset = log_start
        session = self.session
        if session is None:
            return
        partitions = session.partitions
        for sp, _hw, _start, size in self._answered:
            if size and partitions.get(sp.tp) is sp:  # to the back of the next budget
                del partitions[sp.tp]
                partitions[sp.tp] = sp
        session.errored.difference_update(sp.tp for sp in self.partitions)
        session.errored.update(self._errored)
        session.dirty.update(self._unfinished)
        # looked at again next time even if the fetcher does not name them: a fetcher
        # that dropped the records (its position moved meanwhile, a failed append) asks
        # from the same position, which a session does not repeat
        session.dirty.update(sp.tp for sp, _hw, _start, size in self._answered if size)


class FetchSessionCache:
    def __init__(
        self,
        max_slots: int,
        *,
        eviction_ms: int = EVICTION_MS,
        sweep_ms: int = 1_000,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.max_slots = max_slots
        self._eviction_ms = eviction_ms
        self._sweep_ms = sweep_ms
        self._clock = clock
        self.sessions: dict[int, FetchSession] = {}
        """By id, least recently used first."""
        self._holding: dict[TopicPartition, set[FetchSession]] = {}
        """The sessions each partition is in (for :meth:`mark`)."""
        self._id_holders: dict[bytes, set[FetchSession]] = {}
        """The sessions holding partitions of each topic id (for :meth:`rename`)."""
        self.evictions = Counter(
            "headwater_fetch_session_evictions_total",
            "Fetch sessions dropped to make room for new ones.",
        )

    def holds(self, tp: TopicPartition) -> bool:
        """Whether any session holds ``tp``."""
        return bool(self._holding.get(tp))

    def mark(self, tp: TopicPartition) -> list[FetchSession]:
        """Something changed for ``tp`` (records, high watermark, role): the sessions
        holding it look at it on their next read. Returns those with a parked fetch."""
        holding = self._holding.get(tp)
        if not holding:
            return []
        parked = []
        for session in holding:
            session.dirty.add(tp)
            if session.parked is not None:
                parked.append(session)
        return parked

    def context(self, request: FetchRequest, *, by_id: bool = False) -> FetchContext:
        """The context of ``request`` (``by_id``: its topics are named by id, Kafka's
        Fetch v13+): sessionless, a new session, or the next step of one. Raises
        FetchSessionIdNotFoundError, InvalidFetchSessionEpochError or
        FetchSessionTopicIdError (the fetcher then starts over with a full request)."""
        epoch = request.session_epoch
        if epoch in (FINAL_EPOCH, INITIAL_EPOCH):
            closing = self.sessions.get(request.session_id)
            if closing is not None and closing.replica_id == request.replica_id:
                self._remove(closing.id)  # the fetcher closes the session it had
            partitions = _partitions(request)
            session = None
            if epoch == INITIAL_EPOCH:
                session = self._create(request.replica_id, by_id)
                if session is not None:
                    for sp in partitions:
                        self._hold(session, sp)
            return FetchContext(partitions, session, incremental=False)
        session = self._continued(request, by_id)
        session.epoch = epoch + 1 if epoch < _MAX_EPOCH else 1
        now = session.used_ms = self._clock()
        del self.sessions[session.id]  # to the end: most recently used
        self.sessions[session.id] = session
        named = self._apply(session, request)
        held = session.partitions
        looking = [held[tp] for tp in named if tp in held]
        picked = named | session.dirty | session.errored
        for tp in picked - named:
            marked = held.get(tp)
            if marked is not None:
                looking.append(marked)
        session.dirty = set()
        for tp in session.sweep.take(held, now):
            swept = held.get(tp)
            if swept is not None and tp not in picked:
                looking.append(swept)
        return FetchContext(looking, session, incremental=True)

    def _continued(self, request: FetchRequest, by_id: bool) -> FetchSession:
        """The session an incremental request carries on, if it may."""
        session = self.sessions.get(request.session_id)
        if session is None or session.replica_id != request.replica_id:
            raise FetchSessionIdNotFoundError(
                f"fetch session {request.session_id} is not on this broker (evicted, or "
                f"the broker restarted): send a full fetch"
            )
        if request.session_epoch != session.epoch:
            raise InvalidFetchSessionEpochError(
                f"fetch session {session.id} expected epoch {session.epoch}, got "
                f"{request.session_epoch}: send a full fetch"
            )
        if by_id != session.by_id:  # (Kafka's Java client drops to v12 for a topic
            # without an id: its partitions held by id would be answered by names it
            # cannot match)
            raise FetchSessionTopicIdError(
                f"fetch session {session.id} names topics by "
                f"{'id' if session.by_id else 'name'} and this request by "
                f"{'id' if by_id else 'name'}: send a full fetch"
            )
        return session

    def rename(self, names: Mapping[bytes, str]) -> list[FetchSession]:
        """Each topic id of ``names`` now goes by that name (see the module's doc): the
        sessions' partitions held by those ids are held under it, and looked at on the
        next read (answered in full: records, or UNKNOWN_TOPIC_ID). Returns the sessions
        renamed that have a parked fetch."""
        moves: dict[FetchSession, list[tuple[SessionPartition, str]]] = {}
        for topic_id, name in names.items():
            for session in self._id_holders.get(topic_id, ()):
                moves.setdefault(session, []).extend(
                    (sp, name) for sp in session.ids[topic_id].values() if sp.topic != name
                )
        parked = []
        for session, moved in moves.items():
            held = session.partitions
            for sp, _name in moved:  # all out before any in: two ids may swap names
                if held.get(sp.tp) is sp:
                    del held[sp.tp]
                self._unhold_name(session, sp.tp)
                session.errored.discard(sp.tp)
                session.dirty.discard(sp.tp)
            for sp, name in moved:
                sp.topic = name
                sp.tp = TopicPartition(name, sp.index)
                sp.sent_high_watermark = sp.sent_log_start_offset = -2
                self._hold(session, sp)
                session.dirty.add(sp.tp)
            if moved and session.parked is not None:
                parked.append(session)
        return parked

    def _apply(self, session: FetchSession, request: FetchRequest) -> set[TopicPartition]:
        """An incremental request's changes (partitions dropped, added, moved on); returns
        the partitions it named."""
        held = session.partitions
        for forgotten in request.forgotten_topics_data:
            for index in forgotten.partitions:  # (by the name given its id, v13+)
                gone = held.pop(TopicPartition(forgotten.topic, index), None)
                if gone is not None:
                    self._release(session, gone)
                    session.errored.discard(gone.tp)
                    session.dirty.discard(gone.tp)
        named = set()
        for topic in request.topics:
            for p in topic.partitions:
                tp = TopicPartition(topic.topic, p.partition)
                named.add(tp)
                known = held.get(tp)
                if known is None:
                    self._hold(session, _asked(topic.topic, p, topic.topic_id))
                else:  # (by the same id: held under the name it has)
                    known.fetch_offset = p.fetch_offset
                    known.current_leader_epoch = p.current_leader_epoch
                    known.max_bytes = p.partition_max_bytes
                    known.last_fetched_epoch = p.last_fetched_epoch
                    known.log_start_offset = p.log_start_offset
                    # a named partition is answered in full: a fetcher that dropped an
                    # answer (re-added, a new epoch, a seek) still learns the high
                    # watermark and log start it missed (Kafka clears them the same way)
                    known.sent_high_watermark = known.sent_log_start_offset = -2
        return named

    def _hold(self, session: FetchSession, sp: SessionPartition) -> None:
        replaced = session.partitions.get(sp.tp)
        if replaced is not None and replaced is not sp:
            self._unhold_id(session, replaced)
        session.partitions[sp.tp] = sp
        self._holding.setdefault(sp.tp, set()).add(session)
        if sp.topic_id != ZERO_TOPIC_ID:
            session.ids.setdefault(sp.topic_id, {})[sp.index] = sp
            self._id_holders.setdefault(sp.topic_id, set()).add(session)

    def _release(self, session: FetchSession, sp: SessionPartition) -> None:
        self._unhold_name(session, sp.tp)
        self._unhold_id(session, sp)

    def _unhold_name(self, session: FetchSession, tp: TopicPartition) -> None:
        holding = self._holding.get(tp)
        if holding is not None:
            holding.discard(session)
            if not holding:
                del self._holding[tp]

    def _unhold_id(self, session: FetchSession, sp: SessionPartition) -> None:
        by_index = session.ids.get(sp.topic_id)
        if by_index is None or by_index.get(sp.index) is not sp:
            return
        del by_index[sp.index]
        if not by_index:
            del session.ids[sp.topic_id]
            holders = self._id_holders[sp.topic_id]
            holders.discard(session)
            if not holders:
                del self._id_holders[sp.topic_id]

    def _remove(self, session_id: int) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            for sp in session.partitions.values():
                self._release(session, sp)

    def _create(self, replica_id: int, by_id: bool) -> FetchSession | None:
        if self.max_slots <= 0:
            return None
        now = self._clock()
        if len(self.sessions) >= self.max_slots and not self._evict_one(replica_id >= 0, now):
            return None
        session_id = INVALID_SESSION_ID
        while session_id == INVALID_SESSION_ID or session_id in self.sessions:
            session_id = random.randint(1, _MAX_EPOCH)
        session = self.sessions[session_id] = FetchSession(
            session_id, replica_id, now, self._sweep_ms, by_id=by_id
        )
        return session

    def _evict_one(self, for_follower: bool, now: int) -> bool:
        """Make room: the least recently used idle session, else (for a follower) the
        least recently used consumer's."""
        victim = None
        for session in self.sessions.values():  # least recently used first
            if now - session.used_ms >= self._eviction_ms:
                victim = session
                break
        if victim is None and for_follower:
            victim = next((s for s in self.sessions.values() if not s.follower), None)
        if victim is None:
            return False
        self._remove(victim.id)
        self.evictions.inc()
        return True


def _partitions(request: FetchRequest) -> list[SessionPartition]:
    return [
        _asked(topic.topic, p, topic.topic_id) for topic in request.topics for p in topic.partitions
    ]


def _asked(topic: str, p: FetchPartition, topic_id: bytes) -> SessionPartition:
    return SessionPartition(
        topic,
        p.partition,
        p.fetch_offset,
        p.current_leader_epoch,
        p.partition_max_bytes,
        last_fetched_epoch=p.last_fetched_epoch,
        log_start_offset=p.log_start_offset,
        topic_id=topic_id,
    )
