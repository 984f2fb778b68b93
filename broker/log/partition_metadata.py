"""``partition.metadata``: the id of the topic a log belongs to (KIP-516), beside its
segments, in Kafka's format (its ``PartitionMetadataFile``)::

    version: 0
    topic_id: ASNFZ4mrze8P7cuph2VDIQ

Written when the replica is first told its topic's id, then checked against the id of
every LeaderAndIsr: a log kept from a topic deleted while its broker was away is not taken
for a topic made again under the name."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from protocol.topic_id import format_topic_id, parse_topic_id

__all__ = ["FILE_NAME", "read_topic_id", "write_topic_id"]

FILE_NAME = "partition.metadata"


def read_topic_id(directory: Path) -> bytes | None:
    """The id ``directory``'s file names; None without one. A file that does not read as
    Kafka's version 0 (a crash before its first fsync, a hand edit) is logged and taken as
    no id: it is written again from the next LeaderAndIsr."""
    path = directory / FILE_NAME
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        structlog.get_logger("headwater.log").warning(
            "log.partition_metadata_unreadable", path=str(path), error=str(exc)
        )
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    try:
        if fields.get("version") != "0":
            raise ValueError(f"version {fields.get('version')!r}, not 0")
        return parse_topic_id(fields.get("topic_id", ""))
    except ValueError as exc:
        structlog.get_logger("headwater.log").warning(
            "log.partition_metadata_unreadable", path=str(path), error=str(exc)
        )
        return None


def write_topic_id(directory: Path, topic_id: bytes) -> None:
    """Write the file (aside, then renamed over it), not synced: a creation of a thousand
    partitions would otherwise wait for a thousand fsyncs (Kafka syncs it with the log's
    next flush). A crash before the kernel writes it back may leave it empty or missing,
    which reads as no id: the check passes, and the next LeaderAndIsr writes it again.
    Blocking: from a worker thread."""
    path = directory / FILE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(f"version: 0\ntopic_id: {format_topic_id(topic_id)}\n".encode("ascii"))
    os.replace(tmp, path)
