"""Share groups' deliveries on this broker (Kafka's KIP-932 SharePartitionManager): the share
sessions of the members that fetch here, each led partition's delivery state per group
(:class:`~broker.replica.share_partition.SharePartition`), ShareFetch and ShareAcknowledge.

A share session is a member's, per broker (Kafka's): ShareSessionEpoch 0 opens it with the
partitions it names (a session the member had is replaced), each next request carries
the next epoch (wrapping to 1), -1 closes it. Closing it, or the connection that opened it
closing, gives back what the member holds here (AVAILABLE again, that delivery not
counted). A member's acknowledgements ride on its fetches or come in ShareAcknowledge; a
partition's are applied all or none.

A fetch reads from where the group's delivery state says, takes whole batches as the state
allows (:meth:`SharePartition.acquire`), and answers those batches as they are in the
segment file (sent with ``sendfile``) with the ranges acquired: the client delivers only
those. Nothing to give parks the fetch until ``max_wait_ms``: a high watermark that moves,
a release, or an acquisition lock that ends tries it again.

The delivery state is held in memory by the partition's leader; it is not yet stored (see
the README, Share groups): it starts again, at the high watermark, when the leader
changes or restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from broker.authorizer import Authorizer, group_not_authorized, topic_not_authorized
from broker.deferred import Deferred
from broker.log.log import FetchData
from broker.metadata import MetadataCache, id_of_unknown_name
from broker.replica.manager import ReplicaManager
from broker.replica.partition import Partition
from broker.replica.share_partition import (
    Acknowledgement,
    BatchBounds,
    SharePartition,
)
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    AcknowledgementBatch,
    AcquiredRecords,
    ShareAcknowledgePartitionData,
    ShareAcknowledgeRequest,
    ShareAcknowledgeResponse,
    ShareAcknowledgeTopicResponse,
    ShareFetchPartitionData,
    ShareFetchRequest,
    ShareFetchResponse,
    ShareFetchTopicResponse,
)
from protocol.errors import (
    ApiError,
    InvalidRecordStateError,
    InvalidRequestError,
    InvalidShareSessionEpochError,
    OffsetOutOfRangeError,
    ShareSessionLimitReachedError,
    ShareSessionNotFoundError,
    UnknownTopicIdError,
    UnsupportedVersionError,
)
from protocol.topic_partition import TopicPartition

__all__ = ["ShareManager"]

_CONTROL = 0x20  # a batch's attributes: a control batch (transaction markers)
_FINAL = -1  # the epoch that closes a session
_MAX_EPOCH = 2**31 - 1

OnClose = Callable[[Callable[[], None]], None]
"""Registers a callback run once when the connection being served closes."""


@dataclass(eq=False)
class _Session:
    group_id: str
    member_id: str
    epoch: int = 1
    """The epoch the next request must carry."""
    partitions: dict[TopicPartition, bytes] = field(default_factory=dict)
    """The session's partitions, with their topic ids, in the order they came."""
    parked: _Parked | None = None
    closed: bool = False


@dataclass(eq=False)
class _Parked:
    request: ShareFetchRequest
    session: _Session
    response: ShareFetchResponse
    deferred: Deferred[ShareFetchResponse]
    answers: dict[TopicPartition, ShareFetchPartitionData]
    timer: asyncio.TimerHandle | None = None


