"""SASL's mechanisms as bytes in, bytes out: PLAIN (RFC 4616) and SCRAM-SHA-256/512
(RFC 5802, RFC 7677), both sides, and Kafka's formats around them.

Pure: no sockets, no asyncio. The broker's authenticator and the client's login drive
these machines through SaslHandshake and SaslAuthenticate; what a message lacks or gets
wrong is a :class:`SaslError` whose text says which.

Kafka's formats kept here, so a user moving from Kafka keeps them:

- a SCRAM credential as stored in ZooKeeper (``/config/users/<name>``):
  ``salt=<b64>,stored_key=<b64>,server_key=<b64>,iterations=<n>`` (:class:`ScramCredential`);
- a JAAS ``sasl.jaas.config`` line, e.g. ``org.apache.kafka.common.security.plain.
  PlainLoginModule required username="admin" password="secret" user_alice="pw";``
  (:func:`parse_jaas`): a client's own username and password, and a broker's PLAIN users.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from protocol.errors import HeadwaterError

__all__ = [
    "MECHANISMS",
    "SCRAM_MAX_ITERATIONS",
    "SCRAM_MECHANISMS",
    "SCRAM_MIN_ITERATIONS",
    "SaslError",
    "ScramClient",
    "ScramCredential",
    "ScramServer",
    "parse_jaas",
    "parse_plain",
    "plain_message",
    "salted_password",
]

SCRAM_MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)
SCRAM_MIN_ITERATIONS = 4096  # Kafka's bounds (ScramMechanism.minIterations, and its max)
SCRAM_MAX_ITERATIONS = 16384
_NONCE_BYTES = 24


class SaslError(HeadwaterError):
    """A SASL exchange failed: a malformed message, a wrong password, an unknown user."""


# --- PLAIN -----------------------------------------------------------------------------


def plain_message(username: str, password: str, authzid: str = "") -> bytes:
    """The one message a PLAIN client sends."""
    return f"{authzid}\0{username}\0{password}".encode()


def parse_plain(message: bytes) -> tuple[str, str]:
    """(username, password) of a PLAIN message. An authorization id other than the
    username is refused, as Kafka refuses it (no impersonation)."""
    try:
        authzid, username, password = message.decode().split("\0")
    except (UnicodeDecodeError, ValueError):
        raise SaslError("a PLAIN message is authzid NUL username NUL password") from None
    if not username or not password:
        raise SaslError("PLAIN needs a username and a password")
    if authzid and authzid != username:
        raise SaslError(f"PLAIN: authorization id {authzid[:40]!r} is not the username")
    return username, password


# --- SCRAM -----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise SaslError(f"SCRAM: {what} is not base64") from None


def _hash(mechanism: str) -> str:
    try:
        return SCRAM_MECHANISMS[mechanism]
    except KeyError:
        raise SaslError(f"{mechanism} is not a SCRAM mechanism") from None


def _hmac(name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, name).digest()


def _salted(name: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(name, password.encode(), salt, iterations)


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """SCRAM's SaltedPassword: PBKDF2 with the mechanism's hash."""
    return _salted(_hash(mechanism), password, salt, iterations)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _attributes(message: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise SaslError(f"SCRAM {what}: {part[:40]!r} is not a=value")
        out[key] = value
    return out


def _escape(username: str) -> str:
    return username.replace("=", "=3D").replace(",", "=2C")


def _unescape(name: str) -> str:
    if re.search(r"=(?!2C|3D)", name):
        raise SaslError("SCRAM: a username may escape only ',' (=2C) and '=' (=3D)")
    return name.replace("=2C", ",").replace("=3D", "=")


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What a server keeps of a SCRAM user's password (never the password itself)."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    @classmethod
    def make(
        cls,
        mechanism: str,
        password: str,
        iterations: int = SCRAM_MIN_ITERATIONS,
        salt: bytes | None = None,
    ) -> ScramCredential:
        salt = secrets.token_bytes(32) if salt is None else salt
        salted = salted_password(mechanism, password, salt, iterations)
        return cls.from_salted(mechanism, salted, salt, iterations)

    @classmethod
    def from_salted(
        cls, mechanism: str, salted: bytes, salt: bytes, iterations: int
    ) -> ScramCredential:
        """From the salted password (what AlterUserScramCredentials carries)."""
        name = _hash(mechanism)
        client_key = _hmac(name, salted, b"Client Key")
        stored_key = hashlib.new(name, client_key).digest()
        return cls(salt, stored_key, _hmac(name, salted, b"Server Key"), iterations)

    def to_text(self) -> str:
        """Kafka's form (ScramCredentialUtils.credentialToString)."""
        return (
            f"salt={_b64(self.salt)},stored_key={_b64(self.stored_key)},"
            f"server_key={_b64(self.server_key)},iterations={self.iterations}"
        )

    @classmethod
    def from_text(cls, text: str) -> ScramCredential:
        fields = dict(part.partition("=")[::2] for part in text.split(","))
        try:
            return cls(
                _unb64(fields["salt"], "salt"),
                _unb64(fields["stored_key"], "stored_key"),
                _unb64(fields["server_key"], "server_key"),
                int(fields["iterations"]),
            )
        except (KeyError, ValueError):
            raise SaslError(f"not a SCRAM credential: {text[:40]!r}...") from None


