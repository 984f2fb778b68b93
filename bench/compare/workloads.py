"""What every system under comparison runs, and the helpers they share.

The standard matrix (issue 8), one set of :class:`Sizes` for a full run and one for a
``BENCH_QUICK=1`` smoke run. Each system (Headwater, Redis Streams, NATS JetStream)
measures the same metrics, named by the keys in :data:`METRICS`, and returns a mapping
from key to a number or :class:`~bench.compare.table.NotAvailable`.

End-to-end latency is measured the same way for all of them (:class:`LatencyProbe`,
:func:`paced_latencies`): the first 8 bytes of each 100-byte value are the send time
(``perf_counter_ns``, CLOCK_MONOTONIC, so it compares across processes too); the
consumer subtracts it from its receive time. Sends are paced at a fixed rate against the
clock: every timer tick (uvloop's are 1 ms) sends the records that are due, so a slow
send is caught up on rather than stretching the schedule.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from bench.compare.servers import Unavailable
from bench.compare.table import Cell, NotAvailable

__all__ = [
    "FULL",
    "METRICS",
    "QUICK",
    "SECTIONS",
    "LatencyProbe",
    "Section",
    "Sizes",
    "measure",
    "open_idle_connections",
    "paced_latencies",
    "percentile",
    "record",
    "run_async",
    "run_sections",
    "timed_out",
    "two_rounds",
]

T = TypeVar("T")

METRICS = (
    "produce_rf1",  # rec/s, 1 node, acks=1 (or the peer's nearest equivalent)
    "produce_rf3",  # rec/s, 3 nodes, 3 replicas, acks=all
    "consume",  # rec/s, 1 consumer reading what produce_rf1 wrote
    "e2e_rf1_p50",  # us at the fixed rate, 1 node, acks=1
    "e2e_rf1_p99",
    "e2e_rf3_p50",  # us at the fixed rate, 3 replicas, acks=all
    "e2e_rf3_p99",
    "big_gbs",  # GB/s (10^9) of 1 MiB batches into one node, the client encoding nothing
    "big_gbs_first",  # the first of big_gbs's two rounds: new memory, as after a pause
    "rss_mb",  # MB (10^6) resident with `partitions` partitions and `idle_connections`
)


SECTIONS = {
    "single": ("produce_rf1", "consume", "e2e_rf1_p50", "e2e_rf1_p99", "big_gbs", "big_gbs_first"),
    "replicated": ("produce_rf3", "e2e_rf3_p50", "e2e_rf3_p99"),
    "memory": ("rss_mb",),
}
"""Each system runs its metrics in three sections, each on servers of its own: one node;
three nodes with three replicas; a fresh node for the idle footprint."""

Section = Callable[["Sizes", Path, dict[str, Cell]], None]


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much of each workload to run; every loop is also bounded in time."""

    produce_records: int
    e2e_seconds: float
    e2e_warmup_seconds: float
    big_total_bytes: int
    partitions: int
    idle_connections: int
    disk_bytes: int
    loopback_bytes: int
    record_bytes: int = 100
    e2e_rate: int = 5_000
    big_batch_bytes: int = 1024 * 1024
    max_seconds: float = 30.0  # any one throughput loop stops here and reports its rate
    workload_timeout_s: float = 180.0  # a hung workload becomes n/a, not a hung bench


FULL = Sizes(
    produce_records=1_000_000,
    e2e_seconds=10.0,
    e2e_warmup_seconds=1.0,
    big_total_bytes=1024 * 1024 * 1024,
    partitions=1_000,
    idle_connections=1_000,
    disk_bytes=1024 * 1024 * 1024,
    loopback_bytes=4 * 1024 * 1024 * 1024,
)

QUICK = Sizes(
    produce_records=20_000,
    e2e_seconds=1.0,
    e2e_warmup_seconds=0.2,
    big_total_bytes=32 * 1024 * 1024,
    partitions=50,
    idle_connections=50,
    disk_bytes=64 * 1024 * 1024,
    loopback_bytes=256 * 1024 * 1024,
    max_seconds=5.0,
    workload_timeout_s=60.0,
)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a fresh uvloop loop: every system's client gets the same loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Unavailable):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def measure(results: dict[str, Cell], keys: Iterable[str], work: Callable[[], None]) -> None:
    """Run ``work`` (which fills ``results``); on failure, the keys it did not fill become
    n/a with the reason, and the run goes on. Ctrl-C still stops the bench."""
    try:
        work()
    except Exception as exc:
        for key in keys:
            results.setdefault(key, NotAvailable(_reason(exc)))


