"""The comparison's plumbing against the real peer servers, in a tiny run: each server is
started on a free loopback port, measured, and killed by pid.

The peers are not part of `make test`'s set-up (`make bench` installs them): each test
skips, saying what is missing, where a server binary or its Python client is absent.
"""

import dataclasses
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from bench.compare import limits, nats_jetstream, redis_streams
from bench.compare.servers import RedisServer, Unavailable, find_binary
from bench.compare.table import NotAvailable
from bench.compare.workloads import METRICS, QUICK

TINY = dataclasses.replace(
    QUICK,
    produce_records=2_000,
    e2e_seconds=0.2,
    e2e_warmup_seconds=0.05,
    big_total_bytes=4 * 1024 * 1024,
    partitions=5,
    idle_connections=5,
    max_seconds=5.0,
    workload_timeout_s=60.0,
)


def _need(binary: str, module: str) -> None:
    try:
        find_binary(binary)
    except Unavailable:
        pytest.skip(f"{binary} is not installed (`make bench` installs it from Debian)")
    pytest.importorskip(module, reason=f"{module} is the bench extra: pip install -e '.[bench]'")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _all_measured(results: dict[str, float | NotAvailable]) -> None:
    missing = {k: v for k, v in results.items() if isinstance(v, NotAvailable)}
    assert not missing, missing
    assert set(results) == set(METRICS)
    assert all(v > 0 for v in results.values() if not isinstance(v, NotAvailable))


def test_redis_streams_whole_matrix_in_miniature(tmp_path: Path) -> None:
    _need("redis-server", "redis")
    _all_measured(redis_streams.run(TINY, tmp_path))


def test_nats_jetstream_whole_matrix_in_miniature(tmp_path: Path) -> None:
    _need("nats-server", "nats")
    _all_measured(nats_jetstream.run(TINY, tmp_path))


def test_a_server_is_killed_by_pid_even_when_the_body_fails(tmp_path: Path) -> None:
    _need("redis-server", "redis")
    server = RedisServer(tmp_path)
    with pytest.raises(RuntimeError), server:
        pid = server.pid
        raise RuntimeError("workload failed")
    assert server.process is None and _gone(pid)


def test_a_missing_binary_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    assert shutil.which("headwater-no-such-server") is None
    with pytest.raises(Unavailable, match="headwater-no-such-server not installed"):
        find_binary("headwater-no-such-server")


def test_machine_limits_measure_something(tmp_path: Path) -> None:
    assert limits.loopback_gb_s(16 * 1024 * 1024) > 0
    cached, synced = limits.disk_write_mb_s(tmp_path, 4 * 1024 * 1024, rounds=1)
    assert cached > 0 and synced > 0
    assert list(tmp_path.iterdir()) == []  # its file is removed
    assert limits.disk_write_idle_mb_s(tmp_path, 4 * 1024 * 1024, pause_s=0) > 0
    assert list(tmp_path.iterdir()) == []
    before = {child.pid for child in multiprocessing.active_children()}
    p50, p99 = limits.relay_latency_us(TINY)
    assert 0 < p50 <= p99
    assert {child.pid for child in multiprocessing.active_children()} <= before  # relay gone
    assert limits.store_gb_s(tmp_path, 8 * 1024 * 1024) > 0
    assert list(tmp_path.iterdir()) == []  # its file is removed
    assert {child.pid for child in multiprocessing.active_children()} <= before  # store gone
    with pytest.raises(Unavailable, match="the store closed the connection"):
        limits.store_gb_s(tmp_path / "missing", 1024 * 1024)  # a clear n/a, not a hang
