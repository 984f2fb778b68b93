"""Kafka 4's message specs (``clients/src/main/resources/common/message``) for the APIs
whose specs kafka-python 3 does not ship, in Kafka's JSON form: the delegation-token APIs
(38-41, KIP-48 and KIP-373) and the share group APIs (76-79, KIP-932; ShareFetch's v2 as
Kafka's trunk had it, not served here). From them kafka-python's own generator makes the classes
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
    "ShareAcknowledgeRequest",
    "ShareAcknowledgeResponse",
    "ShareFetchRequest",
    "ShareFetchResponse",
    "ShareGroupDescribeRequest",
    "ShareGroupDescribeResponse",
    "ShareGroupHeartbeatRequest",
    "ShareGroupHeartbeatResponse",
]


class CreateDelegationTokenRequest(ApiMessage, load_json=_HERE): ...


class CreateDelegationTokenResponse(ApiMessage, load_json=_HERE): ...


class RenewDelegationTokenRequest(ApiMessage, load_json=_HERE): ...


class RenewDelegationTokenResponse(ApiMessage, load_json=_HERE): ...


class ExpireDelegationTokenRequest(ApiMessage, load_json=_HERE): ...


class ExpireDelegationTokenResponse(ApiMessage, load_json=_HERE): ...


class DescribeDelegationTokenRequest(ApiMessage, load_json=_HERE): ...


class DescribeDelegationTokenResponse(ApiMessage, load_json=_HERE): ...


class ShareGroupHeartbeatRequest(ApiMessage, load_json=_HERE): ...


class ShareGroupHeartbeatResponse(ApiMessage, load_json=_HERE): ...


class ShareGroupDescribeRequest(ApiMessage, load_json=_HERE): ...


class ShareGroupDescribeResponse(ApiMessage, load_json=_HERE): ...


class ShareFetchRequest(ApiMessage, load_json=_HERE): ...


class ShareFetchResponse(ApiMessage, load_json=_HERE): ...


class ShareAcknowledgeRequest(ApiMessage, load_json=_HERE): ...


class ShareAcknowledgeResponse(ApiMessage, load_json=_HERE): ...
