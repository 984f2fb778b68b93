import asyncio
import concurrent.futures
import errno
import gc
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from broker.log import Log, LogConfig
from broker.log.manager import (
    CLEAN_SHUTDOWN,
    HIGH_WATERMARKS,
    LOG_START_OFFSETS,
    META,
    RECOVERY_POINTS,
    DuplicateLogDirError,
    InconsistentBrokerIdError,
    LogManager,
    TopicPartition,
    read_checkpoint,
    write_checkpoint,
)
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import StopReplicaPartition
from protocol.errors import InconsistentClusterIdError, KafkaStorageError
from protocol.records import encode_batch
from tests.unit.test_replica_fetch_wake import _leader_state

CFG = LogConfig(segment_bytes=2048, index_interval_bytes=128)


def _batch(n: int = 4) -> bytes:
    return encode_batch([(None, b"v" * 50, None, 1000 + i) for i in range(n)])


def _manager(dirs: list[Path], broker_id: int = 1, cluster: str = "c1") -> LogManager:
    return LogManager(dirs, broker_id=broker_id, cluster_id=cluster, default_config=CFG)


def test_meta_properties_claims_the_directory(tmp_path: Path) -> None:
    m = _manager([tmp_path])
    m.startup()
    m.shutdown()
    assert "broker.id=1" in (tmp_path / META).read_text()
    with pytest.raises(InconsistentClusterIdError, match="holds data of cluster 'c1'"):
        _manager([tmp_path], cluster="other").startup()
    with pytest.raises(
        InconsistentBrokerIdError, match="belongs to broker 1, but this is broker 2"
    ):
        _manager([tmp_path], broker_id=2).startup()


def test_clean_restart_keeps_everything_and_checkpoints(tmp_path: Path) -> None:
    m = _manager([tmp_path / "a", tmp_path / "b"])
    m.startup()
    for p in range(4):
        log = m.get_or_create_log("orders", p)
        for _ in range(10):
            log.append(_batch())
    # each new log goes to the dir with the fewest: two each
    assert sorted(log.dir.parent.name for _, log in m) == ["a", "a", "b", "b"]
    m.shutdown()
    assert (tmp_path / "a" / CLEAN_SHUTDOWN).exists()
    points = read_checkpoint(tmp_path / "a" / RECOVERY_POINTS)
    assert set(points.values()) == {40}
    m2 = _manager([tmp_path / "a", tmp_path / "b"])
    m2.startup()
    assert not (tmp_path / "a" / CLEAN_SHUTDOWN).exists()  # a crash from now on shows
    for p in range(4):
        log = m2.get_log("orders", p)
        assert log is not None and log.log_end_offset == 40
    m2.shutdown()


def test_unclean_restart_recovers_from_the_recovery_point(tmp_path: Path) -> None:
    m = _manager([tmp_path])
    m.startup()
    log = m.get_or_create_log("t", 0)
    for _ in range(20):
        log.append(_batch())
    log.flush()
    m.checkpoint()
    log.append(_batch())  # after the checkpoint: recovery must check it
    active = log.active.log_path
    # crash: no shutdown, and a torn last batch
    with open(active, "r+b") as f:
        f.truncate(active.stat().st_size - 10)
    m2 = _manager([tmp_path])
    m2.startup()
    recovered = m2.get_log("t", 0)
    assert recovered is not None and recovered.log_end_offset == 80
    assert recovered.append(_batch()).first_offset == 80
    m2.shutdown()


def test_unreadable_checkpoint_means_full_recovery_not_a_failure(tmp_path: Path) -> None:
    m = _manager([tmp_path])
    m.startup()
    m.get_or_create_log("t", 0).append(_batch())
    m.shutdown()
    (tmp_path / RECOVERY_POINTS).write_text("garbage\n")
    m2 = _manager([tmp_path])
    m2.startup()
    assert m2.get_log("t", 0).log_end_offset == 4  # type: ignore[union-attr]
    m2.shutdown()


def test_checkpoint_format_is_kafkas(tmp_path: Path) -> None:
    path = tmp_path / "cp"
    write_checkpoint(path, {("b", 1): 7, ("a-b", 0): 3})
    assert path.read_text() == "0\n2\na-b 0 3\nb 1 7\n"
    assert read_checkpoint(path) == {("a-b", 0): 3, ("b", 1): 7}


