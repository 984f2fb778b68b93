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
from collections.abc import Callable, Iterable

import structlog

__all__ = ["Counter", "MetricsServer", "Sample", "render"]

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


def render(samples: Iterable[Sample]) -> str:
    """The text exposition format: HELP and TYPE once per name, then the samples."""
    lines: list[str] = []
    seen: set[str] = set()
    for name, labels, value in samples:
        if name not in seen:
            seen.add(name)
            kind, text = _HELP.get(name, ("untyped", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}")
    return "\n".join(lines) + "\n"


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
