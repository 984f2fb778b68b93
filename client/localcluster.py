"""Local clusters on loopback: a private ZooKeeper and broker processes.

Used by ``headwater cluster up|status|down`` and by the integration tests. Everything runs
on 127.0.0.1 with free ports under one directory, and is stopped by the pid it was given.

ZooKeeper comes from Debian's ``zookeeper`` package (the Makefile installs it). Its
``zkServer.sh`` insists on ``/etc/zookeeper/conf`` and system log directories, so we start
``QuorumPeerMain`` ourselves with our own ``zoo.cfg`` (DESIGN.md "ZooKeeper"). Readiness
is the ``srvr`` four-letter word reporting ``Mode:``: ZooKeeper 3.8 can accept a client in
the first ~30 ms without ever answering it (ZOOKEEPER-5051), so ``ruok`` or an open port is
not enough.

:class:`LocalCluster` is the cluster that outlives the command that started it: its
processes run in their own sessions, and ``<directory>/cluster.json`` records what was
started (pids, ports, directories) so a later command can find, check and stop it. A
recorded pid is only ever signalled after checking that it is still the process we
started (its start time and command line in ``/proc``), never a reused pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from client.connection import BrokerConnection
from protocol.apis import ApiKey, MetadataRequest, MetadataResponse
from protocol.errors import HeadwaterError

__all__ = [
    "DEFAULT_DIRECTORY",
    "STATE_FILE",
    "BrokerEntry",
    "BrokerProcess",
    "BrokerStartError",
    "ClusterState",
    "ClusterStatus",
    "LocalCluster",
    "LocalClusterError",
    "UpResult",
    "ZooKeeperEntry",
    "ZooKeeperError",
    "ZooKeeperServer",
    "fetch_metadata",
    "free_port",
    "is_our_process",
    "load_state",
    "recorded_bootstrap",
    "terminate",
]

ZOOKEEPER_JARS = (
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
)
_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"


class ZooKeeperError(HeadwaterError):
    """A private ZooKeeper could not be started or stopped."""


def free_port() -> int:
    """A port free on 127.0.0.1 now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, SIGKILL if it is still there after ``timeout_s``; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def four_letter_word(host: str, port: int, word: str, timeout_s: float = 1.0) -> str:
    """Send a ZooKeeper four-letter word; returns the answer ('' if none)."""
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(word.encode())
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    """One standalone ZooKeeper on 127.0.0.1 (or ``host``), its data and log under
    ``directory``.

    ``tick_time_ms`` sets the session timeout floor (2 ticks): 500 ms lets fault tests
    expire sessions in about a second; production deployments keep ZooKeeper's defaults.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        port: int = 0,
        tick_time_ms: int = 500,
        heap_mb: int = 256,
        java: str = "java",
        host: str = "127.0.0.1",
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.tick_time_ms = tick_time_ms
        self.heap_mb = heap_mb
        self.java = java
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connect_string(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.directory / "zookeeper.log"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start and wait until it serves.

        A port of 0 picks a free one (and another if it is taken before ZooKeeper binds
        it); a given port that is taken is an error: a readiness probe cannot tell our
        ZooKeeper from whatever else answers there.
        """
        self._check_installed()
        chosen = self.port
        if chosen and not _port_is_free(chosen):
            raise ZooKeeperError(f"port {chosen} on 127.0.0.1 is taken; choose another, or 0")
        for _attempt in range(3):
            self.port = chosen or free_port()
            self._spawn()
            if self._wait_serving(timeout_s):
                return
            self.stop()
        raise ZooKeeperError(f"ZooKeeper did not start on {self.host} (see {self.log_path})")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; only our own process."""
        process, self.process = self.process, None
        if process is not None:
            terminate(process, timeout_s)

    def __enter__(self) -> ZooKeeperServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_installed(self) -> None:
        missing = [jar for jar in ZOOKEEPER_JARS if not Path(jar).exists()]
        if missing or shutil.which(self.java) is None:
            what = ", ".join(missing) if missing else f"the {self.java!r} command"
            raise ZooKeeperError(
                f"ZooKeeper is not installed ({what} missing); run `make run` once, or "
                f"`apt-get install zookeeper`"
            )

    def _spawn(self) -> None:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        (self.directory / "zoo.cfg").write_text(
            f"tickTime={self.tick_time_ms}\n"
            f"dataDir={data}\n"
            f"clientPort={self.port}\n"
            f"clientPortAddress={self.host}\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,srvr,stat,mntr\n"
            "maxClientCnxns=0\n"
        )
        (self.directory / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, CONSOLE\n"
            "log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p %c{1}: %m%n\n"
        )
        classpath = os.pathsep.join([str(self.directory), *ZOOKEEPER_JARS])
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.java,
                    f"-Xmx{self.heap_mb}m",
                    "-XX:+UseSerialGC",
                    "-Dzookeeper.jmx.log4j.disable=true",
                    "-cp",
                    classpath,
                    _MAIN,
                    str(self.directory / "zoo.cfg"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the caller's terminal is not for it
            )

    def _wait_serving(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False  # it exited: most likely the port was taken
            with contextlib.suppress(OSError):
                if "Mode:" in four_letter_word(self.host, self.port, "srvr"):
                    return self.process.poll() is None
            time.sleep(0.05)  # a synchronous start-up poll, never on an event loop
        return False


class BrokerProcess:
    """One ``headwater-broker`` process on loopback (or ``host``, in network namespace
    ``netns``: fault tests that cut links), its files under ``directory``.

    Ready when it logs ``broker.ready`` (with its bound port); never by sleeping.
    """

    def __init__(
        self,
        broker_id: int,
        directory: Path | str,
        zookeeper_connect: str,
        *,
        settings: dict[str, str] | None = None,
        python: str = sys.executable,
        host: str = "127.0.0.1",
        netns: str | None = None,
        config_file: Path | None = None,
    ) -> None:
        """``config_file``: given with ``--config`` (TOML, or Kafka's server.properties);
        ``settings`` are given with ``--set``, over it."""
        self.broker_id = broker_id
        self.config_file = config_file
        self.host = host
        self.netns = netns
        self.directory = Path(directory)
        self.zookeeper_connect = zookeeper_connect
        self.settings = settings or {}
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self.port = -1
        self.ports: dict[str, int] = {}
        """Each listener's advertised port, by name (``port``: the first listener's)."""
        self._log_offset = self._stderr_offset = 0  # where this run's output starts

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.directory / "broker.log"

    @property
    def stderr_path(self) -> Path:
        return self.directory / "broker.stderr"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Spawn and wait until it is ready."""
        self.spawn()
        self.port = self._wait_ready(timeout_s)

    def spawn(self) -> None:
        """Start the process without waiting (several brokers then start in parallel)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = {
            "broker.id": str(self.broker_id),
            "listeners": f"PLAINTEXT://{self.host}:0",
            "zookeeper.connect": self.zookeeper_connect,
            "log.dirs": str(self.directory / "data"),
            **self.settings,
        }
        # (`ip netns exec` execs the broker: the pid is the broker's own, for kill and pause)
        args = ["ip", "netns", "exec", self.netns] if self.netns else []
        args += [self.python, "-m", "broker"]
        if self.config_file is not None:
            args += ["--config", str(self.config_file)]
        for name, value in settings.items():
            args += ["--set", f"{name}={value}"]
        with self.log_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self._log_offset, self._stderr_offset = out.tell(), err.tell()
            self.process = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait for ``broker.ready`` after :meth:`spawn`; sets :attr:`port`."""
        self.port = self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> int:
        # Only what this run wrote counts: the files are appended to across restarts, and
        # an earlier run's ``broker.ready`` carries an earlier port.
        deadline = time.monotonic() + timeout_s
        seen = self._log_offset
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(seen)
                text = log.read()
            for line in text.splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    break
                seen += len(line)
                event = _json_line(line.decode(errors="replace"))
                if event.get("event") == "broker.ready":
                    listeners = event.get("listeners")
                    if isinstance(listeners, dict):
                        self.ports = {str(n): int(str(p)) for n, p in listeners.items()}
                    return int(str(event["port"]))
            assert self.process is not None
            if self.process.poll() is not None:
                with self.stderr_path.open("rb") as err:
                    err.seek(self._stderr_offset)
                    reason = err.read().decode(errors="replace").strip().splitlines()
                raise BrokerStartError(
                    reason[-1] if reason else f"broker {self.broker_id} exited at start",
                    self.process.returncode,
                )
            time.sleep(0.05)  # a synchronous start-up poll, never on an event loop
        self.kill()
        raise BrokerStartError(f"broker {self.broker_id} not ready in {timeout_s:.0f} s", -1)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a clean stop) and wait; returns the exit code."""
        process, self.process = self.process, None
        return 0 if process is None else terminate(process, timeout_s)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class BrokerStartError(HeadwaterError):
    """A broker process exited or never became ready; ``returncode`` says how."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def _json_line(line: str) -> dict[str, object]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- a cluster that outlives the command: `headwater cluster up|status|down` --------------

