"""The broker's MetadataCache: a full UpdateMetadata replaces the picture, an incremental
one is merged into it, and topics being deleted are hidden, then forgotten."""

from broker.metadata import MetadataCache
from protocol.apis import (
    LEADER_DURING_DELETE,
    UPDATE_METADATA_FULL,
    UPDATE_METADATA_INCREMENTAL,
    ApiKey,
    UpdateMetadataBroker,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
    decode_request,
    encode_request,
)


def _state(topic: str, partition: int, leader: int = 1) -> UpdateMetadataPartitionState:
    return UpdateMetadataPartitionState(
        topic_name=topic,
        partition_index=partition,
        controller_epoch=1,
        leader=leader,
        leader_epoch=leader,
        isr=[leader],
        replicas=[1, 2],
    )


def _update(
    kind: int,
    *states: UpdateMetadataPartitionState,
    brokers: tuple[int, ...] = (1, 2),
    deleted: tuple[str, ...] = (),
) -> UpdateMetadataRequest:
    return UpdateMetadataRequest(
        controller_id=1,
        controller_epoch=3,
        type=kind,
        partition_states=list(states),
        live_brokers=[UpdateMetadataBroker(id=b, host="127.0.0.1", port=9000 + b) for b in brokers],
        deleted_topics=list(deleted),
    )


def _leaders(cache: MetadataCache) -> dict[str, dict[int, int]]:
    return {t: {p: s.leader for p, s in parts.items()} for t, parts in cache.topics.items()}


def test_a_full_update_replaces_the_picture() -> None:
    cache = MetadataCache()
    cache.update(_update(UPDATE_METADATA_FULL, _state("a", 0), _state("a", 1), _state("b", 0)))
    cache.update(_update(UPDATE_METADATA_FULL, _state("a", 0, leader=2), brokers=(2,)))
    assert _leaders(cache) == {"a": {0: 2}}
    assert set(cache.brokers) == {2}
    assert (cache.controller_id, cache.controller_epoch) == (1, 3)


def test_an_incremental_update_changes_only_the_partitions_it_names() -> None:
    cache = MetadataCache()
    cache.update(_update(UPDATE_METADATA_FULL, _state("a", 0), _state("a", 1), _state("b", 0)))
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, _state("a", 1, leader=2), _state("c", 0)))
    assert _leaders(cache) == {"a": {0: 1, 1: 2}, "b": {0: 1}, "c": {0: 1}}
    # the live brokers are always all of them
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, brokers=(2,)))
    assert set(cache.brokers) == {2}
    assert not cache.has_leaders("b")  # its leader is gone, and nothing else said so


def test_a_merge_leaves_a_partition_map_a_reader_holds_as_it_was() -> None:
    cache = MetadataCache()
    cache.update(_update(UPDATE_METADATA_FULL, _state("a", 0), _state("a", 1)))
    held = cache.topics["a"]
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, _state("a", 1, leader=2), _state("a", 2)))
    assert {p: s.leader for p, s in held.items()} == {0: 1, 1: 1}
    assert _leaders(cache)["a"] == {0: 1, 1: 2, 2: 1}


def test_a_topic_being_deleted_is_hidden_then_forgotten_when_its_deletion_ends() -> None:
    cache = MetadataCache()
    cache.update(_update(UPDATE_METADATA_FULL, _state("a", 0), _state("a", 1), _state("b", 0)))
    cache.update(
        _update(
            UPDATE_METADATA_INCREMENTAL,
            _state("a", 0, leader=LEADER_DURING_DELETE),
            _state("a", 1, leader=LEADER_DURING_DELETE),
        )
    )
    assert _leaders(cache) == {"b": {0: 1}}
    assert cache.deleting == {"a"}
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, _state("b", 0, leader=2)))
    assert cache.deleting == {"a"}  # until the controller says the deletion ended
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, deleted=("a",)))
    assert cache.deleting == set()
    assert _leaders(cache) == {"b": {0: 2}}


