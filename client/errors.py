"""Errors only the client raises: they have no wire code of their own.

Everything a broker says arrives as the typed classes of :mod:`protocol.errors`; these
cover what Kafka's Java client decides locally, plus using a client outside its
start()/stop() (Kafka's IllegalStateException). :class:`NoOffsetForPartitionError` keeps
OFFSET_OUT_OF_RANGE's code (a local cause with the same meaning, as protocol.errors
allows), so code that catches :class:`~protocol.errors.OffsetOutOfRangeError` catches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.errors import HeadwaterError, NetworkError, OffsetOutOfRangeError

if TYPE_CHECKING:
    from client.types import TopicPartition

__all__ = [
    "ClientClosedError",
    "CommitFailedError",
    "ConfigurationError",
    "LogTruncationError",
    "NoOffsetForPartitionError",
    "TlsError",
    "TransactionAbortedError",
    "TransactionStateError",
]


class ConfigurationError(HeadwaterError, ValueError):
    """A client setting is wrong (Kafka's ConfigException); the message names it."""


class NoOffsetForPartitionError(OffsetOutOfRangeError):
    """A partition has no position and ``auto_offset_reset='none'`` forbids choosing one."""


class LogTruncationError(OffsetOutOfRangeError):
    """The partition's new leader does not have every record this consumer read from the
    old one (an unclean leader election cut them), and ``auto_offset_reset='none'`` forbids
    moving on by itself (Kafka's LogTruncationException, KIP-320). ``divergent_offsets``:
    per partition, the first offset whose record may differ from what was read; seek()
    there to read what the new leader has in their place (raised again until a seek)."""

    def __init__(self, message: str, divergent_offsets: dict[TopicPartition, int]) -> None:
        super().__init__(message)
        self.divergent_offsets = divergent_offsets


class TlsError(NetworkError):
    """A broker was reached but TLS with it is wrong (Kafka's SslAuthenticationException):
    a plaintext client at an SSL listener, a certificate its CA did not sign or that does
    not name the host. Not worth retrying as is; the message says what to check."""

    retriable = False


class ClientClosedError(HeadwaterError, RuntimeError):
    """A producer, consumer or admin used before ``start()`` or after ``stop()``."""


class CommitFailedError(HeadwaterError):
    """A group member's commit was refused because the group has rebalanced since this
    consumer's generation began (Kafka's CommitFailedException): its partitions may belong
    to another member now, and the records after its last successful commit will be
    delivered again. Not retriable as is: the consumer rejoins; commit what you process
    next. The broker's answer (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, ...) is the cause."""


class TransactionStateError(HeadwaterError, RuntimeError):
    """A transactional call out of turn (Kafka's IllegalStateException): ``send`` outside
    a transaction, ``begin_transaction`` inside one, ``commit_transaction`` after a record
    of the transaction failed (abort it instead). The message says which."""


class TransactionAbortedError(HeadwaterError):
    """A record of a transaction that failed before the record was sent (Kafka's
    TransactionAbortedException): nothing more of it is sent; abort the transaction."""
