"""The `headwater` command as a user runs it: real subprocesses in a fresh folder.

`cluster up` starts a private ZooKeeper and three brokers that outlive the command; the
commands after it find the cluster through ./.headwater/cluster.json, without flags.
Whatever happens, the finalizer stops every process the record names, by verified pid.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from client.localcluster import (
    BrokerEntry,
    ClusterState,
    ZooKeeperEntry,
    is_our_process,
    load_state,
)

_HEADWATER = Path(sys.executable).with_name("headwater")
COMMAND = [str(_HEADWATER)] if _HEADWATER.exists() else [sys.executable, "-m", "client.cli"]


def _processes(state: ClusterState) -> list[ZooKeeperEntry | BrokerEntry]:
    return [state.zookeeper, *state.brokers]


def _ours(entry: ZooKeeperEntry | BrokerEntry) -> bool:
    return entry.pid is not None and is_our_process(entry.pid, entry.start_ticks, entry.markers)


class Headwater:
    """Runs `headwater` in one folder; remembers every process its cluster record names."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if k != "HEADWATER_BOOTSTRAP_SERVERS"}
        self.seen: dict[int, ZooKeeperEntry | BrokerEntry] = {}
        self.dirs = {".headwater"}

    def __call__(
        self, *args: str, input: str | None = None, rc: int = 0
    ) -> subprocess.CompletedProcess[str]:
        if "--dir" in args:
            self.dirs.add(args[args.index("--dir") + 1])
        done = subprocess.run(
            [*COMMAND, *args],
            cwd=self.folder,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            check=False,
        )
        self._remember()
        assert done.returncode == rc, f"headwater {' '.join(args)}: {done}"
        if rc == 1:  # an error the user can act on: one line, no traceback
            assert done.stderr.startswith("headwater: ") and done.stderr.count("\n") == 1, done
        return done

    def _remember(self) -> None:
        for directory in self.dirs:
            state = load_state(self.folder / directory)
            for entry in _processes(state) if state else []:
                if entry.pid is not None:
                    self.seen[entry.pid] = entry

    def clean_up(self) -> None:
        """`cluster down`, then SIGKILL whatever of ours it left (verified pids only)."""
        for directory in self.dirs:
            if (self.folder / directory / "cluster.json").exists():
                subprocess.run(
                    [*COMMAND, "cluster", "down", "--dir", directory, "--timeout-s", "5"],
                    cwd=self.folder,
                    timeout=60,
                    check=False,
                    capture_output=True,
                )
        for pid, entry in self.seen.items():
            if is_our_process(pid, entry.start_ticks, entry.markers):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Headwater]:
    """`headwater` in an empty folder; afterwards nothing the cluster started runs."""
    headwater = Headwater(tmp_path)
    try:
        yield headwater
    finally:
        headwater.clean_up()


def test_cluster_up_status_down_and_up_again(run: Headwater) -> None:
    up = run("cluster", "up", "--brokers", "2", "--dir", "hw")
    assert up.stdout.startswith("Started a 2-broker cluster in hw")
    assert "--bootstrap-server" in up.stdout  # not ./.headwater: later commands need it
    state = load_state(run.folder / "hw")
    assert state is not None
    cluster_id = run("cluster", "status", "--dir", "hw").stdout.splitlines()[1]

    # a broker that stopped: status says so, `up` starts it again on its port
    stopped = state.brokers[1]
    assert stopped.pid is not None and _ours(stopped)
    os.kill(stopped.pid, signal.SIGTERM)
    run("cluster", "status", "--dir", "hw", rc=1)  # "not fully up"
    repaired = run("cluster", "up", "--dir", "hw")
    assert repaired.stdout.startswith("Restarted what was stopped of the 2-broker cluster")
    after = load_state(run.folder / "hw")
    assert after is not None
    assert after.bootstrap_servers == state.bootstrap_servers
    assert after.brokers[0].pid == state.brokers[0].pid  # the running one left alone
    assert after.brokers[1].pid != stopped.pid
    refused = run("cluster", "up", "--dir", "hw", "--brokers", "3", rc=1)
    assert "cluster down" in refused.stderr

    run("cluster", "down", "--dir", "hw")
    for entry in _processes(after):
        assert not _ours(entry)
    resumed = run("cluster", "up", "--dir", "hw")  # same data: same cluster, same ports
    assert resumed.stdout.startswith("Started a 2-broker cluster in hw")
    again = load_state(run.folder / "hw")
    assert again is not None and again.bootstrap_servers == state.bootstrap_servers
    assert run("cluster", "status", "--dir", "hw").stdout.splitlines()[1] == cluster_id
    run("cluster", "down", "--dir", "hw")
    for entry in _processes(again):
        assert not _ours(entry)


