"""Kafka's delegation-token APIs (38-41) on a Kafka-protocol SASL listener of a real broker,
spoken by kafka-python's encoder from Kafka 4's message specs (tests/kafka_messages), as
Kafka's AdminClient and kafka-delegation-tokens send them: a user logged in with PLAIN
makes a token (v3, and v1 from before KIP-373), describes, renews and expires it; a job
logs in with it by SCRAM (``tokenauth=true``) and may not make tokens; an expired token
logs in no more."""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.sasl import (
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)

from protocol.errors import (
    DelegationTokenNotFoundError,
    DelegationTokenRequestNotAllowedError,
    SaslAuthenticationFailedError,
)
from protocol.sasl import ScramClient
from tests.integration.conftest import Cluster
from tests.kafka_messages import (
    CreateDelegationTokenRequest,
    CreateDelegationTokenResponse,
    DescribeDelegationTokenRequest,
    DescribeDelegationTokenResponse,
    ExpireDelegationTokenRequest,
    ExpireDelegationTokenResponse,
    RenewDelegationTokenRequest,
    RenewDelegationTokenResponse,
)

pytestmark = pytest.mark.timeout(120)

_SETTINGS = {
    "listeners": "PLAINTEXT://127.0.0.1:0,KSASL://127.0.0.1:0",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,KSASL:SASL_PLAINTEXT",
    "kafka.protocol.listeners": "KSASL",
    "sasl.enabled.mechanisms": "SCRAM-SHA-256,PLAIN",
    "sasl.jaas.config": (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'user_alice="alice-secret";'
    ),
    "delegation.token.secret.key": "the-cluster-secret",
}


