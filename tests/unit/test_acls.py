"""ACLs' rule (protocol.acls.decide, Kafka's AclAuthorizer), filters, bindings, and the
kafka-acls options (client.acls): what each allows and refuses."""

from __future__ import annotations

import pytest

from client.acls import AclCommand
from protocol.acls import (
    CLUSTER_NAME,
    AclBinding,
    AclBindingFilter,
    AclError,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    decide,
)

T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY


def _acl(
    principal: str = "User:alice",
    operation: Operation = Operation.READ,
    permission: Permission = ALLOW,
    *,
    host: str = "*",
    name: str = "orders",
    pattern: PatternType = LIT,
    kind: ResourceType = T,
) -> AclBinding:
    return AclBinding(kind, name, pattern, principal, host, operation, permission)


def _may(
    acls: list[AclBinding],
    operation: Operation,
    *,
    who: str = "User:alice",
    host: str = "10.0.0.1",
    open_: bool = False,
) -> bool:
    return decide(acls, who, host, operation, allow_if_none=open_)


def test_no_acl_refuses_unless_allow_everyone_if_none() -> None:
    assert not _may([], Operation.READ)
    assert _may([], Operation.READ, open_=True)
    # an ACL for someone else makes the resource closed to the rest, whatever the setting
    assert not _may([_acl("User:bob")], Operation.READ, open_=True)


def test_allow_matches_principal_host_and_operation_or_their_wildcards() -> None:
    assert _may([_acl()], Operation.READ)
    assert not _may([_acl()], Operation.WRITE)
    assert not _may([_acl("User:bob")], Operation.READ)
    assert _may([_acl("User:*")], Operation.READ)
    assert _may([_acl(host="10.0.0.1")], Operation.READ)
    assert not _may([_acl(host="10.0.0.2")], Operation.READ)
    assert _may([_acl(operation=Operation.ALL)], Operation.ALTER_CONFIGS)


def test_deny_wins_over_any_allow() -> None:
    acls = [_acl(operation=Operation.ALL), _acl(operation=Operation.READ, permission=DENY)]
    assert not _may(acls, Operation.READ)
    assert _may(acls, Operation.WRITE)
    assert not _may(
        [_acl(operation=Operation.ALL), _acl("User:*", Operation.ALL, DENY)], Operation.WRITE
    )
    assert _may([_acl(), _acl(host="10.9.9.9", permission=DENY)], Operation.READ)


@pytest.mark.parametrize(
    ("granted", "implied"),
    [
        (Operation.READ, Operation.DESCRIBE),
        (Operation.WRITE, Operation.DESCRIBE),
        (Operation.DELETE, Operation.DESCRIBE),
        (Operation.ALTER, Operation.DESCRIBE),
        (Operation.ALTER_CONFIGS, Operation.DESCRIBE_CONFIGS),
    ],
)
def test_kafkas_implied_operations(granted: Operation, implied: Operation) -> None:
    assert _may([_acl(operation=granted)], implied)
    assert not _may([_acl(operation=implied)], granted)
    # a DENY of the stronger one does not deny the implied one (Kafka's)
    assert _may([_acl(operation=implied), _acl(operation=granted, permission=DENY)], implied)


def test_filters_match_as_describe_and_delete_acls_do() -> None:
    literal, prefixed, wildcard = _acl(), _acl(name="ord", pattern=PRE), _acl(name="*")
    every = [literal, prefixed, wildcard]
    assert [a for a in every if AclBindingFilter().matches(a)] == every
    match = AclBindingFilter(T, "orders", PatternType.MATCH)
    assert [a for a in every if match.matches(a)] == every  # all three apply to "orders"
    assert not AclBindingFilter(T, "other", PatternType.MATCH).matches(prefixed)
    exact = AclBindingFilter(T, "orders", LIT)
    assert [a for a in every if exact.matches(a)] == [literal]
    assert not AclBindingFilter(G).matches(literal)
    assert AclBindingFilter(principal="User:alice", operation=Operation.READ).matches(literal)
    assert not AclBindingFilter(permission=DENY).matches(literal)


@pytest.mark.parametrize(
    ("acl", "why"),
    [
        (_acl(operation=Operation.ANY), "operation must be given"),
        (_acl(pattern=PatternType.MATCH), "pattern type must be given"),
        (_acl(kind=C, name="other"), "the cluster resource"),
        (_acl(name="*", pattern=PRE), "PREFIXED pattern of"),
        (_acl(principal="alice"), "is not Type:name"),
        (_acl(name=""), "must not be empty"),
    ],
)
def test_bindings_that_cannot_be(acl: AclBinding, why: str) -> None:
    with pytest.raises(AclError, match=why):
        acl.check()
    _acl(kind=C, name=CLUSTER_NAME).check()


