"""`headwater groups` without a cluster: the reset plan (modes, clamping, shift-by), the
lag rows, argument parsing and its usage errors, and the commands' output and refusals
against a stand-in Admin."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from client import cli
from client.cli import (
    CliError,
    LagRow,
    PlanRow,
    ResetMode,
    lag_rows,
    parse_datetime_ms,
    parse_topic_spec,
    plan_reset,
    reset_mode,
    total_lag,
)
from client.types import (
    BrokerDescription,
    GroupDescription,
    GroupListing,
    ListOffsetsResult,
    MemberDescription,
    OffsetSpec,
    PartitionDescription,
    TopicDescription,
    TopicPartition,
)
from protocol.errors import (
    GroupIdNotFoundError,
    GroupSubscribedToTopicError,
    NonEmptyGroupError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)

T0, T1, T2 = (TopicPartition("t", p) for p in range(3))
STARTS = {T0: 10, T1: 0, T2: 5}
ENDS = {T0: 100, T1: 50, T2: 5}  # T2 is empty: start == end
COMMITTED = {T0: 40, T1: 3}
NO_MODE: dict[str, Any] = {
    "to_earliest": False,
    "to_latest": False,
    "to_offset": None,
    "to_datetime_ms": None,
    "shift_by": None,
}


def _plan(mode: ResetMode, at_time: dict[TopicPartition, int] | None = None) -> list[int]:
    rows = plan_reset(
        mode,
        [T2, T0, T1],
        committed=COMMITTED,
        log_starts=STARTS,
        log_ends=ENDS,
        at_time=at_time,
    )
    assert [(r.topic, r.partition, r.current) for r in rows] == [
        ("t", 0, 40),
        ("t", 1, 3),
        ("t", 2, None),
    ]
    return [r.new for r in rows]


# --- the plan ------------------------------------------------------------------------


def test_to_earliest_and_to_latest_are_the_log_bounds() -> None:
    assert _plan(ResetMode("earliest")) == [10, 0, 5]
    assert _plan(ResetMode("latest")) == [100, 50, 5]


def test_to_offset_is_clamped_to_the_log_as_kafka_does() -> None:
    assert _plan(ResetMode("offset", 30)) == [30, 30, 5]
    assert _plan(ResetMode("offset", 5)) == [10, 5, 5]  # below T0's log start
    assert _plan(ResetMode("offset", 1000)) == [100, 50, 5]  # past every log end


def test_shift_by_moves_from_the_committed_offset_within_the_log() -> None:
    rows = plan_reset(
        ResetMode("shift", -5),
        [T0, T1],
        committed=COMMITTED,
        log_starts=STARTS,
        log_ends=ENDS,
    )
    assert rows == [PlanRow("t", 0, 40, 35), PlanRow("t", 1, 3, 0)]  # 3 - 5: the log start
    forward = plan_reset(
        ResetMode("shift", 55), [T0, T1], committed=COMMITTED, log_starts=STARTS, log_ends=ENDS
    )
    assert [r.new for r in forward] == [95, 50]  # 3 + 55: the log end


def test_shift_by_needs_a_committed_offset() -> None:
    with pytest.raises(CliError, match="t-2 has no committed offset to shift"):
        _plan(ResetMode("shift", 1))


def test_to_datetime_takes_the_first_offset_at_the_time_else_the_log_end() -> None:
    # T0: found; T1: no record that late (-1); T2: not answered at all
    assert _plan(ResetMode("datetime", 1_700_000_000_000), {T0: 60, T1: -1}) == [60, 50, 5]


def test_to_current_keeps_the_committed_offset_within_the_log_else_the_end() -> None:
    assert _plan(ResetMode("current")) == [40, 3, 5]  # T2 has none committed: its end
    below = {**COMMITTED, T0: 2}  # deleted by retention since: moved up to the log start
    rows = plan_reset(ResetMode("current"), [T0], committed=below, log_starts=STARTS, log_ends=ENDS)
    assert [r.new for r in rows] == [10]


def test_from_a_file_and_by_a_duration(tmp_path: Path) -> None:
    csv = tmp_path / "offsets.csv"
    csv.write_text("t,0,70\n\nt,1,1000\n")
    offsets = cli.parse_offsets_file(csv)
    assert offsets == {T0: 70, T1: 1000}
    rows = plan_reset(
        ResetMode("file", offsets=offsets),
        [T0, T1],
        committed=COMMITTED,
        log_starts=STARTS,
        log_ends=ENDS,
    )
    assert [r.new for r in rows] == [70, 50]  # past the log end: the end
    for bad in ("t,0\n", "t,x,1\n", ",0,1\n", "t,0,-1\n", "\n"):
        csv.write_text(bad)
        with pytest.raises(click.BadParameter, match=r"topic,partition,offset|names no"):
            cli.parse_offsets_file(csv)
    assert cli.parse_duration_ms("PT15M") == 900_000
    assert cli.parse_duration_ms("P1DT2H30M") == 95_400_000
    for bad in ("15M", "P", "PT", "P1DT", "p1dt", "1 day"):
        with pytest.raises(click.BadParameter, match="PnDTnHnMnS"):
            cli.parse_duration_ms(bad)
    none = NO_MODE
    assert reset_mode(**none, by_duration_ms=60_000, now_ms=1_000_000) == ResetMode(
        "datetime", 940_000
    )
    with pytest.raises(click.UsageError, match=r"\(got --to-current and --from-file\)"):
        reset_mode(**none, to_current=True, from_file={T0: 1})


# --- lag -------------------------------------------------------------------------------


def test_lag_rows_cover_committed_assigned_and_idle_members() -> None:
    u0 = TopicPartition("u", 0)
    members = [
        MemberDescription("m-1", None, "app", "/10.0.0.1", [T1, u0]),
        MemberDescription("m-2", "static-2", "app", "/10.0.0.2", []),
    ]
    committed = {T0: 40, T1: 45, TopicPartition("deleted", 0): 7}
    rows = lag_rows(members, committed, {T0: 100, T1: 50, u0: 9})
    assert rows == [
        LagRow("deleted", 0, 7, None, None, "-", "-", "-"),  # its topic is gone: no log end
        LagRow("t", 0, 40, 100, 60, "-", "-", "-"),
        LagRow("t", 1, 45, 50, 5, "m-1", "/10.0.0.1", "app"),
        LagRow("u", 0, None, 9, None, "m-1", "/10.0.0.1", "app"),  # assigned, never committed
        LagRow(None, None, None, None, None, "m-2", "/10.0.0.2", "app"),
    ]
    assert total_lag(rows) == 65


# --- arguments -----------------------------------------------------------------------


def test_exactly_one_reset_mode() -> None:
    none = NO_MODE
    assert reset_mode(**{**none, "shift_by": -5}) == ResetMode("shift", -5)
    assert reset_mode(**{**none, "to_offset": 0}) == ResetMode("offset", 0)
    assert reset_mode(**{**none, "to_latest": True}) == ResetMode("latest")
    with pytest.raises(click.UsageError, match=r"exactly one of .*\(got none\)"):
        reset_mode(**none)
    with pytest.raises(click.UsageError, match=r"\(got --to-earliest and --to-offset\)"):
        reset_mode(**{**none, "to_earliest": True, "to_offset": 3})


def test_topic_specs() -> None:
    assert parse_topic_spec("orders") == ("orders", None)
    assert parse_topic_spec("orders:2,0,2") == ("orders", (0, 2))
    for bad in ("orders:", ":1", "orders:x", "orders:-1", "orders:1,,2"):
        with pytest.raises(click.BadParameter, match="TOPIC:PARTITION"):
            parse_topic_spec(bad)


def test_datetimes_are_iso8601_in_ms_local_without_a_zone() -> None:
    assert parse_datetime_ms("2024-05-01T12:30:00Z") == 1_714_566_600_000
    assert parse_datetime_ms("2024-05-01T14:30:00.250+02:00") == 1_714_566_600_250
    local = datetime(2024, 5, 1, 12, 30)
    assert parse_datetime_ms("2024-05-01T12:30:00") == int(time.mktime(local.timetuple())) * 1000
    with pytest.raises(click.BadParameter, match="not an ISO 8601 time"):
        parse_datetime_ms("yesterday")
    with pytest.raises(click.BadParameter, match="before 1970"):
        parse_datetime_ms("1969-12-31T00:00:00Z")


# --- the commands, against a stand-in Admin ------------------------------------------


class FakeAdmin:
    """What the cluster says, in memory; records the commits it is asked for."""

    group = GroupDescription("g", "Empty", "consumer", "", -1, "", [])
    committed: dict[TopicPartition, int] = {}
    altered: list[dict[TopicPartition, int]] = []
    delete_error: Exception | None = None
    deleted_groups: list[str] = []

    def __init__(self, **_: Any) -> None:
        pass

    async def __aenter__(self) -> FakeAdmin:
        return self

    async def __aexit__(self, *_: object) -> None:
        pass

    async def list_groups(self) -> list[GroupListing]:
        return [GroupListing("g", "consumer", self.group.state), GroupListing("o", "", "Empty")]

    async def describe_groups(self, ids: list[str]) -> list[GroupDescription]:
        if ids != ["g"]:
            raise GroupIdNotFoundError(f"group {ids[0]!r} does not exist")
        return [self.group]

    async def list_group_offsets(self, _group: str) -> dict[TopicPartition, int]:
        return dict(self.committed)

    async def alter_group_offsets(self, _group: str, offsets: dict[TopicPartition, int]) -> None:
        self.altered.append(dict(offsets))

    async def delete_groups(self, ids: list[str]) -> dict[str, Exception | None]:
        FakeAdmin.deleted_groups = list(ids)
        return {ids[0]: self.delete_error, **dict.fromkeys(ids[1:])}

    async def delete_consumer_group_offsets(
        self, _group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, Exception | None]:
        self.deleted = list(partitions)
        return {
            tp: GroupSubscribedToTopicError(f"a member subscribes to {tp.topic!r}")
            if tp.topic == "busy"
            else None
            for tp in partitions
        }

    async def list_topics(self) -> list[str]:
        return ["t"]

    async def describe_topics(self, names: list[str]) -> list[TopicDescription]:
        if any(n in ("gone", "nope") for n in names):
            raise UnknownTopicOrPartitionError("topic does not exist")
        partitions = [PartitionDescription(p, 1, 0, [1], [1], []) for p in range(3)]
        return [TopicDescription(n, False, partitions) for n in names]

    async def list_offsets(
        self, specs: dict[TopicPartition, OffsetSpec]
    ) -> dict[TopicPartition, ListOffsetsResult]:
        table = {-2: STARTS, -1: ENDS}
        return {
            tp: ListOffsetsResult(table.get(spec.timestamp, {}).get(tp, 42), -1, 0)
            for tp, spec in specs.items()
        }


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(cli.BOOTSTRAP_ENV, "127.0.0.1:9092")
    monkeypatch.setattr("client.Admin", FakeAdmin)
    FakeAdmin.group = GroupDescription("g", "Empty", "consumer", "", -1, "", [])
    FakeAdmin.committed = dict(COMMITTED)
    FakeAdmin.altered = []
    FakeAdmin.delete_error = None
    yield lambda *args: CliRunner().invoke(cli.main, ["groups", *args])


def _table(output: str) -> list[list[str]]:
    """The rows of the (tab-separated) table that ends the output, header included."""
    return [line.split("\t") for line in output.rsplit("\n\n", maxsplit=1)[-1].splitlines() if line]


def _one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("headwater: ")
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_list(run: Callable[..., Result]) -> None:
    result = run("list")
    assert result.exit_code == 0, result.output
    assert _table(result.stdout) == [
        ["GROUP", "PROTOCOL-TYPE", "STATE"],
        ["g", "consumer", "Empty"],
        ["o", "-", "Empty"],
    ]


HEADER = "TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID".split()  # noqa: SIM905


def test_describe_shows_lag_owners_and_the_total(run: Callable[..., Result]) -> None:
    member = MemberDescription("m-1", None, "app", "/10.0.0.1", [T1, T2])
    FakeAdmin.group = GroupDescription("g", "Stable", "consumer", "range", 3, "m-1", [member])
    result = run("describe", "g")
    assert result.exit_code == 0, result.output
    assert "state:       Stable" in result.stdout
    assert "strategy:    range" in result.stdout
    assert "members:     1 (leader: m-1)" in result.stdout
    assert "total lag:   107" in result.stdout  # (100 - 40) + (50 - 3)
    assert _table(result.stdout) == [
        HEADER,
        ["t", "0", "40", "100", "60", "-", "-", "-"],
        ["t", "1", "3", "50", "47", "m-1", "/10.0.0.1", "app"],
        ["t", "2", "-", "5", "-", "m-1", "/10.0.0.1", "app"],
    ]


def test_describe_members_and_state(run: Callable[..., Result]) -> None:
    members = [
        MemberDescription("m-2", "static-2", "app", "/10.0.0.2", []),
        MemberDescription("m-1", None, "app", "/10.0.0.1", [T1, T0]),
    ]
    FakeAdmin.group = GroupDescription("g", "Stable", "consumer", "range", 3, "m-1", members)
    listed = run("describe", "g", "--members")
    assert listed.exit_code == 0, listed.output
    assert _table(listed.stdout) == [
        ["CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS"],
        ["m-1", "-", "/10.0.0.1", "app", "2"],
        ["m-2", "static-2", "/10.0.0.2", "app", "0"],
    ]
    verbose = run("describe", "g", "--members", "--verbose")
    assert _table(verbose.stdout)[1][-1] == "t-0,t-1" and _table(verbose.stdout)[2][-1] == "-"
    state = run("describe", "g", "--state")
    assert _table(state.stdout) == [  # Kafka's columns
        ["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"],
        ["g", "-", "range", "Stable", "2"],
    ]
    FakeAdmin.group = FakeAdmin.group._replace(
        coordinator=BrokerDescription(2, "kafka-2.local", 9093, None)
    )
    state = run("describe", "g", "--state")
    assert _table(state.stdout)[1] == ["g", "kafka-2.local:9093 (2)", "range", "Stable", "2"]
    assert run("describe", "g", "--verbose").exit_code == 2  # --verbose needs --members
    FakeAdmin.group = GroupDescription("g", "Dead", "", "", -1, "", [])
    _one_line_error(run("describe", "g", "--state"), "group 'g' does not exist")


def test_describe_of_an_unknown_group_is_one_line(run: Callable[..., Result]) -> None:
    FakeAdmin.group = GroupDescription("g", "Dead", "", "", -1, "", [])
    FakeAdmin.committed = {}
    _one_line_error(run("describe", "g"), "group 'g' does not exist", "GROUP_ID_NOT_FOUND")


def test_reset_dry_run_commits_nothing_and_execute_commits_the_plan(
    run: Callable[..., Result],
) -> None:
    dry = run("reset-offsets", "g", "--topic", "t:0,1", "--shift-by", "-5")
    assert dry.exit_code == 0, dry.output
    assert _table(dry.stdout) == [
        ["TOPIC", "PARTITION", "CURRENT", "NEW"],
        ["t", "0", "40", "35"],
        ["t", "1", "3", "0"],
    ]
    assert "Dry run" in dry.stderr and "--execute" in dry.stderr
    assert FakeAdmin.altered == []
    done = run("reset-offsets", "g", "--topic", "t", "--to-latest", "--execute")
    assert done.exit_code == 0, done.output
    assert FakeAdmin.altered == [{T0: 100, T1: 50, T2: 5}]
    run("reset-offsets", "g", "--all-topics", "--to-offset", "20", "--execute")
    assert FakeAdmin.altered[-1] == {T0: 20, T1: 20}  # only what the group has committed


def test_reset_exports_the_plan_and_takes_it_back_from_a_file(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    exported = run("reset-offsets", "g", "--topic", "t", "--to-current", "--export")
    assert exported.exit_code == 0, exported.output
    assert exported.stdout == "t,0,40\nt,1,3\nt,2,5\n"  # the committed ones, t-2's end
    plan = tmp_path / "plan.csv"
    plan.write_text("t,0,60\nt,2,0\n")
    done = run("reset-offsets", "g", "--from-file", str(plan), "--execute")
    assert done.exit_code == 0, done.output
    assert FakeAdmin.altered == [{T0: 60, T2: 5}]  # t-2's log starts at 5
    both = run("reset-offsets", "g", "--from-file", str(plan), "--all-topics")
    assert both.exit_code == 2 and "--from-file names the partitions" in both.output


def test_reset_to_datetime_asks_for_offsets_at_the_time(run: Callable[..., Result]) -> None:
    result = run("reset-offsets", "g", "--topic", "t:1", "--to-datetime", "2024-05-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert _table(result.stdout)[1] == ["t", "1", "3", "42"]  # FakeAdmin's offset at a time


def test_reset_is_refused_while_the_group_has_members(run: Callable[..., Result]) -> None:
    member = MemberDescription("m-1", None, "app", "/10.0.0.1", [T0])
    FakeAdmin.group = GroupDescription("g", "Stable", "consumer", "range", 3, "m-1", [member])
    _one_line_error(
        run("reset-offsets", "g", "--topic", "t", "--to-earliest", "--execute"),
        "group 'g' is Stable with 1 member(s)",
        "stop its consumers first",
    )
    assert FakeAdmin.altered == []


def test_reset_of_a_partition_the_topic_lacks_is_one_line(run: Callable[..., Result]) -> None:
    _one_line_error(
        run("reset-offsets", "g", "--topic", "t:7", "--to-earliest"),
        "topic 't' has no partition 7 (it has 3)",
    )


def test_reset_of_a_new_group_is_allowed(run: Callable[..., Result]) -> None:
    result = run("reset-offsets", "new", "--topic", "t:0", "--to-earliest", "--execute")
    assert result.exit_code == 0, result.output
    assert FakeAdmin.altered == [{T0: 10}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--topic", "t"], "exactly one of --to-earliest"),
        (["--topic", "t", "--to-earliest", "--shift-by", "1"], "got --to-earliest and --shift-by"),
        (["--to-earliest"], "--topic TOPIC[:P,P...] or --all-topics"),
        (["--topic", "t", "--all-topics", "--to-earliest"], "or --all-topics"),
        (["--topic", "t:x", "--to-earliest"], "is not TOPIC or TOPIC:PARTITION"),
        (["--topic", "t", "--to-datetime", "noon"], "is not an ISO 8601 time"),
        (["--topic", "t", "--to-offset", "-1"], "--to-offset"),
    ],
)
def test_reset_usage_errors(run: Callable[..., Result], args: list[str], message: str) -> None:
    result = run("reset-offsets", "g", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert FakeAdmin.altered == []


def test_delete_outcomes(run: Callable[..., Result]) -> None:
    deleted = run("delete", "g")
    assert (deleted.exit_code, deleted.stdout) == (0, "Deleted group g.\n")
    FakeAdmin.delete_error = NonEmptyGroupError(
        "group 'g' still has members; stop its consumers first"
    )
    _one_line_error(run("delete", "g"), "stop its consumers first (NON_EMPTY_GROUP)")
    FakeAdmin.delete_error = GroupIdNotFoundError("group 'g' does not exist")
    _one_line_error(run("delete", "g"), "does not exist (GROUP_ID_NOT_FOUND)")
    assert run("delete", "g", "--if-exists").stdout == "Group g does not exist.\n"


def test_a_refused_commit_is_one_line(
    run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that joins between the state check and the commit: the broker refuses."""

    async def refuse(_self: Any, group: str, _offsets: Any) -> None:
        raise UnknownMemberIdError(f"group {group!r} has live members; stop its consumers first")

    monkeypatch.setattr(FakeAdmin, "alter_group_offsets", refuse)
    _one_line_error(
        run("reset-offsets", "g", "--topic", "t", "--to-earliest", "--execute"),
        "stop its consumers first (UNKNOWN_MEMBER_ID)",
    )


