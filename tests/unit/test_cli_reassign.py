"""`headwater reassign-partitions` without a cluster: the Admin calls are answered by a
fake holding a partition's replicas and the moves under way."""

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from click.testing import Result

from client import PartitionReassignment, TopicPartition, cli
from client.types import (
    AlterConfigOp,
    BrokerDescription,
    ClusterDescription,
    ConfigResource,
    LogDirDescription,
    PartitionDescription,
    ReplicaInfo,
    TopicDescription,
    TopicPartitionReplica,
)
from protocol.errors import (
    ApiError,
    InvalidReplicaAssignmentError,
    LogDirNotFoundError,
    NoReassignmentInProgressError,
    ReplicaNotAvailableError,
)
from tests.unit.conftest import serve_admin

T0, T1 = TopicPartition("orders", 0), TopicPartition("orders", 1)


class FakeAdmin:
    def __init__(self) -> None:
        self.replicas = {T0: [1, 2], T1: [2, 3]}
        self.moving: dict[TopicPartition, PartitionReassignment] = {}
        self.asked: list[dict[TopicPartition, list[int] | None]] = []
        self.stale_reads = 0  # describe answers from before the last move finished
        self.configs: list[dict[tuple[str, str], list[tuple[str, str | None, str]]]] = []

    async def describe_cluster(self) -> ClusterDescription:
        brokers = [BrokerDescription(b, "127.0.0.1", 9000 + b, None) for b in (1, 2, 3)]
        return ClusterDescription("c", 1, brokers)

    async def incremental_alter_configs(
        self, changes: Mapping[ConfigResource, Sequence[AlterConfigOp]]
    ) -> None:
        self.configs.append(
            {
                (str(r.resource_type), r.name): [(o.name, o.value, o.op_type) for o in ops]
                for r, ops in changes.items()
            }
        )

    async def describe_topics(self, names: list[str]) -> list[TopicDescription]:
        replicas = dict(self.replicas)
        if self.stale_reads:
            self.stale_reads -= 1
            replicas[T0] = [1, 2]
        parts = [
            PartitionDescription(tp.partition, r[0], 0, r, r, []) for tp, r in replicas.items()
        ]
        return [TopicDescription("orders", False, parts)]

    async def list_partition_reassignments(
        self, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, PartitionReassignment]:
        return {tp: m for tp, m in self.moving.items() if partitions is None or tp in partitions}

    async def alter_partition_reassignments(
        self, moves: Mapping[TopicPartition, Sequence[int] | None]
    ) -> dict[TopicPartition, ApiError | None]:
        self.asked.append({tp: None if r is None else list(r) for tp, r in moves.items()})
        out: dict[TopicPartition, ApiError | None] = {}
        for tp, r in moves.items():
            if r is None:
                out[tp] = None if self.moving.pop(tp, None) else NoReassignmentInProgressError("")
            elif 9 in r:
                out[tp] = InvalidReplicaAssignmentError(
                    f"orders-{tp.partition}: broker 9 is not alive"
                )
            else:
                out[tp] = None
        return out


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAdmin:
    fake = serve_admin(FakeAdmin(), monkeypatch, tmp_path)
    monkeypatch.setattr(cli, "_METADATA_LAG_TRIES", 3)
    return fake


def _plan(path: str, moves: dict[TopicPartition, list[int]]) -> None:
    entries = [
        {"topic": tp.topic, "partition": tp.partition, "replicas": r} for tp, r in moves.items()
    ]
    Path(path).write_text(json.dumps({"version": 1, "partitions": entries}))


def test_execute_prints_the_rollback_and_refuses_to_replace_a_move_unasked(
    admin: FakeAdmin, run: Callable[..., Result]
) -> None:
    _plan("plan.json", {T0: [3, 2]})
    started = run("reassign-partitions", "--execute", "--reassignment-json-file", "plan.json")
    assert started.exit_code == 0, started.output
    lines = started.stdout.splitlines()
    assert json.loads(lines[2])["partitions"][0]["replicas"] == [1, 2]
    assert lines[-1] == "Successfully started partition reassignments for orders-0"
    admin.moving[T0] = PartitionReassignment([3, 2, 1], [3], [1])
    again = run("reassign-partitions", "--execute", "--reassignment-json-file", "plan.json")
    assert again.exit_code == 1 and "orders-0 is being moved already" in again.stderr
    assert len(admin.asked) == 1
    replaced = run(
        "reassign-partitions", "--execute", "--additional", "--reassignment-json-file", "plan.json"
    )
    assert replaced.exit_code == 0
    # the rollback of a partition moving is its origin, not both lists
    assert json.loads(replaced.stdout.splitlines()[2])["partitions"][0]["replicas"] == [2, 1]


def test_a_refused_partition_is_a_line_and_exit_code_1(
    admin: FakeAdmin, run: Callable[..., Result]
) -> None:
    _plan("plan.json", {T0: [9], T1: [1]})
    result = run("reassign-partitions", "--execute", "--reassignment-json-file", "plan.json")
    assert result.exit_code == 1
    assert "Successfully started partition reassignments for orders-1" in result.stdout
    assert result.stderr == (
        "headwater: orders-0: orders-0: broker 9 is not alive (INVALID_REPLICA_ASSIGNMENT)\n"
    )


