"""Topic configs applied live, on every broker, without a restart (Kafka's ZooKeeper-mode
dynamic config manager: ``ZkConfigManager`` and its ``TopicConfigHandler``).

A topic's overrides live in ``/config/topics/<topic>``. Whoever changes them (AlterConfigs
or IncrementalAlterConfigs, on any broker) writes that znode and, in the same ZooKeeper
multi, a sequential notification ``/config/changes/config_change_<seq>`` naming the topic
(Kafka's payload: ``{"version":2,"entity_path":"topics/<topic>"}``). Every broker watches
``/config/changes``; one task walks the notifications past the last one it handled,
re-reads each named topic's znode, and hands the result (the topic's overrides over the
broker's defaults, a :class:`LogConfig`) to every log of that topic here, and to the
listeners (the controller, for ``unclean.leader.election.enable``). Partitions read
``log.config`` on each use (``min.insync.replicas`` on produce, retention on each pass).

Why no change is missed or undone:

- the watch is set before any config is read, so a change that lands after a read always
  yields a notification handled after it;
- handlers re-read the znode instead of trusting the notification, and each config kept
  here carries its znode's ``mzxid`` (ZooKeeper's global write order): an older read
  never replaces a newer one, whichever finishes first;
- one task handles the notifications, in sequence order, and remembers the last one only
  once every topic it named has been applied (a failed pass is redone).

A lost ZooKeeper session loses the watch: on every reconnection the notifications are
listed again and every topic known here is re-read. Notifications older than 15 minutes
are deleted, as Kafka does (any broker may; they are only a wake-up call).

A topic whose config cannot be read (ZooKeeper unreachable when a partition of it is
opened, or at start) is *unknown*: its logs run with the broker's defaults for now, but
those may be wrong in the ways that lose data (``__consumer_offsets`` or any compacted
topic would get ``cleanup.policy=delete`` and the default retention), so :meth:`ready` says
False and retention and the cleaner leave its logs alone. Kafka in ZooKeeper mode blocks
until the config is read; here one task re-reads the unknown topics with a backoff (at
once on a reconnection) until each read succeeds, then applies it to every log of the topic.

Concurrency: event loop thread only; ZooKeeper calls go through :class:`ZkBridge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from broker.log import LogConfig
from broker.log.manager import LogManager
from broker.zk import (
    CorruptZnode,
    NoNode,
    SessionState,
    ZkBridge,
    ZkError,
    config_change_from_json,
    paths,
    topic_config_from_json,
)

__all__ = ["TopicConfigs"]

PURGE_AFTER_MS = 15 * 60 * 1000
"""Kafka's ``changeExpirationMs``: how long a change notification is kept."""
_RETRY_S = 0.5
_RETRY_MAX_S = 30.0  # the backoff of the re-reads of unknown topics stops growing here
_LOAD_ATTEMPTS = 3

Listener = Callable[[str, LogConfig], None]


@dataclass(frozen=True, slots=True)
class _Known:
    zxid: int  # mzxid of /config/topics/<topic> when read; 0: no such znode
    overrides: dict[str, str]
    config: LogConfig


def _sequence(name: str) -> int:
    """The sequence number of ``config_change_0000000042``; -1 for a stranger."""
    digits = name.removeprefix(paths.CONFIG_CHANGE_PREFIX)
    return int(digits) if digits.isdigit() else -1


