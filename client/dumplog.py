"""``headwater dump-log``: what is in a segment's files, and whether they agree (Kafka's
kafka-dump-log, DumpLogSegments).

Reads the files directly (a broker may be running: they are only read), with the formats
of :mod:`protocol.records.files` and the batch codec; never imports the broker.

- ``.log``: one line per batch (offsets, count, position, timestamp, size, codec, CRC
  check, producer fields, flags); with ``print_data`` a line per record under it. A batch
  whose header or CRC is damaged is reported and the dump stops there. A decoder reads
  the records of an internal topic (Kafka's ``--offsets-decoder`` for
  ``__consumer_offsets``, ``--transaction-log-decoder`` for ``__transaction_state``) and
  shows them as Kafka's dump does: ``key: offset_commit::group=G,partition=T-P``.
- ``.index`` / ``.timeindex``: one line per entry, then a check against the ``.log``
  beside it: every offset index entry must point at the start of a batch with that base
  offset; every time index entry must name the base offset of a batch whose maximum
  timestamp it is; entries must increase.

The result says whether anything was found wrong (the command then exits with 1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from client.assignors import ProtocolError, decode_assignment
from protocol.consumer_group_log import (
    CONSUMER_GROUP_METADATA,
    CURRENT_MEMBER_ASSIGNMENT,
    MEMBER_METADATA,
    PARTITION_METADATA,
    TARGET_ASSIGNMENT_MEMBER,
    TARGET_ASSIGNMENT_METADATA,
    ConsumerGroupKey,
    MemberAssignment,
    MemberSubscription,
    decode_consumer_group_key,
    decode_consumer_group_value,
)
from protocol.errors import (
    CorruptBatchError,
    CorruptMessageError,
    InvalidRecordsError,
    TruncatedBatchError,
)
from protocol.group_log import (
    BadRecordError,
    decode_group_key,
    decode_group_value,
    decode_key,
    decode_value,
)
from protocol.records import BatchHeader, Record, decode_batches, read_header, verify_crc
from protocol.records.batch import HEADER, HEADER_SIZE, LOG_OVERHEAD
from protocol.records.compaction import delete_horizon_ms
from protocol.records.compression import CODEC_NAMES
from protocol.records.control import read_end_txn_marker
from protocol.records.files import (
    offset_index_entries,
    parse_segment_file_name,
    segment_name,
    time_index_entries,
)
from protocol.topic_id import format_topic_id
from protocol.txn_log import decode_key as decode_txn_key
from protocol.txn_log import decode_value as decode_txn_value

__all__ = ["DECODERS", "DumpError", "dump_file"]

Emit = Callable[[str], None]
Decoder = Callable[[Record], tuple[str, str]]
"""A record of an internal topic -> (key, payload) as text."""


class DumpError(Exception):
    """The file cannot be dumped at all (missing, unreadable, not a segment file)."""


class _Batch(NamedTuple):
    header: BatchHeader
    data: bytes


def dump_file(
    path: Path, emit: Emit, *, print_data: bool = False, decoder: Decoder | None = None
) -> bool:
    """Dump one file through ``emit`` (a line at a time); True if it is sound. A
    ``decoder`` (one of :data:`DECODERS`) prints the records, decoded."""
    parsed = parse_segment_file_name(path.name)
    if parsed is None:
        raise DumpError(
            f"{path}: not a segment file (expected <20-digit offset>.log, .index or .timeindex)"
        )
    if not path.is_file():
        raise DumpError(f"{path}: no such file")
    emit(f"Dumping {path}")
    if parsed.kind == ".log":
        return _dump_log(path, parsed.base_offset, emit, print_data, decoder)
    entries = _index_entries(path, parsed.kind, parsed.base_offset)
    log_path = path.with_name(segment_name(parsed.base_offset, ".log") + parsed.state)
    if parsed.kind == ".index":
        for offset, position in entries:
            emit(f"offset: {offset} position: {position}")
    else:
        for timestamp, offset in entries:
            emit(f"timestamp: {timestamp} offset: {offset}")
    if not log_path.is_file():
        emit(f"Cannot check {path.name}: no {log_path.name} beside it")
        return False
    batches = {b.header.base_offset: b.header for b in _Scan(log_path, headers_only=True)}
    check = _check_offset_index if parsed.kind == ".index" else _check_time_index
    problems = check(entries, batches)
    if problems:
        emit(f"Mismatches in {path}:")
        for problem in problems:
            emit(f"  {problem}")
    return not problems


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DumpError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def _index_entries(path: Path, kind: str, base: int) -> list[tuple[int, int]]:
    data = _read(path)
    return offset_index_entries(data, base) if kind == ".index" else time_index_entries(data, base)


# --- .log ----------------------------------------------------------------------------------


def _dump_log(path: Path, base: int, emit: Emit, print_data: bool, decoder: Decoder | None) -> bool:
    emit(f"Log starting offset: {base}")
    scan = _Scan(path)
    sound = True
    for batch in scan:
        sound &= _emit_batch(batch, emit, print_data or decoder is not None, decoder)
    if scan.error is not None:
        emit(scan.error)
    return sound and scan.error is None


class _Scan:
    """Every batch of a ``.log`` file, header-checked, read one at a time; a damaged or
    torn one ends the iteration and is described in :attr:`error`."""

    def __init__(self, path: Path, *, headers_only: bool = False) -> None:
        self.path = path
        self.headers_only = headers_only
        self.error: str | None = None

    def __iter__(self) -> Iterator[_Batch]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise DumpError(f"{self.path}: cannot read it: {exc.strerror or exc}") from None
        try:
            yield from self._batches(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def _batches(self, fd: int, size: int) -> Iterator[_Batch]:
        position = 0
        while position < size:
            try:
                batch = self._read_batch(fd, position, size)
            except CorruptBatchError as exc:
                self.error = f"Found {size - position} invalid bytes at position {position}: {exc}"
                return
            yield batch
            position += batch.header.size

    def _read_batch(self, fd: int, position: int, size: int) -> _Batch:
        prefix = os.pread(fd, HEADER_SIZE, position)
        if len(prefix) < HEADER_SIZE:
            raise TruncatedBatchError(
                f"batch at byte {position}: {len(prefix)} bytes, too few for a batch header",
                position,
            )
        header = BatchHeader(position, *HEADER.unpack_from(prefix))
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or header.end > size:
            raise CorruptBatchError(
                f"batch at byte {position}: length {header.batch_length} does not fit the "
                f"{size - position - LOG_OVERHEAD} bytes left in the file",
                position,
            )
        if self.headers_only:
            return _Batch(header, prefix)
        data = os.pread(fd, header.size, position)
        return _Batch(read_header(data)._replace(position=position), data)  # magic, count


def _emit_batch(batch: _Batch, emit: Emit, print_data: bool, decoder: Decoder | None) -> bool:
    h = batch.header
    valid = True
    try:
        verify_crc(batch.data, h._replace(position=0))
    except CorruptBatchError:
        valid = False
    last_sequence = h.base_sequence + h.last_offset_delta if h.base_sequence >= 0 else -1
    horizon = delete_horizon_ms(h)
    time_type = "LogAppendTime" if h.timestamp_type else "CreateTime"
    emit(
        f"baseOffset: {h.base_offset} lastOffset: {h.last_offset} count: {h.record_count} "
        f"baseSequence: {h.base_sequence} lastSequence: {last_sequence} "
        f"producerId: {h.producer_id} producerEpoch: {h.producer_epoch} "
        f"partitionLeaderEpoch: {h.partition_leader_epoch} "
        f"isTransactional: {_bool(h.is_transactional)} isControl: {_bool(h.is_control)} "
        f"deleteHorizonMs: {'none' if horizon is None else horizon} "
        f"position: {h.position} {time_type}: {h.max_timestamp} size: {h.size} "
        f"magic: {h.magic} compresscodec: {CODEC_NAMES.get(h.compression, h.compression)} "
        f"crc: {h.crc} isvalid: {_bool(valid)}"
    )
    if print_data and valid:
        valid = _emit_records(batch, emit, decoder)
    return valid


def _emit_records(batch: _Batch, emit: Emit, decoder: Decoder | None) -> bool:
    h = batch.header
    time_type = "LogAppendTime" if h.timestamp_type else "CreateTime"
    try:
        (decoded,) = decode_batches(batch.data, verify_crc=False)
        records = decoded.records
    except (CorruptBatchError, InvalidRecordsError) as exc:
        emit(f"| records cannot be decoded: {exc}")
        return False
    marker = _marker(batch) if h.is_control else None
    for r in records:
        sequence = h.base_sequence + (r.offset - h.base_offset) if h.base_sequence >= 0 else -1
        head = (
            f"| offset: {r.offset} {time_type}: {r.timestamp} keySize: {_size(r.key)} "
            f"valueSize: {_size(r.value)} sequence: {sequence} "
            f"headerKeys: [{','.join(k for k, _ in r.headers)}]"
        )
        if marker is not None:  # Kafka's dump prints a transaction marker so
            emit(f"{head} endTxnMarker: {marker}")
            continue
        if decoder is not None:
            key, payload = decoder(r)
            emit(f"{head} key: {key} payload: {payload}")
            continue
        emit(f"{head} key: {_text(r.key)} payload: {_text(r.value)}{_headers(r)}")
    return True


# --- internal topics' records ----------------------------------------------------------------

_DELETE = "<DELETE>"  # a tombstone, as Kafka's dump prints it


def _undecodable(record: Record, why: object) -> tuple[str, str]:
    return f"{_text(record.key)} (cannot be decoded: {why})", _text(record.value)


def _offsets_record(record: Record) -> tuple[str, str]:
    """A ``__consumer_offsets`` record (Kafka's OffsetsMessageParser)."""
    if record.key is None:
        return _undecodable(record, "no key")
    try:
        consumer = decode_consumer_group_key(record.key)
        if consumer is not None:
            return _consumer_group_record(consumer, record.value)
        group = decode_group_key(record.key)
        if group is not None:
            return _group_record(group, record.value)
        parsed = decode_key(record.key)
        if parsed is None:
            return _undecodable(record, "a key version this build does not know")
        return _offset_record(*parsed, record.value)
    except (BadRecordError, CorruptMessageError, ValueError) as exc:
        return _undecodable(record, exc)


def _offset_record(group: str, topic: str, partition: int, value: bytes | None) -> tuple[str, str]:
    key = f"offset_commit::group={group},partition={topic}-{partition}"
    if value is None:
        return key, _DELETE
    offset = decode_value(value)
    return key, (
        f"offset={offset.offset},leaderEpoch={offset.leader_epoch},"
        f"metadata={offset.metadata or ''},commitTimestamp={offset.commit_timestamp}"
    )


def _group_record(group: str, value: bytes | None) -> tuple[str, str]:
    key = f"group_metadata::group={group}"
    if value is None:
        return key, _DELETE
    meta = decode_group_value(value)
    members = ",".join(
        f"{m.member_id}={_assigned(meta.protocol_type, m.assignment)}" for m in meta.members
    )
    return key, (
        f"{meta.protocol_type}:{meta.protocol or ''}:{{{members}}}"
        f" generation={meta.generation} leader={meta.leader or ''}"
    )


def _consumer_group_record(key: ConsumerGroupKey, value: bytes | None) -> tuple[str, str]:
    """A record of a group of the new consumer protocol, as Kafka 4's dump prints one:
    the key's type and fields, the value's version and fields, in JSON."""
    data: dict[str, object] = {"groupId": key.group_id}
    if key.member_id is not None:
        data["memberId"] = key.member_id
    shown_key = _json({"type": str(key.record_type), "data": data})
    if value is None:
        return shown_key, _DELETE
    decoded = decode_consumer_group_value(key.record_type, value)
    return shown_key, _json({"version": "0", "data": _consumer_value(key.record_type, decoded)})


def _consumer_value(record_type: int, value: object) -> dict[str, object]:
    """A decoded value in the field names of Kafka's spec."""
    if record_type == CONSUMER_GROUP_METADATA:
        return {"epoch": value}
    if record_type == TARGET_ASSIGNMENT_METADATA:
        return {"assignmentEpoch": value}
    if record_type == PARTITION_METADATA:
        assert isinstance(value, dict)
        return {
            "topics": [
                {
                    "topicId": format_topic_id(info.topic_id),
                    "topicName": name,
                    "numPartitions": info.partitions,
                }
                for name, info in value.items()
            ]
        }
    if record_type == TARGET_ASSIGNMENT_MEMBER:
        assert isinstance(value, dict)
        return {"topicPartitions": _topic_partitions(value)}
    if record_type == MEMBER_METADATA:
        assert isinstance(value, MemberSubscription)
        return {
            "instanceId": value.instance_id,
            "rackId": value.rack_id,
            "clientId": value.client_id,
            "clientHost": value.client_host,
            "subscribedTopicNames": list(value.subscribed),
            "subscribedTopicRegex": value.regex,
            "rebalanceTimeoutMs": value.rebalance_timeout_ms,
            "serverAssignor": value.server_assignor,
        }
    assert record_type == CURRENT_MEMBER_ASSIGNMENT and isinstance(value, MemberAssignment)
    return {
        "memberEpoch": value.epoch,
        "previousMemberEpoch": value.previous_epoch,
        "state": value.state,
        "assignedPartitions": _topic_partitions(value.assigned),
        "partitionsPendingRevocation": _topic_partitions(value.pending),
    }


def _topic_partitions(assignment: dict[bytes, frozenset[int]]) -> list[dict[str, object]]:
    return [
        {"topicId": format_topic_id(t), "partitions": sorted(ps)}
        for t, ps in sorted(assignment.items())
    ]


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _assigned(protocol_type: str, assignment: bytes) -> str:
    if protocol_type != "consumer":
        return f"{len(assignment)} bytes"
    try:
        partitions = decode_assignment(assignment).partitions
    except ProtocolError:
        return "0x" + assignment.hex()
    return "[" + ",".join(f"{tp.topic}-{tp.partition}" for tp in partitions) + "]"


def _transaction_record(record: Record) -> tuple[str, str]:
    """A ``__transaction_state`` record (Kafka's TransactionLogMessageParser)."""
    if record.key is None:
        return _undecodable(record, "no key")
    try:
        txn_id = decode_txn_key(record.key)
        key = f"transaction_metadata::transactionalId={txn_id}"
        if record.value is None:
            return key, _DELETE
        meta = decode_txn_value(txn_id, record.value)
    except CorruptMessageError as exc:
        return _undecodable(record, exc)
    partitions = ",".join(f"{t}-{p}" for t, p in sorted(meta.partitions))
    return key, (
        f"producerId:{meta.producer_id},producerEpoch:{meta.producer_epoch},"
        f"state={meta.state.title},partitions=[{partitions}],"
        f"txnLastUpdateTimestamp={meta.last_update_ms},txnTimeoutMs={meta.timeout_ms}"
    )


DECODERS: dict[str, Decoder] = {
    "offsets": _offsets_record,
    "transaction-log": _transaction_record,
}
"""``headwater dump-log --offsets-decoder`` / ``--transaction-log-decoder``."""


def _marker(batch: _Batch) -> str | None:
    """A control batch's transaction marker, as Kafka's dump shows it; None if it holds
    none that reads."""
    try:
        committed, coordinator_epoch = read_end_txn_marker(
            batch.data, batch.header._replace(position=0)
        )
    except CorruptBatchError:
        return None
    return f"{'COMMIT' if committed else 'ABORT'} coordinatorEpoch: {coordinator_epoch}"


def _headers(record: Record) -> str:
    if not record.headers:
        return ""
    return " headers: " + ",".join(f"{k}:{_text(v)}" for k, v in record.headers)


def _size(value: bytes | None) -> int:
    return -1 if value is None else len(value)


def _text(value: bytes | None) -> str:
    """UTF-8 text as it is (Kafka's dump prints strings); anything else as hex."""
    if value is None:
        return "null"
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return "0x" + value.hex()
    return text if text.isprintable() else "0x" + value.hex()


def _bool(value: bool) -> str:
    return "true" if value else "false"


# --- index checks --------------------------------------------------------------------------


def _check_offset_index(
    entries: list[tuple[int, int]], batches: dict[int, BatchHeader]
) -> list[str]:
    by_position = {h.position: h for h in batches.values()}
    problems = []
    previous = (-1, -1)
    for offset, position in entries:
        if offset <= previous[0] or position <= previous[1]:
            problems.append(f"Entry (offset {offset}, position {position}) does not increase")
        header = by_position.get(position)
        if header is None:
            problems.append(f"Index offset: {offset}, position {position}: no batch starts there")
        elif header.base_offset != offset:
            problems.append(
                f"Index offset: {offset}, log offset: {header.base_offset} (position {position})"
            )
        previous = (offset, position)
    return problems


def _check_time_index(entries: list[tuple[int, int]], batches: dict[int, BatchHeader]) -> list[str]:
    problems = []
    previous = (-(2**63), -1)
    for timestamp, offset in entries:
        if timestamp <= previous[0] or offset < previous[1]:
            problems.append(
                f"Index entry (timestamp {timestamp}, offset {offset}) does not increase"
            )
        header = batches.get(offset)
        if header is None:
            problems.append(f"Index timestamp: {timestamp}, offset {offset}: no batch starts there")
        elif header.max_timestamp != timestamp:
            problems.append(
                f"Index timestamp: {timestamp}, log timestamp: {header.max_timestamp} "
                f"(offset {offset})"
            )
        previous = (timestamp, offset)
    return problems
