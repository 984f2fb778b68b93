"""Batches a caller fills itself: ``Producer.create_batch()`` and ``send_batch()``
(aiokafka's direct batch API).

``send()`` is one record at a time: a coroutine, a partition choice and an encode per
record. A caller that already has records in bulk (a file, a query, a queue it drains)
can instead fill a :class:`BatchBuilder` and hand it to ``send_batch`` for one
partition: ``append`` only checks the record and keeps it (``bytes`` as they are, anything
else copied), and the batch is encoded when it is sent, column by column when all its
records have no headers (see :func:`protocol.records.runs.encode_run`), else one by one.
The bytes are those ``send()`` would have made; the batch goes through the same
accumulator, so retries, idempotence, ordering with ``send()``'s records, ``buffer_memory``
and ``delivery_timeout_ms`` are the same.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add
from types import NoneType
from typing import NamedTuple

from client.accumulator import RECORD_OVERHEAD_BOUND, Data, Header, record_size_upper_bound

__all__ = [
    "BYTES",
    "TIMESTAMP_LIMIT",
    "BatchBuilder",
    "BatchRecordMetadata",
    "check_headers",
    "checked_timestamp",
]

BYTES = (bytes, bytearray, memoryview)
_OWN_TYPES = frozenset((bytes, NoneType))
"""Items a column can be taken with as it is (immutable, one byte per item)."""
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
        always fits; one too large for any request fails at ``send_batch``. A bytearray or
        memoryview is copied: changing it afterwards does not change the record.
        """
        # one call per record: flat, the common case (bytes, no key or headers) first
        if value.__class__ is not bytes and value is not None:
            value = _own("value", value)
        if key is None and not headers:
            checked = None
            size = RECORD_OVERHEAD_BOUND + (0 if value is None else len(value))
        else:
            if key.__class__ is not bytes and key is not None:
                key = _own("key", key)
            checked = check_headers(headers)
            size = record_size_upper_bound(key, value, checked)
        timestamp = _time_ns() // 1_000_000 if timestamp is None else checked_timestamp(timestamp)
        values = self._values
        count = len(values)
        if self._sent or (count and self._size + size > self._limit):
            return None
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
        it, and extend a new one from where this one stopped. Only the records that could
        fit are looked at (a record takes at least RECORD_OVERHEAD_BOUND bytes), so a long
        list costs each call its batch's share, and a bad item further on is reported by
        the call that reaches it.
        """
        if keys is not None and len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values: give one per value")
        timestamp = _time_ns() // 1_000_000 if timestamp is None else checked_timestamp(timestamp)
        count = len(self._values)
        room = (self._limit - self._size) // RECORD_OVERHEAD_BOUND
        window = max(room, 0 if count else 1)  # the first record always fits
        if self._sent or not values or not window:
            return 0
        if window < len(values):
            values = values[:window]
            keys = None if keys is None else keys[:window]
        values, sizes = _owned_column("value", values)
        if keys is not None:
            keys, key_sizes = _owned_column("key", keys)
            if any(k is not None for k in keys):
                sizes = list(map(add, sizes, key_sizes))
            else:
                keys = None  # all keyless: the column encoder takes them as such
        # running totals of the records' bounds: how many fit is one bisection
        bounds = map(add, sizes, repeat(RECORD_OVERHEAD_BOUND))
        totals = list(accumulate(bounds, initial=self._size))
        taken = max(bisect_right(totals, self._limit, lo=1) - 1, 0 if count else 1)
        if not taken:
            return 0
        self._values.extend(values[:taken] if taken < len(values) else values)
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


def _own(what: str, data: object) -> bytes:
    """A record's key or value that is not ``bytes``, as bytes of its own: a bytearray or
    memoryview the caller may change later (or a memoryview of wider items, whose len() is
    not its size in bytes) is copied; anything else is a TypeError."""
    if isinstance(data, BYTES):
        return bytes(data)
    raise TypeError(f"a batch's record {what} must be bytes or None, not {type(data).__name__}")


def _owned_column(
    what: str, column: Sequence[Data | None]
) -> tuple[Sequence[Data | None], list[int]]:
    """The column with every item ``bytes`` or None (others copied as :func:`_own` does),
    and each item's length (0 for None)."""
    kinds = set(map(type, column))
    if kinds == {bytes}:  # the common case, in C
        return column, list(map(len, column))  # type: ignore[arg-type] # bytes only
    if not kinds <= _OWN_TYPES:
        column = [
            item if item.__class__ is bytes or item is None else _own(what, item) for item in column
        ]
    return column, [0 if item is None else len(item) for item in column]


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
        # a memoryview's len() counts items, not bytes; a batch keeps what it is given
        out.append((name, data if data is None or data.__class__ is bytes else bytes(data)))
    return out
