"""Delegation tokens against an in-memory ZooKeeper (the few ZkBridge methods
broker/tokens.py uses): what another broker's writes do to this broker's decisions, the
re-login of a token's connection, and Kafka's answers and znode. Found in review: renewals
and the sweep once decided on this broker's copy, so a token ended on another broker came
back to life here, and a token renewed there was deleted here."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import dataclasses
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

import broker.sasl
from broker.authorizer import Authorizer
from broker.sasl import Authenticator, sasl_listeners
from broker.server import PEER_LOGIN, PEER_PRINCIPAL
from broker.tokens import CHANGES, TOKENS, DelegationTokens, TokenInfo, TokenLogin
from broker.zk import CREATE, NodeExists, NoNode, VersionConflict, ZkConnectionLoss
from protocol.apis import (
    CreateDelegationTokenRequest,
    DescribeDelegationTokenRequest,
    ExpireDelegationTokenRequest,
    RenewDelegationTokenRequest,
    TokenPrincipal,
)
from protocol.errors import DelegationTokenExpiredError
from protocol.sasl import SaslError, ScramClient, ScramCredential, ScramServer
from tests.component.test_server_sasl import _Store
from tests.unit.test_delegation_tokens import _config, _scram_login, _Tokens


class _FakeZk:
    """Znodes in a dict: path -> (data, version, ctime)."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[bytes, int, int]] = {}
        self._seq = 0

    def _stat(self, path: str) -> Any:
        _, version, ctime = self.nodes[path]
        return SimpleNamespace(version=version, ctime=ctime)

    async def ensure_path(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.nodes.setdefault("/" + "/".join(parts[:i]), (b"", 0, int(time.time() * 1000)))

    async def get(self, path: str, watch: Any = None) -> tuple[bytes, Any]:
        if path not in self.nodes:
            raise NoNode(path)
        return self.nodes[path][0], self._stat(path)

    async def exists(self, path: str, watch: Any = None) -> Any:
        return self._stat(path) if path in self.nodes else None

    async def get_children(self, path: str, watch: Any = None) -> list[str]:
        if path not in self.nodes:
            raise NoNode(path)
        prefix = path.rstrip("/") + "/"
        return [
            p[len(prefix) :]
            for p in self.nodes
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]

    async def delete(self, path: str, *, version: int = -1, recursive: bool = False) -> None:
        if path not in self.nodes:
            raise NoNode(path)
        if version != -1 and self.nodes[path][1] != version:
            raise VersionConflict(path)
        del self.nodes[path]

    async def write_and_notify(
        self,
        path: str,
        value: bytes,
        *,
        version: int,
        notice_prefix: str,
        notice: bytes,
        delete: bool = False,
    ) -> None:
        parent = path.rsplit("/", 1)[0]
        if parent not in self.nodes or notice_prefix.rsplit("/", 1)[0] not in self.nodes:
            raise NoNode(path)
        if version == CREATE and not delete:
            if path in self.nodes:
                raise NodeExists(path)
            new_version = 0
        else:
            if path not in self.nodes:
                raise NoNode(path)
            if version != -1 and self.nodes[path][1] != version:
                raise VersionConflict(path)
            new_version = self.nodes[path][1] + 1
        now = int(time.time() * 1000)
        if delete:
            del self.nodes[path]
        else:
            self.nodes[path] = (value, new_version, self.nodes.get(path, (b"", 0, now))[2])
        self._seq += 1
        self.nodes[f"{notice_prefix}{self._seq:010d}"] = (notice, 0, now)

    def rewrite(self, token: TokenInfo) -> None:
        """Another broker's write of the token; this broker's watch has not fired yet."""
        path = f"{TOKENS}/{token.token_id}"
        _, version, ctime = self.nodes[path]
        self.nodes[path] = (token.to_json(), version + 1, ctime)


def _as(principal: str, login: str = "sasl") -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(PEER_LOGIN.set, login)
    context.run(PEER_PRINCIPAL.set, principal)
    return context


async def _run(context: contextvars.Context, coro: Any) -> Any:
    return await asyncio.create_task(coro, context=context)


async def _tokens(zk: _FakeZk, *extra: str) -> DelegationTokens:
    """A broker's tokens on ``zk`` (read, but no sweeper or watch task)."""
    tokens = DelegationTokens(
        zk,  # type: ignore[arg-type]
        _config("delegation.token.secret.key=s3cret", *extra),
        Authorizer(),
    )
    await tokens.reload()
    return tokens


async def _create(tokens: DelegationTokens, *renewers: str) -> Any:
    created = await _run(
        _as("User:alice"),
        tokens.create(
            CreateDelegationTokenRequest(
                renewers=[TokenPrincipal(principal_type="User", principal_name=r) for r in renewers]
            )
        ),
    )
    assert created.error_code == 0, created
    return created


def _stored(zk: _FakeZk, token_id: str) -> TokenInfo:
    path = f"{TOKENS}/{token_id}"
    return TokenInfo.from_json(path, zk.nodes[path][0])


# --- another broker's writes ----------------------------------------------------------------


async def test_the_sweep_does_not_delete_a_token_another_broker_just_renewed() -> None:
    zk = _FakeZk()
    tokens = await _tokens(zk)
    created = await _create(tokens)
    token = _stored(zk, created.token_id)
    # just before its expiry another broker renews it for a day; our copy has not heard yet
    renewed_at = token.expiry_ms - 1
    zk.rewrite(dataclasses.replace(token, expiry_ms=min(token.max_ms, renewed_at + 86_400_000)))
    # our sweep, a moment later, goes by the old expiry in its copy
    gone = await tokens.sweep(now_ms=token.expiry_ms + 1)
    assert gone == []
    assert f"{TOKENS}/{created.token_id}" in zk.nodes  # the renewed token is still there


async def test_a_token_expired_on_another_broker_is_not_renewed_here() -> None:
    zk = _FakeZk()
    tokens = await _tokens(zk)
    created = await _create(tokens, "bob")
    token = _stored(zk, created.token_id)
    # the owner ended it on another broker: its expiry is past; our copy has not heard yet
    zk.rewrite(dataclasses.replace(token, expiry_ms=int(time.time() * 1000) - 1_000))
    # bob (a renewer) renews it on this broker
    answer = await _run(
        _as("User:bob"), tokens.renew(RenewDelegationTokenRequest(hmac=created.hmac))
    )
    assert answer.error_code == DelegationTokenExpiredError.code
    assert _stored(zk, created.token_id).expiry_ms < int(time.time() * 1000)


async def test_an_expiry_on_another_broker_is_not_undone_by_a_renewal_here() -> None:
    """The same race with two real brokers: the owner's ExpireDelegationToken (period 0)
    on one; a renewal decided on the other's stale copy is written over it at its new
    version (the version is read fresh, the znode's data is not)."""
    zk = _FakeZk()
    tokens = await _tokens(zk)
    created = await _create(tokens, "bob")
    other = await _tokens(zk)  # a second broker on the same ZooKeeper
    expired = await _run(
        _as("User:alice"),
        other.expire(ExpireDelegationTokenRequest(hmac=created.hmac, expiry_time_period_ms=0)),
    )
    assert expired.error_code == 0
    await asyncio.sleep(0.01)  # past its new expiry
    # this broker's watch has not fired yet: bob renews here
    answer = await _run(
        _as("User:bob"), tokens.renew(RenewDelegationTokenRequest(hmac=created.hmac))
    )
    assert answer.error_code == DelegationTokenExpiredError.code


class _LosingZk(_FakeZk):
    """Its next write's answer is lost with the connection: the write made first
    (``made``), or not."""

    def __init__(self) -> None:
        super().__init__()
        self.lose: bool | None = None  # None: answer; True/False: lose, made or not
        self.read_backs = 0
        self.lagging = False

    async def read_back(self, path: str) -> bytes | None:
        self.read_backs += 1
        if self.lagging:
            self.lagging = False  # a server behind the lost write, once
            return None
        return self.nodes[path][0] if path in self.nodes else None

    async def write_and_notify(self, path: str, value: bytes, **kwargs: Any) -> None:
        lose, self.lose = self.lose, None
        if lose is not False:
            await super().write_and_notify(path, value, **kwargs)
        if lose is not None:
            raise ZkConnectionLoss(f"the connection dropped with {path} out (injected)")


def _notices(zk: _FakeZk) -> int:
    return sum(p.startswith(CHANGES + "/") for p in zk.nodes)


@pytest.mark.parametrize("made", [True, False], ids=["made", "not-made"])
async def test_token_writes_whose_answer_was_lost_are_answered_done_and_made_once(
    made: bool,
) -> None:
    """Create, renew and expire, each written with its answer lost (the connection to
    ZooKeeper dropped with it out): the token's znode says whether it was made; made,
    it is answered done; not, it is sent again. One notice each, either way; before,
    each was KAFKA_STORAGE_ERROR ("may or may not")."""
    zk = _LosingZk()
    tokens = await _tokens(zk)
    zk.lose = made
    created = await _create(tokens, "bob")
    assert (_stored(zk, created.token_id).owner, _notices(zk)) == ("User:alice", 1)
    await tokens.reload()
    zk.lose = made
    renewed = await _run(
        _as("User:bob"),
        tokens.renew(RenewDelegationTokenRequest(hmac=created.hmac, renew_period_ms=60_000)),
    )
    assert renewed.error_code == 0, renewed
    stored = _stored(zk, created.token_id)
    assert (stored.expiry_ms, _notices(zk)) == (renewed.expiry_timestamp_ms, 2)
    await tokens.reload()
    zk.lose = made
    expired = await _run(
        _as("User:alice"),
        tokens.expire(ExpireDelegationTokenRequest(hmac=created.hmac, expiry_time_period_ms=-1)),
    )
    assert expired.error_code == 0, expired
    assert (f"{TOKENS}/{created.token_id}" in zk.nodes, _notices(zk)) == (False, 3)
    assert zk.read_backs == 3


async def test_a_token_made_though_a_read_missed_it_is_not_taken_for_a_clash() -> None:
    """Its answer lost, then read from a server behind the write: sent again, the create
    finds the token there, holding its bytes: made (not "a token id clashed")."""
    zk = _LosingZk()
    tokens = await _tokens(zk)
    zk.lose, zk.lagging = True, True
    created = await _create(tokens)
    assert (_stored(zk, created.token_id).owner, _notices(zk)) == ("User:alice", 1)


# --- re-authentication ------------------------------------------------------------------------


async def test_a_password_re_login_after_a_token_login_is_no_longer_a_token_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker.sasl, "_MIN_REAUTH_INTERVAL_MS", 0)
    listener = sasl_listeners(
        _config("connections.max.reauth.ms=3600000"),
        _Store(),  # type: ignore[arg-type]
    )["S"]
    password = base64.b64encode(b"h" * 64).decode()
    expiry = int(time.time() * 1000) + 60_000
    listener.tokens = _Tokens(
        TokenLogin(ScramCredential.make("SCRAM-SHA-512", password), "User:alice", expiry)
    )
    authenticator = Authenticator(listener, "peer")
    token_client = ScramClient("SCRAM-SHA-512", "tok", password, extensions={"tokenauth": "true"})
    assert [a.error_code for a in await _scram_login(authenticator, token_client)] == [0, 0]
    assert authenticator.by_token
    # KIP-368: the same principal logs in again on the connection, with its own password
    password_client = ScramClient("SCRAM-SHA-512", "alice", "alice-pw")
    assert [a.error_code for a in await _scram_login(authenticator, password_client)] == [0, 0]
    assert authenticator.principal == "User:alice"
    # the server sets PEER_LOGIN from by_token: still "token" refuses her token requests
    assert not authenticator.by_token


