"""Client quotas' rules (protocol.quotas): Kafka's precedence of entities, the sampled
byte rate, and the throttle that brings a client back to its bound."""

from __future__ import annotations

import time

import pytest

from protocol.quotas import CLIENT, DEFAULT, USER, Rate, TokenBucket, resolve, throttle_ms

KEY = "producer_byte_rate"


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ([((USER, "alice"), (CLIENT, "app"))], ((USER, "alice"), (CLIENT, "app"))),
        ([((USER, "alice"), (CLIENT, DEFAULT))], ((USER, "alice"), (CLIENT, DEFAULT))),
        ([((USER, "alice"),)], ((USER, "alice"),)),
        ([((USER, DEFAULT), (CLIENT, "app"))], ((USER, DEFAULT), (CLIENT, "app"))),
        ([((USER, DEFAULT), (CLIENT, DEFAULT))], ((USER, DEFAULT), (CLIENT, DEFAULT))),
        ([((USER, DEFAULT),)], ((USER, DEFAULT),)),
        ([((CLIENT, "app"),)], ((CLIENT, "app"),)),
        ([((CLIENT, DEFAULT),)], ((CLIENT, DEFAULT),)),
    ],
)
def test_each_level_of_kafkas_precedence_applies_alone(configured: list, expected: tuple) -> None:  # type: ignore[type-arg]
    quotas = {entity: {KEY: 100.0} for entity in configured}
    assert resolve(quotas, KEY, "alice", "app") == (expected, 100.0)


def test_the_most_specific_configured_entity_wins_and_others_are_not_asked() -> None:
    quotas = {
        ((CLIENT, DEFAULT),): {KEY: 1.0},
        ((USER, DEFAULT),): {KEY: 2.0},
        ((USER, "alice"),): {KEY: 3.0, "consumer_byte_rate": 9.0},
        ((USER, "alice"), (CLIENT, "app")): {"consumer_byte_rate": 4.0},
    }
    assert resolve(quotas, KEY, "alice", "app") == (((USER, "alice"),), 3.0)
    assert resolve(quotas, "consumer_byte_rate", "alice", "app") == (
        ((USER, "alice"), (CLIENT, "app")),
        4.0,
    )
    assert resolve(quotas, KEY, "bob", "other") == (((USER, DEFAULT),), 2.0)
    assert resolve({}, KEY, "bob", "other") is None


def test_the_rate_is_over_the_samples_and_a_first_burst_is_not_enormous() -> None:
    """Kafka's Rate.windowSize: the missing windows of a new sensor count as empty ones
    (a review found a first burst measured over 1 s, its throttle ten times Kafka's)."""
    rate = Rate(samples=11, window_ms=1000)
    rate.record(1000, now_ms=0)
    assert rate.per_second(0) == 100  # 1,000 bytes over the 10 windows before this one
    assert rate.per_second(500) == pytest.approx(1000 / 10.5)
    for second in range(1, 11):
        rate.record(1000, now_ms=second * 1000)
    assert rate.per_second(10_000) == pytest.approx(1100)  # 11,000 bytes over 10 s
    assert not rate.idle(20_000)
    assert rate.per_second(30_000) == 0 and rate.idle(30_000)  # all samples expired


def test_a_default_quota_bounds_each_user_on_its_own_a_named_one_its_clients_together() -> None:
    """From a review: a default-user quota was one rate for every user it covers."""
    import contextvars

    from broker.config import load_config
    from broker.quotas import QuotaManager
    from broker.server import PEER_CLIENT_ID, PEER_PRINCIPAL

    manager = QuotaManager(None, load_config(env={}, overrides=["broker.id=1"]))
    manager._quotas = {  # what a reload from ZooKeeper would leave
        ((USER, DEFAULT),): {KEY: 100_000.0},
        ((CLIENT, "shared"),): {KEY: 100_000.0},
    }

    def send(user: str, client_id: str, nbytes: int) -> int:
        def run() -> int:
            PEER_PRINCIPAL.set(f"User:{user}")
            PEER_CLIENT_ID.set(client_id)
            return manager.record(KEY, nbytes)

        return contextvars.copy_context().run(run)

    # 10 windows of 100 KB/s: 1 MB each before a throttle
    assert send("alice", "a", 900_000) == 0
    assert send("bob", "b", 900_000) == 0  # bob has his own bound, not alice's rest
    assert send("alice", "a", 900_000) > 0
    # ANONYMOUS is a user too: the default-user quota (ahead of any client-id one) bounds
    # it on its own
    assert send("ANONYMOUS", "shared", 900_000) == 0


