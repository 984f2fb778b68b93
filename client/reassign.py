"""Reassignment plans as ``kafka-reassign-partitions`` reads and writes them.

A plan is Kafka's JSON, so plans move between the two tools unchanged::

    {"version": 1,
     "partitions": [{"topic": "orders", "partition": 0, "replicas": [2, 3, 4]}]}

Each replica may name the data directory it is to be in (``log_dirs``, one per replica:
``any``, or one of that broker's ``log.dirs``); ``--execute`` then moves its log there
(AlterReplicaLogDirs) once the replica is on that broker. Topics to move, for
``--generate``::

    {"version": 1, "topics": [{"topic": "orders"}]}

Pure: parsing, printing, and proposing; the command does the I/O.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

from client.types import TopicPartition, TopicPartitionReplica
from protocol.errors import HeadwaterError

__all__ = [
    "FOLLOWER_THROTTLED",
    "LEADER_THROTTLED",
    "THROTTLE_RATES",
    "PlanError",
    "parse_log_dirs",
    "parse_plan",
    "parse_topics_to_move",
    "plan_json",
    "propose",
    "throttled_brokers",
    "throttled_replicas",
]

LEADER_THROTTLED = "leader.replication.throttled.replicas"
FOLLOWER_THROTTLED = "follower.replication.throttled.replicas"
THROTTLE_RATES = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")


class PlanError(HeadwaterError):
    """A plan or topics file that cannot be used; the message says where and why."""


def parse_plan(text: str, source: str) -> dict[TopicPartition, list[int]]:
    """The partitions a plan moves, each to its replica list (preferred leader first)."""
    value = _load(text, source)
    entries = value.get("partitions") if isinstance(value, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PlanError(f'{source}: expected {{"version": 1, "partitions": [...]}}, not empty')
    plan: dict[TopicPartition, list[int]] = {}
    for i, entry in enumerate(entries):
        where = f"{source}: partitions[{i}]"
        if not isinstance(entry, dict):
            raise PlanError(f"{where} is not an object")
        topic, partition, replicas = (
            entry.get("topic"),
            entry.get("partition"),
            entry.get("replicas"),
        )
        if not isinstance(topic, str) or not topic:
            raise PlanError(f'{where} needs a "topic" name')
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
            raise PlanError(f'{where} needs a "partition" number, 0 or more')
        if not isinstance(replicas, list) or not replicas or not all(map(_is_int, replicas)):
            raise PlanError(f'{where} needs "replicas", a non-empty list of broker ids')
        _dirs_of(entry, replicas, where)
        tp = TopicPartition(topic, partition)
        if tp in plan:
            raise PlanError(f"{where}: {topic}-{partition} is in the plan twice")
        plan[tp] = list(replicas)
    return plan


def parse_log_dirs(text: str, source: str) -> dict[TopicPartitionReplica, str]:
    """The data directory each replica of a plan is to be in, where it names one (not
    ``any``); the plan is checked as :func:`parse_plan` checks it."""
    parse_plan(text, source)
    dirs: dict[TopicPartitionReplica, str] = {}
    for i, entry in enumerate(_load(text, source)["partitions"]):
        replicas = entry["replicas"]
        for broker, path in zip(
            replicas, _dirs_of(entry, replicas, f"{source}: partitions[{i}]"), strict=True
        ):
            if path != "any":
                dirs[TopicPartitionReplica(entry["topic"], entry["partition"], broker)] = path
    return dirs


def _dirs_of(entry: dict[str, Any], replicas: list[int], where: str) -> list[str]:
    """An entry's ``log_dirs`` (all ``any`` when left out), checked."""
    dirs = entry.get("log_dirs")
    if dirs is None:
        return ["any"] * len(replicas)
    if (
        not isinstance(dirs, list)
        or len(dirs) != len(replicas)
        or not all(isinstance(d, str) and (d == "any" or d.startswith("/")) for d in dirs)
    ):
        raise PlanError(
            f'{where}: "log_dirs" needs one entry per replica, each "any" or an absolute '
            "path of that broker's log.dirs"
        )
    return dirs


