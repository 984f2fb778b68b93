"""SASL/OAUTHBEARER on real brokers (KIP-255, KIP-768), with Headwater's client on its own
listener and librdkafka on a Kafka listener: tokens of the development kind (unsigned)
where no key set is configured, and tokens signed by an identity provider's key, read
from its JWKS, where one is. What a user checks: acked records read back at their
offsets, a refused token told why in one line, the broker serving on, and a key the
provider rotated in taken at once."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer as RdProducer
from cryptography.hazmat.primitives.asymmetric import rsa

from client import (
    Admin,
    ClientCredentialsTokenProvider,
    Consumer,
    NewTopic,
    Producer,
    TopicPartition,
    UnsecuredTokenProvider,
)
from protocol.errors import SaslAuthenticationFailedError
from protocol.oauthbearer import unsecured_token
from tests.integration.conftest import Cluster
from tests.unit.test_oauthbearer import RSA_KEY, _jwk, _sign

pytestmark = pytest.mark.timeout(150)


def _cluster_config(**more: str) -> dict[str, str]:
    return {
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,KSASL://127.0.0.1:0",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,KSASL:SASL_PLAINTEXT"
        ),
        "inter.broker.listener.name": "PLAINTEXT",
        "kafka.protocol.listeners": "KSASL",
        "sasl.enabled.mechanisms": "OAUTHBEARER",
        **more,
    }


def _login(provider: Any) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauth_token_provider": provider,
    }


class _Fixed:
    """A token provider giving one token (as an application's own would fetch one)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token


class _Down:
    """A token provider whose identity provider does not answer."""

    async def token(self) -> str:
        raise OSError("identity provider down")


async def _write_and_read(bootstrap: str, login: dict[str, Any], topic: str, n: int) -> None:
    """n records acked (acks=all) at offsets 0..n-1, then read back in order."""
    async with Producer(bootstrap_servers=bootstrap, acks="all", **login) as producer:
        offsets = [(await producer.send_and_wait(topic, b"v%d" % i)).offset for i in range(n)]
    assert offsets == list(range(n))
    async with Consumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", **login
    ) as consumer:
        consumer.assign([TopicPartition(topic, 0)])
        got: list[bytes] = []
        while len(got) < n:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got += [r.value for r in records]
    assert got == [b"v%d" % i for i in range(n)]


async def _refused(bootstrap: str, login: dict[str, Any], match: str) -> None:
    admin = Admin(bootstrap_servers=bootstrap, request_timeout_ms=5000, **login)
    with pytest.raises(SaslAuthenticationFailedError, match=match):
        await admin.start()
    await admin.close()


def _librdkafka_writes(bootstrap: str, topic: str, n: int, **login: Any) -> list[Any]:
    acked: list[Any] = []
    producer = RdProducer(
        {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "acks": "all",
            **login,
        }
    )
    for i in range(n):
        producer.produce(
            topic, b"rd%d" % i, callback=lambda err, msg: acked.append((err, msg.offset()))
        )
    assert producer.flush(30) == 0
    return acked


async def test_unsecured_tokens_where_no_key_set_is_configured(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, _cluster_config())
    (broker,) = cluster.brokers.values()
    sasl = f"127.0.0.1:{broker.ports['SASL_PLAINTEXT']}"
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("dev", 1, 1)])
    await _write_and_read(sasl, _login(UnsecuredTokenProvider("alice")), "dev", 5)
    expired = unsecured_token("alice", int(time.time() * 1000) - 7_200_000)
    await _refused(sasl, _login(_Fixed(expired)), "token has expired: get a new one")
    signed = _sign(RSA_KEY, "RS256", {"sub": "alice", "exp": time.time() + 60})
    await _refused(sasl, _login(_Fixed(signed)), "takes unsecured .* tokens only")
    await _refused(sasl, _login(_Down()), r"token\(\) failed: OSError: identity provider down")
    # librdkafka's own unsecured tokens, on the Kafka listener
    acked = await asyncio.to_thread(
        _librdkafka_writes,
        f"127.0.0.1:{broker.ports['KSASL']}",
        "dev",
        3,
        **{
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": "principal=carol",
        },
    )
    assert acked == [(None, 5), (None, 6), (None, 7)]
    login = _login(UnsecuredTokenProvider("alice"))  # the refusals closed only their own
    async with Producer(bootstrap_servers=sasl, **login) as producer:
        assert (await producer.send_and_wait("dev", b"after")).offset == 8