def test_the_throttle_brings_the_rate_back_to_the_bound() -> None:
    assert throttle_ms(900, 1000, 10_000, 11_000) == 0
    # 2,000 B/s measured over 10 s against 1,000: 10 s more at zero halves it
    assert throttle_ms(2000, 1000, 10_000, 11_000) == 10_000
    assert throttle_ms(10**9, 1000, 10_000, 11_000) == 11_000  # at most the whole window


def test_the_mutation_bucket_lets_a_request_into_debt_then_waits_it_out() -> None:
    """KIP-599's token bucket: 2 a second, a burst of 10."""
    bucket = TokenBucket(rate=2, burst=10)
    assert bucket.take(8, now_ms=0) == 0  # from a full bucket: 2 left
    assert bucket.take(8, now_ms=0) == 0  # not in debt yet: let in, 6 in debt
    assert bucket.take(1, now_ms=0) == 3001  # 6 of debt at 2 a second
    assert bucket.take(1, now_ms=1000) == 2001  # refused: nothing taken meanwhile
    bucket.give_back(8)  # the second request failed: its 8 come back (4 at 1 s: 6 - 4 = 2)
    assert bucket.take(1, now_ms=1000) == 0
    assert not bucket.full(now_ms=1000)
    assert bucket.full(now_ms=100_000)  # a whole burst saved up again, no more
    assert bucket.take(10, now_ms=100_000) == 0 and bucket.take(1, now_ms=100_000) == 0
    assert bucket.take(1, now_ms=100_000) == 501


def test_permissive_mode_takes_into_debt_and_says_how_long_to_wait() -> None:
    """Kafka's permissive mode (a client too old for THROTTLING_QUOTA_EXCEEDED): always
    taken, the wait only reported (the answer's throttle)."""
    bucket = TokenBucket(rate=2, burst=10)
    assert bucket.record(8, now_ms=0) == 0  # 2 left: not in debt
    assert bucket.record(8, now_ms=0) == 3001  # 6 of debt at 2 a second
    assert bucket.record(2, now_ms=0) == 4001  # taken all the same: 8 of debt
    assert bucket.take(1, now_ms=0) == 4001  # a strict request is refused meanwhile
    assert bucket.record(1, now_ms=5000) == 0  # paid back (10 gained, at most the burst)


def test_mutation_buckets_are_swept_once_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: a default client-id controller_mutation_rate kept a bucket per
    client id for ever (the sweep ran only with a byte-rate quota)."""
    import contextvars
    import time

    from broker.config import load_config
    from broker.quotas import QuotaManager
    from broker.server import PEER_CLIENT_ID, PEER_PRINCIPAL

    manager = QuotaManager(None, load_config(env={}, overrides=["broker.id=1"]))
    manager._quotas = {((CLIENT, DEFAULT),): {"controller_mutation_rate": 10.0}}
    clock = [1_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def one(client_id: str) -> None:
        PEER_PRINCIPAL.set("User:u")
        PEER_CLIENT_ID.set(client_id)
        bucket = manager.mutations()
        assert bucket is not None
        bucket.take(1, int(clock[0] * 1000))

    for i in range(1000):
        contextvars.copy_context().run(one, f"client-{i}")
    clock[0] += 3600  # an hour idle: every bucket full again
    contextvars.copy_context().run(one, "late")
    assert len(manager._buckets) == 1


def test_a_new_mutation_rate_keeps_the_debt() -> None:
    from broker.config import load_config
    from broker.quotas import QuotaManager

    manager = QuotaManager(None, load_config(env={}, overrides=["broker.id=1"]))
    manager._quotas = {((USER, DEFAULT),): {"controller_mutation_rate": 1.0}}
    bucket = manager.mutations()
    assert bucket is not None and bucket.take(20, int(time.monotonic() * 1000)) == 0
    manager._quotas = {((USER, DEFAULT),): {"controller_mutation_rate": 2.0}}
    again = manager.mutations()
    assert again is not None and again.rate == 2 and (again.tokens or 0) < 0
