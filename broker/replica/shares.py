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

The delivery state is stored at the group's coordinator (:class:`ShareStore`): read
before the partition's leader hands anything out, written whole before an acknowledgement
is answered, and in the background after a release or a lock that ended. Acquisitions are
not stored (Kafka's): after a leader change, what was out is delivered again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from broker.authorizer import Authorizer, group_not_authorized, topic_not_authorized
from broker.locks import KeyedLocks
from broker.log.log import FetchData
from broker.metadata import MetadataCache, id_of_unknown_name
from broker.replica.manager import ReplicaManager
from broker.replica.partition import Partition
from broker.replica.share_partition import (
    Acknowledgement,
    BatchBounds,
    SharePartition,
    StateBatch,
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
    CoordinatorNotAvailableError,
    FencedLeaderEpochError,
    InvalidRecordStateError,
    InvalidRequestError,
    InvalidShareSessionEpochError,
    NotLeaderOrFollowerError,
    OffsetOutOfRangeError,
    ShareSessionLimitReachedError,
    ShareSessionNotFoundError,
    UnknownTopicIdError,
    UnsupportedVersionError,
)
from protocol.records import BatchHeader
from protocol.share_state_log import StoredShareState
from protocol.topic_partition import TopicPartition

__all__ = ["ShareManager"]

_RESET = "share.auto.offset.reset"
_LOCK = "share.record.lock.duration.ms"
_READ_BYTES = 1 << 20
"""The most one partition's read takes (MaxRecords, 500 by default, is what a share fetch
is bounded by; a read of MaxBytes would pass over far more batches than it hands out)."""
_FINAL = -1  # the epoch that closes a session
_MAX_EPOCH = 2**31 - 1

OnClose = Callable[[Callable[[], None]], None]
"""Registers a callback run once when the connection being served closes."""


class ShareStore(Protocol):
    """Where the groups' delivery states are stored: each group's coordinator
    (:class:`broker.coordinator.share_state.ShareStateClient`). A read stores
    ``start`` when nothing is stored, and answers with the epoch the state was stored in
    before it (-1: none)."""

    async def read(
        self, group: str, topic_id: bytes, partition: int, leader_epoch: int, start: int
    ) -> StoredShareState: ...

    async def write(
        self, group: str, topic_id: bytes, partition: int, state: StoredShareState
    ) -> None: ...


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
    future: asyncio.Future[ShareFetchResponse]
    answers: dict[TopicPartition, ShareFetchPartitionData]
    tps: list[TopicPartition]
    """The partitions it waits on (the session's when it parked)."""
    timer: asyncio.TimerHandle | None = None


class GroupSettings(Protocol):
    """Groups' configs (:class:`broker.group_configs.GroupConfigs`)."""

    async def get(self, group: str) -> dict[str, str]: ...

    def value(self, group: str, name: str) -> str: ...


class ShareManager:
    """See the module docstring. ``group_configs``: each group's
    ``share.auto.offset.reset`` (where it starts on a partition it never read) and
    ``share.record.lock.duration.ms`` (None: the broker's, and latest)."""

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
        on_close: Callable[[], OnClose | None] = lambda: None,
        store: ShareStore | None = None,
        group_configs: GroupSettings | None = None,
    ) -> None:
        self._replicas = replicas
        self._metadata = metadata
        self._acl = authorizer or Authorizer()
        self.enabled = enabled
        self.lock_ms = lock_ms
        self.delivery_limit = delivery_limit
        self.max_in_flight = max_in_flight
        self.max_sessions = max_sessions
        self._configs = group_configs
        self._on_close = on_close
        self._store = store
        self.sessions: dict[tuple[str, str], _Session] = {}
        self._loading: dict[tuple[str, TopicPartition], asyncio.Task[None]] = {}
        self._load_errors: dict[tuple[str, TopicPartition], ApiError] = {}
        self._epochs: dict[tuple[str, TopicPartition], int] = {}
        """The leader epoch each state was read in (stored in, with writes)."""
        self._writes: KeyedLocks[tuple[str, TopicPartition]] = KeyedLocks()
        self._background: set[asyncio.Task[None]] = set()
        self.states: dict[tuple[str, TopicPartition], SharePartition] = {}
        self._groups_of: dict[TopicPartition, set[str]] = {}
        self._timers: dict[tuple[str, TopicPartition], asyncio.TimerHandle] = {}
        self._parked: dict[TopicPartition, dict[_Parked, None]] = {}
        self._retry: dict[_Parked, None] = {}
        self._log = structlog.get_logger("headwater.shares").bind(broker=replicas.broker_id)
        replicas.on_role_change(self._role_changed)
        replicas.on_readable(self._readable_moved)

    # --- the two requests -----------------------------------------------------------------

    async def share_fetch(self, request: ShareFetchRequest) -> ShareFetchResponse:
        """Acknowledgements first (each answered once it is stored), then records: at
        once if there are any (or nothing to wait for), else when some come or
        ``max_wait_ms`` ends."""
        response = ShareFetchResponse(acquisition_lock_timeout_ms=self.lock_ms)
        try:
            group, member = self._check(request.group_id, request.member_id)
            response.acquisition_lock_timeout_ms = self.lock_ms_of(group)
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
        acked = self._session_changes(session, request, answers)
        for tp, error in zip(acked, await self._persist_all(group, acked), strict=True):
            if error is not None:
                answers[tp].acknowledge_error_code = error.code
                answers[tp].acknowledge_error_message = error.message
        if epoch == _FINAL:
            self._close(session)
            return _answered(response, answers, request, session)
        if session.closed or request.max_records <= 0 or request.max_bytes <= 0:
            # replaced, or its connection closed, while the acks were stored; or a fetch
            # that only acknowledges (librdkafka's MaxRecords 0): answered now
            return _answered(response, answers, request, session)
        got = self._fetch(session, request, answers)
        if got or request.max_wait_ms <= 0 or not session.partitions:
            return _answered(response, answers, request, session)
        waiting = self._park(session, request, response, answers)
        try:
            return await waiting
        finally:
            if session.parked is not None and session.parked.future is waiting:
                self._unpark(session)  # (the request went: its connection closed)

    def _session_changes(
        self,
        session: _Session,
        request: ShareFetchRequest,
        answers: dict[TopicPartition, ShareFetchPartitionData],
    ) -> list[TopicPartition]:
        """The request's partitions added to the session (its forgotten ones out), and
        its acknowledgements applied; the partitions whose acknowledgements were taken."""
        acked: list[TopicPartition] = []
        for topic in request.topics:
            for p in topic.partitions:
                tp = TopicPartition(topic.topic, p.partition_index)
                if request.share_session_epoch != _FINAL:
                    session.partitions[tp] = topic.topic_id
                if not p.acknowledgement_batches:
                    continue
                answer = answers.setdefault(
                    tp, ShareFetchPartitionData(partition_index=tp.partition)
                )
                error = self._acknowledge(session, tp, p.acknowledgement_batches)
                if error is None:
                    acked.append(tp)
                else:
                    answer.acknowledge_error_code = error.code
                    answer.acknowledge_error_message = error.message
        for forgotten in request.forgotten_topics_data:
            for index in forgotten.partitions:
                session.partitions.pop(TopicPartition(forgotten.topic, index), None)
        return acked

    async def share_acknowledge(self, request: ShareAcknowledgeRequest) -> ShareAcknowledgeResponse:
        """A member's acknowledgements outside a fetch, each answered once it is stored;
        epoch -1 also closes its session."""
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
        acked: list[tuple[TopicPartition, ShareAcknowledgePartitionData]] = []
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
                    tp = TopicPartition(name, p.partition_index)
                    error = self._acknowledge(session, tp, p.acknowledgement_batches)
                    if error is None:
                        acked.append((tp, data))
                if error is not None:
                    data.error_code, data.error_message = error.code, error.message
        stored = await self._persist_all(group, [tp for tp, _ in acked])
        for (_, data), error in zip(acked, stored, strict=True):
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
                self._persist_later(session.group_id, tp)
        if self._store is not None and not any(g == session.group_id for g, _ in self.sessions):
            self._forget_later(session.group_id)

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
            state.acknowledge(session.member_id, acks, _now_ms(), self.lock_ms_of(session.group_id))
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
        each epoch, so none is always last). Whether to answer now: something was
        acquired, or every partition failed (a partition that fails while others may yet
        give records waits with them, its error in the answer: Kafka's)."""
        order = list(session.partitions)
        if order:
            shift = session.epoch % len(order)
            order = order[shift:] + order[:shift]
        budget, room = request.max_records, request.max_bytes
        got = False
        failed = 0
        for tp in order:
            if budget <= 0 or room <= 0:
                break
            answer = answers.get(tp) or ShareFetchPartitionData(partition_index=tp.partition)
            try:
                taken, data = self._acquire(session, tp, budget, room, first=not got)
            except ApiError as exc:
                answer.error_code, answer.error_message = exc.code, exc.message
                answers[tp] = answer
                failed += 1
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
        return got or (failed > 0 and failed == len(order))

    def _acquire(
        self, session: _Session, tp: TopicPartition, budget: int, room: int, *, first: bool
    ) -> tuple[list[Any], FetchData | None]:
        """What ``tp`` gives the member: the ranges acquired and the batches holding them,
        at most ``_READ_BYTES`` (or ``room``). Batch headers are read only as far as the
        acquisition goes: a fetch of a few records costs a few batches, not its MaxBytes'
        worth. Only the first partition answered may go over ``room`` by a batch
        (KIP-74)."""
        if not self._acl.allowed(Operation.READ, ResourceType.TOPIC, tp.topic):
            raise topic_not_authorized(tp.topic, Operation.READ)
        partition = self._leader(tp)
        state = self._state(session.group_id, tp, partition)
        if state is None or not state.can_acquire():
            return [], None  # (being loaded: the load wakes the fetch)
        offset = state.next_fetch_offset()
        log = partition.log
        size = min(room, _READ_BYTES)
        end = partition.high_watermark
        try:  # (the batch holding it: where the walk below starts)
            data = log.read(offset, 1, max_offset=end)
        except OffsetOutOfRangeError:
            if offset >= log.log_start_offset:
                raise
            state.log_start_moved(log.log_start_offset)  # retention or DeleteRecords
            offset = state.next_fetch_offset()
            data = log.read(offset, 1, max_offset=end)
        if data is None:
            return [], None
        segment = data.segment
        seen: list[BatchHeader] = []

        def bounds() -> Iterator[BatchBounds]:
            """The batches from there, read one header at a time as the acquisition
            asks for them: up to the high watermark, ``size`` bytes (at least one batch
            for the first partition answered), the segment's end."""
            read = 0
            for h in segment.headers(data.position):
                if h.last_offset >= end or (read + h.size > size and (seen or not first)):
                    return
                read += h.size
                seen.append(h)
                yield BatchBounds(h.base_offset, h.last_offset, h.is_control)

        taken = state.acquire(
            session.member_id,
            bounds(),
            budget,
            _now_ms(),
            self.lock_ms_of(session.group_id),
            read_from=offset,
        )
        self._changed(session.group_id, tp, wake=False)
        if not taken:
            return [], None
        first_offset, last_offset = taken[0].first_offset, taken[-1].last_offset
        used = [h for h in seen if h.last_offset >= first_offset and h.base_offset <= last_offset]
        start, stop = used[0].position, used[-1].end
        return taken, FetchData(segment, start, stop - start, used[0].base_offset)

    def _state(self, group: str, tp: TopicPartition, partition: Partition) -> SharePartition | None:
        """The group's state of ``tp``; None while it is being read from the group's
        coordinator (a read is started if none is under way). A read that failed is
        said once, as this partition's error."""
        key = (group, tp)
        if key in self._loading:
            return None
        state = self.states.get(key)
        if state is not None:
            return state
        if self._store is None:
            return self._install(key, self._start(group, partition), (), partition.leader_epoch)
        failed = self._load_errors.pop(key, None)
        if failed is not None:
            raise failed
        self._start_load(key, partition)
        return None

    def _start_load(self, key: tuple[str, TopicPartition], partition: Partition) -> None:
        task = asyncio.get_running_loop().create_task(self._load(key, partition))
        self._loading[key] = task
        task.add_done_callback(functools.partial(self._loaded, key))

    def _loaded(self, key: tuple[str, TopicPartition], task: asyncio.Task[None]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and task.exception() is not None:  # a bug: the next fetch retries
            self._log.error(
                "share.load_failed", group=key[0], topic=key[1].topic, exc_info=task.exception()
            )
            self._wake(key[1])

    def _start(self, group: str, partition: Partition) -> int:
        """Where a group that never read the partition starts (share.auto.offset.reset)."""
        reset = "latest" if self._configs is None else self._configs.value(group, _RESET)
        if reset == "earliest":
            return partition.log.log_start_offset
        return partition.high_watermark

    def lock_ms_of(self, group: str) -> int:
        """How long the group's members hold what a fetch gives them."""
        if self._configs is None:
            return self.lock_ms
        return int(self._configs.value(group, _LOCK))

    def _install(
        self,
        key: tuple[str, TopicPartition],
        start: int,
        stored: tuple[Any, ...],
        epoch: int,
    ) -> SharePartition:
        group, tp = key
        self._epochs[key] = epoch
        state = self.states[key] = SharePartition(
            start,
            delivery_limit=self.delivery_limit,
            max_in_flight=self.max_in_flight,
            stored=[StateBatch(*b) for b in stored],
        )
        self._groups_of.setdefault(tp, set()).add(group)
        self._log.info(
            "share.partition_started",
            group=group,
            topic=tp.topic,
            partition=tp.partition,
            start_offset=state.start,
            stored_batches=len(stored),
        )
        return state

    async def _load(self, key: tuple[str, TopicPartition], partition: Partition) -> None:
        """The group's state of the partition read from its coordinator, which records
        this leader's epoch (one never read starts where share.auto.offset.reset says,
        stored in the same step, so a leader after this one starts there too). Held
        already, from an older epoch of this broker's leadership: kept if no other
        leader stored it since, else replaced by what that one stored."""
        assert self._store is not None
        group, tp = key
        epoch = partition.leader_epoch
        topic_id = self._metadata.topic_ids.get(tp.topic)
        try:
            if topic_id is None:
                raise _unknown_id(bytes(16))
            if self._configs is not None:
                try:  # (its share.auto.offset.reset, read now)
                    await self._configs.get(group)
                except ApiError:
                    raise
                except Exception as exc:  # ZooKeeper not answering: the next fetch tries again
                    raise CoordinatorNotAvailableError(
                        f"share group {group!r}'s configs could not be read: {exc!r}"
                    ) from None
            start = self._start(group, partition)
            stored = await self._store.read(group, topic_id, tp.partition, epoch, start)
        except ApiError as exc:
            self._log.warning(
                "share.state_not_loaded",
                group=group,
                topic=tp.topic,
                partition=tp.partition,
                error=exc.name,
                message=exc.message,
            )
            if isinstance(exc, FencedLeaderEpochError):
                exc = NotLeaderOrFollowerError(
                    f"a newer leader of {tp.topic}-{tp.partition} holds share group {group!r}'s "
                    "state of it"
                )
            self._load_errors[key] = exc
            self._done_loading(key)
            return
        if not partition.is_leader or partition.leader_epoch != epoch:
            self._done_loading(key)
            return  # led no more, or again since: the next fetch reads it again
        held = self.states.get(key)
        if held is not None and stored.leader_epoch == self._epochs.get(key):
            self._epochs[key] = epoch  # nobody else led it between: what is out stays out
        else:
            self._drop(key)
            self._install(key, stored.start_offset, stored.batches, epoch)
        self._done_loading(key)

    def _done_loading(self, key: tuple[str, TopicPartition]) -> None:
        """The read for ``key`` is over (not only when its task's callbacks run): the
        fetches it held up look again."""
        task = self._loading.get(key)
        if task is not None and task is asyncio.current_task():
            del self._loading[key]
        self._wake(key[1])

    # --- storing -----------------------------------------------------------------------------

    async def _persist_all(self, group: str, tps: list[TopicPartition]) -> list[ApiError | None]:
        """The group's states of ``tps`` stored (each its whole state as it is then);
        the error of each that could not be."""
        if not tps or self._store is None:
            return [None] * len(tps)
        return list(await asyncio.gather(*(self._persist(group, tp) for tp in tps)))

    async def _persist(self, group: str, tp: TopicPartition) -> ApiError | None:
        """One write at a time per state, each of the state as it is when it goes (so the
        last one stored is the newest). A refusal as fenced means another broker leads
        the partition now: the state here goes."""
        assert self._store is not None
        key = (group, tp)
        try:
            async with self._writes.hold(key):
                state = self.states.get(key)
                epoch = self._epochs.get(key)
                topic_id = self._metadata.topic_ids.get(tp.topic)
                if state is None or epoch is None or topic_id is None:
                    return NotLeaderOrFollowerError(
                        f"this broker no longer leads {tp.topic}-{tp.partition}"
                    )
                stored = StoredShareState(epoch, state.start, tuple(state.stored()))
                await self._store.write(group, topic_id, tp.partition, stored)
        except FencedLeaderEpochError:
            self._drop(key)
            return NotLeaderOrFollowerError(
                f"a newer leader of {tp.topic}-{tp.partition} took share group {group!r}'s "
                "state of it"
            )
        except ApiError as exc:
            return exc
        return None

    def _forget_later(self, group: str) -> None:
        """The group's last session here closed: its states here go once what is being
        stored of them is (Kafka's onGroupEmpty; read again from the group's coordinator
        when a member fetches here again). Nothing is out to its members here then, but
        what an acquisition lock still holds, which the reload makes available again."""

        async def forget() -> None:
            keys = [k for k in self.states if k[0] == group]
            await asyncio.gather(*(self._persist(*key) for key in keys))
            if any(g == group for g, _ in self.sessions):
                return  # a member came back meanwhile
            for key in keys:
                self._drop(key)

        task = asyncio.get_running_loop().create_task(forget())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _persist_later(self, group: str, tp: TopicPartition) -> None:
        """A change no request waits for (a release, locks that ended) stored in the
        background: lost with this broker, the records are delivered again."""
        if self._store is None:
            return

        async def persist() -> None:
            error = await self._persist(group, tp)
            if error is not None:
                self._log.warning(
                    "share.state_not_stored",
                    group=group,
                    topic=tp.topic,
                    partition=tp.partition,
                    error=error.name,
                )

        task = asyncio.get_running_loop().create_task(persist())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
    ) -> asyncio.Future[ShareFetchResponse]:
        self._unpark(session)  # a fetch parked before it (sent without waiting) answers
        loop = asyncio.get_running_loop()
        parked = _Parked(
            request, session, response, loop.create_future(), answers, list(session.partitions)
        )
        parked.timer = asyncio.get_running_loop().call_later(
            request.max_wait_ms / 1000, self._expire_parked, parked
        )
        session.parked = parked
        for tp in parked.tps:
            self._parked.setdefault(tp, {})[parked] = None
        return parked.future

    def _unpark(self, session: _Session) -> None:
        """The session's parked fetch stops waiting (answered with what it has, if it
        has not been)."""
        parked = session.parked
        if parked is None:
            return
        session.parked = None
        if not parked.future.done():
            parked.future.set_result(
                _answered(parked.response, parked.answers, parked.request, session)
            )
        if parked.timer is not None:
            parked.timer.cancel()
            parked.timer = None
        self._retry.pop(parked, None)
        for tp in parked.tps:
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
        if session.parked is not parked or parked.future.done():
            return
        answers = parked.answers
        try:
            got = self._fetch(session, parked.request, answers)
        except Exception as exc:  # never into the event that woke it
            parked.future.set_exception(exc)  # (first: unparked, it is not answered again)
            self._unpark(session)
            return
        if got or last:
            self._unpark(session)  # answered with what it has

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
            self._persist_later(*key)
        self._changed(*key)

    def _role_changed(self, tp: TopicPartition, partition: Partition | None) -> None:
        """No longer the leader of ``tp``: the delivery states of it go, and a parked fetch
        answers what it has. Its leader again in a new epoch (an ISR change, or another
        broker led it between without this one hearing): each state is checked with the
        group's coordinator before anything more is handed out (see :meth:`_load`)."""
        epoch = partition.leader_epoch if partition is not None and partition.is_leader else None
        if epoch is not None:
            assert partition is not None
            for group in list(self._groups_of.get(tp, ())):
                key = (group, tp)
                if self._epochs.get(key) != epoch and self._store is not None:
                    if key in self._loading:
                        self._loading.pop(key).cancel()
                    self._start_load(key, partition)
            return
        for group in list(self._groups_of.get(tp, ())):
            self._drop((group, tp))
        for key in [k for k in self._loading if k[1] == tp]:
            self._loading.pop(key).cancel()
        self._wake(tp)

    def _drop(self, key: tuple[str, TopicPartition]) -> None:
        group, tp = key
        self.states.pop(key, None)
        self._epochs.pop(key, None)
        groups = self._groups_of.get(tp)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._groups_of[tp]
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in [*self._loading.values(), *self._background]:
            task.cancel()
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