def test_delete_log_removes_its_directory(tmp_path: Path) -> None:
    m = _manager([tmp_path])
    m.startup()
    log = m.get_or_create_log("gone", 3)
    log.append(_batch())
    m.delete_log("gone", 3)
    assert not (tmp_path / "gone-3").exists() and m.get_log("gone", 3) is None
    m.shutdown()


def test_a_deleted_log_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    """Nothing the manager hangs on a log (its truncation callback) refers back to it: a
    deleted topic's log, with its producers' state and indexes, goes when its last
    reference does, not at some later full collection."""
    manager = _manager([tmp_path])
    manager.startup()
    truncated: list[tuple[str, int]] = []
    manager.on_truncation(lambda tp, log, offset: truncated.append((log.name, offset)))
    log = manager.get_or_create_log("t", 0)
    log.append(_batch(), leader_epoch=0)
    log.truncate_to(2)
    assert truncated == [(log.name, 2)]  # the callback still gets the log
    gone = weakref.ref(log)
    del log
    gc.disable()
    try:
        manager.delete_log("t", 0)
        assert gone() is None
    finally:
        gc.enable()
    manager.shutdown()


async def test_checkpoints_list_each_log_in_its_own_directory(tmp_path: Path) -> None:
    """With two log dirs, each directory's checkpoint files hold its own partitions
    (the text is made on the loop, the files written in a worker thread)."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    m = _manager(dirs)
    m.startup()
    for p in range(4):  # spread: the least used directory takes each new log
        m.get_or_create_log("t", p).append(_batch(p + 1))
    where = {tp: log.dir.parent for tp, log in m.logs.items()}
    assert set(where.values()) == set(dirs)
    await m.checkpoint_async()
    await m.checkpoint_high_watermarks({tp: tp.partition + 10 for tp in m.logs})
    for d in dirs:
        mine = {tp for tp, parent in where.items() if parent == d}
        assert read_checkpoint(d / HIGH_WATERMARKS) == {tp: tp.partition + 10 for tp in mine}
        assert set(read_checkpoint(d / RECOVERY_POINTS)) == mine
        assert read_checkpoint(d / LOG_START_OFFSETS) == dict.fromkeys(mine, 0)
    m.shutdown()


async def test_deleted_logs_leave_their_directories_and_the_checkpoints(tmp_path: Path) -> None:
    """A partition of the same name made later must not inherit a deleted one's recovery
    point or log start offset at the next restart."""
    m = _manager([tmp_path])
    m.startup()
    for p in range(3):
        m.get_or_create_log("t", p).append(_batch())
    m.logs[TopicPartition("t", 1)].advance_log_start_offset(2)
    await m.checkpoint_async()
    assert read_checkpoint(tmp_path / LOG_START_OFFSETS)[TopicPartition("t", 1)] == 2
    await m.delete_logs([TopicPartition("t", 1), TopicPartition("t", 9)])  # t-9: none here
    assert not (tmp_path / "t-1").exists() and m.get_log("t", 1) is None
    for name in (RECOVERY_POINTS, LOG_START_OFFSETS):
        assert set(read_checkpoint(tmp_path / name)) == {("t", 0), ("t", 2)}
    m.shutdown()


async def test_deleted_logs_close_their_descriptors_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: the descriptors of a deleted log are closed before the worker
    thread starts, on the loop. A fetch's ``sendfile`` re-reads a segment's ``fd``
    between awaits; closed in the thread, the number could be reused by a file opened
    on the loop meanwhile and the fetch would send that file's bytes."""
    import broker.log.manager as manager_module

    m = _manager([tmp_path])
    m.startup()
    log = m.get_or_create_log("t", 0)
    log.append(_batch())
    segment = log.active
    fd = segment.fd
    seen: list[int] = []
    real = manager_module._remove_dirs

    def in_thread(logs: list) -> list:
        seen.append(segment.fd)
        if os.path.exists(f"/proc/self/fd/{fd}"):  # closed, or reused by someone else
            assert os.readlink(f"/proc/self/fd/{fd}") != str(segment.log_path)
        return real(logs)

    monkeypatch.setattr(manager_module, "_remove_dirs", in_thread)
    await m.delete_logs([TopicPartition("t", 0)])
    assert seen == [-1] and not (tmp_path / "t-0").exists()
    m.shutdown()


