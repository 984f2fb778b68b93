"""acks=all and min.insync.replicas on the leader: a short ISR is refused with
NOT_ENOUGH_REPLICAS (retriable), also while the topic's own config could not be read yet
(its log then has the broker's defaults, whose min.insync.replicas may be lower)."""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from broker.log import LogConfig
from broker.log.manager import LogManager
from broker.metadata import MetadataCache
from broker.replica.manager import ReplicaManager
from protocol.apis import ProduceResponse
from protocol.errors import NotEnoughReplicasError
from tests.unit.test_replica_fetch_wake import _leader_state, _produce

Replicas = Callable[[list[int], bool], Awaitable[ReplicaManager]]


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[Replicas]:
    """A leader of t-0 (replicas 1, 2, 3) with the given ISR and whether t's config is
    known; default min.insync.replicas (1)."""
    logs = LogManager([tmp_path], broker_id=1, cluster_id="c")
    logs.startup()
    made: list[ReplicaManager] = []

    async def load(topic: str) -> LogConfig:
        return LogConfig()

    async def make(isr: list[int], known: bool) -> ReplicaManager:
        manager = ReplicaManager(1, logs, MetadataCache(), load, config_known=lambda t: known)
        await manager.become_leader_or_follower([_leader_state(isr=isr, replicas=[1, 2, 3])])
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.shutdown()
    logs.shutdown()


def _error_of(response: object) -> tuple[int, str | None]:
    assert isinstance(response, ProduceResponse)
    answer = response.topics[0].partitions[0]
    return answer.error_code, answer.error_message


async def test_a_short_isr_with_the_topic_config_unknown_refuses_acks_all(leader: Replicas) -> None:
    replicas = await leader([1, 2], False)
    code, message = _error_of(replicas.produce(_produce(-1)))
    assert code == NotEnoughReplicasError.code
    assert message is not None and "could not be read from ZooKeeper yet" in message
    assert _error_of(replicas.produce(_produce(1))) == (0, None)  # acks=1 still works


async def test_a_known_config_or_a_full_isr_takes_acks_all(leader: Replicas) -> None:
    for isr, known in (([1, 2], True), ([1, 2, 3], False)):
        replicas = await leader(isr, known)
        waiting = replicas.produce(_produce(-1))
        assert not isinstance(waiting, ProduceResponse)  # appended: waits for the replicas
        waiting.close()
