"""`headwater topics alter` and the Configs lines of `topics describe`, without a cluster:
the Admin calls are answered by a fake that records them."""

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from client import AlterConfigOp, ConfigResource, NewPartitions
from client.types import ConfigEntry, PartitionDescription, TopicDescription
from protocol.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    UnknownTopicOrPartitionError,
)
from tests.unit.conftest import serve_admin


class FakeAdmin:
    def __init__(self) -> None:
        self.changes: list[tuple[dict[ConfigResource, list[AlterConfigOp]], bool]] = []
        self.grown: list[tuple[dict[str, NewPartitions], bool]] = []
        self.refuse: Exception | None = None

    async def create_partitions(
        self, new_partitions: dict[str, NewPartitions], *, validate_only: bool = False
    ) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.grown.append((new_partitions, validate_only))

    async def incremental_alter_configs(
        self, changes: dict[ConfigResource, list[AlterConfigOp]], *, validate_only: bool = False
    ) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.changes.append((changes, validate_only))

    async def describe_topics(self, names: list[str] | None) -> list[TopicDescription]:
        partition = PartitionDescription(0, 1, 0, [1, 2], [1, 2], [])
        ids = {"plain": None, "tuned": "tunedTopicIdIs22Chars_"}  # plain: an older broker's
        return [TopicDescription(n, False, [partition], ids[n]) for n in ("plain", "tuned")]

    async def describe_configs(self, topic: str) -> dict[str, ConfigEntry]:
        if topic == "plain":
            return {"retention.ms": _entry("retention.ms", "1", "DEFAULT_CONFIG")}
        return {
            "retention.ms": _entry("retention.ms", "1000", "DYNAMIC_TOPIC_CONFIG"),
            "cleanup.policy": _entry("cleanup.policy", "compact", "DYNAMIC_TOPIC_CONFIG"),
            "segment.ms": _entry("segment.ms", "5", "STATIC_BROKER_CONFIG"),
        }


def _entry(name: str, value: str, source: str) -> ConfigEntry:
    return ConfigEntry(name, value, source, False, False)


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAdmin:
    fake = serve_admin(FakeAdmin(), monkeypatch, tmp_path)
    return fake


def _one_line(result: Result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("headwater: ") and result.stderr.count("\n") == 1
    assert fragment in result.stderr


def test_alter_sends_set_and_delete_ops(admin: FakeAdmin, run: Callable[..., Result]) -> None:
    result = run(
        "topics",
        "alter",
        "orders",
        "--config",
        "retention.ms=1000",
        "--config",
        "cleanup.policy=compact,delete",
        "--delete-config",
        "segment.ms",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Altered topic orders: set retention.ms=1000, set cleanup.policy=compact,delete, "
        "deleted segment.ms.\n"
    )
    ((changes, validate_only),) = admin.changes
    assert not validate_only
    assert changes == {
        ConfigResource("topic", "orders"): [
            AlterConfigOp("retention.ms", "1000"),
            AlterConfigOp("cleanup.policy", "compact,delete"),
            AlterConfigOp("segment.ms", None, "DELETE"),
        ]
    }
    checked = run("topics", "alter", "orders", "--config", "flush.ms=1", "--validate-only")
    assert checked.stdout == "Valid change of topic orders: set flush.ms=1.\n"
    assert admin.changes[-1][1] is True


def test_alter_partitions_grows_the_topic(admin: FakeAdmin, run: Callable[..., Result]) -> None:
    result = run("topics", "alter", "orders", "--partitions", "6")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Altered topic orders: 6 partitions.\n"
    assert admin.grown == [({"orders": NewPartitions(6)}, False)] and admin.changes == []
    both = run(
        "topics", "alter", "orders", "--partitions", "8", "--config", "a=1", "--validate-only"
    )
    assert both.stdout == "Valid change of topic orders: 8 partitions, set a=1.\n"
    assert admin.grown[-1] == ({"orders": NewPartitions(8)}, True) and admin.changes[-1][1]
    assert run("topics", "alter", "orders", "--partitions", "0").exit_code == 2
    admin.refuse = InvalidPartitionsError("topic 'orders' already has 6 partitions")
    _one_line(
        run("topics", "alter", "orders", "--partitions", "6"),
        "already has 6 partitions (INVALID_PARTITIONS)",
    )


def test_alter_argument_errors(admin: FakeAdmin, run: Callable[..., Result]) -> None:
    assert run("topics", "alter", "orders").exit_code == 2  # nothing to change
    _one_line(run("topics", "alter", "t", "--config", "retention.ms"), "is not NAME=VALUE")
    _one_line(run("topics", "alter", "t", "--delete-config", "a=1"), "is not a setting NAME")
    _one_line(
        run("topics", "alter", "t", "--config", "a=1", "--delete-config", "a"),
        "a is both set with --config and deleted with --delete-config",
    )
    _one_line(
        run("topics", "alter", "t", "--delete-config", "a", "--delete-config", "a"),
        "given twice",
    )
    assert admin.changes == []


def test_refusals_are_one_line_with_kafkas_name(
    admin: FakeAdmin, run: Callable[..., Result]
) -> None:
    admin.refuse = InvalidConfigError("topic 't': retention.ms=-5 is invalid: it must be ...")
    _one_line(
        run("topics", "alter", "t", "--config", "retention.ms=-5"),
        "retention.ms=-5 is invalid: it must be ... (INVALID_CONFIG)",
    )
    admin.refuse = UnknownTopicOrPartitionError("topic 't' does not exist")
    _one_line(
        run("topics", "alter", "t", "--config", "retention.ms=1"), "(UNKNOWN_TOPIC_OR_PARTITION)"
    )


def test_describe_shows_each_topics_own_settings(
    admin: FakeAdmin, run: Callable[..., Result]
) -> None:
    lines = run("topics", "describe").stdout.splitlines()
    assert lines[0] == "TOPIC\tPARTITION\tLEADER\tREPLICAS\tISR"
    assert lines[1:3] == ["plain\t0\t1\t1,2\t1,2", "tuned\t0\t1\t1,2\t1,2"]
    # its id and only overrides (not broker defaults), sorted; nothing for a topic with
    # neither (an older broker gives no ids)
    assert lines[3:] == [
        "Topic: tuned\tTopicId: tunedTopicIdIs22Chars_\tConfigs: cleanup.policy=compact,"
        "retention.ms=1000"
    ]
    filtered = run("topics", "describe", "--under-replicated").stdout.splitlines()
    assert filtered == ["TOPIC\tPARTITION\tLEADER\tREPLICAS\tISR"]  # trouble only: no configs


def test_client_types() -> None:
    assert ConfigResource("topic", "t") == ConfigResource("topic", "t", None)
    assert hash(ConfigResource("topic", "t"))  # a dict key for incremental_alter_configs
    assert AlterConfigOp("retention.ms", "1").op_type == "SET"