def run_sections(sizes: Sizes, directory: Path, sections: Mapping[str, Section]) -> dict[str, Cell]:
    """Run each section (by :data:`SECTIONS` name) in ``directory/<name>``; a section that
    fails leaves its metrics n/a with the reason, and the next one runs."""
    results: dict[str, Cell] = {}
    for name, keys in SECTIONS.items():
        section = sections[name]
        measure(results, keys, functools.partial(section, sizes, directory / name, results))
    return results


def record(
    results: dict[str, Cell],
    keys: tuple[str, ...],
    sizes: Sizes,
    make: Callable[[], Coroutine[Any, Any, float | tuple[float, ...]]],
) -> None:
    """Run one workload coroutine on a fresh loop, bounded by ``sizes.workload_timeout_s``,
    into ``results[keys]`` (a tuple result fills several keys); on failure, n/a."""

    def work() -> None:
        value = run_async(asyncio.wait_for(make(), sizes.workload_timeout_s))
        values = value if isinstance(value, tuple) else (value,)
        results.update(zip(keys, values, strict=True))

    measure(results, keys, work)


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class LatencyProbe:
    """Stamps values with their send time; collects one latency per value received."""

    def __init__(self, record_bytes: int) -> None:
        assert record_bytes >= 8
        self._pad = os.urandom(record_bytes - 8)
        self.samples: list[tuple[int, int]] = []  # (send ns, latency ns)
        self._expected = 2**62
        self._complete = asyncio.Event()

    def value(self) -> bytes:
        return time.perf_counter_ns().to_bytes(8, "big") + self._pad

    def received(self, value: bytes) -> None:
        sent = int.from_bytes(value[:8], "big")
        self.samples.append((sent, time.perf_counter_ns() - sent))
        if len(self.samples) >= self._expected:
            self._complete.set()

    async def wait_for(self, count: int, timeout_s: float) -> None:
        """Until ``count`` values have arrived; raises Unavailable after ``timeout_s``."""
        self._expected = count
        if len(self.samples) < count:
            self._complete.clear()
            try:
                await asyncio.wait_for(self._complete.wait(), timeout_s)
            except TimeoutError:
                raise Unavailable(f"only {len(self.samples)} of {count} records arrived") from None

    def summary(self, after_ns: int) -> tuple[float, float]:
        """p50 and p99 in microseconds of the values sent after ``after_ns``."""
        latencies = sorted(lat for sent, lat in self.samples if sent >= after_ns)
        if not latencies:
            raise Unavailable("no records arrived after the warm-up")
        return percentile(latencies, 0.50) / 1e3, percentile(latencies, 0.99) / 1e3


async def paced_latencies(
    send: Callable[[bytes], Awaitable[object]],
    probe: LatencyProbe,
    sizes: Sizes,
) -> tuple[float, float]:
    """Send at ``sizes.e2e_rate`` for warm-up + measured seconds (the receiver runs as its
    own task, feeding ``probe``); wait for the last arrivals; return (p50, p99) in us."""
    rate = sizes.e2e_rate
    total = int(rate * (sizes.e2e_warmup_seconds + sizes.e2e_seconds))
    start_ns = time.perf_counter_ns()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter_ns() - start_ns) * rate / 1e9) + 1)
        while sent < due:
            await send(probe.value())
            sent += 1
        await asyncio.sleep(0.001)
    await probe.wait_for(sent, timeout_s=10.0)
    return probe.summary(start_ns + int(sizes.e2e_warmup_seconds * 1e9))


async def two_rounds(one_round: Callable[[int], Awaitable[float]]) -> tuple[float, float]:
    """(best, first) of two rounds of a 1 MiB workload, each writing into a stream of its
    own that it deletes at its end: measured as the raw ``os.write`` limit is (best of
    two rounds, the file unlinked in between), so the second round writes into the memory
    the first one freed. The first round's figure is kept as well: on a VM that hands
    freed memory back to its host it is the first gigabyte after a pause."""
    first = await one_round(1)
    second = await one_round(2)
    return max(first, second), first


async def open_idle_connections(
    port: int, count: int, hello: bytes, until: bytes
) -> list[asyncio.StreamWriter]:
    """``count`` connections to 127.0.0.1:``port``, each having sent ``hello`` and read up
    to ``until`` (a real client handshake, so the server keeps them), then left idle.
    The caller closes them."""
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(hello)
        await reader.readuntil(until)

    try:
        for start in range(0, count, 100):  # bursts the servers' accept backlogs take
            await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    except BaseException:
        for writer in writers:
            writer.close()
        raise
    return writers


def timed_out(started: float, sizes: Sizes) -> bool:
    """True once a throughput loop has run ``sizes.max_seconds``."""
    return time.perf_counter() - started >= sizes.max_seconds
