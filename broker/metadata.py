"""What this broker knows of the cluster: live brokers and every partition's leader.

Filled only by the controller's UpdateMetadata requests (as Kafka's MetadataCache), so
every broker answers Metadata from the same picture, and a client sent to the leader a
broker names finds it there. A full update (a new controller's first, a broker joining,
and every v0 request) replaces the picture; an incremental one carries only the
partitions that changed, and is merged into it, so a leader moving in a cluster of
thousands of partitions costs every broker one partition's decode, not thousands. A
partition whose leader is :data:`LEADER_DURING_DELETE` belongs to a topic being deleted
and is left out; the topic stays in :attr:`deleting` until an update names it deleted
(or a full one leaves it out).

Readers may hold a topic's partition map across an await: a merge copies what it changes
rather than changing a map in place.

Waiters (topic creation and deletion waiting until the cluster shows the change) are
woken on every update; they re-check their condition themselves.

A topic id names a topic here while the topic is known and not being deleted
(:meth:`MetadataCache.fetch_name`); an id that names none has a name no topic can have
(:func:`unknown_id_name`), so a read by it is answered UNKNOWN_TOPIC_ID. The listeners of
:attr:`MetadataCache.renamed` hear of each id whose name that changes (the fetch sessions
holding partitions by id, Kafka's Fetch v13+).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from broker.log.manager import TopicPartition
from protocol.apis import (
    LEADER_DURING_DELETE,
    UPDATE_METADATA_INCREMENTAL,
    UpdateMetadataBroker,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)

__all__ = [
    "UNKNOWN_ID_PREFIX",
    "MetadataCache",
    "TopicPartition",
    "id_of_unknown_name",
    "unknown_id_name",
]

UNKNOWN_ID_PREFIX = "\x00"
"""Begins the name of an id no topic here has (its hex follows): topic names are
[a-zA-Z0-9._-], so none has it."""


def unknown_id_name(topic_id: bytes) -> str:
    """The name reads by ``topic_id`` go by while no topic here has that id."""
    return UNKNOWN_ID_PREFIX + topic_id.hex()


def id_of_unknown_name(name: str) -> bytes | None:
    """The id an :func:`unknown_id_name` was made of; None for a topic's name."""
    return bytes.fromhex(name[1:]) if name.startswith(UNKNOWN_ID_PREFIX) else None


