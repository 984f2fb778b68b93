"""SASL/OAUTHBEARER (RFC 7628, Kafka's KIP-255 and KIP-768) as bytes in, objects out: the
client's message, the server's error challenge, and the checks of a bearer token (a JWT).

Pure: no sockets, no clock, no HTTP. The broker's authenticator gives the time and the
keys (a JWKS its listener fetched); what a message or a token lacks or gets wrong is a
:class:`~protocol.sasl.SaslError` whose text says which (never the token itself).

Two ways to check a token, as Kafka's brokers have:

- :func:`check_unsecured`: Kafka's default (``OAuthBearerUnsecuredValidatorCallbackHandler``),
  for development: an unsigned JWT (``"alg": "none"``), whose claims are believed. What
  librdkafka's ``enable.sasl.oauthbearer.unsecure.jwt`` and Kafka's
  ``unsecuredLoginStringClaim_sub`` make (:func:`unsecured_token`).
- :func:`check_signed`: KIP-768's ``OAuthBearerValidatorCallbackHandler``: a JWS signed by
  one of the identity provider's keys (its JWKS: RS256/384/512, PS256/384/512,
  ES256/384/512), not expired, with the expected audience and issuer.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from protocol.sasl import SaslError

__all__ = [
    "KVSEP",
    "OAUTHBEARER",
    "BearerMessage",
    "InsufficientScope",
    "Jwks",
    "Token",
    "bearer_message",
    "check_signed",
    "check_unsecured",
    "error_challenge",
    "parse_bearer_message",
    "token_key_id",
    "unsecured_token",
]

OAUTHBEARER = "OAUTHBEARER"
_SEP = "\x01"
_AUTH = re.compile(r"(?P<scheme>\w+) +(?P<token>[-_.a-zA-Z0-9]+)")
_EXTENSION_KEY = re.compile(r"[A-Za-z]+")
_EXTENSION_VALUE = re.compile(r"[\x21-\x7e \t\r\n]+")
_GS2 = re.compile(r"n,(?:a=(?P<authzid>[^,]*))?,")


@dataclass(slots=True)
class BearerMessage:
    """What an OAUTHBEARER client sends: its token, and what it adds."""

    token: str
    authzid: str = ""
    extensions: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the token, in a log or a traceback
        return f"BearerMessage(authzid={self.authzid!r}, extensions={sorted(self.extensions)})"


def bearer_message(
    token: str, authzid: str = "", extensions: Mapping[str, str] | None = None
) -> bytes:
    """The client's one message (RFC 7628's initial client response)."""
    for key, value in (extensions or {}).items():
        _check_extension(key, value)
    gs2 = f"n,a={authzid}," if authzid else "n,,"
    parts = [f"auth=Bearer {token}", *(f"{k}={v}" for k, v in (extensions or {}).items())]
    return (gs2 + _SEP + _SEP.join(parts) + _SEP + _SEP).encode()


def parse_bearer_message(message: bytes) -> BearerMessage:
    """The client's message: a GS2 header, then ``auth=Bearer <token>`` and any
    extensions, each ended by 0x01, and a last 0x01."""
    try:
        text = message.decode()
    except UnicodeDecodeError:
        raise SaslError("OAUTHBEARER: the client's message is not UTF-8") from None
    gs2 = _GS2.match(text)
    if gs2 is None:
        raise SaslError("OAUTHBEARER: the client's message does not start with 'n,,'")
    rest = text[gs2.end() :]
    if not rest.startswith(_SEP) or not rest.endswith(_SEP + _SEP):
        raise SaslError("OAUTHBEARER: the client's message is not 0x01-separated key=value pairs")
    pairs: dict[str, str] = {}
    for item in rest[1:-2].split(_SEP):
        key, sep, value = item.partition("=")
        if not sep or key in pairs:
            raise SaslError(f"OAUTHBEARER: {key[:40]!r} is not one key=value of the message")
        pairs[key] = value
    auth = _AUTH.fullmatch(pairs.pop("auth", ""))
    if auth is None or auth["scheme"].lower() != "bearer":
        raise SaslError("OAUTHBEARER: the message has no 'auth=Bearer <token>'")
    for key, value in pairs.items():
        _check_extension(key, value)
    return BearerMessage(auth["token"], gs2["authzid"] or "", pairs)


def _check_extension(key: str, value: str) -> None:
    if key == "auth" or not _EXTENSION_KEY.fullmatch(key) or not _EXTENSION_VALUE.fullmatch(value):
        raise SaslError(
            f"OAUTHBEARER: extension {key[:40]!r} is not one RFC 7628 allows (a name of letters "
            "other than 'auth', and a value of printable ASCII)"
        )


def error_challenge(status: str = "invalid_token", scope: str | None = None) -> bytes:
    """The server's answer to a token it refuses (RFC 7628 3.2.2); the client answers it
    with a lone 0x01, and the authentication then fails."""
    error: dict[str, str] = {"status": status}
    if scope:
        error["scope"] = scope
    return json.dumps(error).encode()


KVSEP = _SEP.encode()
"""The client's answer to :func:`error_challenge`."""