def test_a_user_session(run: Headwater) -> None:
    folder = run.folder
    up = run("cluster", "up")
    assert up.stdout.startswith("Started a 3-broker cluster in .headwater")
    state = load_state(folder / ".headwater")
    assert state is not None and len(state.brokers) == 3
    for entry in _processes(state):
        assert _ours(entry)
        assert entry.pid is not None and os.getsid(entry.pid) == entry.pid  # own session
    bootstrap = state.bootstrap_servers
    assert f"Bootstrap servers: {bootstrap}\n" in up.stdout

    again = run("cluster", "up")  # idempotent: the same cluster, nothing new started
    assert again.stdout.startswith("A 3-broker cluster is already running in .headwater")
    assert load_state(folder / ".headwater") == state

    status = run("cluster", "status").stdout
    assert "controller:        broker " in status
    rows = [line.split("\t") for line in status.splitlines() if line.startswith("broker ")]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (f"broker {b.broker_id}", b.address, str(b.pid), "running") for b in state.brokers
    ]
    assert all(r[4].startswith("yes") for r in rows)

    run("topics", "create", "lines", "--partitions", "3", "--replication-factor", "1")
    exists = run("topics", "create", "lines", "--partitions", "3", rc=1)
    assert "already exists" in exists.stderr
    assert "lines" in run("topics", "list").stdout.splitlines()
    # every local broker has a Kafka-protocol listener too: Kafka's own clients write there
    kafka_bootstrap = state.kafka_bootstrap_servers
    assert len(kafka_bootstrap.split(",")) == 3
    assert f"bootstrap.servers={kafka_bootstrap}\n" in up.stdout
    assert f"kafka clients:     {kafka_bootstrap}\n" in status
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    assert producer.send("from-kafka", b"written by kafka-python").get(timeout=30).offset == 0
    producer.close()  # the topic was made by the first Produce (auto.create.topics.enable)
    read = run("consume", "from-kafka", "--from-beginning", "--max-messages", "1")
    assert read.stdout == "written by kafka-python\n"
    *table, topic_line = run("topics", "describe", "lines").stdout.splitlines()
    describe = [line.split("\t") for line in table]
    assert describe[0] == ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"]
    assert [row[:2] for row in describe[1:]] == [["lines", "0"], ["lines", "1"], ["lines", "2"]]
    assert all(row[2] in {"1", "2", "3"} and row[2] == row[3] == row[4] for row in describe[1:])
    assert re.fullmatch(r"Topic: lines\tTopicId: [\w-]{22}", topic_line)
    assert "does not exist" in run("topics", "describe", "nope", rc=1).stderr

    lines = [f"line {i}" for i in range(30)] + ["", "ünïcode ✓"]
    run("produce", "lines", input="\n".join(lines) + "\n")
    consumed = run(
        "consume",
        "lines",
        "--from-beginning",
        "--max-messages",
        str(len(lines)),
        "--timeout-ms",
        "10000",
    ).stdout.split("\n")
    assert consumed.pop() == ""  # the last line's newline
    assert sorted(consumed) == sorted(lines)  # three partitions: order is per partition

    keyed = run("produce", "lines", "--key-separator", ":", "--partition", "1", input="k:v\n")
    assert keyed.stderr == ""
    last = run(
        "consume",
        "lines",
        "--partition",
        "1",
        "--offset",
        "earliest",
        "--print-key",
        "--print-offset",
        "--timeout-ms",
        "2000",
    ).stdout.splitlines()
    assert last[-1].startswith("Offset:") and last[-1].endswith("\tk\tv")

    # kafka-get-offsets: TOPIC:PARTITION:OFFSET, latest by default
    latest = run("get-offsets", "--topic", "lines").stdout.splitlines()
    assert [line.rsplit(":", 1)[0] for line in latest] == ["lines:0", "lines:1", "lines:2"]
    assert sum(int(line.rsplit(":", 1)[1]) for line in latest) == len(lines) + 1
    assert run("get-offsets", "--topic", "li.*", "--time", "earliest").stdout == (
        "lines:0:0\nlines:1:0\nlines:2:0\n"
    )
    later = run("get-offsets", "--topic", "lines", "--partitions", "1", "--time", "9" * 13)
    assert later.stdout == "lines:1:\n"  # no record that late
    assert (
        "no partition matches --topic 'nope'" in run("get-offsets", "--topic", "nope", rc=1).stderr
    )

    # Kafka's console tools' properties: headers, keys and nulls in; every column out
    run(
        "produce",
        "lines",
        "--partition",
        "2",
        "--property",
        "parse.headers=true",
        "--property",
        "parse.key=true",
        "--property",
        "null.marker=NULL",
        "--producer-property",
        "linger.ms=0",
        input="trace:7,span:NULL\tk2\tv2\n\tNULL\tkeyless\n",
    )
    columns = run(
        "consume",
        "lines",
        "--partition",
        "2",
        "--offset",
        "earliest",
        "--timeout-ms",
        "2000",
        "--consumer-property",
        "fetch.max.wait.ms=50",
        *("--property", "print.timestamp=true", "--property", "print.headers=true"),
        *("--property", "print.key=true", "--property", "print.partition=true"),
        *("--property", "key.separator=|", "--property", "null.literal=~"),
    ).stdout.splitlines()
    first, second = (line.split("|") for line in columns[-2:])  # key.separator: between all
    assert first[0].startswith("CreateTime:") and int(first[0].split(":")[1]) > 0
    assert first[1:] == ["Partition:2", "trace:7,span:~", "k2", "v2"]
    assert second[1:] == ["Partition:2", "NO_HEADERS", "~", "keyless"]
    bad = run("consume", "lines", "--property", "print.colour=true", rc=2)
    assert "'print.colour' is not a property of this command" in bad.stderr
    bad = run("produce", "lines", "--producer-property", "lingr.ms=5", input="x\n", rc=2)
    assert "'lingr.ms' is not a setting of the producer" in bad.stderr

    # kafka-console-consumer --include: every topic whose whole name matches
    run("topics", "create", "other", "--partitions", "1", "--replication-factor", "1")
    run("produce", "other", input="o1\n")
    everything = run(
        *("consume", "--include", "lines|oth.*", "--from-beginning", "--timeout-ms", "3000"),
    ).stdout.splitlines()
    assert sorted(everything) == sorted([*lines, "v", "v2", "keyless", "o1"])
    grouped = run(
        *("consume", "--include", "oth.*", "--group", "g-include", "--from-beginning"),
        *("--max-messages", "1", "--timeout-ms", "20000"),
    )
    assert grouped.stdout == "o1\n"
    as_properties = run(  # Kafka's console consumer takes these as --group/--from-beginning
        *("consume", "other", "--consumer-property", "group.id=g-properties"),
        *("--consumer-property", "auto.offset.reset=earliest"),
        *("--max-messages", "1", "--timeout-ms", "20000"),
    )
    assert as_properties.stdout == "o1\n"
    assert "no topic matches --include 'nothing.*'" in (
        run("consume", "--include", "nothing.*", "--timeout-ms", "1000", rc=1).stderr
    )
    assert "give a TOPIC or --include REGEX" in run("consume", rc=2).stderr
    assert "is not a regular expression" in run("consume", "--include", "(", rc=2).stderr

    nowhere = run("produce", "lines", "--partition", "7", input="x\n", rc=1)
    assert "has no partition 7 (its partitions are 0..2)" in nowhere.stderr

    unreachable = run("--bootstrap-server", "127.0.0.1:1", "topics", "list", rc=1)
    assert "127.0.0.1:1" in unreachable.stderr

    run("topics", "delete", "lines")
    assert "lines" not in run("topics", "list").stdout.splitlines()

    down = run("cluster", "down").stdout
    assert down.count("stopped (pid") == 4
    for entry in _processes(state):
        assert not _ours(entry)
    assert "stopped" in run("cluster", "status", rc=1).stderr


