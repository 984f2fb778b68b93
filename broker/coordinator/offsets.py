"""A coordinator's view of one ``__consumer_offsets`` partition: committed offsets and
groups' metadata, applied from the records it writes or loads (their layouts are
:mod:`protocol.group_log`, and :mod:`protocol.consumer_group_log` for groups of the new
consumer protocol). Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from protocol.consumer_group_log import (
    CONSUMER_GROUP_METADATA,
    ConsumerGroupImage,
    ConsumerGroupKey,
    decode_consumer_group_key,
    decode_consumer_group_value,
    encode_consumer_group_key,
)
from protocol.group_log import (
    BadRecordError,
    GroupMetadata,
    OffsetAndMetadata,
    decode_group_key,
    decode_group_value,
    decode_key,
    decode_value,
    encode_group_key,
    encode_key,
    encode_value,
)
from protocol.share_state_log import (
    ShareStateKey,
    StoredShareState,
    decode_share_state_key,
    decode_share_state_value,
)

__all__ = ["OffsetStore"]


class OffsetStore:
    """What one offsets partition holds: committed offsets (group -> tp -> offset) and
    each group's last stored metadata. The coordinator keeps live groups itself; the
    metadata here is what the log said when loaded, which the coordinator starts from."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        self.group_metadata: dict[str, GroupMetadata] = {}
        self.consumer_groups: dict[str, ConsumerGroupImage] = {}
        self.share_states: dict[ShareStateKey, StoredShareState] = {}
        """Share groups' delivery state of each partition (KIP-932; see
        :mod:`protocol.share_state_log`)."""
        """Groups of the new consumer protocol, as their records (types 3-8) say."""
        self.pending: dict[int, list[tuple[bytes, bytes | None, int]]] = {}
        """A transaction's offsets (TxnOffsetCommit), by producer id, with where each is
        in the log: written in the transaction, applied at its COMMIT marker, dropped at
        its ABORT."""
        self._pending_of: dict[str, Counter[tuple[str, int]]] = {}
        """The same, as each group's partitions held (for require_stable fetches: a look
        up, not a decode of every open transaction's every record per fetch)."""
        self._written_at: dict[bytes, int] = {}
        """Where the offset record applied last for each live key is in the log (one int
        per committed partition; a tombstone drops it): a transaction's record committed
        later applies only if it was written after it (Kafka's handleTxnCompletion;
        compaction keeps the later one too)."""

    def hold(
        self, producer_id: int, records: Iterable[tuple[bytes | None, bytes | None, int]]
    ) -> None:
        """Records (key, value, log offset) of a transaction still open, kept until its
        marker."""
        held = self.pending.setdefault(producer_id, [])
        added = [(k, v, o) for k, v, o in records if k is not None]
        held += added
        self._count_pending(added, 1)

    def _count_pending(self, records: Iterable[tuple[bytes, bytes | None, int]], by: int) -> None:
        of = self._pending_of
        for key, _, _ in records:
            try:
                parsed = decode_key(key)
            except BadRecordError:  # (applied, it is logged and skipped: see apply)
                continue
            if parsed is None:
                continue
            group, topic, partition = parsed
            counts = of.setdefault(group, Counter())
            counts[topic, partition] += by
            if counts[topic, partition] <= 0:
                del counts[topic, partition]
                if not counts:
                    del of[group]

    def forget_held(self, topics: set[str]) -> list[bytes]:
        """Open transactions' offsets of ``topics`` (deleted) dropped, so their markers
        apply only the others; returns their keys (the caller's tombstones of them drop
        them again in a load: see :meth:`apply`)."""
        keys = {k for held in self.pending.values() for k, _, _ in held if _topic_of(k) in topics}
        if keys:
            self._drop_held(keys, before=None)
        return sorted(keys)

    def _drop_held(self, keys: set[bytes], before: int | None) -> None:
        """Held records of ``keys`` dropped (only those written before log offset
        ``before``, unless None)."""
        for producer_id, held in list(self.pending.items()):
            gone: list[tuple[bytes, bytes | None, int]] = []
            kept: list[tuple[bytes, bytes | None, int]] = []
            for r in held:
                (gone if r[0] in keys and (before is None or r[2] < before) else kept).append(r)
            if not gone:
                continue
            self._count_pending(gone, -1)
            if kept:
                self.pending[producer_id] = kept
            else:
                del self.pending[producer_id]

    def end_txn(
        self,
        producer_id: int,
        committed: bool,
        on_bad: Callable[[BadRecordError], None] | None = None,
    ) -> int:
        """A transaction's marker: its offsets count (COMMIT, those newer than the offset
        already applied) or go (ABORT); returns how many it held. A record that cannot be
        read is skipped and given to ``on_bad`` (as a load skips one outside a
        transaction): the others still count."""
        held = self.pending.pop(producer_id, [])
        self._count_pending(held, -1)
        if committed:
            for key, value, offset in held:
                if offset > self._written_at.get(key, -1):
                    try:
                        self.apply(key, value, offset)
                    except BadRecordError as exc:
                        if on_bad is not None:
                            on_bad(exc)
        return len(held)

    def pending_partitions(self, group: str) -> set[tuple[str, int]]:
        """The partitions of ``group`` with a transaction's offsets not yet committed or
        aborted (none, for nearly every fetch: no scan then)."""
        counts = self._pending_of.get(group)
        return set(counts) if counts else set()

    def apply(self, key: bytes | None, value: bytes | None, log_offset: int = -1) -> None:
        """One record of the offsets topic, in log order (later ones win); ``log_offset``:
        where it is in the log (-1: not known)."""
        if key is None:
            return
        if value is None:
            self._written_at.pop(key, None)  # gone with its offset: not kept for it
        elif log_offset >= 0:
            self._written_at[key] = log_offset
        if self._apply_share_state(key, value):
            return
        consumer_key = decode_consumer_group_key(key)
        if consumer_key is not None:
            self._apply_consumer_group(consumer_key, value)
            return
        group_key = decode_group_key(key)
        if group_key is not None:
            if value is None:
                self.group_metadata.pop(group_key, None)
            else:
                self.group_metadata[group_key] = decode_group_value(value)
            return
        parsed = decode_key(key)
        if parsed is None:
            return  # a key kind we do not know
        group, topic, partition = parsed
        offsets = self.groups.setdefault(group, {})
        if value is None:
            offsets.pop((topic, partition), None)
            if not offsets:
                del self.groups[group]
            # an open transaction's offset written before it goes too (Kafka drops them
            # from memory at a delete; here a load of the log agrees, so a deleted
            # topic's offset does not come back at the transaction's COMMIT marker)
            if log_offset >= 0 and (topic, partition) in self._pending_of.get(group, ()):
                self._drop_held({key}, before=log_offset)
        else:
            offsets[(topic, partition)] = decode_value(value)

    def _apply_share_state(self, key: bytes, value: bytes | None) -> bool:
        """Whether ``key`` is a share group's state of a partition (then applied)."""
        share_key = decode_share_state_key(key)
        if share_key is None:
            return False
        if value is None:
            self.share_states.pop(share_key, None)
        else:
            self.share_states[share_key] = decode_share_state_value(value)
        return True

    def _apply_consumer_group(self, key: ConsumerGroupKey, value: bytes | None) -> None:
        decoded = None if value is None else decode_consumer_group_value(key.record_type, value)
        image = self.consumer_groups.get(key.group_id)
        if image is None:
            if value is None:
                return
            image = self.consumer_groups[key.group_id] = ConsumerGroupImage()
        if key.record_type == CONSUMER_GROUP_METADATA and value is None:
            # the group's last tombstone (Kafka writes it after its members'): the group
            # is gone, and so is anything of it a compaction left
            del self.consumer_groups[key.group_id]
            return
        image.apply(key, decoded)

    def commit(
        self, group: str, offsets: Iterable[tuple[str, int, OffsetAndMetadata]]
    ) -> list[tuple[bytes, bytes]]:
        """The records a commit appends (the caller applies them once they are written)."""
        return [(encode_key(group, t, p), encode_value(v)) for t, p, v in offsets]

    def tombstones(
        self, group: str, also: Iterable[tuple[str, int]] = ()
    ) -> list[tuple[bytes, bytes | None]]:
        """The records that delete ``group``: a tombstone (key, null value) for each
        committed offset and each of ``also`` (commits still being written), and one for
        its metadata (always, as Kafka's cleanupGroupMetadata: a write of it may be in
        flight)."""
        keys = set(self.groups.get(group, {})) | set(also)
        offsets: list[tuple[bytes, bytes | None]] = [
            (encode_key(group, t, p), None) for t, p in sorted(keys)
        ]
        return [*offsets, *self.group_tombstones(group)]

    def group_tombstones(self, group: str) -> list[tuple[bytes, bytes | None]]:
        """The records that delete ``group``'s metadata, whichever protocol it is of: a
        classic group's key (always, as Kafka's cleanupGroupMetadata: a write of it may
        be in flight), and each record of a group of the new protocol (its members',
        then its own, the group epoch last, as Kafka's)."""
        image = self.consumer_groups.get(group)
        consumer = [] if image is None else image.keys(group)
        return [
            *((encode_consumer_group_key(k), None) for k in consumer),
            (encode_group_key(group), None),
        ]

    def get(self, group: str) -> dict[tuple[str, int], OffsetAndMetadata]:
        return dict(self.groups.get(group, {}))


def _topic_of(key: bytes) -> str | None:
    """The topic an offset record's key names (None: another kind, or unreadable)."""
    try:
        parsed = decode_key(key)
    except BadRecordError:
        return None
    return None if parsed is None else parsed[1]
