"""The delegation-token APIs on a Kafka listener, value for value: requests encoded by
kafka-python's classes (from Kafka 4's specs, tests/kafka_messages) decode into the
handlers' requests with every field where it belongs (v3's owner too), and the
handlers' answers, every field set to a value of its own, decode in those classes with
each value under Kafka's name. (test_kafka_specs holds the layouts to Kafka's; this
holds which of Headwater's fields goes into which of Kafka's.)"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from protocol.apis import (
    CreateDelegationTokenRequest,
    CreateDelegationTokenResponse,
    DescribedDelegationToken,
    DescribeDelegationTokenRequest,
    DescribeDelegationTokenResponse,
    ExpireDelegationTokenRequest,
    ExpireDelegationTokenResponse,
    RenewDelegationTokenRequest,
    RenewDelegationTokenResponse,
    TokenPrincipal,
)
from protocol.kafka.wire import KafkaHeader, decode_request, encode_response
from tests import kafka_messages as kafka


def _decoded(request: Any, version: int) -> Any:
    request.with_header(correlation_id=3, client_id="admin")
    payload = bytes(request.encode(version=version, header=True))
    _, _, decoded = decode_request(memoryview(payload))
    return decoded


def _answered(key: int, version: int, response: Any, kafka_class: Any) -> Any:
    frame = b"".join(
        bytes(p) for p in encode_response(KafkaHeader(key, 0, 3, version, "c"), response)
    )
    assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
    return kafka_class.decode(frame[4:], version=version, header=True)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_create_names_its_owner_renewers_and_lifetime(version: int) -> None:
    renewer = kafka.CreateDelegationTokenRequest.CreatableRenewers
    fields: dict[str, Any] = {
        "renewers": [
            renewer(principal_type="User", principal_name="bob"),
            renewer(principal_type="User", principal_name="carol"),
        ],
        "max_lifetime_ms": 86_400_123,
    }
    if version >= 3:
        fields |= {"owner_principal_type": "User", "owner_principal_name": "dave"}
    request = _decoded(kafka.CreateDelegationTokenRequest[version](**fields), version)
    assert isinstance(request, CreateDelegationTokenRequest)
    assert request.renewers == [
        TokenPrincipal(principal_type="User", principal_name="bob"),
        TokenPrincipal(principal_type="User", principal_name="carol"),
    ]
    assert request.max_lifetime_ms == 86_400_123
    owner = ("User", "dave") if version >= 3 else (None, None)
    assert (request.owner_principal_type, request.owner_principal_name) == owner


@pytest.mark.parametrize("version", [1, 2])
def test_a_renewal_and_an_expiry_name_the_hmac_and_their_period(version: int) -> None:
    renew = _decoded(
        kafka.RenewDelegationTokenRequest[version](hmac=b"\x01\x02", renew_period_ms=61_000),
        version,
    )
    assert isinstance(renew, RenewDelegationTokenRequest)
    assert (renew.hmac, renew.renew_period_ms) == (b"\x01\x02", 61_000)
    expire = _decoded(
        kafka.ExpireDelegationTokenRequest[version](hmac=b"\x03", expiry_time_period_ms=-1),
        version,
    )
    assert isinstance(expire, ExpireDelegationTokenRequest)
    assert (expire.hmac, expire.expiry_time_period_ms) == (b"\x03", -1)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_describe_names_owners_or_asks_for_every_token(version: int) -> None:
    owner = kafka.DescribeDelegationTokenRequest.DescribeDelegationTokenOwner
    listed = _decoded(
        kafka.DescribeDelegationTokenRequest[version](
            owners=[owner(principal_type="User", principal_name="alice")]
        ),
        version,
    )
    assert isinstance(listed, DescribeDelegationTokenRequest)
    assert listed.owners == [TokenPrincipal(principal_type="User", principal_name="alice")]
    every = _decoded(kafka.DescribeDelegationTokenRequest[version](owners=None), version)
    assert every.owners is None  # null: every token the requester may see


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_created_tokens_answer_carries_each_value_under_kafkas_name(version: int) -> None:
    response = CreateDelegationTokenResponse(
        error_code=0,
        principal_type="User",
        principal_name="alice",
        token_requester_principal_type="Requester",
        token_requester_principal_name="ops",
        issue_timestamp_ms=1_000,
        expiry_timestamp_ms=2_000,
        max_timestamp_ms=3_000,
        token_id="id-1",
        hmac=b"\xaa\xbb",
        throttle_time_ms=7,
    )
    got = _answered(38, version, response, kafka.CreateDelegationTokenResponse)
    assert (got.error_code, got.principal_type, got.principal_name) == (0, "User", "alice")
    if version >= 3:
        assert (got.token_requester_principal_type, got.token_requester_principal_name) == (
            "Requester",
            "ops",
        )
    assert (got.issue_timestamp_ms, got.expiry_timestamp_ms, got.max_timestamp_ms) == (
        1_000,
        2_000,
        3_000,
    )
    assert (got.token_id, got.hmac, got.throttle_time_ms) == ("id-1", b"\xaa\xbb", 7)


@pytest.mark.parametrize("version", [1, 2])
def test_a_new_expiry_is_answered_under_kafkas_name(version: int) -> None:
    for key, response, kafka_class in (
        (39, RenewDelegationTokenResponse, kafka.RenewDelegationTokenResponse),
        (40, ExpireDelegationTokenResponse, kafka.ExpireDelegationTokenResponse),
    ):
        got = _answered(
            key,
            version,
            response(error_code=66, expiry_timestamp_ms=4_000, throttle_time_ms=9),
            kafka_class,
        )
        assert (got.error_code, got.expiry_timestamp_ms, got.throttle_time_ms) == (66, 4_000, 9)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_described_tokens_carry_each_value_under_kafkas_name(version: int) -> None:
    token = DescribedDelegationToken(
        principal_type="User",
        principal_name="alice",
        token_requester_principal_type="Requester",
        token_requester_principal_name="ops",
        issue_timestamp=1_000,
        expiry_timestamp=2_000,
        max_timestamp=3_000,
        token_id="id-1",
        hmac=b"\xaa",
        renewers=[TokenPrincipal(principal_type="User", principal_name="bob")],
    )
    response = DescribeDelegationTokenResponse(tokens=[token], throttle_time_ms=5)
    got = _answered(41, version, response, kafka.DescribeDelegationTokenResponse)
    assert (got.error_code, got.throttle_time_ms) == (0, 5)
    (described,) = got.tokens
    assert (described.principal_type, described.principal_name) == ("User", "alice")
    if version >= 3:
        assert described.token_requester_principal_name == "ops"
        assert described.token_requester_principal_type == "Requester"
    assert (described.issue_timestamp, described.expiry_timestamp, described.max_timestamp) == (
        1_000,
        2_000,
        3_000,
    )
    assert (described.token_id, described.hmac) == ("id-1", b"\xaa")
    assert [(r.principal_type, r.principal_name) for r in described.renewers] == [("User", "bob")]
