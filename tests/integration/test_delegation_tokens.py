"""Delegation tokens (KIP-48) on real brokers, with ACLs on: a SCRAM user makes a token
and a job logs in with it on any broker, as the user (the user's ACLs apply, nobody
else's); its renewer renews it and others may not; a token cannot make tokens, nor can a
connection with no login; expiring it, or letting it run out, ends its logins and the
brokers delete it; the command does the same with Kafka's flags and client properties."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client import (
    AclBinding,
    Admin,
    Consumer,
    NewTopic,
    Operation,
    PatternType,
    Permission,
    Producer,
    ResourceType,
    TopicPartition,
    UserScramCredentialUpsertion,
)
from protocol.errors import (
    DelegationTokenNotFoundError,
    DelegationTokenOwnerMismatchError,
    DelegationTokenRequestNotAllowedError,
    InvalidPrincipalTypeError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
)
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_acls import _SETTINGS as ACL_SETTINGS
from tests.integration.test_cli import COMMAND

pytestmark = pytest.mark.timeout(150)

_SETTINGS = {
    **ACL_SETTINGS,  # listeners PLAINTEXT (the brokers, the test's admin) and SASL_PLAINTEXT
    "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
    "super.users": "User:ANONYMOUS",
    "delegation.token.secret.key": "the-cluster-secret",
    "delegation.token.expiry.check.interval.ms": "500",
}


def _sasl(cluster: Cluster, broker: int | None = None) -> str:
    brokers = cluster.brokers.values() if broker is None else [cluster.brokers[broker]]
    return ",".join(f"127.0.0.1:{b.ports['SASL_PLAINTEXT']}" for b in brokers)


def _user(name: str) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": name,
        "sasl_plain_password": f"{name}-secret",
    }


def _token(token_id: str, password: str, mechanism: str = "SCRAM-SHA-256") -> dict[str, Any]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": token_id,
        "sasl_plain_password": password,
        "sasl_token_auth": True,
    }


async def _setup(cluster: Cluster) -> None:
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(name, "SCRAM-SHA-512", f"{name}-secret")
                for name in ("alice", "bob", "carol")
            ]
        )
        factor = len(cluster.brokers)
        await admin.create_topics([NewTopic("alices", 1, factor), NewTopic("others", 1, factor)])
        await admin.create_acls(
            [
                AclBinding(
                    ResourceType.TOPIC,
                    "alices",
                    PatternType.LITERAL,
                    "User:alice",
                    "*",
                    op,
                    Permission.ALLOW,
                )
                for op in (Operation.WRITE, Operation.READ, Operation.DESCRIBE)
            ]
        )


async def test_a_token_logs_in_as_its_owner_and_is_renewed_expired_and_swept(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(2, _SETTINGS)
    await _setup(cluster)
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:  # no login: refused
        with pytest.raises(DelegationTokenRequestNotAllowedError, match="no login"):
            await admin.create_delegation_token()
    async with Admin(bootstrap_servers=_sasl(cluster, 1), **_user("alice")) as admin:
        token = await admin.create_delegation_token(renewers=["User:bob"])
        with pytest.raises(InvalidPrincipalTypeError):
            await admin.create_delegation_token(renewers=["Group:ops"])
    assert token.owner == token.requester == "User:alice"
    assert token.renewers == ["User:bob"]
    assert token.issue_timestamp_ms < token.expiry_timestamp_ms <= token.max_timestamp_ms

    # a job with the token, on the other broker: it is alice there (her ACLs, no others)
    job = _token(token.token_id, token.password)
    # at once: the admin returned once every broker had the token (Kafka's returns when
    # the broker asked has it, and the others hear of it moments later)
    assert await _logs_in(_sasl(cluster, 2), job)
    async with Producer(bootstrap_servers=_sasl(cluster, 2), acks="all", **job) as producer:
        offsets = [(await producer.send_and_wait("alices", b"%d" % i)).offset for i in range(5)]
        assert offsets == list(range(5))
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait("others", b"not hers")
    consumer = Consumer(bootstrap_servers=_sasl(cluster), auto_offset_reset="earliest", **job)
    async with consumer:
        consumer.assign([TopicPartition("alices", 0)])
        got: list[bytes] = []
        while len(got) < 5:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(r.value for r in records)
    assert got == [b"%d" % i for i in range(5)]
    async with Admin(bootstrap_servers=_sasl(cluster), **job) as admin:  # no tokens from tokens
        with pytest.raises(DelegationTokenRequestNotAllowedError, match="delegation token"):
            await admin.create_delegation_token()
    wrong = _token(token.token_id, base64.b64encode(b"x" * 64).decode())
    with pytest.raises(SaslAuthenticationFailedError):
        async with Admin(bootstrap_servers=_sasl(cluster), request_timeout_ms=5000, **wrong):
            pass

    # its renewer renews it; another user may neither renew it nor see it
    async with Admin(bootstrap_servers=_sasl(cluster, 2), **_user("bob")) as admin:
        expiry = await admin.renew_delegation_token(token.hmac, 60_000)
        assert token.issue_timestamp_ms < expiry <= token.max_timestamp_ms
        assert [t.token_id for t in await admin.describe_delegation_tokens()] == [token.token_id]
    async with Admin(bootstrap_servers=_sasl(cluster, 1), **_user("carol")) as admin:
        with pytest.raises(DelegationTokenOwnerMismatchError):
            await admin.renew_delegation_token(token.hmac)
        assert await admin.describe_delegation_tokens() == []
        with pytest.raises(DelegationTokenNotFoundError):
            await admin.expire_delegation_token(b"\x00" * 64)
    async with Admin(bootstrap_servers=_sasl(cluster, 1), **_user("alice")) as admin:
        (seen,) = await admin.describe_delegation_tokens(["User:alice"])
        assert seen.expiry_timestamp_ms == expiry and seen.hmac == token.hmac
        renewed_by_bob = await admin.describe_delegation_tokens(["User:bob"])  # Kafka's filter
        assert [t.token_id for t in renewed_by_bob] == [token.token_id]
        assert await admin.describe_delegation_tokens(["User:carol"]) == []
        short = await admin.create_delegation_token(max_lifetime_ms=1_500)
        await admin.expire_delegation_token(token.hmac)  # at once: deleted
        assert [t.token_id for t in await admin.describe_delegation_tokens()] == [short.token_id]
    # and on every broker as expire_delegation_token returns
    assert not await _logs_in(_sasl(cluster, 2), job)

    # a token that runs out logs in no more, and the brokers delete it
    assert await _logs_in(_sasl(cluster, 1), _token(short.token_id, short.password))
    await asyncio.sleep(max(0.0, short.max_timestamp_ms / 1000 - _now_s()) + 0.1)
    assert not await _logs_in(_sasl(cluster, 1), _token(short.token_id, short.password))

    async def alices_tokens() -> list[Any]:
        async with Admin(bootstrap_servers=_sasl(cluster, 2), **_user("alice")) as admin:
            return await admin.describe_delegation_tokens()

    await _until(alices_tokens, lambda tokens: tokens == [])


async def _logs_in(bootstrap: str, login: dict[str, Any]) -> bool:
    try:
        async with Admin(bootstrap_servers=bootstrap, request_timeout_ms=5000, **login):
            return True
    except SaslAuthenticationFailedError:
        return False


def _now_s() -> float:
    return time.time()


def _run(*args: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEADWATER_BOOTSTRAP_SERVERS"}
    done = subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == rc, done
    return done


async def test_the_command_makes_renews_describes_and_expires_tokens(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """kafka-delegation-tokens' flags, with Kafka's client properties; a job's properties
    with tokenauth="true" log in as the token (and may not ask for tokens)."""
    cluster = make_cluster(1, _SETTINGS)
    await _setup(cluster)
    alice = tmp_path / "alice.properties"
    alice.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="alice" password="alice-secret";\n'
    )
    base = ["--bootstrap-server", _sasl(cluster), "--command-config", str(alice)]
    made = _run(*base, "delegation-tokens", "--create", "--renewer-principal", "User:bob")
    header, row = made.stdout.splitlines()
    assert header.split("\t")[:5] == ["TOKENID", "HMAC", "OWNER", "REQUESTER", "RENEWERS"]
    token_id, hmac, owner, requester, renewers, *_ = row.split("\t")
    assert (owner, requester, renewers) == ("User:alice", "User:alice", "User:bob")
    shown = _run(*base, "delegation-tokens", "--describe", "--owner-principal", "User:alice")
    assert [line.split("\t")[0] for line in shown.stdout.splitlines()[1:]] == [token_id]
    renewed = _run(
        *base, "delegation-tokens", "--renew", "--hmac", hmac, "--renew-time-period", "5000"
    )
    assert renewed.stdout.startswith("The token's expiry is now ")
    # KIP-373's ACL, with kafka-acls' flag: carol may see alice's tokens
    carol = tmp_path / "carol.properties"
    carol.write_text(alice.read_text().replace("alice", "carol"))
    as_carol = ["--bootstrap-server", _sasl(cluster), "--command-config", str(carol)]
    assert _run(*as_carol, "delegation-tokens", "--describe").stdout.splitlines()[1:] == []
    _run(
        "--bootstrap-server",
        cluster.bootstrap,
        "acls",
        "--add",
        "--allow-principal",
        "User:carol",
        "--operation",
        "DescribeTokens",
        "--user-principal",
        "User:alice",
    )
    seen = _run(*as_carol, "delegation-tokens", "--describe").stdout.splitlines()[1:]
    assert [line.split("\t")[0] for line in seen] == [token_id]

    job = tmp_path / "job.properties"
    job.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{token_id}" password="{hmac}" tokenauth="true";\n'
    )
    as_job = ["--bootstrap-server", _sasl(cluster), "--command-config", str(job)]
    refused = _run(*as_job, "delegation-tokens", "--describe", rc=1)
    assert "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED" in refused.stderr, refused
    assert refused.stderr.count("\n") == 1  # one line that says what to do
    _run(*base, "delegation-tokens", "--expire", "--hmac", hmac)
    assert _run(*base, "delegation-tokens", "--describe").stdout.splitlines()[1:] == []
    gone = _run(*as_job, "delegation-tokens", "--describe", rc=1)
    assert "SASL_AUTHENTICATION_FAILED" in gone.stderr or "credentials" in gone.stderr, gone