def parse_topics_to_move(text: str, source: str) -> list[str]:
    """The topic names of a ``--topics-to-move-json-file``."""
    value = _load(text, source)
    entries = value.get("topics") if isinstance(value, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PlanError(f'{source}: expected {{"version": 1, "topics": [{{"topic": NAME}}, ...]}}')
    names: list[str] = []
    for i, entry in enumerate(entries):
        name = entry.get("topic") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise PlanError(f'{source}: topics[{i}] needs a "topic" name')
        if name not in names:
            names.append(name)
    return names


def plan_json(plan: Mapping[TopicPartition, Sequence[int]]) -> str:
    """A plan as Kafka's tool prints it: one line, partitions in order, each replica's
    log directory ``any``."""
    return json.dumps(
        {
            "version": 1,
            "partitions": [
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "replicas": list(replicas),
                    "log_dirs": ["any"] * len(replicas),  # as Kafka's tool writes them
                }
                for tp, replicas in sorted(plan.items())
            ],
        },
        separators=(",", ":"),
    )


def propose(
    current: Mapping[TopicPartition, Sequence[int]],
    brokers: Sequence[int],
    *,
    start: int | None = None,
) -> dict[TopicPartition, list[int]]:
    """Spread each topic's partitions over ``brokers``, each keeping its replica count:
    the preferred leaders go round the brokers (from ``start``, random by default), the
    followers are the brokers after the leader's. A proposal, as Kafka's ``--generate``
    makes: it does not try to move the least data."""
    ring = sorted(set(brokers))
    if not ring:
        raise PlanError("--broker-list names no broker")
    first = random.randrange(len(ring)) if start is None else start
    plan: dict[TopicPartition, list[int]] = {}
    for shift, topic in enumerate(sorted({tp.topic for tp in current})):
        for tp in sorted(tp for tp in current if tp.topic == topic):
            count = len(current[tp])
            if count > len(ring):
                raise PlanError(
                    f"{tp.topic}-{tp.partition} has {count} replicas but --broker-list names "
                    f"{len(ring)} broker{'s' if len(ring) > 1 else ''}; name at least {count}"
                )
            lead = (first + shift + tp.partition) % len(ring)  # topics start apart
            plan[tp] = [ring[(lead + j) % len(ring)] for j in range(count)]
    return plan


def throttled_replicas(
    current: Mapping[TopicPartition, Sequence[int]], plan: Mapping[TopicPartition, Sequence[int]]
) -> dict[str, dict[str, str]]:
    """Each topic's throttle configs for a plan (Kafka's tool): the replicas a moving
    partition has now send under their leader's throttle (any of them may lead), the
    ones it gains fetch under their follower's throttle. Partitions that do not move
    are left out."""
    leaders: dict[str, set[tuple[int, int]]] = {}
    followers: dict[str, set[tuple[int, int]]] = {}
    for tp, wanted in plan.items():
        now = list(current.get(tp, ()))
        if list(wanted) == now:
            continue
        leaders.setdefault(tp.topic, set()).update((tp.partition, b) for b in now)
        gained = [b for b in wanted if b not in now]
        followers.setdefault(tp.topic, set()).update((tp.partition, b) for b in gained)
    return {
        topic: {
            LEADER_THROTTLED: _pairs(leaders[topic]),
            FOLLOWER_THROTTLED: _pairs(followers.get(topic, set())),
        }
        for topic in sorted(leaders)
    }


def throttled_brokers(
    current: Mapping[TopicPartition, Sequence[int]], plan: Mapping[TopicPartition, Sequence[int]]
) -> list[int]:
    """The brokers a plan's moves copy from or to: their rates bound the copying."""
    found: set[int] = set()
    for tp, wanted in plan.items():
        now = list(current.get(tp, ()))
        if list(wanted) != now:
            found.update(now, wanted)
    return sorted(found)


def _pairs(pairs: set[tuple[int, int]]) -> str:
    return ",".join(f"{p}:{b}" for p, b in sorted(pairs))


def _load(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PlanError(f"{source} is not JSON: {exc}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