# --- Kafka's answers and znode ----------------------------------------------------------------


async def test_expiring_at_once_removes_a_token_past_its_expiry_as_kafka_does() -> None:
    """Kafka's expireToken: a negative period removes the token before any expiry check
    (only renew, and expire with a period, answer DELEGATION_TOKEN_EXPIRED)."""
    zk = _FakeZk()
    tokens = await _tokens(zk, "delegation.token.expiry.time.ms=1")
    created = await _create(tokens)
    await asyncio.sleep(0.01)  # past its expiry (1 ms), long before its max (7 days)
    answer = await _run(
        _as("User:alice"),
        tokens.expire(ExpireDelegationTokenRequest(hmac=created.hmac, expiry_time_period_ms=-1)),
    )
    assert answer.error_code == 0
    assert f"{TOKENS}/{created.token_id}" not in zk.nodes


async def test_describing_by_owner_also_finds_the_tokens_that_user_renews() -> None:
    """Kafka's filterToken: an owners filter keeps a token if one of the owners given is
    its owner, requester or renewer (TokenInformation.ownerOrRenewer)."""
    zk = _FakeZk()
    tokens = await _tokens(zk)
    created = await _create(tokens, "bob")
    described = await _run(
        _as("User:bob"),
        tokens.describe(
            DescribeDelegationTokenRequest(
                owners=[TokenPrincipal(principal_type="User", principal_name="bob")]
            )
        ),
    )
    assert [t.token_id for t in described.tokens] == [created.token_id]


