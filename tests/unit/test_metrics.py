"""The Prometheus text format, the endpoint answering only GET /metrics, and the
collector's figures and start-up freeze."""

import asyncio
import gc
import weakref
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

import broker.main as broker_main
from broker.app import Broker
from broker.heap import settle_heap
from broker.metrics import Counter, GcPauses, MetricsServer, gauge, gc_samples, render


def test_render_writes_help_and_type_once_and_escapes_labels() -> None:
    requests = Counter("test_requests_total", "Requests.")
    requests.inc(3)
    size = gauge("test_size_bytes", "Bytes.")
    text = render(
        [
            (requests.name, {}, requests.value),
            (size, {"topic": 'a"b', "partition": "0"}, 10),
            (size, {"topic": "c", "partition": "1"}, 2.5),
        ]
    )
    assert text.splitlines() == [
        "# HELP test_requests_total Requests.",
        "# TYPE test_requests_total counter",
        "test_requests_total 3",
        "# HELP test_size_bytes Bytes.",
        "# TYPE test_size_bytes gauge",
        'test_size_bytes{partition="0",topic="a\\"b"} 10',
        'test_size_bytes{partition="1",topic="c"} 2.5',
    ]


async def _get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    writer.write_eof()  # a half-sent request ends here
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_the_endpoint_serves_metrics_and_refuses_the_rest() -> None:
    count = gauge("test_things", "Things.")
    server = MetricsServer(lambda: [(count, {}, 7)])
    port = await server.start("127.0.0.1", 0)
    try:
        ok = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.0 200 OK")
        assert ok.endswith(b"test_things 7\n")
        assert (await _get(port, b"GET / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 404")
        assert await _get(port, b"garbage without an end") == b""  # closed, nothing sent
    finally:
        await server.stop()


class _Node:
    me: object = None


def test_settle_heap_frees_garbage_then_freezes_what_exists_and_no_more() -> None:
    garbage = _Node()
    garbage.me = garbage  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage
    before = _Node()
    try:
        assert settle_heap() > 0
        assert gone() is None  # collected first, not frozen for the process's life
        after = _Node()
        walked = {id(o) for o in gc.get_objects()}  # what a full collection looks at
        assert id(before) not in walked
        assert id(after) in walked
        later = _Node()
        later.me = later
        dropped = weakref.ref(later)
        del later
        gc.collect()
        assert dropped() is None  # garbage made after the freeze is still freed
    finally:
        gc.unfreeze()


def test_gc_samples_count_collections_and_time_them_once_installed() -> None:
    pauses = GcPauses()
    names = {name for name, _labels, _value in gc_samples(pauses)}
    assert "python_gc_collections_total" in names
    assert "python_gc_pause_seconds_total" not in names  # not timed: nothing to claim
    pauses.install()
    try:
        before = gc.get_stats()[2]["collections"]
        gc.collect()
        samples = {(n, tuple(sorted(labels.items()))): v for n, labels, v in gc_samples(pauses)}
    finally:
        pauses.uninstall()
    assert samples[("python_gc_collections_total", (("generation", "2"),))] >= before + 1
    assert samples[("python_gc_pause_seconds_total", (("generation", "2"),))] > 0
    assert samples[("python_gc_pause_seconds_max", ())] == pauses.longest > 0
    assert pauses._on_gc not in gc.callbacks


def test_render_keeps_each_name_together_and_every_digit() -> None:
    total = gauge("test_bytes_total", "Bytes.")
    seconds = gauge("test_seconds", "Seconds.")
    text = render(
        [
            (total, {"generation": "0"}, 12_345_678),  # :g wrote 1.23457e+07
            (seconds, {"generation": "0"}, 0.0143712),
            (total, {"generation": "1"}, 2.0),
            (total, {"generation": "2"}, True),
            (seconds, {"generation": "1"}, float("inf")),
        ]
    )
    assert text.splitlines() == [
        "# HELP test_bytes_total Bytes.",
        "# TYPE test_bytes_total gauge",
        'test_bytes_total{generation="0"} 12345678',
        'test_bytes_total{generation="1"} 2',
        'test_bytes_total{generation="2"} 1',
        "# HELP test_seconds Seconds.",
        "# TYPE test_seconds gauge",
        'test_seconds{generation="0"} 0.0143712',
        'test_seconds{generation="1"} +Inf',
    ]


def test_a_collection_whose_start_was_missed_is_not_timed() -> None:
    pauses = GcPauses()
    pauses._on_gc("stop", {"generation": 2})  # installed mid-collection
    assert pauses.seconds == [0.0, 0.0, 0.0] and pauses.longest == 0.0
    pauses._on_gc("start", {"generation": 1})
    pauses._on_gc("stop", {"generation": 1})
    pauses._on_gc("stop", {"generation": 1})  # no second stop for one start
    assert pauses.seconds[1] == pauses.longest > 0


def test_the_daemon_freezes_before_the_broker_exists_and_times_only_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, object] = {}

    def run(coroutine: Coroutine[Any, Any, int]) -> int:
        # serve() has not started: no Broker exists yet, and what exists is frozen
        seen.update(
            frozen=gc.get_freeze_count(),
            timing=broker_main.GC_PAUSES.installed,
            startup_timed=broker_main.GC_PAUSES.longest,
            brokers=[o for o in gc.get_objects() if isinstance(o, Broker)],
        )
        coroutine.close()
        return 0

    pauses = GcPauses()
    monkeypatch.setattr(broker_main, "GC_PAUSES", pauses)
    monkeypatch.setattr(broker_main.uvloop, "run", run)
    monkeypatch.setattr(broker_main, "configure_logging", lambda json: None)
    monkeypatch.setattr(broker_main, "reuse_freed_heap", lambda: True)
    settings = ["broker.id=1", "zookeeper.connect=127.0.0.1:1", f"log.dirs={tmp_path}"]
    try:
        with pytest.raises(SystemExit) as exited:
            broker_main.main([arg for s in settings for arg in ("--set", s)])
    finally:
        pauses.uninstall()
        gc.unfreeze()
    assert exited.value.code == 0
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 0
    assert seen["timing"] is True
    assert seen["startup_timed"] == 0.0  # the freeze's own full collection is not counted
    assert seen["brokers"] == []
