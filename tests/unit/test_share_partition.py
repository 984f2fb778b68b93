"""A share group's delivery state of one partition (KIP-932's SharePartition): acquisition,
acknowledgement, release, lock expiry and the delivery limit, by example and against a
model that keeps one state per offset."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.replica.share_partition import (
    ACCEPT,
    ACKNOWLEDGED,
    ACQUIRED,
    ARCHIVED,
    AVAILABLE,
    GAP,
    REJECT,
    RELEASE,
    RENEW,
    Acknowledgement,
    Acquired,
    BatchBounds,
    SharePartition,
    StateBatch,
)
from protocol.errors import InvalidRecordStateError, InvalidRequestError

LOCK = 30_000


def _batches(*bounds: tuple[int, int]) -> list[BatchBounds]:
    return [BatchBounds(a, b) for a, b in bounds]


def test_new_batches_are_acquired_whole_and_accepted_records_move_the_start() -> None:
    sp = SharePartition(0)
    got = sp.acquire("m1", _batches((0, 9), (10, 19)), 500, 0, LOCK)
    assert got == [Acquired(0, 19, 1)]
    assert (sp.start, sp.end) == (0, 20)
    sp.acknowledge("m1", [Acknowledgement(0, 9, [ACCEPT])], 1, LOCK)
    assert sp.start == 10
    sp.acknowledge("m1", [Acknowledgement(10, 19, [ACCEPT])], 1, LOCK)
    assert (sp.start, sp.runs()) == (20, [])


def test_max_records_is_a_soft_limit_that_never_splits_a_batch() -> None:
    sp = SharePartition(0)
    got = sp.acquire("m1", _batches((0, 9), (10, 19), (20, 29)), 12, 0, LOCK)
    assert got == [Acquired(0, 19, 1)]  # the second batch is taken whole
    assert sp.end == 20
    assert sp.next_fetch_offset() == 20


def test_the_window_is_capped_by_max_in_flight() -> None:
    sp = SharePartition(0, max_in_flight=15)
    assert sp.acquire("m1", _batches((0, 9), (10, 19), (20, 29)), 500, 0, LOCK) == [
        Acquired(0, 19, 1)
    ]
    assert not sp.can_acquire()
    assert sp.acquire("m2", _batches((20, 29)), 500, 0, LOCK) == []
    sp.acknowledge("m1", [Acknowledgement(0, 9, [ACCEPT])], 1, LOCK)
    assert sp.can_acquire()


def test_a_second_member_gets_what_the_first_does_not_hold() -> None:
    sp = SharePartition(0)
    assert sp.acquire("m1", _batches((0, 9)), 500, 0, LOCK) == [Acquired(0, 9, 1)]
    assert sp.next_fetch_offset() == 10
    # a read from 10 sees the next batch only
    assert sp.acquire("m2", _batches((10, 14)), 500, 0, LOCK) == [Acquired(10, 14, 1)]
    with pytest.raises(InvalidRecordStateError, match="another member"):
        sp.acknowledge("m2", [Acknowledgement(0, 4, [ACCEPT])], 1, LOCK)


def test_release_makes_records_available_again_with_their_count() -> None:
    sp = SharePartition(0)
    sp.acquire("m1", _batches((0, 9)), 500, 0, LOCK)
    sp.acknowledge("m1", [Acknowledgement(3, 5, [RELEASE])], 1, LOCK)
    assert sp.next_fetch_offset() == 3
    # the whole batch is read again; only what is available is taken
    assert sp.acquire("m2", _batches((0, 9)), 500, 2, LOCK) == [Acquired(3, 5, 2)]
    assert sp.runs() == [
        (0, 2, ACQUIRED, 1, "m1"),
        (3, 5, ACQUIRED, 2, "m2"),
        (6, 9, ACQUIRED, 1, "m1"),
    ]


def test_per_offset_types_in_one_acknowledgement() -> None:
    sp = SharePartition(0)
    sp.acquire("m1", _batches((0, 4)), 500, 0, LOCK)
    sp.acknowledge(
        "m1", [Acknowledgement(0, 4, [ACCEPT, ACCEPT, RELEASE, REJECT, ACCEPT])], 1, LOCK
    )
    assert sp.start == 2
    assert sp.runs() == [
        (2, 2, AVAILABLE, 1, ""),
        (3, 3, ARCHIVED, 1, ""),
        (4, 4, ACKNOWLEDGED, 1, ""),
    ]


def test_acknowledgements_of_a_partition_are_all_or_nothing() -> None:
    sp = SharePartition(0)
    sp.acquire("m1", _batches((0, 9)), 500, 0, LOCK)
    sp.acknowledge("m1", [Acknowledgement(8, 9, [ACCEPT])], 1, LOCK)
    with pytest.raises(InvalidRecordStateError):
        sp.acknowledge(
            "m1",
            [Acknowledgement(0, 4, [ACCEPT]), Acknowledgement(5, 9, [ACCEPT])],
            1,
            LOCK,
        )
    # the first was not applied either
    assert sp.runs() == [(0, 7, ACQUIRED, 1, "m1"), (8, 9, ACKNOWLEDGED, 1, "")]
    with pytest.raises(InvalidRequestError, match="in order"):
        sp.acknowledge(
            "m1", [Acknowledgement(0, 4, [ACCEPT]), Acknowledgement(4, 5, [ACCEPT])], 1, LOCK
        )


@pytest.mark.parametrize(
    ("ack", "error", "message"),
    [
        (Acknowledgement(5, 12, [ACCEPT]), InvalidRequestError, "past the records"),
        (Acknowledgement(5, 4, [ACCEPT]), InvalidRequestError, "no such range"),
        (Acknowledgement(0, 2, [ACCEPT, ACCEPT]), InvalidRequestError, "one per offset"),
        (Acknowledgement(0, 2, [7]), InvalidRequestError, "not one of"),
    ],
)
def test_malformed_acknowledgements(ack: Acknowledgement, error: type, message: str) -> None:
    sp = SharePartition(0)
    sp.acquire("m1", _batches((0, 9)), 500, 0, LOCK)
    with pytest.raises(error, match=message):
        sp.acknowledge("m1", [ack], 1, LOCK)


def test_acknowledging_twice_is_an_invalid_record_state() -> None:
    sp = SharePartition(0)
    sp.acquire("m1", _batches((0, 9)), 500, 0, LOCK)
    sp.acknowledge("m1", [Acknowledgement(5, 9, [ACCEPT])], 1, LOCK)
    with pytest.raises(InvalidRecordStateError, match="acknowledged"):
        sp.acknowledge("m1", [Acknowledgement(5, 9, [REJECT])], 1, LOCK)
    # below the start: done already, skipped
    sp.acknowledge("m1", [Acknowledgement(0, 4, [ACCEPT])], 1, LOCK)
    sp.acknowledge("m1", [Acknowledgement(0, 4, [ACCEPT])], 1, LOCK)
    assert sp.start == 10


def test_lock_expiry_and_the_delivery_limit() -> None:
    sp = SharePartition(0, delivery_limit=3)
    for delivery in (1, 2, 3):
        assert sp.acquire("m1", _batches((0, 4)), 500, delivery * 100, 50) == [
            Acquired(0, 4, delivery)
        ]
        assert sp.next_deadline() == delivery * 100 + 50
        assert not sp.expire(delivery * 100 + 49)
        assert sp.expire(delivery * 100 + 50)
    # delivered three times: archived, not handed out again
    assert sp.start == 5 and sp.runs() == []
    assert sp.next_deadline() is None


def test_a_release_at_the_limit_archives_and_renew_extends_the_lock() -> None:
    sp = SharePartition(0, delivery_limit=2)
    sp.acquire("m1", _batches((0, 4)), 500, 0, 100)
    sp.acknowledge("m1", [Acknowledgement(0, 4, [RELEASE])], 1, 100)
    sp.acquire("m1", _batches((0, 4)), 500, 10, 100)
    with pytest.raises(InvalidRequestError, match="not one of 0-3"):
        sp.acknowledge("m1", [Acknowledgement(0, 1, [RENEW])], 50, 100)  # v1: no renewal
    sp.acknowledge("m1", [Acknowledgement(0, 1, [RENEW])], 50, 100, renew=True)
    assert sp.next_deadline() == 110
    sp.expire(110)
    # delivered twice: 2-4 archived; 0-1 still out (renewed)
    assert sp.runs() == [(0, 1, ACQUIRED, 2, "m1"), (2, 4, ARCHIVED, 2, "")]
    assert sp.start == 0
    sp.acknowledge("m1", [Acknowledgement(0, 1, [RELEASE])], 60, 100)
    assert sp.start == 5


def test_a_closed_session_releases_without_counting_the_delivery() -> None:
    sp = SharePartition(0, delivery_limit=1)
    sp.acquire("m1", _batches((0, 4)), 500, 0, LOCK)
    sp.acquire("m2", _batches((5, 9)), 500, 0, LOCK)
    assert sp.release("m1")
    assert not sp.release("m1")
    assert sp.runs() == [(0, 4, AVAILABLE, 0, ""), (5, 9, ACQUIRED, 1, "m2")]


def test_offsets_without_records_are_archived_never_handed_out() -> None:
    sp = SharePartition(0)
    got = sp.acquire(
        "m1",
        [BatchBounds(2, 4), BatchBounds(5, 5, control=True), BatchBounds(9, 12)],
        500,
        0,
        LOCK,
        read_from=0,
    )
    assert got == [Acquired(2, 4, 1), Acquired(9, 12, 1)]
    assert sp.start == 2
    sp.acknowledge("m1", [Acknowledgement(2, 4, [ACCEPT])], 1, LOCK)
    assert sp.start == 9  # 5 (a marker) and 6-8 (none) were never out
    with pytest.raises(InvalidRequestError, match="past the records handed out"):
        sp.acknowledge(
            "m1", [Acknowledgement(9, 9, [GAP]), Acknowledgement(13, 13, [GAP])], 1, LOCK
        )
    sp.acknowledge("m1", [Acknowledgement(9, 9, [GAP])], 1, LOCK)  # a record compacted away
    assert sp.runs() == [(10, 12, ACQUIRED, 1, "m1")]


def test_a_record_deleted_while_available_is_archived_when_the_read_skips_it() -> None:
    sp = SharePartition(0)
    sp.acquire("m1", _batches((0, 4), (5, 9)), 500, 0, LOCK)
    sp.acknowledge("m1", [Acknowledgement(0, 9, [RELEASE])], 1, LOCK)
    # compaction removed batch 0-4 meanwhile: the read from 0 starts at 5
    assert sp.acquire("m2", _batches((5, 9)), 500, 2, LOCK, read_from=0) == [Acquired(5, 9, 2)]
    assert sp.start == 5


def test_log_start_moved_past_the_window() -> None:
    sp = SharePartition(0)
    sp.acquire("m1", _batches((0, 9), (10, 19)), 500, 0, LOCK)
    sp.log_start_moved(15)
    assert (sp.start, sp.end) == (15, 20)
    sp.acknowledge("m1", [Acknowledgement(0, 14, [ACCEPT])], 1, LOCK)  # done already
    sp.acknowledge("m1", [Acknowledgement(15, 19, [ACCEPT])], 1, LOCK)
    assert sp.start == 20
    sp.log_start_moved(40)
    assert (sp.start, sp.end, sp.runs()) == (40, 40, [])


def test_stored_state_round_trips_and_forgets_deliveries_in_progress() -> None:
    sp = SharePartition(0)
    sp.acquire("m1", _batches((0, 9), (10, 19)), 500, 0, LOCK)
    sp.acknowledge(
        "m1", [Acknowledgement(2, 3, [ACCEPT]), Acknowledgement(5, 5, [RELEASE])], 1, LOCK
    )
    stored = sp.stored()
    assert stored == [
        StateBatch(0, 1, AVAILABLE, 0),
        StateBatch(2, 3, ACKNOWLEDGED, 1),
        StateBatch(4, 4, AVAILABLE, 0),
        StateBatch(5, 5, AVAILABLE, 1),
        StateBatch(6, 19, AVAILABLE, 0),
    ]
    again = SharePartition(sp.start, stored=stored)
    assert again.next_fetch_offset() == 0
    got = again.acquire("m2", _batches((0, 9), (10, 19)), 500, 5, LOCK)
    assert got == [Acquired(0, 1, 1), Acquired(4, 4, 1), Acquired(5, 5, 2), Acquired(6, 19, 1)]


# --- against a model with one state per offset ------------------------------------------------


class _Model:
    """Per offset what SharePartition keeps per run; the same rules, no runs."""

    def __init__(self, start: int, limit: int, max_in_flight: int) -> None:
        self.start = self.end = start
        self.limit, self.max_in_flight = limit, max_in_flight
        self.rec: dict[int, list] = {}  # offset -> [state, count, member, deadline]

    def acquire(self, member, batches, max_records, now, lock, read_from):  # noqa: C901, PLR0912, PLR0917 - the rules, spelled out per offset
        taken: dict[int, int] = {}
        budget = max_records
        expect = read_from
        for base, last, control in batches:
            if last < self.start:
                expect = last + 1
                continue
            if expect is not None and base > expect:
                for o in range(max(expect, self.start), min(base - 1, self.end - 1) + 1):
                    if self.rec[o][0] == AVAILABLE:
                        self.rec[o][0] = ARCHIVED
            expect = last + 1
            if base < self.end:
                lo, hi = max(base, self.start), min(last, self.end - 1)
                if control:
                    for o in range(lo, hi + 1):
                        if self.rec[o][0] == AVAILABLE:
                            self.rec[o][0] = ARCHIVED
                elif budget > 0:
                    for o in range(lo, hi + 1):
                        r = self.rec[o]
                        if r[0] == AVAILABLE:
                            r[0], r[1], r[2], r[3] = ACQUIRED, r[1] + 1, member, now + lock
                            taken[o] = r[1]
                            budget -= 1
            if last >= self.end:
                if budget <= 0 or self.end - self.start >= self.max_in_flight:
                    break
                for o in range(self.end, base):
                    self.rec[o] = [ARCHIVED, 0, "", 0]
                for o in range(max(base, self.end), last + 1):
                    if control:
                        self.rec[o] = [ARCHIVED, 0, "", 0]
                    else:
                        self.rec[o] = [ACQUIRED, 1, member, now + lock]
                        taken[o] = 1
                        budget -= 1
                self.end = last + 1
        self._advance()
        return taken

    def acknowledge(self, member, acks, now, lock):  # noqa: C901 - the rules, spelled out per offset
        after = -1
        for first, last, types in acks:
            if first <= after:
                return InvalidRequestError
            after = last
            if first > last or len(types) not in (1, last - first + 1):
                return InvalidRequestError
            if any(t not in (0, 1, 2, 3, 4) for t in types):
                return InvalidRequestError
            if last < self.start:
                continue
            if last >= self.end:
                return InvalidRequestError
            for o in range(max(first, self.start), last + 1):
                if self.rec[o][0] != ACQUIRED or self.rec[o][2] != member:
                    return InvalidRecordStateError
        for first, last, types in acks:
            for o in range(max(first, self.start), last + 1):
                t = types[0] if len(types) == 1 else types[o - first]
                r = self.rec[o]
                if t == RENEW:
                    r[3] = now + lock
                elif t == RELEASE:
                    r[0] = ARCHIVED if r[1] >= self.limit else AVAILABLE
                    r[2], r[3] = "", 0
                else:
                    r[0] = ACKNOWLEDGED if t == ACCEPT else ARCHIVED
                    r[2], r[3] = "", 0
        self._advance()
        return None

    def release(self, member):
        for r in self.rec.values():
            if r[0] == ACQUIRED and r[2] == member:
                r[0], r[1], r[2], r[3] = AVAILABLE, max(r[1] - 1, 0), "", 0
        self._advance()

    def expire(self, now):
        for r in self.rec.values():
            if r[0] == ACQUIRED and r[3] <= now:
                r[0] = ARCHIVED if r[1] >= self.limit else AVAILABLE
                r[2], r[3] = "", 0
        self._advance()

    def log_start_moved(self, log_start):
        if log_start <= self.start:
            return
        for o in range(self.start, min(log_start, self.end)):
            del self.rec[o]
        self.start, self.end = log_start, max(self.end, log_start)
        self._advance()

    def _advance(self):
        while self.start < self.end and self.rec[self.start][0] in (ACKNOWLEDGED, ARCHIVED):
            del self.rec[self.start]
            self.start += 1

    def expanded(self):
        return {o: (r[0], r[1], r[2]) for o, r in self.rec.items()}


def _expand(sp: SharePartition) -> dict[int, tuple[int, int, str]]:
    out = {}
    for first, last, state, count, member in sp.runs():
        for o in range(first, last + 1):
            out[o] = (state, count, member)
    return out


_LOG = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6), st.booleans()), max_size=12)


@st.composite
def _log(draw) -> list[BatchBounds]:
    """Batches with holes between them, some control batches."""
    out, offset = [], 0
    for hole, size, control in draw(_LOG):
        base = offset + hole
        out.append(BatchBounds(base, base + (0 if control else size - 1), control))
        offset = out[-1].last_offset + 1
    return out


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sampled_from("ab"), st.integers(1, 20)),
        st.tuples(
            st.just("ack"),
            st.sampled_from("ab"),
            st.lists(
                st.tuples(
                    st.integers(0, 50),
                    st.integers(0, 6),
                    st.one_of(
                        st.lists(st.integers(0, 4), min_size=1, max_size=1),
                        st.lists(st.integers(0, 4), min_size=1, max_size=7),
                    ),
                ),
                min_size=1,
                max_size=3,
            ),
        ),
        st.tuples(st.just("release"), st.sampled_from("ab"), st.just(0)),
        st.tuples(st.just("expire"), st.just(""), st.integers(0, 30)),
        st.tuples(st.just("start"), st.just(""), st.integers(0, 60)),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(_log(), _OPS, st.integers(1, 4), st.integers(5, 40))
def test_runs_keep_what_a_state_per_offset_keeps(log, ops, limit, max_in_flight) -> None:
    sp = SharePartition(0, delivery_limit=limit, max_in_flight=max_in_flight)
    model = _Model(0, limit, max_in_flight)
    for now, (op, member, arg) in enumerate(ops, 1):
        if op == "acquire":
            read_from = sp.next_fetch_offset()
            assert read_from == min(
                [o for o, r in model.rec.items() if r[0] == AVAILABLE], default=model.end
            )
            batches = [b for b in log if b.last_offset >= read_from]
            got = sp.acquire(member, batches, arg, now, 10, read_from=read_from)
            want = model.acquire(member, batches, arg, now, 10, read_from)
            flat = {
                o: a.delivery_count for a in got for o in range(a.first_offset, a.last_offset + 1)
            }
            assert flat == want
            assert all(a.first_offset <= a.last_offset for a in got)
        elif op == "ack":
            acks = [Acknowledgement(f, f + n, t) for f, n, t in arg]
            want_error = None
            try:
                sp.acknowledge(member, acks, now, 10, renew=True)
            except (InvalidRequestError, InvalidRecordStateError) as exc:
                want_error = type(exc)
            model_error = model.acknowledge(member, acks, now, 10)
            assert want_error is model_error
        elif op == "release":
            sp.release(member)
            model.release(member)
        elif op == "expire":
            sp.expire(now + arg)
            model.expire(now + arg)
        else:
            sp.log_start_moved(arg)
            model.log_start_moved(arg)
        assert (sp.start, sp.end) == (model.start, model.end)
        assert _expand(sp) == model.expanded()
        # runs cover the window exactly, in order, merged where alike
        runs = sp.runs()
        assert [r[0] for r in runs] == sorted(r[0] for r in runs)
        if runs:
            assert runs[0][0] == sp.start and runs[-1][1] == sp.end - 1
        for a, b in itertools.pairwise(runs):
            assert a[1] + 1 == b[0]
        restored = SharePartition(sp.start, stored=sp.stored())
        stored_view = {
            o: (AVAILABLE if s == ACQUIRED else s, c - 1 if s == ACQUIRED else c)
            for o, (s, c, _) in _expand(sp).items()
        }
        assert {o: (s, c) for o, (s, c, _) in _expand(restored).items()} == stored_view