def test_kafkas_token_znode_has_its_principals_sanitized() -> None:
    """Kafka's DelegationTokenManagerZk.toJsonCompatibleMap writes owner, tokenRequester and
    renewers through Sanitizer.sanitize (URL-encoded: ':' is %3A) and fromBytes reads them
    back through Sanitizer.desanitize."""
    kafkas = (
        b'{"version":3,"owner":"User%3Aalice","tokenRequester":"User%3Aadmin",'
        b'"renewers":["User%3Abob"],"issueTimestamp":1,"maxTimestamp":9,'
        b'"expiryTimestamp":5,"tokenId":"tok"}'
    )
    token = TokenInfo.from_json("/p", kafkas)
    assert (token.owner, token.requester, token.renewers) == (
        "User:alice",
        "User:admin",
        ("User:bob",),
    )
    assert token.may_renew("User:bob")
    mine = TokenInfo("tok", "User:alice", "User:admin", ("User:bob",), 1, 5, 9)
    written = json.loads(mine.to_json())
    assert written["owner"] == "User%3Aalice" and written["renewers"] == ["User%3Abob"]


def test_a_huge_malformed_extension_is_not_echoed_whole() -> None:
    """Before any login, a client-first-message may be socket.request.max.bytes (100 MB):
    its refusal (logged as sasl.authentication_failed, and sent back) must not carry it."""
    with pytest.raises(SaslError) as refused:
        ScramServer("SCRAM-SHA-256").first(b"n,,n=a,r=b," + b"x" * 1_000_000)
    assert len(str(refused.value)) < 1_000


