"""Redis Streams, the first peer: the same workloads with redis-py (hiredis parser).

Equivalents: a stream is a partition; produce is pipelined ``XADD`` (1,000 commands a
round trip, one connection); consume is ``XREAD COUNT 1000`` from the start; end-to-end
is one ``XADD`` per record at the fixed rate and a blocking ``XREAD`` on a second
connection. Redis keeps streams in memory and, run as here (``--save ''``,
``--appendonly no``), writes nothing to disk: that flatters it beside a log on disk.

"RF=3, acks=all" is one primary and two replicas, with ``WAIT 2`` after each pipeline
(after each record in the end-to-end run), whose consumer reads a replica: a record it
sees has reached at least that replica.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench.compare.servers import RedisServer, Unavailable, rss_mb
from bench.compare.table import Cell
from bench.compare.workloads import (
    LatencyProbe,
    Sizes,
    open_idle_connections,
    paced_latencies,
    record,
    run_async,
    run_sections,
    timed_out,
    two_rounds,
)

__all__ = ["NAME", "run"]

NAME = "Redis Streams"
_PIPELINE = 1_000
_FIELD = b"v"


def _client(port: int) -> Any:
    try:
        from redis.asyncio import Redis  # noqa: PLC0415 - the bench extra
        from redis.utils import HIREDIS_AVAILABLE  # noqa: PLC0415
    except ImportError:
        raise Unavailable("redis-py missing: pip install -e '.[bench]'") from None
    if not HIREDIS_AVAILABLE:
        raise Unavailable("hiredis missing: pip install -e '.[bench]'")
    return Redis(host="127.0.0.1", port=port, socket_timeout=60)


async def produce(port: int, key: str, sizes: Sizes, replicas: int = 0) -> float:
    """Records/s of pipelined XADD; with ``replicas``, each pipeline ends in WAIT."""
    value = os.urandom(sizes.record_bytes)
    client = _client(port)
    try:
        sent = 0
        started = time.perf_counter()
        while sent < sizes.produce_records and not timed_out(started, sizes):
            pipe = client.pipeline(transaction=False)
            for _ in range(_PIPELINE):
                pipe.xadd(key, {_FIELD: value})
            if replicas:
                pipe.execute_command("WAIT", replicas, 10_000)
            answers = await pipe.execute()
            if replicas and answers[-1] < replicas:
                raise Unavailable(f"WAIT: only {answers[-1]} of {replicas} replicas acked")
            sent += _PIPELINE
        return sent / (time.perf_counter() - started)
    finally:
        await client.aclose()


async def consume(port: int, key: str, sizes: Sizes) -> float:
    """Records/s of XREAD COUNT 1000 from the start of the stream to its end."""
    client = _client(port)
    try:
        expected = await client.xlen(key)
        got, last = 0, b"0-0"
        started = time.perf_counter()
        while got < expected and not timed_out(started, sizes):
            for _key, entries in await client.xread({key: last}, count=1_000):
                got += len(entries)
                last = entries[-1][0]
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    if got == 0:
        raise Unavailable("XREAD returned nothing")
    return got / elapsed


async def end_to_end(
    port: int, key: str, sizes: Sizes, read_port: int | None = None, replicas: int = 0
) -> tuple[float, float]:
    """(p50, p99) us from XADD to a blocking XREAD's receipt, at ``sizes.e2e_rate``."""
    probe = LatencyProbe(sizes.record_bytes)
    writer, reader = _client(port), _client(read_port or port)

    async def receive() -> None:
        last = b"0-0"
        while True:
            for _key, entries in await reader.xread({key: last}, count=1_000, block=1_000):
                for _id, fields in entries:
                    probe.received(fields[_FIELD])
                last = entries[-1][0]

    async def send(value: bytes) -> None:
        if replicas:
            pipe = writer.pipeline(transaction=False)
            pipe.xadd(key, {_FIELD: value})
            pipe.execute_command("WAIT", replicas, 10_000)
            await pipe.execute()
        else:
            await writer.xadd(key, {_FIELD: value})

    receiver = asyncio.get_running_loop().create_task(receive())
    try:
        return await paced_latencies(send, probe, sizes)
    finally:
        receiver.cancel()
        await writer.aclose()
        await reader.aclose()


