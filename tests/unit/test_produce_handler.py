"""The Produce handler's acks=0 rule: a produce refused whole has no answer to carry the
error (its producer reads none), so its connection is closed, as Kafka's, on either
listener (Headwater's or Kafka's protocol)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from broker.app import _produce_handler
from broker.server import CloseConnection
from protocol.apis import ProducePartition, ProduceRequest, ProduceTopic
from protocol.errors import NotEnoughReplicasError
from protocol.framing import RequestHeader


class _Refusing:
    def produce(self, request: ProduceRequest) -> Any:
        raise NotEnoughReplicasError("the whole request refused")


def _request(acks: int) -> ProduceRequest:
    partition = ProducePartition(index=0, records=b"r")
    return ProduceRequest(
        acks=acks, timeout_ms=1000, topics=[ProduceTopic(name="t", partitions=[partition])]
    )


def test_a_produce_refused_whole_closes_an_acks0_connection_and_answers_the_others() -> None:
    quotas = SimpleNamespace(active=False)
    produce = _produce_handler(_Refusing(), quotas, SimpleNamespace())  # type: ignore[arg-type]
    header = RequestHeader(0, 0, 1)
    with pytest.raises(CloseConnection, match="acks=0 produce refused"):
        produce(header, _request(acks=0))
    with pytest.raises(NotEnoughReplicasError):  # answered with the error, as before
        produce(header, _request(acks=1))
