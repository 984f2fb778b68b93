"""SASL on SASL_PLAINTEXT and SASL_SSL listeners: who a connection is, before anything else.

Kafka's exchange: on a SASL listener a client may send ApiVersions, then SaslHandshake
naming a mechanism, then SaslAuthenticate requests carrying the mechanism's messages
until it is in. Any other request before that closes the connection; a failed
authentication is answered with SASL_AUTHENTICATION_FAILED (after
``connection.failed.authentication.delay.ms``, which slows a password guesser) and then
closed. The mechanisms' messages are :mod:`protocol.sasl`'s.

- PLAIN: the users and passwords are the listener's JAAS options ``user_<name>="<pw>"``
  (Kafka's PlainLoginModule on a broker). Only over TLS (SASL_SSL) is the password not
  readable on the wire; on SASL_PLAINTEXT it is, as in Kafka.
- SCRAM-SHA-256 / SCRAM-SHA-512: the credentials (salt, stored and server keys, never the
  password) are in ZooKeeper, ``/config/users/<name>``, Kafka's znode and format, written
  by AlterUserScramCredentials from any broker (``headwater users``). Each login reads the
  user's znode, so a new or changed password works at once on every broker; when
  ZooKeeper cannot answer, the last credential read here is used.
- OAUTHBEARER (KIP-255, KIP-768): a bearer token (a JWT) from the client's identity
  provider, checked by :mod:`broker.oauth` (signed by a key of the provider's JWKS, or,
  without one configured, Kafka's unsecured tokens); its principal claim is the user. A
  token refused is answered as RFC 7628 says (an error challenge, which the client
  acknowledges), then SASL_AUTHENTICATION_FAILED with why.
- GSSAPI (Kerberos): a ticket for the broker's service principal, checked with the key in
  the listener's keytab by :mod:`broker.kerberos`; the user is the client principal's
  short name (``sasl.kerberos.principal.to.local.rules``).

A broker reaches others on a SASL inter-broker listener with the mechanism
``sasl.mechanism.inter.broker.protocol`` and the ``username``/``password`` of its JAAS
options, or for GSSAPI its own principal and keytab there (:func:`peer_login`).

Concurrency: event loop thread only; ZooKeeper reads through :class:`ZkBridge`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    from broker.tokens import TokenLogin
from broker.config import BrokerConfig, ConfigError
from broker.kerberos import GssapiAcceptor, GssapiExchange, GssapiPeerLogin
from broker.network import PeerLogin
from broker.oauth import BearerChecker, JwksSource
from broker.zk import (
    CREATE,
    CorruptZnode,
    NodeExists,
    NoNode,
    VersionConflict,
    ZkBridge,
    ZkConnectionLoss,
    ZkError,
    config_change_json,
    entity_config_from_json,
    paths,
    topic_config_json,
)
from protocol.apis import (
    SCRAM_MECHANISM_CODES,
    AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsResponse,
    AlterUserScramCredentialsResult,
    ApiKey,
    CredentialInfo,
    DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
    DescribeUserScramCredentialsResult,
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
    ScramCredentialDeletion,
    ScramCredentialUpsertion,
)
from protocol.errors import (
    ApiError,
    DuplicateResourceError,
    IllegalSaslStateError,
    KafkaStorageError,
    ResourceNotFoundError,
    SaslAuthenticationFailedError,
    UnacceptableCredentialError,
    UnsupportedSaslMechanismError,
)
from protocol.kerberos import GSSAPI
from protocol.oauthbearer import (
    OAUTHBEARER,
    InsufficientScope,
    Token,
    error_challenge,
    parse_bearer_message,
)
from protocol.sasl import (
    SCRAM_MAX_ITERATIONS,
    SCRAM_MIN_ITERATIONS,
    SaslError,
    ScramCredential,
    ScramServer,
    parse_jaas,
    parse_plain,
)

__all__ = [
    "Authenticator",
    "SaslListener",
    "ScramCredentials",
    "peer_login",
    "sasl_listeners",
]

_log = structlog.get_logger("headwater.sasl")
_MECHANISM_NAMES = {code: name for name, code in SCRAM_MECHANISM_CODES.items()}
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
_CACHED_CREDENTIALS = 10_000


@dataclass(slots=True)
class SaslListener:
    """What one SASL listener accepts."""

    name: str
    mechanisms: tuple[str, ...]
    plain_users: dict[str, str]
    credentials: ScramCredentials | None
    failure_delay_s: float
    bearer: BearerChecker | None = None
    """How OAUTHBEARER tokens are checked (None: the listener does not offer it)."""
    max_reauth_ms: int = 0
    """connections.max.reauth.ms: how long a session lasts (0: for ever)."""
    tokens: TokenLogins | None = None
    """Delegation tokens' SCRAM logins (``tokenauth=true``; None: not taken)."""
    kerberos: GssapiAcceptor | None = None
    """How GSSAPI logins are checked (None: the listener does not offer it)."""


