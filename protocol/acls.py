"""ACLs as Kafka defines them: resource types, pattern types, operations and permissions
(with Kafka's wire codes and its names in ZooKeeper's JSON), a binding, a filter, and the
one rule that decides a request (:func:`decide`). Pure: the broker's authorizer keeps the
bindings and asks this.

Kafka's rule (AclAuthorizer.authorize): a super user may do anything; otherwise the ACLs
that apply are those of the resource's literal name, of the literal wildcard ``*`` and of
every prefix of the name; any DENY that matches the principal (or ``User:*``), the host
(or ``*``) and the operation (or ALL) refuses; else an ALLOW that matches permits, where
READ, WRITE, DELETE and ALTER each imply DESCRIBE, and ALTER_CONFIGS implies
DESCRIBE_CONFIGS; with no ACL on the resource at all, ``allow.everyone.if.no.acl.found``
decides.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

from protocol.errors import HeadwaterError

__all__ = [
    "CLUSTER_NAME",
    "WILDCARD",
    "WILDCARD_PRINCIPAL",
    "AclBinding",
    "AclBindingFilter",
    "AclError",
    "Operation",
    "PatternType",
    "Permission",
    "ResourceType",
    "decide",
    "denied",
]

CLUSTER_NAME = "kafka-cluster"
"""The one Cluster resource's name (Kafka's)."""
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"


class AclError(HeadwaterError):
    """An ACL or a filter that cannot be: an UNKNOWN or ANY where a value is needed."""


class _Named(enum.IntEnum):
    """An enum with Kafka's wire code as its value and Kafka's Java name as ``title``."""

    @property
    def title(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    @classmethod
    def parse(cls, text: str) -> Self:
        """From Kafka's names in any case, with or without underscores (``Read``,
        ``READ``, ``describe_configs``, ``DescribeConfigs``)."""
        key = text.replace("_", "").replace("-", "").upper()
        for member in cls:
            if member.name.replace("_", "") == key:
                return member
        names = ", ".join(m.title for m in cls if m.name not in ("UNKNOWN", "ANY", "MATCH"))
        raise AclError(f"{text!r} is not a {cls.__name__}: use one of {names}")


class ResourceType(_Named):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(_Named):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(_Named):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class Permission(_Named):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


_IMPLIED = {
    Operation.DESCRIBE: (
        Operation.DESCRIBE,
        Operation.READ,
        Operation.WRITE,
        Operation.DELETE,
        Operation.ALTER,
    ),
    Operation.DESCRIBE_CONFIGS: (Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS),
}
"""What an ALLOW of each operation permits besides itself (Kafka's implied operations)."""


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    """One ACL: who (principal, host) may or may not (permission) do what (operation) on
    which resources (type, name, pattern)."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission

    @classmethod
    def of(  # noqa: PLR0917 (the seven fields, as the wire carries them)
        cls,
        resource_type: int,
        resource_name: str,
        pattern_type: int,
        principal: str,
        host: str,
        operation: int,
        permission: int,
    ) -> AclBinding:
        """From the wire's codes (ValueError for an unknown one)."""
        return cls(
            ResourceType(resource_type),
            resource_name,
            PatternType(pattern_type),
            principal,
            host,
            Operation(operation),
            Permission(permission),
        )

    def check(self) -> None:
        """Raise :class:`AclError` unless this is a binding one can create."""
        for field, value in (
            ("resource type", self.resource_type),
            ("pattern type", self.pattern_type),
            ("operation", self.operation),
            ("permission", self.permission),
        ):
            if value.name in ("UNKNOWN", "ANY", "MATCH"):
                raise AclError(f"an ACL's {field} must be given, not {value.name}")
        if not self.resource_name:
            raise AclError("an ACL's resource name must not be empty")
        if self.resource_type == ResourceType.CLUSTER and (
            self.resource_name != CLUSTER_NAME or self.pattern_type != PatternType.LITERAL
        ):
            raise AclError(f"the cluster resource is the literal {CLUSTER_NAME!r}")
        if self.pattern_type == PatternType.PREFIXED and self.resource_name == WILDCARD:
            raise AclError("a PREFIXED pattern of '*' means nothing: use LITERAL '*'")
        kind, sep, name = self.principal.partition(":")
        if not sep or not kind or not name:
            raise AclError(f"principal {self.principal!r} is not Type:name, e.g. User:alice")
        if not self.host:
            raise AclError("an ACL's host must be an address or '*'")

    def describe(self) -> str:
        return (
            f"(principal={self.principal}, host={self.host}, operation={self.operation.title}, "
            f"permissionType={self.permission.title}) on "
            f"{self.resource_type.title}:{self.pattern_type.title}:{self.resource_name}"
        )


@dataclass(frozen=True, slots=True)
class AclBindingFilter:
    """Which bindings DescribeAcls and DeleteAcls mean: None and ANY match everything;
    pattern MATCH matches what would apply to that name (literal, wildcard, prefixes)."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def matches(self, acl: AclBinding) -> bool:
        if self.resource_type not in (ResourceType.ANY, acl.resource_type):
            return False
        if not self._pattern_matches(acl):
            return False
        return (
            self.principal in (None, acl.principal)
            and self.host in (None, acl.host)
            and self.operation in (Operation.ANY, acl.operation)
            and self.permission in (Permission.ANY, acl.permission)
        )

    def _pattern_matches(self, acl: AclBinding) -> bool:
        name = self.resource_name
        if self.pattern_type == PatternType.MATCH:
            if name is None:
                return True
            if acl.pattern_type == PatternType.LITERAL:
                return acl.resource_name in (name, WILDCARD)
            return acl.pattern_type == PatternType.PREFIXED and name.startswith(acl.resource_name)
        if self.pattern_type not in (PatternType.ANY, acl.pattern_type):
            return False
        return name is None or name == acl.resource_name


def denied(acls: Iterable[AclBinding], principal: str, host: str, operation: Operation) -> bool:
    """Whether a DENY among ``acls`` matches (principal or ``User:*``, host or ``*``, the
    operation or ALL): it wins over any ALLOW."""
    return any(
        acl.permission == Permission.DENY
        and acl.principal in (principal, WILDCARD_PRINCIPAL)
        and acl.host in (host, WILDCARD)
        and acl.operation in (operation, Operation.ALL)
        for acl in acls
    )


def decide(
    acls: list[AclBinding],
    principal: str,
    host: str,
    operation: Operation,
    *,
    allow_if_none: bool,
) -> bool:
    """Whether ``principal`` from ``host`` may do ``operation``, given every ACL that
    applies to the resource (its literal name, ``*`` and its prefixes)."""
    if not acls:
        return allow_if_none
    if denied(acls, principal, host, operation):
        return False
    principals = (principal, WILDCARD_PRINCIPAL)
    hosts = (host, WILDCARD)
    permitted = _IMPLIED.get(operation, (operation,))
    return any(
        acl.permission == Permission.ALLOW
        and acl.principal in principals
        and acl.host in hosts
        and (acl.operation == Operation.ALL or acl.operation in permitted)
        for acl in acls
    )
