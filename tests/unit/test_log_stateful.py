"""The partition log against an in-memory model, driven by hypothesis' state machines.

The model is the list of records the log must hold, with their offsets, keys, values and
timestamps, plus the offsets where batches start (the log truncates whole batches only).
Appends, rolls, truncations, clean reopens and crash reopens come in any order; after
every step the log must read back exactly the model, and end where the model ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from broker.log import Log, LogConfig
from protocol.records import encode_batch
from tests.logs import Rec, read_all

CONFIG = LogConfig(segment_bytes=2000, index_interval_bytes=100, segment_index_bytes=4096)
CODECS = ["none", "gzip", "lz4", "zstd", "snappy"]


# one record: key, value, and how far its timestamp is from the batch's clock (may go back)
records = st.tuples(
    st.none() | st.binary(max_size=8),
    st.none() | st.binary(max_size=24),
    st.integers(min_value=-5, max_value=40),
)
batches = st.tuples(st.lists(records, min_size=1, max_size=5), st.sampled_from(CODECS))


def _crash(log: Log) -> None:
    """Drop the log as a killed process would: no trim, no final index entries."""
    for segment in log.segments:
        segment.offset_index.close(trim=False)
        segment.time_index.close(trim=False)
        os.close(segment.fd)
    log.segments.clear()


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="headwater-log-")) / "t-0"
        self.log: Log | None = Log.open(self.dir, CONFIG)
        self.records: list[Rec] = []
        self.batch_starts: list[int] = []
        self.next_offset = 0
        self.clock = 1_000_000

    @property
    def open_log(self) -> Log:
        assert self.log is not None
        return self.log

    # --- rules --------------------------------------------------------------------------

    @rule(
        appends=st.lists(batches, min_size=1, max_size=5),
        together=st.booleans(),
        step=st.sampled_from([50, 50, 0, -120]),  # time stands still or goes back too
    )
    def append(
        self,
        appends: list[tuple[list[tuple[bytes | None, bytes | None, int]], str]],
        together: bool,
        step: int,
    ) -> None:
        encoded: list[bytes] = []
        expected: list[list[Rec]] = []
        for recs, codec in appends:
            self.clock += step
            with_ts = [(k, v, self.clock + jitter) for k, v, jitter in recs]
            encoded.append(
                encode_batch([(k, v, None, ts) for k, v, ts in with_ts], compression=codec)
            )
            expected.append([(0, k, v, ts) for k, v, ts in with_ts])
        chunks = [b"".join(encoded)] if together else encoded
        infos = [self.open_log.append(chunk) for chunk in chunks]
        assert infos[0].first_offset == self.next_offset
        assert sum(i.record_count for i in infos) == sum(len(e) for e in expected)
        for batch in expected:
            self.batch_starts.append(self.next_offset)
            for _, k, v, ts in batch:
                self.records.append((self.next_offset, k, v, ts))
                self.next_offset += 1
        assert infos[-1].last_offset == self.next_offset - 1

    @rule()
    def roll(self) -> None:
        self.open_log.roll()
        assert self.open_log.active.base_offset == self.next_offset

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.sampled_from([*self.batch_starts, self.next_offset]), label="to")
        self.open_log.truncate_to(offset)
        self.records = [r for r in self.records if r[0] < offset]
        self.batch_starts = [b for b in self.batch_starts if b < offset]
        self.next_offset = offset

    @rule()
    def reopen_clean(self) -> None:
        self.open_log.close()
        self.log = None
        self.log = Log.open(self.dir, CONFIG, clean_shutdown=True)

    @rule(flush=st.booleans(), kill=st.booleans())
    def reopen_after_crash(self, flush: bool, kill: bool) -> None:
        log = self.open_log
        if flush:
            log.flush()
        # unflushed bytes are in the page cache: a process crash does not lose them
        if kill:
            _crash(log)
        else:
            log.close()
        self.log = None
        self.log = Log.open(self.dir, CONFIG, recovery_point=0, clean_shutdown=False)

    @rule(data=st.data())
    def find_by_timestamp(self, data: st.DataObject) -> None:
        """``offset_for_timestamp``: the first record, by offset, at or after a time."""
        if self.records:
            near = st.sampled_from([r[3] + d for r in self.records for d in (-1, 0, 1)])
            target = data.draw(near | st.integers(0, self.clock + 100), label="timestamp")
        else:
            target = data.draw(st.integers(0, self.clock + 100), label="timestamp")
        expected = next(((ts, off) for off, _, _, ts in self.records if ts >= target), None)
        assert self.open_log.offset_for_timestamp(target) == expected

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def ends_where_the_model_ends(self) -> None:
        if self.log is None:
            return
        assert self.log.log_start_offset == 0
        assert self.log.log_end_offset == self.next_offset

    @invariant()
    def max_timestamp_is_the_models(self) -> None:
        if self.log is None:
            return
        expected = (-1, -1)
        if self.records:
            top = max(r[3] for r in self.records)
            first = next(off for off, _, _, ts in self.records if ts == top)
            expected = (top, max(b for b in self.batch_starts if b <= first))
        assert self.log.max_timestamp() == expected
        # each segment's too: retention by time goes by it
        for segment in self.log.segments:
            held = [r for r in self.records if segment.base_offset <= r[0] < segment.next_offset]
            if not held:
                continue
            top = max(r[3] for r in held)
            first = next(off for off, _, _, ts in held if ts == top)
            start = max(b for b in self.batch_starts if b <= first)
            assert (segment.max_timestamp, segment.offset_of_max_timestamp) == (top, start)

    @invariant()
    def reads_back_the_model(self) -> None:
        if self.log is None:
            return
        assert read_all(self.log) == self.records

    def teardown(self) -> None:
        try:
            if self.log is not None:
                self.log.close()
        finally:
            shutil.rmtree(self.dir.parent, ignore_errors=True)


LogMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, report_multiple_bugs=False
)
TestLog = LogMachine.TestCase
