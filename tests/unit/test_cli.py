"""The `headwater` command without a cluster: bootstrap resolution, argument and usage
errors (one line, exit code 1, or click's usage error, exit code 2), output formats, and
the local cluster's record and pid safety."""

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from client import cli
from client.cli import (
    CliError,
    _ProduceJob,
    _stdin_lines,
    parse_bootstrap,
    parse_configs,
    resolve_bootstrap,
)
from client.console import PRODUCER_PROPERTIES, LineReader, parse_properties
from client.localcluster import (
    STATE_FILE,
    BrokerEntry,
    ClusterState,
    LocalCluster,
    ZooKeeperEntry,
    is_our_process,
    load_state,
)
from protocol.errors import NotEnoughReplicasError, UnknownTopicOrPartitionError


def _state(directory: Path, ports: list[int], pids: list[int | None] | None = None) -> ClusterState:
    pids = pids or [None] * len(ports)
    return ClusterState(
        ZooKeeperEntry(connect="127.0.0.1:2181", directory=directory / "zookeeper"),
        [
            BrokerEntry(broker_id=i + 1, directory=directory / f"broker-{i + 1}", port=p, pid=pid)
            for i, (p, pid) in enumerate(zip(ports, pids, strict=True))
        ],
    )


def _record(cwd: Path, ports: list[int]) -> Path:
    directory = cwd / ".headwater"
    LocalCluster(directory).save(_state(directory, ports))
    return directory


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``run(*args, input=None, env=None)``: the command in an empty folder, no env var."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.BOOTSTRAP_ENV, raising=False)

    def invoke(
        *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None
    ) -> Result:
        return CliRunner().invoke(cli.main, list(args), input=input, env=env)

    return invoke


def _one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert result.stderr.startswith("headwater: ")
    for fragment in fragments:
        assert fragment in result.stderr


# --- bootstrap resolution -----------------------------------------------------------------


def test_bootstrap_flag_wins_over_env_and_file(tmp_path: Path) -> None:
    _record(tmp_path, [9001, 9002])
    env = {cli.BOOTSTRAP_ENV: "10.0.0.1:9092"}
    assert resolve_bootstrap("h:1, h:2", env, tmp_path) == "h:1,h:2"
    assert resolve_bootstrap(None, env, tmp_path) == "10.0.0.1:9092"
    assert resolve_bootstrap(None, {}, tmp_path) == "127.0.0.1:9001,127.0.0.1:9002"
    assert resolve_bootstrap(None, {cli.BOOTSTRAP_ENV: " "}, tmp_path) == (
        "127.0.0.1:9001,127.0.0.1:9002"  # an empty variable is as good as none
    )


def test_no_cluster_anywhere_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CliError) as info:
        resolve_bootstrap(None, {}, tmp_path)
    assert "headwater cluster up" in info.value.message
    assert "--bootstrap-server" in info.value.message


@pytest.mark.parametrize("value", ["localhost", "host:", ":9092", "h:0", "h:70000", "a b:1", ","])
def test_bad_bootstrap_is_named(value: str) -> None:
    with pytest.raises(CliError, match="--bootstrap-server"):
        parse_bootstrap(value, "--bootstrap-server")


def test_good_bootstrap_forms() -> None:
    assert parse_bootstrap("broker-1.example:9092,[::1]:9093", "x") == (
        "broker-1.example:9092,[::1]:9093"
    )


