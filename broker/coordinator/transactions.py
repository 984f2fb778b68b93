"""The transaction coordinator (Kafka's TransactionCoordinator, KIP-98).

A transactional id lives in partition ``abs(java_hash(id)) % transaction.state.log.num.
partitions`` of ``__transaction_state`` (created, replicated, compacted, on the first
FindCoordinator of key type 1); that partition's leader is the id's coordinator, and its
leader epoch the coordinator epoch its markers carry. It loads the partition when it
becomes leader (COORDINATOR_LOAD_IN_PROGRESS meanwhile) and forgets it when it stops
(NOT_COORDINATOR). Every change of an id's state is appended with acks=all before it is
answered (:mod:`protocol.txn_log` has the records), so a new coordinator
resumes where the old one was: a transaction it finds in PrepareCommit or PrepareAbort
gets its markers written again, and completes.

The protocol, as Kafka's:

- **InitProducerId** with a transactional id: a new id gets a producer id (from the
  cluster's blocks, :class:`ProducerIdManager`) and epoch 0; a known one gets its epoch
  bumped, which fences the previous incarnation (its requests are PRODUCER_FENCED from
  then on). A transaction it left open is aborted first, under the new epoch
  (CONCURRENT_TRANSACTIONS until done: the client retries). An epoch near the top of its
  range moves to a new producer id. KIP-360: a producer retrying with the id and epoch
  it had gets the bump it may have missed the answer to.
- **AddPartitionsToTxn / AddOffsetsToTxn**: the transaction is Ongoing with those
  partitions (the group's ``__consumer_offsets`` partition for offsets); its timeout
  starts with the first.
- **EndTxn**: PrepareCommit or PrepareAbort is written and answered; then markers go to
  every partition (:class:`MarkerWriter`), and CompleteCommit/CompleteAbort is written.
  Until then the id answers CONCURRENT_TRANSACTIONS (the client retries).
- A transaction Ongoing past its ``transaction.timeout.ms`` is aborted by the coordinator
  under a bumped epoch (the producer is fenced, as Kafka's); an id idle for
  ``transactional.id.expiration.ms`` is forgotten (a tombstone).

One change of an id at a time: a write in flight marks it ``pending`` and anything else
for it is CONCURRENT_TRANSACTIONS, retriable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from broker.admin import TopicAdmin
from broker.authorizer import (
    Authorizer,
    group_not_authorized,
    topic_not_authorized,
    transactional_id_not_authorized,
)
from broker.config import BrokerConfig
from broker.coordinator.doubt import Doubt
from broker.coordinator.markers import MarkersFenced, MarkerWriter
from broker.coordinator.placement import coordinator_of, replication_factor
from broker.coordinator.producer_ids import ProducerIdManager
from broker.log.manager import TopicPartition
from broker.metadata import MetadataCache
from broker.metrics import Sample, counter, gauge
from broker.replica.manager import ReplicaManager
from broker.replica.partition import Partition
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse,
    AddPartitionsToTxnPartitionResult,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    AddPartitionsToTxnTopicResult,
    CreatableTopic,
    CreatableTopicConfig,
    DescribeTransactionsRequest,
    DescribeTransactionsResponse,
    EndTxnRequest,
    EndTxnResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListedTransaction,
    ListTransactionsRequest,
    ListTransactionsResponse,
    TransactionStateData,
    TransactionTopicData,
    WritableTxnMarker,
)
from protocol.errors import (
    ApiError,
    ConcurrentTransactionsError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    CorruptMessageError,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    InvalidRequestError,
    InvalidTransactionTimeoutError,
    InvalidTxnStateError,
    NotCoordinatorError,
    NotLeaderOrFollowerError,
    OperationNotAttemptedError,
    ProducerFencedError,
    TransactionalIdNotFoundError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from protocol.group_log import OFFSETS_TOPIC, partition_for
from protocol.records import decode_batches, encode_batch
from protocol.txn_log import (
    TRANSACTION_TOPIC,
    TxnMetadata,
    TxnState,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)

__all__ = ["TransactionCoordinator"]

_TXN_IDS = gauge(
    "headwater_transactional_ids", "Transactional ids this broker coordinates, by state."
)
_COMMITTED = counter(
    "headwater_transactions_committed_total", "Transactions this broker completed as committed."
)
_ABORTED = counter(
    "headwater_transactions_aborted_total", "Transactions this broker completed as aborted."
)
_TIMED_OUT = counter(
    "headwater_transactions_timed_out_total",
    "Transactions this broker aborted past their transaction.timeout.ms.",
)

_MAX_EPOCH = 32_767 - 1  # Kafka bumps to a new producer id before the epoch overflows
_WRITE_TIMEOUT_MS = 5_000
_LOAD_READ_BYTES = 1 << 20
_RETRY_S = 0.5


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TransactionCoordinator:
    def __init__(
        self,
        broker_id: int,
        config: BrokerConfig,
        metadata: MetadataCache,
        replicas: ReplicaManager,
        admin: TopicAdmin,
        *,
        producer_ids: ProducerIdManager,
        markers: MarkerWriter,
        authorizer: Authorizer | None = None,
        clock: Callable[[], int] = _now_ms,
        doubt: Doubt | None = None,
        still_leads: Callable[[int], Awaitable[bool]] | None = None,
    ) -> None:
        """``doubt``: whether this broker's view of who coordinates what is current (its
        ZooKeeper session surely alive, no stall's hold under way); every answer from a
        loaded partition waits for it (COORDINATOR_NOT_AVAILABLE meanwhile), and a
        transaction's timeout does not count the time it was in doubt."""
        self.broker_id = broker_id
        self._doubt = doubt or Doubt(lambda: True, broker_id=broker_id)
        self._still_leads = still_leads
        """``still_leads(partition)``: ZooKeeper's word that this broker leads that
        partition of the log at the leader epoch it knows (None: not asked)."""
        self._config = config
        self._metadata = metadata
        self._replicas = replicas
        self._admin = admin
        self._producer_ids = producer_ids
        self._markers = markers
        self._acl = authorizer or Authorizer()
        self._clock = clock
        self.num_partitions = int(config["transaction.state.log.num.partitions"])
        self._max_timeout_ms = int(config["transaction.max.timeout.ms"])
        self._expiration_ms = int(config["transactional.id.expiration.ms"])
        self.stores: dict[int, dict[str, TxnMetadata]] = {}
        """Loaded partitions: transactional id -> its state."""
        self.epochs: dict[int, int] = {}
        """The coordinator epoch of each loaded partition (its leader epoch at the load)."""
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._loaded_at: dict[int, int] = {}
        """When each loaded partition was (the doubt's clock)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._timed_out: dict[str, tuple[int, int, int]] = {}
        """Transactional id -> (producer id, the epoch its timeout's abort fenced it with,
        the timeout ms): a producer fenced so is told why, not that another producer took
        over. Held while the id's partition is loaded here (a coordinator elsewhere says
        the general reason), and only while that fence is the id's latest."""
        self._moved_on: dict[str, tuple[TxnMetadata, int, int]] = {}
        """Transactional id -> (its state, producer id, epoch): that producer asked to add
        partitions while its last transaction's markers were being written (refused
        CONCURRENT_TRANSACTIONS), so it has begun the next one. An abort of that one,
        empty, is answered as done (:meth:`end_txn`). Held until the id's next change."""
        self.committed = self.aborted = self.timed_out = 0
        """Transactions completed here (markers written, Complete* stored) since start."""
        self._log = structlog.get_logger("headwater.txn_coordinator").bind(broker_id=broker_id)
        replicas.on_role_change(self._on_role_change)

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        tasks = [t for t in (self._ticker, *self._loading.values(), *self._tasks) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- which partitions are ours ------------------------------------------------------

    def _on_role_change(self, tp: TopicPartition, partition: Partition | None) -> None:
        if tp.topic != TRANSACTION_TOPIC:
            return
        index = tp.partition
        leading = partition is not None and partition.is_leader
        if leading and (index in self.stores or index in self._loading):
            return  # still the leader (a follower left the ISR): nothing changes
        self._unload(index)
        if partition is not None and leading:
            task = asyncio.get_running_loop().create_task(self._load(index, partition))
            self._loading[index] = task

    def _loaded(self, index: int, store: dict[str, TxnMetadata], epoch: int) -> None:
        self.stores[index] = store
        self.epochs[index] = epoch
        self._loaded_at[index] = self._doubt.now()

    def _doubt_since(self, index: int, window_ms: int) -> int:
        """How much of the last ``window_ms`` this broker was in doubt while it held
        ``index``: a doubt before it loaded the partition refused none of its producers
        (the transaction had another coordinator then)."""
        loaded_at = self._loaded_at.get(index)
        if loaded_at is not None:
            window_ms = min(window_ms, self._doubt.now() - loaded_at)
        return self._doubt.within_ms(window_ms)

    def _unload(self, index: int) -> None:
        loading = self._loading.pop(index, None)
        if loading is not None:
            loading.cancel()
        self._loaded_at.pop(index, None)
        store = self.stores.pop(index, None)
        if store is not None:
            self.epochs.pop(index, None)
            for txn_id in store:
                self._timed_out.pop(txn_id, None)
                self._moved_on.pop(txn_id, None)
            self._log.info("txn.unloaded", partition=index)

    async def _load(self, index: int, partition: Partition) -> None:
        """Read the partition from its start (later records win, tombstones forget), then
        finish the transactions it left with markers to write. A failed read is tried
        again while this broker leads."""
        epoch = partition.leader_epoch
        while True:
            try:
                store = await self._read(index, partition)
                break
            except Exception:
                self._log.exception("txn.load_failed", partition=index)
                await asyncio.sleep(_RETRY_S)
        if self._loading.get(index) is not asyncio.current_task():
            return
        del self._loading[index]
        self._loaded(index, store, epoch)
        self._log.info("txn.loaded", partition=index, transactional_ids=len(store), epoch=epoch)
        for meta in store.values():
            if meta.state.completing:
                self._spawn(self._complete(index, store, meta))

    async def _read(self, index: int, partition: Partition) -> dict[str, TxnMetadata]:
        store: dict[str, TxnMetadata] = {}
        offset, end = partition.log.log_start_offset, partition.log.log_end_offset
        while offset < end:
            # looked up for each chunk: a move between data directories may swap in
            # its copy (the same records at the same offsets)
            data = partition.log.read(offset, _LOAD_READ_BYTES, max_offset=end)
            if data is None:
                break
            for batch in decode_batches(data.read()):
                for record in batch:
                    if record.offset < offset or record.key is None:
                        continue
                    try:
                        txn_id = decode_key(record.key)
                        if record.value is None:
                            store.pop(txn_id, None)
                        else:
                            store[txn_id] = decode_value(txn_id, record.value)
                    except CorruptMessageError as exc:
                        self._log.warning("txn.bad_record", partition=index, error=str(exc))
                offset = batch.next_offset
            await asyncio.sleep(0)  # a large partition loads without holding the loop
        return store

    def _store_for(self, transactional_id: str) -> tuple[int, dict[str, TxnMetadata]]:
        if not transactional_id:
            raise InvalidRequestError("a transactional id must not be empty")
        index = partition_for(transactional_id, self.num_partitions)
        store = self.stores.get(index)
        if store is not None:
            if not self._doubt.known():
                self._doubt.refused()
                # cut off from ZooKeeper, this broker may have lost the id to another
                # without hearing of it: no answer from a view that may be stale (a
                # verification's "not in a transaction", a commit already complete, a
                # fence all end something for the producer). Retriable: it looks again
                raise CoordinatorNotAvailableError(
                    f"broker {self.broker_id} cannot tell whether it still coordinates "
                    f"transactional id {transactional_id!r}: its ZooKeeper session is in "
                    "doubt; retry"
                )
            return index, store
        if index in self._loading:
            raise CoordinatorLoadInProgressError(
                f"transactional id {transactional_id!r}: its state is being loaded; retry"
            )
        raise NotCoordinatorError(
            f"broker {self.broker_id} is not the coordinator of transactional id "
            f"{transactional_id!r}; find it again"
        )

    # --- FindCoordinator ----------------------------------------------------------------

    async def find_coordinator(
        self, request: FindCoordinatorRequest, listener: str
    ) -> FindCoordinatorResponse:
        self._check_id(request.key)
        return await coordinator_of(
            self._metadata,
            TRANSACTION_TOPIC,
            self.num_partitions,
            request.key,
            listener,
            create=self._create_topic,
            what="transactional id",
            broker_id=self.broker_id,
            doubt=self._doubt,
        )

    async def _create_topic(self) -> None:
        cfg = self._config
        factor = replication_factor(
            int(cfg["transaction.state.log.replication.factor"]), self._metadata
        )
        min_isr = min(int(cfg["transaction.state.log.min.isr"]), factor)
        await self._admin.create_internal(
            CreatableTopic(
                name=TRANSACTION_TOPIC,
                num_partitions=self.num_partitions,
                replication_factor=factor,
                configs=[
                    CreatableTopicConfig(name="cleanup.policy", value="compact"),
                    CreatableTopicConfig(name="min.insync.replicas", value=str(min_isr)),
                    CreatableTopicConfig(
                        name="segment.bytes", value=str(cfg["transaction.state.log.segment.bytes"])
                    ),
                ],
            )
        )

    def _check_id(self, transactional_id: str) -> None:
        if not transactional_id:
            raise InvalidRequestError("a transactional id must not be empty")
        if not self._acl.allowed(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
            raise transactional_id_not_authorized(transactional_id, Operation.WRITE)

    # --- InitProducerId -----------------------------------------------------------------

    async def init_producer_id(self, request: InitProducerIdRequest) -> InitProducerIdResponse:
        assert request.transactional_id is not None
        txn_id = request.transactional_id
        self._check_id(txn_id)
        timeout = request.transaction_timeout_ms
        if not 0 < timeout <= self._max_timeout_ms:
            raise InvalidTransactionTimeoutError(
                f"transaction_timeout_ms={timeout} must be from 1 to the broker's "
                f"transaction.max.timeout.ms ({self._max_timeout_ms})"
            )
        index, store = self._store_for(txn_id)
        meta = store.get(txn_id)
        if meta is None:
            meta = store[txn_id] = TxnMetadata(txn_id, -1, -1, timeout, pending=True)
            try:
                producer_id = await self._producer_ids.next_id()
                new = TxnMetadata(txn_id, producer_id, 0, timeout, TxnState.EMPTY)
                new.last_update_ms = self._clock()
                await self._write(index, store, meta, new)
            except BaseException:
                if store.get(txn_id) is meta and meta.producer_id < 0:
                    del store[txn_id]  # never written: as if it had not come
                raise
            return InitProducerIdResponse(producer_id=meta.producer_id, producer_epoch=0)
        if meta.pending or meta.state.completing:
            raise _concurrent(txn_id)
        if request.producer_id >= 0:
            if _answer_lost(meta, request.producer_id, request.producer_epoch):
                return InitProducerIdResponse(
                    producer_id=meta.producer_id, producer_epoch=meta.producer_epoch
                )
            if (request.producer_id, request.producer_epoch) != (
                meta.producer_id,
                meta.producer_epoch,
            ):
                await self._vouch(txn_id)  # a fence from state alone: ours to give?
                raise ProducerFencedError(
                    f"transactional id {txn_id!r} has moved on from producer "
                    f"{request.producer_id} epoch {request.producer_epoch}"
                )
        self._moved_on.pop(txn_id, None)
        if meta.state == TxnState.ONGOING:
            # the previous incarnation left it open: abort it under a new epoch (which
            # fences that incarnation), and have this one retry once it is done
            await self._end(index, store, meta, committed=False, bump=True)
            raise _concurrent(txn_id)
        new = _copy(meta)
        new.timeout_ms = timeout
        new.state = TxnState.EMPTY
        new.partitions = set()
        new.start_ms = -1
        new.last_update_ms = self._clock()
        await self._bump(index, store, meta, new, asked=request.producer_id >= 0)
        await self._write(index, store, meta, new)
        self._log.info(
            "txn.producer_epoch",
            transactional_id=txn_id,
            producer_id=new.producer_id,
            epoch=new.producer_epoch,
        )
        return InitProducerIdResponse(
            producer_id=new.producer_id, producer_epoch=new.producer_epoch
        )

    async def _bump(
        self,
        index: int,
        store: dict[str, TxnMetadata],
        meta: TxnMetadata,
        new: TxnMetadata,
        *,
        asked: bool,
    ) -> None:
        """``new``'s epoch: the next, or epoch 0 of a new producer id once they are spent.
        Only the producer's own bump (``asked``: KIP-360, it gave its id) may be asked
        for again with what it had; a new incarnation's fences the old one (review 107:
        its zombie was handed the new id and epoch)."""
        new.last_producer_epoch = meta.producer_epoch if asked else -1
        new.last_producer_id = -1
        if meta.producer_epoch < _MAX_EPOCH:
            new.producer_epoch = meta.producer_epoch + 1
            return
        meta.pending = True  # nothing else changes it while a new id is fetched
        try:
            new.producer_id = await self._producer_ids.next_id()
        finally:
            meta.pending = False
        if store.get(meta.transactional_id) is not meta or self.stores.get(index) is not store:
            raise _concurrent(meta.transactional_id)
        new.producer_epoch = 0
        if asked:
            new.last_producer_id = meta.producer_id

    # --- AddPartitionsToTxn / AddOffsetsToTxn -------------------------------------------

    async def add_partitions(
        self, request: AddPartitionsToTxnRequest
    ) -> AddPartitionsToTxnResponse:
        wanted = [(t.name, p) for t in request.topics for p in t.partitions]
        if request.verify_only:  # from another broker's partition leader
            self._acl.check_cluster(Operation.CLUSTER_ACTION, "verify a transaction's partitions")
            return await self.verify_partitions(request)
        try:
            self._check_id(request.transactional_id)
            refused = self._refused(wanted)
            if not refused:
                await self._add(
                    request.transactional_id,
                    request.producer_id,
                    request.producer_epoch,
                    set(wanted),
                )
        except ApiError as exc:
            refused = dict.fromkeys(wanted, exc)
        else:
            if refused:
                not_tried = OperationNotAttemptedError(
                    "another partition of the request was refused: nothing was added"
                )
                refused = {tp: refused.get(tp, not_tried) for tp in wanted}
        return _results(wanted, refused)

    async def verify_partitions(
        self, request: AddPartitionsToTxnRequest
    ) -> AddPartitionsToTxnResponse:
        """KIP-890: which of the request's partitions are not in the producer's ongoing
        transaction. A partition leader asks before it appends a transaction's first batch
        there, so a produce request it reads late (after the transaction ended) cannot
        open one that no marker will end. Adds nothing. Called directly by this broker's
        own partition leaders (the produce's principal is not the one asking)."""
        wanted = [(t.name, p) for t in request.topics for p in t.partitions]
        refused = self._unverified(request, wanted)
        if any(isinstance(e, (InvalidTxnStateError, *_FENCES)) for e in refused.values()):
            try:
                await self._vouch(request.transactional_id)
            except NotCoordinatorError as exc:
                refused = dict.fromkeys(refused, exc)
        return _results(wanted, refused)

    async def _vouched_producer(
        self, txn_id: str, producer_id: int, producer_epoch: int
    ) -> tuple[int, dict[str, TxnMetadata], TxnMetadata]:
        """:meth:`_producer`, with a fence vouched for first: a fence is fatal to the
        producer, and a coordinator whose log partition moved without its knowing has
        an older view of the id than the new one (review 109)."""
        try:
            return self._producer(txn_id, producer_id, producer_epoch)
        except _FENCES:
            await self._vouch(txn_id)
            raise

    async def _vouch(self, txn_id: str) -> None:
        """Before an answer from state alone that ends something for the producer (a
        refusal, a commit said to be done): ZooKeeper's word that this broker still
        leads the id's partition at the leader epoch it knows. A controller that could
        not reach this broker may have moved it elsewhere, its session alive."""
        if self._still_leads is None:
            return
        if not await self._still_leads(partition_for(txn_id, self.num_partitions)):
            raise NotCoordinatorError(
                f"broker {self.broker_id} no longer coordinates transactional id "
                f"{txn_id!r}; find it again"
            )

    def _unverified(
        self, request: AddPartitionsToTxnRequest, wanted: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ApiError]:
        txn_id = request.transactional_id
        try:
            _, _, meta = self._producer(txn_id, request.producer_id, request.producer_epoch)
        except ApiError as exc:
            return dict.fromkeys(wanted, exc)
        if meta.state == TxnState.ONGOING:
            missing = [tp for tp in wanted if tp not in meta.partitions]
        else:
            missing = wanted
        return {
            tp: InvalidTxnStateError(
                f"{tp[0]}-{tp[1]} is not in an ongoing transaction of transactional id "
                f"{txn_id!r} (producer {meta.producer_id} epoch {meta.producer_epoch}, "
                f"{meta.state.name}): a batch sent after its transaction ended is refused"
            )
            for tp in missing
        }

    def _refused(self, wanted: list[tuple[str, int]]) -> dict[tuple[str, int], ApiError]:
        """The partitions that cannot be in a transaction: not writable, not there."""
        if not self._metadata.whole:  # the controller sends a new broker's roles first
            raise CoordinatorLoadInProgressError(
                "this broker has not had the cluster's metadata yet; retry shortly"
            )
        refused: dict[tuple[str, int], ApiError] = {}
        for topic, partition in wanted:
            if not self._acl.allowed(Operation.WRITE, ResourceType.TOPIC, topic):
                refused[(topic, partition)] = topic_not_authorized(topic, Operation.WRITE)
            elif self._metadata.partition(topic, partition) is None:
                refused[(topic, partition)] = UnknownTopicOrPartitionError(
                    f"{topic}-{partition} does not exist"
                )
        return refused

    async def add_offsets(self, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse:
        self._check_id(request.transactional_id)
        if not self._acl.allowed(Operation.READ, ResourceType.GROUP, request.group_id):
            raise group_not_authorized(request.group_id, Operation.READ)
        offsets_partitions = int(self._config["offsets.topic.num.partitions"])
        partition = partition_for(request.group_id, offsets_partitions)
        await self._add(
            request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            {(OFFSETS_TOPIC, partition)},
        )
        return AddOffsetsToTxnResponse()

    async def _add(
        self, txn_id: str, producer_id: int, producer_epoch: int, partitions: set[tuple[str, int]]
    ) -> None:
        index, store, meta = await self._vouched_producer(txn_id, producer_id, producer_epoch)
        if meta.pending or meta.state.completing:
            if meta.state.completing:  # (its EndTxn was answered: this is the next one's)
                self._moved_on[txn_id] = (meta, producer_id, producer_epoch)
            raise _concurrent(txn_id)
        self._moved_on.pop(txn_id, None)
        if meta.state == TxnState.ONGOING and partitions <= meta.partitions:
            return  # a retry, or partitions already in it
        if meta.state not in (TxnState.ONGOING, *_IDLE):
            await self._vouch(txn_id)
            raise InvalidTxnStateError(
                f"transactional id {txn_id!r} is {meta.state.name}: partitions cannot be added"
            )
        new = _copy(meta)
        now = self._clock()
        if meta.state != TxnState.ONGOING:
            new.partitions, new.start_ms = set(), now
        new.state = TxnState.ONGOING
        new.partitions |= partitions
        new.last_update_ms = now
        await self._write(index, store, meta, new)

    # --- EndTxn ---------------------------------------------------------------------------

    async def end_txn(self, request: EndTxnRequest) -> EndTxnResponse:
        txn_id = request.transactional_id
        self._check_id(txn_id)
        index, store, meta = await self._vouched_producer(
            txn_id, request.producer_id, request.producer_epoch
        )
        committed = request.committed
        if meta.pending:
            raise _concurrent(txn_id)
        state = meta.state
        if state == TxnState.ONGOING:
            self._moved_on.pop(txn_id, None)
            await self._end(index, store, meta, committed=committed, bump=False)
            return EndTxnResponse()
        done = TxnState.COMPLETE_COMMIT if committed else TxnState.COMPLETE_ABORT
        ending = TxnState.PREPARE_COMMIT if committed else TxnState.PREPARE_ABORT
        if state == ending:
            raise _concurrent(txn_id)
        moved_on = self._moved_on.get(txn_id)
        if (
            not committed
            and moved_on is not None
            and moved_on[0] is meta
            and moved_on[1:] == (request.producer_id, request.producer_epoch)
        ):
            # The abort of a transaction begun while the last one's markers were being
            # written: its partitions were refused, so nothing of it was written, and
            # aborting it is done once those markers are. Kafka answers
            # INVALID_TXN_STATE, which librdkafka takes as fatal (its issue 4849: it
            # counts a refused AddPartitionsToTxn as added). An abort sent after an
            # uncertain commit, with no next transaction begun, is still refused below.
            if state.completing:
                raise _concurrent(txn_id)
            if state in _IDLE:
                entry = self._moved_on[txn_id]
                await self._vouch(txn_id)
                # still so after the wait (a retried AddPartitionsToTxn may have opened
                # the transaction meanwhile: then it is aborted as any other)
                if (
                    self._moved_on.get(txn_id) is entry
                    and store.get(txn_id) is meta
                    and meta.state in _IDLE
                    and not meta.pending
                ):
                    del self._moved_on[txn_id]
                    self._log.info("txn.empty_abort", transactional_id=txn_id, after=state.title)
                    return EndTxnResponse()
                return await self.end_txn(request)
        await self._vouch(txn_id)  # nothing is written: the answer is the state's alone
        if state == done:
            return EndTxnResponse()  # a retry of one that is done
        raise InvalidTxnStateError(
            f"transactional id {txn_id!r} is {state.name}: it cannot "
            f"{'commit' if committed else 'abort'} (no transaction of it is open)"
        )

    async def _end(
        self,
        index: int,
        store: dict[str, TxnMetadata],
        meta: TxnMetadata,
        *,
        committed: bool,
        bump: bool,
    ) -> None:
        """Write PrepareCommit/PrepareAbort (under a bumped epoch if ``bump``: a fence),
        then have the markers written and the transaction completed in the background."""
        new = _copy(meta)
        new.state = TxnState.PREPARE_COMMIT if committed else TxnState.PREPARE_ABORT
        new.last_update_ms = self._clock()
        if bump and meta.producer_epoch < _MAX_EPOCH:
            # a fence: no KIP-360 retry may claim this epoch (Kafka's
            # prepareFenceProducerEpoch), or the fenced producer would take it back
            new.last_producer_epoch = -1
            new.producer_epoch = meta.producer_epoch + 1
        await self._write(index, store, meta, new)
        self._spawn(self._complete(index, store, meta))

    async def _complete(self, index: int, store: dict[str, TxnMetadata], meta: TxnMetadata) -> None:
        """Markers to every partition of the transaction, then CompleteCommit or
        CompleteAbort, retried while this broker coordinates it."""
        committed = meta.state == TxnState.PREPARE_COMMIT
        marker = WritableTxnMarker(
            producer_id=meta.producer_id,
            producer_epoch=meta.producer_epoch,
            transaction_result=committed,
            coordinator_epoch=self.epochs.get(index, -1),
        )

        def still_ours() -> bool:
            return self.stores.get(index) is store and store.get(meta.transactional_id) is meta

        try:
            await self._markers.write(marker, set(meta.partitions), still_ours)
        except NotCoordinatorError:
            return  # the new coordinator finishes it
        except MarkersFenced as exc:
            # as Kafka: the id stays Prepare* here (CONCURRENT_TRANSACTIONS) until its
            # partition loads again, under the coordinator that fenced this one
            self._log.error(
                "txn.markers_fenced", transactional_id=meta.transactional_id, error=str(exc)
            )
            return
        while still_ours():
            new = _copy(meta)
            new.state = TxnState.COMPLETE_COMMIT if committed else TxnState.COMPLETE_ABORT
            new.partitions = set()
            new.last_update_ms = self._clock()
            try:
                await self._write(index, store, meta, new)
            except (CoordinatorNotAvailableError, ConcurrentTransactionsError) as exc:
                self._log.info(
                    "txn.complete_retry", transactional_id=meta.transactional_id, error=str(exc)
                )
                await asyncio.sleep(_RETRY_S)
                continue
            except ApiError:
                return  # not ours any more
            if committed:
                self.committed += 1
            else:
                self.aborted += 1
            self._log.debug(
                "txn.completed",
                transactional_id=meta.transactional_id,
                committed=committed,
                partitions=len(marker.topics) or len(meta.partitions),
            )
            return

    # --- the state ------------------------------------------------------------------------

    def _producer(
        self, txn_id: str, producer_id: int, producer_epoch: int
    ) -> tuple[int, dict[str, TxnMetadata], TxnMetadata]:
        """The id's state, if the request's producer is its current one."""
        index, store = self._store_for(txn_id)
        meta = store.get(txn_id)
        if meta is None or meta.producer_id < 0:
            raise InvalidProducerIdMappingError(
                f"transactional id {txn_id!r} has no producer; call InitProducerId first"
            )
        if meta.producer_id != producer_id:
            raise InvalidProducerIdMappingError(
                f"transactional id {txn_id!r} belongs to producer {meta.producer_id}, not "
                f"{producer_id}"
            )
        if producer_epoch < meta.producer_epoch:
            fenced = f"producer {producer_id} epoch {producer_epoch} of transactional id {txn_id!r}"
            if self._timed_out.get(txn_id, ())[:2] == (producer_id, meta.producer_epoch):
                timeout_ms = self._timed_out[txn_id][2]
                raise ProducerFencedError(
                    f"{fenced}: its transaction ran past transaction_timeout_ms "
                    f"({timeout_ms} ms) and was aborted, which fences it (epoch "
                    f"{meta.producer_epoch}); close it and start a new producer, and end "
                    "transactions sooner or raise transaction_timeout_ms"
                )
            raise ProducerFencedError(
                f"{fenced} was fenced by epoch {meta.producer_epoch}: a newer producer "
                "with this transactional id took over; close this one"
            )
        if producer_epoch > meta.producer_epoch:
            raise InvalidProducerEpochError(
                f"producer {producer_id} epoch {producer_epoch} is newer than the "
                f"coordinator's {meta.producer_epoch}"
            )
        return index, store, meta

    async def _write(
        self, index: int, store: dict[str, TxnMetadata], meta: TxnMetadata, new: TxnMetadata
    ) -> None:
        """Append ``new`` (acks=all), then make it ``meta``'s state. ``meta`` is pending
        meanwhile; a failure leaves it as it was."""
        meta.pending = True
        try:
            value = encode_value(new)
            batch = encode_batch([(encode_key(meta.transactional_id), value, None, None)])
            result = await self._replicas.append_records(
                TRANSACTION_TOPIC, index, batch, timeout_ms=_WRITE_TIMEOUT_MS
            )
        finally:
            meta.pending = False
        if result.error_code:
            raise _append_error(result.error_code, result.error_message)
        if self.stores.get(index) is not store or store.get(meta.transactional_id) is not meta:
            raise NotCoordinatorError(
                f"broker {self.broker_id} stopped coordinating {meta.transactional_id!r}"
            )
        for name in TxnMetadata.__slots__:
            if name != "pending":
                setattr(meta, name, getattr(new, name))

    # --- ListTransactions / DescribeTransactions (kafka-transactions) -------------------

    async def list_transactions(self, request: ListTransactionsRequest) -> ListTransactionsResponse:
        """The transactional ids this broker coordinates (each broker answers for its own
        partitions), those the principal may Describe, filtered by state and producer id."""
        states = {TxnState.by_title(t): t for t in request.state_filters}
        unknown = [t for s, t in states.items() if s is None]
        wanted = {s for s in states if s is not None}
        pids = set(request.producer_id_filters)
        now, longer_than = self._clock(), request.duration_filter
        listed = [
            ListedTransaction(
                transactional_id=meta.transactional_id,
                producer_id=meta.producer_id,
                transaction_state=meta.state.title,
            )
            for store in self.stores.values()
            for meta in store.values()
            if meta.producer_id >= 0
            and (not request.state_filters or meta.state in wanted)
            and (not pids or meta.producer_id in pids)
            # Kafka's test, on the transaction's start (-1 when none is open: any filter
            # takes it, as Kafka's does)
            and (longer_than < 0 or now - meta.start_ms > longer_than)
            and self._acl.allowed(
                Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, meta.transactional_id
            )
        ]
        listed.sort(key=lambda t: t.transactional_id)
        return ListTransactionsResponse(unknown_state_filters=unknown, transaction_states=listed)

    async def describe_transactions(
        self, request: DescribeTransactionsRequest
    ) -> DescribeTransactionsResponse:
        return DescribeTransactionsResponse(
            transaction_states=[self._describe(t) for t in request.transactional_ids]
        )

    def _describe(self, txn_id: str) -> TransactionStateData:
        try:
            if not self._acl.allowed(Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, txn_id):
                raise transactional_id_not_authorized(txn_id, Operation.DESCRIBE)
            _, store = self._store_for(txn_id)
            meta = store.get(txn_id)
            if meta is None or meta.producer_id < 0:
                raise TransactionalIdNotFoundError(f"transactional id {txn_id!r} is not known")
        except ApiError as exc:
            return TransactionStateData(
                transactional_id=txn_id, error_code=exc.code, error_message=exc.message
            )
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(meta.partitions):
            by_topic.setdefault(topic, []).append(partition)
        return TransactionStateData(
            transactional_id=txn_id,
            transaction_state=meta.state.title,
            transaction_timeout_ms=meta.timeout_ms,
            transaction_start_time_ms=meta.start_ms,
            producer_id=meta.producer_id,
            producer_epoch=meta.producer_epoch,
            topics=[TransactionTopicData(topic=t, partitions=ps) for t, ps in by_topic.items()],
        )

    # --- metrics --------------------------------------------------------------------------

    def metrics(self) -> list[Sample]:
        """Transactional ids coordinated here by state, and the transactions completed
        and timed out since start (scraped, never counted per record)."""
        by_state: dict[TxnState, int] = dict.fromkeys(TxnState, 0)
        for store in self.stores.values():
            for meta in store.values():
                if meta.producer_id >= 0:
                    by_state[meta.state] += 1
        return [
            *(
                (_TXN_IDS, {"state": state.title}, count)
                for state, count in by_state.items()
                if state not in (TxnState.DEAD, TxnState.PREPARE_EPOCH_FENCE)
            ),
            (_COMMITTED, {}, self.committed),
            (_ABORTED, {}, self.aborted),
            (_TIMED_OUT, {}, self.timed_out),
        ]

    # --- timeouts and expiry --------------------------------------------------------------

    async def _tick(self) -> None:
        cfg = self._config
        abort_every_s = int(cfg["transaction.abort.timed.out.transaction.cleanup.interval.ms"])
        expire_every_s = int(cfg["transaction.remove.expired.transaction.cleanup.interval.ms"])
        loop = asyncio.get_running_loop()
        next_expiry = loop.time() + expire_every_s / 1000
        while True:
            await asyncio.sleep(abort_every_s / 1000)
            try:
                await self.abort_timed_out()
                if loop.time() >= next_expiry:
                    next_expiry = loop.time() + expire_every_s / 1000
                    await self.expire_ids()
            except Exception:
                self._log.exception("txn.tick_failed")

    async def abort_timed_out(self) -> None:
        """Abort (under a bumped epoch: the producer is fenced) each transaction Ongoing
        past its timeout (Kafka's abortTimedOutTransactions). Not while in doubt (this
        broker may no longer coordinate them), and the time in doubt, when the producer's
        requests were refused, is not counted against a transaction."""
        now = self._clock()
        for index, store in list(self.stores.items()):
            for meta in list(store.values()):
                if (
                    meta.state == TxnState.ONGOING
                    and not meta.pending
                    and now - meta.start_ms > meta.timeout_ms
                    and now - meta.start_ms - self._doubt_since(index, now - meta.start_ms)
                    > meta.timeout_ms
                ):
                    if not self._doubt.known():
                        return  # (asked before each abort: a doubt may begin during one)
                    self.timed_out += 1
                    self._log.info(
                        "txn.timed_out",
                        transactional_id=meta.transactional_id,
                        producer_id=meta.producer_id,
                        timeout_ms=meta.timeout_ms,
                    )
                    epoch = meta.producer_epoch
                    try:
                        await self._end(index, store, meta, committed=False, bump=True)
                        if meta.producer_epoch != epoch:  # (none at the last: nobody fenced)
                            self._timed_out[meta.transactional_id] = (
                                meta.producer_id,
                                meta.producer_epoch,
                                meta.timeout_ms,
                            )
                    except ApiError as exc:
                        self._log.info(
                            "txn.timeout_abort_retry",
                            transactional_id=meta.transactional_id,
                            error=str(exc),
                        )

    async def expire_ids(self) -> None:
        """Forget the ids idle for ``transactional.id.expiration.ms`` (a tombstone each);
        not while in doubt."""
        now = self._clock()
        for index, store in list(self.stores.items()):
            for meta in list(store.values()):
                if (
                    meta.state.idle
                    and not meta.pending
                    and now - meta.last_update_ms > self._expiration_ms
                ):
                    if not self._doubt.known():
                        return
                    await self._forget(index, store, meta)

    async def _forget(self, index: int, store: dict[str, TxnMetadata], meta: TxnMetadata) -> None:
        meta.pending = True
        try:
            batch = encode_batch([(encode_key(meta.transactional_id), None, None, None)])
            result = await self._replicas.append_records(
                TRANSACTION_TOPIC, index, batch, timeout_ms=_WRITE_TIMEOUT_MS
            )
        finally:
            meta.pending = False
        if not result.error_code and store.get(meta.transactional_id) is meta:
            del store[meta.transactional_id]
            self._timed_out.pop(meta.transactional_id, None)
            self._moved_on.pop(meta.transactional_id, None)
            self._log.info("txn.id_expired", transactional_id=meta.transactional_id)


_IDLE = (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
_FENCES = (InvalidProducerIdMappingError, ProducerFencedError, InvalidProducerEpochError)
"""What :meth:`TransactionCoordinator._producer` ends a producer with: vouched for."""


def _answer_lost(meta: TxnMetadata, producer_id: int, producer_epoch: int) -> bool:
    """Whether an InitProducerId with ``producer_id`` and ``producer_epoch`` is the
    producer that asked for the id's last bump, asking again: it lost the answer."""
    if not meta.state.idle or meta.last_producer_epoch < 0:
        return False
    # after a rotation (its epochs spent, it got a new id) it asks with the old id
    # (review 106: it was fenced)
    before = meta.last_producer_id if meta.last_producer_id >= 0 else meta.producer_id
    return (producer_id, producer_epoch) == (before, meta.last_producer_epoch)


def _copy(meta: TxnMetadata) -> TxnMetadata:
    return TxnMetadata(
        meta.transactional_id,
        meta.producer_id,
        meta.producer_epoch,
        meta.timeout_ms,
        meta.state,
        set(meta.partitions),
        meta.last_update_ms,
        meta.start_ms,
        meta.last_producer_epoch,
        meta.last_producer_id,
    )


def _results(
    wanted: list[tuple[str, int]], refused: dict[tuple[str, int], ApiError]
) -> AddPartitionsToTxnResponse:
    results: dict[str, list[AddPartitionsToTxnPartitionResult]] = {}
    for topic, partition in wanted:
        error = refused.get((topic, partition))
        results.setdefault(topic, []).append(
            AddPartitionsToTxnPartitionResult(
                partition_index=partition,
                error_code=0 if error is None else error.code,
                error_message=None if error is None else error.message,
            )
        )
    return AddPartitionsToTxnResponse(
        results=[AddPartitionsToTxnTopicResult(name=t, results=r) for t, r in results.items()]
    )


def _concurrent(txn_id: str) -> ConcurrentTransactionsError:
    return ConcurrentTransactionsError(
        f"transactional id {txn_id!r} is finishing another change; retry shortly"
    )


def _append_error(code: int, message: str | None) -> ApiError:
    """The coordinator's answer for a failed write to its own topic (Kafka's mapping)."""
    if code == NotLeaderOrFollowerError.code:
        return NotCoordinatorError("this broker stopped coordinating it; find it again")
    error = error_for_code(code, message)
    if error.retriable:
        return CoordinatorNotAvailableError(
            f"the transaction state could not be replicated ({error.name}); retry shortly"
        )
    return UnknownServerError(f"the transaction state could not be written: {error.name}")
