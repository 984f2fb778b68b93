"""The broker's bridge to ZooKeeper: Kafka's znode layout, and kazoo -> the event loop.

The only module that imports kazoo. kazoo runs its own threads; nothing here ever blocks
the event loop on it:

- operations use kazoo's ``*_async`` calls, whose completion is handed to the loop with
  ``call_soon_threadsafe`` and awaited as a future;
- watches and session-state changes are delivered the same way, to plain callbacks that
  run on the loop thread (they should only enqueue work);
- conditional writes take the znode ``version`` (compare-and-set) and raise
  :class:`VersionConflict` when someone else wrote first.

Paths and JSON payloads follow Kafka's ZooKeeper layout so an operator with ``zkCli``
sees familiar things; every one of them is in this module.
"""

from __future__ import annotations

import asyncio
import errno
import json
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote, unquote

import kazoo
import structlog
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
    ZookeeperError,
)
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import WatchedEvent, ZnodeStat
from kazoo.retry import KazooRetry

from protocol.errors import HeadwaterError
from protocol.topic_id import TOPIC_IDS_FEATURE, ZERO_TOPIC_ID, format_topic_id, parse_topic_id

__all__ = [
    "BrokerRegistration",
    "GuardedWrite",
    "NoNode",
    "NodeExists",
    "PartitionState",
    "SessionState",
    "TopicAssignment",
    "VersionConflict",
    "ZkBridge",
    "ZkError",
    "ZkUnavailable",
    "paths",
]


# --- paths -------------------------------------------------------------------------------


class paths:
    BROKER_IDS = "/brokers/ids"
    TOPICS = "/brokers/topics"
    CONTROLLER = "/controller"
    CONTROLLER_EPOCH = "/controller_epoch"
    CLUSTER_ID = "/cluster/id"
    TOPIC_CONFIGS = "/config/topics"
    USER_CONFIGS = "/config/users"
    BROKER_CONFIGS = "/config/brokers"
    DELETE_TOPICS = "/admin/delete_topics"
    ISR_CHANGES = "/isr_change_notification"
    LOG_DIR_EVENTS = "/log_dir_event_notification"
    LOG_DIR_EVENT_PREFIX = "log_dir_event_"
    """``/log_dir_event_notification/log_dir_event_<seq>``: Kafka's (KIP-112) word from a
    broker that a log of its own went offline (a disk error)."""
    CONFIG_CHANGES = "/config/changes"
    CONFIG_CHANGE_PREFIX = "config_change_"
    """``/config/changes/config_change_<seq>``: Kafka's config change notifications."""
    PRODUCER_ID_BLOCK = "/latest_producer_id_block"

    @staticmethod
    def broker(broker_id: int) -> str:
        return f"{paths.BROKER_IDS}/{broker_id}"

    @staticmethod
    def topic(topic: str) -> str:
        return f"{paths.TOPICS}/{topic}"

    @staticmethod
    def partitions(topic: str) -> str:
        return f"{paths.TOPICS}/{topic}/partitions"

    @staticmethod
    def partition_state(topic: str, partition: int) -> str:
        return f"{paths.TOPICS}/{topic}/partitions/{partition}/state"

    @staticmethod
    def topic_config(topic: str) -> str:
        return f"{paths.TOPIC_CONFIGS}/{topic}"

    @staticmethod
    def broker_config(entity: str) -> str:
        """A broker's dynamic configs (``<default>``: every broker's)."""
        return f"{paths.BROKER_CONFIGS}/{entity}"

    @staticmethod
    def user_config(user: str) -> str:
        """Kafka's sanitized name (URL-encoded, ``*`` as %2A): any user name is one znode."""
        return f"{paths.USER_CONFIGS}/{paths.sanitize(user)}"

    @staticmethod
    def sanitize(name: str) -> str:
        """Kafka's Sanitizer: URL-encoded, ``*`` and ``~`` too (a user or client id is a
        znode name whatever it holds)."""
        return quote(name, safe="").replace("*", "%2A").replace("~", "%7E")

    @staticmethod
    def user_of(znode_name: str) -> str:
        return unquote(znode_name)

    @staticmethod
    def delete_topic(topic: str) -> str:
        return f"{paths.DELETE_TOPICS}/{topic}"


# --- errors ------------------------------------------------------------------------------


class ZkError(HeadwaterError):
    """A ZooKeeper operation failed (connection, session, or unexpected server error)."""


class ZkUnavailable(ZkError):
    """ZooKeeper could not be asked: the connection is lost, the session expired, or it
    did not answer in time (an outage, not a refusal: the operation may be tried again)."""


class ZkConnectionLoss(ZkUnavailable):
    """The connection to ZooKeeper dropped while the operation was out: it may or may not
    have been made. The session may live on (kazoo reconnects by itself): an operation
    that is safe to repeat is sent again (:meth:`ZkBridge._answer`), a compare-and-set is
    read again and retried."""


class NoNode(ZkError):
    """The znode does not exist."""


