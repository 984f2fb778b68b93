"""Record batch codec throughput: what a producer pays to encode, a consumer to decode, and
the broker to validate (header walk + CRC32C, never the records).

Workload (issue 2): 100-byte values, 16-byte keys, batches of 1,000 records, each codec.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from functools import partial

from protocol.records import BatchBuilder, decode_batches, encode_batch, scan_batches
from protocol.records.compression import CODECS

RECORDS_PER_BATCH = 1_000
VALUE_BYTES = 100
MIN_SECONDS = 1.0


def _records() -> list[tuple[bytes, bytes, None, int]]:
    rng = os.urandom  # incompressible values would flatter nobody: half random, half text
    now = 1_700_000_000_000
    return [
        (
            f"key-{i:012d}".encode(),
            rng(VALUE_BYTES // 2) + b"x" * (VALUE_BYTES - VALUE_BYTES // 2),
            None,
            now + i,
        )
        for i in range(RECORDS_PER_BATCH)
    ]


def _rate(work: Callable[[], object], units: int) -> float:
    """Units per second of ``work``, repeated for at least MIN_SECONDS (best of 3 rounds)."""
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        while True:
            work()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= MIN_SECONDS / 3:
                break
        best = max(best, n * units / elapsed)
    return best


def _decode_all(data: bytes) -> None:
    for batch in decode_batches(data):
        batch.records  # noqa: B018 - forces the decode


def _encode_columns(
    keys: list[bytes], values: list[bytes], timestamps: list[int], codec: str
) -> bytes:
    """The same batch from columns (``Producer.send_batch``'s path: BatchBuilder.extend)."""
    builder = BatchBuilder(compression=codec)
    builder.extend(keys, values, timestamps)
    return bytes(builder.build())


def codec_table() -> list[tuple[str, float, float, float, int]]:
    """Per codec: records/s encoded one by one and from columns, decoded; batch bytes."""
    records = _records()
    keys, values, _, timestamps = (list(column) for column in zip(*records, strict=True))
    rows = []
    for codec in CODECS:
        data = encode_batch(records, compression=codec)
        assert _encode_columns(keys, values, timestamps, codec) == data
        encode = _rate(partial(encode_batch, records, compression=codec), RECORDS_PER_BATCH)
        columns = _rate(
            partial(_encode_columns, keys, values, timestamps, codec), RECORDS_PER_BATCH
        )
        decode = _rate(partial(_decode_all, data), RECORDS_PER_BATCH)
        rows.append((codec, encode, columns, decode, len(data)))
    return rows


def validation_rate() -> tuple[float, float]:
    """MB/s and batches/s of the broker's header-only walk with CRC checks."""
    batch = encode_batch(_records())
    buffer = batch * max(1, (64 * 1024 * 1024) // len(batch))
    count = len(buffer) // len(batch)
    mb_s = _rate(lambda: scan_batches(buffer), len(buffer)) / 1e6
    return mb_s, mb_s * 1e6 / len(batch) if count else 0.0


def main() -> None:
    print(
        f"## Record batch codec — {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}\n"
    )
    print(f"{RECORDS_PER_BATCH:,} records per batch, {VALUE_BYTES}-byte values, 16-byte keys\n")
    print(
        "| compression | encode (records/s) | encode from columns (records/s) "
        "| decode (records/s) | batch bytes |"
    )
    print("|---|---:|---:|---:|---:|")
    for codec, encode, columns, decode, size in codec_table():
        print(f"| {codec} | {encode:,.0f} | {columns:,.0f} | {decode:,.0f} | {size:,} |")
    mb_s, batches_s = validation_rate()
    print("\n| broker-side validation (header + CRC32C, no record decode) | MB/s | batches/s |")
    print("|---|---:|---:|")
    print(f"| uncompressed {RECORDS_PER_BATCH:,}-record batches | {mb_s:,.0f} | {batches_s:,.0f} |")


if __name__ == "__main__":
    main()