async def test_a_replica_whose_directory_cannot_be_removed_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: one directory that cannot be removed (EIO) no longer leaves the
    others behind. It is reported (StopReplica answers KAFKA_STORAGE_ERROR for it, so
    the controller keeps the deletion pending) instead of coming back at the next start
    as a log of a deleted topic."""
    logs = _manager([tmp_path])
    logs.startup()

    async def load(topic: str) -> LogConfig:
        return CFG

    replicas = ReplicaManager(1, logs, MetadataCache(), load)
    for p in (0, 1, 2):
        state = _leader_state(isr=[1])
        state.partition_index = p
        await replicas.become_leader_or_follower([state])
    import broker.log.manager as manager_module

    stuck = logs.logs[TopicPartition("t", 1)].dir
    real = manager_module.remove_log_dir
    refusing = True

    def refuse(path: Path) -> None:
        if path == stuck and refusing:
            raise OSError(errno.EIO, "Input/output error")
        real(path)

    monkeypatch.setattr(manager_module, "remove_log_dir", refuse)
    stop = [StopReplicaPartition(topic_name="t", partition_index=p) for p in (0, 1, 2)]
    errors = await replicas.stop_replicas(stop, delete=True)
    assert [e.error_code for e in errors] == [0, KafkaStorageError.code, 0]
    assert not (tmp_path / "t-0").exists() and not (tmp_path / "t-2").exists()
    assert set(read_checkpoint(tmp_path / RECOVERY_POINTS)) == set()
    # the controller resends: the log left the manager, but its directory is tried again
    # (it answered 0 here, and the deletion completed with the directory still on disk)
    errors = await replicas.stop_replicas(stop, delete=True)
    assert [e.error_code for e in errors] == [0, KafkaStorageError.code, 0]
    refusing = False
    errors = await replicas.stop_replicas(stop, delete=True)
    assert [e.error_code for e in errors] == [0, 0, 0]
    assert not stuck.exists()
    await replicas.shutdown()
    logs.shutdown()


async def test_a_file_unlinked_meanwhile_does_not_leave_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: retention and the cleaner unlink files in worker threads; one gone
    while the deletion walks the directory raised FileNotFoundError out of ``rmtree``,
    which a suppress around it took for "already removed": the walk ended, the rest
    stayed, no failure was reported and the log came back at the next start."""
    m = _manager([tmp_path])
    m.startup()
    log = m.get_or_create_log("t", 0)
    for _ in range(20):
        log.append(_batch())  # several segments
    names = sorted(os.listdir(log.dir))
    assert len(names) > 4
    real_unlink = os.unlink
    raced: list[str] = []

    def unlink(path: str, *args: Any, **kwargs: Any) -> None:
        if not raced and kwargs.get("dir_fd") is not None:  # rmtree's walk
            victim = [n for n in names if n != path][-1]
            real_unlink(victim, dir_fd=kwargs["dir_fd"])  # "another thread" got there first
            raced.append(victim)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    failed = await m.delete_logs([TopicPartition("t", 0)])
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert raced and failed == []
    assert not (tmp_path / "t-0").exists()
    m.shutdown()


