"""A SASL listener in-process (BrokerServer with an authenticator) and the client's
connection logging in: SCRAM and PLAIN accepted, and what a wrong password, a missing
login, an unoffered mechanism or an out-of-order exchange gets. Each refusal closes only
that connection; the listener keeps serving."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import pytest

from broker.sasl import SaslListener, ScramCredentials
from broker.server import PEER_PRINCIPAL, BrokerServer
from broker.zk import ZkError
from client.connection import BrokerConnection
from client.security import SaslLogin
from protocol.apis import (
    APIS,
    ApiKey,
    MetadataRequest,
    MetadataResponse,
    SaslAuthenticateRequest,
    SaslHandshakeRequest,
    decode_response,
    encode_request,
)
from protocol.errors import (
    IllegalSaslStateError,
    NetworkError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)
from protocol.framing import RequestHeader, parse_response_header
from protocol.sasl import ScramCredential

_DELAY_S = 0.2


class _Store:
    """The SCRAM credentials a listener looks up (ZooKeeper's part, in memory)."""

    def __init__(self) -> None:
        self.users = {
            ("alice", m): ScramCredential.make(m, "alice-pw", 4096)
            for m in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        }

    async def get(self, user: str, mechanism: str) -> ScramCredential | None:
        return self.users.get((user, mechanism))


_SERVED: list[str] = []
"""Who each Metadata request was served for."""


async def _metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    # who asked, as the handlers see it
    _SERVED.append(PEER_PRINCIPAL.get())
    return MetadataResponse(cluster_id=PEER_PRINCIPAL.get())


@pytest.fixture
async def port() -> AsyncIterator[int]:
    listener = SaslListener(
        "SASL_PLAINTEXT",
        ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        {"bob": "bob-pw"},
        _Store(),  # type: ignore[arg-type]
        _DELAY_S,
    )
    server = BrokerServer({ApiKey.METADATA: _metadata}, sasl=listener)
    yield await server.start()
    await server.stop()


async def _who(port: int, login: SaslLogin | None) -> str:
    async with BrokerConnection("127.0.0.1", port, login=login) as conn:
        response = await conn.request(ApiKey.METADATA, MetadataRequest())
        return response.cluster_id


@pytest.mark.parametrize(
    "login",
    [
        SaslLogin("SCRAM-SHA-256", "alice", "alice-pw"),
        SaslLogin("SCRAM-SHA-512", "alice", "alice-pw"),
        SaslLogin("PLAIN", "bob", "bob-pw"),
    ],
)
async def test_a_login_then_requests(port: int, login: SaslLogin) -> None:
    assert await _who(port, login) == f"User:{login.username}"


@pytest.mark.parametrize(
    "login",
    [
        SaslLogin("SCRAM-SHA-256", "alice", "wrong"),
        SaslLogin("SCRAM-SHA-512", "nobody", "alice-pw"),
        SaslLogin("PLAIN", "bob", "wrong"),
        SaslLogin("PLAIN", "alice", "alice-pw"),  # a SCRAM user is not a PLAIN one
    ],
)
async def test_a_wrong_login_is_refused_after_a_delay_and_the_listener_serves_on(
    port: int, login: SaslLogin
) -> None:
    started = time.monotonic()
    with pytest.raises(SaslAuthenticationFailedError, match="check sasl_plain_username"):
        await _who(port, login)
    assert time.monotonic() - started >= _DELAY_S * 0.9  # connection.failed.authentication.delay.ms
    assert await _who(port, SaslLogin("PLAIN", "bob", "bob-pw")) == "User:bob"


async def test_a_request_before_the_login_is_refused_with_what_to_do_and_closed(port: int) -> None:
    conn = BrokerConnection("127.0.0.1", port)
    await conn.connect()  # ApiVersions is allowed before the login
    with pytest.raises(IllegalSaslStateError, match="security_protocol='SASL_PLAINTEXT'"):
        await conn.request(ApiKey.METADATA, MetadataRequest())
    with pytest.raises(NetworkError):
        await conn.request(ApiKey.METADATA, MetadataRequest())
    conn.close()


async def test_a_mechanism_not_offered(port: int) -> None:
    with pytest.raises(UnsupportedSaslMechanismError, match="offers PLAIN, SCRAM-SHA-256"):
        await _who(port, SaslLogin("GSSAPI", "alice", "pw"))


async def _raw_call(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: ApiKey, request: object
) -> object:
    writer.writelines(encode_request(key, 0, 7, request))
    (size,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
    _, body = parse_response_header(memoryview(await reader.readexactly(size)))
    return decode_response(APIS[key], 0, body)


async def test_out_of_order_exchanges_are_illegal_and_close_the_connection(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = await _raw_call(
        reader, writer, ApiKey.SASL_AUTHENTICATE, SaslAuthenticateRequest(auth_bytes=b"x")
    )
    assert answer.error_code == IllegalSaslStateError.code  # type: ignore[attr-defined]
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    handshake = SaslHandshakeRequest(mechanism="PLAIN")
    assert not (await _raw_call(reader, writer, ApiKey.SASL_HANDSHAKE, handshake)).error_code  # type: ignore[attr-defined]
    twice = await _raw_call(reader, writer, ApiKey.SASL_HANDSHAKE, handshake)
    assert twice.error_code == IllegalSaslStateError.code  # type: ignore[attr-defined]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_plaintext_listener_refuses_sasl_requests() -> None:
    server = BrokerServer({ApiKey.METADATA: _metadata})
    port = await server.start()
    try:
        with pytest.raises(IllegalSaslStateError, match="is it a SASL listener"):
            await _who(port, SaslLogin("PLAIN", "bob", "bob-pw"))
        assert await _who(port, None) == ""  # and serves the others
    finally:
        await server.stop()


class _FlakyZk:
    """ZooKeeper's part of ScramCredentials: answers, then fails."""

    def __init__(self, data: bytes) -> None:
        self.data, self.up = data, True

    async def get(self, path: str) -> tuple[bytes, object]:
        if not self.up:
            raise ZkError("connection lost")
        assert path == "/config/users/carol%2A"
        return self.data, type("Stat", (), {"version": 3})()


async def test_credentials_come_from_zookeeper_and_the_last_read_serves_an_outage() -> None:
    credential = ScramCredential.make("SCRAM-SHA-256", "pw", 4096)
    zk = _FlakyZk(b'{"version":1,"config":{"SCRAM-SHA-256":"%s"}}' % credential.to_text().encode())
    store = ScramCredentials(zk)  # type: ignore[arg-type]
    assert await store.get("carol*", "SCRAM-SHA-256") == credential
    assert await store.get("carol*", "SCRAM-SHA-512") is None
    zk.up = False
    assert await store.get("carol*", "SCRAM-SHA-256") == credential
    with pytest.raises(Exception, match="cannot be read now"):
        await store.get("dave", "SCRAM-SHA-256")


async def test_a_broker_logs_in_to_another_with_scram(port: int) -> None:
    """The inter-broker side (PeerConnection), as followers and the controller use it."""
    from broker.network import PeerConnection, PeerError, PeerLogin

    peer = PeerConnection("127.0.0.1", port, login=PeerLogin("SCRAM-SHA-512", "alice", "alice-pw"))
    try:
        answer = await peer.request(ApiKey.METADATA, MetadataRequest())
        assert answer.cluster_id == "User:alice"
    finally:
        peer.close()
    wrong = PeerConnection("127.0.0.1", port, login=PeerLogin("SCRAM-SHA-256", "alice", "x"))
    with pytest.raises(PeerError, match=r"refused: .*invalid credentials.*sasl\.jaas\.config"):
        await wrong.request(ApiKey.METADATA, MetadataRequest())
    wrong.close()


async def _answers(reader: asyncio.StreamReader) -> list[tuple[int, memoryview]]:
    """Every response frame until the broker closes the connection."""
    out = []
    while True:
        head = await asyncio.wait_for(reader.read(4), 5)
        if not head:
            return out
        (size,) = struct.unpack(">I", head)
        out.append(parse_response_header(memoryview(await reader.readexactly(size))))


@pytest.mark.parametrize("round_", range(10))
async def test_nothing_pipelined_after_a_failed_login_is_served(port: int, round_: int) -> None:
    """From a review: SASL steps pipelined in one write ran side by side, and a request
    read after a wrong guess could run as the connection succeeded with a second one."""
    from protocol.sasl import plain_message

    _SERVED.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = [
        encode_request(ApiKey.SASL_HANDSHAKE, 0, 1, SaslHandshakeRequest(mechanism="PLAIN")),
        encode_request(
            ApiKey.SASL_AUTHENTICATE,
            0,
            2,
            SaslAuthenticateRequest(auth_bytes=plain_message("bob", "wrong")),
        ),
        encode_request(
            ApiKey.SASL_AUTHENTICATE,
            0,
            3,
            SaslAuthenticateRequest(auth_bytes=plain_message("bob", "bob-pw")),
        ),
        encode_request(ApiKey.METADATA, 0, 4, MetadataRequest()),
    ]
    writer.writelines([part for frame in frames for part in frame])
    answers = await _answers(reader)
    assert [correlation for correlation, _ in answers] == [1, 2]  # then closed
    failed = decode_response(APIS[ApiKey.SASL_AUTHENTICATE], 0, answers[1][1])
    assert failed.error_code == SaslAuthenticationFailedError.code
    assert _SERVED == []  # the Metadata behind the failure never ran, as anyone
    writer.close()


async def test_a_login_pipelined_with_requests_serves_them_as_the_user(port: int) -> None:
    from protocol.sasl import plain_message

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = [
        encode_request(ApiKey.SASL_HANDSHAKE, 0, 1, SaslHandshakeRequest(mechanism="PLAIN")),
        encode_request(
            ApiKey.SASL_AUTHENTICATE,
            0,
            2,
            SaslAuthenticateRequest(auth_bytes=plain_message("bob", "bob-pw")),
        ),
        encode_request(ApiKey.METADATA, 0, 3, MetadataRequest()),
    ]
    writer.writelines([part for frame in frames for part in frame])
    seen = []
    for _ in range(3):
        (size,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
        seen.append(parse_response_header(memoryview(await reader.readexactly(size))))
    assert [c for c, _ in seen] == [1, 2, 3]
    assert decode_response(APIS[ApiKey.METADATA], 0, seen[2][1]).cluster_id == "User:bob"
    writer.close()


async def test_unknown_users_are_not_remembered() -> None:
    """From a review: every name a stranger tried was kept, for ever."""

    class _Empty:
        async def get(self, path: str) -> tuple[bytes, object]:
            from broker.zk import NoNode

            raise NoNode(path)

    store = ScramCredentials(_Empty())  # type: ignore[arg-type]
    for i in range(100):
        assert await store.get(f"stranger-{i}", "SCRAM-SHA-256") is None
    assert not store._last


async def test_a_client_certificate_names_the_connection(tmp_path: object) -> None:
    """On an SSL listener requiring client certificates, the principal is the
    certificate's subject as RFC 2253 writes it (Kafka's default SSL principal)."""
    import ssl
    from pathlib import Path

    import cryptography.x509
    import trustme

    from client import create_ssl_context

    folder = Path(str(tmp_path))
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("client.example", common_name="alice, the first")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    (folder / "ca.pem").write_bytes(ca.cert_pem.bytes())
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "client.pem"))
    server = BrokerServer({ApiKey.METADATA: _metadata})
    port = await server.start(tls=context)
    try:
        tls = create_ssl_context(cafile=folder / "ca.pem", certfile=folder / "client.pem")
        async with BrokerConnection("127.0.0.1", port, tls=tls) as conn:
            answer = await conn.request(ApiKey.METADATA, MetadataRequest())
    finally:
        await server.stop()
    from cryptography.hazmat.primitives import serialization

    from broker.principal import subject_dn

    der = cryptography.x509.load_pem_x509_certificate(
        client_cert.cert_chain_pems[0].bytes()
    ).public_bytes(serialization.Encoding.DER)
    assert answer.cluster_id == f"User:{subject_dn(der)}"
    assert answer.cluster_id.startswith("User:CN=alice\\, the first,OU=Testing cert \\#")
