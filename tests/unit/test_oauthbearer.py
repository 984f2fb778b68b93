"""SASL/OAUTHBEARER (RFC 7628; Kafka's KIP-255, KIP-768): the client's message, the checks
of unsecured and signed tokens, the broker's reading of a JWKS, its authenticator's
exchange, and the client's settings."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from broker.config import ConfigError, load_config
from broker.oauth import BearerChecker, JwksSource
from broker.sasl import Authenticator, sasl_listeners
from client.errors import ConfigurationError
from client.security import UnsecuredTokenProvider, security_for, settings_from_properties
from protocol.apis import ApiKey, SaslAuthenticateRequest, SaslHandshakeRequest
from protocol.errors import SaslAuthenticationFailedError
from protocol.oauthbearer import (
    KVSEP,
    InsufficientScope,
    Jwks,
    bearer_message,
    check_signed,
    check_unsecured,
    parse_bearer_message,
    unsecured_token,
)
from protocol.sasl import SaslError

NOW = 1_800_000_000_000  # ms


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(key: Any, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        n, e = numbers.n, numbers.e
        return {
            "kty": "RSA",
            "kid": kid,
            "n": _b64(n.to_bytes((n.bit_length() + 7) // 8, "big")),
            "e": _b64(e.to_bytes((e.bit_length() + 7) // 8, "big")),
        }
    size = (key.curve.key_size + 7) // 8
    return {
        "kty": "EC",
        "kid": kid,
        "crv": {256: "P-256", 384: "P-384", 521: "P-521"}[key.curve.key_size],
        "x": _b64(numbers.x.to_bytes(size, "big")),
        "y": _b64(numbers.y.to_bytes(size, "big")),
    }


def _sign(key: Any, alg: str, claims: dict[str, Any], kid: str | None = "k1") -> str:
    """A compact JWS, as an identity provider signs one."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if alg.startswith("RS"):
        signature = key.sign(signing.encode(), padding.PKCS1v15(), digest)
    elif alg.startswith("PS"):
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        signature = key.sign(signing.encode(), pss, digest)
    else:
        r, s = decode_dss_signature(key.sign(signing.encode(), ec.ECDSA(digest)))
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return f"{signing}.{_b64(signature)}"


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS_DOC = json.dumps(
    {"keys": [_jwk(RSA_KEY, "k1"), _jwk(EC_KEY, "k2"), {"kty": "oct", "k": "c2VjcmV0"}]}
).encode()
CLAIMS = {
    "sub": "alice",
    "exp": NOW / 1000 + 600,
    "iat": NOW / 1000,
    "aud": ["kafka"],
    "iss": "idp",
}


# --- the client's message ----------------------------------------------------------


