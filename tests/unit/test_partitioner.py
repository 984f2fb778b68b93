"""Partitioning: Kafka's murmur2 bit for bit, and KIP-480 sticky choice for null keys."""

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from client import partitioner
from client.partitioner import Partitioner, murmur2, partition_for_key, to_positive

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Apache Kafka)
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
def test_murmur2_matches_kafkas_published_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_murmur2_matches_kafka_python_on_many_random_keys() -> None:
    rng = random.Random(480)
    for i in range(20_000):
        key = rng.randbytes(i % 67)  # every tail length, empty keys included
        # kafka-python returns the same 32 bits unsigned; Java's int is signed
        assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key), key


@given(st.binary(max_size=300))
def test_murmur2_matches_kafka_python_on_any_bytes(key: bytes) -> None:
    assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key)
    assert -(2**31) <= murmur2(key) < 2**31


def test_murmur2_takes_bytearray_and_memoryview() -> None:
    assert murmur2(bytearray(b"foobar")) == murmur2(memoryview(b"foobar")) == -790332482


def test_to_positive_clears_the_sign_bit_like_java() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0  # abs() would overflow in Java; the mask does not
    assert to_positive(123) == 123


class _KafkaPythonCluster:
    """The slice of kafka-python's ClusterMetadata its DefaultPartitioner reads."""

    def __init__(self, count: int) -> None:
        self.count = count

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))


@pytest.mark.parametrize("count", [1, 2, 3, 7, 12, 100])
def test_keyed_records_land_where_kafka_python_puts_them(count: int) -> None:
    rng = random.Random(count)
    reference: Any = DefaultPartitioner()
    cluster = _KafkaPythonCluster(count)
    ours = Partitioner()
    for _ in range(2_000):
        key = rng.randbytes(rng.randrange(0, 40))
        expected = reference.partition("t", key, key, None, None, cluster)
        assert partition_for_key(key, count) == expected
        assert ours.partition("t", key, count, available=list(range(count))) == expected


def test_keyed_records_ignore_availability() -> None:
    """A key must not move while its partition's leader is away."""
    partitioner = Partitioner()
    home = partition_for_key(b"order-42", 6)
    others = [p for p in range(6) if p != home]
    assert partitioner.partition("t", b"order-42", 6, available=others) == home


def test_null_keys_stick_to_one_partition_until_its_batch_closes() -> None:
    partitioner = Partitioner(random.Random(1))
    first = partitioner.partition("t", None, 6, available=range(6))
    assert {partitioner.partition("t", None, 6, available=range(6)) for _ in range(50)} == {first}
    partitioner.batch_closed("t", (first + 1) % 6)  # another partition's batch: no change
    assert partitioner.partition("t", None, 6, available=range(6)) == first
    partitioner.batch_closed("t", first)
    second = partitioner.partition("t", None, 6, available=range(6))
    assert second != first  # KIP-480: a new partition, never the one just closed
    assert partitioner.partition("t", None, 6, available=range(6)) == second


def test_sticky_choices_spread_over_available_partitions_only() -> None:
    partitioner = Partitioner(random.Random(7))
    available = [1, 3, 4]
    seen: Counter[int] = Counter()
    last = None
    for _ in range(600):
        chosen = partitioner.partition("t", None, 6, available=available)
        assert chosen != last  # never the partition whose batch just closed
        seen[chosen] += 1
        partitioner.batch_closed("t", chosen)
        last = chosen
    assert set(seen) == set(available)
    assert min(seen.values()) > 100  # random, not stuck on one


def test_sticky_with_one_or_no_available_partition() -> None:
    partitioner = Partitioner(random.Random(3))
    assert partitioner.partition("t", None, 4, available=[2]) == 2
    partitioner.batch_closed("t", 2)
    assert partitioner.partition("t", None, 4, available=[2]) == 2  # the only choice
    partitioner.batch_closed("t", 2)
    anywhere = {partitioner.partition("u", None, 4, available=[])}
    assert anywhere <= {0, 1, 2, 3}