class TopicConfigs:
    """The topic configs this broker applies. ``await start()``, then ``await stop()``."""

    def __init__(
        self, zk: ZkBridge, defaults: LogConfig, logs: LogManager, *, broker_id: int
    ) -> None:
        self._zk = zk
        self.defaults = defaults
        self._logs = logs
        self._known: dict[str, _Known] = {}
        self._last_sequence = -1
        self._wake = asyncio.Event()
        self._resync = False
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._unknown: set[str] = set()  # topics whose config could not be read yet
        self._invalid: dict[str, int] = {}  # topic -> zxid of overrides describe could not apply
        self._reread: asyncio.Task[None] | None = None  # re-reads them until they are
        self._reconnected = asyncio.Event()
        self._log = structlog.get_logger("headwater.config").bind(broker_id=broker_id)

    async def start(self) -> None:
        """Watch for changes, then give the logs already on disk their topic's config (the
        log manager opened them with the broker's defaults)."""
        await self._zk.ensure_path(paths.CONFIG_CHANGES)
        names = await self._zk.get_children(paths.CONFIG_CHANGES, watch=self._on_watch)
        # what those notifications announced is in the znodes, read fresh from here on
        self._last_sequence = max((_sequence(n) for n in names), default=-1)
        for topic in sorted({tp.topic for tp, _ in self._logs}):
            try:
                config = self._keep(topic, *await self._read(topic))
            except (ZkError, ValueError) as exc:  # the logs keep the defaults: not for long
                self._unreadable(topic, exc)
            else:
                self._apply(topic, config)
        self._zk.on_state_change(self._on_session)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in (self._task, self._reread):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._reread = None

    def ready(self, topic: str) -> bool:
        """Whether the topic's config was read (else its logs have the broker's defaults,
        which retention and the cleaner must not act on)."""
        return topic not in self._unknown

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(topic, config)`` after a change was applied here."""
        self._listeners.append(listener)

    # --- reads --------------------------------------------------------------------------

    async def load(self, topic: str) -> LogConfig:
        """The topic's config, read now (how a partition gets its config when it is opened).

        Never older than what a notification already applied. A partition must be hosted
        even when the overrides cannot be read (ZooKeeper unreachable, a hand-edited
        znode): after a few tries, the last known config; with none, the defaults, and the
        topic is unknown until a re-read succeeds (see the module docstring)."""
        error: Exception | None = None
        for attempt in range(_LOAD_ATTEMPTS):
            try:
                zxid, overrides = await self._read(topic)
                known = self._known.get(topic)
                config = self._keep(topic, zxid, overrides)
            except CorruptZnode as exc:
                error = exc
                break
            except ZkError as exc:
                error = exc
                await asyncio.sleep(0.2 * (attempt + 1))
            except ValueError as exc:  # overrides that do not validate: not worth a retry
                error = exc
                break
            else:
                # the topic's other logs wait for it (unknown), or run an older one (read
                # before a notification not handled yet: a describe would vouch for them).
                # Only then: a pass over them per partition opened is quadratic in them
                if topic in self._unknown or zxid > (0 if known is None else known.zxid):
                    self._apply(topic, config)
                return config
        known = self._known.get(topic)
        if known is not None:
            self._log.warning("topic.config_unreadable", topic=topic, error=str(error))
            return known.config
        self._unreadable(topic, error)
        return self.defaults

    async def describe(self, topic: str) -> dict[str, str]:
        """The topic's overrides for DescribeConfigs: ZooKeeper's, read now, and applied
        to this broker's logs of the topic first if they are newer than what it holds (or
        the topic's config is unknown); what it holds if it cannot apply them (settings
        it does not know, a newer version's) or the read is older. So, for a broker with
        a log of the topic, the answer is what its logs are run with.

        A change's notification can still be on its way when the admin client asks: it
        waits after a change until every broker describes the topic as the broker that
        made it does (:meth:`client.Admin.alter_configs`). Kafka's brokers describe
        ZooKeeper's copy and apply the notification when it comes. Applies are ordered by
        the znode's ``mzxid``, so a read here never undoes a newer one. A broker with no
        log of the topic answers ZooKeeper's copy and keeps nothing (a tool describing
        every topic does not make every broker track every topic)."""
        zxid, overrides = await self._read(topic)
        if topic not in self._unknown and not self._logs.logs_of(topic):
            return overrides
        known = self._known.get(topic)
        held = 0 if known is None else known.zxid
        if zxid < held:
            return known.overrides if known is not None else {}
        behind = known is not None and any(
            log.config != known.config for log in self._logs.logs_of(topic)
        )
        if zxid > held or topic in self._unknown or behind:
            try:
                config = self._keep(topic, zxid, overrides)
            except ValueError as exc:  # as a notification's read: what we have stays
                if self._invalid.get(topic) != zxid:  # (once, not on every describe)
                    self._invalid[topic] = zxid
                    self._log.warning("topic.config_invalid", topic=topic, error=str(exc))
                return {} if known is None else known.overrides
            self._apply(topic, config)
        return overrides

    def _unreadable(self, topic: str, error: Exception | None) -> None:
        """The topic's config is unknown: its logs are left alone until a re-read succeeds."""
        self._log.warning(
            "topic.config_unknown",
            topic=topic,
            error=str(error),
            consequence="its logs use the broker defaults, without retention or cleaning, "
            "until its config is read",
        )
        self._unknown.add(topic)
        if self._reread is None or self._reread.done():
            self._reread = asyncio.get_running_loop().create_task(self._reread_unknown())

    async def _reread_unknown(self) -> None:
        """Re-read the unknown topics until each one is read, backing off while ZooKeeper
        fails (a reconnection cuts the wait short); apply each one as it is read."""
        delay_s = _RETRY_S
        while self._unknown:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconnected.wait(), delay_s)
            if self._reconnected.is_set():
                self._reconnected.clear()
                delay_s = _RETRY_S
            failed = False
            for topic in sorted(self._unknown):
                try:
                    config = self._keep(topic, *await self._read(topic))
                except (ZkError, ValueError) as exc:
                    failed = True
                    self._log.warning(
                        "topic.config_reread_failed", topic=topic, error=str(exc), retry_s=delay_s
                    )
                    if isinstance(exc, (CorruptZnode, ValueError)):
                        continue  # this znode is bad: the others may be fine
                    break  # ZooKeeper is: all of them wait
                if topic in self._unknown:  # a notification may have applied it meanwhile
                    self._apply(topic, config)
            delay_s = min(delay_s * 2, _RETRY_MAX_S) if failed else _RETRY_S

    async def _read(self, topic: str) -> tuple[int, dict[str, str]]:
        try:
            data, stat = await self._zk.get(paths.topic_config(topic))
        except NoNode:
            return 0, {}
        return int(stat.mzxid), topic_config_from_json(topic, data)

    def _keep(self, topic: str, zxid: int, overrides: dict[str, str]) -> LogConfig:
        """Remember what was read, unless something newer was remembered meanwhile."""
        if zxid == 0:  # no znode: the topic is gone (or never had overrides)
            self._known.pop(topic, None)
            return self.defaults
        known = self._known.get(topic)
        if known is not None and known.zxid > zxid:
            return known.config
        config = self.defaults.with_properties(overrides)
        self._known[topic] = _Known(zxid, overrides, config)
        return config

    def set_defaults(self, defaults: LogConfig) -> None:
        """The broker's defaults changed (a dynamic broker config): every topic here that
        does not override a changed config takes the new value at once."""
        if defaults == self.defaults:
            return
        self.defaults = defaults
        for topic, known in list(self._known.items()):
            try:
                config = defaults.with_properties(known.overrides)
            except ValueError as exc:  # its overrides and the new defaults disagree
                self._log.warning("topic.config_invalid", topic=topic, error=str(exc))
                continue
            self._known[topic] = _Known(known.zxid, known.overrides, config)
        for topic in sorted({tp.topic for tp, _ in self._logs}):
            read = self._known.get(topic)
            config = defaults if read is None else read.config
            logs = self._logs.logs_of(topic)
            if all(log.config == config for log in logs):
                continue  # it overrides every setting that changed: nothing to tell
            if topic not in self._unknown:
                self._apply(topic, config)
                continue
            for log in logs:  # still left alone until it is read
                log.config = config

    # --- changes ------------------------------------------------------------------------

    def _on_watch(self, _event: Any) -> None:
        self._wake.set()

    def _on_session(self, state: str) -> None:
        if state == SessionState.CONNECTED:  # the watch may be gone with an old session
            self._resync = True
            self._wake.set()
            self._reconnected.set()  # and the unknown topics are worth a read now

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._handle_changes()
            except ZkError as exc:  # ZooKeeper unreachable: the same pass again, later
                self._log.warning("topic.config_changes_retry", error=str(exc))
                await asyncio.sleep(_RETRY_S)
                self._wake.set()
            except Exception:  # our bug: logged loudly; the next change still runs
                self._log.exception("topic.config_changes_failed")

    async def _handle_changes(self) -> None:
        resync, self._resync = self._resync, False
        names = await self._zk.get_children(paths.CONFIG_CHANGES, watch=self._on_watch)
        names.sort(key=_sequence)
        fresh = [n for n in names if _sequence(n) > self._last_sequence]
        topics = [t for n in fresh if (t := await self._topic_of(n)) is not None]
        if resync:
            topics += [*self._known, *self._unknown, *(tp.topic for tp, _ in self._logs)]
        try:
            for topic in dict.fromkeys(topics):  # each once, in notification order
                await self._refresh(topic)
        except ZkError:
            self._resync |= resync
            raise
        if fresh:
            self._last_sequence = _sequence(fresh[-1])
        await self._purge(names)

    async def _topic_of(self, name: str) -> str | None:
        path = f"{paths.CONFIG_CHANGES}/{name}"
        try:
            data, _ = await self._zk.get(path)
            kind, entity = config_change_from_json(path, data)
        except NoNode:  # purged already: the re-read of a resync covers it
            return None
        except CorruptZnode as exc:
            self._log.warning("topic.config_change_unreadable", path=path, error=str(exc))
            return None
        return entity if kind == "topics" else None  # other entities have no config here

    async def _refresh(self, topic: str) -> None:
        try:
            config = self._keep(topic, *await self._read(topic))
        except (ValueError, CorruptZnode) as exc:  # a hand-edited znode: keep what we have
            self._log.warning("topic.config_invalid", topic=topic, error=str(exc))
            return
        self._apply(topic, config)

    def _apply(self, topic: str, config: LogConfig) -> None:
        """Give every log of the topic here ``config``, read from its znode just now (no
        await since): from here on the topic's config is known."""
        logs = [log for log in self._logs.logs_of(topic) if log.config != config]
        for log in logs:
            log.config = config
        self._invalid.pop(topic, None)
        if topic in self._unknown:
            self._unknown.discard(topic)
            self._log.info("topic.config_known", topic=topic, logs=len(logs))
        if logs:
            defaults = self.defaults.properties()
            changed = {k: v for k, v in config.properties().items() if v != defaults[k]}
            self._log.info("topic.config_applied", topic=topic, logs=len(logs), overrides=changed)
        for listener in list(self._listeners):
            try:
                listener(topic, config)
            except Exception:
                self._log.exception("topic.config_listener_failed", topic=topic)

    async def _purge(self, names: list[str]) -> None:
        """Delete notifications older than :data:`PURGE_AFTER_MS` (oldest first; the first
        young one ends the walk, so a pass costs one read when there is nothing to do)."""
        now_ms = time.time_ns() // 1_000_000
        for name in names:
            path = f"{paths.CONFIG_CHANGES}/{name}"
            stat = await self._zk.exists(path)
            if stat is None:
                continue
            if now_ms - int(stat.ctime) < PURGE_AFTER_MS:
                return
            with contextlib.suppress(NoNode):  # every broker purges: one of us wins
                await self._zk.delete(path)
