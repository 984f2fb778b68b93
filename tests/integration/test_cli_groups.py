"""`headwater groups` as a user runs it, against real ZooKeeper and three real brokers:
list, describe (lag per partition and in total), reset-offsets in every mode (dry run,
--execute, clamping), refusals while a member is live, and delete."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from client import Admin, NewTopic, Producer, TopicPartition
from client.assignors import Assignment, Subscription, encode_assignment, encode_subscription
from client.cluster import Cluster as ClientCluster
from client.coordinator import GroupOffsets
from protocol.apis import (
    ApiKey,
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    LeaveGroupRequest,
    SyncGroupRequest,
    SyncGroupRequestAssignment,
)
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_cli import COMMAND
from tests.integration.test_replication import FAST_ISR
from tests.integration.test_topics import _ready_cluster

pytestmark = pytest.mark.timeout(180)

TOPIC = "orders"
OLD, NEW = 20, 10
"""Per partition: OLD records an hour old, then NEW records from now."""
P = [TopicPartition(TOPIC, p) for p in range(3)]


class Headwater:
    """`headwater --bootstrap-server ...` in a subprocess, off the event loop."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def __call__(self, *args: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
        command = [*COMMAND, "--bootstrap-server", self.bootstrap, "groups", *args]
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=90, check=False
        )
        assert done.returncode == rc, f"headwater groups {' '.join(args)}: {done}"
        if rc == 1:  # an error the user can act on: one line, no traceback
            assert done.stderr.startswith("headwater: ") and done.stderr.count("\n") == 1, done
        return done

    async def rows(self, *args: str) -> list[list[str]]:
        """The data rows of the table that ends the output (tab-separated, header first)."""
        out = (await self(*args)).stdout
        return [line.split("\t") for line in out.split("\n\n")[-1].splitlines()[1:] if line]

    async def describe(self, group: str) -> tuple[dict[str, str], dict[int, list[str]]]:
        """The summary lines (``name: value``) and the rows by partition."""
        out = (await self("describe", group)).stdout
        head, table = out.split("\n\n", 1)
        summary = dict(line.split(":", 1) for line in head.splitlines())
        rows = [line.split("\t") for line in table.splitlines()[1:] if line]
        return {k: v.strip() for k, v in summary.items()}, {int(r[1]): r for r in rows}

    async def plan(self, *args: str) -> dict[int, tuple[str, int]]:
        """reset-offsets: partition -> (current, new)."""
        rows = await self.rows("reset-offsets", "app", *args)
        assert all(r[0] == TOPIC for r in rows)
        return {int(r[1]): (r[2], int(r[3])) for r in rows}


async def _committed(bootstrap: str) -> dict[int, int]:
    async with Admin(bootstrap_servers=bootstrap) as admin:
        return {tp.partition: o for tp, o in (await admin.list_group_offsets("app")).items()}


