"""Kafka's request and response frames, for a Kafka-protocol listener (bytes in, objects out).

A Kafka request is ``length | api_key i16 | api_version i16 | correlation_id i32 |
client_id nullable-string | [tagged fields, flexible versions] | body``; a response
``length | correlation_id | [tagged fields, flexible versions but ApiVersions'] | body``.
:func:`decode_request` turns one into the Headwater request its handler takes, with a
:class:`KafkaHeader` that remembers the Kafka version to answer in; :func:`encode_response`
turns the handler's Headwater response into Kafka's bytes at that version.

What a Kafka broker does with bad input, this does too: an ApiVersions request of a
version it does not speak is answered with UNSUPPORTED_VERSION and the versions it does
(in v0, which every client reads); any other unknown key or version, and a body that
does not decode, raise so the listener closes that connection (Kafka's response schemas
have no common error field to say it in).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from protocol.apis import APIS, ApiKey, Response
from protocol.errors import (
    ApiError,
    MalformedFrameError,
    MalformedMessageError,
    UnsupportedRequestError,
    error_code_of,
)
from protocol.framing import FileRegion, Part
from protocol.kafka.codec import Reader, read_message, write_message
from protocol.kafka.messages import API_VERSIONS, KAFKA_APIS, KafkaApi

__all__ = [
    "KafkaHeader",
    "api_versions_response",
    "decode_request",
    "encode_error_response",
    "encode_response",
]

_HEAD = struct.Struct(">hhi")
_LENGTH = struct.Struct(">I")
_CORRELATION = struct.Struct(">i")
_I16 = struct.Struct(">h")


class KafkaHeader(NamedTuple):
    """A Kafka request's header: the first three fields as the broker's handlers know
    them (``api_version`` is Headwater's version of the API, which they are served at),
    then what answering in Kafka's encoding needs."""

    api_key: int
    api_version: int
    correlation_id: int
    kafka_version: int
    client_id: str | None
    request: Any = None
    """The decoded request: an error answer names its topics and partitions."""

    @property
    def permissive_quota(self) -> bool:
        """The client's version of the API predates THROTTLING_QUOTA_EXCEEDED (KIP-599):
        over the controller mutation quota it is throttled, not refused."""
        api = KAFKA_APIS.get(self.api_key)
        since = api.strict_quota_from if api is not None else None
        return since is not None and self.kafka_version < since


def decode_request(payload: memoryview) -> tuple[KafkaHeader, KafkaApi, Any]:
    """A request frame's payload (after the length) -> its header, API and Headwater
    request. Raises :class:`UnsupportedRequestError` (its ``header`` set, for an
    ApiVersions answer) for a key or version not served, :class:`MalformedMessageError`
    for a body that does not decode, :class:`MalformedFrameError` for a cut header."""
    if len(payload) < _HEAD.size + 2:
        raise MalformedFrameError(f"a {len(payload)}-byte request is too short for a header")
    key, version, correlation_id = _HEAD.unpack_from(payload)
    api = KAFKA_APIS.get(key)
    r = Reader(payload)
    r.pos = _HEAD.size
    n = r.unpack(_I16)
    try:
        client_id = None if n < 0 else str(r.take(n), "utf-8")
    except Exception as exc:  # cut short, or not UTF-8
        raise MalformedFrameError(
            f"a request header's client id does not decode ({exc!r})"
        ) from None
    if api is None or not api.supports(version):
        named = api.name if api is not None else _key_name(key)
        refused = UnsupportedRequestError(
            f"{named} v{version} is not served on a Kafka-protocol listener"
            + (f" (this broker speaks v{api.min_version}..v{api.max_version})" if api else "")
        )
        refused.header = KafkaHeader(key, 0, correlation_id, version, client_id)
        raise refused
    flexible = api.flexible(version)
    try:
        if flexible:
            r.tagged(None, version, flexible, {})
        body = payload[r.pos :]
    except Exception:
        raise MalformedMessageError(
            f"{api.name} v{version}: the header's tagged fields are cut short"
        ) from None
    try:
        # bytes after the last field are left, as Kafka's brokers leave them (librdkafka
        # 2.x's Metadata v12 asking for every topic was seen with three more)
        request = read_message(api.request, body, version, flexible, exact=False)
    except MalformedMessageError as exc:
        raise MalformedMessageError(f"{api.name} v{version}: {exc.message}") from None
    if api.finish is not None:
        request = api.finish(request, version, client_id)
    hw_version = APIS[key].max_version if key in APIS else 0
    return KafkaHeader(key, hw_version, correlation_id, version, client_id, request), api, request


def _key_name(key: int) -> str:
    try:
        return "".join(part.capitalize() for part in ApiKey(key).name.split("_"))
    except ValueError:
        return f"API key {key}"


def _frame(header: KafkaHeader, body: list[Part]) -> list[Part]:
    api = KAFKA_APIS[header.api_key]
    head = _CORRELATION.pack(header.correlation_id)
    if api.flexible(header.kafka_version) and header.api_key != ApiKey.API_VERSIONS:
        head += b"\x00"  # response header v1: no tagged fields
    total = len(head) + sum(len(p) for p in body)
    head = _LENGTH.pack(total) + head
    first = body[0]
    if isinstance(first, FileRegion):
        return [head, *body]
    return [head + bytes(first), *body[1:]]


def encode_response(header: KafkaHeader, response: Any) -> list[Part]:
    """The Headwater ``response`` as Kafka's frame at the request's version; a response
    that is only a request-level error (:class:`~protocol.apis.Response`) becomes that
    error where Kafka's schema of the API puts one."""
    api = KAFKA_APIS[header.api_key]
    if type(response) is Response:
        response = _error_answer(header, response.error_code, response.error_message)
    if api.answer is not None:
        response = api.answer(response, header.request)
    version = header.kafka_version
    return _frame(header, write_message(api.response, response, version, api.flexible(version)))


def encode_error_response(header: KafkaHeader, error: BaseException) -> list[Part]:
    """``error`` as the API's answer: its code in every partition (or topic) the request
    named, as Kafka's ``getErrorResponse`` does."""
    message = error.message if isinstance(error, ApiError) else None
    return encode_response(header, _error_answer(header, error_code_of(error), message))


def api_versions_response(header: KafkaHeader, error_code: int = 0) -> list[Part]:
    """Kafka's ApiVersions answer: every API this listener serves, with its versions. To
    a version it does not speak: UNSUPPORTED_VERSION, in v0 (Kafka's rule: the client
    then retries with a version from the list)."""
    version = header.kafka_version if not error_code else 0
    keys = [
        {"api_key": a.key.value, "min_version": a.min_version, "max_version": a.max_version}
        for a in KAFKA_APIS.values()
    ]
    body = {"error_code": error_code, "api_keys": keys, "throttle_time_ms": 0}
    answer = header._replace(kafka_version=version)
    return _frame(
        answer, write_message(API_VERSIONS.response, body, version, API_VERSIONS.flexible(version))
    )


def _error_answer(header: KafkaHeader, code: int, message: str | None) -> Any:
    """The API's answer saying ``code`` wherever Kafka's schema has room for it; the
    encoder reads a dict as it reads Headwater's dataclasses."""
    api = KAFKA_APIS[header.api_key]
    if api.refuse is not None and header.request is not None:
        return api.refuse(header.request, code, message)
    return Response(error_code=code, error_message=message)