def test_subcommand_flag_wins_over_global(
    run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the Admin call is replaced by one that shows which servers it would have used
    monkeypatch.setattr(cli, "_admin", lambda ctx, call: [cli._bootstrap(ctx)])
    result = run("--bootstrap-server", "a:1", "topics", "list", "--bootstrap-server", "b:2")
    assert result.stdout == "b:2\n"
    assert run("--bootstrap-server", "a:1", "topics", "list").stdout == "a:1\n"
    assert run("topics", "list", env={cli.BOOTSTRAP_ENV: "c:3"}).stdout == "c:3\n"
    _record(Path.cwd(), [4444])
    assert run("topics", "list").stdout == "127.0.0.1:4444\n"


def test_no_cluster_is_one_line(run: Callable[..., Result]) -> None:
    for args in (
        ["topics", "list"],
        ["topics", "describe"],
        ["topics", "create", "t"],
        ["topics", "delete", "t"],
        ["produce", "t"],
        ["consume", "t"],
    ):
        _one_line_error(run(*args, input=""), "no cluster to talk to", "headwater cluster up")


def test_bad_bootstrap_flag_is_one_line(run: Callable[..., Result]) -> None:
    _one_line_error(run("--bootstrap-server", "nohost", "topics", "list"), "'nohost'")


def test_a_damaged_record_is_one_line(run: Callable[..., Result]) -> None:
    Path(".headwater").mkdir()
    Path(".headwater", STATE_FILE).write_text("{not json")
    _one_line_error(run("topics", "list"), "is not a cluster record")
    _one_line_error(run("cluster", "status"), "is not a cluster record")


# --- arguments ---------------------------------------------------------------------------


def test_config_pairs() -> None:
    assert parse_configs(["retention.ms=1000", "cleanup.policy = compact", "x="]) == {
        "retention.ms": "1000",
        "cleanup.policy": "compact",
        "x": "",
    }
    with pytest.raises(CliError, match="not NAME=VALUE"):
        parse_configs(["retention.ms"])
    with pytest.raises(CliError, match="not NAME=VALUE"):
        parse_configs(["=1"])
    with pytest.raises(CliError, match="given twice"):
        parse_configs(["a=1", "a=2"])


def test_bad_config_is_one_line_before_any_connection(run: Callable[..., Result]) -> None:
    result = run("--bootstrap-server", "127.0.0.1:1", "topics", "create", "t", "--config", "x")
    _one_line_error(result, "--config 'x' is not NAME=VALUE")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["consume", "t", "--offset", "5"], "--offset needs --partition"),
        (["consume", "t", "--partition", "0", "--offset", "5", "--from-beginning"], "exclude"),
        (["consume", "t", "--partition", "0", "--offset", "-3"], "must be an offset"),
        (["consume", "t", "--partition", "0", "--offset", "soon"], "must be an offset"),
        (["consume", "t", "--max-messages", "0"], "--max-messages"),
        (["consume", "t", "--partition-assignment-strategy", "sticky"], "needs --group"),
        (["consume", "t", "--group", "g", "--partition-assignment-strategy", "fair"], "fair"),
        (["produce", "t", "--acks", "2"], "--acks"),
        (["produce", "t", "--compression", "brotli"], "--compression"),
        (["produce", "t", "--key-separator", ""], "--key-separator"),
        (["topics", "create"], "NAME"),
        (["topics", "create", "t", "--partitions", "0"], "--partitions"),
        (["cluster", "up", "--brokers", "0"], "--brokers"),
    ],
)
def test_usage_errors(run: Callable[..., Result], args: list[str], message: str) -> None:
    result = run("--bootstrap-server", "127.0.0.1:1", *args, input="")
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_version_and_help(run: Callable[..., Result]) -> None:
    assert run("--version").stdout.strip() == f"headwater, version {cli.VERSION}"
    result = run("--help")
    for command in ("cluster", "topics", "produce", "consume"):
        assert command in result.stdout


# --- cluster commands without a cluster ---------------------------------------------------


def test_status_and_down_without_a_record(run: Callable[..., Result]) -> None:
    _one_line_error(run("cluster", "status"), "no cluster is recorded", "headwater cluster up")
    _one_line_error(run("cluster", "down", "--dir", "elsewhere"), "no cluster is recorded")


def test_status_of_a_stopped_cluster(run: Callable[..., Result]) -> None:
    _record(Path.cwd(), [4001, 4002, 4003])
    result = run("cluster", "status")
    assert result.exit_code == 1
    assert "stopped; start it with `headwater cluster up`" in result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert rows[0] == ["PROCESS", "ADDRESS", "PID", "STATE", "REGISTERED"]
    assert rows[2] == ["broker 1", "127.0.0.1:4001", "-", "stopped", "no"]


