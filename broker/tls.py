"""TLS for SSL listeners and for a broker's connections to other brokers over one.

Kafka's settings, with PEM files (Kafka's ``ssl.keystore.type=PEM``): ``ssl.keystore.location``
holds the broker's certificate (chain) and private key, ``ssl.key.password`` opens an
encrypted key, ``ssl.truststore.location`` the CA certificates it trusts (the system's when
empty), ``ssl.client.auth`` whether clients must show a certificate, and
``ssl.endpoint.identification.algorithm`` whether a broker connecting to another checks the
name in that broker's certificate. TLS 1.2 at least.
"""

from __future__ import annotations

import ssl

from broker.config import TLS_PROTOCOLS, BrokerConfig, ConfigError, listener_name

__all__ = ["check_keystore", "client_context", "contexts", "reload_keystore", "server_context"]

_CLIENT_AUTH = {
    "none": ssl.CERT_NONE,
    "requested": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def contexts(config: BrokerConfig) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """What the broker's SSL listeners serve with, and what it reaches other brokers
    with (None where plaintext); loading them first is how a bad file stops the start."""
    protocols = config.listener_protocols
    names = [listener_name(item) for item in config["listeners"]]
    server = server_context(config) if any(protocols[n] in TLS_PROTOCOLS for n in names) else None
    peer = (
        client_context(config) if protocols[config.inter_broker_listener] in TLS_PROTOCOLS else None
    )
    return server, peer


def server_context(config: BrokerConfig) -> ssl.SSLContext:
    """What an SSL listener serves with."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, config)
    context.verify_mode = _CLIENT_AUTH[config["ssl.client.auth"]]
    if context.verify_mode != ssl.CERT_NONE:
        _load_trust(context, config, ssl.Purpose.CLIENT_AUTH)
    return context


def client_context(config: BrokerConfig) -> ssl.SSLContext:
    """What this broker connects to another broker's SSL listener with: it checks that
    broker's certificate against the truststore, and shows its own (for a listener with
    ``ssl.client.auth``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = config["ssl.endpoint.identification.algorithm"] == "https"
    _load_trust(context, config, ssl.Purpose.SERVER_AUTH)
    if config["ssl.keystore.location"]:
        _load_identity(context, config)
    return context


def check_keystore(config: BrokerConfig) -> None:
    """Raise :class:`ConfigError` unless ``config``'s keystore loads (a certificate and
    its private key, opened with ``ssl.key.password``). Reads a few KB of PEM: a change
    checks it in a thread first; the reload that follows reads it on the loop."""
    _load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), config)


def reload_keystore(contexts: list[ssl.SSLContext | None], config: BrokerConfig) -> bool:
    """Serve (and show other brokers) the certificate in ``config``'s keystore from the
    next handshake on: each context is changed in place, so the listeners and peer
    connections already made with it take it (a new certificate without a restart, as
    Kafka's dynamic ``ssl.keystore.location``). Checked on a throwaway context first: a
    bad file changes nothing (a failed load could leave a certificate without its key).
    False if there is nothing to reload (no TLS here, or no keystore)."""
    live = [c for c in contexts if c is not None]
    if not live or not config["ssl.keystore.location"]:
        return False
    check_keystore(config)
    for context in live:
        _load_identity(context, config)
    return True


def _load_identity(context: ssl.SSLContext, config: BrokerConfig) -> None:
    location = config["ssl.keystore.location"]
    try:
        context.load_cert_chain(location, password=config["ssl.key.password"] or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ssl.keystore.location={location!r}: cannot load a certificate and private key "
            f"from it ({exc}); it must be a PEM file holding both (and ssl.key.password set "
            "if the key is encrypted)"
        ) from None


def _load_trust(context: ssl.SSLContext, config: BrokerConfig, purpose: ssl.Purpose) -> None:
    location = config["ssl.truststore.location"]
    if not location:
        context.load_default_certs(purpose)
        return
    try:
        context.load_verify_locations(cafile=location)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ssl.truststore.location={location!r}: cannot load CA certificates from it "
            f"({exc}); it must be a PEM file of them"
        ) from None
