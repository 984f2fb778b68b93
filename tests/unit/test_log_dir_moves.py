"""Moving a partition's log between a broker's log dirs while it is written
(AlterReplicaLogDirs: broker/replica/moves.py, LogManager's copies): a real replica
manager leading t-0, two log dirs in a temporary folder, no sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.log import LogConfig
from broker.log.cleaner import CleanerConfig, LogCleaner
from broker.log.manager import DELETE_SUFFIX, FUTURE, LogManager, TopicPartition
from broker.metadata import MetadataCache
from broker.replica import moves as moves_module
from broker.replica.manager import ReplicaManager
from protocol.apis import (
    AlterReplicaLogDir,
    AlterReplicaLogDirsRequest,
    AlterReplicaLogDirTopic,
    DescribeLogDirsRequest,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
)
from protocol.errors import LogDirNotFoundError, ReplicaNotAvailableError
from protocol.records import decode_batches, encode_batch
from tests.unit.test_replica_fetch_wake import _leader_state

pytestmark = pytest.mark.timeout(30)

TP = TopicPartition("t", 0)
SMALL = LogConfig(segment_bytes=4096, file_delete_delay_ms=0)  # segments from a few hundred records


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[LogManager, ReplicaManager]]:
    """Broker 1 leading t-0 (RF=1) with log dirs a/ and b/; t-0 in a/."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    logs = LogManager(dirs, broker_id=1, cluster_id="c")
    logs.startup()
    logs.preferred_dirs[TP] = dirs[0]

    async def load(topic: str) -> LogConfig:
        return SMALL

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    await manager.become_leader_or_follower([_leader_state(isr=[1])])
    yield logs, manager
    await manager.shutdown()
    await logs.flushes_done()
    logs.shutdown()


def _produce(manager: ReplicaManager, first: int, count: int) -> None:
    """Records ``first`` .. ``first + count - 1``, a batch each (values v<i>)."""
    for i in range(first, first + count):
        _send(manager, [(b"k%d" % (i % 7), b"v%d" % i, None, 1000 + i)])


def _send(manager: ReplicaManager, records: list[tuple[bytes, bytes, None, int]]) -> None:
    """One batch of ``records`` to t-0, as a producer's acks=1 request."""
    partition = ProducePartition(index=0, records=encode_batch(records))
    manager.produce(
        ProduceRequest(
            acks=1, timeout_ms=1000, topics=[ProduceTopic(name="t", partitions=[partition])]
        )
    )


def _unfinished(tmp_path: Path, moved_to: Path) -> bool:
    """Whether the swap's last steps (in a worker thread) are still to come."""
    return (
        (moved_to / FUTURE).exists()
        or (tmp_path / "a" / "t-0").exists()
        or bool(list((tmp_path / "a").glob(f"*{DELETE_SUFFIX}")))
    )


def _values(log: object) -> list[bytes]:
    """Every record value in the log, in order (read from its files)."""
    out: list[bytes] = []
    offset = log.log_start_offset  # type: ignore[attr-defined]
    while offset < log.log_end_offset:  # type: ignore[attr-defined]
        data = log.read(offset, 1 << 20)  # type: ignore[attr-defined]
        for batch in decode_batches(data.read()):
            out += [r.value for r in batch]
            offset = batch.next_offset
    return out


def _move(path: Path) -> AlterReplicaLogDirsRequest:
    return AlterReplicaLogDirsRequest(
        dirs=[
            AlterReplicaLogDir(
                path=str(path), topics=[AlterReplicaLogDirTopic(name="t", partitions=[0])]
            )
        ]
    )


def _codes(response: object) -> list[int]:
    return [p.error_code for t in response.results for p in t.partitions]  # type: ignore[attr-defined]


async def _until_moved(logs: LogManager, directory: Path) -> None:
    for _ in range(2000):
        if TP not in logs.futures and logs.logs[TP].dir.parent == directory:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"t-0 was not moved to {directory}")


