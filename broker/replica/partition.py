"""One partition hosted on this broker: its log, its role, and (as leader) its followers.

The controller decides the role (LeaderAndIsr): leader, leader epoch, ISR, replicas, and
the partition state znode's version, which the leader's compare-and-set ISR writes use.

As leader (Kafka's Partition): each follower's log end offset arrives with its fetches
(the fetch offset *is* its log end offset). The high watermark is the smallest log end
offset over the ISR, leader included, and never goes back; consumers read only below it,
and an acks=all produce is answered once it passes the produce's last offset. A follower
is caught up when it fetched from at least the leader's log end offset as it was at its
previous fetch; one not caught up for ``replica.lag.time.max.ms`` leaves the ISR, one that
reaches the high watermark joins it again (the manager writes those changes to ZooKeeper).

As follower: the fetcher appends the leader's bytes and moves the high watermark to the
leader's, capped at the local log end.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field

import structlog

from broker.log import Log
from protocol.errors import ApiError, NotLeaderOrFollowerError

__all__ = ["FollowerState", "HighWatermarkWaiter", "Partition"]

_log = structlog.get_logger("headwater.partition")


@dataclass(slots=True)
class FollowerState:
    """What the leader knows of one follower."""

    log_end_offset: int = -1
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    leader_end_at_last_fetch: int = -1
    log_start_offset: int = -1
    """As its fetches say (-1: not said yet)."""


ReplicatedCallback = Callable[[ApiError | None], None]


@dataclass(slots=True, eq=False)  # by identity: a dict key, two may wait for one offset
class HighWatermarkWaiter:
    """An acks=all produce waiting for the high watermark to reach ``required_offset``:
    ``done(None)`` then, or ``done(error)`` if this broker stops leading first."""

    required_offset: int
    done: ReplicatedCallback


@dataclass(slots=True, kw_only=True)
class Partition:
    topic: str
    index: int
    log: Log
    local_broker_id: int
    leader_id: int = -1
    leader_epoch: int = -1
    isr: list[int] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    zk_version: int = 0
    controller_epoch: int = -1
    high_watermark: int = 0
    followers: dict[int, FollowerState] = field(default_factory=dict)
    isr_write_pending: bool = False
    joining: set[int] = field(default_factory=set)
    """Followers an ISR write in flight adds: counted for the high watermark already (the
    "maximal ISR", KIP-497), since the write may land before we hear it did."""
    epoch_start_offset: int = 0
    """The log end offset when this broker became leader in the current epoch."""
    isr_fenced_epoch: int = -1
    """The leader epoch at which an ISR write found a newer leader in ZooKeeper: from then
    on no ISR write, and ``joining`` stays counted, until a LeaderAndIsr says what this
    broker is (another leader may hold the replicas we were adding)."""
    _waiters: dict[HighWatermarkWaiter, None] = field(default_factory=dict)
    """acks=all produces waiting, in required-offset order (appends come in offset order):
    a high watermark move looks only at those it reaches and the first it does not, not at
    every produce still waiting."""
    _highest_required: int = -1  # of those in _waiters: where the next one goes after
    _out_of_order: dict[HighWatermarkWaiter, None] = field(default_factory=dict)
    """The few that wait for less than one already waiting (an idempotent retry of a batch
    appended earlier): looked at on every move."""

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.local_broker_id

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"

    # --- role changes -------------------------------------------------------------------

    def become_leader(self, now_ms: int) -> None:
        """Start tracking followers; the ISR members count as caught up as of now.

        The high watermark a new leader inherits may be behind its predecessor's; until it
        reaches :attr:`epoch_start_offset` it is not known, and offsets are not handed out
        by it (Kafka's KIP-207: OFFSET_NOT_AVAILABLE, retriable)."""
        self.epoch_start_offset = self.log.log_end_offset
        self.log.assign_epoch_start(self.leader_epoch)
        self.joining = set()
        before = self.followers
        self.followers = {
            r: FollowerState(
                last_caught_up_ms=now_ms if r in self.isr else 0,
                # kept over an epoch bump: a follower whose fetch session goes on says
                # it again only when it changes
                log_start_offset=before[r].log_start_offset if r in before else -1,
            )
            for r in self.replicas
            if r != self.local_broker_id
        }
        self.high_watermark = min(
            max(self.high_watermark, self.log.log_start_offset), self.log.log_end_offset
        )
        self.maybe_advance_high_watermark()

    def become_follower(self) -> None:
        self.followers = {}
        self.joining = set()
        self.high_watermark = min(self.high_watermark, self.log.log_end_offset)
        self.fail_waiters(NotLeaderOrFollowerError(f"{self.name} lost its leadership here"))

    # --- leader: followers and the high watermark --------------------------------------

    def update_follower(self, replica_id: int, fetch_offset: int, now_ms: int) -> bool:
        """A follower fetched from ``fetch_offset``: that is its log end offset. Returns
        whether that moved it (only then can the high watermark move for it)."""
        state = self.followers.get(replica_id)
        if state is None:
            return False  # not a replica of this partition (the fetch is refused elsewhere)
        leader_end = self.log.log_end_offset
        if fetch_offset > leader_end:
            return False  # beyond our log (it will be told OFFSET_OUT_OF_RANGE): not progress
        if fetch_offset == leader_end:
            state.last_caught_up_ms = now_ms
        elif fetch_offset >= state.leader_end_at_last_fetch >= 0:
            state.last_caught_up_ms = max(state.last_caught_up_ms, state.last_fetch_ms)
        moved = state.log_end_offset != fetch_offset
        state.log_end_offset = fetch_offset
        state.last_fetch_ms = now_ms
        state.leader_end_at_last_fetch = leader_end
        return moved

    def update_follower_start(self, replica_id: int, log_start_offset: int) -> bool:
        """A follower's fetch said its log start offset (kept as said: a restart may take
        it back); whether that raised it."""
        state = self.followers.get(replica_id)
        if state is None or log_start_offset < 0:
            return False
        rose = log_start_offset > state.log_start_offset
        state.log_start_offset = log_start_offset
        return rose

    def low_watermark(self, alive: Container[int] = ()) -> int:
        """The lowest log start offset among this leader and its followers that are in
        sync or ``alive`` (Kafka's DeleteRecords low watermark: every replica that could
        lead next); -1 while one of them has not said its own (it fetches, and says)."""
        low = self.log.log_start_offset
        for replica, state in self.followers.items():
            if replica in self.isr or replica in alive:
                low = min(low, state.log_start_offset)
        return low

    def maybe_advance_high_watermark(self, *, answer: bool = True) -> bool:
        """Move the high watermark to the smallest log end offset in the ISR, if higher,
        and answer the acks=all produces it reached (with ``answer`` False the caller does,
        by :meth:`complete_waiters`, once it has answered the consumers first)."""
        if not self.is_leader:
            return False
        ends = [self.log.log_end_offset]
        for r in set(self.isr) | self.joining:
            if r != self.local_broker_id:
                state = self.followers.get(r)
                ends.append(state.log_end_offset if state is not None else -1)
        candidate = min(ends)
        if candidate <= self.high_watermark:
            return False
        self.high_watermark = candidate
        self.log.producers.on_high_watermark(candidate)  # finished transactions: stable now
        if answer:
            self.complete_waiters()
        return True

    def out_of_sync(self, now_ms: int, max_lag_ms: int) -> list[int]:
        """ISR followers not caught up within ``max_lag_ms``."""
        return [
            r
            for r in self.isr
            if r != self.local_broker_id
            and now_ms - self.followers.get(r, FollowerState()).last_caught_up_ms > max_lag_ms
        ]

    def ready_to_join(self) -> list[int]:
        """Followers outside the ISR that have reached the high watermark (and this leader
        epoch's first offset, so they hold nothing of an older, diverging history)."""
        epoch_start = self.epoch_start_offset
        return [
            r
            for r, state in self.followers.items()
            if r not in self.isr
            and state.log_end_offset >= self.high_watermark
            and state.log_end_offset >= epoch_start
        ]

    @property
    def high_watermark_known(self) -> bool:
        return self.high_watermark >= self.epoch_start_offset

    # --- acks=all -----------------------------------------------------------------------

    def wait_for_high_watermark(
        self, required_offset: int, done: ReplicatedCallback
    ) -> HighWatermarkWaiter | None:
        """Call ``done`` when the high watermark reaches ``required_offset``: now (and
        None is returned) if it has, else from the call that moves it there (the fetch
        that brought the last follower's progress: no loop pass in between).

        ``done`` runs inside that call, so it must not raise."""
        if self.high_watermark >= required_offset:
            done(None)
            return None
        waiter = HighWatermarkWaiter(required_offset, done)
        if required_offset < self._highest_required:
            self._out_of_order[waiter] = None
        else:
            self._highest_required = required_offset
            self._waiters[waiter] = None
        return waiter

    def forget_waiter(self, waiter: HighWatermarkWaiter) -> None:
        """The produce gave up (timed out, or its connection closed)."""
        self._waiters.pop(waiter, None)
        self._out_of_order.pop(waiter, None)
        if not self._waiters:
            self._highest_required = -1

    def complete_waiters(self) -> None:
        """Answer the acks=all produces the high watermark has reached."""
        hw = self.high_watermark
        reached = [w for w in self._out_of_order if w.required_offset <= hw]
        for waiter in reached:
            del self._out_of_order[waiter]
        count = len(reached)
        for waiter in self._waiters:
            if waiter.required_offset > hw:
                break
            reached.append(waiter)
        for waiter in reached[count:]:
            del self._waiters[waiter]
        if not self._waiters:
            self._highest_required = -1
        if reached:
            _call_each(reached, None)

    def fail_waiters(self, error: ApiError) -> None:
        """Leadership is gone (or the broker is stopping): waiting produces get ``error``."""
        waiters = [*self._out_of_order, *self._waiters]
        self._waiters, self._out_of_order, self._highest_required = {}, {}, -1
        _call_each(waiters, error)


def _call_each(waiters: list[HighWatermarkWaiter], error: ApiError | None) -> None:
    # inside a follower's fetch or a role change: one failing callback must neither stop
    # the others (their produces would never be answered) nor the caller
    for waiter in waiters:
        try:
            waiter.done(error)
        except Exception:
            _log.exception("partition.waiter_failed")
