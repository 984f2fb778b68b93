"""The machine's own limits, measured in the same run: what no system here can beat.

- Loopback TCP: two processes, one streaming 1 MiB ``sendall`` buffers over a
  127.0.0.1 connection, the other ``recv_into`` a preallocated buffer. Both sides are
  single Python calls per MiB, so this is the kernel's copy rate, not Python's.
- ``os.write`` to the data disk (the directory the servers' data lives in): 1 MiB
  writes into the page cache, and the same followed by one ``fsync`` (the time to make
  it all durable). Best of two rounds each, with a ``sync`` before each so neither pays
  for the other's writeback.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from pathlib import Path

__all__ = ["disk_write_mb_s", "loopback_gb_s"]

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


def disk_write_mb_s(directory: Path, total_bytes: int, rounds: int = 2) -> tuple[float, float]:
    """(page cache, with fsync at the end) MB/s (10^6) of 1 MiB ``os.write`` calls."""
    cached = synced = 0.0
    for _ in range(rounds):
        os.sync()
        cached = max(cached, _write(directory / "raw-write.bin", total_bytes, fsync=False))
        os.sync()
        synced = max(synced, _write(directory / "raw-write.bin", total_bytes, fsync=True))
    return cached, synced
