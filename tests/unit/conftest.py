"""Fixtures shared by the unit tests."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner, Result

from broker.log import LogConfig
from broker.log.manager import LogManager
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from client import cli
from tests.unit.test_replica_fetch_wake import _leader_state

MakeLeader = Callable[..., Awaitable[ReplicaManager]]
_A = TypeVar("_A")


@pytest.fixture
def run() -> Callable[..., Result]:
    """``run(*args)``: the `headwater` command in this process (``--bootstrap-server h:1``;
    its Admin calls go where :func:`serve_admin` says)."""

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli.main, ["--bootstrap-server", "h:1", *args])

    return invoke


def serve_admin(fake: _A, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _A:
    """The command's Admin calls answered by ``fake``, run in an empty folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_admin", lambda ctx, call: asyncio.run(call(fake)))
    return fake


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
