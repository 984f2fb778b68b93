"""The sweep behind fetch sessions: every key about once per period, a share per call."""

from broker.replica.sweep import Sweep


def test_each_call_takes_its_share_of_the_round_by_the_time_since_the_last() -> None:
    keys = {k: None for k in "abcdefgh"}
    sweep: Sweep[str] = Sweep(period=100.0, now=0.0)
    assert sweep.take(keys, 12.0) == []  # 0.96 of a key: carried, not rounded up
    assert sweep.take(keys, 25.0) == ["a", "b"]
    assert sweep.take(keys, 50.0) == ["c", "d"]
    assert sweep.take(keys, 100.0) == ["e", "f", "g", "h"]
    # a long pause: one round at most, not several at once
    assert sweep.take(keys, 10_000.0) == list("abcdefgh")


def test_a_new_round_sees_the_keys_as_they_are_then() -> None:
    keys = {k: None for k in "abcd"}
    sweep: Sweep[int | str] = Sweep(period=4.0, now=0.0)
    assert sweep.take(keys, 2.0) == ["a", "b"]
    del keys["c"]  # removed: the caller skips what it no longer holds
    keys["e"] = None  # added mid-round: in the next round
    assert sweep.take(keys, 4.0) == ["c", "d"]
    assert sweep.take(keys, 8.0) == ["a", "b", "d", "e"]
    assert sweep.take({}, 100.0) == []  # nothing to sweep: nothing due


def test_a_round_shrunk_under_it_still_ends_within_a_period() -> None:
    """From a review: a session that dropped 1,000 of its 1,024 partitions walked the
    rest of its round at the rate of the 24 left, so those were not looked at for
    minutes (their idle followers left the ISR). The round left is walked at its own
    length's rate: each key left comes up within two periods."""
    keys = {i: None for i in range(1024)}
    sweep: Sweep[int] = Sweep(period=7.5, now=0.0)
    sweep.take(keys, 0.5)  # a fetch every 0.5 s, one round per 7.5 s
    for i in range(24, 1024):
        del keys[i]
    seen: dict[int, float] = {}
    now = 0.5
    while now < 15.0:
        now += 0.5
        for key in sweep.take(keys, now):
            if key in keys:
                seen.setdefault(key, now)
    assert set(seen) == set(range(24))


def test_a_call_never_hands_out_a_key_twice() -> None:
    keys = {k: None for k in "abc"}
    sweep: Sweep[str] = Sweep(period=3.0, now=0.0)
    assert sweep.take(keys, 2.0) == ["a", "b"]
    del keys["a"], keys["b"]
    keys["x"] = None
    taken = sweep.take(keys, 5.0)  # the round's end, then a new one: c is not repeated
    assert sorted(taken) == ["c", "x"]


def test_a_whole_round_owes_nothing_after_it() -> None:
    keys = {k: None for k in "abcd"}
    sweep: Sweep[str] = Sweep(period=4.0, now=0.0)
    assert len(sweep.take(keys, 1_000.0)) == 4  # long after: one round
    assert sweep.take(keys, 1_000.5) == []  # not a second one right away