class _HeldFsync:
    """``_fsync_all`` held in its worker thread until ``go`` is set; records the
    descriptors it found open and any error it met."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import broker.log.log as log_module

        self.started, self.go = threading.Event(), threading.Event()
        self.fds: list[int] = []
        self.errors: list[BaseException] = []
        real = log_module._fsync_all

        def held(segments: list[Any], *others: Any) -> None:
            self.started.set()
            self.go.wait(5)
            self.fds.extend(s.fd for s in segments)
            try:
                real(segments, *others)
            except BaseException as exc:
                self.errors.append(exc)
                raise

        monkeypatch.setattr(log_module, "_fsync_all", held)


async def _flushing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[LogManager, Log, _HeldFsync, asyncio.Future[None]]:
    """A log whose flush is held in its worker thread (see _HeldFsync)."""
    m = _manager([tmp_path])
    m.startup()
    log = m.get_or_create_log("t", 0)
    log.append(_batch())
    fsync = _HeldFsync(monkeypatch)
    flushing = asyncio.ensure_future(log.flush_async())
    await asyncio.to_thread(fsync.started.wait, 5)
    return m, log, fsync, flushing


async def test_a_deleted_log_waits_for_its_flush_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: an fsync in a worker thread uses the segments' descriptors and
    index maps; closed under it on the loop, it raised ValueError (fsync(-1), a closed
    mmap) out of its task. The deletion waits for it, and a flush after does nothing."""
    m, log, fsync, flushing = await _flushing(tmp_path, monkeypatch)
    deleting = asyncio.ensure_future(m.delete_logs([TopicPartition("t", 0)]))
    await asyncio.sleep(0.05)
    assert not deleting.done() and log.active.fd >= 0  # waiting for the flush
    fsync.go.set()
    await flushing  # no error out of the flush
    assert await deleting == []
    assert fsync.fds and all(fd >= 0 for fd in fsync.fds) and not fsync.errors
    assert not (tmp_path / "t-0").exists()
    await log.flush_async()  # closed for delete: nothing to do, no error
    m.shutdown()


async def test_new_logs_go_where_fewest_are_counting_loaded_and_deleted_ones(
    tmp_path: Path,
) -> None:
    """The choice reads counts kept as logs are loaded, created and deleted, as does the
    index of each topic's logs."""
    (tmp_path / "a").mkdir()
    m = _manager([tmp_path / "a", tmp_path / "b"])
    m.startup()
    for p in range(3):
        m.get_or_create_log("t", p)  # a, b, a
    m.shutdown()
    m = _manager([tmp_path / "a", tmp_path / "b"])
    m.startup()  # loads two in a, one in b
    assert m.get_or_create_log("t", 3).dir.parent.name == "b"
    await m.delete_logs([TopicPartition("t", 0), TopicPartition("t", 2)])  # a's two
    m.delete_log("t", 1)  # one of b's
    assert [m.get_or_create_log("t", p).dir.parent.name for p in (4, 5)] == ["a", "a"]
    assert sorted(log.dir.name for log in m.logs_of("t")) == ["t-3", "t-4", "t-5"]
    assert m.logs_of("other") == []
    m.shutdown()


