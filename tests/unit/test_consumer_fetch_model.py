"""The consumer's fetch path against a model of three brokers with fetch sessions,
driven at random (written by a reviewer of the per-leader fetch sets): the real Consumer
(its fetcher pass, requests, answers), Subscription and FetchSessionBuilder, with answers
in any order, lost requests and sessions, partition errors, partial batches, seeks,
resets, leader moves, reassignments, back-offs, pauses and resumes. It checks:

- S: after each request, the broker's session holds exactly that Fetch's positions;
- D: the records handed out start at the position and follow one another (no duplicate,
  no gap), with the right values;
- L: once quiet, every assigned, positioned, unpaused, error-free, not-full partition is in its
  leader's Fetch in flight, and in that broker's session, at its fetch offset;
- E (KIP-320): each leader move raises the partition's leader epoch; a partition is never
  in a Fetch while its position waits for validation, a Fetch says the epoch the
  consumer knows, and once quiet nothing is left waiting. The leaders answer the
  validation at random: the position holds, the log parts below it (a truncation: the
  position moves back, and D still holds), or FENCED_LEADER_EPOCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from typing import Any

import pytest

import client.consumer as cmod
from client import Consumer
from client.types import TopicPartition
from protocol.apis import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    ApiKey,
    EpochEndOffset,
    FetchPartitionData,
    FetchResponse,
    FetchTopicResponse,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderTopicResult,
)
from protocol.errors import ApiError, FetchSessionIdNotFoundError, NetworkError
from protocol.records import encode_batch

BATCH = 3
NODES = [1, 2, 3]


class Violation(Exception):
    pass


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


class Meta:
    def __init__(self, leaders: dict, epochs: dict | None = None) -> None:
        self._leaders = leaders
        self._epochs = dict(epochs or {})
        self.topic_errors: dict = {}
        self.topics: dict = {}  # (no topic ids: none made again)
        self.brokers = {n: None for n in NODES}

    def leaders(self):
        return self._leaders

    def leader_epochs(self):
        return self._epochs

    def leader_for(self, tp):
        return self._leaders.get(tp)


def batch_bytes(tp: TopicPartition, base: int, epoch: int = 0) -> bytes:
    data = bytearray(
        encode_batch(
            [
                (None, f"{tp.topic}-{tp.partition}-{base + i}".encode(), None, 1000 + base + i)
                for i in range(BATCH)
            ],
            base_offset=base,
        )
    )
    struct.pack_into(">i", data, 12, epoch)  # partitionLeaderEpoch: outside the CRC
    return bytes(data)


class BrokerModel:
    def __init__(self, node: int, rnd: random.Random) -> None:
        self.node = node
        self.rnd = rnd
        self.sessions: dict[int, dict] = {}
        self.next_id = node * 1000 + 1
        self.evicted: set[int] = set()

    def apply(self, req: Any) -> tuple[int, dict, bool]:
        """Apply a request; (session id, partitions it reads, full)."""
        if req.session_epoch == INITIAL_EPOCH:
            return self._full(req)
        if req.session_epoch == FINAL_EPOCH:
            self.sessions.pop(req.session_id, None)
            return 0, {}, True
        s = self.sessions.get(req.session_id)
        if s is None:
            if req.session_id in self.evicted:
                raise FetchSessionIdNotFoundError("evicted")
            raise Violation(f"node {self.node}: unknown session {req.session_id}")
        if s["epoch"] != req.session_epoch:
            raise Violation(f"node {self.node}: epoch {req.session_epoch} != {s['epoch']}")
        for f in req.forgotten_topics_data:
            for p in f.partitions:
                s["parts"].pop((f.topic, p), None)
        for t in req.topics:
            for p in t.partitions:
                s["parts"][(t.topic, p.partition)] = p.fetch_offset
        s["epoch"] += 1
        return req.session_id, s["parts"], False

    def _full(self, req: Any) -> tuple[int, dict, bool]:
        if req.session_id:
            self.sessions.pop(req.session_id, None)
        if req.forgotten_topics_data:
            raise Violation(f"full request with forgotten {req.forgotten_topics_data}")
        parts = {}
        for t in req.topics:
            for p in t.partitions:
                key = (t.topic, p.partition)
                if key in parts:
                    raise Violation(f"duplicate {key} in full request")
                parts[key] = p.fetch_offset
        if self.rnd.random() < 0.1:
            return 0, parts, True  # a broker that keeps no session
        sid = self.next_id
        self.next_id += 1
        self.sessions[sid] = {"epoch": 1, "parts": dict(parts)}
        return sid, parts, True

    def evict(self) -> None:
        for sid in list(self.sessions):
            self.evicted.add(sid)
            del self.sessions[sid]


class Harness:
    clock_for_next: Clock

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.seed = seed
        self.clock = Harness.clock_for_next
        self.all_tps = [TopicPartition(t, p) for t in ("a", "b") for p in range(4)]
        self.brokers = {n: BrokerModel(n, self.rnd) for n in NODES}
        self.pending: dict[int, dict] = {}  # node -> in-flight
        self.positions_for: dict[int, object] = {}
        self.log: list[str] = []
        self.quiet = False  # answers carry no news, no errors
        self.epochs: dict[TopicPartition, int] = {}
        c = self.consumer = Consumer(
            bootstrap_servers="unused:1",
            max_partition_fetch_bytes=self.rnd.choice([150, 400, 10_000]),
            retry_backoff_ms=100,
        )
        self.cluster = _FakeCluster(self)
        c._cluster = self.cluster  # type: ignore[assignment]
        c._state = "running"
        c._wakeup = asyncio.Event()
        c._data = asyncio.Event()
        self.new_leaders(all_random=True)
        orig_start = c._start_fetch

        def start(node, fetch):
            if node in self.pending:
                raise Violation(f"second Fetch to busy node {node}")
            states = c._subscription.states
            if any(tp in states and states[tp].paused for tp in fetch.positions):
                raise Violation(f"a paused partition in a Fetch to node {node}")
            for tp, asked in fetch.positions.items():
                if tp in states and states[tp].validating:
                    raise Violation(f"E: {tp} in a Fetch while its position waits for validation")
                if tp in states and asked.leader_epoch != states[tp].leader_epoch:
                    raise Violation(f"E: {tp} fetched under epoch {asked.leader_epoch}")
            self.positions_for[node] = fetch.positions
            orig_start(node, fetch)

        c._start_fetch = start  # type: ignore[method-assign]

        async def fake_reset():
            sub = c._subscription
            for tp in sub.needs_position():
                sub.set_reset_position(tp, self.rnd.randrange(0, 12), sub.states[tp].generation)

        c._reset_positions = fake_reset  # type: ignore[method-assign]
        tps = self.rnd.sample(self.all_tps, self.rnd.randint(1, len(self.all_tps)))
        c._subscription.assign(tps)
        for tp in tps:
            c._subscription.seek(tp, self.rnd.randrange(0, 12))

    # --- cluster ----------------------------------------------------------------------
    def new_leaders(self, all_random: bool = False, same: bool = False) -> None:
        if same:
            self.cluster.metadata = Meta(dict(self.cluster.metadata.leaders()), self.epochs)
            return
        old = {} if all_random else dict(self.cluster.metadata.leaders())
        for tp in self.all_tps:
            if all_random or self.rnd.random() < 0.3:
                choice = self.rnd.choice([*NODES, None])
                self.epochs[tp] = self.epochs.get(tp, -1) + 1  # every change of leader
                if choice is None:
                    old.pop(tp, None)
                else:
                    old[tp] = choice
        self.cluster.metadata = Meta(old, self.epochs)

    def epoch_answer(self, request: Any) -> OffsetForLeaderEpochResponse:
        topics = []
        for t in request.topics:
            answers = []
            for p in t.partitions:
                x = self.rnd.random()
                if not self.quiet and x < 0.1:
                    answers.append(EpochEndOffset(partition=p.partition, error_code=74))
                elif not self.quiet and x < 0.25:  # the log parts somewhere below 12
                    end = self.rnd.randrange(0, 12)
                    answers.append(
                        EpochEndOffset(
                            partition=p.partition, leader_epoch=p.leader_epoch, end_offset=end
                        )
                    )
                else:
                    answers.append(
                        EpochEndOffset(
                            partition=p.partition, leader_epoch=p.leader_epoch, end_offset=10**6
                        )
                    )
            topics.append(OffsetForLeaderTopicResult(topic=t.topic, partitions=answers))
        return OffsetForLeaderEpochResponse(topics=topics)

    def arrive(self, node: int, request, deliver) -> None:
        if node in self.pending:
            raise Violation(f"two Fetches in flight to node {node}")
        positions = self.positions_for.pop(node)
        broker = self.brokers[node]
        entry = {"request": request, "deliver": deliver, "positions": positions}
        try:
            sid, parts, full = broker.apply(request)
        except FetchSessionIdNotFoundError as exc:
            entry["error"] = exc
            self.pending[node] = entry
            return
        expect = {(tp.topic, tp.partition): a.offset for tp, a in positions.items()}
        if dict(parts) != expect:
            diff = {
                k: (parts.get(k), expect.get(k))
                for k in set(parts) | set(expect)
                if parts.get(k) != expect.get(k)
            }
            raise Violation(
                f"S: node {node} session holds != Fetch positions: {{key: (broker, client)}} {diff}"
            )
        entry.update(
            sid=sid,
            parts=dict(parts),
            full=full,
            named={(t.topic, p.partition) for t in request.topics for p in t.partitions},
        )
        self.pending[node] = entry

    def answer(self, node: int) -> None:
        entry = self.pending.pop(node)
        deliver = entry["deliver"]
        if "error" in entry:
            deliver(None, entry["error"])
            return
        r = self.rnd.random()
        if not self.quiet and r < 0.05:
            deliver(None, NetworkError("lost"))
            return
        topics: dict[str, list] = {}
        for (t, p), offset in entry["parts"].items():
            tp = TopicPartition(t, p)
            x = self.rnd.random()
            if self.quiet and 0.45 <= x < 0.56:
                x = 1.0
            data = None
            if x < 0.45:
                base = offset // BATCH * BATCH
                n = self.rnd.randint(1, 3)
                epoch = self.epochs.get(tp, 0)
                recs = b"".join(batch_bytes(tp, base + i * BATCH, epoch) for i in range(n))
                if self.rnd.random() < 0.2:
                    recs += batch_bytes(tp, base + n * BATCH, epoch)[: self.rnd.randint(1, 40)]
                data = FetchPartitionData(partition_index=p, high_watermark=10**6, records=recs)
            elif x < 0.52:
                data = FetchPartitionData(partition_index=p, error_code=6)
            elif x < 0.54:
                data = FetchPartitionData(partition_index=p, error_code=1)
            elif x < 0.56:
                data = FetchPartitionData(partition_index=p, error_code=29)
            elif entry["full"] or ((t, p) in entry["named"] and self.rnd.random() < 0.5):
                data = FetchPartitionData(partition_index=p, high_watermark=10**6, records=b"")
            if data is not None:
                topics.setdefault(t, []).append(data)
        resp = FetchResponse(
            session_id=entry["sid"],
            topics=[FetchTopicResponse(topic=t, partitions=ps) for t, ps in topics.items()],
        )
        deliver(resp, None)

    # --- user ---------------------------------------------------------------------------
    def take(self) -> None:
        c = self.consumer
        sub = c._subscription
        tps = (
            None
            if self.rnd.random() < 0.7
            else tuple(self.rnd.sample(list(sub.states) or self.all_tps, 1))
        )
        before = {tp: s.position for tp, s in sub.states.items()}
        try:
            got = c._take(tps or (), self.rnd.choice([1, 2, 5, 100]))
        except ApiError as exc:
            self.log.append(f"user error {exc!r}")
            return
        for tp, recs in got.items():
            if sub.states[tp].paused:
                raise Violation(f"D: records of paused {tp} handed out")
            start = before[tp]
            offs = [r.offset for r in recs]
            if offs != list(range(start, start + len(offs))):
                raise Violation(f"D: {tp} position {start} got offsets {offs}")
            for r in recs:
                if r.value != f"{tp.topic}-{tp.partition}-{r.offset}".encode():
                    raise Violation(f"D: bad value {r.value} at {r.offset}")

    def seek(self) -> None:
        sub = self.consumer._subscription
        if not sub.states:
            return
        tp = self.rnd.choice(list(sub.states))
        pos = sub.states[tp].position or 0
        sub.seek(tp, max(0, pos + self.rnd.randint(-4, 4)))

    def reassign(self) -> None:
        sub = self.consumer._subscription
        tps = self.rnd.sample(self.all_tps, self.rnd.randint(0, len(self.all_tps)))
        sub.assign(tps)
        for tp in tps:
            if sub.states[tp].position is None and self.rnd.random() < 0.5:
                sub.seek(tp, self.rnd.randrange(0, 12))

    async def step(self) -> None:
        c = self.consumer
        actions: list[tuple[float, Any]] = [
            (0.25, c._fetcher_pass),
            (0.30, self.answer_one),
            (0.15, self.take),
            (0.05, self.seek),
            (0.04, self.new_leaders),
            (0.02, lambda: self.new_leaders(same=True)),
            (0.02, self.reassign),
            (0.07, self.tick),
            (0.01, self.evict_one),
            (0.01, self.reset_one),
            (0.02, self.pause_one),
            (0.02, self.resume_one),
            (0.04, lambda: None),
        ]
        (action,) = self.rnd.choices([a for _, a in actions], [w for w, _ in actions])
        result = action()
        if asyncio.iscoroutine(result):
            await result
        for _ in range(self.rnd.randint(0, 3)):
            await asyncio.sleep(0)

    def answer_one(self) -> None:
        if self.pending:
            self.answer(self.rnd.choice(list(self.pending)))

    def evict_one(self) -> None:
        self.brokers[self.rnd.choice(NODES)].evict()

    def tick(self) -> None:
        self.clock.t += self.rnd.choice([0.001, 0.05, 0.2])

    def pause_one(self) -> None:
        sub = self.consumer._subscription
        if sub.states:
            self.consumer.pause(self.rnd.choice(list(sub.states)))

    def resume_one(self) -> None:
        sub = self.consumer._subscription
        if sub.states:
            self.consumer.resume(self.rnd.choice(list(sub.states)))

    def reset_one(self) -> None:
        sub = self.consumer._subscription
        if sub.states:
            sub.request_reset(self.rnd.choice(list(sub.states)))

    async def quiesce(self) -> None:
        self.quiet = True
        c = self.consumer
        leaders = dict(self.cluster.metadata.leaders())
        for tp in self.all_tps:
            if tp not in leaders:
                leaders[tp] = self.rnd.choice(NODES)
                self.epochs[tp] = self.epochs.get(tp, -1) + 1
        self.cluster.metadata = Meta(leaders, self.epochs)
        for _rnd_i in range(30):
            for _ in range(self.rnd.choice([0, 0, 1, 5])):
                with contextlib.suppress(ApiError):
                    c._take((), None)
            self.clock.t += 1.0
            for node in list(self.pending):
                self.answer(node)
            for _ in range(5):
                await asyncio.sleep(0)
            await c._fetcher_pass()
            for _ in range(5):
                await asyncio.sleep(0)
        self.check_live(leaders)

    def check_live(self, leaders: dict) -> None:
        """L and E, once quiet."""
        # L: every fetchable partition is in its leader's Fetch at its fetch_offset
        sub = self.consumer._subscription
        for tp, s in sub.states.items():
            if s.validating and s.error is None and s.position is not None:
                raise Violation(f"E: {tp} still waits for validation once quiet")
            if (
                s.fetch_offset is None
                or s.error is not None
                or s.paused
                or s.buffered_bytes >= sub.max_buffer_bytes
                or s.retry_at_ms > self.clock.t * 1000
            ):
                continue
            node = leaders[tp]
            entry = self.pending.get(node)
            if entry is None:
                raise Violation(
                    f"L: {tp} at {s.fetch_offset} (leader {node}) has no Fetch in flight"
                )
            a = entry["positions"].get(tp)
            if a is None or a.offset != s.fetch_offset:
                raise Violation(f"L: {tp} at {s.fetch_offset}: leader {node}'s Fetch has {a}")
            held = entry.get("parts", {}).get((tp.topic, tp.partition))
            if held != s.fetch_offset:
                raise Violation(f"L: {tp} at {s.fetch_offset}: broker {node} session reads {held}")


class _FakeCluster:
    def __init__(self, h: Harness) -> None:
        self.h = h
        self.metadata = Meta({})

    def connection_now(self, node: int, purpose: str = ""):
        if self.h.rnd.random() < 0.25:
            return None
        return _Conn(self.h, node)

    def request_refresh(self) -> None:
        pass

    async def send(self, node, api_key, request, **kw):
        if api_key == ApiKey.OFFSET_FOR_LEADER_EPOCH:
            await asyncio.sleep(0)
            return self.h.epoch_answer(request)
        fut = asyncio.get_running_loop().create_future()

        def deliver(resp, err):
            if fut.done():
                return
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(resp)

        self.h.arrive(node, request, deliver)
        return await fut


class _Conn:
    def __init__(self, h: Harness, node: int) -> None:
        self.h, self.node = h, node

    def send_now(self, api_key, request, on_answer):
        if not self.h.quiet and self.h.rnd.random() < 0.03:
            raise NetworkError("closed")
        self.h.arrive(self.node, request, on_answer)


async def _run(seed: int, steps: int) -> None:
    h = Harness(seed)
    try:
        for _ in range(steps):
            await h.step()
            bad = [
                s.error
                for s in h.consumer._subscription.states.values()
                if s.error is not None and not isinstance(s.error, ApiError)
            ]
            if bad:
                raise Violation(f"internal error reached a partition: {bad[0]!r}")
        await h.quiesce()
    finally:
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()


@pytest.mark.parametrize("seed", range(60))
async def test_sessions_delivery_and_liveness_hold_at_random(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(cmod, "time", clock)
    monkeypatch.setattr(cmod, "_TAILING_BYTES", random.Random(seed).choice([0, 200, 16_384]))
    Harness.clock_for_next = clock
    await _run(seed, 400)
