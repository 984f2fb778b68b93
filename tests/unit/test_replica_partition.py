"""A leader's view of its followers, the high watermark, and follower truncation by
leader epoch (KIP-101/KIP-279), on real logs in temporary directories."""

from pathlib import Path
from typing import Any

import pytest

from broker.log import Log, LogConfig
from broker.replica import partition as partition_module
from broker.replica.fetcher import ReplicaFetcher, _Followed
from broker.replica.partition import Partition
from protocol.apis import EpochEndOffset
from protocol.errors import NotLeaderOrFollowerError
from protocol.records import encode_batch


def _records(n: int) -> bytes:
    return encode_batch([(None, b"v", None, 1000) for _ in range(n)])


def _partition(tmp_path: Path, *, isr: list[int]) -> Partition:
    log = Log.open(tmp_path / "t-0", LogConfig())
    return Partition(
        topic="t",
        index=0,
        log=log,
        local_broker_id=1,
        leader_id=1,
        leader_epoch=0,
        isr=isr,
        replicas=[1, 2, 3],
    )


def test_high_watermark_is_the_smallest_end_in_the_isr_and_joiners_count(tmp_path: Path) -> None:
    p = _partition(tmp_path, isr=[1, 2])
    p.become_leader(now_ms=0)
    p.log.append(_records(10), leader_epoch=0)
    assert not p.maybe_advance_high_watermark()  # follower 2 has not fetched yet
    p.update_follower(2, 10, now_ms=5)
    assert p.maybe_advance_high_watermark() and p.high_watermark == 10
    p.update_follower(3, 4, now_ms=5)  # not in the ISR: does not hold the watermark back
    p.log.append(_records(5), leader_epoch=0)
    p.update_follower(2, 15, now_ms=6)
    # ...unless an ISR write adding it is in flight (it may land before we hear it did)
    p.joining = {3}
    assert not p.maybe_advance_high_watermark()
    p.joining = set()
    assert p.maybe_advance_high_watermark() and p.high_watermark == 15
    p.update_follower(2, 99, now_ms=7)  # beyond our log: not progress
    assert p.followers[2].log_end_offset == 15
    p.log.close()


def test_caught_up_is_kafkas_rule_and_laggards_are_named(tmp_path: Path) -> None:
    p = _partition(tmp_path, isr=[1, 2, 3])
    p.become_leader(now_ms=1000)
    p.log.append(_records(10), leader_epoch=0)
    p.update_follower(2, 10, now_ms=2000)  # at our end: caught up now
    p.update_follower(3, 4, now_ms=2000)  # behind
    assert p.out_of_sync(now_ms=2500, max_lag_ms=2000) == []
    assert p.out_of_sync(now_ms=3500, max_lag_ms=2000) == [3]  # last caught up at 1000
    p.log.close()


@pytest.fixture
async def fetcher() -> ReplicaFetcher:
    f = ReplicaFetcher(2, 1, "127.0.0.1", 1)  # never dialled: no partitions are added
    yield f  # type: ignore[misc]
    await f.close()


def _follower(tmp_path: Path, epochs_and_counts: list[tuple[int, int]], hw: int) -> _Followed:
    log = Log.open(tmp_path / "t-0", LogConfig())
    for epoch, count in epochs_and_counts:
        for _ in range(count):  # one record per batch: truncation lands on any offset
            log.append(_records(1), leader_epoch=epoch)
    p = Partition(
        topic="t",
        index=0,
        log=log,
        local_broker_id=2,
        leader_id=1,
        leader_epoch=9,
        replicas=[1, 2],
        high_watermark=hw,
    )
    return _Followed(p, 9)


@pytest.mark.parametrize(
    "case",
    [
        # the leader has our latest epoch, shorter: cut to its end
        ([(0, 5), (3, 5)], 3, EpochEndOffset(partition=0, leader_epoch=3, end_offset=7), True, 7),
        # ...or longer: keep all of ours
        (
            [(0, 5), (3, 5)],
            3,
            EpochEndOffset(partition=0, leader_epoch=3, end_offset=50),
            True,
            10,
        ),
        # never had our epoch 3; its epoch 0 ended at 4: cut there, and it is settled
        ([(0, 5), (3, 5)], 3, EpochEndOffset(partition=0, leader_epoch=0, end_offset=4), True, 4),
        # its latest <= ours is 2, which we never had: cut to where our epoch 0 ended, ask again
        (
            [(0, 5), (3, 5)],
            3,
            EpochEndOffset(partition=0, leader_epoch=2, end_offset=8),
            False,
            5,
        ),
        # all of ours is of an epoch it never had: all of it goes (ours of epoch 1 ends
        # where our first epoch starts)
        ([(4, 5)], 4, EpochEndOffset(partition=0, leader_epoch=1, end_offset=3), True, 0),
        # the leader knows nothing that old: fall back to our high watermark
        (
            [(0, 5), (3, 5)],
            3,
            EpochEndOffset(partition=0, leader_epoch=-1, end_offset=-1),
            True,
            6,
        ),
    ],
)
async def test_truncation_by_leader_epoch(
    tmp_path: Path, fetcher: ReplicaFetcher, case: tuple[Any, ...]
) -> None:
    ours, asked, answer, settled, cut_to = case
    followed = _follower(tmp_path, ours, hw=6)
    assert fetcher._apply_truncation(followed, asked, answer) is settled
    log = followed.partition.log
    assert log.log_end_offset == cut_to
    assert log.log_start_offset == 0
    log.close()


