"""Offsets of a topic the coordinator's broker does not have are refused, as Kafka's
KafkaApis refuses them (UNKNOWN_TOPIC_OR_PARTITION per partition): an offset kept for a
deleted topic would start its group inside a topic made again under the name. Over the
fake replica manager of test_coordinator_groups."""

from __future__ import annotations

import asyncio
import dataclasses

from broker.coordinator.coordinator import GroupCoordinator
from broker.coordinator.offsets import OffsetStore
from broker.metadata import MetadataCache
from protocol.apis import (
    LEADER_DURING_DELETE,
    UPDATE_METADATA_INCREMENTAL,
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetFetchRequest,
    UpdateMetadataRequest,
)
from protocol.errors import (
    CoordinatorLoadInProgressError,
    IllegalGenerationError,
    UnknownTopicOrPartitionError,
)
from protocol.group_log import OFFSETS_TOPIC, OffsetAndMetadata, encode_key, encode_value
from tests.unit.test_coordinator_groups import (
    OURS,
    FakeReplicas,
    _commit,
    _coordinator,
    _knowing,
    _new_coordinator,
    _stable_member,
    _txn_commit,
)

UNKNOWN = UnknownTopicOrPartitionError.code


def _errors(response: object) -> dict[tuple[str, int], int]:
    return {
        (t.name, p.partition_index): p.error_code
        for t in response.topics  # type: ignore[attr-defined]
        for p in t.partitions
    }


async def _committed(coordinator: GroupCoordinator) -> dict[tuple[str, int], int]:
    fetched = await coordinator.offset_fetch(OffsetFetchRequest(group_id=OURS))
    return {
        (t.name, p.partition_index): p.committed_offset
        for t in fetched.topics
        for p in t.partitions
        if p.committed_offset >= 0
    }


def _delete_t(coordinator: GroupCoordinator) -> None:
    """The controller's update that t is deleted, as the broker takes it (app.py)."""
    coordinator._metadata.update(
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_INCREMENTAL,
            deleted_topics=["t"],
        )
    )
    coordinator.topics_deleted(["t"])


def _keys(replicas: FakeReplicas) -> list[tuple[bytes | None, bool]]:
    """The log's offset records: (key, whether it is a tombstone)."""
    return [(k, v is None) for k, v in replicas.log]


async def test_a_commit_of_a_topic_or_partition_not_in_the_metadata_is_refused_alone() -> None:
    coordinator, replicas = _coordinator()  # its broker knows t, partitions 0-7
    request = OffsetCommitRequest(
        group_id=OURS,
        topics=[
            OffsetCommitRequestTopic(
                name="t",
                partitions=[
                    OffsetCommitRequestPartition(partition_index=0, committed_offset=5),
                    OffsetCommitRequestPartition(partition_index=8, committed_offset=6),
                ],
            ),
            OffsetCommitRequestTopic(
                name="gone",
                partitions=[OffsetCommitRequestPartition(partition_index=0, committed_offset=7)],
            ),
        ],
    )
    answer = await coordinator.offset_commit(request)
    assert _errors(answer) == {("t", 0): 0, ("t", 8): UNKNOWN, ("gone", 0): UNKNOWN}
    assert await _committed(coordinator) == {("t", 0): 5}
    assert [k for k, _ in replicas.log] == [encode_key(OURS, "t", 0)]  # nothing else written
    # the whole request unknown: nothing appended at all
    answer = await coordinator.offset_commit(_commit(OURS, {9: 1}))
    assert _errors(answer) == {("t", 9): UNKNOWN}
    assert len(replicas.log) == 1


async def test_a_topic_being_deleted_takes_no_commit() -> None:
    coordinator, _ = _coordinator()
    await coordinator.offset_commit(_commit(OURS, {0: 5}))
    state = coordinator._metadata.topics["t"][0]
    coordinator._metadata.update(  # the deletion has begun: its leader the marker
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_INCREMENTAL,
            partition_states=[dataclasses.replace(state, leader=LEADER_DURING_DELETE)],
        )
    )
    assert "t" in coordinator._metadata.deleting
    answer = await coordinator.offset_commit(_commit(OURS, {0: 9}))
    assert _errors(answer) == {("t", 0): UNKNOWN}
    assert await _committed(coordinator) == {("t", 0): 5}  # forgotten when the delete ends


