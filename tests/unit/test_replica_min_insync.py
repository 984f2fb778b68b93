"""acks=all and min.insync.replicas on the leader: a short ISR is refused with
NOT_ENOUGH_REPLICAS (retriable), also while the topic's own config could not be read yet
(its log then has the broker's defaults, whose min.insync.replicas may be lower)."""

from broker.deferred import Deferred
from protocol.apis import ProduceResponse
from protocol.errors import NotEnoughReplicasError
from tests.unit.conftest import MakeLeader
from tests.unit.test_replica_fetch_wake import _produce


def _error_of(response: object) -> tuple[int, str | None]:
    assert isinstance(response, ProduceResponse)
    answer = response.topics[0].partitions[0]
    return answer.error_code, answer.error_message


async def test_a_short_isr_with_the_topic_config_unknown_refuses_acks_all(
    make_leader: MakeLeader,
) -> None:
    replicas = await make_leader([1, 2], False)
    code, message = _error_of(replicas.produce(_produce(-1)))
    assert code == NotEnoughReplicasError.code
    assert message is not None and "could not be read from ZooKeeper yet" in message
    assert _error_of(replicas.produce(_produce(1))) == (0, None)  # acks=1 still works


async def test_a_known_config_or_a_full_isr_takes_acks_all(make_leader: MakeLeader) -> None:
    for isr, known in (([1, 2], True), ([1, 2, 3], False)):
        replicas = await make_leader(isr, known)
        waiting = replicas.produce(_produce(-1))
        assert not isinstance(waiting, ProduceResponse)  # appended: waits for the replicas
        assert isinstance(waiting, Deferred) and not waiting.done
        waiting.cancel()
