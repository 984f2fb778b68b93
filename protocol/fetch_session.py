"""The fetching side of a fetch session (Kafka's FetchSessionHandler, KIP-227). Pure: it
builds requests and reads answers; the caller does the I/O.

Without a session every Fetch names every partition and its answer carries every one,
changed or not: a follower of 1,000 idle partitions spent milliseconds a round trip on
them, and every acks=all write waited for two such rounds. With one, the first request
(epoch :data:`~protocol.apis.INITIAL_EPOCH`) is full; after it a request names only the
partitions whose fetch position changed (and those dropped), and the broker answers only
the partitions with records, a moved high watermark or log start, or an error.

Any doubt about what the broker holds (a failed request, a session error) starts over
with a full request: the broker may or may not have seen the last one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocol.apis import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    FetchForgottenTopic,
    FetchPartition,
    FetchResponse,
    FetchTopic,
)
from protocol.errors import FetchSessionIdNotFoundError, InvalidFetchSessionEpochError

__all__ = ["SESSION_ERRORS", "FetchSessionBuilder", "SessionRequest"]

SESSION_ERRORS = (FetchSessionIdNotFoundError, InvalidFetchSessionEpochError)
"""The broker lost or refused the session: start over with a full fetch, no back-off."""

Key = tuple[str, int]
"""(topic, partition)"""

_MAX_EPOCH = 2**31 - 1


class SessionRequest:
    """The session fields and partitions of the next Fetch."""

    __slots__ = ("forgotten", "full", "session_epoch", "session_id", "topics")

    def __init__(
        self,
        session_id: int,
        session_epoch: int,
        topics: list[FetchTopic],
        forgotten: list[FetchForgottenTopic],
        *,
        full: bool,
    ) -> None:
        self.session_id = session_id
        self.session_epoch = session_epoch
        self.topics = topics
        self.forgotten = forgotten
        self.full = full


class FetchSessionBuilder:
    """One per connection to a leader: what that leader's session holds for us."""

    def __init__(self) -> None:
        self.session_id = INVALID_SESSION_ID
        self.epoch = INITIAL_EPOCH
        self._closing = INVALID_SESSION_ID
        """The session a reset left behind: the next full request names it, and the broker
        drops it (as Kafka's fetchers do) instead of keeping it until evicted."""
        self._sent: dict[Key, FetchPartition] = {}
        """What the broker's session holds, as of the last answered request."""
        self._pending: dict[Key, FetchPartition] | None = None
        """What it will hold once the request in flight is answered."""

    def build(
        self, wanted: Mapping[Key, FetchPartition], changed: Iterable[Key] | None = None
    ) -> SessionRequest:
        """The next request for ``wanted`` (every partition to fetch, in the order to ask
        for them): all of them without a session, else only what changed.

        A partition counts as unchanged only if its entry is the very object sent last
        time: the caller keeps a partition's FetchPartition while its position holds (no
        comparison per partition; an equal new object is merely sent again). A caller
        that knows which keys it replaced, added or dropped since its last build passes
        them as ``changed``, and only those are compared (a follower of 1,000 partitions,
        a few busy); None compares every one."""
        self._pending = dict(wanted)
        if self.session_id == INVALID_SESSION_ID:
            return SessionRequest(
                self._closing, INITIAL_EPOCH, _topics(wanted.items()), [], full=True
            )
        sent = self._sent
        if changed is None:
            moved = [(k, p) for k, p in wanted.items() if sent.get(k) is not p]
            gone = [k for k in sent if k not in wanted]
        else:
            moved, gone = [], []
            for k in changed:
                p = wanted.get(k)
                if p is None:
                    if k in sent:
                        gone.append(k)
                elif sent.get(k) is not p:
                    moved.append((k, p))
        forgotten: dict[str, list[int]] = {}
        for topic, index in gone:
            forgotten.setdefault(topic, []).append(index)
        return SessionRequest(
            self.session_id,
            self.epoch,
            _topics(moved),
            [FetchForgottenTopic(topic=t, partitions=ps) for t, ps in forgotten.items()],
            full=False,
        )

    def answered(self, request: SessionRequest, response: FetchResponse) -> bool:
        """The broker answered ``request`` (without a request-level error). False if the
        answer names a partition the session should not hold: the two sides disagree on
        what it holds, and the session starts over (Kafka's handler checks the same).
        The answer's records are still good: each was read at the position asked."""
        pending = self._pending
        assert pending is not None, "answered() without build()"
        if request.full:
            self.session_id = response.session_id  # INVALID_SESSION_ID: it keeps none
            self.epoch = 1
            self._closing = INVALID_SESSION_ID
        else:
            self.epoch = self.epoch + 1 if self.epoch < _MAX_EPOCH else 1
        self._sent, self._pending = pending, None
        for topic in response.topics:
            name = topic.topic
            for data in topic.partitions:
                if (name, data.partition_index) not in pending:
                    # left at the broker, it could be answered (an error: at once) on
                    # every fetch, and the fetcher would never say to forget it
                    self.reset()
                    return False
        return True

    def close(self) -> SessionRequest | None:
        """The request that ends the session at the broker (FINAL_EPOCH, no partitions),
        or None without one. The fetcher is stopping: a session left open holds a cache
        slot and an entry per partition at the broker until it is evicted. One a reset
        left behind (not yet named by a full request) is the one closed then."""
        closing = self.session_id if self.session_id != INVALID_SESSION_ID else self._closing
        if closing == INVALID_SESSION_ID:
            return None
        request = SessionRequest(closing, FINAL_EPOCH, [], [], full=True)
        self.reset()
        self._closing = INVALID_SESSION_ID  # this request closes it
        return request

    def reset(self) -> None:
        """The last request failed, or the broker lost or refused the session: the next
        request is full, and starts a new one."""
        if self.session_id != INVALID_SESSION_ID:
            self._closing = self.session_id
        self.session_id = INVALID_SESSION_ID
        self.epoch = INITIAL_EPOCH
        self._sent = {}
        self._pending = None


def _topics(partitions: object) -> list[FetchTopic]:
    by_topic: dict[str, list[FetchPartition]] = {}
    for (topic, _index), p in partitions:  # type: ignore[attr-defined]
        by_topic.setdefault(topic, []).append(p)
    return [FetchTopic(topic=t, partitions=ps) for t, ps in by_topic.items()]
