"""The standard matrix (issue 8): Headwater, Redis Streams and NATS JetStream on the same
workloads in one run, beside the machine's limits, against the issue's targets.

``python -m bench`` (``make bench``) runs it; ``BENCH_QUICK=1`` (``make bench QUICK=1``)
is a smoke run with small counts, written to ``bench/results/quick.*`` so it never
replaces the committed ``latest.*``. ``BENCH_DIR`` picks the data disk (default: the
system's temporary directory); every server's files live in one directory there,
removed at the end.

Order: machine limits first (on a quiet machine), then each system in turn, each section
on servers of its own that are stopped before the next starts, so no system's numbers
are taken while another's servers run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compare import headwater, limits, nats_jetstream, redis_streams
from bench.compare.servers import raise_open_files_limit, scratch_directory, stop_on_sigterm
from bench.compare.table import (
    PEERS,
    Cell,
    NotAvailable,
    Row,
    Target,
    machine_line,
    render_markdown,
    write_chart,
)
from bench.compare.workloads import FULL, QUICK, Sizes, measure

__all__ = ["SYSTEMS", "build_rows", "main", "run_matrix"]

PEER_MULTIPLE = 2.0
"""Issue 8: every throughput and latency row at least this many times the best peer."""

RESULTS = Path(__file__).resolve().parent.parent / "results"

SYSTEMS: dict[str, Callable[[Sizes, Path], dict[str, Cell]]] = {
    headwater.NAME: headwater.run,
    redis_streams.NAME: redis_streams.run,
    nats_jetstream.NAME: nats_jetstream.run,
}


@dataclass(frozen=True, slots=True)
class Limits:
    loopback_gb_s: Cell
    disk_cached_mb_s: Cell
    disk_synced_mb_s: Cell
    disk_idle_mb_s: Cell
    relay_p50_us: Cell
    relay_p99_us: Cell
    store_gb_s: Cell

    def rows(self) -> list[tuple[str, Cell, str]]:
        relay = "latency of 2 loopback hops through a Python (uvloop) relay at the e2e rate"
        return [
            ("loopback TCP, 2 processes, 1 MiB sends", self.loopback_gb_s, "GB/s"),
            ("os.write 1 MiB to the data disk (page cache)", self.disk_cached_mb_s, "MB/s"),
            ("os.write 1 MiB to the data disk + fsync at the end", self.disk_synced_mb_s, "MB/s"),
            (
                "os.write 1 MiB to the data disk (page cache), after 5 s idle",
                self.disk_idle_mb_s,
                "MB/s",
            ),
            (f"{relay}: p50", self.relay_p50_us, "us"),
            (f"{relay}: p99", self.relay_p99_us, "us"),
            (
                "1 MiB frames into a Python (uvloop) store: read into one buffer, CRC32C, "
                "os.write, 5 in flight",
                self.store_gb_s,
                "GB/s",
            ),
        ]


def measure_limits(sizes: Sizes, directory: Path) -> Limits:
    results: dict[str, Cell] = {}

    def loopback() -> None:
        results["loopback"] = limits.loopback_gb_s(sizes.loopback_bytes)

    def disk() -> None:
        results["cached"], results["synced"] = limits.disk_write_mb_s(directory, sizes.disk_bytes)

    def idle() -> None:
        results["idle"] = limits.disk_write_idle_mb_s(directory, sizes.disk_bytes)

    def relay() -> None:
        results["relay_p50"], results["relay_p99"] = limits.relay_latency_us(sizes)

    measure(results, ("loopback",), loopback)
    measure(results, ("cached", "synced"), disk)
    measure(results, ("idle",), idle)

    def store() -> None:
        results["store"] = limits.store_gb_s(directory, sizes.big_total_bytes)

    measure(results, ("relay_p50", "relay_p99"), relay)
    measure(results, ("store",), store)
    return Limits(
        results["loopback"],
        results["cached"],
        results["synced"],
        results["idle"],
        results["relay_p50"],
        results["relay_p99"],
        results["store"],
    )


def _percent_of(gb_s: Cell, raw_mb_s: Cell) -> Cell:
    if isinstance(gb_s, NotAvailable):
        return gb_s
    if isinstance(raw_mb_s, NotAvailable) or raw_mb_s <= 0:
        return NotAvailable("no raw os.write figure")
    return 100 * gb_s * 1e3 / raw_mb_s


def build_rows(
    results: Mapping[str, Mapping[str, Cell]], raw_write_mb_s: Cell, sizes: Sizes
) -> list[Row]:
    """The table's rows from each system's metrics (by :data:`~workloads.METRICS` key)."""

    def cells(key: str) -> tuple[Cell, dict[str, Cell]]:
        ours = results.get(headwater.NAME, {}).get(key, NotAvailable("not run"))
        peers = {p: results.get(p, {}).get(key, NotAvailable("not run")) for p in PEERS}
        return ours, peers

    def row(name: str, key: str, unit: str, higher: bool, target: Target) -> Row:
        ours, peers = cells(key)
        return Row(name, unit, higher, ours, peers, target)

    def own_row(name: str, key: str, peers_key: str, target: Target) -> Row:
        """A way of producing the peers have no counterpart of (the batch API, Kafka's own
        client) against the peers' produce figures (their pipelines are bulk already)."""
        ours = results.get(headwater.NAME, {}).get(key, NotAvailable("not run"))
        return Row(name, "rec/s", True, ours, cells(peers_key)[1], target)

    rate = f"{sizes.e2e_rate:,} rec/s"
    big = f"{sizes.big_batch_bytes // (1024 * 1024)} MiB batches"
    ours_big, peers_big = cells("big_gbs")
    percent = Row(
        f"broker alone, {big}: % of raw os.write",
        "%",
        True,
        _percent_of(ours_big, raw_write_mb_s),
        {p: _percent_of(v, raw_write_mb_s) for p, v in peers_big.items()},
        Target(at_least=25),
    )
    memory = f"RSS, {sizes.partitions:,} partitions + {sizes.idle_connections:,} idle connections"
    return [
        row("produce, 1 broker, RF=1, acks=1", "produce_rf1", "rec/s", True, _at_least(1e6)),
        own_row(
            "produce with send_batch(), 1 broker, RF=1, acks=1",
            headwater.SEND_BATCH_METRIC,
            "produce_rf1",
            _at_least(1e6),
        ),
        row("produce, 3 brokers, RF=3, acks=all", "produce_rf3", "rec/s", True, _at_least(4e5)),
        own_row(
            "produce with send_batch(), 3 brokers, RF=3, acks=all",
            headwater.SEND_BATCH_RF3_METRIC,
            "produce_rf3",
            _at_least(4e5),
        ),
        own_row(
            "produce with Kafka's client (confluent-kafka), 1 broker, RF=1, acks=1",
            headwater.KAFKA_CLIENT_METRIC,
            "produce_rf1",
            _at_least(1e6),
        ),
        own_row(
            "produce with Kafka's client (confluent-kafka), 3 brokers, RF=3, acks=all",
            headwater.KAFKA_CLIENT_RF3_METRIC,
            "produce_rf3",
            _at_least(4e5),
        ),
        row("consume, 1 consumer", "consume", "rec/s", True, _at_least(2e6)),
        row(f"e2e p50 at {rate}, 1 broker, acks=1", "e2e_rf1_p50", "us", False, _at_most(100)),
        row(f"e2e p99 at {rate}, 1 broker, acks=1", "e2e_rf1_p99", "us", False, _at_most(500)),
        row(f"e2e p50 at {rate}, RF=3, acks=all", "e2e_rf3_p50", "us", False, Target()),
        row(f"e2e p99 at {rate}, RF=3, acks=all", "e2e_rf3_p99", "us", False, _at_most(2000)),
        row(f"broker alone, {big}", "big_gbs", "GB/s", True, _at_least(1.0)),
        percent,
        row(
            f"broker alone, {big}: first round (new memory)",
            "big_gbs_first",
            "GB/s",
            True,
            Target(),
        ),
        row(memory, "rss_mb", "MB", False, Target(at_most=300)),
    ]


