"""Kafka 4's message specs (``clients/src/main/resources/common/message``) for the APIs
whose specs kafka-python 3 does not ship, in Kafka's JSON form: the delegation-token APIs
(38-41, KIP-48 and KIP-373). From them kafka-python's own generator makes the classes
below, so a test speaks these APIs through an encoder that is not Headwater's, and
tests/unit/test_kafka_specs.py holds the Kafka listener's specs to them field for field."""

from __future__ import annotations

import sys

from kafka.protocol.api_message import ApiMessage

_HERE = sys.modules[__name__]

__all__ = [
    "CreateDelegationTokenRequest",
    "CreateDelegationTokenResponse",
    "DescribeDelegationTokenRequest",
    "DescribeDelegationTokenResponse",
    "ExpireDelegationTokenRequest",
    "ExpireDelegationTokenResponse",
    "RenewDelegationTokenRequest",
    "RenewDelegationTokenResponse",
]


class CreateDelegationTokenRequest(ApiMessage, load_json=_HERE): ...


class CreateDelegationTokenResponse(ApiMessage, load_json=_HERE): ...


class RenewDelegationTokenRequest(ApiMessage, load_json=_HERE): ...


class RenewDelegationTokenResponse(ApiMessage, load_json=_HERE): ...


class ExpireDelegationTokenRequest(ApiMessage, load_json=_HERE): ...


class ExpireDelegationTokenResponse(ApiMessage, load_json=_HERE): ...


class DescribeDelegationTokenRequest(ApiMessage, load_json=_HERE): ...


class DescribeDelegationTokenResponse(ApiMessage, load_json=_HERE): ...
