"""Topic ids (Kafka's KIP-516): 16 random bytes a topic is given when it is made, kept in
its ZooKeeper znode, so a topic deleted and made again under its name is told apart from
the old one. Shown as Kafka shows a ``Uuid``: the 16 bytes in URL-safe base64 without
padding, 22 characters."""

from __future__ import annotations

import base64
import binascii
import uuid

__all__ = [
    "TOPIC_IDS_FEATURE",
    "ZERO_TOPIC_ID",
    "format_topic_id",
    "new_topic_id",
    "parse_topic_id",
]

ZERO_TOPIC_ID = bytes(16)
"""No topic id (Kafka's ``Uuid.ZERO_UUID``): a topic made by a build that gave none, until
the controller gives it one, and what a message that carries no id holds."""

_METADATA_TOPIC_ID = (1).to_bytes(16, "big")  # Kafka reserves it for its metadata log

TOPIC_IDS_FEATURE = "headwater.topic.ids"
"""The feature (KIP-584's ``features`` of a broker's registration) of a build that keeps
topic ids. A build without it rewrites a topic's znode without the id (growing the topic,
or moving replicas as controller), so ids are given only while every registered broker
has it, as Kafka gives them only once ``inter.broker.protocol.version`` says every broker
is upgraded."""


def new_topic_id() -> bytes:
    """A fresh random id, as Kafka's ``Uuid.randomUuid``: a version-4 UUID that is neither
    reserved nor shown starting with ``-`` (which a command line would take for an
    option)."""
    while True:
        candidate = uuid.uuid4().bytes
        if candidate not in (ZERO_TOPIC_ID, _METADATA_TOPIC_ID) and not format_topic_id(
            candidate
        ).startswith("-"):
            return candidate


def format_topic_id(topic_id: bytes) -> str:
    """Kafka's text form: ``AAAAAAAAAAAAAAAAAAAAAA`` for :data:`ZERO_TOPIC_ID`."""
    return base64.urlsafe_b64encode(topic_id).rstrip(b"=").decode("ascii")


def parse_topic_id(text: str) -> bytes:
    """The 16 bytes of Kafka's text form; ValueError, saying what was expected, otherwise."""
    if len(text) != 22:
        raise ValueError(f"topic id {text!r} is not 22 characters of URL-safe base64")
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        raise ValueError(f"topic id {text!r} is not URL-safe base64") from None
    if len(raw) != 16 or format_topic_id(raw) != text:
        raise ValueError(f"topic id {text!r} is not 22 characters of URL-safe base64")
    return raw
