"""The comparison's pure parts: ratios, pass/fail, the table, the rows, the latency maths."""

import asyncio
import dataclasses
import math
import time
from pathlib import Path

import pytest

from bench.compare import matrix
from bench.compare.headwater import KAFKA_CLIENT_METRIC, SEND_BATCH_METRIC
from bench.compare.servers import Unavailable
from bench.compare.table import (
    NotAvailable,
    Row,
    Target,
    best_peer,
    evaluate,
    format_value,
    machine_line,
    ratio,
    render_markdown,
    write_chart,
)
from bench.compare.workloads import (
    QUICK,
    SECTIONS,
    LatencyProbe,
    Sizes,
    measure,
    paced_latencies,
    percentile,
    run_async,
    run_sections,
    two_rounds,
)

REDIS, NATS = "Redis Streams", "NATS JetStream"


Cell = float | NotAvailable


def rate_row(ours: Cell, redis: Cell, nats: Cell, **target: float) -> Row:
    return Row("produce", "rec/s", True, ours, {REDIS: redis, NATS: nats}, Target(**target))


def latency_row(ours: Cell, redis: Cell, nats: Cell, **target: float) -> Row:
    return Row("e2e p99", "us", False, ours, {REDIS: redis, NATS: nats}, Target(**target))


def test_ratio_is_times_better_than_the_best_peer_both_ways() -> None:
    assert ratio(rate_row(300.0, 100.0, 150.0)) == 2.0  # best peer: the highest rate
    assert best_peer(rate_row(300.0, 100.0, 150.0)) == (NATS, 150.0)
    assert ratio(latency_row(50.0, 100.0, 400.0)) == 2.0  # best peer: the lowest latency
    assert best_peer(latency_row(50.0, 100.0, 400.0)) == (REDIS, 100.0)


def test_peers_that_did_not_run_are_left_out_of_the_ratio() -> None:
    row = rate_row(300.0, NotAvailable("not installed"), 100.0)
    assert ratio(row) == 3.0
    nobody = rate_row(300.0, NotAvailable("x"), NotAvailable("y"))
    assert ratio(nobody) is None and best_peer(nobody) is None
    assert ratio(rate_row(NotAvailable("broker died"), 1.0, 1.0)) is None
    assert ratio(rate_row(5.0, 0.0, NotAvailable("x"))) == math.inf


def test_evaluate_checks_every_part_of_the_target() -> None:
    passing = evaluate(rate_row(2e6, 5e5, 1e5, at_least=1e6, peer_multiple=2))
    assert passing.passed is True and str(passing) == "pass"

    slow = evaluate(rate_row(5e5, 3e5, 1e5, at_least=1e6, peer_multiple=2))
    assert slow.passed is False
    assert str(slow) == "FAIL (< 1,000,000 rec/s; 1.67x < 2x peer)"

    late = evaluate(latency_row(600.0, 2000.0, 5000.0, at_most=500, peer_multiple=2))
    assert str(late) == "FAIL (> 500 us)"


def test_a_missing_peer_or_figure_is_said_not_failed() -> None:
    nobody = NotAvailable("a"), NotAvailable("b")
    alone = evaluate(rate_row(2e6, *nobody, at_least=1e6, peer_multiple=2))
    assert alone.passed is True and str(alone) == "pass (no peer ran)"
    missing = evaluate(rate_row(NotAvailable("x"), 1.0, 1.0, at_least=1e6))
    assert missing.passed is None and str(missing) == "n/a"
    assert str(evaluate(rate_row(1.0, 1.0, 1.0))) == "-"  # no target: informational


def test_format_value_units() -> None:
    assert format_value(1234567.8, "rec/s") == "1,234,568 rec/s"
    assert format_value(3.25, "us") == "3.2 us"
    assert format_value(1234.4, "us") == "1,234 us"
    assert format_value(1.234, "GB/s") == "1.23 GB/s"
    assert format_value(25.4, "%") == "25%"
    assert format_value(59.7, "MB") == "60 MB"
    assert format_value(NotAvailable("redis-server not installed"), "MB") == (
        "n/a (redis-server not installed)"
    )


