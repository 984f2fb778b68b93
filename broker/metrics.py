"""Prometheus metrics over HTTP (``GET /metrics``, text format 0.0.4).

Gauges are computed when scraped, from the state the broker keeps anyway (partitions,
ISR, connections), so they cost nothing between scrapes. Counters are bumped once per
request or per ISR change, never per record. Names follow Kafka's metrics where Kafka has
one (UnderReplicatedPartitions, OfflinePartitionsCount, IsrShrinksPerSec, ...), in
Prometheus's snake case.

The listener is a deliberately small HTTP/1.0 responder on its own port
(``metrics.port``; -1 off, 0 any free port): it answers one GET and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

__all__ = ["GC_PAUSES", "Counter", "GcPauses", "MetricsServer", "Sample", "gc_samples", "render"]

Sample = tuple[str, dict[str, str], float]
"""(name, labels, value)."""

_HELP: dict[str, tuple[str, str]] = {}


class Counter:
    """A monotonically increasing count, labelled by nothing."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.value = 0
        _HELP[name] = ("counter", help_text)

    def inc(self, amount: int = 1) -> None:
        self.value += amount


def gauge(name: str, help_text: str) -> str:
    _HELP[name] = ("gauge", help_text)
    return name


def counter(name: str, help_text: str) -> str:
    """A counter read when scraped from a count kept elsewhere (as :func:`gauge`)."""
    _HELP[name] = ("counter", help_text)
    return name


_GC_COLLECTIONS = counter(
    "python_gc_collections_total", "Cyclic garbage collections, by generation."
)
_GC_COLLECTED = counter(
    "python_gc_objects_collected_total", "Objects the cyclic collector freed, by generation."
)
_GC_UNCOLLECTABLE = counter(
    "python_gc_objects_uncollectable_total",
    "Objects the cyclic collector found unfreeable, by generation.",
)
_GC_FROZEN = gauge(
    "python_gc_frozen_objects",
    "Objects collections skip (gc.freeze): start-up's, and the broker's at its last settle.",
)
_GC_PAUSE = counter(
    "python_gc_pause_seconds_total",
    "Time in the cyclic collector (with the finalizers it ran), by generation.",
)
_GC_PAUSE_MAX = gauge(
    "python_gc_pause_seconds_max", "The longest single collection since start-up."
)


class GcPauses:
    """Times each collection (``gc.callbacks``): while it runs, every request waits.

    Two clock reads per collection, which is at most a few hundred a second.
    """

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = 0.0
        self.installed = False
        self._started: float | None = None

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self._on_gc)
            self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._on_gc)
            self.installed = False

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:  # installed while a collection ran: its start was missed
            return
        took = time.perf_counter() - self._started
        self._started = None
        self.seconds[info["generation"]] += took
        self.longest = max(self.longest, took)


GC_PAUSES = GcPauses()
"""The process's: ``headwater-broker`` installs it at start-up."""


def gc_samples(pauses: GcPauses = GC_PAUSES) -> list[Sample]:
    """The cyclic collector's counts (as prometheus_client's ``python_gc_*``), the objects
    frozen (start-up's, and the broker's at its last settle), and the pauses if ``pauses``
    is installed."""
    samples: list[Sample] = []
    for generation, stats in enumerate(gc.get_stats()):
        labels = {"generation": str(generation)}
        samples += [
            (_GC_COLLECTIONS, labels, stats["collections"]),
            (_GC_COLLECTED, labels, stats["collected"]),
            (_GC_UNCOLLECTABLE, labels, stats["uncollectable"]),
        ]
    samples.append((_GC_FROZEN, {}, gc.get_freeze_count()))
    if pauses.installed:
        for generation, seconds in enumerate(pauses.seconds):
            samples.append((_GC_PAUSE, {"generation": str(generation)}, seconds))
        samples.append((_GC_PAUSE_MAX, {}, pauses.longest))
    return samples


def render(samples: Iterable[Sample]) -> str:
    """The text exposition format: each name's samples together (the format asks for one
    group per metric), under its HELP and TYPE, in the order names first appear."""
    groups: dict[str, list[str]] = {}
    for name, labels, value in samples:
        group = groups.get(name)
        if group is None:
            kind, text = _HELP.get(name, ("untyped", name))
            group = groups[name] = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        number = _number(value)
        group.append(f"{name}{{{label_text}}} {number}" if labels else f"{name} {number}")
    return "".join(line + "\n" for group in groups.values() for line in group)


def _number(value: float) -> str:
    """Every digit: a byte counter past a million must still move by one (``:g`` kept six
    significant digits, so ``rate()`` went in steps)."""
    if isinstance(value, int):
        return str(int(value))  # a bool too: 1, not True
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """Serves ``collect()``'s samples at ``/metrics``."""

    def __init__(self, collect: Callable[[], Iterable[Sample]]) -> None:
        self._collect = collect
        self._server: asyncio.Server | None = None
        self._log = structlog.get_logger("headwater.metrics")

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = int(self._server.sockets[0].getsockname()[1])
        self._log.info("metrics.listening", host=host, port=bound)
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a scraper that goes away or sends garbage gets nothing more
        with contextlib.suppress(
            TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError
        ):
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if request.startswith(b"GET ") and path.split(b"?")[0] == b"/metrics":
                body = render(self._collect()).encode()
                status, kind = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body = b"only GET /metrics is served here\n"
                status, kind = b"404 Not Found", b"text/plain; charset=utf-8"
            writer.write(
                b"HTTP/1.0 "
                + status
                + b"\r\nContent-Type: "
                + kind
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        writer.close()