def test_a_full_update_without_a_deleting_topic_ends_its_deletion() -> None:
    cache = MetadataCache()
    cache.update(_update(UPDATE_METADATA_FULL, _state("a", 0, leader=LEADER_DURING_DELETE)))
    assert cache.deleting == {"a"}
    cache.update(_update(UPDATE_METADATA_FULL, _state("b", 0)))
    assert cache.deleting == set()
    assert _leaders(cache) == {"b": {0: 1}}


def test_a_v0_update_is_the_whole_picture() -> None:
    """v0 (a controller of an older build) has no type: it replaces, as it always did."""
    request = _update(UPDATE_METADATA_INCREMENTAL, _state("a", 0), deleted=("x",))
    payload = b"".join(bytes(p) for p in encode_request(ApiKey.UPDATE_METADATA, 0, 1, request))
    _, _, decoded = decode_request(payload[4:])
    assert decoded.type == UPDATE_METADATA_FULL
    assert decoded.deleted_topics == []
    cache = MetadataCache()
    cache.update(_update(UPDATE_METADATA_FULL, _state("b", 0)))
    cache.update(decoded)
    assert _leaders(cache) == {"a": {0: 1}}

    payload = b"".join(bytes(p) for p in encode_request(ApiKey.UPDATE_METADATA, 1, 1, request))
    assert decode_request(payload[4:])[2] == request


def test_an_incremental_update_before_any_full_one_is_dropped() -> None:
    """One queued for this broker's previous process may arrive first after a restart:
    merged into nothing it would answer Metadata from part of the picture (topics
    missing, offsets topic auto-created again). The cache waits for the whole one."""
    cache = MetadataCache()
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, _state("a", 1)))
    assert (cache.topics, cache.controller_epoch) == ({}, -1)  # not started
    cache.update(_update(UPDATE_METADATA_FULL, _state("a", 0), _state("a", 1, leader=2)))
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, _state("a", 0, leader=2)))
    assert _leaders(cache) == {"a": {0: 2, 1: 2}}


def test_a_topic_deleted_then_made_again_under_the_same_name() -> None:
    cache = MetadataCache()
    cache.update(_update(UPDATE_METADATA_FULL, _state("a", 0), _state("a", 1)))
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, _state("a", 0, leader=LEADER_DURING_DELETE)))
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, deleted=("a",)))
    cache.update(_update(UPDATE_METADATA_INCREMENTAL, _state("a", 0, leader=2)))
    assert _leaders(cache) == {"a": {0: 2}}  # the new topic alone: nothing of the old one
    assert cache.deleting == set()


def test_topic_ids_come_with_the_updates_and_go_with_the_topics() -> None:
    a_id, b_id, a_again = (bytes([n]) * 16 for n in (1, 2, 3))
    cache = MetadataCache()
    full = _update(UPDATE_METADATA_FULL, _state("a", 0), _state("b", 0))
    full.topic_ids = {"a": a_id, "b": b_id}
    cache.update(full)
    assert cache.topic_ids == {"a": a_id, "b": b_id}
    assert cache.topic_names == {a_id: "a", b_id: "b"}
    held = cache.topic_names
    leader_moved = _update(UPDATE_METADATA_INCREMENTAL, _state("a", 0, leader=2))
    leader_moved.topic_ids = {"a": a_id}
    cache.update(leader_moved)
    assert cache.topic_names is held  # nothing new: not rebuilt on every leader change
    gone = _update(UPDATE_METADATA_INCREMENTAL, deleted=("a",))
    cache.update(gone)
    assert cache.topic_ids == {"b": b_id} and a_id not in cache.topic_names
    made_again = _update(UPDATE_METADATA_INCREMENTAL, _state("a", 0))
    made_again.topic_ids = {"a": a_again}
    cache.update(made_again)
    assert cache.topic_names == {a_again: "a", b_id: "b"}
    # the ids travel from v3 on; to a broker of v2 the update goes without them
    for version, expected in ((3, {"a": a_again}), (2, {})):
        parts = encode_request(ApiKey.UPDATE_METADATA, version, 7, made_again)
        _, _, decoded = decode_request(b"".join(bytes(p) for p in parts)[4:])
        assert decoded.topic_ids == expected