class ScramClient:
    """A client's side: :meth:`first`, then :meth:`final` of the server's first message,
    then :meth:`verify` of the server's last (which proves the server knew the
    credential, not just accepted us)."""

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        nonce: str = "",
        *,
        extensions: dict[str, str] | None = None,
    ) -> None:
        """``extensions``: Kafka's SCRAM extensions, ``{"tokenauth": "true"}`` to log in
        with a delegation token (its id as ``username``, its HMAC in base64 as
        ``password``)."""
        self._name = _hash(mechanism)
        self._password = password
        self._nonce = nonce or secrets.token_urlsafe(_NONCE_BYTES)
        extra = ""
        for key, value in (extensions or {}).items():
            if not key or not value or "," in key + value or "=" in key:
                raise SaslError(f"SCRAM extension {key!r}: key=value, no ',' (nor '=' in the key)")
            extra += f",{key}={value}"
        self._first_bare = f"n={_escape(username)},r={self._nonce}{extra}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode(errors="replace")
        fields = _attributes(text, "server-first-message")
        if "e" in fields:
            raise SaslError(f"the server refused: {fields['e']}")
        try:
            nonce, salt, iterations = fields["r"], fields["s"], int(fields["i"])
        except (KeyError, ValueError):
            raise SaslError("SCRAM server-first-message lacks r, s or i") from None
        if not nonce.startswith(self._nonce) or nonce == self._nonce:
            raise SaslError("SCRAM: the server's nonce does not extend ours")
        if not SCRAM_MIN_ITERATIONS <= iterations <= SCRAM_MAX_ITERATIONS:
            # fewer would make our proof cheap to crack for whoever asked (Kafka's client
            # refuses them too); more would stall us for as long as it likes
            raise SaslError(
                f"SCRAM: the server asks for {iterations} iterations; only "
                f"{SCRAM_MIN_ITERATIONS} to {SCRAM_MAX_ITERATIONS} are accepted"
            )
        salted = _salted(self._name, self._password, _unb64(salt, "salt"), iterations)
        client_key = _hmac(self._name, salted, b"Client Key")
        stored_key = hashlib.new(self._name, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth = f"{self._first_bare},{text},{without_proof}".encode()
        proof = _xor(client_key, _hmac(self._name, stored_key, auth))
        server_key = _hmac(self._name, salted, b"Server Key")
        self._server_signature = _hmac(self._name, server_key, auth)
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        fields = _attributes(server_final.decode(errors="replace"), "server-final-message")
        if "e" in fields:
            raise SaslError(f"the server refused: {fields['e']}")
        if "v" not in fields or not hmac.compare_digest(
            _unb64(fields["v"], "signature"), self._server_signature
        ):
            raise SaslError(
                "SCRAM: the server's signature is wrong (it does not know the "
                "credential: not the broker it claims to be)"
            )


class ScramServer:
    """A server's side: :meth:`first` reads the client's first message and names the user
    (the caller then looks the credential up), :meth:`challenge` answers it,
    :meth:`final` checks the proof and answers with the server's signature."""

    def __init__(self, mechanism: str, nonce: str = "") -> None:
        self.mechanism = mechanism
        self._name = _hash(mechanism)
        self._server_nonce = nonce or secrets.token_urlsafe(_NONCE_BYTES)
        self.username = ""
        self.extensions: dict[str, str] = {}
        """Kafka's SCRAM extensions the client sent (``tokenauth=true``: a delegation
        token's login)."""
        self._client_first_bare = ""
        self._gs2_header = ""
        self._server_first = ""
        self._nonce = ""
        self._credential: ScramCredential | None = None

    def first(self, client_first: bytes) -> str:
        """The username the client's first message names."""
        text = client_first.decode(errors="replace")
        header, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep or not sep2 or header not in ("n", "y"):
            raise SaslError(
                "SCRAM client-first-message must start n,, (channel binding is not offered)"
            )
        # RFC 5802's attributes (n, r), then Kafka's extensions (key=value, any key)
        parts = bare.split(",")
        fields = _attributes(",".join(parts[:2]), "client-first-message")
        if "m" in fields or any(p.startswith("m=") for p in parts[2:]):
            raise SaslError("SCRAM: extensions (m=) are not supported")
        try:
            username, client_nonce = _unescape(fields["n"]), fields["r"]
        except KeyError:
            raise SaslError("SCRAM client-first-message lacks n or r") from None
        for extension in parts[2:]:
            key, sep, value = extension.partition("=")
            if not sep or not key or not value:
                # (a part of it: before a login the message may be 100 MB)
                raise SaslError(f"SCRAM: extension {extension[:40]!r}... is not key=value")
            self.extensions[key] = value
        if authzid and _unescape(authzid.removeprefix("a=")) != username:
            raise SaslError("SCRAM: authorization id is not the username")
        if not username or not client_nonce:
            raise SaslError("SCRAM: empty username or nonce")
        self.username = username
        self._gs2_header = f"{header},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce
        return username

    def challenge(self, credential: ScramCredential) -> bytes:
        self._credential = credential
        self._server_first = f"r={self._nonce},s={_b64(credential.salt)},i={credential.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        if self._credential is None:
            raise SaslError("SCRAM: the client's final message came before the challenge")
        text = client_final.decode(errors="replace")
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise SaslError("SCRAM client-final-message lacks its proof (p=)")
        fields = _attributes(without_proof, "client-final-message")
        if fields.get("r") != self._nonce:
            raise SaslError("SCRAM: the client's final nonce is not the one agreed")
        if fields.get("c") != _b64(self._gs2_header.encode()):
            raise SaslError("SCRAM: c= must be the base64 of the first message's header")
        auth = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        credential = self._credential
        signature = _hmac(self._name, credential.stored_key, auth)
        proof = _unb64(proof_part, "proof")
        if len(proof) != len(signature) or not hmac.compare_digest(
            hashlib.new(self._name, _xor(proof, signature)).digest(), credential.stored_key
        ):
            raise SaslError("invalid credentials")
        return f"v={_b64(_hmac(self._name, credential.server_key, auth))}".encode()


# --- JAAS ------------------------------------------------------------------------------

_JAAS = re.compile(
    r'\s*(?P<key>[A-Za-z0-9_.\-]+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s;]+))'
)


def parse_jaas(text: str) -> dict[str, str]:
    """The options of one JAAS login-module line (``Module required key="value" ...;``).
    The module's class name is not checked: the mechanism says which is meant."""
    body = text.strip().removesuffix(";").strip()
    parts = body.split(None, 2)
    if len(parts) < 2 or parts[1] not in ("required", "requisite", "sufficient", "optional"):
        raise SaslError(
            "a sasl.jaas.config is 'LoginModule required key=\"value\" ...;', e.g. "
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="alice" password="secret";'
        )
    rest = parts[2] if len(parts) > 2 else ""
    options: dict[str, str] = {}
    position = 0
    while position < len(rest):
        if rest[position:].strip() == "":
            break
        match = _JAAS.match(rest, position)
        if match is None:
            # where, not what: the text may hold a password
            raise SaslError(
                f"sasl.jaas.config: cannot read an option at character {position + 1} of "
                'its options (each is key="value"; a value with spaces needs the quotes)'
            )
        value = match["quoted"] if match["quoted"] is not None else match["bare"]
        options[match["key"]] = re.sub(r"\\(.)", r"\1", value)
        position = match.end()
    return options