def _at_least(value: float) -> Target:
    return Target(at_least=value, peer_multiple=PEER_MULTIPLE)


def _at_most(value: float) -> Target:
    return Target(at_most=value, peer_multiple=PEER_MULTIPLE)


NOTES = [
    "100-byte records; one partition / stream per workload; every client is Python on "
    "uvloop in one process, so client-bound rows measure the client library as much as "
    "the server.",
    "Headwater: bench.perf (`headwater bench`) workloads, producer batches of 128 KiB "
    "(about 1,000 records), linger 5 ms (0 for e2e); broker alone replays one pre-encoded "
    "1 MiB batch (5 requests in flight). The produce rows call send() per record; the "
    "send_batch() rows fill the same batches with the batch API (`bench produce "
    "--send-batch`: BatchBuilder.extend from lists of 256 values) and are set against the "
    "peers' produce figures. The confluent-kafka rows are Kafka's own client (librdkafka, "
    "C under a Python API, idempotent, the same batches and linger) producing through "
    "the brokers' Kafka-protocol listeners: what one producer process can hand the "
    "broker when the client is not the bottleneck; also set against the peers' produce "
    "figures.",
    "Redis Streams: redis-py with hiredis; produce = XADD pipelines of 1,000; consume = "
    "XREAD COUNT 1000; e2e = XADD per record + blocking XREAD; RF=3 = primary + 2 replicas "
    "with WAIT 2 after each pipeline (each record in e2e), read from a replica; 1 MiB rows "
    "= XADD of 1 MiB values, 4 per pipeline; no persistence (--save '' --appendonly no): "
    "streams live in memory.",
    "NATS JetStream: nats-py; file storage; produce = publish_async, acks awaited (4,000 "
    "in flight); consume = pull fetch of 1,000, AckAll; e2e = ordered push consumer; "
    "RF=3 = 3-server cluster, stream replicas 3 (acked at Raft quorum); 1 MiB rows = "
    "1 MiB publishes, 4 in flight.",
    "e2e: the send time is stamped in the value (CLOCK_MONOTONIC ns), paced against the "
    "clock in 1-2 ms ticks; a warm-up is dropped. RSS: VmRSS of the server process "
    "(Headwater: the broker, not ZooKeeper), each partition/stream holding one record, "
    "each idle connection past its protocol handshake.",
    "The ratio is times better than the best peer (higher rate, or lower latency/memory).",
    "Machine limits: the relay latency is the floor under every e2e row (a value through "
    "two loopback hops and three Python processes, nothing done on the way); the write "
    "after 5 s idle is what a workload's first gigabyte meets on a VM that hands freed "
    "memory back to its host; the Python store is the ceiling under the broker-alone rows "
    "(the same copies and checksum per MiB as a broker's, nothing else done).",
    "1 MiB rows: two rounds of a gigabyte, each into a topic / stream of its own that it "
    "deletes at its end, the best of the two shown, as the raw os.write row is measured "
    "(best of two rounds, the file unlinked in between): the second round writes into the "
    "memory the first freed. The first round's figure is its own row: new memory, which "
    "after a pause runs at about the idle write's rate on this kind of VM.",
]


