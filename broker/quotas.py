"""Client quotas (Kafka's ClientQuotaManager, ZooKeeper mode): byte rates per user and
client id, and the partitions they may create or delete per second
(``controller_mutation_rate``, KIP-599), measured here and enforced by throttling.

The quotas live in Kafka's znodes, ``/config/users/<user>``,
``/config/users/<user>/clients/<client-id>`` and ``/config/clients/<client-id>`` (names
URL-encoded, ``<default>`` for the default entity), as ``{"version":1,"config":
{"producer_byte_rate":"1048576"}}``, next to a user's SCRAM credentials; an address's
``connection_creation_rate`` (KIP-612) in ``/config/ips/<ip>``, which
:class:`broker.connection_quotas.ConnectionQuotas` asks through ``connection_rate``.
AlterClientQuotas (any broker) rewrites an entity's znode with a version check and a config change
notification (``users/alice/clients/app``) in the same multi. Every broker keeps a copy:
read whole at start, and again on each change notification and each new ZooKeeper
session.

Each produce and each consumer fetch records its bytes on the rate of the entity whose
quota applies (:func:`protocol.quotas.resolve`, Kafka's precedence; clients that map to
one entity share it). Over the bound, the response carries ``throttle_time_ms`` and the
server stops reading that connection for as long (Kafka's KIP-219: the answer goes out
at once, the channel is muted). A connection's user is its principal's name (ANONYMOUS
without a login) and its client id the one its ApiVersions named. With no quota
configured the hot path pays one dict lookup per request.

Concurrency: event loop thread only; ZooKeeper through :class:`ZkBridge`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from broker.authorizer import principal
from broker.config import BrokerConfig
from broker.mirror import ZkMirror
from broker.server import PEER_CLIENT_ID
from broker.zk import (
    CREATE,
    CorruptZnode,
    NoNode,
    ZkBridge,
    ZkError,
    config_change_json,
    entity_config_from_json,
    paths,
)
from protocol.apis import (
    AlterClientQuotasRequest,
    AlterClientQuotasResponse,
    AlterClientQuotasResult,
    DescribeClientQuotasEntry,
    DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
    QuotaEntityPart,
    QuotaValue,
)
from protocol.errors import ApiError, InvalidRequestError, KafkaStorageError
from protocol.quotas import (
    CLIENT,
    IP,
    IP_QUOTA_KEYS,
    QUOTA_KEYS,
    USER,
    Entity,
    Rate,
    TokenBucket,
    resolve,
    throttle_ms,
)

__all__ = ["QuotaManager"]

_DEFAULT = "<default>"
_MUTATIONS = "controller_mutation_rate"
_REQUESTS = "request_percentage"
_SWEEP_MS = 60_000


def _unmetered(_nbytes: int) -> int:
    return 0


_CLIENTS = "/config/clients"
_IPS = "/config/ips"
_MATCH_EXACT, _MATCH_DEFAULT, _MATCH_ANY = 0, 1, 2


def _name(znode: str) -> str | None:
    return None if znode == _DEFAULT else unquote(znode)


def _znode(name: str | None) -> str:
    return _DEFAULT if name is None else paths.sanitize(name)


def _path(entity: Entity) -> str:
    parts = dict(entity)
    if IP in parts:
        return f"{_IPS}/{_znode(parts[IP])}"
    if USER in parts:
        path = f"{paths.USER_CONFIGS}/{_znode(parts[USER])}"
        return f"{path}/clients/{_znode(parts[CLIENT])}" if CLIENT in parts else path
    return f"{_CLIENTS}/{_znode(parts[CLIENT])}"


def _notice(entity: Entity) -> bytes:
    kind, _, rest = _path(entity).removeprefix("/config/").partition("/")
    return config_change_json(rest, kind)


def _entity(parts: list[QuotaEntityPart]) -> Entity:
    by_type = {p.entity_type: p.entity_name for p in parts}
    if by_type.keys() == {IP} and len(parts) == 1:
        return ((IP, _ip_name(by_type[IP])),)
    if len(by_type) != len(parts) or not by_type or set(by_type) - {USER, CLIENT}:
        raise InvalidRequestError(
            "a quota entity is a user, a client-id, a user and a client-id, or an ip alone "
            f"(got {[p.entity_type for p in parts]})"
        )
    return tuple((t, by_type[t]) for t in (USER, CLIENT) if t in by_type)


def _ip_name(name: str | None) -> str | None:
    """An ip entity's name in its one spelling (``::1`` however written), or None for the
    default. Kafka also takes a host name and resolves it; here an address is needed."""
    if name is None:
        return None
    try:
        return str(ipaddress.ip_address(name.strip()))
    except ValueError:
        raise InvalidRequestError(
            f"{name!r} is not an IP address (an ip quota names an address: host names are "
            "not resolved)"
        ) from None


def _keys_of(entity: Entity) -> tuple[str, ...]:
    return IP_QUOTA_KEYS if entity[0][0] == IP else QUOTA_KEYS


class QuotaManager(ZkMirror):
    """Measures produce and fetch bytes against the quotas that apply."""

    def __init__(self, zk: ZkBridge | None, config: BrokerConfig) -> None:
        super().__init__(zk, "quota", config.broker_id)
        self._samples = int(config["quota.window.num"])
        self._window_ms = int(config["quota.window.size.seconds"]) * 1000
        self._max_throttle_ms = self._samples * self._window_ms
        self._quotas: dict[Entity, dict[str, float]] = {}
        self._ip_rates: dict[str | None, float] = {}
        """connection_creation_rate by address (None: the default), kept apart so that an
        ip quota costs the produce and fetch paths nothing."""
        self._rates: dict[tuple[str, Entity], Rate] = {}
        """By quota and the entity measured: a default entity's part replaced by the
        actual user or client id."""
        self._buckets: dict[Entity, TokenBucket] = {}  # controller_mutation_rate's, so too
        self._buckets_swept_ms = 0
        self._swept_ms = 0
        self._times: tuple[object, bool] = (None, False)

    # --- measuring ------------------------------------------------------------------------

    @property
    def times_requests(self) -> bool:
        """Some request_percentage quota is set: the server times requests (else not).
        Asked per request: worked out once per copy of the quotas (a reload swaps it)."""
        quotas = self._quotas
        seen, times = self._times
        if seen is not quotas:
            times = any(_REQUESTS in q for q in quotas.values())
            self._times = (quotas, times)
        return times

    @property
    def active(self) -> bool:
        """Whether any quota is set (else there is nothing to count)."""
        return bool(self._quotas)

    def connection_rate(self, ip: str) -> float | None:
        """New connections a second ``ip`` may open (its quota, else the default ip
        quota); None: no bound. Costs one test while no ip quota is set."""
        rates = self._ip_rates
        if not rates:
            return None
        with contextlib.suppress(ValueError):  # (one spelling, as the quotas are kept)
            ip = str(ipaddress.ip_address(ip))
        found = rates.get(ip)
        return rates.get(None) if found is None else found

    def record(self, key: str, nbytes: int) -> int:
        """Count ``nbytes`` for the request being served against its ``key`` quota; the
        milliseconds it is throttled for (0: within its quota, or none applies)."""
        return self.meter(key)(nbytes)

    def meter(self, key: str) -> Callable[[int], int]:
        """:meth:`record` for the request being served now, to be called later (a parked
        fetch is answered from another connection's append: its principal is not ours)."""
        if not self._quotas:
            return _unmetered
        user, client_id = principal().partition(":")[2], PEER_CLIENT_ID.get()
        return lambda nbytes: self._record(key, user, client_id, nbytes)

    def request_meter(self) -> Callable[[int], int]:
        """For the request being served (KIP-124): the nanoseconds the broker spent on it
        in, the milliseconds its client is throttled for out. Kafka's measure: a share of
        one thread's time, as a percentage (10 ms of work each second is 1)."""
        if not self._quotas:
            return _unmetered
        user, client_id = principal().partition(":")[2], PEER_CLIENT_ID.get()
        # at most one window's throttle (Kafka's ClientRequestQuotaManager), not eleven
        return lambda nanoseconds: self._record(
            _REQUESTS, user, client_id, nanoseconds * 100 / 1e9, max_ms=self._window_ms
        )

    def mutations(self) -> TokenBucket | None:
        """The controller mutation quota (KIP-599) that applies to the request being
        served (None: none does): a topic's partitions created or deleted are taken from
        it (``take`` returns 0) unless it is in debt (``take`` returns the milliseconds to
        wait: the topic is refused with THROTTLING_QUOTA_EXCEEDED)."""
        if not self._quotas:
            return None
        user, client_id = principal().partition(":")[2], PEER_CLIENT_ID.get()
        found = resolve(self._quotas, _MUTATIONS, user, client_id)
        if found is None:
            return None
        entity, rate = found
        names = {USER: user, CLIENT: client_id}
        measured = tuple((kind, names[kind] if name is None else name) for kind, name in entity)
        now = int(time.monotonic() * 1000)
        if now - self._buckets_swept_ms >= _SWEEP_MS:  # full ones are as good as new: go
            self._buckets_swept_ms = now
            self._buckets = {k: b for k, b in self._buckets.items() if not b.full(now)}
        bucket = self._buckets.get(measured)
        if bucket is None or bucket.rate != rate:
            # Kafka's burst: what the rate adds up to over the quota's whole window; a new
            # rate keeps the debt (a quota changed is not a quota forgiven)
            burst = rate * self._samples * self._window_ms / 1000
            old = None if bucket is None else bucket.balance(now)
            tokens = None if old is None else min(old, burst)
            bucket = self._buckets[measured] = TokenBucket(rate, burst, tokens, now)
        return bucket

    def _record(
        self, key: str, user: str, client_id: str, nbytes: float, *, max_ms: int | None = None
    ) -> int:
        found = resolve(self._quotas, key, user, client_id)
        if found is None:
            return 0
        entity, bound = found
        # Kafka's metric tags: a default entity stands for each user (or client id) it
        # covers, each measured on its own; a named entity is shared by its clients
        names = {USER: user, CLIENT: client_id}
        measured = tuple((kind, names[kind] if name is None else name) for kind, name in entity)
        now = int(time.monotonic() * 1000)
        if now - self._swept_ms >= _SWEEP_MS:  # idle clients' rates go
            self._swept_ms = now
            self._rates = {k: r for k, r in self._rates.items() if not r.idle(now)}
        rate = self._rates.get((key, measured))
        if rate is None:
            rate = self._rates[(key, measured)] = Rate(self._samples, self._window_ms)
        rate.record(nbytes, now)
        longest = self._max_throttle_ms if max_ms is None else max_ms
        return throttle_ms(rate.per_second(now), bound, rate.elapsed_ms(now), longest)

    # --- the copy -------------------------------------------------------------------------

    async def reload(self) -> None:
        """Every quota znode read, the copy swapped whole (the change watch set first)."""
        assert self._zk is not None
        async with self._reading:
            await self._zk.ensure_path(paths.CONFIG_CHANGES)
            await self._zk.get_children(paths.CONFIG_CHANGES, watch=self.on_watch)
            quotas: dict[Entity, dict[str, float]] = {}
            for user in await self._children(paths.USER_CONFIGS):
                await self._read_into(quotas, ((USER, _name(user)),))
                for client in await self._children(f"{paths.USER_CONFIGS}/{user}/clients"):
                    await self._read_into(quotas, ((USER, _name(user)), (CLIENT, _name(client))))
            for client in await self._children(_CLIENTS):
                await self._read_into(quotas, ((CLIENT, _name(client)),))
            ips: dict[Entity, dict[str, float]] = {}
            for ip in await self._children(_IPS):
                name = _name(ip)
                try:
                    entity: Entity = ((IP, _ip_name(name)),)
                except InvalidRequestError:  # made by hand, or by a Kafka tool with a host
                    self._log.warning("quota.unreadable", ip=name)
                    continue
                await self._read_into(ips, entity)
            if quotas != self._quotas or ips.keys() != self._ip_quotas().keys():
                self._log.info("quota.loaded", entities=len(quotas) + len(ips))
            self._quotas = quotas
            self._ip_rates = {
                dict(e)[IP]: v[key] for e, v in ips.items() for key in IP_QUOTA_KEYS if key in v
            }

    def _ip_quotas(self) -> dict[Entity, dict[str, float]]:
        return {
            ((IP, ip),): {IP_QUOTA_KEYS[0]: rate}
            for ip, rate in sorted(self._ip_rates.items(), key=lambda kv: kv[0] or "")
        }

    async def _children(self, path: str) -> list[str]:
        assert self._zk is not None
        try:
            return sorted(await self._zk.get_children(path))
        except NoNode:
            return []

    async def _read_into(self, quotas: dict[Entity, dict[str, float]], entity: Entity) -> None:
        try:
            config, _ = await self._read(entity)
        except CorruptZnode as exc:
            self._log.warning("quota.unreadable", error=str(exc))
            return
        values = {}
        for key in _keys_of(entity):
            if key in config:
                try:
                    values[key] = float(config[key])
                except ValueError:
                    self._log.warning("quota.unreadable", entity=entity, key=key)
        if values:
            quotas[entity] = values

    async def _read(self, entity: Entity) -> tuple[dict[str, str], int]:
        assert self._zk is not None
        path = _path(entity)
        try:
            data, stat = await self._zk.get(path)
        except NoNode:
            return {}, CREATE
        return entity_config_from_json(path, data), stat.version

    # --- DescribeClientQuotas, AlterClientQuotas ------------------------------------------

    async def describe(self, request: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse:
        await self.reload()  # what ZooKeeper holds now, not the copy of a moment ago
        wanted = {}
        for c in request.components:
            if c.entity_type not in (USER, CLIENT, IP) or c.entity_type in wanted:
                raise InvalidRequestError(
                    f"a quota filter names user, client-id and ip once each, not {c.entity_type!r}"
                )
            if c.match_type not in (_MATCH_EXACT, _MATCH_DEFAULT, _MATCH_ANY):
                raise InvalidRequestError(
                    f"match_type {c.match_type}: 0 (exact), 1 (default) or 2 (any)"
                )
            wanted[c.entity_type] = c
            if c.entity_type == IP and c.match_type == _MATCH_EXACT and c.match is not None:
                with contextlib.suppress(InvalidRequestError):  # (not an address: no match)
                    wanted[IP] = dataclasses.replace(c, match=_ip_name(c.match))
        if IP in wanted and len(wanted) > 1:
            raise InvalidRequestError(  # Kafka's words
                "Invalid entity filter component combination, IP filter component should not "
                "be used with user or clientId filter component."
            )
        entries = []
        every = {**self._quotas, **self._ip_quotas()}
        for entity, values in sorted(every.items(), key=lambda kv: repr(kv[0])):
            parts = dict(entity)
            if request.strict and set(parts) != set(wanted):
                continue
            if not all(_matches(c, parts) for c in wanted.values()):
                continue
            entries.append(
                DescribeClientQuotasEntry(
                    entity=[QuotaEntityPart(entity_type=t, entity_name=n) for t, n in entity],
                    values=[QuotaValue(key=k, value=v) for k, v in sorted(values.items())],
                )
            )
        return DescribeClientQuotasResponse(entries=entries)

    async def alter(self, request: AlterClientQuotasRequest) -> AlterClientQuotasResponse:
        results = []
        for entry in request.entries:
            result = AlterClientQuotasResult(entity=entry.entity)
            try:
                entity = _entity(entry.entity)
                keys = _keys_of(entity)
                for op in entry.ops:
                    if op.key not in keys:
                        kind = "an ip" if keys is IP_QUOTA_KEYS else "a user or client-id"
                        raise InvalidRequestError(
                            f"quota {op.key!r} is not one {kind} has here; use one of "
                            f"{', '.join(keys)}"
                        )
                    if not op.remove and keys is IP_QUOTA_KEYS:
                        _check_connection_rate(op.key, op.value)
                    elif not op.remove and not op.value > 0:
                        raise InvalidRequestError(f"{op.key}={op.value}: it must be above 0")
                if not request.validate_only:
                    await self._write(entity, entry.ops)
                    self._log.info(
                        "quota.altered",
                        entity=_path(entity),
                        ops={o.key: None if o.remove else o.value for o in entry.ops},
                        by=principal(),
                    )
            except ApiError as exc:
                result.error_code, result.error_message = exc.code, exc.message
            except (ZkError, CorruptZnode) as exc:
                error = KafkaStorageError(f"writing the quotas failed: {exc}")
                result.error_code, result.error_message = error.code, error.message
            results.append(result)
        await self.catch_up()
        return AlterClientQuotasResponse(entries=results)

    async def _write(self, entity: Entity, ops: list[Any]) -> None:
        assert self._zk is not None
        path = _path(entity)
        for _ in range(5):
            config, version = await self._read(entity)
            updated = dict(config)
            for op in ops:
                if op.remove:
                    updated.pop(op.key, None)
                elif op.key in IP_QUOTA_KEYS:  # an INT in Kafka: its brokers read it so
                    updated[op.key] = str(round(op.value))
                else:
                    updated[op.key] = repr(float(op.value)).removesuffix(".0")
            if updated == config:
                return
            parent = path.rsplit("/", 1)[0]
            await self._zk.ensure_path(parent)
            written = await self._zk.write_config(
                path, updated, version=version, notice=_notice(entity), parents=(parent,)
            )
            if written:
                return
        raise KafkaStorageError(f"the quotas of {path} kept changing under us; try again")


def _check_connection_rate(key: str, value: float) -> None:
    """Kafka's: a whole number (within 1e-6), 0 or more (0 shuts the address out: each
    new connection is held a window, then closed)."""
    if not (-1e-6 < value < 2**31) or abs(value - round(value)) > 1e-6:
        raise InvalidRequestError(f"{key}={value}: it must be a whole number, 0 or more")


def _matches(component: Any, parts: dict[str, str | None]) -> bool:
    if component.entity_type not in parts:
        return False
    name = parts[component.entity_type]
    if component.match_type == _MATCH_DEFAULT:
        return name is None
    if component.match_type == _MATCH_EXACT:
        return name is not None and name == component.match
    return True  # _MATCH_ANY