class _Wire:
    """One connection to a Kafka listener, its requests encoded and its answers decoded
    by kafka-python's classes (generated from Kafka's specs), one at a time."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._correlation = 0

    def close(self) -> None:
        self._sock.close()

    def call(self, request: Any, version: int, answer: Any) -> Any:
        self._correlation += 1
        request.with_header(correlation_id=self._correlation, client_id="tokens")
        payload = bytes(request.encode(version=version, header=True))
        self._sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", self._read(4))
        return answer.decode(self._read(length), version=version, header=True)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def sasl(self, mechanism: str, *steps: bytes) -> list[Any]:
        """SaslHandshake v1, then one SaslAuthenticate v2 per step (a callable step is
        given the last answer's bytes); the answers."""
        shake = self.call(SaslHandshakeRequest[1](mechanism=mechanism), 1, SaslHandshakeResponse)
        assert shake.error_code == 0, shake
        answers: list[Any] = []
        for step in steps:
            auth = step(answers[-1].auth_bytes) if callable(step) else step
            answer = self.call(
                SaslAuthenticateRequest[2](auth_bytes=auth), 2, SaslAuthenticateResponse
            )
            answers.append(answer)
            if answer.error_code:
                break
        return answers


def _as_alice(port: int) -> _Wire:
    wire = _Wire(port)
    (answer,) = wire.sasl("PLAIN", b"\0alice\0alice-secret")
    assert answer.error_code == 0, answer
    return wire


def _token_login(port: int, token_id: str, hmac: bytes) -> tuple[_Wire, int]:
    """A SCRAM-SHA-256 login as the token (Kafka's ``tokenauth=true``): the connection
    and the last answer's error code."""
    scram = ScramClient(
        "SCRAM-SHA-256",
        token_id,
        base64.b64encode(hmac).decode(),
        extensions={"tokenauth": "true"},
    )
    wire = _Wire(port)
    answers = wire.sasl("SCRAM-SHA-256", scram.first(), scram.final)
    if answers[-1].error_code == 0:
        scram.verify(answers[-1].auth_bytes)
    return wire, answers[-1].error_code


def _create(wire: _Wire, version: int, **owner: str) -> Any:
    renewers = [
        CreateDelegationTokenRequest.CreatableRenewers(principal_type="User", principal_name="bob")
    ]
    fields: dict[str, Any] = {"renewers": renewers, "max_lifetime_ms": -1}
    if version >= 3:
        fields["owner_principal_type"] = owner.get("type")
        fields["owner_principal_name"] = owner.get("name")
    return wire.call(
        CreateDelegationTokenRequest[version](**fields), version, CreateDelegationTokenResponse
    )


def _describe(wire: _Wire, version: int) -> Any:
    return wire.call(
        DescribeDelegationTokenRequest[version](owners=None),
        version,
        DescribeDelegationTokenResponse,
    )


def _run(port: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    alice = _as_alice(port)
    try:
        versions = alice.call(ApiVersionsRequest[3](), 3, ApiVersionsResponse).api_keys
        seen["versions"] = {
            k.api_key: (k.min_version, k.max_version) for k in versions if 38 <= k.api_key <= 41
        }
        made = seen["made"] = _create(alice, 3)
        seen["made_v1"] = _create(alice, 1)
        seen["described"] = _describe(alice, 3)
        seen["described_v1"] = _describe(alice, 1)
        seen["renewed"] = alice.call(
            RenewDelegationTokenRequest[2](hmac=made.hmac, renew_period_ms=60_000),
            2,
            RenewDelegationTokenResponse,
        )
        job, code = _token_login(port, made.token_id, made.hmac)
        seen["token_login"] = code
        try:
            seen["made_by_token"] = _create(job, 3)  # a token cannot make tokens
        finally:
            job.close()
        seen["expired"] = alice.call(
            ExpireDelegationTokenRequest[2](hmac=made.hmac, expiry_time_period_ms=-1),
            2,
            ExpireDelegationTokenResponse,
        )
        seen["renewed_gone"] = alice.call(
            RenewDelegationTokenRequest[1](hmac=made.hmac, renew_period_ms=-1),
            1,
            RenewDelegationTokenResponse,
        )
        seen["described_after"] = _describe(alice, 2)
        late, code = _token_login(port, made.token_id, made.hmac)
        late.close()
        seen["late_login"] = code
    finally:
        alice.close()
    return seen


async def test_kafkas_token_apis_make_describe_renew_and_expire_on_a_kafka_listener(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, _SETTINGS)
    (broker,) = cluster.brokers.values()
    seen = await asyncio.to_thread(_run, broker.ports["KSASL"])
    assert seen["versions"] == {38: (1, 3), 39: (1, 2), 40: (1, 2), 41: (1, 3)}
    made = seen["made"]
    assert made.error_code == 0
    assert (made.principal_type, made.principal_name) == ("User", "alice")
    assert (made.token_requester_principal_type, made.token_requester_principal_name) == (
        "User",
        "alice",
    )
    assert made.issue_timestamp_ms <= made.expiry_timestamp_ms <= made.max_timestamp_ms
    assert len(made.hmac) == 64 and made.token_id  # HMAC-SHA512
    older = seen["made_v1"]  # a client from before KIP-373: no owner, no requester
    assert (older.error_code, older.principal_name) == (0, "alice")
    assert older.token_id != made.token_id

    described = {t.token_id: t for t in seen["described"].tokens}
    assert set(described) == {made.token_id, older.token_id}
    mine = described[made.token_id]
    assert (mine.hmac, mine.expiry_timestamp) == (made.hmac, made.expiry_timestamp_ms)
    assert mine.token_requester_principal_name == "alice"
    assert [(r.principal_type, r.principal_name) for r in mine.renewers] == [("User", "bob")]
    assert {t.token_id for t in seen["described_v1"].tokens} == set(described)

    renewed = seen["renewed"]
    assert renewed.error_code == 0
    assert made.issue_timestamp_ms < renewed.expiry_timestamp_ms <= made.max_timestamp_ms

    assert seen["token_login"] == 0  # the job is alice now, by her token
    assert seen["made_by_token"].error_code == DelegationTokenRequestNotAllowedError.code

    assert seen["expired"].error_code == 0
    assert seen["renewed_gone"].error_code == DelegationTokenNotFoundError.code
    assert [t.token_id for t in seen["described_after"].tokens] == [older.token_id]
    assert seen["late_login"] == SaslAuthenticationFailedError.code
