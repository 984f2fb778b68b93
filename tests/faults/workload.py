"""The fault tests' workload: a producer writing numbered records while a fault happens,
and the check a user would make afterwards.

Every record's value is its sequence number. The producer (the real client, acks=all,
retrying retriable errors) records, per acknowledged send, the partition and offset it
was told. The check reads every partition back from the beginning with a consumer and
asserts: each acknowledged record is at exactly its acknowledged offset; per partition the
acknowledged sequence numbers appear in send order; and the only failures were retriable
ones the producer recovered from (none reached a send's future).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from client import Consumer, Producer, RecordMetadata, TopicPartition


@dataclass
class Outcome:
    acked: dict[int, RecordMetadata] = field(default_factory=dict)  # sequence -> where
    failed: dict[int, BaseException] = field(default_factory=dict)

    def by_partition(self) -> dict[int, list[tuple[int, int]]]:
        """partition -> [(offset, sequence)] in send order."""
        out: dict[int, list[tuple[int, int]]] = {}
        for seq in sorted(self.acked):
            meta = self.acked[seq]
            out.setdefault(meta.partition, []).append((meta.offset, seq))
        return out


async def produce(
    bootstrap: str,
    topic: str,
    records: int,
    *,
    fault: Callable[[], Awaitable[None]] | None = None,
    fault_after: int = 0,
    acks: int | str = "all",
    per_send_pause_every: int = 500,
    **settings: object,
) -> Outcome:
    """Send ``records`` numbered records (keyed, so partitions keep order); run ``fault``
    once ``fault_after`` have been acknowledged, while sending goes on: past ``records``,
    at a gentler pace, until the fault is over, so it always happens under load."""
    outcome = Outcome()
    fault_task: asyncio.Task[None] | None = None
    reached = asyncio.Event()

    def done(seq: int, future: asyncio.Future[RecordMetadata]) -> None:
        if future.cancelled():
            outcome.failed[seq] = asyncio.CancelledError()
        elif future.exception() is not None:
            outcome.failed[seq] = future.exception()  # type: ignore[assignment]
        else:
            outcome.acked[seq] = future.result()
            if len(outcome.acked) >= fault_after:
                reached.set()

    async with Producer(
        bootstrap_servers=bootstrap,
        acks=acks,
        linger_ms=2,
        request_timeout_ms=10_000,
        delivery_timeout_ms=120_000,
        retry_backoff_ms=100,
        **settings,  # type: ignore[arg-type]
    ) as producer:
        if fault is not None:

            async def inject() -> None:
                await reached.wait()
                await fault()

            fault_task = asyncio.ensure_future(inject())
        futures = []
        seq = 0
        while seq < records or (fault_task is not None and not fault_task.done()):
            future = await producer.send(topic, value=str(seq).encode(), key=str(seq % 64).encode())
            future.add_done_callback(lambda f, seq=seq: done(seq, f))
            futures.append(future)
            if seq >= records:
                await asyncio.sleep(0.002)  # past the planned load: keep a trickle going
            elif seq % per_send_pause_every == 0:
                await asyncio.sleep(0)  # let acknowledgements (and the fault) run
            seq += 1
        await producer.flush()
        await asyncio.gather(*futures, return_exceptions=True)
        if fault_task is not None:
            await fault_task
    return outcome


async def read_back(bootstrap: str, topic: str) -> dict[int, list[tuple[int, int]]]:
    """partition -> [(offset, sequence)] of everything in the topic, from the start."""
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        partitions = sorted(await consumer.partitions_for_topic(topic))
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[tuple[int, int]]] = {p: [] for p in partitions}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                out[tp.partition] += [(r.offset, _sequence(r.value)) for r in records]
        return out


def _sequence(value: bytes | None) -> int:
    """A workload record's number; -1 for anything the workload did not write."""
    try:
        return int(value or b"")
    except ValueError:
        return -1


def check(outcome: Outcome, stored: dict[int, list[tuple[int, int]]]) -> None:
    """Every acknowledged record where it was acknowledged, in send order per partition."""
    assert not outcome.failed, f"sends failed: {dict(list(outcome.failed.items())[:5])}"
    for partition, acked in outcome.by_partition().items():
        at = dict(stored[partition])
        missing = [(off, seq) for off, seq in acked if at.get(off) != seq]
        assert not missing, f"partition {partition}: acknowledged but not there: {missing[:10]}"
        offsets = [off for off, _ in acked]
        assert offsets == sorted(offsets), f"partition {partition}: acked out of send order"


def check_exactly_once(outcome: Outcome, stored: dict[int, list[tuple[int, int]]]) -> None:
    """What an idempotent producer promises on top of :func:`check`: every record it sent
    is in the topic exactly once, and each partition holds its records in send order."""
    check(outcome, stored)
    seen = Counter(seq for records in stored.values() for _, seq in records)
    twice = sorted(seq for seq, n in seen.items() if n > 1)
    assert not twice, f"written more than once: {twice[:10]} ({len(twice)} records)"
    assert set(seen) == set(outcome.acked), "the topic holds records nobody acknowledged"
    for partition, records in stored.items():
        order = [seq for _, seq in records]
        assert order == sorted(order), f"partition {partition}: not in send order"