class TokenLogins(Protocol):
    """Where a delegation token's SCRAM login is checked (``broker.tokens``)."""

    def login(self, token_id: str, mechanism: str) -> TokenLogin | None: ...


def _jaas(config: BrokerConfig, listener: str, mechanism: str) -> dict[str, str]:
    """The JAAS options for a listener and mechanism: Kafka's
    ``listener.name.<listener>.<mechanism>.sasl.jaas.config`` if set, else the broker's
    ``sasl.jaas.config``."""
    name = f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"
    text = config.extra.get(name) or config["sasl.jaas.config"]
    source = name if config.extra.get(name) else "sasl.jaas.config"
    if not text:
        return {}
    try:
        return parse_jaas(text)
    except SaslError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def sasl_listeners(
    config: BrokerConfig, credentials: ScramCredentials | None
) -> dict[str, SaslListener]:
    """Each SASL listener's settings, by name (a bad JAAS line stops the start here)."""
    out: dict[str, SaslListener] = {}
    protocols = config.listener_protocols
    mechanisms = tuple(config["sasl.enabled.mechanisms"])
    url = config["sasl.oauthbearer.jwks.endpoint.url"]
    keys = (
        JwksSource(url, config["sasl.oauthbearer.jwks.endpoint.refresh.ms"])
        if url and OAUTHBEARER in mechanisms
        else None
    )
    for name in config.listener_names:
        if protocols[name] not in SASL_PROTOCOLS:
            continue
        users: dict[str, str] = {}
        if "PLAIN" in mechanisms:
            options = _jaas(config, name, "PLAIN")
            users = {k[5:]: v for k, v in options.items() if k.startswith("user_") and k[5:]}
        for mechanism in mechanisms:
            _jaas(config, name, mechanism)  # checked now, not at a client's login
        bearer = None
        if OAUTHBEARER in mechanisms:
            bearer = BearerChecker(config, _jaas(config, name, OAUTHBEARER), keys)
        kerberos = None
        if GSSAPI in mechanisms:
            kerberos = GssapiAcceptor(
                name,
                _jaas(config, name, GSSAPI),
                config["sasl.kerberos.service.name"],
                config["sasl.kerberos.principal.to.local.rules"],
            )
        out[name] = SaslListener(
            name,
            mechanisms,
            users,
            credentials,
            config["connection.failed.authentication.delay.ms"] / 1000,
            bearer,
            config["connections.max.reauth.ms"],
            kerberos=kerberos,
        )
    return out


def peer_login(config: BrokerConfig) -> PeerLogin | None:
    """This broker's login to the others' inter-broker listener (None: not SASL)."""
    listener = config.inter_broker_listener
    if config.listener_protocols[listener] not in SASL_PROTOCOLS:
        return None
    mechanism = config["sasl.mechanism.inter.broker.protocol"]
    options = _jaas(config, listener, mechanism)
    if mechanism == GSSAPI:
        kerberos = GssapiPeerLogin(listener, options, config["sasl.kerberos.service.name"])
        return PeerLogin(GSSAPI, "", "", kerberos)
    username, password = options.get("username"), options.get("password")
    if not username or not password:
        raise ConfigError(
            f"the inter-broker listener {listener} is SASL: give this broker's own login as "
            f'username="..." password="..." in sasl.jaas.config (mechanism {mechanism})'
        )
    return PeerLogin(mechanism, username, password)


