"""TLS for SSL listeners and for a broker's connections to other brokers over one.

Kafka's settings, with PEM files (Kafka's ``ssl.keystore.type=PEM``): ``ssl.keystore.location``
holds the broker's certificate (chain) and private key, ``ssl.key.password`` opens an
encrypted key, ``ssl.truststore.location`` the CA certificates it trusts (the system's when
empty), ``ssl.client.auth`` whether clients must show a certificate, and
``ssl.endpoint.identification.algorithm`` whether a broker connecting to another checks the
name in that broker's certificate. TLS 1.2 at least.

``ssl.keystore.location`` and ``ssl.truststore.location`` are dynamic for one broker
(Kafka's per-broker dynamic SSL configs): :class:`TlsContexts` builds both contexts
anew from the files and swaps them in. A listener's handshakes take the current one (its
first context's SNI callback hands each new connection the current context, which
OpenSSL then uses for the certificate shown and the client certificates trusted), and
each new connection to another broker asks for the current one; connections made keep
theirs.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from broker.config import TLS_PROTOCOLS, BrokerConfig, ConfigError, listener_name

__all__ = [
    "TlsContexts",
    "check_change",
    "check_files",
    "check_identity",
    "client_context",
    "contexts",
    "server_context",
]

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
    # no session tickets (TLS 1.2's, nor TLS 1.3's): a session resumed from one would skip
    # the client certificate's check against a truststore changed since (TlsContexts);
    # Kafka's connections are long-lived, and a full handshake costs a millisecond
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
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


def check_files(config: BrokerConfig) -> None:
    """Raise :class:`ConfigError` unless ``config``'s keystore (a certificate and its
    private key, opened with ``ssl.key.password``) and truststore (CA certificates) load,
    and are given where the start requires them (a keystore for SSL listeners; a
    truststore where they ask for client certificates). Reads a few KB of PEM: a change
    checks them in a thread first; the reload that follows reads them on the loop."""
    secure = _has_tls_listeners(config)
    if config["ssl.keystore.location"] or secure:
        _load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), config)
    if config["ssl.truststore.location"]:
        _load_trust(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), config, ssl.Purpose.SERVER_AUTH)
    elif secure and config["ssl.client.auth"] != "none":
        raise ConfigError(  # (what the start says too: the system's CAs would be trusted)
            f"ssl.client.auth={config['ssl.client.auth']} needs ssl.truststore.location: the "
            "CA certificates that signed the clients' certificates (PEM)"
        )


def check_change(live: TlsContexts, changed: BrokerConfig) -> None:
    """Raise :class:`ConfigError` if the files of ``changed`` would cut this broker off
    from the others over a TLS inter-broker listener (Kafka's SslEngineValidator): the
    others still have files like the ones in use (``live``'s, as loaded: a file rotated
    in place is not read back as the old one), so a handshake of this broker's new client
    side with its old server side, and of its old client side with its new server side,
    must both succeed. In memory, no socket; host names are not checked here."""
    old_server, old_client = live.server, live.checking
    if old_server is None or old_client is None:
        return  # the inter-broker listener is not TLS
    new_server, new_client = server_context(changed), client_context(changed)
    new_client.check_hostname = False
    for client, server, which in (
        (new_client, old_server, "this broker's new files connecting to another's old ones"),
        (old_client, new_server, "another broker's old files connecting to this one's new"),
    ):
        why = _handshake(client, server)
        if why is not None:
            raise ConfigError(
                f"the inter-broker listener would fail ({which}: {why}): the brokers must "
                "trust each other's certificates throughout; add the new CA to every "
                "broker's truststore first, then change certificates, then take the old "
                "CA out"
            )


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> str | None:
    """A TLS handshake between the two contexts through memory: None, or why it failed."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    sides = [
        (client.wrap_bio(client_in, client_out, server_side=False), client_out, server_in),
        (server.wrap_bio(server_in, server_out, server_side=True), server_out, client_in),
    ]
    done = [False, False]
    for _ in range(16):  # a handshake is a few flights
        for i, (side, out, peer_in) in enumerate(sides):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    return exc.reason or str(exc)
            if out.pending:
                peer_in.write(out.read())
        if all(done) and not client_out.pending and not server_out.pending:
            try:  # TLS 1.3: the server checks the client's certificate after its Finished
                sides[1][0].read(1)
            except ssl.SSLWantReadError:
                return None
            except ssl.SSLError as exc:
                return exc.reason or str(exc)
            return None
    return "the handshake did not finish"


