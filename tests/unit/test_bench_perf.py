"""`headwater bench` without a cluster: percentiles, pacing and rate arithmetic, the
workload's defaults and checks, the result's JSON shape, the tables, the batch the broker
test replays, delivery counting, and the command's wiring (lazy, usage errors)."""

import asyncio
import json
import math
import subprocess
import sys
import time
from array import array
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from bench import perf, report
from bench.perf import (
    VALUE_POOL,
    BenchError,
    ClientMetrics,
    Result,
    Workload,
    _batch,
    _BatchLoop,
    _Latencies,
    _record_bytes,
    _SendLoop,
    _SendTally,
    _shares,
)
from bench.stats import MIN_SLEEP_S, Latency, Pacer, RateMeter, percentile, sample_stride
from client import ConsumerRecord, cli
from client.batches import BatchBuilder
from client.types import TopicPartition
from protocol.errors import (
    MessageTooLargeError,
    NotLeaderOrFollowerError,
    TopicAuthorizationFailedError,
)
from protocol.records import HEADER_SIZE, decode_batches
from tests.unit.test_producer_sender import ScriptedCluster, answer_all, ok, started

# --- percentiles -----------------------------------------------------------------------


def test_percentile_is_the_nearest_rank() -> None:
    ordered = [float(i) for i in range(1, 101)]  # 1..100
    assert percentile(ordered, 50) == 50
    assert percentile(ordered, 95) == 95
    assert percentile(ordered, 99) == 99
    assert percentile(ordered, 99.9) == 100
    assert percentile(ordered, 100) == 100
    assert percentile(ordered, 0.5) == 1
    assert percentile([7.0], 50) == percentile([7.0], 99.9) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0  # never interpolated: always a sample


def test_percentile_refuses_nothing_and_nonsense() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    for q in (0, -1, 100.1):
        with pytest.raises(ValueError, match="not in"):
            percentile([1.0], q)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300))
def test_latency_percentiles_are_ordered(samples: list[float]) -> None:
    lat = Latency.of(samples)
    assert lat is not None and lat.samples == len(samples)
    assert min(samples) <= lat.p50_ms <= lat.p95_ms <= lat.p99_ms <= lat.p999_ms <= lat.max_ms
    assert lat.max_ms == max(samples)
    assert math.isclose(lat.avg_ms, sum(samples) / len(samples), rel_tol=1e-9, abs_tol=1e-9)


def test_latency_of_known_samples_and_of_none() -> None:
    lat = Latency.of([4.0, 1.0, 3.0, 2.0])  # any order
    assert lat == Latency(
        samples=4, avg_ms=2.5, p50_ms=2.0, p95_ms=4.0, p99_ms=4.0, p999_ms=4.0, max_ms=4.0
    )
    assert Latency.of([]) is None


def test_sample_stride_every_record_in_short_runs_one_in_16_in_long_ones() -> None:
    assert [sample_stride(n) for n in (1, 2_000, 19_999)] == [1, 1, 1]
    assert sample_stride(20_000) == 2
    assert sample_stride(100_000) == 10
    assert sample_stride(160_000) == sample_stride(10**9) == 16
    for n in (1, 20_000, 100_000, 500_000):
        assert n // sample_stride(n) >= min(n, 10_000)


# --- pacing and the live rate ----------------------------------------------------------


def test_pacer_says_how_long_to_sleep_before_each_unit() -> None:
    pacer = Pacer(rate=1_000, start=10.0)  # unit n is due at 10 + n/1000
    assert pacer.limited
    assert pacer.due(0) == 10.0 and math.isclose(pacer.due(500), 10.5)
    assert pacer.delay(0, now=10.0) == 0.0  # due: send
    assert math.isclose(pacer.delay(5, now=10.0), 0.005)  # 5 ms ahead: sleep
    assert pacer.delay(1, now=10.0) == 0.0  # 1 ms ahead: below the minimum, send
    assert math.isclose(pacer.delay(2, now=10.0), MIN_SLEEP_S)  # exactly the minimum: sleep
    assert pacer.delay(5, now=11.0) == 0.0  # behind: catch up at full speed


