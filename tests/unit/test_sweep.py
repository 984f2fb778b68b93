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