def test_the_clients_message_as_rfc_7628_writes_it() -> None:
    message = bearer_message("abc.def.", authzid="alice", extensions={"traceId": "7"})
    assert message == b"n,a=alice,\x01auth=Bearer abc.def.\x01traceId=7\x01\x01"
    parsed = parse_bearer_message(message)
    assert (parsed.token, parsed.authzid, parsed.extensions) == (
        "abc.def.",
        "alice",
        {"traceId": "7"},
    )
    assert "abc" not in repr(parsed)  # never the token in a log
    assert parse_bearer_message(b"n,,\x01auth=bearer t\x01\x01").token == "t"


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (b"y,,\x01auth=Bearer t\x01\x01", "does not start with 'n,,'"),
        (b"n,,\x01auth=Bearer t\x01", "0x01-separated"),
        (b"n,,\x01host=h\x01\x01", "no 'auth=Bearer <token>'"),
        (b"n,,\x01auth=Basic dXNlcg\x01\x01", "no 'auth=Bearer <token>'"),
        (b"n,,\x01auth=Bearer t\x01bad-key=1\x01\x01", "extension 'bad-key'"),
        (b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01", "not one key=value"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_a_malformed_message_is_a_clear_error(message: bytes, problem: str) -> None:
    with pytest.raises(SaslError, match=problem):
        parse_bearer_message(message)


# --- unsecured tokens --------------------------------------------------------------


def test_an_unsecured_token_is_taken_for_what_it_claims() -> None:
    token = unsecured_token("alice", NOW, lifetime_s=60, claims={"scope": ["read", "write"]})
    checked = check_unsecured(token, NOW + 1000, required_scope=["read"])
    assert (checked.principal, checked.expires_ms, checked.scope) == (
        "alice",
        NOW + 60_000,
        frozenset({"read", "write"}),
    )
    custom = unsecured_token("bob", NOW, principal_claim="user")
    assert check_unsecured(custom, NOW, principal_claim="user").principal == "bob"


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    return f"{_b64(json.dumps({'alg': alg}).encode())}.{_b64(json.dumps(claims).encode())}."


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (unsecured_token("alice", NOW - 7_200_000), "has expired"),
        (_unsigned({"sub": "alice"}), "no 'exp' claim"),
        (_unsigned({"sub": "alice", "exp": "soon"}), "'exp' claim is not a time in seconds"),
        (_unsigned({"exp": NOW / 1000 + 60}), "'sub' claim .* is missing"),
        (_unsigned({"sub": "a", "exp": NOW / 1000 + 60, "iat": NOW / 1000 + 60}), "in the future"),
        (_unsigned({"sub": "a", "exp": NOW / 1000 + 60}, alg="RS256"), "unsecured .* only"),
        (_unsigned({"sub": "a", "exp": NOW / 1000 + 60, "scope": 7}), "not a scope"),
        ("not-a-jwt", "is not a JWT"),
        (f"{_b64(b'no json')}.e30.", "header is not JSON"),
    ],
)
def test_an_unsecured_token_that_does_not_hold_is_refused(token: str, problem: str) -> None:
    with pytest.raises(SaslError, match=problem):
        check_unsecured(token, NOW)


def test_a_missing_required_scope_is_insufficient_scope() -> None:
    token = unsecured_token("alice", NOW, claims={"scope": "read"})
    with pytest.raises(InsufficientScope) as refused:
        check_unsecured(token, NOW, required_scope=["read", "write"])
    assert refused.value.missing == ["write"]


# --- signed tokens -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [
        (RSA_KEY, "RS256", "k1"),
        (RSA_KEY, "PS384", "k1"),
        (RSA_KEY, "RS512", "k1"),
        (EC_KEY, "ES256", "k2"),
    ],
)
def test_a_token_signed_by_a_key_of_the_set_is_taken(key: Any, alg: str, kid: str) -> None:
    jwks = Jwks.parse(JWKS_DOC)
    assert set(jwks.keys) == {"k1", "k2"}  # the symmetric key is no key to check with
    token = _sign(key, alg, CLAIMS, kid)
    checked = check_signed(token, jwks, NOW, expected_audience=["kafka"], expected_issuer="idp")
    assert (checked.principal, checked.expires_ms) == ("alice", NOW + 600_000)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: _sign(OTHER_KEY, "RS256", CLAIMS), "signature does not verify"),
        (lambda: _sign(RSA_KEY, "RS256", CLAIMS, kid="k9"), "no key 'k9'"),
        (lambda: _sign(RSA_KEY, "RS256", CLAIMS, kid=None), "no key None"),
        (lambda: _sign(RSA_KEY, "RS256", CLAIMS, kid="k2"), "not a key for RS256"),
        (lambda: _sign(RSA_KEY, "RS256", {**CLAIMS, "aud": "other"}), "audience"),
        (lambda: _sign(RSA_KEY, "RS256", {**CLAIMS, "iss": "evil"}), "expected issuer"),
        (lambda: _sign(RSA_KEY, "RS256", {**CLAIMS, "exp": NOW / 1000 - 60}), "has expired"),
        (lambda: _sign(RSA_KEY, "RS256", {**CLAIMS, "nbf": NOW / 1000 + 60}), "'nbf' is in"),
        (lambda: unsecured_token("alice", NOW), "algorithm 'none' is not one"),
        (lambda: _sign(RSA_KEY, "RS256", {**CLAIMS, "iat": None}), "no 'iat' claim"),
        (lambda: _tampered(_sign(RSA_KEY, "RS256", CLAIMS)), "signature does not verify"),
    ],
)
def test_a_signed_token_that_does_not_hold_is_refused(
    make: Callable[[], str], problem: str
) -> None:
    with pytest.raises(SaslError, match=problem):
        check_signed(
            make(),
            Jwks.parse(JWKS_DOC),
            NOW,
            expected_audience=["kafka"],
            expected_issuer="idp",
            clock_skew_ms=0,
        )


