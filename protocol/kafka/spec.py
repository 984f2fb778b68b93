"""What one API of a Kafka-protocol listener is: its versions, its two message specs, and
the few rules of Kafka's that no field says (see :mod:`protocol.kafka.messages`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from protocol.apis import ApiKey, LeaderIdAndEpoch, NodeEndpoint
from protocol.kafka.codec import (
    INT16,
    INT32,
    NULLABLE_STRING,
    STRING,
    ZERO_UUID,
    Array,
    Field,
    Struct,
)

__all__ = [
    "CURRENT_LEADER",
    "NODE_ENDPOINTS",
    "NO_OPERATIONS",
    "F",
    "KafkaApi",
    "name_or_id",
    "partition_errors",
    "per_item",
    "per_partition",
    "per_topic",
    "per_topic_or_id",
    "split_names_and_ids",
]

NO_OPERATIONS = -(2**31)
"""Kafka's ``authorizedOperations`` when they were not asked for (INT32_MIN)."""


@dataclass(frozen=True, slots=True)
class KafkaApi:
    key: ApiKey
    min_version: int
    max_version: int
    flexible_from: int
    request: Struct
    response: Struct
    finish: Callable[[Any, int, str | None], Any] | None = None
    """Applied to a decoded request with its version and the header's client id: what
    they imply that no field says."""
    answer: Callable[[Any, Any], Any] | None = None
    """Applied to the handler's response with the request: fields Kafka's answer has and
    Headwater's does not (a LeaveGroup v3 answer's members)."""
    strict_quota_from: int | None = None
    """KIP-599: the first version whose answer may say THROTTLING_QUOTA_EXCEEDED (Kafka's
    ``strictSinceVersion``); below it a mutation over the quota is throttled instead."""
    served_by: ApiKey | None = None
    """The Headwater API whose handler serves it, where it is not its own (Kafka's
    DescribeCluster: Metadata's)."""
    refuse: Callable[[Any, int, str | None], Any] | None = None
    """The answer to a request refused whole (its handler raised, or answered with a
    request-level error only) for an API whose answer has no request-level error code:
    the code in every topic or partition the request named, as Kafka's
    ``getErrorResponse``. None: the answer's own ``error_code`` says it."""

    @property
    def name(self) -> str:
        return "".join(part.capitalize() for part in self.key.name.split("_"))

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version

    def flexible(self, version: int) -> bool:
        return version >= self.flexible_from


def F(name: str, type_: Any, since: int = 0, until: int | None = None, **kw: Any) -> Field:
    """A field present from version ``since`` through ``until``."""
    return Field(name, type_, (since, until), **kw)


# KIP-951: with NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH, the leader this broker
# knows of, and where it is reached (Produce v10+, Fetch v16+ as tagged fields; the share
# group APIs as plain ones)
CURRENT_LEADER = Struct(
    [F("leader_id", INT32, default=-1), F("leader_epoch", INT32, default=-1)],
    LeaderIdAndEpoch,
)
NODE_ENDPOINTS = Array(
    Struct(
        [
            F("node_id", INT32),
            F("host", STRING),
            F("port", INT32),
            F("rack", NULLABLE_STRING),
        ],
        NodeEndpoint,
    )
)


def partition_errors(*, partitions: str = "partitions") -> Array:
    """Kafka's most common answer: topics, each with its partitions' error codes
    (``[name, partitions: [partition_index, error_code]]``, OffsetCommit's and others')."""
    return Array(
        Struct(
            [
                F("name", STRING),
                F(partitions, Array(Struct([F("partition_index", INT32), F("error_code", INT16)]))),
            ]
        )
    )


def per_topic(
    items: str, listed: str, *names: str
) -> Callable[[Any, int, str | None], dict[str, Any]]:
    """A refusal answering each item of the request's ``items`` (topics, resources,
    groups) under ``listed``: with the item's ``names`` attributes (default ``name``; a
    plain string item is the name itself) and the code."""
    return per_item(items, listed, *(names or ("name",)))


def name_or_id(name: str | None = None, topic_id: bytes = ZERO_UUID) -> str | bytes:
    """A topic a request names, or (KIP-516) names by id alone: its id, which
    :func:`split_names_and_ids` then sets apart."""
    if name is not None:
        return name
    if topic_id == ZERO_UUID:
        raise ValueError("a topic needs a name or a topic id")
    return topic_id


def split_names_and_ids(asked: list[str | bytes]) -> tuple[list[str], list[bytes]]:
    """The names, and the ids, of what :func:`name_or_id` made of a request's topics."""
    return [t for t in asked if isinstance(t, str)], [t for t in asked if isinstance(t, bytes)]


def per_topic_or_id(
    names: str, ids: str, listed: str
) -> Callable[[Any, int, str | None], dict[str, Any]]:
    """As :func:`per_topic` for a request naming topics (``names``) and ids (``ids``):
    each is answered, an id with its id and no name."""
    by_name = per_topic(names, listed)

    def refuse(request: Any, code: int, message: str | None) -> dict[str, Any]:
        answer = by_name(request, code, message)
        answer[listed] += [
            {"name": "", "topic_id": i, "error_code": code, "error_message": message}
            for i in getattr(request, ids)
        ]
        return answer

    return refuse


def per_item(
    items: str, listed: str, *keys: str
) -> Callable[[Any, int, str | None], dict[str, Any]]:
    """As :func:`per_topic`, with the item's ``keys`` attributes only (none: an answer
    per item in order, as CreateAcls's per creation)."""

    def refuse(request: Any, code: int, message: str | None) -> dict[str, Any]:
        listing: Iterable[Any] = getattr(request, items) or ()
        return {
            "error_code": code,
            "error_message": message,  # (where the answer has one at the top, too)
            listed: [
                {
                    **(
                        {keys[0]: item}
                        if isinstance(item, str) and keys
                        else {k: getattr(item, k) for k in keys}
                    ),
                    "error_code": code,
                    "error_message": message,
                }
                for item in listing
            ],
        }

    return refuse


def per_partition(
    index: str,
    answer_index: str,
    *,
    topics: str = "topics",
    topic: str = "name",
    listed: str = "topics",
    partitions: str = "partitions",
    asked: str = "partitions",
) -> Callable[[Any, int, str | None], dict[str, Any]]:
    """A refusal answering each partition of each topic the request named (its
    ``topics``; a request's partitions may be listed under another name, as ElectLeaders'
    ``partition_result``): the request's partition item's ``index`` attribute (or the
    item, a plain index; listed under ``asked``) as the answer's ``answer_index``, with
    the code."""

    def refuse(request: Any, code: int, message: str | None) -> dict[str, Any]:
        return {
            "error_code": code,
            listed: [
                {
                    topic: getattr(t, topic),
                    "topic_id": getattr(t, "topic_id", ZERO_UUID),  # (where answers have it)
                    partitions: [
                        {
                            answer_index: p if isinstance(p, int) else getattr(p, index),
                            "error_code": code,
                            "error_message": message,
                        }
                        for p in getattr(t, asked)
                    ],
                }
                for t in getattr(request, topics) or ()
            ],
        }

    return refuse
