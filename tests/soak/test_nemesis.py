"""The soak: a seeded random nemesis against a real cluster, for minutes, under load.

Three real brokers on a real ZooKeeper; a topic of 6 partitions, RF=3,
min.insync.replicas=2. For ``HEADWATER_SOAK_S`` seconds an idempotent acks=all producer
writes numbered records while a consumer group member reads them and commits, a
transactional producer commits transactions of one record per partition of a second topic,
an admin creates, writes to and deletes a topic every second or so, and a nemesis does to
the cluster what the design says it survives, one fault after another and sometimes two at
once, often before the last one has healed:

- ``kill``: SIGKILL a broker, restart it on its data a moment later;
- ``kill-controller``: the same to the controller;
- ``pause``: SIGSTOP a broker past its ZooKeeper session (or not), then SIGCONT;
- ``stop``: SIGTERM (controlled shutdown), then restart;
- ``zookeeper-pause``: SIGSTOP ZooKeeper itself, so every broker loses it at once;
- ``double``: two of the above on two brokers together (acks=all waits meanwhile);
- ``partition``: cut links for 0.5-8 s, then heal them: a broker from ZooKeeper and the
  other brokers (clients still reach it), two brokers from each other, a broker from
  ZooKeeper only, or a broker from the clients. Only where each broker can run in a
  network namespace of its own (tests/faults/network.py: root); elsewhere the brokers run
  on loopback and the soak says it made no partitions.

Afterwards, what a user would check, and what Kafka promises:
- every acknowledged record is at its acknowledged offset, exactly once, in send order per
  partition, and no send failed (the producer retried through every fault);
- everything the consumer was handed is in the log at the offset it was handed at (a
  consumer never sees a record that is later lost: reads stop at the high watermark), and
  it was handed every acknowledged record;
- every transaction whose commit returned is read whole by a read_committed consumer, every
  one whose commit failed whole or not at all, and no record twice;
- every topic the admin deleted is gone: from the metadata and from every broker's disk;
- the three replicas of every partition hold the same batches (same offsets, leader
  epochs and CRCs): no replica diverged through the elections and truncations.

``make soak`` runs it (``SOAK_S=...`` for the duration, ``SOAK_SEED=...`` to replay a
run's faults); ``make test`` does not. A failure prints the seed and the faults it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client import Admin, Consumer, NewTopic, Producer, TopicPartition, TopicPartitionReplica
from client.dumplog import _Scan
from client.localcluster import BrokerStartError, ZooKeeperServer
from protocol.errors import ApiError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from tests.faults import network
from tests.faults.test_replication_faults import _until
from tests.faults.workload import Outcome, _sequence, check_exactly_once, read_back
from tests.integration.conftest import Cluster
from tests.integration.test_transactions import _committed_values

SOAK_S = float(os.environ.get("HEADWATER_SOAK_S", "0"))
SEED = int(os.environ.get("HEADWATER_SOAK_SEED") or time.time_ns() % 1_000_000)
GROUP_PROTOCOL = os.environ.get("HEADWATER_SOAK_GROUP_PROTOCOL") or (
    "consumer" if SEED % 2 else "classic"
)
"""The group member's protocol: the classic one, or Kafka 4's (KIP-848, the brokers
assign); by the seed's parity unless ``HEADWATER_SOAK_GROUP_PROTOCOL`` says."""

pytestmark = [
    pytest.mark.skipif(SOAK_S <= 0, reason="the soak runs under `make soak` (HEADWATER_SOAK_S)"),
    pytest.mark.timeout(SOAK_S + 900),
]

