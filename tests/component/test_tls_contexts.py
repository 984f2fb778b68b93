"""A broker's TLS contexts replaced whole (dynamic ssl.truststore.location and
ssl.keystore.location), against real TLS connections in-process: a listener made with
the first context serves each new handshake with the current one, TLS 1.2 and 1.3; a
TLS 1.2 session cached before the change is not resumed past it (its client certificate
would go unchecked against the new truststore); no session tickets are issued; new
connections to other brokers take the current client context."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from broker.config import BrokerConfig, ConfigError, load_config
from broker.tls import (
    TlsContexts,
    _handshake,
    check_change,
    check_identity,
    client_context,
    server_context,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    files = {}
    for name in ("old", "new"):
        ca = trustme.CA()
        files[f"{name}-ca"] = folder / f"{name}-ca.pem"
        ca.cert_pem.write_to_path(str(files[f"{name}-ca"]))
        files[f"{name}-client"] = folder / f"{name}-client.pem"
        ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(
            str(files[f"{name}-client"])
        )
        files[f"{name}-broker"] = folder / f"{name}-broker.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(files[f"{name}-broker"])
        )
    return files


def _overrides(pki: dict[str, Path], trusted: str, *, keystore: str = "old") -> list[str]:
    return [
        "broker.id=1",
        "listeners=SSL://127.0.0.1:0",
        f"ssl.keystore.location={pki[f'{keystore}-broker']}",
        f"ssl.truststore.location={pki[f'{trusted}-ca']}",
        "ssl.client.auth=required",
        "ssl.endpoint.identification.algorithm=",
    ]


def _config(pki: dict[str, Path], trusted: str, *, keystore: str = "old") -> BrokerConfig:
    return load_config(env={}, overrides=_overrides(pki, trusted, keystore=keystore))


@pytest.fixture
def listener(pki: dict[str, Path]) -> Iterator[tuple[TlsContexts, int]]:
    """The broker's contexts, trusting the old CA's clients, and a TLS server on
    127.0.0.1 made with the first one (as the broker's listeners are)."""
    contexts = TlsContexts(_config(pki, "old"))
    first = contexts.listening()
    assert first is not None
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)  # (so that the thread sees the stop)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(10)
            try:
                with first.wrap_socket(raw, server_side=True) as secure:
                    secure.sendall(b"ok")
            except (ssl.SSLError, OSError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield contexts, server.getsockname()[1]
    stop.set()
    server.close()
    thread.join(5)


def _client(
    pki: dict[str, Path], who: str, *, tls12: bool = False, trusts: str = "old"
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki[f"{trusts}-ca"]))
    context.check_hostname = False
    context.load_cert_chain(str(pki[f"{who}-client"]))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def _connect(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[bool, ssl.SSLSession | None, bool, bytes | None]:
    """(served, its session, whether that was resumed, the certificate shown)."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, session=session) as secure,
        ):
            served = secure.recv(2) == b"ok"
            return served, secure.session, secure.session_reused, secure.getpeercert(True)
    except (ssl.SSLError, OSError):
        return False, None, False, None


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2"])
def test_new_handshakes_take_the_current_truststore(
    pki: dict[str, Path], listener: tuple[TlsContexts, int], tls12: bool
) -> None:
    contexts, port = listener
    assert _connect(port, _client(pki, "old", tls12=tls12))[0]
    assert not _connect(port, _client(pki, "new", tls12=tls12))[0]
    assert contexts.reload(_config(pki, "new"))
    assert _connect(port, _client(pki, "new", tls12=tls12))[0]
    assert not _connect(port, _client(pki, "old", tls12=tls12))[0]  # taken out, not added


def test_a_new_keystore_is_shown_from_the_next_handshake(
    pki: dict[str, Path], listener: tuple[TlsContexts, int]
) -> None:
    contexts, port = listener
    old_shown = _connect(port, _client(pki, "old"))[3]
    assert contexts.reload(_config(pki, "old", keystore="new"))
    _, _, _, new_shown = _connect(port, _client(pki, "old", trusts="new"))
    assert new_shown is not None and new_shown != old_shown


def test_no_session_is_resumed_past_a_change(
    pki: dict[str, Path], listener: tuple[TlsContexts, int]
) -> None:
    # resumed, a session's client certificate is not checked again: none is resumed (no
    # tickets, TLS 1.2's or 1.3's; a session id is not taken either), so the old CA's
    # client, offering its session after the change, makes a full handshake and is refused
    contexts, port = listener
    client = _client(pki, "old", tls12=True)
    served, session, _, _ = _connect(port, client)
    assert served and session is not None
    served, _, resumed, _ = _connect(port, client, session)
    assert served and not resumed
    assert contexts.reload(_config(pki, "new"))
    assert not _connect(port, client, session)[0]


def test_no_session_tickets_are_issued(
    pki: dict[str, Path], listener: tuple[TlsContexts, int]
) -> None:
    _, port = listener
    served, session, _, _ = _connect(port, _client(pki, "old"))  # TLS 1.3
    assert served and session is not None
    assert not session.has_ticket


def test_a_new_connection_to_a_broker_takes_the_current_client_context(
    pki: dict[str, Path],
) -> None:
    contexts = TlsContexts(_config(pki, "old"))
    before = contexts.peer_context()
    assert before is not None
    assert contexts.reload(_config(pki, "new"))
    after = contexts.peer_context()
    assert after is not None and after is not before
    # the new one trusts the new CA: it verifies a broker certificate the new CA signed
    assert after.cert_store_stats()["x509_ca"] == 1
    assert {c["subject"] for c in after.get_ca_certs()} != {
        c["subject"] for c in before.get_ca_certs()
    }


def test_the_inter_broker_check_takes_the_files_in_use(pki: dict[str, Path]) -> None:
    # (the only listener is SSL: the brokers reach each other over it)
    live = TlsContexts(_config(pki, "old"))
    check_change(live, _config(pki, "old"))
    with pytest.raises(ConfigError, match="inter-broker listener would fail"):
        # trusting the new CA alone, it would not trust the others' (old CA's) certificates
        check_change(live, _config(pki, "new"))


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_handshake_in_memory_fails_where_trust_fails(
    pki: dict[str, Path], version: ssl.TLSVersion
) -> None:
    server = server_context(_config(pki, "old"))
    for trusted, works in (("old", True), ("new", False)):
        client = client_context(_config(pki, trusted))
        client.minimum_version = client.maximum_version = version
        assert (_handshake(client, server) is None) is works
    # the server's side: a client whose certificate its truststore does not take
    stranger = client_context(_config(pki, "old", keystore="new"))
    stranger.minimum_version = stranger.maximum_version = version
    assert _handshake(stranger, server) is not None


def test_a_new_keystore_must_keep_the_subject_unless_allowed(pki: dict[str, Path]) -> None:
    live = TlsContexts(_config(pki, "old"))
    check_identity(live, _config(pki, "old"))  # the same certificate
    other = _config(pki, "old", keystore="new")  # another subject (trustme's unit), same name
    with pytest.raises(ConfigError, match=r"ssl\.allow\.dn\.changes"):
        check_identity(live, other)
    allowed = load_config(
        env={},
        overrides=[*_overrides(pki, "old", keystore="new"), "ssl.allow.dn.changes=true"],
    )
    check_identity(live, allowed)