def _tampered(token: str) -> str:
    header, _claims, signature = token.split(".")
    claims = _b64(json.dumps({**CLAIMS, "sub": "admin"}).encode())
    return f"{header}.{claims}.{signature}"


def test_a_set_of_one_key_checks_a_token_without_a_kid() -> None:
    jwks = Jwks.parse(json.dumps({"keys": [_jwk(RSA_KEY, "only")]}).encode())
    assert check_signed(_sign(RSA_KEY, "RS256", CLAIMS, kid=None), jwks, NOW).principal == "alice"


@pytest.mark.parametrize(
    ("document", "problem"),
    [(b"{", "not JSON"), (b"[]", 'no "keys" list')],
)
def test_a_bad_jwks_is_a_clear_error(document: bytes, problem: str) -> None:
    with pytest.raises(SaslError, match=problem):
        Jwks.parse(document)


def test_a_key_that_cannot_be_used_is_left_out_and_said_why() -> None:
    jwks = Jwks.parse(
        json.dumps({"keys": [{"kty": "RSA", "kid": "x"}, _jwk(RSA_KEY, "k1")]}).encode()
    )
    assert list(jwks.keys) == ["k1"]
    assert jwks.skipped == ["'x': a JWKS key has no 'e'"]


# --- the broker's key set ------------------------------------------------------------


class _Provider:
    """The identity provider's JWKS endpoint, and a clock."""

    def __init__(self) -> None:
        self.document: bytes | Exception = JWKS_DOC
        self.reads = 0
        self.now = 1000.0

    def read(self, url: str) -> bytes:
        self.reads += 1
        if isinstance(self.document, Exception):
            raise self.document
        return self.document


async def test_the_key_set_is_read_when_due_or_lacking_a_key_at_most_so_often() -> None:
    idp = _Provider()
    source = JwksSource("https://idp/jwks", 60_000, clock=lambda: idp.now, read=idp.read)
    assert set((await source.keys()).keys) == {"k1", "k2"} and idp.reads == 1
    await source.keys("k1")
    assert idp.reads == 1  # not due
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.document = json.dumps({"keys": [_jwk(rotated, "k3")]}).encode()
    idp.now += 1  # a token naming a key not seen: read at once ...
    assert set((await source.keys("k3")).keys) == {"k3"} and idp.reads == 2
    idp.now += 0.5
    await source.keys("k-unknown")  # ... but not two reads within a second
    assert idp.reads == 2
    idp.now += 0.5
    await source.keys("k-unknown")
    assert idp.reads == 3
    for _ in range(5):  # nor one per token naming the same unknown key
        idp.now += 1
        await source.keys("k-unknown")
    assert idp.reads == 3
    idp.now += 5
    await source.keys("k-unknown")
    assert idp.reads == 4
    idp.document = OSError("connection refused")
    idp.now += 60  # due, and the read fails: the keys read before are kept
    assert set((await source.keys()).keys) == {"k3"} and idp.reads == 5
    await source.keys()
    assert idp.reads == 5  # tried again later, not at once


async def test_without_keys_a_login_fails_with_what_went_wrong() -> None:
    idp = _Provider()
    idp.document = OSError("connection refused")
    source = JwksSource("https://idp/jwks", 60_000, clock=lambda: idp.now, read=idp.read)
    with pytest.raises(SaslError, match="cannot be read: connection refused"):
        await source.keys("k1")
    with pytest.raises(SaslError, match="cannot be read"):
        await source.keys("k1")
    assert idp.reads == 1  # a provider down is not asked by every login
    idp.document = JWKS_DOC
    idp.now += 10
    assert "k1" in (await source.keys("k1")).keys


# --- the broker's exchange -------------------------------------------------------------


