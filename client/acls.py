"""``headwater acls``: Kafka's kafka-acls options turned into ACLs and filters (no I/O:
the command runs the Admin calls it returns)."""

from __future__ import annotations

from typing import Any

from protocol.acls import (
    CLUSTER_NAME,
    AclBinding,
    AclBindingFilter,
    AclError,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)

__all__ = ["AclCommand"]

_PRODUCER = (Operation.WRITE, Operation.DESCRIBE, Operation.CREATE)
_CONSUMER = (Operation.READ, Operation.DESCRIBE)


class AclCommand:
    """One ``headwater acls`` invocation; a bad combination is a ValueError saying why."""

    def __init__(
        self,
        *,
        mode: str | None,
        allow_principal: tuple[str, ...] = (),
        deny_principal: tuple[str, ...] = (),
        allow_host: tuple[str, ...] = (),
        deny_host: tuple[str, ...] = (),
        operations: tuple[str, ...] = (),
        topics: tuple[str, ...] = (),
        groups_: tuple[str, ...] = (),
        transactional_ids: tuple[str, ...] = (),
        delegation_tokens: tuple[str, ...] = (),
        user_principals: tuple[str, ...] = (),
        cluster: bool = False,
        resource_pattern_type: str | None = None,
        principal: str | None = None,
        producer: bool = False,
        consumer: bool = False,
        force: bool = False,
    ) -> None:
        del force  # nothing is asked
        self.mode = mode or "list"
        try:
            self.pattern = PatternType.parse(resource_pattern_type or "LITERAL")
            self.operations = [Operation.parse(o) for o in operations]
        except AclError as exc:
            raise ValueError(str(exc)) from None
        self.pattern_given = resource_pattern_type is not None
        self.principal = principal
        self.resources = [(ResourceType.TOPIC, t) for t in topics]
        self.resources += [(ResourceType.GROUP, g) for g in groups_]
        self.resources += [(ResourceType.TRANSACTIONAL_ID, t) for t in transactional_ids]
        self.resources += [(ResourceType.DELEGATION_TOKEN, t) for t in delegation_tokens]
        for user in user_principals:  # KIP-373: the users whose tokens one may make or see
            kind, sep, name = user.partition(":")
            if not sep or kind != "User" or not name:
                raise ValueError(f"--user-principal {user!r}: give User:<name>")
            self.resources.append((ResourceType.USER, user))
        if cluster:
            self.resources.append((ResourceType.CLUSTER, CLUSTER_NAME))
        self.who = [(p, Permission.ALLOW, allow_host or ("*",)) for p in allow_principal]
        self.who += [(p, Permission.DENY, deny_host or ("*",)) for p in deny_principal]
        self.hosts_given = bool(allow_host or deny_host)
        self.producer, self.consumer = producer, consumer
        if self.mode != "list" and not self.resources:
            raise ValueError(
                "name what the ACLs are on: --topic, --group, --transactional-id, "
                "--delegation-token, --user-principal or --cluster"
            )
        if self.mode != "list" and principal is not None:
            raise ValueError(
                "--principal only narrows --list; to --add or --remove, name the principal "
                "with --allow-principal or --deny-principal"
            )
        if self.mode == "add":
            if self.pattern not in (PatternType.LITERAL, PatternType.PREFIXED):
                raise ValueError("--add takes --resource-pattern-type LITERAL or PREFIXED")
            if not self.who:
                raise ValueError("--add needs --allow-principal or --deny-principal")

    def _wanted(self) -> list[tuple[ResourceType, str, Operation]]:
        """Each (resource, operation) the options mean (Kafka's --producer/--consumer)."""
        out: list[tuple[ResourceType, str, Operation]] = []
        for kind, name in self.resources:
            if self.producer and kind == ResourceType.TOPIC:
                out += [(kind, name, o) for o in _PRODUCER]
            if self.consumer and kind == ResourceType.TOPIC:
                out += [(kind, name, o) for o in _CONSUMER]
            if self.consumer and kind == ResourceType.GROUP:
                out.append((kind, name, Operation.READ))
            if self.producer and kind == ResourceType.TRANSACTIONAL_ID:
                out += [(kind, name, o) for o in (Operation.WRITE, Operation.DESCRIBE)]
            if not (self.producer or self.consumer):
                out += [(kind, name, o) for o in self.operations or [Operation.ALL]]
        return out

    def bindings(self) -> list[AclBinding]:
        return sorted(
            {
                AclBinding(kind, name, self.pattern, p, host, op, permission)
                for kind, name, op in self._wanted()
                for p, permission, hosts in self.who
                for host in hosts
            }
        )

    def remove_filters(self) -> list[AclBindingFilter]:
        """What --remove deletes, as kafka-acls: without a principal, every ACL on the
        resources named; with one, exactly the ACLs --add would make from the same options
        (operation All and host * unless named)."""
        if not self.who:
            return [AclBindingFilter(kind, name, self.pattern) for kind, name in self.resources]
        return [
            AclBindingFilter(
                a.resource_type,
                a.resource_name,
                a.pattern_type,
                a.principal,
                a.host,
                a.operation,
                a.permission,
            )
            for a in self.bindings()
        ]

    def list_filters(self) -> list[AclBindingFilter]:
        pattern = self.pattern if self.pattern_given else PatternType.ANY
        return [
            AclBindingFilter(kind, name, pattern, self.principal) for kind, name in self.resources
        ] or [AclBindingFilter(principal=self.principal)]

    async def matching(self, admin: Any) -> list[AclBinding]:
        found: set[AclBinding] = set()
        for f in self.list_filters():
            found |= set(await admin.describe_acls(f))
        return sorted(found)

    async def add(self, admin: Any) -> list[AclBinding]:
        bindings = self.bindings()
        await admin.create_acls(bindings)
        return bindings

    async def remove(self, admin: Any) -> list[AclBinding]:
        removed: list[AclBinding] = await admin.delete_acls(self.remove_filters())
        return removed