TOPIC = "soak"
TXN_TOPIC = "soak-txn"
PARTITIONS = 6
SETTINGS = {
    "replica.lag.time.max.ms": "2000",
    "controlled.shutdown.retry.backoff.ms": "200",
    "leader.imbalance.check.interval.seconds": "5",  # preferred leaders come back: more moves
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
    # as clusters are run: else a client still asking for a deleted topic's metadata makes
    # it again (Kafka's producers do too, for metadata.max.idle.ms), and it is not deleted
    "auto.create.topics.enable": "false",
    # moves between data directories slow enough that the other faults cut them short
    # (the rate is measured over 11 s: a move is held once it has copied about 2 MB)
    "replica.alter.log.dirs.io.max.bytes.per.second": "200000",
    # the group member of Kafka 4's protocol on the classic one's timings (see _consume)
    "group.consumer.session.timeout.ms": "10000",
    "group.consumer.heartbeat.interval.ms": "1000",
}
RATE = 10_000
"""Records a second the producer offers (it falls behind while acks=all cannot be met)."""
HEAL_S = 120.0
"""How long the cluster gets, once the nemesis stops, to have every replica in sync."""


@dataclass
class Nemesis:
    """The faults done so far, for the report (and to replay with the seed)."""

    rng: random.Random
    cluster: Cluster
    zookeeper: ZooKeeperServer
    net: network.Network | None = None
    started: float = field(default_factory=time.monotonic)
    done: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    def note(self, kind: str, what: str) -> None:
        self.kinds[kind] += 1
        self.done.append(f"{time.monotonic() - self.started:7.1f}s {kind}: {what}")

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            await asyncio.sleep(self.rng.uniform(0.2, 3.0))  # sometimes before the last healed
            kinds = [
                "kill",
                "kill-controller",
                "pause",
                "stop",
                "zookeeper-pause",
                "double",
                "move",
            ]
            weights = [4, 2, 4, 2, 1, 2, 4]
            if self.net is not None:
                kinds, weights = [*kinds, "partition"], [*weights, 4]
            kind = self.rng.choices(kinds, weights=weights)[0]
            if kind == "partition":
                await self._partition(self.net)  # type: ignore[arg-type]
            elif kind == "double":
                first, second = self.rng.sample(sorted(self.cluster.brokers), 2)
                await asyncio.gather(self._broker_fault(first), self._broker_fault(second))
            elif kind == "zookeeper-pause":
                await self._pause_zookeeper(self.rng.uniform(0.5, 4.0))
            elif kind == "move":
                await self._move_log(self.rng.choice(sorted(self.cluster.brokers)))
            else:
                victim = (
                    await self._controller()
                    if kind == "kill-controller"
                    else self.rng.choice(sorted(self.cluster.brokers))
                )
                await self._broker_fault(victim, "kill" if kind == "kill-controller" else kind)

    async def _broker_fault(self, broker_id: int, kind: str | None = None) -> None:
        kind = kind or self.rng.choice(["kill", "pause", "stop"])
        broker = self.cluster.brokers[broker_id]
        down_s = self.rng.uniform(0.2, 6.0)
        self.note(kind, f"broker {broker_id} for {down_s:.1f}s")
        if kind == "pause":
            broker.pause()
            try:
                await asyncio.sleep(down_s)
            finally:
                broker.resume()
            return
        if kind == "kill":
            broker.kill()
        else:
            code = await asyncio.to_thread(broker.stop)  # controlled shutdown: seconds
            assert code == 0, f"broker {broker_id} exited {code} on SIGTERM"
        await asyncio.sleep(down_s)
        await self._restart(broker_id)

    async def _restart(self, broker_id: int) -> None:
        """Start the broker on its data again. Until the dead one's ZooKeeper session
        expires its registration stands, and the broker refuses to start (as Kafka's): try
        again, for longer than a session."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            try:
                await asyncio.to_thread(self.cluster.start_broker, broker_id)
                return
            except BrokerStartError as exc:
                if "already registered" not in str(exc) or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.5)

    async def _partition(self, net: network.Network) -> None:
        brokers = sorted(self.cluster.brokers)
        shape = self.rng.choice(["isolate", "pair", "zookeeper", "clients"])
        seconds = self.rng.uniform(0.5, 8.0)
        victim = self.rng.choice(brokers)
        if shape == "isolate":  # from ZooKeeper and the other brokers; clients reach it
            cuts = [(victim, net.zookeeper)]
            for other in brokers:
                if other != victim:
                    cuts += [(victim, net.address(other)), (other, net.address(victim))]
            what = f"broker {victim} from ZooKeeper and the other brokers"
        elif shape == "pair":
            a, b = self.rng.sample(brokers, 2)
            cuts, what = [(a, net.address(b)), (b, net.address(a))], f"brokers {a} and {b}"
        elif shape == "zookeeper":
            cuts, what = [(victim, net.zookeeper)], f"broker {victim} from ZooKeeper"
        else:
            cuts, what = [(victim, net.clients)], f"broker {victim} from the clients"
        self.note("partition", f"{what} for {seconds:.1f}s")
        for cut in cuts:
            net.cut(*cut)
        try:
            await asyncio.sleep(seconds)
        finally:
            for cut in cuts:
                net.heal(*cut)

    async def _pause_zookeeper(self, seconds: float) -> None:
        pid = self.zookeeper.pid
        assert pid is not None
        self.note("zookeeper-pause", f"{seconds:.1f}s")
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    async def _move_log(self, broker_id: int) -> None:
        """One of the broker's logs (the soak's topics, or a coordinator's) to its other
        data directory (AlterReplicaLogDirs), while the other faults go on: a move cut
        short by a kill resumes, or finishes, at the restart."""
        rng = random.Random(self.rng.random())  # (the same draws whatever the broker says)
        with contextlib.suppress(Exception):  # a broker down, paused or cut off: no move
            async with Admin(bootstrap_servers=self.cluster.bootstrap) as admin:
                found = await asyncio.wait_for(admin.describe_log_dirs([broker_id]), 5)
                dirs = found[broker_id]
                homes = {
                    tp: d
                    for d, desc in dirs.items()
                    for tp, info in desc.replicas.items()
                    if not info.is_future and not tp.topic.startswith("churn-")
                }
                if len(dirs) < 2 or not homes:
                    return
                busy = [tp for tp in sorted(homes) if tp.topic in (TOPIC, TXN_TOPIC)]
                tp = rng.choice(busy if busy and rng.random() < 0.75 else sorted(homes))
                target = next(d for d in sorted(dirs) if d != homes[tp])
                replica = TopicPartitionReplica(tp.topic, tp.partition, broker_id)
                answer = await asyncio.wait_for(admin.alter_replica_log_dirs({replica: target}), 5)
                if answer[replica] is None:
                    self.note("move", f"{tp.topic}-{tp.partition} on broker {broker_id}")

    async def _controller(self) -> int:
        with contextlib.suppress(Exception):
            async with Admin(bootstrap_servers=self.cluster.bootstrap) as admin:
                controller = (await asyncio.wait_for(admin.describe_cluster(), 5)).controller_id
                if controller in self.cluster.brokers:
                    return int(controller)
        return self.rng.choice(sorted(self.cluster.brokers))


async def _produce(bootstrap: str, stop: asyncio.Event, outcome: Outcome) -> None:
    """Numbered records, keyed (so each partition gets its numbers in order), at ``RATE``
    until ``stop``; every future's outcome kept, by its callback. (No list of the
    futures: gathering millions at the end stalled this process for 20 s, and the group
    member, in the same process, lost its session.)"""
    unsettled = 0
    settled = asyncio.Event()

    def done(seq: int, future: asyncio.Future[Any]) -> None:
        nonlocal unsettled
        if future.cancelled():
            outcome.failed[seq] = asyncio.CancelledError()
        elif (error := future.exception()) is not None:
            outcome.failed[seq] = error
        else:
            outcome.acked[seq] = future.result()
        unsettled -= 1
        if not unsettled:
            settled.set()

    async with Producer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        request_timeout_ms=10_000,
        delivery_timeout_ms=300_000,  # past the longest the nemesis keeps acks=all from holding
        retry_backoff_ms=100,
    ) as producer:
        seq = 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        while not stop.is_set():
            future = await producer.send(TOPIC, value=str(seq).encode(), key=str(seq % 64).encode())
            unsettled += 1
            future.add_done_callback(lambda f, seq=seq: done(seq, f))
            seq += 1
            if seq % 100 == 0 and (ahead := began + seq / RATE - loop.time()) > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
        if unsettled:
            await settled.wait()  # (the last callbacks run just after the flush)


@dataclass
class Transactions:
    """The transactional producer's: those whose commit returned, those that raised (their
    outcome unknown: whole or not at all), and how many were begun."""

    committed: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    count: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    why: list[str] = field(default_factory=list)
    """The first failures' messages: whether each was a fault's due (a transaction
    timed out while a broker was paused) or a bug."""


async def _transact(bootstrap: str, stop: asyncio.Event, txns: Transactions) -> None:
    """Transactions of one record per partition until ``stop``. A producer whose
    transaction failed is replaced by a new one with the same transactional id, as an
    application restarts (it fences the old one and aborts what that left open)."""

    def make() -> Producer:
        return Producer(
            bootstrap_servers=bootstrap,
            transactional_id="soak",
            transaction_timeout_ms=10_000,
            request_timeout_ms=5_000,
            delivery_timeout_ms=30_000,
            max_block_ms=120_000,
        )

    producer = make()
    await producer.start()
    try:
        while not stop.is_set():
            i = txns.count
            txns.count += 1
            try:
                producer.begin_transaction()
                for p in range(PARTITIONS):
                    await producer.send(TXN_TOPIC, b"%d/%d" % (i, p), partition=p)
                await producer.commit_transaction()
            except (ApiError, TimeoutError, RuntimeError) as exc:
                txns.failed.add(i)
                txns.errors[type(exc).__name__] += 1
                if len(txns.why) < 5:
                    txns.why.append(f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(ApiError, TimeoutError, RuntimeError):
                    await producer.stop()
                producer = make()
                await producer.start()
                continue
            txns.committed.add(i)
    finally:
        await producer.stop()


def _check_transactions(values: list[bytes], txns: Transactions) -> None:
    """Each transaction read whole or not at all; every committed one read; none read
    that was never begun; no record twice."""
    assert len(values) == len(set(values)), "a transactional record was read twice"
    seen: dict[int, set[int]] = {}
    for value in values:
        txn, partition = map(int, value.split(b"/"))
        seen.setdefault(txn, set()).add(partition)
    half = sorted(t for t, partitions in seen.items() if partitions != set(range(PARTITIONS)))
    assert not half, f"transactions read in part: {half[:10]}"
    unread = sorted(txns.committed - set(seen))
    assert not unread, f"transactions committed but not read: {unread[:10]}"
    stray = sorted(set(seen) - txns.committed - txns.failed)
    assert not stray, f"transactions read that were never committed: {stray[:10]}"


async def _watch_lag(lags: list[float]) -> None:
    """The event loop's lateness, every 100 ms: a stall of this process (its own garbage
    collection, a blocking call) would look like a client fault."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + 0.1
        await asyncio.sleep(0.1)
        lags.append(loop.time() - due)