def test_delete_offsets_of_whole_topics_or_some_partitions(run: Callable[..., Result]) -> None:
    result = run("delete-offsets", "g", "--topic", "t", "--topic", "busy:1")
    assert result.exit_code == 1, result.output  # one partition refused
    rows = _table(result.stdout)
    assert rows[0] == ["TOPIC", "PARTITION", "STATUS"]
    assert rows[1:] == [
        ["busy", "1", "Error: a member subscribes to 'busy' (GROUP_SUBSCRIBED_TO_TOPIC)"],
        ["t", "0", "Successful"],
        ["t", "1", "Successful"],
        ["t", "2", "Successful"],
    ]
    assert run("delete-offsets", "g", "--topic", "t:0").exit_code == 0
    # a deleted topic's leftover offsets: found from the group's own offsets
    FakeAdmin.committed = {TopicPartition("gone", 2): 5}
    leftover = run("delete-offsets", "g", "--topic", "gone", "--topic", "nope")
    assert leftover.exit_code == 1  # nope: neither a topic nor offsets of it
    assert _table(leftover.stdout)[1:] == [
        ["gone", "2", "Successful"],
        ["nope", "-1", "Error: topic 'nope' does not exist and group 'g' has no offsets of it"],
    ]
    assert run("delete-offsets", "g").exit_code == 2  # --topic is required


