"""Broker settings changed on a running cluster (Kafka's KIP-226 dynamic broker configs,
ZooKeeper mode): per broker, or as every broker's default.

They live in Kafka's znodes, ``/config/brokers/<id>`` and ``/config/brokers/<default>``,
as ``{"version":1,"config":{"log.retention.ms":"3600000"}}``. AlterConfigs or
IncrementalAlterConfigs on a BROKER resource (its name a broker id, or empty for the
default) writes the znode with a version check and, in the same multi, a change
notification (``brokers/1``, ``brokers/<default>``). A broker's own settings can only be
changed through that broker (as Kafka: its admin client sends them there); the default,
through any.

Every broker keeps the two znodes that concern it read: before it opens its logs, then
again on each change notification and each new ZooKeeper session (:class:`ZkMirror`).
What it reads goes into :class:`BrokerConfig` as two layers over its config file, a
broker's own value first (:meth:`BrokerConfig.layers`), and the listeners hear which
settings changed: a topic without an override of its own follows a new default at once.
A value that does not validate (a hand-edited znode, a newer version's setting) is logged
and left out; the rest apply.

Which settings can change: :data:`broker.config.DYNAMIC_BROKER_CONFIGS`.

Concurrency: event loop thread only; ZooKeeper through :class:`ZkBridge`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from broker import tls
from broker.authorizer import principal
from broker.config import (
    DEFAULT,
    DYNAMIC_BROKER,
    DYNAMIC_DEFAULT,
    PER_BROKER_CONFIGS,
    SETTINGS,
    STATIC,
    TOPIC_CONFIG_SYNONYMS,
    BrokerConfig,
    ConfigError,
    check_listener_settings,
    config_text,
    is_dynamic,
    is_secret,
    parse_dynamic,
    setting_for,
)
from broker.config_changes import LIST_TOPIC_CONFIGS, ConfigSubject
from broker.mirror import ZkMirror
from broker.zk import (
    CREATE,
    CorruptZnode,
    NoNode,
    ZkBridge,
    config_change_json,
    entity_config_from_json,
    paths,
)
from protocol.apis import ConfigSource, DescribeConfigsEntry, DescribeConfigsSynonym
from protocol.errors import InvalidConfigError, InvalidRequestError, RequestTimedOutError

__all__ = ["DEFAULT_ENTITY", "BrokerConfigs"]

DEFAULT_ENTITY = "<default>"
"""Kafka's name of every broker's default, in ZooKeeper and in change notifications."""

_CAS_ATTEMPTS = 20
_CAS_BACKOFF_S = 0.005
_SOURCES = {
    DYNAMIC_BROKER: ConfigSource.DYNAMIC_BROKER_CONFIG,
    DYNAMIC_DEFAULT: ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
    STATIC: ConfigSource.STATIC_BROKER_CONFIG,
    DEFAULT: ConfigSource.DEFAULT_CONFIG,
}
_LISTS = frozenset(
    TOPIC_CONFIG_SYNONYMS[n] for n in LIST_TOPIC_CONFIGS if n in TOPIC_CONFIG_SYNONYMS
)
_TYPES = {bool: "boolean", int: "long", float: "double", str: "string", list: "list"}
_SETTING_TYPES = {s.name: "list" if s.name in _LISTS else _TYPES[s.type] for s in SETTINGS}
_DOCS = {s.name: s.doc for s in SETTINGS}


def _type_of(name: str) -> str:
    found = _SETTING_TYPES.get(name)
    if found is None:  # a listener's own limit: its base setting's type
        setting = setting_for(name)
        found = "string" if setting is None else _TYPES[setting.type]
    return found


def _doc_of(name: str) -> str | None:
    setting = setting_for(name)
    return None if setting is None else setting.doc


_FILES = frozenset({"ssl.keystore.location", "ssl.truststore.location"})
"""Settings naming a file: set to the same path again, the file is loaded again (Kafka's
way to rotate a certificate in place)."""

Listener = Callable[[set[str]], None]


def _where(entity: str) -> str:
    return "every broker's default" if entity == DEFAULT_ENTITY else f"broker {entity}"


class BrokerConfigs(ZkMirror):
    """This broker's dynamic settings, kept current; ``await start()`` before the logs are
    opened, ``await stop()``."""

    def __init__(self, zk: ZkBridge | None, config: BrokerConfig) -> None:
        super().__init__(zk, "broker_config", config.broker_id)
        self._config = config
        self._listeners: list[Listener] = []
        self.tls: tls.TlsContexts | None = None
        """This broker's TLS contexts in use: what a change of its files is checked
        against (Kafka's inter-broker check)."""

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(names)`` after the settings ``names`` took new values here."""
        self._listeners.append(listener)

    # --- the copy -------------------------------------------------------------------------

    async def reload(self) -> None:
        """Both znodes read (the change watch set first) and put in force."""
        assert self._zk is not None
        async with self._reading:
            await self._zk.ensure_path(paths.CONFIG_CHANGES)
            await self._zk.get_children(paths.CONFIG_CHANGES, watch=self.on_watch)
            default = self._parsed(DEFAULT_ENTITY, (await self._read(DEFAULT_ENTITY))[0])
            own = str(self._config.broker_id)
            self._put(default, self._parsed(own, (await self._read(own))[0]))

    async def _read(self, entity: str) -> tuple[dict[str, str], int]:
        """The entity's overrides and their znode's version (CREATE: there is none)."""
        assert self._zk is not None
        path = paths.broker_config(entity)
        try:
            data, stat = await self._zk.get(path)
        except NoNode:
            return {}, CREATE
        try:
            return entity_config_from_json(path, data), int(stat.version)
        except CorruptZnode as exc:  # hand-edited: this broker keeps its file's settings
            self._log.warning("broker_config.unreadable", path=path, error=str(exc))
            return {}, int(stat.version)

    def _parsed(self, entity: str, raw: dict[str, str]) -> dict[str, Any]:
        values = {}
        for name, text in raw.items():
            try:
                values[name] = parse_dynamic(name, text, _where(entity))
            except ConfigError as exc:
                self._log.warning("broker_config.ignored", error=str(exc))
        return values

    def _put(self, default: dict[str, Any], own: dict[str, Any]) -> None:
        before = (self._config.dynamic_default, self._config.dynamic_broker)
        changed = self._config.set_dynamic(default, own)
        try:
            self._config.log_config()
        except ValueError as exc:  # valid one by one, not together: the last good ones stay
            self._config.set_dynamic(*before)
            self._log.error("broker_config.inconsistent", error=str(exc), kept="the previous")
            return
        if not changed:
            return
        shown = {n: "(secret)" if is_secret(n) else config_text(self._config[n]) for n in changed}
        self._log.info("broker_config.applied", changed=shown)
        self._tell(changed)

    def _tell(self, changed: set[str]) -> None:
        for listener in list(self._listeners):
            try:
                listener(changed)
            except Exception:
                self._log.exception("broker_config.listener_failed")

    # --- AlterConfigs, IncrementalAlterConfigs ----------------------------------------------

    async def change(
        self,
        resource_name: str,
        change: Callable[[ConfigSubject, dict[str, str]], dict[str, str]],
        validate_only: bool,
    ) -> None:
        """Read, change, validate, then write with the notification (compare-and-set on the
        version read: a concurrent change makes us start over from what it wrote)."""
        assert self._zk is not None
        entity = self._entity(resource_name)
        subject = self._subject(entity)
        tried = False  # a write went out (its answer may have been lost with the connection)
        for attempt in range(_CAS_ATTEMPTS):
            if attempt:  # lost a race: a jittered pause, so racers do not collide again
                await asyncio.sleep(random.uniform(0, _CAS_BACKOFF_S * attempt))
            current, version = await self._read(entity)
            wanted = change(subject, current)
            self._validate(entity, wanted, current)
            await self._check_files(entity, wanted, current)
            if validate_only:
                return
            if wanted == current:
                if tried:  # made (ours, or a racer's the same): in force here, then answered
                    break
                if _FILES & wanted.keys():  # the same path, a new file: load it again
                    self._tell(set(_FILES & wanted.keys()))
                return
            tried = True
            written = await self._zk.write_config(
                paths.broker_config(entity),
                wanted,
                version=version,
                notice=config_change_json(entity, "brokers"),
                parents=(paths.BROKER_CONFIGS,),
            )
            if written:
                break
        else:
            raise RequestTimedOutError(
                f"{_where(entity)}: its configs kept changing under this request; try again"
            )
        self._log.info("broker_config.changed", entity=entity, overrides=wanted, by=principal())
        await self.catch_up()  # in force here before the answer goes

    async def _check_files(
        self, entity: str, wanted: dict[str, str], current: dict[str, str]
    ) -> None:
        """A keystore or truststore this change names (or takes off) must load here before
        it is written, and, for this broker's own, keep the inter-broker listener working
        (Kafka checks both the same way): a bad one is refused, the old one stays."""
        # whenever the broker has one: named again unchanged, the file at that path may be
        # new (Kafka's way to rotate in place), and which settings a change names is not
        # known here
        if entity == DEFAULT_ENTITY or not any(n in wanted or n in current for n in _FILES):
            return
        trial = self._config.with_dynamic(
            self._config.dynamic_default,
            {n: parse_dynamic(n, v, _where(entity)) for n, v in wanted.items() if n in _FILES},
        )
        live = self.tls if entity == str(self._config.broker_id) else None

        def check() -> None:
            tls.check_files(trial)
            if live is not None:
                tls.check_identity(live, trial)
                tls.check_change(live, trial)

        try:
            await asyncio.to_thread(check)
        except ConfigError as exc:
            raise InvalidConfigError(f"{_where(entity)}: {exc}") from None

    def _entity(self, resource_name: str) -> str:
        name = resource_name.strip()
        if not name:
            return DEFAULT_ENTITY
        if not name.isdigit():
            raise InvalidRequestError(
                f"broker config resource {resource_name!r}: give a broker id, or an empty name "
                "for every broker's default"
            )
        if int(name) != self._config.broker_id:
            raise InvalidRequestError(
                f"this is broker {self._config.broker_id}; send broker {int(name)}'s config "
                f"changes to broker {int(name)} (the default, with an empty name, to any)"
            )
        return str(int(name))

    def _subject(self, entity: str) -> ConfigSubject:
        where = _where(entity)

        def check_name(name: str) -> None:
            if not is_dynamic(name):
                try:
                    parse_dynamic(name, "", where)
                except ConfigError as exc:
                    raise InvalidConfigError(str(exc)) from None

        def in_force(name: str) -> str:
            """What APPEND and SUBTRACT start from with no value of the entity's own: for a
            broker, its value without one (the default's, its file's, the built-in); for
            the default, the built-in one (a broker's file is its own, as Kafka's)."""
            layers = self._config.layers(name)
            if entity == DEFAULT_ENTITY:
                return config_text(layers[-1][1])
            return config_text(next(v for s, v in layers if s != DYNAMIC_BROKER))

        return ConfigSubject(where, check_name, _LISTS, in_force)

    def _validate(self, entity: str, wanted: dict[str, str], current: dict[str, str]) -> None:
        """Each value this change sets as the config file's would be, then all of them
        together with this broker's other layer (the default's values against this
        broker's own). A bad value already there (written by hand) is not this change's
        fault: it stays ignored, and can be deleted."""
        if entity == DEFAULT_ENTITY and (mine := PER_BROKER_CONFIGS & wanted.keys()):
            raise InvalidConfigError(
                f"{', '.join(sorted(mine))} can only be set for one broker (a broker id as "
                "the resource name), not as every broker's default: each broker has its "
                "own certificate"
            )
        parsed = {}
        for name, value in wanted.items():
            try:
                parsed[name] = parse_dynamic(name, value, _where(entity))
            except ConfigError as exc:
                if current.get(name) != value:
                    raise InvalidConfigError(str(exc)) from None
        if entity == DEFAULT_ENTITY:
            layers = (parsed, self._config.dynamic_broker)
        else:
            layers = (self._config.dynamic_default, parsed)
            # a broker's own listener settings this change sets name its listeners (every
            # broker's default may name a listener some brokers have and others not, as
            # Kafka's; one already there for a listener since gone is not this change's)
            try:
                check_listener_settings(
                    [n for n in parsed if current.get(n) != wanted[n]], self._config.listener_names
                )
            except ConfigError as exc:
                raise InvalidConfigError(f"{_where(entity)}: {exc}") from None
        try:
            self._config.with_dynamic(*layers).log_config()
        except ValueError as exc:
            raise InvalidConfigError(f"{_where(entity)}: {exc}") from None

    # --- DescribeConfigs ----------------------------------------------------------------

    def describe(self, resource_name: str, synonyms: bool) -> list[DescribeConfigsEntry]:
        """This broker's settings (an empty name: the ones every broker's default sets,
        as Kafka)."""
        name = resource_name.strip()
        if not name:
            return [
                self._entry(n, synonyms, only=DYNAMIC_DEFAULT)
                for n in sorted(self._config.dynamic_default)
            ]
        if not name.isdigit() or int(name) != self._config.broker_id:
            raise InvalidRequestError(
                f"this is broker {self._config.broker_id}; ask broker {resource_name} for "
                "its own configs"
            )
        return [self._entry(n, synonyms) for n, _ in self._config.items()]

    def entry(self, name: str) -> DescribeConfigsEntry:
        """One setting as this broker has it in force."""
        return self._entry(name, synonyms=False)

    def synonyms(self, name: str) -> list[DescribeConfigsSynonym]:
        """Every value the setting has here, the one in force first."""
        return [
            DescribeConfigsSynonym(
                name=under,
                value=None if is_secret(name) else config_text(value),
                source=_SOURCES[source].value,
            )
            for under, source, value in self._config.synonyms(name)
            if value is not None
        ]

    def _entry(self, name: str, synonyms: bool, only: str | None = None) -> DescribeConfigsEntry:
        layers = self._config.layers(name)
        if only is not None:
            layers = [(s, v) for s, v in layers if s == only]
        source, value = layers[0]
        secret = is_secret(name)
        return DescribeConfigsEntry(
            name=name,
            value=None if secret else config_text(value),  # a secret is only said to be set
            read_only=not is_dynamic(name),
            config_source=_SOURCES[source].value,
            is_sensitive=secret,
            synonyms=self.synonyms(name) if synonyms and only is None else [],
            config_type=_type_of(name),
            documentation=_doc_of(name),
        )