async def test_a_follower_drops_what_it_wrote_in_an_epoch_its_new_leader_never_had(
    tmp_path: Path, fetcher: ReplicaFetcher
) -> None:
    """Y led epoch 3 and wrote P; nobody fetched it. X, in the ISR, led epoch 4 and wrote
    Q; nobody fetched it. Y, still in the ISR, leads epoch 5, and X follows it. Asked
    about epoch 4, Y answers "epoch 3, ending at 1"; X holds nothing of epoch 3, which
    its cache must answer as ending where its first epoch starts (0), as Kafka's does:
    answered "unknown", X kept Q where Y has P, and both were committed. (Found by a
    fuzz of the producer against replicas with their own logs.)"""
    y = Log.open(tmp_path / "y" / "t-0", LogConfig())
    x = Log.open(tmp_path / "x" / "t-0", LogConfig())
    try:
        y.append(_records(1), leader_epoch=3)
        x.append(_records(1), leader_epoch=4)
        follower = Partition(
            topic="t", index=0, log=x, local_broker_id=2, leader_id=1, leader_epoch=5
        )
        for _ in range(10):  # OffsetsForLeaderEpoch rounds until it settles
            asked = x.epochs.latest_epoch
            epoch, end = y.end_offset_for_epoch(asked)
            answer = EpochEndOffset(partition=0, leader_epoch=epoch, end_offset=end)
            if fetcher._apply_truncation(_Followed(follower, 5), asked, answer):
                break
        assert (epoch, end) == (3, 1)
        assert x.log_end_offset == 0  # Q is gone: X fetches P from Y next
    finally:
        x.close()
        y.close()


def test_a_high_watermark_move_looks_only_at_the_waiters_it_reaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acks=all produces wait in offset order: each move of the high watermark answers
    those it reached without reading every produce still waiting (1,000 waiting produces
    and 1,000 moves read 2,000 offsets, not half a million). A retry waiting for an
    earlier offset (an idempotent duplicate) is still answered as soon as it is reached."""
    reads = 0

    class CountingWaiter(partition_module.HighWatermarkWaiter):
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            if name == "required_offset":
                nonlocal reads
                reads += 1
            return object.__getattribute__(self, name)

    monkeypatch.setattr(partition_module, "HighWatermarkWaiter", CountingWaiter)
    p = _partition(tmp_path, isr=[1, 2])
    answered: list[int] = []
    for offset in range(1, 1001):
        p.wait_for_high_watermark(offset, lambda error, offset=offset: answered.append(offset))
    for hw in range(1, 1001):
        p.high_watermark = hw
        p.complete_waiters()
        assert answered[-1] == hw
    assert answered == list(range(1, 1001))
    assert reads <= 2000

    # out of order: a duplicate waits for offset 1,005 behind one waiting for 1,010; it is
    # answered as soon as it is reached, and the ones in order still take the short path
    answered.clear()
    p.wait_for_high_watermark(1010, lambda error: answered.append(1010))
    p.wait_for_high_watermark(1005, lambda error: answered.append(1005))
    for offset in range(1011, 1111):
        p.wait_for_high_watermark(offset, lambda error, offset=offset: answered.append(offset))
    p.high_watermark = 1006
    p.complete_waiters()
    assert answered == [1005]
    reads = 0
    for hw in range(1010, 1111):
        p.high_watermark = hw
        p.complete_waiters()
    assert answered == [1005, *range(1010, 1111)]
    assert reads <= 2 * 101
    # gave up (timed out) or failed: nothing is kept
    errors: list[object] = []
    p.wait_for_high_watermark(1200, errors.append)
    late = p.wait_for_high_watermark(1150, lambda error: answered.append(1150))
    assert late is not None
    p.forget_waiter(late)
    p.wait_for_high_watermark(1120, errors.append)  # out of order
    p.fail_waiters(NotLeaderOrFollowerError("gone"))
    assert len(errors) == 2 and all(isinstance(e, NotLeaderOrFollowerError) for e in errors)
    assert answered[-1] == 1110  # the one forgotten is never called
    assert not p._waiters and not p._out_of_order
