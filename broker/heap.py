"""The broker's objects and CPython's cyclic collector.

A full collection walks every object the collector tracks and is not frozen, and nothing
is served while it runs. Walking costs what the objects point at (~140 ns a reference on
this 2-core VM): the broker's long-lived state, a few dozen objects a partition, made a
full collection 20-70 ms on a broker of 1,024 partitions, every few seconds under load.

Frozen objects (``gc.freeze``) are not walked; only reference counting frees them. The
daemon freezes its imports before the broker exists (:func:`settle_heap`), and a
:class:`HeapSettler` then re-freezes what the broker holds once it stops changing.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

QUIET_S = 5.0
SPACING_S = 60.0
THAW_EVERY_S = 1800.0
THAW_AFTER_DROPPED = 100


def settle_heap() -> int:
    """Put the objects that exist now out of the cyclic collector's reach; returns how many.

    Importing the broker leaves ~40,000 (modules, classes, functions, kazoo, structlog):
    13-17 ms a full collection on this 2-core VM. Frozen, they are not walked again.
    Garbage already made goes first. Call it before the broker exists; after that, a
    :class:`HeapSettler` does it.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class HeapSettler:
    """Freezes the broker's long-lived state once it has settled, and now and then thaws
    it to free what became garbage since.

    A settle collects and freezes what is left. It is due when the partitions here
    changed (LeaderAndIsr, StopReplica, UpdateMetadata: ``changed()``) and nothing changed
    for ``quiet_s``, at most once every ``spacing_s`` for such changes (a controller's
    burst settles once, and a flapping ISR cannot make every minute cost more than one
    collection), and never while a LeaderAndIsr or StopReplica is under way
    (``changing()``). It walks only what is not frozen yet: what one full collection
    walks.

    Only reference counting frees a frozen object, so a cycle frozen while alive that
    later becomes garbage (a deleted partition's objects, a closed connection's fetch
    session) is kept until a thaw: the next settle after ``thaw_after_dropped``
    partitions were dropped here in all, or the controller's view of the cluster was let
    go, and one every ``thaw_every_s`` anyway (after quiet, or ``spacing_s`` late at
    most), unfreeze everything first, a walk of the whole heap (what each full collection
    cost before). What is held is bounded by the settles between two thaws. (A freeze
    kept for the process's life held a deleted topic's log for good.)

    A partition's objects are freed by reference counting when it goes (deleting 256
    froze-in partitions freed 8,712 frozen objects, and a thaw after it found no cyclic
    garbage left), so a thaw per deleted topic was a stall (15-30 ms at 42,000 objects,
    60-120 ms at 1,024 partitions) freeing nothing: now only a drop of many pays for one.
    """

    def __init__(
        self,
        *,
        quiet_s: float = QUIET_S,
        spacing_s: float = SPACING_S,
        thaw_every_s: float = THAW_EVERY_S,
        thaw_after_dropped: int = THAW_AFTER_DROPPED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quiet_s = quiet_s
        self._spacing_s = spacing_s
        self._thaw_every_s = thaw_every_s
        self._thaw_after_dropped = max(thaw_after_dropped, 1)
        self._clock = clock
        now = clock()
        self._changed_at: float | None = None
        self._dropped = 0
        self._let_go = False
        self._busy = 0
        self._earliest = now  # the first change may settle as soon as it is quiet
        self._thaw_at = now + thaw_every_s
        self.settles = 0
        self.thaws = 0
        self.last_ms = 0.0
        self.frozen = 0

    def changed(self, *, dropped: int = 0, let_go: bool = False) -> None:
        """Partitions came or went here, or their metadata was replaced; ``dropped``: how
        many stopped being replicas here; ``let_go``: a large structure was dropped (the
        controller's view of the cluster): the next settle thaws."""
        self._changed_at = self._clock()
        self._dropped += dropped
        self._let_go = self._let_go or let_go

    @contextlib.contextmanager
    def changing(self, *, dropped: int = 0) -> Iterator[None]:
        """Around a request that changes the partitions here over several loop passes (a
        LeaderAndIsr opening logs, a StopReplica deleting ``dropped`` of them): no settle
        while it runs, which would freeze what is half built or about to go, and a change
        when it ends."""
        self._busy += 1
        self.changed()
        try:
            yield
        finally:
            self._busy -= 1
            self.changed(dropped=dropped)

    def due(self) -> bool:
        if self._busy:
            return False
        now = self._clock()
        if now >= self._thaw_at + self._spacing_s:
            return True  # a controller that never goes quiet does not put the thaw off for good
        changed = self._changed_at
        if changed is not None and now - changed < self._quiet_s:
            return False  # whatever is due waits for the changes to end
        return now >= self._thaw_at or (changed is not None and now >= self._earliest)

    def settle(self) -> bool:
        """Collect and freeze, after a thaw if one is due; returns whether it thawed."""
        now = self._clock()
        thaw = self._let_go or self._dropped >= self._thaw_after_dropped or now >= self._thaw_at
        started = time.perf_counter()
        if thaw:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.last_ms = (time.perf_counter() - started) * 1000
        self.frozen = gc.get_freeze_count()
        self.settles += 1
        now = self._clock()
        self._changed_at = None
        self._earliest = now + self._spacing_s
        if thaw:
            self.thaws += 1
            self._dropped = 0
            self._let_go = False
            self._thaw_at = now + self._thaw_every_s
        return thaw
