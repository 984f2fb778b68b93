"""The leader's notes to the controller of its ISR changes (``/isr_change_notification``):
changes made close together go in one znode, and a note that fails is written again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import broker.replica.isr as isr_module
from broker.log import Log, LogConfig
from broker.replica.isr import IsrUpdater
from broker.replica.partition import Partition
from broker.zk import GuardedWrite, ZkError


class _Zk:
    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ZkError(
            "ZooKeeper unavailable for /isr_change_notification: ConnectionLoss"
        )
        self.sets: list[str] = []
        self.batches: list[int] = []  # writes per write_many call
        self.notes: list[list[tuple[str, int]]] = []

    async def write_many(self, writes: list[GuardedWrite]) -> list[int]:
        self.batches.append(len(writes))
        self.sets += [w.path for w in writes]
        return [w.version + 1 for w in writes]

    async def create(self, path: str, value: bytes = b"", **options: object) -> str:
        if self.failures:
            self.failures -= 1
            raise self.error
        body = json.loads(value)
        self.notes.append([(p["topic"], p["partition"]) for p in body["partitions"]])
        return f"{path}{len(self.notes):010d}"


@pytest.fixture
def partitions(tmp_path: Path) -> Any:
    logs = [Log.open(tmp_path / f"t-{i}", LogConfig()) for i in range(3)]
    yield [
        Partition(
            topic="t",
            index=i,
            log=log,
            local_broker_id=1,
            leader_id=1,
            leader_epoch=1,
            isr=[1],
            replicas=[1, 2],
        )
        for i, log in enumerate(logs)
    ]
    for log in logs:
        log.close()


async def test_changes_made_together_are_told_in_one_note(partitions: list[Partition]) -> None:
    """The ISRs of one loop pass are written to their state znodes together (one
    multi), at once; the controller hears of all of them in one notification (one per
    partition was 2,000 ZooKeeper writes when a broker's followers rejoined, and
    stalled its leaders 2-3 s)."""
    zk = _Zk()
    updater = IsrUpdater(zk, 1)  # type: ignore[arg-type]
    results = await asyncio.gather(*(updater.write(p, [1, 2]) for p in partitions))
    assert results == [True, True, True]
    assert [p.isr for p in partitions] == [[1, 2]] * 3  # not waiting for the note
    assert zk.batches == [3] and zk.notes == []  # the three states in one batch
    assert updater._noting is not None
    await asyncio.wait_for(updater._noting, 5)  # the linger, then the note
    assert zk.notes == [[("t", 0), ("t", 1), ("t", 2)]]
    await updater.close()


@pytest.mark.parametrize("error", [ZkError("connection loss"), RuntimeError("unexpected")])
async def test_a_note_that_fails_is_written_again(
    partitions: list[Partition], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Whatever the failure: a note lost would leave the controller's picture of the
    ISR stale until the next change, which in a quiet cluster may never come."""
    monkeypatch.setattr(isr_module, "_NOTE_RETRY_S", 0.01)
    zk = _Zk(failures=2, error=error)
    updater = IsrUpdater(zk, 1)  # type: ignore[arg-type]
    assert await updater.write(partitions[0], [1, 2])
    assert updater._noting is not None
    await asyncio.wait_for(updater._noting, 5)  # ends once the note is written
    assert zk.notes == [[("t", 0)]]
    assert zk.failures == 0
    await updater.close()


async def test_notes_of_many_changes_are_split(
    partitions: list[Partition], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(isr_module, "_NOTE_MAX", 2)
    zk = _Zk()
    updater = IsrUpdater(zk, 1)  # type: ignore[arg-type]
    await asyncio.gather(*(updater.write(p, [1, 2]) for p in partitions))
    assert updater._noting is not None
    await asyncio.wait_for(updater._noting, 5)
    assert zk.notes == [[("t", 0), ("t", 1)], [("t", 2)]]
    await updater.close()


async def test_after_close_changes_are_not_told(partitions: list[Partition]) -> None:
    zk = _Zk()
    updater = IsrUpdater(zk, 1)  # type: ignore[arg-type]
    await updater.close()
    assert await updater.write(partitions[0], [1, 2])  # the state is written all the same
    assert zk.notes == [] and updater._noting is None  # and no note is started


async def test_writes_queued_at_close_fail_instead_of_hanging(
    partitions: list[Partition],
) -> None:
    """close() between a write's queueing and its send: the writer hears an error (its
    outcome is unknown to it), and nothing is sent after close."""
    zk = _Zk()
    updater = IsrUpdater(zk, 1)  # type: ignore[arg-type]
    writing = asyncio.ensure_future(updater.write(partitions[0], [1, 2]))
    await asyncio.sleep(0)  # queued, its send scheduled for the end of this pass
    await updater.close()
    with pytest.raises(ZkError, match="stopping"):
        await asyncio.wait_for(writing, 5)
    await asyncio.sleep(0.01)
    assert zk.batches == []
