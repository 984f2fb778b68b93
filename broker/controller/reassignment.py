"""Moving a partition's replicas to other brokers (Kafka's KIP-455): the arithmetic.

While a partition is being reassigned, its replica list holds both sets, the target's
replicas first (so the target's first replica is the preferred leader), then those of the
origin that are not in the target; beside it, which replicas are being added and which
removed. Both are kept in the topic's assignment znode (``adding_replicas``,
``removing_replicas``), so a new controller carries on where the last one stopped.

The origin is the list without the adding replicas, the target without the removing ones.
A reassignment is complete once every target replica is in the ISR: then the list becomes
the target and the removed replicas are stopped and deleted. Cancelling one is
reassigning back to its origin. Pure: the controller does the I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from protocol.errors import InvalidReplicaAssignmentError

__all__ = ["ReplicaAssignment", "check_target"]


@dataclass(frozen=True, slots=True)
class ReplicaAssignment:
    """A partition's replicas, and of them the ones being added and removed."""

    replicas: tuple[int, ...]
    adding: tuple[int, ...] = ()
    removing: tuple[int, ...] = ()

    @property
    def origin(self) -> tuple[int, ...]:
        return tuple(r for r in self.replicas if r not in self.adding)

    @property
    def target(self) -> tuple[int, ...]:
        return tuple(r for r in self.replicas if r not in self.removing)

    @property
    def reassigning(self) -> bool:
        return bool(self.adding or self.removing)

    def reassign_to(self, target: Sequence[int]) -> ReplicaAssignment:
        """The assignment that moves this one's origin to ``target`` (Kafka's
        ``ReplicaAssignment.reassignTo``). A reassignment under way is replaced: its
        adding replicas that ``target`` does not name drop out of the list at once."""
        origin = self.origin
        replicas = tuple(dict.fromkeys([*target, *origin]))
        return ReplicaAssignment(
            replicas,
            tuple(r for r in replicas if r not in origin),
            tuple(r for r in replicas if r not in target),
        )

    def complete(self, isr: Collection[int]) -> bool:
        """Whether every target replica is in sync (then the move can finish)."""
        return all(r in isr for r in self.target)


def check_target(name: str, target: Sequence[int], live: Collection[int]) -> None:
    """Refuse a target Kafka would refuse: empty, a broker twice, or a broker that is not
    registered now (a new replica must be able to start copying)."""
    if not target:
        raise InvalidReplicaAssignmentError(f"{name}: the new replica list is empty")
    twice = sorted({r for r in target if target.count(r) > 1})
    if twice:
        raise InvalidReplicaAssignmentError(f"{name}: broker {twice[0]} is named twice")
    absent = sorted(r for r in target if r not in live)
    if absent:
        listed = ", ".join(map(str, absent))
        raise InvalidReplicaAssignmentError(
            f"{name}: broker{'s' if len(absent) > 1 else ''} {listed} "
            f"{'are' if len(absent) > 1 else 'is'} not alive; start it or pick live brokers"
        )