class Authenticator:
    """One connection's authentication on a SASL listener. The server lets through only
    ApiVersions and the two SASL requests until :attr:`principal` is set.

    With ``connections.max.reauth.ms`` (KIP-368) a session ends at :attr:`expires_ms`
    (the monotonic clock's ms: a wall clock stepped back must not lengthen it): before
    then the client sends SaslHandshake again, with the same mechanism, and logs in anew
    as the same principal on the same connection (:attr:`reauthenticating` meanwhile); a
    connection past its end is closed at its next other request. Without an end there is
    no re-authentication, nor more than one a second (Kafka's rules,
    :meth:`may_reauthenticate`): the SaslHandshake is then an ordinary request, answered
    ILLEGAL_SASL_STATE."""

    __slots__ = (
        "_gssapi",
        "_listener",
        "_logged_in_at",
        "_mechanism",
        "_peer",
        "_previous",
        "_refused",
        "_scram",
        "_token",
        "by_token",
        "expires_ms",
        "failed",
        "principal",
    )

    def __init__(self, listener: SaslListener, peer: str) -> None:
        self._listener = listener
        self._mechanism: str | None = None
        self._scram: ScramServer | None = None
        self._token: TokenLogin | None = None  # a delegation token's login under way
        self._gssapi: GssapiExchange | None = None
        self._refused: str | None = None
        """Why an OAUTHBEARER token was refused: the client's next message fails."""
        self._previous: str | None = None
        """The principal a re-authentication must log in as again."""
        self.expires_ms: int | None = None
        self._logged_in_at = 0
        """When the session ends (wall clock, ms); None: never."""
        self._peer = peer
        self.principal: str | None = None
        """``User:<name>`` once authenticated (Kafka's KafkaPrincipal)."""
        self.by_token = False
        """Logged in with a delegation token (its owner is :attr:`principal`)."""
        self.failed = False

    @property
    def done(self) -> bool:
        return self.principal is not None

    @property
    def reauthenticating(self) -> bool:
        return self._previous is not None

    def expired(self) -> bool:
        """Whether the session has ended (it may be re-authenticated, nothing else)."""
        return self.expires_ms is not None and _monotonic_ms() >= self.expires_ms

    def may_reauthenticate(self) -> bool:
        """Whether a SaslHandshake now starts a re-authentication: the session ends, and
        the last login was a second ago or more (Kafka's; none while one runs)."""
        return (
            self.expires_ms is not None
            and not self.reauthenticating
            and _monotonic_ms() - self._logged_in_at >= _MIN_REAUTH_INTERVAL_MS
        )

    async def handle(self, key: ApiKey, request: Any) -> Any:
        """The answer to a SaslHandshake or SaslAuthenticate; :attr:`failed` is set when
        the connection must close after it."""
        if self.failed:  # one failure ends the connection: nothing after it is tried
            raise IllegalSaslStateError("this connection failed to authenticate")
        if key == ApiKey.SASL_HANDSHAKE:
            return self._handshake(request)
        return await self._authenticate(request)

    def _handshake(self, request: SaslHandshakeRequest) -> SaslHandshakeResponse:
        offered = list(self._listener.mechanisms)
        if self.done and not self.reauthenticating:  # KIP-368: log in anew, as before
            if request.mechanism != self._mechanism:
                self.failed = True
                return _refuse(
                    SaslHandshakeResponse(mechanisms=offered),
                    IllegalSaslStateError(
                        f"re-authentication must use the mechanism of the first login "
                        f"({self._mechanism}), not {request.mechanism}"
                    ),
                )
            self._previous, self.principal = self.principal, None
            self._scram, self._refused, self._gssapi = None, None, None
            return SaslHandshakeResponse(mechanisms=offered)
        if self._mechanism is not None or self.done:
            self.failed = True
            return _refuse(
                SaslHandshakeResponse(mechanisms=offered),
                IllegalSaslStateError("SaslHandshake was already sent on this connection"),
            )
        if request.mechanism not in offered:
            self.failed = True
            return _refuse(
                SaslHandshakeResponse(mechanisms=offered),
                UnsupportedSaslMechanismError(
                    f"listener {self._listener.name} does not offer {request.mechanism}; it "
                    f"offers {', '.join(offered)} (sasl.enabled.mechanisms)"
                ),
            )
        self._mechanism = request.mechanism
        return SaslHandshakeResponse(mechanisms=offered)

    async def _authenticate(self, request: SaslAuthenticateRequest) -> SaslAuthenticateResponse:
        if self._mechanism is None or self.done:
            self.failed = True
            return _refuse(
                SaslAuthenticateResponse(),
                IllegalSaslStateError(
                    "SaslAuthenticate before SaslHandshake"
                    if self._mechanism is None
                    else "this connection is already authenticated"
                ),
            )
        try:
            if self._mechanism == "PLAIN":
                response = self._plain(bytes(request.auth_bytes))
            elif self._mechanism == OAUTHBEARER:
                response = await self._bearer(bytes(request.auth_bytes))
            elif self._mechanism == GSSAPI:
                response = await self._kerberos(bytes(request.auth_bytes))
            else:
                response = await self._scram_step(bytes(request.auth_bytes))
            if self.done and self.expires_ms is not None:
                # (0 on the wire is "never": a session ending now says 1)
                response.session_lifetime_ms = max(self.expires_ms - _monotonic_ms(), 1)
            return response
        except SaslError as exc:
            self.failed = True
            _log.info(
                "sasl.authentication_failed",
                peer=self._peer,
                listener=self._listener.name,
                mechanism=self._mechanism,
                error=str(exc),
            )
            # slows a guesser down; the connection is closed after this answer
            await asyncio.sleep(self._listener.failure_delay_s)
            return _refuse(
                SaslAuthenticateResponse(),
                SaslAuthenticationFailedError(
                    f"authentication failed with SASL mechanism {self._mechanism}: {exc}"
                ),
            )

    def _plain(self, message: bytes) -> SaslAuthenticateResponse:
        username, password = parse_plain(message)
        expected = self._listener.plain_users.get(username)
        # compared in constant time whether or not the user exists
        if (
            not hmac.compare_digest(
                hashlib.sha256(password.encode()).digest(),
                hashlib.sha256((expected or "\0no user").encode()).digest(),
            )
            or expected is None
        ):
            raise SaslError("invalid credentials")
        self._in(username)
        return SaslAuthenticateResponse()

    async def _bearer(self, message: bytes) -> SaslAuthenticateResponse:
        if self._refused is not None:  # the client's answer to the error challenge
            raise SaslError(self._refused)
        bearer = self._listener.bearer
        assert bearer is not None  # offered, so configured
        sent = parse_bearer_message(message)
        try:
            token = await _checked(bearer, sent.token, self._peer)
            if sent.authzid and sent.authzid != token.principal:
                raise SaslError(  # no impersonation (Kafka refuses it too)
                    f"OAUTHBEARER: authorization id {sent.authzid!r} is not the token's "
                    f"principal {token.principal!r}"
                )
        except SaslError as exc:
            self._refused = str(exc)
            scope = " ".join(exc.missing) if isinstance(exc, InsufficientScope) else None
            # RFC 7628: the error as a challenge; the client's acknowledgement then fails
            return SaslAuthenticateResponse(
                auth_bytes=error_challenge(
                    "insufficient_scope" if scope else "invalid_token", scope
                )
            )
        self._in(token.principal, token.expires_ms)
        return SaslAuthenticateResponse()

    async def _kerberos(self, message: bytes) -> SaslAuthenticateResponse:
        acceptor = self._listener.kerberos
        assert acceptor is not None  # offered, so configured
        if self._gssapi is None:
            self._gssapi = acceptor.exchange()
        answer = await self._gssapi.step(message)
        principal = self._gssapi.principal
        if principal is not None:
            # the session lasts connections.max.reauth.ms, not the ticket's life: Kafka's
            # (the JDK's GSSAPI server tells it no credential lifetime)
            self._in(acceptor.namer.short_name(principal))
        return SaslAuthenticateResponse(auth_bytes=answer)

    async def _scram_step(self, message: bytes) -> SaslAuthenticateResponse:
        assert self._mechanism is not None
        if self._scram is None:
            scram = ScramServer(self._mechanism)
            username = scram.first(message)
            if scram.extensions.get("tokenauth", "").lower() == "true":
                tokens = self._listener.tokens
                self._token = None if tokens is None else tokens.login(username, self._mechanism)
                credential = None if self._token is None else self._token.credential
            else:
                self._token = None
                store = self._listener.credentials
                credential = None if store is None else await store.get(username, self._mechanism)
            if credential is None:
                # the same words as a wrong password (the refusal comes a step earlier,
                # as in Kafka)
                raise SaslError("invalid credentials")
            self._scram = scram
            return SaslAuthenticateResponse(auth_bytes=scram.challenge(credential))
        answer = self._scram.final(message)
        token = self._token
        if token is None:
            self._in(self._scram.username)
        else:  # the token's owner, for as long as the token lasts (Kafka's)
            self._in(token.owner.partition(":")[2], token_expires_ms=token.expiry_ms)
        self.by_token = token is not None  # (each login says anew: KIP-368's too)
        return SaslAuthenticateResponse(auth_bytes=answer)

    def _in(self, username: str, token_expires_ms: int | None = None) -> None:
        principal = f"User:{username}"
        if self._previous is not None and principal != self._previous:
            raise SaslError(
                f"re-authenticated as {principal}, but this connection is {self._previous}: "
                "a connection keeps its principal (open another for another user)"
            )
        self.principal, self._previous = principal, None
        self._logged_in_at = now = _monotonic_ms()
        max_ms = self._listener.max_reauth_ms
        if max_ms > 0:  # (Kafka: without it, an OAUTHBEARER token's expiry is not enforced)
            lasts = max_ms
            if token_expires_ms is not None:  # (the wall clock's, read once, here)
                # a token taken inside the clock skew may be past its time already: its
                # session lasts long enough for the client to log in again (one a second
                # at most, Kafka's) rather than a moment it could never use
                left = max(token_expires_ms - _wall_ms(), _SHORTEST_TOKEN_SESSION_MS)
                lasts = min(lasts, left)
            self.expires_ms = now + lasts
        _log.debug(
            "sasl.authenticated",
            peer=self._peer,
            listener=self._listener.name,
            mechanism=self._mechanism,
            principal=self.principal,
        )


