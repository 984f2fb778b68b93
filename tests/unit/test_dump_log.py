"""`headwater dump-log` on segments written by Log in a temporary directory: batches and,
with --print-data, records; index entries checked against the .log; a damaged index, a
damaged batch, a torn tail, a missing file: exit code 1 with one line on stderr."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from broker.log import Log, LogConfig
from broker.log.cleaner import LogCleaner
from broker.log.manager import LogManager
from client import TopicPartition, cli
from client.assignors import Assignment, encode_assignment
from protocol.consumer_group_log import (
    CONSUMER_GROUP_METADATA,
    CURRENT_MEMBER_ASSIGNMENT,
    MEMBER_METADATA,
    ConsumerGroupKey,
    MemberAssignment,
    encode_consumer_group_key,
    encode_consumer_group_value,
)
from protocol.group_log import (
    GroupMetadata,
    MemberMetadata,
    OffsetAndMetadata,
    encode_group_key,
    encode_group_value,
    encode_key,
    encode_value,
)
from protocol.records import encode_batch
from protocol.records.files import OFFSET_INDEX_ENTRY, segment_name
from protocol.txn_log import TxnMetadata, TxnState
from protocol.txn_log import encode_key as encode_txn_key
from protocol.txn_log import encode_value as encode_txn_value

CONFIG = LogConfig(index_interval_bytes=100, cleanup_policy="compact", file_delete_delay_ms=0)


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli.main, ["dump-log", *args])


def _fails(result: Result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("headwater: ")
    assert fragment in result.stderr, result.stderr


@pytest.fixture
def segment(tmp_path: Path) -> Path:
    """A closed log: a gzip batch with a header and a tombstone, an idempotent producer's
    batch, then plain batches enough for several index entries. Returns its .log path."""
    log = Log.open(tmp_path / "t-0", CONFIG)
    log.append(
        encode_batch(
            [
                (b"k0", b"zero", None, 1_000),
                (b"k1", b"one", [("h", b"x")], 1_001),
                (b"k2", None, None, 1_002),
            ],
            compression="gzip",
        ),
        leader_epoch=4,
    )
    log.append(
        encode_batch(
            [(b"p", b"\x00\xff", None, 1_003)], producer_id=9, producer_epoch=1, base_sequence=0
        ),
        leader_epoch=4,
    )
    for i in range(10):
        log.append(encode_batch([(b"k%d" % i, b"v" * 40, None, 2_000 + i)]), leader_epoch=5)
    log.close()
    return tmp_path / "t-0" / segment_name(0, ".log")


def test_batches_and_records_are_printed(segment: Path) -> None:
    result = _run(str(segment), "--print-data")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == [f"Dumping {segment}", "Log starting offset: 0"]
    first = lines[2]
    for part in (
        "baseOffset: 0 lastOffset: 2 count: 3",
        "producerId: -1",
        "partitionLeaderEpoch: 4",
        "isTransactional: false isControl: false",
        "position: 0 CreateTime: 1002",
        "magic: 2 compresscodec: gzip",
        "isvalid: true",
    ):
        assert part in first, first
    assert lines[3].startswith("| offset: 0 CreateTime: 1000 keySize: 2 valueSize: 4")
    assert lines[3].endswith("key: k0 payload: zero")
    assert lines[4].endswith("headerKeys: [h] key: k1 payload: one headers: h:x")
    assert "valueSize: -1" in lines[5] and lines[5].endswith("key: k2 payload: null")
    producer = lines[6]
    assert "baseOffset: 3 lastOffset: 3 count: 1 baseSequence: 0 lastSequence: 0" in producer
    assert "producerId: 9 producerEpoch: 1" in producer
    assert lines[7].endswith("sequence: 0 headerKeys: [] key: p payload: 0x00ff")
    assert sum(line.startswith("baseOffset:") for line in lines) == 12
    without = _run(str(segment))
    assert without.exit_code == 0 and not any(
        line.startswith("|") for line in without.output.splitlines()
    )


def test_indexes_are_printed_and_checked_against_the_log(segment: Path) -> None:
    index = segment.with_suffix(".index")
    timeindex = segment.with_suffix(".timeindex")
    result = _run(str(index), str(timeindex))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Dumping {index}"
    entries = [line for line in lines if line.startswith("offset: ")]
    assert len(entries) >= 5 and entries[0].startswith("offset: 3 position: ")
    assert f"Dumping {timeindex}" in lines
    assert "timestamp: 2009 offset: 13" in lines  # the final entry, written at close
    assert "Mismatches" not in result.output


def test_an_index_that_disagrees_with_its_log_is_reported(segment: Path) -> None:
    index = segment.with_suffix(".index")
    data = bytearray(index.read_bytes())
    relative, position = OFFSET_INDEX_ENTRY.unpack_from(data, 8)
    OFFSET_INDEX_ENTRY.pack_into(data, 8, relative, position + 3)  # not a batch boundary
    OFFSET_INDEX_ENTRY.pack_into(
        data, 16, relative + 5, OFFSET_INDEX_ENTRY.unpack_from(data, 16)[1]
    )
    index.write_bytes(bytes(data))
    result = _run(str(index))
    _fails(result, "damaged or inconsistent")
    assert f"Mismatches in {index}:" in result.output
    assert f"position {position + 3}: no batch starts there" in result.output
    assert f"Index offset: {relative + 5}, log offset:" in result.output


def test_a_damaged_batch_and_a_torn_tail_are_reported(segment: Path) -> None:
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF  # inside the last batch's records: its CRC no longer matches
    segment.write_bytes(bytes(data) + b"\x00\x00\x00\x00\x00\x00\x00\x0c\x00\x00\x01")
    result = _run(str(segment), "--print-data")
    _fails(result, str(segment))
    assert result.output.count("isvalid: false") == 1
    assert "Found 11 invalid bytes at position" in result.output


def test_missing_and_unknown_files_are_one_line_errors(tmp_path: Path) -> None:
    _fails(_run(str(tmp_path / segment_name(5, ".log"))), "no such file")
    _fails(_run(str(tmp_path / "notes.txt")), "not a segment file")
    (tmp_path / segment_name(0, ".index")).write_bytes(b"")
    orphan = _run(str(tmp_path / segment_name(0, ".index")))
    _fails(orphan, "damaged or inconsistent")
    assert "no 00000000000000000000.log beside it" in orphan.output


def test_a_compacted_segment_shows_its_delete_horizon_and_empty_batches(tmp_path: Path) -> None:
    asyncio.run(_compact(tmp_path))
    directory = tmp_path / "t-0"
    result = _run(str(directory / segment_name(0, ".log")), "--print-data")
    assert result.exit_code == 0, result.output
    batches = [line for line in result.output.splitlines() if line.startswith("baseOffset")]
    assert "baseOffset: 0 lastOffset: 1 count: 0" in batches[0]  # a producer's last batch
    assert "producerId: 3" in batches[0]
    assert "deleteHorizonMs: 86400005" in batches[1] and "count: 2" in batches[1]
    checked = _run(*(str(directory / segment_name(0, k)) for k in (".index", ".timeindex")))
    assert checked.exit_code == 0, checked.output


async def _compact(root: Path) -> None:
    manager = LogManager(
        [root], broker_id=1, cluster_id="c", default_config=CONFIG, clock=lambda: 5
    )
    manager.startup()
    log = manager.get_or_create_log("t", 0)
    ids = {"producer_id": 3, "producer_epoch": 0, "base_sequence": 0}
    log.append(encode_batch([(b"a", b"1", None, 1), (b"b", b"1", None, 1)], **ids))
    log.append(encode_batch([(b"a", b"2", None, 2), (b"b", None, None, 2)]))
    log.roll()
    cleaner = LogCleaner(manager, clock=lambda: 5)
    assert await cleaner.clean_once()
    await cleaner.stop()
    manager.shutdown()


def test_a_live_segments_preallocated_index_ends_at_its_entries(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", CONFIG)  # open: the active index is preallocated
    for i in range(6):
        log.append(encode_batch([(b"k", b"v" * 60, None, 10 + i)]))
    index = tmp_path / "t-0" / segment_name(0, ".index")
    assert index.stat().st_size == CONFIG.segment_index_bytes
    result = _run(str(index))
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("offset")] == [
        f"offset: {i} position: {130 * i}"
        for i in range(1, 6)  # 130-byte batches
    ]
    log.close()


def test_transaction_markers_are_printed_as_kafkas_dump_does(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "t-0", CONFIG)
    log.append(
        encode_batch(
            [(b"k", b"v", None, 1_000)],
            producer_id=7,
            producer_epoch=2,
            base_sequence=0,
            is_transactional=True,
        )
    )
    log.append_marker(producer_id=7, producer_epoch=2, committed=False, coordinator_epoch=5)
    log.close()
    result = _run(str(tmp_path / "t-0" / segment_name(0, ".log")), "--print-data")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "isTransactional: true isControl: false" in lines[2]
    assert "isTransactional: true isControl: true" in lines[4]
    assert lines[5].startswith("| offset: 1 ")
    assert lines[5].endswith("endTxnMarker: ABORT coordinatorEpoch: 5")


def test_internal_topics_records_are_decoded_as_kafkas_dump_does(tmp_path: Path) -> None:
    offsets = Log.open(tmp_path / "__consumer_offsets-0", CONFIG)
    assignment = encode_assignment(Assignment([TopicPartition("orders", 0)]))
    member = MemberMetadata("m-1", None, "app", "/10.0.0.1", 300_000, 45_000, b"", assignment)
    group = GroupMetadata("consumer", 3, "range", "m-1", 1_000, [member])
    records = [
        (encode_key("billing", "orders", 0), encode_value(OffsetAndMetadata(42, 5, "", 1_000))),
        (encode_group_key("billing"), encode_group_value(group)),
        (encode_key("billing", "orders", 1), None),
        (b"\x00\x09junk", b"junk"),  # a key kind this build does not know
        # a group of the new consumer protocol (Kafka 4's records, shown as its dump does)
        (
            encode_consumer_group_key(ConsumerGroupKey(CONSUMER_GROUP_METADATA, "billing")),
            encode_consumer_group_value(CONSUMER_GROUP_METADATA, 4),
        ),
        (
            encode_consumer_group_key(ConsumerGroupKey(CURRENT_MEMBER_ASSIGNMENT, "billing", "m")),
            encode_consumer_group_value(
                CURRENT_MEMBER_ASSIGNMENT,
                MemberAssignment(4, 3, 0, {b"\x01" * 16: frozenset({1, 0})}, {}),
            ),
        ),
        (encode_consumer_group_key(ConsumerGroupKey(MEMBER_METADATA, "billing", "x")), None),
    ]
    offsets.append(encode_batch([(k, v, None, 1_000) for k, v in records]))
    offsets.close()
    result = _run(
        str(tmp_path / "__consumer_offsets-0" / segment_name(0, ".log")), "--offsets-decoder"
    )
    assert result.exit_code == 0, result.output
    decoded = [
        line.split(" key: ", 1)[1] for line in result.output.splitlines() if " key: " in line
    ]
    assert decoded == [
        "offset_commit::group=billing,partition=orders-0 payload: "
        "offset=42,leaderEpoch=5,metadata=,commitTimestamp=1000",
        "group_metadata::group=billing payload: consumer:range:{m-1=[orders-0]} "
        "generation=3 leader=m-1",
        "offset_commit::group=billing,partition=orders-1 payload: <DELETE>",
        "0x00096a756e6b (cannot be decoded: a key version this build does not know) payload: junk",
        '{"type":"3","data":{"groupId":"billing"}} payload: {"version":"0","data":{"epoch":4}}',
        '{"type":"8","data":{"groupId":"billing","memberId":"m"}} payload: {"version":"0",'
        '"data":{"memberEpoch":4,"previousMemberEpoch":3,"state":0,"assignedPartitions":'
        '[{"topicId":"AQEBAQEBAQEBAQEBAQEBAQ","partitions":[0,1]}],'
        '"partitionsPendingRevocation":[]}}',
        '{"type":"5","data":{"groupId":"billing","memberId":"x"}} payload: <DELETE>',
    ]

    txns = Log.open(tmp_path / "__transaction_state-0", CONFIG)
    meta = TxnMetadata("app-1", 7, 2, 60_000, TxnState.ONGOING, {("orders", 1), ("orders", 0)}, 5)
    txns.append(
        encode_batch(
            [
                (encode_txn_key("app-1"), encode_txn_value(meta), None, 1_000),
                (encode_txn_key("gone"), None, None, 1_000),
            ]
        )
    )
    txns.close()
    path = tmp_path / "__transaction_state-0" / segment_name(0, ".log")
    result = _run(str(path), "--transaction-log-decoder")
    assert result.exit_code == 0, result.output
    decoded = [
        line.split(" key: ", 1)[1] for line in result.output.splitlines() if " key: " in line
    ]
    assert decoded == [
        "transaction_metadata::transactionalId=app-1 payload: producerId:7,producerEpoch:2,"
        "state=Ongoing,partitions=[orders-0,orders-1],txnLastUpdateTimestamp=5,"
        "txnTimeoutMs=60000",
        "transaction_metadata::transactionalId=gone payload: <DELETE>",
    ]
    both = _run(str(path), "--offsets-decoder", "--transaction-log-decoder")
    assert both.exit_code == 2 and "exclude each other" in both.stderr