def test_pacer_keeps_the_average_rate_in_bursts() -> None:
    """A simulated sender that sleeps exactly as told: 5,000 units at 2,000/s take 2.5 s
    (the last burst goes out up to min_sleep early), in bursts of about rate x min_sleep
    units, never a sleep below the minimum."""
    pacer = Pacer(rate=2_000, start=0.0)
    now, sleeps = 0.0, []
    for n in range(5_000):
        if delay := pacer.delay(n, now):
            sleeps.append(delay)
            now += delay
    assert pacer.due(4_999) - MIN_SLEEP_S < now <= pacer.due(4_999)
    assert min(sleeps) >= MIN_SLEEP_S
    assert len(sleeps) <= 5_000 / (2_000 * MIN_SLEEP_S)


def test_an_unlimited_pacer_never_sleeps() -> None:
    for rate in (-1, 0):
        pacer = Pacer(rate=rate, start=5.0)
        assert not pacer.limited
        assert pacer.delay(10**9, now=0.0) == 0.0


def test_rate_meter_over_the_last_window() -> None:
    meter = RateMeter(start=0.0, window_s=1.0)
    assert meter.update(0.0, 0) == 0.0
    assert meter.update(0.5, 500) == 1_000  # since the start
    assert meter.update(1.0, 1_000) == 1_000
    assert meter.update(1.5, 1_100) == (1_100 - 500) / 1.0  # window: from the 0.5 s reading
    assert meter.update(2.5, 1_100) == 0.0  # stalled for a whole window


# --- the workload ----------------------------------------------------------------------


def test_workload_defaults_per_test() -> None:
    produce = Workload().resolve("produce")
    assert (produce.num_records, produce.batch_size, produce.unlimited) == (500_000, 16_384, True)
    assert produce.settings()["throughput"] == -1
    e2e = Workload(producers=4).resolve("e2e")
    assert (e2e.num_records, e2e.throughput, e2e.producers) == (10_000, 1_000, 1)
    # linger 0 for e2e, as Kafka's end-to-end latency tool: a linger is latency on purpose
    assert (produce.linger_ms, e2e.linger_ms) == (5, 0)
    assert Workload(linger_ms=5).resolve("e2e").linger_ms == 5
    broker = Workload().resolve("broker")
    assert broker.batch_size == 1 << 20 and broker.num_records == 5_000_000
    assert Workload(acks="-1").resolve("produce").acks == "all"
    assert Workload(acks="ALL").resolve("produce").acks == "all"
    given = Workload(num_records=7, throughput=50, batch_size=99).resolve("broker")
    assert (given.num_records, given.throughput, given.batch_size) == (7, 50, 99)