async def test_a_log_moves_to_another_dir_while_it_is_written_and_reads_the_same(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    logs, manager = broker
    _produce(manager, 0, 300)
    before = logs.logs[TP]
    assert before.dir.parent == tmp_path / "a" and before.segment_count > 3
    answer = await manager.alter_replica_log_dirs(_move(tmp_path / "b"))
    assert _codes(answer) == [0]
    for round_ in range(5):  # written while it is copied
        _produce(manager, 300 + 20 * round_, 20)
        await asyncio.sleep(0)
    await _until_moved(logs, tmp_path / "b")
    after = logs.logs[TP]
    assert after is manager.partitions[TP].log and after is not before
    assert _values(after) == [b"v%d" % i for i in range(400)]
    assert after.log_end_offset == 400
    assert after.epochs.entries == before.epochs.entries
    for _ in range(200):  # the marker's and the old log's removal, in a worker thread
        if not _unfinished(tmp_path, after.dir):
            break
        await asyncio.sleep(0.01)
    assert not (after.dir / FUTURE).exists()
    assert not (tmp_path / "a" / "t-0").exists()
    assert not list((tmp_path / "a").glob(f"*{DELETE_SUFFIX}"))
    _produce(manager, 400, 5)  # and it is the partition's log from here on
    assert _values(logs.logs[TP])[-5:] == [b"v%d" % i for i in range(400, 405)]


async def test_describe_log_dirs_shows_the_copy_and_its_lag(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    logs, manager = broker
    _produce(manager, 0, 50)
    manager.moves._chunk = manager.moves._tail = 256  # one batch or two a step
    gate = asyncio.Event()
    real_step = manager.moves._step

    async def held_step(*args: object) -> bool:
        await gate.wait()
        return await real_step(*args)  # type: ignore[arg-type]

    manager.moves._step = held_step  # type: ignore[method-assign]
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    described = await manager.describe_log_dirs(DescribeLogDirsRequest())
    by_dir = {
        d.log_dir: [
            (p.partition_index, p.is_future_key, p.offset_lag)
            for t in d.topics
            for p in t.partitions
        ]
        for d in described.results
    }
    assert by_dir[str(tmp_path / "a")] == [(0, False, 0)]
    assert by_dir[str(tmp_path / "b")] == [(0, True, 50)]
    metrics = {name: value for name, _, value in manager.metrics()}
    assert metrics["headwater_log_dir_moves_in_progress"] == 1
    assert metrics["headwater_log_dir_move_max_lag"] == 50
    assert metrics["headwater_log_dir_moves_total"] == 0
    gate.set()
    await _until_moved(logs, tmp_path / "b")
    metrics = {name: value for name, _, value in manager.metrics()}
    assert metrics["headwater_log_dir_moves_in_progress"] == 0
    assert metrics["headwater_log_dir_moves_total"] == 1
    described = await manager.describe_log_dirs(DescribeLogDirsRequest())
    assert [d.topics for d in described.results if d.log_dir == str(tmp_path / "a")] == [[]]


async def test_a_truncation_of_the_log_truncates_the_copy_first(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    logs, manager = broker
    _produce(manager, 0, 100)
    manager.moves._chunk = manager.moves._tail = 512
    copying = manager.moves._copies
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    future = logs.futures[TP]
    for _ in range(10_000):
        if future.log_end_offset >= 60:
            break
        await asyncio.sleep(0)
    copying[TP].cancel()  # held still, to cut the log under it
    await asyncio.sleep(0)
    logs.logs[TP].truncate_to(40)  # a new leader's log ends there
    assert future.log_end_offset <= 40
    _produce(manager, 1000, 30)  # the log goes on past where the copy was
    manager.moves.resume(TP)
    await _until_moved(logs, tmp_path / "b")
    values = _values(logs.logs[TP])
    assert values == [b"v%d" % i for i in range(40)] + [b"v%d" % i for i in range(1000, 1030)]


async def test_the_copy_keeps_the_log_start_of_the_log(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    logs, manager = broker
    _produce(manager, 0, 100)
    logs.logs[TP].advance_log_start_offset(30)  # DeleteRecords
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    await _until_moved(logs, tmp_path / "b")
    assert logs.logs[TP].log_start_offset == 30
    assert _values(logs.logs[TP])[0] in {b"v%d" % i for i in range(31)}  # whole batches


async def test_what_a_move_refuses_and_a_move_asked_back(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    logs, manager = broker
    _produce(manager, 0, 10)
    nowhere = await manager.alter_replica_log_dirs(_move(tmp_path / "c"))
    assert _codes(nowhere) == [LogDirNotFoundError.code]
    here = await manager.alter_replica_log_dirs(_move(tmp_path / "a"))  # where it is
    assert _codes(here) == [0] and not logs.futures
    gate = asyncio.Event()
    real_step = manager.moves._step

    async def held_step(*args: object) -> bool:
        await gate.wait()
        return await real_step(*args)  # type: ignore[arg-type]

    manager.moves._step = held_step  # type: ignore[method-assign]
    await manager.alter_replica_log_dirs(_move(tmp_path / "b"))
    assert (tmp_path / "b" / "t-0" / FUTURE).exists()
    await manager.alter_replica_log_dirs(_move(tmp_path / "a"))  # asked back: called off
    assert not logs.futures and not (tmp_path / "b" / "t-0").exists()
    assert logs.logs[TP].dir.parent == tmp_path / "a"
    # a partition not here yet: made where asked when it comes
    other = AlterReplicaLogDirsRequest(
        dirs=[
            AlterReplicaLogDir(
                path=str(tmp_path / "b"), topics=[AlterReplicaLogDirTopic(name="u", partitions=[3])]
            )
        ]
    )
    assert _codes(await manager.alter_replica_log_dirs(other)) == [ReplicaNotAvailableError.code]
    made = await asyncio.to_thread(logs.get_or_create_log, "u", 3)
    assert made.dir.parent == tmp_path / "b"


async def test_a_deleted_partition_takes_its_copy_with_it(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    logs, manager = broker
    _produce(manager, 0, 10)
    manager.moves._step = lambda *a: asyncio.sleep(3600)  # type: ignore[assignment,method-assign]
    await manager.alter_replica_log_dirs(_move(tmp_path / "b"))
    assert (tmp_path / "b" / "t-0").exists()
    await logs.delete_logs([TP])
    assert not logs.futures and TP not in logs.logs
    assert not (tmp_path / "a" / "t-0").exists() and not (tmp_path / "b" / "t-0").exists()


def test_a_start_resumes_a_copy_or_finishes_a_swap_a_stop_cut_short(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    logs = LogManager(dirs, broker_id=1, cluster_id="c")
    logs.startup()
    log = logs.get_or_create_log("t", 0)
    log.append(encode_batch([(None, b"x", None, 1)]))
    future = logs.make_future(TP, dirs[1] if log.dir.parent == dirs[0] else dirs[0], SMALL)
    assert logs.add_future(TP, future, log)
    target = future.dir.parent
    logs.shutdown()
    # stopped while copying: the copy is found, beside the log
    logs = LogManager(dirs, broker_id=1, cluster_id="c")
    logs.startup()
    assert TP in logs.futures and logs.futures[TP].dir.parent == target
    assert logs.logs[TP].dir.parent != target
    # stopped in the swap, after the old log was renamed away: the copy is the log
    source = logs.logs[TP].dir
    logs.shutdown()
    source.rename(source.with_name(f"t-0.0123{DELETE_SUFFIX}"))
    logs = LogManager(dirs, broker_id=1, cluster_id="c")
    logs.startup()
    assert not logs.futures and logs.logs[TP].dir.parent == target
    assert not (logs.logs[TP].dir / FUTURE).exists()
    assert not list(source.parent.glob(f"*{DELETE_SUFFIX}"))
    logs.shutdown()


async def test_a_partition_deleted_while_its_copy_is_made_leaves_no_copy(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    """The copy is made in a worker thread: a deletion meanwhile must not leave it behind
    (found alone at the next start, it would be taken for the partition's log)."""
    logs, manager = broker
    _produce(manager, 0, 10)
    made, go = threading.Event(), threading.Event()
    real_make = manager.moves._make

    def held_make(*args: object) -> object:
        copy = real_make(*args)  # type: ignore[arg-type]
        made.set()
        go.wait(10)
        return copy

    manager.moves._make = held_make  # type: ignore[assignment,method-assign]
    moving = asyncio.ensure_future(manager.alter_replica_log_dirs(_move(tmp_path / "b")))
    await asyncio.to_thread(made.wait, 10)
    await logs.delete_logs([TP])
    go.set()
    assert _codes(await moving) == [ReplicaNotAvailableError.code]
    assert not logs.futures and not (tmp_path / "b" / "t-0").exists()


# --- review 121's findings: each failed on the first version -----------------------------


def _produce_batches(manager: ReplicaManager, batches: int, per_batch: int) -> None:
    """``batches`` batches of ``per_batch`` records: values v0, v1, ..."""
    for b in range(batches):
        first = b * per_batch
        _send(
            manager, [(b"k", b"v%d" % i, None, 1000 + i) for i in range(first, first + per_batch)]
        )


async def test_a_log_start_inside_a_batch_lets_the_move_finish(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    """DeleteRecords (or a followed leader) may put the log start inside a batch: the copy
    restarts at that batch's base and takes it whole (before, the batch was refused as
    below the copy's end, and the move retried for ever)."""
    logs, manager = broker
    _produce_batches(manager, 10, 10)
    logs.logs[TP].advance_log_start_offset(25)  # inside the batch 20..29
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    await asyncio.wait_for(_until_moved(logs, tmp_path / "b"), 5)
    assert logs.logs[TP].log_start_offset == 25
    assert _values(logs.logs[TP]) == [b"v%d" % i for i in range(20, 100)]  # whole batches


async def test_a_lowered_segment_bytes_does_not_stall_the_copy(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    """A read is no larger than the copy's segment.bytes (its append refuses more at
    once): older, larger segments written before the setting was lowered move too."""
    logs, manager = broker
    logs.logs[TP].config = LogConfig(segment_bytes=1 << 20, file_delete_delay_ms=0)
    _produce_batches(manager, 200, 20)  # about 100 KB in one segment
    logs.logs[TP].config = LogConfig(segment_bytes=16384, file_delete_delay_ms=0)
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    await asyncio.wait_for(_until_moved(logs, tmp_path / "b"), 5)
    assert len(_values(logs.logs[TP])) == 4000


async def test_the_old_log_goes_only_once_the_copy_is_on_disk(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    """The copy is fsynced (and checkpointed) before the old log's directory goes: with
    flush.messages=1 every record was on disk before the move, and stays so."""
    logs, manager = broker
    logs.logs[TP].config = LogConfig(segment_bytes=4096, flush_messages=1, file_delete_delay_ms=0)
    _produce_batches(manager, 40, 5)
    await asyncio.sleep(0)  # (the flushes flush.messages=1 asked for begin)
    await logs.logs[TP].flushes_done()
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    await _until_moved(logs, tmp_path / "b")
    for _ in range(200):
        if not list((tmp_path / "a").glob("t-0*")):
            break
        await asyncio.sleep(0.01)
    assert not list((tmp_path / "a").glob("t-0*")), "the old log is removed"
    after = logs.logs[TP]
    assert not [s.base_offset for s in after.segments if s.dirty]
    assert after.recovery_point == after.log_end_offset


async def test_a_fetch_answered_just_before_the_swap_can_still_be_sent(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    """The old log's files stay open for file.delete.delay.ms after the swap (as a
    deleted segment's): a fetch answer taken from it and still being sent reads on."""
    logs, manager = broker
    logs.logs[TP].config = LogConfig(segment_bytes=4096, file_delete_delay_ms=60_000)
    _produce_batches(manager, 20, 5)
    answered = logs.logs[TP].read(0, 1 << 20)
    assert answered is not None
    region = answered.region()
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    await _until_moved(logs, tmp_path / "b")
    await asyncio.sleep(0.1)  # the swap's last steps
    assert region.fd >= 0
    await manager.moves.stop()  # a stop meanwhile closes it at once
    assert region.fd == -1


async def test_a_copy_promoted_at_start_keeps_the_log_start(tmp_path: Path) -> None:
    """A stop between the swap's rename and its last steps: the next start takes the copy
    as the log, with the log start the old log's directory had checkpointed (before,
    records DeleteRecords had removed were readable again)."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    logs = LogManager(dirs, broker_id=1, cluster_id="c")
    logs.startup()
    logs.preferred_dirs[TP] = dirs[0]

    async def load(topic: str) -> LogConfig:
        return LogConfig(segment_bytes=1 << 20)

    manager = ReplicaManager(1, logs, MetadataCache(), load)
    await manager.become_leader_or_follower([_leader_state(isr=[1])])
    _produce_batches(manager, 10, 10)
    logs.logs[TP].advance_log_start_offset(50)  # DeleteRecords(50)
    logs.checkpoint()  # (the periodic checkpoint)

    async def stopped(*args: object) -> None:  # the process dies before the last steps
        await asyncio.sleep(3600)

    logs.finish_swap = stopped  # type: ignore[assignment,method-assign]
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    await _until_moved(logs, tmp_path / "b")
    await manager.shutdown()
    again = LogManager(dirs, broker_id=1, cluster_id="c")
    again.startup()
    try:
        assert again.logs[TP].dir.parent == tmp_path / "b"
        assert again.logs[TP].log_start_offset == 50
        assert not (again.logs[TP].dir / FUTURE).exists()
        assert not list((tmp_path / "a").glob("t-0*"))
    finally:
        again.shutdown()


async def test_a_deleted_partition_stays_deleted_whatever_its_copy_left(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy whose removal fails (its disk failing) is renamed away first; a start then
    finds no copy to take for the log, and a leftover it cannot remove stops nothing
    (before: the copy, still marked, was promoted, and the deleted partition was back)."""
    import broker.log.manager as manager_module

    logs, manager = broker
    _produce_batches(manager, 5, 5)
    manager.moves._step = lambda *a: asyncio.sleep(3600)  # type: ignore[assignment,method-assign]
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    real_remove = manager_module.remove_log_dir

    def failing(path: Path) -> None:
        if path.parent == tmp_path / "b":
            raise OSError(5, "Input/output error")
        real_remove(path)

    monkeypatch.setattr(manager_module, "remove_log_dir", failing)
    await logs.delete_logs([TP])
    assert TP not in logs.logs and TP not in logs.futures
    again = LogManager([tmp_path / "a", tmp_path / "b"], broker_id=1, cluster_id="c")
    again.startup()
    try:
        assert TP not in again.logs and TP not in again.futures
    finally:
        again.shutdown()


def test_a_stop_in_the_middle_of_making_or_removing_a_copy_leaves_a_start_alone(
    tmp_path: Path,
) -> None:
    """A copy is made under another name and renamed into place with its marker, and
    renamed away before its removal: a stop at any point leaves a directory the next
    start removes, never a second, unmarked directory of the partition (which stopped
    the broker with DuplicateLogDirError)."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    logs = LogManager(dirs, broker_id=1, cluster_id="c")
    logs.startup()
    logs.preferred_dirs[TP] = dirs[0]
    log = logs.get_or_create_log("t", 0)
    log.append(encode_batch([(None, b"x", None, 1)]))
    logs.shutdown()
    half_made = dirs[1] / f"t-0.{'1' * 32}-new"  # a stop before the rename into place
    half_made.mkdir()
    (half_made / "00000000000000000000.log").write_bytes(b"")
    half_gone = dirs[1] / f"t-1.{'2' * 32}-delete"  # a stop in a removal
    half_gone.mkdir()
    (half_gone / "00000000000000000000.log").write_bytes(b"")
    again = LogManager(dirs, broker_id=1, cluster_id="c")
    again.startup()
    try:
        assert set(again.logs) == {TP} and not again.futures
        assert sorted(p.name for p in dirs[1].iterdir() if p.is_dir()) == []
    finally:
        again.shutdown()


async def test_transactions_and_their_aborts_read_the_same_after_the_move(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    """The copy is made of the log's batches as they are: its producers, its index of
    aborted transactions and its last stable offset (one transaction still open) come
    out as the log's."""
    logs, manager = broker
    log = logs.logs[TP]

    def txn_batch(pid: int, value: bytes) -> bytes:
        return encode_batch(
            [(None, value, None, 1)],
            producer_id=pid,
            producer_epoch=0,
            base_sequence=0,
            is_transactional=True,
        )

    for pid, committed in ((7, True), (8, False)):
        log.append(txn_batch(pid, b"t%d" % pid), leader_epoch=1)
        log.append_marker(
            producer_id=pid, producer_epoch=0, committed=committed, coordinator_epoch=0
        )
    log.append(txn_batch(9, b"open"), leader_epoch=1)
    end = log.log_end_offset

    def seen(log: object) -> tuple[object, ...]:
        return (
            log.aborted_transactions(0, end),  # type: ignore[attr-defined]
            log.last_stable_offset(end),  # type: ignore[attr-defined]
            sorted(log.producers.producers),  # type: ignore[attr-defined]
        )

    before = seen(log)
    assert before[0] and before[1] < end  # an abort indexed, a transaction open
    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    await _until_moved(logs, tmp_path / "b")
    assert seen(logs.logs[TP]) == before


async def test_moves_at_once_share_num_replica_alter_log_dirs_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three logs moved at once with one slot: their reads in worker threads run one at
    a time (Kafka's num.replica.alter.log.dirs.threads), and every move still ends with
    every record."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    logs = LogManager(dirs, broker_id=1, cluster_id="c")
    logs.startup()
    tps = [TopicPartition("t", p) for p in range(3)]
    for tp in tps:
        logs.preferred_dirs[tp] = dirs[0]

    async def load(topic: str) -> LogConfig:
        return SMALL

    manager = ReplicaManager(1, logs, MetadataCache(), load, move_threads=1)
    manager.moves._chunk = manager.moves._tail = 512  # many steps per move
    await manager.become_leader_or_follower(
        [dataclasses.replace(_leader_state(isr=[1]), partition_index=p) for p in range(3)]
    )
    try:
        for p in range(3):
            for i in range(60):
                partition = ProducePartition(
                    index=p, records=encode_batch([(None, b"v%d-%d" % (p, i), None, 1000)])
                )
                manager.produce(
                    ProduceRequest(
                        acks=1,
                        timeout_ms=1000,
                        topics=[ProduceTopic(name="t", partitions=[partition])],
                    )
                )
        most = 0
        real = moves_module._detached

        def counted(data: object) -> object:
            nonlocal most
            most = max(most, manager.moves.steps_running)
            return real(data)  # type: ignore[arg-type]

        monkeypatch.setattr(moves_module, "_detached", counted)
        request = AlterReplicaLogDirsRequest(
            dirs=[
                AlterReplicaLogDir(
                    path=str(dirs[1]),
                    topics=[AlterReplicaLogDirTopic(name="t", partitions=[0, 1, 2])],
                )
            ]
        )
        assert _codes(await manager.alter_replica_log_dirs(request)) == [0, 0, 0]
        for _ in range(4000):
            if not logs.futures and all(logs.logs[tp].dir.parent == dirs[1] for tp in tps):
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("the moves did not end")
        assert most == 1  # never two reads at once
        for p, tp in enumerate(tps):
            assert _values(logs.logs[tp]) == [b"v%d-%d" % (p, i) for i in range(60)]
    finally:
        await manager.shutdown()
        await logs.flushes_done()
        logs.shutdown()


async def test_a_swap_whose_last_steps_fail_on_io_still_closes_the_old_log(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's fsync fails after the swap: the old log's directory stays for the next
    start to finish the swap, but its files are closed (they were held until exit)."""
    logs, manager = broker
    logs.logs[TP].config = LogConfig(segment_bytes=4096, file_delete_delay_ms=0)
    _produce_batches(manager, 20, 5)
    old = logs.logs[TP]
    answered = old.read(0, 1 << 20)
    assert answered is not None
    region = answered.region()  # (one of the old log's descriptors)

    async def failing() -> None:
        raise OSError(5, "Input/output error")

    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    future = None
    for _ in range(200):  # the copy, once made: its flush fails
        future = logs.futures.get(TP)
        if future is not None:
            monkeypatch.setattr(future, "flush_async", failing)
            break
        await asyncio.sleep(0.01)
    assert future is not None
    await _until_moved(logs, tmp_path / "b")
    for _ in range(100):
        if region.fd == -1:
            break
        await asyncio.sleep(0.01)
    assert region.fd == -1  # closed
    assert list((tmp_path / "a").glob("t-0*-delete"))  # left for the next start


async def test_a_log_compacted_while_it_is_copied_moves_with_each_keys_latest_value(
    broker: tuple[LogManager, ReplicaManager], tmp_path: Path
) -> None:
    """The cleaner swaps the source's segments while the copy reads them (offsets it
    already copied vanish, the next read starts past a gap): the moved log reads in
    offset order, each key's latest value the one produced last."""
    logs, manager = broker
    logs.logs[TP].config = LogConfig(
        segment_bytes=2048,
        cleanup_policy="compact",
        min_cleanable_dirty_ratio=0.01,
        file_delete_delay_ms=0,
    )
    _produce(manager, 0, 700)  # keys k0..k6, a hundred values each, many segments
    manager.moves._chunk = 1024  # small reads: many steps, the cleaner between them
    cleaner = LogCleaner(logs, CleanerConfig())
    cleaned_mid_copy = 0
    cleaned = asyncio.Event()
    step = manager.moves._step
    steps = 0

    async def held_step(*args: Any) -> bool:  # after its first read, the copy waits for
        nonlocal steps  # a cleaner round (so the round surely lands mid-copy)
        steps += 1
        if steps > 1:
            await cleaned.wait()
        return await step(*args)

    manager.moves._step = held_step  # type: ignore[method-assign]

    async def clean_while_copying() -> None:
        nonlocal cleaned_mid_copy
        while TP in logs.futures:
            if await cleaner.clean_once():
                cleaned_mid_copy += 1
                cleaned.set()
            await asyncio.sleep(0)

    assert _codes(await manager.alter_replica_log_dirs(_move(tmp_path / "b"))) == [0]
    cleaning = asyncio.ensure_future(clean_while_copying())
    await asyncio.wait_for(_until_moved(logs, tmp_path / "b"), 10)
    await cleaning
    assert cleaned_mid_copy >= 1  # (else this test says nothing)
    moved = logs.logs[TP]
    rows: list[tuple[int, bytes | None, bytes | None]] = []
    at = moved.log_start_offset
    while at < moved.log_end_offset:  # segment by segment, as _values reads
        data = moved.read(at, 1 << 20)
        assert data is not None
        for batch in decode_batches(data.read()):
            rows += [(r.offset, r.key, r.value) for r in batch]
            at = batch.next_offset
    offsets = [o for o, _, _ in rows]
    assert offsets == sorted(set(offsets))
    latest = {key: value for _, key, value in rows}
    assert latest == {
        b"k%d" % k: b"v%d" % max(i for i in range(700) if i % 7 == k) for k in range(7)
    }
    assert moved.log_end_offset == 700