@dataclass
class Churn:
    """The admin's topics: those it made (or may have: a create whose answer was lost),
    all of them deleted before it stopped."""

    made: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sends: list[str] = field(default_factory=list)
    """The first failed sends (a topic just made, written to): when and why."""


async def _churn(bootstrap: str, stop: asyncio.Event, churn: Churn) -> None:
    """A topic made (3 partitions, RF=3), a record written to each partition with
    acks=all, the topic deleted; again until ``stop``. A step that fails is tried again
    (a create that was done after all answers TOPIC_ALREADY_EXISTS, a delete that was
    UNKNOWN_TOPIC_OR_PARTITION)."""

    async def until_done(step: Callable[[], Awaitable[object]], done: type[ApiError]) -> None:
        while True:
            try:
                await step()
                return
            except done:
                return
            except (ApiError, TimeoutError) as exc:
                churn.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.5)

    async with (
        Admin(bootstrap_servers=bootstrap, request_timeout_ms=10_000) as admin,
        Producer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000) as producer,
    ):
        while not stop.is_set():
            name = f"churn-{len(churn.made)}"
            churn.made.append(name)
            await until_done(
                lambda name=name: admin.create_topics([NewTopic(name, 3, 3)]),
                TopicAlreadyExistsError,
            )
            try:  # (a broker that has not heard of the topic yet says it does not exist)
                futures = [await producer.send(name, b"x", partition=p) for p in range(3)]
                await asyncio.wait_for(asyncio.gather(*futures), 30)
            except (ApiError, TimeoutError) as exc:
                churn.errors[f"send: {type(exc).__name__}"] += 1
                if len(churn.sends) < 5:
                    when = time.strftime("%H:%M:%S", time.gmtime())
                    churn.sends.append(f"{when} UTC {name}: {type(exc).__name__}: {exc}")
            await until_done(
                lambda name=name: admin.delete_topics([name]), UnknownTopicOrPartitionError
            )
            await asyncio.sleep(0.5)


