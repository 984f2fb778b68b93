"""How a client reaches brokers: plain TCP or TLS, with or without a SASL login.

As aiokafka: ``security_protocol`` is PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. TLS
(SSL, SASL_SSL) takes an ``ssl_context``, which :func:`create_ssl_context` makes from PEM
files (the CA that signed the brokers' certificates, and for listeners with
``ssl.client.auth`` the client's own certificate and key); the broker's certificate must
name the host the client connects to (its advertised listener), unless
``check_hostname=False``. SASL (SASL_PLAINTEXT, SASL_SSL) takes ``sasl_mechanism`` (PLAIN,
SCRAM-SHA-256 or SCRAM-SHA-512), ``sasl_plain_username`` and ``sasl_plain_password``
(aiokafka's names, for SCRAM too); each connection logs in before its first request.
OAUTHBEARER takes ``sasl_oauth_token_provider`` instead (aiokafka's): an object whose
``async token()`` gives the bearer token (a JWT from the identity provider), asked
again at each login, and whose ``extensions()`` (if any) gives SASL extensions.
:class:`UnsecuredTokenProvider` makes unsigned tokens, for development brokers that take
them (Kafka's ``unsecuredLoginStringClaim_sub``). GSSAPI (Kerberos) takes the
environment's Kerberos credentials and ``sasl_kerberos_service_name`` (default
``kafka``) and ``sasl_kerberos_domain_name`` (aiokafka's; see :mod:`client.kerberos`).
"""

from __future__ import annotations

import inspect
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from client.errors import ConfigurationError
from client.oauth import ClientCredentialsTokenProvider
from protocol.kerberos import GSSAPI
from protocol.oauthbearer import OAUTHBEARER, unsecured_token
from protocol.sasl import MECHANISMS as _PASSWORD_MECHANISMS
from protocol.sasl import SaslError, parse_jaas

