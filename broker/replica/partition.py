"""One partition hosted on this broker: its log and its place in the replica set.

The controller decides (LeaderAndIsr); this object holds what it said: the leader, the
leader epoch, the ISR and the replicas, and the partition state znode's version (the
leader's compare-and-set ISR writes will use it). A request from an older leader epoch
than the one held is stale and refused.

High watermark: the offset below which every ISR member has the records; consumers see
only what is below it. Until followers replicate (issue 5) the ISR is the leader alone,
so it is the leader's log end offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.log import Log

__all__ = ["Partition"]


@dataclass(slots=True, kw_only=True)
class Partition:
    topic: str
    index: int
    log: Log
    local_broker_id: int
    leader_id: int = -1
    leader_epoch: int = -1
    isr: list[int] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    zk_version: int = 0
    controller_epoch: int = -1

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.local_broker_id

    @property
    def high_watermark(self) -> int:
        return self.log.log_end_offset

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"