@dataclass(slots=True, frozen=True)
class Token:
    """A token checked good: whose it is, until when, and for what."""

    principal: str
    expires_ms: int
    scope: frozenset[str]


# --- JWT -------------------------------------------------------------------------------


def _unb64url(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SaslError(f"OAUTHBEARER: the token's {what} is not base64url") from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_part(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64url(text, what))
    except (ValueError, UnicodeDecodeError, RecursionError):  # (nested past the stack)
        raise SaslError(f"OAUTHBEARER: the token's {what} is not JSON") from None
    if not isinstance(value, dict):
        raise SaslError(f"OAUTHBEARER: the token's {what} is not a JSON object")
    return value


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature) of a compact JWS."""
    parts = token.split(".")
    if len(parts) != 3:
        raise SaslError("OAUTHBEARER: the token is not a JWT (header.claims.signature)")
    header = _json_part(parts[0], "header")
    claims = _json_part(parts[1], "claims")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), _unb64url(parts[2], "signature")


def unsecured_token(
    principal: str,
    now_ms: int,
    *,
    lifetime_s: int = 3600,
    scope: Iterable[str] = (),
    principal_claim: str = "sub",
    claims: Mapping[str, Any] | None = None,
) -> str:
    """An unsigned JWT (Kafka's ``OAuthBearerUnsecuredLoginCallbackHandler``'s): for
    development only, and only a broker checking unsecured tokens takes it."""
    body: dict[str, Any] = {
        principal_claim: principal,
        "iat": now_ms / 1000,
        "exp": now_ms / 1000 + lifetime_s,
        **(claims or {}),
    }
    if scope:
        body["scope"] = list(scope)
    header = _b64url(json.dumps({"alg": "none"}).encode())
    return f"{header}.{_b64url(json.dumps(body).encode())}."


def _seconds(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise SaslError(f"OAUTHBEARER: the token has no '{name}' claim")
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError
        seconds = float(value)  # (an int past a float's range: OverflowError)
        if not math.isfinite(seconds) or abs(seconds) > _MAX_SECONDS:
            raise ValueError
    except (ValueError, OverflowError):
        raise SaslError(
            f"OAUTHBEARER: the token's '{name}' claim is not a time in seconds"
        ) from None
    return seconds


_MAX_SECONDS = 1e13  # past the year 300,000: no time a token means


def _times(claims: Mapping[str, Any], now_ms: int, skew_ms: int, *, issued: bool) -> int:
    """The token's expiry (ms), after checking it has not expired and is already valid
    (``issued``: an ``iat`` claim is required)."""
    if issued:
        _seconds(claims, "iat", required=True)
    exp = _seconds(claims, "exp", required=True)
    assert exp is not None
    if exp * 1000 + skew_ms <= now_ms:
        raise SaslError("OAUTHBEARER: the token has expired: get a new one")
    for name in ("iat", "nbf"):
        at = _seconds(claims, name, required=False)
        if at is not None and at * 1000 - skew_ms > now_ms:
            raise SaslError(f"OAUTHBEARER: the token's '{name}' is in the future")
    return int(exp * 1000)


def _principal(claims: Mapping[str, Any], claim: str) -> str:
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip():
        raise SaslError(f"OAUTHBEARER: the token's '{claim}' claim (its principal) is missing")
    return value


def _scope(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    value = claims.get(claim)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise SaslError(f"OAUTHBEARER: the token's '{claim}' claim is not a scope")


def check_unsecured(
    token: str,
    now_ms: int,
    *,
    principal_claim: str = "sub",
    scope_claim: str = "scope",
    required_scope: Iterable[str] = (),
    clock_skew_ms: int = 0,
) -> Token:
    """Kafka's unsecured validator: an unsigned JWT whose claims hold (not expired, a
    principal, every required scope). Anyone can write one: development only."""
    header, claims, _input, signature = _split(token)
    if header.get("alg") != "none" or signature:
        raise SaslError(
            "OAUTHBEARER: this listener takes unsecured (unsigned, alg none) tokens only; "
            "set sasl.oauthbearer.jwks.endpoint.url to check signed ones"
        )
    expires = _times(claims, now_ms, clock_skew_ms, issued=False)
    principal = _principal(claims, principal_claim)
    scope = _scope(claims, scope_claim)
    missing = sorted(set(required_scope) - scope)
    if missing:
        raise InsufficientScope(missing)
    return Token(principal, expires, scope)


class InsufficientScope(SaslError):
    """The token lacks a scope the listener requires (RFC 7628's insufficient_scope)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"OAUTHBEARER: the token's scope lacks {' '.join(missing)}")
        self.missing = missing


# --- JWKS and signed tokens ------------------------------------------------------------

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_ALG_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_ALGORITHMS = frozenset(f"{f}{b}" for f in ("RS", "PS", "ES") for b in _HASHES)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class Jwks:
    """The signing keys of a JSON Web Key Set (RFC 7517), by key id. Keys of other
    types or uses are left out."""

    def __init__(self, keys: Mapping[str | None, PublicKey]) -> None:
        self.keys = dict(keys)
        self.skipped: list[str] = []
        """The keys of the document left out, and why (for the broker's log)."""

    @classmethod
    def parse(cls, data: bytes) -> Jwks:
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise SaslError("the JWKS is not JSON") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise SaslError('the JWKS has no "keys" list')
        keys: dict[str | None, PublicKey] = {}
        skipped: list[str] = []
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            kid = entry.get("kid")
            try:
                if kid is not None and not isinstance(kid, str):
                    raise SaslError("its kid is not a string")
                key = _public_key(entry)
            except (SaslError, ValueError, TypeError) as exc:
                # one key unusable is left out, not the set (jose4j's, Kafka's, too)
                skipped.append(f"{kid!r}: {exc}")
                continue
            if key is not None:
                keys[kid] = key
        jwks = cls(keys)
        jwks.skipped = skipped
        return jwks

    def key_for(self, kid: str | None) -> PublicKey | None:
        """The key a token's ``kid`` names; without one, the only key there is."""
        if kid is None and len(self.keys) == 1:
            return next(iter(self.keys.values()))
        return self.keys.get(kid)


def _int(entry: Mapping[str, Any], name: str) -> int:
    value = entry.get(name)
    if not isinstance(value, str):
        raise SaslError(f"a JWKS key has no '{name}'")
    return int.from_bytes(_unb64url(value, f"JWKS key's '{name}'"), "big")


def _public_key(entry: Mapping[str, Any]) -> PublicKey | None:
    kty = entry.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_int(entry, "e"), _int(entry, "n")).public_key()
    crv = entry.get("crv")
    curve = _CURVES.get(crv) if isinstance(crv, str) else None
    if kty == "EC" and curve is not None:
        try:
            return ec.EllipticCurvePublicNumbers(
                _int(entry, "x"), _int(entry, "y"), curve
            ).public_key()
        except ValueError:
            raise SaslError("a JWKS EC key is not a point of its curve") from None
    return None  # another type (symmetric "oct", OKP): not a key a broker checks with


