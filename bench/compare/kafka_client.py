"""Kafka's own client on Headwater: confluent-kafka (librdkafka, C under a Python API)
producing through each broker's Kafka-protocol listener, in one Python process.

What it shows beside Headwater's own produce rows: how much one producer process can
hand the broker when the client is not the bottleneck. The workload is the matrix's
produce: 100-byte records to one partition, batches of 128 KiB, 5 ms linger; idempotent
with acks=all (librdkafka allows it with no other acks).
"""

from __future__ import annotations

import asyncio
import time

from bench.compare.servers import Unavailable
from bench.compare.workloads import Sizes

__all__ = ["produce"]

_BATCH_BYTES = 128 * 1024


def _produce(bootstrap: str, topic: str, sizes: Sizes, acks: str) -> float:
    try:
        from confluent_kafka import KafkaException, Producer  # noqa: PLC0415 - optional
    except ImportError as exc:
        raise Unavailable(f"confluent-kafka is not installed ({exc})") from None
    failed: list[object] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failed.append(error)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            # idempotent as Headwater's producer is, where librdkafka allows it: only
            # with acks=all (it refuses to start otherwise)
            "enable.idempotence": acks == "all",
            "linger.ms": 5,
            "batch.size": _BATCH_BYTES,
            "queue.buffering.max.messages": 1_000_000,
            # a report for each failed record only: a Python callback per delivered
            # record would halve what is measured, and none is missed
            "delivery.report.only.error": True,
            "on_delivery": delivered,
        }
    )
    value = b"x" * sizes.record_bytes
    total = sizes.produce_records
    started = time.perf_counter()
    deadline = started + sizes.max_seconds
    sent = 0
    try:
        while sent < total and time.perf_counter() < deadline:
            try:
                producer.produce(topic, value)
                sent += 1
            except BufferError:  # its queue is full: let deliveries drain it
                producer.poll(0.005)
        left = producer.flush(60)
    except KafkaException as exc:
        raise Unavailable(f"librdkafka: {exc}") from None
    elapsed = time.perf_counter() - started
    if left or failed:
        raise Unavailable(f"{left + len(failed):,} records not delivered: {failed[:1]}")
    return sent / elapsed


async def produce(bootstrap: str, topic: str, sizes: Sizes, acks: str) -> float:
    """Records/s of one librdkafka producer (its own threads: run off the loop)."""
    return await asyncio.to_thread(_produce, bootstrap, topic, sizes, acks)