def _listener_config(*extra: str) -> Any:
    return load_config(
        env={},
        overrides=[
            "broker.id=1",
            "listeners=PLAIN://h:1,S://h:2",
            "listener.security.protocol.map=PLAIN:PLAINTEXT,S:SASL_PLAINTEXT",
            "inter.broker.listener.name=PLAIN",
            "sasl.enabled.mechanisms=OAUTHBEARER,PLAIN",
            *extra,
        ],
    )


async def _login(authenticator: Authenticator, *messages: bytes) -> list[Any]:
    handshake = await authenticator.handle(
        ApiKey.SASL_HANDSHAKE, SaslHandshakeRequest(mechanism="OAUTHBEARER")
    )
    assert handshake.error_code == 0
    return [
        await authenticator.handle(ApiKey.SASL_AUTHENTICATE, SaslAuthenticateRequest(auth_bytes=m))
        for m in messages
    ]


async def test_a_good_unsecured_token_logs_in_as_its_principal() -> None:
    listener = sasl_listeners(_listener_config(), None)["S"]
    assert listener.bearer is not None and not listener.bearer.signed
    authenticator = Authenticator(listener, "peer")
    token = unsecured_token("alice", int(time.time() * 1000))
    [answer] = await _login(authenticator, bearer_message(token))
    assert answer.error_code == 0 and authenticator.principal == "User:alice"


async def test_a_token_taken_inside_the_clock_skew_gets_a_session_it_can_use() -> None:
    """exp 10 s ago, inside a 30 s skew: taken, and its session lasts the two seconds a
    client needs to log in again with a fresh token (not a moment)."""
    listener = sasl_listeners(
        _listener_config(
            "connections.max.reauth.ms=3600000",
            "listener.name.s.oauthbearer.sasl.jaas.config=x.OAuthBearerLoginModule required "
            'unsecuredValidatorAllowableClockSkewMs="30000";',
        ),
        None,
    )["S"]
    authenticator = Authenticator(listener, "peer")
    issued = int(time.time() * 1000) - 3_610_000
    [answer] = await _login(authenticator, bearer_message(unsecured_token("alice", issued)))
    assert answer.error_code == 0 and authenticator.principal == "User:alice"
    assert 1_900 <= answer.session_lifetime_ms <= 2_000
    assert not authenticator.expired()


async def test_a_refused_token_gets_the_error_challenge_then_the_failure() -> None:
    listener = sasl_listeners(
        _listener_config(
            "connection.failed.authentication.delay.ms=0",
            "listener.name.s.oauthbearer.sasl.jaas.config=x.OAuthBearerLoginModule required "
            'unsecuredValidatorRequiredScope="produce consume";',
        ),
        None,
    )["S"]
    authenticator = Authenticator(listener, "peer")
    token = unsecured_token("alice", int(time.time() * 1000), claims={"scope": ["produce"]})
    challenge, refusal = await _login(authenticator, bearer_message(token), KVSEP)
    assert challenge.error_code == 0
    assert json.loads(bytes(challenge.auth_bytes)) == {
        "status": "insufficient_scope",
        "scope": "consume",
    }
    assert refusal.error_code == SaslAuthenticationFailedError.code
    assert "scope lacks consume" in refusal.error_message
    assert authenticator.failed and authenticator.principal is None


async def test_an_authorization_id_other_than_the_principal_is_refused() -> None:
    listener = sasl_listeners(
        _listener_config("connection.failed.authentication.delay.ms=0"), None
    )["S"]
    authenticator = Authenticator(listener, "peer")
    token = unsecured_token("alice", int(time.time() * 1000))
    challenge, refusal = await _login(authenticator, bearer_message(token, authzid="admin"), KVSEP)
    assert json.loads(bytes(challenge.auth_bytes)) == {"status": "invalid_token"}
    assert "'admin' is not the token's principal 'alice'" in refusal.error_message


