"""What a client knows of the cluster, and its connections to it.

:class:`ClusterMetadata` is an immutable snapshot of one Metadata answer (brokers,
controller, topics with their partitions' leaders), merged with what earlier answers said
about topics not asked for this time. :class:`Cluster` owns the connections and keeps the
snapshot fresh: on demand (a NOT_LEADER answer, an unknown leader), at most every
``retry_backoff_ms`` when asked in a hurry, and every ``metadata_max_age_ms`` regardless,
as Kafka's Metadata class does.

Connections are keyed by address and purpose, not by node id: a broker restarted on a new
port (as a port-0 listener is) is a new address in the next Metadata answer, and the
consumer's long-polling fetches get a connection of their own, so they never hold up a
ListOffsets or Metadata request queued behind them (the broker answers a connection's
requests in order).

Logging goes to the standard library's ``logging`` (``headwater.client.*``), silent unless
the application configures it: a library must not write to the stdout of a program that
prints records there (``headwater consume``).

Concurrency: one event loop. A refresh is one task that concurrent callers share. A
request is written whole before its first await (BrokerConnection queues the frame in one
synchronous call), so a caller that is cancelled abandons the answer, never half a
request, and the connection reads past the answer nobody waits for: its response stream
stays in step without a task per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from client.connection import BrokerConnection
from client.errors import ConfigurationError, TlsError
from client.security import SaslLogin
from client.types import TopicPartition
from protocol.apis import (
    ApiKey,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
    MetadataRequest,
    MetadataResponse,
)
from protocol.errors import (
    ApiError,
    LeaderNotAvailableError,
    NetworkError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from protocol.topic_id import ZERO_TOPIC_ID

__all__ = [
    "Broker",
    "Cluster",
    "ClusterMetadata",
    "PartitionMetadata",
    "TopicMetadata",
    "parse_bootstrap",
    "unknown_topic_error",
]

_log = logging.getLogger("headwater.client")

DEFAULT_PORT = 9092


def parse_bootstrap(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"h:p,h:p"`` or ``["h:p", ...]`` -> addresses; a missing port is Kafka's 9092."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[tuple[str, int]] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, str(DEFAULT_PORT)
        host = host.strip("[]")  # [::1]:9092
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"bootstrap server {item!r} is not host:port (e.g. 127.0.0.1:9092)"
            )
        out.append((host, int(port)))
    if not out:
        raise ConfigurationError("bootstrap_servers is empty; give at least one host:port")
    return out


def unknown_topic_error(topic: str) -> UnknownTopicOrPartitionError:
    return UnknownTopicOrPartitionError(
        f"topic {topic!r} does not exist; create it with `headwater topics create {topic}`"
    )


@dataclass(frozen=True, slots=True)
class Broker:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    partition: int
    leader: int
    """-1 while the partition has no live leader."""
    leader_epoch: int = -1
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    offline_replicas: tuple[int, ...] = ()
    error_code: int = 0


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    partitions: Mapping[int, PartitionMetadata]
    is_internal: bool = False
    available: tuple[int, ...] = field(default=())
    """Partitions with a live leader, sorted: where keyless records may go."""
    topic_id: bytes = ZERO_TOPIC_ID
    """The topic's id (KIP-516); zero from a broker of a build without them."""


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    """One consistent view; a refresh builds a new one instead of changing this."""

    brokers: Mapping[int, Broker] = field(default_factory=lambda: MappingProxyType({}))
    cluster_id: str | None = None
    controller_id: int = -1
    topics: Mapping[str, TopicMetadata] = field(default_factory=lambda: MappingProxyType({}))
    topic_errors: Mapping[str, ApiError] = field(default_factory=lambda: MappingProxyType({}))
    """Topics the last answer about them refused, with the broker's error."""
    updated_at: float = 0.0
    _leaders: dict[TopicPartition, int] | None = field(
        default=None, init=False, compare=False, repr=False
    )
    _epochs: dict[TopicPartition, int] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    def leaders(self) -> Mapping[TopicPartition, int]:
        """Every partition with a live leader, to it: a dict lookup per partition where a
        consumer of 1,024 partitions looks up all of them for every Fetch (made once per
        view, on first use)."""
        if self._leaders is None:
            leaders = {
                TopicPartition(name, p.partition): p.leader
                for name, topic in self.topics.items()
                for p in topic.partitions.values()
                if p.leader >= 0 and p.leader in self.brokers
            }
            object.__setattr__(self, "_leaders", leaders)  # frozen: a cache, not state
            return leaders
        return self._leaders

    def leader_epochs(self) -> Mapping[TopicPartition, int]:
        """Every partition whose leader epoch the view knows, to it: what a consumer sends
        as ``current_leader_epoch`` (KIP-320), so a broker with another leader epoch fences
        its Fetch. Made once per view, on first use, as :meth:`leaders`."""
        if self._epochs is None:
            epochs = {
                TopicPartition(name, p.partition): p.leader_epoch
                for name, topic in self.topics.items()
                for p in topic.partitions.values()
                if p.leader_epoch >= 0
            }
            object.__setattr__(self, "_epochs", epochs)  # frozen: a cache, not state
            return epochs
        return self._epochs

    def leader_for(self, tp: TopicPartition) -> int | None:
        topic = self.topics.get(tp.topic)
        if topic is None:
            return None
        partition = topic.partitions.get(tp.partition)
        if partition is None or partition.leader < 0 or partition.leader not in self.brokers:
            return None
        return partition.leader

    def partitions_for(self, topic: str) -> set[int] | None:
        meta = self.topics.get(topic)
        return None if meta is None else set(meta.partitions)

    def merged(
        self, response: MetadataResponse, asked: Iterable[str] | None, *, partial: bool = False
    ) -> ClusterMetadata:
        """This view updated by ``response`` to a request for ``asked`` (None: all topics).
        A ``partial`` one (a few new topics) keeps the age of the view, so the periodic
        refresh of every topic still comes when it is due."""
        topics = {} if asked is None else dict(self.topics)
        errors = {} if asked is None else dict(self.topic_errors)
        for t in response.topics:
            topics.pop(t.name, None)
            errors.pop(t.name, None)
            if t.error_code:
                errors[t.name] = error_for_code(t.error_code, t.error_message)
                continue
            partitions = {
                p.partition_index: PartitionMetadata(
                    p.partition_index,
                    p.leader_id,
                    p.leader_epoch,
                    tuple(p.replica_nodes),
                    tuple(p.isr_nodes),
                    tuple(p.offline_replicas),
                    p.error_code,
                )
                for p in t.partitions
            }
            available = tuple(sorted(i for i, p in partitions.items() if p.leader >= 0))
            topics[t.name] = TopicMetadata(
                t.name, MappingProxyType(partitions), t.is_internal, available, t.topic_id
            )
        return ClusterMetadata(
            brokers=MappingProxyType(
                {b.node_id: Broker(b.node_id, b.host, b.port, b.rack) for b in response.brokers}
            ),
            cluster_id=response.cluster_id,
            controller_id=response.controller_id,
            topics=MappingProxyType(topics),
            topic_errors=MappingProxyType(errors),
            updated_at=self.updated_at if partial else time.monotonic(),
        )

    def without(self, topics: set[str]) -> ClusterMetadata:
        """This view, forgetting ``topics`` (its age kept)."""
        return ClusterMetadata(
            brokers=self.brokers,
            cluster_id=self.cluster_id,
            controller_id=self.controller_id,
            topics=MappingProxyType({t: m for t, m in self.topics.items() if t not in topics}),
            topic_errors=MappingProxyType(
                {t: e for t, e in self.topic_errors.items() if t not in topics}
            ),
            updated_at=self.updated_at,
        )