def test_names_as_kafka_writes_them() -> None:
    assert Operation.parse("DescribeConfigs") is Operation.DESCRIBE_CONFIGS
    assert Operation.parse("describe_configs") is Operation.DESCRIBE_CONFIGS
    assert Operation.CLUSTER_ACTION.title == "ClusterAction"
    assert PatternType.parse("prefixed") is PRE
    with pytest.raises(AclError, match="not a Operation: use one of All, Read"):
        Operation.parse("Reed")


def test_the_command_producer_and_consumer_shorthands() -> None:
    producer = AclCommand(
        mode="add", allow_principal=("User:alice",), topics=("orders",), producer=True
    )
    assert {(a.operation, a.resource_name) for a in producer.bindings()} == {
        (Operation.WRITE, "orders"),
        (Operation.DESCRIBE, "orders"),
        (Operation.CREATE, "orders"),
    }
    transactional = AclCommand(
        mode="add",
        allow_principal=("User:alice",),
        topics=("orders",),
        transactional_ids=("payments",),
        producer=True,
    )
    assert {(a.resource_type, a.operation) for a in transactional.bindings()} >= {
        (ResourceType.TRANSACTIONAL_ID, Operation.WRITE),
        (ResourceType.TRANSACTIONAL_ID, Operation.DESCRIBE),
    }
    consumer = AclCommand(
        mode="add",
        allow_principal=("User:bob",),
        topics=("orders",),
        groups_=("g",),
        consumer=True,
        allow_host=("10.0.0.1",),
    )
    assert {(a.resource_type, a.operation, a.host) for a in consumer.bindings()} == {
        (T, Operation.READ, "10.0.0.1"),
        (T, Operation.DESCRIBE, "10.0.0.1"),
        (G, Operation.READ, "10.0.0.1"),
    }
    denied = AclCommand(
        mode="add",
        deny_principal=("User:eve",),
        cluster=True,
        operations=("Alter", "Create"),
    )
    assert {(a.permission, a.operation, a.resource_name) for a in denied.bindings()} == {
        (DENY, Operation.ALTER, CLUSTER_NAME),
        (DENY, Operation.CREATE, CLUSTER_NAME),
    }


def test_the_command_removes_and_lists_what_it_names() -> None:
    everything_on = AclCommand(mode="remove", topics=("orders",))
    (f,) = everything_on.remove_filters()
    assert (f.resource_name, f.pattern_type, f.principal, f.operation) == (
        "orders",
        LIT,
        None,
        Operation.ANY,
    )
    of_alice = AclCommand(
        mode="remove", topics=("orders",), allow_principal=("User:alice",), operations=("Read",)
    )
    (f,) = of_alice.remove_filters()
    assert (f.principal, f.permission, f.operation, f.host) == (
        "User:alice",
        ALLOW,
        Operation.READ,
        "*",
    )
    # as kafka-acls: a principal without --operation means its ACL for All, not every one
    (f,) = AclCommand(
        mode="remove", topics=("orders",), deny_principal=("User:bob",)
    ).remove_filters()
    assert (f.operation, f.permission, f.host) == (Operation.ALL, DENY, "*")
    (f,) = AclCommand(mode=None, principal="User:bob").list_filters()
    assert (f.resource_type, f.principal) == (ResourceType.ANY, "User:bob")


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (
            {"mode": "add", "allow_principal": ("User:a",)},
            "--delegation-token, --user-principal or --cluster",
        ),
        ({"mode": "add", "topics": ("t",)}, "--allow-principal or --deny-principal"),
        (
            {
                "mode": "add",
                "topics": ("t",),
                "allow_principal": ("User:a",),
                "resource_pattern_type": "MATCH",
            },
            "LITERAL or PREFIXED",
        ),
        ({"mode": "list", "operations": ("Fly",)}, "not a Operation"),
        (
            {"mode": "add", "user_principals": ("alice",), "allow_principal": ("User:b",)},
            "User:<name>",
        ),
        (
            {"mode": "remove", "topics": ("t",), "principal": "User:alice"},
            "--principal only narrows --list",
        ),
    ],
)
def test_the_command_refuses_what_cannot_be_meant(options: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        AclCommand(**options)  # type: ignore[arg-type]


def test_the_command_grants_on_delegation_tokens_and_users() -> None:
    """kafka-acls' --delegation-token and --user-principal (KIP-48, KIP-373)."""
    command = AclCommand(
        mode="add",
        allow_principal=("User:carol",),
        operations=("DescribeTokens", "CreateTokens"),
        user_principals=("User:alice",),
    )
    assert [(a.resource_type, a.resource_name, a.operation) for a in command.bindings()] == [
        (ResourceType.USER, "User:alice", Operation.CREATE_TOKENS),
        (ResourceType.USER, "User:alice", Operation.DESCRIBE_TOKENS),
    ]
    token = AclCommand(
        mode="add",
        allow_principal=("User:ops",),
        operations=("Describe",),
        delegation_tokens=("t1",),
    )
    assert [(a.resource_type, a.resource_name) for a in token.bindings()] == [
        (ResourceType.DELEGATION_TOKEN, "t1")
    ]
