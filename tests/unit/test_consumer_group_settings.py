"""The consumer's group settings are checked when it is made, with messages that say what
to do; subscribe() and assign() exclude each other (no broker needed)."""

from __future__ import annotations

import pytest

from client import CommitFailedError, ConfigurationError, Consumer, TopicPartition
from client import consumer as consumer_module
from protocol.errors import RebalanceInProgressError

SERVERS = "127.0.0.1:1"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"partition_assignment_strategy": "fair"},
            "use one or more of cooperative-sticky, range, roundrobin",
        ),
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


class _Member:
    """The group member as a commit sees it, in a cooperative rebalance."""

    cooperative = True
    generation_id = 2
    member_id = "m"
    group_instance_id = None
    max_poll_interval_ms = 5_000

    def __init__(self, consumer: Consumer, keeps: bool) -> None:
        self.consumer, self.keeps, self.waits = consumer, keeps, 0

    async def wait_settled(self, timeout_s: float) -> bool:
        self.waits += 1
        if not self.keeps:  # the rebalance gave the partition to another member
            self.consumer._subscription.assign([])
        return True

    def request_rejoin(self, why: str) -> None:
        raise AssertionError("a deferred commit is no reason to rejoin")


class _Offsets:
    def __init__(self) -> None:
        self.tries: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int], **member: object) -> None:
        self.tries.append(offsets)
        if len(self.tries) == 1:
            raise RebalanceInProgressError("the group is rebalancing")


def _rebalancing(keeps: bool) -> tuple[Consumer, _Member, _Offsets]:
    consumer = Consumer(bootstrap_servers=SERVERS, group_id="g")
    consumer._state = "running"  # no broker: the commit's path only
    consumer._subscribed = True
    consumer._subscription.assign([TopicPartition("t", 0)])
    member, offsets = _Member(consumer, keeps), _Offsets()
    consumer._member = member  # type: ignore[assignment]
    consumer._offsets = offsets  # type: ignore[assignment]
    return consumer, member, offsets


async def test_a_cooperative_commit_deferred_by_a_rebalance_goes_again_after_it() -> None:
    consumer, member, offsets = _rebalancing(keeps=True)
    await consumer.commit({TopicPartition("t", 0): 5})
    assert member.waits == 1 and len(offsets.tries) == 2

    consumer, member, offsets = _rebalancing(keeps=False)
    with pytest.raises(CommitFailedError, match="rebalanced"):
        await consumer.commit({TopicPartition("t", 0): 5})
    assert member.waits == 1 and len(offsets.tries) == 1  # not ours now: not committed

    consumer, member, offsets = _rebalancing(keeps=True)
    token = consumer_module._IN_REBALANCE.set(True)  # from a rebalance callback: no wait
    try:
        with pytest.raises(CommitFailedError):
            await consumer.commit({TopicPartition("t", 0): 5})
    finally:
        consumer_module._IN_REBALANCE.reset(token)
    assert member.waits == 0
