"""One partition's delivery state for one share group (Kafka's KIP-932 SharePartition), kept
by the partition's leader: which records are out to which member, until when, and which
are done. Pure: no sockets, no log, no clock; the caller passes the time and the bounds of
the batches it read.

The window runs from the share-partition start offset (SPSO, :attr:`start`) to
:attr:`end`, one past the last offset ever taken into it (Kafka's SPEO + 1). Every offset
of the window is in exactly one run of offsets that share a state:

- AVAILABLE (0): to be delivered (again);
- ACQUIRED (1): out to one member until its acquisition lock ends;
- ACKNOWLEDGED (2): accepted (done);
- ARCHIVED (4): rejected, a gap, or delivered ``delivery_limit`` times (done).

Records are taken into the window as whole batches (Kafka's acquisition), so the work is
per run and per batch, never per record, unless acknowledgements of single records split
runs (each run then holds what one acknowledgement type covered). The start moves over
the done runs at its front; below it, everything is done.

What Kafka's client does with a range it is given: it delivers the records of the range
it finds in the batches sent with it, and acknowledges each offset of the range (a
missing one, e.g. compacted away, as GAP). The broker knows some offsets hold no record
without reading records: those between batches and those of control batches; those it
archives itself and never hands out.

A delivery's count goes up when it is acquired (Kafka's). A record that would become
available again having been delivered ``delivery_limit`` times is archived instead
(poison-message protection). A release because a member's share session closed does not
count that delivery (Kafka's DECREASE).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from protocol.errors import InvalidRecordStateError, InvalidRequestError

__all__ = [
    "ACCEPT",
    "ACKNOWLEDGED",
    "ACQUIRED",
    "ARCHIVED",
    "AVAILABLE",
    "GAP",
    "REJECT",
    "RELEASE",
    "RENEW",
    "Acknowledgement",
    "Acquired",
    "BatchBounds",
    "SharePartition",
    "StateBatch",
]

AVAILABLE, ACQUIRED, ACKNOWLEDGED, ARCHIVED = 0, 1, 2, 4
GAP, ACCEPT, RELEASE, REJECT, RENEW = 0, 1, 2, 3, 4
_DONE = (ACKNOWLEDGED, ARCHIVED)
_TO_STATE = {GAP: ARCHIVED, ACCEPT: ACKNOWLEDGED, RELEASE: AVAILABLE, REJECT: ARCHIVED}
_MAX_COUNT = 2**15 - 1  # the wire's int16


@dataclass(slots=True)
class _Run:
    first: int
    last: int
    state: int
    count: int  # deliveries so far
    member: str = ""  # the holder, while ACQUIRED
    deadline_ms: int = 0  # the end of its acquisition lock, while ACQUIRED

    def same(self, other: _Run) -> bool:
        return (
            self.state == other.state
            and self.count == other.count
            and self.member == other.member
            and self.deadline_ms == other.deadline_ms
        )


def _first(run: _Run) -> int:
    return run.first


class BatchBounds(NamedTuple):
    """A batch the leader read: its first and last offset, and whether it is a control
    batch (a transaction marker: no record for a consumer)."""

    base_offset: int
    last_offset: int
    control: bool = False


class Acquired(NamedTuple):
    """A range handed to a member (Kafka's AcquiredRecords)."""

    first_offset: int
    last_offset: int
    delivery_count: int


class Acknowledgement(NamedTuple):
    """Kafka's AcknowledgementBatch: one type for the whole range, or one per offset."""

    first_offset: int
    last_offset: int
    types: Sequence[int]


class StateBatch(NamedTuple):
    """A run as stored (Kafka's PersisterStateBatch); never ACQUIRED."""

    first_offset: int
    last_offset: int
    state: int
    delivery_count: int


class SharePartition:
    """See the module docstring. ``start`` is the SPSO to begin at (the group's
    ``share.auto.offset.reset`` decides it for a partition never read)."""

    def __init__(
        self,
        start: int,
        *,
        delivery_limit: int = 5,
        max_in_flight: int = 2000,
        stored: Iterable[StateBatch] = (),
    ) -> None:
        self.start = start
        self.end = start
        self.delivery_limit = delivery_limit
        self.max_in_flight = max_in_flight
        self._runs: list[_Run] = []
        for batch in sorted(stored):
            if batch.last_offset < self.end or batch.state == ACQUIRED:
                continue  # below the start, or a write that no store should hold
            first = max(batch.first_offset, self.end)
            if first > self.end:  # offsets written nowhere: never delivered
                self._runs.append(_Run(self.end, first - 1, AVAILABLE, 0))
            self._runs.append(_Run(first, batch.last_offset, batch.state, batch.delivery_count))
            self.end = batch.last_offset + 1
        self._advance()

    # --- what a fetch may take ------------------------------------------------------------

    def next_fetch_offset(self) -> int:
        """Where the next read for this group starts: the first offset to deliver again,
        else the end of the window."""
        for run in self._runs:
            if run.state == AVAILABLE:
                return run.first
        return self.end

    def can_acquire(self) -> bool:
        """Whether a fetch could take anything: records to deliver again, or room in the
        window for new ones (``group.share.partition.max.record.locks``)."""
        return self.end - self.start < self.max_in_flight or any(
            run.state == AVAILABLE for run in self._runs
        )

    def acquire(
        self,
        member: str,
        batches: Iterable[BatchBounds],
        max_records: int,
        now_ms: int,
        lock_ms: int,
        *,
        read_from: int | None = None,
    ) -> list[Acquired]:
        """Hand ``member`` what the batches just read (from :meth:`next_fetch_offset`
        on, in offset order) let it take: the AVAILABLE runs they cover, then whole
        new batches past the window while there is room, up to about ``max_records``
        (a soft limit: a batch is never split, as in Kafka). Offsets the batches show hold
        no record (between batches, control batches) are archived, never handed out; so
        are those from ``read_from`` (where the read began) to the first batch."""
        taken: list[Acquired] = []
        budget = max_records
        deadline = now_ms + lock_ms
        expect = read_from  # one past the previous batch: offsets before the next are gaps
        for base, last, control in batches:
            if last < self.start:
                expect = last + 1
                continue
            if expect is not None and base > expect:
                self._gap(expect, base - 1)
            expect = last + 1
            if base < self.end:  # within the window: what of it is AVAILABLE
                lo, hi = max(base, self.start), min(last, self.end - 1)
                if control:
                    self._archive_available(lo, hi)
                elif budget > 0:
                    budget -= self._reacquire(lo, hi, member, deadline, taken)
            if last >= self.end:  # past the window: new records, the whole batch
                if budget <= 0 or self.end - self.start >= self.max_in_flight:
                    break
                if base > self.end:  # the read went past these: the log has none there
                    self._runs.append(_Run(self.end, base - 1, ARCHIVED, 0))
                lo = max(base, self.end)
                if control:
                    self._runs.append(_Run(lo, last, ARCHIVED, 0))
                else:
                    self._runs.append(_Run(lo, last, ACQUIRED, 1, member, deadline))
                    _add(taken, lo, last, 1)
                    budget -= last - lo + 1
                self.end = last + 1
        self._tidy()
        return taken

    def _gap(self, first: int, last: int) -> None:
        """No record is at ``first..last`` (the log skips them): what of it is in the
        window is done, never handed out (past it, see :meth:`acquire`)."""
        first, last = max(first, self.start), min(last, self.end - 1)
        if first <= last:
            self._archive_available(first, last)

    def _archive_available(self, first: int, last: int) -> None:
        i, j = self._span(first, last)
        for run in self._runs[i:j]:
            if run.state == AVAILABLE:
                run.state = ARCHIVED

    def _reacquire(
        self, first: int, last: int, member: str, deadline: int, taken: list[Acquired]
    ) -> int:
        i, j = self._span(first, last)
        n = 0
        for run in self._runs[i:j]:
            if run.state != AVAILABLE:
                continue
            run.state, run.member, run.deadline_ms = ACQUIRED, member, deadline
            run.count = min(run.count + 1, _MAX_COUNT)
            _add(taken, run.first, run.last, run.count)
            n += run.last - run.first + 1
        return n

    # --- acknowledgements, releases, expiry -------------------------------------------------

    def acknowledge(
        self,
        member: str,
        acks: Sequence[Acknowledgement],
        now_ms: int,
        lock_ms: int,
        *,
        renew: bool = False,
    ) -> None:
        """Apply one request's acknowledgements of this partition by ``member``, all or
        none (Kafka's): INVALID_REQUEST for a range past the window or a malformed one,
        INVALID_RECORD_STATE for a record not acquired by ``member`` (not out, out to
        another member, or done). Ranges below the start are done already: skipped. The ranges
        come in order, none overlapping (Kafka's check, INVALID_REQUEST). RENEW (4) only
        where ``renew`` (ShareFetch and ShareAcknowledge v2, KIP-1222)."""
        after = -1
        for ack in acks:
            if ack.first_offset <= after:
                raise InvalidRequestError(
                    f"acknowledgement of offsets {ack.first_offset}..{ack.last_offset} overlaps "
                    "or precedes the one before it: give ranges in order, once each"
                )
            self._check(member, ack, renew)
            after = ack.last_offset
        for first, last, types in acks:
            if last < self.start:
                continue
            if len(types) == 1:
                self._settle(max(first, self.start), last, types[0], now_ms, lock_ms)
                continue
            lo = first  # per offset: runs of one type at a time
            for k in range(1, last - first + 2):
                if k == last - first + 1 or types[k] != types[k - 1]:
                    hi = first + k - 1
                    if hi >= self.start:
                        self._settle(max(lo, self.start), hi, types[k - 1], now_ms, lock_ms)
                    lo = hi + 1
        self._tidy()

    def _check(self, member: str, ack: Acknowledgement, renew: bool) -> None:
        first, last, types = ack
        if first > last or first < 0:
            raise InvalidRequestError(f"acknowledgement of offsets {first}..{last}: no such range")
        if len(types) not in (1, last - first + 1):
            raise InvalidRequestError(
                f"acknowledgement of offsets {first}..{last} with {len(types)} types: give one "
                "type, or one per offset"
            )
        for t in types:
            if t not in (GAP, ACCEPT, RELEASE, REJECT) and not (renew and t == RENEW):
                raise InvalidRequestError(
                    f"acknowledgement type {t} is not one of 0-{RENEW if renew else REJECT}"
                )
        if last < self.start:
            return
        if last >= self.end:
            raise InvalidRequestError(
                f"acknowledgement of offsets {first}..{last}: past the records handed out "
                f"(up to {self.end - 1})"
            )
        i = self._index(max(first, self.start))
        for run in self._runs[i:]:
            if run.first > last:
                break
            if run.state != ACQUIRED:
                raise InvalidRecordStateError(
                    f"offsets {run.first}..{run.last} are not out for delivery "
                    f"({_NAMES[run.state]}): acknowledge only records a fetch gave you, "
                    "before their acquisition lock ends"
                )
            if run.member != member:
                raise InvalidRecordStateError(
                    f"offsets {run.first}..{run.last} are out to another member"
                )

    def _settle(self, first: int, last: int, kind: int, now_ms: int, lock_ms: int) -> None:
        i, j = self._span(first, last)
        for run in self._runs[i:j]:
            if kind == RENEW:
                run.deadline_ms = now_ms + lock_ms
            elif _TO_STATE[kind] == AVAILABLE:
                self._make_available(run)
            else:
                run.state, run.member, run.deadline_ms = _TO_STATE[kind], "", 0

    def _make_available(self, run: _Run, *, counted: bool = True) -> None:
        if counted and run.count >= self.delivery_limit:
            run.state = ARCHIVED  # delivered as often as a record may be
        else:
            run.state = AVAILABLE
        run.member, run.deadline_ms = "", 0

    def release(self, member: str) -> bool:
        """``member``'s share session closed: what it holds is AVAILABLE again, and that
        delivery does not count (Kafka's). Whether anything was released."""
        released = False
        for run in self._runs:
            if run.state == ACQUIRED and run.member == member:
                run.count = max(run.count - 1, 0)
                self._make_available(run, counted=False)
                released = True
        if released:
            self._tidy()
        return released

    def expire(self, now_ms: int) -> bool:
        """Acquisition locks that ended by ``now_ms``: their records AVAILABLE again (or
        ARCHIVED, at the delivery limit). Whether any ended."""
        expired = False
        for run in self._runs:
            if run.state == ACQUIRED and run.deadline_ms <= now_ms:
                self._make_available(run)
                expired = True
        if expired:
            self._tidy()
        return expired

    def next_deadline(self) -> int | None:
        """When the next acquisition lock ends (ms), or None if nothing is out."""
        deadlines = [run.deadline_ms for run in self._runs if run.state == ACQUIRED]
        return min(deadlines) if deadlines else None

    def log_start_moved(self, log_start: int) -> None:
        """The log no longer has the records below ``log_start`` (retention, DeleteRecords):
        the window starts there. Acknowledgements of what was out below it are taken as
        done (ranges below the start are skipped)."""
        if log_start <= self.start:
            return
        self.start = log_start
        self.end = max(self.end, log_start)
        if self._runs and self._runs[0].first < log_start:
            i = self._split(log_start)
            del self._runs[:i]
        self._advance()

    # --- what is stored ---------------------------------------------------------------------

    def stored(self) -> list[StateBatch]:
        """The window as a store keeps it (Kafka's StateBatches): what is out counts as
        what it was before it went out (the delivery in progress is not stored; Kafka's)."""
        out: list[StateBatch] = []
        for run in self._runs:
            state, count = run.state, run.count
            if state == ACQUIRED:
                state, count = AVAILABLE, max(count - 1, 0)
            if out and out[-1].state == state and out[-1].delivery_count == count:
                out[-1] = out[-1]._replace(last_offset=run.last)
            else:
                out.append(StateBatch(run.first, run.last, state, count))
        return out

    def runs(self) -> list[tuple[int, int, int, int, str]]:
        """(first, last, state, delivery count, member) of every run: for describing and tests."""
        return [(r.first, r.last, r.state, r.count, r.member) for r in self._runs]

    # --- runs -------------------------------------------------------------------------------

    def _index(self, offset: int) -> int:
        return bisect.bisect_right(self._runs, offset, key=_first) - 1

    def _split(self, offset: int) -> int:
        """The index of the run that begins at ``offset`` (start <= offset <= end), the run
        holding it split in two first."""
        if offset >= self.end:
            return len(self._runs)
        i = self._index(offset)
        run = self._runs[i]
        if run.first == offset:
            return i
        tail = _Run(offset, run.last, run.state, run.count, run.member, run.deadline_ms)
        run.last = offset - 1
        self._runs.insert(i + 1, tail)
        return i + 1

    def _span(self, first: int, last: int) -> tuple[int, int]:
        """Indexes ``i, j`` such that ``runs[i:j]`` hold exactly ``first..last``."""
        i = self._split(first)
        return i, self._split(last + 1)

    def _tidy(self) -> None:
        self._advance()
        runs = self._runs
        if len(runs) < 2:
            return
        merged = [runs[0]]
        for run in runs[1:]:
            prev = merged[-1]
            if prev.same(run):
                prev.last = run.last
            else:
                merged.append(run)
        self._runs = merged

    def _advance(self) -> None:
        """The start past the done runs at the front."""
        k = 0
        for run in self._runs:
            if run.state not in _DONE:
                break
            k += 1
        if k:
            self.start = self._runs[k - 1].last + 1
            del self._runs[:k]


_NAMES = {
    AVAILABLE: "available",
    ACQUIRED: "acquired",
    ACKNOWLEDGED: "acknowledged",
    ARCHIVED: "archived",
}


def _add(taken: list[Acquired], first: int, last: int, count: int) -> None:
    if taken and taken[-1].last_offset + 1 == first and taken[-1].delivery_count == count:
        taken[-1] = taken[-1]._replace(last_offset=last)
    else:
        taken.append(Acquired(first, last, count))
