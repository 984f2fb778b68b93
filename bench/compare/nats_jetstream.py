"""NATS JetStream, the second peer: the same workloads with nats-py.

Equivalents: a file-storage stream on one subject is a partition; produce is
``publish_async`` (acks awaited as futures, up to 4,000 in flight: the client's default
window); consume is a durable pull subscription fetching 1,000 at a time, acking the
last of each batch (AckAll, as a Kafka consumer commits an offset); end-to-end publishes
at the fixed rate to an ordered push consumer, NATS's low-latency path.

"RF=3, acks=all" is a three-server JetStream cluster and a stream of 3 replicas: a
publish is acknowledged once the stream's Raft group has it at a quorum (2 of 3), and
consumers see only what is committed. JetStream does not fsync each write by default
(``sync_interval`` 2 min), like Kafka and Headwater.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bench.compare.servers import NatsServer, Unavailable, free_port, rss_mb
from bench.compare.table import Cell
from bench.compare.workloads import (
    LatencyProbe,
    Sizes,
    open_idle_connections,
    paced_latencies,
    record,
    run_sections,
    timed_out,
    two_rounds,
)

__all__ = ["NAME", "run"]

NAME = "NATS JetStream"
_CHUNK = 1_000
_READY_S = 60.0
_CONNECT_HELLO = b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n'

T = TypeVar("T")


def _nats() -> Any:
    try:
        import nats  # noqa: PLC0415 - the bench extra
    except ImportError:
        raise Unavailable("nats-py missing: pip install -e '.[bench]'") from None
    return nats


def _api() -> Any:
    """``nats.js.api`` (stream and consumer settings), or Unavailable if nats-py is not."""
    _nats()
    from nats.js import api  # noqa: PLC0415

    return api


async def _connect(ports: list[int], max_pending: int = 4_000) -> tuple[Any, Any]:
    nats = _nats()
    connection = await nats.connect(
        servers=[f"nats://127.0.0.1:{p}" for p in ports],
        allow_reconnect=False,
        connect_timeout=5,
        pending_size=64 * 1024 * 1024,
    )
    return connection, connection.jetstream(timeout=30, publish_async_max_pending=max_pending)


async def _retrying(step: Callable[[], Awaitable[T]], what: str) -> T:
    """``step`` until it works: a new JetStream cluster elects its leaders for a while."""
    deadline = time.monotonic() + _READY_S
    while True:
        try:
            return await step()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"{what}: {type(exc).__name__} {exc}") from None
            await asyncio.sleep(0.2)


async def _stream(connection: Any, name: str, replicas: int = 1) -> None:
    """Create the stream, waiting (in short tries) for a new cluster's JetStream."""
    impatient = connection.jetstream(timeout=2)  # one try must not use up the whole wait
    await _retrying(impatient.account_info, "JetStream not ready")
    await _retrying(
        lambda: impatient.add_stream(
            name=name, subjects=[name], storage=_api().StorageType.FILE, num_replicas=replicas
        ),
        f"stream {name} not created",
    )


async def produce(ports: list[int], subject: str, sizes: Sizes, replicas: int = 1) -> float:
    """Records/s of publish_async with acks, all acknowledged."""
    value = os.urandom(sizes.record_bytes)
    connection, js = await _connect(ports)
    try:
        await _stream(connection, subject, replicas)
        sent = 0
        started = time.perf_counter()
        while sent < sizes.produce_records and not timed_out(started, sizes):
            for _ in range(_CHUNK):
                await js.publish_async(subject, value)
            sent += _CHUNK
        await js.publish_async_completed()
        elapsed = time.perf_counter() - started
        stored = (await js.stream_info(subject)).state.messages
        if stored < sent:
            raise Unavailable(f"only {stored} of {sent} publishes stored")
        return sent / elapsed
    finally:
        await connection.close()


async def consume(ports: list[int], subject: str, sizes: Sizes) -> float:
    """Records/s of a pull subscription fetching 1,000 at a time, from the start."""
    connection, js = await _connect(ports)
    try:
        expected = (await js.stream_info(subject)).state.messages
        api = _api()
        config = api.ConsumerConfig(ack_policy=api.AckPolicy.ALL, max_ack_pending=100_000)
        pull = await js.pull_subscribe(subject, durable="bench", stream=subject, config=config)
        got = 0
        started = time.perf_counter()
        while got < expected and not timed_out(started, sizes):
            messages = await pull.fetch(batch=min(1_000, expected - got), timeout=5)
            got += len(messages)
            await messages[-1].ack()
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    if got == 0:
        raise Unavailable("fetch returned nothing")
    return got / elapsed


