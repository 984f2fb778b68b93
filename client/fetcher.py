"""The consumer's per-partition state and prefetch buffer, without any socket.

For each assigned partition, :class:`PartitionState` keeps two offsets:

- ``position``: the next offset the *user* gets (what ``position()`` returns);
- ``fetch_offset``: where the next Fetch starts. It runs ahead of ``position`` by what is
  buffered, which is what lets the next Fetch go out while the user is still consuming
  the previous answer.

Fetched data is kept as whole batches (records decode when the user reaches them, so a
buffered answer costs its bytes, not a Python object per record), at most about
``max_buffer_bytes`` per partition before its fetching pauses. A seek or an offset reset
bumps the partition's ``generation``: an answer to a Fetch issued before it is dropped
when it arrives, as are buffered batches, so nothing from before a seek is ever returned.

Brokers return whole batches, which may begin before the fetch offset (records below
the position are skipped) and may end with a partial batch (ignored: the next Fetch
starts where the last whole batch ended).
"""

from __future__ import annotations

import collections
import itertools
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from client.types import ConsumerRecord, TopicPartition
from protocol.records import Record, RecordBatch, RecordColumns, decode_batches
from protocol.records.control import AbortedFilter

__all__ = ["FetchPosition", "FetchSet", "PartitionState", "Subscription"]

R = TypeVar("R")
MakeRecord = Callable[[TopicPartition, Record], R]


class _Chunk:
    """The batches of one Fetch answer for one partition, consumed from the front."""

    __slots__ = (
        "batches",
        "block",
        "block_at",
        "block_type",
        "columns",
        "end",
        "end_epoch",
        "index",
        "size",
    )

    def __init__(self, batches: list[RecordBatch], size: int, end: int, end_epoch: int) -> None:
        self.batches = collections.deque(batches)
        self.size = size
        self.end = end
        """The offset after the answer's last batch: the position once the chunk is
        consumed, past batches no user sees (transaction markers, aborted transactions)."""
        self.end_epoch = end_epoch
        """The leader epoch of the answer's last batch: the position's once consumed."""
        self.columns: RecordColumns | None = None
        """The front batch's records, decoded when the user reaches it; each record's
        tuple is made when the user takes it."""
        self.index = 0
        self.block: list[Any] = []
        """Records ``block_at``.. of the front batch, made ahead for small takes."""
        self.block_at = 0
        self.block_type: type | None = None


_BLOCK = 64
"""Records made together for a small take (getone, async for, a small max_records): one
zip over 64 of a batch's columns costs about what one record made alone does, and 64
alive stay far below the 700 that start a young collection."""
_SMALL_TAKE = 16
"""Takes of up to this many records come from the block; larger ones are made as they
are (a take past the block's end makes a new one, most of which a large take wastes)."""


def _made(chunk: _Chunk, cls: type, lead: tuple[Any, ...], first: int, last: int) -> list[Any]:
    """Records ``first``..``last`` (at most :data:`_SMALL_TAKE`) of the front batch as
    ``cls``, from the block made ahead, made again from ``first`` when it lacks them."""
    block, at = chunk.block, chunk.block_at
    if chunk.block_type is not cls or first < at or last > at + len(block):
        columns = chunk.columns
        assert columns is not None
        at = chunk.block_at = first
        stop = min(len(columns.offsets), first + _BLOCK)
        block = chunk.block = columns.rows(cls, lead, first, stop)
        chunk.block_type = cls
    return block[first - at : last - at]