class MetadataCache:
    def __init__(self) -> None:
        self.brokers: dict[int, UpdateMetadataBroker] = {}
        self.topics: dict[str, dict[int, UpdateMetadataPartitionState]] = {}
        self.deleting: set[str] = set()
        self.topic_ids: dict[str, bytes] = {}
        """Each topic's id (KIP-516), as the controller's updates carry them (a controller
        of an older build sends none: such topics are left out)."""
        self.topic_names: dict[bytes, str] = {}
        """The reverse of :attr:`topic_ids`."""
        self.fetchable: dict[bytes, str] = {}
        """The ids that name a topic to read: known, and not being deleted."""
        self.renamed: list[Callable[[Mapping[bytes, str]], None]] = []
        """Called after an update with each id whose :meth:`fetch_name` changed, and
        that name."""
        self.controller_id = -1
        self.controller_epoch = -1
        self._whole = False
        """A full update has come: until then an incremental one has nothing to merge
        into (one queued for this broker's previous process), and is dropped."""
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def whole(self) -> bool:
        """Whether the controller's full picture has come (since this process started):
        before it, a topic missing here may well exist."""
        return self._whole

    def address(self, broker_id: int, listener: str) -> tuple[str, int] | None:
        """Where a client of ``listener`` reaches ``broker_id``; None if that broker is
        not live or has no such listener. A controller of an older build sends no
        listeners: its one address then."""
        broker = self.brokers.get(broker_id)
        if broker is None:
            return None
        if not broker.endpoints:
            return broker.host, broker.port
        for endpoint in broker.endpoints:
            if endpoint.listener == listener:
                return endpoint.host, endpoint.port
        return None

    def update(self, request: UpdateMetadataRequest) -> list[str]:
        """Take the controller's update (the caller checked its epoch): replace the
        picture with a full one, merge an incremental one. Returns the topics whose
        deletion it says is done: an incremental one's ``deleted_topics``, and those a
        full one leaves out that were here (their incremental update may never have
        come: this broker was cut off, or the controller changed, meanwhile)."""
        old_ids, old_topics = self.topic_ids, self.topics
        old_deleting = self.deleting
        touched: set[str] | None = None  # the names whose id's fetch_name may change
        if request.type == UPDATE_METADATA_INCREMENTAL:
            if not self._whole:
                return []  # answering from part of the picture would be worse than waiting
            touched = set(request.deleted_topics)
            touched.update(t for t, i in request.topic_ids.items() if old_ids.get(t) != i)
            touched.update(
                s.topic_name
                for s in request.partition_states
                if s.leader == LEADER_DURING_DELETE or s.topic_name not in old_topics
            )
            topics = dict(self.topics)
            deleting = set(self.deleting)
            for name in request.deleted_topics:
                topics.pop(name, None)
                deleting.discard(name)
            ids = self.topic_ids
            if request.deleted_topics or any(ids.get(t) != i for t, i in request.topic_ids.items()):
                gone = set(request.deleted_topics)
                ids = {t: i for t, i in ids.items() if t not in gone}
                ids.update(request.topic_ids)
        else:
            topics, deleting = {}, set()
            ids = dict(request.topic_ids)
            self._whole = True
        if ids is not self.topic_ids:
            self.topic_ids = ids
            self.topic_names = {i: t for t, i in ids.items()}
        copied: set[str] = set()  # topics whose partition map this update already owns
        for state in request.partition_states:
            name = state.topic_name
            if state.leader == LEADER_DURING_DELETE:
                deleting.add(name)
                topics.pop(name, None)
                continue
            if name not in copied:
                copied.add(name)
                topics[name] = dict(topics.get(name, ()))
            topics[name][state.partition_index] = state
        self.topics = topics
        self.deleting = deleting
        self.brokers = {b.id: b for b in request.live_brokers}
        self.controller_id = request.controller_id
        self.controller_epoch = request.controller_epoch
        self._rename(touched, old_ids)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        if touched is not None:
            return list(request.deleted_topics)
        return sorted((old_topics.keys() | old_deleting) - topics.keys() - deleting)

    def fetch_name(self, topic_id: bytes) -> str:
        """The topic ``topic_id`` names, or (none known, or being deleted) the
        :func:`unknown_id_name` a read by it goes by."""
        name = self.fetchable.get(topic_id)
        return name if name is not None else unknown_id_name(topic_id)

    def _rename(self, touched: set[str] | None, old_ids: Mapping[str, bytes]) -> None:
        """Bring :attr:`fetchable` up to date: for the ``touched`` names (an incremental
        update: work in its size, not the cluster's), or all (a full one); tell the
        listeners of each id named otherwise now."""
        topics, ids = self.topics, self.topic_ids
        if touched is None:
            fetchable = {i: t for t, i in ids.items() if t in topics}
            before, self.fetchable = self.fetchable, fetchable
            if fetchable == before:
                return
            moved = before.keys() | fetchable.keys()
        else:
            if not touched:
                return
            fetchable = self.fetchable
            moved = {i for t in touched for i in (old_ids.get(t), ids.get(t)) if i is not None}
            before = {i: fetchable[i] for i in moved if i in fetchable}
            for i in before:
                del fetchable[i]
            for name in touched:
                topic_id = ids.get(name)
                if topic_id is not None and name in topics:
                    fetchable[topic_id] = name
        changed = {i: self.fetch_name(i) for i in moved if before.get(i) != fetchable.get(i)}
        if changed:
            for listener in self.renamed:
                listener(changed)

    def partition(self, topic: str, partition: int) -> UpdateMetadataPartitionState | None:
        return self.topics.get(topic, {}).get(partition)

    def has_leaders(self, topic: str) -> bool:
        """Whether ``topic`` is known and every partition of it has a live leader."""
        partitions = self.topics.get(topic, {})
        return bool(partitions) and all(s.leader in self.brokers for s in partitions.values())

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``condition()`` holds after some update, up to ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return condition()
            finally:
                self._waiters.discard(waiter)
        return True