async def _churned_away(cluster: Cluster, churn: Churn) -> list[str]:
    """What is left of the deleted topics: in the metadata, or a directory on a disk."""
    left = []
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        left += [t for t in await admin.list_topics() if t.startswith("churn-")]
    for broker_id, broker in cluster.brokers.items():
        left += [
            f"{d.name} on broker {broker_id}"
            for data in _data_dirs(broker)
            for d in data.glob("churn-*")
        ]
    return left


@dataclass
class Reading:
    """What the group member was handed: partition -> offset -> the record's number."""

    at: dict[int, dict[int, int]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    commit_errors: Counter[str] = field(default_factory=Counter)

    def take(self, partition: int, offset: int, seq: int) -> None:
        seen = self.at.setdefault(partition, {})
        before = seen.setdefault(offset, seq)
        if before != seq:  # the same offset handed out twice with different records
            self.conflicts.append(f"partition {partition} offset {offset}: {before} then {seq}")


async def _consume(bootstrap: str, produced: asyncio.Event, reading: Reading) -> None:
    """A group member reading from the start, committing every second; once everything
    is ``produced``, until it has read to the end of every partition."""
    async with Consumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id="soak",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        group_protocol=GROUP_PROTOCOL,
    ) as consumer:
        loop = asyncio.get_running_loop()
        committed_at = loop.time()
        ends: dict[TopicPartition, int] | None = None
        while True:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    reading.take(tp.partition, record.offset, _sequence(record.value))
            if loop.time() - committed_at > 1.0:
                committed_at = loop.time()
                try:
                    await consumer.commit()
                except Exception as exc:  # a coordinator moving, a rebalance: next second
                    reading.commit_errors[type(exc).__name__] += 1
            if produced.is_set():
                tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
                ends = ends or await consumer.end_offsets(tps)
                if len(consumer.assignment()) == PARTITIONS and all(
                    [await consumer.position(tp) >= ends[tp] for tp in tps]
                ):
                    return


