"""Where a new topic's replicas go: Kafka's replica assignment, rack-aware when the brokers
say their racks (``broker.rack``).

Kafka's algorithm (``AdminUtils.assignReplicasToBrokers``): the first replicas go round the
sorted brokers from a random start, so leaders spread evenly; each further replica is the
first shifted by an amount that changes every full round of brokers, so followers spread too
and no two partitions on a broker share all their followers.

With racks, the brokers are first listed alternating racks (each rack's brokers in id
order, the racks in name order), and the same walk skips a broker whose rack already holds
a replica of the partition while some rack holds none, and a broker that holds one while
some broker holds none: a partition's replicas are on as many racks as it can be, so a
rack (a zone) going down takes at most its share of each partition. Every broker must say
its rack, or none: a mix is refused, as Kafka refuses it.

Pure: the random starts are parameters, so tests fix them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from protocol.errors import (
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
)

__all__ = ["assign_replicas", "rack_alternated"]


def assign_replicas(
    brokers: Sequence[int],
    partitions: int,
    replication_factor: int,
    *,
    racks: Mapping[int, str | None] | None = None,
    start_index: int | None = None,
    replica_shift: int | None = None,
    first_partition: int = 0,
) -> dict[int, list[int]]:
    """Replicas (preferred leader first) of partitions ``first_partition..+partitions``;
    rack-aware when ``racks`` gives every broker one."""
    if partitions <= 0:
        raise InvalidPartitionsError(f"a topic needs at least 1 partition, not {partitions}")
    if replication_factor <= 0:
        raise InvalidReplicationFactorError(
            f"the replication factor must be at least 1, not {replication_factor}"
        )
    ordered = sorted(set(brokers))
    n = len(ordered)
    if replication_factor > n:
        raise InvalidReplicationFactorError(
            f"replication factor {replication_factor} is larger than the {n} available "
            f"broker{'s' if n != 1 else ''}; add brokers or lower --replication-factor"
        )
    rack_of = _racks(ordered, racks or {})
    if rack_of:
        ordered = rack_alternated(rack_of)
    start = random.randrange(n) if start_index is None else start_index
    shift = random.randrange(n) if replica_shift is None else replica_shift
    rack_count = len(set(rack_of.values()))  # Kafka's shift, in whole rounds of the racks
    assignment: dict[int, list[int]] = {}
    for partition in range(first_partition, first_partition + partitions):
        if partition > 0 and partition % n == 0:
            shift += 1
        first = (partition + start) % n
        if not rack_of:
            replicas = [ordered[first]]
            for j in range(replication_factor - 1):
                replicas.append(ordered[(first + 1 + (shift + j) % (n - 1)) % n])
        else:
            replicas = _spread(ordered, rack_of, first, shift * rack_count, replication_factor)
        assignment[partition] = replicas
    return assignment


def rack_alternated(rack_of: Mapping[int, str]) -> list[int]:
    """The brokers, one of each rack in turn (racks in name order, brokers in id order
    within a rack): so a walk along the list changes rack at every step it can."""
    by_rack: dict[str, list[int]] = {}
    for broker in sorted(rack_of):
        by_rack.setdefault(rack_of[broker], []).append(broker)
    columns = [by_rack[r] for r in sorted(by_rack)]
    return [c[i] for i in range(max(map(len, columns))) for c in columns if i < len(c)]


def _racks(brokers: list[int], racks: Mapping[int, str | None]) -> dict[int, str]:
    """Each broker's rack, or {} when none has one; a mix is refused."""
    known = {b: r for b in brokers if (r := racks.get(b))}
    if known and len(known) != len(brokers):
        missing = ", ".join(str(b) for b in brokers if b not in known)
        raise InvalidReplicaAssignmentError(
            f"not every broker has broker.rack set (broker{'s' if ',' in missing else ''} "
            f"{missing} {'have' if ',' in missing else 'has'} none): set it on every broker "
            "or on none, so replicas can be spread over racks"
        )
    return known


def _spread(
    ordered: list[int], rack_of: Mapping[int, str], first: int, shift: int, count: int
) -> list[int]:
    """``count`` replicas walking ``ordered`` from ``first`` (the leader) by ``shift``."""
    n = len(ordered)
    rack_count = len(set(rack_of.values()))
    leader = ordered[first]
    replicas = [leader]
    racks_used = {rack_of[leader]}
    k = 0
    while len(replicas) < count:
        broker = ordered[(first + 1 + (shift + k) % (n - 1)) % n]
        k += 1
        rack = rack_of[broker]
        # a rack twice only once every rack has one; a broker twice never
        if (rack not in racks_used or len(racks_used) == rack_count) and broker not in replicas:
            replicas.append(broker)
            racks_used.add(rack)
    return replicas
