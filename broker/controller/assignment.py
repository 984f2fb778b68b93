"""Where a new topic's replicas go: Kafka's rack-unaware replica assignment.

Kafka's algorithm (``AdminUtils.assignReplicasToBrokers``): the first replicas go round the
sorted brokers from a random start, so leaders spread evenly; each further replica is the
first shifted by an amount that changes every full round of brokers, so followers spread too
and no two partitions on a broker share all their followers. Pure: the random starts are
parameters, so tests fix them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from protocol.errors import InvalidPartitionsError, InvalidReplicationFactorError

__all__ = ["assign_replicas"]


def assign_replicas(
    brokers: Sequence[int],
    partitions: int,
    replication_factor: int,
    *,
    start_index: int | None = None,
    replica_shift: int | None = None,
    first_partition: int = 0,
) -> dict[int, list[int]]:
    """Replicas (preferred leader first) of partitions ``first_partition..+partitions``."""
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
    start = random.randrange(n) if start_index is None else start_index
    shift = random.randrange(n) if replica_shift is None else replica_shift
    assignment: dict[int, list[int]] = {}
    for partition in range(first_partition, first_partition + partitions):
        if partition > 0 and partition % n == 0:
            shift += 1
        first = (partition + start) % n
        replicas = [ordered[first]]
        for j in range(replication_factor - 1):
            replicas.append(ordered[(first + 1 + (shift + j) % (n - 1)) % n])
        assignment[partition] = replicas
    return assignment