DEFAULT_DIRECTORY = ".headwater"
STATE_FILE = "cluster.json"
_STATE_FORMAT = 1
_HOST = "127.0.0.1"

LOCAL_BROKER_SETTINGS = {"zookeeper.session.timeout.ms": "6000"}
"""A killed broker's registration lapses in 6 s (Kafka's default, 18 s, is capped at 10 s
by our ZooKeeper's tickTime=500 anyway), so ``cluster up`` after a crash need not wait."""

_REGISTERED_ELSEWHERE = "is already registered by a live broker"
"""The broker's own words when its id is held: after a crash, by a session ZooKeeper has
not expired yet (ZooKeeper restores sessions from its snapshot and expires them later)."""


_NO_ZOOKEEPER_GRACE_S = 5.0
"""How long a broker whose ZooKeeper is gone gets to stop before SIGKILL: it cannot
deregister, and today's broker does not exit on SIGTERM without ZooKeeper at all."""


class LocalClusterError(HeadwaterError):
    """A local cluster could not be started, found, checked or stopped."""


def _running_process(pid: int) -> tuple[int, list[str]] | None:
    """``(start time in clock ticks since boot, argv)`` of a live pid; None if none.

    A zombie counts as gone: it has exited, its parent just has not reaped it. Without
    ``/proc`` (not Linux) ``ps`` answers and the start time is unknown (0).
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return _running_process_ps(pid)
    try:
        stat = (proc / str(pid) / "stat").read_text()
        argv = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so cut at the
    # last ')'; the start time is field 22 of proc(5), the 20th after the comm
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19]), argv.decode(errors="replace").split("\0")[:-1]


def _running_process_ps(pid: int) -> tuple[int, list[str]] | None:
    found = subprocess.run(
        ["ps", "-o", "stat=,args=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not found or found.startswith("Z"):
        return None
    return 0, found.split()[1:]  # split at spaces: a path with a space never matches (safe)


def is_our_process(pid: int, start_ticks: int, markers: tuple[str, ...]) -> bool:
    """Whether ``pid`` is still the process we started: same start time, same arguments.

    ``markers`` are arguments of its command line that only our process has (the path of
    its data directory or its config file); ``start_ticks`` 0 means unknown.
    """
    found = _running_process(pid)
    if found is None:
        return False
    ticks, argv = found
    if start_ticks and ticks and ticks != start_ticks:
        return False  # the pid was reused by a process started later
    return all(marker in argv for marker in markers)


def _start_ticks(pid: int) -> int:
    found = _running_process(pid)
    return found[0] if found else 0


def _listen_port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now: bound as servers bind, with
    SO_REUSEADDR, so connections of a stopped broker in TIME_WAIT do not count."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
    return True


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (else its parent or init does)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclass(slots=True)
class ZooKeeperEntry:
    """The cluster's ZooKeeper: ours (``directory`` set) or external (not ours to stop)."""

    connect: str
    directory: Path | None = None
    pid: int | None = None
    start_ticks: int = 0

    @property
    def external(self) -> bool:
        return self.directory is None

    @property
    def markers(self) -> tuple[str, ...]:
        assert self.directory is not None
        return (_MAIN, str(self.directory / "zoo.cfg"))

    @property
    def port(self) -> int:
        return int(self.connect.split("/")[0].rsplit(":", 1)[1])

    def running(self) -> bool | None:
        """Whether our ZooKeeper runs; None for an external one (not ours to watch)."""
        if self.external:
            return None
        return self.pid is not None and is_our_process(self.pid, self.start_ticks, self.markers)