Address = tuple[str, int]

CONFIRM_S = 2.0
"""The longest a Metadata answer waits for the controller to confirm a "no such topic"."""

STALLED_S = 2.0
"""A connection with a request unanswered this long is tried last by send_any (a long-poll
fetch is answered within fetch_max_wait_ms: half a second by default)."""

_answered: contextvars.ContextVar[Address | None] = contextvars.ContextVar(
    "_answered", default=None
)
"""The address whose answer :meth:`Cluster.send_any` returned last in this task."""


class Cluster:
    """Bootstrap, metadata and connections for one client (producer, consumer or admin).

    ``await start()`` reaches a bootstrap server and learns the brokers; ``add_topics``
    says which topics' metadata to keep; ``send(node_id, ...)`` talks to one broker,
    ``send_any(...)`` to whichever answers. ``on_update`` callbacks run after each refresh.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        client_id: str,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        metadata_max_age_ms: int = 300_000,
        allow_auto_topic_creation: bool = True,
        tls: ssl.SSLContext | None = None,
        login: SaslLogin | None = None,
        keep_topic: Callable[[str], bool] | None = None,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap_servers)
        self.keep_topic = keep_topic
        """Asked of each topic before a refresh of them all: False forgets it (its metadata
        is no longer asked for; a later use asks again). The producer's
        metadata_max_idle_ms (Kafka's retainTopic)."""
        self.tls = tls
        self.login = login
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self.allow_auto_topic_creation = allow_auto_topic_creation
        self.metadata = ClusterMetadata()
        self.on_update: list[Callable[[ClusterMetadata], None]] = []
        self._topics: set[str] = set()
        self._connections: dict[tuple[str, int, str], BrokerConnection] = {}
        self._connecting: dict[tuple[str, int, str], asyncio.Task[BrokerConnection]] = {}
        self._refreshing: asyncio.Task[ClusterMetadata] | None = None
        self._refreshing_topics: frozenset[str] = frozenset()
        self._new_topics: set[str] = set()  # for the next request of new topics only
        self._new_request: asyncio.Future[ClusterMetadata] | None = None  # its answer
        self._new_tasks: set[asyncio.Task[ClusterMetadata]] = set()  # cancelled by close()
        self._last_refresh_start = -1e18
        self._periodic: asyncio.Task[None] | None = None
        self._closed = False
        self._last_failure: NetworkError | None = None  # a TLS mistake send_any met

    # --- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn the brokers from a bootstrap server, or raise NetworkError saying so."""
        try:
            await self.refresh()
        except NetworkError:
            where = ", ".join(f"{h}:{p}" for h, p in self.bootstrap)
            why = self._last_failure
            if why is not None:  # reached, but TLS is wrong (or looks it): say how
                kind = TlsError if isinstance(why, TlsError) else NetworkError
                raise kind(f"no bootstrap server ({where}) could be used: {why.message}") from None
            raise NetworkError(
                f"could not reach any bootstrap server ({where}): is the cluster up? "
                f"try `headwater cluster status`"
            ) from None
        self._periodic = asyncio.get_running_loop().create_task(self._refresh_periodically())

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [
            t for t in (self._periodic, self._refreshing) if t is not None
        ]
        tasks += self._connecting.values()
        tasks += self._new_tasks
        for task in tasks:
            task.cancel()
        connections = list(self._connections.values())
        self._connections.clear()
        for conn in connections:
            conn.close(NetworkError(f"the client closed its connection to {conn.host}:{conn.port}"))
        for conn in connections:
            with contextlib.suppress(OSError):
                await conn.__aexit__(None, None, None)
        await asyncio.gather(*tasks, return_exceptions=True)  # our cancellation propagates

    # --- metadata --------------------------------------------------------------------------

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    def add_topics(self, topics: Iterable[str]) -> bool:
        """Keep metadata for these topics too; True if any is new (then refresh)."""
        new = set(topics) - self._topics
        self._topics |= new
        return bool(new)

    def set_topics(self, topics: Iterable[str]) -> None:
        self._topics = set(topics)

    async def refresh(self) -> ClusterMetadata:
        """A fresh view covering every topic of interest; concurrent callers share one."""
        while True:
            task = self._refreshing
            if task is None or task.done():
                self._forget_unused()
                self._refreshing_topics = frozenset(self._topics)
                self._last_refresh_start = time.monotonic()
                task = asyncio.get_running_loop().create_task(
                    self._refresh(sorted(self._refreshing_topics))
                )
                task.add_done_callback(_retrieve)
                self._refreshing = task
                return await asyncio.shield(task)
            if self._refreshing_topics >= self._topics:
                return await asyncio.shield(task)
            # the refresh in flight misses a topic added since: let it end, start another
            with contextlib.suppress(ApiError):
                await asyncio.shield(task)

    def _forget_unused(self) -> None:
        if self.keep_topic is None:
            return
        unused = {t for t in self._topics if not self.keep_topic(t)}
        if unused:
            self._topics -= unused
            self.metadata = self.metadata.without(unused)

    def request_refresh(self) -> None:
        """Refresh soon without waiting for it: at most once per ``retry_backoff_ms``."""
        if self._closed or (self._refreshing is not None and not self._refreshing.done()):
            return
        since_ms = (time.monotonic() - self._last_refresh_start) * 1000
        if since_ms >= self.retry_backoff_ms:
            task = asyncio.get_running_loop().create_task(self.refresh())
            task.add_done_callback(_retrieve)

    async def refresh_new(self, topic: str) -> ClusterMetadata:
        """A view with fresh metadata for ``topic``, asking for it alone (Kafka's KIP-526):
        a producer meeting its N-th topic asked for all N, so meeting N topics cost
        N x N / 2 topics' metadata. Topics asked for in the same loop pass share a
        request; the others are left to the periodic refresh."""
        self._new_topics.add(topic)
        answer = self._new_request
        if answer is None:
            loop = asyncio.get_running_loop()
            answer = self._new_request = loop.create_future()
            loop.call_soon(self._request_new, answer)
        return await asyncio.shield(answer)

    def _request_new(self, answer: asyncio.Future[ClusterMetadata]) -> None:
        topics, self._new_topics, self._new_request = sorted(self._new_topics), set(), None
        # (a full refresh may have forgotten one since it was asked for: it is wanted)
        self._topics.update(topics)
        task = asyncio.get_running_loop().create_task(self._refresh(topics, partial=True))
        self._new_tasks.add(task)

        def settle(done: asyncio.Task[ClusterMetadata]) -> None:
            self._new_tasks.discard(done)
            if done.cancelled():  # by close(): not the callers' own cancellation
                answer.set_exception(NetworkError("the client was closed meanwhile"))
            elif (exc := done.exception()) is not None:
                answer.set_exception(exc)
            else:
                answer.set_result(done.result())

        task.add_done_callback(settle)
        answer.add_done_callback(_retrieve)  # its callers (shielded) may have gone away

    async def _refresh(self, topics: list[str], *, partial: bool = False) -> ClusterMetadata:
        request = MetadataRequest(
            topics=topics, allow_auto_topic_creation=self.allow_auto_topic_creation
        )
        response, _ = await self._metadata(request)
        self.metadata = self.metadata.merged(response, topics, partial=partial)
        for callback in list(self.on_update):
            callback(self.metadata)
        return self.metadata

    async def fetch_metadata(
        self, topics: list[str] | None, *, allow_auto_topic_creation: bool = False
    ) -> ClusterMetadata:
        """Ask for exactly ``topics`` (None: all) and return that answer's view.

        The shared view learns the brokers and these topics as well.
        """
        request = MetadataRequest(
            topics=topics, allow_auto_topic_creation=allow_auto_topic_creation
        )
        response, unchecked = await self._metadata(request)
        self.metadata = self.metadata.merged(response, topics if topics is not None else [])
        # the caller asked: it gets the answer it got, unchecked "no such topic" included
        response.topics = [*response.topics, *unchecked]
        return ClusterMetadata().merged(response, topics)

    async def _metadata(self, request: MetadataRequest) -> tuple[MetadataResponse, list[Any]]:
        """A Metadata answer whose "no such topic" is the controller's word, and the
        answers of "no such topic" that could not be checked (left out of the first).

        A broker that has just started, or that was cut off for a while, has not yet been
        told of every topic by the controller, and answers UNKNOWN_TOPIC_OR_PARTITION for
        topics that exist: believed, a producer would fail its records and a group member
        would see its topic gone. So a topic one broker says is unknown is asked of the
        controller (which tells every broker, itself first), for at most
        :data:`CONFIRM_S`: a controller that cannot be asked (down, paused) must not hold
        up the rest of the answer; one that no longer names itself controller (the first
        broker's news was old) is not believed either. A topic left out is as if not yet
        heard of: what was known of it stays, and the next refresh asks again."""
        _answered.set(None)
        response: MetadataResponse = await self.send_any(ApiKey.METADATA, request)
        unknown = {
            t.name for t in response.topics if t.error_code == UnknownTopicOrPartitionError.code
        }
        if not unknown:
            return response, []
        controller = next(
            (b for b in response.brokers if b.node_id == response.controller_id), None
        )
        where = None if controller is None else (controller.host, controller.port)
        first = _answered.get()
        if where is not None and where == first:
            _log.info(
                "topic(s) %s do not exist: broker %s, the controller, says so",
                sorted(unknown),
                response.controller_id,
            )
            return response, []  # the controller's own answer
        confirmed: dict[str, Any] = {}
        if where is not None:
            try:
                async with asyncio.timeout(min(CONFIRM_S, self.request_timeout_ms / 1000)):
                    second: MetadataResponse = await self._send_to(
                        where,
                        ApiKey.METADATA,
                        MetadataRequest(topics=sorted(unknown), allow_auto_topic_creation=False),
                    )
                # a broker named controller by a stale one may be deposed, and as far
                # behind: its word counts only while it still names itself
                if second.controller_id == response.controller_id:
                    confirmed = {t.name: t for t in second.topics}
            except (NetworkError, RequestTimedOutError, TimeoutError):
                pass  # cannot be asked now: none of them is believed unknown
        gone = sorted(
            t
            for t, found in confirmed.items()
            if found.error_code == UnknownTopicOrPartitionError.code
        )
        if gone:
            _log.info(
                "topic(s) %s do not exist: a broker at %s says so and the controller, broker "
                "%s, confirms",
                gone,
                f"{first[0]}:{first[1]}" if first else "?",
                response.controller_id,
            )
        unchecked = [t for t in response.topics if t.name in unknown and t.name not in confirmed]
        response.topics = [
            confirmed[t.name] if t.name in unknown else t
            for t in response.topics
            if t.name not in unknown or t.name in confirmed
        ]
        return response, unchecked

    async def _refresh_periodically(self) -> None:
        failures = 0
        while True:
            age_s = time.monotonic() - self.metadata.updated_at
            # after failures, back off (doubling, up to a minute) instead of spinning
            backoff_s = min(self.retry_backoff_ms / 1000 * 2**failures, 60.0) if failures else 0
            await asyncio.sleep(max(self.metadata_max_age_ms / 1000 - age_s, 0.01, backoff_s))
            if time.monotonic() - self.metadata.updated_at >= self.metadata_max_age_ms / 1000:
                try:
                    await self.refresh()
                    failures = 0
                except ApiError as exc:
                    failures += 1
                    _log.warning("metadata refresh failed: %s", exc)

    async def wait_for_topic(self, topic: str, timeout_ms: float) -> TopicMetadata:
        """The topic's metadata, refreshing until it has partitions.

        UNKNOWN_TOPIC_OR_PARTITION from a fresh answer fails at once with a message that
        says what to do; LEADER_NOT_AVAILABLE (being created) is waited out, up to
        ``timeout_ms`` (then REQUEST_TIMED_OUT, as Kafka's TimeoutException).
        """
        found = self.metadata.topics.get(topic)
        if found is not None and topic in self._topics:
            return found
        self.add_topics([topic])
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            metadata = await self._refresh_until(deadline, topic, timeout_ms)
            found = metadata.topics.get(topic)
            if found is not None and found.partitions:
                return found
            error = metadata.topic_errors.get(topic)
            if isinstance(error, UnknownTopicOrPartitionError):
                raise unknown_topic_error(topic)
            if error is not None and not error.retriable:
                raise error
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            await asyncio.sleep(min(self.retry_backoff_ms / 1000, remaining_s))
        raise RequestTimedOutError(f"topic {topic!r} not present in metadata after {timeout_ms} ms")

    async def _refresh_until(
        self, deadline: float, topic: str, timeout_ms: float
    ) -> ClusterMetadata:
        remaining_s = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(self.refresh_new(topic), max(remaining_s, 0.001))
        except TimeoutError:
            raise RequestTimedOutError(
                f"topic {topic!r} not present in metadata after {timeout_ms} ms"
            ) from None

    def leader_for(self, tp: TopicPartition) -> int | None:
        return self.metadata.leader_for(tp)

    # --- requests --------------------------------------------------------------------------

    async def send(
        self,
        node_id: int,
        api_key: ApiKey,
        request: Any,
        *,
        expect_response: bool = True,
        purpose: str = "",
        timeout_ms: int | None = None,
    ) -> Any:
        """One request to broker ``node_id``; network trouble is NetworkError (retriable)."""
        conn = await self.connect(node_id, purpose)
        return await self._request(conn, api_key, request, expect_response, timeout_ms)

    async def connect(self, node_id: int, purpose: str = "") -> BrokerConnection:
        """Broker ``node_id``'s connection for ``purpose``, connecting if need be. Its
        errors (LeaderNotAvailableError, NetworkError) mean nothing was sent to it."""
        broker = self.metadata.brokers.get(node_id)
        if broker is None:
            raise LeaderNotAvailableError(f"broker {node_id} is not in the cluster metadata")
        return await self._connection((broker.host, broker.port), purpose)

    def connection_now(self, node_id: int, purpose: str = "") -> BrokerConnection | None:
        """Broker ``node_id``'s open connection for ``purpose``, if there is one: for
        requests written at once (:meth:`BrokerConnection.send_now`); None means use
        :meth:`send`, which connects."""
        broker = self.metadata.brokers.get(node_id)
        if broker is None:
            return None
        conn = self._connections.get((broker.host, broker.port, purpose))
        return conn if conn is not None and conn.connected else None

    async def send_any(
        self,
        api_key: ApiKey,
        request: Any,
        *,
        idempotent: bool = True,
        pass_over: tuple[type[ApiError], ...] = (),
    ) -> Any:
        """Send to the first broker that answers: connected ones first, then the other
        known brokers, then the bootstrap servers (all known ones may have moved).

        A request that is not ``idempotent`` (CreateTopics, DeleteTopics) is sent once:
        if its answer is lost it may still have been done, and a second broker would then
        answer TOPIC_ALREADY_EXISTS for the caller's own topic. Only failing to connect
        moves it on to the next broker. An answer with an error of ``pass_over`` moves
        an idempotent request on too (a broker that cannot say where a coordinator is
        may be the one cut off: another may know); if every broker answers so, the last
        such error is raised.
        """
        last: ApiError | None = None
        refused: ApiError | None = None
        self._last_failure = None
        for address in self._candidates():
            try:
                conn = await self._connection(address, "")
            except (NetworkError, RequestTimedOutError) as exc:  # a broker that does not
                last = exc  # answer its handshake (stopped, overloaded) is passed over too
                if isinstance(exc, NetworkError) and (
                    isinstance(exc, TlsError) or getattr(exc, "tls_hint", False)
                ):
                    self._last_failure = exc
                continue
            try:
                response = await self._request(conn, api_key, request, True)
            except (NetworkError, RequestTimedOutError) as exc:
                if not idempotent:
                    raise
                last = exc
                continue
            except pass_over as exc:
                if not idempotent:
                    raise
                refused = exc
                continue
            _answered.set(address)
            return response
        if refused is not None:
            raise refused
        raise NetworkError(f"no broker answered: {last}")

    async def _send_to(self, address: Address, api_key: ApiKey, request: Any) -> Any:
        """One request to the broker at ``address`` (connecting if need be)."""
        conn = await self._connection(address, "")
        return await self._request(conn, api_key, request, True)

    def _candidates(self) -> list[Address]:
        """Where :meth:`send_any` tries, in order: brokers connected and answering, then
        the other known brokers, then the bootstrap servers, and last the brokers with a
        request unanswered for :data:`STALLED_S` (paused, overloaded: Kafka's
        leastLoadedNode passes over busy nodes too), which would hold a request for
        ``request_timeout_ms``."""
        known = [(b.host, b.port) for b in self.metadata.brokers.values()]
        random.shuffle(known)
        connected: set[Address] = set()
        stalled: set[Address] = set()
        now = asyncio.get_running_loop().time()
        for (host, port, _), conn in self._connections.items():
            if conn.connected:
                connected.add((host, port))
                since = conn.waiting_since()
                if since is not None and now - since > STALLED_S:
                    stalled.add((host, port))
        ordered = [a for a in known if a in connected and a not in stalled]
        ordered += [a for a in known if a not in connected]
        ordered += [a for a in self.bootstrap if a not in ordered and a not in stalled]
        ordered += [a for a in known if a in stalled]
        return ordered

    async def _connection(self, address: Address, purpose: str) -> BrokerConnection:
        if self._closed:
            raise NetworkError("the client is closed")
        key = (*address, purpose)
        conn = self._connections.get(key)
        if conn is not None and conn.connected:
            return conn
        task = self._connecting.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect(address, key))
            task.add_done_callback(_retrieve)
            self._connecting[key] = task
            task.add_done_callback(lambda _t: self._connecting.pop(key, None))
        return await asyncio.shield(task)

    async def _connect(self, address: Address, key: tuple[str, int, str]) -> BrokerConnection:
        """Connect and keep the connection: the task does it, not its waiters, so a
        connection made after every waiter was cancelled is still closed by close()."""
        conn = BrokerConnection(
            *address,
            request_timeout_ms=self.request_timeout_ms,
            tls=self.tls,
            login=self.login,
            client_id=self.client_id,
        )
        try:
            await conn.connect(timeout_s=min(self.request_timeout_ms / 1000, 10.0))
        except BaseException:
            conn.close()
            raise
        if self._closed:
            conn.close()
            raise NetworkError("the client is closed")
        self._connections[key] = conn
        return conn

    async def _request(
        self,
        conn: BrokerConnection,
        api_key: ApiKey,
        request: Any,
        expect_response: bool,
        timeout_ms: int | None = None,
    ) -> Any:
        try:
            return await conn.request(
                api_key, request, expect_response=expect_response, timeout_ms=timeout_ms
            )
        except OSError as exc:  # a write to a socket the peer has closed
            conn.close(NetworkError(f"lost the connection to {conn.host}:{conn.port} ({exc})"))
            raise NetworkError(f"lost the connection to {conn.host}:{conn.port} ({exc})") from None


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shielded task's exception as seen: its caller may have gone away."""
    if not task.cancelled():
        task.exception()


def list_offsets_request(
    tps: Iterable[TopicPartition],
    timestamps: Mapping[TopicPartition, int],
    *,
    isolation_level: int = 0,
) -> ListOffsetsRequest:
    """ListOffsets for ``tps`` (one leader's), each at its timestamp (or -1/-2: latest/
    earliest), grouped by topic as the request wants them. ``isolation_level`` 1
    (read_committed): latest is the last stable offset."""
    by_topic: dict[str, list[ListOffsetsPartition]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(
            ListOffsetsPartition(partition_index=tp.partition, timestamp=timestamps[tp])
        )
    return ListOffsetsRequest(
        isolation_level=isolation_level,
        topics=[ListOffsetsTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
    )
