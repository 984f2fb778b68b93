"""The machine's own limits, measured in the same run: what no system here can beat.

- Loopback TCP: two processes, one streaming 1 MiB ``sendall`` buffers over a
  127.0.0.1 connection, the other ``recv_into`` a preallocated buffer. Both sides are
  single Python calls per MiB, so this is the kernel's copy rate, not Python's.
- Relay latency: the floor of any end-to-end row. A value stamped with the send time goes
  from this process over loopback TCP to a relay process (Python on uvloop, a protocol
  that writes what it reads to a second connection, nothing else) and back to this
  process, at the e2e rate, paced and timed as the systems' e2e rows are. Two hops and
  three Python processes' wake-ups, as producer -> broker -> consumer: what is left of an
  e2e row above it is the system's own work (and its clients').
- ``os.write`` to the data disk (the directory the servers' data lives in): 1 MiB
  writes into the page cache, and the same followed by one ``fsync`` (the time to make
  it all durable). Best of two rounds each, with a ``sync`` before each so neither pays
  for the other's writeback. And once more after a pause, as a workload's first write
  comes: on a VM that gives freed memory back to its host, several times slower.
- A Python store: the ceiling under the broker-alone rows. A store process (Python on
  uvloop) reads length-prefixed 1 MiB frames straight into one reused buffer, checks each
  one's CRC32C, writes it (``os.write``) to a file on the data disk and answers 4 bytes; this
  process sends them, 5 in flight, as ``bench broker`` does. The same copies and checksum
  as a broker taking 1 MiB batches, with nothing else done: best of two rounds of a
  gigabyte, the file unlinked in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import uvloop
from crc32c import crc32c

from bench.compare.servers import Unavailable
from bench.compare.workloads import LatencyProbe, Sizes, paced_latencies, run_async

__all__ = [
    "disk_write_idle_mb_s",
    "disk_write_mb_s",
    "loopback_gb_s",
    "relay_latency_us",
    "store_gb_s",
]

_CHUNK = 1024 * 1024


def _stream_to(port: int, total: int) -> None:
    """The sending process: ``total`` bytes to 127.0.0.1:``port``."""
    buffer = os.urandom(_CHUNK)
    with socket.create_connection(("127.0.0.1", port)) as connection:
        sent = 0
        while sent < total:
            connection.sendall(buffer)
            sent += len(buffer)


def loopback_gb_s(total_bytes: int) -> float:
    """GB/s (10^9) of one TCP stream between two processes over 127.0.0.1."""
    context = multiprocessing.get_context("spawn")  # nothing of this process is inherited
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(30)
        sender = context.Process(
            target=_stream_to, args=(listener.getsockname()[1], total_bytes), daemon=True
        )
        sender.start()
        try:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(30)
                buffer = memoryview(bytearray(_CHUNK))
                received = connection.recv_into(buffer)
                started = time.perf_counter()  # from the first byte: not the spawn
                while received < total_bytes:
                    count = connection.recv_into(buffer)
                    if count == 0:
                        break
                    received += count
                elapsed = time.perf_counter() - started
        finally:
            sender.join(10)
            if sender.is_alive():
                sender.kill()
                sender.join()
    return received / elapsed / 1e9


def _write(path: Path, total: int, fsync: bool) -> float:
    buffer = os.urandom(_CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        started = time.perf_counter()
        written = 0
        while written < total:
            written += os.write(fd, buffer)
        if fsync:
            os.fsync(fd)
        return written / (time.perf_counter() - started) / 1e6
    finally:
        os.close(fd)
        path.unlink()


def disk_write_idle_mb_s(directory: Path, total_bytes: int, pause_s: float = 5.0) -> float:
    """MB/s (10^6) of 1 MiB ``os.write`` calls into the page cache after ``pause_s`` of
    rest: the first write of a workload that follows a pause. Where the machine gives its
    free memory back to a host (a VM with free page reporting hands it over ~2 s after it
    is freed), each new page is faulted back in from the host, and this is several times
    slower than the rounds right after each other of :func:`disk_write_mb_s`."""
    os.sync()
    time.sleep(pause_s)
    return _write(directory / "raw-write.bin", total_bytes, fsync=False)


def disk_write_mb_s(directory: Path, total_bytes: int, rounds: int = 2) -> tuple[float, float]:
    """(page cache, with fsync at the end) MB/s (10^6) of 1 MiB ``os.write`` calls."""
    cached = synced = 0.0
    for _ in range(rounds):
        os.sync()
        cached = max(cached, _write(directory / "raw-write.bin", total_bytes, fsync=False))
        os.sync()
        synced = max(synced, _write(directory / "raw-write.bin", total_bytes, fsync=True))
    return cached, synced


class _Relay(asyncio.Protocol):
    """Writes what its connection sends to the sink: the connection that said ``SINK``."""

    def __init__(self, sinks: list[asyncio.Transport]) -> None:
        self.sinks = sinks
        self.first = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.first and data == _SINK:
            self.sinks.append(self.transport)
        elif self.sinks:
            self.sinks[0].write(data)
        self.first = False


_SINK = b"SINK"


def _serve(factory: Callable[[], asyncio.BaseProtocol], ready: Connection) -> None:
    """In a child process: serves ``factory``'s protocol on a free loopback port (sent on
    ``ready``) until killed."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", 0)
        ready.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    uvloop.run(serve())