@dataclass(slots=True)
class BrokerEntry:
    """One broker process of the cluster; ``port`` -1 until it has listened once."""

    broker_id: int
    directory: Path
    port: int = -1
    pid: int | None = None
    start_ticks: int = 0
    kafka_port: int = -1
    """Its Kafka-protocol listener (for Kafka's own clients); -1 until it has listened."""

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def kafka_address(self) -> str:
        return f"{_HOST}:{self.kafka_port}"

    @property
    def markers(self) -> tuple[str, ...]:
        return ("broker", f"log.dirs={self.directory / 'data'}")  # BrokerProcess's arguments

    def running(self) -> bool:
        return self.pid is not None and is_our_process(self.pid, self.start_ticks, self.markers)


@dataclass(slots=True)
class ClusterState:
    """What ``cluster.json`` records. Its JSON (``format`` 1)::

        {"format": 1, "bootstrap_servers": "127.0.0.1:40001,...",
         "kafka_bootstrap_servers": "127.0.0.1:40011,...",
         "zookeeper": {"connect": "127.0.0.1:2181", "external": false,
                       "directory": "/abs/.headwater/zookeeper", "pid": 41, "start_ticks": 9},
         "brokers": [{"id": 1, "host": "127.0.0.1", "port": 40001, "pid": 42,
                      "start_ticks": 9, "directory": "/abs/.headwater/broker-1",
                      "kafka_port": 40011}, ...]}

    ``pid`` is null for a process that is stopped; ports are kept, so the next
    ``cluster up`` reuses them when they are free and the bootstrap servers stay the same.
    """

    zookeeper: ZooKeeperEntry
    brokers: list[BrokerEntry] = field(default_factory=list)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(b.address for b in self.brokers if b.port > 0)

    @property
    def kafka_bootstrap_servers(self) -> str:
        """Where Kafka's own clients connect (each broker's Kafka-protocol listener)."""
        return ",".join(b.kafka_address for b in self.brokers if b.kafka_port > 0)

    def to_json(self) -> dict[str, Any]:
        zk = self.zookeeper
        return {
            "format": _STATE_FORMAT,
            "bootstrap_servers": self.bootstrap_servers,
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "zookeeper": {
                "connect": zk.connect,
                "external": zk.external,
                "directory": None if zk.directory is None else str(zk.directory),
                "pid": zk.pid,
                "start_ticks": zk.start_ticks,
            },
            "brokers": [
                {
                    "id": b.broker_id,
                    "host": _HOST,
                    "port": b.port,
                    "pid": b.pid,
                    "start_ticks": b.start_ticks,
                    "directory": str(b.directory),
                    "kafka_port": b.kafka_port,
                }
                for b in self.brokers
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> ClusterState:
        """Raises KeyError, TypeError or ValueError for anything we did not write."""
        if data["format"] != _STATE_FORMAT:
            raise ValueError(f"format {data['format']!r}, expected {_STATE_FORMAT}")
        zk = data["zookeeper"]
        zookeeper = ZooKeeperEntry(
            connect=str(zk["connect"]),
            directory=None if zk["external"] else Path(zk["directory"]),
            pid=_optional_int(zk["pid"]),
            start_ticks=int(zk["start_ticks"]),
        )
        brokers = [
            BrokerEntry(
                broker_id=int(b["id"]),
                directory=Path(b["directory"]),
                port=int(b["port"]),
                pid=_optional_int(b["pid"]),
                start_ticks=int(b["start_ticks"]),
                kafka_port=int(b.get("kafka_port", -1)),  # absent: recorded before it existed
            )
            for b in data["brokers"]
        ]
        return cls(zookeeper, brokers)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def load_state(directory: Path | str) -> ClusterState | None:
    """The cluster recorded in ``directory``; None if there is none."""
    path = Path(directory) / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LocalClusterError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return ClusterState.from_json(json.loads(text))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise LocalClusterError(
            f"{path} is not a cluster record this Headwater wrote ({type(exc).__name__}: "
            f"{exc}); move it away, or pass --bootstrap-server"
        ) from None


def recorded_bootstrap(directory: Path | str) -> str | None:
    """The bootstrap servers recorded in ``directory``/cluster.json, if any."""
    state = load_state(directory)
    if state is None:
        return None
    if not state.bootstrap_servers:
        raise LocalClusterError(
            f"the cluster recorded in {Path(directory) / STATE_FILE} never started a broker; "
            f"run `headwater cluster up`"
        )
    return state.bootstrap_servers


async def fetch_metadata(
    host: str, port: int, topics: list[str] | None = None, *, timeout_s: float = 5.0
) -> MetadataResponse:
    """One Metadata request to one broker (``topics`` None: all topics, []: none)."""
    async with BrokerConnection(host, port, request_timeout_ms=int(timeout_s * 1000)) as conn:
        response: MetadataResponse = await conn.request(
            ApiKey.METADATA, MetadataRequest(topics=topics, allow_auto_topic_creation=False)
        )
        return response


async def _cluster_metadata(
    addresses: list[tuple[str, int]], timeout_s: float
) -> tuple[MetadataResponse | None, str]:
    """Metadata from the first broker that answers, or None and why none did."""
    why = "no broker to ask"
    for host, port in addresses:
        try:
            return await fetch_metadata(host, port, [], timeout_s=timeout_s), ""
        except (HeadwaterError, OSError) as exc:
            why = str(exc)
    return None, why


async def _await_controller(
    addresses: list[tuple[str, int]], broker_ids: set[int], timeout_s: float
) -> MetadataResponse:
    """Ask until every broker of ``broker_ids`` is registered and a controller is elected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        metadata, why = await _cluster_metadata(addresses, timeout_s=2.0)
        if metadata is not None:
            registered = {b.node_id for b in metadata.brokers}
            if broker_ids <= registered and metadata.controller_id in registered:
                return metadata
            why = f"registered brokers {sorted(registered)}, controller {metadata.controller_id}"
        if loop.time() > deadline:
            raise LocalClusterError(
                f"the brokers did not form a cluster within {timeout_s:.0f} s ({why})"
            )
        await asyncio.sleep(0.1)


@dataclass(slots=True)
class ClusterStatus:
    """What runs of a recorded cluster, and what its brokers say (Metadata)."""

    state: ClusterState
    zookeeper_running: bool | None  # None: an external ZooKeeper
    brokers_running: dict[int, bool]
    metadata: MetadataResponse | None
    metadata_error: str = ""

    @property
    def registered(self) -> set[int]:
        return {b.node_id for b in self.metadata.brokers} if self.metadata else set()

    @property
    def controller_id(self) -> int:
        return self.metadata.controller_id if self.metadata else -1

    @property
    def healthy(self) -> bool:
        """Every process runs, every broker is registered, a controller is elected."""
        ids = {b.broker_id for b in self.state.brokers}
        return (
            self.zookeeper_running is not False
            and all(self.brokers_running.values())
            and ids <= self.registered
            and self.controller_id in self.registered
        )

    @property
    def stopped(self) -> bool:
        """Nothing of ours runs."""
        return not self.zookeeper_running and not any(self.brokers_running.values())


@dataclass(slots=True)
class UpResult:
    """What ``up`` did: ``started`` all, ``repaired`` what was down, or found it ``running``."""

    outcome: Literal["started", "repaired", "running"]
    state: ClusterState
    metadata: MetadataResponse


class LocalCluster:
    """A cluster on loopback recorded in ``<directory>/cluster.json``.

    Lifecycle: :meth:`up` starts a private ZooKeeper (unless given one) and N brokers in
    their own sessions (they outlive the caller and ignore its terminal's Ctrl-C), records
    them, and waits for registration and a controller; :meth:`status` checks the recorded
    pids and asks a broker for Metadata; :meth:`down` stops brokers (SIGTERM: a clean,
    deregistering stop), then ZooKeeper. Data stays under the directory, so the next
    :meth:`up` resumes the same cluster (same id, same topics, the same ports if free).

    Synchronous, for a command line: it waits with ``time.sleep`` and runs its network
    checks with ``asyncio.run``; never call it from a running event loop. Not safe for two
    commands on one directory at once.
    """

    def __init__(
        self,
        directory: Path | str = DEFAULT_DIRECTORY,
        *,
        python: str = sys.executable,
        broker_settings: Mapping[str, str] | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.python = python
        self.broker_settings = {**LOCAL_BROKER_SETTINGS, **(broker_settings or {})}
        self.ready_timeout_s = ready_timeout_s

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> ClusterState | None:
        return load_state(self.directory)

    def save(self, state: ClusterState) -> None:
        """Write ``cluster.json`` atomically (a reader never sees half a file)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.state_path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        os.replace(partial, self.state_path)

    def _require_state(self) -> ClusterState:
        state = self.load()
        if state is None:
            raise LocalClusterError(
                f"no cluster is recorded in {self.directory} ({STATE_FILE} is missing); "
                f"start one with `headwater cluster up --dir {self.directory}`"
            )
        return state

    # --- status ---------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        state = self._require_state()
        running = {b.broker_id: b.running() for b in state.brokers}
        addresses = [(_HOST, b.port) for b in state.brokers if running[b.broker_id]]
        metadata, why = (
            asyncio.run(_cluster_metadata(addresses, timeout_s=5.0))
            if addresses
            else (None, "no broker process is running")
        )
        return ClusterStatus(state, state.zookeeper.running(), running, metadata, why)

    # --- up -------------------------------------------------------------------------

    def up(self, brokers: int | None = None, zookeeper: str | None = None) -> UpResult:
        """Start the cluster, or finish starting it, or find it running (idempotent).

        ``brokers`` / ``zookeeper`` None: as recorded (3 brokers and a private ZooKeeper
        for a new cluster). Changing either while anything still runs is refused.
        """
        if brokers is not None and brokers < 1:
            raise LocalClusterError(f"--brokers {brokers}: a cluster needs at least 1 broker")
        state = self.load()
        if state is not None:
            zk_running = state.zookeeper.running()
            running = {b.broker_id: b.running() for b in state.brokers}
            if zk_running or any(running.values()):
                self._refuse_reshape(state, brokers, zookeeper)
                if zk_running is not False and all(running.values()):
                    return UpResult("running", state, self._wait_formed(state))
                if zk_running is False:  # brokers without their ZooKeeper: start over
                    self._stop_brokers(state, timeout_s=_NO_ZOOKEEPER_GRACE_S)
                    state.zookeeper.pid = None
                return UpResult("repaired", state, self._start(state))
        if zookeeper is None and state is not None and state.zookeeper.external:
            zookeeper = state.zookeeper.connect  # as recorded
        if zookeeper is not None:
            zk_entry = ZooKeeperEntry(connect=zookeeper)
        else:
            old_port = state.zookeeper.port if state and not state.zookeeper.external else 0
            zk_entry = ZooKeeperEntry(
                connect=f"{_HOST}:{old_port}", directory=self.directory / "zookeeper"
            )
        count = brokers or (len(state.brokers) if state else 3)
        old = {b.broker_id: b for b in state.brokers} if state else {}
        new_state = ClusterState(
            zk_entry,
            [
                old.get(i) or BrokerEntry(broker_id=i, directory=self.directory / f"broker-{i}")
                for i in range(1, count + 1)
            ],
        )
        return UpResult("started", new_state, self._start(new_state))

    def _refuse_reshape(self, state: ClusterState, brokers: int | None, zk: str | None) -> None:
        if brokers is not None and brokers != len(state.brokers):
            raise LocalClusterError(
                f"a {len(state.brokers)}-broker cluster is recorded in {self.directory} and "
                f"still running; stop it with `headwater cluster down` to start one of "
                f"{brokers} brokers"
            )
        if zk is not None and zk != state.zookeeper.connect:
            raise LocalClusterError(
                f"the cluster recorded in {self.directory} runs on ZooKeeper "
                f"{state.zookeeper.connect}; stop it with `headwater cluster down` first"
            )

    def _start(self, state: ClusterState) -> MetadataResponse:
        """Start whatever of ``state`` is not running; on any failure stop what it started."""
        started_zk: ZooKeeperServer | None = None
        started: list[tuple[BrokerEntry, BrokerProcess]] = []
        try:
            zk = state.zookeeper
            if not zk.external and not zk.running():
                started_zk = self._start_zookeeper(zk)
                self.save(state)
            for entry in state.brokers:
                if not entry.running():
                    self._spawn_broker(entry, zk.connect, started)
            self.save(state)  # recorded before waiting: an interrupted `up` can be undone
            self._wait_brokers(started, zk.connect)
            self.save(state)
            return self._wait_formed(state)
        except BaseException:
            for entry, process in started:
                process.stop(timeout_s=10.0)
                entry.pid = None
            if started_zk is not None:
                started_zk.stop()
                state.zookeeper.pid = None
            self.save(state)
            raise

    def _start_zookeeper(self, entry: ZooKeeperEntry) -> ZooKeeperServer:
        assert entry.directory is not None
        # the check ZooKeeperServer makes of a given port (a taken one is an error there)
        port = entry.port if entry.port and _port_is_free(entry.port) else 0
        server = ZooKeeperServer(entry.directory, port=port)
        try:
            server.start()
        except BaseException:  # Ctrl-C while it starts: it is not recorded yet
            server.stop()
            raise
        assert server.pid is not None
        entry.connect, entry.pid = server.connect_string, server.pid
        entry.start_ticks = _start_ticks(server.pid)
        return server

    def _spawn_broker(
        self,
        entry: BrokerEntry,
        zookeeper_connect: str,
        started: list[tuple[BrokerEntry, BrokerProcess]],
    ) -> None:
        """Spawn on the recorded port if it is free (stable bootstrap servers), else any.

        Added to ``started`` before it is spawned, so an interruption never loses it.
        """
        port = entry.port if entry.port > 0 and _listen_port_free(entry.port) else 0
        kafka = entry.kafka_port
        kafka = kafka if kafka > 0 and kafka != port and _listen_port_free(kafka) else 0
        process = BrokerProcess(
            entry.broker_id,
            entry.directory,
            zookeeper_connect,
            settings={
                **self.broker_settings,
                # Headwater's listener first (the inter-broker one), then Kafka's own
                # protocol for Kafka's clients (kafka-python, aiokafka, confluent-kafka)
                "listeners": f"PLAINTEXT://{_HOST}:{port},KAFKA://{_HOST}:{kafka}",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,KAFKA:PLAINTEXT",
                "kafka.protocol.listeners": "KAFKA",
            },
            python=self.python,
        )
        started.append((entry, process))
        process.spawn()
        assert process.pid is not None
        entry.pid, entry.start_ticks = process.pid, _start_ticks(process.pid)

    def _wait_brokers(
        self, started: list[tuple[BrokerEntry, BrokerProcess]], zookeeper_connect: str
    ) -> None:
        session_s = int(self.broker_settings["zookeeper.session.timeout.ms"]) / 1000
        retry_until = time.monotonic() + session_s + 4.0
        for entry, process in started:
            while True:
                try:
                    process.wait_ready(self.ready_timeout_s)
                    break
                except BrokerStartError as exc:
                    if _REGISTERED_ELSEWHERE not in str(exc) or time.monotonic() > retry_until:
                        raise LocalClusterError(
                            f"broker {entry.broker_id} did not start: {exc} "
                            f"(its log: {process.log_path})"
                        ) from None
                # our own id, held by a session from before a crash: it expires soon
                time.sleep(0.5)  # a synchronous start-up poll, never on an event loop
                process.spawn()
                assert process.pid is not None
                entry.pid, entry.start_ticks = process.pid, _start_ticks(process.pid)
            entry.port = process.port
            entry.kafka_port = process.ports.get("KAFKA", -1)

    def _wait_formed(self, state: ClusterState) -> MetadataResponse:
        addresses = [(_HOST, b.port) for b in state.brokers]
        ids = {b.broker_id for b in state.brokers}
        return asyncio.run(_await_controller(addresses, ids, self.ready_timeout_s))

    # --- down -----------------------------------------------------------------------

    def down(self, timeout_s: float = 30.0) -> list[str]:
        """Stop the brokers (SIGTERM, SIGKILL after ``timeout_s``), then our ZooKeeper.

        Returns one line per process saying what happened. Only pids recorded here and
        verified to still be our processes are signalled.
        """
        state = self._require_state()
        report = self._stop_brokers(state, timeout_s)
        zk = state.zookeeper
        if zk.external:
            report.append(f"zookeeper {zk.connect}: external, left running")
        else:
            report += _stop_processes([(f"zookeeper {zk.connect}", zk)], timeout_s=10.0)
            zk.pid = None
        self.save(state)
        return report

    def _stop_brokers(self, state: ClusterState, timeout_s: float) -> list[str]:
        if state.zookeeper.running() is False:  # a clean stop needs ZooKeeper: do not wait
            timeout_s = min(timeout_s, _NO_ZOOKEEPER_GRACE_S)
        report = _stop_processes(
            [(f"broker {b.broker_id} {b.address}", b) for b in state.brokers], timeout_s
        )
        for broker in state.brokers:
            broker.pid = None
        return report


def _stop_processes(
    entries: list[tuple[str, ZooKeeperEntry | BrokerEntry]], timeout_s: float
) -> list[str]:
    """SIGTERM each verified process, wait for all, SIGKILL what is left; report lines."""
    report: dict[str, str] = {}
    waiting: list[tuple[str, int, ZooKeeperEntry | BrokerEntry]] = []
    for name, entry in entries:
        pid = entry.pid
        if pid is None:
            report[name] = "not running"
        elif not is_our_process(pid, entry.start_ticks, entry.markers):
            report[name] = f"not running (pid {pid} has exited; nothing signalled)"
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            waiting.append((name, pid, entry))
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        time.sleep(0.05)  # a synchronous poll: these are not our children to wait for
        for name, pid, entry in list(_gone(waiting)):
            report[name] = f"stopped (pid {pid})"
            waiting.remove((name, pid, entry))
    for name, pid, entry in waiting:
        if is_our_process(pid, entry.start_ticks, entry.markers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        report[name] = f"killed (pid {pid} ignored SIGTERM for {timeout_s:.0f} s)"
    deadline = time.monotonic() + 5.0  # SIGKILL is not refused, but takes a moment
    while waiting and time.monotonic() < deadline:
        time.sleep(0.05)
        for gone in list(_gone(waiting)):
            waiting.remove(gone)
    for name, pid, _ in waiting:
        report[name] = f"still running after SIGKILL (pid {pid}); check `ps -p {pid}`"
    return [f"{name}: {report[name]}" for name, _ in entries]


def _gone(
    waiting: list[tuple[str, int, ZooKeeperEntry | BrokerEntry]],
) -> Iterator[tuple[str, int, ZooKeeperEntry | BrokerEntry]]:
    for name, pid, entry in waiting:
        _reap(pid)
        if not is_our_process(pid, entry.start_ticks, entry.markers):
            yield name, pid, entry
