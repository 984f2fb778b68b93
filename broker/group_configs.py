"""Group configs (Kafka's ConfigResource type GROUP, KIP-848 and KIP-932): per-group
overrides of the share group settings, set with IncrementalAlterConfigs or AlterConfigs
(Kafka's ``kafka-configs --entity-type groups``) and stored in ZooKeeper at
``/config/groups/<group>`` as a topic's are at ``/config/topics/<topic>``.

A broker reads a group's overrides when it first needs them (the group's coordinator at
a member's heartbeat, a partition's leader before it hands out the group's records) and
follows them with a watch from then on, so a change reaches the brokers that use it
within a ZooKeeper round trip. When a session is lost kazoo fires every watch: each is
read again (the values in force stay meanwhile; a read that fails forgets the group,
read again at its next use).

The ones served are the share groups': ``share.auto.offset.reset``,
``share.record.lock.duration.ms``, ``share.session.timeout.ms`` and
``share.heartbeat.interval.ms``. Kafka's others (``consumer.*``, ``streams.*``,
``share.isolation.level``) are refused with why: their value would do nothing here yet.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import NamedTuple

import structlog

from broker.config_changes import ConfigSubject
from broker.zk import CREATE, NoNode, ZkBridge, config_change_json, entity_config_from_json, paths
from protocol.apis import ConfigSource, DescribeConfigsEntry, DescribeConfigsSynonym
from protocol.errors import InvalidConfigError, RequestTimedOutError

__all__ = ["GROUP_CONFIGS", "GroupConfigs", "group_config_path", "group_subject"]

_CAS_ATTEMPTS = 5
_GROUP_CONFIGS = "/config/groups"


def group_config_path(group: str) -> str:
    return f"{_GROUP_CONFIGS}/{_znode_name(group)}"


def _znode_name(group: str) -> str:
    """Kafka's sanitized name; ``.`` and ``..`` (group ids Kafka allows, znode names
    ZooKeeper does not) with their dots encoded as well."""
    name = paths.sanitize(group)
    return name.replace(".", "%2E") if name in (".", "..") else name


class _GroupConfig(NamedTuple):
    broker_setting: str | None
    """The broker setting it overrides (its default), or None: its own default."""
    default: str
    check: Callable[[str], str | None]
    """None if the value is good, else why not."""


def _long_within(low: int, high: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not (value.isascii() and value.isdigit()):  # (int() would take "1_000", "+5")
            return "it must be a whole number of milliseconds"
        number = int(value)
        if not low <= number <= high:
            return f"it must be from {low} to {high}"
        return None

    return check


def _reset(value: str) -> str | None:
    if value in ("latest", "earliest"):
        return None
    if value.startswith("by_duration:"):
        return "by_duration is not offered here yet: latest or earliest"
    return "it must be latest or earliest"


GROUP_CONFIGS: Mapping[str, _GroupConfig] = {
    "share.auto.offset.reset": _GroupConfig(None, "latest", _reset),
    "share.record.lock.duration.ms": _GroupConfig(
        "group.share.record.lock.duration.ms", "30000", _long_within(1000, 3_600_000)
    ),
    # (Kafka bounds these by broker settings, group.share.min/max.*, 45-60 s and 5-15 s
    # by default; not offered here: these bounds only keep a group workable)
    "share.session.timeout.ms": _GroupConfig(
        "group.share.session.timeout.ms", "45000", _long_within(1000, 3_600_000)
    ),
    "share.heartbeat.interval.ms": _GroupConfig(
        "group.share.heartbeat.interval.ms", "5000", _long_within(100, 3_600_000)
    ),
}
"""Kafka's names of the group configs served, with their broker settings."""

_NOT_YET = (
    "consumer.session.timeout.ms",
    "consumer.heartbeat.interval.ms",
    "share.isolation.level",
    "share.delivery.count.limit",
    "share.partition.max.record.locks",
    "share.renew.acknowledge.enable",
)


def group_subject(group: str, broker_value: Callable[[str], str]) -> ConfigSubject:
    """The rules of a group's overrides (``broker_value(setting)``: the broker's value)."""

    def check_name(name: str) -> None:
        if name in GROUP_CONFIGS:
            return
        if name in _NOT_YET or name.startswith("streams."):
            raise InvalidConfigError(
                f"group {group!r}: {name} is a Kafka group config not offered here yet; "
                f"offered: {', '.join(GROUP_CONFIGS)}"
            )
        raise InvalidConfigError(
            f"group {group!r}: unknown group config {name!r}; known: {', '.join(GROUP_CONFIGS)}"
        )

    return ConfigSubject(
        f"group {group!r}", check_name, frozenset(), lambda name: _default(name, broker_value)
    )


def _default(name: str, broker_value: Callable[[str], str]) -> str:
    """A group config's value where the group sets none: the broker setting's, or its own."""
    spec = GROUP_CONFIGS[name]
    return spec.default if spec.broker_setting is None else broker_value(spec.broker_setting)


def check_overrides(
    group: str, overrides: Mapping[str, str], in_force: Callable[[str], str]
) -> None:
    """Each value good, and a heartbeat interval below the session timeout (Kafka's)."""
    for name, value in overrides.items():
        why = GROUP_CONFIGS[name].check(value)
        if why is not None:
            raise InvalidConfigError(f"group {group!r}: {name}={value} is invalid: {why}")
    session = int(overrides.get("share.session.timeout.ms", in_force("share.session.timeout.ms")))
    interval = int(
        overrides.get("share.heartbeat.interval.ms", in_force("share.heartbeat.interval.ms"))
    )
    if interval >= session:
        raise InvalidConfigError(
            f"group {group!r}: share.heartbeat.interval.ms ({interval}) must be less than "
            f"share.session.timeout.ms ({session})"
        )