async def end_to_end(
    ports: list[int], subject: str, sizes: Sizes, replicas: int = 1
) -> tuple[float, float]:
    """(p50, p99) us from publish to an ordered push consumer's callback."""
    probe = LatencyProbe(sizes.record_bytes)
    connection, js = await _connect(ports)
    try:
        await _stream(connection, subject, replicas)

        async def on_message(message: Any) -> None:
            probe.received(message.data)

        await js.subscribe(
            subject, ordered_consumer=True, deliver_policy=_api().DeliverPolicy.NEW, cb=on_message
        )

        async def send(value: bytes) -> None:
            await js.publish_async(subject, value)

        return await paced_latencies(send, probe, sizes)
    finally:
        await connection.close()


async def big_values(ports: list[int], subject: str, sizes: Sizes, in_flight: int = 4) -> float:
    """GB/s of 1 MiB publishes, ``in_flight`` unacknowledged at a time; the stream is
    deleted at the end."""
    value = os.urandom(sizes.big_batch_bytes)
    connection, js = await _connect(ports, max_pending=in_flight)
    try:
        await _stream(connection, subject)
        await (await js.publish_async(subject, value))  # warm: the stream's first block
        count = max(in_flight, sizes.big_total_bytes // len(value))
        sent = 0
        started = time.perf_counter()
        while sent < count and not timed_out(started, sizes):
            await js.publish_async(subject, value)
            sent += 1
        await js.publish_async_completed()
        elapsed = time.perf_counter() - started
        await js.delete_stream(subject)
    finally:
        await connection.close()
    return sent * len(value) / elapsed / 1e9


async def idle_footprint(server: NatsServer, sizes: Sizes) -> float:
    """Server RSS (MB) with ``partitions`` file streams of one record, idle connections."""
    connection, js = await _connect([server.port])
    try:
        value = os.urandom(sizes.record_bytes)
        for stream in range(sizes.partitions):
            await _stream(connection, f"idle-{stream}")
            await js.publish(f"idle-{stream}", value)
    finally:
        await connection.close()
    writers = await open_idle_connections(
        server.port, sizes.idle_connections, _CONNECT_HELLO, b"PONG\r\n"
    )
    try:
        await asyncio.sleep(1.0)
        return rss_mb(server.pid)
    finally:
        for writer in writers:
            writer.close()


@contextlib.contextmanager
def _cluster(directory: Path, size: int) -> Iterator[list[NatsServer]]:
    """``size`` servers routed to each other: one JetStream cluster."""
    cluster_ports = [free_port() for _ in range(size)]
    servers = [
        NatsServer(
            directory / f"n{i + 1}",
            server_name=f"n{i + 1}",
            cluster_port=port,
            routes=[p for p in cluster_ports if p != port],
        )
        for i, port in enumerate(cluster_ports)
    ]
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        yield servers


def _single(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with NatsServer(directory) as server:
        ports = [server.port]
        record(results, ("produce_rf1",), sizes, lambda: produce(ports, "produce", sizes))
        record(results, ("consume",), sizes, lambda: consume(ports, "produce", sizes))
        record(
            results, ("e2e_rf1_p50", "e2e_rf1_p99"), sizes, lambda: end_to_end(ports, "e2e", sizes)
        )
        record(
            results,
            ("big_gbs", "big_gbs_first"),
            sizes,
            lambda: two_rounds(lambda n: big_values(ports, f"big-{n}", sizes)),
        )


def _replicated(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with _cluster(directory, 3) as servers:
        ports = [s.port for s in servers]
        record(results, ("produce_rf3",), sizes, lambda: produce(ports, "produce", sizes, 3))
        record(
            results,
            ("e2e_rf3_p50", "e2e_rf3_p99"),
            sizes,
            lambda: end_to_end(ports, "e2e", sizes, 3),
        )


def _memory(sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
    with NatsServer(directory) as server:
        record(results, ("rss_mb",), sizes, lambda: idle_footprint(server, sizes))


def run(sizes: Sizes, directory: Path) -> dict[str, Cell]:
    """Every metric of the matrix for NATS JetStream; what fails is n/a, with why."""
    return run_sections(
        sizes, directory, {"single": _single, "replicated": _replicated, "memory": _memory}
    )