# --- the copy -----------------------------------------------------------------------------


class _CountingZk(_FakeZk):
    def __init__(self) -> None:
        super().__init__()
        self.token_reads: list[str] = []
        self.listed_then_purged: list[str] = []  # notifications gone between list and read

    async def get_children(self, path: str, watch: Any = None) -> list[str]:
        names = await super().get_children(path, watch)
        return names + (self.listed_then_purged if path.endswith("token_changes") else [])

    async def get(self, path: str, watch: Any = None) -> tuple[bytes, Any]:
        if path.startswith(TOKENS + "/"):
            self.token_reads.append(path.rsplit("/", 1)[1])
        return await super().get(path, watch)


async def test_a_change_costs_the_other_brokers_a_read_of_its_token_alone() -> None:
    """Kafka's: a notification names its token, and only that token is read again (not
    every token at each change); a new ZooKeeper session, or a notification purged before
    it was read, reads them all."""
    zk = _CountingZk()
    here = await _tokens(zk)
    made = [await _create(here) for _ in range(5)]
    other = await _tokens(zk)  # the other broker: every token at its start
    assert len(other._tokens) == 5
    renewed = await _run(
        _as("User:alice"), here.renew(RenewDelegationTokenRequest(hmac=made[0].hmac))
    )
    assert renewed.error_code == 0
    zk.token_reads.clear()
    await other.reload()  # its watch fired
    assert zk.token_reads == [made[0].token_id]
    assert other._tokens[made[0].token_id].expiry_ms == renewed.expiry_timestamp_ms
    expired = await _run(
        _as("User:alice"),
        here.expire(ExpireDelegationTokenRequest(hmac=made[1].hmac, expiry_time_period_ms=-1)),
    )
    assert expired.error_code == 0
    zk.token_reads.clear()
    await other.reload()
    assert zk.token_reads == [made[1].token_id] and made[1].token_id not in other._tokens
    # a notification purged unread: everything is read again
    await _create(here)
    zk.listed_then_purged.append("token_change_9999999999")
    zk.token_reads.clear()
    await other.reload()
    assert len(other._tokens) == 5 and len(zk.token_reads) == 5  # 4 left + the new one
    # a new session: read whole again
    other._on_session("CONNECTED")
    zk.token_reads.clear()
    await other.reload()
    assert len(zk.token_reads) == 5