@pytest.mark.parametrize(
    ("test", "workload", "message"),
    [
        ("nope", Workload(), "unknown test"),
        ("produce", Workload(acks="2"), "acks='2'"),
        ("produce", Workload(num_records=0), "num_records=0"),
        ("e2e", Workload(record_size=15), "record_size=15 is invalid: it must be at least 16"),
        ("produce", Workload(throughput=0), "throughput"),
        ("produce", Workload(compression="brotli"), "compression"),
        ("produce", Workload(num_records=2, producers=3), "3 producers for 2 records"),
        ("broker", Workload(max_in_flight=0), "max_in_flight"),
        ("consume", Workload(send_batch=True), "send_batch applies to the produce test only"),
        ("e2e", Workload(payload_file="x"), "payload_file applies to the produce test only"),
        ("produce", Workload(payload_delimiter=""), "payload_delimiter must not be empty"),
        ("produce", Workload(transactional_id="t"), "needs acks=all"),
        ("consume", Workload(isolation_level="serializable"), "isolation_level"),
        ("e2e", Workload(transactional_id="t", acks="all"), "produce test's send"),
        ("produce", Workload(transactional_id="t", acks="all", send_batch=True), "send\\(\\)"),
        (
            "produce",
            Workload(transactional_id="t", acks="all", transaction_duration_ms=0),
            "transaction_duration_ms",
        ),
    ],
)
def test_workload_checks(test: str, workload: Workload, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        workload.resolve(test)


def test_shares_differ_by_at_most_one() -> None:
    assert _shares(10, 3) == [4, 3, 3]
    assert _shares(2, 2) == [1, 1]
    assert sum(_shares(1_000_003, 7)) == 1_000_003


# --- results ---------------------------------------------------------------------------

RESULT_KEYS = (
    *("test", "topic", "records", "failed", "bytes", "elapsed_s", "records_per_s", "mb_per_s"),
    *("batches", "batches_per_s", "latency_ms", "first_error", "notes", "settings", "metrics"),
)
LATENCY_KEYS = ("measures", "samples", "sampled_every", "avg", "p50", "p95", "p99", "p99_9", "max")


def _result(test: str = "produce", **overrides: Any) -> Result:
    fields: dict[str, Any] = {
        "test": test,
        "topic": "t",
        "records": 2_000,
        "bytes": 200_000,
        "elapsed_s": 0.5,
        "latency": Latency.of([1.0, 2.0, 3.0, 40.0]),
        "workload": Workload(num_records=2_000).resolve(test),
    }
    return Result(**{**fields, **overrides})


def test_result_rates() -> None:
    result = _result()
    assert result.records_per_s == 4_000
    assert result.mb_per_s == 0.4  # MB = 10^6 bytes
    assert result.batches_per_s is None
    assert _result("broker", batches=10).batches_per_s == 20
    assert _result(elapsed_s=0).records_per_s == 0  # never a division by zero


def test_result_json_has_every_key_for_every_test() -> None:
    shapes = []
    for test in perf.TESTS:
        latency = None if test == "consume" else Latency.of([1.0, 5.0])
        batches = 3 if test == "broker" else None
        out = _result(test, latency=latency, batches=batches, notes=("n",)).to_json()
        json.dumps(out)  # plain JSON values only
        shapes.append(sorted(out))
        assert out["test"] == test and out["records"] == 2_000 and out["notes"] == ["n"]
        assert out["records_per_s"] == 4_000 and out["mb_per_s"] == 0.4
        assert (out["batches"] is None) == (test != "broker")
        if test == "consume":
            assert out["latency_ms"] is None
        else:
            lat = out["latency_ms"]
            assert sorted(lat) == sorted(LATENCY_KEYS)
            assert lat["p50"] <= lat["p99"] <= lat["max"] == 5.0 and lat["measures"]
        settings = out["settings"]
        assert settings["num_records"] == 2_000 and settings["acks"] == "1"
    assert all(shape == shapes[0] for shape in shapes)  # one schema for all
    assert shapes[0] == sorted(RESULT_KEYS)


def test_clients_metrics_print_as_kafkas_and_are_json_without_nan() -> None:
    producer = ClientMetrics(
        "producer",
        "bench",
        {"producer-metrics": {"record-send-total": 2_000.0, "request-latency-avg": math.nan}},
    )
    assert producer.lines() == [
        ("producer-metrics:record-send-total:{client-id=bench}", "2000.000"),
        ("producer-metrics:request-latency-avg:{client-id=bench}", "NaN"),
    ]
    consumer = ClientMetrics(
        "consumer",
        "c-1",
        {
            "consumer-fetch-manager-metrics.my.topic": {"records-consumed-total": 5.0},
            "consumer-fetch-manager-metrics.my.topic[12]": {"records-lag": 3.0},
        },
    )
    assert consumer.lines() == [  # Kafka's tags, in its order
        (
            "consumer-fetch-manager-metrics:records-consumed-total:{client-id=c-1, topic=my.topic}",
            "5.000",
        ),
        (
            "consumer-fetch-manager-metrics:records-lag:"
            "{client-id=c-1, topic=my.topic, partition=12}",
            "3.000",
        ),
    ]
    asked = Workload(num_records=2_000, print_metrics=True).resolve("produce")
    out = _result(workload=asked, metrics=(producer,)).to_json()
    text = json.dumps(out, allow_nan=False)  # NaN is not JSON: it must be null
    assert json.loads(text)["metrics"] == [
        {
            "client": "producer",
            "client_id": "bench",
            "metrics": {
                "producer-metrics": {"record-send-total": 2_000.0, "request-latency-avg": None}
            },
        }
    ]
    assert _result(metrics=(producer,)).to_json()["metrics"] is None  # not asked for


def test_table_columns_follow_the_results() -> None:
    headers, rows = report.table([_result()])
    assert headers == list(report.HEADERS)
    latencies = ["11.5", "2.00", "40.0", "40.0", "40.0", "40.0"]  # avg, p50 ... max
    assert rows == [["produce", "2,000", "4,000", "0.40", *latencies]]
    headers, rows = report.table([_result("consume", latency=None)])
    assert headers == ["test", "records", "records/s", "MB/s"]  # no latency at all: no columns
    headers, rows = report.table([_result("broker", batches=4), _result("consume", latency=None)])
    assert headers[4] == "batches/s" and len(headers) == 11
    assert rows[0][4] == "8" and rows[1][4] == "-" and rows[1][5:] == ["-"] * 6


def test_number_formats() -> None:
    assert [report.ms(v) for v in (0.123, 9.999, 12.34, 1234.5, None)] == [
        "0.12",
        "10.00",
        "12.3",
        "1,234",
        "-",
    ]
    assert [report.mb(v) for v in (0.4, 12.345, 465.8)] == ["0.40", "12.35", "465.8"]


def test_markdown_right_aligns_numbers() -> None:
    lines = report.markdown([_result(), _result("e2e")]).splitlines()
    assert lines[0].startswith("| test | records | records/s | MB/s | avg ms | p50 |")
    assert lines[1] == "| --- |" + " ---: |" * 9
    assert lines[2].startswith("| produce | 2,000 | 4,000 | 0.40 |")
    assert lines[3].startswith("| e2e |") and len(lines) == 4


def test_progress_and_settings_lines() -> None:
    line = report.progress_text(
        "produce", 225_000, 500_000, records_per_s=48_211, record_size=100, elapsed_s=4.71
    )
    assert line == "produce   45% 225,000/500,000 records  48,211 rec/s  4.82 MB/s  4.7 s"
    assert report.progress_text(
        "e2e", 0, 0, records_per_s=0, record_size=1, elapsed_s=0
    ).startswith("e2e        0% 0/0 records")
    w = Workload(num_records=1_000, throughput=500, acks="all").resolve("e2e")
    text = report.describe("e2e", w, "t")
    assert text.startswith("e2e: 1,000 records of 100 B, 500 records/s, acks=all, batch 16,384 B")
    assert text.endswith("; topic t") and "producer" not in text
    assert "2 producer(s)" in report.describe(
        "produce", Workload(producers=2).resolve("produce"), "t"
    )


# --- the broker test's batch -----------------------------------------------------------


@pytest.mark.parametrize("batch_size", [200, 16_384, 1 << 20])
def test_broker_batch_fills_the_batch_size(batch_size: int) -> None:
    w = Workload(batch_size=batch_size).resolve("broker")
    data, count = _batch(w)
    assert HEADER_SIZE < len(data) <= batch_size
    assert len(data) + 130 > batch_size  # one more 100-byte record would not fit
    (batch,) = decode_batches(data)
    assert batch.header.record_count == count == len(batch.records)
    assert all(len(r.value) == 100 and r.key is None for r in batch.records)


def test_broker_batch_compressed_and_at_least_one_record() -> None:
    data, count = _batch(Workload(batch_size=64 * 1024, compression="zstd").resolve("broker"))
    assert len(data) < 64 * 1024 * 0.75  # half of each value is constant
    assert len(next(iter(decode_batches(data))).records) == count
    _, count = _batch(Workload(batch_size=10, record_size=500).resolve("broker"))
    assert count == 1  # a batch smaller than one record still holds one


# --- counting deliveries ---------------------------------------------------------------


async def test_a_split_send_batch_batch_whose_second_half_failed_counts_as_failed() -> None:
    """Review 91: send_batch()'s future is its batch's first record's: a batch the broker
    splits (MESSAGE_TOO_LARGE) may have its first half written and its second fail. The
    bench counts by record from the producer's record-error-total, not by that future."""
    cluster = ScriptedCluster({TopicPartition("t", 0): 1})
    cluster.answers = [
        lambda r: answer_all(r, MessageTooLargeError.code),  # the batch of 4: split
        ok,  # the first half (records 0, 1): written
        lambda r: answer_all(r, TopicAuthorizationFailedError.code),  # the second: failed
    ]
    producer = await started(cluster, acks=1)
    tally = _SendTally(producer)
    batch = producer.create_batch()
    for i in range(4):
        batch.append(value=b"v%d" % i)
    future = await producer.send_batch(batch, "t", partition=0)
    await producer.flush()
    assert len(cluster.requests) == 3
    assert future.exception() is None  # the first record's: written
    assert tally.failed() == 2
    await producer.stop()


async def test_latencies_of_acknowledged_records_only() -> None:
    loop = asyncio.get_running_loop()
    samples: array[float] = array("d")
    latencies = _Latencies(samples)
    acked, failed = loop.create_future(), loop.create_future()
    latencies.watch(acked, time.perf_counter() - 0.005)  # sent 5 ms ago
    latencies.watch(failed, time.perf_counter())
    acked.set_result(None)
    failed.set_exception(NotLeaderOrFollowerError("gone"))
    await asyncio.sleep(0)  # the callbacks run
    assert len(samples) == 1 and 5 <= samples[0] < 5_000
    assert not latencies._sent  # nothing kept once answered


class _FakeProducer:
    """Resolves each send at once; remembers what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, topic: str, value: bytes) -> asyncio.Future[Any]:
        self.sent.append(value)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class _Watched(_Latencies):
    """Which records (by send order) were timed."""

    def __init__(self, producer: _FakeProducer) -> None:
        super().__init__(array("d"))
        self.producer = producer
        self.timed: list[int] = []

    def watch(self, future: asyncio.Future[Any], sent: float) -> None:
        self.timed.append(len(self.producer.sent) - 1)
        super().watch(future, sent)


@pytest.mark.parametrize("count", [1, 255, 256, 257, 1_300, 5_000])
@pytest.mark.parametrize("stride", [1, 7, 16])
@pytest.mark.parametrize("paced", [False, True])
async def test_the_send_loops_send_every_record_and_time_one_in_stride(
    count: int, stride: int, paced: bool
) -> None:
    producer = _FakeProducer()
    values = [b"%d" % i for i in range(VALUE_POOL)]
    latencies = _Watched(producer)
    loop = _SendLoop(producer, "t", values, stride, latencies)  # type: ignore[arg-type]
    if paced:
        await loop.paced(count, Pacer(1e9, asyncio.get_running_loop().time()))
    else:
        await loop.flat_out(count)
    assert producer.sent == [values[i % VALUE_POOL] for i in range(count)]
    assert latencies.timed == list(range(0, count, stride))
    await asyncio.sleep(0)  # the latency callbacks run
    assert len(latencies.samples) == len(latencies.timed)
    assert latencies.first_error is None


async def test_a_sampled_failure_is_the_first_error() -> None:
    loop = asyncio.get_running_loop()
    latencies = _Latencies(array("d"))
    failed, later = loop.create_future(), loop.create_future()
    latencies.watch(failed, time.perf_counter())
    latencies.watch(later, time.perf_counter())
    failed.set_exception(NotLeaderOrFollowerError("gone"))
    later.set_exception(ValueError("second"))
    await asyncio.sleep(0)
    assert latencies.first_error == "gone (NOT_LEADER_OR_FOLLOWER)"


class _MeteredProducer:
    """A producer's three counters as its metrics() shows them."""

    def __init__(self) -> None:
        self.counts = {
            "record-send-total": 0.0,
            "record-retry-total": 0.0,
            "record-error-total": 0.0,
        }

    def metrics(self) -> dict[str, dict[str, float]]:
        return {"producer-metrics": dict(self.counts), "producer-topic-metrics.t": {}}


def test_the_send_tally_counts_from_the_producers_metrics_since_it_began() -> None:
    producer = _MeteredProducer()
    producer.counts.update(
        {"record-send-total": 50, "record-retry-total": 5, "record-error-total": 2}
    )
    tally = _SendTally(producer)  # type: ignore[arg-type]
    assert tally.written() == 0 and tally.failed() == 0
    producer.counts["record-send-total"] += 1_000  # 100 of them sent again
    producer.counts["record-retry-total"] += 100
    producer.counts["record-error-total"] += 30
    assert tally.written() == 900  # first attempts only
    assert tally.failed() == 30


class _FakeBatchProducer:
    """send_batch resolves at once (every third batch fails); remembers each batch's
    records and partition."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.batches: list[tuple[int, list[bytes]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size)

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        _, values, _, _ = batch._take()
        self.batches.append((partition, [v for v in values if v is not None]))
        future = asyncio.get_running_loop().create_future()
        if len(self.batches) % 3:
            future.set_result(None)
        else:
            future.set_exception(NotLeaderOrFollowerError("gone"))
        return future


@pytest.mark.parametrize("count", [1, 7, 100, 1_000])
@pytest.mark.parametrize("paced", [False, True])
async def test_the_batch_loop_sends_every_record_in_full_batches_to_each_partition(
    count: int, paced: bool
) -> None:
    producer = _FakeBatchProducer(batch_size=1_000)  # 7 records of 100 bytes a batch
    values = [b"%03d" % i + bytes(97) for i in range(VALUE_POOL)]
    samples: array[float] = array("d")
    latencies = _Latencies(samples)
    sending = _BatchLoop(producer, "t", values, latencies)  # type: ignore[arg-type]
    rate = 1e9 if paced else -1
    await sending.run(count, Pacer(rate, asyncio.get_running_loop().time()), partitions=3)
    sent = [v for _, batch in producer.batches for v in batch]
    assert sent == [values[i % VALUE_POOL] for i in range(count)]
    assert [p for p, _ in producer.batches] == [i % 3 for i in range(len(producer.batches))]
    if not paced:  # paced at this rate it never sleeps, so the batches fill up as well
        assert all(len(batch) == 7 for _, batch in producer.batches[:-1])
    await asyncio.sleep(0)  # the latency callbacks run
    assert len(samples) == len(producer.batches) - len(producer.batches) // 3  # acked ones
    failing = len(producer.batches) >= 3
    assert (latencies.first_error == "gone (NOT_LEADER_OR_FOLLOWER)") is failing


# --- the command -----------------------------------------------------------------------


def test_bench_is_listed_and_its_commands_load_on_demand() -> None:
    runner = CliRunner()
    top = runner.invoke(cli.main, ["--help"])
    assert top.exit_code == 0 and "bench" in top.output
    bench = runner.invoke(cli.main, ["bench", "--help"])
    assert bench.exit_code == 0, bench.output
    for test in perf.TESTS:
        assert test in bench.output
    produce = runner.invoke(cli.main, ["bench", "produce", "--help"])
    for option in ("--num-records", "--record-size", "--throughput", "--acks", "--batch-size"):
        assert option in produce.output
    assert "--producers" in produce.output and "--json" in produce.output
    e2e = runner.invoke(cli.main, ["bench", "e2e", "--help"]).output
    assert "--producers" not in e2e
    assert "[default: 0;" in e2e.split("--linger-ms")[1].split("--compression")[0]
    assert "[default: 5;" in produce.output.split("--linger-ms")[1].split("--compression")[0]


def test_other_commands_do_not_load_the_harness() -> None:
    code = "import sys, client.cli; print(any(m.startswith('bench') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--throughput", "0"], "records/s above 0, or -1"),
        (["--num-records", "0"], "--num-records"),
        (["--acks", "2"], "--acks"),
        (["--compression", "brotli"], "--compression"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli.main, ["bench", "produce", "--bootstrap-server", "x:1", *args])
    assert result.exit_code == 2 and message in result.output


def test_payloads_come_from_the_file_split_at_the_delimiter(tmp_path: Any) -> None:
    """Kafka's --payload-file: UTF-8 text split at the delimiter (a newline, as the
    two characters a shell passes too), empty pieces dropped, picked at random."""
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"a": 1}\n{"event": "click", "user": "é"}\n\n{"b": [1, 2, 3]}\n')
    expected = {b'{"a": 1}', '{"event": "click", "user": "é"}'.encode(), b'{"b": [1, 2, 3]}'}
    for delimiter in ("\n", "\\n"):
        values = perf.payloads(Workload(payload_file=str(lines), payload_delimiter=delimiter))
        assert len(values) == perf.VALUE_POOL and set(values) == expected
    pipes = tmp_path / "pipes.txt"
    pipes.write_text("one|two|three")
    values = perf.payloads(Workload(payload_file=str(pipes), payload_delimiter="|"))
    assert set(values) == {b"one", b"two", b"three"}
    sized = perf.payloads(Workload(record_size=37))
    assert len(sized) == perf.VALUE_POOL and {len(v) for v in sized} == {37}


def test_payloads_keep_the_files_bytes(tmp_path: Any) -> None:
    """Review 133: the file's bytes as they are, as Kafka's tool reads them (text mode's
    newline translation turned a CRLF file into one payload, and a lone CR into LF)."""
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b'{"a":1}\r\n{"b":2}\r\n')
    values = perf.payloads(Workload(payload_file=str(crlf), payload_delimiter="\r\n"))
    assert set(values) == {b'{"a":1}', b'{"b":2}'}
    pipes = tmp_path / "pipes.txt"
    pipes.write_bytes(b"one\rx|two")
    values = perf.payloads(Workload(payload_file=str(pipes), payload_delimiter="|"))
    assert set(values) == {b"one\rx", b"two"}


def test_payload_files_that_hold_nothing_are_one_clear_error(tmp_path: Any) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(BenchError, match="holds no payload"):
        perf.payloads(Workload(payload_file=str(empty)))
    huge = tmp_path / "huge.txt"
    huge.write_text("small\n" + "x" * 1_048_576 + "\n")
    with pytest.raises(BenchError, match="1,048,576 bytes: more than a producer sends"):
        perf.payloads(Workload(payload_file=str(huge)))
    binary = tmp_path / "binary.dat"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BenchError, match="cannot read payloads"):
        perf.payloads(Workload(payload_file=str(binary)))


def test_bytes_sent_cycle_through_the_values() -> None:
    values = [b"a", b"bb", b"ccc"]
    assert perf._bytes_of(values, 0) == 0
    assert perf._bytes_of(values, 2) == 3
    assert perf._bytes_of(values, 7) == 2 * 6 + 1


def test_payload_file_and_record_size_are_one_or_the_other(tmp_path: Any) -> None:
    lines = tmp_path / "p.txt"
    lines.write_text("x\n")
    both = ["--payload-file", str(lines), "--record-size", "10"]
    result = CliRunner().invoke(cli.main, ["bench", "produce", "--bootstrap-server", "x:1", *both])
    assert result.exit_code == 2 and "--record-size or --payload-file, not both" in result.output
    result = CliRunner().invoke(
        cli.main, ["bench", "produce", "--bootstrap-server", "x:1", "--payload-file", "/nope"]
    )
    assert result.exit_code == 2 and "--payload-file" in result.output


def test_e2e_record_size_must_hold_the_stamp() -> None:
    result = CliRunner().invoke(cli.main, ["bench", "e2e", "--record-size", "8"])
    assert result.exit_code == 2 and "--record-size" in result.output


def test_no_cluster_is_one_line_and_exit_code_1(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.BOOTSTRAP_ENV, raising=False)
    result = CliRunner().invoke(cli.main, ["bench", "produce", "--num-records", "10"])
    assert result.exit_code == 1
    assert "no cluster to talk to" in result.output


def test_consumed_bytes_are_keys_and_values_none_counting_nothing() -> None:
    records = [
        ConsumerRecord("t", 0, 0, 0, None, b"x" * 100, ()),
        ConsumerRecord("t", 0, 1, 0, b"key", None, ()),
        ConsumerRecord("t", 0, 2, 0, b"", b"", ()),
        ConsumerRecord("t", 0, 3, 0, b"k" * 7, b"v" * 5, ((b"h", b"not counted"),)),
    ]
    assert _record_bytes(records) == 100 + 3 + 7 + 5
    assert _record_bytes([]) == 0
