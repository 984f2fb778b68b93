"""Transactions on a real three-broker cluster: markers, read_committed consumers, and the
last stable offset, through a leader's kill -9."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from client import (
    Admin,
    ClientClosedError,
    Consumer,
    NewTopic,
    OffsetAndMetadata,
    Producer,
    TopicPartition,
    TransactionAbortedError,
    TransactionStateError,
)
from client.cluster import Cluster as ClientCluster
from client.coordinator import GroupOffsets
from client.localcluster import ZooKeeperServer
from protocol.apis import (
    ApiKey,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    WritableTxnMarker,
    WritableTxnMarkerTopic,
    WriteTxnMarkersRequest,
)
from protocol.errors import (
    IllegalGenerationError,
    InvalidTxnStateError,
    ProducerFencedError,
    UnknownProducerIdError,
    error_for_code,
)
from protocol.records import encode_batch
from protocol.records.control import encode_end_txn_marker
from tests.integration.conftest import Cluster, module_cluster
from tests.integration.conftest import until as _until
from tests.integration.test_cli import COMMAND
from tests.integration.test_replication import _metrics_port, _scrape

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOPIC = "txn-markers"
TP = TopicPartition(TOPIC, 0)


SETTINGS = {
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200",
    "metrics.port": "0",
}


@pytest.fixture(scope="module")
def cluster(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    yield from module_cluster(zookeeper, tmp_path_factory.mktemp("txn"), "txn", SETTINGS)


@pytest.fixture(scope="module")
def raw_cluster(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """For the tests that play the coordinator themselves (transactional batches sent
    raw, markers written with WriteTxnMarkers): the leaders' check with the coordinator
    (KIP-890), which knows none of these transactions, is off."""
    settings = {**SETTINGS, "transaction.partition.verification.enable": "false"}
    yield from module_cluster(zookeeper, tmp_path_factory.mktemp("raw"), "txn-raw", settings)


async def _raw(bootstrap: str) -> ClientCluster:
    raw = ClientCluster(bootstrap, client_id="test-raw")
    await raw.start()
    await raw.refresh_new(TOPIC)
    return raw


async def _produce(raw: ClientCluster, pid: int, seq: int, values: list[bytes]) -> int:
    batch = encode_batch(
        [(b"k", v, None, None) for v in values],
        producer_id=pid,
        producer_epoch=0,
        base_sequence=seq,
        is_transactional=True,
    )
    request = ProduceRequest(
        transactional_id=f"raw-{pid}",  # a transactional batch comes with its id
        acks=-1,
        timeout_ms=10_000,
        topics=[ProduceTopic(name=TOPIC, partitions=[ProducePartition(index=0, records=batch)])],
    )
    result = await _to_leader(raw, ApiKey.PRODUCE, request, lambda r: r.topics[0].partitions[0])
    return result.base_offset


async def _to_leader(
    raw: ClientCluster, api_key: ApiKey, request: Any, result_of: Any, tp: TopicPartition = TP
) -> Any:
    """Sends ``request`` to ``tp``'s leader and returns its partition's result, retrying a
    retriable error as a client does: a broker's metadata can name a new leader a moment
    before that leader has taken the partition over."""
    async with asyncio.timeout(20):
        while True:
            leader = raw.leader_for(tp)
            if leader is not None:
                result = result_of(await raw.send(leader, api_key, request))
                if result.error_code == 0:
                    return result
                if not error_for_code(result.error_code).retriable:
                    raise AssertionError(result.error_message)
            await asyncio.sleep(0.1)
            await raw.refresh_new(tp.topic)


async def _end(raw: ClientCluster, pid: int, *, committed: bool) -> None:
    request = WriteTxnMarkersRequest(
        markers=[
            WritableTxnMarker(
                producer_id=pid,
                producer_epoch=0,
                transaction_result=committed,
                topics=[WritableTxnMarkerTopic(name=TOPIC, partition_indexes=[0])],
                coordinator_epoch=0,
            )
        ]
    )
    await _to_leader(
        raw,
        ApiKey.WRITE_TXN_MARKERS,
        request,
        lambda r: r.markers[0].topics[0].partitions[0],
    )


async def _read(
    bootstrap: str, isolation_level: str, until: int, tp: TopicPartition = TP
) -> tuple[list[tuple[int, bytes]], int]:
    """(offset, value) of every record a consumer of ``isolation_level`` gets before its
    position reaches ``until``, and that position."""
    async with Consumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    ) as consumer:
        consumer.assign([tp])
        seen: list[tuple[int, bytes]] = []
        async with asyncio.timeout(20):
            while await consumer.position(tp) < until:
                got = await consumer.getmany(timeout_ms=200)
                seen += [(r.offset, r.value) for r in got.get(tp, [])]
        return seen, await consumer.position(tp)


async def test_read_committed_sees_committed_transactions_only_and_survives_a_leader_kill(
    raw_cluster: Cluster,
) -> None:
    cluster = raw_cluster
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 1, 3)])
    raw = await _raw(cluster.bootstrap)
    try:
        committed = await _produce(raw, 5000, 0, [b"c1", b"c2"])  # 0-1
        aborted = await _produce(raw, 5001, 0, [b"a1"])  # 2
        async with Consumer(
            bootstrap_servers=cluster.bootstrap, isolation_level="read_committed"
        ) as reader:
            assert (await reader.end_offsets([TP]))[TP] == committed  # nothing stable yet
        async with Consumer(bootstrap_servers=cluster.bootstrap) as reader:
            assert (await reader.end_offsets([TP]))[TP] == 3
        await _end(raw, 5000, committed=True)  # 3
        await _end(raw, 5001, committed=False)  # 4
        plain = await _produce(raw, 5002, 0, [b"c3"])  # 5: a second transaction of another
        await _end(raw, 5002, committed=True)  # 6
        end = 7
        seen, position = await _read(cluster.bootstrap, "read_committed", end)
        assert seen == [(0, b"c1"), (1, b"c2"), (plain, b"c3")]
        assert position == end  # past the last marker, though no record is there
        everything, _ = await _read(cluster.bootstrap, "read_uncommitted", end)
        assert everything == [(0, b"c1"), (1, b"c2"), (aborted, b"a1"), (plain, b"c3")]

        leader = raw.leader_for(TP)
        assert leader is not None
        cluster.brokers[leader].kill()  # kill -9: a follower has every marker (acks=all)
        try:
            await raw.refresh_new(TOPIC)
            async with asyncio.timeout(30):
                while raw.leader_for(TP) in (None, leader):
                    await asyncio.sleep(0.2)
                    await raw.refresh_new(TOPIC)
            seen, _ = await _read(cluster.bootstrap, "read_committed", end)
            assert seen == [(0, b"c1"), (1, b"c2"), (plain, b"c3")]
        finally:
            cluster.start_broker(leader)
    finally:
        await raw.close()


async def test_markers_and_control_batches_are_refused_to_producers(
    raw_cluster: Cluster,
) -> None:
    raw = await _raw(raw_cluster.bootstrap)
    try:
        await _produce(raw, 6000, 0, [b"x"])
        marker = encode_end_txn_marker(
            producer_id=6000, producer_epoch=0, committed=True, coordinator_epoch=0
        )
        leader = raw.leader_for(TP)
        assert leader is not None
        request = ProduceRequest(
            acks=1,
            timeout_ms=10_000,
            topics=[
                ProduceTopic(name=TOPIC, partitions=[ProducePartition(index=0, records=marker)])
            ],
        )
        response: ProduceResponse = await raw.send(leader, ApiKey.PRODUCE, request)
        (result,) = response.topics[0].partitions
        assert result.error_code == 87 and "control batches" in (result.error_message or "")
        await _end(raw, 6000, committed=False)  # the broker still serves
    finally:
        await raw.close()


# --- the transactional producer ------------------------------------------------------


async def _topic(cluster: Cluster, name: str, partitions: int = 2) -> None:
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic(name, partitions, 3)])


async def _committed_values(cluster: Cluster, topic: str, partitions: int = 2) -> list[bytes]:
    """Every record a read_committed consumer gets, once it has reached each partition's
    last stable offset, which must be the log end (no transaction left open)."""
    values: list[bytes] = []
    async with Consumer(
        bootstrap_servers=cluster.bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    ) as consumer:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        assert await _stable(cluster, *tps)  # nothing left open
        async with Consumer(bootstrap_servers=cluster.bootstrap) as plain:
            ends = await plain.end_offsets(tps)
        async with asyncio.timeout(20):
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    got = await consumer.getmany(tp, timeout_ms=200)
                    values += [r.value for r in got.get(tp, [])]
    return sorted(values)


def _producer(cluster: Cluster, transactional_id: str, **settings: object) -> Producer:
    return Producer(
        bootstrap_servers=cluster.bootstrap, transactional_id=transactional_id, **settings
    )


async def test_committed_transactions_are_read_and_aborted_ones_are_not(cluster: Cluster) -> None:
    topic = "txn-basic"
    await _topic(cluster, topic)
    async with _producer(cluster, "basic") as producer:
        async with producer.transaction():
            for i in range(10):
                await producer.send(topic, b"committed-%d" % i, partition=i % 2)
        producer.begin_transaction()
        for i in range(5):
            await producer.send(topic, b"aborted-%d" % i, partition=i % 2)
        await producer.flush()  # written, then marked aborted
        await producer.abort_transaction()
        with pytest.raises(RuntimeError, match="inside"):
            await producer.send(topic, b"outside")
        with pytest.raises(ValueError, match="boom"):
            async with producer.transaction():
                await producer.send(topic, b"aborted-by-raise", partition=0)
                raise ValueError("boom")
        async with producer.transaction():
            await producer.send(topic, b"last", partition=1)
    assert await _committed_values(cluster, topic) == sorted(
        [b"committed-%d" % i for i in range(10)] + [b"last"]
    )
    printed = await asyncio.to_thread(
        subprocess.run,
        [
            *COMMAND,
            "--bootstrap-server",
            cluster.bootstrap,
            "consume",
            topic,
            "--from-beginning",
            "--isolation-level",
            "read_committed",
            "--timeout-ms",
            "3000",
        ],
        capture_output=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed
    # the coordinators' metrics: 2 committed, 2 aborted ("aborted" and the raise), one id
    scraped = [await _scrape(_metrics_port(cluster, b)) for b in cluster.brokers]
    assert sum(m["headwater_transactions_committed_total"] for m in scraped) >= 2
    assert sum(m["headwater_transactions_aborted_total"] for m in scraped) >= 2
    ids = [m.get('headwater_transactional_ids{state="CompleteCommit"}', 0) for m in scraped]
    assert sum(ids) >= 1
    assert sorted(printed.stdout.split()) == sorted(
        [b"committed-%d" % i for i in range(10)] + [b"last"]
    )


async def test_a_new_producer_fences_the_old_and_aborts_what_it_left_open(
    cluster: Cluster,
) -> None:
    topic = "txn-fence"
    await _topic(cluster, topic)
    old = _producer(cluster, "fence")
    await old.start()
    try:
        old.begin_transaction()
        await old.send_and_wait(topic, b"left-open", partition=0)
        async with _producer(cluster, "fence") as new:  # aborts "left-open", fences old
            async with new.transaction():
                await new.send(topic, b"new", partition=0)
            with pytest.raises(ProducerFencedError, match="a newer producer"):
                await old.commit_transaction()
            with pytest.raises(ProducerFencedError):  # and stays so
                old.begin_transaction()
    finally:
        await old.stop()
    assert await _committed_values(cluster, topic) == [b"new"]


async def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(
    cluster: Cluster,
) -> None:
    topic = "txn-timeout"
    await _topic(cluster, topic)
    async with _producer(cluster, "slow", transaction_timeout_ms=1000) as producer:
        producer.begin_transaction()
        await producer.send_and_wait(topic, b"too-slow", partition=1)
        tps = [TopicPartition(topic, p) for p in range(2)]
        assert await _stable(cluster, *tps)  # the coordinator aborts it: the LSO moves on
        # told why: its own timeout (not "a newer producer took over", as a fence says)
        with pytest.raises(ProducerFencedError, match=r"ran past transaction_timeout_ms \(1000"):
            await producer.commit_transaction()
    assert await _committed_values(cluster, topic) == []


async def _stable(cluster: Cluster, *tps: TopicPartition, within_s: float = 20) -> bool:
    """No transaction is open in ``tps``: their last stable offsets reach their log ends
    within ``within_s`` (a commit or abort is answered once it is decided; its markers
    are written right after, as in Kafka)."""
    deadline = asyncio.get_running_loop().time() + within_s
    async with (
        Consumer(bootstrap_servers=cluster.bootstrap) as plain,
        Consumer(bootstrap_servers=cluster.bootstrap, isolation_level="read_committed") as rc,
    ):
        while True:
            ends = await plain.end_offsets(tps)
            if await rc.end_offsets(tps) == ends:
                return True
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.1)


async def test_consume_process_produce_commits_offsets_only_with_the_transaction(
    cluster: Cluster,
) -> None:
    source, sink, group = "txn-in", "txn-out", "txn-copier"
    await _topic(cluster, source, 1)
    await _topic(cluster, sink, 1)
    async with Producer(bootstrap_servers=cluster.bootstrap) as plain:
        for i in range(6):
            await plain.send(source, b"in-%d" % i, partition=0)
    source_tp = TopicPartition(source, 0)

    async def copy(count: int, *, commit: bool) -> None:
        async with (
            Consumer(
                bootstrap_servers=cluster.bootstrap,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
            ) as consumer,
            _producer(cluster, "copier") as producer,
        ):
            consumer.assign([source_tp])
            got: list[bytes] = []
            async with asyncio.timeout(20):
                while len(got) < count:
                    batch = await consumer.getmany(
                        source_tp, timeout_ms=200, max_records=count - len(got)
                    )
                    got += [r.value for r in batch.get(source_tp, [])]
            producer.begin_transaction()
            for value in got:
                await producer.send(sink, value.replace(b"in", b"out"), partition=0)
            position = await consumer.position(source_tp)
            await producer.send_offsets_to_transaction(  # with a note of ours beside it
                {source_tp: OffsetAndMetadata(position, f"copied {position}")}, group
            )
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()

    await copy(3, commit=True)
    await copy(3, commit=False)  # a crash's worth: neither the copies nor the offsets count
    async with Consumer(bootstrap_servers=cluster.bootstrap, group_id=group) as reader:
        assert await reader.committed(source_tp) == 3
        (kept,) = (await reader.committed_offsets([source_tp])).values()
        assert kept is not None and kept.metadata == "copied 3"  # the aborted one's is not
    await copy(3, commit=True)  # resumes at 3: every record copied exactly once
    assert await _committed_values(cluster, sink, 1) == sorted(b"out-%d" % i for i in range(6))


async def test_transactions_go_on_after_the_coordinator_is_killed(cluster: Cluster) -> None:
    topic = "txn-failover"
    await _topic(cluster, topic)
    async with _producer(cluster, "survivor") as producer:
        async with producer.transaction():
            await producer.send(topic, b"before", partition=0)
        txn = producer._txn
        assert txn is not None
        coordinator = await txn._line.coordinator()
        cluster.brokers[coordinator].kill()  # kill -9
        try:
            async with producer.transaction():  # a new coordinator loads its state
                await producer.send(topic, b"after", partition=1)
                await producer.send(topic, b"after-2", partition=0)
        finally:
            cluster.start_broker(coordinator)
    assert await _committed_values(cluster, topic) == [b"after", b"after-2", b"before"]


async def test_a_leader_killed_mid_transaction_loses_and_duplicates_nothing(
    cluster: Cluster,
) -> None:
    topic = "txn-leader-kill"
    await _topic(cluster, topic, 1)
    tp = TopicPartition(topic, 0)
    async with _producer(cluster, "through-kill") as producer:
        producer.begin_transaction()
        first = [await producer.send(topic, b"v-%03d" % i, partition=0) for i in range(200)]
        await asyncio.gather(*first)  # acknowledged by every in-sync replica
        leader = producer._cluster.leader_for(tp)
        assert leader is not None
        cluster.brokers[leader].kill()  # kill -9, the transaction open
        try:
            for i in range(200, 400):
                await producer.send(topic, b"v-%03d" % i, partition=0)
            await producer.commit_transaction()  # retried to the new leader
        finally:
            cluster.start_broker(leader)
    assert await _committed_values(cluster, topic, 1) == [b"v-%03d" % i for i in range(400)]


async def test_a_transaction_whose_record_failed_sends_nothing_more_and_aborts_clean(
    cluster: Cluster,
) -> None:
    topic = "txn-broken"
    await _topic(cluster, topic, 1)
    tp = TopicPartition(topic, 0)
    async with _producer(cluster, "broken") as producer:
        producer.begin_transaction()
        await producer.send_and_wait(topic, b"a", partition=0)
        epoch = producer._txn.producer_epoch if producer._txn else -1
        queued = await producer.send(topic, b"b", partition=0, timestamp_ms=1)
        # what a batch that failed after being sent leaves (its sequence is in doubt)
        producer._accumulator.sequence_hole = True
        producer._accumulator.on_failure(UnknownProducerIdError("gone"))  # type: ignore[misc]
        with pytest.raises(TransactionAbortedError):
            await queued  # never sent: it would open a transaction no marker ends
        with pytest.raises(TransactionStateError, match="abort_transaction"):
            await producer.commit_transaction()
        await producer.abort_transaction()
        assert producer._txn is not None and producer._txn.producer_epoch == epoch + 1
        async with producer.transaction():  # under the new epoch, from sequence 0
            await producer.send(topic, b"c", partition=0)
    assert await _stable(cluster, tp)
    assert await _committed_values(cluster, topic, 1) == [b"c"]


async def test_stop_aborts_an_open_transaction_and_calls_after_it_fail_at_once(
    cluster: Cluster,
) -> None:
    topic = "txn-stop"
    await _topic(cluster, topic, 1)
    tp = TopicPartition(topic, 0)
    producer = _producer(cluster, "stopper", max_block_ms=60_000)
    await producer.start()
    producer.begin_transaction()
    await producer.send_and_wait(topic, b"unfinished", partition=0)
    await producer.stop()  # Kafka's close: the open transaction is aborted
    assert await _stable(cluster, tp)
    async with asyncio.timeout(5):
        with pytest.raises(ClientClosedError):
            await producer.commit_transaction()
    assert await _committed_values(cluster, topic, 1) == []


# --- operators: kafka-transactions ---------------------------------------------------


def _command(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "--bootstrap-server", cluster.bootstrap, "transactions", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_operators_list_describe_and_abort_a_hanging_transaction(
    raw_cluster: Cluster,
) -> None:
    """The leaders' check (KIP-890) keeps a producer from leaving a transaction open; one
    can still hang with the check off, or from a bug: the operators' tools end it."""
    cluster = raw_cluster
    topic = "txn-hanging"
    await _topic(cluster, topic, 1)
    tp = TopicPartition(topic, 0)
    raw = await _raw(cluster.bootstrap)
    try:
        # a transaction no coordinator knows (its producer wrote, then vanished): it holds
        # the partition's last stable offset for good
        await raw.refresh_new(topic)
        hanging = encode_batch(
            [(None, b"hanging", None, None)],
            producer_id=777_777,
            producer_epoch=3,
            base_sequence=0,
            is_transactional=True,
        )
        request = ProduceRequest(
            transactional_id="vanished",
            acks=-1,
            timeout_ms=10_000,
            topics=[
                ProduceTopic(name=topic, partitions=[ProducePartition(index=0, records=hanging)])
            ],
        )
        await _to_leader(raw, ApiKey.PRODUCE, request, lambda r: r.topics[0].partitions[0], tp)
    finally:
        await raw.close()
    async with _producer(cluster, "legit") as producer:
        producer.begin_transaction()
        await producer.send_and_wait(topic, b"legit", partition=0)
        # a lookup by time finds only what a consumer of its isolation level can read
        async with Consumer(
            bootstrap_servers=cluster.bootstrap, isolation_level="read_committed"
        ) as committed_reader:
            assert (await committed_reader.offsets_for_times({tp: 0}))[tp] is None
        async with Consumer(bootstrap_servers=cluster.bootstrap) as reader:
            found = (await reader.offsets_for_times({tp: 0}))[tp]
            assert found is not None and found.offset == 0
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            listed = {t.transactional_id: t for t in await admin.list_transactions(["Ongoing"])}
            assert listed["legit"].state == "Ongoing"
            (described,) = await admin.describe_transactions(["legit"])
            assert described.state == "Ongoing" and described.partitions == (tp,)
            producers = {p.producer_id: p for p in (await admin.describe_producers([tp]))[tp]}
            assert producers[777_777].current_transaction_start_offset == 0
            assert producers[described.producer_id].current_transaction_start_offset == 1
            with pytest.raises(ValueError, match="unknown transaction states"):
                await admin.list_transactions(["Running"])
        found = _command(
            cluster, "find-hanging", "--topic", topic, "--max-transaction-timeout", "0"
        )
        assert found.returncode == 0, found
        rows = [line.split("\t") for line in found.stdout.splitlines()[1:]]
        assert [r[2] for r in rows] == ["777777"]  # the legit one is Ongoing at its coordinator
        described_cli = _command(cluster, "describe", "--transactional-id", "legit")
        assert "Ongoing" in described_cli.stdout and f"{topic}-0" in described_cli.stdout
        aborted = _command(
            cluster, "abort", "--topic", topic, "--partition", "0", "--start-offset", "0"
        )
        assert aborted.returncode == 0 and "producer 777777" in aborted.stdout, aborted
        await producer.commit_transaction()
    assert await _stable(cluster, tp)  # nothing holds it any more
    assert await _committed_values(cluster, topic, 1) == [b"legit"]
    listed_cli = _command(cluster, "list")
    assert "legit" in listed_cli.stdout and "CompleteCommit" in listed_cli.stdout, listed_cli
    missing = _command(cluster, "describe", "--transactional-id", "nobody")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing


async def test_a_zombie_members_offsets_are_refused_with_its_old_generation(
    cluster: Cluster,
) -> None:
    """KIP-447: offsets sent with a member's group metadata are refused once the group
    rebalanced without it, so a zombie cannot commit a transaction that consumed."""
    topic, group = "txn-zombie", "zombies"
    await _topic(cluster, topic, 2)
    settings: dict[str, Any] = {
        "bootstrap_servers": cluster.bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    first, second = Consumer(topic, **settings), Consumer(topic, **settings)
    await first.start()
    try:
        async with asyncio.timeout(30):
            while not first.assignment():
                await first.getmany(timeout_ms=200)
        stale = first.group_metadata()
        assert stale.generation_id >= 0 and stale.member_id
        await second.start()
        async with asyncio.timeout(30):  # both poll: the group rebalances with two
            while first.group_metadata().generation_id == stale.generation_id:
                await asyncio.gather(first.getmany(timeout_ms=200), second.getmany(timeout_ms=200))
        tp = TopicPartition(topic, 0)
        async with _producer(cluster, "zombie") as producer:
            producer.begin_transaction()
            await producer.send(topic, b"out", partition=1)
            with pytest.raises(IllegalGenerationError):
                await producer.send_offsets_to_transaction({tp: 1}, stale)
            await producer.abort_transaction()
            async with producer.transaction():  # the current generation is accepted
                await producer.send_offsets_to_transaction({tp: 1}, first.group_metadata())
        assert await first.committed(tp) == 1  # stable: waits for the marker (KIP-447)
    finally:
        await asyncio.gather(first.stop(), second.stop())


async def test_a_produce_read_after_its_transaction_ended_is_refused(cluster: Cluster) -> None:
    """KIP-890: the partition leader checks a transaction's first batch there with the
    coordinator. A batch of a transaction that was already aborted (a produce held up in
    the network, or retried late) is refused with INVALID_TXN_STATE instead of opening a
    transaction no marker would end; the producer's next transaction goes on."""
    topic = "txn-late"
    await _topic(cluster, topic, 1)
    tp = TopicPartition(topic, 0)
    async with _producer(cluster, "late") as producer:
        producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted", partition=0)
        await producer.abort_transaction()
        accumulator = producer._accumulator
        pid, epoch = accumulator.producer_id, accumulator.producer_epoch
        late = encode_batch(
            [(None, b"late", None, None)],
            producer_id=pid,
            producer_epoch=epoch,
            base_sequence=1,  # the next in line: only the transaction check stops it
            is_transactional=True,
        )
        raw = await _raw(cluster.bootstrap)
        try:
            await raw.refresh_new(topic)
            leader = raw.leader_for(tp)
            assert leader is not None
            request = ProduceRequest(
                transactional_id="late",
                acks=-1,
                timeout_ms=10_000,
                topics=[
                    ProduceTopic(name=topic, partitions=[ProducePartition(index=0, records=late)])
                ],
            )
            answer: ProduceResponse = await raw.send(leader, ApiKey.PRODUCE, request)
            (result,) = answer.topics[0].partitions
            assert result.error_code == InvalidTxnStateError.code, result
            assert "not in an ongoing transaction" in (result.error_message or "")
        finally:
            await raw.close()
        assert await _stable(cluster, tp)  # nothing was opened
        async with producer.transaction():  # the producer goes on
            await producer.send(topic, b"committed", partition=0)
    assert await _committed_values(cluster, topic, 1) == [b"committed"]
    found = _command(cluster, "find-hanging", "--topic", topic, "--max-transaction-timeout", "0")
    assert found.returncode == 0 and len(found.stdout.splitlines()) <= 1, found


async def test_a_pipelining_transaction_that_adds_a_partition_commits(cluster: Cluster) -> None:
    """Found in review of KIP-890: a producer with five requests in flight to one leader
    adds a second partition there mid-transaction; the request carrying that partition's
    first batch waits for the check, and the next one must not overtake its batch of the
    first partition (it did: OUT_OF_ORDER_SEQUENCE, and the producer stalled)."""
    topic, txn_id = "txn-pipeline", "pipeline"
    await _topic(cluster, topic, 6)
    raw = ClientCluster(cluster.bootstrap, client_id="test-raw")
    await raw.start()
    try:

        async def leaders() -> list[int | None]:
            await raw.refresh_new(topic)
            return [raw.leader_for(TopicPartition(topic, p)) for p in range(6)]

        # (the broker asked may hear of the new leaders a moment after CreateTopics
        # answered: CI failed twice on a None here)
        known = await _until(leaders, lambda found: None not in found)
        by_leader: dict[int, list[int]] = {}
        for p, leader in enumerate(known):
            by_leader.setdefault(leader, []).append(p)
    finally:
        await raw.close()
    a, b = next(ps for ps in by_leader.values() if len(ps) >= 2)[:2]
    settings: dict[str, Any] = {"batch_size": 256, "linger_ms": 0}
    async with _producer(cluster, txn_id, **settings) as producer:
        for round_ in range(4):
            producer.begin_transaction()
            for i in range(400):
                await producer.send(topic, b"%d-%d" % (round_, i), partition=a)
                if i == 100:
                    await producer.send(topic, b"b-%d" % round_, partition=b)
            async with asyncio.timeout(40):
                await producer.commit_transaction()
    values = await _committed_values(cluster, topic, 6)
    assert len(values) == 4 * 401 and len(set(values)) == len(values)


async def test_a_txn_offset_commit_read_after_its_transaction_ended_is_refused(
    cluster: Cluster,
) -> None:
    """KIP-890 for the group's offsets: a TxnOffsetCommit read after its transaction was
    aborted would open one in __consumer_offsets that no marker ends, its offsets held and
    require_stable fetches (read_committed consumers) refused for good."""
    topic, group = "txn-late-offsets", "late-offsets"
    await _topic(cluster, topic, 1)
    tp = TopicPartition(topic, 0)
    async with _producer(cluster, "late-offsets") as producer:
        producer.begin_transaction()
        await producer.send_and_wait(topic, b"x", partition=0)
        await producer.send_offsets_to_transaction({tp: 1}, group)
        await producer.abort_transaction()
        accumulator = producer._accumulator
        pid, epoch = accumulator.producer_id, accumulator.producer_epoch
        # the abort's markers are written after EndTxn answers: until the group's partition
        # has its marker, a late commit joins the transaction still open there and is
        # aborted with it (as in Kafka). Late means after the markers (CI failed once,
        # busy, when the commit overtook them)
        async with Admin(bootstrap_servers=cluster.bootstrap) as admin:

            async def state() -> str:
                (described,) = await admin.describe_transactions(["late-offsets"])
                return described.state

            await _until(state, lambda s: s == "CompleteAbort")
        raw = ClientCluster(cluster.bootstrap, client_id="test-raw")
        await raw.start()
        try:
            offsets = GroupOffsets(raw, group, request_timeout_ms=10_000, retry_backoff_ms=100)
            node = await offsets.coordinator()
            late = TxnOffsetCommitRequest(
                transactional_id="late-offsets",
                group_id=group,
                producer_id=pid,
                producer_epoch=epoch,
                topics=[
                    OffsetCommitRequestTopic(
                        name=topic,
                        partitions=[
                            OffsetCommitRequestPartition(partition_index=0, committed_offset=1)
                        ],
                    )
                ],
            )
            answer: TxnOffsetCommitResponse = await raw.send(node, ApiKey.TXN_OFFSET_COMMIT, late)
            (result,) = answer.topics[0].partitions
            assert result.error_code == InvalidTxnStateError.code, result
        finally:
            await raw.close()
    async with Consumer(
        topic,
        bootstrap_servers=cluster.bootstrap,
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
    ) as consumer:
        async with asyncio.timeout(20):  # a stable answer: nothing of the group is held
            assert await consumer.committed(tp) is None
