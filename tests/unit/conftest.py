"""Fixtures shared by the unit tests."""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from broker.log import LogConfig
from broker.log.manager import LogManager
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from tests.unit.test_replica_fetch_wake import _leader_state

MakeLeader = Callable[..., Awaitable[ReplicaManager]]


@pytest.fixture
async def make_leader(tmp_path: Path) -> AsyncIterator[MakeLeader]:
    """``make_leader(isr, known, min_insync_replicas=1)``: a leader of t-0 (replicas 1, 2, 3)
    with that ISR, and whether t's config is known."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()
    made: list[ReplicaManager] = []

    async def make(isr: list[int], known: bool, min_insync_replicas: int = 1) -> ReplicaManager:
        async def load(topic: str) -> LogConfig:
            return LogConfig(min_insync_replicas=min_insync_replicas)

        manager = ReplicaManager(1, logs, MetadataCache(), load, config_known=lambda t: known)
        await manager.become_leader_or_follower([_leader_state(isr=isr, replicas=[1, 2, 3])])
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.shutdown()
    logs.shutdown()