class ShareManager:
    """See the module docstring. ``auto_offset_reset(group)``: where a group starts on a
    partition it never read (Kafka's ``share.auto.offset.reset``: latest or earliest)."""

    def __init__(
        self,
        replicas: ReplicaManager,
        metadata: MetadataCache,
        authorizer: Authorizer | None = None,
        *,
        enabled: bool = True,
        lock_ms: int = 30_000,
        delivery_limit: int = 5,
        max_in_flight: int = 2000,
        max_sessions: int = 2000,
        auto_offset_reset: Callable[[str], str] = lambda group: "latest",
        on_close: Callable[[], OnClose | None] = lambda: None,
    ) -> None:
        self._replicas = replicas
        self._metadata = metadata
        self._acl = authorizer or Authorizer()
        self.enabled = enabled
        self.lock_ms = lock_ms
        self.delivery_limit = delivery_limit
        self.max_in_flight = max_in_flight
        self.max_sessions = max_sessions
        self._auto_offset_reset = auto_offset_reset
        self._on_close = on_close
        self.sessions: dict[tuple[str, str], _Session] = {}
        self.states: dict[tuple[str, TopicPartition], SharePartition] = {}
        self._groups_of: dict[TopicPartition, set[str]] = {}
        self._timers: dict[tuple[str, TopicPartition], asyncio.TimerHandle] = {}
        self._parked: dict[TopicPartition, dict[_Parked, None]] = {}
        self._retry: dict[_Parked, None] = {}
        self._log = structlog.get_logger("headwater.shares").bind(broker=replicas.broker_id)
        replicas.on_role_change(self._role_changed)
        replicas.on_readable(self._readable_moved)

    # --- the two requests -----------------------------------------------------------------

    def share_fetch(
        self, request: ShareFetchRequest
    ) -> ShareFetchResponse | Deferred[ShareFetchResponse]:
        """Acknowledgements first, then records: now if there are any (or nothing to wait
        for), else a Deferred answered when some come or ``max_wait_ms`` ends."""
        response = ShareFetchResponse(acquisition_lock_timeout_ms=self.lock_ms)
        try:
            group, member = self._check(request.group_id, request.member_id)
            has_acks = any(p.acknowledgement_batches for t in request.topics for p in t.partitions)
            epoch = request.share_session_epoch
            if epoch == 0 and has_acks:
                raise InvalidRequestError(
                    "a ShareFetch that opens a share session (epoch 0) carries no acknowledgements"
                )
            session = self._session_for(group, member, epoch)
        except ApiError as exc:
            response.error_code, response.error_message = exc.code, exc.message
            return response
        self._name_topics(request)
        answers: dict[TopicPartition, ShareFetchPartitionData] = {}
        for topic in request.topics:
            for p in topic.partitions:
                tp = TopicPartition(topic.topic, p.partition_index)
                if epoch != _FINAL:
                    session.partitions[tp] = topic.topic_id
                if p.acknowledgement_batches:
                    answer = answers.setdefault(
                        tp, ShareFetchPartitionData(partition_index=tp.partition)
                    )
                    error = self._acknowledge(session, tp, p.acknowledgement_batches)
                    if error is not None:
                        answer.acknowledge_error_code = error.code
                        answer.acknowledge_error_message = error.message
        for forgotten in request.forgotten_topics_data:
            for index in forgotten.partitions:
                session.partitions.pop(TopicPartition(forgotten.topic, index), None)
        if epoch == _FINAL:
            self._close(session)
            return _answered(response, answers, request, session)
        got = self._fetch(session, request, answers)
        if got or request.max_wait_ms <= 0 or not session.partitions:
            return _answered(response, answers, request, session)
        return self._park(session, request, response, answers)

    def share_acknowledge(self, request: ShareAcknowledgeRequest) -> ShareAcknowledgeResponse:
        """A member's acknowledgements outside a fetch; epoch -1 also closes its session."""
        response = ShareAcknowledgeResponse()
        try:
            group, member = self._check(request.group_id, request.member_id)
            if request.share_session_epoch == 0:
                raise InvalidShareSessionEpochError(
                    "ShareAcknowledge cannot open a share session (epoch 0): fetch first"
                )
            session = self._session_for(group, member, request.share_session_epoch)
        except ApiError as exc:
            response.error_code, response.error_message = exc.code, exc.message
            return response
        for topic in request.topics:
            name = self._metadata.fetchable.get(topic.topic_id)
            answer = ShareAcknowledgeTopicResponse(topic_id=topic.topic_id, topic=name or "")
            response.topics.append(answer)
            for p in topic.partitions:
                data = ShareAcknowledgePartitionData(partition_index=p.partition_index)
                answer.partitions.append(data)
                error: ApiError | None
                if name is None:
                    error = _unknown_id(topic.topic_id)
                else:
                    error = self._acknowledge(
                        session, TopicPartition(name, p.partition_index), p.acknowledgement_batches
                    )
                if error is not None:
                    data.error_code, data.error_message = error.code, error.message
        if request.share_session_epoch == _FINAL:
            self._close(session)
        return response

    # --- sessions --------------------------------------------------------------------------

    def _check(self, group_id: str | None, member_id: str | None) -> tuple[str, str]:
        if not self.enabled:
            raise UnsupportedVersionError(
                "share groups are off on this broker (group.share.enable=false)"
            )
        if not group_id:
            raise InvalidRequestError("a share fetch names its share group (group_id)")
        if not member_id:
            raise InvalidRequestError("a share fetch names its member (member_id)")
        if not self._acl.allowed(Operation.READ, ResourceType.GROUP, group_id):
            raise group_not_authorized(group_id, Operation.READ)
        return group_id, member_id

    def _session_for(self, group: str, member: str, epoch: int) -> _Session:
        """The member's session for a request of ``epoch`` (0: a new one), its epoch moved
        on; raises the request's session error."""
        key = (group, member)
        session = self.sessions.get(key)
        if epoch == 0:
            if session is None and len(self.sessions) >= self.max_sessions:
                raise ShareSessionLimitReachedError(
                    f"this broker holds {len(self.sessions)} share sessions "
                    "(group.share.max.share.sessions): try again later"
                )
            if session is not None:
                self._unpark(session)
                session.closed = True  # (replaced: what the member holds stays out)
            session = self.sessions[key] = _Session(group, member)
            register = self._on_close()
            if register is not None:
                register(lambda s=session: self._connection_closed(s))  # type: ignore[misc]
            return session
        if session is None:
            raise ShareSessionNotFoundError(
                f"member {member!r} of share group {group!r} has no share session on this "
                "broker: open one (epoch 0)"
            )
        if epoch == _FINAL:
            return session
        if epoch != session.epoch:
            raise InvalidShareSessionEpochError(
                f"share session epoch {epoch} is not the {session.epoch} expected: open a new "
                "session (epoch 0)"
            )
        session.epoch = 1 if session.epoch >= _MAX_EPOCH else session.epoch + 1
        return session

    def _connection_closed(self, session: _Session) -> None:
        if not session.closed:
            self._close(session)

    def _close(self, session: _Session) -> None:
        """The session ends: what its member holds here is released (Kafka's)."""
        session.closed = True
        self._unpark(session)
        if self.sessions.get((session.group_id, session.member_id)) is session:
            del self.sessions[(session.group_id, session.member_id)]
        for tp in session.partitions:
            state = self.states.get((session.group_id, tp))
            if state is not None and state.release(session.member_id):
                self._changed(session.group_id, tp)

    # --- acknowledgements ------------------------------------------------------------------

    def _acknowledge(
        self, session: _Session, tp: TopicPartition, batches: list[AcknowledgementBatch]
    ) -> ApiError | None:
        try:
            if not self._acl.allowed(Operation.READ, ResourceType.TOPIC, tp.topic):
                raise topic_not_authorized(tp.topic, Operation.READ)
            self._leader(tp)
            state = self.states.get((session.group_id, tp))
            if state is None:
                raise InvalidRecordStateError(
                    f"no records of {tp.topic}-{tp.partition} are out to share group "
                    f"{session.group_id!r} from this broker (its leader changed?)"
                )
            acks = [
                Acknowledgement(b.first_offset, b.last_offset, b.acknowledge_types) for b in batches
            ]
            state.acknowledge(session.member_id, acks, _now_ms(), self.lock_ms)
        except ApiError as exc:
            return exc
        self._changed(session.group_id, tp)
        return None

    # --- fetching --------------------------------------------------------------------------

    def _fetch(
        self,
        session: _Session,
        request: ShareFetchRequest,
        answers: dict[TopicPartition, ShareFetchPartitionData],
    ) -> bool:
        """Acquire for the session's member across its partitions (starting one further
        each epoch, so none is always last); whether anything was acquired or failed."""
        order = list(session.partitions)
        if order:
            shift = session.epoch % len(order)
            order = order[shift:] + order[:shift]
        budget = max(request.max_records, 1)
        room = max(request.max_bytes, 1)
        got = False
        for tp in order:
            if budget <= 0 or room <= 0:
                break
            answer = answers.get(tp) or ShareFetchPartitionData(partition_index=tp.partition)
            try:
                taken, data = self._acquire(session, tp, budget, room)
            except ApiError as exc:
                answer.error_code, answer.error_message = exc.code, exc.message
                answers[tp] = answer
                got = True
                continue
            if not taken or data is None:
                continue
            answer.acquired_records = [
                AcquiredRecords(
                    first_offset=a.first_offset,
                    last_offset=a.last_offset,
                    delivery_count=a.delivery_count,
                )
                for a in taken
            ]
            answer.records = data.region()
            answers[tp] = answer
            budget -= sum(a.last_offset - a.first_offset + 1 for a in taken)
            room -= data.size
            got = True
        return got

    def _acquire(
        self, session: _Session, tp: TopicPartition, budget: int, room: int
    ) -> tuple[list[Any], FetchData | None]:
        if not self._acl.allowed(Operation.READ, ResourceType.TOPIC, tp.topic):
            raise topic_not_authorized(tp.topic, Operation.READ)
        partition = self._leader(tp)
        state = self._state(session.group_id, tp, partition)
        if not state.can_acquire():
            return [], None
        offset = state.next_fetch_offset()
        log = partition.log
        try:
            data = log.read(offset, room, max_offset=partition.high_watermark)
        except OffsetOutOfRangeError:
            if offset >= log.log_start_offset:
                raise
            state.log_start_moved(log.log_start_offset)  # retention or DeleteRecords
            offset = state.next_fetch_offset()
            data = log.read(offset, room, max_offset=partition.high_watermark)
        if data is None:
            return [], None
        headers = list(data.segment.headers(data.position, data.position + data.size))
        bounds = [
            BatchBounds(h.base_offset, h.last_offset, bool(h.attributes & _CONTROL))
            for h in headers
        ]
        taken = state.acquire(
            session.member_id, bounds, budget, _now_ms(), self.lock_ms, read_from=offset
        )
        self._changed(session.group_id, tp, wake=False)
        if not taken:
            return [], None
        first, last = taken[0].first_offset, taken[-1].last_offset
        used = [h for h in headers if h.last_offset >= first and h.base_offset <= last]
        start, end = used[0].position, used[-1].end
        return taken, FetchData(data.segment, start, end - start, used[0].base_offset)

    def _state(self, group: str, tp: TopicPartition, partition: Partition) -> SharePartition:
        key = (group, tp)
        state = self.states.get(key)
        if state is None:
            reset = self._auto_offset_reset(group)
            start = (
                partition.log.log_start_offset if reset == "earliest" else partition.high_watermark
            )
            state = self.states[key] = SharePartition(
                start, delivery_limit=self.delivery_limit, max_in_flight=self.max_in_flight
            )
            self._groups_of.setdefault(tp, set()).add(group)
            self._log.info(
                "share.partition_started",
                group=group,
                topic=tp.topic,
                partition=tp.partition,
                start_offset=start,
                auto_offset_reset=reset,
            )
        return state

    def _leader(self, tp: TopicPartition) -> Partition:
        unknown = id_of_unknown_name(tp.topic)
        if unknown is not None:
            raise _unknown_id(unknown)
        return self._replicas.leader_partition(tp.topic, tp.partition)

    def _name_topics(self, request: ShareFetchRequest) -> None:
        """Each topic named from its id; an unknown id by a name no topic has (answered
        UNKNOWN_TOPIC_ID, see :meth:`_leader`)."""
        for topic in request.topics:
            topic.topic = self._metadata.fetch_name(topic.topic_id)
        for forgotten in request.forgotten_topics_data:
            forgotten.topic = self._metadata.fetch_name(forgotten.topic_id)

    # --- waiting -----------------------------------------------------------------------------

    def _park(
        self,
        session: _Session,
        request: ShareFetchRequest,
        response: ShareFetchResponse,
        answers: dict[TopicPartition, ShareFetchPartitionData],
    ) -> Deferred[ShareFetchResponse]:
        parked = _Parked(
            request, session, response, Deferred(lambda: self._unpark(session)), answers
        )
        parked.timer = asyncio.get_running_loop().call_later(
            request.max_wait_ms / 1000, self._expire_parked, parked
        )
        session.parked = parked
        for tp in session.partitions:
            self._parked.setdefault(tp, {})[parked] = None
        return parked.deferred

    def _unpark(self, session: _Session) -> None:
        parked = session.parked
        if parked is None:
            return
        session.parked = None
        if parked.timer is not None:
            parked.timer.cancel()
            parked.timer = None
        self._retry.pop(parked, None)
        for tp in session.partitions:
            waiting = self._parked.get(tp)
            if waiting is not None:
                waiting.pop(parked, None)
                if not waiting:
                    del self._parked[tp]

    def _expire_parked(self, parked: _Parked) -> None:
        parked.timer = None
        self._try(parked, last=True)

    def _try(self, parked: _Parked, *, last: bool = False) -> None:
        session = parked.session
        if session.parked is not parked or parked.deferred.done:
            return
        answers = parked.answers
        try:
            got = self._fetch(session, parked.request, answers)
        except Exception as exc:  # never into the event that woke it
            self._unpark(session)
            parked.deferred.fail(exc)
            return
        if got or last:
            self._unpark(session)
            parked.deferred.resolve(_answered(parked.response, answers, parked.request, session))

    def _wake(self, tp: TopicPartition) -> None:
        """Parked fetches holding ``tp`` try again once the event that woke them is done."""
        waiting = self._parked.get(tp)
        if not waiting:
            return
        if not self._retry:
            asyncio.get_running_loop().call_soon(self._retry_woken)
        self._retry.update(dict.fromkeys(waiting))

    def _retry_woken(self) -> None:
        woken, self._retry = list(self._retry), {}
        for parked in woken:
            self._try(parked)

    def _readable_moved(self, tp: TopicPartition) -> None:
        """The replica manager: ``tp``'s readable end moved (or its role changed)."""
        self._wake(tp)

    # --- acquisition locks, roles ---------------------------------------------------------

    def _changed(self, group: str, tp: TopicPartition, *, wake: bool = True) -> None:
        """``group``'s state of ``tp`` changed: its lock timer follows the next deadline,
        and (records may be AVAILABLE again) parked fetches look again."""
        key = (group, tp)
        state = self.states.get(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if state is not None:
            deadline = state.next_deadline()
            if deadline is not None:
                delay = max(deadline - _now_ms(), 0) / 1000
                self._timers[key] = asyncio.get_running_loop().call_later(
                    delay, self._locks_ended, key
                )
        if wake:
            self._wake(tp)

    def _locks_ended(self, key: tuple[str, TopicPartition]) -> None:
        self._timers.pop(key, None)
        state = self.states.get(key)
        if state is None:
            return
        if state.expire(_now_ms()):
            self._log.info(
                "share.locks_ended", group=key[0], topic=key[1].topic, partition=key[1].partition
            )
        self._changed(*key)

    def _role_changed(self, tp: TopicPartition, partition: Partition | None) -> None:
        """No longer the leader of ``tp``: the delivery states of it go (they are not
        stored yet: see the module docstring); a parked fetch answers what it has."""
        if partition is not None and partition.is_leader:
            return
        for group in self._groups_of.pop(tp, set()):
            self.states.pop((group, tp), None)
            timer = self._timers.pop((group, tp), None)
            if timer is not None:
                timer.cancel()
        self._wake(tp)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for session in list(self.sessions.values()):
            self._unpark(session)


def _answered(
    response: ShareFetchResponse,
    answers: dict[TopicPartition, ShareFetchPartitionData],
    request: ShareFetchRequest,
    session: _Session,
) -> ShareFetchResponse:
    """The answers by topic, each named by the id the member knows it by (the request's,
    or its session's: a request after the first names only what it adds)."""
    ids = {tp.topic: topic_id for tp, topic_id in session.partitions.items()}
    ids.update((t.topic, t.topic_id) for t in request.topics)
    by_topic: dict[str, ShareFetchTopicResponse] = {}
    for tp, answer in answers.items():
        topic = by_topic.get(tp.topic)
        if topic is None:
            topic_id = ids.get(tp.topic) or id_of_unknown_name(tp.topic) or bytes(16)
            topic = by_topic[tp.topic] = ShareFetchTopicResponse(topic_id=topic_id, topic=tp.topic)
            response.topics.append(topic)
        topic.partitions.append(answer)
    return response


def _unknown_id(topic_id: bytes) -> ApiError:
    return UnknownTopicIdError(
        f"topic id {topic_id.hex()} names no topic on this broker: refresh metadata and retry"
    )


def _now_ms() -> int:
    return int(asyncio.get_running_loop().time() * 1000)
