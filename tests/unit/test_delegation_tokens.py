"""Delegation tokens without ZooKeeper: Kafka's token znode and HMAC, the SCRAM login
with ``tokenauth=true`` (as the token's owner, for as long as the token lasts), and the
refusals that come before any write (tokens off; a connection with no login or a
token's asking for tokens)."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from broker.authorizer import Authorizer
from broker.sasl import Authenticator, sasl_listeners
from broker.server import PEER_LOGIN, PEER_PRINCIPAL
from broker.tokens import DelegationTokens, TokenInfo, TokenLogin, new_token_id, token_hmac
from broker.zk import CorruptZnode
from protocol.apis import (
    ApiKey,
    CreateDelegationTokenRequest,
    DescribeDelegationTokenRequest,
    ExpireDelegationTokenRequest,
    RenewDelegationTokenRequest,
    SaslAuthenticateRequest,
    SaslHandshakeRequest,
)
from protocol.errors import (
    DelegationTokenAuthDisabledError,
    DelegationTokenRequestNotAllowedError,
    SaslAuthenticationFailedError,
)
from protocol.sasl import ScramClient, ScramCredential, ScramServer
from tests.unit.test_oauthbearer import _listener_config


def _config(*extra: str) -> Any:
    return _listener_config(
        "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512",
        "connection.failed.authentication.delay.ms=0",
        *extra,
    )


def test_a_token_is_stored_as_kafka_stores_it() -> None:
    token = TokenInfo("tok", "User:alice", "User:admin", ("User:bob",), 1, 5, 9)
    assert json.loads(token.to_json()) == {  # principals through Kafka's Sanitizer
        "version": 3,
        "owner": "User%3Aalice",
        "tokenRequester": "User%3Aadmin",
        "renewers": ["User%3Abob"],
        "issueTimestamp": 1,
        "maxTimestamp": 9,
        "expiryTimestamp": 5,
        "tokenId": "tok",
    }
    assert TokenInfo.from_json("/p", token.to_json()) == token
    # an older version (Kafka 2.x) has no requester: the owner asked for it
    old = (
        b'{"version":1,"owner":"User:a","renewers":[],"issueTimestamp":1,'
        b'"maxTimestamp":3,"expiryTimestamp":2,"tokenId":"t"}'
    )
    assert TokenInfo.from_json("/p", old).requester == "User:a"
    with pytest.raises(CorruptZnode, match="not a delegation token"):
        TokenInfo.from_json("/p", b'{"version":3}')
    assert token.may_renew("User:bob") and token.may_renew("User:admin")
    assert not token.may_renew("User:carol")
    assert not token.expired(5) and token.expired(6)


def test_the_hmac_is_hmac_sha512_of_the_id_and_ids_are_kafkas_form() -> None:
    assert token_hmac("key", "id") == hmac.new(b"key", b"id", hashlib.sha512).digest()
    ids = {new_token_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 22 and "=" not in i for i in ids)


def test_a_scram_client_first_message_carries_kafkas_extensions() -> None:
    client = ScramClient("SCRAM-SHA-256", "tok", "pw", extensions={"tokenauth": "true"})
    assert client.first().endswith(b",tokenauth=true")
    server = ScramServer("SCRAM-SHA-256")
    assert server.first(client.first()) == "tok"
    assert server.extensions == {"tokenauth": "true"}
    credential = ScramCredential.make("SCRAM-SHA-256", "pw")
    client.verify(server.final(client.final(server.challenge(credential))))
    with pytest.raises(Exception, match="not key=value"):
        ScramServer("SCRAM-SHA-256").first(b"n,,n=tok,r=abc,tokenauth")


class _Tokens:
    def __init__(self, login: TokenLogin | None) -> None:
        self.asked: list[tuple[str, str]] = []
        self._login = login

    def login(self, token_id: str, mechanism: str) -> TokenLogin | None:
        self.asked.append((token_id, mechanism))
        return self._login


async def _scram_login(authenticator: Authenticator, client: ScramClient) -> list[Any]:
    await authenticator.handle(
        ApiKey.SASL_HANDSHAKE, SaslHandshakeRequest(mechanism="SCRAM-SHA-512")
    )
    first = await authenticator.handle(
        ApiKey.SASL_AUTHENTICATE, SaslAuthenticateRequest(auth_bytes=client.first())
    )
    if first.error_code:
        return [first]
    final = await authenticator.handle(
        ApiKey.SASL_AUTHENTICATE,
        SaslAuthenticateRequest(auth_bytes=client.final(bytes(first.auth_bytes))),
    )
    return [first, final]


async def test_a_token_logs_in_as_its_owner_until_it_expires() -> None:
    listener = sasl_listeners(_config("connections.max.reauth.ms=3600000"), None)["S"]
    password = base64.b64encode(b"h" * 64).decode()
    expiry = int(time.time() * 1000) + 60_000
    login = TokenLogin(ScramCredential.make("SCRAM-SHA-512", password), "User:alice", expiry)
    listener.tokens = tokens = _Tokens(login)
    authenticator = Authenticator(listener, "peer")
    client = ScramClient("SCRAM-SHA-512", "tok", password, extensions={"tokenauth": "true"})
    answers = await _scram_login(authenticator, client)
    assert [a.error_code for a in answers] == [0, 0]
    assert authenticator.principal == "User:alice" and authenticator.by_token
    assert tokens.asked == [("tok", "SCRAM-SHA-512")]
    # the session ends with the token (the hour of connections.max.reauth.ms is longer)
    assert authenticator.expires_ms is not None
    assert authenticator.expires_ms - time.monotonic() * 1000 <= 60_000 + 1_000


async def test_an_unknown_token_or_one_without_tokens_is_refused_as_a_bad_password() -> None:
    for tokens in (_Tokens(None), None):
        listener = sasl_listeners(_config(), None)["S"]
        listener.tokens = tokens
        authenticator = Authenticator(listener, "peer")
        client = ScramClient("SCRAM-SHA-512", "tok", "pw", extensions={"tokenauth": "true"})
        [refused] = await _scram_login(authenticator, client)
        assert refused.error_code == SaslAuthenticationFailedError.code
        assert "invalid credentials" in (refused.error_message or "")
        assert authenticator.principal is None and not authenticator.by_token


def _in_context(login: str, principal: str = "User:alice") -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(PEER_LOGIN.set, login)
    context.run(PEER_PRINCIPAL.set, principal)
    return context


async def _all_four(tokens: DelegationTokens, login: str) -> list[Any]:
    calls = [
        lambda: tokens.create(CreateDelegationTokenRequest()),
        lambda: tokens.renew(RenewDelegationTokenRequest(hmac=b"x")),
        lambda: tokens.expire(ExpireDelegationTokenRequest(hmac=b"x")),
        lambda: tokens.describe(DescribeDelegationTokenRequest()),
    ]
    context = _in_context(login)
    return [await asyncio.create_task(call(), context=context) for call in calls]


async def test_without_a_secret_every_token_api_says_tokens_are_off() -> None:
    tokens = DelegationTokens(None, _config(), Authorizer())
    assert not tokens.enabled
    for answer in await _all_four(tokens, "sasl"):
        assert answer.error_code == DelegationTokenAuthDisabledError.code
        assert "delegation.token.secret.key" in answer.error_message
    assert tokens.login("tok", "SCRAM-SHA-512") is None


@pytest.mark.parametrize(("login", "said"), [("", "no login"), ("token", "delegation token")])
async def test_no_login_or_a_tokens_login_may_not_ask_for_tokens(login: str, said: str) -> None:
    tokens = DelegationTokens(None, _config("delegation.token.secret.key=s"), Authorizer())
    for answer in await _all_four(tokens, login):
        assert answer.error_code == DelegationTokenRequestNotAllowedError.code
        assert said in answer.error_message


def test_the_secret_is_never_shown() -> None:
    from broker.config import is_secret

    assert is_secret("delegation.token.secret.key")