async def _describe(bootstrap: str) -> Any:
    """The topic's description, or why there is none (a broker may be down or busy)."""
    try:
        async with Admin(bootstrap_servers=bootstrap) as admin:
            (description,) = await asyncio.wait_for(admin.describe_topics([TOPIC]), 10)
            return description
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _in_sync(description: Any) -> bool:
    return not isinstance(description, str) and all(
        sorted(p.isr) == sorted(p.replicas) and p.leader >= 0 for p in description.partitions
    )


def _batches(directory: Path) -> Iterator[tuple[int, int, int, int]]:
    """(base offset, last offset, leader epoch, CRC) of every batch of a replica's log."""
    for segment in sorted(directory.glob("*.log")):
        for batch in _Scan(segment, headers_only=True):
            h = batch.header
            yield (
                h.base_offset,
                h.base_offset + h.last_offset_delta,
                h.partition_leader_epoch,
                h.crc,
            )


def _replicas_differ(cluster: Cluster) -> list[str]:
    """Partitions whose replicas do not hold the same batches, and how."""
    differ = []
    for topic, partition in itertools.product((TOPIC, TXN_TOPIC), range(PARTITIONS)):
        logs = {
            broker_id: list(_batches(_log_dir(broker, f"{topic}-{partition}")))
            for broker_id, broker in cluster.brokers.items()
        }
        if len({tuple(batches) for batches in logs.values()}) > 1:
            shapes = {b: (len(x), x[-1] if x else None) for b, x in logs.items()}
            first = min(
                (
                    i
                    for i in range(max(map(len, logs.values())))
                    if len({x[i] if i < len(x) else None for x in logs.values()}) > 1
                ),
                default=-1,
            )
            differ.append(
                f"{topic}-{partition}: batches/last {shapes}, first difference at #{first}"
            )
    return differ