def run_matrix(sizes: Sizes, data_parent: str | None) -> tuple[Limits, dict[str, dict[str, Cell]]]:
    """Measure the limits and every system; servers and their files gone afterwards."""
    raise_open_files_limit(4 * (sizes.partitions + sizes.idle_connections) + 1024)
    with scratch_directory("headwater-bench-", data_parent) as directory:
        _say(f"machine limits (data disk: {directory.parent})")
        machine = measure_limits(sizes, directory)
        results: dict[str, dict[str, Cell]] = {}
        for name, run in SYSTEMS.items():
            _say(f"{name}")
            started = time.monotonic()
            results[name] = run(sizes, directory / name.split()[0].lower())
            _say(f"{name}: done in {time.monotonic() - started:.0f} s")
    return machine, results


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _json(value: Cell) -> Any:
    return {"n/a": value.reason} if isinstance(value, NotAvailable) else value


def write_results(
    stem: str,
    *,
    markdown: str,
    rows: list[Row],
    machine: Limits,
    results: Mapping[str, Mapping[str, Cell]],
    title: str,
) -> list[Path]:
    """``<stem>.md``, ``<stem>.json`` and (with matplotlib) ``<stem>.png`` in bench/results."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    written = [RESULTS / f"{stem}.md", RESULTS / f"{stem}.json"]
    written[0].write_text(markdown)
    payload = {
        "machine": machine_line(),
        "limits": {name: _json(v) for name, v, _unit in machine.rows()},
        "systems": {s: {k: _json(v) for k, v in m.items()} for s, m in results.items()},
    }
    written[1].write_text(json.dumps(payload, indent=1) + "\n")
    try:
        write_chart(rows, RESULTS / f"{stem}.png", title)
        written.append(RESULTS / f"{stem}.png")
    except ImportError:
        _say("no chart: matplotlib is missing (pip install -e '.[bench]')")
    return written


def main(environ: Mapping[str, str] = os.environ) -> None:
    stop_on_sigterm()
    quick = environ.get("BENCH_QUICK", "") not in ("", "0")
    sizes = QUICK if quick else FULL
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    try:
        machine, results = run_matrix(sizes, environ.get("BENCH_DIR") or None)
    except KeyboardInterrupt:
        _say("interrupted: every server started was stopped, its files removed")
        sys.exit(130)
    raw = machine.disk_cached_mb_s
    rows = build_rows(results, raw, sizes)
    mode = "QUICK smoke run (small counts: not comparable)" if quick else "full run"
    line = f"{machine_line()}; {started}; {mode}; load average {load:.2f} at the start"
    markdown = render_markdown(rows, machine=line, limits=machine.rows(), notes=NOTES)
    print(markdown)
    title = f"Headwater vs peers ({mode})\n{machine_line()}"
    written = write_results(
        "quick" if quick else "latest",
        markdown=markdown,
        rows=rows,
        machine=machine,
        results=results,
        title=title,
    )
    for path in written:
        _say(f"wrote {path}")