def test_markdown_has_the_machine_line_limits_every_system_and_the_verdict() -> None:
    rows = [rate_row(2e6, NotAvailable("nats | broken"), 5e5, at_least=1e6, peer_multiple=2)]
    text = render_markdown(
        rows, machine="CPU X, 2 cores", limits=[("loopback", 4.5, "GB/s")], notes=["a note"]
    )
    lines = text.splitlines()
    assert lines[0] == "# Headwater vs peers — CPU X, 2 cores"
    assert "| loopback | 4.50 GB/s |" in lines
    header = lines.index(
        "| workload | Headwater | Redis Streams | NATS JetStream | best-peer ratio | target "
        "| result |"
    )
    assert lines[header + 1] == "|---|---:|---:|---:|---|---|---|"
    row = lines[header + 2]
    assert row.startswith("| produce | 2,000,000 rec/s | n/a (nats \\| broken) | 500,000 rec/s |")
    assert "4.00x vs NATS JetStream" in row and row.endswith("| pass |")
    assert lines[-1] == "- a note"


def test_rows_follow_the_issue_targets_and_compute_the_share_of_raw_write() -> None:
    results = {
        "Headwater": {"produce_rf1": 1.2e6, "big_gbs": 1.5, "rss_mb": 120.0},
        REDIS: {"produce_rf1": 4e5, "big_gbs": NotAvailable("down")},
        NATS: {},
    }
    rows = {row.name: row for row in matrix.build_rows(results, 3000.0, QUICK)}
    produce = rows["produce, 1 broker, RF=1, acks=1"]
    assert produce.target == Target(at_least=1e6, peer_multiple=2)
    assert str(evaluate(produce)) == "pass"
    assert produce.peers[NATS] == NotAvailable("not run")
    batched = rows["produce with send_batch(), 1 broker, RF=1, acks=1"]
    assert batched.headwater == NotAvailable("not run")
    assert batched.peers == produce.peers  # set against the peers' produce figures
    assert batched.target == produce.target
    with_batch = {**results, "Headwater": {**results["Headwater"], SEND_BATCH_METRIC: 2.5e6}}
    again = {row.name: row for row in matrix.build_rows(with_batch, 3000.0, QUICK)}
    assert again["produce with send_batch(), 1 broker, RF=1, acks=1"].headwater == 2.5e6
    assert str(evaluate(again["produce with send_batch(), 1 broker, RF=1, acks=1"])) == "pass"
    kafkas = rows["produce with Kafka's client (confluent-kafka), 1 broker, RF=1, acks=1"]
    assert kafkas.peers == produce.peers and kafkas.target == produce.target
    with_kafka = {**results, "Headwater": {**results["Headwater"], KAFKA_CLIENT_METRIC: 1.1e6}}
    by_kafka = {row.name: row for row in matrix.build_rows(with_kafka, 3000.0, QUICK)}
    assert by_kafka[kafkas.name].headwater == 1.1e6
    kafkas_rf3 = rows["produce with Kafka's client (confluent-kafka), 3 brokers, RF=3, acks=all"]
    assert kafkas_rf3.peers == rows["produce, 3 brokers, RF=3, acks=all"].peers
    replicated = rows["produce with send_batch(), 3 brokers, RF=3, acks=all"]
    assert replicated.peers == rows["produce, 3 brokers, RF=3, acks=all"].peers
    assert replicated.target == Target(at_least=4e5, peer_multiple=2)
    share = rows["broker alone, 1 MiB batches: % of raw os.write"]
    assert share.headwater == pytest.approx(50.0)  # 1.5 GB/s of 3,000 MB/s
    assert share.peers[REDIS] == NotAvailable("down")
    first = rows["broker alone, 1 MiB batches: first round (new memory)"]
    assert first.target == Target() and first.headwater == NotAvailable("not run")
    memory = next(r for r in rows.values() if r.name.startswith("RSS"))
    assert memory.target == Target(at_most=300) and str(evaluate(memory)) == "pass"
    assert f"{QUICK.partitions} partitions" in memory.name
    e2e = rows["e2e p99 at 5,000 rec/s, RF=3, acks=all"]
    assert e2e.target == Target(at_most=2000, peer_multiple=2) and not e2e.higher_is_better
    no_raw = matrix.build_rows(results, NotAvailable("disk"), QUICK)
    assert next(r for r in no_raw if r.unit == "%").headwater == NotAvailable(
        "no raw os.write figure"
    )


