"""Share groups (KIP-932, Kafka's queues) with Kafka's own share consumer (librdkafka's
ShareConsumer) on real brokers: members of one group read a topic's records together,
each record handed to one member at a time, acknowledged one by one; released records
come again with their delivery count, rejected ones never, and what a member held when it
went is delivered to another."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import AcknowledgeType, Message, ShareConsumer
from confluent_kafka import Producer as RdProducer
from confluent_kafka.admin import AdminClient as RdAdmin
from confluent_kafka.admin import ConfigResource as RdConfigResource
from confluent_kafka.admin import ResourceType as RdResourceType
from kafka.protocol.admin import IncrementalAlterConfigsRequest as KpIncrementalAlterConfigs
from kafka.protocol.admin import (
    IncrementalAlterConfigsResponse as KpIncrementalAlterConfigsResponse,
)
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest as KpFindCoordinator
from kafka.protocol.metadata.find_coordinator import (
    FindCoordinatorResponse as KpFindCoordinatorResponse,
)

from client import Admin, AlterConfigOp, ConfigResource, OffsetSpec, TopicPartition
from protocol.apis import ConfigSource
from protocol.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    GroupIdNotFoundError,
    InvalidConfigError,
    InvalidRecordStateError,
    InvalidRequestError,
    InvalidShareSessionEpochError,
    NotCoordinatorError,
    ShareSessionNotFoundError,
    UnknownMemberIdError,
)
from protocol.topic_id import parse_topic_id
from tests import kafka_messages as km
from tests.integration.conftest import Cluster, until
from tests.integration.test_cli import COMMAND
from tests.integration.test_kafka_protocol import KAFKA_LISTENER, _topic, kafka_bootstrap

pytestmark = pytest.mark.timeout(180)

SHARE = {
    **KAFKA_LISTENER,
    "group.share.heartbeat.interval.ms": "300",
    "group.share.record.lock.duration.ms": "2000",
}


def _headwater(cluster: Cluster, *args: str) -> str:
    """What the ``headwater`` command prints, run against ``cluster``."""
    return subprocess.run(
        [*COMMAND, "--bootstrap-server", cluster.bootstrap, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def _consumer(bootstrap: str, group: str, topic: str, *, explicit: bool = False) -> ShareConsumer:
    consumer = ShareConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "share.acknowledgement.mode": "explicit" if explicit else "implicit",
            "fetch.wait.max.ms": 200,
        }
    )
    consumer.subscribe([topic])
    return consumer


def _produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    producer = RdProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % partitions)
    assert producer.flush(30) == 0


def _started(
    bootstrap: str,
    topic: str,
    partitions: int,
    consumers: list[ShareConsumer],
    *,
    explicit: bool = False,
) -> None:
    """The group begins at each partition's end (share.auto.offset.reset=latest): probe
    records are produced until the consumers have read one from every partition, so the
    group has begun on all of them; then the probes still coming are read and accepted."""
    seen: set[int] = set()

    def take(c: ShareConsumer, timeout: float) -> None:
        for m in c.poll(timeout):
            if m.error() is None:
                seen.add(m.partition())
                if explicit:
                    c.acknowledge(m, AcknowledgeType.ACCEPT)

    deadline = time.monotonic() + 60
    while len(seen) < partitions and time.monotonic() < deadline:
        _produce(bootstrap, topic, [b"probe"] * partitions, partitions)
        for c in consumers:
            take(c, 0.3)
    assert len(seen) == partitions, f"the share group began on partitions {sorted(seen)} only"
    settle = time.monotonic() + 1
    while time.monotonic() < settle:
        for c in consumers:
            take(c, 0.1)
    if explicit:
        for c in consumers:
            assert all(v is None for v in c.commit_sync(10).values())


def _drain(
    consumers: list[ShareConsumer], want: int, seconds: float = 60
) -> list[tuple[int, int, int, bytes]]:
    """(consumer, partition, offset, value) of every non-probe record read, polling each in
    turn until ``want`` are read (implicit mode: each poll accepts the previous poll's)."""
    got: list[tuple[int, int, int, bytes]] = []
    deadline = time.monotonic() + seconds
    while len(got) < want and time.monotonic() < deadline:
        for n, c in enumerate(consumers):
            for m in c.poll(0.2):
                if m.error() is None and m.value() != b"probe":
                    got.append((n, m.partition(), m.offset(), m.value()))
    return got


async def test_members_of_a_share_group_read_every_record_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Three members of one group, two partitions (more members than partitions: some
    read the same partition at once): every record is delivered once, none twice."""
    cluster = make_cluster(1, SHARE)
    await _topic(cluster, "jobs", 2)
    bootstrap = kafka_bootstrap(cluster)

    def command(*args: str) -> str:
        return _headwater(cluster, "share-groups", *args)

    def run() -> tuple[list[tuple[int, int, int, bytes]], dict[str, str]]:
        consumers = [_consumer(bootstrap, "workers", "jobs") for _ in range(3)]
        try:
            _started(bootstrap, "jobs", 2, consumers)
            values = [f"job-{i}".encode() for i in range(600)]
            _produce(bootstrap, "jobs", values, 2)
            got = _drain(consumers, len(values))
            for _ in range(2):  # (implicit mode: a poll accepts the one before)
                for c in consumers:
                    c.poll(0.3)
            shown = {
                view: command("describe", "workers", *flags)
                for view, flags in (
                    ("offsets", ()),
                    ("members", ("--members",)),
                    ("state", ("--state",)),
                )
            }
            shown["list"] = command("list")
            return got, shown
        finally:
            for c in consumers:
                c.close()

    got, shown = await asyncio.to_thread(run)
    values = sorted(v for _, _, _, v in got)
    assert values == sorted(f"job-{i}".encode() for i in range(600))
    assert len({(p, o) for _, p, o, _ in got}) == 600
    # Kafka's kafka-share-groups views: where the group is (every record done: no lag),
    # its three members (each partition read by one or two), its state
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        ends = await admin.list_offsets(
            {TopicPartition("jobs", p): OffsetSpec.latest() for p in (0, 1)}
        )
    rows = [line.split() for line in shown["offsets"].splitlines()[1:]]
    assert rows == [
        ["workers", "jobs", str(p), str(ends[TopicPartition("jobs", p)].offset), "0"]
        for p in (0, 1)
    ]
    members = [line.split() for line in shown["members"].splitlines()[1:]]
    assert len(members) == 3 and all(m[4] == "1" for m in members)
    assert sorted(m[5] for m in members) in (
        ["jobs:0", "jobs:0", "jobs:1"],
        ["jobs:0", "jobs:1", "jobs:1"],
    )
    assert shown["state"].splitlines()[1].split()[-4:-3] == ["Stable"]
    assert ["workers", "Stable"] in [line.split() for line in shown["list"].splitlines()]


def _poll(consumer: ShareConsumer, want: int, seconds: float = 30) -> list[Message]:
    """Polls until ``want`` records (probes aside) came, or the time is up."""
    got: list[Message] = []
    deadline = time.monotonic() + seconds
    while len(got) < want and time.monotonic() < deadline:
        got += [m for m in consumer.poll(0.2) if m.error() is None and m.value() != b"probe"]
    return got


async def test_released_records_come_again_rejected_ones_never(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Explicit acknowledgement: of ten records, three released come again with a
    delivery count of 2, two rejected never come again, the accepted ones neither; with
    ``group.share.delivery.count.limit=2``, released again they are archived."""
    cluster = make_cluster(1, {**SHARE, "group.share.delivery.count.limit": "2"})
    await _topic(cluster, "tasks", 1)
    bootstrap = kafka_bootstrap(cluster)

    def run() -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[Message]]:
        c = _consumer(bootstrap, "explicit", "tasks", explicit=True)
        try:
            _started(bootstrap, "tasks", 1, [c], explicit=True)
            _produce(bootstrap, "tasks", [f"t{i}".encode() for i in range(10)], 1)
            first = _poll(c, 10)
            kinds = [AcknowledgeType.RELEASE] * 3 + [AcknowledgeType.REJECT] * 2
            kinds += [AcknowledgeType.ACCEPT] * 5
            for m, kind in zip(first, kinds, strict=True):
                c.acknowledge(m, kind)
            assert all(v is None for v in c.commit_sync(10).values())
            again = _poll(c, 3)
            for m in again:
                c.acknowledge(m, AcknowledgeType.RELEASE)  # their second delivery: archived
            c.commit_sync(10)
            never = _poll(c, 1, seconds=3)
            return (
                [(m.offset(), m.delivery_count()) for m in first],
                [(m.offset(), m.delivery_count()) for m in again],
                never,
            )
        finally:
            c.close()

    first, again, never = await asyncio.to_thread(run)
    assert [count for _, count in first] == [1] * 10
    released = [offset for offset, _ in first[:3]]
    assert again == [(offset, 2) for offset in released]
    assert never == []


