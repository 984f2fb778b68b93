"""OAUTHBEARER against hostile or broken input (found in review): tokens and key sets
that are not what they claim (odd JSON types, times past a float's range, JSON nested
past the stack, ES signatures of the wrong length) are refused as any bad token is,
never an error out of the authenticator; one unusable key leaves the others usable; and
a login whose client goes away does not spoil the key read the others wait for."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import threading
import time
from typing import Any

import pytest

from broker.oauth import BearerChecker, JwksSource
from broker.sasl import Authenticator, sasl_listeners
from protocol.errors import SaslAuthenticationFailedError
from protocol.oauthbearer import KVSEP, Jwks, bearer_message, check_signed, parse_bearer_message
from protocol.sasl import SaslError
from tests.unit.test_oauthbearer import (
    CLAIMS,
    EC_KEY,
    JWKS_DOC,
    NOW,
    RSA_KEY,
    _b64,
    _jwk,
    _listener_config,
    _login,
    _sign,
)

DEEP = ("[" * 5000 + "]" * 5000).encode()


def _token(header: Any, claims: Any, signature: bytes = b"") -> str:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    c = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    return f"{_b64(h)}.{_b64(c)}.{_b64(signature)}"


def _now_claims() -> dict[str, Any]:
    now = time.time()
    return {"sub": "alice", "exp": now + 600, "iat": now}


def _unsecured_listener() -> Any:
    return sasl_listeners(_listener_config("connection.failed.authentication.delay.ms=0"), None)[
        "S"
    ]


def _signed_listener(jwks: bytes = JWKS_DOC) -> Any:
    config = _listener_config(
        "connection.failed.authentication.delay.ms=0",
        "sasl.oauthbearer.jwks.endpoint.url=https://idp.example/jwks",
    )
    listener = sasl_listeners(config, None)["S"]
    listener.bearer = BearerChecker(config, {}, JwksSource("u", 60_000, read=lambda _u: jwks))
    return listener


async def _refused_cleanly(listener: Any, token: str) -> None:
    """A token the broker cannot take: the error challenge, then SASL_AUTHENTICATION_FAILED
    -- never an exception out of the authenticator (which the server answers with
    UNKNOWN_SERVER_ERROR and a logged traceback)."""
    authenticator = Authenticator(listener, "peer")
    challenge, refusal = await _login(authenticator, bearer_message(token), KVSEP)
    assert challenge.error_code == 0 and bytes(challenge.auth_bytes)
    assert refusal.error_code == SaslAuthenticationFailedError.code
    assert authenticator.principal is None


# --- 1. a client's token raises something other than SaslError ------------------------

RAW_NONE = _b64(b'{"alg":"none"}')


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_token({"alg": "none"}, {"sub": "a", "exp": 10**400}), id="exp-10e400"),
        pytest.param(_token({"alg": "none"}, {"sub": "a", "exp": 1e308}), id="exp-1e308"),
        pytest.param(RAW_NONE + "." + _b64(b'{"sub":"a","exp":Infinity}') + ".", id="exp-Infinity"),
        pytest.param(RAW_NONE + "." + _b64(b'{"sub":"a","exp":NaN}') + ".", id="exp-NaN"),
        pytest.param(
            _token({"alg": "none"}, {"sub": "a", "exp": 2e9, "iat": 10**400}), id="iat-10e400"
        ),
        pytest.param(_token(DEEP, {"sub": "a"}), id="deep-header"),
        pytest.param(_token({"alg": "none"}, DEEP), id="deep-claims"),
    ],
)
async def test_unsecured_listener_refuses_odd_tokens_cleanly(token: str) -> None:
    await _refused_cleanly(_unsecured_listener(), token)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_token({"alg": ["RS256"], "kid": "k1"}, CLAIMS, b"x"), id="alg-list"),
        pytest.param(_token({"alg": {"a": 1}, "kid": "k1"}, CLAIMS, b"x"), id="alg-object"),
        pytest.param(_token(DEEP, CLAIMS, b"x"), id="deep-header"),  # in token_key_id
    ],
)
async def test_signed_listener_refuses_odd_tokens_cleanly(token: str) -> None:
    await _refused_cleanly(_signed_listener(), token)


# --- 2. a JWKS the broker cannot parse raises something other than SaslError ------------


@pytest.mark.parametrize(
    "jwks",
    [
        pytest.param(
            json.dumps({"keys": [{**_jwk(RSA_KEY, "k1"), "kid": ["k1"]}]}).encode(), id="kid-list"
        ),
        pytest.param(json.dumps({"keys": [{"kty": "EC", "crv": ["P-256"]}]}).encode(), id="crv"),
        pytest.param(b'{"keys": ' + DEEP + b"}", id="deep"),
    ],
)
async def test_a_bad_jwks_fails_the_login_cleanly(jwks: bytes) -> None:
    now = time.time()
    token = _sign(RSA_KEY, "RS256", {**CLAIMS, "exp": now + 600, "iat": now})
    await _refused_cleanly(_signed_listener(jwks), token)


async def test_a_jwks_read_failing_with_an_http_error_is_a_sasl_error() -> None:
    def read(_url: str) -> bytes:
        raise http.client.IncompleteRead(b"{", 100)  # a body cut short: not an OSError

    source = JwksSource("https://idp/jwks", 60_000, read=read)
    with pytest.raises(SaslError, match="cannot be read"):
        await source.keys("k1")


# --- 3. one key the broker cannot use voids the whole key set ---------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({**_jwk(EC_KEY, "x"), "y": _b64(b"\x01" * 32)}, id="ec-off-curve"),
        pytest.param({"kty": "RSA", "kid": "x", "x5c": ["MIIB..."]}, id="rsa-x5c-only"),
        pytest.param({**_jwk(RSA_KEY, "x"), "e": "AQ"}, id="rsa-e-1"),
    ],
)
def test_one_unusable_key_is_skipped_not_the_whole_set(bad: dict[str, Any]) -> None:
    # jose4j (Kafka's KIP-768 validator) ignores an individual JWK it cannot process
    jwks = Jwks.parse(json.dumps({"keys": [_jwk(RSA_KEY, "k1"), bad]}).encode())
    assert "k1" in jwks.keys


# --- 4. ES* signatures of the wrong length are taken ------------------------------------


def test_an_es256_signature_must_be_64_bytes() -> None:
    token = _sign(EC_KEY, "ES256", CLAIMS, "k2")
    head, claims, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    assert len(raw) == 64
    padded = b"\x00" + raw[:32] + b"\x00" + raw[32:]  # same r, s: another token string
    with pytest.raises(SaslError, match="signature"):
        check_signed(f"{head}.{claims}.{_b64(padded)}", Jwks.parse(JWKS_DOC), NOW)


# --- 5. a login cancelled while the JWKS is read breaks the others ----------------------


async def test_a_cancelled_login_does_not_cancel_the_key_read_of_the_others() -> None:
    release = threading.Event()
    reads = 0

    def read(_url: str) -> bytes:
        nonlocal reads
        reads += 1
        release.wait(5)
        return JWKS_DOC

    source = JwksSource("https://idp/jwks", 60_000, read=read)
    first = asyncio.create_task(source.keys("k1"))  # its client disconnects (task cancelled)
    await asyncio.sleep(0.05)
    second = asyncio.create_task(source.keys("k1"))  # another client, waiting for the read
    await asyncio.sleep(0.05)
    first.cancel()
    await asyncio.sleep(0.05)
    release.set()
    try:
        assert "k1" in (await second).keys  # the IdP answered: the keys are there
        assert "k1" in (await source.keys("k1")).keys
    finally:
        release.set()
    assert reads == 1


def test_a_huge_oauthbearer_item_is_not_echoed_whole() -> None:
    """From review 89: a refusal must not carry a hostile message whole."""
    with pytest.raises(SaslError) as refused:
        parse_bearer_message(b"n,,\x01" + b"k" * 1_000_000 + b"\x01\x01")
    assert len(str(refused.value)) < 1_000