def test_up_refuses_a_zookeeper_that_is_not_host_port(run: Callable[..., Result]) -> None:
    _one_line_error(run("cluster", "up", "--zookeeper", "zk"), "--zookeeper: 'zk'")


# --- the record and pid safety ------------------------------------------------------------


def test_state_round_trip(tmp_path: Path) -> None:
    state = _state(tmp_path, [1, 2], [11, None])
    state.zookeeper.pid, state.zookeeper.start_ticks = 10, 99
    data = json.loads(json.dumps(state.to_json()))
    assert data["bootstrap_servers"] == "127.0.0.1:1,127.0.0.1:2"
    assert ClusterState.from_json(data) == state
    external = ClusterState(ZooKeeperEntry(connect="zk:2181/hw"), [])
    assert ClusterState.from_json(external.to_json()) == external
    assert external.zookeeper.running() is None
    # each broker's Kafka-protocol listener, kept for Kafka's clients
    state.brokers[0].kafka_port, state.brokers[1].kafka_port = 5, 6
    data = json.loads(json.dumps(state.to_json()))
    assert data["kafka_bootstrap_servers"] == "127.0.0.1:5,127.0.0.1:6"
    assert ClusterState.from_json(data) == state
    for broker in data["brokers"]:  # a record written before the listener existed
        del broker["kafka_port"]
    assert ClusterState.from_json(data).kafka_bootstrap_servers == ""


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({**_state(tmp_path, [1]).to_json(), "format": 9}))
    with pytest.raises(Exception, match="not a cluster record"):
        load_state(tmp_path)


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose arguments look like a broker of ``tmp_path``'s broker-1."""
    marker = f"log.dirs={tmp_path / 'broker-1' / 'data'}"
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "broker", marker]
    )
    yield process
    process.kill()
    process.wait()