def _rows(output: str) -> list[list[str]]:
    """The data rows of a plain (tab-separated, header first) table; a describe's
    per-topic lines after it are left out."""
    return [
        line.split("\t")
        for line in output.splitlines()[1:]
        if line and not line.startswith("Topic: ")
    ]


def _until(probe: Callable[[], Any], check: Callable[[Any], bool], timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"never reached; last: {value}"
        time.sleep(0.2)  # a synchronous test polling a subprocess: no event loop to block


def test_replicated_topics_under_replication_and_preferred_leaders(run: Headwater) -> None:
    run("cluster", "up")
    run("topics", "create", "orders", "--partitions", "3", "--replication-factor", "3")
    describe = lambda *flags: _rows(run("topics", "describe", "orders", *flags).stdout)  # noqa: E731
    _until(describe, lambda rows: all(r[4].count(",") == 2 for r in rows))
    assert describe("--under-replicated") == []
    state = load_state(run.folder / ".headwater")
    assert state is not None
    victim = state.brokers[0]
    assert victim.pid is not None and _ours(victim)
    os.kill(victim.pid, signal.SIGKILL)
    under = _until(lambda: describe("--under-replicated"), lambda rows: len(rows) == 3)
    assert all(str(victim.broker_id) not in r[4].split(",") for r in under)
    assert describe("--unavailable") == []  # two replicas left in sync: all still led
    # at min.insync.replicas=2 (one more loss stops acks=all), not under it
    run("topics", "alter", "orders", "--config", "min.insync.replicas=2")
    assert len(describe("--at-min-isr-partitions")) == 3
    assert describe("--under-min-isr-partitions") == []
    assert re.fullmatch(
        r"Topic: orders\tTopicId: [\w-]{22}\tConfigs: min.insync.replicas=2\n",
        run("topics", "describe", "--topics-with-overrides").stdout,
    )
    run("topics", "alter", "orders", "--delete-config", "min.insync.replicas")
    run("cluster", "up")  # completes the cluster: the killed broker comes back
    _until(lambda: describe("--under-replicated"), lambda rows: rows == [], timeout_s=60)
    elected = run("topics", "elect-leaders", "orders").stdout
    assert "3 of 3 partitions led by their preferred replica" in elected
    # every topic: only partitions that needed an election are counted (Kafka's answer)
    everything = run("topics", "elect-leaders").stdout
    assert "partitions moved back to their preferred replica;" in everything
    assert "the others were led by it already" in everything
    rows = describe()
    assert all(r[2] == r[3].split(",")[0] for r in rows)  # leader == first replica
    _partitions_move(run)


def _partitions_move(run: Headwater) -> None:
    """`reassign-partitions` as Kafka's tool is used: --generate, --execute a plan moving
    each partition to the next broker, --verify until done, --list, --cancel."""
    run("topics", "create", "moves", "--partitions", "2", "--replication-factor", "1")
    lines = [f"m{i}" for i in range(40)]
    run("produce", "moves", input="\n".join(lines) + "\n")
    (run.folder / "topics.json").write_text('{"version":1,"topics":[{"topic":"moves"}]}')
    generated = run(
        "reassign-partitions",
        "--generate",
        "--topics-to-move-json-file",
        "topics.json",
        "--broker-list",
        "1,2,3",
    ).stdout.splitlines()
    assert generated[0] == "Current partition replica assignment"
    current = json.loads(generated[1])["partitions"]
    assert generated[3] == "Proposed partition reassignment configuration"
    proposed = json.loads(generated[4])["partitions"]
    assert [(p["topic"], p["partition"], len(p["replicas"])) for p in proposed] == [
        ("moves", 0, 1),
        ("moves", 1, 1),
    ]
    plan = {
        "version": 1,
        "partitions": [
            {**p, "replicas": [p["replicas"][0] % 3 + 1]}
            for p in current  # the next broker
        ],
    }
    (run.folder / "plan.json").write_text(json.dumps(plan))
    started = run("reassign-partitions", "--execute", "--reassignment-json-file", "plan.json")
    assert json.loads(started.stdout.splitlines()[2])["partitions"] == current  # for rollback
    assert "Successfully started partition reassignments for moves-0,moves-1" in started.stdout

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, "reassign-partitions", "--verify", "--reassignment-json-file", "plan.json"],
            cwd=run.folder,
            capture_output=True,
            text=True,
            timeout=60,
            env=run.env,
            check=False,
        )

    done = _until(verify, lambda v: v.returncode == 0)
    assert "Reassignment of partition moves-1 is completed." in done.stdout
    rows = _rows(run("topics", "describe", "moves").stdout)
    assert [r[3] for r in rows] == [str(p["replicas"][0]) for p in plan["partitions"]]
    described = json.loads(run("log-dirs", "--describe", "--topic-list", "moves").stdout)
    where = {
        p["partition"]: b["broker"]
        for b in described["brokers"]
        for d in b["logDirs"]
        for p in d["partitions"]
    }
    assert where == {f"moves-{p['partition']}": p["replicas"][0] for p in plan["partitions"]}
    listed = run("reassign-partitions", "--list").stdout
    assert listed == "No partition reassignments found.\n"
    cancelled = run("reassign-partitions", "--cancel", "--reassignment-json-file", "plan.json")
    assert "moves-0 was not being reassigned." in cancelled.stdout
    consumed = run(
        "consume", "moves", "--from-beginning", "--max-messages", "40", "--timeout-ms", "10000"
    ).stdout.splitlines()
    assert sorted(consumed) == sorted(lines)
    (run.folder / "bad.json").write_text('{"version":1,"partitions":[{"topic":"moves"}]}')
    bad = run("reassign-partitions", "--execute", "--reassignment-json-file", "bad.json", rc=1)
    assert 'partitions[0] needs a "partition" number' in bad.stderr
    (run.folder / "far.json").write_text(
        '{"version":1,"partitions":[{"topic":"moves","partition":0,"replicas":[9]}]}'
    )
    far = run("reassign-partitions", "--execute", "--reassignment-json-file", "far.json", rc=1)
    assert "broker 9 is not alive" in far.stderr and "INVALID_REPLICA_ASSIGNMENT" in far.stderr