def test_list_by_state_and_every_group_at_once(run: Callable[..., Result]) -> None:
    """kafka-consumer-groups' --list --state, and --all-groups for describe and delete."""
    FakeAdmin.group = GroupDescription("g", "Stable", "consumer", "range", 3, "m-1", [])
    stable = run("list", "--state", "stable")
    assert _table(stable.stdout) == [
        ["GROUP", "PROTOCOL-TYPE", "STATE"],
        ["g", "consumer", "Stable"],
    ]
    assert _table(run("list", "--state", "Dead").stdout) == [["GROUP", "PROTOCOL-TYPE", "STATE"]]
    every = run("describe", "--all-groups", "--state")
    assert every.exit_code == 0, every.output
    assert _table(every.stdout.split("\n\n")[0])[1][:1] == ["g"]
    assert "headwater: group o is gone" in every.stderr  # (the fake knows only g)
    assert run("describe").exit_code == 2  # a GROUP or --all-groups
    assert run("describe", "g", "--all-groups").exit_code == 2
    FakeAdmin.delete_error = NonEmptyGroupError("the group has members")
    deleted = run("delete", "--all-groups")
    assert FakeAdmin.deleted_groups == ["g", "o"]
    assert "Deleted group o." in deleted.stdout
    _one_line_error(deleted, "1 of 2 groups were not deleted: group g: ")
    FakeAdmin.delete_error = GroupIdNotFoundError("gone")  # deleted since it was listed
    assert run("delete", "--all-groups").exit_code == 0
    FakeAdmin.delete_error = None