def test_verify_waits_out_the_brokers_metadata_and_says_what_is_left(
    admin: FakeAdmin, run: Callable[..., Result]
) -> None:
    _plan("plan.json", {T0: [3, 2], T1: [2, 3]})
    admin.moving[T0] = PartitionReassignment([3, 2, 1], [3], [1])
    moving = run("reassign-partitions", "--verify", "--reassignment-json-file", "plan.json")
    assert moving.exit_code == 1
    assert moving.stdout.splitlines()[1:] == [
        "Reassignment of partition orders-0 is still in progress.",
        "Reassignment of partition orders-1 is completed.",
    ]
    del admin.moving[T0]
    admin.replicas[T0] = [3, 2]
    admin.stale_reads = 2  # the move just finished: two answers still show the old list
    assert admin.configs == []  # nothing cleared while a move goes on
    done = run("reassign-partitions", "--verify", "--reassignment-json-file", "plan.json")
    assert done.exit_code == 0, done.output
    assert "Reassignment of partition orders-0 is completed." in done.stdout
    # all done: the throttles go (Kafka's tool: the rates off every broker)
    assert done.stdout.splitlines()[-2:] == [
        "Clearing broker-level throttles on brokers 1,2,3",
        "Clearing topic-level throttles on topic orders",
    ]
    (cleared,) = admin.configs
    rates = [
        ("leader.replication.throttled.rate", None, "DELETE"),
        ("follower.replication.throttled.rate", None, "DELETE"),
    ]
    assert cleared == {
        **{("broker", str(b)): rates for b in (1, 2, 3)},
        ("topic", "orders"): [
            ("leader.replication.throttled.replicas", None, "DELETE"),
            ("follower.replication.throttled.replicas", None, "DELETE"),
        ],
    }
    kept = run(
        "reassign-partitions",
        "--verify",
        "--preserve-throttles",
        "--reassignment-json-file",
        "plan.json",
    )
    assert kept.exit_code == 0 and "Clearing" not in kept.stdout and len(admin.configs) == 1
    admin.replicas[T0] = [1, 2]
    elsewhere = run("reassign-partitions", "--verify", "--reassignment-json-file", "plan.json")
    assert elsewhere.exit_code == 1
    assert "but its replicas are 1,2 rather than 3,2." in elsewhere.stdout


def test_cancel_and_list(admin: FakeAdmin, run: Callable[..., Result]) -> None:
    _plan("plan.json", {T0: [3, 2], T1: [1]})
    admin.moving[T0] = PartitionReassignment([3, 2, 1], [3], [1])
    listed = run("reassign-partitions", "--list")
    assert listed.stdout == (
        "Current partition reassignments:\norders-0: replicas: 3,2,1. adding: 3. removing: 1.\n"
    )
    cancelled = run("reassign-partitions", "--cancel", "--reassignment-json-file", "plan.json")
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.splitlines() == [
        "Successfully cancelled partition reassignments for: orders-0",
        "orders-1 was not being reassigned.",
    ]
    assert run("reassign-partitions", "--list").stdout == "No partition reassignments found.\n"


def test_usage_mistakes(admin: FakeAdmin, run: Callable[..., Result]) -> None:
    assert run("reassign-partitions").exit_code == 2
    assert run("reassign-partitions", "--execute").exit_code == 2
    assert run("reassign-partitions", "--generate", "--broker-list", "1").exit_code == 2
    Path("t.json").write_text('{"version":1,"topics":[{"topic":"orders"}]}')
    bad = run(
        "reassign-partitions",
        "--generate",
        "--topics-to-move-json-file",
        "t.json",
        "--broker-list",
        "1,x",
    )
    assert bad.exit_code == 2 and "broker ids separated by commas" in bad.output
    one = run(
        "reassign-partitions",
        "--generate",
        "--topics-to-move-json-file",
        "t.json",
        "--broker-list",
        "5",
    )
    assert one.exit_code == 1 and "has 2 replicas but --broker-list names 1 broker" in one.stderr


def test_execute_with_a_throttle_sets_it_before_the_moves(
    admin: FakeAdmin, run: Callable[..., Result]
) -> None:
    _plan("plan.json", {T0: [3, 2], T1: [2, 3]})  # orders-1 stays where it is
    other = TopicPartition("orders", 2)  # found in review: a move under way keeps its own
    admin.moving[other] = PartitionReassignment([4, 1, 2], [4], [2])
    started = run(
        "reassign-partitions",
        "--execute",
        "--throttle",
        "1048576",
        "--reassignment-json-file",
        "plan.json",
    )
    assert started.exit_code == 0, started.output
    assert "The inter-broker throttle limit was set to 1048576 B/s" in started.stdout
    assert "You must run --verify periodically" in started.stdout
    (throttles,) = admin.configs
    rates = [
        ("leader.replication.throttled.rate", "1048576", "SET"),
        ("follower.replication.throttled.rate", "1048576", "SET"),
    ]
    assert throttles == {
        ("topic", "orders"): [
            ("leader.replication.throttled.replicas", "0:1,0:2,2:1,2:2", "SET"),
            ("follower.replication.throttled.replicas", "0:3,2:4", "SET"),
        ],
        **{("broker", str(b)): rates for b in (1, 2, 3, 4)},
    }
    verify = run(
        "reassign-partitions",
        "--verify",
        "--throttle",
        "1",
        "--reassignment-json-file",
        "plan.json",
    )
    assert verify.exit_code == 2 and "--throttle goes with --execute" in verify.output