async def _produce(bootstrap: str, now_ms: int) -> None:
    async with Producer(bootstrap_servers=bootstrap, acks="all") as producer:
        for p in range(3):
            for i in range(OLD + NEW):
                ts = now_ms - 3_600_000 if i < OLD else now_ms
                await producer.send(TOPIC, b"%d" % i, partition=p, timestamp_ms=ts)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def test_list_describe_reset_and_delete_a_group(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        3,
        {
            **FAST_ISR,
            "offsets.topic.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
        },
    )
    await _ready_cluster(cluster)
    bootstrap = cluster.bootstrap
    hw = Headwater(bootstrap)
    now_ms = int(time.time() * 1000)
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 3, 3)])
    await _produce(bootstrap, now_ms)
    end = OLD + NEW
    async with Admin(bootstrap_servers=bootstrap) as admin:
        await admin.alter_group_offsets("app", {P[0]: 5, P[1]: 10, P[2]: end})

    # list: the group shows (it has only committed offsets: Empty)
    listed = await _until(lambda: hw.rows("list"), lambda rows: ["app", "-", "Empty"] in rows)
    assert [r[0] for r in listed].count("app") == 1

    # describe: lag = log end - committed, per partition and in total
    summary, rows = await hw.describe("app")
    assert (summary["state"], summary["members"], summary["total lag"]) == ("Empty", "0", "45")
    assert {p: r[2:5] for p, r in rows.items()} == {
        0: ["5", "30", "25"],
        1: ["10", "30", "20"],
        2: ["30", "30", "0"],
    }

    # --to-earliest: the dry run changes nothing, --execute does
    assert await hw.plan("--topic", TOPIC, "--to-earliest") == {
        0: ("5", 0),
        1: ("10", 0),
        2: ("30", 0),
    }
    assert await _committed(bootstrap) == {0: 5, 1: 10, 2: end}
    await hw.plan("--topic", TOPIC, "--to-earliest", "--execute")
    assert await _committed(bootstrap) == {0: 0, 1: 0, 2: 0}

    # --to-offset (beyond the log end: clamped to it), then --shift-by on listed partitions
    await hw.plan("--topic", TOPIC, "--to-offset", "12", "--execute")
    assert await _committed(bootstrap) == {0: 12, 1: 12, 2: 12}
    assert await hw.plan("--topic", f"{TOPIC}:2", "--to-offset", "1000") == {2: ("12", end)}
    await hw.plan("--topic", f"{TOPIC}:0,1", "--shift-by", "-5", "--execute")
    assert await _committed(bootstrap) == {0: 7, 1: 7, 2: 12}
    await hw.plan("--all-topics", "--shift-by", "-10", "--execute")  # 7 - 10: the log start
    assert await _committed(bootstrap) == {0: 0, 1: 0, 2: 2}

    # --to-datetime: the first record at or after the time; after the last: the log end
    half_an_hour_ago = _iso(now_ms - 1_800_000)
    await hw.plan("--topic", TOPIC, "--to-datetime", half_an_hour_ago, "--execute")
    assert await _committed(bootstrap) == {0: OLD, 1: OLD, 2: OLD}
    in_an_hour = _iso(now_ms + 3_600_000)
    assert await hw.plan("--topic", f"{TOPIC}:0", "--to-datetime", in_an_hour) == {
        0: (str(OLD), end)
    }

    # a live member: described with its partitions; reset and delete are refused
    async with _Member(bootstrap) as member_id:
        summary, rows = await hw.describe("app")
        assert (summary["state"], summary["strategy"]) == ("Stable", "range")
        assert summary["members"] == f"1 (leader: {member_id})"
        assert {p: r[5] for p, r in rows.items()} == dict.fromkeys(range(3), member_id)
        assert summary["total lag"] == str(3 * NEW)
        refused = await hw("reset-offsets", "app", "--topic", TOPIC, "--to-latest", rc=1)
        assert "is Stable with 1 member(s)" in refused.stderr
        assert "stop its consumers first" in refused.stderr
        refused = await hw("delete", "app", rc=1)
        assert "stop its consumers first (NON_EMPTY_GROUP)" in refused.stderr
        # --list --state and --all-groups, as kafka-consumer-groups has them
        stable = await hw.rows("list", "--state", "Stable")
        assert ["app", "consumer", "Stable"] in stable
        assert all(r[2] == "Stable" for r in stable)
        every = (await hw("describe", "--all-groups", "--state")).stdout
        assert any(line.startswith("app\t") for line in every.splitlines())
        refused_all = await hw("delete", "--all-groups", rc=1)
        assert "1 of 1 groups were not deleted: group app: " in refused_all.stderr
        assert await _committed(bootstrap) == {0: OLD, 1: OLD, 2: OLD}

    # delete: gone from the list, and describe says it does not exist
    assert (await hw("delete", "app")).stdout == "Deleted group app.\n"
    assert "app" not in [r[0] for r in await hw.rows("list")]
    gone = await hw("describe", "app", rc=1)
    assert "group 'app' does not exist" in gone.stderr
    assert (await hw("delete", "app", "--if-exists")).stdout == "Group app does not exist.\n"
    assert await _committed(bootstrap) == {}


class _Member:
    """One member of group "app" joined over the raw protocol (range strategy, all of the
    topic's partitions), with a long session; it leaves on exit."""

    def __init__(self, bootstrap: str) -> None:
        self.cluster = ClientCluster(bootstrap, client_id="test-member")
        self.group = GroupOffsets(
            self.cluster, "app", request_timeout_ms=30_000, retry_backoff_ms=100
        )
        self.member_id = ""

    async def __aenter__(self) -> str:
        await self.cluster.start()
        subscription = encode_subscription(Subscription([TOPIC]))
        joined = await self.group.call(
            ApiKey.JOIN_GROUP,
            JoinGroupRequest(
                group_id="app",
                session_timeout_ms=60_000,
                member_id="",
                protocol_type="consumer",
                protocols=[JoinGroupRequestProtocol(name="range", metadata=subscription)],
            ),
        )
        self.member_id = joined.member_id
        assignment = encode_assignment(Assignment(P))
        await self.group.call(
            ApiKey.SYNC_GROUP,
            SyncGroupRequest(
                group_id="app",
                generation_id=joined.generation_id,
                member_id=joined.member_id,
                assignments=[
                    SyncGroupRequestAssignment(member_id=joined.member_id, assignment=assignment)
                ],
            ),
        )
        return self.member_id

    async def __aexit__(self, *_: object) -> None:
        try:
            await self.group.call(
                ApiKey.LEAVE_GROUP, LeaveGroupRequest(group_id="app", member_id=self.member_id)
            )
        finally:
            await self.cluster.close()