async def big_values(port: int, key: str, sizes: Sizes, in_flight: int = 4) -> float:
    """GB/s of XADD with 1 MiB values, ``in_flight`` per pipeline round trip; the stream is
    deleted at the end."""
    value = os.urandom(sizes.big_batch_bytes)
    client = _client(port)
    try:
        await client.xadd(key, {_FIELD: value})  # warm: the key exists, buffers grown
        rounds = max(1, sizes.big_total_bytes // (len(value) * in_flight))
        done = 0
        started = time.perf_counter()
        while done < rounds and not timed_out(started, sizes):
            pipe = client.pipeline(transaction=False)
            for _ in range(in_flight):
                pipe.xadd(key, {_FIELD: value})
            await pipe.execute()
            done += 1
        elapsed = time.perf_counter() - started
        await client.delete(key)
    finally:
        await client.aclose()
    return done * in_flight * len(value) / elapsed / 1e9


async def idle_footprint(server: RedisServer, sizes: Sizes) -> float:
    """Server RSS (MB) with ``partitions`` streams of one record and idle connections."""
    client = _client(server.port)
    try:
        value = os.urandom(sizes.record_bytes)
        pipe = client.pipeline(transaction=False)
        for stream in range(sizes.partitions):
            pipe.xadd(f"idle-{stream}", {_FIELD: value})
        await pipe.execute()
    finally:
        await client.aclose()
    writers = await open_idle_connections(
        server.port, sizes.idle_connections, b"PING\r\n", b"+PONG\r\n"
    )
    try:
        await asyncio.sleep(1.0)
        return rss_mb(server.pid)
    finally:
        for writer in writers:
            writer.close()


async def _wait_replicas(port: int, replicas: int, timeout_s: float = 30.0) -> None:
    client = _client(port)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = await client.info("replication")
            online = [v for k, v in info.items() if k.startswith("slave") and "online" in str(v)]
            if len(online) >= replicas:
                return
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    raise Unavailable(f"{replicas} Redis replicas did not come online in {timeout_s:.0f} s")


def _single(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with RedisServer(directory) as server:
        port = server.port
        record(results, ("produce_rf1",), sizes, lambda: produce(port, "produce", sizes))
        record(results, ("consume",), sizes, lambda: consume(port, "produce", sizes))
        record(
            results, ("e2e_rf1_p50", "e2e_rf1_p99"), sizes, lambda: end_to_end(port, "e2e", sizes)
        )
        record(
            results,
            ("big_gbs", "big_gbs_first"),
            sizes,
            lambda: two_rounds(lambda n: big_values(port, f"big-{n}", sizes)),
        )


def _replicated(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with RedisServer(directory / "primary") as primary:
        port = primary.port
        with (
            RedisServer(directory / "replica-1", replica_of=port),
            RedisServer(directory / "replica-2", replica_of=port) as replica,
        ):
            run_async(_wait_replicas(port, 2))
            record(results, ("produce_rf3",), sizes, lambda: produce(port, "produce", sizes, 2))
            record(
                results,
                ("e2e_rf3_p50", "e2e_rf3_p99"),
                sizes,
                lambda: end_to_end(port, "e2e", sizes, read_port=replica.port, replicas=2),
            )


def _memory(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with RedisServer(directory) as server:
        record(results, ("rss_mb",), sizes, lambda: idle_footprint(server, sizes))


def run(sizes: Sizes, directory: Path) -> dict[str, Cell]:
    """Every metric of the matrix for Redis Streams; what fails is n/a, with why."""
    return run_sections(
        sizes, directory, {"single": _single, "replicated": _replicated, "memory": _memory}
    )