async def test_a_commit_written_while_its_topic_is_deleted_is_not_kept() -> None:
    coordinator, replicas = _coordinator()
    await coordinator.offset_commit(_commit(OURS, {0: 5}))
    replicas.gate = asyncio.get_running_loop().create_future()  # the next append waits
    commit = asyncio.ensure_future(coordinator.offset_commit(_commit(OURS, {0: 9, 1: 4})))
    await asyncio.sleep(0)
    _delete_t(coordinator)  # the old offset's tombstone goes out; then the commit lands
    replicas.gate.set_result(None)
    answer = await commit
    assert _errors(answer) == {("t", 0): UNKNOWN, ("t", 1): UNKNOWN}
    for _ in range(3):
        await asyncio.sleep(0)
    assert await _committed(coordinator) == {}
    # in the log, the commit's records are followed by their tombstones: a reload agrees
    t0, t1 = encode_key(OURS, "t", 0), encode_key(OURS, "t", 1)
    assert _keys(replicas)[-5:] == [(t0, False), (t1, False), (t0, True), (t0, True), (t1, True)]
    assert replicas.reload().get(OURS) == {}


async def test_a_transactions_offsets_of_a_topic_deleted_before_its_commit_do_not_count() -> None:
    coordinator, replicas = _coordinator()
    answer = await coordinator.txn_offset_commit(_txn_commit(OURS, {0: 9, 8: 1}, producer_id=7))
    assert _errors(answer) == {("t", 0): 0, ("t", 8): UNKNOWN}
    assert [k for k, _ in replicas.log] == [encode_key(OURS, "t", 0)]
    _delete_t(coordinator)
    replicas.marker_listener(OFFSETS_TOPIC, 0, 7, True)  # its COMMIT marker
    assert await _committed(coordinator) == {}
    assert coordinator.stores[0].pending_partitions(OURS) == set()


async def test_a_transactions_offsets_written_while_the_topic_is_deleted_are_not_held() -> None:
    coordinator, replicas = _coordinator()
    replicas.gate = asyncio.get_running_loop().create_future()
    commit = asyncio.ensure_future(
        coordinator.txn_offset_commit(_txn_commit(OURS, {0: 9}, producer_id=7))
    )
    await asyncio.sleep(0)
    _delete_t(coordinator)
    replicas.gate.set_result(None)
    assert _errors(await commit) == {("t", 0): UNKNOWN}
    assert coordinator.stores[0].pending_partitions(OURS) == set()
    replicas.marker_listener(OFFSETS_TOPIC, 0, 7, True)
    assert await _committed(coordinator) == {}


def test_a_store_forgets_the_held_offsets_of_deleted_topics_only() -> None:
    store = OffsetStore()
    value = encode_value(OffsetAndMetadata(9, -1, None, 0))
    store.hold(7, [(encode_key("g", "t", 0), value, 1), (encode_key("g", "u", 0), value, 2)])
    store.hold(8, [(encode_key("g", "t", 1), value, 3)])
    store.forget_held({"t"})
    assert store.pending_partitions("g") == {("u", 0)}
    assert 8 not in store.pending
    assert store.end_txn(7, committed=True) == 1
    assert store.get("g") == {("u", 0): OffsetAndMetadata(9, -1, None, 0)}


async def test_a_coordinator_whose_metadata_is_not_whole_yet_asks_for_a_retry() -> None:
    """The controller sends a starting broker its roles (LeaderAndIsr) before its full
    UpdateMetadata: its offsets partition may be loaded while its metadata is empty.
    Review 120: every commit was refused UNKNOWN_TOPIC_OR_PARTITION then."""
    replicas = FakeReplicas()
    coordinator = _new_coordinator(replicas)
    coordinator._metadata = MetadataCache()  # no UpdateMetadata yet
    coordinator._loaded(0, OffsetStore())
    for answer in (
        await coordinator.offset_commit(_commit(OURS, {0: 5})),
        await coordinator.txn_offset_commit(_txn_commit(OURS, {0: 5}, producer_id=7)),
    ):
        assert _errors(answer) == {("t", 0): CoordinatorLoadInProgressError.code}
    assert replicas.log == []


def _reload(replicas: FakeReplicas, txn: dict[int, int], markers: dict[int, int]) -> OffsetStore:
    """The store a load of ``replicas``' log makes, as GroupCoordinator._read_into does:
    the records at the ``txn`` positions (position -> producer) held, a COMMIT marker of
    producer ``markers[i]`` read after position i."""
    store = OffsetStore()
    for i, (key, value) in enumerate(replicas.log):
        if i in txn:
            store.hold(txn[i], [(key, value, i)])
        else:
            store.apply(key, value, i)
        if i in markers:
            store.end_txn(markers[i], committed=True)
    return store