def _has_tls_listeners(config: BrokerConfig) -> bool:
    protocols = config.listener_protocols
    return any(protocols[listener_name(item)] in TLS_PROTOCOLS for item in config["listeners"])


class TlsContexts:
    """The broker's TLS contexts, replaced whole when its keystore or truststore changes
    (see the module's doc)."""

    def __init__(self, config: BrokerConfig) -> None:
        self.server, self.peer = contexts(config)  # a bad file stops the start here
        self.identity = identity(config) if self.server is not None else None
        """The certificate in use's subject and alternative names: a new one's are
        checked against them (:func:`check_identity`)."""
        self.checking = _checking(self.peer, config)
        """The peer context's files, without host names checked: :func:`check_change`'s
        old client side."""
        self.error: str | None = None
        """Why the last reload failed (None: it did not): the contexts in use are older."""
        self._listening = self.server
        if self._listening is not None:
            self._listening.sni_callback = self._current

    def listening(self) -> ssl.SSLContext | None:
        """What the SSL listeners are made with (None: there are none)."""
        return self._listening

    def peer_context(self) -> ssl.SSLContext | None:
        """What a new connection to another broker speaks TLS with, now."""
        return self.peer

    def _current(self, connection: ssl.SSLObject, _name: str | None, made: ssl.SSLContext) -> None:
        # (called by OpenSSL on every ClientHello, with or without a server name)
        # (no session is resumed, which would skip the client certificate's check against
        # the current truststore: server contexts issue no tickets, and Python's keep no
        # sessions by id; test_tls_contexts holds that)
        if self.server is not None and made is not self.server:
            connection.context = self.server

    def reload(self, config: BrokerConfig) -> bool:
        """Both contexts built anew from ``config``'s files and swapped in; a file that
        does not load raises ConfigError and changes nothing. False if there is no TLS
        here."""
        if self.server is None and self.peer is None:
            return False
        try:
            server, peer = contexts(config)
            checking = _checking(peer, config)
            named = identity(config) if server is not None else None
        except ConfigError as exc:
            self.error = str(exc)
            raise
        self.server, self.peer, self.checking, self.identity = server, peer, checking, named
        self.error = None
        return True


def identity(config: BrokerConfig) -> tuple[str, frozenset[str]] | None:
    """The subject (DN, RFC 4514) and subject alternative names of the certificate in
    ``config``'s keystore (its first: the broker's own); None without one."""
    location = config["ssl.keystore.location"]
    if not location:
        return None
    try:
        (certificate, *_) = x509.load_pem_x509_certificates(Path(location).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"ssl.keystore.location={location!r}: cannot read its certificate ({exc})"
        ) from None
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        sans = frozenset(str(getattr(n, "value", n)) for n in names.value)
    except x509.ExtensionNotFound:
        sans = frozenset()
    return certificate.subject.rfc4514_string(), sans


def check_identity(live: TlsContexts, changed: BrokerConfig) -> None:
    """Raise :class:`ConfigError` if ``changed``'s keystore holds a certificate of another
    subject than the one in use, or one without some of its subject alternative names,
    unless ``ssl.allow.dn.changes`` / ``ssl.allow.san.changes`` (Kafka's checks, KIP-978):
    a broker's new certificate must still name the broker clients and peers know."""
    old, new = live.identity, identity(changed)
    if old is None or new is None:
        return
    if new[0] != old[0] and not changed["ssl.allow.dn.changes"]:
        raise ConfigError(
            f"the new keystore's certificate is for {new[0]!r}, the one in use for "
            f"{old[0]!r}: set ssl.allow.dn.changes=true to allow another subject"
        )
    dropped = old[1] - new[1]
    if dropped and not changed["ssl.allow.san.changes"]:
        raise ConfigError(
            f"the new keystore's certificate lacks {', '.join(sorted(dropped))} of the one in "
            "use's subject alternative names: set ssl.allow.san.changes=true to allow it"
        )


def _checking(peer: ssl.SSLContext | None, config: BrokerConfig) -> ssl.SSLContext | None:
    if peer is None:
        return None
    context = client_context(config)
    context.check_hostname = False
    return context


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