class PartitionState:
    __slots__ = (
        "asked",
        "buffered_bytes",
        "chunks",
        "epoch",
        "error",
        "fetch_offset",
        "generation",
        "high_watermark",
        "last_stable_offset",
        "leader_epoch",
        "log_start_offset",
        "paused",
        "position",
        "reset_by_policy",
        "retry_at_ms",
        "validating",
    )

    def __init__(self) -> None:
        self.position: int | None = None
        """None until a seek or an offset reset (auto_offset_reset) sets it."""
        self.fetch_offset: int | None = None
        self.generation = 0
        self.chunks: collections.deque[_Chunk] = collections.deque()
        self.buffered_bytes = 0
        self.high_watermark = -1
        self.last_stable_offset = -1
        self.log_start_offset = -1
        self.error: BaseException | None = None
        self.retry_at_ms = 0.0
        self.asked: FetchPosition | None = None
        """The last position fetched from, kept while it holds (no object per Fetch)."""
        self.paused = False
        """By the user (Consumer.pause): not fetched, nothing handed out; a seek keeps it."""
        self.reset_by_policy = False
        """The position was out of range: auto_offset_reset decides, not a committed offset
        (which may be the very offset that was out of range)."""
        self.epoch = -1
        """The leader epoch of the records before the position (KIP-320): of the last batch
        the user consumed, or of the committed offset; -1 where not known (a seek, a
        reset), which is never validated."""
        self.leader_epoch = -1
        """The leader's epoch as the metadata last said (-1: not known): sent with every
        Fetch, so a broker with another leader epoch refuses it."""
        self.validating = False
        """The leader changed since the position's records were read: not fetched until
        the new leader says where ``epoch`` ended in its log (truncation detection)."""

    def moved(self, offset: int | None, epoch: int = -1) -> None:
        """The user's position jumps: everything buffered or in flight is from before."""
        self.position = self.fetch_offset = offset
        self.epoch = epoch
        self.validating = False
        self.generation += 1
        self.chunks.clear()
        self.buffered_bytes = 0
        self.error = None
        self.retry_at_ms = 0.0


class FetchPosition:
    """One partition in a Fetch request, remembered to match its answer."""

    __slots__ = ("generation", "leader_epoch", "offset", "request", "tp")

    def __init__(
        self, tp: TopicPartition, offset: int, generation: int, leader_epoch: int = -1
    ) -> None:
        self.tp = tp
        self.offset = offset
        self.generation = generation
        self.leader_epoch = leader_epoch
        self.request: Any = None
        """The consumer's Fetch entry for this position, made once (see Consumer._part)."""

    def __repr__(self) -> str:
        return f"FetchPosition({self.tp}, {self.offset}, gen {self.generation})"


class FetchSet(NamedTuple):
    """One leader's Fetch: its ``positions`` (its own: never changed afterwards) and the
    partitions added to, moved in or dropped from them since the last Fetch taken for
    that leader (``changed``; None: any may have, compare them all)."""

    positions: dict[TopicPartition, FetchPosition]
    changed: list[TopicPartition] | None


class _Led:
    """The assigned partitions one leader leads, and what to fetch from it."""

    __slots__ = ("changed", "dirty", "full", "members", "wanted")

    def __init__(self) -> None:
        self.members: dict[TopicPartition, PartitionState] = {}
        self.wanted: dict[TopicPartition, FetchPosition] = {}
        """The fetchable ones as of the last look (replaced, never changed)."""
        self.dirty: dict[TopicPartition, None] = {}
        """Marked since that look (:meth:`Subscription._touch`)."""
        self.changed: dict[TopicPartition, None] = {}
        """Added to, moved in or dropped from ``wanted`` since the last Fetch taken."""
        self.full = True
        """No Fetch taken yet: ``changed`` does not cover what a session may hold."""


