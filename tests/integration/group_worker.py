"""A group member in a process of its own, for tests that kill -9 it.

    python -m tests.integration.group_worker BOOTSTRAP GROUP TOPIC OUT [SESSION_MS [STRATEGY]]

It processes records (appends ``processed <topic> <partition> <offset>`` to OUT) and then
commits what it processed (``committed <partition> <offset>`` once the commit is
acknowledged), and writes ``assigned <partitions>`` (all it owns) at every assignment,
each line flushed, so the test knows exactly what it did before it died.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import IO

from client import CommitFailedError, Consumer, RebalanceListener, TopicPartition


class _Listener(RebalanceListener):
    def __init__(self, out: IO[str], consumer: Consumer) -> None:
        self.out = out
        self.consumer = consumer

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # all it owns: with cooperative-sticky, ``assigned`` is only what is new
        parts = ",".join(str(tp.partition) for tp in sorted(self.consumer.assignment()))
        self.out.write(f"assigned {parts}\n")
        self.out.flush()


async def main(
    bootstrap: str, group: str, topic: str, out: IO[str], *, session_ms: int, strategy: str
) -> None:
    consumer = Consumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(session_ms // 6, 100),
        partition_assignment_strategy=strategy,
    )
    await consumer.start()
    consumer.subscribe([topic], listener=_Listener(out, consumer))
    while True:
        batches = await consumer.getmany(timeout_ms=200)
        for tp, records in batches.items():
            for r in records:
                out.write(f"processed {tp.topic} {tp.partition} {r.offset}\n")
        out.flush()
        if not batches:
            continue
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        try:
            await consumer.commit(offsets)
        except CommitFailedError:
            continue
        for tp, offset in offsets.items():
            out.write(f"committed {tp.partition} {offset}\n")
        out.flush()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="victim %(levelname)s %(name)s %(message)s")
    args = sys.argv[1:]
    with open(args[3], "a", encoding="utf-8") as out_file:
        session = int(args[4]) if len(args) > 4 else 6000
        strategy = args[5] if len(args) > 5 else "range"
        asyncio.run(
            main(args[0], args[1], args[2], out_file, session_ms=session, strategy=strategy)
        )