async def test_what_a_member_held_goes_to_another_when_it_closes_or_its_lock_ends(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A member that closes holding records gives them back at once (that delivery not
    counted); one that stops acknowledging loses them when its acquisition lock ends
    (``group.share.record.lock.duration.ms``, 2 s here), and they come to another member
    with a delivery count of 2."""
    cluster = make_cluster(1, SHARE)
    await _topic(cluster, "handover", 1)
    bootstrap = kafka_bootstrap(cluster)

    def run() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        holder = _consumer(bootstrap, "g", "handover", explicit=True)
        _started(bootstrap, "handover", 1, [holder], explicit=True)
        _produce(bootstrap, "handover", [f"h{i}".encode() for i in range(5)], 1)
        held = _poll(holder, 5)
        assert [m.delivery_count() for m in held] == [1] * 5
        # (joined only now: a member that fetches ahead holds what it fetched, unread)
        other = _consumer(bootstrap, "g", "handover", explicit=True)
        try:
            holder.close()  # unacknowledged: released by the close
            # (a lock that ended instead would have counted: the next delivery a 2nd)
            after_close = _poll(other, 5)  # held, never acknowledged, other kept open
            third = _consumer(bootstrap, "g", "handover", explicit=True)
            try:
                after_lock = _poll(third, 5, seconds=30)
            finally:
                third.close()
            return (
                [(m.offset(), m.delivery_count()) for m in after_close],
                [(m.offset(), m.delivery_count()) for m in after_lock],
            )
        finally:
            other.close()

    after_close, after_lock = await asyncio.to_thread(run)
    offsets = [offset for offset, _ in after_close]
    assert len(offsets) == 5
    assert [count for _, count in after_close] == [1] * 5  # the close did not count
    assert after_lock == [(offset, 2) for offset in offsets]  # other's lock ended


_NO_COORDINATOR_YET = (
    CoordinatorLoadInProgressError.code,
    CoordinatorNotAvailableError.code,
    NotCoordinatorError.code,
)


class _Connection:
    """One connection to a Kafka listener, speaking kafka-python's encoder of Kafka's own
    specs (tests/kafka_messages): a share session lives as long as its connection."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._correlation = 0

    def ask(self, request: Any, answer_class: Any, version: int = 1) -> Any:
        self._correlation += 1
        request.with_header(correlation_id=self._correlation, client_id="raw")
        payload = bytes(request.encode(version=version, header=True))
        self._sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", self._recv(4))
        return answer_class.decode(self._recv(length), version=version, header=True)

    def _recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        self._sock.close()


def _share_fetch(epoch: int, topics: list[Any], *, member: str = "m1", group: str = "raw") -> Any:
    return km.ShareFetchRequest(
        version=1,
        group_id=group,
        member_id=member,
        share_session_epoch=epoch,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        max_records=100,
        batch_size=100,
        topics=topics,
        forgotten_topics_data=[],
    )


async def test_bad_share_requests_get_kafkas_errors_and_the_broker_serves_on(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Session epochs out of turn, acknowledgements where none may be, a member without an
    id, a consumer group's id taken for a share group: each answered with Kafka's error,
    on a connection that stays open; then a share consumer reads as before."""
    cluster = make_cluster(1, SHARE)
    await _topic(cluster, "raw", 1)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        described = (await admin.describe_topics(["raw"]))[0].topic_id
    assert described is not None
    topic_id = uuid.UUID(bytes=parse_topic_id(described))
    bootstrap = kafka_bootstrap(cluster)
    (broker,) = cluster.brokers.values()
    port = broker.ports["KAFKA"]
    Topic = km.ShareFetchRequest.FetchTopic
    Partition = Topic.FetchPartition
    Ack = Partition.AcknowledgementBatch

    def raw() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        conn = _Connection(port)
        try:
            fetch = km.ShareFetchResponse
            seen["no session"] = conn.ask(_share_fetch(3, []), fetch).error_code
            acked = [
                Topic(
                    topic_id=topic_id,
                    partitions=[
                        Partition(
                            partition_index=0,
                            acknowledgement_batches=[
                                Ack(first_offset=0, last_offset=0, acknowledge_types=[1])
                            ],
                        )
                    ],
                )
            ]
            seen["acks on open"] = conn.ask(_share_fetch(0, acked), fetch).error_code
            seen["no member"] = conn.ask(_share_fetch(0, [], member=""), fetch).error_code
            ack = km.ShareAcknowledgeRequest(
                version=1, group_id="raw", member_id="m1", share_session_epoch=0, topics=[]
            )
            seen["ack opens"] = conn.ask(ack, km.ShareAcknowledgeResponse).error_code
            topics = [Topic(topic_id=topic_id, partitions=[Partition(partition_index=0)])]
            seen["open"] = conn.ask(_share_fetch(0, topics), fetch).error_code
            seen["out of turn"] = conn.ask(_share_fetch(5, []), fetch).error_code
            seen["in turn"] = conn.ask(_share_fetch(1, []), fetch).error_code
            # an acknowledgement of nothing handed out: that partition's error only
            answer = conn.ask(_share_fetch(2, acked), fetch)
            codes = [p.acknowledge_error_code for t in answer.responses for p in t.partitions]
            # INVALID_REQUEST past what the group's state has handed out, or (its state
            # still being read from the group's coordinator) INVALID_RECORD_STATE
            refused = codes in ([InvalidRequestError.code], [InvalidRecordStateError.code])
            seen["ack of nothing"] = (answer.error_code, refused)
            heartbeat = km.ShareGroupHeartbeatRequest
            beat = km.ShareGroupHeartbeatResponse
            # as a client does: FindCoordinator first (it makes __consumer_offsets)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = conn.ask(
                    KpFindCoordinator(version=3, key="raw", key_type=0),
                    KpFindCoordinatorResponse,
                    version=3,
                )
                if found.error_code not in _NO_COORDINATOR_YET:
                    break
                time.sleep(0.2)
            seen["join without topics"] = conn.ask(
                heartbeat(
                    version=1,
                    group_id="raw",
                    member_id="m1",
                    member_epoch=0,
                    rack_id=None,
                    subscribed_topic_names=None,
                ),
                beat,
            ).error_code
            joined = conn.ask(
                heartbeat(
                    version=1,
                    group_id="raw",
                    member_id="m1",
                    member_epoch=0,
                    rack_id=None,
                    subscribed_topic_names=["raw"],
                ),
                beat,
            )
            seen["join"] = (joined.error_code, joined.member_epoch > 0)
            seen["unknown member"] = conn.ask(
                heartbeat(
                    version=1,
                    group_id="raw",
                    member_id="m2",
                    member_epoch=3,
                    rack_id=None,
                    subscribed_topic_names=None,
                ),
                beat,
            ).error_code
            described = conn.ask(
                km.ShareGroupDescribeRequest(
                    version=1, group_ids=["raw", "nobody"], include_authorized_operations=False
                ),
                km.ShareGroupDescribeResponse,
            )
            seen["described"] = [
                (g.group_id, g.error_code, g.group_state, [m.member_id for m in g.members])
                for g in described.groups
            ]
        finally:
            conn.close()
        return seen

    seen = await asyncio.to_thread(raw)
    assert seen == {
        "no session": ShareSessionNotFoundError.code,
        "acks on open": InvalidRequestError.code,
        "no member": InvalidRequestError.code,
        "ack opens": InvalidShareSessionEpochError.code,
        "open": 0,
        "out of turn": InvalidShareSessionEpochError.code,
        "in turn": 0,
        "ack of nothing": (0, True),
        "join without topics": InvalidRequestError.code,
        "join": (0, True),
        "unknown member": UnknownMemberIdError.code,
        "described": [
            ("raw", 0, "Stable", ["m1"]),
            ("nobody", GroupIdNotFoundError.code, "Dead", []),
        ],
    }
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        listed = {g.group_id: (g.protocol_type, g.state) for g in await admin.list_groups()}
    assert listed["raw"] == ("share", "Stable")

    def still_serving() -> list[bytes]:
        c = _consumer(bootstrap, "after", "raw")
        try:
            _started(bootstrap, "raw", 1, [c])
            _produce(bootstrap, "raw", [b"after-1", b"after-2"], 1)
            return sorted(v for _, _, _, v in _drain([c], 2))
        finally:
            c.close()

    assert await asyncio.to_thread(still_serving) == [b"after-1", b"after-2"]


async def test_after_the_leader_is_killed_what_was_accepted_never_comes_again(
    make_cluster: Callable[..., Cluster],
) -> None:
    """kill -9 of the partition's leader while a member holds records it has not
    acknowledged: the group's state was stored at its coordinator as the member accepted
    records, so on the new leader the accepted records never come again and the ones held
    come to the next member (at least once, as Kafka's), and records produced after the
    kill follow."""
    cluster = make_cluster(3, SHARE)
    await _topic(cluster, "moving", 1, replicas=3)
    bootstrap = kafka_bootstrap(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        (described,) = await admin.describe_topics(["moving"])
    leader = described.partitions[0].leader

    def before() -> tuple[ShareConsumer, list[int], list[int]]:
        c = _consumer(bootstrap, "movers", "moving", explicit=True)
        _started(bootstrap, "moving", 1, [c], explicit=True)
        _produce(bootstrap, "moving", [f"a{i}".encode() for i in range(100)], 1)
        got = _poll(c, 100)
        assert len(got) == 100
        accepted, held = got[:60], got[60:]
        for m in accepted:
            c.acknowledge(m, AcknowledgeType.ACCEPT)
        assert all(v is None for v in c.commit_sync(10).values())  # stored, then answered
        return c, [m.offset() for m in accepted], [m.offset() for m in held]

    holder, accepted, held = await asyncio.to_thread(before)
    pid = cluster.brokers[leader].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the holder never acknowledges the other 40
    survivors = ",".join(
        f"127.0.0.1:{b.ports['KAFKA']}" for i, b in cluster.brokers.items() if i != leader
    )
    closing = asyncio.ensure_future(asyncio.to_thread(holder.close))

    def after() -> list[Message]:
        c = _consumer(survivors, "movers", "moving", explicit=True)
        try:
            got: list[Message] = []
            deadline = time.monotonic() + 60
            produced = False
            while time.monotonic() < deadline and len(got) < 40 + 20:
                for m in c.poll(0.3):
                    if m.error() is None:
                        got.append(m)
                        c.acknowledge(m, AcknowledgeType.ACCEPT)
                if len(got) >= 40 and not produced:
                    _produce(survivors, "moving", [f"b{i}".encode() for i in range(20)], 1)
                    produced = True
                if got:
                    c.commit_sync(10)
            return got
        finally:
            c.close()

    got = await asyncio.to_thread(after)
    await closing
    offsets = [m.offset() for m in got]
    assert not set(offsets) & set(accepted)  # accepted before the kill: never again
    assert sorted(m.offset() for m in got if m.value().startswith(b"a")) == held
    assert sorted(m.value() for m in got if m.value().startswith(b"b")) == sorted(
        f"b{i}".encode() for i in range(20)
    )


async def test_group_configs_start_a_group_at_the_earliest_offset_and_set_its_lock(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Kafka's group configs (ConfigResource type GROUP): ``share.auto.offset.reset=earliest``
    starts a new share group at the log's start, so it reads what was produced before it
    existed; ``share.record.lock.duration.ms`` is the group's lock (as ShareFetch says);
    bad values and configs not offered are refused with why."""
    cluster = make_cluster(2, SHARE)
    await _topic(cluster, "backlog", 1)
    bootstrap = kafka_bootstrap(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        (described_topic,) = await admin.describe_topics(["backlog"])
    leader = cluster.brokers[described_topic.partitions[0].leader]
    other = next(b for b in cluster.brokers.values() if b is not leader)
    await asyncio.to_thread(
        _produce, bootstrap, "backlog", [f"old-{i}".encode() for i in range(30)], 1
    )
    group = ConfigResource("group", "late")
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.incremental_alter_configs(
            {
                group: [
                    AlterConfigOp("share.auto.offset.reset", "earliest"),
                    AlterConfigOp("share.record.lock.duration.ms", "7000"),
                ]
            }
        )
        described = await admin.describe_configs(group)
        refusals = []
        for op in (
            AlterConfigOp("share.auto.offset.reset", "yesterday"),
            AlterConfigOp("share.heartbeat.interval.ms", "60000"),  # not below the session's
            AlterConfigOp("consumer.session.timeout.ms", "10000"),
            AlterConfigOp("no.such.config", "1"),
        ):
            with pytest.raises(InvalidConfigError) as refused:
                await admin.incremental_alter_configs({group: [op]})
            refusals.append(refused.value.message)
    assert described["share.auto.offset.reset"].value == "earliest"
    assert described["share.auto.offset.reset"].source == "GROUP_CONFIG"
    assert described["share.session.timeout.ms"].value == "45000"
    assert described["share.session.timeout.ms"].source == "STATIC_BROKER_CONFIG"
    assert "latest or earliest" in refusals[0]
    assert "less than share.session.timeout.ms" in refusals[1]
    assert "not offered here yet" in refusals[2]
    assert "unknown group config" in refusals[3]

    def read() -> list[bytes]:
        c = _consumer(bootstrap, "late", "backlog")
        try:
            return sorted(v for _, _, _, v in _drain([c], 30))
        finally:
            c.close()

    assert await asyncio.to_thread(read) == sorted(f"old-{i}".encode() for i in range(30))

    def lock_said() -> int:
        conn = _Connection(leader.ports["KAFKA"])
        try:
            answer = conn.ask(_share_fetch(0, [], group="late"), km.ShareFetchResponse)
            return int(answer.acquisition_lock_timeout_ms)
        finally:
            conn.close()

    assert await asyncio.to_thread(lock_said) == 7000

    # changed while in use, through the broker that does not lead the partition (Kafka's
    # encoding): the leader, which read the group's configs, follows them (a watch)
    def alter_at_the_other(lock: str) -> int:
        conn = _Connection(other.ports["KAFKA"])
        try:
            request = KpIncrementalAlterConfigs[0](
                resources=[((32, "late", [("share.record.lock.duration.ms", 0, lock)]))],
                validate_only=False,
            )
            answer = conn.ask(request, KpIncrementalAlterConfigsResponse, version=0)
            return int(answer.responses[0].error_code)
        finally:
            conn.close()

    assert await asyncio.to_thread(alter_at_the_other, "9000") == 0
    await until(lambda: asyncio.to_thread(lock_said), lambda lock: lock == 9000)

    def rd_described() -> dict[str, tuple[str, int]]:
        """librdkafka's AdminClient reads them too (its GROUP resource is Kafka's 32)."""
        admin = RdAdmin({"bootstrap.servers": bootstrap})
        resource = RdConfigResource(RdResourceType.GROUP, "late")
        entries = admin.describe_configs([resource])[resource].result(30)
        return {name: (e.value, int(e.source)) for name, e in entries.items()}

    rd = await asyncio.to_thread(rd_described)
    assert rd["share.record.lock.duration.ms"] == ("9000", ConfigSource.GROUP_CONFIG.value)
    assert rd["share.auto.offset.reset"] == ("earliest", ConfigSource.GROUP_CONFIG.value)

    def command(*args: str) -> str:
        return _headwater(cluster, "groups", *args)

    said = await asyncio.to_thread(
        command, "alter", "late", "--config", "share.record.lock.duration.ms=9500"
    )
    assert "Altered group late: set share.record.lock.duration.ms=9500." in said
    await until(lambda: asyncio.to_thread(lock_said), lambda lock: lock == 9500)
    shown = await asyncio.to_thread(command, "configs", "late")
    assert re.search(r"share\.auto\.offset\.reset\s+earliest\s+GROUP_CONFIG", shown), shown
    assert re.search(r"share\.record\.lock\.duration\.ms\s+9500\s+GROUP_CONFIG", shown), shown
