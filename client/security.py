"""How a client reaches brokers: plain TCP, or TLS to an SSL listener.

As aiokafka: ``security_protocol="SSL"`` with an ``ssl_context``, which
:func:`create_ssl_context` makes from PEM files (the CA that signed the brokers'
certificates, and for listeners with ``ssl.client.auth`` the client's own certificate and
key). The broker's certificate must name the host the client connects to (its advertised
listener), unless ``check_hostname=False``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from client.errors import ConfigurationError

__all__ = [
    "SECURITY_PROTOCOLS",
    "create_ssl_context",
    "parse_properties",
    "settings_from_properties",
    "tls_for",
]

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL")


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


def tls_for(security_protocol: str, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The context connections use (None: plain TCP), or why the settings do not fit."""
    if security_protocol not in SECURITY_PROTOCOLS:
        raise ConfigurationError(
            f"security_protocol={security_protocol!r}: use PLAINTEXT or SSL (SASL is not supported)"
        )
    if security_protocol == "PLAINTEXT":
        if ssl_context is not None:
            raise ConfigurationError(
                "ssl_context is given but security_protocol is PLAINTEXT; "
                "set security_protocol='SSL' to use it"
            )
        return None
    if ssl_context is None:
        raise ConfigurationError(
            "security_protocol='SSL' needs ssl_context: make one with "
            "client.create_ssl_context(cafile=...)"
        )
    return ssl_context


_PROPERTIES = {
    "security.protocol",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
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
    ``security_protocol`` and ``ssl_context``. PEM files only (Kafka's
    ``ssl.keystore.type=PEM``); other client properties are left to their own flags."""
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
    if protocol == "PLAINTEXT":
        return {"security_protocol": protocol}
    if protocol != "SSL":
        raise ConfigurationError(
            f"{source}: security.protocol={props['security.protocol']}: use PLAINTEXT or SSL"
        )
    context = create_ssl_context(
        cafile=props.get("ssl.truststore.location") or None,
        certfile=props.get("ssl.keystore.location") or None,
        password=props.get("ssl.key.password") or None,
        check_hostname=props.get("ssl.endpoint.identification.algorithm", "https") == "https",
    )
    return {"security_protocol": "SSL", "ssl_context": context}