def test_reset_offsets_of_every_group(run: Callable[..., Result]) -> None:
    """reset-offsets --all-groups: each group's plan under a GROUP column (Kafka's); a
    group with live members is refused by name, the others reset."""
    member = MemberDescription("m-1", None, "app", "/10.0.0.1", [T0])
    FakeAdmin.group = GroupDescription("g", "Stable", "consumer", "range", 3, "m-1", [member])
    done = run("reset-offsets", "--all-groups", "--all-topics", "--to-offset", "20", "--execute")
    _one_line_error(done, "1 of 2 groups refused: group g: ", "stop its consumers first")
    assert _table(done.stdout) == [
        ["GROUP", "TOPIC", "PARTITION", "CURRENT", "NEW"],
        ["o", "t", "0", "40", "20"],
        ["o", "t", "1", "3", "20"],
    ]
    assert FakeAdmin.altered == [{T0: 20, T1: 20}]  # group o's (the fake gives both the same)
    FakeAdmin.group = GroupDescription("g", "Empty", "consumer", "", -1, "", [])
    exported = run("reset-offsets", "--all-groups", "--all-topics", "--to-current", "--export")
    assert exported.stdout.splitlines()[:2] == ["g,t,0,40", "g,t,1,3"]
    assert run("reset-offsets", "--all-topics", "--to-latest").exit_code == 2


def test_list_state_takes_kafkas_comma_list_and_refuses_unknown_states(
    run: Callable[..., Result],
) -> None:
    """(Found in review.) Kafka's help shows --state stable,empty; a misspelt state was an
    empty table with exit code 0."""
    FakeAdmin.group = GroupDescription("g", "Stable", "consumer", "range", 3, "m-1", [])
    both = run("list", "--state", "stable,empty")
    assert [r[0] for r in _table(both.stdout)[1:]] == ["g", "o"]
    wrong = run("list", "--state", "Stabel")
    assert wrong.exit_code == 2 and "stabel: not a group state" in wrong.output


def test_all_groups_never_writes_one_file_into_every_group(
    run: Callable[..., Result], tmp_path: Path
) -> None:
    """(Found in review.) --from-file with --all-groups wrote one group's offsets into every
    group: refused, before anything is asked."""
    plan = tmp_path / "plan.csv"
    plan.write_text("t,0,60\n")
    refused = run("reset-offsets", "--all-groups", "--from-file", str(plan), "--execute")
    assert refused.exit_code == 2 and "holds one group's offsets" in refused.output
    assert FakeAdmin.altered == []
