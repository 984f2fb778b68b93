"""The consumer's group settings are checked when it is made, with messages that say what
to do; subscribe() and assign() exclude each other (no broker needed)."""

from __future__ import annotations

import pytest

from client import ConfigurationError, Consumer, TopicPartition

SERVERS = "127.0.0.1:1"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"partition_assignment_strategy": "fair"}, "use one or more of range, roundrobin"),
        ({"partition_assignment_strategy": []}, "partition_assignment_strategy"),
        ({"heartbeat_interval_ms": 10_000, "session_timeout_ms": 6_000}, "less than session"),
        ({"heartbeat_interval_ms": 0}, "must be positive"),
        ({"max_poll_interval_ms": 0}, "max_poll_interval_ms=0 must be positive"),
        ({"auto_commit_interval_ms": -1}, "auto_commit_interval_ms=-1"),
        ({"group_instance_id": ""}, "group_instance_id must not be empty"),
        ({"group_id": ""}, "group_id must not be empty"),
    ],
)
def test_bad_group_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Consumer(bootstrap_servers=SERVERS, **{"group_id": "g", **settings})  # type: ignore[arg-type]


def test_strategies_are_kept_in_order_of_preference() -> None:
    consumer = Consumer(
        bootstrap_servers=SERVERS, group_id="g", partition_assignment_strategy=["sticky", "range"]
    )
    assert consumer._member is not None and consumer._member.assignors == ["sticky", "range"]


def test_subscribe_needs_a_group_and_excludes_assign() -> None:
    with pytest.raises(ConfigurationError, match="subscribe\\(\\) needs a group_id"):
        Consumer(bootstrap_servers=SERVERS).subscribe(["t"])
    consumer = Consumer(bootstrap_servers=SERVERS, group_id="g")
    with pytest.raises(ConfigurationError, match="topics or a pattern, not both"):
        consumer.subscribe(["t"], pattern="t.*")
    with pytest.raises(ConfigurationError, match="needs topics or a pattern"):
        consumer.subscribe([])
    consumer.subscribe("t")  # one topic may be given as a string
    assert consumer.subscription() == {"t"}
    with pytest.raises(ConfigurationError, match="exclude each other"):
        consumer.assign([TopicPartition("t", 0)])
    manual = Consumer(bootstrap_servers=SERVERS, group_id="g")
    manual.assign([TopicPartition("t", 0)])
    with pytest.raises(ConfigurationError, match="exclude each other"):
        manual.subscribe(["t"])