@pytest.fixture
def client_log(tmp_path: Path) -> Iterator[Path]:
    """The clients' log (INFO; HEADWATER_SOAK_CLIENT_LOG=DEBUG for every batch's retry),
    timestamped to the millisecond as the brokers' logs are (UTC), beside them: what a
    failed send or a rebalance is read from afterwards."""
    path = tmp_path / "clients.log"
    formatter = logging.Formatter("%(asctime)s %(name)s %(message)s")
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03dZ"
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    logger = logging.getLogger("headwater.client")
    level = logger.level
    logger.setLevel(os.environ.get("HEADWATER_SOAK_CLIENT_LOG") or logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


def _settings(cluster: Cluster, broker_id: int) -> dict[str, str]:
    """SETTINGS, with two data directories (the nemesis moves logs between them)."""
    home = cluster.directory / f"broker-{broker_id}"
    return {**SETTINGS, "log.dirs": f"{home / 'data'},{home / 'data-b'}"}


def _data_dirs(broker: Any) -> list[Path]:
    return [broker.directory / "data", broker.directory / "data-b"]


def _log_dir(broker: Any, name: str) -> Path:
    """Where the broker's log ``name`` is: the directory of that name in either data
    directory that is not a move's copy (``.future`` in it)."""
    for data in _data_dirs(broker):
        path = data / name
        if path.is_dir() and not (path / ".future").exists():
            return path
    return broker.directory / "data" / name  # (none: read as empty)


@pytest.fixture
def soak_cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Cluster, ZooKeeperServer, network.Network | None]]:
    """Three brokers, each in a network namespace of its own where that can be done (the
    nemesis then cuts links too), else on loopback; killed by pid afterwards."""
    if network.available() is not None:
        cluster = request.getfixturevalue("make_cluster")(0)
        for broker_id in (1, 2, 3):
            cluster.start_broker(broker_id, _settings(cluster, broker_id))
        yield cluster, request.getfixturevalue("zookeeper"), None
        return
    net = network.Network()
    zookeeper = ZooKeeperServer(tmp_path / "zookeeper", host=net.zookeeper)
    cluster: network.PartitionedCluster | None = None
    try:
        zookeeper.start()
        cluster = network.PartitionedCluster(net, zookeeper.connect_string, tmp_path / "cluster-0")
        for broker_id in (1, 2, 3):
            cluster.start_broker(broker_id, _settings(cluster, broker_id))
        yield cluster, zookeeper, net
    finally:
        if cluster is not None:
            cluster.kill_all()  # only the processes this fixture started, by pid
        zookeeper.stop()
        net.close()


