"""Consumer groups with real brokers (RF=3): the queue and publish/subscribe cases, a
member killed with kill -9, a whole group restarted, the coordinator killed, a stale
member's commit refused, static membership. Each member processes records and then
commits them (at-least-once), as the issue's proof asks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from client import (
    Admin,
    CommitFailedError,
    Consumer,
    NewTopic,
    Producer,
    RebalanceListener,
    TopicPartition,
)
from protocol.errors import GroupMaxSizeReachedError
from tests.integration.conftest import Cluster
from tests.integration.test_cli import COMMAND
from tests.integration.test_replication import FAST_ISR

pytestmark = pytest.mark.timeout(180)

SESSION_MS = 3_000
GROUP_BROKER = {
    **FAST_ISR,
    "offsets.topic.num.partitions": "5",
    "group.min.session.timeout.ms": "500",
    "group.initial.rebalance.delay.ms": "300",
}


async def wait_for(condition: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


class Worker(RebalanceListener):
    """A group member that processes records, then commits them; on a revocation it
    commits what it processed, as a careful Kafka consumer does."""

    def __init__(
        self, bootstrap: str, group: str, topics: list[str], *, pace_s: float = 0.0, **settings: Any
    ) -> None:
        self.pace_s = pace_s  # a pause after each poll that brought records (a slow worker)
        self.consumer = Consumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            **{
                "enable_auto_commit": False,
                "auto_offset_reset": "earliest",
                "session_timeout_ms": SESSION_MS,
                "heartbeat_interval_ms": 300,
                **settings,
            },
        )
        self.topics = topics
        self.processed: list[tuple[TopicPartition, int, bytes]] = []
        self.pending: dict[TopicPartition, int] = {}
        self.assignments: list[set[TopicPartition]] = []
        self.commit_failures = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Worker:
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=self)
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()

    @property
    def owned(self) -> set[TopicPartition]:
        return self.consumer.assignment()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._commit({tp: o for tp, o in self.pending.items() if tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assignments.append(set(assigned))

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                self.processed += [(tp, r.offset, r.value) for r in records]
                self.pending[tp] = records[-1].offset + 1
            if batches:
                await self._commit({tp: self.pending[tp] for tp in batches})
                if self.pace_s:
                    await asyncio.sleep(self.pace_s)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError:
            self.commit_failures += 1
            return
        for tp, offset in offsets.items():
            if self.pending.get(tp) == offset:
                del self.pending[tp]


async def _topic(cluster: Cluster, name: str, partitions: int) -> None:
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(name, partitions, 3)])


async def _produce(cluster: Cluster, topic: str, count: int, start: int = 0) -> None:
    """``count`` records numbered from ``start``, keyed so every partition gets some."""
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=5) as p:
        futures = [
            await p.send(topic, str(i).encode(), key=str(i).encode())
            for i in range(start, start + count)
        ]
        await asyncio.gather(*futures)


def _balanced(workers: list[Worker], partitions: int) -> bool:
    owned = [w.owned for w in workers]
    union = set().union(*owned)
    share = partitions // len(workers)
    return (
        len(union) == partitions
        and sum(len(o) for o in owned) == partitions  # no partition owned twice
        and all(len(o) == share for o in owned)
    )


def _values(workers: Iterable[Worker]) -> Counter[bytes]:
    return Counter(v for w in workers for _, _, v in w.processed)


# --- the queue: one group shares the partitions -------------------------------------------


async def test_three_members_share_six_partitions_and_process_each_record_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 6)
    workers = [await Worker(cluster.bootstrap, "workers", ["jobs"]).start() for _ in range(3)]
    try:
        await wait_for(lambda: _balanced(workers, 6), what="each member owns 2 partitions")
        await _produce(cluster, "jobs", 30_000)
        await wait_for(lambda: sum(len(w.processed) for w in workers) >= 30_000, 90)
        # every processed record committed: nothing of theirs is left to come again
        await wait_for(lambda: not any(w.pending for w in workers), what="commits done")
        assert _balanced(workers, 6)
        assert _values(workers) == Counter(str(i).encode() for i in range(30_000))
        for w in workers:  # each processed only its own partitions
            assert {tp for tp, _, _ in w.processed} <= w.owned
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            (described,) = await admin.describe_groups(["workers"])
        assert (described.state, described.strategy, len(described.members)) == (
            "Stable",
            "range",
            3,
        )
        assert {frozenset(m.assignment) for m in described.members} == {
            frozenset(w.owned) for w in workers
        }
        assert all(m.host == "127.0.0.1" for m in described.members)
        assert {m.client_id for m in described.members} == {"headwater-consumer"}
        where = described.coordinator  # the broker that answered, with its address
        assert where is not None
        assert f"127.0.0.1:{where.port}" in cluster.bootstrap.split(",")
        assert cluster.brokers[where.node_id].port == where.port
        committed = await workers[0].consumer.committed(TopicPartition("jobs", 0))
        async with Consumer(bootstrap_servers=cluster.bootstrap) as reader:
            ends = await reader.end_offsets([TopicPartition("jobs", p) for p in range(6)])
        assert committed == ends[TopicPartition("jobs", 0)]
    finally:
        for w in workers:
            await w.stop()


# --- a member killed with kill -9 ---------------------------------------------------------


def _read_worker_log(path: Path) -> tuple[list[tuple[int, int]], dict[int, int], list[str]]:
    processed, committed, assigned = [], {}, []
    for line in path.read_text().splitlines():
        kind, *rest = line.split()
        if kind == "processed" and len(rest) == 3:
            processed.append((int(rest[1]), int(rest[2])))
        elif kind == "committed" and len(rest) == 2:
            committed[int(rest[0])] = int(rest[1])
        elif kind == "assigned":
            assigned.append(rest[0] if rest else "")
    return processed, committed, assigned


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
async def test_a_member_killed_with_kill_9_loses_nothing_and_repeats_only_its_uncommitted(
    make_cluster: Callable[..., Cluster], tmp_path: Path, strategy: str
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 6)
    log = tmp_path / "victim.log"
    log.touch()
    command = [sys.executable, "-m", "tests.integration.group_worker", cluster.bootstrap]
    victim = await asyncio.create_subprocess_exec(
        *command,
        "workers",
        "jobs",
        str(log),
        str(SESSION_MS),
        strategy,
        cwd=Path(__file__).parents[2],
    )
    workers = [
        await Worker(
            cluster.bootstrap, "workers", ["jobs"], partition_assignment_strategy=strategy
        ).start()
        for _ in range(2)
    ]
    try:

        def three_members() -> bool:
            assigned = _read_worker_log(log)[2]
            mine = [w.owned for w in workers]
            return (
                bool(assigned)
                and len(assigned[-1].split(",")) == 2
                and all(len(o) == 2 for o in mine)
                and not mine[0] & mine[1]
            )

        await wait_for(three_members, what="three members, two partitions each")
        await _produce(cluster, "jobs", 6_000)
        await wait_for(lambda: len(_read_worker_log(log)[0]) > 300, what="the victim works")
        os.kill(victim.pid, signal.SIGKILL)
        await victim.wait()
        await _produce(cluster, "jobs", 6_000, start=6_000)
        await wait_for(lambda: _balanced(workers, 6), what="its partitions move to the others")
        processed, committed, assigned = _read_worker_log(log)
        tps = [TopicPartition("jobs", p) for p in range(6)]
        async with Consumer(bootstrap_servers=cluster.bootstrap) as reader:
            ends = {tp.partition: o for tp, o in (await reader.end_offsets(tps)).items()}
        every = {(p, o) for p, end in ends.items() for o in range(end)}
        assert sum(ends.values()) == 12_000

        def survivors() -> set[tuple[int, int]]:
            return {(tp.partition, o) for w in workers for tp, o, _ in w.processed}

        await wait_for(lambda: survivors() | set(processed) >= every, 90, "no record skipped")
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
        for w in workers:
            await w.stop()
    by_survivors = Counter((tp.partition, o) for w in workers for tp, o, _ in w.processed)
    assert all(n == 1 for n in by_survivors.values())  # never repeated among themselves
    victim_parts = {int(p) for p in assigned[-1].split(",")}
    repeated = set(by_survivors) & set(processed)
    for p in range(6):
        theirs = sorted(o for q, o in by_survivors if q == p)
        mine = {o for q, o in processed if q == p}
        if p not in victim_parts:
            assert not mine
            continue
        # the survivors resumed at the victim's last commit (or one it made as it died):
        # only the records after it are processed twice
        resumed = theirs[0]
        assert resumed >= committed.get(p, 0)
        assert {o for q, o in repeated if q == p} == {o for o in mine if o >= resumed}


# --- the whole group restarted ---------------------------------------------------------------


async def _committed(cluster: Cluster, group: str, tps: list[TopicPartition]) -> dict[int, int]:
    async with Consumer(bootstrap_servers=cluster.bootstrap, group_id=group) as reader:
        return {tp.partition: await reader.committed(tp) or 0 for tp in tps}


async def test_a_restarted_group_resumes_exactly_at_its_committed_offsets(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 4)
    tps = [TopicPartition("jobs", p) for p in range(4)]
    await _produce(cluster, "jobs", 6_000)
    # slow enough that they are still mid-stream when stopped (flat out, both could finish
    # all 6,000 between two looks of wait_for on a fast machine)
    first = [
        await Worker(
            cluster.bootstrap, "workers", ["jobs"], pace_s=0.01, max_poll_records=50
        ).start()
        for _ in range(2)
    ]
    await wait_for(lambda: sum(len(w.processed) for w in first) >= 2_000, what="some work done")
    for w in first:
        await w.stop()  # mid-stream: each commits what it processed as it gives it up
    committed = await _committed(cluster, "workers", tps)
    assert 2_000 <= sum(committed.values()) < 6_000
    second = [await Worker(cluster.bootstrap, "workers", ["jobs"]).start() for _ in range(2)]
    try:
        await wait_for(lambda: sum(len(w.processed) for w in [*first, *second]) >= 6_000, 90)
        await wait_for(lambda: not any(w.pending for w in second), what="commits done")
    finally:
        for w in second:
            await w.stop()
    for p in range(4):
        resumed = [o for w in second for tp, o, _ in w.processed if tp.partition == p]
        assert min(resumed) == committed[p]  # exactly where the group left off
    assert _values([*first, *second]) == Counter(str(i).encode() for i in range(6_000))


# --- publish/subscribe, and the queue's order ---------------------------------------------


async def test_two_groups_each_see_every_record_and_one_member_sees_partition_order(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "events", 4)
    shared = [await Worker(cluster.bootstrap, "billing", ["events"]).start() for _ in range(2)]
    alone = await Worker(cluster.bootstrap, "audit", ["events"]).start()
    everyone = [*shared, alone]
    try:
        await wait_for(lambda: _balanced(shared, 4) and len(alone.owned) == 4)
        await _produce(cluster, "events", 4_000)
        await wait_for(lambda: sum(len(w.processed) for w in everyone) >= 8_000, 90)
        await wait_for(lambda: not any(w.pending for w in everyone), what="commits done")
    finally:
        for w in everyone:
            await w.stop()
    every = Counter(str(i).encode() for i in range(4_000))
    assert _values(shared) == every  # publish/subscribe: each group gets everything, once
    assert _values([alone]) == every
    for p in range(4):  # the single member: per partition, in offset and in send order
        seen = [(o, int(v)) for tp, o, v in alone.processed if tp.partition == p]
        assert [o for o, _ in seen] == list(range(len(seen)))
        assert [v for _, v in seen] == sorted(v for _, v in seen)


# --- the coordinator's broker killed with kill -9 -------------------------------------------


async def test_the_coordinator_killed_with_kill_9_loses_no_commit_and_the_group_goes_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 6)
    tps = [TopicPartition("jobs", p) for p in range(6)]
    workers = [await Worker(cluster.bootstrap, "workers", ["jobs"]).start() for _ in range(2)]
    try:
        await wait_for(lambda: _balanced(workers, 6))
        await _produce(cluster, "jobs", 3_000)
        await wait_for(
            lambda: (
                sum(len(w.processed) for w in workers) >= 3_000
                and not any(w.pending for w in workers)
            ),
            what="all processed and committed",
        )
        before = await _committed(cluster, "workers", tps)
        assert sum(before.values()) == 3_000
        offsets = workers[0].consumer._offsets
        assert offsets is not None
        coordinator = await offsets.coordinator()
        cluster.brokers[coordinator].kill()
        assert await _committed(cluster, "workers", tps) == before  # every commit survived
        workers.append(await Worker(cluster.bootstrap, "workers", ["jobs"]).start())  # a join
        await wait_for(lambda: _balanced(workers, 6), 60, "three members after the failover")
        assert await offsets.coordinator() != coordinator
        await _produce(cluster, "jobs", 3_000, start=3_000)
        await wait_for(lambda: len(set(_values(workers))) >= 6_000, 90, "every record")
        await wait_for(lambda: not any(w.pending for w in workers), what="commits go on")
        assert sum((await _committed(cluster, "workers", tps)).values()) == 6_000
    finally:
        for w in workers:
            await w.stop()


# --- a zombie's commit -------------------------------------------------------------------


async def test_a_stale_members_commit_is_refused(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 2)
    a = await Worker(cluster.bootstrap, "workers", ["jobs"]).start()
    b = await Worker(cluster.bootstrap, "workers", ["jobs"]).start()
    try:
        await wait_for(lambda: _balanced([a, b], 2))
        member = a.consumer._member
        assert member is not None and member._task is not None
        member._task.cancel()  # a stalls: no more heartbeats (a long GC pause, a hung host)
        await wait_for(lambda: len(b.owned) == 2, 30, "b takes a's partition")
        mine = next(iter(a.owned))
        before = await b.consumer.committed(mine)
        with pytest.raises(CommitFailedError, match="rebalanced"):
            await a.consumer.commit({mine: 1_000})
        assert await b.consumer.committed(mine) == before
    finally:
        await a.stop()
        await b.stop()


# --- rebalance triggers: polling too slowly, a pattern matching a new topic -----------------


async def test_a_member_that_stops_polling_leaves_and_rejoins_when_it_polls(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 2)
    slow = await Worker(cluster.bootstrap, "workers", ["jobs"], max_poll_interval_ms=1_500).start()
    other = await Worker(cluster.bootstrap, "workers", ["jobs"]).start()
    try:
        await wait_for(lambda: _balanced([slow, other], 2))
        assert slow.task is not None
        slow.task.cancel()  # it stops polling (a handler stuck on one record)
        await wait_for(lambda: len(other.owned) == 2 and not slow.owned, 30, "slow left")
        slow.task = asyncio.get_running_loop().create_task(slow._run())  # polls again
        await wait_for(lambda: _balanced([slow, other], 2), 30, "slow is back")
    finally:
        await slow.stop()
        await other.stop()


async def test_a_pattern_subscription_picks_up_new_topics_and_auto_commit_commits(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "metrics-a", 2)
    consumer = Consumer(
        bootstrap_servers=cluster.bootstrap,
        group_id="dashboards",
        auto_offset_reset="earliest",
        auto_commit_interval_ms=100,
        metadata_max_age_ms=300,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=300,
    )
    await consumer.start()
    try:
        consumer.subscribe(pattern=r"metrics-.*")
        await wait_for(lambda: len(consumer.assignment()) == 2, what="metrics-a assigned")
        await _topic(cluster, "metrics-b", 1)
        await _topic(cluster, "other", 1)
        want = {TopicPartition("metrics-a", 0), TopicPartition("metrics-a", 1)}
        want.add(TopicPartition("metrics-b", 0))
        got: list[Any] = []

        async def poll_until_assigned() -> None:
            while consumer.assignment() != want:
                got.extend(r for rs in (await consumer.getmany(timeout_ms=50)).values() for r in rs)

        await asyncio.wait_for(poll_until_assigned(), 30)
        await _produce(cluster, "metrics-b", 10)
        while len(got) < 10:
            got.extend(r for rs in (await consumer.getmany(timeout_ms=100)).values() for r in rs)
        tp = TopicPartition("metrics-b", 0)
        deadline = asyncio.get_running_loop().time() + 10
        while await consumer.committed(tp) != 10:  # auto-commit, within its interval
            assert asyncio.get_running_loop().time() < deadline, "auto-commit did not commit"
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


# --- `headwater consume --group` ----------------------------------------------------------


async def _headwater(*args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [*COMMAND, *args], capture_output=True, text=True, timeout=90, check=True
    )
    return done.stdout


async def test_the_console_consumer_in_a_group_resumes_where_it_committed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "lines", 3)
    await _produce(cluster, "lines", 30)
    server = ["--bootstrap-server", cluster.bootstrap]
    group = [*server, "consume", "lines", "--group", "printers", "--from-beginning"]
    first = (await _headwater(*group, "--max-messages", "10", "--timeout-ms", "20000")).split()
    cooperative = ["--partition-assignment-strategy", "cooperative-sticky"]
    rest = (await _headwater(*group, *cooperative, "--timeout-ms", "3000")).split()
    assert len(first) == 10  # each run prints what the group has not committed yet
    assert sorted(first + rest, key=int) == [str(i) for i in range(30)]
    described = await _headwater(*server, "groups", "describe", "printers")
    assert "total lag" in described.lower() and "Empty" in described
    tps = [TopicPartition("lines", p) for p in range(3)]
    assert sum((await _committed(cluster, "printers", tps)).values()) == 30


# --- static membership ----------------------------------------------------------------------


async def test_a_static_member_restarting_within_its_session_gets_its_partitions_back(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 4)
    session = {"session_timeout_ms": 10_000}
    a = Worker(cluster.bootstrap, "workers", ["jobs"], group_instance_id="a", **session)
    b = Worker(cluster.bootstrap, "workers", ["jobs"], group_instance_id="b", **session)
    await a.start()
    await b.start()
    restarted = None
    try:
        await wait_for(lambda: _balanced([a, b], 4))
        a_owned = a.owned
        b_member = b.consumer._member
        assert b_member is not None
        generation, rebalances = b_member.generation_id, len(b.assignments)
        await a.stop()  # a static member sends no LeaveGroup: its place is kept
        await _produce(cluster, "jobs", 400)
        restarted = Worker(cluster.bootstrap, "workers", ["jobs"], group_instance_id="a", **session)
        await restarted.start()
        await wait_for(lambda: restarted.owned == a_owned, 30, "the same partitions back")
        await wait_for(lambda: sum(len(w.processed) for w in (a, b, restarted)) >= 400)
        assert b_member.generation_id == generation  # b saw no rebalance at all
        assert (
            len(b.assignments) == rebalances
            and b.owned == {TopicPartition("jobs", p) for p in range(4)} - a_owned
        )
        assert _values([a, b, restarted]) == Counter(str(i).encode() for i in range(400))
    finally:
        await b.stop()
        if restarted is not None:
            await restarted.stop()


# --- the cooperative protocol (KIP-429) ------------------------------------------------------


class _Tracking(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.revocations: list[set[TopicPartition]] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.revocations.append(set(revoked))
        await super().on_partitions_revoked(revoked)


async def test_cooperative_rebalancing_moves_only_what_moves_and_the_rest_keeps_flowing(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 6)
    every = {TopicPartition("jobs", p) for p in range(6)}
    settings = {"partition_assignment_strategy": "cooperative-sticky"}
    a = await _Tracking(cluster.bootstrap, "workers", ["jobs"], **settings).start()
    b: _Tracking | None = None
    low_water: list[int] = []
    try:
        await wait_for(lambda: a.owned == every, what="a owns all six")
        producing = asyncio.get_running_loop().create_task(_produce_slowly(cluster, 3_000))
        await wait_for(lambda: len(a.processed) >= 300, what="a is consuming")

        async def watch() -> None:  # a's assignment through the rebalance
            while True:
                low_water.append(len(a.owned))
                await asyncio.sleep(0.002)

        watcher = asyncio.get_running_loop().create_task(watch())
        b = await _Tracking(cluster.bootstrap, "workers", ["jobs"], **settings).start()
        await wait_for(lambda: _balanced([a, b], 6), what="three partitions each")
        watcher.cancel()
        moved = b.owned
        # a gave up exactly the three that moved, once, and never stopped owning the rest
        assert a.revocations == [moved]
        assert min(low_water) == 3 and a.owned == every - moved
        assert b.revocations == [] and set().union(*b.assignments) == moved
        await producing
        await wait_for(lambda: sum(len(w.processed) for w in (a, b)) >= 3_000, 60)
        await wait_for(lambda: not a.pending and not b.pending, what="commits done")
        assert _values([a, b]) == Counter(str(i).encode() for i in range(3_000))
        for w in (a, b):  # after the move, each processed only its own partitions
            assert {tp for tp, _, _ in w.processed[-10:]} <= w.owned
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            (described,) = await admin.describe_groups(["workers"])
        assert (described.state, described.strategy) == ("Stable", "cooperative-sticky")
    finally:
        await a.stop()
        if b is not None:
            await b.stop()


async def _produce_slowly(cluster: Cluster, count: int) -> None:
    """``count`` numbered records over a few seconds, keyed so every partition gets some."""
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=0) as p:
        futures = []
        for i in range(count):
            futures.append(await p.send("jobs", str(i).encode(), key=str(i).encode()))
            if i % 10 == 9:
                await asyncio.sleep(0.01)
        await asyncio.gather(*futures)


async def test_the_rolling_upgrades_first_step_shares_every_partition(
    make_cluster: Callable[..., Cluster],
) -> None:
    """README: the move to cooperative-sticky starts with members offering it beside
    range. They are still eager (range does not support the cooperative protocol) and the
    group picks cooperative-sticky: a member joining gets its share at once, nothing is
    left unowned (found in review: an eager member's claims held partitions back)."""
    cluster = make_cluster(3, GROUP_BROKER)
    await _topic(cluster, "jobs", 6)
    every = {TopicPartition("jobs", p) for p in range(6)}
    settings = {"partition_assignment_strategy": ["cooperative-sticky", "range"]}
    a = await Worker(cluster.bootstrap, "workers", ["jobs"], **settings).start()
    b: Worker | None = None
    try:
        await wait_for(lambda: a.owned == every, what="a owns all six")
        b = await Worker(cluster.bootstrap, "workers", ["jobs"], **settings).start()
        await wait_for(lambda: _balanced([a, b], 6), 20, what="three partitions each")
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            (described,) = await admin.describe_groups(["workers"])
        assert described.strategy == "cooperative-sticky"
    finally:
        await a.stop()
        if b is not None:
            await b.stop()


async def test_a_consumer_beyond_group_max_size_is_told_and_the_group_goes_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, {**GROUP_BROKER, "group.max.size": "1"})
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("jobs", 2, 1)])
    first = await Worker(cluster.bootstrap, "full", ["jobs"]).start()
    try:
        await wait_for(lambda: len(first.owned) == 2, 30, "the first consumer owns both")
        async with Consumer(
            bootstrap_servers=cluster.bootstrap, group_id="full", auto_offset_reset="earliest"
        ) as second:
            second.subscribe(["jobs"])
            with pytest.raises(GroupMaxSizeReachedError, match=r"group.max.size \(1 members\)"):
                await second.getmany(timeout_ms=10_000)
        assert len(first.owned) == 2  # no rebalance for the one refused
    finally:
        await first.stop()