class Subscription:
    """Assigned partitions, their positions and their buffered data."""

    def __init__(self, *, max_buffer_bytes: int) -> None:
        self.max_buffer_bytes = max_buffer_bytes
        self.states: dict[TopicPartition, PartitionState] = {}
        self.chunks_consumed = 0
        """Counts buffered answers used up: buffer space the fetcher may fill again."""
        self.moved: set[TopicPartition] = set()
        """Partitions whose position moved past a whole batch since the consumer last
        recorded their lag (its records-lag metrics: once per batch, not per record)."""
        self.taken_bytes: collections.defaultdict[str, int] = collections.defaultdict(int)
        """Per topic, the bytes of the batches the user has had every record of, until the
        consumer's metrics take them (bytes-consumed: one addition per batch)."""
        self._take_start = 0
        self._buffered: dict[TopicPartition, None] = {}
        """The partitions that may have records buffered (a superset: a seek empties a
        buffer behind its back), so a getmany goes over those, not the whole assignment
        (1,024 partitions cost every poll a pass over all of them)."""
        self._errored: dict[TopicPartition, None] = {}
        """Likewise the partitions that may hold an error (:meth:`set_error`)..."""
        self._unpositioned: dict[TopicPartition, None] = {}
        """...that may have no position (assigned, or reset)..."""
        self._backing_off: dict[TopicPartition, None] = {}
        """...that may be backing off (:meth:`back_off`)..."""
        self._validating: dict[TopicPartition, None] = {}
        """...and that may wait for their position's validation (:meth:`needs_validation`)."""
        self._refused: dict[TopicPartition, None] = {}
        """Partitions whose leader did not know their leader epoch (:meth:`epoch_refused`)."""
        self._grouped: tuple[Mapping[TopicPartition, int], dict[TopicPartition, Any]] | None = None
        """The leaders and states ``_leds`` was grouped from (held: see :meth:`_by_leader`)."""
        self._leds: dict[int | None, _Led] = {}
        self._led_of: dict[TopicPartition, _Led] = {}

    # --- assignment and positions --------------------------------------------------------

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        """Replace the assignment; partitions kept keep their positions and buffers."""
        wanted = list(dict.fromkeys(tps))
        self.states = {tp: self.states.get(tp) or PartitionState() for tp in wanted}
        self._unpositioned.update((tp, None) for tp, s in self.states.items() if s.position is None)

    def state(self, tp: TopicPartition) -> PartitionState:
        state = self.states.get(tp)
        if state is None:
            raise ValueError(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        return state

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"offset {offset} is negative; seek to 0 or more")
        self.state(tp).moved(offset)
        self._touch(tp)

    def pause(self, tp: TopicPartition) -> None:
        self.state(tp).paused = True
        self._touch(tp)

    def resume(self, tp: TopicPartition) -> bool:
        """Fetch and hand out ``tp`` again; True if it has records buffered."""
        state = self.state(tp)
        state.paused = False
        self._touch(tp)
        return bool(state.chunks)

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, s in self.states.items() if s.paused}

    def request_reset(self, tp: TopicPartition) -> None:
        """Forget the position: the consumer's auto_offset_reset chooses it again."""
        state = self.state(tp)
        state.moved(None)
        state.reset_by_policy = True
        self._unpositioned[tp] = None
        self._touch(tp)

    def needs_position(self) -> list[TopicPartition]:
        if not self._unpositioned:
            return []
        states = self.states
        still = [tp for tp in self._unpositioned if (s := states.get(tp)) and s.position is None]
        self._unpositioned = dict.fromkeys(still)
        return [tp for tp in still if states[tp].error is None]

    def back_off(self, asked: FetchPosition, retry_at_ms: float) -> None:
        """Fetch the partition again no sooner than ``retry_at_ms``."""
        state = self.current(asked)
        if state is not None:
            state.retry_at_ms = retry_at_ms
            self._backing_off[asked.tp] = None
            self._touch(asked.tp)

    def next_retry_ms(self, now_ms: float) -> float | None:
        """When the earliest partition still backing off may be fetched again."""
        self._expire_backoffs(now_ms)  # those whose back-off ended are looked at again
        states = self.states
        return min((states[tp].retry_at_ms for tp in self._backing_off), default=None)

    def set_reset_position(
        self, tp: TopicPartition, offset: int, generation: int, epoch: int = -1
    ) -> bool:
        """Apply an offset looked up for a reset, unless the user moved meanwhile.
        ``epoch``: a committed offset's leader epoch, checked against the leader's log
        before the first Fetch (-1: not known, not checked)."""
        state = self.states.get(tp)
        if state is None or state.generation != generation or state.position is not None:
            return False
        state.position = state.fetch_offset = offset
        state.epoch = epoch
        state.reset_by_policy = False
        if epoch >= 0 and state.leader_epoch >= 0:
            self._validate(tp, state)
        self._touch(tp)
        return True

    # --- truncation detection (KIP-320) ----------------------------------------------------

    def _validate(self, tp: TopicPartition, state: PartitionState) -> None:
        """Hold ``tp`` until its new leader confirms the position: what is buffered or in
        flight came from the leader before, whose log may have held records the new one
        does not have (an unclean election), so it is dropped and read again (as for a
        move: an error it held was about that data too)."""
        state.moved(state.position, state.epoch)
        state.validating = True
        self._validating[tp] = None
        self._touch(tp)

    def needs_validation(self, now_ms: float) -> list[tuple[TopicPartition, PartitionState]]:
        """The partitions to ask their leader about now: (tp, state), state as of now (its
        generation tells whether an answer still applies)."""
        if not self._validating:
            return []
        states = self.states
        still = [tp for tp in self._validating if (s := states.get(tp)) and s.validating]
        self._validating = dict.fromkeys(still)
        return [
            (tp, s)
            for tp in still
            if (s := states[tp]).error is None
            and s.position is not None
            and s.retry_at_ms <= now_ms
        ]

    def validated(self, tp: TopicPartition) -> None:
        """The leader's log holds the position's records: fetch again. (The caller knows
        the answer is about the position as it is now.)"""
        state = self.state(tp)
        state.validating = False
        self._validating.pop(tp, None)
        self._touch(tp)

    def truncated(self, tp: TopicPartition, offset: int, epoch: int) -> None:
        """The leader's log parted from what was read at ``offset`` (the first offset
        whose record may differ): read on from there (auto_offset_reset allows it)."""
        state = self.state(tp)
        state.moved(offset, epoch)
        self._validating.pop(tp, None)
        self._touch(tp)

    def retry_validation(self, tp: TopicPartition, retry_at_ms: float) -> None:
        """Ask again no sooner than ``retry_at_ms`` (the leader was not ready)."""
        self.state(tp).retry_at_ms = retry_at_ms
        self._backing_off[tp] = None

    def follow_epochs(self, epochs: Mapping[TopicPartition, int]) -> None:
        """The metadata's leader epochs: each partition's new one is sent with its next
        Fetch, and a position read under an older one is validated first (Kafka's
        consumer does the same on every leader change). Never backwards (a broker whose
        metadata lags may answer with an older epoch) unless the leader refused the
        newer one (:meth:`epoch_refused`)."""
        refused = self._refused
        for tp, state in self.states.items():
            epoch = epochs.get(tp, -1)
            if epoch <= state.leader_epoch:
                if epoch < 0 or epoch == state.leader_epoch or tp not in refused:
                    continue
                # the leader knows no epoch as new as ours, and the metadata agrees: the
                # topic was deleted and made again under its name (its epochs start over;
                # Kafka tells by topic id), or the leader has not heard of the newer one
                # yet. Its epoch is followed, with no check (an epoch of a log that is gone
                # would be checked against the new one: a "truncation" at its end, past
                # its records); a move up again from there is checked
                del refused[tp]
                state.leader_epoch = epoch
                state.validating = False
                self._validating.pop(tp, None)
                self._touch(tp)
                continue
            refused.pop(tp, None)
            state.leader_epoch = epoch
            self._touch(tp)
            if state.position is not None and state.epoch >= 0:
                self._validate(tp, state)

    def topic_remade(self, topic: str) -> list[TopicPartition]:
        """``topic`` was deleted and made again under its name (the metadata gives it
        another topic id): each of its partitions forgets its position, the old topic's,
        and what was buffered or asked for at it, and auto_offset_reset chooses it again
        (as :meth:`request_reset`; a reset or committed-offset lookup under way is
        dropped too); its leader epochs start over, so it takes the next metadata view's,
        unchecked. Returns the partitions."""
        out = [tp for tp in self.states if tp.topic == topic]
        for tp in out:
            state = self.states[tp]
            state.leader_epoch = -1
            self._refused.pop(tp, None)
            self._validating.pop(tp, None)
            self.request_reset(tp)  # (moved: validating off, the generation bumped)
        self._grouped = None  # the epochs are taken in again, from the view then current
        return out

    def epoch_refused(self, tp: TopicPartition) -> None:
        """``tp``'s leader answered UNKNOWN_LEADER_EPOCH: our epoch is newer than it knows.
        The next metadata view's epoch is followed even if lower (see follow_epochs)."""
        if tp in self.states:
            self._refused[tp] = None

    # --- fetching ------------------------------------------------------------------------

    def fetchable_by_leader(
        self,
        now_ms: float,
        leaders: Mapping[TopicPartition, int],
        *,
        epochs: Mapping[TopicPartition, int] | None = None,
        busy: Container[int | None] = (),
        only: int | None = None,
    ) -> dict[int | None, FetchSet]:
        """What to fetch now from each leader (None: not known) that is not ``busy`` (a
        leader with a Fetch out gets no other), or from ``only``; every set returned is
        taken to be sent (its ``changed`` are not given again). ``epochs``: the leader
        epochs of the same metadata view as ``leaders`` (see :meth:`follow_epochs`).

        Kept up to date as partitions change, not found by a pass over the assignment:
        every Fetch answer leads to one, and a consumer of 1,024 partitions spent ~0.8 ms
        of a slow VM's CPU on each (the pass, the request's partitions, the session's
        comparison, the answer's lookup, the in-flight marks). A partition whose leader
        moved while a Fetch for it was out may be asked of the new one meanwhile: of two
        answers at one position, the second finds the position moved and is dropped.
        """
        leds = self._by_leader(leaders, epochs)
        self._expire_backoffs(now_ms)
        out: dict[int | None, FetchSet] = {}
        for leader in leds if only is None else (only,):
            led = leds.get(leader)
            if led is None or leader in busy:
                continue
            self._refresh(led, now_ms)
            if led.wanted:
                changed = None if led.full else list(led.changed)
                led.changed.clear()
                led.full = False
                out[leader] = FetchSet(led.wanted, changed)
        return out

    def not_sent(self, leader: int) -> None:
        """The set taken for ``leader`` did not go: its next compares every partition."""
        led = self._leds.get(leader)
        if led is not None:
            led.full = True

    def _refresh(self, led: _Led, now_ms: float) -> None:
        """Look again at the partitions marked since the last look. The dict of what to
        fetch is replaced, not changed, when one joins, leaves or moves: a Fetch out holds
        the old one as its positions."""
        if not led.dirty:
            return
        limit = self.max_buffer_bytes
        wanted = led.wanted
        copied = False
        for tp in led.dirty:
            s = led.members[tp]
            old = wanted.get(tp)
            if (
                s.fetch_offset is not None
                and s.error is None
                and s.buffered_bytes < limit
                and s.retry_at_ms <= now_ms
                and not s.paused
                and not s.validating
            ):
                asked = s.asked
                if (
                    asked is None
                    or asked.offset != s.fetch_offset
                    or asked.generation != s.generation
                    or asked.leader_epoch != s.leader_epoch
                ):
                    asked = s.asked = FetchPosition(
                        tp, s.fetch_offset, s.generation, s.leader_epoch
                    )
                if old is asked:
                    continue
                if not copied:
                    wanted, copied = dict(wanted), True
                wanted[tp] = asked
            elif old is None:
                continue
            else:
                if not copied:
                    wanted, copied = dict(wanted), True
                del wanted[tp]
            led.changed[tp] = None
        led.dirty.clear()
        led.wanted = wanted

    def _touch(self, tp: TopicPartition) -> None:
        """``tp``'s state changed in a way its fetching follows: looked at again before
        its leader's next Fetch."""
        led = self._led_of.get(tp)
        if led is not None:
            led.dirty[tp] = None

    def _expire_backoffs(self, now_ms: float) -> None:
        if not self._backing_off:
            return
        states = self.states
        over = [
            tp
            for tp in self._backing_off
            if (s := states.get(tp)) is None or s.retry_at_ms <= now_ms
        ]
        for tp in over:
            del self._backing_off[tp]
            self._touch(tp)

    def _by_leader(
        self,
        leaders: Mapping[TopicPartition, int],
        epochs: Mapping[TopicPartition, int] | None = None,
    ) -> dict[int | None, _Led]:
        """The assignment grouped by leader, made again (every partition looked at) only
        for a new assignment or a new metadata view: both are replaced whole, never
        changed, and held here, so neither object's identity can be taken over by another.
        The view's leader epochs are taken in then too."""
        grouped = self._grouped
        if grouped is not None and grouped[0] is leaders and grouped[1] is self.states:
            return self._leds
        leds: dict[int | None, _Led] = {}
        led_of: dict[TopicPartition, _Led] = {}
        for tp, s in self.states.items():
            leader = leaders.get(tp)
            led = leds.get(leader)
            if led is None:
                led = leds[leader] = _Led()
            led.members[tp] = s
            led_of[tp] = led
        for led in leds.values():
            led.dirty = dict.fromkeys(led.members)
        self._grouped = (leaders, self.states)
        self._leds, self._led_of = leds, led_of
        if epochs is not None:
            self.follow_epochs(epochs)
        return leds

    def current(self, asked: FetchPosition) -> PartitionState | None:
        """The partition's state if an answer to ``asked`` still applies to it."""
        state = self.states.get(asked.tp)
        if state is None or state.generation != asked.generation:
            return None
        return state if state.fetch_offset == asked.offset else None

    def add_fetched(
        self,
        asked: FetchPosition,
        records: bytes | bytearray | memoryview | None,
        aborted: Iterable[tuple[int, int]] | None = None,
    ) -> int:
        """Buffer a Fetch answer's record data; returns how many bytes were kept.

        ``aborted``: read_committed, the aborted transactions the answer names (producer
        id, first offset), whose batches are dropped. Transaction markers always are.
        Raises the batch codec's error (CORRUPT_MESSAGE...) for damaged data, keeping
        nothing of it.
        """
        state = self.current(asked)
        if state is None or not records:
            return 0
        batches = list(decode_batches(records, allow_partial_tail=True))
        if not batches:
            return 0
        end = batches[-1].next_offset
        end_epoch = batches[-1].partition_leader_epoch
        state.fetch_offset = max(asked.offset, end)
        self._touch(asked.tp)
        if aborted:
            committed = AbortedFilter(aborted)
            wanted = [b for b in batches if committed.keep(b) and b.next_offset > asked.offset]
        else:
            wanted = [b for b in batches if b.next_offset > asked.offset and not b.is_control]
        if not wanted:
            # only batches no user sees: the position moves past them (at once if nothing
            # is buffered before them, else once what is buffered is consumed)
            if state.chunks:
                last = state.chunks[-1]
                last.end = max(last.end, end)
                last.end_epoch = max(last.end_epoch, end_epoch)
            elif state.position is not None and end > state.position:
                state.position = end
                state.epoch = max(state.epoch, end_epoch)
                self.moved.add(asked.tp)
            return 0
        size = sum(b.size_in_bytes for b in wanted)
        state.chunks.append(_Chunk(wanted, size, end, end_epoch))
        state.buffered_bytes += size
        self._buffered[asked.tp] = None
        return size

    def fail(self, asked: FetchPosition, error: BaseException) -> None:
        """A partition error the user must see (getmany raises it, once)."""
        if self.current(asked) is not None:
            self.set_error(asked.tp, error)

    def set_error(self, tp: TopicPartition, error: BaseException) -> None:
        """Hold ``error`` for the user (getmany raises it, once); the fetcher leaves the
        partition alone meanwhile."""
        state = self.states.get(tp)
        if state is not None:
            state.error = error
            self._errored[tp] = None
            self._touch(tp)

    # --- the user's side -----------------------------------------------------------------

    def has_data(self, tps: Iterable[TopicPartition] | None = None) -> bool:
        states = self.states
        return any(
            (s := states.get(tp)) is not None and s.chunks and not s.paused
            for tp in (tps or self._buffered)
        )

    def pop_error(self, tps: Iterable[TopicPartition] | None = None) -> BaseException | None:
        errored = self._errored
        for tp in list(errored) if not tps else [tp for tp in tps if tp in errored]:
            state = self.states.get(tp)
            errored.pop(tp, None)  # ``tps`` may name it twice
            if state is not None and state.error is not None:
                error, state.error = state.error, None
                self._touch(tp)
                return error
        return None

    def take(
        self,
        tps: Iterable[TopicPartition] | None,
        max_records: int | None,
        make_record: MakeRecord[R] | None = None,
    ) -> dict[TopicPartition, list[Any]]:
        """Up to ``max_records`` buffered records, in offset order per partition.

        Without ``make_record`` they are :class:`ConsumerRecord` s made by the decoder
        itself (the fast path: nothing is done per record here); with it, Records that
        ``make_record`` turns into what the user gets (deserializers), one by one.

        Partitions take turns, so one busy partition does not starve the others when
        ``max_records`` is small: of all of them, the one served goes to the back of the
        line (a ``getone()`` looks at the partition in front, not at every one buffered);
        of ``tps``, from a start that rotates.
        """
        budget = max_records if max_records is not None else 1 << 62
        out: dict[TopicPartition, list[Any]] = {}
        states = self.states
        if tps:
            selected = [
                tp for tp in tps if (s := states.get(tp)) is not None and s.chunks and not s.paused
            ]
            if selected:
                start = self._take_start % len(selected)
                self._take_start += 1
                order = itertools.chain(selected[start:], selected[:start])
                self._take_each_partition(order, budget, make_record, out)
            return out
        line = self._buffered
        visited: list[TopicPartition] = []
        try:
            for tp in line:  # not changed until the walk is over
                if budget <= 0:
                    break
                visited.append(tp)
                state = states.get(tp)
                if state is not None and state.chunks and not state.paused:
                    budget = self._take_into(tp, state, budget, make_record, out)
        finally:
            for tp in visited:
                del line[tp]
                if (state := states.get(tp)) is not None and state.chunks:
                    line[tp] = None  # to the back; one left empty drops out
        return out

    def _take_each_partition(
        self,
        order: Iterable[TopicPartition],
        budget: int,
        make_record: MakeRecord[R] | None,
        out: dict[TopicPartition, list[Any]],
    ) -> None:
        for tp in order:
            if budget <= 0:
                break
            budget = self._take_into(tp, self.states[tp], budget, make_record, out)

    def _take_into(
        self,
        tp: TopicPartition,
        state: PartitionState,
        budget: int,
        make_record: MakeRecord[R] | None,
        out: dict[TopicPartition, list[Any]],
    ) -> int:
        """``tp``'s records into ``out``; the budget left. A partition that fails raises
        only if nothing was taken yet: records already taken (positions moved) are handed
        out first, and the bad one raises on the next call, its position unmoved."""
        try:
            records = self._take_partition(tp, state, budget, make_record)
        except Exception:
            if out:
                return 0
            raise
        if records:
            out[tp] = records
            budget -= len(records)
        return budget

    def _take_partition(
        self,
        tp: TopicPartition,
        state: PartitionState,
        budget: int,
        make_record: MakeRecord[R] | None,
    ) -> list[Any]:
        """Records from the front of the partition's buffer, advancing its position.

        A record that fails to decode or deserialize stops the walk with the position on
        it: records taken before it are returned, and the next call raises (again, until
        the user seeks past it, as Kafka's consumer does).
        """
        out: list[Any] = []
        try:
            self._walk(tp, state, budget, make_record, out)
        except Exception:
            if not out:
                raise
        return out

    def _walk(
        self,
        tp: TopicPartition,
        state: PartitionState,
        budget: int,
        make_record: MakeRecord[R] | None,
        out: list[Any],
    ) -> None:
        while state.chunks and len(out) < budget:
            chunk = state.chunks[0]
            while chunk.batches and len(out) < budget:
                batch = chunk.batches[0]
                if chunk.columns is None:
                    chunk.columns = batch.columns()  # raises if damaged
                    chunk.index = 0
                    chunk.block, chunk.block_type = [], None
                    # the records taken next are this batch's (once per batch, not per take)
                    state.epoch = batch.partition_leader_epoch
                if make_record is None:
                    _take_slice(chunk, state, budget - len(out), tp, out)
                else:
                    _take_each(chunk, state, budget - len(out), tp=tp, make=make_record, out=out)
                if chunk.index >= len(chunk.columns.offsets):
                    chunk.batches.popleft()
                    self.taken_bytes[tp.topic] += batch.size_in_bytes
                    self.moved.add(tp)
                    chunk.columns = None
                    chunk.block = []
                    assert state.position is not None
                    state.position = max(state.position, batch.next_offset)  # compacted gaps
            if not chunk.batches:
                state.chunks.popleft()
                assert state.position is not None
                state.position = max(state.position, chunk.end)
                state.epoch = max(state.epoch, chunk.end_epoch)
                state.buffered_bytes -= chunk.size
                self.chunks_consumed += 1
                self._touch(tp)


