"""Which partition a record goes to: Kafka's default rules, so keys land where Java puts them.

- A keyed record goes to ``toPositive(murmur2(key)) % partition_count``, exactly as the
  Java client's DefaultPartitioner (and its successor BuiltInPartitioner) computes it, so
  a topic written by Headwater and by a Kafka client keeps each key in one partition.
  Every partition counts, available or not: a key must not move when a leader is down.
- A record without a key is *sticky* (KIP-480): all of them go to one partition until
  that partition's batch is closed (full, or taken by the sender), then another available
  partition is picked at random. Batches fill up instead of many one-record batches being
  spread thinly over every partition, which is what made round-robin slow at low linger.
- ``ignore_keys`` (Kafka's ``partitioner.ignore.keys``, KIP-794): keyed records are
  sticky too, for throughput where keys need not pick partitions.
- ``custom``: aiokafka's partitioner, a callable ``(key, all_partitions,
  available_partitions) -> partition`` (the serialized key, or None), in place of all
  of the above.
"""

from __future__ import annotations

import contextlib
import operator
import random
import struct
import sys
from collections.abc import Callable, Sequence

__all__ = ["CustomPartitioner", "Partitioner", "murmur2", "partition_for_key", "to_positive"]

CustomPartitioner = Callable[[bytes | None, Sequence[int], Sequence[int]], int]
"""aiokafka's ``partitioner``: (serialized key or None, every partition, those with a
leader) -> the partition."""

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")
_NATIVE_WORDS = sys.byteorder == "little" and struct.calcsize("I") == 4


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """Kafka's ``Utils.murmur2``: 32-bit MurmurHash2 with Kafka's seed, as a signed int.

    Java's ``int`` wraps at 32 bits; the masks below do the same to Python's ints, and
    ``>>>`` (unsigned shift) is a plain shift of the masked value. Words are read
    little-endian, as Kafka does: straight from a cast memoryview on a little-endian
    machine (a quarter faster than unpacking a tuple per word).
    """
    if type(data) is memoryview and (data.format != "B" or not data.c_contiguous):
        data = data.tobytes()  # hashed as its bytes (len and indexing count items)
    length = len(data)
    m, mask = _M, _MASK
    h = (_SEED ^ length) & mask
    whole = length & ~3
    if whole:
        view = memoryview(data).cast("B")[:whole]
        words = view.cast("I") if _NATIVE_WORDS else (w for (w,) in _WORDS.iter_unpack(view))
        for word in words:
            k = (word * m) & mask
            k = ((k ^ (k >> 24)) * m) & mask
            h = ((h * m) ^ k) & mask  # masking after the xor: k is 32 bits already
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= data[whole + 2] << 16
        if tail >= 2:
            h ^= data[whole + 1] << 8
        h ^= data[whole]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


_KEY_CACHE_SIZE = 65_536
"""Keys whose partition the partitioner remembers (forgotten all at once when full)."""


def to_positive(n: int) -> int:
    """Kafka's ``Utils.toPositive``: clears the sign bit (not ``abs``, which overflows)."""
    return n & 0x7FFFFFFF


def partition_for_key(key: bytes | bytearray | memoryview, partition_count: int) -> int:
    return to_positive(murmur2(key)) % partition_count


class Partitioner:
    """Kafka's default partitioning: murmur2 for keys, sticky (KIP-480) for null keys.

    The producer's accumulator calls :meth:`batch_closed` when a partition's batch stops
    taking records; if that was a topic's sticky partition, the next keyless record picks
    a new one. ``rng`` is injectable so tests can pin the choices.
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        custom: CustomPartitioner | None = None,
        ignore_keys: bool = False,
    ) -> None:
        self._rng = rng or random.Random()
        self._sticky: dict[str, int] = {}
        self._previous: dict[str, int] = {}
        self.by_key: dict[tuple[bytes, int], int] = {}
        """(key, partition count) -> partition, for keys seen lately (read by the
        producer's fast path; cleared, never replaced, when full)."""
        self._custom = custom
        self._all: dict[int, range] = {}
        # chosen once, not tested per record (the per-record path of every send)
        if custom is not None:
            self.partition = self._ask_custom  # type: ignore[method-assign]
        elif ignore_keys:
            self.partition = self._sticky_partition  # type: ignore[method-assign]

    def partition(
        self,
        topic: str,
        key: bytes | bytearray | memoryview | None,
        partition_count: int,
        available: Sequence[int],
    ) -> int:
        """The partition for a record of ``topic``; ``available`` are those with a leader."""
        if key is not None:
            if type(key) is not bytes:  # bytearray, memoryview: mutable, not hashable
                return partition_for_key(key, partition_count)
            # murmur2 in Python is a loop per 4 bytes; keys repeat (ids), so remember them
            cached = self.by_key.get((key, partition_count))
            if cached is None:
                if len(self.by_key) >= _KEY_CACHE_SIZE:
                    self.by_key.clear()
                cached = self.by_key[key, partition_count] = partition_for_key(key, partition_count)
            return cached
        sticky = self._sticky.get(topic)
        if sticky is None or sticky >= partition_count:
            sticky = self._choose(topic, partition_count, available)
            self._sticky[topic] = sticky
        return sticky

    def _sticky_partition(
        self,
        topic: str,
        key: bytes | bytearray | memoryview | None,
        partition_count: int,
        available: Sequence[int],
    ) -> int:
        """:meth:`partition` with every key ignored (``ignore_keys``)."""
        return Partitioner.partition(self, topic, None, partition_count, available)

    def _ask_custom(
        self,
        topic: str,
        key: bytes | bytearray | memoryview | None,
        partition_count: int,
        available: Sequence[int],
    ) -> int:
        assert self._custom is not None
        every = self._all.get(partition_count)
        if every is None:
            every = self._all[partition_count] = range(partition_count)
        raw = None if key is None else bytes(key)
        chosen = self._custom(raw, every, available)
        with contextlib.suppress(TypeError):  # (not an index: said below)
            chosen = operator.index(chosen)  # a numpy integer too, as aiokafka takes it
        if type(chosen) is not int or not 0 <= chosen < partition_count:
            raise ValueError(
                f"the partitioner chose {chosen!r} for topic {topic!r}, whose partitions are "
                f"0..{partition_count - 1}"
            )
        return chosen

    def sticks_to(self, topic: str, partition: int) -> bool:
        """Whether ``topic``'s records without a key go to ``partition`` now (the
        producer's fast path follows the sticky partition only while this holds)."""
        return self._sticky.get(topic) == partition

    def batch_closed(self, topic: str, partition: int) -> None:
        if self._sticky.get(topic) == partition:
            del self._sticky[topic]
            self._previous[topic] = partition

    def _choose(self, topic: str, partition_count: int, available: Sequence[int]) -> int:
        """Kafka's StickyPartitionCache.nextPartition: random, available, not the last one."""
        previous = self._previous.get(topic)
        if not available:
            return self._rng.randrange(partition_count)
        if len(available) == 1:
            return available[0]
        # uniform over the others without building their list (per batch: with linger 0
        # and 1,024 partitions, a list per record)
        count = len(available)
        at = self._rng.randrange(count)
        if available[at] != previous:
            return available[at]
        other = self._rng.randrange(count - 1)
        return available[other if other < at else other + 1]
