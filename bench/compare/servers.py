"""The peers' servers, started by the bench on loopback and killed by pid afterwards.

Never the system services Debian's packages install: each server here is the package's
binary run directly with its own port (free on 127.0.0.1), its own files in a temporary
directory, no persistence it was not asked for, and its output in a log file there.

Lifecycle: :class:`ServerProcess` is a context manager; ``__exit__`` kills the process by
the pid it was given (SIGTERM, SIGKILL after a grace period) even when the body raised,
and :func:`scratch_directory` removes its directory the same way. A server that cannot be
found or started raises :class:`Unavailable` with a short reason, which the table shows as
``n/a (reason)``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Self

from client.localcluster import free_port, terminate

__all__ = [
    "NatsServer",
    "RedisServer",
    "ServerProcess",
    "Unavailable",
    "find_binary",
    "free_port",
    "raise_open_files_limit",
    "rss_mb",
    "scratch_directory",
]

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class Unavailable(Exception):
    """A system could not be installed, started or measured; ``str()`` is the short why."""


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` stops its servers."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def find_binary(name: str) -> str:
    """The path of ``name`` on PATH or in an sbin (Debian puts nats-server in /usr/sbin)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if found is None:
        raise Unavailable(f"{name} not installed")
    return found


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (10^6 bytes), from ``/proc/<pid>/status`` VmRSS."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise Unavailable(f"no VmRSS for pid {pid}")


def raise_open_files_limit(wanted: int) -> None:
    """Lift this process's soft RLIMIT_NOFILE (children inherit it) up to ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def scratch_directory(prefix: str, parent: str | None = None) -> Iterator[Path]:
    """A temporary directory (under ``parent``: the data disk), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll until 127.0.0.1:``port`` accepts a connection (or the process exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"exited at start with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)  # a synchronous start-up poll, never on an event loop
    raise Unavailable(f"not listening on port {port} after {timeout_s:.0f} s")


class ServerProcess:
    """One server binary on 127.0.0.1:``port``, its files under ``directory``.

    Started in its own session (a Ctrl-C meant for the bench reaches it only through
    :meth:`stop`); stopped by its own pid only.
    """

    name = "server"

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise Unavailable(f"{self.name} is not running")
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 20.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = list(self.command())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,
            )
        try:
            wait_listening(self.port, self.process, timeout_s)
        except Unavailable as exc:
            self.stop()
            raise Unavailable(f"{self.name} {exc}: {self._log_tail()}") from None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM by pid, SIGKILL after ``timeout_s``; idempotent."""
        process, self.process = self.process, None
        if process is not None:
            terminate(process, timeout_s)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][-160:] if lines else "empty log"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(ServerProcess):
    """``redis-server`` with no persistence (Kafka-like: page cache, replication for
    durability); ``replica_of`` makes it a replica of another one's port."""

    name = "redis"

    def __init__(self, directory: Path, port: int = 0, replica_of: int | None = None) -> None:
        super().__init__(directory, port)
        self.replica_of = replica_of

    def command(self) -> Sequence[str]:
        argv = [
            find_binary("redis-server"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--maxclients",
            "10000",
            "--protected-mode",
            "no",
        ]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return argv


class NatsServer(ServerProcess):
    """``nats-server`` with JetStream on file storage under ``directory``.

    A config file, since the command line cannot raise ``max_payload`` (1 MiB by default:
    the 1 MiB-batch workload needs a little more) nor name the server for a cluster.
    ``routes`` (the other members' cluster ports) make it one of a JetStream cluster.
    """

    name = "nats"

    def __init__(
        self,
        directory: Path,
        port: int = 0,
        *,
        server_name: str = "n1",
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
    ) -> None:
        super().__init__(directory, port)
        self.server_name = server_name
        self.cluster_port = cluster_port
        self.routes = list(routes)

    def command(self) -> Sequence[str]:
        store = self.directory / "jetstream"
        config = [
            f"server_name: {self.server_name}",
            "host: 127.0.0.1",
            f"port: {self.port}",
            "max_payload: 4MB",
            "max_pending: 256MB",
            f'jetstream {{ store_dir: "{store}" }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats://127.0.0.1:{p}" for p in self.routes)
            config.append(
                f"cluster {{ name: bench, host: 127.0.0.1, port: {self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        path = self.directory / "nats.conf"
        path.write_text("\n".join(config) + "\n")
        return [find_binary("nats-server"), "-c", str(path)]