class DirsAdmin(FakeAdmin):
    """Also moves logs between data directories: ``dirs`` per replica (log, copy)."""

    def __init__(self) -> None:
        super().__init__()
        self.dirs: dict[TopicPartitionReplica, tuple[str | None, str | None]] = {
            TopicPartitionReplica("orders", 0, 1): ("/a", None),
        }
        self.not_there_yet = 2  # answers before the reassignment's new replica exists
        self.moves: list[dict[TopicPartitionReplica, str]] = []

    async def alter_replica_log_dirs(
        self, moves: Mapping[TopicPartitionReplica, str]
    ) -> dict[TopicPartitionReplica, ApiError | None]:
        self.moves.append(dict(moves))
        out: dict[TopicPartitionReplica, ApiError | None] = {}
        for replica, path in moves.items():
            if path == "/nowhere":
                out[replica] = LogDirNotFoundError(f"{path} is not one of its log.dirs")
            elif replica not in self.dirs and self.not_there_yet:
                self.not_there_yet -= 1
                out[replica] = ReplicaNotAvailableError("not here yet")
            else:
                log, _ = self.dirs.get(replica, (path, None))
                self.dirs[replica] = (log, None if log == path else path)
                out[replica] = None
        return out

    async def describe_log_dirs(
        self, brokers: Sequence[int], partitions: Sequence[TopicPartition]
    ) -> dict[int, dict[str, LogDirDescription]]:
        found: dict[int, dict[str, LogDirDescription]] = {}
        for replica, (log, copy) in self.dirs.items():
            tp = TopicPartition(replica.topic, replica.partition)
            for path, future in ((log, False), (copy, True)):
                if path is not None:
                    described = found.setdefault(replica.broker_id, {}).setdefault(
                        path, LogDirDescription(None, {})
                    )
                    described.replicas[tp] = ReplicaInfo(10, 0, future)
        return found


def _plan_with_dirs(path: str, entries: list[dict[str, object]]) -> None:
    Path(path).write_text(json.dumps({"version": 1, "partitions": entries}))


def test_a_plans_log_dirs_move_each_replica_once_it_is_on_its_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run: Callable[..., Result]
) -> None:
    admin = serve_admin(DirsAdmin(), monkeypatch, tmp_path)
    monkeypatch.setattr(cli, "_METADATA_LAG_TRIES", 3)
    _plan_with_dirs(
        "plan.json",
        [{"topic": "orders", "partition": 0, "replicas": [1, 3], "log_dirs": ["/b", "/c"]}],
    )
    started = run("reassign-partitions", "--execute", "--reassignment-json-file", "plan.json")
    assert started.exit_code == 0, started.output
    assert started.stdout.splitlines()[-2:] == [
        "Successfully started partition reassignments for orders-0",
        "Successfully started log directory move for: orders-0-1,orders-0-3",
    ]
    # the new replica on broker 3 was asked for until it was there
    assert [sorted(m) for m in admin.moves] == [
        [TopicPartitionReplica("orders", 0, 1), TopicPartitionReplica("orders", 0, 3)],
        [TopicPartitionReplica("orders", 0, 3)],
        [TopicPartitionReplica("orders", 0, 3)],
    ]
    admin.replicas[T0] = [1, 3]
    verified = run("reassign-partitions", "--verify", "--reassignment-json-file", "plan.json")
    assert verified.exit_code == 1, (verified.output, verified.exception)
    assert verified.stdout.splitlines()[1:4] == [
        "Reassignment of partition orders-0 is completed.",
        "",
        "Reassignment of replica orders-0-1 is still in progress.",
    ]
    assert "Reassignment of replica orders-0-3 completed successfully." in verified.stdout
    admin.dirs[TopicPartitionReplica("orders", 0, 1)] = ("/b", None)
    done = run("reassign-partitions", "--verify", "--reassignment-json-file", "plan.json")
    assert done.exit_code == 0, done.output
    _plan_with_dirs(
        "bad.json", [{"topic": "orders", "partition": 1, "replicas": [2], "log_dirs": ["/nowhere"]}]
    )
    refused = run("reassign-partitions", "--execute", "--reassignment-json-file", "bad.json")
    assert refused.exit_code == 1
    assert "headwater: orders-1-2: /nowhere is not one of its log.dirs" in refused.stderr