class NodeExists(ZkError):
    """The znode already exists."""


class VersionConflict(ZkError):
    """A compare-and-set lost: the znode changed since it was read."""


class Fenced(ZkError):
    """A guarded write was refused: the guard znode moved on (a newer controller)."""


class CorruptZnode(ZkError):
    """A znode's payload is not what Kafka's layout says it should be."""


# --- payloads (Kafka's JSON) -------------------------------------------------------------


def _decode(path: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptZnode(f"{path} does not hold JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CorruptZnode(f"{path} holds {type(value).__name__}, not a JSON object")
    return value


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    """``/brokers/ids/<id>``: where a live broker serves. ``host``/``port`` are its
    inter-broker listener's; ``endpoints`` every listener's (``NAME://HOST:PORT``), with
    each name's security protocol in ``protocols``. ``epoch`` is the znode's czxid."""

    broker_id: int
    host: str
    port: int
    rack: str | None = None
    endpoints: list[str] = field(default_factory=list)
    epoch: int = -1
    protocols: dict[str, str] = field(default_factory=dict)
    features: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Kafka's ``features`` (KIP-584): each name's (min, max) version; a build before
    them registers none."""

    def __post_init__(self) -> None:
        if not self.endpoints:  # the one plaintext listener, as Kafka writes it
            object.__setattr__(self, "endpoints", [f"PLAINTEXT://{self.host}:{self.port}"])
        if not self.protocols:
            names = [e.partition("://")[0] for e in self.endpoints]
            object.__setattr__(self, "protocols", {n: n for n in names})

    def listeners(self) -> list[tuple[str, str, int, str]]:
        """Each listener: name, host, port, security protocol."""
        out = []
        for endpoint in self.endpoints:
            name, _, address = endpoint.partition("://")
            host, _, port = address.rpartition(":")
            out.append((name, host, int(port), self.protocols.get(name, name)))
        return out

    def to_json(self, timestamp_ms: int) -> bytes:
        return _encode(
            {
                "version": 5,
                "host": self.host,
                "port": self.port,
                "rack": self.rack,
                "endpoints": self.endpoints,
                "listener_security_protocol_map": self.protocols,
                "jmx_port": -1,
                "timestamp": str(timestamp_ms),
                "features": {
                    name: {"min_version": low, "max_version": high}
                    for name, (low, high) in sorted(self.features.items())
                },
            }
        )

    @property
    def keeps_topic_ids(self) -> bool:
        return TOPIC_IDS_FEATURE in self.features

    @classmethod
    def from_json(
        cls, broker_id: int, data: bytes, stat: ZnodeStat | None = None
    ) -> BrokerRegistration:
        path = paths.broker(broker_id)
        value = _decode(path, data)
        try:
            reg = cls(
                broker_id=broker_id,
                host=str(value["host"]),
                port=int(value["port"]),
                rack=value.get("rack"),
                endpoints=list(value.get("endpoints", [])),
                epoch=stat.czxid if stat is not None else -1,
                protocols=dict(value.get("listener_security_protocol_map") or {}),
                features={
                    str(name): (int(v["min_version"]), int(v["max_version"]))
                    for name, v in (value.get("features") or {}).items()
                },
            )
            reg.listeners()  # every endpoint NAME://HOST:PORT
            return reg
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptZnode(f"{path} lacks a valid host/port: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class TopicAssignment:
    """``/brokers/topics/<topic>``: the replicas of each partition, preferred leader first,
    of the partitions being reassigned which replicas are being added and removed (see
    :mod:`broker.controller.reassignment`), and the topic's id (KIP-516; Kafka's version
    3 of the znode, ``topic_id`` in its text form). A topic written by a build without
    ids has :data:`ZERO_TOPIC_ID` until the controller gives it one."""

    topic: str
    partitions: dict[int, list[int]]
    adding: dict[int, list[int]] = field(default_factory=dict)
    removing: dict[int, list[int]] = field(default_factory=dict)
    topic_id: bytes = ZERO_TOPIC_ID

    def to_json(self) -> bytes:
        value: dict[str, object] = {
            "version": 3 if self.topic_id != ZERO_TOPIC_ID else 2,
            "partitions": {str(p): r for p, r in sorted(self.partitions.items())},
            "adding_replicas": {str(p): r for p, r in sorted(self.adding.items()) if r},
            "removing_replicas": {str(p): r for p, r in sorted(self.removing.items()) if r},
        }
        if self.topic_id != ZERO_TOPIC_ID:
            value["topic_id"] = format_topic_id(self.topic_id)
        return _encode(value)

    @classmethod
    def from_json(cls, topic: str, data: bytes) -> TopicAssignment:
        value = _decode(paths.topic(topic), data)
        try:
            parts = {int(p): [int(b) for b in r] for p, r in value["partitions"].items()}
            # version 1 (before KIP-455) has neither
            adding, removing = (
                {int(p): [int(b) for b in r] for p, r in (value.get(key) or {}).items() if r}
                for key in ("adding_replicas", "removing_replicas")
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptZnode(f"{paths.topic(topic)} lacks valid partitions: {exc!r}") from None
        text = value.get("topic_id")  # versions 1 and 2 (before KIP-516) have none
        try:
            topic_id = ZERO_TOPIC_ID if text is None else parse_topic_id(str(text))
        except ValueError as exc:
            raise CorruptZnode(f"{paths.topic(topic)}: {exc}") from None
        return cls(topic, parts, adding, removing, topic_id)

    @property
    def reassigning(self) -> set[int]:
        """The partitions being reassigned."""
        return set(self.adding) | set(self.removing)


@dataclass(frozen=True, slots=True)
class PartitionState:
    """``.../partitions/<p>/state``: leader, leader epoch, ISR, and who wrote it."""

    leader: int
    leader_epoch: int
    isr: list[int]
    controller_epoch: int

    def to_json(self) -> bytes:
        return _encode(
            {
                "version": 1,
                "leader": self.leader,
                "leader_epoch": self.leader_epoch,
                "isr": self.isr,
                "controller_epoch": self.controller_epoch,
            }
        )

    @classmethod
    def from_json(cls, path: str, data: bytes) -> PartitionState:
        value = _decode(path, data)
        try:
            return cls(
                leader=int(value["leader"]),
                leader_epoch=int(value["leader_epoch"]),
                isr=[int(b) for b in value["isr"]],
                controller_epoch=int(value["controller_epoch"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptZnode(f"{path} is not a partition state: {exc!r}") from None


def isr_change_from_json(path: str, data: bytes) -> list[tuple[str, int]]:
    """The partitions an ``/isr_change_notification/isr_change_N`` znode names."""
    value = _decode(path, data)
    try:
        return [(str(p["topic"]), int(p["partition"])) for p in value["partitions"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptZnode(f"{path} lacks valid partitions: {exc!r}") from None


def log_dir_event_json(broker_id: int) -> bytes:
    """Kafka's LogDirEventNotification body: event 1 is LogDirFailure."""
    return _encode({"version": 1, "broker": broker_id, "event": 1})


def log_dir_event_from_json(path: str, data: bytes) -> int:
    """The broker a ``/log_dir_event_notification/log_dir_event_N`` znode is from."""
    value = _decode(path, data)
    try:
        return int(value["broker"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptZnode(f"{path} lacks a broker id: {exc!r}") from None


def controller_json(broker_id: int, timestamp_ms: int) -> bytes:
    return _encode({"version": 1, "brokerid": broker_id, "timestamp": str(timestamp_ms)})


def controller_from_json(data: bytes) -> int:
    try:
        return int(_decode(paths.CONTROLLER, data)["brokerid"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptZnode(f"{paths.CONTROLLER} lacks a broker id: {exc!r}") from None


def cluster_id_json(cluster_id: str) -> bytes:
    return _encode({"version": "1", "id": cluster_id})


def cluster_id_from_json(data: bytes) -> str:
    try:
        return str(_decode(paths.CLUSTER_ID, data)["id"])
    except KeyError:
        raise CorruptZnode(f"{paths.CLUSTER_ID} lacks an id") from None


def kept_topic_id_from(data: bytes) -> bytes | None:
    """The topic id a ``/brokers/topics/<t>/partitions`` znode keeps. Kafka leaves that
    znode empty, and no build rewrites it, while a build without topic ids rewrites the
    topic's own znode without its id (growing the topic, or moving replicas): the id is
    kept here too, so a controller finding the topic without one gives back the same id
    rather than another, which every replica's ``partition.metadata`` would refuse. A
    deletion removes it with the topic. Anything else than the copy reads as none."""
    try:
        value = json.loads(data)
        return parse_topic_id(str(value["topic_id"]))
    except (ValueError, TypeError, KeyError):
        return None


def topic_config_json(config: dict[str, str]) -> bytes:
    return _encode({"version": 1, "config": config})


def topic_config_from_json(topic: str, data: bytes) -> dict[str, str]:
    return entity_config_from_json(paths.topic_config(topic), data)


def entity_config_from_json(path: str, data: bytes) -> dict[str, str]:
    """The config of the entity at ``path`` (a topic, a broker, a user, a client id)."""
    if not data:  # a parent made for a child's sake (/config/users/<u>/clients/...)
        return {}
    value = _decode(path, data)
    config = value.get("config", {})
    if not isinstance(config, dict):
        raise CorruptZnode(f"{path}: config is not an object")
    return {str(k): str(v) for k, v in config.items()}


def config_change_json(name: str, kind: str = "topics") -> bytes:
    """A change notification naming an entity's config (Kafka's version 2 payload):
    ``topics/<topic>``, ``users/<sanitized user>``."""
    return _encode({"version": 2, "entity_path": f"{kind}/{name}"})


def config_change_from_json(path: str, data: bytes) -> tuple[str, str]:
    """(entity type, entity name) of a change notification: ``("topics", "orders")``."""
    value = _decode(path, data)
    entity = value.get("entity_path")
    if value.get("version") != 2 or not isinstance(entity, str) or "/" not in entity:
        raise CorruptZnode(f"{path} is not a version 2 config change: {value!r}")
    kind, _, name = entity.partition("/")
    return kind, name


def producer_id_block_json(broker_id: int, block_start: int, block_end: int) -> bytes:
    """Kafka's ProducerIdBlockZNode: the last block handed out (ids inclusive)."""
    return _encode(
        {
            "version": 1,
            "broker": broker_id,
            "block_start": str(block_start),
            "block_end": str(block_end),
        }
    )


def producer_id_block_from_json(data: bytes) -> tuple[int, int]:
    """(block_start, block_end) of the last block handed out."""
    value = _decode(paths.PRODUCER_ID_BLOCK, data)
    try:
        return int(value["block_start"]), int(value["block_end"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptZnode(f"{paths.PRODUCER_ID_BLOCK}: bad block {exc!r}") from None


# --- the bridge --------------------------------------------------------------------------


_CREATE = -2
"""``guarded(..., version=CREATE)``: create the znode instead of setting it."""
CREATE = _CREATE


@dataclass(frozen=True, slots=True)
class GuardedWrite:
    """One write of :meth:`ZkBridge.write_many`: ``path`` created (``version`` is
    :data:`CREATE`, ``parents`` first) or set at ``version`` (-1: any)."""

    path: str
    value: bytes
    version: int
    parents: tuple[str, ...] = ()


_MULTI_OPS = 256
"""Writes per ZooKeeper multi in :meth:`ZkBridge.write_many`: a few dozen KB of a
request's 1 MB limit (``jute.maxbuffer``), even with long topic names."""


class SessionState:
    CONNECTED = "CONNECTED"
    SUSPENDED = "SUSPENDED"  # connection lost, session may live: pause leader-only work
    LOST = "LOST"  # session expired: ephemerals are gone, re-register


WatchCallback = Callable[[WatchedEvent], None]
StateCallback = Callable[[str], None]
LossCallback = Callable[[int | None], None]


_RECONNECT_MAX_DELAY_S = 1.0
"""The longest wait between attempts to reach ZooKeeper. kazoo's own backoff doubles up
to an hour: a broker cut off from ZooKeeper for a minute waited up to another minute
after it came back, its coordinators refusing (their session in doubt) and its
leaderships unknown. Kafka's ZooKeeper client tries again within a second."""

_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR


class _PollHandler(SequentialThreadingHandler):
    """kazoo's threading handler, its ``select`` made by poll(2). kazoo's own builds,
    registers and closes an epoll selector on every call, and its connection thread
    calls it for every request it sends and every answer it waits for, holding the GIL
    the broker's loop needs: 2,109 pipelined reads (a controller's startup) took 1.0 s
    of CPU, 0.7 s with this. poll(2) takes any descriptor number, as epoll does (a
    broker holds thousands of files: select(2) would not do)."""

    def select(
        self,
        rlist: Sequence[Any],
        wlist: Sequence[Any],
        xlist: Sequence[Any],
        timeout: float | None = None,
    ) -> tuple[list[Any], list[Any], list[Any]]:
        readable: list[Any] = []
        writable: list[Any] = []
        wanted: dict[int, list[tuple[Any, int, list[Any]]]] = {}
        masks: dict[int, int] = {}
        for found, ask, ready_on, out in (
            (rlist, select.POLLIN, _READABLE, readable),
            (wlist, select.POLLOUT, _WRITABLE, writable),
        ):
            for obj in found:
                fd = obj if isinstance(obj, int) else obj.fileno()
                masks[fd] = masks.get(fd, 0) | ask
                wanted.setdefault(fd, []).append((obj, ready_on, out))
        poller = select.poll()
        for fd, mask in masks.items():
            poller.register(fd, mask)
        for fd, events in poller.poll(None if timeout is None else timeout * 1000):
            if events & select.POLLNVAL:  # closed under it: kazoo drops the connection
                raise OSError(errno.EBADF, f"descriptor {fd} is not open")
            for obj, ready_on, out in wanted[fd]:
                if events & ready_on:
                    out.append(obj)
        return readable, writable, []


class ZkBridge:
    """Async access to ZooKeeper from the event loop that created it.

    Lifecycle: ``await start()`` (bounded retries, short first-connect timeout, so the
    ZOOKEEPER-5051 startup race costs a retry, not a whole timeout), then operations,
    then ``await stop()``. Callbacks run on the loop thread.
    """

    def __init__(
        self,
        hosts: str,
        *,
        session_timeout_ms: int = 18_000,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._log = structlog.get_logger("headwater.zk")
        self.session_timeout_s = session_timeout_ms / 1000
        handler = _PollHandler()
        self._client = KazooClient(
            hosts=hosts,
            timeout=session_timeout_ms / 1000,
            handler=handler,
            connection_retry=KazooRetry(
                max_tries=-1,
                delay=0.1,
                backoff=2,
                max_delay=_RECONNECT_MAX_DELAY_S,
                sleep_func=handler.sleep_func,
            ),
        )
        self._state_callbacks: list[StateCallback] = []
        self._loss_callbacks: list[LossCallback] = []
        self._client.add_listener(self._on_state)
        self.hosts = hosts
        self.negotiated_session_timeout_s: float | None = None
        """The session timeout ZooKeeper granted the last session (it clamps what is asked
        to 2-20 of its ticks); None before the first."""
        self._negotiated_callbacks: list[Callable[[float], None]] = []
        self._heard_at = -1e18  # monotonic: ZooKeeper's last answer on the session
        self._watching = False  # whether kazoo's steps could be wrapped to time it
        self._losses = self._losses_settled = 0  # (kazoo's thread; the loop's)
        self._watch_connection()

    # life cycle

    async def start(self, timeout_s: float = 18.0, attempt_timeout_s: float = 2.0) -> None:
        deadline = self._loop.time() + timeout_s
        while True:
            event = self._client.start_async()
            done = await self._loop.run_in_executor(None, event.wait, attempt_timeout_s)
            if done and self._client.connected:
                return
            self._client.stop()
            if self._loop.time() >= deadline:
                raise ZkError(
                    f"cannot connect to ZooKeeper at {self.hosts} within {timeout_s:.0f} s; "
                    f"check zookeeper.connect and that ZooKeeper is running"
                )

    async def stop(self) -> None:
        await self._loop.run_in_executor(None, self._stop_blocking)

    def _stop_blocking(self) -> None:
        self._client.stop()
        self._client.close()

    @property
    def connected(self) -> bool:
        """Whether the session is connected now (not suspended, not lost)."""
        return bool(self._client.connected)

    @property
    def session_id(self) -> int | None:
        client_id = self._client.client_id
        return client_id[0] if client_id else None

    @property
    def client_id(self) -> tuple[int, bytes] | None:
        """(session id, password): what fault tests use to expire this session."""
        client_id = self._client.client_id
        return (client_id[0], client_id[1]) if client_id else None

    def on_state_change(self, callback: StateCallback) -> None:
        """Call ``callback(SessionState.X)`` on the loop thread at every session change."""
        self._state_callbacks.append(callback)

    def on_negotiated_timeout(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(seconds)`` on the loop thread with each new session's timeout,
        as ZooKeeper granted it."""
        self._negotiated_callbacks.append(callback)

    def _watch_connection(self) -> None:
        """kazoo's connection steps, wrapped: its connect step, for the timeout ZooKeeper
        granted (kazoo keeps it in a local, and derives its read timeout, two thirds of
        it, from that); its read step, for when ZooKeeper last answered on the session
        (:attr:`session_current`). A kazoo without them (they are not its public API)
        leaves the granted timeout unknown, and :attr:`session_current` falls back on
        kazoo's ``connected``, with a warning: less exact, never stuck."""
        connection: Any = getattr(self._client, "_connection", None)
        connect = getattr(connection, "_connect", None)
        read = getattr(connection, "_read_socket", None)
        if connect is None or read is None:
            structlog.get_logger("headwater.zk").warning(
                "zk.session_watch_unavailable",
                kazoo=getattr(kazoo, "__version__", "?"),
                hint="this kazoo lacks the connection steps Headwater times; whether the "
                "session is current is taken from kazoo's connected state (less exact); "
                "install the kazoo version pyproject.toml names",
            )
            return

        def connecting(*args: Any) -> Any:  # kazoo's thread
            read_timeout_ms, connect_timeout_ms = connect(*args)
            granted = read_timeout_ms * 1.5 / 1000
            self.negotiated_session_timeout_s = granted
            self._heard_at = time.monotonic()
            for callback in list(self._negotiated_callbacks):
                self._loop.call_soon_threadsafe(callback, granted)
            return read_timeout_ms, connect_timeout_ms

        connection._connect = connecting

        def reading(*args: Any) -> Any:  # kazoo's thread: an answer, a ping's, an event
            answer = read(*args)
            self._heard_at = time.monotonic()
            return answer

        connection._read_socket = reading
        self._watching = True

    @property
    def session_current(self) -> bool:
        """Whether this session is surely still alive and every loss before it has been
        acted on: ZooKeeper answered on it less than 0.9 of the granted timeout ago (the
        server expires a session a whole timeout after it last heard from it, never
        sooner), and no loss kazoo reported is still on its way to the loop. Not
        ``connected``: kazoo keeps that True while requests go out unanswered (each
        postpones its ping check), and sets it on a new session before the loop has heard
        of the old one's loss."""
        if self._losses != self._losses_settled or self._client.state == KazooState.LOST:
            return False
        if not self._watching:
            return bool(self._client.connected)
        granted = self.negotiated_session_timeout_s or self.session_timeout_s
        return time.monotonic() - self._heard_at < 0.9 * granted

    def on_session_lost(self, callback: LossCallback) -> None:
        """Call ``callback(session_id)`` on the loop thread when a session is lost, with
        that session's id (None if kazoo no longer knew it). By the time the loop runs it,
        :attr:`session_id` may be a newer session's, or None between connections: a
        caller that must know *which* session ended (the controller's) asks here."""
        self._loss_callbacks.append(callback)

    def _on_state(self, state: str) -> None:  # kazoo's thread
        mapped = {
            KazooState.CONNECTED: SessionState.CONNECTED,
            KazooState.SUSPENDED: SessionState.SUSPENDED,
            KazooState.LOST: SessionState.LOST,
        }[state]
        for callback in list(self._state_callbacks):
            self._loop.call_soon_threadsafe(callback, mapped)
        if mapped == SessionState.LOST:
            self._losses += 1
            # kazoo tells its listeners before it forgets the session's id (_reset)
            lost = getattr(self._client, "_session_id", None)
            for lost_callback in list(self._loss_callbacks):
                self._loop.call_soon_threadsafe(lost_callback, lost)
            self._loop.call_soon_threadsafe(self._loss_acted_on, self._losses)

    def _loss_acted_on(self, losses: int) -> None:
        # after every callback of the loss (state and loss ones, queued before it)
        self._losses_settled = losses

    # operations

    async def create(
        self,
        path: str,
        value: bytes = b"",
        *,
        ephemeral: bool = False,
        sequence: bool = False,
        makepath: bool = False,
    ) -> str:
        return str(
            await self._await(
                self._client.create_async(
                    path, value, ephemeral=ephemeral, sequence=sequence, makepath=makepath
                ),
                path,
            )
        )

    async def create_for_stat(
        self, path: str, value: bytes = b"", *, ephemeral: bool = False, makepath: bool = False
    ) -> ZnodeStat:
        """Create ``path`` and return the new znode's stat, from the create's own answer:
        its czxid with no read after it (one could fail, or see a later znode)."""
        created = await self._await(
            self._client.create_async(
                path, value, ephemeral=ephemeral, makepath=makepath, include_data=True
            ),
            path,
        )
        return cast(ZnodeStat, created[1])

    async def ensure_path(self, path: str) -> None:
        await self._answer(lambda: self._client.ensure_path_async(path), path)

    async def keep_topic_id(self, topic: str, topic_id: bytes) -> None:
        """The copy of a topic's id in its ``/partitions`` znode (see
        :func:`kept_topic_id_from`): created with it, or set (the controller may have made
        the znode first, empty). Raises NoNode if the topic is gone (its znode is never
        made again here: the controller would take it for a new topic)."""
        value = _encode({"topic_id": format_topic_id(topic_id)})
        try:
            await self.create(paths.partitions(topic), value)
        except NodeExists:
            await self.set(paths.partitions(topic), value)

    async def kept_topic_id(self, topic: str) -> bytes | None:
        """The copy :meth:`keep_topic_id` wrote; None without one (a topic of a build before
        it, or made but not yet copied)."""
        try:
            data, _ = await self.get(paths.partitions(topic))
        except NoNode:
            return None
        return kept_topic_id_from(data)

    async def get(self, path: str, watch: WatchCallback | None = None) -> tuple[bytes, ZnodeStat]:
        watcher = self._watcher(watch)
        data, stat = await self._answer(lambda: self._client.get_async(path, watcher), path)
        return data, stat

    async def exists(self, path: str, watch: WatchCallback | None = None) -> ZnodeStat | None:
        watcher = self._watcher(watch)
        result: ZnodeStat | None = await self._answer(
            lambda: self._client.exists_async(path, watcher), path
        )
        return result

    async def get_children(self, path: str, watch: WatchCallback | None = None) -> list[str]:
        watcher = self._watcher(watch)
        children = await self._answer(lambda: self._client.get_children_async(path, watcher), path)
        return list(children)

    async def read_back(self, path: str) -> bytes | None:
        """What ``path`` holds (None: nothing), read after the server this session is on
        has caught up with ZooKeeper's leader (``sync``): how a write whose answer was
        lost with the connection is looked for. In an ensemble, the server a session
        reconnected to may not have that write yet."""
        await self._answer(lambda: self._client.sync_async(path), path)
        try:
            data, _ = await self.get(path)
        except NoNode:
            return None
        return data

    async def set(self, path: str, value: bytes, *, version: int = -1) -> ZnodeStat:
        """Write; with ``version`` >= 0 only if the znode is still at that version (CAS).
        Unconditional, it is sent again if the connection drops while it is out (writing
        the same value twice is writing it once); a compare-and-set is not: its second
        try would lose to its first, and raises :class:`ZkConnectionLoss` instead."""
        send = lambda: self._client.set_async(path, value, version)  # noqa: E731
        stat: ZnodeStat = await (
            self._answer(send, path) if version < 0 else self._await(send(), path)
        )
        return stat

    async def guarded(
        self, guard: str, guard_version: int, path: str, value: bytes, *, version: int = -1
    ) -> int:
        """Write ``path`` (create it when ``version`` is :data:`CREATE`, else set it at
        ``version``) only if ``guard`` is still at ``guard_version``, atomically (one
        ZooKeeper multi): how a controller's writes are fenced by ``/controller_epoch``
        (Kafka's KAFKA-6082). Returns the written znode's version. Raises
        :class:`Fenced` if the guard moved, else the write's refusal or failure (see
        :meth:`write_many`)."""
        (result,) = await self.write_many(
            [GuardedWrite(path, value, version)], guard=(guard, guard_version)
        )
        if isinstance(result, ZkError):
            raise result
        return result

    async def write_many(
        self, writes: Sequence[GuardedWrite], *, guard: tuple[str, int] | None = None
    ) -> list[int | ZkError]:
        """Each of ``writes`` (if ``guard``, a (path, version), is still at that version,
        as :meth:`guarded`), up to :data:`_MULTI_OPS` in one multi, the multis pipelined:
        2,100 writes cost 0.04 s of CPU this way, 0.6 s one request each (kazoo's Python,
        on its thread, holding the GIL the loop needs).

        Per write: the written znode's version, or why not: its refusal
        (:class:`VersionConflict`, :class:`NodeExists`, :class:`NoNode`), :class:`Fenced`
        (the guard moved), or :class:`ZkError` (ZooKeeper failed: it may or may not have
        been made). A multi is all or nothing and ZooKeeper names only its first
        refusal, so after one the rest of that multi go one write each, pipelined: two
        round trips, however many are refused."""
        results: list[int | ZkError] = [0] * len(writes)
        await asyncio.gather(
            *(
                self._commit_chunk(
                    writes, list(range(i, min(i + _MULTI_OPS, len(writes)))), guard, results
                )
                for i in range(0, len(writes), _MULTI_OPS)
            )
        )
        return results

    async def _commit_chunk(
        self,
        writes: Sequence[GuardedWrite],
        todo: list[int],
        guard: tuple[str, int] | None,
        results: list[int | ZkError],
    ) -> None:
        try:
            refused = await self._commit(writes, todo, guard, results)
        except ZkError as exc:  # Fenced, or ZooKeeper failed: the same for all of them
            for i in todo:
                results[i] = exc
            return
        if refused is not None and len(todo) > 1:
            rest = [i for i in todo if i != refused]
            await asyncio.gather(*(self._commit_chunk(writes, [i], guard, results) for i in rest))

    async def _commit(
        self,
        writes: Sequence[GuardedWrite],
        todo: list[int],
        guard: tuple[str, int] | None,
        results: list[int | ZkError],
    ) -> int | None:
        """One multi of ``todo``: their versions into ``results`` and None, or the index
        of the write refused (its refusal in ``results``; nothing was made)."""
        transaction = self._client.transaction()
        ops = []  # (the write it belongs to, its path); the guard's check is -1's
        if guard is not None:
            transaction.check(*guard)
            ops.append((-1, guard[0]))
        for i in todo:
            write = writes[i]
            for parent in write.parents:
                transaction.create(parent, b"")
                ops.append((i, parent))
            if write.version == _CREATE:
                transaction.create(write.path, write.value)
            else:
                transaction.set_data(write.path, write.value, write.version)
            ops.append((i, write.path))
        answers = await self._await(transaction.commit_async(), writes[todo[0]].path)
        for (owner, path), answer in zip(ops, answers, strict=True):
            if isinstance(answer, Exception) and not isinstance(
                answer, RolledBackError | RuntimeInconsistency
            ):
                if owner < 0:
                    raise Fenced(f"{path} moved on: a newer controller rules")
                results[owner] = _refusal(path, answer)
                return owner
        for (owner, path), answer in zip(ops, answers, strict=True):
            if owner >= 0 and path == writes[owner].path:  # not a parent
                results[owner] = 0 if writes[owner].version == _CREATE else int(answer.version)
        return None

    async def write_and_notify(
        self,
        path: str,
        value: bytes,
        *,
        version: int,
        notice_prefix: str,
        notice: bytes,
        delete: bool = False,
    ) -> None:
        """Write ``path`` (create it when ``version`` is CREATE, else set it at ``version``,
        -1 for any; with ``delete``, delete it at ``version``) and create the sequential
        znode ``notice_prefix<seq>``, atomically (one ZooKeeper multi): a config change
        never lacks its change notification, whatever dies in between. Raises
        :class:`VersionConflict`, :class:`NodeExists` or :class:`NoNode` for the write."""
        transaction = self._client.transaction()
        if delete:
            transaction.delete(path, version)
        elif version == _CREATE:
            transaction.create(path, value)
        else:
            transaction.set_data(path, value, version)
        transaction.create(notice_prefix, notice, sequence=True)
        results = await self._await(transaction.commit_async(), path)
        failed = [
            r for r in results if isinstance(r, Exception) and not isinstance(r, RolledBackError)
        ]
        if not failed:
            return
        error = failed[0]
        if isinstance(error, NoNodeError):
            raise NoNode(f"{path} (or {notice_prefix.rsplit('/', 1)[0]}) does not exist")
        raise _refusal(path, error)

    async def write_config(
        self,
        path: str,
        config: dict[str, str],
        *,
        version: int,
        notice: bytes,
        parents: Sequence[str] = (),
    ) -> bool:
        """An entity's config znode (a topic's, a broker's, a user's...) written with its
        change notification (:meth:`write_and_notify`, compare-and-set on ``version``).
        False when it must be read again and retried: a concurrent change won, a parent
        (``parents``, ``/config/changes``) was missing and is made now, or the connection
        dropped with the write out (it may have been made: the read again says, as
        Kafka's ZooKeeper client sends again what a lost connection took)."""
        try:
            await self.write_and_notify(
                path,
                topic_config_json(config),
                version=version,
                notice_prefix=f"{paths.CONFIG_CHANGES}/{paths.CONFIG_CHANGE_PREFIX}",
                notice=notice,
            )
        except (VersionConflict, NodeExists, ZkConnectionLoss):
            # (lost with the connection: read again; if it was made, the read shows it)
            return False
        except NoNode:
            for parent in (*parents, paths.CONFIG_CHANGES):
                await self.ensure_path(parent)
            return False
        return True

    async def delete(self, path: str, *, version: int = -1, recursive: bool = False) -> None:
        if recursive:
            for child in await self.get_children(path):
                await self.delete(f"{path}/{child}", recursive=True)
        await self._await(self._client.delete_async(path, version), path)

    # plumbing

    def _watcher(self, callback: WatchCallback | None) -> Callable[[WatchedEvent], None] | None:
        if callback is None:
            return None
        loop = self._loop

        def fire(event: WatchedEvent) -> None:  # kazoo's thread
            loop.call_soon_threadsafe(callback, event)

        return fire

    async def _answer(self, send: Callable[[], IAsyncResult], path: str) -> Any:
        """The answer to ``send()``, an operation that is safe to repeat (a read, an
        unconditional write, ensure_path), sent again when the connection drops while it
        is out: kazoo fails what is out with ConnectionLoss, and queues what is sent after
        until it has reconnected, on the same session if it still lives. Kafka's
        ZooKeeper client does the same (``retryRequestsUntilConnected``). A connection
        that drops with each of :data:`_SENDS` tries out, or a lost session, still fails.
        """
        for _ in range(_SENDS - 1):
            try:
                return await self._await(send(), path)
            except ZkConnectionLoss:
                self._log.info("zk.resent", path=path, why="the connection dropped with it out")
        return await self._await(send(), path)

    async def _await(self, result: IAsyncResult, path: str) -> Any:
        future: asyncio.Future[Any] = self._loop.create_future()

        def done(res: IAsyncResult) -> None:  # kazoo's thread
            self._loop.call_soon_threadsafe(_settle, future, res)

        result.rawlink(done)
        try:
            return await future
        except NoNodeError:
            raise NoNode(f"{path} does not exist") from None
        except NodeExistsError:
            raise NodeExists(f"{path} already exists") from None
        except BadVersionError:
            raise VersionConflict(f"{path} changed since it was read") from None
        except ConnectionLoss as exc:
            raise ZkConnectionLoss(
                f"the connection to ZooKeeper dropped with an operation on {path} out "
                f"({exc!r}): it may or may not have been made"
            ) from exc
        except _UNAVAILABLE as exc:
            raise ZkUnavailable(f"ZooKeeper unavailable for {path}: {exc!r}") from exc
        except ZookeeperError as exc:
            raise ZkError(f"ZooKeeper refused an operation on {path}: {exc!r}") from exc
        except Exception as exc:
            # kazoo's other connection-level errors (its own timeouts, a closed client)
            if type(exc).__module__.startswith("kazoo"):
                raise ZkUnavailable(
                    f"ZooKeeper unavailable for {path}: {type(exc).__name__}"
                ) from exc
            raise


_UNAVAILABLE = (SessionExpiredError, OperationTimeoutError)

_SENDS = 3
"""How many times at most :meth:`ZkBridge._answer` sends an operation, each after a
connection dropped with the one before out: a drop is a second or more of ZooKeeper not
answering, so a third in a row is an outage the caller should hear of."""


def _refusal(path: str, error: Exception) -> ZkError:
    """A write's refusal in a multi, as ours; anything else is ZooKeeper failing."""
    if isinstance(error, NodeExistsError):
        return NodeExists(f"{path} already exists")
    if isinstance(error, BadVersionError):
        return VersionConflict(f"{path} changed since it was read")
    if isinstance(error, NoNodeError):
        return NoNode(f"{path} (or its parent) does not exist")
    raise ZkError(f"ZooKeeper refused a write of {path}: {error!r}")


def _settle(future: asyncio.Future[Any], result: IAsyncResult) -> None:
    if future.done():
        return
    try:
        future.set_result(result.get_nowait())
    except Exception as exc:  # re-raised by the awaiting side, mapped there
        future.set_exception(exc)