def test_sticky_partitions_are_per_topic() -> None:
    partitioner = Partitioner(random.Random(5))
    a = partitioner.partition("a", None, 50, available=range(50))
    b = partitioner.partition("b", None, 50, available=range(50))
    partitioner.batch_closed("a", a)
    assert partitioner.partition("b", None, 50, available=range(50)) == b


def test_sticky_partition_beyond_a_shrunk_count_is_replaced() -> None:
    partitioner = Partitioner(random.Random(9))
    chosen = partitioner.partition("t", None, 10, available=[9])
    assert chosen == 9
    assert partitioner.partition("t", None, 3, available=range(3)) in range(3)


def test_remembered_keys_land_where_kafka_python_puts_them_through_count_changes() -> None:
    """The key cache is per partition count: a topic that grows moves keys as Kafka does."""
    reference: Any = DefaultPartitioner()
    ours = Partitioner()
    keys = [f"customer-{i}".encode() for i in range(300)]
    for count in (6, 12, 6):
        cluster = _KafkaPythonCluster(count)
        for key in keys * 2:  # the second time from the cache
            expected = reference.partition("t", key, key, None, None, cluster)
            assert ours.partition("t", key, count, available=list(range(count))) == expected
    mutable = bytearray(b"customer-1")
    assert ours.partition("t", mutable, 6, available=[]) == partition_for_key(b"customer-1", 6)


def test_murmur2_reads_words_little_endian_on_any_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(range(37))
    expected = murmur2(data)
    assert murmur2(memoryview(bytearray(b"x" + data))[1:]) == expected  # an unaligned view
    monkeypatch.setattr(partitioner, "_NATIVE_WORDS", False)  # a big-endian machine's path
    assert murmur2(data) == expected
    assert murmur2(memoryview(data).cast("B")[:36]) == murmur2(data[:36])
    monkeypatch.undo()
    words = memoryview(data[:36]).cast("I")  # a view of another format hashes as its bytes
    assert murmur2(words) == murmur2(data[:36])
    assert murmur2(memoryview(data)[::2]) == murmur2(data[::2])  # not contiguous


def test_a_custom_partitioner_decides_with_aiokafkas_signature() -> None:
    """aiokafka's ``partitioner``: (serialized key, all partitions, available ones), as
    its DefaultPartitioner's ``__call__`` takes them."""
    calls: list[tuple[Any, list[int], list[int]]] = []

    def last_available(key: bytes | None, every: Any, available: Any) -> int:
        calls.append((key, list(every), list(available)))
        return available[-1]

    custom = Partitioner(custom=last_available)
    assert custom.partition("t", bytearray(b"k"), 4, available=(0, 2)) == 2
    assert custom.partition("t", None, 4, available=(1,)) == 1
    assert calls == [(b"k", [0, 1, 2, 3], [0, 2]), (None, [0, 1, 2, 3], [1])]

    def aiokafkas(key: bytes | None, every: Any, available: Any) -> int:
        assert key is not None  # (aiokafka's picks at random from available otherwise)
        return (kafka_python_murmur2(key) & 0x7FFFFFFF) % len(every)

    theirs = Partitioner(custom=aiokafkas)
    for key in (b"order-42", b"", b"x" * 37):
        assert theirs.partition("t", key, 12, available=range(12)) == partition_for_key(key, 12)
    with pytest.raises(ValueError, match=r"chose 4 for topic 't', whose partitions are 0\.\.3"):
        Partitioner(custom=lambda *_: 4).partition("t", b"k", 4, available=range(4))

    class _Int:  # a numpy integer's shape: not an int, but an index
        def __index__(self) -> int:
            return 3

    assert Partitioner(custom=lambda *_: _Int()).partition("t", b"k", 4, available=[0]) == 3
    with pytest.raises(ValueError, match=r"chose '1'"):
        Partitioner(custom=lambda *_: "1").partition("t", b"k", 4, available=range(4))


def test_ignore_keys_makes_keyed_records_sticky() -> None:
    """Kafka's partitioner.ignore.keys (KIP-794)."""
    sticky = Partitioner(random.Random(5), ignore_keys=True)
    first = sticky.partition("t", b"a", 8, available=range(8))
    assert {sticky.partition("t", bytes([i]), 8, available=range(8)) for i in range(40)} == {first}