def _take_slice(
    chunk: _Chunk, state: PartitionState, room: int, tp: TopicPartition, out: list[Any]
) -> None:
    """Hand out the current batch's next records as ConsumerRecords, made from the
    decoder's columns in C (no Python code per record), skipping those below the position.

    Offsets rise within a batch (the broker assigns them so), so the records below the
    position are a prefix: a fetch from the middle of a batch, or a seek into it.
    """
    columns, first, last = _bounds(chunk, state, room)
    if last > first:
        if last - first <= _SMALL_TAKE:
            out += _made(chunk, ConsumerRecord, tp, first, last)
        else:
            out += columns.rows(ConsumerRecord, tp, first, last)
        state.position = columns.offsets[last - 1] + 1
    chunk.index = last


def _bounds(chunk: _Chunk, state: PartitionState, room: int) -> tuple[RecordColumns, int, int]:
    """The front batch's columns, and the bounds of the next ``room`` records at or past
    the position (``chunk.index`` moved past those below it)."""
    columns = chunk.columns
    assert columns is not None and state.position is not None
    offsets = columns.offsets
    count = len(offsets)
    first = chunk.index
    if first < count and offsets[first] < state.position:  # not where the last take ended
        chunk.index = first = bisect_left(offsets, state.position, first)
    last = first + room
    if last > count:  # noqa: PLR1730 - min() is a call more on a getone()'s path
        last = count
    return columns, first, last