async def _checked(bearer: BearerChecker, token: str, peer: str) -> Token:
    """The token checked; anything the check did not foresee is a refusal too (logged
    once with its traceback), never an error out of the authenticator."""
    try:
        return await bearer.check(token)
    except SaslError:
        raise
    except Exception:
        _log.exception("sasl.oauthbearer_check_failed", peer=peer)
        raise SaslError("OAUTHBEARER: the token cannot be read") from None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


_MIN_REAUTH_INTERVAL_MS = 1000
_SHORTEST_TOKEN_SESSION_MS = 2 * _MIN_REAUTH_INTERVAL_MS
"""Kafka's: a re-authentication starts at most a second after the last login."""


def _refuse(response: Any, error: ApiError) -> Any:
    response.error_code = error.code
    response.error_message = str(error)
    return response


@dataclass(slots=True)
class _Read:
    version: int
    config: dict[str, str] = field(default_factory=dict)


class ScramCredentials:
    """SCRAM credentials in ZooKeeper (``/config/users/<name>``, Kafka's layout)."""

    def __init__(self, zk: ZkBridge) -> None:
        self._zk = zk
        self._last: dict[tuple[str, str], ScramCredential] = {}
        """The last credential read per (user, mechanism): used when ZooKeeper cannot
        answer, so a ZooKeeper outage does not lock every client out."""

    async def get(self, user: str, mechanism: str) -> ScramCredential | None:
        try:
            read = await self._read(user)
        except CorruptZnode as exc:  # before ZkError, its base: a bad znode is no outage
            _log.warning("sasl.credential_unreadable", user=user, error=str(exc))
            return None
        except ZkError as exc:
            if (user, mechanism) in self._last:
                _log.warning("sasl.credential_from_cache", user=user, error=str(exc))
                return self._last[(user, mechanism)]
            raise SaslError("the credential store (ZooKeeper) cannot be read now") from None
        text = read.config.get(mechanism)
        credential = None
        if text is not None:
            try:
                credential = ScramCredential.from_text(text)
            except SaslError as exc:
                _log.warning("sasl.credential_unreadable", user=user, error=str(exc))
        # only credentials that exist are kept: a stranger naming made-up users before
        # logging in must not grow this; and a bounded number of them
        self._last.pop((user, mechanism), None)
        if credential is not None:
            if len(self._last) >= _CACHED_CREDENTIALS:
                self._last.pop(next(iter(self._last)))
            self._last[(user, mechanism)] = credential
        return credential

    async def _read(self, user: str) -> _Read:
        path = paths.user_config(user)
        try:
            data, stat = await self._zk.get(path)
        except NoNode:
            return _Read(CREATE)
        return _Read(stat.version, entity_config_from_json(path, data))

    async def describe(
        self, request: DescribeUserScramCredentialsRequest
    ) -> DescribeUserScramCredentialsResponse:
        names = [u.name for u in request.users or []]
        if not names:
            try:
                children = await self._zk.get_children(paths.USER_CONFIGS)
            except NoNode:
                children = []
            every = True
            names = sorted(paths.user_of(c) for c in children)
        else:
            every = False
        results: list[DescribeUserScramCredentialsResult] = []
        seen: set[str] = set()
        for name in names:
            if name in seen:
                results.append(
                    _describe_error(
                        name, DuplicateResourceError(f"user {name} is named twice in the request")
                    )
                )
                continue
            seen.add(name)
            try:
                read = await self._read(name)
            except (ZkError, CorruptZnode) as exc:
                results.append(_describe_error(name, KafkaStorageError(str(exc))))
                continue
            infos = []
            for mechanism, code in SCRAM_MECHANISM_CODES.items():
                text = read.config.get(mechanism)
                if text is None:
                    continue
                try:
                    iterations = ScramCredential.from_text(text).iterations
                except SaslError:
                    continue
                infos.append(CredentialInfo(mechanism=code, iterations=iterations))
            if infos:
                results.append(
                    DescribeUserScramCredentialsResult(user=name, credential_infos=infos)
                )
            elif not every:
                results.append(
                    _describe_error(
                        name, ResourceNotFoundError(f"user {name} has no SCRAM credential")
                    )
                )
        return DescribeUserScramCredentialsResponse(results=results)

    async def alter(
        self, request: AlterUserScramCredentialsRequest
    ) -> AlterUserScramCredentialsResponse:
        changes: dict[str, list[tuple[str, str | None]]] = {}
        errors: dict[str, ApiError] = {}
        named: dict[str, set[str]] = {}
        items: list[ScramCredentialDeletion | ScramCredentialUpsertion] = [
            *request.deletions,
            *request.upsertions,
        ]
        for item in items:
            mechanism = _MECHANISM_NAMES.get(item.mechanism)
            if mechanism is None:
                errors.setdefault(
                    item.name,
                    UnacceptableCredentialError(
                        f"unknown SCRAM mechanism {item.mechanism} (1: SCRAM-SHA-256, "
                        "2: SCRAM-SHA-512)"
                    ),
                )
                continue
            if not item.name:
                errors.setdefault(item.name, UnacceptableCredentialError("empty user name"))
                continue
            if mechanism in named.setdefault(item.name, set()):
                errors.setdefault(
                    item.name,
                    DuplicateResourceError(
                        f"user {item.name}: {mechanism} is changed twice in one request"
                    ),
                )
                continue
            named[item.name].add(mechanism)
            if isinstance(item, ScramCredentialUpsertion):
                problem = _unacceptable(item.iterations, item.salt, item.salted_password)
                if problem:
                    errors.setdefault(
                        item.name, UnacceptableCredentialError(f"user {item.name}: {problem}")
                    )
                    continue
                credential = ScramCredential.from_salted(
                    mechanism, bytes(item.salted_password), bytes(item.salt), item.iterations
                )
                changes.setdefault(item.name, []).append((mechanism, credential.to_text()))
            else:
                changes.setdefault(item.name, []).append((mechanism, None))
        results: list[AlterUserScramCredentialsResult] = []
        for name in dict.fromkeys(named | errors):
            error = errors.get(name)
            if error is None:
                try:
                    await self._write(name, changes.get(name, []))
                except ApiError as exc:  # one user's failure is its own result
                    error = exc
                except (ZkError, CorruptZnode) as exc:
                    error = KafkaStorageError(f"writing {name}'s credentials failed: {exc}")
            result = AlterUserScramCredentialsResult(user=name)
            if error is not None:
                result.error_code = error.code
                result.error_message = str(error)
            results.append(result)
        return AlterUserScramCredentialsResponse(results=results)

    async def _write(self, user: str, changes: list[tuple[str, str | None]]) -> None:
        tried = False  # a write went out (its answer may have been lost with the connection)
        for _ in range(5):  # a concurrent writer of the same user: read again, redo
            read = await self._read(user)
            config = dict(read.config)
            for mechanism, text in changes:
                if text is None:
                    if mechanism not in config:
                        if tried:  # (deleted by the write whose answer was lost)
                            continue
                        raise ResourceNotFoundError(
                            f"user {user} has no {mechanism} credential to delete"
                        )
                    config.pop(mechanism)
                else:
                    config[mechanism] = text
            if tried and config == read.config:
                break  # made by the write whose answer was lost (or a racer's the same)
            if read.version == CREATE:
                await self._zk.ensure_path(paths.USER_CONFIGS)
            tried = True
            try:
                await self._zk.write_and_notify(
                    paths.user_config(user),
                    topic_config_json(config),
                    version=read.version,
                    notice_prefix=f"{paths.CONFIG_CHANGES}/{paths.CONFIG_CHANGE_PREFIX}",
                    notice=config_change_json(paths.user_config(user).rsplit("/", 1)[1], "users"),
                )
            except (VersionConflict, NodeExists, NoNode, ZkConnectionLoss):
                continue  # (lost with the connection: the read again shows if it was made)
            break
        else:
            raise KafkaStorageError(f"user {user}'s credentials kept changing under us; try again")
        for mechanism, _ in changes:
            self._last.pop((user, mechanism), None)
        _log.info("sasl.credentials_altered", user=user, mechanisms=[m for m, _ in changes])


def _unacceptable(iterations: int, salt: bytes, salted: bytes) -> str | None:
    if not SCRAM_MIN_ITERATIONS <= iterations <= SCRAM_MAX_ITERATIONS:
        return (
            f"{iterations} iterations: SCRAM needs {SCRAM_MIN_ITERATIONS} to {SCRAM_MAX_ITERATIONS}"
        )
    if not salt or not salted:
        return "an empty salt or salted password"
    return None


def _describe_error(name: str, error: ApiError) -> DescribeUserScramCredentialsResult:
    return DescribeUserScramCredentialsResult(
        user=name, error_code=error.code, error_message=str(error)
    )
