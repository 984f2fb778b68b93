"""Partition log throughput beside the disk's own: what the storage engine costs.

Appends 16 KiB batches (leader path: header + CRC check, offset/epoch patch, writev) and
writes the same bytes with a bare ``os.write`` loop to the same directory in the same
run; the ratio is the figure that counts. Reads walk the log with ``Log.read`` in 1 MiB
fetches (header scan + pread), as a consumer fetch would.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from broker.log import FetchData, Log, LogConfig
from protocol.records import encode_batch

BATCH_BYTES = 16 * 1024
TOTAL_BYTES = 256 * 1024 * 1024


def _batch() -> bytes:
    value = os.urandom(100)
    records = [(None, value, None, 1_700_000_000_000 + i) for i in range(BATCH_BYTES // 108)]
    return encode_batch(records)


def _raw_write(path: Path, batch: bytes, count: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    start = time.perf_counter()
    for _ in range(count):
        os.write(fd, batch)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return elapsed


def _log_append(directory: Path, batch: bytes, count: int) -> tuple[float, Log]:
    log = Log.open(directory / "bench-0", LogConfig(segment_bytes=64 * 1024 * 1024))
    start = time.perf_counter()
    for _ in range(count):
        log.append(batch, leader_epoch=1)
    return time.perf_counter() - start, log


def _log_read(log: Log) -> tuple[float, int]:
    start = time.perf_counter()
    offset, read_bytes = 0, 0
    while (data := log.read(offset, 1024 * 1024)) is not None:
        read_bytes += len(data.read())
        offset = _next(data)
    return time.perf_counter() - start, read_bytes


def run(directory: Path, rounds: int = 2) -> list[tuple[str, float, float]]:
    """Best of ``rounds``, alternating raw and log on fresh files with a sync between,
    so neither pays for the other's page-cache writeback."""
    batch = _batch()
    count = TOTAL_BYTES // len(batch)
    raw = append = read = float("inf")
    read_bytes = 0
    for _ in range(rounds):
        raw = min(raw, _raw_write(directory / "raw.bin", batch, count))
        (directory / "raw.bin").unlink()
        os.sync()
        elapsed, log = _log_append(directory, batch, count)
        append = min(append, elapsed)
        elapsed, read_bytes = _log_read(log)
        read = min(read, elapsed)
        log.delete()
        os.sync()
    size = count * len(batch)
    return [
        ("raw os.write, same disk", size / raw / 1e6, count / raw),
        ("Log.append (leader)", size / append / 1e6, count / append),
        ("Log.read (1 MiB fetches)", read_bytes / read / 1e6, count / read),
    ]


def _next(data: FetchData) -> int:
    last = None
    for header in data.segment.headers(data.position, data.position + data.size):
        last = header
    assert last is not None
    return last.next_offset


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="headwater-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        rows = run(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(
        f"\n## Partition log — {BATCH_BYTES // 1024} KiB batches, "
        f"{TOTAL_BYTES // (1024 * 1024)} MiB, page cache (no fsync), {directory.parent}\n"
    )
    print("| operation | MB/s | batches/s |")
    print("|---|---:|---:|")
    for name, mb_s, batches_s in rows:
        print(f"| {name} | {mb_s:,.0f} | {batches_s:,.0f} |")
    raw, append = rows[0][1], rows[1][1]
    print(f"\nLog.append reaches {append / raw:.0%} of the raw os.write rate.")


if __name__ == "__main__":
    main()
