"""``__transaction_state`` records (Kafka's TransactionLog v0 layout) and the client's
transaction states, without a broker."""

from __future__ import annotations

import struct

import pytest

from client.cluster import Cluster
from client.errors import TransactionStateError
from client.transactions import TransactionManager
from client.types import TopicPartition
from protocol.errors import CorruptMessageError, NotEnoughReplicasError, ProducerFencedError
from protocol.txn_log import (
    TxnMetadata,
    TxnState,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)


def test_records_round_trip_in_kafkas_layout() -> None:
    meta = TxnMetadata(
        "payments",
        producer_id=4001,
        producer_epoch=7,
        timeout_ms=60_000,
        state=TxnState.ONGOING,
        partitions={("orders", 1), ("orders", 0), ("__consumer_offsets", 12)},
        last_update_ms=1_700_000_000_123,
        start_ms=1_700_000_000_000,
    )
    key, value = encode_key("payments"), encode_value(meta)
    assert key == b"\x00\x00\x00\x08payments"
    # version 0, producer id, epoch, timeout, status: Kafka's fixed head
    assert struct.unpack_from(">hqhib", value) == (0, 4001, 7, 60_000, 1)
    assert decode_key(key) == "payments"
    back = decode_value("payments", value)
    assert (back.producer_id, back.producer_epoch, back.timeout_ms) == (4001, 7, 60_000)
    assert back.state == TxnState.ONGOING and back.partitions == meta.partitions
    assert (back.last_update_ms, back.start_ms) == (meta.last_update_ms, meta.start_ms)


@pytest.mark.parametrize(
    "key", [b"", b"\x00\x01\x00\x01a", b"\x00\x00\x00\x05ab", b"\x00\x00\x00\x01\xff"]
)
def test_a_bad_key_is_corrupt_not_a_crash(key: bytes) -> None:
    with pytest.raises(CorruptMessageError):
        decode_key(key)


def test_a_bad_value_is_corrupt_not_a_crash() -> None:
    good = encode_value(TxnMetadata("t", 1, 0, 1000, partitions={("a", 0)}))
    for bad in (good[:10], good[:-3], b"\x00\x01" + good[2:], good[:16] + b"\x09" + good[17:]):
        with pytest.raises(CorruptMessageError):
            decode_value("t", bad)


def test_the_states_that_allow_what() -> None:
    assert TxnState.PREPARE_COMMIT.completing and TxnState.PREPARE_ABORT.completing
    assert not TxnState.ONGOING.completing
    assert {s for s in TxnState if s.idle} == {
        TxnState.EMPTY,
        TxnState.COMPLETE_COMMIT,
        TxnState.COMPLETE_ABORT,
    }


def _manager() -> TransactionManager:
    return TransactionManager(
        Cluster("127.0.0.1:1", client_id="test"),
        "t",
        transaction_timeout_ms=1000,
        max_block_ms=1000,
        retry_backoff_ms=10,
    )


def test_the_client_refuses_calls_out_of_turn() -> None:
    txn = _manager()
    with pytest.raises(TransactionStateError, match="begin_transaction"):
        txn.check_sendable()
    txn.begin()
    with pytest.raises(TransactionStateError, match="open already"):
        txn.begin()
    txn.check_sendable()
    txn.want(TopicPartition("a", 0))
    assert list(txn.wanted) == [TopicPartition("a", 0)]


def test_a_failed_record_makes_the_transaction_abortable_and_fencing_fatal() -> None:
    txn = _manager()
    txn.begin()
    txn.fail(NotEnoughReplicasError("short"))
    assert txn.state == "abortable"
    with pytest.raises(TransactionStateError, match="abort_transaction"):
        txn.check_sendable()
    txn.fail(ProducerFencedError("newer"))
    assert txn.state == "fatal"
    with pytest.raises(ProducerFencedError):
        txn.check_usable()