def test_two_rounds_reports_the_best_and_the_first_each_on_its_own_stream() -> None:
    rounds: list[int] = []

    async def one_round(number: int) -> float:
        rounds.append(number)
        return {1: 0.4, 2: 1.6}[number]

    assert run_async(two_rounds(one_round)) == (1.6, 0.4)
    assert rounds == [1, 2]

    async def slower_second(number: int) -> float:
        return {1: 1.2, 2: 0.9}[number]

    assert run_async(two_rounds(slower_second)) == (1.2, 1.2)
    assert "big_gbs_first" in SECTIONS["single"]


def test_measure_turns_a_failure_into_n_a_for_what_is_missing() -> None:
    results: dict[str, Cell] = {}

    def work() -> None:
        results["a"] = 1.0
        raise Unavailable("redis-server not installed")

    measure(results, ("a", "b"), work)
    assert results == {"a": 1.0, "b": NotAvailable("redis-server not installed")}
    measure(results, ("c",), lambda: (_ for _ in ()).throw(ValueError("bad\nsecond line")))
    assert results["c"] == NotAvailable("ValueError: bad")


def test_run_sections_goes_on_after_a_failed_section(tmp_path: Path) -> None:
    seen = []

    def single(_sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
        seen.append(directory.name)
        raise Unavailable("could not start")

    def fine(_sizes: Sizes, directory: Path, results: dict[str, Cell]) -> None:
        seen.append(directory.name)
        results["rss_mb"] = 12.0

    results = run_sections(
        QUICK,
        tmp_path,
        {"single": single, "replicated": fine, "memory": fine},
    )
    assert seen == ["single", "replicated", "memory"]
    assert results["rss_mb"] == 12.0
    for key in SECTIONS["single"]:
        assert results[key] == NotAvailable("could not start")


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7], 0.99) == 7
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_paced_latencies_sends_at_the_rate_and_reads_back_stamps() -> None:
    sizes = dataclasses.replace(QUICK, e2e_seconds=0.2)
    probe = LatencyProbe(100)
    sent: list[float] = []

    async def send(value: bytes) -> None:
        assert len(value) == 100
        sent.append(time.perf_counter())
        asyncio.get_running_loop().call_later(0.001, probe.received, value)

    p50, p99 = run_async(paced_latencies(send, probe, sizes))
    expected = int(sizes.e2e_rate * (sizes.e2e_warmup_seconds + sizes.e2e_seconds))
    assert len(sent) == expected
    assert sent[-1] - sent[0] == pytest.approx(expected / sizes.e2e_rate, rel=0.25)
    assert 1_000 <= p50 <= p99 < 100_000  # at least the 1 ms the fake delivery takes


def test_a_probe_without_arrivals_is_unavailable() -> None:
    probe = LatencyProbe(100)
    with pytest.raises(Unavailable, match="only 0 of 3"):
        run_async(probe.wait_for(3, timeout_s=0.01))


def test_machine_line_names_cores_and_python() -> None:
    line = machine_line()
    assert "cores" in line and "Python" in line


def test_chart_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [rate_row(2e6, NotAvailable("x"), 5e5, at_least=1e6), latency_row(50.0, 80.0, 90.0)]
    write_chart(rows, tmp_path / "chart.png", "title")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