def test_logs_created_side_by_side_spread_over_the_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New logs open in worker threads at once (a topic's creation): each counts toward
    its dir from the choice, so they do not all pick the one that was least used; and
    an open that fails gives its place back."""
    import broker.log.manager as manager_module

    m = _manager([tmp_path / "a", tmp_path / "b"])
    m.startup()
    threads = 8
    chosen = threading.Barrier(threads)  # every thread has chosen before any log opens
    real = manager_module.Log.open

    def open_after_all_chose(directory: Path, *args: object, **kwargs: object) -> Log:
        chosen.wait(timeout=10)
        if directory.name == "t-0":
            raise KafkaStorageError("t-0 cannot be opened: injected")
        return real(directory, *args, **kwargs)

    monkeypatch.setattr(manager_module.Log, "open", open_after_all_chose)

    def create(p: int) -> str:
        try:
            return m.get_or_create_log("t", p).dir.parent.name
        except KafkaStorageError:
            return "failed"

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        placed = list(pool.map(create, range(threads)))
    monkeypatch.undo()
    assert placed.count("failed") == 1
    assert sorted([placed.count("a"), placed.count("b")]) == [3, 4]
    emptier = "a" if placed.count("a") == 3 else "b"
    assert not (tmp_path / "a" / "t-0").exists() and not (tmp_path / "b" / "t-0").exists()
    assert m.get_or_create_log("t", 0).dir.parent.name == emptier  # the failed one's place
    m.shutdown()


def test_one_partition_created_by_threads_at_once_is_one_log_in_one_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: each thread reserved a dir of its own for the same partition, so
    two copies were made (one Log never closed), and the next start kept either."""
    import broker.log.manager as manager_module

    m = _manager([tmp_path / "a", tmp_path / "b"])
    m.startup()
    real = manager_module.Log.open
    opening = threading.Event()

    def slow_open(directory: Path, *args: object, **kwargs: object) -> Log:
        opening.set()
        time.sleep(0.05)  # a worker thread's open, not the event loop: the others wait
        return real(directory, *args, **kwargs)

    monkeypatch.setattr(manager_module.Log, "open", slow_open)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        logs = list(pool.map(lambda _: m.get_or_create_log("t", 0), range(4)))
    assert opening.is_set() and all(log is logs[0] for log in logs)
    assert [d.name for d in tmp_path.iterdir() if (d / "t-0").exists()] == [logs[0].dir.parent.name]
    assert m._creating == {}
    m.shutdown()


def test_a_partition_in_two_log_dirs_stops_the_start_with_what_to_do(tmp_path: Path) -> None:
    m = _manager([tmp_path / "a", tmp_path / "b"])
    m.startup()
    m.get_or_create_log("t", 0).append(_batch())
    m.shutdown()
    (tmp_path / "b" / "t-0").mkdir()  # as a crash in the middle of moving it would leave
    m = _manager([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(
        DuplicateLogDirError, match=r"t-0 has a directory in both .*a and .*b; .* delete the one"
    ):
        m.startup()


async def test_hosting_many_partitions_reads_each_topics_config_twice_not_each_partitions(
    tmp_path: Path,
) -> None:
    """A broker restarting with 2,100 partitions read their topic's config znode twice per
    partition before hosting any (4,200 reads, 2 s of kazoo's CPU). Now once per topic
    before the logs open and once after (a change applied meanwhile is not missed), and a
    log opened at start is not handed to a worker thread again."""
    logs = _manager([tmp_path])
    logs.startup()
    for p in range(40):  # logs there at start: a restart
        logs.get_or_create_log("a", p)
    reads: list[str] = []
    overridden = LogConfig(segment_bytes=4096, index_interval_bytes=128)

    async def load(topic: str) -> LogConfig:
        reads.append(topic)
        return overridden if topic == "b" else CFG

    replicas = ReplicaManager(1, logs, MetadataCache(), load)
    states = []
    for topic in ("a", "b"):
        for p in range(40):
            state = _leader_state(isr=[1])
            state.topic_name, state.partition_index = topic, p
            states.append(state)
    errors = await replicas.become_leader_or_follower(states)
    assert all(e.error_code == 0 for e in errors) and len(replicas.partitions) == 80
    assert sorted(reads) == ["a", "a", "b", "b"]
    assert all(
        replicas.partitions[TopicPartition("b", p)].log.config is overridden for p in range(40)
    )
    await replicas.shutdown()
    logs.shutdown()


async def test_a_config_applied_after_a_topics_second_read_is_not_overwritten(
    tmp_path: Path,
) -> None:
    """From a review: the second reads of every topic were awaited together, then
    assigned; a change applied to topic a after a's read, while b's was still out, was
    overwritten with the older config a's read returned."""
    logs = _manager([tmp_path])
    logs.startup()
    b_second = asyncio.Event()
    calls: dict[str, int] = {}
    newer = LogConfig(segment_bytes=8192, index_interval_bytes=128)
    replicas: ReplicaManager | None = None

    async def load(topic: str) -> LogConfig:
        calls[topic] = calls.get(topic, 0) + 1
        if calls[topic] == 2 and topic == "b":
            await b_second.wait()  # b's second read is slow
        if calls[topic] == 2 and topic == "a":

            async def notify() -> None:  # a notification, applied after a's read returned
                await asyncio.sleep(0)
                assert replicas is not None
                replicas.partitions[TopicPartition("a", 0)].log.config = newer
                b_second.set()

            asyncio.get_running_loop().create_task(notify())
        return CFG

    replicas = ReplicaManager(1, logs, MetadataCache(), load)
    states = []
    for topic in ("a", "b"):
        state = _leader_state(isr=[1])
        state.topic_name = topic
        states.append(state)
    await replicas.become_leader_or_follower(states)
    assert replicas.partitions[TopicPartition("a", 0)].log.config is newer
    await replicas.shutdown()
    logs.shutdown()


async def test_a_resent_deletion_waits_for_the_one_under_way_and_answers_as_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: a StopReplica resent while the first one's removal runs found no
    log and answered "done"; the controller could finish the deletion with the directory
    still there (or, the topic made again, the first removal took the new log's)."""
    import broker.log.manager as manager_module

    m = _manager([tmp_path])
    m.startup()
    log = m.get_or_create_log("t", 0)
    log.append(_batch())
    path = log.dir
    started, go = threading.Event(), threading.Event()
    outcome = {"fail": True}
    real = manager_module.remove_log_dir

    def slow(directory: Path) -> None:
        started.set()
        go.wait(5)
        if outcome["fail"]:
            raise OSError(errno.EIO, "Input/output error")
        real(directory)

    monkeypatch.setattr(manager_module, "remove_log_dir", slow)
    tp = TopicPartition("t", 0)
    first = asyncio.ensure_future(m.delete_logs([tp]))
    await asyncio.to_thread(started.wait, 5)
    second = asyncio.ensure_future(m.delete_logs([tp]))  # the resend
    with pytest.raises(KafkaStorageError, match="still being removed"):
        m.get_or_create_log("t", 0)  # the topic made again meanwhile: refused
    await asyncio.sleep(0.05)
    assert not second.done()  # it waits for the first
    go.set()
    assert await first == [tp] and await second == [tp]  # both say it failed
    assert path.exists()
    with pytest.raises(KafkaStorageError, match="still there"):
        m.get_or_create_log("t", 0)  # would open the old records
    outcome["fail"] = False
    started.clear()
    assert await m.delete_logs([tp]) == []  # the next resend removes it
    assert not path.exists()
    assert m.get_or_create_log("t", 0).log_end_offset == 0  # a new, empty log
    m.shutdown()


async def test_a_cancelled_flush_still_holds_the_deletion_until_its_thread_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: cancelling the task awaiting an fsync does not stop its thread;
    counted until the task ended, the deletion closed the files under the fsync."""
    m, _log, fsync, flushing = await _flushing(tmp_path, monkeypatch)
    flushing.cancel()
    await asyncio.sleep(0)
    deleting = asyncio.ensure_future(m.delete_logs([TopicPartition("t", 0)]))
    await asyncio.sleep(0.05)
    assert not deleting.done()  # the thread still runs
    fsync.go.set()
    assert await deleting == []
    assert not fsync.errors
    m.shutdown()


async def test_a_clean_stop_waits_for_flushes_still_in_their_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: the broker's stop cancels its flush tasks, whose threads run on;
    closing the logs under them raised in the thread. The stop waits for them first."""
    m, _log, fsync, flushing = await _flushing(tmp_path, monkeypatch)
    flushing.cancel()
    waiting = asyncio.ensure_future(m.flushes_done())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    fsync.go.set()
    await waiting
    m.shutdown()
    assert not fsync.errors


@pytest.mark.parametrize("delete", [True, False])
async def test_a_stop_replica_during_a_leader_and_isr_is_applied_after_it(
    tmp_path: Path, delete: bool
) -> None:
    """From a review: a LeaderAndIsr awaits while it opens a new partition (its log in a
    worker thread, its topic's config). A StopReplica for it that arrived meanwhile found
    nothing to stop, and the LeaderAndIsr then hosted the partition anyway: with delete,
    over a log being removed, or with a new, empty one made after the removal (a log of a
    deleted topic). Now the StopReplica waits for the LeaderAndIsr, as in Kafka (the
    replica state change lock), and the last word is the controller's last request."""
    logs = _manager([tmp_path])
    logs.startup()
    reads = 0
    second_read = asyncio.Event()
    go_on = asyncio.Event()

    async def load(topic: str) -> LogConfig:
        nonlocal reads
        reads += 1
        if reads == 2:  # read again once the log is open
            second_read.set()
            await go_on.wait()
        return CFG

    replicas = ReplicaManager(1, logs, MetadataCache(), load)
    leading = asyncio.ensure_future(replicas.become_leader_or_follower([_leader_state(isr=[1])]))
    await asyncio.wait_for(second_read.wait(), 5)
    stop = [StopReplicaPartition(topic_name="t", partition_index=0)]
    stopping = asyncio.ensure_future(replicas.stop_replicas(stop, delete=delete))
    for _ in range(20):
        await asyncio.sleep(0)  # it runs as far as it can
    go_on.set()
    assert [e.error_code for e in await leading] == [0]
    assert [e.error_code for e in await stopping] == [0]
    assert TopicPartition("t", 0) not in replicas.partitions
    assert (logs.get_log("t", 0) is None) is delete
    assert (tmp_path / "t-0").exists() is not delete
    await replicas.shutdown()
    logs.shutdown()


@pytest.mark.parametrize("delete", [True, False])
async def test_a_stop_replica_after_a_cancelled_leader_and_isr_waits_for_its_log_opens(
    tmp_path: Path, delete: bool
) -> None:
    """From a review: a LeaderAndIsr cancelled while its new log opened in a worker thread
    (the controller's connection closed) left the lock, but the open went on and hosted
    the partition after the StopReplica that came next. The StopReplica now waits for
    opens under way before it stops their partitions."""
    logs = _manager([tmp_path])
    logs.startup()
    in_thread, go_on = threading.Event(), threading.Event()
    real = logs.get_or_create_log

    def slow(*args: Any, **kwargs: Any) -> Log:
        in_thread.set()
        go_on.wait(10)
        return real(*args, **kwargs)

    logs.get_or_create_log = slow  # type: ignore[method-assign]

    async def load(topic: str) -> LogConfig:
        return CFG

    replicas = ReplicaManager(1, logs, MetadataCache(), load)
    leading = asyncio.ensure_future(replicas.become_leader_or_follower([_leader_state(isr=[1])]))
    assert await asyncio.to_thread(in_thread.wait, 10)  # the open is in its worker thread
    leading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leading
    stop = [StopReplicaPartition(topic_name="t", partition_index=0)]
    stopping = asyncio.ensure_future(replicas.stop_replicas(stop, delete=delete))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done()  # waiting for the open
    go_on.set()
    assert [e.error_code for e in await asyncio.wait_for(stopping, 10)] == [0]
    assert TopicPartition("t", 0) not in replicas.partitions
    assert (tmp_path / "t-0").exists() is not delete
    await replicas.shutdown()
    logs.shutdown()


async def test_segments_due_for_deletion_wait_for_a_flush_that_may_hold_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a review: retention renames a segment that a flush in a worker thread already
    holds (it was dirty), and after file.delete.delay.ms its descriptor was closed under a
    flush still running (a slow disk): the fsync failed and took the log offline. A
    segment a flush under way holds now waits for it; the others go as before."""
    m, log, fsync, flushing = await _flushing(tmp_path, monkeypatch)
    for i in range(1, 40):
        log.append(encode_batch([(None, b"v" * 50, None, 1000 + i)]))
    log.config = CFG.with_overrides(retention_bytes=2048, file_delete_delay_ms=0)
    assert log.apply_retention() > 1
    held = "00000000000000000000.log.deleted"
    first = [path.name for path in log.take_pending_deletes()]
    assert first and held not in first  # the others go; the one the flush holds stays
    fsync.go.set()
    await flushing
    assert not fsync.errors and log.offline_reason is None
    assert held in [path.name for path in log.take_pending_deletes()]
    m.shutdown()


@pytest.mark.parametrize("fully", [False, True])
async def test_a_truncation_leaves_the_segments_a_flush_holds_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fully: bool
) -> None:
    """From a review: a follower truncating (a leader change, or a restart at its leader's
    start) deleted the segments it cut at once, and the newest are the dirty ones an fsync
    under way holds: the fsync met a closed descriptor and failed. They now go at the next
    pass over pending deletions, once it has ended."""
    m = _manager([tmp_path])
    m.startup()
    log = m.get_or_create_log("t", 0)
    for i in range(1, 40):
        log.append(encode_batch([(None, b"v" * 50, None, 1000 + i)]))
    assert log.segment_count > 2
    fsync = _HeldFsync(monkeypatch)
    flushing = asyncio.ensure_future(log.flush_async())
    assert await asyncio.to_thread(fsync.started.wait, 5)
    if fully:
        log.truncate_fully_and_start_at(log.log_end_offset + 100)
    else:
        log.truncate_to(log.segments[1].base_offset)
    assert log.take_pending_deletes() == []  # held: not yet
    fsync.go.set()
    await flushing
    assert not fsync.errors and log.offline_reason is None
    gone = log.take_pending_deletes()
    assert gone and all(path.name.endswith(".deleted") for path in gone)
    for path in gone:
        path.unlink()
    assert not list(log.dir.glob("*.deleted"))
    m.shutdown()