async def test_a_signed_listener_checks_against_the_jwks_and_its_settings() -> None:
    config = _listener_config(
        "sasl.oauthbearer.jwks.endpoint.url=https://idp.example/jwks",
        "sasl.oauthbearer.expected.audience=kafka",
        "sasl.oauthbearer.expected.issuer=idp",
        "sasl.oauthbearer.sub.claim.name=client_id",
    )
    idp = _Provider()
    checker = BearerChecker(config, {}, JwksSource("u", 60_000, read=idp.read))
    now_s = time.time()
    claims = {**CLAIMS, "client_id": "svc", "exp": now_s + 60, "iat": now_s}
    assert (await checker.check(_sign(RSA_KEY, "RS256", claims))).principal == "svc"
    with pytest.raises(SaslError, match="algorithm 'none'"):
        await checker.check(unsecured_token("alice", int(now_s * 1000)))
    assert sasl_listeners(config, None)["S"].bearer.signed  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        (["sasl.oauthbearer.jwks.endpoint.url=ftp://idp/jwks"], "https://, http:// or file://"),
        (["sasl.mechanism.inter.broker.protocol=OAUTHBEARER"], "use one of PLAIN"),
        (
            [
                "listener.name.s.oauthbearer.sasl.jaas.config=x.OAuthBearerLoginModule required "
                'unsecuredValidatorAllowableClockSkewMs="soon";'
            ],
            "unsecuredValidatorAllowableClockSkewMs='soon'",
        ),
    ],
)
def test_oauthbearer_settings_that_do_not_fit_are_one_line(overrides: list[str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        sasl_listeners(_listener_config(*overrides), None)


def test_oauthbearer_is_not_offered_unless_enabled() -> None:
    config = load_config(env={}, overrides=["broker.id=1"])
    assert "OAUTHBEARER" not in config["sasl.enabled.mechanisms"]  # unsigned tokens: opt in


# --- the client's settings -------------------------------------------------------------


def test_the_client_needs_a_token_provider_for_oauthbearer() -> None:
    with pytest.raises(ConfigurationError, match="needs sasl_oauth_token_provider"):
        security_for("SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER")
    with pytest.raises(ConfigurationError, match="set sasl_mechanism='OAUTHBEARER'"):
        security_for(
            "SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="a",
            sasl_plain_password="b",
            sasl_oauth_token_provider=UnsecuredTokenProvider("alice"),
        )

    class Sync:
        def token(self) -> str:
            return "t"

    with pytest.raises(ConfigurationError, match="async def token"):
        security_for(
            "SASL_PLAINTEXT",
            sasl_mechanism="OAUTHBEARER",
            sasl_oauth_token_provider=Sync(),  # type: ignore[arg-type]
        )
    provider = UnsecuredTokenProvider("alice")
    _tls, login = security_for(
        "SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=provider
    )
    assert login is not None and login.token_provider is provider


async def test_kafkas_unsecured_login_options_in_a_properties_file() -> None:
    settings = settings_from_properties(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.jaas.config": "org.apache.kafka.common.security.oauthbearer."
            'OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="alice" '
            'unsecuredLoginListClaim_scope=",read,write" unsecuredLoginLifetimeSeconds="60" '
            'unsecuredLoginExtension_traceId="7";',
        },
        "client.properties",
    )
    provider = settings["sasl_oauth_token_provider"]
    assert isinstance(provider, UnsecuredTokenProvider)
    token = check_unsecured(await provider.token(), int(time.time() * 1000))
    assert (token.principal, token.scope) == ("alice", frozenset({"read", "write"}))
    assert provider.extensions() == {"traceId": "7"}
    with pytest.raises(ConfigurationError, match="unsecuredLoginStringClaim_sub"):
        settings_from_properties(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "OAUTHBEARER",
                "sasl.jaas.config": "x.OAuthBearerLoginModule required;",
            },
            "client.properties",
        )


async def test_with_reauthentication_a_session_ends_no_later_than_its_token() -> None:
    listener = sasl_listeners(_listener_config("connections.max.reauth.ms=3600000"), None)["S"]
    authenticator = Authenticator(listener, "peer")
    token = unsecured_token("alice", int(time.time() * 1000), lifetime_s=60)
    [answer] = await _login(authenticator, bearer_message(token))
    assert 50_000 < answer.session_lifetime_ms <= 60_000  # the token's, not the hour
    unbounded = sasl_listeners(_listener_config(), None)["S"]  # Kafka's default: 0
    authenticator = Authenticator(unbounded, "peer")
    [answer] = await _login(authenticator, bearer_message(token))
    assert answer.session_lifetime_ms == 0 and not authenticator.expired()
