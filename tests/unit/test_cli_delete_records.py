"""`headwater topics delete-records`, without a cluster: the Admin calls are answered by a
fake that records them."""

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from click.testing import Result

from client import TopicPartition
from client.types import PartitionDescription, TopicDescription
from protocol.errors import OffsetOutOfRangeError
from tests.unit.conftest import serve_admin


class FakeAdmin:
    def __init__(self) -> None:
        self.asked: list[dict[TopicPartition, int]] = []
        self.refuse: Exception | None = None

    async def describe_topics(self, names: list[str]) -> list[TopicDescription]:
        partitions = [PartitionDescription(p, 1, 0, [1], [1], []) for p in range(3)]
        return [TopicDescription(names[0], False, partitions)]

    async def delete_records(
        self, before: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        if self.refuse is not None:
            raise self.refuse
        self.asked.append(dict(before))
        return {tp: max(offset, 7) for tp, offset in before.items()}


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAdmin:
    fake = serve_admin(FakeAdmin(), monkeypatch, tmp_path)
    return fake


def test_every_partition_or_those_named(admin: FakeAdmin, run: Callable[..., Result]) -> None:
    result = run("topics", "delete-records", "orders", "--before", "10")
    assert result.exit_code == 0, result.output
    assert admin.asked[-1] == {TopicPartition("orders", p): 10 for p in range(3)}
    assert result.stdout.splitlines() == [
        f"orders-{p}: records below 10 deleted." for p in range(3)
    ]
    some = run("topics", "delete-records", "orders", "--before", "-1", "--partition", "2")
    assert admin.asked[-1] == {TopicPartition("orders", 2): -1}
    assert some.stdout == "orders-2: records below 7 deleted.\n"  # the low watermark


def test_mistakes_are_one_line(admin: FakeAdmin, run: Callable[..., Result]) -> None:
    missing = run("topics", "delete-records", "orders", "--before", "1", "--partition", "5")
    assert missing.exit_code == 1 and "has no partition 5 (it has 3)" in missing.stderr
    assert run("topics", "delete-records", "orders").exit_code == 2  # --before is required
    assert run("topics", "delete-records", "orders", "--before", "-2").exit_code == 2
    admin.refuse = OffsetOutOfRangeError("cannot delete orders-0's records below offset 99")
    refused = run("topics", "delete-records", "orders", "--before", "99")
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert "below offset 99 (OFFSET_OUT_OF_RANGE)" in refused.stderr
    assert len(admin.asked) == 0
