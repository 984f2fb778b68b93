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
from collections.abc import Callable

from broker.log.manager import TopicPartition
from broker.metrics import Counter
from protocol.apis import FINAL_EPOCH, INITIAL_EPOCH, INVALID_SESSION_ID, FetchRequest
from protocol.errors import FetchSessionIdNotFoundError, InvalidFetchSessionEpochError

__all__ = ["EVICTION_MS", "FetchContext", "FetchSessionCache", "SessionPartition"]

EVICTION_MS = 120_000
"""Kafka's min.incremental.fetch.session.eviction.ms."""
_MAX_EPOCH = 2**31 - 1


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class SessionPartition:
    """One partition of a fetch: what the fetcher asks for, and (in a session) what it
    was last told."""

    __slots__ = (
        "current_leader_epoch",
        "fetch_offset",
        "index",
        "max_bytes",
        "sent_high_watermark",
        "sent_log_start_offset",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        index: int,
        fetch_offset: int,
        current_leader_epoch: int,
        max_bytes: int,
    ) -> None:
        self.topic = topic
        self.index = index
        self.fetch_offset = fetch_offset
        self.current_leader_epoch = current_leader_epoch
        self.max_bytes = max_bytes
        self.sent_high_watermark = -2  # never sent: the first answer includes it
        self.sent_log_start_offset = -2


class FetchSession:
    __slots__ = ("epoch", "id", "partitions", "replica_id", "used_ms")

    def __init__(self, session_id: int, replica_id: int, now_ms: int) -> None:
        self.id = session_id
        self.replica_id = replica_id
        self.epoch = 1  # the epoch its next request must carry
        self.partitions: dict[TopicPartition, SessionPartition] = {}
        """In the order they are read: those that brought records go last (no partition
        starves another of the response's max_bytes)."""
        self.used_ms = now_ms

    @property
    def follower(self) -> bool:
        return self.replica_id >= 0


class FetchContext:
    """How one Fetch is read and answered: the partitions to consider, and whether
    unchanged ones are left out of the answer (an incremental request)."""

    __slots__ = ("incremental", "partitions", "session", "session_id")

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

    def sent(self, sent: list[tuple[SessionPartition, int, int, bool]]) -> None:
        """The answer went out with these (partition, high watermark, log start, whether
        it carried records): the session remembers them."""
        for sp, high_watermark, log_start, _moved in sent:
            sp.sent_high_watermark = high_watermark
            sp.sent_log_start_offset = log_start
        if self.session is not None:
            partitions = self.session.partitions
            for sp, _hw, _start, moved in sent:
                if moved:  # to the back: the others get the front of the next budget
                    tp = TopicPartition(sp.topic, sp.index)
                    if partitions.get(tp) is sp:
                        del partitions[tp]
                        partitions[tp] = sp


class FetchSessionCache:
    def __init__(
        self,
        max_slots: int,
        *,
        eviction_ms: int = EVICTION_MS,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.max_slots = max_slots
        self._eviction_ms = eviction_ms
        self._clock = clock
        self.sessions: dict[int, FetchSession] = {}
        """By id, least recently used first."""
        self.evictions = Counter(
            "headwater_fetch_session_evictions_total",
            "Fetch sessions dropped to make room for new ones.",
        )

    def context(self, request: FetchRequest) -> FetchContext:
        """The context of ``request``: sessionless, a new session, or the next step of one.
        Raises FetchSessionIdNotFoundError or InvalidFetchSessionEpochError (the fetcher
        then starts over with a full request)."""
        epoch = request.session_epoch
        if epoch in (FINAL_EPOCH, INITIAL_EPOCH):
            if request.session_id != INVALID_SESSION_ID:
                self.sessions.pop(request.session_id, None)  # the fetcher closes it
            partitions = _partitions(request)
            session = None
            if epoch == INITIAL_EPOCH:
                session = self._create(request.replica_id)
                if session is not None:
                    for sp in partitions:
                        session.partitions[TopicPartition(sp.topic, sp.index)] = sp
            return FetchContext(partitions, session, incremental=False)
        session = self.sessions.get(request.session_id)
        if session is None or session.replica_id != request.replica_id:
            raise FetchSessionIdNotFoundError(
                f"fetch session {request.session_id} is not on this broker (evicted, or "
                f"the broker restarted): send a full fetch"
            )
        if epoch != session.epoch:
            raise InvalidFetchSessionEpochError(
                f"fetch session {session.id} expected epoch {session.epoch}, got {epoch}: "
                f"send a full fetch"
            )
        session.epoch = epoch + 1 if epoch < _MAX_EPOCH else 1
        session.used_ms = self._clock()
        del self.sessions[session.id]  # to the end: most recently used
        self.sessions[session.id] = session
        _apply(session.partitions, request)
        return FetchContext(list(session.partitions.values()), session, incremental=True)

    def _create(self, replica_id: int) -> FetchSession | None:
        if self.max_slots <= 0:
            return None
        now = self._clock()
        if len(self.sessions) >= self.max_slots and not self._evict_one(replica_id >= 0, now):
            return None
        session_id = INVALID_SESSION_ID
        while session_id == INVALID_SESSION_ID or session_id in self.sessions:
            session_id = random.randint(1, _MAX_EPOCH)
        session = self.sessions[session_id] = FetchSession(session_id, replica_id, now)
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
        del self.sessions[victim.id]
        self.evictions.inc()
        return True


def _apply(held: dict[TopicPartition, SessionPartition], request: FetchRequest) -> None:
    """An incremental request's changes: partitions dropped, added, or moved on."""
    for forgotten in request.forgotten_topics_data:
        for index in forgotten.partitions:
            held.pop(TopicPartition(forgotten.topic, index), None)
    for topic in request.topics:
        for p in topic.partitions:
            tp = TopicPartition(topic.topic, p.partition)
            known = held.get(tp)
            if known is None:
                held[tp] = SessionPartition(
                    topic.topic,
                    p.partition,
                    p.fetch_offset,
                    p.current_leader_epoch,
                    p.partition_max_bytes,
                )
            else:
                known.fetch_offset = p.fetch_offset
                known.current_leader_epoch = p.current_leader_epoch
                known.max_bytes = p.partition_max_bytes


def _partitions(request: FetchRequest) -> list[SessionPartition]:
    return [
        SessionPartition(
            topic.topic, p.partition, p.fetch_offset, p.current_leader_epoch, p.partition_max_bytes
        )
        for topic in request.topics
        for p in topic.partitions
    ]
