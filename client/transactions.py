"""A transactional producer's side of Kafka's transaction protocol (the Java client's
TransactionManager), without the records: :class:`~client.producer.Producer` sends those.

States: ``ready`` (no transaction), ``in_transaction`` (after ``begin``), ``abortable``
(a record or a request of the transaction failed: it cannot commit, only ``abort``
leaves it) and ``fatal`` (fenced, or refused for good: only ``stop`` is left). While a
commit or abort is under way ``ending`` says which (Kafka's COMMITTING_TRANSACTION and
ABORTING_TRANSACTION: nothing joins the transaction), and stays set with
``outcome_unknown`` after an EndTxn whose outcome is not known: only the same end again,
or ``stop``.

Every request goes to the id's transaction coordinator (:class:`CoordinatorLine`),
found again when it moves, and is retried while the coordinator says
CONCURRENT_TRANSACTIONS (it is finishing the last transaction) or is loading, until
``max_block_ms``.

A partition joins the transaction (AddPartitionsToTxn) before its first batch of the
transaction is sent: ``send`` names it, the producer's sender holds its batches until
:meth:`TransactionManager.add_partitions` has added it. The offsets of a consume-process-
produce loop join with :meth:`send_offsets` (AddOffsetsToTxn, then TxnOffsetCommit to the
group's coordinator), and count only if the transaction commits.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from client.cluster import Cluster
from client.coordinator import CommitOffsets, CoordinatorLine, GroupOffsets, commit_topics
from client.errors import TransactionStateError
from client.types import ConsumerGroupMetadata, TopicPartition
from protocol.apis import (
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    AddPartitionsToTxnTopic,
    ApiKey,
    CoordinatorType,
    EndTxnRequest,
    InitProducerIdRequest,
    InitProducerIdResponse,
    OffsetCommitRequestTopic,
    TxnOffsetCommitRequest,
)
from protocol.errors import (
    ApiError,
    ConcurrentTransactionsError,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    InvalidTxnStateError,
    ProducerFencedError,
    TransactionalIdAuthorizationFailedError,
    error_for_code,
)

__all__ = ["TransactionManager"]

_CONCURRENT_BACKOFF_S = (0.001, 0.002, 0.005, 0.01, 0.02)
"""Waits before asking again while the coordinator answers CONCURRENT_TRANSACTIONS: it is
writing the last transaction's markers, which takes a few ms. Kafka's producer waits 20 ms;
starting at 1 ms, the next transaction begins ~20 ms sooner. After these, retry_backoff_ms
each time (markers held up by a partition without a leader: not 50 requests a second)."""


_FATAL = (
    ProducerFencedError,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    TransactionalIdAuthorizationFailedError,
)


def outcome_unknown(error: BaseException) -> bool:
    """Whether an EndTxn that raised ``error`` may still have been carried out: anything
    but the coordinator's INVALID_TXN_STATE (no transaction of it open: not ended now)
    and the fatal answers (review 103: an unexpected error, UNKNOWN_SERVER_ERROR say,
    proves nothing either; Kafka's producer takes those as fatal)."""
    return not isinstance(error, (InvalidTxnStateError, *_FATAL))


class TransactionManager:
    def __init__(
        self,
        cluster: Cluster,
        transactional_id: str,
        *,
        transaction_timeout_ms: int,
        max_block_ms: int,
        retry_backoff_ms: int,
    ) -> None:
        self.transactional_id = transactional_id
        self.timeout_ms = transaction_timeout_ms
        self._cluster = cluster
        self._line = CoordinatorLine(
            cluster,
            transactional_id,
            key_type=CoordinatorType.TRANSACTION,
            request_timeout_ms=max_block_ms,
            retry_backoff_ms=retry_backoff_ms,
        )
        self._max_block_s = max_block_ms / 1000
        self._retry_backoff_ms = retry_backoff_ms
        self.state = "ready"
        self.error: BaseException | None = None
        """Why the transaction is abortable, or the producer fatally failed."""
        self.producer_id = -1
        self.producer_epoch = -1
        self.added: set[TopicPartition] = set()
        """Partitions in the transaction (their batches may be sent)."""
        self.wanted: dict[TopicPartition, None] = {}
        """Partitions with records in the transaction, not added yet."""
        self.offsets_added = False
        self.ending: str | None = None
        """"committed" or "aborted" while commit_transaction() or abort_transaction() is
        under way (Kafka's COMMITTING_TRANSACTION and ABORTING_TRANSACTION): nothing more
        joins the transaction, so every batch of it is older than the flush before EndTxn.
        It stays set after an EndTxn whose outcome is not known (``outcome_unknown``)."""
        self.generation = 0
        """Counts the transactions begun: a step that waited (a send, an Add) checks it
        is still in the one it began in (review 104)."""
        self.outcome_unknown = False
        """The EndTxn got no answer (a timeout, a lost connection, cancelled), or one that
        proves nothing (see :func:`outcome_unknown`): the coordinator may have ended the
        transaction. Only the same end may be asked again (a commit already made is
        answered as done), or the producer stopped: Kafka's rule after a commit times
        out."""
        self._offsets_busy = 0
        self._offsets_idle = asyncio.Event()
        self._offsets_idle.set()
        self._asked = False
        """An Add* request went out in this transaction: the coordinator may hold it open
        even if its answer was lost, so ending it always asks."""

    # --- the producer id --------------------------------------------------------------------

    async def init(self) -> tuple[int, int]:
        """InitProducerId for the transactional id: fences any older producer of it,
        aborting a transaction it left open. With a producer id already (a broken
        sequence, KIP-360), asks for that one's next epoch."""
        request = InitProducerIdRequest(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.timeout_ms,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
        )
        response: InitProducerIdResponse = await self._call(ApiKey.INIT_PRODUCER_ID, request)
        self.producer_id, self.producer_epoch = response.producer_id, response.producer_epoch
        return self.producer_id, self.producer_epoch

    # --- the transaction ---------------------------------------------------------------------

    def begin(self) -> None:
        self.check_usable()
        if self.outcome_unknown:
            raise TransactionStateError(self.unknown_outcome_message())
        if self.state != "ready":
            raise TransactionStateError(
                "a transaction is open already: commit or abort it before beginning another"
            )
        self.state = "in_transaction"
        self.generation += 1
        self.added.clear()
        self.wanted.clear()
        self.offsets_added = self._asked = False

    def check_usable(self) -> None:
        if self.state == "fatal":
            assert self.error is not None
            raise self.error

    def check_sendable(self) -> None:
        """``send`` may add to the transaction now (raises why not)."""
        if self.state == "in_transaction" and self.ending is None:
            return
        self.check_usable()
        if self.outcome_unknown:
            raise TransactionStateError(self.unknown_outcome_message())
        if self.ending is not None:
            # Kafka refuses it too: sent now, a batch could reach its partition after
            # the marker, and be taken into the producer's next transaction there
            raise TransactionStateError(
                f"the transaction is being {self.ending}: nothing more joins it; send "
                "after commit_transaction() or abort_transaction() returns, in the next "
                "transaction"
            )
        self.check_open()

    def unknown_outcome_message(self) -> str:
        again = "commit_transaction()" if self.ending == "committed" else "abort_transaction()"
        return (
            f"the transaction's EndTxn got no clear answer, so it may have been "
            f"{self.ending}: call {again} again (one already done is answered as done), or "
            "stop(); nothing else can be done with it"
        )

    async def offsets_settled(self) -> None:
        """Until no ``send_offsets`` is under way (commit and abort wait: offsets that
        reached the group after the marker would be left pending there)."""
        await self._offsets_idle.wait()

    def check_still(self, generation: int) -> None:
        """:meth:`check_sendable`, and still in the transaction ``generation`` (a send
        that waited for metadata or buffer space must not join the next one)."""
        self.check_sendable()
        if self.generation != generation:
            raise TransactionStateError(
                "the transaction this record was sent in ended while send() waited (for "
                "metadata or buffer space): it was not sent; send it again if it belongs "
                "in the transaction open now"
            )

    def check_open(self) -> None:
        """The transaction is open and can still commit (raises why not)."""
        if self.state == "in_transaction":
            return
        self.check_usable()
        if self.state == "abortable":
            raise TransactionStateError(
                f"the transaction failed ({self.error}); abort_transaction() first"
            )
        raise TransactionStateError(
            "a transactional producer sends inside a transaction: begin_transaction() first"
        )

    def want(self, tp: TopicPartition) -> None:
        """``send`` put a record of the transaction in ``tp``."""
        if tp not in self.added:
            self.wanted[tp] = None

    def fail(self, error: BaseException) -> None:
        """A record or request of the transaction failed: it can only be aborted (or,
        fenced, the producer is done)."""
        if isinstance(error, _FATAL):
            self.state, self.error = "fatal", error
        elif self.state == "in_transaction":
            self.state, self.error = "abortable", error

    async def add_partitions(self) -> None:
        """AddPartitionsToTxn for the wanted partitions (the sender starts it)."""
        todo = list(self.wanted)
        by_topic: dict[str, list[int]] = {}
        for tp in todo:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        request = AddPartitionsToTxnRequest(
            transactional_id=self.transactional_id,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            topics=[AddPartitionsToTxnTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
        )

        def check(response: AddPartitionsToTxnResponse) -> None:
            for topic in response.results:
                for p in topic.results:
                    if p.error_code:
                        raise error_for_code(
                            p.error_code,
                            p.error_message or f"{topic.name}-{p.partition_index} was not added",
                        )

        self._asked = True
        generation = self.generation
        try:
            await self._call(ApiKey.ADD_PARTITIONS_TO_TXN, request, check)
        except (ApiError, TimeoutError) as exc:
            if self.generation != generation:
                return  # answered after its transaction ended: nothing of the next one's
            self.fail(exc)
            raise
        if self.generation != generation:
            return
        for tp in todo:
            self.wanted.pop(tp, None)
            self.added.add(tp)

    async def send_offsets(self, offsets: CommitOffsets, group: ConsumerGroupMetadata) -> None:
        """The consumer positions ``offsets`` of ``group`` join the transaction: they are
        the group's committed offsets if, and only if, it commits."""
        group_id = group.group_id
        topics = commit_topics(offsets)  # a bad offset is refused before anything is sent
        self.check_sendable()
        self._asked = True
        self._offsets_busy += 1
        self._offsets_idle.clear()
        try:
            await self._call(
                ApiKey.ADD_OFFSETS_TO_TXN,
                AddOffsetsToTxnRequest(
                    transactional_id=self.transactional_id,
                    producer_id=self.producer_id,
                    producer_epoch=self.producer_epoch,
                    group_id=group_id,
                ),
            )
            self.offsets_added = True
            await self._commit_offsets(topics, group)
        except (ApiError, TimeoutError) as exc:
            self.fail(exc)
            raise
        finally:
            self._offsets_busy -= 1
            if not self._offsets_busy:
                self._offsets_idle.set()

    async def _commit_offsets(
        self, topics: list[OffsetCommitRequestTopic], group: ConsumerGroupMetadata
    ) -> None:
        group_id = group.group_id
        request = TxnOffsetCommitRequest(
            transactional_id=self.transactional_id,
            group_id=group_id,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            generation_id=group.generation_id,
            member_id=group.member_id,
            group_instance_id=group.group_instance_id,
            topics=topics,
        )

        coordinator = GroupOffsets(
            self._cluster,
            group_id,
            request_timeout_ms=int(self._max_block_s * 1000),
            retry_backoff_ms=self._retry_backoff_ms,
        )
        await coordinator.commit_call(ApiKey.TXN_OFFSET_COMMIT, request, "the transaction's commit")

    async def end(self, committed: bool) -> None:
        """EndTxn: commit or abort what the coordinator holds of this transaction (if
        anything was added to it), then ready for the next."""
        if self._asked:
            request = EndTxnRequest(
                transactional_id=self.transactional_id,
                producer_id=self.producer_id,
                producer_epoch=self.producer_epoch,
                committed=committed,
            )
            try:
                await self._call(ApiKey.END_TXN, request)
            except InvalidTxnStateError as exc:
                if committed:
                    # not committed there (aborted, or nothing of it open): it can only be
                    # aborted now (review 103: it stayed open to sends)
                    self.fail(exc)
                    raise
                # nothing open there: the Add* whose answer was lost never took effect (a
                # commit before it got INVALID_TXN_STATE too, or abort would be refused)
            except (ApiError, TimeoutError) as exc:
                if isinstance(exc, _FATAL):
                    self.fail(exc)
                raise  # any other: its outcome is unknown (see outcome_unknown)
        self.state, self.error = "ready", None
        self.added.clear()
        self.wanted.clear()
        self.offsets_added = self._asked = False

    # --- requests -------------------------------------------------------------------------

    async def _call(self, api_key: ApiKey, request: object, check: object = None) -> Any:
        """To the coordinator, retried while it is busy with the last transaction."""
        deadline = time.monotonic() + self._max_block_s
        tries = 0
        while True:
            try:
                return await self._line.call(
                    api_key, request, check, busy=(ConcurrentTransactionsError,)
                )
            except ConcurrentTransactionsError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(
                    _CONCURRENT_BACKOFF_S[tries]
                    if tries < len(_CONCURRENT_BACKOFF_S)
                    else self._retry_backoff_ms / 1000
                )
                tries += 1
