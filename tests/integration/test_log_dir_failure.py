"""A leader's disk fills up under load (KIP-112), on real brokers: broker 1 keeps its logs
on a tiny tmpfs. Its log of the partition goes offline with ENOSPC; broker 1 tells the
controller (a LogDirEventNotification), answers KAFKA_STORAGE_ERROR for that replica,
and the controller hands the leadership to an in-sync replica and takes broker 1 out of
the ISR. The producer goes on there: every record is acknowledged, and a consumer reads
each once, in order, at the offset it was acknowledged at. Broker 1 keeps serving.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import Consumer, Producer, TopicPartition
from protocol.apis import (
    ApiKey,
    CreatableReplicaAssignment,
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
)
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_topics import _metadata, _ready_cluster, _request

pytestmark = pytest.mark.timeout(180)

TOPIC = "filling"
TP = TopicPartition(TOPIC, 0)
VALUE = b"x" * 1_000


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test (and its brokers) are done."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _partition(meta: Any) -> Any:
    partitions = meta.topics[0].partitions if meta.topics else []
    return partitions[0] if partitions else None


async def test_a_full_disk_on_the_leader_hands_its_partition_to_a_replica(
    tiny_disk: Path, make_cluster: Callable[..., Cluster]
) -> None:
    cluster = make_cluster(0)
    small = {"log.index.size.max.bytes": "8192", "log.segment.bytes": "262144"}
    cluster.start_broker(1, {**small, "log.dirs": str(tiny_disk)})
    for broker_id in (2, 3):
        cluster.start_broker(broker_id, small)
    ports = await _ready_cluster(cluster)
    request = CreateTopicsRequest(
        topics=[
            CreatableTopic(
                name=TOPIC,
                assignments=[CreatableReplicaAssignment(partition_index=0, broker_ids=[1, 2, 3])],
                configs=[CreatableTopicConfig(name="min.insync.replicas", value="2")],
            )
        ]
    )
    assert (await _request(ports[2], ApiKey.CREATE_TOPICS, request)).topics[0].error_code == 0
    await _until(
        lambda: _metadata(ports[2], [TOPIC]),
        lambda m: (p := _partition(m)) is not None and p.leader_id == 1 and len(p.isr_nodes) == 3,
    )

    count = 2_000  # 2 MB: twice what broker 1's disk holds
    async with Producer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=5) as producer:
        futures = [
            await producer.send(TOPIC, VALUE + b"%06d" % i, partition=0) for i in range(count)
        ]
        metas = [await f for f in futures]  # every one acknowledged, none lost
    offsets = [m.offset for m in metas]
    assert offsets == sorted(offsets) and len(set(offsets)) == count

    moved = await _until(
        lambda: _metadata(ports[2], [TOPIC]),
        lambda m: (p := _partition(m)) is not None and p.leader_id in (2, 3),
    )
    state = _partition(moved)
    assert 1 not in state.isr_nodes
    assert 1 in state.offline_replicas
    log = cluster.brokers[1].log_path.read_text()
    assert "no space left on the device" in log and "broker.log_offline" in log

    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([TP])
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 60
        while len(got) < count:
            assert time.monotonic() < deadline, f"{len(got)} of {count} read back"
            batch = await c.getmany(TP, timeout_ms=1_000)
            got += [(r.offset, r.value) for r in batch.get(TP, [])]
    assert got == [(offsets[i], VALUE + b"%06d" % i) for i in range(count)]
    # broker 1 serves on: its metadata, and the partitions it has no trouble with
    assert _partition(await _metadata(ports[1], [TOPIC])).leader_id in (2, 3)
