"""The broker's authorizer deciding from its copy (no ZooKeeper): the principal is the
connection's, super users, and Kafka's rule for "some topic" (idempotent producers)."""

from __future__ import annotations

import contextvars

from broker.authorizer import Authorizer
from broker.config import load_config
from broker.server import PEER_HOST, PEER_PRINCIPAL
from protocol.acls import AclBinding, Operation, PatternType, Permission, ResourceType

T = ResourceType.TOPIC


def _authorizer(*overrides: str, acls: list[AclBinding] = ()) -> Authorizer:  # type: ignore[assignment]
    config = load_config(
        env={},
        overrides=[
            "broker.id=1",
            "authorizer.class.name=kafka.security.authorizer.AclAuthorizer",
            "super.users=User:admin;User:CN=ops\\,x",
            *overrides,
        ],
    )
    authorizer = Authorizer(None, config)
    for acl in acls:  # what a reload from ZooKeeper would leave
        key = (acl.resource_type, acl.resource_name)
        authorizer._literal[key] = (*authorizer._literal.get(key, ()), acl)
    return authorizer


def _as(principal: str, call: object, *args: object) -> bool:
    def run() -> bool:
        PEER_PRINCIPAL.set(principal)
        PEER_HOST.set("10.0.0.1")
        return call(*args)  # type: ignore[operator, no-any-return]

    return contextvars.copy_context().run(run)


def _acl(principal: str, op: Operation, name: str, permission: Permission) -> AclBinding:
    return AclBinding(T, name, PatternType.LITERAL, principal, "*", op, permission)


def test_the_connections_principal_and_super_users() -> None:
    authorizer = _authorizer(acls=[_acl("User:alice", Operation.READ, "t", Permission.ALLOW)])
    assert _as("User:alice", authorizer.allowed, Operation.READ, T, "t")
    assert not _as("User:bob", authorizer.allowed, Operation.READ, T, "t")
    assert not _as("", authorizer.allowed, Operation.READ, T, "t")  # User:ANONYMOUS
    assert _as("User:admin", authorizer.allowed, Operation.ALTER, T, "t")
    assert _as("User:CN=ops\\,x", authorizer.allowed, Operation.ALTER, T, "t")
    # a decision captured for one connection holds wherever it is asked later
    decide = _as("User:alice", authorizer.decider, Operation.READ, T)
    assert _as("User:bob", decide, "t")  # type: ignore[arg-type]
    assert Authorizer().allowed(Operation.ALTER, T, "t")  # no authorizer: all allowed


def test_write_on_some_topic_as_kafka_decides_it() -> None:
    """From a review: with allow.everyone.if.no.acl.found, idempotent producers were
    refused their producer id whenever no topic had an ACL."""
    open_ = _authorizer("allow.everyone.if.no.acl.found=true")
    assert _as("User:alice", open_.allowed_any_topic, Operation.WRITE)
    denied_everywhere = _authorizer(
        "allow.everyone.if.no.acl.found=true",
        acls=[_acl("User:alice", Operation.WRITE, "*", Permission.DENY)],
    )
    assert not _as("User:alice", denied_everywhere.allowed_any_topic, Operation.WRITE)
    closed = _authorizer(acls=[_acl("User:alice", Operation.WRITE, "orders", Permission.ALLOW)])
    assert _as("User:alice", closed.allowed_any_topic, Operation.WRITE)
    assert not _as("User:bob", closed.allowed_any_topic, Operation.WRITE)