__all__ = [
    "MECHANISMS",
    "SECURITY_PROTOCOLS",
    "SaslLogin",
    "TokenProvider",
    "UnsecuredTokenProvider",
    "create_ssl_context",
    "parse_properties",
    "security_for",
    "settings_from_properties",
]

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_TLS = ("SSL", "SASL_SSL")
_SASL = ("SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = (*_PASSWORD_MECHANISMS, OAUTHBEARER, GSSAPI)


@runtime_checkable
class TokenProvider(Protocol):
    """Gives OAUTHBEARER bearer tokens (aiokafka's AbstractTokenProvider): ``token()`` is
    awaited at each login, so it may fetch, cache and renew; an ``extensions()`` method,
    if it has one, gives SASL extensions (key=value) to send with the token."""

    async def token(self) -> str: ...


class UnsecuredTokenProvider:
    """Unsigned tokens naming ``principal`` (Kafka's OAuthBearerUnsecuredLoginCallbackHandler):
    only a broker without ``sasl.oauthbearer.jwks.endpoint.url`` takes them, for
    development. ``claims`` adds claims (``scope``: a list of strings)."""

    def __init__(
        self,
        principal: str,
        *,
        lifetime_s: int = 3600,
        principal_claim: str = "sub",
        claims: Mapping[str, object] | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> None:
        if not principal:
            raise ConfigurationError("UnsecuredTokenProvider needs a principal")
        self.principal = principal
        self._lifetime_s = lifetime_s
        self._principal_claim = principal_claim
        self._claims = dict(claims or {})
        self._extensions = dict(extensions or {})

    async def token(self) -> str:
        return unsecured_token(
            self.principal,
            time.time_ns() // 1_000_000,
            lifetime_s=self._lifetime_s,
            principal_claim=self._principal_claim,
            claims=self._claims,
        )

    def extensions(self) -> dict[str, str]:
        return dict(self._extensions)


@dataclass(frozen=True, slots=True)
class SaslLogin:
    """Who the client is on a SASL listener."""

    mechanism: str
    username: str
    password: str = ""
    token_provider: TokenProvider | None = field(default=None, compare=False)
    token_auth: bool = False
    """SCRAM with a delegation token (Kafka's ``tokenauth=true`` extension): the token's
    id as the username, its HMAC in base64 as the password."""
    kerberos_service_name: str = "kafka"
    """GSSAPI: the broker's principal is ``<this>/<host>``."""
    kerberos_domain_name: str | None = None
    """GSSAPI: the host in the broker's principal, if not the one connected to."""
    kerberos_keytab: str | None = None
    """GSSAPI: a keytab of the client's own, with :attr:`kerberos_principal`'s key (None:
    the environment's credentials)."""
    kerberos_principal: str | None = None

    def __repr__(self) -> str:  # never the password, in a log or a traceback
        return f"SaslLogin({self.mechanism}, {self.username!r})"


def create_ssl_context(
    *,
    cafile: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    password: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A TLS 1.2+ client context: trusts ``cafile`` (the system's CAs without one), shows
    ``certfile`` (with ``keyfile``, or the key in the same PEM) when given."""
    try:
        context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"ssl cafile {str(cafile)!r}: cannot load CA certificates from it ({exc}); "
            "it must be a PEM file of them"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if certfile is not None:
        try:
            context.load_cert_chain(
                str(certfile), None if keyfile is None else str(keyfile), password=password
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"ssl certfile {str(certfile)!r}: cannot load a certificate and key ({exc}); "
                "give PEM files (the key in certfile or keyfile, password if it is encrypted)"
            ) from None
    elif keyfile is not None:
        raise ConfigurationError("ssl keyfile given without certfile: give both")
    return context


def security_for(
    security_protocol: str = "PLAINTEXT",
    ssl_context: ssl.SSLContext | None = None,
    sasl_mechanism: str = "PLAIN",
    sasl_plain_username: str | None = None,
    sasl_plain_password: str | None = None,
    *,
    sasl_oauth_token_provider: TokenProvider | None = None,
    sasl_token_auth: bool = False,
    sasl_kerberos_service_name: str = "kafka",
    sasl_kerberos_domain_name: str | None = None,
    sasl_kerberos_keytab: str | None = None,
    sasl_kerberos_principal: str | None = None,
) -> tuple[ssl.SSLContext | None, SaslLogin | None]:
    """What connections use: a TLS context (None: plain TCP) and a SASL login (None:
    none), or why the settings do not fit. ``sasl_token_auth``: the SCRAM login is a
    delegation token's (Kafka's JAAS ``tokenauth="true"``)."""
    tls = _tls_for(security_protocol, ssl_context)
    login: SaslLogin | None = None
    if security_protocol in _SASL:
        if sasl_mechanism not in MECHANISMS:
            raise ConfigurationError(
                f"sasl_mechanism={sasl_mechanism!r}: use one of {', '.join(MECHANISMS)}"
            )
        if sasl_mechanism == OAUTHBEARER:
            if not isinstance(
                sasl_oauth_token_provider, TokenProvider
            ) or not inspect.iscoroutinefunction(sasl_oauth_token_provider.token):
                raise ConfigurationError(
                    "sasl_mechanism='OAUTHBEARER' needs sasl_oauth_token_provider: an object "
                    "with an async def token() giving the bearer token (see "
                    "client.UnsecuredTokenProvider for development)"
                )
            return tls, SaslLogin(OAUTHBEARER, "", token_provider=sasl_oauth_token_provider)
        if sasl_oauth_token_provider is not None:
            raise ConfigurationError(
                f"sasl_oauth_token_provider is given but sasl_mechanism is {sasl_mechanism}; "
                "set sasl_mechanism='OAUTHBEARER'"
            )
        if sasl_mechanism == GSSAPI:
            if sasl_plain_username is not None or sasl_plain_password is not None:
                raise ConfigurationError(
                    "sasl_mechanism='GSSAPI' logs in with Kerberos credentials (kinit, or "
                    "KRB5_CLIENT_KTNAME), not sasl_plain_username/sasl_plain_password"
                )
            return tls, _kerberos_login(
                sasl_kerberos_service_name,
                sasl_kerberos_domain_name,
                sasl_kerberos_keytab,
                sasl_kerberos_principal,
            )
        if not sasl_plain_username or not sasl_plain_password:
            raise ConfigurationError(
                f"security_protocol='{security_protocol}' needs sasl_plain_username and "
                f"sasl_plain_password (for {sasl_mechanism})"
            )
        if sasl_token_auth and not sasl_mechanism.startswith("SCRAM-"):
            raise ConfigurationError(
                f"sasl_token_auth logs in with a delegation token over SCRAM; set "
                f"sasl_mechanism='SCRAM-SHA-256' or 'SCRAM-SHA-512' (not {sasl_mechanism})"
            )
        login = SaslLogin(
            sasl_mechanism, sasl_plain_username, sasl_plain_password, token_auth=sasl_token_auth
        )
    elif sasl_plain_username is not None or sasl_plain_password is not None:
        raise ConfigurationError(
            f"sasl_plain_username/sasl_plain_password are given but security_protocol is "
            f"{security_protocol}; set security_protocol='SASL_PLAINTEXT' or 'SASL_SSL'"
        )
    return tls, login


def _kerberos_login(
    service_name: str, domain_name: str | None, keytab: str | None, principal: str | None
) -> SaslLogin:
    if (keytab is None) != (principal is None):
        raise ConfigurationError(
            "sasl_kerberos_keytab and sasl_kerberos_principal go together: the keytab "
            "holding the key of the client's principal (or neither: the environment's "
            "Kerberos credentials)"
        )
    if not service_name:
        raise ConfigurationError(
            "sasl_mechanism='GSSAPI' needs sasl_kerberos_service_name: the primary of the "
            "brokers' principals (kafka for kafka/host@REALM)"
        )
    return SaslLogin(
        GSSAPI,
        "",
        kerberos_service_name=service_name,
        kerberos_domain_name=domain_name,
        kerberos_keytab=keytab,
        kerberos_principal=principal,
    )


def _tls_for(security_protocol: str, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    if security_protocol not in SECURITY_PROTOCOLS:
        raise ConfigurationError(
            f"security_protocol={security_protocol!r}: use one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    if security_protocol in _TLS:
        if ssl_context is None:
            raise ConfigurationError(
                f"security_protocol='{security_protocol}' needs ssl_context: make one with "
                "client.create_ssl_context(cafile=...)"
            )
        return ssl_context
    if ssl_context is not None:
        raise ConfigurationError(
            f"ssl_context is given but security_protocol is {security_protocol}; "
            "set security_protocol='SSL' (or 'SASL_SSL') to use it"
        )
    return None


_PROPERTIES = {
    "security.protocol",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanism",
    "sasl.jaas.config",
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.oauthbearer.header.urlencode",
    "sasl.login.callback.handler.class",
    "sasl.kerberos.service.name",
}


def parse_properties(text: str) -> dict[str, str]:
    """A Java properties file's ``key=value`` lines (``#`` and ``!`` comments)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def settings_from_properties(props: dict[str, str], source: str) -> dict[str, object]:
    """The client settings a Kafka ``--command-config`` file's security properties make:
    ``security_protocol``, ``ssl_context`` and the ``sasl_*`` login (from
    ``sasl.mechanism`` and the ``username``/``password`` of ``sasl.jaas.config``). PEM
    files only (Kafka's ``ssl.keystore.type=PEM``); other client properties are left to
    their own flags."""
    unknown = sorted(
        k for k in props if k.startswith(("ssl.", "security.", "sasl.")) and k not in _PROPERTIES
    )
    if unknown:
        raise ConfigurationError(
            f"{source}: {unknown[0]} is not supported (known: {', '.join(sorted(_PROPERTIES))})"
        )
    for kind in ("ssl.truststore.type", "ssl.keystore.type"):
        if props.get(kind, "PEM").upper() != "PEM":
            raise ConfigurationError(
                f"{source}: {kind}={props[kind]}: only PEM files are read; convert the store "
                "(e.g. keytool -importkeystore, then openssl pkcs12 -nodes)"
            )
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigurationError(
            f"{source}: security.protocol={props['security.protocol']}: use one of "
            f"{', '.join(SECURITY_PROTOCOLS)}"
        )
    settings: dict[str, object] = {"security_protocol": protocol}
    if protocol in _TLS:
        settings["ssl_context"] = create_ssl_context(
            cafile=props.get("ssl.truststore.location") or None,
            certfile=props.get("ssl.keystore.location") or None,
            password=props.get("ssl.key.password") or None,
            check_hostname=props.get("ssl.endpoint.identification.algorithm", "https") == "https",
        )
    if protocol in _SASL:
        settings.update(_sasl_settings(props, source))
    return settings


def _sasl_settings(props: dict[str, str], source: str) -> dict[str, object]:
    """The ``sasl_*`` settings of Kafka's SASL properties."""
    mechanism = props.get("sasl.mechanism", "GSSAPI")
    jaas = props.get("sasl.jaas.config", "")
    try:
        # (GSSAPI without one: the environment's credentials, as librdkafka's)
        options = parse_jaas(jaas) if jaas or mechanism != GSSAPI else {}
    except SaslError as exc:
        raise ConfigurationError(f"{source}: sasl.jaas.config: {exc}") from None
    settings: dict[str, object] = {"sasl_mechanism": mechanism}
    if settings["sasl_mechanism"] == OAUTHBEARER:
        url = props.get("sasl.oauthbearer.token.endpoint.url")
        settings["sasl_oauth_token_provider"] = (
            _client_credentials(
                url,
                options,
                source,
                urlencode=props.get("sasl.oauthbearer.header.urlencode", "false") == "true",
            )
            if url
            else _unsecured_login(options, source)
        )
        return settings
    if settings["sasl_mechanism"] == GSSAPI:
        return {**settings, **_kerberos_settings(props, options, source)}
    settings["sasl_plain_username"] = options.get("username")
    settings["sasl_plain_password"] = options.get("password")
    if options.get("tokenauth", "false").lower() == "true":  # a delegation token
        settings["sasl_token_auth"] = True
    if settings["sasl_mechanism"] not in MECHANISMS:
        raise ConfigurationError(
            f"{source}: sasl.mechanism={settings['sasl_mechanism']}: use one of "
            f"{', '.join(MECHANISMS)}"
        )
    if not options.get("username") or not options.get("password"):
        raise ConfigurationError(f'{source}: sasl.jaas.config needs username="..." password="..."')
    return settings


_UNSECURED = "unsecuredLogin"


def _kerberos_settings(
    props: dict[str, str], options: dict[str, str], source: str
) -> dict[str, object]:
    """GSSAPI's client settings from Kafka's properties: the service name, and a keytab
    of the client's own if its Krb5LoginModule line names one (else a ticket cache)."""
    settings: dict[str, object] = {
        # (Kafka's JAAS serviceName option is the older spelling)
        "sasl_kerberos_service_name": props.get(
            "sasl.kerberos.service.name", options.get("serviceName", "")
        )
    }
    if options.get("useKeyTab", "false").lower() == "true":
        if not options.get("keyTab") or not options.get("principal"):
            raise ConfigurationError(
                f'{source}: sasl.jaas.config with useKeyTab=true needs keyTab="..." and '
                'principal="..."'
            )
        settings["sasl_kerberos_keytab"] = options["keyTab"]
        settings["sasl_kerberos_principal"] = options["principal"]
    return settings


def _unsecured_login(options: Mapping[str, str], source: str) -> UnsecuredTokenProvider:
    """Kafka's OAuthBearerLoginModule options for unsigned tokens:
    ``unsecuredLoginStringClaim_<name>``, ``unsecuredLoginNumberClaim_<name>``,
    ``unsecuredLoginListClaim_<name>`` (its first character separates the items),
    ``unsecuredLoginExtension_<name>``, ``unsecuredLoginPrincipalClaimName`` (default
    sub) and ``unsecuredLoginLifetimeSeconds`` (default 3600)."""
    claims: dict[str, object] = {}
    extensions: dict[str, str] = {}
    for key, value in options.items():
        kind, _, name = key.partition("_")
        if kind == f"{_UNSECURED}StringClaim" and name:
            claims[name] = value
        elif kind == f"{_UNSECURED}NumberClaim" and name:
            try:
                claims[name] = json.loads(value)
            except ValueError:
                raise ConfigurationError(f"{source}: {key}={value!r} is not a number") from None
        elif kind == f"{_UNSECURED}ListClaim" and name:
            claims[name] = [v for v in value[1:].split(value[0])] if value else []
        elif kind == f"{_UNSECURED}Extension" and name:
            extensions[name] = value
    principal_claim = options.get(f"{_UNSECURED}PrincipalClaimName", "sub")
    principal = claims.pop(principal_claim, None)
    if not isinstance(principal, str) or not principal:
        raise ConfigurationError(
            f"{source}: sasl.mechanism=OAUTHBEARER takes Kafka's unsecured login here: "
            f'give {_UNSECURED}StringClaim_{principal_claim}="<user>" in sasl.jaas.config '
            "(for signed tokens, use the client library's sasl_oauth_token_provider)"
        )
    lifetime = options.get(f"{_UNSECURED}LifetimeSeconds", "3600")
    if not lifetime.isdigit():
        raise ConfigurationError(f"{source}: {_UNSECURED}LifetimeSeconds={lifetime!r}: seconds")
    return UnsecuredTokenProvider(
        principal,
        lifetime_s=int(lifetime),
        principal_claim=principal_claim,
        claims=claims,
        extensions=extensions,
    )


def _client_credentials(
    url: str, options: Mapping[str, str], source: str, *, urlencode: bool
) -> ClientCredentialsTokenProvider:
    """Kafka's OIDC login: ``sasl.oauthbearer.token.endpoint.url`` (and
    ``sasl.oauthbearer.header.urlencode``) and the JAAS options ``clientId``,
    ``clientSecret`` and ``scope``."""
    if not options.get("clientId") or not options.get("clientSecret"):
        raise ConfigurationError(
            f'{source}: sasl.oauthbearer.token.endpoint.url needs clientId="..." '
            'clientSecret="..." in sasl.jaas.config'
        )
    return ClientCredentialsTokenProvider(
        url,
        options["clientId"],
        options["clientSecret"],
        scope=options.get("scope"),
        urlencode=urlencode,
    )
