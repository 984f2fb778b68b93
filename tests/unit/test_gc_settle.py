"""broker.heap: when the daemon freezes the broker's long-lived state, and that a thaw
frees what was frozen and became garbage since."""

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.heap import HeapSettler
from broker.log import Log, LogConfig
from protocol.records import encode_batch


class _Node:
    me: object = None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def thawed() -> Iterator[None]:
    """A settle freezes this process's objects: give them back to the collector after."""
    try:
        yield
    finally:
        gc.unfreeze()


def _walked(o: object) -> bool:
    """Whether a full collection looks at ``o`` (frozen objects are not listed)."""
    return any(x is o for x in gc.get_objects())


def test_a_change_settles_once_quiet_then_not_again_before_the_spacing(thawed: None) -> None:
    clock = _Clock()
    heap = HeapSettler(quiet_s=5, spacing_s=60, thaw_every_s=1800, clock=clock)
    assert not heap.due()  # nothing changed
    heap.changed()
    clock.now += 4.9
    assert not heap.due()  # not quiet yet
    heap.changed()  # a burst goes on: quiet counts from its last change
    clock.now += 4.9
    assert not heap.due()
    clock.now += 0.1
    assert heap.due()
    assert heap.settle() is False  # nothing dropped: no thaw
    assert heap.settles == 1 and heap.thaws == 0 and heap.frozen > 0
    assert not heap.due()
    heap.changed()
    clock.now += 30
    assert not heap.due()  # quiet, but a settle was 30 s ago
    clock.now += 30
    assert heap.due()


def test_a_thaw_comes_after_partitions_are_dropped_and_every_interval(thawed: None) -> None:
    clock = _Clock()
    heap = HeapSettler(quiet_s=5, spacing_s=60, thaw_every_s=1800, clock=clock)
    heap.changed(dropped=100)
    heap.changed()  # a later change does not forget the drop
    clock.now += 5
    assert heap.due() and heap.settle() is True
    clock.now += 1799
    assert not heap.due()
    clock.now += 1
    assert heap.due()  # no change: the interval alone
    assert heap.settle() is True and heap.thaws == 2
    clock.now += 1799
    assert not heap.due()  # counted from that thaw


def test_a_settle_freezes_what_lives_and_a_thaw_frees_what_died_since(thawed: None) -> None:
    clock = _Clock()
    heap = HeapSettler(quiet_s=0, spacing_s=0, thaw_every_s=1800, clock=clock)
    kept = _Node()
    kept.me = kept  # a cycle, as a partition's objects can be
    gone = weakref.ref(kept)
    assert heap.settle() is False
    assert not _walked(kept)  # full collections skip it
    del kept
    gc.collect()
    heap.changed()
    heap.settle()  # no thaw: what is frozen stays
    assert gone() is not None
    heap.changed(let_go=True)
    assert heap.settle() is True
    assert gone() is None
    young = _Node()
    assert _walked(young)  # made after: walked as ever


def test_settles_without_a_thaw_do_not_put_the_thaw_off(thawed: None) -> None:
    """A broker that only ever gets LeaderAndIsr and UpdateMetadata still thaws on time:
    what it froze is freed within the interval."""
    clock = _Clock()
    heap = HeapSettler(quiet_s=5, spacing_s=60, thaw_every_s=1800, clock=clock)
    start = clock.now
    thaws = []
    while clock.now - start < 1900:
        heap.changed()
        clock.now += 60
        if heap.due():
            thaws.append(heap.settle())
    assert thaws.count(True) == 1 and thaws[-1] is False  # the one thaw, then settles again
    assert start + 1800 <= clock.now


def test_a_drop_thaws_once_and_still_waits_for_quiet(thawed: None) -> None:
    clock = _Clock()
    heap = HeapSettler(quiet_s=5, spacing_s=60, thaw_every_s=1800, clock=clock)
    heap.changed(dropped=100)
    clock.now += 4
    assert not heap.due()  # dropped or not, a burst settles once it is over
    clock.now += 1
    assert heap.settle() is True
    heap.changed()
    clock.now += 60
    assert heap.due() and heap.settle() is False  # the drop was thawed: not again


def test_no_settle_while_a_change_is_under_way(thawed: None) -> None:
    """A LeaderAndIsr opening 2,100 logs can take 11 s: what it half built is not frozen,
    nor logs a StopReplica is deleting (and the thaw is not spent before they go)."""
    clock = _Clock()
    heap = HeapSettler(quiet_s=5, spacing_s=60, thaw_every_s=1800, clock=clock)
    with heap.changing(dropped=100):
        clock.now += 1000
        assert not heap.due()
    assert not heap.due()  # quiet counts from its end
    clock.now += 4
    assert not heap.due()
    clock.now += 5
    assert heap.due() and heap.settle() is True


def test_a_controller_that_never_goes_quiet_does_not_put_the_thaw_off(thawed: None) -> None:
    clock = _Clock()
    heap = HeapSettler(quiet_s=5, spacing_s=60, thaw_every_s=1800, clock=clock)
    start = clock.now
    while not heap.due():
        heap.changed()  # an ISR flapping every 3 s
        clock.now += 3
    assert 1800 <= clock.now - start <= 1860 + 3
    assert heap.settle() is True


def test_a_few_dropped_partitions_wait_for_more_or_the_interval(thawed: None) -> None:
    """A partition's objects go by reference counting: a thaw per deleted topic was a
    stall freeing nothing. Drops add up to ``thaw_after_dropped``; the interval thaws
    what is left anyway."""
    clock = _Clock()
    heap = HeapSettler(
        quiet_s=5, spacing_s=60, thaw_every_s=1800, thaw_after_dropped=100, clock=clock
    )
    for _ in range(3):
        with heap.changing(dropped=33):  # three small topics deleted, a minute apart
            clock.now += 1
        clock.now += 60
        assert heap.due() and heap.settle() is False
    with heap.changing(dropped=1):  # the hundredth
        clock.now += 1
    clock.now += 60
    assert heap.settle() is True and heap.thaws == 1
    with heap.changing(dropped=1):
        clock.now += 1
    clock.now += 1800
    assert heap.due() and heap.settle() is True  # the interval, with 1 dropped since


def test_a_deleted_partitions_frozen_objects_go_without_a_thaw(
    thawed: None, tmp_path: Path
) -> None:
    """What the threshold rests on: a deleted log, frozen while alive, is freed by
    reference counting, with no thaw."""
    clock = _Clock()
    heap = HeapSettler(quiet_s=0, spacing_s=0, thaw_every_s=1800, clock=clock)
    log = Log.open(tmp_path / "t-0", LogConfig())
    log.append(
        encode_batch([(None, b"v", None, 1000)], producer_id=7, producer_epoch=0, base_sequence=0)
    )
    gone = weakref.ref(log)
    heap.settle()
    assert gc.is_tracked(log) and not _walked(log)  # frozen
    log.delete()
    del log
    assert gone() is None
