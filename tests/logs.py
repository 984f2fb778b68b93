"""Helpers for tests of broker.log."""

from __future__ import annotations

from broker.log import Log
from protocol.records import decode_batches

Rec = tuple[int, bytes | None, bytes | None, int]  # offset, key, value, timestamp


def read_all(log: Log) -> list[Rec]:
    """Every record from the log start, through ``Log.read``; offsets must be dense."""
    offset = log.log_start_offset
    out: list[Rec] = []
    while True:
        data = log.read(offset, 1 << 20)
        if data is None:
            return out
        assert data.first_offset == offset, (data, offset)
        for batch in decode_batches(data.read()):
            assert batch.base_offset == offset, (batch, offset)
            out += [(r.offset, r.key, r.value, r.timestamp) for r in batch]
            offset = batch.next_offset
