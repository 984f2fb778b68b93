"""Kafka's RecordBatch v2 (magic 2), byte for byte: the same bytes on the wire, on disk and
in replication.

- :func:`encode_batch` / :class:`BatchBuilder`: records -> one batch (producer side).
- :func:`decode_batches`: bytes -> batches whose records decode on access (consumer side).
- :func:`scan_batches` and friends in :mod:`protocol.records.batch`: the header-only view,
  CRC check and in-place offset / leader-epoch patching the broker uses; they never touch
  the records.
"""

from protocol.records.batch import (
    HEADER_SIZE,
    BatchHeader,
    read_header,
    scan_batches,
    set_base_offset,
    set_partition_leader_epoch,
    set_producer_fields,
    verify_crc,
)
from protocol.records.codec import (
    BatchBuilder,
    Record,
    RecordBatch,
    RecordColumns,
    decode_batches,
    encode_batch,
)
from protocol.records.compression import CODECS

__all__ = [
    "CODECS",
    "HEADER_SIZE",
    "BatchBuilder",
    "BatchHeader",
    "Record",
    "RecordBatch",
    "RecordColumns",
    "decode_batches",
    "encode_batch",
    "read_header",
    "scan_batches",
    "set_base_offset",
    "set_partition_leader_epoch",
    "set_producer_fields",
    "verify_crc",
]
