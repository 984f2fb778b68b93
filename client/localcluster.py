"""Local clusters on loopback: a private ZooKeeper (and, with issue 4, broker processes).

Used by ``headwater cluster up`` and by the integration tests. Everything runs on
127.0.0.1 with free ports under one directory, and is stopped by the pid it was given.

ZooKeeper comes from Debian's ``zookeeper`` package (the Makefile installs it). Its
``zkServer.sh`` insists on ``/etc/zookeeper/conf`` and system log directories, so we start
``QuorumPeerMain`` ourselves with our own ``zoo.cfg`` (DESIGN.md "ZooKeeper"). Readiness
is the ``srvr`` four-letter word reporting ``Mode:``: ZooKeeper 3.8 can accept a client in
the first ~30 ms without ever answering it (ZOOKEEPER-5051), so ``ruok`` or an open port is
not enough.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from protocol.errors import HeadwaterError

__all__ = [
    "BrokerProcess",
    "BrokerStartError",
    "ZooKeeperError",
    "ZooKeeperServer",
    "free_port",
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


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int:
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
    """One standalone ZooKeeper on 127.0.0.1, its data and log under ``directory``.

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
    ) -> None:
        self.directory = Path(directory)
        self.port = port
        self.tick_time_ms = tick_time_ms
        self.heap_mb = heap_mb
        self.java = java
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connect_string(self) -> str:
        return f"127.0.0.1:{self.port}"

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
        raise ZooKeeperError(f"ZooKeeper did not start on 127.0.0.1 (see {self.log_path})")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; only our own process."""
        process, self.process = self.process, None
        if process is not None:
            _terminate(process, timeout_s)

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
            "clientPortAddress=127.0.0.1\n"
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
                if "Mode:" in four_letter_word("127.0.0.1", self.port, "srvr"):
                    return self.process.poll() is None
            time.sleep(0.05)  # a synchronous start-up poll, never on an event loop
        return False


class BrokerProcess:
    """One ``headwater-broker`` process on loopback, its files under ``directory``.

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
    ) -> None:
        self.broker_id = broker_id
        self.directory = Path(directory)
        self.zookeeper_connect = zookeeper_connect
        self.settings = settings or {}
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self.port = -1

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
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = {
            "broker.id": str(self.broker_id),
            "listeners": "PLAINTEXT://127.0.0.1:0",
            "zookeeper.connect": self.zookeeper_connect,
            "log.dirs": str(self.directory / "data"),
            **self.settings,
        }
        args = [self.python, "-m", "broker"]
        for name, value in settings.items():
            args += ["--set", f"{name}={value}"]
        with self.log_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.port = self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text[seen:].splitlines(keepends=True):
                if not line.endswith("\n"):
                    break
                seen += len(line)
                event = _json_line(line)
                if event.get("event") == "broker.ready":
                    return int(str(event["port"]))
            assert self.process is not None
            if self.process.poll() is not None:
                reason = self.stderr_path.read_text(errors="replace").strip().splitlines()
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
        return 0 if process is None else _terminate(process, timeout_s)

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