async def test_nemesis_loses_and_duplicates_nothing(
    soak_cluster: tuple[Cluster, ZooKeeperServer, network.Network | None], client_log: Path
) -> None:
    cluster, zookeeper, net = soak_cluster
    for broker in cluster.brokers.values():
        # a restart comes back on the same port, as a deployed broker does (the harness's
        # default is a fresh one each time): the clients' addresses stay good
        broker.settings["listeners"] = f"PLAINTEXT://{broker.host}:{broker.port}"
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics(
            [NewTopic(t, PARTITIONS, 3, {"min.insync.replicas": "2"}) for t in (TOPIC, TXN_TOPIC)]
        )
    await _until(lambda: _describe(cluster.bootstrap), _in_sync, 60)
    bootstrap = cluster.bootstrap  # every broker: the clients always find one that is up
    nemesis = Nemesis(random.Random(SEED), cluster, zookeeper, net)
    outcome, reading, txns = Outcome(), Reading(), Transactions()
    stop, produced = asyncio.Event(), asyncio.Event()
    producing = asyncio.ensure_future(_produce(bootstrap, stop, outcome))
    consuming = asyncio.ensure_future(_consume(bootstrap, produced, reading))
    transacting = asyncio.ensure_future(_transact(bootstrap, stop, txns))
    churn = Churn()
    churning = asyncio.ensure_future(_churn(bootstrap, stop, churn))
    lags: list[float] = []
    watching = asyncio.ensure_future(_watch_lag(lags))
    report = (
        f"seed {SEED} (HEADWATER_SOAK_SEED replays its faults), group protocol {GROUP_PROTOCOL}"
    )
    try:
        await nemesis.run(SOAK_S)
        for broker_id, broker in cluster.brokers.items():  # every fault over: all up
            assert broker.process is not None and broker.process.poll() is None, broker_id
        stop.set()
        await asyncio.wait_for(producing, HEAL_S)
        produced.set()  # (its last records were acknowledged after the stop)
        await asyncio.wait_for(consuming, HEAL_S)
        await asyncio.wait_for(transacting, HEAL_S)
        await asyncio.wait_for(churning, HEAL_S)
        await _until(lambda: _describe(bootstrap), _in_sync, HEAL_S)
        stored = await read_back(bootstrap, TOPIC)
        transacted = await _committed_values(cluster, TXN_TOPIC, PARTITIONS)

        async def replicas() -> list[str]:
            return _replicas_differ(cluster)

        await _until(replicas, lambda differ: not differ, 60)

        async def churned() -> list[str]:
            return await _churned_away(cluster, churn)

        await _until(churned, lambda left: not left, 60)
    except BaseException:
        print("\n".join([report, *nemesis.done]))
        raise
    finally:
        if net is not None:
            net.heal_all()
        stop.set()
        for task in (producing, consuming, transacting, churning, watching):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    print(
        f"\nsoak: {SOAK_S:.0f} s, {report}; faults {dict(nemesis.kinds)}; "
        f"{len(outcome.acked):,} records acknowledged, "
        f"{sum(map(len, reading.at.values())):,} offsets read by the group; "
        f"commit errors {dict(reading.commit_errors)}; {len(txns.committed):,} transactions "
        f"committed, {len(txns.failed):,} failed {dict(txns.errors)}; {len(churn.made):,} "
        f"topics made and deleted (errors retried: {dict(churn.errors)}); the test's own "
        f"event loop late by at most {max(lags, default=0):.2f} s"
    )
    for why in txns.why:
        print(f"  a transaction failed: {why}")
    for why in churn.sends:
        print(f"  a send to a churned topic failed: {why}")
    print(f"  the clients' log: {client_log}; the brokers': {cluster.directory}")
    if net is None:
        print(f"  no partitions: {network.available()}")
    assert sum(nemesis.kinds.values()) >= SOAK_S / 10, "the nemesis did too little"
    try:
        check_exactly_once(outcome, stored)
        assert not reading.conflicts, reading.conflicts[:10]
        stored_at = {p: dict(records) for p, records in stored.items()}
        phantom = [
            (p, offset, seq)
            for p, seen in reading.at.items()
            for offset, seq in seen.items()
            if stored_at[p].get(offset) != seq
        ]
        assert not phantom, f"read but not in the log at that offset: {phantom[:10]}"
        read = {seq for seen in reading.at.values() for seq in seen.values()}
        unread = sorted(set(outcome.acked) - read)
        assert not unread, f"acknowledged but never read by the group: {unread[:10]}"
        _check_transactions(transacted, txns)
    except AssertionError:
        print("\n".join([report, *nemesis.done]))
        raise