async def test_signed_tokens_checked_against_the_providers_key_set(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(RSA_KEY, "k1")]}))
    cluster = make_cluster(
        1,
        _cluster_config(
            **{
                "sasl.oauthbearer.jwks.endpoint.url": jwks.as_uri(),
                "sasl.oauthbearer.expected.audience": "headwater",
                "sasl.oauthbearer.expected.issuer": "https://idp.test",
            }
        ),
    )
    (broker,) = cluster.brokers.values()
    sasl = f"127.0.0.1:{broker.ports['SASL_PLAINTEXT']}"

    def claims(**more: Any) -> dict[str, Any]:
        now = time.time()
        return {
            "sub": "svc-orders",
            "aud": "headwater",
            "iss": "https://idp.test",
            "iat": now,
            "exp": now + 300,
            **more,
        }

    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("orders", 1, 1)])
    await _write_and_read(sasl, _login(_Fixed(_sign(RSA_KEY, "RS256", claims()))), "orders", 4)
    await _refused(
        sasl, _login(UnsecuredTokenProvider("svc-orders")), "algorithm 'none' is not one"
    )
    await _refused(sasl, _login(_Fixed(_sign(RSA_KEY, "RS256", claims(aud="other")))), "audience")
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await _refused(
        sasl, _login(_Fixed(_sign(intruder, "RS256", claims()))), "signature does not verify"
    )
    # the provider rotates its keys: a token of the new key is taken at once
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.write_text(json.dumps({"keys": [_jwk(RSA_KEY, "k1"), _jwk(rotated, "k2")]}))
    await asyncio.sleep(1.1)  # reads for an unknown key are a second apart at least
    token = _sign(rotated, "RS256", claims(), kid="k2")
    async with Admin(bootstrap_servers=sasl, **_login(_Fixed(token))) as admin:
        assert "orders" in await admin.list_topics()

    def oauth_cb(_config: str) -> tuple[str, float, str]:
        return _sign(RSA_KEY, "RS256", claims()), time.time() + 300, "svc-orders"

    acked = await asyncio.to_thread(
        _librdkafka_writes, f"127.0.0.1:{broker.ports['KSASL']}", "orders", 2, oauth_cb=oauth_cb
    )
    assert acked == [(None, 4), (None, 5)]
    # tokens from the provider's token endpoint, as Kafka's OIDC clients fetch them
    with _TokenEndpoint(lambda: _sign(RSA_KEY, "RS256", claims())) as endpoint:
        provider = ClientCredentialsTokenProvider(endpoint.url, "svc-orders", "s3cret")
        async with Producer(bootstrap_servers=sasl, **_login(provider)) as producer:
            assert (await producer.send_and_wait("orders", b"oidc")).offset == 6
        wrong = ClientCredentialsTokenProvider(endpoint.url, "svc-orders", "guess")
        await _refused(sasl, _login(wrong), "answered 401: invalid_client")
        oidc = {
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.client.id": "svc-orders",
            "sasl.oauthbearer.client.secret": "s3cret",
            "sasl.oauthbearer.token.endpoint.url": endpoint.url,
        }
        acked = await asyncio.to_thread(
            _librdkafka_writes, f"127.0.0.1:{broker.ports['KSASL']}", "orders", 1, **oidc
        )
        assert acked == [(None, 7)]
        assert endpoint.granted >= 2


class _TokenEndpoint:
    """An identity provider's token endpoint (client credentials grant) on loopback."""

    def __init__(self, issue: Callable[[], str]) -> None:
        endpoint = self
        self.granted = 0
        expected = "Basic " + base64.b64encode(b"svc-orders:s3cret").decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = self.rfile.read(int(self.headers["Content-Length"])).decode()
                good = self.headers["Authorization"] == expected
                if good and "grant_type=client_credentials" in form:
                    endpoint.granted += 1
                    status, answer = 200, {"access_token": issue(), "expires_in": 300}
                else:
                    status, answer = 401, {"error": "invalid_client"}
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _TokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


async def test_clients_log_in_again_before_their_sessions_end(
    make_cluster: Callable[..., Cluster],
) -> None:
    # KIP-368: sessions of 3 s; a steady trickle of records over several of them, from
    # Headwater's producer and librdkafka's, each on the connections it keeps (a request
    # written just before the re-authentication point must arrive within 5% of a session)
    cluster = make_cluster(1, _cluster_config(**{"connections.max.reauth.ms": "3000"}))
    (broker,) = cluster.brokers.values()
    sasl = f"127.0.0.1:{broker.ports['SASL_PLAINTEXT']}"
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("steady", 1, 1)])

    def librdkafka_trickle() -> list[Any]:
        acked: list[Any] = []
        producer = RdProducer(
            {
                "bootstrap.servers": f"127.0.0.1:{broker.ports['KSASL']}",
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "OAUTHBEARER",
                "enable.sasl.oauthbearer.unsecure.jwt": True,
                "sasl.oauthbearer.config": "principal=carol",
                "acks": "all",
            }
        )
        for i in range(40):
            producer.produce("steady", b"rd%d" % i, callback=lambda err, msg: acked.append(err))
            producer.poll(0.2)
        assert producer.flush(30) == 0
        return acked

    rd = asyncio.create_task(asyncio.to_thread(librdkafka_trickle))
    login = _login(UnsecuredTokenProvider("alice"))
    async with Producer(bootstrap_servers=sasl, acks="all", **login) as producer:
        offsets = []
        for i in range(40):
            offsets.append((await producer.send_and_wait("steady", b"hw%d" % i)).offset)
            await asyncio.sleep(0.2)
    assert offsets == sorted(offsets) and len(set(offsets)) == 40
    assert await rd == [None] * 40
    log = broker.log_path.read_text()
    assert "connection.session_expired" not in log  # logged in again, none cut off
