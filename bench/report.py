"""Results of :mod:`bench.perf` for people: table rows, markdown, a settings line, and the
live progress line ``headwater bench`` shows on a terminal.

Everything but :class:`LiveProgress` is a pure function of results, so the ``make bench``
matrix can put many results in one table (``markdown(results)``) and tests check exact text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bench.stats import RateMeter

if TYPE_CHECKING:
    from bench.perf import Result, Workload
    from bench.stats import Latency

__all__ = ["HEADERS", "LiveProgress", "describe", "markdown", "progress_text", "table"]

HEADERS = ("test", "records", "records/s", "MB/s", "avg ms", "p50", "p95", "p99", "p99.9", "max")
"""Latencies are in ms (the first latency header says so, the rest stay narrow)."""
BATCH_HEADER = "batches/s"


def ms(value: float | None) -> str:
    """A latency in ms, to about three significant figures ("-" for none)."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def rate(value: float) -> str:
    return f"{value:,.0f}"


def mb(value: float) -> str:
    return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"


def table(results: Sequence[Result]) -> tuple[list[str], list[list[str]]]:
    """Headers and one row per result. A batches/s column only if a broker result is
    there, latency columns only if some result has a latency ("-" where one has none)."""
    with_batches = any(r.batches is not None for r in results)
    with_latency = any(r.latency is not None for r in results)
    headers = [*HEADERS[:4], *([BATCH_HEADER] if with_batches else [])]
    headers += HEADERS[4:] if with_latency else []
    rows = []
    for r in results:
        row = [r.test, f"{r.records:,}", rate(r.records_per_s), mb(r.mb_per_s)]
        if with_batches:
            row.append("-" if r.batches_per_s is None else rate(r.batches_per_s))
        if with_latency:
            row += _latencies(r.latency)
        rows.append(row)
    return headers, rows


def _latencies(lat: Latency | None) -> list[str]:
    if lat is None:
        return ["-"] * 6
    return [
        ms(x) for x in (lat.avg_ms, lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.p999_ms, lat.max_ms)
    ]


def markdown(results: Sequence[Result]) -> str:
    """A markdown table (numbers right-aligned), as ``make bench`` prints its tables."""
    headers, rows = table(results)
    align = ["---", *("---:" for _ in headers[1:])]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def describe(test: str, w: Workload, topic: str) -> str:
    """The settings of a run, in one line."""
    rate_text = "unlimited" if w.unlimited else f"{w.throughput:,.0f} records/s"
    parts = [
        f"{w.num_records:,} records of {w.record_size} B"
        if w.payload_file is None
        else f"{w.num_records:,} records from {w.payload_file}",
        rate_text,
        f"acks={w.acks}",
        f"batch {w.batch_size:,} B",
    ]
    if test != "broker":
        parts.append(f"linger {w.linger_ms} ms")
    parts += [
        f"compression {w.compression}",
        f"{w.partitions} partition(s) x RF {w.replication_factor}",
    ]
    if test in ("produce", "broker"):
        parts.append(f"{w.producers} producer(s)")
    if test in ("produce", "broker") or w.max_in_flight != 5:
        parts.append(f"{w.max_in_flight} in flight")
    if w.send_batch:
        parts.append("send_batch()")
    return f"{test}: {', '.join(parts)}; topic {topic}"


def progress_text(
    phase: str, done: int, total: int, *, records_per_s: float, record_size: int, elapsed_s: float
) -> str:
    """The live line: ``produce  45% 225,000/500,000 records  48,211 rec/s  4.82 MB/s  4.7 s``."""
    share = done / total if total else 0.0
    return (
        f"{phase:<8} {share:4.0%} {done:,}/{total:,} records  {records_per_s:,.0f} rec/s  "
        f"{mb(records_per_s * record_size / 1e6)} MB/s  {elapsed_s:.1f} s"
    )


class LiveProgress:
    """``progress(phase, done, total)`` for :mod:`bench.perf`, drawn as one rich line on
    stderr that is replaced in place and removed at the end. Only for a terminal: the
    caller checks ``sys.stderr.isatty()``. Refreshed by each call (4 a second), never by a
    thread of its own."""

    def __init__(self, record_size: int, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console  # noqa: PLC0415  (rich costs ~50 ms to import)
        from rich.live import Live  # noqa: PLC0415

        self.record_size = record_size
        self.clock = clock
        self._meters: dict[str, tuple[float, RateMeter]] = {}
        self._live: Any = Live(
            console=Console(stderr=True),
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = self.clock()
        if phase not in self._meters:
            self._meters[phase] = (now, RateMeter(now))
        started, meter = self._meters[phase]
        current = meter.update(now, done)
        text = progress_text(
            phase,
            done,
            total,
            records_per_s=current,
            record_size=self.record_size,
            elapsed_s=now - started,
        )
        self._live.update(text, refresh=True)
