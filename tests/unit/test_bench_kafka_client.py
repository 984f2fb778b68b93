"""`make bench`'s confluent-kafka rows: librdkafka takes the producer's settings for both
rows (it refuses some combinations when the producer is made, before any broker)."""

from __future__ import annotations

import dataclasses

import pytest

from bench.compare import kafka_client
from bench.compare.workloads import QUICK


@pytest.mark.parametrize("acks", ["1", "all"])
def test_the_bench_producer_settings_are_accepted_by_librdkafka(acks: str) -> None:
    nothing = dataclasses.replace(QUICK, produce_records=0, max_seconds=1.0)
    # no record to send: the producer is made (where librdkafka checks its settings),
    # flushed and measured; a refused setting raises here
    assert kafka_client._produce("127.0.0.1:1", "t", nothing, acks) == 0.0
