"""Follower fetchers: one task per leader broker, for every partition followed from it.

As Kafka's ReplicaFetcherThread. A partition added to a fetcher first *truncates*: it asks
the leader (OffsetForLeaderEpoch) where the follower's latest leader epoch ended in the
leader's log, and cuts its own log there (KIP-101, with KIP-279's rounds when the leader
never saw that epoch), so a follower never keeps records the new leader does not have,
and never throws away ones it does. Then it fetches from its log end offset: the leader's
exact bytes are appended as they are (offsets, epochs and CRCs untouched), and the high
watermark follows the leader's.

A partition the leader refuses (it has not heard of its role yet, the topic is being
deleted, our log failed) is set aside for ``_BACKOFF_S`` alone, as Kafka's fetcher
delays the partitions with errors: the others go on fetching. Backing off the whole
fetcher instead stalled every acks=all write through it for 200 ms whenever a topic was
created next to it.

The leader reads a follower's progress from these fetches (the fetch offset is the
follower's log end offset); a fetch parks at the leader until data arrives (``min_bytes``
1, ``replica.fetch.wait.max.ms``), so an idle partition costs one open request, not a
poll loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import structlog

from broker.log.manager import TopicPartition
from broker.network import PeerConnection, PeerError, PeerLogin, PeerTls
from broker.replica.partition import Partition
from broker.replica.sweep import Sweep
from broker.replica.throttle import UNLIMITED, ReplicationQuota
from protocol.apis import (
    APIS,
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    ApiKey,
    EpochEndOffset,
    FetchPartition,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderPartition,
    OffsetForLeaderTopic,
)
from protocol.errors import (
    ApiError,
    OffsetOutOfRangeError,
    UnsupportedVersionError,
    error_for_code,
    raise_for_code,
)
from protocol.fetch_session import SESSION_ERRORS, FetchSessionBuilder
from protocol.records import scan_batches

__all__ = ["ReplicaFetcher"]

_BACKOFF_S = 0.2
_THROTTLE_S = 0.1  # how often a fetcher holding back only throttled replicas looks again
_REFRESH_S = 5.0
"""About how often each followed partition's position is read again with no event (see
``_stale``)."""
UNDEFINED = -1
_DIVERGING_EPOCH_SINCE = 2  # the Fetch version that has last_fetched_epoch


@dataclass(slots=True, eq=False)  # one per follow: compared by identity, as a re-add is new
class _Followed:
    partition: Partition
    leader_epoch: int
    truncated: bool = False
    asked: FetchPartition | None = None
    """Its position as last asked for: kept while it holds (the session sends only the
    partitions whose entry is a new one)."""
    delayed: bool = False
    """Refused by the leader a moment ago: neither truncated nor fetched until its
    back-off ends."""
    on_fetch: bool = False
    """Truncates on its fetches (the leader's ``diverging_epoch``), not by a round of
    OffsetForLeaderEpoch first."""
    leader_high_watermark: int = -1
    """The leader's, as its last answer said: caught up to it, the replica is in sync for
    the replication throttle (Kafka's lag <= 0; what the ISR list here says may be old:
    only a LeaderAndIsr updates it)."""


_FOLLOWER_FETCH_VERSION = 2


class ReplicaFetcher:
    """Fetches, from leader ``leader_id`` at ``host:port``, what this broker follows there."""

    def __init__(
        self,
        local_broker_id: int,
        leader_id: int,
        host: str,
        port: int,
        *,
        max_wait_ms: int = 500,
        max_bytes: int = 1024 * 1024,
        response_max_bytes: int = 10 * 1024 * 1024,
        request_timeout_ms: int = 30_000,
        on_progress: Callable[[Partition], None] | None = None,
        tls: PeerTls | None = None,
        login: PeerLogin | None = None,
        quota: ReplicationQuota | None = None,
    ) -> None:
        self.local_broker_id = local_broker_id
        self._quota = quota or ReplicationQuota(lambda: UNLIMITED)
        """follower.replication.throttled.rate, shared by this broker's fetchers."""
        self._held: set[TopicPartition] = set()
        """Throttled partitions left out of the fetches while the quota is exceeded."""
        self.leader_id = leader_id
        self.host = host
        self.port = port
        self._max_wait_ms = max_wait_ms
        self._max_bytes = max_bytes
        self._response_max_bytes = response_max_bytes
        self._peer = PeerConnection(
            host,
            port,
            request_timeout_ms=max(request_timeout_ms, max_wait_ms + 5_000),
            tls=tls,
            login=login,
        )
        self._followed: dict[TopicPartition, _Followed] = {}
        self._untruncated: set[TopicPartition] = set()
        """Followed partitions that have not truncated yet (no scan of all per round)."""
        self._wanted: dict[TopicPartition, FetchPartition] = {}
        """What the next fetch asks for, kept between rounds: only the partitions in
        ``_stale`` are read again. Rebuilt whole every round, 700 followed partitions (one
        busy) cost the follower 0.5 ms a round, which every acks=all write waited for."""
        self._stale: set[TopicPartition] = set()
        """Partitions whose position may have moved: answered, added, removed, truncated.
        What moves a log with no event here (our own retention moving the log start) is
        caught by a sweep: each fetch also reads its share of them again."""
        self._sweep: Sweep[TopicPartition] = Sweep(_REFRESH_S, 0.0)
        self._session = FetchSessionBuilder()
        """This fetcher's fetch session at the leader (KIP-227): each fetch names only
        the partitions that moved, and the answer only those with news."""
        # v2, unless the leader's is lower: v3 adds only what read_committed consumers read
        self._fetch_version: int | None = _FOLLOWER_FETCH_VERSION
        self._changed = asyncio.Event()
        self._on_progress = on_progress
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._log = structlog.get_logger("headwater.fetcher").bind(
            broker_id=local_broker_id, leader=leader_id
        )

    @property
    def partitions(self) -> set[TopicPartition]:
        return set(self._followed)

    def followed(self) -> list[Partition]:
        return [f.partition for f in self._followed.values()]

    def add(self, partition: Partition) -> None:
        """Follow ``partition`` (again, after a leader change: it truncates first).

        With a leader that speaks Fetch v2 and a log that holds an epoch, the fetches
        themselves truncate (Kafka 2.7's KAFKA-10554): each says the epoch of our last
        record, and the leader answers where its log parts from ours instead of records.
        A leader change then costs no round of OffsetForLeaderEpoch before the first
        fetch (for every partition it moved: 2,000 in a controlled shutdown)."""
        tp = TopicPartition(partition.topic, partition.index)
        followed = self._followed[tp] = _Followed(partition, partition.leader_epoch)
        if self._truncates_on_fetch and partition.log.epochs.latest_epoch != UNDEFINED:
            followed.truncated = followed.on_fetch = True
            self._untruncated.discard(tp)
        else:
            self._untruncated.add(tp)
        self._stale.add(tp)
        self._changed.set()

    @property
    def _truncates_on_fetch(self) -> bool:
        version = self._fetch_version
        return version is None or version >= _DIVERGING_EPOCH_SINCE

    def _truncate_first(self) -> None:
        """The leader does not speak Fetch v2 (a rolling upgrade): the partitions left to
        truncate on fetch take the round of OffsetForLeaderEpoch after all."""
        for tp, followed in self._followed.items():
            if followed.on_fetch:
                followed.truncated = followed.on_fetch = False
                self._untruncated.add(tp)
                self._stale.add(tp)

    def remove(self, tp: TopicPartition) -> None:
        if self._followed.pop(tp, None) is not None:
            self._untruncated.discard(tp)
            self._stale.add(tp)
            self._changed.set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._peer.close()

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._followed:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._changed.clear()
            try:
                # an offline log neither truncates nor fetches: it must not hold up the
                # others (its appends would fail the same way, partition by partition)
                pending = [
                    f
                    for tp in self._untruncated
                    if (f := self._followed.get(tp)) is not None
                    and not f.truncated
                    and not f.delayed
                    and f.partition.log.offline_reason is None
                ]
                if pending:
                    await self._truncate(pending)
                    continue
                await self._fetch()
            except PeerError as exc:
                self._log.info("fetcher.leader_unreachable", error=str(exc))
                await asyncio.sleep(_BACKOFF_S)
            except Exception:  # a storage error or a bug: logged, and replication goes on
                self._log.exception("fetcher.failed")
                await asyncio.sleep(_BACKOFF_S)

    # --- truncation by leader epoch -----------------------------------------------------

    async def _truncate(self, pending: list[_Followed]) -> None:
        by_topic: dict[str, list[OffsetForLeaderPartition]] = {}
        asked: dict[TopicPartition, tuple[_Followed, int]] = {}
        for f in pending:
            p = f.partition
            epoch = p.log.epochs.latest_epoch
            tp = TopicPartition(p.topic, p.index)
            if epoch == UNDEFINED:
                # no epoch to ask about (an empty log): the leader's answer would only say
                # "to your high watermark", so cut there without asking, as Kafka's
                # fetcher does (2,000 idle partitions moved to a broker cost a round of
                # OffsetForLeaderEpoch before their first fetch)
                try:
                    self._truncate_to(p, min(p.high_watermark, p.log.log_end_offset))
                except ApiError as exc:  # its log went offline: the others go on
                    self._truncation_failed(f, tp, exc)
                    continue
                self._settled(f, tp)
                continue
            asked[tp] = (f, epoch)
            by_topic.setdefault(p.topic, []).append(
                OffsetForLeaderPartition(
                    partition=p.index, current_leader_epoch=f.leader_epoch, leader_epoch=epoch
                )
            )
        if not asked:
            return
        request = OffsetForLeaderEpochRequest(
            replica_id=self.local_broker_id,
            topics=[OffsetForLeaderTopic(topic=t, partitions=ps) for t, ps in by_topic.items()],
        )
        response: OffsetForLeaderEpochResponse = await self._peer.request(
            ApiKey.OFFSET_FOR_LEADER_EPOCH, request
        )
        for topic in response.topics:
            for answer in topic.partitions:
                tp = TopicPartition(topic.topic, answer.partition)
                followed = self._followed.get(tp)
                if followed is None or tp not in asked or followed.truncated:
                    continue  # removed while we waited
                # by identity, through a dict: `in pending` compared every pair, 1.75 s of
                # a follower's loop when a controlled shutdown moved 1,400 leaders to it
                was, epoch = asked[tp]
                if followed is not was or not self._still_following(followed):
                    continue  # re-added (or made leader) while we waited: asked again later
                if answer.error_code:
                    self._log.info(
                        "fetcher.truncation_refused",
                        topic=tp.topic,
                        partition=tp.partition,
                        error=error_for_code(answer.error_code).name,
                    )
                    self._delay(followed)  # the leader may not know its role yet
                    continue
                try:
                    settled = self._apply_truncation(followed, epoch, answer)
                except ApiError as exc:  # its log went offline: the others go on
                    self._truncation_failed(followed, tp, exc)
                    continue
                if settled:
                    self._settled(followed, tp)

    def _settled(self, followed: _Followed, tp: TopicPartition) -> None:
        """Truncated: it fetches from now on."""
        followed.truncated = True
        self._untruncated.discard(tp)
        self._stale.add(tp)

    def _truncation_failed(self, followed: _Followed, tp: TopicPartition, exc: ApiError) -> None:
        self._log.warning(
            "fetcher.truncation_failed",
            topic=tp.topic,
            partition=tp.partition,
            error=exc.name,
            detail=exc.message,
        )
        self._delay(followed)

    def _delay(self, followed: _Followed) -> None:
        """Set ``followed`` aside for :data:`_BACKOFF_S`; the others go on."""
        followed.delayed = True
        p = followed.partition
        self._stale.add(TopicPartition(p.topic, p.index))  # out of the next fetch
        asyncio.get_running_loop().call_later(_BACKOFF_S, self._undelay, followed)

    def _undelay(self, followed: _Followed) -> None:
        followed.delayed = False
        p = followed.partition
        tp = TopicPartition(p.topic, p.index)
        if self._followed.get(tp) is followed:
            self._stale.add(tp)
            self._changed.set()

    def _apply_truncation(self, followed: _Followed, asked: int, answer: EpochEndOffset) -> bool:
        """Cut the log where it parts from the leader's; True when it is settled."""
        log = followed.partition.log
        if UNDEFINED in (asked, answer.end_offset):
            # we hold no epoch, or the leader knows nothing as old: fall back to the HW
            target = min(followed.partition.high_watermark, log.log_end_offset)
        elif answer.leader_epoch == asked:
            target = min(answer.end_offset, log.log_end_offset)
        else:
            # the leader never wrote in our latest epoch: cut to where *our* copy of the
            # leader's epoch ends, and ask again about the epoch before (KIP-279)
            ours_epoch, ours_end = log.end_offset_for_epoch(answer.leader_epoch)
            if ours_epoch == UNDEFINED:  # we hold no epochs at all: as Kafka, min of ends
                self._truncate_to(followed.partition, min(answer.end_offset, log.log_end_offset))
                return True
            target = min(ours_end, answer.end_offset, log.log_end_offset)
            if ours_epoch != answer.leader_epoch:
                self._truncate_to(followed.partition, target)
                return False
        self._truncate_to(followed.partition, target)
        return True

    def _still_following(self, followed: _Followed) -> bool:
        """After an await: is this still the follower state we acted for?"""
        p = followed.partition
        tp = TopicPartition(p.topic, p.index)
        return (
            self._followed.get(tp) is followed
            and not p.is_leader
            and p.leader_epoch == followed.leader_epoch
        )

    def _truncate_to(self, partition: Partition, offset: int) -> None:
        if offset < partition.log.log_end_offset:
            self._log.info(
                "fetcher.truncating",
                topic=partition.topic,
                partition=partition.index,
                from_offset=partition.log.log_end_offset,
                to_offset=offset,
            )
        partition.log.truncate_to(offset)  # at the end too: it drops epochs begun there
        partition.high_watermark = min(partition.high_watermark, partition.log.log_end_offset)

    # --- fetching -----------------------------------------------------------------------

    async def _fetch(self) -> None:
        stale, self._stale = self._stale, set()
        stale.update(self._sweep.take(self._followed, asyncio.get_running_loop().time()))
        held_back = self._quota.exceeded()  # (False with no rate set)
        if self._held and not held_back:  # under the throttle again: back in the fetches
            stale |= self._held
            self._held.clear()
        wanted = self._wanted
        self._reposition(stale)
        if held_back:
            self._hold_back(wanted, stale)
        if not wanted and self._held:  # only throttled ones: until the rate comes down
            self._stale |= stale
            await asyncio.sleep(_THROTTLE_S)
            return
        if not wanted:  # every partition truncates first or backs off: until one is back
            # what left the session is still to be forgotten there, by the next fetch
            self._stale |= stale
            await self._changed.wait()
            return
        # (a Mapping's key type is invariant: TopicPartition keys are (topic, index) pairs)
        asked = self._session.build(cast(Mapping[tuple[str, int], FetchPartition], wanted), stale)
        request = FetchRequest(
            replica_id=self.local_broker_id,
            max_wait_ms=self._max_wait_ms,
            min_bytes=1,
            max_bytes=self._response_max_bytes,
            session_id=asked.session_id,
            session_epoch=asked.session_epoch,
            topics=asked.topics,
            forgotten_topics_data=asked.forgotten,
        )
        try:
            response: FetchResponse = await self._peer.request(
                ApiKey.FETCH, request, self._fetch_version
            )
        except BaseException:
            self._session.reset()  # the leader may or may not have taken it
            raise
        if response.error_code:
            # a request-level error: FETCH_SESSION_ID_NOT_FOUND (evicted, or the leader
            # restarted) and INVALID_FETCH_SESSION_EPOCH most often; the next fetch is
            # full and opens a new session
            self._session.reset()
            error = error_for_code(response.error_code, response.error_message)
            if isinstance(error, UnsupportedVersionError) and self._fetch_version != 0:
                # a leader of an older build (a rolling upgrade): fetch a version lower,
                # down to v0 (no session, truncation rounds first), rather than not at all
                version = self._fetch_version
                version = (APIS[ApiKey.FETCH].max_version if version is None else version) - 1
                self._fetch_version = version
                self._log.warning(
                    "fetcher.leader_speaks_older_fetch", version=version, detail=error.message
                )
                if not self._truncates_on_fetch:
                    self._truncate_first()
                return
            self._log.info("fetcher.session_reset", error=error.name, detail=error.message)
            if not isinstance(error, SESSION_ERRORS):
                await asyncio.sleep(_BACKOFF_S)
            return
        if not self._session.answered(asked, response):
            self._log.warning("fetcher.session_mismatch", session_id=asked.session_id)
        try:
            await self._take(response)
        except BaseException:
            self._session.reset()  # the rest of the answer was not taken in
            raise

    def _reposition(self, stale: set[TopicPartition]) -> None:
        """Bring ``_wanted`` up to date for the partitions that may have moved."""
        wanted = self._wanted
        for tp in stale:
            f = self._followed.get(tp)
            if f is None or not f.truncated or f.delayed or f.partition.log.offline_reason:
                wanted.pop(tp, None)  # gone, truncates first, backs off, or its log failed
                continue
            log = f.partition.log
            end, start, last = log.log_end_offset, log.log_start_offset, f.asked
            epoch = log.epochs.latest_epoch
            if (
                last is None
                or last.fetch_offset != end
                or last.log_start_offset != start
                or last.current_leader_epoch != f.leader_epoch
                or last.last_fetched_epoch != epoch
            ):
                last = f.asked = FetchPartition(
                    partition=tp.partition,
                    current_leader_epoch=f.leader_epoch,
                    fetch_offset=end,
                    last_fetched_epoch=epoch,
                    log_start_offset=start,
                    partition_max_bytes=self._max_bytes,
                )
            wanted[tp] = last

    def _hold_back(
        self, wanted: dict[TopicPartition, FetchPartition], stale: set[TopicPartition]
    ) -> None:
        """Over the follower's throttle: leave out the throttled replicas that are behind
        their leader (the session forgets them until they are back). A caught-up one goes
        on, so it can join the ISR and stay there (Kafka's follower checks its lag too)."""
        me = self.local_broker_id
        for tp in list(wanted):
            followed = self._followed[tp]
            log = followed.partition.log
            in_sync = 0 <= followed.leader_high_watermark <= log.log_end_offset
            if not in_sync and log.config.follower_throttled(tp.partition, me):
                del wanted[tp]
                stale.add(tp)
                self._held.add(tp)

    async def _take(self, response: FetchResponse) -> None:
        """Apply an answer, partition by partition; one that failed backs off alone. The
        leader takes what it sent as known: an answer dropped for a partition still
        followed (re-added meanwhile) resets the session, so the next fetch is full."""
        for topic in response.topics:
            for data in topic.partitions:
                tp = TopicPartition(topic.topic, data.partition_index)
                followed = self._followed.get(tp)
                if followed is None:
                    continue  # removed: the next fetch forgets it
                if (
                    not followed.truncated
                    or not self._still_following(followed)
                    # asked for by an earlier follow (a role change meanwhile: a new epoch,
                    # another leader and back): its records or error are not this one's
                    or followed.asked is None
                    or followed.asked is not self._wanted.get(tp)
                ):
                    self._session.reset()  # re-added (truncates first) or promoted
                    continue
                try:
                    await self._handle(followed, data)
                except ApiError as exc:
                    self._delay(followed)
                    self._log.info(
                        "fetcher.partition_error",
                        topic=topic.topic,
                        partition=data.partition_index,
                        error=exc.name,
                        detail=exc.message,
                    )

    async def _handle(self, followed: _Followed, data: FetchPartitionData) -> None:
        partition = followed.partition
        self._stale.add(TopicPartition(partition.topic, partition.index))  # it may move
        if data.error_code == OffsetOutOfRangeError.code:
            await self._out_of_range(followed)
            return
        raise_for_code(data.error_code)
        diverging = data.diverging_epoch
        if diverging is not None:
            # our log parts from the leader's below our end: cut it where they part (as
            # after OffsetForLeaderEpoch), then fetch again from there
            assert followed.asked is not None  # _take drops answers to anything else
            last = followed.asked.last_fetched_epoch
            self._log.info(
                "fetcher.diverging",
                topic=partition.topic,
                partition=partition.index,
                last_fetched_epoch=last,
                leader_epoch=diverging.epoch,
                leader_end_offset=diverging.end_offset,
            )
            self._apply_truncation(
                followed,
                last,
                EpochEndOffset(
                    partition=partition.index,
                    leader_epoch=diverging.epoch,
                    end_offset=diverging.end_offset,
                ),
            )
            return
        followed.leader_high_watermark = data.high_watermark
        if isinstance(data.records, memoryview) and len(data.records):
            if self._quota.active and partition.log.config.follower_throttled(
                partition.index, self.local_broker_id
            ):
                self._quota.record(len(data.records))
            self._append(partition, data.records)
        partition.high_watermark = max(
            partition.high_watermark, min(data.high_watermark, partition.log.log_end_offset)
        )
        partition.log.producers.on_high_watermark(partition.high_watermark)
        # the leader's retention moved its log start: ours follows (Kafka's followers do the
        # same), and our own retention pass deletes what falls below it
        partition.log.advance_log_start_offset(data.log_start_offset)
        if self._on_progress is not None:
            self._on_progress(partition)

    def _append(self, partition: Partition, records: memoryview) -> None:
        """Append whole batches at or past our log end (a batch straddling it means our
        copy of it differs: cut back to its start and take the leader's)."""
        log = partition.log
        headers = scan_batches(records, allow_partial_tail=True)
        start = None
        for h in headers:
            if h.last_offset < log.log_end_offset:
                continue
            if h.base_offset < log.log_end_offset:
                log.truncate_to(h.base_offset)
            start = h.position
            break
        if start is None or not headers:
            return
        end = headers[-1].end
        log.append_as_follower(records[start:end])

    async def _out_of_range(self, followed: _Followed) -> None:
        """Our log end is outside the leader's log: follow its end or its start."""
        partition = followed.partition
        ends = {}
        for ts in (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP):
            request = ListOffsetsRequest(
                replica_id=self.local_broker_id,
                topics=[
                    ListOffsetsTopic(
                        name=partition.topic,
                        partitions=[
                            ListOffsetsPartition(partition_index=partition.index, timestamp=ts)
                        ],
                    )
                ],
            )
            response = await self._peer.request(ApiKey.LIST_OFFSETS, request)
            answer = response.topics[0].partitions[0]
            raise_for_code(answer.error_code)
            ends[ts] = answer.offset
        if not self._still_following(followed):
            return  # our role changed while we asked: the new role decides
        log = partition.log
        if log.log_end_offset > ends[LATEST_TIMESTAMP]:
            self._truncate_to(partition, ends[LATEST_TIMESTAMP])
        elif log.log_end_offset < ends[EARLIEST_TIMESTAMP]:
            self._log.info(
                "fetcher.restarting_log",
                topic=partition.topic,
                partition=partition.index,
                at_offset=ends[EARLIEST_TIMESTAMP],
            )
            log.truncate_fully_and_start_at(ends[EARLIEST_TIMESTAMP])
            partition.high_watermark = ends[EARLIEST_TIMESTAMP]