class GroupConfigs:
    """Each group's overrides as ZooKeeper has them, read on first use and watched."""

    def __init__(self, zk: ZkBridge, broker_value: Callable[[str], str]) -> None:
        self._zk = zk
        self._broker_value = broker_value
        self._values: dict[str, dict[str, str]] = {}
        self._reading: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._log = structlog.get_logger("headwater.group_configs")

    def cached(self, group: str) -> dict[str, str]:
        """The overrides known now ({} before they are read: a read starts then)."""
        found = self._values.get(group)
        if found is None:
            self._start_read(group)
            return {}
        return found

    async def get(self, group: str) -> dict[str, str]:
        """The overrides, read first if they are not known yet."""
        found = self._values.get(group)
        if found is not None:
            return found
        return await asyncio.shield(self._start_read(group))

    def value(self, group: str, name: str) -> str:
        """The value in force: the group's override, else the broker's setting's."""
        found = self.cached(group).get(name)
        return found if found is not None else _default(name, self._broker_value)

    def _start_read(self, group: str) -> asyncio.Future[dict[str, str]]:
        reading = self._reading.get(group)
        if reading is None:
            reading = self._reading[group] = asyncio.ensure_future(self._read(group))
        return reading

    async def _read(self, group: str) -> dict[str, str]:
        """Read, with a watch (kept: the values in force stay until this read ends). A
        read that fails forgets the group (read again at its next use)."""
        path = group_config_path(group)
        try:
            while True:
                try:
                    data, _ = await self._zk.get(path, watch=lambda _event: self._changed(group))
                    overrides = entity_config_from_json(path, data)
                    break
                except NoNode:
                    # watched for its making (exists() watches a znode that is not); made
                    # between the two reads: read it
                    made = await self._zk.exists(path, watch=lambda _event: self._changed(group))
                    if made is None:
                        overrides = {}
                        break
        except BaseException:
            self._values.pop(group, None)
            raise
        finally:
            if self._reading.get(group) is asyncio.current_task():
                del self._reading[group]
        self._values[group] = overrides
        return overrides

    def _changed(self, group: str) -> None:
        """The znode changed (or its watch ended: kazoo fires every watch when a session
        is lost): read again, watched again; a read under way may have read before the
        change, so this one goes after it."""
        reading = self._reading[group] = asyncio.ensure_future(self._read(group))
        reading.add_done_callback(self._reread_done)

    def _reread_done(self, reading: asyncio.Future[dict[str, str]]) -> None:
        if not reading.cancelled() and reading.exception() is not None:
            self._log.warning("group.config_read_failed", error=repr(reading.exception()))

    async def versioned(self, group: str) -> tuple[dict[str, str], int]:
        """The overrides straight from ZooKeeper, with the znode's version (CREATE: none)."""
        path = group_config_path(group)
        try:
            data, stat = await self._zk.get(path)
        except NoNode:
            return {}, CREATE
        return entity_config_from_json(path, data), int(stat.version)

    async def change(
        self,
        group: str,
        plan: Callable[[dict[str, str]], dict[str, str]],
        validate_only: bool,
    ) -> dict[str, str]:
        """Read, change, check, then write (compare-and-set on the version read)."""
        in_force = group_subject(group, self._broker_value).in_force
        for attempt in range(_CAS_ATTEMPTS):
            if attempt:  # lost a race: a jittered pause, so racers do not collide again
                await asyncio.sleep(random.uniform(0, 0.05 * attempt))
            current, version = await self.versioned(group)
            wanted = plan(current)
            check_overrides(group, wanted, in_force)
            if validate_only or wanted == current:
                return wanted
            if await self._zk.write_config(
                group_config_path(group),
                wanted,
                version=version,
                notice=config_change_json(_znode_name(group), "groups"),
                parents=(_GROUP_CONFIGS,),
            ):
                if group in self._values:  # (followed here: the watch confirms it)
                    self._values[group] = wanted
                self._log.info("group.config_changed", group=group, overrides=wanted)
                return wanted
        raise RequestTimedOutError(
            f"group {group!r}: its configs kept changing under this request; try again"
        )

    async def describe(self, group: str, synonyms: bool) -> list[DescribeConfigsEntry]:
        overrides, _ = await self.versioned(group)
        entries = []
        for name, spec in GROUP_CONFIGS.items():
            chain: list[DescribeConfigsSynonym] = []
            if spec.broker_setting is None:
                value, source = spec.default, ConfigSource.DEFAULT_CONFIG
            else:
                value = self._broker_value(spec.broker_setting)
                source = ConfigSource.STATIC_BROKER_CONFIG
                chain.append(
                    DescribeConfigsSynonym(
                        name=spec.broker_setting, value=value, source=source.value
                    )
                )
            if name in overrides:
                value, source = overrides[name], ConfigSource.GROUP_CONFIG
                chain.insert(0, DescribeConfigsSynonym(name=name, value=value, source=source.value))
            entries.append(
                DescribeConfigsEntry(
                    name=name,
                    value=value,
                    config_source=source.value,
                    synonyms=chain if synonyms else [],
                    config_type="string" if name == "share.auto.offset.reset" else "int",
                )
            )
        return entries
