"""Batches a caller fills itself: ``Producer.create_batch()`` and ``send_batch()``
(aiokafka's direct batch API).

``send()`` is one record at a time: a coroutine, a partition choice and an encode per
record. A caller that already has records in bulk (a file, a query, a queue it drains)
can instead fill a :class:`BatchBuilder` and hand it to ``send_batch`` for one
partition: ``append`` only checks the record and keeps references to it, and the batch is
encoded when it is sent, column by column where its records share one shape (see
:func:`protocol.records.runs.encode_run`). The bytes are those ``send()`` would have
made; the batch goes through the same accumulator, so retries, idempotence, ordering with
``send()``'s records, ``buffer_memory`` and ``delivery_timeout_ms`` are the same.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add
from typing import NamedTuple

from client.accumulator import RECORD_OVERHEAD_BOUND, record_size_upper_bound

__all__ = [
    "BYTES",
    "TIMESTAMP_LIMIT",
    "BatchBuilder",
    "BatchRecordMetadata",
    "check_headers",
    "checked_timestamp",
]

Header = tuple[str, bytes | None]
Data = bytes | bytearray | memoryview
BYTES = (bytes, bytearray, memoryview)
_BYTES_TYPES = frozenset(BYTES)
TIMESTAMP_LIMIT = 2**63
_time_ns = time.time_ns
_new_tuple = tuple.__new__


class BatchRecordMetadata(NamedTuple):
    """What :meth:`BatchBuilder.append` says about a record it took."""

    offset: int
    """Its place in the batch (0, 1, ...); its offset in the topic is the batch's base
    offset (what ``send_batch``'s future gives) plus this."""
    timestamp: int
    """Milliseconds since the epoch: the one given, or the time of the append."""
    size: int
    """The bytes it can take in the batch, at most."""


class BatchBuilder:
    """Records for one partition, sent together by ``Producer.send_batch``.

    Get one from ``Producer.create_batch()``; ``append`` records (bytes: the producer's
    serializers are not applied) until it returns None, which means the batch is full
    (``batch_size``, each record counted at its largest encoded size) or was sent already.
    A batch is sent once; ``send_batch`` takes it whole.
    """

    __slots__ = ("_headers", "_keys", "_limit", "_sent", "_size", "_timestamps", "_values")

    def __init__(self, batch_size: int) -> None:
        self._limit = batch_size
        self._keys: list[Data | None] | None = None  # None while every record is keyless
        self._values: list[Data | None] = []
        self._timestamps: list[int] = []
        self._headers: list[list[Header] | None] | None = None  # None while none has any
        self._size = 0
        self._sent = False

    def __repr__(self) -> str:
        state = "sent" if self._sent else f"{len(self._values)} records"
        return f"<BatchBuilder {state}, {self._size} of {self._limit} bytes>"

    def append(
        self,
        *,
        key: Data | None = None,
        value: Data | None = None,
        timestamp: int | None = None,
        headers: Sequence[Header] | None = None,
    ) -> BatchRecordMetadata | None:
        """Add a record; None if it does not fit (the batch is full) or the batch was sent.

        ``timestamp`` is in milliseconds since the epoch (None: now). The first record
        always fits; one too large for any request fails at ``send_batch``.
        """
        # one call per record: flat, the common case (bytes, no key or headers) first
        if self._sent:
            return None
        if value.__class__ is not bytes and not (value is None or isinstance(value, BYTES)):
            raise TypeError(
                f"a batch's record value must be bytes or None, not {type(value).__name__}"
            )
        if key is None and not headers:
            checked = None
            size = RECORD_OVERHEAD_BOUND + (0 if value is None else len(value))
        else:
            if not (key is None or isinstance(key, BYTES)):
                raise TypeError(
                    f"a batch's record key must be bytes or None, not {type(key).__name__}"
                )
            checked = check_headers(headers)
            size = record_size_upper_bound(key, value, checked)
        values = self._values
        count = len(values)
        if count and self._size + size > self._limit:
            return None
        timestamp = _time_ns() // 1_000_000 if timestamp is None else checked_timestamp(timestamp)
        keys = self._keys
        if key is not None and keys is None:
            keys = self._keys = [None] * count
        if keys is not None:
            keys.append(key)
        if checked is not None and self._headers is None:
            self._headers = [None] * count
        if self._headers is not None:
            self._headers.append(checked)
        values.append(value)
        self._timestamps.append(timestamp)
        self._size += size
        return _new_tuple(BatchRecordMetadata, (count, timestamp, size))  # skips its __new__

    def extend(
        self,
        values: Sequence[Data | None],
        *,
        keys: Sequence[Data | None] | None = None,
        timestamp: int | None = None,
    ) -> int:
        """Append records from ``values`` (with ``keys``, one per value), all with one
        ``timestamp`` (ms; None: now), as many as fit; returns how many it took.

        The bulk form of :meth:`append` (no headers): its checks run over the columns in C,
        not per record. Fewer taken than given means the batch is full (or was sent): send
        it, and extend a new one with the rest (``values[taken:]``).
        """
        if self._sent or not values:
            return 0
        if keys is not None and len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values: give one per value")
        sizes = _column_sizes("value", values)
        if keys is not None:
            sizes = [a + b for a, b in zip(sizes, _column_sizes("key", keys), strict=True)]
        timestamp = _time_ns() // 1_000_000 if timestamp is None else checked_timestamp(timestamp)
        count = len(self._values)
        # running totals of the records' bounds: how many fit is one bisection
        bounds = map(add, sizes, repeat(RECORD_OVERHEAD_BOUND))
        totals = list(accumulate(bounds, initial=self._size))
        taken = bisect_right(totals, self._limit, lo=1) - 1
        if not count and not taken:
            taken = 1  # the first record always fits
        if not taken:
            return 0
        taken_values = values[:taken] if taken < len(values) else values
        self._values.extend(taken_values)
        self._timestamps.extend(repeat(timestamp, taken))
        if keys is not None and self._keys is None:
            self._keys = [None] * count
        if self._keys is not None:
            self._keys.extend(repeat(None, taken) if keys is None else keys[:taken])
        if self._headers is not None:
            self._headers.extend(repeat(None, taken))
        self._size = totals[taken]
        return taken

    def record_count(self) -> int:
        """Records appended so far (a method, as aiokafka's)."""
        return len(self._values)

    def size(self) -> int:
        """The bytes its records can take, at most (what ``batch_size`` bounds)."""
        return self._size

    @property
    def sent(self) -> bool:
        return self._sent

    def _take(
        self,
    ) -> tuple[
        list[Data | None] | None, list[Data | None], list[int], list[list[Header] | None] | None
    ]:
        """Its records as columns (keys, values, timestamps, headers), closed to appends."""
        self._sent = True
        return self._keys, self._values, self._timestamps, self._headers

    def _reopen(self) -> None:
        """``send_batch`` failed before the batch was queued: it can be sent again."""
        self._sent = False


def _column_sizes(what: str, column: Sequence[Data | None]) -> list[int]:
    """Each item's length (0 for None); TypeError naming the first that is not bytes."""
    kinds = set(map(type, column))
    if kinds <= _BYTES_TYPES:
        return list(map(len, column))  # type: ignore[arg-type] # no None: checked just above
    sizes = []
    for item in column:
        if item is None:
            sizes.append(0)
        elif isinstance(item, BYTES):
            sizes.append(len(item))
        else:
            raise TypeError(
                f"a batch's record {what} must be bytes or None, not {type(item).__name__}"
            )
    return sizes


def checked_timestamp(timestamp: object, name: str = "timestamp") -> int:
    """A record's timestamp (ms since the epoch) as given; ValueError if it is not one."""
    if timestamp.__class__ is not int or not 0 <= timestamp < TIMESTAMP_LIMIT:
        raise ValueError(
            f"{name}={timestamp!r} is invalid: a record's timestamp is milliseconds since "
            f"the epoch, 0 or more (or None for now)"
        )
    return timestamp


def check_headers(headers: Sequence[Header] | None) -> list[Header] | None:
    """A record's headers as a list of ``(str, bytes | None)``; TypeError on anything else."""
    if not headers:
        return None
    out = []
    for item in headers:
        name, data = item
        if not isinstance(name, str) or not (data is None or isinstance(data, BYTES)):
            raise TypeError(f"a header must be (str, bytes | None), not {item!r}")
        out.append((name, data))
    return out