def _verify(alg: str, key: PublicKey, signing_input: bytes, signature: bytes) -> None:
    digest = _HASHES[alg[2:]]()
    try:
        if alg.startswith("ES"):
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _ALG_CURVES[alg]:
                raise SaslError(f"OAUTHBEARER: the token's key is not a key for {alg}")
            half = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * half:  # RFC 7518 3.4: r and s, each of the curve's size
                raise InvalidSignature
            der = encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.verify(der, signing_input, ec.ECDSA(digest))
            return
        if not isinstance(key, rsa.RSAPublicKey):
            raise SaslError(f"OAUTHBEARER: the token's key is not a key for {alg}")
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if alg.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        )
        key.verify(signature, signing_input, pad, digest)
    except InvalidSignature:
        raise SaslError("OAUTHBEARER: the token's signature does not verify") from None


def token_key_id(token: str) -> str | None:
    """The ``kid`` a signed token names (None: none, or not a JWT): a broker that lacks
    it fetches the key set again before refusing the token."""
    try:
        kid = _split(token)[0].get("kid")
    except SaslError:
        return None
    return kid if isinstance(kid, str) else None


def check_signed(
    token: str,
    jwks: Jwks,
    now_ms: int,
    *,
    expected_audience: Iterable[str] = (),
    expected_issuer: str = "",
    principal_claim: str = "sub",
    scope_claim: str = "scope",
    clock_skew_ms: int = 30_000,
) -> Token:
    """KIP-768's validator: a JWS signed by a key of ``jwks``, not expired, and (when
    given) for one of ``expected_audience`` and from ``expected_issuer``."""
    header, claims, signing_input, signature = _split(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _ALGORITHMS:
        raise SaslError(
            f"OAUTHBEARER: the token's algorithm {alg!r} is not one a broker checks "
            f"({', '.join(sorted(_ALGORITHMS))})"
        )
    kid = header.get("kid")
    key = jwks.key_for(kid if isinstance(kid, str) else None)
    if key is None:
        raise SaslError(f"OAUTHBEARER: no key {kid!r} in the identity provider's key set")
    _verify(alg, key, signing_input, signature)
    expires = _times(claims, now_ms, clock_skew_ms, issued=True)
    audience = set(expected_audience)
    if audience:
        aud = claims.get("aud")
        theirs = {aud} if isinstance(aud, str) else set()
        if isinstance(aud, list):
            theirs = {a for a in aud if isinstance(a, str)}
        if not audience & theirs:
            raise SaslError("OAUTHBEARER: the token is not for this cluster's audience")
    if expected_issuer and claims.get("iss") != expected_issuer:
        raise SaslError("OAUTHBEARER: the token is not from the expected issuer")
    return Token(_principal(claims, principal_claim), expires, _scope(claims, scope_claim))