def _ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def test_a_pid_is_ours_only_with_its_start_time_and_arguments(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    entry = BrokerEntry(broker_id=1, directory=tmp_path / "broker-1", port=1, pid=sleeper.pid)
    ticks = _ticks(sleeper.pid)
    assert is_our_process(sleeper.pid, ticks, entry.markers)
    assert not is_our_process(sleeper.pid, ticks + 1, entry.markers)  # a reused pid
    other = BrokerEntry(broker_id=1, directory=tmp_path / "other", port=1, pid=sleeper.pid)
    assert not is_our_process(sleeper.pid, ticks, other.markers)  # another cluster's
    sleeper.kill()
    sleeper.wait()
    assert not is_our_process(sleeper.pid, ticks, entry.markers)


def test_down_never_signals_a_pid_that_is_not_ours(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    # the record says broker 2 has the sleeper's pid: it is not broker 2's process
    cluster = LocalCluster(tmp_path)
    state = _state(tmp_path, [1, 2], [None, sleeper.pid])
    state.brokers[1].start_ticks = _ticks(sleeper.pid)
    cluster.save(state)
    report = cluster.down(timeout_s=1)
    assert sleeper.poll() is None  # untouched
    assert report[1] == (
        f"broker 2 127.0.0.1:2: not running (pid {sleeper.pid} has exited; nothing signalled)"
    )
    stored = cluster.load()
    assert stored is not None
    assert all(b.pid is None for b in stored.brokers)


def test_down_stops_a_verified_process(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    cluster = LocalCluster(tmp_path)
    state = _state(tmp_path, [1], [sleeper.pid])
    state.brokers[0].start_ticks = _ticks(sleeper.pid)
    cluster.save(state)
    report = cluster.down(timeout_s=5)
    assert report[0] == f"broker 1 127.0.0.1:1: stopped (pid {sleeper.pid})"
    assert report[1] == "zookeeper 127.0.0.1:2181: not running"
    assert sleeper.wait(5) in (-signal.SIGTERM, 0)


# --- produce and consume pieces ------------------------------------------------------------


async def test_stdin_lines() -> None:
    stream = io.BytesIO(b"a\nb\r\n\n\xff binary\nlast")
    assert [line async for line in _stdin_lines(stream, chunk_bytes=3)] == [
        b"a",
        b"b",
        b"",
        b"\xff binary",
        b"last",
    ]
    assert [line async for line in _stdin_lines(io.BytesIO(b""))] == []


class _FakeProducer:
    """Fails the records whose value starts with b"bad"."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes, int | None]] = []

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]:
        if value == b"unknown":
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        self.sent.append((key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if value.startswith(b"bad"):
            future.set_exception(NotEnoughReplicasError("only 1 in sync"))
        else:
            future.set_result(None)
        return future


async def test_produce_counts_and_reports_failures(capsys: pytest.CaptureFixture[str]) -> None:
    props = parse_properties(["parse.key=true", "key.separator=:"], PRODUCER_PROPERTIES, "-")
    job = _ProduceJob("t", LineReader(props), 2)
    producer = _FakeProducer()
    for number, line in enumerate([b"k:v", b"no separator", b"k2:bad one", b":empty key"], 1):
        await job._send(producer, number, line)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # done callbacks run
    assert producer.sent == [(b"k", b"v", 2), (b"k2", b"bad one", 2), (b"", b"empty key", 2)]
    assert (job.acked, job.failed) == (2, 2)
    with pytest.raises(CliError, match="2 of 4 records were not written to t"):
        job.report()
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "headwater: line 2 was not written: no key separator ':'",
        "headwater: line 3 was not written: only 1 in sync (NOT_ENOUGH_REPLICAS)",
    ]
    with pytest.raises(UnknownTopicOrPartitionError):  # not per record: the whole command
        await job._send(producer, 5, b"k:unknown")  # type: ignore[arg-type]


def test_the_module_runs_as_a_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "client.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != cli.BOOTSTRAP_ENV},
    )
    assert out.stdout.strip() == f"headwater, version {cli.VERSION}"


def test_consumer_properties_that_say_where_to_read_are_taken_as_the_options() -> None:
    """(Found in review.) group.id is --group and auto.offset.reset=earliest is
    --from-beginning, as in Kafka's console consumer; before, group.id made a subscribed
    consumer taken for an assigning one ("topic does not exist"), and the reset was
    overridden by the seek to the end."""
    from client.cli import _where_to_read

    def where(chosen: dict[str, Any], **kw: Any) -> tuple[Any, Any, dict[str, Any]]:
        options: dict[str, Any] = {
            "topic": "t",
            "include": None,
            "partition": None,
            "offset": None,
            "from_beginning": False,
            "group": None,
            "strategies": (),
        }
        group, start = _where_to_read(**{**options, **kw}, chosen=chosen)
        return group, start, chosen

    assert where({"group_id": "g", "client_rack": "r"}) == ("g", "latest", {"client_rack": "r"})
    assert where({"group_id": "g"}, group="g")[:2] == ("g", "latest")
    assert where({"auto_offset_reset": "earliest"}) == (None, "earliest", {})
    assert where({"auto_offset_reset": "none"}, group="g") == (
        "g",
        "latest",
        {"auto_offset_reset": "none"},  # the group's to apply
    )
    assert where({}, partition=1, offset=5)[:2] == (None, 5)
    for chosen, kw, message in [
        ({"group_id": "h"}, {"group": "g"}, "--group and --consumer-property group.id differ"),
        ({"group_id": "g"}, {"partition": 0}, "exclude --include and --group"),
        ({"auto_offset_reset": "latest"}, {"from_beginning": True}, "exclude each other"),
        ({}, {"topic": None}, "give a TOPIC or --include REGEX"),
        ({}, {"include": "a.*"}, "give a TOPIC or --include REGEX"),
        ({}, {"topic": None, "include": "("}, "is not a regular expression"),
        ({}, {"strategies": ("range",)}, "needs --group"),
    ]:
        with pytest.raises(click.UsageError, match=re.escape(message)):
            where(chosen, **kw)