# --- found in review 89: notifications numbered anew, a session during a whole pass ----------


def _changes_made_again(zk: _FakeZk) -> None:
    """/delegation_token/token_changes deleted with its children and made again (an
    operator's deleteall, a ZooKeeper restored from a snapshot, _write's own ensure_path
    after a parent vanished): ZooKeeper numbers its sequential children by the parent's
    cversion, so from 0000000000 again."""
    for path in [p for p in zk.nodes if p.startswith(CHANGES)]:
        del zk.nodes[path]
    zk.nodes[CHANGES] = (b"", 0, 0)
    zk._seq = 0


async def test_a_token_made_after_the_notifications_are_numbered_anew_is_seen() -> None:
    zk = _FakeZk()
    here = await _tokens(zk)
    for _ in range(3):
        await _create(here)  # token_change_0000000001..3: _last_sequence 3 on both
    other = await _tokens(zk)
    _changes_made_again(zk)
    made = await _create(here)  # token_change_0000000001 (its watch fired on the others)
    await other.reload()
    assert made.token_id in here._tokens  # (the broker that made it, too)
    assert made.token_id in other._tokens


async def test_a_token_expired_after_the_notifications_are_numbered_anew_cannot_log_in() -> None:
    zk = _FakeZk()
    here = await _tokens(zk)
    made = [await _create(here) for _ in range(3)]
    other = await _tokens(zk)
    _changes_made_again(zk)
    # the owner ends a leaked token at once: its znode is deleted (notification 0000000001)
    answer = await _run(
        _as("User:alice"),
        here.expire(ExpireDelegationTokenRequest(hmac=made[0].hmac, expiry_time_period_ms=-1)),
    )
    assert answer.error_code == 0
    await other.reload()
    # ... and neither broker logs it in any more
    assert here.login(made[0].token_id, "SCRAM-SHA-512") is None
    assert other.login(made[0].token_id, "SCRAM-SHA-512") is None


class _SessionMidPassZk(_FakeZk):
    """A new ZooKeeper session reported while a whole pass reads its tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.during_whole_read: Any = None

    async def get(self, path: str, watch: Any = None) -> tuple[bytes, Any]:
        if path.startswith(TOKENS + "/") and self.during_whole_read is not None:
            hook, self.during_whole_read = self.during_whole_read, None
            hook()
        return await super().get(path, watch)


async def test_a_new_session_reported_during_a_whole_pass_still_asks_for_one() -> None:
    zk = _SessionMidPassZk()
    here = await _tokens(zk)
    for _ in range(2):
        await _create(here)
    here._on_session("CONNECTED")  # a pass reading every token
    zk.during_whole_read = lambda: here._on_session("CONNECTED")  # ... and another session
    await here.reload()
    assert here._whole_needed  # the second session asks for another whole pass