@contextlib.contextmanager
def _child(target: Callable[..., None], *args: object) -> Iterator[int]:
    """Runs ``target(*args, ready)`` in a fresh process (nothing of this one inherited);
    yields the port it serves on, and kills it on the way out."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=False)
    child = context.Process(target=target, args=(*args, theirs), daemon=True)
    child.start()
    try:
        if not ours.poll(30):
            raise Unavailable(f"the {target.__name__.strip('_')} process did not start")
        yield ours.recv()
    finally:
        child.kill()
        child.join(10)


def _relay(ready: Connection) -> None:
    """The relay process."""
    sinks: list[asyncio.Transport] = []
    _serve(lambda: _Relay(sinks), ready)


class _Sink(asyncio.Protocol):
    """Cuts what arrives into values of ``size`` bytes for the probe."""

    def __init__(self, probe: LatencyProbe, size: int) -> None:
        self.probe, self.size = probe, size
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        whole = len(data) - len(data) % self.size
        for at in range(0, whole, self.size):
            self.probe.received(data[at : at + self.size])
        self.pending = data[whole:]


async def _through_relay(port: int, sizes: Sizes) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    probe = LatencyProbe(sizes.record_bytes)
    sink, _ = await loop.create_connection(
        lambda: _Sink(probe, sizes.record_bytes), "127.0.0.1", port
    )
    sink.write(_SINK)
    source, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        await asyncio.sleep(0.1)  # the relay has read SINK before the first value

        async def send(value: bytes) -> None:
            source.write(value)

        return await paced_latencies(send, probe, sizes)
    finally:
        source.close()
        sink.close()


def relay_latency_us(sizes: Sizes) -> tuple[float, float]:
    """(p50, p99) us of 2 loopback hops through a relay process (see the module doc)."""
    with _child(_relay) as port:
        return run_async(asyncio.wait_for(_through_relay(port, sizes), 60))


_FRAME = struct.Struct(">I")
_STORED = b"\x00\x00\x00\x00"


class _Store(asyncio.BufferedProtocol):
    """One connection of the store: each frame read into one buffer (no copy in Python),
    its CRC32C taken, written to the connection's file, answered."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"store-{os.getpid()}-{id(self)}.bin"
        self.fd = -1
        self.head = memoryview(bytearray(_FRAME.size))
        self.frame = memoryview(bytearray(_CHUNK))
        self.have = 0
        self.size = -1  # the frame's length, -1 while its prefix is short

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError:
            self.transport.abort()  # the feeder sees the close: the row is n/a, not a hang

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.size < 0:
            return self.head[self.have :]
        return self.frame[self.have : self.size]

    def buffer_updated(self, nbytes: int) -> None:
        self.have += nbytes
        if self.size < 0:
            if self.have == _FRAME.size:
                (self.size,) = _FRAME.unpack(self.head)
                self.have = 0
                if self.size > len(self.frame):
                    self.frame = memoryview(bytearray(self.size))
            return
        if self.have < self.size:
            return
        payload = self.frame[: self.size]
        crc32c(payload)
        written = 0
        while written < self.size:
            written += os.write(self.fd, payload[written:])
        self.transport.write(_STORED)
        self.have, self.size = 0, -1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.path.unlink()


def _store(directory: Path, ready: Connection) -> None:
    """The store process."""
    _serve(lambda: _Store(directory), ready)


class _Feeder(asyncio.Protocol):
    """Sends ``count`` 1 MiB frames, ``in_flight`` unanswered at a time."""

    def __init__(self, count: int, in_flight: int, done: asyncio.Future[float]) -> None:
        self.frame = _FRAME.pack(_CHUNK) + os.urandom(_CHUNK)
        self.count, self.in_flight, self.done = count, in_flight, done
        self.sent = self.answered = self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.started = time.perf_counter()
        for _ in range(self.in_flight):
            self.send()

    def send(self) -> None:
        if self.sent < self.count:
            self.sent += 1
            self.transport.write(self.frame)

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.pending >= len(_STORED):
            self.pending -= len(_STORED)
            self.answered += 1
            if self.answered == self.count and not self.done.done():
                self.done.set_result(time.perf_counter() - self.started)
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(Unavailable(f"the store closed the connection ({exc})"))


async def _feed(port: int, total: int, in_flight: int) -> float:
    loop = asyncio.get_running_loop()
    count = max(1, total // _CHUNK)
    done: asyncio.Future[float] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: _Feeder(count, in_flight, done), "127.0.0.1", port
    )
    try:
        elapsed = await asyncio.wait_for(done, 120)
    finally:
        transport.close()
    return count * _CHUNK / elapsed / 1e9


def store_gb_s(directory: Path, total_bytes: int, rounds: int = 2, in_flight: int = 5) -> float:
    """GB/s (10^9) of 1 MiB frames into a Python store process (see the module doc)."""
    with _child(_store, directory) as port:
        best = 0.0
        for _ in range(rounds):
            os.sync()
            best = max(best, run_async(_feed(port, total_bytes, in_flight)))
            deadline = time.monotonic() + 10
            while any(directory.glob("store-*.bin")) and time.monotonic() < deadline:
                time.sleep(0.01)  # its file is unlinked when the store sees the close
        return best
