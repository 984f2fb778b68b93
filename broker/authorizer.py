"""ACL authorization (Kafka's AclAuthorizer in ZooKeeper mode): who may do what.

On with ``authorizer.class.name`` (Kafka's ``kafka.security.authorizer.AclAuthorizer``).
Each request is decided on this broker's copy of every ACL, in memory
(:meth:`Authorizer.allowed`: a dict lookup per resource, no I/O); :func:`protocol.acls.decide`
is the rule. The principal is the connection's: ``User:<name>`` after a SASL login,
``User:<the certificate's subject DN>`` for a TLS client certificate, else
``User:ANONYMOUS`` (so brokers replicating over a PLAINTEXT listener must be in
``super.users`` as ``User:ANONYMOUS``, as in Kafka).

The ACLs live in Kafka's znodes, so a Kafka tool's ZooKeeper layout and Headwater's agree:
``/kafka-acl/<ResourceType>/<name>`` for literal names and
``/kafka-acl-extended/prefixed/<ResourceType>/<prefix>`` for prefixes, each
``{"version":1,"acls":[{"principal":"User:alice","permissionType":"Allow",
"operation":"Read","host":"*"}]}``. CreateAcls and DeleteAcls (any broker) rewrite a
resource's znode with a version check and, in the same ZooKeeper multi, create a change
notification (``/kafka-acl-changes/acl_changes_<seq>``, or ``/kafka-acl-extended-changes``
for prefixes). Every broker watches both: a notification, or a new ZooKeeper session,
re-reads every ACL znode (ACLs change rarely; one pass is a few reads per resource) and
swaps the copy whole. The broker that wrote answers only once its own copy has the change.
Notifications older than 15 minutes are deleted, as Kafka does.

Concurrency: event loop thread only; ZooKeeper through :class:`ZkBridge`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote

from broker.config import BrokerConfig
from broker.mirror import ZkMirror
from broker.server import PEER_HOST, PEER_PRINCIPAL
from broker.zk import (
    CREATE,
    NodeExists,
    NoNode,
    VersionConflict,
    ZkBridge,
    ZkConnectionLoss,
    ZkError,
)
from protocol.acls import (
    CLUSTER_NAME,
    WILDCARD,
    AclBinding,
    AclBindingFilter,
    AclError,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    decide,
    denied,
)
from protocol.apis import (
    AclCreationResult,
    AclDescription,
    AclFilterFields,
    CreateAclsRequest,
    CreateAclsResponse,
    DeleteAclsFilterResult,
    DeleteAclsMatchingAcl,
    DeleteAclsRequest,
    DeleteAclsResponse,
    DescribeAclsRequest,
    DescribeAclsResource,
    DescribeAclsResponse,
)
from protocol.errors import (
    ApiError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    InvalidRequestError,
    KafkaStorageError,
    SecurityDisabledError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)

__all__ = [
    "ANONYMOUS",
    "Authorizer",
    "group_not_authorized",
    "principal",
    "topic_not_authorized",
    "transactional_id_not_authorized",
]

ANONYMOUS = "User:ANONYMOUS"
AUTHORIZER_CLASS = "kafka.security.authorizer.AclAuthorizer"

_LITERAL_ROOT = "/kafka-acl"
_PREFIXED_ROOT = "/kafka-acl-extended/prefixed"
_LITERAL_CHANGES = "/kafka-acl-changes"
_PREFIXED_CHANGES = "/kafka-acl-extended-changes"
_CHANGE_PREFIX = "acl_changes_"
_PURGE_AFTER_MS = 15 * 60 * 1000
_TYPES = [t for t in ResourceType if t.value > ResourceType.ANY]
_Key = tuple[ResourceType, PatternType, str]


def _yes(_name: str) -> bool:
    return True


def principal() -> str:
    """The principal of the request being served (from its connection)."""
    return PEER_PRINCIPAL.get() or ANONYMOUS


def _root(pattern: PatternType) -> str:
    return _PREFIXED_ROOT if pattern == PatternType.PREFIXED else _LITERAL_ROOT


def _path(key: _Key) -> str:
    kind, pattern, name = key
    # a group id may hold '/', which ZooKeeper would read as a child: escaped (topic
    # names and '*' stay as Kafka writes them)
    return f"{_root(pattern)}/{kind.title}/{quote(name, safe='*@:,=+')}"


def _acls_json(acls: Iterable[AclBinding]) -> bytes:
    return json.dumps(
        {
            "version": 1,
            "acls": [
                {
                    "principal": a.principal,
                    "permissionType": a.permission.title,
                    "operation": a.operation.title,
                    "host": a.host,
                }
                for a in sorted(acls)
            ],
        },
        separators=(",", ":"),
    ).encode()


def _acls_from_json(key: _Key, data: bytes) -> set[AclBinding]:
    kind, pattern, name = key
    try:
        document = json.loads(data)
        return {
            AclBinding(
                kind,
                name,
                pattern,
                str(entry["principal"]),
                str(entry["host"]),
                Operation.parse(str(entry["operation"])),
                Permission.parse(str(entry["permissionType"])),
            )
            for entry in document.get("acls", [])
        }
    except (ValueError, KeyError, TypeError, AttributeError, AclError) as exc:
        raise ValueError(f"{_path(key)} is not Kafka's ACL JSON: {exc}") from None


def _filter(fields: AclFilterFields) -> AclBindingFilter:
    try:
        return AclBindingFilter(
            ResourceType(fields.resource_type_filter),
            fields.resource_name_filter,
            PatternType(fields.pattern_type_filter),
            fields.principal_filter,
            fields.host_filter,
            Operation(fields.operation),
            Permission(fields.permission_type),
        )
    except ValueError as exc:
        raise InvalidRequestError(f"an ACL filter with an unknown code: {exc}") from None


class Authorizer(ZkMirror):
    """Decides requests on ACLs (``enabled``), or allows everything (not)."""

    def __init__(self, zk: ZkBridge | None = None, config: BrokerConfig | None = None) -> None:
        """Without a config: allows everything (what a broker without ACLs, or a test of
        another part, uses)."""
        super().__init__(zk, "acl", config.broker_id if config is not None else -1)
        self.enabled = config is not None and bool(config["authorizer.class.name"])
        self._super = config.super_users if config is not None else frozenset()
        self._allow_if_none = config is not None and config["allow.everyone.if.no.acl.found"]
        self._literal: dict[tuple[ResourceType, str], tuple[AclBinding, ...]] = {}
        self._prefixed: dict[ResourceType, list[tuple[str, tuple[AclBinding, ...]]]] = {}

    async def start(self) -> None:
        """Every ACL read (before the broker serves), then the changes followed; nothing
        without an authorizer."""
        if self.enabled:
            await super().start()

    # --- deciding -------------------------------------------------------------------------

    def allowed(self, operation: Operation, kind: ResourceType, name: str) -> bool:
        """Whether the request being served may do ``operation`` on the resource."""
        if not self.enabled:
            return True
        who = principal()
        if who in self._super:
            return True
        return decide(
            self._acls_on(kind, name),
            who,
            PEER_HOST.get() or WILDCARD,
            operation,
            allow_if_none=self._allow_if_none,
        )

    def decider(self, operation: Operation, kind: ResourceType) -> Callable[[str], bool]:
        """``allowed`` for the request being served now, by resource name, to be asked
        later (a parked fetch read again from another connection's append), each name
        decided once."""
        if not self.enabled or principal() in self._super:
            return _yes
        who, host = principal(), PEER_HOST.get() or WILDCARD
        decided: dict[str, bool] = {}

        def allowed(name: str) -> bool:
            known = decided.get(name)
            if known is None:
                known = decided[name] = decide(
                    self._acls_on(kind, name),
                    who,
                    host,
                    operation,
                    allow_if_none=self._allow_if_none,
                )
            return known

        return allowed

    def allowed_on_cluster(self, operation: Operation) -> bool:
        return self.allowed(operation, ResourceType.CLUSTER, CLUSTER_NAME)

    def check_cluster(self, operation: Operation, what: str) -> None:
        """Raise CLUSTER_AUTHORIZATION_FAILED unless ``operation`` on the cluster is allowed."""
        if not self.allowed_on_cluster(operation):
            raise ClusterAuthorizationFailedError(
                f"{principal()} may not {what}: it needs {operation.title} on the cluster "
                f"(headwater acls --add --allow-principal {principal()} --operation "
                f"{operation.title} --cluster)"
            )

    def allowed_any_topic(self, operation: Operation) -> bool:
        """Whether ``operation`` is allowed on some topic (Kafka's
        authorizeByResourceType: what an idempotent producer needs, short of
        IDEMPOTENT_WRITE on the cluster): not if a DENY on every topic (literal ``*``)
        matches; yes if ``allow.everyone.if.no.acl.found``; else if some ALLOW does."""
        if not self.enabled or principal() in self._super:
            return True
        every_topic = self._literal.get((ResourceType.TOPIC, WILDCARD), ())
        if denied(every_topic, principal(), PEER_HOST.get() or WILDCARD, operation):
            return False
        if self._allow_if_none:
            return True
        names = {name for (kind, name) in self._literal if kind == ResourceType.TOPIC}
        names |= {p for p, _ in self._prefixed.get(ResourceType.TOPIC, [])}
        return any(self.allowed(operation, ResourceType.TOPIC, n) for n in names)

    def _acls_on(self, kind: ResourceType, name: str) -> list[AclBinding]:
        acls = [*self._literal.get((kind, name), ()), *self._literal.get((kind, WILDCARD), ())]
        for prefix, bound in self._prefixed.get(kind, ()):
            if name.startswith(prefix):
                acls.extend(bound)
        return acls

    # --- the copy -------------------------------------------------------------------------

    async def reload(self) -> None:
        """Every ACL znode read, the copy swapped whole; the change watches set first,
        so a change after a read always wakes another pass."""
        assert self._zk is not None
        async with self._reading:
            changes: list[str] = []
            for root in (_LITERAL_CHANGES, _PREFIXED_CHANGES):
                await self._zk.ensure_path(root)
                names = await self._zk.get_children(root, watch=self.on_watch)
                changes += [f"{root}/{n}" for n in sorted(names)]
            literal: dict[tuple[ResourceType, str], tuple[AclBinding, ...]] = {}
            prefixed: dict[ResourceType, list[tuple[str, tuple[AclBinding, ...]]]] = {}
            count = 0
            for key, acls in await self._read_all():
                kind, pattern, name = key
                bound = tuple(sorted(acls))
                count += len(bound)
                if pattern == PatternType.PREFIXED:
                    prefixed.setdefault(kind, []).append((name, bound))
                else:
                    literal[(kind, name)] = bound
            self._literal, self._prefixed = literal, prefixed
            self._log.info(
                "acl.loaded",
                acls=count,
                resources=len(literal) + sum(len(p) for p in prefixed.values()),
            )
        await self._purge(changes)

    async def _read_all(self) -> list[tuple[_Key, set[AclBinding]]]:
        assert self._zk is not None
        out: list[tuple[_Key, set[AclBinding]]] = []
        for pattern in (PatternType.LITERAL, PatternType.PREFIXED):
            for kind in _TYPES:
                folder = f"{_root(pattern)}/{kind.title}"
                try:
                    names = await self._zk.get_children(folder)
                except NoNode:
                    continue
                for znode in names:
                    key = (kind, pattern, unquote(znode))
                    try:
                        acls, _ = await self._read(key)
                    except ValueError as exc:  # a hand-edited znode: said, and skipped
                        self._log.warning("acl.unreadable", error=str(exc))
                        continue
                    out.append((key, acls))
        return out

    async def _read(self, key: _Key) -> tuple[set[AclBinding], int]:
        assert self._zk is not None
        try:
            data, stat = await self._zk.get(_path(key))
        except NoNode:
            return set(), CREATE
        return _acls_from_json(key, data), stat.version

    async def _purge(self, changes: list[str]) -> None:
        assert self._zk is not None
        now_ms = time.time_ns() // 1_000_000
        for path in changes:
            stat = await self._zk.exists(path)
            if stat is None:
                continue
            if now_ms - int(stat.ctime) < _PURGE_AFTER_MS:
                continue
            with contextlib.suppress(NoNode):  # every broker purges: one of us wins
                await self._zk.delete(path)

    # --- CreateAcls, DescribeAcls, DeleteAcls ---------------------------------------------

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise SecurityDisabledError(
                "no authorizer is configured on this broker: set authorizer.class.name="
                f"{AUTHORIZER_CLASS} on every broker to use ACLs"
            )

    async def describe(self, request: DescribeAclsRequest) -> DescribeAclsResponse:
        self._check_enabled()
        self.check_cluster(Operation.DESCRIBE, "describe ACLs")
        wanted = _filter(request)
        by_resource: dict[_Key, list[AclBinding]] = defaultdict(list)
        for acl in self._every():
            if wanted.matches(acl):
                by_resource[(acl.resource_type, acl.pattern_type, acl.resource_name)].append(acl)
        return DescribeAclsResponse(
            resources=[
                DescribeAclsResource(
                    resource_type=kind,
                    resource_name=name,
                    pattern_type=pattern,
                    acls=[
                        AclDescription(
                            principal=a.principal,
                            host=a.host,
                            operation=a.operation,
                            permission_type=a.permission,
                        )
                        for a in acls
                    ],
                )
                for (kind, pattern, name), acls in sorted(by_resource.items())
            ]
        )

    def _every(self) -> list[AclBinding]:
        out = [a for bound in self._literal.values() for a in bound]
        out += [a for entries in self._prefixed.values() for _, bound in entries for a in bound]
        return out

    async def create(self, request: CreateAclsRequest) -> CreateAclsResponse:
        self._check_enabled()
        self.check_cluster(Operation.ALTER, "create ACLs")
        results = [AclCreationResult() for _ in request.creations]
        wanted: dict[_Key, list[tuple[int, AclBinding]]] = defaultdict(list)
        for i, c in enumerate(request.creations):
            try:
                acl = AclBinding.of(
                    c.resource_type,
                    c.resource_name,
                    c.resource_pattern_type,
                    c.principal,
                    c.host,
                    c.operation,
                    c.permission_type,
                )
                acl.check()
            except (ValueError, AclError) as exc:
                _fail(results[i], InvalidRequestError(f"ACL {i + 1} cannot be made: {exc}"))
                continue
            wanted[(acl.resource_type, acl.pattern_type, acl.resource_name)].append((i, acl))
        for key, items in wanted.items():
            try:
                await self._change(key, add={a for _, a in items})
            except ApiError as exc:
                for i, _ in items:
                    _fail(results[i], exc)
            else:
                for _, acl in items:
                    self._log.info("acl.created", acl=acl.describe(), by=principal())
        await self.catch_up()
        return CreateAclsResponse(results=results)

    async def delete(self, request: DeleteAclsRequest) -> DeleteAclsResponse:
        self._check_enabled()
        self.check_cluster(Operation.ALTER, "delete ACLs")
        await self.catch_up()  # decide on what is in ZooKeeper now, not on a stale copy
        every = self._every()
        results: list[DeleteAclsFilterResult] = []
        for fields in request.filters:
            try:
                wanted = _filter(fields)
            except ApiError as exc:
                result = DeleteAclsFilterResult()
                _fail(result, exc)
                results.append(result)
                continue
            matched = [a for a in every if wanted.matches(a)]
            by_resource: dict[_Key, set[AclBinding]] = defaultdict(set)
            for acl in matched:
                by_resource[(acl.resource_type, acl.pattern_type, acl.resource_name)].add(acl)
            result = DeleteAclsFilterResult()
            for key, acls in sorted(by_resource.items()):
                error: ApiError | None = None
                try:
                    await self._change(key, remove=acls)
                except ApiError as exc:
                    error = exc
                for acl in sorted(acls):
                    entry = _matching(acl)
                    if error is not None:
                        _fail(entry, error)
                    else:
                        self._log.info("acl.deleted", acl=acl.describe(), by=principal())
                    result.matching_acls.append(entry)
            results.append(result)
        await self.catch_up()
        return DeleteAclsResponse(filter_results=results)

    async def _change(
        self,
        key: _Key,
        *,
        add: frozenset[AclBinding] | set[AclBinding] = frozenset(),
        remove: frozenset[AclBinding] | set[AclBinding] = frozenset(),
    ) -> None:
        """Rewrite one resource's znode (created or deleted as needed), with its change
        notification in the same multi; redone on a concurrent writer's change."""
        assert self._zk is not None
        kind, pattern, name = key
        changes = _PREFIXED_CHANGES if pattern == PatternType.PREFIXED else _LITERAL_CHANGES
        notice = (
            json.dumps(
                {"version": 1, "resourceType": kind.title, "name": name, "patternType": "Prefixed"}
            ).encode()
            if pattern == PatternType.PREFIXED
            else f"{kind.title}:{name}".encode()
        )
        for _ in range(5):
            try:
                current, version = await self._read(key)
                updated = (current | add) - remove
                if updated == current:
                    return
                await self._zk.ensure_path(f"{_root(pattern)}/{kind.title}")
                await self._zk.ensure_path(changes)
                await self._zk.write_and_notify(
                    _path(key),
                    _acls_json(updated),
                    version=version,
                    notice_prefix=f"{changes}/{_CHANGE_PREFIX}",
                    notice=notice,
                    delete=not updated,  # the last ACL of the resource gone: its znode too
                )
                return
            except (VersionConflict, NodeExists, NoNode, ZkConnectionLoss):
                continue  # (lost with the connection: the read again shows if it was made)
            except (ZkError, ValueError) as exc:
                raise KafkaStorageError(f"writing the ACLs of {name} failed: {exc}") from None
        raise KafkaStorageError(f"the ACLs of {name} kept changing under us; try again")


def _fail(result: Any, error: ApiError) -> None:
    result.error_code = error.code
    result.error_message = str(error)


def _matching(acl: AclBinding) -> DeleteAclsMatchingAcl:
    return DeleteAclsMatchingAcl(
        resource_type=acl.resource_type,
        resource_name=acl.resource_name,
        pattern_type=acl.pattern_type,
        principal=acl.principal,
        host=acl.host,
        operation=acl.operation,
        permission_type=acl.permission,
    )


def topic_not_authorized(topic: str, operation: Operation) -> TopicAuthorizationFailedError:
    who = principal()
    return TopicAuthorizationFailedError(
        f"{who} may not {operation.title} topic {topic!r}: it needs an ACL allowing it "
        f"(headwater acls --add --allow-principal {who} --operation {operation.title} "
        f"--topic {topic})"
    )


def transactional_id_not_authorized(
    transactional_id: str, operation: Operation
) -> TransactionalIdAuthorizationFailedError:
    who = principal()
    return TransactionalIdAuthorizationFailedError(
        f"{who} may not {operation.title} transactional id {transactional_id!r}: it needs an "
        f"ACL allowing it (headwater acls --add --allow-principal {who} --operation "
        f"{operation.title} --transactional-id {transactional_id})"
    )


def group_not_authorized(group: str, operation: Operation) -> GroupAuthorizationFailedError:
    who = principal()
    return GroupAuthorizationFailedError(
        f"{who} may not {operation.title} group {group!r}: it needs an ACL allowing it "
        f"(headwater acls --add --allow-principal {who} --operation {operation.title} "
        f"--group {group})"
    )