async def test_a_deleted_topics_transactional_offset_stays_gone_after_a_reload() -> None:
    """Review 120: dropped from memory only, a transaction's offset of a deleted topic
    came back in a load of the log (a failover), at its COMMIT marker."""
    coordinator, replicas = _coordinator()
    answer = await coordinator.txn_offset_commit(_txn_commit(OURS, {0: 9}, producer_id=7))
    assert _errors(answer) == {("t", 0): 0}
    _delete_t(coordinator)
    for _ in range(3):
        await asyncio.sleep(0)
    replicas.marker_listener(OFFSETS_TOPIC, 0, 7, True)  # its COMMIT marker
    assert await _committed(coordinator) == {}
    t0 = encode_key(OURS, "t", 0)
    assert _keys(replicas) == [(t0, False), (t0, True)]  # the record, then its tombstone
    assert _reload(replicas, {0: 7}, {1: 7}).get(OURS) == {}
    # a transaction's offset written after a tombstone of its partition still counts
    replicas.log.append((t0, encode_value(OffsetAndMetadata(3, -1, None, 0))))
    assert _reload(replicas, {0: 7, 2: 8}, {1: 7, 2: 8}).get(OURS) == {
        ("t", 0): OffsetAndMetadata(3, -1, None, 0)
    }


async def test_a_transactions_offsets_written_while_the_topic_is_deleted_stay_gone() -> None:
    coordinator, replicas = _coordinator()
    replicas.gate = asyncio.get_running_loop().create_future()
    commit = asyncio.ensure_future(
        coordinator.txn_offset_commit(_txn_commit(OURS, {0: 9}, producer_id=7))
    )
    await asyncio.sleep(0)
    _delete_t(coordinator)
    replicas.gate.set_result(None)
    await commit
    for _ in range(3):
        await asyncio.sleep(0)
    t0 = encode_key(OURS, "t", 0)
    assert _keys(replicas) == [(t0, False), (t0, True)]
    assert _reload(replicas, {0: 7}, {1: 7}).get(OURS) == {}


def test_a_full_metadata_update_says_which_topics_went_while_it_was_not_told() -> None:
    """A broker cut off while a deletion ended never gets its incremental update; the
    next full one leaves the topic out, and its groups' offsets must go then
    (app.py hands these to the coordinator's topics_deleted)."""
    metadata = _knowing("t", "u", partitions=1)
    state = metadata.topics["u"][0]
    full = UpdateMetadataRequest(controller_id=2, controller_epoch=2, partition_states=[state])
    assert metadata.update(full) == ["t"]
    assert metadata.update(full) == []  # nothing went since
    gone = UpdateMetadataRequest(
        controller_id=2,
        controller_epoch=2,
        type=UPDATE_METADATA_INCREMENTAL,
        deleted_topics=["u"],
    )
    assert metadata.update(gone) == ["u"]


async def test_unknown_partitions_are_answered_so_whatever_the_group_says() -> None:
    """Kafka's KafkaApis sorts a commit's partitions before it asks the group: those not
    there are UNKNOWN_TOPIC_OR_PARTITION even when the group refuses the rest (a zombie's
    generation), and a commit of nothing that is there makes no group at all."""
    coordinator, replicas = _coordinator()
    member = await _stable_member(coordinator, OURS)
    written = len(replicas.log)  # the generation's metadata
    zombie = _commit(OURS, {0: 5, 9: 6}, member_id=member, generation_id=99)
    answer = await coordinator.offset_commit(zombie)
    assert _errors(answer) == {("t", 0): IllegalGenerationError.code, ("t", 9): UNKNOWN}
    # only unknown partitions: answered without the group, which is not made
    answer = await coordinator.offset_commit(_commit("never-made", {9: 1}))
    assert _errors(answer) == {("t", 9): UNKNOWN}
    assert "never-made" not in coordinator.groups
    txn = await coordinator.txn_offset_commit(_txn_commit("never-made-2", {9: 1}, producer_id=3))
    assert _errors(txn) == {("t", 9): UNKNOWN}
    assert "never-made-2" not in coordinator.groups
    assert len(replicas.log) == written  # no offset written