def _take_each(
    chunk: _Chunk,
    state: PartitionState,
    room: int,
    *,
    tp: TopicPartition,
    make: MakeRecord[R],
    out: list[Any],
) -> None:
    """Hand out the current batch's next records one by one through ``make`` (the
    deserializers), which may raise: the position stays on the record that failed."""
    columns, first, stop = _bounds(chunk, state, room)
    # one at a time (each Record freed once ``make`` is done with it), or a small take's
    # from the block made ahead
    records = (
        _made(chunk, Record, (), first, stop)
        if stop - first <= _SMALL_TAKE
        else columns.iter_rows(Record, (), first, stop)
    )
    for record in records:
        out.append(make(tp, record))
        state.position = record.offset + 1
        chunk.index += 1


class ReadReplicas:
    """KIP-392: the replica each partition's leader said to fetch it from instead (one in
    the consumer's ``client_rack``), until ``max_age_ms`` passes (Kafka's consumer keeps
    it for metadata.max.age.ms, then asks the leader again) or it fails."""

    def __init__(self, rack: str, max_age_ms: float) -> None:
        self.rack = rack
        """The consumer's ``client_rack`` (empty: none; no leader names a replica then)."""
        self.max_age_ms = max_age_ms
        self._named: dict[TopicPartition, tuple[int, float]] = {}
        self._version = 0  # bumped on each change: the targets are made again
        self._expiry = math.inf
        self._cache: tuple[object, int, Mapping[TopicPartition, int]] | None = None

    def targets(
        self, leaders: Mapping[TopicPartition, int], live: Container[int], now_ms: float
    ) -> Mapping[TopicPartition, int]:
        """Where to fetch each partition from: the replica named while it holds and is
        live, else the leader. The same object while nothing changes (a Subscription
        groups the partitions again only for a new one)."""
        if not self._named:
            return leaders
        if now_ms >= self._expiry:
            for tp in [tp for tp, (_, until) in self._named.items() if until <= now_ms]:
                self.forget(tp)
            self._expiry = min((until for _, until in self._named.values()), default=math.inf)
            if not self._named:
                return leaders
        cached = self._cache
        if cached is not None and cached[0] is leaders and cached[1] == self._version:
            return cached[2]
        targets = dict(leaders)
        for tp, (node, _) in self._named.items():
            if tp in targets and node in live:  # with no leader, it waits for one
                targets[tp] = node
        self._cache = (leaders, self._version, targets)
        return targets

    def prefer(self, tp: TopicPartition, node: int, now_ms: float | None = None) -> None:
        now = time.monotonic() * 1000 if now_ms is None else now_ms
        until = now + self.max_age_ms
        self._named[tp] = (node, until)
        self._expiry = min(self._expiry, until)
        self._version += 1

    def forget(self, tp: TopicPartition, node: int | None = None) -> bool:
        """Back to the leader for ``tp`` (only if it was read from ``node``, when given);
        True if it was read from another replica."""
        found = self._named.get(tp)
        if found is None or (node is not None and found[0] != node):
            return False
        del self._named[tp]
        self._version += 1
        return True
